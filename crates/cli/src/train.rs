//! `dacapo train`: train a run from its config, resuming from its latest checkpoint.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail};
use dacapo_core::RunConfig;
use dacapo_core::config::Backend;
use dacapo_runtime::Stores;
use dacapo_trainer::{TrainOptions, frozen_config_path};

use crate::RootArg;

/// Arguments of `dacapo train`.
#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// Run config (TOML). Omit it and pass --run to resume a run from its frozen config.
    #[arg(required_unless_present = "run", conflicts_with = "run")]
    pub config: Option<PathBuf>,
    /// Resume an existing run by name from `<root>/<name>/run.toml`.
    #[arg(long)]
    pub run: Option<String>,
    #[command(flatten)]
    pub root: RootArg,
    /// Compute backend, overriding `run.backend` (flex, wgpu, cuda, tch).
    #[arg(long)]
    pub backend: Option<Backend>,
    /// Continue an existing run although its config changed (resume is then not exact).
    #[arg(long)]
    pub force_config: bool,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

/// Loads the config named by the arguments.
pub fn load_config(args: &TrainArgs) -> Result<RunConfig> {
    match (&args.config, &args.run) {
        (Some(path), _) => Ok(RunConfig::load(path)?),
        (None, Some(run)) => {
            dacapo_core::validate_name("run", run)?;
            let path = frozen_config_path(&args.root.root, run);
            if !path.exists() {
                bail!(
                    "run `{run}` has no frozen config at {}: check the name (`dacapo runs ls \
                     --root {}`) or train it from its config file",
                    path.display(),
                    args.root.root.display()
                );
            }
            let mut config = RunConfig::load(&path)?;
            // The frozen config was written under this root, whatever its `stores.root` says.
            config.stores.root = args.root.root.clone();
            Ok(config)
        }
        (None, None) => bail!("give a config file or --run NAME"),
    }
}

/// Runs `dacapo train`.
pub fn run(args: &TrainArgs) -> Result<()> {
    let config = load_config(args)?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            // A second signal: the user wants out now; the last commit is intact.
            std::process::exit(130);
        }
        eprintln!("\nstopping after this step: writing a checkpoint (press Ctrl-C again to abort)");
    })
    .context("cannot install the signal handler")?;
    let options = TrainOptions {
        backend: args.backend,
        force_config: args.force_config,
        stop,
        progress: !args.no_progress,
    };
    let stores = Stores::open(&config)?;
    let run = config.run.name.clone();
    let mut validator = dacapo_validator::RunValidator::new(&config)?;
    let summary = dacapo_trainer::train(&config, &stores, &options, &mut validator)
        .with_context(|| format!("training run `{run}` failed"))?;
    let loss = summary
        .last_loss
        .map_or_else(|| "-".to_owned(), |l| format!("{l:.4e}"));
    if summary.stopped {
        eprintln!(
            "run `{run}` stopped at checkpoint {} (last loss {loss}); resume with `dacapo train --run {run} --root {}`",
            summary.last_checkpoint,
            stores.root.display()
        );
    } else {
        eprintln!(
            "run `{run}` trained to {} (resumed from {}, last loss {loss}); see `dacapo runs show {run}`",
            summary.last_checkpoint, summary.resumed_from
        );
    }
    Ok(())
}
