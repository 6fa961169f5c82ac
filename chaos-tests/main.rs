//! The fault-injection suite (`chaos-tests/`): scenarios on real processes (vigil, ffmpeg, the simulated
//! camera, Chromium) that inject faults at random moments, check the design's invariants afterwards and print
//! figures. Every scenario draws its moments from a seeded generator and prints the seed; a failure replays with
//! `VIGIL_CHAOS_SEED=<seed>`. The short mode (the default) runs inside the README's test command;
//! `VIGIL_CHAOS_LONG=1` runs the full counts (`chaos-tests/run.sh --long` also writes docs/reliability.md).
//!
//! Scenarios here so far:
//! 1. SIGKILL ffmpeg at random moments: one new session per kill, every join marked in the playlists, every
//!    byte ffmpeg wrote catalogued, no segment overwritten or duplicated, no zombie; recovery and footage lost
//!    per kill.
//! 8. hls.js in Chromium plays straight across every join scenario 1 produced.

#[path = "../tests/support/mod.rs"]
mod support;

mod invariants;
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
    let played = support::browser::browser_check(
        &format!(
            "http://{}/?camera=cam1&mode=vod&from={}&to={}",
            v.addr,
            rfc3339_ms(first.start_ms),
            rfc3339_ms(last.start_ms + last.duration_ms)
        ),
        // All but the last moments (a VOD ends where it ends), in one browser timeout (45 s).
        (span - 1.5).clamp(3.0, 40.0) as u32,
        &dir.path().join("joins.png"),
        &modules,
    );
    figure(
        "chaos",
        &format!(
            "hls.js across the {} joins of {span:.0} s of footage: {}",
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
