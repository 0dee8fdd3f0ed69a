//! Blockwise prediction over a whole `(c, spatial...)` array, independent of the network type.
//!
//! A network with valid convolutions maps an input block of `output_block + 2 * context` voxels
//! per spatial axis to an output block of `output_block` voxels. [`predict_blockwise`] tiles the
//! output with such blocks and reads each input block around its output block, so the result is
//! exactly what the network would give on the whole array padded by `context` (no seams):
//! - the input is padded by `context` on every side ([`Padding::Reflect`] by default, or
//!   zeros); blocks read the padding on the fly, the padded array is never materialised;
//! - blocks start at multiples of the step, `output_block` rounded down to a multiple of
//!   [`BlockSpec::grid`]: a network that downsamples by a total factor `f` along an axis gives
//!   the same output for the same input only when shifted by multiples of `f`, so every block
//!   sits on the same pooling grid. With `grid = 1` the step is `output_block` and blocks do not
//!   overlap;
//! - the last block of an axis starts at the first grid position from which it reaches the
//!   array's edge, overlapping its neighbour and running over the edge by less than `grid`
//!   voxels (whose outputs are cropped). An axis shorter than one block gets one block at 0.
//!
//! Every output voxel is written exactly once: block `j` of an axis writes `[j * step, (j + 1)
//! * step)` and the last block everything from its neighbour's end to the edge (overlapping
//! parts are cropped away). Written regions are therefore whole chunks of a `step`-chunked
//! array ([`BlockGrid::chunk_shape`]), each chunk written by exactly one block, so blocks can
//! be predicted in any order, by any number of processes, and streamed from and to disk with
//! bounded memory ([`predict_blockwise_with`], [`predict_one_block`]).

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
    /// Per-axis alignment of block starts (the network's total downsampling factor); empty
    /// means 1 on every axis.
    pub grid: Vec<usize>,
}

/// One block along one axis: where it starts and which part of its output is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct AxisBlock {
    start: usize,
    write_lo: usize,
    write_hi: usize,
}

impl BlockSpec {
    /// A spec with [`Padding::Reflect`] and no grid alignment.
    pub fn new(output_block: Vec<usize>, context: Vec<usize>) -> Self {
        Self {
            output_block,
            context,
            padding: Padding::default(),
            grid: Vec::new(),
        }
    }

    /// The same spec with block starts aligned to multiples of `grid`.
    pub fn with_grid(mut self, grid: Vec<usize>) -> Self {
        self.grid = grid;
        self
    }

    /// The same spec with another padding.
    pub fn with_padding(mut self, padding: Padding) -> Self {
        self.padding = padding;
        self
    }

    /// Spatial shape of one input block: `output_block + 2 * context`.
    pub fn input_block(&self) -> Vec<usize> {
        self.output_block
            .iter()
            .zip(&self.context)
            .map(|(b, c)| b + 2 * c)
            .collect()
    }

    fn grid_of(&self, axis: usize) -> usize {
        self.grid.get(axis).copied().unwrap_or(1).max(1)
    }

    fn check(&self, spatial: &[usize]) -> Result<(), ValidatorError> {
        let mut lists = vec![
            ("output_block", &self.output_block),
            ("context", &self.context),
        ];
        if !self.grid.is_empty() {
            lists.push(("grid", &self.grid));
        }
        for (what, list) in lists {
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
        for (a, &b) in self.output_block.iter().enumerate() {
            let g = self.grid_of(a);
            if b < g && spatial[a] > b {
                return Err(ValidatorError::BlockSpec(format!(
                    "output_block {:?} is smaller than the grid {:?} on axis {a}: blocks could \
                     not move along it; use a larger block",
                    self.output_block, self.grid
                )));
            }
        }
        Ok(())
    }
}

/// The distance between block starts along an axis: the block rounded down to the grid.
fn axis_step(block: usize, grid: usize) -> usize {
    (block / grid * grid).max(grid)
}

/// The blocks along one axis of length `len` (see the module docs).
fn axis_blocks(len: usize, block: usize, grid: usize) -> Vec<AxisBlock> {
    if len <= block {
        return vec![AxisBlock {
            start: 0,
            write_lo: 0,
            write_hi: len,
        }];
    }
    let step = axis_step(block, grid);
    let mut out = Vec::new();
    let mut s = 0;
    while s + block < len {
        out.push(AxisBlock {
            start: s,
            write_lo: s,
            write_hi: s + step,
        });
        s += step;
    }
    // The first grid position from which a block reaches the edge: at most `s` (a multiple
    // of the grid that reaches it) and after every earlier start. It writes from `s`, where
    // its neighbour stopped, to the edge.
    out.push(AxisBlock {
        start: (len - block).div_ceil(grid) * grid,
        write_lo: s,
        write_hi: len,
    });
    out
}

/// Start of each output block along one axis of length `len` without grid alignment.
#[cfg(test)]
fn axis_starts(len: usize, block: usize) -> Vec<usize> {
    axis_blocks(len, block, 1).iter().map(|b| b.start).collect()
}

/// The blocks of a blockwise prediction over one array, in raster order (the last axis
/// fastest): where each reads its input and which output region it writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockGrid {
    spatial: Vec<usize>,
    spec: BlockSpec,
    axes: Vec<Vec<AxisBlock>>,
}

/// One block of a [`BlockGrid`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// Position in raster order.
    pub index: usize,
    /// Output-space start of the block (its input starts `context` earlier).
    pub start: Vec<usize>,
    /// Start of the output region it writes.
    pub write_begin: Vec<usize>,
    /// Shape of the output region it writes.
    pub write_shape: Vec<usize>,
}

impl BlockGrid {
    /// The blocks covering an array of spatial shape `spatial`; errors when `spec` cannot.
    pub fn new(spatial: &[usize], spec: &BlockSpec) -> Result<Self, ValidatorError> {
        spec.check(spatial)?;
        let axes = spatial
            .iter()
            .zip(&spec.output_block)
            .enumerate()
            .map(|(a, (&n, &b))| axis_blocks(n, b, spec.grid_of(a)))
            .collect();
        Ok(Self {
            spatial: spatial.to_vec(),
            spec: spec.clone(),
            axes,
        })
    }

    /// Number of blocks.
    pub fn len(&self) -> usize {
        self.axes.iter().map(Vec::len).product()
    }

    /// Whether there is no block (never: every axis has at least one).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Spatial shape of the array.
    pub fn spatial(&self) -> &[usize] {
        &self.spatial
    }

    /// The block geometry.
    pub fn spec(&self) -> &BlockSpec {
        &self.spec
    }

    /// Blocks per axis.
    pub fn blocks_per_axis(&self) -> Vec<usize> {
        self.axes.iter().map(Vec::len).collect()
    }

    /// Spatial chunk shape whose chunks are each written by exactly one block: the step
    /// between blocks, or the whole axis when it has one block.
    pub fn chunk_shape(&self) -> Vec<usize> {
        self.axes
            .iter()
            .enumerate()
            .map(|(a, blocks)| {
                if blocks.len() == 1 {
                    self.spatial[a]
                } else {
                    axis_step(self.spec.output_block[a], self.spec.grid_of(a))
                }
            })
            .collect()
    }

    /// Block `index` (`< len()`).
    pub fn block(&self, index: usize) -> Block {
        let mut rest = index;
        let mut axes = Vec::with_capacity(self.axes.len());
        for blocks in self.axes.iter().rev() {
            axes.push(blocks[rest % blocks.len()]);
            rest /= blocks.len();
        }
        axes.reverse();
        Block {
            index,
            start: axes.iter().map(|b| b.start).collect(),
            write_begin: axes.iter().map(|b| b.write_lo).collect(),
            write_shape: axes.iter().map(|b| b.write_hi - b.write_lo).collect(),
        }
    }
}

/// Output-space start of every block covering `spatial` (no grid alignment), in raster order.
pub fn block_starts(spatial: &[usize], output_block: &[usize]) -> Vec<Vec<usize>> {
    let spec = BlockSpec::new(output_block.to_vec(), vec![0; output_block.len()]);
    match BlockGrid::new(spatial, &spec) {
        Ok(grid) => (0..grid.len()).map(|i| grid.block(i).start).collect(),
        Err(_) => Vec::new(),
    }
}

/// Number of blocks [`predict_blockwise`] runs for an array of spatial shape `spatial`.
pub fn block_count(spatial: &[usize], spec: &BlockSpec) -> usize {
    spatial
        .iter()
        .zip(&spec.output_block)
        .enumerate()
        .map(|(a, (&n, &b))| axis_blocks(n, b, spec.grid_of(a)).len())
        .product()
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

/// The input block `(c, size...)` whose spatial origin is `origin` (may be negative), built
/// from one in-bounds region read through `read(begin, shape)` (which returns `(c, shape...)`).
fn read_block<R, E>(
    channels: usize,
    spatial: &[usize],
    origin: &[isize],
    size: &[usize],
    padding: Padding,
    read: &mut R,
) -> Result<ArrayD<f32>, E>
where
    R: FnMut(&[usize], &[usize]) -> Result<ArrayD<f32>, E>,
{
    let mut shape = vec![channels];
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
            return Ok(block);
        };
        ranges.push((first.0, last.0 + 1));
        sources.push(src.into_iter().map(|(_, s)| s).collect::<Vec<usize>>());
    }
    // Read only the bounding box of the sources.
    let mut lo = Vec::with_capacity(size.len());
    let mut len = Vec::with_capacity(size.len());
    let mut relative = Vec::with_capacity(size.len());
    for src in &sources {
        let l = src.iter().copied().min().unwrap_or(0);
        let h = src.iter().copied().max().unwrap_or(0) + 1;
        lo.push(l);
        len.push(h - l);
        relative.push(src.iter().map(|s| s - l).collect::<Vec<usize>>());
    }
    let mut gathered = read(&lo, &len)?;
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
    Ok(block)
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
    predict: F,
    progress: Option<&mut dyn FnMut(usize, usize)>,
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
    let mut output: Option<ArrayD<f32>> = None;
    predict_blockwise_with(
        input.len_of(Axis(0)),
        &spatial,
        spec,
        |lo: &[usize], len: &[usize]| {
            let region = input.slice_each_axis(|ax| match ax.axis.index() {
                0 => Slice::from(..),
                i => Slice::from(lo[i - 1]..lo[i - 1] + len[i - 1]),
            });
            Ok::<_, std::convert::Infallible>(region.to_owned())
        },
        predict,
        |begin: &[usize], block: ArrayViewD<f32>| {
            let out = output.get_or_insert_with(|| {
                let mut shape = vec![block.len_of(Axis(0))];
                shape.extend(&spatial);
                ArrayD::zeros(IxDyn(&shape))
            });
            out.slice_each_axis_mut(|ax| match ax.axis.index() {
                0 => Slice::from(..),
                i => Slice::from(begin[i - 1]..begin[i - 1] + block.len_of(ax.axis)),
            })
            .assign(&block);
            Ok::<_, std::convert::Infallible>(())
        },
        progress,
    )?;
    output.ok_or_else(|| ValidatorError::BlockSpec("no block to predict".into()))
}

/// Blockwise prediction that streams: input regions come from `read`, output regions go to
/// `write`, so neither the whole input nor the whole output needs to be in memory.
///
/// The input has `channels` channels and spatial shape `spatial`. `read(begin, shape)` returns
/// the in-bounds input region `(channels, shape...)` at `begin`; `write(begin, block)` receives
/// each output region `(out_c, region...)` once, and the regions tile the output exactly.
/// `predict` and `progress` are as for [`predict_blockwise`]. Returns the number of output
/// channels.
pub fn predict_blockwise_with<R, RE, F, E, W, WE>(
    channels: usize,
    spatial: &[usize],
    spec: &BlockSpec,
    mut read: R,
    mut predict: F,
    mut write: W,
    mut progress: Option<&mut dyn FnMut(usize, usize)>,
) -> Result<usize, ValidatorError>
where
    R: FnMut(&[usize], &[usize]) -> Result<ArrayD<f32>, RE>,
    RE: Into<Box<dyn std::error::Error + Send + Sync>>,
    F: FnMut(ArrayViewD<f32>) -> Result<ArrayD<f32>, E>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
    W: FnMut(&[usize], ArrayViewD<f32>) -> Result<(), WE>,
    WE: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let grid = BlockGrid::new(spatial, spec)?;
    let total = grid.len();
    let mut out_channels = None;
    for index in 0..total {
        let c = predict_one_block(&grid, channels, index, &mut read, &mut predict, &mut write)?;
        if let Some(expected) = out_channels.filter(|&o| o != c) {
            return Err(ValidatorError::BlockOutputShape {
                index,
                offset: grid.block(index).start,
                got: vec![c],
                expected: vec![expected],
            });
        }
        out_channels = Some(c);
        if let Some(report) = progress.as_mut() {
            report(index + 1, total);
        }
    }
    out_channels.ok_or_else(|| ValidatorError::BlockSpec("no block to predict".into()))
}

/// Predicts block `index` of `grid`: reads its input (padded beyond the edges) through
/// `read`, predicts it with `predict` and writes its output region through `write`, as
/// [`predict_blockwise_with`] does for every block. Returns the number of output channels.
pub fn predict_one_block<R, RE, F, E, W, WE>(
    grid: &BlockGrid,
    channels: usize,
    index: usize,
    read: &mut R,
    predict: &mut F,
    write: &mut W,
) -> Result<usize, ValidatorError>
where
    R: FnMut(&[usize], &[usize]) -> Result<ArrayD<f32>, RE>,
    RE: Into<Box<dyn std::error::Error + Send + Sync>>,
    F: FnMut(ArrayViewD<f32>) -> Result<ArrayD<f32>, E>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
    W: FnMut(&[usize], ArrayViewD<f32>) -> Result<(), WE>,
    WE: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let spec = &grid.spec;
    let spatial = &grid.spatial;
    if channels == 0 {
        return Err(ValidatorError::Prediction {
            shape: spatial.clone(),
            reason: "the input has no channel".into(),
        });
    }
    let block = grid.block(index);
    let start = block.start.clone();
    let io_error = |action: &'static str, e: Box<dyn std::error::Error + Send + Sync>| {
        ValidatorError::BlockIo {
            index,
            offset: start.clone(),
            action,
            source: e,
        }
    };
    let origin: Vec<isize> = start
        .iter()
        .zip(&spec.context)
        .map(|(&s, &c)| s as isize - c as isize)
        .collect();
    let mut read_dyn = |lo: &[usize], len: &[usize]| read(lo, len).map_err(Into::into);
    let input = read_block(
        channels,
        spatial,
        &origin,
        &spec.input_block(),
        spec.padding,
        &mut read_dyn,
    )
    .map_err(|e| io_error("reading", e))?;
    let predicted = predict(input.view()).map_err(|e| ValidatorError::Predict {
        index,
        offset: start.clone(),
        source: e.into(),
    })?;
    drop(input);
    let shape_ok = predicted.ndim() == spatial.len() + 1
        && predicted.shape()[1..] == spec.output_block[..]
        && predicted.len_of(Axis(0)) > 0;
    if !shape_ok {
        return Err(ValidatorError::BlockOutputShape {
            index,
            offset: start.clone(),
            got: predicted.shape().to_vec(),
            expected: spec.output_block.clone(),
        });
    }
    let region = predicted.slice_each_axis(|ax| match ax.axis.index() {
        0 => Slice::from(..),
        i => {
            let lo = block.write_begin[i - 1] - start[i - 1];
            Slice::from(lo..lo + block.write_shape[i - 1])
        }
    });
    write(&block.write_begin, region).map_err(|e| io_error("writing", e.into()))?;
    Ok(predicted.len_of(Axis(0)))
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
        let spec = BlockSpec::new(block.to_vec(), context.to_vec()).with_padding(padding);
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

    /// A pooling-like operator whose output depends on the block's origin: output voxel `j`
    /// (local) is the max of the 2×2 input cell that contains it on a grid anchored at the
    /// block's output origin, read with margin `context` (>= 1).
    fn cell_max(input: ArrayViewD<f32>, context: usize) -> ArrayD<f32> {
        let out: Vec<usize> = input.shape()[1..].iter().map(|n| n - 2 * context).collect();
        ArrayD::from_shape_fn(IxDyn(&[1, out[0], out[1]]), |idx| {
            let (i, j) = (idx[1] / 2 * 2 + context, idx[2] / 2 * 2 + context);
            let mut m = f32::NEG_INFINITY;
            for (a, b) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                m = m.max(input[[0, i + a, j + b]]);
            }
            m
        })
    }

    #[test]
    fn grid_alignment_keeps_pooling_phase() {
        let context = 1;
        for (shape, block) in [
            ([1, 11, 9], [4, 4]),
            ([1, 13, 10], [5, 3]),
            ([1, 7, 16], [6, 6]),
            ([1, 3, 17], [5, 5]),
        ] {
            let x = input(&shape);
            let spec = BlockSpec::new(block.to_vec(), vec![context; 2]).with_grid(vec![2, 2]);
            let mut writes = Vec::new();
            let mut out = ArrayD::<f32>::from_elem(IxDyn(&shape), f32::NAN);
            let channels = predict_blockwise_with(
                1,
                &shape[1..],
                &spec,
                |lo: &[usize], len: &[usize]| {
                    Ok::<_, std::convert::Infallible>(
                        x.slice_each_axis(|ax| match ax.axis.index() {
                            0 => Slice::from(..),
                            i => Slice::from(lo[i - 1]..lo[i - 1] + len[i - 1]),
                        })
                        .to_owned(),
                    )
                },
                |b: ArrayViewD<f32>| Ok::<_, std::convert::Infallible>(cell_max(b, context)),
                |begin: &[usize], b: ArrayViewD<f32>| {
                    writes.push((begin.to_vec(), b.shape().to_vec()));
                    let mut region = out.slice_each_axis_mut(|ax| match ax.axis.index() {
                        0 => Slice::from(..),
                        i => Slice::from(begin[i - 1]..begin[i - 1] + b.len_of(ax.axis)),
                    });
                    // Each voxel is written once.
                    assert!(region.iter().all(|v| v.is_nan()));
                    region.assign(&b);
                    Ok::<_, std::convert::Infallible>(())
                },
                None,
            )
            .unwrap();
            assert_eq!(channels, 1);
            assert_eq!(writes.len(), block_count(&shape[1..], &spec));
            // Reference: cells on the global grid of the array padded by `context + 2` (the
            // last block may read up to one voxel past the edge plus its context).
            let padded = pad(&x, &[context + 2, context + 2], Padding::Reflect);
            for idx in ndarray::indices(IxDyn(&shape)) {
                let (i, j) = (idx[1], idx[2]);
                let mut m = f32::NEG_INFINITY;
                for (a, b) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                    m = m
                        .max(padded[[0, i / 2 * 2 + a + context + 2, j / 2 * 2 + b + context + 2]]);
                }
                assert_eq!(out[[0, i, j]], m, "{shape:?} {block:?} at {i},{j}");
            }
        }
    }

    #[test]
    fn grid_steps() {
        let blocks = |len, block, grid| {
            axis_blocks(len, block, grid)
                .iter()
                .map(|b| (b.start, b.write_lo, b.write_hi))
                .collect::<Vec<_>>()
        };
        // Step 4 (5 rounded down to the grid of 2); the last block starts at 10 >= 15 - 5
        // and writes from 12, where its neighbour stopped.
        assert_eq!(
            blocks(15, 5, 2),
            vec![(0, 0, 4), (4, 4, 8), (8, 8, 12), (10, 12, 15)]
        );
        // The last block may write more than one step (two chunks of 4).
        assert_eq!(blocks(15, 7, 4), vec![(0, 0, 4), (4, 4, 8), (8, 8, 15)]);
        // 15 - 4 = 11 is rounded up to 12: the last block runs over the edge by one voxel.
        assert_eq!(
            blocks(15, 4, 2),
            vec![(0, 0, 4), (4, 4, 8), (8, 8, 12), (12, 12, 15)]
        );
        assert_eq!(blocks(3, 8, 4), vec![(0, 0, 3)]);
        assert_eq!(blocks(10, 4, 1), vec![(0, 0, 4), (4, 4, 8), (6, 8, 10)]);
        let spec = BlockSpec::new(vec![1, 4], vec![0, 0]).with_grid(vec![2, 2]);
        let x = input(&[1, 4, 4]);
        let e = predict_blockwise(
            x.view(),
            &spec,
            |b: ArrayViewD<f32>| Ok::<_, std::convert::Infallible>(b.to_owned()),
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("smaller than the grid"), "{e}");
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
