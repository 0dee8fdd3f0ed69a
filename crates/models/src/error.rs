//! The error type of dacapo-models.

/// Everything that can go wrong in dacapo-models.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// An architecture or task configuration that cannot describe a network.
    #[error("invalid {what} configuration: {reason}")]
    Config {
        /// "architecture" or "task".
        what: &'static str,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// An input size that the U-Net cannot process on one axis.
    #[error(
        "input size {size} on spatial axis {axis} does not fit this U-Net: {reason}; \
         the nearest valid sizes are {below} and {above}"
    )]
    InvalidInputShape {
        /// Spatial axis index (0 = first spatial axis).
        axis: usize,
        /// The offending size.
        size: usize,
        /// Why it does not fit.
        reason: String,
        /// Largest valid size below `size` (0 when there is none).
        below: usize,
        /// Smallest valid size above `size`.
        above: usize,
    },
    /// An array or tensor with the wrong rank, channel count or shape for an operation.
    #[error("{what}: expected shape {expected}, found {found:?}")]
    Shape {
        /// Which array (e.g. "input batch", "labels", "weight").
        what: String,
        /// The expected shape, in words.
        expected: String,
        /// The shape found.
        found: Vec<usize>,
    },
    /// A tensor needed to load a model or optimizer is absent from the map.
    #[error("tensor {name:?} is missing from the {map} tensors{hint}")]
    MissingTensor {
        /// "model" or "optimizer".
        map: &'static str,
        /// Name of the missing tensor.
        name: String,
        /// Extra context (e.g. what the map does hold).
        hint: String,
    },
    /// A tensor whose shape or dtype differs from the parameter it should fill.
    #[error(
        "{map} tensor {name:?} has shape {found:?} and dtype {dtype}, expected shape {expected:?} and F32"
    )]
    TensorMismatch {
        /// "model" or "optimizer".
        map: &'static str,
        /// Tensor name.
        name: String,
        /// The parameter's shape.
        expected: Vec<usize>,
        /// The shape in the map.
        found: Vec<usize>,
        /// The dtype in the map.
        dtype: String,
    },
    /// Tensors in a map that the model has no parameter for.
    #[error(
        "{map} tensors {names:?} match no parameter of this model (was it saved from another architecture?)"
    )]
    UnusedTensors {
        /// "model" or "optimizer".
        map: &'static str,
        /// The unmatched names.
        names: Vec<String>,
    },
    /// Optimizer state that burn produced or accepts in an unexpected layout.
    #[error("optimizer state: {0}")]
    OptimizerState(String),
    /// An error from dacapo-core (tensor conversion).
    #[error(transparent)]
    Core(#[from] dacapo_core::CoreError),
    /// A loss that is not a finite number.
    #[error("the loss is {0}: training diverged or the batch holds non-finite values")]
    NonFiniteLoss(f64),
}
