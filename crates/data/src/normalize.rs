//! Raw intensity normalisation: a linear map, fixed once per array, that sends `low` to 0 and
//! `high` to 1.
//!
//! `percentile` uses the 1st and 99.8th percentiles (numpy's default linear interpolation).
//! Arrays of up to [`PERCENTILE_SAMPLE`] elements use every value; larger arrays use
//! [`PERCENTILE_BLOCKS`] blocks at positions drawn from a fixed seed, [`PERCENTILE_SAMPLE`]
//! elements in total, so the result is fast and the same on every call and machine.

use dacapo_core::config::Normalize;
use ndarray::ArrayD;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::array::ZarrArray;
use crate::error::Result;

/// Lower percentile mapped to 0.
pub const PERCENTILE_LOW: f64 = 1.0;
/// Upper percentile mapped to 1.
pub const PERCENTILE_HIGH: f64 = 99.8;
/// Most elements read to estimate percentiles.
pub const PERCENTILE_SAMPLE: u64 = 1 << 22;
/// Number of blocks read to estimate the percentiles of arrays above [`PERCENTILE_SAMPLE`].
pub const PERCENTILE_BLOCKS: u64 = 32;
/// Seed of the block positions (a constant: the estimate is part of the data, not the run).
const PERCENTILE_SEED: u64 = 0x0DAC_A905_EED5;

/// The linear map `v -> (v - low) / (high - low)` (`v - low` when `high == low`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Normalizer {
    /// Value mapped to 0.
    pub low: f64,
    /// Value mapped to 1.
    pub high: f64,
}

impl Normalizer {
    /// The identity map.
    pub const IDENTITY: Normalizer = Normalizer {
        low: 0.0,
        high: 1.0,
    };

    /// Computes the map of `array` for the configured normalisation.
    pub fn compute(array: &ZarrArray, normalize: Normalize) -> Result<Self> {
        match normalize {
            Normalize::None => Ok(Self::IDENTITY),
            Normalize::Range { min, max } => {
                if !(min.is_finite() && max.is_finite() && max > min) {
                    return Err(array.err(format!(
                        "normalize range {{ min = {min}, max = {max} }} needs finite min < max"
                    )));
                }
                Ok(Self {
                    low: min,
                    high: max,
                })
            }
            Normalize::Percentile => {
                let mut values = percentile_sample(array)?;
                if values.is_empty() {
                    return Err(array.err(
                        "has no finite values to compute percentiles from; use normalize = \
                         { kind = \"range\", min, max }"
                            .into(),
                    ));
                }
                let low = percentile(&mut values, PERCENTILE_LOW);
                let high = percentile(&mut values, PERCENTILE_HIGH);
                if high <= low {
                    tracing::warn!(
                        array = array.path(),
                        container = %array.container().display(),
                        "intensity percentiles are equal ({low}); raw is only shifted to 0"
                    );
                }
                Ok(Self { low, high })
            }
        }
    }

    /// The factor applied after subtracting `low`.
    pub fn scale(&self) -> f64 {
        if self.high > self.low {
            1.0 / (self.high - self.low)
        } else {
            1.0
        }
    }

    /// Normalises `a` in place.
    pub fn apply(&self, a: &mut ArrayD<f32>) {
        if *self == Self::IDENTITY {
            return;
        }
        let (low, scale) = (self.low, self.scale());
        #[allow(clippy::cast_possible_truncation)]
        a.mapv_inplace(|v| ((f64::from(v) - low) * scale) as f32);
    }
}

/// The values percentiles are computed from: all of a small array, else fixed random blocks.
fn percentile_sample(array: &ZarrArray) -> Result<Vec<f32>> {
    let meta = array.meta();
    let spatial: Vec<u64> = meta.spatial_shape().to_vec();
    if meta.num_elements() <= PERCENTILE_SAMPLE {
        let all = array.read_f32(&vec![0; spatial.len()], &spatial)?;
        return Ok(all.into_iter().filter(|v| v.is_finite()).collect());
    }
    let per_block = PERCENTILE_SAMPLE / PERCENTILE_BLOCKS / meta.channels().max(1);
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]
    let edge = ((per_block.max(1) as f64)
        .powf(1.0 / spatial.len() as f64)
        .floor() as u64)
        .max(1);
    let block: Vec<u64> = spatial.iter().map(|&s| s.min(edge)).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(PERCENTILE_SEED);
    let mut values = Vec::new();
    for _ in 0..PERCENTILE_BLOCKS {
        let begin: Vec<u64> = spatial
            .iter()
            .zip(&block)
            .map(|(&s, &b)| rng.random_range(0..=s - b))
            .collect();
        let data = array.read_f32(&begin, &block)?;
        values.extend(data.into_iter().filter(|v| v.is_finite()));
    }
    Ok(values)
}

/// The `p`-th percentile (0..=100) of `values` with numpy's default linear interpolation;
/// reorders `values`. `values` must not be empty.
pub fn percentile(values: &mut [f32], p: f64) -> f64 {
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    #[allow(clippy::cast_precision_loss)]
    let rank = (p / 100.0).clamp(0.0, 1.0) * (n - 1) as f64;
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let lo = rank.floor() as usize;
    let frac = rank - rank.floor();
    let (_, &mut a, rest) = values.select_nth_unstable_by(lo, f32::total_cmp);
    let a = f64::from(a);
    if frac == 0.0 || rest.is_empty() {
        return a;
    }
    // The next order statistic is the minimum of the elements above position `lo`.
    let b = f64::from(rest.iter().copied().fold(f32::INFINITY, f32::min));
    a + (b - a) * frac
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_matches_numpy_linear() {
        // numpy.percentile(np.arange(1001), [1, 99.8]) == [10.0, 998.0]
        let mut v: Vec<f32> = (0..=1000).rev().map(|i| i as f32).collect();
        assert_eq!(percentile(&mut v, 1.0), 10.0);
        assert_eq!(percentile(&mut v, 99.8), 998.0);
        // numpy.percentile([0, 10, 20, 30], 50) == 15.0; 1st percentile == 0.3
        let mut v = vec![30.0, 0.0, 20.0, 10.0];
        assert!((percentile(&mut v, 50.0) - 15.0).abs() < 1e-9);
        assert!((percentile(&mut v, 1.0) - 0.3).abs() < 1e-6);
        let mut one = vec![7.0];
        assert_eq!(percentile(&mut one, 99.8), 7.0);
    }

    proptest::proptest! {
        #[test]
        fn percentile_matches_sorted_reference(
            mut values in proptest::collection::vec(-1000.0f32..1000.0, 1..200),
            p in 0.0f64..=100.0,
        ) {
            let mut sorted = values.clone();
            sorted.sort_by(f32::total_cmp);
            let rank = p / 100.0 * (sorted.len() - 1) as f64;
            let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
            let (a, b) = (f64::from(sorted[lo]), f64::from(sorted[hi]));
            let expect = a + (b - a) * (rank - rank.floor());
            let got = percentile(&mut values, p);
            proptest::prop_assert!((got - expect).abs() <= 1e-9 * expect.abs().max(1.0), "{} vs {}", got, expect);
        }
    }

    #[test]
    fn normalizer_maps_low_high_to_unit() {
        let n = Normalizer {
            low: 10.0,
            high: 110.0,
        };
        let mut a = ArrayD::from_shape_vec(vec![3], vec![10.0, 60.0, 110.0]).unwrap();
        n.apply(&mut a);
        assert_eq!(a.as_slice().unwrap(), &[0.0, 0.5, 1.0]);
        let flat = Normalizer {
            low: 5.0,
            high: 5.0,
        };
        let mut b = ArrayD::from_shape_vec(vec![2], vec![5.0, 6.0]).unwrap();
        flat.apply(&mut b);
        assert_eq!(b.as_slice().unwrap(), &[0.0, 1.0]);
    }
}
