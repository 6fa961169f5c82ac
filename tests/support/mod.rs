//! Shared harness for the end-to-end tests: a `vigil run` process with its log, a private simulated camera
//! (the test bed's GStreamer RTSP server on its own port, so a test can kill, freeze or reboot it), plain HTTP,
//! /proc inspection, and a figures file the test command prints.
//!
//! These tests need ffmpeg and the camera simulator (`testbed/install.sh`); without them they FAIL.

#![allow(dead_code)]

pub mod bed;
pub mod browser;
pub mod cluster;
pub mod nginx;
pub mod prometheus;
pub mod rabbitmq;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

pub const VIGIL: &str = env!("CARGO_BIN_EXE_vigil");

pub fn repo_root() -> PathBuf {
    repo()
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A free TCP port on 127.0.0.1 (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn wait_until(what: &str, within: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while start.elapsed() < within {
        if f() {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("not within {within:?}: {what}");
}

/// Append a line to target/figures/<name>.txt (printed by the test command) and to stderr.
pub fn figure(name: &str, line: &str) {
    let dir = repo().join("target/figures");
    std::fs::create_dir_all(&dir).unwrap();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{name}.txt")))
        .unwrap();
    writeln!(f, "{line}").unwrap();
    eprintln!("FIGURE {name}: {line}");
}

/// A private simulated camera: testbed/camera.py on its own port.
pub struct Camera {
    pub port: u16,
    cameras: usize,
    args: Vec<String>,
    child: Option<Child>,
    /// (mount, unix ms) of every frame marker the camera printed (with `--marker-every`).
    markers: std::sync::Arc<std::sync::Mutex<Vec<(String, i64)>>>,
}

impl Camera {
    pub fn start(cameras: usize) -> Camera {
        Self::start_with(cameras, &[])
    }

    /// With extra camera.py flags, e.g. `["--gop", "30", "--marker-every", "3"]` or `["--auth", "u:p"]`.
    pub fn start_with(cameras: usize, args: &[&str]) -> Camera {
        let mut c = Camera {
            port: free_port(),
            cameras,
            args: args.iter().map(|a| a.to_string()).collect(),
            child: None,
            markers: Default::default(),
        };
        c.spawn();
        c
    }

    /// A client that keeps mount `n` streaming (as a real camera always is), so that a (re)connecting ffmpeg
    /// joins in the middle of a GOP. Killed when dropped.
    pub fn keep_streaming(&self, n: usize) -> KeepAlive {
        let child = Command::new("ffmpeg")
            .args([
                "-nostdin",
                "-loglevel",
                "quiet",
                "-rtsp_transport",
                "tcp",
                "-i",
                &self.url(n),
            ])
            .args(["-c", "copy", "-f", "null", "-"])
            .stdin(Stdio::null())
            .spawn()
            .expect("ffmpeg");
        KeepAlive(child)
    }

    /// The frame markers printed so far: (mount, unix ms).
    pub fn markers(&self) -> Vec<(String, i64)> {
        self.markers.lock().unwrap().clone()
    }

    pub fn url(&self, n: usize) -> String {
        format!("rtsp://127.0.0.1:{}/cam{n}", self.port)
    }

    fn spawn(&mut self) {
        assert!(
            Path::new("/usr/bin/python3").exists() && which("ffmpeg"),
            "the camera simulator and ffmpeg are required: run testbed/install.sh"
        );
        let mut child = Command::new("/usr/bin/python3")
            .arg("-u")
            .arg(repo().join("testbed/camera.py"))
            .args(["--address", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--cameras", &self.cameras.to_string()])
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start testbed/camera.py");
        let out = child.stdout.take().unwrap();
        let markers = self.markers.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let mut f = line.split_whitespace();
                if f.next() == Some("marker")
                    && let (Some(cam), Some(ms)) = (f.next(), f.next().and_then(|m| m.parse().ok()))
                {
                    markers.lock().unwrap().push((cam.to_string(), ms));
                }
            }
        });
        self.child = Some(child);
        let port = self.port;
        wait_until("camera simulator answers", Duration::from_secs(15), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("camera running").id() as i32
    }

    /// Power cut: SIGKILL, reaped.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Back on the same port.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Frozen: the process stops, its TCP connections stay open.
    pub fn freeze(&self) {
        kill(Pid::from_raw(self.pid()), Signal::SIGSTOP).unwrap();
    }

    pub fn thaw(&self) {
        kill(Pid::from_raw(self.pid()), Signal::SIGCONT).unwrap();
    }
}

impl Drop for Camera {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGCONT);
        }
        self.kill();
    }
}

/// A client keeping a camera mount streaming; killed on drop.
pub struct KeepAlive(Child);

impl Drop for KeepAlive {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
}

/// A config for a test node: `cameras` are (id, url). Logins are off (`[auth] enabled = false`): these tests
/// are about recording and serving; tests/auth.rs and tests/browser.rs test the guard with them on
/// (`config_with_auth`).
pub fn config(data_dir: &Path, cameras: &[(&str, String)], extra_top: &str) -> String {
    config_with_auth(data_dir, cameras, extra_top).replace(AUTH_ON, "[auth]\nenabled = false\n")
}

const AUTH_ON: &str = "[auth]\nenabled = true\n";

/// [`config`] with logins required.
pub fn config_with_auth(data_dir: &Path, cameras: &[(&str, String)], extra_top: &str) -> String {
    let mut s = format!(
        "node_id = \"test\"\ndata_dir = \"{}\"\n{extra_top}\n[http]\nlisten = \"127.0.0.1:0\"\n{AUTH_ON}",
        data_dir.display()
    );
    for (id, url) in cameras {
        s += &format!(
            "\n[[cameras]]\nid = \"{id}\"\nfactory_id = \"factory-a\"\nurl = \"{url}\"\nsegment_seconds = 2\n"
        );
    }
    s
}

/// Runs `vigil ARGS --config CONFIG` (a `user` or `token` command) with `stdin` as its input; panics unless
/// it succeeds; returns what it printed.
pub fn vigil_cli(config: &Path, args: &[&str], stdin: &str) -> String {
    let (code, text) = vigil_try(config, args, stdin);
    assert!(code == 0, "vigil {args:?}: {text}");
    text
}

/// Runs `vigil ARGS --config CONFIG` with `stdin` as its input: its exit code and what it printed (stdout,
/// then stderr).
pub fn vigil_try(config: &Path, args: &[&str], stdin: &str) -> (i32, String) {
    use std::io::Write as _;
    let mut child = Command::new(VIGIL)
        .args(args)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// A running `vigil run` whose stderr lines arrive on a channel.
pub struct Vigil {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    pub seen: Vec<String>,
    pub addr: String,
}

impl Vigil {
    /// Start and wait until HTTP listens.
    pub fn start(config_path: &Path) -> Vigil {
        Self::start_logging(config_path, "info")
    }

    /// Start with this log filter (RUST_LOG) and wait until HTTP listens.
    pub fn start_logging(config_path: &Path, rust_log: &str) -> Vigil {
        let mut v = Self::spawn(config_path, rust_log);
        v.wait_listening();
        v
    }

    /// Wait until HTTP listens and note its address (for a vigil started without waiting).
    pub fn wait_listening(&mut self) {
        let line = self.expect_line("HTTP listening on http://", Duration::from_secs(15));
        self.addr = line
            .split("http://")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_string();
    }

    /// Start without waiting for anything.
    pub fn start_raw(config_path: &Path) -> Vigil {
        Self::spawn(config_path, "info")
    }

    /// Start with these extra environment variables (e.g. systemd's NOTIFY_SOCKET), without waiting.
    pub fn start_with_env(config_path: &Path, env: &[(&str, &str)]) -> Vigil {
        Self::spawn_env(config_path, "info", env)
    }

    fn spawn(config_path: &Path, rust_log: &str) -> Vigil {
        Self::spawn_env(config_path, rust_log, &[])
    }

    fn spawn_env(config_path: &Path, rust_log: &str, env: &[(&str, &str)]) -> Vigil {
        let mut child = Command::new(VIGIL)
            .args(["run", "--config"])
            .arg(config_path)
            .env("RUST_LOG", rust_log)
            .envs(env.iter().copied())
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Vigil {
            child,
            lines,
            seen: Vec::new(),
            addr: String::new(),
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn pump(&mut self) {
        while let Ok(l) = self.lines.try_recv() {
            self.seen.push(l);
        }
    }

    /// The log so far.
    pub fn log(&mut self) -> String {
        self.pump();
        self.seen.join("\n")
    }

    pub fn expect_line(&mut self, needle: &str, within: Duration) -> String {
        match self.find_line(needle, within) {
            Some(l) => l,
            None => panic!(
                "no log line with {needle:?} within {within:?}; log:\n{}",
                self.seen.join("\n")
            ),
        }
    }

    /// The first log line with `needle`, waiting up to `within` for it.
    pub fn find_line(&mut self, needle: &str, within: Duration) -> Option<String> {
        if let Some(l) = self.seen.iter().find(|l| l.contains(needle)) {
            return Some(l.clone());
        }
        let deadline = Instant::now() + within;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return Some(line);
                    }
                }
                Err(_) => break,
            }
        }
        None
    }

    pub fn signal(&self, s: Signal) {
        kill(Pid::from_raw(self.pid()), s).unwrap();
    }

    pub fn wait_exit(&mut self, within: Duration) -> i32 {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
                    self.seen.push(line);
                }
                return status.code().unwrap_or(-1);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "vigil did not exit within {within:?}; log:\n{}",
                    self.seen.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, expect a clean exit.
    pub fn stop(&mut self) {
        self.signal(Signal::SIGTERM);
        let code = self.wait_exit(Duration::from_secs(20));
        assert_eq!(
            code,
            0,
            "vigil did not stop cleanly; log:\n{}",
            self.seen.join("\n")
        );
    }

    pub fn get(&self, path: &str) -> Response {
        http_get(&self.addr, path)
    }
}

impl Drop for Vigil {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: String,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

pub fn http_get(addr: &str, path: &str) -> Response {
    http(addr, "GET", path, &[], b"")
}

/// One HTTP/1.1 request over a fresh connection, the path sent exactly as given (odd-input tests).
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head += &format!("{k}: {v}\r\n");
    }
    if !body.is_empty() || method == "POST" {
        head += &format!("Content-Length: {}\r\n", body.len());
    }
    head += "\r\n";
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("HTTP header end");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut body = raw[split + 4..].to_vec();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    Response {
        status,
        headers: head,
        body,
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let n =
            usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap().trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + n]);
        b = &b[eol + 4 + n..];
    }
    out
}

/// (pid, ppid, state) of every process whose command line is ffmpeg writing under `dir`.
pub fn ffmpeg_under(dir: &Path) -> Vec<(i32, i32, char)> {
    let needle = format!("{}/", dir.display());
    procs()
        .into_iter()
        .filter(|p| {
            p.cmdline.first().is_some_and(|a| a.ends_with("ffmpeg"))
                && p.cmdline.iter().any(|a| a.starts_with(&needle))
        })
        .map(|p| (p.pid, p.ppid, p.state))
        .collect()
}

pub struct Proc {
    pub pid: i32,
    pub ppid: i32,
    pub state: char,
    pub cmdline: Vec<String>,
}

pub fn procs() -> Vec<Proc> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let rest = &stat[stat.rfind(')')? + 2..];
            let mut f = rest.split_whitespace();
            let state = f.next()?.chars().next()?;
            let ppid = f.next()?.parse().ok()?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
                .ok()?
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            Some(Proc {
                pid,
                ppid,
                state,
                cmdline,
            })
        })
        .collect()
}

/// Zombie children of `pid`.
pub fn zombies_of(pid: i32) -> Vec<i32> {
    procs()
        .into_iter()
        .filter(|p| p.ppid == pid && p.state == 'Z')
        .map(|p| p.pid)
        .collect()
}

/// ffprobe's duration of a file or URL, in seconds.
pub fn ffprobe_duration(input: &str) -> f64 {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "format=duration",
            "-of",
            "csv=p=0",
            input,
        ])
        .output()
        .expect("ffprobe");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| {
            panic!(
                "ffprobe could not read {input}: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

/// Times of the camera's white marker frames in a segment file: seconds from the file's first frame.
pub fn marker_frames(file: &str) -> Vec<f64> {
    let out = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-nostdin",
            "-i",
            file,
            "-vf",
            "negate,blackframe=amount=85:threshold=32",
            "-f",
            "null",
            "-",
        ])
        .output()
        .expect("ffmpeg");
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains("blackframe") && l.contains(" t:"))
        .filter_map(|l| {
            l.split(" t:")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

/// A current-thread tokio runtime for async client calls from a test.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A Kubo RPC client for the IPFS API at `api` (20 s per call).
pub fn kubo(api: &str) -> vigil::ipfs::kubo::Kubo {
    vigil::ipfs::kubo::Kubo::new(api, None, Duration::from_secs(20)).unwrap()
}

/// The segment URIs of a playlist (its lines that are neither tags nor empty).
pub fn playlist_uris(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// Unix ms as RFC 3339 UTC with milliseconds (query parameters of range routes and `vigil verify`).
pub fn rfc3339_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub fn catalog(data_dir: &Path) -> vigil::catalog::Catalog {
    vigil::catalog::Catalog::open(&data_dir.join("catalog.sqlite")).unwrap()
}

/// Session folders of a camera, oldest first.
pub fn sessions(data_dir: &Path, camera: &str) -> Vec<String> {
    vigil::capture::session::list(&data_dir.join(camera))
        .into_iter()
        .map(|(s, _)| s)
        .collect()
}

/// A tmpfs of `mb` MiB mounted on a fresh folder; unmounted on drop.
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    pub fn mount(mb: u32) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mb}m"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mounting a tmpfs needs root (the README's test command runs as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}
