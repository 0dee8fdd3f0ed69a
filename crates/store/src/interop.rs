//! Stand-alone safetensors files for exchange with PyTorch and numpy (`dacapo export`,
//! `dacapo import-torch`), outside any checkpoint directory and its manifest.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::BufWriter;
use std::path::Path;

use dacapo_core::{NamedTensor, TensorMap};
use safetensors::SafeTensors;

use crate::error::{Result, StoreError, io_err};
use crate::fsutil::{fsync_dir, unique_suffix};
use crate::st::{Layout, check_tensors, from_st};

/// Writes `map` as the safetensors file `path`, with `metadata` in its header besides
/// `format: pt`, so `safetensors.torch.load_file` and `safetensors.numpy.load_file` read it.
///
/// The file is written beside `path` under a hidden temporary name, synced and renamed into
/// place: `path` holds the old content or the complete new one, never a partial file.
pub fn write_safetensors_file(
    path: &Path,
    map: &TensorMap,
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    check_tensors(map, "exported")?;
    let layout = Layout::with_metadata(map, metadata)?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| {
            StoreError::Invalid(format!(
                "{} names no file; give a path ending in a file name such as model.safetensors",
                path.display()
            ))
        })?;
    let tmp = dir.join(format!(".{name}.tmp-{}", unique_suffix()));
    let result = (|| {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(io_err("create", &tmp))?;
        let mut w = BufWriter::new(file);
        layout.write_to(&mut w, &tmp)?;
        let file = w
            .into_inner()
            .map_err(|e| io_err("write", &tmp)(e.into_error()))?;
        file.sync_all().map_err(io_err("fsync", &tmp))?;
        fs::rename(&tmp, path).map_err(io_err("rename into place", path))?;
        fsync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Reads a whole safetensors file written by anything (PyTorch, numpy, dacapo-rs): its
/// tensors and the entries of its header's `__metadata__`.
pub fn read_safetensors_file(path: &Path) -> Result<(TensorMap, BTreeMap<String, String>)> {
    let bytes = fs::read(path).map_err(io_err("read", path))?;
    let invalid = |what: String| {
        StoreError::Invalid(format!(
            "{} is not a safetensors file dacapo-rs can read: {what}",
            path.display()
        ))
    };
    let (_, metadata) = SafeTensors::read_metadata(&bytes).map_err(|e| invalid(format!("{e}")))?;
    let header: BTreeMap<String, String> = metadata
        .metadata()
        .as_ref()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    let tensors = SafeTensors::deserialize(&bytes).map_err(|e| invalid(format!("{e}")))?;
    let mut map = TensorMap::new();
    for (name, view) in tensors.tensors() {
        let dtype = from_st(view.dtype()).ok_or_else(|| {
            invalid(format!(
                "tensor {name:?} has dtype {:?}, which dacapo-rs does not support",
                view.dtype()
            ))
        })?;
        let tensor = NamedTensor::new(dtype, view.shape().to_vec(), view.data().to_vec())
            .map_err(|e| invalid(format!("tensor {name:?}: {e}")))?;
        map.insert(name, tensor);
    }
    Ok((map, header))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> TensorMap {
        TensorMap::from([
            (
                "a.weight".to_owned(),
                NamedTensor::from_f32(vec![2, 3], &[1.0, -2.0, 3.5, 0.0, 5.0, 6.25]).unwrap(),
            ),
            (
                "a.step".to_owned(),
                NamedTensor::from_i64(vec![], &[7]).unwrap(),
            ),
        ])
    }

    #[test]
    fn file_round_trip_keeps_tensors_and_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        let meta = BTreeMap::from([("run".to_owned(), "r1".to_owned())]);
        write_safetensors_file(&path, &sample(), &meta).unwrap();
        let (map, header) = read_safetensors_file(&path).unwrap();
        assert_eq!(map, sample());
        assert_eq!(header.get("format").map(String::as_str), Some("pt"));
        assert_eq!(header.get("run").map(String::as_str), Some("r1"));
        assert_eq!(header.len(), 2);
        // Only the file itself is left: the temporary name was renamed away.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn format_key_is_reserved() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        let meta = BTreeMap::from([("format".to_owned(), "np".to_owned())]);
        let err = write_safetensors_file(&path, &sample(), &meta).unwrap_err();
        assert!(err.to_string().contains("\"format\" is reserved"), "{err}");
        assert!(!path.exists());
    }

    #[test]
    fn garbage_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.safetensors");
        fs::write(&path, b"not a safetensors file at all").unwrap();
        let err = read_safetensors_file(&path).unwrap_err().to_string();
        assert!(err.contains("bad.safetensors"), "{err}");
        assert!(err.contains("not a safetensors file"), "{err}");
    }
}
