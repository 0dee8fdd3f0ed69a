//! Validation of dacapo-rs runs: blockwise prediction over whole arrays, post-processing sweeps
//! over parameter sets, and evaluation of segmentations against ground truth.
//!
//! The [`blockwise`], [`postprocess`] and [`evaluate`] modules work on CPU `ndarray` arrays and
//! do not depend on burn.

pub mod blockwise;
mod error;
pub mod evaluate;
pub mod postprocess;

pub use error::ValidatorError;
