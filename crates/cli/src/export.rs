//! `dacapo export`: write the model of a stored checkpoint as one safetensors file that
//! PyTorch (`safetensors.torch.load_file`) and numpy (`safetensors.numpy.load_file`) load.
//!
//! Tensor names and layouts are those of DaCapo's `Model` state dict (`architecture.unet.*`,
//! `prediction_head.*`); the header's metadata says where the weights came from and which
//! network they belong to, as JSON strings.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use dacapo_core::TensorMap;
use dacapo_core::config::Backend;
use dacapo_models::load_model_tensors;
use dacapo_runtime::{Stores, backend, build_model};
use dacapo_store::{BestRecord, write_safetensors_file};

use crate::RootArg;
use crate::predict::{describe_checkpoint, select_checkpoint};
use crate::validate::load_frozen;

/// Arguments of `dacapo export`.
#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// The run whose weights are exported.
    #[arg(long)]
    pub run: String,
    /// Export this checkpoint.
    #[arg(long, required_unless_present = "best", conflicts_with = "best")]
    pub iteration: Option<u64>,
    /// Export the best checkpoint for a validation dataset and criterion, e.g. `val/dice`.
    #[arg(long, value_name = "DATASET/CRITERION")]
    pub best: Option<String>,
    /// The safetensors file to write.
    #[arg(short, long, value_name = "FILE.safetensors")]
    pub output: PathBuf,
    /// Tensor names to write.
    #[arg(long, value_enum, default_value_t = Names::Architecture)]
    pub names: Names,
    /// Replace an existing output file.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub root: RootArg,
}

/// Which state-dict names an exported file uses.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Names {
    /// `architecture.unet.*` and `prediction_head.*`, as checkpoints store them: DaCapo's
    /// `Model` while its architecture was a module (load with `strict=False`: its `chain.*`
    /// twins are left out).
    Architecture,
    /// `chain.0.*` (the bare `CNNectomeUNetModule`), `chain.1.*` and `prediction_head.*`:
    /// the whole state dict of DaCapo's current `Model` (loads with `strict=True`).
    Chain,
}

impl Names {
    fn as_str(self) -> &'static str {
        match self {
            Names::Architecture => "architecture",
            Names::Chain => "chain",
        }
    }
}

/// The stored model tensors under the names `names` asks for.
fn rename(model: &TensorMap, names: Names) -> TensorMap {
    match names {
        Names::Architecture => model.clone(),
        Names::Chain => {
            let mut out = TensorMap::new();
            for (name, t) in model {
                if let Some(rest) = name.strip_prefix("architecture.unet.") {
                    out.insert(format!("chain.0.{rest}"), t.clone());
                } else if let Some(rest) = name.strip_prefix("prediction_head.") {
                    out.insert(format!("chain.1.{rest}"), t.clone());
                    out.insert(name.clone(), t.clone());
                } else {
                    out.insert(name.clone(), t.clone());
                }
            }
            out
        }
    }
}

/// Runs `dacapo export`.
pub fn run(args: &ExportArgs) -> Result<()> {
    let root = &args.root.resolve();
    let config = load_frozen(root, &args.run)?;
    let run = &config.run.name;
    if args.output.exists() && !args.force {
        bail!(
            "{} exists; pass --force to replace it or choose another --output",
            args.output.display()
        );
    }
    let stores = Stores::open(&config)?;
    let (iteration, best) =
        select_checkpoint(&*stores.weights, run, args.best.as_deref(), args.iteration)?;
    let weights = stores.weights.retrieve_weights(run, iteration)?;

    // Loading the tensors into the run's network proves the file describes that network:
    // every tensor present, with the shape an equivalent torch U-Net has.
    let device = backend::device(Backend::Flex)?;
    let (model, _) = build_model(&config, &device)?;
    let model = load_model_tensors(model, &weights.model).with_context(|| {
        format!("checkpoint {iteration} of run `{run}` does not fit the run's network")
    })?;

    let mut metadata = export_metadata(&config, iteration, best.as_ref(), model.config())?;
    metadata.insert("names".to_owned(), args.names.as_str().to_owned());
    let tensors = rename(&weights.model, args.names);
    write_safetensors_file(&args.output, &tensors, &metadata)
        .with_context(|| format!("writing {} failed", args.output.display()))?;

    let params: usize = weights.model.values().map(|t| t.numel()).sum();
    let source = describe_checkpoint(iteration, best.as_ref());
    println!(
        "exported {source} of run `{run}` ({} task, {} tensors, {params} parameters) to {}",
        config.task.kind(),
        tensors.len(),
        args.output.display()
    );
    println!(
        "load it in Python: `model.load_state_dict(safetensors.torch.load_file(\"{}\"){})`",
        args.output.display(),
        match args.names {
            Names::Architecture => ", strict=False",
            Names::Chain => "",
        }
    );
    Ok(())
}

/// The header metadata of an exported file: provenance and the network, as strings.
fn export_metadata(
    config: &dacapo_core::RunConfig,
    iteration: u64,
    best: Option<&BestRecord>,
    network: &dacapo_models::UNetConfig,
) -> Result<BTreeMap<String, String>> {
    let mut meta = BTreeMap::from([
        ("run".to_owned(), config.run.name.as_str().to_owned()),
        ("iteration".to_owned(), iteration.to_string()),
        (
            "architecture".to_owned(),
            serde_json::to_string(&config.architecture)?,
        ),
        ("task".to_owned(), serde_json::to_string(&config.task)?),
        // The resolved network (head width, decoder layout) an equivalent torch model needs.
        ("network".to_owned(), serde_json::to_string(network)?),
        ("config_hash".to_owned(), config.trajectory_hash()),
        (
            "dacapo_version".to_owned(),
            env!("CARGO_PKG_VERSION").to_owned(),
        ),
    ]);
    if let Some(record) = best {
        meta.insert("best".to_owned(), serde_json::to_string(record)?);
    }
    Ok(meta)
}
