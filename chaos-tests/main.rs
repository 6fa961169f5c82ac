//! The fault-injection suite (`chaos-tests/`): scenarios on real processes (vigil, ffmpeg, the simulated
//! camera, Chromium) that inject faults at random moments, check the design's invariants afterwards and print
//! figures. Every scenario draws its moments from a seeded generator and prints the seed; a failure replays with
//! `VIGIL_CHAOS_SEED=<seed>`. The short mode (the default) runs inside the README's test command;
//! `VIGIL_CHAOS_LONG=1` runs the full counts (`chaos-tests/run.sh --long` also writes docs/reliability.md).
//!
//! Scenarios (the numbers of issue 12; 1, 2 and 8 here, the others in their modules):
//! 1. SIGKILL ffmpeg at random moments: one new session per kill, every join marked in the playlists, every
//!    byte ffmpeg wrote catalogued, no segment overwritten or duplicated, no zombie; recovery and footage lost
//!    per kill.
//! 2. A camera rebooted and frozen at random moments, then flapping every second, next to a steady camera and
//!    one with a wrong password: every fault recovered, the password reported (`auth_failed`) and never
//!    logged, the steady camera never restarted, no gap in it, the faulty camera's footage whole; a client
//!    allowed the steady camera only gets none of the others' playlists or segments (the scope invariant).
//! 3. (`deps.rs`) the IPFS node, the MongoDB index, RabbitMQ and a mirror down in turn: capture never stops,
//!    every backlog drains, the mirror catches up.
//! 4. (`crash.rs`) vigil SIGKILLed at random points: every segment catalogued, indexed and announced.
//! 5. (`disk.rs`) the disk filled up: recording goes on, only distributed footage deleted, catalog intact.
//! 6. (`clock.rs`) the wall clock steps ±1 h: playlists ordered and valid, nothing lost.
//! 7. (`net.rs`) packet loss, a 2 s delay and partitions between vigil and a camera.
//! 8. hls.js in Chromium plays straight across every join scenario 1 produced.

#[path = "../tests/support/mod.rs"]
mod support;

mod clock;
mod crash;
mod deps;
mod disk;
mod invariants;
mod net;
mod rng;

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use support::*;

/// Short (default) or long counts.
fn long() -> bool {
    std::env::var("VIGIL_CHAOS_LONG").is_ok_and(|v| v == "1")
}

fn ffmpeg_of(data: &Path, cam: &str) -> Option<i32> {
    ffmpeg_under(&data.join(cam))
        .into_iter()
        .find(|(_, _, s)| *s != 'Z')
        .map(|(p, _, _)| p)
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)]
}

#[test]
fn sigkill_ffmpeg_at_random_moments_loses_nothing_and_every_join_plays() {
    let kills = if long() { 100 } else { 6 };
    let mut rng = rng::Rng::from_env("sigkill-ffmpeg");
    let modules = support::browser::node_modules();
    let cam = Camera::start(1);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let path = dir.path().join("vigil.toml");
    let text = config(&data, &[("cam1", cam.url(1))], "").replace(
        "[http]\n",
        &format!(
            "[http]\nassets_dir = \"{}\"\n",
            modules.join("hls.js/dist").display()
        ),
    );
    std::fs::write(&path, text).unwrap();
    let mut vigil = Vigil::start(&path);
    let c = catalog(&data);
    wait_until("the first segment", Duration::from_secs(30), || {
        c.count(Some("cam1")).unwrap() >= 1
    });
    let mut recoveries = Vec::new();
    for i in 0..kills {
        // Anywhere in a segment: 0.3 to 4.7 s after the last restart's first segment.
        std::thread::sleep(Duration::from_millis(rng.between(300, 4_700)));
        let pid = wait_for(
            || ffmpeg_of(&data, "cam1"),
            Duration::from_secs(20),
            "ffmpeg running",
        );
        let sessions_before = sessions(&data, "cam1").len();
        let t = Instant::now();
        kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
        // Recovered: a new session has its first finished segment.
        wait_until(
            &format!("kill {i}: a segment of the next session"),
            Duration::from_secs(30),
            || {
                let s = sessions(&data, "cam1");
                s.len() > sessions_before
                    && c.all("cam1")
                        .unwrap()
                        .iter()
                        .any(|r| Some(&r.session) == s.last())
            },
        );
        recoveries.push(t.elapsed().as_secs_f64());
    }
    vigil.stop();
    let report = invariants::capture(&data, "cam1");
    assert_eq!(report.sessions, kills + 1, "{report:?}");
    assert_eq!(report.joins, kills, "one join per kill: {report:?}");
    report.assert_clean();
    wait_until("no zombie left", Duration::from_secs(3), || {
        zombies_of(vigil.pid()).is_empty()
    });
    recoveries.sort_by(f64::total_cmp);
    let lost = &report.gaps_s;
    figure(
        "chaos",
        &format!(
            "SIGKILL ffmpeg ×{kills} (seed {}): {} sessions, {} joins marked, {} bytes written and not catalogued, {} overwritten, {} duplicated, 0 zombies; recovery p50 {:.2} s, p99 {:.2} s; footage lost per kill p50 {:.2} s, max {:.2} s",
            rng.seed(),
            report.sessions,
            report.joins,
            report.uncatalogued_bytes,
            report.overwritten,
            report.duplicated,
            percentile(&recoveries, 0.5),
            percentile(&recoveries, 0.99),
            percentile(lost, 0.5),
            lost.last().copied().unwrap_or(0.0),
        ),
    );

    // 8. hls.js plays across every join: the whole range as VOD, through the player.
    let mut v = Vigil::start(&path);
    let rows = c.all("cam1").unwrap();
    let (first, last) = (&rows[0], &rows[rows.len() - 1]);
    // The player's timeline is the footage without the gaps between sessions.
    let span = rows.iter().map(|r| r.duration_ms).sum::<i64>() as f64 / 1000.0;
    // All of it, at a playback rate that fits it in half a minute (8× for the long mode's 100 joins).
    let rate = (span / 30.0).ceil().clamp(1.0, 16.0) as u32;
    let played = support::browser::browser_check_at(
        &format!(
            "http://{}/?camera=cam1&mode=vod&from={}&to={}",
            v.addr,
            rfc3339_ms(first.start_ms),
            rfc3339_ms(last.start_ms + last.duration_ms)
        ),
        // All but the last moments (a VOD ends where it ends).
        (span - 1.5).max(3.0) as u32,
        rate,
        (span / f64::from(rate)) as u32 + 40,
        &dir.path().join("joins.png"),
        &modules,
    );
    figure(
        "chaos",
        &format!(
            "hls.js across the {} joins of {span:.0} s of footage (playback rate {rate}): {}",
            report.joins,
            played
                .lines()
                .filter(|l| l.contains("currentTime advance") || l.contains("hls.js errors"))
                .collect::<Vec<_>>()
                .join("; ")
        ),
    );
    v.stop();
}

/// Poll `f` until it gives a value, within `within`.
fn wait_for<T>(mut f: impl FnMut() -> Option<T>, within: Duration, what: &str) -> T {
    let mut out = None;
    wait_until(what, within, || {
        out = f();
        out.is_some()
    });
    out.unwrap()
}

/// Start vigil on `path` and wait until each of `cams` has a catalogued segment.
fn start_recording(path: &Path, data: &Path, cams: &[&str]) -> (Vigil, vigil::catalog::Catalog) {
    let vigil = Vigil::start(path);
    let c = catalog(data);
    wait_until(&format!("{cams:?} record"), Duration::from_secs(30), || {
        cams.iter().all(|cam| c.count(Some(cam)).unwrap() >= 1)
    });
    (vigil, c)
}

/// Whether `cam` has a catalogued segment that started at or after `since_ms`.
fn started_since(c: &vigil::catalog::Catalog, cam: &str, since_ms: i64) -> bool {
    c.all(cam).unwrap().iter().any(|r| r.start_ms >= since_ms)
}

/// The state `/api/cameras` shows for `id`.
fn state_of(v: &Vigil, id: &str) -> String {
    let api: serde_json::Value = serde_json::from_str(&v.get("/api/cameras").text()).unwrap();
    api.as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .and_then(|c| c["state"].as_str())
        .unwrap_or("?")
        .to_string()
}

#[test]
fn camera_reboots_freezes_flapping_and_wrong_credentials_are_recovered_or_reported_and_others_untouched()
 {
    let (reboots, freezes, flap_s) = if long() { (20, 20, 300) } else { (3, 3, 20) };
    let mut rng = rng::Rng::from_env("camera-faults");
    // Each camera on its own simulator: rebooting one must not touch another.
    let mut faulty = Camera::start(1);
    let steady = Camera::start(1);
    let locked = Camera::start_with(1, &["--auth", "admin:right-pass-9876"]);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let path = dir.path().join("vigil.toml");
    let wrong = format!("rtsp://admin:wr0ngPassw0rd@127.0.0.1:{}/cam1", locked.port);
    std::fs::write(
        &path,
        config_with_auth(
            &data,
            &[
                ("faulty", faulty.url(1)),
                ("steady", steady.url(1)),
                ("locked", wrong),
            ],
            "",
        ),
    )
    .unwrap();
    // Logins on: an operator, and a client who may see the steady camera only (the scope invariant).
    vigil_cli(
        &path,
        &["user", "add", "ops", "--role", "admin", "--password-stdin"],
        "ops-pass-0123456\n",
    );
    vigil_cli(
        &path,
        &[
            "user",
            "add",
            "tenant",
            "--role",
            "client",
            "--camera",
            "steady",
            "--password-stdin",
        ],
        "tenant-pass-0123\n",
    );
    let (mut vigil, c) = start_recording(&path, &data, &["faulty", "steady"]);
    let ops = invariants::Login::new(&vigil.addr, "ops", "ops-pass-0123456");
    let tenant = invariants::Login::new(&vigil.addr, "tenant", "tenant-pass-0123");
    // Recovered: a segment that started after the fault ended.
    let recovered = |since_ms: i64| started_since(&c, "faulty", since_ms);
    let now_ms = || chrono::Utc::now().timestamp_millis();
    let mut reboot_s = Vec::new();
    for i in 0..reboots {
        std::thread::sleep(Duration::from_millis(rng.between(500, 4_500)));
        faulty.kill();
        std::thread::sleep(Duration::from_millis(rng.between(200, 3_000)));
        faulty.restart();
        let (t, back) = (Instant::now(), now_ms());
        wait_until(
            &format!("reboot {i}: recording again"),
            Duration::from_secs(30),
            || recovered(back),
        );
        reboot_s.push(t.elapsed().as_secs_f64());
    }
    let mut freeze_s = Vec::new();
    for i in 0..freezes {
        std::thread::sleep(Duration::from_millis(rng.between(500, 4_500)));
        faulty.freeze();
        std::thread::sleep(Duration::from_millis(rng.between(1_000, 8_000)));
        faulty.thaw();
        let (t, back) = (Instant::now(), now_ms());
        wait_until(
            &format!("freeze {i}: recording again"),
            Duration::from_secs(30),
            || recovered(back),
        );
        freeze_s.push(t.elapsed().as_secs_f64());
    }
    // Flapping: off and on every second.
    let flap_end = Instant::now() + Duration::from_secs(flap_s);
    while Instant::now() < flap_end {
        faulty.kill();
        std::thread::sleep(Duration::from_secs(1));
        faulty.restart();
        std::thread::sleep(Duration::from_secs(1));
    }
    let (t, back) = (Instant::now(), now_ms());
    wait_until(
        "recording again after the flapping",
        Duration::from_secs(60),
        || recovered(back),
    );
    let after_flap = t.elapsed().as_secs_f64();
    // The wrong password is reported, not retried in a storm; the steady camera never noticed.
    assert_eq!(ops.state_of("locked"), "auth_failed");
    assert_eq!(ops.state_of("steady"), "recording");
    assert_eq!(ops.state_of("faulty"), "recording");
    // No footage outside its owner's scope, after all that.
    let leaks = invariants::scope(&tenant, &ops, "steady", &["faulty", "locked"]);
    assert!(leaks.is_empty(), "{leaks:#?}");
    // The check sees a leak where there is one: the operator sees every camera.
    assert!(!invariants::scope(&ops, &ops, "steady", &["faulty"]).is_empty());
    assert_eq!(
        sessions(&data, "steady").len(),
        1,
        "the steady camera was never restarted"
    );
    vigil.stop();
    let log = vigil.seen.join("\n");
    assert!(!log.contains("wr0ngPassw0rd"), "a password reached the log");
    assert!(
        !log.contains("restart intensity exceeded"),
        "nothing escalated"
    );
    for cam in ["faulty", "steady"] {
        invariants::capture(&data, cam).assert_clean();
    }
    let steady_gaps = invariants::capture(&data, "steady").gaps_s;
    assert!(steady_gaps.is_empty(), "{steady_gaps:?}");
    wait_until("no zombie left", Duration::from_secs(3), || {
        zombies_of(vigil.pid()).is_empty()
    });
    reboot_s.sort_by(f64::total_cmp);
    freeze_s.sort_by(f64::total_cmp);
    figure(
        "chaos",
        &format!(
            "camera reboot ×{reboots}, freeze ×{freezes}, flapping every second for {flap_s} s (seed {}): all recovered — after a reboot p50 {:.2} s, p99 {:.2} s; after a freeze p50 {:.2} s, p99 {:.2} s; after the flapping {after_flap:.2} s; the camera with a wrong password reported auth_failed, the steady camera one session, no gap; a client scoped to the steady camera got none of the others' playlists or segments",
            rng.seed(),
            percentile(&reboot_s, 0.5),
            percentile(&reboot_s, 0.99),
            percentile(&freeze_s, 0.5),
            percentile(&freeze_s, 0.99),
        ),
    );
}
