//! Seeded watershed, and watershed fragments of affinities with distance-transform seeds (the
//! fragment step of the lsd/DaCapo watershed pipeline, whose agglomeration is
//! [`RegionGraph::agglomerate`](crate::RegionGraph::agglomerate)).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use ndarray::{ArrayD, ArrayViewD, Axis, IxDyn, Zip};

use crate::affinity::{check_inputs, edge_slices, short_range_channels};
use crate::label::renumber_in_raster_order;
use crate::{Connectivity, NdimageError, connected_components, distance_transform_edt};

/// Boundary-map values below this are cell interior, where seeds are placed.
const INTERIOR_BELOW: f32 = 0.5;

/// Maximum of `values` over the box of half-width `radius` around each voxel (clipped at the
/// array border), as scipy's `maximum_filter(size = 2 radius + 1, mode = "nearest")`.
pub fn maximum_filter(values: ArrayViewD<f64>, radius: usize) -> ArrayD<f64> {
    let mut out = values.to_owned();
    if radius == 0 || out.is_empty() {
        return out;
    }
    let mut line = Vec::new();
    let mut window = VecDeque::new();
    for axis in 0..out.ndim() {
        for mut lane in out.lanes_mut(Axis(axis)) {
            line.clear();
            line.extend(lane.iter().copied());
            let n = line.len();
            window.clear();
            let mut next = 0;
            for (i, v) in lane.iter_mut().enumerate() {
                // `window` holds indices of [i - radius, i + radius] with decreasing values.
                while next < n && next <= i + radius {
                    while window
                        .back()
                        .is_some_and(|&b: &usize| line[b] <= line[next])
                    {
                        window.pop_back();
                    }
                    window.push_back(next);
                    next += 1;
                }
                while window.front().is_some_and(|&f| f + radius < i) {
                    window.pop_front();
                }
                if let Some(&f) = window.front() {
                    *v = line[f];
                }
            }
        }
    }
    out
}

/// `x` as a key whose unsigned order is the numeric order of `x` (NaN last).
fn ordered_key(x: f32) -> u32 {
    if x.is_nan() {
        return u32::MAX;
    }
    let bits = x.to_bits();
    if bits >> 31 == 1 {
        !bits
    } else {
        bits | 1 << 31
    }
}

/// Seeded watershed: floods `elevation` from the non-zero voxels of `seeds` through
/// face-connected neighbours, lowest elevation first (ties in order of arrival, so results are
/// deterministic); each voxel takes the label of the voxel that reached it first. Voxels that
/// no seed reaches stay 0.
pub fn seeded_watershed(
    elevation: ArrayViewD<f32>,
    seeds: ArrayViewD<u64>,
) -> Result<ArrayD<u64>, NdimageError> {
    if elevation.shape() != seeds.shape() {
        return Err(NdimageError::ShapeMismatch {
            what: "elevation vs seeds",
            left: elevation.shape().to_vec(),
            right: seeds.shape().to_vec(),
        });
    }
    let shape = elevation.shape().to_vec();
    let voxels = elevation.len();
    if voxels > u32::MAX as usize {
        return Err(NdimageError::TooLarge {
            voxels,
            max: u32::MAX as usize,
        });
    }
    let key: Vec<u32> = elevation.iter().map(|&e| ordered_key(e)).collect();
    let mut labels: Vec<u64> = seeds.iter().copied().collect();
    let mut flood = Flood::new(&shape);
    for (p, &seed) in seeds.iter().enumerate() {
        if seed != 0 {
            flood.reach_neighbours(p, &mut labels, &key);
        }
    }
    while let Some(Reverse((_, _, p))) = flood.queue.pop() {
        flood.reach_neighbours(p as usize, &mut labels, &key);
    }
    Ok(ArrayD::from_shape_vec(IxDyn(&shape), labels)
        .unwrap_or_else(|_| unreachable!("one label per voxel of the shape")))
}

/// The priority queue of a seeded watershed over an array of a given shape.
struct Flood {
    shape: Vec<usize>,
    strides: Vec<usize>,
    /// `(elevation key, arrival, voxel)`, lowest first.
    queue: BinaryHeap<Reverse<(u32, u64, u32)>>,
    arrivals: u64,
}

impl Flood {
    fn new(shape: &[usize]) -> Self {
        let mut strides = vec![1usize; shape.len()];
        for a in (0..shape.len().saturating_sub(1)).rev() {
            strides[a] = strides[a + 1] * shape[a + 1];
        }
        Self {
            shape: shape.to_vec(),
            strides,
            queue: BinaryHeap::new(),
            arrivals: 0,
        }
    }

    /// Gives the unlabelled face neighbours of `p` its label and queues them.
    fn reach_neighbours(&mut self, p: usize, labels: &mut [u64], key: &[u32]) {
        let label = labels[p];
        for (&n, &stride) in self.shape.iter().zip(&self.strides) {
            let coordinate = (p / stride) % n;
            let below = (coordinate > 0).then(|| p - stride);
            let above = (coordinate + 1 < n).then(|| p + stride);
            for q in [below, above].into_iter().flatten() {
                if labels[q] == 0 {
                    labels[q] = label;
                    self.queue.push(Reverse((key[q], self.arrivals, q as u32)));
                    self.arrivals += 1;
                }
            }
        }
    }
}

/// The boundary map of affinities: 1 minus the mean affinity of the short-range edges
/// incident to each voxel (1 where a voxel has none); NaN affinities are ignored.
pub fn boundary_map(
    affinities: ArrayViewD<f32>,
    offsets: &[Vec<isize>],
) -> Result<ArrayD<f32>, NdimageError> {
    let spatial = check_inputs(&affinities, offsets)?;
    let mut sum = ArrayD::<f32>::zeros(IxDyn(&spatial));
    let mut count = ArrayD::<u32>::zeros(IxDyn(&spatial));
    for k in short_range_channels(offsets) {
        let Some((here, there)) = edge_slices(&spatial, &offsets[k]) else {
            continue;
        };
        let channel = affinities.index_axis(Axis(0), k);
        let aff = channel.slice_each_axis(|ax| here[ax.axis.index()]);
        // Each edge counts for both of its voxels.
        for ends in [&here, &there] {
            Zip::from(sum.slice_each_axis_mut(|ax| ends[ax.axis.index()]))
                .and(count.slice_each_axis_mut(|ax| ends[ax.axis.index()]))
                .and(&aff)
                .for_each(|s, c, &v| {
                    if !v.is_nan() {
                        *s += v;
                        *c += 1;
                    }
                });
        }
    }
    Ok(Zip::from(&sum)
        .and(&count)
        .map_collect(|&s, &c| if c == 0 { 1.0 } else { 1.0 - s / c as f32 }))
}

/// Watershed fragments of affinities, as lsd's `watershed_from_affinities`: the interior
/// (boundary map below 0.5, see [`boundary_map`]) gets an exact distance transform; the local
/// maxima of that distance within `seed_radius` voxels are the seeds (face-or-diagonal
/// connected plateaus give one seed each); [`seeded_watershed`] then floods the interior by
/// decreasing distance and the boundary voxels by increasing boundary value, so every voxel
/// belongs to a fragment. An image without interior is one fragment.
///
/// Returns fragments numbered `1..=count` in raster order of their first voxel, and `count`.
pub fn watershed_fragments(
    affinities: ArrayViewD<f32>,
    offsets: &[Vec<isize>],
    seed_radius: usize,
) -> Result<(ArrayD<u64>, u64), NdimageError> {
    let boundary = boundary_map(affinities, offsets)?;
    let interior = boundary.mapv(|b| b < INTERIOR_BELOW);
    let distance = distance_transform_edt(interior.view(), &vec![1.0; boundary.ndim()]);
    let peaks = maximum_filter(distance.view(), seed_radius);
    let maxima = Zip::from(&distance)
        .and(&peaks)
        .map_collect(|&d, &m| d > 0.0 && d == m);
    let (seeds, count) = connected_components(maxima.view(), Connectivity::Full);
    if count == 0 {
        return Ok((ArrayD::from_elem(boundary.raw_dim(), 1), 1));
    }
    let elevation = Zip::from(&boundary)
        .and(&distance)
        .map_collect(|&b, &d| if d > 0.0 { -(d as f32) } else { b });
    let flooded = seeded_watershed(elevation.view(), seeds.view())?;
    let shape = flooded.raw_dim();
    let mut data = flooded.into_raw_vec_and_offset().0;
    let count = renumber_in_raster_order(&mut data, count as usize);
    let fragments = ArrayD::from_shape_vec(shape, data)
        .unwrap_or_else(|_| unreachable!("one label per voxel of the shape"));
    Ok((fragments, count))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn maximum_filter_matches_brute_force() {
        let v = array![[1.0, 5.0, 2.0, 0.0, 3.0], [0.0, 0.0, 7.0, 1.0, 0.0]].into_dyn();
        let m = maximum_filter(v.view(), 1);
        assert_eq!(
            m,
            array![[5.0, 7.0, 7.0, 7.0, 3.0], [5.0, 7.0, 7.0, 7.0, 3.0]].into_dyn()
        );
        assert_eq!(maximum_filter(v.view(), 0), v);
        let wide = maximum_filter(v.view(), 10);
        assert!(wide.iter().all(|&x| x == 7.0));
    }

    #[test]
    fn watershed_floods_from_seeds_by_elevation() {
        // A ridge at x = 2 separates two basins; the ridge voxel goes to the side whose flood
        // reaches it first (the lower basin, left).
        let elevation = array![[0.0f32, 0.1, 0.9, 0.3, 0.2]].into_dyn();
        let seeds = array![[1u64, 0, 0, 0, 2]].into_dyn();
        let l = seeded_watershed(elevation.view(), seeds.view()).unwrap();
        assert_eq!(l, array![[1u64, 1, 1, 2, 2]].into_dyn());
        let none = ArrayD::<u64>::zeros(elevation.raw_dim());
        let l = seeded_watershed(elevation.view(), none.view()).unwrap();
        assert!(l.iter().all(|&v| v == 0));
        let e = seeded_watershed(
            elevation.view(),
            none.view().into_shape_with_order(IxDyn(&[5, 1])).unwrap(),
        )
        .unwrap_err();
        assert!(matches!(e, NdimageError::ShapeMismatch { .. }));
    }

    #[test]
    fn ordered_keys_sort_like_floats() {
        let xs = [
            f32::NEG_INFINITY,
            -2.0,
            -0.5,
            0.0,
            1e-9,
            0.5,
            3.0,
            f32::INFINITY,
        ];
        for w in xs.windows(2) {
            assert!(ordered_key(w[0]) < ordered_key(w[1]), "{w:?}");
        }
        assert_eq!(ordered_key(f32::NAN), u32::MAX);
    }

    /// Affinities `(2, h, w)` (offsets `[1, 0]`, `[0, 1]`): 1 within an object, 0 across or
    /// to background.
    fn affs(labels: &ArrayD<u64>) -> ArrayD<f32> {
        let (h, w) = (labels.shape()[0], labels.shape()[1]);
        ArrayD::from_shape_fn(IxDyn(&[2, h, w]), |ix| {
            let (y, x) = (ix[1], ix[2]);
            let (y2, x2) = if ix[0] == 0 { (y + 1, x) } else { (y, x + 1) };
            if y2 >= h || x2 >= w {
                return 0.5;
            }
            let (p, q) = (labels[[y, x]], labels[[y2, x2]]);
            f32::from(u8::from(p == q && p != 0))
        })
    }

    #[test]
    fn fragments_cover_the_image_and_respect_boundaries() {
        // Two 6x6 squares side by side with a one-voxel membrane (label 0) between them.
        let labels = ArrayD::from_shape_fn(IxDyn(&[6, 13]), |ix| match ix[1] {
            0..6 => 1u64,
            6 => 0,
            _ => 2,
        });
        let offsets = vec![vec![1, 0], vec![0, 1]];
        let a = affs(&labels);
        let b = boundary_map(a.view(), &offsets).unwrap();
        assert!(b[[2, 2]] < 0.5 && b[[2, 6]] > 0.5, "{b:?}");
        let (f, n) = watershed_fragments(a.view(), &offsets, 2).unwrap();
        assert!(f.iter().all(|&v| v != 0));
        assert_eq!(n, f.iter().copied().max().unwrap());
        for y in 0..6 {
            for x in 0..6 {
                assert_ne!(f[[y, x]], f[[y, x + 7]], "fragments cross the membrane");
            }
        }
        // Without interior, one fragment.
        let zero = ArrayD::<f32>::zeros(IxDyn(&[2, 4, 4]));
        let (f, n) = watershed_fragments(zero.view(), &offsets, 2).unwrap();
        assert_eq!(n, 1);
        assert!(f.iter().all(|&v| v == 1));
    }
}
