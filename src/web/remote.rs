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
use crate::index::Scope;
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
    // Elsewhere: only if the index ties this CID to this camera.
    if local.is_none() {
        let index = match state.index.get().await {
            Ok(i) => i,
            Err(e) => return unavailable(format!("the index cannot be reached: {e}")),
        };
        match index.by_cid(cid).await {
            Ok(docs) if docs.iter().any(|d| d.device_id == cam_id) => {}
            Ok(_) => return nope(),
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

fn segment_response(body: bytes::Bytes) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, "video/mp2t"))
        .insert_header((CACHE_CONTROL, "private, max-age=86400, immutable"))
        .insert_header((actix_web::http::header::CONTENT_ENCODING, "identity"))
        .body(body)
}
