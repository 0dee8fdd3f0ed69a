//! TFRecord framing: each record is its length (u64, little-endian), the masked CRC-32C of
//! those 8 bytes, the data, and the masked CRC-32C of the data.

use std::path::{Path, PathBuf};

use prost::Message;

use crate::error::{Result, TensorboardError};
use crate::proto::Event;

/// Added after rotating a CRC so that data holding CRCs does not checksum to patterns.
const MASK_DELTA: u32 = 0xa282_ead8;

/// Bytes of a record that are not data: length, its checksum, the data's checksum.
const OVERHEAD: usize = 8 + 4 + 4;

/// The masked CRC-32C (Castagnoli) of `bytes`, as TFRecords store it.
pub fn masked_crc32c(bytes: &[u8]) -> u32 {
    crc32c::crc32c(bytes)
        .rotate_right(15)
        .wrapping_add(MASK_DELTA)
}

/// Appends one record holding `data` to `out`.
pub fn frame(data: &[u8], out: &mut Vec<u8>) {
    let len = (data.len() as u64).to_le_bytes();
    out.reserve(data.len() + OVERHEAD);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc32c(data).to_le_bytes());
}

/// A record whose checksum does not match: where it starts and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRecord {
    /// Byte offset of the record.
    pub offset: u64,
    /// What does not match.
    pub what: String,
}

/// The data of each record in `bytes`, in order (with its offset).
///
/// A record cut short at the end (its writer was killed mid-write, or is still writing) ends
/// the list, as in TensorBoard's readers; a checksum mismatch is an error.
pub fn records(bytes: &[u8]) -> Result<Vec<(u64, &[u8])>, BadRecord> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while bytes.len() - at >= 12 {
        let bad = |what: &str| BadRecord {
            offset: at as u64,
            what: what.to_owned(),
        };
        let (len_bytes, rest) = bytes[at..].split_at(8);
        let stored = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
        if masked_crc32c(len_bytes) != stored {
            return Err(bad("the length's checksum does not match"));
        }
        let mut len = [0u8; 8];
        len.copy_from_slice(len_bytes);
        let Ok(len) = usize::try_from(u64::from_le_bytes(len)) else {
            break;
        };
        let data_start = at + 12;
        let Some(end) = data_start.checked_add(len).and_then(|e| e.checked_add(4)) else {
            break;
        };
        if end > bytes.len() {
            break;
        }
        let data = &bytes[data_start..data_start + len];
        let crc = &bytes[data_start + len..end];
        if masked_crc32c(data) != u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]) {
            return Err(bad("the data's checksum does not match"));
        }
        out.push((at as u64, data));
        at = end;
    }
    Ok(out)
}

/// The events of the file at `path`, in order, every checksum verified; a record cut short
/// at the end is left out.
pub fn read_events(path: &Path) -> Result<Vec<Event>> {
    let bytes = std::fs::read(path).map_err(|source| TensorboardError::Io {
        path: path.to_owned(),
        action: "read",
        source,
    })?;
    let records = records(&bytes).map_err(|bad| TensorboardError::Corrupt {
        path: path.to_owned(),
        offset: bad.offset,
        what: bad.what,
    })?;
    records
        .into_iter()
        .map(|(offset, data)| {
            Event::decode(data).map_err(|source| TensorboardError::Decode {
                path: path.to_owned(),
                offset,
                source,
            })
        })
        .collect()
}

/// Whether a file name is an event file's, by TensorBoard's rule (it contains `tfevents`).
pub fn is_event_file(name: &str) -> bool {
    name.contains("tfevents")
}

/// The event files directly in `dir`, in name order (the order TensorBoard reads them in);
/// none when `dir` does not exist.
pub fn event_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(TensorboardError::Io {
                path: dir.to_owned(),
                action: "list",
                source,
            });
        }
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| TensorboardError::Io {
            path: dir.to_owned(),
            action: "list",
            source,
        })?;
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        if is_file && entry.file_name().to_str().is_some_and(is_event_file) {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn checksums_match_tensorflow() {
        // RFC 3720 B.4: 32 zero bytes have CRC-32C 0x8a9136aa.
        assert_eq!(
            masked_crc32c(&[0; 32]),
            0x8a91_36aau32.rotate_right(15).wrapping_add(MASK_DELTA)
        );
        // From a record written by TensorFlow: Event(file_version = "CRC test, one two").
        assert_eq!(masked_crc32c(b"\x1a\x11CRC test, one two"), 0x5794_d08a);
    }

    #[test]
    fn a_cut_record_ends_the_file_and_a_flipped_bit_is_an_error() {
        let mut bytes = Vec::new();
        frame(b"first", &mut bytes);
        frame(b"second record", &mut bytes);
        let whole = records(&bytes).unwrap();
        assert_eq!(whole, [(0, &b"first"[..]), (21, &b"second record"[..])]);
        for cut in 21..bytes.len() {
            assert_eq!(
                records(&bytes[..cut]).unwrap(),
                [(0, &b"first"[..])],
                "cut {cut}"
            );
        }
        let mut flipped = bytes.clone();
        flipped[12 + 2] ^= 1;
        assert_eq!(records(&flipped).unwrap_err().offset, 0);
        let mut flipped = bytes;
        flipped[21 + 3] ^= 0x80;
        let err = records(&flipped).unwrap_err();
        assert_eq!(err.offset, 21);
        assert!(err.what.contains("length"), "{err:?}");
    }

    #[test]
    fn missing_directory_has_no_event_files() {
        let dir = tempfile::tempdir().unwrap();
        assert!(event_files(&dir.path().join("none")).unwrap().is_empty());
    }

    proptest! {
        #[test]
        fn framed_records_read_back(datas in proptest::collection::vec(
            proptest::collection::vec(any::<u8>(), 0..300), 0..8)) {
            let mut bytes = Vec::new();
            for d in &datas {
                frame(d, &mut bytes);
            }
            let back: Vec<&[u8]> = records(&bytes).unwrap().into_iter().map(|(_, d)| d).collect();
            let expected: Vec<&[u8]> = datas.iter().map(Vec::as_slice).collect();
            prop_assert_eq!(back, expected);
        }
    }
}
