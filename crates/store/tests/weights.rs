//! LocalWeightsStore: seed behaviour, error cases, corruption detection, hint fallback,
//! retention and the in-process lock.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::path::Path;

use common::{run_name, weights, weights_sized};
use dacapo_core::{NamedTensor, RunName, TensorMap};
use dacapo_store::{BestRecord, LocalWeightsStore, RunLock, StoreError, Verify, WeightsStore};

fn store(dir: &Path) -> LocalWeightsStore {
    LocalWeightsStore::new(dir)
}

fn it_dir(root: &Path, run: &RunName) -> std::path::PathBuf {
    root.join(run.as_str())
        .join("checkpoints")
        .join("iterations")
}

fn flip_byte(path: &Path, offset_from_end: u64) {
    let mut bytes = fs::read(path).unwrap();
    let i = bytes.len() - 1 - offset_from_end as usize;
    bytes[i] ^= 0x10;
    fs::write(path, bytes).unwrap();
}

fn best(iteration: u64, dataset: &str, criterion: &str, value: f64) -> BestRecord {
    BestRecord {
        iteration,
        dataset: dataset.into(),
        criterion: criterion.into(),
        parameter: "threshold=0.50".into(),
        value,
        higher_is_better: true,
    }
}

/// Round trips of every dtype are in the conformance suite; this is what is local-only.
#[test]
fn a_commit_writes_latest_and_a_manifest_that_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    s.store_weights(&run_name("r"), 100, &weights(100)).unwrap();
    s.verify(&run_name("r"), 100, Verify::Full).unwrap();
    // LATEST names the committed checkpoint once the commit is done.
    let latest = fs::read_to_string(dir.path().join("r/checkpoints/LATEST")).unwrap();
    assert_eq!(latest, "100\n");
}

#[test]
fn safetensors_files_are_standard() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let w = weights(7);
    s.store_weights(&run_name("r"), 7, &w).unwrap();
    let cp = it_dir(dir.path(), &run_name("r")).join("7");
    for (file, map) in [
        ("model.safetensors", &w.model),
        ("optimizer.safetensors", &w.optimizer),
    ] {
        let bytes = fs::read(cp.join(file)).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let mut names = st.names();
        names.sort();
        let mut expected: Vec<&str> = map.keys().map(String::as_str).collect();
        expected.sort();
        assert_eq!(names, expected);
        for (name, t) in map {
            let view = st.tensor(name).unwrap();
            assert_eq!(view.shape(), t.shape.as_slice(), "{name}");
            assert_eq!(view.data(), t.data.as_slice(), "{name}");
        }
        // Header is 8-byte aligned and carries the PyTorch format tag.
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap());
        assert_eq!(n % 8, 0);
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        assert_eq!(
            meta.metadata()
                .as_ref()
                .unwrap()
                .get("format")
                .map(String::as_str),
            Some("pt")
        );
    }
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(cp.join("MANIFEST.json")).unwrap()).unwrap();
    assert_eq!(manifest["format_version"], 1);
    assert_eq!(manifest["iteration"], 7);
    assert_eq!(manifest["files"]["model.safetensors"]["tensors"], 3);
    let model_len = fs::metadata(cp.join("model.safetensors")).unwrap().len();
    assert_eq!(manifest["files"]["model.safetensors"]["size"], model_len);
    let crc = crc32c::crc32c(&fs::read(cp.join("state.json")).unwrap());
    assert_eq!(manifest["files"]["state.json"]["crc32c"], crc);
}

#[test]
fn missing_run_and_iteration() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    assert_eq!(s.latest_iteration(&run_name("nope")).unwrap(), None);
    assert_eq!(s.iterations(&run_name("nope")).unwrap(), Vec::<u64>::new());
    let err = s.retrieve_weights(&run_name("nope"), 5).unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
    assert!(
        err.to_string().contains("checkpoint 5 of run `nope`"),
        "{err}"
    );
    assert!(matches!(
        s.remove(&run_name("nope"), 5),
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        s.retrieve_best(&run_name("nope"), "val0", "dice"),
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(
        s.apply_retention(&run_name("nope"), 2).unwrap(),
        Vec::<u64>::new()
    );

    s.store_weights(&run_name("r"), 10, &weights(10)).unwrap();
    let err = s.retrieve_weights(&run_name("r"), 20).unwrap_err();
    assert!(
        err.to_string().contains("checkpoint 20 of run `r`"),
        "{err}"
    );
    assert!(matches!(
        s.remove(&run_name("r"), 20),
        Err(StoreError::NotFound { .. })
    ));
}

#[test]
fn duplicate_iteration_is_idempotent_or_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    s.store_weights(&run_name("r"), 10, &weights(10)).unwrap();
    // Byte-identical retry.
    s.store_weights(&run_name("r"), 10, &weights(10)).unwrap();
    // Different content under the same iteration.
    let mut other = weights(10);
    other.state.seed = 7;
    let err = s.store_weights(&run_name("r"), 10, &other).unwrap_err();
    assert!(
        matches!(err, StoreError::Exists { iteration: 10, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("already exists"), "{err}");
    assert_eq!(s.retrieve_weights(&run_name("r"), 10).unwrap(), weights(10));
    // A fresh store instance (another process) sees the same.
    let s2 = store(dir.path());
    s2.store_weights(&run_name("r"), 10, &weights(10)).unwrap();
    assert!(matches!(
        s2.store_weights(&run_name("r"), 10, &other),
        Err(StoreError::Exists { .. })
    ));
}

#[test]
fn corrupt_existing_checkpoint_is_replaced_on_store() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    s.store_weights(&run_name("r"), 10, &weights(10)).unwrap();
    let model = it_dir(dir.path(), &run_name("r")).join("10/model.safetensors");
    flip_byte(&model, 3);
    s.store_weights(&run_name("r"), 10, &weights(10)).unwrap();
    assert_eq!(s.retrieve_weights(&run_name("r"), 10).unwrap(), weights(10));
}

#[test]
fn state_iteration_must_match_and_tensors_must_be_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let err = s
        .store_weights(&run_name("r"), 11, &weights(10))
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err}");
    let mut w = weights(10);
    w.model.get_mut("conv.bias").unwrap().data.pop();
    let err = s.store_weights(&run_name("r"), 10, &w).unwrap_err();
    assert!(err.to_string().contains("conv.bias"), "{err}");
    let mut w = weights(10);
    w.optimizer.insert(
        "__metadata__".into(),
        NamedTensor::from_f32(vec![1], &[1.0]).unwrap(),
    );
    assert!(matches!(
        s.store_weights(&run_name("r"), 10, &w),
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(s.latest_iteration(&run_name("r")).unwrap(), None);
}

#[test]
fn invalid_names_are_rejected_before_touching_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    dacapo_store::conformance::weights::invalid_names_are_rejected(&|| Box::new(store(&root)));
    // Nothing escaped the root.
    let outside: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(outside, vec![std::ffi::OsString::from("root")]);
}

#[test]
fn truncated_files_fall_back_to_previous_checkpoint() {
    for file in [
        "model.safetensors",
        "optimizer.safetensors",
        "state.json",
        "MANIFEST.json",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        s.store_weights(&run_name("r"), 10, &weights(10)).unwrap();
        s.store_weights(&run_name("r"), 20, &weights(20)).unwrap();
        let path = it_dir(dir.path(), &run_name("r")).join("20").join(file);
        let len = fs::metadata(&path).unwrap().len();
        fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len / 2)
            .unwrap();
        assert_eq!(
            s.latest_iteration(&run_name("r")).unwrap(),
            Some(10),
            "{file}"
        );
        assert_eq!(s.iterations(&run_name("r")).unwrap(), vec![10], "{file}");
        let err = s.retrieve_weights(&run_name("r"), 20).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{file}: {err}");
        assert!(err.to_string().contains(file), "{file}: {err}");
    }
}

#[test]
fn bit_flips_are_detected() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    s.store_weights(&run_name("r"), 10, &weights(10)).unwrap();
    s.store_weights(&run_name("r"), 20, &weights(20)).unwrap();
    let cp = it_dir(dir.path(), &run_name("r")).join("20");

    // Tensor data: the quick hint check does not read it (documented); retrieve and a full
    // verification do.
    flip_byte(&cp.join("optimizer.safetensors"), 5);
    assert_eq!(s.latest_iteration(&run_name("r")).unwrap(), Some(20));
    let err = s.retrieve_weights(&run_name("r"), 20).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("optimizer.safetensors") && msg.contains("crc32c"),
        "{msg}"
    );
    assert_eq!(
        s.latest_iteration_verified(&run_name("r"), Verify::Full)
            .unwrap(),
        Some(10)
    );
    flip_byte(&cp.join("optimizer.safetensors"), 5);
    s.retrieve_weights(&run_name("r"), 20).unwrap();

    // Safetensors header: retrieve fails on the crc (or header) check.
    let model = cp.join("model.safetensors");
    let mut bytes = fs::read(&model).unwrap();
    bytes[12] ^= 0x01;
    fs::write(&model, &bytes).unwrap();
    let err = s.retrieve_weights(&run_name("r"), 20).unwrap_err();
    assert!(err.to_string().contains("model.safetensors"), "{err}");
    bytes[12] ^= 0x01;
    fs::write(&model, &bytes).unwrap();

    // state.json is checksummed on the hint path too.
    flip_byte(&cp.join("state.json"), 4);
    assert_eq!(s.latest_iteration(&run_name("r")).unwrap(), Some(10));
    flip_byte(&cp.join("state.json"), 4);
    assert_eq!(s.latest_iteration(&run_name("r")).unwrap(), Some(20));

    // A manifest that no longer parses.
    fs::write(cp.join("MANIFEST.json"), b"{\"format_version\": 1, ").unwrap();
    assert_eq!(s.latest_iteration(&run_name("r")).unwrap(), Some(10));
    let err = s.retrieve_weights(&run_name("r"), 20).unwrap_err();
    assert!(err.to_string().contains("MANIFEST.json"), "{err}");
    fs::remove_file(cp.join("MANIFEST.json")).unwrap();
    assert_eq!(s.latest_iteration(&run_name("r")).unwrap(), Some(10));
}

#[test]
fn stray_entries_are_ignored_and_temp_leftovers_cleaned() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    s.store_weights(&run_name("r"), 10, &weights(10)).unwrap();
    let its = it_dir(dir.path(), &run_name("r"));
    fs::create_dir(its.join("1000.tmp")).unwrap();
    fs::write(its.join("foo"), b"x").unwrap();
    fs::create_dir(its.join("007")).unwrap();
    fs::create_dir(its.join("99999")).unwrap(); // integer-named but empty: not a checkpoint
    fs::create_dir_all(its.join(".tmp-30-1-1")).unwrap();
    fs::write(its.join(".tmp-30-1-1/model.safetensors"), b"partial").unwrap();
    fs::remove_file(dir.path().join("r/checkpoints/LATEST")).unwrap();
    assert_eq!(s.latest_iteration(&run_name("r")).unwrap(), Some(10));
    assert_eq!(s.iterations(&run_name("r")).unwrap(), vec![10]);
    // A new writer cleans the temp leftover, not the foreign entries.
    let s2 = store(dir.path());
    s2.store_weights(&run_name("r"), 20, &weights(20)).unwrap();
    assert!(!its.join(".tmp-30-1-1").exists());
    for foreign in ["1000.tmp", "foo", "007", "99999"] {
        assert!(its.join(foreign).exists(), "{foreign}");
    }
    assert_eq!(s2.latest_iteration(&run_name("r")).unwrap(), Some(20));
    assert_eq!(s2.iterations(&run_name("r")).unwrap(), vec![10, 20]);
}

#[test]
fn latest_hint_states_after_crashes() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    s.store_weights(&run_name("r"), 10, &weights(10)).unwrap();
    s.store_weights(&run_name("r"), 20, &weights(20)).unwrap();
    let latest = dir.path().join("r/checkpoints/LATEST");
    // Crash after the commit rename, before the final LATEST rewrite.
    fs::write(&latest, "10\npending 20\n").unwrap();
    assert_eq!(s.latest_iteration(&run_name("r")).unwrap(), Some(20));
    // Crash before the commit rename: the pending one does not exist.
    fs::write(&latest, "20\npending 30\n").unwrap();
    assert_eq!(s.latest_iteration(&run_name("r")).unwrap(), Some(20));
    fs::write(&latest, "none\npending 10\n").unwrap();
    assert_eq!(s.latest_iteration(&run_name("r")).unwrap(), Some(10));
    // The hint is trusted once it verifies: the directory is not listed.
    fs::write(&latest, "10\n").unwrap();
    assert_eq!(s.latest_iteration(&run_name("r")).unwrap(), Some(10));
    // Garbage, or a hint naming a missing checkpoint, falls back to the scan.
    for text in ["garbage", "", "40\n", "10\npending\n", "010\n"] {
        fs::write(&latest, text).unwrap();
        assert_eq!(
            s.latest_iteration(&run_name("r")).unwrap(),
            Some(20),
            "{text:?}"
        );
    }
    // A writer repairs the hint.
    s.store_weights(&run_name("r"), 30, &weights(30)).unwrap();
    assert_eq!(fs::read_to_string(&latest).unwrap(), "30\n");
}

#[test]
fn remove_updates_latest() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    for n in [10, 20, 30] {
        s.store_weights(&run_name("r"), n, &weights(n)).unwrap();
    }
    s.remove(&run_name("r"), 20).unwrap();
    assert_eq!(s.iterations(&run_name("r")).unwrap(), vec![10, 30]);
    s.remove(&run_name("r"), 30).unwrap();
    assert_eq!(s.latest_iteration(&run_name("r")).unwrap(), Some(10));
    assert_eq!(
        fs::read_to_string(dir.path().join("r/checkpoints/LATEST")).unwrap(),
        "10\n"
    );
    s.remove(&run_name("r"), 10).unwrap();
    assert_eq!(s.latest_iteration(&run_name("r")).unwrap(), None);
    // Storing an older iteration than the latest does not move LATEST back.
    s.store_weights(&run_name("r"), 50, &weights(50)).unwrap();
    s.store_weights(&run_name("r"), 40, &weights(40)).unwrap();
    assert_eq!(s.latest_iteration(&run_name("r")).unwrap(), Some(50));
}

#[test]
fn best_records() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let err = s
        .store_best(&run_name("r"), &best(10, "val0", "dice", 0.9))
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("committed"), "{err}");
    s.store_weights(&run_name("r"), 10, &weights(10)).unwrap();
    s.store_weights(&run_name("r"), 20, &weights(20)).unwrap();
    s.store_best(&run_name("r"), &best(10, "val0", "dice", 0.9))
        .unwrap();
    s.store_best(&run_name("r"), &best(20, "val0", "voi", f64::INFINITY))
        .unwrap();
    assert_eq!(
        s.retrieve_best(&run_name("r"), "val0", "dice").unwrap(),
        best(10, "val0", "dice", 0.9)
    );
    let voi = s.retrieve_best(&run_name("r"), "val0", "voi").unwrap();
    assert_eq!(voi.value, f64::INFINITY);
    // Overwrite.
    s.store_best(&run_name("r"), &best(20, "val0", "dice", 0.95))
        .unwrap();
    assert_eq!(
        s.retrieve_best(&run_name("r"), "val0", "dice")
            .unwrap()
            .iteration,
        20
    );
    assert!(matches!(
        s.retrieve_best(&run_name("r"), "val1", "dice"),
        Err(StoreError::NotFound { .. })
    ));
    // Readable JSON at the seed location.
    let path = dir.path().join("r/val0/dice.json");
    let v: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    assert_eq!(v["iteration"], 20);
    assert_eq!(v["higher_is_better"], true);
    fs::write(&path, b"{\"iteration\": 20").unwrap();
    let err = s.retrieve_best(&run_name("r"), "val0", "dice").unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("dice.json"), "{err}");
}

#[test]
fn retention_keeps_newest_and_best() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path()).with_fsync(false);
    for n in 1..=10 {
        s.store_weights(&run_name("r"), n * 10, &weights(n * 10))
            .unwrap();
    }
    s.store_best(&run_name("r"), &best(30, "val0", "dice", 0.9))
        .unwrap();
    s.store_best(&run_name("r"), &best(50, "val1", "voi", 0.1))
        .unwrap();
    let removed = s.apply_retention(&run_name("r"), 2).unwrap();
    assert_eq!(removed, vec![10, 20, 40, 60, 70, 80]);
    assert_eq!(s.iterations(&run_name("r")).unwrap(), vec![30, 50, 90, 100]);
    assert_eq!(s.latest_iteration(&run_name("r")).unwrap(), Some(100));
    // keep_last 0 still keeps the newest (resume needs it).
    assert_eq!(s.apply_retention(&run_name("r"), 0).unwrap(), vec![90]);
    assert_eq!(s.iterations(&run_name("r")).unwrap(), vec![30, 50, 100]);
    assert_eq!(
        s.apply_retention(&run_name("r"), 5).unwrap(),
        Vec::<u64>::new()
    );
}

#[test]
fn lock_is_exclusive_and_released_on_drop() {
    let dir = tempfile::tempdir().unwrap();
    let lock = RunLock::acquire(dir.path(), &run_name("r")).unwrap();
    let text = fs::read_to_string(lock.path()).unwrap();
    assert!(
        text.contains(&format!("pid {}", std::process::id())),
        "{text}"
    );
    let err = RunLock::acquire(dir.path(), &run_name("r")).unwrap_err();
    match &err {
        StoreError::Locked { holder, .. } => {
            assert!(
                holder.contains(&format!("pid {}", std::process::id())),
                "{holder}"
            )
        }
        other => panic!("expected Locked, got {other}"),
    }
    // Other runs are independent.
    let _other = RunLock::acquire(dir.path(), &run_name("r2")).unwrap();
    drop(lock);
    let _again = RunLock::acquire(dir.path(), &run_name("r")).unwrap();
}

#[test]
fn large_checkpoint_streams_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let w = weights_sized(5, 1 << 20); // about 12 MB
    s.store_weights(&run_name("r"), 5, &w).unwrap();
    s.verify(&run_name("r"), 5, Verify::Full).unwrap();
    assert_eq!(s.retrieve_weights(&run_name("r"), 5).unwrap(), w);
    let empty = dacapo_store::Weights {
        model: TensorMap::new(),
        optimizer: TensorMap::new(),
        state: dacapo_store::TrainState::new(6, "", "flex", 0),
    };
    s.store_weights(&run_name("r"), 6, &empty).unwrap();
    assert_eq!(s.retrieve_weights(&run_name("r"), 6).unwrap(), empty);
}
