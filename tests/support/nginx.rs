//! A private nginx for tests: a config made of the documented site files under deploy/nginx/, checked with
//! `nginx -t`, run in the foreground with its own prefix, stopped by its PID. Needs nginx
//! (`testbed/install.sh nginx`); FAILS without it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::wait_until;

pub const NGINX: &str = "/usr/sbin/nginx";

/// A private nginx serving `site` (an http-context config); stopped (by its PID) when dropped.
pub struct Nginx {
    child: Child,
    dir: PathBuf,
}

impl Nginx {
    /// `nginx -t` the config (the test fails on a refusal), start it, wait until it listens on `ports`.
    pub fn start(dir: &Path, site: &str, ports: &[u16]) -> Nginx {
        let d = dir.display();
        std::fs::create_dir_all(dir.join("acme")).unwrap();
        let conf = format!(
            "user root; worker_processes 1; daemon off; pid {d}/nginx.pid; error_log {d}/error.log;\n\
             events {{ worker_connections 512; }}\n\
             http {{\n\
             include /etc/nginx/mime.types; default_type application/octet-stream; sendfile on;\n\
             client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi;\n\
             uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
             {site}\n}}\n"
        );
        let path = dir.join("nginx.conf");
        std::fs::write(&path, conf).unwrap();
        let args = |extra: &[&str]| {
            let mut a: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
            a.extend([
                "-p".into(),
                format!("{d}/"),
                "-e".into(),
                format!("{d}/error.log"),
                "-c".into(),
                path.display().to_string(),
            ]);
            a
        };
        let test = Command::new(NGINX).args(args(&["-t"])).output().unwrap();
        assert!(
            test.status.success(),
            "nginx -t refuses the config:\n{}",
            String::from_utf8_lossy(&test.stderr)
        );
        let child = Command::new(NGINX)
            .args(args(&[]))
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut n = Nginx {
            child,
            dir: dir.to_path_buf(),
        };
        wait_until("nginx listens", Duration::from_secs(10), || {
            if let Ok(Some(status)) = n.child.try_wait() {
                panic!("nginx exited ({status}):\n{}", n.error_log());
            }
            ports
                .iter()
                .all(|p| std::net::TcpStream::connect(("127.0.0.1", *p)).is_ok())
        });
        n
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // The master stops its workers on SIGTERM.
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let _ = self.child.wait();
    }
}
