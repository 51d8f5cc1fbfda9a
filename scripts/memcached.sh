#!/usr/bin/env bash
# Installs (if missing) and runs memcached on 127.0.0.1:11211 for the comment queue,
# then checks it answers `stats`.
#
# Usage: scripts/memcached.sh [up|stop|status]     (default: up)
#
# The queue's memcached must never evict a queued comment, so it runs with -M: out of
# memory, it refuses new values (the proxy then passes the comment to PHP) instead of
# throwing old ones out. Its memory follows the proxies' [comments] max_queue (from
# STRATA_MAX_QUEUE, else config/proxy.toml, else the default 100000):
#   MiB = max(64, ceil(max_queue x 2 KiB / 1 MiB) + 32)
# 2 KiB holds a record with a comment of about 1 000 characters (JSON, seal, key, item
# header, slab rounding); the 32 MiB of headroom hold verdicts (kept 10 minutes),
# tombstones, the settings and longer comments; the 64 MiB floor, memcached's 1 MiB page
# per item size in use. See docs/operations.md.
#
# Idempotent: if a memcached already answers on 127.0.0.1:11211 it is left alone (with a
# warning if it evicts). `stop` stops only the instance this script started (pid file below).
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/common.sh
. "$SCRIPT_DIR/common.sh"

HOST=127.0.0.1
PORT=11211
PID_DIR=$STRATA_RUN_DIR/memcached
PID_FILE=$PID_DIR/memcached.pid
RECORD_KIB=2
HEADROOM_MB=32
FLOOR_MB=64

# The proxies' [comments] max_queue: STRATA_MAX_QUEUE, else the value in
# config/proxy.toml, else the proxy's default.
max_queue() {
    if [ -n "${STRATA_MAX_QUEUE:-}" ]; then
        echo "$STRATA_MAX_QUEUE"
        return
    fi
    local configured
    configured=$(awk -F'=' '/^\[/ { section = $0 } section == "[comments]" && $1 ~ /^[ \t]*max_queue[ \t]*$/ { sub(/#.*/, "", $2); gsub(/[^0-9]/, "", $2); print $2 }' \
        "$SCRIPT_DIR/../config/proxy.toml" 2>/dev/null || true)
    echo "${configured:-100000}"
}

# memcached's -m for a max_queue: max(FLOOR, ceil(max_queue x RECORD_KIB / 1024) + HEADROOM).
memory_mb() {
    local queue=$1 mb
    mb=$(((queue * RECORD_KIB + 1023) / 1024 + HEADROOM_MB))
    [ "$mb" -lt "$FLOOR_MB" ] && mb=$FLOOR_MB
    echo "$mb"
}

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
        local queue memory
        queue=$(max_queue)
        case "$queue" in '' | *[!0-9]*) die "max_queue $queue is not a number" ;; esac
        memory=$(memory_mb "$queue")
        log "memcached: -M -m $memory (max_queue $queue)"
        without_inherited_fds memcached -d -u memcache -l "$HOST" -p "$PORT" -m "$memory" -M -c 4096 -P "$PID_FILE"
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
    warn_if_evicting
    echo "memcached ready: $HOST:$PORT (version $version, $((limit / 1024 / 1024)) MiB)"
}

# Prints the server's `stats settings` reply (empty if nothing answers).
memcached_settings() {
    timeout 3 bash -c "exec 3<>/dev/tcp/$HOST/$PORT && printf 'stats settings\r\nquit\r\n' >&3 && cat <&3" 2>/dev/null || true
}

# Warns when the running memcached evicts (it was started without -M).
warn_if_evicting() {
    if memcached_settings | tr -d '\r' | grep -q '^STAT evictions on$'; then
        warn "memcached on $HOST:$PORT evicts when full (started without -M): queued comments can be lost; restart it with '$0 stop' then '$0 up' once no comment is queued"
    fi
}

cmd_stop() {
    require_root
    stop_pidfile memcached "$PID_FILE"
}

cmd_status() {
    if memcached_stats | grep -q '^STAT pid'; then
        echo "memcached: running on $HOST:$PORT (pid $(stat_value pid), version $(stat_value version), $(stat_value curr_items) items)"
        warn_if_evicting
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
