#!/usr/bin/python3
# camera.py — simulated IP camera(s) for the vigil test bed: a GStreamer RTSP server that serves
# N live H.264 test streams as rtsp://127.0.0.1:PORT/cam1 ... /camN (one port, loopback only).
#
# Run it with /usr/bin/python3 (Debian's python3-gi); the pyenv python3 first on PATH has no `gi`.
# Each stream: videotestsrc (distinct pattern per camera) + clock/time/name overlays, x264 baseline,
# no B-frames, fixed GOP (--gop frames per keyframe, scenecut off), SPS/PPS before every IDR.
# By default one slice per frame (sliced-threads off): with multi-slice frames ffmpeg 5.1 splits each
# IDR into one packet per slice (3 "Non-monotonous DTS" per keyframe with 4 slices) and its probe
# decoder conceals errors. --multi-slice restores that on purpose (--slices N per frame, default 4).
#
# Shared mode (default): all clients of a mount share one encoder; the pipeline starts with the first
# client (first packet = IDR) and stops when the last one leaves; later clients join mid-GOP, and
# clients already connected are not disturbed (the media is made non-seekable, see main()).
# The cameras use no CPU while nobody is connected.
#
# Simulate a camera reboot: kill it and start it again (the port rebinds at once).
# Simulate a frozen camera: SIGSTOP it (TCP connections stay open, no data flows).
#
# --auth USER:PASSWORD: every mount requires RTSP Basic auth (GstRtspServer.RTSPAuth; the split is at the
# first ':', so the password may contain ':'). Without credentials, or with wrong ones, DESCRIBE gets
# "401 Unauthorized" + 'WWW-Authenticate: Basic realm="GStreamer RTSP Server"'; OPTIONS is answered
# either way. Clients pass rtsp://USER:PASSWORD@127.0.0.1:PORT/camN (percent-encode special characters).
#
# --marker-every SECONDS: a frame-exact time marker for tests that check recorded timestamps without OCR.
# Every SECONDS of stream time (counted in frames from the pipeline's first frame; the first marker comes
# SECONDS after it) exactly one frame is all white (videotestsrc pattern "white"; the clock/time/name
# overlays stay on top), and stdout gets one flushed line "marker camN UNIX_MS": the wall-clock time, in
# ms since the epoch, at which that frame was captured (from the GStreamer clock: base time + PTS).
# Each mount keeps its own markers; a new pipeline (shared mode: after the last client left and a new
# one came; --no-shared: one per client, each with its own markers and lines) starts its own count.
# Marker frames in a recording: ffmpeg -i FILE -vf "negate,blackframe=amount=85:threshold=32" -f null -
import argparse
import os
import signal
import sys
from threading import Lock
import time

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

# Moving / distinct patterns, so the cameras are told apart at a glance (no "snow": costly to encode).
PATTERNS = ["smpte", "ball", "pinwheel", "spokes", "colors", "circular",
            "smpte75", "checkers-8", "gradient", "bar", "zone-plate", "gamut"]


_stdout_lock = Lock()


def out(line):
    # One whole line per write: marker lines come from the cameras' streaming threads.
    with _stdout_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def log(msg):
    out("%s camera: %s" % (time.strftime("%Y-%m-%dT%H:%M:%S"), msg))


def pattern_of(idx):
    return PATTERNS[(idx - 1) % len(PATTERNS)]


def src_name(idx):
    # The videotestsrc of camera idx, found by name in each new media pipeline (see add_marker_probe).
    return "cam%dsrc" % idx


def launch_line(idx, args):
    name = "cam%d" % idx
    pattern = pattern_of(idx)
    gop = args.gop if args.gop else args.fps
    if args.multi_slice:
        # Sliced threads: x264 splits every frame into `threads` slices (as some real cameras do).
        threading = "sliced-threads=true threads=%d" % args.slices
        opts = "scenecut=0:keyint_min=%d" % gop
    else:
        # One slice per frame. The property and the option string both say it: tune=zerolatency
        # would otherwise turn sliced threads on.
        threading = "sliced-threads=false"
        opts = "scenecut=0:keyint_min=%d:sliced-threads=0" % gop
    return (
        "( videotestsrc name={src} is-live=true pattern={pattern} "
        "! video/x-raw,width={w},height={h},framerate={fps}/1 "
        "! clockoverlay halignment=right valignment=top "
        "! timeoverlay halignment=left valignment=bottom "
        "! textoverlay text={name} halignment=left valignment=top font-desc=\"Sans 24\" "
        "! x264enc tune=zerolatency speed-preset=ultrafast bframes=0 key-int-max={gop} "
        "bitrate={kbps} {threading} option-string=\"{opts}\" "
        "! video/x-h264,profile=baseline "
        "! rtph264pay name=pay0 pt=96 config-interval=-1 )"
    ).format(src=src_name(idx), pattern=pattern, w=args.width, h=args.height, fps=args.fps, name=name,
             gop=gop, kbps=args.bitrate, threading=threading, opts=opts)


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="Simulated IP cameras: RTSP server on 127.0.0.1 serving /cam1 .. /camN "
                    "(H.264 baseline, fixed GOP, live test pattern with clock overlay).")
    p.add_argument("--port", type=int, default=8554, help="RTSP TCP port (default 8554)")
    p.add_argument("--address", default="127.0.0.1",
                   help="bind address (default 127.0.0.1; the test bed binds loopback only)")
    p.add_argument("--cameras", type=int, default=2, metavar="N",
                   help="number of cameras, served as /cam1 .. /camN (default 2)")
    p.add_argument("--width", type=int, default=640, help="frame width (default 640)")
    p.add_argument("--height", type=int, default=360, help="frame height (default 360)")
    p.add_argument("--fps", type=int, default=15, help="frames per second (default 15)")
    p.add_argument("--gop", type=int, default=0,
                   help="frames per keyframe (default = fps, i.e. one keyframe per second, so "
                        "2-second HLS segments cut cleanly)")
    p.add_argument("--bitrate", type=int, default=1024, help="x264 bitrate in kbit/s (default 1024)")
    p.add_argument("--multi-slice", action="store_true",
                   help="allow x264 sliced threads: several slices per frame, as some real cameras "
                        "do (ffmpeg 5.1 then logs corrupt frames / non-monotonous DTS)")
    p.add_argument("--slices", type=int, default=4,
                   help="slices per frame with --multi-slice (x264 threads; default 4)")
    p.add_argument("--shared", dest="shared", action="store_true", default=True,
                   help="clients of one mount share one encoder pipeline (default)")
    p.add_argument("--no-shared", dest="shared", action="store_false",
                   help="one encoder pipeline per client")
    p.add_argument("--auth", metavar="USER:PASSWORD",
                   help="require RTSP Basic auth with these credentials on every mount "
                        "(default: no auth)")
    p.add_argument("--marker-every", type=float, default=0.0, metavar="SECONDS",
                   help="every SECONDS make exactly one frame all white and print "
                        "'marker camN UNIX_MS' (its capture time) on stdout (default 0 = off)")
    p.add_argument("--pidfile", metavar="PATH", help="write the PID here; removed on clean exit")
    p.add_argument("--print-pipeline", action="store_true",
                   help="print the launch line of each mount and exit")
    a = p.parse_args(argv)
    if not 1 <= a.port <= 65535:
        p.error("--port must be 1..65535")
    if a.cameras < 1:
        p.error("--cameras must be >= 1")
    if a.fps < 1 or a.width < 16 or a.height < 16:
        p.error("bad --fps/--width/--height")
    if a.gop < 0:
        p.error("--gop must be >= 0")
    if a.auth is not None:
        user, sep, password = a.auth.partition(":")
        if not sep or not user or not password:
            p.error("--auth must be USER:PASSWORD (both non-empty)")
    if a.marker_every < 0 or a.marker_every != a.marker_every:
        p.error("--marker-every must be >= 0")
    if 0 < a.marker_every * a.fps < 2:
        # One normal frame at least between two white ones, or they could not be told apart.
        p.error("--marker-every must be at least 2 frames (2/fps seconds), or 0 = off")
    return a


def add_marker_probe(idx, src, every_ns):
    """Time markers on one pipeline: probe the videotestsrc src pad. When the next frame is due to be a
    marker, switch the pattern to white in the probe of the frame before it: the probe runs in the
    source's streaming thread, before the next buffer is created, so exactly that next buffer is white.
    In the probe of the white buffer, print its capture time and switch the pattern back."""
    state = {"due": None, "white": False}

    def probe(pad, info):
        buf = info.get_buffer()
        if buf is None or buf.pts == Gst.CLOCK_TIME_NONE:
            return Gst.PadProbeReturn.OK
        if state["due"] is None:
            state["due"] = buf.pts + every_ns
        if state["white"]:
            clock = src.get_clock()
            captured = src.get_base_time() + buf.pts
            lag = (clock.get_time() - captured) / 1e9 if clock else 0.0
            out("marker cam%d %d" % (idx, round((time.time() - lag) * 1000)))
            Gst.util_set_object_arg(src, "pattern", pattern_of(idx))
            state["white"] = False
            state["due"] += every_ns
        duration = buf.duration if buf.duration != Gst.CLOCK_TIME_NONE else 0
        if buf.pts + duration >= state["due"]:
            Gst.util_set_object_arg(src, "pattern", "white")
            state["white"] = True
        return Gst.PadProbeReturn.OK

    src.get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER, probe)


def main(argv):
    args = parse_args(argv)
    if args.print_pipeline:
        for i in range(1, args.cameras + 1):
            print("/cam%d: %s" % (i, launch_line(i, args)))
        return 0

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address(args.address)
    server.set_service(str(args.port))
    mounts = server.get_mount_points()
    permissions = None
    if args.auth:
        # One role, "camera-user", allowed to see (access) and start (construct) every mount.
        user, _, password = args.auth.partition(":")
        token = GstRtspServer.RTSPToken()
        token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "camera-user")
        auth = GstRtspServer.RTSPAuth()
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(user, password), token)
        server.set_auth(auth)
        permissions = GstRtspServer.RTSPPermissions()
        for perm in (GstRtspServer.RTSP_PERM_MEDIA_FACTORY_ACCESS,
                     GstRtspServer.RTSP_PERM_MEDIA_FACTORY_CONSTRUCT):
            permissions.add_permission_for_role("camera-user", perm, True)

    def on_media_configure(_factory, media, idx):
        src = media.get_element().get_by_name(src_name(idx))
        if src is None:
            log("ERROR: no %s in the cam%d pipeline, no markers" % (src_name(idx), idx))
            return
        add_marker_probe(idx, src, round(args.marker_every * Gst.SECOND))

    for i in range(1, args.cameras + 1):
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(launch_line(i, args))
        factory.set_shared(args.shared)
        # A live camera cannot seek. gst-rtsp-server 1.22 nevertheless asks the pipeline (videotestsrc
        # says "seekable") and, on every PLAY carrying "Range: npt=0.000-" (ffmpeg sends it), does a
        # flushing seek to 0: with a shared media this restarts the encoder and rewinds the timestamps
        # of every client already connected (ffmpeg: dozens of "Non-monotonous DTS"). With the publish
        # clock mode CLOCK_AND_OFFSET the server treats the media as not seekable (and adds RFC 7273
        # a=ts-refclk / a=mediaclk lines to the SDP, which clients may ignore), as a real camera would.
        factory.set_publish_clock_mode(GstRtspServer.RTSPPublishClockMode.CLOCK_AND_OFFSET)
        if permissions is not None:
            factory.set_permissions(permissions)
        if args.marker_every:
            # Each new media (a new pipeline) gets its own probe: shared mode builds one when the
            # first client comes back after the last one left.
            factory.connect("media-configure", on_media_configure, i)
        mounts.add_factory("/cam%d" % i, factory)

    def on_client(_server, client):
        conn = client.get_connection()
        ip = conn.get_ip() if conn else "?"
        log("client connected from %s" % ip)
        client.connect("closed", lambda _c: log("client from %s closed" % ip))

    server.connect("client-connected", on_client)

    if server.attach(None) == 0:
        log("ERROR: cannot listen on %s:%d (port in use?)" % (args.address, args.port))
        return 1

    if args.pidfile:
        with open(args.pidfile + ".tmp", "w") as f:
            f.write("%d\n" % os.getpid())
        os.replace(args.pidfile + ".tmp", args.pidfile)

    loop = GLib.MainLoop()

    def stop(signum):
        log("signal %d, stopping" % signum)
        loop.quit()
        return GLib.SOURCE_REMOVE

    for s in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_HIGH, s, stop, s)

    extras = ""
    if args.auth:
        extras += ", basic auth"
    if args.marker_every:
        extras += ", marker every %gs" % args.marker_every
    log("listening on rtsp://%s:%d/cam1 .. /cam%d (%dx%d@%d, gop %d, %s, %s%s)" % (
        args.address, server.get_bound_port(), args.cameras, args.width, args.height, args.fps,
        args.gop or args.fps, "multi-slice" if args.multi_slice else "single-slice",
        "shared" if args.shared else "not shared", extras))
    try:
        loop.run()
    finally:
        if args.pidfile:
            try:
                with open(args.pidfile) as f:
                    mine = f.read().strip() == str(os.getpid())
                if mine:
                    os.unlink(args.pidfile)
            except OSError:
                pass
    log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
