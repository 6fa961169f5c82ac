//! A fake IPFS Cluster REST API for tests (Cluster cannot run on this machine). It follows the documented wire
//! format — `POST /pins/{cid}?replication-min=&replication-max=&name=` answers a Pin object, `GET /pins/{cid}`
//! a GlobalPinInfo `{cid, name, allocations, origins, created, metadata, peer_map{peer: {peername,
//! ipfs_peer_id, status, timestamp, error, attempt_count, priority_pin}}}`, errors are `{"code", "message"}`,
//! basic auth when configured — and, like a one-peer cluster, really pins on a js-ipfs node through its RPC API.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use serde_json::json;

/// One recorded pin request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinRequest {
    pub cid: String,
    pub name: String,
    pub min: i32,
    pub max: i32,
}

#[derive(Clone)]
struct State {
    ipfs_api: String,
    requests: Arc<Mutex<Vec<PinRequest>>>,
    basic: Option<String>,
}

pub struct FakeCluster {
    pub url: String,
    pub requests: Arc<Mutex<Vec<PinRequest>>>,
    handle: actix_web::dev::ServerHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn error(code: u16, message: &str) -> HttpResponse {
    HttpResponse::build(actix_web::http::StatusCode::from_u16(code).unwrap())
        .json(json!({ "code": code, "message": message }))
}

fn authorised(req: &HttpRequest, state: &State) -> bool {
    let Some(want) = &state.basic else {
        return true;
    };
    use base64::Engine as _;
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(want)
    );
    req.headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        == Some(expected.as_str())
}

fn valid_cid(cid: &str) -> bool {
    (cid.starts_with("bafy") || cid.starts_with("bafk") || cid.starts_with("Qm"))
        && cid.chars().all(|c| c.is_ascii_alphanumeric())
}

async fn ipfs_post(api: &str, path: &str) -> Result<serde_json::Value, String> {
    let r = reqwest::Client::new()
        .post(format!("{api}/api/v0/{path}"))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = r.status();
    let text = r.text().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(text);
    }
    serde_json::from_str(text.lines().last().unwrap_or("{}")).map_err(|e| e.to_string())
}

async fn pin(
    req: HttpRequest,
    state: web::Data<State>,
    cid: web::Path<String>,
    q: web::Query<HashMap<String, String>>,
) -> HttpResponse {
    if !authorised(&req, &state) {
        return error(401, "Unauthorized");
    }
    if !valid_cid(&cid) {
        return error(400, &format!("error decoding Cid: invalid cid: {cid}"));
    }
    let num = |k: &str| q.get(k).and_then(|v| v.parse::<i32>().ok()).unwrap_or(0);
    let (min, max) = (num("replication-min"), num("replication-max"));
    let name = q.get("name").cloned().unwrap_or_default();
    if let Err(e) = ipfs_post(&state.ipfs_api, &format!("pin/add?arg={cid}")).await {
        return error(500, &format!("pinning on the ipfs peer failed: {e}"));
    }
    state.requests.lock().unwrap().push(PinRequest {
        cid: cid.to_string(),
        name: name.clone(),
        min,
        max,
    });
    HttpResponse::Ok().json(json!({
        "cid": cid.as_str(), "type": "pin", "allocations": ["12D3KooWFakeClusterPeer"], "max_depth": -1,
        "reference": null, "replication_factor_min": min, "replication_factor_max": max, "name": name,
        "mode": "recursive", "shard_size": 0, "user_allocations": null, "expire_at": "0001-01-01T00:00:00Z",
        "metadata": null, "pin_update": null, "origins": [], "timestamp": chrono::Utc::now().to_rfc3339(),
    }))
}

async fn status(req: HttpRequest, state: web::Data<State>, cid: web::Path<String>) -> HttpResponse {
    if !authorised(&req, &state) {
        return error(401, "Unauthorized");
    }
    if !valid_cid(&cid) {
        return error(400, &format!("error decoding Cid: invalid cid: {cid}"));
    }
    let name = state
        .requests
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find(|r| r.cid == *cid)
        .map(|r| r.name.clone());
    let pinned = ipfs_post(&state.ipfs_api, &format!("pin/ls?arg={cid}&type=recursive"))
        .await
        .is_ok();
    let ipfs_id = ipfs_post(&state.ipfs_api, "id")
        .await
        .ok()
        .and_then(|v| v["ID"].as_str().map(str::to_string))
        .unwrap_or_default();
    let peer_status = if pinned { "pinned" } else { "unpinned" };
    HttpResponse::Ok().json(json!({
        "cid": cid.as_str(), "name": name.unwrap_or_default(), "allocations": ["12D3KooWFakeClusterPeer"], "origins": [],
        "created": chrono::Utc::now().to_rfc3339(), "metadata": null,
        "peer_map": { "12D3KooWFakeClusterPeer": {
            "peername": "fake-cluster-0", "ipfs_peer_id": ipfs_id, "ipfs_peer_addresses": [],
            "status": peer_status, "timestamp": chrono::Utc::now().to_rfc3339(), "error": "",
            "attempt_count": 0, "priority_pin": false,
        }},
    }))
}

impl FakeCluster {
    /// Serve on a free 127.0.0.1 port, pinning on the IPFS node at `ipfs_api`; `basic` = "user:password".
    pub fn start(ipfs_api: &str, basic: Option<&str>) -> FakeCluster {
        let state = State {
            ipfs_api: ipfs_api.to_string(),
            requests: Arc::default(),
            basic: basic.map(str::to_string),
        };
        let requests = state.requests.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            actix_rt::System::new().block_on(async move {
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(web::Data::new(state.clone()))
                        .route("/pins/{cid}", web::post().to(pin))
                        .route("/pins/{cid}", web::get().to(status))
                })
                .workers(1)
                .disable_signals()
                .bind("127.0.0.1:0")
                .unwrap();
                let addr = server.addrs()[0];
                let server = server.run();
                tx.send((addr, server.handle())).unwrap();
                let _ = server.await;
            });
        });
        let (addr, handle) = rx.recv().unwrap();
        FakeCluster {
            url: format!("http://{addr}"),
            requests,
            handle,
            thread: Some(thread),
        }
    }
}

impl Drop for FakeCluster {
    fn drop(&mut self) {
        let h = self.handle.clone();
        std::thread::spawn(move || actix_rt::System::new().block_on(h.stop(false)));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
