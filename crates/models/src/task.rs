//! Tasks: what the network predicts from instance labels, its loss and its output activation
//! (the post-processing sweep is the validator's).
//!
//! Targets and weights are computed on the CPU from `(batch, spatial...)` `u64` labels
//! (0 = background) and give `(batch, channels, spatial...)` `f32` arrays. Losses follow DaCapo:
//! the mean over every element of `weight * elementwise_loss`, so a weight of 0 removes a voxel
//! and class-balancing weights rescale it.

use burn::tensor::Tensor;
use burn::tensor::activation::{log_softmax, relu, sigmoid, softmax};
use dacapo_core::config::{AffinityLoss, TaskConfig};
use ndarray::{ArrayD, ArrayViewD, ArrayViewMutD, Axis, IxDyn, Slice, Zip};

use crate::error::ModelError;
use crate::nd::NdTensor;

/// DaCapo's clipping of class fractions when balancing weights.
const BALANCE_CLIP: (f64, f64) = (0.05, 0.95);

/// A task resolved for a number of spatial dimensions.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    dims: usize,
    kind: Kind,
}

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Distance {
        scale_factor: f64,
    },
    Affinities {
        offsets: Vec<Vec<isize>>,
        loss: AffinityLoss,
    },
    Binary,
    OneHot {
        classes: Vec<String>,
    },
}

fn config_error(reason: String) -> ModelError {
    ModelError::Config {
        what: "task",
        reason,
    }
}

impl Task {
    /// Resolves a task config for `dims` spatial dimensions, checking offsets and sweeps.
    pub fn new(config: &TaskConfig, dims: usize) -> Result<Self, ModelError> {
        if dims != 2 && dims != 3 {
            return Err(config_error(format!(
                "dims = {dims}; only 2 and 3 are supported"
            )));
        }
        let kind = match config {
            TaskConfig::Distance { scale_factor, .. } => {
                if !(scale_factor.is_finite() && *scale_factor > 0.0) {
                    return Err(config_error(format!(
                        "scale_factor = {scale_factor}; it must be a positive number of voxels"
                    )));
                }
                Kind::Distance {
                    scale_factor: *scale_factor,
                }
            }
            TaskConfig::Affinities { loss, .. } => {
                let offsets: Vec<Vec<isize>> = config
                    .neighborhood(dims)
                    .unwrap_or_default()
                    .iter()
                    .map(|o| o.iter().map(|&v| v as isize).collect())
                    .collect();
                if offsets.is_empty()
                    || offsets
                        .iter()
                        .any(|o| o.len() != dims || o.iter().all(|&v| v == 0))
                {
                    return Err(config_error(format!(
                        "neighborhood {offsets:?} must hold non-zero offsets of {dims} values"
                    )));
                }
                Kind::Affinities {
                    offsets,
                    loss: *loss,
                }
            }
            TaskConfig::Binary { .. } => Kind::Binary,
            TaskConfig::OneHot { classes } => {
                if classes.len() < 2 {
                    return Err(config_error(format!(
                        "classes {classes:?}: one_hot needs at least 2 classes"
                    )));
                }
                Kind::OneHot {
                    classes: classes.clone(),
                }
            }
        };
        Ok(Self { dims, kind })
    }

    /// Spatial dimensions the task was resolved for.
    pub fn dims(&self) -> usize {
        self.dims
    }

    /// Channels the network head must produce.
    pub fn out_channels(&self) -> usize {
        match &self.kind {
            Kind::Distance { .. } | Kind::Binary => 1,
            Kind::Affinities { offsets, .. } => offsets.len(),
            Kind::OneHot { classes } => classes.len(),
        }
    }

    /// Targets and weights, both `(batch, out_channels, spatial...)`, from `(batch, spatial...)`
    /// labels and an optional mask of the same shape (`false` = no loss there), with unit
    /// voxel size.
    pub fn targets(
        &self,
        labels: ArrayViewD<u64>,
        mask: Option<ArrayViewD<bool>>,
    ) -> Result<(ArrayD<f32>, ArrayD<f32>), ModelError> {
        self.targets_with_sampling(labels, mask, &vec![1.0; self.dims])
    }

    /// As [`Task::targets`], with the voxel size per spatial axis (distances are measured in
    /// these units, so `scale_factor` is too).
    pub fn targets_with_sampling(
        &self,
        labels: ArrayViewD<u64>,
        mask: Option<ArrayViewD<bool>>,
        sampling: &[f64],
    ) -> Result<(ArrayD<f32>, ArrayD<f32>), ModelError> {
        if labels.ndim() != self.dims + 1 {
            return Err(ModelError::Shape {
                what: "labels".into(),
                expected: format!("(batch, {} spatial axes)", self.dims),
                found: labels.shape().to_vec(),
            });
        }
        if let Some(m) = &mask
            && m.shape() != labels.shape()
        {
            return Err(ModelError::Shape {
                what: "mask".into(),
                expected: format!("the labels' shape {:?}", labels.shape()),
                found: m.shape().to_vec(),
            });
        }
        if sampling.len() != self.dims || sampling.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(ModelError::Shape {
                what: format!("voxel size {sampling:?}"),
                expected: format!("{} positive values", self.dims),
                found: vec![sampling.len()],
            });
        }
        let batch = labels.shape()[0];
        let spatial = &labels.shape()[1..];
        let channels = self.out_channels();
        let mut out_shape = vec![batch, channels];
        out_shape.extend_from_slice(spatial);
        let mut target = ArrayD::<f32>::zeros(IxDyn(&out_shape));
        let mut weight = ArrayD::<f32>::zeros(IxDyn(&out_shape));
        for b in 0..batch {
            let lab = labels.index_axis(Axis(0), b);
            let msk = mask.as_ref().map(|m| m.index_axis(Axis(0), b));
            let mut tgt = target.index_axis_mut(Axis(0), b);
            let mut wgt = weight.index_axis_mut(Axis(0), b);
            match &self.kind {
                Kind::Distance { scale_factor, .. } => {
                    let d = signed_distance(lab.view(), sampling);
                    let mut t = tgt.index_axis_mut(Axis(0), 0);
                    Zip::from(&mut t)
                        .and(&d)
                        .for_each(|t, &d| *t = (d / scale_factor).tanh() as f32);
                    let mut w = wgt.index_axis_mut(Axis(0), 0);
                    fill_mask(&mut w, msk.as_ref());
                    let classes = lab.mapv(|l| u8::from(l != 0));
                    balance(&mut w, classes.view());
                }
                Kind::Affinities { offsets, .. } => {
                    for (c, offset) in offsets.iter().enumerate() {
                        let mut t = tgt.index_axis_mut(Axis(0), c);
                        let mut w = wgt.index_axis_mut(Axis(0), c);
                        affinity(lab.view(), msk.as_ref(), offset, &mut t, &mut w);
                        let classes = t.mapv(|v| u8::from(v > 0.5));
                        balance(&mut w, classes.view());
                    }
                }
                Kind::Binary => {
                    let mut t = tgt.index_axis_mut(Axis(0), 0);
                    Zip::from(&mut t)
                        .and(&lab)
                        .for_each(|t, &l| *t = f32::from(u8::from(l != 0)));
                    fill_mask(&mut wgt.index_axis_mut(Axis(0), 0), msk.as_ref());
                }
                Kind::OneHot { classes } => {
                    if let Some(&bad) = lab.iter().find(|&&l| l >= classes.len() as u64) {
                        return Err(ModelError::Shape {
                            what: format!("labels of one_hot task with {} classes", classes.len()),
                            expected: format!("values 0..{}", classes.len()),
                            found: vec![bad as usize],
                        });
                    }
                    for c in 0..classes.len() {
                        let mut t = tgt.index_axis_mut(Axis(0), c);
                        Zip::from(&mut t)
                            .and(&lab)
                            .for_each(|t, &l| *t = f32::from(u8::from(l == c as u64)));
                        fill_mask(&mut wgt.index_axis_mut(Axis(0), c), msk.as_ref());
                    }
                }
            }
        }
        Ok((target, weight))
    }

    /// Scalar training loss of raw head output `pred` against `target` with `weight` (all the
    /// same shape).
    pub fn loss(
        &self,
        pred: NdTensor,
        target: NdTensor,
        weight: NdTensor,
    ) -> Result<Tensor<1>, ModelError> {
        let (ps, ts, ws) = (pred.shape(), target.shape(), weight.shape());
        if ps != ts || ps != ws {
            return Err(ModelError::Shape {
                what: format!("loss target {ts:?} / weight {ws:?}"),
                expected: format!("the prediction's shape {ps:?}"),
                found: ts,
            });
        }
        let kind = self.loss_kind();
        Ok(match (pred, target, weight) {
            (NdTensor::D2(p), NdTensor::D2(t), NdTensor::D2(w)) => weighted_loss(kind, p, t, w),
            (NdTensor::D3(p), NdTensor::D3(t), NdTensor::D3(w)) => weighted_loss(kind, p, t, w),
            // Equal shapes imply equal ranks.
            _ => unreachable!("shapes compared above"),
        })
    }

    fn loss_kind(&self) -> LossKind {
        match &self.kind {
            Kind::Distance { .. } => LossKind::Mse,
            Kind::Affinities {
                loss: AffinityLoss::Mse,
                ..
            } => LossKind::SigmoidMse,
            Kind::Affinities { .. } | Kind::Binary => LossKind::BceWithLogits,
            Kind::OneHot { .. } => LossKind::CrossEntropy,
        }
    }

    /// The prediction written by the validator: identity (distance, already in tanh space),
    /// sigmoid (affinities, binary) or softmax over channels (one_hot).
    pub fn activation(&self, pred: NdTensor) -> NdTensor {
        match &self.kind {
            Kind::Distance { .. } => pred,
            Kind::Affinities { .. } | Kind::Binary => match pred {
                NdTensor::D2(t) => NdTensor::D2(sigmoid(t)),
                NdTensor::D3(t) => NdTensor::D3(sigmoid(t)),
            },
            Kind::OneHot { .. } => match pred {
                NdTensor::D2(t) => NdTensor::D2(softmax(t, 1)),
                NdTensor::D3(t) => NdTensor::D3(softmax(t, 1)),
            },
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum LossKind {
    Mse,
    SigmoidMse,
    BceWithLogits,
    CrossEntropy,
}

fn weighted_loss<const D: usize>(
    kind: LossKind,
    pred: Tensor<D>,
    target: Tensor<D>,
    weight: Tensor<D>,
) -> Tensor<1> {
    let elements = match kind {
        LossKind::Mse => (pred - target).square(),
        LossKind::SigmoidMse => (sigmoid(pred) - target).square(),
        // Stable form of -t log σ(x) - (1 - t) log(1 - σ(x)).
        LossKind::BceWithLogits => {
            relu(pred.clone()) - pred.clone() * target + pred.abs().neg().exp().log1p()
        }
        LossKind::CrossEntropy => {
            let channels = pred.dims()[1];
            // Summed over channels, averaged over voxels: multiply the channel mean back.
            return (log_softmax(pred, 1) * target * weight)
                .neg()
                .mean()
                .mul_scalar(channels as f32);
        }
    };
    (elements * weight).mean()
}

/// Weights = 1 inside the mask (or everywhere without one), 0 outside.
fn fill_mask(w: &mut ArrayViewMutD<f32>, mask: Option<&ArrayViewD<bool>>) {
    match mask {
        Some(m) => Zip::from(w)
            .and(m)
            .for_each(|w, &m| *w = f32::from(u8::from(m))),
        None => w.fill(1.0),
    }
}

/// DaCapo's two-class balancing: within the weighted-in voxels, class `c` with fraction
/// `f_c` (clipped to [0.05, 0.95]) gets weight `1 / (2 f_c)`; weighted-out voxels stay 0.
fn balance(w: &mut ArrayViewMutD<f32>, classes: ArrayViewD<u8>) {
    let mut counts = [0usize; 2];
    let mut total = 0usize;
    Zip::from(&*w).and(&classes).for_each(|&w, &c| {
        if w != 0.0 {
            counts[usize::from(c)] += 1;
            total += 1;
        }
    });
    if total == 0 {
        return;
    }
    let scale = counts.map(|n| {
        let frac = (n as f64 / total as f64).clamp(BALANCE_CLIP.0, BALANCE_CLIP.1);
        (1.0 / (2.0 * frac)) as f32
    });
    Zip::from(w)
        .and(&classes)
        .for_each(|w, &c| *w *= scale[usize::from(c)]);
}

/// Signed Euclidean distance to the nearest label boundary, positive inside objects and
/// negative in background. Boundaries lie between voxels whose labels differ (so touching
/// objects are separated), found on a grid of doubled resolution as DaCapo does. With no
/// boundary at all the distance is ±min(shape * sampling) / 2.
fn signed_distance(labels: ArrayViewD<u64>, sampling: &[f64]) -> ArrayD<f64> {
    let shape = labels.shape().to_vec();
    let doubled: Vec<usize> = shape.iter().map(|&s| (2 * s).saturating_sub(1)).collect();
    let mut boundary = ArrayD::<bool>::from_elem(IxDyn(&doubled), false);
    let mut any = false;
    for (d, &size) in shape.iter().enumerate() {
        if size < 2 {
            continue;
        }
        let hi = labels.slice_each_axis(|ax| {
            if ax.axis.index() == d {
                Slice::from(1..)
            } else {
                Slice::from(..)
            }
        });
        let lo = labels.slice_each_axis(|ax| {
            if ax.axis.index() == d {
                Slice::from(..-1)
            } else {
                Slice::from(..)
            }
        });
        let mut dst = boundary.slice_each_axis_mut(|ax| {
            if ax.axis.index() == d {
                Slice::new(1, None, 2)
            } else {
                Slice::new(0, None, 2)
            }
        });
        Zip::from(&mut dst).and(&hi).and(&lo).for_each(|b, &h, &l| {
            *b = h != l;
            any |= h != l;
        });
    }
    if !any {
        let max = shape
            .iter()
            .zip(sampling)
            .map(|(&s, &v)| s as f64 * v / 2.0)
            .fold(f64::INFINITY, f64::min);
        return labels.mapv(|l| if l == 0 { -max } else { max });
    }
    let half: Vec<f64> = sampling.iter().map(|v| v / 2.0).collect();
    let inside = boundary.mapv(|b| !b);
    let dist = dacapo_ndimage::distance_transform_edt(inside.view(), &half);
    let mut dist = dist.slice_each_axis(|_| Slice::new(0, None, 2)).to_owned();
    Zip::from(&mut dist).and(&labels).for_each(|d, &l| {
        if l == 0 {
            *d = -*d;
        }
    });
    dist
}

/// Affinity of every voxel `p` to `p + offset`: 1 iff both carry the same non-zero label.
/// The weight is 1 where both ends are inside the volume and inside the mask, else 0.
fn affinity(
    labels: ArrayViewD<u64>,
    mask: Option<&ArrayViewD<bool>>,
    offset: &[isize],
    target: &mut ArrayViewMutD<f32>,
    weight: &mut ArrayViewMutD<f32>,
) {
    let shape = labels.shape().to_vec();
    if offset
        .iter()
        .zip(&shape)
        .any(|(&o, &s)| o.unsigned_abs() >= s)
    {
        // No voxel has its neighbour inside the volume.
        return;
    }
    // `here` covers voxels p whose neighbour p + o is inside; `there` the neighbours.
    let here = |ax: ndarray::AxisDescription| {
        let (o, s) = (offset[ax.axis.index()], shape[ax.axis.index()] as isize);
        Slice::from((-o).max(0)..s - o.max(0))
    };
    let there = |ax: ndarray::AxisDescription| {
        let (o, s) = (offset[ax.axis.index()], shape[ax.axis.index()] as isize);
        Slice::from(o.max(0)..s + o.min(0))
    };
    let a = labels.slice_each_axis(here);
    let b = labels.slice_each_axis(there);
    let mut t = target.slice_each_axis_mut(here);
    Zip::from(&mut t)
        .and(&a)
        .and(&b)
        .for_each(|t, &a, &b| *t = f32::from(u8::from(a == b && a != 0)));
    let mut w = weight.slice_each_axis_mut(here);
    match mask {
        Some(m) => {
            let ma = m.slice_each_axis(here);
            let mb = m.slice_each_axis(there);
            Zip::from(&mut w)
                .and(&ma)
                .and(&mb)
                .for_each(|w, &x, &y| *w = f32::from(u8::from(x && y)));
        }
        None => w.fill(1.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};
    use ndarray::{ArrayD, IxDyn, array};

    fn distance(scale_factor: f64) -> Task {
        Task::new(
            &TaskConfig::Distance {
                scale_factor,
                thresholds: vec![0.0],
            },
            2,
        )
        .unwrap()
    }

    fn close(a: &ArrayD<f32>, b: &[f32]) {
        let a: Vec<f32> = a.iter().copied().collect();
        assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-5, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn distance_targets_are_signed_and_split_touching_objects() {
        // One row: background 0 0, object 1 1 touching object 2 2. Boundaries sit half-way
        // between voxels, so every voxel next to one is 0.5 away and the ends 1.5.
        let labels = ArrayD::from_shape_vec(IxDyn(&[1, 1, 6]), vec![0u64, 0, 1, 1, 2, 2]).unwrap();
        let (t, w) = distance(1.0).targets(labels.view(), None).unwrap();
        assert_eq!(t.shape(), &[1, 1, 1, 6]);
        let d = [-1.5f32, -0.5, 0.5, 0.5, 0.5, 1.5];
        close(&t, &d.map(f32::tanh));
        // 4 foreground, 2 background voxels: 1 / (2 * 4/6) and 1 / (2 * 2/6).
        close(&w, &[1.5, 1.5, 0.75, 0.75, 0.75, 0.75]);

        let mask =
            ArrayD::from_shape_vec(IxDyn(&[1, 1, 6]), vec![true, true, true, true, true, false])
                .unwrap();
        let (_, w) = distance(1.0)
            .targets(labels.view(), Some(mask.view()))
            .unwrap();
        close(&w, &[1.25, 1.25, 1.0 / 1.2, 1.0 / 1.2, 1.0 / 1.2, 0.0]);
    }

    #[test]
    fn distance_without_boundaries_saturates_at_half_the_shortest_side() {
        let labels = ArrayD::from_elem(IxDyn(&[2, 2, 4]), 3u64);
        let (t, _) = distance(2.0).targets(labels.view(), None).unwrap();
        // min(2 * 1, 4 * 1) / 2 = 1, over scale 2.
        close(&t, &[0.5f32.tanh(); 16]);
        let labels = ArrayD::from_elem(IxDyn(&[1, 2, 4]), 0u64);
        let (t, w) = distance(2.0)
            .targets_with_sampling(labels.view(), None, &[4.0, 1.0])
            .unwrap();
        // min(2 * 4, 4 * 1) / 2 = 2, negative in background.
        close(&t, &[(-1.0f32).tanh(); 8]);
        // A single class everywhere is clipped to fraction 0.95.
        close(&w, &[1.0 / 1.9; 8]);
    }

    #[test]
    fn distance_uses_anisotropic_sampling() {
        // A 3x1 column: object in the middle row; boundaries above and below it.
        let labels = ArrayD::from_shape_vec(IxDyn(&[1, 3, 1]), vec![0u64, 5, 0]).unwrap();
        let (t, _) = distance(1.0)
            .targets_with_sampling(labels.view(), None, &[4.0, 1.0])
            .unwrap();
        close(&t, &[(-2.0f32).tanh(), 2.0f32.tanh(), (-2.0f32).tanh()]);
    }

    #[test]
    fn affinities_follow_the_offset_convention_and_mask_the_border() {
        let task = Task::new(
            &TaskConfig::Affinities {
                neighborhood: None,
                loss: AffinityLoss::Bce,
                biases: vec![0.5],
                post_process: Default::default(),
                thresholds: vec![0.5],
            },
            2,
        )
        .unwrap();
        assert_eq!(task.out_channels(), 2);
        let labels = array![[[1u64, 1, 0], [1, 2, 2]]].into_dyn();
        let (t, w) = task.targets(labels.view(), None).unwrap();
        // Channel 0 compares p with p + (1, 0); channel 1 with p + (0, 1).
        close(&t, &[1., 0., 0., 0., 0., 0., 1., 0., 0., 0., 1., 0.]);
        // Channel 0: 3 valid edges, 1 positive -> 1.5 / 0.75; channel 1: 2 of 4 -> 1.
        close(&w, &[1.5, 0.75, 0.75, 0., 0., 0., 1., 1., 0., 1., 1., 0.]);

        let task = Task::new(
            &TaskConfig::Affinities {
                neighborhood: Some(vec![vec![0, -1]]),
                loss: AffinityLoss::Mse,
                biases: vec![0.5],
                post_process: Default::default(),
                thresholds: vec![0.5],
            },
            2,
        )
        .unwrap();
        let mask = array![[[true, true, true], [true, true, false]]].into_dyn();
        let (t, w) = task.targets(labels.view(), Some(mask.view())).unwrap();
        close(&t, &[0., 1., 0., 0., 0., 1.]);
        // Valid: (0,1), (0,2), (1,1); (1,2) has its own voxel masked out. 1 positive of 3.
        close(&w, &[0., 1.5, 0.75, 0., 0.75, 0.]);
    }

    #[test]
    fn binary_and_one_hot_targets() {
        let labels = array![[[0u64, 7], [2, 0]]].into_dyn();
        let binary = Task::new(
            &TaskConfig::Binary {
                thresholds: vec![0.5],
            },
            2,
        )
        .unwrap();
        let mask = array![[[true, false], [true, true]]].into_dyn();
        let (t, w) = binary.targets(labels.view(), Some(mask.view())).unwrap();
        close(&t, &[0., 1., 1., 0.]);
        close(&w, &[1., 0., 1., 1.]);

        let classes = vec!["bg".to_string(), "a".into(), "b".into()];
        let one_hot = Task::new(&TaskConfig::OneHot { classes }, 2).unwrap();
        let labels = array![[[0u64, 1], [2, 0]]].into_dyn();
        let (t, w) = one_hot.targets(labels.view(), None).unwrap();
        assert_eq!(t.shape(), &[1, 3, 2, 2]);
        close(&t, &[1., 0., 0., 1., 0., 1., 0., 0., 0., 0., 1., 0.]);
        close(&w, &[1.0; 12]);
        let labels = array![[[0u64, 3]]].into_dyn();
        assert!(one_hot.targets(labels.view(), None).is_err());
    }

    #[test]
    fn shapes_and_configs_are_checked() {
        let labels = ArrayD::<u64>::zeros(IxDyn(&[1, 4, 4, 4]));
        assert!(distance(1.0).targets(labels.view(), None).is_err());
        let labels = ArrayD::<u64>::zeros(IxDyn(&[1, 4, 4]));
        let mask = ArrayD::from_elem(IxDyn(&[1, 4, 3]), true);
        assert!(
            distance(1.0)
                .targets(labels.view(), Some(mask.view()))
                .is_err()
        );
        let bad = TaskConfig::Affinities {
            neighborhood: Some(vec![vec![0, 0]]),
            loss: AffinityLoss::Bce,
            biases: vec![0.5],
            post_process: Default::default(),
            thresholds: vec![0.5],
        };
        assert!(Task::new(&bad, 2).is_err());
    }

    fn t4(values: &[f32], shape: [usize; 4]) -> NdTensor {
        NdTensor::D2(Tensor::from_data(
            TensorData::new(values.to_vec(), shape),
            &Device::flex(),
        ))
    }

    fn scalar(t: Tensor<1>) -> f32 {
        t.into_scalar::<f32>()
    }

    #[test]
    fn losses_match_hand_computed_values() {
        let s = [1, 1, 1, 2];
        let mse = distance(1.0)
            .loss(t4(&[1., 2.], s), t4(&[0., 0.], s), t4(&[1., 0.5], s))
            .unwrap();
        assert!((scalar(mse) - 1.5).abs() < 1e-6);

        let binary = Task::new(
            &TaskConfig::Binary {
                thresholds: vec![0.5],
            },
            2,
        )
        .unwrap();
        let bce = binary
            .loss(t4(&[0., 2.], s), t4(&[1., 0.], s), t4(&[1., 2.], s))
            .unwrap();
        let expected = (2f32.ln() + 2.0 * (2.0 + (-2f32).exp().ln_1p())) / 2.0;
        assert!((scalar(bce) - expected).abs() < 1e-5);

        let classes = vec!["a".to_string(), "b".into()];
        let one_hot = Task::new(&TaskConfig::OneHot { classes }, 2).unwrap();
        let c = [1, 2, 1, 1];
        let ce = one_hot
            .loss(t4(&[0., 3f32.ln()], c), t4(&[0., 1.], c), t4(&[1., 1.], c))
            .unwrap();
        assert!((scalar(ce) + 0.75f32.ln()).abs() < 1e-6);

        assert!(
            distance(1.0)
                .loss(t4(&[1., 2.], s), t4(&[0.], [1, 1, 1, 1]), t4(&[1., 2.], s))
                .is_err()
        );
    }

    #[test]
    fn activations() {
        let binary = Task::new(
            &TaskConfig::Binary {
                thresholds: vec![0.1, 127.0 / 255.0],
            },
            2,
        )
        .unwrap();
        let p = binary
            .activation(t4(&[0.0], [1, 1, 1, 1]))
            .to_array()
            .unwrap();
        close(&p, &[0.5]);
        let classes = vec!["a".to_string(), "b".into()];
        let one_hot = Task::new(&TaskConfig::OneHot { classes }, 2).unwrap();
        let p = one_hot
            .activation(t4(&[0.0, 3f32.ln()], [1, 2, 1, 1]))
            .to_array()
            .unwrap();
        close(&p, &[0.25, 0.75]);
        assert_eq!(
            distance(1.0)
                .activation(t4(&[-3.0], [1, 1, 1, 1]))
                .to_array()
                .unwrap()[[0, 0, 0, 0]],
            -3.0
        );
    }
}
