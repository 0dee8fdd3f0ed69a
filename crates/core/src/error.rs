//! The error type of dacapo-core.

use std::path::PathBuf;

use crate::tensor::DType;

/// Everything that can go wrong in dacapo-core.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// A run, dataset or criterion name that cannot be used as a path component.
    #[error(
        "invalid {kind} name {name:?}: {reason}; use 1 to 128 characters of A-Z a-z 0-9 . _ - \
         not starting with '.' or '-'"
    )]
    InvalidName {
        /// What was being named ("run", "dataset", "criterion").
        kind: &'static str,
        /// The rejected name.
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// Training stats added out of order.
    #[error(
        "training stats for iteration {found} cannot follow the stored ones: the next iteration must be {expected}"
    )]
    IterationOrder {
        /// The iteration that was expected next.
        expected: u64,
        /// The iteration that was given.
        found: u64,
    },
    /// Validation scores for an iteration that already has scores.
    #[error("validation scores for iteration {0} are already present")]
    DuplicateIteration(u64),
    /// Validation scores that refer to an unknown dataset, parameter or criterion.
    #[error("validation scores of iteration {iteration} name unknown {what} {name:?}")]
    UnknownScoreKey {
        /// The iteration of the offending scores.
        iteration: u64,
        /// "dataset", "parameter" or "criterion".
        what: &'static str,
        /// The unknown name.
        name: String,
    },
    /// A tensor whose byte length does not match its shape and dtype.
    #[error("tensor of shape {shape:?} and dtype {dtype:?} needs {expected} bytes, found {found}")]
    TensorSize {
        /// Declared shape.
        shape: Vec<usize>,
        /// Declared dtype.
        dtype: DType,
        /// Bytes the shape and dtype need.
        expected: usize,
        /// Bytes present.
        found: usize,
    },
    /// A tensor read as the wrong dtype.
    #[error("expected a tensor of dtype {expected:?}, found {found:?}")]
    TensorDType {
        /// The dtype asked for.
        expected: DType,
        /// The dtype present.
        found: DType,
    },
    /// A config file that cannot be read.
    #[error("cannot read run config {path}: {source}")]
    ConfigIo {
        /// The config file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A config file that is not valid or has unknown/missing keys.
    #[error("invalid run config {path}: {message}")]
    Config {
        /// The config file.
        path: PathBuf,
        /// What is wrong and where.
        message: String,
    },
    /// A config value that parses but cannot work.
    #[error("invalid run config {path}: `{field}` {message}")]
    ConfigValue {
        /// The config file (or "<memory>").
        path: PathBuf,
        /// The dotted key, e.g. `run.validation_interval`.
        field: String,
        /// What is wrong and what to do.
        message: String,
    },
}
