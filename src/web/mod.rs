//! The HTTP server, as a supervised worker: health, the camera list, live / day / VOD playlists built from the
//! catalog, segments, and the player page.
//!
//! Every request goes through the guard (`guard.rs`): a login is needed everywhere but the public paths, and
//! every camera route sits under the `/cameras/{camera}` scope, whose own guard lets a user reach only the
//! cameras of its scope. Segments are addressed by catalog id: the file path comes from the catalog row, never
//! from the URL.

mod cache;
pub mod guard;
mod metrics;
mod page;
mod remote;
mod session;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, get, route, web};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use supervisors::{ChildContext, ChildHandle, ChildSpec, ExitReason, Shutdown};

use crate::auth::{Auth, Principal};
use crate::capture::Board;
use crate::catalog::Catalog;
use crate::config::Config;
use crate::error::Error;
use crate::playlists;

const M3U8: &str = "application/vnd.apple.mpegurl";
/// Memory for the bytes of recently served segments (the newest of each watched camera).
const SEGMENT_CACHE_BYTES: usize = 64 << 20;
/// Longest VOD range served in one playlist.
const MAX_VOD_HOURS: i64 = 24;

#[derive(Debug, Clone, Serialize)]
struct CameraInfo {
    id: String,
    factory_id: String,
    #[serde(skip)]
    target_duration: u64,
    /// `local` (recorded here), `mirror` (a copy is kept here) or `remote` (replayed through the index and
    /// IPFS).
    #[serde(skip)]
    kind: &'static str,
}

impl CameraInfo {
    /// Footage recorded elsewhere is named by CID in VOD, so that every replay node serves the same URIs.
    fn uris(&self) -> playlists::Uris {
        if self.kind == "local" {
            playlists::Uris::Ids
        } else {
            playlists::Uris::Cids
        }
    }
}

/// The cameras this node serves (recorded here, mirrored or remote), read by every camera route and changed at
/// run time by the control plane. Lookups clone a small record under a read lock.
#[derive(Debug, Default)]
pub struct Registry(std::sync::RwLock<BTreeMap<String, CameraInfo>>);

impl Registry {
    /// The registry of `config`'s cameras.
    pub fn of(config: &Config) -> Registry {
        let r = Registry::default();
        for c in &config.cameras {
            r.put_local(c);
        }
        for c in &config.remote_cameras {
            r.put_remote(c);
        }
        r
    }

    /// Serve a camera recorded elsewhere (mirrored here, or replayed through the index and IPFS).
    pub fn put_remote(&self, c: &crate::config::RemoteCameraConfig) {
        self.put(CameraInfo {
            id: c.id.clone(),
            factory_id: c.factory_id.clone(),
            target_duration: u64::from(c.target_duration.unwrap_or(2)),
            kind: if c.mirror { "mirror" } else { "remote" },
        });
    }

    /// Stop serving camera `id`.
    pub fn remove(&self, id: &str) {
        self.0.write().unwrap_or_else(|p| p.into_inner()).remove(id);
    }

    /// Serve a camera recorded here (added, or changed: its playlists follow the new settings).
    pub fn put_local(&self, c: &crate::config::CameraConfig) {
        self.put(CameraInfo {
            id: c.id.clone(),
            factory_id: c.factory_id.clone(),
            target_duration: c.target_duration(),
            kind: "local",
        });
    }

    fn put(&self, info: CameraInfo) {
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(info.id.clone(), info);
    }

    /// Whether this node serves camera `id`.
    pub fn contains(&self, id: &str) -> bool {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(id)
    }

    /// `(id, factory_id, kind)` of every camera, in id order.
    pub fn summary(&self) -> Vec<(String, String, &'static str)> {
        self.list()
            .into_iter()
            .map(|c| (c.id, c.factory_id, c.kind))
            .collect()
    }

    fn get(&self, id: &str) -> Option<CameraInfo> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    fn list(&self) -> Vec<CameraInfo> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }
}

struct State {
    node_id: String,
    auth: Arc<Auth>,
    started: Instant,
    catalog: Arc<Catalog>,
    cameras: Arc<Registry>,
    board: Arc<Board>,
    data_dir: PathBuf,
    live_window: usize,
    /// `[http] accel_redirect`: nginx sends segment bytes.
    accel_redirect: Option<String>,
    playlists: cache::Playlists,
    segments: cache::Segments,
    /// The zone whose days the day playlists cover.
    tz: jiff::tz::TimeZone,
    /// The index (replay of cameras recorded elsewhere, the IPFS proxy's check).
    index: Arc<crate::index::Shared>,
    /// This node's IPFS API (the proxy route), when configured.
    kubo: Option<crate::ipfs::kubo::Kubo>,
    /// The mirror's counters, when this node mirrors.
    mirror: Option<Arc<crate::mirror::Stats>>,
    /// Counters and histograms (`/metrics`; the request counter middleware).
    metrics: Arc<crate::metrics::Metrics>,
    metrics_enabled: bool,
    metrics_token: Option<crate::config::Secret>,
    /// The IPFS API's and the index's links, when configured.
    ipfs_link: Option<crate::ipfs::link::Link>,
    index_link: Option<Arc<crate::metrics::LinkCell>>,
    amqp_link: Option<Arc<crate::metrics::LinkCell>>,
    /// Days of cameras recorded elsewhere, from the index (the distributor role).
    days: remote::Days,
    /// The free-space floors (`/metrics`).
    retention: crate::config::RetentionConfig,
}

#[derive(Serialize)]
struct Health<'a> {
    status: &'static str,
    node_id: &'a str,
    version: &'static str,
    uptime_seconds: u64,
}

fn error(status: actix_web::http::StatusCode, message: impl Into<String>) -> HttpResponse {
    HttpResponse::build(status).json(serde_json::json!({ "error": message.into() }))
}

fn not_found(what: impl Into<String>) -> HttpResponse {
    error(actix_web::http::StatusCode::NOT_FOUND, what)
}

fn forbidden(what: impl Into<String>) -> HttpResponse {
    error(actix_web::http::StatusCode::FORBIDDEN, what)
}

fn bad_request(what: impl Into<String>) -> HttpResponse {
    error(actix_web::http::StatusCode::BAD_REQUEST, what)
}

fn internal(e: impl std::fmt::Display) -> HttpResponse {
    tracing::error!("HTTP handler failed: {e}");
    error(
        actix_web::http::StatusCode::INTERNAL_SERVER_ERROR,
        "internal error (logged)",
    )
}

#[get("/healthz")]
async fn healthz(state: web::Data<State>) -> HttpResponse {
    HttpResponse::Ok().json(Health {
        status: "ok",
        node_id: &state.node_id,
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: state.started.elapsed().as_secs(),
    })
}

/// How many segments wait at each distribution stage (and how many were set aside).
#[get("/api/pipeline")]
async fn pipeline(state: web::Data<State>, who: Principal) -> HttpResponse {
    if !who.is_staff() {
        return forbidden("the pipeline is for admins and devs");
    }
    let catalog = state.catalog.clone();
    match blocking(move || catalog.backlog()).await {
        Ok(b) => HttpResponse::Ok()
            .insert_header((CACHE_CONTROL, "no-cache"))
            .json(serde_json::json!({
                "backlog": { "pin": b.pin, "index": b.index, "publish": b.publish },
                "set_aside": b.failed,
            })),
        Err(r) => r,
    }
}

/// The cameras with their state: recording, reconnecting, auth_failed, not_found, stalled, disk_full,
/// starting or stopped, since when, and the last problem in plain words.
#[get("/api/cameras")]
async fn cameras(state: web::Data<State>, who: Principal) -> HttpResponse {
    let list: Vec<serde_json::Value> = state
        .cameras
        .list()
        .iter()
        .filter(|c| who.may_see(&c.id, &c.factory_id))
        .map(|c| {
            let status = state.board.get(&c.id);
            serde_json::json!({
                "id": c.id,
                "factory_id": c.factory_id,
                "kind": c.kind,
                "state": status.as_ref().map(|s| s.state),
                "since": status.as_ref().map(|s| rfc3339(s.since_ms)),
                "last_error": status.as_ref().and_then(|s| s.last_error.clone()),
                "session": status.as_ref().and_then(|s| s.session.clone()),
                "last_write": status.as_ref().and_then(|s| s.last_write_ms).map(rfc3339),
                "last_segment": status.as_ref().and_then(|s| s.last_segment_ms).map(rfc3339),
            })
        })
        .collect();
    HttpResponse::Ok()
        .insert_header((CACHE_CONTROL, "no-cache"))
        .json(list)
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn playlist_response(
    body: impl actix_web::body::MessageBody + 'static,
    cache: &'static str,
) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, M3U8))
        .insert_header((CACHE_CONTROL, cache))
        .body(body)
}

/// A playlist from the cache while the catalog's segments have not changed since it was built, else built and
/// rendered off the async workers, and kept: many viewers of a camera cost one build per new segment. `build`
/// returns the rendering and, for today's playlists, what it was rendered from (delta updates need it).
async fn cached_playlist(
    state: &State,
    key: String,
    build: impl FnOnce() -> crate::Result<(String, Option<Arc<playlists::Today>>)> + Send + 'static,
) -> Result<(bytes::Bytes, Option<Arc<playlists::Today>>), HttpResponse> {
    // Read before building: a segment catalogued meanwhile leaves the entry stale, never wrong.
    let version = state.catalog.segments_version();
    if let Some(hit) = state.playlists.get(&key, version) {
        return Ok(hit);
    }
    let (body, built) = blocking(build).await?;
    let body = bytes::Bytes::from(body);
    state
        .playlists
        .put(key, version, body.clone(), built.clone());
    Ok((body, built))
}

/// Runs a catalog-bound closure off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> crate::Result<T> + Send + 'static,
) -> Result<T, HttpResponse> {
    match web::block(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(internal(e)),
        Err(e) => Err(internal(e)),
    }
}

/// The answer for a camera that does not exist on this node, and for one outside the user's scope: the same.
fn unknown_camera(id: &str) -> HttpResponse {
    not_found(format!("no camera {id:?} on this node"))
}

/// The camera of a route in the `/cameras/{camera}` scope (whose guard already checked the user's scope).
fn camera(state: &State, id: &str) -> Result<CameraInfo, HttpResponse> {
    state.cameras.get(id).ok_or_else(|| unknown_camera(id))
}

#[route("/live.m3u8", method = "GET", method = "HEAD")]
async fn live(state: web::Data<State>, path: web::Path<String>) -> HttpResponse {
    let cam = match camera(&state, &path) {
        Ok(c) => c,
        Err(r) => return r,
    };
    if cam.kind == "remote" {
        let today = jiff::Timestamp::now().to_zoned(state.tz.clone()).date();
        return match day_bounds(&state.tz, today) {
            Ok((from, to)) => remote::live(&state, &cam, from, to).await,
            Err(m) => bad_request(m),
        };
    }
    let (catalog, window) = (state.catalog.clone(), state.live_window);
    let key = format!("live/{}", cam.id);
    let built = cached_playlist(&state, key, move || {
        Ok((
            playlists::live(&catalog, &cam.id, window, cam.target_duration)?,
            None,
        ))
    })
    .await;
    match built {
        Ok((body, _)) => playlist_response(body, "no-cache"),
        Err(r) => r,
    }
}

#[derive(Deserialize)]
struct DayQuery {
    date: Option<String>,
    /// A client's request for a Playlist Delta Update (RFC 8216bis §6.2.5.1).
    #[serde(rename = "_HLS_skip")]
    skip: Option<String>,
}

/// `[from, to)` in unix ms of `date` in `tz` (23 or 25 hours on the days the clocks change).
fn day_bounds(tz: &jiff::tz::TimeZone, date: jiff::civil::Date) -> Result<(i64, i64), String> {
    let start = date
        .to_zoned(tz.clone())
        .map_err(|e| format!("{date} has no start in this time zone: {e}"))?;
    let next = date
        .tomorrow()
        .and_then(|d| d.to_zoned(tz.clone()))
        .map_err(|e| format!("{date} has no end in this time zone: {e}"))?;
    Ok((
        start.timestamp().as_millisecond(),
        next.timestamp().as_millisecond(),
    ))
}

/// `date=YYYY-MM-DD` (exactly), or today in the configured zone.
fn parse_date(state: &State, date: Option<&str>) -> Result<jiff::civil::Date, HttpResponse> {
    match date {
        None => Ok(jiff::Timestamp::now().to_zoned(state.tz.clone()).date()),
        // Only exactly YYYY-MM-DD (jiff would also take other forms).
        Some(text) => match text.parse::<jiff::civil::Date>() {
            Ok(d) if d.to_string() == text => Ok(d),
            _ => Err(bad_request(format!("date {text:?} is not YYYY-MM-DD"))),
        },
    }
}

#[route("/day.m3u8", method = "GET", method = "HEAD")]
async fn day(
    state: web::Data<State>,
    path: web::Path<String>,
    q: web::Query<DayQuery>,
) -> HttpResponse {
    let cam = match camera(&state, &path) {
        Ok(c) => c,
        Err(r) => return r,
    };
    // Once: a request at midnight must not see two different days.
    let today = jiff::Timestamp::now().to_zoned(state.tz.clone()).date();
    let date = match q.date.as_deref() {
        None => today,
        Some(_) => match parse_date(&state, q.date.as_deref()) {
            Ok(d) => d,
            Err(r) => return r,
        },
    };
    // Without a date the playlist follows the days: sliding (no PLAYLIST-TYPE), since at midnight it moves on.
    let sliding = q.date.is_none();
    let (from, to) = match day_bounds(&state.tz, date) {
        Ok(b) => b,
        Err(m) => return bad_request(m),
    };
    if cam.kind == "remote" {
        return remote::day(&state, &cam, from, to, date == today, sliding).await;
    }
    let catalog = state.catalog.clone();
    if date == today {
        let delta = match q.skip.as_deref() {
            // v2 also asks to skip date ranges (which need version 10): answered with the whole playlist.
            None | Some("NO" | "v2") => false,
            Some("YES") => true,
            Some(other) => return bad_request(format!("_HLS_skip={other:?}: YES, v2 or NO")),
        };
        // Built once per new segment, whoever asks; a client reloading with `_HLS_skip` gets a delta update.
        let key = format!("day/{}/{date}/{sliding}", cam.id);
        let built = cached_playlist(&state, key, move || {
            let built = playlists::today(&catalog, &cam.id, from, to, cam.target_duration)?;
            Ok((built.render(sliding), Some(Arc::new(built))))
        })
        .await;
        return match built {
            Ok((_, Some(built))) if delta => {
                playlist_response(built.render_delta(sliding), "no-cache")
            }
            Ok((full, _)) => playlist_response(full, "no-cache"),
            Err(r) => r,
        };
    }
    let uris = cam.uris();
    match blocking(move || {
        playlists::vod(
            &catalog,
            &cam.id,
            from,
            to,
            false,
            cam.target_duration,
            uris,
        )
    })
    .await
    {
        Ok(body) => playlist_response(body, "max-age=60"),
        Err(r) => r,
    }
}

#[derive(Deserialize)]
struct RangeQuery {
    from: Option<String>,
    to: Option<String>,
}

fn parse_time(name: &str, v: &Option<String>) -> Result<i64, HttpResponse> {
    let Some(v) = v else {
        return Err(bad_request(format!(
            "missing {name}: give an RFC 3339 time like 2026-11-21T16:05:00Z"
        )));
    };
    chrono::DateTime::parse_from_rfc3339(v)
        .map(|d| d.timestamp_millis())
        .map_err(|e| bad_request(format!("{name}={v:?} is not an RFC 3339 time ({e})")))
}

/// The camera of the path and the query's range.
fn camera_and_range(
    state: &State,
    camera_id: &str,
    q: &RangeQuery,
) -> Result<(CameraInfo, i64, i64), HttpResponse> {
    let cam = camera(state, camera_id)?.clone();
    let (from, to) = check_range(q)?;
    Ok((cam, from, to))
}

/// `from` and `to` as RFC 3339, `from` < `to`, at most a day apart.
fn check_range(q: &RangeQuery) -> Result<(i64, i64), HttpResponse> {
    let (from, to) = (parse_time("from", &q.from)?, parse_time("to", &q.to)?);
    if to <= from {
        return Err(bad_request("to must be after from"));
    }
    if to - from > MAX_VOD_HOURS * 3_600_000 {
        return Err(bad_request(format!(
            "range longer than {MAX_VOD_HOURS} h; use day playlists"
        )));
    }
    Ok((from, to))
}

#[route("/vod.m3u8", method = "GET", method = "HEAD")]
async fn vod(
    state: web::Data<State>,
    path: web::Path<String>,
    q: web::Query<RangeQuery>,
) -> HttpResponse {
    let (cam, from, to) = match camera_and_range(&state, &path, &q) {
        Ok(x) => x,
        Err(r) => return r,
    };
    if cam.kind == "remote" {
        return remote::vod(&state, &cam, from, to).await;
    }
    let catalog = state.catalog.clone();
    // Include the segment that was already running at `from`.
    let uris = cam.uris();
    match blocking(move || {
        playlists::vod(&catalog, &cam.id, from, to, true, cam.target_duration, uris)
    })
    .await
    {
        Ok(body) => playlist_response(body, "max-age=60"),
        Err(r) => r,
    }
}

/// The recorded stretches of a day (gaps split them) and the session joins, for the viewer's timeline.
#[get("/spans")]
async fn spans(
    state: web::Data<State>,
    path: web::Path<String>,
    q: web::Query<DayQuery>,
) -> HttpResponse {
    /// Segments closer than this are one stretch (a segment's end is its last frame's arrival).
    const GAP_MS: i64 = 1_500;
    let cam = match camera(&state, &path) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let date = match parse_date(&state, q.date.as_deref()) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let (from, to) = match day_bounds(&state.tz, date) {
        Ok(b) => b,
        Err(m) => return bad_request(m),
    };
    let catalog = state.catalog.clone();
    let rows = match blocking(move || playlists::overlapping(&catalog, &cam.id, from, to)).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let mut spans: Vec<(i64, i64)> = Vec::new();
    let mut joins = Vec::new();
    let mut prev_session: Option<&str> = None;
    for s in &rows {
        let (a, b) = (s.start_ms.max(from), (s.start_ms + s.duration_ms).min(to));
        if prev_session.is_some_and(|p| p != s.session) {
            joins.push(a);
        }
        prev_session = Some(&s.session);
        match spans.last_mut() {
            Some(last) if a <= last.1 + GAP_MS => last.1 = last.1.max(b),
            _ => spans.push((a, b)),
        }
    }
    HttpResponse::Ok()
        .insert_header((CACHE_CONTROL, "no-cache"))
        .json(serde_json::json!({
            "date": date.to_string(),
            "from_ms": from,
            "to_ms": to,
            "spans": spans.iter().map(|(a, b)| serde_json::json!({"start_ms": a, "end_ms": b})).collect::<Vec<_>>(),
            "joins": joins,
        }))
}

/// A time range as one MPEG-TS file (the segments back to back; players handle the joins' timestamp jumps).
#[get("/download")]
async fn download(
    state: web::Data<State>,
    path: web::Path<String>,
    q: web::Query<RangeQuery>,
) -> HttpResponse {
    use futures_util::StreamExt as _;
    let (cam, from, to) = match camera_and_range(&state, &path, &q) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let (catalog, data_dir) = (state.catalog.clone(), state.data_dir.clone());
    let id = cam.id.clone();
    let files = blocking(move || {
        let rows = playlists::overlapping(&catalog, &id, from, to)?;
        // Sizes from the files themselves (Content-Length must be exact); a file gone is skipped.
        Ok(rows
            .into_iter()
            .filter_map(|s| {
                let p = data_dir.join(&s.path);
                std::fs::metadata(&p).ok().map(|m| (p, m.len()))
            })
            .collect::<Vec<_>>())
    })
    .await;
    let files = match files {
        Ok(f) if f.is_empty() => {
            return not_found(format!(
                "no footage of camera {:?} between {} and {}",
                cam.id,
                rfc3339(from),
                rfc3339(to)
            ));
        }
        Ok(f) => f,
        Err(r) => return r,
    };
    let total: u64 = files.iter().map(|(_, n)| n).sum();
    let name = format!(
        "{}_{}_{}.ts",
        cam.id,
        rfc3339(from).replace(':', "-"),
        rfc3339(to).replace(':', "-")
    );
    let body = futures_util::stream::iter(files)
        .then(|(p, n)| async move {
            use tokio::io::AsyncReadExt as _;
            match tokio::fs::File::open(&p).await {
                // Exactly the size announced, even if the file grew or shrank since.
                Ok(f) => tokio_util::io::ReaderStream::new(f.take(n)).left_stream(),
                Err(e) => futures_util::stream::once(async move { Err(e) }).right_stream(),
            }
        })
        .flatten();
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, "video/mp2t"))
        .insert_header((
            actix_web::http::header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{name}\""),
        ))
        .insert_header((actix_web::http::header::CONTENT_ENCODING, "identity"))
        .no_chunking(total)
        .streaming(body)
}

/// A whole segment (or 304 when the client has it: the ETag is the id and the size, a segment never changes).
fn whole_segment(
    id: i64,
    body: bytes::Bytes,
    h: &actix_web::http::header::HeaderMap,
) -> HttpResponse {
    let etag = format!("\"s{id}-{}\"", body.len());
    if h.get(actix_web::http::header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes())
    {
        return HttpResponse::NotModified()
            .insert_header((actix_web::http::header::ETAG, etag))
            .finish();
    }
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, "video/mp2t"))
        .insert_header((CACHE_CONTROL, "private, max-age=86400, immutable"))
        .insert_header((actix_web::http::header::ETAG, etag))
        .insert_header((actix_web::http::header::ACCEPT_RANGES, "bytes"))
        // Video does not compress: the Compress middleware leaves it alone.
        .insert_header((actix_web::http::header::CONTENT_ENCODING, "identity"))
        .body(body)
}

#[route("/segments/{file}", method = "GET", method = "HEAD")]
async fn segment(
    state: web::Data<State>,
    path: web::Path<(String, String)>,
    req: HttpRequest,
) -> HttpResponse {
    let (cam_id, file) = path.into_inner();
    if let Err(r) = camera(&state, &cam_id) {
        return r;
    }
    let Some(id) = file.strip_suffix(".ts").and_then(|n| n.parse::<i64>().ok()) else {
        return not_found(format!("{file:?} is not a segment name (expected <id>.ts)"));
    };
    let h = req.headers();
    let whole = !h.contains_key(actix_web::http::header::RANGE)
        && !h.contains_key(actix_web::http::header::IF_RANGE);
    let accel = state.accel_redirect.as_ref().filter(|_| {
        req.peer_addr()
            .is_some_and(|p| state.auth.config.trusted_proxies.contains(&p.ip()))
    });
    // The common case, a whole segment viewers fetched recently: from memory, without the catalog, while no
    // segment was deleted since its row was looked up.
    if whole
        && accel.is_none()
        && let Some(seg) = state.segments.get(id)
        && *seg.camera == *cam_id
        && seg.deletions == state.catalog.deletions_version()
    {
        return whole_segment(id, seg.body, h);
    }
    let deletions = state.catalog.deletions_version();
    let catalog = state.catalog.clone();
    let cid = cam_id.clone();
    let row = match blocking(move || catalog.segment(&cid, id)).await {
        Ok(Some(r)) => r,
        Ok(None) => return not_found(format!("camera {cam_id:?} has no segment {id}")),
        Err(r) => return r,
    };
    if let Some(prefix) = accel {
        // nginx sends the file from its internal location; vigil only authorised and resolved it.
        return HttpResponse::Ok()
            .insert_header((CONTENT_TYPE, "video/mp2t"))
            .insert_header((CACHE_CONTROL, "private, max-age=86400, immutable"))
            .insert_header(("X-Accel-Redirect", format!("{prefix}{}", row.path)))
            .finish();
    }
    let full = state.data_dir.join(&row.path);
    if whole {
        // Read in one call (actix-files would hop to the blocking pool per 64 KiB) and keep it.
        let path = full.clone();
        return match web::block(move || std::fs::read(path)).await {
            Ok(Ok(b)) => {
                let body = bytes::Bytes::from(b);
                state.segments.put(
                    id,
                    cache::Seg {
                        camera: cam_id.as_str().into(),
                        body: body.clone(),
                        deletions,
                    },
                );
                whole_segment(id, body, h)
            }
            Ok(Err(e)) => {
                tracing::warn!(file = %full.display(), "catalogued segment cannot be read: {e}");
                not_found(format!(
                    "segment {id} is catalogued but its file is not here"
                ))
            }
            Err(e) => internal(e),
        };
    }
    // Ranges: actix-files (Range, If-Range, partial content).
    match actix_files::NamedFile::open_async(&full).await {
        Ok(f) => {
            let mut resp = f
                .set_content_type("video/mp2t".parse().expect("valid mime"))
                .use_etag(true)
                .into_response(&req);
            resp.headers_mut().insert(
                CACHE_CONTROL,
                actix_web::http::header::HeaderValue::from_static(
                    "private, max-age=86400, immutable",
                ),
            );
            // Video does not compress: tell the Compress middleware to leave segments alone.
            resp.headers_mut().insert(
                actix_web::http::header::CONTENT_ENCODING,
                actix_web::http::header::HeaderValue::from_static("identity"),
            );
            resp
        }
        Err(e) => {
            tracing::warn!(file = %full.display(), "catalogued segment cannot be read: {e}");
            not_found(format!(
                "segment {id} is catalogued but its file is not here"
            ))
        }
    }
}

/// Bind and start the server; the returned handle stops it gracefully.
fn start(
    cx: &ChildContext,
    state: web::Data<State>,
    listen: std::net::SocketAddr,
    assets: Option<PathBuf>,
) -> Result<ChildHandle, Error> {
    let auth = state.auth.clone();
    let server = HttpServer::new(move || {
        let mut app = App::new()
            .wrap(actix_web::middleware::from_fn(guard::authenticate))
            .wrap(actix_web::middleware::Compress::default())
            .wrap(actix_web::middleware::from_fn(metrics::count))
            .app_data(state.clone())
            .app_data(web::JsonConfig::default().limit(16 * 1024))
            .service(healthz)
            .service(metrics::metrics)
            .service(session::login)
            .service(session::logout)
            .service(session::me)
            .service(session::audit)
            .service(cameras)
            .service(pipeline)
            .service(remote::mirror)
            .service(
                web::scope("/cameras/{camera}")
                    .wrap(actix_web::middleware::from_fn(guard::camera_scope))
                    .service(live)
                    .service(day)
                    .service(vod)
                    .service(spans)
                    .service(download)
                    .service(segment)
                    .service(remote::index_json)
                    .service(remote::ipfs)
                    .service(remote::master)
                    .service(remote::variant_vod),
            )
            .service(page::index)
            .service(page::login_page);
        if let Some(dir) = &assets {
            app = app.service(actix_files::Files::new("/assets", dir));
        }
        app
    })
    .workers(2)
    .disable_signals() // vigil handles SIGTERM/SIGINT and stops the tree in order
    .shutdown_timeout(5)
    .bind(listen)
    .map_err(|source| Error::HttpBind {
        addr: listen.to_string(),
        source,
    })?;
    for addr in server.addrs() {
        tracing::info!(actor = %cx.path, %addr, "HTTP listening on http://{addr}");
    }
    let server = server.run();
    let handle = server.handle();
    let path = cx.path.clone();
    let reload_path = cx.path.clone();
    // Users, tokens and sessions changed by `vigil user …` (another process) take effect within a second.
    let reload = async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        for n in 0u64.. {
            tick.tick().await;
            let a = auth.clone();
            // Once a minute, also end the sessions nobody will present again (expired, user changed).
            let sweep = n % 60 == 59;
            match tokio::task::spawn_blocking(move || {
                let changed = a.reload()?;
                if sweep {
                    a.sweep()?;
                }
                Ok::<_, crate::Error>(changed)
            })
            .await
            {
                Ok(Ok(true)) => {
                    tracing::info!(actor = %reload_path, "users or tokens changed: reloaded")
                }
                Ok(Ok(false)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(actor = %reload_path, "cannot reload users (trying again in 1 s): {e}")
                }
                Err(e) => tracing::warn!(actor = %reload_path, "user reload task failed: {e}"),
            }
        }
    };
    Ok(ChildHandle::task(
        async move {
            tokio::select! {
                r = server => match r {
                    Ok(()) => ExitReason::Normal,
                    Err(e) => ExitReason::Failed(format!("HTTP server failed: {e}")),
                },
                _ = reload => ExitReason::Normal,
            }
        },
        move || {
            tracing::info!(actor = %path, "stopping HTTP server (finishing requests in flight)");
            actix_rt::spawn(handle.stop(true));
        },
    ))
}

/// The `web` child of the `services` supervisor.
pub fn child_spec(
    config: &Config,
    catalog: Arc<Catalog>,
    board: Arc<Board>,
    auth: Arc<Auth>,
    shared: crate::tree::Shared,
) -> ChildSpec {
    let listen = config.listen_addr();
    let assets = config.http.assets_dir.clone();
    let state = web::Data::new(State {
        node_id: config.node_id.clone(),
        auth,
        started: Instant::now(),
        catalog,
        cameras: shared.cameras.clone(),
        board,
        data_dir: config.data_dir.clone(),
        live_window: config.capture.live_window,
        accel_redirect: config.http.accel_redirect.clone(),
        playlists: Default::default(),
        segments: cache::Segments::new(SEGMENT_CACHE_BYTES),
        tz: config.time_zone(),
        index: shared.index,
        kubo: shared.kubo,
        mirror: shared.mirror,
        metrics: shared.metrics,
        metrics_enabled: config.metrics.enabled,
        metrics_token: config.metrics.bearer_token.clone(),
        ipfs_link: shared.ipfs_link,
        index_link: shared.index_link,
        amqp_link: shared.amqp_link,
        days: Default::default(),
        retention: config.retention.clone(),
    });
    ChildSpec::worker("web", move |cx| {
        start(cx, state.clone(), listen, assets.clone()).map_err(|e| e.to_string())
    })
    .shutdown(Shutdown::Timeout(std::time::Duration::from_secs(10)))
    .about(format!("HTTP server on {listen}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_follow_the_time_zone_and_its_clock_changes() {
        let berlin = jiff::tz::TimeZone::get("Europe/Berlin").unwrap();
        let (from, to) = day_bounds(&berlin, jiff::civil::date(2026, 11, 21)).unwrap();
        assert_eq!(rfc3339(from), "2026-11-20T23:00:00.000Z");
        assert_eq!(to - from, 86_400_000);
        // The spring change: 23 hours; the autumn one: 25.
        let (from, to) = day_bounds(&berlin, jiff::civil::date(2026, 3, 29)).unwrap();
        assert_eq!(to - from, 23 * 3_600_000);
        let (from, to) = day_bounds(&berlin, jiff::civil::date(2026, 10, 25)).unwrap();
        assert_eq!(to - from, 25 * 3_600_000);
        let (from, _) =
            day_bounds(&jiff::tz::TimeZone::UTC, jiff::civil::date(2026, 11, 21)).unwrap();
        assert_eq!(rfc3339(from), "2026-11-21T00:00:00.000Z");
    }
}
