//! The whole supervision tree of a vigil node, declared in one place. `vigil tree` prints it and `vigil run`
//! starts it, from the same declaration.
//!
//! ```text
//! root                 one_for_one; too many restarts → vigil exits non-zero (systemd restarts it)
//! ├── services         one_for_one
//! │   └── web          HTTP server
//! └── cameras          one_for_one; one `Camera <id>` supervisor per camera, added and removed at run time
//! ```
//!
//! Later stages (IpfsLink, Pinner, Indexer, Publisher, Mirror, Retention, Control) join `services`, and each
//! camera's `Ffmpeg` and `Watcher` join a rest_for_one `Camera <id>` supervisor, as they are built.

use std::time::Duration;

use supervisors::{BackoffPolicy, ChildSpec, SupervisorSpec};

use crate::config::Config;
use crate::web;

/// Backoff and intensity from the config's `[supervision]` table.
fn tuned(spec: SupervisorSpec, config: &Config) -> SupervisorSpec {
    let s = &config.supervision;
    spec.intensity(s.max_restarts, Duration::from_secs(s.within_seconds))
        .backoff(BackoffPolicy {
            initial: Duration::from_millis(s.backoff_initial_ms),
            max: Duration::from_secs(s.backoff_max_seconds),
            ..BackoffPolicy::default()
        })
}

/// The root supervisor for `config`.
pub fn root(config: &Config) -> SupervisorSpec {
    let services = tuned(SupervisorSpec::new("services"), config).child(web::child_spec(config));
    let cameras = tuned(SupervisorSpec::new("cameras"), config)
        .dynamic_children("one `Camera <id>` supervisor per enabled camera (capture path)");
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
        let text = root(&config).render_tree();
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
    }
}
