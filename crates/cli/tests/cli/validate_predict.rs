//! `dacapo validate` and `dacapo predict` on a tiny run trained through `dacapo train`.

use std::path::{Path, PathBuf};
use std::process::Output;

use dacapo_data::ZarrArray;
use dacapo_store::{FileStatsStore, LocalWeightsStore, RunLock, StatsStore, WeightsStore};

use crate::util::{self, fails, ok, run_name, tiny, train};

/// Runs `dacapo args... --root ROOT`.
fn dacapo(root: &Path, args: &[&str]) -> Output {
    util::dacapo()
        .args(args)
        .arg("--root")
        .arg(root)
        .output()
        .unwrap()
}

/// Trains the tiny run `tiny` with validation; returns (dir, root).
fn trained() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let run = tiny(dir.path(), "tiny").schedule(4, 2).validate();
    train(&run.write(dir.path()));
    let root = dir.path().join("runs");
    (dir, root)
}

#[test]
fn unknown_runs_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let err = fails(&dacapo(dir.path(), &["validate", "--run", "nope"]));
    assert!(err.contains("unknown run `nope`"), "{err}");
    let err = fails(&dacapo(
        dir.path(),
        &[
            "predict",
            "--run",
            "nope",
            "--iteration",
            "2",
            "--input",
            "a.zarr/raw",
            "--output",
            "b.zarr",
        ],
    ));
    assert!(err.contains("unknown run `nope`"), "{err}");
    let err = fails(&dacapo(dir.path(), &["validate", "--run", "../x"]));
    assert!(err.contains("invalid run name \"../x\""), "{err}");
}

#[test]
fn validate_and_predict_a_trained_run() {
    let (dir, root) = trained();
    let stats = FileStatsStore::new(&root);
    let weights = LocalWeightsStore::new(&root);
    assert_eq!(weights.iterations(&run_name("tiny")).unwrap(), [2, 4]);
    let trained_scores = stats
        .retrieve_validation_iteration_scores(&run_name("tiny"))
        .unwrap();
    assert_eq!(trained_scores.scores().len(), 2);

    // Missing checkpoints and bad --best values are errors that say what exists.
    let err = fails(&dacapo(
        &root,
        &["validate", "--run", "tiny", "--iteration", "3"],
    ));
    assert!(err.contains("no committed checkpoint 3"), "{err}");
    assert!(err.contains("[2, 4]"), "{err}");
    let input = format!("{}/data.zarr/raw_val", dir.path().display());
    let output = format!("{}/out.zarr", dir.path().display());
    let predict = |extra: &[&str]| {
        let mut args = vec![
            "predict", "--run", "tiny", "--input", &input, "--output", &output,
        ];
        args.extend_from_slice(extra);
        dacapo(&root, &args)
    };
    let err = fails(&predict(&["--iteration", "3"]));
    assert!(err.contains("no committed checkpoint 3"), "{err}");
    let err = fails(&predict(&["--best", "val"]));
    assert!(err.contains("--best expects DATASET/CRITERION"), "{err}");
    let err = fails(&predict(&["--best", "val/nonsense"]));
    assert!(err.contains("criterion `nonsense`"), "{err}");
    assert!(err.contains("val/dice"), "{err}");
    let err = fails(&predict(&["--iteration", "2", "--best", "val/dice"]));
    assert!(err.contains("cannot be used with"), "{err}");
    let err = fails(&dacapo(
        &root,
        &[
            "predict",
            "--run",
            "tiny",
            "--iteration",
            "2",
            "--input",
            &output,
            "--output",
            &output,
        ],
    ));
    assert!(err.contains("names a container but no array"), "{err}");

    // A writer holding the lock is named.
    let lock = RunLock::acquire(&root, &run_name("tiny")).unwrap();
    let err = fails(&dacapo(&root, &["validate", "--run", "tiny"]));
    assert!(
        err.contains(&format!("pid {}", std::process::id())),
        "{err}"
    );
    drop(lock);

    // Re-validating the latest checkpoint gives the same scores (prediction is deterministic).
    let out = ok(&dacapo(&root, &["validate", "--run", "tiny"]));
    assert!(out.contains("checkpoint 4 on val: "), "{out}");
    assert!(out.contains("dice "), "{out}");
    let again = stats
        .retrieve_validation_iteration_scores(&run_name("tiny"))
        .unwrap();
    assert_eq!(again, trained_scores);
    let out = ok(&dacapo(&root, &["validate", "--run", "tiny", "--all"]));
    assert!(out.contains("checkpoint 2 on val"), "{out}");
    assert!(out.contains("best records unchanged"), "{out}");

    // predict --best writes what validation predicted for that checkpoint.
    let record = weights
        .retrieve_best(&run_name("tiny"), "val", "dice")
        .unwrap();
    ok(&predict(&["--best", "val/dice"]));
    let written = ZarrArray::open(Path::new(&output), "prediction", Some(2)).unwrap();
    assert_eq!(written.meta().shape, [1, 64, 64]);
    let written = written.read_f32(&[0, 0], &[64, 64]).unwrap();
    let validation = root
        .join("tiny/validation")
        .join(record.iteration.to_string())
        .join("val.zarr");
    let validated = ZarrArray::open(&validation, "prediction", Some(2))
        .unwrap()
        .read_f32(&[0, 0], &[64, 64])
        .unwrap();
    let diff = (&written - &validated)
        .iter()
        .fold(0.0f32, |m, v| m.max(v.abs()));
    assert!(diff < 1e-6, "max difference {diff}");
    // The same job again finds every block done; another checkpoint on the existing output
    // is refused without --overwrite.
    let err = String::from_utf8_lossy(&predict(&["--best", "val/dice"]).stderr).into_owned();
    assert!(err.contains("were done already"), "{err}");
    let other = if record.iteration == 2 { "4" } else { "2" };
    let err = fails(&predict(&["--iteration", other]));
    assert!(
        err.contains("already exists with the prediction of another job"),
        "{err}"
    );
    ok(&predict(&["--iteration", other, "--overwrite"]));
}
