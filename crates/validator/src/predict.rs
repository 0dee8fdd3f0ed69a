//! Prediction of a whole zarr array with a trained model (`dacapo predict`): blockwise, so
//! memory stays bounded by the block whatever the array size, and resumable, by one process
//! or many.
//!
//! The coordinator plans the job once ([`plan_job`]: input, normalisation, checkpoint hash,
//! block grid) and creates the output with chunks of one block's output region each plus the
//! job's [`Ledger`] ([`prepare_output`]); any number of [`BlockWorker`]s, in this process or
//! others, then claim blocks, write them and mark them done. Every block's output is a pure
//! function of the job, so the result is the same bit for bit however the blocks were split,
//! killed and redone.

use std::path::{Component, Path, PathBuf};

use dacapo_core::TensorMap;
use dacapo_data::{ArrayWriter, Normalizer, WriteOptions, ZarrArray, create_array, open_writer};
use dacapo_models::{Task, UNet, UNetConfig};
use ndarray::{ArrayD, ArrayViewD, Axis};
use sha2::{Digest, Sha256};

use crate::ValidatorError;
use crate::blockwise::{BlockGrid, BlockSpec, Padding, predict_one_block};
use crate::ledger::{GridSpec, InputSpec, Ledger, OutputSpec, PredictSpec, hex};
use crate::postprocess::{Parameters, PostProcessor, Segmentation};
use crate::run::{check_block_memory, network_blocks, predict_block};

/// A zarr container and optionally an array path inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZarrPath {
    /// The container directory (the path up to its last component ending in `.zarr`).
    pub container: PathBuf,
    /// The array path inside the container, if one was given.
    pub array: Option<String>,
}

impl ZarrPath {
    /// Splits `data/cells.zarr/raw/s0` into container `data/cells.zarr` and array `raw/s0`.
    ///
    /// The container is the path up to its last component that ends in `.zarr` (or `.zarr/`);
    /// a path with no such component is an error that says so.
    pub fn parse(text: &str) -> Result<Self, String> {
        let path = Path::new(text);
        let components: Vec<Component> = path.components().collect();
        let Some(at) = components.iter().rposition(
            |c| matches!(c, Component::Normal(n) if n.to_string_lossy().ends_with(".zarr")),
        ) else {
            return Err(format!(
                "{text:?} names no zarr container: expected CONTAINER.zarr or \
                 CONTAINER.zarr/ARRAY (e.g. data/cells.zarr/raw)"
            ));
        };
        let container: PathBuf = components[..=at].iter().collect();
        let rest: Vec<String> = components[at + 1..]
            .iter()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        Ok(Self {
            container,
            array: if rest.is_empty() {
                None
            } else {
                Some(rest.join("/"))
            },
        })
    }
}

/// The post-processing of a prediction job: the run's post-processor with one parameter set.
#[derive(Debug, Clone, PartialEq)]
pub struct PostProcess {
    /// The run's post-processor.
    pub processor: PostProcessor,
    /// The parameter set applied to every block.
    pub parameters: Parameters,
}

/// What the coordinator of `dacapo predict` knows when it plans a job.
pub struct JobRequest<'a> {
    /// The run whose network predicts.
    pub run: &'a str,
    /// Store root holding the run's frozen config.
    pub root: &'a Path,
    /// The checkpoint.
    pub iteration: u64,
    /// SHA-256 of the checkpoint's model tensors ([`checkpoint_sha256`]).
    pub checkpoint_sha256: String,
    /// Compute backend name.
    pub backend: &'a str,
    /// Device of the backend, as `run.device` writes it.
    pub device: &'a str,
    /// The network.
    pub net: &'a UNetConfig,
    /// Output channels of the run's task.
    pub out_channels: usize,
    /// The input array (`dims` spatial axes, optionally a leading channel axis).
    pub input: &'a ZarrArray,
    /// Normalisation applied to every input block.
    pub normalizer: Normalizer,
    /// Output container.
    pub output_container: &'a Path,
    /// Output array path inside the container.
    pub output_array: &'a str,
    /// Spatial input block (default: the validator's default block).
    pub block_shape: Option<&'a [usize]>,
    /// Write labels post-processed with these parameters instead of the prediction.
    pub post_process: Option<&'a Parameters>,
}

/// SHA-256 (hex) of a checkpoint's model tensors: names, types, shapes and bytes.
pub fn checkpoint_sha256(tensors: &TensorMap) -> String {
    let mut h = Sha256::new();
    for (name, t) in tensors {
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update(format!("{:?}{:?}", t.dtype, t.shape).as_bytes());
        h.update((t.data.len() as u64).to_le_bytes());
        h.update(&t.data);
    }
    hex(&h.finalize())
}

fn absolute(path: &Path) -> Result<PathBuf, ValidatorError> {
    std::path::absolute(path).map_err(|source| ValidatorError::Ledger {
        action: "make absolute",
        path: path.to_owned(),
        source,
    })
}

/// Plans a prediction job: checks the input against the network and lays out the blocks and
/// the output array (chunks of one block's output region each).
pub fn plan_job(req: &JobRequest) -> Result<PredictSpec, ValidatorError> {
    let net = req.net;
    let meta = req.input.meta();
    let input_err = |message: String| ValidatorError::Prediction {
        shape: meta.shape.iter().map(|&s| s as usize).collect(),
        reason: format!(
            "input {:?} in {}: {message}",
            req.input.path(),
            req.input.container().display()
        ),
    };
    if meta.spatial_dims() != net.dims {
        return Err(input_err(format!(
            "has {} spatial axes but the network is {}D",
            meta.spatial_dims(),
            net.dims
        )));
    }
    let channels = meta.channels() as usize;
    if channels != net.in_channels {
        return Err(input_err(format!(
            "has {channels} channels but the network takes {}",
            net.in_channels
        )));
    }
    let spatial: Vec<usize> = meta.spatial_shape().iter().map(|&s| s as usize).collect();
    let blocks = network_blocks(net, req.block_shape, &spatial)?;
    check_block_memory(net, &blocks)?;
    let grid = BlockGrid::new(&spatial, &blocks.spec)?;
    let spatial_u64: Vec<u64> = spatial.iter().map(|&s| s as u64).collect();
    let chunk: Vec<u64> = grid.chunk_shape().iter().map(|&c| c as u64).collect();
    let (shape, chunks, dtype) = match req.post_process {
        Some(_) => (spatial_u64, chunk, "uint64"),
        None => {
            let c = req.out_channels as u64;
            (
                [vec![c], spatial_u64].concat(),
                [vec![c], chunk].concat(),
                "float32",
            )
        }
    };
    Ok(PredictSpec {
        run: req.run.to_owned(),
        root: absolute(req.root)?,
        iteration: req.iteration,
        checkpoint_sha256: req.checkpoint_sha256.clone(),
        backend: req.backend.to_owned(),
        device: req.device.to_owned(),
        input: InputSpec {
            container: absolute(req.input.container())?,
            array: req.input.path().trim_matches('/').to_owned(),
            shape: meta.shape.clone(),
            dtype: meta.dtype.name().to_owned(),
            low: req.normalizer.low,
            high: req.normalizer.high,
        },
        output: OutputSpec {
            container: absolute(req.output_container)?,
            array: req.output_array.trim_matches('/').to_owned(),
            shape,
            chunks,
            dtype: dtype.to_owned(),
        },
        grid: GridSpec {
            output_block: blocks.spec.output_block.clone(),
            context: blocks.spec.context.clone(),
            grid: blocks.spec.grid.clone(),
            crop: blocks.crop.clone(),
            padding: match blocks.spec.padding {
                Padding::Reflect => "reflect",
                Padding::Zero => "zero",
            }
            .to_owned(),
            blocks: grid.len(),
        },
        post_process: req.post_process.map(Parameters::id),
    })
}

/// The block grid of a planned job.
pub fn job_grid(spec: &PredictSpec) -> Result<BlockGrid, ValidatorError> {
    let padding = match spec.grid.padding.as_str() {
        "zero" => Padding::Zero,
        _ => Padding::Reflect,
    };
    let block_spec = BlockSpec::new(spec.grid.output_block.clone(), spec.grid.context.clone())
        .with_grid(spec.grid.grid.clone())
        .with_padding(padding);
    let dims = spec.grid.output_block.len();
    let shape = &spec.output.shape;
    let spatial: Vec<usize> = shape[shape.len().saturating_sub(dims)..]
        .iter()
        .map(|&s| s as usize)
        .collect();
    let grid = BlockGrid::new(&spatial, &block_spec)?;
    if grid.len() != spec.grid.blocks {
        return Err(ValidatorError::Job {
            path: spec.output.container.join(&spec.output.array),
            message: format!(
                "lists {} blocks but its grid has {}; predict again with --overwrite",
                spec.grid.blocks,
                grid.len()
            ),
        });
    }
    Ok(grid)
}

/// What [`prepare_output`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prepared {
    /// A new output array and ledger were created.
    Created,
    /// The same job was found: this many blocks are done already.
    Resumed {
        /// Blocks done before this launch.
        done: usize,
    },
}

/// What differs between two jobs, for the refusal message.
fn differences(old: &PredictSpec, new: &PredictSpec) -> String {
    let mut out = Vec::new();
    if old.run != new.run || old.root != new.root {
        out.push(format!("run `{}` vs `{}`", old.run, new.run));
    }
    if old.iteration != new.iteration || old.checkpoint_sha256 != new.checkpoint_sha256 {
        out.push(format!(
            "checkpoint {} vs {}{}",
            old.iteration,
            new.iteration,
            if old.iteration == new.iteration {
                " (other weights)"
            } else {
                ""
            }
        ));
    }
    if old.input != new.input {
        out.push(format!(
            "input {}/{} vs {}/{} (or its shape, type or normalisation)",
            old.input.container.display(),
            old.input.array,
            new.input.container.display(),
            new.input.array
        ));
    }
    if old.grid != new.grid {
        out.push("block grid".to_owned());
    }
    if old.post_process != new.post_process {
        out.push(format!(
            "post-processing {:?} vs {:?}",
            old.post_process, new.post_process
        ));
    }
    if (&old.backend, &old.device) != (&new.backend, &new.device) {
        out.push(format!(
            "backend {} {} vs {} {}",
            old.backend, old.device, new.backend, new.device
        ));
    }
    if out.is_empty() {
        out.push("output layout".to_owned());
    }
    out.join(", ")
}

/// Creates the output array and its ledger for `spec`, or finds the same job there to resume.
///
/// An existing array that holds another job, or was not written by a resumable prediction,
/// is an error unless `overwrite` (which starts over). The geometry (voxel size, offset, axis
/// names, units) comes from `input`.
pub fn prepare_output(
    spec: &PredictSpec,
    input: &ZarrArray,
    overwrite: bool,
) -> Result<Prepared, ValidatorError> {
    let out = &spec.output;
    let ledger = Ledger::new(&out.container, &out.array);
    let dir = out.container.join(&out.array);
    let refuse = |message: String| ValidatorError::Job {
        path: dir.clone(),
        message,
    };
    match output_kind(&dir) {
        OutputKind::Array if !overwrite => {
            return match ledger.job()? {
                Some((_, hash)) if hash == spec.hash() => Ok(Prepared::Resumed {
                    done: ledger
                        .done_blocks(spec.grid.blocks)?
                        .iter()
                        .filter(|d| **d)
                        .count(),
                }),
                Some((old, _)) => Err(refuse(format!(
                    "already exists with the prediction of another job ({}); add --overwrite \
                     to replace it, or choose another --output",
                    differences(&old, spec)
                ))),
                None => Err(refuse(
                    "already exists and was not written by a resumable `dacapo predict`; add \
                     --overwrite to replace it, or choose another --output"
                        .into(),
                )),
            };
        }
        OutputKind::Array | OutputKind::Free => clear_output(&dir)?,
        OutputKind::Other(what) => {
            return Err(refuse(format!(
                "already exists as {what}; choose another --output (--overwrite replaces \
                 arrays only)"
            )));
        }
    }
    create_output(spec, input)?;
    ledger.write_job(spec)?;
    Ok(Prepared::Created)
}

/// Creates the job's output array with the input's geometry and OME-Zarr metadata.
fn create_output(spec: &PredictSpec, input: &ZarrArray) -> Result<(), ValidatorError> {
    let out = &spec.output;
    let meta = input.meta();
    let spatial_names = &meta.axis_names[usize::from(meta.channel_axis)..];
    let labels = spec.post_process.is_some();
    let mut axis_names = if labels {
        Vec::new()
    } else {
        vec!["c^".to_owned()]
    };
    axis_names.extend(spatial_names.iter().cloned());
    let mut attributes = serde_json::Map::new();
    attributes.insert("run".into(), serde_json::json!(spec.run));
    attributes.insert("iteration".into(), serde_json::json!(spec.iteration));
    if let Some(p) = &spec.post_process {
        attributes.insert("post_process".into(), serde_json::json!(p));
    }
    let opts = WriteOptions {
        chunk_shape: Some(out.chunks.clone()),
        axis_names: Some(axis_names),
        attributes,
        ..WriteOptions::on_grid_of(meta)
    };
    if labels {
        create_array::<u64>(&out.container, &out.array, &out.shape, &opts)?;
    } else {
        create_array::<f32>(&out.container, &out.array, &out.shape, &opts)?;
    }
    Ok(())
}

/// What an output path holds now.
enum OutputKind {
    /// A zarr array.
    Array,
    /// Nothing, or only hidden entries (the ledger and its locks).
    Free,
    /// Something an output must not replace (a group, other files).
    Other(&'static str),
}

fn output_kind(dir: &Path) -> OutputKind {
    let zarr_json = std::fs::read_to_string(dir.join("zarr.json")).ok();
    let node_type = zarr_json
        .as_deref()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok())
        .and_then(|v| {
            v.get("node_type")
                .and_then(|n| n.as_str())
                .map(str::to_owned)
        });
    if dir.join(".zarray").is_file() || node_type.as_deref() == Some("array") {
        OutputKind::Array
    } else if dir.join(".zgroup").is_file() || node_type.is_some() {
        OutputKind::Other("a zarr group")
    } else if !dir.exists() || dacapo_data::write::only_hidden_entries(dir) {
        OutputKind::Free
    } else if dir.is_dir() {
        OutputKind::Other("a directory that is not a zarr array")
    } else {
        OutputKind::Other("a file")
    }
}

/// Empties an output array's directory for a new job, keeping the ledger's lock files (held
/// by this coordinator).
fn clear_output(dir: &Path) -> Result<(), ValidatorError> {
    let io = |action: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| ValidatorError::Ledger {
            action,
            path,
            source,
        }
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries {
        let entry = entry.map_err(io("list", dir))?;
        let path = entry.path();
        if entry.file_name() == crate::ledger::LEDGER_DIR {
            for inner in std::fs::read_dir(&path).map_err(io("list", &path))? {
                let inner = inner.map_err(io("list", &path))?;
                if !inner.file_name().to_string_lossy().ends_with(".lock") {
                    remove_path(&inner.path()).map_err(io("remove", &inner.path()))?;
                }
            }
        } else {
            remove_path(&path).map_err(io("remove", &path))?;
        }
    }
    Ok(())
}

fn remove_path(path: &Path) -> std::io::Result<()> {
    if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    }
}

/// One worker of a prediction job: predicts the blocks it claims until none is left.
pub struct BlockWorker<'a> {
    /// The job (as stored in the output's ledger).
    pub spec: &'a PredictSpec,
    /// The network, with the job's checkpoint loaded.
    pub model: &'a UNet,
    /// Its task.
    pub task: &'a Task,
    /// The post-processing, when the job writes labels.
    pub post: Option<&'a PostProcess>,
    /// This worker's number, `0..workers`.
    pub worker: usize,
    /// Number of workers of the launch.
    pub workers: usize,
}

/// What one worker did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkerSummary {
    /// Blocks it predicted.
    pub predicted: usize,
    /// Blocks that failed, with their errors (recorded in the ledger too).
    pub failed: Vec<(usize, String)>,
}

/// Where a worker writes.
enum Output {
    Prediction(ArrayWriter<f32>),
    Labels(ArrayWriter<u64>),
}

impl BlockWorker<'_> {
    /// How this worker names itself in claims.
    fn owner(&self) -> String {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!(
            "worker {} of {} (pid {} on {})",
            self.worker,
            self.workers,
            std::process::id(),
            host.trim()
        )
    }

    /// The input array of the job, checked against what the job recorded.
    fn open_input(&self) -> Result<(ZarrArray, Normalizer), ValidatorError> {
        let i = &self.spec.input;
        let input = ZarrArray::open(
            &i.container,
            &i.array,
            Some(self.spec.grid.output_block.len()),
        )?;
        let meta = input.meta();
        if meta.shape != i.shape || meta.dtype.name() != i.dtype {
            return Err(ValidatorError::Job {
                path: i.container.join(&i.array),
                message: format!(
                    "the input is now {} {:?}, but the job was planned for {} {:?}; predict \
                     again with --overwrite",
                    meta.dtype, meta.shape, i.dtype, i.shape
                ),
            });
        }
        Ok((
            input,
            Normalizer {
                low: i.low,
                high: i.high,
            },
        ))
    }

    /// Predicts blocks until every block is done or claimed by another worker; calls
    /// `on_block` after each block this worker finished. Blocks that fail are recorded and
    /// skipped; errors of the ledger itself stop the worker.
    pub fn run(&self, on_block: &mut dyn FnMut(usize)) -> Result<WorkerSummary, ValidatorError> {
        let spec = self.spec;
        let ledger = Ledger::new(&spec.output.container, &spec.output.array);
        let _running = ledger.lock_worker()?;
        let grid = job_grid(spec)?;
        let (input, normalizer) = self.open_input()?;
        let output = match spec.post_process {
            Some(_) => Output::Labels(open_writer(&spec.output.container, &spec.output.array)?),
            None => Output::Prediction(open_writer(&spec.output.container, &spec.output.array)?),
        };
        let total = grid.len();
        let owner = self.owner();
        let me = format!("worker {} of ", self.worker);
        let claims = ledger.claims()?;
        // Claims of this worker's earlier life (killed, requeued) come first.
        let mine: Vec<usize> = claims
            .iter()
            .filter(|(_, o)| o.starts_with(&me))
            .map(|(i, _)| *i)
            .collect();
        let mut skip = ledger.done_blocks(total)?;
        for (i, _) in &claims {
            if *i < total {
                skip[*i] = true;
            }
        }
        let first = self.worker * total / self.workers.max(1);
        let rest = (0..total)
            .map(|k| (first + k) % total)
            .filter(|&i| !skip[i]);
        let delay = block_delay();
        let mut summary = WorkerSummary::default();
        for (i, claimed) in mine
            .iter()
            .map(|&i| (i, true))
            .chain(rest.map(|i| (i, false)))
        {
            if !claimed && !ledger.try_claim(i, &owner)? {
                continue;
            }
            // Another worker may have finished it (markers come before releases).
            if ledger.is_done(i) {
                ledger.release(i)?;
                continue;
            }
            match self.predict(&grid, &input, normalizer, &output, i) {
                Ok(()) => {
                    std::thread::sleep(delay);
                    ledger.mark_done(i)?;
                    ledger.release(i)?;
                    summary.predicted += 1;
                    on_block(i);
                }
                Err(e) => {
                    let message = e.to_string();
                    tracing::error!("block {i}: {message}");
                    ledger.record_failure(i, &message)?;
                    summary.failed.push((i, message));
                }
            }
        }
        Ok(summary)
    }

    /// Predicts block `index` and makes its chunks durable.
    fn predict(
        &self,
        grid: &BlockGrid,
        input: &ZarrArray,
        normalizer: Normalizer,
        output: &Output,
        index: usize,
    ) -> Result<(), ValidatorError> {
        let meta = input.meta();
        let crop = &self.spec.grid.crop;
        let first_id = index as u64 * grid.spec().output_block.iter().product::<usize>() as u64;
        let mut read = |lo: &[usize], len: &[usize]| {
            let lo: Vec<u64> = lo.iter().map(|&v| v as u64).collect();
            let len: Vec<u64> = len.iter().map(|&v| v as u64).collect();
            let mut data = input.read_f32(&lo, &len)?;
            normalizer.apply(&mut data);
            Ok::<ArrayD<f32>, dacapo_data::DataError>(if meta.channel_axis {
                data
            } else {
                data.insert_axis(Axis(0))
            })
        };
        let mut predict =
            |block: ArrayViewD<f32>| predict_block(self.model, self.task, block, crop);
        let mut write = |begin: &[usize], region: ArrayViewD<f32>| -> Result<(), ValidatorError> {
            let begin: Vec<u64> = begin.iter().map(|&b| b as u64).collect();
            match output {
                Output::Prediction(w) => {
                    let at = [vec![0], begin].concat();
                    let data = region.as_standard_layout().into_owned();
                    let shape: Vec<u64> = data.shape().iter().map(|&s| s as u64).collect();
                    w.write(&at, &data)?;
                    w.sync_region(&at, &shape)?;
                }
                Output::Labels(w) => {
                    let post = self.post.ok_or_else(|| ValidatorError::Job {
                        path: self.spec.output.container.join(&self.spec.output.array),
                        message: "writes labels but the worker has no post-processing".into(),
                    })?;
                    let labels = block_labels(post, region, first_id)?;
                    let shape: Vec<u64> = labels.shape().iter().map(|&s| s as u64).collect();
                    w.write(&begin, &labels)?;
                    w.sync_region(&begin, &shape)?;
                }
            }
            Ok(())
        };
        let channels = meta.channels() as usize;
        predict_one_block(grid, channels, index, &mut read, &mut predict, &mut write)?;
        Ok(())
    }
}

/// A pause between writing a block and marking it done, from `DACAPO_PREDICT_BLOCK_DELAY_MS`:
/// crash tests use it to kill workers in that window, the worst moment.
fn block_delay() -> std::time::Duration {
    std::env::var("DACAPO_PREDICT_BLOCK_DELAY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(std::time::Duration::ZERO, std::time::Duration::from_millis)
}

/// The labels of one block's output region: instance ids made unique across blocks by adding
/// `first_id` (the block's index times the voxels of an output block); class ids unchanged.
fn block_labels(
    post: &PostProcess,
    region: ArrayViewD<f32>,
    first_id: u64,
) -> Result<ArrayD<u64>, ValidatorError> {
    let (mut labels, instances) = match post.processor.apply(region, &post.parameters)? {
        Segmentation::Masks { instances, .. } => (instances, true),
        Segmentation::Instances(labels) => (labels, true),
        Segmentation::Classes { classes, .. } => (classes, false),
    };
    if instances {
        labels.mapv_inplace(|l| if l == 0 { 0 } else { l + first_id });
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;
    use dacapo_core::config::TaskConfig;
    use ndarray::IxDyn;

    /// Workers split the cores among them, so a block must come out the same bit for bit
    /// whatever the number of threads that computes it.
    #[test]
    fn blocks_do_not_depend_on_the_thread_count() {
        let net = UNetConfig::new(3, 4, 2, vec![vec![2, 2, 2]]);
        let model = net.init(3, &Device::flex()).unwrap();
        let task = Task::new(
            &TaskConfig::Distance {
                scale_factor: 10.0,
                thresholds: vec![0.0],
            },
            3,
        )
        .unwrap();
        let input_shape = net.valid_input_shape(&[60, 64, 68]).unwrap();
        let mut shape = vec![1];
        shape.extend(&input_shape);
        let block = ArrayD::from_shape_fn(IxDyn(&shape), |ix| {
            ((ix[1] * 7 + ix[2] * 3 + ix[3]) as f32 * 0.05).sin()
        });
        let predict_with = |threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| predict_block(&model, &task, block.view(), &[0, 0, 0]).unwrap())
        };
        let one = predict_with(1);
        for threads in [2, 3] {
            let other = predict_with(threads);
            let same = one
                .iter()
                .zip(&other)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{threads} threads differ from one");
        }
    }

    #[test]
    fn zarr_paths() {
        let p = ZarrPath::parse("data/cells.zarr/raw/s0").unwrap();
        assert_eq!(p.container, PathBuf::from("data/cells.zarr"));
        assert_eq!(p.array.as_deref(), Some("raw/s0"));
        let p = ZarrPath::parse("/tmp/out.zarr/").unwrap();
        assert_eq!(p.container, PathBuf::from("/tmp/out.zarr"));
        assert_eq!(p.array, None);
        let p = ZarrPath::parse("a.zarr/b.zarr/c").unwrap();
        assert_eq!(p.container, PathBuf::from("a.zarr/b.zarr"));
        assert_eq!(p.array.as_deref(), Some("c"));
        let e = ZarrPath::parse("data/cells/raw").unwrap_err();
        assert!(e.contains("CONTAINER.zarr/ARRAY"), "{e}");
    }
}
