//! `dacapo predict`: predict a whole zarr array with a stored checkpoint of a run, blockwise.

use anyhow::{Context, Result, bail};
use dacapo_core::RunName;
use dacapo_data::{Normalizer, ZarrArray};
use dacapo_runtime::{Stores, backend, build_model, load_weights};
use dacapo_store::{BestRecord, WeightsStore};
use dacapo_validator::{PredictJob, ZarrPath, predict_zarr};

use crate::progress::{LogFormat, ProgressArgs, outcome};
use crate::validate::load_frozen;
use crate::{ComputeArgs, RootArg};

/// Output array path when `--output` names only a container.
const DEFAULT_OUTPUT_ARRAY: &str = "prediction";

/// Arguments of `dacapo predict`.
#[derive(clap::Args, Debug)]
pub struct PredictArgs {
    /// The run whose network predicts.
    #[arg(long)]
    pub run: String,
    /// Use the weights of this checkpoint.
    #[arg(long, required_unless_present = "best", conflicts_with = "best")]
    pub iteration: Option<u64>,
    /// Use the best checkpoint for a validation dataset and criterion, e.g. `val/dice`.
    #[arg(long, value_name = "DATASET/CRITERION")]
    pub best: Option<String>,
    /// Input array, e.g. `data/cells.zarr/raw`. It is normalised like the run's first training
    /// dataset: with `percentile` (the default) from the input's own percentiles, with `range`
    /// by the same min/max, with `none` not at all.
    #[arg(long, value_name = "ZARR/ARRAY")]
    pub input: String,
    /// Output container, optionally with an array path (default array `prediction`); written
    /// as float32 `(channels, spatial...)` with the input's voxel size and offset.
    #[arg(long, value_name = "ZARR[/ARRAY]")]
    pub output: String,
    #[command(flatten)]
    pub root: RootArg,
    #[command(flatten)]
    pub compute: ComputeArgs,
    /// Spatial input block per network call, e.g. `512,512` (default: the run's
    /// `validation.block_shape`, else 512² in 2D and 128³ in 3D).
    #[arg(long, value_delimiter = ',')]
    pub block_shape: Option<Vec<usize>>,
    /// Replace an existing output array.
    #[arg(long)]
    pub overwrite: bool,
    #[command(flatten)]
    pub progress: ProgressArgs,
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

/// Runs `dacapo predict`.
pub fn run(args: &PredictArgs, format: LogFormat) -> Result<()> {
    let root = &args.root.resolve();
    let config = load_frozen(root, &args.run)?;
    let run = &config.run.name;
    let input_path = ZarrPath::parse(&args.input).map_err(anyhow::Error::msg)?;
    let Some(input_array) = input_path.array.as_deref() else {
        bail!(
            "--input {:?} names a container but no array: use CONTAINER.zarr/ARRAY",
            args.input
        );
    };
    let output_path = ZarrPath::parse(&args.output).map_err(anyhow::Error::msg)?;
    let output_array = output_path.array.as_deref().unwrap_or(DEFAULT_OUTPUT_ARRAY);
    let stores = Stores::open(&config)?;
    let (iteration, best) =
        select_checkpoint(&*stores.weights, run, args.best.as_deref(), args.iteration)?;
    let device = backend::for_run(&config, args.compute.backend, args.compute.device)?.device;
    let (model, task) = build_model(&config, &device)?;
    let (model, _) = load_weights(&*stores.weights, run, iteration, model)?;
    let source = describe_checkpoint(iteration, best.as_ref());

    let dims = model.config().dims;
    let input = ZarrArray::open(&input_path.container, input_array, Some(dims))?;
    let normalize = config
        .datasplit
        .train
        .first()
        .map(|d| d.normalize)
        .unwrap_or_default();
    let normalizer = Normalizer::compute(&input, normalize)?;
    let block_shape = args
        .block_shape
        .clone()
        .or_else(|| config.validation.block_shape.clone());
    let progress = args.progress.reporter(format);
    let job = PredictJob {
        model: &model,
        task: &task,
        input: &input,
        normalizer,
        output_container: &output_path.container,
        output_array,
        block_shape: block_shape.as_deref(),
        overwrite: args.overwrite,
    };
    let summary = predict_zarr(&job, &*progress)
        .with_context(|| format!("predicting {} with run `{run}` failed", args.input))?;
    let text = format!(
        "predicted {} with run `{run}` {source}: wrote {:?} to {}/{output_array} ({} blocks of \
         {:?}, {:.1} s)",
        args.input,
        summary.shape,
        output_path.container.display(),
        summary.blocks,
        summary.input_block,
        summary.seconds
    );
    let event = serde_json::json!({
        "event": "predicted",
        "run": run.as_str(),
        "iteration": iteration,
        "input": args.input,
        "output": format!("{}/{output_array}", output_path.container.display()),
        "shape": summary.shape,
        "blocks": summary.blocks,
        "seconds": summary.seconds,
    });
    outcome(format, &text, event);
    Ok(())
}
