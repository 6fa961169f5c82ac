//! The authorization guard every request goes through, and the route table it is checked against.
//!
//! Two layers, both middleware, so a handler cannot forget them:
//! - [`authenticate`] wraps the whole app: default deny. Only [`PUBLIC`] paths pass without a user; every other
//!   request needs a session cookie or a bearer token (401 otherwise; the app page redirects to `/login`).
//!   State-changing requests with a cookie must carry the session's CSRF token (`X-CSRF-Token`) and, when the
//!   browser sends one, an `Origin` of this host.
//! - [`camera_scope`] wraps the `/cameras/{camera}` scope: the camera must exist on this node AND be in the
//!   user's scope; otherwise the answer is the same 404 an unknown camera gets (no leak of which exist).

use std::net::IpAddr;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::http::header::{AUTHORIZATION, COOKIE, HOST, LOCATION, ORIGIN};
use actix_web::middleware::Next;
use actix_web::{FromRequest, HttpMessage, HttpRequest, HttpResponse, web};

use super::{State, error, unknown_camera};
use crate::auth::{COOKIE as SESSION_COOKIE, Principal, Via};

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone (health, the login page and call, static assets).
    Public,
    /// Any logged-in user.
    User,
    /// Admins and devs.
    Staff,
    /// Admins.
    Admin,
    /// Users whose scope holds the camera in the path.
    Camera,
    /// Prometheus: no login; `[metrics] bearer_token` if set, else direct loopback requests only.
    Metrics,
}

/// Every route of the app: method(s), path pattern, who may call it. The guard's tests walk this table (and a
/// unit test checks it against the handlers' route attributes, so a new route cannot be left out).
pub const ROUTES: &[(&str, &str, Access)] = &[
    ("GET", "/healthz", Access::Public),
    ("GET", "/metrics", Access::Metrics),
    ("GET", "/login", Access::Public),
    ("POST", "/api/login", Access::Public),
    ("GET", "/assets/{file}", Access::Public),
    ("GET", "/", Access::User),
    ("GET", "/api/me", Access::User),
    ("POST", "/api/logout", Access::User),
    ("GET", "/api/cameras", Access::User),
    ("GET", "/api/pipeline", Access::Staff),
    ("GET", "/api/audit", Access::Admin),
    ("GET", "/cameras/{camera}/live.m3u8", Access::Camera),
    ("GET", "/cameras/{camera}/day.m3u8", Access::Camera),
    ("GET", "/cameras/{camera}/vod.m3u8", Access::Camera),
    ("GET", "/cameras/{camera}/spans", Access::Camera),
    ("GET", "/cameras/{camera}/download", Access::Camera),
    ("GET", "/cameras/{camera}/segments/{file}", Access::Camera),
    ("GET", "/api/mirror", Access::Staff),
    ("GET", "/cameras/{camera}/index.json", Access::Camera),
    ("GET", "/cameras/{camera}/ipfs/{file}", Access::Camera),
    ("GET", "/cameras/{camera}/master.m3u8", Access::Camera),
    (
        "GET",
        "/cameras/{camera}/variants/{rendition}/vod.m3u8",
        Access::Camera,
    ),
];

/// Paths that need no login.
pub const PUBLIC: &[&str] = &["/healthz", "/login", "/api/login"];

/// Paths whose handler checks access itself, without a login (Prometheus' scrape).
pub const OWN_ACCESS: &[&str] = &["/metrics"];

fn is_public(path: &str) -> bool {
    PUBLIC.contains(&path) || path.starts_with("/assets/") || OWN_ACCESS.contains(&path)
}

/// The client's address: the peer, or what a trusted proxy says it forwarded for.
pub(super) fn client_addr(req: &HttpRequest, state: &State) -> Option<IpAddr> {
    let peer = req.peer_addr()?.ip();
    if state.auth.config.trusted_proxies.contains(&peer)
        && let Some(fwd) = req
            .headers()
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
        && let Some(last) = fwd.rsplit(',').next()
        && let Ok(ip) = last.trim().parse()
    {
        return Some(ip);
    }
    Some(peer)
}

/// Whether the request came over TLS (directly, or per a trusted proxy's `X-Forwarded-Proto`).
pub(super) fn over_tls(req: &HttpRequest, state: &State) -> bool {
    match state.auth.config.secure_cookies.as_str() {
        "always" => return true,
        "never" => return false,
        _ => {}
    }
    if req.connection_info().scheme() == "https" && req.headers().get("x-forwarded-proto").is_none()
    {
        return true;
    }
    let trusted = req
        .peer_addr()
        .is_some_and(|p| state.auth.config.trusted_proxies.contains(&p.ip()));
    trusted
        && req
            .headers()
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

pub(super) fn bearer(req: &HttpRequest) -> Option<&str> {
    let v = req.headers().get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn session_cookie(req: &HttpRequest) -> Option<String> {
    // Parsed by hand from the header: actix's cookie jar is built per request anyway, this avoids the
    // allocation of every other cookie.
    req.headers()
        .get_all(COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v.to_string())
}

pub(super) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// An `Origin` header, when present, must name this host (a cross-site form or fetch is refused).
fn origin_ok(req: &HttpRequest) -> bool {
    let Some(origin) = req.headers().get(ORIGIN) else {
        return true;
    };
    let (Ok(origin), Some(host)) = (
        origin.to_str(),
        req.headers().get(HOST).and_then(|h| h.to_str().ok()),
    ) else {
        return false;
    };
    origin
        .split_once("://")
        .is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(host))
}

fn unsafe_method(m: &Method) -> bool {
    !matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS)
}

fn app_state(req: &ServiceRequest) -> web::Data<State> {
    req.app_data::<web::Data<State>>()
        .expect("the app has its state")
        .clone()
}

/// The app-wide guard (see the module doc).
pub async fn authenticate(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let state = app_state(&req);
    if unsafe_method(req.method()) && !origin_ok(req.request()) {
        let resp = error(
            actix_web::http::StatusCode::FORBIDDEN,
            "cross-site request refused (Origin is not this host)",
        );
        return Ok(req.into_response(resp).map_into_right_body());
    }
    if is_public(req.path()) {
        return Ok(next.call(req).await?.map_into_left_body());
    }
    let principal = state.auth.authenticate(
        bearer(req.request()),
        session_cookie(req.request()).as_deref(),
    );
    let Some(principal) = principal else {
        let resp = if req.path() == "/" && matches!(*req.method(), Method::GET | Method::HEAD) {
            let next_url = req
                .uri()
                .path_and_query()
                .map_or("/".to_string(), |p| p.to_string());
            let q: String = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("next", &next_url)
                .finish();
            HttpResponse::Found()
                .insert_header((LOCATION, format!("/login?{q}")))
                .finish()
        } else {
            let mut r = error(
                actix_web::http::StatusCode::UNAUTHORIZED,
                "login required (no session, or it expired): POST /api/login, or send Authorization: Bearer <token>",
            );
            r.headers_mut().insert(
                actix_web::http::header::WWW_AUTHENTICATE,
                actix_web::http::header::HeaderValue::from_static("Bearer realm=\"vigil\""),
            );
            r
        };
        return Ok(req.into_response(resp).map_into_right_body());
    };
    if unsafe_method(req.method())
        && let Via::Cookie { csrf, .. } = &principal.via
    {
        let sent = req
            .headers()
            .get("x-csrf-token")
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        if !constant_time_eq(sent, csrf.as_bytes()) {
            let resp = error(
                actix_web::http::StatusCode::FORBIDDEN,
                "missing or wrong X-CSRF-Token (GET /api/me gives the session's token)",
            );
            return Ok(req.into_response(resp).map_into_right_body());
        }
    }
    req.extensions_mut().insert(principal);
    Ok(next.call(req).await?.map_into_left_body())
}

/// The `/cameras/{camera}` guard (see the module doc).
pub async fn camera_scope(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let state = app_state(&req);
    let id = req
        .match_info()
        .get("camera")
        .unwrap_or_default()
        .to_string();
    let allowed = {
        let ext = req.extensions();
        let p = ext.get::<Principal>();
        state
            .cameras
            .get(&id)
            .as_ref()
            .is_some_and(|c| p.is_some_and(|p| p.may_see(&c.id, &c.factory_id)))
    };
    if !allowed {
        return Ok(req.into_response(unknown_camera(&id)).map_into_right_body());
    }
    Ok(next.call(req).await?.map_into_left_body())
}

/// The authenticated user, as an extractor (the guard put it there; absent only on public routes).
impl FromRequest for Principal {
    type Error = actix_web::Error;
    type Future = std::future::Ready<Result<Principal, actix_web::Error>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        std::future::ready(
            req.extensions()
                .get::<Principal>()
                .cloned()
                .ok_or_else(|| actix_web::error::ErrorUnauthorized("login required")),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every route attribute in the web module's sources is in [`ROUTES`], and every entry has a handler:
    /// a route added without a line here fails this test (and the tenant matrix walks [`ROUTES`]).
    #[test]
    fn the_route_table_lists_every_handler() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/web");
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for line in text.lines().map(str::trim) {
                for attr in [
                    "#[get(\"",
                    "#[post(\"",
                    "#[route(\"",
                    "#[put(\"",
                    "#[delete(\"",
                ] {
                    if let Some(rest) = line.strip_prefix(attr) {
                        found.push(rest.split('"').next().unwrap().to_string());
                    }
                }
            }
        }
        // Camera routes are declared relative to the `/cameras/{camera}` scope.
        let full: Vec<String> = found
            .iter()
            .map(|p| {
                if ROUTES.iter().any(|(_, r, _)| r == p) {
                    p.clone()
                } else {
                    format!("/cameras/{{camera}}{p}")
                }
            })
            .collect();
        for p in &full {
            assert!(
                ROUTES.iter().any(|(_, r, _)| r == p),
                "route {p} is not in guard::ROUTES"
            );
        }
        // /assets/{file} is actix-files' service, not an attribute.
        assert_eq!(full.len() + 1, ROUTES.len(), "{full:?}");
    }

    #[test]
    fn origin_and_csrf_comparisons() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        let req = actix_web::test::TestRequest::default()
            .insert_header((HOST, "box:8000"))
            .insert_header((ORIGIN, "http://box:8000"))
            .to_http_request();
        assert!(origin_ok(&req));
        let req = actix_web::test::TestRequest::default()
            .insert_header((HOST, "box:8000"))
            .insert_header((ORIGIN, "http://evil.example"))
            .to_http_request();
        assert!(!origin_ok(&req));
    }
}
