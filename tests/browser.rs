//! hls.js in Debian's headless Chromium plays vigil's playlists: the live window, and a VOD range straight
//! across a session join (EXT-X-DISCONTINUITY) — invariant 3. Needs Chromium (testbed/install-browser.sh), Node
//! and the ui/ packages (testbed/npm-cache.sh); without them it FAILS.

mod support;

use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;
use support::browser::{browser_check, node_modules, node_script};
use support::*;

#[test]
fn hls_js_plays_live_and_straight_across_a_session_join() {
    let modules = node_modules();
    let cam = Camera::start(1);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let extra = format!(
        "[http]\nassets_dir = \"{}\"\n",
        modules.join("hls.js/dist").display()
    );
    let path = dir.path().join("vigil.toml");
    // [http] is written by config(); put assets_dir into it.
    let body = config(&data, &[("cam1", cam.url(1))], "").replace("[http]\n", &extra);
    std::fs::write(&path, body).unwrap();
    let mut vigil = Vigil::start(&path);
    wait_until("3 segments", Duration::from_secs(30), || {
        catalog(&data).all("cam1").unwrap().len() >= 3
    });

    let live = browser_check(
        &format!("http://{}/?camera=cam1", vigil.addr),
        4,
        &dir.path().join("live.png"),
        &modules,
    );
    figure(
        "browser",
        &format!(
            "live: {}",
            live.lines()
                .filter(|l| l.contains("first frame") || l.contains("currentTime advance"))
                .collect::<Vec<_>>()
                .join("; ")
        ),
    );

    // Make a join: kill ffmpeg; the next run records into a new session.
    let first_session = catalog(&data).all("cam1").unwrap()[0].session.clone();
    let ffmpeg = ffmpeg_under(&data.join("cam1"))
        .into_iter()
        .find(|p| p.2 != 'Z')
        .unwrap()
        .0;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(ffmpeg), Signal::SIGKILL).unwrap();
    wait_until("3 segments after the join", Duration::from_secs(30), || {
        catalog(&data)
            .all("cam1")
            .unwrap()
            .iter()
            .filter(|s| s.session != first_session)
            .count()
            >= 3
    });
    let rows = catalog(&data).all("cam1").unwrap();
    let before_join: f64 = rows
        .iter()
        .filter(|s| s.session == first_session)
        .map(|s| s.duration_ms as f64 / 1000.0)
        .sum();
    let fmt = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };
    let last = rows.last().unwrap();
    let url = format!(
        "http://{}/?camera=cam1&mode=vod&from={}&to={}",
        vigil.addr,
        fmt(rows[0].start_ms),
        fmt(last.start_ms + last.duration_ms)
    );
    // Play past the join: everything before it plus 2 s of the new session.
    let advance = before_join.ceil() as u32 + 2;
    let vod = browser_check(&url, advance, &dir.path().join("vod.png"), &modules);
    figure(
        "browser",
        &format!(
            "VOD across a session join ({before_join:.1} s before it, played {advance} s): {}",
            vod.lines()
                .filter(|l| l.contains("currentTime advance") || l.contains("hls.js errors"))
                .collect::<Vec<_>>()
                .join("; ")
        ),
    );
    vigil.stop();
}

/// Records `n` synthetic 2 s segments (the camera's format: 640x360@15, H.264, a keyframe a second) as a closed
/// session of `camera` that started at `start_ms`, straight into the catalog: minutes of history to scrub back
/// through without waiting minutes.
fn seed_session(data: &std::path::Path, camera: &str, factory: &str, start_ms: i64, n: usize) {
    let name = chrono::DateTime::from_timestamp_millis(start_ms)
        .unwrap()
        .format("%Y%m%dT%H%M%S%3fZ")
        .to_string();
    let dir = data.join(camera).join(&name);
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-f", "lavfi", "-i"])
        .arg(format!("testsrc2=size=640x360:rate=15:duration={}", n * 2))
        .args([
            "-c:v",
            "libx264",
            "-profile:v",
            "baseline",
            "-pix_fmt",
            "yuv420p",
            "-g",
            "15",
            "-preset",
            "ultrafast",
            "-f",
            "segment",
            "-segment_time",
            "2",
            "-segment_format",
            "mpegts",
        ])
        .arg(dir.join("seg_%05d.ts"))
        .output()
        .expect("ffmpeg");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let c = catalog(data);
    c.open_session(camera, &name).unwrap();
    let rows: Vec<vigil::catalog::NewSegment> = (0..n)
        .map(|seq| {
            let path = format!("{camera}/{name}/seg_{seq:05}.ts");
            vigil::catalog::NewSegment {
                camera: camera.into(),
                factory: factory.into(),
                session: name.clone(),
                seq: seq as i64,
                bytes: std::fs::metadata(data.join(&path)).unwrap().len() as i64,
                path,
                start_ms: start_ms + seq as i64 * 2000,
                duration_ms: 2000,
                first_in_session: seq == 0,
            }
        })
        .collect();
    c.insert_many(&rows).unwrap();
    c.close_session(camera, &name).unwrap();
}

#[test]
fn a_client_logs_in_sees_its_cameras_scrubs_back_replays_across_a_join_and_switches() {
    let modules = node_modules();
    let cam = Camera::start(3);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    // Seven minutes of history on cam1, up to now: two sessions back to back, joined 4 minutes ago, so that
    // scrubbing back 3 minutes lands in recorded footage and a replay can span the join.
    let now = chrono::Utc::now().timestamp_millis();
    let joined_at = now - 240_000;
    seed_session(&data, "cam1", "factory-a", joined_at - 180_000, 90);
    seed_session(&data, "cam1", "factory-a", joined_at, 120);
    let mut body = config_with_auth(
        &data,
        &[
            ("cam1", cam.url(1)),
            ("cam2", cam.url(2)),
            ("cam3", cam.url(3)),
        ],
        "",
    )
    .replace(
        "[http]\n",
        &format!(
            "[http]\nassets_dir = \"{}\"\n",
            modules.join("hls.js/dist").display()
        ),
    );
    let i = body.rfind("factory_id = \"factory-a\"").unwrap();
    body.replace_range(i..i + 24, "factory_id = \"factory-b\"");
    let path = dir.path().join("vigil.toml");
    std::fs::write(&path, body).unwrap();
    let added = vigil_cli(
        &path,
        &[
            "user",
            "add",
            "carol",
            "--role",
            "client",
            "--factory",
            "factory-a",
        ],
        "",
    );
    // "added client user carol; password (shown once): <password>"
    let password = added.split_whitespace().last().unwrap().to_string();
    let mut vigil = Vigil::start(&path);
    wait_until(
        "live footage of cam1 and cam2",
        Duration::from_secs(30),
        || {
            let c = catalog(&data);
            c.live_window("cam1", 3)
                .unwrap()
                .iter()
                .any(|s| s.start_ms > now)
                && c.count(Some("cam2")).unwrap() >= 2
        },
    );
    let fmt = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    let shot = repo().join("target/artifacts/ui.png");
    std::fs::create_dir_all(shot.parent().unwrap()).unwrap();
    let (ok, text) = node_script(
        "ui-check.mjs",
        &[
            format!("http://{}", vigil.addr).into(),
            "carol".into(),
            password.clone().into(),
            "cam1,cam2".into(),
            shot.clone().into(),
            // 20 s before the join to 10 s after it.
            fmt(joined_at - 20_000).into(),
            fmt(joined_at + 10_000).into(),
        ],
        &modules,
        &[],
    );
    assert!(ok, "ui-check failed:\n{text}\nvigil log:\n{}", vigil.log());
    assert!(shot.exists(), "no screenshot");
    let figures: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("[ui-check] figure "))
        .collect();
    figure(
        "browser",
        &format!("viewer as a client: {}", figures.join(", ")),
    );
    figure("browser", &format!("viewer screenshot: {}", shot.display()));
    // The password never reached the log.
    assert!(!vigil.log().contains(&password));
    vigil.stop();
}
