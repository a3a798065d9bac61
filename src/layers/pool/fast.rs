//! The fast max-pooling kernels behind [`MaxPool2d`](super::MaxPool2d). They compute what
//! [`reference::max_pool2d_forward`](super::reference::max_pool2d_forward) defines with a plain
//! loop — the window's maximum, the first one on ties, the last NaN if there is one — and
//! `tests/reference_kernels.rs` asserts that values and arg-max positions are identical on random
//! and tie-heavy inputs (repeated values, ±0, NaN) for every window shape. Read the reference first.
//!
//! What the code adds, and what it bought (`docs/benchmarks.md`, 2-core test machine, pool forward
//! on 64×32×26×26 measured by `examples/profile_layers.rs`): **5.4 → 1.5 ms**, and a third of that
//! again for the 2×2 kernel —
//!
//! - **branch-free arg-max**: on real data "is this the new maximum?" is a coin toss that a branch
//!   predictor loses half the time; selects instead of branches;
//! - **window sizes known at compile time** for 2×2 and 3×3, so the inner loops unroll;
//! - **a row-pair kernel for 2×2 / stride 2**, the most common pooling, written as selects over two
//!   input rows; the compiler did not vectorise it (the windows' interleaved loads), so the same
//!   selects run eight (or, on rows of 4–7 windows, four) windows at a time with AVX2 intrinsics
//!   where the CPU has them, with an overlapping last block instead of a scalar tail. Same
//!   comparisons in the same order, so the same bits: first pooling of the reference network at
//!   batch 256, 4.6 → 2.9 ms (round 2).

use super::{Window, span};
use crate::tensor::Tensor;
use crate::tensor::parallel::min_len;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Below this many input elements a pooling pass stays on the calling thread (waking other
/// threads costs more than the pass).
const PARALLEL_MIN: usize = 1 << 16;

/// [`MaxPool2d`](super::MaxPool2d)'s forward pass over `x [N, C, H, W]`: every plane pooled by
/// [`max_pool_plane`] (the definition is `reference::max_pool`), `argmax` filled with each
/// window's first maximum. Planes run in parallel, several per task (one plane is too little
/// work); the output is written once, each task's part zeroed in cache just before it is pooled
/// into (no pass over the whole output first).
pub(crate) fn max_pool_forward(
    x: &Tensor,
    win: Window,
    out_shape: &[usize],
    argmax: &mut Vec<u32>,
) -> Tensor {
    let (h, w) = (x.dim(2), x.dim(3));
    let (oh, ow) = (out_shape[2], out_shape[3]);
    let y_len_total: usize = out_shape.iter().product();
    let mut y_data: Vec<f32> = crate::tensor::reserve(y_len_total, "a max pooling's output");
    crate::tensor::reserve_more(argmax, y_len_total, "a max pooling's arg-max indices");
    argmax.resize(y_len_total, 0);
    let planes_per_task = (4096 / (h * w).max(1)).max(1);
    type Task<'a> = ((&'a mut [MaybeUninit<f32>], &'a mut [u32]), &'a [f32]); // (y, arg-max, x)
    let task = |((y_t, arg_t), x_t): Task| {
        let y_t = Tensor::zero_uninit(y_t); // zeroed here, in cache (then every value is pooled in)
        let planes = y_t.chunks_exact_mut(oh * ow).zip(arg_t.chunks_exact_mut(oh * ow));
        for ((y_p, arg_p), x_p) in planes.zip(x_t.chunks_exact(h * w)) {
            max_pool_plane(x_p, (h, w), win, (oh, ow), y_p, arg_p);
        }
    };
    let (y_len, x_len) = (planes_per_task * oh * ow, planes_per_task * h * w);
    let y_spare = &mut y_data.spare_capacity_mut()[..y_len_total];
    let tasks =
        y_spare.par_chunks_mut(y_len).zip(argmax.par_chunks_mut(y_len)).zip(x.data().par_chunks(x_len));
    let n_tasks = tasks.len();
    tasks.with_min_len(min_len(n_tasks, x.len() >= PARALLEL_MIN)).for_each(task);
    // SAFETY: the chunks cover all of y (N·C planes of the output, one per input plane), and
    // each task zeroed its whole chunk first.
    unsafe { Tensor::from_initialised(out_shape, y_data) }
}

/// [`MaxPool2d`](super::MaxPool2d)'s backward pass: `dL/dx [in_shape]` with each window's
/// gradient `g` added at its arg-max (`reference::max_pool_backward`). Each plane of `dx` is
/// zeroed just before its gradients are routed, while it is in cache.
pub(crate) fn max_pool_backward(g: &Tensor, argmax: &[u32], in_shape: &[usize]) -> Tensor {
    let plane_in = in_shape[2] * in_shape[3];
    let plane_out = g.dim(2) * g.dim(3);
    let len: usize = in_shape.iter().product();
    assert_eq!(len / plane_in.max(1), g.len() / plane_out.max(1), "max pool backward: planes of g vs x");
    // One arg-max per value of g: a shorter arg-max (a forward pass cut short before it was
    // resized) would leave planes of dx unwritten below.
    assert_eq!(
        argmax.len(),
        g.len(),
        "max pool backward: arg-max of another pass (its forward pass did not finish?)"
    );
    let mut dx: Vec<f32> = crate::tensor::reserve(len, "a max pooling's input gradient");
    type Plane<'a> = ((&'a mut [MaybeUninit<f32>], &'a [f32]), &'a [u32]); // (dx, g, arg-max)
    let route = |((dx_p, g_p), arg_p): Plane| {
        let dx_p = Tensor::zero_uninit(dx_p);
        for (&gv, &i) in g_p.iter().zip(arg_p) {
            dx_p[i as usize] += gv; // route g to the window's arg-max
        }
    };
    let spare = &mut dx.spare_capacity_mut()[..len];
    let planes =
        spare.par_chunks_mut(plane_in).zip(g.data().par_chunks(plane_out)).zip(argmax.par_chunks(plane_out));
    let n_planes = planes.len();
    planes.with_min_len(min_len(n_planes, len >= PARALLEL_MIN)).for_each(route);
    // SAFETY: the planes cover dx (len = planes × plane_in, zipped one to one with g's planes and
    // the arg-max's, whose lengths are asserted above), and `route` wrote every element of each.
    unsafe { Tensor::from_initialised(in_shape, dx) }
}

/// Max pooling of one `h × w` plane: for every window, its maximum into `y` and the flat index of
/// that maximum (the first one on ties; the last NaN if there is one, as in PyTorch) into `arg`.
/// Dispatches the common unpadded 2×2 and 3×3 windows to a version with the window size known at
/// compile time (3× faster: the two-element inner loops unroll), everything else to the general one.
pub(crate) fn max_pool_plane(
    x: &[f32],
    hw: (usize, usize),
    win: Window,
    ohw: (usize, usize),
    y: &mut [f32],
    arg: &mut [u32],
) {
    match (win.kernel, win.padding) {
        ((2, 2), (0, 0)) if win.stride == (2, 2) => max_pool_plane_2x2(x, hw, ohw, y, arg),
        ((2, 2), (0, 0)) => max_pool_plane_fixed::<2, 2>(x, hw, win.stride, ohw, y, arg),
        ((3, 3), (0, 0)) => max_pool_plane_fixed::<3, 3>(x, hw, win.stride, ohw, y, arg),
        _ => max_pool_plane_general(x, hw, win, ohw, y, arg),
    }
}

/// Folds one value into a running (maximum, index, saw-NaN) without branches. Strict `>` keeps the
/// first maximum on ties. Branch-free on purpose: on real data "is this the new maximum?" is a coin
/// toss that a branch predictor loses half the time (measured: 5× slower).
#[inline(always)]
fn fold_max(v: f32, i: usize, best: &mut f32, best_i: &mut usize, nan: &mut bool) {
    let wins = v > *best;
    *best_i ^= (*best_i ^ i) & usize::from(wins).wrapping_neg(); // mask of all ones or all zeros
    *best = if wins { v } else { *best }; // a select, not `max`: keeps −0.0 ahead of a later +0.0
    *nan |= v.is_nan();
}

/// 2 × 2 max pooling, stride 2, of one image's product stored by pixel (`image`: `[OH·OW, O]`,
/// rows `ow` pixels wide) into `pooled` (`[PH·PW, O]`): for each window and channel, the first
/// maximum of the four values in reading order, or the last NaN among them — the pooling's
/// definition ([`reference`](super::reference)), one channel per lane. For the execution plan's
/// convolution + pooling in `Mode::Predict` (no arg-max), inside its `wide!`. With `RELU`, each
/// maximum then goes through the ReLU as [`Relu`](crate::layers::Relu) computes it (`v ≤ 0 → +0`,
/// a NaN stays): `relu(maxpool(y))`, which is `maxpool(relu(y))` bit for bit (see the execution
/// plan's docs), while the value is in a register.
#[allow(clippy::needless_range_loop)] // an index loop over channels: the compiler vectorises it
#[inline(always)]
pub(crate) fn max_pool_2x2_by_pixel<const RELU: bool>(
    image: &[f32],
    ow: usize,
    (ph, pw): (usize, usize),
    o: usize,
    pooled: &mut [f32],
) {
    for py in 0..ph {
        for px in 0..pw {
            let top = (2 * py * ow + 2 * px) * o; // the window's first pixel
            let (r00, r01) = (&image[top..][..o], &image[top + o..][..o]);
            let (r10, r11) = (&image[top + ow * o..][..o], &image[top + (ow + 1) * o..][..o]);
            let out = &mut pooled[(py * pw + px) * o..][..o];
            for c in 0..o {
                let mut best = r00[c];
                for v in [r01[c], r10[c], r11[c]] {
                    if v > best || v.is_nan() {
                        best = v; // strictly greater wins (the first maximum stays), a NaN always
                    }
                }
                out[c] = if RELU && best <= 0.0 { 0.0 } else { best }; // y = max(x, 0), NaN stays NaN
            }
        }
    }
}

/// The last NaN of a window given as a list of flat indices in reading order: a NaN wins over any
/// number and over an earlier NaN, as in PyTorch's CPU kernel. (Only runs once training has
/// diverged.)
fn last_nan(x: &[f32], window: impl Iterator<Item = usize>) -> Option<usize> {
    window.filter(|&i| x[i].is_nan()).last()
}

/// The most common pooling of all, 2×2 windows with stride 2, written over row pairs as selects
/// the compiler can vectorise: a window `[a b; c d]` gives `max(max(a, b), max(c, d))` with strict
/// comparisons, so ties keep the first position in reading order. A row holding a NaN is redone by
/// the general code, which lets the NaN win.
fn max_pool_plane_2x2(
    x: &[f32],
    (h, w): (usize, usize),
    (oh, ow): (usize, usize),
    y: &mut [f32],
    arg: &mut [u32],
) {
    let wide = crate::tensor::simd::wide_vectors();
    for (oy, (y_row, arg_row)) in y.chunks_exact_mut(ow).zip(arg.chunks_exact_mut(ow)).enumerate().take(oh) {
        let top = 2 * oy * w;
        let (upper, lower) = (&x[top..top + 2 * ow], &x[top + w..top + w + 2 * ow]);
        // Eight windows at a time with AVX2 where the CPU has it, the rest one by one.
        #[cfg(target_arch = "x86_64")]
        let (done, mut nan) = if wide {
            // SAFETY: the CPU has AVX2 (checked above).
            unsafe { avx2::row_pair_2x2(upper, lower, top, w, y_row, arg_row) }
        } else {
            (0, false)
        };
        #[cfg(not(target_arch = "x86_64"))]
        let (done, mut nan) = {
            let _ = wide; // no vector kernel on this architecture
            (0, false)
        };
        let windows = upper.chunks_exact(2).zip(lower.chunks_exact(2)).skip(done);
        let outputs = y_row.iter_mut().zip(arg_row.iter_mut()).skip(done);
        for (ox, ((u, l), (y_out, arg_out))) in windows.zip(outputs).enumerate() {
            let (a, b, c, d) = (u[0], u[1], l[0], l[1]);
            let (top_max, top_i) = if b > a { (b, 1) } else { (a, 0) };
            let (low_max, low_i) = if d > c { (d, w + 1) } else { (c, w) };
            let (m, i) = if low_max > top_max { (low_max, low_i) } else { (top_max, top_i) };
            *y_out = m;
            *arg_out = (top + 2 * (done + ox) + i) as u32;
            nan |= a.is_nan() | b.is_nan() | c.is_nan() | d.is_nan();
        }
        if nan {
            let row = Window { kernel: (2, 2), stride: (2, 2), padding: (0, 0) };
            max_pool_rows_general(x, (h, w), row, (oy, oy + 1), ow, y_row, arg_row);
        }
    }
}

/// The row-pair kernel's selects on eight windows at once: the same comparisons in the same
/// order as the scalar loop of [`max_pool_plane_2x2`] (strict, ordered `>`: false on NaN), so
/// the results are identical bit for bit (`tests/reference_kernels.rs` checks them against the
/// reference on rows long enough to use it).
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// Pools one output row of at least 8 windows (shorter rows: none, returns 0): `upper` and
    /// `lower` are the two input rows (`2·ow` values each), `top` the flat index of `upper[0]` in
    /// the plane, `w` the plane's width. Returns the windows done and whether any of their inputs
    /// was NaN.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn row_pair_2x2(
        upper: &[f32],
        lower: &[f32],
        top: usize,
        w: usize,
        y: &mut [f32],
        arg: &mut [u32],
    ) -> (usize, bool) {
        let windows = windows_in(upper, lower, y, arg);
        if windows < 8 {
            // SAFETY: the CPU has AVX2, hence SSE4.1 (the caller's promise).
            return unsafe { row_pair_2x2_narrow(upper, lower, top, w, y, arg) };
        }
        let starts = block_starts(windows, 8);
        // One unsafe block for the whole body: the loads and stores need it, and so do the other
        // intrinsics on Rust 1.86 (the minimum), where they are still unsafe functions.
        // SAFETY: the block at ox reads upper/lower[2·ox .. 2·ox + 16] and writes y/arg[ox .. ox + 8]
        // with ox + 8 ≤ windows, inside the slices (`windows` is bounded by all four lengths); the
        // CPU has AVX2 (the caller's promise).
        unsafe {
            // Plane indices fit in u32 (the caller stores them as such); i32 lanes add them alike.
            let (w0, w1) = (_mm256_set1_epi32(w as i32), _mm256_set1_epi32(w as i32 + 1));
            let (zero, one) = (_mm256_setzero_si256(), _mm256_set1_epi32(1));
            let steps = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
            let mut nan = _mm256_setzero_ps();
            for ox in starts {
                let (a, b) = split_pairs(upper.as_ptr().add(2 * ox));
                let (c, d) = split_pairs(lower.as_ptr().add(2 * ox));
                // (top_max, top_i) = if b > a { (b, 1) } else { (a, 0) }
                let upper_wins = _mm256_cmp_ps::<_CMP_GT_OQ>(b, a);
                let top_max = _mm256_blendv_ps(a, b, upper_wins);
                let top_i = select(zero, one, upper_wins);
                // (low_max, low_i) = if d > c { (d, w + 1) } else { (c, w) }
                let lower_wins = _mm256_cmp_ps::<_CMP_GT_OQ>(d, c);
                let low_max = _mm256_blendv_ps(c, d, lower_wins);
                let low_i = select(w0, w1, lower_wins);
                // (m, i) = if low_max > top_max { (low_max, low_i) } else { (top_max, top_i) }
                let low_wins = _mm256_cmp_ps::<_CMP_GT_OQ>(low_max, top_max);
                let m = _mm256_blendv_ps(top_max, low_max, low_wins);
                let i = select(top_i, low_i, low_wins);
                // arg = top + 2·ox + i
                let base = _mm256_set1_epi32((top + 2 * ox) as i32);
                let index = _mm256_add_epi32(_mm256_add_epi32(base, steps), i);
                _mm256_storeu_ps(y.as_mut_ptr().add(ox), m);
                _mm256_storeu_si256(arg.as_mut_ptr().add(ox).cast(), index);
                let unordered =
                    _mm256_or_ps(_mm256_cmp_ps::<_CMP_UNORD_Q>(a, b), _mm256_cmp_ps::<_CMP_UNORD_Q>(c, d));
                nan = _mm256_or_ps(nan, unordered);
            }
            (windows, _mm256_movemask_ps(nan) != 0)
        }
    }

    /// [`row_pair_2x2`] for rows of 4 to 7 windows (the second pooling of a small network: 5 per
    /// row), four at a time in 128-bit registers, with the same overlapping last block. Shorter rows:
    /// none, returns 0.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    unsafe fn row_pair_2x2_narrow(
        upper: &[f32],
        lower: &[f32],
        top: usize,
        w: usize,
        y: &mut [f32],
        arg: &mut [u32],
    ) -> (usize, bool) {
        let windows = windows_in(upper, lower, y, arg);
        if windows < 4 {
            return (0, false);
        }
        let starts = block_starts(windows, 4);
        // SAFETY: the block at ox reads upper/lower[2·ox .. 2·ox + 8] and writes y/arg[ox .. ox + 4]
        // with ox + 4 ≤ windows, inside the slices; the CPU has AVX2 (the caller's promise).
        unsafe {
            let (w0, w1) = (_mm_set1_epi32(w as i32), _mm_set1_epi32(w as i32 + 1));
            let (zero, one) = (_mm_setzero_si128(), _mm_set1_epi32(1));
            let steps = _mm_setr_epi32(0, 2, 4, 6);
            let select = |a: __m128i, b: __m128i, mask: __m128| {
                _mm_castps_si128(_mm_blendv_ps(_mm_castsi128_ps(a), _mm_castsi128_ps(b), mask))
            };
            let split = |p: *const f32| {
                let (lo, hi) = (_mm_loadu_ps(p), _mm_loadu_ps(p.add(4)));
                (_mm_shuffle_ps::<0b10_00_10_00>(lo, hi), _mm_shuffle_ps::<0b11_01_11_01>(lo, hi))
            };
            let mut nan = _mm_setzero_ps();
            for ox in starts {
                let ((a, b), (c, d)) = (split(upper.as_ptr().add(2 * ox)), split(lower.as_ptr().add(2 * ox)));
                // The selects of the 8-wide kernel, on four windows.
                let upper_wins = _mm_cmp_ps::<_CMP_GT_OQ>(b, a);
                let (top_max, top_i) = (_mm_blendv_ps(a, b, upper_wins), select(zero, one, upper_wins));
                let lower_wins = _mm_cmp_ps::<_CMP_GT_OQ>(d, c);
                let (low_max, low_i) = (_mm_blendv_ps(c, d, lower_wins), select(w0, w1, lower_wins));
                let low_wins = _mm_cmp_ps::<_CMP_GT_OQ>(low_max, top_max);
                let m = _mm_blendv_ps(top_max, low_max, low_wins);
                let i = select(top_i, low_i, low_wins);
                let index = _mm_add_epi32(_mm_add_epi32(_mm_set1_epi32((top + 2 * ox) as i32), steps), i);
                _mm_storeu_ps(y.as_mut_ptr().add(ox), m);
                _mm_storeu_si128(arg.as_mut_ptr().add(ox).cast(), index);
                nan = _mm_or_ps(
                    nan,
                    _mm_or_ps(_mm_cmp_ps::<_CMP_UNORD_Q>(a, b), _mm_cmp_ps::<_CMP_UNORD_Q>(c, d)),
                );
            }
            (windows, _mm_movemask_ps(nan) != 0)
        }
    }

    /// Windows of a row both input rows and both outputs have room for.
    fn windows_in(upper: &[f32], lower: &[f32], y: &[f32], arg: &[u32]) -> usize {
        (upper.len() / 2).min(lower.len() / 2).min(y.len()).min(arg.len())
    }

    /// First windows of the blocks of `width` that cover a row of `windows ≥ width`: 0, width,
    /// 2·width, … and, when `width` does not divide the row, one more block ending at its last
    /// window. That block overlaps the one before and writes the same values again, so no window
    /// is left to the scalar loop.
    fn block_starts(windows: usize, width: usize) -> impl Iterator<Item = usize> {
        let last = (!windows.is_multiple_of(width)).then_some(windows - width);
        (0..windows / width).map(move |j| width * j).chain(last)
    }

    /// Sixteen values `x0 x1 … x15` as the even ones and the odd ones, in order:
    /// `(x0 x2 … x14, x1 x3 … x15)` — each window's left and right column.
    ///
    /// # Safety
    /// `p` must point at 16 readable values; the CPU must support AVX2.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn split_pairs(p: *const f32) -> (__m256, __m256) {
        // SAFETY: 16 values from p (the caller's promise); the other intrinsics are unsafe on Rust 1.86.
        unsafe {
            let (lo, hi) = (_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8)));
            // Per 128-bit lane: evens (x0 x2 | x8 x10), odds likewise; then the 64-bit pairs reordered.
            let even = _mm256_shuffle_ps::<0b10_00_10_00>(lo, hi);
            let odd = _mm256_shuffle_ps::<0b11_01_11_01>(lo, hi);
            let even = _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(even)));
            let odd = _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(odd)));
            (even, odd)
        }
    }

    /// Lane by lane, `if mask { b } else { a }` for integer lanes.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn select(a: __m256i, b: __m256i, mask: __m256) -> __m256i {
        // SAFETY: register operations only; unsafe functions on Rust 1.86, safe in this context since.
        #[allow(unused_unsafe)]
        unsafe {
            _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(a), _mm256_castsi256_ps(b), mask))
        }
    }
}

fn max_pool_plane_fixed<const KH: usize, const KW: usize>(
    x: &[f32],
    (_h, w): (usize, usize),
    (sh, sw): (usize, usize),
    (oh, ow): (usize, usize),
    y: &mut [f32],
    arg: &mut [u32],
) {
    for oy in 0..oh {
        for ox in 0..ow {
            let top_left = oy * sh * w + ox * sw;
            let (mut best, mut best_i, mut nan) = (x[top_left], top_left, false);
            for ky in 0..KH {
                for kx in 0..KW {
                    let i = top_left + ky * w + kx;
                    fold_max(x[i], i, &mut best, &mut best_i, &mut nan);
                }
            }
            if nan {
                best_i =
                    last_nan(x, (0..KH * KW).map(|k| top_left + (k / KW) * w + k % KW)).unwrap_or(best_i);
                best = x[best_i];
            }
            y[oy * ow + ox] = best;
            arg[oy * ow + ox] = best_i as u32;
        }
    }
}

fn max_pool_plane_general(
    x: &[f32],
    hw: (usize, usize),
    win: Window,
    (oh, ow): (usize, usize),
    y: &mut [f32],
    arg: &mut [u32],
) {
    max_pool_rows_general(x, hw, win, (0, oh), ow, y, arg);
}

/// Output rows `oy0..oy1` of the general max pooling; `y` and `arg` hold exactly those rows.
fn max_pool_rows_general(
    x: &[f32],
    (h, w): (usize, usize),
    win: Window,
    (oy0, oy1): (usize, usize),
    ow: usize,
    y: &mut [f32],
    arg: &mut [u32],
) {
    let (kh, kw) = win.kernel;
    let (sh, sw) = win.stride;
    for oy in oy0..oy1 {
        let rows = span(oy, sh, win.padding.0, kh, h);
        for ox in 0..ow {
            let cols = span(ox, sw, win.padding.1, kw, w);
            let mut best_i = rows.start * w + cols.start;
            let (mut best, mut nan) = (x[best_i], false);
            for iy in rows.clone() {
                for ix in cols.clone() {
                    fold_max(x[iy * w + ix], iy * w + ix, &mut best, &mut best_i, &mut nan);
                }
            }
            if nan {
                let window = rows.clone().flat_map(|iy| cols.clone().map(move |ix| iy * w + ix));
                best_i = last_nan(x, window).unwrap_or(best_i);
                best = x[best_i];
            }
            y[(oy - oy0) * ow + ox] = best;
            arg[(oy - oy0) * ow + ox] = best_i as u32;
        }
    }
}

#[cfg(test)]
mod tests {
    /// An arg-max of another length than the gradient (a forward pass cut short before it was
    /// resized) is refused: the planes past it would have been handed back unwritten.
    #[test]
    #[should_panic(expected = "arg-max of another pass")]
    fn backward_refuses_an_arg_max_of_another_pass() {
        let g = crate::Tensor::ones(&[1, 2, 1, 1]);
        super::max_pool_backward(&g, &[0], &[1, 2, 2, 2]);
    }
}
