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
}

/// The ffprobe that goes with an ffmpeg program.
pub fn ffprobe_for(ffmpeg: &str) -> String {
    let p = std::path::Path::new(ffmpeg);
    match p.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join("ffprobe").display().to_string(),
        _ => "ffprobe".to_string(),
    }
}

/// The `Camera <id>` supervisor: rest_for_one over [Ffmpeg, Watcher], so a new ffmpeg run also restarts the
/// watcher (which rescans, missing nothing), while a watcher hiccup never interrupts recording.
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
    .about(format!("{}/ → catalog", rt.dir.display()));
    crate::tree::tuned(SupervisorSpec::new(cam.id.clone()), config)
        .strategy(Strategy::RestForOne)
        // Backoff bounds a failing camera to a few restarts a minute; this limit is only hit by a tight loop.
        .intensity(30, Duration::from_secs(60))
        .child(ffmpeg)
        .child(watcher)
}
