//! Scenario 3: the dependencies go away one after the other while a camera records — the IPFS node, the
//! MongoDB index (SecantusDB), the AMQP broker (RabbitMQ), and a mirror node for twice as long — each at a
//! random moment. Capture must never stop (one session for the whole run, no gap in the footage), nothing may
//! be lost (every segment catalogued, then pinned, indexed, announced, mirrored, once), and each backlog must
//! drain after its dependency returns: the figure gives the time.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::bed::Bed;
use crate::support::rabbitmq::Broker;
use crate::support::*;

fn backlog(v: &Vigil) -> Option<serde_json::Value> {
    serde_json::from_slice::<serde_json::Value>(&v.get("/api/pipeline").body)
        .ok()
        .map(|b| b["backlog"].clone())
}

fn backlog_of(v: &Vigil, stage: &str) -> u64 {
    backlog(v).and_then(|b| b[stage].as_u64()).unwrap_or(0)
}

fn drained(v: &Vigil) -> bool {
    backlog(v).is_some_and(|b| ["pin", "index", "publish"].iter().all(|s| b[*s] == 0))
}

/// The value of `vigil_link_up{link="<link>"}` on `v`'s /metrics.
fn link_up(v: &Vigil, link: &str) -> Option<f64> {
    let needle = format!("vigil_link_up{{link=\"{link}\"}} ");
    v.get("/metrics")
        .text()
        .lines()
        .find_map(|l| l.strip_prefix(&needle).and_then(|x| x.trim().parse().ok()))
}

/// CIDs of `cam`'s segments in the catalog under `data`.
fn cids(data: &Path, cam: &str) -> Vec<String> {
    catalog(data)
        .all(cam)
        .unwrap()
        .into_iter()
        .filter_map(|s| s.cid)
        .collect()
}

/// CIDs of `cam`'s segments that the node under `data` announced.
fn published(data: &Path, cam: &str) -> HashSet<String> {
    catalog(data)
        .all_cameras()
        .unwrap()
        .into_iter()
        .filter(|t| t.published && t.segment.camera == cam)
        .filter_map(|t| t.segment.cid)
        .collect()
}

#[test]
fn ipfs_index_broker_and_mirror_outages_never_stop_capture_and_every_backlog_drains() {
    let (outage_s, mirror_s) = if crate::long() { (300, 600) } else { (20, 30) };
    let mut rng = crate::rng::Rng::from_env("dependency-outages");
    let bed = Bed::start(&["ipfs-a", "ipfs-b", "mongo"]);
    let mut broker = Broker::start();
    let cam = Camera::start(1);
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("fleet.key");
    let out = std::process::Command::new(VIGIL)
        .args(["ctl", "keygen"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let topic = format!("vigil-chaos-deps-{}", std::process::id());
    let ipfs =
        |api: &str| format!("[ipfs]\napi = \"{api}\"\ntopic = \"{topic}\"\ntimeout_seconds = 10\n");
    let index = format!(
        "[index]\nmongodb_uri = \"{}\"\ndatabase = \"vigil\"\n",
        bed.mongo
    );
    // The origin records cam1 and takes commands; the mirror follows cam1 through node B.
    let origin_data = dir.path().join("origin");
    let origin_cfg = dir.path().join("origin.toml");
    std::fs::write(
        &origin_cfg,
        config(
            &origin_data,
            &[("cam1", cam.url(1))],
            &format!(
                "{}{index}[control]\namqp_url = \"{}\"\nkey_file = \"{}\"\nheartbeat_seconds = 1\n",
                ipfs(&bed.ipfs_a),
                broker.url(),
                key.display()
            ),
        )
        .replace("node_id = \"test\"", "node_id = \"origin\""),
    )
    .unwrap();
    let mirror_data = dir.path().join("mirror");
    let mirror_cfg = dir.path().join("mirror.toml");
    std::fs::write(
        &mirror_cfg,
        config(
            &mirror_data,
            &[],
            &format!(
                "{}{index}[mirror]\nfetch_timeout_seconds = 2\nheal_seconds = 5\n\n\
                 [[remote_cameras]]\nid = \"cam1\"\nfactory_id = \"factory-a\"\n",
                ipfs(&bed.ipfs_b)
            ),
        )
        .replace("node_id = \"test\"", "node_id = \"mirror\""),
    )
    .unwrap();
    let mut origin = Vigil::start(&origin_cfg);
    let mut mirror = Vigil::start(&mirror_cfg);
    origin.expect_line("control plane connected", Duration::from_secs(30));
    let oc = catalog(&origin_data);
    wait_until(
        "the mirror holds a segment",
        Duration::from_secs(60),
        || mirror_data.join("catalog.sqlite").exists() && !cids(&mirror_data, "cam1").is_empty(),
    );
    let count = || oc.count(Some("cam1")).unwrap();
    let mut lines = Vec::new();

    // 1 and 2: IPFS, then the index. Capture goes on; the stage behind the outage backs up, then drains.
    for (service, stage, what) in [
        ("ipfs-a", "pin", "IPFS node"),
        ("mongo", "index", "MongoDB index"),
    ] {
        std::thread::sleep(Duration::from_millis(rng.between(500, 4_000)));
        let before = count();
        bed.down(&[service]);
        let down = Instant::now();
        wait_until(
            &format!("{what} down: its backlog grows"),
            Duration::from_secs(30),
            || backlog_of(&origin, stage) >= 2,
        );
        std::thread::sleep(Duration::from_secs(outage_s).saturating_sub(down.elapsed()));
        let during = count() - before;
        let peak = backlog_of(&origin, stage);
        // From the restart command: the service's own start-up is part of the outage a user sees.
        let t = Instant::now();
        bed.up(&[service]);
        let started = t.elapsed().as_secs_f64();
        wait_until(
            &format!("{what} back: the backlog drains"),
            Duration::from_secs(120 + outage_s),
            || drained(&origin),
        );
        lines.push(format!(
            "{what} down {outage_s} s: {during} segments recorded meanwhile, backlog peak {peak}, drained {:.1} s after it was started again (its own start-up {started:.1} s)",
            t.elapsed().as_secs_f64()
        ));
    }

    // 3: the broker. The link shows down, capture goes on, the control plane reconnects by itself.
    std::thread::sleep(Duration::from_millis(rng.between(500, 4_000)));
    let before = count();
    broker.stop();
    let down = Instant::now();
    wait_until("the AMQP link shows down", Duration::from_secs(30), || {
        link_up(&origin, "amqp") == Some(0.0)
    });
    std::thread::sleep(Duration::from_secs(outage_s).saturating_sub(down.elapsed()));
    let during = count() - before;
    let t = Instant::now();
    broker.start_again();
    wait_until(
        "the control plane reconnects",
        Duration::from_secs(60),
        || link_up(&origin, "amqp") == Some(1.0),
    );
    lines.push(format!(
        "RabbitMQ down {outage_s} s: {during} segments recorded meanwhile, control plane back {:.1} s after the broker was started again",
        t.elapsed().as_secs_f64()
    ));

    // 4: the mirror. It catches up on what it missed: everything the origin published meanwhile.
    std::thread::sleep(Duration::from_millis(rng.between(500, 4_000)));
    mirror.stop();
    let down = Instant::now();
    std::thread::sleep(Duration::from_secs(mirror_s).saturating_sub(down.elapsed()));
    mirror = Vigil::start(&mirror_cfg);
    let t = Instant::now();
    let want = published(&origin_data, "cam1");
    wait_until(
        "the mirror catches up",
        Duration::from_secs(120 + mirror_s),
        || {
            let have: HashSet<String> = cids(&mirror_data, "cam1").into_iter().collect();
            want.is_subset(&have)
        },
    );
    lines.push(format!(
        "mirror down {mirror_s} s: the {} segments published meanwhile and before held {:.1} s after its return",
        want.len(),
        t.elapsed().as_secs_f64()
    ));

    // Afterwards: the origin drains; the mirror holds every published segment, once.
    wait_until("the origin drained", Duration::from_secs(60), || {
        drained(&origin)
    });
    let published = published(&origin_data, "cam1");
    wait_until(
        "the mirror holds every published segment",
        Duration::from_secs(60),
        || {
            let have: HashSet<String> = cids(&mirror_data, "cam1").into_iter().collect();
            published.is_subset(&have)
        },
    );
    origin.stop();
    mirror.stop();
    let rows = oc.all_cameras().unwrap();
    assert!(
        rows.iter()
            .all(|r| r.segment.cid.is_some() && r.indexed && r.published),
        "every segment pinned, indexed and announced"
    );
    let report = crate::invariants::capture(&origin_data, "cam1");
    report.assert_clean();
    assert_eq!(report.sessions, 1, "capture never stopped: {report:?}");
    assert!(report.gaps_s.is_empty(), "{report:?}");
    let mirrored = cids(&mirror_data, "cam1");
    let distinct: HashSet<&String> = mirrored.iter().collect();
    assert_eq!(
        distinct.len(),
        mirrored.len(),
        "the mirror holds each segment once"
    );
    assert_eq!(catalog(&mirror_data).integrity_check().unwrap(), "ok");
    figure(
        "chaos",
        &format!(
            "dependency outages (seed {}): {}; capture never stopped (1 session, {} segments, no gap), every segment pinned, indexed and announced, the mirror holds all {} once",
            rng.seed(),
            lines.join("; "),
            rows.len(),
            mirrored.len(),
        ),
    );
}
