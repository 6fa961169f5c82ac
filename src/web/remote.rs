//! Routes of the storage role and of replay on any node: the mirror's counters (`/api/mirror`), a camera's
//! segment listing for mirrors without a shared index (`/cameras/<id>/index.json`), VOD of a camera recorded
//! elsewhere built from the index, and the IPFS proxy (`/cameras/<id>/ipfs/<cid>.ts`) that serves a segment
//! from local disk when this node has it, else through this node's own IPFS API.
//!
//! The proxy is not a gateway: it sits in the `/cameras/{camera}` scope (login and per-camera guard), and a
//! CID is served only when this node's catalog or the index ties it to that camera.

use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use actix_web::{HttpResponse, get, route, web};
use futures_util::StreamExt as _;

use super::{
    CameraInfo, RangeQuery, State, bad_request, blocking, camera, camera_and_range, internal,
    not_found, playlist_response,
};
use crate::auth::Principal;
use crate::hls::{self, Entry, Kind, Playlist};
use std::sync::Arc;

use crate::index::{IndexDoc, Scope};
use crate::pipeline::announce::plausible_cid;

/// Segments look back this far for the one running at a range's start.
const LOOK_BACK_MS: i64 = 120_000;

fn unavailable(what: impl Into<String>) -> HttpResponse {
    super::error(
        actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
        what.into(),
    )
}

/// The storage role's counters: announcements received, segments mirrored and healed, gaps seen, drops by
/// reason, mirror lag percentiles, and each mirrored camera's newest segment.
#[get("/api/mirror")]
pub(super) async fn mirror(state: web::Data<State>, who: Principal) -> HttpResponse {
    if !who.is_staff() {
        return super::forbidden("the mirror's state is for admins and devs");
    }
    let Some(stats) = &state.mirror else {
        return HttpResponse::Ok()
            .insert_header((CACHE_CONTROL, "no-cache"))
            .json(serde_json::json!({ "enabled": false }));
    };
    let ids: Vec<String> = state
        .cameras
        .list()
        .iter()
        .filter(|c| c.kind == "mirror")
        .map(|c| c.id.clone())
        .collect();
    let catalog = state.catalog.clone();
    let latest = blocking(move || {
        ids.into_iter()
            .map(|id| {
                let l = catalog.latest(&id)?;
                Ok(serde_json::json!({
                    "id": id,
                    "newest_start": l.as_ref().map(|s| super::rfc3339(s.start_ms)),
                    "newest_cid": l.and_then(|s| s.cid),
                }))
            })
            .collect::<crate::Result<Vec<_>>>()
    })
    .await;
    match latest {
        Ok(cameras) => HttpResponse::Ok()
            .insert_header((CACHE_CONTROL, "no-cache"))
            .json(serde_json::json!({
                "enabled": true,
                "stats": stats.view(),
                "cameras": cameras,
            })),
        Err(r) => r,
    }
}

/// The index documents of a camera's segments held here that start in `[from, to)`, oldest first, each with
/// the CID of the one before (what a mirror without a shared index heals from).
#[get("/index.json")]
pub(super) async fn index_json(
    state: web::Data<State>,
    path: web::Path<String>,
    q: web::Query<RangeQuery>,
) -> HttpResponse {
    let (cam, from, to) = match camera_and_range(&state, &path, &q) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let (catalog, node) = (state.catalog.clone(), state.node_id.clone());
    match blocking(move || {
        let rows = catalog.indexed_range(false, &cam.id, from, to)?;
        Ok(crate::index::embedded::chain(&rows, &node))
    })
    .await
    {
        Ok(docs) => HttpResponse::Ok()
            .insert_header((CACHE_CONTROL, "no-cache"))
            .json(docs),
        Err(r) => r,
    }
}

/// VOD of a camera recorded elsewhere: the index's documents for the range, each segment through the proxy.
pub(super) async fn vod(state: &State, cam: &CameraInfo, from: i64, to: i64) -> HttpResponse {
    let index = match state.index.get().await {
        Ok(i) => i,
        Err(e) => return unavailable(format!("the index cannot be reached: {e}")),
    };
    let mut docs = match index
        .range(&Scope::Device(cam.id.clone()), from - LOOK_BACK_MS, to)
        .await
    {
        Ok(d) => d,
        Err(e) => return unavailable(format!("the index cannot be read: {e}")),
    };
    docs.retain(|d| d.end_ms > from);
    docs.dedup_by(|a, b| a.id == b.id);
    let entries: Vec<Entry> = docs
        .iter()
        .enumerate()
        .map(|(i, d)| Entry {
            uri: format!("ipfs/{}.ts", d.cid),
            start_ms: d.start_ms,
            duration_ms: d.duration_ms.max(0) as u64,
            discontinuity: i > 0 && d.session != docs[i - 1].session,
        })
        .collect();
    playlist_response(
        hls::render(&Playlist {
            kind: Kind::Vod,
            target_duration: cam.target_duration,
            media_sequence: 0,
            discontinuity_sequence: 0,
            entries: &entries,
            can_skip_until: None,
            skipped: 0,
        }),
        "max-age=60",
    )
}

/// The distributor's view of cameras recorded elsewhere: per camera, the index's documents of one day, kept
/// and extended by a range query from the newest one (at most once a second), so a viewer's reload costs the
/// new segments, not the day.
#[derive(Default)]
pub struct Days(std::sync::Mutex<std::collections::HashMap<String, Arc<DayDocs>>>);

pub struct DayDocs {
    from: i64,
    docs: Vec<IndexDoc>,
    fetched: std::time::Instant,
}

/// How often a remote camera's day is read again from the index.
const DAY_REFRESH: std::time::Duration = std::time::Duration::from_secs(1);

impl Days {
    /// Documents of camera `cam` starting in `[from, to)`, newest first fetched when older than a second.
    async fn get(
        &self,
        state: &State,
        cam: &str,
        from: i64,
        to: i64,
    ) -> Result<Arc<DayDocs>, HttpResponse> {
        let cached = self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(cam)
            .cloned()
            .filter(|d| d.from == from);
        if let Some(d) = &cached
            && d.fetched.elapsed() < DAY_REFRESH
        {
            return Ok(d.clone());
        }
        let index = state
            .index
            .get()
            .await
            .map_err(|e| unavailable(format!("the index cannot be reached: {e}")))?;
        let since = cached
            .as_ref()
            .and_then(|d| d.docs.last())
            .map_or(from, |d| d.start_ms);
        let mut fresh = index
            .range(&Scope::Device(cam.to_string()), since, to)
            .await
            .map_err(|e| unavailable(format!("the index cannot be read: {e}")))?;
        let mut docs = cached.map(|d| d.docs.clone()).unwrap_or_default();
        let known: std::collections::HashSet<String> = docs
            .iter()
            .rev()
            .take_while(|d| d.start_ms >= since)
            .map(|d| d.id.clone())
            .collect();
        fresh.retain(|d| !known.contains(&d.id));
        docs.extend(fresh);
        let day = Arc::new(DayDocs {
            from,
            docs,
            fetched: std::time::Instant::now(),
        });
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(cam.to_string(), day.clone());
        Ok(day)
    }
}

fn entries_of(docs: &[IndexDoc]) -> Vec<Entry> {
    docs.iter()
        .enumerate()
        .map(|(i, d)| Entry {
            uri: format!("ipfs/{}.ts", d.cid),
            start_ms: d.start_ms,
            duration_ms: d.duration_ms.max(0) as u64,
            discontinuity: i > 0 && d.session != docs[i - 1].session,
        })
        .collect()
}

/// Today's day playlist (EVENT while the day runs; sliding when `sliding`) of a camera recorded elsewhere.
pub(super) async fn day(
    state: &State,
    cam: &CameraInfo,
    from: i64,
    to: i64,
    today: bool,
    sliding: bool,
) -> HttpResponse {
    let day = match state.days.get(state, &cam.id, from, to).await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let entries = entries_of(&day.docs);
    let kind = match (today, sliding) {
        (false, _) => Kind::Vod,
        (true, true) => Kind::Live,
        (true, false) => Kind::Event,
    };
    playlist_response(
        hls::render(&Playlist {
            kind,
            target_duration: cam.target_duration,
            media_sequence: 0,
            discontinuity_sequence: 0,
            entries: &entries,
            can_skip_until: None,
            skipped: 0,
        }),
        if today { "no-cache" } else { "max-age=60" },
    )
}

/// The live window (the last `window` segments of today) of a camera recorded elsewhere. Sequence numbers count
/// from the day's first segment, so they stay put as the window slides.
pub(super) async fn live(state: &State, cam: &CameraInfo, from: i64, to: i64) -> HttpResponse {
    let day = match state.days.get(state, &cam.id, from, to).await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let all = entries_of(&day.docs);
    let skip = all.len().saturating_sub(state.live_window);
    // The discontinuities that slid out of the window.
    let disc_before = all[..skip].iter().filter(|e| e.discontinuity).count();
    let entries = &all[skip..];
    playlist_response(
        hls::render(&Playlist {
            kind: Kind::Live,
            target_duration: cam.target_duration,
            media_sequence: skip as u64,
            discontinuity_sequence: disc_before as u64,
            entries,
            can_skip_until: None,
            skipped: 0,
        }),
        "no-cache",
    )
}

/// One segment by CID, for a camera in the user's scope.
#[route("/ipfs/{file}", method = "GET", method = "HEAD")]
pub(super) async fn ipfs(
    state: web::Data<State>,
    path: web::Path<(String, String)>,
) -> HttpResponse {
    let (cam_id, file) = path.into_inner();
    if let Err(r) = camera(&state, &cam_id) {
        return r;
    }
    let Some(cid) = file.strip_suffix(".ts").filter(|c| plausible_cid(c)) else {
        return bad_request(format!(
            "{file:?} is not a segment name (expected <cid>.ts)"
        ));
    };
    let nope = || not_found(format!("camera {cam_id:?} has no segment {cid}"));
    // Held here: from disk.
    let (catalog, c) = (state.catalog.clone(), cid.to_string());
    let local = match blocking(move || catalog.by_cid(&c)).await {
        Ok(r) => r.filter(|s| s.camera == cam_id),
        Err(r) => return r,
    };
    if let Some(row) = &local {
        let full = state.data_dir.join(&row.path);
        if let Ok(Ok(b)) = web::block(move || std::fs::read(full)).await {
            return segment_response(bytes::Bytes::from(b));
        }
    }
    // A variant this node made: from disk.
    let mut variant = false;
    if local.is_none() {
        let (catalog, c) = (state.catalog.clone(), cid.to_string());
        let made = match blocking(move || catalog.variant_files(&c)).await {
            Ok(v) => v,
            Err(r) => return r,
        };
        for (_, path) in made.iter().filter(|(v, _)| v.device_id == cam_id) {
            variant = true;
            if let Some(p) = path {
                let full = state.data_dir.join(p);
                if let Ok(Ok(b)) = web::block(move || std::fs::read(full)).await {
                    return segment_response(bytes::Bytes::from(b));
                }
            }
        }
    }
    // Elsewhere: only if the index ties this CID (a segment or a variant of it) to this camera.
    if local.is_none() && !variant {
        let index = match state.index.get().await {
            Ok(i) => i,
            Err(e) => return unavailable(format!("the index cannot be reached: {e}")),
        };
        match index.by_cid(cid).await {
            Ok(docs) if docs.iter().any(|d| d.device_id == cam_id) => {}
            Ok(_) => match index.variant_by_cid(cid).await {
                Ok(v) if v.iter().any(|d| d.device_id == cam_id) => {}
                Ok(_) => return nope(),
                Err(e) => return unavailable(format!("the index cannot be read: {e}")),
            },
            Err(e) => return unavailable(format!("the index cannot be read: {e}")),
        }
    }
    let Some(kubo) = &state.kubo else {
        return unavailable("this node has no IPFS API configured ([ipfs])");
    };
    match kubo.cat(cid).await {
        Ok(stream) => HttpResponse::Ok()
            .insert_header((CONTENT_TYPE, "video/mp2t"))
            .insert_header((CACHE_CONTROL, "private, max-age=86400, immutable"))
            .insert_header((actix_web::http::header::CONTENT_ENCODING, "identity"))
            .streaming(stream.map(|r| r.map_err(std::io::Error::other))),
        Err(e) if e.is_transient() => unavailable(format!("IPFS cannot deliver {cid} now: {e}")),
        Err(e) => internal(e),
    }
}

/// Is `name` a rendition name (1 to 16 of a-z, 0-9, '-', '_')?
fn rendition_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 16
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// A master playlist of `[from, to)`: the source (`vod.m3u8`) and every rendition the transcoder made of it
/// (`variants/<name>/vod.m3u8`), each with its bandwidth (and size, for renditions).
#[route("/master.m3u8", method = "GET", method = "HEAD")]
pub(super) async fn master(
    state: web::Data<State>,
    path: web::Path<String>,
    q: web::Query<RangeQuery>,
) -> HttpResponse {
    let (cam, from, to) = match camera_and_range(&state, &path, &q) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let index = match state.index.get().await {
        Ok(i) => i,
        Err(e) => return unavailable(format!("the index cannot be reached: {e}")),
    };
    let variants = match index.variants(&cam.id, from - LOOK_BACK_MS, to).await {
        Ok(v) => v,
        Err(e) => return unavailable(format!("the index cannot be read: {e}")),
    };
    // The source's peak bit rate over the range, from its segments (the catalog for footage recorded here).
    let (catalog, id) = (state.catalog.clone(), cam.id.clone());
    let source_bps = match blocking(move || catalog.range(&id, from - LOOK_BACK_MS, to)).await {
        Ok(rows) => rows
            .iter()
            .filter(|r| r.duration_ms > 0)
            .map(|r| r.bytes as u64 * 8 * 1000 / r.duration_ms as u64)
            .max(),
        Err(r) => return r,
    };
    let source_bps = match source_bps {
        Some(b) => b,
        None => match index
            .range(&Scope::Device(cam.id.clone()), from - LOOK_BACK_MS, to)
            .await
        {
            Ok(docs) => docs
                .iter()
                .filter(|d| d.duration_ms > 0)
                .map(|d| d.bytes as u64 * 8 * 1000 / d.duration_ms as u64)
                .max()
                .unwrap_or(2_000_000),
            Err(e) => return unavailable(format!("the index cannot be read: {e}")),
        },
    };
    let mut renditions: Vec<(String, i64, i64, u64)> = Vec::new();
    for v in &variants {
        let bps = if v.duration_ms > 0 {
            v.bytes as u64 * 8 * 1000 / v.duration_ms as u64
        } else {
            0
        };
        match renditions.iter_mut().find(|r| r.0 == v.rendition) {
            Some(r) => r.3 = r.3.max(bps),
            None => renditions.push((v.rendition.clone(), v.width, v.height, bps)),
        }
    }
    renditions.sort_by_key(|r| std::cmp::Reverse(r.1 * r.2));
    let query: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("from", q.from.as_deref().unwrap_or_default())
        .append_pair("to", q.to.as_deref().unwrap_or_default())
        .finish();
    let mut body = String::from("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-INDEPENDENT-SEGMENTS\n");
    body += &format!(
        "#EXT-X-STREAM-INF:BANDWIDTH={}\nvod.m3u8?{query}\n",
        source_bps.max(1)
    );
    for (name, w, h, bps) in &renditions {
        body += &format!(
            "#EXT-X-STREAM-INF:BANDWIDTH={},RESOLUTION={w}x{h}\nvariants/{name}/vod.m3u8?{query}\n",
            (*bps).max(1)
        );
    }
    playlist_response(body, "max-age=10")
}

/// VOD of one rendition of a camera's footage, from the index's variants (segments served by CID).
#[route("/variants/{rendition}/vod.m3u8", method = "GET", method = "HEAD")]
pub(super) async fn variant_vod(
    state: web::Data<State>,
    path: web::Path<(String, String)>,
    q: web::Query<RangeQuery>,
) -> HttpResponse {
    let (cam_id, rendition) = path.into_inner();
    let (cam, from, to) = match camera_and_range(&state, &cam_id, &q) {
        Ok(x) => x,
        Err(r) => return r,
    };
    if !rendition_name(&rendition) {
        return bad_request("a rendition name is 1 to 16 of a-z, 0-9, '-', '_'");
    }
    let index = match state.index.get().await {
        Ok(i) => i,
        Err(e) => return unavailable(format!("the index cannot be reached: {e}")),
    };
    let mut docs = match index.variants(&cam.id, from - LOOK_BACK_MS, to).await {
        Ok(v) => v,
        Err(e) => return unavailable(format!("the index cannot be read: {e}")),
    };
    docs.retain(|d| d.rendition == rendition && d.end_ms > from);
    if docs.is_empty() {
        return not_found(format!(
            "no rendition {rendition:?} of camera {:?} in this range",
            cam.id
        ));
    }
    let entries: Vec<Entry> = docs
        .iter()
        .enumerate()
        .map(|(i, d)| Entry {
            uri: format!("../../ipfs/{}.ts", d.cid),
            start_ms: d.start_ms,
            duration_ms: d.duration_ms.max(0) as u64,
            discontinuity: i > 0 && d.session != docs[i - 1].session,
        })
        .collect();
    playlist_response(
        hls::render(&Playlist {
            kind: Kind::Vod,
            target_duration: cam.target_duration,
            media_sequence: 0,
            discontinuity_sequence: 0,
            entries: &entries,
            can_skip_until: None,
            skipped: 0,
        }),
        "max-age=10",
    )
}

fn segment_response(body: bytes::Bytes) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, "video/mp2t"))
        .insert_header((CACHE_CONTROL, "private, max-age=86400, immutable"))
        .insert_header((actix_web::http::header::CONTENT_ENCODING, "identity"))
        .body(body)
}
