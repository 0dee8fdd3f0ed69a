//! N-dimensional image operations on `ndarray` arrays: exact Euclidean distance transforms,
//! connected components, relabelling and affinity agglomeration (mutex watershed).
//!
//! Arrays are any-dimensional (`ArrayD`); spatial axes only (no channel axis) unless a function
//! says otherwise. Labels are `u64` with 0 meaning background.

mod affinity;
mod edt;
mod error;
mod label;
mod union_find;

pub use affinity::{affinity_connected_components, mutex_watershed};
pub use edt::distance_transform_edt;
pub use error::NdimageError;
pub use label::{Connectivity, connected_components, relabel_consecutive};
pub use union_find::UnionFind;
