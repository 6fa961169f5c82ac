//! Small in-memory caches that keep the HTTP server's cost per request flat when many viewers watch the same
//! cameras: rendered playlists, valid until the catalog's segment rows change ([`Catalog::segments_version`]),
//! and the bytes of recently served segments (viewers of a live camera all fetch its newest segments), within a
//! byte budget, oldest out first. Both are bounded whatever the history.
//!
//! [`Catalog::segments_version`]: crate::catalog::Catalog::segments_version

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use std::sync::Arc;

use bytes::Bytes;

use crate::playlists::Today;

/// Rendered playlists by key (`live/cam1`, `day/cam1/2026-11-22`), each tagged with the catalog version it was
/// built from.
#[derive(Debug, Default)]
pub struct Playlists {
    map: Mutex<HashMap<String, Built>>,
}

/// A cached playlist: the catalog version it was built from, its rendering, and for today's playlists what
/// it was built from (delta updates are rendered from it).
type Built = (u64, Bytes, Option<Arc<Today>>);

/// Most playlists kept: a live and a today playlist per camera, with room to spare.
const PLAYLISTS_CAP: usize = 1024;

impl Playlists {
    /// The playlist cached under `key` if it was built from catalog version `version`.
    pub fn get(&self, key: &str, version: u64) -> Option<(Bytes, Option<Arc<Today>>)> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.get(key)
            .filter(|(v, _, _)| *v == version)
            .map(|(_, b, t)| (b.clone(), t.clone()))
    }

    /// Keep `body`, built from catalog version `version` (read BEFORE building it, so that a change made
    /// meanwhile makes the entry stale rather than wrong).
    pub fn put(&self, key: String, version: u64, body: Bytes, today: Option<Arc<Today>>) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= PLAYLISTS_CAP && !map.contains_key(&key) {
            // Yesterday's keys and cameras no longer asked for: start over (cheap, rare).
            map.clear();
        }
        map.insert(key, (version, body, today));
    }
}

/// A cached segment: its camera, its bytes, and the catalog's deletions version when its row was looked up.
#[derive(Debug, Clone)]
pub struct Seg {
    pub camera: Arc<str>,
    pub body: Bytes,
    pub deletions: u64,
}

/// Segments by catalog id, within a budget. A hit is served without touching the catalog while no segment was
/// deleted since the row was looked up (so a segment retention removed is never served from here).
#[derive(Debug)]
pub struct Segments {
    budget: usize,
    inner: Mutex<SegInner>,
}

#[derive(Debug, Default)]
struct SegInner {
    map: HashMap<i64, Seg>,
    order: VecDeque<i64>,
    bytes: usize,
}

impl Segments {
    /// A cache of at most `budget` bytes; segments larger than an eighth of it are never kept.
    pub fn new(budget: usize) -> Segments {
        Segments {
            budget,
            inner: Mutex::default(),
        }
    }

    pub fn get(&self, id: i64) -> Option<Seg> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.map.get(&id).cloned()
    }

    pub fn put(&self, id: i64, seg: Seg) {
        let body = &seg.body;
        if body.len() > self.budget / 8 {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.map.contains_key(&id) {
            return;
        }
        while inner.bytes + body.len() > self.budget {
            let Some(old) = inner.order.pop_front() else {
                break;
            };
            if let Some(b) = inner.map.remove(&old) {
                inner.bytes -= b.body.len();
            }
        }
        inner.bytes += body.len();
        inner.order.push_back(id);
        inner.map.insert(id, seg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_playlist_is_served_only_for_the_version_it_was_built_from() {
        let c = Playlists::default();
        c.put("live/cam1".into(), 7, Bytes::from_static(b"#EXTM3U"), None);
        assert!(c.get("live/cam1", 7).is_some());
        assert!(c.get("live/cam1", 8).is_none());
        assert!(c.get("live/cam2", 7).is_none());
    }

    #[test]
    fn segments_stay_within_the_budget_oldest_out_first() {
        let c = Segments::new(800);
        let seg = |n: usize| Seg {
            camera: "cam1".into(),
            body: Bytes::from(vec![0u8; n]),
            deletions: 0,
        };
        for id in 0..10 {
            c.put(id, seg(100));
        }
        let kept: Vec<i64> = (0..10).filter(|id| c.get(*id).is_some()).collect();
        assert_eq!(kept, vec![2, 3, 4, 5, 6, 7, 8, 9]);
        c.put(99, seg(101)); // over an eighth of the budget: not kept
        assert!(c.get(99).is_none());
    }
}
