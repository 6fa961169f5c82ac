//! A private test bed per test: the project's own testbed/up.sh and down.sh, run with a private state folder and
//! free ports, so a test can stop and restart its own IPFS nodes or SecantusDB (an outage) without touching any
//! other test. Needs `testbed/install.sh ipfs mongo`; fails otherwise.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

use super::{free_port, repo};

pub struct Bed {
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
    pub ipfs_a: String,
    pub ipfs_b: String,
    pub mongo: String,
    started: std::sync::Mutex<Vec<String>>,
}

impl Bed {
    /// Start `services` (any of ipfs-a, ipfs-b, mongo) on free ports.
    pub fn start(services: &[&str]) -> Bed {
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<u16> = (0..7).map(|_| free_port()).collect();
        let env: Vec<(String, String)> = [
            ("VIGIL_TESTBED_DIR", dir.path().display().to_string()),
            ("VIGIL_IPFS_A_API_PORT", ports[0].to_string()),
            ("VIGIL_IPFS_A_GATEWAY_PORT", ports[1].to_string()),
            ("VIGIL_IPFS_A_SWARM_PORT", ports[2].to_string()),
            ("VIGIL_IPFS_B_API_PORT", ports[3].to_string()),
            ("VIGIL_IPFS_B_GATEWAY_PORT", ports[4].to_string()),
            ("VIGIL_IPFS_B_SWARM_PORT", ports[5].to_string()),
            ("VIGIL_MONGO_PORT", ports[6].to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let bed = Bed {
            dir,
            env,
            ipfs_a: format!("http://127.0.0.1:{}", ports[0]),
            ipfs_b: format!("http://127.0.0.1:{}", ports[3]),
            mongo: format!("mongodb://127.0.0.1:{}", ports[6]),
            started: Default::default(),
        };
        bed.up(services);
        bed
    }

    fn script(&self, name: &str, services: &[&str]) -> (bool, String) {
        let out = Command::new("bash")
            .arg(repo().join("testbed").join(name))
            .args(services)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .expect("run a testbed script");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// Start (or restart after an outage) these services; panics with the script's output on failure.
    pub fn up(&self, services: &[&str]) {
        let (ok, out) = self.script("up.sh", services);
        assert!(
            ok,
            "testbed/up.sh {services:?} failed (run testbed/install.sh ipfs mongo):\n{out}"
        );
        let mut s = self.started.lock().unwrap();
        for svc in services {
            if !s.iter().any(|x| x == svc) {
                s.push(svc.to_string());
            }
        }
    }

    /// Stop these services (an outage).
    pub fn down(&self, services: &[&str]) {
        let (ok, out) = self.script("down.sh", services);
        assert!(ok, "testbed/down.sh {services:?} failed:\n{out}");
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        let started: Vec<String> = self.started.lock().unwrap().clone();
        let refs: Vec<&str> = started.iter().map(String::as_str).collect();
        if !refs.is_empty() {
            let _ = self.script("down.sh", &refs);
        }
    }
}
