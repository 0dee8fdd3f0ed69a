//! Augmentations of one training sample: geometric ones (elastic, mirror, transpose) move
//! raw, labels and the valid mask together; intensity ones (scale/shift, gamma, noise) change
//! raw only. All randomness comes from the sample's RNG, so a sample is a pure function of it.
//!
//! Elastic deformation: a coarse control grid (spacing `elastic_spacing` voxels) over the
//! input block gets random displacements (normal, standard deviation `elastic_sigma`, clamped
//! to ±3σ) that are interpolated multilinearly to every voxel. Output voxel `p` takes the
//! value at source position `p + d(p)`: linear interpolation for raw, nearest neighbour for
//! labels and mask, with the same `d`, so they stay aligned. Sources may lie up to
//! `margin() = ceil(3σ)` voxels outside the block, so the caller reads regions grown by that
//! margin on every side.

use ndarray::{ArrayD, Axis, IxDyn};
use rand::{Rng, RngExt};

/// A standard normal sample (Box–Muller).
pub(crate) fn gaussian<R: Rng + ?Sized>(rng: &mut R) -> f64 {
    // 1 - U lies in (0, 1], so the logarithm is finite.
    let u1 = 1.0 - rng.random::<f64>();
    let u2 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Random flips: one coin per spatial axis.
pub(crate) fn draw_mirror<R: Rng + ?Sized>(rng: &mut R, dims: usize) -> Vec<bool> {
    (0..dims).map(|_| rng.random_bool(0.5)).collect()
}

/// A random permutation of the spatial axes that only exchanges axes whose input and output
/// sizes are both equal.
pub(crate) fn draw_transpose<R: Rng + ?Sized>(
    rng: &mut R,
    input: &[usize],
    output: &[usize],
) -> Vec<usize> {
    let dims = input.len();
    let mut perm: Vec<usize> = (0..dims).collect();
    let mut done = vec![false; dims];
    for k in 0..dims {
        if done[k] {
            continue;
        }
        let group: Vec<usize> = (k..dims)
            .filter(|&j| input[j] == input[k] && output[j] == output[k])
            .collect();
        let mut shuffled = group.clone();
        for i in (1..shuffled.len()).rev() {
            let j = rng.random_range(0..=i);
            shuffled.swap(i, j);
        }
        for (&slot, &axis) in group.iter().zip(&shuffled) {
            perm[slot] = axis;
            done[slot] = true;
        }
    }
    perm
}

/// Applies flips then the axis permutation to the spatial axes (after `lead` leading axes).
pub(crate) fn apply_geometry<T: Clone>(
    mut a: ArrayD<T>,
    lead: usize,
    mirror: &[bool],
    perm: &[usize],
) -> ArrayD<T> {
    for (k, &flip) in mirror.iter().enumerate() {
        if flip {
            a.invert_axis(Axis(lead + k));
        }
    }
    let identity = perm.iter().enumerate().all(|(i, &p)| i == p);
    if !identity {
        let full: Vec<usize> = (0..lead).chain(perm.iter().map(|&p| p + lead)).collect();
        a = a.permuted_axes(IxDyn(&full));
    }
    if a.is_standard_layout() {
        a
    } else {
        a.as_standard_layout().into_owned()
    }
}

/// A smooth random displacement field over an input block.
#[derive(Debug, Clone)]
pub(crate) struct ElasticField {
    spacing: f64,
    grid: Vec<usize>,
    /// Displacements of the control points, `dims` values per point, C order.
    ctrl: Vec<f64>,
    margin: usize,
}

impl ElasticField {
    /// Margin (voxels) by which source positions can leave the block for these parameters.
    pub(crate) fn margin_for(sigma: f64) -> usize {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let m = (3.0 * sigma.max(0.0)).ceil() as usize;
        m
    }

    /// Draws a field over a block of `shape` voxels.
    pub(crate) fn draw<R: Rng + ?Sized>(
        rng: &mut R,
        shape: &[usize],
        spacing: f64,
        sigma: f64,
    ) -> Self {
        let spacing = spacing.max(1.0);
        let sigma = sigma.max(0.0);
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
        let grid: Vec<usize> = shape
            .iter()
            .map(|&s| ((s.saturating_sub(1)) as f64 / spacing).floor() as usize + 2)
            .collect();
        let points: usize = grid.iter().product();
        let ctrl = (0..points * shape.len())
            .map(|_| (gaussian(rng) * sigma).clamp(-3.0 * sigma, 3.0 * sigma))
            .collect();
        Self {
            spacing,
            grid,
            ctrl,
            margin: Self::margin_for(sigma),
        }
    }

    /// See [`ElasticField::margin_for`].
    pub(crate) fn margin(&self) -> usize {
        self.margin
    }

    /// Displacement at block position `p`, written to `out` (one value per axis).
    fn at(&self, p: &[usize], out: &mut [f64]) {
        let dims = p.len();
        out.iter_mut().for_each(|v| *v = 0.0);
        let mut base = [0usize; 8];
        let mut frac = [0.0f64; 8];
        for k in 0..dims {
            #[allow(clippy::cast_precision_loss)]
            let t = p[k] as f64 / self.spacing;
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let i = (t.floor() as usize).min(self.grid[k] - 2);
            #[allow(clippy::cast_precision_loss)]
            let f = t - i as f64;
            base[k] = i;
            frac[k] = f;
        }
        for corner in 0..(1usize << dims) {
            let mut w = 1.0;
            let mut idx = 0;
            for k in 0..dims {
                let hi = (corner >> k) & 1 == 1;
                w *= if hi { frac[k] } else { 1.0 - frac[k] };
                idx = idx * self.grid[k] + base[k] + usize::from(hi);
            }
            if w == 0.0 {
                continue;
            }
            for (k, o) in out.iter_mut().enumerate() {
                *o += w * self.ctrl[idx * dims + k];
            }
        }
    }
}

/// Calls `f` with every multi-index of `shape` in C order.
pub(crate) fn for_each_index(shape: &[usize], mut f: impl FnMut(&[usize])) {
    if shape.contains(&0) {
        return;
    }
    let mut idx = vec![0usize; shape.len()];
    loop {
        f(&idx);
        let mut k = shape.len();
        loop {
            if k == 0 {
                return;
            }
            k -= 1;
            idx[k] += 1;
            if idx[k] < shape[k] {
                break;
            }
            idx[k] = 0;
        }
    }
}

/// Warps raw: `src` is `(channels, shape + 2 margin)` read around the input block, the result
/// is `(channels, shape)`, linearly interpolated at `p + d(p)`.
pub(crate) fn warp_linear(src: &ArrayD<f32>, field: &ElasticField, shape: &[usize]) -> ArrayD<f32> {
    let dims = shape.len();
    let channels = src.shape()[0];
    let region = &src.shape()[1..];
    let src = src.as_standard_layout();
    let data = src.as_slice().unwrap_or(&[]);
    let plane: usize = region.iter().product();
    let n: usize = shape.iter().product();
    let mut out = vec![0.0f32; channels * n];
    let mut d = vec![0.0; dims];
    let mut acc = vec![0.0f64; channels];
    let mut flat = 0;
    let m = field.margin();
    for_each_index(shape, |p| {
        field.at(p, &mut d);
        let mut base = [0usize; 8];
        let mut frac = [0.0f64; 8];
        for k in 0..dims {
            #[allow(clippy::cast_precision_loss)]
            let q = ((p[k] + m) as f64 + d[k]).max(0.0);
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let i = (q.floor() as usize).min(region[k] - 1);
            #[allow(clippy::cast_precision_loss)]
            let f = (q - i as f64).clamp(0.0, 1.0);
            base[k] = i;
            frac[k] = f;
        }
        acc.iter_mut().for_each(|a| *a = 0.0);
        for corner in 0..(1usize << dims) {
            let mut w = 1.0;
            let mut idx = 0;
            for k in 0..dims {
                let hi = (corner >> k) & 1 == 1;
                w *= if hi { frac[k] } else { 1.0 - frac[k] };
                idx = idx * region[k] + (base[k] + usize::from(hi)).min(region[k] - 1);
            }
            if w == 0.0 {
                continue;
            }
            for (c, a) in acc.iter_mut().enumerate() {
                *a += w * f64::from(data[c * plane + idx]);
            }
        }
        for (c, a) in acc.iter().enumerate() {
            #[allow(clippy::cast_possible_truncation)]
            {
                out[c * n + flat] = *a as f32;
            }
        }
        flat += 1;
    });
    let mut full = vec![channels];
    full.extend_from_slice(shape);
    ArrayD::from_shape_vec(IxDyn(&full), out).unwrap_or_else(|_| ArrayD::zeros(IxDyn(&full)))
}

/// Warps labels or mask: `src` is `shape + 2 margin` read around the output block, which
/// starts `context` voxels into the input block; nearest neighbour at `p + d(p + context)`.
pub(crate) fn warp_nearest<T: Copy + Default>(
    src: &ArrayD<T>,
    field: &ElasticField,
    shape: &[usize],
    context: &[usize],
) -> ArrayD<T> {
    let dims = shape.len();
    let region = src.shape().to_vec();
    let src = src.as_standard_layout();
    let data = src.as_slice().unwrap_or(&[]);
    let mut out = Vec::with_capacity(shape.iter().product());
    let mut d = vec![0.0; dims];
    let mut pin = vec![0usize; dims];
    let m = field.margin();
    for_each_index(shape, |p| {
        for k in 0..dims {
            pin[k] = p[k] + context[k];
        }
        field.at(&pin, &mut d);
        let mut idx = 0;
        for k in 0..dims {
            #[allow(clippy::cast_precision_loss)]
            let q = ((p[k] + m) as f64 + d[k]).round().max(0.0);
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let i = (q as usize).min(region[k] - 1);
            idx = idx * region[k] + i;
        }
        out.push(data.get(idx).copied().unwrap_or_default());
    });
    ArrayD::from_shape_vec(IxDyn(shape), out).unwrap_or_else(|_| ArrayD::default(IxDyn(shape)))
}

/// `v * scale + shift`.
pub(crate) fn intensity(raw: &mut ArrayD<f32>, scale: f64, shift: f64) {
    #[allow(clippy::cast_possible_truncation)]
    let (scale, shift) = (scale as f32, shift as f32);
    raw.mapv_inplace(|v| v * scale + shift);
}

/// `clamp(v, 0, 1) ^ gamma`.
pub(crate) fn gamma(raw: &mut ArrayD<f32>, gamma: f64) {
    #[allow(clippy::cast_possible_truncation)]
    let g = gamma as f32;
    raw.mapv_inplace(|v| v.clamp(0.0, 1.0).powf(g));
}

/// Adds normal noise of standard deviation `std`.
pub(crate) fn noise<R: Rng + ?Sized>(raw: &mut ArrayD<f32>, rng: &mut R, std: f64) {
    if std <= 0.0 {
        return;
    }
    #[allow(clippy::cast_possible_truncation)]
    raw.iter_mut().for_each(|v| *v += (gaussian(rng) * std) as f32);
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn transpose_only_swaps_equal_axes() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut seen_swap = false;
        for _ in 0..50 {
            let p = draw_transpose(&mut rng, &[8, 16, 16], &[4, 12, 12]);
            assert_eq!(p[0], 0);
            let mut sorted = p.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, vec![0, 1, 2]);
            seen_swap |= p == vec![0, 2, 1];
            // Same input sizes but different output sizes must not be exchanged.
            assert_eq!(draw_transpose(&mut rng, &[16, 16], &[12, 10]), vec![0, 1]);
        }
        assert!(seen_swap);
    }

    #[test]
    fn zero_sigma_elastic_is_identity() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let field = ElasticField::draw(&mut rng, &[5, 6], 4.0, 0.0);
        assert_eq!(field.margin(), 0);
        let src = ArrayD::from_shape_fn(IxDyn(&[1, 5, 6]), |i| (i[1] * 10 + i[2]) as f32);
        assert_eq!(warp_linear(&src, &field, &[5, 6]), src);
        let labels = ArrayD::from_shape_fn(IxDyn(&[3, 4]), |i| (i[0] * 10 + i[1]) as u64);
        let expect = ArrayD::from_shape_fn(IxDyn(&[3, 4]), |i| (i[0] * 10 + i[1]) as u64);
        assert_eq!(warp_nearest(&labels, &field, &[3, 4], &[1, 1]), expect);
    }

    #[test]
    fn elastic_displacements_are_bounded_and_smooth() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let field = ElasticField::draw(&mut rng, &[40, 40], 8.0, 2.0);
        assert_eq!(field.margin(), 6);
        let mut d = [0.0; 2];
        let mut prev = [0.0; 2];
        let mut max = 0.0f64;
        for x in 0..40 {
            field.at(&[20, x], &mut d);
            max = max.max(d[0].abs()).max(d[1].abs());
            assert!(d.iter().all(|v| v.abs() <= 6.0));
            if x > 0 {
                // Neighbouring voxels move by at most 2 * 3σ / spacing relative to each other.
                assert!((d[0] - prev[0]).abs() <= 1.5 + 1e-9 && (d[1] - prev[1]).abs() <= 1.5 + 1e-9);
            }
            prev = d;
        }
        assert!(max > 0.5, "field should move something, max {max}");
    }

    #[test]
    fn gaussian_has_unit_moments() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let n = 20000;
        let xs: Vec<f64> = (0..n).map(|_| gaussian(&mut rng)).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.03 && (var - 1.0).abs() < 0.05, "{mean} {var}");
    }
}
