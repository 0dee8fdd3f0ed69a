//! dacapo-runtime: what training, validation and prediction of a run share.
//!
//! - [`stores`]: [`Stores::open`] opens a run's weights and stats stores from its config
//!   (`[stores]` URLs parsed into [`dacapo_store::StoreUrl`], or the local stores under
//!   `stores.root`).
//! - [`frozen`]: the frozen config of a run, written once and checked on every resume.
//! - [`backend`]: from the `backend` config key to a burn `Device`, and the CPU thread pool.
//! - [`model`]: building the run's U-Net, loading stored checkpoints into it, best records.
//! - [`validate`]: the [`Validate`] hook through which the trainer has checkpoints validated
//!   (the validator crate implements it), so neither of the two depends on the other.
//! - [`progress`]: the [`Progress`] reporter through which training, validation and prediction
//!   report what they do; the program decides how it is shown.
//! - [`memory`]: a network's memory estimate, refused before allocating when it cannot fit.

pub mod backend;
pub mod error;
pub mod frozen;
pub mod memory;
pub mod model;
pub mod progress;
pub mod stores;
pub mod validate;

pub use error::RuntimeError;
pub use model::{build_model, load_best, load_weights, unet_config, update_best_records};
pub use progress::{NoProgress, Progress, ValidationReport};
pub use stores::Stores;
pub use validate::{NoValidation, Validate};
