//! `dacapo import-torch`: bring PyTorch / DaCapo weights into a run as a checkpoint.
//!
//! Reads a PyTorch checkpoint (`torch.save` of a state dict, of DaCapo's
//! `{"model": ..., "optimizer": ...}`, or of a whole module; read with pytorch-reader, the
//! reader behind burn-store) or a safetensors file, maps the names to the run's (DaCapo's
//! `Model` state dict: `architecture.unet.*`, `prediction_head.*`, also accepting
//! `chain.0.*`/`chain.1.*`, `module.`-wrapped and bare CNNectomeUNet names), checks every
//! tensor against the run's network and stores the weights as checkpoint N with a fresh
//! optimizer state and a train state that records where they came from.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use dacapo_core::config::Backend;
use dacapo_core::{DType, NamedTensor, RunConfig, RunName, TensorMap};
use dacapo_models::{Task, UNetConfig, load_model_tensors, model_to_tensors, parameter_names};
use dacapo_runtime::{Stores, backend, build_model, unet_config};
use dacapo_store::{RunLock, TrainState, Weights, layout, read_safetensors_file};

use crate::RootArg;
use crate::validate::load_frozen;

/// Keys under which checkpoints commonly nest their state dict, tried in this order.
const CONTAINER_KEYS: [&str; 3] = ["model", "state_dict", "model_state_dict"];

/// Most problems listed when a file does not fit the network.
const MAX_PROBLEMS: usize = 20;

/// Arguments of `dacapo import-torch`.
#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    /// The weights: a PyTorch checkpoint (`.pt`/`.pth`: a state dict, a DaCapo checkpoint
    /// (its pickled `Weights` or an older `{"model": ..., "optimizer": ...}`) or a whole saved
    /// module) or a `.safetensors` file.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// The run to import into; a new run needs --config.
    #[arg(long)]
    pub run: String,
    /// Store the weights as this checkpoint (iteration) of the run.
    #[arg(long)]
    pub iteration: u64,
    #[command(flatten)]
    pub root: RootArg,
    /// Run config (TOML) that creates the run if it does not exist yet (it is frozen as the
    /// run's `run.toml`); for an existing run it must describe the same run.
    #[arg(long, value_name = "CONFIG.toml")]
    pub config: Option<PathBuf>,
    /// Read the state dict under this key of the checkpoint (default: `model`, `state_dict`
    /// or `model_state_dict` when the file has one, else the whole file).
    #[arg(long)]
    pub key: Option<String>,
}

/// Runs `dacapo import-torch`.
pub fn run(args: &ImportArgs) -> Result<()> {
    let (config, root, new_run) = resolve_run(args)?;
    let run = config.run.name.clone();
    let (raw, format) = read_weights(&args.file)?;
    let found = raw.len();
    let picked = pick_state_dict(raw, args.key.as_deref(), &args.file)?;
    let ignored = picked.ignored.clone();
    let key = picked.key.clone();
    let model = fit_to_network(args, &config, picked)?;

    let _lock = RunLock::acquire(&root, &run)?;
    if new_run {
        dacapo_runtime::frozen::freeze(&config, &root, false)?;
    }
    let weights = Weights {
        model,
        optimizer: TensorMap::new(),
        state: imported_state(args, &config, format, key.as_deref()),
    };
    let stores = Stores::open(&config)?;
    stores
        .weights
        .store_weights(&run, args.iteration, &weights)
        .with_context(|| format!("storing checkpoint {} of run `{run}`", args.iteration))?;

    let params: usize = weights.model.values().map(NamedTensor::numel).sum();
    println!(
        "imported {} tensors ({params} parameters) from {} into run `{run}` as checkpoint {} \
         under {} (fresh optimizer state{})",
        weights.model.len(),
        args.file.display(),
        args.iteration,
        root.display(),
        if new_run { "; new run" } else { "" }
    );
    if let Some(first) = ignored.first() {
        println!(
            "ignored {} of the file's {found} tensors outside the state dict (e.g. `{first}`)",
            ignored.len(),
        );
    }
    notes(&stores, &run, args.iteration)?;
    println!(
        "next: `dacapo validate --run {run} --iteration {} --root {}` scores it; `dacapo train \
         --run {run} --root {}` trains on from the latest checkpoint",
        args.iteration,
        root.display(),
        root.display()
    );
    Ok(())
}

/// The picked state dict loaded into the run's network and written back, so the checkpoint
/// holds exactly what training would store; an error says why it does not fit.
fn fit_to_network(args: &ImportArgs, config: &RunConfig, picked: Picked) -> Result<TensorMap> {
    let run = &config.run.name;
    let ignored = picked.ignored.len();
    let tensors = canonical_names(picked.tensors)?;
    let device = backend::device(Backend::Flex)?;
    let (model, task) = build_model(config, &device)?;
    let expected = parameter_names(&model);
    let tensors = match fit(&expected, tensors.clone()) {
        Ok(t) => t,
        Err(problems) => {
            // DaCapo's own U-Net keeps the channels at the top decoder level: say so when
            // that is why the file does not fit.
            let cnnectome = cnnectome_network(config, &task)
                .init(config.run.seed, &device)
                .is_ok_and(|m| fit(&parameter_names(&m), tensors).is_ok());
            return Err(not_fitting(
                &args.file, run, config, &problems, ignored, cnnectome,
            ));
        }
    };
    let model = load_model_tensors(model, &tensors)
        .with_context(|| format!("loading {} into run `{run}`", args.file.display()))?;
    Ok(model_to_tensors(&model)?)
}

/// The training state of an imported checkpoint: where it came from, and a fresh optimizer.
fn imported_state(
    args: &ImportArgs,
    config: &RunConfig,
    format: &str,
    key: Option<&str>,
) -> TrainState {
    let mut state = TrainState::new(
        args.iteration,
        config.trajectory_hash(),
        "import",
        config.run.seed,
    );
    let source = std::fs::canonicalize(&args.file).unwrap_or_else(|_| args.file.clone());
    let mut extra = |k: &str, v: serde_json::Value| state.extra.insert(k.into(), v);
    extra(
        "imported_from",
        serde_json::json!(source.display().to_string()),
    );
    extra("source_format", serde_json::json!(format));
    if let Some(key) = key {
        extra("source_key", serde_json::json!(key));
    }
    extra("optimizer", serde_json::json!("fresh"));
    extra(
        "dacapo_version",
        serde_json::json!(env!("CARGO_PKG_VERSION")),
    );
    state
}

/// The run's config, the store root and whether the run is new (no frozen config yet).
fn resolve_run(args: &ImportArgs) -> Result<(RunConfig, PathBuf, bool)> {
    let given = args
        .config
        .as_deref()
        .map(|path| RunConfig::load(path).with_context(|| format!("reading {}", path.display())))
        .transpose()?;
    // As in `dacapo train`: --root (or DACAPO_ROOT), else the config's, else the default.
    let root = match (&args.root.root, &given) {
        (Some(root), _) => root.clone(),
        (None, Some(config)) => config.stores.root.clone(),
        (None, None) => args.root.resolve(),
    };
    let run = RunName::new(args.run.as_str())?;
    if layout::frozen_config_path(&root, &run).exists() {
        let frozen = load_frozen(&root, &args.run)?;
        if let Some(given) = &given
            && given.trajectory_hash() != frozen.trajectory_hash()
        {
            bail!(
                "run `{}` exists under {} with a different config than {}; import into it \
                 without --config, or give a new run name",
                args.run,
                root.display(),
                args.config.as_deref().unwrap_or(Path::new("")).display()
            );
        }
        return Ok((frozen, root, false));
    }
    let Some(mut config) = given else {
        bail!(
            "run `{}` does not exist under {}: give --config CONFIG.toml to create it (its \
             [run] name must be `{}`), or check --root",
            args.run,
            root.display(),
            args.run
        );
    };
    if config.run.name.as_str() != args.run {
        bail!(
            "--config {} names run `{}` but --run is `{}`; use the same name",
            args.config.as_deref().unwrap_or(Path::new("")).display(),
            config.run.name,
            args.run
        );
    }
    config.stores.root = root.clone();
    Ok((config, root, true))
}

/// Warnings about how the imported checkpoint relates to the run's other state.
fn notes(stores: &Stores, run: &RunName, iteration: u64) -> Result<()> {
    if let Some(latest) = stores.weights.latest_iteration(run)?
        && latest > iteration
    {
        println!(
            "note: the run's latest checkpoint is {latest}; `dacapo train` resumes from that one"
        );
    }
    let stats = stores.stats.retrieve_training_stats(run)?;
    if !stats.is_empty() && stats.trained_until() < iteration {
        println!(
            "note: the run's training stats end at iteration {}, before {iteration}: `dacapo \
             train` resumes from this checkpoint only after those stats are deleted",
            stats.trained_until()
        );
    }
    Ok(())
}

/// Every tensor of `path` by its dotted name, and the format it was read as.
fn read_weights(path: &Path) -> Result<(TensorMap, &'static str)> {
    if !path.is_file() {
        bail!("{} does not exist or is not a file", path.display());
    }
    if path.extension().is_some_and(|e| e == "safetensors") {
        let (map, _) = read_safetensors_file(path)?;
        return Ok((map, "safetensors"));
    }
    // DaCapo pickles a `Weights` object the reader cannot build; read it as a dict instead.
    let unwrapped = unwrap_dacapo_weights(path)?;
    let readable = unwrapped.as_ref().map_or(path, |f| f.path());
    let reader = pytorch_reader::PytorchReader::new(readable).map_err(|e| {
        anyhow::anyhow!(
            "cannot read {} as a PyTorch checkpoint: {e}; give a file written by `torch.save` \
             (a safetensors file needs the .safetensors extension)",
            path.display()
        )
    })?;
    let mut map = TensorMap::new();
    for (name, tensor) in reader.into_tensors() {
        let dtype = core_dtype(tensor.dtype());
        let shape = tensor.shape().to_vec();
        let mut data = tensor.read()?;
        if cfg!(target_endian = "big") {
            // The reader hands out native-endian bytes; named tensors are little-endian.
            for element in data.chunks_exact_mut(dtype.size()) {
                element.reverse();
            }
        }
        let tensor = NamedTensor::new(dtype, shape, data)
            .with_context(|| format!("tensor `{name}` of {}", path.display()))?;
        map.insert(name, tensor);
    }
    Ok((map, "pytorch"))
}

/// The pickle that starts a DaCapo checkpoint: `torch.save` (protocol 2) of a
/// `dacapo.store.weights_store.Weights` object, a plain class the PyTorch reader cannot build.
const DACAPO_WEIGHTS: &[u8] = b"\x80\x02cdacapo.store.weights_store\nWeights\n";

/// A copy of the DaCapo checkpoint `path` whose `Weights` object is a dict of the same
/// attributes (`model`, `optimizer`), or `None` when `path` is not such a checkpoint.
///
/// The object is pickled as `GLOBAL Weights; [BINPUT]; EMPTY_TUPLE; NEWOBJ; [BINPUT]; <dict>;
/// BUILD`. Replacing everything before the attribute dict by `EMPTY_DICT` (keeping the memo
/// slots) turns the `BUILD` into a dict update, which the reader understands.
fn unwrap_dacapo_weights(path: &Path) -> Result<Option<tempfile::NamedTempFile>> {
    use std::io::{Read, Write};
    let Ok(file) = std::fs::File::open(path) else {
        return Ok(None);
    };
    let Ok(mut archive) = zip::ZipArchive::new(file) else {
        return Ok(None); // not a zip: a legacy torch file, left to the reader
    };
    let Some(index) = (0..archive.len()).find(|&i| {
        archive
            .name_for_index(i)
            .and_then(|n| n.ok())
            .is_some_and(|n| n == "data.pkl" || n.ends_with("/data.pkl"))
    }) else {
        return Ok(None);
    };
    let mut pickle = Vec::new();
    archive
        .by_index(index)
        .and_then(|mut entry| Ok(entry.read_to_end(&mut pickle)?))
        .with_context(|| format!("reading the pickle of {}", path.display()))?;
    let Some(patched) = dict_for_weights_object(&pickle) else {
        return Ok(None);
    };
    let copy_err = || format!("rewriting the DaCapo checkpoint {}", path.display());
    let out = tempfile::NamedTempFile::new().with_context(copy_err)?;
    let mut writer = zip::ZipWriter::new(out.reopen().with_context(copy_err)?);
    for i in 0..archive.len() {
        if i == index {
            let name = archive
                .name_for_index(i)
                .and_then(|n| n.ok())
                .map_or_else(|| "data.pkl".to_owned(), |n| n.into_owned());
            let options = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Stored);
            writer.start_file(name, options).with_context(copy_err)?;
            writer.write_all(&patched).with_context(copy_err)?;
        } else {
            let entry = archive.by_index_raw(i).with_context(copy_err)?;
            writer.raw_copy_file(entry).with_context(copy_err)?;
        }
    }
    writer.finish().with_context(copy_err)?;
    Ok(Some(out))
}

/// `pickle` with a leading DaCapo `Weights` object turned into a dict (see
/// [`unwrap_dacapo_weights`]), or `None` when it does not start with one.
fn dict_for_weights_object(pickle: &[u8]) -> Option<Vec<u8>> {
    const BINPUT: u8 = b'q';
    const EMPTY_TUPLE: u8 = b')';
    const NEWOBJ: u8 = 0x81;
    const EMPTY_DICT: u8 = b'}';
    let mut rest = pickle.strip_prefix(DACAPO_WEIGHTS)?;
    let mut memo = Vec::new();
    if let [BINPUT, slot, tail @ ..] = rest {
        memo.extend([BINPUT, *slot]);
        rest = tail;
    }
    rest = rest.strip_prefix(&[EMPTY_TUPLE, NEWOBJ])?;
    if let [BINPUT, slot, tail @ ..] = rest {
        memo.extend([BINPUT, *slot]);
        rest = tail;
    }
    let mut out = Vec::with_capacity(pickle.len());
    out.extend_from_slice(&DACAPO_WEIGHTS[..2]); // PROTO 2
    out.push(EMPTY_DICT);
    out.extend(memo);
    out.extend_from_slice(rest);
    Some(out)
}

fn core_dtype(d: pytorch_reader::DType) -> DType {
    use pytorch_reader::DType as P;
    match d {
        P::F64 => DType::F64,
        P::F32 => DType::F32,
        P::F16 => DType::F16,
        P::BF16 => DType::BF16,
        P::I64 => DType::I64,
        P::I32 => DType::I32,
        P::I16 => DType::I16,
        P::I8 => DType::I8,
        P::U64 => DType::U64,
        P::U32 => DType::U32,
        P::U16 => DType::U16,
        P::U8 => DType::U8,
        P::Bool => DType::Bool,
    }
}

/// The state dict inside a checkpoint, and what was left out.
#[derive(Debug)]
struct Picked {
    /// Tensors of the state dict, with the container key stripped.
    tensors: TensorMap,
    /// The container key, if the state dict was nested under one.
    key: Option<String>,
    /// Names of the file's other tensors (e.g. DaCapo's `optimizer.*`).
    ignored: Vec<String>,
}

/// Selects the state dict under `key` (or a usual container key, or the whole file).
fn pick_state_dict(raw: TensorMap, key: Option<&str>, path: &Path) -> Result<Picked> {
    let has = |k: &str| raw.keys().any(|n| n.starts_with(&format!("{k}.")));
    let key = match key {
        Some(k) if !has(k) => {
            let top: std::collections::BTreeSet<&str> = raw
                .keys()
                .map(|n| n.split('.').next().unwrap_or(n))
                .collect();
            bail!(
                "{} has no tensors under key `{k}`; its top-level keys are {:?}",
                path.display(),
                top
            );
        }
        Some(k) => Some(k.to_owned()),
        None => CONTAINER_KEYS
            .iter()
            .find(|k| has(k))
            .map(|k| (*k).to_owned()),
    };
    let Some(key) = key else {
        return Ok(Picked {
            tensors: raw,
            key: None,
            ignored: Vec::new(),
        });
    };
    let prefix = format!("{key}.");
    let mut tensors = TensorMap::new();
    let mut ignored = Vec::new();
    for (name, t) in raw {
        match name.strip_prefix(&prefix) {
            Some(rest) => {
                tensors.insert(rest.to_owned(), t);
            }
            None => ignored.push(name),
        }
    }
    Ok(Picked {
        tensors,
        key: Some(key),
        ignored,
    })
}

/// Maps the names of a state dict to the run's (DaCapo's `Model` state dict names).
fn canonical_names(tensors: TensorMap) -> Result<TensorMap> {
    // DataParallel / DistributedDataParallel wrap every name in `module.`.
    let wrapped = !tensors.is_empty() && tensors.keys().all(|n| n.starts_with("module."));
    let mut out: TensorMap = TensorMap::new();
    let mut origin: BTreeMap<String, String> = BTreeMap::new();
    for (name, t) in tensors {
        let name = if wrapped {
            name["module.".len()..].to_owned()
        } else {
            name
        };
        let canonical = canonical_name(&name);
        if let Some(existing) = out.get(&canonical) {
            // DaCapo's Model.state_dict() holds every tensor twice (`architecture.*` and
            // `chain.0.*`): the twins must agree.
            if *existing != t {
                bail!(
                    "tensors `{}` and `{name}` both name `{canonical}` but hold different \
                     values; remove one of them from the state dict",
                    origin[&canonical]
                );
            }
            continue;
        }
        origin.insert(canonical.clone(), name);
        out.insert(canonical, t);
    }
    Ok(out)
}

/// The run's name of one state-dict name.
///
/// DaCapo's `Model` named the U-Net `architecture.unet.*` (with a `chain.0.unet.*` twin)
/// while its architecture was a module, and `chain.0.*` (the bare `CNNectomeUNetModule`)
/// since; the head is `prediction_head.*` with a `chain.1.*` twin in both.
fn canonical_name(name: &str) -> String {
    if let Some(rest) = name.strip_prefix("chain.1.") {
        return format!("prediction_head.{rest}");
    }
    let unet = name
        .strip_prefix("chain.0.")
        .or_else(|| name.strip_prefix("architecture."))
        .unwrap_or(name);
    if unet.starts_with("unet.") {
        format!("architecture.{unet}")
    } else if ["l_conv.", "l_down.", "r_up.", "r_conv."]
        .iter()
        .any(|p| unet.starts_with(p))
    {
        format!("architecture.unet.{unet}")
    } else {
        name.to_owned()
    }
}

/// `tensors` as F32 with exactly the names and shapes of `expected`, or every problem found.
fn fit(
    expected: &[(String, Vec<usize>)],
    mut tensors: TensorMap,
) -> Result<TensorMap, Vec<String>> {
    let mut problems = Vec::new();
    let mut out = TensorMap::new();
    for (name, shape) in expected {
        let Some(t) = tensors.remove(name) else {
            problems.push(format!("missing tensor `{name}` (shape {shape:?})"));
            continue;
        };
        if t.shape != *shape {
            problems.push(format!(
                "tensor `{name}` has shape {:?} in the file, the run's network needs {shape:?}",
                t.shape
            ));
            continue;
        }
        match to_f32(t) {
            Ok(t) => {
                out.insert(name.clone(), t);
            }
            Err(dtype) => problems.push(format!(
                "tensor `{name}` has dtype {dtype:?}; convert it to float32 before saving \
                 (`{{k: v.float() for k, v in state_dict.items()}}`)"
            )),
        }
    }
    for name in tensors.keys() {
        problems.push(format!(
            "unexpected tensor `{name}` (the run's network has no such parameter)"
        ));
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// An F32 tensor, converting F64 (a `model.double()` save); other dtypes are returned as errors.
fn to_f32(t: NamedTensor) -> Result<NamedTensor, DType> {
    match t.dtype {
        DType::F32 => Ok(t),
        DType::F64 => {
            let data = t
                .data
                .chunks_exact(8)
                .flat_map(|c| {
                    let v = f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
                    (v as f32).to_le_bytes()
                })
                .collect();
            NamedTensor::new(DType::F32, t.shape, data).map_err(|_| DType::F64)
        }
        other => Err(other),
    }
}

/// The error for a file whose tensors do not fit the run's network, with a hint when they fit
/// DaCapo's CNNectomeUNet decoder layout.
fn not_fitting(
    file: &Path,
    run: &RunName,
    config: &RunConfig,
    problems: &[String],
    ignored: usize,
    cnnectome: bool,
) -> anyhow::Error {
    let mut text = format!(
        "{} does not fit the network of run `{run}` ({} task, {} problem{}):",
        file.display(),
        config.task.kind(),
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    );
    for p in problems.iter().take(MAX_PROBLEMS) {
        text.push_str("\n  - ");
        text.push_str(p);
    }
    if problems.len() > MAX_PROBLEMS {
        text.push_str(&format!(
            "\n  ... and {} more",
            problems.len() - MAX_PROBLEMS
        ));
    }
    if ignored > 0 {
        text.push_str(&format!(
            "\n({ignored} tensors outside the state dict were ignored; --key chooses another)"
        ));
    }
    if cnnectome {
        text.push_str(
            "\nthese tensors have the decoder layout of DaCapo's CNNectomeUNet \
             (upsample_channel_contraction = [false, true, ...]: the top decoder level keeps \
             its channels), which run configs cannot express yet",
        );
    } else {
        text.push_str(
            "\nfix: give the run the [architecture] (fmaps, fmap_inc_factor, \
             downsample_factors, kernel_size, convs_per_level, upsample) and [task] of the \
             network that produced the weights",
        );
    }
    anyhow::anyhow!(text)
}

/// The run's network with the decoder layout of DaCapo's CNNectomeUNet.
fn cnnectome_network(config: &RunConfig, task: &Task) -> UNetConfig {
    let mut net = unet_config(config, task);
    let levels = net.downsample_factors.len();
    net.upsample_channel_contraction = Some((0..levels).map(|level| level > 0).collect());
    net
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_weights_object_becomes_a_dict_keeping_its_memo_slots() {
        let mut pickle = DACAPO_WEIGHTS.to_vec();
        pickle.extend_from_slice(b"q\x00)\x81q\x01}q\x02(X\x01\x00\x00\x00a");
        let out = dict_for_weights_object(&pickle).unwrap();
        assert_eq!(out, b"\x80\x02}q\x00q\x01}q\x02(X\x01\x00\x00\x00a");
        // Without memo opcodes (pickled with the memo off).
        let mut bare = DACAPO_WEIGHTS.to_vec();
        bare.extend_from_slice(b")\x81}.");
        assert_eq!(dict_for_weights_object(&bare).unwrap(), b"\x80\x02}}.");
    }

    #[test]
    fn other_pickles_are_left_alone() {
        assert!(dict_for_weights_object(b"\x80\x02ccollections\nOrderedDict\nq\x00)R").is_none());
        let mut odd = DACAPO_WEIGHTS.to_vec();
        odd.extend_from_slice(b"q\x00X"); // not constructed with NEWOBJ
        assert!(dict_for_weights_object(&odd).is_none());
    }
}
