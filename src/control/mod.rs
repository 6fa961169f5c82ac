//! The control plane (`[control]`): signed JSON commands from an AMQP broker steer this node at run time.
//!
//! - [`command`]: the command format, its canonical form, HMAC-SHA256 signatures and every check.
//! - [`amqp`]: the `control` child — topology, consumer, replies, dead-lettering, heartbeats, reconnects.
//! - this file: what a checked command does ([`Levers::apply`]) and how the state commands left is merged
//!   with the config file at start ([`merged_cameras`]).
//!
//! The state commands leave is kept in the catalog (`control_cameras`, `control_meta`), with every command's
//! id and outcome (`control_commands`): a redelivered command is answered from memory and applied once.
//! Merge rule (docs/control.md): while `[control]` is configured, a camera touched by a command is as the
//! last command left it — added or changed (recorded with the command's settings) or removed (not recorded;
//! its footage stays served) — whatever the config file says about that id; the file decides every other
//! camera.

pub mod amqp;
pub mod command;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

use serde::{Deserialize, Serialize};
use supervisors::{ChildSpec, SupervisorHandle};

use crate::capture::{self, Board};
use crate::catalog::{Catalog, CommandOutcome, ControlChange, Wake};
use crate::config::{CameraConfig, Config, RtspUrl};
use crate::metrics::Metrics;
use command::{Command, Kind, Reason, Refusal};

/// The private fields a camera command may carry.
const CAMERA_PRIVATE: [&str; 2] = ["username", "password"];

/// The roles a node can play (DESIGN: Roles and the control plane).
pub const ROLES: [&str; 4] = ["capture", "storage", "distributor", "transcoder"];

/// The roles this node's config makes possible, each with what it needs when it is not possible.
pub fn available_roles(config: &Config) -> BTreeMap<&'static str, Result<(), String>> {
    let ipfs = config.ipfs.is_some();
    let mut m = BTreeMap::new();
    m.insert("capture", Ok(()));
    m.insert(
        "storage",
        if !ipfs {
            Err("storage needs [ipfs]".to_string())
        } else if !config.remote_cameras.iter().any(|c| c.mirror) {
            Err("storage needs a [[remote_cameras]] entry with mirror = true".to_string())
        } else {
            Ok(())
        },
    );
    m.insert(
        "distributor",
        if !config.remote_cameras.iter().any(|c| !c.mirror) {
            Err("distributor needs [[remote_cameras]] to serve (mirror = false)".to_string())
        } else {
            Ok(())
        },
    );
    m.insert(
        "transcoder",
        if ipfs {
            Ok(())
        } else {
            Err("transcoder needs [ipfs] (variants are added to IPFS)".to_string())
        },
    );
    m
}

/// The roles a node starts with: what the last node.configure left (while `[control]` is configured), else
/// `[control] roles`, else every role its config makes possible; never one it cannot play.
pub fn initial_roles(config: &Config, catalog: &Catalog) -> crate::Result<Vec<&'static str>> {
    let available = available_roles(config);
    let stored: Option<Vec<String>> = if config.control.is_some() {
        catalog
            .control_meta("roles")?
            .and_then(|s| serde_json::from_str(&s).ok())
    } else {
        None
    };
    let wanted: Option<Vec<String>> =
        stored.or_else(|| config.control.as_ref().and_then(|c| c.roles.clone()));
    Ok(ROLES
        .into_iter()
        .filter(|r| available.get(r).is_some_and(|a| a.is_ok()))
        .filter(|r| wanted.as_ref().is_none_or(|w| w.iter().any(|x| x == r)))
        .collect())
}

/// The jobs a node starts with (what job.start and job.stop left).
pub fn initial_jobs(
    config: &Config,
    catalog: &Catalog,
) -> crate::Result<Vec<crate::transcode::Job>> {
    if config.control.is_none() {
        return Ok(Vec::new());
    }
    Ok(catalog
        .control_meta("jobs")?
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default())
}

/// At most this many transcoding jobs run on one node.
pub const MAX_JOBS: usize = 8;

/// A camera's settings as a command gives them and the catalog keeps them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraSettings {
    pub id: String,
    pub factory_id: String,
    /// Without credentials (they come in the command's `private` part).
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stall_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_duration: Option<u32>,
}

/// What the catalog keeps of a camera a command added: its settings and credentials.
#[derive(Clone, Serialize, Deserialize)]
struct StoredCamera {
    settings: CameraSettings,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

impl StoredCamera {
    fn camera(&self) -> Result<CameraConfig, String> {
        let s = &self.settings;
        let mut url = url::Url::parse(&s.url).map_err(|e| format!("url: {e}"))?;
        if let Some(u) = &self.username {
            url.set_username(u)
                .map_err(|_| "url: cannot carry a user name".to_string())?;
        }
        if let Some(p) = &self.password {
            url.set_password(Some(p))
                .map_err(|_| "url: cannot carry a password".to_string())?;
        }
        Ok(CameraConfig {
            id: s.id.clone(),
            factory_id: s.factory_id.clone(),
            url: RtspUrl::new(url.to_string()),
            segment_seconds: s.segment_seconds.unwrap_or(2),
            stall_seconds: s.stall_seconds.unwrap_or(3),
            target_duration: s.target_duration,
            enabled: true,
        })
    }
}

/// The cameras to record and the ones only to serve (removed by a command: footage stays), after merging the
/// commands' state over the config file (see the module docs).
pub fn merged_cameras(
    config: &Config,
    catalog: &Catalog,
) -> crate::Result<(Vec<CameraConfig>, Vec<CameraConfig>)> {
    let mut recorded: BTreeMap<String, CameraConfig> = config
        .cameras
        .iter()
        .filter(|c| c.enabled)
        .map(|c| (c.id.clone(), c.clone()))
        .collect();
    let mut served = Vec::new();
    if config.control.is_none() {
        return Ok((recorded.into_values().collect(), served));
    }
    for row in catalog.control_cameras()? {
        let stored: StoredCamera = match serde_json::from_str(&row.spec) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(camera = %row.id, "the control state of this camera cannot be read ({e}); the config file decides it");
                continue;
            }
        };
        let cam = match stored.camera() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(camera = %row.id, "the control state of this camera is unusable ({e}); the config file decides it");
                continue;
            }
        };
        recorded.remove(&row.id);
        if row.state == "active" {
            recorded.insert(row.id.clone(), cam);
        } else {
            served.push(cam);
        }
    }
    Ok((recorded.into_values().collect(), served))
}

/// A reply's body (see docs/control.md): the outcome of one command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    /// The command's id (null when it could not be read).
    pub id: Option<String>,
    pub node: String,
    pub ok: bool,
    /// The refusal's reason (a stable word) when not ok.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What happened or why not, in plain words.
    pub detail: String,
    /// True when the command had been handled before (a redelivery): this is the first answer again.
    #[serde(default)]
    pub duplicate: bool,
    /// What the command produced (`node.status`: the status).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
}

/// What the control plane can change, shared with the `control` child.
pub struct Levers {
    pub config: Config,
    pub catalog: Arc<Catalog>,
    pub wake: Arc<Wake>,
    pub board: Arc<Board>,
    pub metrics: Arc<Metrics>,
    pub registry: Arc<crate::web::Registry>,
    /// The root supervisor, set once the tree runs (camera changes go to its `cameras` supervisor).
    pub root: Arc<OnceLock<SupervisorHandle>>,
    /// The cameras recorded now, by id (while the capture role is off: the ones to record when it is on).
    recorded: Mutex<BTreeMap<String, CameraConfig>>,
    /// The roles played now.
    roles: Mutex<Vec<&'static str>>,
    /// Transcoding jobs (the transcoder child works them off).
    pub jobs: Arc<crate::transcode::Jobs>,
    /// Children that a role switch starts and stops: `mirror` (storage) and `transcoder`.
    role_children: Mutex<BTreeMap<&'static str, ChildSpec>>,
    /// One command at a time.
    applying: tokio::sync::Mutex<()>,
}

/// What a node starts with: the cameras to record, the roles, the jobs (config merged with the control state).
pub struct Initial {
    pub recorded: Vec<CameraConfig>,
    pub roles: Vec<&'static str>,
    pub jobs: Vec<crate::transcode::Job>,
}

/// An applied command's outcome: what to say, and what to remember.
struct Applied {
    detail: String,
    change: ControlChange,
    result: Option<serde_json::Value>,
}

impl Levers {
    pub fn new(
        config: &Config,
        catalog: Arc<Catalog>,
        wake: Arc<Wake>,
        board: Arc<Board>,
        metrics: Arc<Metrics>,
        registry: Arc<crate::web::Registry>,
        initial: Initial,
    ) -> Levers {
        let Initial {
            recorded,
            roles,
            jobs,
        } = initial;
        metrics.control_jobs(jobs.len() as i64);
        Levers {
            config: config.clone(),
            catalog,
            wake,
            board,
            metrics,
            registry,
            root: Arc::new(OnceLock::new()),
            recorded: Mutex::new(recorded.iter().map(|c| (c.id.clone(), c.clone())).collect()),
            roles: Mutex::new(roles),
            jobs: Arc::new(crate::transcode::Jobs::from(jobs)),
            role_children: Mutex::new(BTreeMap::new()),
            applying: tokio::sync::Mutex::new(()),
        }
    }

    /// Declare the child a role starts (`storage` → mirror, `transcoder` → transcoder).
    pub fn set_role_child(&self, role: &'static str, spec: ChildSpec) {
        self.role_children
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(role, spec);
    }

    /// Whether `role` is played now.
    pub fn plays(&self, role: &str) -> bool {
        self.roles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&role)
    }

    /// The camera supervisor spec of `cam`.
    pub fn camera_child(&self, cam: &CameraConfig) -> ChildSpec {
        let rt = capture::CameraRuntime::new(
            &self.config,
            cam,
            self.catalog.clone(),
            self.wake.clone(),
            &self.board,
            self.metrics.clone(),
        );
        ChildSpec::supervisor(capture::camera_spec(&self.config, Arc::new(rt)))
    }

    fn window_ms(&self) -> i64 {
        self.config
            .control
            .as_ref()
            .map_or(300, |c| i64::from(c.window_seconds))
            * 1000
    }

    /// The cameras recorded now (or to record when the capture role is turned on).
    pub fn recorded_cameras(&self) -> Vec<CameraConfig> {
        self.recorded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Ids of the cameras recorded now.
    pub fn recorded_ids(&self) -> Vec<String> {
        self.recorded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// This node's status: what heartbeats and `node.status` carry.
    pub fn status(&self) -> serde_json::Value {
        let recorded = self.recorded_ids();
        let cameras: Vec<serde_json::Value> = self
            .registry
            .summary()
            .into_iter()
            .map(|(id, factory, kind)| {
                let state = self.board.get(&id).map(|s| s.state.as_str());
                let recording = recorded.contains(&id);
                serde_json::json!({
                    "id": id,
                    "factory_id": factory,
                    "kind": kind,
                    "recorded_here": recording,
                    "state": if kind == "local" { state.or(Some("stopped")) } else { None },
                })
            })
            .collect();
        serde_json::json!({
            "node": self.config.node_id,
            "version": env!("CARGO_PKG_VERSION"),
            "roles": self.roles(),
            "cameras": cameras,
            "capacity": {
                "cpus": std::thread::available_parallelism().map_or(1, |n| n.get()),
                "cameras_recorded": recorded.len(),
            },
            "active_jobs": self.jobs.len(),
            "jobs": self.jobs.list().iter().map(|j| serde_json::json!({
                "job_id": j.id, "camera": j.camera,
                "renditions": j.ladder.iter().map(|r| r.name.clone()).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        })
    }

    /// The roles this node plays now.
    pub fn roles(&self) -> Vec<&'static str> {
        self.roles.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Handle a checked command: answer a redelivery from memory, else apply it and remember the outcome
    /// (with its change, in one transaction). Returns the reply.
    pub async fn apply(self: &Arc<Self>, cmd: Command) -> crate::Result<Reply> {
        let _one = self.applying.lock().await;
        let node = self.config.node_id.clone();
        let id = cmd.id.clone();
        let lookup = {
            let id = id.clone();
            self.catalog.run(move |c| c.command_outcome(&id)).await
        };
        match lookup {
            Ok(Some(seen)) => {
                self.metrics.control_command("duplicate");
                return Ok(Reply {
                    id: Some(id),
                    node,
                    ok: seen.ok,
                    reason: seen.reason,
                    detail: seen.detail.unwrap_or_default(),
                    duplicate: true,
                    result: seen.result.and_then(|r| serde_json::from_str(&r).ok()),
                });
            }
            Ok(None) => {}
            Err(e) => {
                self.metrics.control_command(Reason::Failed.as_str());
                return Ok(refused(
                    Some(id),
                    node,
                    &Refusal::new(Reason::Failed, format!("the catalog cannot be read: {e}")),
                ));
            }
        }
        let kind = cmd.kind;
        let outcome = self.apply_new(&cmd).await;
        let (stored, change, reply) = match outcome {
            Ok(applied) => (
                CommandOutcome {
                    kind: kind.as_str().into(),
                    ok: true,
                    reason: None,
                    detail: Some(applied.detail.clone()),
                    result: applied.result.as_ref().map(|r| r.to_string()),
                },
                applied.change,
                Reply {
                    id: Some(id.clone()),
                    node: node.clone(),
                    ok: true,
                    reason: None,
                    detail: applied.detail,
                    duplicate: false,
                    result: applied.result,
                },
            ),
            Err(r) => (
                CommandOutcome {
                    kind: kind.as_str().into(),
                    ok: false,
                    reason: Some(r.reason.as_str().into()),
                    detail: Some(r.detail.clone()),
                    result: None,
                },
                ControlChange::default(),
                refused(Some(id.clone()), node.clone(), &r),
            ),
        };
        // node.status changes nothing and is not worth remembering; a `failed` command changed nothing and may
        // be sent again with the same id.
        let failed = reply.reason.as_deref() == Some(Reason::Failed.as_str());
        if kind != Kind::NodeStatus && !failed {
            let forget_before = chrono::Utc::now().timestamp_millis() - 2 * self.window_ms();
            let (rid, st, ch) = (id.clone(), stored, change);
            if let Err(e) = self
                .catalog
                .run(move |c| c.record_command(&rid, &st, &ch, forget_before))
                .await
            {
                // Not acknowledged: the broker delivers it again after a reconnect, and applying it again is
                // harmless (a camera.add of the same camera is answered "recorded already").
                tracing::error!(command = %id, "the command's outcome could not be stored ({e}); it stays in the queue");
                return Err(e);
            }
        }
        self.metrics.control_command(if reply.ok {
            "ok"
        } else {
            reply
                .reason
                .as_deref()
                .and_then(Reason::parse)
                .map_or("failed", Reason::as_str)
        });
        Ok(reply)
    }

    async fn apply_new(self: &Arc<Self>, cmd: &Command) -> Result<Applied, Refusal> {
        match cmd.kind {
            Kind::NodeStatus => {
                no_private(cmd)?;
                Ok(Applied {
                    detail: "status attached".into(),
                    change: ControlChange::default(),
                    result: Some(self.status()),
                })
            }
            Kind::CameraAdd | Kind::CameraUpdate => self.camera_set(cmd).await,
            Kind::CameraRemove => self.camera_remove(cmd).await,
            Kind::NodeConfigure => self.configure(cmd).await,
            Kind::JobStart => self.job_start(cmd),
            Kind::JobStop => self.job_stop(cmd),
        }
    }

    async fn cameras_supervisor(&self) -> Result<SupervisorHandle, Refusal> {
        let root = self.root.get().ok_or_else(|| {
            Refusal::new(
                Reason::Failed,
                "the supervision tree is still starting; send again",
            )
        })?;
        root.supervisor("cameras").await.map_err(|e| {
            Refusal::new(
                Reason::Failed,
                format!("the cameras supervisor cannot be reached: {e}"),
            )
        })
    }

    async fn camera_set(self: &Arc<Self>, cmd: &Command) -> Result<Applied, Refusal> {
        let adding = cmd.kind == Kind::CameraAdd;
        let settings: CameraSettings = match cmd.public.get("camera") {
            Some(v) => serde_json::from_value(v.clone())
                .map_err(|e| Refusal::new(Reason::Invalid, format!("public.camera: {e}")))?,
            None => {
                return Err(Refusal::new(
                    Reason::Invalid,
                    "public.camera is missing: {id, factory_id, url, segment_seconds?, stall_seconds?, target_duration?}",
                ));
            }
        };
        if let Some(extra) = cmd.public.keys().find(|k| *k != "camera") {
            return Err(Refusal::new(
                Reason::Invalid,
                format!("unknown field public.{extra}"),
            ));
        }
        if let Some(extra) = cmd.private.keys().find(|k| !CAMERA_PRIVATE.contains(k)) {
            return Err(Refusal::new(
                Reason::Invalid,
                format!(
                    "unknown field private.{extra} (a camera's private part has username and password)"
                ),
            ));
        }
        let public_url = url::Url::parse(&settings.url)
            .map_err(|e| Refusal::new(Reason::Invalid, format!("public.camera.url: {e}")))?;
        if !public_url.username().is_empty() || public_url.password().is_some() {
            // Said without the URL: it holds a secret.
            return Err(Refusal::new(
                Reason::Invalid,
                "public.camera.url carries credentials: put them in private.username and private.password",
            ));
        }
        let stored = StoredCamera {
            settings: settings.clone(),
            username: cmd.private.get("username").map(str::to_string),
            password: cmd.private.get("password").map(str::to_string),
        };
        // The config's own checks, on the camera with its public URL (no secret in any message).
        let mut probe = self.config.clone();
        probe.cameras = vec![
            StoredCamera {
                settings: settings.clone(),
                username: None,
                password: None,
            }
            .camera()
            .map_err(|e| Refusal::new(Reason::Invalid, e))?,
        ];
        probe.control = None;
        let problems = probe.problems();
        if !problems.is_empty() {
            let text: Vec<String> = problems
                .iter()
                .map(|p| {
                    format!(
                        "{}: {}",
                        p.field.replacen("cameras[0]", "public.camera", 1),
                        p.message
                    )
                })
                .collect();
            return Err(Refusal::new(Reason::Invalid, text.join("; ")));
        }
        let cam = stored.camera().map_err(|_| {
            Refusal::new(
                Reason::Invalid,
                "private.username or private.password cannot go into the URL",
            )
        })?;
        let id = settings.id.clone();
        let current = self
            .recorded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned();
        let exists = current.is_some();
        let spec = serde_json::to_string(&stored).unwrap_or_default();
        if adding && current.as_ref() == Some(&cam) {
            // The same camera.add again (resent after its outcome could not be stored): nothing to do.
            return Ok(Applied {
                detail: format!("camera {id:?} is recorded with these settings already"),
                change: ControlChange {
                    camera: Some((id, "active".into(), spec)),
                    meta: None,
                },
                result: None,
            });
        }
        if adding && exists {
            return Err(Refusal::new(
                Reason::Conflict,
                format!("camera {id:?} is already recorded here (camera.update changes it)"),
            ));
        }
        if !adding && !exists {
            return Err(Refusal::new(
                Reason::Conflict,
                format!("camera {id:?} is not recorded here (camera.add adds it)"),
            ));
        }
        if adding && self.registry.contains(&id) && !self.is_local(&id) {
            return Err(Refusal::new(
                Reason::Conflict,
                format!("camera {id:?} is served here as a remote or mirrored camera"),
            ));
        }
        if !self.plays("capture") {
            return Err(Refusal::new(
                Reason::Unsupported,
                "this node does not play the capture role now (node.configure turns it on)",
            ));
        }
        let cameras = self.cameras_supervisor().await?;
        if !adding {
            stop_child(&cameras, &id).await?;
        }
        if let Err(e) = self.start_camera(&cameras, &cam).await {
            // Back to the old settings, so that what runs is what the node says it runs.
            if let Some(old) = &current
                && self.start_camera(&cameras, old).await.is_ok()
            {
                return Err(Refusal::new(
                    Reason::Failed,
                    format!("{e}; the camera records with its old settings"),
                ));
            }
            self.recorded
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
            return Err(Refusal::new(
                Reason::Failed,
                format!("{e}; the camera is stopped until a camera.add starts it"),
            ));
        }
        self.registry.put_local(&cam);
        self.recorded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), cam);
        tracing::info!(camera = %id, factory = %settings.factory_id, url = %public_url, command = %cmd.id,
            "{} by command; recording", if adding { "camera added" } else { "camera changed" });
        Ok(Applied {
            detail: format!(
                "camera {id:?} {}",
                if adding {
                    "added; recording"
                } else {
                    "changed; recording with the new settings"
                }
            ),
            change: ControlChange {
                camera: Some((id, "active".into(), spec)),
                meta: None,
            },
            result: None,
        })
    }

    /// Start `cam`'s supervisor under `cameras` (its runtime is made off the supervisors' thread: it reads the
    /// catalog).
    async fn start_camera(
        self: &Arc<Self>,
        cameras: &SupervisorHandle,
        cam: &CameraConfig,
    ) -> Result<(), String> {
        let me = self.clone();
        let c = cam.clone();
        let child = tokio::task::spawn_blocking(move || me.camera_child(&c))
            .await
            .map_err(|e| format!("camera setup: {e}"))?;
        match cameras.add_child(child).await {
            // Already running (e.g. its supervisor was rebuilt with it): what was asked for.
            Ok(()) | Err(supervisors::Error::DuplicateChild(_)) => Ok(()),
            Err(e) => Err(format!("camera {:?} could not be started: {e}", cam.id)),
        }
    }

    async fn services_supervisor(&self) -> Result<SupervisorHandle, Refusal> {
        let root = self.root.get().ok_or_else(|| {
            Refusal::new(
                Reason::Failed,
                "the supervision tree is still starting; send again",
            )
        })?;
        root.supervisor("services").await.map_err(|e| {
            Refusal::new(
                Reason::Failed,
                format!("the services supervisor cannot be reached: {e}"),
            )
        })
    }

    /// node.configure: `public.roles` is the full list of roles to play; the difference is started and stopped.
    async fn configure(self: &Arc<Self>, cmd: &Command) -> Result<Applied, Refusal> {
        no_private(cmd)?;
        if let Some(extra) = cmd.public.keys().find(|k| *k != "roles") {
            return Err(Refusal::new(
                Reason::Invalid,
                format!("unknown field public.{extra}"),
            ));
        }
        let wanted: Vec<String> = match cmd.public.get("roles") {
            Some(v) => serde_json::from_value(v.clone()).map_err(|_| {
                Refusal::new(Reason::Invalid, "public.roles must be a list of role names")
            })?,
            None => return Err(Refusal::new(Reason::Invalid, "public.roles is missing")),
        };
        let mut next: Vec<&'static str> = Vec::new();
        for w in &wanted {
            let Some(r) = ROLES.into_iter().find(|r| r == w) else {
                let shown: String = w.chars().take(32).collect();
                return Err(Refusal::new(
                    Reason::Invalid,
                    format!("unknown role {shown:?} (roles: {})", ROLES.join(", ")),
                ));
            };
            if !next.contains(&r) {
                next.push(r);
            }
        }
        let available = available_roles(&self.config);
        for r in &next {
            if let Some(Err(why)) = available.get(r) {
                return Err(Refusal::new(
                    Reason::Unsupported,
                    format!("this node cannot play {r}: {why}"),
                ));
            }
        }
        let before = self.roles();
        let on: Vec<&'static str> = next
            .iter()
            .copied()
            .filter(|r| !before.contains(r))
            .collect();
        let off: Vec<&'static str> = before
            .iter()
            .copied()
            .filter(|r| !next.contains(r))
            .collect();
        // Role by role, so that the roles the node says it plays are the ones it does, even if one fails.
        let mut done: Vec<String> = Vec::new();
        let steps = off
            .iter()
            .map(|r| (*r, false))
            .chain(on.iter().map(|r| (*r, true)));
        for (r, up) in steps {
            if let Err(e) = self.switch(r, up).await {
                return Err(Refusal::new(
                    Reason::Failed,
                    format!(
                        "{} (done before it: [{}]; roles now [{}], not stored)",
                        e.detail,
                        done.join(", "),
                        self.roles().join(", ")
                    ),
                ));
            }
            {
                let mut roles = self.roles.lock().unwrap_or_else(|p| p.into_inner());
                roles.retain(|x| *x != r);
                if up {
                    roles.push(r);
                }
                roles.sort_by_key(|x| ROLES.iter().position(|y| y == x));
            }
            done.push(format!("{} {r}", if up { "started" } else { "stopped" }));
        }
        next.sort_by_key(|r| ROLES.iter().position(|x| x == r));
        tracing::info!(command = %cmd.id, roles = ?next, started = ?on, stopped = ?off, "roles changed by command");
        Ok(Applied {
            detail: format!(
                "roles now [{}] (started: [{}], stopped: [{}])",
                next.join(", "),
                on.join(", "),
                off.join(", ")
            ),
            change: ControlChange {
                camera: None,
                meta: Some((
                    "roles".into(),
                    serde_json::to_string(&next).unwrap_or_else(|_| "[]".into()),
                )),
            },
            result: Some(serde_json::json!({ "roles": next })),
        })
    }

    /// Start (`on`) or stop what `role` runs.
    async fn switch(self: &Arc<Self>, role: &'static str, on: bool) -> Result<(), Refusal> {
        let failed = |what: String| Refusal::new(Reason::Failed, what);
        match role {
            "capture" => {
                let cameras = self.cameras_supervisor().await?;
                let cams: Vec<CameraConfig> = self
                    .recorded
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .values()
                    .cloned()
                    .collect();
                for cam in cams {
                    if on {
                        self.start_camera(&cameras, &cam).await.map_err(failed)?;
                    } else {
                        stop_child(&cameras, &cam.id).await?;
                    }
                }
            }
            "distributor" => {
                for c in self.config.remote_cameras.iter().filter(|c| !c.mirror) {
                    if on {
                        self.registry.put_remote(c);
                    } else {
                        self.registry.remove(&c.id);
                    }
                }
            }
            "storage" | "transcoder" => {
                let child_id = if role == "storage" {
                    "mirror"
                } else {
                    "transcoder"
                };
                let spec = self
                    .role_children
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(role)
                    .cloned();
                let Some(spec) = spec else {
                    return Err(failed(format!("{role} has nothing to run on this node")));
                };
                let services = self.services_supervisor().await?;
                if on {
                    match services.add_child(spec).await {
                        Ok(()) | Err(supervisors::Error::DuplicateChild(_)) => {}
                        Err(e) => {
                            return Err(failed(format!("{child_id} could not be started: {e}")));
                        }
                    }
                } else {
                    stop_child(&services, child_id).await?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn job_start(&self, cmd: &Command) -> Result<Applied, Refusal> {
        no_private(cmd)?;
        if !self.plays("transcoder") {
            return Err(Refusal::new(
                Reason::Unsupported,
                "this node does not play the transcoder role now",
            ));
        }
        let req: crate::transcode::JobStart =
            serde_json::from_value(serde_json::Value::Object(cmd.public.clone()))
                .map_err(|e| Refusal::new(Reason::Invalid, format!("public: {e}")))?;
        req.check().map_err(|e| Refusal::new(Reason::Invalid, e))?;
        if self.jobs.get(&req.job_id).is_some() {
            return Err(Refusal::new(
                Reason::Conflict,
                format!("job {:?} runs already (job.stop ends it)", req.job_id),
            ));
        }
        if self.jobs.len() >= MAX_JOBS {
            return Err(Refusal::new(
                Reason::Conflict,
                format!("this node runs {MAX_JOBS} jobs already"),
            ));
        }
        let job = crate::transcode::Job {
            id: req.job_id.clone(),
            camera: req.camera.clone(),
            ladder: req.ladder.clone(),
            started_ms: chrono::Utc::now().timestamp_millis(),
        };
        self.jobs.put(job);
        self.metrics.control_jobs(1);
        tracing::info!(command = %cmd.id, job = %req.job_id, camera = %req.camera,
            renditions = ?req.ladder.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), "transcoding job started");
        Ok(Applied {
            detail: format!(
                "job {:?} started: camera {:?} → {}",
                req.job_id,
                req.camera,
                req.ladder
                    .iter()
                    .map(|r| format!("{} {}x{} {} kb/s", r.name, r.width, r.height, r.video_kbps))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            change: ControlChange {
                camera: None,
                meta: Some(("jobs".into(), self.jobs.to_json())),
            },
            result: Some(serde_json::json!({ "job_id": req.job_id, "camera": req.camera })),
        })
    }

    fn job_stop(&self, cmd: &Command) -> Result<Applied, Refusal> {
        no_private(cmd)?;
        let id = match cmd.public.get("job_id") {
            Some(serde_json::Value::String(s)) => s.clone(),
            _ => {
                return Err(Refusal::new(
                    Reason::Invalid,
                    "public.job_id (a string) names the job",
                ));
            }
        };
        if let Some(extra) = cmd.public.keys().find(|k| *k != "job_id") {
            return Err(Refusal::new(
                Reason::Invalid,
                format!("unknown field public.{extra}"),
            ));
        }
        let Some(job) = self.jobs.remove(&id) else {
            let shown: String = id.chars().take(64).collect();
            return Err(Refusal::new(
                Reason::Conflict,
                format!("no job {shown:?} runs here"),
            ));
        };
        self.metrics.control_jobs(-1);
        tracing::info!(command = %cmd.id, job = %id, camera = %job.camera, "transcoding job stopped");
        Ok(Applied {
            detail: format!("job {id:?} stopped; its variants stay"),
            change: ControlChange {
                camera: None,
                meta: Some(("jobs".into(), self.jobs.to_json())),
            },
            result: Some(serde_json::json!({ "job_id": id, "camera": job.camera })),
        })
    }

    fn is_local(&self, id: &str) -> bool {
        self.registry
            .summary()
            .iter()
            .any(|(i, _, kind)| i == id && *kind == "local")
    }

    async fn camera_remove(self: &Arc<Self>, cmd: &Command) -> Result<Applied, Refusal> {
        no_private(cmd)?;
        let id = match cmd.public.get("camera_id") {
            Some(serde_json::Value::String(s)) => s.clone(),
            _ => {
                return Err(Refusal::new(
                    Reason::Invalid,
                    "public.camera_id (a string) names the camera to remove",
                ));
            }
        };
        if let Some(extra) = cmd.public.keys().find(|k| *k != "camera_id") {
            return Err(Refusal::new(
                Reason::Invalid,
                format!("unknown field public.{extra}"),
            ));
        }
        let cam = self
            .recorded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned();
        let Some(cam) = cam else {
            let shown: String = id.chars().take(64).collect();
            return Err(Refusal::new(
                Reason::Conflict,
                format!("camera {shown:?} is not recorded here"),
            ));
        };
        let cameras = self.cameras_supervisor().await?;
        // Stops ffmpeg first, then the watcher, which catalogues the last (partial) segment.
        cameras.remove_child(&id).await.map_err(|e| {
            Refusal::new(
                Reason::Failed,
                format!("camera {id:?} could not be stopped: {e}"),
            )
        })?;
        self.recorded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        // Kept in the catalog with its settings (not its credentials' use: it is not recorded).
        let stored = StoredCamera {
            settings: CameraSettings {
                id: cam.id.clone(),
                factory_id: cam.factory_id.clone(),
                url: cam.redacted_url(),
                segment_seconds: Some(cam.segment_seconds),
                stall_seconds: Some(cam.stall_seconds),
                target_duration: cam.target_duration,
            },
            username: None,
            password: None,
        };
        tracing::info!(camera = %id, command = %cmd.id, "camera removed by command: recording stopped, its footage stays served");
        Ok(Applied {
            detail: format!("camera {id:?} removed: recording stopped, its footage stays"),
            change: ControlChange {
                camera: Some((
                    id,
                    "removed".into(),
                    serde_json::to_string(&stored).unwrap_or_default(),
                )),
                meta: None,
            },
            result: None,
        })
    }
}

/// Stop child `id` of `sup`; one that is not running is stopped already.
async fn stop_child(sup: &SupervisorHandle, id: &str) -> Result<(), Refusal> {
    match sup.remove_child(id).await {
        Ok(()) | Err(supervisors::Error::NoSuchChild(_)) => Ok(()),
        Err(e) => Err(Refusal::new(
            Reason::Failed,
            format!("{id:?} could not be stopped: {e}"),
        )),
    }
}

fn no_private(cmd: &Command) -> Result<(), Refusal> {
    if cmd.private.is_empty() {
        Ok(())
    } else {
        Err(Refusal::new(
            Reason::Invalid,
            format!("{} takes no private part", cmd.kind.as_str()),
        ))
    }
}

/// The reply for a refused command.
pub fn refused(id: Option<String>, node: String, r: &Refusal) -> Reply {
    Reply {
        id,
        node,
        ok: false,
        reason: Some(r.reason.as_str().into()),
        detail: r.detail.clone(),
        duplicate: false,
        result: None,
    }
}

#[cfg(test)]
mod tests {
    use super::command::{Draft, Key, Private, check};
    use super::*;

    /// The example in docs/control.md is a command this node accepts once signed, and its camera is one
    /// `camera.add` can read.
    #[test]
    fn the_documented_example_is_a_valid_command() {
        let doc = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/control.md"),
        )
        .unwrap();
        let block = doc
            .split("```json\n")
            .nth(1)
            .and_then(|b| b.split("```").next())
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(block).unwrap();
        let s = |k: &str| v[k].as_str().unwrap().to_string();
        let mut private = Private::default();
        for (k, val) in v["private"].as_object().unwrap() {
            private.insert(k.clone(), val.as_str().unwrap());
        }
        let key = Key::from_file_bytes(&[b'k'; 32]).unwrap();
        let body = Draft {
            id: s("id"),
            kind: s("kind"),
            node: s("node"),
            issued_at: s("issued_at"),
            public: v["public"].as_object().unwrap().clone(),
            private,
        }
        .sign(&key);
        let at = chrono::DateTime::parse_from_rfc3339(&s("issued_at"))
            .unwrap()
            .timestamp_millis();
        let cmd = check(&body, &key, &s("node"), at, 300_000).unwrap();
        let cam: CameraSettings = serde_json::from_value(cmd.public["camera"].clone()).unwrap();
        assert_eq!(cam.id, "gate");
        // The documented JSON Schema is JSON.
        let schema = doc
            .split("## JSON Schema\n\n```json\n")
            .nth(1)
            .and_then(|b| b.split("```").next())
            .unwrap();
        let schema: serde_json::Value = serde_json::from_str(schema).unwrap();
        let kinds: Vec<&str> = schema["properties"]["kind"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap())
            .collect();
        assert_eq!(kinds, command::Kind::ALL.map(command::Kind::as_str));
    }

    #[test]
    fn commands_win_over_the_file_for_the_cameras_they_touched() {
        let config = Config::parse(
            "node_id = \"n1\"\ndata_dir = \"/d\"\n[control]\namqp_url = \"amqp://127.0.0.1\"\nkey_file = \"k\"\n\
             [[cameras]]\nid = \"a\"\nfactory_id = \"f\"\nurl = \"rtsp://h/a\"\n\
             [[cameras]]\nid = \"b\"\nfactory_id = \"f\"\nurl = \"rtsp://h/b\"\n",
            std::path::Path::new("t.toml"),
        )
        .unwrap();
        let catalog = Catalog::in_memory().unwrap();
        let stored = |id: &str, url: &str| {
            serde_json::to_string(&StoredCamera {
                settings: CameraSettings {
                    id: id.into(),
                    factory_id: "g".into(),
                    url: url.into(),
                    segment_seconds: Some(4),
                    stall_seconds: None,
                    target_duration: None,
                },
                username: Some("u".into()),
                password: Some("p4ss".into()),
            })
            .unwrap()
        };
        for (cmd, cam, state, url) in [
            ("1", "b", "removed", "rtsp://h/b"),
            ("2", "c", "active", "rtsp://h/c"),
            ("3", "a", "active", "rtsp://h/a2"),
        ] {
            let change = ControlChange {
                camera: Some((cam.into(), state.into(), stored(cam, url))),
                meta: None,
            };
            let ok = CommandOutcome {
                kind: "camera.add".into(),
                ok: true,
                reason: None,
                detail: None,
                result: None,
            };
            catalog.record_command(cmd, &ok, &change, 0).unwrap();
        }
        let (recorded, served) = merged_cameras(&config, &catalog).unwrap();
        let ids: Vec<(&str, &str, u32)> = recorded
            .iter()
            .map(|c| (c.id.as_str(), c.factory_id.as_str(), c.segment_seconds))
            .collect();
        assert_eq!(ids, [("a", "g", 4), ("c", "g", 4)]);
        assert_eq!(recorded[0].url.expose(), "rtsp://u:p4ss@h/a2");
        assert_eq!(
            served.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
            ["b"]
        );
        // Without [control], the file alone.
        let mut plain = config.clone();
        plain.control = None;
        let (recorded, served) = merged_cameras(&plain, &catalog).unwrap();
        assert_eq!(recorded.len(), 2);
        assert!(served.is_empty());
    }
}
