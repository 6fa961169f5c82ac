#!/usr/bin/env bash
# install.sh — idempotent installer for the vigil test bed (real servers, no mocks).
#
# Usage: testbed/install.sh [component ...]
#   Components known today: ffmpeg camera   (default: all of them)
#   Later: ipfs (js-ipfs via npm), secantusdb (pip venv), rabbitmq, prometheus, nginx.
#
# Each component is one function `install_<name>`. apt-get update runs at most once, and only
# when some package is actually missing; when everything is present the script exits in seconds.
# Must run as root (or via sudo). See testbed/ports.md for the port plan.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
ALL_COMPONENTS=(ffmpeg camera)

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
