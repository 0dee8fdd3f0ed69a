//! Datasets (raw, ground truth, optional mask) and the datasplit of a run.
//!
//! Geometry convention (as in DaCapo/funlib, restricted to one voxel grid): raw, gt and mask
//! must have the same voxel size; their `offset` attributes (world units) place them in one
//! world, and the offset differences must be whole voxels. gt (and mask) may be smaller than
//! raw, e.g. labels for the centre of a raw volume that carries extra context; gt may also be
//! larger than raw. Every region here is given in **raw voxel coordinates**: voxel `p` of the
//! raw array is at world position `raw.offset + p * voxel_size`, and gt voxel `q` is at raw
//! voxel `q + gt_offset()`. Reads outside an array return 0 (raw, labels) or false (mask).

use std::path::Path;
use std::sync::Arc;

use dacapo_core::config::{DataSplitConfig, DatasetConfig};
use ndarray::{ArrayD, IxDyn, Slice};

use crate::array::{ArrayMeta, ZarrArray};
use crate::error::{DataError, Result};
use crate::normalize::Normalizer;
use crate::synthetic::ensure_synthetic;

/// Default in-memory budget per array: arrays up to this size are read once on open.
pub const DEFAULT_CACHE_BYTES: u64 = 1 << 30;

/// How datasets are opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenOptions {
    /// Arrays whose decoded size (f32 raw, u64 labels, bool mask) is at most this many bytes
    /// are read into memory when the dataset opens; larger ones are read per region.
    pub cache_bytes: u64,
}

impl Default for OpenOptions {
    fn default() -> Self {
        Self {
            cache_bytes: DEFAULT_CACHE_BYTES,
        }
    }
}

/// Raw, ground truth and optional mask of one dataset, with raw's normalisation resolved.
#[derive(Debug, Clone)]
pub struct Dataset {
    name: String,
    weight: f64,
    raw: ZarrArray,
    gt: ZarrArray,
    mask: Option<ZarrArray>,
    normalizer: Normalizer,
    gt_offset: Vec<i64>,
    mask_offset: Vec<i64>,
    raw_cache: Option<Arc<ArrayD<f32>>>,
    gt_cache: Option<Arc<ArrayD<u64>>>,
    mask_cache: Option<Arc<ArrayD<bool>>>,
}

/// The train and validation datasets of a run.
#[derive(Debug, Clone)]
pub struct DataSplit {
    /// Training datasets (cached in memory within [`OpenOptions::cache_bytes`]).
    pub train: Vec<Dataset>,
    /// Validation datasets (never cached: the validator reads them whole when it needs them).
    pub validate: Vec<Dataset>,
}

impl DataSplit {
    /// Generates the synthetic container if configured and missing, then opens every dataset
    /// for a network with `dims` spatial dimensions.
    pub fn open(cfg: &DataSplitConfig, dims: usize, opts: &OpenOptions) -> Result<Self> {
        if let Some(synthetic) = &cfg.synthetic {
            ensure_synthetic(synthetic)?;
        }
        let uncached = OpenOptions { cache_bytes: 0 };
        Ok(Self {
            train: cfg
                .train
                .iter()
                .map(|d| Dataset::open(d, dims, opts))
                .collect::<Result<_>>()?,
            validate: cfg
                .validate
                .iter()
                .map(|d| Dataset::open(d, dims, &uncached))
                .collect::<Result<_>>()?,
        })
    }
}

/// Whole-voxel shift of `other` relative to `raw`, checking voxel sizes match.
fn grid_shift(dataset: &str, raw: &ZarrArray, other: &ZarrArray, role: &str) -> Result<Vec<i64>> {
    let (r, o) = (raw.meta(), other.meta());
    let err = |message: String| DataError::Dataset {
        dataset: dataset.to_owned(),
        message,
    };
    let same = r
        .voxel_size
        .iter()
        .zip(&o.voxel_size)
        .all(|(a, b)| (a - b).abs() <= 1e-9 * a.abs().max(b.abs()));
    if !same {
        return Err(err(format!(
            "raw {:?} has voxel size {:?} but {role} {:?} has {:?}; resampling is not \
             supported: write the {role} at raw's voxel size",
            raw.path(),
            r.voxel_size,
            other.path(),
            o.voxel_size
        )));
    }
    r.offset
        .iter()
        .zip(&o.offset)
        .zip(&r.voxel_size)
        .map(|((ro, oo), vs)| {
            let shift = (oo - ro) / vs;
            if (shift - shift.round()).abs() > 1e-6 {
                return Err(err(format!(
                    "{role} offset {:?} minus raw offset {:?} is not a whole number of voxels \
                     (voxel size {:?}); fix the `offset` attributes",
                    o.offset, r.offset, r.voxel_size
                )));
            }
            #[allow(clippy::cast_possible_truncation)]
            Ok(shift.round() as i64)
        })
        .collect()
}

/// Opens a single-channel array (labels, mask) for `dims` spatial axes.
fn open_single_channel(cfg: &DatasetConfig, path: &str, dims: usize) -> Result<ZarrArray> {
    let a = ZarrArray::open(&cfg.zarr, path, Some(dims))?;
    if a.meta().channels() != 1 {
        return Err(a.err(format!(
            "has {} channels (shape {:?}); labels and masks need one value per voxel",
            a.meta().channels(),
            a.meta().shape
        )));
    }
    Ok(a)
}

fn u64s(v: &[u64]) -> Vec<usize> {
    #[allow(clippy::cast_possible_truncation)]
    v.iter().map(|&x| x as usize).collect()
}

/// Reads `shape` voxels at `begin` (spatial, possibly outside `extent`) through `read`,
/// which gets an in-bounds region; `lead` whole leading axes come first in the result.
fn padded<T: Clone + Default>(
    lead: &[usize],
    extent: &[u64],
    begin: &[i64],
    shape: &[usize],
    read: impl FnOnce(&[u64], &[u64]) -> Result<ArrayD<T>>,
) -> Result<ArrayD<T>> {
    let mut full: Vec<usize> = lead.to_vec();
    full.extend_from_slice(shape);
    let mut lo = Vec::with_capacity(shape.len());
    let mut len = Vec::with_capacity(shape.len());
    for ((&b, &s), &n) in begin.iter().zip(shape).zip(extent) {
        #[allow(clippy::cast_possible_wrap)]
        let (l, h) = (b.max(0), (b + s as i64).min(n as i64));
        if l >= h {
            return Ok(ArrayD::default(IxDyn(&full)));
        }
        #[allow(clippy::cast_sign_loss)]
        {
            lo.push(l as u64);
            len.push((h - l) as u64);
        }
    }
    let data = read(&lo, &len)?;
    if len.iter().zip(shape).all(|(&l, &s)| l as usize == s) {
        return Ok(data);
    }
    let mut out = ArrayD::default(IxDyn(&full));
    let n_lead = lead.len();
    out.slice_each_axis_mut(|ax| {
        let k = ax.axis.index();
        if k < n_lead {
            Slice::from(..)
        } else {
            let s = k - n_lead;
            #[allow(clippy::cast_possible_wrap, clippy::cast_possible_truncation)]
            let from = (lo[s] as i64 - begin[s]) as isize;
            #[allow(clippy::cast_possible_wrap, clippy::cast_possible_truncation)]
            Slice::from(from..from + len[s] as isize)
        }
    })
    .assign(&data);
    Ok(out)
}

/// Slices `lo..lo+len` of the spatial axes of an in-memory array (leading axes whole).
fn slice_memory<T: Clone>(a: &ArrayD<T>, n_lead: usize, lo: &[u64], len: &[u64]) -> ArrayD<T> {
    #[allow(clippy::cast_possible_wrap, clippy::cast_possible_truncation)]
    a.slice_each_axis(|ax| {
        let k = ax.axis.index();
        if k < n_lead {
            Slice::from(..)
        } else {
            let (l, n) = (lo[k - n_lead] as isize, len[k - n_lead] as isize);
            Slice::from(l..l + n)
        }
    })
    .to_owned()
}

/// Drops a leading singleton channel axis of a label or mask array read.
fn squeeze_channel<T>(a: ArrayD<T>, meta: &ArrayMeta) -> ArrayD<T> {
    if meta.channel_axis {
        a.index_axis_move(ndarray::Axis(0), 0)
    } else {
        a
    }
}

impl Dataset {
    /// Opens raw, gt and mask of `cfg` for a network with `dims` spatial dimensions, checks
    /// that they fit together and resolves raw's normalisation.
    pub fn open(cfg: &DatasetConfig, dims: usize, opts: &OpenOptions) -> Result<Self> {
        let name = cfg.display_name();
        let raw = ZarrArray::open(&cfg.zarr, &cfg.raw, Some(dims))?;
        let gt = open_single_channel(cfg, &cfg.gt, dims)?;
        gt.check_label_dtype()?;
        let mask = cfg
            .mask
            .as_deref()
            .map(|m| open_single_channel(cfg, m, dims))
            .transpose()?;
        if !(cfg.weight.is_finite() && cfg.weight >= 0.0) {
            return Err(DataError::Dataset {
                dataset: name,
                message: format!("weight {} must be a finite number >= 0", cfg.weight),
            });
        }
        let gt_offset = grid_shift(&name, &raw, &gt, "gt")?;
        let mask_offset = match &mask {
            Some(m) => grid_shift(&name, &raw, m, "mask")?,
            None => vec![0; dims],
        };
        let overlaps = raw
            .meta()
            .spatial_shape()
            .iter()
            .zip(gt.meta().spatial_shape())
            .zip(&gt_offset)
            .all(|((&r, &g), &o)| {
                #[allow(clippy::cast_possible_wrap)]
                let (r, g) = (r as i64, g as i64);
                o < r && o + g > 0
            });
        if !overlaps {
            return Err(DataError::Dataset {
                dataset: name,
                message: format!(
                    "gt {:?} (shape {:?}, offset {:?}) does not overlap raw {:?} (shape {:?}, \
                     offset {:?}); check the `offset` attributes",
                    gt.path(),
                    gt.meta().spatial_shape(),
                    gt.meta().offset,
                    raw.path(),
                    raw.meta().spatial_shape(),
                    raw.meta().offset
                ),
            });
        }
        let normalizer = Normalizer::compute(&raw, cfg.normalize)?;
        let fits = |a: &ZarrArray, bytes_per: u64| {
            a.meta().num_elements().saturating_mul(bytes_per) <= opts.cache_bytes
        };
        let whole = |a: &ZarrArray| -> (Vec<u64>, Vec<u64>) {
            let s = a.meta().spatial_shape().to_vec();
            (vec![0; s.len()], s)
        };
        let raw_cache = if fits(&raw, 4) {
            let (b, s) = whole(&raw);
            let mut data = raw.read_f32(&b, &s)?;
            normalizer.apply(&mut data);
            Some(Arc::new(with_channel_axis(data, raw.meta())))
        } else {
            None
        };
        let gt_cache = if fits(&gt, 8) {
            let (b, s) = whole(&gt);
            Some(Arc::new(squeeze_channel(
                gt.read_labels(&b, &s)?,
                gt.meta(),
            )))
        } else {
            None
        };
        let mask_cache = match &mask {
            Some(m) if fits(m, 1) => {
                let (b, s) = whole(m);
                Some(Arc::new(squeeze_channel(m.read_mask(&b, &s)?, m.meta())))
            }
            _ => None,
        };
        tracing::debug!(
            dataset = %name,
            raw_cached = raw_cache.is_some(),
            gt_cached = gt_cache.is_some(),
            low = normalizer.low,
            high = normalizer.high,
            "opened dataset"
        );
        Ok(Self {
            name,
            weight: cfg.weight,
            raw,
            gt,
            mask,
            normalizer,
            gt_offset,
            mask_offset,
            raw_cache,
            gt_cache,
            mask_cache,
        })
    }

    /// The dataset's name (used in scores and best records).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Relative sampling weight.
    pub fn weight(&self) -> f64 {
        self.weight
    }

    /// The raw array.
    pub fn raw_array(&self) -> &ZarrArray {
        &self.raw
    }

    /// The ground-truth array.
    pub fn gt_array(&self) -> &ZarrArray {
        &self.gt
    }

    /// The mask array, if configured.
    pub fn mask_array(&self) -> Option<&ZarrArray> {
        self.mask.as_ref()
    }

    /// Number of spatial dimensions.
    pub fn dims(&self) -> usize {
        self.gt_offset.len()
    }

    /// Voxel size in world units (shared by raw, gt and mask).
    pub fn voxel_size(&self) -> &[f64] {
        &self.raw.meta().voxel_size
    }

    /// Number of raw channels.
    pub fn channels(&self) -> usize {
        #[allow(clippy::cast_possible_truncation)]
        let c = self.raw.meta().channels() as usize;
        c
    }

    /// Spatial shape of raw.
    pub fn raw_shape(&self) -> Vec<usize> {
        u64s(self.raw.meta().spatial_shape())
    }

    /// Spatial shape of gt.
    pub fn gt_shape(&self) -> Vec<usize> {
        u64s(self.gt.meta().spatial_shape())
    }

    /// Position of gt voxel 0 in raw voxel coordinates.
    pub fn gt_offset(&self) -> &[i64] {
        &self.gt_offset
    }

    /// The resolved raw normalisation (record it to freeze it with a run).
    pub fn normalizer(&self) -> Normalizer {
        self.normalizer
    }

    /// Normalised raw of `shape` voxels at `begin` (raw voxel coordinates), shaped
    /// `(channels, shape...)`; voxels outside raw are 0.
    pub fn read_raw(&self, begin: &[i64], shape: &[usize]) -> Result<ArrayD<f32>> {
        let extent = self.raw.meta().spatial_shape();
        let lead = [self.channels()];
        padded(&lead, extent, begin, shape, |lo, len| {
            match &self.raw_cache {
                Some(c) => Ok(slice_memory(c, 1, lo, len)),
                None => {
                    let mut data = self.raw.read_f32(lo, len)?;
                    self.normalizer.apply(&mut data);
                    Ok(with_channel_axis(data, self.raw.meta()))
                }
            }
        })
    }

    /// Labels of `shape` voxels at `begin` (raw voxel coordinates); 0 outside gt.
    pub fn read_gt(&self, begin: &[i64], shape: &[usize]) -> Result<ArrayD<u64>> {
        let local: Vec<i64> = begin
            .iter()
            .zip(&self.gt_offset)
            .map(|(b, o)| b - o)
            .collect();
        padded(
            &[],
            self.gt.meta().spatial_shape(),
            &local,
            shape,
            |lo, len| match &self.gt_cache {
                Some(c) => Ok(slice_memory(c, 0, lo, len)),
                None => Ok(squeeze_channel(
                    self.gt.read_labels(lo, len)?,
                    self.gt.meta(),
                )),
            },
        )
    }

    /// Where labels of `shape` voxels at `begin` (raw voxel coordinates) may be used: inside
    /// gt and, if configured, where the mask is non-zero.
    pub fn read_valid(&self, begin: &[i64], shape: &[usize]) -> Result<ArrayD<bool>> {
        let local: Vec<i64> = begin
            .iter()
            .zip(&self.gt_offset)
            .map(|(b, o)| b - o)
            .collect();
        let inside = padded(
            &[],
            self.gt.meta().spatial_shape(),
            &local,
            shape,
            |_, len| Ok(ArrayD::from_elem(IxDyn(&u64s(len)), true)),
        )?;
        let Some(mask) = &self.mask else {
            return Ok(inside);
        };
        let local: Vec<i64> = begin
            .iter()
            .zip(&self.mask_offset)
            .map(|(b, o)| b - o)
            .collect();
        let masked = padded(
            &[],
            mask.meta().spatial_shape(),
            &local,
            shape,
            |lo, len| match &self.mask_cache {
                Some(c) => Ok(slice_memory(c, 0, lo, len)),
                None => Ok(squeeze_channel(mask.read_mask(lo, len)?, mask.meta())),
            },
        )?;
        Ok(ndarray::Zip::from(&inside)
            .and(&masked)
            .map_collect(|&a, &b| a && b))
    }

    /// All of raw, normalised, shaped `(channels, spatial...)`.
    pub fn raw(&self) -> Result<ArrayD<f32>> {
        let shape = self.raw_shape();
        self.read_raw(&vec![0; shape.len()], &shape)
    }

    /// All of gt (its own extent), shaped `(spatial...)`.
    pub fn gt(&self) -> Result<ArrayD<u64>> {
        self.read_gt(&self.gt_offset, &self.gt_shape())
    }

    /// The mask over gt's extent (`None` without a mask array).
    pub fn mask(&self) -> Result<Option<ArrayD<bool>>> {
        if self.mask.is_none() {
            return Ok(None);
        }
        self.read_valid(&self.gt_offset, &self.gt_shape()).map(Some)
    }

    /// The container path.
    pub fn container(&self) -> &Path {
        self.raw.container()
    }
}

/// Adds a leading channel axis of size 1 if the array has none.
fn with_channel_axis(a: ArrayD<f32>, meta: &ArrayMeta) -> ArrayD<f32> {
    if meta.channel_axis {
        a
    } else {
        a.insert_axis(ndarray::Axis(0))
    }
}
