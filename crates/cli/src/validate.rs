//! `dacapo validate`: validate stored checkpoints of a run again, replacing their scores and
//! updating the best records.

use std::path::Path;

use anyhow::{Context, Result};
use dacapo_core::{RunConfig, RunName};
use dacapo_runtime::Stores;
use dacapo_validator::{Checkpoints, RevalidateOptions, revalidate};

use crate::progress::{LogFormat, ProgressArgs};
use crate::{ComputeArgs, RootArg};

/// Criteria shown in the summary when the task reports them (all are stored).
const SHOWN: [&str; 4] = ["f1", "dice", "voi", "adapted_rand_error"];

/// Arguments of `dacapo validate`.
#[derive(clap::Args, Debug)]
pub struct ValidateArgs {
    /// The run (its frozen config `<root>/<run>/run.toml` says what to validate on).
    #[arg(long)]
    pub run: String,
    /// Validate this checkpoint (default: the latest).
    #[arg(long, conflicts_with = "all")]
    pub iteration: Option<u64>,
    /// Validate every stored checkpoint.
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub root: RootArg,
    #[command(flatten)]
    pub compute: ComputeArgs,
    #[command(flatten)]
    pub progress: ProgressArgs,
}

/// The frozen config of `run` under `root`, with `stores.root` set to `root`.
///
/// Relative data paths in it are relative to the working directory, as when it was trained.
pub fn load_frozen(root: &Path, run: &str) -> Result<RunConfig> {
    Ok(dacapo_runtime::frozen::load(root, &RunName::new(run)?)?)
}

/// Runs `dacapo validate`.
pub fn run(args: &ValidateArgs, format: LogFormat) -> Result<()> {
    let config = load_frozen(&args.root.resolve(), &args.run)?;
    let which = match (args.iteration, args.all) {
        (Some(n), _) => Checkpoints::Iteration(n),
        (None, true) => Checkpoints::All,
        (None, false) => Checkpoints::Latest,
    };
    let options = RevalidateOptions {
        backend: args.compute.backend,
        device: args.compute.device,
        ..RevalidateOptions::default()
    };
    let stores = Stores::open(&config)?;
    let progress = args.progress.reporter(format);
    let summary = revalidate(&config, &stores, which, &options, &*progress)
        .with_context(|| format!("validating run `{}` failed", args.run))?;
    let known = summary.scores.criteria();
    let criteria: Vec<&str> = SHOWN.into_iter().filter(|c| known.contains(c)).collect();
    for s in &summary.validated {
        for dataset in s.scores.keys() {
            let mut parts = Vec::new();
            for &criterion in &criteria {
                let sub = summary.scores.subscores([s.clone()])?;
                if let Some(best) = sub.best(dataset, criterion) {
                    parts.push(format!(
                        "{criterion} {:.4} ({})",
                        best.value, best.parameter
                    ));
                }
            }
            println!(
                "checkpoint {} on {dataset}: {}",
                s.iteration,
                if parts.is_empty() {
                    "no finite score".to_owned()
                } else {
                    parts.join(", ")
                }
            );
        }
    }
    for r in &summary.best_updated {
        println!(
            "best {}/{}: checkpoint {} ({}, {:.4})",
            r.dataset, r.criterion, r.iteration, r.parameter, r.value
        );
    }
    if summary.best_updated.is_empty() {
        println!("best records unchanged");
    }
    Ok(())
}
