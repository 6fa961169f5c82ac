//! The transcoder role: jobs (started and stopped by control-plane commands) that turn each new segment of a
//! source camera into lower renditions with ffmpeg, add them to IPFS (pinned), and index them as variants of
//! the source segment (`variants` in MongoDB, or the catalog). The web serves a master playlist with the
//! source and its variants (`/cameras/<id>/master.m3u8`).
//!
//! The `transcoder` child follows the index, not a pubsub topic: for each job it asks for the camera's
//! segments newer than the last one it transcoded (one range query from a cursor, so a round costs the new
//! segments, not the history), reads each from this node's disk when it has it and through IPFS otherwise, and
//! resumes after a restart from the newest variant in the catalog. A segment ffmpeg cannot read is skipped (and
//! said); an IPFS or index outage pauses the job and retries with backoff.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use supervisors::{
    Backoff, BackoffPolicy, ChildHandle, ChildSpec, Clock, ExitReason, FastRandJitter,
};
use tokio_util::sync::CancellationToken;

use crate::catalog::Catalog;
use crate::index::{IndexDoc, Scope, VariantDoc};
use crate::ipfs::kubo::Kubo;

/// At most this many renditions per job.
pub const MAX_RENDITIONS: usize = 4;
/// How often an idle transcoder looks for new segments.
const POLL: Duration = Duration::from_secs(1);
/// How often old renditions are deleted.
const SWEEP_EVERY: Duration = Duration::from_secs(600);
/// Tries of one source segment before it is skipped.
const MAX_ATTEMPTS: u32 = 5;
/// How much source time one index query of a job covers.
const CATCH_UP_MS: i64 = 600_000;
/// The longest one segment's transcoding may take.
const FFMPEG_TIMEOUT: Duration = Duration::from_secs(120);

/// One rung of a job's ladder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rendition {
    /// Its name in URLs: 1 to 16 of `a-z`, `0-9`, `-`, `_` (e.g. `360p`).
    pub name: String,
    pub width: u32,
    pub height: u32,
    pub video_kbps: u32,
}

/// A transcoding job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    /// The source camera.
    pub camera: String,
    pub ladder: Vec<Rendition>,
    /// When it started (ms): the first source segment transcoded is the one running then.
    pub started_ms: i64,
}

/// `job.start`'s `public` part: `{job_id, camera, ladder: [{name, width, height, video_kbps}]}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobStart {
    pub job_id: String,
    pub camera: String,
    pub ladder: Vec<Rendition>,
}

/// 1 to `max` of `a-z`, `0-9`, `-`, `_` (job ids, rendition names).
fn name_ok(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Is `name` a rendition name (as a ladder gives it, and as URLs name it)?
pub fn rendition_name_ok(name: &str) -> bool {
    name_ok(name, 16)
}

impl JobStart {
    /// Every problem of the request, in plain words.
    pub fn check(&self) -> Result<(), String> {
        let mut p = Vec::new();
        if !name_ok(&self.job_id, 64) {
            p.push("public.job_id: 1 to 64 of a-z, 0-9, '-', '_'".to_string());
        }
        if self.camera.is_empty()
            || self.camera.len() > 64
            || !self
                .camera
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            p.push("public.camera: a camera id (1 to 64 of letters, digits, '-', '_')".to_string());
        }
        if self.ladder.is_empty() || self.ladder.len() > MAX_RENDITIONS {
            p.push(format!(
                "public.ladder: 1 to {MAX_RENDITIONS} renditions, got {}",
                self.ladder.len()
            ));
        }
        for (i, r) in self.ladder.iter().enumerate() {
            if !name_ok(&r.name, 16) {
                p.push(format!(
                    "public.ladder[{i}].name: 1 to 16 of a-z, 0-9, '-', '_'"
                ));
            }
            if self.ladder[..i].iter().any(|o| o.name == r.name) {
                p.push(format!(
                    "public.ladder[{i}].name: {:?} appears twice",
                    r.name
                ));
            }
            if !(16..=3840).contains(&r.width) || r.width % 2 != 0 {
                p.push(format!(
                    "public.ladder[{i}].width: an even number from 16 to 3840, got {}",
                    r.width
                ));
            }
            if !(16..=2160).contains(&r.height) || r.height % 2 != 0 {
                p.push(format!(
                    "public.ladder[{i}].height: an even number from 16 to 2160, got {}",
                    r.height
                ));
            }
            if !(32..=50_000).contains(&r.video_kbps) {
                p.push(format!(
                    "public.ladder[{i}].video_kbps: 32 to 50000, got {}",
                    r.video_kbps
                ));
            }
        }
        if p.is_empty() {
            Ok(())
        } else {
            Err(p.join("; "))
        }
    }
}

/// The running jobs, shared by the control plane (which starts and stops them) and the transcoder child.
#[derive(Debug, Default)]
pub struct Jobs {
    map: Mutex<BTreeMap<String, Job>>,
    changed: tokio::sync::Notify,
}

impl Jobs {
    pub fn from(jobs: Vec<Job>) -> Jobs {
        Jobs {
            map: Mutex::new(jobs.into_iter().map(|j| (j.id.clone(), j)).collect()),
            changed: tokio::sync::Notify::new(),
        }
    }

    pub fn list(&self) -> Vec<Job> {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    pub fn get(&self, id: &str) -> Option<Job> {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Add or replace a job (the transcoder picks it up at once).
    pub fn put(&self, job: Job) {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(job.id.clone(), job);
        self.changed.notify_one();
    }

    /// Remove a job; returns it.
    pub fn remove(&self, id: &str) -> Option<Job> {
        let j = self
            .map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        self.changed.notify_one();
        j
    }

    /// The jobs as stored in the catalog (`control_meta` key `jobs`).
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.list()).unwrap_or_else(|_| "[]".into())
    }
}

/// What the transcoder uses.
pub struct Deps {
    pub jobs: Arc<Jobs>,
    pub catalog: Arc<Catalog>,
    pub index: Arc<crate::index::Shared>,
    pub kubo: Kubo,
    pub data_dir: PathBuf,
    pub node_id: String,
    pub ffmpeg: String,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Renditions are deleted (and unpinned) once their source is this old.
    pub keep: Duration,
}

/// The `transcoder` child of `services`.
pub fn child_spec(deps: Arc<Deps>) -> ChildSpec {
    ChildSpec::worker("transcoder", move |cx| {
        let stop = CancellationToken::new();
        let run = run(deps.clone(), cx.clock(), cx.path.clone(), stop.clone());
        Ok(ChildHandle::task(run, move || stop.cancel()))
    })
    .about("transcoder role: each new segment of a job's camera → its renditions (ffmpeg) → IPFS → index")
}

/// Why one segment was not transcoded.
enum Failure {
    /// A dependency (IPFS, the index, the disk) is not there: retry later.
    Retry(String),
    /// The segment cannot be transcoded (ffmpeg refuses it): skip it.
    Skip(String),
}

async fn run(
    deps: Arc<Deps>,
    clock: Arc<dyn Clock>,
    path: String,
    stop: CancellationToken,
) -> ExitReason {
    let jitter = FastRandJitter::new();
    let mut backoff = Backoff::new(BackoffPolicy {
        initial: Duration::from_secs(1),
        max: Duration::from_secs(30),
        ..BackoffPolicy::default()
    });
    // Per job: the start of the newest source segment done.
    let mut cursors: BTreeMap<String, i64> = BTreeMap::new();
    // Per source segment: failed attempts that may pass (IPFS, the index, the disk).
    let mut attempts: BTreeMap<String, u32> = BTreeMap::new();
    tracing::info!(actor = %path, jobs = deps.jobs.len(), "transcoder running");
    let mut swept: Option<std::time::Instant> = None;
    loop {
        if swept.is_none_or(|t| t.elapsed() >= SWEEP_EVERY) {
            swept = Some(std::time::Instant::now());
            match sweep(&deps).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(actor = %path, variants = n, keep_days = deps.keep.as_secs() / 86_400,
                    "deleted and unpinned renditions older than their keep time")
                }
                Err(e) => {
                    tracing::warn!(actor = %path, "renditions could not be swept ({e}); trying again in {} min",
                    SWEEP_EVERY.as_secs() / 60)
                }
            }
        }
        let jobs = deps.jobs.list();
        cursors.retain(|id, _| jobs.iter().any(|j| &j.id == id));
        let mut worked = false;
        let mut retry: Option<String> = None;
        // A job that has to wait does not hold up the others.
        for job in &jobs {
            if stop.is_cancelled() {
                return ExitReason::Normal;
            }
            match round(&deps, job, &mut cursors, &mut attempts, &path).await {
                Ok(n) => worked |= n > 0,
                Err(why) => retry = Some(format!("job {}: {why}", job.id)),
            }
        }
        if let Some(why) = retry {
            let (attempt, delay) = backoff.next_delay(&jitter);
            tracing::warn!(actor = %path, attempt, delay_ms = delay.as_millis() as u64,
                "transcoding paused: {why}; trying again after the delay");
            tokio::select! {
                _ = clock.sleep(delay) => {}
                _ = stop.cancelled() => return ExitReason::Normal,
            }
            continue;
        }
        backoff.reset();
        if !worked {
            tokio::select! {
                _ = clock.sleep(POLL) => {}
                _ = deps.jobs.changed.notified() => {}
                _ = stop.cancelled() => return ExitReason::Normal,
            }
        }
    }
}

/// One look at one job: transcode up to a few new source segments. Returns how many were done.
async fn round(
    deps: &Arc<Deps>,
    job: &Job,
    cursors: &mut BTreeMap<String, i64>,
    attempts: &mut BTreeMap<String, u32>,
    path: &str,
) -> Result<usize, String> {
    let cursor = match cursors.get(&job.id) {
        Some(c) => *c,
        None => {
            let id = job.id.clone();
            let resume = deps
                .catalog
                .run(move |c| c.job_resume_point(&id))
                .await
                .map_err(|e| e.to_string())?;
            // A new job starts with the segment running when it was started.
            let c = resume.unwrap_or(job.started_ms - 60_000);
            cursors.insert(job.id.clone(), c);
            c
        }
    };
    let index = deps.index.get().await.map_err(|e| e.to_string())?;
    let now = chrono::Utc::now().timestamp_millis();
    // At most ten minutes of source per query: a job that was off for days catches up in steps, never with one
    // query over the whole stretch.
    let upto = (cursor + CATCH_UP_MS).min(now + 60_000);
    let docs = index
        .range(&Scope::Device(job.camera.clone()), cursor + 1, upto)
        .await
        .map_err(|e| e.to_string())?;
    if docs.is_empty() && upto < now {
        // Nothing in this stretch: go on from the next segment the index has (not past it: segments are
        // indexed in order, and a recorder's indexer may be behind).
        return match index
            .first_after(&job.camera, cursor)
            .await
            .map_err(|e| e.to_string())?
        {
            Some(next) => {
                cursors.insert(job.id.clone(), next - 1);
                Ok(1)
            }
            None => Ok(0),
        };
    }
    let mut done = 0;
    // A few per round, so that other jobs and a stop are not held up.
    for doc in docs.iter().filter(|d| d.end_ms > job.started_ms).take(4) {
        let t = std::time::Instant::now();
        match transcode(deps, job, doc).await {
            Ok(n) => {
                tracing::info!(actor = %path, job = %job.id, segment = %doc.id, renditions = n,
                    took_ms = t.elapsed().as_millis() as u64, "transcoded");
                let age = chrono::Utc::now().timestamp_millis() - doc.end_ms;
                deps.metrics.stage_done(
                    "transcode",
                    Some(t.elapsed()),
                    Duration::from_millis(age.max(0) as u64),
                );
            }
            Err(Failure::Skip(why)) => {
                tracing::warn!(actor = %path, job = %job.id, segment = %doc.id,
                    "cannot transcode this segment ({why}); skipping it");
                deps.metrics.set_aside();
            }
            Err(Failure::Retry(why)) => {
                let n = attempts.entry(doc.id.clone()).or_insert(0);
                *n += 1;
                if *n < MAX_ATTEMPTS {
                    return Err(why);
                }
                // Not coming back (e.g. its source was unpinned everywhere before the job got to it).
                tracing::warn!(actor = %path, job = %job.id, segment = %doc.id, attempts = *n,
                    "cannot transcode this segment after {MAX_ATTEMPTS} tries ({why}); skipping it");
                deps.metrics.set_aside();
            }
        }
        attempts.remove(&doc.id);
        cursors.insert(job.id.clone(), doc.start_ms);
        done += 1;
    }
    // Segments that ended before the job started are passed over.
    if let Some(last) = docs
        .iter()
        .filter(|d| d.end_ms <= job.started_ms)
        .map(|d| d.start_ms)
        .max()
        && done == 0
    {
        cursors.insert(job.id.clone(), last);
    }
    Ok(done)
}

/// Delete the renditions whose source is older than `keep`: their files, their pins, their index documents
/// and catalog rows, in batches (an indexed query each). Returns how many.
async fn sweep(deps: &Arc<Deps>) -> crate::Result<usize> {
    let before = chrono::Utc::now().timestamp_millis() - deps.keep.as_millis() as i64;
    let index = deps.index.get().await?;
    let mut total = 0;
    loop {
        let old = deps
            .catalog
            .run(move |c| c.old_variants(before, 500))
            .await?;
        if old.is_empty() {
            return Ok(total);
        }
        for (_, cid, path) in &old {
            if let Some(p) = path {
                let _ = tokio::fs::remove_file(deps.data_dir.join(p)).await;
            }
            // Not pinned (any more) is as good as unpinned.
            if let Err(e) = deps.kubo.pin_rm(cid).await
                && e.is_transient()
            {
                return Err(e);
            }
        }
        let ids: Vec<String> = old.into_iter().map(|(id, _, _)| id).collect();
        index.delete_variants(&ids).await?;
        total += ids.len();
        deps.catalog.run(move |c| c.delete_variants(&ids)).await?;
    }
}

/// The source segment's bytes in a file: this node's copy, else fetched through IPFS into `tmp`.
async fn source_file(deps: &Deps, doc: &IndexDoc, tmp: &Path) -> Result<PathBuf, Failure> {
    let cid = doc.cid.clone();
    let local = deps
        .catalog
        .run(move |c| c.by_cid(&cid))
        .await
        .map_err(|e| Failure::Retry(e.to_string()))?;
    if let Some(row) = local {
        let p = deps.data_dir.join(&row.path);
        if p.is_file() {
            return Ok(p);
        }
    }
    let bytes = deps
        .kubo
        .cat_bytes(&doc.cid)
        .await
        .map_err(|e| Failure::Retry(format!("fetching {} through IPFS: {e}", doc.cid)))?;
    tokio::fs::write(tmp, bytes)
        .await
        .map_err(|e| Failure::Retry(format!("writing {}: {e}", tmp.display())))?;
    Ok(tmp.to_path_buf())
}

/// `<data>/variants/<camera>/<job>/<rendition>/<session>/seg_<seq>.ts`; `None` when the index names the session
/// with anything but letters, digits, `-`, `_`, `.` (never a path outside the data folder).
fn variant_path(job: &Job, r: &Rendition, doc: &IndexDoc) -> Option<String> {
    let safe = !doc.session.is_empty()
        && doc.session.len() <= 128
        && !doc.session.starts_with('.')
        && doc
            .session
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    safe.then(|| {
        format!(
            "variants/{}/{}/{}/{}/seg_{:05}.ts",
            job.camera, job.id, r.name, doc.session, doc.seq
        )
    })
}

/// The ffmpeg arguments that make every rendition of `input` in one run (source timestamps kept, so the
/// variants line up with the source and each other).
pub fn ffmpeg_args(input: &Path, outputs: &[(&Rendition, PathBuf)]) -> Vec<String> {
    let mut a: Vec<String> = [
        "-nostdin",
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-copyts",
        "-i",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.push(input.display().to_string());
    for (r, out) in outputs {
        let k = r.video_kbps;
        a.extend([
            "-map".to_string(),
            "0:v:0".into(),
            "-map".into(),
            "0:a?".into(),
            "-vf".into(),
            format!("scale={}:{}", r.width, r.height),
            "-c:v".into(),
            "libx264".into(),
            "-preset".into(),
            "veryfast".into(),
            "-profile:v".into(),
            "main".into(),
            "-pix_fmt".into(),
            "yuv420p".into(),
            "-b:v".into(),
            format!("{k}k"),
            "-maxrate".into(),
            format!("{k}k"),
            "-bufsize".into(),
            format!("{}k", 2 * k),
            "-c:a".into(),
            "aac".into(),
            "-b:a".into(),
            "96k".into(),
            "-muxdelay".into(),
            "0".into(),
            "-f".into(),
            "mpegts".into(),
        ]);
        a.push(out.display().to_string());
    }
    a
}

/// Transcode one source segment into every rendition of `job`, add, pin, catalogue and index each.
async fn transcode(deps: &Arc<Deps>, job: &Job, doc: &IndexDoc) -> Result<usize, Failure> {
    let tmp_dir = deps.data_dir.join("variants").join(".tmp");
    tokio::fs::create_dir_all(&tmp_dir)
        .await
        .map_err(|e| Failure::Retry(format!("creating {}: {e}", tmp_dir.display())))?;
    let fetched = tmp_dir.join(format!("{}-source.ts", job.id));
    let input = source_file(deps, doc, &fetched).await?;
    let mut outputs = Vec::new();
    for r in &job.ladder {
        let Some(rel) = variant_path(job, r, doc) else {
            return Err(Failure::Skip(format!(
                "session name {:?} is not a folder name",
                doc.session
            )));
        };
        let full = deps.data_dir.join(&rel);
        if let Some(dir) = full.parent() {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| Failure::Retry(format!("creating {}: {e}", dir.display())))?;
        }
        outputs.push((r, rel, full));
    }
    let tmp_outs: Vec<(&Rendition, PathBuf)> = outputs
        .iter()
        .map(|(r, _, full)| (*r, full.with_extension("ts.tmp")))
        .collect();
    let args = ffmpeg_args(&input, &tmp_outs);
    let run = tokio::process::Command::new(&deps.ffmpeg)
        .args(&args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Failure::Retry(format!("cannot start {}: {e}", deps.ffmpeg)))?;
    let out = match tokio::time::timeout(FFMPEG_TIMEOUT, run.wait_with_output()).await {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => return Err(Failure::Retry(format!("ffmpeg: {e}"))),
        Err(_) => {
            return Err(Failure::Skip(format!(
                "ffmpeg took over {} s",
                FFMPEG_TIMEOUT.as_secs()
            )));
        }
    };
    if input == fetched {
        let _ = tokio::fs::remove_file(&fetched).await;
    }
    if !out.status.success() {
        for (_, t) in &tmp_outs {
            let _ = tokio::fs::remove_file(t).await;
        }
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(3).collect();
        return Err(Failure::Skip(format!(
            "ffmpeg {}: {}",
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        )));
    }
    let index = deps
        .index
        .get()
        .await
        .map_err(|e| Failure::Retry(e.to_string()))?;
    for ((r, rel, full), (_, tmp)) in outputs.iter().zip(&tmp_outs) {
        tokio::fs::rename(tmp, full)
            .await
            .map_err(|e| Failure::Retry(format!("renaming {}: {e}", tmp.display())))?;
        let added = deps
            .kubo
            .add_file(full)
            .await
            .map_err(|e| Failure::Retry(e.to_string()))?;
        deps.kubo
            .pin_add(&added.cid)
            .await
            .map_err(|e| Failure::Retry(e.to_string()))?;
        let v = VariantDoc {
            id: format!("{}/{}", doc.id, r.name),
            variant_of: doc.id.clone(),
            source_cid: doc.cid.clone(),
            rendition: r.name.clone(),
            width: i64::from(r.width),
            height: i64::from(r.height),
            video_kbps: i64::from(r.video_kbps),
            cid: added.cid.clone(),
            factory_id: doc.factory_id.clone(),
            device_id: doc.device_id.clone(),
            session: doc.session.clone(),
            seq: doc.seq,
            start_ms: doc.start_ms,
            end_ms: doc.end_ms,
            duration_ms: doc.duration_ms,
            bytes: added.size as i64,
            job_id: job.id.clone(),
            node_id: deps.node_id.clone(),
        };
        let (row, rel2) = (v.clone(), rel.clone());
        deps.catalog
            .run(move |c| c.put_variant_at(&row, Some(&rel2)))
            .await
            .map_err(|e| Failure::Retry(e.to_string()))?;
        index
            .upsert_variant(&v)
            .await
            .map_err(|e| Failure::Retry(e.to_string()))?;
    }
    Ok(outputs.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(name: &str, w: u32, h: u32, k: u32) -> Rendition {
        Rendition {
            name: name.into(),
            width: w,
            height: h,
            video_kbps: k,
        }
    }

    #[test]
    fn a_ladder_is_checked_rung_by_rung() {
        let good = JobStart {
            job_id: "j1".into(),
            camera: "cam1".into(),
            ladder: vec![r("360p", 640, 360, 800), r("180p", 320, 180, 300)],
        };
        assert!(good.check().is_ok());
        let bad = JobStart {
            job_id: "J 1".into(),
            camera: "cam1".into(),
            ladder: vec![r("360p", 641, 360, 800), r("360p", 320, 0, 10)],
        };
        let e = bad.check().unwrap_err();
        for needle in [
            "public.job_id",
            "ladder[0].width",
            "ladder[1].name: \"360p\" appears twice",
            "ladder[1].height",
            "ladder[1].video_kbps",
        ] {
            assert!(e.contains(needle), "{needle}: {e}");
        }
        let empty = JobStart {
            ladder: vec![],
            ..good.clone()
        };
        assert!(empty.check().unwrap_err().contains("1 to 4 renditions"));
    }

    #[test]
    fn one_ffmpeg_run_makes_every_rendition_with_source_timestamps() {
        let a = ffmpeg_args(
            Path::new("/in.ts"),
            &[
                (&r("360p", 640, 360, 800), PathBuf::from("/a.ts.tmp")),
                (&r("180p", 320, 180, 300), PathBuf::from("/b.ts.tmp")),
            ],
        );
        let s = a.join(" ");
        assert!(s.contains("-copyts -i /in.ts"), "{s}");
        assert!(
            s.contains("scale=640:360") && s.contains("scale=320:180"),
            "{s}"
        );
        assert!(s.contains("-b:v 800k -maxrate 800k -bufsize 1600k"), "{s}");
        assert!(s.ends_with("-f mpegts /b.ts.tmp"), "{s}");
    }
}
