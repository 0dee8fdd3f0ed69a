//! The crate's only `unsafe` code: strided matrix views handed to the `gemm` crate, and
//! per-tile mutable views of one output buffer that parallel tasks fill at the same time.
//!
//! Everything here checks its bounds when a view is made, so the safe functions of the other
//! kernel modules cannot reach outside a buffer whatever shapes they pass.
#![allow(unsafe_code)]

use std::marker::PhantomData;
use std::ops::Range;

/// Whether a `rows × cols` matrix at `offset` with strides `rs`, `cs` lies within `len`.
fn fits(len: usize, offset: usize, rows: usize, cols: usize, rs: usize, cs: usize) -> bool {
    if rows == 0 || cols == 0 {
        return offset <= len;
    }
    let last = (rows - 1)
        .checked_mul(rs)
        .and_then(|r| (cols - 1).checked_mul(cs).and_then(|c| r.checked_add(c)))
        .and_then(|rc| rc.checked_add(offset));
    last.is_some_and(|last| last < len)
}

/// A read-only strided matrix inside a slice.
#[derive(Clone, Copy)]
pub(crate) struct MatRef<'a> {
    data: &'a [f32],
    offset: usize,
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a> MatRef<'a> {
    /// Element `(r, c)` is `data[offset + r * rs + c * cs]`.
    ///
    /// # Panics
    /// If the last element lies outside `data` (an internal shape bug, never user input).
    pub(crate) fn new(
        data: &'a [f32],
        offset: usize,
        [rows, cols]: [usize; 2],
        [rs, cs]: [usize; 2],
    ) -> Self {
        assert!(
            fits(data.len(), offset, rows, cols, rs, cs),
            "matrix {rows}x{cols} at {offset} (strides {rs}, {cs}) outside a buffer of {}",
            data.len()
        );
        Self {
            data,
            offset,
            rows,
            cols,
            rs,
            cs,
        }
    }

    /// A row-major `rows × cols` matrix at the start of `data`.
    pub(crate) fn dense(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self::new(data, 0, [rows, cols], [cols, 1])
    }

    /// The transposed view (no copy).
    pub(crate) fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }
}

/// A mutable strided matrix: into a slice, or into one tile of a [`Tiles`] buffer.
pub(crate) struct MatMut<'a> {
    ptr: *mut f32,
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
    _borrow: PhantomData<&'a mut [f32]>,
}

impl<'a> MatMut<'a> {
    /// Element `(r, c)` is `data[r * rs + c * cs]`.
    ///
    /// # Panics
    /// If the last element lies outside `data`.
    pub(crate) fn new(data: &'a mut [f32], [rows, cols]: [usize; 2], [rs, cs]: [usize; 2]) -> Self {
        assert!(
            fits(data.len(), 0, rows, cols, rs, cs),
            "matrix {rows}x{cols} (strides {rs}, {cs}) outside a buffer of {}",
            data.len()
        );
        Self {
            ptr: data.as_mut_ptr(),
            rows,
            cols,
            rs,
            cs,
            _borrow: PhantomData,
        }
    }

    /// A row-major `rows × cols` matrix at the start of `data`.
    ///
    /// # Panics
    /// If `data` is shorter than `rows * cols`.
    pub(crate) fn dense(data: &'a mut [f32], rows: usize, cols: usize) -> Self {
        assert!(
            rows.checked_mul(cols).is_some_and(|n| n <= data.len()),
            "matrix {rows}x{cols} outside a buffer of {}",
            data.len()
        );
        Self {
            ptr: data.as_mut_ptr(),
            rows,
            cols,
            rs: cols,
            cs: 1,
            _borrow: PhantomData,
        }
    }
}

/// `dst = lhs × rhs`, or `dst += lhs × rhs` with `accumulate`, on this thread.
///
/// # Panics
/// If the inner dimensions or the destination's shape do not match.
pub(crate) fn matmul(dst: MatMut<'_>, lhs: MatRef<'_>, rhs: MatRef<'_>, accumulate: bool) {
    matmul_with(dst, lhs, rhs, accumulate, gemm::Parallelism::None);
}

/// [`matmul`] spread over rayon's pool by `gemm` itself (it splits rows and columns, never
/// the inner dimension, so the result does not depend on the thread count).
pub(crate) fn matmul_parallel(dst: MatMut<'_>, lhs: MatRef<'_>, rhs: MatRef<'_>, accumulate: bool) {
    let threads = rayon::current_num_threads();
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    matmul_with(dst, lhs, rhs, accumulate, parallelism);
}

fn matmul_with(
    dst: MatMut<'_>,
    lhs: MatRef<'_>,
    rhs: MatRef<'_>,
    accumulate: bool,
    parallelism: gemm::Parallelism,
) {
    assert!(
        lhs.rows == dst.rows && rhs.cols == dst.cols && lhs.cols == rhs.rows,
        "matmul shapes: {}x{} = {}x{} * {}x{}",
        dst.rows,
        dst.cols,
        lhs.rows,
        lhs.cols,
        rhs.rows,
        rhs.cols
    );
    if dst.rows == 0 || dst.cols == 0 {
        return;
    }
    if lhs.cols == 0 {
        // gemm skips the product of an empty inner dimension; make "=" mean zeros.
        if !accumulate {
            for r in 0..dst.rows {
                for c in 0..dst.cols {
                    // SAFETY: (r, c) lies inside the destination matrix, which its constructor
                    // checked against the buffer it borrows.
                    unsafe { *dst.ptr.add(r * dst.rs + c * dst.cs) = 0.0 };
                }
            }
        }
        return;
    }
    // SAFETY: the three views were bounds-checked when made, so every element gemm touches
    // lies in its buffer; `dst` borrows its buffer mutably (directly or through a `Tile`),
    // so it cannot overlap `lhs` or `rhs`, which are shared borrows. Strides fit in isize
    // because each view fits in a slice.
    unsafe {
        gemm::gemm(
            dst.rows,
            dst.cols,
            lhs.cols,
            dst.ptr,
            dst.cs as isize,
            dst.rs as isize,
            accumulate,
            lhs.data.as_ptr().add(lhs.offset),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr().add(rhs.offset),
            rhs.cs as isize,
            rhs.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// Makes glibc keep freed memory for reuse instead of handing it back to the OS.
///
/// A training step frees its activations and allocates the same sizes again in the next
/// step; by default glibc maps blocks of more than 128 KiB afresh and unmaps them on free,
/// so every step pays a page fault per 4 KiB of activations (about a fifth of a 2D step).
/// With this, blocks up to 32 MiB come from the heap and the heap is not trimmed.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters (under the allocator's own lock); the
    // values are within the ranges glibc documents, and a rejected value changes nothing.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

/// One tile of a `(images, channels, pixels)` buffer: a pixel range of one image, in every
/// channel. Tiles made by [`tiles`] never overlap, so each can be filled on its own thread.
pub(crate) struct Tile<'a> {
    ptr: *mut f32,
    channels: usize,
    channel_stride: usize,
    len: usize,
    _borrow: PhantomData<&'a mut [f32]>,
}

// SAFETY: a Tile is the unique mutable access to its elements (tiles() hands out disjoint
// ones from one exclusive borrow), like a `&mut [f32]`, which is Send.
unsafe impl Send for Tile<'_> {}

impl Tile<'_> {
    /// The tile as a `channels × pixels` matrix.
    pub(crate) fn mat(&mut self) -> MatMut<'_> {
        MatMut {
            ptr: self.ptr,
            rows: self.channels,
            cols: self.len,
            rs: self.channel_stride,
            cs: 1,
            _borrow: PhantomData,
        }
    }

    /// The tile's pixels of channel `c`.
    ///
    /// # Panics
    /// If `c` is not a channel of the buffer.
    pub(crate) fn channel(&mut self, c: usize) -> &mut [f32] {
        assert!(c < self.channels, "channel {c} of {}", self.channels);
        // SAFETY: tiles() checked that every channel's pixel range of this tile lies inside
        // the buffer and that no other tile covers it; `&mut self` makes the slice unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(c * self.channel_stride), self.len) }
    }
}

/// Splits `buf`, laid out `(images, channels, pixels)`, into one [`Tile`] per `(image,
/// pixel range)` of `ranges`.
///
/// # Panics
/// If `buf` does not hold `images * channels * pixels` values, or the ranges are not sorted,
/// disjoint and within `0..pixels` per image.
pub(crate) fn tiles<'a>(
    buf: &'a mut [f32],
    [images, channels, pixels]: [usize; 3],
    ranges: &[(usize, Range<usize>)],
) -> Vec<Tile<'a>> {
    assert_eq!(buf.len(), images * channels * pixels, "tile buffer size");
    let mut previous: Option<(usize, usize)> = None;
    for (image, range) in ranges {
        assert!(*image < images && range.start <= range.end && range.end <= pixels);
        if let Some((pi, pend)) = previous {
            assert!(
                (*image, range.start) >= (pi, pend),
                "tiles must be sorted and disjoint"
            );
        }
        previous = Some((*image, range.end));
    }
    let base = buf.as_mut_ptr();
    ranges
        .iter()
        .map(|(image, range)| Tile {
            // SAFETY: image < images and range.start <= pixels, so the offset is within (or
            // one past the end of) the buffer, checked above.
            ptr: unsafe { base.add(image * channels * pixels + range.start) },
            channels,
            channel_stride: pixels,
            len: range.len(),
            _borrow: PhantomData,
        })
        .collect()
}
