//! Instance segmentation from affinities: mutex watershed and plain thresholded components.
//!
//! Affinities are `(c, spatial...)` with one channel per neighbourhood offset: channel `k` at
//! voxel `p` is the probability that `p` and `p + offsets[k]` belong to the same object (the
//! gunpowder/DaCapo convention). Edges whose other end falls outside the array are ignored.

use std::collections::HashSet;
use std::hash::BuildHasherDefault;

use ndarray::{ArrayD, ArrayViewD, Axis, IxDyn, Slice};
use rayon::slice::ParallelSliceMut;

use crate::fx::FxHasher;
use crate::{NdimageError, UnionFind};

/// Largest voxel count: voxel indices of the edge list are stored as `u32`.
const MAX_VOXELS: usize = u32::MAX as usize;

/// A set of mutex ids.
type FxSet = HashSet<u64, BuildHasherDefault<FxHasher>>;

/// One graph edge between two voxels (flat raster indices) with its score.
#[derive(Clone, Copy)]
struct Edge {
    score: f32,
    a: u32,
    b: u32,
}

/// Checks that `affinities` is `(c, spatial...)` with one offset of the spatial rank per
/// channel and few enough voxels for 32-bit indices; returns the spatial shape.
pub(crate) fn check_inputs(
    affinities: &ArrayViewD<f32>,
    offsets: &[Vec<isize>],
) -> Result<Vec<usize>, NdimageError> {
    if affinities.ndim() == 0 {
        return Err(NdimageError::NoChannelAxis);
    }
    let channels = affinities.len_of(Axis(0));
    if channels != offsets.len() {
        return Err(NdimageError::ChannelCount {
            channels,
            offsets: offsets.len(),
        });
    }
    let spatial: Vec<usize> = affinities.shape()[1..].to_vec();
    for (index, o) in offsets.iter().enumerate() {
        if o.len() != spatial.len() {
            return Err(NdimageError::OffsetDims {
                index,
                offset: o.clone(),
                len: o.len(),
                spatial: spatial.len(),
            });
        }
    }
    let voxels: usize = spatial.iter().product();
    if voxels > MAX_VOXELS {
        return Err(NdimageError::TooLarge {
            voxels,
            max: MAX_VOXELS,
        });
    }
    Ok(spatial)
}

/// The per-axis slices of the voxels `p` whose neighbour `p + offset` lies inside `shape`
/// (`here`) and of those neighbours (`there`); `None` when no voxel has its neighbour inside.
pub(crate) fn edge_slices(shape: &[usize], offset: &[isize]) -> Option<(Vec<Slice>, Vec<Slice>)> {
    if offset
        .iter()
        .zip(shape)
        .any(|(&o, &s)| o.unsigned_abs() >= s)
    {
        return None;
    }
    let here = offset
        .iter()
        .zip(shape)
        .map(|(&o, &s)| Slice::from((-o).max(0)..s as isize - o.max(0)))
        .collect();
    let there = offset
        .iter()
        .zip(shape)
        .map(|(&o, &s)| Slice::from(o.max(0)..s as isize + o.min(0)))
        .collect();
    Some((here, there))
}

/// Indices of the offsets of smallest reach (largest absolute component): the direct
/// neighbours of a usual neighbourhood, such as `[1, 0]` and `[0, 1]` next to `[9, 0]`.
pub(crate) fn short_range_channels(offsets: &[Vec<isize>]) -> Vec<usize> {
    let reach = |o: &Vec<isize>| o.iter().map(|d| d.unsigned_abs()).max().unwrap_or(0);
    let shortest = offsets.iter().map(reach).min().unwrap_or(0);
    (0..offsets.len())
        .filter(|&k| reach(&offsets[k]) == shortest)
        .collect()
}

/// Checks the inputs and returns every in-bounds edge with `score(affinity)`, skipping NaN.
fn edges(
    affinities: &ArrayViewD<f32>,
    offsets: &[Vec<isize>],
    score: impl Fn(f32) -> f32,
) -> Result<(Vec<usize>, Vec<Edge>), NdimageError> {
    let spatial = check_inputs(affinities, offsets)?;
    let ndim = spatial.len();
    let mut strides = vec![1isize; ndim];
    for a in (0..ndim.saturating_sub(1)).rev() {
        strides[a] = strides[a + 1] * spatial[a + 1] as isize;
    }
    let mut out = Vec::new();
    for (k, o) in offsets.iter().enumerate() {
        let flat_offset: isize = o.iter().zip(&strides).map(|(d, s)| d * s).sum();
        let channel = affinities.index_axis(Axis(0), k);
        for (idx, &aff) in channel.indexed_iter() {
            if aff.is_nan() {
                continue;
            }
            let inside = (0..ndim).all(|a| {
                let j = idx[a] as isize + o[a];
                j >= 0 && (j as usize) < spatial[a]
            });
            if !inside {
                continue;
            }
            let flat: isize = (0..ndim).map(|a| idx[a] as isize * strides[a]).sum();
            out.push(Edge {
                score: score(aff),
                a: flat as u32,
                b: (flat + flat_offset) as u32,
            });
        }
    }
    Ok((spatial, out))
}

/// Turns union-find sets into labels `1..=count` in raster order of each set's first voxel.
fn labels_from_sets(spatial: &[usize], uf: &mut UnionFind) -> (ArrayD<u64>, u64) {
    let mut label_of_root = vec![0u64; uf.len()];
    let mut count = 0u64;
    let mut data = Vec::with_capacity(uf.len());
    for p in 0..uf.len() {
        let r = uf.find(p);
        if label_of_root[r] == 0 {
            count += 1;
            label_of_root[r] = count;
        }
        data.push(label_of_root[r]);
    }
    let labels = ArrayD::from_shape_vec(IxDyn(spatial), data)
        .unwrap_or_else(|_| unreachable!("one label per voxel of the spatial shape"));
    (labels, count)
}

/// Mutex watershed (Wolf et al. 2018) of affinities with edge score `affinity - bias`.
///
/// Edges are processed by decreasing `|affinity - bias|`: a positive score merges its two
/// clusters unless a mutual-exclusion constraint already separates them, a negative score adds
/// such a constraint between them. This is the rule of `mwatershed.agglom(affs - bias, offsets)`
/// used by DaCapo's watershed post-processor: a higher `bias` splits more. NaN affinities are
/// ignored. Every voxel gets a label (no background): segments are numbered `1..=count` in
/// raster order of their first voxel; returns the labels (spatial shape) and `count`.
pub fn mutex_watershed(
    affinities: ArrayViewD<f32>,
    offsets: &[Vec<isize>],
    bias: f32,
) -> Result<(ArrayD<u64>, u64), NdimageError> {
    let (spatial, mut edges) = edges(&affinities, offsets, |a| a - bias)?;
    // Strongest evidence first. The sort is stable, so ties keep the (deterministic) order in
    // which edges were generated. For non-negative floats the bit pattern orders like the value.
    edges.par_sort_by_key(|e| u32::MAX - e.score.abs().to_bits());
    let voxels: usize = spatial.iter().product();
    let mut uf = UnionFind::new(voxels);
    // Mutex constraints held by each cluster root, as ids of the repulsive edges that made them:
    // `slot[root]` indexes `sets` (NO_SET when the root has none).
    const NO_SET: u32 = u32::MAX;
    let mut slot = vec![NO_SET; voxels];
    let mut sets: Vec<FxSet> = Vec::new();
    let mut free: Vec<u32> = Vec::new();
    let mut next_mutex = 0u64;
    for e in edges {
        if e.score == 0.0 || e.score.is_nan() {
            continue;
        }
        let (ra, rb) = (uf.find(e.a as usize), uf.find(e.b as usize));
        if ra == rb {
            continue;
        }
        let (sa, sb) = (slot[ra], slot[rb]);
        if e.score > 0.0 {
            if sa != NO_SET && sb != NO_SET {
                let (small, large) = if sets[sa as usize].len() <= sets[sb as usize].len() {
                    (&sets[sa as usize], &sets[sb as usize])
                } else {
                    (&sets[sb as usize], &sets[sa as usize])
                };
                if small.iter().any(|m| large.contains(m)) {
                    continue;
                }
            }
            let root = uf.union(ra, rb);
            let other = if root == ra { rb } else { ra };
            // Keep the larger constraint set and move the smaller one into it.
            let merged = match (slot[root], slot[other]) {
                (NO_SET, s) | (s, NO_SET) => s,
                (s_root, s_other) => {
                    let (keep, drop) =
                        if sets[s_root as usize].len() >= sets[s_other as usize].len() {
                            (s_root, s_other)
                        } else {
                            (s_other, s_root)
                        };
                    let moved = std::mem::take(&mut sets[drop as usize]);
                    sets[keep as usize].extend(moved);
                    free.push(drop);
                    keep
                }
            };
            slot[other] = NO_SET;
            slot[root] = merged;
        } else {
            for r in [ra, rb] {
                if slot[r] == NO_SET {
                    slot[r] = match free.pop() {
                        Some(s) => s,
                        None => {
                            sets.push(FxSet::default());
                            (sets.len() - 1) as u32
                        }
                    };
                }
                sets[slot[r] as usize].insert(next_mutex);
            }
            next_mutex += 1;
        }
    }
    Ok(labels_from_sets(&spatial, &mut uf))
}

/// Connected components of the graph whose edges have `affinity > threshold`.
///
/// Simpler and faster than [`mutex_watershed`] but prone to merges through single strong edges.
/// Every voxel gets a label (isolated voxels are their own segment), numbered `1..=count` in
/// raster order of their first voxel; returns the labels (spatial shape) and `count`.
pub fn affinity_connected_components(
    affinities: ArrayViewD<f32>,
    offsets: &[Vec<isize>],
    threshold: f32,
) -> Result<(ArrayD<u64>, u64), NdimageError> {
    let (spatial, edges) = edges(&affinities, offsets, |a| a)?;
    let voxels: usize = spatial.iter().product();
    let mut uf = UnionFind::new(voxels);
    for e in edges {
        if e.score > threshold {
            uf.union(e.a as usize, e.b as usize);
        }
    }
    Ok(labels_from_sets(&spatial, &mut uf))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array, Array3, IxDyn};

    fn nn_offsets_2d() -> Vec<Vec<isize>> {
        vec![vec![1, 0], vec![0, 1]]
    }

    /// Affinities of a label image (1 inside the same object, 0 across or to background 0).
    fn affs_from_labels(labels: &Array<u64, IxDyn>, offsets: &[Vec<isize>]) -> ArrayD<f32> {
        let spatial = labels.shape().to_vec();
        let mut shape = vec![offsets.len()];
        shape.extend(&spatial);
        ArrayD::from_shape_fn(IxDyn(&shape), |idx| {
            let o = &offsets[idx[0]];
            let p: Vec<usize> = (0..spatial.len()).map(|a| idx[a + 1]).collect();
            let q: Vec<isize> = p.iter().zip(o).map(|(&x, &d)| x as isize + d).collect();
            if q.iter()
                .zip(&spatial)
                .any(|(&x, &n)| x < 0 || x as usize >= n)
            {
                return 0.0;
            }
            let q: Vec<usize> = q.iter().map(|&x| x as usize).collect();
            let (lp, lq) = (labels[p.as_slice()], labels[q.as_slice()]);
            if lp != 0 && lp == lq { 1.0 } else { 0.0 }
        })
    }

    #[test]
    fn perfect_affinities_recover_objects() {
        let labels = ndarray::array![[1u64, 1, 0, 2], [1, 1, 0, 2], [0, 0, 0, 2]].into_dyn();
        let affs = affs_from_labels(&labels, &nn_offsets_2d());
        for bias in [0.1f32, 0.5, 0.9] {
            let (seg, n) = mutex_watershed(affs.view(), &nn_offsets_2d(), bias).unwrap();
            // Two objects plus 5 background singletons.
            assert_eq!(n, 7, "bias {bias}");
            assert_eq!(seg[[0, 0]], seg[[1, 1]]);
            assert_eq!(seg[[0, 3]], seg[[2, 3]]);
            assert_ne!(seg[[0, 0]], seg[[0, 3]]);
            assert_ne!(seg[[0, 2]], seg[[1, 2]]);
            let (cc, m) =
                affinity_connected_components(affs.view(), &nn_offsets_2d(), bias).unwrap();
            assert_eq!(m, 7);
            assert_eq!(cc, seg);
        }
    }

    #[test]
    fn raster_order_labels() {
        // 1-D: links 0-1 strong, 1-2 weak, 2-3 strong.
        let affs = ndarray::array![[0.9f32, 0.2, 0.95, 0.0]].into_dyn();
        let (seg, n) = mutex_watershed(affs.view(), &[vec![1]], 0.5).unwrap();
        assert_eq!(n, 2);
        assert_eq!(seg, ndarray::array![1u64, 1, 2, 2].into_dyn());
        // With a low bias every link is attractive: one segment.
        let (seg, n) = mutex_watershed(affs.view(), &[vec![1]], 0.1).unwrap();
        assert_eq!(n, 1);
        assert!(seg.iter().all(|&v| v == 1));
    }

    #[test]
    fn mutex_blocks_weak_merge_that_thresholding_makes() {
        // Voxels 0,1,2 in a line plus a long-range edge 0-2. Edges: 0-1 aff 0.8 (score 0.3),
        // 1-2 aff 0.7 (score 0.2), 0-2 aff 0.05 (score -0.45, strongest). The repulsion 0-2 is
        // processed first, 0-1 merges, 1-2 is then blocked by the mutex.
        let mut affs = Array3::<f32>::zeros((2, 1, 3));
        affs[[0, 0, 0]] = 0.8; // offset (0,1): 0-1
        affs[[0, 0, 1]] = 0.7; // offset (0,1): 1-2
        affs[[1, 0, 0]] = 0.05; // offset (0,2): 0-2
        let offsets = vec![vec![0, 1], vec![0, 2]];
        let (seg, n) = mutex_watershed(affs.view().into_dyn(), &offsets, 0.5).unwrap();
        assert_eq!(n, 2);
        assert_eq!(seg, ndarray::array![[1u64, 1, 2]].into_dyn());
        let (cc, m) = affinity_connected_components(affs.view().into_dyn(), &offsets, 0.5).unwrap();
        assert_eq!(m, 1);
        assert!(cc.iter().all(|&v| v == 1));
    }

    #[test]
    fn nan_and_negative_offsets() {
        let affs = ndarray::array![[0.9f32, f32::NAN, 0.9]].into_dyn();
        // Offset -1: channel at p links p and p-1; p=0 has no partner, p=1 is NaN (ignored).
        let (seg, n) = mutex_watershed(affs.view(), &[vec![-1]], 0.5).unwrap();
        assert_eq!(n, 2);
        assert_eq!(seg, ndarray::array![1u64, 2, 2].into_dyn());
    }

    /// Naive mutex watershed: explicit cluster ids and a list of mutex voxel pairs.
    fn naive_mws(affs: &ArrayD<f32>, offsets: &[Vec<isize>], bias: f32) -> ArrayD<u64> {
        let spatial = affs.shape()[1..].to_vec();
        let (_, mut edges) = edges(&affs.view(), offsets, |a| a - bias).unwrap();
        edges.sort_by(|x, y| y.score.abs().total_cmp(&x.score.abs()));
        let n: usize = spatial.iter().product();
        let mut cluster: Vec<usize> = (0..n).collect();
        let mut mutex: Vec<(usize, usize)> = Vec::new();
        for e in edges {
            let (a, b) = (e.a as usize, e.b as usize);
            let (ca, cb) = (cluster[a], cluster[b]);
            if ca == cb {
                continue;
            }
            if e.score > 0.0 {
                let separated = mutex.iter().any(|&(u, v)| {
                    (cluster[u] == ca && cluster[v] == cb) || (cluster[u] == cb && cluster[v] == ca)
                });
                if !separated {
                    cluster
                        .iter_mut()
                        .filter(|c| **c == cb)
                        .for_each(|c| *c = ca);
                }
            } else if e.score < 0.0 {
                mutex.push((a, b));
            }
        }
        let mut uf = UnionFind::new(n);
        for (p, &c) in cluster.iter().enumerate() {
            uf.union(p, c);
        }
        labels_from_sets(&spatial, &mut uf).0
    }

    proptest::proptest! {
        #[test]
        fn matches_naive_mutex_watershed(
            h in 1usize..6,
            w in 1usize..6,
            values in proptest::collection::vec(0.0f32..1.0, 4 * 36),
            bias in 0.05f32..0.95,
        ) {
            let offsets = vec![vec![1, 0], vec![0, 1], vec![2, 0], vec![0, -2]];
            let len = 4 * h * w;
            let affs = ArrayD::from_shape_vec(IxDyn(&[4, h, w]), values[..len].to_vec()).unwrap();
            let (fast, n) = mutex_watershed(affs.view(), &offsets, bias).unwrap();
            let slow = naive_mws(&affs, &offsets, bias);
            proptest::prop_assert_eq!(n, slow.iter().copied().max().unwrap_or(0));
            proptest::prop_assert_eq!(fast, slow);
        }
    }

    #[test]
    fn errors_name_the_mismatch() {
        let affs = ArrayD::<f32>::zeros(IxDyn(&[2, 3, 3]));
        let e = mutex_watershed(affs.view(), &[vec![1, 0]], 0.5).unwrap_err();
        assert!(matches!(
            e,
            NdimageError::ChannelCount {
                channels: 2,
                offsets: 1
            }
        ));
        let e = mutex_watershed(affs.view(), &[vec![1, 0], vec![1]], 0.5).unwrap_err();
        assert!(e.to_string().contains("offset 1"), "{e}");
        let zero_d = ArrayD::<f32>::zeros(IxDyn(&[]));
        assert!(matches!(
            affinity_connected_components(zero_d.view(), &[], 0.5),
            Err(NdimageError::NoChannelAxis)
        ));
    }
}
