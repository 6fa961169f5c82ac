//! The player page: lists the cameras and plays one live (or its whole day, to seek back) with hls.js served by
//! vigil itself from `http.assets_dir` (no CDN).

use actix_web::{HttpResponse, get};

const INDEX: &str = include_str!("index.html");

#[get("/")]
pub async fn index() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(INDEX)
}
