#!/usr/bin/env bash
# HTTP cache conformance: the public HTTP cache test suite (npm package http-cache-tests,
# https://cache-tests.fyi) run through strata-proxy with `[cache] preset = "http"` and with the
# WordPress preset, Varnish 7 and nginx proxy_cache, each in front of the suite's own origin
# server; the summary (passed / failed / optional failed, by category, beside the results
# the package ships for Apache Traffic Server, Varnish, nginx, Squid and httpd) goes to
# benches/results/conformance.md.
#
#   benches/conformance.sh
#
# Environment:
#   SUITE_VERSION  http-cache-tests version (default 0.4.5)
#   RESULTS        where the Markdown report goes (default benches/results/conformance.md)
#   STRATA_BIN     a strata-proxy binary to test (default: built here, debug profile:
#                  conformance is about behaviour, not speed)
#   STRATA_HTTP_CACHE  the [cache] lines of the exact-cache run (default: preset = "http")
#   STRATA_EXTRA   more [cache] lines for both strata runs (default: fill_headers =
#                  ["req-num"], see below)
#   KEEP_WORK=1    keep the temporary work directory (logs, raw results)
#
# The suite numbers its requests with a `Req-Num` request header and reads the number back
# from its origin's answer to tell a stored response from a fetched one. strata-proxy builds
# the requests that fill its cache from an allowlist of the client's headers (so nothing the
# key ignores shapes a stored object); `[cache] fill_headers = ["req-num"]` adds the suite's
# bookkeeping header to that list. Without it the suite reads every fill as a retry.
#
# Ports (all 127.0.0.1): suite origin 8190, strata-proxy http preset 8191 (admin 9191),
# strata-proxy WordPress preset 8192 (admin 9192), Varnish 8193, nginx 8194.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"
BENCH=$ROOT/benches
SUITE_VERSION=${SUITE_VERSION:-0.4.5}
RESULTS=${RESULTS:-$BENCH/results/conformance.md}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
STRATA_HTTP_CACHE=${STRATA_HTTP_CACHE:-preset = \"http\"}
STRATA_EXTRA=${STRATA_EXTRA-fill_headers = [\"req-num\"]}

ORIGIN_PORT=8190
CACHES=(strata-http strata-wp varnish nginx)
declare -A PORT=([strata-http]=8191 [strata-wp]=8192 [varnish]=8193 [nginx]=8194)
declare -A ADMIN=([strata-http]=9191 [strata-wp]=9192)
declare -A NAME=(
    [strata-http]='strata-proxy, preset "http"'
    [strata-wp]='strata-proxy, preset "wordpress"'
    [varnish]="Varnish"
    [nginx]="nginx proxy_cache"
)
declare -A DOWN=() # cache -> why it has no results
declare -A PID=()  # process name -> pid this script started

WORK=$(mktemp -d -t strata-conformance.XXXXXX)
# varnishd's worker and nginx's workers run unprivileged: they must traverse it.
chmod 755 "$WORK"

cleanup() {
    local p
    for p in "${!PID[@]}"; do stop_pid "${PID[$p]}"; done
    if [ "${KEEP_WORK:-0}" = 1 ]; then
        log "work directory kept: $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ensure_tools varnishd=varnish nginx=nginx node=nodejs npm=npm curl=curl
export PATH=$PATH:/usr/sbin:/sbin

# ---------------------------------------------------------------------------
# 1. The suite, the binary

log "installing http-cache-tests@$SUITE_VERSION from the npm registry"
mkdir -p "$WORK/npm"
(cd "$WORK/npm" && npm init -y >/dev/null &&
    npm install --no-audit --no-fund --loglevel=error "http-cache-tests@$SUITE_VERSION") >"$WORK/npm.log" 2>&1 || {
    tail -n 20 "$WORK/npm.log" >&2
    die "npm install http-cache-tests@$SUITE_VERSION failed"
}
SUITE=$WORK/npm/node_modules/http-cache-tests

if [ -z "${STRATA_BIN:-}" ]; then
    log "building strata-proxy (debug profile)"
    (cd "$ROOT" && "${CARGO:-cargo}" build -p strata-proxy) >"$WORK/build.log" 2>&1 || {
        tail -n 30 "$WORK/build.log" >&2
        die "cargo build -p strata-proxy failed"
    }
    STRATA_BIN=$TARGET_DIR/debug/strata-proxy
fi
[ -x "$STRATA_BIN" ] || die "$STRATA_BIN not found"

# ---------------------------------------------------------------------------
# 2. The origin and the caches

# start NAME PORT… -- COMMAND…: runs COMMAND in the background (log in WORK/NAME.log) after
# checking that none of the ports is taken.
start() {
    local name=$1 p
    shift
    while [ "$1" != -- ]; do
        if port_busy "127.0.0.1:$1"; then
            DOWN[$name]="port $1 already in use by another process"
            return 1
        fi
        shift
    done
    shift
    "$@" >"$WORK/$name.log" 2>&1 &
    PID[$name]=$!
}

# wait_up NAME URL: waits (20 s) for something to answer at URL.
wait_up() {
    local name=$1 url=$2 code _
    for _ in $(seq 1 100); do
        if ! kill -0 "${PID[$name]}" 2>/dev/null; then
            DOWN[$name]="exited during start-up: $(tail -n 1 "$WORK/$name.log" | cut -c1-200)"
            unset "PID[$name]"
            return 1
        fi
        code=$(curl -s -o /dev/null --max-time 2 -w '%{http_code}' "$url") || code=000
        [ "$code" != 000 ] && return 0
        sleep 0.2
    done
    DOWN[$name]="did not answer $url within 20 s"
    return 1
}

log "starting the suite's origin on 127.0.0.1:$ORIGIN_PORT"
start origin "$ORIGIN_PORT" -- env -C "$SUITE" npm_config_protocol=http npm_config_port="$ORIGIN_PORT" \
    npm_config_pidfile="$WORK/origin.pid" node server/server.mjs
wait_up origin "http://127.0.0.1:$ORIGIN_PORT/" || die "the suite's origin: ${DOWN[origin]}"

(umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$WORK/cluster.secret")

# strata_config NAME CACHE_LINES: a configuration in front of the suite's origin.
strata_config() {
    cat <<EOF
[server]
listen = "127.0.0.1:${PORT[$1]}"
admin_listen = "127.0.0.1:${ADMIN[$1]}"
[origin]
url = "http://127.0.0.1:$ORIGIN_PORT"
[cache]
$2
$STRATA_EXTRA
[cluster]
node_id = "$1"
secret_file = "$WORK/cluster.secret"
EOF
}

start_strata() {
    local name=$1 lines=$2
    strata_config "$name" "$lines" >"$WORK/$name.toml"
    "$STRATA_BIN" --config "$WORK/$name.toml" --check-config >"$WORK/$name.check" 2>&1 || {
        DOWN[$name]="configuration refused: $(tr '\n' ' ' <"$WORK/$name.check" | cut -c1-300)"
        return 1
    }
    start "$name" "${PORT[$name]}" "${ADMIN[$name]}" -- "$STRATA_BIN" --config "$WORK/$name.toml" &&
        wait_up "$name" "http://127.0.0.1:${ADMIN[$name]}/healthz"
}

start_varnish() {
    # As the suite's own set-up runs it: the built-in VCL, no default TTL, no grace.
    mkdir -p "$WORK/varnish"
    start varnish "${PORT[varnish]}" -- varnishd -F -n "$WORK/varnish" -a "127.0.0.1:${PORT[varnish]}" -T none \
        -b "127.0.0.1:$ORIGIN_PORT" -p default_ttl=0 -p default_grace=0 -p default_keep=3600 -s malloc,64M &&
        wait_up varnish "http://127.0.0.1:${PORT[varnish]}/"
}

start_nginx() {
    mkdir -p "$WORK/nginx"
    sed -e "s/@LISTEN@/127.0.0.1:${PORT[nginx]}/" -e "s/@ORIGIN@/127.0.0.1:$ORIGIN_PORT/" \
        "$BENCH/config/nginx-conformance.conf" >"$WORK/nginx/nginx.conf"
    start nginx "${PORT[nginx]}" -- nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx/" -e "$WORK/nginx/error.log" &&
        wait_up nginx "http://127.0.0.1:${PORT[nginx]}/"
}

for c in "${CACHES[@]}"; do
    log "starting ${NAME[$c]} on 127.0.0.1:${PORT[$c]}"
    case $c in
        strata-http) start_strata "$c" "$STRATA_HTTP_CACHE" ;;
        strata-wp) start_strata "$c" "" ;;
        varnish) start_varnish ;;
        nginx) start_nginx ;;
    esac || log "${NAME[$c]}: ${DOWN[$c]}"
done

# ---------------------------------------------------------------------------
# 3. The suite through each cache (one at a time: the suite pauses between steps and
#    compares times)

mkdir -p "$WORK/results"
for c in "${CACHES[@]}"; do
    [ -n "${DOWN[$c]:-}" ] && continue
    log "running the suite through ${NAME[$c]}"
    if ! (cd "$SUITE" && env npm_config_base="http://127.0.0.1:${PORT[$c]}" npm_package_config_id="" \
        timeout 900 node --no-warnings cli.mjs) >"$WORK/results/$c.json" 2>"$WORK/results/$c.err"; then
        DOWN[$c]="the suite's client failed: $(tail -n 1 "$WORK/results/$c.err" | cut -c1-200)"
        continue
    fi
    node -e 'JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"))' "$WORK/results/$c.json" 2>/dev/null ||
        DOWN[$c]="the suite's client printed no results: $(head -c 200 "$WORK/results/$c.json")"
done

# ---------------------------------------------------------------------------
# 4. The report

version_of() {
    case $1 in
        varnish) varnishd -V 2>&1 | head -n 1 | sed -E 's/^varnishd \(varnish-([^ ]+) .*/varnishd \1/' ;;
        nginx) nginx -v 2>&1 | sed 's/^nginx version: //' ;;
    esac
}

args=()
for c in "${CACHES[@]}"; do
    [ -z "${DOWN[$c]:-}" ] && args+=("${NAME[$c]}=$WORK/results/$c.json")
done
# The results the package ships (the suite authors' runs, dated by their versions).
declare -A SHIPPED=([trafficserver]="ATS 8.0.8 (shipped)" [varnish]="Varnish 6.4.0 (shipped)"
    [nginx]="nginx 1.18.0 (shipped)" [squid]="Squid 4.13 (shipped)" [apache]="httpd 2.4.46 (shipped)")
for f in trafficserver varnish nginx squid apache; do
    [ -f "$SUITE/results/$f.json" ] && args+=("${SHIPPED[$f]}=$SUITE/results/$f.json")
done
[ -z "${DOWN[strata-http]:-}" ] && args+=(--list "${NAME[strata-http]}")
[ -z "${DOWN[strata-wp]:-}" ] && args+=(--list "${NAME[strata-wp]}")

commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
{
    echo "# HTTP cache conformance"
    echo
    echo "The public HTTP cache test suite (npm \`http-cache-tests@$SUITE_VERSION\`, https://cache-tests.fyi)"
    echo "run by \`benches/conformance.sh\` through each cache in front of the suite's own origin, on"
    echo "loopback, on $(date -u '+%Y-%m-%d %H:%M UTC') (strata-proxy at $commit)."
    echo
    echo "- strata-proxy, preset \"http\": \`[cache]\` $(echo "$STRATA_HTTP_CACHE" | tr '\n' ' ' | sed 's/ *$//'); $(echo "$STRATA_EXTRA" | tr '\n' ' ' | sed 's/ *$//')"
    echo "- strata-proxy, preset \"wordpress\": the defaults; $(echo "$STRATA_EXTRA" | tr '\n' ' ' | sed 's/ *$//')"
    for c in varnish nginx; do echo "- ${NAME[$c]}: $(version_of "$c"), configured as the suite's own set-up runs it"; done
    echo "- \"(shipped)\": the results the package carries, from the suite authors' runs of those versions"
    for c in "${CACHES[@]}"; do
        [ -n "${DOWN[$c]:-}" ] && echo "- ${NAME[$c]}: no results: ${DOWN[$c]}"
    done
    echo
    echo "Passed counts required and optimal tests; failed, required tests; optional failed, the"
    echo "optimal ones (a stored response not reused when it could have been). Checks only record a"
    echo "behaviour. A test whose prerequisite failed counts neither way, as in the suite's report."
    echo
    node "$BENCH/conformance-summary.mjs" "$SUITE" "${args[@]}"
} >"$WORK/report.md"
mkdir -p "$(dirname "$RESULTS")"
cp "$WORK/report.md" "$RESULTS"
log "report written to $RESULTS"
sed -n '1,/^By category/p' "$RESULTS" >&2
