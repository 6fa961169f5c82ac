//! Session folders: every ffmpeg run writes into a new `<data>/<camera>/<session>/` whose name is never reused,
//! so a restarted ffmpeg can never overwrite an earlier run's segments or playlist (the RFC's "naming things").

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Create a new, never-used session folder under `camera_dir` and return (session id, path). The id is the UTC
/// start time to the millisecond (sortable), with a numeric suffix if that folder already exists.
pub fn create(camera_dir: &Path, now: chrono::DateTime<chrono::Utc>) -> Result<(String, PathBuf)> {
    create_with(camera_dir, now, |_| {})
}

/// [`create`], calling `claim` with each name just before trying to create its folder (so that whoever must
/// know the new session's name knows it before the folder can be seen).
pub fn create_with(
    camera_dir: &Path,
    now: chrono::DateTime<chrono::Utc>,
    mut claim: impl FnMut(&str),
) -> Result<(String, PathBuf)> {
    std::fs::create_dir_all(camera_dir)
        .map_err(|e| Error::io("cannot create camera folder", camera_dir, e))?;
    let base = now.format("%Y%m%dT%H%M%S%3fZ").to_string();
    for n in 0..1000 {
        let id = if n == 0 {
            base.clone()
        } else {
            format!("{base}-{n}")
        };
        let path = camera_dir.join(&id);
        claim(&id);
        match std::fs::create_dir(&path) {
            Ok(()) => return Ok((id, path)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io("cannot create session folder", &path, e)),
        }
    }
    Err(Error::io(
        "no free session folder name",
        camera_dir,
        std::io::Error::from(std::io::ErrorKind::AlreadyExists),
    ))
}

/// When a session started (unix ms), read back from its id: the folder is created just before ffmpeg is
/// spawned, so this is the best estimate of the first frame's wall time.
pub fn started_ms(session: &str) -> Option<i64> {
    let stamp = session.split('-').next()?;
    let naive =
        chrono::NaiveDateTime::parse_from_str(stamp.strip_suffix('Z')?, "%Y%m%dT%H%M%S%3f").ok()?;
    Some(naive.and_utc().timestamp_millis())
}

/// The session folders of a camera, oldest first.
pub fn list(camera_dir: &Path) -> Vec<(String, PathBuf)> {
    let mut out: Vec<(String, PathBuf)> = std::fs::read_dir(camera_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| Some((e.file_name().to_str()?.to_string(), e.path())))
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_id_is_never_reused() {
        let dir = tempfile::tempdir().unwrap();
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-21T16:05:02.123Z")
            .unwrap()
            .to_utc();
        let (a, pa) = create(dir.path(), now).unwrap();
        let (b, pb) = create(dir.path(), now).unwrap();
        assert_eq!(a, "20261121T160502123Z");
        assert_eq!(b, "20261121T160502123Z-1");
        assert!(pa.is_dir() && pb.is_dir());
        assert_eq!(
            list(dir.path())
                .into_iter()
                .map(|(id, _)| id)
                .collect::<Vec<_>>(),
            [a, b]
        );
    }
}
