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
    /// The cameras recorded now, by id.
    recorded: Mutex<BTreeMap<String, CameraConfig>>,
    /// One command at a time.
    applying: tokio::sync::Mutex<()>,
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
        recorded: &[CameraConfig],
    ) -> Levers {
        Levers {
            config: config.clone(),
            catalog,
            wake,
            board,
            metrics,
            registry,
            root: Arc::new(OnceLock::new()),
            recorded: Mutex::new(recorded.iter().map(|c| (c.id.clone(), c.clone())).collect()),
            applying: tokio::sync::Mutex::new(()),
        }
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
            "active_jobs": 0,
        })
    }

    /// The roles this node plays (from what it is configured to do).
    pub fn roles(&self) -> Vec<&'static str> {
        let mut roles = Vec::new();
        let recording = !self
            .recorded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty();
        if recording || !self.config.cameras.is_empty() {
            roles.push("capture");
        }
        if self.config.remote_cameras.iter().any(|c| c.mirror) {
            roles.push("storage");
        }
        if self.config.remote_cameras.iter().any(|c| !c.mirror) {
            roles.push("distributor");
        }
        roles
    }

    /// Handle a checked command: answer a redelivery from memory, else apply it and remember the outcome
    /// (with its change, in one transaction). Returns the reply.
    pub async fn apply(self: &Arc<Self>, cmd: Command) -> Reply {
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
                return Reply {
                    id: Some(id),
                    node,
                    ok: seen.ok,
                    reason: seen.reason,
                    detail: seen.detail.unwrap_or_default(),
                    duplicate: true,
                    result: seen.result.and_then(|r| serde_json::from_str(&r).ok()),
                };
            }
            Ok(None) => {}
            Err(e) => {
                self.metrics.control_command(Reason::Failed.as_str());
                return refused(
                    Some(id),
                    node,
                    &Refusal::new(Reason::Failed, format!("the catalog cannot be read: {e}")),
                );
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
        // node.status changes nothing and is not worth remembering.
        if kind != Kind::NodeStatus {
            let forget_before = chrono::Utc::now().timestamp_millis() - 2 * self.window_ms();
            let (rid, st, ch) = (id.clone(), stored, change);
            if let Err(e) = self
                .catalog
                .run(move |c| c.record_command(&rid, &st, &ch, forget_before))
                .await
            {
                // Applied but not remembered: the next start merges what the catalog holds; say so.
                tracing::error!(command = %id, "the command's outcome could not be stored: {e}");
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
        reply
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
            Kind::NodeConfigure => Err(Refusal::new(
                Reason::Unsupported,
                "node.configure (switching roles at run time) is not available in this version: roles follow the config file",
            )),
            Kind::JobStart | Kind::JobStop => Err(Refusal::new(
                Reason::Unsupported,
                "this node has no transcoder role in this version",
            )),
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
        let exists = self
            .recorded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&id);
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
        let cameras = self.cameras_supervisor().await?;
        if !adding {
            cameras.remove_child(&id).await.map_err(|e| {
                Refusal::new(
                    Reason::Failed,
                    format!("camera {id:?} could not be stopped: {e}"),
                )
            })?;
        }
        let child = {
            let me = self.clone();
            let cam = cam.clone();
            // CameraRuntime::new reads the catalog: off the supervisors' thread.
            tokio::task::spawn_blocking(move || me.camera_child(&cam))
                .await
                .map_err(|e| Refusal::new(Reason::Failed, format!("camera setup: {e}")))?
        };
        cameras.add_child(child).await.map_err(|e| {
            Refusal::new(
                Reason::Failed,
                format!("camera {id:?} could not be started: {e}"),
            )
        })?;
        self.registry.put_local(&cam);
        self.recorded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), cam);
        let spec = serde_json::to_string(&stored).unwrap_or_default();
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
