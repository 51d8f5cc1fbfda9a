#!/usr/bin/env bash
# Proves that MariaDB starts with config/mysql/my.cnf and applies it: starts a SECOND,
# throwaway server (a fresh datadir in a temp directory, a unix socket there, no TCP port)
# with --defaults-file = a copy of the profile, asks it for every value the profile sets
# (SELECT @@GLOBAL.…), compares, and stops it. The running MariaDB is never touched.
#
# Usage: scripts/mycnf-check.sh [MY_CNF]        (default: config/mysql/my.cnf)
# Exit: 0 when every value matches, 1 otherwise (or when the server does not start).
# Bounded: about a minute at most; everything is removed on exit, also on failure.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$SCRIPT_DIR/.." && pwd)
MY_CNF=${1:-$REPO_DIR/config/mysql/my.cnf}
START_TIMEOUT=60 # seconds for the server to answer
STOP_TIMEOUT=30  # seconds for it to shut down before it is killed

log() { printf '==> %s\n' "$*"; }
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

first_of() {
    local c
    for c in "$@"; do
        command -v "$c" >/dev/null 2>&1 && { command -v "$c"; return 0; }
    done
    return 1
}

[ -r "$MY_CNF" ] || die "cannot read $MY_CNF"
SERVER=$(first_of mariadbd mysqld) || die "no mariadbd/mysqld on PATH (install mariadb-server)"
INSTALL_DB=$(first_of mariadb-install-db mysql_install_db) || die "no mariadb-install-db"
CLIENT=$(first_of mariadb mysql) || die "no mariadb client"
ADMIN=$(first_of mariadb-admin mysqladmin) || die "no mariadb-admin"
PRINT_DEFAULTS=$(first_of my_print_defaults) || die "no my_print_defaults"

TMP=$(mktemp -d /tmp/strata-mycnf.XXXXXX)
SERVER_PID=
cleanup() {
    local rc=$?
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        timeout "$STOP_TIMEOUT" "$ADMIN" --no-defaults --socket="$TMP/mysqld.sock" -u"$CLIENT_USER" shutdown \
            >/dev/null 2>&1 || true
        for _ in $(seq 1 $((STOP_TIMEOUT * 10))); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$SERVER_PID" 2>/dev/null && kill -KILL "$SERVER_PID" 2>/dev/null
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [ "$rc" -ne 0 ] && [ -s "$TMP/error.log" ]; then
        printf -- '--- server log (%s) ---\n' "$TMP/error.log" >&2
        tail -n 30 "$TMP/error.log" >&2
    fi
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# As root the server must run as the mysql account (it refuses root), and owns the directory.
if [ "$(id -u)" -eq 0 ]; then
    RUN_AS=mysql
    CLIENT_USER=root
else
    RUN_AS=$(id -un)
    CLIENT_USER=$RUN_AS
fi
cp "$MY_CNF" "$TMP/my.cnf"
chmod 644 "$TMP/my.cnf"
mkdir "$TMP/data"
[ "$RUN_AS" = mysql ] && chown -R mysql:mysql "$TMP"

log "$("$SERVER" --version)"
log "initialising a throwaway datadir in $TMP with --defaults-file=$MY_CNF"
# --defaults-file must be the first option of both programs.
if ! timeout 120 "$INSTALL_DB" --defaults-file="$TMP/my.cnf" --datadir="$TMP/data" --user="$RUN_AS" \
    --skip-test-db --auth-root-authentication-method=socket >"$TMP/install.log" 2>&1; then
    tail -n 30 "$TMP/install.log" >&2
    die "mariadb-install-db failed with $MY_CNF"
fi

log "starting it on $TMP/mysqld.sock (no TCP port)"
"$SERVER" --defaults-file="$TMP/my.cnf" --datadir="$TMP/data" --user="$RUN_AS" \
    --socket="$TMP/mysqld.sock" --pid-file="$TMP/mysqld.pid" --log-error="$TMP/error.log" \
    --skip-networking --skip-log-bin >/dev/null 2>&1 &
SERVER_PID=$!

sql() { timeout 10 "$CLIENT" --no-defaults --socket="$TMP/mysqld.sock" -u"$CLIENT_USER" -N -B -e "$1"; }

deadline=$((SECONDS + START_TIMEOUT))
until sql 'SELECT 1' >/dev/null 2>&1; do
    kill -0 "$SERVER_PID" 2>/dev/null || die "the server exited while starting with $MY_CNF"
    [ "$SECONDS" -lt "$deadline" ] || die "the server did not answer within ${START_TIMEOUT}s"
    sleep 0.2
done
log "up: $(sql 'SELECT VERSION()')"

# Values compare after normalising: lower case, ON/TRUE → 1, OFF/FALSE → 0, K/M/G → bytes.
normalise() {
    local v
    v=$(printf '%s' "$1" | tr '[:upper:]' '[:lower:]')
    case "$v" in
    on | true) v=1 ;;
    off | false) v=0 ;;
    *[0-9]k) v=$((${v%k} * 1024)) ;;
    *[0-9]m) v=$((${v%m} * 1024 * 1024)) ;;
    *[0-9]g) v=$((${v%g} * 1024 * 1024 * 1024)) ;;
    esac
    printf '%s' "$v"
}

# Every option of the [mysqld] group, as the server reads it (--name=value or --flag).
checked=0
failed=0
skipped=0
printf '%-36s %-24s %-24s %s\n' variable profile server result
while IFS= read -r opt; do
    name=${opt#--}
    value=1 # a bare flag such as skip-name-resolve means ON
    case "$name" in *=*)
        value=${name#*=}
        name=${name%%=*}
        ;;
    esac
    loose=0
    case "$name" in loose-*)
        loose=1
        name=${name#loose-}
        ;;
    esac
    var=${name//-/_}
    if ! actual=$(sql "SELECT @@GLOBAL.$var" 2>/dev/null); then
        if [ "$loose" -eq 1 ]; then
            printf '%-36s %-24s %-24s %s\n' "$var" "$value" "-" "not on this server (loose-)"
            skipped=$((skipped + 1))
            continue
        fi
        printf '%-36s %-24s %-24s %s\n' "$var" "$value" "?" "FAIL: not a variable"
        failed=$((failed + 1))
        continue
    fi
    if [ "$(normalise "$value")" = "$(normalise "$actual")" ]; then
        result=ok
    else
        result=FAIL
        failed=$((failed + 1))
    fi
    checked=$((checked + 1))
    printf '%-36s %-24s %-24s %s\n' "$var" "$value" "$actual" "$result"
done < <("$PRINT_DEFAULTS" --defaults-file="$TMP/my.cnf" mysqld)

# The profile's point: commits are durable. Refuse to pass if that key was not checked.
[ "$(sql 'SELECT @@GLOBAL.innodb_flush_log_at_trx_commit')" = 1 ] ||
    die "innodb_flush_log_at_trx_commit is not 1"
if grep -E '\[(ERROR|Warning)\]' "$TMP/error.log" | grep -v -i -E 'loose|redo_log_capacity' >"$TMP/warnings"; then
    log "server warnings with this profile:"
    sed 's/^/    /' "$TMP/warnings"
fi
[ "$checked" -gt 0 ] || die "no option of [mysqld] was checked"
[ "$failed" -eq 0 ] || die "$failed value(s) differ from $MY_CNF"
log "MariaDB started with $(basename "$MY_CNF"): $checked values match, $skipped not on this server; stopping it"
