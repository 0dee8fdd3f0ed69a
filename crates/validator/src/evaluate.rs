//! Evaluation criteria of segmentations against ground truth.
//!
//! # Binary criteria ([`evaluate_binary`])
//! From the voxel counts `tp`, `fp`, `fn`, `tn` of a predicted mask against a ground-truth mask:
//!
//! | criterion   | definition                          | better |
//! |-------------|-------------------------------------|--------|
//! | `dice`      | `2tp / (2tp + fp + fn)`             | higher |
//! | `jaccard`   | `tp / (tp + fp + fn)`               | higher |
//! | `precision` | `tp / (tp + fp)`                    | higher |
//! | `recall`    | `tp / (tp + fn)`                    | higher |
//! | `f1`        | `2 p r / (p + r)` of precision, recall (0 when both are 0) | higher |
//! | `fpr`       | `fp / (fp + tn)`                    | lower  |
//! | `fnr`       | `fn / (tp + fn)`                    | lower  |
//! | `fdr`       | `fp / (tp + fp)`                    | lower  |
//! | `hausdorff` | symmetric Hausdorff distance between the two voxel sets, in voxel-size units | lower |
//!
//! Edge cases: when prediction and ground truth are **both empty** every criterion takes its
//! perfect value (1 for the higher-is-better ones, 0 for the others). Otherwise a ratio whose
//! denominator is 0 is NaN (e.g. `precision`, `fdr` and hence `f1` when nothing is predicted;
//! `recall`, `fnr` and `f1` when the ground truth is empty; `fpr` when the ground truth is
//! everywhere foreground), so such a result never wins a best-score selection. `hausdorff` is
//! `f64::INFINITY` when exactly one of the two masks is empty. `hausdorff` is computed over all
//! voxels of each set (as SimpleITK's filter used by DaCapo), with exact Euclidean distances.
//!
//! # Instance criteria ([`evaluate_instances`])
//! Computed, as in funlib.evaluate's `rand_voi` (used by DaCapo), over the voxels where the
//! ground truth is non-zero: ground-truth background (0) is ignored, while predicted label 0 is
//! an ordinary segment. Entropies use `log2` (bits), like funlib and CREMI.
//!
//! | criterion            | definition                                   | better |
//! |----------------------|----------------------------------------------|--------|
//! | `voi_split`          | `H(pred | gt)`                                | lower  |
//! | `voi_merge`          | `H(gt | pred)`                                | lower  |
//! | `voi`                | `voi_split + voi_merge`                      | lower  |
//! | `adapted_rand_error` | `1 - 2 Σn_ij² / (Σa_i² + Σb_j²)`             | lower  |
//!
//! where `n_ij` counts voxels with ground truth `i` and prediction `j`, `a_i`/`b_j` the
//! ground-truth/prediction segment sizes. **Differs**: DaCapo reports `voi` as the *mean*
//! `(split + merge) / 2`; here it is the sum (the usual definition, as in CREMI); the best
//! iteration/parameter is the same either way. `adapted_rand_error` is 1 minus the F-score of
//! funlib's `rand_split` and `rand_merge`. All four are NaN when the ground truth has no
//! non-zero voxel.

use std::collections::{BTreeMap, HashMap};

use dacapo_ndimage::distance_transform_edt;
use ndarray::{ArrayViewD, Zip};

use crate::ValidatorError;

/// Which family of criteria an evaluation computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EvaluationKind {
    /// Foreground masks against foreground masks.
    Binary,
    /// Instance labels against instance labels.
    Instance,
}

/// Name and direction of each binary criterion, in reporting order.
pub const BINARY_CRITERIA: &[(&str, bool)] = &[
    ("dice", true),
    ("jaccard", true),
    ("precision", true),
    ("recall", true),
    ("f1", true),
    ("fpr", false),
    ("fnr", false),
    ("fdr", false),
    ("hausdorff", false),
];

/// Name and direction of each instance criterion, in reporting order.
pub const INSTANCE_CRITERIA: &[(&str, bool)] = &[
    ("voi_split", false),
    ("voi_merge", false),
    ("voi", false),
    ("adapted_rand_error", false),
];

/// The criteria of `kind` as `(name, higher_is_better)`.
pub fn criteria_for(kind: EvaluationKind) -> Vec<(&'static str, bool)> {
    match kind {
        EvaluationKind::Binary => BINARY_CRITERIA.to_vec(),
        EvaluationKind::Instance => INSTANCE_CRITERIA.to_vec(),
    }
}

/// Whether a higher value of the criterion `name` is better; `None` for an unknown name.
pub fn higher_is_better(name: &str) -> Option<bool> {
    BINARY_CRITERIA
        .iter()
        .chain(INSTANCE_CRITERIA)
        .find(|(n, _)| *n == name)
        .map(|(_, h)| *h)
}

fn check_shapes(what: &str, left: &[usize], right: &[usize]) -> Result<(), ValidatorError> {
    if left != right {
        return Err(ValidatorError::ShapeMismatch {
            what: what.to_string(),
            left: left.to_vec(),
            right: right.to_vec(),
        });
    }
    Ok(())
}

/// `num / den`, NaN when `den` is 0.
fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 {
        f64::NAN
    } else {
        num as f64 / den as f64
    }
}

/// The binary criteria of the module docs for `pred` against `gt`.
///
/// `voxel_size` (one value per axis) scales `hausdorff`. Errors if the shapes differ or
/// `voxel_size` has the wrong length.
pub fn evaluate_binary(
    pred: ArrayViewD<bool>,
    gt: ArrayViewD<bool>,
    voxel_size: &[f64],
) -> Result<BTreeMap<String, f64>, ValidatorError> {
    check_shapes(
        "binary prediction vs ground truth",
        pred.shape(),
        gt.shape(),
    )?;
    if voxel_size.len() != pred.ndim() {
        return Err(ValidatorError::AxisCount {
            what: "voxel_size".into(),
            got: voxel_size.len(),
            expected: pred.ndim(),
        });
    }
    if !voxel_size.iter().all(|v| v.is_finite() && *v > 0.0) {
        return Err(ValidatorError::VoxelSize {
            voxel_size: voxel_size.to_vec(),
        });
    }
    let (mut tp, mut fp, mut fn_, mut tn) = (0u64, 0u64, 0u64, 0u64);
    Zip::from(&pred).and(&gt).for_each(|&p, &g| match (p, g) {
        (true, true) => tp += 1,
        (true, false) => fp += 1,
        (false, true) => fn_ += 1,
        (false, false) => tn += 1,
    });
    let pred_empty = tp + fp == 0;
    let gt_empty = tp + fn_ == 0;
    let mut out = BTreeMap::new();
    if pred_empty && gt_empty {
        for (name, higher) in BINARY_CRITERIA {
            out.insert(name.to_string(), if *higher { 1.0 } else { 0.0 });
        }
        return Ok(out);
    }
    let precision = ratio(tp, tp + fp);
    let recall = ratio(tp, tp + fn_);
    let f1 = if precision.is_nan() || recall.is_nan() {
        f64::NAN
    } else if precision + recall == 0.0 {
        0.0
    } else {
        2.0 * precision * recall / (precision + recall)
    };
    let hausdorff = if pred_empty || gt_empty {
        f64::INFINITY
    } else {
        hausdorff_distance(pred, gt, voxel_size)
    };
    out.insert("dice".into(), ratio(2 * tp, 2 * tp + fp + fn_));
    out.insert("jaccard".into(), ratio(tp, tp + fp + fn_));
    out.insert("precision".into(), precision);
    out.insert("recall".into(), recall);
    out.insert("f1".into(), f1);
    out.insert("fpr".into(), ratio(fp, fp + tn));
    out.insert("fnr".into(), ratio(fn_, tp + fn_));
    out.insert("fdr".into(), ratio(fp, tp + fp));
    out.insert("hausdorff".into(), hausdorff);
    Ok(out)
}

/// Symmetric Hausdorff distance of two non-empty masks of the same shape.
fn hausdorff_distance(a: ArrayViewD<bool>, b: ArrayViewD<bool>, voxel_size: &[f64]) -> f64 {
    // Distance of every voxel to the nearest voxel of the set: EDT of the complement.
    let to_b = distance_transform_edt(b.map(|v| !v).view(), voxel_size);
    let to_a = distance_transform_edt(a.map(|v| !v).view(), voxel_size);
    let mut h = 0.0f64;
    Zip::from(&a).and(&to_b).for_each(|&in_a, &d| {
        if in_a {
            h = h.max(d);
        }
    });
    Zip::from(&b).and(&to_a).for_each(|&in_b, &d| {
        if in_b {
            h = h.max(d);
        }
    });
    h
}

/// `Σ x log2 x` over the counts normalised by `total` (the negative entropy).
///
/// Summed in ascending order of counts, not in hash-map order: float addition is not
/// associative, and scores must be bit-for-bit reproducible (a best record only changes when
/// a value does).
fn neg_entropy<'a>(counts: impl Iterator<Item = &'a u64>, total: f64) -> f64 {
    let mut counts: Vec<u64> = counts.copied().filter(|&c| c > 0).collect();
    counts.sort_unstable();
    counts
        .into_iter()
        .map(|c| {
            let p = c as f64 / total;
            p * p.log2()
        })
        .sum()
}

/// `Σ c²` of the counts, exactly.
fn sum_squares<'a>(counts: impl Iterator<Item = &'a u64>) -> f64 {
    counts.map(|&c| u128::from(c) * u128::from(c)).sum::<u128>() as f64
}

/// The instance criteria of the module docs for the labels `pred` against `gt`.
///
/// Errors if the shapes differ.
pub fn evaluate_instances(
    pred: ArrayViewD<u64>,
    gt: ArrayViewD<u64>,
) -> Result<BTreeMap<String, f64>, ValidatorError> {
    check_shapes(
        "instance prediction vs ground truth",
        pred.shape(),
        gt.shape(),
    )?;
    let mut joint: HashMap<(u64, u64), u64> = HashMap::new();
    let mut gt_sizes: HashMap<u64, u64> = HashMap::new();
    let mut pred_sizes: HashMap<u64, u64> = HashMap::new();
    let mut total = 0u64;
    Zip::from(&pred).and(&gt).for_each(|&p, &g| {
        if g != 0 {
            total += 1;
            *joint.entry((g, p)).or_default() += 1;
            *gt_sizes.entry(g).or_default() += 1;
            *pred_sizes.entry(p).or_default() += 1;
        }
    });
    let mut out = BTreeMap::new();
    if total == 0 {
        for (name, _) in INSTANCE_CRITERIA {
            out.insert(name.to_string(), f64::NAN);
        }
        return Ok(out);
    }
    let t = total as f64;
    // H(gt, pred) - H(gt) = H(pred | gt), written with negative entropies.
    let h_joint = -neg_entropy(joint.values(), t);
    let h_gt = -neg_entropy(gt_sizes.values(), t);
    let h_pred = -neg_entropy(pred_sizes.values(), t);
    // Clamp float noise: conditional entropies are never negative.
    let voi_split = (h_joint - h_gt).max(0.0);
    let voi_merge = (h_joint - h_pred).max(0.0);
    let are = 1.0
        - 2.0 * sum_squares(joint.values())
            / (sum_squares(gt_sizes.values()) + sum_squares(pred_sizes.values()));
    out.insert("voi_split".into(), voi_split);
    out.insert("voi_merge".into(), voi_merge);
    out.insert("voi".into(), voi_split + voi_merge);
    out.insert("adapted_rand_error".into(), are);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{ArrayD, IxDyn, array};

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12 || (a.is_nan() && b.is_nan()) || a == b
    }

    fn assert_scores(got: &BTreeMap<String, f64>, expected: &[(&str, f64)]) {
        for (name, value) in expected {
            let g = got[*name];
            assert!(close(g, *value), "{name}: got {g}, expected {value}");
        }
    }

    #[test]
    fn instance_scores_are_bit_reproducible() {
        // Many segments of many sizes: a hash-order sum would differ in the last bits.
        let gt = ArrayD::from_shape_fn(IxDyn(&[60, 70]), |i| (i[0] / 3 * 31 + i[1] / 5) as u64);
        let pred = ArrayD::from_shape_fn(IxDyn(&[60, 70]), |i| {
            ((i[0] * 7 + i[1] * 3) / 11 % 97) as u64
        });
        let first = evaluate_instances(pred.view(), gt.view()).unwrap();
        for _ in 0..20 {
            let again = evaluate_instances(pred.view(), gt.view()).unwrap();
            for (k, v) in &first {
                assert_eq!(v.to_bits(), again[k].to_bits(), "{k}");
            }
        }
    }

    #[test]
    fn binary_hand_values() {
        // pred: 3 voxels, gt: 3 voxels, overlap 2: tp=2 fp=1 fn=1 tn=4.
        let pred = array![
            [true, true, true],
            [false, false, false],
            [false, false, false]
        ];
        let gt = array![
            [false, true, true],
            [false, false, true],
            [false, false, false]
        ];
        let s = evaluate_binary(pred.view().into_dyn(), gt.view().into_dyn(), &[1.0, 1.0]).unwrap();
        assert_scores(
            &s,
            &[
                ("dice", 4.0 / 6.0),
                ("jaccard", 0.5),
                ("precision", 2.0 / 3.0),
                ("recall", 2.0 / 3.0),
                ("f1", 2.0 / 3.0),
                ("fpr", 1.0 / 6.0),
                ("fnr", 1.0 / 3.0),
                ("fdr", 1.0 / 3.0),
                // (0,0) is 1 from gt (0,1); (1,2) is 1 from pred (0,2).
                ("hausdorff", 1.0),
            ],
        );
        assert_eq!(s.len(), BINARY_CRITERIA.len());
        // Rows are 3 units apart: (1,2) is now 3 from pred; (0,0) still 1 column from gt.
        let s = evaluate_binary(pred.view().into_dyn(), gt.view().into_dyn(), &[3.0, 1.0]).unwrap();
        assert_scores(&s, &[("hausdorff", 3.0)]);
    }

    #[test]
    fn hausdorff_uses_interior_distances() {
        // gt: single voxel at (0,0); pred: a row of 5; farthest pred voxel is 4 away.
        let mut gt = ArrayD::from_elem(IxDyn(&[2, 5]), false);
        gt[[0, 0]] = true;
        let mut pred = ArrayD::from_elem(IxDyn(&[2, 5]), false);
        for j in 0..5 {
            pred[[1, j]] = true;
        }
        let s = evaluate_binary(pred.view(), gt.view(), &[1.0, 1.0]).unwrap();
        assert!(close(s["hausdorff"], 17f64.sqrt()));
    }

    #[test]
    fn binary_edge_cases() {
        let empty = ArrayD::from_elem(IxDyn(&[2, 2]), false);
        let some = array![[true, false], [false, false]].into_dyn();
        let full = ArrayD::from_elem(IxDyn(&[2, 2]), true);
        let both_empty = evaluate_binary(empty.view(), empty.view(), &[1.0, 1.0]).unwrap();
        assert_scores(
            &both_empty,
            &[
                ("dice", 1.0),
                ("jaccard", 1.0),
                ("precision", 1.0),
                ("recall", 1.0),
                ("f1", 1.0),
                ("fpr", 0.0),
                ("fnr", 0.0),
                ("fdr", 0.0),
                ("hausdorff", 0.0),
            ],
        );
        let nothing_predicted = evaluate_binary(empty.view(), some.view(), &[1.0, 1.0]).unwrap();
        assert_scores(
            &nothing_predicted,
            &[
                ("dice", 0.0),
                ("jaccard", 0.0),
                ("precision", f64::NAN),
                ("recall", 0.0),
                ("f1", f64::NAN),
                ("fpr", 0.0),
                ("fnr", 1.0),
                ("fdr", f64::NAN),
                ("hausdorff", f64::INFINITY),
            ],
        );
        let empty_gt = evaluate_binary(some.view(), empty.view(), &[1.0, 1.0]).unwrap();
        assert_scores(
            &empty_gt,
            &[
                ("dice", 0.0),
                ("jaccard", 0.0),
                ("precision", 0.0),
                ("recall", f64::NAN),
                ("f1", f64::NAN),
                ("fpr", 0.25),
                ("fnr", f64::NAN),
                ("fdr", 1.0),
                ("hausdorff", f64::INFINITY),
            ],
        );
        // Disjoint non-empty masks: precision = recall = 0 gives f1 = 0, not NaN.
        let other = array![[false, false], [false, true]].into_dyn();
        let disjoint = evaluate_binary(some.view(), other.view(), &[1.0, 1.0]).unwrap();
        assert_scores(
            &disjoint,
            &[("f1", 0.0), ("dice", 0.0), ("hausdorff", 2f64.sqrt())],
        );
        // Ground truth everywhere: no negatives, fpr undefined.
        let all = evaluate_binary(full.view(), full.view(), &[1.0, 1.0]).unwrap();
        assert_scores(
            &all,
            &[("dice", 1.0), ("fpr", f64::NAN), ("hausdorff", 0.0)],
        );
    }

    #[test]
    fn binary_errors() {
        let a = ArrayD::from_elem(IxDyn(&[2, 2]), false);
        let b = ArrayD::from_elem(IxDyn(&[2, 3]), false);
        assert!(matches!(
            evaluate_binary(a.view(), b.view(), &[1.0, 1.0]),
            Err(ValidatorError::ShapeMismatch { .. })
        ));
        let e = evaluate_binary(a.view(), a.view(), &[1.0]).unwrap_err();
        assert!(e.to_string().contains("voxel_size has 1 values"), "{e}");
    }

    #[test]
    fn instance_values_match_funlib() {
        // funlib.evaluate's own test: rand_voi(a, b) with a as ground truth.
        let gt = array![1u64, 1, 2, 2, 2, 3, 3, 3, 3, 4, 4].into_dyn();
        let pred = array![3u64, 3, 3, 3, 4, 5, 6, 6, 5, 5, 5].into_dyn();
        let s = evaluate_instances(pred.view(), gt.view()).unwrap();
        let split = 0.6140806820148608;
        let merge = 0.7272727272727271;
        assert!((s["voi_split"] - split).abs() < 1e-12);
        assert!((s["voi_merge"] - merge).abs() < 1e-12);
        assert!((s["voi"] - (split + merge)).abs() < 1e-12);
        // rand_split 0.6363.., rand_merge 0.5675..: error = 1 - F(split, merge).
        let (rs, rm) = (0.6363636363636364, 0.5675675675675675);
        let expected = 1.0 - 2.0 * rs * rm / (rs + rm);
        assert!((s["adapted_rand_error"] - expected).abs() < 1e-12);
    }

    #[test]
    fn instance_hand_values() {
        // One gt object of 4 voxels split in two equal halves: H(pred|gt) = 1 bit.
        let gt = array![[1u64, 1], [1, 1]].into_dyn();
        let pred = array![[5u64, 5], [6, 6]].into_dyn();
        let s = evaluate_instances(pred.view(), gt.view()).unwrap();
        assert_scores(
            &s,
            &[
                ("voi_split", 1.0),
                ("voi_merge", 0.0),
                ("voi", 1.0),
                // Σn² = 8, Σa² = 16, Σb² = 8: 1 - 16/24.
                ("adapted_rand_error", 1.0 / 3.0),
            ],
        );
        // And the merge the other way around.
        let s = evaluate_instances(gt.view(), pred.view()).unwrap();
        assert_scores(&s, &[("voi_split", 0.0), ("voi_merge", 1.0)]);
        // Identical up to relabelling: perfect.
        let s = evaluate_instances(pred.view(), pred.map(|v| v * 10).view()).unwrap();
        assert_scores(
            &s,
            &[
                ("voi", 0.0),
                ("adapted_rand_error", 0.0),
                ("voi_split", 0.0),
            ],
        );
    }

    #[test]
    fn instance_background_handling() {
        // gt background voxels are ignored, so predicting anything there costs nothing.
        let gt = array![0u64, 0, 1, 1].into_dyn();
        let pred = array![7u64, 8, 2, 2].into_dyn();
        let s = evaluate_instances(pred.view(), gt.view()).unwrap();
        assert_scores(&s, &[("voi", 0.0), ("adapted_rand_error", 0.0)]);
        // Empty prediction (all 0) is one segment: merges the two gt objects.
        let gt = array![1u64, 1, 2, 2].into_dyn();
        let pred = array![0u64, 0, 0, 0].into_dyn();
        let s = evaluate_instances(pred.view(), gt.view()).unwrap();
        assert_scores(
            &s,
            &[
                ("voi_split", 0.0),
                ("voi_merge", 1.0),
                // Σn² = 8, Σa² = 8, Σb² = 16.
                ("adapted_rand_error", 1.0 / 3.0),
            ],
        );
        // Empty ground truth: undefined.
        let s = evaluate_instances(pred.view(), pred.view()).unwrap();
        assert!(s.values().all(|v| v.is_nan()));
        assert_eq!(s.len(), INSTANCE_CRITERIA.len());
    }

    #[test]
    fn criteria_lists() {
        let b = criteria_for(EvaluationKind::Binary);
        assert_eq!(b.len(), 9);
        assert!(b.contains(&("dice", true)));
        assert!(b.contains(&("hausdorff", false)));
        let i = criteria_for(EvaluationKind::Instance);
        assert!(i.contains(&("voi", false)));
        assert_eq!(higher_is_better("f1"), Some(true));
        assert_eq!(higher_is_better("fdr"), Some(false));
        assert_eq!(higher_is_better("nope"), None);
    }
}
