#!/usr/bin/env bash
# The hit path's cost in CPU instructions per request, counted by valgrind's callgrind:
# a figure that does not move with whatever else the machine is doing, so two builds can
# be compared exactly (benches/run.sh measures requests per second, which a busy machine
# lowers). Each build named on the command line runs strata-proxy under callgrind in front
# of the demo WordPress; after every page has been stored, the counters are zeroed and a
# fixed number of hits is sent over one keep-alive connection, per profile:
#
#   hot  identity   the same post, no Accept-Encoding
#   hot  gzip       the same post, Accept-Encoding: gzip
#   mix  identity   every post path in turn, no Accept-Encoding
#   mix  gzip       every post path in turn, Accept-Encoding: gzip
#
# Usage: benches/hitcost.sh [LABEL=BINARY ...]
#   With no argument, builds this tree's strata-proxy (release) and measures it.
#   REQUESTS=N (default 2000) hits per profile. RESULTS=FILE (default
#   benches/results/hitcost.md) receives the table.
# Example, a change against the commit before it:
#   git worktree add /tmp/base HEAD~1 && (cd /tmp/base && cargo build --release -p strata-proxy)
#   benches/hitcost.sh base=/tmp/base/target/release/strata-proxy now=target/release/strata-proxy
#
# Needs the origin of scripts/wordpress.sh on 127.0.0.1:8081; uses 127.0.0.1:8085 and
# :9085 for the proxy under test. Every request is an answer from memory: a profile whose
# answers are not all HITs is reported as such and its figure left out.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"
REQUESTS=${REQUESTS:-2000}
RESULTS=${RESULTS:-$ROOT/benches/results/hitcost.md}
HOST_HEADER=127.0.0.1:8080
ORIGIN=http://127.0.0.1:8081
PORT=8085
ADMIN=9085
[[ $REQUESTS =~ ^[0-9]+$ && $REQUESTS -gt 0 ]] || die "REQUESTS must be a positive number"

ensure_tools valgrind=valgrind callgrind_control=valgrind curl=curl

WORK=$(mktemp -d /tmp/strata-hitcost.XXXXXX)
VPID=
cleanup() {
    [ -n "$VPID" ] && stop_pid "$VPID"
    rm -rf "$WORK"
}
trap cleanup EXIT

builds=("$@")
if [ ${#builds[@]} -eq 0 ]; then
    log "building strata-proxy (release)"
    (cd "$ROOT" && cargo build --release -p strata-proxy) >"$WORK/build.log" 2>&1 || {
        tail -n 30 "$WORK/build.log" >&2
        die "strata-proxy failed to build"
    }
    builds=("this-tree=${CARGO_TARGET_DIR:-$ROOT/target}/release/strata-proxy")
fi
for i in "${!builds[@]}"; do
    b=${builds[$i]}
    [[ $b == *=* ]] || die "arguments are LABEL=BINARY, got '$b'"
    [ -x "${b#*=}" ] || die "${b#*=} is not an executable"
    # The proxy runs in the work directory: make the path absolute.
    builds[$i]="${b%%=*}=$(cd "$(dirname "${b#*=}")" && pwd)/$(basename "${b#*=}")"
done

code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 30 -H "Host: $HOST_HEADER" "$ORIGIN/") || code=000
[ "$code" = 200 ] || die "the origin at $ORIGIN answered $code: run scripts/wordpress.sh first"
bash "$ROOT/scripts/wordpress-urls.sh" | grep '^/' >"$WORK/paths.txt"
PATH_COUNT=$(wc -l <"$WORK/paths.txt")
[ "$PATH_COUNT" -gt 0 ] || die "scripts/wordpress-urls.sh printed no paths"
HOT=$(head -n 1 "$WORK/paths.txt")

# One curl process, one keep-alive connection, $REQUESTS requests.
url_list() {
    local profile=$1 i=0
    if [ "$profile" = hot ]; then
        for ((i = 0; i < REQUESTS; i++)); do echo "url = \"http://127.0.0.1:$PORT$HOT\""; done
    else
        while [ "$i" -lt "$REQUESTS" ]; do
            while read -r p && [ "$i" -lt "$REQUESTS" ]; do
                echo "url = \"http://127.0.0.1:$PORT$p\""
                i=$((i + 1))
            done <"$WORK/paths.txt"
        done
    fi
}
for load in hot mix; do url_list "$load" >"$WORK/$load.urls"; done

# Sends a load's requests; prints how many answers were HITs.
send() {
    local load=$1 enc=$2
    local -a hdr=(-H "Host: $HOST_HEADER")
    [ "$enc" = gzip ] && hdr+=(-H 'Accept-Encoding: gzip')
    curl -s --max-time 600 "${hdr[@]}" -o /dev/null -D - -K "$WORK/$load.urls" |
        grep -ci '^x-cache: hit' || true
}

# Instructions counted since the last zeroing, read from a fresh dump.
dump_total() {
    local pid=$1 before after f
    before=$(ls "$WORK"/callgrind.out.* 2>/dev/null | wc -l)
    callgrind_control -d "$pid" >/dev/null 2>&1
    for _ in $(seq 1 100); do
        after=$(ls "$WORK"/callgrind.out.* 2>/dev/null | wc -l)
        [ "$after" -gt "$before" ] && break
        sleep 0.1
    done
    f=$(ls -t "$WORK"/callgrind.out.* | head -n 1)
    sed -n 's/^summary: *\([0-9]*\).*/\1/p; s/^totals: *\([0-9]*\).*/\1/p' "$f" | head -n 1
}

declare -A IR=()
declare -A NOTE=()
for b in "${builds[@]}"; do
    label=${b%%=*}
    bin=${b#*=}
    cat >"$WORK/strata.toml" <<EOF
[server]
listen = "127.0.0.1:$PORT"
admin_listen = "127.0.0.1:$ADMIN"
[origin]
url = "$ORIGIN"
[cache]
capacity = "512MiB"
default_ttl = "1h"
grace = "1h"
[cluster]
node_id = "hitcost"
secret_file = "cluster.secret"
EOF
    (umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$WORK/cluster.secret")
    rm -f "$WORK"/callgrind.out.*
    log "$label: starting $bin under callgrind"
    (cd "$WORK" && exec valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.out.%p" \
        --dump-instr=no --collect-systime=no "$bin" --config "$WORK/strata.toml") >"$WORK/$label.log" 2>&1 &
    VPID=$!
    up=0
    for _ in $(seq 1 600); do
        if [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$ADMIN/healthz")" = 200 ]; then
            up=1
            break
        fi
        kill -0 "$VPID" 2>/dev/null || break
        sleep 0.2
    done
    [ "$up" = 1 ] || {
        tail -n 20 "$WORK/$label.log" >&2
        die "$label did not come up"
    }
    # Store every page in both encodings, twice (the second pass must be all HITs).
    for enc in identity gzip; do
        send mix "$enc" >/dev/null
        send hot "$enc" >/dev/null
    done
    for load in hot mix; do
        for enc in identity gzip; do
            callgrind_control -z "$VPID" >/dev/null 2>&1
            hits=$(send "$load" "$enc")
            ir=$(dump_total "$VPID")
            if [ "$hits" -ne "$REQUESTS" ]; then
                NOTE[$label/$load/$enc]="only $hits of $REQUESTS were HITs"
                warn_line="$label $load $enc: ${NOTE[$label/$load/$enc]}"
                printf 'WARNING: %s\n' "$warn_line" >&2
            else
                IR[$label/$load/$enc]=$((ir / REQUESTS))
                log "$label $load $enc: $((ir / REQUESTS)) instructions per hit"
            fi
        done
    done
    stop_pid "$VPID"
    VPID=
done

{
    echo "# Hit path: instructions per request (callgrind)"
    echo
    echo "$(date -u +%Y-%m-%dT%H:%MZ), $(uname -m), $(valgrind --version), $REQUESTS hits per profile over one"
    echo "keep-alive HTTP/1.1 connection after every page was stored; hot: \`$HOT\`, mix: $PATH_COUNT"
    echo "post paths in turn. Counts every thread of the proxy (accept, parse, lookup,"
    echo "delivery, background tasks) and nothing of the client. Produced by \`benches/hitcost.sh\`."
    echo
    printf '| build |'
    for load in hot mix; do for enc in identity gzip; do printf ' %s %s |' "$load" "$enc"; done; done
    echo
    printf '|---|'
    for _ in 1 2 3 4; do printf -- '--:|'; done
    echo
    for b in "${builds[@]}"; do
        label=${b%%=*}
        printf '| %s |' "$label"
        for load in hot mix; do
            for enc in identity gzip; do
                printf ' %s |' "${IR[$label/$load/$enc]:-n/a (${NOTE[$label/$load/$enc]:-no figure})}"
            done
        done
        echo
    done
    if [ ${#builds[@]} -gt 1 ]; then
        first=${builds[0]%%=*}
        echo
        echo "Ratio to \`$first\` (lower is cheaper):"
        echo
        for b in "${builds[@]:1}"; do
            label=${b%%=*}
            printf '| %s / %s |' "$label" "$first"
            for load in hot mix; do
                for enc in identity gzip; do
                    a=${IR[$first/$load/$enc]:-}
                    c=${IR[$label/$load/$enc]:-}
                    if [ -n "$a" ] && [ -n "$c" ]; then
                        printf ' %s |' "$(awk -v a="$a" -v c="$c" 'BEGIN { printf "%.3f", c / a }')"
                    else
                        printf ' n/a |'
                    fi
                done
            done
            echo
        done
    fi
} >"$RESULTS"
cat "$RESULTS"
