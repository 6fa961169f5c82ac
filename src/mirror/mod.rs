//! The storage role: a supervised `Mirror` that follows the pubsub topic and keeps a copy of every segment of
//! the cameras listed as mirrored in `[[remote_cameras]]`.
//!
//! For each announcement it fetches the CID through this node's own IPFS node (bounded concurrency, a size
//! cap, a timeout), checks the bytes (announced size, MPEG-TS packet structure, and that adding them here
//! gives the announced CID), writes them under `<data>/mirror/<camera>/<session>/`, pins them, catalogues
//! them with the origin node (so this node's live, day and VOD playlists for the camera grow) and tells the
//! origin it holds a copy (`<topic>-have`, which the origin's retention weighs).
//!
//! Pubsub is lossy and nodes go down, so each camera's follower also heals: an announcement whose
//! `prev_cid` is not the last segment it holds, a (re)subscription, its own start and a periodic look
//! (`heal_seconds`) make it list what it misses — from the shared index (MongoDB) or, without one, from the
//! origins' HTTP listing (`/cameras/<id>/index.json`) — and fetch it oldest first. Progress is the catalog
//! itself: a restarted mirror neither refetches (every candidate is looked up first) nor skips (it lists
//! from its newest segment on).
//!
//! Bad announcements (not JSON, wrong types, another version, values that fail the checks, a camera not
//! mirrored here, a replay of one already held or older than the backfill window, a CID that never resolves,
//! content too big, not MPEG-TS or not matching its CID) are logged, counted by reason (`/api/mirror`) and
//! dropped; a follower works on one camera, so nothing one camera's announcements do holds up another's.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use futures_util::StreamExt as _;
use serde::Serialize;
use supervisors::{Backoff, BackoffPolicy, Clock, ExitSlot, FastRandJitter, Terminate};
use tokio::sync::{Semaphore, mpsc};

use crate::catalog::{Catalog, NewSegment};
use crate::config::{MirrorConfig, OriginConfig, RemoteCameraConfig, Space};
use crate::error::{Error, Result};
use crate::index::{IndexDoc, Scope, Shared};
use crate::ipfs::kubo::Kubo;
use crate::ipfs::link::Link;
use crate::pipeline::announce::Announcement;

/// Lag samples kept for the figures.
const LAG_SAMPLES: usize = 4096;
/// Announcements queued per camera before new ones are dropped (healing fetches them later).
const QUEUE_MAX: usize = 10_000;
/// How far ahead of this node's clock a segment may start (clocks differ a little).
const FUTURE_SKEW_MS: i64 = 5 * 60_000;
/// Longest listing window asked for at once.
const LIST_WINDOW_MS: i64 = 3_600_000;
/// The reasons a message or segment is dropped (each has its counter).
pub const REASONS: &[&str] = &[
    "malformed",
    "version",
    "invalid",
    "not_mirrored",
    "duplicate",
    "too_old",
    "unresolvable",
    "oversize",
    "not_mpegts",
    "cid_mismatch",
    "queue_full",
    "wrong_origin",
];

/// The topic mirrors acknowledge copies on (the origin counts replicas from it).
pub fn have_topic(topic: &str) -> String {
    format!("{topic}-have")
}

/// What the mirror has done, for `/api/mirror`, tests and benchmarks.
#[derive(Debug, Default)]
pub struct Stats {
    pub received: AtomicU64,
    pub mirrored: AtomicU64,
    pub healed: AtomicU64,
    pub gaps: AtomicU64,
    pub subscriptions: AtomicU64,
    rejected: Mutex<BTreeMap<&'static str, u64>>,
    /// (published → pinned here) in ms, of the most recent live announcements.
    lags: Mutex<VecDeque<i64>>,
}

/// A snapshot of [`Stats`].
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StatsView {
    pub received: u64,
    pub mirrored: u64,
    pub healed: u64,
    pub gaps: u64,
    pub subscriptions: u64,
    pub rejected: BTreeMap<String, u64>,
    pub lag_ms_p50: Option<i64>,
    pub lag_ms_p99: Option<i64>,
    pub lag_samples: usize,
}

impl Stats {
    fn reject(&self, reason: &'static str) {
        *self
            .rejected
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(reason)
            .or_default() += 1;
    }

    fn lag(&self, ms: i64) {
        let mut l = self.lags.lock().unwrap_or_else(|p| p.into_inner());
        if l.len() == LAG_SAMPLES {
            l.pop_front();
        }
        l.push_back(ms.max(0));
    }

    /// The counters for `/metrics`.
    pub fn snapshot(&self) -> crate::metrics::MirrorSnap {
        crate::metrics::MirrorSnap {
            received: self.received.load(Ordering::Relaxed),
            mirrored: self.mirrored.load(Ordering::Relaxed),
            healed: self.healed.load(Ordering::Relaxed),
            gaps: self.gaps.load(Ordering::Relaxed),
            subscriptions: self.subscriptions.load(Ordering::Relaxed),
            rejected: self
                .rejected
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .map(|(k, v)| (*k, *v))
                .collect(),
        }
    }

    /// The counters now, with lag percentiles over the last samples.
    pub fn view(&self) -> StatsView {
        let mut lags: Vec<i64> = self
            .lags
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .copied()
            .collect();
        lags.sort_unstable();
        let pct = |p: f64| -> Option<i64> {
            (!lags.is_empty()).then(|| lags[((lags.len() - 1) as f64 * p).round() as usize])
        };
        let now = self.snapshot();
        StatsView {
            received: now.received,
            mirrored: now.mirrored,
            healed: now.healed,
            gaps: now.gaps,
            subscriptions: now.subscriptions,
            rejected: now
                .rejected
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            lag_ms_p50: pct(0.5),
            lag_ms_p99: pct(0.99),
            lag_samples: lags.len(),
        }
    }
}

/// What the mirror needs.
pub struct Deps {
    pub catalog: Arc<Catalog>,
    pub data_dir: PathBuf,
    pub node_id: String,
    pub kubo: Kubo,
    pub link: Link,
    pub index: Arc<Shared>,
    pub topic: String,
    /// The mirrored cameras by id.
    pub cameras: HashMap<String, RemoteCameraConfig>,
    pub config: MirrorConfig,
    /// Mirror lag and the newest copy per camera, for `/metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
    pub stats: Arc<Stats>,
    pub http: reqwest::Client,
}

impl Deps {
    fn max_bytes(&self) -> u64 {
        match self.config.max_segment_bytes {
            Space::Bytes(b) => b,
            Space::Percent(_) => 64 << 20,
        }
    }
}

/// One segment to fetch: from an announcement or a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Item {
    cid: String,
    camera: String,
    factory: String,
    session: String,
    seq: i64,
    file: String,
    start_ms: i64,
    end_ms: i64,
    bytes: Option<i64>,
    origin: String,
    first_in_session: bool,
    /// Set for live announcements: when the origin published it.
    published_ms: Option<i64>,
}

impl Item {
    /// An announcement's segment, its fields checked ([`Announcement::check`]) and its start not in the
    /// future (a clock a little ahead is tolerated).
    fn checked(a: &Announcement, first_in_session: bool) -> std::result::Result<Item, String> {
        let c = a.check()?;
        let now = chrono::Utc::now().timestamp_millis();
        if c.start_ms > now + FUTURE_SKEW_MS {
            return Err(format!("start {} is in the future", a.start));
        }
        Ok(Item {
            cid: a.cid.clone(),
            camera: a.device_id.clone(),
            factory: a.factory_id.clone(),
            session: a.session.clone(),
            seq: a.seq,
            file: c.file,
            start_ms: c.start_ms,
            end_ms: c.end_ms,
            bytes: a.bytes,
            origin: a.node_id.clone(),
            first_in_session,
            published_ms: a.published_ms,
        })
    }

    /// A listed index document's segment, checked like an announcement (an index or an origin is input too).
    fn of_doc(d: &IndexDoc) -> std::result::Result<Item, String> {
        let t = |ms: i64| {
            chrono::DateTime::from_timestamp_millis(ms)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                .unwrap_or_default()
        };
        let a = Announcement {
            v: crate::pipeline::announce::VERSION,
            filename: d.filename.clone(),
            cid: d.cid.clone(),
            factory_id: d.factory_id.clone(),
            device_id: d.device_id.clone(),
            session: d.session.clone(),
            seq: d.seq,
            start: t(d.start_ms),
            end: t(d.end_ms),
            prev_cid: d.prev_cid.clone(),
            node_id: d.node_id.clone(),
            bytes: Some(d.bytes),
            published_ms: None,
        };
        Item::checked(&a, d.first_in_session)
    }

    /// Relative to the data folder.
    fn path(&self) -> String {
        format!("mirror/{}/{}/{}", self.camera, self.session, self.file)
    }
}

fn policy() -> BackoffPolicy {
    BackoffPolicy {
        initial: Duration::from_millis(250),
        max: Duration::from_secs(10),
        factor: 2.0,
        jitter: 0.2,
        reset_after: Duration::from_secs(0),
        immediate_after_healthy: false,
    }
}

/// Whether `data` is MPEG-TS: whole 188-byte packets (a trailing partial one is tolerated: a recorder killed
/// mid-write leaves one), each starting with the sync byte 0x47.
pub fn is_mpegts(data: &[u8]) -> bool {
    data.len() >= 188 && data.chunks_exact(188).all(|p| p[0] == 0x47)
}

/// Messages to a camera's follower.
#[derive(Debug)]
enum Job {
    Announced(Box<Item>, Option<String>),
    Heal(&'static str),
}

/// The mirror's whole life: subscribe, dispatch, resubscribe; returns only on a fatal error.
async fn run(deps: Arc<Deps>, clock: Arc<dyn Clock>, path: String) -> String {
    let sem = Arc::new(Semaphore::new(deps.config.concurrency));
    let mut followers: HashMap<String, mpsc::Sender<Job>> = HashMap::new();
    let mut tasks = Vec::new();
    for cam in deps.cameras.keys() {
        let (tx, rx) = mpsc::channel(QUEUE_MAX);
        let f = Follower {
            deps: deps.clone(),
            camera: cam.clone(),
            sem: sem.clone(),
            clock: clock.clone(),
            path: format!("{path}/{cam}"),
            last: None,
            low: None,
        };
        tasks.push(AbortOnDrop(actix_rt::spawn(f.run(rx))));
        let _ = tx.try_send(Job::Heal("start"));
        followers.insert(cam.clone(), tx);
    }
    let jitter = FastRandJitter::new();
    let mut backoff = Backoff::new(policy());
    let mut first = true;
    loop {
        if !deps.link.is_up() {
            deps.link.wait_up().await;
        }
        let mut sub = match deps.kubo.pubsub_sub(&deps.topic).await {
            Ok(s) => s,
            Err(e) => {
                let (attempt, delay) = backoff.next_delay(&jitter);
                if attempt == 1 || attempt % 10 == 0 {
                    tracing::warn!(actor = %path, attempt, delay_ms = delay.as_millis() as u64, "cannot subscribe to {:?}: {e}; retrying", deps.topic);
                }
                clock.sleep(delay).await;
                continue;
            }
        };
        backoff.reset();
        deps.stats.subscriptions.fetch_add(1, Ordering::Relaxed);
        tracing::info!(actor = %path, topic = %deps.topic, cameras = deps.cameras.len(), "subscribed; following announcements");
        if !first {
            // Whatever was announced while the subscription was down is healed from the index.
            for tx in followers.values() {
                let _ = tx.try_send(Job::Heal("resubscribed"));
            }
        }
        first = false;
        while let Some(m) = sub.next().await {
            match m {
                Ok(m) => dispatch(&deps, &followers, &path, &m.from, &m.data),
                Err(e) => {
                    tracing::warn!(actor = %path, "subscription broke: {e}; resubscribing");
                    break;
                }
            }
        }
        tracing::warn!(actor = %path, "subscription to {:?} ended; resubscribing (missed announcements will be healed)", deps.topic);
        clock.sleep(Duration::from_millis(200)).await;
    }
}

/// Check one message and hand it to its camera's follower (or count why not).
fn dispatch(
    deps: &Deps,
    followers: &HashMap<String, mpsc::Sender<Job>>,
    path: &str,
    from: &str,
    data: &[u8],
) {
    let a = match Announcement::parse(data) {
        Ok(a) => a,
        Err(why) => {
            let reason = if why.starts_with("announcement version") {
                "version"
            } else {
                "malformed"
            };
            deps.stats.received.fetch_add(1, Ordering::Relaxed);
            deps.stats.reject(reason);
            tracing::warn!(actor = %path, reason, "announcement dropped: {why}");
            return;
        }
    };
    if a.node_id == deps.node_id {
        return;
    }
    deps.stats.received.fetch_add(1, Ordering::Relaxed);
    let item = match Item::checked(&a, a.seq == 0) {
        Ok(i) => i,
        Err(why) => {
            deps.stats.reject("invalid");
            tracing::warn!(actor = %path, reason = "invalid", "announcement dropped: {why}");
            return;
        }
    };
    let Some(tx) = followers.get(&a.device_id) else {
        deps.stats.reject("not_mirrored");
        tracing::debug!(actor = %path, camera = %a.device_id, "announcement dropped: camera not mirrored here");
        return;
    };
    if let Some(want) = deps
        .cameras
        .get(&a.device_id)
        .and_then(|c| c.origin_peer.as_deref())
        && want != from
    {
        deps.stats.reject("wrong_origin");
        tracing::warn!(actor = %path, camera = %a.device_id, %from, "announcement dropped: it comes from peer {from}, not from the camera's origin_peer");
        return;
    }
    // Bounded: a follower far behind heals from the index instead.
    if tx
        .try_send(Job::Announced(Box::new(item), a.prev_cid))
        .is_err()
    {
        deps.stats.reject("queue_full");
    }
}

/// The newest segment a follower holds.
#[derive(Debug, Clone)]
struct Last {
    cid: Option<String>,
    start_ms: i64,
}

/// Follows one camera: catalogues its segments in order, heals its gaps.
struct Follower {
    deps: Arc<Deps>,
    camera: String,
    sem: Arc<Semaphore>,
    clock: Arc<dyn Clock>,
    path: String,
    last: Option<Last>,
    /// The oldest start of a segment that failed to come (transiently) behind newer ones: healing lists from
    /// here until it has come. Kept in the catalog (`mirror-low:<camera>`) across restarts.
    low: Option<i64>,
}

impl Follower {
    fn low_key(&self) -> String {
        format!("mirror-low:{}", self.camera)
    }

    async fn set_low(&mut self, low: Option<i64>) {
        if self.low == low {
            return;
        }
        self.low = low;
        let (key, value) = (self.low_key(), low.map(|l| l.to_string()));
        if let Err(e) = self
            .deps
            .catalog
            .run(move |c| c.set_meta(&key, value.as_deref()))
            .await
        {
            tracing::warn!(actor = %self.path, "cannot remember where healing must start: {e}");
        }
    }

    /// A transient failure of the segment starting at `start_ms`: healing starts there at the latest.
    async fn failed_at(&mut self, start_ms: i64) {
        let low = self.low.map_or(start_ms, |l| l.min(start_ms));
        self.set_low(Some(low)).await;
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        let heal_every = Duration::from_secs(self.deps.config.heal_seconds);
        let key = self.low_key();
        self.low = self
            .deps
            .catalog
            .run(move |c| c.meta(&key))
            .await
            .ok()
            .flatten()
            .and_then(|v| v.parse().ok());
        loop {
            let job = tokio::select! {
                j = rx.recv() => match j { Some(j) => j, None => return },
                () = self.clock.sleep(heal_every) => Job::Heal("periodic"),
            };
            match job {
                Job::Heal(why) => self.heal(why, None).await,
                Job::Announced(item, prev) => self.announced(*item, prev).await,
            }
        }
    }

    async fn refresh_last(&mut self) {
        let camera = self.camera.clone();
        if let Ok(Some(s)) = self.deps.catalog.run(move |c| c.latest(&camera)).await {
            self.last = Some(Last {
                cid: s.cid,
                start_ms: s.start_ms,
            });
        }
    }

    async fn announced(&mut self, item: Item, prev: Option<String>) {
        let (camera, session, seq) = (item.camera.clone(), item.session.clone(), item.seq);
        let have = self
            .deps
            .catalog
            .run(move |c| c.has(&camera, &session, seq))
            .await
            .unwrap_or(false);
        if have {
            self.deps.stats.reject("duplicate");
            tracing::debug!(actor = %self.path, cid = %item.cid, "announcement of a segment held here already: dropped");
            return;
        }
        if item.start_ms < self.floor().await {
            self.deps.stats.reject("too_old");
            tracing::warn!(actor = %self.path, cid = %item.cid, start_ms = item.start_ms, "announcement older than the backfill window (or than what retention deleted here): dropped");
            return;
        }
        if self.last.is_none() {
            self.refresh_last().await;
        }
        let follows = match (&self.last, &prev) {
            (Some(l), Some(p)) => l.cid.as_deref() == Some(p.as_str()),
            (None, None) => true,
            _ => false,
        };
        if !follows {
            self.deps.stats.gaps.fetch_add(1, Ordering::Relaxed);
            tracing::info!(actor = %self.path, seq = item.seq, session = %item.session, "gap before this announcement (prev_cid not held here): healing from the {}", self.source_name());
            self.heal("gap", Some(item.start_ms)).await;
        }
        self.store_all(vec![item], false).await;
    }

    /// The oldest start this follower takes: the backfill window's, or just after what retention deleted
    /// here (a mirror never fetches back footage it has already let go).
    async fn floor(&self) -> i64 {
        let oldest = chrono::Utc::now().timestamp_millis()
            - i64::from(self.deps.config.backfill_hours) * 3_600_000;
        let camera = self.camera.clone();
        let deleted = self
            .deps
            .catalog
            .run(move |c| c.deleted_until(&camera))
            .await
            .ok()
            .flatten();
        oldest.max(deleted.map_or(i64::MIN, |d| d + 1))
    }

    fn source_name(&self) -> &'static str {
        if self.deps.index.is_shared() {
            "shared index"
        } else {
            "origins' listings"
        }
    }

    /// Fetch everything the index (or an origin) lists for this camera after the newest segment held here,
    /// up to `until_ms` (now when `None`), oldest first.
    async fn heal(&mut self, why: &'static str, until_ms: Option<i64>) {
        self.refresh_last().await;
        let now = chrono::Utc::now().timestamp_millis();
        let floor = self.floor().await;
        if self.low.is_some_and(|l| l < floor) {
            // What failed is older than the window now: it will not be fetched any more.
            self.set_low(None).await;
        }
        let newest = self.last.as_ref().map_or(floor, |l| l.start_ms);
        let start = self.low.map_or(newest, |l| l.min(newest)).max(floor);
        let mut from = start;
        let to = until_ms.unwrap_or(now + 60_000).min(now + 60_000);
        let mut total = 0usize;
        let mut failed = 0usize;
        while from < to {
            let window_end = (from + LIST_WINDOW_MS).min(to);
            let docs = match self.list(from, window_end).await {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(actor = %self.path, why, "cannot list segments to heal from the {}: {e}; trying again later", self.source_name());
                    return;
                }
            };
            let mut missing = Vec::new();
            for d in docs {
                if d.device_id != self.camera {
                    continue;
                }
                let (camera, session, seq) = (d.device_id.clone(), d.session.clone(), d.seq);
                let have = self
                    .deps
                    .catalog
                    .run(move |c| c.has(&camera, &session, seq))
                    .await
                    .unwrap_or(true);
                if have {
                    continue;
                }
                match Item::of_doc(&d) {
                    Ok(item) => missing.push(item),
                    Err(why) => {
                        self.deps.stats.reject("invalid");
                        tracing::warn!(actor = %self.path, "listed segment skipped: {why}");
                    }
                }
            }
            total += missing.len();
            if !missing.is_empty() {
                failed += self.store_all(missing, true).await;
            }
            from = window_end;
        }
        if failed == 0 && until_ms.is_none() && self.low.is_some_and(|l| start <= l) {
            self.set_low(None).await;
        }
        if total > 0 {
            tracing::info!(actor = %self.path, why, segments = total, "healed from the {}", self.source_name());
        }
    }

    /// Documents of this camera starting in `[from, to)`.
    async fn list(&self, from: i64, to: i64) -> Result<Vec<IndexDoc>> {
        if self.deps.index.is_shared() {
            let index = self.deps.index.get().await?;
            return index
                .range(&Scope::Device(self.camera.clone()), from, to)
                .await;
        }
        let mut last_err = Error::Invalid(format!(
            "no shared index and no [[mirror.origins]] to list camera {}'s segments from",
            self.camera
        ));
        for o in &self.deps.config.origins {
            match list_origin(&self.deps.http, o, &self.camera, from, to).await {
                Ok(d) => return Ok(d),
                Err(e) => last_err = e,
            }
        }
        Err(last_err)
    }

    /// Fetch `items` (bounded concurrency) and catalogue them in order. Returns how many failed in a way
    /// that may go away (healing fetches them later).
    async fn store_all(&mut self, items: Vec<Item>, healing: bool) -> usize {
        let mut failed = 0;
        let deps = self.deps.clone();
        let sem = self.sem.clone();
        let clock = self.clock.clone();
        let path = self.path.clone();
        let mut fetched = futures_util::stream::iter(items.into_iter().map(|item| {
            let (deps, sem, clock, path) = (deps.clone(), sem.clone(), clock.clone(), path.clone());
            async move {
                let r = fetch(&deps, &sem, &*clock, &path, &item).await;
                (item, r)
            }
        }))
        .buffered(self.deps.config.concurrency);
        while let Some((item, r)) = fetched.next().await {
            match r {
                Ok(()) => {
                    let s = NewSegment {
                        camera: item.camera.clone(),
                        factory: item.factory.clone(),
                        session: item.session.clone(),
                        seq: item.seq,
                        path: item.path(),
                        start_ms: item.start_ms,
                        duration_ms: item.end_ms - item.start_ms,
                        bytes: item.bytes.unwrap_or_default(),
                        first_in_session: item.first_in_session,
                    };
                    let (cid, origin) = (item.cid.clone(), item.origin.clone());
                    match self
                        .deps
                        .catalog
                        .run(move |c| c.insert_mirrored(&s, &cid, &origin))
                        .await
                    {
                        Ok(_) => {
                            self.deps.stats.mirrored.fetch_add(1, Ordering::Relaxed);
                            let now = chrono::Utc::now().timestamp_millis();
                            let mut lag = None;
                            if healing {
                                self.deps.stats.healed.fetch_add(1, Ordering::Relaxed);
                            } else if let Some(p) = item.published_ms {
                                self.deps.stats.lag(now - p);
                                lag = Some(Duration::from_millis((now - p).max(0) as u64));
                            }
                            self.deps.metrics.mirrored(&item.camera, item.end_ms, lag);
                            self.deps.metrics.stage_done(
                                "mirror",
                                None,
                                Duration::from_millis((now - item.end_ms).max(0) as u64),
                            );
                            if self
                                .last
                                .as_ref()
                                .is_none_or(|l| item.start_ms >= l.start_ms)
                            {
                                self.last = Some(Last {
                                    cid: Some(item.cid.clone()),
                                    start_ms: item.start_ms,
                                });
                            }
                            tracing::debug!(actor = %self.path, cid = %item.cid, seq = item.seq, session = %item.session, "mirrored");
                            acknowledge(&self.deps, &item).await;
                        }
                        Err(e) => {
                            tracing::error!(actor = %self.path, cid = %item.cid, "fetched but not catalogued: {e}; healing will fetch it again");
                            failed += 1;
                            self.failed_at(item.start_ms).await;
                        }
                    }
                }
                Err(Error::Rejected { reason, message }) => {
                    self.deps.stats.reject(reason);
                    tracing::warn!(actor = %self.path, cid = %item.cid, seq = item.seq, session = %item.session, reason, "segment dropped: {message}");
                }
                Err(e) => {
                    tracing::warn!(actor = %self.path, cid = %item.cid, "segment not mirrored: {e}; healing will try again");
                    failed += 1;
                    self.failed_at(item.start_ms).await;
                }
            }
        }
        failed
    }
}

/// Tell the origins that this node let these mirrored copies go (its own retention deleted them): they count
/// one replica less, so an origin that still holds the footage keeps it.
pub async fn withdraw(kubo: &Kubo, topic: &str, node_id: &str, cids: &[(String, String)]) {
    for (cid, camera) in cids {
        let msg = serde_json::json!({
            "v": 1,
            "cid": cid,
            "device_id": camera,
            "node_id": node_id,
            "gone": true,
        });
        let data = serde_json::to_vec(&msg).expect("json");
        if let Err(e) = kubo.pubsub_pub(&have_topic(topic), &data).await {
            tracing::debug!(%cid, "withdrawal not published: {e}");
        }
    }
}

/// Tell the origin (and anyone counting) that this node holds `item` now. Lossy like every announcement:
/// an origin that misses it counts one replica less, which only makes its retention more careful.
async fn acknowledge(deps: &Deps, item: &Item) {
    let msg = serde_json::json!({
        "v": 1,
        "cid": item.cid,
        "device_id": item.camera,
        "node_id": deps.node_id,
    });
    let data = serde_json::to_vec(&msg).expect("json");
    if let Err(e) = deps.kubo.pubsub_pub(&have_topic(&deps.topic), &data).await {
        tracing::debug!(cid = %item.cid, "acknowledgement not published: {e}");
    }
}

/// Fetch, check, write and pin one segment. `Rejected` errors are final; others may go away.
async fn fetch(
    deps: &Deps,
    sem: &Semaphore,
    clock: &dyn Clock,
    path: &str,
    item: &Item,
) -> Result<()> {
    let max = deps.max_bytes();
    if item.bytes.is_some_and(|b| b as u64 > max) {
        return Err(Error::Rejected {
            reason: "oversize",
            message: format!(
                "announced size {} bytes exceeds max_segment_bytes ({max})",
                item.bytes.unwrap_or(0)
            ),
        });
    }
    let _permit = sem
        .acquire()
        .await
        .map_err(|e| Error::Internal(e.to_string()))?;
    let timeout = Duration::from_secs(deps.config.fetch_timeout_seconds);
    let jitter = FastRandJitter::new();
    let mut backoff = Backoff::new(policy());
    let mut timeouts = 0;
    let data = loop {
        if !deps.link.is_up() {
            deps.link.wait_up().await;
        }
        match tokio::time::timeout(timeout, cat_capped(&deps.kubo, &item.cid, max)).await {
            Ok(Ok(d)) => break d,
            Ok(Err(e @ Error::Rejected { .. })) => return Err(e),
            Ok(Err(e)) if e.is_transient() => {
                let (attempt, delay) = backoff.next_delay(&jitter);
                if attempt == 1 || attempt % 10 == 0 {
                    tracing::warn!(actor = %path, cid = %item.cid, attempt, "fetch failed: {e}; retrying");
                }
                if attempt > 20 {
                    return Err(e);
                }
                clock.sleep(delay).await;
            }
            Ok(Err(e)) => {
                return Err(Error::Rejected {
                    reason: "unresolvable",
                    message: format!("IPFS cannot deliver {}: {e}", item.cid),
                });
            }
            Err(_) => {
                timeouts += 1;
                if timeouts >= 2 {
                    return Err(Error::Rejected {
                        reason: "unresolvable",
                        message: format!(
                            "{} did not resolve in {} s, twice",
                            item.cid,
                            timeout.as_secs()
                        ),
                    });
                }
            }
        }
    };
    if let Some(b) = item.bytes
        && data.len() as i64 != b
    {
        return Err(Error::Rejected {
            reason: "invalid",
            message: format!("content is {} bytes, the announcement says {b}", data.len()),
        });
    }
    if !is_mpegts(&data) {
        return Err(Error::Rejected {
            reason: "not_mpegts",
            message: "content is not MPEG-TS (188-byte packets starting with 0x47)".into(),
        });
    }
    // Staged outside the camera's folders until the bytes are proven to be the announced CID's.
    let staged = deps
        .data_dir
        .join("mirror")
        .join(".incoming")
        .join(format!("{}.part", item.cid));
    let file = deps.data_dir.join(item.path());
    let s = staged.clone();
    tokio::task::spawn_blocking(move || write_file(&s, &data))
        .await
        .map_err(|e| Error::Internal(e.to_string()))??;
    // Adding the bytes here gives their CID: the content is what the origin recorded, or it is not kept.
    let added = match deps.kubo.add_file(&staged).await {
        Ok(a) => a,
        Err(e) => {
            let s = staged.clone();
            let _ = tokio::task::spawn_blocking(move || std::fs::remove_file(s)).await;
            return Err(e);
        }
    };
    if added.cid != item.cid {
        let s = staged.clone();
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_file(s)).await;
        return Err(Error::Rejected {
            reason: "cid_mismatch",
            message: format!(
                "content hashes to {}, not to the announced {}",
                added.cid, item.cid
            ),
        });
    }
    tokio::task::spawn_blocking(move || place(&staged, &file))
        .await
        .map_err(|e| Error::Internal(e.to_string()))??;
    deps.kubo.pin_add(&item.cid).await?;
    Ok(())
}

/// The content of `cid`, refused as soon as it passes `max` bytes.
async fn cat_capped(kubo: &Kubo, cid: &str, max: u64) -> Result<Vec<u8>> {
    let mut stream = kubo.cat(cid).await?;
    let mut data = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if (data.len() + chunk.len()) as u64 > max {
            return Err(Error::Rejected {
                reason: "oversize",
                message: format!("content of {cid} is larger than max_segment_bytes ({max})"),
            });
        }
        data.extend_from_slice(&chunk);
    }
    Ok(data)
}

/// Write `data` to `path` (its folder created if needed).
fn write_file(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().expect("a staged file has a folder");
    std::fs::create_dir_all(dir).map_err(|e| Error::io("cannot create mirror folder", dir, e))?;
    std::fs::write(path, data).map_err(|e| Error::io("cannot write mirrored segment", path, e))
}

/// Move a checked file into its session folder (a rename: a crash never leaves a half file there).
fn place(staged: &Path, path: &Path) -> Result<()> {
    let dir = path.parent().expect("a segment path has a folder");
    std::fs::create_dir_all(dir).map_err(|e| Error::io("cannot create mirror folder", dir, e))?;
    std::fs::rename(staged, path).map_err(|e| Error::io("cannot place mirrored segment", path, e))
}

/// An origin's listing of a camera's segments in `[from, to)` (`GET /cameras/<id>/index.json`).
async fn list_origin(
    http: &reqwest::Client,
    o: &OriginConfig,
    camera: &str,
    from: i64,
    to: i64,
) -> Result<Vec<IndexDoc>> {
    let t = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };
    let url = format!(
        "{}/cameras/{camera}/index.json",
        o.url.trim_end_matches('/')
    );
    let mut rb = http.get(&url).query(&[("from", t(from)), ("to", t(to))]);
    if let Some(tok) = &o.token {
        rb = rb.bearer_auth(tok.expose());
    }
    let fail = |m: String| Error::index("origin listing", format!("{} ({url}): {m}", o.node_id));
    let resp = rb.send().await.map_err(|e| fail(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(fail(format!("HTTP {}", resp.status())));
    }
    resp.json::<Vec<IndexDoc>>()
        .await
        .map_err(|e| fail(format!("not a listing: {e}")))
}

struct AbortOnDrop(actix_rt::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The mirror as a supervised actor.
pub struct Mirror {
    deps: Arc<Deps>,
    clock: Arc<dyn Clock>,
    exit: ExitSlot,
    path: String,
}

impl Mirror {
    pub fn new(deps: Arc<Deps>, clock: Arc<dyn Clock>, exit: ExitSlot, path: String) -> Self {
        Mirror {
            deps,
            clock,
            exit,
            path,
        }
    }
}

impl Actor for Mirror {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let fut = run(self.deps.clone(), self.clock.clone(), self.path.clone());
        ctx.spawn(
            actix::fut::wrap_future(fut).map(|why, act: &mut Self, ctx| {
                act.exit.fail(why);
                ctx.stop();
            }),
        );
    }
}

impl Handler<Terminate> for Mirror {
    type Result = ();
    fn handle(&mut self, _: Terminate, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// On a recording node: counts the mirrors' acknowledgements (`<topic>-have`) into the catalog's replica
/// counts, which retention weighs. Runs as long as the node; resubscribes when the stream ends.
/// What the `replicas` worker needs.
#[derive(Clone)]
pub struct ReplicaCounter {
    pub catalog: Arc<Catalog>,
    pub kubo: Kubo,
    pub link: Link,
    pub topic: String,
    pub node_id: String,
    /// `[retention] mirror_peers`: when not empty, only these pubsub peers' acknowledgements count.
    pub trusted: Vec<String>,
}

pub async fn count_replicas(r: ReplicaCounter, clock: Arc<dyn Clock>, path: String) -> String {
    let ReplicaCounter {
        catalog,
        kubo,
        link,
        topic,
        node_id,
        trusted,
    } = r;
    let topic = have_topic(&topic);
    let jitter = FastRandJitter::new();
    let mut backoff = Backoff::new(policy());
    loop {
        if !link.is_up() {
            link.wait_up().await;
        }
        let mut sub = match kubo.pubsub_sub(&topic).await {
            Ok(s) => s,
            Err(e) => {
                let (attempt, delay) = backoff.next_delay(&jitter);
                if attempt == 1 || attempt % 10 == 0 {
                    tracing::warn!(actor = %path, "cannot subscribe to {topic:?}: {e}; retrying");
                }
                clock.sleep(delay).await;
                continue;
            }
        };
        backoff.reset();
        while let Some(Ok(m)) = sub.next().await {
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(&m.data) else {
                continue;
            };
            let (Some(cid), Some(node)) = (
                v.get("cid").and_then(serde_json::Value::as_str),
                v.get("node_id").and_then(serde_json::Value::as_str),
            ) else {
                continue;
            };
            if node == node_id || !crate::pipeline::announce::plausible_cid(cid) || node.len() > 64
            {
                continue;
            }
            if !trusted.is_empty() && !trusted.contains(&m.from) {
                tracing::debug!(actor = %path, from = %m.from, "acknowledgement from a peer not in [retention] mirror_peers: ignored");
                continue;
            }
            let gone = v.get("gone").and_then(serde_json::Value::as_bool) == Some(true);
            let (cid, node) = (cid.to_string(), node.to_string());
            let counted = if gone {
                catalog.run(move |c| c.remove_replica(&cid, &node)).await
            } else {
                catalog.run(move |c| c.add_replica(&cid, &node)).await
            };
            if let Err(e) = counted {
                tracing::warn!(actor = %path, "cannot count a replica: {e}");
            }
        }
        clock.sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mpegts_is_recognised_by_its_packets() {
        let mut ts = vec![0u8; 188 * 3];
        for p in ts.chunks_mut(188) {
            p[0] = 0x47;
        }
        assert!(is_mpegts(&ts));
        ts.extend_from_slice(&[0x47, 1, 2]);
        assert!(is_mpegts(&ts), "a trailing partial packet is tolerated");
        ts[188] = 0;
        assert!(!is_mpegts(&ts));
        assert!(!is_mpegts(b"<html>not a segment</html>"));
        assert!(!is_mpegts(&[]));
    }

    #[test]
    fn lag_percentiles_come_from_the_samples() {
        let s = Stats::default();
        assert_eq!(s.view().lag_ms_p50, None);
        for ms in 1..=100 {
            s.lag(ms);
        }
        let v = s.view();
        assert_eq!(
            (v.lag_ms_p50, v.lag_ms_p99, v.lag_samples),
            (Some(51), Some(99), 100)
        );
        s.reject("duplicate");
        s.reject("duplicate");
        assert_eq!(s.view().rejected.get("duplicate"), Some(&2));
    }
}
