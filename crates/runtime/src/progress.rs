//! Progress reporting: the trainer, the validator and prediction say what they do through a
//! [`Progress`] reporter, and the program that runs them decides how it is shown (the CLI:
//! bars on a terminal, plain or JSON lines elsewhere). Libraries never draw anything.

use dacapo_core::{ValidationIterationScores, ValidationScores};

/// Criteria shown first in one-line summaries when a task reports them (all are stored).
pub const HEADLINE_CRITERIA: [&str; 4] = ["f1", "dice", "voi", "adapted_rand_error"];

/// The best value over the parameter sets of one (dataset, criterion) of a validation.
#[derive(Debug, Clone, PartialEq)]
pub struct BestScore {
    /// The validation dataset.
    pub dataset: String,
    /// The criterion.
    pub criterion: String,
    /// The post-processing parameter set that scored it.
    pub parameter: String,
    /// The value.
    pub value: f64,
}

/// What one validation of checkpoint `iteration` scored, as reporters show it.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidationReport {
    /// The validated checkpoint.
    pub iteration: u64,
    /// Per dataset and criterion (in the scores' metadata order), the best over parameters;
    /// criteria without a finite value are left out.
    pub best: Vec<BestScore>,
}

impl ValidationReport {
    /// The report of `validation`, whose datasets and criteria `scores` describes.
    pub fn new(scores: &ValidationScores, validation: &ValidationIterationScores) -> Self {
        let best = scores
            .subscores([validation.clone()])
            .map(|one| {
                let mut out = Vec::new();
                for dataset in validation.scores.keys() {
                    for criterion in one.criteria() {
                        if let Some(b) = one.best(dataset, criterion) {
                            out.push(BestScore {
                                dataset: b.dataset,
                                criterion: b.criterion,
                                parameter: b.parameter,
                                value: b.value,
                            });
                        }
                    }
                }
                out
            })
            .unwrap_or_default();
        Self {
            iteration: validation.iteration,
            best,
        }
    }

    /// The best scores of the [`HEADLINE_CRITERIA`], or all of them if the task has none of
    /// those.
    pub fn headline(&self) -> Vec<&BestScore> {
        let chosen: Vec<&BestScore> = self
            .best
            .iter()
            .filter(|b| HEADLINE_CRITERIA.contains(&b.criterion.as_str()))
            .collect();
        if chosen.is_empty() {
            self.best.iter().collect()
        } else {
            chosen
        }
    }
}

/// Receives progress; every method has a silent default, so a reporter implements what it
/// shows. Implementations must be cheap: [`step`](Progress::step) is called every iteration.
pub trait Progress: Send + Sync {
    /// Training of `run` starts at iteration `start` (0, or the resumed checkpoint) of `total`.
    fn training(&self, _run: &str, _start: u64, _total: u64) {}

    /// Step `iteration` (0-based) finished with `loss`.
    fn step(&self, _iteration: u64, _loss: f64) {}

    /// Checkpoint `report.iteration` of `run` was validated.
    fn validated(&self, _run: &str, _report: &ValidationReport) {}

    /// A piece of blockwise work (`what`, e.g. "validate 200 val") of `total` blocks starts;
    /// the returned handle is told how many are done.
    fn blocks(&self, _what: &str, _total: u64) -> Box<dyn BlockProgress> {
        Box::new(NoProgress)
    }

    /// Training stopped (finished, stopped on request, or failed) at `iteration`.
    fn finished(&self, _iteration: u64) {}
}

/// Progress of one piece of blockwise work.
pub trait BlockProgress: Send {
    /// `done` blocks of the total are finished.
    fn set(&mut self, _done: u64) {}
}

/// A reporter that shows nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}

impl BlockProgress for NoProgress {}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use dacapo_core::{Criterion, ParameterSet, Score, ValidationMeta};
    use std::collections::BTreeMap;

    #[test]
    fn a_report_holds_the_best_parameter_per_dataset_and_criterion() {
        let meta = ValidationMeta {
            parameters: ["t=0", "t=1"]
                .map(|id| ParameterSet {
                    id: id.into(),
                    values: BTreeMap::new(),
                })
                .to_vec(),
            datasets: vec!["val".into()],
            criteria: vec![Criterion::new("dice", true), Criterion::new("voi", false)],
        };
        let per_param = |dice: f64, voi: f64| {
            BTreeMap::from([
                ("dice".to_owned(), Score(dice)),
                ("voi".to_owned(), Score(voi)),
            ])
        };
        let validation = ValidationIterationScores {
            iteration: 4,
            scores: BTreeMap::from([(
                "val".to_owned(),
                BTreeMap::from([
                    ("t=0".to_owned(), per_param(0.5, 0.2)),
                    ("t=1".to_owned(), per_param(0.7, f64::NAN)),
                ]),
            )]),
        };
        let report = ValidationReport::new(&ValidationScores::new(meta), &validation);
        assert_eq!(report.iteration, 4);
        let shown: Vec<(&str, &str, f64)> = report
            .headline()
            .iter()
            .map(|b| (b.criterion.as_str(), b.parameter.as_str(), b.value))
            .collect();
        assert_eq!(shown, [("dice", "t=1", 0.7), ("voi", "t=0", 0.2)]);
    }
}
