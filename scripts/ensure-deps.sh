#!/usr/bin/env bash
# Installs what the build and the tests need beyond Go and gcc, on a
# Debian-like machine, and does nothing when it is already present.
#   scripts/ensure-deps.sh           everything make test needs
#   scripts/ensure-deps.sh release   only what make release needs
# The tests need Chromium for the browser tests, shellcheck for install.sh
# and, because they build a release too, the release tools: a gcc for the
# other architecture (the binaries are cgo, for SQLite) with its C library,
# and qemu to run that architecture's binary once as a check.
set -euo pipefail

mode=${1:-test}
need=()

case $(uname -m) in
x86_64)
	command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || need+=(gcc-aarch64-linux-gnu)
	[ -f /usr/aarch64-linux-gnu/lib/libc.a ] || need+=(libc6-dev-arm64-cross)
	command -v qemu-aarch64-static >/dev/null 2>&1 || need+=(qemu-user-static)
	;;
aarch64)
	command -v x86_64-linux-gnu-gcc >/dev/null 2>&1 || need+=(gcc-x86-64-linux-gnu)
	[ -f /usr/x86_64-linux-gnu/lib/libc.a ] || need+=(libc6-dev-amd64-cross)
	command -v qemu-x86_64-static >/dev/null 2>&1 || need+=(qemu-user-static)
	;;
esac
command -v readelf >/dev/null 2>&1 || need+=(binutils)
command -v dpkg-deb >/dev/null 2>&1 || need+=(dpkg)

if [ "$mode" != release ]; then
	command -v chromium >/dev/null 2>&1 || need+=(chromium)
	command -v shellcheck >/dev/null 2>&1 || need+=(shellcheck)
fi
[ ${#need[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
	echo "ensure-deps: missing ${need[*]} and no apt-get to install them; install them and re-run" >&2
	exit 1
fi
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
echo "ensure-deps: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
