//! Prediction and validation benchmarks on flex, as JSON lines with a `workload` key:
//!
//! - `predict_3d` (WORKLOADS.md): blockwise prediction of the 3D U-Net of `train_step_3d` over
//!   an in-memory 256³ array (96³ with `DACAPO_BENCH_QUICK=1`), in voxels per second;
//!   `DACAPO_BENCH_BLOCK=N` (or `Z,Y,X`) sets the spatial input block (default: the
//!   validator's default block for 3D networks), `DACAPO_BENCH_SIZE=N` the array edge.
//! - `predict_3d_workers`: the same network over a zarr array on disk, as `dacapo predict
//!   --workers N` runs it (a resumable job with its ledger, N worker processes that claim
//!   blocks), with 1 and 2 local workers; voxels per second and each worker's peak RSS.
//!   `DACAPO_BENCH_WORKERS_SIZE=N` sets the edge (default as `predict_3d`),
//!   `DACAPO_BENCH_WORKER_COUNTS=1,2` the numbers of workers.
//! - `validate_3d`: one validation of that network on a synthetic N³ dataset (prediction kept
//!   in memory, post-processing and scores for the distance task's 5 thresholds); seconds and
//!   peak RSS. `DACAPO_BENCH_VALIDATE_SIZE=N` sets the edge (default 256, 64 when quick).
//! - `postprocess`: post-processing time per parameter set (see `postprocess/mod.rs`).
//!
//! Arguments filter workloads by name.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use burn::tensor::Device;
use dacapo_core::RunConfig;
use dacapo_core::config::TaskConfig;
use dacapo_core::memory::{peak_rss_bytes, reset_peak_rss};
use dacapo_data::{Normalizer, WriteOptions, ZarrArray, create_array};
use dacapo_models::{Task, UNet, UNetConfig};
use dacapo_validator::blockwise::block_count;
use dacapo_validator::run::{network_blocks, predict_array};
use dacapo_validator::{
    BlockWorker, JobRequest, Ledger, RunValidator, ValidatorOptions, plan_job, prepare_output,
};
use ndarray::{ArrayD, IxDyn};

mod postprocess;

fn env_list(name: &str) -> Option<Vec<usize>> {
    let v = std::env::var(name).ok()?;
    let list: Vec<usize> = v.split(',').map(|s| s.trim().parse().unwrap()).collect();
    Some(if list.len() == 1 {
        vec![list[0]; 3]
    } else {
        list
    })
}

fn quick() -> bool {
    std::env::var("DACAPO_BENCH_QUICK").is_ok_and(|v| v == "1")
}

/// The 3D U-Net of `train_step_3d` and its distance task (weights from seed 0).
fn network() -> (UNetConfig, UNet, Task) {
    let cfg = UNetConfig::new(3, 12, 2, vec![vec![2, 2, 2], vec![2, 2, 2]]);
    let task = Task::new(
        &TaskConfig::Distance {
            scale_factor: 10.0,
            thresholds: vec![0.0],
        },
        3,
    )
    .unwrap();
    let model = cfg.init(0, &Device::flex()).unwrap();
    (cfg, model, task)
}

/// The smooth test image every workload predicts.
fn value(z: usize, y: usize, x: usize) -> f32 {
    ((z * 7 + y * 3 + x) as f32 * 0.05).sin()
}

fn peak_mb() -> String {
    peak_rss_bytes().map_or("null".to_owned(), |b| format!("{:.1}", b as f64 / 1e6))
}

fn main() {
    // A worker process of `predict_3d_workers` (this binary started again).
    if let Ok(worker) = std::env::var("DACAPO_BENCH_WORKER") {
        worker_process(worker.parse().unwrap());
        return;
    }
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wanted = |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));
    if wanted("predict_3d") {
        predict_3d();
    }
    if wanted("predict_3d_workers") {
        predict_3d_workers();
    }
    if wanted("validate_3d") {
        validate_3d();
    }
    if wanted("postprocess") {
        postprocess::run(quick());
    }
}

fn predict_3d() {
    let edge = env_list("DACAPO_BENCH_SIZE").map_or(if quick() { 96 } else { 256 }, |s| s[0]);
    let shape = vec![edge; 3];
    let (cfg, model, task) = network();
    let params = model.num_parameters();
    let block = env_list("DACAPO_BENCH_BLOCK");
    let blocks = network_blocks(&cfg, block.as_deref(), &shape).unwrap();
    let mut full = vec![1];
    full.extend(&shape);
    let input = ArrayD::from_shape_fn(IxDyn(&full), |ix| value(ix[1], ix[2], ix[3]));
    // Warm-up: one block.
    let in_block = blocks.spec.input_block();
    let mut one = vec![1, 1];
    one.extend(&in_block);
    model
        .predict(&task, &ArrayD::<f32>::zeros(IxDyn(&one)))
        .unwrap();

    let start = Instant::now();
    let out = predict_array(&model, &task, input.view(), &blocks, None).unwrap();
    let seconds = start.elapsed().as_secs_f64();
    assert_eq!(&out.shape()[1..], shape.as_slice());
    assert!(out.iter().all(|v| v.is_finite()));
    let n: usize = shape.iter().product();
    println!(
        "{{\"workload\":\"predict_3d\",\"n\":{n},\"seconds\":{seconds:.3},\"voxels_per_s\":{:.0},\
         \"per_op_ms\":{:.1},\"shape\":{shape:?},\"block\":{in_block:?},\"output_block\":{:?},\
         \"blocks\":{},\"params\":{params},\"threads\":{},\"backend\":\"flex\"}}",
        n as f64 / seconds,
        seconds * 1e3,
        blocks.spec.output_block,
        block_count(&shape, &blocks.spec),
        rayon::current_num_threads()
    );
}

/// Writes the test image as a zarr array `raw` of `edge³` f32, a slab at a time.
fn write_input(container: &Path, edge: usize) {
    let opts = WriteOptions {
        chunk_shape: Some(vec![64; 3]),
        voxel_size: Some(vec![8.0; 3]),
        ..WriteOptions::default()
    };
    let writer = create_array::<f32>(container, "raw", &[edge as u64; 3], &opts).unwrap();
    for z0 in (0..edge).step_by(64) {
        let depth = 64.min(edge - z0);
        let slab = ArrayD::from_shape_fn(IxDyn(&[depth, edge, edge]), |ix| {
            value(z0 + ix[0], ix[1], ix[2])
        });
        writer.write(&[z0 as u64, 0, 0], &slab).unwrap();
    }
}

/// One `dacapo predict-worker`: reads the job from the ledger in `DACAPO_BENCH_JOB`, predicts
/// the blocks it claims and prints its peak RSS.
fn worker_process(worker: usize) {
    let workers: usize = std::env::var("DACAPO_BENCH_WORKERS")
        .unwrap()
        .parse()
        .unwrap();
    let container = std::env::var("DACAPO_BENCH_JOB").unwrap();
    let threads = std::thread::available_parallelism().map_or(1, usize::from) / workers;
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .build_global()
        .unwrap();
    let (_, model, task) = network();
    let (spec, _) = Ledger::new(Path::new(&container), "prediction")
        .job()
        .unwrap()
        .unwrap();
    let summary = BlockWorker {
        spec: &spec,
        model: &model,
        task: &task,
        post: None,
        worker,
        workers,
    }
    .run(&mut |_| {})
    .unwrap();
    assert!(summary.failed.is_empty(), "{:?}", summary.failed);
    println!(
        "{{\"worker\":{worker},\"blocks\":{},\"threads\":{},\"peak_rss_mb\":{}}}",
        summary.predicted,
        rayon::current_num_threads(),
        peak_mb()
    );
}

fn predict_3d_workers() {
    let edge = env_list("DACAPO_BENCH_WORKERS_SIZE")
        .or_else(|| env_list("DACAPO_BENCH_SIZE"))
        .map_or(if quick() { 96 } else { 256 }, |s| s[0]);
    let dir = tempfile::tempdir().unwrap();
    let input_container = dir.path().join("input.zarr");
    write_input(&input_container, edge);
    let input = ZarrArray::open(&input_container, "raw", Some(3)).unwrap();
    let (cfg, _, task) = network();
    // Quick runs: small blocks, so that there are blocks to share.
    let block = env_list("DACAPO_BENCH_BLOCK").or_else(|| quick().then(|| vec![88; 3]));
    let counts: Vec<usize> = std::env::var("DACAPO_BENCH_WORKER_COUNTS").map_or(vec![1, 2], |v| {
        v.split(',').map(|s| s.trim().parse().unwrap()).collect()
    });
    for workers in counts {
        let output = dir.path().join(format!("out{workers}.zarr"));
        let spec = plan_job(&JobRequest {
            run: "bench",
            root: dir.path(),
            iteration: 0,
            checkpoint_sha256: "seed 0".into(),
            backend: "flex",
            device: "default",
            net: &cfg,
            out_channels: task.out_channels(),
            input: &input,
            normalizer: Normalizer::IDENTITY,
            output_container: &output,
            output_array: "prediction",
            block_shape: block.as_deref(),
            post_process: None,
        })
        .unwrap();
        prepare_output(&spec, &input, false).unwrap();
        let start = Instant::now();
        let children: Vec<_> = (0..workers)
            .map(|w| {
                Command::new(std::env::current_exe().unwrap())
                    .env("DACAPO_BENCH_WORKER", w.to_string())
                    .env("DACAPO_BENCH_WORKERS", workers.to_string())
                    .env("DACAPO_BENCH_JOB", &output)
                    .stdout(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let reports: Vec<serde_json::Value> = children
            .into_iter()
            .map(|c| {
                let out = c.wait_with_output().unwrap();
                assert!(out.status.success(), "a worker failed");
                serde_json::from_slice(&out.stdout).unwrap()
            })
            .collect();
        let seconds = start.elapsed().as_secs_f64();
        let done = Ledger::new(&output, "prediction")
            .done_blocks(spec.grid.blocks)
            .unwrap();
        assert!(done.iter().all(|d| *d), "blocks left undone");
        let n = edge.pow(3);
        let rss: Vec<String> = reports
            .iter()
            .map(|r| r["peak_rss_mb"].to_string())
            .collect();
        let blocks: Vec<String> = reports.iter().map(|r| r["blocks"].to_string()).collect();
        println!(
            "{{\"workload\":\"predict_3d_workers\",\"workers\":{workers},\"n\":{n},\
             \"seconds\":{seconds:.3},\"voxels_per_s\":{:.0},\"shape\":[{edge},{edge},{edge}],\
             \"output_block\":{:?},\"blocks\":{},\"blocks_per_worker\":[{}],\
             \"threads_per_worker\":{},\"peak_rss_mb_per_worker\":[{}],\"peak_rss_mb\":{},\
             \"backend\":\"flex\"}}",
            n as f64 / seconds,
            spec.grid.output_block,
            spec.grid.blocks,
            blocks.join(","),
            reports[0]["threads"],
            rss.join(","),
            rss.iter()
                .filter_map(|r| r.parse::<f64>().ok())
                .fold(0.0f64, f64::max)
        );
    }
}

/// A run config validating the bench network on a synthetic `edge³` dataset in `dir`.
fn validation_config(dir: &Path) -> RunConfig {
    let d = dir.display();
    let text = format!(
        r#"
[run]
name = "bench"
train_until = 1
validation_interval = 1

[task]
kind = "distance"
scale_factor = 10.0

[architecture]
kind = "unet"
dims = 3
fmaps = 12
fmap_inc_factor = 2
downsample_factors = [[2, 2, 2], [2, 2, 2]]
input_shape = [88, 88, 88]

[datasplit]
train = [{{ zarr = "{d}/data.zarr", raw = "raw", gt = "labels" }}]
validate = [{{ name = "val", zarr = "{d}/data.zarr", raw = "raw", gt = "labels" }}]

[stores]
root = "{d}/runs"
"#
    );
    RunConfig::from_toml(&text, Path::new("bench.toml")).unwrap()
}

/// Writes raw (the test image as u8) and labels (cubes of 24 voxels) of `edge³`.
fn write_dataset(container: &Path, edge: usize) {
    let opts = WriteOptions {
        chunk_shape: Some(vec![64; 3]),
        ..WriteOptions::default()
    };
    let shape = [edge as u64; 3];
    let raw = create_array::<u8>(container, "raw", &shape, &opts).unwrap();
    let labels = create_array::<u64>(container, "labels", &shape, &opts).unwrap();
    for z0 in (0..edge).step_by(64) {
        let depth = 64.min(edge - z0);
        let at = [z0 as u64, 0, 0];
        let slab = IxDyn(&[depth, edge, edge]);
        raw.write(
            &at,
            &ArrayD::from_shape_fn(slab.clone(), |ix| {
                ((value(z0 + ix[0], ix[1], ix[2]) + 1.0) * 100.0) as u8
            }),
        )
        .unwrap();
        labels
            .write(
                &at,
                &ArrayD::from_shape_fn(slab, |ix| {
                    let cell = |v: usize| v / 24;
                    let inside = |v: usize| v % 24 >= 4;
                    let (z, y, x) = (z0 + ix[0], ix[1], ix[2]);
                    if inside(z) && inside(y) && inside(x) {
                        1 + (cell(z) * 1000 + cell(y)) as u64 * 1000 + cell(x) as u64
                    } else {
                        0
                    }
                }),
            )
            .unwrap();
    }
}

fn validate_3d() {
    let edge =
        env_list("DACAPO_BENCH_VALIDATE_SIZE").map_or(if quick() { 64 } else { 256 }, |s| s[0]);
    let dir = tempfile::tempdir().unwrap();
    write_dataset(&dir.path().join("data.zarr"), edge);
    let config = validation_config(dir.path());
    let (_, model, task) = network();
    let options = ValidatorOptions {
        write_predictions: true,
        ..ValidatorOptions::default()
    };
    let mut validator = RunValidator::with_options(&config, options).unwrap();
    reset_peak_rss();
    let start = Instant::now();
    let scores = validator
        .validate_model(0, &model, &task, &dacapo_runtime::NoProgress)
        .unwrap();
    let seconds = start.elapsed().as_secs_f64();
    assert_eq!(scores.scores.len(), 1);
    println!(
        "{{\"workload\":\"validate_3d\",\"n\":{},\"seconds\":{seconds:.3},\"shape\":[{edge},{edge},{edge}],\
         \"parameters\":{},\"threads\":{},\"peak_rss_mb\":{},\"backend\":\"flex\"}}",
        edge.pow(3),
        validator.post_processor().parameters().len(),
        rayon::current_num_threads(),
        peak_mb()
    );
}
