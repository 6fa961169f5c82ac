//! The `vigil` command line: run a node, check a config, print the supervision tree.

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
    /// Print the supervision tree that `run` starts: supervisors, strategies, restart limits and workers.
    Tree {
        /// Show the tree for this config (its tuning and cameras); without it, the defaults.
        #[arg(long, short, value_name = "FILE")]
        config: Option<PathBuf>,
    },
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
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
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
            match vigil::tree::root(&c, catalog) {
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
    let spec = match vigil::tree::root(&config, catalog) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("{e}");
            return ExitReason::Failed(e.to_string());
        }
    };
    let root = Runtime::new().start(spec);
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot listen for SIGTERM: {e}");
            return root.shutdown().await;
        }
    };
    let reason = tokio::select! {
        reason = root.wait() => reason,
        _ = term.recv() => {
            tracing::info!("SIGTERM: stopping every part in reverse start order");
            root.shutdown().await
        }
        _ = tokio::signal::ctrl_c() => {
            tracing::info!("SIGINT: stopping every part in reverse start order");
            root.shutdown().await
        }
    };
    if !reason.is_abnormal() {
        tracing::info!("vigil stopped cleanly");
    }
    reason
}
