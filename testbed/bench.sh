#!/usr/bin/env bash
# bench.sh — the capture benchmark (benches/capture.rs): vigil side by side with a bash loop around ffmpeg on
# the same simulated camera in the same run, and vigil's costs as history grows. Prints figures and appends
# them to target/figures/performance.txt; docs/performance.md holds those of a long run.
#
# Usage: testbed/bench.sh [--short | --long] [--only faults|flat|time]
# Needs ffmpeg and the camera simulator (installed here by testbed/install.sh); starts its own cameras on
# free loopback ports and stops them. Builds vigil in release mode.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here/.."
command -v cargo >/dev/null || { echo "cargo not found: install the Rust toolchain (rustup) first" >&2; exit 1; }
"$here/install.sh" ffmpeg camera
rm -f target/figures/performance.txt
exec cargo bench --bench capture -- "$@"
