//! The error type of dacapo-trainer.

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
    #[error("writing to the stores failed: {source}")]
    StoreWrite {
        /// The store's error (shared: every later call reports the same failure).
        source: std::sync::Arc<dacapo_store::StoreError>,
    },
    /// The background store writer stopped without an error (it panicked).
    #[error(
        "the store writer thread stopped unexpectedly; the last committed checkpoint is intact"
    )]
    WriterStopped,
    /// The stores, device or model of the run could not be set up.
    #[error(transparent)]
    Runtime(#[from] dacapo_runtime::RuntimeError),
    /// A checkpoint that cannot be resumed from.
    #[error("cannot resume run `{run}` from checkpoint {iteration}: {reason}")]
    Resume {
        /// The run.
        run: dacapo_core::RunName,
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
        "validation of checkpoint {iteration} failed (the checkpoint itself is committed): {source}"
    )]
    Validation {
        /// The validated checkpoint.
        iteration: u64,
        /// The validator's error.
        source: Box<dyn std::error::Error + Send + Sync>,
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
    #[error("cannot start the {name} thread: {source}")]
    Thread {
        /// What the thread does.
        name: &'static str,
        /// Why the OS refused.
        #[source]
        source: std::io::Error,
    },
    /// The TensorBoard event file could not be created or written.
    #[error(
        "TensorBoard logging in {dir}: {source}; set `[logging] dir` to a writable directory or `tensorboard = false`"
    )]
    Logging {
        /// The event directory.
        dir: std::path::PathBuf,
        /// What failed.
        #[source]
        source: dacapo_tensorboard::TensorboardError,
    },
}
