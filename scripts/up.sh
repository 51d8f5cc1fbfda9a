#!/usr/bin/env bash
# Brings up the whole local stack: the WordPress origin (scripts/wordpress.sh),
# memcached (scripts/memcached.sh), release builds of strata-proxy and strata-syncer,
# the cluster secret, the proxy with config/proxy.toml (public http://127.0.0.1:8080,
# admin http://127.0.0.1:9080; comments written behind) and the syncer with
# config/syncer.toml (admin http://127.0.0.1:9300).
#
# Usage: scripts/up.sh [up|stop|status]     (default: up)
#
# `stop` stops the proxy, the syncer and the origin nginx/php-fpm (MariaDB and memcached
# keep running). Logs: /var/log/strata/strata-{proxy,syncer}.log, pid files in /run/strata/.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$SCRIPT_DIR/.." && pwd)
# shellcheck source=scripts/common.sh
. "$SCRIPT_DIR/common.sh"

CONFIG=$REPO_DIR/config/proxy.toml
BINARY=$REPO_DIR/target/release/strata-proxy
SECRET_FILE=$STRATA_SECRET_FILE
PID_FILE=$STRATA_RUN_DIR/strata-proxy.pid
LOG_FILE=$STRATA_LOG_DIR/strata-proxy.log
PUBLIC=http://127.0.0.1:8080
ADMIN=http://127.0.0.1:9080
SYNCER_CONFIG=$REPO_DIR/config/syncer.toml
SYNCER_BINARY=$REPO_DIR/target/release/strata-syncer
SYNCER_PID_FILE=$STRATA_RUN_DIR/strata-syncer.pid
SYNCER_LOG_FILE=$STRATA_LOG_DIR/strata-syncer.log
SYNCER_ADMIN=http://127.0.0.1:9300

ensure_cargo() {
    if ! command -v cargo >/dev/null 2>&1 && [ -x "${HOME:-/root}/.cargo/bin/cargo" ]; then
        export PATH="${HOME:-/root}/.cargo/bin:$PATH"
    fi
    command -v cargo >/dev/null 2>&1 ||
        die "cargo not found: install a Rust toolchain (rust-version in Cargo.toml, e.g. via rustup) and put cargo on PATH"
}

stop_proxy() {
    stop_pidfile strata-proxy "$PID_FILE" TERM
}

start_proxy() {
    "$BINARY" --config "$CONFIG" --check-config || die "config/proxy.toml does not pass --check-config"
    stop_proxy
    local port
    for port in 8080 9080; do
        if port_listening "$port"; then
            die "port $port is already in use by another process"
        fi
    done
    {
        echo
        echo "=== $(date -u '+%Y-%m-%dT%H:%M:%SZ') starting $BINARY --config $CONFIG"
    } >>"$LOG_FILE"
    # setsid: the proxy outlives this script and its terminal.
    setsid "$BINARY" --config "$CONFIG" >>"$LOG_FILE" 2>&1 </dev/null 9>&- &
    echo $! >"$PID_FILE"
    log "strata-proxy: started (pid $(cat "$PID_FILE")), log $LOG_FILE"

    for _ in $(seq 1 300); do
        if ! pid_alive "$PID_FILE"; then
            tail -n 30 "$LOG_FILE" >&2
            rm -f "$PID_FILE"
            die "strata-proxy exited during start-up (log above, full log $LOG_FILE)"
        fi
        [ "$(http_code "$ADMIN/healthz" --max-time 1)" = 200 ] && return 0
        sleep 0.1
    done
    tail -n 30 "$LOG_FILE" >&2
    die "strata-proxy did not answer $ADMIN/healthz with 200 within 30 s (log above, full log $LOG_FILE)"
}

stop_syncer() {
    stop_pidfile strata-syncer "$SYNCER_PID_FILE" TERM
}

start_syncer() {
    "$SYNCER_BINARY" --config "$SYNCER_CONFIG" --check-config || die "config/syncer.toml does not pass --check-config"
    stop_syncer
    if port_listening 9300; then
        die "port 9300 is already in use by another process"
    fi
    {
        echo
        echo "=== $(date -u '+%Y-%m-%dT%H:%M:%SZ') starting $SYNCER_BINARY --config $SYNCER_CONFIG"
    } >>"$SYNCER_LOG_FILE"
    setsid "$SYNCER_BINARY" --config "$SYNCER_CONFIG" >>"$SYNCER_LOG_FILE" 2>&1 </dev/null 9>&- &
    echo $! >"$SYNCER_PID_FILE"
    log "strata-syncer: started (pid $(cat "$SYNCER_PID_FILE")), log $SYNCER_LOG_FILE"
    for _ in $(seq 1 300); do
        if ! pid_alive "$SYNCER_PID_FILE"; then
            tail -n 30 "$SYNCER_LOG_FILE" >&2
            rm -f "$SYNCER_PID_FILE"
            die "strata-syncer exited during start-up (log above, full log $SYNCER_LOG_FILE)"
        fi
        [ "$(http_code "$SYNCER_ADMIN/healthz" --max-time 1)" = 200 ] && return 0
        sleep 0.1
    done
    tail -n 30 "$SYNCER_LOG_FILE" >&2
    die "strata-syncer did not answer $SYNCER_ADMIN/healthz with 200 within 30 s (log above)"
}

# Prints the X-Cache header of a GET through the proxy.
x_cache() {
    curl -s -o /dev/null -D - --max-time 10 "$1" | tr -d '\r' |
        awk -F': ' 'tolower($1) == "x-cache" { v = $2 } END { print (v == "" ? "(none)" : v) }'
}

cmd_up() {
    require_root
    ensure_dirs
    take_lock up
    bash "$SCRIPT_DIR/wordpress.sh" up
    bash "$SCRIPT_DIR/memcached.sh" up
    ensure_cargo
    log "building strata-proxy and strata-syncer (release) ..."
    (cd "$REPO_DIR" && cargo build --release -p strata-proxy -p strata-syncer)
    ensure_cluster_secret
    start_proxy
    start_syncer
    log "GET $PUBLIC/ #1: X-Cache: $(x_cache "$PUBLIC/")"
    log "GET $PUBLIC/ #2: X-Cache: $(x_cache "$PUBLIC/")"
    cat <<EOF

Strata is up.
  Browse:           $PUBLIC/
  Proxy admin:      $ADMIN/status  $ADMIN/metrics  $ADMIN/cluster  $ADMIN/healthz
  Syncer admin:     $SYNCER_ADMIN/status  $SYNCER_ADMIN/metrics
  Comments:         written behind through memcached by the proxy, into MySQL by the syncer
  WordPress admin:  $PUBLIC/wp-admin/  (user admin, password admin)
  Origin (direct):  http://127.0.0.1:8081/  (send Host: 127.0.0.1:8080)
  Logs:             $LOG_FILE  $SYNCER_LOG_FILE
  Stop:             scripts/up.sh stop
EOF
}

cmd_stop() {
    require_root
    ensure_dirs
    take_lock up
    stop_syncer
    stop_proxy
    bash "$SCRIPT_DIR/wordpress.sh" stop
}

cmd_status() {
    local rc=0
    if pid_alive "$PID_FILE"; then
        echo "strata-proxy:   running (pid $(cat "$PID_FILE")), healthz $(http_code "$ADMIN/healthz")"
    else
        echo "strata-proxy:   stopped"
        rc=1
    fi
    if pid_alive "$SYNCER_PID_FILE"; then
        echo "strata-syncer:  running (pid $(cat "$SYNCER_PID_FILE")), healthz $(http_code "$SYNCER_ADMIN/healthz")"
    else
        echo "strata-syncer:  stopped"
        rc=1
    fi
    bash "$SCRIPT_DIR/wordpress.sh" status || rc=1
    return "$rc"
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
