# wabridge — build, run and test. `make help` lists the targets.

SHELL := /bin/bash
.DEFAULT_GOAL := build

GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT    ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
DATE      ?= $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
# netgo/osusergo: pure-Go DNS and user lookup, so glibc's NSS is not needed
# at run time; sqlite_omit_load_extension drops dlopen. Together they make
# the static link clean. Tests use the same tags to share the build cache.
TAGS      := netgo osusergo sqlite_omit_load_extension
LDFLAGS   := -s -w -linkmode external -extldflags "-static" \
             -X main.version=$(VERSION) -X main.commit=$(COMMIT) -X main.date=$(DATE)
STATICCHECK_VERSION := v0.8.2
BIN       := bin/wabridge
export CGO_ENABLED := 1

.PHONY: help build run test bench soak lint generate check-generated check-static assets deps fuzz clean release

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

build: ## static bin/wabridge with version, commit and date
	$(GO) build -trimpath -tags '$(TAGS)' -ldflags '$(LDFLAGS)' -o $(BIN) .

run: build ## serve plain HTTP on 127.0.0.1:8080 with ./data
	$(BIN) serve --listen 127.0.0.1:8080 --data ./data

check-static: build ## fail unless bin/wabridge is statically linked
	@out=$$(ldd $(BIN) 2>&1 || true); \
	if ! grep -q 'not a dynamic executable' <<<"$$out"; then echo "$(BIN) is not static: $$out" >&2; exit 1; fi; \
	echo "$(BIN): static, $$(stat -c %s $(BIN)) bytes"

deps: ## install test dependencies missing from this machine (apt)
	@scripts/ensure-deps.sh

test: deps check-static check-generated lint ## everything, from a fresh machine
	WABRIDGE_BIN=$(CURDIR)/$(BIN) $(GO) test -tags '$(TAGS)' -count=1 -timeout 30m ./...
	$(MAKE) --no-print-directory fuzz FUZZTIME=5s FUZZPKGS='./whatsapp ./bitrix ./relay ./settings'

bench: build ## benchmarks on loopback; prints them and writes BENCHMARKS.md
	WABRIDGE_BIN=$(CURDIR)/$(BIN) scripts/bench.sh

soak: build ## crash test for 20 rounds (WABRIDGE_SOAK_ROUNDS=N), outage and hostile tests 5 times
	WABRIDGE_SOAK=1 WABRIDGE_BIN=$(CURDIR)/$(BIN) $(GO) test -tags '$(TAGS)' -count=1 -timeout 60m -v -run 'TestCrash' ./e2e/
	WABRIDGE_BIN=$(CURDIR)/$(BIN) $(GO) test -tags '$(TAGS)' -count=5 -timeout 60m -run 'Outage|TokenExpires|QueryLimit|Graph|HostileHTTP' ./e2e/

FUZZPKGS ?= ./...
fuzz: ## each fuzz target in FUZZPKGS for FUZZTIME (default 1m)
	@for pkg in $$($(GO) list $(FUZZPKGS)); do \
	  for f in $$($(GO) test -tags '$(TAGS)' -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -tags '$(TAGS)' -run '^$$' -fuzz "^$$f$$" -fuzztime $${FUZZTIME:-1m} $$pkg || exit 1; \
	  done; \
	done

lint: ## gofmt, go mod tidy, go vet and staticcheck
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go') | grep -v '_templ.go$$' || true); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted" >&2; exit 1; fi
	@$(GO) mod tidy -diff >/dev/null || { echo "go.mod or go.sum is not tidy: run 'go mod tidy' and commit" >&2; exit 1; }
	$(GO) vet -tags '$(TAGS)' ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) -tags '$(TAGS)' ./...

generate: ## templ → _templ.go
	$(GO) tool templ generate

check-generated: ## fail if the committed _templ.go files are stale
	@$(GO) tool templ generate >/dev/null 2>&1
	@if ! git diff --quiet -- '*_templ.go' || [ -n "$$(git ls-files --others --exclude-standard -- '*_templ.go')" ]; then \
	  echo "generated templ files are stale: run 'make generate' and commit" >&2; git status --short -- '*_templ.go' >&2; exit 1; fi

assets: ## vendor htmx and its SSE extension from npm at pinned versions
	bash assets/vendor.sh
	bash assets/vendor.sh --check

DIST ?= dist
release: ## DIST (dist/): linux amd64+arm64 tarballs and .debs, install.sh, SHA256SUMS (VERSION=vX.Y.Z)
	scripts/release.sh '$(VERSION)' '$(DIST)'

clean: ## remove build output
	rm -rf bin dist
