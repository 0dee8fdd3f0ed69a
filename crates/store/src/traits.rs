//! The store traits and the values that cross them.

use dacapo_core::{RunName, Score, TensorMap, TrainingStats, ValidationScores};
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// What exact resume needs beyond the model and optimizer tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// The checkpoint's iteration (steps completed); must equal the iteration it is stored as.
    pub iteration: u64,
    /// Hash of the frozen run config this checkpoint was trained with.
    pub config_hash: String,
    /// Name of the backend that produced it (`flex`, `wgpu`, ...).
    pub backend: String,
    /// The backend's device that produced it (`cpu`, `cuda:0`, ...; empty in checkpoints
    /// written before devices were recorded).
    #[serde(default)]
    pub device: String,
    /// The run's seed.
    pub seed: u64,
    /// Anything else the trainer needs (scheduler step, data cursor, burn version, ...).
    #[serde(default)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl TrainState {
    /// A state with no extra fields.
    pub fn new(
        iteration: u64,
        config_hash: impl Into<String>,
        backend: impl Into<String>,
        seed: u64,
    ) -> Self {
        Self {
            iteration,
            config_hash: config_hash.into(),
            backend: backend.into(),
            device: String::new(),
            seed,
            extra: serde_json::Map::new(),
        }
    }

    /// This state with the name of the device that produced it.
    pub fn with_device(mut self, device: impl Into<String>) -> Self {
        self.device = device.into();
        self
    }
}

/// One checkpoint: model and optimizer tensors by name, plus the train state.
#[derive(Debug, Clone, PartialEq)]
pub struct Weights {
    /// Model parameters and buffers (PyTorch state-dict names where one exists).
    pub model: TensorMap,
    /// Optimizer state (e.g. Adam moments), flattened to named tensors.
    pub optimizer: TensorMap,
    /// Everything else exact resume needs.
    pub state: TrainState,
}

/// The best (iteration, parameter) of a run for one (dataset, criterion).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BestRecord {
    /// The checkpoint that scored best; it must be committed when the record is stored.
    pub iteration: u64,
    /// The validation dataset.
    pub dataset: String,
    /// The criterion.
    pub criterion: String,
    /// The post-processing parameter id that scored best.
    pub parameter: String,
    /// The best value (non-finite values survive as `null`/`"Infinity"`).
    #[serde(with = "score_f64")]
    pub value: f64,
    /// Whether larger values of the criterion are better.
    pub higher_is_better: bool,
}

impl BestRecord {
    /// The record of a best value computed by [`ValidationScores::best`].
    pub fn from_best(best: &dacapo_core::Best, higher_is_better: bool) -> Self {
        Self {
            iteration: best.iteration,
            dataset: best.dataset.clone(),
            criterion: best.criterion.clone(),
            parameter: best.parameter.clone(),
            value: best.value,
            higher_is_better,
        }
    }
}

mod score_f64 {
    use super::Score;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        Score(*v).serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Score::deserialize(d).map(|s| s.0)
    }
}

/// Where a run's checkpoints and best records live (seed: DaCapo's `WeightsStore`).
///
/// Runs are [`RunName`]s (validated once, when the name is made); every `dataset` and
/// `criterion` must pass [`dacapo_core::validate_name`]. Methods block; implementations are
/// safe to share between threads.
pub trait WeightsStore: Send + Sync {
    /// The newest committed checkpoint of `run`, or `None` if it has none (or does not exist).
    fn latest_iteration(&self, run: &RunName) -> Result<Option<u64>>;

    /// Stores checkpoint `iteration` of `run`; `weights.state.iteration` must equal
    /// `iteration`. Storing an existing iteration again is `Ok` if the content is
    /// byte-identical (an idempotent retry) and an error otherwise.
    fn store_weights(&self, run: &RunName, iteration: u64, weights: &Weights) -> Result<()>;

    /// Loads checkpoint `iteration` of `run`, verifying every checksum.
    fn retrieve_weights(&self, run: &RunName, iteration: u64) -> Result<Weights>;

    /// The train state of checkpoint `iteration` of `run` (iteration, backend, device, ...),
    /// verified; stores that can read it without the tensors do.
    fn retrieve_state(&self, run: &RunName, iteration: u64) -> Result<TrainState> {
        Ok(self.retrieve_weights(run, iteration)?.state)
    }

    /// Deletes checkpoint `iteration` of `run`; an error if it does not exist.
    fn remove(&self, run: &RunName, iteration: u64) -> Result<()>;

    /// Records the best checkpoint for (`record.dataset`, `record.criterion`); an error if
    /// checkpoint `record.iteration` is not committed.
    fn store_best(&self, run: &RunName, record: &BestRecord) -> Result<()>;

    /// The best record for (`dataset`, `criterion`) of `run`; an error if none was stored.
    fn retrieve_best(&self, run: &RunName, dataset: &str, criterion: &str) -> Result<BestRecord>;

    /// Every stored best record of `run`, ordered by dataset, then criterion.
    fn best_records(&self, run: &RunName) -> Result<Vec<BestRecord>>;

    /// Deletes the best record for (`dataset`, `criterion`) of `run` (no error if there is
    /// none).
    fn remove_best(&self, run: &RunName, dataset: &str, criterion: &str) -> Result<()>;

    /// The committed checkpoints of `run`, ascending (cheaply verified; bad ones are skipped).
    fn iterations(&self, run: &RunName) -> Result<Vec<u64>>;

    /// Deletes all checkpoints except the newest `keep_last` (at least the newest one) and
    /// those a best record points to; returns the removed iterations, ascending.
    fn apply_retention(&self, run: &RunName, keep_last: usize) -> Result<Vec<u64>>;
}

/// Where a run's training stats and validation scores live (seed: DaCapo's `StatsStore`).
///
/// Store calls write only what is not yet stored; when the given stats end before or differ
/// from the stored ones (after a resume), the stored ones are cut back to the common prefix
/// first: the caller's stats take priority.
pub trait StatsStore: Send + Sync {
    /// Makes the stored training stats of `run` equal to `stats`.
    fn store_training_stats(&self, run: &RunName, stats: &TrainingStats) -> Result<()>;

    /// The stored training stats of `run` (empty if none were stored).
    fn retrieve_training_stats(&self, run: &RunName) -> Result<TrainingStats>;

    /// Makes the stored validation scores (and their metadata) of `run` equal to `scores`.
    fn store_validation_iteration_scores(
        &self,
        run: &RunName,
        scores: &ValidationScores,
    ) -> Result<()>;

    /// The stored validation scores of `run` with their metadata (empty if none were stored).
    fn retrieve_validation_iteration_scores(&self, run: &RunName) -> Result<ValidationScores>;

    /// Deletes the training stats of `run` (no error if there were none).
    fn delete_training_stats(&self, run: &RunName) -> Result<()>;

    /// Deletes the validation scores and their metadata of `run` (no error if there were
    /// none).
    fn delete_validation_scores(&self, run: &RunName) -> Result<()>;

    /// Makes everything stored for `run` so far durable (fsync).
    fn sync(&self, run: &RunName) -> Result<()>;
}
