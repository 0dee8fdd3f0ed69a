//! Validation scores: per iteration, dataset, post-processing parameter and criterion.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::CoreError;

/// An evaluation criterion and the direction in which it improves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Criterion {
    /// Name, e.g. `dice` or `voi`.
    pub name: String,
    /// Whether larger values are better.
    pub higher_is_better: bool,
}

impl Criterion {
    /// A criterion named `name`.
    pub fn new(name: impl Into<String>, higher_is_better: bool) -> Self {
        Self {
            name: name.into(),
            higher_is_better,
        }
    }

    /// Whether `candidate` beats `current`; NaN never wins and ties keep `current`.
    pub fn is_better(&self, candidate: f64, current: f64) -> bool {
        if candidate.is_nan() {
            return false;
        }
        if current.is_nan() {
            return true;
        }
        if self.higher_is_better {
            candidate > current
        } else {
            candidate < current
        }
    }
}

/// One post-processing parameter set, with the stable id used as a score key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParameterSet {
    /// Stable id, e.g. `threshold=0.50`.
    pub id: String,
    /// The parameter values by name.
    pub values: BTreeMap<String, f64>,
}

/// Scores of one iteration: dataset → parameter id → criterion → value.
pub type ScoreTable = BTreeMap<String, BTreeMap<String, BTreeMap<String, Score>>>;

/// A criterion value; NaN and infinities survive JSON (as `null` and `"Infinity"`/`"-Infinity"`).
#[derive(Debug, Clone, Copy)]
pub struct Score(pub f64);

/// NaN equals NaN here, so stored and in-memory scores compare equal after a round trip.
impl PartialEq for Score {
    fn eq(&self, other: &Self) -> bool {
        (self.0.is_nan() && other.0.is_nan()) || self.0 == other.0
    }
}

impl Serialize for Score {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let v = self.0;
        if v.is_nan() {
            serializer.serialize_none()
        } else if v == f64::INFINITY {
            serializer.serialize_str("Infinity")
        } else if v == f64::NEG_INFINITY {
            serializer.serialize_str("-Infinity")
        } else {
            serializer.serialize_f64(v)
        }
    }
}

impl<'de> Deserialize<'de> for Score {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Number(f64),
            Text(String),
            Null(()),
        }
        match Repr::deserialize(deserializer)? {
            Repr::Number(v) => Ok(Score(v)),
            Repr::Null(()) => Ok(Score(f64::NAN)),
            Repr::Text(t) => match t.as_str() {
                "Infinity" | "inf" => Ok(Score(f64::INFINITY)),
                "-Infinity" | "-inf" => Ok(Score(f64::NEG_INFINITY)),
                "NaN" | "nan" => Ok(Score(f64::NAN)),
                other => Err(serde::de::Error::custom(format!(
                    "expected a number, null, \"Infinity\" or \"-Infinity\", found {other:?}"
                ))),
            },
        }
    }
}

/// The scores of every validation dataset and parameter set at one iteration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidationIterationScores {
    /// The checkpoint that was validated.
    pub iteration: u64,
    /// dataset → parameter id → criterion → value.
    pub scores: ScoreTable,
}

impl ValidationIterationScores {
    /// The value for one (dataset, parameter, criterion), if present.
    pub fn get(&self, dataset: &str, parameter: &str, criterion: &str) -> Option<f64> {
        self.scores
            .get(dataset)?
            .get(parameter)?
            .get(criterion)
            .map(|s| s.0)
    }
}

/// Along which axis [`ValidationScores::get_best`] picks the best value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BestDim {
    /// Best iteration for each (dataset, parameter, criterion).
    Iteration,
    /// Best parameter for each (dataset, iteration, criterion).
    Parameter,
}

/// A best value and where it was found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Best {
    /// Validation dataset.
    pub dataset: String,
    /// Criterion name.
    pub criterion: String,
    /// Iteration of the best value.
    pub iteration: u64,
    /// Parameter id of the best value.
    pub parameter: String,
    /// The best value.
    pub value: f64,
}

/// Metadata of the validation of a run: parameter sets, datasets and criteria.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidationMeta {
    /// Post-processing parameter sets, in sweep order (ties go to the first).
    pub parameters: Vec<ParameterSet>,
    /// Validation dataset names.
    pub datasets: Vec<String>,
    /// Criteria with their direction.
    pub criteria: Vec<Criterion>,
}

/// The validation scores of a run, ordered by iteration.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ValidationScores {
    /// What was swept and measured.
    pub meta: ValidationMeta,
    scores: Vec<ValidationIterationScores>,
}

impl ValidationScores {
    /// Empty scores with the given metadata.
    pub fn new(meta: ValidationMeta) -> Self {
        Self {
            meta,
            scores: Vec::new(),
        }
    }

    /// Scores with the same metadata and the given iteration scores.
    pub fn subscores(
        &self,
        iteration_scores: impl IntoIterator<Item = ValidationIterationScores>,
    ) -> Result<Self, CoreError> {
        let mut sub = Self::new(self.meta.clone());
        for s in iteration_scores {
            sub.add_iteration_scores(s)?;
        }
        Ok(sub)
    }

    /// The stored iteration scores, in iteration order.
    pub fn scores(&self) -> &[ValidationIterationScores] {
        &self.scores
    }

    /// Adds the scores of one iteration; an error if that iteration is already present or
    /// names a dataset, parameter or criterion missing from the metadata.
    pub fn add_iteration_scores(
        &mut self,
        iteration_scores: ValidationIterationScores,
    ) -> Result<(), CoreError> {
        self.check_keys(&iteration_scores)?;
        let at = self
            .scores
            .partition_point(|s| s.iteration < iteration_scores.iteration);
        if self
            .scores
            .get(at)
            .is_some_and(|s| s.iteration == iteration_scores.iteration)
        {
            return Err(CoreError::DuplicateIteration(iteration_scores.iteration));
        }
        self.scores.insert(at, iteration_scores);
        Ok(())
    }

    fn check_keys(&self, s: &ValidationIterationScores) -> Result<(), CoreError> {
        let unknown = |what, name: &str| CoreError::UnknownScoreKey {
            iteration: s.iteration,
            what,
            name: name.to_owned(),
        };
        for (dataset, per_param) in &s.scores {
            if !self.meta.datasets.iter().any(|d| d == dataset) {
                return Err(unknown("dataset", dataset));
            }
            for (param, per_criterion) in per_param {
                if !self.meta.parameters.iter().any(|p| &p.id == param) {
                    return Err(unknown("parameter", param));
                }
                for criterion in per_criterion.keys() {
                    if !self.meta.criteria.iter().any(|c| &c.name == criterion) {
                        return Err(unknown("criterion", criterion));
                    }
                }
            }
        }
        Ok(())
    }

    /// Keeps only the scores of iterations `< iteration`.
    pub fn delete_after(&mut self, iteration: u64) {
        let keep = self.scores.partition_point(|s| s.iteration < iteration);
        self.scores.truncate(keep);
    }

    /// Last validated iteration + 1, or 0 when empty.
    pub fn validated_until(&self) -> u64 {
        self.scores.last().map_or(0, |s| s.iteration + 1)
    }

    /// Compares these (local) scores with scores stored elsewhere.
    ///
    /// Returns `(replace, existing_until)`: `existing_until` is the stored
    /// `validated_until`; `replace` is true when the stored scores must be cut back to the
    /// common prefix before local ones are written (local ends earlier or differs). When false,
    /// only the local scores at iterations `>= existing_until` need appending.
    pub fn compare(&self, existing: &[ValidationIterationScores]) -> (bool, u64) {
        let existing_until = existing.last().map_or(0, |s| s.iteration + 1);
        let common = self.scores.len().min(existing.len());
        let diverged = self.scores[..common] != existing[..common];
        (
            diverged || self.validated_until() < existing_until,
            existing_until,
        )
    }

    /// The criterion names.
    pub fn criteria(&self) -> Vec<&str> {
        self.meta.criteria.iter().map(|c| c.name.as_str()).collect()
    }

    /// The parameter ids.
    pub fn parameter_names(&self) -> Vec<&str> {
        self.meta.parameters.iter().map(|p| p.id.as_str()).collect()
    }

    /// `(iteration, value)` for one (dataset, parameter, criterion), for plotting.
    pub fn series(&self, dataset: &str, parameter: &str, criterion: &str) -> Vec<(u64, f64)> {
        self.scores
            .iter()
            .filter_map(|s| Some((s.iteration, s.get(dataset, parameter, criterion)?)))
            .collect()
    }

    /// The best (iteration, parameter) for one (dataset, criterion) over everything stored.
    ///
    /// NaN never wins; ties go to the earliest iteration, then the first parameter. `None` when
    /// the criterion is unknown or has no finite-or-infinite value.
    pub fn best(&self, dataset: &str, criterion: &str) -> Option<Best> {
        let crit = self.meta.criteria.iter().find(|c| c.name == criterion)?;
        let mut best: Option<Best> = None;
        for s in &self.scores {
            for p in &self.meta.parameters {
                let Some(v) = s.get(dataset, &p.id, criterion) else {
                    continue;
                };
                if best
                    .as_ref()
                    .map_or(!v.is_nan(), |b| crit.is_better(v, b.value))
                {
                    best = Some(Best {
                        dataset: dataset.to_owned(),
                        criterion: criterion.to_owned(),
                        iteration: s.iteration,
                        parameter: p.id.clone(),
                        value: v,
                    });
                }
            }
        }
        best
    }

    /// Best values along `dim`, per criterion (and per dataset and the other axis).
    ///
    /// With [`BestDim::Iteration`], one entry per (dataset, parameter, criterion) holding its
    /// best iteration; with [`BestDim::Parameter`], one per (dataset, iteration, criterion)
    /// holding its best parameter. Same NaN and tie rules as [`best`](Self::best); groups with
    /// only NaN are left out.
    pub fn get_best(&self, dim: BestDim) -> Vec<Best> {
        let mut out = Vec::new();
        for dataset in &self.meta.datasets {
            for crit in &self.meta.criteria {
                match dim {
                    BestDim::Iteration => {
                        for p in &self.meta.parameters {
                            let candidates = self.scores.iter().map(|s| {
                                (
                                    s.iteration,
                                    p.id.as_str(),
                                    s.get(dataset, &p.id, &crit.name),
                                )
                            });
                            out.extend(pick(dataset, crit, candidates));
                        }
                    }
                    BestDim::Parameter => {
                        for s in &self.scores {
                            let candidates = self.meta.parameters.iter().map(|p| {
                                (
                                    s.iteration,
                                    p.id.as_str(),
                                    s.get(dataset, &p.id, &crit.name),
                                )
                            });
                            out.extend(pick(dataset, crit, candidates));
                        }
                    }
                }
            }
        }
        out
    }
}

fn pick<'a>(
    dataset: &str,
    crit: &Criterion,
    candidates: impl Iterator<Item = (u64, &'a str, Option<f64>)>,
) -> Option<Best> {
    let mut best: Option<(u64, &str, f64)> = None;
    for (iteration, parameter, value) in candidates {
        let Some(v) = value else { continue };
        if best.map_or(!v.is_nan(), |(_, _, b)| crit.is_better(v, b)) {
            best = Some((iteration, parameter, v));
        }
    }
    best.map(|(iteration, parameter, value)| Best {
        dataset: dataset.to_owned(),
        criterion: crit.name.clone(),
        iteration,
        parameter: parameter.to_owned(),
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> ValidationMeta {
        let param = |t: f64| ParameterSet {
            id: format!("threshold={t:.2}"),
            values: BTreeMap::from([("threshold".to_owned(), t)]),
        };
        ValidationMeta {
            parameters: vec![param(0.25), param(0.5)],
            datasets: vec!["val0".into()],
            criteria: vec![Criterion::new("dice", true), Criterion::new("voi", false)],
        }
    }

    fn iter_scores(iteration: u64, values: [[f64; 2]; 2]) -> ValidationIterationScores {
        // values[param][criterion]
        let mut per_param = BTreeMap::new();
        for (p, pid) in ["threshold=0.25", "threshold=0.50"].iter().enumerate() {
            per_param.insert(
                (*pid).to_owned(),
                BTreeMap::from([
                    ("dice".to_owned(), Score(values[p][0])),
                    ("voi".to_owned(), Score(values[p][1])),
                ]),
            );
        }
        ValidationIterationScores {
            iteration,
            scores: BTreeMap::from([("val0".to_owned(), per_param)]),
        }
    }

    fn sample() -> ValidationScores {
        let mut s = ValidationScores::new(meta());
        s.add_iteration_scores(iter_scores(100, [[0.5, 2.0], [0.6, 1.5]]))
            .unwrap();
        s.add_iteration_scores(iter_scores(200, [[0.8, f64::NAN], [0.7, 1.0]]))
            .unwrap();
        s.add_iteration_scores(iter_scores(300, [[0.8, 1.0], [f64::NAN, 3.0]]))
            .unwrap();
        s
    }

    #[test]
    fn duplicate_and_unknown_keys_are_errors() {
        let mut s = sample();
        assert!(matches!(
            s.add_iteration_scores(iter_scores(200, [[0.0; 2]; 2])),
            Err(CoreError::DuplicateIteration(200))
        ));
        let mut bad = iter_scores(400, [[0.0; 2]; 2]);
        bad.scores.insert("nope".into(), BTreeMap::new());
        assert!(matches!(
            s.add_iteration_scores(bad),
            Err(CoreError::UnknownScoreKey {
                what: "dataset",
                ..
            })
        ));
        // Older iterations are inserted in order.
        s.add_iteration_scores(iter_scores(50, [[0.0; 2]; 2]))
            .unwrap();
        let its: Vec<u64> = s.scores().iter().map(|s| s.iteration).collect();
        assert_eq!(its, vec![50, 100, 200, 300]);
    }

    #[test]
    fn validated_until_and_delete_after() {
        let mut s = sample();
        assert_eq!(s.validated_until(), 301);
        s.delete_after(300);
        assert_eq!(s.validated_until(), 201);
        s.delete_after(0);
        assert_eq!(s.validated_until(), 0);
    }

    #[test]
    fn best_ignores_nan_and_breaks_ties_early() {
        let s = sample();
        // dice 0.8 at 200 and 300 (param 0.25): earliest iteration wins.
        let b = s.best("val0", "dice").unwrap();
        assert_eq!(
            (b.iteration, b.parameter.as_str(), b.value),
            (200, "threshold=0.25", 0.8)
        );
        // voi lower is better; 1.0 at (200, 0.50) and (300, 0.25): earliest iteration wins.
        let b = s.best("val0", "voi").unwrap();
        assert_eq!((b.iteration, b.parameter.as_str()), (200, "threshold=0.50"));
        assert!(s.best("val0", "nope").is_none());
        assert!(s.best("other", "dice").is_none());
    }

    #[test]
    fn get_best_along_each_dim() {
        let s = sample();
        let by_iter = s.get_best(BestDim::Iteration);
        // 1 dataset x 2 criteria x 2 params.
        assert_eq!(by_iter.len(), 4);
        let dice_p50 = by_iter
            .iter()
            .find(|b| b.criterion == "dice" && b.parameter == "threshold=0.50")
            .unwrap();
        assert_eq!((dice_p50.iteration, dice_p50.value), (200, 0.7));
        let by_param = s.get_best(BestDim::Parameter);
        assert_eq!(by_param.len(), 6);
        let voi_200 = by_param
            .iter()
            .find(|b| b.criterion == "voi" && b.iteration == 200)
            .unwrap();
        // NaN at the first parameter never wins.
        assert_eq!(voi_200.parameter, "threshold=0.50");
        let dice_300 = by_param
            .iter()
            .find(|b| b.criterion == "dice" && b.iteration == 300)
            .unwrap();
        assert_eq!(dice_300.parameter, "threshold=0.25");
    }

    #[test]
    fn all_nan_has_no_best() {
        let mut s = ValidationScores::new(meta());
        s.add_iteration_scores(iter_scores(1, [[f64::NAN; 2]; 2]))
            .unwrap();
        assert!(s.best("val0", "dice").is_none());
        assert!(s.get_best(BestDim::Iteration).is_empty());
    }

    #[test]
    fn compare_reports_replace_and_existing_until() {
        let s = sample();
        let all = s.scores().to_vec();
        assert_eq!(s.compare(&[]), (false, 0));
        assert_eq!(s.compare(&all[..1]), (false, 101));
        assert_eq!(s.compare(&all), (false, 301));
        let shorter = s.subscores(all[..1].to_vec()).unwrap();
        assert_eq!(shorter.compare(&all), (true, 301));
        let mut diverged = all.clone();
        diverged[0] = iter_scores(100, [[0.0; 2]; 2]);
        assert_eq!(s.compare(&diverged), (true, 301));
    }

    #[test]
    fn scores_round_trip_json_with_nan_and_infinity() {
        let mut s = iter_scores(7, [[f64::NAN, f64::INFINITY], [f64::NEG_INFINITY, 0.25]]);
        s.iteration = 7;
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains("null") && json.contains("\"Infinity\""));
        let back: ValidationIterationScores = serde_json::from_str(&json).unwrap();
        assert!(back.get("val0", "threshold=0.25", "dice").unwrap().is_nan());
        assert_eq!(
            back.get("val0", "threshold=0.25", "voi"),
            Some(f64::INFINITY)
        );
        assert_eq!(
            back.get("val0", "threshold=0.50", "dice"),
            Some(f64::NEG_INFINITY)
        );
        assert_eq!(back.get("val0", "threshold=0.50", "voi"), Some(0.25));
        assert!(serde_json::from_str::<Score>("\"bogus\"").is_err());
    }
}
