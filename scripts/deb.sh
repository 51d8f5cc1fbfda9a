#!/usr/bin/env bash
# Builds Strata's Debian package, and tests it by installing it into a freshly booted
# Debian 12 container.
#
#   scripts/deb.sh build [--dev]    one .deb with the three programs, their systemd units,
#                                   sysusers file, conffiles, manual pages and completions;
#                                   prints its path. --dev packages the dev-profile binaries
#                                   the test suite built (quick, for the install test)
#                                   instead of a release build.
#   scripts/deb.sh test [DEB]       (root) boots a Debian 12 rootfs with systemd inside
#                                   systemd-nspawn, installs the package (DEB, or one built
#                                   with --dev), starts strata-proxy and gets a HIT, checks
#                                   reload, stop and purge. See docs/debian.md#the-install-test.
#
# The package is assembled from a staged tree with dpkg-deb (part of dpkg, on every Debian
# machine) rather than with cargo-deb, which would have to be compiled first: see
# docs/debian.md#how-the-package-is-built.
#
# Environment: CARGO_TARGET_DIR (default target/); STRATA_DEB_OUT (default
# $CARGO_TARGET_DIR/deb); STRATA_DEB_MIRROR (the test's Debian mirror, default the first
# deb.debian.org-style URI in /etc/apt/sources.list*, else http://deb.debian.org/debian);
# STRATA_DEB_ROOTFS (the cached container root, default /var/cache/strata/deb-test-bookworm).
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$SCRIPT_DIR/.." && pwd)
# shellcheck source=scripts/common.sh
. "$SCRIPT_DIR/common.sh"

PROGRAMS=(strata-proxy strata-syncer strata-director)
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO_DIR/target}
OUT_DIR=${STRATA_DEB_OUT:-$TARGET_DIR/deb}
ROOTFS=${STRATA_DEB_ROOTFS:-/var/cache/strata/deb-test-bookworm}
# What the test's container gets besides the minimal base: systemd to boot, curl to ask the
# proxy, busybox for the tiny origin (httpd), man-db to check the manual pages, procps
# (/bin/kill, which the package depends on: the test container has no network to fetch it).
ROOTFS_PACKAGES=systemd,systemd-sysv,dbus,procps,curl,ca-certificates,busybox,man-db

version() {
    sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' "$REPO_DIR/Cargo.toml"
}

ensure_cargo() {
    if ! command -v cargo >/dev/null 2>&1 && [ -x "${HOME:-/root}/.cargo/bin/cargo" ]; then
        export PATH="${HOME:-/root}/.cargo/bin:$PATH"
    fi
    command -v cargo >/dev/null 2>&1 || die "cargo not found: install a Rust toolchain first"
}

# The systemd units as installed by the package: the programs in /usr/bin, the documentation
# in /usr/share/doc/strata, a header saying where the unit comes from instead of the
# /opt/strata install notes of deploy/systemd/.
packaged_unit() {
    local src=$1
    printf '# Installed by the strata Debian package: change it with `systemctl edit %s`.\n' "$(basename "$src")"
    sed -e '1,/^$/{/^#/d}' \
        -e 's|/opt/strata/current/strata-|/usr/bin/strata-|g' \
        -e 's|file:///opt/strata/current/docs/|file:///usr/share/doc/strata/|g' \
        -e 's|docs/operations.md#deployment|/usr/share/doc/strata/debian.md|g' \
        "$src"
}

# stage DIR PROFILE_DIR: lays out the package's files under DIR.
stage() {
    local root=$1 bin_dir=$2 p
    rm -rf "$root"
    install -d "$root/DEBIAN" "$root/usr/bin" "$root/lib/systemd/system" "$root/usr/lib/sysusers.d" \
        "$root/etc/strata" "$root/usr/share/strata/sysctl" "$root/usr/share/strata/mysql" \
        "$root/usr/share/man/man1" "$root/usr/share/doc/strata" \
        "$root/usr/share/bash-completion/completions" "$root/usr/share/zsh/vendor-completions" \
        "$root/usr/share/fish/vendor_completions.d"
    for p in "${PROGRAMS[@]}"; do
        install -m 755 "$bin_dir/$p" "$root/usr/bin/$p"
        # Debug information stays in the build tree: the package ships the code.
        if command -v strip >/dev/null 2>&1; then strip --strip-debug "$root/usr/bin/$p"; fi
        packaged_unit "$REPO_DIR/deploy/systemd/$p.service" >"$root/lib/systemd/system/$p.service"
        chmod 644 "$root/lib/systemd/system/$p.service"
    done
    install -m 644 "$REPO_DIR/deploy/systemd/strata.sysusers.conf" "$root/usr/lib/sysusers.d/strata.conf"
    for p in proxy syncer director; do
        install -m 640 "$REPO_DIR/config/$p.toml" "$root/etc/strata/$p.toml"
    done
    install -m 644 "$REPO_DIR"/sysctl/*.conf "$root/usr/share/strata/sysctl/"
    install -m 644 "$REPO_DIR/config/mysql/my.cnf" "$root/usr/share/strata/mysql/my.cnf"

    local assets
    assets=$(mktemp -d)
    "$bin_dir/strata-dist" "$assets"
    for p in "$assets"/man/man1/*.1; do
        gzip -9n <"$p" >"$root/usr/share/man/man1/$(basename "$p").gz"
    done
    install -m 644 "$assets"/completions/bash/* "$root/usr/share/bash-completion/completions/"
    install -m 644 "$assets"/completions/zsh/* "$root/usr/share/zsh/vendor-completions/"
    install -m 644 "$assets"/completions/fish/* "$root/usr/share/fish/vendor_completions.d/"
    rm -rf "$assets"

    install -m 644 "$REPO_DIR/README.md" "$REPO_DIR"/docs/*.md "$root/usr/share/doc/strata/"
    cat >"$root/usr/share/doc/strata/copyright" <<'EOF'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: strata

Files: *
License: Apache-2.0
 On Debian systems, the full text of the Apache License 2.0 is in
 /usr/share/common-licenses/Apache-2.0.
EOF
    find "$root" -type d -exec chmod 755 {} +

    local dpkg_dir=$REPO_DIR/deploy/debian
    for p in postinst prerm postrm; do
        install -m 755 "$dpkg_dir/$p" "$root/DEBIAN/$p"
    done
    (cd "$root" && find etc -type f | sed 's|^|/|' | sort) >"$root/DEBIAN/conffiles"
    (cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) \
        >"$root/DEBIAN/md5sums"
    local size
    size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
    sed -e "s|@VERSION@|$(version)-1|" -e "s|@ARCH@|$(dpkg --print-architecture)|" \
        -e "s|@SIZE@|$size|" -e "s|@DEPENDS@|$(shlib_depends "$root")|" \
        "$dpkg_dir/control" >"$root/DEBIAN/control"
}

# shlib_depends ROOT: the shared-library dependencies of the staged programs, from
# dpkg-shlibdeps when dpkg-dev is installed, else the libraries a Rust program on glibc
# links (libc6 and libgcc-s1 for unwinding) at the version Debian 12 ships.
shlib_depends() {
    local root=$1 tmp out
    if command -v dpkg-shlibdeps >/dev/null 2>&1; then
        tmp=$(mktemp -d)
        mkdir "$tmp/debian"
        printf 'Source: strata\n\nPackage: strata\nArchitecture: any\n' >"$tmp/debian/control"
        if out=$(cd "$tmp" && dpkg-shlibdeps -O "${PROGRAMS[@]/#/$root/usr/bin/}" 2>/dev/null); then
            rm -rf "$tmp"
            printf '%s' "${out#shlibs:Depends=}"
            return
        fi
        rm -rf "$tmp"
    fi
    printf 'libc6 (>= 2.34), libgcc-s1 (>= 4.2)'
}

build() {
    local profile=release
    [ "${1:-}" = --dev ] && profile=dev
    ensure_cargo
    cd "$REPO_DIR"
    local bin_dir=$TARGET_DIR/release compress=(-Zxz)
    if [ "$profile" = dev ]; then
        # --tests: the feature set `cargo test --workspace` built with, so the binaries the
        # test suite just built are reused rather than compiled again.
        log "cargo build --workspace --bins --tests (dev profile)" >&2
        cargo build --workspace --bins --tests --quiet >&2
        bin_dir=$TARGET_DIR/debug
        compress=(-Zgzip -z1)
    else
        log "cargo build --release (${PROGRAMS[*]} strata-dist)" >&2
        cargo build --release --quiet -p strata-proxy -p strata-syncer -p strata-director -p strata-dist >&2
    fi
    local root=$OUT_DIR/stage deb
    deb=$OUT_DIR/strata_$(version)-1_$(dpkg --print-architecture).deb
    mkdir -p "$OUT_DIR"
    stage "$root" "$bin_dir"
    dpkg-deb --root-owner-group "${compress[@]}" --build "$root" "$deb" >&2
    rm -rf "$root"
    log "built $deb" >&2
    printf '%s\n' "$deb"
}

# ---- the install test ----------------------------------------------------------------

mirror() {
    if [ -n "${STRATA_DEB_MIRROR:-}" ]; then
        printf '%s' "$STRATA_DEB_MIRROR"
        return
    fi
    local m
    m=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null |
        grep -oE 'https?://[^ ]+/debian/?( |$)' | grep -v security | head -n1 | tr -d ' ' || true)
    printf '%s' "${m:-http://deb.debian.org/debian}"
}

# ensure_rootfs: a Debian 12 root with systemd, made once by debootstrap and kept in
# $ROOTFS; the test boots it with a throwaway overlay, so it never changes.
ensure_rootfs() {
    mkdir -p "$(dirname "$ROOTFS")"
    # One run makes the root; a concurrent one waits for it (booting it is shared safely:
    # each boot writes to its own overlay).
    exec 8>"$ROOTFS.lock"
    flock 8
    if [ -x "$ROOTFS/lib/systemd/systemd" ] && [ -f "$ROOTFS/.strata-packages" ] &&
        [ "$(cat "$ROOTFS/.strata-packages")" = "$ROOTFS_PACKAGES" ]; then
        exec 8>&-
        return 0
    fi
    local m tmp
    m=$(mirror)
    tmp="$ROOTFS.tmp.$$"
    log "debootstrap bookworm into $ROOTFS from $m (once; cached for later runs)"
    rm -rf "$ROOTFS" "$tmp"
    debootstrap --variant=minbase --include="$ROOTFS_PACKAGES" bookworm "$tmp" "$m" >"$tmp.log" 2>&1 ||
        {
            tail -20 "$tmp.log" >&2
            die "debootstrap failed (log: $tmp.log)"
        }
    rm -f "$tmp.log"
    printf '%s' "$ROOTFS_PACKAGES" >"$tmp/.strata-packages"
    mv "$tmp" "$ROOTFS"
    exec 8>&-
}

NSPAWN_PID=
LEADER=
NSPAWN_LOG=
DEB_DIR=

# in_container CMD...: runs CMD inside the booted container (all its namespaces).
in_container() {
    nsenter -t "$LEADER" -a -- "$@"
}

stop_container() {
    [ -n "$NSPAWN_PID" ] || return 0
    if kill -0 "$NSPAWN_PID" 2>/dev/null; then
        # SIGTERM: nspawn asks the container's systemd to power off.
        kill -TERM "$NSPAWN_PID" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$NSPAWN_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$NSPAWN_PID" 2>/dev/null || true
    fi
    NSPAWN_PID=
}

# child_of PID: the pid of a child of PID, from /proc (no procps on a bare CI machine).
child_of() {
    local status
    for status in /proc/[0-9]*/status; do
        if grep -qx "PPid:[[:space:]]*$1" "$status" 2>/dev/null; then
            status=${status#/proc/}
            printf '%s' "${status%/status}"
            return 0
        fi
    done
}

# boot_container DEB_DIR: boots $ROOTFS under systemd-nspawn (a tmpfs overlay over the
# root, only a loopback network, DEB_DIR read-only at /mnt/deb) and waits for its systemd.
boot_container() {
    local deb_dir=$1 i state
    NSPAWN_LOG=$(mktemp /tmp/strata-deb-nspawn.XXXXXX)
    # --keep-unit and --register=no: this host's init need not be systemd (CI containers).
    setsid systemd-nspawn --quiet -D "$ROOTFS" --volatile=overlay --private-network \
        --register=no --keep-unit --boot --console=passive --machine="strata-deb-$$" \
        --bind-ro="$deb_dir:/mnt/deb" >"$NSPAWN_LOG" 2>&1 </dev/null &
    NSPAWN_PID=$!
    for i in $(seq 1 200); do
        LEADER=$(child_of "$NSPAWN_PID")
        [ -n "$LEADER" ] && break
        kill -0 "$NSPAWN_PID" 2>/dev/null || break
        sleep 0.1
    done
    [ -n "$LEADER" ] || {
        cat "$NSPAWN_LOG" >&2
        die "systemd-nspawn did not start a container"
    }
    for i in $(seq 1 300); do
        state=$(in_container systemctl is-system-running 2>/dev/null || true)
        case "$state" in
        running | degraded) return 0 ;;
        esac
        sleep 0.2
    done
    cat "$NSPAWN_LOG" >&2
    die "the container's systemd did not finish booting in 60 s (state: ${state:-none})"
}

# The test itself, run inside the container by `deb.sh test` (bash, as root). Each step
# prints what it checks; any failure exits non-zero.
read -r -d '' INSIDE <<'INSIDE_EOF' || true
set -euo pipefail
fail() { printf 'error: %s\n' "$*" >&2; journalctl -u strata-proxy --no-pager -n 30 >&2 || true; exit 1; }
ok() { printf '    ok: %s\n' "$*"; }
export DEBIAN_FRONTEND=noninteractive

deb=$(ls /mnt/deb/strata_*.deb | head -n1)
dpkg -i "$deb" >/tmp/dpkg.log 2>&1 || { cat /tmp/dpkg.log >&2; fail "dpkg -i"; }
ok "dpkg -i $(basename "$deb")"
getent passwd strata >/dev/null || fail "no strata user"
[ "$(getent passwd strata | cut -d: -f7)" = /usr/sbin/nologin ] || fail "strata user has a login shell"
ok "system user strata (nologin)"
[ -s /var/lib/strata/cluster.secret ] || fail "no cluster secret"
[ "$(stat -c '%U:%G %a' /var/lib/strata/cluster.secret)" = "root:strata 640" ] ||
    fail "cluster secret: $(stat -c '%U:%G %a' /var/lib/strata/cluster.secret)"
ok "cluster secret generated (root:strata 0640)"
for f in /etc/strata/proxy.toml /etc/strata/syncer.toml /etc/strata/director.toml; do
    dpkg-query --showformat='${Conffiles}\n' --show strata | grep -q " $f " || fail "$f is not a conffile"
done
ok "config/*.toml are conffiles under /etc/strata"
for f in /usr/share/strata/sysctl/proxy-node.conf /usr/share/strata/sysctl/dsr-real-server.conf \
    /usr/share/strata/sysctl/director.conf /usr/share/strata/mysql/my.cnf \
    /usr/share/bash-completion/completions/strata-proxy /usr/share/zsh/vendor-completions/_strata-proxy \
    /usr/share/fish/vendor_completions.d/strata-proxy.fish /usr/lib/sysusers.d/strata.conf; do
    [ -s "$f" ] || fail "missing $f"
done
ok "sysctl and MySQL profiles, completions, sysusers file"
for page in strata-proxy strata-proxy-ban strata-syncer strata-director; do
    man -w "$page" >/dev/null 2>&1 || fail "no manual page $page"
done
man strata-proxy 2>/dev/null | grep -q -- '--check-config' || fail "strata-proxy(1) lacks --check-config"
ok "manual pages (man strata-proxy, strata-proxy-ban, strata-syncer, strata-director)"
out=$(systemd-analyze verify /lib/systemd/system/strata-proxy.service /lib/systemd/system/strata-syncer.service \
    /lib/systemd/system/strata-director.service 2>&1) || fail "systemd-analyze verify: $out"
[ -z "$out" ] || fail "systemd-analyze verify: $out"
ok "installed units verify"
for u in strata-proxy strata-syncer strata-director; do
    [ "$(systemctl is-active $u || true)" = inactive ] || fail "$u started on installation"
    [ "$(systemctl is-enabled $u || true)" = disabled ] || fail "$u enabled on installation"
done
ok "nothing enabled or started on installation"
strata-proxy --config /etc/strata/proxy.toml --check-config >/dev/null || fail "the shipped proxy.toml does not check"

# The tiny origin the default configuration points at (origin.url = http://127.0.0.1:8081).
mkdir -p /srv/www
printf '<!doctype html><title>strata</title><p>hello from the origin\n' >/srv/www/index.html
busybox httpd -p 127.0.0.1:8081 -h /srv/www
for _ in $(seq 1 50); do curl -s -o /dev/null http://127.0.0.1:8081/ && break; sleep 0.1; done

# Type=notify: start returns once the listener is bound, so the very next request is
# answered, without any retry.
systemctl start strata-proxy || fail "systemctl start strata-proxy"
code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 http://127.0.0.1:8080/)
[ "$code" = 200 ] || fail "first request after start: $code"
ok "systemctl start returned with the listener bound (first request: 200)"
systemctl show -p StatusText --value strata-proxy | grep -q 'serving http 127.0.0.1:8080' ||
    fail "status: $(systemctl show -p StatusText --value strata-proxy)"
ok "STATUS=$(systemctl show -p StatusText --value strata-proxy)"
xcache=$(curl -s -D - -o /dev/null --max-time 5 http://127.0.0.1:8080/ | tr -d '\r' | sed -n 's/^[Xx]-[Cc]ache: //p')
[ "$xcache" = HIT ] || fail "second request: X-Cache $xcache"
ok "second request: X-Cache HIT"
pid=$(systemctl show -p MainPID --value strata-proxy)

# A broken configuration: reload fails naming the key, the old one keeps serving.
cp /etc/strata/proxy.toml /tmp/proxy.toml.good
sed -i 's/^default_ttl = .*/default_ttl = "forever"/' /etc/strata/proxy.toml
if systemctl reload strata-proxy 2>/tmp/reload.err; then fail "reload of a broken configuration succeeded"; fi
journalctl -u strata-proxy --no-pager | grep -q 'cache.default_ttl' || fail "the journal does not name cache.default_ttl"
ok "systemctl reload of a broken file fails; the journal names cache.default_ttl"
[ "$(systemctl is-active strata-proxy)" = active ] || fail "the proxy stopped after a refused reload"
[ "$(systemctl show -p MainPID --value strata-proxy)" = "$pid" ] || fail "the proxy restarted"
xcache=$(curl -s -D - -o /dev/null --max-time 5 http://127.0.0.1:8080/ | tr -d '\r' | sed -n 's/^[Xx]-[Cc]ache: //p')
[ "$xcache" = HIT ] || fail "after the refused reload: X-Cache $xcache"
ok "the running configuration and its cache still serve (HIT, same process)"

# A good one: reload succeeds, the process and its cache stay.
cp /tmp/proxy.toml.good /etc/strata/proxy.toml
sed -i 's/^default_ttl = .*/default_ttl = "10m"/' /etc/strata/proxy.toml
systemctl reload strata-proxy || fail "reload of a good configuration"
# systemd 252 (Debian 12) ends the reload job when ExecReload's kill exits; later versions
# wait for the READY=1 that follows RELOADING=1. Said, not required.
if systemctl show -p StatusText --value strata-proxy | grep -q 'configuration reloaded'; then
    printf '    (applied when systemctl reload returned)\n'
else
    printf '    (systemctl reload returned before the proxy said READY=1)\n'
fi
for _ in $(seq 1 50); do
    systemctl show -p StatusText --value strata-proxy | grep -q 'configuration reloaded' && break
    sleep 0.1
done
systemctl show -p StatusText --value strata-proxy | grep -q 'configuration reloaded' ||
    fail "status after reload: $(systemctl show -p StatusText --value strata-proxy)"
[ "$(systemctl show -p MainPID --value strata-proxy)" = "$pid" ] || fail "the proxy restarted on reload"
xcache=$(curl -s -D - -o /dev/null --max-time 5 http://127.0.0.1:8080/ | tr -d '\r' | sed -n 's/^[Xx]-[Cc]ache: //p')
[ "$xcache" = HIT ] || fail "after the reload: X-Cache $xcache"
ok "systemctl reload of a good file: applied (STATUS=configuration reloaded), cache kept"

# An upgrade (the same package again) restarts the running proxy with the new program.
dpkg -i "$deb" >/tmp/dpkg.log 2>&1 || { cat /tmp/dpkg.log >&2; fail "dpkg -i over the installed package"; }
[ "$(systemctl is-active strata-proxy)" = active ] || fail "not running after the upgrade"
[ "$(systemctl show -p MainPID --value strata-proxy)" != "$pid" ] || fail "the upgrade did not restart the proxy"
code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 http://127.0.0.1:8080/)
[ "$code" = 200 ] || fail "after the upgrade: $code"
grep -q 'default_ttl = "10m"' /etc/strata/proxy.toml || fail "the upgrade replaced the changed conffile"
ok "upgrade: the running proxy restarted with the new program, the changed configuration kept"

systemctl stop strata-proxy || fail "systemctl stop"
[ "$(systemctl is-active strata-proxy || true)" = inactive ] || fail "still active after stop"
ok "systemctl stop"
systemctl start strata-proxy || fail "second start"
dpkg -r strata >/tmp/dpkg.log 2>&1 || { cat /tmp/dpkg.log >&2; fail "dpkg -r"; }
[ "$(systemctl is-active strata-proxy || true)" != active ] || fail "the proxy still runs after removal"
[ ! -e /usr/bin/strata-proxy ] || fail "binary left after removal"
[ -e /etc/strata/proxy.toml ] || fail "removal deleted a conffile"
ok "dpkg -r stops the proxy, keeps the configuration"
dpkg --purge strata >/tmp/dpkg.log 2>&1 || { cat /tmp/dpkg.log >&2; fail "dpkg --purge"; }
[ ! -e /etc/strata/proxy.toml ] || fail "purge left /etc/strata/proxy.toml"
[ ! -e /var/lib/strata ] || fail "purge left /var/lib/strata"
ok "dpkg --purge removes the configuration and /var/lib/strata"
INSIDE_EOF

test_install() {
    require_root
    local deb=${1:-}
    apt_ensure systemd-container debootstrap
    if [ -z "$deb" ]; then
        deb=$(build --dev)
    fi
    [ -f "$deb" ] || die "no package at $deb"
    ensure_rootfs
    DEB_DIR=$(mktemp -d /tmp/strata-deb-test.XXXXXX)
    cp "$deb" "$DEB_DIR/"
    trap 'stop_container; rm -rf "$DEB_DIR" "$NSPAWN_LOG"' EXIT
    log "booting $ROOTFS in systemd-nspawn"
    boot_container "$DEB_DIR"
    log "inside the container: install $(basename "$deb"), start, HIT, reload, stop, purge"
    in_container bash -c "$INSIDE" || die "the install test failed (see above)"
    log "install test passed"
}

case "${1:-}" in
build)
    shift
    build "$@"
    ;;
test)
    shift
    test_install "$@"
    ;;
*)
    sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
    exit 2
    ;;
esac
