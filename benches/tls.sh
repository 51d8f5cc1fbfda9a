#!/usr/bin/env bash
# Strata TLS benchmark: cache hits over HTTPS, HTTP/1.1 and HTTP/2, from
# strata-proxy, nginx proxy_cache with TLS, and Varnish behind a TLS terminator
# (hitch, or nginx when hitch cannot be installed), all with one certificate,
# all in front of the same WordPress origin, all on loopback.
#
#   benches/tls.sh                        # defaults: 64 connections, 8 s per cell
#   DURATION=20s CONNECTIONS=128 benches/tls.sh
#
# Environment:
#   DURATION     duration of each measurement (default 8s; "8", "8s", "1m")
#   CONNECTIONS  connections, kept alive for the whole run (default 64)
#   THREADS      client threads (default 2)
#   TERMINATOR   TLS in front of Varnish: hitch (default when installable) or nginx
#   RESULTS      where the Markdown report goes (default benches/results/tls.md)
#   SKIP_BUILD=1 do not run cargo build (use target/release/strata-proxy as it is)
#   KEEP_WORK=1  keep the temporary work directory (certificate, logs, tool output)
#
# Ports (all 127.0.0.1): origin 8081; strata-proxy HTTPS 8443 (plain 8184,
# admin 9184); nginx proxy_cache HTTPS 8444; TLS terminator 8445 in front of
# Varnish on 6182. See benches/README.md, "TLS".
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"
BENCH=$ROOT/benches
DURATION=${DURATION:-8s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
RESULTS=${RESULTS:-$BENCH/results/tls.md}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
CARGO=${CARGO:-cargo}
TERMINATOR=${TERMINATOR:-}

HOST_HEADER=127.0.0.1:8080
ORIGIN=http://127.0.0.1:8081
STRATA_ADMIN=http://127.0.0.1:9184
VARNISH_PORT=6182

SERVERS=(strata nginx varnish)
declare -A PORT=([strata]=8443 [nginx]=8444 [varnish]=8445)
declare -A NAME=([strata]="strata-proxy" [nginx]="nginx proxy_cache" [varnish]="Varnish")
declare -A DOWN=() # server -> why it has no figures (absent = up)
declare -A PID=()  # process label -> pid of a process this script started
WARNINGS=()
CHECKS=()
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

warn() {
    printf 'WARNING: %s\n' "$*" >&2
    WARNINGS+=("$*")
}

# ---------------------------------------------------------------------------
# Work directory and clean-up

WORK=$(mktemp -d /tmp/strata-tls.XXXXXX)
# varnishd's worker and nginx's workers run unprivileged: they must traverse it.
chmod 755 "$WORK"

cleanup() {
    local p pid _
    for p in "${!PID[@]}"; do
        kill -TERM "${PID[$p]}" 2>/dev/null || true
    done
    for p in "${!PID[@]}"; do
        pid=${PID[$p]}
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
case $TERMINATOR in "" | hitch | nginx) ;; *) die "TERMINATOR must be hitch or nginx" ;; esac

# ---------------------------------------------------------------------------
# 1. Tools, build, origin, certificate

export PATH=$PATH:/usr/sbin:/sbin

# apt_install PACKAGE...: installs without letting their services start (we run
# our own instances on our own ports). Returns non-zero when apt-get fails.
apt_install() {
    [ "$(id -u)" -eq 0 ] || return 1
    log "installing $*"
    local own_policy=0 rc=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        own_policy=1
    fi
    { DEBIAN_FRONTEND=noninteractive timeout 300 apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq --no-install-recommends "$@"; } \
        >>"$WORK/apt.log" 2>&1 || rc=$?
    [ "$own_policy" -eq 1 ] && rm -f /usr/sbin/policy-rc.d
    return "$rc"
}

ensure_tools() {
    local -A pkg_of=([varnishd]=varnish [nginx]=nginx [wrk]=wrk [h2load]=nghttp2-client
        [curl]=curl [gzip]=gzip [cmp]=diffutils [openssl]=openssl)
    local missing=() cmd
    for cmd in "${!pkg_of[@]}"; do
        command -v "$cmd" >/dev/null 2>&1 || missing+=("${pkg_of[$cmd]}")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        apt_install "${missing[@]}" || {
            tail -n 20 "$WORK/apt.log" >&2 || true
            die "missing packages (${missing[*]}) and apt-get could not install them"
        }
    fi
    # The terminator in front of Varnish: hitch if it is there or installable.
    if [ -z "$TERMINATOR" ]; then
        if command -v hitch >/dev/null 2>&1 || apt_install hitch; then
            TERMINATOR=hitch
        else
            TERMINATOR=nginx
            log "hitch is not available: nginx terminates TLS in front of Varnish"
        fi
    fi
    if [ "$TERMINATOR" = hitch ] && ! command -v hitch >/dev/null 2>&1; then
        die "TERMINATOR=hitch but hitch is not installed"
    fi
}
ensure_tools
NAME[varnish]="Varnish behind $TERMINATOR"

if [ "${SKIP_BUILD:-0}" != 1 ]; then
    log "building strata-proxy (release)"
    if ! (cd "$ROOT" && "$CARGO" build --release -p strata-proxy) >"$WORK/build.log" 2>&1; then
        tail -n 30 "$WORK/build.log" >&2
        DOWN[strata]="build failed (cargo errors in the output of tls.sh)"
    fi
fi
STRATA_BIN=$TARGET_DIR/release/strata-proxy
if [ -z "${DOWN[strata]:-}" ] && [ ! -x "$STRATA_BIN" ]; then
    DOWN[strata]="$STRATA_BIN not found"
fi

[ -f "$ROOT/scripts/wordpress.sh" ] ||
    die "scripts/wordpress.sh not found: it provisions the WordPress origin on 127.0.0.1:8081"
log "bringing up the WordPress origin (scripts/wordpress.sh)"
timeout 600 bash "$ROOT/scripts/wordpress.sh" >"$WORK/wordpress.log" 2>&1 || {
    tail -n 30 "$WORK/wordpress.log" >&2
    die "scripts/wordpress.sh failed"
}

timeout 60 bash "$ROOT/scripts/wordpress-urls.sh" 2>"$WORK/urls.err" | grep '^/' >"$WORK/paths.txt" || true
HOT=$(head -n 1 "$WORK/paths.txt")
[ -n "$HOT" ] || {
    cat "$WORK/urls.err" >&2
    die "scripts/wordpress-urls.sh printed no paths"
}
log "hot page: $HOT"

# curl with the Host every cache must see; -k: the certificate is self-signed.
hcurl() { curl -sS -k --max-time 30 -H "Host: $HOST_HEADER" "$@"; }

# Every server tells the origin the request came over HTTPS, and WordPress
# answers with https:// links: that is the page each cache must serve.
code=$(hcurl -H 'X-Forwarded-Proto: https' -o "$WORK/hot.html" -w '%{http_code}' "$ORIGIN$HOT") || code=000
[ "$code" = 200 ] || die "origin answered $code for $HOT"
hcurl -H 'X-Forwarded-Proto: https' -o "$WORK/hot2.html" "$ORIGIN$HOT" || true
ORIGIN_STABLE=1
cmp -s "$WORK/hot.html" "$WORK/hot2.html" || ORIGIN_STABLE=0
HOT_SIZE=$(wc -c <"$WORK/hot.html")
HOT_GZ_SIZE=$(gzip -6 -c "$WORK/hot.html" | wc -c)

log "making the certificate (ECDSA P-256, self-signed, 127.0.0.1 and localhost)"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=localhost -addext 'subjectAltName=DNS:localhost,IP:127.0.0.1' \
    -keyout "$WORK/key.pem" -out "$WORK/cert.pem" >"$WORK/openssl.log" 2>&1 || {
    cat "$WORK/openssl.log" >&2
    die "openssl could not make the certificate"
}
chmod 644 "$WORK/key.pem" # nginx and hitch read it before dropping privileges; it exists for this run only
cat "$WORK/cert.pem" "$WORK/key.pem" >"$WORK/hitch.pem"

# ---------------------------------------------------------------------------
# 2. Start the servers

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# The start functions below leave the reason of a failure in WHY.
WHY=""

# launch LABEL PORT... -- COMMAND...: runs a process in the background, logging
# to WORK/LABEL.log, once none of its ports is taken.
launch() {
    local label=$1 p
    shift
    while [ "$1" != -- ]; do
        p=$1
        shift
        if port_busy "$p"; then
            WHY="port $p already in use by another process"
            return 1
        fi
    done
    shift
    "$@" >"$WORK/$label.log" 2>&1 &
    PID[$label]=$!
}

# wait_up LABEL URL [EXPECTED_CODE]: waits (20 s) for the process to answer.
wait_up() {
    local label=$1 url=$2 want=${3:-} code=000 _
    for _ in $(seq 1 100); do
        if ! kill -0 "${PID[$label]}" 2>/dev/null; then
            local rc=0
            wait "${PID[$label]}" 2>/dev/null || rc=$?
            unset "PID[$label]"
            tail -n 20 "$WORK/$label.log" >&2 || true
            WHY="$label exited during start-up with status $rc: $(grep -v '^[[:space:]]*$' "$WORK/$label.log" | tail -n 1 | cut -c1-200 || true)"
            return 1
        fi
        code=$(curl -s -k -o /dev/null --max-time 2 -H "Host: $HOST_HEADER" -w '%{http_code}' "$url") || code=000
        if [ "$code" != 000 ] && { [ -z "$want" ] || [ "$code" = "$want" ]; }; then
            return 0
        fi
        sleep 0.2
    done
    tail -n 20 "$WORK/$label.log" >&2 || true
    WHY="$label did not answer $url within 20 s (last status $code)"
    return 1
}

start_strata() {
    (umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$WORK/cluster.secret")
    cat >"$WORK/strata.toml" <<EOF
# strata-proxy for benches/tls.sh (written by the script).
[server]
listen = "127.0.0.1:8184"
admin_listen = "127.0.0.1:9184"
tls_listen = "127.0.0.1:${PORT[strata]}"
tls_cert = "cert.pem"
tls_key = "key.pem"

[origin]
url = "$ORIGIN"

[cache]
capacity = "512MiB"
default_ttl = "1h"
grace = "1h"

[cluster]
node_id = "bench-tls"
secret_file = "cluster.secret"
EOF
    launch strata "${PORT[strata]}" 8184 9184 -- "$STRATA_BIN" --config "$WORK/strata.toml" &&
        wait_up strata "$STRATA_ADMIN/healthz" 200 &&
        wait_up strata "https://127.0.0.1:${PORT[strata]}/"
}

# nginx_dir NAME CONFIG: a prefix directory holding the configuration and the certificate.
nginx_dir() {
    mkdir -p "$WORK/$1"
    cp "$BENCH/config/$2" "$WORK/$1/nginx.conf"
    cp "$WORK/cert.pem" "$WORK/key.pem" "$WORK/$1/"
}

start_nginx() {
    nginx_dir nginx nginx-tls-cache.conf
    launch nginx "${PORT[nginx]}" -- nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx/" -e "$WORK/nginx/error.log" &&
        wait_up nginx "https://127.0.0.1:${PORT[nginx]}/"
}

start_varnish() {
    mkdir -p "$WORK/varnish"
    local listen="127.0.0.1:$VARNISH_PORT"
    # hitch hands connections over with the PROXY protocol (v2 carries the ALPN
    # result, so Varnish speaks HTTP/2 to h2 clients); nginx speaks HTTP/1.1.
    [ "$TERMINATOR" = hitch ] && listen+=",PROXY"
    launch varnishd "$VARNISH_PORT" -- varnishd -F -n "$WORK/varnish" -a "$listen" -T none \
        -p feature=+http2 -f "$BENCH/config/wordpress-tls.vcl" -s malloc,512m || return 1
    if [ "$TERMINATOR" = hitch ]; then
        cat >"$WORK/hitch.conf" <<EOF
frontend = "[127.0.0.1]:${PORT[varnish]}"
backend = "[127.0.0.1]:$VARNISH_PORT"
pem-file = "$WORK/hitch.pem"
tls-protos = TLSv1.2 TLSv1.3
alpn-protos = "h2, http/1.1"
write-proxy-v2 = on
workers = $(nproc)
daemon = off
EOF
        # hitch refuses to run its workers as root.
        if [ "$(id -u)" -eq 0 ]; then
            local u
            for u in _hitch nobody; do
                if getent passwd "$u" >/dev/null; then
                    echo "user = \"$u\"" >>"$WORK/hitch.conf"
                    break
                fi
            done
        fi
        # Varnish behind PROXY cannot be probed with plain curl: start hitch once varnishd's port is open.
        local _
        for _ in $(seq 1 100); do
            port_busy "$VARNISH_PORT" && break
            kill -0 "${PID[varnishd]}" 2>/dev/null || break
            sleep 0.2
        done
        launch hitch "${PORT[varnish]}" -- hitch --config="$WORK/hitch.conf" || return 1
        wait_up hitch "https://127.0.0.1:${PORT[varnish]}/" || return 1
        kill -0 "${PID[varnishd]}" 2>/dev/null || {
            WHY="varnishd exited during start-up: $(tail -n 1 "$WORK/varnishd.log" | cut -c1-200 || true)"
            return 1
        }
    else
        wait_up varnishd "http://$listen/" || return 1
        nginx_dir front nginx-tls-front.conf
        launch front "${PORT[varnish]}" -- nginx -c "$WORK/front/nginx.conf" -p "$WORK/front/" -e "$WORK/front/error.log" &&
            wait_up front "https://127.0.0.1:${PORT[varnish]}/"
    fi
}

for s in "${SERVERS[@]}"; do
    if [ -n "${DOWN[$s]:-}" ]; then
        warn "${NAME[$s]}: n/a: ${DOWN[$s]}"
        continue
    fi
    log "starting ${NAME[$s]} on https://127.0.0.1:${PORT[$s]}"
    WHY="could not start"
    if ! "start_$s"; then
        DOWN[$s]=$WHY
        warn "${NAME[$s]}: n/a: ${DOWN[$s]}"
    fi
done

UP=()
for s in "${SERVERS[@]}"; do
    if [ -z "${DOWN[$s]:-}" ]; then UP+=("$s"); fi
done
[ "${#UP[@]}" -gt 0 ] || die "no server started"

# ---------------------------------------------------------------------------
# 3. Warm every cache and check the hot page, for each protocol and encoding

PROTOS=(h1 h2)
PROFILES=(identity gzip)
declare -A PROTO_NAME=([h1]="HTTP/1.1" [h2]="HTTP/2")
declare -A CURL_PROTO=([h1]=--http1.1 [h2]=--http2)
declare -A CURL_VERSION=([h1]=1.1 [h2]=2)

header_of() { # header_of FILE NAME -> value of the last such header (CR stripped)
    awk -v n="${2,,}" -F': *' \
        'tolower($1) == n { v = $2 } END { gsub(/\r/, "", v); print v }' "$1"
}

check_server() {
    local s=$1 url="https://127.0.0.1:${PORT[$1]}$HOT" proto profile notes=() ok=1
    for proto in "${PROTOS[@]}"; do
        for profile in "${PROFILES[@]}"; do
            local ae=() hdr=$WORK/check-$s-$proto-$profile.hdr body=$WORK/check-$s-$proto-$profile.body
            [ "$profile" = gzip ] && ae=(-H "Accept-Encoding: gzip")
            # Two requests to fill the cache (the first may be a miss), then the checked one.
            hcurl "${CURL_PROTO[$proto]}" "${ae[@]}" -o /dev/null "$url" || true
            hcurl "${CURL_PROTO[$proto]}" "${ae[@]}" -o /dev/null "$url" || true
            local out code version
            out=$(hcurl "${CURL_PROTO[$proto]}" "${ae[@]}" -D "$hdr" -o "$body" -w '%{http_code} %{http_version}' "$url") ||
                out="000 none"
            code=${out% *}
            version=${out#* }
            local tag="$proto $profile"
            if [ "$code" != 200 ]; then
                warn "${NAME[$s]} ($tag): hot page answered $code"
                notes+=("$tag: status $code")
                ok=0
                continue
            fi
            if [ "$version" != "${CURL_VERSION[$proto]}" ]; then
                warn "${NAME[$s]} ($tag): curl asked for ${PROTO_NAME[$proto]} and got HTTP/$version"
                ok=0
            fi
            local ce xcache age plain=$body
            ce=$(header_of "$hdr" Content-Encoding)
            xcache=$(header_of "$hdr" X-Cache)
            age=$(header_of "$hdr" Age)
            if [ "$profile" = gzip ]; then
                if [ "$ce" = gzip ]; then
                    plain=$body.plain
                    gzip -dc <"$body" >"$plain" 2>/dev/null || {
                        warn "${NAME[$s]} ($tag): body is not valid gzip"
                        ok=0
                    }
                else
                    warn "${NAME[$s]} ($tag): answered without Content-Encoding: gzip (${ce:-identity})"
                    ok=0
                fi
            elif [ -n "$ce" ]; then
                warn "${NAME[$s]} ($tag): answered with Content-Encoding: $ce to a client that did not ask for it"
                ok=0
            fi
            local size match
            size=$(wc -c <"$plain")
            if cmp -s "$plain" "$WORK/hot.html"; then
                match="identical to origin"
            elif [ "$ORIGIN_STABLE" = 0 ] && [ "$size" -eq "$HOT_SIZE" ]; then
                match="same size as origin"
            else
                match="DIFFERS from origin ($size B vs $HOT_SIZE B)"
                warn "${NAME[$s]} ($tag): hot page $match"
                ok=0
            fi
            local note="$tag: HTTP/$version, $match, X-Cache ${xcache:-none}"
            [ -n "$age" ] && note+=", Age $age"
            [ "$profile" = gzip ] && [ "$ce" = gzip ] && note+=", $(wc -c <"$body") B gzipped"
            case ${xcache^^} in
                HIT*) ;;
                *)
                    if [ "$s" = varnish ] && [ "${age:-0}" -gt 0 ]; then :; else
                        warn "${NAME[$s]} ($tag): hot page was not a cache HIT (X-Cache: ${xcache:-none}, Age: ${age:-none})"
                        ok=0
                    fi
                    ;;
            esac
            notes+=("$note")
        done
    done
    local joined
    joined=$(printf '%s; ' "${notes[@]}")
    CHECKS+=("${NAME[$s]}: $([ "$ok" = 1 ] && echo OK || echo PROBLEM) — ${joined%; }")
}

log "warming and checking the hot page through every server"
for s in "${UP[@]}"; do
    check_server "$s"
done
printf '    %s\n' "${CHECKS[@]}" >&2

# ---------------------------------------------------------------------------
# 4. Measure

declare -A RPS=() P50=() P99=() ERR=() BPR=() TLSINFO=()

# percentiles FILE: "p50_us p99_us" of the third column (h2load's per-request log).
percentiles() {
    awk -F'\t' '{ print $3 }' "$1" | sort -n | awk '
        { v[NR] = $1 }
        END {
            if (NR == 0) { print "0 0"; exit }
            i50 = int(NR * 0.50); if (i50 < 1) i50 = 1
            i99 = int(NR * 0.99); if (i99 < 1) i99 = 1
            print v[i50], v[i99]
        }'
}

measure_h1() { # wrk over TLS: wrk negotiates no ALPN, so every server speaks HTTP/1.1
    local s=$1 profile=$2 key=$3 out=$WORK/wrk-$1-$2.txt
    local args=(-t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -H "Host: $HOST_HEADER")
    [ "$profile" = gzip ] && args+=(-H "Accept-Encoding: gzip")
    args+=(-s "$BENCH/wrk/hot.lua" "https://127.0.0.1:${PORT[$s]}$HOT")
    timeout --kill-after=5 $((DURATION_S + 30)) wrk "${args[@]}" >"$out" 2>&1 || true
    local line
    line=$(grep '^WRKRESULT ' "$out" | tail -n 1 || true)
    if [ -z "$line" ]; then
        warn "wrk produced no result for ${NAME[$s]} ($key): $(tail -n 3 "$out" | tr '\n' ' ')"
        return 0
    fi
    local -A r=()
    local kv
    for kv in ${line#WRKRESULT }; do r[${kv%%=*}]=${kv#*=}; done
    RPS[$key]=${r[rps]}
    P50[$key]=${r[p50_us]}
    P99[$key]=${r[p99_us]}
    ERR[$key]=$((r[err_connect] + r[err_read] + r[err_write] + r[err_status] + r[err_timeout]))
    [ "${r[requests]}" -gt 0 ] && BPR[$key]=$((r[bytes] / r[requests]))
    return 0
}

measure_h2() { # h2load: ALPN h2, one stream at a time per connection (like wrk's one request)
    local s=$1 profile=$2 key=$3 out=$WORK/h2load-$1-$2.txt logf=$WORK/h2load-$1-$2.log
    local args=(-t"$THREADS" -c"$CONNECTIONS" -m1 -D"$DURATION_S" -H ":authority: $HOST_HEADER")
    [ "$profile" = gzip ] && args+=(-H "accept-encoding: gzip")
    args+=(--log-file="$logf" "https://127.0.0.1:${PORT[$s]}$HOT")
    timeout --kill-after=5 $((DURATION_S + 30)) h2load "${args[@]}" >"$out" 2>&1 || true
    local rps
    rps=$(sed -n 's/^finished in [^,]*, \([0-9.]*\) req\/s.*/\1/p' "$out" | tail -n 1)
    if [ -z "$rps" ] || [ ! -s "$logf" ]; then
        warn "h2load produced no result for ${NAME[$s]} ($key): $(tail -n 3 "$out" | tr '\n' ' ')"
        return 0
    fi
    local req_line st_line failed errored tmo non2xx done_n total_b
    req_line=$(grep '^requests:' "$out" | tail -n 1)
    st_line=$(grep '^status codes:' "$out" | tail -n 1)
    failed=$(sed -n 's/.* \([0-9]*\) failed.*/\1/p' <<<"$req_line")
    errored=$(sed -n 's/.* \([0-9]*\) errored.*/\1/p' <<<"$req_line")
    tmo=$(sed -n 's/.* \([0-9]*\) timeout.*/\1/p' <<<"$req_line")
    done_n=$(sed -n 's/.* \([0-9]*\) done.*/\1/p' <<<"$req_line")
    non2xx=$(awk '{ print $5 + $7 + $9 }' <<<"$st_line")
    total_b=$(sed -n 's/^traffic: [^(]*(\([0-9]*\)) total.*/\1/p' "$out" | tail -n 1)
    RPS[$key]=$rps
    read -r "P50[$key]" "P99[$key]" < <(percentiles "$logf")
    ERR[$key]=$((${failed:-0} + ${errored:-0} + ${tmo:-0} + ${non2xx:-0}))
    [ "${done_n:-0}" -gt 0 ] && [ -n "$total_b" ] && BPR[$key]=$((total_b / done_n))
    TLSINFO[$s]=$(grep -E '^(TLS Protocol|Cipher|Server Temp Key|Application protocol):' "$out" |
        sed 's/^[^:]*: *//' | paste -sd ' ' -)
    return 0
}

for proto in "${PROTOS[@]}"; do
    for profile in "${PROFILES[@]}"; do
        for s in "${UP[@]}"; do
            key=$proto/$profile/$s
            log "${PROTO_NAME[$proto]}, $profile: ${NAME[$s]}"
            "measure_$proto" "$s" "$profile" "$key"
            if [ "${ERR[$key]:-0}" -gt 0 ]; then
                warn "${NAME[$s]} (${PROTO_NAME[$proto]}, $profile): ${ERR[$key]} errors or non-2xx responses"
            fi
            sleep 1
        done
    done
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------------------
# 5. Report

version_of() {
    case $1 in
        varnish) varnishd -V 2>&1 | head -n 1 | sed -E 's/^varnishd \(varnish-([^ ]+) revision ([0-9a-f]{8}).*/\1 (\2)/' ;;
        nginx) nginx -v 2>&1 | sed 's/^nginx version: nginx\///' ;;
        hitch) hitch --version 2>&1 | head -n 1 | awk '{ print $2 }' ;;
        wrk) wrk -v 2>&1 | head -n 1 | awk '{ print $2 }' ;;
        h2load) h2load --version 2>&1 | head -n 1 | sed 's/^h2load nghttp2\///' ;;
        openssl) openssl version | awk '{ print $2 }' ;;
        strata)
            local rev
            rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || true)
            echo "$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -n 1)${rev:+ ($rev)}"
            ;;
    esac
}

fmt_rps() { if [ -n "${RPS[$1]:-}" ]; then printf '%.0f' "${RPS[$1]}"; else printf 'n/a'; fi; }
fmt_ms() { if [ -n "${1:-}" ]; then awk -v a="$1" 'BEGIN { printf "%.2f", a / 1000 }'; else printf 'n/a'; fi; }
ratio() {
    if [ -n "$1" ] && [ -n "$2" ]; then
        awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f×", a / b; else printf "n/a" }'
    else printf 'n/a'; fi
}

terminator_line() {
    if [ "$TERMINATOR" = hitch ]; then
        echo "hitch $(version_of hitch) terminates TLS (ALPN h2, http/1.1) and hands each connection to Varnish with PROXY v2; Varnish runs with \`-p feature=+http2\`"
    else
        echo "nginx (\`config/nginx-tls-front.conf\`) terminates TLS and HTTP/2 and forwards over a keep-alive HTTP/1.1 pool to Varnish (hitch was not available)"
    fi
}

mkdir -p "$(dirname "$RESULTS")"
{
    echo "# Strata TLS benchmark: latest results"
    echo
    echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "- Machine: $(nproc) CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)), $(uname -sr); load average at start: $LOAD_START, at end: $LOAD_END"
    echo "- Versions: strata-proxy $(version_of strata) (rustls); nginx $(version_of nginx); varnishd $(version_of varnish); wrk $(version_of wrk); h2load $(version_of h2load); OpenSSL $(version_of openssl)"
    echo "- Certificate: one self-signed ECDSA P-256 certificate for \`localhost\` and \`127.0.0.1\`, used by every server"
    echo "- Varnish: $(terminator_line)"
    echo "- Page: \`$HOT\` ($HOT_SIZE B identity, $HOT_GZ_SIZE B at gzip -6), the HTTPS page (every server sends \`X-Forwarded-Proto: https\`), \`Host: $HOST_HEADER\`, warmed and checked to be a hit before measuring"
    echo "- HTTP/1.1: \`wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency\` (no ALPN); HTTP/2: \`h2load -t$THREADS -c$CONNECTIONS -m1 -D$DURATION_S\` (ALPN h2, one request in flight per connection, percentiles from its per-request log); keep-alive, connections opened once per run"
    for s in "${UP[@]}"; do
        [ -n "${TLSINFO[$s]:-}" ] && echo "- TLS negotiated by h2load with ${NAME[$s]}: ${TLSINFO[$s]}"
    done
    echo "- The clients run on the same CPUs as the servers"
    echo
    echo "## Requests per second, strata-proxy against the best of the others"
    echo
    echo "| Protocol | Encoding | strata-proxy | nginx proxy_cache | ${NAME[varnish]} | strata / best other |"
    echo "|---|---|--:|--:|--:|--:|"
    for proto in "${PROTOS[@]}"; do
        for profile in "${PROFILES[@]}"; do
            k=$proto/$profile
            st=${RPS[$k/strata]:-}
            best=$(awk -v a="${RPS[$k/nginx]:-0}" -v b="${RPS[$k/varnish]:-0}" 'BEGIN { m = (a > b ? a : b); if (m > 0) print m }')
            echo "| ${PROTO_NAME[$proto]} | $profile | $(fmt_rps "$k/strata") | $(fmt_rps "$k/nginx") | $(fmt_rps "$k/varnish") | $(ratio "$st" "$best") |"
        done
    done
    echo
    echo "## Every run"
    echo
    echo "| Server | Protocol | Encoding | req/s | p50 ms | p99 ms | errors | bytes/response |"
    echo "|---|---|---|--:|--:|--:|--:|--:|"
    for proto in "${PROTOS[@]}"; do
        for profile in "${PROFILES[@]}"; do
            for s in "${UP[@]}"; do
                k=$proto/$profile/$s
                echo "| ${NAME[$s]} | ${PROTO_NAME[$proto]} | $profile | $(fmt_rps "$k") | $(fmt_ms "${P50[$k]:-}") | $(fmt_ms "${P99[$k]:-}") | ${ERR[$k]:-n/a} | ${BPR[$k]:-n/a} |"
            done
        done
    done
    echo
    echo "errors: wrk's socket errors and non-2xx/3xx responses; h2load's failed, errored and timed-out requests and non-2xx responses."
    echo "bytes/response: everything read (headers and body) divided by the responses, which shows the encoding served (HTTP/2 headers are HPACK-compressed)."
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
