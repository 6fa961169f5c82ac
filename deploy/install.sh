#!/usr/bin/env bash
# install.sh — puts vigil in place as a systemd service: a system user `vigil`, the binary in
# /usr/local/bin, the hardened unit (deploy/systemd/vigil.service) in /etc/systemd/system, a config in
# /etc/vigil/vigil.toml (from examples/vigil.toml, data in /var/lib/vigil; an existing config is never
# overwritten), the data folder, then `vigil check-config`, `systemctl daemon-reload` and `enable --now`.
#
# Usage: deploy/install.sh [--binary PATH] [--root DIR] [--no-start]
#   --binary PATH  the vigil binary to install (default: build it with `cargo build --release`)
#   --root DIR     install under DIR instead of / (packaging, tests): no user is created, systemctl is not run
#   --no-start     install and enable nothing: no daemon-reload, no enable --now
# Safe to re-run: it replaces the binary and the unit, keeps the config and the data.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
binary="" root="/" start=1
while (($#)); do
    case $1 in
        --binary) binary=$2; shift 2 ;;
        --root) root=$2; shift 2 ;;
        --no-start) start=0; shift ;;
        -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "install.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
log() { echo "[install] $*"; }
die() { echo "[install] ERROR: $*" >&2; exit 1; }
real_root=0
[[ $(cd "$root" && pwd) == / ]] && real_root=1
if ((real_root)) && ((EUID != 0)); then die "run as root (or with sudo): it creates a user and writes /etc"; fi
if [[ -z $binary ]]; then
    command -v cargo >/dev/null || die "cargo not found: give --binary PATH or install the Rust toolchain"
    (cd "$repo" && cargo build --release --locked) || die "cargo build --release failed"
    binary=$repo/target/release/vigil
fi
[[ -x $binary ]] || die "$binary is not an executable"

if ((real_root)); then
    if ! id vigil >/dev/null 2>&1; then
        useradd --system --home-dir /var/lib/vigil --no-create-home --shell /usr/sbin/nologin vigil
        log "created system user vigil"
    fi
    owner=vigil
else
    owner=$(id -un)
fi

install -D -m 0755 "$binary" "$root/usr/local/bin/vigil"
install -D -m 0644 "$repo/deploy/systemd/vigil.service" "$root/etc/systemd/system/vigil.service"
install -d -m 0750 "$root/var/lib/vigil"
install -d -m 0750 "$root/etc/vigil"
if ((real_root)); then chown vigil:vigil "$root/var/lib/vigil"; chgrp vigil "$root/etc/vigil"; fi
config=$root/etc/vigil/vigil.toml
if [[ -e $config ]]; then
    log "keeping the existing $config"
else
    sed -e 's#^data_dir = .*#data_dir = "/var/lib/vigil"#' "$repo/examples/vigil.toml" >"$config"
    chmod 0640 "$config"
    ((real_root)) && chgrp vigil "$config"
    log "wrote $config from examples/vigil.toml: edit its cameras, then: systemctl restart vigil"
fi
# The config as installed (its data_dir pointed into the root for a check under --root).
check=$(mktemp)
trap 'rm -f "$check"' EXIT
sed -e "s#^data_dir = \"/var/lib/vigil\"#data_dir = \"$root/var/lib/vigil\"#" "$config" >"$check"
"$root/usr/local/bin/vigil" check-config "$check" >/dev/null || die "$config is not valid: vigil check-config $config"
log "installed $root/usr/local/bin/vigil ($("$root/usr/local/bin/vigil" --version)), the unit and the config (owner $owner)"
if ((real_root)) && ((start)); then
    systemctl daemon-reload
    systemctl enable --now vigil.service
    log "vigil.service enabled and started: systemctl status vigil; journalctl -u vigil -f"
else
    log "not started (--no-start or --root): systemctl daemon-reload && systemctl enable --now vigil"
fi
