//! WORKLOADS.md `train_step_2d` and `train_step_3d` on flex: median seconds per training step
//! (forward + MSE loss + backward + Adam) after 2 warm-ups, one JSON line per workload.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use burn::tensor::Device;
use dacapo_core::config::TaskConfig;
use dacapo_models::{Task, TrainStep, UNetConfig, adam_config};
use ndarray::{ArrayD, Dimension, IxDyn};

const WARMUP: usize = 2;

fn bench(name: &str, cfg: UNetConfig, near: &[usize], timed: usize) {
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
    let model = cfg.init(0, &Device::flex()).unwrap();
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
         \"output\":{out_shape:?},\"threads\":{},\"backend\":\"flex\",\"peak_rss_mb\":{peak_rss_mb}}}",
        median * 1e3,
        times[0],
        rayon::current_num_threads()
    );
}

fn main() {
    // As `dacapo train` does: reuse freed activations instead of page-faulting them in anew.
    dacapo_kernels::keep_freed_memory();
    // `cargo bench` passes `--bench`; a name filter selects one workload.
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let want = |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));
    if want("train_step_2d") {
        let cfg = UNetConfig::new(2, 12, 2, vec![vec![2, 2], vec![2, 2]]);
        bench("train_step_2d", cfg, &[256, 256], 7);
    }
    if want("train_step_3d") {
        let cfg = UNetConfig::new(3, 12, 2, vec![vec![2, 2, 2], vec![2, 2, 2]]);
        bench("train_step_3d", cfg, &[64, 64, 64], 5);
    }
}
