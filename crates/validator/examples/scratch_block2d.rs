#![allow(clippy::unwrap_used, missing_docs)]
use std::time::Instant;
use burn::tensor::Device;
use dacapo_core::config::TaskConfig;
use dacapo_models::{Task, UNetConfig};
use dacapo_validator::blockwise::block_count;
use dacapo_validator::run::{network_blocks, predict_array};
use ndarray::{ArrayD, Dimension, IxDyn};

fn main() {
    let dims: usize = std::env::var("DIMS").ok().and_then(|s| s.parse().ok()).unwrap_or(2);
    let edge: usize = std::env::var("EDGE").ok().and_then(|s| s.parse().ok()).unwrap_or(512);
    let f = vec![vec![2; dims]; 2];
    let cfg = UNetConfig::new(dims, 12, 2, f);
    let task = Task::new(&TaskConfig::Distance { scale_factor: 10.0, thresholds: vec![0.0] }, dims).unwrap();
    let model = cfg.init(0, &Device::flex()).unwrap();
    let shape = vec![edge; dims];
    let mut full = vec![1];
    full.extend(&shape);
    let input = ArrayD::from_shape_fn(IxDyn(&full), |ix| { let s: usize = ix.slice().iter().sum(); (s as f32 * 0.05).sin() });
    for b in std::env::args().skip(1) {
        let b: usize = b.parse().unwrap();
        let blocks = network_blocks(&cfg, Some(&vec![b; dims]), &shape).unwrap();
        let _ = predict_array(&model, &task, input.view(), &blocks, None).unwrap();
        let t = Instant::now();
        let _ = predict_array(&model, &task, input.view(), &blocks, None).unwrap();
        let s = t.elapsed().as_secs_f64();
        println!("dims {dims} edge {edge} block {:?} out {:?} n {} : {:.3}s {:.2} Mvox/s", blocks.spec.input_block(), blocks.spec.output_block, block_count(&shape, &blocks.spec), s, shape.iter().product::<usize>() as f64 / s / 1e6);
    }
}
