//! Validator workloads on flex. `predict_3d` (WORKLOADS.md): blockwise prediction of the 3D
//! U-Net of `train_step_3d` over a 256³ array (96³ with `DACAPO_BENCH_QUICK=1`), reported as
//! voxels per second. `postprocess`: post-processing time per parameter set (see
//! `postprocess/mod.rs`). Arguments filter workloads by name.
//!
//! `DACAPO_BENCH_BLOCK=N` (or `Z,Y,X`) sets the spatial input block of `predict_3d` (default:
//! the validator's default block for 3D networks); `DACAPO_BENCH_SIZE=N` the array edge.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use burn::tensor::Device;
use dacapo_core::config::TaskConfig;
use dacapo_models::{Task, UNetConfig};
use dacapo_validator::blockwise::block_count;
use dacapo_validator::run::{network_blocks, predict_array};
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

fn main() {
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wanted = |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));
    let quick = std::env::var("DACAPO_BENCH_QUICK").is_ok_and(|v| v == "1");
    if wanted("predict_3d") {
        predict_3d(quick);
    }
    if wanted("postprocess") {
        postprocess::run(quick);
    }
}

fn predict_3d(quick: bool) {
    let edge = env_list("DACAPO_BENCH_SIZE").map_or(if quick { 96 } else { 256 }, |s| s[0]);
    let shape = vec![edge; 3];
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
    let params = model.num_parameters();
    let block = env_list("DACAPO_BENCH_BLOCK");
    let blocks = network_blocks(&cfg, block.as_deref(), &shape).unwrap();
    let mut full = vec![1];
    full.extend(&shape);
    let input = ArrayD::from_shape_fn(IxDyn(&full), |ix| {
        ((ix[1] * 7 + ix[2] * 3 + ix[3]) as f32 * 0.05).sin()
    });
    // Warm-up: one block.
    let in_block = blocks.spec.input_block();
    let mut one = vec![1];
    one.extend(&in_block);
    let warm = ArrayD::<f32>::zeros(IxDyn(&one));
    let mut batch = vec![1];
    batch.extend(&one);
    model
        .predict(&task, &warm.into_shape_with_order(IxDyn(&batch)).unwrap())
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
