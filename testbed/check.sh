#!/usr/bin/env bash
# check.sh — smoke check of the running test bed (run testbed/up.sh first).
#
# Camera: ffprobe every mount rtsp://127.0.0.1:$VIGIL_CAMERA_PORT/cam1..camN over TCP and assert the
# video codec is h264; then record cam1 for ~7 s with ffmpeg into HLS (-c copy, 2 s segments, the
# same options as vigil's capture) and assert >= 2 .ts segments, no leftover .tmp segment, middle
# segments of exactly 2.000 s, each segment starting with a keyframe, and no "corrupt" / "non monotonous DTS" lines in ffmpeg's stderr (except
# ffmpeg 5.1's single start-up line, see below; VIGIL_CHECK_STRICT=1 fails on it too).
# Prints the EXTINF durations.
# Artifacts are kept in $VIGIL_TESTBED_DIR/check/ (overwritten by the next run).
# Exits non-zero with a clear message on the first failure.
set -euo pipefail
TB_NAME=check
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RECORD_SECONDS=${VIGIL_CHECK_RECORD_SECONDS:-7}

fail() { printf '[check] FAIL: %s\n' "$*" >&2; exit 1; }
ok() { printf '[check] ok: %s\n' "$*"; }

command -v ffprobe >/dev/null || fail "ffprobe missing: run testbed/install.sh ffmpeg"
command -v ffmpeg >/dev/null || fail "ffmpeg missing: run testbed/install.sh ffmpeg"
pid=$(service_pid camera) || fail "camera is not running (no live PID in $(pidfile_of camera)): run testbed/up.sh"
ok "camera running, pid $pid"

out=$STATE_DIR/check
rm -rf "$out"
mkdir -p "$out/hls"

# 1. ffprobe each mount.
for ((i = 1; i <= VIGIL_CAMERAS; i++)); do
    url=rtsp://127.0.0.1:$VIGIL_CAMERA_PORT/cam$i
    if ! timeout 20 ffprobe -v error -rtsp_transport tcp -show_streams -select_streams v -of json "$url" \
        >"$out/ffprobe_cam$i.json" 2>"$out/ffprobe_cam$i.err"; then
        fail "ffprobe $url failed: $(tail -n 5 "$out/ffprobe_cam$i.err")"
    fi
    info=$(/usr/bin/python3 -c '
import json, sys
s = json.load(open(sys.argv[1])).get("streams", [])
v = s[0] if s else {}
print("|".join(str(x) for x in (v.get("codec_name", "none"), v.get("profile", "?"),
      "%sx%s" % (v.get("width"), v.get("height")), v.get("r_frame_rate", "?"))))
' "$out/ffprobe_cam$i.json")
    IFS='|' read -r codec profile size rate <<<"$info"
    [[ $codec == h264 ]] || fail "$url: codec_name is '$codec', expected h264 (see $out/ffprobe_cam$i.json)"
    ok "$url codec_name=$codec profile='$profile' size=$size rate=$rate"
done

# 2. Record cam1 into segments like vigil's capture actor does (segment muxer, streamed to disk, CSV list).
url=rtsp://127.0.0.1:$VIGIL_CAMERA_PORT/cam1
start=$(date +%s.%N)
rc=0
mkdir -p "$out/hls"
timeout -k 5 $((RECORD_SECONDS + 15)) ffmpeg -nostdin -hide_banner -loglevel info \
    -rtsp_transport tcp -timeout 2000000 -fpsprobesize 0 -analyzeduration 200000 -probesize 2000000 \
    -i "$url" -t "$RECORD_SECONDS" \
    -c copy -f segment -segment_time 2 -segment_time_delta 0.5 -segment_format mpegts \
    -segment_format_options flush_packets=1 -segment_list "$out/hls/segments.csv" -segment_list_type csv \
    "$out/hls/seg_%05d.ts" \
    2>"$out/ffmpeg.stderr" || rc=$?
elapsed=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN{printf "%.1f", e-s}')
((rc == 0)) || fail "ffmpeg recording of $url exited $rc after ${elapsed}s: $(tail -n 5 "$out/ffmpeg.stderr")"

# ffmpeg writes progress with \r: split into lines first.
tr '\r' '\n' <"$out/ffmpeg.stderr" >"$out/ffmpeg.log"
# Known ffmpeg 5.1 RTSP quirk, not a camera fault: the first packet it demuxes has no timestamp, so when
# a recording starts on a keyframe (we are the first client of a fresh pipeline) the muxer logs exactly
# one "Non-monotonous DTS ... previous: 0, current: 0; changing to 1" for the 2nd frame (1/90000 s
# shift). Tolerated once unless VIGIL_CHECK_STRICT=1. Anything else (multi-slice frames, a stream
# rewound by a server-side seek, corrupt input) fails.
startup_re='Non-monotonous DTS in output stream 0:0; previous: 0, current: 0; changing to 1\.'
bad_re='corrupt|non[- ]monoton|concealing'
n_startup=$(grep -cE "$startup_re" "$out/ffmpeg.log" || true)
n_bad=$(grep -iE "$bad_re" "$out/ffmpeg.log" | grep -cvE "$startup_re" || true)
if ((n_bad > 0)) || ((n_startup > 1)) || { [[ ${VIGIL_CHECK_STRICT:-0} == 1 ]] && ((n_startup > 0)); }; then
    grep -iE "$bad_re" "$out/ffmpeg.log" | head -n 5 >&2
    fail "ffmpeg stderr has $((n_bad + n_startup)) corrupt / non-monotonous-DTS lines (see $out/ffmpeg.log)"
fi
if ((n_startup == 1)); then
    echo "[check] note: tolerated the one known ffmpeg 5.1 start-up line: non-monotonous DTS 'previous: 0, current: 0'"
fi

shopt -s nullglob
segs=("$out"/hls/*.ts)
tmps=("$out"/hls/*.tmp)
((${#segs[@]} >= 2)) || fail "only ${#segs[@]} .ts segment(s) in $out/hls, expected >= 2"
((${#tmps[@]} == 0)) || fail "leftover temp segments: ${tmps[*]}"
[[ -f $out/hls/segments.csv ]] || fail "no segment list $out/hls/segments.csv"
durations=$(awk -F, '{printf "%.6f ", $3 - $2}' "$out/hls/segments.csv" | sed 's/ $//')
n_extinf=$(wc -w <<<"$durations")
((n_extinf == ${#segs[@]})) || fail "the list names $n_extinf segments but ${#segs[@]} .ts files exist"
# With one keyframe per second and -segment_time 2, every segment between the first and the last is 2.000 s.
mapfile -t durs <<<"${durations// /$'\n'}"
for ((k = 1; k < ${#durs[@]} - 1; k++)); do
    [[ ${durs[k]} == 2.000000 ]] || fail "segment $k lasts ${durs[k]} s, expected 2.000000 (camera GOP not 1 s?)"
done
for seg in "${segs[@]}"; do
    flags=$(ffprobe -v error -select_streams v -read_intervals '%+#1' -show_entries packet=flags -of csv=p=0 "$seg" | head -n1)
    [[ $flags == K* ]] || fail "$(basename "$seg") does not start with a keyframe (flags '$flags')"
done
ok "recorded $url for ${elapsed}s: ${#segs[@]} segments, durations: $durations"
ok "every segment starts with a keyframe; no corrupt / non-monotonous DTS lines in ffmpeg stderr; artifacts in $out"
echo "[check] PASS"
