#!/usr/bin/env bash
# down.sh — stop exactly what testbed/up.sh started, by the PIDs in its PID files. Idempotent.
#
# Usage: testbed/down.sh [service ...]      (default: all services known today, in reverse start order:
#                                            mongo ipfs-b ipfs-a camera)
# Env:   VIGIL_TESTBED_DIR  state folder (default /tmp/vigil-testbed)
#        VIGIL_STOP_TIMEOUT seconds between SIGTERM and SIGKILL (default 5; mongo: 10, or VIGIL_MONGO_STOP_TIMEOUT,
#                           since SecantusDB takes 3-8 s to close WiredTiger on SIGTERM)
#
# For each PID file: if the PID is alive and still runs the service's program, send SIGTERM,
# wait, then SIGKILL. Then remove the PID file. Never kills by name; a PID that now
# belongs to some other program is left alone (only its stale PID file is removed).
# A js-ipfs daemon that had to be SIGKILLed leaves repo.lock and api in its repo; they are removed
# here (and by up.sh before a start), so the next start does not fail with "Lock already being held".
set -euo pipefail
TB_NAME=down
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

STOP_TIMEOUT=${VIGIL_STOP_TIMEOUT:-5}
MONGO_STOP_TIMEOUT=${VIGIL_MONGO_STOP_TIMEOUT:-10}

# After the daemon is gone: drop the js-ipfs repo lock and api file it may have left behind.
clean_after() {
    local svc=$1 repo
    case $svc in
        ipfs-a | ipfs-b)
            repo=$(ipfs_repo_of "$svc")
            if [[ -e $repo/repo.lock || -e $repo/api ]]; then
                rm -rf "$repo/repo.lock" "$repo/api"
                tb_log "$svc: removed stale $repo/repo.lock and api"
            fi
            ;;
    esac
}

down_service() {
    local svc=$1 pf pid i t0 timeout=$STOP_TIMEOUT
    [[ $svc == mongo ]] && timeout=$MONGO_STOP_TIMEOUT
    pf=$(pidfile_of "$svc")
    if [[ ! -f $pf ]]; then
        tb_log "$svc: not running (no PID file)"
        return 0
    fi
    if ! pid=$(service_pid "$svc"); then
        tb_log "$svc: PID $(head -n1 "$pf" 2>/dev/null || true) is dead or not $(cmd_signature_of "$svc"); removing stale PID file"
        rm -f "$pf"
        clean_after "$svc"
        return 0
    fi
    t0=$(date +%s%N)
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < timeout * 10; i++)); do
        pid_alive "$pid" || break
        sleep 0.1
    done
    if pid_alive "$pid"; then
        tb_log "$svc: pid $pid ignored SIGTERM for ${timeout} s; SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        for ((i = 0; i < 20; i++)); do
            pid_alive "$pid" || break
            sleep 0.1
        done
        if pid_alive "$pid"; then tb_die "$svc: pid $pid survives SIGKILL"; fi
    fi
    rm -f "$pf"
    clean_after "$svc"
    tb_log "$svc: stopped pid $pid ($((($(date +%s%N) - t0) / 1000000)) ms)"
}

main() {
    local svcs=("$@") i
    if ((${#svcs[@]} == 0)); then
        for ((i = ${#ALL_SERVICES[@]} - 1; i >= 0; i--)); do svcs+=("${ALL_SERVICES[i]}"); done
    fi
    check_services "${svcs[@]}"
    for i in "${svcs[@]}"; do down_service "$i"; done
}

main "$@"
