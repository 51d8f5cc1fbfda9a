#!/usr/bin/env bash
# Director benchmark: the same namespace rig as the director tests (a client, the director,
# three strata-proxy nodes on one bridge; documentation addresses only), measured with wrk
# from the client namespace.
#
#   benches/director.sh                 # about 1 minute; needs root
#   DURATION=10s CONNECTIONS="48 192" benches/director.sh
#
# For each data plane (AF_PACKET in user space, XDP in the kernel: both in one run, on the
# same rig) and each load (keep-alive, and a new connection per request) it runs two cases
# with the same total load: three wrk processes each aimed straight at one node, then three
# aimed at the VIP (so every request goes through the director). It reports requests/s (and
# the VIP/direct ratio), p99 latency (and what the director adds), and the director's CPU
# time per million frames it handled: the process's own (from /proc/PID/stat) plus, on the
# XDP plane, the program's run time as the kernel counts it (kernel.bpf_stats_enabled is
# switched on for the run and restored after).
# Writes benches/results/director.md (RESULTS overrides) and prints it.
#
# Variables: DURATION (default 10s), CONNECTIONS (total per case, split over 3 wrk; a list
# runs every case at each count; default "48 192"), PLANES (default "af_packet xdp"),
# WORKERS (director data-plane threads; default one per CPU), SKIP_BUILD=1 (use
# target/release as is), KEEP_WORK=1 (keep the temporary directory).
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$SCRIPT_DIR/.." && pwd)
RIG="$REPO_DIR/director/tests/rig.sh"
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-48 192}
PLANES=${PLANES:-af_packet xdp}
RESULTS=${RESULTS:-$REPO_DIR/benches/results/director.md}
P=sdbench
VIP=192.0.2.100
NODES=3

log() { echo "[director-bench] $*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "needs root (network namespaces, packet sockets)"
for tool in ip python3 curl; do command -v "$tool" >/dev/null || die "$tool is missing"; done
for plane in $PLANES; do
    case $plane in af_packet | xdp) ;; *) die "PLANES: $plane is not af_packet or xdp" ;; esac
done
# wrk always; clang (the XDP program's build) and ethtool (the rig's XDP set-up) for xdp.
need=(wrk)
case " $PLANES " in *" xdp "*) need+=(clang ethtool) ;; esac
for tool in "${need[@]}"; do
    if ! command -v "$tool" >/dev/null; then
        log "installing $tool"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$tool" >/dev/null || die "cannot install $tool"
    fi
done
if [ -z "${SKIP_BUILD:-}" ]; then
    log "cargo build --release -p strata-proxy -p strata-director"
    (cd "$REPO_DIR" && cargo build --release -q -p strata-proxy -p strata-director)
fi
PROXY="$REPO_DIR/target/release/strata-proxy"
DIRECTOR="$REPO_DIR/target/release/strata-director"
[ -x "$PROXY" ] && [ -x "$DIRECTOR" ] || die "release binaries missing (run without SKIP_BUILD)"

WORK=$(mktemp -d /tmp/strata-director-bench.XXXXXX)
BPF_STATS=$(sysctl -n kernel.bpf_stats_enabled 2>/dev/null || echo "")
cleanup() {
    [ -n "$BPF_STATS" ] && sysctl -qw "kernel.bpf_stats_enabled=$BPF_STATS" || true
    "$RIG" down "$P" || true
    if [ -n "${KEEP_WORK:-}" ]; then log "work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
# One rig for both planes, made ready for XDP when it is measured (the AF_PACKET plane
# works the same on it), so the planes meet the same segment.
case " $PLANES " in
    *" xdp "*) "$RIG" up "$P" "$NODES" xdp ;;
    *) "$RIG" up "$P" "$NODES" ;;
esac
[ -n "$BPF_STATS" ] && sysctl -qw kernel.bpf_stats_enabled=1

in_ns() { local ns=$1; shift; ip netns exec "$P-$ns" "$@"; }

for i in $(seq 1 "$NODES"); do
    d="$WORK/n$i"
    mkdir -p "$d/www"
    # A small page, as most cached WordPress answers are a few KiB gzipped.
    head -c 4096 /dev/zero | tr '\0' 'x' >"$d/www/index.html"
    echo "bench-cluster-secret-0123456789" >"$d/secret"
    cat >"$d/proxy.toml" <<TOML
[server]
listen = "0.0.0.0:80"
admin_listen = "0.0.0.0:9080"
[origin]
url = "http://127.0.0.1:8081"
[cache]
default_ttl = "1h"
[cluster]
node_id = "n$i"
secret_file = "$d/secret"
TOML
    in_ns "n$i" python3 -m http.server 8081 --bind 127.0.0.1 --directory "$d/www" >"$d/origin.log" 2>&1 &
    in_ns "n$i" "$PROXY" --config "$d/proxy.toml" >"$d/proxy.log" 2>&1 &
done

admin() { in_ns dir curl -s "http://127.0.0.1:9090$1"; }

# start_director PLANE: writes the config, starts the director, waits for every node, warms
# the caches; sets DIRECTOR_PID.
start_director() {
    local plane=$1
    cat >"$WORK/director.toml" <<TOML
interface = "eth0"
vip = "$VIP"
ports = [80]
admin_listen = "127.0.0.1:9090"
data_plane = "$plane"
TOML
    [ -n "${WORKERS:-}" ] && echo "workers = $WORKERS" >>"$WORK/director.toml"
    for i in $(seq 1 "$NODES"); do
        printf '[[backend]]\naddr = "192.0.2.%d"\nhealth_url = "http://192.0.2.%d:9080/healthz"\n' $((10 + i)) $((10 + i)) >>"$WORK/director.toml"
    done
    STRATA_LOG=warn in_ns dir "$DIRECTOR" --config "$WORK/director.toml" >"$WORK/director-$plane.log" 2>&1 &
    sleep 0.5
    DIRECTOR_PID=$(ip netns pids "$P-dir" | head -n 1)
    [ -n "$DIRECTOR_PID" ] || die "director ($plane) did not start: $(cat "$WORK/director-$plane.log")"
    local _
    for _ in $(seq 1 100); do
        [ "$(admin /status | grep -c ' up for ')" = "$NODES" ] && break
        sleep 0.2
    done
    [ "$(admin /status | grep -c ' up for ')" = "$NODES" ] || die "nodes not up: $(admin /status)"
    log "director up: data plane $(admin /status | awk '/^data plane/ { print $3 }')"
    # Warm every node's cache, directly and through the VIP.
    for i in $(seq 1 "$NODES"); do
        for _ in 1 2; do in_ns cli curl -s -o /dev/null "http://192.0.2.$((10 + i))/index.html"; done
    done
    for _ in $(seq 1 20); do in_ns cli curl -s -o /dev/null "http://$VIP/index.html"; done
}

# stop_director: SIGTERM, and wait until it is gone (the next one claims the interface).
stop_director() {
    kill "$DIRECTOR_PID" 2>/dev/null || true
    local _
    for _ in $(seq 1 100); do
        kill -0 "$DIRECTOR_PID" 2>/dev/null || return 0
        sleep 0.1
    done
    die "director $DIRECTOR_PID did not stop"
}

metric() { admin /metrics | awk -v m="$1" '$1 == m { print $2 }'; }
# Frames the plane handled: read from the rings, or seen by the XDP program.
frames() {
    if [ "$PLANE" = xdp ]; then metric strata_director_xdp_frames_total; else metric strata_director_rx_frames_total; fi
}
xdp_ns() { local v; v=$(metric strata_director_xdp_run_nanoseconds_total); echo "${v:-0}"; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$DIRECTOR_PID/stat"; }
user_ticks() { awk '{ print $14 }' "/proc/$DIRECTOR_PID/stat"; }
HZ=$(getconf CLK_TCK)

# run_case NAME HEADER TARGET... : three wrk in parallel, one per target; sums req/s,
# takes the worst p99 of the three.
declare -A RPS P99 PKTS CPU USR XNS
run_case() {
    local name=$1 header=$2; shift 2
    local i=0 t pids=()
    local p0 c0 u0 x0
    p0=$(frames); c0=$(cpu_ticks); u0=$(user_ticks); x0=$(xdp_ns)
    for t in "$@"; do
        i=$((i + 1))
        local args=(-t1 -c"$PER" -d"$DURATION" --latency)
        [ -n "$header" ] && args+=(-H "$header")
        in_ns cli timeout 120 wrk "${args[@]}" "http://$t/index.html" >"$WORK/wrk-$name-$i.txt" 2>&1 &
        pids+=($!)
    done
    wait "${pids[@]}" || true
    PKTS[$name]=$(($(frames) - p0))
    CPU[$name]=$(($(cpu_ticks) - c0))
    USR[$name]=$(($(user_ticks) - u0))
    XNS[$name]=$(($(xdp_ns) - x0))
    RPS[$name]=$(cat "$WORK"/wrk-"$name"-*.txt | awk '/^Requests\/sec/ { s += $2 } END { printf "%.0f", s }')
    P99[$name]=$(cat "$WORK"/wrk-"$name"-*.txt | awk '$1 == "99%" {
        v = $2; u = v; gsub(/[0-9.]/, "", u); sub(/[a-z]+$/, "", v);
        ms = (u == "us") ? v / 1000 : (u == "s") ? v * 1000 : v;
        if (ms > m) m = ms } END { printf "%.2f", m }')
    if grep -q "Socket errors\|Non-2xx" "$WORK"/wrk-"$name"-*.txt; then
        log "$name: wrk reported errors: $(grep -h "Socket errors\|Non-2xx" "$WORK"/wrk-"$name"-*.txt | tr '\n' ' ')"
    fi
    log "$name: ${RPS[$name]} req/s, p99 ${P99[$name]} ms, ${PKTS[$name]} frames at the director, ${CPU[$name]} CPU ticks (${USR[$name]} user), XDP program ${XNS[$name]} ns"
}

DIRECT=()
for i in $(seq 1 "$NODES"); do DIRECT+=("192.0.2.$((10 + i))"); done
VIPS=()
for _ in $(seq 1 "$NODES"); do VIPS+=("$VIP"); done

for PLANE in $PLANES; do
    start_director "$PLANE"
    for c in $CONNECTIONS; do
        PER=$((c / NODES))
        [ "$PER" -ge 1 ] || PER=1
        run_case "$PLANE-direct-keepalive-$c" "" "${DIRECT[@]}"
        run_case "$PLANE-vip-keepalive-$c" "" "${VIPS[@]}"
        run_case "$PLANE-direct-close-$c" "Connection: close" "${DIRECT[@]}"
        run_case "$PLANE-vip-close-$c" "Connection: close" "${VIPS[@]}"
    done
    stop_director
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
# cpu_per_m TICKS FRAMES [XDP_NS]: seconds per million frames.
cpu_per_m() { awk -v t="$1" -v hz="$HZ" -v p="$2" -v x="${3:-0}" 'BEGIN { if (p > 0) printf "%.2f", (t / hz + x / 1e9) / p * 1e6; else print "n/a" }'; }
added() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%+.2f", a - b }'; }

{
    echo "# Director benchmark"
    echo
    echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) CPUs ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo))"
    echo "- Rig: client, director and $NODES strata-proxy nodes in network namespaces on one bridge (veth); everything, wrk included, shares the same CPUs"
    echo "- Load: 3 × \`wrk -t1 -c(N/3) -d$DURATION --latency\` GET /index.html (4 KiB, cache hit), aimed at one node each (direct) or all at the VIP; N = total connections"
    echo "- Director: release build, workers: ${WORKERS:-one per CPU}, default health timing (200 ms / 150 ms / 3 / 5); planes: $PLANES (xdp: native, on the director's veth)"
    echo
    echo "| Plane | N | Load | direct req/s | via VIP req/s | VIP/direct | direct p99 ms | VIP p99 ms | added p99 ms | frames through director | director CPU s per 1M frames | of which user space | of which XDP program |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    for plane in $PLANES; do for c in $CONNECTIONS; do for load in keepalive close; do
        d=$plane-direct-$load-$c v=$plane-vip-$load-$c
        echo "| $plane | $c | $load | ${RPS[$d]} | ${RPS[$v]} | $(ratio "${RPS[$v]}" "${RPS[$d]}") | ${P99[$d]} | ${P99[$v]} | $(added "${P99[$v]}" "${P99[$d]}") | ${PKTS[$v]} | $(cpu_per_m "${CPU[$v]}" "${PKTS[$v]}" "${XNS[$v]}") | $(cpu_per_m "${USR[$v]}" "${PKTS[$v]}") | $(cpu_per_m 0 "${PKTS[$v]}" "${XNS[$v]}") |"
    done; done; done
    echo
    echo "Frames through the director during the direct runs (should be ~0, only health checks):$(for plane in $PLANES; do for c in $CONNECTIONS; do printf ' %s' "${PKTS[$plane-direct-keepalive-$c]}" "${PKTS[$plane-direct-close-$c]}"; done; done)."
    echo "Goal: VIP/direct ≥ 0.9. Figures from one 2-core machine are noisy; compare ratios, not absolutes."
    echo
    echo "Frames through the director: on the AF_PACKET plane those read from its rings, on the XDP"
    echo "plane those its program saw. The XDP plane's CPU is the process's own (control plane,"
    echo "ARP; nearly nothing) plus the program's run time as the kernel counts it; the sending of"
    echo "an XDP_TX frame and the bridge and node work after it run in softirq context and are not"
    echo "charged to the director, where the AF_PACKET plane's sendmmsg carries them in its system time."
    echo
    echo "Reading the CPU figure: on veth, sending a frame runs the bridge and the receiving node's"
    echo "network stack synchronously in the sender's context, so the director's kernel time includes"
    echo "work that, on real hardware, the node's own CPU does (in the direct runs that same work is"
    echo "charged to wrk). The user-space column is the director's own per-frame work. The VIP/direct"
    echo "ratio measures one extra veth/bridge hop per inbound frame on CPUs shared by the client,"
    echo "the director and all nodes; a director on its own host and NIC does not take CPU from them."
    echo "Latency: a TPACKET_V3 block reaches user space when it is full or after its 1 ms retire"
    echo "timeout; the director uses the smallest blocks that hold two full frames, so under load they"
    echo "fill first, and at low rates a frame waits at most 1 ms at the director."
} >"$RESULTS.tmp"
mv "$RESULTS.tmp" "$RESULTS"
cat "$RESULTS"
