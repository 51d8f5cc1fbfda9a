#!/usr/bin/env bash
# Installs (if missing) and runs memcached on 127.0.0.1:11211 with 256 MiB,
# then checks it answers `stats`.
#
# Usage: scripts/memcached.sh [up|stop|status]     (default: up)
#
# Idempotent: if a memcached already answers on 127.0.0.1:11211 it is left alone.
# `stop` stops only the instance this script started (pid file below).
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/common.sh
. "$SCRIPT_DIR/common.sh"

HOST=127.0.0.1
PORT=11211
MEMORY_MB=256
PID_DIR=$STRATA_RUN_DIR/memcached
PID_FILE=$PID_DIR/memcached.pid

# Prints the server's `stats` reply (empty if nothing answers).
memcached_stats() {
    timeout 3 bash -c "exec 3<>/dev/tcp/$HOST/$PORT && printf 'stats\r\nquit\r\n' >&3 && cat <&3" 2>/dev/null || true
}

stat_value() {
    memcached_stats | tr -d '\r' | awk -v k="$1" '$1 == "STAT" && $2 == k { print $3 }'
}

cmd_up() {
    require_root
    ensure_dirs
    take_lock memcached
    apt_ensure memcached
    if memcached_stats | grep -q '^STAT pid'; then
        log "memcached: running on $HOST:$PORT"
    else
        if port_listening "$PORT"; then
            die "port $PORT is in use but does not answer the memcached protocol"
        fi
        # memcached writes its pid file (via a temporary file and rename) after
        # dropping privileges, so it gets a directory of its own.
        install -d -o memcache "$PID_DIR"
        memcached -d -u memcache -l "$HOST" -p "$PORT" -m "$MEMORY_MB" -c 4096 -P "$PID_FILE" 9>&-
        for _ in $(seq 1 50); do
            memcached_stats | grep -q '^STAT pid' && break
            sleep 0.1
        done
        memcached_stats | grep -q '^STAT pid' || die "memcached did not answer on $HOST:$PORT"
        log "memcached: started on $HOST:$PORT"
    fi
    local version limit
    version=$(stat_value version)
    limit=$(stat_value limit_maxbytes)
    echo "memcached ready: $HOST:$PORT (version $version, $((limit / 1024 / 1024)) MiB)"
}

cmd_stop() {
    require_root
    stop_pidfile memcached "$PID_FILE"
}

cmd_status() {
    if memcached_stats | grep -q '^STAT pid'; then
        echo "memcached: running on $HOST:$PORT (pid $(stat_value pid), version $(stat_value version), $(stat_value curr_items) items)"
    else
        echo "memcached: not answering on $HOST:$PORT"
        return 1
    fi
}

case "${1:-up}" in
    up | start) cmd_up ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *)
        echo "usage: $0 [up|stop|status]" >&2
        exit 2
        ;;
esac
