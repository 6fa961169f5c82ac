//! The whole supervision tree of a vigil node, declared in one place. `vigil tree` prints it and `vigil run`
//! starts it, from the same declaration.
//!
//! ```text
//! root                 one_for_one; too many restarts → vigil exits non-zero (systemd restarts it)
//! ├── services         one_for_one
//! │   └── web          HTTP server
//! └── cameras          one_for_one; one per enabled camera, more added and removed at run time
//!     └── <id>         rest_for_one
//!         ├── watcher  finished segments → catalog (started first, stops last)
//!         └── ffmpeg   one ffmpeg run per session folder; stall watchdog; camera probe during backoff
//! ```
//!
//! With `[ipfs]` configured, `services` also runs `ipfs_link`, `pinner`, `indexer` and `publisher` before
//! `web`; `mirror` (the storage role) when a remote camera is mirrored, and `replicas` (counting mirrors'
//! copies for retention) when this node records cameras. With `[control]`, `services` runs `control` (the AMQP
//! consumer, before `retention` and `web`) and, with `[ipfs]` and the transcoder role, `transcoder`. The
//! control plane adds and removes cameras, and starts and stops `mirror` and `transcoder` as roles change, at
//! run time; what it changed is merged over the config at start (see `control`).

use std::sync::Arc;
use std::time::Duration;

use supervisors::{ChildHandle, ChildSpec, Shutdown, SupervisorSpec};

use crate::capture;
use crate::catalog::{Catalog, Stage, Wake};
use crate::config::{Config, Secret};
use crate::control;
use crate::index::embedded::Embedded;
use crate::ipfs::cluster::Cluster;
use crate::ipfs::kubo::{Auth, Kubo};
use crate::ipfs::link::{IpfsLink, Link};
use crate::mirror;
use crate::pipeline::{Deps, IndexSource, Pinning, StageWorker};
use crate::retention;
use crate::web;

/// Backoff and intensity from the config's `[supervision]` table.
fn tuned(spec: SupervisorSpec, config: &Config) -> SupervisorSpec {
    config.supervision.apply(spec)
}

pub(crate) fn auth_of(basic: &Option<Secret>, bearer: &Option<Secret>) -> Option<Auth> {
    if let Some((user, password)) = basic.as_ref().and_then(|b| b.expose().split_once(':')) {
        return Some(Auth::Basic {
            user: user.to_string(),
            password: password.to_string(),
        });
    }
    bearer
        .as_ref()
        .map(|b| Auth::Bearer(b.expose().to_string()))
}

/// What the web server and the mirror share with the pipeline.
pub struct Shared {
    /// The index this node reads (MongoDB, or the embedded catalog).
    pub index: Arc<crate::index::Shared>,
    /// This node's IPFS API, when `[ipfs]` is configured.
    pub kubo: Option<Kubo>,
    /// The mirror's counters, when this node mirrors cameras.
    pub mirror: Option<Arc<mirror::Stats>>,
    /// The event counters (`/metrics`).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The IPFS API's link, when `[ipfs]` is configured.
    pub ipfs_link: Option<Link>,
    /// The index's link as the indexer sees it, when `[ipfs]` and `[index]` are configured.
    pub index_link: Option<Arc<crate::metrics::LinkCell>>,
    /// The AMQP broker's link, when `[control]` is configured.
    pub amqp_link: Option<Arc<crate::metrics::LinkCell>>,
    /// The cameras the web serves (the control plane adds and removes them).
    pub cameras: Arc<web::Registry>,
}

/// The index a node reads: MongoDB when `[index]` is configured, else the catalog.
pub fn shared_index(config: &Config, catalog: &Arc<Catalog>) -> Arc<crate::index::Shared> {
    Arc::new(match &config.index {
        Some(ix) => crate::index::Shared::mongo(&ix.mongodb_uri, &ix.database),
        None => crate::index::Shared::embedded(Arc::new(Embedded::new(
            catalog.clone(),
            &config.node_id,
        ))),
    })
}

/// The distribution stages (IpfsLink, Pinner, Indexer, Publisher), the mirror and the replica counter, when
/// `[ipfs]` is configured.
fn pipeline_children(
    config: &Config,
    catalog: &Arc<Catalog>,
    wake: &Arc<Wake>,
    shared: &mut Shared,
) -> crate::Result<Vec<ChildSpec>> {
    let Some(ipfs) = &config.ipfs else {
        return Ok(Vec::new());
    };
    let timeout = Duration::from_secs(ipfs.timeout_seconds);
    let kubo = Kubo::new(
        &ipfs.api,
        auth_of(&ipfs.basic_auth, &ipfs.bearer_token),
        timeout,
    )?;
    let (link_tx, link) = Link::new();
    let link_tx = Arc::new(link_tx);
    let (pinning, pin_about) = match &ipfs.cluster {
        Some(c) => (
            Pinning::Cluster {
                client: Cluster::new(&c.api, auth_of(&c.basic_auth, &None), timeout)?,
                min: c.replication_min,
                max: c.replication_max,
            },
            format!(
                "add to IPFS (CIDv1, raw leaves), pin on the cluster at {}",
                c.api
            ),
        ),
        None => (
            Pinning::Local,
            "add to IPFS (CIDv1, raw leaves), pin on the local node".to_string(),
        ),
    };
    let (index, index_about) = match &config.index {
        Some(ix) => (
            IndexSource::Mongo {
                uri: ix.mongodb_uri.clone(),
                database: ix.database.clone(),
            },
            format!("index documents in MongoDB database {:?}", ix.database),
        ),
        None => (
            IndexSource::Ready(Arc::new(Embedded::new(catalog.clone(), &config.node_id))),
            "index in the embedded catalog".to_string(),
        ),
    };
    shared.kubo = Some(kubo.clone());
    let mirrored: std::collections::HashMap<_, _> = config
        .remote_cameras
        .iter()
        .filter(|c| c.mirror)
        .map(|c| (c.id.clone(), c.clone()))
        .collect();
    let mirror_deps = (!mirrored.is_empty()).then(|| {
        let stats = Arc::new(mirror::Stats::default());
        shared.mirror = Some(stats.clone());
        Arc::new(mirror::Deps {
            catalog: catalog.clone(),
            data_dir: config.data_dir.clone(),
            node_id: config.node_id.clone(),
            kubo: kubo.clone(),
            link: link.clone(),
            index: shared.index.clone(),
            topic: ipfs.topic.clone(),
            cameras: mirrored,
            config: config.mirror.clone(),
            stats,
            metrics: shared.metrics.clone(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap_or_default(),
        })
    });
    let replica_counter = (!config.cameras.is_empty()).then(|| mirror::ReplicaCounter {
        catalog: catalog.clone(),
        kubo: kubo.clone(),
        link: link.clone(),
        topic: ipfs.topic.clone(),
        node_id: config.node_id.clone(),
        trusted: config.retention.mirror_peers.clone(),
    });
    let index_link = Arc::new(crate::metrics::LinkCell::default());
    if config.index.is_some() {
        shared.index_link = Some(index_link.clone());
    }
    shared.ipfs_link = Some(link.clone());
    let deps = Arc::new(Deps {
        catalog: catalog.clone(),
        data_dir: config.data_dir.clone(),
        node_id: config.node_id.clone(),
        kubo: kubo.clone(),
        pinning,
        link,
        index,
        topic: ipfs.topic.clone(),
        wake: wake.clone(),
        metrics: shared.metrics.clone(),
        index_link,
    });
    let daemon = ipfs.daemon.clone();
    let marker = config.data_dir.join("ipfs-daemon").display().to_string();
    let mut children = vec![
        ChildSpec::worker("ipfs_link", move |cx| {
            let link = IpfsLink::new(
                kubo.clone(),
                link_tx.clone(),
                cx.clock(),
                cx.exit.clone(),
                cx.path.clone(),
                daemon.clone(),
            )
            .with_marker(marker.clone());
            Ok(ChildHandle::actor(cx, link).0)
        })
        .shutdown(Shutdown::Timeout(Duration::from_secs(8)))
        .about(format!("health of the IPFS API at {}", ipfs.api)),
    ];
    let stages = [
        ("pinner", Stage::Pin, pin_about),
        ("indexer", Stage::Index, index_about),
        (
            "publisher",
            Stage::Publish,
            format!("announce on pubsub topic {:?}", ipfs.topic),
        ),
    ];
    for (id, stage, about) in stages {
        let deps = deps.clone();
        children.push(
            ChildSpec::worker(id, move |cx| {
                let worker = StageWorker::new(
                    stage,
                    deps.clone(),
                    cx.clock(),
                    cx.exit.clone(),
                    cx.path.clone(),
                );
                Ok(ChildHandle::actor(cx, worker).0)
            })
            .about(about),
        );
    }
    if let Some(deps) = mirror_deps {
        let about = format!(
            "storage role: mirror {} camera(s) announced on {:?}, heal gaps from the {}",
            deps.cameras.len(),
            ipfs.topic,
            if config.index.is_some() {
                "shared index"
            } else {
                "origins' listings"
            }
        );
        children.push(
            ChildSpec::worker("mirror", move |cx| {
                let m =
                    mirror::Mirror::new(deps.clone(), cx.clock(), cx.exit.clone(), cx.path.clone());
                Ok(ChildHandle::actor(cx, m).0)
            })
            .about(about),
        );
    }
    if let Some(counter) = replica_counter {
        let about = format!(
            "count mirrors' copies announced on {:?}",
            mirror::have_topic(&counter.topic)
        );
        children.push(
            ChildSpec::worker("replicas", move |cx| {
                let run = mirror::count_replicas(counter.clone(), cx.clock(), cx.path.clone());
                Ok(ChildHandle::task(
                    async move { supervisors::ExitReason::Failed(run.await) },
                    || {},
                ))
            })
            .about(about),
        );
    }
    Ok(children)
}

/// The root supervisor for `config`, recording into `catalog`, with `auth` guarding its HTTP server and
/// `metrics` counting what happens (install [`crate::metrics::Metrics::supervision`] on the runtime's events).
pub fn root(
    config: &Config,
    catalog: Arc<Catalog>,
    auth: Arc<crate::auth::Auth>,
    metrics: Arc<crate::metrics::Metrics>,
) -> crate::Result<SupervisorSpec> {
    Ok(root_with_slot(config, catalog, auth, metrics)?.0)
}

/// Where the running root supervisor goes once started (the control plane adds and removes cameras through
/// it): set it right after [`supervisors::Runtime::start`].
pub type RootSlot = Arc<std::sync::OnceLock<supervisors::SupervisorHandle>>;

/// [`root`], with the slot for the running root supervisor.
pub fn root_with_slot(
    config: &Config,
    catalog: Arc<Catalog>,
    auth: Arc<crate::auth::Auth>,
    metrics: Arc<crate::metrics::Metrics>,
) -> crate::Result<(SupervisorSpec, RootSlot)> {
    let wake = Arc::new(Wake::default());
    let board = Arc::new(capture::Board::default());
    // The cameras to record: the config file's, with the control plane's changes over them.
    let (recorded, served) = control::merged_cameras(config, &catalog)?;
    let registry = Arc::new(web::Registry::of(config));
    for cam in recorded.iter().chain(&served) {
        registry.put_local(cam);
    }
    let mut shared = Shared {
        index: shared_index(config, &catalog),
        kubo: None,
        mirror: None,
        metrics: metrics.clone(),
        ipfs_link: None,
        index_link: None,
        amqp_link: None,
        cameras: registry.clone(),
    };
    let roles = control::initial_roles(config, &catalog)?;
    let jobs = control::initial_jobs(config, &catalog)?;
    if !roles.contains(&"distributor") {
        for c in config.remote_cameras.iter().filter(|c| !c.mirror) {
            registry.remove(&c.id);
        }
    }
    // `services` and `cameras` are rebuilt from the control plane's current state whenever they (re)start, so a
    // restart after an escalation brings back what commands left, not what the node started with.
    let mut pipeline = Vec::new();
    let mut mirror_spec = None;
    for child in pipeline_children(config, &catalog, &wake, &mut shared)? {
        if child.id() == "mirror" {
            mirror_spec = Some(child);
        } else {
            pipeline.push(child);
        }
    }
    let levers = Arc::new(control::Levers::new(
        config,
        catalog.clone(),
        wake.clone(),
        board.clone(),
        metrics.clone(),
        registry,
        control::Initial {
            recorded: recorded.clone(),
            roles: roles.clone(),
            jobs,
        },
    ));
    if let Some(m) = &mirror_spec {
        levers.set_role_child("storage", m.clone());
    }
    // Only where the control plane can give it jobs.
    let transcoder = match (&shared.kubo, &config.control) {
        (Some(kubo), Some(ctl)) => {
            let spec = crate::transcode::child_spec(Arc::new(crate::transcode::Deps {
                jobs: levers.jobs.clone(),
                catalog: catalog.clone(),
                index: shared.index.clone(),
                kubo: kubo.clone(),
                data_dir: config.data_dir.clone(),
                node_id: config.node_id.clone(),
                ffmpeg: config.capture.ffmpeg.clone(),
                metrics: metrics.clone(),
                keep: Duration::from_secs(u64::from(ctl.variants_keep_days) * 86_400),
            }));
            levers.set_role_child("transcoder", spec.clone());
            Some(spec)
        }
        _ => None,
    };
    let slot = levers.root.clone();
    let control_child = match &config.control {
        Some(c) => {
            let key = control::command::Key::load(&c.key_file).map_err(crate::Error::Invalid)?;
            let link = Arc::new(crate::metrics::LinkCell::default());
            shared.amqp_link = Some(link.clone());
            Some(control::amqp::child_spec(levers.clone(), key, link))
        }
        None => None,
    };
    let tail = [
        retention::child_spec(config, catalog.clone(), metrics.clone()),
        web::child_spec(config, catalog.clone(), board.clone(), auth, shared),
    ];
    let services_base = tuned(SupervisorSpec::new("services"), config);
    let lv = levers.clone();
    let services = ChildSpec::supervisor_fn("services", move || {
        let mut s = services_base.clone();
        for c in &pipeline {
            s = s.child(c.clone());
        }
        if let Some(m) = &mirror_spec
            && lv.plays("storage")
        {
            s = s.child(m.clone());
        }
        if let Some(c) = &control_child {
            s = s.child(c.clone());
        }
        if let Some(t) = &transcoder
            && lv.plays("transcoder")
        {
            s = s.child(t.clone());
        }
        for c in &tail {
            s = s.child(c.clone());
        }
        s
    });
    let cameras_base = tuned(SupervisorSpec::new("cameras"), config)
        // A camera escalates only after a tight restart loop; many cameras doing so means something systemic.
        .intensity(100, Duration::from_secs(60))
        .dynamic_children("cameras added at run time");
    let lv = levers.clone();
    let cameras = ChildSpec::supervisor_fn("cameras", move || {
        let mut s = cameras_base.clone();
        if lv.plays("capture") {
            for cam in lv.recorded_cameras() {
                s = s.child(lv.camera_child(&cam));
            }
        }
        s
    });
    let root = tuned(SupervisorSpec::new("root"), config)
        .child(services)
        .child(cameras);
    Ok((root, slot))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory_catalog(_: &Config) -> Arc<Catalog> {
        Arc::new(Catalog::in_memory().unwrap())
    }

    fn test_auth(c: &Config) -> Arc<crate::auth::Auth> {
        let catalog = Arc::new(Catalog::in_memory().unwrap());
        Arc::new(crate::auth::Auth::ephemeral(catalog, c.auth.clone()).unwrap())
    }

    #[test]
    fn the_tree_has_services_with_web_and_a_dynamic_cameras_supervisor() {
        let config = Config::parse(
            "node_id = \"n1\"\ndata_dir = \"/tmp/x\"\n[supervision]\nmax_restarts = 3\nwithin_seconds = 30\n",
            std::path::Path::new("t.toml"),
        )
        .unwrap();
        let text = root(
            &config,
            memory_catalog(&config),
            test_auth(&config),
            Default::default(),
        )
        .unwrap()
        .render_tree();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "root  [supervisor, one_for_one, at most 3 restarts in 30 s]"
        );
        assert!(lines[1].starts_with("├── services  [supervisor"), "{text}");
        assert_eq!(
            lines[2],
            "│   ├── retention  [worker, permanent]: disk budget of /tmp/x: min free 5%, critical 1%"
        );
        assert!(
            lines[3].starts_with("│   └── web  [worker, permanent]"),
            "{text}"
        );
        assert!(lines[4].starts_with("└── cameras  [supervisor"), "{text}");
        assert!(lines[5].contains("added at run time"), "{text}");
        let with_cams = Config::parse(
            "node_id = \"n1\"\ndata_dir = \"/d\"\n[[cameras]]\nid = \"c1\"\nfactory_id = \"f\"\nurl = \"rtsp://h/1\"\n",
            std::path::Path::new("t.toml"),
        )
        .unwrap();
        let with_ipfs = Config::parse(
            "node_id = \"n1\"\ndata_dir = \"/d\"\n[ipfs]\napi = \"http://127.0.0.1:5001\"\n[index]\nmongodb_uri = \"mongodb://127.0.0.1:27017\"\n",
            std::path::Path::new("t.toml"),
        )
        .unwrap();
        let pipeline = root(
            &with_ipfs,
            memory_catalog(&with_ipfs),
            test_auth(&with_ipfs),
            Default::default(),
        )
        .unwrap()
        .render_tree();
        let services: Vec<&str> = pipeline.lines().skip(2).take(6).collect();
        assert!(services[0].starts_with("│   ├── ipfs_link  [worker, permanent]: health of the IPFS API at http://127.0.0.1:5001"), "{pipeline}");
        assert!(
            services[1].starts_with("│   ├── pinner  [worker, permanent]: add to IPFS"),
            "{pipeline}"
        );
        assert!(
            services[2]
                .starts_with("│   ├── indexer  [worker, permanent]: index documents in MongoDB"),
            "{pipeline}"
        );
        assert!(services[3].starts_with("│   ├── publisher  [worker, permanent]: announce on pubsub topic \"vigil-segments\""), "{pipeline}");
        assert!(services[4].starts_with("│   ├── retention"), "{pipeline}");
        assert!(services[5].starts_with("│   └── web"), "{pipeline}");
        let mirroring = Config::parse(
            "node_id = \"m1\"\ndata_dir = \"/d\"\n[ipfs]\napi = \"http://127.0.0.1:5001\"\n\
             [[remote_cameras]]\nid = \"c1\"\nfactory_id = \"f\"\n",
            std::path::Path::new("t.toml"),
        )
        .unwrap();
        let text = root(
            &mirroring,
            memory_catalog(&mirroring),
            test_auth(&mirroring),
            Default::default(),
        )
        .unwrap()
        .render_tree();
        assert!(
            text.contains("│   ├── mirror  [worker, permanent]: storage role: mirror 1 camera(s) announced on \"vigil-segments\", heal gaps from the origins' listings"),
            "{text}"
        );
        assert!(
            !text.contains("replicas"),
            "no cameras recorded here: {text}"
        );
        let text = root(
            &with_cams,
            memory_catalog(&with_cams),
            test_auth(&with_cams),
            Default::default(),
        )
        .unwrap()
        .render_tree();
        assert!(
            text.contains(
                "    ├── c1  [supervisor, rest_for_one, at most 60 restarts in 60 s, permanent]"
            ),
            "{text}"
        );
        assert!(
            text.contains("    │   ├── watcher  [worker, permanent]: /d/c1/ → catalog"),
            "{text}"
        );
        assert!(
            text.contains("    │   └── ffmpeg  [worker, permanent]: ffmpeg ← rtsp://h/1"),
            "{text}"
        );
    }
}
