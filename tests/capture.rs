//! The capture path on real parts: ffmpeg recording the GStreamer camera simulator into session folders, the
//! catalog matching the files, session joins marked in every playlist, and recovery from a killed ffmpeg, a
//! rebooted, frozen or long-gone camera, a dead camera next to good ones, and a SIGKILLed vigil — with no
//! ffmpeg or zombie left behind. Recovery figures go to target/figures/recovery.txt.

mod support;

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::Signal;
use support::*;

fn start_vigil(dir: &Path, cameras: &[(&str, String)], extra: &str) -> Vigil {
    let path = dir.join("vigil.toml");
    std::fs::write(&path, config(&dir.join("data"), cameras, extra)).unwrap();
    Vigil::start(&path)
}

fn segments(data: &Path, cam: &str) -> Vec<vigil::catalog::Segment> {
    catalog(data).all(cam).unwrap()
}

fn wait_segments(data: &Path, cam: &str, n: usize, within: Duration) {
    wait_until(&format!("{n} segments of {cam} catalogued"), within, || {
        segments(data, cam).len() >= n
    });
}

fn no_ffmpeg_left(data: &Path) {
    wait_until(
        "no ffmpeg left writing under the data folder",
        Duration::from_secs(5),
        || ffmpeg_under(data).iter().all(|(_, _, s)| *s == 'Z') && ffmpeg_under(data).is_empty(),
    );
}

#[test]
fn records_segments_whose_catalogue_matches_the_files_and_serves_them() {
    let cam = Camera::start(2);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut vigil = start_vigil(
        dir.path(),
        &[("cam1", cam.url(1)), ("cam2", cam.url(2))],
        "",
    );
    wait_segments(&data, "cam1", 5, Duration::from_secs(30));
    wait_segments(&data, "cam2", 3, Duration::from_secs(10));

    let rows = segments(&data, "cam1");
    for (i, s) in rows.iter().enumerate() {
        let file = data.join(&s.path);
        let meta = std::fs::metadata(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert_eq!(meta.len() as i64, s.bytes, "bytes of {}", s.path);
        let probed = ffprobe_duration(file.to_str().unwrap());
        assert!(
            (probed - s.duration_ms as f64 / 1000.0).abs() < 0.15,
            "{}: ffprobe {probed} s vs catalogue {} ms",
            s.path,
            s.duration_ms
        );
        assert_eq!(s.first_in_session, i == 0, "first_in_session of {}", s.path);
        assert_eq!(s.factory, "factory-a");
        if i > 0 {
            let prev = &rows[i - 1];
            let gap = s.start_ms - (prev.start_ms + prev.duration_ms);
            assert!(
                gap.abs() <= 150,
                "segment {} starts {gap} ms off the end of the previous one",
                s.seq
            );
        }
    }
    // The segments are on disk as ffmpeg's segment list names them, and the list is all there is to read.
    let session = &rows[0].session;
    let list =
        std::fs::read_to_string(data.join("cam1").join(session).join("segments.csv")).unwrap();
    assert!(list.lines().count() >= rows.len() - 1, "{list}");
    assert!(
        !data.join("cam1").join(session).join("index.m3u8").exists(),
        "no ffmpeg playlist rewritten per segment"
    );
    let now_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let last = rows.last().unwrap();
    assert!(
        (now_ms - last.start_ms).abs() < 15_000,
        "start times are wall-clock times"
    );
    assert_eq!(sessions(&data, "cam1").len(), 1);

    // HTTP: playlists and segments, with the right types, resolved through the catalogue only.
    let live = vigil.get("/cameras/cam1/live.m3u8");
    assert_eq!(live.status, 200);
    assert_eq!(
        live.header("content-type").as_deref(),
        Some("application/vnd.apple.mpegurl")
    );
    let text = live.text();
    let pl = m3u8_rs::parse_media_playlist_res(text.as_bytes()).expect("live playlist parses");
    assert!(!pl.segments.is_empty());
    assert!(
        pl.playlist_type.is_none(),
        "live playlists have no PLAYLIST-TYPE"
    );
    let uri = &pl.segments[0].uri;
    let seg = vigil.get(&format!("/cameras/cam1/{uri}"));
    assert_eq!(seg.status, 200);
    assert_eq!(seg.header("content-type").as_deref(), Some("video/mp2t"));
    let id: i64 = uri
        .trim_start_matches("segments/")
        .trim_end_matches(".ts")
        .parse()
        .unwrap();
    let row = rows
        .iter()
        .find(|r| r.id == id)
        .expect("served segment is catalogued");
    let file = std::fs::read(data.join(&row.path)).unwrap();
    assert_eq!(seg.body, file);
    // Again (from the server's memory now), revalidated (304), and a byte range (206).
    let path = format!("/cameras/cam1/{uri}");
    assert_eq!(vigil.get(&path).body, file);
    let etag = seg.header("etag").expect("an ETag");
    let same = http(&vigil.addr, "GET", &path, &[("If-None-Match", &etag)], b"");
    assert_eq!(same.status, 304);
    let part = http(
        &vigil.addr,
        "GET",
        &path,
        &[("Range", "bytes=188-375")],
        b"",
    );
    assert_eq!(part.status, 206);
    assert_eq!(part.body, file[188..376]);
    // Today by its date: an EVENT playlist; without a date it follows the days (sliding at midnight).
    let today = jiff::Zoned::now().date();
    let day = vigil
        .get(&format!("/cameras/cam1/day.m3u8?date={today}"))
        .text();
    assert!(
        day.contains("#EXT-X-PLAYLIST-TYPE:EVENT") && !day.contains("#EXT-X-ENDLIST"),
        "{day}"
    );
    let undated = vigil.get("/cameras/cam1/day.m3u8").text();
    assert!(
        !undated.contains("#EXT-X-PLAYLIST-TYPE") && !undated.contains("#EXT-X-ENDLIST"),
        "{undated}"
    );
    assert_eq!(vigil.get("/cameras/cam9/live.m3u8").status, 404);
    for bad in [
        "/cameras/cam1/segments/999999.ts",
        "/cameras/cam2/segments/{id}.ts", // cam1's id under cam2: ids are scoped to their camera
        "/cameras/cam1/segments/..%2F..%2F..%2Fetc%2Fpasswd",
        "/cameras/cam1/segments/../../catalog.sqlite",
        "/cameras/cam1/segments/%2e%2e%2fcatalog.sqlite",
    ] {
        let path = bad.replace("{id}", &id.to_string());
        let r = vigil.get(&path);
        assert_eq!(
            r.status,
            404,
            "{path} must be 404, got {} {}",
            r.status,
            r.text()
        );
    }
    assert_eq!(
        vigil
            .get("/cameras/cam1/vod.m3u8?from=yesterday&to=now")
            .status,
        400
    );
    assert_eq!(
        vigil
            .get("/cameras/cam1/vod.m3u8?from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z")
            .status,
        400
    );
    assert_eq!(
        vigil.get("/cameras/cam1/day.m3u8?date=21-11-2026").status,
        400
    );

    let pid = vigil.pid();
    vigil.stop();
    assert!(zombies_of(pid).is_empty());
    no_ffmpeg_left(&data);
}

/// The ffmpeg currently recording `cam` (pid).
fn ffmpeg_of(data: &Path, cam: &str) -> Option<i32> {
    ffmpeg_under(&data.join(cam))
        .into_iter()
        .find(|(_, _, s)| *s != 'Z')
        .map(|(p, _, _)| p)
}

fn snapshot(dir: &Path) -> BTreeMap<String, (u64, SystemTime)> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".ts"))
        .map(|e| {
            let m = e.metadata().unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                (m.len(), m.modified().unwrap()),
            )
        })
        .collect()
}

#[test]
fn a_killed_ffmpeg_starts_a_new_session_and_every_playlist_marks_the_join() {
    let cam = Camera::start(1);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut vigil = start_vigil(
        dir.path(),
        &[("cam1", cam.url(1))],
        "[capture]\nlive_window = 3\n",
    );
    wait_segments(&data, "cam1", 3, Duration::from_secs(30));
    let old_session = sessions(&data, "cam1")[0].clone();
    let before = snapshot(&data.join("cam1").join(&old_session));
    let pid = ffmpeg_of(&data, "cam1").expect("ffmpeg runs");

    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    let t = wait_until(
        "a segment of a new session",
        Duration::from_secs(20),
        || {
            segments(&data, "cam1")
                .iter()
                .any(|s| s.session != old_session)
        },
    );
    figure(
        "recovery",
        &format!(
            "ffmpeg SIGKILL → next finished segment: {:.2} s",
            t.as_secs_f64()
        ),
    );
    // Reaped: a zombie may exist for the moment between the kill and vigil's wait, never longer.
    wait_until("the killed ffmpeg reaped", Duration::from_secs(3), || {
        zombies_of(vigil.pid()).is_empty()
    });
    let restart_log = vigil.expect_line("restarting child in", Duration::from_secs(1));
    assert!(
        restart_log.contains("child=ffmpeg") && restart_log.contains("signal: 9"),
        "{restart_log}"
    );
    // The killed run had recorded: the restart is immediate.
    assert!(
        restart_log.contains("attempt=1") && restart_log.contains("delay_ms=0 "),
        "{restart_log}"
    );
    // The segment ffmpeg was writing when it died is catalogued as the old session's last, and plays.
    let old_rows: Vec<_> = segments(&data, "cam1")
        .into_iter()
        .filter(|s| s.session == old_session)
        .collect();
    let listed = std::fs::read_to_string(data.join("cam1").join(&old_session).join("segments.csv"))
        .unwrap()
        .lines()
        .count();
    assert_eq!(
        old_rows.len(),
        listed + 1,
        "the partial segment is catalogued too"
    );
    let partial = old_rows.last().unwrap();
    let probed = ffprobe_duration(data.join(&partial.path).to_str().unwrap());
    assert!(
        probed > 0.0 && (probed - partial.duration_ms as f64 / 1000.0).abs() < 0.1,
        "partial segment: ffprobe {probed} s, catalogue {} ms",
        partial.duration_ms
    );
    figure(
        "recovery",
        &format!(
            "ffmpeg SIGKILL → partial segment kept: {:.2} s of footage",
            probed
        ),
    );
    let new_sessions = sessions(&data, "cam1");
    assert_eq!(
        new_sessions.len(),
        2,
        "one new session folder: {new_sessions:?}"
    );
    assert_ne!(new_sessions[1], old_session);

    // While the join is in the live window: DISCONTINUITY before the new session's first segment.
    let live = vigil.get("/cameras/cam1/live.m3u8").text();
    let first_new = segments(&data, "cam1")
        .into_iter()
        .find(|s| s.session != old_session)
        .unwrap();
    let uri = format!("segments/{}.ts", first_new.id);
    if live.contains(&uri) {
        let lines: Vec<&str> = live.lines().collect();
        let at = lines.iter().position(|l| *l == uri).unwrap();
        assert!(
            lines[..at]
                .iter()
                .rev()
                .take(3)
                .any(|l| *l == "#EXT-X-DISCONTINUITY"),
            "{live}"
        );
        assert!(
            lines[..at]
                .iter()
                .rev()
                .take(3)
                .any(|l| l.starts_with("#EXT-X-PROGRAM-DATE-TIME:")),
            "{live}"
        );
        assert!(live.contains("#EXT-X-DISCONTINUITY-SEQUENCE:0"), "{live}");
    }
    let day = vigil.get("/cameras/cam1/day.m3u8").text();
    assert_eq!(day.matches("#EXT-X-DISCONTINUITY\n").count(), 1, "{day}");
    assert_eq!(day.matches("#EXT-X-PROGRAM-DATE-TIME:").count(), 2, "{day}");

    // Once the window has slid past the join, the DISCONTINUITY-SEQUENCE says so.
    wait_until(
        "the live window slid past the join",
        Duration::from_secs(20),
        || {
            let live = vigil.get("/cameras/cam1/live.m3u8").text();
            !live.contains(&uri) && live.lines().filter(|l| l.starts_with("segments/")).count() == 3
        },
    );
    let live = vigil.get("/cameras/cam1/live.m3u8").text();
    assert!(live.contains("#EXT-X-DISCONTINUITY-SEQUENCE:1"), "{live}");
    assert!(!live.contains("#EXT-X-DISCONTINUITY\n"), "{live}");

    // The earlier session's files are untouched.
    let after = snapshot(&data.join("cam1").join(&old_session));
    for (name, v) in &before {
        assert_eq!(after.get(name), Some(v), "{name} changed");
    }

    // ffprobe reads a VOD playlist across the join from start to end.
    let rows = segments(&data, "cam1");
    let from = chrono::DateTime::from_timestamp_millis(rows[0].start_ms)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let last = rows.last().unwrap();
    let to = chrono::DateTime::from_timestamp_millis(last.start_ms + last.duration_ms)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let url = format!(
        "http://{}/cameras/cam1/vod.m3u8?from={from}&to={to}",
        vigil.addr
    );
    let vod = vigil.get(&url[url.find("/cameras").unwrap()..]).text();
    assert!(
        vod.contains("#EXT-X-ENDLIST") && vod.contains("#EXT-X-DISCONTINUITY\n"),
        "{vod}"
    );
    let expected: f64 = rows.iter().map(|s| s.duration_ms as f64 / 1000.0).sum();
    let probed = ffprobe_duration(&url);
    assert!(
        (probed - expected).abs() < 1.0,
        "ffprobe read {probed} s of {expected} s"
    );
    let out = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-i", &url, "-c", "copy", "-f", "null", "-"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ffmpeg could not read the VOD through: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    vigil.stop();
    no_ffmpeg_left(&data);
}

/// With a 2 s keyframe interval: ffmpeg SIGKILLed in the middle of a segment leaves a partial segment that is
/// catalogued, plays, and is followed by the next session's first segment with a DISCONTINUITY.
#[test]
fn a_partial_segment_is_kept_with_a_two_second_keyframe_interval() {
    let cam = Camera::start_with(1, &["--gop", "30"]);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut vigil = start_vigil(dir.path(), &[("cam1", cam.url(1))], "");
    wait_segments(&data, "cam1", 2, Duration::from_secs(30));
    let old = sessions(&data, "cam1")[0].clone();
    // Into the middle of the next segment.
    let n = segments(&data, "cam1").len();
    wait_segments(&data, "cam1", n + 1, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(1000));
    let pid = ffmpeg_of(&data, "cam1").unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    wait_until("the new session records", Duration::from_secs(20), || {
        segments(&data, "cam1").iter().any(|s| s.session != old)
    });
    let rows = segments(&data, "cam1");
    let partial = rows.iter().rfind(|s| s.session == old).unwrap();
    let probed = ffprobe_duration(data.join(&partial.path).to_str().unwrap());
    assert!(
        (0.5..1.8).contains(&probed),
        "about a second of the interrupted segment is kept: {probed} s"
    );
    assert!((probed - partial.duration_ms as f64 / 1000.0).abs() < 0.1);
    let day = vigil.get("/cameras/cam1/day.m3u8").text();
    let lines: Vec<&str> = day.lines().collect();
    let at = lines
        .iter()
        .position(|l| *l == format!("segments/{}.ts", partial.id))
        .expect("the partial segment is in today's playlist");
    assert_eq!(
        lines[at + 1..]
            .iter()
            .find(|l| l.starts_with('#') && !l.starts_with("#EXTINF")),
        Some(&"#EXT-X-DISCONTINUITY"),
        "the next session joins with a DISCONTINUITY\n{day}"
    );
    figure(
        "recovery",
        &format!(
            "ffmpeg SIGKILLed 1 s into a segment (2 s keyframe interval) → {probed:.2} s of it kept"
        ),
    );
    vigil.stop();
}

#[test]
fn recording_survives_camera_reboot_freeze_and_a_long_outage() {
    let mut cam = Camera::start(1);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // A long RTSP timeout, so that a frozen camera is caught by vigil's stall watchdog (default stall_seconds 3),
    // not by ffmpeg.
    let extra = "[capture]\nrtsp_timeout_seconds = 30\n[supervision]\nbackoff_initial_ms = 500\nbackoff_max_seconds = 30\n";
    let mut vigil = start_vigil(dir.path(), &[("cam1", cam.url(1))], extra);
    wait_segments(&data, "cam1", 2, Duration::from_secs(30));
    let count_sessions = |data: &Path| sessions(data, "cam1").len();

    // Reboot: the camera dies and comes straight back.
    let n = count_sessions(&data);
    cam.restart();
    let back = Instant::now();
    let newest_has_segment = |data: &Path, min_sessions: usize| {
        let s = sessions(data, "cam1");
        s.len() >= min_sessions
            && segments(data, "cam1")
                .iter()
                .any(|r| Some(&r.session) == s.last())
    };
    wait_until(
        "recording after the camera reboot",
        Duration::from_secs(20),
        || newest_has_segment(&data, n + 1),
    );
    figure(
        "recovery",
        &format!(
            "camera reboot → first new segment: {:.2} s",
            back.elapsed().as_secs_f64()
        ),
    );

    // Freeze: the camera keeps its TCP connection open but sends nothing.
    let before = ffmpeg_of(&data, "cam1").expect("ffmpeg runs");
    let n = count_sessions(&data);
    cam.freeze();
    let frozen_session = sessions(&data, "cam1").last().unwrap().clone();
    let detected = wait_until("the stall watchdog fired", Duration::from_secs(4), || {
        vigil.log().contains("stalled: no bytes written")
    });
    let t = wait_until(
        "the frozen camera's ffmpeg ended",
        Duration::from_secs(5),
        || ffmpeg_of(&data, "cam1") != Some(before),
    );
    figure(
        "recovery",
        &format!(
            "camera frozen → stall detected: {:.2} s (stall_seconds 3), frozen ffmpeg gone {:.2} s later",
            detected.as_secs_f64(),
            t.as_secs_f64()
        ),
    );
    // Reaped: a zombie may exist for the moment between the kill and vigil's wait, never longer.
    wait_until("the stalled ffmpeg reaped", Duration::from_secs(3), || {
        zombies_of(vigil.pid()).is_empty()
    });
    // The stall-killed session's partial segment is catalogued and readable.
    wait_until(
        "the frozen session is closed",
        Duration::from_secs(10),
        || {
            catalog(&data)
                .session_closed("cam1", &frozen_session)
                .unwrap()
                == Some(true)
        },
    );
    let frozen: Vec<_> = segments(&data, "cam1")
        .into_iter()
        .filter(|s| s.session == frozen_session)
        .collect();
    for s in &frozen {
        assert!(
            ffprobe_duration(data.join(&s.path).to_str().unwrap()) > 0.0,
            "{} plays",
            s.path
        );
    }
    std::thread::sleep(Duration::from_secs(2));
    cam.thaw();
    let thawed = Instant::now();
    wait_until(
        "recording after the camera thawed",
        Duration::from_secs(30),
        || newest_has_segment(&data, n + 1),
    );
    figure(
        "recovery",
        &format!(
            "camera thawed → first new segment: {:.2} s",
            thawed.elapsed().as_secs_f64()
        ),
    );

    // A long outage: the backoff grows past 8 s; the probe restarts ffmpeg as soon as the camera answers.
    cam.kill();
    let n = count_sessions(&data);
    wait_until(
        "backoff grew to at least 8 s",
        Duration::from_secs(60),
        || {
            vigil
                .log()
                .lines()
                .filter(|l| l.contains("child=ffmpeg") && l.contains("restarting child in"))
                .any(|l| {
                    l.split("delay_ms=")
                        .nth(1)
                        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                        .is_some_and(|d| d >= 8000)
                })
        },
    );
    std::thread::sleep(Duration::from_secs(1));
    let empty_folders = count_sessions(&data) - n;
    assert_eq!(
        empty_folders, 0,
        "failed attempts leave no empty session folders"
    );
    let probes_before = vigil.log().matches("readiness probe passed").count();
    cam.restart();
    let back = Instant::now();
    let started = wait_until(
        "the probe restarted ffmpeg",
        Duration::from_secs(10),
        || vigil.log().matches("readiness probe passed").count() > probes_before,
    );
    wait_until(
        "recording after the outage",
        Duration::from_secs(15),
        || newest_has_segment(&data, n + 1),
    );
    figure(
        "recovery",
        &format!(
            "camera back after a long outage (backoff ≥ 8 s) → ffmpeg restarted: {:.2} s, first finished segment: {:.2} s",
            started.as_secs_f64(),
            back.elapsed().as_secs_f64()
        ),
    );
    assert!(
        started <= Duration::from_millis(1500),
        "the probe restarted ffmpeg {started:?} after the camera returned"
    );
    assert!(
        back.elapsed() <= Duration::from_secs(5),
        "recording again {:?} after the camera returned",
        back.elapsed()
    );

    let pid = vigil.pid();
    assert!(zombies_of(pid).is_empty(), "no zombies after the restarts");
    // Every join (reboot, stall kill, outage) is marked in today's playlist.
    let recorded: std::collections::BTreeSet<String> = segments(&data, "cam1")
        .into_iter()
        .map(|s| s.session)
        .collect();
    let day = vigil.get("/cameras/cam1/day.m3u8").text();
    assert_eq!(
        day.matches("#EXT-X-DISCONTINUITY\n").count(),
        recorded.len() - 1,
        "{day}"
    );
    vigil.stop();
    no_ffmpeg_left(&data);
}

#[test]
fn a_camera_that_never_connects_does_not_disturb_the_others() {
    let cam = Camera::start(1);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let dead = format!("rtsp://127.0.0.1:{}/nothing", free_port());
    let mut vigil = start_vigil(
        dir.path(),
        &[("cam1", cam.url(1)), ("dead", dead)],
        "[supervision]\nbackoff_initial_ms = 200\n",
    );
    wait_segments(&data, "cam1", 2, Duration::from_secs(30));
    let start = segments(&data, "cam1").len();
    std::thread::sleep(Duration::from_secs(12));
    let rows = segments(&data, "cam1");
    assert_eq!(sessions(&data, "cam1").len(), 1, "cam1 was never restarted");
    assert!(
        rows.len() >= start + 5,
        "cam1 kept recording: {} → {}",
        start,
        rows.len()
    );
    let log = vigil.log();
    let dead_restarts = log
        .lines()
        .filter(|l| {
            l.contains("supervisor=\"root/cameras/dead\"") && l.contains("restarting child in")
        })
        .count();
    assert!(
        dead_restarts >= 3,
        "the dead camera is retried with backoff ({dead_restarts} restarts):\n{log}"
    );
    assert!(
        !log.contains("Escalated") && !log.contains("restart intensity exceeded"),
        "{log}"
    );
    vigil.stop();
    no_ffmpeg_left(&data);
}

#[test]
fn a_sigkilled_vigil_leaves_no_ffmpeg_and_a_restart_catalogues_what_it_missed() {
    let cam = Camera::start(1);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut vigil = start_vigil(dir.path(), &[("cam1", cam.url(1))], "");
    wait_segments(&data, "cam1", 3, Duration::from_secs(30));
    let ffmpeg = ffmpeg_of(&data, "cam1").unwrap();
    // vigil hangs (SIGSTOP) while ffmpeg goes on recording: segments get listed that nobody catalogues; then
    // vigil is killed, and ffmpeg with it, mid-segment.
    let before = segments(&data, "cam1").len();
    vigil.signal(Signal::SIGSTOP);
    std::thread::sleep(Duration::from_secs(5));
    vigil.signal(Signal::SIGKILL);
    vigil.wait_exit(Duration::from_secs(5));
    wait_until("ffmpeg died with vigil", Duration::from_secs(3), || {
        ffmpeg_of(&data, "cam1").is_none()
    });
    assert!(!procs().iter().any(|p| p.pid == ffmpeg && p.state != 'Z'));
    let session = sessions(&data, "cam1")[0].clone();
    let sdir = data.join("cam1").join(&session);
    let files: Vec<String> = snapshot(&sdir)
        .into_iter()
        .filter(|(_, (len, _))| *len > 0)
        .map(|(name, _)| name)
        .collect();
    let listed = std::fs::read_to_string(sdir.join("segments.csv"))
        .unwrap()
        .lines()
        .count();
    assert!(
        listed >= before + 2,
        "ffmpeg listed segments while vigil hung ({before} → {listed})"
    );
    assert_eq!(files.len(), listed + 1, "and left a partial one: {files:?}");

    // Two ffmpeg processes writing under the data folder: one that an earlier vigil started (it carries
    // vigil's marker), and an operator's own.
    let spawn_ffmpeg = |name: &str, marker: bool| {
        let out = data.join("cam1").join(name);
        std::fs::create_dir_all(&out).unwrap();
        let mut c = std::process::Command::new("ffmpeg");
        c.args([
            "-v",
            "error",
            "-rtsp_transport",
            "tcp",
            "-i",
            &cam.url(1),
            "-c",
            "copy",
            "-f",
            "segment",
        ])
        .arg(out.join("seg_%05d.ts"))
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0);
        if marker {
            c.env(
                vigil::process::MARKER,
                data.join("cam1").display().to_string(),
            );
        }
        c.spawn().unwrap()
    };
    let mut leftover = spawn_ffmpeg("leftover", true);
    let mut operators = spawn_ffmpeg("operator", false);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        leftover.try_wait().unwrap().is_none(),
        "the leftover ffmpeg runs"
    );

    let mut vigil = start_vigil(dir.path(), &[("cam1", cam.url(1))], "");
    let status = leftover.wait().unwrap();
    assert!(
        status.code().is_none(),
        "the leftover ffmpeg was killed by vigil: {status}"
    );
    assert!(
        vigil
            .log()
            .contains("killing a process an earlier vigil run left behind")
    );
    assert!(
        operators.try_wait().unwrap().is_none(),
        "an ffmpeg without vigil's marker is never touched"
    );
    let _ = operators.kill();
    let _ = operators.wait();
    wait_until(
        "the missed segments are catalogued",
        Duration::from_secs(15),
        || catalog(&data).session_closed("cam1", &session).unwrap() == Some(true),
    );
    let rows: Vec<_> = segments(&data, "cam1")
        .into_iter()
        .filter(|s| s.session == session)
        .collect();
    assert_eq!(
        rows.iter()
            .map(|r| r.path.rsplit('/').next().unwrap().to_string())
            .collect::<Vec<_>>(),
        files,
        "every file of the old session is catalogued exactly once, the partial one included"
    );
    assert!(
        vigil
            .log()
            .contains("catalogued the partial last segment of an ended ffmpeg run"),
        "{}",
        vigil.log()
    );
    for w in rows.windows(2) {
        let gap = w[1].start_ms - (w[0].start_ms + w[0].duration_ms);
        assert!(
            gap.abs() <= 200,
            "timed in sequence: gap {gap} ms at seq {}",
            w[1].seq
        );
    }
    wait_until(
        "recording again in a new session",
        Duration::from_secs(20),
        || segments(&data, "cam1").iter().any(|s| s.session != session),
    );
    vigil.stop();
    no_ffmpeg_left(&data);
}
