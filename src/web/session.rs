//! Login, logout, "who am I" and the audit log: the routes of a browser session. The cookie is HttpOnly,
//! SameSite=Strict, Path=/, Secure when the request came over TLS, and lives as long as the session's
//! absolute limit.

use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::StatusCode;
use actix_web::http::header::{CACHE_CONTROL, RETRY_AFTER};
use actix_web::{HttpRequest, HttpResponse, get, post, web};
use serde::Deserialize;

use super::guard::{client_addr, over_tls};
use super::{State, blocking, error, forbidden, rfc3339};
use crate::auth::{COOKIE, LoginError, Principal, Via};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    username: String,
    password: String,
}

fn cookie(state: &State, req: &HttpRequest, value: String, max_age_s: i64) -> Cookie<'static> {
    Cookie::build(COOKIE, value)
        .path("/")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(over_tls(req, state))
        .max_age(actix_web::cookie::time::Duration::seconds(max_age_s))
        .finish()
}

/// `POST /api/login` `{"username", "password"}` (JSON only: a cross-site form cannot send it).
#[post("/api/login")]
pub async fn login(
    state: web::Data<State>,
    req: HttpRequest,
    body: Result<web::Json<LoginBody>, actix_web::Error>,
) -> HttpResponse {
    let body = match body {
        Ok(b) => b.into_inner(),
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "expected JSON {{\"username\": \"…\", \"password\": \"…\"}} with Content-Type: application/json ({e})"
                ),
            );
        }
    };
    if body.username.len() > 256 || body.password.len() > 4096 {
        return error(StatusCode::BAD_REQUEST, "user name or password too long");
    }
    if !state.auth.config.enabled {
        return error(
            StatusCode::NOT_FOUND,
            "logins are off on this node ([auth] enabled = false): every route is open",
        );
    }
    let addr = client_addr(&req, &state);
    match state.auth.login(&body.username, &body.password, addr).await {
        Ok(ok) => {
            let max_age = state.auth.config.absolute_hours as i64 * 3600;
            HttpResponse::Ok()
                .insert_header((CACHE_CONTROL, "no-store"))
                .cookie(cookie(&state, &req, ok.cookie_value, max_age))
                .json(serde_json::json!({
                    "user": ok.principal.user,
                    "role": ok.principal.role,
                    "csrf": ok.csrf,
                }))
        }
        Err(LoginError::Wrong) => error(StatusCode::UNAUTHORIZED, "wrong user name or password"),
        Err(LoginError::Busy) => HttpResponse::ServiceUnavailable()
            .insert_header((RETRY_AFTER, "1"))
            .json(serde_json::json!({
                "error": "too many logins at once; try again in a second",
                "retry_after_seconds": 1,
            })),
        Err(LoginError::Locked { retry_after_s }) => HttpResponse::TooManyRequests()
            .insert_header((RETRY_AFTER, retry_after_s.to_string()))
            .json(serde_json::json!({
                "error": format!("too many failed logins; try again in {retry_after_s} s"),
                "retry_after_seconds": retry_after_s,
            })),
    }
}

/// `POST /api/logout` (with the session's `X-CSRF-Token`): ends the session and clears the cookie.
#[post("/api/logout")]
pub async fn logout(state: web::Data<State>, req: HttpRequest, who: Principal) -> HttpResponse {
    state.auth.logout(&who, client_addr(&req, &state)).await;
    let mut gone = cookie(&state, &req, String::new(), 0);
    gone.make_removal();
    HttpResponse::NoContent().cookie(gone).finish()
}

/// `GET /api/me`: the user, its role, the session's CSRF token and when the session ends.
#[get("/api/me")]
pub async fn me(who: Principal) -> HttpResponse {
    let csrf = match &who.via {
        Via::Cookie { csrf, .. } => Some(csrf.clone()),
        _ => None,
    };
    HttpResponse::Ok()
        .insert_header((CACHE_CONTROL, "no-store"))
        .json(serde_json::json!({
            "user": who.user,
            "role": who.role,
            "csrf": csrf,
            "factories": who.factories,
            "cameras": who.cameras,
            "expires_at": who.expires_ms.map(rfc3339),
            "idle_expires_at": who.idle_expires_ms.map(rfc3339),
        }))
}

#[derive(Deserialize)]
struct AuditQuery {
    limit: Option<usize>,
}

/// `GET /api/audit?limit=N` (admins): the newest logins, failures and logouts.
#[get("/api/audit")]
pub async fn audit(
    state: web::Data<State>,
    who: Principal,
    q: web::Query<AuditQuery>,
) -> HttpResponse {
    if who.role != crate::catalog::Role::Admin {
        return forbidden("the audit log is for admins");
    }
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let catalog = state.catalog.clone();
    match blocking(move || catalog.audit_log(limit)).await {
        Ok(rows) => HttpResponse::Ok()
            .insert_header((CACHE_CONTROL, "no-store"))
            .json(
                rows.into_iter()
                    .map(|r| {
                        serde_json::json!({
                            "at": rfc3339(r.at_ms), "event": r.event, "user": r.user,
                            "addr": r.addr, "detail": r.detail,
                        })
                    })
                    .collect::<Vec<_>>(),
            ),
        Err(r) => r,
    }
}
