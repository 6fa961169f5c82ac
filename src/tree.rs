//! The whole supervision tree of a vigil node, declared in one place. `vigil tree` prints it and `vigil run`
//! starts it, from the same declaration.
//!
//! ```text
//! root                 one_for_one; too many restarts → vigil exits non-zero (systemd restarts it)
//! ├── services         one_for_one
//! │   └── web          HTTP server
//! └── cameras          one_for_one; one per enabled camera, more added and removed at run time
//!     └── <id>         rest_for_one
//!         ├── ffmpeg   one ffmpeg run per session folder; stall watchdog; camera probe during backoff
//!         └── watcher  finished segments → catalog
//! ```
//!
//! Later stages (IpfsLink, Pinner, Indexer, Publisher, Mirror, Retention, Control) join `services`.

use std::sync::Arc;
use std::time::Duration;

use supervisors::{BackoffPolicy, ChildSpec, SupervisorSpec};

use crate::capture;
use crate::catalog::Catalog;
use crate::config::Config;
use crate::web;

/// Backoff and intensity from the config's `[supervision]` table.
pub(crate) fn tuned(spec: SupervisorSpec, config: &Config) -> SupervisorSpec {
    let s = &config.supervision;
    spec.intensity(s.max_restarts, Duration::from_secs(s.within_seconds))
        .backoff(BackoffPolicy {
            initial: Duration::from_millis(s.backoff_initial_ms),
            max: Duration::from_secs(s.backoff_max_seconds),
            ..BackoffPolicy::default()
        })
}

/// The root supervisor for `config`, recording into `catalog`.
pub fn root(config: &Config, catalog: Arc<Catalog>) -> SupervisorSpec {
    let services = tuned(SupervisorSpec::new("services"), config)
        .child(web::child_spec(config, catalog.clone()));
    let mut cameras = tuned(SupervisorSpec::new("cameras"), config)
        // A camera escalates only after a tight restart loop; many cameras doing so means something systemic.
        .intensity(100, Duration::from_secs(60))
        .dynamic_children("cameras added at run time");
    for cam in config.cameras.iter().filter(|c| c.enabled) {
        cameras = cameras.child(ChildSpec::supervisor(capture::camera_spec(
            config,
            cam,
            catalog.clone(),
        )));
    }
    tuned(SupervisorSpec::new("root"), config)
        .child(ChildSpec::supervisor(services))
        .child(ChildSpec::supervisor(cameras))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tree_has_services_with_web_and_a_dynamic_cameras_supervisor() {
        let config = Config::parse(
            "node_id = \"n1\"\ndata_dir = \"/tmp/x\"\n[supervision]\nmax_restarts = 3\nwithin_seconds = 30\n",
            std::path::Path::new("t.toml"),
        )
        .unwrap();
        let text = root(&config, Arc::new(Catalog::in_memory().unwrap())).render_tree();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "root  [supervisor, one_for_one, at most 3 restarts in 30 s]"
        );
        assert!(lines[1].starts_with("├── services  [supervisor"), "{text}");
        assert!(
            lines[2].starts_with("│   └── web  [worker, permanent]"),
            "{text}"
        );
        assert!(lines[3].starts_with("└── cameras  [supervisor"), "{text}");
        assert!(lines[4].contains("added at run time"), "{text}");
        let with_cams = Config::parse(
            "node_id = \"n1\"\ndata_dir = \"/d\"\n[[cameras]]\nid = \"c1\"\nfactory_id = \"f\"\nurl = \"rtsp://h/1\"\n",
            std::path::Path::new("t.toml"),
        )
        .unwrap();
        let text = root(&with_cams, Arc::new(Catalog::in_memory().unwrap())).render_tree();
        assert!(
            text.contains(
                "    ├── c1  [supervisor, rest_for_one, at most 30 restarts in 60 s, permanent]"
            ),
            "{text}"
        );
        assert!(
            text.contains("    │   ├── ffmpeg  [worker, permanent]: ffmpeg ← rtsp://h/1"),
            "{text}"
        );
        assert!(
            text.contains("    │   └── watcher  [worker, permanent]: /d/c1/ → catalog"),
            "{text}"
        );
    }
}
