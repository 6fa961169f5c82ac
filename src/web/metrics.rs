//! `GET /metrics` (Prometheus, OpenMetrics text) and the middleware that counts every HTTP request by route
//! pattern, method and status.
//!
//! Access: with `[metrics] bearer_token`, a scrape must carry that token (from anywhere); without one, only a
//! direct request from the box itself (a loopback peer and no proxy header, so that nginx in front of vigil
//! cannot make the world local) is answered. The state is read on the blocking pool: a scrape is
//! O(cameras + routes + children), never O(history).

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use actix_web::middleware::Next;
use actix_web::{HttpRequest, HttpResponse, get, web};

use super::{State, error};
use crate::metrics::{BacklogSnap, CameraSnap, Snapshot};

/// Headers a proxy adds: a request carrying one came through a proxy, not from the box itself.
const PROXY_HEADERS: &[&str] = &["x-forwarded-for", "x-real-ip", "forwarded"];

/// Why a scrape is refused, if it is.
fn refused(req: &HttpRequest, state: &State) -> Option<HttpResponse> {
    if let Some(token) = &state.metrics_token {
        let sent = super::guard::bearer(req).unwrap_or_default();
        if super::guard::constant_time_eq(sent.as_bytes(), token.expose().as_bytes()) {
            return None;
        }
        let mut r = error(
            StatusCode::UNAUTHORIZED,
            "metrics need Authorization: Bearer <[metrics] bearer_token>",
        );
        r.headers_mut().insert(
            actix_web::http::header::WWW_AUTHENTICATE,
            actix_web::http::header::HeaderValue::from_static("Bearer realm=\"vigil-metrics\""),
        );
        return Some(r);
    }
    let local = req.peer_addr().is_some_and(|p| p.ip().is_loopback())
        && PROXY_HEADERS
            .iter()
            .all(|h| !req.headers().contains_key(*h));
    (!local).then(|| {
        error(
            StatusCode::FORBIDDEN,
            "metrics are served to this box only (loopback, no proxy); set [metrics] bearer_token to scrape from elsewhere",
        )
    })
}

/// What the scrape reads besides the counters. Blocking (the catalog, statvfs, /proc).
fn snapshot(state: &State) -> Snapshot {
    let now_ms = chrono::Utc::now().timestamp_millis();
    let age = |ms: Option<i64>| ms.map(|t| ((now_ms - t) as f64 / 1000.0).max(0.0));
    let cameras = state
        .cameras
        .list()
        .iter()
        .filter(|c| c.kind == "local")
        .map(|c| {
            let s = state.board.get(&c.id);
            CameraSnap {
                id: c.id.clone(),
                state: Some(
                    s.as_ref()
                        .map_or(crate::capture::State::Stopped, |s| s.state)
                        .as_str(),
                ),
                last_write_age: age(s.as_ref().and_then(|s| s.last_write_ms)),
                // Before the first segment of this run: since the newest one catalogued, or since start.
                last_segment_age: age(s.as_ref().and_then(|s| s.last_segment_ms.or(s.last_end_ms)))
                    .or_else(|| Some(state.started.elapsed().as_secs_f64())),
                recorded_seconds: s.as_ref().map_or(0.0, |s| s.recorded_ms as f64 / 1000.0),
                lost_seconds: s.as_ref().map_or(0.0, |s| s.lost_ms as f64 / 1000.0),
            }
        })
        .collect();
    let backlog = state.ipfs_link.as_ref().and_then(|_| {
        state.catalog.backlog().ok().map(|b| BacklogSnap {
            pin: b.pin,
            index: b.index,
            publish: b.publish,
            set_aside: b.failed,
        })
    });
    let mut links = Vec::new();
    if let Some(l) = &state.ipfs_link {
        links.push(("ipfs", l.is_up()));
    }
    if let Some(l) = &state.index_link {
        links.push(("mongodb", l.is_up()));
    }
    if let Some(l) = &state.amqp_link {
        links.push(("amqp", l.is_up()));
    }
    let disk = crate::retention::disk_space(&state.data_dir).ok();
    let ratio = |s: &crate::config::Space| {
        disk.filter(|(_, total)| *total > 0)
            .map_or(0.0, |(_, total)| s.bytes_of(total) as f64 / total as f64)
    };
    Snapshot {
        now_ms,
        cameras,
        backlog,
        links,
        disk,
        min_free_ratio: ratio(&state.retention.min_free),
        critical_free_ratio: ratio(&state.retention.critical_free),
        footage_bytes: state.catalog.total_bytes().ok().map(|b| b.max(0) as u64),
        mirror: state.mirror.as_ref().map(|m| m.snapshot()),
        process: crate::metrics::process_stats(),
    }
}

#[get("/metrics")]
pub(super) async fn metrics(req: HttpRequest, state: web::Data<State>) -> HttpResponse {
    if !state.metrics_enabled {
        return error(
            StatusCode::NOT_FOUND,
            "metrics are off ([metrics] enabled = false)",
        );
    }
    if let Some(r) = refused(&req, &state) {
        return r;
    }
    let st = state.clone();
    match web::block(move || st.metrics.render(&snapshot(&st))).await {
        Ok(Ok(text)) => HttpResponse::Ok()
            .insert_header((CONTENT_TYPE, crate::metrics::CONTENT_TYPE))
            .insert_header((CACHE_CONTROL, "no-store"))
            .body(text),
        Ok(Err(e)) => super::internal(format!("metrics encoding: {e}")),
        Err(e) => super::internal(e),
    }
}

/// Counts every request: route pattern (`unmatched` when no route matched), method, status, time to the
/// response head.
pub async fn count(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let began = Instant::now();
    let route = req.match_pattern();
    let method = req.method().clone();
    let state = req.app_data::<web::Data<State>>().cloned();
    let res = next.call(req).await;
    if let Some(state) = state {
        let status = match &res {
            Ok(r) => r.status().as_u16(),
            Err(e) => e.as_response_error().status_code().as_u16(),
        };
        state.metrics.http(
            route.as_deref().unwrap_or("unmatched"),
            &method,
            status,
            began.elapsed(),
        );
    }
    res
}
