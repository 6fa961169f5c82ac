//! The `Watcher` actor: catalogues a camera's finished segments, one session at a time, in recording order.
//!
//! ffmpeg appends one line per finished segment to its session's `segments.csv` (file, media start, media
//! end). The watcher follows only the session ffmpeg is writing (inotify on that one folder, plus a periodic
//! look in case a notification is lost), reads just the bytes appended since its last read, and catalogues
//! each new segment with its wall-clock start from the session's [`Timeline`]: O(1) per segment, whatever the
//! session's length or the camera's history. A new session's timeline starts no earlier than the session was
//! started and the camera's newest catalogued footage ends (see [`Timeline::not_before`]): a backward clock
//! step is logged, and never lets the camera's timeline go backwards.
//!
//! When a run ends (crash, SIGKILL, stall kill, camera drop), the watcher reads the list's last lines, then
//! looks for segment files the list does not name — the partial segment ffmpeg was writing — checks each with
//! ffprobe and catalogues it as the session's last segment (one that cannot be read is left on disk and
//! logged, never deleted), then closes the session: it is never scanned again. At start it does the same for
//! every session a crash left open (the catalog knows which: no directory listing of the history).
//!
//! All file-system work, ffprobe and catalog calls run off the supervisors' thread; a catalog that is busy
//! or a disk that is full only delays cataloguing (retried with backoff), never recording.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use notify::{EventKind, RecursiveMode, Watcher as _};
use supervisors::{Backoff, BackoffPolicy, Clock, FastRandJitter, Terminate};
use tokio::sync::mpsc;

use super::ffmpeg::{SEGMENT_LIST, segment_name, seq_of};
use super::timeline::{Timeline, observe};
use super::{CameraRuntime, Note, State};
use crate::catalog::{NewSegment, Stage};
use crate::error::{Error, Result};

/// A look at the current session in case a notification was lost (inotify queue overflow).
const TICK: Duration = Duration::from_secs(2);
/// Rows per catalog transaction when a rescan catalogues many at once.
const BATCH: usize = 500;
/// A new session held back by at least this much (s) at the end of the camera's previous one is reported as a
/// backward clock step (less is the usual jitter of observations).
const STEP_REPORTED_S: f64 = 1.0;
/// Longest an ffprobe of a partial segment may take.
const FFPROBE_TIMEOUT: Duration = Duration::from_secs(20);

/// One line of ffmpeg's segment list.
#[derive(Debug, Clone, PartialEq)]
pub struct Listed {
    pub file: String,
    pub seq: i64,
    /// Media time, seconds.
    pub start: f64,
    pub end: f64,
}

/// Parse complete lines of ffmpeg's CSV segment list (`seg_00003.ts,5.933333,7.933333`). Lines that do not
/// parse are skipped.
pub fn parse_list(text: &str) -> Vec<Listed> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.trim().rsplitn(3, ',');
            let end: f64 = f.next()?.parse().ok()?;
            let start: f64 = f.next()?.parse().ok()?;
            let file = f.next()?.trim_matches('"').to_string();
            let seq = seq_of(&file)?;
            (end >= start).then_some(Listed {
                file,
                seq,
                start,
                end,
            })
        })
        .collect()
}

/// Where the watcher is in one session.
#[derive(Debug, Clone, Default)]
pub struct SessionState {
    /// Bytes of the segment list already read (complete lines only).
    offset: u64,
    /// Highest seq catalogued.
    last_seq: Option<i64>,
    /// Seqs catalogued before (only for a session picked up after a restart).
    known: Option<HashSet<i64>>,
    timeline: Timeline,
    /// Wall-clock end (ms) and media end (s) of the last catalogued segment.
    end_ms: Option<i64>,
    media_end: Option<f64>,
    /// Whether a segment of this session was catalogued.
    any: bool,
    /// Whether a backward clock step was reported for this session.
    step_reported: bool,
}

impl SessionState {
    /// A session already followed up to `offset` bytes of its list, last catalogued `last_seq`, anchored
    /// at `anchor_ms` (benchmarks resume a synthetic session this way).
    pub fn following(offset: u64, last_seq: i64, anchor_ms: f64) -> SessionState {
        SessionState {
            offset,
            last_seq: Some(last_seq),
            timeline: Timeline::anchored(anchor_ms),
            any: true,
            ..SessionState::default()
        }
    }

    fn is_new(&self, seq: i64) -> bool {
        self.last_seq.is_none_or(|l| seq > l)
            && !self.known.as_ref().is_some_and(|k| k.contains(&seq))
    }
}

/// Read what ffmpeg appended to the list since `st.offset` and turn each new line into a row (the state is
/// advanced only in the returned copy, committed once the rows are catalogued). Blocking.
fn read_new(
    cam: &CameraRuntime,
    session: &str,
    mut st: SessionState,
    now_ms: i64,
) -> Result<(Vec<NewSegment>, SessionState)> {
    let dir = cam.dir.join(session);
    let list = dir.join(SEGMENT_LIST);
    let mut rows = Vec::new();
    let mut f = match std::fs::File::open(&list) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((rows, st)),
        Err(e) => return Err(Error::io("cannot open the segment list", &list, e)),
    };
    f.seek(SeekFrom::Start(st.offset))
        .map_err(|e| Error::io("cannot read the segment list", &list, e))?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)
        .map_err(|e| Error::io("cannot read the segment list", &list, e))?;
    let Some(last_nl) = buf.iter().rposition(|b| *b == b'\n') else {
        return Ok((rows, st));
    };
    st.offset += last_nl as u64 + 1;
    for mut l in parse_list(&String::from_utf8_lossy(&buf[..=last_nl])) {
        if !st.is_new(l.seq) {
            continue;
        }
        let file = dir.join(&l.file);
        let Ok(meta) = std::fs::metadata(&file) else {
            continue; // listed but gone (deleted by hand): nothing to record
        };
        // The file is created when ffmpeg's muxer starts (at the first packet it received): its birth time
        // goes with the list's own start, its last write with the end.
        let observed = observe(&meta, l.start, l.end);
        if l.start == 0.0 {
            // The list counts a session's first segment from the first packet ffmpeg *received*, but ffmpeg
            // only writes from the first keyframe (a camera that is already streaming is joined mid-GOP):
            // the footage starts later by up to a keyframe interval. Its real length is the file's.
            if let Ok(Some(d)) = probe_duration_blocking(&cam.ffprobe, &file)
                && d < l.end - 0.01
            {
                l.start = l.end - d;
            }
        }
        let start_ms = st.timeline.place(
            l.start,
            l.end - l.start,
            observed,
            now_ms as f64 - l.end * 1000.0,
        );
        let refused_s = st.timeline.refused_ms() / 1000.0;
        if refused_s > 0.0 && !st.step_reported {
            st.step_reported = true;
            tracing::error!(camera = %cam.config.id, %session, step_s = refused_s.round(),
                "camera {}: the wall clock went back by about {refused_s:.0} s, more than the {:.0} s vigil bridges: the footage before was stamped by a clock that was far ahead. This session takes the corrected clock, so its footage overlaps in time with footage stamped before; check the box's clock (NTP) and the footage around the step",
                cam.config.id, super::timeline::MAX_HOLD_MS / 1000.0);
        }
        let held_s = st.timeline.held_back_ms() / 1000.0;
        if held_s >= STEP_REPORTED_S && !st.step_reported {
            st.step_reported = true;
            tracing::warn!(camera = %cam.config.id, %session, step_s = held_s.round(),
                "camera {}: the wall clock went back by about {held_s:.0} s: its new session's footage would start before the session was started or before the camera's previous session ended. It is stamped from there instead, so that the camera's timeline and playlists never go backwards: ahead of the clock by up to {held_s:.0} s, a lead that shrinks by 1.8 s per hour recorded (500 ppm) and ends at the next recording gap longer than it",
                cam.config.id);
        }
        let duration_ms = ((l.end - l.start) * 1000.0).round() as i64;
        rows.push(new_segment(
            cam,
            session,
            l.seq,
            &l.file,
            start_ms,
            duration_ms,
            meta.len(),
            !st.any,
        ));
        st.any = true;
        st.last_seq = Some(l.seq);
        st.end_ms = Some(start_ms + duration_ms);
        st.media_end = Some(l.end);
    }
    Ok((rows, st))
}

/// The watcher's per-segment work, synchronously: read what ffmpeg appended to `session`'s list since `st`,
/// catalogue it, advance `st`. Returns the rows catalogued. (The actor does the same on the blocking pool;
/// benchmarks measure it here.)
pub fn catalogue_appended(
    cam: &CameraRuntime,
    session: &str,
    st: &mut SessionState,
    now_ms: i64,
) -> Result<usize> {
    let (rows, next) = read_new(cam, session, st.clone(), now_ms)?;
    let n = cam.catalog.insert_many(&rows)?.iter().flatten().count();
    *st = next;
    Ok(n)
}

#[allow(clippy::too_many_arguments)]
fn new_segment(
    cam: &CameraRuntime,
    session: &str,
    seq: i64,
    file: &str,
    start_ms: i64,
    duration_ms: i64,
    bytes: u64,
    first: bool,
) -> NewSegment {
    NewSegment {
        camera: cam.config.id.clone(),
        factory: cam.config.factory_id.clone(),
        session: session.to_string(),
        seq,
        path: format!("{}/{session}/{file}", cam.config.id),
        start_ms,
        duration_ms,
        bytes: bytes as i64,
        first_in_session: first,
    }
}

/// Duration of a segment file in seconds, from ffprobe, synchronously (on the blocking pool): `Ok(None)`
/// when ffprobe finds no duration (an unreadable file), `Err` when ffprobe could not run or took longer than
/// [`FFPROBE_TIMEOUT`] (it is killed).
fn probe_duration_blocking(ffprobe: &str, path: &Path) -> std::io::Result<Option<f64>> {
    use std::io::Read as _;
    let mut child = std::process::Command::new(ffprobe)
        .args([
            "-v",
            "error",
            "-show_entries",
            "format=duration",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let deadline = std::time::Instant::now() + FFPROBE_TIMEOUT;
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("ffprobe took longer than {} s", FFPROBE_TIMEOUT.as_secs()),
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut out = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        stdout.read_to_string(&mut out)?;
    }
    Ok(out
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|d| d.is_finite() && *d > 0.0))
}

/// Duration of a segment file in milliseconds, from ffprobe on the blocking pool (see
/// [`probe_duration_blocking`]).
async fn probe_duration_ms(ffprobe: &str, path: &Path) -> std::io::Result<Option<i64>> {
    let (ffprobe, path) = (ffprobe.to_string(), path.to_path_buf());
    let d = tokio::task::spawn_blocking(move || probe_duration_blocking(&ffprobe, &path))
        .await
        .map_err(std::io::Error::other)??;
    Ok(d.map(|d| (d * 1000.0).round() as i64))
}

/// The watcher's working loop and everything it needs.
struct Scanner {
    cam: Arc<CameraRuntime>,
    clock: Arc<dyn Clock>,
    path: String,
    /// The inotify watcher (the loop adds and removes the watch on the current session's folder).
    notify: Arc<Mutex<Option<notify::RecommendedWatcher>>>,
    sessions: HashMap<String, SessionState>,
    current: Option<String>,
}

impl Scanner {
    fn now_ms(&self) -> i64 {
        chrono::DateTime::<chrono::Utc>::from(self.clock.wall()).timestamp_millis()
    }

    /// Run a step until it succeeds or fails for good: transient failures (a busy catalog, a full disk) are
    /// retried with backoff, however long they last; capture is not affected.
    async fn retry<T, F, Fut>(&self, what: &str, mut step: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let mut backoff = Backoff::new(BackoffPolicy {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(10),
            factor: 2.0,
            jitter: 0.2,
            reset_after: Duration::ZERO,
            immediate_after_healthy: false,
        });
        let jitter = FastRandJitter::new();
        loop {
            match step().await {
                Ok(v) => {
                    if backoff.attempt() > 0 {
                        tracing::info!(actor = %self.path, "{what}: succeeded after {} retries", backoff.attempt());
                    }
                    return Ok(v);
                }
                Err(e) if e.is_transient() => {
                    let (attempt, delay) = backoff.next_delay(&jitter);
                    if attempt == 1 || attempt % 10 == 0 {
                        tracing::warn!(actor = %self.path, attempt, delay_ms = delay.as_millis() as u64, "{what}: {e}; retrying (recording goes on)");
                    }
                    if matches!(&e, Error::Io { source, .. } if source.raw_os_error() == Some(nix::libc::ENOSPC))
                        || matches!(&e, Error::Sql(s) if s.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull))
                    {
                        let now = self.now_ms();
                        super::ffmpeg::announce(&self.cam, State::DiskFull, &e.to_string(), now);
                    }
                    self.clock.sleep(delay).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Catalogue rows (in batches), then wake the pipeline.
    async fn catalogue(&self, rows: Vec<NewSegment>) -> Result<usize> {
        let mut added = 0;
        for chunk in rows.chunks(BATCH) {
            let chunk = chunk.to_vec();
            let catalog = self.cam.catalog.clone();
            let inserted = self
                .retry("cataloguing segments", || {
                    let (catalog, chunk) = (catalog.clone(), chunk.clone());
                    async move { catalog.run(move |c| c.insert_many(&chunk)).await }
                })
                .await?;
            let now = self.now_ms();
            for (row, ins) in chunk.iter().zip(inserted) {
                if let Some(ins) = ins {
                    added += 1;
                    self.cam
                        .status
                        .update(|s| s.footage(row.start_ms, row.duration_ms));
                    let age = (now - row.start_ms - row.duration_ms).max(0) as u64;
                    self.cam.metrics.stage_done(
                        "recorded",
                        None,
                        std::time::Duration::from_millis(age),
                    );
                    self.check_target(row);
                    tracing::debug!(actor = %self.path, session = %row.session, seq = row.seq, duration_ms = row.duration_ms, live = ins.live, "segment catalogued");
                }
            }
        }
        if added > 0 {
            self.cam.wake.stage(Stage::Pin).notify_one();
            let now = self.now_ms();
            self.cam.status.update(|s| s.last_segment_ms = Some(now));
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

    /// Catalogue what ffmpeg appended to `session`'s list.
    async fn follow(&mut self, session: &str) -> Result<()> {
        let Some(st) = self.sessions.get(session).cloned() else {
            return Ok(());
        };
        let (cam, name, now) = (self.cam.clone(), session.to_string(), self.now_ms());
        let (rows, st) = self
            .retry("reading the segment list", || {
                let (cam, name, st) = (cam.clone(), name.clone(), st.clone());
                async move {
                    tokio::task::spawn_blocking(move || read_new(&cam, &name, st, now))
                        .await
                        .map_err(|e| Error::Internal(format!("segment list task: {e}")))?
                }
            })
            .await?;
        self.catalogue(rows).await?;
        self.sessions.insert(session.to_string(), st);
        Ok(())
    }

    /// The state of a session picked up after a restart: what is catalogued, and its timeline.
    async fn resume(&self, session: &str) -> Result<SessionState> {
        let (camera, name) = (self.cam.config.id.clone(), session.to_string());
        let catalog = self.cam.catalog.clone();
        let (known, last) = self
            .retry("reading the catalog", || {
                let (catalog, camera, name) = (catalog.clone(), camera.clone(), name.clone());
                async move {
                    catalog
                        .run(move |c| {
                            Ok((c.seqs(&camera, &name)?, c.last_of_session(&camera, &name)?))
                        })
                        .await
                }
            })
            .await?;
        let mut st = SessionState {
            any: !known.is_empty(),
            // Retention may have deleted the oldest: the partial segment is looked for after the newest.
            last_seq: known.iter().max().copied(),
            known: Some(known),
            ..SessionState::default()
        };
        if let Some(last) = last {
            // Anchor from the last catalogued segment and its line in the list.
            let list = self.cam.dir.join(session).join(SEGMENT_LIST);
            let text = tokio::task::spawn_blocking(move || {
                std::fs::read_to_string(list).unwrap_or_default()
            })
            .await
            .unwrap_or_default();
            if let Some(l) = parse_list(&text).into_iter().find(|l| l.seq == last.seq) {
                st.timeline = Timeline::anchored(last.start_ms as f64 - l.start * 1000.0);
            }
            st.end_ms = Some(last.start_ms + last.duration_ms);
        }
        Ok(st)
    }

    /// ffmpeg starts recording into `session`.
    async fn start(&mut self, session: &str) -> Result<()> {
        let (catalog, camera, name) = (
            self.cam.catalog.clone(),
            self.cam.config.id.clone(),
            session.to_string(),
        );
        // Where the camera's footage ends so far: the new session never starts before it (the clock may have
        // stepped back since) nor before it was started (the clock may step back while it settles).
        let latest = self
            .retry("registering the session", || {
                let (catalog, camera, name) = (catalog.clone(), camera.clone(), name.clone());
                async move {
                    catalog
                        .run(move |c| {
                            c.open_session(&camera, &name)?;
                            c.latest(&camera)
                        })
                        .await
                }
            })
            .await?;
        let dir = self.cam.dir.join(session);
        if let Some(Err(e)) = self.with_inotify(|w| w.watch(&dir, RecursiveMode::NonRecursive)) {
            tracing::warn!(actor = %self.path, "cannot watch {}: {e}; looking every {} s instead", dir.display(), TICK.as_secs());
        }
        // Nothing of it can have been recorded before its folder was made (ffmpeg is spawned after), nor before
        // the camera's footage so far ends.
        let floor = latest
            .map(|l| l.start_ms + l.duration_ms)
            .into_iter()
            .chain(super::session::started_ms(session))
            .max();
        let timeline = floor.map_or_else(Timeline::default, |f| Timeline::not_before(f as f64));
        self.sessions.insert(
            session.to_string(),
            SessionState {
                timeline,
                ..SessionState::default()
            },
        );
        self.current = Some(session.to_string());
        Ok(())
    }

    /// Runs `f` on the inotify watcher, if inotify could be started (else `None`: the periodic look covers).
    fn with_inotify<T>(&self, f: impl FnOnce(&mut notify::RecommendedWatcher) -> T) -> Option<T> {
        self.notify
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
            .map(f)
    }

    /// ffmpeg's run into `session` is over (or it was left open by a crash): catalogue the rest, the partial
    /// last segment included, and close it.
    async fn finish(&mut self, session: &str) -> Result<()> {
        if self.current.as_deref() == Some(session) {
            self.current = None;
        }
        let dir = self.cam.dir.join(session);
        let _ = self.with_inotify(|w| w.unwatch(&dir));
        if !self.sessions.contains_key(session) {
            let st = self.resume(session).await?;
            self.sessions.insert(session.to_string(), st);
        }
        self.follow(session).await?;
        let mut st = self.sessions.remove(session).unwrap_or_default();
        // Segment files the list does not name: the one ffmpeg was writing when it ended (rarely more).
        let mut seq = st.last_seq.map_or(0, |l| l + 1);
        let mut rows = Vec::new();
        loop {
            let file = dir.join(segment_name(seq));
            let meta = {
                let file = file.clone();
                tokio::task::spawn_blocking(move || std::fs::metadata(file).ok())
                    .await
                    .ok()
                    .flatten()
            };
            let Some(meta) = meta else { break };
            if !st.is_new(seq) {
                seq += 1;
                continue;
            }
            match probe_duration_ms(&self.cam.ffprobe, &file).await {
                Err(e) => {
                    // Not the file's fault: keep the session open; it is finished again at the next start.
                    self.catalogue(rows).await?;
                    return Err(Error::io(
                        "cannot check a partial segment with ffprobe",
                        &file,
                        e,
                    ));
                }
                Ok(Some(duration_ms)) => {
                    let media_start = st.media_end.unwrap_or(0.0);
                    let fallback_anchor = meta
                        .modified()
                        .ok()
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .map_or(self.now_ms() as f64, |d| d.as_secs_f64() * 1000.0)
                        - duration_ms as f64
                        - media_start * 1000.0;
                    let start_ms = match st.end_ms {
                        Some(end) => end,
                        None => st.timeline.place(
                            media_start,
                            duration_ms as f64 / 1000.0,
                            None,
                            fallback_anchor,
                        ),
                    };
                    rows.push(new_segment(
                        &self.cam,
                        session,
                        seq,
                        &segment_name(seq),
                        start_ms,
                        duration_ms,
                        meta.len(),
                        !st.any,
                    ));
                    tracing::info!(actor = %self.path, %session, seq, duration_ms, "catalogued the partial last segment of an ended ffmpeg run");
                    st.any = true;
                    st.last_seq = Some(seq);
                    st.end_ms = Some(start_ms + duration_ms);
                    st.media_end = Some(media_start + duration_ms as f64 / 1000.0);
                }
                Ok(None) if meta.len() == 0 => {
                    tracing::debug!(actor = %self.path, file = %file.display(), "empty segment file left by an ended run (no footage)");
                }
                Ok(None) => {
                    tracing::warn!(actor = %self.path, file = %file.display(), bytes = meta.len(), "segment file left by an ended run is unreadable (ffprobe finds no duration): set aside, not catalogued, left on disk");
                }
            }
            seq += 1;
        }
        self.catalogue(rows).await?;
        let (catalog, camera, name) = (
            self.cam.catalog.clone(),
            self.cam.config.id.clone(),
            session.to_string(),
        );
        let empty = !st.any;
        self.retry("closing the session", || {
            let (catalog, camera, name) = (catalog.clone(), camera.clone(), name.clone());
            async move {
                catalog
                    .run(move |c| {
                        c.close_session(&camera, &name)?;
                        if empty {
                            c.drop_session(&camera, &name)?;
                        }
                        Ok(())
                    })
                    .await
            }
        })
        .await?;
        if empty {
            // A run that recorded nothing (camera unreachable) leaves no folder: a day-long outage would
            // otherwise leave thousands of empty ones.
            let d = dir.clone();
            let _ = tokio::task::spawn_blocking(move || {
                let has_media = std::fs::read_dir(&d)
                    .map(|entries| {
                        entries.flatten().any(|e| {
                            e.file_name().to_string_lossy().ends_with(".ts")
                                && e.metadata().is_ok_and(|m| m.len() > 0)
                        })
                    })
                    .unwrap_or(true);
                if !has_media {
                    let _ = std::fs::remove_dir_all(&d);
                }
            })
            .await;
        }
        Ok(())
    }

    /// Handle one note; errors that are not transient are logged and the note dropped (one bad file must not
    /// stop the camera's cataloguing).
    async fn handle(&mut self, note: Note) {
        let (what, r) = match &note {
            Note::Started(s) => ("starting", self.start(s).await),
            Note::Changed(s) => ("following", self.follow(s).await),
            Note::Ended(s) => ("finishing", self.finish(s).await),
            Note::Quit => return,
        };
        if let Err(e) = r {
            tracing::error!(actor = %self.path, "{what} a session failed: {e}; going on");
        }
    }

    /// Once per camera (the first start with this catalog): session folders the catalog does not know (left
    /// by an older vigil, or by a crash before the session was registered) are registered as open, so that
    /// they are finished like any other. O(folders), once ever, on the blocking pool.
    async fn adopt_unknown_folders(&self) -> Result<()> {
        let (catalog, camera, dir) = (
            self.cam.catalog.clone(),
            self.cam.config.id.clone(),
            self.cam.dir.clone(),
        );
        let path = self.path.clone();
        self.retry("registering earlier session folders", || {
            let (catalog, camera, dir, path) = (catalog.clone(), camera.clone(), dir.clone(), path.clone());
            async move {
                catalog
                    .run(move |c| {
                        let key = format!("adopted-folders:{camera}");
                        if c.flag(&key)? {
                            return Ok(());
                        }
                        let mut adopted = 0;
                        for (session, _) in super::session::list(&dir) {
                            if c.session_closed(&camera, &session)?.is_none() {
                                c.open_session(&camera, &session)?;
                                adopted += 1;
                            }
                        }
                        if adopted > 0 {
                            tracing::info!(actor = %path, adopted, "session folders unknown to the catalog are registered and will be catalogued");
                        }
                        c.set_flag(&key)
                    })
                    .await
            }
        })
        .await
    }

    /// The loop: sessions left open by a crash first, then notes in order.
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Note>) {
        if let Err(e) = self.adopt_unknown_folders().await {
            tracing::error!(actor = %self.path, "{e}");
        }
        let (catalog, camera) = (self.cam.catalog.clone(), self.cam.config.id.clone());
        let open = self
            .retry("listing open sessions", || {
                let (catalog, camera) = (catalog.clone(), camera.clone());
                async move { catalog.run(move |c| c.open_sessions(&camera)).await }
            })
            .await
            .unwrap_or_default();
        for s in open {
            // The running ffmpeg's own new session is open too, but it is not a leftover.
            if self.cam.live_session().as_deref() == Some(s.as_str()) {
                continue;
            }
            self.handle(Note::Ended(s)).await;
        }
        loop {
            let note = tokio::select! {
                n = rx.recv() => n,
                () = self.clock.sleep(TICK) => self.current.clone().map(Note::Changed),
            };
            let Some(first) = note else { continue };
            // Coalesce a burst of notifications about the same session.
            let mut batch = vec![first];
            while let Ok(n) = rx.try_recv() {
                if !(matches!(n, Note::Changed(_)) && batch.contains(&n)) {
                    batch.push(n);
                }
            }
            for note in batch {
                if note == Note::Quit {
                    return;
                }
                self.handle(note).await;
            }
        }
    }
}

/// Watches one camera's current session.
pub struct Watcher {
    cam: Arc<CameraRuntime>,
    clock: Arc<dyn Clock>,
    path: String,
    queue: Option<mpsc::UnboundedSender<Note>>,
}

impl Watcher {
    /// The watcher never fails on its own: what goes wrong is retried (transient) or logged and skipped.
    pub fn new(cam: Arc<CameraRuntime>, clock: Arc<dyn Clock>, path: String) -> Self {
        Watcher {
            cam,
            clock,
            path,
            queue: None,
        }
    }
}

impl Actor for Watcher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let (tx, rx) = mpsc::unbounded_channel::<Note>();
        let root: PathBuf = self.cam.dir.clone();
        let ntx = tx.clone();
        // Only two kinds of events matter: the list grew (a segment finished), a segment file appeared.
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            let Ok(ev) = res else { return };
            let relevant = |p: &Path| {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                match ev.kind {
                    EventKind::Modify(_) => name == SEGMENT_LIST,
                    EventKind::Create(_) => name.ends_with(".ts") || name == SEGMENT_LIST,
                    _ => false,
                }
            };
            for p in ev.paths.iter().filter(|p| relevant(p)) {
                if let Ok(rel) = p.strip_prefix(&root)
                    && let Some(session) =
                        rel.components().next().and_then(|c| c.as_os_str().to_str())
                {
                    let _ = ntx.send(Note::Changed(session.to_string()));
                }
            }
        });
        let watcher = match watcher {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(actor = %self.path, "cannot start inotify for {}: {e}; looking for new segments every {} s instead", self.cam.dir.display(), TICK.as_secs());
                None
            }
        };
        *self.cam.inbox.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx.clone());
        self.queue = Some(tx);
        let scanner = Scanner {
            cam: self.cam.clone(),
            clock: self.clock.clone(),
            path: self.path.clone(),
            notify: Arc::new(Mutex::new(watcher)),
            sessions: HashMap::new(),
            current: None,
        };
        ctx.spawn(actix::fut::wrap_future(scanner.run(rx)).map(|(), _: &mut Self, ctx| ctx.stop()));
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        let mut inbox = self.cam.inbox.lock().unwrap_or_else(|p| p.into_inner());
        if inbox
            .as_ref()
            .is_some_and(|q| self.queue.as_ref().is_some_and(|mine| q.same_channel(mine)))
        {
            *inbox = None;
        }
    }
}

impl Handler<Terminate> for Watcher {
    type Result = ();
    /// Finish what is queued (ffmpeg, stopped before the watcher, has just ended its session: its last
    /// segment is catalogued), then stop.
    fn handle(&mut self, _: Terminate, ctx: &mut Context<Self>) {
        match &self.queue {
            Some(q) if q.send(Note::Quit).is_ok() => {}
            _ => ctx.stop(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_segment_list_parses_line_by_line() {
        let text = "seg_00000.ts,0.000000,2.000000\nseg_00001.ts,2.000000,4.000000\n\"seg_00002.ts\",4.0,5.5\nbroken\nseg_x.ts,1,2\n";
        let l = parse_list(text);
        assert_eq!(l.len(), 3);
        assert_eq!(
            l[1],
            Listed {
                file: "seg_00001.ts".into(),
                seq: 1,
                start: 2.0,
                end: 4.0
            }
        );
        assert_eq!(l[2].file, "seg_00002.ts");
    }
}
