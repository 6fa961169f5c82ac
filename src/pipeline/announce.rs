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
}
