#!/usr/bin/env bash
# npm-cache.sh — install an npm package folder of the repo with `npm ci` into a cache folder OUTSIDE the
# clone, keyed by the sha256 of its package-lock.json, and print the node_modules path.
#
# Usage: nm=$(testbed/npm-cache.sh)         # ui/ (hls.js, playwright-core): prints <cache>/ui-<sha256>/node_modules
#        nm=$(testbed/npm-cache.sh ui)      # the same
#        nm=$(testbed/npm-cache.sh ipfs)    # testbed/ipfs/ (js-ipfs 0.66.1): prints <cache>/ipfs-<sha256>/node_modules
#        source testbed/npm-cache.sh; nm=$(vigil_ui_node_modules)       # sourced: defines the functions only
#        source testbed/npm-cache.sh; nm=$(vigil_node_modules ipfs)
# Env:   VIGIL_CACHE_DIR  cache root (default $HOME/.cache/vigil)
#
# Package folders known: ui (= ui/), ipfs (= testbed/ipfs/). The folder <cache root>/<name>-<sha256 of
# its package-lock.json>/ holds a copy of package.json and the lockfile, node_modules/, and the marker
# `.complete` (written only after `npm ci` succeeded). A folder with the marker is reused as it is (no
# network). Otherwise `npm ci` runs in a fresh staging folder beside it, which is renamed into place once
# complete, so an interrupted install never looks complete. A lock (flock) serialises concurrent runs for
# the same lockfile. CI clones afresh every run; the cache folder survives on the machine, so only a
# changed lockfile costs an `npm ci` (ui: seconds; ipfs: 3-5 min, ~230 MB).
#
# Needs node and npm (the machine has Node 20 + npm; on a fresh Debian 12: apt-get install nodejs npm —
# Debian's Node 18 is enough for hls.js, but playwright-core, used only by the browser check, and js-ipfs
# want Node >= 20).
# Logs go to stderr; stdout carries only the path.

_vigil_npm_cache_log() { printf '[npm-cache] %s\n' "$*" >&2; }

# vigil_node_modules [NAME]: NAME is ui (default) or ipfs.
vigil_node_modules() (
    set -euo pipefail
    local name=${1:-ui} here repo pkg sentinel what lock hash root dir stage t0 lockfd
    here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
    repo=$(cd "$here/.." && pwd)
    # Each package folder: its path in the repo, a file that proves node_modules is usable, and what it holds.
    case $name in
        ui) pkg=$repo/ui sentinel=hls.js/package.json what="hls.js, playwright-core" ;;
        ipfs) pkg=$repo/testbed/ipfs sentinel=ipfs/package.json what="js-ipfs 0.66.1" ;;
        *)
            _vigil_npm_cache_log "ERROR: unknown package folder '$name' (known: ui, ipfs)"
            exit 1
            ;;
    esac
    lock=$pkg/package-lock.json
    [[ -f $lock && -f $pkg/package.json ]] || {
        _vigil_npm_cache_log "ERROR: $pkg/package.json or package-lock.json missing"
        exit 1
    }
    hash=$(sha256sum "$lock" | cut -d' ' -f1)
    root=${VIGIL_CACHE_DIR:-${HOME:?HOME is not set; set VIGIL_CACHE_DIR}/.cache/vigil}
    dir=$root/$name-$hash

    complete() { [[ -f $1/.complete && -d $1/node_modules && -f $1/node_modules/$sentinel ]]; }

    if complete "$dir"; then
        _vigil_npm_cache_log "reusing $dir (lockfile sha256 ${hash:0:12}…)"
        printf '%s\n' "$dir/node_modules"
        exit 0
    fi

    if ! command -v npm >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then
        _vigil_npm_cache_log "ERROR: npm (and node) are needed to install $pkg ($what) but are not on PATH."
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

    stage=$(mktemp -d "$root/.$name-$hash.staging.XXXXXX")
    chmod 755 "$stage"
    trap 'rm -rf "$stage"' EXIT
    cp "$pkg/package.json" "$lock" "$stage/"
    t0=$(date +%s%N)
    _vigil_npm_cache_log "npm ci (node $(node --version), npm $(npm --version 2>/dev/null)) into $dir"
    # --ignore-scripts: nothing needed here has a required install script, and several must never run:
    # playwright's browser download (the browser is Debian's chromium, see install-browser.sh), and in
    # js-ipfs's tree the optional `wrtc` and `electron` (via electron-eval) that download prebuilt binaries
    # from outside. classic-level (js-ipfs's LevelDB) ships its linux-x64 prebuild inside the package.
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

# The original entry point (ui/), kept for its callers.
vigil_ui_node_modules() { vigil_node_modules ui; }

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    vigil_node_modules "$@"
fi
