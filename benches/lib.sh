# Helpers shared by the benchmark scripts (sourced, not run): messages, stopping the
# processes a benchmark started, installing missing tools without starting their services,
# and whether something listens on an address.

log() { printf '==> %s\n' "$*" >&2; }

die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

# stop_pid PID: SIGTERM, up to 10 s to exit, then SIGKILL; reaped either way.
stop_pid() {
    local pid=$1 _
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# ensure_tools CMD=PACKAGE…: installs the Debian packages of the commands that are missing,
# without letting their services start (the benchmarks run their own instances on their own
# ports). Needs root only when something is missing.
ensure_tools() {
    local -A pkg_of=()
    local pair missing=() cmd
    for pair in "$@"; do pkg_of[${pair%%=*}]=${pair#*=}; done
    for cmd in "${!pkg_of[@]}"; do
        command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || missing+=("${pkg_of[$cmd]}")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    [ "$(id -u)" -eq 0 ] || die "missing packages (${missing[*]}) and not root: install them first"
    log "installing ${missing[*]}"
    local own_policy=0 rc=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        own_policy=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" || rc=$?
    [ "$own_policy" -eq 1 ] && rm -f /usr/sbin/policy-rc.d
    [ "$rc" -eq 0 ] || die "apt-get install ${missing[*]} failed"
}

# build_release BINARY…: release builds of strata-proxy, strata-syncer, strata-director and the bench tools
# (unless SKIP_BUILD=1; the log in $WORK/build.log), then checks that each BINARY is there.
build_release() {
    if [ "${SKIP_BUILD:-0}" != 1 ]; then
        log "building release binaries"
        if ! (cd "$ROOT" && "${CARGO:-cargo}" build --release -p strata-proxy -p strata-syncer -p strata-director -p strata-bench) \
            >"$WORK/build.log" 2>&1; then
            tail -n 30 "$WORK/build.log" >&2
            die "cargo build failed"
        fi
    fi
    local bin
    for bin in "$@"; do
        [ -x "$bin" ] || die "$bin not found (cargo build --release -p strata-proxy -p strata-syncer -p strata-director -p strata-bench)"
    done
}

# port_busy HOST:PORT: true when something accepts connections there.
port_busy() { (exec 3<>"/dev/tcp/${1%:*}/${1#*:}") 2>/dev/null; }

# The comment benchmarks (comments.sh, stack.sh) mark their comments with e-mails
# `N.C.bench-TAG?@example.test` and use a queue of their own (key prefix PREFIX); they
# define sql, TAG, PREFIX, MEMCACHED and POST_IDS (the posts that may have got comments).

# Deletes the benchmark's comments with their meta, and recomputes the comment_count of the
# posts that may have received them.
delete_comments() {
    [ -n "$POST_IDS" ] || return 0
    sql "DELETE m FROM wp_commentmeta m JOIN wp_comments c ON c.comment_ID = m.comment_id
             WHERE c.comment_author_email LIKE '%.bench-${TAG}_@example.test';
         DELETE FROM wp_comments WHERE comment_author_email LIKE '%.bench-${TAG}_@example.test';
         UPDATE wp_posts p SET comment_count = (SELECT COUNT(*) FROM wp_comments c
             WHERE c.comment_post_ID = p.ID AND c.comment_approved = '1') WHERE p.ID IN ($POST_IDS);" ||
        log "could not delete the benchmark's comments (e-mails *.bench-${TAG}?@example.test)"
}

# Deletes the queue's keys in memcached (the syncer already deleted the records) and its
# cursor row.
forget_queue() {
    local k
    # (The braces keep 2>/dev/null from applying to the whole script, as `exec` would.)
    if { exec 3<>"/dev/tcp/${MEMCACHED%:*}/${MEMCACHED#*:}"; } 2>/dev/null; then
        for k in seq epoch applied settings; do printf 'delete %s%s noreply\r\n' "$PREFIX" "$k" >&3; done
        exec 3>&-
    fi
    sql "DELETE FROM wp_strata_syncer WHERE queue = '$PREFIX';" || true
}

# proc_ticks N PID... -> the sum over the processes of the first N of their /proc/PID/stat
# time fields (utime, stime, cutime, cstime), in clock ticks (getconf CLK_TCK a second); a
# PID that is gone counts 0.
proc_ticks() {
    local n=$1 total=0 pid stat fields i
    shift
    for pid in "$@"; do
        stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
        # The fields after the command name (which may hold spaces) start with the 3rd.
        read -r -a fields <<<"${stat##*) }"
        for ((i = 11; i < 11 + n; i++)); do total=$((total + fields[i])); done
    done
    echo "$total"
}

# cpu_ticks PID... -> the CPU time (user + system) the processes have used so far, in ticks.
cpu_ticks() { proc_ticks 2 "$@"; }

# cpu_ticks_with_children PID... -> like cpu_ticks, plus the ticks of each process's children
# that have ended and been waited for: a master's workers recycled within a phase (PHP-FPM's
# pm.max_requests) still count, and a worker that ends between two readings is neither lost
# nor counted twice. Read the PIDs afresh at each reading, so that new workers count too.
cpu_ticks_with_children() { proc_ticks 4 "$@"; }

# duration_seconds D -> D (10s, 2m, 1h, or a bare number of seconds) in whole seconds, for
# timeouts; anything under a second (…ms) counts 1.
duration_seconds() {
    local d=$1
    case $d in
        *ms) echo 1 ;;
        *s) echo "${d%s}" ;;
        *m) echo $((${d%m} * 60)) ;;
        *h) echo $((${d%h} * 3600)) ;;
        *) echo "$d" ;;
    esac
}

# with_unit D -> D, with an "s" added when it is a bare number of seconds: the bench tools
# (fill, comment-load, stack-load) read durations as the configuration files do, with a unit.
with_unit() {
    if [[ $1 =~ ^[0-9]+$ ]]; then echo "${1}s"; else echo "$1"; fi
}

# exact_seconds D -> D (5ms, 200us, 1.5s, 10ns; µs too) in seconds, to the nanosecond; 0 for
# a unit it does not know.
exact_seconds() {
    awk -v h="$1" 'BEGIN { n = h + 0; u = h; sub(/^[0-9.]+/, "", u)
        f = (u == "s") ? 1 : (u == "ms") ? 0.001 : (u == "us" || u == "µs") ? 0.000001 : (u == "ns") ? 1e-9 : 0
        printf "%.9f", n * f }'
}
