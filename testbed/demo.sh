#!/usr/bin/env bash
# demo.sh — the README's demo: record the test bed's simulated cameras with vigil and play them in a browser.
#
# Usage: testbed/demo.sh [start]     install, start the cameras, build vigil, (re)start it, wait until it plays
#        testbed/demo.sh status      what runs, where, and how many segments each live playlist lists (exit 1: vigil down)
#        testbed/demo.sh stop        stop vigil (by its PID file), then the test bed (testbed/down.sh)
#
# Env:   VIGIL_TESTBED_DIR  state folder (default /tmp/vigil-testbed); the demo lives in its demo/ subfolder:
#                           vigil.toml, vigil.pid, vigil.log and data/ (the recordings, kept across runs)
#        VIGIL_HTTP_PORT    vigil's HTTP port on 127.0.0.1 (default 8000)
#        VIGIL_CAMERA_PORT, VIGIL_CAMERAS, VIGIL_CAMERA_ARGS   passed on to up.sh (see testbed/ports.md)
#        VIGIL_CACHE_DIR    where testbed/npm-cache.sh keeps ui/'s node_modules (default $HOME/.cache/vigil)
#        VIGIL_DEMO_PROFILE cargo profile to build and run: debug (default) or release
#        VIGIL_DEMO_TIMEOUT seconds to wait for /healthz and for cam1's first live segment (default 60)
#
# Idempotent: every step is safe to re-run. A vigil still running from an earlier demo run (found through
# demo/vigil.pid) is stopped by PID and started again with the fresh build and config. Everything binds
# 127.0.0.1. Processes are stopped only by the PIDs this script (or up.sh) wrote, never by name.
set -euo pipefail
TB_NAME=demo
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROOT=$(cd "$TESTBED_HOME/.." && pwd)
DEMO_DIR=$STATE_DIR/demo
CONFIG=$DEMO_DIR/vigil.toml
PIDFILE=$DEMO_DIR/vigil.pid
LOG=$DEMO_DIR/vigil.log
DATA_DIR=$DEMO_DIR/data
HTTP_PORT=${VIGIL_HTTP_PORT:-8000}
PROFILE=${VIGIL_DEMO_PROFILE:-debug}
TIMEOUT=${VIGIL_DEMO_TIMEOUT:-60}
STOP_TIMEOUT=15
BASE=http://127.0.0.1:$HTTP_PORT

case $PROFILE in
    debug) BIN=${CARGO_TARGET_DIR:-$ROOT/target}/debug/vigil; CARGO_PROFILE_ARGS=() ;;
    release) BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/vigil; CARGO_PROFILE_ARGS=(--release) ;;
    *) tb_die "VIGIL_DEMO_PROFILE must be debug or release, got '$PROFILE'" ;;
esac
[[ $HTTP_PORT =~ ^[0-9]+$ && $HTTP_PORT -ge 1 && $HTTP_PORT -le 65535 ]] ||
    tb_die "VIGIL_HTTP_PORT must be a port number (1-65535), got '$HTTP_PORT'"

now_ms() { echo $(($(date +%s%N) / 1000000)); }
secs_since() { awk -v a="$1" -v b="$(now_ms)" 'BEGIN { printf "%.1f", (b - a) / 1000 }'; }

# http_get URL: print the body of a 2xx answer; fail otherwise. curl when present, else Debian's python3
# (installed with the camera simulator), so a fresh machine without curl works too.
# Sends the demo's API token (DEMO_TOKEN, see ensure_users) when it has one: every route but /healthz needs a login.
DEMO_TOKEN=""
http_get() {
    if command -v curl >/dev/null 2>&1; then
        curl -fsS --max-time 3 ${DEMO_TOKEN:+-H "Authorization: Bearer $DEMO_TOKEN"} "$1" 2>/dev/null
    else
        DEMO_TOKEN=$DEMO_TOKEN /usr/bin/python3 - "$1" 2>/dev/null <<'PY'
import os, sys, urllib.request
req = urllib.request.Request(sys.argv[1])
if os.environ.get("DEMO_TOKEN"):
    req.add_header("Authorization", "Bearer " + os.environ["DEMO_TOKEN"])
with urllib.request.urlopen(req, timeout=3) as r:
    sys.stdout.write(r.read().decode("utf-8", "replace"))
PY
    fi
}

CREDS=$DEMO_DIR/credentials

# ensure_users: a first admin ("admin", every camera) and a client ("client", only cam1), with passwords
# generated once and kept in demo/credentials (mode 0600) with an API token the script itself uses. Reused
# while the catalog still has both users; made anew otherwise (e.g. after the data folder was removed).
ensure_users() {
    local users pw_admin pw_client token
    users=$("$BIN" user list --config "$CONFIG")
    if [[ -f $CREDS ]] && grep -q '^admin ' <<<"$users" && grep -q '^client ' <<<"$users"; then
        DEMO_TOKEN=$(sed -n 's/^token=//p' "$CREDS")
        [[ -n $DEMO_TOKEN ]] && return 0
    fi
    "$BIN" user remove admin --config "$CONFIG" >/dev/null 2>&1 || true
    "$BIN" user remove client --config "$CONFIG" >/dev/null 2>&1 || true
    pw_admin=$(head -c 15 /dev/urandom | base64 | tr '+/' '-_')
    pw_client=$(head -c 15 /dev/urandom | base64 | tr '+/' '-_')
    printf '%s\n' "$pw_admin" | "$BIN" user add admin --role admin --password-stdin --config "$CONFIG" >&2
    printf '%s\n' "$pw_client" | "$BIN" user add client --role client --camera cam1 --password-stdin --config "$CONFIG" >&2
    token=$("$BIN" token add admin --label demo.sh --config "$CONFIG" | awk '{print $NF}')
    (
        umask 077
        printf 'admin=%s\nclient=%s\ntoken=%s\n' "$pw_admin" "$pw_client" "$token" >"$CREDS.tmp"
    )
    mv -f "$CREDS.tmp" "$CREDS"
    DEMO_TOKEN=$token
    tb_log "    created users admin (all cameras) and client (cam1 only); passwords in $CREDS"
}

# toml_str S: S as a TOML basic string.
toml_str() {
    local s=${1//\\/\\\\}
    s=${s//\"/\\\"}
    printf '"%s"' "$s"
}

# vigil_pid: the PID in demo/vigil.pid if it is alive and runs `vigil run --config <this demo's config>`.
vigil_pid() {
    local pid cmd
    [[ -f $PIDFILE ]] || return 1
    pid=$(head -n1 "$PIDFILE" 2>/dev/null | tr -dc '0-9')
    pid_alive "$pid" || return 1
    cmd=$(cmdline_of "$pid")
    [[ $cmd == *vigil" run --config $CONFIG " ]] || return 1
    printf '%s\n' "$pid"
}

# kill_leftovers SID MUST_CONTAIN: SIGKILL the processes still in session SID (the demo's vigil leads its own
# session: setsid), by PID, except SID itself; only those whose command line contains MUST_CONTAIN.
kill_leftovers() {
    local sid=$1 want=$2 p cmd
    [[ $sid =~ ^[0-9]+$ ]] || return 0
    while read -r p; do
        [[ -n $p && $p != "$sid" ]] || continue
        cmd=$(cmdline_of "$p")
        [[ $cmd == *"$want"* ]] || continue
        tb_log "vigil: leftover process $p ($cmd) in vigil's session; SIGKILL"
        kill -KILL "$p" 2>/dev/null || true
    done < <(ps -o pid= -s "$sid" 2>/dev/null | tr -d ' ')
}

# stop_vigil: SIGTERM the demo's vigil (it stops its tree in order: cameras' ffmpeg, then HTTP), wait, then
# SIGKILL it and whatever it left in its own session (it was started with setsid). Removes the PID file.
stop_vigil() {
    local pid i t0
    if ! pid=$(vigil_pid); then
        if [[ -f $PIDFILE ]]; then
            pid=$(head -n1 "$PIDFILE" 2>/dev/null | tr -dc '0-9')
            tb_log "vigil: PID ${pid:-?} is dead or not this demo's vigil; removing stale PID file"
            # An ffmpeg that outlived a killed vigil is still in that vigil's session and writes into DATA_DIR.
            [[ -n $pid ]] && kill_leftovers "$pid" "$DATA_DIR/"
            rm -f "$PIDFILE"
        else
            tb_log "vigil: not running (no PID file)"
        fi
        return 0
    fi
    t0=$(now_ms)
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < STOP_TIMEOUT * 10; i++)); do
        pid_alive "$pid" || break
        sleep 0.1
    done
    if pid_alive "$pid"; then
        tb_log "vigil: pid $pid ignored SIGTERM for ${STOP_TIMEOUT} s; SIGKILL (see $LOG)"
        kill -KILL "$pid" 2>/dev/null || true
        for ((i = 0; i < 20; i++)); do
            pid_alive "$pid" || break
            sleep 0.1
        done
    fi
    kill_leftovers "$pid" ""
    rm -f "$PIDFILE"
    tb_log "vigil: stopped pid $pid ($(secs_since "$t0") s)"
}

camera_ids() {
    local i
    for ((i = 1; i <= VIGIL_CAMERAS; i++)); do printf 'cam%s\n' "$i"; done
}

write_config() {
    local assets=$1 tmp id
    mkdir -p "$DATA_DIR"
    tmp=$CONFIG.tmp
    {
        printf '# Written by testbed/demo.sh on %s; rewritten on every demo start (edit demo.sh instead).\n' "$(date -Is)"
        printf 'node_id = "demo"\n'
        printf 'data_dir = %s\n\n' "$(toml_str "$DATA_DIR")"
        printf '[http]\n'
        printf 'listen = "127.0.0.1:%s"\n' "$HTTP_PORT"
        printf 'assets_dir = %s          # hls.js from npm (testbed/npm-cache.sh)\n' "$(toml_str "$assets")"
        # The distribution pipeline: js-ipfs node A and SecantusDB from the test bed (testbed/up.sh).
        printf '\n[ipfs]\napi = "http://127.0.0.1:%s"\ntopic = "vigil-demo"\n' "$VIGIL_IPFS_A_API_PORT"
        printf '\n[index]\nmongodb_uri = "mongodb://127.0.0.1:%s"\ndatabase = "vigil_demo"\n' "$VIGIL_MONGO_PORT"
        while read -r id; do
            printf '\n[[cameras]]\nid = "%s"\nfactory_id = "demo-site"\nurl = "rtsp://127.0.0.1:%s/%s"\nsegment_seconds = 2\n' \
                "$id" "$VIGIL_CAMERA_PORT" "$id"
        done < <(camera_ids)
    } >"$tmp"
    mv -f "$tmp" "$CONFIG"
}

# ensure_npm: the npm cache needs node + npm; a fresh Debian 12 has neither.
ensure_npm() {
    command -v npm >/dev/null 2>&1 && command -v node >/dev/null 2>&1 && return 0
    local sudo=""
    [[ $(id -u) -eq 0 ]] || sudo=sudo
    tb_log "npm missing: apt-get install nodejs npm"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
    command -v npm >/dev/null 2>&1 || tb_die "npm still missing after apt-get install nodejs npm"
}

# live_segments CAMERA: number of segments cam's live playlist lists (0 when it does not answer).
live_segments() {
    local body
    body=$(http_get "$BASE/cameras/$1/live.m3u8") || { echo 0; return 0; }
    grep -c '^#EXTINF' <<<"$body" || true
}

# last_live_segment CAMERA: catalog id of the newest segment in cam's live playlist (0 if none).
last_live_segment() {
    local body
    body=$(http_get "$BASE/cameras/$1/live.m3u8") || { echo 0; return 0; }
    sed -n 's|^segments/\([0-9]*\)\.ts$|\1|p' <<<"$body" | sort -n | tail -n1 | grep . || echo 0
}

start() {
    local t_start nm assets t pid i n id cam1 base_id urls=()
    t_start=$(now_ms)
    mkdir -p "$DEMO_DIR"
    # Fail before the slow steps when the port belongs to someone else (our own vigil is restarted below).
    if ! vigil_pid >/dev/null && tcp_open 127.0.0.1 "$HTTP_PORT"; then
        tb_die "port 127.0.0.1:$HTTP_PORT is taken by another program (not the demo's vigil in $PIDFILE); stop it or set VIGIL_HTTP_PORT"
    fi

    tb_log "1/7 testbed/install.sh (ffmpeg, camera simulator, js-ipfs, SecantusDB)"
    "$TESTBED_HOME/install.sh"

    tb_log "2/7 hls.js from npm (testbed/npm-cache.sh)"
    ensure_npm
    t=$(now_ms)
    nm=$("$TESTBED_HOME/npm-cache.sh")
    assets=$nm/hls.js/dist
    [[ -f $assets/hls.min.js ]] || tb_die "$assets/hls.min.js missing (broken npm cache? remove $(dirname "$nm") and re-run)"
    tb_log "    assets_dir $assets ($(secs_since "$t") s)"

    tb_log "3/7 testbed/up.sh (simulated cameras, two js-ipfs nodes, SecantusDB)"
    "$TESTBED_HOME/up.sh"

    tb_log "4/7 cargo build ${CARGO_PROFILE_ARGS[*]} -p vigil"
    command -v cargo >/dev/null 2>&1 || tb_die "cargo missing: install the Rust toolchain (rustup)"
    t=$(now_ms)
    (cd "$ROOT" && cargo build "${CARGO_PROFILE_ARGS[@]}" -p vigil)
    [[ -x $BIN ]] || tb_die "cargo build succeeded but $BIN is missing"
    tb_log "    built $BIN ($(secs_since "$t") s)"

    tb_log "5/7 demo config $CONFIG"
    write_config "$assets"
    "$BIN" check-config "$CONFIG" >&2
    ensure_users

    tb_log "6/7 (re)start vigil"
    stop_vigil
    if tcp_open 127.0.0.1 "$HTTP_PORT"; then
        tb_die "port 127.0.0.1:$HTTP_PORT is taken by another program (not the demo's vigil in $PIDFILE); stop it or set VIGIL_HTTP_PORT"
    fi
    printf '===== %s demo.sh: starting %s run --config %s\n' "$(date -Is)" "$BIN" "$CONFIG" >>"$LOG"
    t=$(now_ms)
    # A background job of a non-interactive shell is no group leader, so setsid execs without forking:
    # $! is vigil's own PID, and vigil leads a session of its own (its ffmpeg children included).
    RUST_LOG=${RUST_LOG:-info} setsid "$BIN" run --config "$CONFIG" </dev/null >>"$LOG" 2>&1 &
    pid=$!
    printf '%s\n' "$pid" >"$PIDFILE.tmp"
    mv -f "$PIDFILE.tmp" "$PIDFILE"

    tb_log "7/7 wait for $BASE/healthz and cam1's first live segment (max ${TIMEOUT} s each)"
    for ((i = 0; ; i++)); do
        pid_alive "$pid" || { tail -n 30 "$LOG" | sed 's/^/    /' >&2; rm -f "$PIDFILE"; tb_die "vigil (pid $pid) exited during start-up; log: $LOG"; }
        http_get "$BASE/healthz" >/dev/null && break
        ((i < TIMEOUT * 10)) || { tail -n 30 "$LOG" | sed 's/^/    /' >&2; tb_die "$BASE/healthz does not answer after ${TIMEOUT} s (vigil pid $pid left running; log: $LOG)"; }
        sleep 0.1
    done
    tb_log "    /healthz answers after $(secs_since "$t") s"
    cam1=$(camera_ids | head -n1)
    # The catalog outlives vigil: after a restart the live playlist already lists the previous run's
    # segments. Wait for one newer than those (the new ffmpeg needs >= 2 s for its first segment).
    base_id=$(last_live_segment "$cam1")
    for ((i = 0; ; i++)); do
        pid_alive "$pid" || { tail -n 30 "$LOG" | sed 's/^/    /' >&2; rm -f "$PIDFILE"; tb_die "vigil (pid $pid) exited; log: $LOG"; }
        if (($(last_live_segment "$cam1") > base_id)); then
            n=$(live_segments "$cam1")
            break
        fi
        ((i < TIMEOUT * 5)) || { tail -n 30 "$LOG" | sed 's/^/    /' >&2; tb_die "$BASE/cameras/$cam1/live.m3u8 lists no new segment after ${TIMEOUT} s (vigil pid $pid left running; log: $LOG)"; }
        sleep 0.2
    done
    tb_log "    $cam1's live playlist lists a new segment after $(secs_since "$t") s ($n in its window)"

    while read -r id; do urls+=("$id"); done < <(camera_ids)
    {
        printf '\nvigil demo is running (ready in %s s; vigil pid %s, %s build)\n\n' "$(secs_since "$t_start")" "$pid" "$PROFILE"
        printf '  Viewer:             %s/      (log in; live with day scrub, replay, download)\n' "$BASE"
        printf '  Log in as:          admin / %s   (every camera)\n' "$(sed -n 's/^admin=//p' "$CREDS")"
        printf '                      client / %s   (cam1 only)\n' "$(sed -n 's/^client=//p' "$CREDS")"
        printf '  API token:          Authorization: Bearer %s   (admin; in %s)\n' "$DEMO_TOKEN" "$CREDS"
        printf '  Live playlists:     %s/cameras/%s/live.m3u8\n' "$BASE" "${urls[0]}"
        for id in "${urls[@]:1}"; do printf '                      %s/cameras/%s/live.m3u8\n' "$BASE" "$id"; done
        printf '  Today so far:       %s/cameras/%s/day.m3u8   (same for the other cameras)\n' "$BASE" "$cam1"
        printf '  Recordings:         %s/<camera>/<session>/   (kept across demo runs)\n' "$DATA_DIR"
        printf '  Pipeline backlog:   %s/api/pipeline   (added to IPFS node A, indexed in SecantusDB, announced on "vigil-demo")\n' "$BASE"
        printf '  vigil log:          %s\n' "$LOG"
        printf '  Config:             %s\n' "$CONFIG"
        printf '  Cameras:            rtsp://127.0.0.1:%s/cam1 .. cam%s   (log %s)\n' "$VIGIL_CAMERA_PORT" "$VIGIL_CAMERAS" "$(logfile_of camera)"
        printf '\n'
        printf '  Headless check:     testbed/install-browser.sh && node testbed/ui-check.mjs %s client \047<client password>\047 cam1 /tmp/vigil-demo.png\n' "$BASE"
        printf '  Status:             testbed/demo.sh status\n'
        printf '  Stop:               testbed/demo.sh stop   (stops vigil by its PID, then testbed/down.sh)\n'
    }
}

status() {
    local pid id health
    printf 'vigil demo (state: %s)\n' "$DEMO_DIR"
    [[ -f $CREDS ]] && DEMO_TOKEN=$(sed -n 's/^token=//p' "$CREDS")
    if pid=$(vigil_pid); then
        health=$(http_get "$BASE/healthz" || echo "NOT ANSWERING")
        printf '  vigil    pid %-7s %s/  healthz: %s\n' "$pid" "$BASE" "$health"
        while read -r id; do
            printf '  %-8s %s/cameras/%s/live.m3u8 lists %s segment(s)\n' "$id" "$BASE" "$id" "$(live_segments "$id")"
        done < <(camera_ids)
        printf '  log      %s\n  data     %s\n' "$LOG" "$DATA_DIR"
    else
        printf '  vigil    NOT RUNNING (start it with testbed/demo.sh)\n'
    fi
    if pid=$(service_pid camera); then
        printf '  camera   pid %-7s rtsp://127.0.0.1:%s/cam1..cam%s\n' "$pid" "$VIGIL_CAMERA_PORT" "$VIGIL_CAMERAS"
    else
        printf '  camera   NOT RUNNING\n'
    fi
    vigil_pid >/dev/null
}

stop() {
    stop_vigil
    "$TESTBED_HOME/down.sh"
    tb_log "stopped; recordings kept in $DATA_DIR, log in $LOG"
}

case ${1:-start} in
    start) start ;;
    status) status ;;
    stop) stop ;;
    -h | --help | help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' ;;
    *) tb_die "unknown command '$1' (usage: testbed/demo.sh [start|status|stop])" ;;
esac
