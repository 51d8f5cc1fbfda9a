#!/usr/bin/env bash
# Browser test of strata-proxy's /status page: a real strata-proxy process in front of
# the WordPress origin, some traffic, then the page rendered by headless Chromium. The
# numbers the page shows once its script has run must match /metrics fetched at the same
# moment (traffic stopped first, so they are stable). Saves a screenshot to
# benches/results/status.png.
#
# Usage: scripts/browser-test.sh
# Environment: STRATA_WP_ORIGIN (default http://127.0.0.1:8081), STRATA_WP_HOST
# (default 127.0.0.1:8080), STRATA_PROXY_BIN (default target/debug/strata-proxy, built
# if cargo is available), TRAFFIC_SECS (default 8).
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$SCRIPT_DIR/.." && pwd)
# shellcheck source=scripts/common.sh
. "$SCRIPT_DIR/common.sh"

ORIGIN=${STRATA_WP_ORIGIN:-http://127.0.0.1:8081}
HOST=${STRATA_WP_HOST:-127.0.0.1:8080}
TRAFFIC_SECS=${TRAFFIC_SECS:-8}
SCREENSHOT=$REPO_DIR/benches/results/status.png
HELPER="python3 $SCRIPT_DIR/status_page.py"

if [ "$(id -u)" -eq 0 ]; then
    apt_ensure chromium chromium-driver
fi
command -v chromium >/dev/null 2>&1 || die "chromium is not installed (run this script as root once to install it)"
command -v python3 >/dev/null 2>&1 || die "python3 is needed for the checks"

if ! command -v cargo >/dev/null 2>&1 && [ -x "${HOME:-/root}/.cargo/bin/cargo" ]; then
    export PATH="${HOME:-/root}/.cargo/bin:$PATH"
fi
BIN=${STRATA_PROXY_BIN:-$REPO_DIR/target/debug/strata-proxy}
if [ -z "${STRATA_PROXY_BIN:-}" ] && command -v cargo >/dev/null 2>&1; then
    (cd "$REPO_DIR" && cargo build -q -p strata-proxy --bin strata-proxy)
fi
[ -x "$BIN" ] || die "no strata-proxy binary at $BIN (cargo build -p strata-proxy)"

[ "$(http_code "$ORIGIN/" -H "Host: $HOST")" = 200 ] ||
    die "the WordPress origin does not answer at $ORIGIN (Host $HOST): run scripts/wordpress.sh up"

WORK=$(mktemp -d /tmp/strata-browser-test.XXXXXX)
PROXY_PID=
cleanup() {
    if [ -n "$PROXY_PID" ] && kill -0 "$PROXY_PID" 2>/dev/null; then
        kill -TERM "$PROXY_PID" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$PROXY_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$PROXY_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

read -r PUBLIC_PORT ADMIN_PORT < <($HELPER ports 2)
PUBLIC=127.0.0.1:$PUBLIC_PORT
ADMIN=127.0.0.1:$ADMIN_PORT
printf 'browser-test-secret-%s\n' "$RANDOM$RANDOM$RANDOM" >"$WORK/secret"
cat >"$WORK/proxy.toml" <<EOF
[server]
listen = "$PUBLIC"
admin_listen = "$ADMIN"

[origin]
url = "$ORIGIN"

[cluster]
node_id = "browser-test"
secret_file = "$WORK/secret"
EOF

log "starting $BIN (public $PUBLIC, admin $ADMIN)"
STRATA_LOG=warn "$BIN" --config "$WORK/proxy.toml" >"$WORK/proxy.log" 2>&1 &
PROXY_PID=$!
for _ in $(seq 1 100); do
    [ "$(http_code "http://$ADMIN/healthz")" = 200 ] && break
    kill -0 "$PROXY_PID" 2>/dev/null || { cat "$WORK/proxy.log" >&2; die "strata-proxy exited at start"; }
    sleep 0.1
done
[ "$(http_code "http://$ADMIN/healthz")" = 200 ] || { cat "$WORK/proxy.log" >&2; die "strata-proxy did not answer /healthz within 10 s"; }

mapfile -t PATHS < <($HELPER paths "$ORIGIN" "$HOST")
log "traffic: ${#PATHS[@]} paths for $TRAFFIC_SECS s"
timeout $((TRAFFIC_SECS + 30)) $HELPER traffic "$PUBLIC" "$HOST" "$TRAFFIC_SECS" 4 "${PATHS[@]}"
# Let the once-a-second sampler record the quiet after the traffic.
sleep 2

chrome() {
    timeout 90 chromium --headless=new --no-sandbox --disable-gpu --disable-dev-shm-usage \
        --no-first-run --no-default-browser-check --disable-extensions --hide-scrollbars \
        --user-data-dir="$WORK/profile" --window-size=1280,900 --virtual-time-budget=4000 "$@" \
        2>>"$WORK/chromium.log"
}

log "rendering http://$ADMIN/status in headless Chromium"
chrome --dump-dom "http://$ADMIN/status" >"$WORK/dom.html" || { tail -20 "$WORK/chromium.log" >&2; die "chromium --dump-dom failed"; }
curl -s --max-time 10 "http://$ADMIN/metrics" >"$WORK/metrics.txt"
log "numbers on the page vs /metrics"
if ! $HELPER check "$WORK/dom.html" "$WORK/metrics.txt"; then
    cp "$WORK/dom.html" /tmp/strata-status-dom.html
    die "the page does not show what /metrics says (rendered DOM kept in /tmp/strata-status-dom.html)"
fi

mkdir -p "$(dirname "$SCREENSHOT")"
rm -f "$WORK/status.png"
chrome --screenshot="$WORK/status.png" "http://$ADMIN/status" >/dev/null ||
    { tail -20 "$WORK/chromium.log" >&2; die "chromium --screenshot failed"; }
[ -s "$WORK/status.png" ] || die "chromium wrote no screenshot"
cp "$WORK/status.png" "$SCREENSHOT"
log "screenshot: $SCREENSHOT"
log "browser test passed"
