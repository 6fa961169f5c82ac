#!/usr/bin/env bash
# chaos-tests/run.sh — the fault-injection suite on real processes.
#
# Usage: chaos-tests/run.sh [--long] [--seed N]
#   (default)  the short counts (also part of testbed/test-all.sh through `cargo test`)
#   --long     the full counts (e.g. 100 ffmpeg kills, outages of 5 and 10 min), two scenarios at a time
#              (about 35–45 min on 2 cores); writes the summary table to docs/reliability.md
#   --seed N   replay a run: every scenario draws its moments from this seed (a failing run prints its seed)
# Installs what the scenarios need (testbed/install.sh, install-browser.sh; idempotent). Each scenario starts its
# own camera, vigil and servers on 127.0.0.1 and stops them by PID.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
long=0
while (($#)); do
    case $1 in
        --long) long=1 ;;
        --seed) shift; export VIGIL_CHAOS_SEED=$1 ;;
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
        *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
"$repo/testbed/install.sh" >&2
"$repo/testbed/install-browser.sh" >&2
cd "$repo"
rm -f target/figures/chaos.txt
threads=1
if ((long)); then
    export VIGIL_CHAOS_LONG=1
    threads=2 # each scenario mostly waits out its faults; every one runs its own servers on free ports
fi
started=$(date -u +%Y-%m-%dT%H:%MZ)
cargo test --test chaos -- --test-threads=$threads --nocapture
if ((long)); then
    {
        echo "# Reliability"
        echo
        echo "What the fault-injection suite (\`chaos-tests/\`) measured on real processes in its long mode, on"
        echo "$(nproc) cores, run $started. Reproduce with \`chaos-tests/run.sh --long\` (add \`--seed N\` to replay the"
        echo "moments of a run: each line names its seed)."
        echo
        echo "| scenario and result |"
        echo "|---|"
        sed 's/|/\\|/g; s/^/| /; s/$/ |/' target/figures/chaos.txt
    } >docs/reliability.md
    echo "wrote docs/reliability.md" >&2
fi
cat target/figures/chaos.txt
