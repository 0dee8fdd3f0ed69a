//! Kill test of `ObjectWeightsStore`: a child process (this test binary, re-executed) uploads
//! large checkpoints (multipart) in a loop and is SIGKILLed in the middle of an upload; after
//! every kill the previous complete checkpoint (or the one whose manifest landed just before
//! the kill) is the latest, retrieves with valid checksums, and no listed checkpoint is
//! half-written. Runs on S3 when `DACAPO_TEST_S3_URL` is set (skipped with a reason
//! otherwise) and always on a `file://` store.
//!
//! `DACAPO_CRASH_TRIALS` sets the number of kills (default 6).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dacapo_core::{NamedTensor, RunName, TensorMap};
use dacapo_store::conformance::data::run_name;
use dacapo_store::{StoreError, TrainState, Weights, WeightsStore};
use dacapo_store_object::{MIN_PART_SIZE, ObjectWeightsStore};

const ROLE_ENV: &str = "DACAPO_OBJECT_CRASH_ROLE";
const URL_ENV: &str = "DACAPO_OBJECT_CRASH_URL";
const GEN_ENV: &str = "DACAPO_OBJECT_CRASH_GEN";
const PROGRESS_ENV: &str = "DACAPO_OBJECT_CRASH_PROGRESS";
static RUN: std::sync::LazyLock<RunName> = std::sync::LazyLock::new(|| run_name("crash-run"));
const INTERVAL: u64 = 10;
/// Model tensor size: four multipart parts of the smallest size.
const MODEL_BYTES: usize = 4 * MIN_PART_SIZE;

fn store(url: &str) -> ObjectWeightsStore {
    ObjectWeightsStore::from_url(url)
        .unwrap()
        .with_part_size(MIN_PART_SIZE)
}

/// Checkpoint content: tensors depend on the iteration only; the state records the child
/// (generation) that wrote it.
fn checkpoint(iteration: u64, generation: u64) -> Weights {
    let fill = |n: usize, salt: u64| -> Vec<u8> {
        (0..n)
            .map(|i| ((i as u64).wrapping_mul(2654435761) ^ iteration ^ salt) as u8)
            .collect()
    };
    let mut model = TensorMap::new();
    model.insert(
        "conv.weight".into(),
        NamedTensor::new(
            dacapo_core::DType::F32,
            vec![MODEL_BYTES / 4],
            fill(MODEL_BYTES, 1),
        )
        .unwrap(),
    );
    let mut optimizer = TensorMap::new();
    optimizer.insert(
        "conv.weight.moment1".into(),
        NamedTensor::new(
            dacapo_core::DType::F32,
            vec![MIN_PART_SIZE / 4],
            fill(MIN_PART_SIZE, 2),
        )
        .unwrap(),
    );
    let mut state = TrainState::new(iteration, "hash", "flex", 7);
    state
        .extra
        .insert("generation".into(), serde_json::json!(generation));
    Weights {
        model,
        optimizer,
        state,
    }
}

/// Whether `w` is the checkpoint of `iteration` written by any generation.
fn is_checkpoint(w: &Weights, iteration: u64) -> bool {
    let generation = w.state.extra.get("generation").and_then(|g| g.as_u64());
    generation.is_some_and(|g| *w == checkpoint(iteration, g))
}

#[test]
#[ignore = "child process of the crash test, started by it"]
fn crash_child() {
    let Ok(_role) = std::env::var(ROLE_ENV) else {
        return;
    };
    let url = std::env::var(URL_ENV).unwrap();
    let generation: u64 = std::env::var(GEN_ENV).unwrap().parse().unwrap();
    let mut progress = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(std::env::var(PROGRESS_ENV).unwrap())
        .unwrap();
    let s = store(&url);
    let mut n = s
        .latest_iteration(&RUN)
        .unwrap()
        .map_or(INTERVAL, |l| l + INTERVAL);
    loop {
        // One write per line: in the page cache (surviving SIGKILL) once it returns.
        progress
            .write_all(format!("start {n}\n").as_bytes())
            .unwrap();
        s.store_weights(&RUN, n, &checkpoint(n, generation))
            .unwrap();
        progress
            .write_all(format!("done {n}\n").as_bytes())
            .unwrap();
        n += INTERVAL;
    }
}

fn spawn_child(url: &str, generation: u64, progress: &Path) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "crash_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROLE_ENV, "writer")
        .env(URL_ENV, url)
        .env(GEN_ENV, generation.to_string())
        .env(PROGRESS_ENV, progress)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// The (started, done) iterations in a progress file, in order.
fn read_progress(path: &Path) -> (Vec<u64>, Vec<u64>) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let (mut started, mut done) = (Vec::new(), Vec::new());
    for line in text.lines() {
        match line.split_once(' ') {
            Some(("start", n)) => started.push(n.parse().unwrap()),
            Some(("done", n)) => done.push(n.parse().unwrap()),
            _ => {}
        }
    }
    (started, done)
}

fn kill_trials(url: &str) {
    let trials: u64 = std::env::var("DACAPO_CRASH_TRIALS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(6);
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let tmp = tempfile::tempdir().unwrap();
    let s = store(url);
    let mut rng = seed | 1;
    let mut mid_upload_kills = 0;
    let mut all_started = Vec::new();
    let mut prev_done: Option<u64> = None;
    for generation in 0..trials {
        let progress = tmp.path().join(format!("progress-{generation}"));
        let mut child = spawn_child(url, generation, &progress);
        // Kill during the second store of this child, after a random part of an upload.
        let t0 = Instant::now();
        loop {
            let (started, _) = read_progress(&progress);
            if started.len() >= 2 {
                break;
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("child {generation} exited early with {status}");
            }
            assert!(
                t0.elapsed() < Duration::from_secs(120),
                "child {generation} made no progress"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let delay = Duration::from_millis(rng % 150);
        std::thread::sleep(delay);
        child.kill().unwrap();
        child.wait().unwrap();
        let (started, done) = read_progress(&progress);
        let ctx = format!(
            "trial {generation} (seed {seed}, killed {delay:?} into a store, started {started:?}, done {done:?})"
        );
        let last_started = *started.last().unwrap();
        let killed_mid_store = done.last() != Some(&last_started);
        mid_upload_kills += u64::from(killed_mid_store);
        // The child resumed from the previous trial's latest checkpoint.
        assert_eq!(
            started[0],
            prev_done.map_or(INTERVAL, |p| p + INTERVAL),
            "{ctx}"
        );
        all_started.extend(started.iter().copied());

        let fresh = store(url);
        let latest = fresh.latest_iteration(&RUN).unwrap().expect(&ctx);
        let newest_done = *done.last().expect(&ctx);
        if killed_mid_store {
            // Either the previous complete checkpoint, or the one in flight if its manifest
            // landed just before the kill.
            assert!(
                latest == newest_done || latest == last_started,
                "{ctx}: latest is {latest}"
            );
        } else {
            assert_eq!(latest, newest_done, "{ctx}");
        }
        let w = fresh.retrieve_weights(&RUN, latest).unwrap();
        assert!(is_checkpoint(&w, latest), "{ctx}: content of {latest}");
        // Every listed checkpoint is whole; every started but unlisted one is invisible.
        let listed = fresh.iterations(&RUN).unwrap();
        for &n in &all_started {
            if listed.contains(&n) {
                let w = fresh.retrieve_weights(&RUN, n).unwrap();
                assert!(is_checkpoint(&w, n), "{ctx}: content of {n}");
            } else {
                let err = fresh.retrieve_weights(&RUN, n).unwrap_err();
                assert!(
                    matches!(
                        err,
                        StoreError::NotFound { .. } | StoreError::Corrupt { .. }
                    ),
                    "{ctx}: {n}: {err}"
                );
            }
        }
        assert_eq!(listed.last(), Some(&latest), "{ctx}");
        prev_done = Some(latest);
    }
    println!("{url}: {mid_upload_kills} of {trials} kills landed inside a store (seed {seed})");
    // Delays up to 150 ms inside uploads of about 30 MB: most kills land mid-upload.
    assert!(
        mid_upload_kills > 0,
        "no kill landed inside an upload (seed {seed})"
    );
    for n in all_started {
        let _ = s.remove(&RUN, n);
    }
}

#[test]
fn sigkill_mid_upload_on_s3_leaves_the_previous_checkpoint() {
    let Some(url) = common::s3_url("crash") else {
        return;
    };
    kill_trials(&url);
}

#[test]
fn sigkill_mid_upload_on_files_leaves_the_previous_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    kill_trials(&format!("file://{}", dir.path().display()));
}
