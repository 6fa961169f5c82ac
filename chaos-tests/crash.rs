//! Scenario 4: vigil itself SIGKILLed at random points — while ffmpeg writes, while the pipeline adds, pins,
//! indexes and announces, while retention deletes (a small byte budget keeps it deleting every second) — and
//! started again each time. Afterwards every finished segment must be catalogued once (the capture
//! invariants), indexed once in MongoDB under the catalogue's CID, announced on the topic (a second IPFS node
//! listens), the catalog must pass `PRAGMA integrity_check`, and no ffmpeg may outlive its vigil.
//!
//! An announcement is published before its "published" mark is stored, so a kill between the two makes the
//! restarted vigil announce that segment again: at-least-once on the wire, which mirrors absorb (a repeated
//! announcement is a `duplicate`, fetched and catalogued once). The figure counts such repeats; the test
//! bounds them by the number of kills.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use mongodb::bson::{Document, doc};
use nix::sys::signal::Signal;

use crate::support::bed::Bed;
use crate::support::*;

/// What a second IPFS node heard on the topic: announcements, and whether the readiness probe came through.
#[derive(Default)]
struct Heard {
    probe: bool,
    announcements: Vec<vigil::pipeline::announce::Announcement>,
    /// A malformed announcement or the subscription's end, which the test reports.
    trouble: Option<String>,
}

/// Listen on `topic` through the IPFS node at `api`, in a thread of its own.
fn listen(api: &str, topic: &str) -> Arc<Mutex<Heard>> {
    let heard = Arc::new(Mutex::new(Heard::default()));
    let (api, topic, h) = (api.to_string(), topic.to_string(), heard.clone());
    std::thread::spawn(move || {
        rt().block_on(async move {
            let mut sub = match kubo(&api).pubsub_sub(&topic).await {
                Ok(sub) => sub,
                Err(e) => {
                    h.lock().unwrap().trouble = Some(format!("cannot subscribe: {e}"));
                    return;
                }
            };
            loop {
                let m = match futures_util::StreamExt::next(&mut sub).await {
                    Some(Ok(m)) => m,
                    other => {
                        h.lock().unwrap().trouble =
                            Some(format!("the subscription ended: {other:?}"));
                        return;
                    }
                };
                let mut h = h.lock().unwrap();
                if m.data == b"probe" {
                    h.probe = true;
                    continue;
                }
                match vigil::pipeline::announce::Announcement::parse(&m.data) {
                    Ok(a) => h.announcements.push(a),
                    Err(e) => h.trouble = Some(format!("a malformed announcement: {e}")),
                }
            }
        })
    });
    heard
}

fn mongo_docs(uri: &str) -> Vec<Document> {
    rt().block_on(async {
        let client = mongodb::Client::with_uri_str(uri).await.unwrap();
        let c = client.database("vigil").collection::<Document>("segments");
        c.find(doc! {}).await.unwrap().try_collect().await.unwrap()
    })
}

fn backlog_empty(v: &Vigil) -> bool {
    let Ok(b) = serde_json::from_slice::<serde_json::Value>(&v.get("/api/pipeline").body) else {
        return false;
    };
    ["pin", "index", "publish"]
        .iter()
        .all(|s| b["backlog"][*s] == 0)
}

/// ffmpeg processes writing under `data`, whoever their parent.
fn ffmpegs(data: &Path) -> Vec<i32> {
    ffmpeg_under(data)
        .into_iter()
        .filter(|(_, _, s)| *s != 'Z')
        .map(|(p, _, _)| p)
        .collect()
}

#[test]
fn sigkill_vigil_at_random_points_leaves_every_segment_catalogued_indexed_and_announced_once() {
    let kills = if crate::long() { 50 } else { 8 };
    let mut rng = crate::rng::Rng::from_env("sigkill-vigil");
    let bed = Bed::start(&["ipfs-a", "ipfs-b", "mongo"]);
    let topic = format!("vigil-chaos-{}", std::process::id());
    let heard = listen(&bed.ipfs_b, &topic);
    // The subscription has reached the publishing node once a probe published there comes through.
    wait_until(
        "node B's subscription reaches node A",
        Duration::from_secs(30),
        || {
            let _ = rt().block_on(kubo(&bed.ipfs_a).pubsub_pub(&topic, b"probe"));
            std::thread::sleep(Duration::from_millis(300));
            heard.lock().unwrap().probe
        },
    );
    let cam = Camera::start(1);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let path = dir.path().join("vigil.toml");
    let top = format!(
        "[ipfs]\napi = \"{}\"\ntopic = \"{topic}\"\ntimeout_seconds = 10\n\
         [index]\nmongodb_uri = \"{}\"\ndatabase = \"vigil\"\n\
         [retention]\nmax_bytes = \"2MB\"\ncheck_seconds = 1\n",
        bed.ipfs_a, bed.mongo
    );
    std::fs::write(&path, config(&data, &[("cam1", cam.url(1))], &top)).unwrap();
    let mut vigil = Vigil::start(&path);
    let c = catalog(&data);
    wait_until("the first segment", Duration::from_secs(30), || {
        c.count(Some("cam1")).unwrap() >= 1
    });
    let mut back_s = Vec::new();
    for i in 0..kills {
        // Anywhere: within ffmpeg's first segment, mid-pipeline, mid-retention pass.
        std::thread::sleep(Duration::from_millis(rng.between(200, 4_500)));
        vigil.signal(Signal::SIGKILL);
        vigil.wait_exit(Duration::from_secs(5));
        // Its ffmpeg dies with it (PR_SET_PDEATHSIG).
        wait_until(
            &format!("kill {i}: no ffmpeg outlives vigil"),
            Duration::from_secs(5),
            || ffmpegs(&data).is_empty(),
        );
        let t = Instant::now();
        let before = sessions(&data, "cam1");
        vigil = Vigil::start(&path);
        // Recording again: a segment of a session begun after the kill is catalogued.
        wait_until(
            &format!("kill {i}: recording again"),
            Duration::from_secs(30),
            || {
                c.latest("cam1")
                    .unwrap()
                    .is_some_and(|s| !before.contains(&s.session))
            },
        );
        back_s.push(t.elapsed().as_secs_f64());
    }
    wait_until("the pipeline drained", Duration::from_secs(60), || {
        backlog_empty(&vigil)
    });
    vigil.stop();
    assert!(ffmpegs(&data).is_empty(), "an ffmpeg outlived vigil");

    // Catalogued once: every byte ffmpeg wrote, no overwrite, no duplicate, joins marked.
    let report = crate::invariants::capture(&data, "cam1");
    report.assert_clean();
    assert_eq!(c.integrity_check().unwrap(), "ok");
    // Indexed once, under the catalogue's CID.
    let rows = c.all("cam1").unwrap();
    let docs = mongo_docs(&bed.mongo);
    let by_id: HashMap<String, &Document> = docs
        .iter()
        .map(|d| (d.get_str("_id").unwrap().to_string(), d))
        .collect();
    // One document per segment and per CID (the _id is unique by construction; these are not).
    let keys: HashSet<(String, String, i64)> = docs
        .iter()
        .map(|d| {
            (
                d.get_str("device_id").unwrap().to_string(),
                d.get_str("session").unwrap().to_string(),
                d.get_i64("seq").unwrap(),
            )
        })
        .collect();
    let doc_cids: HashSet<&str> = docs.iter().filter_map(|d| d.get_str("cid").ok()).collect();
    assert_eq!(
        keys.len(),
        docs.len(),
        "two index documents for one segment"
    );
    assert_eq!(
        doc_cids.len(),
        docs.len(),
        "two index documents for one CID"
    );
    for r in &rows {
        let id = format!("cam1/{}/{}", r.session, r.seq);
        let d = by_id
            .get(&id)
            .unwrap_or_else(|| panic!("{id} ({}) was never indexed", r.path));
        assert_eq!(d.get_str("cid").ok(), r.cid.as_deref(), "{id}: index CID");
    }
    // Announced: every indexed segment (also those retention deleted since), each at least once; repeats
    // only where a kill fell between publishing and recording it.
    let held: HashSet<&str> = docs.iter().filter_map(|d| d.get_str("cid").ok()).collect();
    let mut times: HashMap<String, usize> = HashMap::new();
    wait_until(
        "every indexed segment's announcement heard",
        Duration::from_secs(20),
        || {
            times.clear();
            for a in &heard.lock().unwrap().announcements {
                *times.entry(a.cid.clone()).or_default() += 1;
            }
            held.iter().all(|cid| times.contains_key(*cid))
        },
    );
    assert_eq!(heard.lock().unwrap().trouble, None, "the listener");
    let repeats: usize = times.values().map(|n| n - 1).sum();
    assert!(
        repeats <= kills,
        "{repeats} repeated announcements for {kills} kills: {times:?}"
    );
    let deleted = docs.len() - rows.len();
    assert!(
        deleted > 0,
        "retention deleted nothing: kills could not fall mid-retention"
    );
    back_s.sort_by(f64::total_cmp);
    figure(
        "chaos",
        &format!(
            "SIGKILL vigil ×{kills} at random points, retention deleting all along (seed {}): {} segments indexed once each ({} since deleted by retention, {} held), 0 uncatalogued bytes, 0 overwritten, 0 duplicated, {} sessions, catalog integrity ok, no ffmpeg outlived vigil; every indexed segment announced, {repeats} repeated announcements (kill between publish and its record); recording again after a restart p50 {:.2} s, p99 {:.2} s",
            rng.seed(),
            docs.len(),
            deleted,
            rows.len(),
            report.sessions,
            crate::percentile(&back_s, 0.5),
            crate::percentile(&back_s, 0.99),
        ),
    );
}
