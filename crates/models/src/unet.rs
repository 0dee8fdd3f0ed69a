//! DaCapo's CNNectomeUNet in 2D and 3D: configuration, shape arithmetic and the burn module.
//!
//! The network is the funlib/CNNectome U-Net: per level a pass of `convs_per_level`
//! convolutions + ReLU, max-pool down, upsample (transposed convolution or nearest + 1×1
//! convolution, each followed by ReLU as DaCapo does), crop-to-factor for translation
//! equivariance, centre-cropped skip concatenation `[skip, upsampled]`, and a 1×1 prediction
//! head. Shape arithmetic is pure (no burn) so data sampling and blockwise prediction can use
//! it without building a model.

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv3d, ConvTranspose2d, ConvTranspose3d};
use burn::nn::{PaddingConfig2d, PaddingConfig3d};
use burn::tensor::{Device, Tensor, TensorData};
use dacapo_kernels::{conv, conv_transpose};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::error::ModelError;
use crate::nd::NdTensor;

/// Convolution padding of the U-Net.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Padding {
    /// No padding: every convolution shrinks the feature maps (DaCapo's default).
    #[default]
    Valid,
    /// Zero padding of `kernel_size / 2`: output and input have the same size.
    Same,
}

/// How the decoder upsamples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Upsampling {
    /// Transposed convolution with kernel = stride = the downsample factor.
    #[default]
    Transposed,
    /// Nearest-neighbour repetition followed by a 1×1 convolution (DaCapo's `constant_upsample`).
    Nearest,
}

fn default_one() -> usize {
    1
}
fn default_kernel_size() -> usize {
    3
}
fn default_convs_per_level() -> usize {
    2
}

/// Configuration of a [`UNet`]; serialisable as the `[architecture]` section of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UNetConfig {
    /// Number of spatial dimensions: 2 or 3.
    pub dims: usize,
    /// Input channels of the raw data.
    #[serde(default = "default_one")]
    pub in_channels: usize,
    /// Feature maps of the top level (DaCapo's `num_fmaps`).
    #[serde(alias = "fmaps")]
    pub num_fmaps: usize,
    /// Factor by which the feature maps grow per level.
    pub fmap_inc_factor: usize,
    /// Per level, the max-pool factor of each spatial axis (`levels - 1` entries of `dims` each).
    pub downsample_factors: Vec<Vec<usize>>,
    /// Convolution kernel size, the same on every axis; must be odd.
    #[serde(default = "default_kernel_size")]
    pub kernel_size: usize,
    /// Convolutions per pass (on each level, down and up).
    #[serde(default = "default_convs_per_level")]
    pub convs_per_level: usize,
    /// Convolution padding.
    #[serde(default)]
    pub padding: Padding,
    /// Decoder upsampling.
    #[serde(default)]
    pub upsample: Upsampling,
    /// Channels of the last decoder pass (DaCapo's `fmaps_out`); `None` means `num_fmaps`.
    #[serde(default)]
    pub num_fmaps_out: Option<usize>,
    /// Per decoder level (top first), whether upsampling divides the channels by
    /// `fmap_inc_factor`. `None` means every level contracts (the classic U-Net);
    /// DaCapo's CNNectomeUNet uses `[false, true, true, ...]`.
    #[serde(default)]
    pub upsample_channel_contraction: Option<Vec<bool>>,
    /// Output channels of the 1×1 prediction head (set from the task).
    #[serde(default = "default_one")]
    pub out_channels: usize,
}

impl UNetConfig {
    /// A config with DaCapo-like defaults: 3×3 kernels, two convolutions per pass, valid
    /// padding, transposed-convolution upsampling, one input and one output channel.
    pub fn new(
        dims: usize,
        num_fmaps: usize,
        fmap_inc_factor: usize,
        downsample_factors: Vec<Vec<usize>>,
    ) -> Self {
        Self {
            dims,
            in_channels: 1,
            num_fmaps,
            fmap_inc_factor,
            downsample_factors,
            kernel_size: 3,
            convs_per_level: 2,
            padding: Padding::Valid,
            upsample: Upsampling::Transposed,
            num_fmaps_out: None,
            upsample_channel_contraction: None,
            out_channels: 1,
        }
    }

    /// The network of a run's `[architecture]` section, with the head width of `task`
    /// (the section's `input_shape` is the trainer's business, not the network's).
    pub fn from_core(arch: &dacapo_core::config::UNetConfig, out_channels: usize) -> Self {
        use dacapo_core::config::{Padding as CorePadding, Upsample as CoreUpsample};
        Self {
            dims: arch.dims,
            in_channels: arch.in_channels,
            num_fmaps: arch.fmaps,
            fmap_inc_factor: arch.fmap_inc_factor,
            downsample_factors: arch.downsample_factors.clone(),
            kernel_size: arch.kernel_size,
            convs_per_level: arch.convs_per_level,
            padding: match arch.padding {
                CorePadding::Valid => Padding::Valid,
                CorePadding::Same => Padding::Same,
            },
            upsample: match arch.upsample {
                CoreUpsample::Transposed => Upsampling::Transposed,
                CoreUpsample::Nearest => Upsampling::Nearest,
            },
            num_fmaps_out: None,
            upsample_channel_contraction: None,
            out_channels,
        }
    }

    /// The same config with `out_channels` replaced (the task decides the head width).
    pub fn with_out_channels(mut self, out_channels: usize) -> Self {
        self.out_channels = out_channels;
        self
    }

    /// Checks that the config describes a buildable network.
    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |reason: String| {
            Err(ModelError::Config {
                what: "architecture",
                reason,
            })
        };
        if self.dims != 2 && self.dims != 3 {
            return bad(format!(
                "dims = {} but only 2 and 3 are supported",
                self.dims
            ));
        }
        if self.in_channels == 0 || self.num_fmaps == 0 || self.out_channels == 0 {
            return bad("in_channels, num_fmaps and out_channels must be at least 1".into());
        }
        if self.num_fmaps_out == Some(0) {
            return bad("num_fmaps_out must be at least 1".into());
        }
        if self.fmap_inc_factor == 0 {
            return bad("fmap_inc_factor must be at least 1".into());
        }
        if self.kernel_size == 0 || self.kernel_size.is_multiple_of(2) {
            return bad(format!(
                "kernel_size = {} but it must be odd (1, 3, 5, ...)",
                self.kernel_size
            ));
        }
        if self.convs_per_level == 0 {
            return bad("convs_per_level must be at least 1".into());
        }
        for (level, f) in self.downsample_factors.iter().enumerate() {
            if f.len() != self.dims {
                return bad(format!(
                    "downsample_factors[{level}] = {f:?} has {} entries but dims = {}",
                    f.len(),
                    self.dims
                ));
            }
            if f.contains(&0) {
                return bad(format!("downsample_factors[{level}] = {f:?} contains 0"));
            }
        }
        if let Some(c) = &self.upsample_channel_contraction
            && c.len() != self.downsample_factors.len()
        {
            return bad(format!(
                "upsample_channel_contraction has {} entries but there are {} decoder levels \
                 (one per downsample factor)",
                c.len(),
                self.downsample_factors.len()
            ));
        }
        for axis in 0..self.dims {
            for level in 0..self.downsample_factors.len() {
                let crop = self.factor_crop(axis, level);
                if crop % 2 == 1 {
                    return bad(format!(
                        "decoder level {level} would crop {crop} voxels on axis {axis} to stay \
                         translation-equivariant, which cannot be centred; choose downsample \
                         factors whose products divide the convolution crop \
                         convs_per_level * (kernel_size - 1) = {}",
                        self.pass_crop()
                    ));
                }
            }
        }
        // Channel counts must fit in memory arithmetic; a silly factor would overflow.
        let levels = self.downsample_factors.len() as u32;
        if self
            .fmap_inc_factor
            .checked_pow(levels)
            .and_then(|p| p.checked_mul(self.num_fmaps))
            .is_none()
        {
            return bad("num_fmaps * fmap_inc_factor^levels overflows".into());
        }
        Ok(())
    }

    /// Number of levels (downsample factors + 1).
    pub fn levels(&self) -> usize {
        self.downsample_factors.len() + 1
    }

    fn fmaps(&self, level: usize) -> usize {
        self.num_fmaps * self.fmap_inc_factor.pow(level as u32)
    }

    fn contracts(&self, level: usize) -> bool {
        self.upsample_channel_contraction
            .as_ref()
            .is_none_or(|c| c.get(level).copied().unwrap_or(true))
    }

    /// Output channels of the upsampling layer that feeds decoder level `level`.
    fn up_out_channels(&self, level: usize) -> usize {
        if self.contracts(level) {
            self.fmaps(level)
        } else {
            self.fmaps(level + 1)
        }
    }

    /// Output channels of the last decoder pass, i.e. input channels of the head.
    pub fn head_in_channels(&self) -> usize {
        self.num_fmaps_out.unwrap_or(self.num_fmaps)
    }

    /// Size lost per convolution pass on one axis (0 with same padding).
    fn pass_crop(&self) -> usize {
        match self.padding {
            Padding::Valid => self.convs_per_level * (self.kernel_size - 1),
            Padding::Same => 0,
        }
    }

    fn axis_factors(&self, axis: usize) -> Vec<usize> {
        self.downsample_factors.iter().map(|f| f[axis]).collect()
    }

    /// Voxels that DaCapo's crop-to-factor removes after upsampling into decoder `level` on
    /// `axis`. It is the same for every accepted input size: the upsampled size is always a
    /// multiple of the product of the factors below, so only the convolution crop matters.
    fn factor_crop(&self, axis: usize, level: usize) -> usize {
        let total: usize = self.downsample_factors[level..]
            .iter()
            .map(|f| f[axis])
            .product();
        (total - self.pass_crop() % total) % total
    }

    /// Traces one axis through the network; `Err(reason)` where DaCapo's network would fail.
    fn trace_axis(&self, axis: usize, size: usize) -> Result<usize, String> {
        let f = self.axis_factors(axis);
        let cc = self.pass_crop();
        let mut s = size;
        for (level, &factor) in f.iter().enumerate() {
            if s <= cc {
                return Err(format!(
                    "level {level} receives {s} voxels but its convolutions need more than {cc}"
                ));
            }
            s -= cc;
            if !s.is_multiple_of(factor) {
                return Err(format!(
                    "level {level} has {s} voxels after its convolutions, not divisible by the \
                     downsample factor {factor}"
                ));
            }
            s /= factor;
        }
        if s <= cc {
            return Err(format!(
                "the bottom level receives {s} voxels but its convolutions need more than {cc}"
            ));
        }
        s -= cc;
        for level in (0..f.len()).rev() {
            let target = (s * f[level]).saturating_sub(self.factor_crop(axis, level));
            if target <= cc {
                return Err(format!(
                    "decoder level {level} receives {target} voxels but its convolutions need \
                     more than {cc}"
                ));
            }
            s = target - cc;
        }
        Ok(s)
    }

    /// Spatial output shape for a spatial input shape, or an error naming the first axis that
    /// does not fit and the nearest valid sizes there.
    pub fn output_shape(&self, input_spatial: &[usize]) -> Result<Vec<usize>, ModelError> {
        self.validate()?;
        if input_spatial.len() != self.dims {
            return Err(ModelError::Shape {
                what: "U-Net input".into(),
                expected: format!("{} spatial sizes", self.dims),
                found: input_spatial.to_vec(),
            });
        }
        input_spatial
            .iter()
            .enumerate()
            .map(|(axis, &size)| {
                self.trace_axis(axis, size)
                    .map_err(|reason| ModelError::InvalidInputShape {
                        axis,
                        size,
                        reason,
                        below: self.valid_size_below(axis, size),
                        above: self.valid_size_at_least(axis, size.saturating_add(1)),
                    })
            })
            .collect()
    }

    fn valid_size_at_least(&self, axis: usize, near: usize) -> usize {
        // Past the smallest valid size, valid sizes repeat with period prod(factors), so this
        // scan is short; it always ends because validate() passed.
        let mut s = near.max(1);
        while self.trace_axis(axis, s).is_err() {
            s += 1;
        }
        s
    }

    fn valid_size_below(&self, axis: usize, size: usize) -> usize {
        (1..size)
            .rev()
            .find(|&s| self.trace_axis(axis, s).is_ok())
            .unwrap_or(0)
    }

    /// The smallest valid spatial input shape that is at least `near` on every axis.
    pub fn valid_input_shape(&self, near: &[usize]) -> Result<Vec<usize>, ModelError> {
        self.validate()?;
        if near.len() != self.dims {
            return Err(ModelError::Shape {
                what: "requested U-Net input".into(),
                expected: format!("{} spatial sizes", self.dims),
                found: near.to_vec(),
            });
        }
        Ok(near
            .iter()
            .enumerate()
            .map(|(axis, &n)| self.valid_size_at_least(axis, n))
            .collect())
    }

    /// Per axis, the voxels lost on each side: `(input - output) / 2`, the same for every
    /// valid input size.
    pub fn context(&self) -> Result<Vec<usize>, ModelError> {
        let input = self.valid_input_shape(&vec![1; self.dims])?;
        let output = self.output_shape(&input)?;
        Ok(input
            .iter()
            .zip(&output)
            .map(|(i, o)| (i - o) / 2)
            .collect())
    }

    /// Builds the network on `device` with weights drawn from `seed` (PyTorch's default
    /// initialisation: uniform in ±1/sqrt(fan_in) for weights and biases). The same seed gives
    /// bit-identical weights on every run, independent of threads and of burn's global RNG.
    pub fn init(&self, seed: u64, device: &Device) -> Result<UNet, ModelError> {
        self.validate()?;
        let mut init = Init {
            rng: ChaCha8Rng::seed_from_u64(seed),
            device,
            dims: self.dims,
        };
        let k = self.kernel_size;
        let pad = match self.padding {
            Padding::Valid => 0,
            Padding::Same => k / 2,
        };
        let levels = self.levels();
        let pass = |init: &mut Init, cin: usize, cout: usize| ConvPass {
            convs: (0..self.convs_per_level)
                .map(|j| init.conv(if j == 0 { cin } else { cout }, cout, k, pad))
                .collect(),
        };
        let mut l_conv = Vec::with_capacity(levels);
        for level in 0..levels {
            let cin = if level == 0 {
                self.in_channels
            } else {
                self.fmaps(level - 1)
            };
            l_conv.push(pass(&mut init, cin, self.fmaps(level)));
        }
        let mut r_up = Vec::with_capacity(levels - 1);
        for level in 0..levels - 1 {
            let factor = &self.downsample_factors[level];
            let cin = self.fmaps(level + 1);
            let cout = self.up_out_channels(level);
            r_up.push(match self.upsample {
                Upsampling::Transposed => Up::Transposed(init.conv_transpose(cin, cout, factor)),
                Upsampling::Nearest => Up::Nearest(init.conv(cin, cout, 1, 0)),
            });
        }
        let mut r_conv = Vec::with_capacity(levels - 1);
        for level in 0..levels - 1 {
            let cin = self.fmaps(level) + self.up_out_channels(level);
            let cout = if level == 0 {
                self.head_in_channels()
            } else {
                self.fmaps(level)
            };
            r_conv.push(pass(&mut init, cin, cout));
        }
        let head = init.conv(self.head_in_channels(), self.out_channels, 1, 0);
        Ok(UNet {
            l_conv,
            r_up,
            r_conv,
            head,
            config: self.clone(),
        })
    }
}

/// Seeded PyTorch-style initialiser.
struct Init<'a> {
    rng: ChaCha8Rng,
    device: &'a Device,
    dims: usize,
}

impl Init<'_> {
    fn uniform(&mut self, n: usize, bound: f32) -> Vec<f32> {
        (0..n)
            .map(|_| {
                // 24 random bits give every representable step of [0, 1) in f32.
                let u = (self.rng.next_u32() >> 8) as f32 / (1u32 << 24) as f32;
                (2.0 * u - 1.0) * bound
            })
            .collect()
    }

    fn param<const D: usize>(&mut self, shape: [usize; D], bound: f32) -> Param<Tensor<D>> {
        let values = self.uniform(shape.iter().product(), bound);
        Param::from_tensor(Tensor::from_data(
            TensorData::new(values, shape),
            self.device,
        ))
    }

    fn conv(&mut self, cin: usize, cout: usize, k: usize, pad: usize) -> Conv {
        let fan_in = cin * k.pow(self.dims as u32);
        let bound = 1.0 / (fan_in as f32).sqrt();
        if self.dims == 2 {
            let weight = self.param([cout, cin, k, k], bound);
            let bias = self.param([cout], bound);
            Conv::D2(Conv2d {
                weight,
                bias: Some(bias),
                stride: [1, 1],
                kernel_size: [k, k],
                dilation: [1, 1],
                groups: 1,
                padding: PaddingConfig2d::Explicit(pad, pad, pad, pad),
            })
        } else {
            let weight = self.param([cout, cin, k, k, k], bound);
            let bias = self.param([cout], bound);
            Conv::D3(Conv3d {
                weight,
                bias: Some(bias),
                stride: [1, 1, 1],
                kernel_size: [k, k, k],
                dilation: [1, 1, 1],
                groups: 1,
                padding: PaddingConfig3d::Explicit(pad, pad, pad),
            })
        }
    }

    fn conv_transpose(&mut self, cin: usize, cout: usize, factor: &[usize]) -> ConvT {
        // PyTorch takes fan_in from dim 1 of the (in, out, k...) weight.
        let fan_in = cout * factor.iter().product::<usize>();
        let bound = 1.0 / (fan_in as f32).sqrt();
        if self.dims == 2 {
            let f = [factor[0], factor[1]];
            let weight = self.param([cin, cout, f[0], f[1]], bound);
            let bias = self.param([cout], bound);
            ConvT::D2(ConvTranspose2d {
                weight,
                bias: Some(bias),
                stride: f,
                kernel_size: f,
                dilation: [1, 1],
                groups: 1,
                padding: [0, 0],
                padding_out: [0, 0],
                channels: [cin, cout],
            })
        } else {
            let f = [factor[0], factor[1], factor[2]];
            let weight = self.param([cin, cout, f[0], f[1], f[2]], bound);
            let bias = self.param([cout], bound);
            ConvT::D3(ConvTranspose3d {
                weight,
                bias: Some(bias),
                stride: f,
                kernel_size: f,
                dilation: [1, 1, 1],
                groups: 1,
                padding: [0, 0, 0],
                padding_out: [0, 0, 0],
                channels: [cin, cout],
            })
        }
    }
}

/// A 2D or 3D convolution.
#[derive(Module, Debug)]
pub(crate) enum Conv {
    /// 2D convolution.
    D2(Conv2d),
    /// 3D convolution.
    D3(Conv3d),
}

impl Conv {
    /// The convolution (padding from the layer), then ReLU if `relu`, through
    /// [`dacapo_kernels`]: its own kernels on flex, burn's convolution elsewhere.
    fn forward(&self, x: NdTensor, relu: bool) -> NdTensor {
        let bias = |b: &Option<Param<Tensor<1>>>| b.as_ref().map(Param::val);
        match (self, x) {
            (Conv::D2(c), NdTensor::D2(x)) => {
                let pad = match c.padding {
                    PaddingConfig2d::Explicit(p, ..) => p,
                    _ => 0,
                };
                NdTensor::D2(conv(x, c.weight.val(), bias(&c.bias), pad, relu))
            }
            (Conv::D3(c), NdTensor::D3(x)) => {
                let pad = match c.padding {
                    PaddingConfig3d::Explicit(p, ..) => p,
                    _ => 0,
                };
                NdTensor::D3(conv(x, c.weight.val(), bias(&c.bias), pad, relu))
            }
            // UNet::forward checks the input rank against the config before any layer runs.
            _ => unreachable!("rank checked in UNet::forward"),
        }
    }
}

/// A 2D or 3D transposed convolution.
#[derive(Module, Debug)]
pub(crate) enum ConvT {
    /// 2D transposed convolution.
    D2(ConvTranspose2d),
    /// 3D transposed convolution.
    D3(ConvTranspose3d),
}

/// One upsampling layer of the decoder.
#[derive(Module, Debug)]
pub(crate) enum Up {
    /// Transposed convolution.
    Transposed(ConvT),
    /// Nearest repetition, then this 1×1 convolution.
    Nearest(Conv),
}

/// Convolutions + ReLU of one level.
#[derive(Module, Debug)]
pub(crate) struct ConvPass {
    pub(crate) convs: Vec<Conv>,
}

impl ConvPass {
    fn forward(&self, mut x: NdTensor) -> NdTensor {
        for conv in &self.convs {
            x = conv.forward(x, true);
        }
        x
    }
}

/// The U-Net with its prediction head; build it with [`UNetConfig::init`].
#[derive(Module, Debug)]
pub struct UNet {
    pub(crate) l_conv: Vec<ConvPass>,
    pub(crate) r_up: Vec<Up>,
    pub(crate) r_conv: Vec<ConvPass>,
    pub(crate) head: Conv,
    #[module(skip)]
    pub(crate) config: UNetConfig,
}

impl UNet {
    /// The configuration the network was built from.
    pub fn config(&self) -> &UNetConfig {
        &self.config
    }

    /// See [`UNetConfig::output_shape`].
    pub fn output_shape(&self, input_spatial: &[usize]) -> Result<Vec<usize>, ModelError> {
        self.config.output_shape(input_spatial)
    }

    /// See [`UNetConfig::valid_input_shape`].
    pub fn valid_input_shape(&self, near: &[usize]) -> Result<Vec<usize>, ModelError> {
        self.config.valid_input_shape(near)
    }

    /// See [`UNetConfig::context`].
    pub fn context(&self) -> Result<Vec<usize>, ModelError> {
        self.config.context()
    }

    /// Total number of scalar parameters.
    pub fn num_parameters(&self) -> usize {
        self.num_params()
    }

    /// Raw head output (logits) for a `(batch, in_channels, spatial...)` tensor; errors on a
    /// rank, channel count or spatial size the network does not accept.
    pub fn forward(&self, x: NdTensor) -> Result<NdTensor, ModelError> {
        let shape = x.shape();
        let cfg = &self.config;
        if shape.len() != cfg.dims + 2 || shape[1] != cfg.in_channels {
            return Err(ModelError::Shape {
                what: "U-Net input".into(),
                expected: format!("(batch, {}, {} spatial axes)", cfg.in_channels, cfg.dims),
                found: shape,
            });
        }
        cfg.output_shape(&shape[2..])?;
        Ok(self.head.forward(self.level(0, x), false))
    }

    fn level(&self, level: usize, x: NdTensor) -> NdTensor {
        let f_left = self.l_conv[level].forward(x);
        if level + 1 == self.l_conv.len() {
            return f_left;
        }
        let factor = &self.config.downsample_factors[level];
        let g_out = self.level(level + 1, f_left.clone().max_pool(factor));
        let bias = |b: &Option<Param<Tensor<1>>>| b.as_ref().map(Param::val);
        // DaCapo applies the activation after upsampling too.
        let g_up = match (&self.r_up[level], g_out) {
            (Up::Transposed(ConvT::D2(c)), NdTensor::D2(g)) => {
                NdTensor::D2(conv_transpose(g, c.weight.val(), bias(&c.bias), true))
            }
            (Up::Transposed(ConvT::D3(c)), NdTensor::D3(g)) => {
                NdTensor::D3(conv_transpose(g, c.weight.val(), bias(&c.bias), true))
            }
            (Up::Nearest(conv), g) => conv.forward(g.upsample_nearest(factor), true),
            _ => unreachable!("rank checked in UNet::forward"),
        };
        let target: Vec<usize> = g_up.shape()[2..]
            .iter()
            .enumerate()
            .map(|(axis, &s)| s - self.config.factor_crop(axis, level))
            .collect();
        let g_up = g_up.center_crop(&target);
        let f_cropped = f_left.center_crop(&target);
        self.r_conv[level].forward(NdTensor::cat_channels(f_cropped, g_up))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The WORKLOADS.md `train_step_2d` network.
    fn workload_2d() -> UNetConfig {
        UNetConfig::new(2, 12, 2, vec![vec![2, 2], vec![2, 2]])
    }

    #[test]
    fn workload_2d_parameter_count_and_shapes() {
        let cfg = workload_2d();
        // 256 -> 252 -> 126 -> 122 -> 61 -> 57 -> 114 -> 110 -> 220 -> 216.
        assert_eq!(cfg.output_shape(&[256, 256]).unwrap(), vec![216, 216]);
        assert_eq!(cfg.context().unwrap(), vec![20, 20]);
        let model = cfg.init(0, &Device::flex()).unwrap();
        assert_eq!(model.num_parameters(), 65_773);
        let x = NdTensor::D2(Tensor::zeros([1, 1, 256, 256], &Device::flex()));
        assert_eq!(model.forward(x).unwrap().shape(), vec![1, 1, 216, 216]);
    }

    #[test]
    fn dacapo_channel_contraction_changes_the_first_decoder_level() {
        let mut cfg = workload_2d();
        cfg.upsample_channel_contraction = Some(vec![false, true]);
        // Level 0 upsamples 24 -> 24 (not 12), so its pass reads 12 + 24 channels:
        // 65,773 - 1,164 + 2,328 - 2,604 + 3,900 = 68,233.
        let model = cfg.init(0, &Device::flex()).unwrap();
        assert_eq!(model.num_parameters(), 68_233);
    }

    #[test]
    fn invalid_sizes_name_axis_and_neighbours() {
        let cfg = workload_2d();
        // Valid sizes are 12 + 4b with b >= 8: below that the decoder's upsampled maps are
        // too small for the convolutions that follow.
        let err = cfg.output_shape(&[256, 250]).unwrap_err();
        match err {
            ModelError::InvalidInputShape {
                axis, below, above, ..
            } => {
                assert_eq!((axis, below, above), (1, 248, 252));
            }
            other => panic!("unexpected error {other}"),
        }
        assert!(cfg.output_shape(&[256]).is_err());
        assert!(cfg.output_shape(&[40, 256]).is_err());
        assert_eq!(cfg.valid_input_shape(&[250, 256]).unwrap(), vec![252, 256]);
        assert_eq!(cfg.valid_input_shape(&[1, 1]).unwrap(), vec![44, 44]);
        assert_eq!(cfg.output_shape(&[44, 48]).unwrap(), vec![4, 8]);
    }

    #[test]
    fn three_d_shapes() {
        let cfg = UNetConfig::new(3, 4, 2, vec![vec![2, 2, 2], vec![2, 2, 2]]);
        assert_eq!(cfg.output_shape(&[64, 64, 64]).unwrap(), vec![24, 24, 24]);
        assert_eq!(
            cfg.valid_input_shape(&[62, 64, 65]).unwrap(),
            vec![64, 64, 68]
        );
        assert_eq!(cfg.context().unwrap(), vec![20, 20, 20]);
        let model = cfg.init(1, &Device::flex()).unwrap();
        let x = NdTensor::D3(Tensor::zeros([1, 1, 44, 48, 52], &Device::flex()));
        assert_eq!(model.forward(x).unwrap().shape(), vec![1, 1, 4, 8, 12]);
        let x = NdTensor::D3(Tensor::zeros([1, 1, 44, 48, 50], &Device::flex()));
        assert!(model.forward(x).is_err());
        let x = NdTensor::D2(Tensor::zeros([1, 1, 44, 48], &Device::flex()));
        assert!(model.forward(x).is_err());
    }

    #[test]
    fn anisotropic_factors_work_per_axis() {
        let cfg = UNetConfig::new(3, 2, 3, vec![vec![1, 3, 3]]);
        // z: the upsampled s - 8 must exceed the 4 voxels the last pass removes: s >= 13.
        // y, x: s = 4 + 3b; the upsampled 3(b - 4) is cropped by 2 so that 4 + 3n remains,
        // and must still exceed 4: b >= 7, so 25, 28, ... losing 22.
        assert_eq!(
            cfg.valid_input_shape(&[1, 1, 23]).unwrap(),
            vec![13, 25, 25]
        );
        assert_eq!(cfg.output_shape(&[13, 25, 28]).unwrap(), vec![1, 3, 6]);
        assert_eq!(cfg.context().unwrap(), vec![6, 11, 11]);
        let model = cfg.init(1, &Device::flex()).unwrap();
        assert_eq!(model.num_parameters(), {
            let l0 = (2 * 27 + 2) + (2 * 2 * 27 + 2);
            let l1 = (6 * 2 * 27 + 6) + (6 * 6 * 27 + 6);
            let up = 6 * 2 * 9 + 2;
            let r0 = (2 * 4 * 27 + 2) + (2 * 2 * 27 + 2);
            l0 + l1 + up + r0 + 3
        });
        let x = NdTensor::D3(Tensor::zeros([1, 1, 13, 25, 28], &Device::flex()));
        assert_eq!(model.forward(x).unwrap().shape(), vec![1, 1, 1, 3, 6]);
    }

    #[test]
    fn same_padding_keeps_the_size() {
        let mut cfg = UNetConfig::new(3, 2, 2, vec![vec![1, 2, 2]]);
        cfg.padding = Padding::Same;
        assert_eq!(cfg.output_shape(&[5, 8, 8]).unwrap(), vec![5, 8, 8]);
        assert!(cfg.output_shape(&[5, 8, 7]).is_err());
        assert_eq!(cfg.context().unwrap(), vec![0, 0, 0]);
        cfg.upsample = Upsampling::Nearest;
        let model = cfg.init(3, &Device::flex()).unwrap();
        let x = NdTensor::D3(Tensor::ones([2, 1, 3, 4, 6], &Device::flex()));
        assert_eq!(model.forward(x).unwrap().shape(), vec![2, 1, 3, 4, 6]);
    }

    #[test]
    fn config_errors_are_reported() {
        let mut cfg = workload_2d();
        cfg.kernel_size = 4;
        assert!(matches!(cfg.validate(), Err(ModelError::Config { .. })));
        let mut cfg = workload_2d();
        cfg.downsample_factors = vec![vec![2, 2, 2]];
        assert!(cfg.init(0, &Device::flex()).is_err());
        // One 2x2 convolution crop (2) cannot be made a multiple of 3 by an even crop.
        let mut cfg = UNetConfig::new(2, 2, 2, vec![vec![3, 3]]);
        cfg.convs_per_level = 1;
        assert!(cfg.validate().is_err());
        let toml_like = r#"{"dims": 2, "fmaps": 12, "fmap_inc_factor": 2,
            "downsample_factors": [[2, 2], [2, 2]]}"#;
        let parsed: UNetConfig = serde_json::from_str(toml_like).unwrap();
        assert_eq!(parsed, workload_2d());
        let core: dacapo_core::config::UNetConfig = serde_json::from_str(
            r#"{"dims": 2, "downsample_factors": [[2, 2], [2, 2]], "input_shape": [256, 256]}"#,
        )
        .unwrap();
        assert_eq!(UNetConfig::from_core(&core, 1), workload_2d());
    }
}
