//! The camera supervisor under a simulated clock, with ffmpeg replaced by small shell scripts through the
//! injectable spawner: stall detection from bytes on disk, an immediate restart after a healthy run, and the
//! backoff and state of a camera rejecting our credentials — exact in simulated time, in a second of real
//! time each.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use supervisors::{Event, EventKind, FixedJitter, Runtime, SimClock};
use tokio::sync::broadcast;
use vigil::capture::{Board, CameraRuntime, State, camera_spec};
use vigil::catalog::Catalog;
use vigil::config::Config;
use vigil::process::{Command, ProcessGroup, Spawned, Spawner};

/// Runs `script` with `sh` in ffmpeg's place; `$DIR` is the session folder ffmpeg was given.
#[derive(Debug)]
struct FakeFfmpeg(String);

impl Spawner for FakeFfmpeg {
    fn spawn(&self, cmd: &Command) -> vigil::Result<Spawned> {
        let out = cmd.args.last().expect("an output pattern");
        let dir = Path::new(out).parent().unwrap().display().to_string();
        ProcessGroup::spawn(&Command {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), format!("DIR='{dir}'; {}", self.0)],
            ..cmd.clone()
        })
    }
}

struct Rig {
    clock: SimClock,
    events: broadcast::Receiver<Event>,
    rt: Arc<CameraRuntime>,
    t0: Instant,
    _dir: tempfile::TempDir,
    data: PathBuf,
    /// Every event seen, printed when a wait fails.
    log: Vec<String>,
}

impl Rig {
    fn start(script: &str, url: &str) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let config = Config::parse(
            &format!(
                "node_id = \"sim\"\ndata_dir = \"{}\"\n[supervision]\nbackoff_initial_ms = 500\nbackoff_max_seconds = 30\n\
                 [[cameras]]\nid = \"cam1\"\nfactory_id = \"f\"\nurl = \"{url}\"\n",
                data.display()
            ),
            Path::new("sim.toml"),
        )
        .unwrap();
        std::fs::create_dir_all(&data).unwrap();
        let catalog = Arc::new(Catalog::open(&data.join("catalog.sqlite")).unwrap());
        let board = Board::default();
        let mut rt = CameraRuntime::new(
            &config,
            &config.cameras[0],
            catalog,
            Default::default(),
            &board,
            Default::default(),
        );
        rt.spawner = Arc::new(FakeFfmpeg(script.to_string()));
        let rt = Arc::new(rt);
        let clock = SimClock::new();
        // Jitter 0.5 is the middle of the spread: delays are exactly initial × factor^n.
        let runtime = Runtime::new()
            .with_clock(clock.clone())
            .with_jitter(FixedJitter(0.5));
        let events = runtime.events().subscribe();
        runtime.start(camera_spec(&config, rt.clone()));
        let t0 = supervisors::Clock::now(&clock);
        Rig {
            clock,
            events,
            rt,
            t0,
            _dir: dir,
            data,
            log: vec![],
        }
    }

    /// Advance simulated time in 100 ms steps (letting the real blocking pool answer each watchdog look)
    /// until an event matches, within 120 s of simulated and 20 s of real time.
    async fn until(&mut self, what: &str, f: impl Fn(&EventKind) -> bool) -> (Duration, EventKind) {
        let real = Instant::now();
        loop {
            while let Ok(e) = self.events.try_recv() {
                self.log.push(format!("{e:?}"));
                if e.supervisor == "cam1" && f(&e.kind) {
                    return (e.at.saturating_duration_since(self.t0), e.kind);
                }
            }
            let sim = supervisors::Clock::now(&self.clock).saturating_duration_since(self.t0);
            assert!(
                sim < Duration::from_secs(120) && real.elapsed() < Duration::from_secs(20),
                "no {what} by {sim:?}"
            );
            self.clock.advance(Duration::from_millis(100));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Rig {
    /// Waits in real time, without moving the simulated clock, until a file `name` of `bytes` bytes exists
    /// in a session folder; returns the simulated time since the start.
    async fn wait_for_file(&mut self, name: &str, bytes: u64) -> Duration {
        let deadline = Instant::now() + Duration::from_secs(20);
        let cam = self.data.join("cam1");
        loop {
            let found = std::fs::read_dir(&cam)
                .into_iter()
                .flatten()
                .flatten()
                .any(|d| std::fs::metadata(d.path().join(name)).is_ok_and(|m| m.len() == bytes));
            if found {
                return supervisors::Clock::now(&self.clock).saturating_duration_since(self.t0);
            }
            if Instant::now() >= deadline {
                let out = std::process::Command::new("find")
                    .arg(&cam)
                    .arg("-ls")
                    .output()
                    .unwrap();
                while let Ok(e) = self.events.try_recv() {
                    self.log.push(format!("{e:?}"));
                }
                panic!(
                    "no {name} of {bytes} bytes: {}\n{:#?}",
                    String::from_utf8_lossy(&out.stdout),
                    self.log
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

fn child_is(kind: &EventKind, id: &str) -> bool {
    match kind {
        EventKind::Started { child, .. }
        | EventKind::Exited { child, .. }
        | EventKind::Restarting { child, .. } => child == id,
        _ => false,
    }
}

#[actix_rt::test]
async fn no_bytes_for_stall_seconds_stops_ffmpeg_and_the_restart_backs_off() {
    // Writes 100 bytes of "segment", then nothing: a frozen camera.
    let mut rig = Rig::start(
        "head -c 100 /dev/zero > \"$DIR/seg_00000.ts\"; exec sleep 1000",
        "rtsp://127.0.0.1:9/x",
    );
    rig.until("ffmpeg start", |k| {
        child_is(k, "ffmpeg") && matches!(k, EventKind::Started { .. })
    })
    .await;
    // The script's 100 bytes land on disk in real time (slow on a loaded machine): simulated time stands
    // still until they are there, so the stall is timed from the last byte.
    let written = rig.wait_for_file("seg_00000.ts", 100).await;
    let (at, kind) = rig
        .until("ffmpeg exit", |k| {
            child_is(k, "ffmpeg") && matches!(k, EventKind::Exited { .. })
        })
        .await;
    let at = at - written;
    let EventKind::Exited {
        reason, healthy, ..
    } = kind
    else {
        unreachable!()
    };
    assert!(
        reason
            .to_string()
            .contains("stalled: no bytes written for 3."),
        "{reason}"
    );
    assert!(!healthy, "no segment was finished");
    // Detected 3 s after the last byte, plus at most a tick or two (and a look's real latency); then SIGTERM ends `sleep` at once.
    assert!(
        (Duration::from_millis(3000)..Duration::from_millis(3700)).contains(&at),
        "stall seen at {at:?}"
    );
    assert_eq!(rig.rt.status.snapshot().state, State::Stalled);
    let (_, kind) = rig
        .until("the restart", |k| {
            child_is(k, "ffmpeg") && matches!(k, EventKind::Restarting { .. })
        })
        .await;
    let EventKind::Restarting { attempt, delay, .. } = kind else {
        unreachable!()
    };
    assert_eq!(
        (attempt, delay),
        (1, Duration::from_millis(500)),
        "an unhealthy run waits the initial delay"
    );
    let (restarted, _) = rig
        .until("the next start", |k| {
            child_is(k, "ffmpeg") && matches!(k, EventKind::Started { generation: 1, .. })
        })
        .await;
    assert!(restarted >= at + Duration::from_millis(500));
    // Each run has its own session folder (the new run creates it right after its start).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let sessions = vigil::capture::session::list(&rig.data.join("cam1"));
        if sessions.len() >= 2 {
            break;
        }
        assert!(Instant::now() < deadline, "{sessions:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[actix_rt::test]
async fn after_a_run_that_finished_a_segment_the_restart_is_immediate() {
    // Finishes a segment (seg_00001 exists), then exits 0 — a camera that dropped — once told to.
    let mut rig = Rig::start(
        "head -c 100 /dev/zero > \"$DIR/seg_00000.ts\"; head -c 100 /dev/zero > \"$DIR/seg_00001.ts\"; \
         while [ ! -e \"$DIR/../go\" ]; do sleep 0.02; done; rm -f \"$DIR/../go\"; exit 0",
        "rtsp://127.0.0.1:9/x",
    );
    rig.until("ffmpeg started", |k| {
        child_is(k, "ffmpeg") && matches!(k, EventKind::Started { .. })
    })
    .await;
    // Once the script has written its segments, let the watchdog see the finished one (slowly in simulated
    // time: before its first look nothing may time out), then let the run end.
    rig.wait_for_file("seg_00001.ts", 100).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while rig.rt.status.snapshot().state != State::Recording {
        assert!(Instant::now() < deadline, "{:?}", rig.rt.status.snapshot());
        rig.clock.advance(Duration::from_millis(20));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    std::fs::write(rig.data.join("cam1/go"), "").unwrap();
    let (exit_at, _) = rig
        .until("the exit", |k| {
            child_is(k, "ffmpeg") && matches!(k, EventKind::Exited { healthy: true, .. })
        })
        .await;
    let (at, kind) = rig
        .until("the restart", |k| {
            child_is(k, "ffmpeg") && matches!(k, EventKind::Restarting { .. })
        })
        .await;
    let EventKind::Restarting { attempt, delay, .. } = kind else {
        unreachable!()
    };
    assert_eq!((attempt, delay), (1, Duration::ZERO));
    assert_eq!(at, exit_at, "restarted in the same simulated instant");
}

#[actix_rt::test]
async fn a_camera_rejecting_our_credentials_backs_off_to_its_cap_and_says_so() {
    let mut rig = Rig::start(
        "echo '[rtsp @ 0x55] method DESCRIBE failed: 401 Unauthorized' >&2; \
         echo 'rtsp://admin:hunter2hunter2@127.0.0.1:9/cam1: Server returned 401 Unauthorized (authorization failed)' >&2; exit 1",
        "rtsp://admin:hunter2hunter2@127.0.0.1:9/cam1",
    );
    let mut starts = 0;
    let mut delays = Vec::new();
    loop {
        let (at, kind) = rig.until("ffmpeg events", |k| child_is(k, "ffmpeg")).await;
        if at > Duration::from_secs(60) {
            break;
        }
        match kind {
            EventKind::Started { .. } => starts += 1,
            EventKind::Restarting { delay, .. } => delays.push(delay.as_millis()),
            EventKind::Exited { reason, .. } => {
                let r = reason.to_string();
                assert!(
                    !r.contains("hunter2hunter2") && r.contains("admin:***@"),
                    "{r}"
                );
            }
            _ => {}
        }
    }
    // 0.5, 1, 2, 4, 8, 16, 30 s: seven starts in the first minute, no storm.
    assert_eq!(starts, 7, "delays {delays:?}");
    assert_eq!(delays, [500, 1000, 2000, 4000, 8000, 16000, 30000]);
    let status = rig.rt.status.snapshot();
    assert_eq!(status.state, State::AuthFailed);
    assert!(status.last_error.unwrap().contains("401"));
}

#[actix_rt::test]
async fn each_start_that_gets_nothing_gives_the_next_twice_as_long_to_connect() {
    // Connects and never writes a byte: a camera behind a link too slow for the first start's limit.
    let mut rig = Rig::start("exec sleep 1000", "rtsp://127.0.0.1:9/x");
    let mut limits = Vec::new();
    for generation in 0..3u64 {
        let (started, _) = rig
            .until("ffmpeg start", |k| {
                child_is(k, "ffmpeg")
                    && matches!(k, EventKind::Started { generation: g, .. } if *g == generation)
            })
            .await;
        let (exited, kind) = rig
            .until("ffmpeg exit", |k| {
                child_is(k, "ffmpeg") && matches!(k, EventKind::Exited { .. })
            })
            .await;
        let EventKind::Exited { reason, .. } = kind else {
            unreachable!()
        };
        assert!(reason.to_string().contains("nothing recorded"), "{reason}");
        limits.push((exited - started).as_secs_f64());
    }
    // 2 × segment_seconds (2) + 3 = 7 s for the first start (stall_seconds is less), then 14 s, then 28 s,
    // each plus at most a tick or two.
    for (got, want) in limits.iter().zip([7.0, 14.0, 28.0]) {
        assert!(
            (want..want + 0.7).contains(got),
            "start limits {limits:?}, expected 7, 14, 28 s"
        );
    }
    assert_eq!(
        rig.rt
            .start_stalls
            .load(std::sync::atomic::Ordering::Relaxed),
        3
    );
}

#[actix_rt::test]
async fn a_start_that_ffmpeg_ends_by_itself_resets_the_longer_time_to_connect() {
    // The first start gets nothing (a stall at 7 s); the next one fails by itself (a refused connection):
    // the one after gets the usual 7 s again, not 28.
    let mut rig = Rig::start(
        "if [ -e \"$DIR/../stalled-once\" ]; then echo 'Connection refused' >&2; exit 1; fi; \
         touch \"$DIR/../stalled-once\"; exec sleep 1000",
        "rtsp://127.0.0.1:9/x",
    );
    for (what, stalls) in [("the first stall", 1), ("the refused start's exit", 0)] {
        rig.until(what, |k| {
            child_is(k, "ffmpeg") && matches!(k, EventKind::Exited { .. })
        })
        .await;
        let now = rig
            .rt
            .start_stalls
            .load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(now, stalls, "after {what}");
    }
}
