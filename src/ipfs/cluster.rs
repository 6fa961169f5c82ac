//! A client for IPFS Cluster's REST API (`POST /pins/{cid}`, `GET /pins/{cid}`), used instead of local pinning
//! when a cluster is configured. Cluster cannot run on the test machine; its tests use a fake that follows the
//! documented wire format (see docs/ipfs.md).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::kubo::Auth;
use crate::error::{Error, Result};

/// One cluster peer's view of a pin (`PinInfoShort`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PeerPin {
    #[serde(default)]
    pub peername: String,
    /// `pinned`, `pinning`, `pin_queued`, `pin_error`, `remote` (not allocated there), `unpinned`, …
    pub status: String,
    #[serde(default)]
    pub error: String,
}

/// Cluster-wide status of a pin (`GlobalPinInfo`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PinStatus {
    pub cid: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub peer_map: BTreeMap<String, PeerPin>,
}

impl PinStatus {
    /// Peers that hold the whole content.
    pub fn pinned_on(&self) -> usize {
        self.peer_map
            .values()
            .filter(|p| p.status == "pinned")
            .count()
    }
    /// Peer errors, if any.
    pub fn errors(&self) -> Vec<String> {
        self.peer_map
            .iter()
            .filter(|(_, p)| p.status.contains("error"))
            .map(|(id, p)| format!("{id}: {} {}", p.status, p.error))
            .collect()
    }
}

/// Cluster REST API client.
#[derive(Debug, Clone)]
pub struct Cluster {
    http: reqwest::Client,
    base: String,
    auth: Option<Auth>,
    timeout: Duration,
}

impl Cluster {
    pub fn new(base: &str, auth: Option<Auth>, timeout: Duration) -> Result<Cluster> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| Error::cluster("client", None, e.to_string()))?;
        Ok(Cluster {
            http,
            base: base.trim_end_matches('/').to_string(),
            auth,
            timeout,
        })
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let rb = self
            .http
            .request(method, format!("{}{path}", self.base))
            .timeout(self.timeout);
        match &self.auth {
            Some(Auth::Basic { user, password }) => rb.basic_auth(user, Some(password)),
            Some(Auth::Bearer(t)) => rb.bearer_auth(t),
            None => rb,
        }
    }

    async fn call(&self, op: &'static str, rb: reqwest::RequestBuilder) -> Result<String> {
        let resp = rb
            .send()
            .await
            .map_err(|e| Error::cluster(op, None, e.to_string()))?;
        let status = resp.status();
        let body = resp
            .text()
            .await
            .map_err(|e| Error::cluster(op, None, e.to_string()))?;
        if status.is_success() {
            return Ok(body);
        }
        // Cluster errors: {"code": 404, "message": "…"}
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| {
                v.get("message")
                    .and_then(|m| m.as_str())
                    .map(str::to_string)
            })
            .unwrap_or(body);
        Err(Error::cluster(op, Some(status.as_u16()), message))
    }

    /// Pin `cid` cluster-wide with a replication range (idempotent: pinning again updates nothing).
    pub async fn pin(
        &self,
        cid: &str,
        name: &str,
        replication_min: i32,
        replication_max: i32,
    ) -> Result<()> {
        let rb = self
            .req(reqwest::Method::POST, &format!("/pins/{cid}"))
            .query(&[
                ("replication-min", replication_min.to_string()),
                ("replication-max", replication_max.to_string()),
                ("name", name.to_string()),
            ]);
        self.call("cluster pin", rb).await.map(|_| ())
    }

    /// Cluster-wide status of `cid`.
    pub async fn status(&self, cid: &str) -> Result<PinStatus> {
        let body = self
            .call(
                "cluster status",
                self.req(reqwest::Method::GET, &format!("/pins/{cid}")),
            )
            .await?;
        serde_json::from_str(&body)
            .map_err(|e| Error::cluster("cluster status", None, format!("unexpected answer: {e}")))
    }
}
