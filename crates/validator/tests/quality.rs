//! Quality check: a short schedule of a quickstart-like run (synthetic 2D cells, distance task)
//! learns to segment its synthetic validation set.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::Instant;

use common::{quiet, run_name, stores};
use dacapo_core::RunConfig;
use dacapo_core::testing::TinyRun;
use dacapo_trainer::train;
use dacapo_validator::RunValidator;

/// The quickstart (configs/quickstart.toml) on smaller arrays and a shorter schedule.
fn config(dir: &Path, train_until: u64) -> RunConfig {
    let quickstart = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/quickstart.toml");
    TinyRun::from_file(&quickstart, "quality", dir)
        .schedule(train_until, 40)
        .keep_last(2)
        .with(|c| {
            if let Some(s) = &mut c.datasplit.synthetic {
                (s.shape, s.objects) = (vec![256, 256], 15);
            }
        })
        .build()
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
        .retrieve_validation_iteration_scores(&run_name("quality"))
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
        .retrieve_best(&run_name("quality"), "val", "f1")
        .unwrap();
    let best_dice = stores
        .weights
        .retrieve_best(&run_name("quality"), "val", "dice")
        .unwrap();
    assert!(
        best_f1.value.max(best_dice.value) >= 0.7,
        "best f1 {best_f1:?}, best dice {best_dice:?}"
    );
}
