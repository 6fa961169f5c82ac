//! The capture path: per camera, a rest_for_one `Camera <id>` supervisor with a `Watcher` actor (finished
//! segments → catalog) and an `Ffmpeg` actor (one ffmpeg run per session folder, liveness from the bytes it
//! writes). The two share the camera's [`CameraRuntime`]; the web reads each camera's [`Status`] from the
//! [`Board`].
//!
//! Capture does not know the distribution pipeline: cataloguing a segment wakes the stages
//! ([`crate::catalog::Wake`]).

pub mod ffmpeg;
pub mod probe;
pub mod session;
pub mod timeline;
pub mod watcher;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::Serialize;
use supervisors::{ChildHandle, ChildSpec, Shutdown, Strategy, SupervisorSpec};
use tokio::sync::mpsc;

use crate::catalog::{Catalog, Wake};
use crate::config::{CameraConfig, Config};
use crate::process::{OsSpawner, Redactor, Spawner};

/// What a camera is doing, as `GET /api/cameras` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// ffmpeg is connecting (no bytes yet).
    Starting,
    /// Bytes are flowing into the current segment.
    Recording,
    /// The camera dropped or cannot be reached; retrying with backoff, probing meanwhile.
    Reconnecting,
    /// The camera rejects our credentials (RTSP 401/403): fix the URL's user and password.
    AuthFailed,
    /// The camera has no stream at this path (RTSP 404): fix the URL's path.
    NotFound,
    /// ffmpeg wrote nothing for `stall_seconds` (frozen camera or connection) and was restarted.
    Stalled,
    /// The data folder's file system is full; retention is freeing space.
    DiskFull,
    /// Not recording: stopped or disabled.
    Stopped,
}

impl State {
    /// The name `GET /api/cameras` and `/metrics` use.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Recording => "recording",
            State::Reconnecting => "reconnecting",
            State::AuthFailed => "auth_failed",
            State::NotFound => "not_found",
            State::Stalled => "stalled",
            State::DiskFull => "disk_full",
            State::Stopped => "stopped",
        }
    }

    /// Plain words for logs.
    pub fn describe(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Recording => "recording",
            State::Reconnecting => "reconnecting",
            State::AuthFailed => "rejecting our credentials",
            State::NotFound => "without the configured stream",
            State::Stalled => "stalled",
            State::DiskFull => "blocked by a full disk",
            State::Stopped => "stopped",
        }
    }
}

/// A camera's current state.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub state: State,
    /// When the state last changed (unix ms).
    pub since_ms: i64,
    /// The last problem, in plain words (secrets redacted).
    pub last_error: Option<String>,
    /// The session ffmpeg records into.
    pub session: Option<String>,
    /// When ffmpeg last added bytes to a segment (unix ms).
    pub last_write_ms: Option<i64>,
    /// When the last segment was catalogued (unix ms).
    pub last_segment_ms: Option<i64>,
    /// Footage catalogued since start (ms).
    pub recorded_ms: i64,
    /// Gaps between consecutive segments since start (ms): the camera, ffmpeg or vigil was down.
    pub lost_ms: i64,
    /// End of the newest catalogued segment (unix ms), seeded from the catalog at start.
    pub last_end_ms: Option<i64>,
}

/// A gap shorter than this between two segments is timing noise, not lost footage. Within a session
/// consecutive segments meet to the millisecond (see `timeline`); across a session join the new session's
/// start is observed late, never early, so a gap is never under-counted.
pub const LOST_MIN_MS: i64 = 100;

impl Status {
    /// Account one catalogued segment: recorded footage, and the gap since the newest one before it.
    pub fn footage(&mut self, start_ms: i64, duration_ms: i64) {
        self.recorded_ms += duration_ms.max(0);
        let end = start_ms + duration_ms.max(0);
        if let Some(last) = self.last_end_ms {
            let gap = start_ms - last;
            if gap >= LOST_MIN_MS {
                self.lost_ms += gap;
            }
        }
        self.last_end_ms = Some(self.last_end_ms.map_or(end, |l| l.max(end)));
    }
}

/// One camera's status, shared by its actors and the web.
#[derive(Debug)]
pub struct StatusCell(Mutex<Status>);

impl StatusCell {
    fn new(now_ms: i64) -> StatusCell {
        StatusCell(Mutex::new(Status {
            state: State::Starting,
            since_ms: now_ms,
            last_error: None,
            session: None,
            last_write_ms: None,
            last_segment_ms: None,
            recorded_ms: 0,
            lost_ms: 0,
            last_end_ms: None,
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Status> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Set the state (and the error, if given). Returns the previous state if it changed.
    pub fn set(&self, state: State, error: Option<String>, now_ms: i64) -> Option<State> {
        let mut s = self.lock();
        if error.is_some() {
            s.last_error = error;
        }
        if s.state == state {
            return None;
        }
        let was = s.state;
        s.state = state;
        s.since_ms = now_ms;
        Some(was)
    }

    pub fn update(&self, f: impl FnOnce(&mut Status)) {
        f(&mut self.lock());
    }

    pub fn snapshot(&self) -> Status {
        self.lock().clone()
    }
}

/// Every camera's status, by id (cameras may be added and removed at run time).
#[derive(Debug, Default)]
pub struct Board {
    cells: RwLock<BTreeMap<String, Arc<StatusCell>>>,
}

impl Board {
    /// The cell of `camera`, created if needed.
    pub fn cell(&self, camera: &str, now_ms: i64) -> Arc<StatusCell> {
        if let Some(c) = self
            .cells
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(camera)
        {
            return c.clone();
        }
        self.cells
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(camera.to_string())
            .or_insert_with(|| Arc::new(StatusCell::new(now_ms)))
            .clone()
    }

    /// Every camera's status, by id.
    pub fn all(&self) -> Vec<(String, Status)> {
        self.cells
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, c)| (k.clone(), c.snapshot()))
            .collect()
    }

    /// The status of `camera`, if it is known.
    pub fn get(&self, camera: &str) -> Option<Status> {
        self.cells
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(camera)
            .map(|c| c.snapshot())
    }
}

/// What the watcher hears about: ffmpeg's sessions starting and ending, file-system events, its own ticks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// ffmpeg is about to record into this session.
    Started(String),
    /// ffmpeg's run into this session is over (process reaped): catalogue what is left and close it.
    Ended(String),
    /// Something changed in this session's folder.
    Changed(String),
    /// Stop after handling everything before this.
    Quit,
}

/// What the actors of one camera share.
#[derive(Debug)]
pub struct CameraRuntime {
    pub config: CameraConfig,
    /// `<data>/<camera>`
    pub dir: PathBuf,
    /// The data folder (catalog paths are relative to it).
    pub data_dir: PathBuf,
    pub ffmpeg: String,
    pub ffprobe: String,
    pub rtsp_timeout_seconds: u32,
    pub catalog: Arc<Catalog>,
    pub status: Arc<StatusCell>,
    /// Segments recorded and their age when catalogued (`/metrics`).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Woken when a segment is catalogued (the distribution pipeline's first stage).
    pub wake: Arc<Wake>,
    pub spawner: Arc<dyn Spawner>,
    /// Removes the camera's credentials from anything ffmpeg prints.
    pub redactor: Redactor,
    /// The longest restart delay (for messages).
    pub backoff_max: Duration,
    /// The running watcher's inbox.
    pub inbox: Mutex<Option<mpsc::UnboundedSender<Note>>>,
    /// When the probe last asked a misconfigured camera.
    pub last_probe: Mutex<Option<std::time::Instant>>,
    /// The session the running ffmpeg records into. Set before the folder is created (the lock is held for
    /// the assignment only), so a watcher recovering from a crash that sees the new run's (still empty)
    /// folder also sees its name here, and never finishes or removes it as a leftover.
    pub live_session: Mutex<Option<String>>,
    /// ffmpeg runs in a row stopped for writing nothing before their first byte: each doubles the time the
    /// next run gets to connect (a camera behind a slow link needs several round trips before the first
    /// frame); back to zero once bytes flow or ffmpeg ends a run by itself.
    pub start_stalls: std::sync::atomic::AtomicU32,
}

impl CameraRuntime {
    /// The runtime of `cam` under `config`.
    pub fn new(
        config: &Config,
        cam: &CameraConfig,
        catalog: Arc<Catalog>,
        wake: Arc<Wake>,
        board: &Board,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> CameraRuntime {
        let status = board.cell(&cam.id, chrono::Utc::now().timestamp_millis());
        // Where the footage stopped before this start: the gap to the first new segment is lost footage.
        if let Ok(Some(last)) = catalog.latest(&cam.id) {
            status.update(|s| {
                let end = last.start_ms + last.duration_ms;
                s.last_end_ms = Some(s.last_end_ms.map_or(end, |l| l.max(end)));
            });
        }
        CameraRuntime {
            config: cam.clone(),
            dir: config.data_dir.join(&cam.id),
            data_dir: config.data_dir.clone(),
            ffmpeg: config.capture.ffmpeg.clone(),
            ffprobe: ffprobe_for(&config.capture.ffmpeg),
            rtsp_timeout_seconds: config.capture.rtsp_timeout_seconds,
            catalog,
            status,
            metrics,
            wake,
            spawner: Arc::new(OsSpawner),
            redactor: Redactor::new(cam.url.secrets()),
            backoff_max: Duration::from_secs(config.supervision.backoff_max_seconds),
            inbox: Mutex::new(None),
            last_probe: Mutex::new(None),
            live_session: Mutex::new(None),
            start_stalls: std::sync::atomic::AtomicU32::new(0),
        }
    }

    /// Tell the running watcher something (dropped if no watcher runs: it rescans open sessions at start).
    pub fn note(&self, note: Note) {
        if let Some(q) = self
            .inbox
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            let _ = q.send(note);
        }
    }

    /// The session the running ffmpeg records into, if any.
    pub fn live_session(&self) -> Option<String> {
        self.live_session
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// The ffprobe that goes with an ffmpeg program.
pub fn ffprobe_for(ffmpeg: &str) -> String {
    let p = std::path::Path::new(ffmpeg);
    match p.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join("ffprobe").display().to_string(),
        _ => "ffprobe".to_string(),
    }
}

/// How often a camera that rejects our credentials (or lacks the stream) is probed.
pub const PROBE_WHEN_MISCONFIGURED: Duration = Duration::from_secs(10);

/// Free bytes that end a camera's wait after its disk was full.
pub const SPACE_TO_RESTART: u64 = 4_000_000;

/// The `Camera <id>` supervisor for a camera runtime: rest_for_one over [Watcher, Ffmpeg]. The watcher
/// follows ffmpeg's sessions, so it needs no restart when ffmpeg starts a new one; started first, it stops
/// last, after ffmpeg has written its final segment, which it catalogues before vigil exits. (A watcher
/// failure restarts ffmpeg too: recording resumes in a new session, and the restarted watcher's rescan of
/// the open sessions misses nothing.)
///
/// A camera that fails forever stays inside this supervisor: its restarts are paced by backoff (the probe
/// only cuts a wait short when the camera really serves its stream), so it never reaches the intensity
/// limit, and the `cameras` supervisor above never sees it fail.
pub fn camera_spec(config: &Config, rt: Arc<CameraRuntime>) -> SupervisorSpec {
    let cam = &rt.config;
    let probe_url = cam.url.clone();
    let probe_interval = Duration::from_millis(config.capture.probe_interval_ms);
    let probe_rt = rt.clone();
    let r = rt.clone();
    let ffmpeg = ChildSpec::worker("ffmpeg", move |cx| {
        let (h, _) = ChildHandle::actor(
            cx,
            ffmpeg::Ffmpeg::new(r.clone(), cx.exit.clone(), cx.clock(), cx.path.clone()),
        );
        Ok(h)
    })
    .shutdown(Shutdown::Timeout(
        ffmpeg::TERM_GRACE + Duration::from_secs(2),
    ))
    .probe(probe_interval, move || {
        let url = probe_url.clone();
        let rt = probe_rt.clone();
        async move {
            // After a full disk the camera is fine; what must come back is space.
            if rt.status.snapshot().state == State::DiskFull {
                let dir = rt.data_dir.clone();
                return tokio::task::spawn_blocking(move || crate::retention::disk_space(&dir))
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .is_some_and(|(free, _)| free >= SPACE_TO_RESTART);
            }
            // A camera that rejects our credentials (or has no such stream) is asked rarely: two failed
            // logins a second would lock the account on many cameras.
            if matches!(
                rt.status.snapshot().state,
                State::AuthFailed | State::NotFound
            ) {
                let mut last = rt.last_probe.lock().unwrap_or_else(|p| p.into_inner());
                if last.is_some_and(|t: std::time::Instant| t.elapsed() < PROBE_WHEN_MISCONFIGURED)
                {
                    return false;
                }
                *last = Some(std::time::Instant::now());
            }
            let outcome = probe::check(url.expose(), Duration::from_secs(1)).await;
            ffmpeg::probed(&rt, &outcome);
            outcome.is_ready()
        }
    })
    .about(format!("ffmpeg ← {}", cam.redacted_url()));
    let r = rt.clone();
    let watcher = ChildSpec::worker("watcher", move |cx| {
        let (h, _) = ChildHandle::actor(
            cx,
            watcher::Watcher::new(r.clone(), cx.clock(), cx.path.clone()),
        );
        Ok(h)
    })
    // Its last act is cataloguing ffmpeg's final segment: give it time even on a loaded machine.
    .shutdown(Shutdown::Timeout(Duration::from_secs(30)))
    .about(format!("{}/ → catalog", rt.dir.display()));
    config
        .supervision
        .apply(SupervisorSpec::new(cam.id.clone()))
        .strategy(Strategy::RestForOne)
        // Backoff bounds a failing camera to a few restarts a minute; this limit is only hit by a tight loop.
        .intensity(60, Duration::from_secs(60))
        .child(watcher)
        .child(ffmpeg)
}
