#!/usr/bin/env bash
# Strata comment benchmark: comment POST throughput and latency through strata-proxy (comments
# written behind, strata-syncer draining the queue into MySQL) against POSTing the same forms
# straight to PHP, on the same machine, against the same WordPress and MariaDB.
#
#   (1) PHP: `comment-load` POSTs unique comments to the WordPress origin
#       (http://127.0.0.1:8081/wp-comments-post.php, Host 127.0.0.1:8080) for DURATION over
#       CONNECTIONS keep-alive connections;
#   (2) Strata: one strata-proxy with `[comments] enabled = true` and
#       `trusted_proxies = ["127.0.0.1"]` in front of the same origin, and strata-syncer on
#       its queue; the same load, each comment with its own X-Forwarded-For address in
#       2001:db8::/32 so the flood check does not refuse it. After the load, the script waits
#       for the syncer to drain the queue and reads its lag histogram (acceptance by the proxy
#       → commit in MySQL).
#
# The two take turns, ROUNDS times (PHP, then Strata, then PHP…), and the figures are pooled
# over the rounds: on shared cores the machine's speed drifts over minutes, and taking turns
# lets both sides see the same machine. The report also gives the ratio round by round, and
# the CPU time each part spends per comment (from /proc), which depends far less on how the
# closed-loop load meets the hold than throughput does.
#
# Each of Strata's answers is held at least HOLD (5 ms), so CONNECTIONS closed-loop
# connections can make at most CONNECTIONS / HOLD comments a second through it, whatever its
# capacity: 64 connections cap it at 12 800. PHP's rate does not depend on CONNECTIONS once
# it is busy (its 8 workers are). The default, 128 connections (a ceiling of 25 600), is
# enough for Strata's rate to be set by what the machine can do rather than by the hold, as
# PHP's is: throughput against throughput. The report says how near that ceiling Strata
# came. More connections than the machine can serve (256 for the figures in
# benches/README.md) only lengthen the queue: larger batches and a longer lag, not more
# comments a second.
#
# Every comment is unique (text, author, e-mail carry a run tag); they go to POSTS published
# posts open for comments. The benchmark's comments are deleted after each phase (and on any
# exit), and comment_count of those posts recomputed: the site is left as it was.
#
# A measurement printed for people, not a test: the exit status does not depend on the figures.
#
#   benches/comments.sh
#   DURATION=15s CONNECTIONS=32 benches/comments.sh
#
# Environment:
#   DURATION      length of each load phase (default 10s)
#   ROUNDS        how many times PHP, then Strata, take their turn (default 3)
#   CONNECTIONS   keep-alive connections of the load generator (default 128)
#   POSTS         how many posts receive the comments (default 4)
#   HOLD          [comments] hold of the proxy (default 5ms)
#   MAX_HOLD      [comments] max_hold of the proxy (default 200ms)
#   MYSQL_ARGS    arguments of the mysql client for the WordPress database
#                 (default: -h127.0.0.1 -P3306 -ustrata_wp -pstrata_wp strata_wp)
#   RESULTS       where the Markdown report goes (default benches/results/comments.md)
#   SKIP_BUILD=1  do not run cargo build (use the binaries already in target/release)
#   KEEP_WORK=1   keep the temporary work directory (logs, configs, outputs)
#
# Ports (all 127.0.0.1): WordPress origin 8081 (scripts/wordpress.sh), memcached 11211
# (scripts/memcached.sh), MariaDB 3306; strata-proxy 8110 (admin 9110); strata-syncer
# admin 9111.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"
DURATION=$(with_unit "${DURATION:-10s}")
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-128}
POSTS=${POSTS:-4}
HOLD=${HOLD:-5ms}
MAX_HOLD=${MAX_HOLD:-200ms}
RESULTS=${RESULTS:-$ROOT/benches/results/comments.md}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
CARGO=${CARGO:-cargo}
read -r -a MYSQL_ARGS <<<"${MYSQL_ARGS:--h127.0.0.1 -P3306 -ustrata_wp -pstrata_wp strata_wp}"

ORIGIN_ADDR=127.0.0.1:8081
HOST_HEADER=127.0.0.1:8080
MEMCACHED=127.0.0.1:11211
PROXY_ADDR=127.0.0.1:8110
PROXY_ADMIN=127.0.0.1:9110
SYNCER_ADMIN=127.0.0.1:9111
TAG=bench$(date +%s)x$$
PREFIX="strata-bench:$TAG:"


sql() { mysql "${MYSQL_ARGS[@]}" -N -B -e "$1" 2>/dev/null; }

# ---------------------------------------------------------------------------
# Work directory and clean-up: every process this script starts is in PIDS; every comment
# it causes has an e-mail N.C.R.bench-TAGx@example.test (R: the round; x: p for PHP, s for Strata).

WORK=$(mktemp -d /tmp/strata-comments.XXXXXX)
PIDS=()
NOTES=()
POST_IDS=""


cleanup() {
    local pid
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
    delete_comments
    forget_queue
    if [ "${KEEP_WORK:-0}" = 1 ]; then
        log "work directory kept: $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

for tool in curl awk mysql; do
    command -v "$tool" >/dev/null || die "$tool is needed"
done
[[ $CONNECTIONS =~ ^[1-9][0-9]*$ && $POSTS =~ ^[1-9][0-9]*$ && $ROUNDS =~ ^[1-9][0-9]*$ ]] ||
    die "CONNECTIONS, POSTS and ROUNDS must be positive integers"
for addr in "$PROXY_ADDR" "$PROXY_ADMIN" "$SYNCER_ADMIN"; do
    if curl -s -o /dev/null --max-time 1 "http://$addr/"; then
        die "something is already listening on $addr; stop it first"
    fi
done
curl -s -o /dev/null --max-time 5 -H "Host: $HOST_HEADER" "http://$ORIGIN_ADDR/" ||
    die "the WordPress origin does not answer on $ORIGIN_ADDR (bash scripts/wordpress.sh up)"
sql "SELECT 1" >/dev/null || die "MariaDB does not answer (mysql ${MYSQL_ARGS[*]})"

# ---------------------------------------------------------------------------
# Build

STRATA_BIN=$TARGET_DIR/release/strata-proxy
SYNCER_BIN=$TARGET_DIR/release/strata-syncer
LOAD_BIN=$TARGET_DIR/release/comment-load
build_release "$STRATA_BIN" "$SYNCER_BIN" "$LOAD_BIN"

# ---------------------------------------------------------------------------
# The posts: published, no password, open for comments.

POST_IDS=$(sql "SELECT ID FROM wp_posts WHERE post_type = 'post' AND post_status = 'publish'
                AND post_password = '' AND comment_status = 'open' ORDER BY ID LIMIT $POSTS" | paste -sd, -)
[ -n "$POST_IDS" ] || die "no published post open for comments (bash scripts/wordpress.sh up)"
COMMENTS_BEFORE=$(sql "SELECT COUNT(*) FROM wp_comments")
log "posts $POST_IDS; $COMMENTS_BEFORE comments in the database; run tag $TAG"

# landed TAG -> number of comments in MySQL whose e-mail carries TAG
landed() { sql "SELECT COUNT(*) FROM wp_comments WHERE comment_author_email LIKE '%.bench-$1@example.test'"; }
recent() { sql "SELECT COUNT(*) FROM wp_comments WHERE comment_date_gmt >= UTC_TIMESTAMP() - INTERVAL 1 HOUR"; }

# kv FILE KEY -> the value of KEY=value in the comment-load output
kv() { grep -o "\b$2=[^ ]*" "$1" | head -n 1 | cut -d= -f2-; }

# wait_for URL PATTERN SECONDS: waits until the body of URL matches PATTERN.
wait_for() {
    local url=$1 pattern=$2 secs=$3 _
    for _ in $(seq 1 $((secs * 10))); do
        if curl -s --max-time 2 "$url" 2>/dev/null | grep -q -- "$pattern"; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}

metric() { # metric ADMIN NAME [LABEL-FILTER] -> sum of the matching samples
    curl -s --max-time 5 "http://$1/metrics" |
        awk -v name="$2" -v filt="${3:-}" '
            $0 !~ /^#/ { split($1, a, "{"); if (a[1] == name && (filt == "" || index($0, filt))) s += $NF }
            END { printf "%.6g\n", s + 0 }'
}

labels() { # labels ADMIN NAME -> "label N, …" of a labelled counter
    curl -s --max-time 5 "http://$1/metrics" |
        awk -v name="$2" '$0 !~ /^#/ && index($1, name "{") == 1 {
            match($1, /"[^"]*"/); out = out (out ? ", " : "") substr($1, RSTART + 1, RLENGTH - 2) " " $NF }
            END { print (out ? out : "none") }'
}

# quantile ADMIN HISTOGRAM Q -> milliseconds, linearly interpolated inside the bucket (as
# Prometheus's histogram_quantile does), with the bucket's bounds.
quantile() {
    curl -s --max-time 5 "http://$1/metrics" |
        awk -v name="$2_bucket" -v q="$3" '
            index($1, name "{") == 1 { match($1, /le="[^"]*"/); le[n] = substr($1, RSTART + 4, RLENGTH - 5); c[n++] = $NF }
            END {
                if (n == 0 || c[n - 1] == 0) { print "n/a"; exit }
                want = q * c[n - 1]; lo = 0; prev = 0
                for (i = 0; i < n; i++) {
                    if (c[i] >= want) {
                        if (le[i] == "+Inf") { printf "> %.0f (beyond the last bucket)", lo * 1000; exit }
                        v = lo + (le[i] - lo) * (c[i] == prev ? 1 : (want - prev) / (c[i] - prev))
                        printf "%.1f (bucket %g–%g)", v * 1000, lo * 1000, le[i] * 1000; exit
                    }
                    lo = le[i]; prev = c[i]
                }
            }'
}

CPU=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)

# ---------------------------------------------------------------------------
# strata-proxy and strata-syncer, up for the whole run (idle while PHP takes its turn)

(umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$WORK/cluster.secret")
cat >"$WORK/proxy.toml" <<EOF
[server]
listen = "$PROXY_ADDR"
admin_listen = "$PROXY_ADMIN"

[origin]
url = "http://$ORIGIN_ADDR"

[cluster]
node_id = "bench"
secret_file = "cluster.secret"

[comments]
enabled = true
memcached = ["$MEMCACHED"]
key_prefix = "$PREFIX"
hold = "$HOLD"
max_hold = "$MAX_HOLD"
trusted_proxies = ["127.0.0.1"]
EOF
cat >"$WORK/syncer.toml" <<EOF
memcached = ["$MEMCACHED"]
mysql = "mysql://strata_wp:strata_wp@127.0.0.1:3306/strata_wp"
origin = "http://$ORIGIN_ADDR"
key_prefix = "$PREFIX"
admin_listen = "$SYNCER_ADMIN"

[cluster]
siblings = ["http://$PROXY_ADMIN"]
secret_file = "cluster.secret"
EOF
(cd "$WORK" && exec "$STRATA_BIN" --config proxy.toml) >"$WORK/proxy.log" 2>&1 &
PIDS+=($!)
PROXY_PID=$!
(cd "$WORK" && exec "$SYNCER_BIN" --config syncer.toml) >"$WORK/syncer.log" 2>&1 &
PIDS+=($!)
SYNCER_PID=$!
wait_for "http://$PROXY_ADMIN/healthz" ok 20 || die "strata-proxy did not start: $(tail -n 5 "$WORK/proxy.log")"
wait_for "http://$SYNCER_ADMIN/healthz" ok 20 || die "strata-syncer did not start: $(tail -n 5 "$WORK/syncer.log")"
# The proxy queues only once it has read the syncer's settings (published every second).
sleep 2

# ---------------------------------------------------------------------------
# The phases: ROUNDS times PHP, then Strata, each for DURATION. Taking turns, both sides see
# the same machine: on shared cores its speed drifts over minutes, and one long phase each
# would compare two different machines.

# The CPU time each part spends on the comments of a phase: its processes' user + system
# time over the phase (for Strata the load, then the drain), read from /proc.
TICK=$(getconf CLK_TCK)
MARIADB_PIDS=$(pgrep -d ' ' -x mariadbd || true)
MEMCACHED_PIDS=$(pgrep -d ' ' -x memcached || true)
# PHP-FPM and nginx: read at each reading, with their ended children (workers recycled).
php_ticks() {
    # shellcheck disable=SC2046
    cpu_ticks_with_children $(pgrep '^php-fpm' || true) $(pgrep -x nginx || true)
}
# Sums over the rounds: comments in MySQL; CPU ticks of PHP-FPM + nginx and of MariaDB (PHP);
# of the proxy, the syncer, memcached and MariaDB (Strata); of the load generator (each side).
PHP_LANDED=0 STRATA_LANDED=0 STRATA_ACCEPTED=0
PHP_CPU=(0 0 0) STRATA_CPU=(0 0 0 0 0)
DRAIN_SECS=()
# phase_cpu -> the CPU ticks so far of: PHP-FPM + nginx, MariaDB, the proxy, the syncer, memcached
phase_cpu() {
    # shellcheck disable=SC2086
    echo "$(php_ticks) $(cpu_ticks $MARIADB_PIDS) $(cpu_ticks "$PROXY_PID") $(cpu_ticks "$SYNCER_PID") $(cpu_ticks $MEMCACHED_PIDS)"
}

# load SIDE ADDR X [ARG…]: one phase of comment-load against http://ADDR, round $round, tag
# TAG + X; its output in $WORK/SIDE.ROUND.out, its latencies in $WORK/SIDE.ROUND.lat.
load() {
    local side=$1 addr=$2 x=$3
    shift 3
    "$LOAD_BIN" --url "http://$addr/wp-comments-post.php" --host "$HOST_HEADER" --posts "$POST_IDS" \
        --tag "$TAG$x" --round "$round" --connections "$CONNECTIONS" --duration "$DURATION" \
        --latencies "$WORK/$side.$round.lat" "$@" \
        >"$WORK/$side.$round.out" 2>"$WORK/$side.err" || die "comment-load failed: $(cat "$WORK/$side.err")"
}

RECENT_PHP=$(recent)
LOAD_PHP=$(cut -d' ' -f1 /proc/loadavg)
for round in $(seq 1 "$ROUNDS"); do
    log "round $round/$ROUNDS (1) PHP: $CONNECTIONS connections for $DURATION to http://$ORIGIN_ADDR/wp-comments-post.php"
    read -r -a before <<<"$(phase_cpu)"
    load php "$ORIGIN_ADDR" p
    read -r -a after <<<"$(phase_cpu)"
    cat "$WORK/php.$round.out" >&2
    PHP_CPU[0]=$((PHP_CPU[0] + after[0] - before[0]))
    PHP_CPU[1]=$((PHP_CPU[1] + after[1] - before[1]))
    PHP_CPU[2]=$((PHP_CPU[2] + $(kv "$WORK/php.$round.out" cpu_ticks || true) + 0))
    PHP_LANDED=$((PHP_LANDED + $(landed "${TAG}p")))
    delete_comments

    [ "$round" = 1 ] && RECENT_STRATA=$(recent) && LOAD_STRATA=$(cut -d' ' -f1 /proc/loadavg)
    log "round $round/$ROUNDS (2) Strata: $CONNECTIONS connections for $DURATION to http://$PROXY_ADDR/wp-comments-post.php"
    read -r -a before <<<"$(phase_cpu)"
    load strata "$PROXY_ADDR" s --forwarded-for
    cat "$WORK/strata.$round.out" >&2
    DRAIN_START=$(date +%s.%N)
    DRAINED=0
    for _ in $(seq 1 1200); do
        if [ "$(metric "$SYNCER_ADMIN" strata_syncer_queue_depth)" = 0 ]; then
            DRAINED=1
            break
        fi
        sleep 0.1
    done
    read -r -a after <<<"$(phase_cpu)"
    DRAIN_SECS+=("$(awk -v a="$DRAIN_START" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')")
    [ "$DRAINED" = 1 ] || NOTES+=("round $round: the syncer had not drained its queue 120 s after the load stopped")
    for i in 0 1 2; do STRATA_CPU[i]=$((STRATA_CPU[i] + after[i + 2] - before[i + 2])); done
    STRATA_CPU[3]=$((STRATA_CPU[3] + after[1] - before[1]))
    STRATA_CPU[4]=$((STRATA_CPU[4] + $(kv "$WORK/strata.$round.out" cpu_ticks || true) + 0))
    sleep 0.5
    STRATA_LANDED=$((STRATA_LANDED + $(landed "${TAG}s")))
    STRATA_ACCEPTED=$((STRATA_ACCEPTED + $(kv "$WORK/strata.$round.out" 302_comment) + $(kv "$WORK/strata.$round.out" 302_post)))
    delete_comments
done

LAG_P50=$(quantile "$SYNCER_ADMIN" strata_syncer_lag_seconds 0.5)
LAG_P99=$(quantile "$SYNCER_ADMIN" strata_syncer_lag_seconds 0.99)
LAG_COUNT=$(metric "$SYNCER_ADMIN" strata_syncer_lag_seconds_count)
LAG_SUM=$(metric "$SYNCER_ADMIN" strata_syncer_lag_seconds_sum)
LAG_MEAN=$(awk -v s="$LAG_SUM" -v c="$LAG_COUNT" 'BEGIN { if (c > 0) printf "%.1f", s * 1000 / c; else print "n/a" }')
BATCH_MEAN=$(awk -v s="$(metric "$SYNCER_ADMIN" strata_syncer_batch_size_sum)" \
    -v c="$(metric "$SYNCER_ADMIN" strata_syncer_batch_size_count)" 'BEGIN { if (c > 0) printf "%.1f", s / c; else print "n/a" }')
PROXY_REASONS=$(labels "$PROXY_ADMIN" strata_proxy_comments_total)
SYNCER_OUTCOMES=$(labels "$SYNCER_ADMIN" strata_syncer_comments_total)
SYNCER_REJECTIONS=$(labels "$SYNCER_ADMIN" strata_syncer_rejections_total)
FLOOD_CHECKS=$(labels "$SYNCER_ADMIN" strata_syncer_flood_checks_total)
PAIR_CHECKS=$(labels "$SYNCER_ADMIN" strata_syncer_pair_checks_total)
JUDGED_AHEAD=$(labels "$SYNCER_ADMIN" strata_syncer_judged_ahead_total)
STEPS=""
for step in fetch transaction commit publish; do
    STEPS+="${STEPS:+, }$step $(awk -v s="$(metric "$SYNCER_ADMIN" strata_syncer_step_seconds_sum "step=\"$step\"")" \
        -v c="$(metric "$SYNCER_ADMIN" strata_syncer_step_seconds_count "step=\"$step\"")" \
        'BEGIN { if (c > 0) printf "%.2f", s * 1000 / c; else print "n/a" }')"
done
curl -s --max-time 5 "http://$SYNCER_ADMIN/metrics" >"$WORK/syncer.metrics" || true
curl -s --max-time 5 "http://$PROXY_ADMIN/metrics" >"$WORK/proxy.metrics" || true
for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
PIDS=()
delete_comments
forget_queue
[ "$(sql "SELECT COUNT(*) FROM wp_comments")" = "$COMMENTS_BEFORE" ] ||
    NOTES+=("the comment table did not return to $COMMENTS_BEFORE rows (other processes may be writing comments)")

# ---------------------------------------------------------------------------
# Report

# side_total SIDE KEY -> KEY summed over the rounds of SIDE (php or strata)
side_total() {
    local r total=0
    for r in $(seq 1 "$ROUNDS"); do total=$(awk -v t="$total" -v v="$(kv "$WORK/$1.$r.out" "$2")" 'BEGIN { print t + v }'); done
    echo "$total"
}
# side_rps SIDE -> requests a second over all the rounds of SIDE
side_rps() { awk -v n="$(side_total "$1" requests)" -v s="$(side_total "$1" seconds)" 'BEGIN { if (s > 0) printf "%.1f", n / s; else print 0 }'; }
# side_latency SIDE P -> the P-th percentile, in ms, of the latencies of all rounds of SIDE
side_latency() {
    cat "$WORK/$1".*.lat | sort -n | awk -v p="$2" '{ v[NR] = $1 }
        END { if (NR == 0) { print "n/a"; exit } i = int(p / 100 * (NR - 1) + 0.5) + 1; printf "%.2f", v[i] / 1000 }'
}
PHP_RPS=$(side_rps php)
STRATA_RPS=$(side_rps strata)
RATIO=$(awk -v s="$STRATA_RPS" -v p="$PHP_RPS" 'BEGIN { if (p > 0) printf "%.1f", s / p; else print "n/a" }')
ROUND_RATIOS=""
for r in $(seq 1 "$ROUNDS"); do
    ROUND_RATIOS+="${ROUND_RATIOS:+, }$(awk -v s="$(kv "$WORK/strata.$r.out" rps)" -v p="$(kv "$WORK/php.$r.out" rps)" \
        'BEGIN { if (p > 0) printf "%.1f×", s / p; else print "n/a" }')"
done
LAG_P99_MS=$(awk '{ print $1 }' <<<"$LAG_P99")
# The most the closed loop allows through Strata: every connection waits at least HOLD.
HOLD_SECONDS=$(exact_seconds "$HOLD")
CEILING=$(awk -v c="$CONNECTIONS" -v h="$HOLD_SECONDS" -v s="$STRATA_RPS" 'BEGIN {
    if (h > 0) printf "%.0f req/s; Strata reached %.0f %% of it", c / h, 100 * s * h / c; else print "none (no hold)" }')
GOAL_RPS=$(awk -v r="$RATIO" 'BEGIN { print (r != "n/a" && r >= 50) ? "met" : "not met" }')
GOAL_LAG=$(awk -v l="$LAG_P99_MS" 'BEGIN { print (l ~ /^[0-9.]+$/ && l <= 15) ? "met" : "not met" }')
[ "$STRATA_LANDED" = "$STRATA_ACCEPTED" ] ||
    NOTES+=("Strata answered $STRATA_ACCEPTED comments with a 302 but $STRATA_LANDED are in MySQL")

# per_comment TICKS COMMENTS -> microseconds of CPU per comment
per_comment() { awk -v t="$1" -v n="$2" -v hz="$TICK" 'BEGIN { if (n > 0) printf "%.0f", t * 1e6 / hz / n; else print "n/a" }'; }
PHP_CPU_ALL=$((PHP_CPU[0] + PHP_CPU[1] + PHP_CPU[2]))
STRATA_CPU_ALL=$((STRATA_CPU[0] + STRATA_CPU[1] + STRATA_CPU[2] + STRATA_CPU[3] + STRATA_CPU[4]))

row() { # row NAME SIDE LANDED
    local other errors r
    other=$(for r in $(seq 1 "$ROUNDS"); do kv "$WORK/$2.$r.out" other | tr ',' '\n'; done |
        awk -F: 'NF == 2 { c[$1] += $2 } END { for (k in c) printf "%s%s:%d", (n++ ? "," : ""), k, c[k] }')
    errors=$(side_total "$2" errors)
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$1" "$(side_total "$2" requests)" "$(side_rps "$2")" \
        "$(side_latency "$2" 50)" "$(side_latency "$2" 99)" "$(side_total "$2" 302_comment)" "$(side_total "$2" 302_post)" \
        "$other$( [ "$errors" != 0 ] && echo " errors:$errors")" "$3"
}

{
    echo "# Comment POST benchmark"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs (${CPU:-unknown CPU}), release builds."
    echo "\`comment-load\`: $CONNECTIONS keep-alive connections, $ROUNDS rounds of $DURATION to PHP then $DURATION through"
    echo "Strata (figures over all rounds), every comment unique"
    echo "(text, author, e-mail), on posts $POST_IDS; load generator, proxy, syncer, PHP-FPM, nginx, MariaDB and"
    echo "memcached all on the same cores. Through Strata each comment has its own \`X-Forwarded-For\` address"
    echo "in 2001:db8::/32 (\`trusted_proxies = [\"127.0.0.1\"]\`); proxy \`hold = \"$HOLD\"\`, \`max_hold = \"$MAX_HOLD\"\`;"
    echo "syncer defaults (5 ms interval, flood check on). PHP's own flood check is off on this site (mu-plugin)."
    echo
    echo "| Path | requests | req/s | p50 ms | p99 ms | 302 to the comment | 302 to the post | other statuses | comments in MySQL |"
    echo "|---|--:|--:|--:|--:|--:|--:|---|--:|"
    row "PHP (\`:8081/wp-comments-post.php\`)" php "$PHP_LANDED"
    row "Strata (proxy + syncer)" strata "$STRATA_LANDED"
    echo
    echo "- Throughput, Strata / PHP: **${RATIO}×** (goal ≥ 50×: **$GOAL_RPS**); round by round: $ROUND_RATIOS."
    echo "  Ceiling set by the hold at this concurrency ($CONNECTIONS connections ÷ \`hold\` $HOLD): $CEILING."
    echo "- Syncer lag (accepted by the proxy → committed), \`strata_syncer_lag_seconds\` over $LAG_COUNT comments:"
    echo "  p50 $LAG_P50 ms, p99 **$LAG_P99 ms**, mean $LAG_MEAN ms (goal p99 ≤ 15 ms: **$GOAL_LAG**)."
    echo "  Mean batch $BATCH_MEAN records; queue drained $(IFS=/; echo "${DRAIN_SECS[*]}") s after each round's load stopped."
    echo "- Syncer steps of a batch, mean ms (\`strata_syncer_step_seconds\`): $STEPS."
    echo "- CPU time per comment, µs (user + system time of each part over the phase, load and drain,"
    echo "  ÷ the comments in MySQL): Strata: proxy $(per_comment "${STRATA_CPU[0]}" "$STRATA_LANDED"),"
    echo "  syncer $(per_comment "${STRATA_CPU[1]}" "$STRATA_LANDED"), memcached $(per_comment "${STRATA_CPU[2]}" "$STRATA_LANDED"),"
    echo "  MariaDB $(per_comment "${STRATA_CPU[3]}" "$STRATA_LANDED"), load generator $(per_comment "${STRATA_CPU[4]}" "$STRATA_LANDED");"
    echo "  **$(per_comment "$STRATA_CPU_ALL" "$STRATA_LANDED") in all**. PHP: PHP-FPM and nginx $(per_comment "${PHP_CPU[0]}" "$PHP_LANDED"),"
    echo "  MariaDB $(per_comment "${PHP_CPU[1]}" "$PHP_LANDED"), load generator $(per_comment "${PHP_CPU[2]}" "$PHP_LANDED");"
    echo "  **$(per_comment "$PHP_CPU_ALL" "$PHP_LANDED") in all**: $(awk -v p="$PHP_CPU_ALL" -v n="$PHP_LANDED" \
        -v s="$STRATA_CPU_ALL" -v m="$STRATA_LANDED" 'BEGIN { if (n > 0 && s > 0) printf "%.0f", (p / n) / (s / m); else print "n/a" }')× Strata's."
    echo "- Comments of the last hour in the table when the first phases started (the flood check reads them):"
    echo "  PHP $RECENT_PHP, Strata $RECENT_STRATA. Load average (1 min) then: PHP $LOAD_PHP,"
    echo "  Strata $LOAD_STRATA (other work on the machine shares the same cores)."
    echo "- Proxy \`strata_proxy_comments_total\`: $PROXY_REASONS."
    echo "- Syncer \`strata_syncer_comments_total\`: $SYNCER_OUTCOMES; rejections: $SYNCER_REJECTIONS;"
    echo "  flood checks answered by (\`strata_syncer_flood_checks_total\`): $FLOOD_CHECKS;"
    echo "  batches whose comments were compared with each other by (\`strata_syncer_pair_checks_total\`): $PAIR_CHECKS;"
    echo "  batches judged ahead of their reads (\`strata_syncer_judged_ahead_total\`): $JUDGED_AHEAD."
    echo "- A \"302 to the post\" is the proxy's answer when no verdict came within \`max_hold\`: the comment"
    echo "  was queued and landed later. All benchmark comments were deleted afterwards and"
    echo "  \`comment_count\` of the posts recomputed."
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
