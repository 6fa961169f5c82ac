#!/usr/bin/env bash
# test-all.sh — the README's test command: installs what the tests need, starts the test bed on 127.0.0.1,
# runs the whole suite (format, lints, every crate's tests, the test bed smoke check), and stops the test bed.
#
# Works on a fresh Debian 12 with only the Rust toolchain (root, or sudo). Idempotent: re-running skips
# installs that are already done and reuses a test bed that is already up (it is stopped at the end either way).
# Exits non-zero on the first failure. A test that needs a test bed service fails (never skips) if it is down.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
cd "$root"

step() { printf '\n==== %s\n' "$*"; }

command -v cargo >/dev/null || { echo "cargo not found: install the Rust toolchain (rustup) first" >&2; exit 1; }

step "install test bed prerequisites (apt: ffmpeg, GStreamer RTSP camera, Chromium; npm: hls.js, playwright-core)"
"$here/install.sh"
"$here/install-browser.sh"
VIGIL_UI_NODE_MODULES=$("$here/npm-cache.sh" | tail -n 1)
export VIGIL_UI_NODE_MODULES

step "start the test bed"
trap '"$here/down.sh" || true' EXIT
"$here/up.sh"

step "test bed smoke check: ffprobe sees H.264, ffmpeg records clean segments as vigil runs it"
"$here/check.sh"

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings

step "cargo test --workspace"
rm -rf target/figures
log=$(mktemp)
status=0
cargo test --workspace --no-fail-fast 2>&1 | tee "$log" || status=$?
# One closing line for the whole run, summed over every test binary.
passed=$(awk '/^test result:/ {s+=$4} END {print s+0}' "$log")
failed=$(awk '/^test result:/ {s+=$6} END {print s+0}' "$log")
rm -f "$log"
if compgen -G "target/figures/*.txt" >/dev/null; then
    step "figures measured by the tests"
    for f in target/figures/*.txt; do
        printf -- '-- %s\n' "$(basename "$f" .txt)"
        cat "$f"
    done
fi
step "stop the test bed"
trap - EXIT
"$here/down.sh"
if [[ $status -ne 0 || $failed -ne 0 || $passed -eq 0 ]]; then
    printf '\nsummary: %s passed, %s failed\n' "$passed" "$failed"
    exit 1
fi
printf '\nsummary: %s passed, %s failed\n' "$passed" "$failed"
