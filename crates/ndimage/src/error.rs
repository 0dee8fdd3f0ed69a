//! The error type of dacapo-ndimage.

/// Errors of the ndimage operations that take user-shaped inputs (affinities, offsets).
#[derive(Debug, thiserror::Error)]
pub enum NdimageError {
    /// The affinities' channel count differs from the number of offsets.
    #[error(
        "affinities have {channels} channels but {offsets} offsets were given: pass one offset per channel"
    )]
    ChannelCount {
        /// Channels of the affinity array (its first axis).
        channels: usize,
        /// Number of offsets passed.
        offsets: usize,
    },
    /// An offset has a different number of components than the array has spatial axes.
    #[error(
        "offset {index} is {offset:?} ({len} components) but the affinities have {spatial} spatial axes"
    )]
    OffsetDims {
        /// Index of the offending offset.
        index: usize,
        /// The offending offset.
        offset: Vec<isize>,
        /// Its number of components.
        len: usize,
        /// Number of spatial axes of the affinities.
        spatial: usize,
    },
    /// The affinity array has no channel axis.
    #[error("affinities must have a channel axis first, (c, spatial...); got a 0-d array")]
    NoChannelAxis,
    /// The array has more voxels than the 32-bit voxel indices of the agglomeration support.
    #[error("array has {voxels} voxels, more than the supported {max}: process it in blocks")]
    TooLarge {
        /// Number of voxels of the array.
        voxels: usize,
        /// Largest supported number of voxels.
        max: usize,
    },
    /// Two arrays that must have the same spatial shape do not.
    #[error("{what}: shapes {left:?} and {right:?} differ; pass arrays of the same spatial shape")]
    ShapeMismatch {
        /// Which two arrays.
        what: &'static str,
        /// Shape of the first.
        left: Vec<usize>,
        /// Shape of the second.
        right: Vec<usize>,
    },
}
