#!/bin/sh
# wabridge package: after unpacking (dpkg postinst). Sets up what install.sh
# sets up: the system user, the data folder and, on the first installation,
# /etc/wabridge/wabridge.env with a new master key and admin token. Data and
# keys already there are never replaced, so an upgrade or a reinstall keeps
# them.
#
# WABRIDGE_DOMAIN and WABRIDGE_EMAIL in the environment are written to the
# env file, and the service is then enabled and started:
#   sudo WABRIDGE_DOMAIN=bridge.example.com WABRIDGE_EMAIL=ops@example.com apt install ./wabridge_1.2.3_amd64.deb
#
# Under dpkg --root (DPKG_ROOT set) only files below that root are written:
# no user, no owners and no service, as with install.sh --root.
set -e

[ "$1" = configure ] || exit 0

root=${DPKG_ROOT:-}
data=$root/var/lib/wabridge
etc=$root/etc/wabridge
env_file=$etc/wabridge.env
real=1
[ -z "$root" ] || real=0

valid_domain() {
	printf '%s\n' "$1" | grep -Eqx '[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*\.[a-z][a-z0-9-]*[a-z0-9]' && [ ${#1} -le 253 ]
}
valid_email() {
	printf '%s\n' "$1" | grep -Eqx '[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}'
}

# env_value KEY prints KEY's value from the env file.
env_value() {
	v=""
	[ -f "$env_file" ] || return 0
	while IFS= read -r line || [ -n "$line" ]; do
		case $line in "$1="*) v=${line#*=} ;; esac
	done <"$env_file"
	v=${v#\"} v=${v%\"}
	printf '%s\n' "$v"
}

# set_env_value KEY VALUE replaces KEY's line (or adds it) through a
# temporary file and a rename, leaving every other line as it is.
set_env_value() {
	tmp=$(mktemp "$etc/.wabridge.env.XXXXXX")
	found=0
	while IFS= read -r line || [ -n "$line" ]; do
		case $line in
		"$1="*) printf '%s=%s\n' "$1" "$2"; found=1 ;;
		*) printf '%s\n' "$line" ;;
		esac
	done <"$env_file" >"$tmp"
	[ "$found" = 1 ] || printf '%s=%s\n' "$1" "$2" >>"$tmp"
	chmod 0600 "$tmp"
	mv -f "$tmp" "$env_file"
}

if [ "$real" = 1 ]; then
	getent group wabridge >/dev/null || groupadd --system wabridge
	if ! getent passwd wabridge >/dev/null; then
		# No home and no login shell: the account exists only to own the
		# data and run the service.
		useradd --system --gid wabridge --no-create-home --home-dir /nonexistent \
			--shell /usr/sbin/nologin --comment "wabridge service" wabridge
	fi
fi

(umask 022 && mkdir -p "$root/var/lib" "$root/etc")
umask 077
mkdir -p "$data" "$data/backups" "$etc"
chmod 0700 "$data" "$data/backups" "$etc"
if [ "$real" = 1 ]; then
	chown wabridge:wabridge "$data"
	# Backups and keys stay root's: the service has no reason to touch them.
	chown root:root "$data/backups" "$etc"
	find "$data" -maxdepth 1 -name 'wabridge.db*' ! -user wabridge -exec chown wabridge:wabridge {} +
fi

new_keys=0
if [ ! -f "$env_file" ]; then
	if [ -f "$data/wabridge.db" ]; then
		# A new key would lock the existing data away for good.
		echo "wabridge: /var/lib/wabridge/wabridge.db exists but /etc/wabridge/wabridge.env with its master key does not; put that file back (at least its WABRIDGE_MASTER_KEY line), then run: systemctl restart wabridge" >&2
		exit 0
	fi
	key=$(head -c 32 /dev/urandom | base64 -w 0)
	token=$(head -c 36 /dev/urandom | base64 -w 0 | tr '+/' '-_')
	tmp=$(mktemp "$etc/.wabridge.env.XXXXXX")
	cat >"$tmp" <<END
# wabridge settings, read by systemd when it starts wabridge.service.
# Readable by root only: it holds the master key and the admin token.
#
# WABRIDGE_MASTER_KEY unlocks the passwords and tokens stored in the
# database. Keep a copy in your password manager: it cannot be recovered,
# and a backup of the database is useless without it. Change it only
# together with 'wabridge keys rotate' (manual: Keys and backups).
WABRIDGE_MASTER_KEY=$key
# The password of the admin console.
WABRIDGE_ADMIN_TOKEN=$token
WABRIDGE_DATA=/var/lib/wabridge
# The public name and the certificate contact; the service starts once
# both are set (then: systemctl enable --now wabridge).
WABRIDGE_DOMAIN=
WABRIDGE_EMAIL=
#
# Other settings may be added here as WABRIDGE_<KEY>=value, e.g.
# WABRIDGE_RETENTION_DAYS=60; restart the service afterwards.
END
	chmod 0600 "$tmp"
	mv -f "$tmp" "$env_file"
	new_keys=1
fi
[ "$real" = 0 ] || chown root:root "$env_file"

# The name and the e-mail given in the environment, when valid, replace
# the stored ones; the keys are never touched.
domain=$(printf '%s' "${WABRIDGE_DOMAIN:-}" | tr '[:upper:]' '[:lower:]')
if [ -n "$domain" ]; then
	if valid_domain "$domain"; then
		[ "$(env_value WABRIDGE_DOMAIN)" = "$domain" ] || set_env_value WABRIDGE_DOMAIN "$domain"
	else
		echo "wabridge: WABRIDGE_DOMAIN=$domain is not a name like bridge.example.com; it was not stored" >&2
	fi
fi
if [ -n "${WABRIDGE_EMAIL:-}" ]; then
	if valid_email "$WABRIDGE_EMAIL"; then
		[ "$(env_value WABRIDGE_EMAIL)" = "$WABRIDGE_EMAIL" ] || set_env_value WABRIDGE_EMAIL "$WABRIDGE_EMAIL"
	else
		echo "wabridge: WABRIDGE_EMAIL=$WABRIDGE_EMAIL is not an e-mail address; it was not stored" >&2
	fi
fi

if [ "$new_keys" = 1 ]; then
	# Printed output may end up in apt's logs, so the secrets stay in the file.
	echo "wabridge: a new master key and admin token are in /etc/wabridge/wabridge.env (readable by root only)."
	echo "wabridge: store both in your password manager now (sudo cat /etc/wabridge/wabridge.env): the master key cannot be recovered."
fi

configured=0
if [ -n "$(env_value WABRIDGE_DOMAIN)" ] && [ -n "$(env_value WABRIDGE_EMAIL)" ]; then configured=1; fi

if [ "$real" = 1 ] && [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
	# Installed, upgraded or reinstalled with a name and an e-mail: the
	# service runs the program now in place. A masked service stays off.
	if [ "$configured" = 1 ]; then
		systemctl enable --quiet wabridge.service 2>/dev/null || true
		systemctl restart wabridge.service || true
	fi
fi
if [ "$configured" = 0 ]; then
	echo "wabridge: next, set WABRIDGE_DOMAIN and WABRIDGE_EMAIL in /etc/wabridge/wabridge.env and run: systemctl enable --now wabridge"
fi
exit 0
