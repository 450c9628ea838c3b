#!/bin/sh
# wabridge package: after removal (dpkg postrm). Removing the package keeps
# the data (/var/lib/wabridge, with its backups) and the keys
# (/etc/wabridge); purging deletes them and the wabridge user.
set -e
root=${DPKG_ROOT:-}
case "$1" in
purge)
	rm -rf "$root/var/lib/wabridge" "$root/etc/wabridge"
	if [ -z "$root" ]; then
		if getent passwd wabridge >/dev/null; then userdel wabridge 2>/dev/null || true; fi
		if getent group wabridge >/dev/null; then groupdel wabridge 2>/dev/null || true; fi
	fi
	;;
esac
if [ -z "$root" ] && [ -d /run/systemd/system ]; then
	case "$1" in
	remove | purge) systemctl daemon-reload >/dev/null 2>&1 || true ;;
	esac
fi
exit 0
