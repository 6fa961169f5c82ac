#!/usr/bin/env bash
# npm-cache.sh — install ui/'s node_modules (hls.js, playwright-core) with `npm ci` into a cache folder
# OUTSIDE the clone, keyed by the sha256 of ui/package-lock.json, and print the node_modules path.
#
# Usage: nm=$(testbed/npm-cache.sh)             # executed: prints <cache>/ui-<sha256>/node_modules on stdout
#        source testbed/npm-cache.sh; nm=$(vigil_ui_node_modules)   # sourced: defines the function only
# Env:   VIGIL_CACHE_DIR  cache root (default $HOME/.cache/vigil)
#
# The folder <cache root>/ui-<sha256 of ui/package-lock.json>/ holds a copy of package.json and the
# lockfile, node_modules/, and the marker `.complete` (written only after `npm ci` succeeded). A folder
# with the marker is reused as it is (no network). Otherwise `npm ci` runs in a fresh staging folder
# beside it, which is renamed into place once complete, so an interrupted install never looks complete.
# A lock (flock) serialises concurrent runs for the same lockfile. CI clones afresh every run; the cache
# folder survives on the machine, so only a changed lockfile costs an `npm ci`.
#
# Needs node and npm (the machine has Node 20 + npm; on a fresh Debian 12: apt-get install nodejs npm —
# Debian's Node 18 is enough for hls.js, but playwright-core, used only by the browser check, wants Node >= 20).
# Logs go to stderr; stdout carries only the path.

_vigil_npm_cache_log() { printf '[npm-cache] %s\n' "$*" >&2; }

vigil_ui_node_modules() (
    set -euo pipefail
    local here ui lock hash root dir stage t0 lockfd
    here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
    ui=$(cd "$here/../ui" && pwd)
    lock=$ui/package-lock.json
    [[ -f $lock && -f $ui/package.json ]] || {
        _vigil_npm_cache_log "ERROR: $ui/package.json or package-lock.json missing"
        exit 1
    }
    hash=$(sha256sum "$lock" | cut -d' ' -f1)
    root=${VIGIL_CACHE_DIR:-${HOME:?HOME is not set; set VIGIL_CACHE_DIR}/.cache/vigil}
    dir=$root/ui-$hash

    complete() { [[ -f $1/.complete && -d $1/node_modules && -f $1/node_modules/hls.js/package.json ]]; }

    if complete "$dir"; then
        _vigil_npm_cache_log "reusing $dir (lockfile sha256 ${hash:0:12}…)"
        printf '%s\n' "$dir/node_modules"
        exit 0
    fi

    if ! command -v npm >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then
        _vigil_npm_cache_log "ERROR: npm (and node) are needed to install ui/ (hls.js, playwright-core) but are not on PATH."
        _vigil_npm_cache_log "       Install Node.js 20 and npm; on Debian 12: apt-get install nodejs npm"
        exit 1
    fi

    mkdir -p "$root"
    # One installer at a time per lockfile; the second one waits, then finds the folder complete.
    exec {lockfd}>"$dir.lock"
    if command -v flock >/dev/null 2>&1; then
        flock -w 900 "$lockfd" || { _vigil_npm_cache_log "ERROR: timed out waiting for $dir.lock"; exit 1; }
    fi
    if complete "$dir"; then
        _vigil_npm_cache_log "reusing $dir (installed by a concurrent run)"
        printf '%s\n' "$dir/node_modules"
        exit 0
    fi

    stage=$(mktemp -d "$root/.ui-$hash.staging.XXXXXX")
    chmod 755 "$stage"
    trap 'rm -rf "$stage"' EXIT
    cp "$ui/package.json" "$lock" "$stage/"
    t0=$(date +%s%N)
    _vigil_npm_cache_log "npm ci (node $(node --version), npm $(npm --version 2>/dev/null)) into $dir"
    # --ignore-scripts: neither hls.js nor playwright-core needs an install script, and playwright's
    # browser download must never run (the browser is Debian's chromium, see install-browser.sh).
    if ! (cd "$stage" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2); then
        _vigil_npm_cache_log "ERROR: npm ci failed in $stage (lockfile $lock)"
        exit 1
    fi
    date -Is >"$stage/.complete"
    rm -rf "$dir"
    mv "$stage" "$dir"
    trap - EXIT
    _vigil_npm_cache_log "installed in $((($(date +%s%N) - t0) / 1000000)) ms: $dir"
    printf '%s\n' "$dir/node_modules"
)

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    vigil_ui_node_modules "$@"
fi
