//! vigil as a systemd service, on the real binary: the notify protocol over a real NOTIFY_SOCKET (READY=1
//! once the tree is up, periodic WATCHDOG=1, STOPPING=1 on SIGTERM), `systemd-analyze verify` on
//! deploy/systemd/vigil.service, and deploy/install.sh into a scratch root. The watchdog's silence while the
//! root supervisor is stuck is tested in src/service.rs (in process, on a real socket).

mod support;

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use support::*;

/// Datagrams arriving on a fresh socket in `dir`, with their arrival time.
fn listen(dir: &std::path::Path) -> (String, mpsc::Receiver<(Instant, String)>) {
    let path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 4096];
        while let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            if tx.send((Instant::now(), msg)).is_err() {
                return;
            }
        }
    });
    (path.display().to_string(), rx)
}

/// The next message containing `needle` within `within`.
fn expect(
    rx: &mpsc::Receiver<(Instant, String)>,
    needle: &str,
    within: Duration,
) -> (Instant, String) {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((t, m)) if m.contains(needle) => return (t, m),
            Ok(_) => {}
            Err(_) => panic!("no {needle:?} within {within:?}"),
        }
    }
}

#[test]
fn vigil_tells_systemd_it_is_ready_pings_the_watchdog_and_says_when_it_stops() {
    let dir = tempfile::tempdir().unwrap();
    let (socket, rx) = listen(dir.path());
    let cam = Camera::start(1);
    let config = dir.path().join("vigil.toml");
    std::fs::write(&config, config_text(dir.path(), &cam)).unwrap();
    let t0 = Instant::now();
    let mut vigil = Vigil::start_with_env(
        &config,
        &[("NOTIFY_SOCKET", &socket), ("WATCHDOG_USEC", "400000")],
    );
    let (ready_at, ready) = expect(&rx, "READY=1", Duration::from_secs(20));
    assert!(ready.contains("STATUS=running: 1 camera(s)"), "{ready}");
    // Pings every 200 ms (half of WATCHDOG_USEC).
    let mut pings = Vec::new();
    while pings.len() < 5 {
        pings.push(expect(&rx, "WATCHDOG=1", Duration::from_secs(2)).0);
    }
    let gaps: Vec<u128> = pings
        .windows(2)
        .map(|w| (w[1] - w[0]).as_millis())
        .collect();
    assert!(gaps.iter().all(|g| (100..=600).contains(g)), "{gaps:?}");
    figure(
        "service",
        &format!(
            "READY=1 {} ms after start (debug build, 1 camera); watchdog pings every {gaps:?} ms",
            (ready_at - t0).as_millis()
        ),
    );
    vigil.signal(Signal::SIGTERM);
    let (_, stopping) = expect(&rx, "STOPPING=1", Duration::from_secs(10));
    assert!(stopping.contains("SIGTERM"), "{stopping}");
    assert_eq!(vigil.wait_exit(Duration::from_secs(20)), 0);
}

fn config_text(dir: &std::path::Path, cam: &Camera) -> String {
    config(&dir.join("data"), &[("cam1", cam.url(1))], "")
}

#[test]
fn the_unit_passes_systemd_analyze_verify_and_is_hardened() {
    let unit = std::fs::read_to_string(repo().join("deploy/systemd/vigil.service")).unwrap();
    for line in [
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "ProtectSystem=strict",
        "ProtectProc=invisible",
        "NoNewPrivileges=yes",
        "User=vigil",
        "ReadWritePaths=/var/lib/vigil",
    ] {
        assert!(unit.contains(line), "the unit lacks {line}");
    }
    // verify also checks that ExecStart's program exists: point it at the binary under test.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vigil.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/vigil", VIGIL)).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (package systemd) is required");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.trim().is_empty(),
        "systemd-analyze verify: {text}"
    );
}

#[test]
fn install_puts_the_binary_the_unit_and_a_valid_config_in_place_and_keeps_an_edited_config() {
    let root = tempfile::tempdir().unwrap();
    let run = || {
        let out = Command::new("bash")
            .arg(repo().join("deploy/install.sh"))
            .args(["--binary", VIGIL, "--root"])
            .arg(root.path())
            .arg("--no-start")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "deploy/install.sh: {text}");
        text
    };
    let first = run();
    let r = root.path();
    use std::os::unix::fs::PermissionsExt as _;
    let mode = |p: &str| std::fs::metadata(r.join(p)).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode("usr/local/bin/vigil"), 0o755);
    assert_eq!(mode("etc/systemd/system/vigil.service"), 0o644);
    assert_eq!(
        mode("etc/vigil/vigil.toml"),
        0o640,
        "the config may hold camera passwords"
    );
    assert_eq!(mode("var/lib/vigil"), 0o750);
    let config = std::fs::read_to_string(r.join("etc/vigil/vigil.toml")).unwrap();
    assert!(config.contains("data_dir = \"/var/lib/vigil\""), "{config}");
    assert!(
        first.contains("wrote") && first.contains("not started"),
        "{first}"
    );
    // Re-running keeps an edited config.
    std::fs::write(
        r.join("etc/vigil/vigil.toml"),
        format!("{config}\n# edited\n"),
    )
    .unwrap();
    let second = run();
    assert!(second.contains("keeping the existing"), "{second}");
    assert!(
        std::fs::read_to_string(r.join("etc/vigil/vigil.toml"))
            .unwrap()
            .ends_with("# edited\n")
    );
}
