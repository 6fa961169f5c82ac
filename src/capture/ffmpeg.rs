//! The `Ffmpeg` actor: one ffmpeg process per run, copying the camera's RTSP stream into MPEG-TS segments in
//! a NEW session folder. ffmpeg's `segment` muxer streams every segment to disk as it is received
//! (`flush_packets=1`), so when ffmpeg dies the partial segment is on disk, and it appends one line per
//! finished segment to `segments.csv`: the watcher's work per segment is O(1), whatever the session's length.
//!
//! Liveness is judged by progress on disk: no byte added to the current segment for `stall_seconds` (a frozen
//! camera, a dead connection) and ffmpeg is stopped — SIGTERM, SIGKILL of its process group a second later,
//! always reaped. Nothing vigil does itself (cataloguing, a slow catalog) enters into it.
//!
//! The actor ends whenever ffmpeg exits (also with status 0, which is what ffmpeg does when a camera drops);
//! its supervisor restarts it: at once after a run that recorded something, with backoff after failures.
//! Why it ended is classified for the camera's status: the camera rejected our credentials (401/403), has no
//! such stream (404), the disk is full, or it dropped. Each change of state is logged once, in plain words.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use actix::prelude::*;
use nix::sys::signal::Signal;
use supervisors::{Clock, ExitSlot, Terminate};

use super::probe::Outcome;
use super::{CameraRuntime, Note, State, session};
use crate::process::{Command, ProcessGroup};

/// How long ffmpeg gets to finish its segment after SIGTERM at shutdown before its group is SIGKILLed.
pub const TERM_GRACE: Duration = Duration::from_secs(3);
/// After a stall: a frozen ffmpeg flushes nothing, so it gets only a short grace.
pub const STALL_GRACE: Duration = Duration::from_secs(1);
/// How often the watchdog looks at the current segment's size.
const WATCHDOG_TICK: Duration = Duration::from_millis(200);
/// The longest an ffmpeg run may take to its first byte after runs in a row that got nothing.
const START_LIMIT_MAX: Duration = Duration::from_secs(60);
/// Longest wait for the catalog to register a new session before ffmpeg starts anyway.
const REGISTER_WAIT: Duration = Duration::from_secs(2);
/// Stderr lines kept for the restart log.
const STDERR_LINES: usize = 8;
/// The segment list ffmpeg appends to.
pub const SEGMENT_LIST: &str = "segments.csv";

/// A segment file's name.
pub fn segment_name(seq: i64) -> String {
    format!("seg_{seq:05}.ts")
}

/// `seg_00042.ts` → 42.
pub fn seq_of(file: &str) -> Option<i64> {
    file.strip_prefix("seg_")?.strip_suffix(".ts")?.parse().ok()
}

/// ffmpeg's arguments for one run into `dir`.
pub fn args(url: &str, segment_seconds: u32, rtsp_timeout_seconds: u32, dir: &Path) -> Vec<String> {
    let d = dir.display();
    // Cut at the first keyframe at least segment_seconds - delta after the last cut: a keyframe one frame
    // short of the mark does not make the segment twice as long.
    let delta = f64::from(segment_seconds) / 4.0;
    [
        "-hide_banner",
        "-nostdin",
        "-nostats",
        "-loglevel",
        "warning",
        "-rtsp_transport",
        "tcp",
        "-timeout",
        &(u64::from(rtsp_timeout_seconds) * 1_000_000).to_string(),
        // Probe the input briefly: the first segment reaches the disk ~0.7 s after the spawn instead of ~2.5 s.
        "-fpsprobesize",
        "0",
        "-analyzeduration",
        "200000",
        "-probesize",
        "2000000",
        "-i",
        url,
        "-c",
        "copy",
        "-f",
        "segment",
        "-segment_time",
        &segment_seconds.to_string(),
        "-segment_time_delta",
        &format!("{delta:.3}"),
        "-segment_format",
        "mpegts",
        "-segment_format_options",
        "flush_packets=1",
        "-segment_list",
        &format!("{d}/{SEGMENT_LIST}"),
        "-segment_list_type",
        "csv",
        &format!("{d}/seg_%05d.ts"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Why a run ended, from what ffmpeg printed last.
fn classify(stderr: &str) -> (State, Option<&'static str>) {
    let s = stderr.to_ascii_lowercase();
    if s.contains("401 unauthorized") || s.contains("authorization failed") {
        (State::AuthFailed, Some("RTSP 401 Unauthorized"))
    } else if s.contains("403 forbidden") {
        (State::AuthFailed, Some("RTSP 403 Forbidden"))
    } else if s.contains("404 not found") {
        (State::NotFound, Some("RTSP 404 Not Found"))
    } else if s.contains("no space left on device") {
        (State::DiskFull, Some("no space left on device"))
    } else {
        (State::Reconnecting, None)
    }
}

/// Log a camera's change of state once, in plain words, with what vigil does next.
pub fn announce(rt: &CameraRuntime, state: State, detail: &str, now_ms: i64) {
    let problem = !matches!(state, State::Recording | State::Starting | State::Stopped);
    let Some(was) = rt
        .status
        .set(state, problem.then(|| detail.to_string()), now_ms)
    else {
        return;
    };
    let id = &rt.config.id;
    let cap = rt.backoff_max.as_secs();
    match state {
        State::AuthFailed => {
            tracing::warn!(camera = %id, "camera {id} rejects our credentials ({detail}): check the user and password in its URL. vigil retries with growing delays (at most every {cap} s) and starts recording as soon as the camera accepts them; this is logged again only when it changes")
        }
        State::NotFound => {
            tracing::warn!(camera = %id, "camera {id} has no stream at the configured path ({detail}): check the path in its URL. vigil retries with growing delays (at most every {cap} s)")
        }
        State::DiskFull => {
            tracing::warn!(camera = %id, "camera {id} cannot record: {detail}. Retention frees space; recording resumes by itself")
        }
        State::Stalled => {
            tracing::warn!(camera = %id, "camera {id} stalled: {detail}; restarting ffmpeg")
        }
        State::Reconnecting if was == State::Recording || was == State::Starting => {
            tracing::info!(camera = %id, "camera {id}: {detail}; reconnecting (at once after a run that recorded, then with backoff, probing the camera meanwhile)")
        }
        State::Recording if was != State::Starting => {
            tracing::info!(camera = %id, "camera {id} is recording again (was {})", was.describe())
        }
        _ => {}
    }
}

/// A readiness probe's answer, reflected in the camera's status (only problems are: "ready" is confirmed by
/// ffmpeg writing).
pub fn probed(rt: &CameraRuntime, outcome: &Outcome) {
    let now = chrono::Utc::now().timestamp_millis();
    match outcome {
        Outcome::AuthRejected(code) => announce(
            rt,
            State::AuthFailed,
            &format!("RTSP {code} to DESCRIBE"),
            now,
        ),
        Outcome::NotFound => announce(rt, State::NotFound, "RTSP 404 to DESCRIBE", now),
        _ => {}
    }
}

/// What the watchdog saw: the newest segment file and its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Progress {
    seq: i64,
    bytes: u64,
}

/// A look: the progress, and how long ago (by the file's mtime) the last byte was written.
#[derive(Debug, Clone, Copy)]
struct Seen {
    progress: Progress,
    age: Option<Duration>,
}

/// Find the newest segment file from `from` on (a few stats), its size and the age of its last write.
fn look(dir: &Path, from: i64) -> Seen {
    let mut seq = from;
    for _ in 0..10_000 {
        if !dir.join(segment_name(seq + 1)).exists() {
            break;
        }
        seq += 1;
    }
    let meta = std::fs::metadata(dir.join(segment_name(seq))).ok();
    Seen {
        progress: Progress {
            seq,
            bytes: meta.as_ref().map_or(0, |m| m.len()),
        },
        age: meta
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.elapsed().ok()),
    }
}

/// One ffmpeg run.
pub struct Ffmpeg {
    cam: Arc<CameraRuntime>,
    exit: ExitSlot,
    clock: Arc<dyn Clock>,
    path: String,
    group: Option<ProcessGroup>,
    session: String,
    dir: PathBuf,
    started: Instant,
    stopping: bool,
    stalled: bool,
    progress: Option<Progress>,
    last_progress: Instant,
    looking: bool,
    healthy: bool,
}

impl Ffmpeg {
    pub fn new(
        cam: Arc<CameraRuntime>,
        exit: ExitSlot,
        clock: Arc<dyn Clock>,
        path: String,
    ) -> Self {
        let started = clock.now();
        Ffmpeg {
            cam,
            exit,
            clock,
            path,
            group: None,
            session: String::new(),
            dir: PathBuf::new(),
            started,
            stopping: false,
            stalled: false,
            progress: None,
            last_progress: started,
            looking: false,
            healthy: false,
        }
    }

    fn now_ms(&self) -> i64 {
        chrono::DateTime::<chrono::Utc>::from(self.clock.wall()).timestamp_millis()
    }

    fn stderr_summary(&self) -> String {
        self.group
            .as_ref()
            .map(|g| g.stderr().summary())
            .unwrap_or_default()
    }

    /// SIGTERM now, SIGKILL of the whole group after `grace`; the exit future then stops the actor.
    fn terminate(&mut self, ctx: &mut Context<Self>, grace: Duration) {
        if self.stopping {
            return;
        }
        self.stopping = true;
        let Some(group) = &self.group else {
            ctx.stop();
            return;
        };
        group.signal(Signal::SIGTERM);
        ctx.spawn(actix::fut::wrap_future(self.clock.sleep(grace)).map(move |(), act: &mut Self, _| {
            if let Some(g) = &act.group
                && !g.reaped()
            {
                tracing::warn!(actor = %act.path, pid = g.pid(), "ffmpeg still running {} ms after SIGTERM: SIGKILL to its process group", grace.as_millis());
                g.signal(Signal::SIGKILL);
            }
        }));
    }

    /// The session folder exists: start ffmpeg into it.
    fn launch(&mut self, ctx: &mut Context<Self>) {
        let cfg = &self.cam.config;
        let command = Command {
            program: self.cam.ffmpeg.clone(),
            args: args(
                cfg.url.expose(),
                cfg.segment_seconds,
                self.cam.rtsp_timeout_seconds,
                &self.dir,
            ),
            marker: self.cam.dir.display().to_string(),
            keep: STDERR_LINES,
            label: self.path.clone(),
            redactor: self.cam.redactor.clone(),
        };
        // The watcher follows the session from now on (before ffmpeg can write anything).
        self.cam.note(Note::Started(self.session.clone()));
        let spawned = match self.cam.spawner.spawn(&command) {
            Ok(s) => s,
            Err(e) => {
                self.exit.fail(self.cam.redactor.redact(&e.to_string()));
                ctx.stop();
                return;
            }
        };
        self.started = self.clock.now();
        self.last_progress = self.started;
        let session = self.session.clone();
        self.cam.status.update(|s| s.session = Some(session));
        tracing::info!(actor = %self.path, pid = spawned.group.pid(), session = %self.session, url = %cfg.url, "ffmpeg recording into {}", self.dir.display());
        self.group = Some(spawned.group);

        ctx.spawn(
            actix::fut::wrap_future(spawned.exit).map(|status, act: &mut Self, ctx| {
                let ran = act.clock.now().saturating_duration_since(act.started);
                let status = match status {
                    Ok(s) => s.to_string(),
                    Err(e) => format!("unknown status ({e})"),
                };
                if !act.stopping || act.stalled {
                    let tail = act.stderr_summary();
                    if !act.stalled {
                        // ffmpeg gave up by itself (refused, timed out, bad credentials): not a slow start, so
                        // the next start gets the usual time to its first byte.
                        act.cam.start_stalls.store(0, Ordering::Relaxed);
                        let (state, detail) = classify(&tail);
                        let detail = detail.map_or_else(
                            || format!("ffmpeg {status} after {:.1} s", ran.as_secs_f64()),
                            str::to_string,
                        );
                        announce(&act.cam, state, &detail, act.now_ms());
                    }
                    act.exit.fail(format!(
                        "ffmpeg {status} after {:.1} s in session {}; last stderr: {tail}",
                        ran.as_secs_f64(),
                        act.session,
                    ));
                }
                ctx.stop();
            }),
        );

        // The watchdog, on the injected clock.
        let clock = self.clock.clone();
        let addr = ctx.address();
        actix_rt::spawn(async move {
            while addr.connected() {
                clock.sleep(WATCHDOG_TICK).await;
                addr.do_send(Look);
            }
        });
    }
}

impl Actor for Ffmpeg {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // A new, never-used folder, created off this thread (the disk may be slow), and registered in the
        // catalog before ffmpeg writes into it, so that a crash at any moment leaves it known. A catalog that
        // does not answer within REGISTER_WAIT does not hold up recording (the watcher registers it too).
        let camera_dir = self.cam.dir.clone();
        let now = chrono::DateTime::<chrono::Utc>::from(self.clock.wall());
        let (catalog, camera) = (self.cam.catalog.clone(), self.cam.config.id.clone());
        let cam = self.cam.clone();
        let prepare = async move {
            let (session, dir) = tokio::task::spawn_blocking(move || {
                // Named live before its folder can exist: see `CameraRuntime::live_session`.
                session::create_with(&camera_dir, now, |id| {
                    *cam.live_session.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some(id.to_string());
                })
            })
            .await
            .map_err(|e| crate::Error::Internal(format!("creating the session folder: {e}")))??;
            let name = session.clone();
            let registered = tokio::time::timeout(
                REGISTER_WAIT,
                catalog.run(move |c| c.open_session(&camera, &name)),
            )
            .await;
            if !matches!(registered, Ok(Ok(()))) {
                tracing::warn!(%session, "the catalog did not register the new session in time; recording anyway");
            }
            Ok::<_, crate::Error>((session, dir))
        };
        ctx.wait(actix::fut::wrap_future(prepare).map(
            |prepared, act: &mut Self, ctx| match prepared {
                Ok((session, dir)) => {
                    act.session = session;
                    act.dir = dir;
                    if act.stopping {
                        ctx.stop();
                    } else {
                        act.launch(ctx);
                    }
                }
                Err(e) => {
                    if e.is_transient() {
                        announce(&act.cam, State::DiskFull, &e.to_string(), act.now_ms());
                    }
                    act.exit.fail(e.to_string());
                    ctx.stop();
                }
            },
        ));
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        if !self.session.is_empty() {
            {
                let mut live = self
                    .cam
                    .live_session
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                if live.as_deref() == Some(self.session.as_str()) {
                    *live = None;
                }
            }
            // The run is over (ffmpeg reaped): the watcher catalogues what it left, the partial last segment
            // included, and closes the session.
            self.cam.note(Note::Ended(self.session.clone()));
        }
        // Dropping the group SIGKILLs it if it is somehow still there.
        self.group.take();
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Look;

impl Handler<Look> for Ffmpeg {
    type Result = ();
    fn handle(&mut self, _: Look, ctx: &mut Context<Self>) {
        if self.stopping || self.group.is_none() || self.looking {
            return;
        }
        self.looking = true;
        let (dir, from) = (self.dir.clone(), self.progress.map_or(0, |p| p.seq));
        let looked = tokio::task::spawn_blocking(move || look(&dir, from));
        ctx.spawn(
            actix::fut::wrap_future(looked).map(|r, act: &mut Self, ctx| {
                act.looking = false;
                act.on_looked(r.ok(), ctx);
            }),
        );
    }
}

impl Ffmpeg {
    fn on_looked(&mut self, seen: Option<Seen>, ctx: &mut Context<Self>) {
        if self.stopping {
            return;
        }
        let now = self.clock.now();
        // A look that could not be made (the blocking pool is stuck on a slow disk) proves nothing either way.
        if let Some(Seen { progress: p, age }) = seen
            && p.bytes > 0
            && Some(p) != self.progress
        {
            let first = self.progress.is_none_or(|q| q.bytes == 0);
            self.progress = Some(p);
            if first {
                self.cam.start_stalls.store(0, Ordering::Relaxed);
            }
            // The last byte came with the file's last write, at most one tick ago.
            let age = age.unwrap_or_default().min(WATCHDOG_TICK);
            self.last_progress = now.checked_sub(age).unwrap_or(now).max(self.started);
            let wall = self.now_ms();
            self.cam.status.update(|s| s.last_write_ms = Some(wall));
            if first || self.cam.status.snapshot().state != State::Recording {
                announce(&self.cam, State::Recording, "bytes are flowing", wall);
            }
            if p.seq >= 1 && !self.healthy {
                // A segment is finished: this run recorded footage, so if it ends now the restart is immediate.
                self.healthy = true;
                self.exit.healthy();
            }
            return;
        }
        let stall = Duration::from_secs(u64::from(self.cam.config.stall_seconds));
        // Before the first byte ffmpeg connects, probes and waits for a keyframe: allow for a whole GOP, and
        // twice as long after each run in a row that got nothing (a slow link: the RTSP handshake alone is
        // four round trips), up to START_LIMIT_MAX.
        let limit = if self.progress.is_some() {
            stall
        } else {
            let base = stall.max(Duration::from_secs(
                2 * u64::from(self.cam.config.segment_seconds) + 3,
            ));
            let doublings = self.cam.start_stalls.load(Ordering::Relaxed).min(4);
            (base * 2u32.pow(doublings)).min(START_LIMIT_MAX.max(base))
        };
        let quiet = now.saturating_duration_since(self.last_progress);
        if quiet >= limit {
            let why = if self.progress.is_some() {
                format!(
                    "no bytes written for {:.1} s (stall_seconds = {})",
                    quiet.as_secs_f64(),
                    self.cam.config.stall_seconds
                )
            } else {
                format!(
                    "nothing recorded {:.1} s after ffmpeg started (the next run gets up to {} s: a slow link may need longer to connect)",
                    quiet.as_secs_f64(),
                    (limit * 2).min(START_LIMIT_MAX.max(limit)).as_secs()
                )
            };
            if self.progress.is_none() {
                self.cam.start_stalls.fetch_add(1, Ordering::Relaxed);
            }
            announce(&self.cam, State::Stalled, &why, self.now_ms());
            let tail = self.stderr_summary();
            self.exit
                .fail(format!("stalled: {why}; last stderr: {tail}"));
            tracing::warn!(actor = %self.path, session = %self.session, "stalled: {why}; stopping ffmpeg (SIGTERM, SIGKILL after {} ms)", STALL_GRACE.as_millis());
            self.stalled = true;
            self.terminate(ctx, STALL_GRACE);
        }
    }
}

impl Handler<Terminate> for Ffmpeg {
    type Result = ();
    fn handle(&mut self, _: Terminate, ctx: &mut Context<Self>) {
        tracing::info!(actor = %self.path, session = %self.session, "stopping ffmpeg (SIGTERM, SIGKILL after {} s)", TERM_GRACE.as_secs());
        let now = self.now_ms();
        self.cam.status.set(State::Stopped, None, now);
        self.terminate(ctx, TERM_GRACE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ffmpeg_streams_segments_to_disk_with_an_appended_list() {
        let a = args("rtsp://cam/1", 2, 5, Path::new("/d/cam1/S1"));
        let s = a.join(" ");
        assert!(
            s.contains(
                "-rtsp_transport tcp -timeout 5000000 -fpsprobesize 0 -analyzeduration 200000"
            ),
            "{s}"
        );
        assert!(
            s.contains(
                "-i rtsp://cam/1 -c copy -f segment -segment_time 2 -segment_time_delta 0.500"
            ),
            "{s}"
        );
        assert!(
            s.contains("-segment_format mpegts -segment_format_options flush_packets=1"),
            "{s}"
        );
        assert!(
            s.ends_with("-segment_list /d/cam1/S1/segments.csv -segment_list_type csv /d/cam1/S1/seg_%05d.ts"),
            "{s}"
        );
        assert_eq!(seq_of(&segment_name(42)), Some(42));
        assert_eq!(seq_of("seg_00002.ts.tmp"), None);
    }

    #[test]
    fn exits_are_classified_from_what_ffmpeg_printed() {
        let auth = "[rtsp @ 0x56] method DESCRIBE failed: 401 Unauthorized | rtsp://u:***@h/cam1: Server returned 401 Unauthorized (authorization failed)";
        assert_eq!(classify(auth).0, State::AuthFailed);
        assert_eq!(
            classify("Server returned 403 Forbidden (access denied)").0,
            State::AuthFailed
        );
        assert_eq!(
            classify("method DESCRIBE failed: 404 Not Found").0,
            State::NotFound
        );
        assert_eq!(
            classify("seg_00003.ts: No space left on device").0,
            State::DiskFull
        );
        assert_eq!(classify("Connection refused").0, State::Reconnecting);
        assert_eq!(classify("").0, State::Reconnecting);
    }

    #[test]
    fn the_watchdog_finds_the_newest_segment_and_its_size() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(look(dir.path(), 0).progress, Progress { seq: 0, bytes: 0 });
        std::fs::write(dir.path().join(segment_name(0)), [0u8; 10]).unwrap();
        std::fs::write(dir.path().join(segment_name(1)), [0u8; 5]).unwrap();
        assert_eq!(look(dir.path(), 0).progress, Progress { seq: 1, bytes: 5 });
        std::fs::write(dir.path().join(segment_name(1)), [0u8; 7]).unwrap();
        let seen = look(dir.path(), 1);
        assert_eq!(seen.progress, Progress { seq: 1, bytes: 7 });
        assert!(seen.age.unwrap() < Duration::from_secs(5));
    }
}
