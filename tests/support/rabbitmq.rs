//! A private RabbitMQ broker for tests (the Debian package, `testbed/install.sh rabbitmq`): its own node name,
//! AMQP port, distribution port, epmd (on its own port, started here) and data folder, all on 127.0.0.1;
//! stopped — and restarted with the same data, for broker-restart tests — by its process group. FAILS
//! without RabbitMQ. Also a small AMQP client to read the dead-letter queue.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::free_port;

pub const RABBITMQ_SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";
pub const EPMD: &str = "/usr/bin/epmd";

pub struct Broker {
    dir: tempfile::TempDir,
    epmd: Child,
    server: Option<Child>,
    pub port: u16,
    dist_port: u16,
    epmd_port: u16,
    name: String,
}

impl Broker {
    /// Start a broker and wait until AMQP answers.
    pub fn start() -> Broker {
        assert!(
            Path::new(RABBITMQ_SERVER).exists(),
            "{RABBITMQ_SERVER} missing: run testbed/install.sh rabbitmq"
        );
        let dir = tempfile::tempdir().unwrap();
        let epmd_port = free_port();
        let epmd = Command::new(EPMD)
            .args(["-address", "127.0.0.1", "-port", &epmd_port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut b = Broker {
            name: format!("vigiltest{}x{epmd_port}@localhost", std::process::id()),
            dir,
            epmd,
            server: None,
            port: free_port(),
            dist_port: free_port(),
            epmd_port,
        };
        // Up to three tries, with fresh ports after one was taken by someone else.
        for attempt in 1.. {
            match b.start_server() {
                Ok(()) => break,
                Err(e) if attempt < 3 => {
                    eprintln!("{e}; starting it again on other ports");
                    b.port = free_port();
                    b.dist_port = free_port();
                }
                Err(e) => panic!("{e}; {}", b.log()),
            }
        }
        b
    }

    /// Start the server and wait until it listens on its AMQP port; an error if it exited first (e.g. another
    /// process took one of its ports meanwhile).
    fn start_server(&mut self) -> Result<(), String> {
        use std::os::unix::process::CommandExt;
        let dir = self.dir.path().to_path_buf();
        let d = dir.as_path();
        let listening = format!("started TCP listener on 127.0.0.1:{}", self.port);
        let node_log = self.node_log();
        let count = || {
            std::fs::read_to_string(&node_log)
                .map(|l| l.matches(&listening).count())
                .unwrap_or(0)
        };
        let listeners_before = count();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("server.log"))
            .unwrap();
        let child = Command::new(RABBITMQ_SERVER)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("ERL_EPMD_PORT", self.epmd_port.to_string())
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODENAME", &self.name)
            .env("RABBITMQ_MNESIA_BASE", d.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", d.join("log"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", d.join("enabled_plugins"))
            .env(
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                "-kernel inet_dist_use_interface {127,0,0,1}",
            )
            .current_dir(d)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.server = Some(child);
        // Our broker, not another test's that happens to hold the port (a port from `free_port` is free only
        // when it is picked): its own log says it listens there.
        let addr = format!("127.0.0.1:{}", self.port);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if count() > listeners_before && std::net::TcpStream::connect(&addr).is_ok() {
                return Ok(());
            }
            let exited = self
                .server
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                // Whatever of it is left in its group goes too.
                if let Some(c) = self.server.take() {
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(c.id() as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                return Err(format!(
                    "RabbitMQ exited ({status}) before it listened on {addr}"
                ));
            }
            assert!(
                std::time::Instant::now() < deadline,
                "RabbitMQ not listening on {addr} within 60 s; {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `amqp://guest:guest@127.0.0.1:<port>/%2f`.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// Stop the broker (SIGTERM to its process group, then wait for it).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.server.take() {
            let pgid = c.id() as i32;
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pgid),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            loop {
                if c.try_wait().ok().flatten().is_some() {
                    break;
                }
                if std::time::Instant::now() > deadline {
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(pgid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                    let _ = c.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            // The Erlang VM (a child in the same group) goes with the script; wait until its port is closed,
            // and kill the group if it is not within 10 s (no panic here: this also runs in Drop).
            let open = || std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok();
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while open() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if open() {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pgid),
                    nix::sys::signal::Signal::SIGKILL,
                );
                let deadline = std::time::Instant::now() + Duration::from_secs(10);
                while open() && std::time::Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }

    /// Start it again with the same data (durable queues and persistent messages survive).
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// Start a stopped broker again, with its data.
    pub fn start_again(&mut self) {
        assert!(self.server.is_none(), "the broker is running");
        if let Err(e) = self.start_server() {
            panic!("{e}; {}", self.log());
        }
    }

    /// The broker's output and its node's log so far.
    pub fn log(&self) -> String {
        let read = |p: std::path::PathBuf| std::fs::read_to_string(p).unwrap_or_default();
        format!(
            "{}\n-- node log:\n{}",
            read(self.dir.path().join("server.log")),
            read(self.node_log())
        )
    }

    /// The Erlang node's own log (where it says which ports it listens on).
    fn node_log(&self) -> std::path::PathBuf {
        self.dir
            .path()
            .join("log")
            .join(format!("{}.log", self.name))
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
        let _ = self.epmd.kill();
        let _ = self.epmd.wait();
    }
}

/// Every message now in `queue` (taken off it), with its string headers as `name=value` lines (e.g.
/// `x-first-death-queue=vigil.node.test`).
pub fn drain(url: &str, queue: &str) -> Vec<(Vec<u8>, String)> {
    use lapin::options::{BasicAckOptions, BasicGetOptions};
    super::rt().block_on(async {
        let conn = lapin::Connection::connect(url, lapin::ConnectionProperties::default())
            .await
            .unwrap();
        let ch = conn.create_channel().await.unwrap();
        let mut out = Vec::new();
        while let Some(m) = ch
            .basic_get(queue.into(), BasicGetOptions::default())
            .await
            .unwrap()
        {
            let mut headers = String::new();
            if let Some(t) = m.delivery.properties.headers() {
                for (k, v) in t.inner() {
                    if let lapin::types::AMQPValue::LongString(l) = v {
                        headers +=
                            &format!("{}={}\n", k.as_str(), String::from_utf8_lossy(l.as_bytes()));
                    }
                }
            }
            out.push((m.delivery.data.clone(), headers));
            m.delivery.ack(BasicAckOptions::default()).await.unwrap();
        }
        let _ = conn.close(200, "done".into()).await;
        out
    })
}
