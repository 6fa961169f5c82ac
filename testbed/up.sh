#!/usr/bin/env bash
# up.sh — idempotent start of the vigil test bed services, all bound to 127.0.0.1.
#
# Usage: testbed/up.sh [service ...]        (default: all services known today: camera)
# Env:   VIGIL_TESTBED_DIR  state folder with <service>.pid / <service>.log (default /tmp/vigil-testbed)
#        VIGIL_CAMERA_PORT  RTSP port of the simulated cameras (default 8554)
#        VIGIL_CAMERAS      number of cameras, served as /cam1../camN (default 2)
#        VIGIL_CAMERA_ARGS  extra camera.py flags, e.g. "--multi-slice" or "--width 1280 --height 720 --fps 25"
#
# A service whose PID file names a live process running the right program (with the same
# settings) is left alone; a dead or foreign PID is treated as stopped and the service restarted.
# Stop everything with testbed/down.sh. Install prerequisites first with testbed/install.sh.
set -euo pipefail
TB_NAME=up
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

READY_TIMEOUT=${VIGIL_READY_TIMEOUT:-10}

# launch SERVICE CMD...: start CMD detached (own session, stdin from /dev/null, output to the
# service log) and write its PID file.
launch() {
    local svc=$1 log pf pid
    shift
    log=$(logfile_of "$svc")
    pf=$(pidfile_of "$svc")
    printf '===== %s up.sh: starting %s: %s\n' "$(date -Is)" "$svc" "$*" >>"$log"
    # Background job of a non-interactive shell is not a group leader, so setsid execs
    # without forking: $! is the service's own PID.
    setsid "$@" </dev/null >>"$log" 2>&1 &
    pid=$!
    printf '%s\n' "$pid" >"$pf.tmp"
    mv -f "$pf.tmp" "$pf"
    printf '%s\n' "$pid"
}

fail_with_log() {
    local svc=$1 msg=$2
    printf '[up] ERROR: %s\n[up] last lines of %s:\n' "$msg" "$(logfile_of "$svc")" >&2
    tail -n 20 "$(logfile_of "$svc")" | sed 's/^/    /' >&2 || true
    exit 1
}

# ---- camera: GStreamer RTSP server (testbed/camera.py) ----------------------------------------
# The full command line; a running camera with a different one (other port, camera count or
# VIGIL_CAMERA_ARGS) is restarted.
camera_cmd() {
    local extra=()
    # Extra camera.py flags, word-split, e.g. VIGIL_CAMERA_ARGS="--multi-slice --fps 25".
    read -r -a extra <<<"${VIGIL_CAMERA_ARGS:-}"
    # -u: unbuffered, so the log shows client connects at once.
    printf '%s\n' /usr/bin/python3 -u "$TESTBED_HOME/camera.py" \
        --port "$VIGIL_CAMERA_PORT" --cameras "$VIGIL_CAMERAS" --address 127.0.0.1 "${extra[@]}"
}

up_camera() {
    local pid cmd i want
    local -a argv
    [[ $VIGIL_CAMERA_PORT =~ ^[0-9]+$ && $VIGIL_CAMERA_PORT -ge 1 && $VIGIL_CAMERA_PORT -le 65535 ]] ||
        tb_die "VIGIL_CAMERA_PORT must be a port number (1-65535), got '$VIGIL_CAMERA_PORT'"
    [[ $VIGIL_CAMERAS =~ ^[0-9]+$ && $VIGIL_CAMERAS -ge 1 ]] || tb_die "VIGIL_CAMERAS must be >= 1"
    mapfile -t argv < <(camera_cmd)
    want="${argv[*]} "
    [[ -x /usr/bin/python3 ]] || tb_die "/usr/bin/python3 missing: run testbed/install.sh camera"
    /usr/bin/python3 "$TESTBED_HOME/camera.py" "${argv[@]:3}" --print-pipeline >/dev/null ||
        tb_die "bad camera settings (VIGIL_CAMERA_ARGS='${VIGIL_CAMERA_ARGS:-}')"
    if pid=$(service_pid camera); then
        cmd=$(cmdline_of "$pid")
        if [[ $cmd == "$want" ]]; then
            tb_log "camera already running (pid $pid)"
            return 0
        fi
        tb_log "camera pid $pid runs with other settings ($cmd); restarting it"
        "$TESTBED_HOME/down.sh" camera
    elif [[ -f $(pidfile_of camera) ]]; then
        tb_log "stale $(pidfile_of camera) (pid $(head -n1 "$(pidfile_of camera)") is dead or not camera.py); removing"
        rm -f "$(pidfile_of camera)"
    fi
    if tcp_open 127.0.0.1 "$VIGIL_CAMERA_PORT"; then
        tb_die "port 127.0.0.1:$VIGIL_CAMERA_PORT is already taken by another program (not in $(pidfile_of camera)); set VIGIL_CAMERA_PORT or stop it"
    fi
    pid=$(launch camera "${argv[@]}")
    for ((i = 0; i < READY_TIMEOUT * 10; i++)); do
        if ! pid_alive "$pid"; then
            rm -f "$(pidfile_of camera)"
            fail_with_log camera "camera (pid $pid) exited during start-up"
        fi
        if rtsp_answers 127.0.0.1 "$VIGIL_CAMERA_PORT"; then
            tb_log "camera started (pid $pid), RTSP answers after $((i * 100)) ms"
            return 0
        fi
        sleep 0.1
    done
    fail_with_log camera "camera (pid $pid) does not answer RTSP on 127.0.0.1:$VIGIL_CAMERA_PORT after ${READY_TIMEOUT} s (left running; stop it with down.sh)"
}

summary_camera() {
    local pid i urls=()
    if pid=$(service_pid camera); then
        for ((i = 1; i <= VIGIL_CAMERAS; i++)); do urls+=("rtsp://127.0.0.1:$VIGIL_CAMERA_PORT/cam$i"); done
        printf '  %-8s pid %-7s %s%s\n' camera "$pid" "${urls[*]}" "${VIGIL_CAMERA_ARGS:+  ($VIGIL_CAMERA_ARGS)}"
        printf '  %-8s log %s\n' "" "$(logfile_of camera)"
    else
        printf '  %-8s NOT RUNNING\n' camera
    fi
}

main() {
    local svcs=("$@") s
    ((${#svcs[@]})) || svcs=("${ALL_SERVICES[@]}")
    check_services "${svcs[@]}"
    mkdir -p "$STATE_DIR"
    for s in "${svcs[@]}"; do "up_$s"; done
    printf 'vigil test bed (state: %s):\n' "$STATE_DIR"
    for s in "${svcs[@]}"; do "summary_$s"; done
}

main "$@"
