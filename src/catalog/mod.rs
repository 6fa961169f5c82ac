//! The embedded catalog: a SQLite journal (WAL) of every recorded segment, every ffmpeg session, and how far
//! each segment got down the distribution pipeline. It is the appliance's only state; playlists, pipeline
//! stages and retention are built from it.
//!
//! Inserts are idempotent (unique on camera, session, seq), so a watcher that sees a segment twice, or a
//! rescan after a crash, never duplicates a row.
//!
//! Every hot path is O(1) or O(log n) in history, never O(n): each insert also maintains the camera's running
//! counters (table `cameras`: last live position, discontinuity count, longest segment, bytes), so the live
//! playlist's MEDIA-SEQUENCE and DISCONTINUITY-SEQUENCE are read off the rows themselves (`lseq`, `disc`)
//! instead of being counted; pipeline backlogs and retention candidates come from partial indexes whose size is
//! the backlog, not the history.
//!
//! Calls are synchronous and may block (disk, a writer holding the lock): async callers go through
//! [`Catalog::run`], which moves them to the blocking pool. Reads use their own connections (WAL readers never
//! wait for the writer).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use crate::error::{Error, Result};

mod control;
mod users;
pub use control::{CommandOutcome, ControlCamera, ControlChange};
pub use users::{ApiToken, AuditEntry, Role, StoredSession, User};

/// Schema migrations, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    // 1: segments, with the pipeline-stage columns later stages fill.
    "CREATE TABLE segments (
        id               INTEGER PRIMARY KEY,
        camera           TEXT    NOT NULL,
        factory          TEXT    NOT NULL,
        session          TEXT    NOT NULL,
        seq              INTEGER NOT NULL,
        path             TEXT    NOT NULL,
        start_ms         INTEGER NOT NULL,
        duration_ms      INTEGER NOT NULL,
        bytes            INTEGER NOT NULL,
        first_in_session INTEGER NOT NULL,
        recorded_at_ms   INTEGER NOT NULL,
        cid              TEXT,
        pinned_at_ms     INTEGER,
        indexed_at_ms    INTEGER,
        published_at_ms  INTEGER,
        UNIQUE (camera, session, seq)
    );
    CREATE INDEX segments_camera_start ON segments (camera, start_ms);",
    // 2: finished sessions whose every segment is catalogued: rescans skip them.
    "CREATE TABLE closed_sessions (
        camera       TEXT    NOT NULL,
        session      TEXT    NOT NULL,
        closed_at_ms INTEGER NOT NULL,
        PRIMARY KEY (camera, session)
    );",
    // 3: a segment the pipeline cannot process (file gone, rejected by IPFS) is set aside with the reason,
    // instead of blocking every segment behind it.
    "ALTER TABLE segments ADD COLUMN pipeline_error TEXT;
    CREATE INDEX segments_pipeline ON segments (published_at_ms, id);",
    // 4: flat cost over months. Live position and discontinuity number stored per row; per-camera running
    // counters; sessions with their open/closed state; partial indexes for backlogs and retention.
    // Ids become AUTOINCREMENT: a segment's URI (`segments/<id>.ts`) must never name another segment, even
    // after retention deleted the newest rows.
    "CREATE TABLE segments4 (
        id               INTEGER PRIMARY KEY AUTOINCREMENT,
        camera           TEXT    NOT NULL,
        factory          TEXT    NOT NULL,
        session          TEXT    NOT NULL,
        seq              INTEGER NOT NULL,
        path             TEXT    NOT NULL,
        start_ms         INTEGER NOT NULL,
        duration_ms      INTEGER NOT NULL,
        bytes            INTEGER NOT NULL,
        first_in_session INTEGER NOT NULL,
        recorded_at_ms   INTEGER NOT NULL,
        cid              TEXT,
        pinned_at_ms     INTEGER,
        indexed_at_ms    INTEGER,
        published_at_ms  INTEGER,
        pipeline_error   TEXT,
        lseq             INTEGER,
        disc             INTEGER NOT NULL DEFAULT 0,
        join_            INTEGER NOT NULL DEFAULT 0,
        deleting         INTEGER NOT NULL DEFAULT 0,
        UNIQUE (camera, session, seq)
    );
    INSERT INTO segments4 (id, camera, factory, session, seq, path, start_ms, duration_ms, bytes,
        first_in_session, recorded_at_ms, cid, pinned_at_ms, indexed_at_ms, published_at_ms, pipeline_error)
        SELECT id, camera, factory, session, seq, path, start_ms, duration_ms, bytes,
        first_in_session, recorded_at_ms, cid, pinned_at_ms, indexed_at_ms, published_at_ms, pipeline_error
        FROM segments;
    DROP TABLE segments;
    ALTER TABLE segments4 RENAME TO segments;
    CREATE INDEX segments_camera_start ON segments (camera, start_ms);
    WITH ordered AS (
        SELECT id, camera, session,
               ROW_NUMBER() OVER w - 1 AS n,
               COALESCE(LAG(session) OVER w <> session, 0) AS j
        FROM segments WINDOW w AS (PARTITION BY camera ORDER BY start_ms, session, seq)
    ), numbered AS (
        SELECT id, n, j, SUM(j) OVER (PARTITION BY camera ORDER BY n ROWS UNBOUNDED PRECEDING) AS d
        FROM ordered
    )
    UPDATE segments SET lseq = numbered.n, join_ = numbered.j, disc = numbered.d
    FROM numbered WHERE numbered.id = segments.id;
    CREATE UNIQUE INDEX segments_live ON segments (camera, lseq) WHERE lseq IS NOT NULL;
    CREATE INDEX segments_start ON segments (start_ms);
    CREATE INDEX segments_start_distributed ON segments (start_ms) WHERE indexed_at_ms IS NOT NULL;
    CREATE INDEX pending_pin ON segments (id)
        WHERE pinned_at_ms IS NULL AND pipeline_error IS NULL AND deleting = 0;
    CREATE INDEX pending_index ON segments (id)
        WHERE pinned_at_ms IS NOT NULL AND indexed_at_ms IS NULL AND pipeline_error IS NULL AND deleting = 0;
    CREATE INDEX pending_publish ON segments (id)
        WHERE indexed_at_ms IS NOT NULL AND published_at_ms IS NULL AND pipeline_error IS NULL AND deleting = 0;
    CREATE INDEX set_aside ON segments (id) WHERE pipeline_error IS NOT NULL;
    CREATE INDEX tombstones ON segments (id) WHERE deleting = 1;
    CREATE TABLE sessions (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        camera       TEXT    NOT NULL,
        session      TEXT    NOT NULL,
        opened_at_ms INTEGER NOT NULL,
        closed_at_ms INTEGER,
        UNIQUE (camera, session)
    );
    CREATE INDEX sessions_open ON sessions (camera, id) WHERE closed_at_ms IS NULL;
    INSERT INTO sessions (camera, session, opened_at_ms, closed_at_ms)
        SELECT s.camera, s.session, MIN(s.start_ms), c.closed_at_ms
        FROM segments s LEFT JOIN closed_sessions c ON c.camera = s.camera AND c.session = s.session
        GROUP BY s.camera, s.session ORDER BY MIN(s.start_ms);
    DROP TABLE closed_sessions;
    CREATE TABLE cameras (
        camera           TEXT PRIMARY KEY,
        last_lseq        INTEGER,
        last_session     TEXT,
        last_session_id  INTEGER,
        last_seq         INTEGER,
        disc             INTEGER NOT NULL DEFAULT 0,
        max_duration_ms  INTEGER NOT NULL DEFAULT 0,
        bytes            INTEGER NOT NULL DEFAULT 0,
        segments         INTEGER NOT NULL DEFAULT 0,
        deleted_until_ms INTEGER
    );
    INSERT INTO cameras (camera, max_duration_ms, bytes, segments)
        SELECT camera, MAX(duration_ms), SUM(bytes), COUNT(*) FROM segments GROUP BY camera;
    UPDATE cameras SET (last_lseq, last_session, last_seq, disc) = (
        SELECT s.lseq, s.session, s.seq, s.disc FROM segments s
        WHERE s.camera = cameras.camera AND s.lseq IS NOT NULL ORDER BY s.lseq DESC LIMIT 1);
    UPDATE cameras SET last_session_id = (
        SELECT id FROM sessions WHERE sessions.camera = cameras.camera AND sessions.session = cameras.last_session);
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);",
    // 5: who may watch what. Users (argon2id hashes, role, scope), login sessions and API tokens (only
    // their SHA-256 is stored), and the audit log of logins and user changes. `meta.auth_version` is bumped
    // on every change so a running server reloads (`vigil user …` runs as another process).
    "CREATE TABLE users (
        name       TEXT    PRIMARY KEY,
        role       TEXT    NOT NULL CHECK (role IN ('admin', 'dev', 'client')),
        hash       TEXT    NOT NULL,
        factories  TEXT    NOT NULL DEFAULT '',
        cameras    TEXT    NOT NULL DEFAULT '',
        created_ms INTEGER NOT NULL,
        changed_ms INTEGER NOT NULL
    );
    CREATE TABLE web_sessions (
        hash         TEXT    PRIMARY KEY,
        user         TEXT    NOT NULL,
        csrf         TEXT    NOT NULL,
        created_ms   INTEGER NOT NULL,
        last_seen_ms INTEGER NOT NULL,
        user_changed_ms INTEGER NOT NULL
    );
    CREATE TABLE api_tokens (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        hash         TEXT    NOT NULL UNIQUE,
        user         TEXT    NOT NULL,
        label        TEXT    NOT NULL,
        created_ms   INTEGER NOT NULL
    );
    CREATE TABLE audit (
        id     INTEGER PRIMARY KEY AUTOINCREMENT,
        at_ms  INTEGER NOT NULL,
        event  TEXT    NOT NULL,
        user   TEXT,
        addr   TEXT,
        detail TEXT
    );
    INSERT INTO meta (key, value) VALUES ('auth_version', '0');",
    // 6: the storage role. `origin` is the node that recorded a mirrored segment (NULL: recorded here);
    // `replicas` counts the other nodes known to hold a segment (mirrors' acknowledgements) and
    // `cluster_peers` the IPFS Cluster peers that reported it pinned, which retention weighs; segments are found by CID (the IPFS proxy route, acknowledgements).
    "ALTER TABLE segments ADD COLUMN origin TEXT;
    ALTER TABLE segments ADD COLUMN replicas INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE segments ADD COLUMN cluster_peers INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX segments_cid ON segments (cid) WHERE cid IS NOT NULL;
    CREATE TABLE replicas (
        segment_id INTEGER NOT NULL,
        node       TEXT    NOT NULL,
        at_ms      INTEGER NOT NULL,
        PRIMARY KEY (segment_id, node)
    ) WITHOUT ROWID;",
    // 7: the control plane. `control_commands` remembers every signed command for this node by id (within the
    // replay window, then pruned) with its outcome, so a command delivered twice is applied once and answered
    // the same; `control_cameras` is the camera state applied by commands (spec = the camera's settings as
    // JSON, with its credentials: the catalog lives in the private data folder), merged over the config file
    // at start; `control_meta` holds applied node settings (roles).
    "CREATE TABLE control_commands (
        id          TEXT    PRIMARY KEY,
        kind        TEXT    NOT NULL,
        received_ms INTEGER NOT NULL,
        ok          INTEGER NOT NULL,
        reason      TEXT,
        detail      TEXT,
        result      TEXT
    ) WITHOUT ROWID;
    CREATE INDEX control_commands_received ON control_commands (received_ms);
    CREATE TABLE control_cameras (
        id         TEXT    PRIMARY KEY,
        state      TEXT    NOT NULL CHECK (state IN ('active', 'removed')),
        spec       TEXT    NOT NULL,
        command_id TEXT    NOT NULL,
        at_ms      INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE control_meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) WITHOUT ROWID;",
    // 8: the transcoder role. One row per rendition of a source segment (the embedded index's `variants`);
    // `path` is relative to the data folder, where the transcoder keeps what it made.
    "CREATE TABLE variants (
        id          TEXT    PRIMARY KEY,
        variant_of  TEXT    NOT NULL,
        source_cid  TEXT    NOT NULL,
        rendition   TEXT    NOT NULL,
        width       INTEGER NOT NULL,
        height      INTEGER NOT NULL,
        video_kbps  INTEGER NOT NULL,
        cid         TEXT    NOT NULL,
        factory_id  TEXT    NOT NULL,
        device_id   TEXT    NOT NULL,
        session     TEXT    NOT NULL,
        seq         INTEGER NOT NULL,
        start_ms    INTEGER NOT NULL,
        end_ms      INTEGER NOT NULL,
        duration_ms INTEGER NOT NULL,
        bytes       INTEGER NOT NULL,
        job_id      TEXT    NOT NULL,
        node_id     TEXT    NOT NULL,
        path        TEXT
    ) WITHOUT ROWID;
    CREATE INDEX variants_device_start ON variants (device_id, start_ms);
    CREATE INDEX variants_cid ON variants (cid);
    CREATE INDEX variants_job_start ON variants (job_id, start_ms);
    CREATE INDEX variants_start ON variants (start_ms);",
];

/// Wakes each distribution stage when work for it may have arrived: whoever catalogues a segment wakes the
/// first stage, each stage wakes the next. (Capture and the stages only share the catalog.)
#[derive(Debug, Default)]
pub struct Wake {
    pin: tokio::sync::Notify,
    index: tokio::sync::Notify,
    publish: tokio::sync::Notify,
}

impl Wake {
    pub fn stage(&self, s: Stage) -> &tokio::sync::Notify {
        match s {
            Stage::Pin => &self.pin,
            Stage::Index => &self.index,
            Stage::Publish => &self.publish,
        }
    }
}

/// The distribution pipeline's stages, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// Added to IPFS (cid) and pinned.
    Pin,
    /// Index document written.
    Index,
    /// Announcement published.
    Publish,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::Pin => "pin",
            Stage::Index => "index",
            Stage::Publish => "publish",
        }
    }

    /// SQL condition for "ready for this stage and not done"; the same text as the stage's partial index, so
    /// that SQLite uses it (the index holds only the backlog).
    fn pending(self) -> &'static str {
        match self {
            Stage::Pin => "pinned_at_ms IS NULL AND pipeline_error IS NULL AND deleting = 0",
            Stage::Index => {
                "pinned_at_ms IS NOT NULL AND indexed_at_ms IS NULL AND pipeline_error IS NULL AND deleting = 0"
            }
            Stage::Publish => {
                "indexed_at_ms IS NOT NULL AND published_at_ms IS NULL AND pipeline_error IS NULL AND deleting = 0"
            }
        }
    }
}

/// How many segments wait at each stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Backlog {
    pub pin: u64,
    pub index: u64,
    pub publish: u64,
    pub failed: u64,
}

/// A finished segment to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSegment {
    pub camera: String,
    pub factory: String,
    pub session: String,
    pub seq: i64,
    /// Relative to the data dir: `<camera>/<session>/seg_00001.ts`.
    pub path: String,
    pub start_ms: i64,
    pub duration_ms: i64,
    pub bytes: i64,
    pub first_in_session: bool,
}

/// Which segments retention may delete (see [`Catalog::oldest`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Safe {
    /// Any (below the critical floor; or no distribution configured).
    Any,
    /// Pinned and indexed.
    Distributed,
    /// Pinned, indexed and held elsewhere: acknowledged by at least `mirrors` mirrors, or pinned on at least
    /// `cluster` IPFS Cluster peers (when a cluster is configured), or a mirrored copy (its origin has it).
    Replicated { mirrors: u32, cluster: Option<u32> },
}

/// A catalogued segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub id: i64,
    pub camera: String,
    pub factory: String,
    pub session: String,
    pub seq: i64,
    pub path: String,
    pub start_ms: i64,
    pub duration_ms: i64,
    pub bytes: i64,
    pub first_in_session: bool,
    pub cid: Option<String>,
    /// Position in the camera's live sequence (its media sequence number in live and today's playlists);
    /// `None` for a segment catalogued after newer footage (it appears in VOD and past days only).
    pub lseq: Option<i64>,
    /// Discontinuity sequence number: session joins in the live sequence up to and including this segment.
    pub disc: i64,
    /// This segment starts a new session in the live sequence (it carries EXT-X-DISCONTINUITY).
    pub join: bool,
}

/// A segment with how far it got down the pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracked {
    pub segment: Segment,
    pub indexed: bool,
    pub published: bool,
    pub set_aside: Option<String>,
}

/// What [`Catalog::insert`] did with a new segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inserted {
    pub id: i64,
    /// Appended to the live sequence (false: catalogued late, behind newer footage).
    pub live: bool,
}

/// A camera's running counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CameraStats {
    /// The longest segment ever catalogued (the playlists' TARGETDURATION never goes below it).
    pub max_duration_ms: i64,
    /// Bytes and segments on disk.
    pub bytes: i64,
    pub segments: i64,
    /// Start of the newest segment retention deleted (a playlist that began at or before it lost its head).
    pub deleted_until_ms: Option<i64>,
    /// The last segment of the live sequence, and the discontinuity number there.
    pub last_lseq: Option<i64>,
    pub disc: i64,
}

/// The catalog. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Catalog {
    /// The file, or None in memory (then reads share the writer's connection).
    path: Option<PathBuf>,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    /// See [`Catalog::segments_version`].
    version: std::sync::atomic::AtomicU64,
    /// See [`Catalog::deletions_version`].
    deletions: std::sync::atomic::AtomicU64,
}

const COLUMNS: &str = "id, camera, factory, session, seq, path, start_ms, duration_ms, bytes, first_in_session, cid, \
     lseq, disc, join_";

fn row_to_segment(r: &rusqlite::Row<'_>) -> rusqlite::Result<Segment> {
    Ok(Segment {
        id: r.get(0)?,
        camera: r.get(1)?,
        factory: r.get(2)?,
        session: r.get(3)?,
        seq: r.get(4)?,
        path: r.get(5)?,
        start_ms: r.get(6)?,
        duration_ms: r.get(7)?,
        bytes: r.get(8)?,
        first_in_session: r.get(9)?,
        cid: r.get(10)?,
        lseq: r.get(11)?,
        disc: r.get(12)?,
        join: r.get(13)?,
    })
}

fn collect<T>(rows: impl Iterator<Item = rusqlite::Result<T>>) -> Result<Vec<T>> {
    rows.collect::<rusqlite::Result<_>>()
        .map_err(Error::from_sql)
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Readers kept open for reuse.
const READERS: usize = 4;

impl Catalog {
    /// Open (creating if needed) the catalog at `path`, in WAL mode, and apply pending migrations.
    pub fn open(path: &Path) -> Result<Catalog> {
        let conn = Connection::open(path).map_err(|e| Error::catalog(path, e))?;
        let writer = Self::init(conn).map_err(|e| Error::catalog(path, e))?;
        Ok(Catalog {
            path: Some(path.to_path_buf()),
            writer: Mutex::new(writer),
            readers: Mutex::new(Vec::new()),
            version: Default::default(),
            deletions: Default::default(),
        })
    }

    /// An in-memory catalog (tests, `vigil tree`).
    pub fn in_memory() -> Result<Catalog> {
        let conn =
            Connection::open_in_memory().map_err(|e| Error::catalog(Path::new(":memory:"), e))?;
        let writer = Self::init(conn).map_err(|e| Error::catalog(Path::new(":memory:"), e))?;
        Ok(Catalog {
            path: None,
            writer: Mutex::new(writer),
            readers: Mutex::new(Vec::new()),
            version: Default::default(),
            deletions: Default::default(),
        })
    }

    fn init(mut conn: Connection) -> rusqlite::Result<Connection> {
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // Every write transaction takes the write lock when it begins. A deferred one that reads first and writes
        // second fails with SQLITE_BUSY at once, without waiting, when another process (`vigil user|token` next
        // to a running vigil) wrote in between: SQLite cannot wait its way out of that.
        conn.set_transaction_behavior(rusqlite::TransactionBehavior::Immediate);
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: a segment the watcher reported is durable even across a power cut.
        conn.pragma_update(None, "synchronous", "FULL")?;
        let version: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
            conn.execute_batch(&format!(
                "BEGIN IMMEDIATE; {sql}; PRAGMA user_version = {}; COMMIT;",
                i + 1
            ))?;
        }
        Ok(conn)
    }

    /// Run `f` on the blocking pool: catalog calls may wait for the disk or for another writer, and must never
    /// hold up the thread that runs the supervisors, the ffmpeg watchdogs and the watchers.
    pub async fn run<T, F>(self: &Arc<Self>, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Catalog) -> Result<T> + Send + 'static,
    {
        let me = self.clone();
        match tokio::task::spawn_blocking(move || f(&me)).await {
            Ok(r) => r,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(Error::Internal(format!("catalog task: {e}"))),
        }
    }

    fn writer(&self) -> MutexGuard<'_, Connection> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Run a read on a reader connection (WAL: it never waits for the writer).
    fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T> {
        let Some(path) = &self.path else {
            return f(&self.writer()).map_err(Error::from_sql);
        };
        let pooled = self.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match pooled {
            Some(c) => c,
            None => {
                let c = Connection::open_with_flags(
                    path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )
                .map_err(|e| Error::catalog(path, e))?;
                c.busy_timeout(std::time::Duration::from_secs(5))
                    .map_err(Error::from_sql)?;
                c
            }
        };
        let out = f(&conn).map_err(Error::from_sql);
        let mut pool = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < READERS {
            pool.push(conn);
        }
        out
    }

    // ---- sessions ----------------------------------------------------------------------------------------

    /// Register a session (ffmpeg is about to record into it). Sessions are numbered in registration order,
    /// which decides the live sequence (never the wall clock, which may step).
    pub fn open_session(&self, camera: &str, session: &str) -> Result<()> {
        self.writer()
            .execute(
                "INSERT OR IGNORE INTO sessions (camera, session, opened_at_ms) VALUES (?1, ?2, ?3)",
                params![camera, session, now_ms()],
            )
            .map_err(Error::from_sql)?;
        Ok(())
    }

    /// Mark a finished session as fully catalogued: it is never scanned again.
    pub fn close_session(&self, camera: &str, session: &str) -> Result<()> {
        let conn = self.writer();
        let now = now_ms();
        conn.execute(
            "INSERT OR IGNORE INTO sessions (camera, session, opened_at_ms) VALUES (?1, ?2, ?3)",
            params![camera, session, now],
        )
        .map_err(Error::from_sql)?;
        conn.execute(
            "UPDATE sessions SET closed_at_ms = ?3 WHERE camera = ?1 AND session = ?2 AND closed_at_ms IS NULL",
            params![camera, session, now],
        )
        .map_err(Error::from_sql)?;
        Ok(())
    }

    /// The sessions of a camera not yet closed, oldest first (few: the current one, and any a crash left).
    pub fn open_sessions(&self, camera: &str) -> Result<Vec<String>> {
        self.read(|c| {
            let mut st = c.prepare_cached(
                "SELECT session FROM sessions WHERE camera = ?1 AND closed_at_ms IS NULL ORDER BY id",
            )?;
            st.query_map([camera], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()
        })
    }

    /// Whether a session is closed (None: unknown session).
    pub fn session_closed(&self, camera: &str, session: &str) -> Result<Option<bool>> {
        self.read(|c| {
            c.query_row(
                "SELECT closed_at_ms IS NOT NULL FROM sessions WHERE camera = ?1 AND session = ?2",
                params![camera, session],
                |r| r.get(0),
            )
            .optional()
        })
    }

    /// The sequence numbers already catalogued for one session (rescans after a restart; O(session), once).
    pub fn seqs(&self, camera: &str, session: &str) -> Result<std::collections::HashSet<i64>> {
        self.read(|c| {
            let mut st =
                c.prepare_cached("SELECT seq FROM segments WHERE camera = ?1 AND session = ?2")?;
            st.query_map(params![camera, session], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()
        })
    }

    /// The last catalogued segment of a session (highest seq).
    pub fn last_of_session(&self, camera: &str, session: &str) -> Result<Option<Segment>> {
        self.read(|c| {
            c.query_row(
                &format!(
                    "SELECT {COLUMNS} FROM segments WHERE camera = ?1 AND session = ?2 ORDER BY seq DESC LIMIT 1"
                ),
                params![camera, session],
                row_to_segment,
            )
            .optional()
        })
    }

    // ---- recording -----------------------------------------------------------------------------------------

    /// Record a finished segment. Returns its id and whether it extended the live sequence, or `None` if it
    /// was already catalogued. O(log n).
    pub fn insert(&self, s: &NewSegment) -> Result<Option<Inserted>> {
        let out = self.insert_rows(s);
        self.segments_changed();
        out
    }

    fn insert_rows(&self, s: &NewSegment) -> Result<Option<Inserted>> {
        let mut conn = self.writer();
        let tx = conn.transaction().map_err(Error::from_sql)?;
        let out = Self::insert_in(&tx, s)?;
        tx.commit().map_err(Error::from_sql)?;
        Ok(out)
    }

    /// Record several segments in one transaction (rescans), in order.
    pub fn insert_many(&self, rows: &[NewSegment]) -> Result<Vec<Option<Inserted>>> {
        let out = self.insert_many_rows(rows);
        self.segments_changed();
        out
    }

    fn insert_many_rows(&self, rows: &[NewSegment]) -> Result<Vec<Option<Inserted>>> {
        let mut conn = self.writer();
        let tx = conn.transaction().map_err(Error::from_sql)?;
        let mut out = Vec::with_capacity(rows.len());
        for s in rows {
            out.push(Self::insert_in(&tx, s)?);
        }
        tx.commit().map_err(Error::from_sql)?;
        Ok(out)
    }

    fn insert_in(tx: &rusqlite::Transaction<'_>, s: &NewSegment) -> Result<Option<Inserted>> {
        let now = now_ms();
        tx.execute(
            "INSERT OR IGNORE INTO sessions (camera, session, opened_at_ms) VALUES (?1, ?2, ?3)",
            params![s.camera, s.session, now],
        )
        .map_err(Error::from_sql)?;
        let n = tx
            .execute(
                "INSERT OR IGNORE INTO segments
                 (camera, factory, session, seq, path, start_ms, duration_ms, bytes, first_in_session, recorded_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    s.camera,
                    s.factory,
                    s.session,
                    s.seq,
                    s.path,
                    s.start_ms,
                    s.duration_ms,
                    s.bytes,
                    s.first_in_session,
                    now
                ],
            )
            .map_err(Error::from_sql)?;
        if n != 1 {
            return Ok(None);
        }
        let id = tx.last_insert_rowid();
        let session_id: i64 = tx
            .query_row(
                "SELECT id FROM sessions WHERE camera = ?1 AND session = ?2",
                params![s.camera, s.session],
                |r| r.get(0),
            )
            .map_err(Error::from_sql)?;
        tx.execute(
            "INSERT OR IGNORE INTO cameras (camera) VALUES (?1)",
            [&s.camera],
        )
        .map_err(Error::from_sql)?;
        let (last_lseq, last_session, last_session_id, last_seq, disc): (
            Option<i64>,
            Option<String>,
            Option<i64>,
            Option<i64>,
            i64,
        ) = tx
            .query_row(
                "SELECT last_lseq, last_session, last_session_id, last_seq, disc FROM cameras WHERE camera = ?1",
                [&s.camera],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .map_err(Error::from_sql)?;
        // The live sequence only ever grows at its end: a segment extends it if it comes after the last live
        // one in recording order (same session, later seq; or a session registered later). Anything else was
        // catalogued late, behind newer footage, and stays out of live and today's playlists.
        let live = match (&last_session, last_session_id, last_seq) {
            (None, _, _) => true,
            (Some(ls), _, Some(lq)) if *ls == s.session => s.seq > lq,
            (Some(_), Some(lid), _) => session_id > lid,
            _ => true,
        };
        if live {
            let join = last_session.as_deref().is_some_and(|ls| ls != s.session);
            let disc = disc + i64::from(join);
            let lseq = last_lseq.map_or(0, |l| l + 1);
            tx.execute(
                "UPDATE segments SET lseq = ?2, disc = ?3, join_ = ?4 WHERE id = ?1",
                params![id, lseq, disc, join],
            )
            .map_err(Error::from_sql)?;
            tx.execute(
                "UPDATE cameras SET last_lseq = ?2, last_session = ?3, last_session_id = ?4, last_seq = ?5,
                   disc = ?6 WHERE camera = ?1",
                params![s.camera, lseq, s.session, session_id, s.seq, disc],
            )
            .map_err(Error::from_sql)?;
        }
        tx.execute(
            "UPDATE cameras SET bytes = bytes + ?2, segments = segments + 1,
               max_duration_ms = MAX(max_duration_ms, ?3) WHERE camera = ?1",
            params![s.camera, s.bytes, s.duration_ms],
        )
        .map_err(Error::from_sql)?;
        Ok(Some(Inserted { id, live }))
    }

    /// A camera's running counters (O(1)).
    pub fn camera_stats(&self, camera: &str) -> Result<CameraStats> {
        self.read(|c| {
            c.query_row(
                "SELECT max_duration_ms, bytes, segments, deleted_until_ms, last_lseq, disc FROM cameras WHERE camera = ?1",
                [camera],
                |r| {
                    Ok(CameraStats {
                        max_duration_ms: r.get(0)?,
                        bytes: r.get(1)?,
                        segments: r.get(2)?,
                        deleted_until_ms: r.get(3)?,
                        last_lseq: r.get(4)?,
                        disc: r.get(5)?,
                    })
                },
            )
            .optional()
            .map(Option::unwrap_or_default)
        })
    }

    /// Bytes of footage on disk, all cameras (O(cameras)).
    pub fn total_bytes(&self) -> Result<i64> {
        self.read(|c| {
            c.query_row("SELECT COALESCE(SUM(bytes), 0) FROM cameras", [], |r| {
                r.get(0)
            })
        })
    }

    // ---- playlists ---------------------------------------------------------------------------------------

    /// The last `n` segments of a camera's live sequence, oldest first, cut after any hole (so that their
    /// live positions are consecutive). O(n).
    pub fn live_window(&self, camera: &str, n: usize) -> Result<Vec<Segment>> {
        let mut rows: Vec<Segment> = self.read(|c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM segments WHERE camera = ?1 AND lseq IS NOT NULL AND deleting = 0
                 ORDER BY lseq DESC LIMIT ?2"
            ))?;
            st.query_map(params![camera, n as i64], row_to_segment)?
                .collect::<rusqlite::Result<_>>()
        })?;
        rows.reverse();
        Ok(contiguous_tail(rows))
    }

    /// The live-sequence segments of a camera that start in `[from_ms, to_ms)`, in live order, cut after any
    /// hole: today's EVENT playlist. O(rows of the range).
    pub fn live_range(&self, camera: &str, from_ms: i64, to_ms: i64) -> Result<Vec<Segment>> {
        let rows = self.read(|c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM segments INDEXED BY segments_camera_start
                 WHERE camera = ?1 AND start_ms >= ?2 AND start_ms < ?3 AND lseq IS NOT NULL AND deleting = 0"
            ))?;
            st.query_map(params![camera, from_ms, to_ms], row_to_segment)?
                .collect::<rusqlite::Result<Vec<Segment>>>()
        })?;
        let mut rows = rows;
        rows.sort_by_key(|s| s.lseq);
        Ok(contiguous_tail(rows))
    }

    /// Segments of a camera that start in `[from_ms, to_ms)`, oldest first (VOD and past days: every segment,
    /// including those catalogued late). O(rows of the range).
    pub fn range(&self, camera: &str, from_ms: i64, to_ms: i64) -> Result<Vec<Segment>> {
        self.read(|c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM segments INDEXED BY segments_camera_start
                 WHERE camera = ?1 AND start_ms >= ?2 AND start_ms < ?3 AND deleting = 0
                 ORDER BY start_ms, session, seq"
            ))?;
            st.query_map(params![camera, from_ms, to_ms], row_to_segment)?
                .collect::<rusqlite::Result<_>>()
        })
    }

    /// One segment of a camera by id.
    pub fn segment(&self, camera: &str, id: i64) -> Result<Option<Segment>> {
        self.read(|c| {
            c.query_row(
                &format!(
                    "SELECT {COLUMNS} FROM segments WHERE id = ?1 AND camera = ?2 AND deleting = 0"
                ),
                params![id, camera],
                row_to_segment,
            )
            .optional()
        })
    }

    // ---- pipeline ----------------------------------------------------------------------------------------

    /// Up to `limit` segments waiting for `stage`, oldest first (segments set aside with an error are skipped).
    pub fn pending(&self, stage: Stage, limit: usize) -> Result<Vec<Segment>> {
        self.read(|c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM segments WHERE {} ORDER BY id LIMIT ?1",
                stage.pending()
            ))?;
            st.query_map([limit as i64], row_to_segment)?
                .collect::<rusqlite::Result<_>>()
        })
    }

    /// Record that `stage` is done for segment `id` (with the CID, for the pin stage).
    pub fn mark(&self, stage: Stage, id: i64, cid: Option<&str>) -> Result<()> {
        let now = now_ms();
        let conn = self.writer();
        let n = match stage {
            Stage::Pin => conn.execute(
                "UPDATE segments SET cid = ?2, pinned_at_ms = ?3 WHERE id = ?1",
                params![id, cid, now],
            ),
            Stage::Index => conn.execute(
                "UPDATE segments SET indexed_at_ms = ?2 WHERE id = ?1",
                params![id, now],
            ),
            Stage::Publish => conn.execute(
                "UPDATE segments SET published_at_ms = ?2 WHERE id = ?1",
                params![id, now],
            ),
        }
        .map_err(Error::from_sql)?;
        if n == 1 {
            Ok(())
        } else {
            Err(Error::NotInCatalog(id))
        }
    }

    /// Set a segment aside: the pipeline cannot process it (the reason is kept and shown).
    pub fn set_aside(&self, id: i64, reason: &str) -> Result<()> {
        self.writer()
            .execute(
                "UPDATE segments SET pipeline_error = ?2 WHERE id = ?1",
                params![id, reason],
            )
            .map_err(Error::from_sql)?;
        Ok(())
    }

    /// Segments waiting at each stage: counted on the partial indexes, so O(backlog), not O(history).
    pub fn backlog(&self) -> Result<Backlog> {
        self.read(|c| {
            let count = |stage: Stage| -> rusqlite::Result<u64> {
                c.query_row(
                    &format!("SELECT COUNT(*) FROM segments WHERE {}", stage.pending()),
                    [],
                    |r| r.get::<_, i64>(0),
                )
                .map(|n| n as u64)
            };
            Ok(Backlog {
                pin: count(Stage::Pin)?,
                index: count(Stage::Index)?,
                publish: count(Stage::Publish)?,
                failed: c.query_row(
                    "SELECT COUNT(*) FROM segments WHERE pipeline_error IS NOT NULL",
                    [],
                    |r| r.get::<_, i64>(0),
                )? as u64,
            })
        })
    }

    /// The CID of the segment of the same camera just before `s` in time, if it has one. O(log n).
    pub fn prev_cid(&self, s: &Segment) -> Result<Option<String>> {
        self.read(|c| {
            c.query_row(
                "SELECT cid FROM segments WHERE camera = ?1
                   AND (start_ms < ?2 OR (start_ms = ?2 AND (session < ?3 OR (session = ?3 AND seq < ?4))))
                 ORDER BY start_ms DESC, session DESC, seq DESC LIMIT 1",
                params![s.camera, s.start_ms, s.session, s.seq],
                |r| r.get::<_, Option<String>>(0),
            )
            .optional()
            .map(Option::flatten)
        })
    }

    /// Milliseconds from "recorded" to "published" of every published segment (latency figures; tests).
    pub fn publish_latencies_ms(&self) -> Result<Vec<i64>> {
        self.read(|c| {
            let mut st = c.prepare(
                "SELECT published_at_ms - recorded_at_ms FROM segments WHERE published_at_ms IS NOT NULL",
            )?;
            st.query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()
        })
    }

    /// Segments with a CID whose camera (`by_factory` false) or factory (true) is `key`, starting in
    /// `[from_ms, to_ms)`, oldest first: the embedded index's range query.
    pub fn indexed_range(
        &self,
        by_factory: bool,
        key: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<Segment>> {
        let (col, index) = if by_factory {
            ("factory", "segments_start")
        } else {
            ("camera", "segments_camera_start")
        };
        self.read(|c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM segments INDEXED BY {index}
                 WHERE {col} = ?1 AND start_ms >= ?2 AND start_ms < ?3
                   AND indexed_at_ms IS NOT NULL AND deleting = 0 ORDER BY start_ms, camera, session, seq"
            ))?;
            st.query_map(params![key, from_ms, to_ms], row_to_segment)?
                .collect::<rusqlite::Result<_>>()
        })
    }

    /// The start of `camera`'s first indexed segment starting after `after_ms` (the embedded index's
    /// `first_after`).
    pub fn first_indexed_after(&self, camera: &str, after_ms: i64) -> Result<Option<i64>> {
        self.read(|c| {
            c.query_row(
                "SELECT start_ms FROM segments INDEXED BY segments_camera_start
                 WHERE camera = ?1 AND start_ms > ?2 AND indexed_at_ms IS NOT NULL AND deleting = 0
                 ORDER BY start_ms LIMIT 1",
                params![camera, after_ms],
                |r| r.get(0),
            )
            .optional()
        })
    }

    // ---- mirroring ---------------------------------------------------------------------------------------

    /// Record a segment fetched from another node: catalogued like a recorded one (live sequence, sessions,
    /// counters) and already pinned, indexed and announced (its origin did that). `None` if it was already
    /// catalogued.
    pub fn insert_mirrored(
        &self,
        s: &NewSegment,
        cid: &str,
        origin: &str,
    ) -> Result<Option<Inserted>> {
        let out = (|| {
            let mut conn = self.writer();
            let tx = conn.transaction().map_err(Error::from_sql)?;
            let out = Self::insert_in(&tx, s)?;
            if let Some(ins) = &out {
                let now = now_ms();
                tx.execute(
                    "UPDATE segments SET cid = ?2, origin = ?3, pinned_at_ms = ?4, indexed_at_ms = ?4,
                       published_at_ms = ?4 WHERE id = ?1",
                    params![ins.id, cid, origin, now],
                )
                .map_err(Error::from_sql)?;
                tx.execute(
                    "UPDATE sessions SET closed_at_ms = ?3 WHERE camera = ?1 AND session = ?2
                       AND closed_at_ms IS NULL",
                    params![s.camera, s.session, now],
                )
                .map_err(Error::from_sql)?;
            }
            tx.commit().map_err(Error::from_sql)?;
            Ok(out)
        })();
        self.segments_changed();
        out
    }

    /// Whether `(camera, session, seq)` is catalogued (deleted or not).
    pub fn has(&self, camera: &str, session: &str, seq: i64) -> Result<bool> {
        self.read(|c| {
            c.query_row(
                "SELECT EXISTS (SELECT 1 FROM segments WHERE camera = ?1 AND session = ?2 AND seq = ?3)",
                params![camera, session, seq],
                |r| r.get(0),
            )
        })
    }

    /// The camera's newest catalogued segment (by start time). O(log n).
    pub fn latest(&self, camera: &str) -> Result<Option<Segment>> {
        self.read(|c| {
            c.query_row(
                &format!(
                    "SELECT {COLUMNS} FROM segments INDEXED BY segments_camera_start
                     WHERE camera = ?1 AND deleting = 0
                     ORDER BY start_ms DESC, session DESC, seq DESC LIMIT 1"
                ),
                [camera],
                row_to_segment,
            )
            .optional()
        })
    }

    /// Up to when retention has deleted the camera's footage (its newest deleted segment's start).
    pub fn deleted_until(&self, camera: &str) -> Result<Option<i64>> {
        self.read(|c| {
            c.query_row(
                "SELECT deleted_until_ms FROM cameras WHERE camera = ?1",
                [camera],
                |r| r.get::<_, Option<i64>>(0),
            )
            .optional()
            .map(Option::flatten)
        })
    }

    /// The (not deleted) segment with this CID, if this node has one.
    pub fn by_cid(&self, cid: &str) -> Result<Option<Segment>> {
        self.read(|c| {
            c.query_row(
                &format!(
                    "SELECT {COLUMNS} FROM segments INDEXED BY segments_cid
                     WHERE cid = ?1 AND deleting = 0 ORDER BY id LIMIT 1"
                ),
                [cid],
                row_to_segment,
            )
            .optional()
        })
    }

    /// Node `node` says it holds the segment with this CID. Returns whether that was news (each node counts
    /// once per segment; a CID this node does not have is ignored).
    pub fn add_replica(&self, cid: &str, node: &str) -> Result<bool> {
        let mut conn = self.writer();
        let tx = conn.transaction().map_err(Error::from_sql)?;
        let id: Option<i64> = tx
            .query_row(
                "SELECT id FROM segments INDEXED BY segments_cid WHERE cid = ?1 ORDER BY id LIMIT 1",
                [cid],
                |r| r.get(0),
            )
            .optional()
            .map_err(Error::from_sql)?;
        let Some(id) = id else {
            return Ok(false);
        };
        let n = tx
            .execute(
                "INSERT OR IGNORE INTO replicas (segment_id, node, at_ms) VALUES (?1, ?2, ?3)",
                params![id, node, now_ms()],
            )
            .map_err(Error::from_sql)?;
        if n == 1 {
            tx.execute(
                "UPDATE segments SET replicas = replicas + 1 WHERE id = ?1",
                [id],
            )
            .map_err(Error::from_sql)?;
        }
        tx.commit().map_err(Error::from_sql)?;
        Ok(n == 1)
    }

    /// Node `node` no longer holds the segment with this CID. Returns whether it was counted.
    pub fn remove_replica(&self, cid: &str, node: &str) -> Result<bool> {
        let mut conn = self.writer();
        let tx = conn.transaction().map_err(Error::from_sql)?;
        let n = tx
            .execute(
                "DELETE FROM replicas WHERE node = ?2 AND segment_id IN
                   (SELECT id FROM segments INDEXED BY segments_cid WHERE cid = ?1)",
                params![cid, node],
            )
            .map_err(Error::from_sql)?;
        if n > 0 {
            tx.execute(
                "UPDATE segments SET replicas = MAX(replicas - ?2, 0) WHERE cid = ?1",
                params![cid, n as i64],
            )
            .map_err(Error::from_sql)?;
        }
        tx.commit().map_err(Error::from_sql)?;
        Ok(n > 0)
    }

    /// How many other nodes are known to hold segment `id`.
    pub fn replicas(&self, id: i64) -> Result<i64> {
        self.read(|c| {
            c.query_row("SELECT replicas FROM segments WHERE id = ?1", [id], |r| {
                r.get(0)
            })
        })
    }

    // ---- retention ---------------------------------------------------------------------------------------

    /// Up to `limit` of the oldest segments (all cameras) that retention may delete under `safe`. O(limit)
    /// through the start-time indexes for [`Safe::Any`] and [`Safe::Distributed`]; [`Safe::Replicated`] also
    /// steps over the distributed rows not yet replicated enough (those waiting for their mirrors).
    pub fn oldest(&self, limit: usize, safe: Safe) -> Result<Vec<Segment>> {
        let (filter, a, b) = match safe {
            Safe::Any => ("INDEXED BY segments_start WHERE deleting = 0", 0, 0),
            Safe::Distributed => (
                "INDEXED BY segments_start_distributed WHERE indexed_at_ms IS NOT NULL AND deleting = 0",
                0,
                0,
            ),
            Safe::Replicated { mirrors, cluster } => (
                "INDEXED BY segments_start_distributed WHERE indexed_at_ms IS NOT NULL AND deleting = 0
                 AND (origin IS NOT NULL OR replicas >= ?2 OR cluster_peers >= ?3)",
                i64::from(mirrors),
                cluster.map_or(i64::MAX, i64::from),
            ),
        };
        self.read(|c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM segments {filter} ORDER BY start_ms LIMIT ?1"
            ))?;
            if matches!(safe, Safe::Replicated { .. }) {
                st.query_map(params![limit as i64, a, b], row_to_segment)?
                    .collect::<rusqlite::Result<_>>()
            } else {
                st.query_map([limit as i64], row_to_segment)?
                    .collect::<rusqlite::Result<_>>()
            }
        })
    }

    /// The oldest distributed segments recorded here that IPFS Cluster has not yet confirmed at `min` peers
    /// (retention asks the cluster about them).
    pub fn unconfirmed(&self, limit: usize, min: u32) -> Result<Vec<Segment>> {
        self.read(|c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM segments INDEXED BY segments_start_distributed
                 WHERE indexed_at_ms IS NOT NULL AND deleting = 0 AND origin IS NULL AND cluster_peers < ?2
                 ORDER BY start_ms LIMIT ?1"
            ))?;
            st.query_map(params![limit as i64, i64::from(min)], row_to_segment)?
                .collect::<rusqlite::Result<_>>()
        })
    }

    /// Record how many cluster peers reported segment `id` pinned.
    pub fn set_cluster_peers(&self, id: i64, peers: u32) -> Result<()> {
        self.writer()
            .execute(
                "UPDATE segments SET cluster_peers = ?2 WHERE id = ?1",
                params![id, peers],
            )
            .map_err(Error::from_sql)?;
        Ok(())
    }

    /// Retention, step 1: tombstone segments about to be deleted. They leave every playlist and the pipeline
    /// at once (and the cameras remember up to when footage was deleted); [`Catalog::forget`] removes the rows
    /// once the files are gone. After a crash in between, [`Catalog::tombstoned`] lists them again.
    pub fn tombstone(&self, segments: &[Segment]) -> Result<()> {
        // Bumped before the change too: a reader that looked up a row just before it is deleted sees
        // the counter move either way.
        self.segments_deleted();
        let out = self.tombstone_rows(segments);
        self.segments_deleted();
        self.segments_changed();
        out
    }

    fn tombstone_rows(&self, segments: &[Segment]) -> Result<()> {
        let mut conn = self.writer();
        let tx = conn.transaction().map_err(Error::from_sql)?;
        for s in segments {
            tx.execute("UPDATE segments SET deleting = 1 WHERE id = ?1", [s.id])
                .map_err(Error::from_sql)?;
            tx.execute(
                "UPDATE cameras SET deleted_until_ms = MAX(COALESCE(deleted_until_ms, ?2), ?2) WHERE camera = ?1",
                params![s.camera, s.start_ms],
            )
            .map_err(Error::from_sql)?;
        }
        tx.commit().map_err(Error::from_sql)
    }

    /// A flag remembered across restarts (one-time jobs).
    pub fn flag(&self, key: &str) -> Result<bool> {
        self.read(|c| {
            c.query_row(
                "SELECT EXISTS (SELECT 1 FROM meta WHERE key = ?1)",
                [key],
                |r| r.get(0),
            )
        })
    }

    /// Set a flag (see [`Catalog::flag`]).
    pub fn set_flag(&self, key: &str) -> Result<()> {
        self.writer()
            .execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
                params![key, now_ms().to_string()],
            )
            .map_err(Error::from_sql)?;
        Ok(())
    }

    /// A value remembered across restarts.
    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        self.read(|c| {
            c.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
                .optional()
        })
    }

    /// Remember `value` under `key` (`None` forgets it).
    pub fn set_meta(&self, key: &str, value: Option<&str>) -> Result<()> {
        let conn = self.writer();
        match value {
            Some(v) => conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
                params![key, v],
            ),
            None => conn.execute("DELETE FROM meta WHERE key = ?1", [key]),
        }
        .map_err(Error::from_sql)?;
        Ok(())
    }

    /// Tombstoned segments (retention interrupted by a crash).
    pub fn tombstoned(&self, limit: usize) -> Result<Vec<Segment>> {
        self.read(|c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM segments WHERE deleting = 1 ORDER BY id LIMIT ?1"
            ))?;
            st.query_map([limit as i64], row_to_segment)?
                .collect::<rusqlite::Result<_>>()
        })
    }

    /// Retention, step 2: the files of these tombstoned segments are gone; remove their rows and update the
    /// cameras' counters. Returns the (camera, session) pairs that have no segment left.
    pub fn forget(&self, segments: &[Segment]) -> Result<Vec<(String, String)>> {
        // Bumped before the change too: a reader that looked up a row just before it is deleted sees
        // the counter move either way.
        self.segments_deleted();
        let out = self.forget_rows(segments);
        self.segments_deleted();
        self.segments_changed();
        out
    }

    fn forget_rows(&self, segments: &[Segment]) -> Result<Vec<(String, String)>> {
        let mut conn = self.writer();
        let tx = conn.transaction().map_err(Error::from_sql)?;
        let mut emptied = Vec::new();
        for s in segments {
            let n = tx
                .execute(
                    "DELETE FROM segments WHERE id = ?1 AND deleting = 1",
                    [s.id],
                )
                .map_err(Error::from_sql)?;
            if n == 0 {
                continue;
            }
            tx.execute("DELETE FROM replicas WHERE segment_id = ?1", [s.id])
                .map_err(Error::from_sql)?;
            tx.execute(
                "UPDATE cameras SET bytes = bytes - ?2, segments = segments - 1 WHERE camera = ?1",
                params![s.camera, s.bytes],
            )
            .map_err(Error::from_sql)?;
            let left: bool = tx
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM segments WHERE camera = ?1 AND session = ?2)",
                    params![s.camera, s.session],
                    |r| r.get(0),
                )
                .map_err(Error::from_sql)?;
            let pair = (s.camera.clone(), s.session.clone());
            if !left && !emptied.contains(&pair) {
                emptied.push(pair);
            }
        }
        tx.commit().map_err(Error::from_sql)?;
        Ok(emptied)
    }

    /// Forget a session whose segments are all deleted (retention removed its folder).
    pub fn drop_session(&self, camera: &str, session: &str) -> Result<()> {
        // Bumped before the change too: a reader that looked up a row just before it is deleted sees
        // the counter move either way.
        self.segments_deleted();
        let out = self.drop_session_rows(camera, session);
        self.segments_deleted();
        self.segments_changed();
        out
    }

    fn drop_session_rows(&self, camera: &str, session: &str) -> Result<()> {
        self.writer()
            .execute(
                "DELETE FROM sessions WHERE camera = ?1 AND session = ?2 AND closed_at_ms IS NOT NULL
                   AND NOT EXISTS (SELECT 1 FROM segments WHERE camera = ?1 AND session = ?2)",
                params![camera, session],
            )
            .map_err(Error::from_sql)?;
        Ok(())
    }

    /// `PRAGMA integrity_check`: "ok" when the file is sound.
    pub fn integrity_check(&self) -> Result<String> {
        self.read(|c| c.query_row("PRAGMA integrity_check", [], |r| r.get(0)))
    }

    // ---- tools and tests ---------------------------------------------------------------------------------

    /// Number of segments of a camera (all cameras with `None`), from the running counters.
    pub fn count(&self, camera: Option<&str>) -> Result<u64> {
        self.read(|c| match camera {
            Some(cam) => c
                .query_row(
                    "SELECT COALESCE(SUM(segments), 0) FROM cameras WHERE camera = ?1",
                    [cam],
                    |r| r.get::<_, i64>(0),
                )
                .map(|n| n as u64),
            None => c
                .query_row("SELECT COALESCE(SUM(segments), 0) FROM cameras", [], |r| {
                    r.get::<_, i64>(0)
                })
                .map(|n| n as u64),
        })
    }

    /// Every segment of every camera with its pipeline state, in catalogue order (tests and tools).
    pub fn all_cameras(&self) -> Result<Vec<Tracked>> {
        let conn = self.writer();
        let mut st = conn
            .prepare(&format!(
                "SELECT {COLUMNS}, published_at_ms IS NOT NULL, pipeline_error, indexed_at_ms IS NOT NULL FROM segments
                 WHERE deleting = 0 ORDER BY id"
            ))
            .map_err(Error::from_sql)?;
        collect(
            st.query_map([], |r| {
                Ok(Tracked {
                    segment: row_to_segment(r)?,
                    published: r.get(14)?,
                    set_aside: r.get(15)?,
                    indexed: r.get(16)?,
                })
            })
            .map_err(Error::from_sql)?,
        )
    }

    /// Every segment of a camera, oldest first (tests and tools; playlists use windows).
    pub fn all(&self, camera: &str) -> Result<Vec<Segment>> {
        self.range(camera, i64::MIN, i64::MAX)
    }

    /// Run raw SQL on the writer connection (benchmarks that generate synthetic history).
    pub fn with_writer<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T> {
        self.segments_deleted();
        let out = f(&mut self.writer()).map_err(Error::from_sql);
        self.segments_deleted();
        self.segments_changed();
        out
    }

    /// Bumped after every committed change of segment rows (insert, retention): whoever caches something
    /// built from them (the HTTP server's playlists) rebuilds when it moved. In memory: only this process
    /// writes segments.
    pub fn segments_version(&self) -> u64 {
        self.version.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Bumped around every deletion of segment rows (retention): a cache of segment bytes keyed by id is valid
    /// while this has not moved since the row was looked up.
    pub fn deletions_version(&self) -> u64 {
        self.deletions.load(std::sync::atomic::Ordering::Acquire)
    }

    fn segments_deleted(&self) {
        self.deletions
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    fn segments_changed(&self) {
        self.version
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// The rows after the last hole in their live positions (rows sorted by lseq).
fn contiguous_tail(mut rows: Vec<Segment>) -> Vec<Segment> {
    let cut = rows
        .windows(2)
        .rposition(|w| w[1].lseq != w[0].lseq.map(|l| l + 1))
        .map_or(0, |i| i + 1);
    rows.drain(..cut);
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(session: &str, seq: i64, start_ms: i64) -> NewSegment {
        NewSegment {
            camera: "cam1".into(),
            factory: "f".into(),
            session: session.into(),
            seq,
            path: format!("cam1/{session}/seg_{seq:05}.ts"),
            start_ms,
            duration_ms: 2000,
            bytes: 1000,
            first_in_session: seq == 0,
        }
    }

    fn live_positions(c: &Catalog) -> Vec<(String, i64, Option<i64>, i64, bool)> {
        c.all("cam1")
            .unwrap()
            .into_iter()
            .map(|s| (s.session, s.seq, s.lseq, s.disc, s.join))
            .collect()
    }

    #[test]
    fn inserts_are_idempotent_and_keep_live_counters() {
        let c = Catalog::in_memory().unwrap();
        c.open_session("cam1", "s1").unwrap();
        c.open_session("cam1", "s2").unwrap();
        let a = c.insert(&seg("s1", 0, 0)).unwrap().unwrap();
        assert!(a.live);
        assert_eq!(
            c.insert(&seg("s1", 0, 0)).unwrap(),
            None,
            "duplicate ignored"
        );
        c.insert(&seg("s1", 1, 2000)).unwrap();
        c.insert(&seg("s2", 0, 5000)).unwrap();
        c.insert(&seg("s2", 1, 7000)).unwrap();
        // The partial last segment of s1, catalogued after s2 already extended the live sequence: late.
        let late = c.insert(&seg("s1", 2, 4000)).unwrap().unwrap();
        assert!(!late.live);
        assert_eq!(c.count(Some("cam1")).unwrap(), 5);
        assert_eq!(
            live_positions(&c),
            [
                ("s1".into(), 0, Some(0), 0, false),
                ("s1".into(), 1, Some(1), 0, false),
                ("s1".into(), 2, None, 0, false),
                ("s2".into(), 0, Some(2), 1, true),
                ("s2".into(), 1, Some(3), 1, false),
            ]
        );
        let w = c.live_window("cam1", 2).unwrap();
        assert_eq!(
            w.iter()
                .map(|s| (s.session.as_str(), s.seq))
                .collect::<Vec<_>>(),
            [("s2", 0), ("s2", 1)]
        );
        assert_eq!(
            c.range("cam1", 2000, 5000).unwrap().len(),
            2,
            "VOD includes the late row"
        );
        assert_eq!(
            c.live_range("cam1", 0, 10_000).unwrap().len(),
            4,
            "today's playlist does not"
        );
        assert_eq!(c.seqs("cam1", "s1").unwrap().len(), 3);
        assert_eq!(c.last_of_session("cam1", "s1").unwrap().unwrap().seq, 2);
        let id = w[1].id;
        assert_eq!(c.segment("cam1", id).unwrap().unwrap().seq, 1);
        assert_eq!(
            c.segment("cam2", id).unwrap(),
            None,
            "ids are scoped to their camera"
        );
        let stats = c.camera_stats("cam1").unwrap();
        assert_eq!(
            (stats.bytes, stats.segments, stats.max_duration_ms),
            (5000, 5, 2000)
        );
        assert_eq!(stats.last_lseq, Some(3));
    }

    #[test]
    fn the_live_sequence_follows_registration_order_not_the_wall_clock() {
        let c = Catalog::in_memory().unwrap();
        c.open_session("cam1", "b-later-name").unwrap();
        c.insert(&seg("b-later-name", 0, 10_000)).unwrap();
        // The clock stepped back an hour: the next session's name and times sort earlier, yet it is live.
        c.open_session("cam1", "a-earlier-name").unwrap();
        let r = c
            .insert(&seg("a-earlier-name", 0, -3_590_000))
            .unwrap()
            .unwrap();
        assert!(r.live);
        let w = c.live_window("cam1", 5).unwrap();
        assert_eq!(
            w.iter().map(|s| s.lseq).collect::<Vec<_>>(),
            [Some(0), Some(1)]
        );
        assert!(w[1].join && w[1].disc == 1);
    }

    #[test]
    fn stages_take_their_backlog_in_order_and_broken_segments_are_set_aside() {
        let c = Catalog::in_memory().unwrap();
        for i in 0..4 {
            c.insert(&seg("s1", i, i * 2000)).unwrap();
        }
        let ids: Vec<i64> = c.all("cam1").unwrap().iter().map(|s| s.id).collect();
        assert_eq!(
            c.backlog().unwrap(),
            Backlog {
                pin: 4,
                ..Default::default()
            }
        );
        c.mark(Stage::Pin, ids[0], Some("bafk0")).unwrap();
        c.mark(Stage::Pin, ids[1], Some("bafk1")).unwrap();
        c.set_aside(ids[3], "file vanished").unwrap();
        assert_eq!(
            c.pending(Stage::Pin, 10)
                .unwrap()
                .iter()
                .map(|s| s.id)
                .collect::<Vec<_>>(),
            [ids[2]]
        );
        assert_eq!(c.pending(Stage::Index, 10).unwrap().len(), 2);
        c.mark(Stage::Index, ids[0], None).unwrap();
        c.mark(Stage::Publish, ids[0], None).unwrap();
        assert_eq!(
            c.backlog().unwrap(),
            Backlog {
                pin: 1,
                index: 1,
                publish: 0,
                failed: 1
            }
        );
        let all = c.all("cam1").unwrap();
        assert_eq!(c.prev_cid(&all[2]).unwrap().as_deref(), Some("bafk1"));
        assert_eq!(c.prev_cid(&all[0]).unwrap(), None);
        assert_eq!(c.indexed_range(false, "cam1", 0, 10_000).unwrap().len(), 1);
        assert_eq!(c.indexed_range(true, "f", 0, 10_000).unwrap().len(), 1);
        assert_eq!(c.publish_latencies_ms().unwrap().len(), 1);
        assert!(matches!(
            c.mark(Stage::Pin, 9999, Some("x")),
            Err(Error::NotInCatalog(9999))
        ));
    }

    #[test]
    fn mirrored_rows_replicas_and_the_replicated_filter() {
        let c = Catalog::in_memory().unwrap();
        // Two segments recorded here, pinned and indexed; one mirrored from elsewhere.
        for i in 0..2 {
            let id = c
                .insert(&seg("s1", i, 1_000 + i * 2_000))
                .unwrap()
                .unwrap()
                .id;
            c.mark(Stage::Pin, id, Some(&format!("cid{i}"))).unwrap();
            c.mark(Stage::Index, id, None).unwrap();
        }
        let m = NewSegment {
            camera: "cam9".into(),
            path: "mirror/cam9/s9/seg_00000.ts".into(),
            ..seg("s9", 0, 500)
        };
        let ins = c.insert_mirrored(&m, "cidm", "origin").unwrap().unwrap();
        assert!(
            c.insert_mirrored(&m, "cidm", "origin").unwrap().is_none(),
            "once"
        );
        assert!(c.has("cam9", "s9", 0).unwrap() && !c.has("cam9", "s9", 1).unwrap());
        assert_eq!(c.by_cid("cidm").unwrap().unwrap().id, ins.id);
        assert_eq!(c.latest("cam1").unwrap().unwrap().seq, 1);
        assert!(
            c.pending(Stage::Pin, 10).unwrap().is_empty(),
            "a mirrored row skips the stages"
        );
        let safe = Safe::Replicated {
            mirrors: 1,
            cluster: None,
        };
        let ids = |v: Vec<Segment>| v.iter().map(|s| s.cid.clone().unwrap()).collect::<Vec<_>>();
        assert_eq!(
            ids(c.oldest(10, safe).unwrap()),
            ["cidm"],
            "only the mirrored copy is safe yet"
        );
        assert!(c.add_replica("cid0", "m1").unwrap());
        assert!(!c.add_replica("cid0", "m1").unwrap(), "a node counts once");
        assert!(!c.add_replica("unknown", "m1").unwrap());
        assert_eq!(ids(c.oldest(10, safe).unwrap()), ["cidm", "cid0"]);
        assert!(c.remove_replica("cid0", "m1").unwrap());
        assert!(!c.remove_replica("cid0", "m1").unwrap());
        assert_eq!(ids(c.oldest(10, safe).unwrap()), ["cidm"]);
        c.set_cluster_peers(c.by_cid("cid1").unwrap().unwrap().id, 2)
            .unwrap();
        let cluster = Safe::Replicated {
            mirrors: u32::MAX,
            cluster: Some(2),
        };
        assert_eq!(ids(c.oldest(10, cluster).unwrap()), ["cidm", "cid1"]);
        // Forgetting a segment forgets its replicas.
        assert!(c.add_replica("cid0", "m2").unwrap());
        let s0 = c.by_cid("cid0").unwrap().unwrap();
        c.tombstone(std::slice::from_ref(&s0)).unwrap();
        c.forget(std::slice::from_ref(&s0)).unwrap();
        let left: i64 = c
            .read(|x| x.query_row("SELECT COUNT(*) FROM replicas", [], |r| r.get(0)))
            .unwrap();
        assert_eq!(left, 0);
        c.set_meta("k", Some("v")).unwrap();
        assert_eq!(c.meta("k").unwrap().as_deref(), Some("v"));
        c.set_meta("k", None).unwrap();
        assert_eq!(c.meta("k").unwrap(), None);
    }

    #[test]
    fn retention_tombstones_then_forgets_and_keeps_counters() {
        let c = Catalog::in_memory().unwrap();
        for i in 0..5 {
            c.insert(&seg("s1", i, i * 2000)).unwrap();
        }
        c.close_session("cam1", "s1").unwrap();
        let all = c.all("cam1").unwrap();
        c.mark(Stage::Pin, all[0].id, Some("x")).unwrap();
        c.mark(Stage::Index, all[0].id, None).unwrap();
        let oldest = c.oldest(10, Safe::Distributed).unwrap();
        assert_eq!(oldest.len(), 1, "only distributed segments when asked");
        assert_eq!(c.oldest(2, Safe::Any).unwrap().len(), 2);
        c.tombstone(&all[..2]).unwrap();
        assert_eq!(c.tombstoned(10).unwrap().len(), 2);
        assert_eq!(
            c.live_window("cam1", 10).unwrap().len(),
            3,
            "tombstoned rows leave playlists"
        );
        assert_eq!(c.backlog().unwrap().pin, 3, "and the pipeline");
        assert!(
            c.forget(&all[..2]).unwrap().is_empty(),
            "the session still has segments"
        );
        let stats = c.camera_stats("cam1").unwrap();
        assert_eq!(
            (stats.bytes, stats.segments, stats.deleted_until_ms),
            (3000, 3, Some(2000))
        );
        c.tombstone(&all[2..]).unwrap();
        assert_eq!(
            c.forget(&all[2..]).unwrap(),
            [("cam1".to_string(), "s1".to_string())]
        );
        c.drop_session("cam1", "s1").unwrap();
        assert_eq!(c.session_closed("cam1", "s1").unwrap(), None);
        assert_eq!(c.total_bytes().unwrap(), 0);
        assert_eq!(c.integrity_check().unwrap(), "ok");
    }

    #[test]
    fn a_window_with_a_hole_is_cut_after_it() {
        let c = Catalog::in_memory().unwrap();
        for i in 0..6 {
            c.insert(&seg("s1", i, i * 2000)).unwrap();
        }
        let all = c.all("cam1").unwrap();
        c.tombstone(&all[3..4]).unwrap();
        let w = c.live_window("cam1", 6).unwrap();
        assert_eq!(w.iter().map(|s| s.seq).collect::<Vec<_>>(), [4, 5]);
    }

    #[test]
    fn reopening_keeps_rows_sessions_and_does_not_rerun_migrations() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.sqlite");
        {
            let c = Catalog::open(&path).unwrap();
            c.open_session("cam1", "s1").unwrap();
            c.open_session("cam1", "s2").unwrap();
            c.insert(&seg("s1", 0, 0)).unwrap();
        }
        let c = Catalog::open(&path).unwrap();
        assert_eq!(c.count(None).unwrap(), 1);
        assert_eq!(c.open_sessions("cam1").unwrap(), ["s1", "s2"]);
        c.close_session("cam1", "s1").unwrap();
        c.close_session("cam1", "s1").unwrap();
        assert_eq!(c.open_sessions("cam1").unwrap(), ["s2"]);
        assert_eq!(c.session_closed("cam1", "s1").unwrap(), Some(true));
        assert!(c.open_sessions("cam2").unwrap().is_empty());
    }

    #[test]
    fn a_version_3_catalog_migrates_with_its_live_positions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.sqlite");
        {
            let conn = Connection::open(&path).unwrap();
            for (i, sql) in MIGRATIONS[..3].iter().enumerate() {
                conn.execute_batch(&format!(
                    "BEGIN; {sql}; PRAGMA user_version = {}; COMMIT;",
                    i + 1
                ))
                .unwrap();
            }
            for (session, seq, start) in [
                ("a", 0, 0),
                ("a", 1, 2000),
                ("b", 0, 9000),
                ("b", 1, 11_000),
            ] {
                conn.execute(
                    "INSERT INTO segments (camera, factory, session, seq, path, start_ms, duration_ms, bytes,
                       first_in_session, recorded_at_ms) VALUES ('cam1', 'f', ?1, ?2, 'p', ?3, 2500, 10, ?2 = 0, 0)",
                    params![session, seq, start],
                )
                .unwrap();
            }
            conn.execute("INSERT INTO closed_sessions VALUES ('cam1', 'a', 5)", [])
                .unwrap();
        }
        let c = Catalog::open(&path).unwrap();
        assert_eq!(
            live_positions(&c),
            [
                ("a".into(), 0, Some(0), 0, false),
                ("a".into(), 1, Some(1), 0, false),
                ("b".into(), 0, Some(2), 1, true),
                ("b".into(), 1, Some(3), 1, false),
            ]
        );
        assert_eq!(c.open_sessions("cam1").unwrap(), ["b"]);
        let stats = c.camera_stats("cam1").unwrap();
        assert_eq!(
            (
                stats.bytes,
                stats.segments,
                stats.max_duration_ms,
                stats.last_lseq
            ),
            (40, 4, 2500, Some(3))
        );
        // The next segment of b continues the live sequence.
        let r = c
            .insert(&NewSegment {
                session: "b".into(),
                seq: 2,
                start_ms: 13_000,
                ..seg("b", 2, 0)
            })
            .unwrap();
        assert!(r.unwrap().live);
        assert_eq!(c.live_window("cam1", 1).unwrap()[0].lseq, Some(4));
    }
}
