#!/usr/bin/env bash
# http-bench.sh — HTTP serving with logins on: the same load (wrk -t2 -c16 -d10s on loopback) against
#   (a) nginx serving a segment file and a copy of live.m3u8 as static files (the yardstick),
#   (b) vigil directly, with a valid session cookie (logins on, no nginx: vigil sends the bytes itself),
#   (c) nginx → vigil with the documented deploy/nginx/vigil.conf: vigil checks the cookie and answers the
#       segment with X-Accel-Redirect, nginx sends the file; live.m3u8 is proxied;
# over plain HTTP (the rows comparable with earlier figures) and over HTTPS for (a) and (c). Also: nginx →
# vigil without X-Accel-Redirect (vigil's bytes through nginx), and the time from POST /api/login to the first
# live.m3u8 and first segment (curl). Prints req/s and the ratio to nginx static; appends the table to
# target/figures/http.txt. docs/performance.md ("HTTP serving with logins on") holds a run's figures.
#
# Usage: testbed/http-bench.sh            (needs root for apt; ~3 min plus a release build)
#   HTTP_BENCH_DURATION=10s HTTP_BENCH_CONNECTIONS=16 HTTP_BENCH_THREADS=2 change the load;
#   HTTP_BENCH_KEEP=1 keeps the temporary folder (configs, logs) for a look afterwards.
# Starts its own camera (testbed/camera.py), vigil (release build) and nginx on free 127.0.0.1 ports in a
# temporary folder, and stops exactly those, by PID, on exit.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
cd "$root"

DURATION=${HTTP_BENCH_DURATION:-10s}
CONNS=${HTTP_BENCH_CONNECTIONS:-16}
THREADS=${HTTP_BENCH_THREADS:-2}
NGINX=/usr/sbin/nginx
USER_NAME=bench
USER_PW=bench-pass-$RANDOM$RANDOM

log() { printf '[http-bench] %s\n' "$*" >&2; }
die() { printf '[http-bench] ERROR: %s\n' "$*" >&2; exit 1; }

command -v cargo >/dev/null || die "cargo not found: install the Rust toolchain (rustup) first"
"$here/install.sh" nginx camera ffmpeg
for t in "$NGINX" wrk curl openssl /usr/bin/python3; do
    command -v "$t" >/dev/null || die "$t missing: run testbed/install.sh nginx camera"
done
log "cargo build --release"
# The revision the binary was built from (others may be editing the tree).
rev=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?')
if [[ -n $(git -C "$root" status --porcelain --untracked-files=no -- src Cargo.toml Cargo.lock supervisors 2>/dev/null) ]]; then
    rev="$rev (+ uncommitted changes)"
fi
cargo build --release --quiet --bin vigil
VIGIL=$root/target/release/vigil

tmp=$(mktemp -d /tmp/vigil-http-bench.XXXXXX)
pids=()
cleanup() {
    local i pid n
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        pid=${pids[i]}
        kill -0 "$pid" 2>/dev/null || continue
        kill -TERM "$pid" 2>/dev/null || true
        for ((n = 0; n < 100; n++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null || true
    done
    if [[ ${HTTP_BENCH_KEEP:-0} == 1 ]]; then
        log "kept $tmp"
    else
        rm -rf "$tmp"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
ms_now() { echo $(($(date +%s%N) / 1000000)); }

# until_ok SECONDS WHAT CMD...: poll CMD every 0.1 s until it succeeds or the deadline passes.
until_ok() {
    local secs=$1 what=$2 deadline
    shift 2
    deadline=$(($(ms_now) + secs * 1000))
    until "$@" >/dev/null 2>&1; do
        (($(ms_now) < deadline)) || die "not within ${secs} s: $what"
        sleep 0.1
    done
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
alive() { kill -0 "$1" 2>/dev/null; }

cam_port=$(free_port)
vigil_port=$(free_port)
static_port=$(free_port)
static_tls=$(free_port)
proxy_port=$(free_port)
proxy_tls=$(free_port)
redirect_port=$(free_port)
data=$tmp/data
mkdir -p "$data" "$tmp/static" "$tmp/nginx" "$tmp/acme"

# --- camera -------------------------------------------------------------------------------------------
/usr/bin/python3 -u "$here/camera.py" --address 127.0.0.1 --port "$cam_port" --cameras 1 \
    >"$tmp/camera.log" 2>&1 &
pids+=($!)
cam_pid=$!
until_ok 15 "camera on $cam_port" port_open "$cam_port"

# --- vigil ----------------------------------------------------------------------------------------------
# write_config ACCEL: vigil.toml with or without [http] accel_redirect.
write_config() {
    {
        printf 'node_id = "bench"\ndata_dir = "%s"\n\n[http]\nlisten = "127.0.0.1:%s"\n' "$data" "$vigil_port"
        [[ $1 == accel ]] && printf 'accel_redirect = "/_vigil_data/"\n'
        printf '\n[auth]\nenabled = true\n\n'
        printf '[[cameras]]\nid = "cam1"\nfactory_id = "factory-a"\nurl = "rtsp://127.0.0.1:%s/cam1"\nsegment_seconds = 2\n' "$cam_port"
    } >"$tmp/vigil.toml"
}
vigil_pid=
start_vigil() {
    write_config "$1"
    "$VIGIL" run --config "$tmp/vigil.toml" >>"$tmp/vigil.log" 2>&1 &
    pids+=($!)
    vigil_pid=$!
    until_ok 20 "vigil answers /healthz on $vigil_port" curl -sf "http://127.0.0.1:$vigil_port/healthz"
}
stop_vigil() {
    kill -TERM "$vigil_pid"
    local n
    for ((n = 0; n < 200; n++)); do
        alive "$vigil_pid" || break
        sleep 0.1
    done
    alive "$vigil_pid" && die "vigil (PID $vigil_pid) did not stop within 20 s"
    wait "$vigil_pid" 2>/dev/null || true
}

write_config plain
printf '%s\n' "$USER_PW" | "$VIGIL" user add "$USER_NAME" --role client --camera cam1 --password-stdin \
    --config "$tmp/vigil.toml" >/dev/null
start_vigil plain

# login BASE [curl args]: POST /api/login, print the cookie pair (vigil_session=…).
login() {
    local base=$1
    shift
    curl -sk "$@" -D - -o /dev/null -H 'Content-Type: application/json' \
        --data-binary "{\"username\":\"$USER_NAME\",\"password\":\"$USER_PW\"}" "$base/api/login" |
        tr -d '\r' | sed -n 's/^[Ss]et-[Cc]ookie: *\(vigil_session=[^;]*\).*/\1/p'
}
cookie=$(login "http://127.0.0.1:$vigil_port") || die "login to vigil failed"
[[ -n $cookie ]] || die "login to vigil failed (see $tmp/vigil.log)"

playlist() { curl -sf -H "Cookie: $cookie" "http://127.0.0.1:$vigil_port/cameras/cam1/live.m3u8"; }
three_segments() {
    local n
    n=$(playlist 2>/dev/null | grep -c '\.ts$' || true)
    ((${n:-0} >= 3))
}
until_ok 60 "live.m3u8 lists 3 segments" three_segments
playlist >"$tmp/static/live.m3u8"
seg_uri=$(grep '\.ts$' "$tmp/static/live.m3u8" | head -n1) # segments/<id>.ts
seg_url_path=/cameras/cam1/$seg_uri
seg_len=$(curl -sf -D - -o "$tmp/static/seg.ts" -H "Cookie: $cookie" "http://127.0.0.1:$vigil_port$seg_url_path" |
    tr -d '\r' | sed -n 's/^[Cc]ontent-[Ll]ength: *//p')
seg_bytes=$(stat -c %s "$tmp/static/seg.ts")
[[ $seg_bytes -gt 0 && $seg_bytes == "$seg_len" ]] || die "segment $seg_uri: $seg_bytes bytes, announced $seg_len"
m3u8_bytes=$(stat -c %s "$tmp/static/live.m3u8")
log "segment $seg_url_path: $seg_bytes bytes; live.m3u8: $m3u8_bytes bytes"

# --- nginx ----------------------------------------------------------------------------------------------
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=127.0.0.1 \
    -addext subjectAltName=IP:127.0.0.1 -keyout "$tmp/nginx/privkey.pem" -out "$tmp/nginx/fullchain.pem" \
    >/dev/null 2>&1 || die "openssl could not make a certificate"
# The documented site, with its placeholders replaced (as tests/tls.rs does), plus a plain-HTTP listener on
# the proxying server for the rows comparable with plain static serving.
site=$(sed -e '/listen \[::\]:80;/d' -e '/listen \[::\]:443 ssl http2;/d' \
    -e "s|listen 80;|listen 127.0.0.1:$redirect_port;|" \
    -e "s|listen 443 ssl http2;|listen 127.0.0.1:$proxy_tls ssl http2; listen 127.0.0.1:$proxy_port;|" \
    -e "s|server 127.0.0.1:8000;|server 127.0.0.1:$vigil_port;|" \
    -e "s|/etc/ssl/vigil/|$tmp/nginx/|g" \
    -e "s|alias /var/lib/vigil/;|alias $data/;|" \
    -e "s|/var/log/nginx/|$tmp/nginx/|g" \
    -e "s|/var/www/acme|$tmp/acme|g" \
    "$root/deploy/nginx/vigil.conf")
for want in "127.0.0.1:$proxy_tls ssl" "server 127.0.0.1:$vigil_port;" "alias $data/;"; do
    [[ $site == *"$want"* ]] || die "deploy/nginx/vigil.conf changed: no '$want' after substitution"
done
cat >"$tmp/nginx/nginx.conf" <<EOF
# generated by testbed/http-bench.sh
user root;
worker_processes auto;
daemon off;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/error.log;
events { worker_connections 1024; }
http {
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    client_body_temp_path $tmp/nginx/body; proxy_temp_path $tmp/nginx/proxy;
    fastcgi_temp_path $tmp/nginx/fcgi; uwsgi_temp_path $tmp/nginx/uwsgi; scgi_temp_path $tmp/nginx/scgi;

    # (a) the yardstick: the same bytes as static files, same TLS certificate and settings.
    server {
        listen 127.0.0.1:$static_port;
        listen 127.0.0.1:$static_tls ssl http2;
        ssl_certificate $tmp/nginx/fullchain.pem;
        ssl_certificate_key $tmp/nginx/privkey.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        access_log $tmp/nginx/static.access.log;
        root $tmp/static;
        types { video/mp2t ts; application/vnd.apple.mpegurl m3u8; }
    }

$site
}
EOF
"$NGINX" -t -q -p "$tmp/nginx/" -e "$tmp/nginx/error.log" -c "$tmp/nginx/nginx.conf" ||
    die "nginx -t refuses the generated config ($tmp/nginx/nginx.conf)"
"$NGINX" -p "$tmp/nginx/" -e "$tmp/nginx/error.log" -c "$tmp/nginx/nginx.conf" 2>>"$tmp/nginx/error.log" &
pids+=($!)
for p in "$static_port" "$static_tls" "$proxy_port" "$proxy_tls"; do
    until_ok 10 "nginx on $p" port_open "$p"
done

# --- checks and load ------------------------------------------------------------------------------------
# check URL BYTES [cookie]: answers 200 with exactly BYTES bytes (not a 401, not an empty accel answer).
check() {
    local url=$1 bytes=$2 out
    out=$(curl -sk -o /dev/null -w '%{http_code} %{size_download}' ${3:+-H "Cookie: $3"} "$url")
    [[ $out == "200 $bytes" ]] || die "$url: got '$out', want '200 $bytes'"
}
# m3u8 playlists change length as segments come: 200 and a playlist is enough.
check_m3u8() {
    local url=$1 out
    out=$(curl -sk ${2:+-H "Cookie: $2"} "$url") || die "$url failed"
    [[ $out == '#EXTM3U'* ]] || die "$url: not a playlist: ${out:0:200}"
}
# rps URL [cookie]: wrk's requests per second; dies when any answer was not 2xx/3xx or a socket failed.
rps() {
    local url=$1 out
    out=$(wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" ${2:+-H "Cookie: $2"} "$url" 2>&1) || die "wrk $url: $out"
    printf '%s\n' "$out" >>"$tmp/wrk.log"
    if grep -q 'Non-2xx' <<<"$out"; then
        die "wrk $url: answers that are not 2xx/3xx: $out"
    fi
    if grep -Eq 'Socket errors:.*(connect [1-9]|read [1-9]|write [1-9]|timeout [1-9])' <<<"$out"; then
        die "wrk $url: socket errors: $out"
    fi
    awk '/^Requests\/sec:/ { printf "%.0f", $2 }' <<<"$out"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }

declare -A R
measure() { # KEY SEG_URL M3U8_URL [cookie]
    local key=$1 seg=$2 m3u8=$3 c=${4:-}
    check "$seg" "$seg_bytes" "$c"
    check_m3u8 "$m3u8" "$c"
    log "$key: segment"
    R[$key.seg]=$(rps "$seg" "$c")
    log "$key: live.m3u8"
    R[$key.m3u8]=$(rps "$m3u8" "$c")
}

S=http://127.0.0.1:$static_port
ST=https://127.0.0.1:$static_tls
V=http://127.0.0.1:$vigil_port
P=http://127.0.0.1:$proxy_port
PT=https://127.0.0.1:$proxy_tls

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
measure static "$S/seg.ts" "$S/live.m3u8"
# vigil without accel_redirect: it sends the segment bytes itself.
measure vigil "$V$seg_url_path" "$V/cameras/cam1/live.m3u8" "$cookie"
measure proxied "$P$seg_url_path" "$P/cameras/cam1/live.m3u8" "$cookie"

# Time from the login to the first playlist and segment, as a player starts (curl, through nginx, HTTPS).
# Prints "TOTAL LOGIN" in ms (LOGIN: the POST alone, password hashing included).
first_video_ms() {
    local base=$1 t0 t1 c pl seg
    t0=$(ms_now)
    c=$(login "$base") && [[ -n $c ]] || die "login at $base failed"
    t1=$(ms_now)
    pl=$(curl -skf -H "Cookie: $c" "$base/cameras/cam1/live.m3u8") || die "live.m3u8 at $base failed"
    seg=$(grep '\.ts$' <<<"$pl" | tail -n1)
    curl -skf -o /dev/null -H "Cookie: $c" "$base/cameras/cam1/$seg" || die "$seg at $base failed"
    echo "$(($(ms_now) - t0)) $((t1 - t0))"
}
# median of column N of the input lines
median() { awk -v n="$1" '{ print $n }' | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
first_runs() { for _ in 1 2 3 4 5; do first_video_ms "$1"; done; }
runs=$(first_runs "$V")
first_direct=$(median 1 <<<"$runs")
login_direct=$(median 2 <<<"$runs")
# Where vigil's time goes: a public route (no login check, no catalog) and a logged-in one without the catalog.
check_json() { curl -sf ${2:+-H "Cookie: $2"} "$1" | grep -q '^{' || die "$1: no JSON answer"; }
check_json "$V/healthz"
check_json "$V/api/me" "$cookie"
log "vigil: /healthz, /api/me"
R[healthz]=$(rps "$V/healthz")
R[me]=$(rps "$V/api/me" "$cookie")

# vigil again, now with accel_redirect: nginx sends the segment bytes.
log "restarting vigil with [http] accel_redirect"
stop_vigil
start_vigil accel
alive "$cam_pid" || die "the camera died (see $tmp/camera.log)"
cookie=$(login "$V") || die "login after the restart failed"
[[ -n $cookie ]] || die "login after the restart failed"
accel_hdr=$(curl -s -D - -o /dev/null -H "Cookie: $cookie" "$V$seg_url_path" | tr -d '\r' |
    sed -n 's/^[Xx]-[Aa]ccel-[Rr]edirect: *//p')
[[ $accel_hdr == /_vigil_data/* ]] || die "vigil did not answer with X-Accel-Redirect (got '$accel_hdr')"
measure accel "$P$seg_url_path" "$P/cameras/cam1/live.m3u8" "$cookie"
measure static_tls "$ST/seg.ts" "$ST/live.m3u8"
measure accel_tls "$PT$seg_url_path" "$PT/cameras/cam1/live.m3u8" "$cookie"
runs=$(first_runs "$PT")
first_tls=$(median 1 <<<"$runs")
login_tls=$(median 2 <<<"$runs")

# --- figures --------------------------------------------------------------------------------------------
row() { # LABEL KEY BASE
    printf '| %s | %s | %s | %s | %s |\n' "$1" "${R[$2.seg]}" "$(ratio "${R[$2.seg]}" "${R[$3.seg]}")" \
        "${R[$2.m3u8]}" "$(ratio "${R[$2.m3u8]}" "${R[$3.m3u8]}")"
}
cpu=$(grep -c ^processor /proc/cpuinfo)
mkdir -p "$root/target/figures"
{
    printf '\nHTTP serving with logins on — %s, %s CPU(s), wrk -t%s -c%s -d%s on 127.0.0.1\n' \
        "$(date -u +%Y-%m-%dT%H:%MZ)" "$cpu" "$THREADS" "$CONNS" "$DURATION"
    printf 'segment %s bytes, live.m3u8 %s bytes; vigil %s release build; nginx %s\n\n' "$seg_bytes" "$m3u8_bytes" \
        "$rev" "$("$NGINX" -v 2>&1 | sed 's/.*nginx\///')"
    printf '| served by | segment req/s | × nginx static | live.m3u8 req/s | × nginx static |\n'
    printf '|---|---|---|---|---|\n'
    row "(a) nginx, static files (http)" static static
    row "(b) vigil alone, cookie (http)" vigil static
    row "nginx → vigil, vigil sends the bytes (http)" proxied static
    row "(c) nginx → vigil + X-Accel-Redirect (http)" accel static
    row "(a) nginx, static files (https)" static_tls static_tls
    row "(c) nginx → vigil + X-Accel-Redirect (https)" accel_tls static_tls
    printf '\nvigil alone, other routes: /healthz (public) %s req/s, /api/me (cookie checked) %s req/s\n' \
        "${R[healthz]}" "${R[me]}"
    printf 'load average before the runs: %s (other work on the machine shares the cores)\n' "$load_before"
    printf '\nPOST /api/login → live.m3u8 → newest segment (3 curl runs, median of 5): %s ms direct (http),' "$first_direct"
    printf ' %s ms through nginx (https); of which the login: %s ms, %s ms\n' "$first_tls" "$login_direct" "$login_tls"
} | tee -a "$root/target/figures/http.txt"
