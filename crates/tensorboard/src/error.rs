//! Errors of writing and reading event files.

use std::path::PathBuf;

/// What went wrong with an event file.
#[derive(Debug, thiserror::Error)]
pub enum TensorboardError {
    /// The file or its directory could not be created, written, synced or read.
    #[error("TensorBoard event file {path}: cannot {action}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A record's checksum does not match its bytes.
    #[error("TensorBoard event file {path} is corrupt at byte {offset}: {what}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Where the record starts.
        offset: u64,
        /// What does not match.
        what: String,
    },
    /// A record's bytes are not an `Event` message.
    #[error("TensorBoard event file {path}: the record at byte {offset} is not an Event: {source}")]
    Decode {
        /// The file.
        path: PathBuf,
        /// Where the record starts.
        offset: u64,
        /// What the protobuf decoder found.
        #[source]
        source: prost::DecodeError,
    },
}

/// Results of this crate.
pub type Result<T, E = TensorboardError> = std::result::Result<T, E>;
