//! The embedded index: the catalog itself. "Indexing" a segment only marks it; range queries read catalogue
//! rows that have a CID. Used when no MongoDB is configured (a single node, or the demo).

use std::sync::Arc;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;

use super::{Index, IndexDoc, Scope, VariantDoc};
use crate::catalog::Catalog;
use crate::error::Result;

pub struct Embedded {
    catalog: Arc<Catalog>,
    node_id: String,
}

impl Embedded {
    pub fn new(catalog: Arc<Catalog>, node_id: &str) -> Embedded {
        Embedded {
            catalog,
            node_id: node_id.to_string(),
        }
    }
}

impl Index for Embedded {
    fn upsert<'a>(&'a self, _doc: &'a IndexDoc) -> BoxFuture<'a, Result<()>> {
        // The row is the document; the indexer marks it indexed.
        async { Ok(()) }.boxed()
    }

    fn range<'a>(
        &'a self,
        scope: &'a Scope,
        from_ms: i64,
        to_ms: i64,
    ) -> BoxFuture<'a, Result<Vec<IndexDoc>>> {
        async move {
            let (by_factory, key) = scope.parts();
            let key = key.to_string();
            let rows = self
                .catalog
                .run(move |c| c.indexed_range(by_factory, &key, from_ms, to_ms))
                .await?;
            Ok(chain(&rows, &self.node_id))
        }
        .boxed()
    }

    fn by_cid<'a>(&'a self, cid: &'a str) -> BoxFuture<'a, Result<Vec<IndexDoc>>> {
        async move {
            let cid = cid.to_string();
            let row = self.catalog.run(move |c| c.by_cid(&cid)).await?;
            Ok(row
                .filter(|s| s.cid.is_some())
                .and_then(|s| IndexDoc::from_segment(&s, &self.node_id, None))
                .into_iter()
                .collect())
        }
        .boxed()
    }

    fn first_after<'a>(
        &'a self,
        device: &'a str,
        after_ms: i64,
    ) -> BoxFuture<'a, Result<Option<i64>>> {
        async move {
            let d = device.to_string();
            self.catalog
                .run(move |c| c.first_indexed_after(&d, after_ms))
                .await
        }
        .boxed()
    }

    fn upsert_variant<'a>(&'a self, doc: &'a VariantDoc) -> BoxFuture<'a, Result<()>> {
        async move {
            let d = doc.clone();
            self.catalog.run(move |c| c.put_variant(&d)).await
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
            let d = device.to_string();
            self.catalog
                .run(move |c| c.variants(&d, from_ms, to_ms))
                .await
        }
        .boxed()
    }

    fn delete_variants<'a>(&'a self, _ids: &'a [String]) -> BoxFuture<'a, Result<()>> {
        // The catalog's rows are the documents: the transcoder deletes them itself.
        async { Ok(()) }.boxed()
    }

    fn variant_by_cid<'a>(&'a self, cid: &'a str) -> BoxFuture<'a, Result<Vec<VariantDoc>>> {
        async move {
            let cid = cid.to_string();
            self.catalog.run(move |c| c.variant_by_cid(&cid)).await
        }
        .boxed()
    }

    fn name(&self) -> &'static str {
        "embedded"
    }
}

/// Documents of catalogue rows in time order, each chained to the row before it of the same camera.
pub fn chain(rows: &[crate::catalog::Segment], node_id: &str) -> Vec<IndexDoc> {
    let mut prev: std::collections::HashMap<&str, Option<String>> = Default::default();
    rows.iter()
        .filter_map(|s| {
            let p = prev.insert(&s.camera, s.cid.clone()).flatten();
            IndexDoc::from_segment(s, node_id, p)
        })
        .collect()
}
