#!/usr/bin/env bash
# up.sh — idempotent start of the vigil test bed services, all bound to 127.0.0.1.
#
# Usage: testbed/up.sh [service ...]   (default: all services known today: camera ipfs-a ipfs-b mongo)
# Env:   VIGIL_TESTBED_DIR  state folder with <service>.pid / <service>.log (default /tmp/vigil-testbed)
#        VIGIL_CAMERA_PORT  RTSP port of the simulated cameras (default 8554)
#        VIGIL_CAMERAS      number of cameras, served as /cam1../camN (default 2)
#        VIGIL_CAMERA_ARGS  extra camera.py flags, e.g. "--multi-slice" or "--width 1280 --height 720 --fps 25"
#        VIGIL_IPFS_A_API_PORT / _GATEWAY_PORT / _SWARM_PORT   js-ipfs node A (default 5001 / 8080 / 4001)
#        VIGIL_IPFS_B_API_PORT / _GATEWAY_PORT / _SWARM_PORT   js-ipfs node B (default 5002 / 8081 / 4002)
#        VIGIL_MONGO_PORT   SecantusDB (MongoDB wire protocol) port (default 27017)
#        VIGIL_CACHE_DIR    where install.sh put js-ipfs and SecantusDB (default $HOME/.cache/vigil)
#        VIGIL_READY_TIMEOUT  seconds to wait for the camera (default 10); VIGIL_IPFS_READY_TIMEOUT (60) and
#                           VIGIL_MONGO_READY_TIMEOUT (30) for the others
#
# ipfs-a / ipfs-b: js-ipfs 0.66.1 daemons (node processes), repos $VIGIL_TESTBED_DIR/ipfs-a and ipfs-b,
# initialised once with `jsipfs init --profile test`; before every start their config is set to listen on
# 127.0.0.1 only (Addresses.API, Gateway, Swarm), no gRPC (Addresses.RPC ""), no Bootstrap, Delegates or
# Announce, MDNS and webRTCStar off, no NAT port mapping, pubsub (gossipsub) on; started with
# `jsipfs daemon --enable-preload=false`. When both run, B is connected to A (swarm/connect).
# mongo: SecantusDB 0.7.0b3 (secantusd-py), data in $VIGIL_TESTBED_DIR/mongo-data (kept across restarts).
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

# ---- ipfs-a, ipfs-b: js-ipfs 0.66.1 daemons ------------------------------------------------------
IPFS_READY_TIMEOUT=${VIGIL_IPFS_READY_TIMEOUT:-60}
IPFS_NM=""

# Sets IPFS_NM (once per run) to the node_modules of testbed/ipfs from the cache (npm-cache.sh reuses
# a complete install without network; on a cache miss it runs `npm ci`, as `install.sh ipfs` does).
ipfs_node_modules() {
    if [[ -z $IPFS_NM ]]; then
        command -v node >/dev/null || tb_die "node missing: run testbed/install.sh ipfs"
        command -v curl >/dev/null || tb_die "curl missing: run testbed/install.sh ipfs"
        IPFS_NM=$("$TESTBED_HOME/npm-cache.sh" ipfs) || tb_die "js-ipfs is not installed: run testbed/install.sh ipfs"
        [[ -f $IPFS_NM/ipfs/src/cli.js ]] || tb_die "$IPFS_NM/ipfs/src/cli.js missing: run testbed/install.sh ipfs"
    fi
}

check_port() {
    [[ $2 =~ ^[0-9]+$ && $2 -ge 1 && $2 -le 65535 ]] || tb_die "$1 must be a port number (1-65535), got '$2'"
}

# ipfs_configure REPO API GATEWAY SWARM: write the test bed's settings into REPO/config (the daemon
# is not running). Every address is on 127.0.0.1; nothing is dialled or announced beyond it.
ipfs_configure() {
    node - "$@" <<'JS'
const fs = require('fs')
const [repo, api, gateway, swarm] = process.argv.slice(2)
const file = repo + '/config'
const c = JSON.parse(fs.readFileSync(file, 'utf8'))
c.Addresses = c.Addresses || {}
c.Addresses.API = `/ip4/127.0.0.1/tcp/${api}`
c.Addresses.Gateway = `/ip4/127.0.0.1/tcp/${gateway}`
c.Addresses.Swarm = [`/ip4/127.0.0.1/tcp/${swarm}`] // TCP only: no WebSocket listener
c.Addresses.RPC = '' // gRPC-over-websocket server (ipfs-client only): off
c.Addresses.Announce = []
c.Addresses.NoAnnounce = []
c.Addresses.Delegates = [] // delegated routing would call *.delegate.ipfs.io
c.Bootstrap = []
c.Discovery = { MDNS: { Enabled: false, Interval: 10 }, webRTCStar: { Enabled: false } }
c.Swarm = { ...(c.Swarm || {}), DisableNatPortMap: true } // no UPnP / NAT-PMP on the LAN
c.Pubsub = { Router: 'gossipsub', Enabled: true }
const tmp = file + '.tmp'
fs.writeFileSync(tmp, JSON.stringify(c, null, 2) + '\n')
fs.renameSync(tmp, file)
JS
}

up_ipfs() {
    local svc=$1 nm repo pid api gw swarm settings have i log
    ipfs_node_modules
    nm=$IPFS_NM
    repo=$(ipfs_repo_of "$svc")
    log=$(logfile_of "$svc")
    read -r api gw swarm <<<"$(ipfs_ports_of "$svc")"
    local up=${svc#ipfs-}
    check_port "VIGIL_IPFS_${up^^}_API_PORT" "$api"
    check_port "VIGIL_IPFS_${up^^}_GATEWAY_PORT" "$gw"
    check_port "VIGIL_IPFS_${up^^}_SWARM_PORT" "$swarm"
    settings="api=$api gateway=$gw swarm=$swarm js-ipfs=$nm"
    if pid=$(service_pid "$svc"); then
        have=$(env_value_of "$pid" VIGIL_TB_SETTINGS)
        if [[ $have == "$settings" ]] && ipfs_answers "$svc"; then
            tb_log "$svc already running (pid $pid)"
            return 0
        elif [[ $have == "$settings" ]]; then
            # js-ipfs can lose its HTTP API (e.g. after its peer went away) while the process lives on: the
            # port may even accept connections and reset them.
            tb_log "$svc pid $pid runs but its API on 127.0.0.1:$api does not answer POST /api/v0/id; restarting it"
        else
            tb_log "$svc pid $pid runs with other settings ($have); restarting it"
        fi
        "$TESTBED_HOME/down.sh" "$svc"
    elif [[ -f $(pidfile_of "$svc") ]]; then
        tb_log "stale $(pidfile_of "$svc") (pid $(head -n1 "$(pidfile_of "$svc")") is dead or not $svc); removing"
        rm -f "$(pidfile_of "$svc")"
    fi
    for i in "$api" "$gw" "$swarm"; do
        if tcp_open 127.0.0.1 "$i"; then
            tb_die "port 127.0.0.1:$i (for $svc) is already taken by another program (not in $(pidfile_of "$svc")); set the VIGIL_IPFS_${up^^}_*_PORT variables or stop it"
        fi
    done
    # Our daemon for this repo is not running (no live PID, its ports are free): a repo.lock or api file
    # left by a SIGKILLed daemon would make the next one fail with "Lock already being held".
    if [[ -e $repo/repo.lock || -e $repo/api ]]; then
        tb_log "$svc: removing stale $repo/repo.lock and $repo/api (no live daemon)"
        rm -rf "$repo/repo.lock" "$repo/api"
    fi
    if [[ ! -f $repo/config ]]; then
        rm -rf "$repo"
        mkdir -p "$(dirname "$repo")"
        printf '===== %s up.sh: jsipfs init --profile test (IPFS_PATH=%s)\n' "$(date -Is)" "$repo" >>"$log"
        IPFS_PATH=$repo NO_UPDATE_NOTIFIER=1 node "$nm/ipfs/src/cli.js" init --profile test </dev/null >>"$log" 2>&1 ||
            fail_with_log "$svc" "jsipfs init --profile test failed for $repo"
        # An init that failed half-way must not look initialised next time.
        [[ -f $repo/config ]] || fail_with_log "$svc" "jsipfs init left no $repo/config"
    fi
    ipfs_configure "$repo" "$api" "$gw" "$swarm" || tb_die "cannot write $repo/config"
    # env execs node, and setsid (in launch) execs env: the PID file holds the node daemon itself.
    # NO_UPDATE_NOTIFIER: the CLI would otherwise query the npm registry from a detached child process.
    pid=$(launch "$svc" env IPFS_PATH="$repo" NO_UPDATE_NOTIFIER=1 VIGIL_TB_SERVICE="$svc" \
        VIGIL_TB_SETTINGS="$settings" node "$nm/ipfs/src/cli.js" daemon --enable-preload=false)
    for ((i = 0; i < IPFS_READY_TIMEOUT * 10; i++)); do
        if ! pid_alive "$pid"; then
            rm -f "$(pidfile_of "$svc")"
            fail_with_log "$svc" "$svc (pid $pid) exited during start-up"
        fi
        if IPFS_RPC_TIMEOUT=2 ipfs_rpc "$svc" id 2>/dev/null | grep '"ID"' >/dev/null; then
            tb_log "$svc started (pid $pid), POST /api/v0/id answers after $((i * 100)) ms"
            return 0
        fi
        sleep 0.1
    done
    fail_with_log "$svc" "$svc (pid $pid) does not answer POST http://127.0.0.1:$api/api/v0/id after ${IPFS_READY_TIMEOUT} s (left running; stop it with down.sh)"
}

up_ipfs-a() { up_ipfs ipfs-a; }
up_ipfs-b() { up_ipfs ipfs-b; }

# json_field NAME: read a JSON object on stdin, print its field NAME (arrays: one element a line).
json_field() {
    node -e '
let s = ""
process.stdin.on("data", d => { s += d }).on("end", () => {
  const v = JSON.parse(s)[process.argv[1]]
  if (Array.isArray(v)) v.forEach(x => console.log(typeof x === "object" ? JSON.stringify(x) : x))
  else if (v !== undefined && v !== null) console.log(typeof v === "object" ? JSON.stringify(v) : v)
})' "$1"
}

# ipfs_answers SVC: POST /api/v0/id answers with an ID, within three tries over about two seconds.
ipfs_answers() {
    local i
    for ((i = 0; i < 3; i++)); do
        IPFS_RPC_TIMEOUT=2 ipfs_rpc "$1" id 2>/dev/null | grep '"ID"' >/dev/null && return 0
        sleep 0.3
    done
    return 1
}

# ipfs_peer_id SVC: the node's peer id (three tries: a node that just saw its peer come back may reset one
# connection).
ipfs_peer_id() {
    local i id
    for ((i = 0; i < 3; i++)); do
        id=$(ipfs_rpc "$1" id 2>/dev/null | json_field ID 2>/dev/null) && [[ -n $id ]] && {
            printf '%s\n' "$id"
            return 0
        }
        sleep 0.3
    done
    return 1
}

# ipfs_peers SVC: the peer IDs in the node's swarm/peers.
ipfs_peers() { ipfs_rpc "$1" swarm/peers | json_field Peers | node -e '
let s = ""; process.stdin.on("data", d => { s += d }).on("end", () => {
  s.split("\n").filter(Boolean).forEach(l => console.log(JSON.parse(l).Peer)) })'; }

# ipfs_link_once: with both nodes running, make sure B is connected to A (A's multiaddr on 127.0.0.1 with
# /p2p/<A's id>) and both list the other in swarm/peers. Nothing else would connect them (no bootstrap,
# no MDNS), and a restarted node loses the connection, so this runs after every up.sh touching ipfs.
ipfs_link_once() {
    local ida idb swarm_a addr i
    ida=$(ipfs_peer_id ipfs-a) && [[ -n $ida ]] || { tb_log "ipfs-a: cannot read its peer id"; return 1; }
    idb=$(ipfs_peer_id ipfs-b) && [[ -n $idb ]] || { tb_log "ipfs-b: cannot read its peer id"; return 1; }
    read -r _ _ swarm_a <<<"$(ipfs_ports_of ipfs-a)"
    addr=/ip4/127.0.0.1/tcp/$swarm_a/p2p/$ida
    if ipfs_peers ipfs-b | grep -xF "$ida" >/dev/null && ipfs_peers ipfs-a | grep -xF "$idb" >/dev/null; then
        tb_log "ipfs-b already connected to ipfs-a"
        return 0
    fi
    ipfs_rpc ipfs-b "swarm/connect?arg=$addr" >/dev/null || { tb_log "ipfs-b: swarm/connect $addr failed"; return 1; }
    for ((i = 0; i < 100; i++)); do
        if ipfs_peers ipfs-b | grep -xF "$ida" >/dev/null && ipfs_peers ipfs-a | grep -xF "$idb" >/dev/null; then
            tb_log "ipfs-b connected to ipfs-a ($addr), after $((i * 100)) ms both list the other in swarm/peers"
            return 0
        fi
        sleep 0.1
    done
    tb_log "ipfs-b connected to $addr, but swarm/peers does not show both sides after 10 s"
    return 1
}

# ipfs_link: as ipfs_link_once; when it fails because a node lost its API meanwhile (js-ipfs 0.66's node B
# sometimes does just after node A comes back), that node is restarted and the link tried once more.
ipfs_link() {
    local svc
    service_pid ipfs-a >/dev/null && service_pid ipfs-b >/dev/null || return 0
    ipfs_link_once && return 0
    for svc in ipfs-a ipfs-b; do
        if ! ipfs_answers "$svc"; then
            tb_log "$svc lost its API while linking the nodes; restarting it"
            "$TESTBED_HOME/down.sh" "$svc"
            "up_$svc"
        fi
    done
    ipfs_link_once || tb_die "cannot connect ipfs-b to ipfs-a (see $(logfile_of ipfs-a) and $(logfile_of ipfs-b))"
}

summary_ipfs() {
    local svc=$1 pid api gw swarm id
    if pid=$(service_pid "$svc"); then
        read -r api gw swarm <<<"$(ipfs_ports_of "$svc")"
        id=$(IPFS_RPC_TIMEOUT=3 ipfs_peer_id "$svc" 2>/dev/null || true)
        printf '  %-8s pid %-7s API http://127.0.0.1:%s/api/v0  gateway http://127.0.0.1:%s\n' "$svc" "$pid" "$api" "$gw"
        printf '  %-8s swarm /ip4/127.0.0.1/tcp/%s/p2p/%s\n' "" "$swarm" "${id:-?}"
        printf '  %-8s repo %s  log %s\n' "" "$(ipfs_repo_of "$svc")" "$(logfile_of "$svc")"
    else
        printf '  %-8s NOT RUNNING\n' "$svc"
    fi
}
summary_ipfs-a() { summary_ipfs ipfs-a; }
summary_ipfs-b() { summary_ipfs ipfs-b; }

# ---- mongo: SecantusDB (MongoDB wire protocol) ------------------------------------------------------
MONGO_READY_TIMEOUT=${VIGIL_MONGO_READY_TIMEOUT:-30}

# The full command line (a running mongo with a different one is restarted). --config names a file of
# our own, which turns off secantusd's auto-discovery of ./secantusd.toml, ~/.secantus/ and /etc/secantus/.
mongo_cmd() {
    printf '%s\n' "$SECANTUS_VENV/bin/python3" "$SECANTUS_VENV/bin/secantusd-py" \
        --config "$STATE_DIR/mongo.toml" --host 127.0.0.1 --port "$VIGIL_MONGO_PORT" \
        --storage-path "$STATE_DIR/mongo-data"
}

up_mongo() {
    local pid cmd want i
    local -a argv
    check_port VIGIL_MONGO_PORT "$VIGIL_MONGO_PORT"
    [[ -f $SECANTUS_VENV/.complete && -x $SECANTUS_VENV/bin/secantusd-py ]] ||
        tb_die "SecantusDB is not installed in $SECANTUS_VENV: run testbed/install.sh mongo"
    mapfile -t argv < <(mongo_cmd)
    want="${argv[*]} "
    if pid=$(service_pid mongo); then
        cmd=$(cmdline_of "$pid")
        if [[ $cmd == "$want" ]]; then
            tb_log "mongo already running (pid $pid)"
            return 0
        fi
        tb_log "mongo pid $pid runs with other settings ($cmd); restarting it"
        "$TESTBED_HOME/down.sh" mongo
    elif [[ -f $(pidfile_of mongo) ]]; then
        tb_log "stale $(pidfile_of mongo) (pid $(head -n1 "$(pidfile_of mongo)") is dead or not secantusd-py); removing"
        rm -f "$(pidfile_of mongo)"
    fi
    if tcp_open 127.0.0.1 "$VIGIL_MONGO_PORT"; then
        tb_die "port 127.0.0.1:$VIGIL_MONGO_PORT is already taken by another program (not in $(pidfile_of mongo)); set VIGIL_MONGO_PORT or stop it"
    fi
    printf '# vigil test bed: SecantusDB settings come from the command line (up.sh); this file is\n# empty on purpose (naming it turns off the auto-discovery of other secantusd.toml files).\n' \
        >"$STATE_DIR/mongo.toml"
    mkdir -p "$STATE_DIR/mongo-data"
    pid=$(launch mongo "${argv[@]}")
    for ((i = 0; i < MONGO_READY_TIMEOUT * 10; i++)); do
        if ! pid_alive "$pid"; then
            rm -f "$(pidfile_of mongo)"
            fail_with_log mongo "mongo (pid $pid) exited during start-up"
        fi
        if tcp_open 127.0.0.1 "$VIGIL_MONGO_PORT" && mongo_hello "$VIGIL_MONGO_PORT"; then
            tb_log "mongo started (pid $pid), hello answers after $((i * 100)) ms"
            return 0
        fi
        sleep 0.1
    done
    fail_with_log mongo "mongo (pid $pid) does not answer hello on 127.0.0.1:$VIGIL_MONGO_PORT after ${MONGO_READY_TIMEOUT} s (left running; stop it with down.sh)"
}

summary_mongo() {
    local pid
    if pid=$(service_pid mongo); then
        printf '  %-8s pid %-7s mongodb://127.0.0.1:%s  (SecantusDB %s; data %s)\n' mongo "$pid" "$VIGIL_MONGO_PORT" \
            "$SECANTUS_VERSION" "$STATE_DIR/mongo-data"
        printf '  %-8s log %s\n' "" "$(logfile_of mongo)"
    else
        printf '  %-8s NOT RUNNING\n' mongo
    fi
}

main() {
    local svcs=("$@") s
    ((${#svcs[@]})) || svcs=("${ALL_SERVICES[@]}")
    check_services "${svcs[@]}"
    mkdir -p "$STATE_DIR"
    for s in "${svcs[@]}"; do "up_$s"; done
    if [[ " ${svcs[*]} " == *" ipfs-"[ab]" "* ]]; then ipfs_link; fi
    printf 'vigil test bed (state: %s):\n' "$STATE_DIR"
    for s in "${svcs[@]}"; do "summary_$s"; done
}

main "$@"
