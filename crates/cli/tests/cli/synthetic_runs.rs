//! Synthetic runs written through the stores, for the `runs` and `plot` command tests.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;

use dacapo_core::{
    Criterion, NamedTensor, ParameterSet, Score, TensorMap, TrainingIterationStats, TrainingStats,
    ValidationIterationScores, ValidationMeta, ValidationScores,
};
use dacapo_store::{
    BestRecord, FileStatsStore, LocalWeightsStore, StatsStore, TrainState, Weights, WeightsStore,
};

use crate::util::{dacapo, run_name, tiny};

/// The loss of step `i` of the synthetic runs: decays over two decades, with a wiggle.
pub fn loss(i: u64) -> f64 {
    (-(i as f64) / 60.0).exp() * (1.0 + 0.2 * ((i as f64) * 0.7).sin()) + 0.005
}

/// Dice of the synthetic runs at `iteration` for threshold `t`; peaks at iteration 200.
pub fn dice(iteration: u64, t: f64) -> f64 {
    let x = iteration as f64 / 100.0;
    0.9 - 0.1 * (x - 2.0).powi(2) / 4.0 - (t - 0.5).abs() * 0.2
}

/// VOI of the synthetic runs (lower is better); falls with the iteration.
pub fn voi(iteration: u64, t: f64) -> f64 {
    2.0 / (1.0 + iteration as f64 / 100.0) + (t - 0.25).abs()
}

/// The two thresholds every synthetic run sweeps.
pub const THRESHOLDS: [f64; 2] = [0.25, 0.5];

/// Writes run `name` under `root`: config, `trained` steps of stats, checkpoints and
/// validations every `interval` steps up to `trained`, and best records.
pub fn make_run(root: &Path, name: &str, train_until: u64, interval: u64, trained: u64) {
    let config = tiny(root, name)
        .root(root)
        .schedule(train_until, interval)
        .validate()
        .with(|c| c.datasplit.validate[0].name = Some("val0".into()))
        .toml();
    std::fs::create_dir_all(root.join(name)).unwrap();
    std::fs::write(root.join(name).join("run.toml"), config).unwrap();
    let run = &run_name(name);
    let weights = LocalWeightsStore::new(root).with_fsync(false);
    let stats_store = FileStatsStore::new(root);

    let stats = TrainingStats::from_records((0..trained).map(|i| TrainingIterationStats {
        iteration: i,
        loss: loss(i),
        time: 0.01,
    }))
    .unwrap();
    stats_store.store_training_stats(run, &stats).unwrap();

    let meta = ValidationMeta {
        parameters: THRESHOLDS
            .iter()
            .map(|&t| ParameterSet {
                id: format!("threshold={t:.2}"),
                values: BTreeMap::from([("threshold".to_owned(), t)]),
            })
            .collect(),
        datasets: vec!["val0".to_owned()],
        criteria: vec![Criterion::new("dice", true), Criterion::new("voi", false)],
    };
    let mut scores = ValidationScores::new(meta);
    let mut n = interval;
    while n <= trained {
        let model = TensorMap::from([(
            "w".to_owned(),
            NamedTensor::from_f32(vec![2], &[n as f32, 1.0]).unwrap(),
        )]);
        let w = Weights {
            model,
            optimizer: TensorMap::new(),
            state: TrainState::new(n, "hash", "flex", 42),
        };
        weights.store_weights(run, n, &w).unwrap();
        let per_param = THRESHOLDS
            .iter()
            .map(|&t| {
                (
                    format!("threshold={t:.2}"),
                    BTreeMap::from([
                        ("dice".to_owned(), Score(dice(n, t))),
                        ("voi".to_owned(), Score(voi(n, t))),
                    ]),
                )
            })
            .collect();
        scores
            .add_iteration_scores(ValidationIterationScores {
                iteration: n,
                scores: BTreeMap::from([("val0".to_owned(), per_param)]),
            })
            .unwrap();
        n += interval;
    }
    stats_store
        .store_validation_iteration_scores(run, &scores)
        .unwrap();
    for c in ["dice", "voi"] {
        if let Some(b) = scores.best("val0", c) {
            let rec = BestRecord::from_best(&b, c == "dice");
            weights.store_best(run, &rec).unwrap();
        }
    }
}

/// Runs `dacapo args...` on the stores under `root` (through `DACAPO_ROOT`).
pub fn at_root(root: &Path, args: &[&str]) -> Output {
    dacapo()
        .args(args)
        .env("DACAPO_ROOT", root)
        .output()
        .unwrap()
}
