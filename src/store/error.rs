use thiserror::Error;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error(
        "the database at {path} has schema version {found}, but this erlmcp knows only up to {known}; \
         it was written by a newer erlmcp. Run that version, or restore a backup made by this one. \
         The database was not modified."
    )]
    SchemaTooNew {
        path: String,
        found: i64,
        known: i64,
    },
    #[error("migrating the database schema failed: {0}")]
    Migration(String),
    #[error("cannot prepare the data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "another erlmcp process uses the data directory (lock {path}): a running daemon, or an \
         `erlmcp stdio` client; stop it (a restore through the daemon needs its clients stopped), \
         or go through the daemon's ops listener"
    )]
    Locked { path: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Fs(#[from] crate::fsx::FsError),
    #[error("the commit failed, nothing in this batch was stored: {0}")]
    CommitFailed(String),
    #[error("the store is shut down")]
    Closed,
    /// Local writes are refused (a standby keeps only what it replicates).
    #[error("read-only: {0}")]
    ReadOnly(String),
    /// A commit hook refused the group (replication: the standby did not
    /// acknowledge it); nothing of the group was committed.
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Invalid(String),
}

impl StoreError {
    /// The error each job of a failed group hears: refusals as they are,
    /// anything else as a failed commit.
    pub(crate) fn clone_refusal(&self) -> StoreError {
        match self {
            StoreError::ReadOnly(m) => StoreError::ReadOnly(m.clone()),
            StoreError::Refused(m) => StoreError::Refused(m.clone()),
            StoreError::CommitFailed(m) => StoreError::CommitFailed(m.clone()),
            other => StoreError::CommitFailed(other.to_string()),
        }
    }
}
