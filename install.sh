#!/usr/bin/env bash
# Installs, upgrades or removes wabridge as a systemd service on a Debian
# or Ubuntu server. Run it as root: sudo ./install.sh. Run it again with a
# newer program file to upgrade; data and keys are kept. ./install.sh --help
# lists the options. Piped into bash, it downloads the latest release:
#   curl -fsSL https://github.com/wabridge/wabridge/releases/latest/download/install.sh |
#     sudo bash -s -- --domain bridge.example.com --email ops@example.com
set -euo pipefail
# Everything this script creates is private unless it says otherwise: the
# env file holds the master key, and a temporary copy of it must never be
# readable by others, not even for a moment.
umask 077

readonly PROG=install.sh
readonly SERVICE=wabridge
readonly SVC_USER=wabridge
# Paths as the running system sees them. They are written into the unit and
# the env file unchanged; --root only moves where this script writes them.
readonly BIN_REAL=/usr/local/bin/wabridge
readonly DATA_REAL=/var/lib/wabridge
readonly ENV_REAL=/etc/wabridge/wabridge.env
readonly UNIT_REAL=/etc/systemd/system/wabridge.service
readonly HEALTH_WAIT=120
# Where --from without an address, and a piped install.sh, download the
# release from: a folder (or download address) holding SHA256SUMS and the
# wabridge_VERSION_linux_ARCH.tar.gz files it lists. WABRIDGE_RELEASE_URL
# points it at a mirror.
readonly RELEASE_URL=${WABRIDGE_RELEASE_URL:-https://github.com/wabridge/wabridge/releases/latest/download/}

usage() {
	cat <<EOF
Usage: sudo ./install.sh [--domain NAME] [--email ADDRESS] [--binary FILE | --from [URL|FILE]]
       sudo ./install.sh --uninstall [--purge [--yes]]
       ./install.sh --print-unit PATH

Installs wabridge as a service, or upgrades it when it is already installed.

  --domain NAME     the server's public name, e.g. bridge.example.com; its DNS
                    record must point at this server (asked for when missing)
  --email ADDRESS   where the certificate authority (Let's Encrypt) writes
                    about expiring certificates (asked for when missing)
  --binary FILE     the wabridge program to install (default: the file
                    "wabridge" or "bin/wabridge" next to this script)
  --from URL|FILE   install from a release: a wabridge_VERSION_linux_ARCH.tar.gz
                    (a download address or a file), or the address or folder
                    holding it; it is checked against the SHA256SUMS next to
                    it first, and refused if it does not match. Without a
                    value, and when this script is piped into bash: the
                    latest release, $RELEASE_URL
  --uninstall       stop and remove the service and the program; keeps the
                    data in /var/lib/wabridge and the keys in /etc/wabridge
  --purge           with --uninstall: also delete the data, the backups, the
                    keys and the wabridge user (asks first)
  --yes             do not ask before --purge deletes
  --root DIR        write every file below DIR instead of /, without creating
                    users or changing owners (for tests; needs --no-systemd)
  --no-systemd      do not start, stop or check the service
  --print-unit PATH print the systemd unit for the program at PATH and exit
                    (the packages are built with it)
  -h, --help        show this help

On an upgrade --domain and --email may be left out: the stored ones are kept.
EOF
}

say() { printf '%s\n' "$*"; }
warn() { printf 'Warning: %s\n' "$*" >&2; }
die() {
	printf '%s: %s\n' "$PROG" "$*" >&2
	exit 1
}
usage_error() {
	printf '%s: %s (see ./install.sh --help)\n' "$PROG" "$*" >&2
	exit 2
}

# ---------------------------------------------------------------- options

domain="" email="" binary="" from="" root="" action=install
purge=0 yes=0 use_systemd=1 unit_bin=""

need_value() {
	if [ $# -lt 2 ] || [ -z "$2" ] || [ "${2#-}" != "$2" ]; then
		usage_error "$1 needs a value"
	fi
}

while [ $# -gt 0 ]; do
	case $1 in
	--domain) need_value "$@"; domain=$2; shift 2 ;;
	--domain=*) domain=${1#*=}; shift ;;
	--email) need_value "$@"; email=$2; shift 2 ;;
	--email=*) email=${1#*=}; shift ;;
	--binary) need_value "$@"; binary=$2; shift 2 ;;
	--binary=*) binary=${1#*=}; shift ;;
	--from)
		# The value is optional: alone, --from means the latest release.
		if [ $# -ge 2 ] && [ -n "$2" ] && [ "${2#-}" = "$2" ]; then
			from=$2
			shift 2
		else
			from=$RELEASE_URL
			shift
		fi
		;;
	--from=*) from=${1#*=}; [ -n "$from" ] || usage_error "--from= needs a value"; shift ;;
	--print-unit) need_value "$@"; action=print-unit unit_bin=$2; shift 2 ;;
	--root) need_value "$@"; root=$2; shift 2 ;;
	--root=*) root=${1#*=}; shift ;;
	--uninstall) action=uninstall; shift ;;
	--purge) purge=1; shift ;;
	--yes | -y) yes=1; shift ;;
	--no-systemd) use_systemd=0; shift ;;
	-h | --help) usage; exit 0 ;;
	*) usage_error "unknown option \"$1\"" ;;
	esac
done

if [ "$purge" = 1 ] && [ "$action" != uninstall ]; then
	usage_error "--purge only goes with --uninstall"
fi
if [ -n "$binary" ] && [ -n "$from" ]; then
	usage_error "give either --binary or --from, not both"
fi
# Piped into bash (curl … | sudo bash -s -- …) there is no folder with a
# program beside the script: download the latest release.
if [ "$action" = install ] && [ -z "$binary" ] && [ -z "$from" ] && [ ! -f "${BASH_SOURCE[0]:-}" ]; then
	from=$RELEASE_URL
fi

# real=1 when this script manages the machine itself; with --root it only
# writes files below DIR. Users, owners, packages and ports belong to the
# machine, so they are left alone under --root: the files then belong to
# whoever runs the script, and the intended owner is what the unit says
# (User=wabridge).
real=1
if [ -n "$root" ]; then
	[ "$use_systemd" = 0 ] || usage_error "--root writes files only; add --no-systemd"
	[ -d "$root" ] || usage_error "--root $root: no such folder"
	root=$(cd "$root" && pwd)
	[ "$root" != / ] || root=""
	real=0
fi

readonly BIN=$root$BIN_REAL
readonly PREV=$BIN.previous
readonly DATA=$root$DATA_REAL
readonly DB=$DATA/wabridge.db
readonly BACKUPS=$DATA/backups
readonly ENV_FILE=$root$ENV_REAL
readonly ENV_DIR=${ENV_FILE%/*}
readonly UNIT=$root$UNIT_REAL

# ---------------------------------------------------------------- helpers

# Temporary files are removed on any exit, so an interrupted run leaves
# no half-written copy of the program or of the keys behind.
tmpfiles=()
secrets_pending=0
master_key="" admin_token=""

on_exit() {
	local f
	for f in "${tmpfiles[@]}"; do
		rm -rf -- "$f"
	done
	# If the first install stops on an error after the keys were written,
	# they must still be shown: the next run is an upgrade and will not
	# show them again.
	show_secrets
}
trap on_exit EXIT

# tmp_beside FILE sets tmp to a new empty file in FILE's folder, so that
# the final rename stays on one filesystem and is atomic. It sets a
# variable rather than printing the name: in a $(...) subshell the name
# would not reach the list that on_exit cleans up.
tmp=""
tmp_beside() {
	tmp=$(mktemp "${1%/*}/.${1##*/}.XXXXXX")
	tmpfiles+=("$tmp")
}

# write_file DEST MODE writes standard input to DEST through a temporary
# file and a rename: a reader (systemd, a crash) never sees half a file.
write_file() {
	local dest=$1 mode=$2
	tmp_beside "$dest"
	cat >"$tmp"
	chmod "$mode" "$tmp"
	if [ "$real" = 1 ]; then chown root:root "$tmp"; fi
	mv -f "$tmp" "$dest"
}

# mkdir_public creates DIR and any missing parents world-readable (0755),
# the normal mode of /usr/local/bin or /etc/systemd/system, which the
# private umask above would otherwise change.
mkdir_public() {
	(umask 022 && mkdir -p "$1")
}

# env_value KEY prints KEY's value from the env file, without the quotes
# systemd allows around it. The file is parsed rather than sourced: it is
# data, not a script.
env_value() {
	local line v=""
	[ -f "$ENV_FILE" ] || return 0
	while IFS= read -r line || [ -n "$line" ]; do
		case $line in
		"$1="*) v=${line#*=} ;;
		esac
	done <"$ENV_FILE"
	v=${v#\"} v=${v%\"} v=${v#\'} v=${v%\'}
	printf '%s\n' "$v"
}

# set_env_value KEY VALUE replaces KEY's line in the env file, or adds it,
# leaving every other line (the secrets, settings the admin added) as is.
set_env_value() {
	local content
	content=$(env_with "$1" "$2")
	write_file "$ENV_FILE" 0600 <<<"$content"
}

env_with() {
	local key=$1 value=$2 line found=0
	while IFS= read -r line || [ -n "$line" ]; do
		case $line in
		"$key="*) printf '%s=%s\n' "$key" "$value"; found=1 ;;
		*) printf '%s\n' "$line" ;;
		esac
	done <"$ENV_FILE"
	if [ "$found" = 0 ]; then printf '%s=%s\n' "$key" "$value"; fi
}

valid_domain() {
	local d=$1
	[ ${#d} -le 253 ] || return 1
	[[ $d =~ ^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$ ]] || return 1
	# Certificates are issued for names, not for an IP address.
	[[ ! $d =~ \.[0-9]+$ ]]
}

valid_email() {
	[[ $1 =~ ^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$ ]]
}

interactive() { [ -t 0 ]; }

# ask VAR PROMPT CHECK HINT asks until CHECK accepts the answer.
ask() {
	local var=$1 prompt=$2 check=$3 hint=$4 answer
	while :; do
		read -r -p "$prompt" answer || die "no answer given; run it again with the option on the command line"
		answer=$(printf '%s' "$answer" | tr -d '[:space:]')
		if [ "$check" = valid_domain ]; then answer=${answer,,}; fi
		if "$check" "$answer"; then
			printf -v "$var" '%s' "$answer"
			return 0
		fi
		say "$hint"
	done
}

show_secrets() {
	[ "$secrets_pending" = 1 ] || return 0
	secrets_pending=0
	cat <<EOF

======================================================================
  STORE THESE TWO VALUES NOW, in your password manager.
  They are shown only this once.

    Master key:   $master_key
    Admin token:  $admin_token

  The master key cannot be recovered. Without it, the passwords and
  tokens saved in wabridge cannot be read, not even from a backup.
  The admin token is the password of the admin console.
  A copy of both is in $ENV_FILE (readable by root only);
  if this server is lost, that copy is lost with it.
======================================================================

EOF
}

# ---------------------------------------------------------------- checks

check_root() {
	if [ "$real" = 1 ] && [ "$(id -u)" -ne 0 ]; then
		die "this needs administrator rights: run it as sudo ./install.sh"
	fi
}

# goarch is this machine's name in the release files: amd64 or arm64.
goarch=""
check_machine() {
	local arch
	arch=$(uname -m)
	case $arch in
	x86_64 | amd64) goarch=amd64 ;;
	aarch64 | arm64) goarch=arm64 ;;
	*) die "this server is $arch, but wabridge is built for 64-bit Intel/AMD (x86_64) and 64-bit ARM (aarch64) servers only; choose one of those" ;;
	esac
	[ "$real" = 1 ] || return 0
	if [ -r /etc/os-release ] && ! grep -Eq '^(ID|ID_LIKE)=.*(debian|ubuntu)' /etc/os-release; then
		warn "this is not Debian or Ubuntu; the installer is made for those and may not work here"
	fi
	if [ "$use_systemd" = 1 ] && [ ! -d /run/systemd/system ]; then
		die "systemd is not running on this machine, and wabridge runs as a systemd service; use a Debian or Ubuntu server"
	fi
}

# The program needs trusted root certificates to talk to Let's Encrypt,
# Meta and Bitrix24, and this script needs curl to check that it answers.
# Small server images sometimes lack one of them.
ensure_packages() {
	local need=()
	[ -s /etc/ssl/certs/ca-certificates.crt ] || need+=(ca-certificates)
	if [ "$use_systemd" = 1 ] && ! command -v curl >/dev/null 2>&1; then need+=(curl); fi
	[ ${#need[@]} -gt 0 ] || return 0
	command -v apt-get >/dev/null 2>&1 || die "please install ${need[*]} first, then run this again"
	say "Installing ${need[*]}…"
	DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null ||
		die "could not update the package list; check the server's internet connection"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null ||
		die "could not install ${need[*]}; install them by hand (apt-get install ${need[*]}) and run this again"
}

# A web server already on port 80 or 443 would make every start fail, and
# the log would not say why in words an admin recognises. Checked only on
# the first install: on an upgrade the ports are wabridge's own.
check_ports() {
	local out users
	command -v ss >/dev/null 2>&1 || return 0
	out=$(ss -Hltnp '( sport = :80 or sport = :443 )' 2>/dev/null || true)
	[ -n "$out" ] || return 0
	users=$(grep -o 'users:(("[^"]*"' <<<"$out" | cut -d'"' -f2 | sort -u | grep -vx wabridge | paste -sd, - || true)
	if [ -n "$users" ]; then
		die "port 80 or 443 is already used by: ${users//,/, }. wabridge needs both ports; stop that program (e.g. systemctl disable --now ${users%%,*}) and run this again"
	fi
}

# Only a warning: the admin may set the DNS record right after installing,
# and the service keeps trying until the certificate can be obtained.
check_dns() {
	if ! getent ahosts "$domain" >/dev/null 2>&1; then
		warn "$domain does not resolve to an address yet. Create its DNS record (A, and AAAA for IPv6) pointing at this server; the certificate cannot be obtained before that."
	fi
}

# ---------------------------------------------------------------- release

is_url() {
	case $1 in
	http://* | https://*) return 0 ;;
	*) return 1 ;;
	esac
}

# download URL FILE fetches one file of a release.
download() {
	command -v curl >/dev/null 2>&1 || die "curl is needed to download the release; install it (apt-get install curl) and run this again"
	# Not from standard input: piped into bash, that is the script itself.
	curl -fsSL --retry 2 --connect-timeout 20 -o "$2" "$1" </dev/null 2>/dev/null
}

# fetch_release takes the release named by --from into a private temporary
# folder, checks it against SHA256SUMS and sets fetched to the program in
# it. It writes nothing outside that folder, so a refusal changes nothing.
fetched=""
fetch_release() {
	local base name="" want="" sum file line work pattern
	work=$(mktemp -d "${TMPDIR:-/tmp}/wabridge-release.XXXXXX")
	tmpfiles+=("$work")
	# --from names either the tarball or the place holding it; SHA256SUMS
	# is always beside the tarball.
	if is_url "$from"; then
		case ${from%%[?#]*} in
		*.tar.gz) base=${from%/*} name=${from##*/} ;;
		*) base=${from%/} ;;
		esac
		say "Downloading $base/SHA256SUMS…"
		download "$base/SHA256SUMS" "$work/SHA256SUMS" ||
			die "could not download $base/SHA256SUMS; check the address and the server's internet connection"
	else
		if [ -d "$from" ]; then
			base=$from
		elif [ -f "$from" ]; then
			base=$(dirname "$from") name=${from##*/}
		else
			die "--from $from: no such file or folder"
		fi
		[ -f "$base/SHA256SUMS" ] || die "there is no SHA256SUMS beside $from; download it from the same release and put it there"
		cp "$base/SHA256SUMS" "$work/SHA256SUMS"
	fi

	# The names come from SHA256SUMS, so only a release file name is
	# accepted: nothing that could point elsewhere.
	pattern="^wabridge_[A-Za-z0-9.+~-]+_linux_${goarch}\\.tar\\.gz\$"
	if [ -z "$name" ]; then
		while read -r sum file || [ -n "$sum" ]; do
			file=${file#\*}
			if [[ $file =~ $pattern ]]; then name=$file; fi
		done <"$work/SHA256SUMS"
		[ -n "$name" ] || die "the release at $base has no wabridge_VERSION_linux_$goarch.tar.gz for this $goarch server"
	fi
	if [[ ! $name =~ $pattern ]]; then
		if [[ $name =~ ^wabridge_.*_linux_[a-z0-9]+\.tar\.gz$ ]]; then
			die "$name is for another kind of server; this one needs wabridge_VERSION_linux_$goarch.tar.gz"
		fi
		die "$name is not a wabridge release (wabridge_VERSION_linux_$goarch.tar.gz)"
	fi
	while read -r sum file || [ -n "$sum" ]; do
		if [ "${file#\*}" = "$name" ]; then want=$sum; fi
	done <"$work/SHA256SUMS"
	[ -n "$want" ] || die "SHA256SUMS beside $name has no line for it, so it cannot be checked; use the SHA256SUMS of the same release"

	if is_url "$from"; then
		say "Downloading $base/$name…"
		download "$base/$name" "$work/$name" || die "could not download $base/$name; check the address and the server's internet connection"
	else
		cp "$base/$name" "$work/$name" 2>/dev/null || die "$base/$name: no such file"
	fi
	line=$(sha256sum "$work/$name")
	if [ "${line%% *}" != "$want" ]; then
		die "$name does not match its checksum in SHA256SUMS, so nothing was installed or changed; download both files of the same release again"
	fi
	say "Checked $name against SHA256SUMS."
	mkdir "$work/x"
	tar -xzf "$work/$name" -C "$work/x" --no-same-owner "${name%.tar.gz}/wabridge" 2>/dev/null ||
		die "$name holds no ${name%.tar.gz}/wabridge program"
	fetched=$work/x/${name%.tar.gz}/wabridge
}

# ---------------------------------------------------------------- install

find_binary() {
	local dir f
	if [ -n "$binary" ]; then
		[ -f "$binary" ] || die "--binary $binary: no such file"
		printf '%s\n' "$binary"
		return
	fi
	dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
	# The release folder holds the program beside install.sh; a source
	# checkout builds it into bin/.
	for f in "$dir/wabridge" "$dir/bin/wabridge"; do
		if [ -f "$f" ]; then
			printf '%s\n' "$f"
			return
		fi
	done
	die "no wabridge program found next to install.sh (looked for $dir/wabridge and $dir/bin/wabridge); copy it there or give --binary FILE"
}

ensure_user() {
	[ "$real" = 1 ] || return 0
	if ! getent group "$SVC_USER" >/dev/null; then
		groupadd --system "$SVC_USER"
	fi
	if ! getent passwd "$SVC_USER" >/dev/null; then
		# No home and no login shell: the account exists only to own the
		# data and run the service.
		useradd --system --gid "$SVC_USER" --no-create-home --home-dir /nonexistent \
			--shell /usr/sbin/nologin --comment "wabridge service" "$SVC_USER"
		say "Created the system user $SVC_USER."
	fi
}

make_folders() {
	mkdir_public "${BIN%/*}"
	mkdir_public "${UNIT%/*}"
	mkdir_public "${DATA%/*}"
	mkdir -p "$DATA" "$BACKUPS" "$ENV_DIR"
	chmod 0700 "$DATA" "$BACKUPS" "$ENV_DIR"
	[ "$real" = 1 ] || return 0
	chown "$SVC_USER:$SVC_USER" "$DATA"
	# Backups stay root's: the service has no reason to read or delete them.
	chown root:root "$BACKUPS" "$ENV_DIR"
	# A command run as root by mistake (instead of as wabridge) leaves
	# database files the service cannot open; give them back.
	find "$DATA" -maxdepth 1 -name 'wabridge.db*' ! -user "$SVC_USER" -exec chown "$SVC_USER:$SVC_USER" {} +
}

# take_backup copies the live database with the installed program, before
# anything changes; the new program is not trusted with it yet.
backup_file=""
take_backup() {
	local tool=$1 name out staging
	if [ ! -f "$DB" ]; then
		say "No database yet, so there is nothing to back up."
		return 0
	fi
	# Two runs within one second must not collide: the backup command
	# refuses to overwrite, and an old backup must never be replaced.
	local stamp n=1
	stamp=$(date -u +%Y%m%d-%H%M%S)
	name=wabridge-$stamp.db
	while [ -e "$BACKUPS/$name" ]; do
		n=$((n + 1))
		name=wabridge-$stamp-$n.db
	done
	say "Backing up the database to $BACKUPS/$name…"
	if [ "$real" = 1 ]; then
		# The copy runs as wabridge so that SQLite's side files it may
		# create keep the service's owner; it is written to a staging
		# folder wabridge may write, then moved into the root-only folder.
		staging=$(mktemp -d "$DATA/.backup.XXXXXX")
		tmpfiles+=("$staging")
		chown "$SVC_USER:$SVC_USER" "$staging"
		out=$(runuser -u "$SVC_USER" -- "$tool" backup --data "$DATA_REAL" "$staging/$name" 2>&1 >/dev/null) ||
			die "the backup failed, so nothing was changed: $out"
		chown root:root "$staging/$name"
		mv "$staging/$name" "$BACKUPS/$name"
	else
		out=$("$tool" backup --data "$DATA" "$BACKUPS/$name" 2>&1 >/dev/null) ||
			die "the backup failed, so nothing was changed: $out"
	fi
	chmod 0600 "$BACKUPS/$name"
	backup_file=$BACKUPS/$name
}

write_env_file() {
	master_key=$(head -c 32 /dev/urandom | base64 -w 0)
	# 36 random bytes give 48 characters with no padding; + and / become
	# - and _ so the token is easy to paste into a URL or a form.
	admin_token=$(head -c 36 /dev/urandom | base64 -w 0 | tr '+/' '-_')
	write_file "$ENV_FILE" 0600 <<EOF
# wabridge settings, read by systemd when it starts wabridge.service.
# Readable by root only: it holds the master key and the admin token.
#
# WABRIDGE_MASTER_KEY unlocks the passwords and tokens stored in the
# database. Keep a copy in your password manager: it cannot be recovered,
# and a backup of the database is useless without it. Change it only
# together with 'wabridge keys rotate' (manual: Keys and backups).
WABRIDGE_MASTER_KEY=$master_key
# The password of the admin console.
WABRIDGE_ADMIN_TOKEN=$admin_token
WABRIDGE_DATA=$DATA_REAL
# The public name and the certificate contact; run install.sh again with
# --domain or --email to change them.
WABRIDGE_DOMAIN=$domain
WABRIDGE_EMAIL=$email
#
# Other settings may be added here as WABRIDGE_<KEY>=value, e.g.
# WABRIDGE_RETENTION_DAYS=60; restart the service afterwards.
EOF
	secrets_pending=1
}

write_unit() {
	# Not a pipe: write_file must run in this shell, so that its temporary
	# file is on the list the exit trap cleans up.
	write_file "$UNIT" 0644 < <(unit_text "$BIN_REAL" "Written by install.sh; running it again overwrites this file.")
}

# unit_text PROGRAM COMMENT prints the service definition for the program
# at PROGRAM. It is the one definition: install.sh writes it, and the
# packages carry it (install.sh --print-unit /usr/bin/wabridge).
unit_text() {
	# ${WABRIDGE_DOMAIN} (with braces) is expanded by systemd as one
	# argument from the env file, so a domain change needs no unit change.
	cat <<EOF
# $2
[Unit]
Description=wabridge (WhatsApp to Bitrix24 Contact Center bridge)
Wants=network-online.target
After=network-online.target
# Never give up restarting: a certificate that cannot be obtained yet (DNS
# not set) starts working once the record is right.
StartLimitIntervalSec=0

[Service]
Type=simple
User=$SVC_USER
Group=$SVC_USER
EnvironmentFile=$ENV_REAL
ExecStart=$1 serve --domain \${WABRIDGE_DOMAIN} --email \${WABRIDGE_EMAIL} --data $DATA_REAL
Restart=on-failure
# Spaced out so that a setup that keeps failing does not run into the
# certificate authority's rate limits.
RestartSec=30s
KillSignal=SIGTERM
TimeoutStopSec=20
LimitNOFILE=65536
UMask=0077

# Ports 80 and 443 without running as root, and no other privilege.
AmbientCapabilities=CAP_NET_BIND_SERVICE
CapabilityBoundingSet=CAP_NET_BIND_SERVICE
NoNewPrivileges=yes

# The whole system is read-only except the data folder.
ProtectSystem=strict
ReadWritePaths=$DATA_REAL
PrivateTmp=yes
ProtectHome=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
# Go programs never need writable and executable memory at once.
MemoryDenyWriteExecute=yes
RemoveIPC=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallErrorNumber=EPERM

[Install]
WantedBy=multi-user.target
EOF
}

# install_binary TEMP puts the checked copy in place: the installed program
# becomes wabridge.previous, then a rename swaps in the new one, so the
# path always holds a complete program.
install_binary() {
	local staged=$1
	if [ -f "$BIN" ]; then
		tmp_beside "$PREV"
		cp -p "$BIN" "$tmp"
		mv -f "$tmp" "$PREV"
	fi
	mv -f "$staged" "$BIN"
}

# rollback puts wabridge.previous back in place of the program.
rollback() {
	tmp_beside "$BIN"
	cp -p "$PREV" "$tmp"
	mv -f "$tmp" "$BIN"
}

service_state() {
	systemctl show -p SubState --value "$SERVICE" 2>/dev/null || true
}

restarts() {
	systemctl show -p NRestarts --value "$SERVICE" 2>/dev/null || echo 0
}

# wait_healthy asks /health on this machine, under the service's own name
# so that the right certificate is chosen, until it answers or the time is
# up. It gives up early when the program has stopped with an error. FIRST
# is 1 on a first install, when a certificate may have to be obtained.
wait_healthy() {
	local first=$1 waited=0 base state
	base=$(restarts)
	if [ "$first" = 1 ]; then
		say "Waiting for wabridge to answer at https://$domain/health (the first start can take a minute while the certificate is obtained)…"
	else
		say "Waiting for wabridge to answer at https://$domain/health…"
	fi
	while :; do
		if curl -fsS --max-time 2 -k -o /dev/null --resolve "$domain:443:127.0.0.1" "https://$domain/health" 2>/dev/null; then
			say "wabridge answers."
			return 0
		fi
		state=$(service_state)
		if [ "$state" = failed ] || [ "$state" = auto-restart ] || [ "$(restarts)" != "$base" ]; then
			say "wabridge stopped with an error."
			return 1
		fi
		if [ "$waited" -ge "$HEALTH_WAIT" ]; then
			say "wabridge did not answer within $HEALTH_WAIT seconds."
			return 1
		fi
		sleep 2
		waited=$((waited + 2))
		if [ $((waited % 10)) = 0 ]; then say "  still waiting… $waited s"; fi
	done
}

show_log() {
	say ""
	say "The last lines of its log:"
	journalctl -u "$SERVICE" -n 20 --no-pager 2>/dev/null | sed 's/^/  /' || true
	say ""
	say "For more, run: journalctl -u $SERVICE -n 50"
}

do_install() {
	local src staged version old_version="" upgrade=0 stored
	check_root
	check_machine
	if [ -n "$from" ]; then
		fetch_release
		src=$fetched
	else
		src=$(find_binary)
	fi

	if [ -f "$ENV_FILE" ]; then
		upgrade=1
		[ -n "$(env_value WABRIDGE_MASTER_KEY)" ] ||
			die "$ENV_FILE has no WABRIDGE_MASTER_KEY line; put the master key back from your password manager (WABRIDGE_MASTER_KEY=...) and run this again"
	elif [ -f "$DB" ]; then
		# A new key would lock the existing data away for good.
		die "there is a database in $DATA_REAL but no $ENV_REAL with its master key; restore that file (or at least its WABRIDGE_MASTER_KEY line from your password manager) and run this again"
	fi

	# Domain and e-mail: the options win, then what an earlier install
	# stored, then a question if someone is at the keyboard.
	if [ "$upgrade" = 1 ]; then
		stored=$(env_value WABRIDGE_DOMAIN)
		[ -n "$domain" ] || domain=$stored
		stored=$(env_value WABRIDGE_EMAIL)
		[ -n "$email" ] || email=$stored
	fi
	domain=${domain,,}
	if [ -z "$domain" ]; then
		interactive || usage_error "give the server's public name with --domain, e.g. --domain bridge.example.com"
		ask domain "The server's public name (e.g. bridge.example.com): " valid_domain \
			"That is not a name like bridge.example.com; try again."
	fi
	valid_domain "$domain" || usage_error "--domain \"$domain\" is not a name like bridge.example.com"
	if [ -z "$email" ]; then
		interactive || usage_error "give an e-mail address for certificate notices with --email, e.g. --email ops@example.com"
		ask email "E-mail address for certificate notices (e.g. ops@example.com): " valid_email \
			"That is not an e-mail address; try again."
	fi
	valid_email "$email" || usage_error "--email \"$email\" is not an e-mail address"

	if [ "$real" = 1 ]; then
		ensure_packages
		if [ "$use_systemd" = 1 ]; then
			if [ "$upgrade" = 0 ]; then check_ports; fi
			check_dns
		fi
	fi

	# Stage the new program beside its final place and ask it for its
	# version: a file that is not wabridge, is damaged or cannot run on
	# this machine is refused before anything else changes.
	mkdir_public "${BIN%/*}"
	tmp_beside "$BIN"
	staged=$tmp
	cp "$src" "$staged"
	chmod 0755 "$staged"
	if ! version=$("$staged" version 2>&1); then
		die "$src does not run on this server (is it the complete file?): ${version:-no output}"
	fi
	[[ $version == wabridge\ * ]] || die "$src is not the wabridge program"
	version=${version#wabridge }
	version=${version%% *}
	if [ "$upgrade" = 1 ] && [ -x "$BIN" ]; then
		old_version=$("$BIN" version 2>/dev/null) || old_version="wabridge (unknown version)"
		old_version=${old_version#wabridge }
		old_version=${old_version%% *}
		if [ "$old_version" = "$version" ]; then
			say "Reinstalling wabridge $version (the installed version)."
		else
			say "Upgrading wabridge from $old_version to $version."
		fi
	else
		say "Installing wabridge $version for https://$domain."
		if [ "$upgrade" = 1 ]; then say "Using the keys kept in $ENV_REAL from the earlier installation."; fi
	fi

	ensure_user
	make_folders

	if [ "$upgrade" = 1 ]; then
		if [ -x "$BIN" ]; then take_backup "$BIN"; else take_backup "$staged"; fi
		# Keys are never regenerated; only the name and e-mail may change.
		if [ "$(env_value WABRIDGE_DOMAIN)" != "$domain" ]; then set_env_value WABRIDGE_DOMAIN "$domain"; fi
		if [ "$(env_value WABRIDGE_EMAIL)" != "$email" ]; then set_env_value WABRIDGE_EMAIL "$email"; fi
		chmod 0600 "$ENV_FILE"
		if [ "$real" = 1 ]; then chown root:root "$ENV_FILE"; fi
	else
		write_env_file
	fi

	install_binary "$staged"
	write_unit

	if [ "$use_systemd" = 0 ]; then
		show_secrets
		say "wabridge $version is in place; the service was not started or restarted (--no-systemd)."
		return 0
	fi

	systemctl daemon-reload
	systemctl enable --quiet "$SERVICE"
	# restart also starts a stopped service, and makes an upgrade run the
	# new program.
	systemctl restart "$SERVICE"

	if wait_healthy $((1 - upgrade)); then
		show_secrets
		if [ "$upgrade" = 1 ]; then
			say "Upgrade done: wabridge $version is running. Your data and keys were kept."
			if [ -n "$backup_file" ]; then say "The backup taken before the upgrade is $backup_file."; fi
		else
			say "wabridge is installed and running."
			say "Next: open https://$domain/setup and sign in with the admin token above."
		fi
		return 0
	fi

	if [ "$upgrade" = 1 ] && [ -f "$PREV" ]; then
		show_log
		say ""
		say "Putting the previous version ($old_version) back…"
		rollback
		systemctl restart "$SERVICE"
		if wait_healthy 0; then
			die "the new version $version did not start, so the previous version $old_version is running again. Your data is unchanged${backup_file:+; the backup is $backup_file}."
		fi
		die "the new version $version did not start, and the previous version $old_version does not answer either${backup_file:+; the backup is $backup_file}. Check the log: journalctl -u $SERVICE -n 50"
	fi
	show_secrets
	show_log
	say ""
	say "wabridge is installed and will keep trying to start. Check that:"
	say "  - $domain points at this server (dig +short $domain),"
	say "  - ports 80 and 443 are open in any firewall in front of the server."
	die "wabridge does not answer yet at https://$domain/health"
}

# ---------------------------------------------------------------- uninstall

confirm_purge() {
	[ "$yes" = 0 ] || return 0
	interactive || usage_error "--purge deletes all data and keys; add --yes to confirm"
	say "--purge deletes the database (all settings, conversations and backups in $DATA_REAL)"
	say "and the master key in $ENV_REAL. This cannot be undone."
	local answer
	read -r -p "Type DELETE to continue: " answer || answer=""
	[ "$answer" = DELETE ] || die "nothing was deleted"
}

do_uninstall() {
	check_root
	if [ "$purge" = 1 ]; then confirm_purge; fi
	if [ "$use_systemd" = 1 ] && command -v systemctl >/dev/null 2>&1; then
		systemctl disable --now --quiet "$SERVICE" 2>/dev/null || true
	fi
	rm -f "$UNIT"
	if [ "$use_systemd" = 1 ] && command -v systemctl >/dev/null 2>&1; then
		systemctl daemon-reload
		systemctl reset-failed "$SERVICE" 2>/dev/null || true
	fi
	rm -f "$BIN" "$PREV"
	say "The wabridge service and program are removed."
	if [ "$purge" = 0 ]; then
		say "Your data ($DATA_REAL, with its backups) and keys ($ENV_REAL) were kept;"
		say "run ./install.sh to set wabridge up again with them, or add --purge to delete them."
		return 0
	fi
	rm -rf "$DATA" "$ENV_DIR"
	if [ "$real" = 1 ]; then
		if getent passwd "$SVC_USER" >/dev/null; then userdel "$SVC_USER" 2>/dev/null || true; fi
		if getent group "$SVC_USER" >/dev/null; then groupdel "$SVC_USER" 2>/dev/null || true; fi
	fi
	if [ "$real" = 1 ]; then
		say "The data, the backups, the keys and the $SVC_USER user are deleted."
	else
		say "The data, the backups and the keys are deleted."
	fi
}

case $action in
uninstall) do_uninstall ;;
print-unit)
	[[ $unit_bin == /* ]] || usage_error "--print-unit needs the program's absolute path, e.g. /usr/bin/wabridge"
	unit_text "$unit_bin" "Installed by the wabridge package; install.sh writes the same service as /etc/systemd/system/wabridge.service."
	;;
*) do_install ;;
esac
