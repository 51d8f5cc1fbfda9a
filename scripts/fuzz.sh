#!/usr/bin/env bash
# Runs the fuzz targets of fuzz/ with cargo-fuzz (libFuzzer) on the nightly toolchain; see
# docs/fuzzing.md.
#
# Usage:
#   scripts/fuzz.sh smoke                    lint, then every target for 8 s (CI; about a minute of fuzzing)
#   scripts/fuzz.sh long [SECONDS] [TARGET…] each target (default: all) for SECONDS (default 600)
#   scripts/fuzz.sh lint                     rustfmt check and clippy (warnings are errors) of fuzz/
#   scripts/fuzz.sh list                     the targets
#
# fuzz/ is its own workspace, so the project's own fmt and clippy runs never see it: `lint`
# (and `smoke`, which CI runs) checks it with the nightly toolchain that builds it.
#
# The targets are built once, as cargo-fuzz builds them by default: optimised, with debug
# assertions and overflow checks (an arithmetic overflow is a finding too).
# One target runs at a time, in one process. Each starts from its committed seeds
# (fuzz/corpus/TARGET, never written to) plus what earlier runs found (fuzz/work/TARGET,
# not committed). A finding stops the script: the input is saved under fuzz/artifacts/TARGET/
# and the line to reproduce it is printed. The build goes to $CARGO_TARGET_DIR when set,
# else fuzz/target. FUZZ_SANITIZER=address builds with AddressSanitizer (default: none;
# the code under test is safe Rust, its bounds are checked either way).
#
# Exit: 0 when no target found anything; 1 on a finding or a missing tool.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
FUZZ_DIR=$(cd "$SCRIPT_DIR/../fuzz" && pwd)

log() { printf '==> %s\n' "$*"; }
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

TARGETS=(framing comment_form freshness ban_json queue_record packet kses)
SMOKE_SECONDS=8
LONG_SECONDS=600
SANITIZER=${FUZZ_SANITIZER:-none}
build_flags=(-s "$SANITIZER")

# Per-target libFuzzer options: the framing target needs heads past the guard's 8 KiB limit.
target_options() {
    case "$1" in
    framing) echo "-max_len=20000" ;;
    *) echo "" ;;
    esac
}

if ! command -v cargo >/dev/null 2>&1 && [ -x "${HOME:-/root}/.cargo/bin/cargo" ]; then
    export PATH="${HOME:-/root}/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null 2>&1 || die "cargo not found: install a Rust toolchain with rustup"

mode=${1:-}
case "$mode" in
list)
    printf '%s\n' "${TARGETS[@]}"
    exit 0
    ;;
lint) ;;
smoke)
    seconds=$SMOKE_SECONDS
    targets=("${TARGETS[@]}")
    ;;
long)
    seconds=${2:-$LONG_SECONDS}
    [[ "$seconds" =~ ^[0-9]+$ ]] && [ "$seconds" -gt 0 ] || die "long: SECONDS must be a positive number, not '$seconds'"
    if [ $# -gt 2 ]; then
        targets=("${@:3}")
    else
        targets=("${TARGETS[@]}")
    fi
    for t in "${targets[@]}"; do
        [[ " ${TARGETS[*]} " == *" $t "* ]] || die "no fuzz target '$t' (scripts/fuzz.sh list)"
    done
    ;;
*)
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
    exit 1
    ;;
esac

# cargo-fuzz needs the nightly toolchain (libFuzzer's instrumentation flags); the project's
# own build stays on stable.
cargo +nightly --version >/dev/null 2>&1 ||
    die "the nightly toolchain is missing: cargo fuzz needs it (rustup toolchain install nightly); the rest of the build stays on stable"

cd "$FUZZ_DIR"
if [ "$mode" = lint ] || [ "$mode" = smoke ]; then
    # rustfmt and clippy are rustup components of nightly too; add them if they are missing.
    for component in rustfmt clippy; do
        sub=fmt
        [ "$component" = clippy ] && sub=clippy
        if ! cargo +nightly "$sub" --version >/dev/null 2>&1; then
            command -v rustup >/dev/null 2>&1 || die "cargo +nightly $sub is missing and rustup is not available to add $component"
            log "adding rustup component $component to nightly"
            rustup component add --toolchain nightly "$component"
        fi
    done
    log "cargo +nightly fmt --check (fuzz/)"
    cargo +nightly fmt --check
    log "cargo +nightly clippy --all-targets -- -D warnings (fuzz/)"
    cargo +nightly clippy --all-targets -- -D warnings
    [ "$mode" = lint ] && exit 0
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    log "installing cargo-fuzz (cargo install cargo-fuzz --locked)"
    cargo install cargo-fuzz --locked
fi

log "cargo +nightly fuzz build ${build_flags[*]} (all targets, release)"
cargo +nightly fuzz build "${build_flags[@]}"

target_dir=$(cargo +nightly metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
triple=$(rustc +nightly -vV | sed -n 's/^host: //p')
bin_dir="$target_dir/$triple/release"

summary=()
for t in "${targets[@]}"; do
    work="$FUZZ_DIR/work/$t"
    artifacts="$FUZZ_DIR/artifacts/$t"
    mkdir -p "$work" "$artifacts"
    options=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
        -artifact_prefix="$artifacts/")
    [ -f "$FUZZ_DIR/dict/$t.dict" ] && options+=(-dict="$FUZZ_DIR/dict/$t.dict")
    read -r -a extra <<<"$(target_options "$t")"
    options+=("${extra[@]}")
    log "fuzzing $t for ${seconds}s"
    logfile="$FUZZ_DIR/work/$t.log"
    if ! "$bin_dir/$t" "${options[@]}" "$work" "$FUZZ_DIR/corpus/$t" >"$logfile" 2>&1; then
        tail -n 40 "$logfile" >&2
        found=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$logfile" | tail -n 1)
        die "$t: a finding${found:+, saved as $found}; reproduce with: (cd fuzz && cargo +nightly fuzz run ${build_flags[*]} $t ${found:-ARTIFACT})"
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logfile" | tail -n 1)
    cov=$(grep -a -o 'cov: [0-9]*' "$logfile" | tail -n 1)
    corpus=$(find "$work" -type f | wc -l)
    summary+=("$(printf '%-13s %12s executions in %4ss, %s, %s inputs in its corpus' "$t" "${runs:-?}" "$seconds" "${cov:-cov: ?}" "$corpus")")
done

log "no findings"
printf '    %s\n' "${summary[@]}"
