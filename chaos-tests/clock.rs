//! Scenario 6: the wall clock steps ±1 h while vigil records.
//!
//! vigil (and the ffmpeg it runs) see a clock that steps: libfaketime, preloaded, reads a relative offset
//! (`+3600`, `-3600`) from a file the test rewrites (`FAKETIME_TIMESTAMP_FILE`, `FAKETIME_NO_CACHE`), with
//! monotonic clocks left alone (`FAKETIME_DONT_FAKE_MONOTONIC`: tokio's timers go on). libfaketime fakes
//! `clock_gettime` (so `SystemTime::now`) and `stat`/`fstat`, but not `statx`, which Rust's
//! `std::fs::metadata` uses: under libfaketime alone vigil would see the clock step while the files' birth
//! and write times (from the kernel's clock) do not, a world no real clock step makes. A 30-line shim
//! (compiled here with `cc`, preloaded before libfaketime) adds the same offset to what `statx` returns, so
//! that file times step with the clock, as they do when the box's clock really steps. One difference remains:
//! the shim adds the offset of the moment a file is looked at, so a file written before a step shows times
//! moved with it (a real step leaves them as written); a segment begun before a step and finished after it
//! is seen as if the step came before it. The slew absorbs either case. The library path is Debian's on
//! x86_64 (`testbed/install.sh chaos`).
//!
//! Every step happens in the middle of a session (absorbed by the timeline's slew), then ffmpeg is killed so
//! that a new session anchors in the stepped clock: after a forward step a gap, after a backward one a session
//! that must not start before the previous one ended. Afterwards: no segment lost, and the live, day and VOD
//! playlists vigil serves are RFC 8216-valid, list every catalogued segment once in recording order, their
//! PROGRAM-DATE-TIMEs never go backwards, and every session join carries a DISCONTINUITY.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use vigil::catalog::Segment;

use crate::support::*;
use crate::{ffmpeg_of, invariants, long, rng, wait_for};

const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

/// `statx` with the libfaketime offset (seconds, the first number in `FAKETIME_TIMESTAMP_FILE`) added to the
/// file times it returns.
const STATX_SHIM: &str = r#"
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

static long offset_s(void) {
    const char *p = getenv("FAKETIME_TIMESTAMP_FILE");
    FILE *f = p ? fopen(p, "re") : NULL;
    long o = 0;
    if (f) {
        if (fscanf(f, "%ld", &o) != 1) o = 0;
        fclose(f);
    }
    return o;
}

int statx(int dirfd, const char *path, int flags, unsigned int mask, struct statx *buf) {
    static int (*real)(int, const char *, int, unsigned int, struct statx *);
    if (!real) real = (int (*)(int, const char *, int, unsigned int, struct statx *))dlsym(RTLD_NEXT, "statx");
    int r = real(dirfd, path, flags, mask, buf);
    if (r == 0) {
        long o = offset_s();
        buf->stx_atime.tv_sec += o;
        buf->stx_btime.tv_sec += o;
        buf->stx_ctime.tv_sec += o;
        buf->stx_mtime.tv_sec += o;
    }
    return r;
}
"#;

/// Build the statx shim into `dir`.
fn build_shim(dir: &Path) -> String {
    let src = dir.join("statx_shim.c");
    let lib = dir.join("statx_shim.so");
    std::fs::write(&src, STATX_SHIM).unwrap();
    let out = Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&lib)
        .arg(&src)
        .arg("-ldl")
        .output()
        .expect("cc (the C compiler cargo links with)");
    assert!(
        out.status.success(),
        "building the statx shim: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    lib.display().to_string()
}

/// `[a, b, …]` with one decimal.
fn list(xs: impl Iterator<Item = f64>) -> String {
    format!(
        "[{}]",
        xs.map(|x| format!("{x:+.1}"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Set the clock's offset, seconds from the real time.
fn step_to(file: &Path, offset_s: i64) {
    // Written whole in one go (a rename), so that no reader sees an empty file.
    let tmp = file.with_extension("new");
    std::fs::write(&tmp, format!("{offset_s:+}\n")).unwrap();
    std::fs::rename(&tmp, file).unwrap();
}

/// The camera's segments in recording order (their live positions).
fn recorded(c: &vigil::catalog::Catalog) -> Vec<Segment> {
    let mut rows = c.all("cam1").unwrap();
    rows.sort_by_key(|r| r.lseq.unwrap_or(i64::MAX));
    rows
}

/// Checks a playlist vigil served against `expected` (catalogued segments, in recording order): valid RFC
/// 8216, exactly these segments in this order, a DISCONTINUITY at each session join, PROGRAM-DATE-TIMEs
/// where sessions start, equal to the catalogued start and never going backwards. Returns the parsed
/// playlist.
fn check(what: &str, text: &str, expected: &[Segment]) -> m3u8_rs::MediaPlaylist {
    let pl = m3u8_rs::parse_media_playlist_res(text.as_bytes())
        .unwrap_or_else(|e| panic!("{what} does not parse as RFC 8216: {e}\n{text}"));
    let uris: Vec<String> = pl.segments.iter().map(|s| s.uri.clone()).collect();
    let want: Vec<String> = expected.iter().map(vigil::playlists::uri).collect();
    assert_eq!(
        uris, want,
        "{what}: not every catalogued segment once, in recording order\n{text}"
    );
    let longest = pl.segments.iter().map(|s| s.duration).fold(0.0, f32::max);
    assert!(
        pl.target_duration as f32 >= longest.round(),
        "{what}: TARGETDURATION below an EXTINF\n{text}"
    );
    let mut last_pdt: Option<i64> = None;
    for (i, (s, row)) in pl.segments.iter().zip(expected).enumerate() {
        let join = i > 0 && row.session != expected[i - 1].session;
        if i > 0 {
            assert_eq!(
                s.discontinuity, join,
                "{what}: DISCONTINUITY at {} is {} (a join: {join})\n{text}",
                s.uri, s.discontinuity
            );
        }
        if let Some(pdt) = s.program_date_time {
            let ms = pdt.timestamp_millis();
            assert_eq!(
                ms, row.start_ms,
                "{what}: PROGRAM-DATE-TIME of {} is not its catalogued start\n{text}",
                s.uri
            );
            assert!(
                last_pdt.is_none_or(|l| ms >= l),
                "{what}: PROGRAM-DATE-TIME goes backwards at {}\n{text}",
                s.uri
            );
            last_pdt = Some(ms);
        } else {
            assert!(
                !join && i > 0,
                "{what}: no PROGRAM-DATE-TIME where a session starts ({})\n{text}",
                s.uri
            );
        }
    }
    pl
}

/// Media sequence and discontinuity sequence of a playlist whose first segment is `first`: counted in the
/// whole recording for live and today's playlists, from 0 for a VOD (ENDLIST).
fn check_counters(what: &str, pl: &m3u8_rs::MediaPlaylist, first: &Segment, all: &[Segment]) {
    if pl.end_list {
        assert_eq!(
            (pl.media_sequence, pl.discontinuity_sequence),
            (0, 0),
            "{what}: a VOD counts from 0"
        );
        return;
    }
    let pos = all.iter().position(|r| r.id == first.id).unwrap();
    assert_eq!(
        pl.media_sequence, pos as u64,
        "{what}: MEDIA-SEQUENCE is not the first segment's position in the recording"
    );
    // Joins before the first segment (its own, if any, is carried by its DISCONTINUITY tag).
    let joins_before = all[..pos]
        .windows(2)
        .filter(|w| w[0].session != w[1].session)
        .count()
        + usize::from(
            pos > 0 && all[pos - 1].session != first.session && !pl.segments[0].discontinuity,
        );
    assert_eq!(
        pl.discontinuity_sequence, joins_before as u64,
        "{what}: DISCONTINUITY-SEQUENCE"
    );
}

#[test]
fn wall_clock_steps_of_an_hour_keep_playlists_ordered_and_lose_nothing() {
    let mut rng = rng::Rng::from_env("clock-steps");
    assert!(
        Path::new(LIBFAKETIME).exists(),
        "libfaketime is required: run testbed/install.sh"
    );
    // Each step is a clock offset (s) set in the middle of a session, then ffmpeg is killed so that the next
    // session starts in the stepped clock: forward, back, and back below where recording started.
    let mut offsets: Vec<i64> = vec![3600, 0, -3600];
    if long() {
        for _ in 0..9 {
            let last = *offsets.last().unwrap();
            let next = loop {
                let o = [-3600, 0, 3600][rng.between(0, 2) as usize];
                if o != last {
                    break o;
                }
            };
            offsets.push(next);
        }
    }
    let cam = Camera::start(1);
    let dir = tempfile::tempdir().unwrap();
    let shim = build_shim(dir.path());
    let data = dir.path().join("data");
    let path = dir.path().join("vigil.toml");
    let offset_file = dir.path().join("faketime.rc");
    step_to(&offset_file, 0);
    std::fs::write(
        &path,
        config(&data, &[("cam1", cam.url(1))], "")
            .replace("[http]\n", "[http]\ntimezone = \"UTC\"\n"),
    )
    .unwrap();
    let preload = format!("{shim} {LIBFAKETIME}");
    let offset_path = offset_file.display().to_string();
    let mut vigil = Vigil::start_with_env(
        &path,
        &[
            ("LD_PRELOAD", &preload),
            ("FAKETIME_TIMESTAMP_FILE", &offset_path),
            ("FAKETIME_NO_CACHE", "1"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
    );
    vigil.wait_listening();
    let c = catalog(&data);
    wait_until("the first segment", Duration::from_secs(30), || {
        c.count(Some("cam1")).unwrap() >= 1
    });
    let mut clock = 0;
    let mut held = 0;
    // The clock offset each session ran under (the first: none; each next one: the step before it).
    let clocks: Vec<i64> = std::iter::once(0).chain(offsets.iter().copied()).collect();
    for (i, &offset) in offsets.iter().enumerate() {
        // Somewhere in a segment of the current session, the clock steps.
        std::thread::sleep(Duration::from_millis(rng.between(300, 3_700)));
        let session = sessions(&data, "cam1").len();
        let n = c.count(Some("cam1")).unwrap();
        step_to(&offset_file, offset);
        // The session goes on across the step: two more segments of it.
        wait_until(
            &format!("step {i} ({clock:+} s → {offset:+} s): recording goes on"),
            Duration::from_secs(20),
            || c.count(Some("cam1")).unwrap() >= n + 2,
        );
        assert_eq!(
            sessions(&data, "cam1").len(),
            session,
            "step {i}: a clock step restarted ffmpeg"
        );
        // A new session starts in the stepped clock.
        let pid = wait_for(
            || ffmpeg_of(&data, "cam1"),
            Duration::from_secs(20),
            "ffmpeg running",
        );
        let before = recorded(&c).last().unwrap().session.clone();
        kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
        wait_until(
            &format!("step {i}: a segment of the next session"),
            Duration::from_secs(30),
            || recorded(&c).last().is_some_and(|r| r.session != before),
        );
        if offset < clock {
            held += 1;
            let warned = "the wall clock went back by about";
            wait_until(
                &format!("step {i}: the backward step is reported"),
                Duration::from_secs(5),
                || vigil.log().matches(warned).count() >= held,
            );
        }
        clock = offset;
    }
    // The camera goes away: the last session ends and the catalog stops changing.
    drop(cam);
    let last = recorded(&c).last().unwrap().session.clone();
    wait_until(
        "the last session is finished",
        Duration::from_secs(30),
        || c.session_closed("cam1", &last).unwrap() == Some(true),
    );
    let rows = recorded(&c);
    assert!(rows.iter().all(|r| r.lseq.is_some()), "{rows:#?}");

    let t0 = rows[0].start_ms;
    let summary = rows
        .iter()
        .map(|r| {
            format!(
                "{} #{} +{:.3} s ({:.3} s)",
                r.session,
                r.seq,
                (r.start_ms - t0) as f64 / 1000.0,
                r.duration_ms as f64 / 1000.0
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    eprintln!("recorded, in recording order (start from the first):\n{summary}");
    // The catalog in recording order: times never go backwards, no session overlaps the one before.
    for w in rows.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        if a.session == b.session {
            assert!(
                b.start_ms >= a.start_ms,
                "time goes back inside a session: {a:?} {b:?}"
            );
        } else {
            assert!(
                b.start_ms >= a.start_ms + a.duration_ms,
                "session {} starts before {} ended: {a:?} {b:?}",
                b.session,
                a.session
            );
        }
    }

    // The playlists vigil serves.
    let get = |what: &str, p: &str| {
        let r = vigil.get(p);
        assert_eq!(r.status, 200, "{what}: {}", r.text());
        r.text()
    };
    let live = get("live", "/cameras/cam1/live.m3u8");
    let window = m3u8_rs::parse_media_playlist_res(live.as_bytes()).map_or(0, |p| p.segments.len());
    let tail = &rows[rows.len() - window.max(1)..];
    let pl = check("live.m3u8", &live, tail);
    check_counters("live.m3u8", &pl, &tail[0], &rows);
    let (first, end) = (&rows[0], rows.last().unwrap());
    let vod = get(
        "VOD",
        &format!(
            "/cameras/cam1/vod.m3u8?from={}&to={}",
            rfc3339_ms(first.start_ms),
            rfc3339_ms(end.start_ms + end.duration_ms)
        ),
    );
    let pl = check("vod.m3u8 of everything", &vod, &rows);
    assert!(pl.end_list, "a VOD ends");
    let joins = pl.segments.iter().filter(|s| s.discontinuity).count();
    let day = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .unwrap()
            .format("%Y-%m-%d")
            .to_string()
    };
    let days: BTreeSet<String> = rows.iter().map(|r| day(r.start_ms)).collect();
    let mut listed = 0;
    for d in &days {
        let text = get("day", &format!("/cameras/cam1/day.m3u8?date={d}"));
        let of_day: Vec<Segment> = rows
            .iter()
            .filter(|r| day(r.start_ms) == *d)
            .cloned()
            .collect();
        let what = format!("day.m3u8?date={d}");
        let pl = check(&what, &text, &of_day);
        check_counters(&what, &pl, &of_day[0], &rows);
        listed += pl.segments.len();
    }
    assert_eq!(listed, rows.len(), "the day playlists list every segment");
    let current = get("current day", "/cameras/cam1/day.m3u8");
    m3u8_rs::parse_media_playlist_res(current.as_bytes())
        .unwrap_or_else(|e| panic!("day.m3u8 does not parse: {e}\n{current}"));

    // Footage time shift per session: catalogued start against the file's real birth time (this process
    // reads the kernel's clock, not the faked one).
    let mut shifts = Vec::new();
    for r in rows.iter().filter(|r| r.first_in_session || r.seq <= 1) {
        if shifts
            .last()
            .is_some_and(|(s, _): &(String, f64)| *s == r.session)
        {
            continue;
        }
        let born = std::fs::metadata(data.join(&r.path))
            .and_then(|m| m.created())
            .unwrap();
        let born_ms = chrono::DateTime::<chrono::Utc>::from(born).timestamp_millis();
        shifts.push((r.session.clone(), (r.start_ms - born_ms) as f64 / 1000.0));
    }

    vigil.stop();
    let log = vigil.log();
    let report = invariants::capture(&data, "cam1");
    report.assert_clean();
    assert_eq!(report.sessions, offsets.len() + 1, "{report:?}");
    assert_eq!(report.joins, offsets.len(), "{report:?}");
    assert_eq!(joins, offsets.len(), "the served VOD marks every join");
    // Each backward step is reported by the session started after it, and by the one it fell into if that one
    // was still settling its anchor.
    let warnings = log.matches("the wall clock went back by about").count();
    assert!(
        (held..=2 * held).contains(&warnings),
        "{warnings} warnings for {held} backward steps"
    );
    figure(
        "chaos",
        &format!(
            "wall clock steps ×{} of ±1 h (offsets {:?} s, seed {}), each inside a session then across an ffmpeg restart: {} segments in {} sessions recorded, 0 lost, live/day/VOD playlists RFC 8216-valid, in recording order, PROGRAM-DATE-TIME never backwards, {} joins marked; {held} backward steps held (the new session starts where the previous ended; {warnings} warnings); footage stamped minus true time per session (s): {}; minus the box's stepped clock: {}",
            offsets.len(),
            offsets,
            rng.seed(),
            rows.len(),
            report.sessions,
            report.joins,
            list(shifts.iter().map(|(_, s)| *s)),
            list(shifts.iter().zip(&clocks).map(|((_, s), c)| s - *c as f64)),
        ),
    );
}
