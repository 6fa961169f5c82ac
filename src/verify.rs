//! `vigil verify`: proves a camera's footage over a time range complete and unaltered, on any node.
//!
//! It reads the range from the index (MongoDB, or the node's catalog) and from this node's catalog, then
//! - **complete**: within each session the index has every seq from the first to the last in the range, and
//!   every segment this node holds is in the index; each document's `prev_cid` is the CID of the document
//!   before it (the chain the announcements carry), so a removed document shows as a broken link too;
//! - **unaltered**: every segment's bytes — this node's copy when it holds one, else fetched through its IPFS
//!   node — hash (IPFS `add --only-hash`, the options vigil adds with) to the CID the index records; a copy
//!   catalogued here whose file is gone is named as missing;
//! - **gaps**: where sessions meet (an ffmpeg restart or an outage), with the time between them.
//!
//! Every finding names the segment (session/seq, file, CID). Exit status 0 only when complete and unaltered.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use serde::Serialize;

use crate::catalog::{Catalog, Segment};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::index::{IndexDoc, Scope};
use crate::ipfs::kubo::Kubo;

/// One segment's check: its size and whether this node's copy was read, or what is wrong.
type Checked = std::result::Result<(u64, bool), Finding>;

/// Segments hashed at once.
const CONCURRENCY: usize = 4;

/// One problem, naming the segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// `missing_seq`, `not_indexed`, `broken_chain`, `altered`, `file_gone`, `unreadable`.
    pub kind: &'static str,
    /// `<session>/<seq>`
    pub segment: String,
    pub detail: String,
}

/// Where two sessions meet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Join {
    pub before: String,
    pub after: String,
    /// Time between the end of one and the start of the next.
    pub gap_ms: i64,
}

/// What `vigil verify` found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub camera: String,
    /// `mongodb` (shared: the chain and completeness are checked against what the recording node wrote) or
    /// `embedded` (this node's catalog is the index: only the bytes are proved independently).
    pub index: &'static str,
    pub from_ms: i64,
    pub to_ms: i64,
    pub segments: usize,
    pub sessions: usize,
    pub checked_bytes: u64,
    pub local_copies: usize,
    pub complete: bool,
    pub unaltered: bool,
    pub findings: Vec<Finding>,
    pub joins: Vec<Join>,
}

impl Report {
    /// Complete and unaltered, with something in the range.
    pub fn ok(&self) -> bool {
        self.complete && self.unaltered && self.segments > 0
    }
}

fn t(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "camera {} from {} to {}: {} segment(s) in {} session(s), {} bytes hashed ({} from this node's copies)",
            self.camera,
            t(self.from_ms),
            t(self.to_ms),
            self.segments,
            self.sessions,
            self.checked_bytes,
            self.local_copies
        )?;
        if self.index == "embedded" {
            writeln!(
                f,
                "  note: the index is this node's own catalog (no [index]): documents and their chain come from the same rows, so completeness is only as good as this catalog; the bytes are still rehashed"
            )?;
        }
        if self.segments == 0 {
            writeln!(
                f,
                "  nothing: no segment of camera {} is indexed in this range (a wrong camera id, range or index?)",
                self.camera
            )?;
        }
        for j in &self.joins {
            writeln!(
                f,
                "  join: {} → {} ({:.1} s between them)",
                j.before,
                j.after,
                j.gap_ms as f64 / 1000.0
            )?;
        }
        for x in &self.findings {
            writeln!(f, "  {}: {}: {}", x.kind, x.segment, x.detail)?;
        }
        writeln!(
            f,
            "complete: {}; unaltered: {}; {}",
            if self.complete { "yes" } else { "NO" },
            if self.unaltered { "yes" } else { "NO" },
            if self.ok() { "VERIFIED" } else { "FAILED" }
        )
    }
}

fn key(session: &str, seq: i64) -> String {
    format!("{session}/{seq}")
}

/// Check the completeness of `docs` (time order) and the chain; the segments this node holds (`local`)
/// must all be indexed.
fn completeness(docs: &[IndexDoc], local: &[Segment]) -> (Vec<Finding>, Vec<Join>, usize) {
    let mut findings = Vec::new();
    let mut joins = Vec::new();
    let mut sessions: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    for d in docs {
        sessions.entry(&d.session).or_default().push(d.seq);
    }
    for (session, seqs) in &mut sessions {
        seqs.sort_unstable();
        seqs.dedup();
        for w in seqs.windows(2) {
            for missing in w[0] + 1..w[1] {
                findings.push(Finding {
                    kind: "missing_seq",
                    segment: key(session, missing),
                    detail: format!(
                        "session {session} has seq {} and {} but no {missing} in the index",
                        w[0], w[1]
                    ),
                });
            }
        }
    }
    let indexed: HashMap<(&str, i64), &IndexDoc> = docs
        .iter()
        .map(|d| ((d.session.as_str(), d.seq), d))
        .collect();
    for s in local {
        if !indexed.contains_key(&(s.session.as_str(), s.seq)) && s.cid.is_some() {
            findings.push(Finding {
                kind: "not_indexed",
                segment: key(&s.session, s.seq),
                detail: format!(
                    "{} (CID {}) is held here but has no index document",
                    s.path,
                    s.cid.as_deref().unwrap_or("-")
                ),
            });
        }
    }
    for w in docs.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        if let Some(p) = &b.prev_cid
            && *p != a.cid
        {
            findings.push(Finding {
                kind: "broken_chain",
                segment: key(&b.session, b.seq),
                detail: format!(
                    "its prev_cid {p} is not the CID of the segment indexed before it ({}, {}): a segment between them is missing from the index",
                    key(&a.session, a.seq),
                    a.cid
                ),
            });
        }
        if a.session != b.session {
            joins.push(Join {
                before: key(&a.session, a.seq),
                after: key(&b.session, b.seq),
                gap_ms: b.start_ms - a.end_ms,
            });
        }
    }
    (findings, joins, sessions.len())
}

/// The bytes of a segment: this node's copy if it holds one, else through IPFS.
async fn bytes_of(
    data_dir: &std::path::Path,
    kubo: Option<&Kubo>,
    doc: &IndexDoc,
    local: Option<&Segment>,
) -> std::result::Result<(Vec<u8>, bool), Finding> {
    if let Some(s) = local {
        let path = data_dir.join(&s.path);
        return match tokio::fs::read(&path).await {
            Ok(b) => Ok((b, true)),
            Err(e) => Err(Finding {
                kind: "file_gone",
                segment: key(&doc.session, doc.seq),
                detail: format!(
                    "catalogued here at {} but it cannot be read ({e})",
                    path.display()
                ),
            }),
        };
    }
    let Some(kubo) = kubo else {
        return Err(Finding {
            kind: "unreadable",
            segment: key(&doc.session, doc.seq),
            detail: format!("not held here and no [ipfs] to fetch {} through", doc.cid),
        });
    };
    kubo.cat_bytes(&doc.cid)
        .await
        .map(|b| (b, false))
        .map_err(|e| Finding {
            kind: "unreadable",
            segment: key(&doc.session, doc.seq),
            detail: format!("{} cannot be fetched through IPFS: {e}", doc.cid),
        })
}

/// Verify `camera` over `[from_ms, to_ms)` with the node configured in `config`.
pub async fn verify(config: &Config, camera: &str, from_ms: i64, to_ms: i64) -> Result<Report> {
    let catalog = Arc::new(Catalog::open(&config.data_dir.join("catalog.sqlite"))?);
    let index = crate::tree::shared_index(config, &catalog);
    let index = index.get().await?;
    let docs = index
        .range(&Scope::Device(camera.to_string()), from_ms, to_ms)
        .await?;
    let c = catalog.clone();
    let cam = camera.to_string();
    // Held and indexed here (a segment still waiting for the indexer is not "missing from the index").
    let local: Vec<Segment> =
        tokio::task::spawn_blocking(move || c.indexed_range(false, &cam, from_ms, to_ms))
            .await
            .map_err(|e| Error::Internal(e.to_string()))??;
    let kubo = match &config.ipfs {
        Some(i) => Some(Kubo::new(
            &i.api,
            crate::tree::auth_of(&i.basic_auth, &i.bearer_token),
            Duration::from_secs(i.timeout_seconds.max(30)),
        )?),
        None => None,
    };
    let (mut findings, joins, sessions) = completeness(&docs, &local);
    let complete = findings.is_empty();
    let by_key: HashMap<(String, i64), Segment> = local
        .iter()
        .map(|s| ((s.session.clone(), s.seq), s.clone()))
        .collect();
    let checked: Vec<Checked> = futures_util::stream::iter(docs.iter().cloned().map(|d| {
        let held = by_key.get(&(d.session.clone(), d.seq)).cloned();
        let (kubo, data_dir) = (kubo.clone(), config.data_dir.clone());
        async move {
            async {
                let (bytes, here) = bytes_of(&data_dir, kubo.as_ref(), &d, held.as_ref()).await?;
                let n = bytes.len() as u64;
                let Some(kubo) = &kubo else {
                    return Err(Finding {
                        kind: "unreadable",
                        segment: key(&d.session, d.seq),
                        detail: "no [ipfs] configured to hash with".into(),
                    });
                };
                let cid = kubo.hash_bytes(bytes).await.map_err(|e| Finding {
                    kind: "unreadable",
                    segment: key(&d.session, d.seq),
                    detail: format!("cannot hash: {e}"),
                })?;
                if cid != d.cid {
                    return Err(Finding {
                        kind: "altered",
                        segment: key(&d.session, d.seq),
                        detail: format!(
                            "{} hashes to {cid}, the index records {}",
                            held.as_ref()
                                .map_or(d.filename.as_str(), |s| s.path.as_str()),
                            d.cid
                        ),
                    });
                }
                Ok((n, here))
            }
            .await
        }
    }))
    .buffered(CONCURRENCY)
    .collect()
    .await;
    let (mut checked_bytes, mut local_copies, mut unaltered) = (0u64, 0usize, true);
    for r in checked {
        match r {
            Ok((n, here)) => {
                checked_bytes += n;
                local_copies += usize::from(here);
            }
            Err(f) => {
                unaltered = false;
                findings.push(f);
            }
        }
    }
    Ok(Report {
        camera: camera.to_string(),
        index: index.name(),
        from_ms,
        to_ms,
        segments: docs.len(),
        sessions,
        checked_bytes,
        local_copies,
        complete,
        unaltered,
        findings,
        joins,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(session: &str, seq: i64, cid: &str, prev: Option<&str>, start_ms: i64) -> IndexDoc {
        IndexDoc {
            id: format!("c/{session}/{seq}"),
            filename: format!("c/{session}/seg_{seq:05}.ts"),
            cid: cid.into(),
            factory_id: "f".into(),
            device_id: "c".into(),
            session: session.into(),
            seq,
            start_ms,
            end_ms: start_ms + 2000,
            duration_ms: 2000,
            bytes: 1,
            first_in_session: seq == 0,
            node_id: "n".into(),
            prev_cid: prev.map(str::to_string),
        }
    }

    #[test]
    fn a_removed_document_is_a_missing_seq_and_a_broken_link_and_joins_are_gaps() {
        let docs = vec![
            doc("A", 0, "c0", None, 0),
            doc("A", 1, "c1", Some("c0"), 2000),
            // A/2 (c2) removed from the index.
            doc("A", 3, "c3", Some("c2"), 6000),
            doc("B", 0, "c4", Some("c3"), 20_000),
        ];
        let (f, joins, sessions) = completeness(&docs, &[]);
        assert_eq!(sessions, 2);
        let kinds: Vec<(&str, &str)> = f.iter().map(|x| (x.kind, x.segment.as_str())).collect();
        assert_eq!(kinds, [("missing_seq", "A/2"), ("broken_chain", "A/3")]);
        assert!(f[1].detail.contains("c2"));
        assert_eq!(
            joins,
            [Join {
                before: "A/3".into(),
                after: "B/0".into(),
                gap_ms: 12_000
            }]
        );
        let whole = vec![docs[0].clone(), docs[1].clone()];
        assert!(completeness(&whole, &[]).0.is_empty());
    }
}
