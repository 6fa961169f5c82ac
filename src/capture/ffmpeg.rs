//! The `Ffmpeg` actor: one ffmpeg process per run, copying the camera's RTSP stream into HLS in a NEW session
//! folder. It ends (and is restarted by its supervisor with backoff) whenever ffmpeg exits — also with status 0,
//! which is what ffmpeg does when a camera drops — and when its stall watchdog sees no finished segment for
//! `stall_seconds`. It stops ffmpeg with SIGTERM, then SIGKILLs the whole process group after a grace period;
//! the process is always reaped.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use nix::sys::signal::Signal;
use supervisors::{Clock, ExitSlot, Terminate};

use super::process::ProcessGroup;
use super::{CameraRuntime, session};

/// How long ffmpeg gets to finish its last segment after SIGTERM before its group is SIGKILLed.
pub const TERM_GRACE: Duration = Duration::from_secs(3);
/// How often the stall watchdog looks.
const WATCHDOG_TICK: Duration = Duration::from_millis(500);
/// Stderr lines kept for the restart log.
const STDERR_LINES: usize = 8;

/// ffmpeg's arguments for one run into `dir`.
pub fn args(
    url: &str,
    segment_seconds: u32,
    rtsp_timeout_seconds: u32,
    dir: &std::path::Path,
) -> Vec<String> {
    let d = dir.display();
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
        "-i",
        url,
        "-c",
        "copy",
        "-f",
        "hls",
        "-hls_time",
        &segment_seconds.to_string(),
        "-hls_list_size",
        "0",
        "-hls_flags",
        "independent_segments+program_date_time+temp_file",
        "-hls_segment_filename",
        &format!("{d}/seg_%05d.ts"),
        &format!("{d}/index.m3u8"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// One ffmpeg run.
pub struct Ffmpeg {
    cam: Arc<CameraRuntime>,
    exit: ExitSlot,
    clock: Arc<dyn Clock>,
    path: String,
    group: Option<ProcessGroup>,
    session: String,
    started: Instant,
    stopping: bool,
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
            started,
            stopping: false,
        }
    }

    fn stderr_summary(&self) -> String {
        self.group
            .as_ref()
            .map(|g| g.stderr().summary())
            .unwrap_or_default()
    }

    /// SIGTERM now, SIGKILL of the whole group after the grace period; the exit future then stops the actor.
    fn terminate(&mut self, ctx: &mut Context<Self>) {
        if self.stopping {
            return;
        }
        self.stopping = true;
        let Some(group) = &self.group else {
            ctx.stop();
            return;
        };
        group.signal(Signal::SIGTERM);
        ctx.spawn(actix::fut::wrap_future(self.clock.sleep(TERM_GRACE)).map(|(), act: &mut Self, _| {
            if let Some(g) = &act.group
                && !g.reaped()
            {
                tracing::warn!(actor = %act.path, pid = g.pid(), "ffmpeg ignored SIGTERM for {} s: SIGKILL to its process group", TERM_GRACE.as_secs());
                g.signal(Signal::SIGKILL);
            }
        }));
    }
}

impl Actor for Ffmpeg {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let cfg = &self.cam.config;
        let (session, dir) = match session::create(&self.cam.dir, chrono::Utc::now()) {
            Ok(s) => s,
            Err(e) => {
                self.exit.fail(e.to_string());
                ctx.stop();
                return;
            }
        };
        let args = args(
            &cfg.url,
            cfg.segment_seconds,
            self.cam.rtsp_timeout_seconds,
            &dir,
        );
        let spawned = match ProcessGroup::spawn(&self.cam.ffmpeg, &args, STDERR_LINES, &self.path) {
            Ok(s) => s,
            Err(e) => {
                self.exit.fail(e.to_string());
                ctx.stop();
                return;
            }
        };
        self.started = self.clock.now();
        self.cam.progress.begin(&session, self.started);
        tracing::info!(actor = %self.path, pid = spawned.group.pid(), %session, url = %cfg.redacted_url(), "ffmpeg recording into {}", dir.display());
        self.session = session;
        self.group = Some(spawned.group);

        ctx.spawn(
            actix::fut::wrap_future(spawned.exit).map(|status, act: &mut Self, ctx| {
                let ran = act.clock.now().saturating_duration_since(act.started);
                let status = match status {
                    Ok(s) => s.to_string(),
                    Err(e) => format!("unknown status ({e})"),
                };
                if !act.stopping {
                    act.exit.fail(format!(
                        "ffmpeg {status} after {:.1} s in session {}; last stderr: {}",
                        ran.as_secs_f64(),
                        act.session,
                        act.stderr_summary()
                    ));
                }
                ctx.stop();
            }),
        );

        // Stall watchdog, on the injected clock.
        let clock = self.clock.clone();
        let addr = ctx.address();
        actix_rt::spawn(async move {
            while addr.connected() {
                clock.sleep(WATCHDOG_TICK).await;
                addr.do_send(CheckStall);
            }
        });
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.cam.progress.end(&self.session);
        // The run is over: the watcher catalogues what it left (orphans too) and closes the session.
        self.cam.rescan(&self.session);
        // A run that never got a segment (camera unreachable) leaves nothing worth a folder: without this, a
        // day-long outage would leave thousands of empty session folders.
        if !self.session.is_empty() {
            let dir = self.cam.dir.join(&self.session);
            let has_media = std::fs::read_dir(&dir)
                .map(|entries| {
                    entries
                        .flatten()
                        .any(|e| e.file_name().to_string_lossy().contains(".ts"))
                })
                .unwrap_or(true);
            if !has_media {
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct CheckStall;

impl Handler<CheckStall> for Ffmpeg {
    type Result = ();
    fn handle(&mut self, _: CheckStall, ctx: &mut Context<Self>) {
        if self.stopping || self.group.is_none() {
            return;
        }
        let stall = Duration::from_secs(u64::from(self.cam.config.stall_seconds));
        let last = self
            .cam
            .progress
            .last(&self.session)
            .unwrap_or(self.started)
            .max(self.started);
        let quiet = self.clock.now().saturating_duration_since(last);
        if quiet >= stall {
            let why = format!(
                "stalled: no finished segment for {:.1} s (stall_seconds = {}); last stderr: {}",
                quiet.as_secs_f64(),
                self.cam.config.stall_seconds,
                self.stderr_summary()
            );
            tracing::warn!(actor = %self.path, session = %self.session, "{why}; stopping ffmpeg");
            self.exit.fail(why);
            self.terminate(ctx);
        }
    }
}

impl Handler<Terminate> for Ffmpeg {
    type Result = ();
    fn handle(&mut self, _: Terminate, ctx: &mut Context<Self>) {
        tracing::info!(actor = %self.path, session = %self.session, "stopping ffmpeg (SIGTERM, SIGKILL after {} s)", TERM_GRACE.as_secs());
        self.terminate(ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ffmpeg_gets_tcp_a_socket_timeout_and_a_per_session_output() {
        let a = args("rtsp://cam/1", 2, 5, std::path::Path::new("/d/cam1/S1"));
        let s = a.join(" ");
        assert!(
            s.contains(
                "-rtsp_transport tcp -timeout 5000000 -i rtsp://cam/1 -c copy -f hls -hls_time 2"
            ),
            "{s}"
        );
        assert!(
            s.contains("-hls_flags independent_segments+program_date_time+temp_file"),
            "{s}"
        );
        assert!(
            s.ends_with("-hls_segment_filename /d/cam1/S1/seg_%05d.ts /d/cam1/S1/index.m3u8"),
            "{s}"
        );
    }
}
