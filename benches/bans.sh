#!/usr/bin/env bash
# Strata ban benchmark: how fast a ban reaches the other nodes, and whether a big tag index
# and many past bans slow down the hit path.
#
# Starts two identical clusters of three strata-proxy nodes on loopback (a, b, c and x, y, z;
# in each, every node lists the other two as siblings), in front of the bare server (which
# answers every path with the same small HTML page and, in this mode, a Surrogate-Key of the
# path's own), then:
#
#   (a) propagation: sends PROPAGATE tag bans to node a one after another, each with
#       POST /ban?wait=WAIT, and collects the per-sibling acknowledgement time reported in
#       each answer and the client's round trip;
#   (b) hit path: stores OBJECTS objects on node a, each with its own tags, and sends BANS
#       tag bans that match nothing to it; node x, in the other cluster, keeps an empty tag
#       index and gets no bans. Then wrk on one hot page, ROUNDS rounds, each round one run
#       on x (empty) and one on a (loaded) per profile (identity, gzip), back to back, so
#       that whatever else the machine does affects both alike; the report gives the ratio
#       of each pair and their median. Before each run it waits for other processes to leave
#       the CPUs idle, and it reports how much CPU they took during the run.
#
# A measurement printed for people, not a test: the exit status does not depend on the figures.
#
#   benches/bans.sh
#   DURATION=5s ROUNDS=2 OBJECTS=20000 BANS=20000 benches/bans.sh
#
# Environment:
#   PROPAGATE     bans sent one after another in (a) (default 2000)
#   WAIT          ?wait= of each of those bans, in ms (default 1000)
#   OBJECTS       distinct objects stored on node A before the second hit-path run (default 100000)
#   BANS          tag bans matching nothing sent before the second hit-path run (default 100000)
#   DURATION      wrk duration per run (default 10s)
#   CONNECTIONS   wrk connections (default 64)
#   THREADS       wrk threads (default 2)
#   ROUNDS        rounds of wrk runs; each round runs every profile on both nodes (default 3)
#   QUIET_WAIT    longest wait, in seconds, for other processes to leave the CPUs idle before
#                 each wrk run (default 120; 0 = do not wait)
#   PAGE_SIZE     approximate size in bytes of the page (default 2048)
#   CAPACITY      [cache] capacity of every node (default 1GiB)
#   RESULTS       where the Markdown report goes (default benches/results/bans.md)
#   SKIP_BUILD=1  do not run cargo build (use the binaries already in target/release)
#   KEEP_WORK=1   keep the temporary work directory (logs, configs, wrk output)
#
# Ports (all 127.0.0.1): bare server 8103 (origin); nodes a, b, c on 8104, 8105, 8106
# (admin 9104, 9105, 9106); nodes x, y, z on 8107, 8108, 8109 (admin 9107, 9108, 9109).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"
PROPAGATE=${PROPAGATE:-2000}
WAIT=${WAIT:-1000}
OBJECTS=${OBJECTS:-100000}
BANS=${BANS:-100000}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-3}
QUIET_WAIT=${QUIET_WAIT:-120}
PAGE_SIZE=${PAGE_SIZE:-2048}
CAPACITY=${CAPACITY:-1GiB}
RESULTS=${RESULTS:-$ROOT/benches/results/bans.md}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
CARGO=${CARGO:-cargo}

ORIGIN_ADDR=127.0.0.1:8103
NODES=(a b c x y z)
declare -A CLUSTER_OF=([a]=abc [b]=abc [c]=abc [x]=xyz [y]=xyz [z]=xyz)
declare -A PUBLIC=([a]=127.0.0.1:8104 [b]=127.0.0.1:8105 [c]=127.0.0.1:8106
    [x]=127.0.0.1:8107 [y]=127.0.0.1:8108 [z]=127.0.0.1:8109)
declare -A ADMIN=([a]=127.0.0.1:9104 [b]=127.0.0.1:9105 [c]=127.0.0.1:9106
    [x]=127.0.0.1:9107 [y]=127.0.0.1:9108 [z]=127.0.0.1:9109)
# The hit path is measured on these two: the same configuration, one loaded, one not.
EMPTY_NODE=x
LOADED_NODE=a
HOST_HEADER=bans.example.test
HOT=/hot


# ---------------------------------------------------------------------------
# Work directory and clean-up: every process this script starts is in PIDS.

WORK=$(mktemp -d /tmp/strata-bans.XXXXXX)
PIDS=()
NOTES=()


cleanup() {
    local pid
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
    if [ "${KEEP_WORK:-0}" = 1 ]; then
        log "work directory kept: $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

for tool in curl gzip awk wrk; do
    command -v "$tool" >/dev/null || die "$tool is needed (wrk: apt-get install wrk)"
done
[[ $QUIET_WAIT =~ ^[0-9]+$ ]] || die "QUIET_WAIT must be a number of seconds"
for n in "$PROPAGATE" "$WAIT" "$OBJECTS" "$BANS" "$CONNECTIONS" "$THREADS" "$ROUNDS" "$PAGE_SIZE"; do
    [[ $n =~ ^[1-9][0-9]*$ ]] || die "numeric settings must be positive integers (got $n)"
done

# Something already answering on a port would be measured instead of our servers.
for addr in "$ORIGIN_ADDR" "${PUBLIC[@]}" "${ADMIN[@]}"; do
    if curl -s -o /dev/null --max-time 1 "http://$addr/"; then
        die "something is already listening on $addr; stop it first"
    fi
done

# ---------------------------------------------------------------------------
# Build

if [ "${SKIP_BUILD:-0}" != 1 ]; then
    log "building release binaries"
    if ! (cd "$ROOT" && "$CARGO" build --release -p strata-proxy -p strata-bench) >"$WORK/build.log" 2>&1; then
        tail -n 30 "$WORK/build.log" >&2
        die "cargo build failed"
    fi
fi
STRATA_BIN=$TARGET_DIR/release/strata-proxy
BARE_BIN=$TARGET_DIR/release/bare-server
FILL_BIN=$TARGET_DIR/release/fill
BANS_BIN=$TARGET_DIR/release/bans
for bin in "$STRATA_BIN" "$BARE_BIN" "$FILL_BIN" "$BANS_BIN"; do
    [ -x "$bin" ] || die "$bin not found (build with: cargo build --release -p strata-proxy -p strata-bench)"
done

# ---------------------------------------------------------------------------
# The page: deterministic HTML of about PAGE_SIZE bytes, and its gzip.

awk -v TARGET="$PAGE_SIZE" 'BEGIN {
    n = split("the of and cache node ban tag page post list garden river market light table " \
        "window coffee bread summer winter station bridge harbour museum library", w, " ")
    seed = 7; size = 0
    print "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"UTF-8\"><title>Hot page</title></head><body><main>"
    while (size < TARGET - 40) {
        s = "<p>"
        for (i = 0; i < 24; i++) { seed = (seed * 16807) % 2147483647; s = s w[seed % n + 1] " " }
        s = s "</p>"; print s; size += length(s) + 1
    }
    print "</main></body></html>"
}' >"$WORK/page.html"
gzip -6 -c "$WORK/page.html" >"$WORK/page.html.gz"

# ---------------------------------------------------------------------------
# Start the origin and the three nodes

(umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$WORK/cluster.secret")

"$BARE_BIN" --listen "$ORIGIN_ADDR" --identity "$WORK/page.html" --gzip "$WORK/page.html.gz" \
    --surrogate-key-per-path >"$WORK/bare.log" 2>&1 &
PIDS+=($!)

declare -A NODE_PID=()
siblings_of() { # siblings_of NODE -> TOML list of the admin URLs of the other nodes of its cluster
    local me=$1 n out=()
    for n in "${NODES[@]}"; do
        [ "$n" = "$me" ] || [ "${CLUSTER_OF[$n]}" != "${CLUSTER_OF[$me]}" ] || out+=("\"http://${ADMIN[$n]}\"")
    done
    local IFS=,
    echo "[${out[*]}]"
}

for n in "${NODES[@]}"; do
    cat >"$WORK/$n.toml" <<EOF
[server]
listen = "${PUBLIC[$n]}"
admin_listen = "${ADMIN[$n]}"

[origin]
url = "http://$ORIGIN_ADDR"

[cache]
capacity = "$CAPACITY"
default_ttl = "1h"
grace = "1h"

[cluster]
node_id = "$n"
siblings = $(siblings_of "$n")
secret_file = "cluster.secret"
# Loose enough that the load of the fill and the ban flood on two cores does not make a
# node flush its cache: this benchmark measures the hit path, not the fail-safe.
confirm_within = "10s"
EOF
    "$STRATA_BIN" --config "$WORK/$n.toml" >"$WORK/$n.log" 2>&1 &
    PIDS+=($!)
    NODE_PID[$n]=$!
done

# wait_for URL PATTERN SECONDS: waits until the body of URL matches PATTERN.
wait_for() {
    local url=$1 pattern=$2 secs=$3 i
    for i in $(seq 1 $((secs * 10))); do
        if curl -s --max-time 2 "$url" 2>/dev/null | grep -q -- "$pattern"; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}

wait_for "http://$ORIGIN_ADDR/" "</html>" 20 || die "the bare server did not start: $(tail -n 5 "$WORK/bare.log")"
for n in "${NODES[@]}"; do
    wait_for "http://${ADMIN[$n]}/healthz" ok 20 || die "node $n did not start: $(tail -n 5 "$WORK/$n.log")"
done
for n in "${NODES[@]}"; do
    wait_for "http://${ADMIN[$n]}/cluster" '"confirmed":true' 20 ||
        die "node $n did not confirm its siblings: $(curl -s "http://${ADMIN[$n]}/cluster")"
done
log "two clusters of three nodes up and confirmed"

metric() { # metric ADMIN NAME [LABEL-FILTER] -> sum of the matching samples
    curl -s --max-time 5 "http://$1/metrics" |
        awk -v name="$2" -v filt="${3:-}" '
            $0 !~ /^#/ { split($1, a, "{"); if (a[1] == name && (filt == "" || index($0, filt))) s += $NF }
            END { printf "%.6g\n", s + 0 }'
}

hcurl() { curl -sS --max-time 30 -H "Host: $HOST_HEADER" "$@"; }

# ---------------------------------------------------------------------------
# (b) Hit path

to_ms() { # to_ms 456.00us|3.53ms|1.02s -> milliseconds
    awk -v v="$1" 'BEGIN {
        if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
        else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
        else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
        else print "n/a" }'
}

# CPU accounting, in clock ticks: what the whole machine spent, and what the processes this
# script started spent. The rest, during a run, is other processes competing with the run.
TICK=$(getconf CLK_TCK)
CPUS=$(nproc)
busy_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }
own_ticks() {
    local pid t=0 v
    for pid in "${PIDS[@]}"; do
        v=$(awk '{ print $14 + $15 }' "/proc/$pid/stat" 2>/dev/null || echo 0)
        t=$((t + v))
    done
    echo "$t"
}
# other_pct TICKS SECONDS -> share of all CPUs, in %, those ticks are over that time
other_pct() { awk -v t="$1" -v s="$2" -v c="$CPUS" -v k="$TICK" 'BEGIN { v = 100 * t / (s * c * k); if (v < 0) v = 0; if (v > 100) v = 100; printf "%.1f", v }'; }

# Waits (at most QUIET_WAIT s) until other processes use under 5 % of the CPUs for a second.
wait_quiet() {
    local waited=0 b0 o0 b1 o1 pct
    [ "$QUIET_WAIT" -gt 0 ] || return 0
    while :; do
        b0=$(busy_ticks)
        o0=$(own_ticks)
        sleep 1
        b1=$(busy_ticks)
        o1=$(own_ticks)
        pct=$(other_pct $(((b1 - b0) - (o1 - o0))) 1)
        awk -v p="$pct" 'BEGIN { exit !(p < 5) }' && return 0
        waited=$((waited + 1))
        if [ "$waited" -ge "$QUIET_WAIT" ]; then
            NOTES+=("other processes still used $pct % of the CPUs after waiting ${QUIET_WAIT} s for quiet")
            return 0
        fi
        [ $((waited % 10)) = 1 ] && log "waiting for other processes to leave the CPUs ($pct % busy)"
    done
}

ROWS=()

declare -A RUN=()   # "state profile round" -> req/s of a run that counts (others < 5 %)

# run_wrk STATE PROFILE ROUND: one wrk run on the node of STATE (empty or loaded)
run_wrk() {
    local state=$1 profile=$2 round=$3 out=$WORK/wrk-$1-$2-$3.txt ae=() node
    node=$([ "$state" = empty ] && echo "$EMPTY_NODE" || echo "$LOADED_NODE")
    [ "$profile" = gzip ] && ae=(-H "Accept-Encoding: gzip")
    local xc
    xc=$(hcurl "${ae[@]}" -o /dev/null -D - "http://${PUBLIC[$node]}$HOT" | awk -F': *' 'tolower($1) == "x-cache" { gsub(/\r/, "", $2); print $2 }')
    [ "$xc" = HIT ] || NOTES+=("$state/$profile round $round: the hot page was not a HIT before wrk (X-Cache: ${xc:-none})")
    wait_quiet
    local b0 o0 t0 b1 o1 t1 wrk_ticks
    b0=$(busy_ticks)
    o0=$(own_ticks)
    t0=$(date +%s.%N)
    local TIMEFORMAT='%3U %3S'
    { time wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -H "Host: $HOST_HEADER" "${ae[@]}" \
        "http://${PUBLIC[$node]}$HOT" >"$out" 2>&1; } 2>"$out.time" || true
    b1=$(busy_ticks)
    o1=$(own_ticks)
    t1=$(date +%s.%N)
    wrk_ticks=$(awk -v k="$TICK" '{ printf "%d", ($1 + $2) * k }' "$out.time")
    local others
    others=$(other_pct $(((b1 - b0) - (o1 - o0) - wrk_ticks)) "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')")
    local rps p50 p99 errs
    rps=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$out")
    p50=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$out")")
    p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$out")")
    errs=$(awk '/Socket errors|Non-2xx/ { print }' "$out" | tr '\n' ' ')
    [ -n "$errs" ] && NOTES+=("$state/$profile round $round: wrk reported: $errs")
    # Runs during which other processes took 5 % of the CPUs or more are reported, not counted.
    if awk -v p="$others" 'BEGIN { exit !(p < 5) }'; then
        RUN["$state $profile $round"]=${rps:-0}
    else
        NOTES+=("$state/$profile round $round: other processes used $others % of the CPUs; left out with its pair")
    fi
    ROWS+=("| $round | $profile | $state (node $node) | ${rps:-n/a} | $p50 | $p99 | $others |")
    log "$state (node $node) $profile round $round: ${rps:-?} req/s, p50 $p50 ms, p99 $p99 ms (others: $others % CPU)"
}

hit_runs() { # hit_runs: every round, every profile, the empty node then the loaded one
    local r p
    for r in $(seq 1 "$ROUNDS"); do
        for p in identity gzip; do
            run_wrk empty "$p" "$r"
            run_wrk loaded "$p" "$r"
        done
    done
}

state_line() { # state_line NODE -> objects, tags and bans applied on that node
    printf '%s objects cached, %s distinct tags indexed, %s bans applied' \
        "$(metric "${ADMIN[$1]}" strata_proxy_cache_objects)" \
        "$(metric "${ADMIN[$1]}" strata_proxy_tags_indexed)" \
        "$(metric "${ADMIN[$1]}" strata_proxy_bans_applied_total)"
}

# Warm the hot page (identity and gzip), twice, on both measured nodes.
for _ in 1 2; do
    for n in "$EMPTY_NODE" "$LOADED_NODE"; do
        hcurl -o /dev/null "http://${PUBLIC[$n]}$HOT"
        hcurl -H "Accept-Encoding: gzip" -o /dev/null "http://${PUBLIC[$n]}$HOT"
    done
done
sleep 1
# A node may flush while it starts, before it has heard from its siblings: count from here.
FLUSHES_BEFORE=$(metric "${ADMIN[a]}" strata_proxy_cluster_flushes_total)
EMPTY_FLUSHES_BEFORE=$(metric "${ADMIN[$EMPTY_NODE]}" strata_proxy_cluster_flushes_total)

# ---------------------------------------------------------------------------
# (a) Propagation

log "(a) $PROPAGATE tag bans to node a, one after another, each with ?wait=$WAIT"
wait_quiet
PB0=$(busy_ticks)
PO0=$(own_ticks)
PT0=$(date +%s.%N)
"$BANS_BIN" propagate --admin "${ADMIN[a]}" --secret-file "$WORK/cluster.secret" \
    --count "$PROPAGATE" --wait "$WAIT" >"$WORK/propagate.out" 2>"$WORK/propagate.err" ||
    die "bans propagate failed: $(cat "$WORK/propagate.err")"
PROP_OTHERS=$(other_pct $((($(busy_ticks) - PB0) - ($(own_ticks) - PO0))) "$(awk -v a="$PT0" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')")
cat "$WORK/propagate.out" >&2
PROP_SUMMARY=$(head -n 1 "$WORK/propagate.out")
PROP_RTT=$(awk '/^rtt_ms/ { $1 = ""; print substr($0, 2) }' "$WORK/propagate.out")
mapfile -t PROP_SIBLINGS < <(grep '^sibling=' "$WORK/propagate.out")
declare -A PROP_HIST=()
for n in b c; do
    sum=$(metric "${ADMIN[$n]}" strata_proxy_ban_propagation_seconds_sum)
    cnt=$(metric "${ADMIN[$n]}" strata_proxy_ban_propagation_seconds_count)
    PROP_HIST[$n]=$(awk -v s="$sum" -v c="$cnt" 'BEGIN { if (c > 0) printf "%d bans, mean %.3f ms", c, s * 1000 / c; else print "none" }')
done


log "storing $OBJECTS objects on node a, each with its own Surrogate-Key"
"$FILL_BIN" --target "http://${PUBLIC[a]}" --host "$HOST_HEADER" --count "$OBJECTS" --concurrency 32 \
    --prefix /obj/ --timeout 600s >"$WORK/fill.out" 2>"$WORK/fill.err" || die "fill failed: $(cat "$WORK/fill.err")"
FILL_LINE=$(cat "$WORK/fill.out")
log "fill: $FILL_LINE"
LOOKUP=$(curl -s --max-time 5 "http://${ADMIN[a]}/lookup?url=http%3A%2F%2F$HOST_HEADER%2Fobj%2F7")

log "sending $BANS tag bans that match nothing to node a"
"$BANS_BIN" flood --admin "${ADMIN[a]}" --secret-file "$WORK/cluster.secret" --count "$BANS" --concurrency 4 \
    --prefix nomatch: >"$WORK/flood.out" 2>"$WORK/flood.err" || die "bans flood failed: $(cat "$WORK/flood.err")"
FLOOD_LINE=$(cat "$WORK/flood.out")
log "flood: $FLOOD_LINE"

# Let the siblings catch up, so the measurement does not include broadcasting.
DRAINED=0
for _ in $(seq 1 600); do
    queued=$(curl -s --max-time 2 "http://${ADMIN[a]}/cluster" | grep -o '"queued":[0-9]*' | cut -d: -f2 | tr '\n' ' ')
    if [ "$(wc -w <<<"$queued")" -eq 2 ] && [ "$(tr -d ' 0' <<<"$queued")" = "" ]; then
        DRAINED=1
        break
    fi
    sleep 0.5
done
[ "$DRAINED" = 1 ] || NOTES+=("node a still had bans queued for its siblings after 300 s")
sleep 1
LOADED_STATE=$(state_line "$LOADED_NODE")
EMPTY_STATE=$(state_line "$EMPTY_NODE")
log "(b) hit path: node $EMPTY_NODE (empty): $EMPTY_STATE; node $LOADED_NODE (loaded): $LOADED_STATE"
FLUSHES_A=$(awk -v a="$(metric "${ADMIN[a]}" strata_proxy_cluster_flushes_total)" -v b="$FLUSHES_BEFORE" 'BEGIN { print a - b }')
[ "$FLUSHES_A" = 0 ] || NOTES+=("node a flushed its cache $FLUSHES_A time(s) during the load: the loaded figures may not hold $OBJECTS objects")
flush_reasons() { # flush_reasons ADMIN -> "reason=N, …" of strata_proxy_cluster_flushes_total
    curl -s --max-time 5 "http://$1/metrics" |
        awk '/^strata_proxy_cluster_flushes_total\{/ { match($0, /reason="[a-z]*"/); r = substr($0, RSTART + 8, RLENGTH - 9); out = out (out ? ", " : "") r " " $NF }
             END { print (out ? out : "none") }'
}
FLUSHES_BC="b: $(flush_reasons "${ADMIN[b]}"); c: $(flush_reasons "${ADMIN[c]}")"
OVERFLOWS=$(curl -s --max-time 5 "http://${ADMIN[a]}/cluster" | grep -o '"overflows":[0-9]*' | cut -d: -f2 | awk '{ s += $1 } END { print s + 0 }')
hit_runs
EMPTY_FLUSHES=$(awk -v a="$(metric "${ADMIN[$EMPTY_NODE]}" strata_proxy_cluster_flushes_total)" -v b="$EMPTY_FLUSHES_BEFORE" 'BEGIN { print a - b }')
[ "$EMPTY_FLUSHES" = 0 ] || NOTES+=("node $EMPTY_NODE flushed its cache $EMPTY_FLUSHES time(s) during the runs")
RSS_A=$(awk '/^VmRSS/ { printf "%.1f MiB", $2 / 1024 }' "/proc/${NODE_PID[a]}/status" 2>/dev/null || echo "n/a")

# ---------------------------------------------------------------------------
# Report

median() { tr ' ' '\n' | awk 'NF' | sort -n | awk '{ a[NR] = $1 } END { if (NR == 0) print "n/a"; else if (NR % 2) print a[(NR + 1) / 2]; else printf "%.0f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

version=$("$STRATA_BIN" --version 2>/dev/null || echo "strata-proxy ?")
cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
wrk_version=$( (wrk -v 2>&1 || true) | head -n 1 | awk '{ print $1, $2 }')

{
    echo "# strata-proxy ban benchmark"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs (${cpu:-unknown CPU}), $version, $wrk_version."
    echo "Two identical clusters of three nodes on loopback (a, b, c and x, y, z; each node the others'"
    echo "sibling in its cluster) in front of the bare server (a ${PAGE_SIZE}-byte page, \`Surrogate-Key: obj:PATH"
    echo "grp:N\` per path); everything on the same cores."
    echo
    echo "## (a) Ban propagation"
    echo
    echo "$PROPAGATE tag bans sent to node a one after another, each \`POST /ban?wait=$WAIT\`; the answer"
    echo "comes once both siblings acknowledged. Acknowledgement time per sibling as node a reports it"
    echo "(queueing the ban → the sibling's reply saying it applied it), and the client's round trip."
    echo
    echo "\`$PROP_SUMMARY\`; other processes (and the \`bans\` client) used $PROP_OTHERS % of the CPUs meanwhile."
    echo
    echo "| Measured | p50 ms | p90 ms | p99 ms | max ms |"
    echo "|---|--:|--:|--:|--:|"
    for line in "${PROP_SIBLINGS[@]}" "round-trip $PROP_RTT"; do
        name=$(awk '{ print $1 }' <<<"$line")
        name=${name#sibling=}
        [ "$name" = round-trip ] && name="client round trip (node a's answer)"
        [[ $name == http* ]] && name="ack from $name ($(awk '{ print $2 }' <<<"$line"))"
        vals=$(grep -o 'p50=[^ ]* p90=[^ ]* p99=[^ ]* max=[^ ]*' <<<"$line" | sed 's/p50=//; s/ p90=/ | /; s/ p99=/ | /; s/ max=/ | /')
        echo "| $name | $vals |"
    done
    echo
    echo "Receiving side (\`strata_proxy_ban_propagation_seconds\`: applied on node a → applied here):"
    echo "node b ${PROP_HIST[b]}; node c ${PROP_HIST[c]}."
    echo
    echo "## (b) Hit path with a big tag index and many past bans"
    echo
    echo "\`wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency\` on \`$HOT\`, $ROUNDS rounds; in each round, for each"
    echo "profile (identity, gzip), one run on node $EMPTY_NODE (empty) and, right after it, one on node"
    echo "$LOADED_NODE (loaded). Before each run the script waits for other processes to leave the CPUs"
    echo "idle; a run during which they still took 5 % or more is listed but left out, with its pair."
    echo
    echo "- empty, node $EMPTY_NODE: $EMPTY_STATE."
    echo "- loaded, node $LOADED_NODE: after \`fill\` stored $OBJECTS objects (\`$FILL_LINE\`) and $BANS tag bans"
    echo "  that match nothing were sent (\`$FLOOD_LINE\`), and node a's queues for b and c drained:"
    echo "  $LOADED_STATE. Node a VmRSS $RSS_A. Cache flushes forced by the cluster during the load on node a: $FLUSHES_A;"
    echo "  since start-up, by reason, on $FLUSHES_BC. Overflows of node a's queues for b and c: $OVERFLOWS."
    echo "- \`/lookup\` of \`/obj/7\` on node a: \`$LOOKUP\`"
    echo
    echo "| Profile | pairs | loaded / empty: median of the pairs (min–max) | empty req/s (median) | loaded req/s (median) |"
    echo "|---|--:|--:|--:|--:|"
    for p in identity gzip both; do
        ratios=() es=() ls=()
        for r in $(seq 1 "$ROUNDS"); do
            for q in identity gzip; do
                [ "$p" = both ] || [ "$p" = "$q" ] || continue
                e=${RUN["empty $q $r"]:-}
                l=${RUN["loaded $q $r"]:-}
                [ -n "$e" ] && [ -n "$l" ] && [ "$e" -gt 0 ] || continue
                ratios+=("$(awk -v e="$e" -v l="$l" 'BEGIN { printf "%.3f", l / e }')")
                es+=("$e")
                ls+=("$l")
            done
        done
        if [ "${#ratios[@]}" -eq 0 ]; then
            echo "| $p | 0 | n/a | n/a | n/a |"
            continue
        fi
        rmed=$(printf '%s\n' "${ratios[@]}" | sort -n | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else printf "%.3f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }')
        rlo=$(printf '%s\n' "${ratios[@]}" | sort -n | head -n 1)
        rhi=$(printf '%s\n' "${ratios[@]}" | sort -n | tail -n 1)
        echo "| $p | ${#ratios[@]} | $rmed ($rlo–$rhi) | $(median <<<"${es[*]}") | $(median <<<"${ls[*]}") |"
    done
    echo
    echo "Every run:"
    echo
    echo "| Round | Profile | State | req/s | p50 ms | p99 ms | other processes' CPU % |"
    echo "|--:|---|---|--:|--:|--:|--:|"
    printf '%s\n' "${ROWS[@]}"
    if [ "${#NOTES[@]}" -gt 0 ]; then
        echo
        printf -- '- %s\n' "${NOTES[@]}"
    fi
} >"$WORK/report.md"

mkdir -p "$(dirname "$RESULTS")"
cp "$WORK/report.md" "$RESULTS"
echo
cat "$WORK/report.md"
echo
log "written to $RESULTS"
