#!/usr/bin/env bash
# The project's test command. Brings up the real services the integration
# tests talk to (WordPress origin on 127.0.0.1:8081, memcached on 127.0.0.1:11211),
# then runs, in order: rustfmt check, clippy (warnings are errors), cargo test, the my.cnf
# and systemd unit checks (scripts/mycnf-check.sh, scripts/units-check.sh), as root the
# Debian package's install test in a booted Debian 12 container (scripts/deb.sh test), the
# documentation check (scripts/docs-check.sh: links, anchors, the configuration reference
# against the code), the fuzz crate's lints and a short run of every fuzz target
# (scripts/fuzz.sh smoke: needs the nightly toolchain) and the browser test of the /status
# page (scripts/browser-test.sh).
#
# Usage: scripts/test.sh [extra cargo test args...]
#   e.g. scripts/test.sh -p strata-proxy -- --nocapture
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$SCRIPT_DIR/.." && pwd)
# shellcheck source=scripts/common.sh
. "$SCRIPT_DIR/common.sh"

if [ "$(id -u)" -eq 0 ]; then
    bash "$SCRIPT_DIR/wordpress.sh" up
    bash "$SCRIPT_DIR/memcached.sh" up
    command -v ip >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq iproute2; } # director rig tests
    # The director's XDP program is compiled by clang (director/build.rs); its rig uses ethtool.
    { command -v clang && command -v ethtool; } >/dev/null 2>&1 ||
        { apt-get update -qq && apt-get install -y -qq --no-install-recommends clang ethtool; }
else
    # Provisioning needs root; without it, use the services if they are already up.
    [ "$(http_code http://127.0.0.1:8081/ -H 'Host: 127.0.0.1:8080')" = 200 ] ||
        die "the WordPress origin is not up and provisioning it needs root: run scripts/wordpress.sh as root first"
    log "not root: using the already running WordPress origin and memcached"
fi

if ! command -v cargo >/dev/null 2>&1 && [ -x "${HOME:-/root}/.cargo/bin/cargo" ]; then
    export PATH="${HOME:-/root}/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null 2>&1 ||
    die "cargo not found: install a Rust toolchain (rust-version in Cargo.toml, e.g. via rustup) and put cargo on PATH"

# rustfmt and clippy are rustup components; add them if they are missing.
for component in rustfmt clippy; do
    sub=fmt
    [ "$component" = clippy ] && sub=clippy
    if ! cargo "$sub" --version >/dev/null 2>&1; then
        command -v rustup >/dev/null 2>&1 || die "cargo $sub is missing and rustup is not available to add $component"
        log "adding rustup component $component"
        rustup component add "$component"
    fi
done

# Where the integration tests find the WordPress origin and the Host it serves.
export STRATA_WP_ORIGIN=http://127.0.0.1:8081
export STRATA_WP_HOST=127.0.0.1:8080

cd "$REPO_DIR"
log "cargo fmt --all -- --check"
cargo fmt --all -- --check
log "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
log "cargo test --workspace $*"
cargo test --workspace "$@"
if command -v mariadbd >/dev/null 2>&1; then
    log "config/mysql/my.cnf on a throwaway MariaDB (never the running one)"
    bash "$SCRIPT_DIR/mycnf-check.sh"
fi
if command -v systemd-analyze >/dev/null 2>&1; then
    log "deploy/systemd units: systemd-analyze verify"
    bash "$SCRIPT_DIR/units-check.sh"
fi
if [ "$(id -u)" -eq 0 ]; then
    log "Debian package: build, install into a booted Debian 12 container, start, HIT, reload (scripts/deb.sh test)"
    bash "$SCRIPT_DIR/deb.sh" test
else
    log "not root: skipping the Debian package's install test (scripts/deb.sh test)"
fi
log "docs: links, anchors and the configuration reference (scripts/docs-check.sh)"
bash "$SCRIPT_DIR/docs-check.sh"
log "fuzzing: every target for a few seconds (scripts/fuzz.sh smoke)"
bash "$SCRIPT_DIR/fuzz.sh" smoke
log "browser test: the /status page in headless Chromium"
bash "$SCRIPT_DIR/browser-test.sh"
log "all checks passed"
