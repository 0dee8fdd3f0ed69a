//! The kernels on plain `f32` slices in `(batch, channels, d, h, w)` order, with no burn
//! types: convolution, transposed convolution and max-pooling, each with its gradients.

pub mod conv;
pub mod conv_transpose;
pub mod pool;
mod raw;

pub use raw::keep_freed_memory;

use rayon::prelude::*;

/// Elements per parallel task of the element-wise passes.
const ELEMENTWISE_CHUNK: usize = 1 << 15;

/// Adds `bias` to every value, then clamps at 0 if `relu`.
fn add_bias_relu(values: &mut [f32], bias: f32, relu: bool) {
    if relu {
        values.iter_mut().for_each(|v| *v = (*v + bias).max(0.0));
    } else if bias != 0.0 {
        values.iter_mut().for_each(|v| *v += bias);
    }
}

/// Turns `dy`, the gradient after a ReLU whose output was `y`, into the gradient before it:
/// `dy` where `y > 0`, else 0.
pub fn relu_backward(y: &[f32], dy: &mut [f32]) {
    assert_eq!(y.len(), dy.len(), "relu gradient size");
    dy.par_chunks_mut(ELEMENTWISE_CHUNK)
        .zip(y.par_chunks(ELEMENTWISE_CHUNK))
        .for_each(|(dy, y)| {
            for (g, &y) in dy.iter_mut().zip(y) {
                if y <= 0.0 {
                    *g = 0.0;
                }
            }
        });
}

/// Per channel, the sum over batch and pixels of `values` laid out `(batch, channels,
/// pixels)`, summed in a fixed order.
pub(crate) fn channel_sums(values: &[f32], batch: usize, channels: usize) -> Vec<f32> {
    let pixels = values.len() / (batch * channels).max(1);
    (0..channels)
        .into_par_iter()
        .map(|c| {
            (0..batch)
                .map(|n| {
                    let start = (n * channels + c) * pixels;
                    lane_sum(&values[start..start + pixels])
                })
                .sum()
        })
        .collect()
}

/// Sum in 16 interleaved lanes (vectorised, and a fixed order).
fn lane_sum(values: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 16];
    let mut chunks = values.chunks_exact(16);
    for chunk in &mut chunks {
        for (l, v) in lanes.iter_mut().zip(chunk) {
            *l += v;
        }
    }
    lanes.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
}
