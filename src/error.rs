//! The `vigil` crate's error type: one enum, one variant per kind of failure, each message saying what went
//! wrong and where.

use std::path::PathBuf;

/// One problem found while validating a config: the field (as a TOML path) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Everything that can fail in vigil.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read config {path}: {source}")]
    ConfigRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config {path} is not valid TOML for vigil:\n{message}")]
    ConfigParse { path: PathBuf, message: String },
    #[error("config {path} has {} problem(s):\n{}", problems.len(), problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    ConfigInvalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
    #[error("cannot listen for HTTP on {addr}: {source}")]
    HttpBind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("supervision tree stopped: {0}")]
    TreeFailed(String),
    #[error("catalog {path}: {source}")]
    Catalog {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("catalog query failed: {0}")]
    Sql(#[source] rusqlite::Error),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("IPFS API unreachable during {op}: {message}")]
    IpfsUnreachable { op: &'static str, message: String },
    #[error("IPFS API refused {op} (HTTP {status}): {message}")]
    IpfsApi {
        op: &'static str,
        status: u16,
        message: String,
    },
    #[error("IPFS {op}: {message}")]
    Ipfs { op: &'static str, message: String },
    #[error("IPFS Cluster {op} failed{}: {message}", status.map(|s| format!(" (HTTP {s})")).unwrap_or_default())]
    Cluster {
        op: &'static str,
        status: Option<u16>,
        message: String,
    },
    #[error("index {op} failed: {message}")]
    Index { op: &'static str, message: String },
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("segment {0} is not in the catalog")]
    NotInCatalog(i64),
    /// A change that contradicts what is stored (a user that already exists, a token for no user).
    #[error("{0}")]
    Conflict(String),
    /// Input that cannot be used as it is (a user name, a password, a scope).
    #[error("{0}")]
    Invalid(String),
    /// A peer's segment or announcement that a mirror will not keep (`reason`: the counter it goes to).
    #[error("{message}")]
    Rejected {
        reason: &'static str,
        message: String,
    },
    /// The control plane's broker (AMQP): connecting, declaring, publishing, consuming.
    #[error("AMQP {op}: {message}")]
    Control { op: &'static str, message: String },
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub(crate) fn catalog(path: &std::path::Path, source: rusqlite::Error) -> Error {
        Error::Catalog {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn from_sql(source: rusqlite::Error) -> Error {
        Error::Sql(source)
    }

    pub(crate) fn ipfs(op: &'static str, message: impl Into<String>) -> Error {
        Error::Ipfs {
            op,
            message: message.into(),
        }
    }

    pub(crate) fn ipfs_unreachable(op: &'static str, e: &reqwest::Error) -> Error {
        let kind = if e.is_timeout() {
            "timed out"
        } else if e.is_connect() {
            "cannot connect"
        } else {
            "transport error"
        };
        Error::IpfsUnreachable {
            op,
            message: format!("{kind}: {e}"),
        }
    }

    pub(crate) fn cluster(
        op: &'static str,
        status: Option<u16>,
        message: impl Into<String>,
    ) -> Error {
        Error::Cluster {
            op,
            status,
            message: message.into(),
        }
    }

    pub(crate) fn index(op: &'static str, message: impl Into<String>) -> Error {
        Error::Index {
            op,
            message: message.into(),
        }
    }

    /// Worth retrying later (a dependency is down or overloaded, the disk is full or busy), as opposed to a
    /// request that will never succeed as it is. The one place where vigil classifies failures: every retry
    /// loop asks this, so one bad row is set aside while an outage only pauses.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::IpfsUnreachable { .. } | Error::Index { .. } => true,
            Error::Sql(e) | Error::Catalog { source: e, .. } => sql_is_transient(e),
            Error::Io { source, .. } | Error::Spawn { source, .. } => io_is_transient(source),
            // 401/403: wrong or missing credentials, fixed by the operator: keep the segments waiting.
            Error::IpfsApi { status, .. } => *status >= 500 || matches!(status, 401 | 403 | 429),
            Error::Cluster { status, .. } => {
                status.is_none_or(|s| s >= 500 || matches!(s, 401 | 403 | 429))
            }
            _ => false,
        }
    }

    pub(crate) fn io(what: &'static str, path: &std::path::Path, source: std::io::Error) -> Error {
        Error::Io {
            what,
            path: path.to_path_buf(),
            source,
        }
    }

    /// The validation problems, if this is a config validation error.
    pub fn problems(&self) -> &[Problem] {
        match self {
            Error::ConfigInvalid { problems, .. } => problems,
            _ => &[],
        }
    }
}

/// A catalog error that goes away by itself: another writer holds the lock, the disk is full or failing for a
/// moment. Constraint violations, corruption or a bad query are not.
pub fn sql_is_transient(e: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode::*;
    match e.sqlite_error_code() {
        Some(DatabaseBusy | DatabaseLocked | DiskFull | SystemIoFailure | OutOfMemory) => true,
        Some(_) => false,
        None => false,
    }
}

/// A file-system error that may go away by itself: a full disk (retention frees space), an interrupted or
/// busy call, a temporary shortage of file descriptors.
pub fn io_is_transient(e: &std::io::Error) -> bool {
    use nix::libc;
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        StorageFull | QuotaExceeded | Interrupted | WouldBlock | TimedOut | ResourceBusy
    ) || matches!(e.raw_os_error(), Some(code) if [libc::ENOSPC, libc::EMFILE, libc::ENFILE, libc::EIO].contains(&code))
}

/// Result with vigil's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_and_permanent_failures_are_told_apart() {
        let sql = |code| {
            Error::Sql(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(code),
                None,
            ))
        };
        assert!(
            sql(rusqlite::ffi::SQLITE_BUSY).is_transient(),
            "another writer holds the lock"
        );
        assert!(
            sql(rusqlite::ffi::SQLITE_FULL).is_transient(),
            "the disk is full"
        );
        assert!(!sql(rusqlite::ffi::SQLITE_CONSTRAINT).is_transient());
        assert!(!sql(rusqlite::ffi::SQLITE_CORRUPT).is_transient());
        let io = |e: std::io::Error| Error::io("write", std::path::Path::new("/x"), e);
        assert!(io(std::io::Error::from_raw_os_error(nix::libc::ENOSPC)).is_transient());
        assert!(!io(std::io::Error::from(std::io::ErrorKind::NotFound)).is_transient());
        assert!(!io(std::io::Error::from(std::io::ErrorKind::PermissionDenied)).is_transient());
        assert!(Error::index("upsert", "down").is_transient());
        assert!(!Error::NotInCatalog(3).is_transient());
        assert!(
            Error::IpfsApi {
                op: "add",
                status: 503,
                message: String::new()
            }
            .is_transient()
        );
        assert!(
            !Error::IpfsApi {
                op: "add",
                status: 400,
                message: String::new()
            }
            .is_transient()
        );
    }
}
