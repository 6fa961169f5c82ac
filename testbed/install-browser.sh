#!/usr/bin/env bash
# install-browser.sh — idempotent installer of the headless browser used by testbed/browser-check.mjs.
#
# Usage: testbed/install-browser.sh
#
# Installs Debian's `chromium` with apt, only when /usr/bin/chromium is missing (apt-get update runs only
# then). playwright-core drives this system Chromium (executablePath /usr/bin/chromium); `npx playwright
# install` is never used (it downloads a browser build, which this machine kind cannot fetch).
# Must run as root (or via sudo). The npm side (playwright-core, hls.js) comes from testbed/npm-cache.sh.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
CHROMIUM=/usr/bin/chromium

log() { printf '[install-browser] %s\n' "$*" >&2; }
die() { printf '[install-browser] ERROR: %s\n' "$*" >&2; exit 1; }

if [[ -x $CHROMIUM ]]; then
    log "ok: $($CHROMIUM --version 2>/dev/null || echo "$CHROMIUM") already installed"
    exit 0
fi

SUDO=""
if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || die "run as root (or install sudo)"
    SUDO="sudo"
fi

if pgrep -x 'apt-get|apt|dpkg' >/dev/null 2>&1; then
    log "another apt/dpkg process is running; waiting for it (max 10 min)"
    for ((i = 0; i < 600; i++)); do
        pgrep -x 'apt-get|apt|dpkg' >/dev/null 2>&1 || break
        sleep 1
    done
fi

start=$SECONDS
log "apt-get update"
$SUDO apt-get update -qq
log "apt-get install chromium"
$SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
[[ -x $CHROMIUM ]] || die "$CHROMIUM still missing after apt-get install chromium"
log "ok: $($CHROMIUM --version 2>/dev/null || echo "$CHROMIUM") ($((SECONDS - start)) s)"
