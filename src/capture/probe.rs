//! A cheap "is the camera back?" check, run while a camera's restart waits out its backoff: an RTSP DESCRIBE
//! with the camera's credentials (Basic, or Digest when the camera asks for it), exactly what ffmpeg needs
//! to start. Only a `200` counts as back; `401`/`403` mean the credentials are wrong and `404` that the
//! stream path is wrong: configuration problems that waiting fixes no more than restarting does. For
//! `rtsps` a TCP connect is all that is checked.

use std::time::Duration;

use base64::Engine as _;
use md5::{Digest as _, Md5};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What the camera said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// DESCRIBE answered 200 (or, for rtsps, the port accepts connections).
    Ready,
    /// 401 or 403: the camera rejects our credentials.
    AuthRejected(u16),
    /// 404: no such stream on the camera.
    NotFound,
    /// Some other RTSP status.
    Status(u16),
    /// No connection, no answer in time, or not RTSP.
    NoAnswer(String),
}

impl Outcome {
    pub fn is_ready(&self) -> bool {
        matches!(self, Outcome::Ready)
    }
}

/// Read one RTSP response head (status line and headers; the body is not needed).
async fn read_head(s: &mut TcpStream) -> Option<(u16, Vec<(String, String)>)> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        if buf.len() > 16 * 1024 {
            return None;
        }
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&buf);
    let mut lines = text.split("\r\n");
    let status_line = lines.next()?;
    let mut parts = status_line.split_whitespace();
    if !parts.next()?.starts_with("RTSP/1.") {
        return None;
    }
    let code = parts.next()?.parse().ok()?;
    let headers = lines
        .take_while(|l| !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_ascii_lowercase(), v.trim().to_string()))
        })
        .collect();
    Some((code, headers))
}

/// The value of `key="value"` (or `key=value`) in a WWW-Authenticate challenge.
fn param<'a>(challenge: &'a str, key: &str) -> Option<&'a str> {
    let mut rest = challenge;
    while let Some(i) = rest.find(key) {
        let before_ok = i == 0 || matches!(rest.as_bytes()[i - 1], b' ' | b',');
        let after = &rest[i + key.len()..];
        if before_ok && let Some(v) = after.trim_start().strip_prefix('=') {
            let v = v.trim_start();
            return Some(match v.strip_prefix('"') {
                Some(q) => &q[..q.find('"').unwrap_or(q.len())],
                None => v.split([',', ' ']).next().unwrap_or(""),
            });
        }
        rest = &rest[i + key.len()..];
    }
    None
}

fn hex_md5(s: &str) -> String {
    Md5::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The Authorization header answering `challenge` (RFC 2617 Digest, MD5, with or without qop=auth).
fn digest_header(challenge: &str, user: &str, password: &str, method: &str, uri: &str) -> String {
    let realm = param(challenge, "realm").unwrap_or("");
    let nonce = param(challenge, "nonce").unwrap_or("");
    let ha1 = hex_md5(&format!("{user}:{realm}:{password}"));
    let ha2 = hex_md5(&format!("{method}:{uri}"));
    let qop_auth =
        param(challenge, "qop").is_some_and(|q| q.split(',').any(|v| v.trim() == "auth"));
    if qop_auth {
        let cnonce = format!(
            "{:016x}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        );
        let response = hex_md5(&format!("{ha1}:{nonce}:00000001:{cnonce}:auth:{ha2}"));
        format!(
            "Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", \
             response=\"{response}\", qop=auth, nc=00000001, cnonce=\"{cnonce}\""
        )
    } else {
        let response = hex_md5(&format!("{ha1}:{nonce}:{ha2}"));
        format!(
            "Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{response}\""
        )
    }
}

fn classify(code: u16) -> Outcome {
    match code {
        200 => Outcome::Ready,
        401 | 403 => Outcome::AuthRejected(code),
        404 => Outcome::NotFound,
        other => Outcome::Status(other),
    }
}

/// Ask the camera at `url` (credentials taken from it) for its stream description, within `timeout`.
pub async fn check(url: &str, timeout: Duration) -> Outcome {
    let Ok(u) = url::Url::parse(url) else {
        return Outcome::NoAnswer("not a URL".into());
    };
    let Some(host) = u.host_str().map(str::to_string) else {
        return Outcome::NoAnswer("no host".into());
    };
    let port = u
        .port()
        .unwrap_or(if u.scheme() == "rtsps" { 322 } else { 554 });
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let user = decode(u.username());
    let password = u.password().map(decode);
    let mut clean = u.clone();
    let _ = clean.set_username("");
    let _ = clean.set_password(None);
    let uri = clean.to_string();
    let attempt = async {
        let mut s = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        if u.scheme() == "rtsps" {
            return Ok(Outcome::Ready);
        }
        let basic = password.as_ref().map(|p| {
            format!(
                "Authorization: Basic {}\r\n",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{p}"))
            )
        });
        let request = |cseq: u32, auth: &str| {
            format!(
                "DESCRIBE {uri} RTSP/1.0\r\nCSeq: {cseq}\r\nAccept: application/sdp\r\nUser-Agent: vigil-probe\r\n{auth}\r\n"
            )
        };
        // No credentials until the camera asks for them (as ffmpeg does): a password never travels in the
        // clear to a camera that offers Digest.
        s.write_all(request(1, "").as_bytes())
            .await
            .map_err(|e| format!("cannot send: {e}"))?;
        let (code, headers) = read_head(&mut s).await.ok_or("no RTSP answer")?;
        if code != 401 {
            return Ok(classify(code));
        }
        let Some(p) = &password else {
            return Ok(classify(code));
        };
        let challenges: Vec<&String> = headers
            .iter()
            .filter(|(k, _)| k == "www-authenticate")
            .map(|(_, v)| v)
            .collect();
        // Digest when offered, Basic otherwise; one answer, on the same connection.
        let auth = match challenges
            .iter()
            .find(|v| v.to_ascii_lowercase().starts_with("digest"))
        {
            Some(challenge) => format!(
                "Authorization: {}\r\n",
                digest_header(challenge, &user, p, "DESCRIBE", &uri)
            ),
            None if challenges
                .iter()
                .any(|v| v.to_ascii_lowercase().starts_with("basic")) =>
            {
                basic.clone().unwrap_or_default()
            }
            None => return Ok(classify(code)),
        };
        s.write_all(request(2, &auth).as_bytes())
            .await
            .map_err(|e| format!("cannot send: {e}"))?;
        let (code, _) = read_head(&mut s).await.ok_or("no RTSP answer")?;
        Ok(classify(code))
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => Outcome::NoAnswer(e),
        Err(_) => Outcome::NoAnswer(format!("no answer within {timeout:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use tokio::net::TcpListener;

    /// A one-connection fake camera that answers each request with the next canned response and records
    /// the requests.
    async fn fake(answers: Vec<&'static str>) -> (u16, tokio::task::JoinHandle<Vec<String>>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut seen = Vec::new();
            for a in answers {
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.unwrap();
                seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
                s.write_all(a.as_bytes()).await.unwrap();
            }
            seen
        });
        (port, task)
    }

    #[tokio::test]
    async fn only_200_counts_as_back_and_digest_challenges_are_answered() {
        let (port, t) = fake(vec![
            "RTSP/1.0 401 Unauthorized\r\nCSeq: 1\r\nWWW-Authenticate: Basic realm=\"x\"\r\n\r\n",
            "RTSP/1.0 200 OK\r\nCSeq: 2\r\n\r\n",
        ])
        .await;
        let url = format!("rtsp://admin:p%40ss@127.0.0.1:{port}/cam1");
        assert_eq!(check(&url, Duration::from_secs(2)).await, Outcome::Ready);
        let seen = t.await.unwrap();
        assert!(seen[0].starts_with(&format!(
            "DESCRIBE rtsp://127.0.0.1:{port}/cam1 RTSP/1.0\r\n"
        )));
        assert!(
            !seen[0].contains("Authorization"),
            "no credentials before the camera asks: {}",
            seen[0]
        );
        // admin:p@ss, percent-decoded, in Basic, once asked for.
        assert!(
            seen[1].contains("Authorization: Basic YWRtaW46cEBzcw==\r\n"),
            "{}",
            seen[1]
        );

        let (port, t) = fake(vec![
            "RTSP/1.0 401 Unauthorized\r\nCSeq: 1\r\nWWW-Authenticate: Digest realm=\"cam\", nonce=\"abc\"\r\n\r\n",
            "RTSP/1.0 200 OK\r\nCSeq: 2\r\n\r\n",
        ])
        .await;
        let url = format!("rtsp://admin:secret@127.0.0.1:{port}/s");
        assert_eq!(check(&url, Duration::from_secs(2)).await, Outcome::Ready);
        let seen = t.await.unwrap();
        let uri = format!("rtsp://127.0.0.1:{port}/s");
        let ha1 = hex_md5("admin:cam:secret");
        let ha2 = hex_md5(&format!("DESCRIBE:{uri}"));
        let expected = hex_md5(&format!("{ha1}:abc:{ha2}"));
        assert!(
            seen[1].contains(&format!("response=\"{expected}\"")),
            "{}",
            seen[1]
        );
        assert!(!seen[1].contains("Basic"), "Digest preferred: {}", seen[1]);

        // Wrong credentials: the answer to the challenge is 401 again.
        let (port, _t) = fake(vec![
            "RTSP/1.0 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"x\"\r\n\r\n",
            "RTSP/1.0 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"x\"\r\n\r\n",
        ])
        .await;
        let url = format!("rtsp://u:wrong@127.0.0.1:{port}/s");
        assert_eq!(
            check(&url, Duration::from_secs(2)).await,
            Outcome::AuthRejected(401)
        );
        for (answer, outcome) in [
            ("RTSP/1.0 403 Forbidden\r\n\r\n", Outcome::AuthRejected(403)),
            ("RTSP/1.0 404 Not Found\r\n\r\n", Outcome::NotFound),
            (
                "RTSP/1.0 503 Service Unavailable\r\n\r\n",
                Outcome::Status(503),
            ),
        ] {
            let (port, _t) = fake(vec![answer]).await;
            let url = format!("rtsp://u:wrong@127.0.0.1:{port}/s");
            assert_eq!(
                check(&url, Duration::from_secs(2)).await,
                outcome,
                "{answer}"
            );
        }
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        assert!(matches!(
            check(
                &format!("rtsp://127.0.0.1:{closed}/x"),
                Duration::from_secs(2)
            )
            .await,
            Outcome::NoAnswer(_)
        ));
    }

    #[test]
    fn challenge_parameters_parse() {
        let c = "Digest realm=\"IP Camera(C1234)\", nonce=\"7f3a\", stale=\"FALSE\", qop=\"auth\"";
        assert_eq!(param(c, "realm"), Some("IP Camera(C1234)"));
        assert_eq!(param(c, "nonce"), Some("7f3a"));
        assert_eq!(param(c, "qop"), Some("auth"));
        assert_eq!(param("Digest nonce=abc, realm=r", "nonce"), Some("abc"));
        assert_eq!(param(c, "opaque"), None);
        let h = digest_header(c, "u", "p", "DESCRIBE", "rtsp://h/s");
        assert!(h.contains("qop=auth, nc=00000001, cnonce=\""), "{h}");
    }
}
