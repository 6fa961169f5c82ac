//! Retention: the data folder keeps within its disk budget, oldest footage first, for months.
//!
//! Rules (`[retention]`): at most `max_bytes` of footage; at least `min_free` of the file system free; nothing
//! older than `max_age_days`. While distribution is configured, only segments already safe elsewhere are
//! deleted: pinned and indexed, and — when `min_replicas` is set or an IPFS Cluster pins — acknowledged by
//! that many mirrors or reported pinned by the cluster at `replication_min` peers (retention asks the cluster
//! about the oldest unconfirmed segments before each pass). Mirrored copies count as safe (their origin
//! holds them). Only when free space falls below `critical_free` does the oldest footage go anyway, so that
//! recording never stops; each such deletion is logged and counted. A write that fails for lack of space
//! (ffmpeg, the catalog) wakes retention at once ([`press`]). A deleted segment pinned on the local IPFS node
//! is unpinned (the node's garbage collection then frees its blocks).
//!
//! A full disk must not lock retention out: deleting footage starts with a catalog write, which SQLite
//! refuses when not one block is free. So vigil holds `reserve` bytes (default 4 MiB) in
//! `<data_dir>/.vigil-reserve` and, at the start of a pass (before any catalog write), deletes that file
//! when free space is at or below `critical_free` (something else filled the disk); the pass then has room
//! to work. A write that fails for lack of space starts a pass at once. Until the reserve is back, retention
//! counts its size as taken for the budget (not for the critical floor), so it makes room for it, and
//! recreates it once it fits above `min_free`. What else writes meanwhile (ffmpeg) may take part of the
//! released room; 4 MiB is many catalog transactions.
//!
//! Deletion is crash-safe and keeps catalog, playlists and disk consistent: rows are tombstoned first (they
//! leave every playlist and the pipeline), then the files are removed, then the rows; a session folder goes
//! once its last segment has. A tombstone found at start (a crash in between) is finished first. Every step
//! runs on the blocking pool; each pass is O(segments deleted), never O(history).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use supervisors::{ChildHandle, ChildSpec, Clock, ExitReason, Shutdown};
use tokio::sync::{Notify, watch};

use crate::catalog::{Catalog, Safe, Segment};
use crate::config::{Config, RetentionConfig};
use crate::error::{Error, Result};
use crate::ipfs::cluster::Cluster;
use crate::ipfs::kubo::Kubo;

/// Segments deleted by retention since start, and how many of them were not yet distributed.
pub static DELETED: AtomicU64 = AtomicU64::new(0);
pub static DELETED_UNDISTRIBUTED: AtomicU64 = AtomicU64::new(0);

/// Segments retention asks the cluster about per pass (the oldest unconfirmed): more than a pass records
/// (10 s × 16 cameras × 2 s segments = 80), so confirmation keeps up.
const CLUSTER_ASKS: usize = 256;

/// Rows looked at per step.
const STEP: usize = 64;

/// The reserve's file name in the data folder.
pub const RESERVE_FILE: &str = ".vigil-reserve";

fn pressure() -> &'static Notify {
    static P: std::sync::OnceLock<Notify> = std::sync::OnceLock::new();
    P.get_or_init(Notify::new)
}

/// Something could not be written for lack of space: look now.
pub fn press() {
    pressure().notify_one();
}

/// Free and total bytes of the file system holding `path`.
pub fn disk_space(path: &Path) -> Result<(u64, u64)> {
    let s = nix::sys::statvfs::statvfs(path)
        .map_err(|e| Error::io("cannot read free space of", path, e.into()))?;
    let frsize = s.fragment_size() as u64;
    Ok((
        s.blocks_available() as u64 * frsize,
        s.blocks() as u64 * frsize,
    ))
}

/// What one pass decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Plan {
    /// Bytes to free for the byte budget and the free-space floor (distributed footage).
    pub bytes: u64,
    /// Bytes to free to get back above the critical floor (any footage, oldest first).
    pub critical: u64,
}

/// How many bytes to free, from the footage on disk, the file system's free and total bytes.
pub fn plan(cfg: &RetentionConfig, footage: u64, free: u64, total: u64) -> Plan {
    let over_budget = cfg
        .max_bytes
        .map_or(0, |m| footage.saturating_sub(m.bytes_of(total)));
    let under_free = cfg.min_free.bytes_of(total).saturating_sub(free);
    Plan {
        bytes: over_budget.max(under_free),
        critical: cfg.critical_free.bytes_of(total).saturating_sub(free),
    }
}

/// The worker.
struct Retention {
    cfg: RetentionConfig,
    catalog: Arc<Catalog>,
    data_dir: PathBuf,
    /// What may go outside the critical floor.
    safe: Safe,
    /// Asked about the oldest unconfirmed segments: the cluster and its `replication_min`.
    cluster: Option<(Cluster, u32)>,
    /// Deleted segments are unpinned here (local pinning).
    kubo: Option<Kubo>,
    /// Where a mirror withdraws its acknowledgement of the copies it deletes: its IPFS API, the topic and
    /// its node id.
    have: Option<(Kubo, String, String)>,
    clock: Arc<dyn Clock>,
    path: String,
    /// Passes in a row that could delete nothing while over budget (their warning is rate-limited).
    blocked: std::sync::atomic::AtomicU32,
    /// CIDs of deleted segments, to unpin after the pass.
    unpin: std::sync::Mutex<Vec<String>>,
    /// (CID, camera) of deleted mirrored copies, whose acknowledgements are withdrawn after the pass.
    withdraw: std::sync::Mutex<Vec<(String, String)>>,
    metrics: Arc<crate::metrics::Metrics>,
}

impl Retention {
    fn now_ms(&self) -> i64 {
        chrono::DateTime::<chrono::Utc>::from(self.clock.wall()).timestamp_millis()
    }

    /// Remove the files of tombstoned segments, then their rows; remove emptied closed session folders
    /// (the segment list and the folder only: a file vigil set aside as unreadable stays, with its folder).
    /// Returns the segments removed and their bytes; a file that cannot be deleted keeps its tombstone (it is
    /// retried on the next pass) and is logged. Blocking.
    fn delete(&self, batch: &[Segment]) -> Result<(u64, u64)> {
        let (catalog, data_dir) = (&self.catalog, &self.data_dir);
        let mut gone = Vec::with_capacity(batch.len());
        let mut failed: Option<(usize, String)> = None;
        for s in batch {
            let file = data_dir.join(&s.path);
            match std::fs::remove_file(&file) {
                Ok(()) => gone.push(s.clone()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => gone.push(s.clone()),
                Err(e) => {
                    let f = failed.get_or_insert((0, format!("{}: {e}", file.display())));
                    f.0 += 1;
                }
            }
        }
        if let Some((n, first)) = failed {
            tracing::error!(actor = %self.path, "cannot delete {n} segment file(s) (first: {first}); they stay out of every playlist and are retried on the next pass");
        }
        let folders: std::collections::HashMap<(String, String), PathBuf> = gone
            .iter()
            .filter_map(|s| {
                let dir = data_dir.join(&s.path).parent()?.to_path_buf();
                Some(((s.camera.clone(), s.session.clone()), dir))
            })
            .collect();
        self.unpin
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(gone.iter().filter_map(|s| s.cid.clone()));
        self.withdraw
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(
                gone.iter()
                    .filter(|s| s.path.starts_with("mirror/"))
                    .filter_map(|s| Some((s.cid.clone()?, s.camera.clone()))),
            );
        for (camera, session) in catalog.forget(&gone)? {
            if catalog.session_closed(&camera, &session)? != Some(true) {
                continue;
            }
            let Some(dir) = folders.get(&(camera.clone(), session.clone())).cloned() else {
                continue;
            };
            let _ = std::fs::remove_file(dir.join(crate::capture::ffmpeg::SEGMENT_LIST));
            match std::fs::remove_dir(&dir) {
                Ok(()) => catalog.drop_session(&camera, &session)?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    catalog.drop_session(&camera, &session)?
                }
                // Files vigil set aside (unreadable) are never deleted: the folder stays with them.
                Err(_) => {}
            }
        }
        let bytes = gone.iter().map(|s| s.bytes.max(0) as u64).sum();
        Ok((gone.len() as u64, bytes))
    }

    /// Give the reserve back if free space is at or below the critical floor (the disk is full: something
    /// else took it). Returns the reserve's size and whether it is (still) held; with `reserve = 0` a reserve
    /// left from an earlier configuration is removed. Blocking.
    fn release_reserve_if_full(&self) -> Result<(u64, bool)> {
        let file = self.data_dir.join(RESERVE_FILE);
        let (free, total) = disk_space(&self.data_dir)?;
        let reserve = self.cfg.reserve.bytes_of(total);
        let exists = file.exists();
        let critical = self.cfg.critical_free.bytes_of(total);
        if !exists {
            return Ok((reserve, false));
        }
        if reserve > 0 && free > critical {
            return Ok((reserve, true));
        }
        match std::fs::remove_file(&file) {
            Ok(()) if reserve > 0 => tracing::warn!(actor = %self.path, free, reserve, critical,
                "the disk is full: released vigil's reserve so that the catalog can record deletions; making room, then recreating the reserve"),
            Ok(()) => {}
            Err(e) => {
                tracing::error!(actor = %self.path, "cannot release the reserve {}: {e}", file.display());
                return Ok((reserve, true));
            }
        }
        Ok((reserve, false))
    }

    /// Write the reserve file (`bytes` of zeros, really allocated) if it fits above `min_free`; a failure leaves
    /// no partial file and is retried on a later pass. Blocking.
    fn make_reserve(&self, file: &Path, bytes: u64, total: u64) {
        use std::io::Write;
        let Ok((free, _)) = disk_space(&self.data_dir) else {
            return;
        };
        if free < bytes.saturating_add(self.cfg.min_free.bytes_of(total)) {
            return;
        }
        // A file of another size (the setting changed) or one cut short is replaced.
        if std::fs::metadata(file).is_ok_and(|m| m.len() == bytes) {
            return;
        }
        let tmp = file.with_extension("tmp");
        let result = (|| -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            // Not zeros: a compressing file system (ZFS, btrfs) would store zeros in no space at all.
            let mut x = 0x9E37_79B9_7F4A_7C15u64;
            let chunk: Vec<u8> = (0..64 * 1024)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let mut left = bytes;
            while left > 0 {
                let n = left.min(chunk.len() as u64) as usize;
                f.write_all(&chunk[..n])?;
                left -= n as u64;
            }
            f.sync_all()?;
            std::fs::rename(&tmp, file)
        })();
        match result {
            Ok(()) => {
                tracing::info!(actor = %self.path, bytes, "reserve in place ({}): given back if the disk ever fills up", file.display())
            }
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                tracing::warn!(actor = %self.path, "cannot write the reserve {}: {e}; trying again later", file.display());
            }
        }
    }

    /// One pass: finish interrupted deletions, then delete what the rules ask for, as planned at the start of
    /// the pass (so that space taken by something other than footage cannot make one pass delete everything).
    /// Returns segments deleted.
    fn pass(&self, now_ms: i64) -> Result<u64> {
        let catalog = &self.catalog;
        // Before any catalog write (finishing interrupted deletions is one): on a full disk they need the room.
        let (reserve, held) = self.release_reserve_if_full()?;
        loop {
            let left = catalog.tombstoned(STEP)?;
            if left.is_empty() || self.delete(&left)?.0 == 0 {
                break;
            }
        }
        let mut deleted = 0u64;
        let cutoff = self
            .cfg
            .max_age_days
            .map(|d| now_ms - i64::from(d) * 86_400_000);
        let (free, total) = disk_space(&self.data_dir)?;
        // Until the reserve is back, its room counts as taken for the budget (retention makes room for it too),
        // not for the critical floor: undistributed footage never goes for the reserve's sake.
        let owed = if reserve > 0 && !held { reserve } else { 0 };
        let footage = catalog.total_bytes()?.max(0) as u64;
        let plan = Plan {
            bytes: plan(&self.cfg, footage, free.saturating_sub(owed), total).bytes,
            critical: plan(&self.cfg, footage, free, total).critical,
        };
        if owed > 0 {
            self.make_reserve(&self.data_dir.join(RESERVE_FILE), reserve, total);
        }
        let (mut need, mut need_critical) = (plan.bytes.min(footage), plan.critical.min(footage));
        loop {
            let mut batch = Vec::new();
            let mut want = need;
            for s in catalog.oldest(STEP, self.safe)? {
                let too_old = cutoff.is_some_and(|c| s.start_ms + s.duration_ms < c);
                if want == 0 && !too_old {
                    break;
                }
                want = want.saturating_sub(s.bytes.max(0) as u64);
                batch.push(s);
            }
            let mut undistributed = false;
            if batch.is_empty() && need_critical > 0 {
                // Below the critical floor with nothing distributed to delete: the oldest footage goes anyway,
                // just enough to get back above the floor.
                let mut want = need_critical;
                for s in catalog.oldest(STEP, Safe::Any)? {
                    if want == 0 {
                        break;
                    }
                    want = want.saturating_sub(s.bytes.max(0) as u64);
                    batch.push(s);
                }
                undistributed = self.safe != Safe::Any;
            }
            if batch.is_empty() {
                if need > 0 && deleted == 0 {
                    let n = self.blocked.fetch_add(1, Ordering::Relaxed);
                    if n % 30 == 0 {
                        tracing::warn!(actor = %self.path, free, needed = need, "over the disk budget, but nothing may be deleted yet (footage not yet distributed or replicated; above the critical floor); looking again every {} s", self.cfg.check_seconds);
                    }
                }
                return Ok(deleted);
            }
            self.blocked.store(0, Ordering::Relaxed);
            if undistributed {
                for s in &batch {
                    tracing::warn!(actor = %self.path, segment = %s.path, free, critical = self.cfg.critical_free.bytes_of(total),
                        "deleting footage that is not yet distributed or replicated: free space is below the critical floor and recording must go on");
                }
                DELETED_UNDISTRIBUTED.fetch_add(batch.len() as u64, Ordering::Relaxed);
            }
            catalog.tombstone(&batch)?;
            let (removed, freed) = self.delete(&batch)?;
            deleted += removed;
            DELETED.fetch_add(removed, Ordering::Relaxed);
            self.metrics.deleted(removed, freed, undistributed);
            if removed == 0 {
                return Ok(deleted); // nothing could be deleted: no progress this pass
            }
            need = need.saturating_sub(freed);
            need_critical = need_critical.saturating_sub(freed);
        }
    }

    /// Ask the cluster how many peers pin the oldest segments it has not confirmed yet (a few per pass: the
    /// oldest are the ones retention wants next).
    async fn confirm_with_cluster(&self) {
        let Some((cluster, min)) = &self.cluster else {
            return;
        };
        let min = *min;
        let catalog = self.catalog.clone();
        let Ok(rows) = catalog.run(move |c| c.unconfirmed(CLUSTER_ASKS, min)).await else {
            return;
        };
        for s in rows {
            let Some(cid) = &s.cid else { continue };
            match cluster.status(cid).await {
                Ok(st) => {
                    let n = st.pinned_on() as u32;
                    let id = s.id;
                    let _ = self.catalog.run(move |c| c.set_cluster_peers(id, n)).await;
                }
                Err(e) => {
                    tracing::debug!(actor = %self.path, "cluster status of {cid}: {e}");
                    break;
                }
            }
        }
    }

    /// Unpin what the last pass deleted from the local IPFS node (best effort: a failure leaves a pin that
    /// costs disk only, and is logged).
    async fn unpin_deleted(&self) {
        let withdrawn =
            std::mem::take(&mut *self.withdraw.lock().unwrap_or_else(|p| p.into_inner()));
        if let Some((kubo, topic, node)) = &self.have
            && !withdrawn.is_empty()
        {
            crate::mirror::withdraw(kubo, topic, node, &withdrawn).await;
        }
        let cids = std::mem::take(&mut *self.unpin.lock().unwrap_or_else(|p| p.into_inner()));
        let Some(kubo) = &self.kubo else { return };
        for cid in cids {
            if let Err(e) = kubo.pin_rm(&cid).await {
                tracing::warn!(actor = %self.path, %cid, "deleted segment not unpinned: {e}");
            }
        }
    }

    async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) -> ExitReason {
        let every = Duration::from_secs(self.cfg.check_seconds);
        let mut failures = 0u32;
        loop {
            self.confirm_with_cluster().await;
            let me = self.clone();
            let now = self.now_ms();
            let result = tokio::task::spawn_blocking(move || me.pass(now)).await;
            self.unpin_deleted().await;
            match result {
                Ok(Ok(0)) => failures = 0,
                Ok(Ok(n)) => {
                    failures = 0;
                    tracing::info!(actor = %self.path, deleted = n, "retention deleted the oldest {n} segment(s) to stay within the disk budget");
                }
                Ok(Err(e)) if e.is_transient() => {
                    failures += 1;
                    if failures == 1 || failures % 10 == 0 {
                        tracing::warn!(actor = %self.path, "retention pass failed: {e}; retrying");
                    }
                }
                Ok(Err(e)) => return ExitReason::Failed(format!("retention: {e}")),
                Err(e) => return ExitReason::Failed(format!("retention task: {e}")),
            }
            tokio::select! {
                () = self.clock.sleep(if failures > 0 { Duration::from_secs(1) } else { every }) => {}
                () = pressure().notified() => {}
                _ = stop.changed() => return ExitReason::Normal,
            }
        }
    }
}

/// The `retention` child of the `services` supervisor.
pub fn child_spec(
    config: &Config,
    catalog: Arc<Catalog>,
    metrics: Arc<crate::metrics::Metrics>,
) -> ChildSpec {
    let cfg = config.retention.clone();
    let data_dir = config.data_dir.clone();
    let cluster_min = config
        .ipfs
        .as_ref()
        .and_then(|i| i.cluster.as_ref())
        .map(|c| {
            // -1: every peer; asking for at least two is the most a count can say without the peer list.
            if c.replication_min < 1 {
                2
            } else {
                c.replication_min as u32
            }
        });
    let safe = match (&config.ipfs, cfg.min_replicas, cluster_min) {
        (None, _, _) => Safe::Any,
        (Some(_), None, None) => Safe::Distributed,
        (Some(_), mirrors, cluster) => Safe::Replicated {
            mirrors: mirrors.unwrap_or(u32::MAX),
            cluster,
        },
    };
    let timeout = Duration::from_secs(config.ipfs.as_ref().map_or(30, |i| i.timeout_seconds));
    let cluster = config
        .ipfs
        .as_ref()
        .and_then(|i| i.cluster.as_ref())
        .zip(cluster_min)
        .and_then(|(c, min)| {
            let auth = c.basic_auth.as_ref().and_then(|b| {
                b.expose()
                    .split_once(':')
                    .map(|(u, p)| crate::ipfs::kubo::Auth::Basic {
                        user: u.to_string(),
                        password: p.to_string(),
                    })
            });
            Cluster::new(&c.api, auth, timeout).ok().map(|c| (c, min))
        });
    let api = config.ipfs.as_ref().and_then(|i| {
        let auth = crate::tree::auth_of(&i.basic_auth, &i.bearer_token);
        Kubo::new(&i.api, auth, timeout).ok()
    });
    let kubo = api
        .clone()
        .filter(|_| config.ipfs.as_ref().is_some_and(|i| i.cluster.is_none()));
    let have = api
        .zip(config.ipfs.as_ref())
        .filter(|_| config.remote_cameras.iter().any(|c| c.mirror))
        .map(|(k, i)| (k, i.topic.clone(), config.node_id.clone()));
    let about = format!(
        "disk budget of {}: {}min free {}, critical {}{}",
        data_dir.display(),
        cfg.max_bytes
            .map_or(String::new(), |m| format!("at most {m} of footage, ")),
        cfg.min_free,
        cfg.critical_free,
        cfg.max_age_days
            .map_or(String::new(), |d| format!(", at most {d} days"))
    );
    ChildSpec::worker("retention", move |cx| {
        let (tx, rx) = watch::channel(false);
        let worker = Arc::new(Retention {
            cfg: cfg.clone(),
            catalog: catalog.clone(),
            data_dir: data_dir.clone(),
            safe,
            cluster: cluster.clone(),
            kubo: kubo.clone(),
            have: have.clone(),
            clock: cx.clock(),
            path: cx.path.clone(),
            blocked: Default::default(),
            unpin: Default::default(),
            withdraw: Default::default(),
            metrics: metrics.clone(),
        });
        Ok(ChildHandle::task(worker.run(rx), move || {
            let _ = tx.send(true);
        }))
    })
    .shutdown(Shutdown::Timeout(Duration::from_secs(10)))
    .about(about)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Space;

    #[test]
    fn the_plan_frees_the_larger_of_budget_and_floor() {
        let cfg = RetentionConfig {
            max_bytes: Some(Space::Bytes(1000)),
            min_free: Space::Percent(10.0),
            critical_free: Space::Percent(2.0),
            ..RetentionConfig::default()
        };
        assert_eq!(
            plan(&cfg, 900, 5000, 10_000),
            Plan {
                bytes: 0,
                critical: 0
            }
        );
        assert_eq!(
            plan(&cfg, 1500, 5000, 10_000),
            Plan {
                bytes: 500,
                critical: 0
            }
        );
        assert_eq!(
            plan(&cfg, 500, 300, 10_000),
            Plan {
                bytes: 700,
                critical: 0
            }
        );
        assert_eq!(
            plan(&cfg, 500, 100, 10_000),
            Plan {
                bytes: 900,
                critical: 100
            }
        );
    }
}
