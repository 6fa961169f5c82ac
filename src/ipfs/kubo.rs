//! Our own client for the Kubo RPC API (`/api/v0/…`), which js-ipfs serves too. It accepts both servers'
//! answers (e.g. `Size` as a string in Kubo, a number in js-ipfs), maps error bodies to typed errors, and uses
//! multibase (`u` + base64url) for pubsub topics and data as Kubo ≥ 0.11 does.

use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use reqwest::multipart::{Form, Part};
use serde::Deserialize;
use serde_json::Value;

use crate::error::{Error, Result};

/// Credentials for a remote API behind a proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    Basic { user: String, password: String },
    Bearer(String),
}

/// A Kubo RPC API client. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Kubo {
    http: reqwest::Client,
    base: String,
    auth: Option<Auth>,
    timeout: Duration,
}

/// What `add` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Added {
    pub cid: String,
    pub size: u64,
}

/// What `id` answers.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PeerInfo {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "Addresses", default)]
    pub addresses: Vec<String>,
    #[serde(rename = "AgentVersion", default)]
    pub agent_version: String,
}

/// A pubsub message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub from: String,
    pub data: Vec<u8>,
    pub seqno: Option<String>,
    pub topics: Vec<String>,
}

/// A pubsub subscription: messages until the connection ends.
pub type Subscription = Pin<Box<dyn Stream<Item = Result<Message>> + Send>>;

/// `u` + base64url, no padding (multibase), as Kubo ≥ 0.11 expects for topics and sends for data.
pub fn multibase(data: &[u8]) -> String {
    format!("u{}", URL_SAFE_NO_PAD.encode(data))
}

/// Decode a multibase `u…` string; also accepts plain base64 (older Kubo) and, failing both, the raw text.
pub fn demultibase(s: &str) -> Vec<u8> {
    if let Some(rest) = s.strip_prefix('u')
        && let Ok(v) = URL_SAFE_NO_PAD.decode(rest)
    {
        return v;
    }
    STANDARD.decode(s).unwrap_or_else(|_| s.as_bytes().to_vec())
}

/// js-ipfs refuses multipart parts without a Content-Type ("No content-type in multipart part"); Kubo does not care.
fn octet(part: Part) -> Part {
    part.mime_str("application/octet-stream")
        .expect("a valid mime type")
}

fn u64_of(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

impl Kubo {
    /// A client for the API at `base` (e.g. `http://127.0.0.1:5001`); `timeout` bounds each call except the
    /// streaming ones (cat, pubsub/sub), which are bounded by connection and idle timeouts.
    pub fn new(base: &str, auth: Option<Auth>, timeout: Duration) -> Result<Kubo> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| Error::ipfs("client", e.to_string()))?;
        Ok(Kubo {
            http,
            base: base.trim_end_matches('/').to_string(),
            auth,
            timeout,
        })
    }

    /// The API's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn post(&self, op: &str) -> reqwest::RequestBuilder {
        let rb = self.http.post(format!("{}/api/v0/{op}", self.base));
        match &self.auth {
            Some(Auth::Basic { user, password }) => rb.basic_auth(user, Some(password)),
            Some(Auth::Bearer(t)) => rb.bearer_auth(t),
            None => rb,
        }
    }

    /// Send, and turn transport failures and non-2xx answers into typed errors.
    async fn send(
        &self,
        op: &'static str,
        rb: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response> {
        let resp = rb
            .send()
            .await
            .map_err(|e| Error::ipfs_unreachable(op, &e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = resp.text().await.unwrap_or_default();
        // Kubo: {"Message": "...", "Code": 0, "Type": "error"}; anything else is kept as text.
        let message = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v.get("Message").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_else(|| body.trim().to_string());
        Err(Error::IpfsApi {
            op,
            status: status.as_u16(),
            message,
        })
    }

    async fn json(&self, op: &'static str, rb: reqwest::RequestBuilder) -> Result<Value> {
        let resp = self.send(op, rb.timeout(self.timeout)).await?;
        let text = resp
            .text()
            .await
            .map_err(|e| Error::ipfs_unreachable(op, &e))?;
        // Some answers are NDJSON (add with progress, pin/add with progress): take the last object.
        let last = text
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("{}");
        serde_json::from_str(last)
            .map_err(|e| Error::ipfs(op, format!("unexpected answer {last:?}: {e}")))
    }

    fn added(v: &Value) -> Result<Added> {
        let cid = v
            .get("Hash")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::ipfs("add", format!("no Hash in {v}")))?;
        Ok(Added {
            cid: cid.to_string(),
            size: v.get("Size").and_then(u64_of).unwrap_or(0),
        })
    }

    const ADD_QUERY: [(&'static str, &'static str); 4] = [
        ("cid-version", "1"),
        ("raw-leaves", "true"),
        ("cid-base", "base32"),
        ("pin", "false"),
    ];

    /// Add a file, streamed from disk: CIDv1, raw leaves, base32, not pinned (pin separately).
    pub async fn add_file(&self, path: &Path) -> Result<Added> {
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|e| Error::io("cannot open segment", path, e))?;
        let len = file
            .metadata()
            .await
            .map_err(|e| Error::io("cannot stat segment", path, e))?
            .len();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
        self.add(Part::stream_with_length(body, len).file_name(name))
            .await
    }

    /// Add bytes (same options as [`Kubo::add_file`]).
    pub async fn add_bytes(&self, name: &str, data: Vec<u8>) -> Result<Added> {
        self.add(Part::bytes(data).file_name(name.to_string()))
            .await
    }

    /// The CID `add` would give these bytes (same options), without storing them (`only-hash`).
    pub async fn hash_bytes(&self, data: Vec<u8>) -> Result<String> {
        let form = Form::new().part("file", octet(Part::bytes(data).file_name("segment.ts")));
        let v = self
            .json(
                "add",
                self.post("add")
                    .query(&Self::ADD_QUERY)
                    .query(&[("only-hash", "true")])
                    .multipart(form),
            )
            .await?;
        Ok(Self::added(&v)?.cid)
    }

    async fn add(&self, file: Part) -> Result<Added> {
        let form = Form::new().part("file", octet(file));
        let v = self
            .json(
                "add",
                self.post("add").query(&Self::ADD_QUERY).multipart(form),
            )
            .await?;
        Self::added(&v)
    }

    /// Pin recursively (idempotent).
    pub async fn pin_add(&self, cid: &str) -> Result<()> {
        self.json("pin/add", self.post("pin/add").query(&[("arg", cid)]))
            .await?;
        Ok(())
    }

    /// Remove the recursive pin of `cid` (idempotent: "not pinned" is success).
    pub async fn pin_rm(&self, cid: &str) -> Result<()> {
        match self
            .json("pin/rm", self.post("pin/rm").query(&[("arg", cid)]))
            .await
        {
            Ok(_) => Ok(()),
            Err(Error::IpfsApi { message, .. }) if message.contains("not pinned") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Whether `cid` is pinned recursively.
    pub async fn pin_ls(&self, cid: &str) -> Result<bool> {
        match self
            .json(
                "pin/ls",
                self.post("pin/ls")
                    .query(&[("arg", cid), ("type", "recursive")]),
            )
            .await
        {
            Ok(v) => Ok(v
                .get("Keys")
                .and_then(Value::as_object)
                .is_some_and(|k| !k.is_empty())
                || v.get("Cid").is_some()),
            Err(Error::IpfsApi { message, .. }) if message.contains("not pinned") => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The content of `cid`, streamed.
    pub async fn cat(
        &self,
        cid: &str,
    ) -> Result<Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>> {
        let resp = self
            .send("cat", self.post("cat").query(&[("arg", cid)]))
            .await?;
        Ok(Box::pin(resp.bytes_stream().map(|r| {
            r.map_err(|e| Error::ipfs_unreachable("cat", &e))
        })))
    }

    /// The whole content of `cid` (bounded by the call timeout).
    pub async fn cat_bytes(&self, cid: &str) -> Result<Vec<u8>> {
        let resp = self
            .send(
                "cat",
                self.post("cat")
                    .query(&[("arg", cid)])
                    .timeout(self.timeout),
            )
            .await?;
        let b = resp
            .bytes()
            .await
            .map_err(|e| Error::ipfs_unreachable("cat", &e))?;
        Ok(b.to_vec())
    }

    /// The node's identity.
    pub async fn id(&self) -> Result<PeerInfo> {
        let v = self.json("id", self.post("id")).await?;
        serde_json::from_value(v).map_err(|e| Error::ipfs("id", e.to_string()))
    }

    /// The node's version string.
    pub async fn version(&self) -> Result<String> {
        let v = self.json("version", self.post("version")).await?;
        Ok(v.get("Version")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string())
    }

    /// Connect to a peer by multiaddr.
    pub async fn swarm_connect(&self, addr: &str) -> Result<()> {
        self.json(
            "swarm/connect",
            self.post("swarm/connect").query(&[("arg", addr)]),
        )
        .await?;
        Ok(())
    }

    /// Peer IDs of connected peers.
    pub async fn swarm_peers(&self) -> Result<Vec<String>> {
        let v = self.json("swarm/peers", self.post("swarm/peers")).await?;
        Ok(v.get("Peers")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|p| p.get("Peer").and_then(Value::as_str).map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Publish `data` on `topic`. js-ipfs answers 500 "InsufficientPeers" when nobody subscribes; that is an
    /// error here too (the caller decides whether it matters).
    pub async fn pubsub_pub(&self, topic: &str, data: &[u8]) -> Result<()> {
        let form = Form::new().part("file", octet(Part::bytes(data.to_vec()).file_name("data")));
        let rb = self
            .post("pubsub/pub")
            .query(&[("arg", multibase(topic.as_bytes()))])
            .multipart(form);
        let resp = self.send("pubsub/pub", rb.timeout(self.timeout)).await?;
        let _ = resp.bytes().await;
        Ok(())
    }

    /// Subscribe to `topic`: an NDJSON stream (a `{}` first line is skipped; `data` may be missing).
    pub async fn pubsub_sub(&self, topic: &str) -> Result<Subscription> {
        let rb = self
            .post("pubsub/sub")
            .query(&[("arg", multibase(topic.as_bytes()))]);
        let resp = self.send("pubsub/sub", rb).await?;
        let mut bytes = resp.bytes_stream();
        let stream = async_stream(move |tx| async move {
            let mut buf = Vec::new();
            while let Some(chunk) = bytes.next().await {
                let chunk = match chunk {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = tx.send(Err(Error::ipfs_unreachable("pubsub/sub", &e)));
                        return;
                    }
                };
                buf.extend_from_slice(&chunk);
                while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=nl).collect();
                    if let Some(m) = parse_message(&line)
                        && tx.send(Ok(m)).is_err()
                    {
                        return;
                    }
                }
            }
        });
        Ok(stream)
    }
}

/// One NDJSON line of pubsub/sub → a message; `None` for the empty `{}` keep-alive and non-messages.
pub fn parse_message(line: &[u8]) -> Option<Message> {
    let v: Value = serde_json::from_slice(line).ok()?;
    let from = v.get("from").and_then(Value::as_str)?.to_string();
    let data = v
        .get("data")
        .and_then(Value::as_str)
        .map(demultibase)
        .unwrap_or_default();
    let topics = v
        .get("topicIDs")
        .or_else(|| v.get("topicIds"))
        .or_else(|| v.get("topics"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(|t| String::from_utf8_lossy(&demultibase(t)).into_owned())
                .collect()
        })
        .unwrap_or_default();
    Some(Message {
        from,
        data,
        seqno: v.get("seqno").and_then(Value::as_str).map(str::to_string),
        topics,
    })
}

/// A stream fed by a task through a channel (keeps the NDJSON parser a plain loop).
fn async_stream<F, Fut>(f: F) -> Subscription
where
    F: FnOnce(tokio::sync::mpsc::UnboundedSender<Result<Message>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(f(tx));
    Box::pin(SubStream {
        rx,
        _task: AbortOnDrop(task),
    })
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct SubStream {
    rx: tokio::sync::mpsc::UnboundedReceiver<Result<Message>>,
    _task: AbortOnDrop,
}

impl Stream for SubStream {
    type Item = Result<Message>;
    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multibase_round_trips_and_tolerates_older_encodings() {
        assert_eq!(multibase(b"vigil/segments"), "udmlnaWwvc2VnbWVudHM");
        assert_eq!(demultibase("udmlnaWwvc2VnbWVudHM"), b"vigil/segments");
        assert_eq!(
            demultibase("aGVsbG8="),
            b"hello",
            "plain base64 from older Kubo"
        );
    }

    #[test]
    fn add_answers_from_kubo_and_js_ipfs_both_parse() {
        let kubo: Value =
            serde_json::from_str(r#"{"Name":"a","Hash":"bafkrei1","Size":"1234"}"#).unwrap();
        let js: Value =
            serde_json::from_str(r#"{"Name":"a","Hash":"bafkrei1","Size":1234,"Mode":"0644"}"#)
                .unwrap();
        let want = Added {
            cid: "bafkrei1".into(),
            size: 1234,
        };
        assert_eq!(Kubo::added(&kubo).unwrap(), want);
        assert_eq!(Kubo::added(&js).unwrap(), want);
        assert!(Kubo::added(&serde_json::json!({"Name": "a"})).is_err());
    }

    #[test]
    fn pubsub_lines_parse_with_or_without_data() {
        assert_eq!(parse_message(b"{}\n"), None);
        let m = parse_message(
            br#"{"from":"12D3Koo","data":"uaGk","seqno":"uAQ","topicIDs":["udmlnaWw"]}"#,
        )
        .unwrap();
        assert_eq!(m.data, b"hi");
        assert_eq!(m.topics, ["vigil"]);
        let m = parse_message(br#"{"from":"12D3Koo","topicIDs":[]}"#).unwrap();
        assert!(m.data.is_empty());
    }
}
