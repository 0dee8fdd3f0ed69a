//! The one error type of dacapo-data.

use std::path::{Path, PathBuf};

/// Everything that can go wrong while opening, reading, sampling or writing data.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The zarr container directory does not exist.
    #[error(
        "zarr container {container} does not exist: check the `zarr` path of the dataset \
         (relative paths are relative to the working directory), or configure \
         [datasplit.synthetic] to generate it"
    )]
    MissingContainer {
        /// The container path.
        container: PathBuf,
    },
    /// No array at this path inside an existing container.
    #[error("no array {array:?} in zarr container {container}; {available}")]
    MissingArray {
        /// The container path.
        container: PathBuf,
        /// The array path inside the container.
        array: String,
        /// The arrays that do exist, as a human-readable hint.
        available: String,
    },
    /// The array exists but its dtype cannot be used for this purpose.
    #[error("array {array:?} in zarr container {container} has dtype {found}; {expected}")]
    Dtype {
        /// The container path.
        container: PathBuf,
        /// The array path inside the container.
        array: String,
        /// The dtype found on disk.
        found: String,
        /// What would work instead.
        expected: String,
    },
    /// The array's metadata, shape or content cannot work.
    #[error("array {array:?} in zarr container {container}: {message}")]
    Array {
        /// The container path.
        container: PathBuf,
        /// The array path inside the container.
        array: String,
        /// What is wrong and what to do.
        message: String,
    },
    /// zarrs failed to open, read or write the array.
    #[error("array {array:?} in zarr container {container}: {action} failed: {message}")]
    Zarr {
        /// The container path.
        container: PathBuf,
        /// The array path inside the container.
        array: String,
        /// What was attempted (open, read, write).
        action: &'static str,
        /// The zarrs error.
        message: String,
    },
    /// A dataset's arrays do not fit together (voxel sizes, offsets, extents).
    #[error("dataset {dataset:?}: {message}")]
    Dataset {
        /// The dataset name.
        dataset: String,
        /// What is wrong and what to do.
        message: String,
    },
    /// The sampling request (shapes, batch size, weights) cannot work.
    #[error("batch sampler: {0}")]
    Sampler(String),
    /// The synthetic data configuration cannot work, or an existing container does not match it.
    #[error("synthetic data {container}: {message}")]
    Synthetic {
        /// The container path.
        container: PathBuf,
        /// What is wrong and what to do.
        message: String,
    },
    /// A filesystem operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was attempted.
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Result alias of this crate.
pub type Result<T, E = DataError> = std::result::Result<T, E>;

/// Maps an I/O error of `action` on `path` to [`DataError::Io`].
pub(crate) fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> DataError {
    let path = path.to_owned();
    move |source| DataError::Io {
        action,
        path,
        source,
    }
}
