//! WORKLOADS.md `train_step_2d` and `train_step_3d`: median seconds per training step
//! (forward + MSE loss + backward + Adam) after 2 warm-ups, one JSON line per workload.
//!
//! On flex, or on the backend and device named by `DACAPO_BENCH_BACKEND` and
//! `DACAPO_BENCH_DEVICE` (as `run.backend` / `run.device` write them; the backend's cargo
//! feature must be on: `cargo xtask bench train --backend tch --device cuda:0` does both).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use dacapo_core::config::TaskConfig;
use dacapo_models::{Task, TrainStep, UNetConfig, adam_config};
use dacapo_runtime::backend::{self, Chosen};
use ndarray::{ArrayD, Dimension, IxDyn};

const WARMUP: usize = 2;

fn bench(name: &str, on: &Chosen, cfg: UNetConfig, near: &[usize], timed: usize) {
    dacapo_core::memory::reset_peak_rss();
    let dims = cfg.dims;
    // Distance task = one linear output channel with MSE, as the workload specifies.
    let task = Task::new(
        &TaskConfig::Distance {
            scale_factor: 10.0,
            thresholds: vec![0.0],
        },
        dims,
    )
    .unwrap();
    let input = cfg.valid_input_shape(near).unwrap();
    let output = cfg.output_shape(&input).unwrap();
    let model = cfg.init(0, &on.device).unwrap();
    let params = model.num_parameters();
    let mut ts = TrainStep::new(model, task.clone(), &adam_config(0.0), 1e-4);

    let mut in_shape = vec![1, 1];
    in_shape.extend(&input);
    let raw = ArrayD::from_shape_fn(IxDyn(&in_shape), |ix| {
        let s: usize = ix.as_array_view().iter().sum();
        (s as f32 * 0.1).sin()
    });
    let mut lab_shape = vec![1];
    lab_shape.extend(&output);
    let labels = ArrayD::from_shape_fn(IxDyn(&lab_shape), |ix| (ix[1] / 16 % 3) as u64);
    let (target, weight) = task.targets(labels.view(), None).unwrap();

    let mut times = Vec::with_capacity(timed);
    for i in 0..WARMUP + timed {
        let start = Instant::now();
        let loss = ts.step(&raw, &target, &weight).unwrap();
        let t = start.elapsed().as_secs_f64();
        assert!(loss.is_finite());
        if i >= WARMUP {
            times.push(t);
        }
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let mut out_shape = vec![1, 1];
    out_shape.extend(&output);
    let peak_rss_mb = dacapo_core::memory::peak_rss_bytes().map_or("null".to_owned(), |b| {
        format!("{:.1}", b as f64 / 1048576.0)
    });
    println!(
        "{{\"workload\":\"{name}\",\"n\":{timed},\"median_s\":{median:.4},\"seconds\":{median:.4},\
         \"per_op_ms\":{:.1},\"min_s\":{:.4},\"params\":{params},\"input\":{in_shape:?},\
         \"output\":{out_shape:?},\"threads\":{},\"backend\":\"{}\",\"device\":\"{}\",\
         \"peak_rss_mb\":{peak_rss_mb}}}",
        median * 1e3,
        times[0],
        rayon::current_num_threads(),
        on.backend,
        on.name
    );
}

fn main() {
    // As `dacapo train` does: the default thread pool, and freed activations kept for reuse
    // instead of page-faulted in anew.
    backend::set_cpu_threads(None);
    // `cargo bench` passes `--bench`; a name filter selects one workload.
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let want = |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));
    let var = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.into());
    let on = backend::select_by_name(
        &var("DACAPO_BENCH_BACKEND", "flex"),
        &var("DACAPO_BENCH_DEVICE", "default"),
    )
    .unwrap_or_else(|e| panic!("DACAPO_BENCH_BACKEND / DACAPO_BENCH_DEVICE: {e}"));
    eprintln!("train_step: backend {}, device {}", on.backend, on.name);
    if want("train_step_2d") {
        let cfg = UNetConfig::new(2, 12, 2, vec![vec![2, 2], vec![2, 2]]);
        bench("train_step_2d", &on, cfg, &[256, 256], 7);
    }
    if want("train_step_3d") {
        let cfg = UNetConfig::new(3, 12, 2, vec![vec![2, 2, 2], vec![2, 2, 2]]);
        bench("train_step_3d", &on, cfg, &[64, 64, 64], 5);
    }
}
