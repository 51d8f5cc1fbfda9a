#!/usr/bin/env bash
# Checks the systemd units in deploy/systemd/ without installing or starting anything:
# `systemd-analyze verify` (syntax, known keys, valid values; any complaint is a failure)
# and `systemd-analyze security --offline` (the hardening score, for information).
# The units point at /opt/strata/current/; the check uses copies pointing at stand-in
# executables in a temp directory, so no build and no installation are needed.
#
# Usage: scripts/units-check.sh        Exit: 0 when every unit verifies cleanly.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
UNIT_DIR=$(cd "$SCRIPT_DIR/../deploy/systemd" && pwd)

log() { printf '==> %s\n' "$*"; }
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

command -v systemd-analyze >/dev/null 2>&1 || die "systemd-analyze not found (package systemd)"
TMP=$(mktemp -d /tmp/strata-units.XXXXXX)
trap 'rm -rf "$TMP"' EXIT

mkdir "$TMP/bin"
for b in strata-proxy strata-syncer strata-director; do
    printf '#!/bin/sh\nexit 0\n' >"$TMP/bin/$b"
    chmod 755 "$TMP/bin/$b"
done

failed=0
for unit in "$UNIT_DIR"/*.service; do
    name=$(basename "$unit")
    sed "s|/opt/strata/current/|$TMP/bin/|g" "$unit" >"$TMP/$name"
    # verify reports problems on stderr but still exits 0 for most of them.
    if ! out=$(timeout 60 systemd-analyze verify "$TMP/$name" 2>&1) || [ -n "$out" ]; then
        printf '%s\n' "$out" | sed "s|$TMP/|deploy/systemd/|g" >&2
        failed=$((failed + 1))
        log "$name: FAILED"
        continue
    fi
    score=$(timeout 60 systemd-analyze security --offline=yes "$TMP/$name" 2>/dev/null |
        grep -o 'Overall exposure level.*' | sed "s|$TMP/||" || true)
    log "$name: verifies cleanly; ${score:-security score unavailable}"
done
[ "$failed" -eq 0 ] || die "$failed unit(s) do not verify"
