//! The error type of dacapo-store.

use std::path::{Path, PathBuf};

use dacapo_core::CoreError;

/// Everything that can go wrong in a weights or stats store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An invalid name, out-of-order stats or another data-model error from dacapo-core.
    #[error(transparent)]
    Core(#[from] CoreError),
    /// A file system operation failed.
    #[error(
        "cannot {op} {path}: {source}; check that the store root exists, is writable and has free space"
    )]
    Io {
        /// What was being done ("create", "read", "fsync", ...).
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Something asked for does not exist.
    #[error("{what} not found at {path}")]
    NotFound {
        /// What was asked for, e.g. "checkpoint 500 of run `r`" (with a hint what to do).
        what: String,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// A file that exists but fails a check.
    #[error(
        "corrupt file {path}: {check}; the file was damaged or written by something else: \
         remove it (or its checkpoint directory) to recover"
    )]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// Which check failed, with the expected and found values.
        check: String,
    },
    /// A checkpoint that already exists with different content.
    #[error(
        "checkpoint {iteration} of run `{run}` already exists at {path} with different content; \
         remove it first or store another iteration"
    )]
    Exists {
        /// The run.
        run: String,
        /// The iteration.
        iteration: u64,
        /// The existing checkpoint directory.
        path: PathBuf,
    },
    /// The run is locked by another writer.
    #[error(
        "run is locked by another writer ({holder}) through {path}; stop that trainer first \
         (the lock is released when its process exits)"
    )]
    Locked {
        /// Lock file.
        path: PathBuf,
        /// Who holds it (pid, host, start time as written by the holder).
        holder: String,
    },
    /// An argument that cannot be stored.
    #[error("invalid input: {0}")]
    Invalid(String),
    /// A remote store (a database or an object store) failed or returned unusable data.
    #[error("{store}: cannot {op}: {source}")]
    Remote {
        /// The store, as a URL without credentials (`postgres://host:5432/db`, `s3://bucket/prefix`).
        store: String,
        /// What was being done, naming the run (e.g. "store the training stats of run `r`").
        op: String,
        /// The underlying error; its message says what to check.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Result alias of dacapo-store.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Builds a closure that wraps an I/O error with the operation and path.
pub(crate) fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Io { op, path, source }
}

/// A corruption error for `path` where `check` failed.
pub(crate) fn corrupt(path: &Path, check: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        path: path.to_path_buf(),
        check: check.into(),
    }
}
