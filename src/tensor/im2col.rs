//! Convolution as a matrix product: `im2col` and its adjoint `col2im`.
//!
//! For one image `x` of shape `[C, H, W]` and a `kh × kw` kernel, `im2col` builds the matrix
//! `cols` of shape `[C·kh·kw, OH·OW]`: column `(oy, ox)` holds the input values that the kernel
//! sees when it sits at output position `(oy, ox)`, in the order `(c, ki, kj)`. Row
//! `(c, ki, kj)` and column `(oy, ox)` hold
//!
//! ```text
//! cols[(c·kh + ki)·kw + kj, oy·OW + ox] = x[c, oy·sh − ph + ki·dh, ox·sw − pw + kj·dw]   (0 outside)
//! ```
//!
//! With the weights `W` of shape `[O, C·kh·kw]` (PyTorch's `[O, C, kh, kw]`, flattened), the whole
//! convolution is one GEMM: `y[O, OH·OW] = W · cols`.
//!
//! `im2col` is linear, so it has an adjoint (a transpose) `col2im`: it sends every entry of a
//! `[C·kh·kw, OH·OW]` matrix back to the input pixel it was copied from, *adding* where one pixel
//! was copied to several places (overlapping windows). That is exactly the chain rule for a copy:
//! the gradient of a value used several times is the sum of the gradients of its uses. Hence the
//! backward pass of a convolution is `dcols = Wᵀ · dy` followed by `dx = col2im(dcols)`.
//!
//! The definition this is checked against is the direct convolution, seven plain loops, in
//! [`layers::conv2d::reference`](crate::layers::conv2d::reference) (`tests/im2col.rs`), and the
//! product itself against [`gemm_reference`](super::gemm_reference).

use crate::error::{Error, Result};
use crate::tensor::{MAX_ELEMENTS, checked_numel};

/// The geometry of a 2-D convolution or pooling window over one `[C, H, W]` image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeometry {
    /// Input channels `C`.
    pub channels: usize,
    /// Input height `H`.
    pub height: usize,
    /// Input width `W`.
    pub width: usize,
    /// Kernel size `(kh, kw)`.
    pub kernel: (usize, usize),
    /// Stride `(sh, sw)`.
    pub stride: (usize, usize),
    /// Zero padding on each side `(ph, pw)`.
    pub padding: (usize, usize),
    /// Dilation `(dh, dw)`: the gap between kernel taps (1 = adjacent).
    pub dilation: (usize, usize),
    /// Output height `OH = ⌊(H + 2ph − dh·(kh−1) − 1) / sh⌋ + 1`.
    pub out_height: usize,
    /// Output width `OW = ⌊(W + 2pw − dw·(kw−1) − 1) / sw⌋ + 1`.
    pub out_width: usize,
}

impl ConvGeometry {
    /// Checks the parameters and computes the output size (floor mode, as PyTorch).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a zero kernel, stride or dilation, and [`Error::Shape`] when
    /// the (dilated) kernel is larger than the padded input, or when a size (padded input, kernel
    /// span, `C·kh·kw`, `OH·OW`, `C·H·W`, one image's unfolded `C·kh·kw·OH·OW`) would exceed
    /// [`MAX_ELEMENTS`].
    pub fn new(
        (channels, height, width): (usize, usize, usize),
        kernel: (usize, usize),
        stride: (usize, usize),
        padding: (usize, usize),
        dilation: (usize, usize),
    ) -> Result<ConvGeometry> {
        if kernel.0 == 0
            || kernel.1 == 0
            || stride.0 == 0
            || stride.1 == 0
            || dilation.0 == 0
            || dilation.1 == 0
        {
            return Err(Error::invalid(format!(
                "kernel {kernel:?}, stride {stride:?} and dilation {dilation:?} must all be at least 1"
            )));
        }
        // Every size below is computed with checked arithmetic and bounded by MAX_ELEMENTS, so
        // that no later index computation (some in isize) can wrap.
        let too_big = || {
            Error::shape(format!(
                "a {height}×{width} input with {channels} channels, kernel {kernel:?}, stride {stride:?}, \
                 padding {padding:?} and dilation {dilation:?} gives sizes beyond {MAX_ELEMENTS} elements"
            ))
        };
        let span = |d: usize, k: usize| d.checked_mul(k - 1)?.checked_add(1).filter(|&s| s <= MAX_ELEMENTS);
        let padded =
            |size: usize, p: usize| p.checked_mul(2)?.checked_add(size).filter(|&s| s <= MAX_ELEMENTS);
        let (span_h, span_w) =
            span(dilation.0, kernel.0).zip(span(dilation.1, kernel.1)).ok_or_else(too_big)?;
        let (padded_h, padded_w) =
            padded(height, padding.0).zip(padded(width, padding.1)).ok_or_else(too_big)?;
        if padded_h < span_h || padded_w < span_w {
            return Err(Error::shape(format!(
                "a {}×{} kernel (dilation {:?}, spanning {span_h}×{span_w}) does not fit in a {height}×{width} input \
                 with padding {padding:?}",
                kernel.0, kernel.1, dilation
            )));
        }
        // A stride past the padded input gives one window, as any stride past `padded − span`
        // does: held to the padded size, so that every later index computation stays small (a
        // stride of usize::MAX, cast to isize, had read as −1 and silently dropped taps).
        let stride = (stride.0.min(padded_h), stride.1.min(padded_w));
        let geometry = ConvGeometry {
            channels,
            height,
            width,
            kernel,
            stride,
            padding,
            dilation,
            out_height: (padded_h - span_h) / stride.0 + 1,
            out_width: (padded_w - span_w) / stride.1 + 1,
        };
        let sizes = [
            [channels, kernel.0, kernel.1],
            [geometry.out_height, geometry.out_width, 1],
            [channels, height, width],
        ];
        // And one image's whole `cols` matrix, `C·kh·kw × OH·OW`: each fits, their product too.
        let cols = checked_numel(&sizes[0])
            .and_then(|rows| checked_numel(&[rows, geometry.out_height, geometry.out_width]));
        if sizes.iter().any(|s| checked_numel(s).is_none()) || cols.is_none() {
            return Err(too_big());
        }
        Ok(geometry)
    }

    /// Panics unless this is the geometry [`ConvGeometry::new`] computes from its own fields: the
    /// fields are public, and the kernels index by them (an output size changed by hand had left
    /// part of `cols` unwritten; a stride set to 0 divided by zero).
    fn assert_consistent(&self, what: &str) {
        let input = (self.channels, self.height, self.width);
        let recomputed = ConvGeometry::new(input, self.kernel, self.stride, self.padding, self.dilation);
        assert!(
            recomputed.as_ref().ok() == Some(self),
            "{what}: the geometry {self:?} is not one ConvGeometry::new gives (a field changed after it?): {recomputed:?}"
        );
    }

    /// Rows of the `cols` matrix: `C·kh·kw`.
    pub fn col_rows(&self) -> usize {
        self.channels * self.kernel.0 * self.kernel.1
    }

    /// Columns of the `cols` matrix: `OH·OW`.
    pub fn col_cols(&self) -> usize {
        self.out_height * self.out_width
    }

    /// Elements of one input image: `C·H·W`.
    pub fn input_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// For kernel column `kj`: the input column offset `kj·dw − pw`, and the range of output
    /// columns `ox` whose input column `ox·sw + offset` lies inside the image.
    fn valid_ox(&self, kj: usize) -> (isize, usize, usize) {
        let sw = self.stride.1 as isize;
        let off = (kj * self.dilation.1) as isize - self.padding.1 as isize;
        let w = self.width as isize;
        let lo = if off >= 0 { 0 } else { (-off + sw - 1) / sw };
        let hi = if w - off <= 0 { 0 } else { (w - off + sw - 1) / sw };
        let hi = (hi as usize).min(self.out_width);
        let lo = (lo as usize).min(hi);
        (off, lo, hi)
    }

    /// Input row `oy·sh + ki·dh − ph`, or `None` when it falls in the padding.
    fn input_row(&self, oy: usize, ki: usize) -> Option<usize> {
        let iy = (oy * self.stride.0 + ki * self.dilation.0) as isize - self.padding.0 as isize;
        (iy >= 0 && iy < self.height as isize).then_some(iy as usize)
    }
}

/// Unfolds one image `x` (`[C, H, W]`, row-major) into `cols` (`[C·kh·kw, OH·OW]`).
/// Every element of `cols` is written (padding positions get 0), so `cols` may hold anything before.
///
/// # Panics
/// If `x` or `cols` has the wrong length for `g`, or `g` is not a geometry that
/// [`ConvGeometry::new`] gives (a public field changed after it).
pub fn im2col(x: &[f32], g: &ConvGeometry, cols: &mut [f32]) {
    assert_eq!(cols.len(), g.col_rows() * g.col_cols(), "im2col: cols has the wrong length for {g:?}"); // (bounded by `new`)
    im2col_strided(x, g, cols, g.col_cols());
}

/// [`im2col`] into a block of columns of a wider matrix: row `r` of this image's `cols` goes to
/// `cols[r·ld .. r·ld + OH·OW]`. With `ld = k·OH·OW`, `k` images side by side form one
/// `[C·kh·kw, k·OH·OW]` matrix, so that a single GEMM can process them together.
///
/// # Panics
/// If `x` has the wrong length, `ld < OH·OW`, or `cols` is too short.
pub fn im2col_strided(x: &[f32], g: &ConvGeometry, cols: &mut [f32], ld: usize) {
    assert_eq!(
        x.len(),
        g.input_len(),
        "im2col: input has {} elements, geometry {g:?} needs {}",
        x.len(),
        g.input_len()
    );
    g.assert_consistent("im2col");
    // (With no rows, nothing is read or written; the sizes are bounded by `new`, and the checked
    // arithmetic keeps a huge `ld` from wrapping.)
    let needed =
        g.col_rows().checked_sub(1).map(|r| r.checked_mul(ld).and_then(|v| v.checked_add(g.col_cols())));
    assert!(
        ld >= g.col_cols() && needed.is_none_or(|n| n.is_some_and(|n| cols.len() >= n)),
        "im2col: cols too short for {g:?}"
    );
    if g.col_rows() == 0 {
        return;
    }
    if g.stride == (1, 1) && g.padding == (0, 0) {
        return im2col_unpadded_stride1(x, g, cols, ld);
    }
    let (kh, kw) = g.kernel;
    let (ow, sw) = (g.out_width, g.stride.1);
    let mut r = 0;
    for c in 0..g.channels {
        let plane = &x[c * g.height * g.width..][..g.height * g.width];
        for ki in 0..kh {
            for kj in 0..kw {
                let row = &mut cols[r * ld..r * ld + g.col_cols()];
                r += 1;
                let (off, lo, hi) = g.valid_ox(kj);
                for (oy, dst) in row.chunks_exact_mut(ow).enumerate() {
                    let Some(iy) = g.input_row(oy, ki) else {
                        dst.fill(0.0);
                        continue;
                    };
                    let src = &plane[iy * g.width..][..g.width];
                    dst[..lo].fill(0.0);
                    dst[hi..].fill(0.0);
                    if lo == hi {
                        continue; // the whole row of taps falls in the padding
                    }
                    let first = (lo as isize * sw as isize + off) as usize; // input column of ox = lo
                    if sw == 1 {
                        dst[lo..hi].copy_from_slice(&src[first..first + (hi - lo)]);
                    } else {
                        for (d, s) in dst[lo..hi].iter_mut().zip(src[first..].iter().step_by(sw)) {
                            *d = *s;
                        }
                    }
                }
            }
        }
    }
}

/// [`im2col_strided`] for the commonest case, stride 1 and no padding: every tap lies inside the
/// image, so each row of `cols` is `OH` runs of `OW` values copied from consecutive image rows, with
/// none of the general loop's bookkeeping. (The runs are short — 11 values for the second layer of
/// the reference network — so they are copied in fixed blocks of 8, not by `memcpy` calls.)
fn im2col_unpadded_stride1(x: &[f32], g: &ConvGeometry, cols: &mut [f32], ld: usize) {
    if g.out_width == 0 || g.input_len() == 0 {
        return; // no outputs, or no input: nothing to copy
    }
    // Compiled for the widest vectors (a block of 8 is one AVX move), with each run's place
    // computed from its indices: the iterator chain over `chunks` had a division and the blocks
    // went 4 floats at a time (`perf annotate`: 13 % of a single image's forward pass).
    crate::tensor::simd::wide!(copy_runs(x, g, cols, ld))
}

/// [`im2col_unpadded_stride1`]'s loops, with the copy of a run chosen once per call: runs of
/// 8–16 values (the reference network's 11 and 26) as exactly two blocks of 8, the second one
/// overlapping the first, with no loop or length test per run. (With the general copy's tests
/// and loop in every run, a single image's `cols` for the network's second layer had taken
/// twice as long: 7.7 µs against 3.8 in a probe on the AMD EPYC with AVX-512.)
#[inline(always)]
fn copy_runs(x: &[f32], g: &ConvGeometry, cols: &mut [f32], ld: usize) {
    if (RUN_BLOCK..=2 * RUN_BLOCK).contains(&g.out_width) {
        copy_runs_by(x, g, cols, ld, copy_two_blocks);
    } else {
        copy_runs_by(x, g, cols, ld, copy_short);
    }
}

/// The loops of [`copy_runs`] with `copy` for each run (`dst.copy_from_slice(src)`).
#[inline(always)]
fn copy_runs_by(x: &[f32], g: &ConvGeometry, cols: &mut [f32], ld: usize, copy: fn(&mut [f32], &[f32])) {
    let (kh, kw) = g.kernel;
    let (dh, dw) = g.dilation;
    let (h, w, oh, ow) = (g.height, g.width, g.out_height, g.out_width);
    let mut r = 0;
    for c in 0..g.channels {
        let plane = &x[c * h * w..][..h * w];
        for ki in 0..kh {
            for kj in 0..kw {
                let row = &mut cols[r * ld..][..oh * ow];
                r += 1;
                let first = ki * dh * w + kj * dw; // input index of output (0, 0)'s tap
                // Output row oy's run starts w values after row oy − 1's.
                for (run, src) in row.chunks_exact_mut(ow).zip(plane[first..].chunks(w)) {
                    copy(run, &src[..ow]);
                }
            }
        }
    }
}

/// Values per block of [`copy_short`] and [`copy_two_blocks`]: one AVX move.
const RUN_BLOCK: usize = 8;

/// `dst.copy_from_slice(src)` for runs of `RUN_BLOCK ..= 2·RUN_BLOCK` values: the first block and
/// the last (overlapping it).
#[inline(always)]
fn copy_two_blocks(dst: &mut [f32], src: &[f32]) {
    const B: usize = RUN_BLOCK;
    let n = dst.len();
    let (first, last): (&[f32; B], &[f32; B]) =
        (src[..B].try_into().expect("a whole block"), src[n - B..n].try_into().expect("a whole block"));
    dst[..B].copy_from_slice(first);
    dst[n - B..].copy_from_slice(last);
}

/// `dst.copy_from_slice(src)` for short runs: blocks of 8 and one overlapping last block, which
/// compile to a few vector moves instead of a call.
#[inline(always)]
fn copy_short(dst: &mut [f32], src: &[f32]) {
    const B: usize = RUN_BLOCK;
    let n = dst.len();
    if n < B {
        dst.copy_from_slice(src);
        return;
    }
    let mut i = 0;
    while i + B <= n {
        dst[i..i + B].copy_from_slice(&src[i..i + B]);
        i += B;
    }
    if i < n {
        dst[n - B..].copy_from_slice(&src[n - B..n]);
    }
}

/// The adjoint of [`im2col`]: adds every entry of `cols` (`[C·kh·kw, OH·OW]`) into the input
/// pixel it came from, **accumulating** into `dx` (`[C, H, W]`). Entries that came from padding
/// are dropped. Zero `dx` first if you want `col2im` alone.
///
/// # Panics
/// If `cols` or `dx` has the wrong length for `g`, or `g` is not a geometry that
/// [`ConvGeometry::new`] gives.
pub fn col2im(cols: &[f32], g: &ConvGeometry, dx: &mut [f32]) {
    assert_eq!(cols.len(), g.col_rows() * g.col_cols(), "col2im: cols has the wrong length for {g:?}");
    col2im_strided(cols, g, dx, g.col_cols());
}

/// [`col2im`] from a block of columns of a wider matrix (row `r` at `cols[r·ld ..]`), the adjoint
/// of [`im2col_strided`].
///
/// # Panics
/// If `dx` has the wrong length, `ld < OH·OW`, or `cols` is too short.
pub fn col2im_strided(cols: &[f32], g: &ConvGeometry, dx: &mut [f32], ld: usize) {
    assert_eq!(
        dx.len(),
        g.input_len(),
        "col2im: output has {} elements, geometry {g:?} needs {}",
        dx.len(),
        g.input_len()
    );
    g.assert_consistent("col2im");
    // (With no rows, nothing is read or written; the sizes are bounded by `new`, and the checked
    // arithmetic keeps a huge `ld` from wrapping.)
    let needed =
        g.col_rows().checked_sub(1).map(|r| r.checked_mul(ld).and_then(|v| v.checked_add(g.col_cols())));
    assert!(
        ld >= g.col_cols() && needed.is_none_or(|n| n.is_some_and(|n| cols.len() >= n)),
        "col2im: cols too short for {g:?}"
    );
    if g.col_rows() == 0 {
        return;
    }
    if g.stride == (1, 1) && g.padding == (0, 0) {
        return col2im_unpadded_stride1(cols, g, dx, ld);
    }
    let (kh, kw) = g.kernel;
    let (ow, sw) = (g.out_width, g.stride.1);
    let mut r = 0;
    for c in 0..g.channels {
        let plane = &mut dx[c * g.height * g.width..][..g.height * g.width];
        for ki in 0..kh {
            for kj in 0..kw {
                let row = &cols[r * ld..r * ld + g.col_cols()];
                r += 1;
                let (off, lo, hi) = g.valid_ox(kj);
                for (oy, src) in row.chunks_exact(ow).enumerate() {
                    let Some(iy) = g.input_row(oy, ki) else {
                        continue;
                    };
                    if lo == hi {
                        continue;
                    }
                    let dst = &mut plane[iy * g.width..][..g.width];
                    let first = (lo as isize * sw as isize + off) as usize;
                    if sw == 1 {
                        let dst = &mut dst[first..first + (hi - lo)];
                        dst.iter_mut().zip(&src[lo..hi]).for_each(|(d, s)| *d += *s);
                    } else {
                        for (d, s) in dst[first..].iter_mut().step_by(sw).zip(&src[lo..hi]) {
                            *d += *s;
                        }
                    }
                }
            }
        }
    }
}

/// [`col2im_strided`] for stride 1 and no padding, the adjoint of [`im2col_unpadded_stride1`]:
/// each run of `OW` values of a row of `cols` is added into one image row.
fn col2im_unpadded_stride1(cols: &[f32], g: &ConvGeometry, dx: &mut [f32], ld: usize) {
    let (kh, kw) = g.kernel;
    let (dh, dw) = g.dilation;
    let (w, ow) = (g.width, g.out_width);
    if ow == 0 || g.input_len() == 0 {
        return; // nothing was unfolded
    }
    let mut r = 0;
    for plane in dx.chunks_exact_mut(g.height * w) {
        for ki in 0..kh {
            for kj in 0..kw {
                let row = &cols[r * ld..r * ld + g.col_cols()];
                r += 1;
                let first = ki * dh * w + kj * dw;
                for (src, dst) in row.chunks_exact(ow).zip(plane[first..].chunks_mut(w)) {
                    add_short(&mut dst[..ow], src);
                }
            }
        }
    }
}

/// `dst += src` element by element for short runs: blocks of 8 (fixed-size, vector adds) and the
/// rest one by one.
#[inline(always)]
fn add_short(dst: &mut [f32], src: &[f32]) {
    const B: usize = 8;
    let (dst_blocks, src_blocks) = (dst.chunks_exact_mut(B), src.chunks_exact(B));
    let src_tail = src_blocks.remainder();
    let mut dst_tail_start = 0;
    for (d, s) in dst_blocks.zip(src_blocks) {
        let (d, s): (&mut [f32; B], &[f32; B]) = (d.try_into().expect("8"), s.try_into().expect("8"));
        for k in 0..B {
            d[k] += s[k];
        }
        dst_tail_start += B;
    }
    for (d, s) in dst[dst_tail_start..].iter_mut().zip(src_tail) {
        *d += *s;
    }
}
