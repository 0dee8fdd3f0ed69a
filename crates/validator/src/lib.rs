//! Validation of dacapo-rs runs: blockwise prediction over whole arrays, post-processing sweeps
//! over parameter sets, and evaluation of segmentations against ground truth.
//!
//! The [`blockwise`], [`postprocess`] and [`evaluate`] modules work on CPU `ndarray` arrays and
//! do not depend on burn.

pub mod blockwise;
mod error;
pub mod evaluate;
pub mod postprocess;
pub mod predict;
pub mod revalidate;
pub mod run;

pub use error::ValidatorError;
pub use predict::{PredictJob, PredictSummary, ZarrPath, predict_zarr};
pub use revalidate::{Checkpoints, RevalidateOptions, RevalidateSummary, revalidate};
pub use run::{RunValidator, ValidatorOptions};
