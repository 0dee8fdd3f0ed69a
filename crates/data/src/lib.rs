//! dacapo-data: zarr arrays, datasplits, batch sampling, augmentation and synthetic data.
//!
//! - [`ZarrArray`] opens zarr v2/v3 arrays (any integer or float dtype) and reads spatial
//!   regions as `f32` (raw), `u64` (labels) or `bool` (masks), with voxel size, offset, axis
//!   names and channel axis in [`ArrayMeta`]; [`write_array`]/[`create_array`] write them,
//!   with OME-Zarr `multiscales` metadata for viewers ([`ome`]).
//! - [`Dataset`] combines raw (normalised by a [`Normalizer`]), gt and an optional mask on one
//!   voxel grid; [`DataSplit`] opens a run's train and validation datasets.
//! - [`BatchSampler::batch`] draws augmented training batches as a pure function of
//!   `(seed, iteration)`.
//! - [`Prefetch`] prepares batches on worker threads ahead of the training step.
//! - [`ensure_synthetic`] generates a synthetic cells container for quickstarts and tests.
//!
//! This crate does not depend on burn: batches are `ndarray` arrays.

pub mod array;
mod augment;
pub mod dataset;
pub mod error;
pub mod normalize;
pub mod ome;
pub mod prefetch;
pub mod sampler;
pub mod synthetic;
pub mod write;

pub use array::{ArrayMeta, Dtype, ZarrArray};
pub use dataset::{DEFAULT_CACHE_BYTES, DataSplit, Dataset, OpenOptions};
pub use error::{DataError, Result};
pub use normalize::Normalizer;
pub use prefetch::Prefetch;
pub use sampler::{Batch, BatchSampler, SampleInfo, SamplerSpec, sample_seed};
pub use synthetic::{SyntheticVolume, ensure_synthetic, generate};
pub use write::{
    ArrayWriter, WriteElement, WriteOptions, ZarrVersion, create_array, open_writer, write_array,
};
