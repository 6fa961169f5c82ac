//! `vigil ctl` (part of the binary, not the library): sign and send control-plane commands, list the nodes
//! heard from, add and remove cameras. Exit status: 0 applied, 1 refused, 2 not sent or no reply.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use vigil::config::{Config, ControlConfig, Secret};
use vigil::control::command::{Draft, Key, Private};
use vigil::control::{Reply, amqp};

use crate::{CtlAction, CtlCamera, CtlCameraAction};

fn fail(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(2)
}

/// The broker and key: flags over the config file's `[control]`.
fn control_config(
    config: Option<PathBuf>,
    amqp_url: Option<String>,
    key_file: Option<PathBuf>,
    prefix: Option<String>,
) -> Result<ControlConfig, String> {
    let from_file = match &config {
        Some(p) => Config::load(p).map_err(|e| e.to_string())?.control,
        None => None,
    };
    let mut c = match (from_file, amqp_url.as_ref(), key_file.as_ref()) {
        (Some(c), _, _) => c,
        (None, Some(url), Some(key)) => ControlConfig {
            amqp_url: Secret::new(url.clone()),
            key_file: key.clone(),
            prefix: "vigil".into(),
            window_seconds: 300,
            heartbeat_seconds: 10,
            prefetch: 4,
            roles: None,
            variants_keep_days: 7,
        },
        (None, _, _) => {
            return Err(match config {
                Some(p) => format!(
                    "{} has no [control] table: add one (docs/control.md) or give --amqp-url and --key-file",
                    p.display()
                ),
                None => "give --config FILE (with a [control] table) or --amqp-url URL and --key-file FILE"
                    .into(),
            });
        }
    };
    if let Some(u) = amqp_url {
        c.amqp_url = Secret::new(u);
    }
    if let Some(k) = key_file {
        c.key_file = k;
    }
    if let Some(p) = prefix {
        c.prefix = p;
    }
    if !c.amqp_url.expose().starts_with("amqp://") {
        return Err("the broker URL must be amqp://user:password@host:port/vhost".into());
    }
    Ok(c)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// A command id: the time and a random suffix.
fn new_id() -> String {
    let mut r = [0u8; 4];
    let _ = getrandom::fill(&mut r);
    format!(
        "ctl-{}-{:08x}",
        chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ"),
        u32::from_le_bytes(r)
    )
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn print_reply(r: &Reply) -> ExitCode {
    println!(
        "{}",
        serde_json::to_string_pretty(r).expect("a reply serialises")
    );
    if r.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn send_draft(c: &ControlConfig, draft: Draft, timeout: u64) -> ExitCode {
    let key = match Key::load(&c.key_file) {
        Ok(k) => k,
        Err(e) => return fail(e),
    };
    let body = draft.sign(&key);
    match runtime().block_on(amqp::send(
        c,
        &draft.node,
        &draft.id,
        &body,
        Duration::from_secs(timeout),
    )) {
        Ok(r) => print_reply(&r),
        Err(e) => fail(e),
    }
}

pub fn run(
    config: Option<PathBuf>,
    amqp_url: Option<String>,
    key_file: Option<PathBuf>,
    prefix: Option<String>,
    action: CtlAction,
) -> ExitCode {
    if let CtlAction::Keygen { file } = &action {
        return match keygen(file) {
            Ok(()) => {
                println!("wrote a new fleet key to {} (mode 0600)", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        };
    }
    let c = match control_config(config, amqp_url, key_file, prefix) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    match action {
        CtlAction::Keygen { .. } => unreachable!("handled above"),
        CtlAction::Send {
            file,
            raw,
            node,
            timeout,
        } => {
            let mut text = Vec::new();
            let read = if file.as_os_str() == "-" {
                std::io::stdin().read_to_end(&mut text).map(|_| ())
            } else {
                std::fs::read(&file).map(|t| text = t)
            };
            if let Err(e) = read {
                return fail(format!("cannot read {}: {e}", file.display()));
            }
            if raw {
                let Some(node) = node else {
                    return fail("--raw needs --node NODE (the message is not read)");
                };
                let id = new_id();
                return match runtime().block_on(amqp::send(
                    &c,
                    &node,
                    &id,
                    &text,
                    Duration::from_secs(timeout),
                )) {
                    Ok(r) => print_reply(&r),
                    Err(e) => fail(e),
                };
            }
            match draft_from(&text, node) {
                Ok(d) => send_draft(&c, d, timeout),
                Err(e) => fail(format!("{}: {e}", file.display())),
            }
        }
        CtlAction::Status { wait, json } => {
            let wait = Duration::from_secs(wait.max(1));
            match runtime().block_on(amqp::heartbeats(&c, wait)) {
                Ok(nodes) if json => {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&nodes).expect("JSON serialises")
                    );
                    ExitCode::SUCCESS
                }
                Ok(nodes) if nodes.is_empty() => {
                    println!(
                        "no heartbeat within {} s on {}",
                        wait.as_secs(),
                        c.events_exchange()
                    );
                    ExitCode::from(1)
                }
                Ok(nodes) => {
                    for (node, s) in &nodes {
                        let roles: Vec<&str> = s["roles"]
                            .as_array()
                            .map(|a| a.iter().filter_map(|r| r.as_str()).collect())
                            .unwrap_or_default();
                        println!(
                            "{node}  version {}  roles [{}]",
                            s["version"].as_str().unwrap_or("?"),
                            roles.join(", ")
                        );
                        for cam in s["cameras"].as_array().into_iter().flatten() {
                            println!(
                                "  {}  factory {}  {}  {}",
                                cam["id"].as_str().unwrap_or("?"),
                                cam["factory_id"].as_str().unwrap_or("?"),
                                cam["kind"].as_str().unwrap_or("?"),
                                cam["state"].as_str().unwrap_or("-")
                            );
                        }
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        CtlAction::Camera { action } => {
            let (kind, node, public, private, timeout) = match action {
                CtlCameraAction::Add(cam) => match camera_parts(cam) {
                    Ok((n, p, s, t)) => ("camera.add", n, p, s, t),
                    Err(e) => return fail(e),
                },
                CtlCameraAction::Update(cam) => match camera_parts(cam) {
                    Ok((n, p, s, t)) => ("camera.update", n, p, s, t),
                    Err(e) => return fail(e),
                },
                CtlCameraAction::Remove { node, id, timeout } => (
                    "camera.remove",
                    node,
                    serde_json::json!({ "camera_id": id }),
                    Private::default(),
                    timeout,
                ),
            };
            let draft = Draft {
                id: new_id(),
                kind: kind.into(),
                node,
                issued_at: now_rfc3339(),
                public: public.as_object().cloned().unwrap_or_default(),
                private,
            };
            send_draft(&c, draft, timeout)
        }
    }
}

type CameraParts = (String, serde_json::Value, Private, u64);

fn camera_parts(cam: CtlCamera) -> Result<CameraParts, String> {
    let mut private = Private::default();
    if let Some(u) = cam.username {
        private.insert("username", u);
    }
    if cam.password_stdin {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .map_err(|e| format!("cannot read the password from standard input: {e}"))?;
        private.insert("password", line.trim_end_matches(['\r', '\n']));
    }
    let mut camera = serde_json::json!({
        "id": cam.id,
        "factory_id": cam.factory,
        "url": cam.url,
    });
    if let Some(s) = cam.segment_seconds {
        camera["segment_seconds"] = s.into();
    }
    if let Some(s) = cam.stall_seconds {
        camera["stall_seconds"] = s.into();
    }
    Ok((
        cam.node,
        serde_json::json!({ "camera": camera }),
        private,
        cam.timeout,
    ))
}

/// A draft from a command file: kind, node, public, private; id and issued_at filled in when missing; a
/// signature in the file is replaced.
fn draft_from(text: &[u8], node: Option<String>) -> Result<Draft, String> {
    let v: serde_json::Value =
        serde_json::from_slice(text).map_err(|e| format!("not JSON: {e}"))?;
    let obj = v.as_object().ok_or("not a JSON object")?;
    let s = |k: &str| obj.get(k).and_then(|v| v.as_str()).map(str::to_string);
    let kind = s("kind").ok_or("\"kind\" is missing (e.g. \"camera.add\")")?;
    let node = s("node")
        .or(node)
        .ok_or("\"node\" is missing (or give --node)")?;
    let public = match obj.get("public") {
        None => serde_json::Map::new(),
        Some(serde_json::Value::Object(m)) => m.clone(),
        Some(_) => return Err("\"public\" must be an object".into()),
    };
    let mut private = Private::default();
    match obj.get("private") {
        None => {}
        Some(serde_json::Value::Object(m)) => {
            for (k, v) in m {
                let v = v
                    .as_str()
                    .ok_or_else(|| format!("private.{k} must be a string"))?;
                private.insert(k.clone(), v);
            }
        }
        Some(_) => return Err("\"private\" must be an object".into()),
    }
    Ok(Draft {
        id: s("id").unwrap_or_else(new_id),
        kind,
        node,
        issued_at: s("issued_at").unwrap_or_else(now_rfc3339),
        public,
        private,
    })
}

fn keygen(file: &std::path::Path) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| format!("no randomness: {e}"))?;
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)
        .map_err(|e| format!("cannot create {}: {e}", file.display()))?;
    writeln!(f, "{hex}").map_err(|e| format!("cannot write {}: {e}", file.display()))?;
    Ok(())
}
