//! `dacapo predict-worker` (hidden): one worker of a prediction job, started by `dacapo
//! predict --workers N` on this machine or as a SLURM array task. It reads the job from the
//! output's ledger, opens the run's stores and the checkpoint itself, checks that the
//! checkpoint is the one the job was planned with, and predicts blocks until none is left.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use dacapo_models::load_model_tensors;
use dacapo_runtime::{Stores, backend, build_model};
use dacapo_validator::{BlockWorker, Ledger, checkpoint_sha256};

use crate::validate::load_frozen;

/// Arguments of `dacapo predict-worker`.
#[derive(clap::Args, Debug)]
pub struct WorkerArgs {
    /// The output's zarr container.
    #[arg(long)]
    pub container: PathBuf,
    /// The output array inside it.
    #[arg(long)]
    pub array: String,
    /// This worker's number, `0..workers` (default: `$SLURM_ARRAY_TASK_ID`).
    #[arg(long)]
    pub worker: Option<usize>,
    /// Number of workers of the launch.
    #[arg(long)]
    pub workers: usize,
    /// CPU threads (default: `run.threads`, else all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// Runs `dacapo predict-worker`.
pub fn run(args: &WorkerArgs) -> Result<()> {
    let worker = match args.worker {
        Some(w) => w,
        None => std::env::var("SLURM_ARRAY_TASK_ID")
            .ok()
            .and_then(|v| v.parse().ok())
            .context("give --worker K (or run as a SLURM array task)")?,
    };
    if worker >= args.workers {
        bail!("--worker {worker} must be below --workers {}", args.workers);
    }
    let ledger = Ledger::new(&args.container, &args.array);
    let Some((spec, _)) = ledger.job()? else {
        bail!(
            "{} has no prediction job; start predictions with `dacapo predict`",
            ledger.dir().display()
        );
    };
    let config = load_frozen(&spec.root, &spec.run)?;
    backend::set_cpu_threads(args.threads.or(config.run.threads));
    let device = backend::select_by_name(&spec.backend, &spec.device)?.device;
    let (model, task) = build_model(&config, &device)?;
    let stores = Stores::open(&config)?;
    let weights = stores
        .weights
        .retrieve_weights(&config.run.name, spec.iteration)?;
    if checkpoint_sha256(&weights.model) != spec.checkpoint_sha256 {
        bail!(
            "checkpoint {} of run `{}` is not the one this prediction was started with (its \
             weights changed); predict again with --overwrite",
            spec.iteration,
            spec.run
        );
    }
    let model = load_model_tensors(model, &weights.model)?;
    drop(weights);
    let post = spec
        .post_process
        .as_deref()
        .map(|id| super::post_process_for(&config, model.config().dims, id))
        .transpose()?;
    eprintln!(
        "worker {worker} of {} (pid {}): predicting {}/{} with run `{}` checkpoint {}",
        args.workers,
        std::process::id(),
        spec.output.container.display(),
        spec.output.array,
        spec.run,
        spec.iteration
    );
    let summary = BlockWorker {
        spec: &spec,
        model: &model,
        task: &task,
        post: post.as_ref(),
        worker,
        workers: args.workers,
    }
    .run(&mut |i| tracing::info!("worker {worker}: block {i} done"))?;
    eprintln!(
        "worker {worker}: predicted {} blocks, {} failed, peak RSS {}",
        summary.predicted,
        summary.failed.len(),
        dacapo_core::memory::peak_rss_bytes().map_or("unknown".to_owned(), |b| format!(
            "{:.0} MB",
            b as f64 / 1e6
        ))
    );
    if let Some((i, message)) = summary.failed.first() {
        bail!("block {i} failed: {message}");
    }
    Ok(())
}
