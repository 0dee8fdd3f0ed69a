//! Connected-component labelling and consecutive relabelling of label arrays.

use std::collections::HashMap;

use ndarray::{ArrayD, ArrayViewD};

use crate::UnionFind;

/// Which neighbours of a voxel count as connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Connectivity {
    /// Voxels sharing a face (4-neighbourhood in 2D, 6 in 3D).
    #[default]
    Face,
    /// Voxels sharing a face, edge or corner (8-neighbourhood in 2D, 26 in 3D).
    Full,
}

/// The neighbour offsets that come before a voxel in raster (C) order, for `connectivity`.
pub(crate) fn backward_offsets(ndim: usize, connectivity: Connectivity) -> Vec<Vec<isize>> {
    let mut out = Vec::new();
    let total = 3usize.pow(ndim as u32);
    for code in 0..total {
        let mut c = code;
        let offset: Vec<isize> = (0..ndim)
            .map(|_| {
                let d = (c % 3) as isize - 1;
                c /= 3;
                d
            })
            .collect();
        let nonzero = offset.iter().filter(|&&d| d != 0).count();
        let first = offset.iter().find(|&&d| d != 0);
        let allowed = match connectivity {
            Connectivity::Face => nonzero == 1,
            Connectivity::Full => nonzero >= 1,
        };
        if allowed && first == Some(&-1) {
            out.push(offset);
        }
    }
    out
}

/// Labels the connected components of the `true` voxels of `mask`.
///
/// Returns the labels (0 for `false` voxels, components numbered `1..=count` in raster order of
/// their first voxel) and `count`.
pub fn connected_components(
    mask: ArrayViewD<bool>,
    connectivity: Connectivity,
) -> (ArrayD<u64>, u64) {
    let shape = mask.shape().to_vec();
    let ndim = shape.len();
    let mut labels = ArrayD::<u64>::zeros(mask.raw_dim());
    if labels.is_empty() {
        return (labels, 0);
    }
    // `labels` is freshly allocated in standard layout, so flat indices are raster indices.
    let strides: Vec<isize> = {
        let mut s = vec![1isize; ndim];
        for a in (0..ndim.saturating_sub(1)).rev() {
            s[a] = s[a + 1] * shape[a + 1] as isize;
        }
        s
    };
    let offsets = backward_offsets(ndim, connectivity);
    let flat_offsets: Vec<isize> = offsets
        .iter()
        .map(|o| o.iter().zip(&strides).map(|(d, s)| d * s).sum())
        .collect();
    let Some(out) = labels.as_slice_mut() else {
        unreachable!("a freshly allocated array is contiguous")
    };
    // Provisional labels are 1-based indices into the union-find (entry 0 unused).
    let mut uf = UnionFind::new(1);
    let mut idx = vec![0usize; ndim];
    for (flat, &m) in mask.iter().enumerate() {
        if m {
            let mut current = 0usize;
            for (o, &fo) in offsets.iter().zip(&flat_offsets) {
                let inside = o.iter().zip(&idx).zip(&shape).all(|((&d, &i), &n)| {
                    let j = i as isize + d;
                    j >= 0 && (j as usize) < n
                });
                if !inside {
                    continue;
                }
                let neighbour = out[(flat as isize + fo) as usize] as usize;
                if neighbour == 0 {
                    continue;
                }
                if current == 0 {
                    current = neighbour;
                } else {
                    uf.union(current, neighbour);
                }
            }
            if current == 0 {
                current = uf.push();
            }
            out[flat] = current as u64;
        }
        // Advance the multi-index in raster order.
        for a in (0..ndim).rev() {
            idx[a] += 1;
            if idx[a] < shape[a] {
                break;
            }
            idx[a] = 0;
        }
    }
    // Number the components by the first provisional label of each, which is assigned at the
    // component's first voxel in raster order.
    let mut final_label = vec![0u64; uf.len()];
    let mut count = 0u64;
    for p in 1..uf.len() {
        let r = uf.find(p);
        if final_label[r] == 0 {
            count += 1;
            final_label[r] = count;
        }
        final_label[p] = final_label[r];
    }
    for v in out.iter_mut() {
        *v = final_label[*v as usize];
    }
    (labels, count)
}

/// Maps the non-zero labels of `labels` to `1..=count` in increasing order of their value.
///
/// 0 stays 0; the relative order of labels is kept (like scikit-image's `relabel_sequential`).
/// Returns the relabelled array and `count`, the number of distinct non-zero labels.
pub fn relabel_consecutive(labels: ArrayViewD<u64>) -> (ArrayD<u64>, u64) {
    let mut values: Vec<u64> = labels.iter().copied().filter(|&v| v != 0).collect();
    values.sort_unstable();
    values.dedup();
    let map: HashMap<u64, u64> = values
        .iter()
        .enumerate()
        .map(|(i, &v)| (v, i as u64 + 1))
        .collect();
    let out = labels.map(|v| if *v == 0 { 0 } else { map[v] });
    (out, values.len() as u64)
}

/// The labels of `labels` as dense region ids in raster order (0 stays 0, the other labels
/// become `1..=count` in increasing order of their value) and `count`.
pub(crate) fn dense_regions(labels: ArrayViewD<u64>) -> (Vec<u32>, usize) {
    let max = labels.iter().copied().max().unwrap_or(0);
    if max as usize > labels.len() {
        let (consecutive, count) = relabel_consecutive(labels);
        return (
            consecutive.iter().map(|&v| v as u32).collect(),
            count as usize,
        );
    }
    // Few enough distinct values to index a table by label.
    let mut id = vec![0u32; max as usize + 1];
    for &v in labels.iter().filter(|&&v| v != 0) {
        id[v as usize] = 1;
    }
    let mut count = 0u32;
    for slot in id.iter_mut().skip(1) {
        if *slot != 0 {
            count += 1;
            *slot = count;
        }
    }
    (
        labels.iter().map(|&v| id[v as usize]).collect(),
        count as usize,
    )
}

/// Numbers the non-zero entries of `labels` (values `1..=max_label`) `1..=count` in raster
/// order of their first voxel; returns `count`.
pub(crate) fn renumber_in_raster_order(labels: &mut [u64], max_label: usize) -> u64 {
    let mut new = vec![0u64; max_label + 1];
    let mut count = 0u64;
    for v in labels.iter_mut() {
        if *v != 0 {
            let slot = &mut new[*v as usize];
            if *slot == 0 {
                count += 1;
                *slot = count;
            }
            *v = *slot;
        }
    }
    count
}

/// Sets every segment of `labels` smaller than `min_size` voxels to background (0).
///
/// Returns the remaining segments numbered `1..=count` in raster order of their first voxel,
/// and `count`.
pub fn remove_small_segments(labels: ArrayViewD<u64>, min_size: u64) -> (ArrayD<u64>, u64) {
    let (mut region, count) = dense_regions(labels.view());
    let mut size = vec![0u64; count + 1];
    for &r in &region {
        size[r as usize] += 1;
    }
    for r in region.iter_mut() {
        if size[*r as usize] < min_size {
            *r = 0;
        }
    }
    let mut data: Vec<u64> = region.into_iter().map(u64::from).collect();
    let kept = renumber_in_raster_order(&mut data, count);
    let out = ArrayD::from_shape_vec(labels.raw_dim(), data)
        .unwrap_or_else(|_| unreachable!("one label per voxel of the input"));
    (out, kept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{ArrayD, Dimension, IxDyn, array};
    use proptest::prelude::*;

    #[test]
    fn face_vs_full_2d() {
        let mask = array![
            [true, false, false, true],
            [false, true, false, true],
            [false, false, false, false],
            [true, true, false, true],
        ]
        .into_dyn();
        let (l, n) = connected_components(mask.view(), Connectivity::Face);
        assert_eq!(n, 5);
        assert_eq!(
            l,
            array![[1, 0, 0, 2], [0, 3, 0, 2], [0, 0, 0, 0], [4, 4, 0, 5]].into_dyn()
        );
        let (l, n) = connected_components(mask.view(), Connectivity::Full);
        assert_eq!(n, 4);
        assert_eq!(
            l,
            array![[1, 0, 0, 2], [0, 1, 0, 2], [0, 0, 0, 0], [3, 3, 0, 4]].into_dyn()
        );
    }

    #[test]
    fn u_shape_merges_late() {
        // The two arms get different provisional labels and merge on the bottom row.
        let mask = array![
            [true, false, true],
            [true, false, true],
            [true, true, true],
            [false, false, false],
            [false, true, false],
        ]
        .into_dyn();
        let (l, n) = connected_components(mask.view(), Connectivity::Face);
        assert_eq!(n, 2);
        assert_eq!(
            l,
            array![[1, 0, 1], [1, 0, 1], [1, 1, 1], [0, 0, 0], [0, 2, 0]].into_dyn()
        );
    }

    #[test]
    fn three_d_and_edges() {
        let mut mask = ArrayD::from_elem(IxDyn(&[2, 2, 2]), false);
        mask[[0, 0, 0]] = true;
        mask[[1, 1, 1]] = true;
        let (_, n) = connected_components(mask.view(), Connectivity::Face);
        assert_eq!(n, 2);
        let (l, n) = connected_components(mask.view(), Connectivity::Full);
        assert_eq!(n, 1);
        assert_eq!(l[[1, 1, 1]], 1);
        mask[[0, 0, 1]] = true;
        mask[[0, 1, 1]] = true;
        let (l, n) = connected_components(mask.view(), Connectivity::Face);
        assert_eq!(n, 1);
        assert_eq!(l.iter().filter(|&&v| v == 1).count(), 4);
        let empty = ArrayD::from_elem(IxDyn(&[0, 4]), true);
        assert_eq!(connected_components(empty.view(), Connectivity::Face).1, 0);
        let none = ArrayD::from_elem(IxDyn(&[3, 4]), false);
        let (l, n) = connected_components(none.view(), Connectivity::Face);
        assert_eq!(n, 0);
        assert!(l.iter().all(|&v| v == 0));
    }

    #[test]
    fn offsets_counts() {
        assert_eq!(backward_offsets(2, Connectivity::Face).len(), 2);
        assert_eq!(backward_offsets(2, Connectivity::Full).len(), 4);
        assert_eq!(backward_offsets(3, Connectivity::Face).len(), 3);
        assert_eq!(backward_offsets(3, Connectivity::Full).len(), 13);
    }

    #[test]
    fn relabel_keeps_order() {
        let l = array![[0, 7, 7], [100, 0, 3]].into_dyn();
        let (r, n) = relabel_consecutive(l.view());
        assert_eq!(n, 3);
        assert_eq!(r, array![[0, 2, 2], [3, 0, 1]].into_dyn());
    }

    #[test]
    fn small_segments_are_removed_and_the_rest_renumbered() {
        let l = array![[9, 9, 0, 4], [9, 0, 7, 4], [3, 3, 0, 4]].into_dyn();
        let (r, n) = remove_small_segments(l.view(), 3);
        assert_eq!(n, 2);
        assert_eq!(
            r,
            array![[1, 1, 0, 2], [1, 0, 0, 2], [0, 0, 0, 2]].into_dyn()
        );
        let (r, n) = remove_small_segments(l.view(), 0);
        assert_eq!(n, 4);
        assert_eq!(
            r,
            array![[1, 1, 0, 2], [1, 0, 3, 2], [4, 4, 0, 2]].into_dyn()
        );
        // Labels far above the voxel count take the sorting path.
        let big = array![[u64::MAX, 5, 5]].into_dyn();
        let (r, n) = remove_small_segments(big.view(), 2);
        assert_eq!((r, n), (array![[0, 1, 1]].into_dyn(), 1));
    }

    /// Flood fill reference.
    fn flood(mask: &ArrayD<bool>, connectivity: Connectivity) -> ArrayD<u64> {
        let shape = mask.shape().to_vec();
        let ndim = shape.len();
        let mut offs = backward_offsets(ndim, connectivity);
        let fwd: Vec<Vec<isize>> = offs
            .iter()
            .map(|o| o.iter().map(|d| -d).collect())
            .collect();
        offs.extend(fwd);
        let mut labels = ArrayD::<u64>::zeros(mask.raw_dim());
        let mut next = 0;
        for (start, &m) in mask.indexed_iter() {
            let start = start.slice().to_vec();
            if !m || labels[start.as_slice()] != 0 {
                continue;
            }
            next += 1;
            let mut stack = vec![start];
            while let Some(p) = stack.pop() {
                if labels[p.as_slice()] != 0 {
                    continue;
                }
                labels[p.as_slice()] = next;
                for o in &offs {
                    let q: Vec<isize> = p.iter().zip(o).map(|(&a, &d)| a as isize + d).collect();
                    if q.iter()
                        .zip(&shape)
                        .all(|(&a, &n)| a >= 0 && (a as usize) < n)
                    {
                        let q: Vec<usize> = q.iter().map(|&a| a as usize).collect();
                        if mask[q.as_slice()] && labels[q.as_slice()] == 0 {
                            stack.push(q);
                        }
                    }
                }
            }
        }
        labels
    }

    proptest! {
        #[test]
        fn matches_flood_fill(
            shape in proptest::collection::vec(1usize..7, 1..=3),
            seed in proptest::collection::vec(proptest::bool::weighted(0.55), 216),
            full in proptest::bool::ANY,
        ) {
            let len: usize = shape.iter().product();
            let mask = ArrayD::from_shape_vec(IxDyn(&shape), seed[..len].to_vec()).unwrap();
            let c = if full { Connectivity::Full } else { Connectivity::Face };
            let (l, n) = connected_components(mask.view(), c);
            let expected = flood(&mask, c);
            prop_assert_eq!(n, expected.iter().copied().max().unwrap_or(0));
            prop_assert_eq!(l, expected);
        }
    }
}
