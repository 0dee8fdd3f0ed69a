//! `dacapo`: train, validate, predict, inspect and plot dacapo-rs runs.

mod export;
mod import_torch;
mod plot;
mod predict;
mod runs;
mod submit;
mod train;
mod validate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Train and inspect deep-learning segmentation runs (a Rust DaCapo).
#[derive(Parser)]
#[command(name = "dacapo", version, about, long_about = None)]
struct Cli {
    /// More log output (-v: info, -vv: debug, -vvv: trace). Also RUST_LOG.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Only errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

/// Where runs live when no config names it.
#[derive(clap::Args, Clone, Debug)]
pub struct RootArg {
    /// Root directory of the local stores.
    #[arg(long, env = "DACAPO_ROOT", default_value = "runs")]
    pub root: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Train a run (resumes from its latest checkpoint if it exists).
    Train(train::TrainArgs),
    /// Validate stored checkpoints of a run again, replacing their scores and best records.
    Validate(validate::ValidateArgs),
    /// Predict a whole zarr array with a stored checkpoint of a run (resumable; many workers
    /// on this machine or a SLURM job array with --workers).
    Predict(predict::PredictArgs),
    /// One worker of a `dacapo predict --workers N` job (started by `dacapo predict`).
    #[command(hide = true)]
    PredictWorker(predict::worker::WorkerArgs),
    /// List, show or remove runs.
    #[command(subcommand)]
    Runs(runs::RunsCommand),
    /// Queue runs on SLURM (one resumable sbatch job per config) or start them detached here.
    Submit(submit::SubmitArgs),
    /// Plot training loss and validation scores of runs to a PNG or SVG file.
    Plot(plot::PlotArgs),
    /// Write a checkpoint's model as a safetensors file PyTorch and numpy load.
    Export(export::ExportArgs),
    /// Store PyTorch/DaCapo weights (.pt, .pth or .safetensors) as a checkpoint of a run.
    ImportTorch(import_torch::ImportArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose, cli.quiet);
    let result = match cli.command {
        Command::Train(args) => train::run(&args),
        Command::Validate(args) => validate::run(&args),
        Command::Predict(args) => predict::run(&args),
        Command::PredictWorker(args) => predict::worker::run(&args),
        Command::Runs(cmd) => runs::run(cmd),
        Command::Submit(args) => submit::run(&args),
        Command::Plot(args) => plot::run(&args),
        Command::Export(args) => export::run(&args),
        Command::ImportTorch(args) => import_torch::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(verbose: u8, quiet: bool) {
    use tracing_subscriber::EnvFilter;
    let default = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}
