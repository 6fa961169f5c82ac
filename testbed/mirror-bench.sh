#!/usr/bin/env bash
# mirror-bench.sh — the storage benchmark (benches/mirror.rs): mirror lag (origin published → mirror pinned)
# p50/p99 with 1 and 8 cameras, and the backfill after a mirror outage. Prints figures and appends them to
# target/figures/storage.txt; docs/performance.md holds those of a long run.
#
# Usage: testbed/mirror-bench.sh [--short | --long]     (short ~6 min, long ~20 min, plus the release build)
# Needs ffmpeg, the camera simulator, js-ipfs and SecantusDB (installed here by testbed/install.sh); starts its
# own private services on free loopback ports and stops them.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here/.."
command -v cargo >/dev/null || { echo "cargo not found: install the Rust toolchain (rustup) first" >&2; exit 1; }
"$here/install.sh" ffmpeg camera ipfs mongo
rm -f target/figures/storage.txt
exec cargo bench --bench mirror -- "$@"
