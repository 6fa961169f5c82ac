//! A cheap "is the camera back?" check: an RTSP OPTIONS request (or, for rtsps, a TCP connect), used while a
//! camera's restart waits out its backoff.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// True when the camera at `url` answers within `timeout`.
pub async fn camera_answers(url: &str, timeout: Duration) -> bool {
    let Ok(u) = url::Url::parse(url) else {
        return false;
    };
    let Some(host) = u.host_str().map(str::to_string) else {
        return false;
    };
    let port = u
        .port()
        .unwrap_or(if u.scheme() == "rtsps" { 322 } else { 554 });
    let attempt = async {
        let mut s = TcpStream::connect((host.as_str(), port)).await.ok()?;
        if u.scheme() == "rtsps" {
            return Some(true);
        }
        let mut clean = u.clone();
        let _ = clean.set_username("");
        let _ = clean.set_password(None);
        let req = format!("OPTIONS {clean} RTSP/1.0\r\nCSeq: 1\r\nUser-Agent: vigil-probe\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).await.ok()?;
        Some(buf[..n].starts_with(b"RTSP/1."))
    };
    matches!(tokio::time::timeout(timeout, attempt).await, Ok(Some(true)))
}
