//! Store benchmarks: the store workloads of `shared/bench/WORKLOADS.md`.
//!
//! Prints one JSON line per workload, then a markdown table with the targets of the
//! foundation issue. `cargo bench -p dacapo-store --bench stores`; `DACAPO_BENCH_QUICK=1`
//! shrinks every size for a smoke run. Files go to a temp dir under `$TMPDIR`, on the same
//! disk as the plain write+fsync baseline measured in the same run.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::fs;
use std::hint::black_box;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

use dacapo_core::{NamedTensor, RunName, TensorMap, TrainingIterationStats, TrainingStats};
use dacapo_store::conformance::data::run_name;
use dacapo_store::{
    FileStatsStore, LocalWeightsStore, StatsStore, TrainState, Weights, WeightsStore,
};
use serde_json::{Value, json};

struct Row {
    workload: String,
    n: u64,
    measured: String,
    target: &'static str,
    pass: Option<bool>,
}

fn emit(line: Value) {
    println!("{line}");
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn record(i: u64) -> TrainingIterationStats {
    TrainingIterationStats {
        iteration: i,
        loss: 1.0 / (i as f64 + 1.0).sqrt() + (i % 7) as f64 * 1e-3,
        time: 0.2 + (i % 13) as f64 * 0.011,
    }
}

/// Appends `n` iterations, storing every `every`; returns (total s, last call ms, mean call
/// ms, median of the last 1000 calls ms).
fn append(root: &Path, run: &RunName, n: u64, every: u64) -> (f64, f64, f64, f64) {
    let store = FileStatsStore::new(root);
    let mut stats = TrainingStats::new();
    let mut calls = Vec::with_capacity((n / every) as usize);
    let t0 = Instant::now();
    for i in 0..n {
        stats.add_iteration_stats(record(i)).unwrap();
        if (i + 1) % every == 0 {
            let t = Instant::now();
            store.store_training_stats(run, &stats).unwrap();
            calls.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    let total = t0.elapsed().as_secs_f64();
    let last = *calls.last().unwrap();
    let mean = calls.iter().sum::<f64>() / calls.len() as f64;
    let tail = calls.len().saturating_sub(1000);
    let last_median = median(&mut calls[tail..]);
    (total, last, mean, last_median)
}

/// A checkpoint of about `total_bytes` (model + Adam moments, float32, PyTorch-style names).
fn checkpoint(total_bytes: usize, iteration: u64) -> Weights {
    let params = total_bytes / 12;
    // 24 conv layers with sizes growing towards the bottom of a U-Net, plus biases.
    let shares: Vec<usize> = (0..24).map(|l| 1usize << (2 * (l % 4))).collect();
    let sum: usize = shares.iter().sum();
    let mut model = TensorMap::new();
    let mut optimizer = TensorMap::new();
    let mut fill = 0u32;
    let mut tensor = |n: usize| {
        let data: Vec<f32> = (0..n)
            .map(|_| {
                fill = fill.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (fill >> 8) as f32 / 16_777_216.0
            })
            .collect();
        NamedTensor::from_f32(vec![n], &data).unwrap()
    };
    for (l, share) in shares.iter().enumerate() {
        let n = (params * share / sum).max(1);
        let name = format!("unet.layer{l}.conv.weight");
        model.insert(name.clone(), tensor(n));
        model.insert(format!("unet.layer{l}.conv.bias"), tensor(64));
        optimizer.insert(format!("state.{l}.exp_avg"), tensor(n));
        optimizer.insert(format!("state.{l}.exp_avg_sq"), tensor(n));
        optimizer.insert(format!("state.{l}.step"), tensor(1));
    }
    Weights {
        model,
        optimizer,
        state: TrainState::new(iteration, "bench", "flex", 1),
    }
}

fn dir_bytes(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

/// Plain write + fsync of `bytes` to a new file: the disk's limit for a checkpoint.
fn plain_write(dir: &Path, bytes: &[u8]) -> f64 {
    let path = dir.join("plain.bin");
    let t = Instant::now();
    let mut f = fs::File::create(&path).unwrap();
    f.write_all(bytes).unwrap();
    f.sync_all().unwrap();
    let s = t.elapsed().as_secs_f64();
    fs::remove_file(&path).unwrap();
    s
}

fn weights_workloads(
    root: &Path,
    label: &str,
    size: usize,
    reps: usize,
    judge: bool,
    rows: &mut Vec<Row>,
) {
    let store = LocalWeightsStore::new(root);
    let run = run_name(&format!("weights-{label}"));
    let w = checkpoint(size, 1);
    // The checkpoint's real size on disk (headers, state and manifest included).
    store.store_weights(&run, 1, &w).unwrap();
    let bytes = dir_bytes(&store.checkpoint_dir(&run, 1));
    store.remove(&run, 1).unwrap();
    let plain_buf: Vec<u8> = (0..bytes).map(|i| (i * 31 % 251) as u8).collect();
    let (mut store_s, mut plain_s) = (Vec::new(), Vec::new());
    // Interleaved, so load from other processes hits both alike.
    for rep in 0..reps {
        plain_s.push(plain_write(root, &plain_buf));
        let it = 10 + rep as u64;
        let mut wi = w.clone();
        wi.state.iteration = it;
        let t = Instant::now();
        store.store_weights(&run, it, &wi).unwrap();
        store_s.push(t.elapsed().as_secs_f64());
        if rep + 1 < reps {
            store.remove(&run, it).unwrap();
        }
    }
    let last = 10 + reps as u64 - 1;
    let plain = median(&mut plain_s);
    let stored = median(&mut store_s);
    let mb = bytes as f64 / 1e6;
    let ratio = plain / stored;
    emit(
        json!({"workload": "disk_write_bandwidth", "n": reps, "size": label, "seconds": plain,
        "per_op_ms": plain * 1e3, "bytes": bytes, "mb_per_s": mb / plain}),
    );
    emit(
        json!({"workload": format!("weights_store_{label}"), "n": reps, "seconds": stored,
        "per_op_ms": stored * 1e3, "bytes": bytes, "mb_per_s": mb / stored,
        "ratio_to_disk": ratio}),
    );
    rows.push(Row {
        workload: format!("disk_write_bandwidth ({label})"),
        n: reps as u64,
        measured: format!("{:.0} MB/s ({:.1} ms)", mb / plain, plain * 1e3),
        target: "baseline",
        pass: None,
    });
    rows.push(Row {
        workload: format!("weights_store_{label}"),
        n: reps as u64,
        measured: format!(
            "{:.0} MB/s ({:.1} ms), {ratio:.2}x disk",
            mb / stored,
            stored * 1e3
        ),
        target: ">= 0.8x disk",
        pass: judge.then_some(ratio >= 0.8),
    });

    let mut read_s = Vec::new();
    for _ in 0..reps {
        let t = Instant::now();
        black_box(store.retrieve_weights(&run, last).unwrap());
        read_s.push(t.elapsed().as_secs_f64());
    }
    let read = median(&mut read_s);
    emit(
        json!({"workload": format!("weights_retrieve_{label}"), "n": reps, "seconds": read,
        "per_op_ms": read * 1e3, "bytes": bytes, "mb_per_s": mb / read}),
    );
    rows.push(Row {
        workload: format!("weights_retrieve_{label}"),
        n: reps as u64,
        measured: format!("{:.0} MB/s ({:.1} ms)", mb / read, read * 1e3),
        target: "-",
        pass: None,
    });
    store.remove(&run, last).unwrap();
}

fn latest_workload(root: &Path, n: u64, rows: &mut Vec<Row>, target: bool) {
    // Setup without fsync (10k fsynced commits would take minutes); reads do not depend on it.
    let store = LocalWeightsStore::new(root).with_fsync(false);
    let run = run_name(&format!("latest-{n}"));
    let mut model = TensorMap::new();
    model.insert(
        "w".into(),
        NamedTensor::from_f32(vec![4], &[1.0, 2.0, 3.0, 4.0]).unwrap(),
    );
    for i in 1..=n {
        let w = Weights {
            model: model.clone(),
            optimizer: TensorMap::new(),
            state: TrainState::new(i, "bench", "flex", 1),
        };
        store.store_weights(&run, i, &w).unwrap();
    }
    let reps = 2000;
    let mut per = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        assert_eq!(store.latest_iteration(&run).unwrap(), Some(n));
        per.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let ms = median(&mut per);
    // The fallback when LATEST is missing: a scan of the directory.
    let latest = store.run_dir(&run).join("checkpoints/LATEST");
    let hint = fs::read(&latest).unwrap();
    fs::remove_file(&latest).unwrap();
    let t = Instant::now();
    assert_eq!(store.latest_iteration(&run).unwrap(), Some(n));
    let scan_ms = t.elapsed().as_secs_f64() * 1e3;
    fs::write(&latest, hint).unwrap();
    emit(
        json!({"workload": "latest_iteration", "n": n, "seconds": ms / 1e3, "per_op_ms": ms,
        "scan_fallback_ms": scan_ms}),
    );
    rows.push(Row {
        workload: "latest_iteration".into(),
        n,
        measured: format!("{:.4} ms (scan fallback {scan_ms:.1} ms)", ms),
        target: if target { "<= 1 ms" } else { "-" },
        pass: target.then_some(ms <= 1.0),
    });
}

fn main() {
    // `cargo bench` passes `--bench`; any other argument is ignored.
    let quick = std::env::var("DACAPO_BENCH_QUICK").is_ok_and(|v| v == "1");
    let tmp = tempfile::Builder::new()
        .prefix("dacapo-store-bench-")
        .tempdir()
        .unwrap();
    let root = tmp.path();
    eprintln!(
        "dacapo-store benchmarks in {} ({} CPU threads){}",
        root.display(),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        if quick { ", quick mode" } else { "" }
    );
    let mut rows = Vec::new();

    let sizes: &[u64] = if quick {
        &[1_000, 10_000]
    } else {
        &[1_000, 10_000, 100_000]
    };
    let top = *sizes.last().unwrap();
    for &n in sizes {
        for (every, name) in [(1, "stats_append_k1"), (100, "stats_append_k100")] {
            let run = run_name(&format!("{name}-{n}"));
            let (total, last, mean, last_median) = append(root, &run, n, every);
            emit(
                json!({"workload": name, "n": n, "seconds": total, "per_op_ms": mean,
                "last_op_ms": last, "mean_op_ms": mean, "last_1000_median_ms": last_median}),
            );
            let target = !quick && every == 1 && n == top;
            rows.push(Row {
                workload: name.into(),
                n,
                measured: format!(
                    "total {total:.3} s, last {last:.4} ms (median of last 1000: {last_median:.4} ms), mean {mean:.4} ms"
                ),
                target: if target { "per call <= 0.05 ms, total <= 5 s" } else { "-" },
                pass: target.then_some(last_median <= 0.05 && total <= 5.0),
            });
        }
    }

    let store = FileStatsStore::new(root);
    let run = run_name(&format!("stats_append_k1-{top}"));
    let mut times = Vec::new();
    for _ in 0..7 {
        let t = Instant::now();
        let stats = store.retrieve_training_stats(&run).unwrap();
        times.push(t.elapsed().as_secs_f64());
        assert_eq!(stats.len() as u64, top);
    }
    let s = median(&mut times);
    emit(json!({"workload": "stats_retrieve", "n": top, "seconds": s, "per_op_ms": s * 1e3}));
    rows.push(Row {
        workload: "stats_retrieve".into(),
        n: top,
        measured: format!("{:.1} ms", s * 1e3),
        target: "<= 40 ms (100k)",
        pass: (!quick).then_some(s <= 0.040),
    });

    let reps = if quick { 2 } else { 10 };
    weights_workloads(
        root,
        "small",
        if quick { 2_670_000 } else { 26_700_000 },
        reps,
        !quick,
        &mut rows,
    );
    weights_workloads(
        root,
        "large",
        if quick { 5_000_000 } else { 314_000_000 },
        reps,
        !quick,
        &mut rows,
    );

    let counts: &[u64] = if quick {
        &[100, 1_000]
    } else {
        &[1_000, 10_000]
    };
    for &n in counts {
        latest_workload(root, n, &mut rows, !quick && n == 10_000);
    }

    println!();
    println!("| workload | n | measured | target | pass |");
    println!("|---|---|---|---|---|");
    for r in rows {
        let pass = match r.pass {
            Some(true) => "pass",
            Some(false) => "FAIL",
            None => "",
        };
        println!(
            "| {} | {} | {} | {} | {} |",
            r.workload, r.n, r.measured, r.target, pass
        );
    }
}
