#!/usr/bin/env bash
# Strata full-stack benchmark: a mixed load of page GETs and comment POSTs on a cluster of
# NODES caches in front of the same WordPress, with a read-your-writes check after every
# accepted comment, for each comment share of a sweep (or one share), run twice in one go:
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
# With DIRECTOR=1 (the default) the nodes sit behind strata-director, as in a deployment:
#
#   netns RIG-cli 192.0.2.1          netns RIG-dir 192.0.2.2        netns RIG-n1 … RIG-nNODES
#   stack-load run ── VIP 192.0.2.100 ──▶ strata-director ──(L2)──▶ node 192.0.2.(10+i), VIP on lo
#          ▲                                                             │
#          └───────────── answers straight back (direct server return) ──┘
#                                                                        │ 198.51.100.1 (veth, root
#                                                                        ▼ namespace; socat relays)
#                     WordPress origin 127.0.0.1:8081, memcached 127.0.0.1:11211, MariaDB,
#                     strata-syncer (bans and verdicts to the nodes' admin listeners)
#
# The namespaces and the bridge between them are director/tests/rig.sh's (documentation
# addresses only); the root namespace joins the bridge as 198.51.100.1 (the director and the
# nodes get a second address in 198.51.100.0/24), where two socat relays lead to the origin
# and to memcached; the syncer, the warm-up and the purge mu-plugin reach the nodes there. Each client keeps NODES connections to the VIP, which
# the director spreads over the nodes by their addresses and ports; the caches are warmed
# through each node's own address. The same director (restarted with the Varnish nodes'
# health URL) stands in front of the Varnish nodes in phase (2).
#
# With DIRECTOR=0 everything listens on loopback and the load generator spreads the requests
# itself:
#
#   load generator (stack-load run) ──round-robin per request──▶ node 1 … node NODES
#                                                                    │
#                           WordPress origin 127.0.0.1:8081 (nginx + php-fpm) + MariaDB
#
# `stack-load` keeps CONNECTIONS clients in a closed loop for DURATION per system and share;
# each request goes to the next node (the next connection to the VIP). The share's fraction of
# the requests are comment POSTs (unique author, e-mail, text and X-Forwarded-For) to a random
# open post, the rest GETs cycling over every published post (Accept-Encoding: gzip). When a
# POST is answered 302 to `…#comment-ID`, the same client GETs that post through the next node
# (no cookies) and the page must show `id="comment-ID"`: a page without it is a read-your-writes
# violation.
#
# The shares are SWEEP's (default 0 0.001 0.01 0.05), or POST_SHARE alone. For each share, in
# turn, a fresh Strata cluster and then fresh Varnish nodes (empty caches) are warmed (every
# path on every node) and loaded: a comment bans every page on Varnish and soft-bans them on
# Strata, so what one share leaves behind is no warm cache for the next. What the load cost
# the origin is read around each load, after the warm-up: the nodes' counters (strata-proxy's
# /metrics, varnishstat) and the origin's own nginx access log (scripts/origin/nginx.conf
# keeps one; only read here). Origin fetches ÷ comments accepted = PHP renders per comment.
#
# The report (RESULTS, Markdown) has one row per share (GET/s of both systems, Strata's GET
# p99, check-GET p50, violations, comments, PHP renders per comment, origin fetches by class),
# what PHP saw per share and system, and per share the detailed figures of both systems (GET
# and POST req/s, violations, errors, p50/p99 per request kind). The plot (RESULTS with .svg)
# shows GET/s and PHP renders per comment by share; with a single share, GET/s and POST/s over
# time for both systems.
#
# The benchmark's comments (e-mails *.bench-TAGkK?@example.test) and their comment meta are
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
#   DIRECTOR      1: the nodes behind strata-director in network namespaces (default);
#                 0: everything on loopback, the load generator picks the node
#   DURATION      load time per system and share (default 20s)
#   CONNECTIONS   clients of the closed loop; each has a keep-alive connection per node (default 32)
#   SWEEP         the comment shares measured one after another, fractions of the requests that
#                 are comment POSTs (default "0 0.001 0.01 0.05")
#   POST_SHARE    one share only, instead of a sweep (e.g. 0.01); set SWEEP or POST_SHARE, not both
#   MAX_REQUESTS  most requests per system and share, whatever DURATION (default 5000000)
#   HOLD          [comments] hold of the proxies (default 5ms)
#   MAX_HOLD      [comments] max_hold of the proxies (default 200ms)
#   MYSQL_ARGS    arguments of the mysql client for the WordPress database
#                 (default: -h127.0.0.1 -P3306 -ustrata_wp -pstrata_wp strata_wp)
#   RESULTS       the Markdown report (default benches/results/stack.md); the plot goes next
#                 to it with the extension .svg
#   BASELINE      a directory holding strata-proxy and strata-syncer of another build (e.g. the
#                 release binaries of an earlier commit): for each share a third phase runs that
#                 build exactly as phase (1), right after it, and the report compares the two
#                 builds share by share (this tree's against the baseline's)
#   SKIP_BUILD=1  do not run cargo build (use the binaries already in target/release)
#   KEEP_WORK=1   keep the temporary work directory (logs, configs, outputs)
#
# Ports (127.0.0.1): WordPress origin 8081 (scripts/wordpress.sh), memcached 11211
# (scripts/memcached.sh; this run's keys under its own prefix), MariaDB 3306, strata-syncer
# admin 9220. DIRECTOR=1: node i is 192.0.2.(10+i) and 198.51.100.(10+i), strata-proxy on :80
# (admin :9080) or Varnish on :80; the director's admin listener 198.51.100.2:9090; namespaces
# sstack-*.
# DIRECTOR=0: strata-proxy node i on 127.0.0.1:821i (admin 921i), Varnish node i on 823i.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"
NODES=${NODES:-2}
DIRECTOR=${DIRECTOR:-1}
DURATION=${DURATION:-20s}
CONNECTIONS=${CONNECTIONS:-32}
DEFAULT_SWEEP="0 0.001 0.01 0.05"
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

[[ $DIRECTOR =~ ^[01]$ ]] || die "DIRECTOR must be 1 (behind strata-director) or 0 (loopback)"
[[ $NODES =~ ^[2-8]$ ]] || die "NODES must be 2 to 8 (the read-your-writes check reads through another node)"
[[ $CONNECTIONS =~ ^[1-9][0-9]*$ && $MAX_REQUESTS =~ ^[1-9][0-9]*$ ]] ||
    die "CONNECTIONS and MAX_REQUESTS must be positive integers"
[[ $DURATION =~ ^[1-9][0-9]*(s|m)?$ ]] || die "DURATION must be like 20s or 2m"
DURATION=$(with_unit "$DURATION")
# The comment shares: SWEEP's, or POST_SHARE's alone.
[ -n "${SWEEP:-}" ] && [ -n "${POST_SHARE:-}" ] &&
    die "set SWEEP (several comment shares) or POST_SHARE (one), not both"
if [ -n "${POST_SHARE:-}" ]; then
    SHARES=("$POST_SHARE")
else
    read -r -a SHARES <<<"${SWEEP:-$DEFAULT_SWEEP}"
fi
[ "${#SHARES[@]}" -gt 0 ] || die "SWEEP lists no comment share"
for share in "${SHARES[@]}"; do
    awk -v s="$share" 'BEGIN { exit !(s ~ /^(0|1|0?\.[0-9]+)$/ && s >= 0 && s <= 1) }' ||
        die "comment share $share: a fraction between 0 and 1 (e.g. 0.01) is needed"
done

# Where each node listens, where the nodes find the origin and memcached, whom they trust for
# X-Forwarded-For, and what the load generator aims at behind the director (LOAD_TARGETS;
# on loopback, the nodes themselves).
STRATA_ADDR=() STRATA_ADMIN=() VARNISH_ADDR=() LOAD_TARGETS=()
RIG=sstack
RIG_SCRIPT=$ROOT/director/tests/rig.sh
VIP=192.0.2.100
# The rig's hosts talk among themselves in 192.0.2.0/24; this (root) namespace joins the
# bridge in a second subnet, 198.51.100.0/24, where the director and each node have a second
# address: the root namespace may itself sit in 192.0.2.0/24.
HOST_NET=198.51.100
HOST_ADDR=$HOST_NET.1
DIRECTOR_ADMIN=$HOST_NET.2:9090
if [ "$DIRECTOR" = 1 ]; then
    NODE_ORIGIN=$HOST_ADDR:8081
    NODE_MEMCACHED=$HOST_ADDR:11211
    CLIENT_ADDR=192.0.2.1
    for i in $(seq 1 "$NODES"); do
        STRATA_ADDR+=("$HOST_NET.$((10 + i)):80")
        STRATA_ADMIN+=("$HOST_NET.$((10 + i)):9080")
        VARNISH_ADDR+=("$HOST_NET.$((10 + i)):80")
        LOAD_TARGETS+=("$VIP:80")
    done
else
    NODE_ORIGIN=$ORIGIN_ADDR
    NODE_MEMCACHED=$MEMCACHED
    CLIENT_ADDR=127.0.0.1
    for i in $(seq 1 "$NODES"); do
        STRATA_ADDR+=("127.0.0.1:$((8210 + i))")
        STRATA_ADMIN+=("127.0.0.1:$((9210 + i))")
        VARNISH_ADDR+=("127.0.0.1:$((8230 + i))")
    done
fi
# on_node I CMD…: CMD on node I (exec'd, so that $! of `on_node … &` is CMD's pid).
on_node() {
    local i=$1
    shift
    if [ "$DIRECTOR" = 1 ]; then exec ip netns exec "$RIG-n$i" "$@"; else exec "$@"; fi
}
join() { # join SEP ITEM… -> the items separated by SEP
    local sep=$1 out=""
    shift
    for x in "$@"; do out+="${out:+$sep}$x"; done
    printf '%s' "$out"
}

# ---------------------------------------------------------------------------
# Work directory and clean-up: every process this script starts is in PIDS; every comment
# it causes has an e-mail N.C.bench-TAGkKx@example.test (K: the share's index in SHARES; x: s
# for Strata, v for Varnish).

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

# The relays from the rig to the origin and memcached (DIRECTOR=1).
RELAY_PIDS=()
stop_relays() {
    local pid
    for pid in "${RELAY_PIDS[@]}"; do
        pkill -TERM -P "$pid" 2>/dev/null || true # socat's per-connection children
        stop_pid "$pid"
    done
    RELAY_PIDS=()
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
    stop_relays
    [ "$DIRECTOR" = 1 ] && "$RIG_SCRIPT" down "$RIG"
    (TAG="${TAG}k%" && delete_comments)
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
[ "$DIRECTOR" = 1 ] && ensure_tools socat=socat ip=iproute2
export PATH=$PATH:/usr/sbin:/sbin
[ "$(id -u)" -eq 0 ] || die "run as root: the origin scripts, the mu-plugin and the namespaces need it"

busy_check=("$SYNCER_ADMIN")
[ "$DIRECTOR" = 0 ] && busy_check+=("${STRATA_ADDR[@]}" "${STRATA_ADMIN[@]}" "${VARNISH_ADDR[@]}")
for addr in "${busy_check[@]}"; do
    port_busy "$addr" && die "something is already listening on $addr; stop it first"
done
if [ "$DIRECTOR" = 1 ]; then
    taken=$(ip -4 route show | awk -v net="$HOST_NET." 'index($1, net) == 1' | head -n 1)
    [ -z "$taken" ] || die "this namespace already has a route into $HOST_NET.0/24 ($taken); the rig's host link needs it"
fi

# cpu_busy_pct -> how busy the CPUs are, in percent, over 2 s (/proc/stat)
cpu_busy_pct() {
    local a b
    a=$(awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6 }' /proc/stat)
    sleep 2
    b=$(awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6 }' /proc/stat)
    awk -v a="$a" -v b="$b" 'BEGIN { split(a, x, " "); split(b, y, " "); busy = y[1] - x[1]; idle = y[2] - x[2]
        printf "%d\n", (busy + idle > 0) ? 100 * busy / (busy + idle) : 0 }'
}

STRATA_BIN=$TARGET_DIR/release/strata-proxy
SYNCER_BIN=$TARGET_DIR/release/strata-syncer
if [ -n "${BASELINE:-}" ]; then
    BASELINE=$(cd "$BASELINE" && pwd) || die "BASELINE=$BASELINE is not a directory"
    for b in strata-proxy strata-syncer; do
        [ -x "$BASELINE/$b" ] || die "BASELINE=$BASELINE holds no executable $b"
    done
fi
LOAD_BIN=$TARGET_DIR/release/stack-load
DIRECTOR_BIN=$TARGET_DIR/release/strata-director
if [ "$DIRECTOR" = 1 ]; then
    build_release "$STRATA_BIN" "$SYNCER_BIN" "$LOAD_BIN" "$DIRECTOR_BIN"
else
    build_release "$STRATA_BIN" "$SYNCER_BIN" "$LOAD_BIN"
fi
# Other work on the machine, before anything of this run starts (the origin idles).
CPU_BUSY_BEFORE=$(cpu_busy_pct)

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
# The rig (DIRECTOR=1): namespaces, the root namespace on the bridge, relays

if [ "$DIRECTOR" = 1 ]; then
    log "network namespaces $RIG-{sw,cli,dir,n1…n$NODES} (director/tests/rig.sh); this host joins as $HOST_ADDR"
    "$RIG_SCRIPT" up "$RIG" "$NODES" >"$WORK/rig.log" 2>&1 || {
        cat "$WORK/rig.log" >&2
        die "director/tests/rig.sh up failed"
    }
    ip link add "$RIG-h" type veth peer name v-host netns "$RIG-sw"
    ip -n "$RIG-sw" link set v-host master br0 up
    ip addr add "$HOST_ADDR/24" dev "$RIG-h"
    ip link set "$RIG-h" up
    ip -n "$RIG-dir" addr add "$HOST_NET.2/24" dev eth0
    for i in $(seq 1 "$NODES"); do
        ip -n "$RIG-n$i" addr add "$HOST_NET.$((10 + i))/24" dev eth0
    done
    for pair in "$NODE_ORIGIN=$ORIGIN_ADDR" "$NODE_MEMCACHED=$MEMCACHED"; do
        from=${pair%%=*} to=${pair#*=}
        socat "TCP-LISTEN:${from#*:},bind=${from%:*},fork,reuseaddr,nodelay,backlog=4096" "TCP:$to,nodelay" \
            2>>"$WORK/relay.log" &
        RELAY_PIDS+=($!)
    done
    for _ in $(seq 1 50); do
        port_busy "$NODE_ORIGIN" && port_busy "$NODE_MEMCACHED" && break
        sleep 0.1
    done
    port_busy "$NODE_ORIGIN" && port_busy "$NODE_MEMCACHED" || die "the relays on $HOST_ADDR did not start: $(cat "$WORK/relay.log")"
fi

# start_director HEALTH_PORT HEALTH_PATH: strata-director in front of the nodes (one phase),
# until it sees every node up.
start_director() {
    local port=$1 path=$2 i
    {
        printf 'interface = "eth0"\nvip = "%s"\nports = [80]\nadmin_listen = "%s"\n' "$VIP" "$DIRECTOR_ADMIN"
        for i in $(seq 1 "$NODES"); do
            printf '\n[[backend]]\naddr = "192.0.2.%d"\nhealth_url = "http://192.0.2.%d:%d%s"\n' \
                $((10 + i)) $((10 + i)) "$port" "$path"
        done
    } >"$WORK/director.toml"
    STRATA_LOG=warn ip netns exec "$RIG-dir" "$DIRECTOR_BIN" --config "$WORK/director.toml" \
        >>"$WORK/director.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 1 100); do
        [ "$(curl -s --max-time 2 "http://$DIRECTOR_ADMIN/status" | grep -c ' up for ')" = "$NODES" ] && return 0
        sleep 0.2
    done
    die "the director does not see all $NODES nodes up: $(curl -s --max-time 2 "http://$DIRECTOR_ADMIN/status")"
}

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


# phase_tag SYSTEM K -> the tag of the comments of one phase: the e-mails are
# N.C.bench-TAGkKx@example.test (x: s for Strata, v for Varnish; K the share's index).
phase_tag() { printf '%sk%s%s' "$TAG" "$2" "${1:0:1}"; }
# landed TAG -> number of comments in MySQL with that tag
landed() { sql "SELECT COUNT(*) FROM wp_comments WHERE comment_author_email LIKE '%.bench-$1@example.test'"; }
# delete_share_comments K: the comments of share K, both systems
delete_share_comments() { (TAG="${TAG}k$1" && delete_comments); }

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

# scrape ADMIN: its /metrics, the proxy's names from before they took the strata_proxy_
# prefix read as today's (a BASELINE build may predate it).
scrape() {
    curl -s --max-time 5 "http://$1/metrics" |
        sed -E '/^(# [A-Z]+ )?strata_(proxy|syncer|director|build)_/! s/^(# [A-Z]+ )?strata_/\1strata_proxy_/'
}

# metric NAME [LABEL-FILTER] ADMIN… -> sum of the matching samples over the admin listeners
metric() {
    local name=$1 filt=$2 a
    shift 2
    for a in "$@"; do scrape "$a"; done |
        awk -v name="$name" -v filt="$filt" '
            $0 !~ /^#/ { split($1, a, "{"); if (a[1] == name && (filt == "" || index($0, filt))) s += $NF }
            END { if (s == int(s)) printf "%d\n", s; else printf "%.6f\n", s }'
}

# labels NAME ADMIN… -> "label N, …" of a labelled counter, summed over the admin listeners
labels() {
    local name=$1 a
    shift
    for a in "$@"; do scrape "$a"; done |
        awk -v name="$name" '$0 !~ /^#/ && index($1, name "{") == 1 {
            match($1, /"[^"]*"/); k = substr($1, RSTART + 1, RLENGTH - 2); if (!(k in s)) o[n++] = k; s[k] += $NF }
            END { for (i = 0; i < n; i++) if (s[o[i]] > 0) out = out (out ? ", " : "") o[i] " " s[o[i]]
                  print (out ? out : "none") }'
}

# ---------------------------------------------------------------------------
# What the load cost the origin: counters read before and after the load phase (after the
# warm-up), and the origin's own access log between the two.

# prom_snapshot FILE ADMIN…: the /metrics of every admin listener, one after another, in FILE.
prom_snapshot() {
    local file=$1 a
    shift
    : >"$file"
    for a in "$@"; do scrape "$a" >>"$file" || true; done
}

# prom_delta BEFORE AFTER NAME [LABEL-FILTER] [ABSENT] -> the growth of the sum of the matching
# samples (all nodes) from BEFORE to AFTER; ABSENT (default "n/a") when AFTER has no such
# sample: a metric this version of strata-proxy does not have, or a labelled counter that has
# not counted anything yet (its family is not printed at all until then, so give 0 for those).
prom_delta() {
    awk -v name="$3" -v filt="${4:-}" -v absent="${5:-n/a}" -v after="$2" '
        $0 !~ /^#/ { split($1, a, "{"); if (a[1] == name && (filt == "" || index($1, filt))) {
            if (FILENAME == after) { s1 += $NF; seen = 1 } else s0 += $NF } }
        END { if (!seen) { print absent; exit } d = s1 - s0
              if (d == int(d)) printf "%d\n", d; else printf "%.6f\n", d }' "$1" "$2"
}

# prom_labels BEFORE AFTER NAME -> "value N, …": the growth of each label value of a labelled
# counter (all nodes; values of several labels joined by /), those that grew only; "none".
prom_labels() {
    awk -v name="$3" -v after="$2" '
        $0 !~ /^#/ && index($1, name "{") == 1 {
            k = ""; rest = $1
            while (match(rest, /"[^"]*"/)) { k = k (k == "" ? "" : "/") substr(rest, RSTART + 1, RLENGTH - 2); rest = substr(rest, RSTART + RLENGTH) }
            if (!(k in d)) o[n++] = k
            d[k] += (FILENAME == after ? $NF : -$NF) }
        END { for (i = 0; i < n; i++) if (d[o[i]] > 0) out = out (out ? ", " : "") o[i] " " d[o[i]]
              print (out ? out : "none") }' "$1" "$2"
}

# prom_origin_classes BEFORE AFTER -> "name{labels} N; …": the growth of every labelled
# strata_proxy_origin_*_total counter (origin fetches by class, by error, whatever this version of
# strata-proxy counts), "none" when there is none or none grew.
prom_origin_classes() {
    awk -v after="$2" '
        $0 !~ /^#/ && $1 ~ /^strata_proxy_origin_[a-z_]*_total\{/ {
            if (!($1 in d)) o[n++] = $1
            d[$1] += (FILENAME == after ? $NF : -$NF) }
        END { for (i = 0; i < n; i++) if (d[o[i]] > 0) out = out (out ? "; " : "") "`" o[i] "` " d[o[i]]
              print (out ? out : "none") }' "$1" "$2"
}

# varnish_snapshot FILE: `varnishstat -1` of every Varnish node, one after another, in FILE.
varnish_snapshot() {
    local i
    : >"$1"
    for i in $(seq 1 "$NODES"); do varnishstat -n "$WORK/varnish-$i" -1 >>"$1" 2>/dev/null || true; done
}

# varnish_delta BEFORE AFTER COUNTER -> the growth of COUNTER summed over the nodes
varnish_delta() {
    awk -v name="$3" -v after="$2" '$1 == name { if (FILENAME == after) s1 += $2; else s0 += $2 }
        END { printf "%d\n", s1 - s0 }' "$1" "$2"
}

# The origin's nginx access log (scripts/origin/nginx.conf keeps one; the benchmark only
# reads it). Every PHP request the load caused is a line there.
ORIGIN_LOG=$(awk '$1 == "access_log" { print $2; exit }' "$ROOT/scripts/origin/nginx.conf")
ORIGIN_LOG_FLUSH=$(awk '$1 == "access_log" { if (match($0, /flush=[0-9]+s/)) print substr($0, RSTART + 6, RLENGTH - 7); exit }' \
    "$ROOT/scripts/origin/nginx.conf")
# How long to wait before reading the log's size, so that nginx has written the lines of
# the requests answered so far (it buffers them for up to flush=…).
LOG_SETTLE=$((${ORIGIN_LOG_FLUSH:-1} + 1))
# log_offset -> the log's size in bytes (-1 when it cannot be read)
log_offset() { stat -c %s "$ORIGIN_LOG" 2>/dev/null || echo -1; }

# php_seen FROM TO -> the log lines between two offsets, by kind, as key=value words:
#   page_gets     GET/HEAD from the nodes (no User-Agent: strata-proxy sends none; or the
#                 load generator's, which Varnish forwards): pages PHP rendered
#   comment_posts POST /wp-comments-post.php from the nodes (comments PHP took itself)
#   node_other    other requests from the nodes
#   syncer        strata-syncer's permalink look-ups (User-Agent strata-syncer)
#   wordpress     WordPress's own loopback requests (User-Agent WordPress/…: wp-cron)
#   other_clients anything else (work on this machine other than the benchmark)
#   static        files under /wp-content/ or /wp-includes/ (nginx, not PHP)
# or "unreadable" when the log is missing or shrank (rotated) between the two offsets.
php_seen() {
    local from=$1 to=$2
    if [ "$from" -lt 0 ] || [ "$to" -lt "$from" ]; then
        echo unreadable
        return
    fi
    tail -c +"$((from + 1))" "$ORIGIN_LOG" 2>/dev/null | head -c "$((to - from))" | awk -F'"' '
        { split($2, r, " "); m = r[1]; p = r[2]; ua = $6
          if (p ~ /^\/(wp-content|wp-includes)\// && p !~ /\.php/) static++
          else if (ua == "strata-syncer") syncer++
          else if (ua ~ /^WordPress\//) wordpress++
          else if (ua == "-" || ua == "strata-stack-load/1.0") {
              if (m == "GET" || m == "HEAD") gets++
              else if (m == "POST" && p ~ /^\/wp-comments-post\.php/) posts++
              else node_other++ }
          else other++ }
        END { printf "page_gets=%d comment_posts=%d node_other=%d syncer=%d wordpress=%d other_clients=%d static=%d\n",
                     gets, posts, node_other, syncer, wordpress, other, static }'
}

# word KEY "k=v …" -> v
word() { tr ' ' '\n' <<<"$2" | sed -n "s/^$1=//p"; }
# other_clients ID -> the requests of other clients the origin answered during that load (0
# when the log could not be read)
other_clients() { local n; n=$(word other_clients "${PHP[$1]}"); echo "${n:-0}"; }

# per_comment N COMMENTS -> N / COMMENTS to two decimals ("—" without comments, "n/a" without N)
per_comment() {
    awk -v n="$1" -v c="$2" 'BEGIN { if (n !~ /^-?[0-9.]+$/) print "n/a"; else if (c > 0) printf "%.2f\n", n / c; else print "—" }'
}

# ---------------------------------------------------------------------------
# One phase: warm the nodes, read the counters, the load, read the counters again

# The figures of every phase, keyed SYSTEM.K (K: the share's index in SHARES).
declare -A LOADAVG=() COMPILERS=() LANDED=() EXTRA=() FETCHES=() F_MISS=() F_BG=() F_PASS=() PHP=() CLASSES=()

# warm_and_load SYSTEM K NODE-ADDR…: warms the nodes (each through its own address), waits
# for the origin's log, reads the counters (snapshot_SYSTEM K before), then the load of
# share SHARES[K] on LOAD_TARGETS (from the client's namespace behind the director) with its
# progress line. The origin log offsets go to LOG_FROM[SYSTEM.K].
declare -A LOG_FROM=()
warm_and_load() {
    local system=$1 k=$2
    shift 2
    local share=${SHARES[$k]} nodes targets client=() id=$system.$k
    nodes=$(join , "$@")
    targets=$nodes
    if [ "$DIRECTOR" = 1 ]; then
        client=(ip netns exec "$RIG-cli")
        targets=$(join , "${LOAD_TARGETS[@]}")
    fi
    log "$system, share $share: warming $PATH_COUNT paths on $# nodes"
    "$LOAD_BIN" warm --nodes "$nodes" --host "$HOST_HEADER" --paths "$WORK/paths.txt" --concurrency 4 \
        >"$WORK/$id.warm.out" 2>"$WORK/$id.warm.err" || die "stack-load warm failed: $(cat "$WORK/$id.warm.err")"
    log "$system, share $share: $(cat "$WORK/$id.warm.out")"
    sleep "$LOG_SETTLE"
    "snapshot_$system" "$WORK/$id.before"
    LOG_FROM[$id]=$(log_offset)
    LOADAVG[$id]=$(cut -d' ' -f1 /proc/loadavg)
    COMPILERS[$id]=$(ps -eo comm= | grep -c -x -E 'rustc|clippy-driver|cc1|cc1plus' || true)
    log "$system, share $share: $CONNECTIONS clients for $DURATION, $share of the requests comment POSTs"
    "${client[@]}" "$LOAD_BIN" run --system "$system" --nodes "$targets" --host "$HOST_HEADER" --paths "$WORK/paths.txt" \
        --posts "$POST_IDS" --tag "$(phase_tag "$system" "$k")" --connections "$CONNECTIONS" --duration "$DURATION" \
        --post-share "$share" --max-requests "$MAX_REQUESTS" --series "$WORK/$id.csv" \
        >"$WORK/$id.out" || die "stack-load run failed (see above)"
    log "$system, share $share: $(kv "$WORK/$id.out" get_rps) GET/s, $(kv "$WORK/$id.out" post_rps) POST/s," \
        "$(kv "$WORK/$id.out" violations) violations, $(kv "$WORK/$id.out" errors) errors"
}

snapshot_strata() { prom_snapshot "$1" "${STRATA_ADMIN[@]}"; }
snapshot_baseline() { prom_snapshot "$1" "${STRATA_ADMIN[@]}"; }
snapshot_varnish() { varnish_snapshot "$1"; }

# after_load SYSTEM K: waits for the origin's log, reads the counters again and what PHP saw.
after_load() {
    local id=$1.$2
    sleep "$LOG_SETTLE"
    "snapshot_$1" "$WORK/$id.after"
    PHP[$id]=$(php_seen "${LOG_FROM[$id]}" "$(log_offset)")
    LANDED[$id]=$(landed "$(phase_tag "$1" "$2")")
}

# director_spread ID: the director's new flows per node, and what it forwarded.
director_spread() {
    [ "$DIRECTOR" = 1 ] || return 0
    EXTRA[$1]+="; director: new flows per node $(labels strata_director_node_new_flows_total "$DIRECTOR_ADMIN"),"
    EXTRA[$1]+=" frames received $(metric strata_director_rx_frames_total "" "$DIRECTOR_ADMIN")"
}

mean_ms() { # mean_ms HISTOGRAM ADMIN… -> mean in ms of a seconds histogram
    local name=$1
    shift
    awk -v s="$(metric "${name}_sum" "" "$@")" -v c="$(metric "${name}_count" "" "$@")" \
        'BEGIN { if (c > 0) printf "%.1f ms over %d", s * 1000 / c, c; else print "n/a" }'
}

# ---------------------------------------------------------------------------
# (1) Strata: NODES proxies as one cluster, the syncer; fresh for every share

(umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$WORK/cluster.secret")
toml_list() { # toml_list URL… -> ["URL", …]
    local out=() x
    for x in "$@"; do out+=("\"$x\""); done
    printf '[%s]' "$(join ', ' "${out[@]}")"
}

# Behind the director the admin listeners are on every address of a node: name who may use
# them (this namespace on the host link — the syncer, the warm-up, the counters —, the other
# nodes, the director's health checks), so that /cluster answers this namespace unsigned.
ADMIN_ALLOW=""
if [ "$DIRECTOR" = 1 ]; then
    allow=("127.0.0.1" "$HOST_ADDR" "192.0.2.2" "$HOST_NET.2")
    for i in $(seq 1 "$NODES"); do allow+=("192.0.2.$((10 + i))" "$HOST_NET.$((10 + i))"); done
    ADMIN_ALLOW="admin_allow = $(toml_list "${allow[@]}")"
fi

# strata_configs: the nodes' and the syncer's configuration files, for the queue PREFIX.
strata_configs() {
    local i j others public_listen admin_listen admin_urls=() a
    for i in $(seq 1 "$NODES"); do
        others=()
        for j in $(seq 1 "$NODES"); do
            [ "$j" = "$i" ] || others+=("http://${STRATA_ADMIN[$((j - 1))]}")
        done
        public_listen=${STRATA_ADDR[$((i - 1))]} admin_listen=${STRATA_ADMIN[$((i - 1))]}
        # Behind the director a node answers on the VIP too, and the health checks come from the
        # director's subnet.
        [ "$DIRECTOR" = 1 ] && public_listen=0.0.0.0:80 admin_listen=0.0.0.0:9080
        cat >"$WORK/strata-$i.toml" <<EOF
[server]
listen = "$public_listen"
admin_listen = "$admin_listen"

[origin]
url = "http://$NODE_ORIGIN"

[cache]
capacity = "512MiB"
default_ttl = "1h"
grace = "1h"

[cluster]
node_id = "stack-$i"
siblings = $(toml_list "${others[@]}")
secret_file = "cluster.secret"
$ADMIN_ALLOW

[comments]
enabled = true
memcached = ["$NODE_MEMCACHED"]
key_prefix = "$PREFIX"
hold = "$HOLD"
max_hold = "$MAX_HOLD"
trusted_proxies = ["$CLIENT_ADDR"]
EOF
    done
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
}

# strata_phase K [SYSTEM]: a fresh Strata cluster (empty caches, a queue of its own), warmed,
# then the load of share SHARES[K]. SYSTEM is strata (this tree's build) or baseline (the
# binaries in BASELINE).
strata_phase() {
    local k=$1 system=${2:-strata} i id b a proxy_bin=$STRATA_BIN syncer_bin=$SYNCER_BIN
    id=$system.$k
    if [ "$system" = baseline ]; then
        proxy_bin=$BASELINE/strata-proxy syncer_bin=$BASELINE/strata-syncer
    fi
    PREFIX="strata-stack:$TAG:k$k${system:0:1}:"
    strata_configs
    log "(1) Strata ($system build), share ${SHARES[$k]}: $NODES strata-proxy nodes on $(join ', ' "${STRATA_ADDR[@]}") and strata-syncer"
    for i in $(seq 1 "$NODES"); do
        (cd "$WORK" && on_node "$i" "$proxy_bin" --config "strata-$i.toml") >>"$WORK/$system-$i.log" 2>&1 &
        PIDS+=($!)
    done
    (cd "$WORK" && exec "$syncer_bin" --config syncer.toml) >>"$WORK/$system-syncer.log" 2>&1 &
    PIDS+=($!)
    for i in $(seq 1 "$NODES"); do
        wait_for "http://${STRATA_ADMIN[$((i - 1))]}/healthz" ok 20 ||
            die "strata-proxy node $i did not start: $(tail -n 5 "$WORK/$system-$i.log")"
    done
    wait_for "http://$SYNCER_ADMIN/healthz" ok 20 || die "strata-syncer did not start: $(tail -n 5 "$WORK/$system-syncer.log")"
    for i in $(seq 1 "$NODES"); do
        wait_for "http://${STRATA_ADMIN[$((i - 1))]}/cluster" '"confirmed":true' 20 ||
            die "node $i did not confirm its siblings: $(curl -s "http://${STRATA_ADMIN[$((i - 1))]}/cluster")"
    done
    [ "$DIRECTOR" = 1 ] && start_director 9080 /healthz
    # The proxies queue comments only once they have read the syncer's settings (every second).
    sleep 2

    warm_and_load "$system" "$k" "${STRATA_ADDR[@]}"
    # Let the syncer drain what is still queued (comments answered "302 to the post").
    for _ in $(seq 1 600); do
        [ "$(metric strata_syncer_queue_depth "" "$SYNCER_ADMIN")" = 0 ] && break
        sleep 0.1
    done
    after_load "$system" "$k"
    b=$WORK/$id.before a=$WORK/$id.after
    FETCHES[$id]=$(prom_delta "$b" "$a" strata_proxy_origin_requests_total)
    F_PASS[$id]=$(prom_delta "$b" "$a" strata_proxy_passes_total "" 0)
    if grep -q '^strata_proxy_origin_fetches_total{' "$a"; then
        # Fills and refreshes that went to the origin (not to a key's home node), by class.
        F_BG[$id]=$(prom_delta "$b" "$a" strata_proxy_origin_fetches_total 'class="background"' 0)
        F_MISS[$id]=$(prom_delta "$b" "$a" strata_proxy_origin_fetches_total 'class="foreground"' 0)
    else
        F_BG[$id]=$(prom_delta "$b" "$a" strata_proxy_background_refreshes_total)
        # A fetch that is neither a refresh nor a pass is a miss a visitor waited on.
        F_MISS[$id]=$(awk -v t="${FETCHES[$id]}" -v b="${F_BG[$id]}" -v p="${F_PASS[$id]}" \
            'BEGIN { if (t !~ /^[0-9]+$/) print "n/a"; else printf "%d\n", t - (b ~ /^[0-9]+$/ ? b : 0) - (p ~ /^[0-9]+$/ ? p : 0) }')
    fi
    CLASSES[$id]="passes by reason: $(prom_labels "$b" "$a" strata_proxy_passes_total);"
    CLASSES[$id]+=" stale copies served without starting a refresh (the node's \`background_refreshes\` all in flight): $(prom_delta "$b" "$a" strata_proxy_background_refreshes_deferred_total);"
    CLASSES[$id]+=" requests answered by another's fetch: $(prom_delta "$b" "$a" strata_proxy_coalesced_requests_total);"
    CLASSES[$id]+=" fills asked of a key's home node, by answer: $(prom_labels "$b" "$a" strata_proxy_shield_requests_total);"
    CLASSES[$id]+=" refreshes held back by list_refresh: $(prom_delta "$b" "$a" strata_proxy_list_refreshes_deferred_total "" 0);"
    CLASSES[$id]+=" origin counters by label: $(prom_origin_classes "$b" "$a")"
    EXTRA[$id]="proxy \`strata_proxy_requests_total\` during the load (all nodes): $(prom_labels "$b" "$a" strata_proxy_requests_total);"
    EXTRA[$id]+=" \`strata_proxy_comments_total\`: $(labels strata_proxy_comments_total "${STRATA_ADMIN[@]}");"
    EXTRA[$id]+=" cache flushes forced by the cluster: $(labels strata_proxy_cluster_flushes_total "${STRATA_ADMIN[@]}");"
    EXTRA[$id]+=" syncer \`strata_syncer_comments_total\`: $(labels strata_syncer_comments_total "$SYNCER_ADMIN"),"
    EXTRA[$id]+=" bans sent $(metric strata_syncer_bans_sent_total "" "$SYNCER_ADMIN");"
    EXTRA[$id]+=" mean syncer lag (accepted → committed) $(mean_ms strata_syncer_lag_seconds "$SYNCER_ADMIN"),"
    EXTRA[$id]+=" mean verdict wait on the proxies $(mean_ms strata_proxy_comment_verdict_seconds "${STRATA_ADMIN[@]}")"
    director_spread "$id"
    stop_all
    delete_share_comments "$k"
    forget_queue
}

# ---------------------------------------------------------------------------
# (2) Varnish: NODES varnishd, PHP takes the comments, the purge mu-plugin bans every node;
# fresh for every share

varnish_list=()
for a in "${VARNISH_ADDR[@]}"; do varnish_list+=("'$a'"); done
sed "s|^    \$nodes = \[\];|    \$nodes = [$(join ', ' "${varnish_list[@]}")];|" "$ROOT/benches/config/stack-purge.php" \
    >"$WORK/stack-purge.php"
grep -q "'${VARNISH_ADDR[0]}'" "$WORK/stack-purge.php" || die "could not fill in the node list of the purge mu-plugin"
# Behind the director the nodes reach the origin through the relay, and the WordPress host's
# BANs come from the relay's address.
sed -e "s|^    .host = \"127.0.0.1\";|    .host = \"${NODE_ORIGIN%:*}\";|" \
    -e "s|^    \"127.0.0.1\";|    \"127.0.0.1\";\n    \"$HOST_ADDR\";|" "$ROOT/benches/config/stack.vcl" >"$WORK/stack.vcl"
grep -q "\.host = \"${NODE_ORIGIN%:*}\"" "$WORK/stack.vcl" || die "could not set the backend of the VCL"
PHP_LOG=/var/log/strata/php-fpm.log

# varnish_phase K: fresh varnishd nodes (empty caches) and the purge mu-plugin, warmed, then
# the load of share SHARES[K].
varnish_phase() {
    local k=$1 i id=varnish.$1 listen code php_lines purge_errors b a
    log "(2) Varnish, share ${SHARES[$k]}: $NODES varnishd on $(join ', ' "${VARNISH_ADDR[@]}"), purge mu-plugin in $MU_PLUGINS"
    install -m 0644 "$WORK/stack-purge.php" "$MU_PLUGIN"
    for i in $(seq 1 "$NODES"); do
        rm -rf "$WORK/varnish-$i"
        mkdir -p "$WORK/varnish-$i"
        listen=${VARNISH_ADDR[$((i - 1))]}
        [ "$DIRECTOR" = 1 ] && listen=:80 # the node's address and the VIP
        (on_node "$i" varnishd -F -n "$WORK/varnish-$i" -a "$listen" -T none -f "$WORK/stack.vcl" \
            -s malloc,512m) >>"$WORK/varnish-$i.log" 2>&1 &
        PIDS+=($!)
    done
    for i in $(seq 1 "$NODES"); do
        wait_for "http://${VARNISH_ADDR[$((i - 1))]}/" "</html>" 30 ||
            die "varnishd $i did not start: $(tail -n 5 "$WORK/varnish-$i.log")"
    done
    # The nodes must accept a BAN from this host, where the mu-plugin sends them from.
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -X BAN -H "X-Ban-Host: $HOST_HEADER" \
        "http://${VARNISH_ADDR[0]}/") || code=000
    [ "$code" = 200 ] || die "varnishd 1 answered $code to a BAN from this host"
    [ "$DIRECTOR" = 1 ] && start_director 80 /healthz

    php_lines=$(wc -l <"$PHP_LOG" 2>/dev/null || echo 0)
    warm_and_load varnish "$k" "${VARNISH_ADDR[@]}"
    after_load varnish "$k"
    rm -f "$MU_PLUGIN"
    b=$WORK/$id.before a=$WORK/$id.after
    FETCHES[$id]=$(varnish_delta "$b" "$a" MAIN.backend_req)
    F_BG[$id]=$(varnish_delta "$b" "$a" MAIN.s_bgfetch)
    F_PASS[$id]=$(varnish_delta "$b" "$a" MAIN.s_pass)
    # s_fetch counts every fetch: the misses are what is neither a pass nor in the background.
    F_MISS[$id]=$(($(varnish_delta "$b" "$a" MAIN.s_fetch) - F_BG[$id] - F_PASS[$id]))
    CLASSES[$id]="varnishstat during the load (all nodes): s_fetch $(varnish_delta "$b" "$a" MAIN.s_fetch),"
    CLASSES[$id]+=" cache_miss $(varnish_delta "$b" "$a" MAIN.cache_miss), requests that waited on another's fetch (busy_sleep) $(varnish_delta "$b" "$a" MAIN.busy_sleep)"
    EXTRA[$id]="varnishstat during the load (all nodes): cache_hit $(varnish_delta "$b" "$a" MAIN.cache_hit),"
    EXTRA[$id]+=" cache_miss $(varnish_delta "$b" "$a" MAIN.cache_miss), cache_hitpass $(varnish_delta "$b" "$a" MAIN.cache_hitpass),"
    EXTRA[$id]+=" bans $(varnish_delta "$b" "$a" MAIN.bans_added), n_object at the end $(varnish_delta /dev/null "$a" MAIN.n_object);"
    purge_errors=$(tail -n +"$((php_lines + 1))" "$PHP_LOG" 2>/dev/null | grep -c "strata bench purge: BAN to" || true)
    EXTRA[$id]+=" BANs of the purge mu-plugin that failed (PHP log): ${purge_errors:-0}"
    [ "${purge_errors:-0}" = 0 ] ||
        NOTES+=("share ${SHARES[$k]}: the purge mu-plugin could not ban some Varnish nodes ($purge_errors failures; see the PHP log): the Varnish figures are not those of a working cluster")
    director_spread "$id"
    stop_all
    delete_share_comments "$k"
}

# ---------------------------------------------------------------------------
# The sweep: for each share, Strata then Varnish

for k in "${!SHARES[@]}"; do
    strata_phase "$k"
    [ -n "${BASELINE:-}" ] && strata_phase "$k" baseline
    varnish_phase "$k"
    other=$(($(other_clients "strata.$k") + $(other_clients "varnish.$k")))
    [ -n "${BASELINE:-}" ] && other=$((other + $(other_clients "baseline.$k")))
    [ "$other" = 0 ] ||
        NOTES+=("share ${SHARES[$k]}: the origin answered $other requests from clients other than the nodes, the syncer and WordPress itself during the loads (other work on this machine); they are left out of the PHP figures but took PHP's time")
done
compiling=$(for id in "${!COMPILERS[@]}"; do echo "${COMPILERS[$id]}"; done | awk '$1 > 0 { n++ } END { print n + 0 }')
if [ "$compiling" != 0 ] || [ "$CPU_BUSY_BEFORE" -ge 20 ]; then
    busy_what="its CPUs were $CPU_BUSY_BEFORE % busy before the run started"
    [ "$compiling" = 0 ] || busy_what+=", and compilers (rustc, cc1) were running when $compiling of the ${#COMPILERS[@]} loads started"
    NOTES+=("the machine was busy with other work: $busy_what; the figures hold as a comparison of the two systems within a share (each share's two loads ran back to back), less so against other runs")
fi
COMMENTS_AFTER=$(sql "SELECT COUNT(*) FROM wp_comments")
[ "$COMMENTS_AFTER" = "$COMMENTS_BEFORE" ] ||
    NOTES+=("the comment table did not return to $COMMENTS_BEFORE rows but has $COMMENTS_AFTER (other processes may be writing comments)")

# ---------------------------------------------------------------------------
# Report and plot

if [ "$DIRECTOR" = 1 ]; then
    SPREAD="through strata-director (VIP $VIP, L2 direct server return; the load generator, the director and each node in
  its own network namespace on one bridge), each client keeping $NODES connections to the VIP and sending each request
  on the next one"
    TITLE_WHERE="behind strata-director"
else
    SPREAD="on loopback, each request to the next node (round-robin per request)"
    TITLE_WHERE="on loopback"
fi
percent() { awk -v s="$1" 'BEGIN { printf "%g %%", s * 100 }'; }

ratio() { # ratio A B -> A/B to one decimal
    awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.1f×", a / b; else print "n/a" }'
}
grouped() { # grouped N -> N rounded, thousands separated by spaces
    awk -v n="$1" 'BEGIN { if (n !~ /^-?[0-9.]+$/) { print n; exit } s = sprintf("%.0f", n); o = ""
        while (length(s) > 3) { o = " " substr(s, length(s) - 2) o; s = substr(s, 1, length(s) - 3) } print s o }'
}
row() { # row K LABEL KEY -> | label | strata | varnish | ratio | of share K
    local s v
    s=$(kv "$WORK/strata.$1.out" "$3")
    v=$(kv "$WORK/varnish.$1.out" "$3")
    printf '| %s | %s | %s | %s |\n' "$2" "$s" "$v" "$(ratio "$s" "$v")"
}
examples() { # examples ID -> Markdown list of the violations described
    sed -n 's/^example=/  - /p' "$WORK/$1.out"
}
# php_requests ID -> the PHP requests of the load: the nodes', the syncer's and WordPress's own
php_requests() {
    local p=${PHP[$1]}
    if [ "$p" = unreadable ]; then
        echo n/a
        return
    fi
    echo $(($(word page_gets "$p") + $(word comment_posts "$p") + $(word node_other "$p") + $(word syncer "$p") + $(word wordpress "$p")))
}
# if_checks OUT KEY -> the value of KEY in a stack-load output, "—" when it made no check
if_checks() { if [ "$(kv "$1" checks)" = 0 ]; then echo —; else kv "$1" "$2"; fi; }
# per_second N OUT -> N per second of the load of that stack-load output, to one decimal
per_second() {
    awk -v n="$1" -v s="$(kv "$2" seconds)" 'BEGIN { if (n ~ /^[0-9]+$/ && s > 0) printf "%.1f\n", n / s; else print "n/a" }'
}
# classes ID -> "miss + background + pass"
classes() { printf '%s + %s + %s' "${F_MISS[$1]}" "${F_BG[$1]}" "${F_PASS[$1]}"; }

if [ "${#SHARES[@]}" -gt 1 ]; then
    SHARE_TEXT="each of the comment shares $(join ', ' "${SHARES[@]}") in turn"
    PLOT_TITLE="Full stack, $NODES nodes $TITLE_WHERE, $CONNECTIONS clients: GET/s and PHP renders per comment by comment share"
    {
        echo "share,strata_get_rps,varnish_get_rps,strata_renders,varnish_renders"
        for k in "${!SHARES[@]}"; do
            printf '%s,%s,%s,%s,%s\n' "${SHARES[$k]}" "$(kv "$WORK/strata.$k.out" get_rps)" \
                "$(kv "$WORK/varnish.$k.out" get_rps)" \
                "$(per_comment "${FETCHES[strata.$k]}" "${LANDED[strata.$k]}" | tr -d '—')" \
                "$(per_comment "${FETCHES[varnish.$k]}" "${LANDED[varnish.$k]}" | tr -d '—')"
        done
    } >"$WORK/sweep.csv"
    "$LOAD_BIN" sweep-plot --out "$WORK/stack.svg" --table "$WORK/sweep.csv" --title "$PLOT_TITLE" ||
        die "stack-load sweep-plot failed"
else
    SHARE_TEXT="$(percent "${SHARES[0]}") of the requests comment POSTs"
    "$LOAD_BIN" plot --out "$WORK/stack.svg" --series "Strata=$WORK/strata.0.csv" --series "Varnish=$WORK/varnish.0.csv" \
        --title "Full stack, $NODES nodes $TITLE_WHERE, $CONNECTIONS clients, $(percent "${SHARES[0]}") comment POSTs" ||
        die "stack-load plot failed"
fi

version=$("$STRATA_BIN" --version 2>/dev/null || echo "strata-proxy ?")
rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "?")
loads=()
for k in "${!SHARES[@]}"; do loads+=("${SHARES[$k]}: ${LOADAVG[strata.$k]} / ${LOADAVG[varnish.$k]}"); done

{
    echo "# Full-stack benchmark: Strata cluster against a Varnish cluster, $TITLE_WHERE"
    echo
    echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC'); machine: $(nproc) CPUs (${CPU:-unknown CPU}), $(uname -sr)."
    echo "- Versions: $version (commit $rev), $(varnishd -V 2>&1 | head -n 1 | sed -E 's/ revision ([0-9a-f]{8})[0-9a-f]*/ (\1)/')."
    echo "- $NODES nodes per system, $TITLE_WHERE (\`DIRECTOR=$DIRECTOR\`); \`stack-load\`: $CONNECTIONS clients in a"
    echo "  closed loop for $DURATION per system and share, $SPREAD; $SHARE_TEXT."
    echo "  A comment POST has a unique author, e-mail, text and \`X-Forwarded-For\` and goes to a random one of"
    echo "  $POST_COUNT open posts; the rest are GETs cycling over all $PATH_COUNT published posts (\`Accept-Encoding: gzip\`)."
    echo "- For every share, each system starts afresh (empty caches; for Strata a new queue and syncer) and is"
    echo "  warmed (every path on every node) before its load; the origin counts below start after the warm-up."
    echo "  Strata then Varnish, share after share. Everything — load generator, director, caches, syncer,"
    echo "  memcached, PHP-FPM, nginx, MariaDB — shares the same cores. CPUs busy before the run: $CPU_BUSY_BEFORE %."
    echo "  Load average when each load started (share: Strata / Varnish; it includes the run's own"
    echo "  previous phase): $(join '; ' "${loads[@]}")."
    echo "- Strata: strata-proxy × $NODES as one cluster, comments written behind (\`hold = \"$HOLD\"\`,"
    echo "  \`max_hold = \"$MAX_HOLD\"\`, memcached queue), one strata-syncer banning on every node."
    echo "- Varnish: varnishd × $NODES (\`benches/config/stack.vcl\`, \`-s malloc,512m\`); comments go to PHP;"
    echo "  the POST bans the host on its own node, and a mu-plugin sends a BAN to every node on"
    echo "  \`comment_post\` (as a purge plugin does)."
    echo "- Read-your-writes: after a POST answered 302 to \`#comment-ID\`, the same client GETs the post"
    echo "  through the next node (the next connection to the VIP behind the director), without cookies;"
    echo "  a page without \`id=\"comment-ID\"\` is a violation."
    echo
    echo "## What the comments cost the origin"
    echo
    echo "| comment share | Strata GET/s | Varnish GET/s | Strata / Varnish | Strata GET p99 ms | check GET p50 ms (S / V) | violations (S / V) | comments (S / V) | PHP renders per comment (S / V) | origin fetches, Strata: miss + background + pass | Varnish: miss + background + pass |"
    echo "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
    for k in "${!SHARES[@]}"; do
        s=$WORK/strata.$k.out v=$WORK/varnish.$k.out
        printf '| %s | %s | %s | %s | %s | %s / %s | %s / %s | %s / %s | %s / %s | %s = %s | %s = %s |\n' \
            "$(percent "${SHARES[$k]}")" "$(grouped "$(kv "$s" get_rps)")" "$(grouped "$(kv "$v" get_rps)")" \
            "$(ratio "$(kv "$s" get_rps)" "$(kv "$v" get_rps)")" "$(kv "$s" get_p99_ms)" \
            "$(if_checks "$s" check_p50_ms)" "$(if_checks "$v" check_p50_ms)" "$(kv "$s" violations)" "$(kv "$v" violations)" \
            "${LANDED[strata.$k]}" "${LANDED[varnish.$k]}" \
            "$(per_comment "${FETCHES[strata.$k]}" "${LANDED[strata.$k]}")" \
            "$(per_comment "${FETCHES[varnish.$k]}" "${LANDED[varnish.$k]}")" \
            "$(grouped "${FETCHES[strata.$k]}")" "$(classes "strata.$k")" \
            "$(grouped "${FETCHES[varnish.$k]}")" "$(classes "varnish.$k")"
    done
    echo
    echo "- **PHP renders per comment** = origin fetches during the load (after the warm-up) ÷ comments"
    echo "  accepted (in MySQL after the load). Origin fetches: Strata \`strata_proxy_origin_requests_total\`, summed over"
    echo "  the nodes, of which misses a visitor waited on and background refreshes"
    echo "  (\`strata_proxy_origin_fetches_total{class}\`; a build without it: refreshes started,"
    echo "  \`strata_proxy_background_refreshes_total\`, and the rest) and passes (\`strata_proxy_passes_total\`); a fill"
    echo "  answered by a key's home node is no origin fetch; Varnish \`MAIN.backend_req\`, of which"
    echo "  background fetches (\`MAIN.s_bgfetch\`), passes (\`MAIN.s_pass\`: the comment POSTs) and misses"
    echo "  (\`MAIN.s_fetch\` less those). With no comments the column shows —; the fetches are then what a"
    echo "  warm cache still asked for. When PHP is saturated (the origin fetches per second of each share's"
    echo "  details stay at what PHP can render), the figure is PHP's budget shared out over the comments"
    echo "  accepted rather than what each comment needs."
    echo
    if [ -n "${BASELINE:-}" ]; then
        echo "## This build against the baseline build"
        echo
        echo "The same Strata phase, run right after this tree's with the binaries of \`BASELINE\`"
        echo "($("$BASELINE/strata-proxy" --version 2>/dev/null || echo "strata-proxy ?"), from \`$BASELINE\`), same share, same"
        echo "warm-up, same load; figures as above."
        echo
        echo "| comment share | GET/s (this / baseline) | this / baseline | GET p99 ms | check GET p50 ms | violations | comments | PHP renders per comment | origin fetches: miss + background + pass (this; baseline) |"
        echo "|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
        for k in "${!SHARES[@]}"; do
            s=$WORK/strata.$k.out v=$WORK/baseline.$k.out
            printf '| %s | %s / %s | %s | %s / %s | %s / %s | %s / %s | %s / %s | %s / %s | %s = %s; %s = %s |\n' \
                "$(percent "${SHARES[$k]}")" "$(grouped "$(kv "$s" get_rps)")" "$(grouped "$(kv "$v" get_rps)")" \
                "$(ratio "$(kv "$s" get_rps)" "$(kv "$v" get_rps)")" "$(kv "$s" get_p99_ms)" "$(kv "$v" get_p99_ms)" \
                "$(if_checks "$s" check_p50_ms)" "$(if_checks "$v" check_p50_ms)" "$(kv "$s" violations)" "$(kv "$v" violations)" \
                "${LANDED[strata.$k]}" "${LANDED[baseline.$k]}" \
                "$(per_comment "${FETCHES[strata.$k]}" "${LANDED[strata.$k]}")" \
                "$(per_comment "${FETCHES[baseline.$k]}" "${LANDED[baseline.$k]}")" \
                "$(grouped "${FETCHES[strata.$k]}")" "$(classes "strata.$k")" \
                "$(grouped "${FETCHES[baseline.$k]}")" "$(classes "baseline.$k")"
        done
        echo
        for k in "${!SHARES[@]}"; do
            echo "- Share $(percent "${SHARES[$k]}"), baseline: ${CLASSES[baseline.$k]}; ${EXTRA[baseline.$k]}."
        done
        echo
    fi
    echo "What PHP saw (the origin's nginx access log, \`access_log\` of \`scripts/origin/nginx.conf\`, during each load): requests from"
    echo "the nodes — pages rendered (GET) and comments taken (POST) —, the syncer's permalink look-ups,"
    echo "WordPress's own (wp-cron), and their total per comment; requests from any other client are left"
    echo "out and counted apart. The log tells clients apart by \`User-Agent\` only: another strata-proxy or"
    echo "strata-syncer using the same origin meanwhile counts as this run's (the 0 % rows show how much"
    echo "of that there was: this run's nodes fetch nothing there)."
    echo
    echo "| comment share | system | page GETs | comment POSTs | other from the nodes | syncer | WordPress's own | PHP requests per comment | other clients (left out) |"
    echo "|--:|---|--:|--:|--:|--:|--:|--:|--:|"
    for k in "${!SHARES[@]}"; do
        for sys in strata varnish; do
            p=${PHP[$sys.$k]}
            if [ "$p" = unreadable ]; then
                printf '| %s | %s | n/a | | | | | | |\n' "$(percent "${SHARES[$k]}")" "${sys^}"
                continue
            fi
            printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$(percent "${SHARES[$k]}")" "${sys^}" \
                "$(word page_gets "$p")" "$(word comment_posts "$p")" "$(word node_other "$p")" \
                "$(word syncer "$p")" "$(word wordpress "$p")" \
                "$(per_comment "$(php_requests "$sys.$k")" "${LANDED[$sys.$k]}")" "$(word other_clients "$p")"
        done
    done
    echo
    if [ "${#SHARES[@]}" -gt 1 ]; then
        echo "![GET/s and PHP renders per comment by comment share, both systems]($(basename "$PLOT"))"
    else
        echo "![GET/s and POST/s over time, both systems]($(basename "$PLOT"))"
    fi
    for k in "${!SHARES[@]}"; do
        echo
        echo "## Comment share $(percent "${SHARES[$k]}")"
        echo
        echo "| | Strata | Varnish | Strata / Varnish |"
        echo "|---|--:|--:|--:|"
        row "$k" "GET req/s" get_rps
        row "$k" "comment POST req/s" post_rps
        row "$k" "read-your-writes checks" checks
        row "$k" "violations" violations
        row "$k" "… showing the comment 1 s later" violations_late
        row "$k" "… still without it 1 s later" violations_stale
        row "$k" "POST 302 without #comment (no verdict in time)" held
        row "$k" "errors" errors
        row "$k" "GET p50 ms" get_p50_ms
        row "$k" "GET p99 ms" get_p99_ms
        row "$k" "POST p50 ms" post_p50_ms
        row "$k" "POST p99 ms" post_p99_ms
        row "$k" "check GET p50 ms" check_p50_ms
        row "$k" "check GET p99 ms" check_p99_ms
        printf '| comments in MySQL | %s | %s | |\n' "${LANDED[strata.$k]}" "${LANDED[varnish.$k]}"
        printf '| origin fetches during the load | %s | %s | |\n' "${FETCHES[strata.$k]}" "${FETCHES[varnish.$k]}"
        printf '| … misses / background / passes | %s / %s / %s | %s / %s / %s | |\n' \
            "${F_MISS[strata.$k]}" "${F_BG[strata.$k]}" "${F_PASS[strata.$k]}" \
            "${F_MISS[varnish.$k]}" "${F_BG[varnish.$k]}" "${F_PASS[varnish.$k]}"
        printf '| origin fetches per second of load | %s | %s | |\n' \
            "$(per_second "${FETCHES[strata.$k]}" "$WORK/strata.$k.out")" \
            "$(per_second "${FETCHES[varnish.$k]}" "$WORK/varnish.$k.out")"
        printf '| PHP renders per comment | %s | %s | |\n' \
            "$(per_comment "${FETCHES[strata.$k]}" "${LANDED[strata.$k]}")" \
            "$(per_comment "${FETCHES[varnish.$k]}" "${LANDED[varnish.$k]}")"
        echo
        echo "- Warm-up: Strata $(cat "$WORK/strata.$k.warm.out"); Varnish $(cat "$WORK/varnish.$k.warm.out")."
        echo "- Errors by kind: Strata $(kv "$WORK/strata.$k.out" errors_by); Varnish $(kv "$WORK/varnish.$k.out" errors_by)."
        echo "- Strata origin fetches by class: ${CLASSES[strata.$k]}."
        echo "- Varnish origin fetches by class: ${CLASSES[varnish.$k]}."
        echo "- Strata: ${EXTRA[strata.$k]}."
        echo "- Varnish: ${EXTRA[varnish.$k]}."
        for s in strata varnish; do
            if [ -n "$(examples "$s.$k")" ]; then
                echo "- Violations seen through ${s^} (first few):"
                examples "$s.$k"
            fi
        done
    done
    echo
    echo "## The run"
    echo
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
