//! The validation hook: how the trainer hands a committed checkpoint to a validator.

use std::path::PathBuf;

use dacapo_core::{ValidationIterationScores, ValidationMeta, ValidationScores};
use dacapo_models::{Task, UNet};

use crate::progress::Progress;

/// Evaluates checkpoints during training; the validator crate implements it.
pub trait Validate {
    /// Datasets, parameter sets and criteria this validator produces scores for.
    fn meta(&self) -> ValidationMeta;

    /// Scores of the model at checkpoint `iteration` on every validation dataset, with the
    /// blockwise work reported to `progress`.
    fn validate(
        &mut self,
        iteration: u64,
        model: &UNet,
        task: &Task,
        progress: &dyn Progress,
    ) -> Result<ValidationIterationScores, Box<dyn std::error::Error + Send + Sync>>;

    /// Called with checkpoints that retention removed, so their outputs can go too.
    fn removed(&mut self, _iterations: &[u64]) {}

    /// Snapshot images (PNG files) of the validation of checkpoint `iteration`, by dataset.
    fn snapshots(&self, _iteration: u64) -> Vec<(String, PathBuf)> {
        Vec::new()
    }
}

/// A validator that records nothing (runs without validation datasets).
pub struct NoValidation;

impl Validate for NoValidation {
    fn meta(&self) -> ValidationMeta {
        ValidationMeta::default()
    }

    fn validate(
        &mut self,
        iteration: u64,
        _model: &UNet,
        _task: &Task,
        _progress: &dyn Progress,
    ) -> Result<ValidationIterationScores, Box<dyn std::error::Error + Send + Sync>> {
        Ok(ValidationIterationScores {
            iteration,
            scores: Default::default(),
        })
    }
}

/// `stored` scores in the validator's `meta`: unchanged if the metadata is the same, else the
/// stored validations that still fit the new metadata (the others are dropped with a warning).
pub fn scores_for(meta: ValidationMeta, stored: ValidationScores) -> ValidationScores {
    if stored.meta == meta {
        return stored;
    }
    let mut scores = ValidationScores::new(meta);
    for s in stored.scores().iter().cloned() {
        if let Err(e) = scores.add_iteration_scores(s) {
            tracing::warn!("dropping stored validation scores that no longer fit: {e}");
        }
    }
    scores
}
