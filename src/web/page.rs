//! The viewer (`/`, behind the login) and the login page (`/login`, public), both plain HTML with inline script,
//! built into the binary. They load hls.js from `/assets/` (`http.assets_dir`: hls.js's `dist` folder
//! installed from npm with a lockfile; no CDN).

use actix_web::http::header::CACHE_CONTROL;
use actix_web::{HttpResponse, get};

const INDEX: &str = include_str!("index.html");
const LOGIN: &str = include_str!("login.html");

fn html(body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((CACHE_CONTROL, "no-cache"))
        .insert_header(("X-Frame-Options", "DENY"))
        .insert_header(("Referrer-Policy", "same-origin"))
        .body(body)
}

#[get("/")]
pub async fn index() -> HttpResponse {
    html(INDEX)
}

#[get("/login")]
pub async fn login_page() -> HttpResponse {
    html(LOGIN)
}
