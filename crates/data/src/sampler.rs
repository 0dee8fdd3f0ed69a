//! Random training batches, each a pure function of `(seed, iteration)`.
//!
//! Sample `s` of iteration `i` uses its own ChaCha8 RNG seeded with
//! [`sample_seed`]`(seed, i, s)`; it draws, in this order: the dataset (by weight), the input
//! block position, the mirror flags, the axis permutation, the elastic field, then the
//! intensity augmentations in the configured order. So a resumed run sees exactly the batches
//! of an uninterrupted one, whatever the cache settings.
//!
//! Geometry: the network maps an input block of `input_shape` voxels to an output block of
//! `output_shape` voxels centred in it (`context = (input - output) / 2` per side, so
//! `input - output` must be even). Positions are drawn uniformly such that the input block lies
//! inside raw and the output block inside gt (both grown by the elastic margin when that fits).
//! Along an axis where that is impossible, positions only keep the output block inside gt and
//! raw is zero-padded (raw smaller than the input block); if gt itself is smaller than the
//! output block, the output block is centred on gt and labels outside it are 0 with `mask`
//! false. With a mask array, up to [`MASK_TRIES`] positions are drawn until the output block
//! contains a masked-in voxel.

use dacapo_core::config::{Augment, AugmentParams, TrainerConfig};
use ndarray::{ArrayD, Axis, IxDyn};
use rand::{Rng, RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::augment::{self, ElasticField};
use crate::dataset::Dataset;
use crate::error::{DataError, Result};

/// Positions drawn per sample until the output block contains a masked-in voxel.
pub const MASK_TRIES: usize = 10;

/// What the sampler produces: shapes, batch size, seed and augmentations.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplerSpec {
    /// Spatial shape of the network input block.
    pub input_shape: Vec<usize>,
    /// Spatial shape of the network output block (equal to input for same padding).
    pub output_shape: Vec<usize>,
    /// Samples per batch.
    pub batch_size: usize,
    /// Seed of the run.
    pub seed: u64,
    /// Augmentations (geometric ones always precede intensity ones).
    pub augment: Vec<Augment>,
    /// Augmentation parameters.
    pub augment_params: AugmentParams,
}

impl SamplerSpec {
    /// The spec for a trainer config, run seed and the network's input/output shapes.
    pub fn from_trainer(
        trainer: &TrainerConfig,
        seed: u64,
        input_shape: Vec<usize>,
        output_shape: Vec<usize>,
    ) -> Self {
        Self {
            input_shape,
            output_shape,
            batch_size: trainer.batch_size,
            seed,
            augment: trainer.augment.clone(),
            augment_params: trainer.augment_params.clone(),
        }
    }
}

/// One training batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Normalised, augmented raw, shaped `(batch, channels, input_shape...)`.
    pub raw: ArrayD<f32>,
    /// Instance labels of the output blocks, shaped `(batch, output_shape...)`.
    pub labels: ArrayD<u64>,
    /// Where labels may be used (`(batch, output_shape...)`); `None` when every label voxel is
    /// valid, which holds for every batch of a sampler whose datasets have no mask and no gt
    /// smaller than the output block.
    pub mask: Option<ArrayD<bool>>,
    /// Where each sample came from.
    pub samples: Vec<SampleInfo>,
}

/// Provenance of one sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleInfo {
    /// Index of the dataset in the sampler's list.
    pub dataset: usize,
    /// Input block origin in raw voxel coordinates (before augmentation).
    pub origin: Vec<i64>,
    /// Flipped spatial axes (all false without `mirror`).
    pub mirror: Vec<bool>,
    /// Axis permutation applied after flipping (identity without `transpose`).
    pub transpose: Vec<usize>,
}

#[derive(Debug, Clone)]
struct Placement {
    /// Inclusive range of input block origins per axis.
    ranges: Vec<(i64, i64)>,
    /// Whether labels of this dataset can be padded (outside gt).
    labels_padded: bool,
}

/// Draws training batches from weighted datasets.
#[derive(Debug, Clone)]
pub struct BatchSampler {
    datasets: Vec<Dataset>,
    spec: SamplerSpec,
    context: Vec<usize>,
    margin: usize,
    cumulative: Vec<f64>,
    placements: Vec<Placement>,
    has_mask: bool,
    channels: usize,
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Seed of sample `index` of batch `iteration` of a run with `seed`.
pub fn sample_seed(seed: u64, iteration: u64, index: u64) -> u64 {
    splitmix64(splitmix64(splitmix64(seed) ^ iteration) ^ index)
}

#[allow(clippy::cast_possible_wrap)]
fn placement(d: &Dataset, spec: &SamplerSpec, context: &[usize], margin: usize) -> Placement {
    let raw = d.raw_shape();
    let gt = d.gt_shape();
    let mut ranges = Vec::with_capacity(raw.len());
    let mut labels_padded = false;
    for k in 0..raw.len() {
        let (i, o, c) = (
            spec.input_shape[k] as i64,
            spec.output_shape[k] as i64,
            context[k] as i64,
        );
        let (r, g, go) = (raw[k] as i64, gt[k] as i64, d.gt_offset()[k]);
        let m = margin as i64;
        // Input block origins that keep raw (grown by `mr`) and the output block (grown by
        // `ml`) inside their arrays.
        let raw_range = |mr: i64| (mr, r - i - mr);
        let gt_range = |ml: i64| (go - c + ml, go + g - o - c - ml);
        let both = |a: (i64, i64), b: (i64, i64)| (a.0.max(b.0), a.1.min(b.1));
        let candidates = [
            (both(raw_range(m), gt_range(m)), false),
            (both(raw_range(0), gt_range(m)), false),
            (gt_range(m), false),
            (both(raw_range(0), gt_range(0)), m > 0),
            (gt_range(0), m > 0),
        ];
        let chosen = match candidates.iter().find(|((lo, hi), _)| lo <= hi) {
            Some(&(range, padded)) => {
                labels_padded |= padded;
                range
            }
            None => {
                labels_padded = true;
                let a = go + (g - o).div_euclid(2) - c;
                (a, a)
            }
        };
        ranges.push(chosen);
    }
    Placement {
        ranges,
        labels_padded,
    }
}

impl BatchSampler {
    /// Checks the spec against the datasets and prepares sampling.
    pub fn new(datasets: Vec<Dataset>, spec: SamplerSpec) -> Result<Self> {
        let bad = |m: String| Err(DataError::Sampler(m));
        let dims = spec.input_shape.len();
        if !(1..=3).contains(&dims) || spec.output_shape.len() != dims {
            return bad(format!(
                "input shape {:?} and output shape {:?} need the same 1 to 3 spatial axes",
                spec.input_shape, spec.output_shape
            ));
        }
        if spec.output_shape.contains(&0)
            || spec
                .input_shape
                .iter()
                .zip(&spec.output_shape)
                .any(|(i, o)| o > i || (i - o) % 2 != 0)
        {
            return bad(format!(
                "output shape {:?} must be non-empty, fit in input shape {:?} and differ from \
                 it by an even number of voxels per axis (the output is centred)",
                spec.output_shape, spec.input_shape
            ));
        }
        if spec.batch_size == 0 {
            return bad("batch size must be at least 1".into());
        }
        if datasets.is_empty() {
            return bad("no training datasets".into());
        }
        let channels = datasets[0].channels();
        for d in &datasets {
            if d.dims() != dims {
                return Err(DataError::Dataset {
                    dataset: d.name().to_owned(),
                    message: format!(
                        "has {} spatial axes but the network input shape {:?} has {dims}",
                        d.dims(),
                        spec.input_shape
                    ),
                });
            }
            if d.channels() != channels {
                return Err(DataError::Dataset {
                    dataset: d.name().to_owned(),
                    message: format!(
                        "raw has {} channels but dataset {:?} has {channels}; all training \
                         datasets need the same number of channels",
                        d.channels(),
                        datasets[0].name()
                    ),
                });
            }
        }
        let mut cumulative = Vec::with_capacity(datasets.len());
        let mut total = 0.0;
        for d in &datasets {
            total += d.weight();
            cumulative.push(total);
        }
        if !(total > 0.0 && total.is_finite()) {
            return bad("dataset weights must be finite and not all zero".into());
        }
        let context: Vec<usize> = spec
            .input_shape
            .iter()
            .zip(&spec.output_shape)
            .map(|(i, o)| (i - o) / 2)
            .collect();
        let margin = if spec.augment.contains(&Augment::Elastic) {
            ElasticField::margin_for(spec.augment_params.elastic_sigma)
        } else {
            0
        };
        let placements: Vec<Placement> = datasets
            .iter()
            .map(|d| placement(d, &spec, &context, margin))
            .collect();
        for (d, p) in datasets.iter().zip(&placements) {
            let raw_fits = d
                .raw_shape()
                .iter()
                .zip(&spec.input_shape)
                .all(|(r, i)| r >= i);
            if !raw_fits || p.labels_padded {
                tracing::warn!(
                    dataset = d.name(),
                    raw_shape = ?d.raw_shape(),
                    gt_shape = ?d.gt_shape(),
                    input_shape = ?spec.input_shape,
                    output_shape = ?spec.output_shape,
                    "dataset is smaller than a training block: raw is zero-padded and labels \
                     outside gt are masked out"
                );
            }
        }
        let has_mask = datasets.iter().any(|d| d.mask_array().is_some())
            || placements.iter().any(|p| p.labels_padded);
        Ok(Self {
            datasets,
            spec,
            context,
            margin,
            cumulative,
            placements,
            has_mask,
            channels,
        })
    }

    /// The datasets, in sampling-index order.
    pub fn datasets(&self) -> &[Dataset] {
        &self.datasets
    }

    /// The spec.
    pub fn spec(&self) -> &SamplerSpec {
        &self.spec
    }

    /// Number of raw channels.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// Whether batches carry a mask.
    pub fn has_mask(&self) -> bool {
        self.has_mask
    }

    /// The batch of `iteration`: a pure function of `(seed, iteration)`.
    pub fn batch(&self, iteration: u64) -> Result<Batch> {
        let mut raws = Vec::with_capacity(self.spec.batch_size);
        let mut labels = Vec::with_capacity(self.spec.batch_size);
        let mut masks = Vec::with_capacity(self.spec.batch_size);
        let mut samples = Vec::with_capacity(self.spec.batch_size);
        for s in 0..self.spec.batch_size {
            let mut rng =
                ChaCha8Rng::seed_from_u64(sample_seed(self.spec.seed, iteration, s as u64));
            let (r, l, m, info) = self.sample(&mut rng)?;
            raws.push(r);
            labels.push(l);
            masks.push(m);
            samples.push(info);
        }
        let stack =
            |err: ndarray::ShapeError| DataError::Sampler(format!("stacking a batch: {err}"));
        let raw = ndarray::stack(Axis(0), &raws.iter().map(|a| a.view()).collect::<Vec<_>>())
            .map_err(stack)?;
        let labels = ndarray::stack(
            Axis(0),
            &labels.iter().map(|a| a.view()).collect::<Vec<_>>(),
        )
        .map_err(stack)?;
        let mask = if self.has_mask {
            Some(
                ndarray::stack(Axis(0), &masks.iter().map(|a| a.view()).collect::<Vec<_>>())
                    .map_err(stack)?,
            )
        } else {
            None
        };
        Ok(Batch {
            raw,
            labels,
            mask,
            samples,
        })
    }

    fn choose_dataset<R: Rng + ?Sized>(&self, rng: &mut R) -> usize {
        let total = self.cumulative.last().copied().unwrap_or(0.0);
        let u = rng.random::<f64>() * total;
        self.cumulative
            .iter()
            .position(|&c| u < c)
            .unwrap_or(self.cumulative.len() - 1)
    }

    /// One sample: a dataset, a place in it, mirror/transpose, the patches (elastically
    /// warped if asked) and the intensity augmentations, drawn from `rng` in this order.
    #[allow(clippy::type_complexity)]
    fn sample<R: Rng + ?Sized>(
        &self,
        rng: &mut R,
    ) -> Result<(ArrayD<f32>, ArrayD<u64>, ArrayD<bool>, SampleInfo)> {
        let di = self.choose_dataset(rng);
        let origin = self.draw_origin(rng, di)?;
        let dims = self.spec.input_shape.len();
        let augments = &self.spec.augment;
        let mirror = if augments.contains(&Augment::Mirror) {
            augment::draw_mirror(rng, dims)
        } else {
            vec![false; dims]
        };
        let transpose = if augments.contains(&Augment::Transpose) {
            augment::draw_transpose(rng, &self.spec.input_shape, &self.spec.output_shape)
        } else {
            (0..dims).collect()
        };
        let (raw, labels, valid) = if augments.contains(&Augment::Elastic) {
            self.read_warped(rng, di, &origin)?
        } else {
            self.read_plain(di, &origin)?
        };
        let mut raw = augment::apply_geometry(raw, 1, &mirror, &transpose);
        let labels = augment::apply_geometry(labels, 0, &mirror, &transpose);
        let valid = augment::apply_geometry(valid, 0, &mirror, &transpose);
        self.augment_intensities(rng, &mut raw);
        Ok((
            raw,
            labels,
            valid,
            SampleInfo {
                dataset: di,
                origin,
                mirror,
                transpose,
            },
        ))
    }

    /// Where the input patch of dataset `di` starts; with a mask, a place whose output patch
    /// has a valid voxel (up to `MASK_TRIES` draws).
    fn draw_origin<R: Rng + ?Sized>(&self, rng: &mut R, di: usize) -> Result<Vec<i64>> {
        let draw = |rng: &mut R| -> Vec<i64> {
            self.placements[di]
                .ranges
                .iter()
                .map(|&(lo, hi)| rng.random_range(lo..=hi))
                .collect()
        };
        let d = &self.datasets[di];
        let mut origin = draw(rng);
        if d.mask_array().is_some() {
            for _ in 1..MASK_TRIES {
                if d.read_valid(&self.output_begin(&origin), &self.spec.output_shape)?
                    .iter()
                    .any(|&v| v)
                {
                    break;
                }
                origin = draw(rng);
            }
        }
        Ok(origin)
    }

    /// Where the output patch starts for an input patch at `origin`.
    #[allow(clippy::cast_possible_wrap)]
    fn output_begin(&self, origin: &[i64]) -> Vec<i64> {
        origin
            .iter()
            .zip(&self.context)
            .map(|(a, c)| a + *c as i64)
            .collect()
    }

    /// The valid-voxel patch of dataset `di` at output position `begin` with `shape`: the
    /// mask where there is one, all true otherwise.
    fn read_valid(&self, di: usize, begin: &[i64], shape: &[usize]) -> Result<ArrayD<bool>> {
        if self.has_mask {
            self.datasets[di].read_valid(begin, shape)
        } else {
            Ok(ArrayD::from_elem(IxDyn(shape), true))
        }
    }

    /// Raw, labels and valid patches of dataset `di` at `origin`, as stored.
    #[allow(clippy::type_complexity)]
    fn read_plain(
        &self,
        di: usize,
        origin: &[i64],
    ) -> Result<(ArrayD<f32>, ArrayD<u64>, ArrayD<bool>)> {
        let d = &self.datasets[di];
        let ob = self.output_begin(origin);
        let valid = self.read_valid(di, &ob, &self.spec.output_shape)?;
        Ok((
            d.read_raw(origin, &self.spec.input_shape)?,
            d.read_gt(&ob, &self.spec.output_shape)?,
            valid,
        ))
    }

    /// Raw, labels and valid patches of dataset `di` at `origin` under a random elastic
    /// deformation (read with a margin, then warped).
    #[allow(clippy::type_complexity)]
    fn read_warped<R: Rng + ?Sized>(
        &self,
        rng: &mut R,
        di: usize,
        origin: &[i64],
    ) -> Result<(ArrayD<f32>, ArrayD<u64>, ArrayD<bool>)> {
        let params = &self.spec.augment_params;
        let field = ElasticField::draw(
            rng,
            &self.spec.input_shape,
            params.elastic_spacing,
            params.elastic_sigma,
        );
        #[allow(clippy::cast_possible_wrap)]
        let m = self.margin as i64;
        let grow = |begin: &[i64], shape: &[usize]| -> (Vec<i64>, Vec<usize>) {
            (
                begin.iter().map(|b| b - m).collect(),
                shape.iter().map(|s| s + 2 * self.margin).collect(),
            )
        };
        let d = &self.datasets[di];
        let (rb, rs) = grow(origin, &self.spec.input_shape);
        let (lb, ls) = grow(&self.output_begin(origin), &self.spec.output_shape);
        let warp_output = |src: &ArrayD<_>| {
            augment::warp_nearest(
                src,
                &field,
                &self.spec.output_shape,
                &self.spec.input_shape,
                &self.context,
            )
        };
        let raw = augment::warp_linear(&d.read_raw(&rb, &rs)?, &field, &self.spec.input_shape);
        let labels = warp_output(&d.read_gt(&lb, &ls)?);
        let valid = if self.has_mask {
            augment::warp_nearest(
                &d.read_valid(&lb, &ls)?,
                &field,
                &self.spec.output_shape,
                &self.spec.input_shape,
                &self.context,
            )
        } else {
            ArrayD::from_elem(IxDyn(&self.spec.output_shape), true)
        };
        Ok((raw, labels, valid))
    }

    /// The intensity, gamma and noise augmentations of the spec, in its order.
    fn augment_intensities<R: Rng + ?Sized>(&self, rng: &mut R, raw: &mut ArrayD<f32>) {
        let params = &self.spec.augment_params;
        for a in &self.spec.augment {
            match a {
                Augment::Intensity => {
                    let [s0, s1] = params.intensity_scale;
                    let [t0, t1] = params.intensity_shift;
                    let scale = uniform(rng, s0, s1);
                    let shift = uniform(rng, t0, t1);
                    augment::intensity(raw, scale, shift);
                }
                Augment::Gamma => {
                    let [g0, g1] = params.gamma;
                    // Log-uniform, so gamma and 1/gamma are equally likely for symmetric ranges.
                    let g = if g0 > 0.0 && g1 > 0.0 {
                        uniform(rng, g0.ln(), g1.ln()).exp()
                    } else {
                        uniform(rng, g0, g1).max(f64::MIN_POSITIVE)
                    };
                    augment::gamma(raw, g);
                }
                Augment::Noise => augment::noise(raw, rng, params.noise_std),
                Augment::Mirror | Augment::Transpose | Augment::Elastic => {}
            }
        }
    }
}

/// Uniform in `[a, b)` (either order; `a` when equal).
fn uniform<R: Rng + ?Sized>(rng: &mut R, a: f64, b: f64) -> f64 {
    a + (b - a) * rng.random::<f64>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampler_can_run_on_a_prefetch_thread() {
        fn check<T: Send + Sync>() {}
        check::<BatchSampler>();
        check::<Batch>();
    }

    #[test]
    fn sample_seeds_differ() {
        let a = sample_seed(42, 0, 0);
        assert_ne!(a, sample_seed(42, 1, 0));
        assert_ne!(a, sample_seed(42, 0, 1));
        assert_ne!(a, sample_seed(43, 0, 0));
        assert_eq!(a, sample_seed(42, 0, 0));
        // Swapping iteration and index must not collide.
        assert_ne!(sample_seed(42, 1, 2), sample_seed(42, 2, 1));
    }
}
