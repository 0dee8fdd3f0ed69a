//! Validation of a run's checkpoints: [`RunValidator`] predicts every validation dataset
//! blockwise, writes the prediction next to the run, post-processes it for every parameter set
//! and scores every criterion; it implements the trainer's [`Validate`] hook.
//!
//! Predictions go to `<root>/<run>/validation/<N>/<dataset>.zarr` (array `prediction`,
//! `(channels, spatial...)` `f32` with raw's voxel size and offset) and are deleted with the
//! checkpoints that retention removes unless `validation.keep_predictions` is set.
//!
//! Scores are computed over the part of gt that lies inside raw. With a mask, voxels outside
//! it are ignored: they are background in both the segmentation and gt, so they count as true
//! negatives for the binary criteria (only `fpr` sees them) and not at all for the instance
//! criteria (which ignore gt background).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use dacapo_core::RunName;
use dacapo_core::config::{ArchitectureConfig, RunConfig};
use dacapo_core::{Criterion, ParameterSet, Score, ValidationIterationScores, ValidationMeta};
use dacapo_data::{Dataset, OpenOptions, WriteOptions, ensure_synthetic, write_array};
use dacapo_models::{Padding as NetPadding, Task, UNet, UNetConfig};
use dacapo_runtime::memory::{self, Pass};
use dacapo_runtime::progress::BlockProgress;
use dacapo_runtime::{Progress, Validate};
use dacapo_store::layout;
use ndarray::{Array2, ArrayD, ArrayViewD, Axis, Slice, Zip};
use rayon::prelude::*;

use crate::ValidatorError;
use crate::blockwise::{BlockSpec, block_count, predict_blockwise};
use crate::postprocess::{Parameters, PostProcessor, Prepared, Segmentation, Sweep};
use crate::snapshot;

/// Array path of a prediction inside its `<dataset>.zarr` container.
pub const PREDICTION_ARRAY: &str = "prediction";
/// Largest spatial input block of 2D networks (per axis) without `validation.block_shape`:
/// a few hundred MB of activations at 12 feature maps, and most validation images in one block.
pub const DEFAULT_BLOCK_2D: usize = 1024;
/// Largest spatial input block of 3D networks (per axis) without `validation.block_shape`.
/// Measured on flex (2 cores) with the 3D U-Net of WORKLOADS.md over 128³: blocks of 84³,
/// 104³ and 168³ predict 99k, 131k and 154k voxels/s with 0.13, 0.24 and 0.74 GB peak memory;
/// 168³ (128³ outputs) is the largest that stays under 1 GB.
pub const DEFAULT_BLOCK_3D: usize = 168;
/// Default memory budget of the post-processing of one dataset: parameter sets run in
/// parallel as long as their estimated working sets fit in it.
pub const DEFAULT_POSTPROCESS_MEMORY: u64 = 2 << 30;
/// Estimated bytes per voxel of post-processing and scoring one parameter set (labels, masks,
/// the two distance maps of the Hausdorff distance), besides one byte per channel.
const POSTPROCESS_BYTES_PER_VOXEL: u64 = 48;
/// Validation arrays up to this size (raw f32 + gt u64 + mask) stay in memory between
/// validations; larger ones are read again each time.
const KEEP_IN_MEMORY_BYTES: u64 = 1 << 30;

/// How blocks are laid out for a network: the [`BlockSpec`] and how much of each side of the
/// network's output to crop (non-zero only for `same`-padded networks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkBlocks {
    /// Block geometry for [`predict_blockwise`].
    pub spec: BlockSpec,
    /// Voxels cropped from each side of the network output per axis to get `spec.output_block`.
    pub crop: Vec<usize>,
}

/// The default spatial input block for a `dims`-dimensional network.
pub fn default_block_shape(dims: usize) -> Vec<usize> {
    let edge = if dims >= 3 {
        DEFAULT_BLOCK_3D
    } else {
        DEFAULT_BLOCK_2D
    };
    vec![edge; dims]
}

/// The block layout of `net` for an array of spatial shape `spatial`, with input blocks of at
/// most about `input_block` (default [`default_block_shape`]).
///
/// Per axis, the array is split into as few blocks as that size allows, of equal size (so a
/// 512² array with a 1024² limit is one block, and with a 512² limit four blocks of about
/// 300² rather than four of 512²); blocks are at least one pooling grid cell of output and
/// rounded up to a size the network accepts. Block starts
/// are aligned to the network's total downsampling factor so blocks tile without seams. A
/// `same`-padded network gets the margins of its `valid` twin and its output is cropped, since
/// its zero padding would otherwise show at every block edge.
pub fn network_blocks(
    net: &UNetConfig,
    input_block: Option<&[usize]>,
    spatial: &[usize],
) -> Result<NetworkBlocks, ValidatorError> {
    let dims = net.dims;
    let requested = input_block
        .map(<[usize]>::to_vec)
        .unwrap_or_else(|| default_block_shape(dims));
    for (what, list) in [
        ("block shape", &requested),
        ("array shape", &spatial.to_vec()),
    ] {
        if list.len() != dims {
            return Err(ValidatorError::AxisCount {
                what: what.into(),
                got: list.len(),
                expected: dims,
            });
        }
    }
    let grid: Vec<usize> = (0..dims)
        .map(|a| net.downsample_factors.iter().map(|f| f[a]).product())
        .collect();
    let mut valid_twin = net.clone();
    valid_twin.padding = NetPadding::Valid;
    let context = valid_twin.context()?;
    let crop: Vec<usize> = match net.padding {
        NetPadding::Valid => vec![0; dims],
        NetPadding::Same => context.clone(),
    };
    let effective = |input: &[usize]| -> Result<Vec<usize>, ValidatorError> {
        let out = net.output_shape(input)?;
        Ok((0..dims).map(|a| out[a] - 2 * crop[a]).collect())
    };
    // The largest output block the requested input allows (at least one grid cell)...
    let max_in: Vec<usize> = (0..dims)
        .map(|a| requested[a].max(grid[a] + 2 * context[a]))
        .collect();
    let max_out = effective(&net.valid_input_shape(&max_in)?)?;
    // ...then as few blocks per axis as that allows, all of about the same size, so little
    // is computed twice or beyond the edge (the cost is about constant per input voxel).
    let want: Vec<usize> = (0..dims)
        .map(|a| {
            let blocks = spatial[a].div_ceil(max_out[a]).max(1);
            let out = spatial[a].div_ceil(blocks);
            (out + 2 * context[a]).max(grid[a] + 2 * context[a])
        })
        .collect();
    let input = net.valid_input_shape(&want)?;
    let output_block = effective(&input)?;
    // For a valid network `input - output` is the same for every accepted input size.
    let margin: Vec<usize> = (0..dims)
        .map(|a| (input[a] - output_block[a]) / 2)
        .collect();
    Ok(NetworkBlocks {
        spec: BlockSpec::new(output_block, margin).with_grid(grid),
        crop,
    })
}

/// Predicts `input` (`(c, spatial...)`, normalised) with `model` block by block; returns the
/// activated prediction `(out_c, spatial...)`. `progress` is called with `(done, total)` blocks.
pub fn predict_array(
    model: &UNet,
    task: &Task,
    input: ArrayViewD<f32>,
    blocks: &NetworkBlocks,
    progress: Option<&mut dyn FnMut(usize, usize)>,
) -> Result<ArrayD<f32>, ValidatorError> {
    predict_blockwise(
        input,
        &blocks.spec,
        |block: ArrayViewD<f32>| predict_block(model, task, block, &blocks.crop),
        progress,
    )
}

/// One network call on a `(c, input_block...)` block, cropped by `crop` on each side.
pub(crate) fn predict_block(
    model: &UNet,
    task: &Task,
    block: ArrayViewD<f32>,
    crop: &[usize],
) -> Result<ArrayD<f32>, dacapo_models::ModelError> {
    let batch = block.insert_axis(Axis(0)).as_standard_layout().into_owned();
    let out = model.predict(task, &batch)?.index_axis_move(Axis(0), 0);
    if crop.iter().all(|&c| c == 0) {
        return Ok(out);
    }
    Ok(out
        .slice_each_axis(|ax| match ax.axis.index() {
            0 => Slice::from(..),
            i => Slice::from(crop[i - 1]..ax.len - crop[i - 1]),
        })
        .to_owned())
}

/// Refuses `blocks` if predicting one would not fit in the memory this process may use
/// (see [`dacapo_runtime::memory`]).
pub(crate) fn check_block_memory(
    net: &UNetConfig,
    blocks: &NetworkBlocks,
) -> Result<(), ValidatorError> {
    let input = blocks.spec.input_block();
    memory::check(
        memory::estimate(net, &input, 1, Pass::Prediction),
        &format!("prediction blocks of {input:?}"),
    )?;
    Ok(())
}

/// A block callback for [`predict_blockwise`] that reports to `progress`.
pub(crate) fn report_blocks(progress: &mut dyn BlockProgress) -> impl FnMut(usize, usize) + '_ {
    move |done: usize, _total: usize| progress.set(done as u64)
}

/// A parameter id and the criteria values of its segmentation.
type Scored = (String, BTreeMap<String, f64>);
/// A [`Scored`] parameter set with the central slice of its segmentation labels.
type ScoredSlice = (Scored, Array2<u64>);
/// Parameter id → criterion → value, for one dataset.
type ParameterScores = BTreeMap<String, BTreeMap<String, Score>>;
/// Raw and prediction over the scored region, and each parameter set's segmentation slice.
type SnapshotInputs<'a> = (
    ArrayViewD<'a, f32>,
    ArrayViewD<'a, f32>,
    BTreeMap<String, Array2<u64>>,
);

/// The part of a `(c, spatial...)` array that is scored (gt ∩ raw).
fn scored_region<'a>(mut array: ArrayViewD<'a, f32>, loaded: &Loaded) -> ArrayViewD<'a, f32> {
    array.slice_each_axis_inplace(|ax| match ax.axis.index() {
        0 => Slice::from(..),
        i => Slice::from(loaded.begin[i - 1]..loaded.begin[i - 1] + loaded.shape[i - 1]),
    });
    array
}

/// The arrays of one validation dataset that are scored.
#[derive(Debug)]
struct Loaded {
    /// Normalised raw, `(c, spatial...)`.
    raw: ArrayD<f32>,
    /// Start (raw voxels) of the scored region: gt ∩ raw.
    begin: Vec<usize>,
    /// Shape of the scored region.
    shape: Vec<usize>,
    /// gt over the scored region, 0 where the mask is false.
    gt: ArrayD<u64>,
    /// Where voxels are scored (`None`: everywhere in the region).
    mask: Option<ArrayD<bool>>,
}

/// A validation dataset, with its arrays once read.
#[derive(Debug)]
struct ValidationData {
    dataset: Dataset,
    loaded: Option<Arc<Loaded>>,
}

impl ValidationData {
    /// The dataset's arrays, read now or kept from an earlier validation.
    fn load(&mut self) -> Result<Arc<Loaded>, ValidatorError> {
        if let Some(l) = &self.loaded {
            return Ok(Arc::clone(l));
        }
        let d = &self.dataset;
        let raw = d.raw()?;
        let raw_shape = d.raw_shape();
        let mut begin = Vec::with_capacity(raw_shape.len());
        let mut shape = Vec::with_capacity(raw_shape.len());
        for ((&n, &off), &g) in raw_shape.iter().zip(d.gt_offset()).zip(&d.gt_shape()) {
            let lo = off.max(0);
            let hi = (off + g as i64).min(n as i64);
            if hi <= lo {
                return Err(ValidatorError::NoOverlap {
                    dataset: d.name().to_owned(),
                });
            }
            begin.push(lo as usize);
            shape.push((hi - lo) as usize);
        }
        let begin_i: Vec<i64> = begin.iter().map(|&b| b as i64).collect();
        let mut gt = d.read_gt(&begin_i, &shape)?;
        let mask = match d.mask_array() {
            Some(_) => {
                let m = d.read_valid(&begin_i, &shape)?;
                Zip::from(&mut gt).and(&m).for_each(|g, &keep| {
                    if !keep {
                        *g = 0;
                    }
                });
                Some(m)
            }
            None => None,
        };
        let loaded = Arc::new(Loaded {
            raw,
            begin,
            shape,
            gt,
            mask,
        });
        let bytes = loaded.raw.len() as u64 * 4
            + loaded.gt.len() as u64 * 8
            + loaded.mask.as_ref().map_or(0, |m| m.len() as u64);
        if bytes <= KEEP_IN_MEMORY_BYTES {
            self.loaded = Some(Arc::clone(&loaded));
        }
        Ok(loaded)
    }
}

/// Settings of a [`RunValidator`] beyond the run config.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatorOptions {
    /// Memory budget of the post-processing of one dataset (bytes).
    pub postprocess_memory: u64,
    /// Write predictions to `<root>/<run>/validation/<N>/<dataset>.zarr`.
    pub write_predictions: bool,
    /// Write snapshots to `<root>/<run>/validation/<N>/<dataset>.png` (see [`crate::snapshot`]).
    pub write_snapshots: bool,
}

impl Default for ValidatorOptions {
    fn default() -> Self {
        Self {
            postprocess_memory: DEFAULT_POSTPROCESS_MEMORY,
            write_predictions: true,
            write_snapshots: true,
        }
    }
}

/// Validates checkpoints of one run on its validation datasets (see the module docs).
#[derive(Debug)]
pub struct RunValidator {
    run: RunName,
    root: PathBuf,
    data: Vec<ValidationData>,
    post: PostProcessor,
    parameters: Vec<Parameters>,
    criteria: Vec<(&'static str, bool)>,
    block_shape: Option<Vec<usize>>,
    keep_predictions: bool,
    options: ValidatorOptions,
}

impl RunValidator {
    /// The validator of `config` with default options.
    pub fn new(config: &RunConfig) -> Result<Self, ValidatorError> {
        Self::with_options(config, ValidatorOptions::default())
    }

    /// The validator of `config`: generates the synthetic data if configured and missing and
    /// opens every validation dataset (their arrays are read at the first validation). A run
    /// without validation datasets gets a validator whose [`meta`](Validate::meta) has none.
    pub fn with_options(
        config: &RunConfig,
        options: ValidatorOptions,
    ) -> Result<Self, ValidatorError> {
        let ArchitectureConfig::Unet(arch) = &config.architecture;
        let validate = &config.datasplit.validate;
        if !validate.is_empty()
            && let Some(synthetic) = &config.datasplit.synthetic
        {
            ensure_synthetic(synthetic)?;
        }
        let uncached = OpenOptions { cache_bytes: 0 };
        let data = validate
            .iter()
            .map(|d| {
                Ok(ValidationData {
                    dataset: Dataset::open(d, arch.dims, &uncached)?,
                    loaded: None,
                })
            })
            .collect::<Result<Vec<_>, ValidatorError>>()?;
        let post = PostProcessor::from_task(&config.task, &config.validation.min_sizes, arch.dims);
        Ok(Self {
            run: config.run.name.clone(),
            root: config.stores.root.clone(),
            data,
            parameters: post.parameters(),
            criteria: post.criteria(),
            post,
            block_shape: config.validation.block_shape.clone(),
            keep_predictions: config.validation.keep_predictions,
            options,
        })
    }

    /// Names of the validation datasets.
    pub fn datasets(&self) -> Vec<&str> {
        self.data.iter().map(|d| d.dataset.name()).collect()
    }

    /// The post-processor whose parameters are swept.
    pub fn post_processor(&self) -> &PostProcessor {
        &self.post
    }

    /// Directory of the predictions of checkpoint `iteration`.
    pub fn predictions_dir(&self, iteration: u64) -> PathBuf {
        layout::predictions_dir(&self.root, &self.run, iteration)
    }

    /// Scores of `model` (checkpoint `iteration`) on every validation dataset; the prediction
    /// of each dataset is reported to `progress`.
    pub fn validate_model(
        &mut self,
        iteration: u64,
        model: &UNet,
        task: &Task,
        progress: &dyn Progress,
    ) -> Result<ValidationIterationScores, ValidatorError> {
        let mut scores = BTreeMap::new();
        for i in 0..self.data.len() {
            let name = self.data[i].dataset.name().to_owned();
            let per_parameter = self
                .validate_dataset(i, iteration, model, task, progress)
                .map_err(|e| match e {
                    e @ (ValidatorError::Dataset { .. } | ValidatorError::NoOverlap { .. }) => e,
                    e => ValidatorError::Dataset {
                        dataset: name.clone(),
                        source: Box::new(e),
                    },
                })?;
            scores.insert(name, per_parameter);
        }
        Ok(ValidationIterationScores { iteration, scores })
    }

    /// Predicts, writes and scores validation dataset `i`.
    fn validate_dataset(
        &mut self,
        i: usize,
        iteration: u64,
        model: &UNet,
        task: &Task,
        progress: &dyn Progress,
    ) -> Result<ParameterScores, ValidatorError> {
        let loaded = self.data[i].load()?;
        let dataset = &self.data[i].dataset;
        let name = dataset.name();
        let spatial = &loaded.raw.shape()[1..];
        let blocks = network_blocks(model.config(), self.block_shape.as_deref(), spatial)?;
        check_block_memory(model.config(), &blocks)?;
        let prediction = {
            let mut blocks_done = progress.blocks(
                &format!("validate {iteration} {name}"),
                block_count(spatial, &blocks.spec) as u64,
            );
            let mut report = report_blocks(&mut *blocks_done);
            predict_array(model, task, loaded.raw.view(), &blocks, Some(&mut report))?
        };
        if self.options.write_predictions {
            let container = self.predictions_dir(iteration).join(format!("{name}.zarr"));
            write_prediction(&container, &prediction, dataset, iteration)?;
        }
        let region = scored_region(prediction.view(), &loaded);
        let (scores, slices) = self.score(region.view(), &loaded, dataset.voxel_size())?;
        if self.options.write_snapshots {
            let raw = scored_region(loaded.raw.view(), &loaded);
            let panels = (raw, region, slices);
            self.write_snapshot(iteration, name, &loaded, panels, &scores)?;
        }
        Ok(scores)
    }

    /// Writes the snapshot of one dataset: raw, gt and prediction over the scored region and
    /// the central slice of the best parameter set's segmentation.
    fn write_snapshot(
        &self,
        iteration: u64,
        dataset: &str,
        loaded: &Loaded,
        (raw, prediction, mut slices): SnapshotInputs<'_>,
        scores: &ParameterScores,
    ) -> Result<(), ValidatorError> {
        let Some(best) = self.headline_parameter(scores) else {
            return Ok(());
        };
        let Some(segmentation) = slices.remove(&best) else {
            return Ok(());
        };
        let prediction_channels = prediction
            .axis_iter(Axis(0))
            .map(snapshot::central_slice)
            .collect::<Result<Vec<_>, _>>()?;
        let image = snapshot::compose(&snapshot::Panels {
            raw: snapshot::central_slice(raw.index_axis(Axis(0), 0))?,
            gt: snapshot::central_slice(loaded.gt.view())?,
            prediction: prediction_channels,
            prediction_range: snapshot::prediction_range(&self.post),
            segmentation: segmentation.view(),
        })?;
        let path = snapshot::snapshot_path(&self.root, &self.run, iteration, dataset);
        let png = snapshot::encode_png(&image).map_err(|source| ValidatorError::Snapshot {
            path: path.clone(),
            source,
        })?;
        snapshot::write_snapshot(&path, &png)
    }

    /// The parameter set that scored best on the headline criterion (see
    /// [`snapshot::HEADLINE_CRITERIA`]); `None` when every value is NaN.
    fn headline_parameter(&self, scores: &ParameterScores) -> Option<String> {
        let (name, higher) = snapshot::HEADLINE_CRITERIA
            .iter()
            .find_map(|h| self.criteria.iter().find(|(c, _)| c == h))
            .or_else(|| self.criteria.first())?;
        let criterion = Criterion::new(*name, *higher);
        let mut best: Option<(String, f64)> = None;
        // Sweep order, so ties go to the first parameter set as in best records.
        for p in &self.parameters {
            let id = p.id();
            let Some(v) = scores.get(&id).and_then(|s| s.get(*name)).map(|s| s.0) else {
                continue;
            };
            if best
                .as_ref()
                .map_or(!v.is_nan(), |(_, b)| criterion.is_better(v, *b))
            {
                best = Some((id, v));
            }
        }
        best.map(|(id, _)| id)
    }

    /// Post-processes `prediction` (the scored region) for every parameter set and scores it.
    /// Also returns the central slice of each parameter set's segmentation labels, for the
    /// snapshot.
    ///
    /// The parameter sets of one swept value share its segmentation, which each minimum size
    /// then filters; as many swept values run at once as the memory budget allows.
    fn score(
        &self,
        prediction: ArrayViewD<f32>,
        loaded: &Loaded,
        voxel_size: &[f64],
    ) -> Result<(ParameterScores, BTreeMap<String, Array2<u64>>), ValidatorError> {
        let channels = prediction.len_of(Axis(0)) as u64;
        let prepared = self.post.prepare(prediction)?;
        let groups = group_by_sweep(&self.parameters);
        let voxels = loaded.gt.len() as u64;
        // A swept value holds its segmentation and one filtered copy.
        let per_group = voxels
            .saturating_mul(2 * POSTPROCESS_BYTES_PER_VOXEL + channels)
            .max(1);
        let at_once =
            ((self.options.postprocess_memory / per_group) as usize).clamp(1, groups.len().max(1));
        let mut out = BTreeMap::new();
        let mut slices = BTreeMap::new();
        for wave in groups.chunks(at_once) {
            let results: Vec<Result<Vec<ScoredSlice>, ValidatorError>> = wave
                .par_iter()
                .map(|(sweep, group)| self.score_group(&prepared, sweep, group, loaded, voxel_size))
                .collect();
            for r in results {
                for ((id, values), slice) in r? {
                    slices.insert(id.clone(), slice);
                    let values = self
                        .criteria
                        .iter()
                        .map(|(c, _)| {
                            let v = values.get(*c).copied().unwrap_or(f64::NAN);
                            ((*c).to_owned(), Score(v))
                        })
                        .collect();
                    out.insert(id, values);
                }
            }
        }
        Ok((out, slices))
    }

    /// Scores the parameter sets `group`, which share the swept value `sweep`.
    fn score_group(
        &self,
        prepared: &Prepared,
        sweep: &Sweep,
        group: &[Parameters],
        loaded: &Loaded,
        voxel_size: &[f64],
    ) -> Result<Vec<ScoredSlice>, ValidatorError> {
        let segmentation = prepared.segment(sweep)?;
        group
            .iter()
            .map(|p| {
                let mut seg = prepared.without_small(segmentation.clone(), p.min_size)?;
                if let Some(mask) = &loaded.mask {
                    mask_segmentation(&mut seg, mask);
                }
                let labels = snapshot::segmentation_labels(&seg).view();
                let slice = snapshot::central_slice(labels)?.to_owned();
                Ok(((p.id(), seg.evaluate(loaded.gt.view(), voxel_size)?), slice))
            })
            .collect()
    }
}

/// `parameters` grouped by swept value, in order of first appearance.
fn group_by_sweep(parameters: &[Parameters]) -> Vec<(Sweep, Vec<Parameters>)> {
    let mut groups: Vec<(Sweep, Vec<Parameters>)> = Vec::new();
    for p in parameters {
        match groups.iter_mut().find(|(s, _)| *s == p.sweep) {
            Some((_, group)) => group.push(*p),
            None => groups.push((p.sweep, vec![*p])),
        }
    }
    groups
}

/// Sets voxels outside `mask` to background in every part of `seg`.
fn mask_segmentation(seg: &mut Segmentation, mask: &ArrayD<bool>) {
    let clear_labels = |labels: &mut ArrayD<u64>| {
        Zip::from(labels).and(mask).for_each(|l, &keep| {
            if !keep {
                *l = 0;
            }
        });
    };
    match seg {
        Segmentation::Masks { masks, instances } => {
            for mut channel in masks.outer_iter_mut() {
                Zip::from(&mut channel).and(mask).for_each(|m, &keep| {
                    if !keep {
                        *m = false;
                    }
                });
            }
            clear_labels(instances);
        }
        Segmentation::Instances(labels) => clear_labels(labels),
        Segmentation::Classes { classes, .. } => clear_labels(classes),
    }
}

/// Writes `prediction` of `dataset` into the container `container` (replacing an older one).
fn write_prediction(
    container: &Path,
    prediction: &ArrayD<f32>,
    dataset: &Dataset,
    iteration: u64,
) -> Result<(), ValidatorError> {
    let meta = dataset.raw_array().meta();
    let spatial_names = &meta.axis_names[usize::from(meta.channel_axis)..];
    let mut axis_names = vec!["c^".to_owned()];
    axis_names.extend(spatial_names.iter().cloned());
    let mut attributes = serde_json::Map::new();
    attributes.insert("iteration".into(), serde_json::json!(iteration));
    attributes.insert("dataset".into(), serde_json::json!(dataset.name()));
    let opts = WriteOptions {
        axis_names: Some(axis_names),
        attributes,
        overwrite: true,
        ..WriteOptions::on_grid_of(meta)
    };
    write_array(container, PREDICTION_ARRAY, prediction, &opts)?;
    Ok(())
}

impl Validate for RunValidator {
    fn meta(&self) -> ValidationMeta {
        if self.data.is_empty() {
            return ValidationMeta::default();
        }
        ValidationMeta {
            parameters: self.parameters.iter().map(ParameterSet::from).collect(),
            datasets: self.datasets().into_iter().map(str::to_owned).collect(),
            criteria: self
                .criteria
                .iter()
                .map(|&(name, higher)| Criterion::new(name, higher))
                .collect(),
        }
    }

    fn validate(
        &mut self,
        iteration: u64,
        model: &UNet,
        task: &Task,
        progress: &dyn Progress,
    ) -> Result<ValidationIterationScores, Box<dyn std::error::Error + Send + Sync>> {
        Ok(self.validate_model(iteration, model, task, progress)?)
    }

    fn removed(&mut self, iterations: &[u64]) {
        if self.keep_predictions {
            return;
        }
        for &n in iterations {
            let dir = self.predictions_dir(n);
            if let Err(e) = remove_predictions(&dir) {
                tracing::warn!("cannot delete predictions in {}: {e}", dir.display());
            }
        }
    }

    fn snapshots(&self, iteration: u64) -> Vec<(String, PathBuf)> {
        self.datasets()
            .into_iter()
            .map(|d| {
                let path = snapshot::snapshot_path(&self.root, &self.run, iteration, d);
                (d.to_owned(), path)
            })
            .filter(|(_, path)| path.is_file())
            .collect()
    }
}

/// Deletes the prediction containers in `dir`; snapshots (small) stay as the run's history.
fn remove_predictions(dir: &Path) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "png") {
            continue;
        }
        if path.is_dir() {
            std::fs::remove_dir_all(&path)?;
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    // Gone only when nothing (no snapshot) is left in it.
    let _ = std::fs::remove_dir(dir);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{IxDyn, array};

    fn validator(root: &Path, keep_predictions: bool) -> RunValidator {
        let post = PostProcessor::Distance {
            thresholds: vec![0.0, 0.5],
            min_sizes: vec![0],
        };
        RunValidator {
            run: RunName::new("r").unwrap(),
            root: root.to_owned(),
            data: Vec::new(),
            parameters: post.parameters(),
            criteria: post.criteria(),
            post,
            block_shape: None,
            keep_predictions,
            options: ValidatorOptions::default(),
        }
    }

    #[test]
    fn blocks_of_a_valid_unet() {
        // Two 2x downsamplings: grid 4; each level's two 3x3 convs lose 4 voxels.
        let net = UNetConfig::new(2, 4, 2, vec![vec![2, 2], vec![2, 2]]);
        let c = net.context().unwrap()[0];
        assert_eq!(c, 20);
        // 116² inputs give 76² outputs: 512 needs 7 blocks, of 76² (74 rounded up to a size
        // the network takes).
        let b = network_blocks(&net, Some(&[116, 116]), &[512, 512]).unwrap();
        assert_eq!(b.spec.grid, [4, 4]);
        assert_eq!(b.spec.input_block(), [116, 116]);
        assert_eq!(b.spec.output_block, [76, 76]);
        assert_eq!(block_count(&[512, 512], &b.spec), 49);
        assert_eq!(b.spec.context, net.context().unwrap());
        assert_eq!(b.crop, [0, 0]);
        // A small array needs no larger block than itself plus context.
        let b = network_blocks(&net, Some(&[512, 512]), &[30, 1000]).unwrap();
        let input = b.spec.input_block();
        assert!(
            input[0] >= 30 + 2 * c && input[0] < 30 + 2 * c + 4,
            "{input:?}"
        );
        // 1000 needs three outputs of at most 512 - 2c: three of about 334, not 472.
        let out = b.spec.output_block[1];
        assert!((334..338).contains(&out), "{b:?}");
        assert_eq!(block_count(&[30, 1000], &b.spec), 3);
        // The default 2D limit predicts a 512² array in one block.
        let b = network_blocks(&net, None, &[512, 512]).unwrap();
        assert_eq!(block_count(&[512, 512], &b.spec), 1);
        assert_eq!(b.spec.output_block, [512, 512]);
        // A block too small for one grid cell of output is grown.
        let b = network_blocks(&net, Some(&[1, 1]), &[64, 64]).unwrap();
        assert!(b.spec.output_block.iter().all(|&o| o >= 4), "{b:?}");
        let e = network_blocks(&net, Some(&[64]), &[64, 64]).unwrap_err();
        assert!(e.to_string().contains("block shape has 1 values"), "{e}");
    }

    #[test]
    fn same_padding_gets_margins_and_a_crop() {
        let mut net = UNetConfig::new(2, 4, 2, vec![vec![2, 2]]);
        let valid_context = net.context().unwrap();
        net.padding = NetPadding::Same;
        let b = network_blocks(&net, Some(&[64, 64]), &[200, 200]).unwrap();
        assert_eq!(b.crop, valid_context);
        assert_eq!(b.spec.context, valid_context);
        let input = b.spec.input_block();
        assert_eq!(net.output_shape(&input).unwrap(), input);
        assert_eq!(
            b.spec.output_block,
            [
                input[0] - 2 * valid_context[0],
                input[1] - 2 * valid_context[1]
            ]
        );
    }

    #[test]
    fn mask_excludes_voxels_from_scores() {
        let dir = tempfile::tempdir().unwrap();
        let v = validator(dir.path(), false);
        // Voxel 3 is a false positive at threshold 0; the mask removes it.
        let prediction = array![[[1.0f32, 1.0, -1.0, 1.0]]].into_dyn();
        let gt = array![[1u64, 1, 0, 0]].into_dyn();
        let mut loaded = Loaded {
            raw: ArrayD::zeros(IxDyn(&[1, 1, 4])),
            begin: vec![0, 0],
            shape: vec![1, 4],
            gt,
            mask: None,
        };
        let s = v.score(prediction.view(), &loaded, &[1.0, 1.0]).unwrap().0;
        assert_eq!(s.len(), 2);
        assert!((s["threshold=0"]["dice"].0 - 0.8).abs() < 1e-12);
        assert_eq!(s["threshold=0"]["fpr"].0, 0.5);
        assert_eq!(s["threshold=0.5"].len(), v.criteria.len());
        loaded.mask = Some(array![[true, true, true, false]].into_dyn());
        let s = v.score(prediction.view(), &loaded, &[1.0, 1.0]).unwrap().0;
        assert_eq!(s["threshold=0"]["dice"].0, 1.0);
        assert_eq!(s["threshold=0"]["fpr"].0, 0.0);
        // A budget of one parameter set at a time gives the same scores.
        let mut sequential = validator(dir.path(), false);
        sequential.options.postprocess_memory = 1;
        assert_eq!(
            sequential
                .score(prediction.view(), &loaded, &[1.0, 1.0])
                .unwrap()
                .0,
            s
        );
    }

    #[test]
    fn removed_checkpoints_lose_their_predictions_unless_kept() {
        let dir = tempfile::tempdir().unwrap();
        for keep in [false, true] {
            let mut v = validator(dir.path(), keep);
            for n in [2, 4, 8] {
                std::fs::create_dir_all(v.predictions_dir(n).join("val.zarr")).unwrap();
            }
            std::fs::write(v.predictions_dir(4).join("val.png"), b"png").unwrap();
            v.removed(&[2, 4, 6]);
            assert_eq!(v.predictions_dir(2).exists(), keep);
            assert_eq!(v.predictions_dir(4).join("val.zarr").exists(), keep);
            assert!(
                v.predictions_dir(4).join("val.png").exists(),
                "snapshots stay"
            );
            assert!(v.predictions_dir(8).join("val.zarr").exists());
            assert_eq!(
                v.predictions_dir(8),
                dir.path().join("r").join("validation").join("8")
            );
            std::fs::remove_dir_all(dir.path().join("r")).unwrap();
        }
        assert_eq!(
            validator(dir.path(), false).meta(),
            ValidationMeta::default()
        );
    }
}
