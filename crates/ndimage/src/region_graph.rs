//! Region adjacency graphs of label images weighted by mean affinity, and their agglomeration.
//!
//! A [`RegionGraph`] holds the segments of a label image, their sizes and, for every pair of
//! touching segments, the mean predicted affinity over the short-range affinity edges that
//! cross from one to the other. [`RegionGraph::agglomerate`] merges segments along boundaries
//! in order of decreasing mean affinity (a priority queue; boundaries are re-scored as their
//! segments merge), as waterz's mean-affinity agglomeration does: a boundary merges when its
//! mean affinity exceeds a threshold, or when one of its segments is smaller than a minimum
//! size (fragment filling). Every step is ordered, so results are the same in every run.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap};

use ndarray::{ArrayD, ArrayViewD, Axis, IxDyn, Zip};

use crate::affinity::{check_inputs, edge_slices, short_range_channels};
use crate::fx::FxHashMap;
use crate::label::{dense_regions, renumber_in_raster_order};
use crate::{NdimageError, UnionFind};

/// The affinity edges between two segments: their sum and number (the mean is the score).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Boundary {
    sum: f64,
    count: u64,
}

impl Boundary {
    fn mean(self) -> f64 {
        self.sum / self.count as f64
    }

    fn add(self, other: Boundary) -> Boundary {
        Boundary {
            sum: self.sum + other.sum,
            count: self.count + other.count,
        }
    }
}

/// The segments of a label image with their sizes and mean-affinity boundaries.
#[derive(Debug, Clone)]
pub struct RegionGraph {
    shape: Vec<usize>,
    /// Region of each voxel in raster order: 0 = background, else `1..=regions`.
    region: Vec<u32>,
    /// Voxels per region (entry 0, the background, is unused).
    size: Vec<u64>,
    /// Boundaries of each region by neighbouring region (stored in both directions).
    adjacency: Vec<BTreeMap<u32, Boundary>>,
}

impl RegionGraph {
    /// The graph of the segments of `labels` (spatial shape; 0 = background, which takes no
    /// part) under `affinities` (`(c, spatial...)`, channel `k` linking `p` and
    /// `p + offsets[k]`).
    ///
    /// Boundaries use the affinities of the short-range offsets only (those of smallest reach,
    /// e.g. `[1, 0]` and `[0, 1]` of `[[1, 0], [0, 1], [9, 0], [0, 9]]`), so segments are
    /// neighbours only where they touch. NaN affinities are ignored.
    pub fn new(
        labels: ArrayViewD<u64>,
        affinities: ArrayViewD<f32>,
        offsets: &[Vec<isize>],
    ) -> Result<Self, NdimageError> {
        let spatial = check_inputs(&affinities, offsets)?;
        if labels.shape() != spatial.as_slice() {
            return Err(NdimageError::ShapeMismatch {
                what: "labels vs affinities (without channels)",
                left: labels.shape().to_vec(),
                right: spatial,
            });
        }
        let (region, regions) = dense_regions(labels);
        let mut size = vec![0u64; regions + 1];
        for &r in &region {
            size[r as usize] += 1;
        }
        let boundaries = boundaries(&region, &spatial, &affinities, offsets);
        let mut adjacency = vec![BTreeMap::new(); regions + 1];
        for (a, b, boundary) in boundaries {
            adjacency[a as usize].insert(b, boundary);
            adjacency[b as usize].insert(a, boundary);
        }
        Ok(Self {
            shape: spatial,
            region,
            size,
            adjacency,
        })
    }

    /// Number of segments (without the background).
    pub fn regions(&self) -> usize {
        self.size.len() - 1
    }

    /// Merges touching segments in order of decreasing mean boundary affinity, re-scoring
    /// boundaries after each merge; a boundary merges while its mean affinity is above
    /// `threshold` (`None`: never for that reason) or one of its two segments has fewer than
    /// `min_size` voxels. Ties go to the pair of lower region ids.
    ///
    /// With `threshold = None` this fills fragments: every segment smaller than `min_size`
    /// joins the neighbour it shares the most affine boundary with, until none is left that
    /// has a neighbour. Returns the labels (background stays 0, segments numbered `1..=count`
    /// in raster order of their first voxel) and `count`.
    pub fn agglomerate(&self, threshold: Option<f64>, min_size: u64) -> (ArrayD<u64>, u64) {
        let mut merger = Merger::new(self, threshold.unwrap_or(f64::INFINITY), min_size);
        merger.run();
        let root: Vec<u64> = (0..self.size.len())
            .map(|r| merger.sets.find(r) as u64)
            .collect();
        let mut data: Vec<u64> = self.region.iter().map(|&r| root[r as usize]).collect();
        let count = renumber_in_raster_order(&mut data, self.regions());
        let labels = ArrayD::from_shape_vec(IxDyn(&self.shape), data)
            .unwrap_or_else(|_| unreachable!("one label per voxel of the spatial shape"));
        (labels, count)
    }
}

/// The boundaries between different non-zero regions as `(a, b, boundary)` with `a < b`,
/// sorted by `(a, b)`; sums run in a fixed order (channel, then raster order).
fn boundaries(
    region: &[u32],
    spatial: &[usize],
    affinities: &ArrayViewD<f32>,
    offsets: &[Vec<isize>],
) -> Vec<(u32, u32, Boundary)> {
    let region = ArrayViewD::from_shape(IxDyn(spatial), region)
        .unwrap_or_else(|_| unreachable!("one region per voxel of the spatial shape"));
    let mut sums: FxHashMap<u64, Boundary> = FxHashMap::default();
    for k in short_range_channels(offsets) {
        let Some((here, there)) = edge_slices(spatial, &offsets[k]) else {
            continue;
        };
        let channel = affinities.index_axis(Axis(0), k);
        let aff = channel.slice_each_axis(|ax| here[ax.axis.index()]);
        let from = region.slice_each_axis(|ax| here[ax.axis.index()]);
        let to = region.slice_each_axis(|ax| there[ax.axis.index()]);
        Zip::from(&aff).and(&from).and(&to).for_each(|&v, &a, &b| {
            if a != b && a != 0 && b != 0 && !v.is_nan() {
                let key = (u64::from(a.min(b)) << 32) | u64::from(a.max(b));
                let entry = sums.entry(key).or_default();
                entry.sum += f64::from(v);
                entry.count += 1;
            }
        });
    }
    let mut out: Vec<(u32, u32, Boundary)> = sums
        .into_iter()
        .map(|(key, b)| ((key >> 32) as u32, key as u32, b))
        .collect();
    out.sort_unstable_by_key(|&(a, b, _)| (a, b));
    out
}

/// A queued merge: the boundary between regions `a < b` with mean affinity `mean`.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    mean: f64,
    a: u32,
    b: u32,
}

impl Ord for Candidate {
    /// Higher mean first, then lower `(a, b)`.
    fn cmp(&self, other: &Self) -> Ordering {
        self.mean
            .total_cmp(&other.mean)
            .then_with(|| (other.a, other.b).cmp(&(self.a, self.b)))
    }
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Candidate {}

/// The state of one agglomeration: merged sets, their sizes and boundaries, and the queue.
struct Merger {
    sets: UnionFind,
    size: Vec<u64>,
    adjacency: Vec<BTreeMap<u32, Boundary>>,
    queue: BinaryHeap<Candidate>,
    threshold: f64,
    min_size: u64,
}

impl Merger {
    fn new(graph: &RegionGraph, threshold: f64, min_size: u64) -> Self {
        let mut merger = Self {
            sets: UnionFind::new(graph.size.len()),
            size: graph.size.clone(),
            adjacency: graph.adjacency.clone(),
            queue: BinaryHeap::new(),
            threshold,
            min_size,
        };
        for a in 0..merger.adjacency.len() as u32 {
            let upper: Vec<(u32, Boundary)> = merger.adjacency[a as usize]
                .range(a + 1..)
                .map(|(&b, &boundary)| (b, boundary))
                .collect();
            for (b, boundary) in upper {
                merger.push(a, b, boundary);
            }
        }
        merger
    }

    /// Whether the boundary between roots `a` and `b` with mean `mean` merges.
    fn eligible(&self, a: u32, b: u32, mean: f64) -> bool {
        mean > self.threshold || self.size[a as usize].min(self.size[b as usize]) < self.min_size
    }

    /// Queues the boundary between roots `a` and `b` if it merges now. Sizes only grow, so a
    /// boundary that does not merge now merges later only if its mean changes, and then it is
    /// queued again.
    fn push(&mut self, a: u32, b: u32, boundary: Boundary) {
        let mean = boundary.mean();
        if self.eligible(a, b, mean) {
            let (a, b) = (a.min(b), a.max(b));
            self.queue.push(Candidate { mean, a, b });
        }
    }

    fn run(&mut self) {
        while let Some(c) = self.queue.pop() {
            let current = self.adjacency[c.a as usize].get(&c.b).copied();
            // Skip candidates whose regions merged or whose boundary changed since queued.
            let fresh = current.is_some_and(|b| b.mean().to_bits() == c.mean.to_bits())
                && self.sets.find(c.a as usize) == c.a as usize
                && self.sets.find(c.b as usize) == c.b as usize;
            if fresh && self.eligible(c.a, c.b, c.mean) {
                self.merge(c.a, c.b);
            }
        }
    }

    /// Merges roots `a` and `b`: the new root takes over the other's boundaries (summed where
    /// both touched the same neighbour), which are queued with their new means.
    fn merge(&mut self, a: u32, b: u32) {
        let root = self.sets.union(a as usize, b as usize) as u32;
        let other = if root == a { b } else { a };
        self.size[root as usize] += self.size[other as usize];
        let moved = std::mem::take(&mut self.adjacency[other as usize]);
        self.adjacency[root as usize].remove(&other);
        for (n, boundary) in moved {
            if n == root {
                continue;
            }
            self.adjacency[n as usize].remove(&other);
            let combined = match self.adjacency[root as usize].get(&n) {
                Some(&existing) => existing.add(boundary),
                None => boundary,
            };
            self.adjacency[root as usize].insert(n, combined);
            self.adjacency[n as usize].insert(root, combined);
            self.push(root, n, combined);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{ArrayD, array};

    /// Affinities `(2, h, w)` for offsets `[1, 0]` and `[0, 1]` from a function of the two
    /// voxels' labels.
    fn affs(labels: &ArrayD<u64>, f: impl Fn(u64, u64) -> f32) -> ArrayD<f32> {
        let (h, w) = (labels.shape()[0], labels.shape()[1]);
        ArrayD::from_shape_fn(IxDyn(&[2, h, w]), |ix| {
            let (y, x) = (ix[1], ix[2]);
            let (y2, x2) = if ix[0] == 0 { (y + 1, x) } else { (y, x + 1) };
            if y2 >= h || x2 >= w {
                return 0.0;
            }
            f(labels[[y, x]], labels[[y2, x2]])
        })
    }

    fn offsets() -> Vec<Vec<isize>> {
        vec![vec![1, 0], vec![0, 1]]
    }

    #[test]
    fn threshold_merges_by_mean_affinity() {
        // Three fragments in a row; 1-2 strongly linked, 2-3 weakly.
        let labels = array![[1u64, 1, 2, 2, 3, 3], [1, 1, 2, 2, 3, 3]].into_dyn();
        let a = affs(&labels, |p, q| match (p.min(q), p.max(q)) {
            (x, y) if x == y => 1.0,
            (1, 2) => 0.8,
            _ => 0.3,
        });
        let g = RegionGraph::new(labels.view(), a.view(), &offsets()).unwrap();
        assert_eq!(g.regions(), 3);
        let (l, n) = g.agglomerate(Some(0.5), 0);
        assert_eq!(n, 2);
        assert_eq!(
            l,
            array![[1u64, 1, 1, 1, 2, 2], [1, 1, 1, 1, 2, 2]].into_dyn()
        );
        assert_eq!(g.agglomerate(Some(0.2), 0).1, 1);
        assert_eq!(g.agglomerate(Some(0.9), 0).1, 3);
        assert_eq!(g.agglomerate(None, 0), g.agglomerate(Some(0.9), 0));
    }

    #[test]
    fn small_fragments_join_their_most_affine_neighbour() {
        // Fragment 2 (one voxel) sits between 1 and 3 and is more affine to 3.
        let labels = array![[1u64, 1, 2, 3, 3], [1, 1, 3, 3, 3]].into_dyn();
        let a = affs(&labels, |p, q| match (p.min(q), p.max(q)) {
            (x, y) if x == y => 1.0,
            (1, 2) => 0.2,
            (2, 3) => 0.4,
            _ => 0.1,
        });
        let g = RegionGraph::new(labels.view(), a.view(), &offsets()).unwrap();
        let (l, n) = g.agglomerate(None, 2);
        assert_eq!(n, 2);
        assert_eq!(l, array![[1u64, 1, 2, 2, 2], [1, 1, 2, 2, 2]].into_dyn());
        // Segments of at least `min_size` voxels never merge below the threshold: 1 has 4.
        assert_eq!(g.agglomerate(None, 4).1, 2);
        assert_eq!(g.agglomerate(None, 5).1, 1);
    }

    #[test]
    fn boundaries_are_re_scored_after_merges() {
        // 2 and 3 are small; 2-3 merge first (0.9). Then (2+3) joins 1 (0.6), not 4: its
        // boundary with 4 is re-scored to the mean over three edges (0.0, 0.5, 0.5) = 1/3.
        let labels = array![[1u64, 2, 3, 4], [1, 4, 4, 4]].into_dyn();
        let a = affs(&labels, |p, q| match (p.min(q), p.max(q)) {
            (x, y) if x == y => 1.0,
            (2, 3) => 0.9,
            (1, 2) => 0.6,
            (3, 4) => 0.5,
            _ => 0.0,
        });
        let g = RegionGraph::new(labels.view(), a.view(), &offsets()).unwrap();
        let (l, n) = g.agglomerate(None, 3);
        assert_eq!(n, 2);
        assert_eq!(l, array![[1u64, 1, 1, 2], [1, 2, 2, 2]].into_dyn());
    }

    #[test]
    fn background_and_long_range_offsets_take_no_part() {
        let labels = array![[1u64, 0, 2], [1, 0, 2]].into_dyn();
        let offsets = vec![vec![0, 1], vec![1, 0], vec![0, 2]];
        let a = ArrayD::from_elem(IxDyn(&[3, 2, 3]), 1.0f32);
        let g = RegionGraph::new(labels.view(), a.view(), &offsets).unwrap();
        // 1 and 2 are linked only by the long-range offset [0, 2], which is not a boundary.
        let (l, n) = g.agglomerate(Some(0.0), 10);
        assert_eq!(n, 2);
        assert_eq!(l, labels);
    }

    /// Naive agglomeration: boundaries recomputed from scratch after every merge.
    fn naive(
        labels: &ArrayD<u64>,
        affs: &ArrayD<f32>,
        threshold: Option<f64>,
        min_size: u64,
    ) -> ArrayD<u64> {
        let (h, w) = (labels.shape()[0], labels.shape()[1]);
        let mut cluster = labels.clone();
        loop {
            let mut bounds: BTreeMap<(u64, u64), (f64, u64)> = BTreeMap::new();
            for (k, (dy, dx)) in [(1, 0), (0, 1)].into_iter().enumerate() {
                for y in 0..h.saturating_sub(dy) {
                    for x in 0..w.saturating_sub(dx) {
                        let (a, b) = (cluster[[y, x]], cluster[[y + dy, x + dx]]);
                        if a != b && a != 0 && b != 0 {
                            let e = bounds.entry((a.min(b), a.max(b))).or_default();
                            e.0 += f64::from(affs[[k, y, x]]);
                            e.1 += 1;
                        }
                    }
                }
            }
            let size = |c: u64| cluster.iter().filter(|&&v| v == c).count() as u64;
            let best = bounds
                .iter()
                .map(|(&(a, b), &(sum, n))| (sum / n as f64, a, b))
                .filter(|&(mean, a, b)| {
                    mean > threshold.unwrap_or(f64::INFINITY) || size(a).min(size(b)) < min_size
                })
                .max_by(|x, y| x.0.total_cmp(&y.0));
            let Some((_, a, b)) = best else { break };
            cluster.mapv_inplace(|v| if v == b { a } else { v });
        }
        let mut data = cluster.into_raw_vec_and_offset().0;
        let max = data.iter().copied().max().unwrap_or(0) as usize;
        renumber_in_raster_order(&mut data, max);
        ArrayD::from_shape_vec(IxDyn(&[h, w]), data).unwrap()
    }

    proptest::proptest! {
        #[test]
        fn matches_naive_agglomeration(
            h in 1usize..6,
            w in 1usize..6,
            labels in proptest::collection::vec(0u64..5, 25),
            values in proptest::collection::vec(0.0f32..1.0, 3 * 25),
            threshold in proptest::option::of(0.0f64..1.0),
            min_size in 0u64..6,
        ) {
            let labels = ArrayD::from_shape_vec(IxDyn(&[h, w]), labels[..h * w].to_vec()).unwrap();
            let affs =
                ArrayD::from_shape_vec(IxDyn(&[3, h, w]), values[..3 * h * w].to_vec()).unwrap();
            // The long-range third channel takes no part.
            let offsets = vec![vec![1, 0], vec![0, 1], vec![2, 0]];
            let g = RegionGraph::new(labels.view(), affs.view(), &offsets).unwrap();
            let (fast, n) = g.agglomerate(threshold, min_size);
            let slow = naive(&labels, &affs, threshold, min_size);
            proptest::prop_assert_eq!(n, slow.iter().copied().max().unwrap_or(0));
            proptest::prop_assert_eq!(fast, slow);
        }
    }

    #[test]
    fn shape_mismatch_is_an_error() {
        let labels = ArrayD::<u64>::zeros(IxDyn(&[2, 3]));
        let a = ArrayD::<f32>::zeros(IxDyn(&[2, 3, 2]));
        let e = RegionGraph::new(labels.view(), a.view(), &offsets()).unwrap_err();
        assert!(e.to_string().contains("[2, 3]"), "{e}");
    }
}
