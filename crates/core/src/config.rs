//! The run configuration: one TOML file per run, with `DACAPO__SECTION__KEY` overrides.
//!
//! Unknown keys are errors that name the key and the file. Relative paths are relative to
//! the working directory of the process that reads the config.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use crate::device::DeviceSpec;
use crate::error::CoreError;
use crate::name::{RunName, validate_name};

/// Prefix of environment variables that override config keys (`DACAPO__RUN__SEED=7`).
pub const ENV_PREFIX: &str = "DACAPO";
/// Separator between prefix, section and key in override variables.
pub const ENV_SEPARATOR: &str = "__";

/// A whole run: what to train, on what, how long, and where to store it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Name, length and schedule of the run.
    pub run: RunSection,
    /// What the network learns to predict.
    pub task: TaskConfig,
    /// The network.
    pub architecture: ArchitectureConfig,
    /// Optimiser, batch and augmentation.
    #[serde(default)]
    pub trainer: TrainerConfig,
    /// Training and validation data.
    pub datasplit: DataSplitConfig,
    /// Where checkpoints and statistics go.
    #[serde(default)]
    pub stores: StoresConfig,
    /// How validation runs.
    #[serde(default)]
    pub validation: ValidationConfig,
    /// What training logs as it goes (TensorBoard event files).
    #[serde(default)]
    pub logging: LoggingConfig,
}

/// The `[run]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSection {
    /// Run name; also its directory name in the stores.
    pub name: RunName,
    /// Number of optimizer steps to train for.
    pub train_until: u64,
    /// Steps between checkpoints (each followed by a validation).
    pub validation_interval: u64,
    /// Seed of initialisation, sampling and augmentation.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Compute backend.
    #[serde(default)]
    pub backend: Backend,
    /// Device of the backend (`"cpu"`, `"cuda:1"`, ...); the backend's preferred one by
    /// default. Results do not depend on it beyond floating-point rounding, so it is not
    /// part of the config hash: a run may continue on another device.
    #[serde(default)]
    pub device: DeviceSpec,
    /// CPU threads for the flex backend (default: all cores).
    #[serde(default)]
    pub threads: Option<usize>,
}

fn default_seed() -> u64 {
    42
}

/// The compute backend; each is a cargo feature of the `dacapo` binary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Pure-Rust CPU backend (default feature `flex`).
    #[default]
    Flex,
    /// Vulkan/Metal/DX12 GPUs through wgpu (feature `wgpu`).
    Wgpu,
    /// NVIDIA GPUs through CUDA (feature `cuda`; its build needs internet).
    Cuda,
    /// libtorch (feature `tch`; needs a local libtorch).
    Tch,
}

impl Backend {
    /// Every backend.
    pub const ALL: [Backend; 4] = [Backend::Flex, Backend::Wgpu, Backend::Cuda, Backend::Tch];

    /// The name used in configs, on the command line and as the cargo feature.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Flex => "flex",
            Backend::Wgpu => "wgpu",
            Backend::Cuda => "cuda",
            Backend::Tch => "tch",
        }
    }
}

impl std::str::FromStr for Backend {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Backend::ALL
            .into_iter()
            .find(|b| b.name() == s)
            .ok_or_else(|| format!("unknown backend {s:?}: expected one of flex, wgpu, cuda, tch"))
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The `[task]` section: what the network predicts, its loss and post-processing sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum TaskConfig {
    /// tanh-scaled signed distance to object boundaries, MSE loss.
    Distance {
        /// Distances are divided by this (in voxels) before tanh.
        #[serde(default = "default_scale_factor")]
        scale_factor: f64,
        /// Thresholds (in tanh space) swept during validation.
        #[serde(default = "default_distance_thresholds")]
        thresholds: Vec<f64>,
    },
    /// Affinities to neighbours at the given offsets.
    Affinities {
        /// Offsets, one per output channel (default: unit offsets along each axis).
        #[serde(default)]
        neighborhood: Option<Vec<Vec<i64>>>,
        /// Loss on the affinities.
        #[serde(default)]
        loss: AffinityLoss,
        /// Agglomeration biases swept during validation.
        #[serde(default = "default_biases")]
        biases: Vec<f64>,
        /// How validation turns affinities into segments (not part of the config hash).
        #[serde(default)]
        post_process: AffinityPostProcess,
        /// Mean-affinity thresholds of the `watershed` agglomeration swept during validation
        /// (not part of the config hash).
        #[serde(default = "default_merge_thresholds")]
        thresholds: Vec<f64>,
    },
    /// Foreground vs background, BCE loss.
    Binary {
        /// Probability thresholds swept during validation.
        #[serde(default = "default_binary_thresholds")]
        thresholds: Vec<f64>,
    },
    /// One class per label value, cross-entropy loss.
    OneHot {
        /// Class names; label value `i` is class `i`.
        classes: Vec<String>,
    },
}

fn default_scale_factor() -> f64 {
    10.0
}
fn default_distance_thresholds() -> Vec<f64> {
    vec![-0.5, -0.25, 0.0, 0.25, 0.5]
}
fn default_biases() -> Vec<f64> {
    vec![0.1, 0.25, 0.5, 0.75, 0.9]
}
fn default_merge_thresholds() -> Vec<f64> {
    vec![0.1, 0.25, 0.5, 0.75, 0.9]
}
fn default_binary_thresholds() -> Vec<f64> {
    // 127/255 is DaCapo's default threshold on 8-bit predictions.
    vec![0.1, 0.3, 127.0 / 255.0, 0.7, 0.9]
}

impl TaskConfig {
    /// The affinity offsets of an affinities task (unit offsets along each of `dims` axes
    /// when `neighborhood` is not set); `None` for other tasks.
    pub fn neighborhood(&self, dims: usize) -> Option<Vec<Vec<i64>>> {
        match self {
            TaskConfig::Affinities { neighborhood, .. } => {
                Some(neighborhood.clone().unwrap_or_else(|| {
                    (0..dims)
                        .map(|a| (0..dims).map(|b| i64::from(a == b)).collect())
                        .collect()
                }))
            }
            _ => None,
        }
    }

    /// The `kind` string of this task.
    pub fn kind(&self) -> &'static str {
        match self {
            TaskConfig::Distance { .. } => "distance",
            TaskConfig::Affinities { .. } => "affinities",
            TaskConfig::Binary { .. } => "binary",
            TaskConfig::OneHot { .. } => "one_hot",
        }
    }
}

/// Post-processing of the affinities task in validation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AffinityPostProcess {
    /// Mutex watershed of all affinities for each of `biases`.
    #[default]
    Mws,
    /// Watershed fragments of the boundary map (distance-transform seeds) agglomerated by mean
    /// affinity for each of `thresholds` (DaCapo's/lsd's watershed pipeline).
    Watershed,
}

/// Loss used by the affinities task.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AffinityLoss {
    /// Binary cross-entropy on logits.
    #[default]
    Bce,
    /// Mean squared error on sigmoid outputs.
    Mse,
}

/// The `[architecture]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ArchitectureConfig {
    /// DaCapo's CNNectomeUNet.
    Unet(UNetConfig),
}

/// A U-Net in 2D or 3D (DaCapo's CNNectomeUNet).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UNetConfig {
    /// Spatial dimensions: 2 or 3.
    pub dims: usize,
    /// Channels of the raw input.
    #[serde(default = "one")]
    pub in_channels: usize,
    /// Feature maps at the top level.
    #[serde(default = "default_fmaps")]
    pub fmaps: usize,
    /// Factor by which feature maps grow per level.
    #[serde(default = "default_fmap_inc_factor")]
    pub fmap_inc_factor: usize,
    /// Max-pool factors per level, one list of `dims` factors each.
    pub downsample_factors: Vec<Vec<usize>>,
    /// Convolution kernel size (same along every axis).
    #[serde(default = "default_kernel_size")]
    pub kernel_size: usize,
    /// Convolutions per level.
    #[serde(default = "default_convs_per_level")]
    pub convs_per_level: usize,
    /// Valid (shrinking) or same (padded) convolutions.
    #[serde(default)]
    pub padding: Padding,
    /// How the decoder upsamples.
    #[serde(default)]
    pub upsample: Upsample,
    /// Spatial shape of a training input block (rounded to the nearest valid shape).
    pub input_shape: Vec<usize>,
}

fn one() -> usize {
    1
}
fn default_fmaps() -> usize {
    12
}
fn default_fmap_inc_factor() -> usize {
    2
}
fn default_kernel_size() -> usize {
    3
}
fn default_convs_per_level() -> usize {
    2
}

/// Convolution padding.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Padding {
    /// No padding: outputs shrink and tile exactly (DaCapo's default).
    #[default]
    Valid,
    /// Zero padding: output shape equals input shape.
    Same,
}

/// Decoder upsampling.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Upsample {
    /// Strided transposed convolution.
    #[default]
    Transposed,
    /// Nearest-neighbour repeat followed by a 1x1 convolution (DaCapo's `constant_upsample`).
    Nearest,
}

/// The `[trainer]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainerConfig {
    /// Samples per step.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Learning rate.
    #[serde(default = "default_learning_rate")]
    pub learning_rate: f64,
    /// Optimiser.
    #[serde(default)]
    pub optimizer: OptimizerKind,
    /// L2 weight decay.
    #[serde(default)]
    pub weight_decay: f64,
    /// Augmentations applied to each training sample, in this order.
    #[serde(default)]
    pub augment: Vec<Augment>,
    /// Parameters of the augmentations.
    #[serde(default)]
    pub augment_params: AugmentParams,
    /// Batches prepared ahead of the training step on worker threads (0: prepare each batch
    /// between steps). Batches depend only on `(seed, iteration)`, so this never changes
    /// results and is not part of the config hash.
    #[serde(default = "default_prefetch")]
    pub prefetch: usize,
}

fn default_batch_size() -> usize {
    2
}
fn default_prefetch() -> usize {
    2
}
fn default_learning_rate() -> f64 {
    1e-4
}

impl Default for TrainerConfig {
    fn default() -> Self {
        Self {
            batch_size: default_batch_size(),
            learning_rate: default_learning_rate(),
            optimizer: OptimizerKind::default(),
            weight_decay: 0.0,
            augment: Vec::new(),
            augment_params: AugmentParams::default(),
            prefetch: default_prefetch(),
        }
    }
}

/// Optimiser kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// Adam (betas 0.9, 0.999; eps 1e-8).
    #[default]
    Adam,
}

/// One augmentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Augment {
    /// Random flips along each spatial axis.
    Mirror,
    /// Random permutation of spatial axes of equal size.
    Transpose,
    /// Random intensity scale and shift.
    Intensity,
    /// Random gamma.
    Gamma,
    /// Additive gaussian noise.
    Noise,
    /// Smooth random elastic deformation.
    Elastic,
}

/// Parameters of the augmentations (`[trainer.augment_params]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AugmentParams {
    /// Range of the intensity scale factor.
    pub intensity_scale: [f64; 2],
    /// Range of the intensity shift.
    pub intensity_shift: [f64; 2],
    /// Range of the gamma exponent.
    pub gamma: [f64; 2],
    /// Standard deviation of the additive noise.
    pub noise_std: f64,
    /// Spacing of the elastic control grid, in voxels.
    pub elastic_spacing: f64,
    /// Standard deviation of the control point displacements, in voxels.
    pub elastic_sigma: f64,
}

impl Default for AugmentParams {
    fn default() -> Self {
        Self {
            intensity_scale: [0.9, 1.1],
            intensity_shift: [-0.1, 0.1],
            gamma: [0.75, 1.333],
            noise_std: 0.03,
            elastic_spacing: 16.0,
            elastic_sigma: 2.0,
        }
    }
}

/// The `[datasplit]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSplitConfig {
    /// Training datasets.
    pub train: Vec<DatasetConfig>,
    /// Validation datasets.
    #[serde(default)]
    pub validate: Vec<DatasetConfig>,
    /// Synthetic data to generate where the zarr container is missing.
    #[serde(default)]
    pub synthetic: Option<SyntheticConfig>,
}

/// One dataset: raw, ground truth and an optional mask in a zarr container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetConfig {
    /// Name used in scores and best records (default: derived from zarr path and raw array).
    #[serde(default)]
    pub name: Option<String>,
    /// Path of the zarr container (v2 or v3).
    pub zarr: PathBuf,
    /// Raw array path inside the container.
    pub raw: String,
    /// Ground-truth label array path inside the container.
    pub gt: String,
    /// Optional mask array (non-zero = use for the loss).
    #[serde(default)]
    pub mask: Option<String>,
    /// Relative sampling weight of this dataset during training.
    #[serde(default = "default_weight")]
    pub weight: f64,
    /// How raw intensities are mapped to floats.
    #[serde(default)]
    pub normalize: Normalize,
}

fn default_weight() -> f64 {
    1.0
}

impl DatasetConfig {
    /// The dataset's name: `name`, or `<zarr file stem>_<raw array>` with unsafe characters
    /// replaced by `_`.
    pub fn display_name(&self) -> String {
        if let Some(name) = &self.name {
            return name.clone();
        }
        let stem = self
            .zarr
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        format!("{stem}_{}", self.raw)
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                    c
                } else {
                    '_'
                }
            })
            .collect::<String>()
            .trim_start_matches(['.', '-', '_'])
            .to_owned()
    }
}

/// How raw intensities become floats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Normalize {
    /// Map the given percentiles of the array to 0 and 1 (computed once per array).
    #[default]
    Percentile,
    /// Map `min` to 0 and `max` to 1.
    Range {
        /// Value mapped to 0.
        min: f64,
        /// Value mapped to 1.
        max: f64,
    },
    /// Use values as they are.
    None,
}

/// Synthetic data generated into a zarr container when it does not exist.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyntheticConfig {
    /// Container to create.
    pub zarr: PathBuf,
    /// Spatial shape of each generated array.
    pub shape: Vec<usize>,
    /// Seed of the generator.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Approximate number of objects per array.
    #[serde(default = "default_objects")]
    pub objects: usize,
    /// Standard deviation of the noise added to raw.
    #[serde(default = "default_noise")]
    pub noise: f64,
}

fn default_objects() -> usize {
    40
}
fn default_noise() -> f64 {
    0.1
}

/// The `[stores]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoresConfig {
    /// Root directory of the local weights and stats stores.
    #[serde(default = "default_root")]
    pub root: PathBuf,
    /// Newest checkpoints kept; checkpoints of best records are always kept.
    #[serde(default = "default_keep_last")]
    pub keep_last: usize,
    /// Stats store URL (`postgres://host/db`); default: files under `root`. Credentials come
    /// from the environment (`PGPASSWORD`, ...), never from this file.
    #[serde(default)]
    pub stats: Option<String>,
    /// Weights store URL (`s3://bucket/prefix`); default: files under `root`. Credentials come
    /// from the environment (`AWS_ACCESS_KEY_ID`, ...), never from this file.
    #[serde(default)]
    pub weights: Option<String>,
}

fn default_root() -> PathBuf {
    PathBuf::from("runs")
}
fn default_keep_last() -> usize {
    5
}

impl Default for StoresConfig {
    fn default() -> Self {
        Self {
            root: default_root(),
            keep_last: default_keep_last(),
            stats: None,
            weights: None,
        }
    }
}

/// The `[validation]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidationConfig {
    /// Spatial shape of a prediction input block (default: the training input shape).
    #[serde(default)]
    pub block_shape: Option<Vec<usize>>,
    /// Keep prediction zarrs of checkpoints that retention removes.
    #[serde(default)]
    pub keep_predictions: bool,
    /// Segment sizes (voxels) swept with the task's parameters: instance segments smaller than
    /// this are merged into their most affine neighbour (affinities) or removed (distance,
    /// binary); 0 keeps every segment.
    #[serde(default = "default_min_sizes")]
    pub min_sizes: Vec<u64>,
}

fn default_min_sizes() -> Vec<u64> {
    vec![0, 25, 100]
}

impl Default for ValidationConfig {
    fn default() -> Self {
        Self {
            block_shape: None,
            keep_predictions: false,
            min_sizes: default_min_sizes(),
        }
    }
}

/// The `[logging]` section: TensorBoard event files written while training. None of it
/// changes what is trained (it is not part of the config hash).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggingConfig {
    /// Write TensorBoard event files.
    #[serde(default = "yes")]
    pub tensorboard: bool,
    /// Directory whose `<run>/` subdirectory gets the event files (default: `stores.root`,
    /// so `tensorboard --logdir <root>` shows every run under its name).
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// Steps between logged training scalars (loss, learning rate, iterations/s).
    #[serde(default = "one_u64")]
    pub stride: u64,
}

fn yes() -> bool {
    true
}
fn one_u64() -> u64 {
    1
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self {
            tensorboard: true,
            dir: None,
            stride: 1,
        }
    }
}

impl LoggingConfig {
    /// The directory of `run`'s event files, given the config's store root.
    pub fn run_dir(&self, root: &Path, run: &str) -> PathBuf {
        self.dir.as_deref().unwrap_or(root).join(run)
    }
}

impl RunConfig {
    /// Reads a run config from a TOML file, then applies `DACAPO__SECTION__KEY` overrides.
    pub fn load(path: &Path) -> Result<Self, CoreError> {
        let text = std::fs::read_to_string(path).map_err(|source| CoreError::ConfigIo {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml_with_env(&text, path, std::env::vars())
    }

    /// Parses a run config from TOML text (no environment overrides); `path` names it in errors.
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, CoreError> {
        Self::from_toml_with_env(text, path, std::iter::empty())
    }

    /// Parses TOML text and applies overrides from the given `(name, value)` variables.
    pub fn from_toml_with_env(
        text: &str,
        path: &Path,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, CoreError> {
        // toml reports syntax errors and unknown keys with line, column and key path, which
        // the `config` crate loses; so the file alone is checked with toml first.
        let from_file: RunConfig = toml::from_str(text).map_err(|e| CoreError::Config {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        let overrides: BTreeMap<String, String> = vars
            .into_iter()
            .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}{ENV_SEPARATOR}")))
            .collect();
        let config = if overrides.is_empty() {
            from_file
        } else {
            Self::apply_overrides(text, path, &overrides)?
        };
        config.check(path)?;
        Ok(config)
    }

    fn apply_overrides(
        text: &str,
        path: &Path,
        overrides: &BTreeMap<String, String>,
    ) -> Result<Self, CoreError> {
        let listed = overrides
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ");
        let env = config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator(ENV_SEPARATOR)
            .separator(ENV_SEPARATOR)
            .try_parsing(true)
            .source(Some(overrides.clone().into_iter().collect()));
        config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .add_source(env)
            .build()
            .and_then(|c| c.try_deserialize::<RunConfig>())
            .map_err(|e| CoreError::Config {
                path: path.to_owned(),
                message: format!("after environment overrides ({listed}): {e}"),
            })
    }

    /// Checks values that parse but cannot work.
    pub fn check(&self, path: &Path) -> Result<(), CoreError> {
        self.check_run()
            .and_then(|()| self.check_architecture())
            .and_then(|()| self.check_trainer())
            .and_then(|()| self.check_task())
            .and_then(|()| self.check_datasplit())
            .and_then(|()| self.check_stores())
            .map_err(|(field, message)| CoreError::ConfigValue {
                path: path.to_owned(),
                field,
                message,
            })
    }

    /// `[run]`: a schedule of at least one step and one checkpoint, at least one thread.
    fn check_run(&self) -> Result<(), Invalid> {
        if self.run.train_until == 0 {
            return invalid("run.train_until", "must be at least 1");
        }
        if self.run.validation_interval == 0 {
            return invalid(
                "run.validation_interval",
                "must be at least 1 (steps between checkpoints)",
            );
        }
        if self.run.threads == Some(0) {
            return invalid("run.threads", "must be at least 1 when given");
        }
        if self.logging.stride == 0 {
            return invalid(
                "logging.stride",
                "must be at least 1 (steps between logged training scalars)",
            );
        }
        Ok(())
    }

    /// `[architecture]`: 2 or 3 dims, and every per-axis list and size fits them.
    fn check_architecture(&self) -> Result<(), Invalid> {
        let ArchitectureConfig::Unet(unet) = &self.architecture;
        if !(2..=3).contains(&unet.dims) {
            return invalid(
                "architecture.dims",
                format!("is {}; only 2 and 3 are supported", unet.dims),
            );
        }
        for (i, f) in unet.downsample_factors.iter().enumerate() {
            if f.len() != unet.dims || f.contains(&0) {
                return invalid(
                    "architecture.downsample_factors",
                    format!(
                        "entry {i} is {f:?}; each entry needs {} factors >= 1",
                        unet.dims
                    ),
                );
            }
        }
        if unet.input_shape.len() != unet.dims {
            return invalid(
                "architecture.input_shape",
                format!(
                    "has {} axes but dims = {}",
                    unet.input_shape.len(),
                    unet.dims
                ),
            );
        }
        for (field, value) in [
            ("architecture.fmaps", unet.fmaps),
            ("architecture.fmap_inc_factor", unet.fmap_inc_factor),
            ("architecture.kernel_size", unet.kernel_size),
            ("architecture.convs_per_level", unet.convs_per_level),
            ("architecture.in_channels", unet.in_channels),
        ] {
            if value == 0 {
                return invalid(field, "must be at least 1");
            }
        }
        Ok(())
    }

    /// `[trainer]`: a batch and a positive, finite learning rate.
    fn check_trainer(&self) -> Result<(), Invalid> {
        if self.trainer.batch_size == 0 {
            return invalid("trainer.batch_size", "must be at least 1");
        }
        if !(self.trainer.learning_rate > 0.0 && self.trainer.learning_rate.is_finite()) {
            return invalid(
                "trainer.learning_rate",
                format!(
                    "is {}; it must be a positive number",
                    self.trainer.learning_rate
                ),
            );
        }
        Ok(())
    }

    /// `[task]`: offsets and classes that fit the network, a sweep of finite values.
    fn check_task(&self) -> Result<(), Invalid> {
        let ArchitectureConfig::Unet(unet) = &self.architecture;
        match &self.task {
            TaskConfig::Affinities {
                neighborhood: Some(n),
                ..
            } if n.is_empty()
                || n.iter()
                    .any(|o| o.len() != unet.dims || o.iter().all(|&x| x == 0)) =>
            {
                return invalid(
                    "task.neighborhood",
                    format!("needs non-zero offsets of {} values each", unet.dims),
                );
            }
            TaskConfig::OneHot { classes } if classes.len() < 2 => {
                return invalid("task.classes", "needs at least 2 classes");
            }
            _ => {}
        }
        let sweeps = match &self.task {
            TaskConfig::Distance { thresholds, .. } | TaskConfig::Binary { thresholds } => {
                vec![("task.thresholds", thresholds)]
            }
            TaskConfig::Affinities {
                biases, thresholds, ..
            } => vec![("task.biases", biases), ("task.thresholds", thresholds)],
            TaskConfig::OneHot { .. } => Vec::new(),
        };
        for (field, values) in sweeps {
            if values.is_empty() || values.iter().any(|v| !v.is_finite()) {
                return invalid(
                    field,
                    format!("is {values:?}; give at least one finite value to sweep in validation"),
                );
            }
        }
        if self.validation.min_sizes.is_empty() {
            return invalid(
                "validation.min_sizes",
                "is empty; give at least one size in voxels (0 keeps every segment)",
            );
        }
        Ok(())
    }

    /// `[datasplit]`: training data, unique and unreserved validation names, sane weights.
    fn check_datasplit(&self) -> Result<(), Invalid> {
        if self.datasplit.train.is_empty() {
            return invalid(
                "datasplit.train",
                "is empty; add at least one { zarr, raw, gt } dataset",
            );
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, d) in self.datasplit.validate.iter().enumerate() {
            let field = format!("datasplit.validate[{i}].name");
            let name = d.display_name();
            if let Err(e) = validate_name("dataset", &name) {
                return invalid(&field, e.to_string());
            }
            if crate::name::RESERVED_DATASET_NAMES.contains(&name.as_str()) {
                return invalid(
                    &field,
                    format!("{name:?} is reserved for the run directory; choose another name"),
                );
            }
            if !seen.insert(name.clone()) {
                return invalid(
                    &field,
                    format!("{name:?} is used twice; give each validation dataset its own name"),
                );
            }
        }
        for (section, list) in [
            ("train", &self.datasplit.train),
            ("validate", &self.datasplit.validate),
        ] {
            for (i, d) in list.iter().enumerate() {
                if !(d.weight >= 0.0 && d.weight.is_finite()) {
                    return invalid(
                        &format!("datasplit.{section}[{i}].weight"),
                        "must be a finite number >= 0",
                    );
                }
            }
        }
        Ok(())
    }

    /// `[stores]`: no credentials in store URLs (the config file is frozen and shared).
    fn check_stores(&self) -> Result<(), Invalid> {
        for (field, url) in [
            ("stores.stats", &self.stores.stats),
            ("stores.weights", &self.stores.weights),
        ] {
            let Some(url) = url else { continue };
            let userinfo = url
                .split_once("://")
                .and_then(|(_, rest)| rest.split('/').next())
                .and_then(|authority| authority.rsplit_once('@'))
                .map(|(info, _)| info);
            if userinfo.is_some_and(|info| info.contains(':')) {
                return invalid(
                    field,
                    "holds a password; put credentials in the environment (e.g. PGPASSWORD, \
                     AWS_SECRET_ACCESS_KEY), never in the config file",
                );
            }
        }
        Ok(())
    }

    /// Hash of everything that decides the training trajectory (task, architecture,
    /// trainer, training data, seed): a resumed run with another hash would not be exact.
    /// `train_until`, intervals, backend, device, stores, validation and logging settings and
    /// the affinities' `post_process` and `thresholds` may change freely.
    pub fn trajectory_hash(&self) -> String {
        // Settings that cannot change the trajectory stay out, so changing them (or a version
        // that adds such a setting) does not block a resume.
        let mut trainer = serde_json::json!(self.trainer);
        if let Some(t) = trainer.as_object_mut() {
            t.remove("prefetch");
        }
        // The post-processing keys added after the hash existed leave it out; the older
        // `thresholds`/`biases` of distance, binary and mws stay in, so hashes stored in
        // existing checkpoints still match.
        let mut task = serde_json::json!(self.task);
        if let (TaskConfig::Affinities { .. }, Some(t)) = (&self.task, task.as_object_mut()) {
            t.remove("post_process");
            t.remove("thresholds");
        }
        let relevant = serde_json::json!({
            "seed": self.run.seed,
            "task": task,
            "architecture": self.architecture,
            "trainer": trainer,
            "train": self.datasplit.train,
        });
        let digest = Sha256::digest(relevant.to_string().as_bytes());
        digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
    }

    /// The config as TOML text (for the frozen `run.toml`).
    pub fn to_toml(&self) -> String {
        // Serialising these plain structs cannot fail; fall back to debug output regardless.
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot serialise: {e}\n"))
    }
}

/// A config value that fails a check: the dotted key and what is wrong with it.
type Invalid = (String, String);

/// `Err` for `field` with `message`.
fn invalid(field: &str, message: impl Into<String>) -> Result<(), Invalid> {
    Err((field.to_owned(), message.into()))
}

#[cfg(test)]
mod tests;
