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
import argparse
import os
import signal
import sys
import time

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

# Moving / distinct patterns, so the cameras are told apart at a glance (no "snow": costly to encode).
PATTERNS = ["smpte", "ball", "pinwheel", "spokes", "colors", "circular",
            "smpte75", "checkers-8", "gradient", "bar", "zone-plate", "gamut"]


def log(msg):
    print(time.strftime("%Y-%m-%dT%H:%M:%S"), "camera:", msg, flush=True)


def launch_line(idx, args):
    name = "cam%d" % idx
    pattern = PATTERNS[(idx - 1) % len(PATTERNS)]
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
        "( videotestsrc is-live=true pattern={pattern} "
        "! video/x-raw,width={w},height={h},framerate={fps}/1 "
        "! clockoverlay halignment=right valignment=top "
        "! timeoverlay halignment=left valignment=bottom "
        "! textoverlay text={name} halignment=left valignment=top font-desc=\"Sans 24\" "
        "! x264enc tune=zerolatency speed-preset=ultrafast bframes=0 key-int-max={gop} "
        "bitrate={kbps} {threading} option-string=\"{opts}\" "
        "! video/x-h264,profile=baseline "
        "! rtph264pay name=pay0 pt=96 config-interval=-1 )"
    ).format(pattern=pattern, w=args.width, h=args.height, fps=args.fps, name=name,
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
    return a


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

    log("listening on rtsp://%s:%d/cam1 .. /cam%d (%dx%d@%d, gop %d, %s, %s)" % (
        args.address, server.get_bound_port(), args.cameras, args.width, args.height, args.fps,
        args.gop or args.fps, "multi-slice" if args.multi_slice else "single-slice",
        "shared" if args.shared else "not shared"))
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
