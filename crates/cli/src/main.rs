//! `dacapo`: train, validate, predict, inspect and plot dacapo-rs runs.

mod export;
mod import_torch;
mod plot;
mod predict;
mod progress;
mod runs;
mod submit;
mod train;
mod validate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use dacapo_core::config::{Backend, DeviceSpec};

use crate::progress::LogFormat;

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
    /// Format of progress and log lines on stderr: `text` (bars on a terminal, plain lines
    /// otherwise) or `json` (one JSON object per line).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// The store root, named the same way for every command.
#[derive(clap::Args, Clone, Debug)]
pub struct RootArg {
    /// Root directory of the local stores (run directories, frozen configs, file stats).
    /// Default: `DACAPO__STORES__ROOT` if set, else `runs`; `dacapo train CONFIG` uses the
    /// config's `stores.root` unless this is given.
    #[arg(long, env = "DACAPO_ROOT")]
    pub root: Option<PathBuf>,
}

impl RootArg {
    /// The store root: `--root`, `DACAPO_ROOT`, `DACAPO__STORES__ROOT`, or `runs`.
    pub fn resolve(&self) -> PathBuf {
        self.root
            .clone()
            .or_else(|| std::env::var_os("DACAPO__STORES__ROOT").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("runs"))
    }
}

/// The backend and device to compute on, overriding the run config.
#[derive(clap::Args, Clone, Debug)]
pub struct ComputeArgs {
    /// Compute backend, overriding `run.backend` (flex, wgpu, cuda, tch).
    #[arg(long)]
    pub backend: Option<Backend>,
    /// Device of the backend, overriding `run.device` (default, cpu, cuda, cuda:N, vulkan:N);
    /// a device the backend does not have is an error listing those it has.
    #[arg(long)]
    pub device: Option<DeviceSpec>,
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
    init_logging(cli.verbose, cli.quiet, cli.log_format);
    let format = cli.log_format;
    let result = match cli.command {
        Command::Train(args) => train::run(&args, format),
        Command::Validate(args) => validate::run(&args, format),
        Command::Predict(args) => predict::run(&args, format),
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
            let event = serde_json::json!({ "event": "error", "message": format!("{e:#}") });
            progress::outcome(format, &format!("error: {e:#}"), event);
            ExitCode::FAILURE
        }
    }
}

fn init_logging(verbose: u8, quiet: bool, format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let default = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only on a terminal: SLURM logs and redirected output stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.event_format(progress::JsonEvents).init(),
    }
}
