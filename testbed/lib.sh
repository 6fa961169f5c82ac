# lib.sh — shared helpers for the vigil test bed scripts (sourced by up.sh, down.sh, check.sh; not run).
#
# State folder: ${VIGIL_TESTBED_DIR:-/tmp/vigil-testbed} holds <service>.pid and <service>.log.
# Every service binds 127.0.0.1 only; ports come from env vars (see testbed/ports.md).
# Processes are only ever stopped by the PID in their PID file, after checking that the PID
# still runs the expected program (never by name).
# shellcheck shell=bash disable=SC2034

TESTBED_HOME=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STATE_DIR=${VIGIL_TESTBED_DIR:-/tmp/vigil-testbed}

VIGIL_CAMERA_PORT=${VIGIL_CAMERA_PORT:-8554}
VIGIL_CAMERAS=${VIGIL_CAMERAS:-2}

# Services known today, in start order (down.sh stops them in reverse order).
ALL_SERVICES=(camera)

tb_log() { printf '[%s] %s\n' "${TB_NAME:-testbed}" "$*" >&2; }
tb_die() { printf '[%s] ERROR: %s\n' "${TB_NAME:-testbed}" "$*" >&2; exit 1; }

pidfile_of() { printf '%s/%s.pid\n' "$STATE_DIR" "$1"; }
logfile_of() { printf '%s/%s.log\n' "$STATE_DIR" "$1"; }

# Substring that the /proc/PID/cmdline of the service's process must contain.
cmd_signature_of() {
    case $1 in
        camera) printf '%s\n' "camera.py" ;;
        *) tb_die "unknown service '$1' (known: ${ALL_SERVICES[*]})" ;;
    esac
}

check_services() {
    local s
    for s in "$@"; do
        [[ " ${ALL_SERVICES[*]} " == *" $s "* ]] || tb_die "unknown service '$s' (known: ${ALL_SERVICES[*]})"
    done
}

# pid_alive PID: true if the process exists and is not a zombie.
pid_alive() {
    local pid=$1 state
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || true)
    [[ -n $state && $state != Z && $state != X ]]
}

# cmdline_of PID: the command line with NULs turned into spaces.
cmdline_of() { tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null || true; }

# service_pid SERVICE: print the PID from the PID file if it is alive and runs the right
# program; otherwise print nothing and return 1.
service_pid() {
    local svc=$1 pf pid sig
    pf=$(pidfile_of "$svc")
    [[ -f $pf ]] || return 1
    pid=$(head -n1 "$pf" 2>/dev/null | tr -dc '0-9')
    pid_alive "$pid" || return 1
    sig=$(cmd_signature_of "$svc")
    [[ $(cmdline_of "$pid") == *"$sig"* ]] || return 1
    printf '%s\n' "$pid"
}

# rtsp_answers HOST PORT: an RTSP OPTIONS request gets an "RTSP/1.0 200" reply.
rtsp_answers() {
    local host=$1 port=$2 line
    line=$(
        exec 2>/dev/null
        exec 3<>"/dev/tcp/$host/$port" || exit 1
        printf 'OPTIONS rtsp://%s:%s/ RTSP/1.0\r\nCSeq: 1\r\nUser-Agent: vigil-testbed\r\n\r\n' "$host" "$port" >&3
        l=""; IFS= read -r -t 2 l <&3 || true
        printf '%s' "$l"
    ) || return 1
    [[ $line == "RTSP/1.0 200"* ]]
}

# tcp_open HOST PORT: something accepts TCP connections there.
tcp_open() { (exec 2>/dev/null; exec 3<>"/dev/tcp/$1/$2"); }
