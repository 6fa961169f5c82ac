//! The TOML configuration: what a node is, where it keeps its data, where it listens, and its cameras.
//!
//! Parsing rejects unknown fields (with the TOML line and column); validation then checks every field and
//! reports all problems at once, each naming its field as a TOML path (`cameras[1].url`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Problem, Result};

/// A secret from the config (a password, a token): its `Debug` never shows it; [`Secret::expose`] is the one
/// way to read it, at the point of use.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    /// The secret itself: only to hand it to the protocol that needs it, never to a log or an answer.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A camera's RTSP URL, which may carry credentials: `Debug` and `Display` show it with the password replaced
/// by `***`; [`RtspUrl::expose`] gives the real one (for ffmpeg and the probe only).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct RtspUrl(String);

impl RtspUrl {
    pub fn new(s: impl Into<String>) -> RtspUrl {
        RtspUrl(s.into())
    }
    /// The URL with its credentials.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// The URL with any password replaced by `***`, for logs and answers.
    pub fn redacted(&self) -> String {
        match url::Url::parse(&self.0) {
            Ok(mut u) => {
                if u.password().is_some() {
                    let _ = u.set_password(Some("***"));
                }
                u.to_string()
            }
            Err(_) => crate::process::redact_url_passwords(&self.0),
        }
    }
    /// The strings a log must never show: the password as written and percent-decoded, and user:password.
    pub fn secrets(&self) -> Vec<String> {
        let Ok(u) = url::Url::parse(&self.0) else {
            return Vec::new();
        };
        let Some(pw) = u.password() else {
            return Vec::new();
        };
        let decoded = percent_encoding::percent_decode_str(pw)
            .decode_utf8_lossy()
            .into_owned();
        // Short passwords would redact innocent text everywhere; the URL form is still redacted.
        [pw.to_string(), decoded]
            .into_iter()
            .filter(|p| p.len() >= 4)
            .collect()
    }
}

impl std::fmt::Debug for RtspUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RtspUrl({})", self.redacted())
    }
}

impl std::fmt::Display for RtspUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// An amount of disk space: bytes, or a percentage of the data folder's file system. Written as a number of
/// bytes, or a string: `"500 MB"`, `"2GiB"`, `"5%"`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Space {
    Bytes(u64),
    Percent(f64),
}

impl Space {
    /// In bytes, for a file system of `total` bytes.
    pub fn bytes_of(self, total: u64) -> u64 {
        match self {
            Space::Bytes(b) => b,
            Space::Percent(p) => (total as f64 * p / 100.0) as u64,
        }
    }

    fn parse(text: &str) -> std::result::Result<Space, String> {
        let t = text.trim();
        if let Some(p) = t.strip_suffix('%') {
            return match p.trim().parse::<f64>() {
                Ok(v) if (0.0..=100.0).contains(&v) => Ok(Space::Percent(v)),
                _ => Err(format!("{text:?} is not a percentage between 0% and 100%")),
            };
        }
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: f64 = num
            .parse()
            .map_err(|_| format!("{text:?} is not a size like \"500 MB\", \"2 GiB\" or \"5%\""))?;
        let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1.0,
            "k" | "kb" => 1e3,
            "m" | "mb" => 1e6,
            "g" | "gb" => 1e9,
            "t" | "tb" => 1e12,
            "kib" => 1024.0,
            "mib" => 1024.0 * 1024.0,
            "gib" => 1024.0 * 1024.0 * 1024.0,
            "tib" => 1024.0f64.powi(4),
            other => {
                return Err(format!(
                    "unknown unit {other:?} in {text:?}; use B, kB, MB, GB, TB, KiB, MiB, GiB, TiB or %"
                ));
            }
        };
        Ok(Space::Bytes((n * mult) as u64))
    }
}

impl std::fmt::Display for Space {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Space::Percent(p) => write!(f, "{p}%"),
            Space::Bytes(b) if b >= 1_000_000_000 => write!(f, "{:.1} GB", b as f64 / 1e9),
            Space::Bytes(b) if b >= 1_000_000 => write!(f, "{:.1} MB", b as f64 / 1e6),
            Space::Bytes(b) => write!(f, "{b} B"),
        }
    }
}

impl<'de> Deserialize<'de> for Space {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Space, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(Space::Bytes(n)),
            Raw::S(s) => Space::parse(&s).map_err(serde::de::Error::custom),
        }
    }
}

/// `[retention]`: how much footage a data folder keeps.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Most footage kept, all cameras together (none: no byte budget).
    #[serde(default)]
    pub max_bytes: Option<Space>,
    /// Keep at least this much of the file system free.
    #[serde(default = "default_min_free")]
    pub min_free: Space,
    /// Below this much free space, footage that is not yet distributed is deleted too (oldest first), so
    /// that recording never stops; each such deletion is logged.
    #[serde(default = "default_critical_free")]
    pub critical_free: Space,
    /// Delete footage older than this many days (none: no age limit).
    #[serde(default)]
    pub max_age_days: Option<u32>,
    /// How often retention looks (it also looks at once when a write fails for lack of space).
    #[serde(default = "default_retention_check")]
    pub check_seconds: u64,
    /// Footage recorded here is deleted (above the critical floor) only once at least this many mirrors
    /// have acknowledged a copy — or IPFS Cluster reports it pinned at `replication_min` peers. Unset: with
    /// a cluster, the cluster's word; without, pinned and indexed is enough (a single node).
    #[serde(default)]
    pub min_replicas: Option<u32>,
    /// The IPFS peer ids of the mirrors whose acknowledgements count (their `ipfs id`). Empty: any peer of
    /// the private IPFS network is trusted.
    #[serde(default)]
    pub mirror_peers: Vec<String>,
    /// Space vigil holds in a file of its own (`<data_dir>/.vigil-reserve`) and gives back when free space
    /// falls below `critical_free`: on a completely full disk the catalog still has room to record the
    /// deletions that make space again. Recreated once there is room for it above `min_free`. 0: none.
    #[serde(default = "default_reserve")]
    pub reserve: Space,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            max_bytes: None,
            min_free: default_min_free(),
            critical_free: default_critical_free(),
            max_age_days: None,
            check_seconds: default_retention_check(),
            min_replicas: None,
            mirror_peers: Vec::new(),
            reserve: default_reserve(),
        }
    }
}

fn default_reserve() -> Space {
    Space::Bytes(4 << 20)
}
fn default_min_free() -> Space {
    Space::Percent(5.0)
}
fn default_critical_free() -> Space {
    Space::Percent(1.0)
}
fn default_retention_check() -> u64 {
    10
}

/// `[auth]`: who may log in and for how long.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Require a login on every route but `/healthz`, `/login`, `/api/login` and `/assets/`. Turning it off
    /// opens every camera to anyone who reaches the port: only for a box on an isolated network (logged
    /// as a warning at start).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// A login session ends after this many minutes without a request (a playing video keeps it alive).
    #[serde(default = "default_idle_minutes")]
    pub idle_minutes: u64,
    /// …and this many hours after the login, whatever happens.
    #[serde(default = "default_absolute_hours")]
    pub absolute_hours: u64,
    /// `auto`: cookies are marked Secure when the request came over TLS (a trusted proxy's
    /// `X-Forwarded-Proto: https`); `always`; `never`.
    #[serde(default = "default_secure_cookies")]
    pub secure_cookies: String,
    /// Proxies whose `X-Forwarded-For` / `X-Forwarded-Proto` are believed (the nginx in front).
    #[serde(default = "default_trusted_proxies")]
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Failed logins (per address and per user, within `lockout_minutes`) after which each answer is slowed.
    #[serde(default = "default_slow_after")]
    pub slow_after_failures: u32,
    /// Failed logins for one user after which its logins are refused for `lockout_minutes`.
    #[serde(default = "default_lock_after")]
    pub lock_after_failures: u32,
    /// Failed logins from one address (whatever the user) after which that address is refused: higher than
    /// the per-user limit, since several people may share an address (an office behind NAT).
    #[serde(default = "default_lock_address_after")]
    pub lock_address_after_failures: u32,
    #[serde(default = "default_lockout_minutes")]
    pub lockout_minutes: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            enabled: true,
            idle_minutes: default_idle_minutes(),
            absolute_hours: default_absolute_hours(),
            secure_cookies: default_secure_cookies(),
            trusted_proxies: default_trusted_proxies(),
            slow_after_failures: default_slow_after(),
            lock_after_failures: default_lock_after(),
            lock_address_after_failures: default_lock_address_after(),
            lockout_minutes: default_lockout_minutes(),
        }
    }
}

fn yes() -> bool {
    true
}
fn default_idle_minutes() -> u64 {
    60
}
fn default_absolute_hours() -> u64 {
    12
}
fn default_secure_cookies() -> String {
    "auto".into()
}
fn default_trusted_proxies() -> Vec<std::net::IpAddr> {
    vec![
        std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::Ipv6Addr::LOCALHOST.into(),
    ]
}
fn default_slow_after() -> u32 {
    3
}
fn default_lock_after() -> u32 {
    10
}
fn default_lock_address_after() -> u32 {
    30
}
fn default_lockout_minutes() -> u64 {
    15
}

/// A whole vigil config file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This node's id: in index documents, pubsub announcements and logs. Letters, digits, `-`, `_`, `.`.
    pub node_id: String,
    /// Where recordings and the catalog live. A relative path is taken relative to the config file.
    pub data_dir: PathBuf,
    /// HTTP server settings.
    #[serde(default)]
    pub http: HttpConfig,
    /// Supervision tuning.
    #[serde(default)]
    pub supervision: SupervisionConfig,
    /// Capture settings shared by all cameras.
    #[serde(default)]
    pub capture: CaptureConfig,
    /// The IPFS node that segments are added to (no distribution pipeline without it).
    #[serde(default)]
    pub ipfs: Option<IpfsConfig>,
    /// Where segments are indexed (the embedded catalog without it).
    #[serde(default)]
    pub index: Option<IndexConfig>,
    /// How much footage the data folder keeps.
    #[serde(default)]
    pub retention: RetentionConfig,
    /// Logins, sessions and their limits.
    #[serde(default)]
    pub auth: AuthConfig,
    /// The cameras this node records.
    #[serde(default)]
    pub cameras: Vec<CameraConfig>,
    /// Cameras recorded by other nodes that this node serves: mirrored (the storage role) or replayed
    /// through the index and IPFS.
    #[serde(default)]
    pub remote_cameras: Vec<RemoteCameraConfig>,
    /// The storage role's settings (used when a remote camera is mirrored).
    #[serde(default)]
    pub mirror: MirrorConfig,
    /// `GET /metrics` for Prometheus.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// The AMQP control plane (RabbitMQ): signed commands that add, change and remove cameras at run time.
    #[serde(default)]
    pub control: Option<ControlConfig>,
}

/// `[control]`: take commands from an AMQP broker (see docs/control.md).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ControlConfig {
    /// `amqp://user:password@host:5672/vhost` (`%2f` is the default vhost). The password is never logged.
    pub amqp_url: Secret,
    /// The fleet's shared HMAC-SHA256 key (at least 32 bytes; `vigil ctl keygen FILE` makes one). Relative to
    /// the config file's folder. Keep it readable by vigil only.
    pub key_file: PathBuf,
    /// Name prefix of the exchanges and queues: `<prefix>.control`, `<prefix>.events`, `<prefix>.dlx`,
    /// `<prefix>.node.<node_id>`, `<prefix>.dead`.
    #[serde(default = "default_control_prefix")]
    pub prefix: String,
    /// A command is accepted only when its `issued_at` is within this many seconds of the node's clock; older
    /// ones are refused as replays.
    #[serde(default = "default_control_window")]
    pub window_seconds: u32,
    /// How often the node publishes a heartbeat on `<prefix>.events`.
    #[serde(default = "default_heartbeat_seconds")]
    pub heartbeat_seconds: u32,
    /// How many unacknowledged commands the broker hands this node at once.
    #[serde(default = "default_prefetch")]
    pub prefetch: u16,
    /// The roles to play until a node.configure command says otherwise (capture, storage, distributor,
    /// transcoder); default: every role this config makes possible.
    #[serde(default)]
    pub roles: Option<Vec<String>>,
    /// The transcoder role deletes (and unpins) the renditions it made once their source is this many days old.
    #[serde(default = "default_variants_keep_days")]
    pub variants_keep_days: u32,
}

fn default_variants_keep_days() -> u32 {
    7
}

fn default_control_prefix() -> String {
    "vigil".into()
}
fn default_control_window() -> u32 {
    300
}
fn default_heartbeat_seconds() -> u32 {
    10
}
fn default_prefetch() -> u16 {
    4
}

impl ControlConfig {
    pub fn exchange(&self) -> String {
        format!("{}.control", self.prefix)
    }
    pub fn events_exchange(&self) -> String {
        format!("{}.events", self.prefix)
    }
    pub fn dead_letter_exchange(&self) -> String {
        format!("{}.dlx", self.prefix)
    }
    pub fn dead_letter_queue(&self) -> String {
        format!("{}.dead", self.prefix)
    }
    pub fn node_queue(&self, node: &str) -> String {
        format!("{}.node.{node}", self.prefix)
    }
}

/// `[metrics]`: the Prometheus endpoint `GET /metrics`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve `/metrics` at all (default true).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// When set, a scrape must send `Authorization: Bearer <token>` (from any address). Without it, only
    /// direct requests from the box itself (loopback, no proxy headers) are answered.
    #[serde(default)]
    pub bearer_token: Option<Secret>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: true,
            bearer_token: None,
        }
    }
}

/// `[[remote_cameras]]`: a camera another node records.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RemoteCameraConfig {
    /// The camera's id (its `device_id` in the index and announcements).
    pub id: String,
    /// Its factory (for users scoped to factories).
    pub factory_id: String,
    /// Keep a copy of every segment here (fetched by CID, pinned, catalogued); `false`: replay only, through
    /// the index and this node's IPFS.
    #[serde(default = "default_true")]
    pub mirror: bool,
    /// EXT-X-TARGETDURATION floor of its playlists (raised to cover the longest segment seen).
    #[serde(default)]
    pub target_duration: Option<u32>,
    /// The IPFS peer id of the node that records it (its `ipfs id`): announcements of this camera from any
    /// other peer are rejected. Unset: any peer of the private IPFS network is trusted.
    #[serde(default)]
    pub origin_peer: Option<String>,
}

/// `[mirror]`: how mirrored cameras are followed.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MirrorConfig {
    /// Segments fetched at once (all mirrored cameras together).
    #[serde(default = "default_mirror_concurrency")]
    pub concurrency: usize,
    /// Largest segment accepted; a bigger announcement or content is rejected.
    #[serde(default = "default_max_segment")]
    pub max_segment_bytes: Space,
    /// How far back a mirror that has nothing of a camera yet fetches, and the oldest announcement accepted.
    #[serde(default = "default_backfill_hours")]
    pub backfill_hours: u32,
    /// Time for one fetch by CID before it counts as unresolvable (tried twice).
    #[serde(default = "default_fetch_timeout")]
    pub fetch_timeout_seconds: u64,
    /// How often the mirror compares what it has with the index (heals a lost last announcement).
    #[serde(default = "default_heal_seconds")]
    pub heal_seconds: u64,
    /// Recording nodes to ask for segment listings when there is no shared index (MongoDB).
    #[serde(default)]
    pub origins: Vec<OriginConfig>,
}

impl Default for MirrorConfig {
    fn default() -> Self {
        MirrorConfig {
            concurrency: default_mirror_concurrency(),
            max_segment_bytes: default_max_segment(),
            backfill_hours: default_backfill_hours(),
            fetch_timeout_seconds: default_fetch_timeout(),
            heal_seconds: default_heal_seconds(),
            origins: Vec::new(),
        }
    }
}

/// `[[mirror.origins]]`: a recording node's HTTP API.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OriginConfig {
    /// The node's `node_id`.
    pub node_id: String,
    /// Its HTTP base URL, e.g. `http://10.0.0.5:8000`.
    pub url: String,
    /// An API token of a user that sees the mirrored cameras (`vigil token add` on that node).
    #[serde(default)]
    pub token: Option<Secret>,
}

fn default_mirror_concurrency() -> usize {
    4
}
fn default_max_segment() -> Space {
    Space::Bytes(64 << 20)
}
fn default_backfill_hours() -> u32 {
    24
}
fn default_fetch_timeout() -> u64 {
    10
}
fn default_heal_seconds() -> u64 {
    30
}

/// `[ipfs]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IpfsConfig {
    /// The Kubo RPC API (Kubo, or js-ipfs which speaks the same API), e.g. `http://127.0.0.1:5001`.
    pub api: String,
    /// Pubsub topic for announcements.
    #[serde(default = "default_topic")]
    pub topic: String,
    /// Timeout of one API call.
    #[serde(default = "default_ipfs_timeout")]
    pub timeout_seconds: u64,
    /// `user:password` for an API behind a proxy with basic auth.
    #[serde(default)]
    pub basic_auth: Option<Secret>,
    /// Bearer token for an API behind a proxy.
    #[serde(default)]
    pub bearer_token: Option<Secret>,
    /// Run and own this daemon command (e.g. `["ipfs", "daemon"]`); restarted with the link.
    #[serde(default)]
    pub daemon: Option<Vec<String>>,
    /// Pin through IPFS Cluster instead of on the local node.
    #[serde(default)]
    pub cluster: Option<ClusterConfig>,
}

/// `[ipfs.cluster]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// The cluster's REST API, e.g. `http://127.0.0.1:9094`.
    pub api: String,
    /// Replication factor range (-1 = every peer).
    #[serde(default = "default_replication")]
    pub replication_min: i32,
    #[serde(default = "default_replication")]
    pub replication_max: i32,
    #[serde(default)]
    pub basic_auth: Option<Secret>,
}

/// `[index]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IndexConfig {
    /// `mongodb://host:port/…`
    pub mongodb_uri: String,
    #[serde(default = "default_database")]
    pub database: String,
}

fn default_topic() -> String {
    "vigil-segments".to_string()
}
fn default_ipfs_timeout() -> u64 {
    30
}
fn default_replication() -> i32 {
    -1
}
fn default_database() -> String {
    "vigil".to_string()
}

fn check_http_url(value: &str) -> std::result::Result<(), String> {
    let u = url::Url::parse(value)
        .map_err(|e| format!("{value:?} is not a URL ({e}); e.g. \"http://127.0.0.1:5001\""))?;
    match u.scheme() {
        "http" => Ok(()),
        "https" if cfg!(feature = "tls") => Ok(()),
        "https" => {
            Err("https needs vigil built with the `tls` feature (or a TLS proxy in front)".into())
        }
        other => Err(format!("scheme must be http or https, got {other:?}")),
    }
}

fn check_basic(value: &Option<Secret>) -> std::result::Result<(), String> {
    match value {
        Some(v) if !v.expose().contains(':') => Err("must be user:password".into()),
        _ => Ok(()),
    }
}

/// `[http]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// `host:port` to listen on; default `127.0.0.1:8000`. Port 0 picks a free port (logged at start).
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Folder served at `/assets/` (the player page loads `/assets/hls.min.js` from here). The demo points it at
    /// hls.js's `dist` folder installed from npm.
    #[serde(default)]
    pub assets_dir: Option<PathBuf>,
    /// The time zone whose days the day playlists cover, as an IANA name (`"Europe/Berlin"`); default: the
    /// box's own zone (TZ, else /etc/localtime).
    #[serde(default)]
    pub timezone: Option<String>,
    /// Behind nginx: answer an authorised segment request from a trusted proxy with only an
    /// `X-Accel-Redirect: <this prefix><path under data_dir>` header, and let nginx send the bytes from an
    /// `internal` location that aliases the data folder (see deploy/nginx/). Must start and end with `/`.
    #[serde(default)]
    pub accel_redirect: Option<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: default_listen(),
            assets_dir: None,
            timezone: None,
            accel_redirect: None,
        }
    }
}

fn default_listen() -> String {
    "127.0.0.1:8000".to_string()
}

/// `[capture]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CaptureConfig {
    /// The ffmpeg program (a name on PATH or a path).
    #[serde(default = "default_ffmpeg")]
    pub ffmpeg: String,
    /// RTSP socket timeout given to ffmpeg (`-timeout`); a frozen camera makes ffmpeg exit after about twice this.
    #[serde(default = "default_rtsp_timeout")]
    pub rtsp_timeout_seconds: u32,
    /// While a camera's restart waits out a long backoff, probe it this often and restart as soon as it answers.
    #[serde(default = "default_probe_interval")]
    pub probe_interval_ms: u64,
    /// Segments in the live playlist window.
    #[serde(default = "default_live_window")]
    pub live_window: usize,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            ffmpeg: default_ffmpeg(),
            rtsp_timeout_seconds: default_rtsp_timeout(),
            probe_interval_ms: default_probe_interval(),
            live_window: default_live_window(),
        }
    }
}

fn default_ffmpeg() -> String {
    "ffmpeg".to_string()
}
fn default_rtsp_timeout() -> u32 {
    5
}
fn default_probe_interval() -> u64 {
    250
}
fn default_live_window() -> usize {
    6
}

/// `[supervision]`: the root supervisor's restart intensity and the children's backoff.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SupervisionConfig {
    /// More than this many restarts…
    #[serde(default = "default_max_restarts")]
    pub max_restarts: u32,
    /// …within this many seconds make a supervisor give up and escalate (at the root: vigil exits non-zero).
    #[serde(default = "default_within")]
    pub within_seconds: u64,
    /// First restart delay, in milliseconds.
    #[serde(default = "default_backoff_initial")]
    pub backoff_initial_ms: u64,
    /// Longest restart delay, in seconds.
    #[serde(default = "default_backoff_max")]
    pub backoff_max_seconds: u64,
}

impl SupervisionConfig {
    /// `spec` with this restart intensity and backoff.
    pub fn apply(&self, spec: supervisors::SupervisorSpec) -> supervisors::SupervisorSpec {
        spec.intensity(
            self.max_restarts,
            std::time::Duration::from_secs(self.within_seconds),
        )
        .backoff(supervisors::BackoffPolicy {
            initial: std::time::Duration::from_millis(self.backoff_initial_ms),
            max: std::time::Duration::from_secs(self.backoff_max_seconds),
            ..supervisors::BackoffPolicy::default()
        })
    }
}

impl Default for SupervisionConfig {
    fn default() -> Self {
        SupervisionConfig {
            max_restarts: default_max_restarts(),
            within_seconds: default_within(),
            backoff_initial_ms: default_backoff_initial(),
            backoff_max_seconds: default_backoff_max(),
        }
    }
}

fn default_max_restarts() -> u32 {
    10
}
fn default_within() -> u64 {
    60
}
fn default_backoff_initial() -> u64 {
    500
}
fn default_backoff_max() -> u64 {
    30
}

/// One `[[cameras]]` entry.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CameraConfig {
    /// Device id: unique on the node, used in folder names and URLs. Letters, digits, `-`, `_`.
    pub id: String,
    /// The factory (site, customer) the camera belongs to.
    pub factory_id: String,
    /// `rtsp://` or `rtsps://` URL, credentials included if the camera needs them (never logged).
    pub url: RtspUrl,
    /// Target HLS segment length in seconds (segments are cut on the camera's keyframes).
    #[serde(default = "default_segment_seconds")]
    pub segment_seconds: u32,
    /// A camera whose ffmpeg has added no bytes to its current segment for this long is restarted (frozen
    /// camera, dead connection). May be shorter than a segment.
    #[serde(default = "default_stall_seconds")]
    pub stall_seconds: u32,
    /// EXT-X-TARGETDURATION of this camera's playlists, in seconds; default 2 × segment_seconds (ffmpeg can only
    /// cut on keyframes, so segments run longer than segment_seconds when the camera's GOP does not divide it).
    #[serde(default)]
    pub target_duration: Option<u32>,
    /// Record this camera (false keeps it configured but idle).
    #[serde(default = "default_true")]
    pub enabled: bool,
}

fn default_segment_seconds() -> u32 {
    2
}
fn default_stall_seconds() -> u32 {
    3
}
fn default_true() -> bool {
    true
}

const MAX_SEGMENT_SECONDS: u32 = 60;

impl CameraConfig {
    /// The playlists' target duration in seconds.
    pub fn target_duration(&self) -> u64 {
        u64::from(self.target_duration.unwrap_or(2 * self.segment_seconds))
    }

    /// The URL with any password replaced by `***`, for logs.
    pub fn redacted_url(&self) -> String {
        self.url.redacted()
    }
}

impl Config {
    /// Read, parse and validate a config file.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ConfigRead {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config = Config::parse(&text, path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        if config.data_dir.is_relative() {
            config.data_dir = base.join(&config.data_dir);
        }
        if let Some(c) = &mut config.control
            && c.key_file.is_relative()
        {
            c.key_file = base.join(&c.key_file);
        }
        Ok(config)
    }

    /// Parse and validate TOML text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config> {
        let config: Config = toml::from_str(text).map_err(|e| Error::ConfigParse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let problems = config.problems();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(Error::ConfigInvalid {
                path: path.to_path_buf(),
                problems,
            })
        }
    }

    /// The time zone of the day playlists: `[http] timezone`, else the box's own (UTC if it has none).
    pub fn time_zone(&self) -> jiff::tz::TimeZone {
        match &self.http.timezone {
            Some(name) => jiff::tz::TimeZone::get(name).unwrap_or(jiff::tz::TimeZone::UTC),
            None => jiff::tz::TimeZone::try_system().unwrap_or(jiff::tz::TimeZone::UTC),
        }
    }

    /// The HTTP listen address, parsed (validation guarantees it parses).
    pub fn listen_addr(&self) -> SocketAddr {
        self.http.listen.parse().expect("validated listen address")
    }

    /// Every problem with the values (after parsing succeeded).
    pub fn problems(&self) -> Vec<Problem> {
        let mut p = Vec::new();
        let mut bad = |field: String, message: String| p.push(Problem { field, message });

        if let Err(m) = check_name(&self.node_id, true) {
            bad("node_id".into(), m);
        }
        if self.data_dir.as_os_str().is_empty() {
            bad("data_dir".into(), "must not be empty".into());
        }
        if let Err(e) = self.http.listen.parse::<SocketAddr>() {
            bad(
                "http.listen".into(),
                format!(
                    "{:?} is not a host:port socket address ({e}); e.g. \"127.0.0.1:8000\"",
                    self.http.listen
                ),
            );
        }
        let s = &self.supervision;
        if s.max_restarts == 0 {
            bad(
                "supervision.max_restarts".into(),
                "must be at least 1".into(),
            );
        }
        if s.within_seconds == 0 {
            bad(
                "supervision.within_seconds".into(),
                "must be at least 1".into(),
            );
        }
        if s.backoff_initial_ms == 0 {
            bad(
                "supervision.backoff_initial_ms".into(),
                "must be at least 1".into(),
            );
        }
        if s.backoff_max_seconds.saturating_mul(1000) < s.backoff_initial_ms {
            bad(
                "supervision.backoff_max_seconds".into(),
                format!(
                    "{} s is shorter than backoff_initial_ms ({} ms)",
                    s.backoff_max_seconds, s.backoff_initial_ms
                ),
            );
        }

        let cap = &self.capture;
        if cap.ffmpeg.trim().is_empty() {
            bad("capture.ffmpeg".into(), "must not be empty".into());
        }
        if !(1..=60).contains(&cap.rtsp_timeout_seconds) {
            bad(
                "capture.rtsp_timeout_seconds".into(),
                format!("must be between 1 and 60, got {}", cap.rtsp_timeout_seconds),
            );
        }
        if !(50..=60_000).contains(&cap.probe_interval_ms) {
            bad(
                "capture.probe_interval_ms".into(),
                format!(
                    "must be between 50 and 60000, got {}",
                    cap.probe_interval_ms
                ),
            );
        }
        if !(3..=100).contains(&cap.live_window) {
            bad(
                "capture.live_window".into(),
                format!(
                    "must be between 3 and 100 segments, got {}",
                    cap.live_window
                ),
            );
        }

        if let Some(ipfs) = &self.ipfs {
            if let Err(m) = check_http_url(&ipfs.api) {
                bad("ipfs.api".into(), m);
            }
            if ipfs.topic.trim().is_empty() {
                bad("ipfs.topic".into(), "must not be empty".into());
            }
            if !(1..=600).contains(&ipfs.timeout_seconds) {
                bad(
                    "ipfs.timeout_seconds".into(),
                    format!("must be between 1 and 600, got {}", ipfs.timeout_seconds),
                );
            }
            if let Err(m) = check_basic(&ipfs.basic_auth) {
                bad("ipfs.basic_auth".into(), m);
            }
            if ipfs.basic_auth.is_some() && ipfs.bearer_token.is_some() {
                bad(
                    "ipfs.bearer_token".into(),
                    "give basic_auth or bearer_token, not both".into(),
                );
            }
            if ipfs.daemon.as_ref().is_some_and(|d| d.is_empty()) {
                bad("ipfs.daemon".into(), "must name a program".into());
            }
            if let Some(c) = &ipfs.cluster {
                if let Err(m) = check_http_url(&c.api) {
                    bad("ipfs.cluster.api".into(), m);
                }
                for (f, v) in [
                    ("replication_min", c.replication_min),
                    ("replication_max", c.replication_max),
                ] {
                    if v == 0 || v < -1 {
                        bad(
                            format!("ipfs.cluster.{f}"),
                            format!("must be -1 (every peer) or at least 1, got {v}"),
                        );
                    }
                }
                if c.replication_max != -1
                    && (c.replication_min == -1 || c.replication_min > c.replication_max)
                {
                    bad(
                        "ipfs.cluster.replication_min".into(),
                        "must not exceed replication_max".into(),
                    );
                }
                if let Err(m) = check_basic(&c.basic_auth) {
                    bad("ipfs.cluster.basic_auth".into(), m);
                }
            }
        }
        if let Some(ix) = &self.index {
            if ix.mongodb_uri.starts_with("mongodb+srv://") {
                bad("index.mongodb_uri".into(), "mongodb+srv:// (DNS seed lists) is not supported: list the hosts with mongodb://".into());
            } else if !ix.mongodb_uri.starts_with("mongodb://") {
                bad(
                    "index.mongodb_uri".into(),
                    format!("{:?} is not a mongodb:// URI", ix.mongodb_uri),
                );
            }
            if ix.database.is_empty() || ix.database.contains(['/', '.', ' ', '$']) {
                bad(
                    "index.database".into(),
                    format!("{:?} is not a valid database name", ix.database),
                );
            }
            if self.ipfs.is_none() {
                bad(
                    "index".into(),
                    "indexing needs CIDs: configure [ipfs] too".into(),
                );
            }
        }

        if let Some(c) = &self.control {
            let u = c.amqp_url.expose();
            match url::Url::parse(u) {
                Ok(parsed) if parsed.scheme() == "amqp" => {}
                Ok(parsed) if parsed.scheme() == "amqps" => bad(
                    "control.amqp_url".into(),
                    "amqps:// is not built in: reach the broker over amqp:// on a private network or through a TLS tunnel".into(),
                ),
                // The URL may carry a password: never echoed.
                _ => bad(
                    "control.amqp_url".into(),
                    "is not an amqp:// URL, e.g. \"amqp://vigil:PASSWORD@127.0.0.1:5672/%2f\"".into(),
                ),
            }
            if c.key_file.as_os_str().is_empty() {
                bad("control.key_file".into(), "must not be empty".into());
            }
            if check_name(&c.prefix, true).is_err() {
                bad(
                    "control.prefix".into(),
                    format!("{:?}: letters, digits, '-', '_', '.' (1 to 64)", c.prefix),
                );
            }
            if !(10..=86_400).contains(&c.window_seconds) {
                bad(
                    "control.window_seconds".into(),
                    format!("must be between 10 and 86400, got {}", c.window_seconds),
                );
            }
            if !(1..=3600).contains(&c.heartbeat_seconds) {
                bad(
                    "control.heartbeat_seconds".into(),
                    format!("must be between 1 and 3600, got {}", c.heartbeat_seconds),
                );
            }
            for r in c.roles.iter().flatten() {
                if !["capture", "storage", "distributor", "transcoder"].contains(&r.as_str()) {
                    bad(
                        "control.roles".into(),
                        format!("unknown role {r:?} (capture, storage, distributor, transcoder)"),
                    );
                }
            }
            if !(1..=3650).contains(&c.variants_keep_days) {
                bad(
                    "control.variants_keep_days".into(),
                    format!("must be between 1 and 3650, got {}", c.variants_keep_days),
                );
            }
            if !(1..=1000).contains(&c.prefetch) {
                bad(
                    "control.prefetch".into(),
                    format!("must be between 1 and 1000, got {}", c.prefetch),
                );
            }
        }

        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, c) in self.cameras.iter().enumerate() {
            let f = |name: &str| format!("cameras[{i}].{name}");
            if let Err(m) = check_name(&c.id, false) {
                bad(f("id"), m);
            } else if c.id == "mirror" {
                bad(
                    f("id"),
                    "\"mirror\" is reserved (the folder of mirrored footage)".into(),
                );
            } else if let Some(first) = seen.insert(c.id.as_str(), i) {
                bad(
                    f("id"),
                    format!(
                        "duplicate camera id {:?} (already used by cameras[{first}])",
                        c.id
                    ),
                );
                seen.insert(c.id.as_str(), first);
            }
            if c.factory_id.trim().is_empty() {
                bad(f("factory_id"), "must not be empty".into());
            }
            if let Err(m) = check_rtsp_url(c.url.expose()) {
                bad(f("url"), m);
            }
            if let Some(t) = c.target_duration
                && t < c.segment_seconds
            {
                bad(
                    f("target_duration"),
                    format!("{t} is below segment_seconds ({})", c.segment_seconds),
                );
            }
            if c.segment_seconds == 0 || c.segment_seconds > MAX_SEGMENT_SECONDS {
                bad(
                    f("segment_seconds"),
                    format!(
                        "must be between 1 and {MAX_SEGMENT_SECONDS}, got {}",
                        c.segment_seconds
                    ),
                );
            }
            if !(1..=600).contains(&c.stall_seconds) {
                bad(
                    f("stall_seconds"),
                    format!("must be between 1 and 600, got {}", c.stall_seconds),
                );
            }
        }
        for (i, c) in self.remote_cameras.iter().enumerate() {
            let f = |name: &str| format!("remote_cameras[{i}].{name}");
            if let Err(m) = check_name(&c.id, false) {
                bad(f("id"), m);
            } else if self.cameras.iter().any(|l| l.id == c.id) {
                bad(
                    f("id"),
                    format!(
                        "{:?} is recorded here (in [[cameras]]): a camera is local or remote, not both",
                        c.id
                    ),
                );
            } else if self.remote_cameras[..i].iter().any(|r| r.id == c.id) {
                bad(f("id"), format!("duplicate remote camera id {:?}", c.id));
            }
            if c.factory_id.trim().is_empty() {
                bad(f("factory_id"), "must not be empty".into());
            }
            if !c.mirror && (self.index.is_none() || self.ipfs.is_none()) {
                bad(
                    f("mirror"),
                    "a camera replayed without a copy (mirror = false) is read from the shared index and fetched through IPFS: configure [index] and [ipfs]".into(),
                );
            }
            if c.mirror && self.ipfs.is_none() {
                bad(
                    f("mirror"),
                    "mirroring fetches segments by CID: configure [ipfs] (or set mirror = false)"
                        .into(),
                );
            }
        }
        if self.retention.min_replicas.is_some() && self.ipfs.is_none() {
            bad(
                "retention.min_replicas".into(),
                "replicas are counted from IPFS acknowledgements: configure [ipfs] too".into(),
            );
        }
        let m = &self.mirror;
        if !(1..=64).contains(&m.concurrency) {
            bad(
                "mirror.concurrency".into(),
                format!("must be between 1 and 64, got {}", m.concurrency),
            );
        }
        if !matches!(m.max_segment_bytes, Space::Bytes(b) if b >= 188) {
            bad(
                "mirror.max_segment_bytes".into(),
                "must be a size in bytes (e.g. \"64MiB\"), not a percentage".into(),
            );
        }
        if !(1..=24 * 366).contains(&m.backfill_hours) {
            bad(
                "mirror.backfill_hours".into(),
                format!("must be between 1 and 8784, got {}", m.backfill_hours),
            );
        }
        if !(1..=600).contains(&m.fetch_timeout_seconds) || !(1..=3600).contains(&m.heal_seconds) {
            bad(
                "mirror".into(),
                format!(
                    "fetch_timeout_seconds ({}) must be 1 to 600 and heal_seconds ({}) 1 to 3600",
                    m.fetch_timeout_seconds, m.heal_seconds
                ),
            );
        }
        for (i, o) in m.origins.iter().enumerate() {
            if let Err(msg) = check_name(&o.node_id, true) {
                bad(format!("mirror.origins[{i}].node_id"), msg);
            }
            if let Err(msg) = check_http_url(&o.url) {
                bad(format!("mirror.origins[{i}].url"), msg);
            }
        }
        if let Some(tz) = &self.http.timezone
            && let Err(e) = jiff::tz::TimeZone::get(tz)
        {
            bad(
                "http.timezone".into(),
                format!(
                    "{tz:?} is not a time zone this box knows ({e}); e.g. \"Europe/Berlin\" or \"UTC\""
                ),
            );
        }
        if let Some(prefix) = &self.http.accel_redirect
            && (!prefix.starts_with('/') || !prefix.ends_with('/') || prefix.contains(".."))
        {
            bad(
                "http.accel_redirect".into(),
                format!("{prefix:?}: a location like \"/_vigil_data/\" (starts and ends with /)"),
            );
        }
        if let Some(t) = &self.metrics.bearer_token
            && (t.expose().len() < 16
                || t.expose()
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control()))
        {
            bad(
                "metrics.bearer_token".into(),
                "at least 16 characters, no spaces (e.g. `openssl rand -hex 24`)".into(),
            );
        }
        let a = &self.auth;
        if !["auto", "always", "never"].contains(&a.secure_cookies.as_str()) {
            bad(
                "auth.secure_cookies".into(),
                format!("{:?}: auto, always or never", a.secure_cookies),
            );
        }
        if !(1..=10_080).contains(&a.idle_minutes)
            || !(1..=8_760).contains(&a.absolute_hours)
            || !(1..=10_080).contains(&a.lockout_minutes)
        {
            bad(
                "auth".into(),
                format!(
                    "idle_minutes ({}) and lockout_minutes ({}) must be 1 to 10080 (a week), absolute_hours ({}) 1 to 8760 (a year)",
                    a.idle_minutes, a.lockout_minutes, a.absolute_hours
                ),
            );
        }
        if a.lock_address_after_failures < a.lock_after_failures {
            bad(
                "auth.lock_address_after_failures".into(),
                format!(
                    "must not be below lock_after_failures ({}): one person's mistakes would lock an office",
                    a.lock_after_failures
                ),
            );
        }
        if a.lock_after_failures == 0 || a.slow_after_failures > a.lock_after_failures {
            bad(
                "auth.lock_after_failures".into(),
                format!(
                    "must be at least 1 and not below slow_after_failures ({})",
                    a.slow_after_failures
                ),
            );
        }
        let r = &self.retention;
        if r.check_seconds == 0 || r.check_seconds > 3600 {
            bad(
                "retention.check_seconds".into(),
                format!("must be between 1 and 3600, got {}", r.check_seconds),
            );
        }
        if r.max_age_days == Some(0) {
            bad(
                "retention.max_age_days".into(),
                "must be at least 1 (leave it out for no age limit)".into(),
            );
        }
        if let (Space::Percent(c), Space::Percent(m)) = (r.critical_free, r.min_free)
            && c > m
        {
            bad(
                "retention.critical_free".into(),
                format!("{c}% is above min_free ({m}%)"),
            );
        }
        if let (Space::Bytes(c), Space::Bytes(m)) = (r.critical_free, r.min_free)
            && c > m
        {
            bad(
                "retention.critical_free".into(),
                format!("{c} bytes is above min_free ({m} bytes)"),
            );
        }
        match r.reserve {
            Space::Percent(_) => bad(
                "retention.reserve".into(),
                "must be a size such as \"4 MiB\" (or 0 for none), not a share of the disk".into(),
            ),
            Space::Bytes(b) if b > RESERVE_MAX => bad(
                "retention.reserve".into(),
                format!(
                    "{b} bytes is more than the {} MiB a full disk's catalog writes could need",
                    RESERVE_MAX >> 20
                ),
            ),
            Space::Bytes(_) => {}
        }
        p
    }
}

/// The largest `[retention] reserve`: room for thousands of catalog transactions.
const RESERVE_MAX: u64 = 64 << 20;

/// Ids end up in folder names, URLs and index keys: keep them to a safe alphabet.
fn check_name(value: &str, allow_dot: bool) -> std::result::Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty".into());
    }
    if value.len() > 64 {
        return Err(format!("is {} characters long; at most 64", value.len()));
    }
    let ok =
        |ch: char| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_' || (allow_dot && ch == '.');
    if let Some(ch) = value.chars().find(|&ch| !ok(ch)) {
        let allowed = if allow_dot {
            "letters, digits, '-', '_' and '.'"
        } else {
            "letters, digits, '-' and '_'"
        };
        return Err(format!(
            "{value:?} contains {ch:?}; only {allowed} are allowed"
        ));
    }
    if value.starts_with(['.', '-']) {
        return Err(format!("{value:?} must start with a letter, digit or '_'"));
    }
    Ok(())
}

fn check_rtsp_url(value: &str) -> std::result::Result<(), String> {
    let u = url::Url::parse(value).map_err(|e| {
        format!("{value:?} is not a URL ({e}); e.g. \"rtsp://192.0.2.10:554/stream1\"")
    })?;
    if !matches!(u.scheme(), "rtsp" | "rtsps") {
        return Err(format!(
            "scheme must be rtsp or rtsps, got {:?}",
            u.scheme()
        ));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err("has no host".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
node_id = "edge-01"
data_dir = "/var/lib/vigil"

[http]
listen = "127.0.0.1:8000"

[[cameras]]
id = "cam1"
factory_id = "factory-a"
url = "rtsp://admin:secret@127.0.0.1:8554/cam1"

[[cameras]]
id = "cam2"
factory_id = "factory-a"
url = "rtsp://127.0.0.1:8554/cam2"
segment_seconds = 4
stall_seconds = 20
"#;

    fn parse(text: &str) -> Result<Config> {
        Config::parse(text, Path::new("test.toml"))
    }

    fn problems(text: &str) -> Vec<String> {
        match parse(text) {
            Err(e @ Error::ConfigInvalid { .. }) => {
                e.problems().iter().map(|p| p.to_string()).collect()
            }
            other => panic!("expected validation problems, got {other:?}"),
        }
    }

    #[test]
    fn a_good_config_parses_with_defaults() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.node_id, "edge-01");
        assert_eq!(c.cameras.len(), 2);
        assert_eq!(c.cameras[0].segment_seconds, 2);
        assert_eq!(c.cameras[0].stall_seconds, 3);
        assert_eq!(c.retention, RetentionConfig::default());
        assert!(
            !format!("{c:?}").contains("secret"),
            "Debug shows no password: {c:?}"
        );
        assert!(c.cameras[0].enabled);
        assert_eq!(c.cameras[1].segment_seconds, 4);
        assert_eq!(c.supervision, SupervisionConfig::default());
        assert_eq!(c.listen_addr(), "127.0.0.1:8000".parse().unwrap());
        assert_eq!(
            c.cameras[0].redacted_url(),
            "rtsp://admin:***@127.0.0.1:8554/cam1"
        );
    }

    #[test]
    fn unknown_field_is_named_with_its_line() {
        let text = GOOD.replace("segment_seconds = 4", "segment_secs = 4");
        match parse(&text) {
            Err(Error::ConfigParse { message, .. }) => {
                assert!(
                    message.contains("unknown field `segment_secs`"),
                    "{message}"
                );
                assert!(message.contains("line 17"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_url_duplicate_id_and_zero_segment_are_all_reported_by_field() {
        let text = GOOD
            .replace("rtsp://127.0.0.1:8554/cam2", "http://127.0.0.1/cam2")
            .replace("id = \"cam2\"", "id = \"cam1\"")
            .replace("segment_seconds = 4", "segment_seconds = 0");
        let p = problems(&text);
        assert_eq!(
            p,
            vec![
                "cameras[1].id: duplicate camera id \"cam1\" (already used by cameras[0])"
                    .to_string(),
                "cameras[1].url: scheme must be rtsp or rtsps, got \"http\"".to_string(),
                "cameras[1].segment_seconds: must be between 1 and 60, got 0".to_string(),
            ]
        );
    }

    #[test]
    fn ids_urls_and_addresses_are_checked() {
        let text = GOOD
            .replace("\"edge-01\"", "\"edge 01\"")
            .replace("\"cam1\"", "\"../cam1\"")
            .replace("rtsp://admin:secret@127.0.0.1:8554/cam1", "not a url")
            .replace("127.0.0.1:8000", "localhost")
            .replace("stall_seconds = 20", "stall_seconds = 0");
        let p = problems(&text);
        assert_eq!(p.len(), 5, "{p:#?}");
        assert!(
            p[0].starts_with("node_id: \"edge 01\" contains ' '"),
            "{}",
            p[0]
        );
        assert!(
            p[1].starts_with("http.listen: \"localhost\" is not a host:port"),
            "{}",
            p[1]
        );
        assert!(
            p[2].starts_with("cameras[0].id: \"../cam1\" contains '.'"),
            "{}",
            p[2]
        );
        assert!(
            p[3].starts_with("cameras[0].url: \"not a url\" is not a URL"),
            "{}",
            p[3]
        );
        assert!(
            p[4].starts_with("cameras[1].stall_seconds: must be between 1 and 600, got 0"),
            "{}",
            p[4]
        );
    }

    #[test]
    fn wrong_types_and_missing_fields_are_parse_errors_naming_the_field() {
        match parse(&GOOD.replace("segment_seconds = 4", "segment_seconds = \"4\"")) {
            Err(Error::ConfigParse { message, .. }) => {
                assert!(message.contains("segment_seconds"), "{message}")
            }
            other => panic!("{other:?}"),
        }
        match parse(&GOOD.replace("node_id = \"edge-01\"", "")) {
            Err(Error::ConfigParse { message, .. }) => {
                assert!(message.contains("missing field `node_id`"), "{message}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ipfs_cluster_and_index_sections_are_checked() {
        let text = format!(
            "{GOOD}\n[ipfs]\napi = \"ftp://x\"\ntopic = \"\"\nbasic_auth = \"nocolon\"\n[ipfs.cluster]\napi = \"http://127.0.0.1:9094\"\nreplication_min = 3\nreplication_max = 2\n[index]\nmongodb_uri = \"mongodb+srv://x\"\n"
        );
        // [ipfs] after [[cameras]] would belong to the last camera in TOML: rebuild with tables first.
        let text = text.replacen("[[cameras]]", "[placeholder]", 1);
        let (head, rest) = text.split_at(text.find("[placeholder]").unwrap());
        let (cams, tables) = rest.split_at(rest.find("[ipfs]").unwrap());
        let text = format!(
            "{head}{tables}\n{}",
            cams.replacen("[placeholder]", "[[cameras]]", 1)
        );
        let p = problems(&text);
        assert_eq!(
            p,
            vec![
                "ipfs.api: scheme must be http or https, got \"ftp\"".to_string(),
                "ipfs.topic: must not be empty".to_string(),
                "ipfs.basic_auth: must be user:password".to_string(),
                "ipfs.cluster.replication_min: must not exceed replication_max".to_string(),
                "index.mongodb_uri: mongodb+srv:// (DNS seed lists) is not supported: list the hosts with mongodb://".to_string(),
            ]
        );
    }

    #[test]
    fn remote_cameras_and_the_mirror_are_checked() {
        let text = "node_id = \"m\"\ndata_dir = \"/d\"\n\
            [retention]\nmin_replicas = 1\n\
            [mirror]\nconcurrency = 0\nmax_segment_bytes = \"5%\"\n\
            [[mirror.origins]]\nnode_id = \"a b\"\nurl = \"ftp://x\"\n\
            [[cameras]]\nid = \"mirror\"\nfactory_id = \"f\"\nurl = \"rtsp://h/1\"\n\
            [[cameras]]\nid = \"cam1\"\nfactory_id = \"f\"\nurl = \"rtsp://h/1\"\n\
            [[remote_cameras]]\nid = \"cam1\"\nfactory_id = \"f\"\n\
            [[remote_cameras]]\nid = \"cam9\"\nfactory_id = \"\"\nmirror = false\n\
            [[remote_cameras]]\nid = \"cam9\"\nfactory_id = \"f\"\n";
        let p = problems(text);
        let has = |field: &str, words: &str| {
            assert!(
                p.iter().any(|x| x.starts_with(field) && x.contains(words)),
                "no {field} … {words} in {p:#?}"
            )
        };
        has("cameras[0].id", "reserved");
        has("remote_cameras[0].id", "local or remote, not both");
        has("remote_cameras[1].factory_id", "must not be empty");
        has("remote_cameras[1].mirror", "configure [index] and [ipfs]");
        has("remote_cameras[2].id", "duplicate remote camera id");
        has("remote_cameras[2].mirror", "configure [ipfs]");
        has("retention.min_replicas", "configure [ipfs]");
        has("mirror.concurrency", "between 1 and 64");
        has("mirror.max_segment_bytes", "not a percentage");
        has("mirror.origins[0].node_id", "only letters");
        has("mirror.origins[0].url", "scheme");
        let good = parse(
            "node_id = \"m\"\ndata_dir = \"/d\"\n[ipfs]\napi = \"http://127.0.0.1:5001\"\n\
             [index]\nmongodb_uri = \"mongodb://127.0.0.1\"\n\
             [[remote_cameras]]\nid = \"cam1\"\nfactory_id = \"f\"\n\
             [[remote_cameras]]\nid = \"cam2\"\nfactory_id = \"f\"\nmirror = false\n",
        )
        .unwrap();
        assert!(good.remote_cameras[0].mirror && !good.remote_cameras[1].mirror);
        assert_eq!(good.mirror, MirrorConfig::default());
    }

    #[test]
    fn retention_sizes_and_the_time_zone_are_checked() {
        let ok = parse(&format!(
            "[retention]\nmax_bytes = \"2 GiB\"\nmin_free = \"10%\"\ncritical_free = 1000000\nmax_age_days = 30\n{GOOD}"
        ).replacen("[retention]", "node_id = \"n\"\ndata_dir = \"/d\"\n[retention]", 1).replace("node_id = \"edge-01\"\ndata_dir = \"/var/lib/vigil\"\n", ""));
        let c = ok.unwrap();
        assert_eq!(
            c.retention.max_bytes,
            Some(Space::Bytes(2 * 1024 * 1024 * 1024))
        );
        assert_eq!(c.retention.min_free, Space::Percent(10.0));
        assert_eq!(c.retention.critical_free.bytes_of(0), 1_000_000);
        assert_eq!(Space::Percent(5.0).bytes_of(1000), 50);
        assert_eq!(Space::parse("500 MB"), Ok(Space::Bytes(500_000_000)));
        assert_eq!(Space::parse("1.5k"), Ok(Space::Bytes(1500)));
        assert!(
            Space::parse("5 parsecs")
                .unwrap_err()
                .contains("unknown unit")
        );
        assert!(Space::parse("120%").is_err());
        let bad = "node_id = \"n\"\ndata_dir = \"/d\"\n[http]\ntimezone = \"Mars/Olympus\"\n[retention]\nmin_free = \"1%\"\ncritical_free = \"2%\"\nmax_age_days = 0\n";
        let p = problems(bad);
        assert_eq!(p.len(), 3, "{p:#?}");
        assert!(
            p[0].starts_with("http.timezone: \"Mars/Olympus\" is not a time zone"),
            "{}",
            p[0]
        );
        assert_eq!(
            p[1],
            "retention.max_age_days: must be at least 1 (leave it out for no age limit)"
        );
        assert_eq!(p[2], "retention.critical_free: 2% is above min_free (1%)");
        let p = problems("node_id = \"n\"\ndata_dir = \"/d\"\n[retention]\nreserve = \"10%\"\n");
        assert_eq!(p.len(), 1, "{p:#?}");
        assert!(
            p[0].starts_with("retention.reserve: must be a size"),
            "{}",
            p[0]
        );
        let p = problems("node_id = \"n\"\ndata_dir = \"/d\"\n[retention]\nreserve = \"1 GiB\"\n");
        assert!(
            p[0].starts_with("retention.reserve: 1073741824 bytes is more than"),
            "{p:#?}"
        );
        let c = parse("node_id = \"n\"\ndata_dir = \"/d\"\n[retention]\nreserve = 0\n").unwrap();
        assert_eq!(c.retention.reserve, Space::Bytes(0));
        match parse("node_id = \"n\"\ndata_dir = \"/d\"\n[retention]\nmax_bytes = \"lots\"\n") {
            Err(Error::ConfigParse { message, .. }) => {
                assert!(message.contains("is not a size"), "{message}")
            }
            other => panic!("{other:?}"),
        }
        assert!(parse("node_id = \"n\"\ndata_dir = \"/d\"\n[http]\ntimezone = \"UTC\"\n").is_ok());
    }

    #[test]
    fn relative_data_dir_is_taken_relative_to_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vigil.toml");
        std::fs::write(&path, GOOD.replace("/var/lib/vigil", "data")).unwrap();
        let c = Config::load(&path).unwrap();
        assert_eq!(c.data_dir, dir.path().join("data"));
        match Config::load(&dir.path().join("missing.toml")) {
            Err(Error::ConfigRead { .. }) => {}
            other => panic!("{other:?}"),
        }
    }
}
