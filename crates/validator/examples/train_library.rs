//! dacapo-rs as a library: a run config read and changed in code, trained with validation
//! through the local stores, then its stats and best records read back.
//!
//! ```text
//! cargo run --release -p dacapo-validator --example train_library [ROOT]
//! ```
//! Trains the quickstart's 2D U-Net on smaller synthetic cells (generated into `ROOT/data` on
//! first use) for 60 steps with validation every 30, under `ROOT` (default: a temp dir). Run it again with
//! the same ROOT: the run is finished, so it only reads the results.

use std::error::Error;
use std::path::{Path, PathBuf};

use dacapo_core::{RunConfig, RunName};
use dacapo_runtime::Stores;
use dacapo_trainer::{TrainOptions, train};
use dacapo_validator::RunValidator;

fn main() -> Result<(), Box<dyn Error>> {
    let (root, _temp) = match std::env::args_os().nth(1) {
        Some(root) => (PathBuf::from(root), None),
        None => {
            let temp = tempfile::tempdir()?;
            (temp.path().to_path_buf(), Some(temp))
        }
    };
    // A config file read, then changed in code: `RunConfig` is plain typed data.
    let quickstart = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/quickstart.toml");
    let mut config = RunConfig::load(&quickstart)?;
    config.run.name = RunName::new("library-example")?;
    (config.run.train_until, config.run.validation_interval) = (60, 30);
    let data = root.join("data/cells.zarr");
    for d in config
        .datasplit
        .train
        .iter_mut()
        .chain(&mut config.datasplit.validate)
    {
        d.zarr = data.clone();
    }
    if let Some(synthetic) = &mut config.datasplit.synthetic {
        (synthetic.zarr, synthetic.shape, synthetic.objects) = (data, vec![128, 128], 12);
    }
    config.stores.root = root.join("runs");

    let stores = Stores::local(&config);
    let mut validator = RunValidator::new(&config)?;
    let summary = train(&config, &stores, &TrainOptions::default(), &mut validator)?;
    println!(
        "trained from {} to {}; last loss {:?}",
        summary.resumed_from, summary.last_checkpoint, summary.last_loss
    );

    let run = &config.run.name;
    let stats = stores.stats.retrieve_training_stats(run)?;
    println!("{} iterations of training stats", stats.trained_until());
    let scores = stores.stats.retrieve_validation_iteration_scores(run)?;
    for criterion in ["dice", "voi"] {
        if let Some(best) = scores.best("val", criterion) {
            let record = stores.weights.retrieve_best(run, "val", criterion)?;
            println!(
                "best {criterion} on val: {:.3} at iteration {} ({}); stored record points to {}",
                best.value, best.iteration, best.parameter, record.iteration
            );
        }
    }
    Ok(())
}
