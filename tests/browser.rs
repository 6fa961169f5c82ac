//! hls.js in Debian's headless Chromium plays vigil's playlists: the live window, and a VOD range straight
//! across a session join (EXT-X-DISCONTINUITY) — invariant 3. Needs Chromium (testbed/install-browser.sh), Node
//! and the ui/ packages (testbed/npm-cache.sh); without them it FAILS.

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;
use support::*;

fn node_modules() -> PathBuf {
    if let Some(p) = std::env::var_os("VIGIL_UI_NODE_MODULES") {
        return PathBuf::from(p);
    }
    let out = Command::new("bash")
        .arg(repo().join("testbed/npm-cache.sh"))
        .output()
        .expect("run testbed/npm-cache.sh");
    assert!(
        out.status.success(),
        "testbed/npm-cache.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .expect("a path")
            .trim(),
    )
}

fn browser_check(
    url: &str,
    advance_s: u32,
    shot: &std::path::Path,
    modules: &std::path::Path,
) -> String {
    assert!(
        std::path::Path::new("/usr/bin/chromium").exists(),
        "Chromium is required: run testbed/install-browser.sh"
    );
    let out = Command::new("node")
        .arg(repo().join("testbed/browser-check.mjs"))
        .arg(url)
        .arg(shot)
        .env("VIGIL_UI_NODE_MODULES", modules)
        .env("VIGIL_BROWSER_ADVANCE", advance_s.to_string())
        .env("VIGIL_BROWSER_TIMEOUT", "45")
        .output()
        .expect("node is required");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "browser check of {url} failed:\n{text}"
    );
    text
}

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
