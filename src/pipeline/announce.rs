//! The pubsub announcement of a segment: versioned JSON that peers use to mirror it (see docs/pubsub.md).

use serde::{Deserialize, Serialize};

use crate::catalog::Segment;

/// Current announcement version.
pub const VERSION: u32 = 1;

/// `{v, filename, cid, factory_id, device_id, session, seq, start, end, prev_cid, node_id}`; times RFC 3339 UTC
/// with milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announcement {
    pub v: u32,
    pub filename: String,
    pub cid: String,
    pub factory_id: String,
    pub device_id: String,
    pub session: String,
    pub seq: i64,
    pub start: String,
    pub end: String,
    /// CID of the camera's previous segment: a mirror that does not have it knows it missed something.
    pub prev_cid: Option<String>,
    pub node_id: String,
    /// The segment's size in bytes (a mirror refuses content of another size).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<i64>,
    /// When the origin published it, unix ms (mirror lag figures).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published_ms: Option<i64>,
}

/// A checked announcement: the fields a mirror uses, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub start_ms: i64,
    pub end_ms: i64,
    /// The file name inside the session folder (`seg_00003.ts`).
    pub file: String,
}

/// Whether `s` looks like a CID (CIDv0 `Qm…` or a multibase CIDv1 in base32 `b…` / base58 `z…`). Content is
/// verified against it after the fetch; this only keeps garbage out of the API calls.
pub fn plausible_cid(s: &str) -> bool {
    let ok_len = (46..=128).contains(&s.len());
    let alnum = s.chars().all(|c| c.is_ascii_alphanumeric());
    ok_len && alnum && (s.starts_with("Qm") || s.starts_with('b') || s.starts_with('z'))
}

fn parse_time(name: &str, v: &str) -> Result<i64, String> {
    chrono::DateTime::parse_from_rfc3339(v)
        .map(|d| d.timestamp_millis())
        .map_err(|e| format!("{name} {v:?} is not an RFC 3339 time ({e})"))
}

fn plain_name(name: &str, v: &str) -> Result<(), String> {
    let ok = !v.is_empty()
        && v.len() <= 64
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !v.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(format!("{name} {v:?} is not a plain name"))
    }
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl Announcement {
    /// The announcement of a pinned segment.
    pub fn of(s: &Segment, prev_cid: Option<String>, node_id: &str) -> Option<Announcement> {
        Some(Announcement {
            v: VERSION,
            filename: s.path.clone(),
            cid: s.cid.clone()?,
            factory_id: s.factory.clone(),
            device_id: s.camera.clone(),
            session: s.session.clone(),
            seq: s.seq,
            start: rfc3339(s.start_ms),
            end: rfc3339(s.start_ms + s.duration_ms),
            prev_cid,
            node_id: node_id.to_string(),
            bytes: Some(s.bytes),
            published_ms: Some(chrono::Utc::now().timestamp_millis()),
        })
    }

    /// The values a mirror relies on, checked: names that are safe as path parts, a plausible CID, times
    /// that parse and make sense, a sane size and position. A message that fails is dropped with the reason.
    pub fn check(&self) -> Result<Checked, String> {
        plain_name("device_id", &self.device_id)?;
        plain_name("session", &self.session)?;
        plain_name("factory_id", &self.factory_id)?;
        plain_name("node_id", &self.node_id)?;
        if !plausible_cid(&self.cid) {
            return Err(format!("cid {:?} is not a CID", self.cid));
        }
        if let Some(p) = &self.prev_cid
            && !plausible_cid(p)
        {
            return Err(format!("prev_cid {p:?} is not a CID"));
        }
        if !(0..10_000_000).contains(&self.seq) {
            return Err(format!("seq {} is out of range", self.seq));
        }
        let start_ms = parse_time("start", &self.start)?;
        let end_ms = parse_time("end", &self.end)?;
        if end_ms < start_ms || end_ms - start_ms > 3_600_000 {
            return Err(format!(
                "end {} is not within an hour after start {}",
                self.end, self.start
            ));
        }
        if self.bytes.is_some_and(|b| b <= 0) {
            return Err(format!("bytes {:?} is not a size", self.bytes));
        }
        let file = self
            .filename
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string();
        if !(file.ends_with(".ts") && plain_name("filename", &file).is_ok()) {
            return Err(format!(
                "filename {:?} does not end in a plain .ts name",
                self.filename
            ));
        }
        Ok(Checked {
            start_ms,
            end_ms,
            file,
        })
    }

    /// Parse a peer's message: rejects other versions and malformed JSON with a reason.
    pub fn parse(data: &[u8]) -> Result<Announcement, String> {
        let v: serde_json::Value =
            serde_json::from_slice(data).map_err(|e| format!("not JSON: {e}"))?;
        match v.get("v").and_then(serde_json::Value::as_u64) {
            Some(n) if n == u64::from(VERSION) => {}
            Some(n) => {
                return Err(format!(
                    "announcement version {n} is not supported (this node speaks {VERSION})"
                ));
            }
            None => return Err("no version field \"v\"".into()),
        }
        serde_json::from_value(v).map_err(|e| format!("malformed announcement: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_round_trip_and_reject_other_versions() {
        let s = Segment {
            id: 7,
            camera: "cam1".into(),
            factory: "f".into(),
            session: "S".into(),
            seq: 3,
            path: "cam1/S/seg_00003.ts".into(),
            start_ms: 1_700_000_000_123,
            duration_ms: 2000,
            bytes: 10,
            first_in_session: false,
            cid: Some("bafkx".into()),
            lseq: Some(3),
            disc: 0,
            join: false,
        };
        let a = Announcement::of(&s, Some("bafkw".into()), "n1").unwrap();
        assert_eq!(a.start, "2023-11-14T22:13:20.123Z");
        assert_eq!(a.end, "2023-11-14T22:13:22.123Z");
        let json = serde_json::to_vec(&a).unwrap();
        assert_eq!(Announcement::parse(&json).unwrap(), a);
        assert!(
            Announcement::parse(br#"{"v":2,"cid":"x"}"#)
                .unwrap_err()
                .contains("version 2")
        );
        assert!(
            Announcement::parse(b"nope")
                .unwrap_err()
                .contains("not JSON")
        );
        assert!(
            Announcement::parse(br#"{"v":1,"cid":"x"}"#)
                .unwrap_err()
                .contains("malformed")
        );
        assert!(Announcement::of(&Segment { cid: None, ..s }, None, "n1").is_none());
    }

    #[test]
    fn checks_keep_paths_cids_times_and_sizes_sane() {
        let cid = format!("bafkrei{}", "a".repeat(52));
        let good = Announcement {
            v: VERSION,
            filename: "cam1/S1/seg_00003.ts".into(),
            cid: cid.clone(),
            factory_id: "f".into(),
            device_id: "cam1".into(),
            session: "S1".into(),
            seq: 3,
            start: "2026-11-22T10:00:00.000Z".into(),
            end: "2026-11-22T10:00:02.000Z".into(),
            prev_cid: Some(cid.clone()),
            node_id: "edge-01".into(),
            bytes: Some(188 * 100),
            published_ms: None,
        };
        let c = good.check().unwrap();
        assert_eq!(
            (c.file.as_str(), c.end_ms - c.start_ms),
            ("seg_00003.ts", 2000)
        );
        let bad = |f: &dyn Fn(&mut Announcement), why: &str| {
            let mut a = good.clone();
            f(&mut a);
            let e = a.check().unwrap_err();
            assert!(e.contains(why), "{e}");
        };
        bad(&|a| a.device_id = "../etc".into(), "device_id");
        bad(&|a| a.session = ".hidden".into(), "session");
        bad(&|a| a.cid = "QmShort".into(), "not a CID");
        bad(&|a| a.prev_cid = Some("x/y".into()), "prev_cid");
        bad(&|a| a.seq = -1, "seq");
        bad(&|a| a.start = "yesterday".into(), "RFC 3339");
        bad(&|a| a.end = "2026-11-22T09:00:00Z".into(), "within an hour");
        bad(&|a| a.bytes = Some(0), "bytes");
        bad(&|a| a.filename = "cam1/S1/seg.sh".into(), ".ts");
        bad(&|a| a.filename = "cam1/S1/..ts".into(), ".ts");
        assert!(plausible_cid(&cid) && plausible_cid(&format!("Qm{}", "x".repeat(44))));
        assert!(!plausible_cid(&format!("bafk{}/..", "a".repeat(50))));
    }
}
