//! dacapo-trainer: the training loop of dacapo-rs.
//!
//! [`train`] takes a [`RunConfig`](dacapo_core::RunConfig), opens its stores, takes the run
//! lock, resumes from the newest committed checkpoint and trains to `run.train_until`:
//! batches are a pure function of `(seed, iteration)` so a resumed run continues exactly;
//! stats and checkpoints are written off the training thread by a [`StoreWriter`]; every
//! `validation_interval` steps a checkpoint is committed and handed to a
//! [`Validate`](dacapo_runtime::Validate) implementation, whose scores and best records go
//! through the stores. A [`TensorboardLog`](tensorboard::TensorboardLog) writes TensorBoard
//! event files alongside.

pub mod error;
pub mod tensorboard;
pub mod train;
pub mod writer;

pub use error::TrainerError;
pub use train::{TrainOptions, TrainSummary, train};
pub use writer::StoreWriter;
