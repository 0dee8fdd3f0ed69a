//! dacapo-core: the data model of dacapo-rs, shared by every other crate.
//!
//! It holds the run configuration ([`config::RunConfig`], read from TOML), the training
//! statistics ([`TrainingStats`]), the validation scores ([`ValidationScores`]) with best-value
//! selection, name validation for anything that becomes a path, and [`TensorMap`], the form
//! in which model and optimizer tensors cross the store boundary. It does not depend on burn.

pub mod config;
pub mod device;
pub mod error;
pub mod memory;
pub mod name;
pub mod scores;
pub mod stats;
pub mod tensor;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use config::RunConfig;
pub use device::DeviceSpec;
pub use error::CoreError;
pub use name::{RESERVED_DATASET_NAMES, RunName, validate_name};
pub use scores::{
    Best, BestDim, Criterion, ParameterSet, Score, ScoreTable, ValidationIterationScores,
    ValidationMeta, ValidationScores,
};
pub use stats::{TrainingIterationStats, TrainingStats};
pub use tensor::{DType, NamedTensor, TensorMap};
