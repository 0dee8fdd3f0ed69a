//! Shared helpers of the validator's end-to-end tests: small synthetic runs.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use dacapo_core::RunConfig;
use dacapo_core::testing::TinyRun;
use dacapo_core::{ValidationIterationScores, ValidationMeta};
use dacapo_models::{Task, UNet};
use dacapo_runtime::{Progress, Stores, Validate};
use dacapo_trainer::TrainOptions;

/// A tiny 2D distance run on synthetic cells under `dir` (see [`TinyRun`]), validating every
/// `interval` steps on the synthetic validation array and keeping one checkpoint besides the
/// best ones.
pub fn tiny_config(dir: &Path, name: &str, train_until: u64, interval: u64) -> RunConfig {
    TinyRun::new(name, dir)
        .schedule(train_until, interval)
        .validate()
        .keep_last(1)
        .build()
}

/// `name` as a run name.
pub fn run_name(name: &str) -> dacapo_core::RunName {
    dacapo_core::RunName::new(name).unwrap()
}

/// Options without progress output.
pub fn quiet() -> TrainOptions {
    TrainOptions::default()
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
        progress: &dyn Progress,
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
