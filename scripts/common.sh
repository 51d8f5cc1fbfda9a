# shellcheck shell=bash
# Shared helpers for the scripts in this directory. Source it, don't run it.
#
# Provides: log/warn/die, root check, package installation (Debian, only what is
# missing), MariaDB start-up, pid-file based process helpers and a tiny HTTP probe.

STRATA_RUN_DIR=/run/strata
STRATA_LOG_DIR=/var/log/strata
STRATA_ETC_DIR=/etc/strata
STRATA_LIB_DIR=/var/lib/strata

log() { printf '==> %s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

require_root() {
    [ "$(id -u)" -eq 0 ] || die "$(basename "$0") must run as root (it installs packages and starts services)"
}

ensure_dirs() {
    mkdir -p "$STRATA_RUN_DIR" "$STRATA_LOG_DIR" "$STRATA_ETC_DIR" "$STRATA_LIB_DIR"
}

# The cluster secret the local proxy, syncer and the origin's Strata plugin share.
STRATA_SECRET_FILE=$STRATA_LIB_DIR/cluster.secret

# ensure_cluster_secret: generates the cluster secret once (64 hex digits) and keeps it
# readable by root and, when the group exists, by www-data (the WordPress plugin signs its
# bans with it), by nobody else.
ensure_cluster_secret() {
    if [ ! -s "$STRATA_SECRET_FILE" ]; then
        (
            umask 077
            head -c 32 /dev/urandom | od -An -v -tx1 | tr -d ' \n' >"$STRATA_SECRET_FILE.tmp"
            echo >>"$STRATA_SECRET_FILE.tmp"
            mv "$STRATA_SECRET_FILE.tmp" "$STRATA_SECRET_FILE"
        )
        log "generated cluster secret $STRATA_SECRET_FILE"
    fi
    if getent group www-data >/dev/null 2>&1; then
        chgrp www-data "$STRATA_SECRET_FILE"
        chmod 640 "$STRATA_SECRET_FILE"
    else
        chmod 600 "$STRATA_SECRET_FILE"
    fi
}

# take_lock NAME: serializes concurrent runs (e.g. tests and benchmarks both
# bringing the origin up) with an flock on /run/strata/NAME.lock, held on fd 9
# until the script exits. Daemons are started through without_inherited_fds so
# they do not inherit (and keep) the lock.
take_lock() {
    exec 9>"$STRATA_RUN_DIR/$1.lock"
    if ! flock -n 9; then
        log "waiting for another $1 run to finish ..."
        flock 9
    fi
}

# without_inherited_fds CMD...: runs CMD with every file descriptor above 2
# closed. A daemon must not keep a lock its starter holds: take_lock's fd 9, or
# the descriptor of a caller's `flock FILE command` (`flock /tmp/bench.lock
# benches/stack.sh` hands its lock to the benchmark on fd 3; an origin started
# there held the benchmark lock for as long as it ran).
without_inherited_fds() {
    (
        for fd in /proc/$BASHPID/fd/*; do
            fd=${fd##*/}
            if [ "$fd" -gt 2 ]; then eval "exec $fd>&-" 2>/dev/null || true; fi
        done
        exec "$@"
    )
}

# True if the Debian package is installed.
pkg_installed() {
    [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" = "install ok installed" ]
}

# apt_ensure PKG...: installs the packages that are not installed yet. Runs
# `apt-get update` only when something is missing. Services are kept from
# auto-starting during installation (we start our own instances).
apt_ensure() {
    local missing=() p
    for p in "$@"; do
        pkg_installed "$p" || missing+=("$p")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    log "installing packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    local own_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        own_policy=1
    fi
    local rc=0
    if [ -z "${STRATA_APT_UPDATED:-}" ]; then
        apt-get update -qq || rc=$?
        STRATA_APT_UPDATED=1
    fi
    [ "$rc" -eq 0 ] && apt-get install -y -qq --no-install-recommends "${missing[@]}" || rc=$?
    [ "$own_policy" -eq 1 ] && rm -f /usr/sbin/policy-rc.d
    [ "$rc" -eq 0 ] || die "apt-get install ${missing[*]} failed"
}

# pid_alive FILE: true if FILE holds the pid of a running process.
pid_alive() {
    local pid
    [ -s "$1" ] || return 1
    pid=$(cat "$1" 2>/dev/null) || return 1
    # /proc rather than `kill -0`, so that status checks also work without root.
    [ -n "$pid" ] && [ -d "/proc/$pid" ]
}

# stop_pidfile NAME FILE [SIGNAL]: signals the process in FILE and waits (10 s)
# for it to exit, then SIGKILLs it. Removes the pid file.
stop_pidfile() {
    local name=$1 file=$2 sig=${3:-TERM} pid
    if ! pid_alive "$file"; then
        rm -f "$file"
        log "$name: not running"
        return 0
    fi
    pid=$(cat "$file")
    kill -"$sig" "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        warn "$name (pid $pid) did not exit in 10 s, killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$file"
    log "$name: stopped (pid $pid)"
}

# port_listening PORT: true if something listens on 127.0.0.1:PORT (or any address).
port_listening() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# install_file SRC DST MODE: copies SRC to DST if the content differs.
# Returns 0 if the file changed, 1 if it was already up to date.
install_file() {
    local src=$1 dst=$2 mode=$3
    if [ -f "$dst" ] && cmp -s "$src" "$dst"; then
        return 1
    fi
    install -D -m "$mode" "$src" "$dst"
    log "installed $dst"
    return 0
}

# http_code URL [curl args...]: prints the HTTP status code (000 on failure).
http_code() {
    local url=$1
    shift
    curl -s -o /dev/null -w '%{http_code}' --max-time 10 "$@" "$url" || true
}

MARIADB_SOCKET=/run/mysqld/mysqld.sock

mariadb_up() {
    mariadb-admin --protocol=socket -uroot ping >/dev/null 2>&1
}

# ensure_mariadb: installs MariaDB if no server binary exists and starts it
# (directly, no init system needed) unless it already answers.
ensure_mariadb() {
    if ! command -v mariadbd >/dev/null 2>&1 && [ ! -x /usr/sbin/mariadbd ]; then
        apt_ensure mariadb-server
    fi
    apt_ensure mariadb-client
    if mariadb_up; then
        log "MariaDB: running"
        return 0
    fi
    local bin
    bin=$(command -v mariadbd || echo /usr/sbin/mariadbd)
    log "MariaDB: starting $bin"
    mkdir -p /run/mysqld
    chown mysql:mysql /run/mysqld
    without_inherited_fds start-stop-daemon --start --oknodo --background --exec "$bin" -- --user=mysql
    for _ in $(seq 1 300); do
        if [ -S "$MARIADB_SOCKET" ] && mariadb_up; then
            log "MariaDB: running"
            return 0
        fi
        sleep 0.1
    done
    die "MariaDB did not come up within 30 s (see the MariaDB error log)"
}

# stop_apache: the wordpress package can pull in apache2; we never use it.
stop_apache() {
    if [ -s /run/apache2/apache2.pid ] && pid_alive /run/apache2/apache2.pid; then
        log "stopping apache2 (installed as a wordpress dependency, not used)"
        apache2ctl -k stop >/dev/null 2>&1 || stop_pidfile apache2 /run/apache2/apache2.pid
    fi
}
