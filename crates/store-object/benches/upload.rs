//! Checkpoint upload and download throughput of one ~100 MB checkpoint: `LocalWeightsStore`
//! (with fsync), `ObjectWeightsStore` on `file://`, and on the S3 server named by
//! `DACAPO_TEST_S3_URL` (skipped with a message when unset; `cargo xtask services up s3`).
//! Prints one JSON line per store and direction; `DACAPO_BENCH_MB` sets the size.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use dacapo_core::{DType, NamedTensor, TensorMap};
use dacapo_store::conformance::data::run_name;
use dacapo_store::{LocalWeightsStore, TrainState, Weights, WeightsStore};
use dacapo_store_object::ObjectWeightsStore;

const REPS: u64 = 3;

/// A checkpoint of about `mb` MB: a third model, two thirds Adam moments, in 8 tensors each.
fn checkpoint(iteration: u64, mb: usize) -> (Weights, u64) {
    let per_tensor = (mb << 20) / 3 / 8;
    let tensor = |salt: usize, scale: usize| {
        let n = per_tensor * scale / 4 * 4;
        let data = (0..n).map(|i| (i.wrapping_mul(31) ^ salt) as u8).collect();
        NamedTensor::new(DType::F32, vec![n / 4], data).unwrap()
    };
    let mut model = TensorMap::new();
    let mut optimizer = TensorMap::new();
    for i in 0..8 {
        model.insert(format!("layer{i}.weight"), tensor(i, 1));
        optimizer.insert(format!("layer{i}.weight.exp_avg"), tensor(i + 8, 1));
        optimizer.insert(format!("layer{i}.weight.exp_avg_sq"), tensor(i + 16, 1));
    }
    let bytes = model
        .values()
        .chain(optimizer.values())
        .map(|t| t.data.len() as u64)
        .sum();
    let w = Weights {
        model,
        optimizer,
        state: TrainState::new(iteration, "bench", "flex", 0),
    };
    (w, bytes)
}

fn report(store: &str, op: &str, bytes: u64, times: &[Duration]) {
    let best = times.iter().min().copied().unwrap_or_default();
    let mut sorted = times.to_vec();
    sorted.sort();
    let median = sorted[sorted.len() / 2];
    let mbps = |d: Duration| bytes as f64 / 1e6 / d.as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "bench": "checkpoint",
            "store": store,
            "op": op,
            "bytes": bytes,
            "reps": times.len(),
            "median_s": median.as_secs_f64(),
            "median_mb_per_s": mbps(median),
            "best_mb_per_s": mbps(best),
        })
    );
}

fn bench(name: &str, store: &dyn WeightsStore, mb: usize) {
    let run = &run_name("bench-upload");
    let (mut up, mut down) = (Vec::new(), Vec::new());
    let mut bytes = 0;
    for rep in 0..REPS {
        let (w, b) = checkpoint(rep + 1, mb);
        bytes = b;
        let t = Instant::now();
        store.store_weights(run, rep + 1, &w).unwrap();
        up.push(t.elapsed());
        let t = Instant::now();
        let back = store.retrieve_weights(run, rep + 1).unwrap();
        down.push(t.elapsed());
        assert_eq!(back.model.len(), w.model.len());
        store.remove(run, rep + 1).unwrap();
    }
    report(name, "store_weights", bytes, &up);
    report(name, "retrieve_weights", bytes, &down);
}

fn main() {
    let mb: usize = std::env::var("DACAPO_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let dir = tempfile::tempdir().unwrap();
    bench(
        "local (fsync)",
        &LocalWeightsStore::new(dir.path().join("local")),
        mb,
    );
    let url = format!("file://{}", dir.path().join("object").display());
    bench(
        "object file://",
        &ObjectWeightsStore::from_url(&url).unwrap(),
        mb,
    );
    match std::env::var("DACAPO_TEST_S3_URL") {
        Ok(base) => {
            let url = format!(
                "{}/bench-{}",
                base.trim_end_matches('/'),
                std::process::id()
            );
            bench(
                "object s3 (moto, loopback)",
                &ObjectWeightsStore::from_url(&url).unwrap(),
                mb,
            );
        }
        Err(_) => eprintln!(
            "SKIPPED s3: DACAPO_TEST_S3_URL is not set (run `cargo xtask services up s3` and \
             export `cargo xtask services env`)"
        ),
    }
}
