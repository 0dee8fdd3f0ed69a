//! Store demo: a pretend training run that writes checkpoints, stats, validation scores and
//! a best record into `runs/` (or the directory given as the first argument), then reads
//! them back.
//!
//! ```text
//! cargo run -p dacapo-store --example store_demo [ROOT]
//! ```
//! Run it twice: the second run resumes from the latest checkpoint, cuts the stats back to
//! it and continues, as the trainer does after a kill.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::error::Error;

use dacapo_core::{
    Criterion, NamedTensor, ParameterSet, RunName, Score, TensorMap, TrainingIterationStats,
    ValidationIterationScores, ValidationMeta, ValidationScores,
};
use dacapo_store::{
    BestRecord, FileStatsStore, LocalWeightsStore, RunLock, StatsStore, TrainState, Weights,
    WeightsStore,
};

const RUN: &str = "store-demo";
const INTERVAL: u64 = 50;
const STEPS_PER_INVOCATION: u64 = 200;

/// A tiny "model": one conv layer whose weights drift with the iteration.
fn weights_at(iteration: u64) -> Weights {
    let w: Vec<f32> = (0..36)
        .map(|i| (i as f32 + iteration as f32) * 1e-3)
        .collect();
    let model = TensorMap::from([
        (
            "conv.weight".to_owned(),
            NamedTensor::from_f32(vec![4, 1, 3, 3], &w).unwrap(),
        ),
        (
            "conv.bias".to_owned(),
            NamedTensor::from_f32(vec![4], &[0.0; 4]).unwrap(),
        ),
    ]);
    let optimizer = TensorMap::from([(
        "conv.weight.exp_avg".to_owned(),
        NamedTensor::from_f32(vec![4, 1, 3, 3], &[0.01; 36]).unwrap(),
    )]);
    Weights {
        model,
        optimizer,
        state: TrainState::new(iteration, "demo-config", "flex", 42),
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    let root = std::env::args().nth(1).unwrap_or_else(|| "runs".to_owned());
    // One writer per run: a second demo started meanwhile fails here, naming this process.
    let run = &RunName::new(RUN)?;
    let _lock = RunLock::acquire(&root, run)?;
    let weights = LocalWeightsStore::new(&root);
    let stats_store = FileStatsStore::new(&root);

    // Resume: latest checkpoint, stats cut back to it, validations up to it kept.
    let start = weights.latest_iteration(run)?.unwrap_or(0);
    if start > 0 {
        let w = weights.retrieve_weights(run, start)?;
        println!(
            "resuming {RUN} from checkpoint {start} ({} model tensors)",
            w.model.len()
        );
    }
    let mut stats = stats_store.retrieve_training_stats(run)?;
    stats.delete_after(start);
    let mut scores = stats_store.retrieve_validation_iteration_scores(run)?;
    scores.delete_after(start + 1);
    if scores.scores().is_empty() {
        scores = ValidationScores::new(ValidationMeta {
            parameters: vec![ParameterSet {
                id: "threshold=0.50".into(),
                values: BTreeMap::from([("threshold".to_owned(), 0.5)]),
            }],
            datasets: vec!["val0".into()],
            criteria: vec![Criterion::new("dice", true)],
        });
    }

    for i in start..start + STEPS_PER_INVOCATION {
        let loss = 1.0 / (1.0 + i as f64 / 100.0);
        stats.add_iteration_stats(TrainingIterationStats {
            iteration: i,
            loss,
            time: 0.01,
        })?;
        let done = i + 1;
        if done.is_multiple_of(INTERVAL) {
            // Stats first, then the checkpoint: a checkpoint never gets ahead of its stats.
            stats_store.store_training_stats(run, &stats)?;
            weights.store_weights(run, done, &weights_at(done))?;
            let dice = 1.0 - loss;
            let table = BTreeMap::from([(
                "val0".to_owned(),
                BTreeMap::from([(
                    "threshold=0.50".to_owned(),
                    BTreeMap::from([("dice".to_owned(), Score(dice))]),
                )]),
            )]);
            scores.add_iteration_scores(ValidationIterationScores {
                iteration: done,
                scores: table,
            })?;
            stats_store.store_validation_iteration_scores(run, &scores)?;
            if let Some(best) = scores.best("val0", "dice") {
                weights.store_best(run, &BestRecord::from_best(&best, true))?;
            }
            let removed = weights.apply_retention(run, 2)?;
            if !removed.is_empty() {
                println!("retention removed checkpoints {removed:?}");
            }
        }
    }
    stats_store.sync(run)?;

    let stored = stats_store.retrieve_training_stats(run)?;
    let best = weights.retrieve_best(run, "val0", "dice")?;
    println!("root: {root}");
    println!("latest checkpoint: {:?}", weights.latest_iteration(run)?);
    println!("checkpoints kept: {:?}", weights.iterations(run)?);
    println!(
        "training stats: {} iterations, last loss {:.4}",
        stored.trained_until(),
        stored.iteration_stats().last().map_or(f64::NAN, |s| s.loss)
    );
    println!(
        "validations: {}, best dice {:.4} at iteration {}",
        stats_store
            .retrieve_validation_iteration_scores(run)?
            .scores()
            .len(),
        best.value,
        best.iteration
    );
    println!(
        "files: {}, {}",
        stats_store.training_stats_path(run).display(),
        weights.checkpoint_dir(run, best.iteration).display()
    );
    Ok(())
}
