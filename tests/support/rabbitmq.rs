//! A private RabbitMQ broker for tests (the Debian package, `testbed/install.sh rabbitmq`): its own node name,
//! AMQP port, distribution port, epmd (on its own port, started here) and data folder, all on 127.0.0.1;
//! stopped — and restarted with the same data, for broker-restart tests — by its process group. FAILS
//! without RabbitMQ. Also a small AMQP client to read the dead-letter queue.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, wait_until};

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
        b.start_server();
        b
    }

    fn start_server(&mut self) {
        use std::os::unix::process::CommandExt;
        let d = self.dir.path();
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
        let addr = format!("127.0.0.1:{}", self.port);
        wait_until(
            "RabbitMQ answering on AMQP",
            Duration::from_secs(60),
            || std::net::TcpStream::connect(&addr).is_ok(),
        );
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
        self.start_server();
    }

    /// Start a stopped broker again, with its data.
    pub fn start_again(&mut self) {
        assert!(self.server.is_none(), "the broker is running");
        self.start_server();
    }

    /// The broker's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
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
