//! A run whose config points at remote stores trains, resumes after SIGKILL and validates
//! exactly as with the local stores: weights in an object store (`file://` always; S3 with
//! `DACAPO_TEST_S3_URL`) and stats in PostgreSQL (with `DACAPO_TEST_POSTGRES_URL`). The
//! servers come from `cargo xtask services up`; a URL that is set but whose server is down
//! fails the test.

use std::path::Path;
use std::time::{Duration, Instant};

use dacapo_core::testing::TinyRun;
use dacapo_core::{TrainingStats, ValidationScores};
use dacapo_store::{FileStatsStore, LocalWeightsStore, StatsStore, Weights, WeightsStore};
use dacapo_store_object::ObjectWeightsStore;
use dacapo_store_postgres::PostgresStatsStore;

use crate::util::{run_name, service_url, spawn_train, tiny, train, unique_name};

const TRAIN_UNTIL: u64 = 30;
const INTERVAL: u64 = 10;

/// Run `name` under `<dir>/<name>` with validation, on the shared data of `dir`.
fn run(dir: &Path, name: &str) -> TinyRun {
    tiny(dir, name)
        .schedule(TRAIN_UNTIL, INTERVAL)
        .validate()
        .root(&dir.join(name))
}

/// What a finished run stored.
struct Outcome {
    weights: Weights,
    stats: TrainingStats,
    scores: ValidationScores,
}

fn reference(dir: &Path) -> Outcome {
    let root = dir.join("local");
    let cfg = dir.join("local.toml");
    std::fs::write(&cfg, run(dir, "remote").root(&root).toml()).unwrap();
    train(&cfg);
    let stats = FileStatsStore::new(&root);
    Outcome {
        weights: LocalWeightsStore::new(&root)
            .retrieve_weights(&run_name("remote"), TRAIN_UNTIL)
            .unwrap(),
        stats: stats.retrieve_training_stats(&run_name("remote")).unwrap(),
        scores: stats
            .retrieve_validation_iteration_scores(&run_name("remote"))
            .unwrap(),
    }
}

/// Trains `name` with `stores`, SIGKILLs it after its first checkpoint, resumes it, and
/// checks the result against the local-store reference.
fn kill_resume_and_compare(
    dir: &Path,
    run: TinyRun,
    weights: &dyn WeightsStore,
    stats: &dyn StatsStore,
    expected: &Outcome,
) {
    let name = &run.clone().build().run.name;
    let cfg = run.write(dir);
    let mut child = spawn_train(&cfg);
    let deadline = Instant::now() + Duration::from_secs(180);
    while weights.latest_iteration(name).unwrap().is_none() {
        assert!(Instant::now() < deadline, "no first checkpoint");
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(150));
    let _ = child.kill(); // SIGKILL on Unix.
    child.wait().unwrap();
    let at_kill = weights.latest_iteration(name).unwrap().unwrap();
    eprintln!("{name}: killed at checkpoint {at_kill}");

    train(&cfg);
    let resumed = weights.retrieve_weights(name, TRAIN_UNTIL).unwrap();
    assert!(
        resumed.model == expected.weights.model,
        "model weights differ"
    );
    assert!(
        resumed.optimizer == expected.weights.optimizer,
        "optimizer state differs"
    );
    let trained = stats.retrieve_training_stats(name).unwrap();
    let bits = |s: &TrainingStats| {
        s.since(0)
            .iter()
            .map(|r| (r.iteration, r.loss.to_bits()))
            .collect::<Vec<_>>()
    };
    assert_eq!(bits(&trained), bits(&expected.stats), "losses differ");
    let scores = stats.retrieve_validation_iteration_scores(name).unwrap();
    assert_eq!(
        scores.validated_until(),
        TRAIN_UNTIL + 1,
        "the last checkpoint validated"
    );
    assert_eq!(
        scores.scores(),
        expected.scores.scores(),
        "validation scores differ"
    );
    for criterion in ["dice", "voi"] {
        let best = scores.best("val", criterion).unwrap();
        let record = weights.retrieve_best(name, "val", criterion).unwrap();
        assert_eq!(record.iteration, best.iteration, "{criterion}");
    }
}

#[test]
fn remote_stores_train_resume_and_validate_like_local_ones() {
    let dir = tempfile::tempdir().unwrap();
    let expected = reference(dir.path());

    // Weights in an object store on the local file system: no server needed.
    let objects = dir.path().join("objects");
    std::fs::create_dir_all(&objects).unwrap();
    let url = format!("file://{}", objects.display());
    let name = unique_name("remote");
    let weights = ObjectWeightsStore::from_url(&url).unwrap();
    kill_resume_and_compare(
        dir.path(),
        run(dir.path(), &name).weights_url(&url),
        &weights,
        &FileStatsStore::new(dir.path().join(&name)),
        &expected,
    );

    let test = "remote_stores_train_resume_and_validate_like_local_ones (PostgreSQL + S3)";
    let (Some(pg), Some(s3)) = (
        service_url("DACAPO_TEST_POSTGRES_URL", test),
        service_url("DACAPO_TEST_S3_URL", test),
    ) else {
        return;
    };
    let name = unique_name("remote");
    let s3 = format!("{}/{name}", s3.trim_end_matches('/'));
    kill_resume_and_compare(
        dir.path(),
        run(dir.path(), &name).stats_url(&pg).weights_url(&s3),
        &ObjectWeightsStore::from_url(&s3).unwrap(),
        &PostgresStatsStore::connect(&pg).unwrap(),
        &expected,
    );
}
