//! The capture benchmark: vigil side by side with the simplest alternative, a bash loop that restarts the
//! same ffmpeg command 1 s after it exits, on the same simulated camera in the same run; and vigil's costs
//! as history grows. Prints figures (also to target/figures/performance.txt); docs/performance.md holds the
//! numbers of a long run.
//!
//! ```text
//! cargo bench --bench capture -- [--short | --long] [--only faults|flat|time|metrics]
//! ```
//!
//! - faults: ffmpeg SIGKILLed every 20 s (short: 2 min, long: 5 min): footage kept and lost per kill; a
//!   frozen camera: time to detection / to ffmpeg gone; a camera outage (short 30 s, long 60 s): time from
//!   its return to the next finished segment.
//! - flat: synthetic history (short: 4 cameras, long: 16 cameras; 1 day vs 30 days of 2 s segments) under a
//!   running vigil recording that many real cameras: vigil's CPU per segment, live.m3u8 and /api/pipeline
//!   latency, live.m3u8 answers per second to 16 pollers; and the watcher's per-segment cost at segment 10
//!   vs segment 100 000 of one session.
//! - time (long only): recorded times against the camera's clock at a session's start and after 30 minutes.
//! - metrics: 32 cameras recording into js-ipfs and SecantusDB over a day of synthetic history: `/metrics`
//!   scrape time (p50/p99), size and series, vigil's CPU per scrape, and that cost at a 15 s scrape interval
//!   as a share of vigil's own CPU.
//!
//! Needs the test bed's ffmpeg and camera simulator (testbed/install.sh) and, for nothing else, root.

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use support::*;

fn out(line: &str) {
    println!("{line}");
    figure("performance", line);
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The simplest alternative: a bash loop around the same ffmpeg command vigil used to run (HLS muxer), each
/// run into its own folder, restarted 1 s after it exits.
struct Loop {
    child: Child,
    dir: PathBuf,
}

impl Loop {
    fn start(url: &str, dir: &Path) -> Loop {
        std::fs::create_dir_all(dir).unwrap();
        let script = format!(
            r#"while true; do d="{dir}/$(date +%s%N)"; mkdir -p "$d"; ffmpeg -hide_banner -nostdin -loglevel error -rtsp_transport tcp -timeout 5000000 -i '{url}' -c copy -f hls -hls_time 2 -hls_list_size 0 -hls_flags independent_segments+program_date_time+temp_file -hls_segment_filename "$d/seg_%05d.ts" "$d/index.m3u8"; sleep 1; done"#,
            dir = dir.display()
        );
        let child = Command::new("bash")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .stdout(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        Loop {
            child,
            dir: dir.to_path_buf(),
        }
    }

    fn ffmpeg(&self) -> Option<i32> {
        ffmpeg_under(&self.dir)
            .into_iter()
            .find(|(_, _, s)| *s != 'Z')
            .map(|(p, _, _)| p)
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let pgid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

use std::os::unix::process::CommandExt;

fn kill(pid: i32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
}

fn pid_alive(pid: i32) -> bool {
    procs().iter().any(|p| p.pid == pid && p.state != 'Z')
}

/// Finished segment files under `dir` (recursively; `.ts` only, never `.tmp`) with their mtime.
fn ts_files(dir: &Path) -> Vec<(PathBuf, SystemTime)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "ts")
                && let Ok(m) = e.metadata()
            {
                out.push((p, m.modified().unwrap()));
            }
        }
    }
    out
}

/// Seconds of `[from, to]` covered by footage: each segment file covers `[mtime − duration, mtime]` (its last
/// write is its last frame's arrival, for both ffmpeg's HLS muxer and vigil's streamed segments), clipped to
/// the window. The same measure for the loop and for vigil.
fn footage(dir: &Path, from: SystemTime, to: SystemTime) -> (f64, Vec<f64>) {
    let secs = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    };
    let (w0, w1) = (secs(from), secs(to));
    let mut spans: Vec<(f64, f64)> = ts_files(dir)
        .into_iter()
        .filter(|(_, m)| secs(*m) >= w0 - 10.0 && secs(*m) <= w1 + 10.0)
        .filter_map(|(p, m)| {
            let d = std::panic::catch_unwind(|| ffprobe_duration(p.to_str().unwrap())).ok()?;
            Some((secs(m) - d, secs(m)))
        })
        .collect();
    spans.sort_by(|a, b| a.partial_cmp(b).unwrap());
    // The union of the spans within the window (overlaps counted once), and the gaps in it.
    let (mut covered, mut reach, mut gaps) = (0.0, w0, Vec::new());
    for (a, b) in spans {
        if a - reach > 0.1 && a < w1 {
            gaps.push(a.min(w1) - reach);
        }
        let (a, b) = (a.max(reach), b.min(w1));
        if b > a {
            covered += b - a;
            reach = b;
        }
    }
    (covered, gaps)
}

fn vigil_config(data: &Path, cameras: &[(&str, String)], extra: &str) -> PathBuf {
    let path = data.parent().unwrap().join("vigil.toml");
    std::fs::write(&path, config(data, cameras, extra)).unwrap();
    path
}

fn faults(long: bool) {
    let kills = if long { 15 } else { 6 };
    let outage = if long { 60 } else { 30 };
    out(&format!(
        "## faults ({kills} kills every 20 s, 2 s keyframe interval; loop = bash loop around ffmpeg restarting after 1 s)"
    ));
    let cam = Camera::start_with(1, &["--gop", "30"]);
    let dir = tempfile::tempdir().unwrap();
    // A third client keeps the camera's stream running, as a real camera's is: a reconnecting ffmpeg joins
    // mid-GOP and waits for the next keyframe.
    let keeper = cam.keep_streaming(1);
    let lp = Loop::start(&cam.url(1), &dir.path().join("loop"));
    // The outage is played on cameras of their own, one per recorder, so that neither joins the other's
    // stream: a camera back from an outage starts with a keyframe for its first client.
    let mut out_cams = [
        Camera::start_with(1, &["--gop", "30"]),
        Camera::start_with(1, &["--gop", "30"]),
    ];
    let lp_out = Loop::start(&out_cams[0].url(1), &dir.path().join("loop-outage"));
    let data = dir.path().join("data");
    let mut vigil = Vigil::start(&vigil_config(
        &data,
        &[("cam2", cam.url(1)), ("cam3", out_cams[1].url(1))],
        "",
    ));
    let vigil_dir = data.join("cam2");
    let vigil_ffmpeg = || {
        ffmpeg_under(&vigil_dir)
            .into_iter()
            .find(|(_, _, s)| *s != 'Z')
            .map(|(p, _, _)| p)
    };
    wait_until("both record", Duration::from_secs(30), || {
        lp.ffmpeg().is_some()
            && vigil_ffmpeg().is_some()
            && ts_files(&lp.dir).len() >= 2
            && ts_files(&vigil_dir).len() >= 2
    });
    std::thread::sleep(Duration::from_secs(6));

    // 1. SIGKILL both every 20 s, at a random moment of the camera's GOP (a fixed 20 s period would hit the
    // same phase of a 2 s GOP every time). Seeded: the seed is printed.
    let seed = std::env::var("VIGIL_BENCH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| now_ms() as u64);
    out(&format!("seed {seed} (VIGIL_BENCH_SEED to replay)"));
    let mut rng = seed | 1;
    let mut unit = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % 1_000_000) as f64 / 1_000_000.0
    };
    let w0 = SystemTime::now();
    for _ in 0..kills {
        let before = Duration::from_secs_f64(9.0 + 2.0 * unit());
        std::thread::sleep(before);
        wait_until("both ffmpeg run", Duration::from_secs(15), || {
            lp.ffmpeg().is_some() && vigil_ffmpeg().is_some()
        });
        kill(lp.ffmpeg().unwrap());
        kill(vigil_ffmpeg().unwrap());
        std::thread::sleep(Duration::from_secs(20) - before);
    }
    let w1 = SystemTime::now();
    let window = w1.duration_since(w0).unwrap().as_secs_f64();
    // Let the last partial segments be finished/catalogued.
    std::thread::sleep(Duration::from_secs(3));
    for (name, d) in [("loop ", &lp.dir), ("vigil", &vigil_dir)] {
        let (kept, gaps) = footage(d, w0, w1);
        let max = gaps.iter().copied().fold(0.0, f64::max);
        out(&format!(
            "{name}  footage kept while ffmpeg is SIGKILLed every 20 s: {:.1} % of {window:.0} s; lost per kill: {:.2} s ({} gaps, longest {max:.2} s)",
            100.0 * kept / window,
            (window - kept) / kills as f64,
            gaps.len()
        ));
    }

    // 2. A frozen camera (SIGSTOP: connections stay open, no data).
    std::thread::sleep(Duration::from_secs(6));
    let (lpid, vpid) = (lp.ffmpeg().unwrap(), vigil_ffmpeg().unwrap());
    let stalls_before = vigil.log().matches("stalled: no bytes written").count();
    cam.freeze();
    let t = Instant::now();
    let (mut lgone, mut vgone, mut vdetect) = (None, None, None);
    while t.elapsed() < Duration::from_secs(20) && (lgone.is_none() || vgone.is_none()) {
        if lgone.is_none() && !pid_alive(lpid) {
            lgone = Some(t.elapsed());
        }
        if vgone.is_none() && !pid_alive(vpid) {
            vgone = Some(t.elapsed());
        }
        if vdetect.is_none()
            && vigil.log().matches("stalled: no bytes written").count() > stalls_before
        {
            vdetect = Some(t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let s = |d: Option<Duration>| {
        d.map_or("> 20 s".to_string(), |d| {
            format!("{:.2} s", d.as_secs_f64())
        })
    };
    out(&format!("loop   camera frozen → ffmpeg gone: {}", s(lgone)));
    out(&format!(
        "vigil  camera frozen → stall detected: {} (stall_seconds 3), ffmpeg gone: {}",
        s(vdetect),
        s(vgone)
    ));
    cam.thaw();
    // The frozen camera's keeper is stuck too: a new one.
    drop(keeper);
    let keeper = cam.keep_streaming(1);
    std::thread::sleep(Duration::from_secs(10));

    // 3. A camera outage.
    let out_dir = data.join("cam3");
    wait_until(
        "both record the outage cameras",
        Duration::from_secs(30),
        || ts_files(&lp_out.dir).len() >= 2 && ts_files(&out_dir).len() >= 2,
    );
    for c in out_cams.iter_mut() {
        c.kill();
    }
    std::thread::sleep(Duration::from_secs(outage));
    let before_loop: Vec<PathBuf> = ts_files(&lp_out.dir).into_iter().map(|(p, _)| p).collect();
    let vigil_rows = catalog(&data).count(Some("cam3")).unwrap();
    for c in out_cams.iter_mut() {
        c.restart();
    }
    let t = Instant::now();
    let (mut lback, mut vback) = (None, None);
    while t.elapsed() < Duration::from_secs(30) && (lback.is_none() || vback.is_none()) {
        if lback.is_none()
            && ts_files(&lp_out.dir)
                .iter()
                .any(|(p, _)| !before_loop.contains(p))
        {
            lback = Some(t.elapsed());
        }
        if vback.is_none() && catalog(&data).count(Some("cam3")).unwrap() > vigil_rows {
            vback = Some(t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    out(&format!(
        "loop   camera back after a {outage} s outage → next finished segment: {}",
        s(lback)
    ));
    out(&format!(
        "vigil  camera back after a {outage} s outage → next finished segment: {}",
        s(vback)
    ));
    vigil.stop();
    drop(keeper);
}

/// A catalog with `days` days of 2 s segments for `cameras` cameras ending now, fully distributed, one
/// session per camera per day. Returns the rows written.
fn synthetic_history(data: &Path, cameras: usize, days: i64) -> u64 {
    std::fs::create_dir_all(data).unwrap();
    let c = vigil::catalog::Catalog::open(&data.join("catalog.sqlite")).unwrap();
    let per_day = 43_200i64;
    let end = now_ms() - 60_000;
    let start = end - days * per_day * 2000;
    c.with_writer(|conn| {
        conn.pragma_update(None, "synchronous", "OFF")?;
        let tx = conn.transaction()?;
        {
            let mut seg = tx.prepare(
                "INSERT INTO segments (camera, factory, session, seq, path, start_ms, duration_ms, bytes, first_in_session,
                   recorded_at_ms, cid, pinned_at_ms, indexed_at_ms, published_at_ms, lseq, disc, join_)
                 VALUES (?1, 'factory-a', ?2, ?3, ?4, ?5, 2000, 250000, ?6, ?5, 'bafkreisynthetic', ?5, ?5, ?5, ?7, ?8, ?9)",
            )?;
            let mut ses = tx.prepare(
                "INSERT INTO sessions (camera, session, opened_at_ms, closed_at_ms) VALUES (?1, ?2, ?3, ?3)",
            )?;
            for cam in 1..=cameras {
                let camera = format!("cam{cam}");
                let mut lseq = 0i64;
                for day in 0..days {
                    let session = format!("synthetic-{day:03}");
                    let t0 = start + day * per_day * 2000;
                    ses.execute(rusqlite::params![camera, session, t0])?;
                    for seq in 0..per_day {
                        let path = format!("{camera}/{session}/seg_{seq:05}.ts");
                        seg.execute(rusqlite::params![
                            camera, session, seq, path, t0 + seq * 2000, seq == 0, lseq, day, seq == 0 && day > 0
                        ])?;
                        lseq += 1;
                    }
                }
            }
        }
        tx.execute_batch(
            "INSERT INTO cameras (camera, last_lseq, last_session, last_seq, disc, max_duration_ms, bytes, segments)
               SELECT camera, MAX(lseq), MAX(session), 43199, MAX(disc), 2000, SUM(bytes), COUNT(*) FROM segments GROUP BY camera;
             UPDATE cameras SET last_session_id = (SELECT id FROM sessions s WHERE s.camera = cameras.camera AND s.session = cameras.last_session);",
        )?;
        tx.commit()?;
        conn.pragma_update(None, "synchronous", "FULL")
    })
    .unwrap();
    (cameras as i64 * days * per_day) as u64
}

fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// Latencies (ms) of `n` sequential GETs.
fn latencies(addr: &str, path: &str, n: usize) -> Vec<f64> {
    (0..n)
        .map(|_| {
            let t = Instant::now();
            let r = http_get(addr, path);
            assert_eq!(r.status, 200, "{path}: {}", r.text());
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect()
}

/// Answers per second to `clients` threads polling `path` for `secs`.
fn throughput(addr: &str, path: &str, clients: usize, secs: u64) -> f64 {
    let stop = Instant::now() + Duration::from_secs(secs);
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            let (addr, path) = (addr.to_string(), path.to_string());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while Instant::now() < stop {
                    if http_get(&addr, &path).status == 200 {
                        n += 1;
                    }
                }
                n
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).sum::<u64>() as f64 / secs as f64
}

/// `cam1` … `camN`.
fn camera_ids(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("cam{i}")).collect()
}

/// Each id with the simulator's stream of the same number.
fn with_urls<'a>(ids: &'a [String], cam: &Camera) -> Vec<(&'a str, String)> {
    ids.iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), cam.url(i + 1)))
        .collect()
}

struct Flat {
    cpu_ms_per_segment: f64,
    live_p50: f64,
    live_p99: f64,
    pipeline_p50: f64,
    live_per_s: f64,
}

fn flat_run(cameras: usize, days: i64, cam: &Camera, measure_s: u64) -> Flat {
    let dir = tempfile::tempdir_in(support::repo().join("target")).unwrap();
    let data = dir.path().join("data");
    let t = Instant::now();
    let rows = synthetic_history(&data, cameras, days);
    out(&format!(
        "  history: {rows} synthetic rows ({cameras} cameras × {days} day(s)) written in {:.0} s",
        t.elapsed().as_secs_f64()
    ));
    let ids = camera_ids(cameras);
    let cams = with_urls(&ids, cam);
    // A fake IPFS API keeps the pipeline configured (its backlog queries run) without distributing anything.
    let path = vigil_config(&data, &cams, "");
    let mut vigil = Vigil::start(&path);
    let pid = vigil.pid();
    let count = || catalog(&data).count(None).unwrap();
    wait_until("every camera records", Duration::from_secs(60), || {
        ids.iter().all(|id| {
            catalog(&data).camera_stats(id).unwrap().segments as u64 > (rows / cameras as u64)
        })
    });
    std::thread::sleep(Duration::from_secs(5));
    let (c0, n0) = (cpu_ticks(pid), count());
    std::thread::sleep(Duration::from_secs(measure_s));
    let (c1, n1) = (cpu_ticks(pid), count());
    let ticks_per_s = unsafe { nix::libc::sysconf(nix::libc::_SC_CLK_TCK) } as f64;
    let cpu_ms_per_segment = (c1 - c0) as f64 * 1000.0 / ticks_per_s / (n1 - n0).max(1) as f64;
    latencies(&vigil.addr, "/cameras/cam1/live.m3u8", 200); // warm up
    let mut live = latencies(&vigil.addr, "/cameras/cam1/live.m3u8", 2000);
    let mut pipe = latencies(&vigil.addr, "/api/pipeline", 100);
    let live_per_s = throughput(&vigil.addr, "/cameras/cam1/live.m3u8", 16, 10);
    vigil.stop();
    Flat {
        cpu_ms_per_segment,
        live_p50: percentile(&mut live, 0.5),
        live_p99: percentile(&mut live, 0.99),
        pipeline_p50: percentile(&mut pipe, 0.5),
        live_per_s,
    }
}

/// The watcher's per-segment work (read the list's new line, stat the file, catalogue it) at segment `at`
/// of one session: CPU milliseconds per segment over `n` segments.
fn per_segment_at(at: usize, n: usize) -> f64 {
    let dir = tempfile::tempdir_in(support::repo().join("target")).unwrap();
    let data = dir.path().join("data");
    let session = "20260101T000000000Z";
    let sdir = data.join("cam1").join(session);
    std::fs::create_dir_all(&sdir).unwrap();
    let config = vigil::config::Config::parse(
        &format!(
            "node_id = \"b\"\ndata_dir = \"{}\"\n[[cameras]]\nid = \"cam1\"\nfactory_id = \"f\"\nurl = \"rtsp://127.0.0.1:9/x\"\n",
            data.display()
        ),
        Path::new("bench.toml"),
    )
    .unwrap();
    let catalog =
        std::sync::Arc::new(vigil::catalog::Catalog::open(&data.join("catalog.sqlite")).unwrap());
    catalog.open_session("cam1", session).unwrap();
    let board = vigil::capture::Board::default();
    let rt = vigil::capture::CameraRuntime::new(
        &config,
        &config.cameras[0],
        catalog.clone(),
        Default::default(),
        &board,
        Default::default(),
    );
    // The session so far: `at` segments listed, on disk and catalogued.
    let mut list = String::new();
    let line = |i: usize| {
        format!(
            "seg_{i:05}.ts,{:.6},{:.6}\n",
            i as f64 * 2.0,
            (i + 1) as f64 * 2.0
        )
    };
    let mut rows = Vec::with_capacity(at);
    for i in 0..at {
        std::fs::write(sdir.join(format!("seg_{i:05}.ts")), [0x47u8; 188]).unwrap();
        list += &line(i);
        rows.push(vigil::catalog::NewSegment {
            camera: "cam1".into(),
            factory: "f".into(),
            session: session.into(),
            seq: i as i64,
            path: format!("cam1/{session}/seg_{i:05}.ts"),
            start_ms: 1_700_000_000_000 + i as i64 * 2000,
            duration_ms: 2000,
            bytes: 188,
            first_in_session: i == 0,
        });
    }
    for chunk in rows.chunks(5000) {
        catalog.insert_many(chunk).unwrap();
    }
    let list_path = sdir.join("segments.csv");
    std::fs::write(&list_path, &list).unwrap();
    let mut st = vigil::capture::watcher::SessionState::following(
        list.len() as u64,
        at as i64 - 1,
        1_700_000_000_000.0,
    );
    let cpu = || {
        let mut u = nix::libc::rusage {
            ..unsafe { std::mem::zeroed() }
        };
        unsafe { nix::libc::getrusage(nix::libc::RUSAGE_THREAD, &mut u) };
        (u.ru_utime.tv_sec as f64 + u.ru_stime.tv_sec as f64) * 1000.0
            + (u.ru_utime.tv_usec as f64 + u.ru_stime.tv_usec as f64) / 1000.0
    };
    // Warm up (SQLite's cache, the first appends), then measure n segments.
    let mut c0 = cpu();
    for i in at..at + 2 * n {
        if i == at + n {
            c0 = cpu();
        }
        std::fs::write(sdir.join(format!("seg_{i:05}.ts")), [0x47u8; 188]).unwrap();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&list_path)
            .unwrap();
        std::io::Write::write_all(&mut f, line(i).as_bytes()).unwrap();
        drop(f);
        let added =
            vigil::capture::watcher::catalogue_appended(&rt, session, &mut st, now_ms()).unwrap();
        assert_eq!(added, 1);
    }
    (cpu() - c0) / n as f64
}

fn flat(long: bool) {
    let cameras = if long { 16 } else { 4 };
    out(&format!(
        "## flatness ({cameras} cameras recording; synthetic history of 2 s segments)"
    ));
    let cam = Camera::start_with(
        cameras,
        &["--width", "320", "--height", "180", "--fps", "10"],
    );
    let measure = if long { 120 } else { 60 };
    let one = flat_run(cameras, 1, &cam, measure);
    let thirty = flat_run(cameras, 30, &cam, measure);
    let r = |a: f64, b: f64| b / a;
    out(&format!(
        "vigil  CPU per catalogued segment: {:.2} ms (1 day) vs {:.2} ms (30 days): ratio {:.2}",
        one.cpu_ms_per_segment,
        thirty.cpu_ms_per_segment,
        r(one.cpu_ms_per_segment, thirty.cpu_ms_per_segment)
    ));
    out(&format!(
        "vigil  live.m3u8 latency p50/p99: {:.2}/{:.2} ms (1 day) vs {:.2}/{:.2} ms (30 days): p50 ratio {:.2}",
        one.live_p50,
        one.live_p99,
        thirty.live_p50,
        thirty.live_p99,
        r(one.live_p50, thirty.live_p50)
    ));
    out(&format!(
        "vigil  /api/pipeline latency p50: {:.2} ms (1 day) vs {:.2} ms (30 days): ratio {:.2}",
        one.pipeline_p50,
        thirty.pipeline_p50,
        r(one.pipeline_p50, thirty.pipeline_p50)
    ));
    out(&format!(
        "vigil  live.m3u8 answers per second to 16 pollers: {:.0} (1 day) vs {:.0} (30 days)",
        one.live_per_s, thirty.live_per_s
    ));
    let n = if long { 2000 } else { 500 };
    let at10 = per_segment_at(10, n);
    let at100k = per_segment_at(100_000, n);
    out(&format!(
        "vigil  watcher CPU per segment at segment 10: {at10:.3} ms, at segment 100 000: {at100k:.3} ms: ratio {:.2}",
        at100k / at10
    ));
}

fn time_long() {
    out("## time (30 minutes of one session, markers every 10 s)");
    let cam = Camera::start_with(1, &["--gop", "30", "--marker-every", "10"]);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut vigil = Vigil::start(&vigil_config(&data, &[("cam1", cam.url(1))], ""));
    std::thread::sleep(Duration::from_secs(30 * 60 + 10));
    vigil.stop();
    let rows = catalog(&data).all("cam1").unwrap();
    let errors = |rows: &[vigil::catalog::Segment]| -> Vec<i64> {
        let markers = cam.markers();
        let mut e = Vec::new();
        for r in rows {
            for t in marker_frames(data.join(&r.path).to_str().unwrap()) {
                let recorded = r.start_ms + (t * 1000.0).round() as i64;
                let truth = markers
                    .iter()
                    .map(|(_, m)| *m)
                    .min_by_key(|m| (m - recorded).abs())
                    .unwrap();
                e.push(recorded - truth);
            }
        }
        e
    };
    let first = errors(&rows[..10.min(rows.len())]);
    let last = errors(&rows[rows.len().saturating_sub(10)..]);
    let sessions: std::collections::BTreeSet<_> = rows.iter().map(|r| &r.session).collect();
    out(&format!(
        "vigil  recorded time − camera clock: {first:?} ms in the first 20 s, {last:?} ms after 30 min ({} session(s), {} segments)",
        sessions.len(),
        rows.len()
    ));
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let long = args.iter().any(|a| a == "--long");
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let run = |part: &str| only.as_deref().is_none_or(|o| o == part);
    out(&format!(
        "# vigil capture benchmark ({} mode)",
        if long { "long" } else { "short" }
    ));
    if run("faults") {
        faults(long);
    }
    if run("flat") {
        flat(long);
    }
    if long && run("time") {
        time_long();
    }
    if run("metrics") {
        metrics(long);
    }
}

/// The cost of `/metrics` with 32 cameras (see the module doc).
fn metrics(long: bool) {
    let cameras = 32;
    out(&format!(
        "## /metrics ({cameras} cameras recording, distributing to js-ipfs and SecantusDB; 1 day of synthetic history)"
    ));
    let cam = Camera::start_with(
        cameras,
        &["--width", "320", "--height", "180", "--fps", "10"],
    );
    let bed = support::bed::Bed::start(&["ipfs-a", "mongo"]);
    let dir = tempfile::tempdir_in(support::repo().join("target")).unwrap();
    let data = dir.path().join("data");
    let rows = synthetic_history(&data, cameras, 1);
    let ids = camera_ids(cameras);
    let cams = with_urls(&ids, &cam);
    let extra = format!(
        "[ipfs]\napi = \"{}\"\n[index]\nmongodb_uri = \"{}\"\ndatabase = \"vigil\"\n",
        bed.ipfs_a, bed.mongo
    );
    let mut vigil = Vigil::start(&vigil_config(&data, &cams, &extra));
    let pid = vigil.pid();
    wait_until("every camera records", Duration::from_secs(90), || {
        ids.iter().all(|id| {
            catalog(&data).camera_stats(id).unwrap().segments as u64 > rows / cameras as u64
        })
    });
    let ticks_per_s = unsafe { nix::libc::sysconf(nix::libc::_SC_CLK_TCK) } as f64;
    // vigil's own CPU while it records (nobody scrapes).
    let quiet = Duration::from_secs(if long { 120 } else { 60 });
    let (c0, t0) = (cpu_ticks(pid), Instant::now());
    std::thread::sleep(quiet);
    let own = (cpu_ticks(pid) - c0) as f64 / ticks_per_s / t0.elapsed().as_secs_f64();
    // Back-to-back scrapes: latency, and CPU beyond what recording took meanwhile.
    latencies(&vigil.addr, "/metrics", 20);
    let n = if long { 2000 } else { 500 };
    let (c0, t0) = (cpu_ticks(pid), Instant::now());
    let mut lat = latencies(&vigil.addr, "/metrics", n);
    let window = t0.elapsed().as_secs_f64();
    let spent = (cpu_ticks(pid) - c0) as f64 / ticks_per_s - own * window;
    let per_scrape_ms = spent.max(0.0) * 1000.0 / n as f64;
    let text = http_get(&vigil.addr, "/metrics").text();
    let series = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .count();
    let backlog: f64 = vigil::metrics::values(&text, "vigil_pipeline_backlog_segments")
        .iter()
        .map(|(_, v)| v)
        .sum();
    out(&format!(
        "vigil  /metrics scrape: p50 {:.2} ms, p99 {:.2} ms over {n} scrapes; {:.1} KB, {series} series (pipeline backlog {backlog:.0})",
        percentile(&mut lat, 0.5),
        percentile(&mut lat, 0.99),
        text.len() as f64 / 1024.0
    ));
    let at15 = per_scrape_ms / 1000.0 / 15.0;
    out(&format!(
        "vigil  CPU per scrape {per_scrape_ms:.2} ms; scraped every 15 s that is {:.4} % of a core, {:.2} % of vigil's own {:.1} % of a core while recording",
        at15 * 100.0,
        at15 / own * 100.0,
        own * 100.0
    ));
    vigil.stop();
}
