//! The control plane's commands: their JSON form (documented as JSON Schema in `docs/control.md`), the
//! canonical form that is signed, HMAC-SHA256 signing and checking, and every check a command passes before it
//! is applied. A command that fails a check is refused with a [`Reason`] (a stable word, also a metric label)
//! and a detail in plain words that never contains the command's `private` part.

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;

/// The command format's version (`v`).
pub const VERSION: u64 = 1;
/// The largest command body accepted, in bytes.
pub const MAX_BYTES: usize = 64 * 1024;
/// The prefix of a signature: `hmac-sha256:<64 lowercase hex digits>`.
pub const SIGNATURE_PREFIX: &str = "hmac-sha256:";
/// The shortest key accepted, in bytes.
pub const MIN_KEY_BYTES: usize = 32;

/// Why a command was refused. The names are stable: replies, logs and `vigil_control_commands_total` use them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Larger than [`MAX_BYTES`].
    Oversize,
    /// Not a JSON object of the documented shape.
    Malformed,
    /// No signature.
    Unsigned,
    /// A signature that does not match the command (wrong key or changed content).
    Forged,
    /// Addressed to another node.
    WrongNode,
    /// A kind this node does not know.
    UnknownKind,
    /// `issued_at` outside the accepted window: a replay of an old command, or a badly wrong clock.
    Stale,
    /// Well-formed and signed, but its content cannot be applied (a bad camera id, URL, number…).
    Invalid,
    /// Contradicts the node's state (adding a camera that exists, removing one that does not).
    Conflict,
    /// Valid, but this node cannot do it (a role or job kind not available here).
    Unsupported,
    /// Applying it failed on this node (the catalog, the supervision tree); nothing was changed.
    Failed,
}

impl Reason {
    pub const ALL: [Reason; 11] = [
        Reason::Oversize,
        Reason::Malformed,
        Reason::Unsigned,
        Reason::Forged,
        Reason::WrongNode,
        Reason::UnknownKind,
        Reason::Stale,
        Reason::Invalid,
        Reason::Conflict,
        Reason::Unsupported,
        Reason::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Oversize => "oversize",
            Reason::Malformed => "malformed",
            Reason::Unsigned => "unsigned",
            Reason::Forged => "forged",
            Reason::WrongNode => "wrong_node",
            Reason::UnknownKind => "unknown_kind",
            Reason::Stale => "stale",
            Reason::Invalid => "invalid",
            Reason::Conflict => "conflict",
            Reason::Unsupported => "unsupported",
            Reason::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// A refused command: why, in a word and in plain words (never with a secret in them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: Reason,
    pub detail: String,
}

impl Refusal {
    pub fn new(reason: Reason, detail: impl Into<String>) -> Refusal {
        Refusal {
            reason,
            detail: detail.into(),
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.reason.as_str(), self.detail)
    }
}

/// What a command asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Kind {
    #[serde(rename = "node.configure")]
    NodeConfigure,
    #[serde(rename = "node.status")]
    NodeStatus,
    #[serde(rename = "camera.add")]
    CameraAdd,
    #[serde(rename = "camera.update")]
    CameraUpdate,
    #[serde(rename = "camera.remove")]
    CameraRemove,
    #[serde(rename = "job.start")]
    JobStart,
    #[serde(rename = "job.stop")]
    JobStop,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::NodeConfigure,
        Kind::NodeStatus,
        Kind::CameraAdd,
        Kind::CameraUpdate,
        Kind::CameraRemove,
        Kind::JobStart,
        Kind::JobStop,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::NodeConfigure => "node.configure",
            Kind::NodeStatus => "node.status",
            Kind::CameraAdd => "camera.add",
            Kind::CameraUpdate => "camera.update",
            Kind::CameraRemove => "camera.remove",
            Kind::JobStart => "job.start",
            Kind::JobStop => "job.stop",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// The `private` part: secrets (camera credentials), never logged, never echoed in a reply, an event or an
/// error. Only strings.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Private(BTreeMap<String, String>);

impl Private {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.0.insert(key.into(), value.into());
    }
    fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Object(
            self.0
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect(),
        )
    }
}

impl std::fmt::Debug for Private {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Private({:?} = ***)", self.0.keys().collect::<Vec<_>>())
    }
}

/// A command that passed every check up to applying it: well-formed, signed with our key, for this node, of
/// a known kind, issued within the window.
#[derive(Debug, Clone)]
pub struct Command {
    pub id: String,
    pub kind: Kind,
    pub node: String,
    /// When the sender issued it (ms since the epoch).
    pub issued_ms: i64,
    /// What the command says, in the open (camera ids, factory ids, roles, the rendition ladder).
    pub public: serde_json::Map<String, serde_json::Value>,
    pub private: Private,
}

/// A command before signing (what `vigil ctl` builds).
#[derive(Debug, Clone)]
pub struct Draft {
    pub id: String,
    pub kind: String,
    pub node: String,
    /// RFC 3339.
    pub issued_at: String,
    pub public: serde_json::Map<String, serde_json::Value>,
    pub private: Private,
}

impl Draft {
    fn unsigned(&self) -> serde_json::Value {
        serde_json::json!({
            "v": VERSION,
            "id": self.id,
            "kind": self.kind,
            "node": self.node,
            "issued_at": self.issued_at,
            "public": serde_json::Value::Object(self.public.clone()),
            "private": self.private.to_json(),
        })
    }

    /// The signed command, as JSON bytes.
    pub fn sign(&self, key: &Key) -> Vec<u8> {
        let mut v = self.unsigned();
        let sig = key.sign(&canonical(&v));
        v["signature"] = serde_json::Value::String(sig);
        serde_json::to_vec(&v).unwrap_or_default()
    }
}

/// The shared HMAC key (from `[control] key_file`).
#[derive(Clone)]
pub struct Key(Vec<u8>);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(***)")
    }
}

impl Key {
    /// A key from the bytes of a key file: surrounding whitespace is not part of it; at least
    /// [`MIN_KEY_BYTES`] bytes must remain.
    pub fn from_file_bytes(bytes: &[u8]) -> Result<Key, String> {
        let start = bytes.iter().position(|b| !b.is_ascii_whitespace());
        let end = bytes.iter().rposition(|b| !b.is_ascii_whitespace());
        let key = match (start, end) {
            (Some(s), Some(e)) => bytes[s..=e].to_vec(),
            _ => Vec::new(),
        };
        if key.len() < MIN_KEY_BYTES {
            return Err(format!(
                "the key is {} bytes long; at least {MIN_KEY_BYTES} are needed (make one with `vigil ctl keygen FILE`)",
                key.len()
            ));
        }
        Ok(Key(key))
    }

    /// Read a key file.
    pub fn load(path: &std::path::Path) -> Result<Key, String> {
        let bytes = std::fs::read(path)
            .map_err(|e| format!("cannot read the control key {}: {e}", path.display()))?;
        Key::from_file_bytes(&bytes).map_err(|e| format!("control key {}: {e}", path.display()))
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC takes keys of any length.
        Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC accepts any key length")
    }

    /// `hmac-sha256:<hex>` of `message`.
    pub fn sign(&self, message: &[u8]) -> String {
        let mut mac = self.mac();
        mac.update(message);
        let tag = mac.finalize().into_bytes();
        let mut s = String::with_capacity(SIGNATURE_PREFIX.len() + 64);
        s.push_str(SIGNATURE_PREFIX);
        for b in tag {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }

    /// Whether `signature` (`hmac-sha256:<hex>`) is ours over `message` (compared in constant time).
    pub fn verify(&self, message: &[u8], signature: &str) -> bool {
        let Some(hex) = signature.strip_prefix(SIGNATURE_PREFIX) else {
            return false;
        };
        let Some(tag) = from_hex(hex) else {
            return false;
        };
        let mut mac = self.mac();
        mac.update(message);
        mac.verify_slice(&tag).is_ok()
    }
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// The canonical form that is signed: the JSON value with every object's keys sorted (by their UTF-8 bytes),
/// no whitespace, strings escaped and numbers written as serde_json writes them (integers as they are).
pub fn canonical(v: &serde_json::Value) -> Vec<u8> {
    let mut out = Vec::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &serde_json::Value, out: &mut Vec<u8>) {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend(serde_json::to_vec(k).unwrap_or_default());
                out.push(b':');
                write_canonical(&map[k], out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        other => out.extend(serde_json::to_vec(other).unwrap_or_default()),
    }
}

/// A command id: 1 to 64 characters from letters, digits, `-`, `_`, `.`, `:`.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// What a received message said about itself before it was refused: enough to answer and to file it (the id
/// and kind when they could be read).
#[derive(Debug, Clone, Default)]
pub struct Envelope {
    pub id: Option<String>,
    pub kind: Option<String>,
}

/// Check a received message for `node` against `key`, at `now_ms`, accepting `issued_at` within `window_ms`
/// either side. Returns the command, or why not (with what could be read of it, for the reply).
pub fn check(
    body: &[u8],
    key: &Key,
    node: &str,
    now_ms: i64,
    window_ms: i64,
) -> Result<Command, (Envelope, Refusal)> {
    let mut env = Envelope::default();
    let refuse =
        |env: &Envelope, reason, detail: String| Err((env.clone(), Refusal::new(reason, detail)));
    if body.len() > MAX_BYTES {
        return refuse(
            &env,
            Reason::Oversize,
            format!("{} bytes; at most {MAX_BYTES}", body.len()),
        );
    }
    let value: serde_json::Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        // serde_json's syntax errors name a position, never the text.
        Err(e) => return refuse(&env, Reason::Malformed, format!("not JSON: {e}")),
    };
    let serde_json::Value::Object(mut obj) = value else {
        return refuse(&env, Reason::Malformed, "not a JSON object".into());
    };
    // Echoed in the reply and the log: only a well-formed id, and at most 40 characters of a kind.
    env.id = obj
        .get("id")
        .and_then(|v| v.as_str())
        .filter(|id| valid_id(id))
        .map(str::to_string);
    env.kind = obj
        .get("kind")
        .and_then(|v| v.as_str())
        .map(|k| k.chars().take(40).collect());
    const FIELDS: [&str; 8] = [
        "v",
        "id",
        "kind",
        "node",
        "issued_at",
        "public",
        "private",
        "signature",
    ];
    if let Some(extra) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        let shown: String = extra.chars().take(40).collect();
        return refuse(
            &env,
            Reason::Malformed,
            format!("unknown field {shown:?} (fields: {})", FIELDS.join(", ")),
        );
    }
    match obj.get("v").and_then(|v| v.as_u64()) {
        Some(VERSION) => {}
        Some(other) => {
            return refuse(
                &env,
                Reason::Malformed,
                format!("version {other}; this node speaks version {VERSION}"),
            );
        }
        None => {
            return refuse(
                &env,
                Reason::Malformed,
                format!("\"v\" must be the number {VERSION}"),
            );
        }
    }
    let text =
        |obj: &serde_json::Map<String, serde_json::Value>, f: &str| -> Result<String, String> {
            match obj.get(f) {
                Some(serde_json::Value::String(s)) => Ok(s.clone()),
                Some(_) => Err(format!("{f:?} must be a string")),
                None => Err(format!("{f:?} is missing")),
            }
        };
    let (id, kind, target, issued_at) = match (
        text(&obj, "id"),
        text(&obj, "kind"),
        text(&obj, "node"),
        text(&obj, "issued_at"),
    ) {
        (Ok(a), Ok(b), Ok(c), Ok(d)) => (a, b, c, d),
        (a, b, c, d) => {
            let why = [a.err(), b.err(), c.err(), d.err()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join("; ");
            return refuse(&env, Reason::Malformed, why);
        }
    };
    if !valid_id(&id) {
        env.id = None;
        return refuse(
            &env,
            Reason::Malformed,
            "\"id\" must be 1 to 64 characters from letters, digits, '-', '_', '.', ':'".into(),
        );
    }
    let public = match obj.get("public") {
        None => serde_json::Map::new(),
        Some(serde_json::Value::Object(m)) => m.clone(),
        Some(_) => {
            return refuse(
                &env,
                Reason::Malformed,
                "\"public\" must be an object".into(),
            );
        }
    };
    let private = match obj.get("private") {
        None => Private::default(),
        Some(serde_json::Value::Object(m)) => {
            let mut p = Private::default();
            for (k, v) in m {
                match v {
                    serde_json::Value::String(s) => p.insert(k.clone(), s.clone()),
                    // Never the value: it is a secret.
                    _ => {
                        let shown: String = k.chars().take(40).collect();
                        return refuse(
                            &env,
                            Reason::Malformed,
                            format!("private.{shown} must be a string"),
                        );
                    }
                }
            }
            p
        }
        Some(_) => {
            return refuse(
                &env,
                Reason::Malformed,
                "\"private\" must be an object".into(),
            );
        }
    };
    let signature = match obj.remove("signature") {
        None | Some(serde_json::Value::Null) => {
            return refuse(
                &env,
                Reason::Unsigned,
                format!("no \"signature\" ({SIGNATURE_PREFIX}<hex> over the canonical form)"),
            );
        }
        Some(serde_json::Value::String(s)) if s.is_empty() => {
            return refuse(&env, Reason::Unsigned, "an empty \"signature\"".into());
        }
        Some(serde_json::Value::String(s)) => s,
        Some(_) => {
            return refuse(
                &env,
                Reason::Malformed,
                "\"signature\" must be a string".into(),
            );
        }
    };
    if !key.verify(&canonical(&serde_json::Value::Object(obj)), &signature) {
        return refuse(
            &env,
            Reason::Forged,
            "the signature does not match this command under the fleet's key".into(),
        );
    }
    if target != node {
        let shown: String = target.chars().take(64).collect();
        return refuse(
            &env,
            Reason::WrongNode,
            format!("addressed to node {shown:?}, this is {node:?}"),
        );
    }
    let Some(kind) = Kind::parse(&kind) else {
        let shown: String = kind.chars().take(40).collect();
        return refuse(
            &env,
            Reason::UnknownKind,
            format!(
                "unknown kind {shown:?} (known: {})",
                Kind::ALL.map(Kind::as_str).join(", ")
            ),
        );
    };
    let issued_ms = match chrono::DateTime::parse_from_rfc3339(&issued_at) {
        Ok(t) => t.timestamp_millis(),
        Err(_) => {
            return refuse(
                &env,
                Reason::Malformed,
                "\"issued_at\" must be an RFC 3339 time, e.g. 2026-12-07T10:00:00Z".into(),
            );
        }
    };
    if (now_ms - issued_ms).abs() > window_ms {
        return refuse(
            &env,
            Reason::Stale,
            format!(
                "issued at {issued_at}, {} s from this node's clock; accepted within {} s",
                (now_ms - issued_ms) / 1000,
                window_ms / 1000
            ),
        );
    }
    Ok(Command {
        id,
        kind,
        node: target,
        issued_ms,
        public,
        private,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_796_000_000_000;

    fn key() -> Key {
        Key::from_file_bytes(b"0123456789abcdef0123456789abcdef\n").unwrap()
    }

    fn iso(ms: i64) -> String {
        chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    }

    fn draft(kind: &str) -> Draft {
        let mut private = Private::default();
        private.insert("password", "hunter2-secret");
        Draft {
            id: "c-1".into(),
            kind: kind.into(),
            node: "n1".into(),
            issued_at: iso(NOW - 1000),
            public: serde_json::json!({"camera": {"id": "cam9", "factory_id": "f1", "url": "rtsp://h/1"}})
                .as_object()
                .unwrap()
                .clone(),
            private,
        }
    }

    fn refusal(body: &[u8]) -> Refusal {
        check(body, &key(), "n1", NOW, 300_000).unwrap_err().1
    }

    #[test]
    fn the_canonical_form_sorts_keys_at_every_level_and_drops_whitespace() {
        let v: serde_json::Value = serde_json::from_str(
            r#"{ "b": 1, "a": {"z": [3, {"y": "é\n", "x": null}], "c": true} }"#,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(canonical(&v)).unwrap(),
            r#"{"a":{"c":true,"z":[3,{"x":null,"y":"é\n"}]},"b":1}"#
        );
    }

    #[test]
    fn a_signed_command_passes_and_keeps_its_parts() {
        let body = draft("camera.add").sign(&key());
        let c = check(&body, &key(), "n1", NOW, 300_000).unwrap();
        assert_eq!((c.id.as_str(), c.kind), ("c-1", Kind::CameraAdd));
        assert_eq!(c.private.get("password"), Some("hunter2-secret"));
        assert!(!format!("{c:?}").contains("hunter2"), "{c:?}");
        // Re-serialised with other key order and whitespace: the same canonical form, still valid.
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let pretty = serde_json::to_vec_pretty(&v).unwrap();
        assert!(check(&pretty, &key(), "n1", NOW, 300_000).is_ok());
    }

    #[test]
    fn every_bad_command_gets_its_reason_and_no_secret_in_the_detail() {
        let good = draft("camera.add");
        let signed = |d: &Draft| d.sign(&key());
        let mut v: serde_json::Value = serde_json::from_slice(&signed(&good)).unwrap();
        let mut cases: Vec<(Vec<u8>, Reason)> = vec![
            (vec![b' '; MAX_BYTES + 1], Reason::Oversize),
            (b"{not json".to_vec(), Reason::Malformed),
            (b"[1,2]".to_vec(), Reason::Malformed),
            (b"{}".to_vec(), Reason::Malformed),
        ];
        // Unsigned.
        let mut unsigned = v.clone();
        unsigned.as_object_mut().unwrap().remove("signature");
        cases.push((serde_json::to_vec(&unsigned).unwrap(), Reason::Unsigned));
        // Forged: content changed after signing; signed with another key; garbage signature.
        let mut changed = v.clone();
        changed["public"]["camera"]["id"] = "cam10".into();
        cases.push((serde_json::to_vec(&changed).unwrap(), Reason::Forged));
        let other = Key::from_file_bytes(&[7u8; 32]).unwrap();
        cases.push((good.sign(&other), Reason::Forged));
        let mut garbage = v.clone();
        garbage["signature"] = "hmac-sha256:zz".into();
        cases.push((serde_json::to_vec(&garbage).unwrap(), Reason::Forged));
        // Wrong node, unknown kind, stale, future, bad time, bad id, version, extra field, private non-string.
        let mut d = good.clone();
        d.node = "n2".into();
        cases.push((signed(&d), Reason::WrongNode));
        let mut d = good.clone();
        d.kind = "camera.explode".into();
        cases.push((signed(&d), Reason::UnknownKind));
        let mut d = good.clone();
        d.issued_at = iso(NOW - 301_000);
        cases.push((signed(&d), Reason::Stale));
        let mut d = good.clone();
        d.issued_at = iso(NOW + 301_000);
        cases.push((signed(&d), Reason::Stale));
        let mut d = good.clone();
        d.issued_at = "yesterday".into();
        cases.push((signed(&d), Reason::Malformed));
        let mut d = good.clone();
        d.id = "../../etc".into();
        cases.push((signed(&d), Reason::Malformed));
        v["v"] = 2.into();
        cases.push((serde_json::to_vec(&v).unwrap(), Reason::Malformed));
        v["v"] = 1.into();
        v["extra"] = 1.into();
        cases.push((serde_json::to_vec(&v).unwrap(), Reason::Malformed));
        let mut p = unsigned.clone();
        p["private"]["password"] = serde_json::json!({"hunter2-secret": 1});
        cases.push((serde_json::to_vec(&p).unwrap(), Reason::Malformed));
        for (body, want) in cases {
            let r = refusal(&body);
            assert_eq!(
                r.reason,
                want,
                "{r}: {}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            );
            assert!(!r.detail.contains("hunter2"), "{r}");
            assert!(!r.detail.is_empty());
        }
    }

    #[test]
    fn keys_shorter_than_32_bytes_are_refused_and_whitespace_is_not_key() {
        assert!(Key::from_file_bytes(b"short\n").is_err());
        assert!(Key::from_file_bytes(b"   \n").is_err());
        let a = Key::from_file_bytes(b"0123456789abcdef0123456789abcdef").unwrap();
        let b = key();
        assert_eq!(a.sign(b"m"), b.sign(b"m"));
        assert!(a.verify(b"m", &b.sign(b"m")));
        assert!(!a.verify(b"m2", &b.sign(b"m")));
        assert!(!a.verify(b"m", &b.sign(b"m").to_uppercase()));
        assert_eq!(format!("{a:?}"), "Key(***)");
    }
}
