//! The HTTP server, as a supervised worker. Today it serves `GET /healthz`; the live, day, replay, segment and
//! UI routes join it with the capture path and auth.

use std::time::Instant;

use actix_web::{App, HttpResponse, HttpServer, get, web};
use serde::Serialize;
use supervisors::{ChildContext, ChildHandle, ChildSpec, ExitReason, Shutdown};

use crate::config::Config;
use crate::error::Error;

#[derive(Clone)]
struct State {
    node_id: String,
    started: Instant,
}

#[derive(Serialize)]
struct Health<'a> {
    status: &'static str,
    node_id: &'a str,
    version: &'static str,
    uptime_seconds: u64,
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

/// Bind and start the server; the returned handle stops it gracefully.
fn start(
    cx: &ChildContext,
    node_id: String,
    listen: std::net::SocketAddr,
) -> Result<ChildHandle, Error> {
    let state = State {
        node_id,
        started: Instant::now(),
    };
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(state.clone()))
            .service(healthz)
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
    Ok(ChildHandle::task(
        async move {
            match server.await {
                Ok(()) => ExitReason::Normal,
                Err(e) => ExitReason::Failed(format!("HTTP server failed: {e}")),
            }
        },
        move || {
            tracing::info!(actor = %path, "stopping HTTP server (finishing requests in flight)");
            actix_rt::spawn(handle.stop(true));
        },
    ))
}

/// The `web` child of the `services` supervisor.
pub fn child_spec(config: &Config) -> ChildSpec {
    let node_id = config.node_id.clone();
    let listen = config.listen_addr();
    ChildSpec::worker("web", move |cx| {
        start(cx, node_id.clone(), listen).map_err(|e| e.to_string())
    })
    .shutdown(Shutdown::Timeout(std::time::Duration::from_secs(10)))
    .about(format!("HTTP server on {listen}"))
}
