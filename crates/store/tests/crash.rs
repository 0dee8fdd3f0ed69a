//! Crash tests that really kill: a child process (this test binary, re-executed) writes
//! checkpoints, stats and scores in a loop and is SIGKILLed at random moments; after every
//! kill the parent checks that the stores hold everything a completed call wrote, that the
//! latest checkpoint loads with valid checksums, and the next child resumes from it.
//!
//! `DACAPO_CRASH_TRIALS` sets the number of kills (default 50; `cargo xtask crash --trials
//! 1000` for the long run); `DACAPO_CRASH_SEED` replays a run's kill timings.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{iter_scores, meta, rec, run_name, weights_sized};
use dacapo_core::{RunName, TrainingIterationStats, ValidationScores};
use dacapo_store::{
    BestRecord, FileStatsStore, LocalWeightsStore, RunLock, StatsStore, StoreError, Verify,
    Weights, WeightsStore,
};

const ROLE_ENV: &str = "DACAPO_STORE_CRASH_ROLE";
const ROOT_ENV: &str = "DACAPO_STORE_CRASH_ROOT";
const GEN_ENV: &str = "DACAPO_STORE_CRASH_GEN";
const PROGRESS_ENV: &str = "DACAPO_STORE_CRASH_PROGRESS";
static RUN: std::sync::LazyLock<RunName> = std::sync::LazyLock::new(|| run_name("crash-run"));
/// A checkpoint every this many iterations.
const INTERVAL: u64 = 5;

/// Checkpoint content: tensors depend on the iteration only; the state records which child
/// (generation) wrote it, so a checkpoint committed but missed by `latest_iteration` would make
/// the next child's store fail instead of passing as an identical retry.
fn checkpoint(iteration: u64, generation: u64) -> Weights {
    let mut w = weights_sized(iteration, 1024 << (iteration / INTERVAL % 5));
    w.state
        .extra
        .insert("generation".into(), serde_json::json!(generation));
    w
}

fn score_values(iteration: u64, generation: u64) -> [[f64; 2]; 2] {
    let x = iteration as f64 / 1000.0 + generation as f64 * 1e-6;
    [[x, f64::NAN], [1.0 - x, x * 2.0]]
}

fn progress(file: &mut fs::File, line: &str) {
    // One write per line: it is in the page cache (and survives SIGKILL) once this returns.
    file.write_all(format!("{line}\n").as_bytes()).unwrap();
}

/// The child's writer loop: resume from the stores, then train forever.
fn writer(root: &Path, generation: u64, progress_path: &Path) {
    let mut out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(progress_path)
        .unwrap();
    let _lock = match RunLock::acquire(root, &RUN) {
        Ok(l) => l,
        Err(e) => {
            progress(&mut out, &format!("LOCKED-OUT {e}"));
            std::process::exit(3);
        }
    };
    let ws = LocalWeightsStore::new(root);
    let ss = FileStatsStore::new(root);
    let start = ws.latest_iteration(&RUN).unwrap().unwrap_or(0);
    if start > 0 {
        let w = ws.retrieve_weights(&RUN, start).unwrap();
        assert_eq!(
            w.model,
            checkpoint(start, 0).model,
            "resumed model of {start}"
        );
    }
    let mut stats = ss.retrieve_training_stats(&RUN).unwrap();
    stats.delete_after(start);
    assert_eq!(
        stats.trained_until(),
        start,
        "stats must reach the checkpoint"
    );
    let mut scores = ss.retrieve_validation_iteration_scores(&RUN).unwrap();
    if scores.meta != meta() {
        scores = ValidationScores::new(meta());
    }
    scores.delete_after(start + 1);
    progress(&mut out, &format!("START {start}"));
    let mut i = start;
    loop {
        stats.add_iteration_stats(rec(i, generation)).unwrap();
        i += 1;
        if i.is_multiple_of(2) || i.is_multiple_of(INTERVAL) {
            ss.store_training_stats(&RUN, &stats).unwrap();
            progress(&mut out, &format!("S {i}"));
        }
        if i.is_multiple_of(INTERVAL) {
            ws.store_weights(&RUN, i, &checkpoint(i, generation))
                .unwrap();
            progress(&mut out, &format!("W {i}"));
            scores
                .add_iteration_scores(iter_scores(i, score_values(i, generation)))
                .unwrap();
            ss.store_validation_iteration_scores(&RUN, &scores).unwrap();
            progress(&mut out, &format!("V {i}"));
            if i.is_multiple_of(2 * INTERVAL) {
                ws.store_best(&RUN, &best(i)).unwrap();
                progress(&mut out, &format!("B {i}"));
            }
            ws.apply_retention(&RUN, 3).unwrap();
            ss.sync(&RUN).unwrap();
        }
    }
}

fn best(iteration: u64) -> BestRecord {
    BestRecord {
        iteration,
        dataset: "val0".into(),
        criterion: "dice".into(),
        parameter: "threshold=0.25".into(),
        value: iteration as f64,
        higher_is_better: true,
    }
}

/// Entry point of the child processes; does nothing unless started by a crash test.
#[test]
#[ignore = "child process of the crash tests, started by them"]
fn crash_child() {
    let Ok(role) = std::env::var(ROLE_ENV) else {
        return;
    };
    let root = PathBuf::from(std::env::var(ROOT_ENV).unwrap());
    let progress_path = PathBuf::from(std::env::var(PROGRESS_ENV).unwrap());
    match role.as_str() {
        "writer" => writer(
            &root,
            std::env::var(GEN_ENV).unwrap().parse().unwrap(),
            &progress_path,
        ),
        "hold" => {
            let _lock = RunLock::acquire(&root, &RUN).unwrap();
            let mut out = fs::File::create(&progress_path).unwrap();
            progress(&mut out, &format!("LOCKED {}", std::process::id()));
            std::thread::sleep(Duration::from_secs(60));
        }
        other => panic!("unknown role {other}"),
    }
}

fn spawn(role: &str, root: &Path, generation: u64, progress_path: &Path, stderr: &Path) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "crash_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROLE_ENV, role)
        .env(ROOT_ENV, root)
        .env(GEN_ENV, generation.to_string())
        .env(PROGRESS_ENV, progress_path)
        .stdout(Stdio::null())
        .stderr(fs::File::create(stderr).unwrap())
        .spawn()
        .unwrap()
}

/// Small xorshift generator for kill timings.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// What the child reported as completed.
#[derive(Default, Debug)]
struct Report {
    start: Option<u64>,
    stats_until: u64,
    weights: BTreeSet<u64>,
    scores: BTreeSet<u64>,
    best: Option<u64>,
}

fn read_report(path: &Path) -> Report {
    let text = fs::read_to_string(path).unwrap_or_default();
    let mut r = Report::default();
    // Only complete lines count: a line torn by the kill was not reported.
    for line in text.split_inclusive('\n').filter(|l| l.ends_with('\n')) {
        let mut parts = line.split_whitespace();
        let (Some(tag), Some(n)) = (parts.next(), parts.next()) else {
            continue;
        };
        let Ok(n) = n.parse::<u64>() else { continue };
        match tag {
            "START" => r.start = Some(n),
            "S" => r.stats_until = r.stats_until.max(n),
            "W" => {
                r.weights.insert(n);
            }
            "V" => {
                r.scores.insert(n);
            }
            "B" => r.best = Some(n),
            _ => {}
        }
    }
    r
}

fn same_record(a: &TrainingIterationStats, b: &TrainingIterationStats) -> bool {
    let same = |x: f64, y: f64| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan());
    a.iteration == b.iteration && same(a.loss, b.loss) && same(a.time, b.time)
}

/// The parent's model of what is on disk, checked after every kill.
struct Expected {
    /// Training records known to be on disk (from earlier children).
    records: Vec<TrainingIterationStats>,
    latest: Option<u64>,
}

fn verify_after_kill(
    root: &Path,
    generation: u64,
    report: &Report,
    expected: &mut Expected,
    ctx: &str,
) {
    let ws = LocalWeightsStore::new(root);
    let ss = FileStatsStore::new(root);

    // Weights: the latest is committed, loads with valid checksums, never goes back, and is
    // at least every checkpoint whose store call completed.
    let latest = ws.latest_iteration(&RUN).unwrap();
    let max_reported = report.weights.iter().max().copied();
    assert!(
        latest >= max_reported,
        "{ctx}: latest {latest:?} < reported {max_reported:?}"
    );
    assert!(
        latest >= expected.latest,
        "{ctx}: latest went back from {:?} to {latest:?}",
        expected.latest
    );
    if let Some(l) = latest {
        ws.verify(&RUN, l, Verify::Full).unwrap();
        let w = ws.retrieve_weights(&RUN, l).unwrap();
        let wanted = checkpoint(l, 0);
        assert_eq!(w.model, wanted.model, "{ctx}: model of checkpoint {l}");
        assert_eq!(
            w.optimizer, wanted.optimizer,
            "{ctx}: optimizer of checkpoint {l}"
        );
        let g = w.state.extra["generation"].as_u64().unwrap();
        assert!(g <= generation, "{ctx}");
    }
    for n in ws.iterations(&RUN).unwrap() {
        ws.verify(&RUN, n, Verify::Full).unwrap();
    }
    expected.latest = latest;

    // Training stats: everything a completed store call wrote is there, exactly.
    let disk = ss.retrieve_training_stats(&RUN).unwrap();
    let disk = disk.iteration_stats();
    match report.start {
        // Killed before resuming: the child wrote nothing.
        None => assert!(
            disk.len() == expected.records.len()
                && disk
                    .iter()
                    .zip(&expected.records)
                    .all(|(a, b)| same_record(a, b)),
            "{ctx}: stats changed although the child never resumed"
        ),
        Some(start) => {
            let must = start.max(report.stats_until);
            assert!(
                disk.len() as u64 >= must,
                "{ctx}: {} stats records on disk, expected at least {must}",
                disk.len()
            );
            for (i, r) in disk.iter().enumerate() {
                let old = expected.records.get(i).is_some_and(|o| same_record(o, r));
                let i = i as u64;
                let new = same_record(r, &rec(i, generation));
                let ok = if i < start {
                    old
                } else if i < report.stats_until {
                    new
                } else {
                    // Written by a call that completed unreported, or left by an earlier child.
                    new || old
                };
                assert!(ok, "{ctx}: stats record {i} is {r:?}");
            }
        }
    }
    expected.records = disk.to_vec();

    // Validation scores: every reported store is there with this child's values.
    let scores = ss.retrieve_validation_iteration_scores(&RUN).unwrap();
    for &n in &report.scores {
        let s = scores.scores().iter().find(|s| s.iteration == n);
        assert_eq!(
            s,
            Some(&iter_scores(n, score_values(n, generation))),
            "{ctx}: validation of {n}"
        );
    }

    // Best record: at least as new as reported, pointing to a kept checkpoint.
    if let Some(b) = report.best {
        let rec = ws.retrieve_best(&RUN, "val0", "dice").unwrap();
        assert!(
            rec.iteration >= b,
            "{ctx}: best {} < reported {b}",
            rec.iteration
        );
        ws.retrieve_weights(&RUN, rec.iteration).unwrap();
    }
}

#[test]
fn sigkill_at_random_moments_loses_nothing_completed() {
    let trials: u64 = std::env::var("DACAPO_CRASH_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let seed: u64 = std::env::var("DACAPO_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("crash test: {trials} trials, DACAPO_CRASH_SEED={seed}");
    let mut rng = Rng(seed | 1);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("runs");
    let mut expected = Expected {
        records: Vec::new(),
        latest: None,
    };
    let started = Instant::now();
    let mut checkpoints_seen = BTreeSet::new();
    for trial in 1..=trials {
        let progress_path = dir.path().join(format!("progress-{trial}"));
        let stderr_path = dir.path().join(format!("stderr-{trial}"));
        let mut child = spawn("writer", &root, trial, &progress_path, &stderr_path);
        // Kill anywhere from before the child has resumed to well into its loop.
        let delay = Duration::from_millis(2 + rng.below(120));
        let deadline = Instant::now() + delay;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "trial {trial}: child exited by itself ({status}): {}",
                    fs::read_to_string(&stderr_path).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let report = read_report(&progress_path);
        let ctx = format!("trial {trial} (seed {seed}, killed after {delay:?}, report {report:?})");
        verify_after_kill(&root, trial, &report, &mut expected, &ctx);
        checkpoints_seen.extend(expected.latest);
    }
    // The kills did land while real work was done.
    assert!(
        expected.latest.is_some() && checkpoints_seen.len() > 1,
        "children never got to commit checkpoints: {checkpoints_seen:?}"
    );

    // Reopening for writing works after the last kill, in this process.
    let _lock = RunLock::acquire(&root, &RUN).unwrap();
    let ws = LocalWeightsStore::new(&root);
    let ss = FileStatsStore::new(&root);
    let latest = ws.latest_iteration(&RUN).unwrap().unwrap();
    let mut stats = ss.retrieve_training_stats(&RUN).unwrap();
    stats.delete_after(latest);
    for i in latest..latest + INTERVAL {
        stats.add_iteration_stats(rec(i, 0)).unwrap();
    }
    ss.store_training_stats(&RUN, &stats).unwrap();
    let next = latest + INTERVAL;
    ws.store_weights(&RUN, next, &checkpoint(next, 0)).unwrap();
    assert_eq!(ws.latest_iteration(&RUN).unwrap(), Some(next));
    assert_eq!(
        ss.retrieve_training_stats(&RUN).unwrap().trained_until(),
        next
    );
    eprintln!(
        "crash test: {trials} kills in {:.1} s, checkpoints reached: {checkpoints_seen:?}",
        started.elapsed().as_secs_f64()
    );
}

fn wait_for_line(path: &Path, prefix: &str, child: &mut Child) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(line) = fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with(prefix))
        {
            return line.to_owned();
        }
        assert!(child.try_wait().unwrap().is_none(), "child exited early");
        assert!(Instant::now() < deadline, "no {prefix} line from the child");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn second_writer_is_refused_while_the_first_holds_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("runs");
    let hold_progress = dir.path().join("hold");
    let mut holder = spawn(
        "hold",
        &root,
        0,
        &hold_progress,
        &dir.path().join("hold-err"),
    );
    let line = wait_for_line(&hold_progress, "LOCKED ", &mut holder);
    let pid = line.trim_start_matches("LOCKED ").trim().to_owned();
    assert_eq!(pid, holder.id().to_string());

    // In this process.
    match RunLock::acquire(&root, &RUN) {
        Err(StoreError::Locked { holder: who, path }) => {
            assert!(who.contains(&format!("pid {pid}")), "{who}");
            assert!(path.ends_with(".lock"));
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    // In a second writer process: it exits at once naming the holder.
    let w_progress = dir.path().join("writer");
    let mut writer = spawn(
        "writer",
        &root,
        1,
        &w_progress,
        &dir.path().join("writer-err"),
    );
    let status = writer.wait().unwrap();
    assert_eq!(status.code(), Some(3));
    let text = fs::read_to_string(&w_progress).unwrap();
    assert!(
        text.starts_with("LOCKED-OUT") && text.contains(&format!("pid {pid}")),
        "{text}"
    );
    // Killing the holder releases the lock: the OS lock does not outlive its process.
    holder.kill().unwrap();
    holder.wait().unwrap();
    let _lock = RunLock::acquire(&root, &RUN).unwrap();
}
