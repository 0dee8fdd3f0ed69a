//! `dacapo predict`: predict a whole zarr array with a stored checkpoint of a run, blockwise,
//! resumably, in this process or in many worker processes (a local pool or one SLURM job
//! array); `dacapo predict --status` shows how far it is.
//!
//! - this module: arguments, checkpoint selection, planning the job and preparing the output;
//! - [`launch`]: running the job's workers and waiting for them;
//! - [`worker`]: the hidden `dacapo predict-worker` every worker process runs;
//! - [`status`]: what `--status` prints.

mod launch;
mod status;
pub mod worker;

use anyhow::{Context, Result, bail};
use dacapo_core::RunName;
use dacapo_core::config::{Backend, DeviceSpec};
use dacapo_data::{Normalizer, ZarrArray};
use dacapo_models::load_model_tensors;
use dacapo_runtime::{Stores, backend, build_model};
use dacapo_store::{BestRecord, WeightsStore};
use dacapo_validator::postprocess::{Parameters, PostProcessor, Sweep};
use dacapo_validator::{
    JobRequest, Ledger, PostProcess, PredictSpec, Prepared, ZarrPath, checkpoint_sha256, plan_job,
    prepare_output,
};

use crate::progress::{LogFormat, ProgressArgs, outcome};
use crate::submit::{Executor, SlurmOptions};
use crate::validate::load_frozen;
use crate::{ComputeArgs, RootArg};

/// Output array path when `--output` names only a container.
const DEFAULT_OUTPUT_ARRAY: &str = "prediction";

/// Arguments of `dacapo predict`.
#[derive(clap::Args, Debug)]
pub struct PredictArgs {
    /// The run whose network predicts.
    #[arg(long, required_unless_present = "status")]
    pub run: Option<String>,
    /// Use the weights of this checkpoint.
    #[arg(long, required_unless_present_any = ["best", "status"], conflicts_with = "best")]
    pub iteration: Option<u64>,
    /// Use the best checkpoint for a validation dataset and criterion, e.g. `val/dice`.
    #[arg(long, value_name = "DATASET/CRITERION")]
    pub best: Option<String>,
    /// Input array, e.g. `data/cells.zarr/raw`. It is normalised like the run's first training
    /// dataset: with `percentile` (the default) from the input's own percentiles, with `range`
    /// by the same min/max, with `none` not at all.
    #[arg(long, value_name = "ZARR/ARRAY", required_unless_present = "status")]
    pub input: Option<String>,
    /// Output container, optionally with an array path (default array `prediction`); written
    /// as float32 `(channels, spatial...)` (uint64 labels with --post-process) with the
    /// input's voxel size, offset and OME-Zarr metadata. A rerun of the same job resumes it.
    #[arg(long, value_name = "ZARR[/ARRAY]", required_unless_present = "status")]
    pub output: Option<String>,
    #[command(flatten)]
    pub root: RootArg,
    #[command(flatten)]
    pub compute: ComputeArgs,
    /// Spatial input block per network call, e.g. `512,512` (default: the run's
    /// `validation.block_shape`, else 1024² in 2D and 168³ in 3D).
    #[arg(long, value_delimiter = ',')]
    pub block_shape: Option<Vec<usize>>,
    /// Write labels: post-process every block with this parameter, e.g. `threshold=0.5`,
    /// `bias=0.5`, `argmax`, or `best` for the parameter of the --best record. Instance ids
    /// are unique across blocks; objects are not joined across block borders.
    #[arg(long, value_name = "PARAMETER")]
    pub post_process: Option<String>,
    /// Replace an existing output array (also one holding another job) and start over.
    #[arg(long)]
    pub overwrite: bool,
    /// Worker processes (local) or SLURM array tasks that share the blocks.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub workers: u32,
    /// Where the workers run: processes on this machine, or one SLURM job array.
    #[arg(long, value_enum, default_value = "local")]
    pub executor: Executor,
    #[command(flatten)]
    pub slurm: SlurmOptions,
    /// With `--executor slurm`: wait for the job array and show its progress.
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub progress: ProgressArgs,
    /// Show the progress of the prediction into this output (done/total blocks, blocks in
    /// progress, failed blocks, ETA) and exit.
    #[arg(long, value_name = "ZARR[/ARRAY]", conflicts_with_all = ["run", "input", "output", "iteration", "best"])]
    pub status: Option<String>,
}

/// Splits `--best DATASET/CRITERION`.
pub(crate) fn parse_best(text: &str) -> Result<(&str, &str)> {
    match text.split_once('/') {
        Some((d, c)) if !d.is_empty() && !c.is_empty() && !c.contains('/') => Ok((d, c)),
        _ => bail!("--best expects DATASET/CRITERION, e.g. `--best val/dice`; got {text:?}"),
    }
}

/// The `DATASET/CRITERION` pairs that have best records, for error hints.
pub(crate) fn available_best(weights: &dyn WeightsStore, run: &RunName) -> Vec<String> {
    weights
        .best_records(run)
        .unwrap_or_default()
        .iter()
        .map(|b| format!("{}/{}", b.dataset, b.criterion))
        .collect()
}

/// The checkpoint that `--best DATASET/CRITERION` or `--iteration N` selects, and the best
/// record that chose it; errors list what the run has.
pub(crate) fn select_checkpoint(
    weights: &dyn WeightsStore,
    run: &RunName,
    best: Option<&str>,
    iteration: Option<u64>,
) -> Result<(u64, Option<BestRecord>)> {
    match (best, iteration) {
        (Some(best), _) => {
            let (dataset, criterion) = parse_best(best)?;
            let record = weights
                .retrieve_best(run, dataset, criterion)
                .map_err(|e| {
                    let available = available_best(weights, run);
                    anyhow::anyhow!(
                        "{e}; best records of run `{run}`: {}",
                        if available.is_empty() {
                            "none (validate the run first: `dacapo validate --run NAME`)".to_owned()
                        } else {
                            available.join(", ")
                        }
                    )
                })?;
            Ok((record.iteration, Some(record)))
        }
        (None, Some(n)) => {
            let stored = weights.iterations(run)?;
            if !stored.contains(&n) {
                bail!(
                    "run `{run}` has no committed checkpoint {n}; stored checkpoints: {}",
                    if stored.is_empty() {
                        "none".to_owned()
                    } else {
                        format!("{stored:?}")
                    }
                );
            }
            Ok((n, None))
        }
        (None, None) => bail!("give --iteration N or --best DATASET/CRITERION"),
    }
}

/// `checkpoint N`, with the best record that chose it.
pub(crate) fn describe_checkpoint(iteration: u64, best: Option<&BestRecord>) -> String {
    match best {
        Some(r) => format!(
            "checkpoint {iteration} (best {}/{} = {:.4} with {})",
            r.dataset, r.criterion, r.value, r.parameter
        ),
        None => format!("checkpoint {iteration}"),
    }
}

/// The output array that `--output` (or `--status`) names.
pub(crate) fn output_path(text: &str) -> Result<(std::path::PathBuf, String)> {
    let path = ZarrPath::parse(text).map_err(anyhow::Error::msg)?;
    let array = path
        .array
        .unwrap_or_else(|| DEFAULT_OUTPUT_ARRAY.to_owned());
    Ok((path.container, array))
}

/// The post-processing that `--post-process` asks for, checked against the run's task.
fn post_process(
    args: &PredictArgs,
    config: &dacapo_core::RunConfig,
    dims: usize,
    best: Option<&BestRecord>,
) -> Result<Option<PostProcess>> {
    let Some(text) = args.post_process.as_deref() else {
        return Ok(None);
    };
    let id = if text == "best" {
        match best {
            Some(r) => r.parameter.as_str(),
            None => bail!(
                "--post-process best takes the parameter of the --best record; give --best \
                 DATASET/CRITERION, or a parameter such as threshold=0.5"
            ),
        }
    } else {
        text
    };
    post_process_for(config, dims, id).map(Some)
}

/// The run's post-processing with the parameter set `id` (e.g. `threshold=0.5`), checked
/// against the run's task.
pub(crate) fn post_process_for(
    config: &dacapo_core::RunConfig,
    dims: usize,
    id: &str,
) -> Result<PostProcess> {
    let parameters = Parameters::from_id(id).map_err(|e| anyhow::anyhow!("--post-process: {e}"))?;
    let processor = PostProcessor::from_task(&config.task, &config.validation.min_sizes, dims);
    let fits = matches!(
        (&processor, parameters.sweep),
        (
            PostProcessor::Distance { .. }
                | PostProcessor::Binary { .. }
                | PostProcessor::Watershed { .. },
            Sweep::Threshold(_)
        ) | (PostProcessor::Affinities { .. }, Sweep::Bias(_))
            | (PostProcessor::OneHot, Sweep::Argmax)
    );
    if !fits {
        bail!(
            "--post-process {id}: the run's {} task is post-processed with {} (optionally \
             followed by `,min_size=N`)",
            processor.name(),
            match processor {
                PostProcessor::Distance { .. }
                | PostProcessor::Binary { .. }
                | PostProcessor::Watershed { .. } => "threshold=VALUE",
                PostProcessor::Affinities { .. } => "bias=VALUE",
                PostProcessor::OneHot => "argmax",
            }
        );
    }
    Ok(PostProcess {
        processor,
        parameters,
    })
}

/// Runs `dacapo predict`.
pub fn run(args: &PredictArgs, format: LogFormat) -> Result<()> {
    if let Some(output) = &args.status {
        return status::print(output);
    }
    let (Some(run_arg), Some(input_text), Some(output_text)) =
        (&args.run, &args.input, &args.output)
    else {
        bail!("give --run, --input and --output (or --status OUTPUT)");
    };
    let root = &args.root.resolve();
    let config = load_frozen(root, run_arg)?;
    let run = &config.run.name;
    let input_path = ZarrPath::parse(input_text).map_err(anyhow::Error::msg)?;
    let Some(input_array) = input_path.array.as_deref() else {
        bail!("--input {input_text:?} names a container but no array: use CONTAINER.zarr/ARRAY");
    };
    let (output_container, output_array) = output_path(output_text)?;
    let backend_kind = args.compute.backend.unwrap_or(config.run.backend);
    let device = args.compute.device.unwrap_or(config.run.device);
    let threads = launch::threads_per_worker(config.run.threads, args.workers, args.executor);
    backend::set_cpu_threads(threads);
    let checkpoint = Checkpoint::load(args, &config, backend_kind, device)?;
    let model = &checkpoint.model;
    let dims = model.config().dims;
    let input = ZarrArray::open(&input_path.container, input_array, Some(dims))?;
    let normalize = config
        .datasplit
        .train
        .first()
        .map(|d| d.normalize)
        .unwrap_or_default();
    let normalizer = Normalizer::compute(&input, normalize)?;
    let post = post_process(args, &config, dims, checkpoint.best.as_ref())?;
    let block_shape = args
        .block_shape
        .clone()
        .or_else(|| config.validation.block_shape.clone());
    let spec = plan_job(&JobRequest {
        run: run.as_str(),
        root,
        iteration: checkpoint.iteration,
        checkpoint_sha256: checkpoint.sha256.clone(),
        backend: backend_kind.name(),
        device: &device.to_string(),
        net: model.config(),
        out_channels: checkpoint.task.out_channels(),
        input: &input,
        normalizer,
        output_container: &output_container,
        output_array: &output_array,
        block_shape: block_shape.as_deref(),
        post_process: post.as_ref().map(|p| &p.parameters),
    })
    .with_context(|| format!("cannot predict {input_text} with run `{run}`"))?;
    let local = launch::Local {
        model,
        task: &checkpoint.task,
        post: post.as_ref(),
        threads,
    };
    let what = format!(
        "{input_text} with run `{run}` {} into {}/{output_array}",
        describe_checkpoint(checkpoint.iteration, checkpoint.best.as_ref()),
        output_container.display()
    );
    execute(&spec, &input, args, format, &local, &what)
        .with_context(|| format!("predicting {input_text} with run `{run}` failed"))
}

/// The checkpoint that `--best` or `--iteration` selects, loaded into its network.
struct Checkpoint {
    iteration: u64,
    best: Option<BestRecord>,
    sha256: String,
    model: dacapo_models::UNet,
    task: dacapo_models::Task,
}

impl Checkpoint {
    fn load(
        args: &PredictArgs,
        config: &dacapo_core::RunConfig,
        kind: Backend,
        device: DeviceSpec,
    ) -> Result<Self> {
        let run = &config.run.name;
        let stores = Stores::open(config)?;
        let (iteration, best) =
            select_checkpoint(&*stores.weights, run, args.best.as_deref(), args.iteration)?;
        let device = backend::select(kind, device)?.device;
        let (model, task) = build_model(config, &device)?;
        let weights = stores.weights.retrieve_weights(run, iteration)?;
        let sha256 = checkpoint_sha256(&weights.model);
        let model = load_model_tensors(model, &weights.model)?;
        Ok(Self {
            iteration,
            best,
            sha256,
            model,
            task,
        })
    }
}

/// Creates or resumes the job's output and runs its workers; `what` names the job in messages.
fn execute(
    spec: &PredictSpec,
    input: &ZarrArray,
    args: &PredictArgs,
    format: LogFormat,
    local: &launch::Local,
    what: &str,
) -> Result<()> {
    let ledger = Ledger::new(&spec.output.container, &spec.output.array);
    let _coordinator = ledger.lock_coordinator()?;
    let prepared = prepare_output(spec, input, args.overwrite)?;
    let total = spec.grid.blocks;
    let output = spec.output.container.join(&spec.output.array);
    let event = |event: &str, done: usize, seconds: Option<f64>| {
        serde_json::json!({
            "event": event,
            "run": spec.run,
            "iteration": spec.iteration,
            "output": output.display().to_string(),
            "shape": spec.output.shape,
            "blocks": total,
            "done": done,
            "workers": args.workers,
            "seconds": seconds,
        })
    };
    match prepared {
        Prepared::Resumed { done } if done == total => {
            let text = format!("predicted {what}: all {total} blocks were done already");
            outcome(format, &text, event("predicted", done, None));
            return Ok(());
        }
        Prepared::Resumed { done } => {
            let text = format!("resuming {what}: {done} of {total} blocks done");
            outcome(format, &text, event("resuming", done, None));
        }
        Prepared::Created => {}
    }
    let progress = args.progress.reporter(format);
    let seconds = launch::launch(spec, &ledger, args, local, &*progress)?;
    if let Some(seconds) = seconds {
        let text = format!(
            "predicted {what}: {:?} in {total} blocks of {:?} ({} workers, {seconds:.1} s)",
            spec.output.shape, spec.grid.output_block, args.workers
        );
        outcome(format, &text, event("predicted", total, Some(seconds)));
    }
    Ok(())
}
