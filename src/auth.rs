//! Who is asking: passwords (argon2id), login sessions (cookies signed with the box's key), API tokens for
//! machines, login rate limiting and the audit log. The HTTP guard asks [`Auth::authenticate`] on every
//! request; nothing here grows with history: users, tokens and live sessions are held in memory and reloaded
//! from the catalog when `vigil user …` (another process) changed them.
//!
//! Secrets are never stored or logged in the clear: the catalog keeps argon2id hashes of passwords and the
//! SHA-256 of session ids and tokens; a cookie is `<session id>.<HMAC-SHA256 of it under the key in
//! `<data_dir>/auth.key`>`, so a cookie that was not made by this box is refused before any lookup, and
//! replacing the key file logs everyone out.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::catalog::{Catalog, Role, StoredSession, User};
use crate::config::AuthConfig;
use crate::error::{Error, Result};

/// The session cookie's name.
pub const COOKIE: &str = "vigil_session";
/// API tokens start with this, so a leaked one is recognisable (and grep-able in a repository).
pub const TOKEN_PREFIX: &str = "vgl_";
/// A session's last-seen time is written to the catalog at most this often (it is kept in memory).
const TOUCH_EVERY_MS: i64 = 60_000;
/// Failure counters kept at most (per address and per user); beyond, the oldest are dropped.
const LIMITER_CAP: usize = 10_000;

type HmacSha256 = Hmac<Sha256>;

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
}

/// `n` random bytes from the operating system.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).expect("the OS random source works");
    b
}

/// SHA-256 in hex: what the catalog keeps of a session id or a token.
pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An argon2id PHC string of `password` (argon2's default parameters: 19 MiB, 2 passes).
pub fn hash_password(password: &str) -> Result<String> {
    let salt = SaltString::encode_b64(&random_bytes::<16>())
        .map_err(|e| Error::Internal(format!("argon2 salt: {e}")))?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Internal(format!("argon2: {e}")))
}

/// Whether `password` matches the PHC string `hash` (constant time).
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| {
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// A password for a new user or a reset: 18 random bytes, 24 characters.
pub fn generate_password() -> String {
    b64().encode(random_bytes::<18>())
}

/// A new API token (shown once; only its SHA-256 is stored).
pub fn generate_token() -> String {
    format!("{TOKEN_PREFIX}{}", b64().encode(random_bytes::<32>()))
}

/// User names: what a person types, safe in logs and JSON.
pub fn check_user_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "user name {name:?}: 1 to 64 of letters, digits, '-', '_', '.', '@'"
        )))
    }
}

/// Passwords chosen by people: at least 10 characters, at most 1024.
pub fn check_password(password: &str) -> Result<()> {
    let n = password.chars().count();
    if (10..=1024).contains(&n) {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "a password needs 10 to 1024 characters (this one has {n})"
        )))
    }
}

/// How a request proved who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// A login session: its hash (for logout) and its CSRF token.
    Cookie { hash: String, csrf: String },
    /// An API token (no ambient credential: no CSRF check).
    Token,
    /// `[auth] enabled = false`.
    Open,
}

/// The user behind a request.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user: String,
    pub role: Role,
    pub factories: Vec<String>,
    pub cameras: Vec<String>,
    pub via: Via,
    /// The session's ends (unix ms), for cookies.
    pub expires_ms: Option<i64>,
    pub idle_expires_ms: Option<i64>,
}

impl Principal {
    /// Whether this user may see camera `camera` of factory `factory`.
    pub fn may_see(&self, camera: &str, factory: &str) -> bool {
        match self.role {
            Role::Admin | Role::Dev => true,
            Role::Client => {
                self.cameras.iter().any(|c| c == camera)
                    || self.factories.iter().any(|f| f == factory)
            }
        }
    }

    /// Admins and devs: operator APIs.
    pub fn is_staff(&self) -> bool {
        matches!(self.role, Role::Admin | Role::Dev)
    }

    fn of(u: &User, via: Via) -> Principal {
        Principal {
            user: u.name.clone(),
            role: u.role,
            factories: u.factories.clone(),
            cameras: u.cameras.clone(),
            via,
            expires_ms: None,
            idle_expires_ms: None,
        }
    }
}

/// A live login session. Read on every request under a read lock; its last-seen times are atomics.
#[derive(Debug)]
struct LiveSession {
    user: String,
    csrf: String,
    created_ms: i64,
    /// The user's `changed_ms` when the session began: a new password, role or scope ends the session.
    user_changed_ms: i64,
    last_seen_ms: AtomicI64,
    persisted_seen_ms: AtomicI64,
}

#[derive(Default)]
struct Directory {
    version: i64,
    users: HashMap<String, User>,
    /// Token hash → user name.
    tokens: HashMap<String, String>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Failures {
    count: u32,
    first_ms: i64,
    locked_until_ms: i64,
    /// The refusals of this lockout were audited once already (a locked-out guesser cannot flood the log).
    refusal_audited: bool,
}

/// Why a login was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginError {
    /// Unknown user or wrong password (the two are not told apart).
    Wrong,
    /// Too many failures: try again after this many seconds.
    Locked { retry_after_s: u64 },
    /// More password checks at once than the box does (each costs 19 MiB and tens of ms): try again.
    Busy,
}

/// A successful login: the cookie value to set and the session's CSRF token.
#[derive(Clone)]
pub struct LoginOk {
    pub cookie_value: String,
    pub principal: Principal,
    pub csrf: String,
}

impl std::fmt::Debug for LoginOk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginOk")
            .field("user", &self.principal.user)
            .finish_non_exhaustive()
    }
}

/// Password checks run at once at most (argon2id: 19 MiB each); more answer `Busy` at once.
const CONCURRENT_CHECKS: usize = 2;

/// Authentication for one node.
pub struct Auth {
    catalog: Arc<Catalog>,
    pub config: AuthConfig,
    key: [u8; 32],
    directory: RwLock<Directory>,
    sessions: RwLock<HashMap<String, Arc<LiveSession>>>,
    failures: Mutex<HashMap<String, Failures>>,
    checks: tokio::sync::Semaphore,
    /// A real hash to verify against when the user does not exist (the same time either way).
    dummy_hash: String,
    now_ms: Box<dyn Fn() -> i64 + Send + Sync>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("enabled", &self.config.enabled)
            .finish_non_exhaustive()
    }
}

fn wall_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The signing key: `<data_dir>/auth.key` (32 random bytes, mode 0600), made on first run.
fn load_or_create_key(data_dir: &Path) -> Result<[u8; 32]> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let path = data_dir.join("auth.key");
    match std::fs::read(&path) {
        Ok(bytes) if bytes.len() == 32 => {
            let mut k = [0u8; 32];
            k.copy_from_slice(&bytes);
            return Ok(k);
        }
        Ok(bytes) => {
            return Err(Error::Invalid(format!(
                "{} holds {} bytes, not 32: delete it to make a new key (everyone will have to log in again)",
                path.display(),
                bytes.len()
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("cannot read the session key", &path, e)),
    }
    let key = random_bytes::<32>();
    let tmp = data_dir.join("auth.key.new");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| Error::io("cannot create the session key", &tmp, e))?;
    f.write_all(&key)
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io("cannot write the session key", &tmp, e))?;
    std::fs::rename(&tmp, &path)
        .map_err(|e| Error::io("cannot create the session key", &path, e))?;
    tracing::info!(key = %path.display(), "created the key that signs login cookies");
    Ok(key)
}

/// The failure-counter key of an address: IPv6 by its /64 (one host usually owns a whole /64).
fn address_key(a: IpAddr) -> String {
    match a {
        IpAddr::V4(v4) => format!("addr:{v4}"),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("addr:{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

impl Auth {
    /// Load users, tokens and live sessions; create the cookie key on first run. Blocking (call at start).
    pub fn open(catalog: Arc<Catalog>, config: AuthConfig, data_dir: &Path) -> Result<Auth> {
        let key = load_or_create_key(data_dir)?;
        Self::with_key(catalog, config, key)
    }

    /// With a key that lives only in memory (`vigil tree`, which starts nothing).
    pub fn ephemeral(catalog: Arc<Catalog>, config: AuthConfig) -> Result<Auth> {
        Self::with_key(catalog, config, random_bytes::<32>())
    }

    fn with_key(catalog: Arc<Catalog>, config: AuthConfig, key: [u8; 32]) -> Result<Auth> {
        let auth = Auth {
            catalog,
            config,
            key,
            directory: RwLock::new(Directory {
                version: -1,
                ..Default::default()
            }),
            sessions: RwLock::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            checks: tokio::sync::Semaphore::new(CONCURRENT_CHECKS),
            dummy_hash: hash_password("not a real password, only for timing")?,
            now_ms: Box::new(wall_ms),
        };
        auth.reload()?;
        {
            let mut live = auth.sessions_mut();
            for s in auth.catalog.web_sessions()? {
                live.insert(
                    s.hash,
                    Arc::new(LiveSession {
                        user: s.user,
                        csrf: s.csrf,
                        created_ms: s.created_ms,
                        user_changed_ms: s.user_changed_ms,
                        last_seen_ms: AtomicI64::new(s.last_seen_ms),
                        persisted_seen_ms: AtomicI64::new(s.last_seen_ms),
                    }),
                );
            }
        }
        // Sessions of removed or changed users, and expired ones, go now (also from the catalog).
        auth.sweep()?;
        if !auth.config.enabled {
            tracing::warn!(
                "[auth] enabled = false: every camera and API is open to anyone who reaches the HTTP port"
            );
        } else if auth.dir().users.is_empty() {
            tracing::warn!(
                "no users yet: nobody can log in; add one with `vigil user add NAME --role admin --config …`"
            );
        }
        Ok(auth)
    }

    /// Replace the clock (tests).
    pub fn with_clock(mut self, now_ms: impl Fn() -> i64 + Send + Sync + 'static) -> Auth {
        self.now_ms = Box::new(now_ms);
        self
    }

    fn now(&self) -> i64 {
        (self.now_ms)()
    }

    fn dir(&self) -> std::sync::RwLockReadGuard<'_, Directory> {
        self.directory.read().unwrap_or_else(|p| p.into_inner())
    }

    fn sessions(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<LiveSession>>> {
        self.sessions.read().unwrap_or_else(|p| p.into_inner())
    }

    fn sessions_mut(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<LiveSession>>> {
        self.sessions.write().unwrap_or_else(|p| p.into_inner())
    }

    fn expired(&self, created_ms: i64, last_seen_ms: i64, now: i64) -> bool {
        now - last_seen_ms > self.config.idle_minutes as i64 * 60_000
            || now - created_ms > self.config.absolute_hours as i64 * 3_600_000
    }

    /// Whether a session still stands: not expired, its user still there and unchanged since it began.
    fn valid(&self, d: &Directory, s: &LiveSession, now: i64) -> bool {
        !self.expired(s.created_ms, s.last_seen_ms.load(Ordering::Relaxed), now)
            && d.users
                .get(&s.user)
                .is_some_and(|u| u.changed_ms == s.user_changed_ms)
    }

    /// End every session that no longer stands (memory and catalog). Blocking; the web server calls it
    /// about once a minute, so sessions nobody presents again do not pile up.
    pub fn sweep(&self) -> Result<usize> {
        let now = self.now();
        let gone: Vec<String> = {
            let d = self.dir();
            let mut live = self.sessions_mut();
            let gone: Vec<String> = live
                .iter()
                .filter(|(_, s)| !self.valid(&d, s, now))
                .map(|(h, _)| h.clone())
                .collect();
            for h in &gone {
                live.remove(h);
            }
            gone
        };
        if !gone.is_empty() {
            self.catalog.delete_web_sessions(&gone)?;
        }
        Ok(gone.len())
    }

    /// Reload users and tokens if anyone changed them (a cheap read of one counter otherwise); sessions of
    /// removed users, or started before a user's password, role or scope changed, end. Blocking: the web
    /// server calls it from the blocking pool about once a second.
    pub fn reload(&self) -> Result<bool> {
        let version = self.catalog.auth_version()?;
        if version == self.dir().version {
            return Ok(false);
        }
        let users: HashMap<String, User> = self
            .catalog
            .users()?
            .into_iter()
            .map(|u| (u.name.clone(), u))
            .collect();
        let tokens = self
            .catalog
            .tokens()?
            .into_iter()
            .map(|t| (t.hash, t.user))
            .collect();
        {
            let mut live = self.sessions_mut();
            live.retain(|_, s| {
                users
                    .get(&s.user)
                    .is_some_and(|u| u.changed_ms == s.user_changed_ms)
            });
        }
        let mut d = self.directory.write().unwrap_or_else(|p| p.into_inner());
        d.users = users;
        d.tokens = tokens;
        d.version = version;
        Ok(true)
    }

    /// The user behind a request, from its `Authorization: Bearer` header or its session cookie.
    /// `None`: not logged in (or the session expired). Never blocks: read locks and atomics; catalog writes go
    /// to the blocking pool. Call it inside a Tokio runtime.
    pub fn authenticate(&self, bearer: Option<&str>, cookie: Option<&str>) -> Option<Principal> {
        if !self.config.enabled {
            return Some(Principal {
                user: "-".into(),
                role: Role::Admin,
                factories: vec![],
                cameras: vec![],
                via: Via::Open,
                expires_ms: None,
                idle_expires_ms: None,
            });
        }
        if let Some(token) = bearer {
            let hash = sha256_hex(token.as_bytes());
            let d = self.dir();
            let user = d.tokens.get(&hash).and_then(|u| d.users.get(u))?;
            return Some(Principal::of(user, Via::Token));
        }
        let hash = self.verify_cookie(cookie?)?;
        let now = self.now();
        let s = self.sessions().get(&hash).cloned()?;
        let d = self.dir();
        if !self.valid(&d, &s, now) {
            drop(d);
            self.sessions_mut().remove(&hash);
            let catalog = self.catalog.clone();
            tokio::task::spawn_blocking(move || catalog.delete_web_sessions(&[hash]));
            return None;
        }
        s.last_seen_ms.store(now, Ordering::Relaxed);
        let persisted = s.persisted_seen_ms.load(Ordering::Relaxed);
        if now - persisted >= TOUCH_EVERY_MS
            && s.persisted_seen_ms
                .compare_exchange(persisted, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let catalog = self.catalog.clone();
            let h = hash.clone();
            // Off the request: a slow disk never delays an answer (losing it costs one minute of idle time).
            tokio::task::spawn_blocking(move || catalog.touch_web_session(&h, now));
        }
        let u = d.users.get(&s.user)?;
        let mut p = Principal::of(
            u,
            Via::Cookie {
                hash,
                csrf: s.csrf.clone(),
            },
        );
        p.expires_ms = Some(s.created_ms + self.config.absolute_hours as i64 * 3_600_000);
        p.idle_expires_ms = Some(now + self.config.idle_minutes as i64 * 60_000);
        Some(p)
    }

    fn sign(&self, sid: &[u8]) -> String {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("any key length");
        mac.update(sid);
        b64().encode(mac.finalize().into_bytes())
    }

    /// The session hash of a well-signed cookie value.
    fn verify_cookie(&self, value: &str) -> Option<String> {
        let (sid, tag) = value.split_once('.')?;
        let sid = b64().decode(sid).ok()?;
        let tag = b64().decode(tag).ok()?;
        if sid.len() != 32 {
            return None;
        }
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("any key length");
        mac.update(&sid);
        mac.verify_slice(&tag).ok()?;
        Some(sha256_hex(&sid))
    }

    fn failure_keys(user: &str, addr: Option<IpAddr>) -> Vec<String> {
        let mut keys = vec![format!("user:{}", user.to_lowercase())];
        if let Some(a) = addr {
            keys.push(address_key(a));
        }
        keys
    }

    /// The worst state of the counters of `keys`: (failures in the window, locked until).
    fn failures_of(&self, keys: &[String], now: i64) -> (u32, i64) {
        let window = self.config.lockout_minutes as i64 * 60_000;
        let f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        keys.iter()
            .filter_map(|k| f.get(k))
            .filter(|x| now - x.first_ms <= window || x.locked_until_ms > now)
            .fold((0, 0), |(n, until), x| {
                (n.max(x.count), until.max(x.locked_until_ms))
            })
    }

    /// Whether this lockout's refusals still need their one audit line (and mark them audited).
    fn first_refusal(&self, keys: &[String], now: i64) -> bool {
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let mut first = false;
        for k in keys {
            if let Some(x) = f.get_mut(k)
                && x.locked_until_ms > now
                && !x.refusal_audited
            {
                x.refusal_audited = true;
                first = true;
            }
        }
        first
    }

    fn record_failure(&self, keys: &[String], now: i64) {
        let window = self.config.lockout_minutes as i64 * 60_000;
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if f.len() >= LIMITER_CAP {
            f.retain(|_, x| now - x.first_ms <= window || x.locked_until_ms > now);
            if f.len() >= LIMITER_CAP {
                // Still full (an attack from many addresses): forget the oldest half of the counters that
                // lock nothing; a lockout in force is never forgotten.
                let mut firsts: Vec<i64> = f
                    .values()
                    .filter(|x| x.locked_until_ms <= now)
                    .map(|x| x.first_ms)
                    .collect();
                firsts.sort_unstable();
                if let Some(&cut) = firsts.get(firsts.len() / 2) {
                    f.retain(|_, x| x.locked_until_ms > now || x.first_ms > cut);
                }
            }
        }
        for k in keys {
            let x = f.entry(k.clone()).or_default();
            if now - x.first_ms > window && x.locked_until_ms <= now {
                *x = Failures {
                    first_ms: now,
                    ..Default::default()
                };
            }
            x.count += 1;
            let limit = if k.starts_with("addr:") {
                self.config.lock_address_after_failures
            } else {
                self.config.lock_after_failures
            };
            if x.count >= limit && x.locked_until_ms <= now {
                x.locked_until_ms = now + window;
                x.refusal_audited = false;
            }
        }
    }

    /// Check a user name and password. Slowed after `slow_after_failures` failures (per address and per
    /// user), refused for `lockout_minutes` after `lock_after_failures` (a user) or
    /// `lock_address_after_failures` (an address). At most two checks run at once. Every outcome goes to the
    /// audit log (a lockout's refusals once).
    pub async fn login(
        self: &Arc<Self>,
        name: &str,
        password: &str,
        addr: Option<IpAddr>,
    ) -> std::result::Result<LoginOk, LoginError> {
        let now = self.now();
        let keys = Self::failure_keys(name, addr);
        let addr_s = addr.map(|a| a.to_string());
        // Names that are no user are not written down: people type their password there by mistake.
        let known = self.dir().users.contains_key(name);
        let audit_name = if known { name } else { "-" };
        let (count, locked_until) = self.failures_of(&keys, now);
        if locked_until > now {
            let retry_after_s = ((locked_until - now) as u64).div_ceil(1000);
            if self.first_refusal(&keys, now) {
                self.audit(
                    "login_refused",
                    audit_name,
                    addr_s.as_deref(),
                    &format!(
                        "locked out for {retry_after_s} s after {count} failures (further refusals not logged)"
                    ),
                );
            }
            return Err(LoginError::Locked { retry_after_s });
        }
        if count >= self.config.slow_after_failures {
            // One more second per failure past the threshold, at most 5: slows a guesser to a crawl while a
            // person who mistyped barely notices.
            let extra = (count - self.config.slow_after_failures + 1).min(5);
            tokio::time::sleep(Duration::from_secs(extra as u64)).await;
        }
        let Ok(_permit) = self.checks.try_acquire() else {
            return Err(LoginError::Busy);
        };
        let user = self.dir().users.get(name).cloned();
        let hash = user
            .as_ref()
            .map_or(self.dummy_hash.clone(), |u| u.hash.clone());
        let pw = password.to_string();
        let ok = tokio::task::spawn_blocking(move || verify_password(&pw, &hash))
            .await
            .unwrap_or(false)
            && user.is_some();
        let Some(user) = user.filter(|_| ok) else {
            self.record_failure(&keys, now);
            let why = if known {
                "wrong password".to_string()
            } else {
                format!(
                    "unknown user (a name of {} characters)",
                    name.chars().count()
                )
            };
            self.audit("login_failed", audit_name, addr_s.as_deref(), &why);
            return Err(LoginError::Wrong);
        };
        // The user's count starts over; the address's does not (one good account must not reset a
        // guesser's count from that address).
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&keys[0]);
        let sid = random_bytes::<32>();
        let hash = sha256_hex(&sid);
        let csrf = b64().encode(random_bytes::<24>());
        let now = self.now();
        let stored = StoredSession {
            hash: hash.clone(),
            user: user.name.clone(),
            csrf: csrf.clone(),
            created_ms: now,
            last_seen_ms: now,
            // The version of the user the password was checked against: if it changed meanwhile, the next
            // reload (and any restart) ends this session.
            user_changed_ms: user.changed_ms,
        };
        let catalog = self.catalog.clone();
        let saved = catalog.run(move |c| c.save_web_session(&stored)).await;
        if let Err(e) = saved {
            // Still usable until vigil restarts (sessions live in memory; the catalog lets them outlive a restart).
            tracing::warn!(user = %user.name, "login session not saved in the catalog: {e}");
        }
        self.sessions_mut().insert(
            hash.clone(),
            Arc::new(LiveSession {
                user: user.name.clone(),
                csrf: csrf.clone(),
                created_ms: now,
                user_changed_ms: user.changed_ms,
                last_seen_ms: AtomicI64::new(now),
                persisted_seen_ms: AtomicI64::new(now),
            }),
        );
        self.audit("login", name, addr_s.as_deref(), "session started");
        let mut principal = Principal::of(
            &user,
            Via::Cookie {
                hash,
                csrf: csrf.clone(),
            },
        );
        principal.expires_ms = Some(now + self.config.absolute_hours as i64 * 3_600_000);
        principal.idle_expires_ms = Some(now + self.config.idle_minutes as i64 * 60_000);
        Ok(LoginOk {
            cookie_value: format!("{}.{}", b64().encode(sid), self.sign(&sid)),
            principal,
            csrf,
        })
    }

    /// End a login session.
    pub async fn logout(self: &Arc<Self>, p: &Principal, addr: Option<IpAddr>) {
        if let Via::Cookie { hash, .. } = &p.via {
            self.sessions_mut().remove(hash);
            let h = hash.clone();
            if let Err(e) = self.catalog.run(move |c| c.delete_web_sessions(&[h])).await {
                tracing::warn!(user = %p.user, "logout not saved in the catalog: {e}");
            }
        }
        self.audit(
            "logout",
            &p.user,
            addr.map(|a| a.to_string()).as_deref(),
            "",
        );
    }

    /// Log and record an audit event (off the caller's thread).
    pub fn audit(&self, event: &'static str, user: &str, addr: Option<&str>, detail: &str) {
        tracing::info!(target: "audit", event, user, addr = addr.unwrap_or("-"), "{detail}");
        let (catalog, user, addr, detail) = (
            self.catalog.clone(),
            user.to_string(),
            addr.map(str::to_string),
            detail.to_string(),
        );
        tokio::task::spawn_blocking(move || {
            if let Err(e) = catalog.audit(event, Some(&user), addr.as_deref(), Some(&detail)) {
                tracing::warn!("audit line not saved: {e}");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicI64, Ordering};

    fn setup(cfg: AuthConfig) -> (Arc<Auth>, Arc<AtomicI64>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Arc::new(Catalog::in_memory().unwrap());
        let now = wall_ms();
        catalog
            .add_user(&User {
                name: "alice".into(),
                role: Role::Client,
                hash: hash_password("correct horse battery").unwrap(),
                factories: vec![],
                cameras: vec!["cam1".into()],
                created_ms: now - 1000,
                changed_ms: now - 1000,
            })
            .unwrap();
        let clock = Arc::new(AtomicI64::new(now));
        let c = clock.clone();
        let auth = Auth::open(catalog, cfg, dir.path())
            .unwrap()
            .with_clock(move || c.load(Ordering::SeqCst));
        (Arc::new(auth), clock, dir)
    }

    #[tokio::test]
    async fn a_session_cookie_works_until_idle_or_absolute_expiry_and_a_forged_one_never() {
        let (auth, clock, dir) = setup(AuthConfig::default());
        let ok = auth
            .login("alice", "correct horse battery", None)
            .await
            .unwrap();
        let p = auth.authenticate(None, Some(&ok.cookie_value)).unwrap();
        assert_eq!((p.user.as_str(), p.role), ("alice", Role::Client));
        assert!(p.may_see("cam1", "x") && !p.may_see("cam2", "x"));
        // A forged signature, a truncated value, another id with the real tag.
        let (sid, tag) = ok.cookie_value.split_once('.').unwrap();
        let other = b64().encode(random_bytes::<32>());
        for bad in [
            format!("{sid}.{}", &tag[1..]),
            sid.to_string(),
            format!("{other}.{tag}"),
        ] {
            assert!(auth.authenticate(None, Some(&bad)).is_none(), "{bad}");
        }
        // 59 idle minutes: still in; activity keeps it alive for hours…
        for _ in 0..12 {
            clock.fetch_add(59 * 60_000, Ordering::SeqCst);
            assert!(auth.authenticate(None, Some(&ok.cookie_value)).is_some());
        }
        // …but not past the absolute limit (12 h).
        clock.fetch_add(59 * 60_000, Ordering::SeqCst);
        assert!(auth.authenticate(None, Some(&ok.cookie_value)).is_none());
        // Idle expiry.
        let ok = auth
            .login("alice", "correct horse battery", None)
            .await
            .unwrap();
        clock.fetch_add(61 * 60_000, Ordering::SeqCst);
        assert!(auth.authenticate(None, Some(&ok.cookie_value)).is_none());
        // The key file was made 0600.
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.path().join("auth.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[tokio::test]
    async fn failed_logins_are_slowed_then_refused_per_user_and_per_address() {
        let cfg = AuthConfig {
            slow_after_failures: 2,
            lock_after_failures: 4,
            lock_address_after_failures: 6,
            ..Default::default()
        };
        let (auth, clock, _dir) = setup(cfg);
        let a: IpAddr = "10.0.0.7".parse().unwrap();
        for _ in 0..4 {
            assert_eq!(
                auth.login("alice", "wrong", Some(a)).await.unwrap_err(),
                LoginError::Wrong
            );
        }
        // Locked: even the right password, from another address too (per user)…
        let b: IpAddr = "10.0.0.8".parse().unwrap();
        assert!(matches!(
            auth.login("alice", "correct horse battery", Some(b)).await,
            Err(LoginError::Locked { retry_after_s: 900 })
        ));
        // The address is not locked for other users yet (an office shares one)…
        assert_eq!(
            auth.login("bob", "whatever", Some(a)).await.unwrap_err(),
            LoginError::Wrong
        );
        assert_eq!(
            auth.login("carl", "whatever", Some(a)).await.unwrap_err(),
            LoginError::Wrong
        );
        // …but after 6 failures from it, it is.
        assert!(matches!(
            auth.login("dora", "whatever", Some(a)).await,
            Err(LoginError::Locked { .. })
        ));
        // After the lockout: in again.
        clock.fetch_add(15 * 60_000 + 1, Ordering::SeqCst);
        assert!(
            auth.login("alice", "correct horse battery", Some(b))
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn a_login_checked_against_the_old_password_ends_with_the_next_reload_and_a_restart() {
        let (auth, _clock, dir) = setup(AuthConfig::default());
        // The password changes in the catalog; this server has not reloaded yet, so a login with the old
        // password still passes…
        auth.catalog
            .set_password("alice", &hash_password("a brand new password").unwrap())
            .unwrap();
        let ok = auth
            .login("alice", "correct horse battery", None)
            .await
            .unwrap();
        assert!(auth.authenticate(None, Some(&ok.cookie_value)).is_some());
        // …until the reload: the session began with the old user.
        auth.reload().unwrap();
        assert!(auth.authenticate(None, Some(&ok.cookie_value)).is_none());
        // Nor does it come back after a restart (it was saved after the password change deleted sessions).
        let again = Auth::open(auth.catalog.clone(), AuthConfig::default(), dir.path()).unwrap();
        assert!(again.authenticate(None, Some(&ok.cookie_value)).is_none());
        assert!(auth.catalog.web_sessions().unwrap().is_empty());
    }

    #[tokio::test]
    async fn at_most_two_password_checks_run_at_once() {
        let (auth, _clock, _dir) = setup(AuthConfig::default());
        let tries: Vec<_> = (0..12)
            .map(|i| {
                let a = auth.clone();
                tokio::spawn(async move { a.login("alice", &format!("guess {i}"), None).await })
            })
            .collect();
        let mut busy = 0;
        let mut wrong = 0;
        for t in tries {
            match t.await.unwrap() {
                Err(LoginError::Busy) => busy += 1,
                Err(LoginError::Wrong) => wrong += 1,
                other => panic!("{other:?}"),
            }
        }
        assert!(
            busy >= 1 && wrong >= 1 && busy + wrong == 12,
            "{busy} busy, {wrong} wrong"
        );
        // The limiter counted only the checks that ran.
        assert_eq!(
            auth.failures_of(&Auth::failure_keys("alice", None), auth.now())
                .0,
            wrong
        );
    }

    #[tokio::test]
    async fn a_session_outlives_a_restart_with_the_same_key_and_not_a_new_key() {
        let (auth, _clock, dir) = setup(AuthConfig::default());
        let ok = auth
            .login("alice", "correct horse battery", None)
            .await
            .unwrap();
        let again = Auth::open(auth.catalog.clone(), AuthConfig::default(), dir.path()).unwrap();
        assert_eq!(
            again
                .authenticate(None, Some(&ok.cookie_value))
                .unwrap()
                .user,
            "alice"
        );
        std::fs::remove_file(dir.path().join("auth.key")).unwrap();
        let rekeyed = Auth::open(auth.catalog.clone(), AuthConfig::default(), dir.path()).unwrap();
        assert!(rekeyed.authenticate(None, Some(&ok.cookie_value)).is_none());
    }

    #[test]
    fn ipv6_addresses_are_counted_by_their_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        assert_eq!(address_key("10.0.0.1".parse().unwrap()), "addr:10.0.0.1");
    }

    #[tokio::test]
    async fn tokens_and_user_changes_reach_a_running_server() {
        let (auth, _clock, _dir) = setup(AuthConfig::default());
        let ok = auth
            .login("alice", "correct horse battery", None)
            .await
            .unwrap();
        let token = generate_token();
        auth.catalog
            .add_token(&sha256_hex(token.as_bytes()), "alice", "sync")
            .unwrap();
        assert!(
            auth.authenticate(Some(&token), None).is_none(),
            "not reloaded yet"
        );
        assert!(auth.reload().unwrap());
        assert_eq!(
            auth.authenticate(Some(&token), None).unwrap().via,
            Via::Token
        );
        // A new password ends the session (and keeps the token).
        auth.catalog
            .set_password("alice", &hash_password("another good one").unwrap())
            .unwrap();
        auth.reload().unwrap();
        assert!(auth.authenticate(None, Some(&ok.cookie_value)).is_none());
        assert!(auth.authenticate(Some(&token), None).is_some());
        auth.catalog.remove_user("alice").unwrap();
        auth.reload().unwrap();
        assert!(auth.authenticate(Some(&token), None).is_none());
    }
}
