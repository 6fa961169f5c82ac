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

/// The index, or the 503 that says it cannot be reached.
async fn index_of(state: &State) -> Result<std::sync::Arc<dyn crate::index::Index>, HttpResponse> {
    state
        .index
        .get()
        .await
        .map_err(|e| unavailable(format!("the index cannot be reached: {e}")))
}

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
    let index = match index_of(state).await {
        Ok(i) => i,
        Err(r) => return r,
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
    let entries = entries_of(&docs);
    render(Kind::Vod, cam, 0, 0, 0, &entries, "max-age=60")
}

/// Playlist entries for segments named by CID under `prefix` (relative to the playlist), a discontinuity where
/// the session changes. `items`: (cid, start ms, duration ms, session).
fn cid_entries<'a>(
    items: impl Iterator<Item = (&'a str, i64, i64, &'a str)>,
    prefix: &str,
) -> Vec<Entry> {
    let mut last: Option<&str> = None;
    items
        .map(|(cid, start_ms, duration_ms, session)| {
            let discontinuity = last.is_some_and(|l| l != session);
            last = Some(session);
            Entry {
                uri: format!("{prefix}{cid}.ts"),
                start_ms,
                duration_ms: duration_ms.max(0) as u64,
                discontinuity,
            }
        })
        .collect()
}

fn entries_of(docs: &[IndexDoc]) -> Vec<Entry> {
    cid_entries(
        docs.iter().map(|d| {
            (
                d.cid.as_str(),
                d.start_ms,
                d.duration_ms,
                d.session.as_str(),
            )
        }),
        "ipfs/",
    )
}

/// A rendered playlist of `entries` for `cam`.
fn render(
    kind: Kind,
    cam: &CameraInfo,
    target_duration: u64,
    media_sequence: u64,
    discontinuity_sequence: u64,
    entries: &[Entry],
    cache: &'static str,
) -> HttpResponse {
    playlist_response(
        hls::render(&Playlist {
            kind,
            target_duration: target_duration.max(cam.target_duration),
            media_sequence,
            discontinuity_sequence,
            entries,
            can_skip_until: None,
            skipped: 0,
        }),
        cache,
    )
}

/// The distributor's view of cameras recorded elsewhere: per camera, one day of segments from the index, kept
/// and extended in place by a range query from the newest one (at most once a second, one query at a time per
/// camera), so a reload costs the new segments, not the day. The day playlist's rendering is kept until a
/// segment arrives; the live window reads only its own segments.
#[derive(Default)]
pub struct Days(std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<Day>>>>);

/// What a playlist needs of one segment.
struct Seg {
    cid: Box<str>,
    start_ms: i64,
    duration_ms: i64,
    session: Arc<str>,
    /// Discontinuities (session changes) up to and including this segment, from the day's first.
    disc_no: u64,
}

pub struct Day {
    from: i64,
    segs: Vec<Seg>,
    fetched: Option<std::time::Instant>,
    /// The longest segment so far, in whole seconds (TARGETDURATION never goes down).
    target: u64,
    /// The day playlist as last rendered: (segments, kind, text).
    rendered: Option<(usize, Kind, bytes::Bytes)>,
}

impl Day {
    fn new(from: i64) -> Day {
        Day {
            from,
            segs: Vec::new(),
            fetched: None,
            target: 0,
            rendered: None,
        }
    }
}

/// Sequence numbers of a day start at the day's number × this, so they never go back at midnight (a day has
/// fewer segments than this).
const DAY_SEQUENCE: u64 = 1_000_000;

fn day_number(from: i64) -> u64 {
    (from.max(0) / 86_400_000) as u64
}

/// How often a remote camera's day is read again from the index.
const DAY_REFRESH: std::time::Duration = std::time::Duration::from_secs(1);

impl Days {
    /// Camera `cam`'s day `[from, to)`, brought up to date when last read more than a second ago.
    async fn get(
        &self,
        state: &State,
        cam: &str,
        from: i64,
        to: i64,
    ) -> Result<tokio::sync::OwnedMutexGuard<Day>, HttpResponse> {
        let cell = self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(cam.to_string())
            .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(Day::new(from))))
            .clone();
        let mut day = cell.lock_owned().await;
        if day.from != from {
            // The next day (midnight): start over.
            *day = Day::new(from);
        }
        if day.fetched.is_some_and(|t| t.elapsed() < DAY_REFRESH) {
            return Ok(day);
        }
        let since = day.segs.last().map_or(from, |d| d.start_ms);
        let fetched = match state.index.get().await {
            Ok(index) => index
                .range(&Scope::Device(cam.to_string()), since, to)
                .await
                .map_err(|e| format!("the index cannot be read: {e}")),
            Err(e) => Err(format!("the index cannot be reached: {e}")),
        };
        let fresh = match fetched {
            Ok(f) => f,
            // What is known still plays; the next look is in a second, not on every request.
            Err(e) if !day.segs.is_empty() => {
                tracing::warn!(camera = %cam, "{e}; serving the day as last read");
                day.fetched = Some(std::time::Instant::now());
                return Ok(day);
            }
            Err(e) => return Err(unavailable(e)),
        };
        // The newest ones may come again (same start): skip what is already there.
        let known: std::collections::HashSet<&str> = day
            .segs
            .iter()
            .rev()
            .take_while(|d| d.start_ms >= since)
            .map(|d| &*d.cid)
            .collect();
        let fresh: Vec<IndexDoc> = fresh
            .into_iter()
            .filter(|d| !known.contains(d.cid.as_str()))
            .collect();
        for d in fresh {
            let (session, disc_no) = match day.segs.last() {
                Some(prev) if *prev.session == *d.session => (prev.session.clone(), prev.disc_no),
                Some(prev) => (Arc::from(d.session.as_str()), prev.disc_no + 1),
                None => (Arc::from(d.session.as_str()), 0),
            };
            day.target = day.target.max((d.duration_ms.max(0) as u64).div_ceil(1000));
            day.segs.push(Seg {
                cid: d.cid.into(),
                start_ms: d.start_ms,
                duration_ms: d.duration_ms,
                session,
                disc_no,
            });
        }
        day.fetched = Some(std::time::Instant::now());
        Ok(day)
    }
}

fn seg_entries(segs: &[Seg]) -> Vec<Entry> {
    cid_entries(
        segs.iter()
            .map(|d| (&*d.cid, d.start_ms, d.duration_ms, &*d.session)),
        "ipfs/",
    )
}

/// A day playlist of a camera recorded elsewhere: today's from the kept day (EVENT; sliding when `sliding`),
/// a past day's straight from the index (VOD).
pub(super) async fn day(
    state: &State,
    cam: &CameraInfo,
    from: i64,
    to: i64,
    today: bool,
    sliding: bool,
) -> HttpResponse {
    if !today {
        return vod(state, cam, from, to).await;
    }
    let mut day = match state.days.get(state, &cam.id, from, to).await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let kind = match (today, sliding) {
        (false, _) => Kind::Vod,
        (true, true) => Kind::Live,
        (true, false) => Kind::Event,
    };
    let cache = if today { "no-cache" } else { "max-age=60" };
    let n = day.segs.len();
    if let Some((len, k, text)) = &day.rendered
        && *len == n
        && *k == kind
    {
        return playlist_response(text.clone(), cache);
    }
    let base = day_number(day.from) * DAY_SEQUENCE;
    let text = bytes::Bytes::from(hls::render(&Playlist {
        kind,
        target_duration: day.target.max(cam.target_duration),
        media_sequence: base,
        discontinuity_sequence: base,
        entries: &seg_entries(&day.segs),
        can_skip_until: None,
        skipped: 0,
    }));
    day.rendered = Some((n, kind, text.clone()));
    playlist_response(text, cache)
}

/// The live window (the last `window` segments of today) of a camera recorded elsewhere. Sequence numbers count
/// from the day's first segment, so they stay put as the window slides.
pub(super) async fn live(state: &State, cam: &CameraInfo, from: i64, to: i64) -> HttpResponse {
    let day = match state.days.get(state, &cam.id, from, to).await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let skip = day.segs.len().saturating_sub(state.live_window);
    // The discontinuities that slid out of the window.
    let disc_before = skip.checked_sub(1).map_or(0, |i| day.segs[i].disc_no);
    let mut entries = seg_entries(&day.segs[skip..]);
    // The window's first segment opens a session when the one before it belongs to another.
    if let (Some(first), Some(prev)) = (
        entries.first_mut(),
        skip.checked_sub(1).map(|i| &day.segs[i]),
    ) {
        first.discontinuity = *prev.session != *day.segs[skip].session;
    }
    let base = day_number(day.from) * DAY_SEQUENCE;
    render(
        Kind::Live,
        cam,
        day.target,
        base + skip as u64,
        base + disc_before,
        &entries,
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
    let index = match index_of(&state).await {
        Ok(i) => i,
        Err(r) => return r,
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
    if !crate::transcode::rendition_name_ok(&rendition) {
        return bad_request("a rendition name is 1 to 16 of a-z, 0-9, '-', '_'");
    }
    let index = match index_of(&state).await {
        Ok(i) => i,
        Err(r) => return r,
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
    let entries = cid_entries(
        docs.iter().map(|d| {
            (
                d.cid.as_str(),
                d.start_ms,
                d.duration_ms,
                d.session.as_str(),
            )
        }),
        "../../ipfs/",
    );
    render(Kind::Vod, &cam, 0, 0, 0, &entries, "max-age=10")
}

fn segment_response(body: bytes::Bytes) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, "video/mp2t"))
        .insert_header((CACHE_CONTROL, "private, max-age=86400, immutable"))
        .insert_header((actix_web::http::header::CONTENT_ENCODING, "identity"))
        .body(body)
}
