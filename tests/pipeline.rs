//! The distribution pipeline on real parts: ffmpeg + the camera simulator record, js-ipfs stores and pins,
//! SecantusDB (MongoDB wire protocol) indexes, and a SECOND js-ipfs node receives the pubsub announcements and
//! can fetch every segment — exactly once, through IPFS and MongoDB outages and a SIGKILLed vigil.

mod support;

use std::collections::{BTreeSet, HashSet};
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use mongodb::bson::{Bson, Document, doc};
use nix::sys::signal::Signal;
use support::bed::Bed;
use support::*;
use vigil::index::{Index, Scope};
use vigil::ipfs::kubo::Kubo;
use vigil::pipeline::announce::Announcement;

/// Announcements received on `api`'s node, collected by a background thread.
fn subscribe(api: &str, topic: &str) -> mpsc::Receiver<Announcement> {
    let (tx, rx) = mpsc::channel();
    let (api, topic) = (api.to_string(), topic.to_string());
    std::thread::spawn(move || {
        rt().block_on(async move {
            let mut sub = kubo(&api).pubsub_sub(&topic).await.expect("subscribe");
            while let Some(Ok(m)) = sub.next().await {
                match Announcement::parse(&m.data) {
                    Ok(a) => {
                        if tx.send(a).is_err() {
                            return;
                        }
                    }
                    Err(e) => panic!("a malformed announcement on the topic: {e}"),
                }
            }
        })
    });
    std::thread::sleep(Duration::from_secs(3)); // a new subscription takes 1–3 s to reach the other node
    rx
}

fn start(dir: &Path, cam: &Camera, cameras: usize, bed: &Bed, mongo: bool, extra: &str) -> Vigil {
    let cams: Vec<(String, String)> = (1..=cameras)
        .map(|n| (format!("cam{n}"), cam.url(n)))
        .collect();
    let cams: Vec<(&str, String)> = cams.iter().map(|(a, b)| (a.as_str(), b.clone())).collect();
    let mut top = format!(
        "[ipfs]\napi = \"{}\"\ntopic = \"vigil-test\"\ntimeout_seconds = 10\n",
        bed.ipfs_a
    );
    if mongo {
        top += &format!(
            "[index]\nmongodb_uri = \"{}\"\ndatabase = \"vigil\"\n",
            bed.mongo
        );
    }
    top += extra;
    let path = dir.join("vigil.toml");
    std::fs::write(&path, config(&dir.join("data"), &cams, &top)).unwrap();
    Vigil::start(&path)
}

fn mongo_docs(uri: &str) -> Vec<Document> {
    rt().block_on(async {
        let client = mongodb::Client::with_uri_str(uri).await.unwrap();
        let c = client.database("vigil").collection::<Document>("segments");
        c.find(doc! {}).await.unwrap().try_collect().await.unwrap()
    })
}

fn published(data: &Path) -> usize {
    catalog(data)
        .all_cameras()
        .unwrap()
        .iter()
        .filter(|s| s.published)
        .count()
}

fn backlog(v: &Vigil) -> serde_json::Value {
    serde_json::from_slice(&v.get("/api/pipeline").body).unwrap()
}

fn drained(v: &Vigil) -> bool {
    let b = backlog(v);
    b["backlog"]["pin"] == 0 && b["backlog"]["index"] == 0 && b["backlog"]["publish"] == 0
}

/// A private bed with `services`, one camera, and a vigil that has published its first 2 segments.
fn recording(services: &[&str], mongo: bool) -> (Bed, Camera, tempfile::TempDir, Vigil) {
    let bed = Bed::start(services);
    let cam = Camera::start(1);
    let dir = tempfile::tempdir().unwrap();
    let vigil = start(dir.path(), &cam, 1, &bed, mongo, "");
    let data = dir.path().join("data");
    wait_until("2 segments published", Duration::from_secs(60), || {
        published(&data) >= 2
    });
    (bed, cam, dir, vigil)
}

fn ts_files(data: &Path) -> usize {
    walk(data)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "ts"))
        .count()
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn every_segment_is_added_pinned_indexed_and_announced_to_a_second_node() {
    let bed = Bed::start(&["ipfs-a", "ipfs-b", "mongo"]);
    let announcements = subscribe(&bed.ipfs_b, "vigil-test");
    let cam = Camera::start(2);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut vigil = start(dir.path(), &cam, 2, &bed, true, "");
    wait_until("6 segments published", Duration::from_secs(60), || {
        published(&data) >= 6
    });
    vigil.stop();

    let rows: Vec<_> = catalog(&data)
        .all_cameras()
        .unwrap()
        .into_iter()
        .filter(|s| s.published)
        .collect();
    let a = kubo(&bed.ipfs_a);
    let b = kubo(&bed.ipfs_b);
    rt().block_on(async {
        for s in &rows {
            let cid = s.segment.cid.as_deref().unwrap();
            assert!(
                cid.starts_with("bafk") || cid.starts_with("bafy"),
                "CIDv1 base32: {cid}"
            );
            let file = std::fs::read(data.join(&s.segment.path)).unwrap();
            assert_eq!(
                a.cat_bytes(cid).await.unwrap(),
                file,
                "{cid} cats back byte-identical"
            );
            assert!(a.pin_ls(cid).await.unwrap(), "{cid} is pinned");
            assert_eq!(
                b.cat_bytes(cid).await.unwrap(),
                file,
                "{cid} is fetched by the second node too"
            );
        }
    });

    // Index documents: every field, with the right types. Indexing comes before publishing, so the stop may
    // fall between the two for the newest segment: the documents are those of the indexed rows.
    let indexed: Vec<_> = catalog(&data)
        .all_cameras()
        .unwrap()
        .into_iter()
        .filter(|s| s.indexed)
        .collect();
    assert!(indexed.len() >= rows.len());
    let docs = mongo_docs(&bed.mongo);
    assert_eq!(docs.len(), indexed.len());
    for d in &docs {
        let id = d.get_str("_id").unwrap();
        let s = &indexed
            .iter()
            .find(|r| {
                format!(
                    "{}/{}/{}",
                    r.segment.camera, r.segment.session, r.segment.seq
                ) == id
            })
            .expect("doc of a segment")
            .segment;
        assert_eq!(d.get_str("filename").unwrap(), s.path);
        assert_eq!(d.get_str("cid").unwrap(), s.cid.as_deref().unwrap());
        assert_eq!(d.get_str("factory_id").unwrap(), "factory-a");
        assert_eq!(d.get_str("device_id").unwrap(), s.camera);
        assert_eq!(d.get_str("session").unwrap(), s.session);
        assert_eq!(d.get_i64("seq").unwrap(), s.seq);
        assert!(
            matches!(d.get("start"), Some(Bson::DateTime(t)) if t.timestamp_millis() == s.start_ms)
        );
        assert!(
            matches!(d.get("end"), Some(Bson::DateTime(t)) if t.timestamp_millis() == s.start_ms + s.duration_ms)
        );
        assert_eq!(d.get_i64("duration_ms").unwrap(), s.duration_ms);
        assert_eq!(d.get_i64("bytes").unwrap(), s.bytes);
        assert_eq!(d.get_bool("first_in_session").unwrap(), s.first_in_session);
        assert_eq!(d.get_str("node_id").unwrap(), "test");
    }

    // The second node received the announcements, each with the camera's previous CID.
    let got: Vec<Announcement> = announcements.try_iter().collect();
    for s in &rows {
        let cid = s.segment.cid.as_deref().unwrap();
        let a = got.iter().find(|a| a.cid == cid).unwrap_or_else(|| {
            panic!(
                "no announcement of {cid} on node B ({} received)",
                got.len()
            )
        });
        assert_eq!(
            (a.device_id.as_str(), a.seq, a.v),
            (s.segment.camera.as_str(), s.segment.seq, 1)
        );
        let prev = catalog(&data).prev_cid(&s.segment).unwrap();
        assert_eq!(a.prev_cid, prev);
    }

    // Range queries return exactly that device's (or factory's) segments in that range, in order.
    let cam1: Vec<_> = rows
        .iter()
        .filter(|s| s.segment.camera == "cam1")
        .map(|s| &s.segment)
        .collect();
    assert!(cam1.len() >= 2);
    let (from, to) = (cam1[1].start_ms, cam1.last().unwrap().start_ms + 1);
    let want: Vec<String> = cam1
        .iter()
        .filter(|s| s.start_ms >= from && s.start_ms < to)
        .map(|s| format!("cam1/{}/{}", s.session, s.seq))
        .collect();
    rt().block_on(async {
        let client = mongodb::Client::with_uri_str(&bed.mongo).await.unwrap();
        let names = client
            .database("vigil")
            .collection::<Document>("segments")
            .list_index_names()
            .await
            .unwrap();
        for want in ["device_id_1_start_1", "factory_id_1_start_1"] {
            assert!(
                names.iter().any(|n| n == want),
                "index {want} created at start: {names:?}"
            );
        }
        let index =
            vigil::index::mongo::Mongo::connect(&bed.mongo, "vigil", Duration::from_secs(5))
                .await
                .unwrap();
        let got = index
            .range(&Scope::Device("cam1".into()), from, to)
            .await
            .unwrap();
        assert_eq!(got.iter().map(|d| d.id.clone()).collect::<Vec<_>>(), want);
        let factory = index
            .range(&Scope::Factory("factory-a".into()), 0, i64::MAX)
            .await
            .unwrap();
        assert_eq!(factory.len(), docs.len());
        assert!(
            factory.windows(2).all(|w| w[0].start_ms <= w[1].start_ms),
            "in time order"
        );
        assert!(
            index
                .range(&Scope::Factory("other".into()), 0, i64::MAX)
                .await
                .unwrap()
                .is_empty()
        );
    });
}

/// Segments ffmpeg finished while vigil stopped are catalogued on the way out (or by the watcher's rescan at the
/// next start) and distributed at the next start: run vigil once more, its cameras pointed at a dead port so
/// nothing new is recorded, until the pipeline has drained.
fn drain(dir: &Path) {
    let path = dir.join("vigil.toml");
    let dead = format!("rtsp://127.0.0.1:{}/", free_port());
    let text: String = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| {
            if l.starts_with("url = ") {
                format!("url = \"{dead}\"")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let drained = dir.join("drain.toml");
    std::fs::write(&drained, text).unwrap();
    let mut v = Vigil::start(&drained);
    // Let the watchers' start-up rescans run before judging the backlog.
    std::thread::sleep(Duration::from_secs(2));
    wait_until(
        "the pipeline drained after a restart",
        Duration::from_secs(60),
        || {
            let b = backlog(&v);
            b["backlog"]["pin"] == 0 && b["backlog"]["index"] == 0 && b["backlog"]["publish"] == 0
        },
    );
    v.stop();
}

/// count of index documents == count of distinct segments == count of segment files, and all published.
fn assert_exactly_once(dir: &Path, bed: &Bed) {
    drain(dir);
    let data = &dir.join("data");
    let rows = catalog(data).all_cameras().unwrap();
    let docs = mongo_docs(&bed.mongo);
    let ids: HashSet<&str> = docs.iter().map(|d| d.get_str("_id").unwrap()).collect();
    let distinct: BTreeSet<String> = rows
        .iter()
        .map(|r| {
            format!(
                "{}/{}/{}",
                r.segment.camera, r.segment.session, r.segment.seq
            )
        })
        .collect();
    assert_eq!(ids.len(), docs.len(), "no duplicate documents");
    assert_eq!(docs.len(), distinct.len(), "one document per segment");
    let paths: HashSet<String> = rows.iter().map(|r| r.segment.path.clone()).collect();
    let missing: Vec<_> = walk(data)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "ts"))
        .filter(|p| !paths.contains(&p.strip_prefix(data).unwrap().display().to_string()))
        .collect();
    assert!(
        missing.is_empty(),
        "segment files never catalogued: {missing:?}"
    );
    assert_eq!(distinct.len(), ts_files(data), "one segment per file");
    assert!(rows.iter().all(|r| r.published), "every segment published");
}

#[test]
fn an_ipfs_outage_pauses_the_pipeline_not_capture_and_the_backlog_drains() {
    let (bed, _cam, dir, mut vigil) = recording(&["ipfs-a", "mongo"], true);
    let data = dir.path().join("data");

    bed.down(&["ipfs-a"]);
    let at_outage = catalog(&data).count(None).unwrap();
    wait_until(
        "the backlog grows and shows",
        Duration::from_secs(30),
        || backlog(&vigil)["backlog"]["pin"].as_u64().unwrap_or(0) >= 4,
    );
    // The backlog may include segments recorded just before the outage was measured: capture going on is
    // four more segments after it.
    wait_until(
        "capture to go on during the outage",
        Duration::from_secs(30),
        || catalog(&data).count(None).unwrap() >= at_outage + 4,
    );
    assert_eq!(
        sessions(&data, "cam1").len(),
        1,
        "the camera was never restarted"
    );
    assert!(vigil.log().contains("IPFS API is down"), "{}", vigil.log());

    let restart = std::time::Instant::now();
    bed.up(&["ipfs-a"]);
    let node_up = restart.elapsed();
    let t = wait_until("the backlog drained", Duration::from_secs(60), || {
        drained(&vigil)
    });
    figure(
        "pipeline",
        &format!(
            "IPFS outage: node restarted in {:.1} s, then the backlog drained {:.1} s later",
            node_up.as_secs_f64(),
            t.as_secs_f64()
        ),
    );
    vigil.stop();
    assert_exactly_once(dir.path(), &bed);
}

#[test]
fn a_mongodb_outage_pauses_indexing_and_the_backlog_drains() {
    let (bed, _cam, dir, mut vigil) = recording(&["ipfs-a", "mongo"], true);
    let data = dir.path().join("data");
    bed.down(&["mongo"]);
    wait_until("the index backlog grows", Duration::from_secs(40), || {
        backlog(&vigil)["backlog"]["index"].as_u64().unwrap_or(0) >= 3
    });
    assert_eq!(
        sessions(&data, "cam1").len(),
        1,
        "the camera was never restarted"
    );
    bed.up(&["mongo"]);
    wait_until("the backlog drained", Duration::from_secs(60), || {
        drained(&vigil)
    });
    vigil.stop();
    assert_exactly_once(dir.path(), &bed);
}

#[test]
fn a_sigkilled_vigil_redoes_unfinished_steps_exactly_once() {
    let (bed, cam, dir, mut vigil) = recording(&["ipfs-a", "mongo"], true);
    // Build a backlog, then kill vigil while the stages work through it.
    bed.down(&["ipfs-a"]);
    wait_until("a backlog", Duration::from_secs(30), || {
        backlog(&vigil)["backlog"]["pin"].as_u64().unwrap_or(0) >= 3
    });
    bed.up(&["ipfs-a"]);
    wait_until("the stages are working", Duration::from_secs(30), || {
        backlog(&vigil)["backlog"]["pin"].as_u64().unwrap_or(9) < 3
    });
    vigil.signal(Signal::SIGKILL);
    vigil.wait_exit(Duration::from_secs(5));

    let mut vigil = start(dir.path(), &cam, 1, &bed, true, "");
    wait_until(
        "the backlog drained after the restart",
        Duration::from_secs(60),
        || {
            let b = backlog(&vigil);
            b["backlog"]["pin"] == 0 && b["backlog"]["index"] == 0 && b["backlog"]["publish"] == 0
        },
    );
    vigil.stop();
    assert_exactly_once(dir.path(), &bed);
}

#[test]
fn with_a_cluster_configured_segments_are_pinned_through_its_rest_api() {
    let bed = Bed::start(&["ipfs-a"]);
    let cluster = support::cluster::FakeCluster::start(&bed.ipfs_a, Some("vigil:secret"));
    let cam = Camera::start(1);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let extra = format!(
        "[ipfs.cluster]\napi = \"{}\"\nreplication_min = 2\nreplication_max = 3\nbasic_auth = \"vigil:secret\"\n",
        cluster.url
    );
    let mut vigil = start(dir.path(), &cam, 1, &bed, false, &extra);
    wait_until("3 segments published", Duration::from_secs(60), || {
        published(&data) >= 3
    });
    vigil.stop();
    let rows: Vec<_> = catalog(&data)
        .all_cameras()
        .unwrap()
        .into_iter()
        .filter(|r| r.published)
        .collect();
    let requests = cluster.requests.lock().unwrap().clone();
    let client = vigil::ipfs::cluster::Cluster::new(
        &cluster.url,
        Some(vigil::ipfs::kubo::Auth::Basic {
            user: "vigil".into(),
            password: "secret".into(),
        }),
        Duration::from_secs(10),
    )
    .unwrap();
    rt().block_on(async {
        for r in &rows {
            let cid = r.segment.cid.as_deref().unwrap();
            let req = requests
                .iter()
                .find(|q| q.cid == cid)
                .unwrap_or_else(|| panic!("{cid} was not pinned through the cluster"));
            assert_eq!(
                (req.min, req.max, req.name.as_str()),
                (2, 3, r.segment.path.as_str())
            );
            let status = client.status(cid).await.unwrap();
            assert_eq!(status.pinned_on(), 1, "{status:?}");
            assert!(status.errors().is_empty());
            assert!(
                kubo(&bed.ipfs_a).pin_ls(cid).await.unwrap(),
                "the cluster's IPFS peer holds {cid}"
            );
        }
        // Wrong credentials are a clear, typed error — and transient: segments wait for the operator's fix.
        let wrong =
            vigil::ipfs::cluster::Cluster::new(&cluster.url, None, Duration::from_secs(5)).unwrap();
        let e = wrong
            .pin(rows[0].segment.cid.as_deref().unwrap(), "x", 1, 1)
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                vigil::Error::Cluster {
                    status: Some(401),
                    ..
                }
            ) && e.is_transient(),
            "{e}"
        );
        let e = client.status("not-a-cid").await.unwrap_err();
        assert!(
            matches!(
                e,
                vigil::Error::Cluster {
                    status: Some(400),
                    ..
                }
            ) && !e.is_transient(),
            "{e}"
        );
    });
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Latency from "segment catalogued" to "announcement published", with IPFS and MongoDB in the loop.
#[test]
fn per_segment_latency_for_one_and_eight_cameras() {
    let bed = Bed::start(&["ipfs-a", "mongo"]);
    for cameras in [1usize, 8] {
        let cam = Camera::start(cameras);
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let mut vigil = start(dir.path(), &cam, cameras, &bed, true, "");
        let want = 8 * cameras;
        wait_until(
            &format!("{want} segments published"),
            Duration::from_secs(120),
            || published(&data) >= want,
        );
        vigil.stop();
        let mut lat = catalog(&data).publish_latencies_ms().unwrap();
        lat.sort();
        assert!(lat.len() >= want);
        figure(
            "pipeline",
            &format!(
                "segment ready → published, {cameras} camera(s), {} segments: p50 {} ms, p99 {} ms, max {} ms",
                lat.len(),
                percentile(&lat, 0.5),
                percentile(&lat, 0.99),
                lat.last().unwrap()
            ),
        );
    }
}

#[test]
fn the_kubo_client_speaks_the_rpc_api_and_maps_its_errors() {
    let bed = Bed::start(&["ipfs-a", "ipfs-b"]);
    let (a, b) = (kubo(&bed.ipfs_a), kubo(&bed.ipfs_b));
    let topic = "vigil-client-test";
    let messages = {
        let (tx, rx) = mpsc::channel();
        let api = bed.ipfs_b.clone();
        std::thread::spawn(move || {
            rt().block_on(async move {
                let mut sub = kubo(&api).pubsub_sub(topic).await.expect("subscribe");
                while let Some(m) = sub.next().await {
                    if tx.send(m.expect("a message")).is_err() {
                        return;
                    }
                }
            })
        });
        rx
    };
    std::thread::sleep(Duration::from_secs(3));
    rt().block_on(async {
        let ida = a.id().await.unwrap();
        let idb = b.id().await.unwrap();
        assert!(
            ida.id.starts_with("12D3KooW") && !ida.addresses.is_empty(),
            "{ida:?}"
        );
        assert!(!a.version().await.unwrap().is_empty());
        // B is connected to A; connecting again is fine.
        assert!(b.swarm_peers().await.unwrap().contains(&ida.id));
        b.swarm_connect(&ida.addresses[0]).await.unwrap();
        assert!(a.swarm_peers().await.unwrap().contains(&idb.id));
        // add / pin / cat, content read back on the other node.
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let added = a.add_bytes("blob.bin", data.clone()).await.unwrap();
        assert!(added.cid.starts_with("bafy"), "{added:?}"); // > 256 KiB: a dag-pb root over raw leaves
        assert!(added.size >= data.len() as u64);
        assert!(
            !a.pin_ls(&added.cid).await.unwrap(),
            "added without pinning"
        );
        a.pin_add(&added.cid).await.unwrap();
        a.pin_add(&added.cid).await.unwrap(); // idempotent
        assert!(a.pin_ls(&added.cid).await.unwrap());
        assert_eq!(b.cat_bytes(&added.cid).await.unwrap(), data);
        let streamed: Vec<u8> = a
            .cat(&added.cid)
            .await
            .unwrap()
            .try_fold(Vec::new(), |mut acc, chunk| async move {
                acc.extend_from_slice(&chunk);
                Ok(acc)
            })
            .await
            .unwrap();
        assert_eq!(streamed, data);
        // pubsub: A publishes, B's subscription gets it, decoded.
        a.pubsub_pub(topic, b"hello \xff bytes").await.unwrap();
        // Errors: a bad CID is a typed, permanent API error; a dead API is transient.
        let e = a.cat_bytes("not-a-cid").await.unwrap_err();
        assert!(
            matches!(e, vigil::Error::IpfsApi { status: 400, .. }) && !e.is_transient(),
            "{e}"
        );
        let dead = kubo(&format!("http://127.0.0.1:{}", free_port()));
        let e = dead.version().await.unwrap_err();
        assert!(
            matches!(e, vigil::Error::IpfsUnreachable { .. }) && e.is_transient(),
            "{e}"
        );
        let e = a.pubsub_pub("nobody-listens-here", b"x").await.unwrap_err();
        assert!(
            e.to_string().contains("InsufficientPeers"),
            "js-ipfs refuses a topic nobody subscribes to: {e}"
        );
    });
    let m = messages
        .recv_timeout(Duration::from_secs(10))
        .expect("B received the message");
    assert_eq!(m.data, b"hello \xff bytes");
    assert_eq!(m.topics, [topic]);
}

#[test]
fn ipfs_link_owns_and_restarts_a_configured_daemon() {
    // Initialise node A's repo through the test bed, stop it, and let vigil run it as its own daemon.
    let bed = Bed::start(&["ipfs-a"]);
    bed.down(&["ipfs-a"]);
    let repo = bed.state_dir().join("ipfs-a");
    let modules = {
        let out = std::process::Command::new("bash")
            .arg(repo_root().join("testbed/npm-cache.sh"))
            .arg("ipfs")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::path::PathBuf::from(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .last()
                .unwrap()
                .trim(),
        )
    };
    let daemon = format!(
        "daemon = [\"env\", \"IPFS_PATH={}\", \"NO_UPDATE_NOTIFIER=1\", \"node\", \"{}\", \"daemon\", \"--enable-preload=false\"]\n",
        repo.display(),
        modules.join("ipfs/src/cli.js").display()
    );
    let cam = Camera::start(1);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Without [index], start() writes `extra` right after the [ipfs] keys: `daemon` belongs to [ipfs].
    let mut vigil = start(dir.path(), &cam, 1, &bed, false, &daemon);
    vigil.expect_line("IPFS daemon started", Duration::from_secs(10));
    wait_until(
        "segments published through vigil's own daemon",
        Duration::from_secs(60),
        || published(&data) >= 2,
    );
    // The daemon dies: IpfsLink ends, the supervisor restarts it, the daemon comes back, the pipeline resumes.
    let runs_repo = |pid: i32| {
        std::fs::read(format!("/proc/{pid}/environ"))
            .map(|e| String::from_utf8_lossy(&e).contains(&format!("IPFS_PATH={}", repo.display())))
            .unwrap_or(false)
    };
    let daemon_pid = procs()
        .into_iter()
        .find(|p| runs_repo(p.pid) && p.state != 'Z')
        .map(|p| p.pid)
        .expect("the daemon process");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(daemon_pid), Signal::SIGTERM).unwrap();
    vigil.expect_line("IPFS daemon exited", Duration::from_secs(15));
    let before = published(&data);
    wait_until(
        "the pipeline resumed on the restarted daemon",
        Duration::from_secs(60),
        || published(&data) >= before + 2,
    );
    assert!(
        vigil.log().matches("IPFS daemon started").count() >= 2,
        "{}",
        vigil.log()
    );
    vigil.stop();
    wait_until(
        "the daemon stopped with vigil",
        Duration::from_secs(10),
        || !procs().iter().any(|p| runs_repo(p.pid) && p.state != 'Z'),
    );
}

/// A private nginx in front of an IPFS API: one port with basic auth, one with a bearer-token check.
struct AuthProxy {
    child: std::process::Child,
    _dir: tempfile::TempDir,
    basic: String,
    bearer: String,
}

impl AuthProxy {
    fn start(upstream: &str) -> AuthProxy {
        assert!(
            Path::new("/usr/sbin/nginx").exists(),
            "nginx is required: run testbed/install.sh nginx"
        );
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        let hash = std::process::Command::new("openssl")
            .args(["passwd", "-apr1", "s3cret"])
            .output()
            .unwrap();
        std::fs::write(
            dir.path().join("htpasswd"),
            format!("vigil:{}", String::from_utf8_lossy(&hash.stdout)),
        )
        .unwrap();
        let (p1, p2) = (free_port(), free_port());
        let upstream = upstream.trim_start_matches("http://");
        let proxy = format!(
            "client_max_body_size 0; proxy_buffering off; proxy_request_buffering off; proxy_read_timeout 1h; \
             proxy_http_version 1.1; location / {{ proxy_pass http://{upstream}; }}"
        );
        let conf = format!(
            "user root; worker_processes 1; daemon off; pid {d}/nginx.pid; error_log {d}/error.log;\n\
             events {{}}\n\
             http {{ access_log off; client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;\n\
               fastcgi_temp_path {d}/fcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
               server {{ listen 127.0.0.1:{p1}; auth_basic \"ipfs\"; auth_basic_user_file {d}/htpasswd; {proxy} }}\n\
               server {{ listen 127.0.0.1:{p2};\n\
                 if ($http_authorization != \"Bearer t0ken\") {{ return 401; }}\n\
                 {proxy} }}\n\
             }}\n"
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
        let child = std::process::Command::new("/usr/sbin/nginx")
            .args(["-p", &d, "-c", &format!("{d}/nginx.conf")])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        wait_until("nginx listens", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", p1)).is_ok()
                && std::net::TcpStream::connect(("127.0.0.1", p2)).is_ok()
        });
        AuthProxy {
            child,
            _dir: dir,
            basic: format!("http://127.0.0.1:{p1}"),
            bearer: format!("http://127.0.0.1:{p2}"),
        }
    }
}

impl Drop for AuthProxy {
    fn drop(&mut self) {
        // nginx's master stops its workers on SIGQUIT/SIGTERM.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

#[test]
fn an_ipfs_api_behind_a_proxy_is_reached_with_basic_or_bearer_auth() {
    use vigil::ipfs::kubo::Auth;
    let bed = Bed::start(&["ipfs-a"]);
    let proxy = AuthProxy::start(&bed.ipfs_a);
    let basic = |password: &str| {
        Kubo::new(
            &proxy.basic,
            Some(Auth::Basic {
                user: "vigil".into(),
                password: password.into(),
            }),
            Duration::from_secs(10),
        )
        .unwrap()
    };
    let bearer = |token: Option<&str>| {
        Kubo::new(
            &proxy.bearer,
            token.map(|t| Auth::Bearer(t.into())),
            Duration::from_secs(10),
        )
        .unwrap()
    };
    rt().block_on(async {
        let ok = basic("s3cret");
        assert!(!ok.version().await.unwrap().is_empty());
        let added = ok
            .add_bytes("x.bin", b"through the proxy".to_vec())
            .await
            .unwrap();
        assert_eq!(
            ok.cat_bytes(&added.cid).await.unwrap(),
            b"through the proxy"
        );
        let e = basic("wrong").version().await.unwrap_err();
        assert!(
            matches!(e, vigil::Error::IpfsApi { status: 401, .. }) && e.is_transient(),
            "{e}"
        );
        assert!(!bearer(Some("t0ken")).version().await.unwrap().is_empty());
        let e = bearer(None).version().await.unwrap_err();
        assert!(
            matches!(e, vigil::Error::IpfsApi { status: 401, .. }),
            "{e}"
        );
    });
    // The whole pipeline through the proxy, credentials from the config.
    let cam = Camera::start(1);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let path = dir.path().join("vigil.toml");
    let top = format!(
        "[ipfs]\napi = \"{}\"\nbasic_auth = \"vigil:s3cret\"\ntopic = \"vigil-test\"\n",
        proxy.basic
    );
    std::fs::write(&path, config(&data, &[("cam1", cam.url(1))], &top)).unwrap();
    let mut vigil = Vigil::start(&path);
    wait_until(
        "segments published through the proxy",
        Duration::from_secs(60),
        || published(&data) >= 2,
    );
    vigil.stop();
}
