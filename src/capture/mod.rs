//! The capture path: per camera, a rest_for_one `Camera <id>` supervisor with an `Ffmpeg` actor (one ffmpeg
//! run per session folder) and a `Watcher` actor (finished segments → catalog). The two share the camera's
//! [`Progress`], which the stall watchdog reads.

pub mod ffmpeg;
pub mod probe;
pub mod process;
pub mod session;
pub mod watcher;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use supervisors::{ChildHandle, ChildSpec, Shutdown, Strategy, SupervisorSpec};

use crate::catalog::Catalog;
use crate::config::{CameraConfig, Config};

/// Which session ffmpeg is writing now, and when its last segment was catalogued.
#[derive(Debug, Default)]
pub struct Progress {
    inner: Mutex<(Option<String>, Option<Instant>)>,
}

impl Progress {
    fn lock(&self) -> std::sync::MutexGuard<'_, (Option<String>, Option<Instant>)> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
    /// ffmpeg started writing `session`.
    pub fn begin(&self, session: &str, _now: Instant) {
        *self.lock() = (Some(session.to_string()), None);
    }
    /// ffmpeg of `session` is gone.
    pub fn end(&self, session: &str) {
        let mut g = self.lock();
        if g.0.as_deref() == Some(session) {
            *g = (None, None);
        }
    }
    /// The session being written, if any.
    pub fn current(&self) -> Option<String> {
        self.lock().0.clone()
    }
    /// A segment of `session` was catalogued at `now`.
    pub fn bump(&self, session: &str, now: Instant) {
        let mut g = self.lock();
        if g.0.as_deref() == Some(session) {
            g.1 = Some(now);
        }
    }
    /// When the last segment of `session` was catalogued (None if none yet, or another session is current).
    pub fn last(&self, session: &str) -> Option<Instant> {
        let g = self.lock();
        if g.0.as_deref() == Some(session) {
            g.1
        } else {
            None
        }
    }
}

/// What the actors of one camera share.
#[derive(Debug)]
pub struct CameraRuntime {
    pub config: CameraConfig,
    /// `<data>/<camera>`
    pub dir: PathBuf,
    pub ffmpeg: String,
    pub ffprobe: String,
    pub rtsp_timeout_seconds: u32,
    pub progress: Progress,
    /// Woken when a segment is catalogued (the distribution pipeline's first stage).
    pub wake: Arc<crate::pipeline::Wake>,
    /// The running watcher's scan queue (ffmpeg queues its session when a run ends).
    pub scan_queue: Mutex<Option<tokio::sync::mpsc::UnboundedSender<String>>>,
}

impl CameraRuntime {
    /// Ask the watcher to rescan `session` (e.g. because its ffmpeg run just ended).
    pub fn rescan(&self, session: &str) {
        if let Some(q) = self
            .scan_queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            let _ = q.send(session.to_string());
        }
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

/// The `Camera <id>` supervisor: rest_for_one over [Watcher, Ffmpeg]. The watcher follows the whole camera folder,
/// so it needs no restart when ffmpeg starts a new session; started first, it stops last, after ffmpeg has
/// written its final segment, which it catalogues before vigil exits. (A watcher failure restarts ffmpeg too:
/// recording resumes in a new session, and the restarted watcher's rescan misses nothing.)
pub fn camera_spec(
    config: &Config,
    cam: &CameraConfig,
    catalog: Arc<Catalog>,
    wake: Arc<crate::pipeline::Wake>,
) -> SupervisorSpec {
    let rt = Arc::new(CameraRuntime {
        config: cam.clone(),
        dir: config.data_dir.join(&cam.id),
        ffmpeg: config.capture.ffmpeg.clone(),
        ffprobe: ffprobe_for(&config.capture.ffmpeg),
        rtsp_timeout_seconds: config.capture.rtsp_timeout_seconds,
        progress: Progress::default(),
        wake,
        scan_queue: Mutex::new(None),
    });
    let probe_url = cam.url.clone();
    let probe_interval = Duration::from_millis(config.capture.probe_interval_ms);
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
        async move { probe::camera_answers(&url, Duration::from_secs(1)).await }
    })
    .about(format!("ffmpeg ← {}", cam.redacted_url()));
    let r = rt.clone();
    let watcher = ChildSpec::worker("watcher", move |cx| {
        let (h, _) = ChildHandle::actor(
            cx,
            watcher::Watcher::new(
                r.clone(),
                catalog.clone(),
                cx.exit.clone(),
                cx.clock(),
                cx.path.clone(),
            ),
        );
        Ok(h)
    })
    // Its last act is a final scan after ffmpeg stopped: give it time even on a loaded machine.
    .shutdown(Shutdown::Timeout(Duration::from_secs(30)))
    .about(format!("{}/ → catalog", rt.dir.display()));
    crate::tree::tuned(SupervisorSpec::new(cam.id.clone()), config)
        .strategy(Strategy::RestForOne)
        // Backoff bounds a failing camera to a few restarts a minute; this limit is only hit by a tight loop.
        .intensity(30, Duration::from_secs(60))
        .child(watcher)
        .child(ffmpeg)
}
