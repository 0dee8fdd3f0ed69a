//! A tiny 2D run config (fmaps 4, one downsampling, 64x64 synthetic cells) that trains and
//! validates in about a second, for the command tests.

#![allow(dead_code)]

use std::path::Path;

/// The config of run `name` storing under `root`, with synthetic data at `data`; `validate`
/// adds a validation dataset, `extra` is appended to `[stores]` (e.g. store URLs).
pub fn config(
    name: &str,
    root: &Path,
    data: &Path,
    (train_until, interval): (u64, u64),
    validate: bool,
    extra: &str,
) -> String {
    let validate = if validate {
        format!(
            "validate = [{{ name = \"val\", zarr = \"{}\", raw = \"raw_val\", gt = \"labels_val\" }}]\n",
            data.display()
        )
    } else {
        String::new()
    };
    format!(
        r#"[run]
name = "{name}"
train_until = {train_until}
validation_interval = {interval}
seed = 9
threads = 2

[task]
kind = "distance"
thresholds = [0.0, 0.25]

[architecture]
kind = "unet"
dims = 2
fmaps = 4
downsample_factors = [[2, 2]]
input_shape = [44, 44]

[trainer]
learning_rate = 1e-3

[datasplit]
train = [{{ zarr = "{data}", raw = "raw", gt = "labels" }}]
{validate}
[datasplit.synthetic]
zarr = "{data}"
shape = [64, 64]
seed = 4
objects = 8

[stores]
root = "{root}"
{extra}
"#,
        data = data.display(),
        root = root.display(),
    )
}
