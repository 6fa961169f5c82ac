//! deploy/nginx/replay-lb.conf in front of two replay nodes, on real parts: an origin vigil records the
//! test-bed camera (js-ipfs A, SecantusDB); a mirror (js-ipfs B) and a node that keeps nothing (replay through
//! the index and js-ipfs B) serve cam1 behind a real nginx with that config. Both require logins; one API
//! token, imported on both, opens both. One node is stopped: replay (VOD and its segments) keeps working
//! through the other, the very next request included; then the other way round.
//!
//! Needs nginx (`testbed/install.sh nginx`), the camera simulator, js-ipfs and SecantusDB; FAILS without them.

mod support;

use std::path::Path;
use std::time::Duration;

use support::bed::Bed;
use support::nginx::Nginx;
use support::*;

const TOPIC: &str = "vigil-lb-test";
const TOKEN: &str = "vgl_loadbalancedreplaytokenfortests0123456789";

/// deploy/nginx/replay-lb.conf with its placeholders replaced; every placeholder must be there.
fn site(port: u16, a: &str, b: &str, logs: &Path) -> String {
    let mut conf = std::fs::read_to_string(repo().join("deploy/nginx/replay-lb.conf")).unwrap();
    for (from, to) in [
        ("listen 8088;", format!("listen 127.0.0.1:{port};")),
        ("10.0.0.11:8000", a.to_string()),
        ("10.0.0.12:8000", b.to_string()),
        ("/var/log/nginx/", format!("{}/", logs.display())),
    ] {
        assert!(
            conf.contains(from),
            "deploy/nginx/replay-lb.conf no longer contains {from:?}: update tests/lb.rs with it"
        );
        conf = conf.replace(from, &to);
    }
    conf
}

fn node(
    dir: &Path,
    id: &str,
    ipfs: &str,
    mongo: &str,
    cams: &[(&str, String)],
    remote: &str,
) -> (Vigil, std::path::PathBuf) {
    let data = dir.join(id);
    let top = format!(
        "[ipfs]\napi = \"{ipfs}\"\ntopic = \"{TOPIC}\"\ntimeout_seconds = 10\n\
         [index]\nmongodb_uri = \"{mongo}\"\ndatabase = \"vigil\"\n{remote}"
    );
    let text = config_with_auth(&data, cams, &top)
        .replace("node_id = \"test\"", &format!("node_id = \"{id}\""));
    let config = dir.join(format!("{id}.toml"));
    std::fs::write(&config, text).unwrap();
    if !remote.is_empty() {
        vigil_cli(
            &config,
            &[
                "user",
                "add",
                "viewer",
                "--password-stdin",
                "--role",
                "client",
                "--camera",
                "cam1",
            ],
            "viewer-pass-0123\n",
        );
        vigil_cli(
            &config,
            &["token", "add", "viewer", "--label", "lb", "--token-stdin"],
            &format!("{TOKEN}\n"),
        );
    }
    (Vigil::start(&config), config)
}

fn get(addr: &str, path: &str) -> Response {
    http(
        addr,
        "GET",
        path,
        &[("Authorization", &format!("Bearer {TOKEN}"))],
        b"",
    )
}

/// The node that answers through the balancer (its /healthz names it).
fn serving(lb: &str) -> String {
    let r = http_get(lb, "/healthz");
    assert_eq!(r.status, 200, "{}", r.text());
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    v["node_id"].as_str().unwrap().to_string()
}

/// A VOD of the range and every segment in it, through the balancer; returns the segments' total bytes.
fn replay(lb: &str, q: &str) -> usize {
    let vod = get(lb, &format!("/cameras/cam1/vod.m3u8?{q}"));
    assert_eq!(vod.status, 200, "{}", vod.text());
    let uris = playlist_uris(&vod.text());
    assert!(
        uris.len() >= 3 && uris.iter().all(|u| u.starts_with("ipfs/")),
        "{}",
        vod.text()
    );
    uris.iter()
        .map(|u| {
            let r = get(lb, &format!("/cameras/cam1/{u}"));
            assert_eq!(r.status, 200, "{u}: {}", r.text());
            assert_eq!(r.body[0], 0x47, "{u} is MPEG-TS");
            r.body.len()
        })
        .sum()
}

#[test]
fn replay_keeps_working_through_either_node_when_the_other_stops() {
    let bed = Bed::start(&["ipfs-a", "ipfs-b", "mongo"]);
    let cam = Camera::start(1);
    let dir = tempfile::tempdir().unwrap();
    let (origin, _) = node(
        dir.path(),
        "origin",
        &bed.ipfs_a,
        &bed.mongo,
        &[("cam1", cam.url(1))],
        "",
    );
    let cam1 = "[[remote_cameras]]\nid = \"cam1\"\nfactory_id = \"factory-a\"\n";
    let (mut n1, c1) = node(dir.path(), "replay-1", &bed.ipfs_b, &bed.mongo, &[], cam1);
    let (mut n2, c2) = node(
        dir.path(),
        "replay-2",
        &bed.ipfs_b,
        &bed.mongo,
        &[],
        &format!("{cam1}mirror = false\n"),
    );
    let port = free_port();
    let lb = format!("127.0.0.1:{port}");
    let ngx_dir = dir.path().join("nginx");
    std::fs::create_dir_all(&ngx_dir).unwrap();
    let nginx = Nginx::start(&ngx_dir, &site(port, &n1.addr, &n2.addr, &ngx_dir), &[port]);

    let oc = catalog(&dir.path().join("origin"));
    wait_until(
        "5 segments mirrored on replay-1",
        Duration::from_secs(90),
        || {
            dir.path().join("replay-1/catalog.sqlite").exists()
                && catalog(&dir.path().join("replay-1"))
                    .count(Some("cam1"))
                    .unwrap()
                    >= 5
        },
    );
    let rows = oc.all("cam1").unwrap();
    let t = rfc3339_ms;
    let q = format!(
        "from={}&to={}",
        t(rows[0].start_ms),
        t(rows[3].start_ms + 1)
    );
    // Without the token: refused through the balancer too.
    assert_eq!(
        http_get(&lb, &format!("/cameras/cam1/vod.m3u8?{q}")).status,
        401
    );
    let bytes = replay(&lb, &q);
    let first = serving(&lb);
    // A browser login through the balancer: the login and the requests carrying its cookie reach one node.
    let body =
        serde_json::json!({ "username": "viewer", "password": "viewer-pass-0123" }).to_string();
    let r = http(
        &lb,
        "POST",
        "/api/login",
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let cookie = r
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    for _ in 0..10 {
        let me = http(&lb, "GET", "/api/me", &[("Cookie", &cookie)], b"");
        assert_eq!(
            me.status,
            200,
            "the session is known where the cookie goes: {}",
            me.text()
        );
    }

    // Stop the node that serves: the very next requests go to the other one.
    let (stopped, other) = if first == "replay-1" {
        (&mut n1, "replay-2")
    } else {
        (&mut n2, "replay-1")
    };
    stopped.stop();
    assert_eq!(replay(&lb, &q), bytes, "the same footage through {other}");
    assert_eq!(serving(&lb), other);

    // Back, and the other one stops: still served.
    let restarted = Vigil::start(if first == "replay-1" { &c1 } else { &c2 });
    let restarted_id = first.clone();
    drop(nginx);
    // The restarted node listens on a new port: the balancer's config names both again.
    let (a, b) = if first == "replay-1" {
        (restarted.addr.clone(), n2.addr.clone())
    } else {
        (n1.addr.clone(), restarted.addr.clone())
    };
    let nginx = Nginx::start(&ngx_dir, &site(port, &a, &b, &ngx_dir), &[port]);
    if other == "replay-1" {
        n1.stop()
    } else {
        n2.stop()
    }
    assert_eq!(
        replay(&lb, &q),
        bytes,
        "the same footage through {restarted_id}"
    );
    assert_eq!(serving(&lb), restarted_id);
    figure(
        "storage",
        &format!(
            "nginx in front of two replay nodes (test): VOD of 4 segments ({bytes} bytes) served through either node; a stopped node's next request went to the other"
        ),
    );
    drop((nginx, origin, restarted));
}
