//! Validation inside the training loop, end to end on tiny synthetic runs: stored scores,
//! best records and retention, resume, failures, and seamless blockwise prediction.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use burn::tensor::Device;
use common::{Recording, quiet, run_dir, run_name, stores, tiny_config};
use dacapo_core::config::{AffinityLoss, AffinityPostProcess, TaskConfig};
use dacapo_core::testing::TinyRun;
use dacapo_core::{ValidationIterationScores, ValidationMeta};
use dacapo_data::{Dataset, OpenOptions, ZarrArray};
use dacapo_models::{Task, UNet, model_to_tensors};
use dacapo_runtime::{NoProgress, NoValidation, Progress, Validate, build_model, load_best};
use dacapo_trainer::{TrainerError, train};
use dacapo_validator::RunValidator;
use dacapo_validator::run::{network_blocks, predict_array};

fn close(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= 1e-9 * a.abs().max(1.0)
}

fn assert_scores_close(a: &ValidationIterationScores, b: &ValidationIterationScores) {
    assert_eq!(a.iteration, b.iteration);
    assert_eq!(
        a.scores.keys().collect::<Vec<_>>(),
        b.scores.keys().collect::<Vec<_>>()
    );
    for (dataset, params) in &a.scores {
        for (param, criteria) in params {
            for (criterion, value) in criteria {
                let other = b.get(dataset, param, criterion).unwrap();
                assert!(
                    close(value.0, other),
                    "{dataset}/{param}/{criterion}: {} vs {other}",
                    value.0
                );
            }
        }
    }
}

#[test]
fn best_records_point_to_kept_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_config(dir.path(), "best", 6, 2);
    let stores = stores(&config);
    let mut validator = Recording::new(RunValidator::new(&config).unwrap());
    train(&config, &stores, &quiet(), &mut validator).unwrap();
    assert_eq!(validator.validated, [2, 4, 6]);

    let scores = stores
        .stats
        .retrieve_validation_iteration_scores(&run_name("best"))
        .unwrap();
    let iterations: Vec<u64> = scores.scores().iter().map(|s| s.iteration).collect();
    assert_eq!(iterations, [2, 4, 6]);
    assert_eq!(scores.meta.datasets, ["val"]);
    let params: Vec<&str> = scores.parameter_names();
    // Each default threshold with each default minimum component size (0 written without).
    let expected: Vec<String> = ["-0.5", "-0.25", "0", "0.25", "0.5"]
        .iter()
        .flat_map(|t| {
            [
                format!("threshold={t}"),
                format!("threshold={t},min_size=25"),
                format!("threshold={t},min_size=100"),
            ]
        })
        .collect();
    assert_eq!(params, expected);
    assert_eq!(scores.meta.criteria.len(), 13);
    let dice = scores
        .meta
        .criteria
        .iter()
        .find(|c| c.name == "dice")
        .unwrap();
    assert!(dice.higher_is_better);
    let voi = scores
        .meta
        .criteria
        .iter()
        .find(|c| c.name == "voi")
        .unwrap();
    assert!(!voi.higher_is_better);
    for s in scores.scores() {
        assert_eq!(s.scores["val"].len(), 15);
        assert!(s.scores["val"].values().all(|c| c.len() == 13));
    }

    // Every best record is the in-memory best, at the path retrieve_best reads, and points to
    // a committed checkpoint that retention kept.
    let kept = stores.weights.iterations(&run_name("best")).unwrap();
    let mut best_iterations = BTreeSet::new();
    for criterion in &scores.meta.criteria {
        let name = &criterion.name;
        match scores.best("val", name) {
            Some(best) => {
                let record = stores
                    .weights
                    .retrieve_best(&run_name("best"), "val", name)
                    .unwrap();
                assert_eq!(record.iteration, best.iteration, "{name}");
                assert_eq!(record.parameter, best.parameter, "{name}");
                assert!(close(record.value, best.value), "{name}");
                assert_eq!(record.higher_is_better, criterion.higher_is_better);
                assert!(kept.contains(&record.iteration), "{name}: {kept:?}");
                let path = run_dir(&config).join("val").join(format!("{name}.json"));
                let json: serde_json::Value =
                    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
                assert_eq!(json["iteration"], record.iteration, "{}", path.display());
                best_iterations.insert(record.iteration);
            }
            None => assert!(
                stores
                    .weights
                    .retrieve_best(&run_name("best"), "val", name)
                    .is_err()
            ),
        }
    }
    // keep_last = 1: the newest checkpoint plus the best ones, nothing else.
    let mut expected = best_iterations.clone();
    expected.insert(6);
    assert_eq!(kept.iter().copied().collect::<BTreeSet<_>>(), expected);
    let removed: Vec<u64> = [2, 4]
        .into_iter()
        .filter(|n| !expected.contains(n))
        .collect();
    assert_eq!(validator.removed, removed);
    // Predictions of removed checkpoints are gone; those of kept ones are readable.
    for n in [2u64, 4, 6] {
        let container = run_dir(&config)
            .join("validation")
            .join(n.to_string())
            .join("val.zarr");
        assert_eq!(
            container.exists(),
            expected.contains(&n),
            "{}",
            container.display()
        );
        if expected.contains(&n) {
            let a = ZarrArray::open(&container, "prediction", Some(2)).unwrap();
            assert_eq!(a.meta().shape, [1, 64, 64]);
        }
    }

    // load_best loads exactly the recorded checkpoint, and re-validating it gives its scores.
    let (model, task) = build_model(&config, &Device::flex()).unwrap();
    let (loaded, record) =
        load_best(&*stores.weights, &run_name("best"), "val", "dice", model).unwrap();
    let stored = stores
        .weights
        .retrieve_weights(&run_name("best"), record.iteration)
        .unwrap();
    assert_eq!(model_to_tensors(&loaded).unwrap(), stored.model);
    let mut again = RunValidator::new(&config).unwrap();
    let rescored = again
        .validate_model(record.iteration, &loaded, &task, &NoProgress)
        .unwrap();
    let original = scores
        .scores()
        .iter()
        .find(|s| s.iteration == record.iteration)
        .unwrap();
    assert_scores_close(&rescored, original);
}

#[test]
fn resumed_run_keeps_the_validation_of_its_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let first = tiny_config(dir.path(), "resume", 4, 2);
    let stores = stores(&first);
    let mut v = Recording::new(RunValidator::new(&first).unwrap());
    train(&first, &stores, &quiet(), &mut v).unwrap();
    assert_eq!(v.validated, [2, 4]);
    let before = stores
        .stats
        .retrieve_validation_iteration_scores(&run_name("resume"))
        .unwrap();

    // train_until may change; the run resumes from checkpoint 4 and validates only 6.
    let longer = tiny_config(dir.path(), "resume", 6, 2);
    let mut v = Recording::new(RunValidator::new(&longer).unwrap());
    let summary = train(&longer, &stores, &quiet(), &mut v).unwrap();
    assert_eq!(summary.resumed_from, 4);
    assert_eq!(v.validated, [6]);
    let after = stores
        .stats
        .retrieve_validation_iteration_scores(&run_name("resume"))
        .unwrap();
    let iterations: Vec<u64> = after.scores().iter().map(|s| s.iteration).collect();
    assert_eq!(iterations, [2, 4, 6]);
    assert_eq!(after.scores()[..2], before.scores()[..]);
}

#[test]
fn checkpoint_never_validated_is_validated_on_resume() {
    // A run trained without validation (as if killed before its validation was stored).
    let dir = tempfile::tempdir().unwrap();
    let first = tiny_config(dir.path(), "late", 4, 2);
    let stores = stores(&first);
    train(&first, &stores, &quiet(), &mut NoValidation).unwrap();
    let longer = tiny_config(dir.path(), "late", 6, 2);
    let mut v = Recording::new(RunValidator::new(&longer).unwrap());
    train(&longer, &stores, &quiet(), &mut v).unwrap();
    assert_eq!(v.validated, [4, 6]);
    let scores = stores
        .stats
        .retrieve_validation_iteration_scores(&run_name("late"))
        .unwrap();
    let iterations: Vec<u64> = scores.scores().iter().map(|s| s.iteration).collect();
    assert_eq!(iterations, [4, 6]);
}

/// Overwrites every chunk file of the array directory `dir` with bytes no codec accepts.
fn corrupt_chunks(dir: &Path) -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            n += corrupt_chunks(&path);
        } else if !matches!(
            name.as_str(),
            "zarr.json" | ".zarray" | ".zattrs" | ".zgroup"
        ) {
            std::fs::write(&path, b"not a compressed chunk").unwrap();
            n += 1;
        }
    }
    n
}

/// Corrupts the chunks of `dir` just before the first validation.
struct BreakFirst {
    inner: RunValidator,
    dir: std::path::PathBuf,
}

impl Validate for BreakFirst {
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
        assert!(corrupt_chunks(&self.dir) > 0);
        self.inner.validate(iteration, model, task, progress)
    }
}

#[test]
fn unreadable_validation_data_stops_the_run_after_the_commit() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_config(dir.path(), "broken", 4, 2);
    let stores = stores(&config);
    // The datasets open fine (the trainer opens them too); their chunks break during
    // training, before the first validation reads them.
    let raw_val = dir.path().join("data.zarr").join("raw_val");
    let mut validator = BreakFirst {
        inner: RunValidator::new(&config).unwrap(),
        dir: raw_val,
    };
    let err = train(&config, &stores, &quiet(), &mut validator).unwrap_err();
    assert!(
        matches!(err, TrainerError::Validation { iteration: 2, .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("checkpoint 2"), "{msg}");
    assert!(msg.contains("committed"), "{msg}");
    assert!(msg.contains("raw_val"), "{msg}");
    assert!(msg.contains("validation dataset \"val\""), "{msg}");
    // The checkpoint and the stats up to it are stored; no scores or best records were.
    assert_eq!(
        stores
            .weights
            .latest_iteration(&run_name("broken"))
            .unwrap(),
        Some(2)
    );
    let stats = stores
        .stats
        .retrieve_training_stats(&run_name("broken"))
        .unwrap();
    assert_eq!(stats.trained_until(), 2);
    let scores = stores
        .stats
        .retrieve_validation_iteration_scores(&run_name("broken"))
        .unwrap();
    assert!(scores.scores().is_empty());
    assert!(
        stores
            .weights
            .retrieve_best(&run_name("broken"), "val", "dice")
            .is_err()
    );
}

#[test]
fn blockwise_prediction_has_no_seams() {
    // A two-level network (grid 4): small blocks must give the whole-array prediction.
    let dir = tempfile::tempdir().unwrap();
    let mut config = tiny_config(dir.path(), "seams", 1, 1);
    let dacapo_core::config::ArchitectureConfig::Unet(u) = &mut config.architecture;
    u.downsample_factors = vec![vec![2, 2], vec![2, 2]];
    let (model, task) = build_model(&config, &Device::flex()).unwrap();
    dacapo_data::ensure_synthetic(config.datasplit.synthetic.as_ref().unwrap()).unwrap();
    let ds = Dataset::open(&config.datasplit.validate[0], 2, &OpenOptions::default()).unwrap();
    // 62 x 63: the last block of each axis is shifted back by a non-multiple of the output
    // block, so it only tiles seamlessly if its start stays on the pooling grid.
    let raw = ds.raw().unwrap();
    let raw = raw.slice(ndarray::s![.., ..62, ..63]).into_dyn();
    let spatial = [62, 63];
    let whole = network_blocks(model.config(), Some(&[400, 400]), &spatial).unwrap();
    assert_eq!(
        dacapo_validator::blockwise::block_count(&spatial, &whole.spec),
        1
    );
    let reference = predict_array(&model, &task, raw.view(), &whole, None).unwrap();
    assert_eq!(reference.shape(), [1, 62, 63]);
    for block in [[60, 60], [64, 72], [76, 60]] {
        let blocks = network_blocks(model.config(), Some(&block), &spatial).unwrap();
        let n = dacapo_validator::blockwise::block_count(&spatial, &blocks.spec);
        assert!(n > 1, "{block:?} gives {n} block(s)");
        let tiled = predict_array(&model, &task, raw.view(), &blocks, None).unwrap();
        let diff = (&tiled - &reference)
            .iter()
            .fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(diff < 1e-4, "block {block:?}: max difference {diff}");
    }
}

#[test]
fn resume_restores_best_records_that_lag_the_scores() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_config(dir.path(), "lag", 4, 2);
    let stores = stores(&config);
    train(
        &config,
        &stores,
        &quiet(),
        &mut RunValidator::new(&config).unwrap(),
    )
    .unwrap();
    let dice = stores
        .weights
        .retrieve_best(&run_name("lag"), "val", "dice")
        .unwrap();
    // As if the trainer died after storing the scores of checkpoint 4 but before its records.
    std::fs::remove_file(run_dir(&config).join("val").join("dice.json")).unwrap();
    let mut v = Recording::new(RunValidator::new(&config).unwrap());
    let summary = train(&config, &stores, &quiet(), &mut v).unwrap();
    assert_eq!(summary.resumed_from, 4);
    assert!(v.validated.is_empty());
    assert_eq!(
        stores
            .weights
            .retrieve_best(&run_name("lag"), "val", "dice")
            .unwrap(),
        dice
    );
}

#[test]
fn affinity_runs_sweep_each_post_processing_with_each_min_size() {
    // Both post-processings of the affinities task, inside the training loop: every swept
    // value with every minimum size is stored under its readable id and scored.
    for (post_process, expected) in [
        (
            AffinityPostProcess::Mws,
            [
                "bias=0.5",
                "bias=0.5,min_size=10",
                "bias=0.9",
                "bias=0.9,min_size=10",
            ],
        ),
        (
            AffinityPostProcess::Watershed,
            [
                "threshold=0.5",
                "threshold=0.5,min_size=10",
                "threshold=0.9",
                "threshold=0.9,min_size=10",
            ],
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let config = TinyRun::new("aff", dir.path())
            .validate()
            .schedule(2, 2)
            .with(|c| {
                c.task = TaskConfig::Affinities {
                    neighborhood: Some(vec![vec![1, 0], vec![0, 1], vec![3, 0], vec![0, 3]]),
                    loss: AffinityLoss::Bce,
                    biases: vec![0.5, 0.9],
                    post_process,
                    thresholds: vec![0.5, 0.9],
                };
                c.validation.min_sizes = vec![0, 10];
            })
            .build();
        let stores = stores(&config);
        let mut validator = Recording::new(RunValidator::new(&config).unwrap());
        train(&config, &stores, &quiet(), &mut validator).unwrap();
        assert_eq!(validator.validated, [2], "{post_process:?}");
        let scores = stores
            .stats
            .retrieve_validation_iteration_scores(&run_name("aff"))
            .unwrap();
        assert_eq!(scores.parameter_names(), expected, "{post_process:?}");
        let stored = &scores.scores()[0].scores["val"];
        for id in expected {
            let voi = stored[id]["voi"].0;
            assert!(
                voi.is_finite() && voi >= 0.0,
                "{post_process:?} {id}: voi {voi}"
            );
        }
    }
}
