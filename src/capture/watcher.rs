//! The `Watcher` actor: notices finished segments in a camera's session folders and records them in the
//! catalog. A segment counts as finished once ffmpeg has renamed its temp file AND listed it in its playlist;
//! its start time and duration come from that playlist (PROGRAM-DATE-TIME, EXTINF). Every notification just
//! triggers an idempotent rescan of one session folder, so duplicate, missed or out-of-order events are harmless,
//! and a rescan of every session at start means a watcher restart misses nothing. Segment files of a FINISHED
//! session that its playlist never listed (ffmpeg killed between the rename and the playlist write) are
//! catalogued too, timed with ffprobe.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use notify::{EventKind, RecursiveMode, Watcher as _};
use supervisors::{Clock, ExitSlot, Terminate};
use tokio::sync::mpsc;

use super::CameraRuntime;
use crate::catalog::{Catalog, NewSegment};

/// Fallback rescan of the current session, in case a notification was lost (inotify queue overflow).
const RESCAN_EVERY: Duration = Duration::from_secs(5);

/// A segment as ffmpeg's own playlist lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct Listed {
    pub file: String,
    pub duration_ms: i64,
    pub start_ms: Option<i64>,
}

/// Parse ffmpeg's `index.m3u8` (tolerant: ffmpeg writes PROGRAM-DATE-TIME with a `+0000` offset, which strict
/// RFC 3339 parsers reject). Unknown lines are ignored.
pub fn parse_ffmpeg_playlist(text: &str) -> Vec<Listed> {
    let mut out = Vec::new();
    let (mut dur, mut pdt) = (None, None);
    for line in text.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("#EXTINF:") {
            let secs = v.split(',').next().unwrap_or("").trim();
            dur = secs
                .parse::<f64>()
                .ok()
                .map(|s| (s * 1000.0).round() as i64);
        } else if let Some(v) = line.strip_prefix("#EXT-X-PROGRAM-DATE-TIME:") {
            pdt = chrono::DateTime::parse_from_str(v, "%Y-%m-%dT%H:%M:%S%.f%z")
                .or_else(|_| chrono::DateTime::parse_from_rfc3339(v))
                .ok()
                .map(|d| d.timestamp_millis());
        } else if !line.is_empty() && !line.starts_with('#') {
            if let Some(d) = dur.take() {
                out.push(Listed {
                    file: line.to_string(),
                    duration_ms: d,
                    start_ms: pdt.take(),
                });
            }
            pdt = None;
        }
    }
    out
}

/// `seg_00042.ts` → 42.
pub fn seq_of(file: &str) -> Option<i64> {
    file.strip_prefix("seg_")?.strip_suffix(".ts")?.parse().ok()
}

/// Duration of a segment file in milliseconds, from ffprobe.
async fn probe_duration_ms(ffprobe: &str, path: &Path) -> Option<i64> {
    let out = tokio::process::Command::new(ffprobe)
        .args([
            "-v",
            "error",
            "-show_entries",
            "format=duration",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .kill_on_drop(true)
        .output()
        .await
        .ok()?;
    let s = String::from_utf8_lossy(&out.stdout);
    s.trim()
        .parse::<f64>()
        .ok()
        .map(|d| (d * 1000.0).round() as i64)
}

/// Everything a scan needs, shared with the scan task.
struct Scanner {
    cam: Arc<CameraRuntime>,
    catalog: Arc<Catalog>,
    clock: Arc<dyn Clock>,
    path: String,
}

impl Scanner {
    /// Catalogue every finished, not yet catalogued segment of one session. Returns how many were added.
    async fn scan(&self, session: &str) -> crate::Result<usize> {
        let dir = self.cam.dir.join(session);
        let camera = &self.cam.config.id;
        let known = self.catalog.seqs(camera, session)?;
        let listed = match std::fs::read_to_string(dir.join("index.m3u8")) {
            Ok(text) => parse_ffmpeg_playlist(&text),
            Err(_) => Vec::new(),
        };
        let current = self.cam.progress.current().as_deref() == Some(session);
        let mut added = 0;
        let mut listed_seqs = HashSet::new();
        // ffmpeg stamps PROGRAM-DATE-TIME when its muxer starts, after probing the input (~2 s late, measured);
        // its spacing between segments is exact. Anchor the session at its start (ffmpeg's spawn) instead.
        let anchor = super::session::started_ms(session);
        let first_pdt = listed.iter().find_map(|l| l.start_ms);
        let mut next_start: Option<i64> = anchor;
        for (i, l) in listed.iter().enumerate() {
            let Some(seq) = seq_of(&l.file) else { continue };
            listed_seqs.insert(seq);
            let from_pdt = match (l.start_ms, anchor, first_pdt) {
                (Some(p), Some(a), Some(p0)) => Some(a + (p - p0)),
                (Some(p), None, _) => Some(p),
                _ => None,
            };
            let start = from_pdt
                .or(next_start)
                .unwrap_or_else(|| chrono::Utc::now().timestamp_millis());
            next_start = Some(start + l.duration_ms);
            if known.contains(&seq) {
                continue;
            }
            let file = dir.join(&l.file);
            let Ok(meta) = std::fs::metadata(&file) else {
                continue;
            }; // listed but gone: nothing to record
            let new = NewSegment {
                camera: camera.clone(),
                factory: self.cam.config.factory_id.clone(),
                session: session.to_string(),
                seq,
                path: format!("{camera}/{session}/{}", l.file),
                start_ms: start,
                duration_ms: l.duration_ms,
                bytes: meta.len() as i64,
                first_in_session: i == 0,
            };
            if self.catalog.insert(&new)?.is_some() {
                added += 1;
                self.cam.wake.stage(crate::catalog::Stage::Pin).notify_one();
                self.check_target(&new);
                tracing::debug!(actor = %self.path, %session, seq, duration_ms = l.duration_ms, "segment recorded");
            }
        }
        if current {
            if added > 0 {
                self.cam.progress.bump(session, self.clock.now());
            }
        } else {
            added += self
                .catalog_orphans(session, &dir, &known, &listed_seqs, next_start)
                .await?;
        }
        Ok(added)
    }

    /// Finished session: segment files its playlist never listed (ffmpeg died between rename and playlist
    /// write) are still footage. Time them with ffprobe, after the last listed one.
    async fn catalog_orphans(
        &self,
        session: &str,
        dir: &Path,
        known: &HashSet<i64>,
        listed: &HashSet<i64>,
        mut next_start: Option<i64>,
    ) -> crate::Result<usize> {
        let mut orphans: Vec<(i64, PathBuf)> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_str()?.to_string();
                let seq = seq_of(&name)?;
                (!listed.contains(&seq) && !known.contains(&seq)).then(|| (seq, e.path()))
            })
            .collect();
        orphans.sort();
        let camera = &self.cam.config.id;
        let mut added = 0;
        for (seq, file) in orphans {
            let Some(duration_ms) = probe_duration_ms(&self.cam.ffprobe, &file).await else {
                tracing::warn!(actor = %self.path, file = %file.display(), "unreadable segment file left by an earlier run; not catalogued");
                continue;
            };
            let meta = std::fs::metadata(&file)
                .map_err(|e| crate::Error::io("cannot stat segment", &file, e))?;
            let start = next_start.unwrap_or_else(|| {
                let mtime: chrono::DateTime<chrono::Utc> = meta
                    .modified()
                    .map(Into::into)
                    .unwrap_or_else(|_| chrono::Utc::now());
                mtime.timestamp_millis() - duration_ms
            });
            next_start = Some(start + duration_ms);
            let name = file
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            let new = NewSegment {
                camera: camera.clone(),
                factory: self.cam.config.factory_id.clone(),
                session: session.to_string(),
                seq,
                path: format!("{camera}/{session}/{name}"),
                start_ms: start,
                duration_ms,
                bytes: meta.len() as i64,
                first_in_session: listed.is_empty() && known.is_empty() && added == 0,
            };
            if self.catalog.insert(&new)?.is_some() {
                added += 1;
                self.cam.wake.stage(crate::catalog::Stage::Pin).notify_one();
                tracing::info!(actor = %self.path, %session, seq, "catalogued a finished segment its playlist never listed");
            }
        }
        Ok(added)
    }

    fn check_target(&self, s: &NewSegment) {
        let target = self.cam.config.target_duration() as i64 * 1000;
        if s.duration_ms > target {
            tracing::warn!(actor = %self.path, seq = s.seq, duration_ms = s.duration_ms, target_duration_s = target / 1000,
                "segment longer than the camera's target duration: its keyframe interval is longer than segment_seconds; raise target_duration");
        }
    }
}

/// Watches one camera's folder.
pub struct Watcher {
    scanner: Arc<Scanner>,
    exit: ExitSlot,
    notify: Option<notify::RecommendedWatcher>,
    /// The scan queue; an empty name asks the scan loop to finish.
    queue: Option<mpsc::UnboundedSender<String>>,
}

impl Watcher {
    pub fn new(
        cam: Arc<CameraRuntime>,
        catalog: Arc<Catalog>,
        exit: ExitSlot,
        clock: Arc<dyn Clock>,
        path: String,
    ) -> Self {
        Watcher {
            scanner: Arc::new(Scanner {
                cam,
                catalog,
                clock,
                path,
            }),
            exit,
            notify: None,
            queue: None,
        }
    }
}

impl Actor for Watcher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let cam = self.scanner.cam.clone();
        if let Err(e) = std::fs::create_dir_all(&cam.dir) {
            self.exit
                .fail(format!("cannot create {}: {e}", cam.dir.display()));
            ctx.stop();
            return;
        }
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
        let root = cam.dir.clone();
        let ntx = tx.clone();
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            let Ok(ev) = res else { return };
            if !matches!(
                ev.kind,
                EventKind::Create(_) | EventKind::Modify(notify::event::ModifyKind::Name(_))
            ) {
                return;
            }
            for p in ev.paths {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                if !(name.ends_with(".ts") || name.ends_with(".m3u8")) {
                    continue; // temp files and everything else
                }
                if let Ok(rel) = p.strip_prefix(&root)
                    && let Some(session) =
                        rel.components().next().and_then(|c| c.as_os_str().to_str())
                {
                    let _ = ntx.send(session.to_string());
                }
            }
        })
        .and_then(|mut w| w.watch(&cam.dir, RecursiveMode::Recursive).map(|()| w));
        match watcher {
            Ok(w) => self.notify = Some(w),
            Err(e) => {
                self.exit
                    .fail(format!("cannot watch {}: {e}", cam.dir.display()));
                ctx.stop();
                return;
            }
        }
        // Rescan every session not yet closed at start (a watcher restart misses nothing), then follow
        // notifications.
        let closed = match self.scanner.catalog.closed_sessions(&cam.config.id) {
            Ok(c) => c,
            Err(e) => {
                self.exit.fail(e.to_string());
                ctx.stop();
                return;
            }
        };
        for (session, _) in super::session::list(&cam.dir) {
            if !closed.contains(&session) {
                let _ = tx.send(session);
            }
        }
        let scanner = self.scanner.clone();
        let ticker = {
            let tx = tx.clone();
            let cam = cam.clone();
            let clock = scanner.clock.clone();
            async move {
                loop {
                    clock.sleep(RESCAN_EVERY).await;
                    if let Some(s) = cam.progress.current()
                        && tx.send(s).is_err()
                    {
                        break;
                    }
                }
            }
        };
        ctx.spawn(actix::fut::wrap_future(ticker));
        let scan_loop = async move {
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                while let Ok(s) = rx.try_recv() {
                    if !batch.contains(&s) {
                        batch.push(s);
                    }
                }
                for session in batch {
                    if let Err(e) = scanner.scan(&session).await {
                        return e.to_string();
                    }
                }
            }
            "notification channel closed".to_string()
        };
        ctx.spawn(
            actix::fut::wrap_future(scan_loop).map(|why, act: &mut Self, ctx| {
                act.exit.fail(why);
                ctx.stop();
            }),
        );
    }
}

impl Handler<Terminate> for Watcher {
    type Result = ();
    /// A last scan of every session not yet closed (ffmpeg, stopped before the watcher, has just written its
    /// final segment), then stop.
    fn handle(&mut self, _: Terminate, ctx: &mut Context<Self>) {
        let Some(queue) = &self.queue else {
            ctx.stop();
            return;
        };
        let cam = &self.scanner.cam;
        let closed = self
            .scanner
            .catalog
            .closed_sessions(&cam.config.id)
            .unwrap_or_default();
        for (session, _) in super::session::list(&cam.dir) {
            if !closed.contains(&session) {
                let _ = queue.send(session);
            }
        }
        if queue.send(String::new()).is_err() {
            ctx.stop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ffmpeg_playlists_with_offset_dates_parse() {
        let text = "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:3\n#EXT-X-MEDIA-SEQUENCE:0\n\
            #EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-PROGRAM-DATE-TIME:2026-11-21T16:05:02.123+0000\n\
            #EXTINF:2.933333,\nseg_00000.ts\n#EXT-X-PROGRAM-DATE-TIME:2026-11-21T16:05:05.056+0000\n\
            #EXTINF:2.000000,\nseg_00001.ts\n#EXTINF:2.000000,\nseg_00002.ts\n#EXT-X-ENDLIST\n";
        let l = parse_ffmpeg_playlist(text);
        assert_eq!(l.len(), 3);
        let t0 = chrono::DateTime::parse_from_rfc3339("2026-11-21T16:05:02.123Z")
            .unwrap()
            .timestamp_millis();
        assert_eq!(
            l[0],
            Listed {
                file: "seg_00000.ts".into(),
                duration_ms: 2933,
                start_ms: Some(t0)
            }
        );
        assert_eq!(l[1].start_ms, Some(t0 + 2933));
        assert_eq!(
            l[2].start_ms, None,
            "no date on that line: the scanner derives it"
        );
        assert_eq!(seq_of(&l[2].file), Some(2));
        assert_eq!(seq_of("seg_00002.ts.tmp"), None);
    }
}
