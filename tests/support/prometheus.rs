//! A private Prometheus for tests (the Debian package's binary, `testbed/install.sh prometheus`): its own
//! config, storage and free port on 127.0.0.1, scraping the given targets every second and evaluating the
//! given rule file every second; queried through its HTTP API; stopped by its PID. FAILS without Prometheus.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, http_get, wait_until};

pub const PROMETHEUS: &str = "/usr/bin/prometheus";
pub const PROMTOOL: &str = "/usr/bin/promtool";

pub struct Prometheus {
    child: Child,
    dir: tempfile::TempDir,
    pub addr: String,
}

impl Prometheus {
    /// Scrape `targets` (`host:port` of vigils, job "vigil") every second; load `rules` if given.
    pub fn start(targets: &[&str], rules: Option<&Path>) -> Prometheus {
        assert!(
            Path::new(PROMETHEUS).exists(),
            "{PROMETHEUS} missing: run testbed/install.sh prometheus"
        );
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let rule_files = rules.map_or(String::new(), |r| {
            format!("rule_files:\n  - {}\n", r.display())
        });
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n{rule_files}\
             scrape_configs:\n  - job_name: vigil\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        );
        let conf = dir.path().join("prometheus.yml");
        std::fs::write(&conf, config).unwrap();
        let check = Command::new(PROMTOOL)
            .args(["check", "config"])
            .arg(&conf)
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "promtool refuses the test's config: {}",
            String::from_utf8_lossy(&check.stdout)
        );
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", conf.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let p = Prometheus {
            child,
            dir,
            addr: format!("127.0.0.1:{port}"),
        };
        wait_until("Prometheus ready", Duration::from_secs(30), || {
            std::net::TcpStream::connect(&p.addr).is_ok()
                && http_get(&p.addr, "/-/ready").status == 200
        });
        p
    }

    /// Evaluate `expr` now: the result vector, or Prometheus' error.
    pub fn try_query(&self, expr: &str) -> Result<Vec<serde_json::Value>, String> {
        let q: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("query", expr)
            .finish();
        let r = http_get(&self.addr, &format!("/api/v1/query?{q}"));
        let v: serde_json::Value = serde_json::from_slice(&r.body)
            .map_err(|e| format!("HTTP {}: {e}: {}", r.status, r.text()))?;
        if v["status"] != "success" {
            return Err(format!(
                "{}: {}",
                v["errorType"].as_str().unwrap_or("?"),
                v["error"].as_str().unwrap_or("?")
            ));
        }
        Ok(match &v["data"]["result"] {
            serde_json::Value::Array(a) => a.clone(),
            // A scalar or string result: one value.
            other => vec![other.clone()],
        })
    }

    /// The result of `expr`; panics on an error.
    pub fn query(&self, expr: &str) -> Vec<serde_json::Value> {
        self.try_query(expr)
            .unwrap_or_else(|e| panic!("query {expr}: {e}"))
    }

    /// The sample values of `expr`'s result.
    pub fn values(&self, expr: &str) -> Vec<f64> {
        self.query(expr)
            .iter()
            .filter_map(|s| s["value"][1].as_str()?.parse().ok())
            .collect()
    }

    /// Firing alerts named `name`, with their labels.
    pub fn firing(&self, name: &str) -> Vec<serde_json::Value> {
        let r = http_get(&self.addr, "/api/v1/alerts");
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        v["data"]["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|a| a["labels"]["alertname"] == name && a["state"] == "firing")
            .collect()
    }

    /// Prometheus' own log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
