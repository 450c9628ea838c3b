#!/usr/bin/env bash
# Builds a wabridge release: scripts/release.sh vX.Y.Z [DIST] (or
# make release VERSION=vX.Y.Z). DIST (default dist/) receives, for linux
# amd64 and arm64:
#   wabridge_X.Y.Z_linux_ARCH.tar.gz   the static program, install.sh, the
#                                      manual (docs/) and the licence
#   wabridge_X.Y.Z_ARCH.deb            the program, the systemd unit, the
#                                      system user and the data folder
# plus install.sh on its own (for curl … | sudo bash) and SHA256SUMS over
# all of them. Every binary is checked before it is packed: statically
# linked, for the right machine, and printing this version, the other
# architecture's under qemu. The build date is the commit's, so building
# the same commit again gives the same programs.
set -euo pipefail
umask 022

# Pinned: the package format must not change under a release.
readonly NFPM=github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.48.0
readonly TAGS='netgo osusergo sqlite_omit_load_extension'
readonly ARCHES=(amd64 arm64)

fail() {
	printf 'release: %s\n' "$*" >&2
	exit 1
}

version=${1:-}
dist=${2:-dist}
if [[ ! $version =~ ^v[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.]+)?$ ]]; then
	printf 'release: VERSION must look like v1.2.3 or v1.2.3-rc.1, got "%s" (make release VERSION=v1.2.3)\n' "$version" >&2
	exit 2
fi
semver=${version#v}

cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/ensure-deps.sh release

commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
if [ "$commit" != unknown ] && [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
	commit=$commit-dirty
fi
epoch=$(git log -1 --format=%ct 2>/dev/null || date +%s)
date=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)
export SOURCE_DATE_EPOCH=$epoch

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$dist"
dist=$(cd "$dist" && pwd)
# Files of an earlier release in the same folder would end up in
# SHA256SUMS; other files are left alone.
rm -f "$dist"/wabridge_*.tar.gz "$dist"/wabridge_*.deb "$dist/install.sh" "$dist/SHA256SUMS"

host=$(go env GOHOSTARCH)
declare -A gcc=([amd64]=x86_64-linux-gnu-gcc [arm64]=aarch64-linux-gnu-gcc)
declare -A qemu=([amd64]=qemu-x86_64-static [arm64]=qemu-aarch64-static)
declare -A machine=([amd64]='Advanced Micro Devices X86-64' [arm64]=AArch64)

elapsed() { echo $(($(date +%s) - $1)); }

# build ARCH OUT compiles the static program for linux/ARCH.
build() {
	local arch=$1 out=$2 cc=gcc start
	[ "$arch" = "$host" ] || cc=${gcc[$arch]}
	start=$(date +%s)
	CGO_ENABLED=1 GOOS=linux GOARCH=$arch CC=$cc go build -trimpath -tags "$TAGS" \
		-ldflags "-s -w -linkmode external -extldflags \"-static\" -X main.version=$version -X main.commit=$commit -X main.date=$date" \
		-o "$out" .
	echo "release: built linux/$arch in $(elapsed "$start") s" >&2
}

# check ARCH BIN fails unless BIN is a static ARCH program of this version.
check() {
	local arch=$1 bin=$2 out want
	want="wabridge $version (commit $commit, built $date)"
	readelf -hW "$bin" | grep -q "Machine: *${machine[$arch]}\$" || fail "$bin is not a linux/$arch program"
	if readelf -lW "$bin" | grep -q 'program interpreter'; then fail "$bin is not statically linked"; fi
	if [ "$arch" = "$host" ]; then
		out=$("$bin" --version) || fail "$bin --version failed: $out"
	else
		out=$("${qemu[$arch]}" "$bin" --version) || fail "${qemu[$arch]} $bin --version failed: $out"
	fi
	[ "$out" = "$want" ] || fail "$bin --version printed \"$out\", want \"$want\""
	echo "release: linux/$arch: static, $(stat -c %s "$bin") bytes, \"$out\"" >&2
}

# The one service definition, from install.sh, for the package's path.
./install.sh --print-unit /usr/bin/wabridge >"$work/wabridge.service"
# nfpm takes the files' time from the config; the commit's, as above.
{
	cat packaging/nfpm.yaml
	printf 'mtime: %s\n' "$date"
} >"$work/nfpm.yaml"

for arch in "${ARCHES[@]}"; do
	name=wabridge_${semver}_linux_$arch
	stage=$work/$name
	mkdir -p "$stage/docs"
	build "$arch" "$work/wabridge-$arch"
	check "$arch" "$work/wabridge-$arch"

	install -m 0755 "$work/wabridge-$arch" "$stage/wabridge"
	install -m 0755 install.sh "$stage/install.sh"
	install -m 0644 LICENSE README.md "$stage/"
	install -m 0644 docs/*.md "$stage/docs/"
	tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$epoch" \
		-C "$work" -cf - "$name" | gzip -n -9 >"$dist/$name.tar.gz"

	mkdir "$work/deb-$arch"
	RELEASE_ARCH=$arch RELEASE_VERSION=$semver RELEASE_BINARY=$work/wabridge-$arch RELEASE_UNIT=$work/wabridge.service \
		go run "$NFPM" package --config "$work/nfpm.yaml" --packager deb --target "$work/deb-$arch/" >/dev/null
	deb=$(echo "$work/deb-$arch"/*.deb)
	[ -f "$deb" ] || fail "nfpm wrote no .deb for $arch"
	# The package must carry exactly the program that was checked above.
	[ "$(dpkg-deb --field "$deb" Package Architecture)" = "$(printf 'Package: wabridge\nArchitecture: %s' "$arch")" ] ||
		fail "$deb: wrong package name or architecture"
	mkdir "$work/x-$arch"
	dpkg-deb -x "$deb" "$work/x-$arch"
	cmp -s "$work/x-$arch/usr/bin/wabridge" "$work/wabridge-$arch" || fail "$deb does not hold the checked program"
	cmp -s "$work/x-$arch/usr/lib/systemd/system/wabridge.service" "$work/wabridge.service" || fail "$deb does not hold install.sh's unit"
	mv "$deb" "$dist/"
done

install -m 0755 install.sh "$dist/install.sh"
(cd "$dist" && sha256sum -- wabridge_*.tar.gz wabridge_*.deb install.sh >SHA256SUMS)
echo "release: $version in $dist:" >&2
(cd "$dist" && ls -l -- wabridge_*.tar.gz wabridge_*.deb install.sh SHA256SUMS) >&2
