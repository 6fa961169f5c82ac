//! Scenario 5: the disk fills up. vigil records onto a small tmpfs (its data folder and catalog); at random
//! moments something else (a filler file, as a careless log or another program would) takes every free byte,
//! so ffmpeg's and SQLite's writes fail with ENOSPC. Recording must go on under retention — which may delete
//! only footage already distributed (pinned and indexed) while the disk is merely low — the filler is never
//! vigil's to delete, and the catalog must stay intact (`PRAGMA integrity_check`) with every byte on disk
//! catalogued. Before vigil kept a reserve (`[retention] reserve`), this scenario found a full disk locking
//! retention out for good: its first step is a catalog write, which SQLite refuses without one free block.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use mongodb::bson::{Document, doc};

use crate::support::bed::Bed;
use crate::support::*;

fn free_bytes(p: &Path) -> u64 {
    let s = nix::sys::statvfs::statvfs(p).unwrap();
    s.blocks_available() as u64 * s.fragment_size() as u64
}

/// Write `path` until the file system says ENOSPC; returns the bytes written.
fn fill(path: &Path) -> u64 {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0xA5u8; 64 * 1024];
    let mut n = 0u64;
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(k) => n += k as u64,
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    let _ = f.sync_all();
    n
}

fn index_docs(uri: &str, db: &str) -> Vec<Document> {
    rt().block_on(async {
        let client = mongodb::Client::with_uri_str(uri).await.unwrap();
        let c = client.database(db).collection::<Document>("segments");
        c.find(doc! {}).await.unwrap().try_collect().await.unwrap()
    })
}

#[test]
fn a_full_disk_never_stops_recording_deletes_only_distributed_footage_and_keeps_the_catalog_intact()
{
    let fills = if crate::long() { 10 } else { 2 };
    let mut rng = crate::rng::Rng::from_env("disk-full");
    let bed = Bed::start(&["ipfs-a", "mongo"]);
    let fs = Tmpfs::mount(24);
    let cam = Camera::start(1);
    let data = fs.path().join("data");
    let path = fs.path().join("vigil.toml");
    std::fs::write(
        &path,
        config(
            &data,
            &[("cam1", cam.url(1))],
            &format!(
                "[ipfs]\napi = \"{}\"\ntimeout_seconds = 10\n\
                 [index]\nmongodb_uri = \"{}\"\ndatabase = \"vigil_disk\"\n\
                 [retention]\nmin_free = \"15%\"\ncritical_free = \"2%\"\ncheck_seconds = 1\n",
                bed.ipfs_a, bed.mongo
            ),
        ),
    )
    .unwrap();
    let mut vigil = Vigil::start(&path);
    let c = catalog(&data);
    let mut recovered_s = Vec::new();
    let mut filled = Vec::new();
    for i in 0..fills {
        // Some distributed footage to make room with first (3 MB or more of segments), then a random moment.
        wait_until(
            &format!("fill {i}: footage to make room with"),
            Duration::from_secs(120),
            || c.total_bytes().unwrap() > 3_000_000,
        );
        std::thread::sleep(Duration::from_millis(rng.between(0, 4_000)));
        let filler = fs.path().join(format!("filler-{i}"));
        filled.push(fill(&filler));
        let full_at = Instant::now();
        let since = chrono::Utc::now().timestamp_millis();
        // Recording goes on: a segment that began after the disk was full is catalogued.
        let deadline = Instant::now() + Duration::from_secs(60);
        while c
            .latest("cam1")
            .unwrap()
            .is_none_or(|s| s.start_ms <= since)
        {
            if Instant::now() > deadline {
                let log = vigil.log();
                let tail: Vec<&str> = log.lines().rev().take(60).collect();
                panic!(
                    "fill {i}: not recording 60 s after the disk filled; {} KiB free; vigil's last lines:\n{}",
                    free_bytes(fs.path()) / 1024,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        recovered_s.push(full_at.elapsed().as_secs_f64());
        assert!(filler.exists(), "the filler is not vigil's to delete");
        // Room for the next round: the filler goes, as an operator would clean up.
        std::fs::remove_file(&filler).unwrap();
    }
    // The reserve vigil gave back when the disk filled is in place again.
    wait_until("the reserve is back", Duration::from_secs(30), || {
        std::fs::metadata(data.join(vigil::retention::RESERVE_FILE))
            .is_ok_and(|m| m.len() == 4 << 20)
    });
    assert!(
        vigil.log().contains("released vigil's reserve"),
        "the reserve was given back"
    );
    let free_after = free_bytes(fs.path());
    let critical = vigil.get("/metrics").text().lines().find_map(|l| {
        l.strip_prefix("vigil_retention_deleted_segments_total{reason=\"critical\"} ")
            .map(|v| v.trim().to_string())
    });
    let log = vigil.log();
    vigil.stop();
    // Nothing deleted for the critical floor's sake: no undistributed footage went.
    assert_eq!(
        critical.as_deref(),
        Some("0"),
        "segments deleted below the critical floor"
    );

    // What retention removed had been indexed (its document is there; a row is indexed only while it is not
    // being deleted).
    let rows = c.all("cam1").unwrap();
    let docs = index_docs(&bed.mongo, "vigil_disk");
    let held: HashMap<(String, i64), &vigil::catalog::Segment> = rows
        .iter()
        .map(|r| ((r.session.clone(), r.seq), r))
        .collect();
    let deleted: Vec<&Document> = docs
        .iter()
        .filter(|d| {
            !held.contains_key(&(
                d.get_str("session").unwrap().to_string(),
                d.get_i64("seq").unwrap(),
            ))
        })
        .collect();
    assert!(!deleted.is_empty(), "retention made no room");
    assert!(
        !log.contains("deleting footage that is not yet distributed"),
        "undistributed footage deleted:\n{log}"
    );
    let report = crate::invariants::capture(&data, "cam1");
    report.assert_clean();
    assert_eq!(c.integrity_check().unwrap(), "ok");
    recovered_s.sort_by(f64::total_cmp);
    figure(
        "chaos",
        &format!(
            "disk full ×{fills} on a 24 MiB file system (seed {}; a filler took every free byte, {} KiB at most): vigil gave back its reserve, recording went on, a segment begun after the disk filled catalogued p50 {:.2} s, max {:.2} s after; retention deleted {} segments, all distributed before; every byte on disk catalogued, catalog integrity ok, {} KiB free at the end",
            rng.seed(),
            filled.iter().max().unwrap() / 1024,
            crate::percentile(&recovered_s, 0.5),
            recovered_s.last().unwrap(),
            deleted.len(),
            free_after / 1024,
        ),
    );
}
