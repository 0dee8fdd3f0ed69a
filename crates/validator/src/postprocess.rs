//! Post-processing of predictions into segmentations, per task kind, over a parameter space.
//!
//! A prediction is `(c, spatial...)` `f32`, channels first. Each [`PostProcessor`] lists its
//! parameter sets ([`PostProcessor::parameters`]): a swept value ([`Sweep`]: a threshold, a
//! mutex-watershed bias or argmax) times a minimum segment size. Each [`Parameters`] has a
//! stable string id ([`Parameters::id`], e.g. `threshold=0.5`, `bias=0.25,min_size=25`,
//! `argmax`) used as the key of stored scores. [`PostProcessor::apply`] maps a prediction and
//! one parameter set to a [`Segmentation`], which [`Segmentation::evaluate`] scores against
//! integer ground truth; [`PostProcessor::prepare`] shares the work of a whole sweep.
//!
//! Segments smaller than `min_size` voxels are merged into the neighbour they share the most
//! affine boundary with (affinity tasks: [`RegionGraph::agglomerate`]) or removed (thresholded
//! tasks, whose components have no neighbouring segment). Every step is deterministic.

use std::collections::BTreeMap;
use std::fmt;

use dacapo_core::ParameterSet;
use dacapo_core::config::{AffinityPostProcess, TaskConfig, ValidationConfig};
use dacapo_ndimage::{
    Connectivity, RegionGraph, connected_components, mutex_watershed, remove_small_segments,
    watershed_fragments,
};
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
/// Half-width (voxels) of the window in which watershed seeds are distance-transform maxima:
/// lsd's `min_seed_distance = 10` (scipy `maximum_filter` of size 10, about 2 x 5 + 1).
pub const WATERSHED_SEED_RADIUS: usize = 5;

/// Unit offsets `+1` along each of `dims` axes: the affinities neighbourhood when a task sets
/// none (DaCapo's usual `[(1,0,0), (0,1,0), (0,0,1)]`).
pub fn default_neighborhood(dims: usize) -> Vec<Vec<isize>> {
    (0..dims)
        .map(|a| (0..dims).map(|b| isize::from(a == b)).collect())
        .collect()
}

/// The swept value of a parameter set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sweep {
    /// Distance/binary: foreground where the prediction is strictly greater than this value.
    /// Watershed: fragments merge while their mean boundary affinity is greater than this.
    Threshold(f64),
    /// Mutex-watershed bias: edge score is `affinity - bias`.
    Bias(f64),
    /// Class of the highest channel.
    Argmax,
}

/// One post-processing parameter set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Parameters {
    /// The swept value.
    pub sweep: Sweep,
    /// Segments with fewer voxels are merged or removed (0: every segment is kept).
    pub min_size: u64,
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
    /// Threshold `t`, keeping every segment.
    pub fn threshold(t: f64) -> Self {
        Sweep::Threshold(t).into()
    }

    /// Bias `b`, keeping every segment.
    pub fn bias(b: f64) -> Self {
        Sweep::Bias(b).into()
    }

    /// Argmax.
    pub fn argmax() -> Self {
        Sweep::Argmax.into()
    }

    /// These parameters with minimum segment size `min_size`.
    pub fn with_min_size(self, min_size: u64) -> Self {
        Self { min_size, ..self }
    }

    /// The stable id of this parameter set, e.g. `threshold=0.5`, `bias=0.25,min_size=25`,
    /// `argmax`.
    ///
    /// Values are written in the shortest form that parses back to the same `f64`, so distinct
    /// parameters have distinct ids (0.5 and 127/255 differ) and [`Parameters::from_id`]
    /// inverts it exactly. A `min_size` of 0 is not written, so ids stored before sizes were
    /// swept name the same parameters.
    pub fn id(&self) -> String {
        let sweep = match self.sweep {
            Sweep::Threshold(t) => format!("threshold={}", format_value(t)),
            Sweep::Bias(b) => format!("bias={}", format_value(b)),
            Sweep::Argmax => "argmax".to_string(),
        };
        if self.min_size == 0 {
            sweep
        } else {
            format!("{sweep},min_size={}", self.min_size)
        }
    }

    /// Parses an id written by [`Parameters::id`].
    pub fn from_id(id: &str) -> Result<Self, ValidatorError> {
        let bad = || ValidatorError::ParameterId { id: id.to_string() };
        let (sweep, min_size) = match id.split_once(',') {
            None => (id, 0),
            Some((sweep, size)) => {
                let value = size.strip_prefix("min_size=").ok_or_else(bad)?;
                let min_size: u64 = value.parse().map_err(|_| bad())?;
                if min_size == 0 || min_size.to_string() != value || sweep == "argmax" {
                    return Err(bad());
                }
                (sweep, min_size)
            }
        };
        let sweep = if sweep == "argmax" {
            Sweep::Argmax
        } else {
            let (key, value) = sweep.split_once('=').ok_or_else(bad)?;
            let value: f64 = value.parse().map_err(|_| bad())?;
            match key {
                "threshold" => Sweep::Threshold(value),
                "bias" => Sweep::Bias(value),
                _ => return Err(bad()),
            }
        };
        Ok(Self { sweep, min_size })
    }
}

impl From<Sweep> for Parameters {
    fn from(sweep: Sweep) -> Self {
        Self { sweep, min_size: 0 }
    }
}

impl From<&Parameters> for ParameterSet {
    fn from(p: &Parameters) -> Self {
        let mut values = BTreeMap::new();
        match p.sweep {
            Sweep::Threshold(t) => {
                values.insert("threshold".to_string(), t);
            }
            Sweep::Bias(b) => {
                values.insert("bias".to_string(), b);
            }
            Sweep::Argmax => {}
        }
        if p.min_size != 0 {
            values.insert("min_size".to_string(), p.min_size as f64);
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
        /// Minimum component sizes of the sweep.
        min_sizes: Vec<u64>,
    },
    /// Binary task: per-channel foreground probabilities, thresholded.
    Binary {
        /// Thresholds of the sweep.
        thresholds: Vec<f64>,
        /// Minimum component sizes of the sweep.
        min_sizes: Vec<u64>,
    },
    /// Affinities task: one channel per neighbourhood offset, agglomerated by mutex watershed.
    Affinities {
        /// Offset of each channel: channel `k` at `p` links `p` and `p + offsets[k]`.
        offsets: Vec<Vec<isize>>,
        /// Biases of the sweep.
        biases: Vec<f64>,
        /// Minimum segment sizes of the sweep.
        min_sizes: Vec<u64>,
    },
    /// Affinities task: watershed fragments of the boundary map, agglomerated by mean affinity.
    Watershed {
        /// Offset of each channel: channel `k` at `p` links `p` and `p + offsets[k]`.
        offsets: Vec<Vec<isize>>,
        /// Mean-affinity thresholds of the sweep.
        thresholds: Vec<f64>,
        /// Minimum segment sizes of the sweep.
        min_sizes: Vec<u64>,
    },
    /// One-hot task: one channel per class (class 0 = background), argmax.
    OneHot,
}

impl PostProcessor {
    /// The distance post-processor with [`DEFAULT_DISTANCE_THRESHOLDS`] and the default
    /// `validation.min_sizes`.
    pub fn distance_default() -> Self {
        PostProcessor::Distance {
            thresholds: DEFAULT_DISTANCE_THRESHOLDS.to_vec(),
            min_sizes: ValidationConfig::default().min_sizes,
        }
    }

    /// The binary post-processor with [`DEFAULT_BINARY_THRESHOLDS`] and the default
    /// `validation.min_sizes`.
    pub fn binary_default() -> Self {
        PostProcessor::Binary {
            thresholds: DEFAULT_BINARY_THRESHOLDS.to_vec(),
            min_sizes: ValidationConfig::default().min_sizes,
        }
    }

    /// The mutex-watershed post-processor for `offsets` with [`DEFAULT_BIASES`] and the
    /// default `validation.min_sizes`.
    pub fn affinities_default(offsets: Vec<Vec<isize>>) -> Self {
        PostProcessor::Affinities {
            offsets,
            biases: DEFAULT_BIASES.to_vec(),
            min_sizes: ValidationConfig::default().min_sizes,
        }
    }

    /// The post-processor of a run's `[task]` section with the sizes of
    /// `validation.min_sizes`, for `spatial_dims`-dimensional data.
    ///
    /// An affinities task without `neighborhood` gets [`default_neighborhood`].
    pub fn from_task(task: &TaskConfig, min_sizes: &[u64], spatial_dims: usize) -> Self {
        let min_sizes = min_sizes.to_vec();
        match task {
            TaskConfig::Distance { thresholds, .. } => PostProcessor::Distance {
                thresholds: thresholds.clone(),
                min_sizes,
            },
            TaskConfig::Binary { thresholds } => PostProcessor::Binary {
                thresholds: thresholds.clone(),
                min_sizes,
            },
            TaskConfig::Affinities {
                neighborhood,
                biases,
                post_process,
                thresholds,
                ..
            } => {
                let offsets = match neighborhood {
                    Some(n) => n
                        .iter()
                        .map(|o| o.iter().map(|&d| d as isize).collect())
                        .collect(),
                    None => default_neighborhood(spatial_dims),
                };
                match post_process {
                    AffinityPostProcess::Mws => PostProcessor::Affinities {
                        offsets,
                        biases: biases.clone(),
                        min_sizes,
                    },
                    AffinityPostProcess::Watershed => PostProcessor::Watershed {
                        offsets,
                        thresholds: thresholds.clone(),
                        min_sizes,
                    },
                }
            }
            TaskConfig::OneHot { .. } => PostProcessor::OneHot,
        }
    }

    /// Short name of the post-processing (`distance`, `binary`, `mws`, `watershed`,
    /// `one_hot`).
    pub fn name(&self) -> &'static str {
        match self {
            PostProcessor::Distance { .. } => "distance",
            PostProcessor::Binary { .. } => "binary",
            PostProcessor::Affinities { .. } => "mws",
            PostProcessor::Watershed { .. } => "watershed",
            PostProcessor::OneHot => "one_hot",
        }
    }

    /// The parameter sets of the sweep: each swept value (in configuration order) with each
    /// minimum size (in configuration order), without duplicate ids. A best-score tie goes to
    /// the first, so list sizes from small to large to prefer the least filling.
    pub fn parameters(&self) -> Vec<Parameters> {
        let (values, min_sizes): (Vec<Sweep>, &[u64]) = match self {
            PostProcessor::Distance {
                thresholds,
                min_sizes,
            }
            | PostProcessor::Binary {
                thresholds,
                min_sizes,
            }
            | PostProcessor::Watershed {
                thresholds,
                min_sizes,
                ..
            } => (
                thresholds.iter().map(|&t| Sweep::Threshold(t)).collect(),
                min_sizes,
            ),
            PostProcessor::Affinities {
                biases, min_sizes, ..
            } => (biases.iter().map(|&b| Sweep::Bias(b)).collect(), min_sizes),
            PostProcessor::OneHot => (vec![Sweep::Argmax], &[0]),
        };
        let mut seen = std::collections::HashSet::new();
        values
            .into_iter()
            .flat_map(|sweep| {
                min_sizes
                    .iter()
                    .map(move |&min_size| Parameters { sweep, min_size })
            })
            .filter(|p| seen.insert(p.id()))
            .collect()
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
            PostProcessor::Affinities { .. } | PostProcessor::Watershed { .. } => {
                INSTANCE_CRITERIA.to_vec()
            }
            PostProcessor::OneHot => BINARY_CRITERIA.to_vec(),
        }
    }

    /// Checks `prediction` and does the work that every parameter set shares (the watershed
    /// fragments and their region graph); [`Prepared::apply`] then post-processes it with
    /// one parameter set.
    pub fn prepare<'a>(
        &'a self,
        prediction: ArrayViewD<'a, f32>,
    ) -> Result<Prepared<'a>, ValidatorError> {
        if prediction.ndim() < 2 || prediction.len_of(Axis(0)) == 0 {
            return Err(ValidatorError::Prediction {
                shape: prediction.shape().to_vec(),
                reason: "expected (channels, spatial...) with at least one channel and one \
                         spatial axis"
                    .into(),
            });
        }
        let fragments = match self {
            PostProcessor::Watershed { offsets, .. } => {
                let (labels, _) =
                    watershed_fragments(prediction.view(), offsets, WATERSHED_SEED_RADIUS)?;
                Some(RegionGraph::new(labels.view(), prediction.view(), offsets)?)
            }
            _ => None,
        };
        Ok(Prepared {
            post: self,
            prediction,
            fragments,
        })
    }

    /// Post-processes `prediction` (`(c, spatial...)`) with one parameter set: see
    /// [`Prepared::segment`] and [`Prepared::without_small`].
    pub fn apply(
        &self,
        prediction: ArrayViewD<f32>,
        params: &Parameters,
    ) -> Result<Segmentation, ValidatorError> {
        self.prepare(prediction)?.apply(params)
    }
}

/// A checked prediction with the work its parameter sets share.
#[derive(Debug)]
pub struct Prepared<'a> {
    post: &'a PostProcessor,
    prediction: ArrayViewD<'a, f32>,
    /// The watershed fragments' region graph (watershed only).
    fragments: Option<RegionGraph>,
}

impl Prepared<'_> {
    /// Post-processes with `params`: [`Prepared::segment`] with its swept value, then
    /// [`Prepared::without_small`] with its minimum size.
    pub fn apply(&self, params: &Parameters) -> Result<Segmentation, ValidatorError> {
        let segmentation = self.segment(&params.sweep)?;
        self.without_small(segmentation, params.min_size)
    }

    /// The segmentation for one swept value, keeping every segment:
    ///
    /// - distance/binary + `Threshold(t)`: masks `prediction > t` per channel (NaN is
    ///   background), instances = face-connected components of the union of the masks;
    /// - mws + `Bias(b)`: [`mutex_watershed`] with edge score `affinity - b`;
    /// - watershed + `Threshold(t)`: the fragments merged while their mean boundary affinity
    ///   is above `t` ([`RegionGraph::agglomerate`]);
    /// - one-hot + `Argmax`: index of the highest channel (ties: lowest index; NaN never wins).
    pub fn segment(&self, sweep: &Sweep) -> Result<Segmentation, ValidatorError> {
        let prediction = &self.prediction;
        match (self.post, sweep, &self.fragments) {
            (
                PostProcessor::Distance { .. } | PostProcessor::Binary { .. },
                Sweep::Threshold(t),
                _,
            ) => {
                let masks = prediction.mapv(|v| f64::from(v) > *t);
                let union = masks.map_axis(Axis(0), |lane| lane.iter().any(|&m| m));
                let (instances, _) = connected_components(union.view(), Connectivity::Face);
                Ok(Segmentation::Masks { masks, instances })
            }
            (PostProcessor::Affinities { offsets, .. }, Sweep::Bias(b), _) => {
                let (labels, _) = mutex_watershed(prediction.view(), offsets, *b as f32)?;
                Ok(Segmentation::Instances(labels))
            }
            (PostProcessor::Watershed { .. }, Sweep::Threshold(t), Some(fragments)) => Ok(
                Segmentation::Instances(fragments.agglomerate(Some(*t), 0).0),
            ),
            (PostProcessor::OneHot, Sweep::Argmax, _) => Ok(argmax(prediction)),
            _ => Err(ValidatorError::WrongParameters {
                post_processor: self.post.name(),
                parameters: Parameters::from(*sweep).id(),
            }),
        }
    }

    /// `segmentation` without segments smaller than `min_size` voxels (unchanged for 0 and for
    /// one-hot classes): instances from affinities are merged into the neighbour they share
    /// the most affine boundary with, smaller ones first by affinity order
    /// ([`RegionGraph::agglomerate`] without threshold); thresholded components have no
    /// neighbouring segment and are removed from the instances and every mask.
    pub fn without_small(
        &self,
        segmentation: Segmentation,
        min_size: u64,
    ) -> Result<Segmentation, ValidatorError> {
        if min_size == 0 {
            return Ok(segmentation);
        }
        match (segmentation, self.post) {
            (
                Segmentation::Instances(labels),
                PostProcessor::Affinities { offsets, .. }
                | PostProcessor::Watershed { offsets, .. },
            ) => {
                let graph = RegionGraph::new(labels.view(), self.prediction.view(), offsets)?;
                Ok(Segmentation::Instances(graph.agglomerate(None, min_size).0))
            }
            (
                Segmentation::Masks {
                    mut masks,
                    instances,
                },
                _,
            ) => {
                let (kept, _) = remove_small_segments(instances.view(), min_size);
                for mut channel in masks.outer_iter_mut() {
                    Zip::from(&mut channel).and(&kept).and(&instances).for_each(
                        |m, &k, &before| {
                            if k == 0 && before != 0 {
                                *m = false;
                            }
                        },
                    );
                }
                Ok(Segmentation::Masks {
                    masks,
                    instances: kept,
                })
            }
            (other, _) => Ok(other),
        }
    }
}

/// The class of the highest channel of each voxel (ties: lowest index; NaN never wins).
fn argmax(prediction: &ArrayViewD<f32>) -> Segmentation {
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
    Segmentation::Classes {
        classes,
        num_classes: prediction.len_of(Axis(0)),
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
            (Parameters::threshold(0.5), "threshold=0.5"),
            (Parameters::threshold(-0.25), "threshold=-0.25"),
            (Parameters::threshold(-0.0), "threshold=0"),
            (Parameters::bias(0.1), "bias=0.1"),
            (Parameters::argmax(), "argmax"),
            (
                Parameters::bias(0.5).with_min_size(50),
                "bias=0.5,min_size=50",
            ),
            (
                Parameters::threshold(-0.25).with_min_size(7),
                "threshold=-0.25,min_size=7",
            ),
            (Parameters::bias(0.5).with_min_size(0), "bias=0.5"),
        ];
        for (p, id) in cases {
            assert_eq!(p.id(), id);
            assert_eq!(p.to_string(), id);
            assert_eq!(Parameters::from_id(id).unwrap(), p);
        }
        let t = 127.0f64 / 255.0;
        let id = Parameters::threshold(t).id();
        assert_ne!(id, "threshold=0.5");
        assert_eq!(Parameters::from_id(&id).unwrap(), Parameters::threshold(t));
        for bad in [
            "",
            "threshold",
            "threshold=x",
            "gamma=0.1",
            "argmax=1",
            "bias=0.5,min_size=0",
            "bias=0.5,min_size=-1",
            "bias=0.5,min_size=07",
            "bias=0.5,size=5",
            "bias=0.5,min_size=5,min_size=6",
            "argmax,min_size=5",
            "min_size=5",
        ] {
            assert!(Parameters::from_id(bad).is_err(), "{bad}");
        }
        let set = ParameterSet::from(&Parameters::bias(0.5).with_min_size(50));
        assert_eq!(set.id, "bias=0.5,min_size=50");
        assert_eq!(set.values["bias"], 0.5);
        assert_eq!(set.values["min_size"], 50.0);
    }

    #[test]
    fn parameter_spaces() {
        let p = PostProcessor::binary_default().parameters();
        assert_eq!(p.len(), 15);
        assert_eq!(p[6].id(), "threshold=0.4980392156862745");
        let p = PostProcessor::Distance {
            thresholds: vec![0.0, -0.0, 0.5, 0.5],
            min_sizes: vec![0],
        }
        .parameters();
        assert_eq!(
            p,
            vec![Parameters::threshold(0.0), Parameters::threshold(0.5)]
        );
        let p = PostProcessor::affinities_default(vec![vec![1, 0], vec![0, 1]]).parameters();
        let ids: Vec<String> = p.iter().map(Parameters::id).collect();
        assert_eq!(ids.len(), 15);
        assert_eq!(
            ids[..4],
            [
                "bias=0.1",
                "bias=0.1,min_size=25",
                "bias=0.1,min_size=100",
                "bias=0.25"
            ]
        );
        assert_eq!(
            PostProcessor::OneHot.parameters(),
            vec![Parameters::argmax()]
        );
        assert_eq!(PostProcessor::OneHot.criteria().len(), 9);
        assert_eq!(PostProcessor::distance_default().criteria().len(), 13);
    }

    #[test]
    fn from_task_config() {
        let task = TaskConfig::Affinities {
            neighborhood: None,
            loss: Default::default(),
            biases: vec![0.5, 0.9],
            post_process: AffinityPostProcess::Mws,
            thresholds: vec![0.3],
        };
        assert_eq!(
            PostProcessor::from_task(&task, &[0, 10], 3),
            PostProcessor::Affinities {
                offsets: vec![vec![1, 0, 0], vec![0, 1, 0], vec![0, 0, 1]],
                biases: vec![0.5, 0.9],
                min_sizes: vec![0, 10],
            }
        );
        let TaskConfig::Affinities {
            neighborhood,
            loss,
            biases,
            ..
        } = task
        else {
            unreachable!()
        };
        let task = TaskConfig::Affinities {
            neighborhood,
            loss,
            biases,
            post_process: AffinityPostProcess::Watershed,
            thresholds: vec![0.3],
        };
        let pp = PostProcessor::from_task(&task, &[5], 2);
        assert_eq!(pp.name(), "watershed");
        assert_eq!(
            pp.parameters(),
            vec![Parameters::threshold(0.3).with_min_size(5)]
        );
        let task = TaskConfig::Binary {
            thresholds: vec![0.25],
        };
        let pp = PostProcessor::from_task(&task, &[0], 2);
        assert_eq!(pp.parameters(), vec![Parameters::threshold(0.25)]);
        let set = ParameterSet::from(&pp.parameters()[0]);
        assert_eq!(set.id, "threshold=0.25");
        assert_eq!(set.values["threshold"], 0.25);
        assert!(ParameterSet::from(&Parameters::argmax()).values.is_empty());
    }

    #[test]
    fn small_components_leave_instances_and_masks() {
        // A 3-voxel component and a 1-voxel one; min_size 2 removes the single voxel.
        let pred = array![[[1.0f32, 1.0, 1.0, -1.0, 1.0]]].into_dyn();
        let pp = PostProcessor::distance_default();
        let seg = pp
            .apply(pred.view(), &Parameters::threshold(0.0).with_min_size(2))
            .unwrap();
        let Segmentation::Masks { masks, instances } = &seg else {
            panic!("expected masks")
        };
        assert_eq!(instances, &array![[1u64, 1, 1, 0, 0]].into_dyn());
        assert_eq!(
            masks,
            &array![[[true, true, true, false, false]]].into_dyn()
        );
        let gt = array![[1u64, 1, 1, 0, 0]].into_dyn();
        let s = seg.evaluate(gt.view(), &[1.0, 1.0]).unwrap();
        assert_eq!(s["dice"], 1.0);
    }

    #[test]
    fn fragments_are_filled_after_the_mutex_watershed() {
        // 1-D, offset +1: voxel 2 is cut off from both sides (affinities 0.2 and 0.3).
        let affs = array![[0.9f32, 0.2, 0.3, 0.9, 0.0]].into_dyn();
        let pp = PostProcessor::affinities_default(vec![vec![1]]);
        let gt = array![1u64, 1, 1, 2, 2].into_dyn();
        let seg = pp.apply(affs.view(), &Parameters::bias(0.5)).unwrap();
        assert_eq!(
            seg,
            Segmentation::Instances(array![1u64, 1, 2, 3, 3].into_dyn())
        );
        let split = seg.evaluate(gt.view(), &[1.0]).unwrap()["voi_split"];
        assert!(split > 0.0);
        // Filled, voxel 2 joins the side it is more affine to (0.3 > 0.2): the right one.
        let seg = pp
            .apply(affs.view(), &Parameters::bias(0.5).with_min_size(2))
            .unwrap();
        assert_eq!(
            seg,
            Segmentation::Instances(array![1u64, 1, 2, 2, 2].into_dyn())
        );
    }

    #[test]
    fn watershed_agglomerates_fragments_by_threshold() {
        // Two 6x6 objects with a one-voxel membrane column between them; affinities are 0.9
        // inside an object and 0.1 across or into the membrane.
        let labels = ndarray::Array2::from_shape_fn((6, 13), |(_, x)| match x {
            0..6 => 1u64,
            6 => 0,
            _ => 2,
        });
        let offsets = vec![vec![1isize, 0], vec![0, 1]];
        let affs = ArrayD::from_shape_fn(IxDyn(&[2, 6, 13]), |ix| {
            let (y, x) = (ix[1], ix[2]);
            let (y2, x2) = if ix[0] == 0 { (y + 1, x) } else { (y, x + 1) };
            if y2 >= 6 || x2 >= 13 {
                return 0.0;
            }
            let (p, q) = (labels[[y, x]], labels[[y2, x2]]);
            if p == q && p != 0 { 0.9 } else { 0.1 }
        });
        let pp = PostProcessor::Watershed {
            offsets,
            thresholds: vec![0.5],
            min_sizes: vec![0],
        };
        let gt = labels.into_dyn();
        let seg = pp.apply(affs.view(), &Parameters::threshold(0.5)).unwrap();
        let s = seg.evaluate(gt.view(), &[1.0, 1.0]).unwrap();
        assert_eq!((s["voi_split"], s["voi_merge"]), (0.0, 0.0));
        // Above every mean affinity nothing merges; below every one, everything does.
        let seg = pp.apply(affs.view(), &Parameters::threshold(0.05)).unwrap();
        let Segmentation::Instances(labels) = seg else {
            panic!("expected instances")
        };
        assert!(labels.iter().all(|&v| v == 1));
        let e = pp.apply(affs.view(), &Parameters::bias(0.5)).unwrap_err();
        assert!(e.to_string().contains("watershed"), "{e}");
    }

    #[test]
    fn threshold_then_components_and_scores() {
        // Two blobs; at t = 0 both are foreground, at t = 0.6 only the right one.
        let pred = array![[[0.5f32, 0.5, -1.0, 0.9], [0.5, -1.0, -1.0, 0.9]]].into_dyn();
        let gt = array![[1u64, 1, 0, 2], [1, 0, 0, 2]].into_dyn();
        let pp = PostProcessor::distance_default();
        let seg = pp.apply(pred.view(), &Parameters::threshold(0.0)).unwrap();
        let Segmentation::Masks { masks, instances } = &seg else {
            panic!("expected masks")
        };
        assert_eq!(masks.shape(), &[1, 2, 4]);
        assert_eq!(instances, &array![[1u64, 1, 0, 2], [1, 0, 0, 2]].into_dyn());
        let s = seg.evaluate(gt.view(), &[1.0, 1.0]).unwrap();
        assert_eq!(s["dice"], 1.0);
        assert_eq!(s["voi"], 0.0);
        assert_eq!(s.len(), pp.criteria().len());
        let seg = pp.apply(pred.view(), &Parameters::threshold(0.6)).unwrap();
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
            .apply(pred.view().into_dyn(), &Parameters::threshold(0.5))
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
        let seg = pp.apply(affs.view(), &Parameters::bias(0.5)).unwrap();
        assert_eq!(
            seg,
            Segmentation::Instances(array![1u64, 1, 2, 2].into_dyn())
        );
        assert_eq!(seg.evaluate(gt.view(), &[1.0]).unwrap()["voi"], 0.0);
        let seg = pp.apply(affs.view(), &Parameters::bias(0.25)).unwrap();
        let s = seg.evaluate(gt.view(), &[1.0]).unwrap();
        assert_eq!(s["voi_merge"], 1.0);
        assert_eq!(s["voi_split"], 0.0);
        let e = pp
            .apply(affs.view(), &Parameters::threshold(0.5))
            .unwrap_err();
        assert!(e.to_string().contains("mws"), "{e}");
        let two = ArrayD::<f32>::zeros(IxDyn(&[2, 4]));
        assert!(matches!(
            pp.apply(two.view(), &Parameters::bias(0.5)),
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
            .apply(pred.view(), &Parameters::argmax())
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
            .apply(flat.view(), &Parameters::argmax())
            .unwrap_err();
        assert!(e.to_string().contains("[4]"), "{e}");
        let pred = ArrayD::<f32>::zeros(IxDyn(&[1, 2, 2]));
        let seg = PostProcessor::binary_default()
            .apply(pred.view(), &Parameters::threshold(0.5))
            .unwrap();
        let gt = ArrayD::<u64>::zeros(IxDyn(&[2, 3]));
        assert!(matches!(
            seg.evaluate(gt.view(), &[1.0, 1.0]),
            Err(ValidatorError::ShapeMismatch { .. })
        ));
    }
}
