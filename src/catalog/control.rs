//! The catalog's tables for the control plane: commands remembered by id with their outcome (idempotence
//! across redeliveries and restarts, pruned after the replay window), the camera state applied by commands,
//! and applied node settings. A command's outcome and its change are written in one transaction: after a
//! crash a command is either applied and remembered, or neither.

use rusqlite::{OptionalExtension, params};

use super::{Catalog, now_ms};
use crate::error::{Error, Result};
use crate::index::VariantDoc;

const VARIANT_COLUMNS: &str = "id, variant_of, source_cid, rendition, width, height, video_kbps, cid, factory_id, \
     device_id, session, seq, start_ms, end_ms, duration_ms, bytes, job_id, node_id";

fn row_to_variant(r: &rusqlite::Row<'_>) -> rusqlite::Result<VariantDoc> {
    Ok(VariantDoc {
        id: r.get(0)?,
        variant_of: r.get(1)?,
        source_cid: r.get(2)?,
        rendition: r.get(3)?,
        width: r.get(4)?,
        height: r.get(5)?,
        video_kbps: r.get(6)?,
        cid: r.get(7)?,
        factory_id: r.get(8)?,
        device_id: r.get(9)?,
        session: r.get(10)?,
        seq: r.get(11)?,
        start_ms: r.get(12)?,
        end_ms: r.get(13)?,
        duration_ms: r.get(14)?,
        bytes: r.get(15)?,
        job_id: r.get(16)?,
        node_id: r.get(17)?,
    })
}

/// How a command ended, as remembered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutcome {
    pub kind: String,
    pub ok: bool,
    pub reason: Option<String>,
    pub detail: Option<String>,
    /// The reply's `result` (JSON), when the command produced one.
    pub result: Option<String>,
}

/// A camera as commands left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlCamera {
    pub id: String,
    /// `active` (recorded) or `removed` (stopped; its footage stays).
    pub state: String,
    /// The camera's settings as JSON (credentials included).
    pub spec: String,
    pub command_id: String,
    pub at_ms: i64,
}

/// What applying a command changes besides remembering it.
#[derive(Debug, Clone, Default)]
pub struct ControlChange {
    /// `(camera id, state, spec)`.
    pub camera: Option<(String, String, String)>,
    /// `(key, value)` of `control_meta`.
    pub meta: Option<(String, String)>,
}

impl Catalog {
    /// The remembered outcome of command `id`, if it was seen.
    pub fn command_outcome(&self, id: &str) -> Result<Option<CommandOutcome>> {
        self.read(|c| {
            c.query_row(
                "SELECT kind, ok, reason, detail, result FROM control_commands WHERE id = ?1",
                [id],
                |r| {
                    Ok(CommandOutcome {
                        kind: r.get(0)?,
                        ok: r.get(1)?,
                        reason: r.get(2)?,
                        detail: r.get(3)?,
                        result: r.get(4)?,
                    })
                },
            )
            .optional()
        })
    }

    /// Remember command `id` with its outcome and apply `change`, in one transaction; forget commands received
    /// before `forget_before_ms` (they are outside the replay window: a resend is refused as stale anyway).
    /// Returns false (and changes nothing) when `id` was already remembered.
    pub fn record_command(
        &self,
        id: &str,
        outcome: &CommandOutcome,
        change: &ControlChange,
        forget_before_ms: i64,
    ) -> Result<bool> {
        let mut w = self.writer();
        let tx = w.transaction().map_err(Error::from_sql)?;
        let now = now_ms();
        let inserted = tx
            .execute(
                "INSERT OR IGNORE INTO control_commands (id, kind, received_ms, ok, reason, detail, result)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    id,
                    outcome.kind,
                    now,
                    outcome.ok,
                    outcome.reason,
                    outcome.detail,
                    outcome.result
                ],
            )
            .map_err(Error::from_sql)?;
        if inserted == 0 {
            return Ok(false);
        }
        if let Some((camera, state, spec)) = &change.camera {
            tx.execute(
                "INSERT INTO control_cameras (id, state, spec, command_id, at_ms) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (id) DO UPDATE SET state = ?2, spec = ?3, command_id = ?4, at_ms = ?5",
                params![camera, state, spec, id, now],
            )
            .map_err(Error::from_sql)?;
        }
        if let Some((key, value)) = &change.meta {
            tx.execute(
                "INSERT INTO control_meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = ?2",
                params![key, value],
            )
            .map_err(Error::from_sql)?;
        }
        // Bounded: at most the commands of one window are kept (indexed by received_ms).
        tx.execute(
            "DELETE FROM control_commands WHERE received_ms < ?1",
            [forget_before_ms],
        )
        .map_err(Error::from_sql)?;
        tx.commit().map_err(Error::from_sql)?;
        Ok(true)
    }

    /// Every camera commands have touched.
    pub fn control_cameras(&self) -> Result<Vec<ControlCamera>> {
        self.read(|c| {
            let mut st = c.prepare(
                "SELECT id, state, spec, command_id, at_ms FROM control_cameras ORDER BY id",
            )?;
            let rows = st.query_map([], |r| {
                Ok(ControlCamera {
                    id: r.get(0)?,
                    state: r.get(1)?,
                    spec: r.get(2)?,
                    command_id: r.get(3)?,
                    at_ms: r.get(4)?,
                })
            })?;
            rows.collect()
        })
    }

    /// An applied node setting.
    pub fn control_meta(&self, key: &str) -> Result<Option<String>> {
        self.read(|c| {
            c.query_row(
                "SELECT value FROM control_meta WHERE key = ?1",
                [key],
                |r| r.get(0),
            )
            .optional()
        })
    }

    /// Insert or replace a variant (the embedded index's upsert).
    pub fn put_variant(&self, d: &VariantDoc) -> Result<()> {
        self.put_variant_at(d, None)
    }

    /// Insert or replace a variant this node made, with its file (relative to the data folder).
    pub fn put_variant_at(&self, d: &VariantDoc, path: Option<&str>) -> Result<()> {
        self.writer()
            .execute(
                &format!(
                    "INSERT INTO variants ({VARIANT_COLUMNS}, path)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)
                     ON CONFLICT (id) DO UPDATE SET cid = ?8, bytes = ?16, path = COALESCE(?19, path)"
                ),
                params![
                    d.id,
                    d.variant_of,
                    d.source_cid,
                    d.rendition,
                    d.width,
                    d.height,
                    d.video_kbps,
                    d.cid,
                    d.factory_id,
                    d.device_id,
                    d.session,
                    d.seq,
                    d.start_ms,
                    d.end_ms,
                    d.duration_ms,
                    d.bytes,
                    d.job_id,
                    d.node_id,
                    path
                ],
            )
            .map_err(Error::from_sql)?;
        Ok(())
    }

    /// Variants of `device` whose source starts in `[from_ms, to_ms)`, in time order.
    pub fn variants(&self, device: &str, from_ms: i64, to_ms: i64) -> Result<Vec<VariantDoc>> {
        self.read(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {VARIANT_COLUMNS} FROM variants WHERE device_id = ?1 AND start_ms >= ?2 AND start_ms < ?3
                 ORDER BY start_ms, rendition"
            ))?;
            let rows = st.query_map(params![device, from_ms, to_ms], row_to_variant)?;
            rows.collect()
        })
    }

    /// Variants by CID, with their file on this node if it has one.
    pub fn variant_by_cid(&self, cid: &str) -> Result<Vec<VariantDoc>> {
        Ok(self
            .variant_files(cid)?
            .into_iter()
            .map(|(v, _)| v)
            .collect())
    }

    /// Variants by CID with their file (relative to the data folder) on this node, if any.
    pub fn variant_files(&self, cid: &str) -> Result<Vec<(VariantDoc, Option<String>)>> {
        self.read(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {VARIANT_COLUMNS}, path FROM variants WHERE cid = ?1 LIMIT 16"
            ))?;
            let rows = st.query_map([cid], |r| Ok((row_to_variant(r)?, r.get(18)?)))?;
            rows.collect()
        })
    }

    /// Up to `limit` variants whose source started before `before_ms`: (id, cid, file relative to the data
    /// folder), oldest first.
    pub fn old_variants(
        &self,
        before_ms: i64,
        limit: usize,
    ) -> Result<Vec<(String, String, Option<String>)>> {
        self.read(|c| {
            let mut st = c.prepare(
                "SELECT id, cid, path FROM variants INDEXED BY variants_start
                 WHERE start_ms < ?1 ORDER BY start_ms LIMIT ?2",
            )?;
            let rows = st.query_map(params![before_ms, limit as i64], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?;
            rows.collect()
        })
    }

    /// Forget these variants.
    pub fn delete_variants(&self, ids: &[String]) -> Result<()> {
        let mut w = self.writer();
        let tx = w.transaction().map_err(Error::from_sql)?;
        for id in ids {
            tx.execute("DELETE FROM variants WHERE id = ?1", [id])
                .map_err(Error::from_sql)?;
        }
        tx.commit().map_err(Error::from_sql)
    }

    /// The start of the newest source segment job `job` transcoded (where it resumes).
    pub fn job_resume_point(&self, job: &str) -> Result<Option<i64>> {
        self.read(|c| {
            c.query_row(
                "SELECT MAX(start_ms) FROM variants WHERE job_id = ?1",
                [job],
                |r| r.get(0),
            )
        })
    }

    /// How many commands are remembered (tests, status).
    pub fn remembered_commands(&self) -> Result<i64> {
        self.read(|c| c.query_row("SELECT COUNT(*) FROM control_commands", [], |r| r.get(0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(kind: &str) -> CommandOutcome {
        CommandOutcome {
            kind: kind.into(),
            ok: true,
            reason: None,
            detail: None,
            result: None,
        }
    }

    #[test]
    fn a_command_is_remembered_once_with_its_change_and_old_ones_are_forgotten() {
        let c = Catalog::in_memory().unwrap();
        let change = ControlChange {
            camera: Some(("cam9".into(), "active".into(), "{}".into())),
            meta: Some(("roles".into(), "[\"capture\"]".into())),
        };
        assert!(
            c.record_command("a", &ok("camera.add"), &change, 0)
                .unwrap()
        );
        let again = ControlChange {
            camera: Some(("cam9".into(), "removed".into(), "{}".into())),
            meta: None,
        };
        assert!(!c.record_command("a", &ok("camera.add"), &again, 0).unwrap());
        let cams = c.control_cameras().unwrap();
        assert_eq!(
            (cams[0].state.as_str(), cams[0].command_id.as_str()),
            ("active", "a")
        );
        assert_eq!(c.command_outcome("a").unwrap(), Some(ok("camera.add")));
        assert_eq!(
            c.control_meta("roles").unwrap().as_deref(),
            Some("[\"capture\"]")
        );
        // A later command prunes what was received before its cut-off.
        assert!(
            c.record_command(
                "b",
                &ok("node.status"),
                &ControlChange::default(),
                now_ms() + 1
            )
            .unwrap()
        );
        assert_eq!(c.command_outcome("a").unwrap(), None);
        assert_eq!(c.remembered_commands().unwrap(), 0);
        assert_eq!(
            c.control_cameras().unwrap().len(),
            1,
            "camera state is kept"
        );
    }

    #[test]
    fn old_variants_come_oldest_first_and_go() {
        let c = Catalog::in_memory().unwrap();
        for (i, start) in [3000, 1000, 2000].into_iter().enumerate() {
            c.put_variant_at(
                &VariantDoc {
                    id: format!("cam/s/{i}/low"),
                    variant_of: format!("cam/s/{i}"),
                    source_cid: "src".into(),
                    rendition: "low".into(),
                    width: 160,
                    height: 90,
                    video_kbps: 100,
                    cid: format!("cid{i}"),
                    factory_id: "f".into(),
                    device_id: "cam".into(),
                    session: "s".into(),
                    seq: i as i64,
                    start_ms: start,
                    end_ms: start + 1000,
                    duration_ms: 1000,
                    bytes: 10,
                    job_id: "j".into(),
                    node_id: "n".into(),
                },
                Some(&format!("variants/cam/j/low/s/seg_{i:05}.ts")),
            )
            .unwrap();
        }
        let old = c.old_variants(2500, 10).unwrap();
        assert_eq!(
            old.iter().map(|o| o.1.as_str()).collect::<Vec<_>>(),
            ["cid1", "cid2"]
        );
        assert_eq!(
            old[0].2.as_deref(),
            Some("variants/cam/j/low/s/seg_00001.ts")
        );
        c.delete_variants(&old.into_iter().map(|o| o.0).collect::<Vec<_>>())
            .unwrap();
        assert_eq!(c.variants("cam", 0, i64::MAX).unwrap().len(), 1);
        assert_eq!(c.job_resume_point("j").unwrap(), Some(3000));
    }
}
