//! The error type of dacapo-validator.

/// Errors of blockwise prediction, post-processing and evaluation.
#[derive(Debug, thiserror::Error)]
pub enum ValidatorError {
    /// Two arrays that must have the same shape do not.
    #[error("{what}: shapes differ, {left:?} vs {right:?}")]
    ShapeMismatch {
        /// Which arrays were compared (e.g. "prediction vs ground truth").
        what: String,
        /// Shape of the first array.
        left: Vec<usize>,
        /// Shape of the second array.
        right: Vec<usize>,
    },
    /// A per-axis list (voxel size, block shape, context, offsets) has the wrong length.
    #[error("{what} has {got} values but the array has {expected} spatial axes")]
    AxisCount {
        /// Which list (e.g. "voxel_size").
        what: String,
        /// Its length.
        got: usize,
        /// Number of spatial axes.
        expected: usize,
    },
    /// A voxel size that is not finite and positive on every axis.
    #[error("voxel size {voxel_size:?} must be finite and positive on every axis")]
    VoxelSize {
        /// The offending voxel size.
        voxel_size: Vec<f64>,
    },
    /// A prediction array that cannot be post-processed as asked.
    #[error("prediction of shape {shape:?} cannot be post-processed: {reason}")]
    Prediction {
        /// Shape of the prediction.
        shape: Vec<usize>,
        /// What is wrong and what was expected.
        reason: String,
    },
    /// A parameter set that does not belong to the post-processor it was given to.
    #[error("post-processor {post_processor} cannot use parameters {parameters}")]
    WrongParameters {
        /// The post-processor's name.
        post_processor: &'static str,
        /// The id of the parameters given.
        parameters: String,
    },
    /// A parameter id string that does not parse.
    #[error(
        "invalid parameter id {id:?}: expected \"threshold=<f64>\" or \"bias=<f64>\", optionally \
         followed by \",min_size=<n>\" (n > 0), or \"argmax\""
    )]
    ParameterId {
        /// The offending id.
        id: String,
    },
    /// A block specification that cannot tile the array.
    #[error("invalid block specification: {0}")]
    BlockSpec(String),
    /// The block predictor returned an array of the wrong shape.
    #[error(
        "block {index} at output offset {offset:?}: predictor returned shape {got:?}, expected (channels, {expected:?})"
    )]
    BlockOutputShape {
        /// Index of the block in processing order.
        index: usize,
        /// Output-space start of the block.
        offset: Vec<usize>,
        /// Shape returned by the predictor.
        got: Vec<usize>,
        /// Expected spatial shape (the output block shape).
        expected: Vec<usize>,
    },
    /// Reading an input block or writing an output block failed.
    #[error("{action} block {index} at output offset {offset:?} failed: {source}")]
    BlockIo {
        /// Index of the block in processing order.
        index: usize,
        /// Output-space start of the block.
        offset: Vec<usize>,
        /// `reading` or `writing`.
        action: &'static str,
        /// The underlying error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The block predictor failed.
    #[error("predicting block {index} at output offset {offset:?} failed: {source}")]
    Predict {
        /// Index of the block in processing order.
        index: usize,
        /// Output-space start of the block.
        offset: Vec<usize>,
        /// The predictor's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A validation dataset whose gt does not overlap its raw.
    #[error(
        "validation dataset {dataset:?}: gt does not overlap raw, so nothing can be scored; \
         check the arrays' offsets and voxel sizes"
    )]
    NoOverlap {
        /// The dataset's name.
        dataset: String,
    },
    /// A validation dataset that cannot be predicted or scored.
    #[error("validation dataset {dataset:?}: {source}")]
    Dataset {
        /// The dataset's name.
        dataset: String,
        /// What went wrong.
        source: Box<ValidatorError>,
    },
    /// A run that cannot be validated or predicted with as asked.
    #[error("run `{run}`: {message}")]
    Run {
        /// The run.
        run: dacapo_core::RunName,
        /// What is wrong and what to do.
        message: String,
    },
    /// The bookkeeping of a resumable prediction could not be read or written.
    #[error("{action} {path}: {source}")]
    Ledger {
        /// What was attempted.
        action: &'static str,
        /// The file or directory.
        path: std::path::PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A prediction job that cannot be used as it is.
    #[error("prediction job {path}: {message}")]
    Job {
        /// The job file (or output array).
        path: std::path::PathBuf,
        /// What is wrong and what to do.
        message: String,
    },
    /// Another launch works on the same output.
    #[error("output {output} is busy: {who}")]
    Busy {
        /// The output array's directory.
        output: std::path::PathBuf,
        /// Who holds it.
        who: String,
    },
    /// A validation snapshot could not be written.
    #[error("cannot write the validation snapshot {path}: {source}")]
    Snapshot {
        /// The PNG file.
        path: std::path::PathBuf,
        /// The operating system's (or encoder's) error.
        #[source]
        source: std::io::Error,
    },
    /// Reading or writing arrays failed.
    #[error(transparent)]
    Data(#[from] dacapo_data::DataError),
    /// The network could not be built or run.
    #[error(transparent)]
    Model(#[from] dacapo_models::ModelError),
    /// Opening the stores, picking the device or loading a checkpoint failed.
    #[error(transparent)]
    Runtime(#[from] dacapo_runtime::RuntimeError),
    /// A store operation failed.
    #[error(transparent)]
    Store(#[from] dacapo_store::StoreError),
    /// Scores that do not fit the run's validation metadata.
    #[error(transparent)]
    Core(#[from] dacapo_core::CoreError),
    /// An error of the ndimage operations (affinity agglomeration inputs).
    #[error(transparent)]
    Ndimage(#[from] dacapo_ndimage::NdimageError),
}
