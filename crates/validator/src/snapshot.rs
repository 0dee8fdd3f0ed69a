//! Validation snapshots: per checkpoint and validation dataset, one PNG of a central slice
//! (2D: the array; 3D: the middle z) of raw, ground truth, prediction and the best
//! segmentation side by side, at `<root>/<run>/validation/<N>/<dataset>.png`.
//!
//! Layout, left to right, separated by [`GAP`] white columns: raw (grey, its normalised
//! `[0, 1]`), ground truth (one colour per label, background black), prediction (grey for
//! one channel, the first channels as red, green, blue for more; distances over `[-1, 1]`,
//! probabilities over `[0, 1]`), and the segmentation of the parameter set that scored best
//! on the first of [`HEADLINE_CRITERIA`] the task has (colours as for ground truth). Slices
//! longer than [`MAX_EDGE`] are shown every n-th pixel.

use std::path::{Path, PathBuf};

use ndarray::{ArrayView2, ArrayViewD, Axis};

use crate::ValidatorError;
use crate::postprocess::{PostProcessor, Segmentation};
use dacapo_core::RunName;
use dacapo_store::layout;

/// Longest edge of one panel, in pixels.
pub const MAX_EDGE: usize = 512;
/// White columns between panels.
pub const GAP: usize = 4;
/// The criteria whose best parameter set's segmentation is shown: the first the task has
/// (otherwise its first criterion).
pub const HEADLINE_CRITERIA: [&str; 2] = ["dice", "voi"];
/// File extension of snapshots.
const EXTENSION: &str = "png";

/// An RGB image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rgb {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Row-major RGB bytes.
    pub pixels: Vec<u8>,
}

/// A stored snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotFile {
    /// The validated checkpoint.
    pub iteration: u64,
    /// The validation dataset.
    pub dataset: String,
    /// The PNG file.
    pub path: PathBuf,
}

/// Path of the snapshot of `dataset` at checkpoint `iteration` of `run` under `root`.
pub fn snapshot_path(root: &Path, run: &RunName, iteration: u64, dataset: &str) -> PathBuf {
    layout::predictions_dir(root, run, iteration).join(format!("{dataset}.{EXTENSION}"))
}

/// The snapshots of `run` under `root`, by iteration then dataset.
pub fn list_snapshots(root: &Path, run: &RunName) -> Result<Vec<SnapshotFile>, std::io::Error> {
    let dir = layout::run_dir(root, run).join(layout::PREDICTIONS_DIR);
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let Some(iteration) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        for file in std::fs::read_dir(entry.path())? {
            let path = file?.path();
            let is_png = path.extension().is_some_and(|e| e == EXTENSION);
            if let (true, Some(dataset)) = (is_png, path.file_stem().and_then(|s| s.to_str())) {
                out.push(SnapshotFile {
                    iteration,
                    dataset: dataset.to_owned(),
                    path: path.clone(),
                });
            }
        }
    }
    out.sort_by(|a, b| (a.iteration, &a.dataset).cmp(&(b.iteration, &b.dataset)));
    Ok(out)
}

/// The central 2D slice of a spatial array: the array itself in 2D, the middle plane of the
/// first axis (z) in 3D.
pub fn central_slice<T>(array: ArrayViewD<'_, T>) -> Result<ArrayView2<'_, T>, ValidatorError> {
    let shape = array.shape().to_vec();
    let mut view = array;
    while view.ndim() > 2 {
        let middle = view.len_of(Axis(0)) / 2;
        view = view.index_axis_move(Axis(0), middle);
    }
    while view.ndim() < 2 {
        view = view.insert_axis(Axis(0));
    }
    view.into_dimensionality()
        .map_err(|_| ValidatorError::Prediction {
            shape,
            reason: "no 2D slice for a snapshot".into(),
        })
}

/// Prediction values shown black and white: tanh-space distances over `[-1, 1]`,
/// probabilities over `[0, 1]`.
pub fn prediction_range(post: &PostProcessor) -> (f32, f32) {
    match post {
        PostProcessor::Distance { .. } => (-1.0, 1.0),
        _ => (0.0, 1.0),
    }
}

/// The instance or class labels of a segmentation.
pub fn segmentation_labels(seg: &Segmentation) -> &ndarray::ArrayD<u64> {
    match seg {
        Segmentation::Masks { instances, .. } => instances,
        Segmentation::Instances(labels) => labels,
        Segmentation::Classes { classes, .. } => classes,
    }
}

/// The four panels of one snapshot, each a 2D slice of the same shape.
pub struct Panels<'a> {
    /// Normalised raw (first channel).
    pub raw: ArrayView2<'a, f32>,
    /// Ground-truth labels.
    pub gt: ArrayView2<'a, u64>,
    /// Prediction channels.
    pub prediction: Vec<ArrayView2<'a, f32>>,
    /// Values of the prediction shown black and white.
    pub prediction_range: (f32, f32),
    /// Segmentation labels.
    pub segmentation: ArrayView2<'a, u64>,
}

/// Draws the panels side by side (see the module docs).
pub fn compose(panels: &Panels<'_>) -> Result<Rgb, ValidatorError> {
    let shape = panels.raw.dim();
    for (what, other) in [
        ("ground truth", panels.gt.dim()),
        ("segmentation", panels.segmentation.dim()),
    ]
    .into_iter()
    .chain(panels.prediction.iter().map(|p| ("prediction", p.dim())))
    {
        if other != shape {
            return Err(ValidatorError::ShapeMismatch {
                what: format!("snapshot: raw vs {what}"),
                left: vec![shape.0, shape.1],
                right: vec![other.0, other.1],
            });
        }
    }
    let step = shape.0.max(shape.1).div_ceil(MAX_EDGE).max(1);
    let (h, w) = (shape.0.div_ceil(step), shape.1.div_ceil(step));
    let width = 4 * w + 3 * GAP;
    let mut pixels = vec![255u8; width * h * 3];
    let (lo, hi) = panels.prediction_range;
    let grey = |v: f32, lo: f32, hi: f32| -> u8 {
        let t = ((v - lo) / (hi - lo)).clamp(0.0, 1.0);
        // NaN clamps to NaN; `as` maps it to 0.
        (t * 255.0).round() as u8
    };
    for y in 0..h {
        for x in 0..w {
            let (sy, sx) = (y * step, x * step);
            let row = y * width;
            let mut put = |panel: usize, rgb: [u8; 3]| {
                let at = (row + panel * (w + GAP) + x) * 3;
                pixels[at..at + 3].copy_from_slice(&rgb);
            };
            let r = grey(panels.raw[[sy, sx]], 0.0, 1.0);
            put(0, [r, r, r]);
            put(1, label_color(panels.gt[[sy, sx]]));
            let mut p = [0u8; 3];
            for (c, channel) in panels.prediction.iter().take(3).enumerate() {
                p[c] = grey(channel[[sy, sx]], lo, hi);
            }
            if panels.prediction.len() == 1 {
                p = [p[0]; 3];
            }
            put(2, p);
            put(3, label_color(panels.segmentation[[sy, sx]]));
        }
    }
    Ok(Rgb {
        width,
        height: h,
        pixels,
    })
}

/// A colour per label: black for background (0), otherwise a bright colour that depends only
/// on the label.
pub fn label_color(label: u64) -> [u8; 3] {
    if label == 0 {
        return [0, 0, 0];
    }
    // splitmix64: neighbouring labels get unrelated colours.
    let mut z = label.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    let b = z.to_le_bytes();
    [b[0] | 0x40, b[1] | 0x40, b[2] | 0x40]
}

/// `image` encoded as PNG.
pub fn encode_png(image: &Rgb) -> Result<Vec<u8>, std::io::Error> {
    let mut out = Vec::new();
    let (w, h) = (
        u32::try_from(image.width).map_err(std::io::Error::other)?,
        u32::try_from(image.height).map_err(std::io::Error::other)?,
    );
    let mut encoder = png::Encoder::new(&mut out, w, h);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(std::io::Error::other)?;
    writer
        .write_image_data(&image.pixels)
        .map_err(std::io::Error::other)?;
    writer.finish().map_err(std::io::Error::other)?;
    Ok(out)
}

/// Writes `png` to `path` whole (a temporary file renamed into place), creating its directory.
pub fn write_snapshot(path: &Path, png: &[u8]) -> Result<(), ValidatorError> {
    let err = |source| ValidatorError::Snapshot {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, png).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use ndarray::{Array2, Array3, ArrayD, IxDyn};

    #[test]
    fn central_slice_is_the_middle_z_in_3d() {
        let a = Array3::from_shape_fn((5, 2, 3), |(z, y, x)| (z * 100 + y * 10 + x) as u64);
        let s = central_slice(a.view().into_dyn()).unwrap();
        assert_eq!(s.dim(), (2, 3));
        assert_eq!(s[[1, 2]], 212);
        let flat = ArrayD::from_shape_vec(IxDyn(&[4, 4]), (0..16u64).collect()).unwrap();
        assert_eq!(central_slice(flat.view()).unwrap().into_dyn(), flat.view());
    }

    #[test]
    fn label_colours_are_black_only_for_background_and_stable() {
        assert_eq!(label_color(0), [0, 0, 0]);
        for l in 1..1000 {
            assert!(label_color(l).iter().all(|&c| c >= 0x40));
            assert_eq!(label_color(l), label_color(l));
        }
        assert_ne!(label_color(1), label_color(2));
    }

    #[test]
    fn panels_sit_side_by_side_and_large_slices_are_subsampled() {
        let raw = Array2::from_shape_fn((3, 2), |(y, x)| (y * 2 + x) as f32 / 5.0);
        let gt = Array2::from_shape_fn((3, 2), |(y, _)| y as u64);
        let pred = Array2::from_elem((3, 2), 0.0f32);
        let seg = Array2::from_shape_fn((3, 2), |(_, x)| x as u64);
        let image = compose(&Panels {
            raw: raw.view(),
            gt: gt.view(),
            prediction: vec![pred.view()],
            prediction_range: (-1.0, 1.0),
            segmentation: seg.view(),
        })
        .unwrap();
        assert_eq!((image.width, image.height), (4 * 2 + 3 * GAP, 3));
        let px = |x: usize, y: usize| {
            let at = (y * image.width + x) * 3;
            [image.pixels[at], image.pixels[at + 1], image.pixels[at + 2]]
        };
        assert_eq!(px(1, 2), [255, 255, 255]);
        assert_eq!(px(2, 0), [255, 255, 255], "gap");
        assert_eq!(px(2 + GAP, 0), [0, 0, 0], "gt background");
        assert_eq!(px(2 + GAP, 1), label_color(1));
        assert_eq!(px(2 * (2 + GAP), 0), [128, 128, 128], "0 in [-1, 1]");
        assert_eq!(px(3 * (2 + GAP) + 1, 0), label_color(1));

        let big = Array2::from_elem((MAX_EDGE * 2, 10), 1.0f32);
        let labels = Array2::from_elem(big.dim(), 0u64);
        let image = compose(&Panels {
            raw: big.view(),
            gt: labels.view(),
            prediction: vec![big.view(), big.view()],
            prediction_range: (0.0, 1.0),
            segmentation: labels.view(),
        })
        .unwrap();
        assert_eq!((image.width, image.height), (4 * 5 + 3 * GAP, MAX_EDGE));
        assert_eq!(&image.pixels[2 * (5 + GAP) * 3..][..3], [255, 255, 0]);
    }

    #[test]
    fn mismatched_panels_are_an_error() {
        let a = Array2::from_elem((2, 2), 0.0f32);
        let b = Array2::from_elem((2, 3), 0u64);
        let err = compose(&Panels {
            raw: a.view(),
            gt: b.view(),
            prediction: vec![a.view()],
            prediction_range: (0.0, 1.0),
            segmentation: b.view(),
        })
        .err()
        .unwrap();
        assert!(err.to_string().contains("ground truth"), "{err}");
    }

    #[test]
    fn snapshots_are_listed_by_iteration_and_dataset() {
        let dir = tempfile::tempdir().unwrap();
        let png = encode_png(&Rgb {
            width: 1,
            height: 1,
            pixels: vec![1, 2, 3],
        })
        .unwrap();
        for (n, d) in [(20, "b"), (3, "z"), (20, "a")] {
            write_snapshot(
                &snapshot_path(dir.path(), &RunName::new("r").unwrap(), n, d),
                &png,
            )
            .unwrap();
        }
        std::fs::create_dir_all(dir.path().join("r/validation/20/a.zarr")).unwrap();
        let listed: Vec<(u64, String)> = list_snapshots(dir.path(), &RunName::new("r").unwrap())
            .unwrap()
            .into_iter()
            .map(|s| (s.iteration, s.dataset))
            .collect();
        assert_eq!(
            listed,
            [(3, "z".into()), (20, "a".into()), (20, "b".into())]
        );
        assert!(
            list_snapshots(dir.path(), &RunName::new("none").unwrap())
                .unwrap()
                .is_empty()
        );
    }
}
