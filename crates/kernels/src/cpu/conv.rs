//! Stride-1 convolution on `f32` slices: forward (bias and ReLU fused), input gradient and
//! weight gradient, for 2D and 3D alike (2D is 3D with one plane).
//!
//! Each output image is cut into tiles of whole output rows. A tile's patches (im2col, copied
//! a contiguous input row at a time) fit in the L2 cache and go through one single-threaded
//! GEMM; tiles run in parallel. Tiling depends only on the shapes, never on the thread count,
//! and every reduction runs in a fixed order, so results are bit-identical for any number of
//! threads.

use std::cell::RefCell;
use std::ops::Range;

use rayon::prelude::*;

use super::raw::{MatMut, MatRef, matmul, tiles};
use super::{add_bias_relu, channel_sums};

/// Patch-matrix floats per tile: about 256 KiB, well inside the 1–2 MiB L2 of current cores.
const TILE_FLOATS: usize = 1 << 16;

/// Weight-gradient partial sums: a fixed number so the summation order never changes.
const WGRAD_CHUNKS: usize = 16;

/// The geometry of one convolution: `(batch, cin, d, h, w)` input, `(cout, cin, kd, kh, kw)`
/// weight, zero padding per axis, stride and dilation 1. 2D uses `d = kd = 1`, `pad[0] = 0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvShape {
    /// Images in the batch.
    pub batch: usize,
    /// Input channels.
    pub cin: usize,
    /// Output channels.
    pub cout: usize,
    /// Input spatial size `(d, h, w)`.
    pub input: [usize; 3],
    /// Kernel size `(kd, kh, kw)`.
    pub kernel: [usize; 3],
    /// Zero padding on both sides of each axis.
    pub pad: [usize; 3],
}

impl ConvShape {
    /// Output spatial size, or `None` if the kernel does not fit the padded input.
    pub fn output(&self) -> Option<[usize; 3]> {
        let mut out = [0; 3];
        for (a, o) in out.iter_mut().enumerate() {
            *o = (self.input[a] + 2 * self.pad[a]).checked_sub(self.kernel[a])? + 1;
        }
        Some(out)
    }

    /// Whether these kernels compute this convolution: a kernel that fits, padding smaller
    /// than the kernel (so the input gradient is again a convolution) and no empty axis.
    pub fn supported(&self) -> bool {
        let sizes_ok = self.output().is_some_and(|o| o.iter().all(|&s| s > 0));
        let pad_ok = (0..3).all(|a| self.pad[a] < self.kernel[a]);
        sizes_ok && pad_ok && self.cin > 0 && self.cout > 0
    }

    fn out(&self) -> [usize; 3] {
        self.output()
            .unwrap_or_else(|| unreachable!("callers check ConvShape::supported"))
    }

    /// Rows of the patch matrix: `cin * kd * kh * kw`.
    fn k_len(&self) -> usize {
        self.cin * self.kernel.iter().product::<usize>()
    }

    fn in_pixels(&self) -> usize {
        self.input.iter().product()
    }

    fn out_pixels(&self) -> usize {
        self.out().iter().product()
    }

    /// A 1×1(×1) kernel without padding: the input itself is the patch matrix.
    fn pointwise(&self) -> bool {
        self.kernel == [1, 1, 1] && self.pad == [0, 0, 0]
    }

    /// `(image, output pixel range)` of every tile. Tiles hold a multiple of 16 pixels (but
    /// the last of an image) so that GEMM reads the patches in place instead of repacking.
    fn tiles(&self) -> Vec<(usize, Range<usize>)> {
        let pixels = self.out_pixels();
        let per_tile = (TILE_FLOATS / self.k_len()).max(64) / 16 * 16;
        (0..self.batch)
            .flat_map(|n| {
                (0..pixels)
                    .step_by(per_tile)
                    .map(move |p| (n, p..(p + per_tile).min(pixels)))
            })
            .collect()
    }

    /// The shape of the input gradient as a convolution of the output gradient.
    fn transposed(&self) -> ConvShape {
        let mut pad = [0; 3];
        for (a, p) in pad.iter_mut().enumerate() {
            *p = self.kernel[a] - 1 - self.pad[a];
        }
        ConvShape {
            batch: self.batch,
            cin: self.cout,
            cout: self.cin,
            input: self.out(),
            kernel: self.kernel,
            pad,
        }
    }
}

thread_local! {
    /// Each worker thread's patch buffer, reused across tiles and calls.
    static PATCHES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's patch buffer resized to `len`.
fn with_patches<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    PATCHES.with(|cell| {
        let mut buf = cell.borrow_mut();
        if buf.len() < len {
            buf.resize(len, 0.0);
        }
        f(&mut buf[..len])
    })
}

/// Fills `cols` (`k_len × pixels.len()`, row-major) with the patches of output pixels
/// `pixels` of one image `x` (`cin × input pixels`), a contiguous run of input row at a time.
fn im2col(s: &ConvShape, x: &[f32], pixels: &Range<usize>, cols: &mut [f32]) {
    let [id, ih, iw] = s.input;
    let [kd, kh, kw] = s.kernel;
    let [pd, ph, pw] = s.pad;
    let [_, oh, ow] = s.out();
    let width = pixels.len();
    let rows = pixels.start / ow..pixels.end.div_ceil(ow);
    let mut k = 0;
    for ci in 0..s.cin {
        let plane = &x[ci * id * ih * iw..(ci + 1) * id * ih * iw];
        for dz in 0..kd {
            for dy in 0..kh {
                for dx in 0..kw {
                    let dst_row = &mut cols[k * width..(k + 1) * width];
                    // Output x reads input x + dx - pw: valid for x in lo..hi.
                    let lo = pw.saturating_sub(dx).min(ow);
                    let hi = (iw + pw).saturating_sub(dx).clamp(lo, ow);
                    for r in rows.clone() {
                        // The part of output row r inside the tile: x in xa..xb.
                        let xa = pixels.start.max(r * ow) - r * ow;
                        let xb = pixels.end.min((r + 1) * ow) - r * ow;
                        let dst =
                            &mut dst_row[r * ow + xa - pixels.start..r * ow + xb - pixels.start];
                        let (z, y) = (r / oh, r % oh);
                        let (iz, iy) = ((z + dz).wrapping_sub(pd), (y + dy).wrapping_sub(ph));
                        let (a, b) = (lo.clamp(xa, xb), hi.clamp(xa, xb));
                        if iz >= id || iy >= ih || a == b {
                            dst.fill(0.0);
                            continue;
                        }
                        let src = &plane[(iz * ih + iy) * iw..(iz * ih + iy + 1) * iw];
                        dst[..a - xa].fill(0.0);
                        dst[a - xa..b - xa].copy_from_slice(&src[a + dx - pw..b + dx - pw]);
                        dst[b - xa..].fill(0.0);
                    }
                    k += 1;
                }
            }
        }
    }
}

/// The patch matrix of one tile (`k_len × tile pixels`), borrowed from `x` for pointwise
/// kernels and built in this thread's buffer otherwise, handed to `f`.
fn with_tile_patches<R>(
    s: &ConvShape,
    x: &[f32],
    image: usize,
    pixels: &Range<usize>,
    f: impl FnOnce(MatRef<'_>) -> R,
) -> R {
    let in_image = s.cin * s.in_pixels();
    let image_x = &x[image * in_image..(image + 1) * in_image];
    if s.pointwise() {
        let ip = s.in_pixels();
        return f(MatRef::new(
            image_x,
            pixels.start,
            [s.cin, pixels.len()],
            [ip, 1],
        ));
    }
    let k_len = s.k_len();
    with_patches(k_len * pixels.len(), |cols| {
        im2col(s, image_x, pixels, cols);
        f(MatRef::dense(cols, k_len, pixels.len()))
    })
}

/// `y = conv(x, w) + bias`, then ReLU if `relu`; `x` is `(batch, cin, input)`, `w` is
/// `(cout, cin, kernel)`, the result `(batch, cout, output)`.
///
/// # Panics
/// If the shape is not [`ConvShape::supported`] or a slice does not match it.
pub fn forward(s: &ConvShape, x: &[f32], w: &[f32], bias: Option<&[f32]>, relu: bool) -> Vec<f32> {
    assert!(s.supported(), "unsupported convolution {s:?}");
    assert_eq!(x.len(), s.batch * s.cin * s.in_pixels(), "conv input size");
    assert_eq!(w.len(), s.cout * s.k_len(), "conv weight size");
    let op = s.out_pixels();
    let mut y = vec![0.0f32; s.batch * s.cout * op];
    let ranges = s.tiles();
    let mut out_tiles = tiles(&mut y, [s.batch, s.cout, op], &ranges);
    let weight = MatRef::dense(w, s.cout, s.k_len());
    out_tiles
        .par_iter_mut()
        .zip(ranges.par_iter())
        .for_each(|(tile, (image, pixels))| {
            with_tile_patches(s, x, *image, pixels, |cols| {
                matmul(tile.mat(), weight, cols, false);
            });
            for c in 0..s.cout {
                add_bias_relu(tile.channel(c), bias.map_or(0.0, |b| b[c]), relu);
            }
        });
    y
}

/// Gradient of the input of [`forward`] for the output gradient `dy` (before ReLU): the
/// convolution of `dy`, padded by `kernel - 1 - pad`, with the flipped, transposed weight.
pub fn input_grad(s: &ConvShape, w: &[f32], dy: &[f32]) -> Vec<f32> {
    assert!(s.supported(), "unsupported convolution {s:?}");
    let kp: usize = s.kernel.iter().product();
    let mut flipped = vec![0.0f32; w.len()];
    for co in 0..s.cout {
        for ci in 0..s.cin {
            let src = &w[(co * s.cin + ci) * kp..(co * s.cin + ci + 1) * kp];
            let dst = &mut flipped[(ci * s.cout + co) * kp..(ci * s.cout + co + 1) * kp];
            for (d, v) in dst.iter_mut().zip(src.iter().rev()) {
                *d = *v;
            }
        }
    }
    forward(&s.transposed(), dy, &flipped, None, false)
}

/// Gradient of the weight of [`forward`] (`cout × cin × kernel`) for the output gradient
/// `dy` (before ReLU).
pub fn weight_grad(s: &ConvShape, x: &[f32], dy: &[f32]) -> Vec<f32> {
    assert!(s.supported(), "unsupported convolution {s:?}");
    assert_eq!(
        dy.len(),
        s.batch * s.cout * s.out_pixels(),
        "conv output gradient size"
    );
    let (k_len, op) = (s.k_len(), s.out_pixels());
    let ranges = s.tiles();
    let per_chunk = ranges.len().div_ceil(WGRAD_CHUNKS).max(1);
    let partials: Vec<Vec<f32>> = ranges
        .par_chunks(per_chunk)
        .map(|chunk| {
            // Accumulated as dWᵀ (k_len × cout, cout contiguous) so that GEMM reads the patches
            // in place and packs only the small output-gradient tile.
            let mut acc = vec![0.0f32; s.cout * k_len];
            for (i, (image, pixels)) in chunk.iter().enumerate() {
                let grad = MatRef::new(
                    dy,
                    image * s.cout * op + pixels.start,
                    [s.cout, pixels.len()],
                    [op, 1],
                );
                with_tile_patches(s, x, *image, pixels, |cols| {
                    let dst = MatMut::new(&mut acc, [s.cout, k_len], [1, s.cout]);
                    matmul(dst, grad, cols.t(), i > 0);
                });
            }
            acc
        })
        .collect();
    let total = sum_in_order(partials);
    let mut dw = vec![0.0f32; total.len()];
    for (k, row) in total.chunks_exact(s.cout).enumerate() {
        for (co, v) in row.iter().enumerate() {
            dw[co * k_len + k] = *v;
        }
    }
    dw
}

/// Element-wise sum of equally long vectors, first to last.
pub(crate) fn sum_in_order(mut parts: Vec<Vec<f32>>) -> Vec<f32> {
    let mut iter = parts.drain(..);
    let mut total = iter.next().unwrap_or_default();
    for part in iter {
        for (t, p) in total.iter_mut().zip(&part) {
            *t += p;
        }
    }
    total
}

/// Gradient of the bias: per output channel, the sum of `dy` over batch and pixels.
pub fn bias_grad(s: &ConvShape, dy: &[f32]) -> Vec<f32> {
    channel_sums(dy, s.batch, s.cout)
}
