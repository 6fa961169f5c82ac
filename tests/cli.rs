//! The `vigil` binary end to end: `check-config` rejects broken configs naming the field, `tree` prints the
//! declared tree, `run` serves `/healthz`, stops in reverse order on SIGTERM and exits 0, and exits non-zero
//! when its supervision tree gives up.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const VIGIL: &str = env!("CARGO_BIN_EXE_vigil");

fn write_config(dir: &Path, body: &str) -> std::path::PathBuf {
    let path = dir.join("vigil.toml");
    std::fs::write(&path, body).unwrap();
    path
}

const BASE: &str = r#"
node_id = "edge-test"
data_dir = "data"

[http]
listen = "127.0.0.1:0"

[[cameras]]
id = "cam1"
factory_id = "factory-a"
url = "rtsp://127.0.0.1:8554/cam1"
"#;

fn check_config(body: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), body);
    let out = Command::new(VIGIL)
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_accepts_a_good_config() {
    let (code, out, _) = check_config(BASE);
    assert_eq!(code, 0);
    assert!(out.contains("OK — node \"edge-test\""), "{out}");
    assert!(
        out.contains("cam1 (factory factory-a): rtsp://127.0.0.1:8554/cam1, 2 s segments"),
        "{out}"
    );
}

#[test]
fn check_config_rejects_broken_configs_naming_the_field() {
    let cases: [(String, &str); 5] = [
        (
            BASE.replace(
                "factory_id = \"factory-a\"",
                "factory_id = \"factory-a\"\ncolour = \"red\"",
            ),
            "unknown field `colour`",
        ),
        (
            BASE.replace("rtsp://127.0.0.1:8554/cam1", "rtsp//127.0.0.1/cam1"),
            "cameras[0].url: \"rtsp//127.0.0.1/cam1\" is not a URL",
        ),
        (
            format!(
                "{BASE}\n[[cameras]]\nid = \"cam1\"\nfactory_id = \"f\"\nurl = \"rtsp://h/x\"\n"
            ),
            "cameras[1].id: duplicate camera id \"cam1\"",
        ),
        (
            BASE.replace(
                "factory_id = \"factory-a\"",
                "factory_id = \"factory-a\"\nsegment_seconds = 0",
            ),
            "cameras[0].segment_seconds: must be between 1 and 60, got 0",
        ),
        (
            BASE.replace("127.0.0.1:0", "127.0.0.1"),
            "http.listen: \"127.0.0.1\" is not a host:port",
        ),
    ];
    for (body, expected) in cases {
        let (code, out, err) = check_config(&body);
        assert_eq!(code, 2, "must fail for {expected}; stdout: {out}");
        assert!(
            err.contains(expected),
            "stderr should contain {expected:?}:\n{err}"
        );
    }
}

#[test]
fn tree_prints_the_declared_supervision_tree() {
    let out = Command::new(VIGIL).arg("tree").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for expected in [
        "root  [supervisor, one_for_one",
        "├── services",
        "│   └── web  [worker, permanent]",
        "└── cameras",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}

/// A running `vigil run` whose stderr lines arrive on a channel.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Running {
    fn start(config: &Path) -> Running {
        let mut child = Command::new(VIGIL)
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a log line containing `needle`; returns it.
    fn expect_line(&mut self, needle: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => break,
            }
        }
        panic!(
            "no log line with {needle:?} within {within:?}; got:\n{}",
            self.seen.join("\n")
        );
    }

    fn wait_exit(&mut self, within: Duration) -> i32 {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
                    self.seen.push(line);
                }
                return status.code().unwrap_or(-1);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "vigil did not exit within {within:?}; log:\n{}",
                    self.seen.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn http_get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn run_serves_health_and_stops_in_reverse_order_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), BASE);
    let mut vigil = Running::start(&config);
    let line = vigil.expect_line("HTTP listening on http://", Duration::from_secs(10));
    let addr = line
        .split("http://")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let response = http_get(&addr, "/healthz");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"node_id\":\"edge-test\""), "{response}");
    assert!(response.contains("\"status\":\"ok\""), "{response}");

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(vigil.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(
        vigil.wait_exit(Duration::from_secs(15)),
        0,
        "log:\n{}",
        vigil.seen.join("\n")
    );
    let log = vigil.seen.join("\n");
    let pos = |needle: &str| {
        log.find(needle)
            .unwrap_or_else(|| panic!("no {needle:?} in log:\n{log}"))
    };
    // Reverse start order: cameras (started last) first, then web inside services, then services.
    let cameras = pos("child stopped supervisor=\"root\" child=cameras");
    let web = pos("child stopped supervisor=\"root/services\" child=web");
    let services = pos("child stopped supervisor=\"root\" child=services");
    assert!(cameras < web && web < services, "stop order wrong:\n{log}");
    assert!(log.contains("vigil stopped cleanly"), "{log}");
    assert!(
        TcpStream::connect(&addr).is_err(),
        "HTTP port still open after exit"
    );
}

#[test]
fn run_exits_non_zero_when_the_tree_gives_up() {
    // Occupy a port so the web worker can never start; tight limits make the tree give up quickly.
    let blocker = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = blocker.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let body = BASE.replace("127.0.0.1:0", &format!("127.0.0.1:{port}"))
        + "\n[supervision]\nmax_restarts = 2\nwithin_seconds = 60\nbackoff_initial_ms = 20\nbackoff_max_seconds = 1\n";
    // [supervision] must come before [[cameras]] to stay a top-level table: rebuild the file in order.
    let (head, cams) = body.split_at(body.find("[[cameras]]").unwrap());
    let (cams, sup) = cams.split_at(cams.find("[supervision]").unwrap());
    let config = write_config(dir.path(), &format!("{head}{sup}\n{cams}"));
    let mut vigil = Running::start(&config);
    vigil.expect_line("cannot listen for HTTP", Duration::from_secs(10));
    let code = vigil.wait_exit(Duration::from_secs(30));
    let log = vigil.seen.join("\n");
    assert_eq!(code, 1, "log:\n{log}");
    assert!(log.contains("restart intensity exceeded"), "{log}");
    assert!(log.contains("supervision tree gave up"), "{log}");
    drop(blocker);
}
