//! The run's model: building it from the config, loading stored checkpoints into it, and
//! keeping best records up to date.
//!
//! The stores know tensors, not modules: [`load_weights`] and [`load_best`] put a stored
//! checkpoint into a [`UNet`] built from the run's config ([`build_model`]).
//! [`update_best_records`] writes the best record of every (dataset, criterion) of a run's
//! validation scores through [`WeightsStore::store_best`], at `<run>/<dataset>/<criterion>.json`,
//! the same path [`WeightsStore::retrieve_best`] (and so [`load_best`]) reads.

use burn::tensor::Device;
use dacapo_core::config::{ArchitectureConfig, RunConfig};
use dacapo_core::{RunName, ValidationScores};
use dacapo_models::{Task, UNet, UNetConfig, load_model_tensors};
use dacapo_store::{BestRecord, StoreError, TrainState, WeightsStore};

use crate::error::RuntimeError;

/// The network config of a run, with the task's output channels.
pub fn unet_config(config: &RunConfig, task: &Task) -> UNetConfig {
    let ArchitectureConfig::Unet(arch) = &config.architecture;
    UNetConfig::from_core(arch, task.out_channels())
}

/// The network of `config` on `device` (initialised from `run.seed`) and its task.
pub fn build_model(config: &RunConfig, device: &Device) -> Result<(UNet, Task), RuntimeError> {
    let ArchitectureConfig::Unet(arch) = &config.architecture;
    let task = Task::new(&config.task, arch.dims)?;
    let model = unet_config(config, &task).init(config.run.seed, device)?;
    Ok((model, task))
}

/// `model` with the weights of checkpoint `iteration` of `run`, and the checkpoint's state.
///
/// `model` must have the run's architecture (see [`build_model`]); a missing or mis-shaped
/// tensor is an error naming it.
pub fn load_weights(
    weights: &dyn WeightsStore,
    run: &RunName,
    iteration: u64,
    model: UNet,
) -> Result<(UNet, TrainState), RuntimeError> {
    let w = weights.retrieve_weights(run, iteration)?;
    let model = load_model_tensors(model, &w.model)?;
    Ok((model, w.state))
}

/// `model` with the weights of the best checkpoint of `run` for (`dataset`, `criterion`), and
/// the best record it was chosen by (its iteration, parameter and value).
pub fn load_best(
    weights: &dyn WeightsStore,
    run: &RunName,
    dataset: &str,
    criterion: &str,
    model: UNet,
) -> Result<(UNet, BestRecord), RuntimeError> {
    let record = weights.retrieve_best(run, dataset, criterion)?;
    let (model, _) = load_weights(weights, run, record.iteration, model)?;
    Ok((model, record))
}

/// Stores the best record of every (dataset, criterion) of `scores` whose stored record differs
/// (or is missing or unreadable); returns the records written. Criteria with only NaN values
/// have no best and keep whatever record they had. Every referenced checkpoint must be committed.
pub fn update_best_records(
    weights: &dyn WeightsStore,
    run: &RunName,
    scores: &ValidationScores,
) -> Result<Vec<BestRecord>, StoreError> {
    let mut written = Vec::new();
    for dataset in &scores.meta.datasets {
        for criterion in &scores.meta.criteria {
            let Some(best) = scores.best(dataset, &criterion.name) else {
                continue;
            };
            let record = BestRecord::from_best(&best, criterion.higher_is_better);
            let current = weights.retrieve_best(run, dataset, &criterion.name).ok();
            if current.as_ref() != Some(&record) {
                weights.store_best(run, &record)?;
                written.push(record);
            }
        }
    }
    Ok(written)
}
