#!/usr/bin/env bash
# Vendors the third-party browser scripts wabridge serves (htmx and its SSE
# extension) from the npm registry into assets/static/vendor/, so that the
# build never needs the network.
#
# Two independent checks guard every file:
#   1. the tarball's sha512 must equal the npm dist.integrity pinned below
#      (what the registry published for that exact version);
#   2. every extracted file's sha256 must match assets/CHECKSUMS, the list
#      committed with the files themselves.
# Files are verified in a scratch directory and copied into place only when
# both checks pass, so a failed run leaves the committed files untouched.
#
# Usage:
#   assets/vendor.sh                     download, verify, install
#   assets/vendor.sh --check             verify the committed files against
#                                        CHECKSUMS; no network
#   assets/vendor.sh --update-checksums  download, verify the tarballs,
#                                        install and rewrite CHECKSUMS (only
#                                        after changing a pinned version)
#
# Exit status: 0 all verified, 1 a check failed, 2 bad usage or missing tool.
set -euo pipefail

# Each package: npm spec, pinned dist.integrity, then pairs of
# "path inside the tarball" and "file name under static/vendor/".
# `npm view NAME@VERSION dist.integrity` prints the integrity to pin.
HTMX_SPEC='htmx.org@2.0.11'
HTMX_INTEGRITY='sha512-Thx/WtpeOQqSrqBCw/A1cwGJGg4UrVa3+sW0GmrM3p4gJgO89ecH4qtbnyzDDWFvBTqjnIMCgELTNt636dtamA=='
HTMX_FILES=(
	'package/dist/htmx.min.js' 'htmx.min.js'
	'package/LICENSE' 'htmx.org-LICENSE.txt'
)

SSE_SPEC='htmx-ext-sse@2.2.4'
SSE_INTEGRITY='sha512-LJmxVhykyflBWgh5PvbRidcyuqMHlgfajmmzumvKctv9puvsufeH6OaejSMZTNTnEI8O2wXXn4ZZtBdpEMqmEQ=='
SSE_FILES=(
	'package/dist/sse.min.js' 'htmx-ext-sse.min.js'
	'package/LICENSE' 'htmx-ext-sse-LICENSE.txt'
)

ASSETS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENDOR_REL='static/vendor'
CHECKSUMS="$ASSETS_DIR/CHECKSUMS"

die() {
	echo "vendor.sh: $2" >&2
	exit "$1"
}

need() {
	local tool
	for tool in "$@"; do
		command -v "$tool" >/dev/null 2>&1 || die 2 "$tool is required but not installed"
	done
}

# same_file_set ROOT succeeds when the files under ROOT/static/vendor are
# exactly those CHECKSUMS lists: sha256sum --check alone would pass a file
# the list does not name.
same_file_set() {
	local listed present
	listed="$(awk '{ sub(/^\*/, "", $2); print $2 }' "$CHECKSUMS" | LC_ALL=C sort)"
	present="$(cd "$1" && find "$VENDOR_REL" -type f | LC_ALL=C sort)"
	[[ "$listed" == "$present" ]]
}

# check_committed verifies the files in assets/static/vendor against
# CHECKSUMS. It reads nothing from the network.
check_committed() {
	need sha256sum
	[[ -f "$CHECKSUMS" ]] || die 1 "$CHECKSUMS is missing; run assets/vendor.sh --update-checksums once"
	same_file_set "$ASSETS_DIR" ||
		die 1 "$ASSETS_DIR/$VENDOR_REL holds other files than CHECKSUMS lists; run assets/vendor.sh to restore it"
	if ! (cd "$ASSETS_DIR" && sha256sum --check --strict --quiet CHECKSUMS); then
		die 1 "vendored files do not match CHECKSUMS; run assets/vendor.sh to restore them"
	fi
	echo "vendor.sh: vendored files match CHECKSUMS"
}

# integrity_of prints the npm-style integrity string (sha512-<base64>) of a file.
integrity_of() {
	printf 'sha512-%s' "$(openssl dgst -sha512 -binary "$1" | base64 -w0)"
}

# fetch SPEC INTEGRITY STAGE_VENDOR_DIR FROM TO [FROM TO ...] packs one npm
# package into the scratch directory, checks the tarball against the pinned
# integrity and extracts the listed members under their vendored names.
fetch() {
	local spec=$1 want=$2 dest=$3
	shift 3
	local name=${spec%@*} version=${spec##*@}
	local tarball="$WORK/${name}-${version}.tgz"

	# --ignore-scripts: nothing from the package may run on this machine.
	(cd "$WORK" && npm pack --silent --ignore-scripts "$spec" >/dev/null) ||
		die 1 "npm pack $spec failed; is the npm registry reachable?"
	[[ -f "$tarball" ]] || die 1 "npm pack $spec did not produce $tarball"

	local got
	got="$(integrity_of "$tarball")"
	[[ "$got" == "$want" ]] ||
		die 1 "$spec: tarball integrity $got does not match the pinned $want"

	local unpack="$WORK/unpack-$name"
	mkdir -p "$unpack"
	while (($# > 0)); do
		local from=$1 to=$2
		shift 2
		# Extract only the named member: a tarball cannot write elsewhere.
		tar -xzf "$tarball" -C "$unpack" --no-same-owner --no-same-permissions "$from" ||
			die 1 "$spec: $from is not in the tarball"
		install -m 0644 "$unpack/$from" "$dest/$to"
	done
	echo "vendor.sh: $spec tarball integrity ok"
}

main() {
	local mode=vendor
	case "${1:-}" in
	'') ;;
	--check) mode=check ;;
	--update-checksums) mode=update ;;
	-h | --help)
		sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
		exit 0
		;;
	*) die 2 "unknown argument '$1' (use --check, --update-checksums or no argument)" ;;
	esac
	(($# <= 1)) || die 2 "too many arguments"

	if [[ "$mode" == check ]]; then
		check_committed
		return
	fi

	need npm tar openssl base64 sha256sum install
	if [[ "$mode" == vendor && ! -f "$CHECKSUMS" ]]; then
		die 1 "$CHECKSUMS is missing; run assets/vendor.sh --update-checksums to create it"
	fi

	WORK="$(mktemp -d)"
	trap 'rm -rf "$WORK"' EXIT
	local stage="$WORK/stage"
	mkdir -p "$stage/$VENDOR_REL"

	fetch "$HTMX_SPEC" "$HTMX_INTEGRITY" "$stage/$VENDOR_REL" "${HTMX_FILES[@]}"
	fetch "$SSE_SPEC" "$SSE_INTEGRITY" "$stage/$VENDOR_REL" "${SSE_FILES[@]}"

	if [[ "$mode" == update ]]; then
		(cd "$stage" && find "$VENDOR_REL" -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum) >"$WORK/CHECKSUMS"
	else
		same_file_set "$stage" ||
			die 1 "the files to vendor differ from those listed in $CHECKSUMS; nothing was changed"
		if ! (cd "$stage" && sha256sum --check --strict --quiet "$CHECKSUMS"); then
			die 1 "downloaded files do not match $CHECKSUMS; nothing was changed"
		fi
		cp "$CHECKSUMS" "$WORK/CHECKSUMS"
	fi

	# Replace the vendor directory as a whole so that files dropped from the
	# lists above do not linger.
	rm -rf "${ASSETS_DIR:?}/$VENDOR_REL"
	mkdir -p "$ASSETS_DIR/$VENDOR_REL"
	cp "$stage/$VENDOR_REL"/* "$ASSETS_DIR/$VENDOR_REL/"
	if [[ "$mode" == update ]]; then
		cp "$WORK/CHECKSUMS" "$CHECKSUMS"
		echo "vendor.sh: wrote $CHECKSUMS"
	fi
	check_committed
}

main "$@"
