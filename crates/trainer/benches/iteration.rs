//! WORKLOADS.md `train_iteration_2d`: whole trainer iterations of configs/quickstart.toml
//! (sampling, augmentation, targets, step, stats) against the same network's step alone on
//! the same batch; their ratio is what the data pipeline costs. One JSON line.
//!
//! On flex, or on the backend and device named by `DACAPO_BENCH_BACKEND` and
//! `DACAPO_BENCH_DEVICE` (as `run.backend` / `run.device` write them; the backend's cargo
//! feature must be on: `cargo xtask bench train --backend tch --device cuda:0` does both).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Instant;

use dacapo_core::RunConfig;
use dacapo_core::config::{ArchitectureConfig, Backend, DeviceSpec};
use dacapo_data::{BatchSampler, Dataset, OpenOptions, SamplerSpec};
use dacapo_models::{Task, TrainStep, adam_config};
use dacapo_runtime::backend::{self, Chosen};
use dacapo_runtime::{NoValidation, Stores, unet_config};
use dacapo_trainer::{TrainOptions, train};

/// Iterations left out of the medians (thread pools, allocator and caches warming up).
const WARMUP: usize = 5;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The quickstart config on synthetic data and stores under `dir`, without validation.
fn quickstart(dir: &Path, iterations: u64) -> RunConfig {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut config = RunConfig::load(&root.join("configs/quickstart.toml")).unwrap();
    config.run.train_until = iterations;
    config.run.validation_interval = iterations;
    let zarr = dir.join("quickstart.zarr");
    if let Some(synthetic) = config.datasplit.synthetic.as_mut() {
        synthetic.zarr = zarr.clone();
    }
    for d in &mut config.datasplit.train {
        d.zarr = zarr.clone();
    }
    config.datasplit.validate.clear();
    config.stores.root = dir.join("runs");
    config
}

/// Median seconds of whole trainer iterations, from the run's stored per-iteration times.
fn trainer_iterations(config: &RunConfig) -> f64 {
    let stores = Stores::local(config);
    train(config, &stores, &TrainOptions::default(), &mut NoValidation).unwrap();
    let stats = stores
        .stats
        .retrieve_training_stats(&config.run.name)
        .unwrap();
    median(
        stats.iteration_stats()[WARMUP..]
            .iter()
            .map(|s| s.time)
            .collect(),
    )
}

/// Median seconds of the step alone on `on`, repeated on the batch of iteration 0.
fn step_alone(config: &RunConfig, on: &Chosen, steps: usize) -> (f64, Vec<usize>) {
    let ArchitectureConfig::Unet(arch) = &config.architecture;
    let task = Task::new(&config.task, arch.dims).unwrap();
    let net = unet_config(config, &task);
    let input = net.valid_input_shape(&arch.input_shape).unwrap();
    let output = net.output_shape(&input).unwrap();
    let datasets = config
        .datasplit
        .train
        .iter()
        .map(|d| Dataset::open(d, arch.dims, &OpenOptions::default()).unwrap())
        .collect();
    let spec = SamplerSpec::from_trainer(&config.trainer, config.run.seed, input, output);
    let batch = BatchSampler::new(datasets, spec).unwrap().batch(0).unwrap();
    let (target, weight) = task.targets(batch.labels.view(), None).unwrap();
    let model = net.init(config.run.seed, &on.device).unwrap();
    let mut step = TrainStep::new(model, task, &adam_config(0.0), config.trainer.learning_rate);
    let times = (0..WARMUP + steps)
        .map(|_| {
            let t = Instant::now();
            step.step(&batch.raw, &target, &weight).unwrap();
            t.elapsed().as_secs_f64()
        })
        .skip(WARMUP)
        .collect();
    (median(times), batch.raw.shape().to_vec())
}

fn main() {
    let quick = std::env::var_os("DACAPO_BENCH_QUICK").is_some();
    let iterations: u64 = if quick { 20 } else { 60 };
    let dir = tempfile::tempdir().unwrap();
    let mut config = quickstart(dir.path(), iterations);
    // The backend and device of the bench, as the run's own keys (the trainer picks them).
    let var = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.into());
    config.run.backend = var("DACAPO_BENCH_BACKEND", "flex")
        .parse::<Backend>()
        .unwrap_or_else(|e| panic!("DACAPO_BENCH_BACKEND: {e}"));
    config.run.device = var("DACAPO_BENCH_DEVICE", "default")
        .parse::<DeviceSpec>()
        .unwrap_or_else(|e| panic!("DACAPO_BENCH_DEVICE: {e}"));
    let on = backend::select(config.run.backend, config.run.device).unwrap();
    eprintln!(
        "train_iteration_2d: backend {}, device {}",
        on.backend, on.name
    );
    // Batches prepared on the training thread, as before prefetching.
    config.trainer.prefetch = 0;
    dacapo_core::memory::reset_peak_rss();
    let inline = trainer_iterations(&config);
    std::fs::remove_dir_all(&config.stores.root).unwrap();
    config.trainer.prefetch = dacapo_core::config::TrainerConfig::default().prefetch;
    let iteration = trainer_iterations(&config);
    let peak = dacapo_core::memory::peak_rss_bytes().map_or("null".to_owned(), |b| {
        format!("{:.1}", b as f64 / 1048576.0)
    });
    let (step, input) = step_alone(&config, &on, iterations as usize - WARMUP);
    println!(
        "{{\"workload\":\"train_iteration_2d\",\"n\":{},\"median_s\":{iteration:.5},\"step_s\":{step:.5},\
         \"pipeline_overhead\":{:.4},\"without_prefetch_s\":{inline:.5},\"prefetch\":{},\"input\":{input:?},\
         \"threads\":{},\"backend\":\"{}\",\"device\":\"{}\",\"peak_rss_mb\":{peak}}}",
        iterations as usize - WARMUP,
        iteration / step - 1.0,
        config.trainer.prefetch,
        rayon::current_num_threads(),
        on.backend,
        on.name
    );
}
