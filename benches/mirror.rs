//! The storage benchmark: an origin vigil records simulated cameras into js-ipfs node A and SecantusDB; a
//! mirror vigil on js-ipfs node B follows the pubsub topic. Prints (also to target/figures/storage.txt):
//!
//! - mirror lag, origin published → mirror catalogued (fetched, checked, pinned), p50/p99 over every segment
//!   announced after a warm-up, with 1 and with 8 cameras;
//! - backfill after a mirror outage (short: 2 min, long: 10 min) with 8 cameras: segments missed, time from
//!   the mirror's restart until it holds every segment the origin had published, and the rate.
//!
//! ```text
//! cargo bench --bench mirror -- [--short | --long]
//! ```
//!
//! Needs the test bed (testbed/install.sh: ffmpeg, the camera simulator, js-ipfs, SecantusDB).

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::bed::Bed;
use support::*;

const TOPIC: &str = "vigil-bench";

fn out(line: &str) {
    println!("{line}");
    figure("storage", line);
}

fn start(
    dir: &Path,
    id: &str,
    ipfs: &str,
    mongo: &str,
    cams: &[(&str, String)],
    remote: &str,
) -> (Vigil, PathBuf) {
    let data = dir.join(id);
    let top = format!(
        "[ipfs]\napi = \"{ipfs}\"\ntopic = \"{TOPIC}\"\ntimeout_seconds = 10\n\
         [index]\nmongodb_uri = \"{mongo}\"\ndatabase = \"vigil\"\n{remote}"
    );
    let text =
        config(&data, cams, &top).replace("node_id = \"test\"", &format!("node_id = \"{id}\""));
    let path = dir.join(format!("{id}.toml"));
    std::fs::write(&path, text).unwrap();
    (Vigil::start(&path), path)
}

/// `(camera, session, seq)` → a time in ms from a catalog column (`published_at_ms` on the origin,
/// `recorded_at_ms` — when the row was catalogued — on the mirror).
fn times(data: &Path, column: &str) -> HashMap<(String, String, i64), i64> {
    let path = data.join("catalog.sqlite");
    if !path.exists() {
        return HashMap::new();
    }
    let c =
        rusqlite::Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let mut st = c
        .prepare(&format!(
            "SELECT camera, session, seq, {column} FROM segments WHERE {column} IS NOT NULL"
        ))
        .unwrap();
    st.query_map([], |r| Ok(((r.get(0)?, r.get(1)?, r.get(2)?), r.get(3)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

fn pct(v: &mut [i64], p: f64) -> i64 {
    v.sort_unstable();
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn remote(cameras: usize) -> String {
    let mut s = String::from("[mirror]\nconcurrency = 8\n");
    for n in 1..=cameras {
        s += &format!("\n[[remote_cameras]]\nid = \"cam{n}\"\nfactory_id = \"factory-a\"\n");
    }
    s
}

/// A run: the bed, the cameras, the folder, the origin and the mirror (with its config), once the mirror
/// follows every camera.
struct Run {
    _bed: Bed,
    _cam: Camera,
    dir: tempfile::TempDir,
    _origin: Vigil,
    mirror: Vigil,
    mirror_config: PathBuf,
}

impl Run {
    fn start(cameras: usize) -> Run {
        let bed = Bed::start(&["ipfs-a", "ipfs-b", "mongo"]);
        let cam = Camera::start(cameras);
        let dir = tempfile::tempdir().unwrap();
        let cams: Vec<(String, String)> = (1..=cameras)
            .map(|n| (format!("cam{n}"), cam.url(n)))
            .collect();
        let cams: Vec<(&str, String)> = cams.iter().map(|(a, b)| (a.as_str(), b.clone())).collect();
        let (origin, _) = start(dir.path(), "origin", &bed.ipfs_a, &bed.mongo, &cams, "");
        let (mirror, mirror_config) = start(
            dir.path(),
            "mirror",
            &bed.ipfs_b,
            &bed.mongo,
            &[],
            &remote(cameras),
        );
        let m = dir.path().join("mirror");
        wait_until(
            "the mirror following every camera",
            Duration::from_secs(120),
            || {
                let t = times(&m, "recorded_at_ms");
                (1..=cameras).all(|n| t.keys().any(|k| k.0 == format!("cam{n}")))
            },
        );
        Run {
            _bed: bed,
            _cam: cam,
            dir,
            _origin: origin,
            mirror,
            mirror_config,
        }
    }

    fn origin(&self) -> PathBuf {
        self.dir.path().join("origin")
    }

    fn mirror_data(&self) -> PathBuf {
        self.dir.path().join("mirror")
    }
}

/// Lag with `cameras` cameras over `secs` seconds after a warm-up.
fn lag(cameras: usize, secs: u64) {
    let run = Run::start(cameras);
    let warm = chrono::Utc::now().timestamp_millis() + 5_000;
    std::thread::sleep(Duration::from_secs(secs));
    // Let the last announcements land.
    std::thread::sleep(Duration::from_secs(3));
    let published = times(&run.origin(), "published_at_ms");
    let mirrored = times(&run.mirror_data(), "recorded_at_ms");
    let mut lags: Vec<i64> = Vec::new();
    let mut missing = 0;
    for (k, p) in &published {
        if *p < warm || *p > warm + secs as i64 * 1000 - 5_000 {
            continue;
        }
        match mirrored.get(k) {
            Some(at) => lags.push(at - p),
            None => missing += 1,
        }
    }
    assert!(!lags.is_empty(), "no segment measured");
    let n = lags.len();
    out(&format!(
        "mirror lag, {cameras} camera(s), {secs} s: p50 {} ms, p99 {} ms, max {} ms over {n} segments ({missing} not mirrored within 3 s of the end)",
        pct(&mut lags, 0.5),
        pct(&mut lags, 0.99),
        pct(&mut lags, 1.0)
    ));
}

/// Backfill after the mirror was down `outage` seconds, 8 cameras.
fn backfill(outage: u64) {
    let cameras = 8;
    let mut run = Run::start(cameras);
    run.mirror.stop();
    std::thread::sleep(Duration::from_secs(outage));
    let want = times(&run.origin(), "published_at_ms");
    let have = times(&run.mirror_data(), "recorded_at_ms");
    let missed = want.keys().filter(|k| !have.contains_key(*k)).count();
    let t0 = Instant::now();
    run.mirror = Vigil::start(&run.mirror_config);
    let m = run.mirror_data();
    wait_until(
        "the mirror caught up",
        Duration::from_secs(outage * 3 + 120),
        || {
            let have = times(&m, "recorded_at_ms");
            want.keys().all(|k| have.contains_key(k))
        },
    );
    let took = t0.elapsed().as_secs_f64();
    out(&format!(
        "backfill after a {} min mirror outage, {cameras} cameras: {missed} segments missed, caught up {took:.1} s after the restart ({:.1} segments/s, while recording went on)",
        outage / 60,
        missed as f64 / took
    ));
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let long = args.iter().any(|a| a == "--long");
    out(&format!(
        "# vigil storage benchmark ({} mode)",
        if long { "long" } else { "short" }
    ));
    let secs = if long { 180 } else { 60 };
    lag(1, secs);
    lag(8, secs);
    backfill(if long { 600 } else { 120 });
}
