#!/usr/bin/env bash
# install.sh — idempotent installer for the vigil test bed (real servers, no mocks).
#
# Usage: testbed/install.sh [component ...]
#   Components known today: ffmpeg camera ipfs mongo nginx prometheus rabbitmq chaos   (default: all of them)
#     ipfs   js-ipfs 0.66.1 from testbed/ipfs/package-lock.json, `npm ci` into
#            ${VIGIL_CACHE_DIR:-$HOME/.cache/vigil}/ipfs-<sha256 of the lockfile>/ (testbed/npm-cache.sh ipfs)
#     mongo  SecantusDB 0.7.0b3 (MongoDB wire protocol) in a venv at
#            ${VIGIL_CACHE_DIR:-$HOME/.cache/vigil}/secantusdb-0.7.0b3/ (marker file .complete)
#     nginx  nginx-light (binary only), openssl, curl, wrk
#     prometheus  Prometheus 2.42 and promtool (binary only; the package's own service is kept from starting)
#     rabbitmq  RabbitMQ 3.10 (AMQP 0-9-1 broker; the package's own service is kept from starting: it would
#            listen on every interface. up.sh and the tests start it loopback-only.)
#     chaos  what chaos-tests/ injects faults with: nftables (packet loss and partitions inside a private
#            network namespace), iproute2 (`ip netns`), libfaketime (wall-clock steps around vigil)
#
# The caches live outside the clone (CI clones afresh every run) and are reused when complete.
# Each component is one function `install_<name>`. apt-get update runs at most once, and only
# when some package is actually missing; when everything is present the script exits in seconds.
# Must run as root (or via sudo). See testbed/ports.md for the port plan.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
ALL_COMPONENTS=(ffmpeg camera ipfs mongo nginx prometheus rabbitmq chaos)

log() { printf '[install] %s\n' "$*" >&2; }
die() { printf '[install] ERROR: %s\n' "$*" >&2; exit 1; }

SUDO=""
if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || die "run as root (or install sudo)"
    SUDO="sudo"
fi

# Print the packages from "$@" that are not fully installed.
missing_pkgs() {
    local p st
    for p in "$@"; do
        st=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
        [[ $st == installed ]] || printf '%s\n' "$p"
    done
}

APT_UPDATED=0
# apt_install PKG... : install only what is missing; apt-get update once per run, only if needed.
apt_install() {
    local missing
    mapfile -t missing < <(missing_pkgs "$@")
    if ((${#missing[@]} == 0)); then
        return 0
    fi
    if pgrep -x 'apt-get|apt|dpkg' >/dev/null 2>&1; then
        log "another apt/dpkg process is running; waiting for it (max 10 min)"
        local i
        for ((i = 0; i < 600; i++)); do
            pgrep -x 'apt-get|apt|dpkg' >/dev/null 2>&1 || break
            sleep 1
        done
    fi
    if ((APT_UPDATED == 0)); then
        log "apt-get update (missing: ${missing[*]})"
        $SUDO apt-get update -qq
        APT_UPDATED=1
    fi
    log "apt-get install ${missing[*]}"
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    mapfile -t missing < <(missing_pkgs "$@")
    ((${#missing[@]} == 0)) || die "still missing after install: ${missing[*]}"
}

install_ffmpeg() {
    apt_install ffmpeg
    # (no `grep -q` in a pipe: with pipefail, ffmpeg's SIGPIPE would fail the check)
    [[ $(ffmpeg -hide_banner -encoders 2>/dev/null) == *libx264* ]] || die "ffmpeg has no libx264"
}

# GStreamer RTSP server used by testbed/camera.py (run with /usr/bin/python3, not pyenv's python3).
install_camera() {
    apt_install python3-gi gir1.2-gst-rtsp-server-1.0 gir1.2-gstreamer-1.0 \
        gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly \
        gstreamer1.0-plugins-bad gstreamer1.0-tools gstreamer1.0-rtsp gstreamer1.0-x
    /usr/bin/python3 -c "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer" \
        || die "python3-gi cannot load GstRtspServer"
    local el
    for el in videotestsrc clockoverlay timeoverlay textoverlay x264enc rtph264pay; do
        gst-inspect-1.0 --exists "$el" || die "GStreamer element $el missing"
    done
}

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE_ROOT=${VIGIL_CACHE_DIR:-${HOME:?HOME is not set; set VIGIL_CACHE_DIR}/.cache/vigil}
SECANTUS_VERSION=0.7.0b3

ms_since() { echo $((($(date +%s%N) - $1) / 1000000)); }

# js-ipfs 0.66.1: node_modules from testbed/ipfs/package-lock.json in the cache (npm-cache.sh ipfs), then
# prove that the daemon's whole module graph loads on this Node (newer transitive packages break it).
install_ipfs() {
    local nm t0 major
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        # Debian 12's nodejs is 18, enough for js-ipfs 0.66 (engines: node >= 16).
        apt_install nodejs npm
    fi
    # up.sh and check-ipfs.sh talk to the RPC API with curl.
    command -v curl >/dev/null 2>&1 || apt_install curl
    major=$(node -p 'process.versions.node.split(".")[0]')
    ((major >= 16)) || die "js-ipfs 0.66 needs Node >= 16, found $(node --version)"
    t0=$(date +%s%N)
    nm=$("$HERE/npm-cache.sh" ipfs) || die "npm ci of testbed/ipfs failed"
    [[ -f $nm/ipfs/src/cli.js ]] || die "$nm/ipfs/src/cli.js missing (broken cache? remove $(dirname "$nm") and re-run)"
    (cd "$nm/.." && NO_UPDATE_NOTIFIER=1 node --input-type=module -e "
        await import('ipfs-daemon'); await import('ipfs-core');
        const p = JSON.parse((await import('fs')).readFileSync('node_modules/ipfs/package.json', 'utf8'));
        if (p.version !== '0.66.1') { console.error('ipfs is ' + p.version); process.exit(1) }") ||
        die "js-ipfs in $nm does not load on node $(node --version)"
    log "js-ipfs 0.66.1 ready in $nm ($(ms_since "$t0") ms)"
}

# SecantusDB in its own venv, built in place (venvs are not relocatable) and marked complete only after
# the server and pymongo import; an incomplete folder (interrupted install) is removed and rebuilt.
# nginx: a real reverse proxy with basic auth / a bearer check in front of an IPFS API (tests of the Kubo
# client's auth), TLS in front of vigil with deploy/nginx/vigil.conf (tests/tls.rs: openssl makes the
# certificate, curl is the HTTPS client), and the HTTP benchmark (testbed/http-bench.sh: wrk is the load).
# Only the binary is used: tests run private instances.
install_nginx() {
    apt_install nginx-light openssl curl wrk
    # The package starts a system-wide nginx on port 80 (all interfaces): not ours to keep running.
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet nginx 2>/dev/null; then
        $SUDO systemctl stop nginx || true
        $SUDO systemctl disable nginx >/dev/null 2>&1 || true
    fi
    command -v nginx >/dev/null || die "nginx missing after apt-get install nginx-light"
    command -v wrk >/dev/null || die "wrk missing after apt-get install wrk"
}

# Prometheus 2.42 + promtool from Debian: the alert-rule unit tests (promtool test rules) and the
# metrics tests, which run a private Prometheus on 127.0.0.1. The package's init script would start a
# system-wide server on :9090 on all interfaces: a policy-rc.d that refuses service starts is in place
# for the install only, and a server that started anyway is stopped.
install_prometheus() {
    local policy=/usr/sbin/policy-rc.d placed=0
    if [[ $(missing_pkgs prometheus) ]]; then
        if [[ ! -e $policy ]]; then
            printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
            $SUDO chmod 755 "$policy"
            placed=1
        fi
        apt_install prometheus || { ((placed)) && $SUDO rm -f "$policy"; die "apt-get install prometheus failed"; }
        ((placed)) && $SUDO rm -f "$policy"
    fi
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then
        $SUDO systemctl stop prometheus || true
        $SUDO systemctl disable prometheus >/dev/null 2>&1 || true
    fi
    command -v prometheus >/dev/null || die "prometheus missing after apt-get install prometheus"
    command -v promtool >/dev/null || die "promtool missing after apt-get install prometheus"
}

# Install packages whose maintainer scripts would start a system-wide service: a policy-rc.d that says no
# (removed afterwards if it was ours), then stop and disable a service that runs anyway.
apt_install_quiet_service() {
    local service=$1 policy=/usr/sbin/policy-rc.d placed=0
    shift
    if [[ $(missing_pkgs "$@") ]]; then
        if [[ ! -e $policy ]]; then
            printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
            $SUDO chmod 755 "$policy"
            placed=1
        fi
        apt_install "$@" || { ((placed)) && $SUDO rm -f "$policy"; die "apt-get install $* failed"; }
        ((placed)) && $SUDO rm -f "$policy"
    fi
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$service" 2>/dev/null; then
        $SUDO systemctl stop "$service" || true
        $SUDO systemctl disable "$service" >/dev/null 2>&1 || true
    fi
}

install_rabbitmq() {
    apt_install_quiet_service rabbitmq-server rabbitmq-server
    [[ -x /usr/lib/rabbitmq/bin/rabbitmq-server || -n $(command -v rabbitmq-server) ]] ||
        die "rabbitmq-server missing after apt-get install rabbitmq-server"
    command -v epmd >/dev/null || [[ -x /usr/bin/epmd ]] || die "epmd (erlang) missing after installing rabbitmq-server"
}

install_chaos() {
    apt_install nftables iproute2 faketime
    command -v nft >/dev/null || die "nft missing after apt-get install nftables"
    command -v ip >/dev/null || die "ip missing after apt-get install iproute2"
    command -v faketime >/dev/null || die "faketime missing after apt-get install faketime"
}

install_mongo() {
    local dir=$CACHE_ROOT/secantusdb-$SECANTUS_VERSION py t0 lockfd
    # The venv's python links to the interpreter that made it: if that one went away, rebuild.
    complete() {
        [[ -f $dir/.complete && -x $dir/bin/secantusd-py ]] &&
            "$dir/bin/python" -c 'import secantus, pymongo' >/dev/null 2>&1
    }
    if complete; then
        log "SecantusDB $SECANTUS_VERSION ready in $dir (cached)"
        return 0
    fi
    py=$(command -v python3 || true)
    [[ -n $py ]] || { apt_install python3; py=$(command -v python3); }
    "$py" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 9) else 1)' ||
        die "SecantusDB needs python3 >= 3.9 ($py is $("$py" --version 2>&1))"
    # Debian's python3 has venv but not ensurepip until python3-venv is installed.
    if ! "$py" -c 'import venv, ensurepip' >/dev/null 2>&1; then
        [[ $py == /usr/bin/python3 ]] || die "$py has no venv/ensurepip module"
        apt_install python3-venv
    fi
    mkdir -p "$CACHE_ROOT"
    exec {lockfd}>"$dir.lock"
    if command -v flock >/dev/null 2>&1; then
        flock -w 600 "$lockfd" || die "timed out waiting for $dir.lock"
    fi
    if complete; then
        log "SecantusDB $SECANTUS_VERSION ready in $dir (installed by a concurrent run)"
        return 0
    fi
    t0=$(date +%s%N)
    rm -rf "$dir"
    log "python3 -m venv $dir ($("$py" --version 2>&1)) + pip install secantusdb==$SECANTUS_VERSION"
    "$py" -m venv "$dir" || { rm -rf "$dir"; die "python3 -m venv $dir failed"; }
    if ! "$dir/bin/pip" install -q --disable-pip-version-check --no-input "secantusdb==$SECANTUS_VERSION" >&2; then
        rm -rf "$dir"
        die "pip install secantusdb==$SECANTUS_VERSION failed"
    fi
    "$dir/bin/python" -c 'import secantus, pymongo' || { rm -rf "$dir"; die "secantus/pymongo do not import in $dir"; }
    "$dir/bin/secantusd-py" --help >/dev/null || { rm -rf "$dir"; die "$dir/bin/secantusd-py --help failed"; }
    date -Is >"$dir/.complete"
    log "SecantusDB $SECANTUS_VERSION installed in $dir ($(ms_since "$t0") ms)"
}

main() {
    local comps=("$@") c start=$SECONDS
    ((${#comps[@]})) || comps=("${ALL_COMPONENTS[@]}")
    for c in "${comps[@]}"; do
        declare -F "install_$c" >/dev/null || die "unknown component '$c' (known: ${ALL_COMPONENTS[*]})"
    done
    for c in "${comps[@]}"; do
        log "component $c"
        "install_$c"
    done
    log "ok: ${comps[*]} ($((SECONDS - start)) s)"
}

main "$@"
