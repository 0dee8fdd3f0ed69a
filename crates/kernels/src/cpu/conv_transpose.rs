//! Transposed convolution whose kernel equals its stride (a U-Net's upsampling), with bias and
//! ReLU fused: every input voxel feeds its own `factor`-sized output block, so the layer is
//! one GEMM per image followed by a pixel shuffle, and its gradients are the reverse.

use rayon::prelude::*;

use super::raw::{MatMut, MatRef, matmul_parallel};
use super::{add_bias_relu, channel_sums};

/// The geometry of one upsampling: `(batch, cin, d, h, w)` input, `(cin, cout, fd, fh, fw)`
/// weight (PyTorch's layout), output `(batch, cout, d·fd, h·fh, w·fw)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpShape {
    /// Images in the batch.
    pub batch: usize,
    /// Input channels.
    pub cin: usize,
    /// Output channels.
    pub cout: usize,
    /// Input spatial size `(d, h, w)`.
    pub input: [usize; 3],
    /// Kernel size = stride per axis.
    pub factor: [usize; 3],
}

impl UpShape {
    /// Output spatial size.
    pub fn output(&self) -> [usize; 3] {
        [0, 1, 2].map(|a| self.input[a] * self.factor[a])
    }

    fn in_pixels(&self) -> usize {
        self.input.iter().product()
    }

    fn taps(&self) -> usize {
        self.factor.iter().product()
    }

    /// Visits every (tap row, output row) pair of one output channel: `f(tap, in_row,
    /// out_row)` where the tap's values for input row `in_row` (width `w`) land at
    /// `out_row * ow + x * fw + tap % fw`.
    fn for_each_row(&self, mut f: impl FnMut(usize, usize, usize)) {
        let [d, h, _] = self.input;
        let [fd, fh, fw] = self.factor;
        let oh = h * fh;
        for z in 0..d {
            for a in 0..fd {
                for y in 0..h {
                    for b in 0..fh {
                        let out_row = (z * fd + a) * oh + y * fh + b;
                        for c in 0..fw {
                            f((a * fh + b) * fw + c, z * h + y, out_row);
                        }
                    }
                }
            }
        }
    }
}

/// `y = conv_transpose(x, w) + bias`, then ReLU if `relu`.
///
/// # Panics
/// If a slice does not match the shape.
pub fn forward(s: &UpShape, x: &[f32], w: &[f32], bias: Option<&[f32]>, relu: bool) -> Vec<f32> {
    let (p, taps) = (s.in_pixels(), s.taps());
    let cf = s.cout * taps;
    assert_eq!(x.len(), s.batch * s.cin * p, "upsampling input size");
    assert_eq!(w.len(), s.cin * cf, "upsampling weight size");
    // Per image, (cout·taps) × pixels = wᵀ × x.
    let mut taps_out = vec![0.0f32; s.batch * cf * p];
    for (n, dst) in taps_out.chunks_mut(cf * p).enumerate() {
        matmul_parallel(
            MatMut::dense(dst, cf, p),
            MatRef::new(w, 0, [cf, s.cin], [1, cf]),
            MatRef::new(x, n * s.cin * p, [s.cin, p], [p, 1]),
            false,
        );
    }
    let [_, _, ow] = s.output();
    let w_in = s.input[2];
    let fw = s.factor[2];
    let mut y = vec![0.0f32; s.batch * s.cout * p * taps];
    y.par_chunks_mut(p * taps)
        .zip(taps_out.par_chunks(taps * p))
        .enumerate()
        .for_each(|(nc, (plane, src))| {
            s.for_each_row(|tap, in_row, out_row| {
                let from = &src[tap * p + in_row * w_in..][..w_in];
                let to = &mut plane[out_row * ow + tap % fw..];
                for (x, v) in from.iter().enumerate() {
                    to[x * fw] = *v;
                }
            });
            add_bias_relu(plane, bias.map_or(0.0, |b| b[nc % s.cout]), relu);
        });
    y
}

/// Gradients of [`forward`] for the output gradient `dy` (before ReLU): `(dx, dw, dbias)`;
/// `dx` only if `need_dx`.
pub fn backward(
    s: &UpShape,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    need_dx: bool,
) -> (Option<Vec<f32>>, Vec<f32>, Vec<f32>) {
    let (p, taps) = (s.in_pixels(), s.taps());
    let cf = s.cout * taps;
    assert_eq!(
        dy.len(),
        s.batch * s.cout * p * taps,
        "upsampling gradient size"
    );
    // Un-shuffle dy into (cout·taps) × pixels per image, the layout of the forward GEMM.
    let [_, _, ow] = s.output();
    let w_in = s.input[2];
    let fw = s.factor[2];
    let mut grad_taps = vec![0.0f32; s.batch * cf * p];
    grad_taps
        .par_chunks_mut(taps * p)
        .zip(dy.par_chunks(p * taps))
        .for_each(|(dst, plane)| {
            s.for_each_row(|tap, in_row, out_row| {
                let to = &mut dst[tap * p + in_row * w_in..][..w_in];
                let from = &plane[out_row * ow + tap % fw..];
                for (x, v) in to.iter_mut().enumerate() {
                    *v = from[x * fw];
                }
            });
        });
    let dx = need_dx.then(|| {
        let mut dx = vec![0.0f32; s.batch * s.cin * p];
        for (n, dst) in dx.chunks_mut(s.cin * p).enumerate() {
            matmul_parallel(
                MatMut::dense(dst, s.cin, p),
                MatRef::dense(w, s.cin, cf),
                MatRef::new(&grad_taps, n * cf * p, [cf, p], [p, 1]),
                false,
            );
        }
        dx
    });
    let mut dw = vec![0.0f32; s.cin * cf];
    for n in 0..s.batch {
        matmul_parallel(
            MatMut::dense(&mut dw, s.cin, cf),
            MatRef::new(x, n * s.cin * p, [s.cin, p], [p, 1]),
            MatRef::new(&grad_taps, n * cf * p, [p, cf], [1, p]),
            n > 0,
        );
    }
    (dx, dw, channel_sums(dy, s.batch, s.cout))
}
