//! Max-pooling with kernel = stride (a U-Net's downsampling), 2D and 3D, and its gradient.
//! Ties go to the first voxel of the window and a NaN wins, as in PyTorch.

use rayon::prelude::*;

/// The geometry of one pooling: `(planes, d, h, w)` input, with `planes = batch · channels`
/// and every spatial size a multiple of its factor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolShape {
    /// Batch × channels.
    pub planes: usize,
    /// Input spatial size `(d, h, w)`.
    pub input: [usize; 3],
    /// Kernel size = stride per axis.
    pub factor: [usize; 3],
}

impl PoolShape {
    /// Whether the kernels pool this shape: factors divide the sizes and a window has at most
    /// 256 voxels (the winner's index is stored in a byte).
    pub fn supported(&self) -> bool {
        let divides =
            (0..3).all(|a| self.factor[a] > 0 && self.input[a].is_multiple_of(self.factor[a]));
        divides && self.factor.iter().product::<usize>() <= 256
    }

    /// Output spatial size.
    pub fn output(&self) -> [usize; 3] {
        [0, 1, 2].map(|a| self.input[a] / self.factor[a].max(1))
    }
}

/// The pooled values and, per output voxel, the index of the winning voxel in its window.
pub fn forward(s: &PoolShape, x: &[f32]) -> (Vec<f32>, Vec<u8>) {
    assert!(s.supported(), "unsupported pooling {s:?}");
    let ip: usize = s.input.iter().product();
    let op: usize = s.output().iter().product();
    assert_eq!(x.len(), s.planes * ip, "pooling input size");
    let [_, h, w] = s.input;
    let [fd, fh, fw] = s.factor;
    let [od, oh, ow] = s.output();
    let mut y = vec![0.0f32; s.planes * op];
    let mut arg = vec![0u8; s.planes * op];
    y.par_chunks_mut(op)
        .zip(arg.par_chunks_mut(op))
        .zip(x.par_chunks(ip))
        .for_each(|((y, arg), x)| {
            for z in 0..od {
                for yy in 0..oh {
                    let out = (z * oh + yy) * ow;
                    let y_row = &mut y[out..out + ow];
                    let arg_row = &mut arg[out..out + ow];
                    y_row.fill(f32::NEG_INFINITY);
                    let mut tap = 0u8;
                    for a in 0..fd {
                        for b in 0..fh {
                            let row = ((z * fd + a) * h + yy * fh + b) * w;
                            let src = &x[row..row + w];
                            for c in 0..fw {
                                for (i, (best, which)) in
                                    y_row.iter_mut().zip(arg_row.iter_mut()).enumerate()
                                {
                                    let v = src[i * fw + c];
                                    if v > *best || (v.is_nan() && !best.is_nan()) {
                                        *best = v;
                                        *which = tap;
                                    }
                                }
                                tap = tap.wrapping_add(1);
                            }
                        }
                    }
                }
            }
        });
    (y, arg)
}

/// Gradient of the input: each output gradient goes to its window's winning voxel.
pub fn backward(s: &PoolShape, arg: &[u8], dy: &[f32]) -> Vec<f32> {
    let ip: usize = s.input.iter().product();
    let op: usize = s.output().iter().product();
    assert_eq!(dy.len(), s.planes * op, "pooling gradient size");
    assert_eq!(arg.len(), dy.len(), "pooling indices size");
    let [_, h, w] = s.input;
    let [fd, fh, fw] = s.factor;
    let [od, oh, ow] = s.output();
    let mut dx = vec![0.0f32; s.planes * ip];
    dx.par_chunks_mut(ip)
        .zip(arg.par_chunks(op))
        .zip(dy.par_chunks(op))
        .for_each(|((dx, arg), dy)| {
            for z in 0..od {
                for yy in 0..oh {
                    for xx in 0..ow {
                        let o = (z * oh + yy) * ow + xx;
                        let tap = usize::from(arg[o]);
                        let (a, b, c) = (tap / (fh * fw), tap / fw % fh, tap % fw);
                        dx[((z * fd + a) * h + yy * fh + b) * w + xx * fw + c] = dy[o];
                    }
                }
            }
        });
    dx
}
