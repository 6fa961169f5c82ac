//! The `vigil` command line: run a node, check a config, manage users and API tokens, print the supervision
//! tree.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use supervisors::{ExitReason, Runtime};
use tracing_subscriber::EnvFilter;
use vigil::catalog::Catalog;
use vigil::config::Config;

/// vigil records IP cameras (RTSP) to HLS without gaps it could have avoided, and distributes every segment
/// over a private IPFS network. Every part runs under a supervision tree that restarts it with backoff.
#[derive(Parser, Debug)]
#[command(name = "vigil", version, about, long_about)]
struct Cli {
    /// Log format: human-readable lines, or one JSON object per line (for log shippers).
    #[arg(long, value_enum, global = true, default_value_t = LogFormat::Human, env = "VIGIL_LOG_FORMAT")]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a node: start the supervision tree and keep it running until SIGTERM or SIGINT, which stop every
    /// part in reverse start order. Exits non-zero if the tree gives up (too many restarts), so the service
    /// manager restarts vigil. Log verbosity: RUST_LOG (default "info").
    Run {
        /// The TOML config file (see docs/config.md).
        #[arg(long, short, value_name = "FILE", env = "VIGIL_CONFIG")]
        config: PathBuf,
    },
    /// Check a config file: prints a summary and exits 0 if it is valid; otherwise prints every problem,
    /// naming the field, and exits 2.
    CheckConfig {
        /// The TOML config file.
        #[arg(value_name = "FILE")]
        config: PathBuf,
    },
    /// Manage the people who may log in (stored in the node's catalog; a running vigil picks changes up within a
    /// second). Roles: admin (every camera, user audit), dev (every camera, operator APIs), client (only the
    /// cameras of its scope: --factory and/or --camera).
    User {
        /// The node's config file (its data_dir holds the catalog).
        #[arg(long, short, value_name = "FILE", env = "VIGIL_CONFIG", global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: UserAction,
    },
    /// Manage API tokens for machines (`Authorization: Bearer <token>`); a token acts as its user.
    Token {
        /// The node's config file.
        #[arg(long, short, value_name = "FILE", env = "VIGIL_CONFIG", global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: TokenAction,
    },
    /// Prove a camera's footage over a time range complete and unaltered (on any node: the one that recorded
    /// it, a mirror, or one that keeps nothing). Reads the range from the index and this node's catalog,
    /// checks that no seq is missing within a session and that every document chains to the one before
    /// (prev_cid), rehashes every segment (this node's copy, else fetched through its IPFS node) against the
    /// CID the index records, and lists where sessions meet. Each problem names the segment. Exits 0 only
    /// when complete and unaltered, 1 when not, 2 when it cannot check (bad arguments, index unreachable).
    Verify {
        /// The node's config file (its index, IPFS API and catalog are used).
        #[arg(long, short, value_name = "FILE", env = "VIGIL_CONFIG")]
        config: PathBuf,
        /// The camera's id.
        #[arg(long)]
        camera: String,
        /// Start of the range, RFC 3339 (e.g. 2026-11-22T08:00:00Z).
        #[arg(long, value_name = "TIME")]
        from: String,
        /// End of the range (exclusive), RFC 3339.
        #[arg(long, value_name = "TIME")]
        to: String,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Steer nodes over the AMQP control plane (docs/control.md): sign and send commands, see the fleet's
    /// heartbeats, add and remove cameras. The broker and the key come from the [control] table of --config,
    /// or from --amqp-url and --key-file.
    Ctl {
        /// A config file with a [control] table (amqp_url, key_file, prefix).
        #[arg(long, short, value_name = "FILE", env = "VIGIL_CONFIG", global = true)]
        config: Option<PathBuf>,
        /// The broker, amqp://user:password@host:5672/%2f (instead of [control] amqp_url).
        #[arg(
            long,
            value_name = "URL",
            env = "VIGIL_AMQP_URL",
            global = true,
            hide_env_values = true
        )]
        amqp_url: Option<String>,
        /// The fleet's HMAC key file (instead of [control] key_file).
        #[arg(long, value_name = "FILE", env = "VIGIL_CONTROL_KEY", global = true)]
        key_file: Option<PathBuf>,
        /// Exchange and queue name prefix (instead of [control] prefix; default "vigil").
        #[arg(long, value_name = "PREFIX", global = true)]
        prefix: Option<String>,
        #[command(subcommand)]
        action: CtlAction,
    },
    /// Print the supervision tree that `run` starts: supervisors, strategies, restart limits and workers.
    Tree {
        /// Show the tree for this config (its tuning and cameras); without it, the defaults.
        #[arg(long, short, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum UserAction {
    /// Add a user. Without --password-stdin a password is generated and printed once.
    Add {
        /// The login name: 1 to 64 of letters, digits, '-', '_', '.', '@'.
        name: String,
        /// admin: every camera, the audit log; dev: every camera, operator APIs; client: its scope only.
        #[arg(long, value_parser = ["admin", "dev", "client"])]
        role: String,
        /// A factory whose cameras a client sees (repeat for more).
        #[arg(long = "factory", value_name = "FACTORY_ID")]
        factories: Vec<String>,
        /// A camera a client sees (repeat for more).
        #[arg(long = "camera", value_name = "CAMERA_ID")]
        cameras: Vec<String>,
        /// Read the password from the first line of standard input (at least 10 characters).
        #[arg(long)]
        password_stdin: bool,
    },
    /// List users: name, role, scope.
    List,
    /// Set a new password (generated and printed unless --password-stdin); the user's sessions end.
    Passwd {
        /// The user whose password changes.
        name: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Remove a user, its sessions and its tokens.
    Remove {
        /// The user to remove.
        name: String,
    },
}

#[derive(Subcommand, Debug)]
enum CtlAction {
    /// Write a new random fleet key (32 bytes, hex) to FILE, readable by its owner only. Copy it to every node
    /// ([control] key_file) and to where `vigil ctl` runs. Refuses to overwrite a file.
    Keygen {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Sign the command in FILE (JSON: kind, node, public, private; id and issued_at are filled in when
    /// missing), publish it to its node, wait for the reply and print it. Exit status: 0 applied, 1 refused
    /// (the reply says why), 2 not sent or no reply.
    Send {
        /// The command (`-` for standard input).
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Publish FILE as it is, without signing or filling in anything (to test what a node refuses).
        #[arg(long)]
        raw: bool,
        /// The node to send to, when FILE has no "node" (or with --raw).
        #[arg(long)]
        node: Option<String>,
        /// Seconds to wait for the reply.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
    /// List the nodes heard from: their roles and cameras (from heartbeats, listened to for --wait seconds).
    Status {
        /// Seconds to listen (at least one heartbeat interval).
        #[arg(long, default_value_t = 12)]
        wait: u64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Add, change or remove a camera on a node.
    Camera {
        #[command(subcommand)]
        action: CtlCameraAction,
    },
}

#[derive(Subcommand, Debug)]
enum CtlCameraAction {
    /// Add a camera to NODE: it records within seconds. Credentials go in the command's private part (never
    /// logged): --username, and the password from standard input with --password-stdin.
    Add(CtlCamera),
    /// Change a camera's settings on NODE (it restarts with them).
    Update(CtlCamera),
    /// Stop recording a camera on NODE; its footage stays served.
    Remove {
        #[arg(long)]
        node: String,
        #[arg(long)]
        id: String,
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
}

#[derive(clap::Args, Debug)]
struct CtlCamera {
    /// The node that records it.
    #[arg(long)]
    node: String,
    /// The camera's id (letters, digits, '-', '_').
    #[arg(long)]
    id: String,
    /// Its factory (site, customer).
    #[arg(long)]
    factory: String,
    /// rtsp:// URL without credentials.
    #[arg(long)]
    url: String,
    /// RTSP user name.
    #[arg(long)]
    username: Option<String>,
    /// Read the RTSP password from the first line of standard input.
    #[arg(long)]
    password_stdin: bool,
    #[arg(long)]
    segment_seconds: Option<u32>,
    #[arg(long)]
    stall_seconds: Option<u32>,
    #[arg(long, default_value_t = 30)]
    timeout: u64,
}

#[derive(Subcommand, Debug)]
enum TokenAction {
    /// Create a token for USER; it is printed once (only its SHA-256 is stored).
    Add {
        /// The user the token acts as.
        user: String,
        /// What the token is for (shown by `token list`).
        #[arg(long, default_value = "")]
        label: String,
        /// Take the token from the first line of standard input instead of generating one: the same token on
        /// several nodes (replay nodes behind a load balancer, a mirror listing several origins).
        #[arg(long)]
        token_stdin: bool,
    },
    /// List tokens: id, user, label, created.
    List,
    /// Revoke a token by the id `token list` shows.
    Revoke {
        /// The token's id (first column of `token list`).
        id: i64,
    },
}

mod ctl;

/// The catalog of the node configured in `config` (for `user` and `token`).
fn admin_catalog(config: Option<PathBuf>) -> Result<(Config, Catalog), String> {
    let path = config.ok_or("give the node's config with --config FILE (or VIGIL_CONFIG)")?;
    let c = Config::load(&path).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(&c.data_dir)
        .map_err(|e| format!("cannot create {}: {e}", c.data_dir.display()))?;
    let catalog = Catalog::open(&c.data_dir.join("catalog.sqlite")).map_err(|e| e.to_string())?;
    Ok((c, catalog))
}

fn read_password(from_stdin: bool) -> Result<(String, bool), String> {
    if !from_stdin {
        return Ok((vigil::auth::generate_password(), true));
    }
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the password from standard input: {e}"))?;
    let pw = line.trim_end_matches(['\r', '\n']).to_string();
    vigil::auth::check_password(&pw).map_err(|e| e.to_string())?;
    Ok((pw, false))
}

fn user_command(config: Option<PathBuf>, action: UserAction) -> Result<(), String> {
    use vigil::catalog::{Role, User};
    let (cfg, catalog) = admin_catalog(config)?;
    let now = chrono::Utc::now().timestamp_millis();
    match action {
        UserAction::Add {
            name,
            role,
            factories,
            cameras,
            password_stdin,
        } => {
            vigil::auth::check_user_name(&name).map_err(|e| e.to_string())?;
            let role: Role = role.parse()?;
            if role == Role::Client && factories.is_empty() && cameras.is_empty() {
                return Err(
                    "a client needs a scope: --factory FACTORY_ID and/or --camera CAMERA_ID".into(),
                );
            }
            for f in &factories {
                if !cfg.cameras.iter().any(|c| &c.factory_id == f)
                    && !cfg.remote_cameras.iter().any(|c| &c.factory_id == f)
                {
                    eprintln!("note: no camera of this node has factory_id {f:?} (yet)");
                }
            }
            for id in &cameras {
                if !cfg.cameras.iter().any(|c| &c.id == id)
                    && !cfg.remote_cameras.iter().any(|c| &c.id == id)
                {
                    eprintln!("note: this node has no camera {id:?} (yet)");
                }
            }
            let (password, generated) = read_password(password_stdin)?;
            let hash = vigil::auth::hash_password(&password).map_err(|e| e.to_string())?;
            catalog
                .add_user(&User {
                    name: name.clone(),
                    role,
                    hash,
                    factories,
                    cameras,
                    created_ms: now,
                    changed_ms: now,
                })
                .map_err(|e| e.to_string())?;
            let _ = catalog.audit("user_added", Some(&name), None, Some(role.as_str()));
            if generated {
                println!(
                    "added {} user {name}; password (shown once): {password}",
                    role.as_str()
                );
            } else {
                println!("added {} user {name}", role.as_str());
            }
        }
        UserAction::List => {
            let users = catalog.users().map_err(|e| e.to_string())?;
            if users.is_empty() {
                println!("no users (add one: vigil user add NAME --role admin)");
            }
            for u in users {
                let scope = match u.role {
                    Role::Client => format!(
                        "factories [{}] cameras [{}]",
                        u.factories.join(", "),
                        u.cameras.join(", ")
                    ),
                    _ => "all cameras".into(),
                };
                println!("{:<24} {:<7} {scope}", u.name, u.role.as_str());
            }
        }
        UserAction::Passwd {
            name,
            password_stdin,
        } => {
            let (password, generated) = read_password(password_stdin)?;
            let hash = vigil::auth::hash_password(&password).map_err(|e| e.to_string())?;
            if !catalog
                .set_password(&name, &hash)
                .map_err(|e| e.to_string())?
            {
                return Err(format!("no user {name:?}"));
            }
            let _ = catalog.audit("password_changed", Some(&name), None, None);
            if generated {
                println!("new password for {name} (shown once): {password}; its sessions ended");
            } else {
                println!("password of {name} changed; its sessions ended");
            }
        }
        UserAction::Remove { name } => {
            if !catalog.remove_user(&name).map_err(|e| e.to_string())? {
                return Err(format!("no user {name:?}"));
            }
            let _ = catalog.audit("user_removed", Some(&name), None, None);
            println!("removed user {name} with its sessions and tokens");
        }
    }
    Ok(())
}

fn token_command(config: Option<PathBuf>, action: TokenAction) -> Result<(), String> {
    let (_, catalog) = admin_catalog(config)?;
    match action {
        TokenAction::Add {
            user,
            label,
            token_stdin,
        } => {
            let token = if token_stdin {
                let mut line = String::new();
                std::io::stdin()
                    .read_line(&mut line)
                    .map_err(|e| format!("cannot read the token from standard input: {e}"))?;
                let t = line.trim().to_string();
                if !t.starts_with("vgl_")
                    || t.len() < 36
                    || !t.is_ascii()
                    || t.contains(char::is_whitespace)
                {
                    return Err("a token is vgl_ followed by at least 32 characters (as `vigil token add` prints)".into());
                }
                t
            } else {
                vigil::auth::generate_token()
            };
            let id = catalog
                .add_token(&vigil::auth::sha256_hex(token.as_bytes()), &user, &label)
                .map_err(|e| e.to_string())?;
            let _ = catalog.audit(
                "token_added",
                Some(&user),
                None,
                Some(&format!("id {id} {label}")),
            );
            if token_stdin {
                println!("token {id} for {user} imported");
            } else {
                println!("token {id} for {user} (shown once): {token}");
            }
        }
        TokenAction::List => {
            for t in catalog.tokens().map_err(|e| e.to_string())? {
                let at = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(t.created_ms)
                    .unwrap_or_default()
                    .format("%Y-%m-%d %H:%M");
                println!("{:<5} {:<24} {:<16} {}", t.id, t.user, at, t.label);
            }
        }
        TokenAction::Revoke { id } => {
            if !catalog.revoke_token(id).map_err(|e| e.to_string())? {
                return Err(format!("no token {id}"));
            }
            let _ = catalog.audit("token_revoked", None, None, Some(&format!("id {id}")));
            println!("revoked token {id}");
        }
    }
    Ok(())
}

fn init_logging(format: LogFormat) {
    // notify logs every vanished watch (an empty session folder removed) at info: noise for operators.
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,notify=warn"));
    // Colours only on a terminal (and never with NO_COLOR): logs that go to files or journald stay plain.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    std::panic::set_hook(Box::new(|info| {
        let location = info.location().map(|l| l.to_string()).unwrap_or_default();
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        tracing::error!(%location, "panic: {msg} (the supervisor restarts the part that panicked)");
    }));
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { config } => match Config::load(&config) {
            Ok(c) => {
                println!(
                    "{}: OK — node {:?}, data in {}, HTTP on {}, {} camera(s) ({} enabled)",
                    config.display(),
                    c.node_id,
                    c.data_dir.display(),
                    c.http.listen,
                    c.cameras.len(),
                    c.cameras.iter().filter(|c| c.enabled).count()
                );
                for cam in &c.cameras {
                    println!(
                        "  {} (factory {}): {}, {} s segments{}",
                        cam.id,
                        cam.factory_id,
                        cam.redacted_url(),
                        cam.segment_seconds,
                        if cam.enabled { "" } else { ", disabled" }
                    );
                }
                for cam in &c.remote_cameras {
                    println!(
                        "  {} (factory {}): recorded elsewhere, {}",
                        cam.id,
                        cam.factory_id,
                        if cam.mirror {
                            "mirrored here"
                        } else {
                            "replayed through the index and IPFS"
                        }
                    );
                }
                if let Some(ctl) = &c.control {
                    // The key is read at start: a missing or short one would stop `vigil run`.
                    if let Err(e) = vigil::control::command::Key::load(&ctl.key_file) {
                        eprintln!("error: control.key_file: {e}");
                        return ExitCode::from(2);
                    }
                    println!(
                        "  control plane: queue {} on the broker in control.amqp_url, key {}",
                        ctl.node_queue(&c.node_id),
                        ctl.key_file.display()
                    );
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        Command::User { config, action } => match user_command(config, action) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        Command::Token { config, action } => match token_command(config, action) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        Command::Ctl {
            config,
            amqp_url,
            key_file,
            prefix,
            action,
        } => ctl::run(config, amqp_url, key_file, prefix, action),
        Command::Verify {
            config,
            camera,
            from,
            to,
            json,
        } => {
            let c = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let time = |name: &str, v: &str| {
                chrono::DateTime::parse_from_rfc3339(v)
                    .map(|d| d.timestamp_millis())
                    .map_err(|e| format!("--{name} {v:?} is not an RFC 3339 time ({e}); e.g. 2026-11-22T08:00:00Z"))
            };
            let (from_ms, to_ms) = match (time("from", &from), time("to", &to)) {
                (Ok(a), Ok(b)) if a < b => (a, b),
                (Ok(_), Ok(_)) => {
                    eprintln!("error: --to must be after --from");
                    return ExitCode::from(2);
                }
                (Err(e), _) | (_, Err(e)) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime");
            match rt.block_on(vigil::verify::verify(&c, &camera, from_ms, to_ms)) {
                Ok(report) => {
                    if json {
                        println!(
                            "{}",
                            serde_json::to_string_pretty(&report).expect("report serialises")
                        );
                    } else {
                        print!("{report}");
                    }
                    if report.ok() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(1)
                    }
                }
                Err(e) => {
                    eprintln!("error: cannot verify: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Tree { config } => {
            let c = match config {
                Some(path) => match Config::load(&path) {
                    Ok(c) => c,
                    Err(e) => {
                        eprintln!("error: {e}");
                        return ExitCode::from(2);
                    }
                },
                None => Config::parse(
                    "node_id = \"example\"\ndata_dir = \"/var/lib/vigil\"\n",
                    "<defaults>".as_ref(),
                )
                .expect("the default config is valid"),
            };
            let catalog = std::sync::Arc::new(Catalog::in_memory().expect("in-memory catalog"));
            let auth = vigil::auth::Auth::ephemeral(catalog.clone(), c.auth.clone())
                .expect("in-memory auth");
            match vigil::tree::root(&c, catalog, std::sync::Arc::new(auth), Default::default()) {
                Ok(spec) => print!("{}", spec.render_tree()),
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            }
            ExitCode::SUCCESS
        }
        Command::Run { config } => {
            init_logging(cli.log_format);
            let c = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!("{e}");
                    return ExitCode::from(2);
                }
            };
            match actix::System::new().block_on(run(c)) {
                ExitReason::Shutdown | ExitReason::Normal => ExitCode::SUCCESS,
                other => {
                    tracing::error!(reason = %other, "supervision tree gave up; exiting with status 1 so the service manager restarts vigil");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn run(config: Config) -> ExitReason {
    let notifier = vigil::service::Notifier::from_env();
    notifier.status("starting: checking ffmpeg, opening the catalog");
    let reason = run_tree(config, &notifier).await;
    notifier.stopping(&format!("stopped: {reason}"));
    reason
}

async fn run_tree(config: Config, notifier: &vigil::service::Notifier) -> ExitReason {
    tracing::info!(
        node_id = %config.node_id,
        data_dir = %config.data_dir.display(),
        cameras = config.cameras.len(),
        "vigil {} starting",
        env!("CARGO_PKG_VERSION")
    );
    if let Err(e) = std::fs::create_dir_all(&config.data_dir) {
        tracing::error!(data_dir = %config.data_dir.display(), "cannot create the data folder: {e}");
        return ExitReason::Failed(e.to_string());
    }
    // Processes an earlier vigil started and left behind (they also get SIGKILL when vigil dies, through
    // PR_SET_PDEATHSIG; this is the second line of defence). Only those carrying vigil's marker.
    let redactor =
        vigil::process::Redactor::new(config.cameras.iter().flat_map(|c| c.url.secrets()));
    vigil::process::kill_leftovers(&config.data_dir, &redactor);
    // ffmpeg and ffprobe must run: the watcher checks every partial segment with ffprobe.
    if config.cameras.iter().any(|c| c.enabled) {
        let ffprobe = vigil::capture::ffprobe_for(&config.capture.ffmpeg);
        for program in [config.capture.ffmpeg.as_str(), ffprobe.as_str()] {
            let ran = std::process::Command::new(program)
                .arg("-version")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
            if !ran.as_ref().is_ok_and(|s| s.success()) {
                let why = ran.map_or_else(|e| e.to_string(), |s| s.to_string());
                tracing::error!(
                    "{program} cannot be run ({why}): vigil records with ffmpeg and checks partial segments with the ffprobe next to it; install ffmpeg or set [capture] ffmpeg"
                );
                return ExitReason::Failed(format!("{program} cannot be run"));
            }
        }
    }
    let catalog_path = config.data_dir.join("catalog.sqlite");
    let catalog = match Catalog::open(&catalog_path) {
        Ok(c) => std::sync::Arc::new(c),
        Err(e) => {
            tracing::error!("{e}");
            return ExitReason::Failed(e.to_string());
        }
    };
    tracing::info!(catalog = %catalog_path.display(), segments = catalog.count(None).unwrap_or(0), "catalog open");
    let auth = match vigil::auth::Auth::open(catalog.clone(), config.auth.clone(), &config.data_dir)
    {
        Ok(a) => std::sync::Arc::new(a),
        Err(e) => {
            tracing::error!("{e}");
            return ExitReason::Failed(e.to_string());
        }
    };
    let metrics = std::sync::Arc::new(vigil::metrics::Metrics::new(&config.node_id));
    let (spec, root_slot) =
        match vigil::tree::root_with_slot(&config, catalog, auth, metrics.clone()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("{e}");
                return ExitReason::Failed(e.to_string());
            }
        };
    let runtime = Runtime::new();
    // Restarts, escalations and children up are counted from the tree's events, synchronously (none lost).
    runtime.events().observe(move |e| metrics.supervision(e));
    let root = runtime.start(spec);
    // The control plane changes cameras through the running tree.
    let _ = root_slot.set(root.clone());
    // Signals are handled from here on, also while the tree is still coming up.
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot listen for SIGTERM: {e}");
            return root.shutdown().await;
        }
    };
    // READY=1 once every part runs (see vigil::service), on the side.
    let status = format!(
        "running: {} camera(s), {} remote, HTTP on {}",
        config.cameras.iter().filter(|c| c.enabled).count(),
        config.remote_cameras.len(),
        config.http.listen
    );
    let (r, n) = (root.clone(), notifier.clone());
    let readiness = actix_rt::spawn(async move {
        let up = vigil::service::wait_up(&r, std::time::Duration::from_secs(30)).await;
        n.ready(if up {
            &status
        } else {
            "started; some parts are still restarting (see the log)"
        });
    });
    // Pings only while the root supervisor answers (see vigil::service); stopped with this function.
    let watchdog = vigil::service::watchdog_interval().map(|every| {
        tracing::info!(
            every_ms = every.as_millis() as u64,
            "systemd watchdog on: pinging while the root supervisor answers"
        );
        actix_rt::spawn(vigil::service::watchdog(
            root.clone(),
            notifier.clone(),
            every,
        ))
    });
    let reason = tokio::select! {
        reason = root.wait() => reason,
        _ = term.recv() => {
            tracing::info!("SIGTERM: stopping every part in reverse start order");
            notifier.stopping("stopping: every part in reverse start order (SIGTERM)");
            root.shutdown().await
        }
        _ = tokio::signal::ctrl_c() => {
            tracing::info!("SIGINT: stopping every part in reverse start order");
            notifier.stopping("stopping: every part in reverse start order (SIGINT)");
            root.shutdown().await
        }
    };
    readiness.abort();
    if let Some(w) = watchdog {
        w.abort();
    }
    if !reason.is_abnormal() {
        tracing::info!("vigil stopped cleanly");
    }
    reason
}
