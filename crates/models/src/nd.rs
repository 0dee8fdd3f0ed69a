//! [`NdTensor`]: a `(batch, channels, spatial...)` burn tensor of either 2 or 3 spatial axes,
//! and its conversion from and to `ndarray` arrays.

use burn::tensor::{Device, Tensor, TensorData};
use ndarray::{ArrayD, IxDyn};

use crate::error::ModelError;

/// A batch tensor with 2 (`Tensor<4>`) or 3 (`Tensor<5>`) spatial axes.
#[derive(Debug, Clone)]
pub enum NdTensor {
    /// `(batch, channels, y, x)`.
    D2(Tensor<4>),
    /// `(batch, channels, z, y, x)`.
    D3(Tensor<5>),
}

/// Applies the same rank-generic expression to either variant.
macro_rules! nd_map {
    ($x:expr, $t:ident => $e:expr) => {
        match $x {
            NdTensor::D2($t) => NdTensor::D2($e),
            NdTensor::D3($t) => NdTensor::D3($e),
        }
    };
}

impl NdTensor {
    /// Uploads a `(batch, channels, spatial...)` array with 2 or 3 spatial axes to `device`.
    pub fn from_array(array: &ArrayD<f32>, device: &Device) -> Result<Self, ModelError> {
        let shape = array.shape().to_vec();
        let values: Vec<f32> = array.iter().copied().collect();
        match shape.len() {
            4 => Ok(NdTensor::D2(Tensor::from_data(
                TensorData::new(values, shape),
                device,
            ))),
            5 => Ok(NdTensor::D3(Tensor::from_data(
                TensorData::new(values, shape),
                device,
            ))),
            _ => Err(ModelError::Shape {
                what: "batch array".into(),
                expected: "(batch, channels, 2 or 3 spatial axes)".into(),
                found: shape,
            }),
        }
    }

    /// Downloads the tensor into an array of the same shape.
    pub fn to_array(self) -> Result<ArrayD<f32>, ModelError> {
        let shape = self.shape();
        let data = match self {
            NdTensor::D2(t) => t.into_data(),
            NdTensor::D3(t) => t.into_data(),
        };
        let values: Vec<f32> = data
            .try_into_vec_as::<f32>()
            .map_err(|e| ModelError::Shape {
                what: format!("tensor data ({e:?})"),
                expected: "f32 values".into(),
                found: shape.clone(),
            })?;
        ArrayD::from_shape_vec(IxDyn(&shape), values).map_err(|_| ModelError::Shape {
            what: "downloaded tensor".into(),
            expected: "as many values as its shape holds".into(),
            found: shape,
        })
    }

    /// Full shape, batch and channels first.
    pub fn shape(&self) -> Vec<usize> {
        match self {
            NdTensor::D2(t) => t.dims().to_vec(),
            NdTensor::D3(t) => t.dims().to_vec(),
        }
    }

    /// Number of spatial axes (2 or 3).
    pub fn spatial_dims(&self) -> usize {
        match self {
            NdTensor::D2(_) => 2,
            NdTensor::D3(_) => 3,
        }
    }

    /// The device the tensor lives on.
    pub fn device(&self) -> Device {
        match self {
            NdTensor::D2(t) => t.device(),
            NdTensor::D3(t) => t.device(),
        }
    }

    /// Centre crop of the spatial axes to `target` (offsets rounded down, as DaCapo).
    pub(crate) fn center_crop(self, target: &[usize]) -> Self {
        let shape = self.shape();
        if shape[2..] == *target {
            return self;
        }
        let ranges: Vec<std::ops::Range<usize>> = shape
            .iter()
            .enumerate()
            .map(|(i, &s)| {
                if i < 2 {
                    0..s
                } else {
                    let o = (s - target[i - 2]) / 2;
                    o..o + target[i - 2]
                }
            })
            .collect();
        match self {
            NdTensor::D2(t) => NdTensor::D2(t.slice([
                ranges[0].clone(),
                ranges[1].clone(),
                ranges[2].clone(),
                ranges[3].clone(),
            ])),
            NdTensor::D3(t) => NdTensor::D3(t.slice([
                ranges[0].clone(),
                ranges[1].clone(),
                ranges[2].clone(),
                ranges[3].clone(),
                ranges[4].clone(),
            ])),
        }
    }

    /// Concatenates `[a, b]` along the channel axis.
    pub(crate) fn cat_channels(a: Self, b: Self) -> Self {
        match (a, b) {
            (NdTensor::D2(a), NdTensor::D2(b)) => NdTensor::D2(Tensor::cat(vec![a, b], 1)),
            (NdTensor::D3(a), NdTensor::D3(b)) => NdTensor::D3(Tensor::cat(vec![a, b], 1)),
            _ => unreachable!("both halves of a skip connection share the network's rank"),
        }
    }

    /// Max pooling with kernel = stride = `factor` (sizes divide exactly: checked upstream).
    pub(crate) fn max_pool(self, factor: &[usize]) -> Self {
        nd_map!(self, t => dacapo_kernels::max_pool(t, factor))
    }

    /// Nearest-neighbour upsampling by integer `factor` per spatial axis.
    pub(crate) fn upsample_nearest(self, factor: &[usize]) -> Self {
        match self {
            NdTensor::D2(t) => {
                let [b, c, h, w] = t.dims();
                let [fh, fw] = [factor[0], factor[1]];
                let t: Tensor<6> = t.reshape([b, c, h, 1, w, 1]);
                let t = t.expand([b, c, h, fh, w, fw]);
                NdTensor::D2(t.reshape([b, c, h * fh, w * fw]))
            }
            NdTensor::D3(t) => {
                let [b, c, d, h, w] = t.dims();
                let [fd, fh, fw] = [factor[0], factor[1], factor[2]];
                let t: Tensor<8> = t.reshape([b, c, d, 1, h, 1, w, 1]);
                let t = t.expand([b, c, d, fd, h, fh, w, fw]);
                NdTensor::D3(t.reshape([b, c, d * fd, h * fh, w * fw]))
            }
        }
    }
}
