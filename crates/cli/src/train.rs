//! `dacapo train`: train a run from its config, resuming from its latest checkpoint.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail};
use dacapo_core::RunConfig;
use dacapo_runtime::{Stores, backend};
use dacapo_trainer::TrainOptions;

use crate::progress::{LogFormat, ProgressArgs, outcome};
use crate::validate::load_frozen;
use crate::{ComputeArgs, RootArg};

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
    #[command(flatten)]
    pub compute: ComputeArgs,
    /// Continue an existing run although its config changed (resume is then not exact).
    #[arg(long)]
    pub force_config: bool,
    #[command(flatten)]
    pub progress: ProgressArgs,
}

/// Loads the config named by the arguments: the config file (with its store root replaced
/// by `--root`/`DACAPO_ROOT` when given), or the frozen config of `--run` under the root.
pub fn load_config(args: &TrainArgs) -> Result<RunConfig> {
    match (&args.config, &args.run) {
        (Some(path), _) => {
            let mut config = RunConfig::load(path)?;
            if let Some(root) = &args.root.root {
                config.stores.root = root.clone();
            }
            Ok(config)
        }
        (None, Some(run)) => load_frozen(&args.root.resolve(), run),
        (None, None) => bail!("give a config file or --run NAME"),
    }
}

/// Runs `dacapo train`.
pub fn run(args: &TrainArgs, format: LogFormat) -> Result<()> {
    let config = load_config(args)?;
    // Before anything else uses the thread pool (data generation, the validator).
    backend::set_cpu_threads(config.run.threads);
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
        backend: args.compute.backend,
        device: args.compute.device,
        force_config: args.force_config,
        stop,
        progress: args.progress.reporter(format),
    };
    let stores = Stores::open(&config)?;
    let run = config.run.name.clone();
    let mut validator = dacapo_validator::RunValidator::new(&config)?;
    let summary = dacapo_trainer::train(&config, &stores, &options, &mut validator)
        .with_context(|| format!("training run `{run}` failed"))?;
    let loss = summary
        .last_loss
        .map_or_else(|| "-".to_owned(), |l| format!("{l:.4e}"));
    let text = if summary.stopped {
        format!(
            "run `{run}` stopped at checkpoint {} (last loss {loss}); resume with `dacapo train \
             --run {run} --root {}`",
            summary.last_checkpoint,
            stores.root.display()
        )
    } else {
        format!(
            "run `{run}` trained to {} (resumed from {}, last loss {loss}); see `dacapo runs \
             show {run}`",
            summary.last_checkpoint, summary.resumed_from
        )
    };
    let event = serde_json::json!({
        "event": if summary.stopped { "stopped" } else { "trained" },
        "run": run.as_str(),
        "resumed_from": summary.resumed_from,
        "last_checkpoint": summary.last_checkpoint,
        "last_loss": summary.last_loss,
    });
    outcome(format, &text, event);
    Ok(())
}
