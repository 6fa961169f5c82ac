//! The distribution pipeline: `Pinner` (add to IPFS → CID, pin locally or on the cluster), `Indexer` (index
//! document), `Publisher` (pubsub announcement). Each is a catalog-driven stage: it takes its backlog from the
//! catalog at start (crash recovery), is woken when the previous step finishes a segment, retries with backoff
//! while its dependency is down (recording is never touched), and records each step in the catalog. Every step
//! is idempotent (same file → same CID, pin again is a no-op, upsert by id), so a crash means "redo", never
//! "lose" or "duplicate".

pub mod announce;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use supervisors::{Backoff, BackoffPolicy, Clock, ExitSlot, FastRandJitter, Terminate};

use crate::catalog::{Catalog, Segment, Stage};
use crate::error::{Error, Result};
use crate::index::{Index, IndexDoc};
use crate::ipfs::cluster::Cluster;
use crate::ipfs::kubo::Kubo;
use crate::ipfs::link::Link;
use announce::Announcement;

pub use crate::catalog::Wake;

/// Where the pinner pins.
#[derive(Debug, Clone)]
pub enum Pinning {
    Local,
    Cluster { client: Cluster, min: i32, max: i32 },
}

/// What the stages share.
pub struct Deps {
    pub catalog: Arc<Catalog>,
    pub data_dir: PathBuf,
    pub node_id: String,
    pub kubo: Kubo,
    pub pinning: Pinning,
    pub link: Link,
    pub index: IndexSource,
    pub topic: String,
    pub wake: Arc<Wake>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The index's link as the indexer sees it (MongoDB; `/metrics`).
    pub index_link: Arc<crate::metrics::LinkCell>,
}

/// How the indexer gets its backend (MongoDB connects asynchronously, with retries).
pub enum IndexSource {
    Ready(Arc<dyn Index>),
    Mongo { uri: String, database: String },
}

const BATCH: usize = 32;
/// Idle rescan, in case a wake-up was missed.
const IDLE_RESCAN: Duration = Duration::from_secs(5);

fn retry_policy() -> BackoffPolicy {
    BackoffPolicy {
        initial: Duration::from_millis(500),
        max: Duration::from_secs(15),
        factor: 2.0,
        jitter: 0.2,
        reset_after: Duration::from_secs(0),
        immediate_after_healthy: false,
    }
}

fn next(stage: Stage) -> Option<Stage> {
    match stage {
        Stage::Pin => Some(Stage::Index),
        Stage::Index => Some(Stage::Publish),
        Stage::Publish => None,
    }
}

/// One stage's work on one segment; returns the CID for the pin stage.
async fn process(
    stage: Stage,
    deps: &Deps,
    index: &Option<Arc<dyn Index>>,
    seg: &Segment,
) -> Result<Option<String>> {
    match stage {
        Stage::Pin => {
            let path = deps.data_dir.join(&seg.path);
            let added = deps.kubo.add_file(&path).await?;
            match &deps.pinning {
                Pinning::Local => deps.kubo.pin_add(&added.cid).await?,
                Pinning::Cluster { client, min, max } => {
                    client.pin(&added.cid, &seg.path, *min, *max).await?
                }
            }
            Ok(Some(added.cid))
        }
        Stage::Index => {
            let s = seg.clone();
            let prev = deps.catalog.run(move |c| c.prev_cid(&s)).await?;
            let doc = IndexDoc::from_segment(seg, &deps.node_id, prev).ok_or_else(|| {
                Error::index("upsert", format!("segment {} has no CID", seg.path))
            })?;
            index
                .as_ref()
                .expect("index backend ready")
                .upsert(&doc)
                .await?;
            Ok(None)
        }
        Stage::Publish => {
            let s = seg.clone();
            let prev = deps.catalog.run(move |c| c.prev_cid(&s)).await?;
            let a = Announcement::of(seg, prev, &deps.node_id).ok_or_else(|| {
                Error::ipfs("pubsub/pub", format!("segment {} has no CID", seg.path))
            })?;
            let data = serde_json::to_vec(&a).expect("announcement serialises");
            match deps.kubo.pubsub_pub(&deps.topic, &data).await {
                // js-ipfs refuses to publish when no peer subscribes (Kubo accepts). Pubsub is lossy by design and
                // mirrors reconcile through the index, so "nobody listening" is not a reason to hold the queue.
                Err(Error::IpfsApi { message, .. }) if message.contains("InsufficientPeers") => {
                    tracing::debug!(topic = %deps.topic, "no subscriber on the topic; announcement not delivered");
                    Ok(None)
                }
                other => other.map(|()| None),
            }
        }
    }
}

fn needs_ipfs(stage: Stage) -> bool {
    matches!(stage, Stage::Pin | Stage::Publish)
}

/// The stage's whole life; returns why it stopped (only on a catalogue failure).
async fn run(stage: Stage, deps: Arc<Deps>, clock: Arc<dyn Clock>, path: String) -> String {
    let jitter = FastRandJitter::new();
    let mut backoff = Backoff::new(retry_policy());
    let mut index: Option<Arc<dyn Index>> = None;
    // MongoDB also gets a ping while the indexer idles, so that its link state stays true without traffic.
    let mut mongo: Option<Arc<crate::index::mongo::Mongo>> = None;
    if stage == Stage::Index {
        loop {
            match &deps.index {
                IndexSource::Ready(i) => {
                    index = Some(i.clone());
                    deps.index_link.set(true);
                }
                IndexSource::Mongo { uri, database } => {
                    let connected = async {
                        let m = crate::index::mongo::Mongo::connect(
                            uri,
                            database,
                            Duration::from_secs(5),
                        )
                        .await?;
                        m.ensure_indexes().await?;
                        Ok::<_, Error>(m)
                    }
                    .await;
                    match connected {
                        Ok(m) => {
                            tracing::info!(actor = %path, %database, "MongoDB index ready (indexes on device_id/start, factory_id/start)");
                            let m = Arc::new(m);
                            mongo = Some(m.clone());
                            index = Some(m as Arc<dyn Index>);
                            deps.index_link.set(true);
                        }
                        Err(e) => {
                            deps.index_link.set(false);
                            let (attempt, delay) = backoff.next_delay(&jitter);
                            if attempt == 1 || attempt % 10 == 0 {
                                tracing::warn!(actor = %path, attempt, delay_ms = delay.as_millis() as u64, "MongoDB not ready: {e}; indexing waits, recording goes on");
                            }
                            clock.sleep(delay).await;
                            continue;
                        }
                    }
                }
            }
            backoff.reset();
            break;
        }
    }
    let wake = deps.wake.stage(stage);
    loop {
        if needs_ipfs(stage) && !deps.link.is_up() {
            deps.link.wait_up().await;
        }
        let batch = match deps.catalog.run(move |c| c.pending(stage, BATCH)).await {
            Ok(b) => b,
            // Busy or full: wait, do not crash the stage (its restarts would count against `services`).
            Err(e) if e.is_transient() => {
                let (attempt, delay) = backoff.next_delay(&jitter);
                if attempt == 1 || attempt % 10 == 0 {
                    tracing::warn!(actor = %path, stage = stage.name(), attempt, "catalog: {e}; retrying");
                }
                clock.sleep(delay).await;
                continue;
            }
            Err(e) => return format!("catalog: {e}"),
        };
        if batch.is_empty() {
            tokio::select! {
                () = wake.notified() => {}
                () = clock.sleep(IDLE_RESCAN) => {
                    if let Some(m) = &mongo {
                        deps.index_link.set(m.ping().await.is_ok());
                    }
                }
            }
            continue;
        }
        for seg in batch {
            loop {
                let began = std::time::Instant::now();
                let done = process(stage, &deps, &index, &seg).await;
                if stage == Stage::Index {
                    deps.index_link
                        .set(!matches!(&done, Err(e) if e.is_transient()));
                }
                match done {
                    Ok(cid) => {
                        let took = began.elapsed();
                        let id = seg.id;
                        // Recording the step is retried while the catalog is busy or full: the step itself is
                        // idempotent, but redoing it is needless work.
                        loop {
                            let cid = cid.clone();
                            match deps
                                .catalog
                                .run(move |c| c.mark(stage, id, cid.as_deref()))
                                .await
                            {
                                Ok(()) => break,
                                Err(e) if e.is_transient() => {
                                    let (attempt, delay) = backoff.next_delay(&jitter);
                                    if attempt == 1 || attempt % 10 == 0 {
                                        tracing::warn!(actor = %path, stage = stage.name(), attempt, "catalog: {e}; retrying");
                                    }
                                    clock.sleep(delay).await;
                                }
                                Err(e) => return format!("catalog: {e}"),
                            }
                        }
                        let end = seg.start_ms + seg.duration_ms;
                        let age = (chrono::Utc::now().timestamp_millis() - end).max(0) as u64;
                        deps.metrics.stage_done(
                            stage.name(),
                            Some(took),
                            Duration::from_millis(age),
                        );
                        if backoff.attempt() > 0 {
                            tracing::info!(actor = %path, stage = stage.name(), "dependency back: {} resumed", stage.name());
                        }
                        backoff.reset();
                        if let Some(n) = next(stage) {
                            deps.wake.stage(n).notify_one();
                        }
                        break;
                    }
                    Err(e) if e.is_transient() => {
                        let (attempt, delay) = backoff.next_delay(&jitter);
                        if attempt == 1 || attempt % 10 == 0 {
                            let backlog =
                                deps.catalog.run(|c| c.backlog()).await.unwrap_or_default();
                            tracing::warn!(actor = %path, stage = stage.name(), attempt, delay_ms = delay.as_millis() as u64,
                                backlog_pin = backlog.pin, backlog_index = backlog.index, backlog_publish = backlog.publish,
                                "{e}; {} paused, retrying (recording goes on)", stage.name());
                        }
                        clock.sleep(delay).await;
                        if needs_ipfs(stage) && !deps.link.is_up() {
                            deps.link.wait_up().await;
                        }
                    }
                    Err(e) => {
                        tracing::error!(actor = %path, stage = stage.name(), segment = %seg.path, "{e}: segment set aside (the pipeline goes on without it)");
                        deps.metrics.set_aside();
                        let (id, why) = (seg.id, format!("{}: {e}", stage.name()));
                        if let Err(e) = deps.catalog.run(move |c| c.set_aside(id, &why)).await {
                            return format!("catalog: {e}");
                        }
                        break;
                    }
                }
            }
        }
    }
}

/// A stage as a supervised actor.
pub struct StageWorker {
    stage: Stage,
    deps: Arc<Deps>,
    clock: Arc<dyn Clock>,
    exit: ExitSlot,
    path: String,
}

impl StageWorker {
    pub fn new(
        stage: Stage,
        deps: Arc<Deps>,
        clock: Arc<dyn Clock>,
        exit: ExitSlot,
        path: String,
    ) -> Self {
        StageWorker {
            stage,
            deps,
            clock,
            exit,
            path,
        }
    }
}

impl Actor for StageWorker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let fut = run(
            self.stage,
            self.deps.clone(),
            self.clock.clone(),
            self.path.clone(),
        );
        ctx.spawn(
            actix::fut::wrap_future(fut).map(|why, act: &mut Self, ctx| {
                act.exit.fail(why);
                ctx.stop();
            }),
        );
    }
}

impl Handler<Terminate> for StageWorker {
    type Result = ();
    fn handle(&mut self, _: Terminate, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
