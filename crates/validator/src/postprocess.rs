//! Post-processing of predictions into segmentations, per task kind, over a parameter space.
//!
//! A prediction is `(c, spatial...)` `f32`, channels first. Each [`PostProcessor`] lists its
//! parameter sets ([`PostProcessor::parameters`]); each [`Parameters`] has a stable string id
//! ([`Parameters::id`], e.g. `threshold=0.5`, `bias=0.25`, `argmax`) used as the key of stored
//! scores. [`PostProcessor::apply`] maps a prediction and one parameter set to a
//! [`Segmentation`], which [`Segmentation::evaluate`] scores against integer ground truth.

use std::collections::BTreeMap;
use std::fmt;

use dacapo_core::ParameterSet;
use dacapo_core::config::TaskConfig;
use dacapo_ndimage::{Connectivity, connected_components, mutex_watershed};
use ndarray::{ArrayD, ArrayViewD, Axis, Zip};

use crate::ValidatorError;
use crate::evaluate::{BINARY_CRITERIA, INSTANCE_CRITERIA, evaluate_binary, evaluate_instances};

/// Default thresholds of the distance task: its targets are `tanh(distance / scale)`, so 0 is
/// the object boundary (the equivalent of DaCapo's 127 on 8-bit outputs).
pub const DEFAULT_DISTANCE_THRESHOLDS: &[f64] = &[-0.5, -0.25, 0.0, 0.25, 0.5];
/// Default thresholds of the binary task on probabilities (127/255 is DaCapo's default on
/// 8-bit predictions); the same list as dacapo-core's config default.
pub const DEFAULT_BINARY_THRESHOLDS: &[f64] = &[0.1, 0.3, 127.0 / 255.0, 0.7, 0.9];
/// Default mutex-watershed biases of the affinities task (DaCapo's watershed sweep).
pub const DEFAULT_BIASES: &[f64] = &[0.1, 0.25, 0.5, 0.75, 0.9];

/// Unit offsets `+1` along each of `dims` axes: the affinities neighbourhood when a task sets
/// none (DaCapo's usual `[(1,0,0), (0,1,0), (0,0,1)]`).
pub fn default_neighborhood(dims: usize) -> Vec<Vec<isize>> {
    (0..dims)
        .map(|a| (0..dims).map(|b| isize::from(a == b)).collect())
        .collect()
}

/// One post-processing parameter set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Parameters {
    /// Foreground where the prediction is strictly greater than this value.
    Threshold(f64),
    /// Mutex-watershed bias: edge score is `affinity - bias`.
    Bias(f64),
    /// Class of the highest channel.
    Argmax,
}

/// `x` as the shortest string that parses back to it, with `-0` written as `0`.
fn format_value(x: f64) -> String {
    if x == 0.0 {
        "0".to_string()
    } else {
        x.to_string()
    }
}

impl Parameters {
    /// The stable id of this parameter set, e.g. `threshold=0.5`, `bias=0.25`, `argmax`.
    ///
    /// Values are written in the shortest form that parses back to the same `f64`, so distinct
    /// parameters have distinct ids (0.5 and 127/255 differ) and [`Parameters::from_id`]
    /// inverts it exactly.
    pub fn id(&self) -> String {
        match self {
            Parameters::Threshold(t) => format!("threshold={}", format_value(*t)),
            Parameters::Bias(b) => format!("bias={}", format_value(*b)),
            Parameters::Argmax => "argmax".to_string(),
        }
    }

    /// Parses an id written by [`Parameters::id`].
    pub fn from_id(id: &str) -> Result<Self, ValidatorError> {
        let bad = || ValidatorError::ParameterId { id: id.to_string() };
        if id == "argmax" {
            return Ok(Parameters::Argmax);
        }
        let (key, value) = id.split_once('=').ok_or_else(bad)?;
        let value: f64 = value.parse().map_err(|_| bad())?;
        match key {
            "threshold" => Ok(Parameters::Threshold(value)),
            "bias" => Ok(Parameters::Bias(value)),
            _ => Err(bad()),
        }
    }
}

impl From<&Parameters> for ParameterSet {
    fn from(p: &Parameters) -> Self {
        let mut values = BTreeMap::new();
        match p {
            Parameters::Threshold(t) => {
                values.insert("threshold".to_string(), *t);
            }
            Parameters::Bias(b) => {
                values.insert("bias".to_string(), *b);
            }
            Parameters::Argmax => {}
        }
        ParameterSet { id: p.id(), values }
    }
}

impl fmt::Display for Parameters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id())
    }
}

/// The post-processing of one task kind and its parameter space.
#[derive(Debug, Clone, PartialEq)]
pub enum PostProcessor {
    /// Distance task: per-channel signed distances (positive inside), thresholded.
    Distance {
        /// Thresholds of the sweep.
        thresholds: Vec<f64>,
    },
    /// Binary task: per-channel foreground probabilities, thresholded.
    Binary {
        /// Thresholds of the sweep.
        thresholds: Vec<f64>,
    },
    /// Affinities task: one channel per neighbourhood offset, agglomerated by mutex watershed.
    Affinities {
        /// Offset of each channel: channel `k` at `p` links `p` and `p + offsets[k]`.
        offsets: Vec<Vec<isize>>,
        /// Biases of the sweep.
        biases: Vec<f64>,
    },
    /// One-hot task: one channel per class (class 0 = background), argmax.
    OneHot,
}

impl PostProcessor {
    /// The distance post-processor with [`DEFAULT_DISTANCE_THRESHOLDS`].
    pub fn distance_default() -> Self {
        PostProcessor::Distance {
            thresholds: DEFAULT_DISTANCE_THRESHOLDS.to_vec(),
        }
    }

    /// The binary post-processor with [`DEFAULT_BINARY_THRESHOLDS`].
    pub fn binary_default() -> Self {
        PostProcessor::Binary {
            thresholds: DEFAULT_BINARY_THRESHOLDS.to_vec(),
        }
    }

    /// The affinities post-processor for `offsets` with [`DEFAULT_BIASES`].
    pub fn affinities_default(offsets: Vec<Vec<isize>>) -> Self {
        PostProcessor::Affinities {
            offsets,
            biases: DEFAULT_BIASES.to_vec(),
        }
    }

    /// The post-processor of a run's `[task]` section, for `spatial_dims`-dimensional data.
    ///
    /// An affinities task without `neighborhood` gets [`default_neighborhood`].
    pub fn from_task(task: &TaskConfig, spatial_dims: usize) -> Self {
        match task {
            TaskConfig::Distance { thresholds, .. } => PostProcessor::Distance {
                thresholds: thresholds.clone(),
            },
            TaskConfig::Binary { thresholds } => PostProcessor::Binary {
                thresholds: thresholds.clone(),
            },
            TaskConfig::Affinities {
                neighborhood,
                biases,
                ..
            } => PostProcessor::Affinities {
                offsets: match neighborhood {
                    Some(n) => n
                        .iter()
                        .map(|o| o.iter().map(|&d| d as isize).collect())
                        .collect(),
                    None => default_neighborhood(spatial_dims),
                },
                biases: biases.clone(),
            },
            TaskConfig::OneHot { .. } => PostProcessor::OneHot,
        }
    }

    /// Short name of the task kind (`distance`, `binary`, `affinities`, `one_hot`).
    pub fn name(&self) -> &'static str {
        match self {
            PostProcessor::Distance { .. } => "distance",
            PostProcessor::Binary { .. } => "binary",
            PostProcessor::Affinities { .. } => "affinities",
            PostProcessor::OneHot => "one_hot",
        }
    }

    /// The parameter sets of the sweep, in configuration order, without duplicate ids.
    pub fn parameters(&self) -> Vec<Parameters> {
        let all: Vec<Parameters> = match self {
            PostProcessor::Distance { thresholds } | PostProcessor::Binary { thresholds } => {
                thresholds
                    .iter()
                    .map(|&t| Parameters::Threshold(t))
                    .collect()
            }
            PostProcessor::Affinities { biases, .. } => {
                biases.iter().map(|&b| Parameters::Bias(b)).collect()
            }
            PostProcessor::OneHot => vec![Parameters::Argmax],
        };
        let mut seen = std::collections::HashSet::new();
        all.into_iter().filter(|p| seen.insert(p.id())).collect()
    }

    /// The criteria that [`Segmentation::evaluate`] reports for this task, as
    /// `(name, higher_is_better)`.
    pub fn criteria(&self) -> Vec<(&'static str, bool)> {
        match self {
            PostProcessor::Distance { .. } | PostProcessor::Binary { .. } => BINARY_CRITERIA
                .iter()
                .chain(INSTANCE_CRITERIA)
                .copied()
                .collect(),
            PostProcessor::Affinities { .. } => INSTANCE_CRITERIA.to_vec(),
            PostProcessor::OneHot => BINARY_CRITERIA.to_vec(),
        }
    }

    /// Post-processes `prediction` (`(c, spatial...)`) with one parameter set.
    ///
    /// - distance/binary + `Threshold(t)`: masks `prediction > t` per channel (NaN is
    ///   background), instances = face-connected components of the union of the masks;
    /// - affinities + `Bias(b)`: [`mutex_watershed`] with edge score `affinity - b`;
    /// - one-hot + `Argmax`: index of the highest channel (ties: lowest index; NaN never wins).
    pub fn apply(
        &self,
        prediction: ArrayViewD<f32>,
        params: &Parameters,
    ) -> Result<Segmentation, ValidatorError> {
        if prediction.ndim() < 2 || prediction.len_of(Axis(0)) == 0 {
            return Err(ValidatorError::Prediction {
                shape: prediction.shape().to_vec(),
                reason: "expected (channels, spatial...) with at least one channel and one \
                         spatial axis"
                    .into(),
            });
        }
        match (self, params) {
            (
                PostProcessor::Distance { .. } | PostProcessor::Binary { .. },
                Parameters::Threshold(t),
            ) => {
                let masks = prediction.mapv(|v| f64::from(v) > *t);
                let union = masks.map_axis(Axis(0), |lane| lane.iter().any(|&m| m));
                let (instances, _) = connected_components(union.view(), Connectivity::Face);
                Ok(Segmentation::Masks { masks, instances })
            }
            (PostProcessor::Affinities { offsets, .. }, Parameters::Bias(b)) => {
                let (labels, _) = mutex_watershed(prediction, offsets, *b as f32)?;
                Ok(Segmentation::Instances(labels))
            }
            (PostProcessor::OneHot, Parameters::Argmax) => {
                let classes = prediction.map_axis(Axis(0), |lane| {
                    let mut best = 0usize;
                    let mut best_value = f32::NAN;
                    for (k, &v) in lane.iter().enumerate() {
                        if v > best_value || (best_value.is_nan() && !v.is_nan()) {
                            best = k;
                            best_value = v;
                        }
                    }
                    best as u64
                });
                Ok(Segmentation::Classes {
                    classes,
                    num_classes: prediction.len_of(Axis(0)),
                })
            }
            _ => Err(ValidatorError::WrongParameters {
                post_processor: self.name(),
                parameters: params.id(),
            }),
        }
    }
}

/// The result of post-processing one prediction with one parameter set.
#[derive(Debug, Clone, PartialEq)]
pub enum Segmentation {
    /// Foreground masks `(c, spatial...)` and the connected components of their union.
    Masks {
        /// Per-channel foreground, channels first.
        masks: ArrayD<bool>,
        /// Instance labels (spatial shape), 0 = background.
        instances: ArrayD<u64>,
    },
    /// Instance labels (spatial shape).
    Instances(ArrayD<u64>),
    /// Class index per voxel (spatial shape), `0..num_classes`.
    Classes {
        /// Class per voxel.
        classes: ArrayD<u64>,
        /// Number of classes (prediction channels).
        num_classes: usize,
    },
}

/// Mean over maps of each criterion, ignoring NaN (NaN when every value is NaN).
fn nan_mean(maps: &[BTreeMap<String, f64>]) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let Some(first) = maps.first() else {
        return out;
    };
    for name in first.keys() {
        let values: Vec<f64> = maps
            .iter()
            .filter_map(|m| m.get(name).copied())
            .filter(|v| !v.is_nan())
            .collect();
        let mean = if values.is_empty() {
            f64::NAN
        } else {
            values.iter().sum::<f64>() / values.len() as f64
        };
        out.insert(name.clone(), mean);
    }
    out
}

impl Segmentation {
    /// Scores this segmentation against integer ground truth `gt` (spatial shape, 0 =
    /// background) with the criteria of [`PostProcessor::criteria`].
    ///
    /// - `Masks` with one channel: binary criteria of the mask against `gt > 0`; with `c > 1`
    ///   channels, channel `k` against `gt == k + 1`, averaged over channels ignoring NaN. Plus
    ///   the instance criteria of `instances` against `gt`.
    /// - `Instances`: instance criteria against `gt`.
    /// - `Classes`: binary criteria of `classes == k` against `gt == k` for every foreground
    ///   class `k` in `1..num_classes` (class 0 is background), averaged ignoring NaN.
    pub fn evaluate(
        &self,
        gt: ArrayViewD<u64>,
        voxel_size: &[f64],
    ) -> Result<BTreeMap<String, f64>, ValidatorError> {
        match self {
            Segmentation::Masks { masks, instances } => {
                let spatial = &masks.shape()[1..];
                if spatial != gt.shape() {
                    return Err(ValidatorError::ShapeMismatch {
                        what: "segmentation masks (without channels) vs ground truth".into(),
                        left: spatial.to_vec(),
                        right: gt.shape().to_vec(),
                    });
                }
                let channels = masks.len_of(Axis(0));
                let mut per_channel = Vec::with_capacity(channels);
                for k in 0..channels {
                    let target = if channels == 1 {
                        gt.mapv(|g| g != 0)
                    } else {
                        gt.mapv(|g| g == k as u64 + 1)
                    };
                    per_channel.push(evaluate_binary(
                        masks.index_axis(Axis(0), k),
                        target.view(),
                        voxel_size,
                    )?);
                }
                let mut scores = nan_mean(&per_channel);
                scores.extend(evaluate_instances(instances.view(), gt)?);
                Ok(scores)
            }
            Segmentation::Instances(labels) => evaluate_instances(labels.view(), gt),
            Segmentation::Classes {
                classes,
                num_classes,
            } => {
                if classes.shape() != gt.shape() {
                    return Err(ValidatorError::ShapeMismatch {
                        what: "class segmentation vs ground truth".into(),
                        left: classes.shape().to_vec(),
                        right: gt.shape().to_vec(),
                    });
                }
                let first = if *num_classes >= 2 { 1 } else { 0 };
                let mut per_class = Vec::new();
                for k in first..*num_classes as u64 {
                    let mut pred = ArrayD::from_elem(classes.raw_dim(), false);
                    let mut target = ArrayD::from_elem(classes.raw_dim(), false);
                    Zip::from(&mut pred)
                        .and(&mut target)
                        .and(classes)
                        .and(&gt)
                        .for_each(|p, t, &c, &g| {
                            *p = c == k;
                            *t = g == k;
                        });
                    per_class.push(evaluate_binary(pred.view(), target.view(), voxel_size)?);
                }
                Ok(nan_mean(&per_class))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array3, IxDyn, array};

    #[test]
    fn parameter_ids_round_trip() {
        let cases = [
            (Parameters::Threshold(0.5), "threshold=0.5"),
            (Parameters::Threshold(-0.25), "threshold=-0.25"),
            (Parameters::Threshold(-0.0), "threshold=0"),
            (Parameters::Bias(0.1), "bias=0.1"),
            (Parameters::Argmax, "argmax"),
        ];
        for (p, id) in cases {
            assert_eq!(p.id(), id);
            assert_eq!(p.to_string(), id);
            assert_eq!(Parameters::from_id(id).unwrap(), p);
        }
        let t = 127.0f64 / 255.0;
        let id = Parameters::Threshold(t).id();
        assert_ne!(id, "threshold=0.5");
        assert_eq!(Parameters::from_id(&id).unwrap(), Parameters::Threshold(t));
        for bad in ["", "threshold", "threshold=x", "gamma=0.1", "argmax=1"] {
            assert!(Parameters::from_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parameter_spaces() {
        let p = PostProcessor::binary_default().parameters();
        assert_eq!(p.len(), 5);
        assert_eq!(p[2].id(), "threshold=0.4980392156862745");
        let p = PostProcessor::Distance {
            thresholds: vec![0.0, -0.0, 0.5, 0.5],
        }
        .parameters();
        assert_eq!(
            p,
            vec![Parameters::Threshold(0.0), Parameters::Threshold(0.5)]
        );
        let p = PostProcessor::affinities_default(vec![vec![1, 0], vec![0, 1]]).parameters();
        assert_eq!(
            p.iter().map(Parameters::id).collect::<Vec<_>>(),
            ["bias=0.1", "bias=0.25", "bias=0.5", "bias=0.75", "bias=0.9"]
        );
        assert_eq!(PostProcessor::OneHot.parameters(), vec![Parameters::Argmax]);
        assert_eq!(PostProcessor::OneHot.criteria().len(), 9);
        assert_eq!(PostProcessor::distance_default().criteria().len(), 13);
    }

    #[test]
    fn from_task_config() {
        let task = TaskConfig::Affinities {
            neighborhood: None,
            loss: Default::default(),
            biases: vec![0.5, 0.9],
        };
        assert_eq!(
            PostProcessor::from_task(&task, 3),
            PostProcessor::Affinities {
                offsets: vec![vec![1, 0, 0], vec![0, 1, 0], vec![0, 0, 1]],
                biases: vec![0.5, 0.9],
            }
        );
        let task = TaskConfig::Binary {
            thresholds: vec![0.25],
        };
        let pp = PostProcessor::from_task(&task, 2);
        assert_eq!(pp.parameters(), vec![Parameters::Threshold(0.25)]);
        let set = ParameterSet::from(&pp.parameters()[0]);
        assert_eq!(set.id, "threshold=0.25");
        assert_eq!(set.values["threshold"], 0.25);
        assert!(ParameterSet::from(&Parameters::Argmax).values.is_empty());
    }

    #[test]
    fn threshold_then_components_and_scores() {
        // Two blobs; at t = 0 both are foreground, at t = 0.6 only the right one.
        let pred = array![[[0.5f32, 0.5, -1.0, 0.9], [0.5, -1.0, -1.0, 0.9]]].into_dyn();
        let gt = array![[1u64, 1, 0, 2], [1, 0, 0, 2]].into_dyn();
        let pp = PostProcessor::distance_default();
        let seg = pp.apply(pred.view(), &Parameters::Threshold(0.0)).unwrap();
        let Segmentation::Masks { masks, instances } = &seg else {
            panic!("expected masks")
        };
        assert_eq!(masks.shape(), &[1, 2, 4]);
        assert_eq!(instances, &array![[1u64, 1, 0, 2], [1, 0, 0, 2]].into_dyn());
        let s = seg.evaluate(gt.view(), &[1.0, 1.0]).unwrap();
        assert_eq!(s["dice"], 1.0);
        assert_eq!(s["voi"], 0.0);
        assert_eq!(s.len(), pp.criteria().len());
        let seg = pp.apply(pred.view(), &Parameters::Threshold(0.6)).unwrap();
        let s = seg.evaluate(gt.view(), &[1.0, 1.0]).unwrap();
        // tp = 2, fn = 3: recall 0.4, precision 1.
        assert!((s["recall"] - 0.4).abs() < 1e-12);
        assert_eq!(s["precision"], 1.0);
        // gt object 1 entirely predicted as background 0, object 2 exact: no split, no merge.
        assert_eq!(s["voi"], 0.0);
    }

    #[test]
    fn multichannel_masks_average_channels() {
        // Channel 0 = class 1 (perfect), channel 1 = class 2 (nothing predicted).
        let mut pred = Array3::<f32>::zeros((2, 1, 4));
        pred[[0, 0, 0]] = 1.0;
        let gt = array![[1u64, 0, 2, 2]].into_dyn();
        let seg = PostProcessor::binary_default()
            .apply(pred.view().into_dyn(), &Parameters::Threshold(0.5))
            .unwrap();
        let s = seg.evaluate(gt.view(), &[1.0, 1.0]).unwrap();
        assert_eq!(s["dice"], 0.5);
        // Precision is NaN for channel 1, so the mean is channel 0's.
        assert_eq!(s["precision"], 1.0);
        assert_eq!(s["recall"], 0.5);
    }

    #[test]
    fn affinities_bias_sweep() {
        // 1-D, offset +1: 0-1 0.9, 1-2 0.4, 2-3 0.9.
        let affs = array![[0.9f32, 0.4, 0.9, 0.0]].into_dyn();
        let pp = PostProcessor::affinities_default(vec![vec![1]]);
        let gt = array![1u64, 1, 2, 2].into_dyn();
        let seg = pp.apply(affs.view(), &Parameters::Bias(0.5)).unwrap();
        assert_eq!(
            seg,
            Segmentation::Instances(array![1u64, 1, 2, 2].into_dyn())
        );
        assert_eq!(seg.evaluate(gt.view(), &[1.0]).unwrap()["voi"], 0.0);
        let seg = pp.apply(affs.view(), &Parameters::Bias(0.25)).unwrap();
        let s = seg.evaluate(gt.view(), &[1.0]).unwrap();
        assert_eq!(s["voi_merge"], 1.0);
        assert_eq!(s["voi_split"], 0.0);
        let e = pp
            .apply(affs.view(), &Parameters::Threshold(0.5))
            .unwrap_err();
        assert!(e.to_string().contains("affinities"), "{e}");
        let two = ArrayD::<f32>::zeros(IxDyn(&[2, 4]));
        assert!(matches!(
            pp.apply(two.view(), &Parameters::Bias(0.5)),
            Err(ValidatorError::Ndimage(_))
        ));
    }

    #[test]
    fn argmax_classes() {
        // 3 classes over 4 voxels; voxel 3 ties 1 and 2 (lowest wins), voxel 2 has a NaN.
        let pred = array![
            [0.8f32, 0.1, f32::NAN, 0.0],
            [0.1, 0.7, 0.2, 0.5],
            [0.1, 0.2, 0.1, 0.5]
        ]
        .into_dyn();
        let seg = PostProcessor::OneHot
            .apply(pred.view(), &Parameters::Argmax)
            .unwrap();
        let Segmentation::Classes {
            classes,
            num_classes,
        } = &seg
        else {
            panic!("expected classes")
        };
        assert_eq!(*num_classes, 3);
        assert_eq!(classes, &array![0u64, 1, 1, 1].into_dyn());
        let gt = array![0u64, 1, 1, 2].into_dyn();
        let s = seg.evaluate(gt.view(), &[1.0]).unwrap();
        // class 1: pred {1,2,3}, gt {1,2}: dice 0.8; class 2: pred {}, gt {3}: dice 0.
        assert!((s["dice"] - 0.4).abs() < 1e-12);
        assert!((s["recall"] - 0.5).abs() < 1e-12);
        // class 2 precision is NaN (nothing predicted): mean is class 1's 2/3.
        assert!((s["precision"] - 2.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn bad_predictions_are_errors() {
        let flat = ArrayD::<f32>::zeros(IxDyn(&[4]));
        let e = PostProcessor::OneHot
            .apply(flat.view(), &Parameters::Argmax)
            .unwrap_err();
        assert!(e.to_string().contains("[4]"), "{e}");
        let pred = ArrayD::<f32>::zeros(IxDyn(&[1, 2, 2]));
        let seg = PostProcessor::binary_default()
            .apply(pred.view(), &Parameters::Threshold(0.5))
            .unwrap();
        let gt = ArrayD::<u64>::zeros(IxDyn(&[2, 3]));
        assert!(matches!(
            seg.evaluate(gt.view(), &[1.0, 1.0]),
            Err(ValidatorError::ShapeMismatch { .. })
        ));
    }
}
