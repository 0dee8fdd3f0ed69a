//! Prediction of a whole zarr array with a trained model, streamed block by block from the
//! input array to a new output array (`dacapo predict`), so memory stays bounded by the
//! block size whatever the array size.

use std::path::{Component, Path, PathBuf};
use std::time::Instant;

use dacapo_data::{Normalizer, WriteOptions, ZarrArray, create_array};
use dacapo_models::{Task, UNet};
use dacapo_runtime::Progress;
use ndarray::{ArrayD, ArrayViewD, Axis};

use crate::ValidatorError;
use crate::blockwise::{block_count, predict_blockwise_with};
use crate::run::{check_block_memory, network_blocks, predict_block, report_blocks};

/// A zarr container and optionally an array path inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZarrPath {
    /// The container directory (the path up to its last component ending in `.zarr`).
    pub container: PathBuf,
    /// The array path inside the container, if one was given.
    pub array: Option<String>,
}

impl ZarrPath {
    /// Splits `data/cells.zarr/raw/s0` into container `data/cells.zarr` and array `raw/s0`.
    ///
    /// The container is the path up to its last component that ends in `.zarr` (or `.zarr/`);
    /// a path with no such component is an error that says so.
    pub fn parse(text: &str) -> Result<Self, String> {
        let path = Path::new(text);
        let components: Vec<Component> = path.components().collect();
        let Some(at) = components.iter().rposition(
            |c| matches!(c, Component::Normal(n) if n.to_string_lossy().ends_with(".zarr")),
        ) else {
            return Err(format!(
                "{text:?} names no zarr container: expected CONTAINER.zarr or \
                 CONTAINER.zarr/ARRAY (e.g. data/cells.zarr/raw)"
            ));
        };
        let container: PathBuf = components[..=at].iter().collect();
        let rest: Vec<String> = components[at + 1..]
            .iter()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        Ok(Self {
            container,
            array: if rest.is_empty() {
                None
            } else {
                Some(rest.join("/"))
            },
        })
    }
}

/// One `dacapo predict` job.
pub struct PredictJob<'a> {
    /// The trained network.
    pub model: &'a UNet,
    /// Its task (decides the output activation and channels).
    pub task: &'a Task,
    /// The input array (`dims` spatial axes, optionally a leading channel axis).
    pub input: &'a ZarrArray,
    /// Normalisation applied to every input block.
    pub normalizer: Normalizer,
    /// Output container.
    pub output_container: &'a Path,
    /// Output array path inside the container.
    pub output_array: &'a str,
    /// Spatial input block (default: the validator's default block).
    pub block_shape: Option<&'a [usize]>,
    /// Replace an existing output array.
    pub overwrite: bool,
}

/// What [`predict_zarr`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct PredictSummary {
    /// Shape of the output array, `(channels, spatial...)`.
    pub shape: Vec<usize>,
    /// Number of blocks predicted.
    pub blocks: usize,
    /// Spatial input block used.
    pub input_block: Vec<usize>,
    /// Wall time in seconds.
    pub seconds: f64,
}

/// Predicts the whole input array of `job` blockwise into a new `f32` array
/// `(out_channels, spatial...)` with the input's voxel size, offset and spatial axis names,
/// reporting the blocks to `progress`.
pub fn predict_zarr(
    job: &PredictJob,
    progress: &dyn Progress,
) -> Result<PredictSummary, ValidatorError> {
    let start = Instant::now();
    let net = job.model.config();
    let meta = job.input.meta();
    let input_err = |message: String| ValidatorError::Prediction {
        shape: meta.shape.iter().map(|&s| s as usize).collect(),
        reason: format!(
            "input {:?} in {}: {message}",
            job.input.path(),
            job.input.container().display()
        ),
    };
    if meta.spatial_dims() != net.dims {
        return Err(input_err(format!(
            "has {} spatial axes but the network is {}D",
            meta.spatial_dims(),
            net.dims
        )));
    }
    let channels = meta.channels() as usize;
    if channels != net.in_channels {
        return Err(input_err(format!(
            "has {channels} channels but the network takes {}",
            net.in_channels
        )));
    }
    let spatial: Vec<usize> = meta.spatial_shape().iter().map(|&s| s as usize).collect();
    let blocks = network_blocks(net, job.block_shape, &spatial)?;
    check_block_memory(net, &blocks)?;
    let out_channels = job.task.out_channels();
    let mut shape = vec![out_channels];
    shape.extend(&spatial);
    let mut chunk = vec![out_channels as u64];
    chunk.extend(
        blocks
            .spec
            .output_block
            .iter()
            .zip(&spatial)
            .map(|(&b, &n)| b.min(n) as u64),
    );
    let mut axis_names = vec!["c^".to_owned()];
    axis_names.extend(
        meta.axis_names[usize::from(meta.channel_axis)..]
            .iter()
            .cloned(),
    );
    let opts = WriteOptions {
        chunk_shape: Some(chunk),
        voxel_size: Some(meta.voxel_size.clone()),
        offset: Some(meta.offset.clone()),
        axis_names: Some(axis_names),
        overwrite: job.overwrite,
        ..WriteOptions::default()
    };
    let shape_u64: Vec<u64> = shape.iter().map(|&s| s as u64).collect();
    let writer = create_array::<f32>(job.output_container, job.output_array, &shape_u64, &opts)?;
    let total = block_count(&spatial, &blocks.spec);
    let mut blocks_done = progress.blocks(&format!("predict {}", job.input.path()), total as u64);
    let mut report = report_blocks(&mut *blocks_done);
    predict_blockwise_with(
        channels,
        &spatial,
        &blocks.spec,
        |lo: &[usize], len: &[usize]| {
            let lo: Vec<u64> = lo.iter().map(|&v| v as u64).collect();
            let len: Vec<u64> = len.iter().map(|&v| v as u64).collect();
            let mut data = job.input.read_f32(&lo, &len)?;
            job.normalizer.apply(&mut data);
            Ok::<ArrayD<f32>, dacapo_data::DataError>(if meta.channel_axis {
                data
            } else {
                data.insert_axis(Axis(0))
            })
        },
        |block: ArrayViewD<f32>| predict_block(job.model, job.task, block, &blocks.crop),
        |begin: &[usize], block: ArrayViewD<f32>| {
            let mut at = vec![0u64];
            at.extend(begin.iter().map(|&b| b as u64));
            writer.write(&at, &block.as_standard_layout().into_owned())
        },
        Some(&mut report),
    )?;
    Ok(PredictSummary {
        shape,
        blocks: total,
        input_block: blocks.spec.input_block(),
        seconds: start.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zarr_paths() {
        let p = ZarrPath::parse("data/cells.zarr/raw/s0").unwrap();
        assert_eq!(p.container, PathBuf::from("data/cells.zarr"));
        assert_eq!(p.array.as_deref(), Some("raw/s0"));
        let p = ZarrPath::parse("/tmp/out.zarr/").unwrap();
        assert_eq!(p.container, PathBuf::from("/tmp/out.zarr"));
        assert_eq!(p.array, None);
        let p = ZarrPath::parse("a.zarr/b.zarr/c").unwrap();
        assert_eq!(p.container, PathBuf::from("a.zarr/b.zarr"));
        assert_eq!(p.array.as_deref(), Some("c"));
        let e = ZarrPath::parse("data/cells/raw").unwrap_err();
        assert!(e.contains("CONTAINER.zarr/ARRAY"), "{e}");
    }
}
