//! Named tensors: how model and optimizer state cross the store boundary without burn.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::CoreError;

/// Element type of a [`NamedTensor`], spelled as in safetensors headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum DType {
    /// Boolean stored as one byte.
    Bool,
    /// Unsigned 8-bit integer.
    U8,
    /// Signed 8-bit integer.
    I8,
    /// Unsigned 16-bit integer.
    U16,
    /// Signed 16-bit integer.
    I16,
    /// Unsigned 32-bit integer.
    U32,
    /// Signed 32-bit integer.
    I32,
    /// Unsigned 64-bit integer.
    U64,
    /// Signed 64-bit integer.
    I64,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    BF16,
    /// IEEE single precision.
    F32,
    /// IEEE double precision.
    F64,
}

impl DType {
    /// Size of one element in bytes.
    pub fn size(self) -> usize {
        match self {
            DType::Bool | DType::U8 | DType::I8 => 1,
            DType::U16 | DType::I16 | DType::F16 | DType::BF16 => 2,
            DType::U32 | DType::I32 | DType::F32 => 4,
            DType::U64 | DType::I64 | DType::F64 => 8,
        }
    }
}

/// One tensor as plain little-endian bytes with its dtype and shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedTensor {
    /// Element type.
    pub dtype: DType,
    /// Shape, outermost axis first (row-major, as PyTorch).
    pub shape: Vec<usize>,
    /// Row-major little-endian element bytes; `len == shape.product() * dtype.size()`.
    pub data: Vec<u8>,
}

/// Tensors by name (PyTorch state-dict style names), sorted for deterministic files.
pub type TensorMap = BTreeMap<String, NamedTensor>;

impl NamedTensor {
    /// Builds a tensor, checking that `data` holds exactly `shape` elements of `dtype`.
    pub fn new(dtype: DType, shape: Vec<usize>, data: Vec<u8>) -> Result<Self, CoreError> {
        let expected = shape.iter().product::<usize>() * dtype.size();
        if data.len() != expected {
            return Err(CoreError::TensorSize {
                shape,
                dtype,
                expected,
                found: data.len(),
            });
        }
        Ok(Self { dtype, shape, data })
    }

    /// Builds an `F32` tensor from values.
    pub fn from_f32(shape: Vec<usize>, values: &[f32]) -> Result<Self, CoreError> {
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Self::new(DType::F32, shape, data)
    }

    /// Builds an `I64` tensor from values.
    pub fn from_i64(shape: Vec<usize>, values: &[i64]) -> Result<Self, CoreError> {
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Self::new(DType::I64, shape, data)
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The values of an `F32` tensor.
    pub fn to_f32(&self) -> Result<Vec<f32>, CoreError> {
        self.expect_dtype(DType::F32)?;
        Ok(self
            .data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    /// The values of an `I64` tensor.
    pub fn to_i64(&self) -> Result<Vec<i64>, CoreError> {
        self.expect_dtype(DType::I64)?;
        Ok(self
            .data
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect())
    }

    fn expect_dtype(&self, dtype: DType) -> Result<(), CoreError> {
        if self.dtype == dtype {
            Ok(())
        } else {
            Err(CoreError::TensorDType {
                expected: dtype,
                found: self.dtype,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f32_round_trip_and_size_check() {
        let t = NamedTensor::from_f32(vec![2, 2], &[1.0, -2.5, 3.0, f32::MIN]).unwrap();
        assert_eq!(t.numel(), 4);
        assert_eq!(t.to_f32().unwrap(), vec![1.0, -2.5, 3.0, f32::MIN]);
        assert!(t.to_i64().is_err());
        assert!(NamedTensor::new(DType::F32, vec![3], vec![0; 8]).is_err());
    }
}
