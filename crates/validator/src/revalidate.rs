//! Re-validation of stored checkpoints outside training (`dacapo validate`).

use dacapo_core::config::{Backend, DeviceSpec, RunConfig};
use dacapo_core::{ValidationIterationScores, ValidationScores};
use dacapo_runtime::validate::scores_for;
use dacapo_runtime::{
    Progress, Stores, Validate, ValidationReport, backend, build_model, load_weights,
    update_best_records,
};
use dacapo_store::{BestRecord, RunLock};

use crate::ValidatorError;
use crate::run::{RunValidator, ValidatorOptions};

/// Which stored checkpoints [`revalidate`] validates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checkpoints {
    /// The newest committed checkpoint.
    Latest,
    /// One checkpoint.
    Iteration(u64),
    /// Every committed checkpoint.
    All,
}

/// Options of [`revalidate`].
#[derive(Debug, Clone, Default)]
pub struct RevalidateOptions {
    /// Backend overriding `run.backend`.
    pub backend: Option<Backend>,
    /// Device overriding `run.device`.
    pub device: Option<DeviceSpec>,
    /// Validator settings.
    pub validator: ValidatorOptions,
}

/// What [`revalidate`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct RevalidateSummary {
    /// The new scores of each validated checkpoint, ascending.
    pub validated: Vec<ValidationIterationScores>,
    /// Best records that changed.
    pub best_updated: Vec<BestRecord>,
    /// The run's stored scores after re-validation.
    pub scores: ValidationScores,
}

/// Validates stored checkpoints of the run of `config` again, replacing their stored scores
/// and updating the best records.
///
/// Takes the run lock for the whole time, so it refuses to run (naming the holder) while a
/// trainer writes the run. Scores are stored after each checkpoint, so an interrupted
/// `--all` keeps what it finished. Scores stored under other validation settings (datasets,
/// parameters, criteria) are kept where they still fit and dropped otherwise.
pub fn revalidate(
    config: &RunConfig,
    stores: &Stores,
    which: Checkpoints,
    options: &RevalidateOptions,
    progress: &dyn Progress,
) -> Result<RevalidateSummary, ValidatorError> {
    let run = &config.run.name;
    let run_error = |message: String| ValidatorError::Run {
        run: run.clone(),
        message,
    };
    let _lock = RunLock::acquire(&stores.root, run).map_err(|e| {
        run_error(format!(
            "cannot validate while another process writes the run: {e}"
        ))
    })?;
    let stored = stores.weights.iterations(run)?;
    let iterations = match which {
        Checkpoints::All => stored.clone(),
        Checkpoints::Latest => stored.last().copied().into_iter().collect(),
        Checkpoints::Iteration(n) => {
            if !stored.contains(&n) {
                return Err(run_error(format!(
                    "has no committed checkpoint {n}; stored checkpoints: {}",
                    list(&stored)
                )));
            }
            vec![n]
        }
    };
    if iterations.is_empty() {
        return Err(run_error(format!(
            "has no committed checkpoint under {}: train it first",
            stores.root.display()
        )));
    }
    let mut validator = RunValidator::with_options(config, options.validator.clone())?;
    let meta = validator.meta();
    if meta.datasets.is_empty() {
        return Err(run_error(
            "its config has no validation datasets ([datasplit] validate = [...])".into(),
        ));
    }
    let device = backend::for_run(config, options.backend, options.device)?.device;
    let (base_model, task) = build_model(config, &device)?;

    let mut scores = scores_for(
        meta,
        stores.stats.retrieve_validation_iteration_scores(run)?,
    );
    let mut validated = Vec::with_capacity(iterations.len());
    let mut best_updated: Vec<BestRecord> = Vec::new();
    for n in iterations {
        let (model, _) = load_weights(&*stores.weights, run, n, base_model.clone())?;
        let new = validator.validate_model(n, &model, &task, progress)?;
        let others = scores
            .scores()
            .iter()
            .filter(|s| s.iteration != n)
            .cloned()
            .chain(std::iter::once(new.clone()));
        let mut sorted: Vec<ValidationIterationScores> = others.collect();
        sorted.sort_by_key(|s| s.iteration);
        scores = scores.subscores(sorted)?;
        stores
            .stats
            .store_validation_iteration_scores(run, &scores)?;
        for record in update_best_records(&*stores.weights, run, &scores)? {
            best_updated
                .retain(|r| (&r.dataset, &r.criterion) != (&record.dataset, &record.criterion));
            best_updated.push(record);
        }
        progress.validated(run.as_str(), &ValidationReport::new(&scores, &new));
        validated.push(new);
    }
    Ok(RevalidateSummary {
        validated,
        best_updated,
        scores,
    })
}

/// `[a, b, c]`, or `none` for an empty list.
fn list(items: &[u64]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        format!("{items:?}")
    }
}
