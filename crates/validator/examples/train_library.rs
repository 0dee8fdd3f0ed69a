//! dacapo-rs as a library: a run config built in code, trained with validation through the
//! local stores, then its stats and best records read back.
//!
//! ```text
//! cargo run --release -p dacapo-validator --example train_library [ROOT]
//! ```
//! Trains a small 2D U-Net on synthetic cells (generated into `ROOT/data` on first use) for
//! 60 steps with validation every 30, under `ROOT` (default: a temp dir). Run it again with
//! the same ROOT: the run is finished, so it only reads the results.

use std::error::Error;
use std::path::PathBuf;

use dacapo_core::RunConfig;
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
    let data = root.join("data/cells.zarr");
    // The same TOML a `dacapo train` config file holds; `RunConfig::load(path)` reads a file.
    let text = format!(
        r#"
[run]
name = "library-example"
train_until = 60
validation_interval = 30

[task]
kind = "distance"
scale_factor = 5.0

[architecture]
kind = "unet"
dims = 2
fmaps = 8
downsample_factors = [[2, 2]]
input_shape = [64, 64]

[trainer]
learning_rate = 5e-4

[datasplit]
train = [{{ zarr = "{data}", raw = "raw", gt = "labels" }}]
validate = [{{ name = "val", zarr = "{data}", raw = "raw_val", gt = "labels_val" }}]
synthetic = {{ zarr = "{data}", shape = [128, 128], objects = 12 }}

[stores]
root = "{root}"
"#,
        data = data.display(),
        root = root.join("runs").display(),
    );
    let config = RunConfig::from_toml(&text, "library-example.toml".as_ref())?;

    let stores = Stores::local(&config);
    let mut validator = RunValidator::new(&config)?;
    let summary = train(&config, &stores, &TrainOptions::default(), &mut validator)?;
    println!(
        "trained from {} to {}; last loss {:?}",
        summary.resumed_from, summary.last_checkpoint, summary.last_loss
    );

    let run = config.run.name.as_str();
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
