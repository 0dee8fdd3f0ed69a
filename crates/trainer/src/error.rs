//! The error type of dacapo-trainer.

use std::path::PathBuf;

/// Everything that can stop a training run.
#[derive(Debug, thiserror::Error)]
pub enum TrainerError {
    /// The run config is invalid.
    #[error(transparent)]
    Config(#[from] dacapo_core::CoreError),
    /// A store operation failed.
    #[error(transparent)]
    Store(#[from] dacapo_store::StoreError),
    /// The background store writer failed; the run stopped so nothing is lost silently.
    #[error("writing to the stores failed: {0}")]
    StoreWrite(String),
    /// The stores, device or model of the run could not be set up.
    #[error(transparent)]
    Runtime(#[from] dacapo_runtime::RuntimeError),
    /// The frozen config of an existing run differs from the given one.
    #[error(
        "run `{run}` already exists with a different config ({frozen}); training it with the new \
         config would not resume exactly. Use another run name, or pass --force-config to \
         continue with the new config (differences: {differences})"
    )]
    ConfigChanged {
        /// The run.
        run: String,
        /// The frozen config file.
        frozen: PathBuf,
        /// The keys that differ.
        differences: String,
    },
    /// A checkpoint that cannot be resumed from.
    #[error("cannot resume run `{run}` from checkpoint {iteration}: {reason}")]
    Resume {
        /// The run.
        run: String,
        /// The checkpoint.
        iteration: u64,
        /// What is wrong and what to do.
        reason: String,
    },
    /// Training data could not be read or sampled.
    #[error(transparent)]
    Data(#[from] dacapo_data::DataError),
    /// The model could not be built, run or (de)serialised.
    #[error(transparent)]
    Model(#[from] dacapo_models::ModelError),
    /// Validation of a committed checkpoint failed.
    #[error(
        "validation of checkpoint {iteration} failed (the checkpoint itself is committed): {message}"
    )]
    Validation {
        /// The validated checkpoint.
        iteration: u64,
        /// The validator's error.
        message: String,
    },
    /// The loss became NaN or infinite.
    #[error(
        "the loss became {loss} at iteration {iteration}; lower trainer.learning_rate or check \
         the data (the last checkpoint is intact)"
    )]
    NonFiniteLoss {
        /// The step.
        iteration: u64,
        /// The loss value.
        loss: f64,
    },
    /// A thread could not be started.
    #[error("cannot start a thread: {0}")]
    Thread(String),
    /// The TensorBoard event file could not be created.
    #[error("TensorBoard logging: {0}")]
    Logging(String),
    /// Writing the frozen run config failed.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}
