//! Shared helpers of the validator's end-to-end tests: small synthetic runs.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use dacapo_core::RunConfig;
use dacapo_core::{ValidationIterationScores, ValidationMeta};
use dacapo_models::{Task, UNet};
use dacapo_runtime::{Stores, Validate};
use dacapo_trainer::TrainOptions;
use indicatif::MultiProgress;

/// A tiny 2D distance run on synthetic cells under `dir`: `fmaps 4`, one downsample, 44²
/// inputs, validating every `interval` steps on a 64² synthetic validation array.
pub fn tiny_config(dir: &Path, name: &str, train_until: u64, interval: u64) -> RunConfig {
    let d = dir.display();
    let text = format!(
        r#"
[run]
name = "{name}"
train_until = {train_until}
validation_interval = {interval}
seed = 3

[task]
kind = "distance"
scale_factor = 5.0

[architecture]
kind = "unet"
dims = 2
fmaps = 4
fmap_inc_factor = 2
downsample_factors = [[2, 2]]
input_shape = [44, 44]

[trainer]
batch_size = 1
learning_rate = 1e-3
augment = []

[datasplit]
train = [{{ zarr = "{d}/data.zarr", raw = "raw", gt = "labels" }}]
validate = [{{ name = "val", zarr = "{d}/data.zarr", raw = "raw_val", gt = "labels_val" }}]

[datasplit.synthetic]
zarr = "{d}/data.zarr"
shape = [64, 64]
seed = 1
objects = 6

[stores]
root = "{d}/runs"
keep_last = 1

[validation]
block_shape = [44, 44]
"#
    );
    RunConfig::from_toml(&text, Path::new("tiny.toml")).unwrap()
}

/// Options without progress output.
pub fn quiet() -> TrainOptions {
    TrainOptions {
        progress: false,
        ..TrainOptions::default()
    }
}

/// The run directory of `config`.
pub fn run_dir(config: &RunConfig) -> PathBuf {
    config.stores.root.join(config.run.name.as_str())
}

/// The local stores of `config`.
pub fn stores(config: &RunConfig) -> Stores {
    Stores::local(config)
}

/// A validator that records which checkpoints it validated.
pub struct Recording<V> {
    /// The wrapped validator.
    pub inner: V,
    /// Iterations validated, in order.
    pub validated: Vec<u64>,
    /// Iterations reported removed.
    pub removed: Vec<u64>,
}

impl<V: Validate> Recording<V> {
    pub fn new(inner: V) -> Self {
        Self {
            inner,
            validated: Vec::new(),
            removed: Vec::new(),
        }
    }
}

impl<V: Validate> Validate for Recording<V> {
    fn meta(&self) -> ValidationMeta {
        self.inner.meta()
    }

    fn validate(
        &mut self,
        iteration: u64,
        model: &UNet,
        task: &Task,
        progress: &MultiProgress,
    ) -> Result<ValidationIterationScores, Box<dyn std::error::Error + Send + Sync>> {
        self.validated.push(iteration);
        self.inner.validate(iteration, model, task, progress)
    }

    fn removed(&mut self, iterations: &[u64]) {
        self.removed.extend_from_slice(iterations);
        self.inner.removed(iterations);
    }

    fn snapshots(&self, iteration: u64) -> Vec<(String, std::path::PathBuf)> {
        self.inner.snapshots(iteration)
    }
}
