//! The `vigil` binary end to end: `check-config` rejects broken configs naming the field, `tree` prints the
//! declared tree, `run` serves `/healthz`, stops in reverse order on SIGTERM and exits 0, and exits non-zero
//! when its supervision tree gives up.

mod support;

use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::{VIGIL, Vigil as Running};

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

#[test]
fn run_serves_health_and_stops_in_reverse_order_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), BASE);
    let mut vigil = Running::start(&config);
    let addr = vigil.addr.clone();
    let response = vigil.get("/healthz");
    assert_eq!(response.status, 200);
    let body = response.text();
    assert!(body.contains("\"node_id\":\"edge-test\""), "{body}");
    assert!(body.contains("\"status\":\"ok\""), "{body}");
    vigil.signal(nix::sys::signal::Signal::SIGTERM);
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
    let mut vigil = Running::start_raw(&config);
    vigil.expect_line("cannot listen for HTTP", Duration::from_secs(10));
    let code = vigil.wait_exit(Duration::from_secs(30));
    let log = vigil.seen.join("\n");
    assert_eq!(code, 1, "log:\n{log}");
    assert!(log.contains("restart intensity exceeded"), "{log}");
    assert!(log.contains("supervision tree gave up"), "{log}");
    drop(blocker);
}

#[test]
fn run_refuses_to_start_without_a_working_ffmpeg_and_ffprobe() {
    let dir = tempfile::tempdir().unwrap();
    let (head, cams) = BASE.split_at(BASE.find("[[cameras]]").unwrap());
    let config = write_config(
        dir.path(),
        &format!("{head}[capture]\nffmpeg = \"/nonexistent/bin/ffmpeg\"\n\n{cams}"),
    );
    let mut vigil = Running::start_raw(&config);
    let code = vigil.wait_exit(Duration::from_secs(15));
    let log = vigil.seen.join("\n");
    assert_eq!(code, 1, "log:\n{log}");
    assert!(
        log.contains("/nonexistent/bin/ffmpeg cannot be run")
            && log.contains("install ffmpeg or set [capture] ffmpeg"),
        "{log}"
    );
}
