//! dacapo-store: where runs keep their checkpoints, best records, training stats and
//! validation scores.
//!
//! Two traits carry the seed API of DaCapo's stores, [`WeightsStore`] and [`StatsStore`], and
//! two local implementations back them: [`LocalWeightsStore`] (safetensors checkpoints
//! committed atomically with checksummed manifests and a verified `LATEST` hint) and
//! [`FileStatsStore`] (append-only JSON-lines files). [`RunLock`] keeps a run to one writer.
//! Runs are [`RunName`](dacapo_core::RunName)s, checked once when made; dataset and criterion
//! names are checked with [`dacapo_core::validate_name`] before they become part of a path.
//! [`layout`] names every file and directory under a store root; [`StoreUrl`] parses the
//! URLs of remote stores. No burn: tensors cross as [`dacapo_core::TensorMap`].
//!
//! ```no_run
//! use dacapo_core::{NamedTensor, RunName, TensorMap, TrainingIterationStats, TrainingStats};
//! use dacapo_store::{
//!     FileStatsStore, LocalWeightsStore, RunLock, StatsStore, TrainState, Weights, WeightsStore,
//! };
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let run = RunName::new("demo")?;
//! let _lock = RunLock::acquire("runs", &run)?;
//! let weights = LocalWeightsStore::new("runs");
//! let model = TensorMap::from([("w".to_owned(), NamedTensor::from_f32(vec![2], &[1.0, 2.0])?)]);
//! let w = Weights { model, optimizer: TensorMap::new(), state: TrainState::new(10, "hash", "flex", 42) };
//! weights.store_weights(&run, 10, &w)?;
//! assert_eq!(weights.latest_iteration(&run)?, Some(10));
//!
//! let stats_store = FileStatsStore::new("runs");
//! let mut stats = TrainingStats::new();
//! stats.add_iteration_stats(TrainingIterationStats { iteration: 0, loss: 0.5, time: 0.1 })?;
//! stats_store.store_training_stats(&run, &stats)?;
//! # Ok(())
//! # }
//! ```

#[cfg(feature = "conformance")]
pub mod conformance;
pub mod error;
pub mod file_stats;
pub mod fsutil;
pub mod interop;
mod json;
pub mod layout;
pub mod local;
pub mod lock;
pub mod st;
pub mod store_url;
pub mod traits;

pub use error::{Result, StoreError};
pub use file_stats::FileStatsStore;
pub use interop::{read_safetensors_file, write_safetensors_file};
pub use local::{FileEntry, Hint, LocalWeightsStore, Manifest, Verify};
pub use lock::RunLock;
pub use store_url::StoreUrl;
pub use traits::{BestRecord, StatsStore, TrainState, Weights, WeightsStore};
