#!/usr/bin/env bash
# down.sh — stop exactly what testbed/up.sh started, by the PIDs in its PID files. Idempotent.
#
# Usage: testbed/down.sh [service ...]      (default: all services known today, in reverse start order)
# Env:   VIGIL_TESTBED_DIR  state folder (default /tmp/vigil-testbed)
#
# For each PID file: if the PID is alive and still runs the service's program, send SIGTERM,
# wait up to 5 s, then SIGKILL. Then remove the PID file. Never kills by name; a PID that now
# belongs to some other program is left alone (only its stale PID file is removed).
set -euo pipefail
TB_NAME=down
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

STOP_TIMEOUT=${VIGIL_STOP_TIMEOUT:-5}

down_service() {
    local svc=$1 pf pid i t0
    pf=$(pidfile_of "$svc")
    if [[ ! -f $pf ]]; then
        tb_log "$svc: not running (no PID file)"
        return 0
    fi
    if ! pid=$(service_pid "$svc"); then
        tb_log "$svc: PID $(head -n1 "$pf" 2>/dev/null || true) is dead or not $(cmd_signature_of "$svc"); removing stale PID file"
        rm -f "$pf"
        return 0
    fi
    t0=$(date +%s%N)
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < STOP_TIMEOUT * 10; i++)); do
        pid_alive "$pid" || break
        sleep 0.1
    done
    if pid_alive "$pid"; then
        tb_log "$svc: pid $pid ignored SIGTERM for ${STOP_TIMEOUT} s; SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        for ((i = 0; i < 20; i++)); do
            pid_alive "$pid" || break
            sleep 0.1
        done
        if pid_alive "$pid"; then tb_die "$svc: pid $pid survives SIGKILL"; fi
    fi
    rm -f "$pf"
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
