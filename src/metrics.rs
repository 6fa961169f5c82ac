//! Prometheus metrics (`GET /metrics`, OpenMetrics text): what an operator of a fleet needs to see every
//! restart, stall, backlog, outage and full disk.
//!
//! Two kinds of series, all prefixed `vigil_`, in base units (seconds, bytes), counters ending in `_total`, and
//! with label sets bounded by the configuration (camera ids, supervisor paths, stages, routes), never by
//! history or by input:
//! - **event counters and histograms** ([`Metrics`]), moved by the parts as things happen: supervisor restarts
//!   (by supervisor, child and [`reason_kind`]), escalations, children up; segments through each pipeline stage,
//!   each stage's work time and the segment's age when the stage finished it; retention deletions; HTTP
//!   requests by route and status; the mirror's lag.
//! - **state read at scrape time** ([`Snapshot`]), built by the web server from what is already in memory or
//!   O(1)/O(backlog) to read: each camera's state, the age of its last written byte and last finished segment,
//!   footage seconds recorded and lost; the backlog per stage; the links to IPFS, MongoDB and AMQP; disk free;
//!   footage on disk; the mirror's counters; this process's CPU time and memory; build info.
//!
//! Nothing here grows with history: a scrape costs O(cameras + routes + supervisor children).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use supervisors::{Event, EventKind};

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RestartLabels {
    supervisor: String,
    child: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SupervisorLabel {
    supervisor: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChildLabels {
    supervisor: String,
    child: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabel {
    stage: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    route: String,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CameraLabel {
    camera: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CameraStateLabels {
    camera: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LinkLabel {
    link: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    node_id: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;
type FloatCounter = Counter<f64, AtomicU64>;

/// Every camera state (`GET /api/cameras` names), so that each camera has one series per state, 0 or 1.
pub const CAMERA_STATES: &[&str] = &[
    "starting",
    "recording",
    "reconnecting",
    "auth_failed",
    "not_found",
    "stalled",
    "disk_full",
    "stopped",
];

/// A bounded name for why a supervised child is restarted, from the restart's cause text: `stalled` (ffmpeg
/// wrote nothing for `stall_seconds`), `exited` (ffmpeg ended on its own), `escalated` (a nested supervisor
/// gave up), `sibling` (restarted along with a sibling), `failed` (any other reported failure), `panicked`,
/// `killed`, `normal` (a permanent child ended without failing) or `other`.
pub fn reason_kind(cause: &str) -> &'static str {
    if cause.starts_with("restarted along with ") {
        "sibling"
    } else if let Some(why) = cause.strip_prefix("failed: ") {
        if why.starts_with("stalled") {
            "stalled"
        } else if why.starts_with("ffmpeg ") {
            "exited"
        } else if why.starts_with("restart intensity exceeded") {
            "escalated"
        } else {
            "failed"
        }
    } else if cause.starts_with("panicked") {
        "panicked"
    } else if cause == "killed" {
        "killed"
    } else if cause == "normal exit" {
        "normal"
    } else {
        "other"
    }
}

/// A dependency's state as the part using it last saw it (MongoDB for the indexer): unknown, up or down.
#[derive(Debug, Default)]
pub struct LinkCell(std::sync::atomic::AtomicU8);

impl LinkCell {
    pub fn set(&self, up: bool) {
        self.0
            .store(if up { 1 } else { 2 }, std::sync::atomic::Ordering::Relaxed);
    }
    /// Up at the last look (unknown counts as down).
    pub fn is_up(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed) == 1
    }
}

/// The event counters and histograms (see the module docs). One per process, shared by every part.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    restarts: Family<RestartLabels, Counter>,
    escalations: Family<SupervisorLabel, Counter>,
    children_up: Family<ChildLabels, Gauge>,
    segments: Family<StageLabel, Counter>,
    stage_seconds: Family<StageLabel, Histogram>,
    segment_age: Family<StageLabel, Histogram>,
    deleted_segments: Family<ReasonLabel, Counter>,
    deleted_bytes: Family<ReasonLabel, Counter>,
    http_requests: Family<HttpLabels, Counter>,
    http_seconds: Family<RouteLabel, Histogram>,
    mirror_lag: Histogram,
    control_commands: Family<ResultLabel, Counter>,
    control_active_jobs: Gauge,
    /// Newest mirrored segment's end (unix ms) per mirrored camera.
    mirror_newest: Mutex<HashMap<String, i64>>,
    start_time: f64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new("")
    }
}

fn age_buckets() -> impl Iterator<Item = f64> {
    // 0.25 s … ~1.7 h: a healthy pipeline is in the first buckets, an outage's backlog in the last.
    exponential_buckets(0.25, 2.5, 12)
}

impl Metrics {
    /// The metrics of node `node_id` (in `vigil_build_info`).
    pub fn new(node_id: &str) -> Metrics {
        let mut registry = Registry::with_prefix("vigil");
        let restarts = Family::<RestartLabels, Counter>::default();
        registry.register(
            "supervisor_restarts",
            "Restarts decided by a supervisor, by supervisor path, child id and reason (stalled, exited, escalated, sibling, failed, panicked, killed, normal, other)",
            restarts.clone(),
        );
        let escalations = Family::<SupervisorLabel, Counter>::default();
        registry.register(
            "supervisor_escalations",
            "Times a supervisor exceeded its restart intensity, stopped its children and failed to its parent",
            escalations.clone(),
        );
        let children_up = Family::<ChildLabels, Gauge>::default();
        registry.register(
            "supervisor_child_up",
            "1 while a supervised child runs, 0 while it waits for a restart or is stopped",
            children_up.clone(),
        );
        let segments = Family::<StageLabel, Counter>::default();
        registry.register(
            "segments",
            "Segments through each stage: recorded (catalogued), pinned, indexed, published, set_aside (broken, skipped), mirrored, deleted",
            segments.clone(),
        );
        let stage_seconds = Family::<StageLabel, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.005, 2.5, 10))) as fn() -> Histogram,
        );
        registry.register_with_unit(
            "stage_duration",
            "Work time of one segment in a pipeline stage (add+pin, index upsert, publish, mirror fetch+check)",
            prometheus_client::registry::Unit::Seconds,
            stage_seconds.clone(),
        );
        let segment_age = Family::<StageLabel, Histogram>::new_with_constructor(
            (|| Histogram::new(age_buckets())) as fn() -> Histogram,
        );
        registry.register_with_unit(
            "segment_age",
            "Age of a segment (since its end) when a stage finished it: recorded, pinned, indexed, published",
            prometheus_client::registry::Unit::Seconds,
            segment_age.clone(),
        );
        let deleted_segments = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "retention_deleted_segments",
            "Segments deleted by retention: budget (distributed footage over the disk budget or max age), critical (not yet distributed, below the critical free-space floor)",
            deleted_segments.clone(),
        );
        let deleted_bytes = Family::<ReasonLabel, Counter>::default();
        registry.register_with_unit(
            "retention_deleted",
            "Bytes deleted by retention, by reason",
            prometheus_client::registry::Unit::Bytes,
            deleted_bytes.clone(),
        );
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route pattern, method and status",
            http_requests.clone(),
        );
        let http_seconds = Family::<RouteLabel, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.001, 2.5, 10))) as fn() -> Histogram,
        );
        registry.register_with_unit(
            "http_request_duration",
            "Time to answer an HTTP request (until the response head), by route pattern",
            prometheus_client::registry::Unit::Seconds,
            http_seconds.clone(),
        );
        let mirror_lag = Histogram::new(age_buckets());
        registry.register_with_unit(
            "mirror_lag",
            "From a segment's announcement on the origin to its copy pinned and catalogued here",
            prometheus_client::registry::Unit::Seconds,
            mirror_lag.clone(),
        );
        let control_commands = Family::<ResultLabel, Counter>::default();
        registry.register(
            "control_commands",
            "Control-plane commands handled, by result: ok, duplicate (a redelivery answered from memory) or the refusal's reason (oversize, malformed, unsigned, forged, wrong_node, unknown_kind, stale, invalid, conflict, unsupported, failed)",
            control_commands.clone(),
        );
        let control_active_jobs = Gauge::default();
        registry.register(
            "control_active_jobs",
            "Jobs (transcoding) running on this node: +1 when one starts, -1 when it stops",
            control_active_jobs.clone(),
        );
        registry.register(
            "build",
            "This vigil's version and node id",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
                node_id: node_id.to_string(),
            }),
        );
        // Series that exist from the start at 0, so that their first increase shows in increase()/rate().
        for stage in [
            "recorded",
            "pinned",
            "indexed",
            "published",
            "set_aside",
            "mirrored",
            "deleted",
        ] {
            let _ = segments.get_or_create(&StageLabel { stage });
        }
        for reason in ["budget", "critical"] {
            let _ = deleted_segments.get_or_create(&ReasonLabel { reason });
            let _ = deleted_bytes.get_or_create(&ReasonLabel { reason });
        }
        let start_time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        Metrics {
            registry,
            restarts,
            escalations,
            children_up,
            segments,
            stage_seconds,
            segment_age,
            deleted_segments,
            deleted_bytes,
            http_requests,
            http_seconds,
            mirror_lag,
            control_commands,
            control_active_jobs,
            mirror_newest: Mutex::default(),
            start_time,
        }
    }

    /// Count a control-plane command by its result (`ok`, `duplicate` or a refusal's reason).
    pub fn control_command(&self, result: &'static str) {
        self.control_commands
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    /// A job started (+1) or stopped (-1).
    pub fn control_jobs(&self, delta: i64) {
        self.control_active_jobs.inc_by(delta);
    }

    /// Count a supervision event (installed as the tree's [`supervisors::EventBus::observe`]r).
    pub fn supervision(&self, e: &Event) {
        let up = |child: &str, v: i64| {
            self.children_up
                .get_or_create(&ChildLabels {
                    supervisor: e.supervisor.clone(),
                    child: child.to_string(),
                })
                .set(v);
        };
        match &e.kind {
            EventKind::Started { child, .. } => up(child, 1),
            EventKind::Exited { child, .. } | EventKind::Stopped { child, .. } => up(child, 0),
            EventKind::Restarting { child, cause, .. } => {
                self.restarts
                    .get_or_create(&RestartLabels {
                        supervisor: e.supervisor.clone(),
                        child: child.clone(),
                        reason: reason_kind(cause),
                    })
                    .inc();
            }
            EventKind::Escalated { .. } => {
                self.escalations
                    .get_or_create(&SupervisorLabel {
                        supervisor: e.supervisor.clone(),
                    })
                    .inc();
            }
            EventKind::Probed { .. } => {}
        }
    }

    /// A segment finished `stage` (`recorded`, `pin`, `index`, `publish`, `mirror`): its work took `took`, and
    /// the segment ended `age` ago.
    pub fn stage_done(&self, stage: &'static str, took: Option<Duration>, age: Duration) {
        let label = StageLabel { stage };
        let counted = StageLabel {
            stage: match stage {
                "recorded" => "recorded",
                "pin" => "pinned",
                "index" => "indexed",
                "publish" => "published",
                "mirror" => "mirrored",
                "transcode" => "transcoded",
                other => other,
            },
        };
        self.segments.get_or_create(&counted).inc();
        if let Some(t) = took {
            self.stage_seconds
                .get_or_create(&label)
                .observe(t.as_secs_f64());
        }
        self.segment_age
            .get_or_create(&label)
            .observe(age.as_secs_f64());
    }

    /// A segment was set aside by a stage (broken; the pipeline goes on without it).
    pub fn set_aside(&self) {
        self.segments
            .get_or_create(&StageLabel { stage: "set_aside" })
            .inc();
    }

    /// Retention deleted `segments` segments of `bytes` bytes; `critical`: below the critical floor, footage
    /// not yet distributed.
    pub fn deleted(&self, segments: u64, bytes: u64, critical: bool) {
        let reason = ReasonLabel {
            reason: if critical { "critical" } else { "budget" },
        };
        self.deleted_segments
            .get_or_create(&reason)
            .inc_by(segments);
        self.deleted_bytes.get_or_create(&reason).inc_by(bytes);
        self.segments
            .get_or_create(&StageLabel { stage: "deleted" })
            .inc_by(segments);
    }

    /// One HTTP request answered.
    pub fn http(&self, route: &str, method: &actix_web::http::Method, status: u16, took: Duration) {
        use actix_web::http::Method;
        let method = match *method {
            Method::GET => "GET",
            Method::HEAD => "HEAD",
            Method::POST => "POST",
            Method::PUT => "PUT",
            Method::DELETE => "DELETE",
            Method::OPTIONS => "OPTIONS",
            _ => "other",
        };
        self.http_requests
            .get_or_create(&HttpLabels {
                route: route.to_string(),
                method,
                status,
            })
            .inc();
        self.http_seconds
            .get_or_create(&RouteLabel {
                route: route.to_string(),
            })
            .observe(took.as_secs_f64());
    }

    /// A mirrored segment of `camera` (ending at `end_ms`) was held here `lag` after its announcement.
    pub fn mirrored(&self, camera: &str, end_ms: i64, lag: Option<Duration>) {
        if let Some(l) = lag {
            self.mirror_lag.observe(l.as_secs_f64());
        }
        let mut newest = self.mirror_newest.lock().unwrap_or_else(|p| p.into_inner());
        let e = newest.entry(camera.to_string()).or_insert(end_ms);
        *e = (*e).max(end_ms);
    }

    /// The whole exposition: these counters, then `snap`'s state, then `# EOF`.
    pub fn render(&self, snap: &Snapshot) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(64 << 10);
        encode_registry(&mut out, &self.registry)?;
        let mut live = Registry::with_prefix("vigil");
        snap.register(self, &mut live);
        encode_registry(&mut out, &live)?;
        encode_eof(&mut out)?;
        Ok(out)
    }
}

/// One camera's state at scrape time.
#[derive(Debug, Clone, Default)]
pub struct CameraSnap {
    pub id: String,
    /// One of [`CAMERA_STATES`]; `None` for a camera recorded elsewhere.
    pub state: Option<&'static str>,
    /// Seconds since ffmpeg last wrote a byte.
    pub last_write_age: Option<f64>,
    /// Seconds since the last segment was catalogued.
    pub last_segment_age: Option<f64>,
    /// Footage catalogued since start, and gaps between sessions since start (seconds).
    pub recorded_seconds: f64,
    pub lost_seconds: f64,
}

/// Distribution backlog per stage.
#[derive(Debug, Clone, Copy, Default)]
pub struct BacklogSnap {
    pub pin: u64,
    pub index: u64,
    pub publish: u64,
    pub set_aside: u64,
}

/// The mirror's counters.
#[derive(Debug, Clone, Default)]
pub struct MirrorSnap {
    pub received: u64,
    pub mirrored: u64,
    pub healed: u64,
    pub gaps: u64,
    pub subscriptions: u64,
    pub rejected: Vec<(&'static str, u64)>,
}

/// State read at scrape time (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub now_ms: i64,
    pub cameras: Vec<CameraSnap>,
    pub backlog: Option<BacklogSnap>,
    /// (`ipfs` | `mongodb` | `amqp`, up) for the links this node has.
    pub links: Vec<(&'static str, bool)>,
    /// Free and total bytes of the data folder's file system.
    pub disk: Option<(u64, u64)>,
    /// Retention's floors as fractions of the file system: min free, critical free.
    pub min_free_ratio: f64,
    pub critical_free_ratio: f64,
    /// Bytes of footage in the catalog.
    pub footage_bytes: Option<u64>,
    pub mirror: Option<MirrorSnap>,
    /// (CPU seconds, resident bytes, open fds) of this process.
    pub process: Option<(f64, u64, u64)>,
}

fn gauge(registry: &mut Registry, name: &str, help: &str, v: f64) {
    let g = FloatGauge::default();
    g.set(v);
    registry.register(name, help, g);
}

impl Snapshot {
    fn register(&self, m: &Metrics, r: &mut Registry) {
        gauge(
            r,
            "start_time_seconds",
            "When this vigil started (unix seconds)",
            m.start_time,
        );
        let state = Family::<CameraStateLabels, Gauge>::default();
        let write_age = Family::<CameraLabel, FloatGauge>::default();
        let seg_age = Family::<CameraLabel, FloatGauge>::default();
        let recorded = Family::<CameraLabel, FloatCounter>::default();
        let lost = Family::<CameraLabel, FloatCounter>::default();
        for c in &self.cameras {
            let cam = CameraLabel {
                camera: c.id.clone(),
            };
            if let Some(now) = c.state {
                for s in CAMERA_STATES {
                    state
                        .get_or_create(&CameraStateLabels {
                            camera: c.id.clone(),
                            state: s,
                        })
                        .set(i64::from(*s == now));
                }
                recorded.get_or_create(&cam).inc_by(c.recorded_seconds);
                lost.get_or_create(&cam).inc_by(c.lost_seconds);
            }
            if let Some(a) = c.last_write_age {
                write_age.get_or_create(&cam).set(a);
            }
            if let Some(a) = c.last_segment_age {
                seg_age.get_or_create(&cam).set(a);
            }
        }
        r.register(
            "camera_state",
            "1 for the state each recorded camera is in (starting, recording, reconnecting, auth_failed, not_found, stalled, disk_full, stopped), 0 for the others",
            state,
        );
        r.register(
            "camera_last_write_age_seconds",
            "Seconds since ffmpeg last wrote a byte of this camera's footage",
            write_age,
        );
        r.register(
            "camera_last_segment_age_seconds",
            "Seconds since this camera's last finished segment was catalogued (before the first of this run: since the newest catalogued segment's end, or since start)",
            seg_age,
        );
        r.register_with_unit(
            "footage_recorded",
            "Seconds of footage catalogued since vigil started",
            prometheus_client::registry::Unit::Seconds,
            recorded,
        );
        r.register_with_unit(
            "footage_lost",
            "Seconds of gap between a camera's sessions (camera or ffmpeg down), counted when recording resumes",
            prometheus_client::registry::Unit::Seconds,
            lost,
        );
        if let Some(b) = self.backlog {
            let backlog = Family::<StageLabel, Gauge>::default();
            for (stage, n) in [("pin", b.pin), ("index", b.index), ("publish", b.publish)] {
                backlog.get_or_create(&StageLabel { stage }).set(n as i64);
            }
            r.register(
                "pipeline_backlog_segments",
                "Segments waiting for a distribution stage (pin, index, publish)",
                backlog,
            );
            gauge(
                r,
                "pipeline_set_aside_segments",
                "Segments set aside by the pipeline (broken files; see the log)",
                b.set_aside as f64,
            );
        }
        let links = Family::<LinkLabel, Gauge>::default();
        for (link, up) in &self.links {
            links.get_or_create(&LinkLabel { link }).set(i64::from(*up));
        }
        r.register(
            "link_up",
            "1 while this node's dependency answers (ipfs: the IPFS API; mongodb: the index; amqp: the control broker), 0 while it is down or not yet reached",
            links,
        );
        if let Some((free, total)) = self.disk {
            gauge(
                r,
                "disk_free_bytes",
                "Bytes available to vigil on the data folder's file system",
                free as f64,
            );
            gauge(
                r,
                "disk_size_bytes",
                "Size of the data folder's file system",
                total as f64,
            );
        }
        gauge(
            r,
            "retention_min_free_ratio",
            "Retention's free-space floor as a fraction of the file system ([retention] min_free)",
            self.min_free_ratio,
        );
        gauge(
            r,
            "retention_critical_free_ratio",
            "Free-space floor below which retention deletes undistributed footage ([retention] critical_free)",
            self.critical_free_ratio,
        );
        if let Some(b) = self.footage_bytes {
            gauge(
                r,
                "footage_bytes",
                "Bytes of footage (recorded and mirrored) on disk",
                b as f64,
            );
        }
        if let Some(mirror) = &self.mirror {
            let counter = |r: &mut Registry, name: &str, help: &str, v: u64| {
                let c = Counter::<u64>::default();
                c.inc_by(v);
                r.register(name, help, c);
            };
            counter(
                r,
                "mirror_announcements_received",
                "Announcements the mirror received on the topic",
                mirror.received,
            );
            counter(
                r,
                "mirror_healed_segments",
                "Segments the mirror fetched while healing a gap",
                mirror.healed,
            );
            counter(
                r,
                "mirror_gaps",
                "Gaps the mirror noticed (a segment's prev_cid not held)",
                mirror.gaps,
            );
            counter(
                r,
                "mirror_subscriptions",
                "Times the mirror (re)subscribed to the topic",
                mirror.subscriptions,
            );
            let rejected = Family::<ReasonLabel, Counter>::default();
            // Every reason from the start (0), so that the first refusal shows as an increase.
            for reason in crate::mirror::REASONS {
                let _ = rejected.get_or_create(&ReasonLabel { reason });
            }
            for (reason, n) in &mirror.rejected {
                rejected.get_or_create(&ReasonLabel { reason }).inc_by(*n);
            }
            r.register(
                "mirror_rejected",
                "Announcements or listed segments the mirror refused, by reason",
                rejected,
            );
            let newest = Family::<CameraLabel, FloatGauge>::default();
            for (camera, end) in m
                .mirror_newest
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
            {
                newest
                    .get_or_create(&CameraLabel {
                        camera: camera.clone(),
                    })
                    .set(((self.now_ms - end) as f64 / 1000.0).max(0.0));
            }
            r.register(
                "mirror_newest_age_seconds",
                "Seconds from the end of the newest mirrored segment of each camera to now",
                newest,
            );
        }
        if let Some((cpu, rss, fds)) = self.process {
            let c = FloatCounter::default();
            c.inc_by(cpu);
            r.register_with_unit(
                "process_cpu",
                "CPU time used by vigil itself (user + system; not its ffmpeg children)",
                prometheus_client::registry::Unit::Seconds,
                c,
            );
            gauge(
                r,
                "process_resident_memory_bytes",
                "Resident memory of vigil itself",
                rss as f64,
            );
            gauge(
                r,
                "process_open_fds",
                "Open file descriptors of vigil itself",
                fds as f64,
            );
        }
    }
}

/// This process's (CPU seconds, resident bytes, open fds), from /proc.
pub fn process_stats() -> Option<(f64, u64, u64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces), counted from field 3.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = 100.0; // USER_HZ on Linux
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    let fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
    Some(((utime + stime) / ticks, rss_kb * 1024, fds))
}

/// `text` with the values of the series named `name` (any labels), for tests and the benchmark.
pub fn values(text: &str, name: &str) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = match line.rsplit_once(' ') {
            Some(x) => x,
            None => continue,
        };
        let bare = series.split('{').next().unwrap_or(series);
        if bare == name
            && let Ok(v) = value.parse()
        {
            out.push((series.to_string(), v));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_reasons_are_a_small_fixed_set() {
        assert_eq!(
            reason_kind("failed: stalled: no bytes written for 10.0 s"),
            "stalled"
        );
        assert_eq!(
            reason_kind(
                "failed: ffmpeg signal: 9 (SIGKILL) after 3.1 s in session x; last stderr: y"
            ),
            "exited"
        );
        assert_eq!(
            reason_kind("failed: restart intensity exceeded: 4 restarts within 30 s (last: a b)"),
            "escalated"
        );
        assert_eq!(
            reason_kind("restarted along with ffmpeg (rest_for_one)"),
            "sibling"
        );
        assert_eq!(reason_kind("failed: catalog: disk I/O error"), "failed");
        assert_eq!(reason_kind("panicked: index out of bounds"), "panicked");
        assert_eq!(reason_kind("killed"), "killed");
        assert_eq!(reason_kind("normal exit"), "normal");
        assert_eq!(reason_kind("something new"), "other");
    }

    #[test]
    fn the_exposition_has_the_counters_and_the_scrape_state() {
        let m = Metrics::new("n1");
        let at = std::time::Instant::now();
        let ev = |kind| Event {
            at,
            supervisor: "root/cameras/cam1".into(),
            kind,
        };
        m.supervision(&ev(EventKind::Started {
            child: "ffmpeg".into(),
            generation: 0,
        }));
        m.supervision(&ev(EventKind::Exited {
            child: "ffmpeg".into(),
            reason: supervisors::ExitReason::Failed("ffmpeg exit status: 1".into()),
            ran_for: Duration::from_secs(1),
            healthy: false,
        }));
        for _ in 0..2 {
            m.supervision(&ev(EventKind::Restarting {
                child: "ffmpeg".into(),
                attempt: 1,
                delay: Duration::from_millis(500),
                cause: "failed: ffmpeg exit status: 1 after 1.0 s".into(),
                healthy: false,
            }));
        }
        m.stage_done(
            "pin",
            Some(Duration::from_millis(30)),
            Duration::from_secs(1),
        );
        m.deleted(3, 3000, false);
        m.http(
            "/cameras/{camera}/live.m3u8",
            &actix_web::http::Method::GET,
            200,
            Duration::from_millis(2),
        );
        let snap = Snapshot {
            now_ms: 10_000,
            cameras: vec![CameraSnap {
                id: "cam1".into(),
                state: Some("recording"),
                last_write_age: Some(0.5),
                last_segment_age: Some(1.5),
                recorded_seconds: 120.0,
                lost_seconds: 4.0,
            }],
            backlog: Some(BacklogSnap {
                pin: 7,
                ..Default::default()
            }),
            links: vec![("ipfs", false), ("mongodb", true)],
            disk: Some((100, 1000)),
            min_free_ratio: 0.05,
            critical_free_ratio: 0.01,
            footage_bytes: Some(5000),
            mirror: None,
            process: process_stats(),
        };
        let text = m.render(&snap).unwrap();
        let one = |name: &str| values(&text, name);
        assert_eq!(
            one("vigil_supervisor_restarts_total"),
            vec![(
                "vigil_supervisor_restarts_total{supervisor=\"root/cameras/cam1\",child=\"ffmpeg\",reason=\"exited\"}".to_string(),
                2.0
            )]
        );
        assert_eq!(one("vigil_supervisor_child_up")[0].1, 0.0);
        // Every stage and deletion reason is there from the start; only what happened is non-zero.
        let segments = one("vigil_segments_total");
        assert_eq!(segments.len(), 7, "{segments:?}");
        assert!(segments.contains(&("vigil_segments_total{stage=\"pinned\"}".to_string(), 1.0)));
        assert!(segments.contains(&("vigil_segments_total{stage=\"deleted\"}".to_string(), 3.0)));
        assert_eq!(segments.iter().map(|(_, v)| v).sum::<f64>(), 4.0);
        let mut deleted = one("vigil_retention_deleted_bytes_total");
        deleted.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            deleted,
            vec![
                (
                    "vigil_retention_deleted_bytes_total{reason=\"budget\"}".to_string(),
                    3000.0
                ),
                (
                    "vigil_retention_deleted_bytes_total{reason=\"critical\"}".to_string(),
                    0.0
                )
            ]
        );
        let states = one("vigil_camera_state");
        assert_eq!(states.len(), CAMERA_STATES.len());
        assert_eq!(
            states.iter().filter(|(_, v)| *v == 1.0).count(),
            1,
            "{states:?}"
        );
        assert!(text.contains("vigil_camera_state{camera=\"cam1\",state=\"recording\"} 1"));
        assert_eq!(one("vigil_footage_lost_seconds_total")[0].1, 4.0);
        assert!(text.contains("vigil_pipeline_backlog_segments{stage=\"pin\"} 7"));
        assert!(text.contains("vigil_link_up{link=\"ipfs\"} 0"));
        assert!(text.contains("vigil_link_up{link=\"mongodb\"} 1"));
        assert_eq!(one("vigil_disk_free_bytes")[0].1, 100.0);
        assert!(text.contains("vigil_build_info{version=\""));
        assert!(
            one("vigil_process_resident_memory_bytes")[0].1 > 0.0,
            "{text}"
        );
        assert_eq!(
            one("vigil_http_requests_total"),
            vec![(
                "vigil_http_requests_total{route=\"/cameras/{camera}/live.m3u8\",method=\"GET\",status=\"200\"}".to_string(),
                1.0
            )]
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
        // Every sample line's name carries the prefix.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.starts_with("vigil_"), "{line}");
        }
    }
}
