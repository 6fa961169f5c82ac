//! The crate's error type.

/// What can go wrong when talking to a supervisor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// `add_child` with an id that is already in use.
    #[error("a child with id {0:?} already exists")]
    DuplicateChild(String),
    /// No child has this id.
    #[error("no child with id {0:?}")]
    NoSuchChild(String),
    /// The child exists but is not a running supervisor (a worker, or a supervisor waiting to restart).
    #[error("child {0:?} is not a running supervisor")]
    NotASupervisor(String),
    /// The supervisor has stopped (shut down or escalated).
    #[error("supervisor {0:?} has stopped")]
    Stopped(String),
}
