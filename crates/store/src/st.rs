//! Streaming safetensors writing and checked reading of a [`TensorMap`].
//!
//! The header is built with safetensors' own types (so `SafeTensors::deserialize` and Python's
//! `safetensors` read the files); tensor bytes go straight from the caller's buffers to the
//! file, and are read straight into the returned tensors, with no intermediate copy.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use dacapo_core::{DType, NamedTensor, TensorMap};
use safetensors::Dtype;
use safetensors::tensor::{Metadata, TensorInfo};

use crate::error::{Result, StoreError, corrupt, io_err};

/// Largest header accepted when reading (safetensors' own limit).
const MAX_HEADER: u64 = 100_000_000;

fn to_st(d: DType) -> Dtype {
    match d {
        DType::Bool => Dtype::BOOL,
        DType::U8 => Dtype::U8,
        DType::I8 => Dtype::I8,
        DType::U16 => Dtype::U16,
        DType::I16 => Dtype::I16,
        DType::U32 => Dtype::U32,
        DType::I32 => Dtype::I32,
        DType::U64 => Dtype::U64,
        DType::I64 => Dtype::I64,
        DType::F16 => Dtype::F16,
        DType::BF16 => Dtype::BF16,
        DType::F32 => Dtype::F32,
        DType::F64 => Dtype::F64,
    }
}

pub(crate) fn from_st(d: Dtype) -> Option<DType> {
    Some(match d {
        Dtype::BOOL => DType::Bool,
        Dtype::U8 => DType::U8,
        Dtype::I8 => DType::I8,
        Dtype::U16 => DType::U16,
        Dtype::I16 => DType::I16,
        Dtype::U32 => DType::U32,
        Dtype::I32 => DType::I32,
        Dtype::U64 => DType::U64,
        Dtype::I64 => DType::I64,
        Dtype::F16 => DType::F16,
        Dtype::BF16 => DType::BF16,
        Dtype::F32 => DType::F32,
        Dtype::F64 => DType::F64,
        _ => return None,
    })
}

/// Checks that every tensor can be written: a legal name and data matching shape and dtype.
pub fn check_tensors(map: &TensorMap, which: &str) -> Result<()> {
    for (name, t) in map {
        if name.is_empty() || name == "__metadata__" {
            return Err(StoreError::Invalid(format!(
                "{which} tensor name {name:?} is reserved in safetensors; rename the tensor"
            )));
        }
        let expected = t
            .shape
            .iter()
            .try_fold(t.dtype.size(), |acc, &d| acc.checked_mul(d));
        if expected != Some(t.data.len()) {
            return Err(StoreError::Invalid(format!(
                "{which} tensor {name:?} of shape {:?} and dtype {:?} has {} data bytes, \
                 which does not match its shape",
                t.shape,
                t.dtype,
                t.data.len()
            )));
        }
    }
    Ok(())
}

/// A safetensors file about to be written: the tensors in file order (safetensors'
/// convention: larger alignment first, then by name) and the file prefix (8-byte header
/// length plus the space-padded JSON header).
pub struct Layout<'a> {
    order: Vec<&'a NamedTensor>,
    prefix: Vec<u8>,
    tensors: usize,
}

impl<'a> Layout<'a> {
    /// The layout of `map`.
    pub fn new(map: &'a TensorMap) -> Result<Self> {
        Self::with_metadata(map, &BTreeMap::new())
    }

    /// The layout of `map` with `extra` entries in the header's `__metadata__` besides
    /// `format: pt` (which they may not replace).
    pub fn with_metadata(map: &'a TensorMap, extra: &BTreeMap<String, String>) -> Result<Self> {
        let mut named: Vec<(&str, &NamedTensor)> =
            map.iter().map(|(k, v)| (k.as_str(), v)).collect();
        named.sort_by(|(ln, lt), (rn, rt)| to_st(rt.dtype).cmp(&to_st(lt.dtype)).then(ln.cmp(rn)));
        let mut offset = 0usize;
        let infos = named
            .iter()
            .map(|(name, t)| {
                let start = offset;
                offset += t.data.len();
                (
                    (*name).to_owned(),
                    TensorInfo {
                        dtype: to_st(t.dtype),
                        shape: t.shape.clone(),
                        data_offsets: (start, offset),
                    },
                )
            })
            .collect();
        if extra.get("format").is_some_and(|f| f != "pt") {
            return Err(StoreError::Invalid(
                "safetensors metadata key \"format\" is reserved for \"pt\" (what \
                 safetensors.torch expects); store the value under another key"
                    .into(),
            ));
        }
        let mut meta: HashMap<String, String> =
            extra.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        meta.insert("format".to_owned(), "pt".to_owned());
        let metadata = Metadata::new(Some(meta), infos).map_err(|e| {
            StoreError::Invalid(format!("cannot build a safetensors header: {e:?}"))
        })?;
        let mut header = serde_json::to_vec(&metadata)
            .map_err(|e| StoreError::Invalid(format!("cannot build a safetensors header: {e}")))?;
        header.resize(header.len().next_multiple_of(8), b' ');
        let mut prefix = Vec::with_capacity(8 + header.len());
        prefix.extend_from_slice(&(header.len() as u64).to_le_bytes());
        prefix.extend_from_slice(&header);
        Ok(Self {
            order: named.into_iter().map(|(_, t)| t).collect(),
            prefix,
            tensors: map.len(),
        })
    }

    /// Number of tensors.
    pub fn tensors(&self) -> usize {
        self.tensors
    }

    /// Writes the file content to `w` (which should buffer small writes).
    pub fn write_to(&self, w: &mut impl Write, path: &Path) -> Result<()> {
        w.write_all(&self.prefix).map_err(io_err("write", path))?;
        for t in &self.order {
            w.write_all(&t.data).map_err(io_err("write", path))?;
        }
        Ok(())
    }

    /// The file content as consecutive byte slices: the prefix, then each tensor's data.
    pub fn chunks(&self) -> impl Iterator<Item = &[u8]> + '_ {
        std::iter::once(self.prefix.as_slice()).chain(self.order.iter().map(|t| t.data.as_slice()))
    }

    /// Size and CRC32C of the file content.
    pub fn size_and_crc(&self) -> (u64, u32) {
        let mut crc = crc32c::crc32c(&self.prefix);
        let mut len = self.prefix.len() as u64;
        for t in &self.order {
            crc = crc32c::crc32c_append(crc, &t.data);
            len += t.data.len() as u64;
        }
        (len, crc)
    }
}

/// Writes `map` in safetensors format to `w` (which should buffer small writes).
pub fn write_tensors(w: &mut impl Write, map: &TensorMap, path: &Path) -> Result<()> {
    Layout::new(map)?.write_to(w, path)
}

/// Reads a safetensors file that must have `size` bytes and CRC32C `crc`, checking its
/// structure and checksum. Returns the tensors.
pub fn read_tensors(path: &Path, size: u64, crc: u32) -> Result<TensorMap> {
    let mut f = File::open(path).map_err(io_err("open", path))?;
    let actual = f.metadata().map_err(io_err("stat", path))?.len();
    if actual != size {
        return Err(corrupt(
            path,
            format!("size check failed: the manifest says {size} bytes, the file has {actual}"),
        ));
    }
    read_tensors_from(&mut f, size, crc, path)
}

/// Reads safetensors content of `size` bytes and CRC32C `crc` from `f` (a file, or bytes
/// fetched from an object store), checking its structure and checksum; `path` names the
/// source in errors. Returns the tensors.
pub fn read_tensors_from(f: &mut impl Read, size: u64, crc: u32, path: &Path) -> Result<TensorMap> {
    let mut n_bytes = [0u8; 8];
    f.read_exact(&mut n_bytes).map_err(|_| {
        corrupt(
            path,
            "safetensors header check failed: file shorter than 8 bytes",
        )
    })?;
    let n = u64::from_le_bytes(n_bytes);
    if n > MAX_HEADER || 8 + n > size {
        return Err(corrupt(
            path,
            format!("safetensors header check failed: header length {n} does not fit the file"),
        ));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header).map_err(io_err("read", path))?;
    let mut running = crc32c::crc32c_append(crc32c::crc32c(&n_bytes), &header);
    let metadata: Metadata = serde_json::from_slice(&header)
        .map_err(|e| corrupt(path, format!("safetensors header check failed: {e}")))?;
    if 8 + n + metadata.data_len() as u64 != size {
        return Err(corrupt(
            path,
            format!(
                "safetensors header check failed: tensors need {} data bytes, the file has {}",
                metadata.data_len(),
                size - 8 - n
            ),
        ));
    }
    let mut map = TensorMap::new();
    for name in metadata.offset_keys() {
        let Some(info) = metadata.info(&name) else {
            continue;
        };
        let Some(dtype) = from_st(info.dtype) else {
            return Err(corrupt(
                path,
                format!(
                    "tensor {name:?} has dtype {:?}, which dacapo-rs does not support",
                    info.dtype
                ),
            ));
        };
        let len = info.data_offsets.1 - info.data_offsets.0;
        let mut data = Vec::with_capacity(len);
        // `take` + `read_to_end` reads into the spare capacity without zero-filling it first.
        f.by_ref()
            .take(len as u64)
            .read_to_end(&mut data)
            .map_err(io_err("read", path))?;
        if data.len() != len {
            return Err(corrupt(
                path,
                "size check failed: file ended inside a tensor",
            ));
        }
        running = crc32c::crc32c_append(running, &data);
        let tensor = NamedTensor::new(dtype, info.shape.clone(), data)
            .map_err(|e| corrupt(path, format!("tensor {name:?}: {e}")))?;
        map.insert(name, tensor);
    }
    if running != crc {
        return Err(corrupt(
            path,
            format!(
                "crc32c check failed: the manifest says {crc:#010x}, the file has {running:#010x}"
            ),
        ));
    }
    Ok(map)
}
