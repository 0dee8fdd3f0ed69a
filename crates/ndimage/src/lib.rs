//! N-dimensional image operations on `ndarray` arrays: exact Euclidean distance transforms,
//! connected components, relabelling, seeded watershed and affinity agglomeration (mutex
//! watershed, watershed fragments, mean-affinity agglomeration and fragment filling).
//!
//! Arrays are any-dimensional (`ArrayD`); spatial axes only (no channel axis) unless a function
//! says otherwise. Labels are `u64` with 0 meaning background.

mod affinity;
mod edt;
mod error;
mod fx;
mod label;
mod region_graph;
mod union_find;
mod watershed;

pub use affinity::{affinity_connected_components, mutex_watershed};
pub use edt::distance_transform_edt;
pub use error::NdimageError;
pub use label::{Connectivity, connected_components, relabel_consecutive, remove_small_segments};
pub use region_graph::RegionGraph;
pub use union_find::UnionFind;
pub use watershed::{boundary_map, maximum_filter, seeded_watershed, watershed_fragments};
