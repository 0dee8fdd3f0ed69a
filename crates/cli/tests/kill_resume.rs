//! Exact resume, end to end: a trainer killed with SIGKILL at a random moment after its first
//! checkpoint and then resumed ends with the same weights, optimizer state and per-iteration
//! losses as an uninterrupted run (flex backend, bit for bit).
//!
//! Trials: `DACAPO_CRASH_TRIALS` (default 10); `cargo xtask crash --train --trials N`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dacapo_store::{FileStatsStore, LocalWeightsStore, StatsStore, WeightsStore};

const TRAIN_UNTIL: u64 = 60;
const INTERVAL: u64 = 10;

fn config(root: &Path, data: &Path) -> String {
    format!(
        r#"
[run]
name = "resume"
train_until = {TRAIN_UNTIL}
validation_interval = {INTERVAL}
seed = 5
threads = 2

[task]
kind = "distance"

[architecture]
kind = "unet"
dims = 2
fmaps = 4
fmap_inc_factor = 2
downsample_factors = [[2, 2]]
input_shape = [44, 44]

[trainer]
batch_size = 2
learning_rate = 1e-3
augment = ["mirror", "transpose", "intensity", "noise"]

[datasplit]
train = [{{ zarr = "{data}", raw = "raw", gt = "labels" }}]

[datasplit.synthetic]
zarr = "{data}"
shape = [96, 96]
seed = 3
objects = 12

[stores]
root = "{root}"
keep_last = 100
"#,
        data = data.display(),
        root = root.display(),
    )
}

fn dacapo() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dacapo"));
    cmd.arg("train").arg("--no-progress");
    cmd
}

fn setup(dir: &Path, name: &str, data: &Path) -> (PathBuf, PathBuf) {
    let root = dir.join(name);
    let cfg = dir.join(format!("{name}.toml"));
    std::fs::write(&cfg, config(&root, data)).unwrap();
    (root, cfg)
}

fn train_to_end(cfg: &Path) {
    let out = dacapo().arg(cfg).output().unwrap();
    assert!(
        out.status.success(),
        "dacapo train failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn latest(root: &Path) -> Option<u64> {
    LocalWeightsStore::new(root)
        .latest_iteration("resume")
        .ok()
        .flatten()
}

fn wait_for_first_checkpoint(child: &mut Child, root: &Path) -> bool {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if latest(root).is_some() {
            return true;
        }
        if child.try_wait().unwrap().is_some() {
            return latest(root).is_some();
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    false
}

/// A small xorshift so the kill moments differ per trial without a rand dependency.
fn jitter(state: &mut u64, max_ms: u64) -> Duration {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    Duration::from_millis(*state % max_ms.max(1))
}

#[test]
fn killed_and_resumed_runs_match_an_uninterrupted_run_bit_for_bit() {
    let trials: u64 = std::env::var("DACAPO_CRASH_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.zarr");

    let (ref_root, ref_cfg) = setup(dir.path(), "reference", &data);
    let t0 = Instant::now();
    train_to_end(&ref_cfg);
    let full_run = t0.elapsed();
    let reference = LocalWeightsStore::new(&ref_root)
        .retrieve_weights("resume", TRAIN_UNTIL)
        .unwrap();
    let ref_stats = FileStatsStore::new(&ref_root)
        .retrieve_training_stats("resume")
        .unwrap();
    assert_eq!(ref_stats.trained_until(), TRAIN_UNTIL);

    let mut rng = 0x9E37_79B9_7F4A_7C15_u64;
    let mut killed_mid_run = 0;
    for trial in 0..trials {
        let (root, cfg) = setup(dir.path(), &format!("trial{trial}"), &data);
        let mut child = dacapo()
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        assert!(
            wait_for_first_checkpoint(&mut child, &root),
            "no first checkpoint"
        );
        std::thread::sleep(jitter(&mut rng, full_run.as_millis() as u64));
        let _ = child.kill(); // SIGKILL on Unix.
        child.wait().unwrap();
        let at_kill = latest(&root).expect("a committed checkpoint survives the kill");
        if at_kill < TRAIN_UNTIL {
            killed_mid_run += 1;
        }

        train_to_end(&cfg);
        let resumed = LocalWeightsStore::new(&root)
            .retrieve_weights("resume", TRAIN_UNTIL)
            .unwrap();
        assert!(
            resumed.model == reference.model,
            "trial {trial}: model weights differ after resuming from {at_kill}"
        );
        assert!(
            resumed.optimizer == reference.optimizer,
            "trial {trial}: optimizer state differs after resuming from {at_kill}"
        );
        let stats = FileStatsStore::new(&root)
            .retrieve_training_stats("resume")
            .unwrap();
        assert_eq!(stats.trained_until(), TRAIN_UNTIL, "trial {trial}");
        let losses = |s: &dacapo_core::TrainingStats| {
            s.since(at_kill)
                .iter()
                .map(|r| r.loss.to_bits())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            losses(&stats),
            losses(&ref_stats),
            "trial {trial}: losses after checkpoint {at_kill} differ"
        );
    }
    eprintln!("{trials} trials, {killed_mid_run} killed before the end; full run {full_run:?}");
    assert!(
        trials == 0 || killed_mid_run > 0,
        "every kill came after training ended: the test did not test resuming"
    );
}

#[test]
fn a_second_trainer_on_the_same_run_is_refused_naming_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.zarr");
    let (root, cfg) = setup(dir.path(), "locked", &data);
    let _lock = dacapo_store::RunLock::acquire(&root, "resume").unwrap();
    let out = dacapo().arg(&cfg).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("locked") && err.contains(&std::process::id().to_string()),
        "{err}"
    );
}
