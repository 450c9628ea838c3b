#!/bin/sh
# wabridge package: before removal (dpkg prerm). Stops and disables the
# service when the package is removed; an upgrade leaves it running until
# the new version's postinst restarts it.
set -e
[ -z "${DPKG_ROOT:-}" ] || exit 0
case "$1" in
remove | deconfigure)
	if [ -d /run/systemd/system ]; then
		systemctl disable --now wabridge.service >/dev/null 2>&1 || true
	fi
	;;
esac
exit 0
