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

/// Two independent standard normal samples (Marsaglia's polar method).
pub(crate) fn gaussian_pair<R: Rng + ?Sized>(rng: &mut R) -> (f64, f64) {
    loop {
        let u = 2.0 * rng.random::<f64>() - 1.0;
        let v = 2.0 * rng.random::<f64>() - 1.0;
        let s = u * u + v * v;
        if s > 0.0 && s < 1.0 {
            let k = (-2.0 * s.ln() / s).sqrt();
            return (u * k, v * k);
        }
    }
}

/// A standard normal sample.
pub(crate) fn gaussian<R: Rng + ?Sized>(rng: &mut R) -> f64 {
    gaussian_pair(rng).0
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
    /// Displacement along each axis at every voxel of the block (block shape, C order).
    dense: Vec<ArrayD<f64>>,
    margin: usize,
}

/// Linear interpolation of `a` along `axis` from control points `spacing` apart to `len`
/// voxels.
fn upsample(a: &ArrayD<f64>, axis: usize, len: usize, spacing: f64) -> ArrayD<f64> {
    let mut shape = a.shape().to_vec();
    let points = shape[axis];
    shape[axis] = len;
    let mut out = ArrayD::zeros(IxDyn(&shape));
    for s in 0..len {
        #[allow(clippy::cast_precision_loss)]
        let t = s as f64 / spacing;
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let i = (t.floor() as usize).min(points - 2);
        #[allow(clippy::cast_precision_loss)]
        let f = t - i as f64;
        let lo = a.index_axis(Axis(axis), i);
        let hi = a.index_axis(Axis(axis), i + 1);
        ndarray::Zip::from(out.index_axis_mut(Axis(axis), s))
            .and(&lo)
            .and(&hi)
            .for_each(|o, &l, &h| *o = l + (h - l) * f);
    }
    out
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
        let dims = shape.len();
        let spacing = spacing.max(1.0);
        let sigma = sigma.max(0.0);
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let grid: Vec<usize> = shape
            .iter()
            .map(|&s| ((s.saturating_sub(1)) as f64 / spacing).floor() as usize + 2)
            .collect();
        let points: usize = grid.iter().product();
        // Drawn point by point, one value per axis each.
        let ctrl: Vec<f64> = (0..points * dims)
            .map(|_| (gaussian(rng) * sigma).clamp(-3.0 * sigma, 3.0 * sigma))
            .collect();
        let dense = (0..dims)
            .map(|k| {
                let component: Vec<f64> = ctrl.iter().skip(k).step_by(dims).copied().collect();
                let mut a = ArrayD::from_shape_vec(IxDyn(&grid), component)
                    .unwrap_or_else(|_| ArrayD::zeros(IxDyn(&grid)));
                for (axis, &len) in shape.iter().enumerate() {
                    a = upsample(&a, axis, len, spacing);
                }
                a.as_standard_layout().into_owned()
            })
            .collect();
        Self {
            dense,
            margin: Self::margin_for(sigma),
        }
    }

    /// See [`ElasticField::margin_for`].
    pub(crate) fn margin(&self) -> usize {
        self.margin
    }

    /// Displacement along `axis` at the voxel with flat (C order) index `flat` of the block.
    fn at(&self, axis: usize, flat: usize) -> f64 {
        self.dense[axis].as_slice().map_or(0.0, |s| s[flat])
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
    let channels = src.shape()[0];
    let mut full = vec![channels];
    full.extend_from_slice(shape);
    let src = src.as_standard_layout();
    let data = src.as_slice().unwrap_or(&[]);
    let region = &src.shape()[1..];
    let out = match shape.len() {
        1 => warp_linear_n::<1>(data, channels, region, field, shape),
        2 => warp_linear_n::<2>(data, channels, region, field, shape),
        _ => warp_linear_n::<3>(data, channels, region, field, shape),
    };
    ArrayD::from_shape_vec(IxDyn(&full), out).unwrap_or_else(|_| ArrayD::zeros(IxDyn(&full)))
}

/// [`warp_linear`] for `D` spatial axes (the sampler allows 1 to 3).
fn warp_linear_n<const D: usize>(
    data: &[f32],
    channels: usize,
    region: &[usize],
    field: &ElasticField,
    shape: &[usize],
) -> Vec<f32> {
    let n: usize = shape.iter().product();
    let plane: usize = region.iter().product();
    let mut out = vec![0.0f32; channels * n];
    if n == 0 || plane == 0 || region.len() != D || shape.len() != D {
        return out;
    }
    let mut stride = [0usize; D];
    let mut acc = 1;
    for k in (0..D).rev() {
        stride[k] = acc;
        acc *= region[k];
    }
    // Offset of each corner of the interpolation cell; a one-voxel axis has no upper corner.
    let corners = 1usize << D;
    let mut offset = [0usize; 8];
    for (corner, o) in offset.iter_mut().enumerate().take(corners) {
        *o = (0..D)
            .filter(|&k| (corner >> k) & 1 == 1 && region[k] > 1)
            .map(|k| stride[k])
            .sum();
    }
    let disp: Vec<&[f64]> = (0..D)
        .map(|k| field.dense[k].as_slice().unwrap_or(&[]))
        .collect();
    #[allow(clippy::cast_precision_loss)]
    let m = field.margin() as f64;
    let mut p = [0usize; D];
    let mut weight = [0.0f64; 8];
    for flat in 0..n {
        let mut base = 0;
        let mut frac = [0.0f64; D];
        for k in 0..D {
            #[allow(clippy::cast_precision_loss)]
            let q = (p[k] as f64 + m + disp[k].get(flat).copied().unwrap_or(0.0)).max(0.0);
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let mut i = q.floor() as usize;
            #[allow(clippy::cast_precision_loss)]
            let mut f = q - i as f64;
            // At the upper edge use the cell below with weight 1 on its upper corner.
            if i + 1 >= region[k] {
                if region[k] > 1 {
                    i = region[k] - 2;
                    f = 1.0;
                } else {
                    i = 0;
                    f = 0.0;
                }
            }
            base += i * stride[k];
            frac[k] = f;
        }
        for (corner, w) in weight.iter_mut().enumerate().take(corners) {
            *w = (0..D)
                .map(|k| {
                    if (corner >> k) & 1 == 1 {
                        frac[k]
                    } else {
                        1.0 - frac[k]
                    }
                })
                .product();
        }
        for c in 0..channels {
            let cell = &data[c * plane + base..];
            let v: f64 = (0..corners)
                .map(|corner| weight[corner] * f64::from(cell[offset[corner]]))
                .sum();
            #[allow(clippy::cast_possible_truncation)]
            {
                out[c * n + flat] = v as f32;
            }
        }
        for k in (0..D).rev() {
            p[k] += 1;
            if p[k] < shape[k] {
                break;
            }
            p[k] = 0;
        }
    }
    out
}

/// Warps labels or mask: `src` is `shape + 2 margin` read around the output block, which
/// starts `context` voxels into the input block of `input` voxels; nearest neighbour at
/// `p + d(p + context)`.
pub(crate) fn warp_nearest<T: Copy + Default>(
    src: &ArrayD<T>,
    field: &ElasticField,
    shape: &[usize],
    input: &[usize],
    context: &[usize],
) -> ArrayD<T> {
    let dims = shape.len();
    let region = src.shape().to_vec();
    let src = src.as_standard_layout();
    let data = src.as_slice().unwrap_or(&[]);
    let mut out = Vec::with_capacity(shape.iter().product());
    let m = field.margin();
    for_each_index(shape, |p| {
        let pin = p
            .iter()
            .zip(context)
            .zip(input)
            .fold(0, |acc, ((x, c), s)| acc * s + x + c);
        let mut idx = 0;
        for k in 0..dims {
            #[allow(clippy::cast_precision_loss)]
            let q = ((p[k] + m) as f64 + field.at(k, pin)).round().max(0.0);
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
    let mut spare: Option<f64> = None;
    raw.iter_mut().for_each(|v| {
        let z = spare.take().unwrap_or_else(|| {
            let (a, b) = gaussian_pair(rng);
            spare = Some(b);
            a
        });
        #[allow(clippy::cast_possible_truncation)]
        {
            *v += (z * std) as f32;
        }
    });
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
        assert_eq!(
            warp_nearest(&labels, &field, &[3, 4], &[5, 6], &[1, 1]),
            expect
        );
    }

    #[test]
    fn elastic_displacements_are_bounded_and_smooth() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let field = ElasticField::draw(&mut rng, &[40, 40], 8.0, 2.0);
        assert_eq!(field.margin(), 6);
        let mut prev = [0.0; 2];
        let mut max = 0.0f64;
        for x in 0..40 {
            let d = [field.at(0, 20 * 40 + x), field.at(1, 20 * 40 + x)];
            max = max.max(d[0].abs()).max(d[1].abs());
            assert!(d.iter().all(|v| v.abs() <= 6.0));
            if x > 0 {
                // Neighbouring voxels move by at most 2 * 3σ / spacing relative to each other.
                assert!(
                    (d[0] - prev[0]).abs() <= 1.5 + 1e-9 && (d[1] - prev[1]).abs() <= 1.5 + 1e-9
                );
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
        assert!(
            mean.abs() < 0.03 && (var - 1.0).abs() < 0.05,
            "{mean} {var}"
        );
    }
}
