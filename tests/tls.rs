//! vigil behind the documented nginx (deploy/nginx/vigil.conf), end to end over real TLS: a real nginx
//! (/usr/sbin/nginx) with a self-signed certificate made by openssl, a real `vigil run` recording the test-bed
//! camera with logins on and `[http] accel_redirect`, and curl as the HTTPS client (the test's reqwest has no
//! TLS).
//!
//! The nginx config under test is deploy/nginx/vigil.conf itself: only its placeholders (ports, certificate,
//! upstream, data folder, log and ACME folders) are substituted, and each must be found, so the documented
//! file and the tested one cannot drift apart.
//!
//! Checked: a login over HTTPS sets a `Secure` cookie (directly over plain HTTP: not Secure); the cookie works
//! through nginx for the API and the live playlist; a segment comes through nginx byte for byte as on disk,
//! sent by nginx from its internal location (vigil answered with X-Accel-Redirect, which the client never
//! sees); `/_vigil_data/…` from outside is 404; the plain listener redirects to HTTPS; the audit log holds the
//! client's address as nginx forwarded it (not nginx's own, not one the client made up); anonymous requests
//! get 401; the security headers are on every HTTPS answer.
//!
//! Needs nginx, openssl and curl (`testbed/install.sh nginx`) besides the camera simulator; FAILS without them.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use support::*;

use support::nginx::{NGINX, Nginx};
const ADMIN: (&str, &str) = ("root", "admin-pass-0123");
/// The address curl sends from: nginx sees it as the client, vigil sees nginx (127.0.0.1).
const CLIENT_ADDR: &str = "127.0.0.2";

fn require_tools() {
    let missing: Vec<&str> = [
        (NGINX, Path::new(NGINX).exists()),
        ("openssl", which("openssl")),
        ("curl", which("curl")),
    ]
    .into_iter()
    .filter(|(_, ok)| !ok)
    .map(|(name, _)| name)
    .collect();
    assert!(
        missing.is_empty(),
        "{missing:?} missing: this test needs nginx, openssl and curl; run testbed/install.sh nginx"
    );
}

/// A self-signed certificate for 127.0.0.1: (cert, key).
fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("fullchain.pem"), dir.join("privkey.pem"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=127.0.0.1"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl req -x509 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

/// deploy/nginx/vigil.conf with its placeholders replaced; every placeholder must be there.
fn site_conf(dir: &Path, https: u16, plain: u16, upstream: &str, data: &Path) -> String {
    let (cert, key) = self_signed(dir);
    let mut conf = std::fs::read_to_string(repo().join("deploy/nginx/vigil.conf"))
        .expect("deploy/nginx/vigil.conf");
    let d = dir.display();
    let subs: Vec<(&str, String)> = vec![
        ("listen [::]:80;", String::new()),
        ("listen [::]:443 ssl http2;", String::new()),
        ("listen 80;", format!("listen 127.0.0.1:{plain};")),
        (
            "listen 443 ssl http2;",
            format!("listen 127.0.0.1:{https} ssl http2;"),
        ),
        ("server 127.0.0.1:8000;", format!("server {upstream};")),
        ("/etc/ssl/vigil/fullchain.pem", cert.display().to_string()),
        ("/etc/ssl/vigil/privkey.pem", key.display().to_string()),
        (
            "alias /var/lib/vigil/;",
            format!("alias {}/;", data.display()),
        ),
        ("/var/log/nginx/", format!("{d}/")),
        ("/var/www/acme", format!("{d}/acme")),
    ];
    for (from, to) in subs {
        assert!(
            conf.contains(from),
            "deploy/nginx/vigil.conf no longer contains {from:?}: update tests/tls.rs with it"
        );
        conf = conf.replace(from, &to);
    }
    conf
}

/// One curl answer.
struct Answer {
    status: u16,
    headers: String,
    body: Vec<u8>,
}

/// Short bodies as text, video as its length (a failed assertion must stay readable).
impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let body = match std::str::from_utf8(&self.body) {
            Ok(t) if t.len() <= 2000 => t.to_string(),
            _ => format!("<{} bytes>", self.body.len()),
        };
        write!(f, "{}\n{}{body}", self.status, self.headers)
    }
}

impl Answer {
    fn all(&self, name: &str) -> Vec<String> {
        self.headers
            .lines()
            .filter_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
            .collect()
    }
    fn header(&self, name: &str) -> Option<String> {
        self.all(name).into_iter().next()
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.headers, self.text()))
    }
}

/// `curl -sk` from [`CLIENT_ADDR`]: headers and body to files in `dir`, no redirect followed.
fn curl(dir: &Path, url: &str, args: &[&str]) -> Answer {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let (h, b) = (dir.join(format!("h{n}")), dir.join(format!("b{n}")));
    let out = Command::new("curl")
        .args(["-sS", "-k", "--max-time", "20", "--interface", CLIENT_ADDR])
        .arg("-D")
        .arg(&h)
        .arg("-o")
        .arg(&b)
        .args(args)
        .arg(url)
        .output()
        .expect("run curl");
    assert!(
        out.status.success(),
        "curl {args:?} {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let headers = std::fs::read_to_string(&h).unwrap();
    let status = headers
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {headers:?}"));
    let body = std::fs::read(&b).unwrap_or_default();
    let _ = (std::fs::remove_file(h), std::fs::remove_file(b));
    Answer {
        status,
        headers,
        body,
    }
}

fn add_user(config: &Path, name: &str, pw: &str, role: &[&str]) {
    let mut args = vec!["user", "add", name, "--password-stdin"];
    args.extend_from_slice(role);
    vigil_cli(config, &args, &format!("{pw}\n"));
}

#[test]
fn behind_the_documented_nginx_logins_are_tls_only_and_nginx_sends_the_video() {
    require_tools();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let data = dir.join("data");
    let cam = Camera::start(1);
    let config = dir.join("vigil.toml");
    std::fs::write(
        &config,
        config_with_auth(&data, &[("cam1", cam.url(1))], "")
            .replace("[http]\n", "[http]\naccel_redirect = \"/_vigil_data/\"\n"),
    )
    .unwrap();
    add_user(&config, ADMIN.0, ADMIN.1, &["--role", "admin"]);
    let mut vigil = Vigil::start(&config);

    let (https, plain) = (free_port(), free_port());
    let ngx_dir = dir.join("nginx");
    std::fs::create_dir_all(&ngx_dir).unwrap();
    let site = site_conf(&ngx_dir, https, plain, &vigil.addr, &data);
    let nginx = Nginx::start(&ngx_dir, &site, &[https, plain]);
    let base = format!("https://127.0.0.1:{https}");
    let url = |p: &str| format!("{base}{p}");

    // Anonymous through nginx: 401 everywhere but the public paths; the security headers are there too.
    for p in [
        "/api/me",
        "/api/cameras",
        "/cameras/cam1/live.m3u8",
        "/api/audit",
    ] {
        let a = curl(dir, &url(p), &[]);
        assert_eq!(a.status, 401, "anonymous {p} through nginx: {a:?}");
        assert_eq!(
            a.header("strict-transport-security").as_deref(),
            Some("max-age=63072000"),
            "{p}: {}",
            a.headers
        );
        assert_eq!(
            a.header("x-content-type-options").as_deref(),
            Some("nosniff")
        );
    }
    assert_eq!(curl(dir, &url("/healthz"), &[]).status, 200);

    // The plain listener (port 80 in production) only redirects.
    let r = curl(dir, &format!("http://127.0.0.1:{plain}/api/me?x=1"), &[]);
    assert!(matches!(r.status, 301 | 308), "{r:?}");
    assert_eq!(
        r.header("location").as_deref(),
        Some("https://127.0.0.1/api/me?x=1"),
        "{}",
        r.headers
    );
    assert!(r.header("set-cookie").is_none());

    // Login over HTTPS, as a browser sends it (Origin of the page, with the port), with a made-up
    // X-Forwarded-For in front: the cookie is Secure, and the audit log will hold CLIENT_ADDR.
    let body = format!(
        "{{\"username\":\"{}\",\"password\":\"{}\"}}",
        ADMIN.0, ADMIN.1
    );
    let login = curl(
        dir,
        &url("/api/login"),
        &[
            "-H",
            "Content-Type: application/json",
            "-H",
            &format!("Origin: {base}"),
            "-H",
            "X-Forwarded-For: 203.0.113.9",
            "--data-binary",
            &body,
        ],
    );
    assert_eq!(login.status, 200, "login through nginx: {login:?}");
    let set = login.header("set-cookie").expect("a session cookie");
    for attr in [
        "vigil_session=",
        "HttpOnly",
        "SameSite=Strict",
        "Path=/",
        "Secure",
    ] {
        assert!(
            set.contains(attr),
            "cookie over https without {attr}: {set}"
        );
    }
    let cookie = set.split(';').next().unwrap().to_string();
    let csrf = login.json()["csrf"].as_str().unwrap().to_string();
    let with_cookie = ["-H".to_string(), format!("Cookie: {cookie}")];
    let with_cookie: Vec<&str> = with_cookie.iter().map(String::as_str).collect();

    // The same login directly over plain HTTP: not Secure (vigil sees no TLS and no trusted https proxy).
    let direct = http(
        &vigil.addr,
        "POST",
        "/api/login",
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    );
    assert_eq!(direct.status, 200, "{}", direct.text());
    let direct_set = direct.header("set-cookie").unwrap();
    assert!(
        !direct_set.contains("Secure") && direct_set.contains("HttpOnly"),
        "plain http: {direct_set}"
    );

    // The cookie works through nginx.
    let me = curl(dir, &url("/api/me"), &with_cookie);
    assert_eq!(me.status, 200, "{me:?}");
    assert_eq!(me.json()["user"], ADMIN.0);
    assert_eq!(me.json()["csrf"].as_str(), Some(csrf.as_str()));
    let cams = curl(dir, &url("/api/cameras"), &with_cookie);
    assert_eq!(cams.status, 200, "{cams:?}");
    assert!(cams.text().contains("\"cam1\""), "{}", cams.text());

    let catalog = catalog(&data);
    wait_until("two segments catalogued", Duration::from_secs(40), || {
        catalog.count(Some("cam1")).unwrap() >= 2
    });
    let live = curl(dir, &url("/cameras/cam1/live.m3u8"), &with_cookie);
    assert_eq!(live.status, 200, "{live:?}");
    assert!(live.text().starts_with("#EXTM3U"), "{}", live.text());
    assert_eq!(
        live.header("content-type").as_deref(),
        Some("application/vnd.apple.mpegurl")
    );
    let first = live
        .text()
        .lines()
        .find(|l| !l.starts_with('#') && l.ends_with(".ts"))
        .unwrap_or_else(|| panic!("no segment in {}", live.text()))
        .to_string();
    let id: i64 = first
        .trim_start_matches("segments/")
        .trim_end_matches(".ts")
        .parse()
        .unwrap_or_else(|_| panic!("segment URI {first:?}"));
    let row = catalog.segment("cam1", id).unwrap().expect("catalog row");

    // A segment through nginx: the file's bytes, with no trace of the redirect.
    let seg_path = format!("/cameras/cam1/{first}");
    let on_disk = std::fs::read(data.join(&row.path)).unwrap();
    let seg = curl(dir, &url(&seg_path), &with_cookie);
    assert_eq!(seg.status, 200, "{}", seg.headers);
    assert!(!on_disk.is_empty());
    assert!(
        seg.body == on_disk,
        "segment {id} through nginx: {} bytes, on disk {} bytes ({})",
        seg.body.len(),
        on_disk.len(),
        seg.headers
    );
    assert!(
        seg.header("x-accel-redirect").is_none(),
        "leaked: {}",
        seg.headers
    );
    assert_eq!(seg.header("content-type").as_deref(), Some("video/mp2t"));
    // vigil's caching rule comes along with the redirect.
    assert_eq!(
        seg.header("cache-control").as_deref(),
        Some("private, max-age=86400, immutable"),
        "{seg:?}"
    );
    // A byte range (players and download tools ask for them) is answered by nginx from the file too.
    let part = curl(
        dir,
        &url(&seg_path),
        &[&with_cookie[..], &["-r", "188-375"]].concat(),
    );
    assert_eq!(part.status, 206, "{part:?}");
    assert_eq!(part.body, on_disk[188..376]);
    // …and it was nginx that sent them: asked directly from a trusted address, vigil sends no bytes, only
    // the redirect into nginx's internal location.
    let accel = http(
        &vigil.addr,
        "GET",
        &seg_path,
        &[("Cookie", cookie.as_str())],
        b"",
    );
    assert_eq!(accel.status, 200, "{}", accel.headers);
    assert!(accel.body.is_empty(), "{} bytes", accel.body.len());
    assert_eq!(
        accel.header("x-accel-redirect"),
        Some(format!("/_vigil_data/{}", row.path))
    );
    // Anonymous, the segment is refused before any redirect.
    let anon = curl(dir, &url(&seg_path), &[]);
    assert_eq!(anon.status, 401, "{anon:?}");
    assert!(anon.body.len() < 1000 && anon.header("x-accel-redirect").is_none());

    // The internal location is not reachable from outside, logged in or not.
    let internal = url(&format!("/_vigil_data/{}", row.path));
    for args in [&with_cookie[..], &[]] {
        let a = curl(dir, &internal, args);
        assert_eq!(a.status, 404, "{internal}: {a:?}");
        assert!(a.body.len() < 1000, "video leaked from {internal}");
    }

    // The audit log: the https login from CLIENT_ADDR as nginx forwarded it (not nginx's 127.0.0.1, not the
    // client's made-up 203.0.113.9), the direct one from 127.0.0.1.
    let mut audit = serde_json::Value::Null;
    wait_until(
        "both logins in the audit log",
        Duration::from_secs(10),
        || {
            let a = curl(dir, &url("/api/audit"), &with_cookie);
            assert_eq!(a.status, 200, "{a:?}");
            audit = a.json();
            audit
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["event"] == "login")
                .count()
                >= 2
        },
    );
    let addrs: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "login" && e["user"] == ADMIN.0)
        .filter_map(|e| e["addr"].as_str())
        .collect();
    assert!(addrs.contains(&CLIENT_ADDR), "audit: {audit:#}");
    assert!(addrs.contains(&"127.0.0.1"), "audit: {audit:#}");
    assert!(
        !audit.to_string().contains("203.0.113.9"),
        "a client-made X-Forwarded-For was believed: {audit:#}"
    );

    let log = nginx.error_log();
    assert!(
        !log.contains("[emerg]") && !log.contains("[crit]"),
        "nginx: {log}"
    );
    drop(nginx);
    vigil.stop();
}
