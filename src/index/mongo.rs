//! The MongoDB index (official driver): collection `segments`, documents shaped as in DESIGN with BSON dates,
//! indexes on (device_id, start) and (factory_id, start) created at start, upserts by `_id`. Only the common
//! MongoDB API is used, so SecantusDB (the test bed) and a real mongod behave the same.

use futures_util::future::BoxFuture;
use futures_util::{FutureExt, TryStreamExt};
use mongodb::bson::{DateTime, Document, doc};
use mongodb::options::ClientOptions;
use mongodb::{Client, Collection, IndexModel};

use super::{Index, IndexDoc, Scope, VariantDoc};
use crate::error::{Error, Result};

/// `{$gte: from, $lt: to}` as BSON dates, clamped to years 1..=9999 (what every server, and every driver's date
/// type, can represent).
fn start_between(from_ms: i64, to_ms: i64) -> Document {
    const MIN_MS: i64 = -62_135_596_800_000;
    const MAX_MS: i64 = 253_402_300_799_999;
    doc! {
        "$gte": DateTime::from_millis(from_ms.clamp(MIN_MS, MAX_MS)),
        "$lt": DateTime::from_millis(to_ms.clamp(MIN_MS, MAX_MS)),
    }
}

/// Every document of `coll` matching `filter`, in `sort` order, at most `limit`.
async fn find_all(
    coll: &Collection<Document>,
    filter: Document,
    sort: Option<Document>,
    limit: Option<i64>,
    op: &'static str,
) -> Result<Vec<Document>> {
    let mut find = coll.find(filter);
    if let Some(s) = sort {
        find = find.sort(s);
    }
    if let Some(l) = limit {
        find = find.limit(l);
    }
    let cursor = find.await.map_err(err(op))?;
    cursor.try_collect().await.map_err(err(op))
}

/// Typed reads of a document's fields, each failing with the document's id and the field's name.
struct Fields<'a>(&'a Document, &'static str);

impl Fields<'_> {
    fn bad(&self, f: &str) -> Error {
        Error::index(
            "read",
            format!("{} {:?} has no valid {f}", self.1, self.0.get("_id")),
        )
    }
    fn s(&self, f: &str) -> Result<String> {
        self.0
            .get_str(f)
            .map(str::to_string)
            .map_err(|_| self.bad(f))
    }
    fn i(&self, f: &str) -> Result<i64> {
        self.0
            .get_i64(f)
            .or_else(|_| self.0.get_i32(f).map(i64::from))
            .map_err(|_| self.bad(f))
    }
    fn t(&self, f: &str) -> Result<i64> {
        self.0
            .get_datetime(f)
            .map(|t| t.timestamp_millis())
            .map_err(|_| self.bad(f))
    }
}

pub struct Mongo {
    segments: Collection<Document>,
    variants: Collection<Document>,
    db: mongodb::Database,
}

fn err(op: &'static str) -> impl Fn(mongodb::error::Error) -> Error {
    move |e| Error::index(op, e.to_string())
}

impl Mongo {
    /// Connect (lazily: the driver connects on first use) and create the indexes. `timeout` bounds server
    /// selection, so an unreachable server fails a call in that time instead of hanging.
    pub async fn connect(uri: &str, database: &str, timeout: std::time::Duration) -> Result<Mongo> {
        let mut opts = ClientOptions::parse(uri).await.map_err(err("connect"))?;
        opts.server_selection_timeout = Some(timeout);
        opts.connect_timeout = Some(timeout);
        opts.app_name = Some("vigil".into());
        let client = Client::with_options(opts).map_err(err("connect"))?;
        let db = client.database(database);
        Ok(Mongo {
            segments: db.collection("segments"),
            variants: db.collection("variants"),
            db,
        })
    }

    /// One round trip to the server (`ping`): is the index reachable now?
    pub async fn ping(&self) -> Result<()> {
        self.db
            .run_command(doc! { "ping": 1 })
            .await
            .map_err(err("ping"))?;
        Ok(())
    }

    /// Create the range-query indexes (idempotent).
    pub async fn ensure_indexes(&self) -> Result<()> {
        let models = vec![
            IndexModel::builder()
                .keys(doc! { "device_id": 1, "start": 1 })
                .build(),
            IndexModel::builder()
                .keys(doc! { "factory_id": 1, "start": 1 })
                .build(),
            IndexModel::builder().keys(doc! { "cid": 1 }).build(),
        ];
        self.segments
            .create_indexes(models)
            .await
            .map_err(err("create indexes"))?;
        self.variants
            .create_indexes(vec![
                IndexModel::builder()
                    .keys(doc! { "device_id": 1, "start": 1 })
                    .build(),
                IndexModel::builder().keys(doc! { "cid": 1 }).build(),
            ])
            .await
            .map_err(err("create indexes"))?;
        Ok(())
    }

    fn variant_to_bson(d: &VariantDoc) -> Document {
        doc! {
            "_id": &d.id,
            "variant_of": &d.variant_of,
            "source_cid": &d.source_cid,
            "rendition": &d.rendition,
            "width": d.width,
            "height": d.height,
            "video_kbps": d.video_kbps,
            "cid": &d.cid,
            "factory_id": &d.factory_id,
            "device_id": &d.device_id,
            "session": &d.session,
            "seq": d.seq,
            "start": DateTime::from_millis(d.start_ms),
            "end": DateTime::from_millis(d.end_ms),
            "duration_ms": d.duration_ms,
            "bytes": d.bytes,
            "job_id": &d.job_id,
            "node_id": &d.node_id,
        }
    }

    fn variant_from_bson(d: &Document) -> Result<VariantDoc> {
        let f = Fields(d, "variant");
        let (s, i, t) = (|k: &str| f.s(k), |k: &str| f.i(k), |k: &str| f.t(k));
        Ok(VariantDoc {
            id: s("_id")?,
            variant_of: s("variant_of")?,
            source_cid: s("source_cid")?,
            rendition: s("rendition")?,
            width: i("width")?,
            height: i("height")?,
            video_kbps: i("video_kbps")?,
            cid: s("cid")?,
            factory_id: s("factory_id")?,
            device_id: s("device_id")?,
            session: s("session")?,
            seq: i("seq")?,
            start_ms: t("start")?,
            end_ms: t("end")?,
            duration_ms: i("duration_ms")?,
            bytes: i("bytes")?,
            job_id: s("job_id")?,
            node_id: s("node_id")?,
        })
    }

    fn to_bson(d: &IndexDoc) -> Document {
        doc! {
            "_id": &d.id,
            "filename": &d.filename,
            "cid": &d.cid,
            "factory_id": &d.factory_id,
            "device_id": &d.device_id,
            "session": &d.session,
            "seq": d.seq,
            "start": DateTime::from_millis(d.start_ms),
            "end": DateTime::from_millis(d.end_ms),
            "duration_ms": d.duration_ms,
            "bytes": d.bytes,
            "first_in_session": d.first_in_session,
            "node_id": &d.node_id,
            "prev_cid": d.prev_cid.as_deref(),
        }
    }

    fn from_bson(d: &Document) -> Result<IndexDoc> {
        let f = Fields(d, "document");
        let (s, i, t) = (|k: &str| f.s(k), |k: &str| f.i(k), |k: &str| f.t(k));
        Ok(IndexDoc {
            id: s("_id")?,
            filename: s("filename")?,
            cid: s("cid")?,
            factory_id: s("factory_id")?,
            device_id: s("device_id")?,
            session: s("session")?,
            seq: i("seq")?,
            start_ms: t("start")?,
            end_ms: t("end")?,
            duration_ms: i("duration_ms")?,
            bytes: i("bytes")?,
            first_in_session: d
                .get_bool("first_in_session")
                .map_err(|_| f.bad("first_in_session"))?,
            node_id: s("node_id")?,
            prev_cid: d.get_str("prev_cid").ok().map(str::to_string),
        })
    }
}

impl Index for Mongo {
    fn upsert<'a>(&'a self, doc: &'a IndexDoc) -> BoxFuture<'a, Result<()>> {
        async move {
            self.segments
                .replace_one(doc! { "_id": &doc.id }, Self::to_bson(doc))
                .upsert(true)
                .await
                .map_err(err("upsert"))?;
            Ok(())
        }
        .boxed()
    }

    fn range<'a>(
        &'a self,
        scope: &'a Scope,
        from_ms: i64,
        to_ms: i64,
    ) -> BoxFuture<'a, Result<Vec<IndexDoc>>> {
        async move {
            let (by_factory, key) = scope.parts();
            let field = if by_factory {
                "factory_id"
            } else {
                "device_id"
            };
            let filter = doc! { field: key, "start": start_between(from_ms, to_ms) };
            let sort = doc! { "start": 1, "device_id": 1, "session": 1, "seq": 1 };
            let docs = find_all(&self.segments, filter, Some(sort), None, "range").await?;
            docs.iter().map(Self::from_bson).collect()
        }
        .boxed()
    }

    fn by_cid<'a>(&'a self, cid: &'a str) -> BoxFuture<'a, Result<Vec<IndexDoc>>> {
        async move {
            let docs = find_all(
                &self.segments,
                doc! { "cid": cid },
                None,
                Some(16),
                "find by cid",
            )
            .await?;
            docs.iter().map(Self::from_bson).collect()
        }
        .boxed()
    }

    fn first_after<'a>(
        &'a self,
        device: &'a str,
        after_ms: i64,
    ) -> BoxFuture<'a, Result<Option<i64>>> {
        async move {
            let filter =
                doc! { "device_id": device, "start": { "$gt": DateTime::from_millis(after_ms) } };
            let docs = find_all(
                &self.segments,
                filter,
                Some(doc! { "start": 1 }),
                Some(1),
                "first after",
            )
            .await?;
            Ok(docs
                .first()
                .and_then(|d| d.get_datetime("start").ok())
                .map(|t| t.timestamp_millis()))
        }
        .boxed()
    }

    fn upsert_variant<'a>(&'a self, doc: &'a VariantDoc) -> BoxFuture<'a, Result<()>> {
        async move {
            self.variants
                .replace_one(doc! { "_id": &doc.id }, Self::variant_to_bson(doc))
                .upsert(true)
                .await
                .map_err(err("upsert variant"))?;
            Ok(())
        }
        .boxed()
    }

    fn variants<'a>(
        &'a self,
        device: &'a str,
        from_ms: i64,
        to_ms: i64,
    ) -> BoxFuture<'a, Result<Vec<VariantDoc>>> {
        async move {
            let filter = doc! { "device_id": device, "start": start_between(from_ms, to_ms) };
            let sort = doc! { "start": 1, "rendition": 1 };
            let docs = find_all(&self.variants, filter, Some(sort), None, "variants").await?;
            docs.iter().map(Self::variant_from_bson).collect()
        }
        .boxed()
    }

    fn delete_variants<'a>(&'a self, ids: &'a [String]) -> BoxFuture<'a, Result<()>> {
        async move {
            self.variants
                .delete_many(doc! { "_id": { "$in": ids } })
                .await
                .map_err(err("delete variants"))?;
            Ok(())
        }
        .boxed()
    }

    fn variant_by_cid<'a>(&'a self, cid: &'a str) -> BoxFuture<'a, Result<Vec<VariantDoc>>> {
        async move {
            let docs = find_all(
                &self.variants,
                doc! { "cid": cid },
                None,
                Some(16),
                "find variant by cid",
            )
            .await?;
            docs.iter().map(Self::variant_from_bson).collect()
        }
        .boxed()
    }

    fn name(&self) -> &'static str {
        "mongodb"
    }
}
