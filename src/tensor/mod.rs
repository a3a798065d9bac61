//! The tensor core: an n-dimensional array of `f32`, contiguous and row-major.
//!
//! A [`Tensor`] is nothing more than a shape and a `Vec<f32>` holding `shape.iter().product()` numbers,
//! the last axis varying fastest. Images are stored NCHW: `[batch, channels, height, width]`.
//! Reshaping only changes the shape; the data never moves.
//!
//! Heavy lifting lives in the submodules: [`gemm`] (matrix products), [`im2col`] (convolution as a
//! matrix product) and [`init`] (seeded weight initialisers).
//!
//! # Panics
//! Element-wise arithmetic between tensors (`&a + &b`, [`Tensor::zip_map`], [`Tensor::add_assign`] …)
//! requires equal shapes and panics otherwise, with both shapes in the message. There is no implicit
//! broadcasting: it hides bugs, and layers that need a broadcast say so explicitly.

pub(crate) mod dot;
pub mod gemm;
pub mod gemm_reference;
pub mod im2col;
pub mod init;
pub mod math;
pub(crate) mod microkernel;
#[cfg(feature = "ndarray")]
#[cfg_attr(docsrs, doc(cfg(feature = "ndarray")))]
pub mod ndarray_interop;
pub(crate) mod packed_gemm;
pub(crate) mod parallel;
pub(crate) mod simd;
pub(crate) mod transpose;

use crate::error::{Error, Result};
use rand::SeedableRng;
use rand::rngs::Xoshiro256PlusPlus;
use rand_distr::{Distribution, Normal, Uniform};
use rayon::prelude::*;
use std::fmt;
use std::ops::{Add, AddAssign, Index, IndexMut, Mul, MulAssign, Neg, Sub, SubAssign};

/// The seeded random number generator used everywhere in the crate.
///
/// Xoshiro256++ is small, fast and its output for a given seed is fixed forever, so a seed written in
/// a test or a paper reproduces the same numbers on every machine and every version of `rand`.
pub type Rng = Xoshiro256PlusPlus;

/// A seeded [`Rng`].
pub fn rng(seed: u64) -> Rng {
    Rng::seed_from_u64(seed)
}

/// An n-dimensional array of `f32`, contiguous and row-major.
///
/// [`Tensor::default`] is the empty tensor, shape `[0]` (a shape whose product, 0, is its length).
#[derive(Clone, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    data: Vec<f32>,
}

impl Default for Tensor {
    fn default() -> Tensor {
        Tensor { shape: vec![0], data: Vec::new() }
    }
}

/// The most elements a tensor may hold: a `Vec<f32>` cannot be longer than `isize::MAX` bytes.
pub const MAX_ELEMENTS: usize = isize::MAX as usize / std::mem::size_of::<f32>();

/// Number of elements of a shape (1 for the empty shape: a scalar), or `None` when the product
/// overflows or exceeds [`MAX_ELEMENTS`]. A shape with a zero axis holds 0 elements whatever its
/// other axes.
///
/// ```
/// use backprop::tensor::checked_numel;
/// assert_eq!(checked_numel(&[2, 3]), Some(6));
/// assert_eq!(checked_numel(&[1 << 32, 1 << 32]), None); // 2⁶⁴ would wrap to 0
/// assert_eq!(checked_numel(&[1 << 62, 0]), Some(0));
/// ```
pub fn checked_numel(shape: &[usize]) -> Option<usize> {
    if shape.contains(&0) {
        return Some(0);
    }
    shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)).filter(|&n| n <= MAX_ELEMENTS)
}

/// A byte count for messages: `"3.5 GiB"`, `"120.0 MiB"`, `"512 bytes"`.
pub(crate) fn human_bytes(bytes: usize) -> String {
    let b = bytes as f64;
    match bytes {
        0..1024 => format!("{bytes} bytes"),
        1024..1_048_576 => format!("{:.1} KiB", b / 1024.0),
        1_048_576..1_073_741_824 => format!("{:.1} MiB", b / 1_048_576.0),
        _ => format!("{:.1} GiB", b / 1_073_741_824.0),
    }
}

/// An empty vector with room for `len` values, or a panic naming `what` and the size — never the
/// process abort of a failed `Vec::with_capacity` — for buffers whose size comes from the data (a
/// layer's output for a batch). The training, evaluation and prediction paths turn the panic into
/// an `Err`.
pub(crate) fn reserve<T>(len: usize, what: &str) -> Vec<T> {
    let mut data = Vec::new();
    if let Err(e) = data.try_reserve_exact(len) {
        let bytes = len as f64 * std::mem::size_of::<T>() as f64;
        panic!("cannot allocate {what}: {len} values, {:.1} GiB ({e})", bytes / (1u64 << 30) as f64);
    }
    data
}

/// Room in `data` for `len` values in all (kept, reused buffers grow through this), or a panic
/// naming `what` and the size, as [`reserve`].
pub(crate) fn reserve_more<T>(data: &mut Vec<T>, len: usize, what: &str) {
    if let Err(e) = data.try_reserve_exact(len.saturating_sub(data.len())) {
        let bytes = len as f64 * std::mem::size_of::<T>() as f64;
        panic!("cannot allocate {what}: {len} values, {:.1} GiB ({e})", bytes / (1u64 << 30) as f64);
    }
}

/// An empty buffer with room for `numel(shape)` values, or a panic that says how much was asked
/// for — never the process abort of a failed allocation (a layer of 2⁴⁰ weights, say): tensors
/// of user-chosen sizes are made through this.
///
/// # Panics
/// If the shape is too large (see [`numel`]) or the memory cannot be reserved.
fn allocate(shape: &[usize]) -> Vec<f32> {
    let n = numel(shape);
    let mut data = Vec::new();
    if let Err(e) = data.try_reserve_exact(n) {
        panic!(
            "cannot allocate a tensor of shape {shape:?}: {n} values, {:.1} GiB ({e})",
            n as f64 * 4.0 / (1u64 << 30) as f64
        );
    }
    data
}

/// Makes room in `data` for `n` values in all (a panic giving the size if they cannot be
/// allocated, where a plain `resize` would abort the process).
fn reserve_total(data: &mut Vec<f32>, n: usize, shape: &[usize]) {
    // (The message names the shape; it is built only when the room cannot be had.)
    if data.try_reserve_exact(n.saturating_sub(data.len())).is_err() {
        reserve_more(data, n, &format!("a tensor of shape {shape:?}"));
    }
}

/// Number of elements of a shape: the product of its sizes (1 for the empty shape, a scalar).
///
/// ```
/// assert_eq!(backprop::tensor::numel(&[2, 3, 4]), 24);
/// assert_eq!(backprop::tensor::numel(&[]), 1);
/// ```
///
/// # Panics
/// If the product overflows or exceeds [`MAX_ELEMENTS`] (see [`checked_numel`]): such a tensor
/// could never be allocated, and a wrapped count would be a wrong length.
pub fn numel(shape: &[usize]) -> usize {
    checked_numel(shape)
        .unwrap_or_else(|| panic!("a tensor of shape {shape:?} would hold more than {MAX_ELEMENTS} elements"))
}

/// Formats a shape the way messages print it: `[64, 1, 28, 28]`.
pub fn shape_str(shape: &[usize]) -> String {
    format!("{shape:?}")
}

impl Tensor {
    // ---------------------------------------------------------------- constructors

    /// A tensor of zeros.
    ///
    /// # Panics
    /// If the shape holds more than [`MAX_ELEMENTS`] elements (see [`checked_numel`]).
    pub fn zeros(shape: &[usize]) -> Tensor {
        Tensor::full(shape, 0.0)
    }

    /// A tensor of ones.
    ///
    /// # Panics
    /// If the shape holds more than [`MAX_ELEMENTS`] elements (see [`checked_numel`]).
    pub fn ones(shape: &[usize]) -> Tensor {
        Tensor::full(shape, 1.0)
    }

    /// A tensor with every element equal to `value`.
    ///
    /// # Panics
    /// If the shape holds more than [`MAX_ELEMENTS`] elements (see [`checked_numel`]).
    pub fn full(shape: &[usize], value: f32) -> Tensor {
        let mut data = allocate(shape);
        data.resize(numel(shape), value);
        Tensor { shape: shape.to_vec(), data }
    }

    /// Wraps a buffer whose `numel(shape)` elements have all been initialised through its spare
    /// capacity (a layer writing its output once, without zero-filling it first).
    ///
    /// # Safety
    /// Every element of `data.spare_capacity_mut()[..numel(shape)]` must have been written.
    pub(crate) unsafe fn from_initialised(shape: &[usize], mut data: Vec<f32>) -> Tensor {
        let len = numel(shape);
        assert!(data.is_empty() && data.capacity() >= len, "from_initialised: buffer shorter than {shape:?}");
        // SAFETY: the caller guarantees the first `len` elements are initialised.
        unsafe { data.set_len(len) };
        Tensor { shape: shape.to_vec(), data }
    }

    /// A new tensor of `shape` written by `f(first_row, block)` over blocks of whole rows (rows of
    /// `width` values; `block` zeroed just before, while it is in cache): in parallel blocks for
    /// a large tensor ([`parallel::for_row_blocks`]'s split), instead of a zero-filled allocation
    /// written by one thread and then overwritten. Same bits on any number of threads when `f`
    /// treats rows on their own.
    ///
    /// # Panics
    /// If `width` does not divide the element count, or as [`Tensor::zeros`].
    pub(crate) fn from_row_blocks(
        shape: &[usize],
        width: usize,
        f: impl Fn(usize, &mut [f32]) + Sync,
    ) -> Tensor {
        let len = numel(shape);
        assert!(width > 0 && len.is_multiple_of(width), "from_row_blocks: rows of {width} in {shape:?}");
        let mut data = allocate(shape);
        let spare = &mut data.spare_capacity_mut()[..len];
        let per_task = parallel::rows_per_task(len / width, width) * width;
        let blocks = spare.par_chunks_mut(per_task).enumerate();
        blocks.with_min_len(parallel::split_if_threads(1)).for_each(|(b, block)| {
            f(b * per_task / width, Tensor::zero_uninit(block));
        });
        // SAFETY: the blocks cover all `len` elements, and zero_uninit wrote each one.
        unsafe { Tensor::from_initialised(shape, data) }
    }

    /// [`Tensor::zeros`], zero-filled in parallel blocks when large (a layer's output that a
    /// parallel loop then writes: the serial fill had left the other cores waiting).
    pub(crate) fn zeros_in_parallel(shape: &[usize]) -> Tensor {
        Tensor::from_row_blocks(shape, 1, |_, _| {})
    }

    /// Writes zeros into every element of `s` and returns it as initialised: for buffers zeroed
    /// piece by piece, where each piece is about to be used (and is in cache), instead of by one
    /// pass over the whole buffer first.
    pub(crate) fn zero_uninit(s: &mut [std::mem::MaybeUninit<f32>]) -> &mut [f32] {
        for v in s.iter_mut() {
            v.write(0.0);
        }
        // SAFETY: every element was written just above, and MaybeUninit<f32> has f32's layout.
        unsafe { &mut *(s as *mut [std::mem::MaybeUninit<f32>] as *mut [f32]) }
    }

    /// A scalar (a tensor of shape `[]`).
    pub fn scalar(value: f32) -> Tensor {
        Tensor { shape: vec![], data: vec![value] }
    }

    /// Wraps `data` (row-major) as a tensor of the given shape.
    ///
    /// # Errors
    /// [`Error::Shape`] if `data.len()` is not the product of `shape`.
    ///
    /// ```
    /// use backprop::Tensor;
    /// let t = Tensor::from_vec(&[2, 3], vec![1., 2., 3., 4., 5., 6.]).unwrap();
    /// assert_eq!(t[&[1, 0]], 4.0);
    /// assert!(Tensor::from_vec(&[2, 3], vec![1., 2.]).is_err());
    /// ```
    pub fn from_vec(shape: &[usize], data: Vec<f32>) -> Result<Tensor> {
        let n = checked_numel(shape).ok_or_else(|| {
            Error::shape(format!(
                "a tensor of shape {} would hold more than {MAX_ELEMENTS} elements",
                shape_str(shape)
            ))
        })?;
        if data.len() != n {
            return Err(Error::shape(format!(
                "cannot build a tensor of shape {} ({n} elements) from {} values",
                shape_str(shape),
                data.len()
            )));
        }
        Ok(Tensor { shape: shape.to_vec(), data })
    }

    /// A tensor whose element at multi-index `idx` is `f(idx)`.
    ///
    /// ```
    /// use backprop::Tensor;
    /// let eye = Tensor::from_fn(&[3, 3], |i| if i[0] == i[1] { 1.0 } else { 0.0 });
    /// assert_eq!(eye.sum(), 3.0);
    /// ```
    pub fn from_fn(shape: &[usize], mut f: impl FnMut(&[usize]) -> f32) -> Tensor {
        let n = numel(shape);
        let mut data = allocate(shape); // a panic naming the size, not an abort
        let mut idx = vec![0usize; shape.len()];
        for _ in 0..n {
            data.push(f(&idx));
            // Advance the multi-index like an odometer, last axis fastest.
            for ax in (0..shape.len()).rev() {
                idx[ax] += 1;
                if idx[ax] < shape[ax] {
                    break;
                }
                idx[ax] = 0;
            }
        }
        Tensor { shape: shape.to_vec(), data }
    }

    /// Samples from a normal distribution `N(mean, std²)` with a seeded generator.
    ///
    /// # Panics
    /// If `std` is negative or not finite, or `mean` is not finite.
    pub fn randn(shape: &[usize], mean: f32, std: f32, seed: u64) -> Tensor {
        let mut r = rng(seed);
        Tensor::randn_with(shape, mean, std, &mut r)
    }

    /// Like [`Tensor::randn`], drawing from a generator the caller owns.
    ///
    /// # Panics
    /// If `std` is negative or not finite, or `mean` is not finite.
    pub fn randn_with(shape: &[usize], mean: f32, std: f32, rng: &mut Rng) -> Tensor {
        // (rand_distr's Normal takes a negative std, as a mirrored one, and any mean.)
        assert!(
            std.is_finite() && std >= 0.0 && mean.is_finite(),
            "Tensor::randn: the mean must be finite and the std a finite number ≥ 0, got mean {mean}, std {std}"
        );
        let dist = Normal::new(mean, std).unwrap_or_else(|e| panic!("Tensor::randn: invalid std {std}: {e}"));
        let mut data = allocate(shape);
        data.extend((0..numel(shape)).map(|_| dist.sample(rng)));
        Tensor { shape: shape.to_vec(), data }
    }

    /// Samples uniformly from `[low, high)` with a seeded generator (never `high` itself: `rand`'s
    /// float sampler can round up to it, and such a draw is drawn again).
    ///
    /// # Panics
    /// If `low >= high`, either bound is not finite, or `high − low` overflows `f32`.
    pub fn rand_uniform(shape: &[usize], low: f32, high: f32, seed: u64) -> Tensor {
        let mut r = rng(seed);
        Tensor::rand_uniform_with(shape, low, high, &mut r)
    }

    /// Like [`Tensor::rand_uniform`], drawing from a generator the caller owns.
    ///
    /// # Panics
    /// If `low >= high`, either bound is not finite, or `high − low` overflows `f32`.
    pub fn rand_uniform_with(shape: &[usize], low: f32, high: f32, rng: &mut Rng) -> Tensor {
        let dist = Uniform::new(low, high)
            .unwrap_or_else(|e| panic!("Tensor::rand_uniform: invalid range [{low}, {high}): {e}"));
        let mut data = allocate(shape);
        // Half-open as documented (and as PyTorch's `uniform_`): a draw rounded up to `high` is
        // drawn again. (Symmetric ranges, the initialisers', never round up to it.)
        let draw = |rng: &mut Rng| loop {
            let v = dist.sample(rng);
            if v < high {
                break v;
            }
        };
        data.extend((0..numel(shape)).map(|_| draw(rng)));
        Tensor { shape: shape.to_vec(), data }
    }

    // ---------------------------------------------------------------- shape and data access

    /// The shape, outermost axis first.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of axes.
    pub fn ndim(&self) -> usize {
        self.shape.len()
    }

    /// Size of axis `axis`.
    ///
    /// # Panics
    /// If `axis >= self.ndim()`.
    pub fn dim(&self, axis: usize) -> usize {
        assert!(axis < self.ndim(), "axis {axis} out of range for a tensor of shape {:?}", self.shape);
        self.shape[axis]
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// True when the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The elements, row-major.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// The elements, row-major, mutable.
    pub fn data_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }

    /// Gives up the tensor and returns its elements.
    pub fn into_vec(self) -> Vec<f32> {
        self.data
    }

    /// The single value of a one-element tensor.
    ///
    /// # Panics
    /// If the tensor does not hold exactly one element.
    pub fn item(&self) -> f32 {
        assert!(self.len() == 1, "item() needs a one-element tensor, got shape {:?}", self.shape);
        self.data[0]
    }

    /// Row-major flat offset of a multi-index.
    ///
    /// # Panics
    /// If the index has the wrong rank or is out of bounds.
    pub fn offset(&self, idx: &[usize]) -> usize {
        assert!(
            idx.len() == self.shape.len(),
            "index {idx:?} has {} axes but the tensor has shape {:?}",
            idx.len(),
            self.shape
        );
        let mut off = 0;
        for (&i, &d) in idx.iter().zip(&self.shape) {
            assert!(i < d, "index {idx:?} out of bounds for shape {:?}", self.shape);
            off = off * d + i;
        }
        off
    }

    /// Returns the same data with another shape (free: nothing is copied).
    ///
    /// # Panics
    /// If the new shape holds a different number of elements; see [`Tensor::try_reshape`].
    pub fn reshape(self, shape: &[usize]) -> Tensor {
        let from = self.shape.clone();
        self.try_reshape(shape)
            .unwrap_or_else(|_| panic!("cannot reshape a tensor of shape {from:?} into {shape:?}"))
    }

    /// Returns the same data with another shape, or an error if the element counts differ.
    pub fn try_reshape(mut self, shape: &[usize]) -> Result<Tensor> {
        if checked_numel(shape) != Some(self.len()) {
            return Err(Error::shape(format!(
                "cannot reshape a tensor of shape {} ({} elements) into {}",
                shape_str(&self.shape),
                self.len(),
                shape_str(shape)
            )));
        }
        self.shape = shape.to_vec();
        Ok(self)
    }

    /// Changes the shape in place (free).
    ///
    /// # Panics
    /// If the new shape holds a different number of elements.
    pub fn reshape_mut(&mut self, shape: &[usize]) {
        assert!(
            checked_numel(shape) == Some(self.len()),
            "cannot reshape a tensor of shape {:?} into {shape:?}",
            self.shape
        );
        self.shape.clear();
        self.shape.extend_from_slice(shape);
    }

    /// Makes `self` an exact copy of `src`, reusing `self`'s allocation when it is large enough.
    /// This is how layers cache their inputs without allocating in the steady state.
    ///
    /// A large tensor is copied in parallel blocks (a layer's cached input of several megabytes
    /// would otherwise be a serial copy while the other cores wait).
    pub fn copy_from(&mut self, src: &Tensor) {
        self.shape.clear();
        self.shape.extend_from_slice(&src.shape);
        let n = src.data.len();
        // Resized rather than cleared and extended: every value is overwritten below, and once the
        // buffer has its size there is nothing to fill.
        self.data.resize(n, 0.0);
        if n < parallel::PASS_PARALLEL_MIN || rayon::current_num_threads() < 2 {
            parallel::copy_floats(&mut self.data, &src.data);
            return;
        }
        let blocks = self.data.par_chunks_mut(1 << 14).zip(src.data.par_chunks(1 << 14));
        blocks.for_each(|(dst, src)| parallel::copy_floats(dst, src));
    }

    /// A copy of `self`, made in parallel blocks when large ([`Tensor::copy_from`]).
    pub(crate) fn clone_in_parallel(&self) -> Tensor {
        let mut copy = Tensor::default();
        copy.copy_from(self);
        copy
    }

    /// Sets the shape to `shape` for a caller that then writes every element: the old values stay
    /// (no zeroing pass) when the element count is unchanged, as from one batch to the next; the
    /// buffer is zero-filled only when it changes size.
    pub(crate) fn resize_for_overwrite(&mut self, shape: &[usize]) {
        if self.data.len() == numel(shape) {
            self.shape.clear();
            self.shape.extend_from_slice(shape);
        } else {
            self.resize_zeroed(shape);
        }
    }

    /// Sets the shape to `shape` and every element to zero, reusing the allocation.
    ///
    /// # Panics
    /// If `shape` holds more than [`MAX_ELEMENTS`] values or they cannot be allocated (the message
    /// gives the size); the tensor is then as it was.
    pub fn resize_zeroed(&mut self, shape: &[usize]) {
        let n = numel(shape);
        reserve_total(&mut self.data, n, shape);
        self.shape.clear();
        self.shape.extend_from_slice(shape);
        self.data.clear();
        self.data.resize(n, 0.0);
    }

    /// Sets every element to `value`.
    pub fn fill(&mut self, value: f32) {
        self.data.fill(value);
    }

    /// The `i`-th slice along the first axis (for an NCHW batch: sample `i`), as a flat slice.
    ///
    /// # Panics
    /// If the tensor is a scalar or `i` is out of range.
    pub fn outer(&self, i: usize) -> &[f32] {
        let n = self.dim(0);
        assert!(i < n, "index {i} out of range for first axis of shape {:?}", self.shape);
        let step = self.len() / n;
        &self.data[i * step..(i + 1) * step]
    }

    /// Mutable version of [`Tensor::outer`].
    ///
    /// # Panics
    /// If the tensor is a scalar or `i` is out of range.
    pub fn outer_mut(&mut self, i: usize) -> &mut [f32] {
        let n = self.dim(0);
        assert!(i < n, "index {i} out of range for first axis of shape {:?}", self.shape);
        let step = self.len() / n;
        &mut self.data[i * step..(i + 1) * step]
    }

    /// Copies the rows `indices` of the first axis into a new tensor (gathering a mini-batch).
    ///
    /// # Panics
    /// If the tensor is a scalar (it has no first axis) or an index is out of range.
    pub fn select_outer(&self, indices: &[usize]) -> Tensor {
        assert!(self.ndim() > 0, "select_outer: a scalar has no first axis to select from");
        let mut shape = self.shape.clone();
        shape[0] = indices.len();
        let mut out = Tensor::zeros(&shape);
        for (k, &i) in indices.iter().enumerate() {
            out.outer_mut(k).copy_from_slice(self.outer(i));
        }
        out
    }

    /// Like [`Tensor::select_outer`], writing into `out` and reusing its allocation.
    ///
    /// # Panics
    /// If an index is out of range, or the selection cannot be allocated (`out` is then as it
    /// was).
    pub fn select_outer_into(&self, indices: &[usize], out: &mut Tensor) {
        let n = self.dim(0);
        let step = self.len() / n.max(1);
        if let Some(&i) = indices.iter().find(|&&i| i >= n) {
            panic!("index {i} out of range for first axis of shape {:?}", self.shape);
        }
        let total = numel(&[indices.len(), step]); // (no shape built: this gathers every batch)
        reserve_total(&mut out.data, total, &[indices.len(), step]);
        out.shape.clear();
        out.shape.push(indices.len());
        out.shape.extend_from_slice(&self.shape[1..]);
        out.data.clear();
        for &i in indices {
            out.data.extend_from_slice(&self.data[i * step..(i + 1) * step]);
        }
    }

    // ---------------------------------------------------------------- element-wise

    fn assert_same_shape(&self, other: &Tensor, op: &str) {
        assert!(self.shape == other.shape, "{op}: shape mismatch: {:?} vs {:?}", self.shape, other.shape);
    }

    /// Applies `f` to every element, returning a new tensor.
    pub fn map(&self, f: impl Fn(f32) -> f32) -> Tensor {
        Tensor { shape: self.shape.clone(), data: self.data.iter().map(|&x| f(x)).collect() }
    }

    /// Applies `f` to every element in place.
    pub fn map_inplace(&mut self, f: impl Fn(f32) -> f32) {
        self.data.iter_mut().for_each(|x| *x = f(*x));
    }

    /// Combines two tensors of the same shape element by element.
    ///
    /// # Panics
    /// If the shapes differ (the message gives both).
    pub fn zip_map(&self, other: &Tensor, f: impl Fn(f32, f32) -> f32) -> Tensor {
        self.assert_same_shape(other, "zip_map");
        let data = self.data.iter().zip(&other.data).map(|(&a, &b)| f(a, b)).collect();
        Tensor { shape: self.shape.clone(), data }
    }

    /// `self[i] = f(self[i], other[i])` for every element.
    ///
    /// # Panics
    /// If the shapes differ (the message gives both).
    pub fn zip_map_inplace(&mut self, other: &Tensor, f: impl Fn(f32, f32) -> f32) {
        self.assert_same_shape(other, "zip_map_inplace");
        self.data.iter_mut().zip(&other.data).for_each(|(a, &b)| *a = f(*a, b));
    }

    /// `self += alpha · x` (the BLAS "axpy").
    ///
    /// # Panics
    /// If the shapes differ (the message gives both).
    pub fn axpy(&mut self, alpha: f32, x: &Tensor) {
        self.assert_same_shape(x, "axpy");
        parallel::zip_apply(&mut self.data, &x.data, |a, b| a + alpha * b); // element by element
    }

    /// Multiplies every element by `s` in place.
    pub fn scale(&mut self, s: f32) {
        self.data.iter_mut().for_each(|x| *x *= s);
    }

    /// Adds `s` to every element in place.
    pub fn add_scalar(&mut self, s: f32) {
        self.data.iter_mut().for_each(|x| *x += s);
    }

    /// Element-wise product, in place.
    ///
    /// # Panics
    /// If the shapes differ (the message gives both).
    pub fn mul_assign_elem(&mut self, other: &Tensor) {
        self.assert_same_shape(other, "mul");
        self.data.iter_mut().zip(&other.data).for_each(|(a, &b)| *a *= b);
    }

    /// Element-wise product, as a new tensor.
    ///
    /// # Panics
    /// If the shapes differ (the message gives both).
    pub fn mul_elem(&self, other: &Tensor) -> Tensor {
        self.assert_same_shape(other, "mul");
        self.zip_map(other, |a, b| a * b)
    }

    /// Element-wise quotient, as a new tensor.
    ///
    /// # Panics
    /// If the shapes differ (the message gives both).
    pub fn div_elem(&self, other: &Tensor) -> Tensor {
        self.assert_same_shape(other, "div");
        self.zip_map(other, |a, b| a / b)
    }

    /// Dot product of the flattened tensors, accumulated in `f64`.
    ///
    /// # Panics
    /// If the shapes differ (the message gives both).
    pub fn dot(&self, other: &Tensor) -> f32 {
        self.assert_same_shape(other, "dot");
        self.data.iter().zip(&other.data).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>() as f32
    }

    /// True when every element is finite (no NaN, no ±∞).
    pub fn all_finite(&self) -> bool {
        first_non_finite(&self.data).is_none() // (vectorised: `iter().all` ran one value at a time)
    }

    /// The largest absolute difference between two tensors of the same shape: NaN if either holds
    /// a NaN (a comparison must not pass on an output that is not a number), 0 where both hold the
    /// same infinity.
    ///
    /// ```
    /// use backprop::Tensor;
    /// let a = Tensor::from_vec(&[3], vec![1.0, f32::INFINITY, 3.0]).unwrap();
    /// let b = Tensor::from_vec(&[3], vec![1.5, f32::INFINITY, 3.0]).unwrap();
    /// assert_eq!(a.max_abs_diff(&b), 0.5);
    /// let nan = Tensor::from_vec(&[3], vec![f32::NAN, f32::INFINITY, 3.0]).unwrap();
    /// assert!(nan.max_abs_diff(&b).is_nan());
    /// ```
    ///
    /// # Panics
    /// If the shapes differ (the message gives both).
    pub fn max_abs_diff(&self, other: &Tensor) -> f32 {
        self.assert_same_shape(other, "max_abs_diff");
        let diffs =
            self.data.iter().zip(&other.data).map(|(&a, &b)| if a == b { 0.0 } else { (a - b).abs() });
        diffs.fold(0.0, |m: f32, d| if m.is_nan() || d.is_nan() { f32::NAN } else { m.max(d) })
    }

    // ---------------------------------------------------------------- reductions

    /// Sum of all elements (accumulated in `f64`, so it does not depend on the tensor's size).
    pub fn sum(&self) -> f32 {
        self.data.iter().map(|&x| x as f64).sum::<f64>() as f32
    }

    /// Mean of all elements (NaN for an empty tensor).
    pub fn mean(&self) -> f32 {
        (self.data.iter().map(|&x| x as f64).sum::<f64>() / self.len() as f64) as f32
    }

    /// Largest element (−∞ for an empty tensor; NaN if any element is NaN).
    pub fn max(&self) -> f32 {
        self.data.iter().fold(f32::NEG_INFINITY, |m, &x| if x > m || x.is_nan() { x } else { m })
    }

    /// Smallest element (+∞ for an empty tensor; NaN if any element is NaN).
    pub fn min(&self) -> f32 {
        self.data.iter().fold(f32::INFINITY, |m, &x| if x < m || x.is_nan() { x } else { m })
    }

    /// Euclidean norm of all elements.
    pub fn norm(&self) -> f32 {
        self.data.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt() as f32
    }

    /// Splits the shape around `axis` into (outer, len, inner) so that element
    /// `[o, k, i]` sits at `(o * len + k) * inner + i`.
    fn axis_split(&self, axis: usize, op: &str) -> (usize, usize, usize) {
        assert!(axis < self.ndim(), "{op}: axis {axis} out of range for a tensor of shape {:?}", self.shape);
        let outer = numel(&self.shape[..axis]);
        let inner = numel(&self.shape[axis + 1..]);
        (outer, self.shape[axis], inner)
    }

    fn reduce_axis(&self, axis: usize, op: &str, init: f32, f: impl Fn(f32, f32) -> f32) -> Tensor {
        let (outer, len, inner) = self.axis_split(axis, op);
        let mut shape = self.shape.clone();
        shape.remove(axis);
        let mut out = Tensor::full(&shape, init);
        if self.data.is_empty() {
            return out; // nothing to fold in (and no loop over a huge outer axis of empty rows)
        }
        for o in 0..outer {
            for k in 0..len {
                let src = &self.data[(o * len + k) * inner..][..inner];
                let dst = &mut out.data[o * inner..][..inner];
                dst.iter_mut().zip(src).for_each(|(d, &s)| *d = f(*d, s));
            }
        }
        out
    }

    /// Sums along `axis`, removing it from the shape.
    ///
    /// # Panics
    /// If `axis` is out of range.
    ///
    /// ```
    /// use backprop::Tensor;
    /// let t = Tensor::from_vec(&[2, 3], vec![1., 2., 3., 4., 5., 6.]).unwrap();
    /// assert_eq!(t.sum_axis(0).data(), &[5., 7., 9.]);
    /// assert_eq!(t.sum_axis(1).data(), &[6., 15.]);
    /// ```
    pub fn sum_axis(&self, axis: usize) -> Tensor {
        // Accumulated in f64, as `sum` is (term by term in f32, 2²⁴ + 1 + 1 + … stayed at 2²⁴).
        let (outer, len, inner) = self.axis_split(axis, "sum_axis");
        let mut shape = self.shape.clone();
        shape.remove(axis);
        let mut out = Tensor::zeros(&shape);
        if self.data.is_empty() {
            return out;
        }
        let mut acc = vec![0.0f64; inner];
        for o in 0..outer {
            acc.fill(0.0);
            for k in 0..len {
                let src = &self.data[(o * len + k) * inner..][..inner];
                acc.iter_mut().zip(src).for_each(|(a, &s)| *a += s as f64);
            }
            out.data[o * inner..][..inner].iter_mut().zip(&acc).for_each(|(d, &a)| *d = a as f32);
        }
        out
    }

    /// Mean along `axis`, removing it from the shape (NaN along an empty axis: 0/0).
    ///
    /// # Panics
    /// If `axis` is out of range.
    pub fn mean_axis(&self, axis: usize) -> Tensor {
        let n = self.dim(axis) as f64;
        let mut s = self.sum_axis(axis);
        // (The division of the f32 sum in f64: 1/n rounded to f32 first would add an error.)
        s.data.iter_mut().for_each(|v| *v = (*v as f64 / n) as f32);
        s
    }

    /// Maximum along `axis`, removing it from the shape: NaN where the axis holds a NaN (as
    /// [`Tensor::max`] and PyTorch's `amax`), −∞ along an empty axis.
    ///
    /// # Panics
    /// If `axis` is out of range.
    pub fn max_axis(&self, axis: usize) -> Tensor {
        let max = |a: f32, b: f32| if a.is_nan() || b.is_nan() { f32::NAN } else { a.max(b) };
        self.reduce_axis(axis, "max_axis", f32::NEG_INFINITY, max)
    }

    /// Index of the maximum along `axis` (the first one on ties), for every position of the other
    /// axes, in row-major order of the remaining shape. For logits `[N, classes]` and `axis = 1`
    /// this is the predicted class of each sample. A NaN counts as the maximum (the first NaN's
    /// index, as PyTorch's `argmax`), wherever it stands.
    ///
    /// # Panics
    /// If `axis` is out of range, or empty while other positions exist (no index to give; as
    /// PyTorch's `argmax`).
    ///
    /// ```
    /// use backprop::Tensor;
    /// let logits = Tensor::from_vec(&[2, 3], vec![0.1, 2.0, -1.0, 5.0, 5.0, 1.0]).unwrap();
    /// assert_eq!(logits.argmax_axis(1), vec![1, 0]);
    /// ```
    pub fn argmax_axis(&self, axis: usize) -> Vec<usize> {
        let (outer, len, inner) = self.axis_split(axis, "argmax_axis");
        if len == 0 && outer != 0 && inner != 0 {
            panic!(
                "argmax_axis: axis {axis} of a tensor of shape {:?} is empty: there is no maximum to point at",
                self.shape
            );
        }
        let mut out = Vec::with_capacity(outer * inner);
        if outer * inner == 0 {
            return out; // no position to point from (and no loop over a huge axis of none)
        }
        for o in 0..outer {
            for i in 0..inner {
                let mut best = 0;
                let mut best_v = f32::NEG_INFINITY;
                for k in 0..len {
                    let v = self.data[(o * len + k) * inner + i];
                    if v.is_nan() {
                        best = k; // NaN is the maximum: the first one wins
                        break;
                    }
                    if v > best_v {
                        best_v = v;
                        best = k;
                    }
                }
                out.push(best);
            }
        }
        out
    }

    /// Matrix product of two 2-D tensors: `[m, k] · [k, n] → [m, n]`. See [`gemm::gemm`] for the
    /// general form with transposes and accumulation.
    ///
    /// # Panics
    /// If either tensor is not 2-D or the inner dimensions differ.
    pub fn matmul(&self, other: &Tensor) -> Tensor {
        use gemm::Transpose::No;
        assert!(
            self.ndim() == 2 && other.ndim() == 2 && self.shape[1] == other.shape[0],
            "matmul: cannot multiply {:?} by {:?}",
            self.shape,
            other.shape
        );
        let mut c = Tensor::zeros(&[self.shape[0], other.shape[1]]);
        gemm::gemm(1.0, self, No, other, No, 0.0, &mut c);
        c
    }

    /// The transpose of a 2-D tensor (a copy; the GEMM never needs one, this is for users).
    ///
    /// # Panics
    /// If the tensor is not 2-D.
    pub fn t(&self) -> Tensor {
        assert!(self.ndim() == 2, "t(): need a 2-D tensor, got shape {:?}", self.shape);
        let (r, c) = (self.shape[0], self.shape[1]);
        Tensor::from_fn(&[c, r], |i| self.data[i[1] * c + i[0]])
    }
}

// -------------------------------------------------------------------- indexing

impl Index<&[usize]> for Tensor {
    type Output = f32;
    fn index(&self, idx: &[usize]) -> &f32 {
        &self.data[self.offset(idx)]
    }
}

impl<const N: usize> Index<&[usize; N]> for Tensor {
    type Output = f32;
    fn index(&self, idx: &[usize; N]) -> &f32 {
        &self.data[self.offset(idx)]
    }
}

impl IndexMut<&[usize]> for Tensor {
    fn index_mut(&mut self, idx: &[usize]) -> &mut f32 {
        let o = self.offset(idx);
        &mut self.data[o]
    }
}

impl<const N: usize> IndexMut<&[usize; N]> for Tensor {
    fn index_mut(&mut self, idx: &[usize; N]) -> &mut f32 {
        let o = self.offset(idx);
        &mut self.data[o]
    }
}

// -------------------------------------------------------------------- operators

macro_rules! binary_op {
    ($trait:ident, $method:ident, $assign_trait:ident, $assign_method:ident, $op:tt, $name:literal) => {
        impl $trait<&Tensor> for &Tensor {
            type Output = Tensor;
            /// Element-wise; panics with both shapes if they differ.
            fn $method(self, rhs: &Tensor) -> Tensor {
                self.assert_same_shape(rhs, $name);
                self.zip_map(rhs, |a, b| a $op b)
            }
        }
        impl $assign_trait<&Tensor> for Tensor {
            /// Element-wise, in place; panics with both shapes if they differ.
            fn $assign_method(&mut self, rhs: &Tensor) {
                self.assert_same_shape(rhs, $name);
                self.data.iter_mut().zip(&rhs.data).for_each(|(a, &b)| *a = *a $op b);
            }
        }
    };
}

binary_op!(Add, add, AddAssign, add_assign, +, "add");
binary_op!(Sub, sub, SubAssign, sub_assign, -, "sub");

impl Mul<f32> for &Tensor {
    type Output = Tensor;
    fn mul(self, s: f32) -> Tensor {
        self.map(|x| x * s)
    }
}

impl MulAssign<f32> for Tensor {
    fn mul_assign(&mut self, s: f32) {
        self.scale(s);
    }
}

impl Neg for &Tensor {
    type Output = Tensor;
    fn neg(self) -> Tensor {
        self.map(|x| -x)
    }
}

// -------------------------------------------------------------------- display

/// Like [`Display`](fmt::Display), with every value exact (the shortest decimal that reads back
/// as the same `f32`) and, up to [`DEBUG_ELISION_ABOVE`] values, every value shown: `assert_eq!`
/// of two tensors shows where they differ. Larger tensors elide the middle of long axes, as
/// PyTorch's `repr` does above 1,000 values; `{:#?}` shows every value of any tensor.
///
/// ```
/// use backprop::Tensor;
/// let t = Tensor::from_vec(&[10], (0..10).map(|i| i as f32).collect()).unwrap();
/// assert_eq!(format!("{t:?}"), "Tensor[10] [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]");
/// assert_eq!(t.to_string(), "Tensor[10] [0.0000, 1.0000, 2.0000, …, 7.0000, 8.0000, 9.0000]");
/// ```
impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_tensor(self, f, ValueStyle::Exact, !f.alternate() && self.len() > DEBUG_ELISION_ABOVE)
    }
}

/// The most values [`Tensor`]'s `Debug` shows without eliding (PyTorch's `repr` threshold).
pub const DEBUG_ELISION_ABOVE: usize = 1000;

/// Tensors of more axes than this print their values as one flat list (after the shape), not
/// nested by axis: the nesting recurses once per axis.
const MAX_NESTED_AXES: usize = 64;

/// Shows the shape and the values, eliding the middle of long axes:
/// `Tensor[2, 3] [[1.0000, 2.0000, 3.0000], [4.0000, 5.0000, 6.0000]]`. Values print with 4
/// decimals (or the precision asked for, `{:.8}`), in scientific notation when that would hide
/// them (below 10⁻³ or from 10⁶ on in magnitude: `1.0000e-5`).
///
/// ```
/// use backprop::Tensor;
/// let t = Tensor::from_vec(&[3], vec![1.0, 1e-5, 2.5e7]).unwrap();
/// assert_eq!(t.to_string(), "Tensor[3] [1.0000, 1.0000e-5, 2.5000e7]");
/// assert_eq!(format!("{t:.1}"), "Tensor[3] [1.0, 1.0e-5, 2.5e7]");
/// assert_eq!(format!("{t:?}"), "Tensor[3] [1.0, 1e-5, 25000000.0]");
/// ```
impl fmt::Display for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let decimals = f.precision().unwrap_or(4);
        write_tensor(self, f, ValueStyle::Decimals(decimals), true)
    }
}

/// How [`write_tensor`] prints each value.
#[derive(Clone, Copy)]
enum ValueStyle {
    /// Fixed decimals, scientific where they would hide the value.
    Decimals(usize),
    /// `f32`'s own `Debug`: the shortest decimal that reads back as the same value.
    Exact,
}

/// `Tensor[shape] [values]`, nested by axis, the middle of long axes elided when `elide`.
fn write_tensor(t: &Tensor, f: &mut fmt::Formatter<'_>, style: ValueStyle, elide: bool) -> fmt::Result {
    const EDGE: usize = 3; // values shown at each end of a long axis
    let value = |f: &mut fmt::Formatter<'_>, v: f32| match style {
        ValueStyle::Exact => write!(f, "{v:?}"),
        ValueStyle::Decimals(d) if v != 0.0 && v.is_finite() && !(1e-3..1e6).contains(&v.abs()) => {
            write!(f, "{v:.d$e}")
        }
        ValueStyle::Decimals(d) => write!(f, "{v:.d$}"),
    };
    fn rec(
        t: &Tensor,
        f: &mut fmt::Formatter<'_>,
        (axis, off): (usize, usize),
        elide: bool,
        value: &dyn Fn(&mut fmt::Formatter<'_>, f32) -> fmt::Result,
    ) -> fmt::Result {
        if axis == t.ndim() {
            return value(f, t.data[off]);
        }
        let n = t.shape[axis];
        let stride = numel(&t.shape[axis + 1..]);
        let long = elide && n > 2 * EDGE + 1;
        write!(f, "[")?;
        for i in 0..n {
            if long && i == EDGE {
                write!(f, "…, ")?;
            }
            if long && i >= EDGE && i < n - EDGE {
                continue;
            }
            rec(t, f, (axis + 1, off + i * stride), elide, value)?;
            if i + 1 < n {
                write!(f, ", ")?;
            }
        }
        write!(f, "]")
    }
    write!(f, "Tensor{:?} ", t.shape)?;
    if t.is_empty() {
        write!(f, "[]")
    } else if t.ndim() > MAX_NESTED_AXES {
        // One flat list of the values in order (a very high rank would recurse too deep).
        let flat = Tensor { shape: vec![t.len()], data: t.data.clone() };
        rec(&flat, f, (0, 0), elide, &value)
    } else {
        rec(t, f, (0, 0), elide, &value)
    }
}

pub(crate) use parallel::{add_rows, add_to_rows};

/// The index of the first NaN or infinity in `xs`. Blocks of 256 values are checked by a reduction
/// the compiler vectorises (a NaN or infinity is a value whose exponent bits are all set), and
/// only a block that holds one is searched: the training loop checks every gradient and weight
/// after every batch, and an element-by-element search with an early exit ran at one value per
/// cycle. Compiled for the widest vectors the CPU has (`wide!`): `fit` and `train_step` scan every
/// gradient before the optimizer step and every weight after it, which the baseline's 4-wide
/// loop made 7 % of a small MLP's training step; and, from [`parallel::PASS_PARALLEL_MIN`] values
/// on, in blocks of 16 Ki values over the threads (one thread scanning while the other waited
/// made it 11 % of that step on two threads).
pub(crate) fn first_non_finite(xs: &[f32]) -> Option<usize> {
    const PER_TASK: usize = 1 << 14;
    if xs.len() < parallel::PASS_PARALLEL_MIN || rayon::current_num_threads() < 2 {
        return simd::wide!(first_non_finite_blocks(xs));
    }
    xs.par_chunks(PER_TASK)
        .enumerate()
        .find_map_first(|(c, chunk)| simd::wide!(first_non_finite_blocks(chunk)).map(|i| c * PER_TASK + i))
}

/// The bits of `|v|`, which are at least [`INFINITY_BITS`] exactly when `v` is ±∞ or a NaN. A
/// vectorised loop notes a value that is not finite by a running integer maximum of these: two
/// operations per vector (a mask and a maximum), where a comparison per value turned into a flag
/// and or-ed took five (the scan of the MLP's 203,530 gradients 17 µs, now 10, on the AMD EPYC
/// Zen 4 of docs/benchmarks.md; Adam's update, whose divisions leave the other vector units
/// room, 1.3 % of the MLP's step).
#[inline(always)]
pub(crate) fn magnitude_bits(v: f32) -> u32 {
    v.to_bits() & 0x7fff_ffff
}

/// `+∞`'s bits: see [`magnitude_bits`].
pub(crate) const INFINITY_BITS: u32 = 0x7f80_0000;

/// True if `a` and `b` hold the same values bit for bit (so `-0.0` is not `0.0`, and a NaN equals
/// a NaN with the same payload): blocks of 64 values compared by an or of their bits' differences
/// the compiler vectorises (`wide!`), stopping at the first block that differs.
pub(crate) fn same_bits(a: &[f32], b: &[f32]) -> bool {
    #[inline(always)]
    fn blocks(a: &[f32], b: &[f32]) -> bool {
        a.chunks(64)
            .zip(b.chunks(64))
            .all(|(x, y)| x.iter().zip(y).fold(0u32, |d, (p, q)| d | (p.to_bits() ^ q.to_bits())) == 0)
    }
    a.len() == b.len() && simd::wide!(blocks(a, b))
}

#[inline(always)]
fn first_non_finite_blocks(xs: &[f32]) -> Option<usize> {
    const BLOCK: usize = 256;
    for (b, block) in xs.chunks(BLOCK).enumerate() {
        let largest = block.iter().fold(0u32, |m, &v| m.max(magnitude_bits(v)));
        if largest >= INFINITY_BITS {
            return block.iter().position(|v| !v.is_finite()).map(|i| b * BLOCK + i);
        }
    }
    None
}

#[cfg(test)]
mod non_finite_tests {
    use super::first_non_finite;

    /// The blocked search finds what the plain search finds: the first NaN, +∞ or −∞ anywhere,
    /// across block edges and in a short last block; none in finite data (subnormals, ±MAX, −0).
    #[test]
    fn blocked_search_is_the_plain_search() {
        let plain = |xs: &[f32]| xs.iter().position(|v| !v.is_finite());
        let finite = [0.0, -0.0, 1.0, -1e-40, f32::MAX, f32::MIN, f32::MIN_POSITIVE, -f32::MIN_POSITIVE];
        // NaNs of either sign and payload, quiet and signalling.
        let nans = [f32::NAN, -f32::NAN, f32::from_bits(0x7f80_0001), f32::from_bits(0xffff_ffff)];
        for len in [0, 1, 63, 64, 65, 130, 255, 256, 257, 600] {
            let base: Vec<f32> = (0..len).map(|i| finite[i % finite.len()]).collect();
            assert_eq!(first_non_finite(&base), None, "len {len}");
            for bad in nans.into_iter().chain([f32::INFINITY, f32::NEG_INFINITY]) {
                for at in
                    [0, 1, 63, 64, 199, 254, 255, 256, 257, 511, 512, 599].into_iter().filter(|&a| a < len)
                {
                    let mut xs = base.clone();
                    xs[at] = bad;
                    if at + 3 < len {
                        xs[at + 3] = f32::NAN; // a later one is not the answer
                    }
                    assert_eq!(first_non_finite(&xs), plain(&xs), "len {len}, {bad} at {at}");
                    assert_eq!(first_non_finite(&xs), Some(at));
                }
            }
        }
    }

    /// `same_bits` is bitwise equality: equal slices across block edges, any one value changed
    /// (first, last, at a block's edge), `-0.0` against `0.0`, NaN against the same NaN and
    /// against another payload, and slices of different lengths.
    #[test]
    fn same_bits_is_bitwise_equality() {
        use super::same_bits;
        let plain = |a: &[f32], b: &[f32]| {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
        };
        for len in [0, 1, 63, 64, 65, 200] {
            let a: Vec<f32> = (0..len).map(|i| i as f32 * 0.25 - 7.0).collect();
            assert!(same_bits(&a, &a.clone()), "len {len}");
            for at in [0, 1, 62, 63, 64, 65, 199].into_iter().filter(|&i| i < len) {
                for v in [a[at] + 1.0, -a[at], f32::NAN, f32::INFINITY] {
                    let mut b = a.clone();
                    b[at] = v;
                    assert_eq!(same_bits(&a, &b), plain(&a, &b), "len {len}, {v} at {at}");
                    assert!(!same_bits(&a, &b) || v.to_bits() == a[at].to_bits());
                }
            }
            if len > 0 {
                assert!(!same_bits(&a, &a[..len - 1]), "len {len}: a shorter slice");
            }
        }
        assert!(!same_bits(&[0.0], &[-0.0]));
        assert!(same_bits(&[f32::NAN], &[f32::NAN]));
        assert!(!same_bits(&[f32::NAN], &[f32::from_bits(0x7fc0_0001)]));
    }

    /// Past 64 Ki values the search runs in blocks over the threads, and still returns the first.
    #[test]
    fn the_parallel_search_returns_the_first() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        let mut xs = vec![1.0f32; 200_000];
        pool.install(|| assert_eq!(first_non_finite(&xs), None));
        xs[180_000] = f32::NAN;
        xs[150_001] = f32::INFINITY;
        pool.install(|| assert_eq!(first_non_finite(&xs), Some(150_001)));
        xs[16_384] = f32::NEG_INFINITY; // the first value of the second block
        pool.install(|| assert_eq!(first_non_finite(&xs), Some(16_384)));
    }
}
