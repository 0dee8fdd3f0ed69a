//! Exact resume, end to end: a trainer killed with SIGKILL at a random moment after its first
//! checkpoint and then resumed ends with the same weights, optimizer state and per-iteration
//! losses as an uninterrupted run (flex backend, bit for bit).
//!
//! Trials: `DACAPO_CRASH_TRIALS` (default 10); `cargo xtask crash --train --trials N`.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use dacapo_core::config::Augment;
use dacapo_store::{FileStatsStore, LocalWeightsStore, StatsStore, WeightsStore};

use crate::util::{latest, run_name, spawn_train, tiny, train};

const TRAIN_UNTIL: u64 = 60;
const INTERVAL: u64 = 10;

/// The run `resume` storing under `<dir>/<name>`, with every augmentation that draws random
/// numbers (so resume must restore the data stream exactly); its config file and root.
fn setup(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let root = dir.join(name);
    let run = tiny(dir, "resume")
        .schedule(TRAIN_UNTIL, INTERVAL)
        .seed(5)
        .keep_last(100)
        .root(&root)
        .with(|c| {
            c.trainer.batch_size = 2;
            c.trainer.augment = vec![
                Augment::Mirror,
                Augment::Transpose,
                Augment::Intensity,
                Augment::Noise,
            ];
            if let Some(s) = &mut c.datasplit.synthetic {
                (s.shape, s.seed, s.objects) = (vec![96, 96], 3, 12);
            }
        });
    let cfg = dir.join(format!("{name}.toml"));
    std::fs::write(&cfg, run.toml()).unwrap();
    (root, cfg)
}

fn wait_for_first_checkpoint(child: &mut Child, root: &Path) -> bool {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if latest(root, "resume").is_some() {
            return true;
        }
        if child.try_wait().unwrap().is_some() {
            return latest(root, "resume").is_some();
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
    let (ref_root, ref_cfg) = setup(dir.path(), "reference");
    let t0 = Instant::now();
    train(&ref_cfg);
    let full_run = t0.elapsed();
    let reference = LocalWeightsStore::new(&ref_root)
        .retrieve_weights(&run_name("resume"), TRAIN_UNTIL)
        .unwrap();
    let ref_stats = FileStatsStore::new(&ref_root)
        .retrieve_training_stats(&run_name("resume"))
        .unwrap();
    assert_eq!(ref_stats.trained_until(), TRAIN_UNTIL);

    let mut rng = 0x9E37_79B9_7F4A_7C15_u64;
    let mut killed_mid_run = 0;
    for trial in 0..trials {
        let (root, cfg) = setup(dir.path(), &format!("trial{trial}"));
        let mut child = spawn_train(&cfg);
        assert!(
            wait_for_first_checkpoint(&mut child, &root),
            "no first checkpoint"
        );
        std::thread::sleep(jitter(&mut rng, full_run.as_millis() as u64));
        let _ = child.kill(); // SIGKILL on Unix.
        child.wait().unwrap();
        let at_kill = latest(&root, "resume").expect("a committed checkpoint survives the kill");
        if at_kill < TRAIN_UNTIL {
            killed_mid_run += 1;
        }

        train(&cfg);
        let resumed = LocalWeightsStore::new(&root)
            .retrieve_weights(&run_name("resume"), TRAIN_UNTIL)
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
            .retrieve_training_stats(&run_name("resume"))
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
