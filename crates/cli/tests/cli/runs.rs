//! `dacapo runs ls|show|rm` on synthetic runs written through the stores.

use crate::synthetic_runs::{at_root as dacapo, loss, make_run};
use crate::util::{fails, ok, run_name};
use dacapo_store::{FileStatsStore, LocalWeightsStore, RunLock, StatsStore, WeightsStore};
use serde_json::Value;

/// `alpha`: finished (400 of 400, checkpoints 100..=400); `beta`: stopped at 250 of 1000.
fn two_runs() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    make_run(dir.path(), "beta", 1000, 100, 250);
    make_run(dir.path(), "alpha", 400, 100, 400);
    dir
}

#[test]
fn ls_json_reports_progress_best_and_status() {
    let dir = two_runs();
    let root = dir.path();
    let lock = RunLock::acquire(root, &run_name("beta")).unwrap();
    let runs: Value = serde_json::from_str(&ok(&dacapo(root, &["runs", "ls", "--json"]))).unwrap();
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 2, "the stats store is not a run: {runs:?}");

    let a = &runs[0];
    assert_eq!(a["name"], "alpha");
    assert_eq!(a["task"], "distance");
    assert_eq!(a["train_until"], 400);
    assert_eq!(a["trained_until"], 400);
    assert_eq!(a["latest_checkpoint"], 400);
    assert_eq!(a["last_loss"].as_f64().unwrap(), loss(399));
    assert_eq!(a["status"], "finished");
    assert_eq!(a["holder"], Value::Null);
    // dice peaks at iteration 200 with threshold 0.5 (0.9); voi is lowest at 400 with 0.25.
    let best = a["best"].as_array().unwrap();
    assert_eq!(best.len(), 2);
    assert_eq!(best[0]["criterion"], "dice");
    assert_eq!(best[0]["iteration"], 200);
    assert_eq!(best[0]["parameter"], "threshold=0.50");
    assert!((best[0]["value"].as_f64().unwrap() - 0.9).abs() < 1e-12);
    assert_eq!(best[1]["criterion"], "voi");
    assert_eq!(best[1]["iteration"], 400);
    assert!((best[1]["value"].as_f64().unwrap() - 0.4).abs() < 1e-12);

    let b = &runs[1];
    assert_eq!(b["name"], "beta");
    assert_eq!(b["trained_until"], 250);
    assert_eq!(b["train_until"], 1000);
    assert_eq!(b["latest_checkpoint"], 200);
    assert_eq!(b["status"], "running");
    let holder = b["holder"].as_str().unwrap();
    assert!(
        holder.starts_with(&format!("pid {} ", std::process::id())),
        "{holder}"
    );

    drop(lock);
    let runs: Value = serde_json::from_str(&ok(&dacapo(root, &["runs", "ls", "--json"]))).unwrap();
    assert_eq!(runs[1]["status"], "stopped");
}

#[test]
fn ls_prints_an_aligned_table() {
    let dir = two_runs();
    let out = ok(&dacapo(dir.path(), &["runs", "ls"]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0].starts_with("RUN    TASK      ITERATIONS  CHECKPOINT"),
        "{out}"
    );
    assert!(
        lines[1].starts_with("alpha  distance     400/400         400  "),
        "{out}"
    );
    assert!(
        lines[2].starts_with("beta   distance    250/1000         200  "),
        "{out}"
    );
    assert!(
        lines[1].contains("  finished  val0: dice 0.9000@200 voi 0.4000@400"),
        "{out}"
    );
    assert!(
        lines[2].contains("  stopped   val0: dice 0.9000@200 voi 0.6667@200"),
        "{out}"
    );
    // Every column starts where its header starts.
    let status_col = lines[0].find("STATUS").unwrap();
    assert_eq!(lines[1].find("finished"), Some(status_col));
    assert_eq!(lines[2].find("stopped"), Some(status_col));
}

#[test]
fn ls_without_runs_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let out = ok(&dacapo(dir.path(), &["runs", "ls"]));
    assert_eq!(out, format!("no runs under {}\n", dir.path().display()));
    let missing = dir.path().join("nowhere");
    let out = ok(&dacapo(&missing, &["runs", "ls"]));
    assert!(out.contains("does not exist"), "{out}");
    assert_eq!(
        ok(&dacapo(&missing, &["runs", "ls", "--json"])).trim(),
        "[]"
    );
}

#[test]
fn show_prints_config_checkpoints_best_and_last_validation() {
    let dir = two_runs();
    let out = ok(&dacapo(dir.path(), &["runs", "show", "alpha"]));
    assert!(out.contains("status:      finished\n"), "{out}");
    assert!(
        out.contains("trained:     400 of 400 iterations\n"),
        "{out}"
    );
    assert!(
        out.contains("checkpoints: 100, 200, 300, 400 (4 stored, latest 400)\n"),
        "{out}"
    );
    assert!(
        out.contains("  val0     dice (max)  0.9000        200  threshold=0.50\n"),
        "{out}"
    );
    assert!(out.contains("last validation (iteration 400):\n"), "{out}");
    // At 400: dice 0.8 - 0.05 for threshold 0.25; voi 2/5 + |t - 0.25|.
    assert!(
        out.contains("  val0     threshold=0.25  0.7500  0.4000\n"),
        "{out}"
    );
    assert!(
        out.contains("  val0     threshold=0.50  0.8000  0.6500\n"),
        "{out}"
    );
    assert!(out.contains("  train_until = 400\n"), "{out}");

    let v: Value = serde_json::from_str(&ok(&dacapo(
        dir.path(),
        &["runs", "show", "beta", "--json"],
    )))
    .unwrap();
    assert_eq!(v["name"], "beta");
    assert_eq!(v["checkpoints"], serde_json::json!([100, 200]));
    assert_eq!(v["last_validation"]["iteration"], 200);
    let voi = v["last_validation"]["scores"]["val0"]["threshold=0.25"]["voi"]
        .as_f64()
        .unwrap();
    assert!((voi - 2.0 / 3.0).abs() < 1e-12);
    assert_eq!(v["config"]["run"]["train_until"], 1000);
    assert_eq!(v["status"], "stopped");
}

#[test]
fn show_of_an_unknown_run_lists_the_known_ones() {
    let dir = two_runs();
    let err = fails(&dacapo(dir.path(), &["runs", "show", "gamma"]));
    assert!(err.contains("no run `gamma`"), "{err}");
    assert!(err.contains("alpha, beta"), "{err}");
    assert!(err.contains("dacapo runs ls"), "{err}");
    let err = fails(&dacapo(dir.path(), &["runs", "show", "../alpha"]));
    assert!(err.contains("invalid run name \"../alpha\""), "{err}");
}

#[test]
fn rm_needs_confirmation_and_refuses_a_locked_run() {
    let dir = two_runs();
    let root = dir.path();
    let err = fails(&dacapo(root, &["runs", "rm", "alpha"]));
    assert!(err.contains("pass --yes"), "{err}");
    assert!(root.join("alpha").join("run.toml").exists());

    let lock = RunLock::acquire(root, &run_name("alpha")).unwrap();
    let err = fails(&dacapo(root, &["runs", "rm", "alpha", "--yes"]));
    assert!(err.contains("being trained by pid"), "{err}");
    assert!(err.contains("stop that trainer"), "{err}");
    assert!(root.join("alpha").join("run.toml").exists());
    drop(lock);

    let err = fails(&dacapo(root, &["runs", "rm", "gamma", "--yes"]));
    assert!(err.contains("no run `gamma`"), "{err}");
    // A directory that is not a run is never removed.
    std::fs::create_dir_all(root.join("data").join("cells.zarr")).unwrap();
    let err = fails(&dacapo(root, &["runs", "rm", "data", "--yes"]));
    assert!(err.contains("no run `data`"), "{err}");
    assert!(root.join("data").join("cells.zarr").exists());
    let err = fails(&dacapo(root, &["runs", "rm", "stats", "--yes"]));
    assert!(err.contains("no run `stats`"), "{err}");
    assert!(root.join("stats").exists());
}

#[test]
fn rm_removes_a_run_that_died_before_freezing_its_config() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    drop(RunLock::acquire(root, &run_name("early")).unwrap());
    assert_eq!(
        ok(&dacapo(root, &["runs", "rm", "early", "--yes"])),
        "removed run `early`\n"
    );
    assert!(!root.join("early").exists());
}

#[test]
fn rm_removes_the_run_and_its_stats_only() {
    let dir = two_runs();
    let root = dir.path();
    let out = ok(&dacapo(root, &["runs", "rm", "alpha", "--yes"]));
    assert_eq!(out, "removed run `alpha`\n");
    assert!(!root.join("alpha").exists());
    let stats = FileStatsStore::new(root);
    assert!(
        stats
            .retrieve_training_stats(&run_name("alpha"))
            .unwrap()
            .is_empty()
    );
    assert!(
        stats
            .retrieve_validation_iteration_scores(&run_name("alpha"))
            .unwrap()
            .scores()
            .is_empty()
    );
    assert!(!stats.validation_scores_dir(&run_name("alpha")).exists());
    // The other run is untouched.
    assert_eq!(
        stats
            .retrieve_training_stats(&run_name("beta"))
            .unwrap()
            .len(),
        250
    );
    let weights = LocalWeightsStore::new(root);
    assert_eq!(
        weights.iterations(&run_name("beta")).unwrap(),
        vec![100, 200]
    );
}

#[test]
fn rm_keep_best_keeps_best_checkpoints_records_config_and_scores() {
    let dir = two_runs();
    let root = dir.path();
    let out = ok(&dacapo(
        root,
        &["runs", "rm", "alpha", "--keep-best", "--yes"],
    ));
    assert!(out.contains("kept checkpoints 200, 400"), "{out}");
    let weights = LocalWeightsStore::new(root);
    assert_eq!(
        weights.iterations(&run_name("alpha")).unwrap(),
        vec![200, 400]
    );
    assert_eq!(
        weights.latest_iteration(&run_name("alpha")).unwrap(),
        Some(400)
    );
    assert_eq!(
        weights
            .retrieve_best(&run_name("alpha"), "val0", "dice")
            .unwrap()
            .iteration,
        200
    );
    let stats = FileStatsStore::new(root);
    assert!(
        stats
            .retrieve_training_stats(&run_name("alpha"))
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        stats
            .retrieve_validation_iteration_scores(&run_name("alpha"))
            .unwrap()
            .scores()
            .len(),
        4
    );
    assert!(root.join("alpha").join("run.toml").exists());

    // The pruned run still lists, as finished, with its best values.
    let runs: Value = serde_json::from_str(&ok(&dacapo(root, &["runs", "ls", "--json"]))).unwrap();
    assert_eq!(runs[0]["status"], "finished");
    assert_eq!(runs[0]["trained_until"], 0);
    assert_eq!(runs[0]["best"].as_array().unwrap().len(), 2);
}
