#!/usr/bin/env bash
# Strata full-stack benchmark: a mixed load of page GETs and comment POSTs on a cluster of
# NODES caches in front of the same WordPress, with a read-your-writes check after every
# accepted comment, run twice in one go:
#
#   (1) Strata: NODES strata-proxy nodes as one cluster (each lists the others' admin
#       listeners as siblings, one secret file), comments written behind (memcached queue,
#       `trusted_proxies = ["127.0.0.1"]`, hold HOLD) and one strata-syncer that drains the
#       queue into MySQL and sends its bans to the nodes' admin listeners;
#   (2) Varnish: NODES varnishd 7 instances (benches/config/stack.vcl: GETs cached, a POST
#       passed to PHP and banned on its own node) and, for this phase only, a mu-plugin in
#       WordPress (benches/config/stack-purge.php) that sends a BAN to every Varnish node on
#       `comment_post`, as a purge plugin does for a Varnish cluster.
#
#   load generator (stack-load run) ──round-robin per request──▶ node 1 … node NODES
#                                                                    │
#                           WordPress origin 127.0.0.1:8081 (nginx + php-fpm) + MariaDB
#
# `stack-load` keeps CONNECTIONS clients in a closed loop for DURATION per system; each
# request goes to the next node. POST_SHARE of the requests are comment POSTs (unique author,
# e-mail, text and X-Forwarded-For) to a random open post, the rest GETs cycling over every
# published post (Accept-Encoding: gzip). When a POST is answered 302 to `…#comment-ID`, the
# same client GETs that post through the next node (no cookies) and the page must show
# `id="comment-ID"`: a page without it is a read-your-writes violation. Caches are warmed
# (every path on every node) before each phase.
#
# The report (RESULTS, Markdown) has per system GET and POST req/s, violations, errors and
# p50/p99 per request kind, and Strata/Varnish ratios; the plot (RESULTS with .svg) shows
# GET/s and POST/s over time for both systems.
#
# The benchmark's comments (e-mails *.bench-TAG?@example.test) and their comment meta are
# deleted after each phase and on any exit, and the touched posts' comment_count recomputed;
# site options the comments need (moderation off and the like) are set for the run only and
# restored; the mu-plugin is removed. The count of comments is checked before and after.
#
# A measurement printed for people, not a test: the exit status does not depend on the figures.
# Take the shared benchmark lock so that benchmarks do not overlap:
#
#   flock /tmp/bench.lock benches/stack.sh
#   DURATION=10s NODES=3 flock /tmp/bench.lock benches/stack.sh
#
# Environment:
#   NODES         cache nodes per system, 2 to 8 (default 2)
#   DURATION      load time per system (default 20s)
#   CONNECTIONS   clients of the closed loop; each has a keep-alive connection per node (default 32)
#   POST_SHARE    fraction of the requests that are comment POSTs (default 0.01)
#   MAX_REQUESTS  most requests per system, whatever DURATION (default 5000000)
#   HOLD          [comments] hold of the proxies (default 5ms)
#   MAX_HOLD      [comments] max_hold of the proxies (default 200ms)
#   MYSQL_ARGS    arguments of the mysql client for the WordPress database
#                 (default: -h127.0.0.1 -P3306 -ustrata_wp -pstrata_wp strata_wp)
#   RESULTS       the Markdown report (default benches/results/stack.md); the plot goes next
#                 to it with the extension .svg
#   SKIP_BUILD=1  do not run cargo build (use the binaries already in target/release)
#   KEEP_WORK=1   keep the temporary work directory (logs, configs, outputs)
#
# Ports (all 127.0.0.1): WordPress origin 8081 (scripts/wordpress.sh), memcached 11211
# (scripts/memcached.sh; this run's keys under its own prefix), MariaDB 3306;
# strata-proxy node i on 821i (admin 921i), strata-syncer admin 9220; Varnish node i on 823i.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"
NODES=${NODES:-2}
DURATION=${DURATION:-20s}
CONNECTIONS=${CONNECTIONS:-32}
POST_SHARE=${POST_SHARE:-0.01}
MAX_REQUESTS=${MAX_REQUESTS:-5000000}
HOLD=${HOLD:-5ms}
MAX_HOLD=${MAX_HOLD:-200ms}
RESULTS=${RESULTS:-$ROOT/benches/results/stack.md}
PLOT=${RESULTS%.md}.svg
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
CARGO=${CARGO:-cargo}
read -r -a MYSQL_ARGS <<<"${MYSQL_ARGS:--h127.0.0.1 -P3306 -ustrata_wp -pstrata_wp strata_wp}"

ORIGIN_ADDR=127.0.0.1:8081
HOST_HEADER=127.0.0.1:8080
MEMCACHED=127.0.0.1:11211
SYNCER_ADMIN=127.0.0.1:9220
MU_PLUGINS=/var/lib/wordpress/wp-content/mu-plugins
MU_PLUGIN=$MU_PLUGINS/strata-bench-stack-purge.php
TAG=stack$(date +%s)x$$
PREFIX="strata-stack:$TAG:"


sql() { mysql "${MYSQL_ARGS[@]}" -N -B -e "$1" 2>/dev/null; }

[[ $NODES =~ ^[2-8]$ ]] || die "NODES must be 2 to 8 (the read-your-writes check reads through another node)"
[[ $CONNECTIONS =~ ^[1-9][0-9]*$ && $MAX_REQUESTS =~ ^[1-9][0-9]*$ ]] ||
    die "CONNECTIONS and MAX_REQUESTS must be positive integers"
[[ $DURATION =~ ^[1-9][0-9]*(s|m)?$ ]] || die "DURATION must be like 20s or 2m"
awk -v s="$POST_SHARE" 'BEGIN { exit !(s ~ /^(0|1|0?\.[0-9]+)$/ && s >= 0 && s <= 1) }' ||
    die "POST_SHARE must be a fraction between 0 and 1 (e.g. 0.01)"

STRATA_ADDR=() STRATA_ADMIN=() VARNISH_ADDR=()
for i in $(seq 1 "$NODES"); do
    STRATA_ADDR+=("127.0.0.1:$((8210 + i))")
    STRATA_ADMIN+=("127.0.0.1:$((9210 + i))")
    VARNISH_ADDR+=("127.0.0.1:$((8230 + i))")
done
join() { # join SEP ITEM… -> the items separated by SEP
    local sep=$1 out=""
    shift
    for x in "$@"; do out+="${out:+$sep}$x"; done
    printf '%s' "$out"
}

# ---------------------------------------------------------------------------
# Work directory and clean-up: every process this script starts is in PIDS; every comment
# it causes has an e-mail N.C.bench-TAGx@example.test (x: s for Strata, v for Varnish).

WORK=$(mktemp -d /tmp/strata-stack.XXXXXX)
# varnishd's worker runs unprivileged: it must traverse the directory.
chmod 755 "$WORK"
PIDS=()
NOTES=()
POST_IDS=""
declare -A OPTION_SAVED=() # wp_options name -> value before this run changed it


stop_all() {
    local pid
    for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
    PIDS=()
}

restore_options() {
    local name
    for name in "${!OPTION_SAVED[@]}"; do
        sql "UPDATE wp_options SET option_value = '${OPTION_SAVED[$name]}' WHERE option_name = '$name';" ||
            log "could not restore the option $name to '${OPTION_SAVED[$name]}'"
    done
    OPTION_SAVED=()
}

cleanup() {
    trap - EXIT INT TERM
    [ -t 2 ] && printf '\n' >&2
    rm -f "$MU_PLUGIN"
    stop_all
    delete_comments
    forget_queue
    restore_options
    if [ "${KEEP_WORK:-0}" = 1 ]; then
        log "work directory kept: $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------
# Tools, build, origin

ensure_tools varnishd=varnish varnishstat=varnish curl=curl mysql=mariadb-client awk=gawk
export PATH=$PATH:/usr/sbin:/sbin
[ "$(id -u)" -eq 0 ] || die "run as root: the origin scripts and the mu-plugin need it"

for addr in "${STRATA_ADDR[@]}" "${STRATA_ADMIN[@]}" "${VARNISH_ADDR[@]}" "$SYNCER_ADMIN"; do
    port_busy "$addr" && die "something is already listening on $addr; stop it first"
done

STRATA_BIN=$TARGET_DIR/release/strata-proxy
SYNCER_BIN=$TARGET_DIR/release/strata-syncer
LOAD_BIN=$TARGET_DIR/release/stack-load
build_release "$STRATA_BIN" "$SYNCER_BIN" "$LOAD_BIN"

log "bringing up the WordPress origin (scripts/wordpress.sh) and memcached (scripts/memcached.sh)"
bash "$ROOT/scripts/wordpress.sh" >"$WORK/wordpress.log" 2>&1 || {
    tail -n 30 "$WORK/wordpress.log" >&2
    die "scripts/wordpress.sh failed"
}
bash "$ROOT/scripts/memcached.sh" >"$WORK/memcached.log" 2>&1 || {
    tail -n 30 "$WORK/memcached.log" >&2
    die "scripts/memcached.sh failed"
}
sql "SELECT 1" >/dev/null || die "MariaDB does not answer (mysql ${MYSQL_ARGS[*]})"
[ -d "$MU_PLUGINS" ] || die "$MU_PLUGINS not found (scripts/wordpress.sh creates it)"

# ---------------------------------------------------------------------------
# The site: paths, posts, options, comments

bash "$ROOT/scripts/wordpress-urls.sh" 2>"$WORK/urls.err" | grep '^/' >"$WORK/paths.txt" || true
PATH_COUNT=$(wc -l <"$WORK/paths.txt")
[ "$PATH_COUNT" -gt 0 ] || die "scripts/wordpress-urls.sh printed no paths: $(cat "$WORK/urls.err")"
POST_IDS=$(sql "SELECT ID FROM wp_posts WHERE post_type = 'post' AND post_status = 'publish'
                AND post_password = '' AND comment_status = 'open' ORDER BY ID" | paste -sd, -)
[ -n "$POST_IDS" ] || die "no published post open for comments (bash scripts/wordpress.sh up)"
POST_COUNT=$(tr ',' '\n' <<<"$POST_IDS" | wc -l)

# Comments left by an earlier run that was killed before its clean-up (only this benchmark
# uses e-mails *.bench-stack…@example.test).
LEFTOVER=$(sql "SELECT COUNT(*) FROM wp_comments WHERE comment_author_email LIKE '%.bench-stack%@example.test'")
if [ "${LEFTOVER:-0}" != 0 ]; then
    log "deleting $LEFTOVER comments left by an earlier run of this benchmark"
    (TAG=stack% && delete_comments)
fi
COMMENTS_BEFORE=$(sql "SELECT COUNT(*) FROM wp_comments")

# The options that decide whether an anonymous, first-time commenter's comment is approved
# at once and the post open for it; set for this run only (restored on exit).
declare -A OPTION_WANT=([comment_moderation]=0 [comment_previously_approved]=0
    [comment_registration]=0 [close_comments_for_old_posts]=0)
OPTION_LINE=()
for name in "${!OPTION_WANT[@]}"; do
    value=$(sql "SELECT option_value FROM wp_options WHERE option_name = '$name'")
    if [ "$value" != "${OPTION_WANT[$name]}" ]; then
        OPTION_SAVED[$name]=$value
        sql "UPDATE wp_options SET option_value = '${OPTION_WANT[$name]}' WHERE option_name = '$name';" ||
            die "could not set the option $name"
        OPTION_LINE+=("$name $value → ${OPTION_WANT[$name]} (for the run)")
    else
        OPTION_LINE+=("$name $value")
    fi
done
log "$PATH_COUNT paths, $POST_COUNT posts open for comments, $COMMENTS_BEFORE comments; run tag $TAG"
log "options: $(join ', ' "${OPTION_LINE[@]}")"

# landed SUFFIX -> number of comments in MySQL of that phase
landed() { sql "SELECT COUNT(*) FROM wp_comments WHERE comment_author_email LIKE '%.bench-${TAG}$1@example.test'"; }

# kv FILE KEY -> the value of KEY=value in the stack-load output
kv() { sed -n "s/^$2=//p" "$1" | head -n 1; }

# wait_for URL PATTERN SECONDS: waits until the body of URL matches PATTERN.
wait_for() {
    local url=$1 pattern=$2 secs=$3 _
    for _ in $(seq 1 $((secs * 10))); do
        if curl -s --max-time 2 -H "Host: $HOST_HEADER" "$url" 2>/dev/null | grep -q -- "$pattern"; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}

# metric NAME [LABEL-FILTER] ADMIN… -> sum of the matching samples over the admin listeners
metric() {
    local name=$1 filt=$2 a
    shift 2
    for a in "$@"; do curl -s --max-time 5 "http://$a/metrics"; done |
        awk -v name="$name" -v filt="$filt" '
            $0 !~ /^#/ { split($1, a, "{"); if (a[1] == name && (filt == "" || index($0, filt))) s += $NF }
            END { if (s == int(s)) printf "%d\n", s; else printf "%.6f\n", s }'
}

# labels NAME ADMIN… -> "label N, …" of a labelled counter, summed over the admin listeners
labels() {
    local name=$1 a
    shift
    for a in "$@"; do curl -s --max-time 5 "http://$a/metrics"; done |
        awk -v name="$name" '$0 !~ /^#/ && index($1, name "{") == 1 {
            match($1, /"[^"]*"/); k = substr($1, RSTART + 1, RLENGTH - 2); if (!(k in s)) o[n++] = k; s[k] += $NF }
            END { for (i = 0; i < n; i++) if (s[o[i]] > 0) out = out (out ? ", " : "") o[i] " " s[o[i]]
                  print (out ? out : "none") }'
}

# run_load SYSTEM SUFFIX NODE-ADDR…: warms the nodes, then the load with its progress line.
run_load() {
    local system=$1 suffix=$2
    shift 2
    local nodes
    nodes=$(join , "$@")
    log "$system: warming $PATH_COUNT paths on $# nodes"
    "$LOAD_BIN" warm --nodes "$nodes" --host "$HOST_HEADER" --paths "$WORK/paths.txt" --concurrency 4 \
        >"$WORK/$system-warm.out" 2>"$WORK/$system-warm.err" || die "stack-load warm failed: $(cat "$WORK/$system-warm.err")"
    log "$system: $(cat "$WORK/$system-warm.out")"
    LOADAVG[$system]=$(cut -d' ' -f1 /proc/loadavg)
    log "$system: $CONNECTIONS clients for $DURATION, $POST_SHARE of the requests comment POSTs"
    "$LOAD_BIN" run --system "$system" --nodes "$nodes" --host "$HOST_HEADER" --paths "$WORK/paths.txt" \
        --posts "$POST_IDS" --tag "${TAG}$suffix" --connections "$CONNECTIONS" --duration "$DURATION" \
        --post-share "$POST_SHARE" --max-requests "$MAX_REQUESTS" --series "$WORK/$system.csv" \
        >"$WORK/$system.out" || die "stack-load run failed (see above)"
    log "$system: $(kv "$WORK/$system.out" get_rps) GET/s, $(kv "$WORK/$system.out" post_rps) POST/s," \
        "$(kv "$WORK/$system.out" violations) violations, $(kv "$WORK/$system.out" errors) errors"
}

declare -A LOADAVG=() LANDED=() ORIGIN_FETCHES=() EXTRA=()
CPU=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)

# ---------------------------------------------------------------------------
# (1) Strata: NODES proxies as one cluster, the syncer

(umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$WORK/cluster.secret")
toml_list() { # toml_list URL… -> ["URL", …]
    local out=() x
    for x in "$@"; do out+=("\"$x\""); done
    printf '[%s]' "$(join ', ' "${out[@]}")"
}
for i in $(seq 1 "$NODES"); do
    others=()
    for j in $(seq 1 "$NODES"); do
        [ "$j" = "$i" ] || others+=("http://${STRATA_ADMIN[$((j - 1))]}")
    done
    cat >"$WORK/strata-$i.toml" <<EOF
[server]
listen = "${STRATA_ADDR[$((i - 1))]}"
admin_listen = "${STRATA_ADMIN[$((i - 1))]}"

[origin]
url = "http://$ORIGIN_ADDR"

[cache]
capacity = "512MiB"
default_ttl = "1h"
grace = "1h"

[cluster]
node_id = "stack-$i"
siblings = $(toml_list "${others[@]}")
secret_file = "cluster.secret"

[comments]
enabled = true
memcached = ["$MEMCACHED"]
key_prefix = "$PREFIX"
hold = "$HOLD"
max_hold = "$MAX_HOLD"
trusted_proxies = ["127.0.0.1"]
EOF
done
admin_urls=()
for a in "${STRATA_ADMIN[@]}"; do admin_urls+=("http://$a"); done
cat >"$WORK/syncer.toml" <<EOF
memcached = ["$MEMCACHED"]
mysql = "mysql://strata_wp:strata_wp@127.0.0.1:3306/strata_wp"
origin = "http://$ORIGIN_ADDR"
key_prefix = "$PREFIX"
admin_listen = "$SYNCER_ADMIN"

[cluster]
siblings = $(toml_list "${admin_urls[@]}")
secret_file = "cluster.secret"
EOF

log "(1) Strata: $NODES strata-proxy nodes on $(join ', ' "${STRATA_ADDR[@]}") and strata-syncer"
for i in $(seq 1 "$NODES"); do
    (cd "$WORK" && exec "$STRATA_BIN" --config "strata-$i.toml") >"$WORK/strata-$i.log" 2>&1 &
    PIDS+=($!)
done
(cd "$WORK" && exec "$SYNCER_BIN" --config syncer.toml) >"$WORK/syncer.log" 2>&1 &
PIDS+=($!)
for i in $(seq 1 "$NODES"); do
    wait_for "http://${STRATA_ADMIN[$((i - 1))]}/healthz" ok 20 ||
        die "strata-proxy node $i did not start: $(tail -n 5 "$WORK/strata-$i.log")"
done
wait_for "http://$SYNCER_ADMIN/healthz" ok 20 || die "strata-syncer did not start: $(tail -n 5 "$WORK/syncer.log")"
for i in $(seq 1 "$NODES"); do
    wait_for "http://${STRATA_ADMIN[$((i - 1))]}/cluster" '"confirmed":true' 20 ||
        die "node $i did not confirm its siblings: $(curl -s "http://${STRATA_ADMIN[$((i - 1))]}/cluster")"
done
# The proxies queue comments only once they have read the syncer's settings (every second).
sleep 2

run_load strata s "${STRATA_ADDR[@]}"
# Let the syncer drain what is still queued (comments answered "302 to the post").
for _ in $(seq 1 600); do
    [ "$(metric strata_syncer_queue_depth "" "$SYNCER_ADMIN")" = 0 ] && break
    sleep 0.1
done
sleep 0.5
LANDED[strata]=$(landed s)
ORIGIN_FETCHES[strata]=$(metric strata_origin_requests_total "" "${STRATA_ADMIN[@]}")
EXTRA[strata]="proxy \`strata_requests_total\` (all nodes): $(labels strata_requests_total "${STRATA_ADMIN[@]}");"
EXTRA[strata]+=" \`strata_comments_total\`: $(labels strata_comments_total "${STRATA_ADMIN[@]}");"
EXTRA[strata]+=" cache flushes forced by the cluster: $(labels strata_cluster_flushes_total "${STRATA_ADMIN[@]}");"
EXTRA[strata]+=" syncer \`strata_syncer_comments_total\`: $(labels strata_syncer_comments_total "$SYNCER_ADMIN"),"
EXTRA[strata]+=" bans sent $(metric strata_syncer_bans_sent_total "" "$SYNCER_ADMIN");"
mean_ms() { # mean_ms HISTOGRAM ADMIN… -> mean in ms of a seconds histogram
    local name=$1
    shift
    awk -v s="$(metric "${name}_sum" "" "$@")" -v c="$(metric "${name}_count" "" "$@")" \
        'BEGIN { if (c > 0) printf "%.1f ms over %d", s * 1000 / c, c; else print "n/a" }'
}
EXTRA[strata]+=" mean syncer lag (accepted → committed) $(mean_ms strata_syncer_lag_seconds "$SYNCER_ADMIN"),"
EXTRA[strata]+=" mean verdict wait on the proxies $(mean_ms strata_comment_verdict_seconds "${STRATA_ADMIN[@]}")"
stop_all
delete_comments
forget_queue

# ---------------------------------------------------------------------------
# (2) Varnish: NODES varnishd, PHP takes the comments, the purge mu-plugin bans every node

log "(2) Varnish: $NODES varnishd on $(join ', ' "${VARNISH_ADDR[@]}"), purge mu-plugin in $MU_PLUGINS"
varnish_list=()
for a in "${VARNISH_ADDR[@]}"; do varnish_list+=("'$a'"); done
sed "s|^    \$nodes = \[\];|    \$nodes = [$(join ', ' "${varnish_list[@]}")];|" "$ROOT/benches/config/stack-purge.php" \
    >"$WORK/stack-purge.php"
grep -q "'${VARNISH_ADDR[0]}'" "$WORK/stack-purge.php" || die "could not fill in the node list of the purge mu-plugin"
install -m 0644 "$WORK/stack-purge.php" "$MU_PLUGIN"
cp "$ROOT/benches/config/stack.vcl" "$WORK/stack.vcl"
for i in $(seq 1 "$NODES"); do
    mkdir -p "$WORK/varnish-$i"
    varnishd -F -n "$WORK/varnish-$i" -a "${VARNISH_ADDR[$((i - 1))]}" -T none -f "$WORK/stack.vcl" \
        -s malloc,512m >"$WORK/varnish-$i.log" 2>&1 &
    PIDS+=($!)
done
for i in $(seq 1 "$NODES"); do
    wait_for "http://${VARNISH_ADDR[$((i - 1))]}/" "</html>" 30 ||
        die "varnishd $i did not start: $(tail -n 5 "$WORK/varnish-$i.log")"
done
# The mu-plugin must reach every node: a BAN through WordPress's HTTP API would fail quietly.
code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -X BAN -H "X-Ban-Host: $HOST_HEADER" \
    "http://${VARNISH_ADDR[0]}/") || code=000
[ "$code" = 200 ] || die "varnishd 1 answered $code to a BAN from 127.0.0.1"

PHP_LOG=/var/log/strata/php-fpm.log
PHP_LOG_LINES=$(wc -l <"$PHP_LOG" 2>/dev/null || echo 0)
run_load varnish v "${VARNISH_ADDR[@]}"
rm -f "$MU_PLUGIN"
LANDED[varnish]=$(landed v)
vstat() { # vstat COUNTER -> sum over the nodes
    local i s=0 v
    for i in $(seq 1 "$NODES"); do
        v=$(varnishstat -n "$WORK/varnish-$i" -1 -f "$1" 2>/dev/null | awk '{ print $2; exit }')
        s=$((s + ${v:-0}))
    done
    echo "$s"
}
ORIGIN_FETCHES[varnish]=$(vstat MAIN.backend_req)
EXTRA[varnish]="varnishstat (all nodes): cache_hit $(vstat MAIN.cache_hit), cache_miss $(vstat MAIN.cache_miss),"
EXTRA[varnish]+=" cache_hitpass $(vstat MAIN.cache_hitpass), bans $(vstat MAIN.bans_added), n_object $(vstat MAIN.n_object);"
PURGE_ERRORS=$(tail -n +"$((PHP_LOG_LINES + 1))" "$PHP_LOG" 2>/dev/null | grep -c "strata bench purge: BAN to" || true)
EXTRA[varnish]+=" BANs of the purge mu-plugin that failed (PHP log): ${PURGE_ERRORS:-0}"
stop_all
delete_comments
COMMENTS_AFTER=$(sql "SELECT COUNT(*) FROM wp_comments")
[ "$COMMENTS_AFTER" = "$COMMENTS_BEFORE" ] ||
    NOTES+=("the comment table did not return to $COMMENTS_BEFORE rows but has $COMMENTS_AFTER (other processes may be writing comments)")

# ---------------------------------------------------------------------------
# Report and plot

"$LOAD_BIN" plot --out "$WORK/stack.svg" --series "Strata=$WORK/strata.csv" --series "Varnish=$WORK/varnish.csv" \
    --title "Full stack, $NODES nodes, $CONNECTIONS clients, $(awk -v s="$POST_SHARE" 'BEGIN { printf "%g", s * 100 }') % comment POSTs" ||
    die "stack-load plot failed"

ratio() { # ratio A B -> A/B to one decimal
    awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.1f×", a / b; else print "n/a" }'
}
row() { # row LABEL KEY -> | label | strata | varnish | ratio |
    local s v
    s=$(kv "$WORK/strata.out" "$2")
    v=$(kv "$WORK/varnish.out" "$2")
    printf '| %s | %s | %s | %s |\n' "$1" "$s" "$v" "$(ratio "$s" "$v")"
}
examples() { # examples SYSTEM -> Markdown list of the violations described
    sed -n 's/^example=/  - /p' "$WORK/$1.out"
}
version=$("$STRATA_BIN" --version 2>/dev/null || echo "strata-proxy ?")
rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "?")

{
    echo "# Full-stack benchmark: Strata cluster against a Varnish cluster"
    echo
    echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC'); machine: $(nproc) CPUs (${CPU:-unknown CPU}), $(uname -sr)."
    echo "- Versions: $version (commit $rev), $(varnishd -V 2>&1 | head -n 1 | sed -E 's/ revision ([0-9a-f]{8})[0-9a-f]*/ (\1)/')."
    echo "- $NODES nodes per system; \`stack-load\`: $CONNECTIONS clients in a closed loop for $DURATION per system,"
    echo "  each request to the next node (round-robin per request); $POST_SHARE of the requests are comment"
    echo "  POSTs (unique author, e-mail, text, \`X-Forwarded-For\`) to a random one of $POST_COUNT open posts, the"
    echo "  rest GETs cycling over all $PATH_COUNT published posts (\`Accept-Encoding: gzip\`). Caches warmed first"
    echo "  (every path on every node). Everything — load generator, caches, syncer, memcached, PHP-FPM,"
    echo "  nginx, MariaDB — shares the same cores. Load average when each load started: Strata"
    echo "  ${LOADAVG[strata]}, Varnish ${LOADAVG[varnish]}."
    echo "- Strata: strata-proxy × $NODES as one cluster, comments written behind (\`hold = \"$HOLD\"\`,"
    echo "  \`max_hold = \"$MAX_HOLD\"\`, memcached queue), one strata-syncer banning on every node."
    echo "- Varnish: varnishd × $NODES (\`benches/config/stack.vcl\`, \`-s malloc,512m\`); comments go to PHP;"
    echo "  the POST bans the host on its own node, and a mu-plugin sends a BAN to every node on"
    echo "  \`comment_post\` (as a purge plugin does)."
    echo "- Read-your-writes: after a POST answered 302 to \`#comment-ID\`, the same client GETs the post"
    echo "  through the next node, without cookies; a page without \`id=\"comment-ID\"\` is a violation."
    echo
    echo "| | Strata | Varnish | Strata / Varnish |"
    echo "|---|--:|--:|--:|"
    row "GET req/s" get_rps
    row "comment POST req/s" post_rps
    row "read-your-writes checks" checks
    row "violations" violations
    row "… showing the comment 1 s later" violations_late
    row "… still without it 1 s later" violations_stale
    row "POST 302 without #comment (no verdict in time)" held
    row "errors" errors
    row "GET p50 ms" get_p50_ms
    row "GET p99 ms" get_p99_ms
    row "POST p50 ms" post_p50_ms
    row "POST p99 ms" post_p99_ms
    row "check GET p50 ms" check_p50_ms
    row "check GET p99 ms" check_p99_ms
    printf '| comments in MySQL | %s | %s | |\n' "${LANDED[strata]}" "${LANDED[varnish]}"
    printf '| origin fetches | %s | %s | |\n' "${ORIGIN_FETCHES[strata]}" "${ORIGIN_FETCHES[varnish]}"
    echo
    echo "![GET/s and POST/s over time, both systems]($(basename "$PLOT"))"
    echo
    echo "- Errors by kind: Strata $(kv "$WORK/strata.out" errors_by); Varnish $(kv "$WORK/varnish.out" errors_by)."
    echo "- Strata: ${EXTRA[strata]}."
    echo "- Varnish: ${EXTRA[varnish]}."
    for s in strata varnish; do
        if [ -n "$(examples "$s")" ]; then
            echo "- Violations seen through ${s^} (first few):"
            examples "$s"
        fi
    done
    echo "- Site options during the run: $(join ', ' "${OPTION_LINE[@]}")."
    echo "- Comments in the database before the run: $COMMENTS_BEFORE; after the clean-up: $COMMENTS_AFTER."
    if [ "${#NOTES[@]}" -gt 0 ]; then
        printf -- '- %s\n' "${NOTES[@]}"
    fi
} >"$WORK/report.md"

mkdir -p "$(dirname "$RESULTS")"
cp "$WORK/report.md" "$RESULTS"
cp "$WORK/stack.svg" "$PLOT"
echo
cat "$WORK/report.md"
echo
log "written to ${RESULTS#"$ROOT"/} and ${PLOT#"$ROOT"/}"
