//! FileStatsStore: seed behaviour, append-only writes, divergence, torn and corrupt lines,
//! and property tests of exact round trips.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::io::Write;

use common::{iter_scores, meta, rec, run_name, same_stats, stats};
use dacapo_core::{
    TrainingIterationStats, TrainingStats, ValidationIterationScores, ValidationScores,
};
use dacapo_store::{FileStatsStore, StatsStore, StoreError};
use proptest::prelude::*;

fn lines(path: &std::path::Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn training_stats_round_trip_and_empty_run() {
    let dir = tempfile::tempdir().unwrap();
    let s = FileStatsStore::new(dir.path());
    assert!(
        s.retrieve_training_stats(&run_name("r"))
            .unwrap()
            .is_empty()
    );
    let st = stats(0..50, 0);
    s.store_training_stats(&run_name("r"), &st).unwrap();
    assert!(same_stats(
        &s.retrieve_training_stats(&run_name("r")).unwrap(),
        &st
    ));
    let path = dir.path().join("stats/training_stats/r/stats.jsonl");
    assert_eq!(path, s.training_stats_path(&run_name("r")));
    let l = lines(&path);
    assert_eq!(l.len(), 50);
    // Each line is plain JSON that any reader understands.
    let v: serde_json::Value = serde_json::from_str(&l[3]).unwrap();
    assert_eq!(v["iteration"], 3);
    assert_eq!(v["loss"].as_f64(), Some(rec(3, 0).loss));
}

#[test]
fn store_appends_only_new_records() {
    let dir = tempfile::tempdir().unwrap();
    let s = FileStatsStore::new(dir.path());
    let path = s.training_stats_path(&run_name("r"));
    let mut st = stats(0..10, 0);
    s.store_training_stats(&run_name("r"), &st).unwrap();
    // An append-only store never rewrites what is stored: the old bytes are a prefix.
    let before = fs::read(&path).unwrap();
    st.add_iteration_stats(rec(10, 0)).unwrap();
    s.store_training_stats(&run_name("r"), &st).unwrap();
    let after = fs::read(&path).unwrap();
    assert_eq!(&after[..before.len()], &before[..]);
    let added = std::str::from_utf8(&after[before.len()..]).unwrap();
    assert_eq!(added.matches('\n').count(), 1, "{added}");
    let v: serde_json::Value = serde_json::from_str(added).unwrap();
    assert_eq!(v["iteration"], 10);
    // Storing the same stats again writes nothing.
    s.store_training_stats(&run_name("r"), &st).unwrap();
    assert_eq!(fs::read(&path).unwrap(), after);
}

#[test]
fn diverged_or_shorter_local_stats_take_priority() {
    let dir = tempfile::tempdir().unwrap();
    let s = FileStatsStore::new(dir.path());
    s.store_training_stats(&run_name("r"), &stats(0..100, 0))
        .unwrap();
    // Resume from checkpoint 40: the trainer cuts its stats back, then trains on differently.
    let mut st = s.retrieve_training_stats(&run_name("r")).unwrap();
    st.delete_after(40);
    s.store_training_stats(&run_name("r"), &st).unwrap();
    assert!(same_stats(
        &s.retrieve_training_stats(&run_name("r")).unwrap(),
        &stats(0..40, 0)
    ));
    for i in 40..60 {
        st.add_iteration_stats(rec(i, 1)).unwrap();
    }
    s.store_training_stats(&run_name("r"), &st).unwrap();
    assert!(same_stats(
        &s.retrieve_training_stats(&run_name("r")).unwrap(),
        &st
    ));
    // Diverged in place (same length, other values from 50 on), seen by a fresh store.
    let mut other = stats(0..40, 0);
    for i in 40..50 {
        other.add_iteration_stats(rec(i, 1)).unwrap();
    }
    for i in 50..60 {
        other.add_iteration_stats(rec(i, 2)).unwrap();
    }
    let s2 = FileStatsStore::new(dir.path());
    s2.store_training_stats(&run_name("r"), &other).unwrap();
    assert!(same_stats(
        &s2.retrieve_training_stats(&run_name("r")).unwrap(),
        &other
    ));
    // Stats starting elsewhere (after delete_training_stats on another store) replace all.
    let late = stats(500..505, 3);
    s.store_training_stats(&run_name("r"), &late).unwrap();
    assert!(same_stats(
        &s.retrieve_training_stats(&run_name("r")).unwrap(),
        &late
    ));
    // Empty local stats empty the file.
    s.store_training_stats(&run_name("r"), &TrainingStats::new())
        .unwrap();
    assert!(
        s.retrieve_training_stats(&run_name("r"))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn torn_last_line_is_ignored_then_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let s = FileStatsStore::new(dir.path());
    let path = s.training_stats_path(&run_name("r"));
    s.store_training_stats(&run_name("r"), &stats(0..5, 0))
        .unwrap();
    fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(b"{\"iteration\":5,\"lo")
        .unwrap();
    assert!(same_stats(
        &s.retrieve_training_stats(&run_name("r")).unwrap(),
        &stats(0..5, 0)
    ));
    // A new writer (after a crash) cuts the torn line and continues.
    let s2 = FileStatsStore::new(dir.path());
    s2.store_training_stats(&run_name("r"), &stats(0..7, 0))
        .unwrap();
    assert!(same_stats(
        &s2.retrieve_training_stats(&run_name("r")).unwrap(),
        &stats(0..7, 0)
    ));
    assert_eq!(lines(&path).len(), 7);
    // The first writer notices the file changed under it and re-reads it.
    s.store_training_stats(&run_name("r"), &stats(0..8, 0))
        .unwrap();
    assert!(same_stats(
        &s.retrieve_training_stats(&run_name("r")).unwrap(),
        &stats(0..8, 0)
    ));
}

#[test]
fn bad_line_in_the_middle_is_a_corruption_error() {
    let dir = tempfile::tempdir().unwrap();
    let s = FileStatsStore::new(dir.path());
    let path = s.training_stats_path(&run_name("r"));
    s.store_training_stats(&run_name("r"), &stats(0..5, 0))
        .unwrap();
    let mut l = lines(&path);
    l[2] = "{\"iteration\":2,\"loss\":oops}".into();
    fs::write(&path, l.join("\n") + "\n").unwrap();
    for err in [
        s.retrieve_training_stats(&run_name("r")).unwrap_err(),
        FileStatsStore::new(dir.path())
            .store_training_stats(&run_name("r"), &stats(0..6, 0))
            .unwrap_err(),
    ] {
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("stats.jsonl") && msg.contains("line 3"),
            "{msg}"
        );
    }
    // Out-of-order records are corruption too.
    let mut l = lines(&path);
    l[2] = serde_json::to_string(&rec(7, 0)).unwrap();
    fs::write(&path, l.join("\n") + "\n").unwrap();
    let err = s.retrieve_training_stats(&run_name("r")).unwrap_err();
    assert!(err.to_string().contains("line 3"), "{err}");
}

#[test]
fn delete_training_stats() {
    let dir = tempfile::tempdir().unwrap();
    let s = FileStatsStore::new(dir.path());
    s.delete_training_stats(&run_name("r")).unwrap();
    s.store_training_stats(&run_name("r"), &stats(0..5, 0))
        .unwrap();
    s.delete_training_stats(&run_name("r")).unwrap();
    assert!(
        s.retrieve_training_stats(&run_name("r"))
            .unwrap()
            .is_empty()
    );
    assert!(!s.training_stats_path(&run_name("r")).exists());
    // Storing again after the delete starts a fresh file.
    s.store_training_stats(&run_name("r"), &stats(3..6, 0))
        .unwrap();
    assert!(same_stats(
        &s.retrieve_training_stats(&run_name("r")).unwrap(),
        &stats(3..6, 0)
    ));
    s.sync(&run_name("r")).unwrap();
}

fn sample_scores() -> ValidationScores {
    let mut v = ValidationScores::new(meta());
    v.add_iteration_scores(iter_scores(100, [[0.5, 2.0], [0.6, f64::NAN]]))
        .unwrap();
    v.add_iteration_scores(iter_scores(
        200,
        [[f64::INFINITY, f64::NEG_INFINITY], [-0.0, 1e-300]],
    ))
    .unwrap();
    v
}

#[test]
fn validation_scores_round_trip_with_nan_and_meta() {
    let dir = tempfile::tempdir().unwrap();
    let s = FileStatsStore::new(dir.path());
    let empty = s
        .retrieve_validation_iteration_scores(&run_name("r"))
        .unwrap();
    assert!(empty.scores().is_empty());
    let v = sample_scores();
    s.store_validation_iteration_scores(&run_name("r"), &v)
        .unwrap();
    let back = s
        .retrieve_validation_iteration_scores(&run_name("r"))
        .unwrap();
    assert_eq!(back, v);
    assert!(
        back.scores()[0]
            .get("val0", "threshold=0.50", "voi")
            .unwrap()
            .is_nan()
    );
    let vdir = s.validation_scores_dir(&run_name("r"));
    assert_eq!(vdir, dir.path().join("stats/validation_scores/r"));
    assert_eq!(lines(&vdir.join("scores.jsonl")).len(), 2);
    // Resume from checkpoint 100 keeps validations <= 100, then validates 150.
    let mut resumed = back.clone();
    resumed.delete_after(101);
    resumed
        .add_iteration_scores(iter_scores(150, [[0.7, 1.0], [0.8, 0.5]]))
        .unwrap();
    s.store_validation_iteration_scores(&run_name("r"), &resumed)
        .unwrap();
    assert_eq!(
        s.retrieve_validation_iteration_scores(&run_name("r"))
            .unwrap(),
        resumed
    );
    // A metadata change rewrites everything under the new metadata.
    let mut m = meta();
    m.datasets.push("val1".into());
    let mut changed = ValidationScores::new(m);
    changed
        .add_iteration_scores(iter_scores(100, [[0.1, 0.2], [0.3, 0.4]]))
        .unwrap();
    s.store_validation_iteration_scores(&run_name("r"), &changed)
        .unwrap();
    assert_eq!(
        s.retrieve_validation_iteration_scores(&run_name("r"))
            .unwrap(),
        changed
    );
    // Scores without metadata cannot be read.
    fs::remove_file(vdir.join("meta.json")).unwrap();
    let err = s
        .retrieve_validation_iteration_scores(&run_name("r"))
        .unwrap_err();
    assert!(err.to_string().contains("meta.json"), "{err}");
    s.sync(&run_name("r")).unwrap();
}

#[test]
fn validation_scores_inserted_in_the_middle_are_stored() {
    let dir = tempfile::tempdir().unwrap();
    let s = FileStatsStore::new(dir.path());
    let mut v = ValidationScores::new(meta());
    for it in [100, 300] {
        v.add_iteration_scores(iter_scores(it, [[0.5; 2]; 2]))
            .unwrap();
    }
    s.store_validation_iteration_scores(&run_name("r"), &v)
        .unwrap();
    v.add_iteration_scores(iter_scores(200, [[0.7; 2]; 2]))
        .unwrap();
    v.add_iteration_scores(iter_scores(400, [[0.9; 2]; 2]))
        .unwrap();
    s.store_validation_iteration_scores(&run_name("r"), &v)
        .unwrap();
    assert_eq!(
        s.retrieve_validation_iteration_scores(&run_name("r"))
            .unwrap(),
        v
    );
}

#[test]
fn corrupt_validation_files() {
    let dir = tempfile::tempdir().unwrap();
    let s = FileStatsStore::new(dir.path());
    s.store_validation_iteration_scores(&run_name("r"), &sample_scores())
        .unwrap();
    let vdir = s.validation_scores_dir(&run_name("r"));
    fs::write(vdir.join("meta.json"), b"{\"parameters\": [").unwrap();
    let err = s
        .retrieve_validation_iteration_scores(&run_name("r"))
        .unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("meta.json"), "{err}");
    // A score naming a dataset the metadata lacks.
    let s2 = FileStatsStore::new(dir.path());
    s2.store_validation_iteration_scores(&run_name("r"), &sample_scores())
        .unwrap();
    let mut bad = iter_scores(300, [[0.0; 2]; 2]);
    let table = bad.scores.remove("val0").unwrap();
    bad.scores.insert("nope".into(), table);
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(vdir.join("scores.jsonl"))
        .unwrap();
    writeln!(f, "{}", serde_json::to_string(&bad).unwrap()).unwrap();
    let err = s
        .retrieve_validation_iteration_scores(&run_name("r"))
        .unwrap_err();
    assert!(
        err.to_string().contains("scores.jsonl") && err.to_string().contains("record 3"),
        "{err}"
    );
}

/// One step of a store/delete_after/store sequence.
#[derive(Debug, Clone)]
enum Op {
    /// Add this many records with these (loss, time) values.
    Add(Vec<(f64, f64)>),
    /// `delete_after(trained_until - back)`.
    DeleteBack(u64),
    /// Store the in-memory stats.
    Store,
    /// Drop the store and open a new one (a new process).
    Reopen,
}

fn any_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        8 => any::<f64>(),
        1 => Just(f64::NAN),
        1 => prop::sample::select(vec![f64::INFINITY, f64::NEG_INFINITY, -0.0, 0.0, 1e-320]),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => prop::collection::vec((any_f64(), any_f64()), 0..20).prop_map(Op::Add),
        1 => (0u64..25).prop_map(Op::DeleteBack),
        3 => Just(Op::Store),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn training_stats_sequences_round_trip(start in 0u64..1000, ops in prop::collection::vec(op(), 1..30)) {
        let dir = tempfile::tempdir().unwrap();
        let mut s = FileStatsStore::new(dir.path());
        let mut mem = TrainingStats::new();
        for op in ops {
            match op {
                Op::Add(values) => {
                    for (loss, time) in values {
                        let iteration = if mem.is_empty() { start } else { mem.trained_until() };
                        mem.add_iteration_stats(TrainingIterationStats { iteration, loss, time }).unwrap();
                    }
                }
                Op::DeleteBack(k) => mem.delete_after(mem.trained_until().saturating_sub(k)),
                Op::Store => {
                    s.store_training_stats(&run_name("r"), &mem).unwrap();
                    let back = s.retrieve_training_stats(&run_name("r")).unwrap();
                    prop_assert!(same_stats(&back, &mem), "stored {:?}\nread {:?}", mem, back);
                }
                Op::Reopen => s = FileStatsStore::new(dir.path()),
            }
        }
    }

    #[test]
    fn validation_score_sequences_round_trip(ops in prop::collection::vec(op(), 1..20)) {
        let dir = tempfile::tempdir().unwrap();
        let mut s = FileStatsStore::new(dir.path());
        let mut mem = ValidationScores::new(meta());
        let mut next = 0u64;
        for op in ops {
            match op {
                Op::Add(values) => {
                    for pair in values.chunks(2) {
                        next = next.max(mem.validated_until()) + 10;
                        let b = pair.get(1).copied().unwrap_or((0.5, 0.5));
                        mem.add_iteration_scores(iter_scores(next, [[pair[0].0, pair[0].1], [b.0, b.1]])).unwrap();
                    }
                }
                Op::DeleteBack(k) => {
                    mem.delete_after(mem.validated_until().saturating_sub(k * 10));
                    next = mem.validated_until();
                }
                Op::Store => {
                    s.store_validation_iteration_scores(&run_name("r"), &mem).unwrap();
                    let back = s.retrieve_validation_iteration_scores(&run_name("r")).unwrap();
                    prop_assert_eq!(&back, &mem);
                    let bits = |v: &ValidationScores| -> Vec<u64> {
                        v.scores().iter().flat_map(|s: &ValidationIterationScores| {
                            s.scores.values().flat_map(|p| p.values().flat_map(|c| c.values().map(|x| if x.0.is_nan() { 0 } else { x.0.to_bits() })).collect::<Vec<_>>()).collect::<Vec<_>>()
                        }).collect()
                    };
                    prop_assert_eq!(bits(&back), bits(&mem));
                }
                Op::Reopen => s = FileStatsStore::new(dir.path()),
            }
        }
    }
}
