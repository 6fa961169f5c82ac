//! The embedded catalog: a SQLite journal (WAL) of every finished segment and how far it got down the
//! distribution pipeline. It is the appliance's only state; playlists and pipeline stages are built from it.
//!
//! Inserts are idempotent (unique on camera, session, seq), so a watcher that sees a segment twice, or a
//! rescan after a crash, never duplicates a row.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, params};

use crate::error::{Error, Result};

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
];

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

    /// SQL condition for "ready for this stage and not done".
    fn pending(self) -> &'static str {
        match self {
            Stage::Pin => "pinned_at_ms IS NULL",
            Stage::Index => "pinned_at_ms IS NOT NULL AND indexed_at_ms IS NULL",
            Stage::Publish => "indexed_at_ms IS NOT NULL AND published_at_ms IS NULL",
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
}

/// A segment with how far it got down the pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracked {
    pub segment: Segment,
    pub published: bool,
    pub set_aside: Option<String>,
}

/// Where a window of a camera's segments sits in the camera's whole sequence.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Position {
    /// Segments before the window.
    pub before: u64,
    /// Sessions that have segments before the window.
    pub sessions_before: u64,
    /// Session of the segment just before the window.
    pub prev_session: Option<String>,
}

/// The catalog. Cheap to share behind an `Arc`; calls are short and synchronous.
#[derive(Debug)]
pub struct Catalog {
    conn: Mutex<Connection>,
}

const COLUMNS: &str =
    "id, camera, factory, session, seq, path, start_ms, duration_ms, bytes, first_in_session, cid";

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
    })
}

impl Catalog {
    /// Open (creating if needed) the catalog at `path`, in WAL mode, and apply pending migrations.
    pub fn open(path: &Path) -> Result<Catalog> {
        let conn = Connection::open(path).map_err(|e| Error::catalog(path, e))?;
        Self::init(conn).map_err(|e| Error::catalog(path, e))
    }

    /// An in-memory catalog (tests).
    pub fn in_memory() -> Result<Catalog> {
        let conn =
            Connection::open_in_memory().map_err(|e| Error::catalog(Path::new(":memory:"), e))?;
        Self::init(conn).map_err(|e| Error::catalog(Path::new(":memory:"), e))
    }

    fn init(conn: Connection) -> rusqlite::Result<Catalog> {
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: a segment the watcher reported is durable even across a power cut.
        conn.pragma_update(None, "synchronous", "FULL")?;
        let version: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
            conn.execute_batch(&format!(
                "BEGIN; {sql}; PRAGMA user_version = {}; COMMIT;",
                i + 1
            ))?;
        }
        Ok(Catalog {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Record a finished segment. Returns its id if it was new, `None` if it was already catalogued.
    pub fn insert(&self, s: &NewSegment) -> Result<Option<i64>> {
        let conn = self.conn();
        let n = conn
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
                    chrono::Utc::now().timestamp_millis()
                ],
            )
            .map_err(Error::from_sql)?;
        Ok((n == 1).then(|| conn.last_insert_rowid()))
    }

    /// The sequence numbers already catalogued for one session.
    pub fn seqs(&self, camera: &str, session: &str) -> Result<std::collections::HashSet<i64>> {
        let conn = self.conn();
        let mut st = conn
            .prepare_cached("SELECT seq FROM segments WHERE camera = ?1 AND session = ?2")
            .map_err(Error::from_sql)?;
        let rows = st
            .query_map(params![camera, session], |r| r.get(0))
            .map_err(Error::from_sql)?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(Error::from_sql)
    }

    /// Up to `limit` segments waiting for `stage`, oldest first (segments set aside with an error are skipped).
    pub fn pending(&self, stage: Stage, limit: usize) -> Result<Vec<Segment>> {
        let conn = self.conn();
        let mut st = conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM segments WHERE {} AND pipeline_error IS NULL ORDER BY id LIMIT ?1",
                stage.pending()
            ))
            .map_err(Error::from_sql)?;
        st.query_map([limit as i64], row_to_segment)
            .map_err(Error::from_sql)?
            .collect::<rusqlite::Result<_>>()
            .map_err(Error::from_sql)
    }

    /// Record that `stage` is done for segment `id` (with the CID, for the pin stage).
    pub fn mark(&self, stage: Stage, id: i64, cid: Option<&str>) -> Result<()> {
        let now = chrono::Utc::now().timestamp_millis();
        let conn = self.conn();
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
            Err(Error::index(
                "mark",
                format!("segment {id} is not in the catalog"),
            ))
        }
    }

    /// Set a segment aside: the pipeline cannot process it (the reason is kept and shown).
    pub fn set_aside(&self, id: i64, reason: &str) -> Result<()> {
        self.conn()
            .execute(
                "UPDATE segments SET pipeline_error = ?2 WHERE id = ?1",
                params![id, reason],
            )
            .map_err(Error::from_sql)?;
        Ok(())
    }

    /// Segments waiting at each stage.
    pub fn backlog(&self) -> Result<Backlog> {
        self.conn()
            .query_row(
                "SELECT
                   COALESCE(SUM(pipeline_error IS NULL AND pinned_at_ms IS NULL), 0),
                   COALESCE(SUM(pipeline_error IS NULL AND pinned_at_ms IS NOT NULL AND indexed_at_ms IS NULL), 0),
                   COALESCE(SUM(pipeline_error IS NULL AND indexed_at_ms IS NOT NULL AND published_at_ms IS NULL), 0),
                   COALESCE(SUM(pipeline_error IS NOT NULL), 0)
                 FROM segments",
                [],
                |r| {
                    Ok(Backlog {
                        pin: r.get::<_, i64>(0)? as u64,
                        index: r.get::<_, i64>(1)? as u64,
                        publish: r.get::<_, i64>(2)? as u64,
                        failed: r.get::<_, i64>(3)? as u64,
                    })
                },
            )
            .map_err(Error::from_sql)
    }

    /// The CID of the segment of the same camera just before `s` in time, if it has one.
    pub fn prev_cid(&self, s: &Segment) -> Result<Option<String>> {
        self.conn()
            .query_row(
                "SELECT cid FROM segments WHERE camera = ?1
                   AND (start_ms < ?2 OR (start_ms = ?2 AND (session < ?3 OR (session = ?3 AND seq < ?4))))
                 ORDER BY start_ms DESC, session DESC, seq DESC LIMIT 1",
                params![s.camera, s.start_ms, s.session, s.seq],
                |r| r.get::<_, Option<String>>(0),
            )
            .optional()
            .map(Option::flatten)
            .map_err(Error::from_sql)
    }

    /// Milliseconds from "recorded" to "published" of every published segment (latency figures).
    pub fn publish_latencies_ms(&self) -> Result<Vec<i64>> {
        let conn = self.conn();
        let mut st = conn
            .prepare("SELECT published_at_ms - recorded_at_ms FROM segments WHERE published_at_ms IS NOT NULL")
            .map_err(Error::from_sql)?;
        st.query_map([], |r| r.get(0))
            .map_err(Error::from_sql)?
            .collect::<rusqlite::Result<_>>()
            .map_err(Error::from_sql)
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
        let col = if by_factory { "factory" } else { "camera" };
        let conn = self.conn();
        let mut st = conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM segments WHERE {col} = ?1 AND start_ms >= ?2 AND start_ms < ?3
                   AND indexed_at_ms IS NOT NULL ORDER BY start_ms, camera, session, seq"
            ))
            .map_err(Error::from_sql)?;
        st.query_map(params![key, from_ms, to_ms], row_to_segment)
            .map_err(Error::from_sql)?
            .collect::<rusqlite::Result<_>>()
            .map_err(Error::from_sql)
    }

    /// Mark a finished session as fully catalogued, so later rescans skip it.
    pub fn close_session(&self, camera: &str, session: &str) -> Result<()> {
        self.conn()
            .execute(
                "INSERT OR IGNORE INTO closed_sessions (camera, session, closed_at_ms) VALUES (?1, ?2, ?3)",
                params![camera, session, chrono::Utc::now().timestamp_millis()],
            )
            .map_err(Error::from_sql)?;
        Ok(())
    }

    /// The sessions of a camera already marked closed.
    pub fn closed_sessions(&self, camera: &str) -> Result<std::collections::HashSet<String>> {
        let conn = self.conn();
        let mut st = conn
            .prepare_cached("SELECT session FROM closed_sessions WHERE camera = ?1")
            .map_err(Error::from_sql)?;
        st.query_map([camera], |r| r.get(0))
            .map_err(Error::from_sql)?
            .collect::<rusqlite::Result<_>>()
            .map_err(Error::from_sql)
    }

    /// One segment of a camera by id.
    pub fn segment(&self, camera: &str, id: i64) -> Result<Option<Segment>> {
        let conn = self.conn();
        conn.query_row(
            &format!("SELECT {COLUMNS} FROM segments WHERE id = ?1 AND camera = ?2"),
            params![id, camera],
            row_to_segment,
        )
        .optional()
        .map_err(Error::from_sql)
    }

    /// The last `n` segments of a camera, oldest first.
    pub fn last(&self, camera: &str, n: usize) -> Result<Vec<Segment>> {
        let conn = self.conn();
        let mut st = conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM segments WHERE camera = ?1 ORDER BY start_ms DESC, session DESC, seq DESC LIMIT ?2"
            ))
            .map_err(Error::from_sql)?;
        let mut rows: Vec<Segment> = st
            .query_map(params![camera, n as i64], row_to_segment)
            .map_err(Error::from_sql)?
            .collect::<rusqlite::Result<_>>()
            .map_err(Error::from_sql)?;
        rows.reverse();
        Ok(rows)
    }

    /// Segments of a camera that start in `[from_ms, to_ms)`, oldest first.
    pub fn range(&self, camera: &str, from_ms: i64, to_ms: i64) -> Result<Vec<Segment>> {
        let conn = self.conn();
        let mut st = conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM segments WHERE camera = ?1 AND start_ms >= ?2 AND start_ms < ?3
                 ORDER BY start_ms, session, seq"
            ))
            .map_err(Error::from_sql)?;
        st.query_map(params![camera, from_ms, to_ms], row_to_segment)
            .map_err(Error::from_sql)?
            .collect::<rusqlite::Result<_>>()
            .map_err(Error::from_sql)
    }

    /// Where a window whose first segment is `first` sits in the camera's whole sequence.
    pub fn position(&self, first: &Segment) -> Result<Position> {
        let conn = self.conn();
        let (before, sessions_before): (i64, i64) = conn
            .query_row(
                "SELECT COUNT(*), COUNT(DISTINCT session) FROM segments
                 WHERE camera = ?1 AND (start_ms < ?2 OR (start_ms = ?2 AND (session < ?3 OR (session = ?3 AND seq < ?4))))",
                params![first.camera, first.start_ms, first.session, first.seq],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(Error::from_sql)?;
        let prev_session = conn
            .query_row(
                "SELECT session FROM segments
                 WHERE camera = ?1 AND (start_ms < ?2 OR (start_ms = ?2 AND (session < ?3 OR (session = ?3 AND seq < ?4))))
                 ORDER BY start_ms DESC, session DESC, seq DESC LIMIT 1",
                params![first.camera, first.start_ms, first.session, first.seq],
                |r| r.get(0),
            )
            .optional()
            .map_err(Error::from_sql)?;
        Ok(Position {
            before: before as u64,
            sessions_before: sessions_before as u64,
            prev_session,
        })
    }

    /// Number of segments of a camera (all cameras with `None`).
    pub fn count(&self, camera: Option<&str>) -> Result<u64> {
        let conn = self.conn();
        let n: i64 = match camera {
            Some(c) => conn.query_row(
                "SELECT COUNT(*) FROM segments WHERE camera = ?1",
                [c],
                |r| r.get(0),
            ),
            None => conn.query_row("SELECT COUNT(*) FROM segments", [], |r| r.get(0)),
        }
        .map_err(Error::from_sql)?;
        Ok(n as u64)
    }

    /// Every segment of every camera with its pipeline state, in catalogue order (tests and tools).
    pub fn all_cameras(&self) -> Result<Vec<Tracked>> {
        let conn = self.conn();
        let mut st = conn
            .prepare(&format!("SELECT {COLUMNS}, published_at_ms IS NOT NULL, pipeline_error FROM segments ORDER BY id"))
            .map_err(Error::from_sql)?;
        st.query_map([], |r| {
            Ok(Tracked {
                segment: row_to_segment(r)?,
                published: r.get(11)?,
                set_aside: r.get(12)?,
            })
        })
        .map_err(Error::from_sql)?
        .collect::<rusqlite::Result<_>>()
        .map_err(Error::from_sql)
    }

    /// Every segment of a camera, oldest first (tests and tools; playlists use windows).
    pub fn all(&self, camera: &str) -> Result<Vec<Segment>> {
        self.range(camera, i64::MIN, i64::MAX)
    }
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

    #[test]
    fn inserts_are_idempotent_and_windows_know_their_position() {
        let c = Catalog::in_memory().unwrap();
        let a = c.insert(&seg("s1", 0, 0)).unwrap();
        assert!(a.is_some());
        assert_eq!(
            c.insert(&seg("s1", 0, 0)).unwrap(),
            None,
            "duplicate ignored"
        );
        c.insert(&seg("s1", 1, 2000)).unwrap();
        c.insert(&seg("s2", 0, 5000)).unwrap();
        c.insert(&seg("s2", 1, 7000)).unwrap();
        // Out of order insert (an orphan catalogued late) still sorts by time.
        c.insert(&seg("s1", 2, 4000)).unwrap();
        assert_eq!(c.count(Some("cam1")).unwrap(), 5);
        let last = c.last("cam1", 2).unwrap();
        assert_eq!(
            last.iter()
                .map(|s| (s.session.as_str(), s.seq))
                .collect::<Vec<_>>(),
            [("s2", 0), ("s2", 1)]
        );
        let pos = c.position(&last[0]).unwrap();
        assert_eq!(
            pos,
            Position {
                before: 3,
                sessions_before: 1,
                prev_session: Some("s1".into())
            }
        );
        let pos = c.position(&c.all("cam1").unwrap()[0]).unwrap();
        assert_eq!(pos, Position::default());
        assert_eq!(c.range("cam1", 2000, 5000).unwrap().len(), 2);
        assert_eq!(c.seqs("cam1", "s1").unwrap().len(), 3);
        let id = last[1].id;
        assert_eq!(c.segment("cam1", id).unwrap().unwrap().seq, 1);
        assert_eq!(
            c.segment("cam2", id).unwrap(),
            None,
            "ids are scoped to their camera"
        );
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
        assert!(c.mark(Stage::Pin, 9999, Some("x")).is_err());
    }

    #[test]
    fn reopening_keeps_rows_and_does_not_rerun_migrations() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.sqlite");
        {
            let c = Catalog::open(&path).unwrap();
            c.insert(&seg("s1", 0, 0)).unwrap();
        }
        let c = Catalog::open(&path).unwrap();
        assert_eq!(c.count(None).unwrap(), 1);
        c.close_session("cam1", "s1").unwrap();
        c.close_session("cam1", "s1").unwrap();
        assert_eq!(
            c.closed_sessions("cam1")
                .unwrap()
                .into_iter()
                .collect::<Vec<_>>(),
            ["s1"]
        );
        assert!(c.closed_sessions("cam2").unwrap().is_empty());
    }
}
