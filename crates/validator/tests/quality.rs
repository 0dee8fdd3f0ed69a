//! Quality check: a short schedule of a quickstart-like run (synthetic 2D cells, distance task)
//! learns to segment its synthetic validation set.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::Instant;

use common::{quiet, stores};
use dacapo_core::RunConfig;
use dacapo_trainer::train;
use dacapo_validator::RunValidator;

/// The quickstart (configs/quickstart.toml) on smaller arrays and a shorter schedule.
fn config(dir: &Path, train_until: u64) -> RunConfig {
    let d = dir.display();
    let text = format!(
        r#"
[run]
name = "quality"
train_until = {train_until}
validation_interval = 40
seed = 42

[task]
kind = "distance"
scale_factor = 5.0

[architecture]
kind = "unet"
dims = 2
fmaps = 12
fmap_inc_factor = 2
downsample_factors = [[2, 2], [2, 2]]
input_shape = [116, 116]

[trainer]
batch_size = 2
learning_rate = 5e-4
augment = ["mirror", "transpose", "intensity", "noise"]

[datasplit]
train = [{{ zarr = "{d}/q.zarr", raw = "raw", gt = "labels" }}]
validate = [{{ name = "val", zarr = "{d}/q.zarr", raw = "raw_val", gt = "labels_val" }}]

[datasplit.synthetic]
zarr = "{d}/q.zarr"
shape = [256, 256]
seed = 1
objects = 15

[stores]
root = "{d}/runs"
keep_last = 2
"#
    );
    RunConfig::from_toml(&text, Path::new("quality.toml")).unwrap()
}

#[test]
fn short_quickstart_schedule_segments_the_validation_set() {
    let dir = tempfile::tempdir().unwrap();
    let train_until = std::env::var("DACAPO_QUALITY_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(80);
    let config = config(dir.path(), train_until);
    let stores = stores(&config);
    let start = Instant::now();
    let mut validator = RunValidator::new(&config).unwrap();
    train(&config, &stores, &quiet(), &mut validator).unwrap();
    let scores = stores
        .stats
        .retrieve_validation_iteration_scores("quality")
        .unwrap();
    for s in scores.scores() {
        let sub = scores.subscores([s.clone()]).unwrap();
        let f1 = sub.best("val", "f1").map_or(f64::NAN, |b| b.value);
        let dice = sub.best("val", "dice").map_or(f64::NAN, |b| b.value);
        eprintln!("iteration {}: best f1 {f1:.3}, dice {dice:.3}", s.iteration);
    }
    eprintln!(
        "{train_until} steps in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    let best_f1 = stores
        .weights
        .retrieve_best("quality", "val", "f1")
        .unwrap();
    let best_dice = stores
        .weights
        .retrieve_best("quality", "val", "dice")
        .unwrap();
    assert!(
        best_f1.value.max(best_dice.value) >= 0.7,
        "best f1 {best_f1:?}, best dice {best_dice:?}"
    );
}
