//! Blockwise prediction over a whole `(c, spatial...)` array, independent of the network type.
//!
//! A network with valid convolutions maps an input block of `output_block + 2 * context` voxels
//! per spatial axis to an output block of `output_block` voxels. [`predict_blockwise`] tiles the
//! output with such blocks and reads each input block around its output block, so the result is
//! exactly what the network would give on the whole array padded by `context` (no seams):
//! - the input is padded by `context` on every side ([`Padding::Reflect`] by default, or
//!   zeros); blocks read the padding on the fly, the padded array is never materialised;
//! - blocks start at multiples of `output_block`; the last block of an axis is shifted back so
//!   it ends at the array's edge (overlapping its neighbour) rather than running over it. Only
//!   an axis shorter than one block gets a block that runs over the edge (padded input, output
//!   cropped).

use ndarray::{ArrayD, ArrayViewD, Axis, IxDyn, Slice};

use crate::ValidatorError;

/// How the input is extended beyond its edges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Padding {
    /// Mirror without repeating the edge voxel (`d c b | a b c d | c b a`), like numpy's
    /// `reflect`: the network sees plausible image content near the edges.
    #[default]
    Reflect,
    /// Zeros beyond the edges (gunpowder's `Pad` with no value, as DaCapo predicts).
    Zero,
}

/// Block geometry of blockwise prediction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockSpec {
    /// Spatial shape of one output block (what the network predicts per call).
    pub output_block: Vec<usize>,
    /// Per-axis margin: input block = `output_block + 2 * context`.
    pub context: Vec<usize>,
    /// How the input is padded beyond its edges.
    pub padding: Padding,
}

impl BlockSpec {
    /// A spec with [`Padding::Reflect`].
    pub fn new(output_block: Vec<usize>, context: Vec<usize>) -> Self {
        Self {
            output_block,
            context,
            padding: Padding::default(),
        }
    }

    /// Spatial shape of one input block: `output_block + 2 * context`.
    pub fn input_block(&self) -> Vec<usize> {
        self.output_block
            .iter()
            .zip(&self.context)
            .map(|(b, c)| b + 2 * c)
            .collect()
    }

    fn check(&self, spatial: &[usize]) -> Result<(), ValidatorError> {
        for (what, list) in [
            ("output_block", &self.output_block),
            ("context", &self.context),
        ] {
            if list.len() != spatial.len() {
                return Err(ValidatorError::AxisCount {
                    what: what.into(),
                    got: list.len(),
                    expected: spatial.len(),
                });
            }
        }
        if self.output_block.contains(&0) {
            return Err(ValidatorError::BlockSpec(format!(
                "output_block {:?} has an empty axis",
                self.output_block
            )));
        }
        if spatial.contains(&0) {
            return Err(ValidatorError::BlockSpec(format!(
                "input spatial shape {spatial:?} has an empty axis: nothing to predict"
            )));
        }
        Ok(())
    }
}

/// Start of each output block along one axis of length `len` (see the module docs).
fn axis_starts(len: usize, block: usize) -> Vec<usize> {
    if len <= block {
        return vec![0];
    }
    let mut starts: Vec<usize> = (0..)
        .map(|i| i * block)
        .take_while(|s| s + block <= len)
        .collect();
    if starts.last().is_some_and(|&s| s + block < len) {
        starts.push(len - block);
    }
    starts
}

/// Output-space start of every block covering `spatial`, in raster order.
pub fn block_starts(spatial: &[usize], output_block: &[usize]) -> Vec<Vec<usize>> {
    let per_axis: Vec<Vec<usize>> = spatial
        .iter()
        .zip(output_block)
        .map(|(&n, &b)| axis_starts(n, b))
        .collect();
    let mut out = vec![Vec::new()];
    for starts in &per_axis {
        out = out
            .into_iter()
            .flat_map(|prefix| {
                starts.iter().map(move |&s| {
                    let mut p = prefix.clone();
                    p.push(s);
                    p
                })
            })
            .collect();
    }
    out
}

/// Source index of the padded coordinate `i` on an axis of length `n` (`None`: a zero).
fn source_index(i: isize, n: usize, padding: Padding) -> Option<usize> {
    if i >= 0 && (i as usize) < n {
        return Some(i as usize);
    }
    match padding {
        Padding::Zero => None,
        Padding::Reflect if n == 1 => Some(0),
        Padding::Reflect => {
            let period = 2 * (n as isize - 1);
            let m = i.rem_euclid(period);
            Some(if m < n as isize { m } else { period - m } as usize)
        }
    }
}

/// The input block `(c, input_block...)` whose spatial origin is `origin` (may be negative).
fn read_block(
    input: &ArrayViewD<f32>,
    origin: &[isize],
    size: &[usize],
    padding: Padding,
) -> ArrayD<f32> {
    let spatial = &input.shape()[1..];
    let mut shape = vec![input.len_of(Axis(0))];
    shape.extend(size);
    let mut block = ArrayD::<f32>::zeros(IxDyn(&shape));
    // Per axis: block positions with a source voxel (contiguous) and their source indices.
    let mut ranges = Vec::with_capacity(size.len());
    let mut sources = Vec::with_capacity(size.len());
    for a in 0..size.len() {
        let src: Vec<(usize, usize)> = (0..size[a])
            .filter_map(|j| {
                source_index(origin[a] + j as isize, spatial[a], padding).map(|s| (j, s))
            })
            .collect();
        let (Some(first), Some(last)) = (src.first(), src.last()) else {
            // Entirely outside with zero padding: the block stays zero.
            return block;
        };
        ranges.push((first.0, last.0 + 1));
        sources.push(src.into_iter().map(|(_, s)| s).collect::<Vec<usize>>());
    }
    // Cut the input down to the bounding box of the sources before copying anything.
    let mut view = input.view();
    let mut relative = Vec::with_capacity(size.len());
    for (a, src) in sources.iter().enumerate() {
        let lo = src.iter().copied().min().unwrap_or(0);
        let hi = src.iter().copied().max().unwrap_or(0) + 1;
        view.slice_axis_inplace(Axis(a + 1), Slice::from(lo..hi));
        relative.push(src.iter().map(|s| s - lo).collect::<Vec<usize>>());
    }
    let mut gathered = view.to_owned();
    for (a, rel) in relative.iter().enumerate() {
        let contiguous =
            rel.windows(2).all(|w| w[1] == w[0] + 1) && rel.len() == gathered.len_of(Axis(a + 1));
        if !contiguous {
            gathered = gathered.select(Axis(a + 1), rel);
        }
    }
    block
        .slice_each_axis_mut(|ax| {
            if ax.axis.index() == 0 {
                Slice::from(..)
            } else {
                let (lo, hi) = ranges[ax.axis.index() - 1];
                Slice::from(lo..hi)
            }
        })
        .assign(&gathered);
    block
}

/// Predicts `input` (`(c, spatial...)`) block by block with `predict` and returns the full
/// output `(out_c, spatial...)`, equal to the network's output on the whole padded array.
///
/// `predict` receives one input block `(c, spec.input_block()...)` and must return
/// `(out_c, spec.output_block...)` with the same `out_c` for every block. `progress`, if given,
/// is called after each block with `(blocks_done, blocks_total)`. Errors name the block when the
/// predictor fails or returns a wrong shape.
pub fn predict_blockwise<F, E>(
    input: ArrayViewD<f32>,
    spec: &BlockSpec,
    mut predict: F,
    mut progress: Option<&mut dyn FnMut(usize, usize)>,
) -> Result<ArrayD<f32>, ValidatorError>
where
    F: FnMut(ArrayViewD<f32>) -> Result<ArrayD<f32>, E>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if input.ndim() < 2 {
        return Err(ValidatorError::Prediction {
            shape: input.shape().to_vec(),
            reason: "blockwise input must be (channels, spatial...)".into(),
        });
    }
    let spatial = input.shape()[1..].to_vec();
    spec.check(&spatial)?;
    let in_block = spec.input_block();
    let starts = block_starts(&spatial, &spec.output_block);
    let total = starts.len();
    let mut output: Option<ArrayD<f32>> = None;
    for (index, start) in starts.iter().enumerate() {
        let origin: Vec<isize> = start
            .iter()
            .zip(&spec.context)
            .map(|(&s, &c)| s as isize - c as isize)
            .collect();
        let block = read_block(&input, &origin, &in_block, spec.padding);
        let predicted = predict(block.view()).map_err(|e| ValidatorError::Predict {
            index,
            offset: start.clone(),
            source: e.into(),
        })?;
        let shape_ok = predicted.ndim() == spatial.len() + 1
            && predicted.shape()[1..] == spec.output_block[..]
            && output
                .as_ref()
                .is_none_or(|o| o.len_of(Axis(0)) == predicted.len_of(Axis(0)));
        if !shape_ok {
            return Err(ValidatorError::BlockOutputShape {
                index,
                offset: start.clone(),
                got: predicted.shape().to_vec(),
                expected: spec.output_block.clone(),
            });
        }
        let out = output.get_or_insert_with(|| {
            let mut shape = vec![predicted.len_of(Axis(0))];
            shape.extend(&spatial);
            ArrayD::zeros(IxDyn(&shape))
        });
        // Crop to the array: only blocks of axes shorter than one block run over the edge.
        let extent: Vec<usize> = (0..spatial.len())
            .map(|a| spec.output_block[a].min(spatial[a] - start[a]))
            .collect();
        let source = predicted.slice_each_axis(|ax| match ax.axis.index() {
            0 => Slice::from(..),
            i => Slice::from(0..extent[i - 1]),
        });
        out.slice_each_axis_mut(|ax| match ax.axis.index() {
            0 => Slice::from(..),
            i => Slice::from(start[i - 1]..start[i - 1] + extent[i - 1]),
        })
        .assign(&source);
        if let Some(report) = progress.as_mut() {
            report(index + 1, total);
        }
    }
    output.ok_or_else(|| ValidatorError::BlockSpec("no block to predict".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{ArrayD, Dimension, IxDyn};

    /// Independent padding reference: numpy `reflect` / `constant` by explicit mirroring.
    fn pad(input: &ArrayD<f32>, context: &[usize], padding: Padding) -> ArrayD<f32> {
        let spatial = &input.shape()[1..];
        let mut shape = vec![input.shape()[0]];
        shape.extend(spatial.iter().zip(context).map(|(n, c)| n + 2 * c));
        ArrayD::from_shape_fn(IxDyn(&shape), |idx| {
            let mut src = vec![idx[0]];
            for a in 0..spatial.len() {
                let n = spatial[a] as isize;
                let mut i = idx[a + 1] as isize - context[a] as isize;
                if padding == Padding::Zero && (i < 0 || i >= n) {
                    return 0.0;
                }
                while i < 0 || i >= n {
                    if n == 1 {
                        i = 0;
                    } else if i < 0 {
                        i = -i;
                    } else {
                        i = 2 * (n - 1) - i;
                    }
                }
                src.push(i as usize);
            }
            input[src.as_slice()]
        })
    }

    /// A known local operator with valid borders: channel 0 = window mean of all input
    /// channels, channel 1 = window max of channel 0 weighted by position in the window.
    fn local_op(input: ArrayViewD<f32>, context: &[usize]) -> ArrayD<f32> {
        let spatial: Vec<usize> = input.shape()[1..].to_vec();
        let out_spatial: Vec<usize> = spatial
            .iter()
            .zip(context)
            .map(|(n, c)| n - 2 * c)
            .collect();
        let window: Vec<usize> = context.iter().map(|c| 2 * c + 1).collect();
        let channels = input.shape()[0];
        let mut shape = vec![2];
        shape.extend(&out_spatial);
        ArrayD::from_shape_fn(IxDyn(&shape), |idx| {
            let o: Vec<usize> = idx.slice()[1..].to_vec();
            let mut sum = 0.0f32;
            let mut max = f32::NEG_INFINITY;
            let mut count = 0.0f32;
            for w in ndarray::indices(IxDyn(&window)) {
                let mut p = vec![0];
                p.extend(o.iter().zip(w.slice()).map(|(a, b)| a + b));
                let weight = 1.0 + w.slice().iter().sum::<usize>() as f32;
                for ch in 0..channels {
                    p[0] = ch;
                    sum += input[p.as_slice()];
                    count += 1.0;
                }
                p[0] = 0;
                max = max.max(input[p.as_slice()] * weight);
            }
            if idx[0] == 0 { sum / count } else { max }
        })
    }

    fn input(shape: &[usize]) -> ArrayD<f32> {
        // Deterministic, non-symmetric values so misplaced voxels show.
        ArrayD::from_shape_fn(IxDyn(shape), |idx| {
            let mut h = 17u64;
            for &i in idx.slice() {
                h = h.wrapping_mul(31).wrapping_add(i as u64 * 7 + 3);
            }
            ((h % 1000) as f32) / 100.0 - 5.0
        })
    }

    fn check(shape: &[usize], block: &[usize], context: &[usize], padding: Padding) {
        let x = input(shape);
        let spec = BlockSpec {
            output_block: block.to_vec(),
            context: context.to_vec(),
            padding,
        };
        let in_block = spec.input_block();
        let mut calls = 0;
        let mut reported = Vec::new();
        let mut progress = |done: usize, total: usize| reported.push((done, total));
        let out = predict_blockwise(
            x.view(),
            &spec,
            |b: ArrayViewD<f32>| {
                calls += 1;
                assert_eq!(&b.shape()[1..], in_block.as_slice());
                Ok::<_, std::convert::Infallible>(local_op(b, context))
            },
            Some(&mut progress),
        )
        .unwrap();
        let expected = local_op(pad(&x, context, padding).view(), context);
        assert_eq!(out.shape(), expected.shape());
        assert_eq!(
            out, expected,
            "shape {shape:?} block {block:?} context {context:?}"
        );
        let spatial = &shape[1..];
        let total = block_starts(spatial, block).len();
        assert_eq!(calls, total);
        assert_eq!(reported.len(), total);
        assert_eq!(reported.last(), Some(&(total, total)));
    }

    #[test]
    fn equals_whole_array_2d() {
        check(&[1, 10, 7], &[4, 3], &[1, 1], Padding::Reflect);
        check(&[2, 9, 9], &[3, 3], &[1, 1], Padding::Zero);
        check(&[1, 13, 11], &[4, 5], &[2, 1], Padding::Reflect);
        check(&[1, 8, 8], &[4, 4], &[0, 0], Padding::Reflect);
        // Axes shorter than one block, and contexts larger than the array (multiple mirrors).
        check(&[1, 3, 10], &[5, 4], &[1, 1], Padding::Reflect);
        check(&[1, 2, 3], &[4, 4], &[3, 2], Padding::Reflect);
        check(&[1, 2, 3], &[4, 4], &[3, 2], Padding::Zero);
        check(&[1, 1, 5], &[2, 2], &[1, 1], Padding::Reflect);
    }

    #[test]
    fn equals_whole_array_3d() {
        check(&[1, 7, 6, 5], &[3, 4, 2], &[1, 1, 1], Padding::Reflect);
        check(&[2, 5, 6, 7], &[2, 3, 4], &[1, 2, 1], Padding::Zero);
    }

    #[test]
    fn block_grid() {
        assert_eq!(axis_starts(10, 4), vec![0, 4, 6]);
        assert_eq!(axis_starts(8, 4), vec![0, 4]);
        assert_eq!(axis_starts(3, 4), vec![0]);
        assert_eq!(block_starts(&[5, 3], &[3, 3]), vec![vec![0, 0], vec![2, 0]]);
        assert_eq!(source_index(-1, 4, Padding::Reflect), Some(1));
        assert_eq!(source_index(4, 4, Padding::Reflect), Some(2));
        assert_eq!(source_index(-7, 3, Padding::Reflect), Some(1));
        assert_eq!(source_index(-1, 4, Padding::Zero), None);
    }

    #[test]
    fn errors_name_the_block() {
        let x = input(&[1, 6, 6]);
        let spec = BlockSpec::new(vec![3, 3], vec![1, 1]);
        let mut n = 0;
        let e = predict_blockwise(
            x.view(),
            &spec,
            |b: ArrayViewD<f32>| {
                n += 1;
                if n == 3 {
                    Err("out of memory".to_string())
                } else {
                    Ok(local_op(b, &[1, 1]))
                }
            },
            None,
        )
        .unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("block 2 at output offset [3, 0]"), "{msg}");
        assert!(msg.contains("out of memory"), "{msg}");
        let e = predict_blockwise(
            x.view(),
            &spec,
            |_b: ArrayViewD<f32>| {
                Ok::<_, std::convert::Infallible>(ArrayD::zeros(IxDyn(&[1, 2, 3])))
            },
            None,
        )
        .unwrap_err();
        assert!(
            matches!(e, ValidatorError::BlockOutputShape { index: 0, .. }),
            "{e}"
        );
        let bad = BlockSpec::new(vec![3], vec![1, 1]);
        let e = predict_blockwise(
            x.view(),
            &bad,
            |b: ArrayViewD<f32>| Ok::<_, std::convert::Infallible>(b.to_owned()),
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("output_block has 1 values"), "{e}");
    }
}
