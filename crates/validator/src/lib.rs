//! Validation of dacapo-rs runs: blockwise prediction over whole arrays, post-processing sweeps
//! over parameter sets, and evaluation of segmentations against ground truth.
//!
//! - [`blockwise`], [`postprocess`] and [`evaluate`] work on CPU `ndarray` arrays and do not
//!   touch burn: block tiling on the network's pooling grid, parameter sweeps, criteria.
//! - [`run`]: [`RunValidator`], the trainer's [`Validate`](dacapo_runtime::Validate) hook for a
//!   run config: blockwise prediction of each validation dataset with the model, predictions
//!   written to `<root>/<run>/validation/<N>/<dataset>.zarr`, scores per parameter set and
//!   criterion.
//! - [`snapshot`]: per validation a PNG of a central slice of raw, ground truth, prediction
//!   and the best segmentation side by side.
//! - [`revalidate`]: `dacapo validate`, re-scoring stored checkpoints and best records.
//! - [`predict`]: `dacapo predict`, a whole zarr array predicted block by block into a new one,
//!   by one or many worker processes; [`ledger`]: its resumable bookkeeping.

pub mod blockwise;
mod error;
pub mod evaluate;
pub mod ledger;
pub mod postprocess;
pub mod predict;
pub mod revalidate;
pub mod run;
pub mod snapshot;

pub use error::ValidatorError;
pub use ledger::{Ledger, PredictSpec, Status};
pub use predict::{
    BlockWorker, JobRequest, PostProcess, Prepared, WorkerSummary, ZarrPath, checkpoint_sha256,
    job_grid, plan_job, prepare_output,
};
pub use revalidate::{Checkpoints, RevalidateOptions, RevalidateSummary, revalidate};
pub use run::{RunValidator, ValidatorOptions};
