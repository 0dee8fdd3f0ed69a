//! A run whose config points at remote stores trains, resumes after SIGKILL and validates
//! exactly as with the local stores: weights in an object store (`file://` always; S3 with
//! `DACAPO_TEST_S3_URL`) and stats in PostgreSQL (with `DACAPO_TEST_POSTGRES_URL`). The
//! servers come from `cargo xtask services up`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dacapo_core::{TrainingStats, ValidationScores};
use dacapo_store::{FileStatsStore, LocalWeightsStore, StatsStore, Weights, WeightsStore};
use dacapo_store_object::ObjectWeightsStore;
use dacapo_store_postgres::PostgresStatsStore;

const TRAIN_UNTIL: u64 = 30;
const INTERVAL: u64 = 10;

mod tiny;

/// The run config; `stores` is extra `[stores]` lines.
fn config(name: &str, root: &Path, data: &Path, stores: &str) -> String {
    tiny::config(name, root, data, (TRAIN_UNTIL, INTERVAL), true, stores)
}

fn train(cfg: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dacapo"));
    cmd.args(["train", "--no-progress"]).arg(cfg);
    cmd
}

fn train_to_end(cfg: &Path) {
    let out = train(cfg).output().unwrap();
    assert!(
        out.status.success(),
        "dacapo train failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What a finished run stored.
struct Outcome {
    weights: Weights,
    stats: TrainingStats,
    scores: ValidationScores,
}

fn reference(dir: &Path, data: &Path) -> Outcome {
    let root = dir.join("local");
    let cfg = dir.join("local.toml");
    std::fs::write(&cfg, config("remote", &root, data, "")).unwrap();
    train_to_end(&cfg);
    let stats = FileStatsStore::new(&root);
    Outcome {
        weights: LocalWeightsStore::new(&root)
            .retrieve_weights("remote", TRAIN_UNTIL)
            .unwrap(),
        stats: stats.retrieve_training_stats("remote").unwrap(),
        scores: stats
            .retrieve_validation_iteration_scores("remote")
            .unwrap(),
    }
}

/// A run name no earlier test run used (the database and bucket outlive test processes).
fn unique_name() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("remote-{}-{nanos}", std::process::id())
}

/// Trains `name` with `stores`, SIGKILLs it after its first checkpoint, resumes it, and
/// checks the result against the local-store reference.
fn kill_resume_and_compare(
    dir: &Path,
    data: &Path,
    name: &str,
    stores: &str,
    weights: &dyn WeightsStore,
    stats: &dyn StatsStore,
    expected: &Outcome,
) {
    let root: PathBuf = dir.join(name);
    let cfg = dir.join(format!("{name}.toml"));
    std::fs::write(&cfg, config(name, &root, data, stores)).unwrap();
    let mut child = train(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
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

    train_to_end(&cfg);
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
    let data = dir.path().join("data.zarr");
    let expected = reference(dir.path(), &data);

    // Weights in an object store on the local file system: no server needed.
    let objects = dir.path().join("objects");
    std::fs::create_dir_all(&objects).unwrap();
    let url = format!("file://{}", objects.display());
    let name = unique_name();
    let weights = ObjectWeightsStore::from_url(&url).unwrap();
    kill_resume_and_compare(
        dir.path(),
        &data,
        &name,
        &format!("weights = \"{url}\""),
        &weights,
        &FileStatsStore::new(dir.path().join(&name)),
        &expected,
    );

    let (Ok(pg), Ok(s3)) = (
        std::env::var("DACAPO_TEST_POSTGRES_URL"),
        std::env::var("DACAPO_TEST_S3_URL"),
    ) else {
        eprintln!(
            "SKIPPED the PostgreSQL + S3 run: DACAPO_TEST_POSTGRES_URL and DACAPO_TEST_S3_URL \
             are not both set (run `cargo xtask services up postgres s3`)"
        );
        return;
    };
    let name = unique_name();
    let s3 = format!("{}/{name}", s3.trim_end_matches('/'));
    kill_resume_and_compare(
        dir.path(),
        &data,
        &name,
        &format!("stats = \"{pg}\"\nweights = \"{s3}\""),
        &ObjectWeightsStore::from_url(&s3).unwrap(),
        &PostgresStatsStore::connect(&pg).unwrap(),
        &expected,
    );
}
