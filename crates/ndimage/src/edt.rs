//! Exact Euclidean distance transform (Felzenszwalb & Huttenlocher's separable lower-envelope
//! algorithm), any number of dimensions, anisotropic voxel sizes.

use ndarray::{ArrayD, ArrayViewD, Axis};
use rayon::prelude::*;

/// Euclidean distance of every `true` voxel to the nearest `false` voxel (0 at `false` voxels).
///
/// `sampling` is the voxel size per axis (e.g. nm), so distances are in those units. If `mask`
/// has no `false` voxel at all, every voxel is `f64::INFINITY` (there is nothing to measure
/// to). An empty array returns an empty array.
///
/// # Panics
/// If `sampling.len() != mask.ndim()` or a sampling value is not finite and positive: these are
/// programming errors of the caller, not data errors.
pub fn distance_transform_edt(mask: ArrayViewD<bool>, sampling: &[f64]) -> ArrayD<f64> {
    assert_eq!(
        sampling.len(),
        mask.ndim(),
        "distance_transform_edt: sampling has {} values but the mask has {} axes",
        sampling.len(),
        mask.ndim()
    );
    assert!(
        sampling.iter().all(|s| s.is_finite() && *s > 0.0),
        "distance_transform_edt: sampling must be finite and positive, got {sampling:?}"
    );
    let mut dist = squared_edt(mask, sampling);
    dist.par_mapv_inplace_sqrt();
    dist
}

/// Squared distances; `f64::INFINITY` where no background is reachable.
fn squared_edt(mask: ArrayViewD<bool>, sampling: &[f64]) -> ArrayD<f64> {
    let mut f = mask.map(|&m| if m { f64::INFINITY } else { 0.0 });
    if f.is_empty() {
        return f;
    }
    let ndim = f.ndim();
    for (axis, &spacing) in sampling.iter().enumerate() {
        let n = f.len_of(Axis(axis));
        // Move `axis` last so each line along it is one contiguous chunk of `data`.
        let mut perm: Vec<usize> = (0..ndim).filter(|&a| a != axis).collect();
        perm.push(axis);
        let mut view = f.view_mut().permuted_axes(perm);
        let mut data: Vec<f64> = view.iter().copied().collect();
        let w2 = spacing * spacing;
        // Several lines per rayon task so short lines do not drown in scheduling overhead.
        let lines_per_task = (4096 / n).max(1);
        data.par_chunks_mut(n * lines_per_task).for_each_init(
            || Envelope::with_capacity(n),
            |env, chunk| {
                for line in chunk.chunks_mut(n) {
                    env.transform(line, w2);
                }
            },
        );
        for (dst, src) in view.iter_mut().zip(&data) {
            *dst = *src;
        }
    }
    f
}

/// Scratch buffers of the 1-D lower-envelope transform.
struct Envelope {
    /// Positions of the parabolas in the envelope.
    v: Vec<usize>,
    /// Boundaries between consecutive envelope parabolas.
    z: Vec<f64>,
    /// Copy of the input line.
    f: Vec<f64>,
}

impl Envelope {
    fn with_capacity(n: usize) -> Self {
        Self {
            v: Vec::with_capacity(n),
            z: Vec::with_capacity(n + 1),
            f: Vec::with_capacity(n),
        }
    }

    /// Replaces `line[p]` by `min_q w2 (p - q)^2 + line[q]` (infinite entries never win).
    fn transform(&mut self, line: &mut [f64], w2: f64) {
        self.f.clear();
        self.f.extend_from_slice(line);
        self.v.clear();
        self.z.clear();
        let f = &self.f;
        // Vertex height of each parabola in the rewritten form w2 q^2 + f(q), so intersections
        // only need one division.
        let h = |q: usize| f[q] + w2 * (q * q) as f64;
        for (q, fq) in f.iter().enumerate() {
            if !fq.is_finite() {
                continue;
            }
            loop {
                let Some(&vk) = self.v.last() else {
                    self.v.push(q);
                    self.z.push(f64::NEG_INFINITY);
                    break;
                };
                let s = (h(q) - h(vk)) / (2.0 * w2 * (q - vk) as f64);
                // `z` has one entry per parabola: the left boundary of its interval.
                let zk = self.z[self.z.len() - 1];
                if s <= zk {
                    self.v.pop();
                    self.z.pop();
                } else {
                    self.v.push(q);
                    self.z.push(s);
                    break;
                }
            }
        }
        if self.v.is_empty() {
            // No finite value on this line: everything stays infinite.
            return;
        }
        let mut k = 0;
        for (p, out) in line.iter_mut().enumerate() {
            let pf = p as f64;
            while k + 1 < self.v.len() && self.z[k + 1] < pf {
                k += 1;
            }
            let d = pf - self.v[k] as f64;
            *out = w2 * d * d + f[self.v[k]];
        }
    }
}

/// Element-wise square root, in parallel over contiguous data.
trait SqrtInPlace {
    fn par_mapv_inplace_sqrt(&mut self);
}

impl SqrtInPlace for ArrayD<f64> {
    fn par_mapv_inplace_sqrt(&mut self) {
        match self.as_slice_memory_order_mut() {
            Some(s) => s.par_iter_mut().for_each(|x| *x = x.sqrt()),
            None => self.mapv_inplace(f64::sqrt),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{ArrayD, Dimension, IxDyn, array};
    use proptest::prelude::*;

    fn brute_force(mask: &ArrayD<bool>, sampling: &[f64]) -> ArrayD<f64> {
        let background: Vec<Vec<usize>> = mask
            .indexed_iter()
            .filter(|(_, m)| !**m)
            .map(|(i, _)| i.slice().to_vec())
            .collect();
        ArrayD::from_shape_fn(mask.raw_dim(), |idx| {
            if !mask[&idx] {
                return 0.0;
            }
            background
                .iter()
                .map(|q| {
                    q.iter()
                        .enumerate()
                        .map(|(a, &qa)| {
                            let d = (qa as f64 - idx[a] as f64) * sampling[a];
                            d * d
                        })
                        .sum::<f64>()
                        .sqrt()
                })
                .fold(f64::INFINITY, f64::min)
        })
    }

    #[test]
    fn hand_values_2d() {
        let mask = array![
            [false, false, false, false, false],
            [false, true, true, true, false],
            [false, true, true, true, false],
            [false, true, true, true, false],
            [false, false, false, false, false],
        ]
        .into_dyn();
        let d = distance_transform_edt(mask.view(), &[1.0, 1.0]);
        assert_eq!(d[[0, 0]], 0.0);
        assert_eq!(d[[1, 1]], 1.0);
        assert_eq!(d[[1, 2]], 1.0);
        assert_eq!(d[[2, 2]], 2.0);
        // Anisotropic: rows 2 units apart, columns 1: the centre is 2 columns (2.0) or 2 rows
        // (4.0) from background.
        let d = distance_transform_edt(mask.view(), &[2.0, 1.0]);
        assert_eq!(d[[2, 2]], 2.0);
        assert_eq!(d[[1, 2]], 2.0);
        assert_eq!(d[[2, 1]], 1.0);
    }

    #[test]
    fn diagonal_distance() {
        // Single background voxel in a corner: distance is the Euclidean norm of the index.
        let mut mask = ArrayD::from_elem(IxDyn(&[3, 4]), true);
        mask[[0, 0]] = false;
        let d = distance_transform_edt(mask.view(), &[1.0, 1.0]);
        assert!((d[[2, 3]] - 13f64.sqrt()).abs() < 1e-12);
        assert!((d[[1, 1]] - 2f64.sqrt()).abs() < 1e-12);
    }

    #[test]
    fn all_foreground_is_infinite_and_all_background_zero() {
        let mask = ArrayD::from_elem(IxDyn(&[2, 3, 2]), true);
        let d = distance_transform_edt(mask.view(), &[1.0, 1.0, 1.0]);
        assert!(d.iter().all(|x| x.is_infinite()));
        let mask = ArrayD::from_elem(IxDyn(&[2, 3]), false);
        let d = distance_transform_edt(mask.view(), &[1.0, 1.0]);
        assert!(d.iter().all(|x| *x == 0.0));
    }

    #[test]
    fn empty_and_one_dimensional() {
        let mask = ArrayD::from_elem(IxDyn(&[0, 3]), true);
        assert_eq!(distance_transform_edt(mask.view(), &[1.0, 1.0]).len(), 0);
        let mask = array![true, false, true, true, true].into_dyn();
        let d = distance_transform_edt(mask.view(), &[0.5]);
        assert_eq!(d.as_slice().unwrap(), &[0.5, 0.0, 0.5, 1.0, 1.5]);
    }

    #[test]
    fn non_standard_layout_input() {
        let mask = array![[true, true, false], [true, true, true]].into_dyn();
        let t = mask.t();
        let d = distance_transform_edt(t.view(), &[1.0, 1.0]);
        let expected = brute_force(&t.to_owned(), &[1.0, 1.0]);
        assert_eq!(d, expected);
    }

    #[test]
    #[should_panic(expected = "sampling has 1 values")]
    fn wrong_sampling_length_panics() {
        let mask = ArrayD::from_elem(IxDyn(&[2, 2]), true);
        let _ = distance_transform_edt(mask.view(), &[1.0]);
    }

    fn mask_strategy(max_dims: usize) -> impl Strategy<Value = (ArrayD<bool>, Vec<f64>)> {
        proptest::collection::vec(1usize..7, 1..=max_dims).prop_flat_map(|shape| {
            let len: usize = shape.iter().product();
            let ndim = shape.len();
            (
                proptest::collection::vec(proptest::bool::weighted(0.8), len),
                proptest::collection::vec(0.25f64..4.0, ndim),
            )
                .prop_map(move |(data, sampling)| {
                    (
                        ArrayD::from_shape_vec(IxDyn(&shape), data).unwrap(),
                        sampling,
                    )
                })
        })
    }

    proptest! {
        #[test]
        fn matches_brute_force((mask, sampling) in mask_strategy(3)) {
            let fast = distance_transform_edt(mask.view(), &sampling);
            let slow = brute_force(&mask, &sampling);
            for (a, b) in fast.iter().zip(slow.iter()) {
                if b.is_infinite() {
                    prop_assert!(a.is_infinite());
                } else {
                    prop_assert!((a - b).abs() <= 1e-9 * b.max(1.0), "{a} vs {b}");
                }
            }
        }
    }
}
