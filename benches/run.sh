#!/usr/bin/env bash
# Strata benchmark: strata-proxy against Varnish, nginx proxy_cache and a bare
# in-memory server, all in front of the same WordPress origin, all on loopback.
#
#   benches/run.sh                       # defaults: wrk -t2 -c64 -d10s per cell
#   DURATION=30s CONNECTIONS=128 benches/run.sh
#
# Environment:
#   DURATION     wrk duration per measurement (default 10s; "30", "30s", "1m")
#   CONNECTIONS  wrk connections (default 64)
#   THREADS      wrk threads (default 2)
#   RESULTS      where the Markdown report goes (default benches/results/latest.md)
#   SKIP_BUILD=1 do not run cargo build (use the binaries already in target/release)
#   KEEP_WORK=1  keep the temporary work directory (logs, wrk output, cache dirs)
#
# Ports (all 127.0.0.1): origin 8081, nginx proxy_cache 8082, bare server 8083,
# strata-proxy 8084 (admin 9084), Varnish 6081. See benches/README.md.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"
BENCH=$ROOT/benches
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
RESULTS=${RESULTS:-$BENCH/results/latest.md}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
CARGO=${CARGO:-cargo}

HOST_HEADER=127.0.0.1:8080
ORIGIN=http://127.0.0.1:8081
STRATA_ADMIN=http://127.0.0.1:9084

SERVERS=(strata varnish nginx bare)
CACHES=(strata varnish nginx)
declare -A PORT=([strata]=8084 [varnish]=6081 [nginx]=8082 [bare]=8083)
declare -A NAME=([strata]="strata-proxy" [varnish]="Varnish" [nginx]="nginx proxy_cache" [bare]="bare server")
declare -A DOWN=()   # server -> why it has no figures (absent = up)
declare -A PID=()    # server -> pid of the process this script started
WARNINGS=()
CHECKS=()

warn() {
    printf 'WARNING: %s\n' "$*" >&2
    WARNINGS+=("$*")
}

# ---------------------------------------------------------------------------
# Work directory and clean-up

WORK=$(mktemp -d /tmp/strata-bench.XXXXXX)
# varnishd's worker and nginx's workers run unprivileged: they must traverse it.
chmod 755 "$WORK"

warm_pids=()

cleanup() {
    local s pid _
    for pid in "${warm_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for s in "${!PID[@]}"; do
        pid=${PID[$s]}
        kill -TERM "$pid" 2>/dev/null || true
    done
    for s in "${!PID[@]}"; do
        pid=${PID[$s]}
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [ "${KEEP_WORK:-0}" = 1 ]; then
        log "work directory kept: $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

DURATION_S=$(duration_seconds "$DURATION")
[[ $DURATION_S =~ ^[0-9]+$ ]] || die "cannot understand DURATION=$DURATION"
[[ $CONNECTIONS =~ ^[0-9]+$ && $THREADS =~ ^[0-9]+$ ]] || die "CONNECTIONS and THREADS must be numbers"
[ "$CONNECTIONS" -ge "$THREADS" ] || die "CONNECTIONS ($CONNECTIONS) must be at least THREADS ($THREADS)"

# ---------------------------------------------------------------------------
# 1. Tools, build, origin

ensure_tools varnishd=varnish nginx=nginx wrk=wrk curl=curl gzip=gzip cmp=diffutils
export PATH=$PATH:/usr/sbin:/sbin

if [ "${SKIP_BUILD:-0}" != 1 ]; then
    log "building release binaries"
    if ! (cd "$ROOT" && "$CARGO" build --release -p strata-proxy -p strata-bench) >"$WORK/build.log" 2>&1; then
        tail -n 30 "$WORK/build.log" >&2
        log "strata-proxy failed to build; its columns will read n/a"
        DOWN[strata]="build failed (cargo errors in the output of run.sh)"
        (cd "$ROOT" && "$CARGO" build --release -p strata-bench) >"$WORK/build-bench.log" 2>&1 ||
            {
                tail -n 30 "$WORK/build-bench.log" >&2
                die "the benchmark crate (bare-server) failed to build"
            }
    fi
fi
STRATA_BIN=$TARGET_DIR/release/strata-proxy
BARE_BIN=$TARGET_DIR/release/bare-server
[ -x "$BARE_BIN" ] || die "$BARE_BIN not found (build with: cargo build --release -p strata-bench)"
if [ -z "${DOWN[strata]:-}" ] && [ ! -x "$STRATA_BIN" ]; then
    DOWN[strata]="$STRATA_BIN not found"
fi

[ -f "$ROOT/scripts/wordpress.sh" ] ||
    die "scripts/wordpress.sh not found: it provisions the WordPress origin on 127.0.0.1:8081"
log "bringing up the WordPress origin (scripts/wordpress.sh)"
bash "$ROOT/scripts/wordpress.sh" >"$WORK/wordpress.log" 2>&1 || {
    tail -n 30 "$WORK/wordpress.log" >&2
    die "scripts/wordpress.sh failed"
}

# ---------------------------------------------------------------------------
# Pages: the hot post and the mix

bash "$ROOT/scripts/wordpress-urls.sh" 2>"$WORK/urls.err" | grep '^/' >"$WORK/paths.txt" || true
PATH_COUNT=$(wc -l <"$WORK/paths.txt")
[ "$PATH_COUNT" -gt 0 ] || {
    cat "$WORK/urls.err" >&2
    die "scripts/wordpress-urls.sh printed no paths"
}
HOT=$(head -n 1 "$WORK/paths.txt")
log "hot page: $HOT; mix: $PATH_COUNT post paths"

# curl against a server with the Host every cache must see.
hcurl() { curl -sS --max-time 30 -H "Host: $HOST_HEADER" "$@"; }

code=$(hcurl -o "$WORK/hot.html" -w '%{http_code}' "$ORIGIN$HOT") || code=000
[ "$code" = 200 ] || die "origin answered $code for $HOT"
gzip -6 -c "$WORK/hot.html" >"$WORK/hot.html.gz"
HOT_SIZE=$(wc -c <"$WORK/hot.html")
HOT_GZ_SIZE=$(wc -c <"$WORK/hot.html.gz")
# Is the page the same on every request? If not, body checks fall back to sizes.
hcurl -o "$WORK/hot2.html" "$ORIGIN$HOT" || true
ORIGIN_STABLE=1
cmp -s "$WORK/hot.html" "$WORK/hot2.html" || ORIGIN_STABLE=0
[ "$ORIGIN_STABLE" = 1 ] || log "the origin's page differs between two requests: comparing sizes only"

# ---------------------------------------------------------------------------
# 2. Start the servers

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_up NAME URL [EXPECTED_CODE]: waits (20 s) for the server to answer.
wait_up() {
    local s=$1 url=$2 want=${3:-} code _
    for _ in $(seq 1 100); do
        if ! kill -0 "${PID[$s]}" 2>/dev/null; then
            local rc=0 last
            wait "${PID[$s]}" 2>/dev/null || rc=$?
            unset "PID[$s]"
            last=$(grep -v '^[[:space:]]*$' "$WORK/$s.log" | tail -n 1 | cut -c1-200 || true)
            DOWN[$s]="exited during start-up with status $rc${last:+: $last}"
            tail -n 20 "$WORK/$s.log" >&2 || true
            return 1
        fi
        code=$(curl -s -o /dev/null --max-time 2 -H "Host: $HOST_HEADER" -w '%{http_code}' "$url") || code=000
        if [ "$code" != 000 ] && { [ -z "$want" ] || [ "$code" = "$want" ]; }; then
            return 0
        fi
        sleep 0.2
    done
    DOWN[$s]="did not answer $url within 20 s (last status $code)"
    tail -n 20 "$WORK/$s.log" >&2 || true
    return 1
}

# start NAME COMMAND...: runs the server in the background, logging to WORK/NAME.log.
start() {
    local s=$1
    shift
    local p
    local ports=("${PORT[$s]}")
    [ "$s" = strata ] && ports+=(9084)
    for p in "${ports[@]}"; do
        if port_busy "$p"; then
            DOWN[$s]="port $p already in use by another process"
            return 1
        fi
    done
    "$@" >"$WORK/$s.log" 2>&1 &
    PID[$s]=$!
}

start_strata() {
    cp "$BENCH/config/strata.toml" "$WORK/strata.toml"
    (umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$WORK/cluster.secret")
    start strata "$STRATA_BIN" --config "$WORK/strata.toml" &&
        wait_up strata "$STRATA_ADMIN/healthz" 200
}

start_varnish() {
    mkdir -p "$WORK/varnish"
    start varnish varnishd -F -n "$WORK/varnish" -a "127.0.0.1:${PORT[varnish]}" -T none \
        -f "$BENCH/config/wordpress.vcl" -s malloc,512m &&
        wait_up varnish "http://127.0.0.1:${PORT[varnish]}/"
}

start_nginx() {
    mkdir -p "$WORK/nginx"
    start nginx nginx -c "$BENCH/config/nginx-cache.conf" -p "$WORK/nginx/" -e "$WORK/nginx/error.log" &&
        wait_up nginx "http://127.0.0.1:${PORT[nginx]}/"
}

start_bare() {
    start bare "$BARE_BIN" --listen "127.0.0.1:${PORT[bare]}" \
        --identity "$WORK/hot.html" --gzip "$WORK/hot.html.gz" &&
        wait_up bare "http://127.0.0.1:${PORT[bare]}/" 200
}

for s in "${SERVERS[@]}"; do
    if [ -n "${DOWN[$s]:-}" ]; then
        warn "${NAME[$s]}: n/a: ${DOWN[$s]}"
        continue
    fi
    log "starting ${NAME[$s]} on 127.0.0.1:${PORT[$s]}"
    if ! "start_$s"; then
        warn "${NAME[$s]}: n/a: ${DOWN[$s]}"
    fi
done

up_servers() {
    local s
    for s in "$@"; do [ -z "${DOWN[$s]:-}" ] && echo "$s"; done
    return 0
}
mapfile -t UP_CACHES < <(up_servers "${CACHES[@]}")
mapfile -t UP_SERVERS < <(up_servers "${SERVERS[@]}")
[ "${#UP_SERVERS[@]}" -gt 0 ] || die "no server started"

# ---------------------------------------------------------------------------
# 4. Warm the caches: every mix URL, twice, with and without gzip

# warm NAME PROFILE: one curl process, one keep-alive connection, every path.
warm() {
    local s=$1 profile=$2 cfg=$WORK/warm-$1-$2.curl
    local ae=()
    [ "$profile" = gzip ] && ae=(-H "Accept-Encoding: gzip")
    : >"$cfg"
    local path
    while IFS= read -r path; do
        printf 'url = "http://127.0.0.1:%s%s"\noutput = "/dev/null"\n' "${PORT[$s]}" "$path" >>"$cfg"
    done <"$WORK/paths.txt"
    hcurl "${ae[@]}" -K "$cfg" -w '%{http_code} %header{x-cache}\n' 2>>"$WORK/warm-$s.err" || true
}

warm_one() {
    local s=$1 profile pass
    for pass in 1 2; do
        for profile in identity gzip; do
            warm "$s" "$profile" >"$WORK/warm-$s-$profile-$pass.out"
        done
    done
}

if [ "${#UP_CACHES[@]}" -gt 0 ]; then
    log "warming ${UP_CACHES[*]} ($PATH_COUNT paths x 2 passes x 2 profiles each)"
    warm_pids=()
    for s in "${UP_CACHES[@]}"; do
        warm_one "$s" &
        warm_pids+=($!)
    done
    for p in "${warm_pids[@]}"; do wait "$p" || true; done
    warm_pids=()
    for s in "${UP_CACHES[@]}"; do
        for profile in identity gzip; do
            out=$WORK/warm-$s-$profile-2.out
            total=$(wc -l <"$out")
            ok=$(awk '$1 == 200' "$out" | wc -l)
            hits=$(awk 'toupper($2) == "HIT"' "$out" | wc -l)
            log "warm ${NAME[$s]} ($profile), second pass: $ok/$total answered 200, $hits HIT"
            [ "$ok" -eq "$PATH_COUNT" ] || warn "${NAME[$s]} ($profile): only $ok of $PATH_COUNT mix paths answered 200 while warming"
            [ "$hits" -eq "$PATH_COUNT" ] || warn "${NAME[$s]} ($profile): only $hits of $PATH_COUNT mix paths were HITs on the second warming pass"
        done
    done
fi

# ---------------------------------------------------------------------------
# Correctness of the hot page through every server

header_of() { # header_of FILE NAME -> value of the last such header (CR stripped)
    awk -v n="${2,,}" -F': *' \
        'tolower($1) == n { v = $2 } END { gsub(/\r/, "", v); print v }' "$1"
}

check_server() {
    local s=$1 url="http://127.0.0.1:${PORT[$1]}$HOT" profile notes=() ok=1
    for profile in identity gzip; do
        local ae=() hdr=$WORK/check-$s-$profile.hdr body=$WORK/check-$s-$profile.body
        [ "$profile" = gzip ] && ae=(-H "Accept-Encoding: gzip")
        hcurl "${ae[@]}" -o /dev/null "$url" || true
        local code
        code=$(hcurl "${ae[@]}" -D "$hdr" -o "$body" -w '%{http_code}' "$url") || code=000
        if [ "$code" != 200 ]; then
            warn "${NAME[$s]} ($profile): hot page answered $code"
            notes+=("$profile: status $code")
            ok=0
            continue
        fi
        local ce xcache age plain=$body
        ce=$(header_of "$hdr" Content-Encoding)
        xcache=$(header_of "$hdr" X-Cache)
        age=$(header_of "$hdr" Age)
        if [ "$profile" = gzip ]; then
            if [ "$ce" = gzip ]; then
                plain=$body.plain
                gzip -dc <"$body" >"$plain" 2>/dev/null || {
                    warn "${NAME[$s]} (gzip): body is not valid gzip"
                    ok=0
                }
            else
                warn "${NAME[$s]} (gzip): answered without Content-Encoding: gzip (${ce:-identity})"
                ok=0
            fi
        elif [ -n "$ce" ]; then
            warn "${NAME[$s]} (identity): answered with Content-Encoding: $ce to a client that did not ask for it"
            ok=0
        fi
        local size match
        size=$(wc -c <"$plain")
        if cmp -s "$plain" "$WORK/hot.html"; then
            match="body identical to origin"
        elif [ "$ORIGIN_STABLE" = 0 ] && [ "$size" -eq "$HOT_SIZE" ]; then
            match="same size as origin ($size B; the origin's page varies per request)"
        else
            match="body DIFFERS from origin ($size B vs $HOT_SIZE B)"
            warn "${NAME[$s]} ($profile): hot page $match"
            ok=0
        fi
        local note="$profile: $match"
        [ "$profile" = gzip ] && [ "$ce" = gzip ] && note+=", $(wc -c <"$body") B on the wire"
        if [ "$s" != bare ]; then
            note+=", X-Cache: ${xcache:-none}"
            [ -n "$age" ] && note+=", Age: $age"
            case ${xcache^^} in
                HIT*) ;;
                *)
                    if [ "$s" = varnish ] && [ "${age:-0}" -gt 0 ]; then :; else
                        warn "${NAME[$s]} ($profile): hot page was not a cache HIT (X-Cache: ${xcache:-none}, Age: ${age:-none})"
                        ok=0
                    fi
                    ;;
            esac
        fi
        notes+=("$note")
    done
    local joined
    joined=$(printf '%s; ' "${notes[@]}")
    CHECKS+=("${NAME[$s]}: $([ "$ok" = 1 ] && echo OK || echo PROBLEM) — ${joined%; }")
}

log "checking the hot page through every server"
for s in "${UP_SERVERS[@]}"; do
    check_server "$s"
done
printf '    %s\n' "${CHECKS[@]}" >&2

# ---------------------------------------------------------------------------
# 5. Measure

declare -A RPS=() P50=() P99=() NOTE=() DETAIL=()
LOADS=(hot mix)
PROFILES=(identity gzip)

measure() { # measure SERVER LOAD PROFILE
    local s=$1 load=$2 profile=$3 key="$2/$3/$1" out="$WORK/wrk-$2-$3-$1.txt"
    local args=(-t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -H "Host: $HOST_HEADER")
    [ "$profile" = gzip ] && args+=(-H "Accept-Encoding: gzip")
    if [ "$load" = hot ]; then
        args+=(-s "$BENCH/wrk/hot.lua" "http://127.0.0.1:${PORT[$s]}$HOT")
    else
        args+=(-s "$BENCH/wrk/mix.lua" "http://127.0.0.1:${PORT[$s]}/" -- "$WORK/paths.txt" "$THREADS")
    fi
    log "wrk: ${NAME[$s]}, $load, $profile"
    timeout --kill-after=5 $((DURATION_S + 30)) wrk "${args[@]}" >"$out" 2>&1 || true
    local line
    line=$(grep '^WRKRESULT ' "$out" | tail -n 1 || true)
    if [ -z "$line" ]; then
        warn "wrk produced no result for ${NAME[$s]} ($load, $profile): $(tail -n 3 "$out" | tr '\n' ' ')"
        return 0
    fi
    local -A r=()
    local kv
    for kv in ${line#WRKRESULT }; do r[${kv%%=*}]=${kv#*=}; done
    RPS[$key]=${r[rps]}
    P50[$key]=${r[p50_us]}
    P99[$key]=${r[p99_us]}
    local errors=$((r[err_connect] + r[err_read] + r[err_write] + r[err_status] + r[err_timeout]))
    if [ "$errors" -gt 0 ]; then
        NOTE[$key]=" (!)"
        warn "${NAME[$s]} ($load, $profile): $errors errors (connect ${r[err_connect]}, read ${r[err_read]}, write ${r[err_write]}, non-2xx/3xx ${r[err_status]}, timeout ${r[err_timeout]})"
    fi
    local per_resp=0
    [ "${r[requests]}" -gt 0 ] && per_resp=$((r[bytes] / r[requests]))
    DETAIL[$key]=$(awk -v rps="${r[rps]}" -v p50="${r[p50_us]}" -v p90="${r[p90_us]}" -v p99="${r[p99_us]}" \
        -v max="${r[max_us]}" -v req="${r[requests]}" -v b="$per_resp" -v e="$errors" \
        'BEGIN { printf "%.0f | %.2f | %.2f | %.2f | %.2f | %d | %d | %d", rps, p50/1000, p90/1000, p99/1000, max/1000, req, b, e }')
    sleep 1
}

for load in "${LOADS[@]}"; do
    for profile in "${PROFILES[@]}"; do
        for s in "${UP_SERVERS[@]}"; do
            measure "$s" "$load" "$profile"
        done
    done
done

# ---------------------------------------------------------------------------
# 6. Report

version_of() {
    case $1 in
        varnish) varnishd -V 2>&1 | head -n 1 | sed -E 's/^varnishd \(varnish-([^ ]+) revision ([0-9a-f]{8}).*/\1 (\2)/' ;;
        nginx) nginx -v 2>&1 | sed 's/^nginx version: nginx\///' ;;
        wrk) wrk -v 2>&1 | head -n 1 | awk '{print $2}' ;;
        strata)
            local rev
            rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || true)
            echo "strata-proxy $(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -n 1)${rev:+ ($rev)}"
            ;;
    esac
}

cell_rps() { # cell_rps KEY
    if [ -n "${RPS[$1]:-}" ]; then printf '%.0f%s' "${RPS[$1]}" "${NOTE[$1]:-}"; else printf 'n/a'; fi
}
cell_lat() {
    if [ -n "${P50[$1]:-}" ]; then
        awk -v a="${P50[$1]}" -v b="${P99[$1]}" 'BEGIN { printf "%.2f / %.2f", a/1000, b/1000 }'
    else printf 'n/a'; fi
}
ratio() { # ratio NUM DEN
    if [ -n "$1" ] && [ -n "$2" ]; then
        awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a/b; else printf "n/a" }'
    else printf 'n/a'; fi
}
max_of() {
    if [ -n "$1" ] && [ -n "$2" ]; then awk -v a="$1" -v b="$2" 'BEGIN { print (a > b ? a : b) }'
    else echo "${1:-$2}"; fi
}

mkdir -p "$(dirname "$RESULTS")"
{
    echo "# Strata benchmark: latest results"
    echo
    echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "- Machine: $(nproc) CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)), $(uname -sr)"
    echo "- Versions: $(version_of strata); varnishd $(version_of varnish); nginx $(version_of nginx); wrk $(version_of wrk)"
    echo "- Load: \`wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency\`, \`Host: $HOST_HEADER\`; wrk shares the machine with the server under test"
    echo "- hot: one URL, \`$HOT\` ($HOT_SIZE B identity, $HOT_GZ_SIZE B at gzip -6); mix: $PATH_COUNT post paths, in order"
    echo "- identity: no Accept-Encoding; gzip: \`Accept-Encoding: gzip\`"
    echo
    echo "## Requests per second and latency (p50 / p99, ms)"
    echo
    echo "| Load | Profile | strata-proxy req/s | strata-proxy p50 / p99 | Varnish req/s | Varnish p50 / p99 | nginx req/s | nginx p50 / p99 | bare req/s | bare p50 / p99 | strata/Varnish | strata/nginx | strata/bare | strata/best cache |"
    echo "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
    for load in "${LOADS[@]}"; do
        for profile in "${PROFILES[@]}"; do
            k=$load/$profile
            st=${RPS[$k/strata]:-}
            va=${RPS[$k/varnish]:-}
            ng=${RPS[$k/nginx]:-}
            ba=${RPS[$k/bare]:-}
            bare_mark=""
            [ "$load" = mix ] && bare_mark=" *"
            printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s%s | %s | %s | %s | %s | %s |\n' \
                "$load" "$profile" \
                "$(cell_rps "$k/strata")" "$(cell_lat "$k/strata")" \
                "$(cell_rps "$k/varnish")" "$(cell_lat "$k/varnish")" \
                "$(cell_rps "$k/nginx")" "$(cell_lat "$k/nginx")" \
                "$(cell_rps "$k/bare")" "$bare_mark" "$(cell_lat "$k/bare")" \
                "$(ratio "$st" "$va")" "$(ratio "$st" "$ng")" "$(ratio "$st" "$ba")" \
                "$(ratio "$st" "$(max_of "$va" "$ng")")"
        done
    done
    echo
    echo "\\* In the mix rows the bare server answers the hot page's bytes for every path: a ceiling, not a cache."
    echo "\"(!)\" marks a run in which wrk counted socket errors or non-2xx/3xx responses. Ratios compare req/s."
    down_lines=()
    for s in "${SERVERS[@]}"; do
        if [ -n "${DOWN[$s]:-}" ]; then down_lines+=("- ${NAME[$s]}: n/a — ${DOWN[$s]}"); fi
    done
    if [ "${#down_lines[@]}" -gt 0 ]; then
        echo
        printf '%s\n' "${down_lines[@]}"
    fi
    echo
    echo "## Hot page checks"
    echo
    printf -- '- %s\n' "${CHECKS[@]}"
    echo
    echo "## Every run"
    echo
    echo "| Server | Load | Profile | req/s | p50 ms | p90 ms | p99 ms | max ms | requests | bytes/response | errors |"
    echo "|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|"
    for load in "${LOADS[@]}"; do
        for profile in "${PROFILES[@]}"; do
            for s in "${SERVERS[@]}"; do
                k=$load/$profile/$s
                if [ -n "${DETAIL[$k]:-}" ]; then echo "| ${NAME[$s]} | $load | $profile | ${DETAIL[$k]} |"; fi
            done
        done
    done
    if [ "${#WARNINGS[@]}" -gt 0 ]; then
        echo
        echo "## Warnings"
        echo
        printf -- '- %s\n' "${WARNINGS[@]}"
    fi
} >"$WORK/report.md"

cp "$WORK/report.md" "$RESULTS"
echo
cat "$WORK/report.md"
echo
log "written to ${RESULTS#"$ROOT"/}"
