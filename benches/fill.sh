#!/usr/bin/env bash
# Strata fill test: does strata-proxy's memory stay bounded by its cache
# capacity while it fills with many distinct objects?
#
# Puts strata-proxy in front of the bare server (which answers every path with
# the same ~16 KiB HTML page), sends COUNT GET requests for distinct paths
# through it (each one a miss: the proxy fetches, gzips and brotli-compresses
# the page and stores it), then reads the proxy's VmRSS and VmHWM and its cache
# metrics and compares the RSS with capacity × 1.1 + 64 MiB. A measurement
# printed for people, not a test: the exit status does not depend on it.
#
#   benches/fill.sh                              # 100000 objects, 256MiB cache
#   CAPACITY=512MiB benches/fill.sh
#   CAPACITY="256MiB 512MiB" COUNT=20000 benches/fill.sh
#
# Environment:
#   COUNT         requests (= distinct objects) per capacity (default 100000)
#   CONCURRENCY   requests in flight (default 32)
#   CAPACITY      [cache] capacity; several, space-separated, run one after the other
#                 on a fresh proxy each (default 256MiB)
#   PAGE_SIZE     approximate size in bytes of the synthetic page (default 16384)
#   FILL_TIMEOUT  longest a fill may take (default 300s)
#   RESULTS       where the Markdown report goes (default benches/results/fill.md)
#   SKIP_BUILD=1  do not run cargo build (use the binaries already in target/release)
#   KEEP_WORK=1   keep the temporary work directory (logs, config, page)
#
# Ports (all 127.0.0.1): bare server 8093 (origin), strata-proxy 8094 (admin 9094).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"
COUNT=${COUNT:-100000}
CONCURRENCY=${CONCURRENCY:-32}
CAPACITY=${CAPACITY:-256MiB}
PAGE_SIZE=${PAGE_SIZE:-16384}
FILL_TIMEOUT=$(with_unit "${FILL_TIMEOUT:-300s}")
RESULTS=${RESULTS:-$ROOT/benches/results/fill.md}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
CARGO=${CARGO:-cargo}

ORIGIN_ADDR=127.0.0.1:8093
PROXY_ADDR=127.0.0.1:8094
ADMIN_ADDR=127.0.0.1:9094
HOST_HEADER=fill.example.test
MIB=1048576


# ---------------------------------------------------------------------------
# Work directory and clean-up: every process this script starts is in PIDS.

WORK=$(mktemp -d /tmp/strata-fill.XXXXXX)
PIDS=()


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

for tool in curl gzip awk; do
    command -v "$tool" >/dev/null || die "$tool is needed"
done
for n in "$COUNT" "$CONCURRENCY" "$PAGE_SIZE"; do
    [[ $n =~ ^[1-9][0-9]*$ ]] || die "COUNT, CONCURRENCY and PAGE_SIZE must be positive integers (got $n)"
done

# Something already answering on a port would be measured instead of our servers.
for addr in "$ORIGIN_ADDR" "$PROXY_ADDR" "$ADMIN_ADDR"; do
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
for bin in "$STRATA_BIN" "$BARE_BIN" "$FILL_BIN"; do
    [ -x "$bin" ] || die "$bin not found (build with: cargo build --release -p strata-proxy -p strata-bench)"
done

# ---------------------------------------------------------------------------
# The page: a synthetic WordPress post of about PAGE_SIZE bytes. Head with
# inline styles, menu, paragraphs of pseudo-random English words with links and
# emphasis, comments, sidebar. Deterministic (Park-Miller generator, exact in
# any awk's doubles), so every run serves the same bytes; it compresses about
# 3.5× with gzip -6, like a real page.

gen_page() {
    awk -v TARGET="$PAGE_SIZE" '
function rnd() { seed = (seed * 16807) % 2147483647; return seed / 2147483647 }
function pick(n) { return int(rnd() * n) + 1 }
function cap(w) { return toupper(substr(w, 1, 1)) substr(w, 2) }
function out(s) { printf "%s\n", s; size += length(s) + 1 }
function sentence(   n, s, i, w) {
    n = 6 + pick(14)
    s = cap(words[pick(nw)])
    for (i = 2; i <= n; i++) {
        w = words[pick(nw)]
        if (rnd() < 0.04) w = "<a href=\"https://example.test/" words[pick(nw)] "-" words[pick(nw)] "/\">" w "</a>"
        else if (rnd() < 0.03) w = "<strong>" w "</strong>"
        else if (rnd() < 0.02) w = w " " (1990 + pick(35))
        s = s (rnd() < 0.08 ? ", " : " ") w
    }
    return s (rnd() < 0.1 ? "?" : ".")
}
BEGIN {
    seed = 20240611
    nw = split("the of and to in a is that for it as was with be by on not he this are or his from at which " \
        "but have an they you were her she there been one all we their has would when if so no will more time " \
        "can about like other some into them could our only new people these its first also after two over " \
        "years world how work through back well most much because year those where life before very state good " \
        "day same between while still number part government local under house system during water city small " \
        "place school great right large might never course family without however within really garden coffee " \
        "morning kitchen recipe travel summer winter autumn spring weekend music book review season weather " \
        "bread market river mountain village coast island forest trail camera photo light street window table " \
        "chair plant flower tomato basil olive lemon honey butter flour sugar salt pepper garlic onion cheese " \
        "wine tea bicycle train station bridge harbour museum gallery library theatre concert festival " \
        "neighbour community project update release version feature support plugin theme widget comment " \
        "category archive tag author editor reader story chapter note draft", words, " ")
    nt = split("Uncategorized|Gardening|Recipes|Travel|Photography|Books|Music|Local news|Cycling|Weekend notes", tag, "|")
    nc = split("black|cyan-bluish-gray|white|pale-pink|vivid-red|luminous-vivid-orange|luminous-vivid-amber|" \
        "light-green-cyan|vivid-green-cyan|pale-cyan-blue|vivid-cyan-blue|vivid-purple", col, "|")
    out("<!DOCTYPE html>")
    out("<html lang=\"en-US\">")
    out("<head>")
    out("<meta charset=\"UTF-8\">")
    out("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">")
    out("<title>Notes from the garden &#8211; Strata fill test</title>")
    out("<link rel=\"stylesheet\" id=\"wp-block-library-css\" href=\"https://example.test/wp-includes/css/dist/block-library/style.min.css?ver=6.5\" media=\"all\">")
    out("<link rel=\"stylesheet\" id=\"theme-style-css\" href=\"https://example.test/wp-content/themes/twentytwentyfour/style.css?ver=1.1\" media=\"all\">")
    out("<script src=\"https://example.test/wp-includes/js/jquery/jquery.min.js?ver=3.7.1\" id=\"jquery-core-js\"></script>")
    out("<style id=\"global-styles-inline-css\">")
    s = "body{"
    for (i = 1; i <= nc; i++) s = s sprintf("--wp--preset--color--%s: #%06x;", col[i], int(rnd() * 16777215))
    for (i = 1; i <= 12; i++) s = s sprintf("--wp--preset--font-size--size-%d: %dpx;", i, 10 + 2 * i)
    out(s "}")
    for (i = 1; i <= nc; i++) {
        out(sprintf(".has-%s-color{color: var(--wp--preset--color--%s) !important;}", col[i], col[i]))
        out(sprintf(".has-%s-background-color{background-color: var(--wp--preset--color--%s) !important;}", col[i], col[i]))
        out(sprintf(".has-%s-border-color{border-color: var(--wp--preset--color--%s) !important;}", col[i], col[i]))
    }
    out("</style>")
    out("</head>")
    out("<body class=\"post-template-default single single-post postid-42 single-format-standard\">")
    out("<header class=\"site-header\"><nav class=\"main-navigation\"><ul class=\"menu\">")
    for (i = 1; i <= nt; i++) out(sprintf("<li class=\"menu-item menu-item-%d\"><a href=\"https://example.test/category/%d/\">%s</a></li>", 100 + i, i, tag[i]))
    out("</ul></nav></header>")
    out("<main id=\"main\" class=\"site-main\"><article id=\"post-42\" class=\"post-42 post type-post status-publish\">")
    out("<h1 class=\"entry-title\">Notes from the garden</h1>")
    # The end of the page, made first so that the paragraphs can fill up to TARGET.
    t = "</article>\n<section id=\"comments\" class=\"comments-area\"><h2 class=\"comments-title\">3 thoughts on &ldquo;Notes from the garden&rdquo;</h2><ol class=\"comment-list\">\n"
    for (c = 1; c <= 3; c++) t = t sprintf("<li id=\"comment-%d\" class=\"comment even depth-1\"><article class=\"comment-body\"><footer class=\"comment-meta\"><b class=\"fn\">%s</b></footer><div class=\"comment-content\"><p>%s</p></div></article></li>\n", c, cap(words[pick(nw)]), sentence())
    t = t "</ol></section></main>\n<aside id=\"secondary\" class=\"widget-area\"><section class=\"widget widget_recent_entries\"><h2 class=\"widget-title\">Recent posts</h2><ul>\n"
    for (r = 1; r <= 12; r++) {
        a = words[pick(nw)]; b = words[pick(nw)]
        t = t sprintf("<li><a href=\"https://example.test/%d/%02d/%s-%s/\">%s %s</a><span class=\"post-date\">%s %d, %d</span></li>\n", 2015 + pick(9), pick(12), a, b, cap(a), b, substr("JanFebMarAprMayJunJulAugSepOctNovDec", 3 * pick(12) - 2, 3), pick(28), 2015 + pick(9))
    }
    t = t "</ul></section></aside>\n<footer class=\"site-footer\"><p>Proudly powered by WordPress</p></footer>\n</body>\n</html>"
    for (p = 1; size + length(t) + 400 < TARGET; p++) {
        if (p % 5 == 0) out("<h2 class=\"wp-block-heading\" id=\"section-" p "\">" sentence() "</h2>")
        s = "<p>"
        for (j = 2 + pick(4); j > 0; j--) s = s sentence() " "
        out(s "</p>")
    }
    out(t)
}'
}

gen_page >"$WORK/page.html"
gzip -6 -n -c "$WORK/page.html" >"$WORK/page.html.gz"
PAGE_BYTES=$(wc -c <"$WORK/page.html")
GZIP_BYTES=$(wc -c <"$WORK/page.html.gz")
log "page: $PAGE_BYTES bytes, $GZIP_BYTES gzipped"

# ---------------------------------------------------------------------------
# Helpers

# wait_http URL SECONDS: until URL answers 200.
wait_http() {
    local url=$1 tries=$(($2 * 10)) _
    for _ in $(seq 1 "$tries"); do
        [ "$(curl -s -o /dev/null --max-time 1 -w '%{http_code}' "$url" || true)" = 200 ] && return 0
        sleep 0.1
    done
    return 1
}

# status_kib PID FIELD: a VmXXX field of /proc/PID/status, in KiB.
status_kib() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"; }

# metric FILE NAME: the value of an unlabelled metric line.
metric() { awk -v n="$2" '$1 == n { print $2; exit }' "$1"; }

# field LINE KEY: a key=value field of fill's summary line.
field() { tr ' ' '\n' <<<"$1" | awk -F= -v k="$2" '$1 == k { print $2; exit }'; }

mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }

# ---------------------------------------------------------------------------
# Origin: the bare server.

log "starting the bare server on $ORIGIN_ADDR"
"$BARE_BIN" --listen "$ORIGIN_ADDR" --identity "$WORK/page.html" --gzip "$WORK/page.html.gz" \
    >"$WORK/bare.log" 2>&1 &
PIDS+=($!)
wait_http "http://$ORIGIN_ADDR/" 10 || die "the bare server did not start: $(tail -n 5 "$WORK/bare.log")"

(umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$WORK/cluster.secret")

MEM_ROWS=()
FILL_ROWS=()
NOTES=()

# run_capacity CAPACITY: a fresh proxy, one fill, one row of each table.
run_capacity() {
    local capacity=$1 cfg=$WORK/strata-$1.toml plog=$WORK/strata-$1.log pid
    cat >"$cfg" <<EOF
[server]
listen = "$PROXY_ADDR"
admin_listen = "$ADMIN_ADDR"

[origin]
url = "http://$ORIGIN_ADDR"

[cache]
capacity = "$capacity"
default_ttl = "1h"

[cluster]
node_id = "fill"
secret_file = "$WORK/cluster.secret"
EOF
    log "[$capacity] starting strata-proxy on $PROXY_ADDR (admin $ADMIN_ADDR)"
    "$STRATA_BIN" --config "$cfg" >"$plog" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait_http "http://$ADMIN_ADDR/healthz" 15 || die "strata-proxy did not start: $(tail -n 5 "$plog")"

    # The origin sends no Cache-Control: default_ttl applies and the page is stored.
    local probe=http://$PROXY_ADDR/fill-probe/ first second
    first=$(curl -s -o /dev/null --max-time 10 -H "Host: $HOST_HEADER" -w '%{http_code} %header{x-cache}' "$probe")
    second=$(curl -s -o /dev/null --max-time 10 -H "Host: $HOST_HEADER" -w '%{http_code} %header{x-cache}' "$probe")
    log "[$capacity] probe: first GET $first, second GET $second"
    [ "$second" = "200 HIT" ] || die "the page is not cached (second GET: $second); the fill would measure nothing"

    local rss0
    rss0=$(status_kib "$pid" VmRSS)
    log "[$capacity] filling: $COUNT distinct paths, $CONCURRENCY at a time (RSS before: $(mib $((rss0 * 1024))))"
    local line
    line=$("$FILL_BIN" --target "http://$PROXY_ADDR" --host "$HOST_HEADER" --count "$COUNT" \
        --concurrency "$CONCURRENCY" --prefix /fill/ --timeout "$FILL_TIMEOUT" --gzip-odd 2>"$WORK/fill-$capacity.err") ||
        die "fill failed: $(cat "$WORK/fill-$capacity.err")"
    log "[$capacity] fill: $line"
    [ -s "$WORK/fill-$capacity.err" ] && log "[$capacity] $(cat "$WORK/fill-$capacity.err")"

    # Let the store's periodic maintenance (every 250 ms) apply the last evictions.
    sleep 2
    curl -s --max-time 10 -o "$WORK/metrics-$capacity.txt" "http://$ADMIN_ADDR/metrics" ||
        die "could not read /metrics"
    local rss hwm
    rss=$(status_kib "$pid" VmRSS)
    hwm=$(status_kib "$pid" VmHWM)
    local m=$WORK/metrics-$capacity.txt cap_b bytes objects evictions
    cap_b=$(metric "$m" strata_proxy_cache_capacity_bytes)
    bytes=$(metric "$m" strata_proxy_cache_bytes)
    objects=$(metric "$m" strata_proxy_cache_objects)
    evictions=$(metric "$m" strata_proxy_cache_evictions_total)
    if [ -z "$cap_b" ] || [ -z "$bytes" ] || [ -z "$objects" ] || [ -z "$evictions" ]; then
        die "missing cache metrics in /metrics (see $m with KEEP_WORK=1)"
    fi

    local bound=$((cap_b * 11 / 10 + 64 * MIB)) verdict peak_verdict
    verdict=$([ $((rss * 1024)) -le "$bound" ] && echo PASS || echo FAIL)
    peak_verdict=$([ $((hwm * 1024)) -le "$bound" ] && echo yes || echo no)
    MEM_ROWS+=("| $capacity | $objects | $(mib "$bytes") | $evictions | $(mib $((rss * 1024))) | $(mib $((hwm * 1024))) | $(mib "$bound") | **$verdict** | $peak_verdict | $(mib $((rss0 * 1024))) |")

    local sent ok errors seconds rps misses
    sent=$(field "$line" sent)
    ok=$(field "$line" ok)
    errors=$(field "$line" errors)
    seconds=$(field "$line" seconds)
    rps=$(field "$line" req_per_s)
    misses=$(field "$line" x_cache_miss)
    misses=${misses:-0}
    local mps
    mps=$(awk -v m="$misses" -v s="$seconds" 'BEGIN { printf "%.0f", (s > 0 ? m / s : 0) }')
    FILL_ROWS+=("| $capacity | $sent | $ok | $errors | $misses | $seconds | $rps | $mps |")
    [ "$errors" = 0 ] || NOTES+=("[$capacity] the fill counted $errors errors: $(cat "$WORK/fill-$capacity.err")")
    grep -q timed_out=1 <<<"$line" && NOTES+=("[$capacity] the fill stopped at FILL_TIMEOUT=$FILL_TIMEOUT after $sent requests")

    log "[$capacity] RSS $(mib $((rss * 1024))), peak $(mib $((hwm * 1024))), bound $(mib "$bound"): $verdict"
    stop_pid "$pid"
}

read -r -a CAPACITIES <<<"$CAPACITY"
[ "${#CAPACITIES[@]}" -gt 0 ] || die "CAPACITY is empty"
for c in "${CAPACITIES[@]}"; do
    run_capacity "$c"
done

# ---------------------------------------------------------------------------
# Report

allocator=system
grep -aq mi_malloc "$STRATA_BIN" && allocator=mimalloc
version=$("$STRATA_BIN" --version 2>/dev/null || echo "strata-proxy ?")
cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)

{
    echo "# strata-proxy fill test"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs (${cpu:-unknown CPU}), $version, allocator: $allocator."
    echo "$COUNT GETs for distinct paths, $CONCURRENCY in flight, odd paths with \`Accept-Encoding: gzip\`;"
    echo "origin page $PAGE_BYTES bytes ($GZIP_BYTES gzipped), stored with default_ttl 1h."
    echo "Bound: capacity × 1.1 + 64 MiB. RSS read 2 s after the fill; peak = VmHWM."
    echo
    echo "| Capacity | Objects held | Cache bytes | Evictions | VmRSS | VmHWM (peak) | Bound | RSS ≤ bound | Peak ≤ bound | RSS before fill |"
    echo "|---|---:|---:|---:|---:|---:|---:|---|---|---:|"
    printf '%s\n' "${MEM_ROWS[@]}"
    echo
    echo "Fill rate (every request a miss: fetch, gzip and brotli at store time, insert):"
    echo
    echo "| Capacity | Sent | 2xx | Errors | Misses | Seconds | Requests/s | Misses/s |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|"
    printf '%s\n' "${FILL_ROWS[@]}"
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
