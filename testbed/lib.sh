# lib.sh — shared helpers for the vigil test bed scripts (sourced by up.sh, down.sh, check.sh; not run).
#
# State folder: ${VIGIL_TESTBED_DIR:-/tmp/vigil-testbed} holds <service>.pid and <service>.log.
# Every service binds 127.0.0.1 only; ports come from env vars (see testbed/ports.md).
# Processes are only ever stopped by the PID in their PID file, after checking that the PID
# still runs the expected program (never by name).
#
# Services: camera (testbed/camera.py), ipfs-a and ipfs-b (two js-ipfs 0.66.1 daemons, node processes,
# repos in $STATE_DIR/ipfs-a and ipfs-b), mongo (SecantusDB, MongoDB wire protocol, data in
# $STATE_DIR/mongo-data).
# shellcheck shell=bash disable=SC2034

TESTBED_HOME=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STATE_DIR=${VIGIL_TESTBED_DIR:-/tmp/vigil-testbed}

VIGIL_CAMERA_PORT=${VIGIL_CAMERA_PORT:-8554}
VIGIL_CAMERAS=${VIGIL_CAMERAS:-2}
VIGIL_IPFS_A_API_PORT=${VIGIL_IPFS_A_API_PORT:-5001}
VIGIL_IPFS_A_GATEWAY_PORT=${VIGIL_IPFS_A_GATEWAY_PORT:-8080}
VIGIL_IPFS_A_SWARM_PORT=${VIGIL_IPFS_A_SWARM_PORT:-4001}
VIGIL_IPFS_B_API_PORT=${VIGIL_IPFS_B_API_PORT:-5002}
VIGIL_IPFS_B_GATEWAY_PORT=${VIGIL_IPFS_B_GATEWAY_PORT:-8081}
VIGIL_IPFS_B_SWARM_PORT=${VIGIL_IPFS_B_SWARM_PORT:-4002}
VIGIL_MONGO_PORT=${VIGIL_MONGO_PORT:-27017}

# Heavy installs live outside the clone (see testbed/npm-cache.sh and install.sh mongo).
# (No hard failure on an unset HOME here: camera-only scripts source this too; install.sh insists.)
VIGIL_CACHE_ROOT=${VIGIL_CACHE_DIR:-${HOME:-}/.cache/vigil}
SECANTUS_VERSION=0.7.0b3
SECANTUS_VENV=$VIGIL_CACHE_ROOT/secantusdb-$SECANTUS_VERSION

# Services known today, in start order (down.sh stops them in reverse order).
ALL_SERVICES=(camera ipfs-a ipfs-b mongo)

tb_log() { printf '[%s] %s\n' "${TB_NAME:-testbed}" "$*" >&2; }
tb_die() { printf '[%s] ERROR: %s\n' "${TB_NAME:-testbed}" "$*" >&2; exit 1; }

pidfile_of() { printf '%s/%s.pid\n' "$STATE_DIR" "$1"; }
logfile_of() { printf '%s/%s.log\n' "$STATE_DIR" "$1"; }

# Substring that the /proc/PID/cmdline of the service's process must contain. The js-ipfs CLI sets
# process.title = 'ipfs', which overwrites its command line, so the ipfs daemons are recognised by
# their environment instead (see service_matches).
cmd_signature_of() {
    case $1 in
        camera) printf '%s\n' "camera.py" ;;
        ipfs-a | ipfs-b) printf '%s\n' "VIGIL_TB_SERVICE=$1 in its environment" ;;
        mongo) printf '%s\n' "secantusd-py" ;;
        *) tb_die "unknown service '$1' (known: ${ALL_SERVICES[*]})" ;;
    esac
}

# ipfs_repo_of ipfs-a|ipfs-b: the node's IPFS_PATH.
ipfs_repo_of() { printf '%s/%s\n' "$STATE_DIR" "$1"; }

# environ_of PID: the environment, one VAR=value a line.
environ_of() { tr '\0' '\n' <"/proc/$1/environ" 2>/dev/null || true; }

# service_matches SERVICE PID: the live PID runs this service's program. The ipfs daemons are started
# with VIGIL_TB_SERVICE=<service> and IPFS_PATH=<their repo> in the environment of a node process.
service_matches() {
    local svc=$1 pid=$2 env
    case $svc in
        ipfs-a | ipfs-b)
            env=$(environ_of "$pid")
            [[ $'\n'$env$'\n' == *$'\n'"VIGIL_TB_SERVICE=$svc"$'\n'* &&
                $'\n'$env$'\n' == *$'\n'"IPFS_PATH=$(ipfs_repo_of "$svc")"$'\n'* ]] || return 1
            [[ $(readlink "/proc/$pid/exe" 2>/dev/null) == */node* ]]
            ;;
        *) [[ $(cmdline_of "$pid") == *"$(cmd_signature_of "$svc")"* ]] ;;
    esac
}

# env_value_of PID VAR: the value of VAR in the process's environment (empty if unset).
env_value_of() { environ_of "$1" | sed -n "s/^$2=//p" | head -n1; }

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
    local svc=$1 pf pid
    pf=$(pidfile_of "$svc")
    [[ -f $pf ]] || return 1
    pid=$(head -n1 "$pf" 2>/dev/null | tr -dc '0-9')
    pid_alive "$pid" || return 1
    service_matches "$svc" "$pid" || return 1
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

# ipfs_ports_of ipfs-a|ipfs-b: "API GATEWAY SWARM" ports of the node (from the VIGIL_IPFS_* variables).
ipfs_ports_of() {
    case $1 in
        ipfs-a) printf '%s %s %s\n' "$VIGIL_IPFS_A_API_PORT" "$VIGIL_IPFS_A_GATEWAY_PORT" "$VIGIL_IPFS_A_SWARM_PORT" ;;
        ipfs-b) printf '%s %s %s\n' "$VIGIL_IPFS_B_API_PORT" "$VIGIL_IPFS_B_GATEWAY_PORT" "$VIGIL_IPFS_B_SWARM_PORT" ;;
        *) tb_die "not an ipfs service: '$1'" ;;
    esac
}

# ipfs_rpc ipfs-a|ipfs-b PATH_AND_QUERY [curl args...]: POST to the node's Kubo-style RPC API
# (http://127.0.0.1:<api>/api/v0/...), print the body; fails on a non-2xx status or no answer.
ipfs_rpc() {
    local svc=$1 path=$2 api
    shift 2
    read -r api _ _ <<<"$(ipfs_ports_of "$svc")"
    curl -fsS --max-time "${IPFS_RPC_TIMEOUT:-10}" -X POST "$@" "http://127.0.0.1:$api/api/v0/$path"
}

# mongo_hello PORT: a MongoDB `hello` over the wire protocol answers ok:1 (pymongo from SecantusDB's venv).
mongo_hello() {
    "$SECANTUS_VENV/bin/python" - "$1" <<'PY' 2>/dev/null
import sys, pymongo
c = pymongo.MongoClient("127.0.0.1", int(sys.argv[1]), directConnection=True,
                        serverSelectionTimeoutMS=1500, connectTimeoutMS=1500)
r = c.admin.command("hello")
sys.exit(0 if r.get("ok") == 1 else 1)
PY
}
