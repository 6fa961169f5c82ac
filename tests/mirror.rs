//! The storage role on real parts: an origin vigil records the test-bed camera into js-ipfs node A and
//! SecantusDB; a mirror vigil on js-ipfs node B follows the pubsub topic, fetches every segment by CID, and
//! serves it; a third node that keeps nothing replays through the index and its IPFS node. Byte-identical
//! copies, playable playlists, backfill after the mirror's own outage, healing after its subscription and
//! the origin's IPFS node went down, and a corpus of bad announcements rejected and counted while real ones
//! keep flowing.

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use support::bed::Bed;
use support::*;
use vigil::pipeline::announce::Announcement;

const TOPIC: &str = "vigil-mirror-test";

struct Node {
    vigil: Vigil,
    config: PathBuf,
    data: PathBuf,
}

impl Node {
    fn restart(&mut self) {
        self.vigil = Vigil::start(&self.config);
    }
}

/// A node `node_id` in `dir`, on IPFS API `ipfs`, indexing in `mongo` (if any), recording `cameras` and with
/// `remote` (the `[[remote_cameras]]` and `[mirror]` TOML).
fn node(
    dir: &Path,
    node_id: &str,
    ipfs: &str,
    mongo: Option<&str>,
    cameras: &[(&str, String)],
    remote: &str,
) -> Node {
    node_http(dir, node_id, ipfs, mongo, cameras, remote, "")
}

/// [`node`] with `http` added to its `[http]` table.
fn node_http(
    dir: &Path,
    node_id: &str,
    ipfs: &str,
    mongo: Option<&str>,
    cameras: &[(&str, String)],
    remote: &str,
    http: &str,
) -> Node {
    let data = dir.join(node_id);
    let mut top = format!("[ipfs]\napi = \"{ipfs}\"\ntopic = \"{TOPIC}\"\ntimeout_seconds = 10\n");
    if let Some(m) = mongo {
        top += &format!("[index]\nmongodb_uri = \"{m}\"\ndatabase = \"vigil\"\n");
    }
    top += remote;
    let text = config(&data, cameras, &top)
        .replace("node_id = \"test\"", &format!("node_id = \"{node_id}\""))
        .replace("[http]\n", &format!("[http]\n{http}"));
    let config = dir.join(format!("{node_id}.toml"));
    std::fs::write(&config, text).unwrap();
    Node {
        vigil: Vigil::start(&config),
        config,
        data,
    }
}

/// Waits until the origin's footage is over a 600 KB budget and its retention says it may delete nothing;
/// the oldest segment must still be there (`why`). Returns it.
fn over_budget_and_kept(
    origin: &mut Node,
    oc: &vigil::catalog::Catalog,
    why: &str,
) -> vigil::catalog::Segment {
    wait_until("footage over the budget", Duration::from_secs(90), || {
        oc.total_bytes().unwrap() > 900_000
    });
    origin
        .vigil
        .expect_line("nothing may be deleted yet", Duration::from_secs(20));
    let first = oc.all("cam1").unwrap()[0].clone();
    assert!(oc.segment("cam1", first.id).unwrap().is_some(), "{why}");
    first
}

/// A private bed (two js-ipfs, SecantusDB), a camera and a folder for the nodes.
fn bed_camera_dir() -> (Bed, Camera, tempfile::TempDir) {
    (
        Bed::start(&["ipfs-a", "ipfs-b", "mongo"]),
        Camera::start(1),
        tempfile::tempdir().unwrap(),
    )
}

/// An origin recording `cam`'s cam1 on node A, indexing in the bed's SecantusDB, with `extra` TOML.
fn origin_node(bed: &Bed, cam: &Camera, dir: &Path, extra: &str) -> Node {
    node(
        dir,
        "origin",
        &bed.ipfs_a,
        Some(&bed.mongo),
        &[("cam1", cam.url(1))],
        extra,
    )
}

/// An origin recording `cam`'s cam1 on node A and a mirror of it on node B, both indexing in the bed's
/// SecantusDB.
fn origin_and_mirror(bed: &Bed, cam: &Camera, dir: &Path) -> (Node, Node) {
    let origin = origin_node(bed, cam, dir, "");
    let mirror = node(
        dir,
        "mirror",
        &bed.ipfs_b,
        Some(&bed.mongo),
        &[],
        MIRROR_CAM1,
    );
    (origin, mirror)
}

/// The origin's published segments of cam1: (session, seq) → (cid, path).
fn published(data: &Path) -> HashMap<(String, i64), (String, String)> {
    catalog(data)
        .all_cameras()
        .unwrap()
        .into_iter()
        .filter(|t| t.published)
        .map(|t| {
            let s = t.segment;
            ((s.session, s.seq), (s.cid.unwrap(), s.path))
        })
        .collect()
}

/// The mirror's segments of cam1: (session, seq) → (cid, path).
fn mirrored(data: &Path) -> HashMap<(String, i64), (String, String)> {
    if !data.join("catalog.sqlite").exists() {
        return HashMap::new();
    }
    catalog(data)
        .all("cam1")
        .unwrap()
        .into_iter()
        .map(|s| ((s.session, s.seq), (s.cid.unwrap_or_default(), s.path)))
        .collect()
}

fn mirror_stats(n: &Node) -> serde_json::Value {
    let r = n.vigil.get("/api/mirror");
    assert_eq!(r.status, 200, "{}", r.text());
    serde_json::from_slice(&r.body).unwrap()
}

/// Every segment the origin had published at the call is on the mirror, with the same CID, within `within`.
fn caught_up(origin: &Node, mirror: &Node, what: &str, within: Duration) -> Duration {
    let want = published(&origin.data);
    assert!(!want.is_empty());
    wait_until(what, within, || {
        let have = mirrored(&mirror.data);
        want.iter()
            .all(|(k, (cid, _))| have.get(k).is_some_and(|(c, _)| c == cid))
    })
}

const MIRROR_CAM1: &str = "[mirror]\nfetch_timeout_seconds = 2\nheal_seconds = 5\n\n[[remote_cameras]]\nid = \"cam1\"\nfactory_id = \"factory-a\"\n";

#[test]
fn a_mirror_keeps_byte_identical_copies_and_any_node_replays_through_ipfs() {
    let (bed, cam, dir) = bed_camera_dir();
    let origin = origin_node(&bed, &cam, dir.path(), "");
    let modules = support::browser::node_modules();
    let mirror = node_http(
        dir.path(),
        "mirror",
        &bed.ipfs_b,
        Some(&bed.mongo),
        &[],
        MIRROR_CAM1,
        &format!(
            "assets_dir = \"{}\"\n",
            modules.join("hls.js/dist").display()
        ),
    );
    let replay = node(
        dir.path(),
        "replay",
        &bed.ipfs_b,
        Some(&bed.mongo),
        &[],
        "[[remote_cameras]]\nid = \"cam1\"\nfactory_id = \"factory-a\"\nmirror = false\n\n\
         [[remote_cameras]]\nid = \"cam2\"\nfactory_id = \"factory-a\"\nmirror = false\n",
    );
    wait_until("6 segments on the mirror", Duration::from_secs(90), || {
        mirrored(&mirror.data).len() >= 6
    });
    let took = caught_up(
        &origin,
        &mirror,
        "the mirror to hold all published",
        Duration::from_secs(30),
    );
    eprintln!("mirror caught up {took:?} after the check began");

    // Byte-identical, under the mirror folder, catalogued with the same CID.
    let origin_rows = published(&origin.data);
    let mut compared = 0;
    for (key, (cid, path)) in mirrored(&mirror.data) {
        assert!(path.starts_with("mirror/cam1/"), "{path}");
        let Some((ocid, opath)) = origin_rows.get(&key) else {
            continue;
        };
        assert_eq!(&cid, ocid, "{key:?}");
        let a = std::fs::read(origin.data.join(opath)).unwrap();
        let b = std::fs::read(mirror.data.join(&path)).unwrap();
        assert!(a == b, "{path} differs from the origin's {opath}");
        compared += 1;
    }
    assert!(compared >= 6, "{compared}");

    // The mirror's own playlists play: today's from start to end.
    let day_text = mirror.vigil.get("/cameras/cam1/day.m3u8").text();
    let played = play_snapshot(&mirror.vigil.addr, "/cameras/cam1/", &day_text, dir.path());
    let listed: f64 = day_text
        .lines()
        .filter_map(|l| l.strip_prefix("#EXTINF:"))
        .map(|l| l.trim_end_matches(',').parse::<f64>().unwrap())
        .sum();
    assert!(
        listed >= 10.0 && (played - listed).abs() < 2.5,
        "ffprobe {played} s, playlist {listed} s"
    );
    // hls.js in Chromium plays the mirror's footage from its first segment to its last.
    let rows = catalog(&mirror.data).all("cam1").unwrap();
    let t = rfc3339_ms;
    let (a, z) = (&rows[0], &rows[rows.len() - 1]);
    let span = (z.start_ms + z.duration_ms - a.start_ms) as f64 / 1000.0;
    let played = support::browser::browser_check(
        &format!(
            "http://{}/?camera=cam1&mode=vod&from={}&to={}",
            mirror.vigil.addr,
            t(a.start_ms),
            t(z.start_ms + z.duration_ms)
        ),
        (span - 2.5).max(4.0) as u32,
        &dir.path().join("mirror.png"),
        &modules,
    );
    figure(
        "storage",
        &format!(
            "hls.js plays the mirror's {span:.1} s of cam1 end to end: {}",
            played
                .lines()
                .filter(|l| l.contains("currentTime advance"))
                .collect::<Vec<_>>()
                .join("; ")
        ),
    );
    let live = mirror.vigil.get("/cameras/cam1/live.m3u8");
    assert_eq!(live.status, 200);
    assert!(live.text().contains("segments/"), "{}", live.text());

    // Lag and counters.
    let stats = mirror_stats(&mirror);
    let s = &stats["stats"];
    assert!(s["mirrored"].as_u64().unwrap() >= 6, "{stats}");
    assert!(s["lag_samples"].as_u64().unwrap() >= 1, "{stats}");
    figure(
        "storage",
        &format!(
            "mirror lag, 1 camera (test): p50 {} ms, p99 {} ms over {} live announcements",
            s["lag_ms_p50"], s["lag_ms_p99"], s["lag_samples"]
        ),
    );

    // The origin counts the mirror's copies.
    let oc = catalog(&origin.data);
    wait_until(
        "the origin to count a replica",
        Duration::from_secs(20),
        || {
            oc.all("cam1")
                .unwrap()
                .iter()
                .any(|s| oc.replicas(s.id).unwrap() >= 1)
        },
    );

    // Replay on a node that recorded nothing and keeps nothing: VOD from the index, segments through IPFS.
    let all = catalog(&origin.data).all("cam1").unwrap();
    let (first, last) = (&all[0], &all[all.len() - 2]);
    let t = rfc3339_ms;
    let q = format!("from={}&to={}", t(first.start_ms), t(last.start_ms + 1));
    let vod = replay.vigil.get(&format!("/cameras/cam1/vod.m3u8?{q}"));
    assert_eq!(vod.status, 200, "{}", vod.text());
    let uris = playlist_uris(&vod.text());
    assert!(
        uris.len() >= 4 && uris.iter().all(|u| u.starts_with("ipfs/")),
        "{}",
        vod.text()
    );
    assert!(vod.text().contains("#EXT-X-ENDLIST"));
    let by_cid: HashMap<String, String> = published(&origin.data)
        .values()
        .map(|(c, p)| (c.clone(), p.clone()))
        .collect();
    for u in &uris {
        let r = replay.vigil.get(&format!("/cameras/cam1/{u}"));
        assert_eq!(r.status, 200, "{u}: {}", r.text());
        let cid = u.trim_start_matches("ipfs/").trim_end_matches(".ts");
        let want = std::fs::read(origin.data.join(&by_cid[cid])).unwrap();
        assert!(r.body == want, "{u} is not the origin's bytes");
    }
    let vod_url = format!("http://{}/cameras/cam1/vod.m3u8?{q}", replay.vigil.addr);
    let played = ffprobe_duration(&vod_url);
    assert!(played > 6.0, "{played}");
    // The distributor role: live and today's day playlist of a camera it does not record, from the index.
    let day = replay.vigil.get("/cameras/cam1/day.m3u8");
    assert_eq!(day.status, 200, "{}", day.text());
    let day_uris = playlist_uris(&day.text());
    assert!(
        day_uris.len() >= 6 && day_uris.iter().all(|u| u.starts_with("ipfs/")),
        "{}",
        day.text()
    );
    assert!(
        !day.text().contains("#EXT-X-ENDLIST"),
        "today is not over: {}",
        day.text()
    );
    let played = play_snapshot(
        &replay.vigil.addr,
        "/cameras/cam1/",
        &day.text(),
        dir.path(),
    );
    assert!(played > 10.0, "the distributor's day plays {played} s");
    let seq_of = |text: &str| -> HashMap<String, u64> {
        let first: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))
            .unwrap()
            .parse()
            .unwrap();
        playlist_uris(text)
            .into_iter()
            .enumerate()
            .map(|(i, u)| (u, first + i as u64))
            .collect()
    };
    let live1 = replay.vigil.get("/cameras/cam1/live.m3u8").text();
    let before = playlist_uris(&day.text()).len();
    wait_until(
        "a new segment in the distributor's day",
        Duration::from_secs(20),
        || playlist_uris(&replay.vigil.get("/cameras/cam1/day.m3u8").text()).len() > before,
    );
    let live2 = replay.vigil.get("/cameras/cam1/live.m3u8").text();
    let (s1, s2) = (seq_of(&live1), seq_of(&live2));
    let shared: Vec<_> = s1.keys().filter(|u| s2.contains_key(*u)).collect();
    assert!(!shared.is_empty(), "{live1}\n{live2}");
    for u in shared {
        assert_eq!(
            s1[u], s2[u],
            "a segment keeps its media sequence number as the window slides"
        );
    }
    assert_ne!(live1, live2, "the live window moved");
    // A CID of cam1 asked for under cam2 is not served: the index ties it to cam1 only.
    let r = replay.vigil.get(&format!("/cameras/cam2/{}", uris[0]));
    assert_eq!(r.status, 404, "{}", r.text());
    // Not a CID at all.
    let r = replay
        .vigil
        .get("/cameras/cam1/ipfs/..%2F..%2Fetc%2Fpasswd.ts");
    assert!(matches!(r.status, 400 | 404), "{}", r.status);
    drop((origin, mirror, replay));
}

#[test]
fn a_mirror_backfills_after_its_outage_and_heals_what_pubsub_lost() {
    let (bed, cam, dir) = bed_camera_dir();
    let (origin, mut mirror) = origin_and_mirror(&bed, &cam, dir.path());
    wait_until("3 segments on the mirror", Duration::from_secs(90), || {
        mirrored(&mirror.data).len() >= 3
    });

    // 1. The mirror is down while the origin records; back, it backfills everything.
    mirror.vigil.stop();
    let before = published(&origin.data).len();
    wait_until("5 more segments published", Duration::from_secs(60), || {
        published(&origin.data).len() >= before + 5
    });
    let missed = published(&origin.data).len() - mirrored(&mirror.data).len();
    mirror.restart();
    let took = caught_up(
        &origin,
        &mirror,
        "backfill after the mirror's restart",
        Duration::from_secs(60),
    );
    let stats = mirror_stats(&mirror);
    assert!(stats["stats"]["healed"].as_u64().unwrap() >= 5, "{stats}");
    figure(
        "storage",
        &format!(
            "mirror backfill after its own outage (test): {missed} segments in {:.1} s",
            took.as_secs_f64()
        ),
    );
    // Nothing fetched twice: one row per segment, each file once.
    let rows = catalog(&mirror.data).all("cam1").unwrap();
    let mut keys: Vec<_> = rows.iter().map(|s| (s.session.clone(), s.seq)).collect();
    keys.dedup();
    assert_eq!(keys.len(), rows.len());

    // 2. The mirror's IPFS node goes down: its subscription breaks and announcements are lost; healed.
    bed.down(&["ipfs-b"]);
    let before = published(&origin.data).len();
    wait_until(
        "4 segments published while B is down",
        Duration::from_secs(60),
        || published(&origin.data).len() >= before + 4,
    );
    bed.up(&["ipfs-b"]);
    caught_up(
        &origin,
        &mirror,
        "healing after the subscription was down",
        Duration::from_secs(90),
    );
    assert!(
        mirror_stats(&mirror)["stats"]["subscriptions"]
            .as_u64()
            .unwrap()
            >= 2
    );

    // 3. The origin's IPFS node restarts: the origin's pipeline waits, then both catch up.
    bed.down(&["ipfs-a"]);
    std::thread::sleep(Duration::from_secs(4)); // an outage of a few segments' length: the point of the step
    // up.sh is idempotent: it also restarts node B if it went down with A, and reconnects them.
    bed.up(&["ipfs-a", "ipfs-b"]);
    let before = published(&origin.data).len();
    wait_until(
        "the origin publishing again",
        Duration::from_secs(60),
        || published(&origin.data).len() >= before + 3,
    );
    caught_up(
        &origin,
        &mirror,
        "the mirror after the origin's IPFS restart",
        Duration::from_secs(90),
    );
    drop((origin, mirror));
}

#[test]
fn without_a_shared_index_the_mirror_heals_from_the_origins_listing_with_a_token() {
    let bed = Bed::start(&["ipfs-a", "ipfs-b"]);
    let cam = Camera::start(1);
    let dir = tempfile::tempdir().unwrap();
    // The origin requires logins; the mirror lists with an API token of a client that sees cam1.
    let mut origin = node(
        dir.path(),
        "origin",
        &bed.ipfs_a,
        None,
        &[("cam1", cam.url(1))],
        "",
    );
    origin.vigil.stop();
    let text = std::fs::read_to_string(&origin.config)
        .unwrap()
        .replace("[auth]\nenabled = false", "[auth]\nenabled = true");
    std::fs::write(&origin.config, text).unwrap();
    vigil_cli(
        &origin.config,
        &[
            "user",
            "add",
            "mirror-bot",
            "--password-stdin",
            "--role",
            "client",
            "--camera",
            "cam1",
        ],
        "mirror-bot-pass-123\n",
    );
    let token = vigil_cli(
        &origin.config,
        &["token", "add", "mirror-bot", "--label", "mirror"],
        "",
    );
    let token = token.split_whitespace().last().unwrap().to_string();
    origin.restart();
    let listing = format!(
        "[[mirror.origins]]\nnode_id = \"origin\"\nurl = \"http://{}\"\ntoken = \"{token}\"\n",
        origin.vigil.addr
    );
    let mut mirror = node(
        dir.path(),
        "mirror",
        &bed.ipfs_b,
        None,
        &[],
        &MIRROR_CAM1.replace(
            "\n\n[[remote_cameras]]",
            &format!("\n{listing}\n[[remote_cameras]]"),
        ),
    );
    wait_until("3 segments on the mirror", Duration::from_secs(90), || {
        mirrored(&mirror.data).len() >= 3
    });
    mirror.vigil.stop();
    let before = published(&origin.data).len();
    wait_until("4 more segments published", Duration::from_secs(60), || {
        published(&origin.data).len() >= before + 4
    });
    mirror.restart();
    caught_up(
        &origin,
        &mirror,
        "backfill from the origin's listing",
        Duration::from_secs(60),
    );
    assert!(mirror_stats(&mirror)["stats"]["healed"].as_u64().unwrap() >= 4);
    // The listing is guarded like every camera route: no token, no listing.
    let r = origin
        .vigil
        .get("/cameras/cam1/index.json?from=2020-01-01T00:00:00Z&to=2020-01-01T01:00:00Z");
    assert_eq!(r.status, 401, "{}", r.text());
    drop((origin, mirror));
}

#[test]
fn the_origin_deletes_only_what_its_mirror_holds_until_the_critical_floor() {
    let (bed, cam, dir) = bed_camera_dir();
    let mut origin = node(
        dir.path(),
        "origin",
        &bed.ipfs_a,
        Some(&bed.mongo),
        &[("cam1", cam.url(1))],
        "[retention]\nmax_bytes = \"600KB\"\nmin_replicas = 1\ncheck_seconds = 1\n",
    );
    let oc = catalog(&origin.data);
    // Over its budget with no mirror: nothing may go (above the critical floor).
    over_budget_and_kept(&mut origin, &oc, "the oldest segment was kept");
    let before: HashMap<i64, String> = oc
        .all("cam1")
        .unwrap()
        .into_iter()
        .filter_map(|s| Some((s.id, s.cid?)))
        .collect();

    // A mirror comes: it backfills and acknowledges; the origin deletes what the mirror holds, down to budget.
    let mirror = node(
        dir.path(),
        "mirror",
        &bed.ipfs_b,
        Some(&bed.mongo),
        &[],
        MIRROR_CAM1,
    );
    wait_until(
        "the origin back within its budget",
        Duration::from_secs(90),
        || oc.total_bytes().unwrap() <= 600_000 + 250_000,
    );
    let now: std::collections::HashSet<i64> =
        oc.all("cam1").unwrap().iter().map(|s| s.id).collect();
    let deleted: Vec<&String> = before
        .iter()
        .filter(|(id, _)| !now.contains(id))
        .map(|(_, c)| c)
        .collect();
    assert!(!deleted.is_empty());
    let held: std::collections::HashSet<String> = mirrored(&mirror.data)
        .values()
        .map(|(c, _)| c.clone())
        .collect();
    for cid in &deleted {
        assert!(
            held.contains(*cid),
            "{cid} was deleted on the origin but is not on the mirror"
        );
    }
    // Deleted here, unpinned here right after the pass that deleted it (the mirror keeps it pinned).
    let a = kubo(&bed.ipfs_a);
    let b = kubo(&bed.ipfs_b);
    let r = rt();
    wait_until(
        "the deleted segments unpinned on the origin's node",
        Duration::from_secs(15),
        || {
            r.block_on(async {
                for cid in &deleted {
                    if a.pin_ls(cid).await.unwrap() {
                        return false;
                    }
                }
                true
            })
        },
    );
    r.block_on(async {
        for cid in &deleted {
            assert!(
                b.pin_ls(cid).await.unwrap(),
                "{cid} not pinned on the mirror's node"
            );
        }
    });
    figure(
        "storage",
        &format!(
            "replication-aware retention (test): {} segments deleted on the origin after the mirror acknowledged them; none before",
            deleted.len()
        ),
    );
    origin.vigil.stop();
    drop((origin, mirror));
}

#[test]
fn with_a_cluster_retention_waits_for_replication_min_peers() {
    let bed = Bed::start(&["ipfs-a"]);
    // A one-peer cluster (the fake pins on node A and reports that one peer).
    let cluster = support::cluster::FakeCluster::start(&bed.ipfs_a, None);
    let cam = Camera::start(1);
    let dir = tempfile::tempdir().unwrap();
    let with_min = |min: u32| {
        format!(
            "[ipfs.cluster]\napi = \"{}\"\nreplication_min = {min}\nreplication_max = 3\n\
             [retention]\nmax_bytes = \"600KB\"\ncheck_seconds = 1\n",
            cluster.url
        )
    };
    let mut origin = node(
        dir.path(),
        "origin",
        &bed.ipfs_a,
        None,
        &[("cam1", cam.url(1))],
        &with_min(2),
    );
    let oc = catalog(&origin.data);
    let first = over_budget_and_kept(
        &mut origin,
        &oc,
        "kept: the cluster pins it on 1 peer, not 2",
    );
    // The same footage, the cluster's word enough at 1 peer: it goes, down to the budget.
    origin.vigil.stop();
    let text = std::fs::read_to_string(&origin.config)
        .unwrap()
        .replace("replication_min = 2", "replication_min = 1");
    std::fs::write(&origin.config, text).unwrap();
    origin.restart();
    wait_until(
        "the oldest segment deleted",
        Duration::from_secs(60),
        || oc.segment("cam1", first.id).unwrap().is_none(),
    );
    wait_until("back within the budget", Duration::from_secs(60), || {
        oc.total_bytes().unwrap() <= 600_000 + 250_000
    });
    origin.vigil.stop();
}

/// `vigil verify` with `config` over `[from, to)`: exit code and output.
fn verify(config: &Path, from: i64, to: i64) -> (i32, String) {
    let t = rfc3339_ms;
    let out = std::process::Command::new(VIGIL)
        .args([
            "verify",
            "--camera",
            "cam1",
            "--from",
            &t(from),
            "--to",
            &t(to),
            "--config",
        ])
        .arg(config)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn verify_proves_a_day_intact_and_names_a_flipped_deleted_or_unindexed_segment() {
    let (bed, cam, dir) = bed_camera_dir();
    let (mut origin, mut mirror) = origin_and_mirror(&bed, &cam, dir.path());
    wait_until("6 segments on the mirror", Duration::from_secs(90), || {
        mirrored(&mirror.data).len() >= 6
    });
    caught_up(
        &origin,
        &mirror,
        "the mirror to hold all published",
        Duration::from_secs(30),
    );
    origin.vigil.stop();
    mirror.vigil.stop();
    let rows = catalog(&mirror.data).all("cam1").unwrap();
    let (from, to) = (rows[0].start_ms, rows[rows.len() - 1].start_ms + 1);

    // Intact: on the mirror (its copies), on the origin (its files).
    for config in [&mirror.config, &origin.config] {
        let (code, out) = verify(config, from, to);
        assert_eq!(code, 0, "{out}");
        assert!(
            out.contains("complete: yes; unaltered: yes; VERIFIED"),
            "{out}"
        );
    }
    // Nothing in the range (a wrong camera or range) proves nothing: not a pass.
    let (code, out) = verify(&mirror.config, 978_307_200_000, 978_310_800_000);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("nothing: no segment of camera cam1"), "{out}");
    let victim = &rows[rows.len() / 2];
    let name = format!("{}/{}", victim.session, victim.seq);
    let file = mirror.data.join(&victim.path);
    let original = std::fs::read(&file).unwrap();

    // One byte flipped in a mirrored segment.
    let mut flipped = original.clone();
    let at = flipped.len() / 2;
    flipped[at] ^= 0x01;
    std::fs::write(&file, &flipped).unwrap();
    let (code, out) = verify(&mirror.config, from, to);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("altered: {name}:")), "{out}");
    assert!(out.contains("unaltered: NO"), "{out}");

    // The segment deleted.
    std::fs::remove_file(&file).unwrap();
    let (code, out) = verify(&mirror.config, from, to);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("file_gone: {name}:")), "{out}");
    std::fs::write(&file, &original).unwrap();
    assert_eq!(verify(&mirror.config, from, to).0, 0, "restored");

    // Its index document removed.
    rt().block_on(async {
        let client = mongodb::Client::with_uri_str(&bed.mongo).await.unwrap();
        let c = client
            .database("vigil")
            .collection::<mongodb::bson::Document>("segments");
        let r = c
            .delete_one(mongodb::bson::doc! { "_id": format!("cam1/{name}") })
            .await
            .unwrap();
        assert_eq!(r.deleted_count, 1);
    });
    for config in [&mirror.config, &origin.config] {
        let (code, out) = verify(config, from, to);
        assert_eq!(code, 1, "{out}");
        assert!(out.contains(&format!("missing_seq: {name}:")), "{out}");
        assert!(out.contains(&format!("not_indexed: {name}:")), "{out}");
        assert!(out.contains("complete: NO"), "{out}");
    }
    let (_, out) = verify(&origin.config, from, to);
    eprintln!("{out}");
}

/// What a player gets from the EVENT playlist `text` (served under `base`) played from its first segment to
/// its last: the snapshot, finished with ENDLIST and its URIs made absolute, read through by ffprobe.
fn play_snapshot(addr: &str, base: &str, text: &str, dir: &Path) -> f64 {
    let mut out = String::new();
    for l in text.lines() {
        if l.starts_with('#') || l.is_empty() {
            out += l;
        } else {
            out += &format!("http://{addr}{base}{l}");
        }
        out.push('\n');
    }
    out += "#EXT-X-ENDLIST\n";
    let file = dir.join("snapshot.m3u8");
    std::fs::write(&file, out).unwrap();
    let o = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-protocol_whitelist",
            "file,http,tcp",
            "-show_entries",
            "format=duration",
            "-of",
            "csv=p=0",
        ])
        .arg(&file)
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("ffprobe: {}", String::from_utf8_lossy(&o.stderr)))
}

/// CIDv1 (raw, sha2-256) of `data`, base32: a valid CID nobody has.
fn raw_cid(data: &[u8]) -> String {
    use sha2::Digest as _;
    let mut bytes = vec![0x01, 0x55, 0x12, 0x20];
    bytes.extend_from_slice(&sha2::Sha256::digest(data));
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut out = String::from("b");
    let (mut buf, mut bits) = (0u32, 0);
    for b in bytes {
        buf = (buf << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            out.push(ALPHABET[((buf >> (bits - 5)) & 31) as usize] as char);
            bits -= 5;
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buf << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// Add `data` with CIDv0 (`Qm…`): the same bytes under a CID the mirror's CIDv1 add will not reproduce.
fn add_v0(api: &str, data: Vec<u8>) -> String {
    rt().block_on(async {
        let form = reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::bytes(data)
                .file_name("x.ts")
                .mime_str("application/octet-stream")
                .unwrap(),
        );
        let v: serde_json::Value = reqwest::Client::new()
            .post(format!("{api}/api/v0/add?cid-version=0&pin=true"))
            .multipart(form)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["Hash"]
            .as_str()
            .unwrap_or_else(|| panic!("add: {v}"))
            .to_string()
    })
}

#[test]
fn bad_announcements_are_rejected_and_counted_while_real_ones_keep_flowing() {
    let (bed, cam, dir) = bed_camera_dir();
    let origin = origin_node(&bed, &cam, dir.path(), "");
    let mirror = node(
        dir.path(),
        "mirror",
        &bed.ipfs_b,
        Some(&bed.mongo),
        &[],
        &MIRROR_CAM1.replace("[mirror]\n", "[mirror]\nmax_segment_bytes = \"4MiB\"\n"),
    );
    wait_until("3 segments on the mirror", Duration::from_secs(90), || {
        mirrored(&mirror.data).len() >= 3
    });
    let a = kubo(&bed.ipfs_a);
    let oc = catalog(&origin.data);
    let real = oc
        .all("cam1")
        .unwrap()
        .into_iter()
        .find(|s| s.cid.is_some())
        .unwrap();
    let prev = oc.prev_cid(&real).unwrap();
    let good = Announcement::of(&real, prev, "origin").unwrap();
    wait_until(
        "the mirror to hold the first segment",
        Duration::from_secs(30),
        || mirrored(&mirror.data).contains_key(&(real.session.clone(), real.seq)),
    );
    let json = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut v = serde_json::to_value(&good).unwrap();
        f(&mut v);
        serde_json::to_vec(&v).unwrap()
    };
    let forged = |session: &str, cid: &str, bytes: i64| {
        json(&|v| {
            v["session"] = session.into();
            v["seq"] = 0.into();
            v["cid"] = cid.into();
            v["prev_cid"] = serde_json::Value::Null;
            v["bytes"] = bytes.into();
        })
    };
    let html = b"<html><body>not a segment</body></html>".to_vec();
    let html_cid = rt().block_on(async {
        let c = a.add_bytes("x.html", html.clone()).await.unwrap().cid;
        a.pin_add(&c).await.unwrap();
        c
    });
    let ts = std::fs::read(origin.data.join(&real.path)).unwrap();
    let v0 = add_v0(&bed.ipfs_a, ts.clone());
    let three_days_ago = (chrono::Utc::now() - chrono::Duration::days(3))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let corpus: Vec<(&str, Vec<u8>)> = vec![
        ("malformed", b"not json at all".to_vec()),
        ("malformed", br#"{"v":1,"cid":5}"#.to_vec()),
        ("malformed", json(&|v| v["seq"] = "three".into())),
        ("malformed", b"[1,2,3]".to_vec()),
        ("version", json(&|v| v["v"] = 2.into())),
        ("invalid", json(&|v| v["device_id"] = "../../etc".into())),
        ("invalid", json(&|v| v["cid"] = "hello".into())),
        (
            "invalid",
            json(&|v| v["filename"] = "cam1/S/seg.exe".into()),
        ),
        (
            "invalid",
            json(&|v| v["end"] = "2001-01-01T00:00:00Z".into()),
        ),
        ("not_mirrored", json(&|v| v["device_id"] = "cam5".into())),
        ("duplicate", serde_json::to_vec(&good).unwrap()),
        (
            "too_old",
            json(&|v| {
                v["start"] = three_days_ago.clone().into();
                v["end"] = three_days_ago.clone().into();
                v["session"] = "old".into();
            }),
        ),
        (
            "oversize",
            forged("forged-big", &real.cid.clone().unwrap(), 1 << 40),
        ),
        (
            "not_mpegts",
            forged("forged-html", &html_cid, html.len() as i64),
        ),
        ("cid_mismatch", forged("forged-v0", &v0, ts.len() as i64)),
        (
            "unresolvable",
            forged("forged-none", &raw_cid(b"nobody has this"), 188 * 10),
        ),
    ];
    let before = published(&origin.data).len();
    rt().block_on(async {
        for (_, data) in &corpus {
            a.pubsub_pub(TOPIC, data).await.unwrap();
        }
    });
    let mut want: HashMap<&str, u64> = HashMap::new();
    for (reason, _) in &corpus {
        *want.entry(reason).or_default() += 1;
    }
    wait_until(
        "every bad announcement counted",
        Duration::from_secs(60),
        || {
            let s = mirror_stats(&mirror);
            want.iter()
                .all(|(r, n)| s["stats"]["rejected"][*r].as_u64().unwrap_or(0) >= *n)
        },
    );
    // Real ones kept flowing meanwhile, and nothing forged was kept.
    wait_until("more real segments", Duration::from_secs(60), || {
        published(&origin.data).len() >= before + 3
    });
    caught_up(
        &origin,
        &mirror,
        "the mirror after the corpus",
        Duration::from_secs(60),
    );
    let sessions: Vec<String> = catalog(&mirror.data)
        .all("cam1")
        .unwrap()
        .into_iter()
        .map(|s| s.session)
        .collect();
    assert!(
        sessions
            .iter()
            .all(|s| !s.starts_with("forged") && s != "old"),
        "{sessions:?}"
    );
    assert!(
        !walk_names(&mirror.data)
            .iter()
            .any(|n| n.contains("forged"))
    );
    let s = mirror_stats(&mirror);
    figure(
        "storage",
        &format!(
            "bad announcements (test): {} sent, rejected by reason {}",
            corpus.len(),
            s["stats"]["rejected"]
        ),
    );
    drop((origin, mirror));
}

fn walk_names(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        out.push(p.display().to_string());
        if p.is_dir() {
            out.extend(walk_names(&p));
        }
    }
    out
}
