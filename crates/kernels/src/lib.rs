//! Fast CPU layers for burn's `flex` backend: convolution (bias and ReLU fused), transposed
//! convolution with kernel = stride, and max-pooling, in 2D and 3D, each with its own backward.
//!
//! Call the functions here instead of burn's `conv2d`, `conv_transpose3d`, `max_pool2d`, ...:
//! on a flex device with `f32` tensors they run this crate's multithreaded GEMM kernels
//! (registered with burn as a backend extension, so autodiff records one node per layer);
//! on any other device, dtype or shape they call burn's own operation, so model code has one
//! path for every backend. Results do not depend on the number of threads.

pub mod cpu;
mod ops;

use burn::backend::Dispatch;
use burn::tensor::activation::relu as relu_fn;
use burn::tensor::module::{conv_transpose2d, conv_transpose3d, conv2d, conv3d, max_pool2d};
use burn::tensor::ops::{ConvOptions, ConvTransposeOptions, MaxPoolOptions};
use burn::tensor::{DType, Device, Tensor};

use cpu::conv::ConvShape;
pub use cpu::keep_freed_memory;
use cpu::pool::PoolShape;
use ops::KernelOps;

/// Whether tensors on `device` with `dtype` go through this crate's kernels.
pub fn accelerated(device: &Device, dtype: DType) -> bool {
    *device == Device::flex() && dtype == DType::F32
}

/// Whether a layer on `x` with `weight` and `bias` runs on the kernels: flex, all `f32`.
fn use_kernels<const D: usize>(
    x: &Tensor<D>,
    weight: &Tensor<D>,
    bias: Option<&Tensor<1>>,
) -> bool {
    let dtype = x.dtype();
    accelerated(&x.device(), dtype)
        && weight.dtype() == dtype
        && bias.is_none_or(|b| b.dtype() == dtype)
}

/// Spatial axes of a rank-`D` batch tensor, or a panic for ranks this crate has no layer for.
fn spatial_axes<const D: usize>() -> usize {
    match D {
        4 => 2,
        5 => 3,
        _ => panic!("dacapo-kernels: layers take rank 4 (2D) or 5 (3D) tensors, not {D}"),
    }
}

/// The tensor as rank 5, a 2D `(b, c, h, w)` one getting depth 1: `(b, c, 1, h, w)`.
fn to5<const D: usize>(t: Tensor<D>) -> Tensor<5> {
    let d = t.dims();
    match spatial_axes::<D>() {
        2 => t.reshape([d[0], d[1], 1, d[2], d[3]]),
        _ => t.reshape([d[0], d[1], d[2], d[3], d[4]]),
    }
}

/// The inverse of [`to5`].
fn from5<const D: usize>(t: Tensor<5>) -> Tensor<D> {
    let [b, c, d, h, w] = t.dims();
    let mut dims = [0; D];
    let spatial: &[usize] = if D == 4 { &[h, w] } else { &[d, h, w] };
    dims[0] = b;
    dims[1] = c;
    dims[2..].copy_from_slice(spatial);
    t.reshape(dims)
}

/// The same tensor typed with rank `B` (which must equal `A`): bridges the rank-generic
/// functions here and burn's rank-specific ones.
fn as_rank<const A: usize, const B: usize>(t: Tensor<A>) -> Tensor<B> {
    assert_eq!(A, B, "rank conversion");
    let mut dims = [0; B];
    dims.copy_from_slice(&t.dims());
    t.reshape(dims)
}

/// `[a, b]` or `[a, b, c]` as the `(d, h, w)` triple of a 2D (`d = 1`) or 3D layer.
fn triple<const D: usize>(values: &[usize], fill: usize) -> [usize; 3] {
    match spatial_axes::<D>() {
        2 => [fill, values[0], values[1]],
        _ => [values[0], values[1], values[2]],
    }
}

fn bias_or_zeros(bias: Option<Tensor<1>>, channels: usize, device: &Device) -> Tensor<1> {
    bias.unwrap_or_else(|| Tensor::zeros([channels], device))
}

fn maybe_relu<const D: usize>(t: Tensor<D>, relu: bool) -> Tensor<D> {
    if relu { relu_fn(t) } else { t }
}

/// Stride-1 convolution of `x` `(batch, cin, spatial...)` with `weight` `(cout, cin,
/// kernel...)`, zero `padding` on every side, plus `bias`, then ReLU if `relu`.
pub fn conv<const D: usize>(
    x: Tensor<D>,
    weight: Tensor<D>,
    bias: Option<Tensor<1>>,
    padding: usize,
    relu: bool,
) -> Tensor<D> {
    let (xd, wd) = (x.dims(), weight.dims());
    let pad = triple::<D>(&[padding; 3], 0);
    let shape = ConvShape {
        batch: xd[0],
        cin: xd[1],
        cout: wd[0],
        input: triple::<D>(&xd[2..], 1),
        kernel: triple::<D>(&wd[2..], 1),
        pad,
    };
    if use_kernels(&x, &weight, bias.as_ref()) && wd[1] == xd[1] && shape.supported() {
        let bias = bias_or_zeros(bias, wd[0], &x.device());
        let y = <Dispatch as KernelOps>::dacapo_conv(
            to5(x).into_dispatch(),
            to5(weight).into_dispatch(),
            bias.into_dispatch(),
            pad,
            relu,
        );
        return from5(Tensor::<5>::from_dispatch(y));
    }
    let y = match spatial_axes::<D>() {
        2 => {
            let options = ConvOptions::new([1, 1], [padding; 2], [1, 1], 1);
            as_rank(conv2d(as_rank(x), as_rank(weight), bias, options))
        }
        _ => {
            let options = ConvOptions::new([1; 3], [padding; 3], [1; 3], 1);
            as_rank(conv3d(as_rank(x), as_rank(weight), bias, options))
        }
    };
    maybe_relu(y, relu)
}

/// Transposed convolution with kernel = stride (the kernel size of `weight` `(cin, cout,
/// factor...)`), plus `bias`, then ReLU if `relu`.
pub fn conv_transpose<const D: usize>(
    x: Tensor<D>,
    weight: Tensor<D>,
    bias: Option<Tensor<1>>,
    relu: bool,
) -> Tensor<D> {
    let (xd, wd) = (x.dims(), weight.dims());
    if use_kernels(&x, &weight, bias.as_ref()) && wd[0] == xd[1] {
        let bias = bias_or_zeros(bias, wd[1], &x.device());
        let y = <Dispatch as KernelOps>::dacapo_conv_transpose(
            to5(x).into_dispatch(),
            to5(weight).into_dispatch(),
            bias.into_dispatch(),
            relu,
        );
        return from5(Tensor::<5>::from_dispatch(y));
    }
    let y = match spatial_axes::<D>() {
        2 => {
            let f = [wd[2], wd[3]];
            let options = ConvTransposeOptions::new(f, [0; 2], [0; 2], [1; 2], 1);
            as_rank(conv_transpose2d(as_rank(x), as_rank(weight), bias, options))
        }
        _ => {
            let f = [wd[2], wd[3], wd[4]];
            let options = ConvTransposeOptions::new(f, [0; 3], [0; 3], [1; 3], 1);
            as_rank(conv_transpose3d(as_rank(x), as_rank(weight), bias, options))
        }
    };
    maybe_relu(y, relu)
}

/// Max-pooling with kernel = stride = `factor` (one entry per spatial axis); every spatial
/// size must be a multiple of its factor.
pub fn max_pool<const D: usize>(x: Tensor<D>, factor: &[usize]) -> Tensor<D> {
    let xd = x.dims();
    let f = triple::<D>(factor, 1);
    let shape = PoolShape {
        planes: xd[0] * xd[1],
        input: triple::<D>(&xd[2..], 1),
        factor: f,
    };
    if accelerated(&x.device(), x.dtype()) && shape.supported() {
        let y = <Dispatch as KernelOps>::dacapo_max_pool(to5(x).into_dispatch(), f);
        return from5(Tensor::<5>::from_dispatch(y));
    }
    match spatial_axes::<D>() {
        2 => as_rank(max_pool2d(as_rank(x), MaxPoolOptions::new([f[1], f[2]]))),
        _ => {
            // burn has no max_pool3d: split each axis into (size / f, f) and reduce the f
            // axes, innermost first, which is differentiable through max_dim.
            let x: Tensor<5> = as_rank(x);
            let [b, c, d, h, w] = x.dims();
            let [fd, fh, fw] = f;
            let t: Tensor<8> = x.reshape([b, c, d / fd, fd, h / fh, fh, w / fw, fw]);
            let t = t.max_dim(7).max_dim(5).max_dim(3);
            as_rank(t.reshape([b, c, d / fd, h / fh, w / fw]))
        }
    }
}
