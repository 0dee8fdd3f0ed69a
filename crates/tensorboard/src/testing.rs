//! Test support (feature `testing`): event directories read back by the `tensorboard` Python
//! package's own reader (`EventAccumulator`), in the venv `cargo xtask setup --tensorboard`
//! makes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Environment variable naming the Python that has `tensorboard` installed.
pub const PYTHON_ENV: &str = "DACAPO_TENSORBOARD_PYTHON";

/// Reads a log directory with TensorBoard's `EventAccumulator` (keeping every event, purging
/// what a `SessionLog` START supersedes, as TensorBoard does) and prints scalars as f32 bits.
const READ_BACK: &str = r#"
import json, struct, sys
from tensorboard.backend.event_processing import event_accumulator as ea
acc = ea.EventAccumulator(sys.argv[1], size_guidance={ea.SCALARS: 0, ea.IMAGES: 0})
acc.Reload()
tags = acc.Tags()
bits = lambda v: struct.unpack("<I", struct.pack("<f", v))[0]
print(json.dumps({
    "scalars": {t: [[e.step, bits(e.value)] for e in acc.Scalars(t)] for t in tags[ea.SCALARS]},
    "images": {t: [[e.step, e.width, e.height, e.encoded_image_string.hex()]
                   for e in acc.Images(t)] for t in tags[ea.IMAGES]},
}))
"#;

/// One image as TensorBoard read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRead {
    /// Its step.
    pub step: i64,
    /// Width in pixels, as recorded in the event.
    pub width: u32,
    /// Height in pixels, as recorded in the event.
    pub height: u32,
    /// The encoded image.
    pub encoded: Vec<u8>,
}

/// What TensorBoard shows for a log directory.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReadBack {
    /// Per scalar tag, `(step, value)` in the order TensorBoard keeps them.
    pub scalars: BTreeMap<String, Vec<(i64, f32)>>,
    /// Per image tag, the images in order.
    pub images: BTreeMap<String, Vec<ImageRead>>,
}

/// The Python with `tensorboard` to read back with, or why there is none (the caller skips
/// with that reason). A Python named by `DACAPO_TENSORBOARD_PYTHON` must work: it panics
/// otherwise, so a configured reader that broke fails the test instead of skipping it.
pub fn python() -> Result<PathBuf, String> {
    if let Some(python) = std::env::var_os(PYTHON_ENV) {
        let python = PathBuf::from(python);
        if let Err(e) = probe(&python) {
            panic!("{PYTHON_ENV}={}: {e}", python.display());
        }
        return Ok(python);
    }
    let default = default_python().ok_or("HOME is not set")?;
    probe(&default).map_err(|e| {
        format!(
            "no Python with the tensorboard package ({e}); `cargo xtask setup --tensorboard` \
             makes one at {}",
            default.display()
        )
    })?;
    Ok(default)
}

/// Where `cargo xtask setup --tensorboard` puts the venv's Python.
pub fn default_python() -> Option<PathBuf> {
    let home = std::env::var_os("HOME")?;
    Some(Path::new(&home).join(".cache/dacapo-rs/venv-tensorboard/bin/python"))
}

fn probe(python: &Path) -> Result<(), String> {
    let out = Command::new(python)
        .args([
            "-c",
            "import tensorboard.backend.event_processing.event_accumulator",
        ])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} cannot import tensorboard: {}",
            python.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Reads `dir` (one TensorBoard run: the event files directly in it) with TensorBoard.
pub fn read_back(python: &Path, dir: &Path) -> Result<ReadBack, String> {
    let out = Command::new(python)
        .args(["-c", READ_BACK])
        .arg(dir)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    if !out.status.success() {
        return Err(format!(
            "tensorboard's reader failed on {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("reader output: {e}"))?;
    parse(&json).ok_or_else(|| format!("unexpected reader output: {json}"))
}

fn parse(json: &serde_json::Value) -> Option<ReadBack> {
    let int = |v: &serde_json::Value| v.as_i64();
    let mut back = ReadBack::default();
    for (tag, points) in json.get("scalars")?.as_object()? {
        let points = points
            .as_array()?
            .iter()
            .map(|p| {
                let bits = u32::try_from(int(p.get(1)?)?).ok()?;
                Some((int(p.get(0)?)?, f32::from_bits(bits)))
            })
            .collect::<Option<Vec<_>>>()?;
        back.scalars.insert(tag.clone(), points);
    }
    for (tag, images) in json.get("images")?.as_object()? {
        let images = images
            .as_array()?
            .iter()
            .map(|p| {
                Some(ImageRead {
                    step: int(p.get(0)?)?,
                    width: u32::try_from(int(p.get(1)?)?).ok()?,
                    height: u32::try_from(int(p.get(2)?)?).ok()?,
                    encoded: from_hex(p.get(3)?.as_str()?)?,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        back.images.insert(tag.clone(), images);
    }
    Some(back)
}

fn from_hex(hex: &str) -> Option<Vec<u8>> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}
