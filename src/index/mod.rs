//! The segment index behind one trait: MongoDB (collection `segments`) when a URI is configured, otherwise the
//! embedded catalog. Upserts are keyed by `<device>/<session>/<seq>`, so writing a document twice is harmless;
//! range queries (by device or factory) return segments in time order — replay uses them.

pub mod embedded;
pub mod mongo;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::catalog::Segment;
use crate::error::Result;

/// One index document (the DESIGN's shape; times are unix milliseconds here, BSON dates in MongoDB).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexDoc {
    /// `<device>/<session>/<seq>`
    pub id: String,
    /// Path relative to the node's data folder: `<device>/<session>/seg_00001.ts`.
    pub filename: String,
    pub cid: String,
    pub factory_id: String,
    pub device_id: String,
    pub session: String,
    pub seq: i64,
    pub start_ms: i64,
    pub end_ms: i64,
    pub duration_ms: i64,
    pub bytes: i64,
    pub first_in_session: bool,
    pub node_id: String,
    /// CID of the camera's segment before this one (the chain `vigil verify` walks).
    #[serde(default)]
    pub prev_cid: Option<String>,
}

impl IndexDoc {
    /// The document for a pinned catalogue row (`prev_cid`: see [`IndexDoc::prev_cid`]).
    pub fn from_segment(s: &Segment, node_id: &str, prev_cid: Option<String>) -> Option<IndexDoc> {
        Some(IndexDoc {
            id: format!("{}/{}/{}", s.camera, s.session, s.seq),
            filename: s.path.clone(),
            cid: s.cid.clone()?,
            factory_id: s.factory.clone(),
            device_id: s.camera.clone(),
            session: s.session.clone(),
            seq: s.seq,
            start_ms: s.start_ms,
            end_ms: s.start_ms + s.duration_ms,
            duration_ms: s.duration_ms,
            bytes: s.bytes,
            first_in_session: s.first_in_session,
            node_id: node_id.to_string(),
            prev_cid,
        })
    }
}

/// A transcoded rendition of one source segment (the transcoder role): MongoDB collection `variants`, the
/// catalog's `variants` table in the embedded index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VariantDoc {
    /// `<source id>/<rendition>`
    pub id: String,
    /// The source segment's index id (`<device>/<session>/<seq>`) and CID.
    pub variant_of: String,
    pub source_cid: String,
    /// The rendition's name in its job's ladder (e.g. `360p`) and its size and video bit rate.
    pub rendition: String,
    pub width: i64,
    pub height: i64,
    pub video_kbps: i64,
    pub cid: String,
    pub factory_id: String,
    pub device_id: String,
    pub session: String,
    pub seq: i64,
    pub start_ms: i64,
    pub end_ms: i64,
    pub duration_ms: i64,
    pub bytes: i64,
    /// The transcoding job and the node that ran it.
    pub job_id: String,
    pub node_id: String,
}

/// What a range query selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Device(String),
    Factory(String),
}

impl Scope {
    /// Whether the scope is a factory (else a device), and its id.
    pub fn parts(&self) -> (bool, &str) {
        match self {
            Scope::Device(d) => (false, d),
            Scope::Factory(f) => (true, f),
        }
    }
}

/// An index backend.
pub trait Index: Send + Sync {
    /// Insert or replace the document with this id.
    fn upsert<'a>(&'a self, doc: &'a IndexDoc) -> BoxFuture<'a, Result<()>>;
    /// Documents of `scope` starting in `[from_ms, to_ms)`, in time order.
    fn range<'a>(
        &'a self,
        scope: &'a Scope,
        from_ms: i64,
        to_ms: i64,
    ) -> BoxFuture<'a, Result<Vec<IndexDoc>>>;
    /// The documents whose CID is `cid` (normally one).
    fn by_cid<'a>(&'a self, cid: &'a str) -> BoxFuture<'a, Result<Vec<IndexDoc>>>;
    /// The start of camera `device`'s first document starting after `after_ms`, if any (one indexed lookup).
    fn first_after<'a>(
        &'a self,
        device: &'a str,
        after_ms: i64,
    ) -> BoxFuture<'a, Result<Option<i64>>>;
    /// Insert or replace a variant document.
    fn upsert_variant<'a>(&'a self, doc: &'a VariantDoc) -> BoxFuture<'a, Result<()>>;
    /// Variants of camera `device` whose source starts in `[from_ms, to_ms)`, in time order (every rendition).
    fn variants<'a>(
        &'a self,
        device: &'a str,
        from_ms: i64,
        to_ms: i64,
    ) -> BoxFuture<'a, Result<Vec<VariantDoc>>>;
    /// Delete these variant documents (transcoder retention).
    fn delete_variants<'a>(&'a self, ids: &'a [String]) -> BoxFuture<'a, Result<()>>;
    /// The variants whose CID is `cid`.
    fn variant_by_cid<'a>(&'a self, cid: &'a str) -> BoxFuture<'a, Result<Vec<VariantDoc>>>;
    /// A short name for logs.
    fn name(&self) -> &'static str;
}

/// The index a node reads from, shared by the mirror and the web server: MongoDB (connected on first use,
/// and again after a failed attempt) or the embedded catalog.
pub struct Shared {
    source: Source,
    cell: tokio::sync::OnceCell<std::sync::Arc<dyn Index>>,
}

enum Source {
    Ready(std::sync::Arc<dyn Index>),
    Mongo { uri: String, database: String },
}

impl Shared {
    /// The embedded index (the catalog itself).
    pub fn embedded(index: std::sync::Arc<dyn Index>) -> Shared {
        Shared {
            source: Source::Ready(index),
            cell: tokio::sync::OnceCell::new(),
        }
    }

    /// MongoDB at `uri`, database `database`.
    pub fn mongo(uri: &str, database: &str) -> Shared {
        Shared {
            source: Source::Mongo {
                uri: uri.to_string(),
                database: database.to_string(),
            },
            cell: tokio::sync::OnceCell::new(),
        }
    }

    /// Whether other nodes write to this index too (then it lists their segments).
    pub fn is_shared(&self) -> bool {
        matches!(self.source, Source::Mongo { .. })
    }

    /// The index, connecting if needed (an error if MongoDB cannot be reached now; the next call tries again).
    pub async fn get(&self) -> Result<std::sync::Arc<dyn Index>> {
        match &self.source {
            Source::Ready(i) => Ok(i.clone()),
            Source::Mongo { uri, database } => self
                .cell
                .get_or_try_init(|| async {
                    let m = mongo::Mongo::connect(uri, database, std::time::Duration::from_secs(5))
                        .await?;
                    m.ensure_indexes().await?;
                    Ok(std::sync::Arc::new(m) as std::sync::Arc<dyn Index>)
                })
                .await
                .cloned(),
        }
    }
}
