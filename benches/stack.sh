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
# `stack-load` keeps CONNECTIONS clients in a closed loop for DURATION per system; each
# request goes to the next node (the next connection to the VIP). POST_SHARE of the requests are comment POSTs (unique author,
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
#   DIRECTOR      1: the nodes behind strata-director in network namespaces (default);
#                 0: everything on loopback, the load generator picks the node
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

[[ $DIRECTOR =~ ^[01]$ ]] || die "DIRECTOR must be 1 (behind strata-director) or 0 (loopback)"
[[ $NODES =~ ^[2-8]$ ]] || die "NODES must be 2 to 8 (the read-your-writes check reads through another node)"
[[ $CONNECTIONS =~ ^[1-9][0-9]*$ && $MAX_REQUESTS =~ ^[1-9][0-9]*$ ]] ||
    die "CONNECTIONS and MAX_REQUESTS must be positive integers"
[[ $DURATION =~ ^[1-9][0-9]*(s|m)?$ ]] || die "DURATION must be like 20s or 2m"
DURATION=$(with_unit "$DURATION")
awk -v s="$POST_SHARE" 'BEGIN { exit !(s ~ /^(0|1|0?\.[0-9]+)$/ && s >= 0 && s <= 1) }' ||
    die "POST_SHARE must be a fraction between 0 and 1 (e.g. 0.01)"

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

STRATA_BIN=$TARGET_DIR/release/strata-proxy
SYNCER_BIN=$TARGET_DIR/release/strata-syncer
LOAD_BIN=$TARGET_DIR/release/stack-load
DIRECTOR_BIN=$TARGET_DIR/release/strata-director
build_release "$STRATA_BIN" "$SYNCER_BIN" "$LOAD_BIN" "$DIRECTOR_BIN"

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

# run_load SYSTEM SUFFIX NODE-ADDR…: warms the nodes (each through its own address), then the
# load on LOAD_TARGETS (from the client's namespace behind the director) with its progress line.
run_load() {
    local system=$1 suffix=$2
    shift 2
    local nodes targets client=()
    nodes=$(join , "$@")
    targets=$nodes
    if [ "$DIRECTOR" = 1 ]; then
        client=(ip netns exec "$RIG-cli")
        targets=$(join , "${LOAD_TARGETS[@]}")
    fi
    log "$system: warming $PATH_COUNT paths on $# nodes"
    "$LOAD_BIN" warm --nodes "$nodes" --host "$HOST_HEADER" --paths "$WORK/paths.txt" --concurrency 4 \
        >"$WORK/$system-warm.out" 2>"$WORK/$system-warm.err" || die "stack-load warm failed: $(cat "$WORK/$system-warm.err")"
    log "$system: $(cat "$WORK/$system-warm.out")"
    LOADAVG[$system]=$(cut -d' ' -f1 /proc/loadavg)
    log "$system: $CONNECTIONS clients for $DURATION, $POST_SHARE of the requests comment POSTs"
    "${client[@]}" "$LOAD_BIN" run --system "$system" --nodes "$targets" --host "$HOST_HEADER" --paths "$WORK/paths.txt" \
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
# Behind the director the admin listeners are on every address of a node: name who may use
# them (this namespace on the host link — the syncer, the warm-up, the counters —, the other
# nodes, the director's health checks), so that /cluster answers this namespace unsigned.
ADMIN_ALLOW=""
if [ "$DIRECTOR" = 1 ]; then
    allow=("127.0.0.1" "$HOST_ADDR" "192.0.2.2" "$HOST_NET.2")
    for i in $(seq 1 "$NODES"); do allow+=("192.0.2.$((10 + i))" "$HOST_NET.$((10 + i))"); done
    ADMIN_ALLOW="admin_allow = $(toml_list "${allow[@]}")"
fi
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
    (cd "$WORK" && on_node "$i" "$STRATA_BIN" --config "strata-$i.toml") >"$WORK/strata-$i.log" 2>&1 &
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
[ "$DIRECTOR" = 1 ] && start_director 9080 /healthz
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
# director_spread SYSTEM: the director's new flows per node, and what it forwarded.
director_spread() {
    [ "$DIRECTOR" = 1 ] || return 0
    EXTRA[$1]+="; director: new flows per node $(labels strata_director_node_new_flows_total "$DIRECTOR_ADMIN"),"
    EXTRA[$1]+=" frames received $(metric strata_director_rx_frames_total "" "$DIRECTOR_ADMIN")"
}
director_spread strata
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
# Behind the director the nodes reach the origin through the relay, and the WordPress host's
# BANs come from the relay's address.
sed -e "s|^    .host = \"127.0.0.1\";|    .host = \"${NODE_ORIGIN%:*}\";|" \
    -e "s|^    \"127.0.0.1\";|    \"127.0.0.1\";\n    \"$HOST_ADDR\";|" "$ROOT/benches/config/stack.vcl" >"$WORK/stack.vcl"
grep -q "\.host = \"${NODE_ORIGIN%:*}\"" "$WORK/stack.vcl" || die "could not set the backend of the VCL"
for i in $(seq 1 "$NODES"); do
    mkdir -p "$WORK/varnish-$i"
    listen=${VARNISH_ADDR[$((i - 1))]}
    [ "$DIRECTOR" = 1 ] && listen=:80 # the node's address and the VIP
    (on_node "$i" varnishd -F -n "$WORK/varnish-$i" -a "$listen" -T none -f "$WORK/stack.vcl" \
        -s malloc,512m) >"$WORK/varnish-$i.log" 2>&1 &
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
[ "${PURGE_ERRORS:-0}" = 0 ] ||
    NOTES+=("the purge mu-plugin could not ban some Varnish nodes ($PURGE_ERRORS failures; see the PHP log): the Varnish figures are not those of a working cluster")
director_spread varnish
stop_all
delete_comments
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
"$LOAD_BIN" plot --out "$WORK/stack.svg" --series "Strata=$WORK/strata.csv" --series "Varnish=$WORK/varnish.csv" \
    --title "Full stack, $NODES nodes $TITLE_WHERE, $CONNECTIONS clients, $(awk -v s="$POST_SHARE" 'BEGIN { printf "%g", s * 100 }') % comment POSTs" ||
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
    echo "# Full-stack benchmark: Strata cluster against a Varnish cluster, $TITLE_WHERE"
    echo
    echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC'); machine: $(nproc) CPUs (${CPU:-unknown CPU}), $(uname -sr)."
    echo "- Versions: $version (commit $rev), $(varnishd -V 2>&1 | head -n 1 | sed -E 's/ revision ([0-9a-f]{8})[0-9a-f]*/ (\1)/')."
    echo "- $NODES nodes per system; \`stack-load\`: $CONNECTIONS clients in a closed loop for $DURATION per system,"
    echo "  $SPREAD; $POST_SHARE of the requests are comment"
    echo "  POSTs (unique author, e-mail, text, \`X-Forwarded-For\`) to a random one of $POST_COUNT open posts, the"
    echo "  rest GETs cycling over all $PATH_COUNT published posts (\`Accept-Encoding: gzip\`). Caches warmed first"
    echo "  (every path on every node). Everything — load generator, director, caches, syncer, memcached, PHP-FPM,"
    echo "  nginx, MariaDB — shares the same cores. Load average when each load started: Strata"
    echo "  ${LOADAVG[strata]}, Varnish ${LOADAVG[varnish]}."
    echo "- Strata: strata-proxy × $NODES as one cluster, comments written behind (\`hold = \"$HOLD\"\`,"
    echo "  \`max_hold = \"$MAX_HOLD\"\`, memcached queue), one strata-syncer banning on every node."
    echo "- Varnish: varnishd × $NODES (\`benches/config/stack.vcl\`, \`-s malloc,512m\`); comments go to PHP;"
    echo "  the POST bans the host on its own node, and a mu-plugin sends a BAN to every node on"
    echo "  \`comment_post\` (as a purge plugin does)."
    echo "- Read-your-writes: after a POST answered 302 to \`#comment-ID\`, the same client GETs the post"
    echo "  through the next node (the next connection to the VIP behind the director), without cookies;"
    echo "  a page without \`id=\"comment-ID\"\` is a violation."
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
