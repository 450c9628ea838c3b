#!/usr/bin/env bash
# Installs what the test suite needs beyond Go and gcc, on a Debian-like
# machine: Chromium for the browser tests, shellcheck for install.sh.
# Does nothing when they are already present.
set -euo pipefail

need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v shellcheck >/dev/null 2>&1 || need+=(shellcheck)
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
