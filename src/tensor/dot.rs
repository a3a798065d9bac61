//! Dot products and sums in a fixed order, fast: 32 partial sums (lane `l` takes every element
//! `i ≡ l mod 32`; 8 for [`shifted_dots`], which runs up to 8 products at once), added pairwise
//! at the end. A plain `iter().sum()` is one serial chain of
//! additions (4 cycles each, whatever the vector width); 32 independent lanes keep the vector
//! units busy. The order is fixed by the definition, not by the CPU or the number of threads: on a
//! CPU with AVX2 the lanes are four 8-wide registers (`std::arch`, a multiply then an add — no
//! fused multiply-add), elsewhere the same operations in plain Rust; `wide_vectors_change_nothing`
//! checks that both give the same bits.
//!
//! (Why intrinsics here when the recurrent cells rely on the compiler: on these 32-lane loops
//! the compiler's vectoriser gave up and emitted scalar code inside the convolution kernel, 5×
//! slower; see `src/layers/conv2d/direct.rs`.)

/// Partial sums per dot product.
pub(crate) const LANES: usize = 32;

/// `Σ a[i]·b[i]` in LANES partial sums (lane `l` takes every `i ≡ l mod LANES`), added pairwise at
/// the end: the same order on every CPU.
#[inline(always)]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut r = [0.0f32; LANES];
    let (a_blocks, b_blocks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (a_tail, b_tail) = (a_blocks.remainder(), b_blocks.remainder());
    let whole = a.len().min(b.len()) / LANES * LANES;
    lanes_dot(&a[..whole], &b[..whole], &mut r);
    for ((r_l, &a_l), &b_l) in r.iter_mut().zip(a_tail).zip(b_tail) {
        *r_l += a_l * b_l;
    }
    reduce(r)
}

/// `out[j] = dot(a, rows[j·k..][..k])` for each `j`, `k = a.len()`: a vector times the rows of a
/// matrix (a dense layer on one input), each value bit for bit [`dot`]'s. With AVX2 the rows go
/// three at a time, so that each block of `a` is loaded once for three rows and the lanes are added
/// in registers at the end, in [`reduce`]'s order.
///
/// # Panics
/// If `rows` does not hold `out.len()` rows of `a.len()` values.
pub(crate) fn dot_rows(a: &[f32], rows: &[f32], out: &mut [f32]) {
    let k = a.len();
    assert!(
        out.len().checked_mul(k) == Some(rows.len()),
        "dot_rows: {} values for {} rows of {k}",
        rows.len(),
        out.len()
    );
    if k == 0 {
        out.fill(0.0);
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if crate::tensor::simd::wide_vectors() {
        const R: usize = avx2::ROWS_AT_ONCE;
        let mut groups = rows.chunks_exact(R * k);
        let mut outs = out.chunks_exact_mut(R);
        for (group, out_g) in (&mut groups).zip(&mut outs) {
            // SAFETY: the CPU has AVX2 (checked above); the group holds R rows of k values.
            let sums = unsafe { avx2::dot_rows::<R>(a, group) };
            out_g.copy_from_slice(&sums);
        }
        for (row, out_j) in groups.remainder().chunks_exact(k).zip(outs.into_remainder()) {
            // SAFETY: as above, one row of k values.
            *out_j = unsafe { avx2::dot_rows::<1>(a, row) }[0];
        }
        return;
    }
    dot_rows_plain(a, rows, out);
}

/// [`dot_rows`] one row at a time: the definition.
fn dot_rows_plain(a: &[f32], rows: &[f32], out: &mut [f32]) {
    for (out_j, row) in out.iter_mut().zip(rows.chunks_exact(a.len())) {
        *out_j = dot(a, row);
    }
}

/// `Σ a[i]` in LANES partial sums, as [`dot`] (a plain `iter().sum()` is one serial chain of
/// additions, 4 cycles each).
#[inline(always)]
pub(crate) fn sum(a: &[f32]) -> f32 {
    let mut r = [0.0f32; LANES];
    let whole = a.len() / LANES * LANES;
    lanes_sum(&a[..whole], &mut r);
    for (r_l, &a_l) in r.iter_mut().zip(&a[whole..]) {
        *r_l += a_l;
    }
    reduce(r)
}

/// `r[l] += Σ_j a[j·LANES + l] · b[j·LANES + l]` over whole blocks: the definition, and what the
/// compiler is given where the CPU has no AVX2.
fn lanes_dot_plain(a: &[f32], b: &[f32], r: &mut [f32; LANES]) {
    for (a_b, b_b) in a.chunks_exact(LANES).zip(b.chunks_exact(LANES)) {
        for ((r_l, &a_l), &b_l) in r.iter_mut().zip(a_b).zip(b_b) {
            *r_l += a_l * b_l;
        }
    }
}

/// `r[l] += Σ_j a[j·LANES + l]` over whole blocks.
fn lanes_sum_plain(a: &[f32], r: &mut [f32; LANES]) {
    for block in a.chunks_exact(LANES) {
        for (r_l, &a_l) in r.iter_mut().zip(block) {
            *r_l += a_l;
        }
    }
}

/// [`lanes_dot_plain`], with AVX2 where the CPU has it. (The compiler does not vectorise these
/// 32-lane loops reliably — it kept them scalar inside the kernel — so the AVX2 version is
/// written out: four 8-lane registers, a multiply then an add, exactly the plain version's
/// operations in its order.)
#[inline(always)]
fn lanes_dot(a: &[f32], b: &[f32], r: &mut [f32; LANES]) {
    #[cfg(target_arch = "x86_64")]
    if crate::tensor::simd::wide_vectors() {
        // SAFETY: the CPU has AVX2 (checked just above).
        return unsafe { avx2::lanes_dot(a, b, r) };
    }
    lanes_dot_plain(a, b, r);
}

/// [`lanes_sum_plain`], with AVX2 where the CPU has it.
#[inline(always)]
fn lanes_sum(a: &[f32], r: &mut [f32; LANES]) {
    #[cfg(target_arch = "x86_64")]
    if crate::tensor::simd::wide_vectors() {
        // SAFETY: the CPU has AVX2 (checked just above).
        return unsafe { avx2::lanes_sum(a, r) };
    }
    lanes_sum_plain(a, r);
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::LANES;
    use std::arch::x86_64::{
        __m256, _mm_add_ps, _mm_add_ss, _mm_cvtss_f32, _mm_movehl_ps, _mm_shuffle_ps, _mm256_add_epi32,
        _mm256_add_ps, _mm256_and_si256, _mm256_blendv_ps, _mm256_castps256_ps128, _mm256_castsi256_ps,
        _mm256_cmpgt_epi32, _mm256_extractf128_ps, _mm256_loadu_ps, _mm256_maskload_ps, _mm256_mul_ps,
        _mm256_permutevar8x32_ps, _mm256_set1_epi32, _mm256_setr_epi32, _mm256_setzero_ps, _mm256_storeu_ps,
        _mm256_sub_epi32,
    };

    /// Loads `r` as four registers, runs `step` over the whole blocks, stores them back.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[inline(always)]
    unsafe fn in_registers(
        r: &mut [f32; LANES],
        blocks: usize,
        mut step: impl FnMut(usize, &mut [__m256; 4]),
    ) {
        // SAFETY: r has LANES = 4·8 elements; each load reads 8 of them from l ∈ {0, 8, 16, 24}.
        let mut acc = unsafe { [0, 8, 16, 24].map(|l| _mm256_loadu_ps(r.as_ptr().add(l))) };
        for j in 0..blocks {
            step(j * LANES, &mut acc);
        }
        for (k, v) in acc.iter().enumerate() {
            // SAFETY: as for the loads, 8 elements from 8·k ≤ 24.
            unsafe { _mm256_storeu_ps(r.as_mut_ptr().add(8 * k), *v) };
        }
    }

    /// See [`super::lanes_dot_plain`].
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn lanes_dot(a: &[f32], b: &[f32], r: &mut [f32; LANES]) {
        let blocks = a.len().min(b.len()) / LANES;
        // SAFETY: block j reads a[j·LANES..][..LANES] and b[j·LANES..][..LANES], inside both.
        unsafe {
            in_registers(r, blocks, |i, acc| {
                for (k, acc_k) in acc.iter_mut().enumerate() {
                    let (a_k, b_k) = (
                        _mm256_loadu_ps(a.as_ptr().add(i + 8 * k)),
                        _mm256_loadu_ps(b.as_ptr().add(i + 8 * k)),
                    );
                    *acc_k = _mm256_add_ps(*acc_k, _mm256_mul_ps(a_k, b_k));
                }
            });
        }
    }

    /// Rows per pass of [`dot_rows`]: three rows' four accumulators and the block of `a` fill 13
    /// of the 16 registers.
    pub(super) const ROWS_AT_ONCE: usize = 3;

    /// [`super::dot_rows`] for `R` rows: `R` dot products of `a` in [`super::dot`]'s 32 lanes, the
    /// lanes of each added in registers in [`super::reduce`]'s order (32 → 16 → 8 → 4 → 2 → 1).
    ///
    /// The rows' loads are kept inside cache lines: the first `p < 8` elements, up to the rows'
    /// first 32-byte boundary, are loaded alone (masked), and the four registers then hold the
    /// lanes rotated by `p` (register `q` lanes `p + 8q … p + 8q + 7`, modulo 32), turned back by
    /// two permutes and a blend a register at the end. Each lane still adds its elements in order
    /// (a lane never sums to −0, so a masked lane's `+ 0` changes nothing), so the bits are
    /// [`super::dot`]'s. (A weight matrix 16 bytes past a cache line boundary split every other
    /// load: one input through the MLP's 784 × 256 layer took 9.7 µs instead of 6.8.)
    ///
    /// # Safety
    /// The CPU must support AVX2; `rows` must hold `R` rows of `a.len()` values.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn dot_rows<const R: usize>(a: &[f32], rows: &[f32]) -> [f32; R] {
        let k = a.len();
        debug_assert!(rows.len() >= R * k);
        // Rows k apart share their offset from a 32-byte boundary when k is a multiple of 8.
        let to_boundary = (32 - rows.as_ptr() as usize % 32) % 32 / 4;
        let p = if k.is_multiple_of(8) { to_boundary.min(k) } else { 0 };
        // SAFETY: as for this function (the caller's promise).
        unsafe {
            if p == 0 {
                let acc = accumulate::<R>([[_mm256_setzero_ps(); 4]; R], a.as_ptr(), rows.as_ptr(), k, 0);
                return acc.map(|lanes| reduce_in_registers(&lanes));
            }
            dot_rows_rotated::<R>(a, rows, p)
        }
    }

    /// [`dot_rows`] for rows `p ∈ 1 … 7` elements before a 32-byte boundary.
    ///
    /// # Safety
    /// As [`dot_rows`]; `p ≤ a.len()`.
    #[target_feature(enable = "avx2")]
    unsafe fn dot_rows_rotated<const R: usize>(a: &[f32], rows: &[f32], p: usize) -> [f32; R] {
        let k = a.len();
        let (pa, pb) = (a.as_ptr(), rows.as_ptr());
        let iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let below = |n: usize| _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), iota); // lanes t < n
        let zero = _mm256_setzero_ps();
        let mut acc = [[zero; 4]; R];
        // Lanes 0 … p − 1 start with their first element (0 + a·b, as in dot); in the rotated
        // layout they sit at the top of register 3 (lane l at position l + 8 − p).
        let (first, to_top) = (
            below(p),
            _mm256_and_si256(_mm256_add_epi32(iota, _mm256_set1_epi32(p as i32)), _mm256_set1_epi32(7)),
        );
        for (r, acc_r) in acc.iter_mut().enumerate() {
            // SAFETY: masked loads read only elements 0 … p − 1 of a and of row r (p ≤ k).
            let ab = unsafe {
                _mm256_mul_ps(_mm256_maskload_ps(pa, first), _mm256_maskload_ps(pb.add(r * k), first))
            };
            acc_r[3] = _mm256_permutevar8x32_ps(_mm256_add_ps(zero, ab), to_top);
        }
        // SAFETY: a holds k values and rows R rows of k (the caller's promise); p ≤ k.
        let acc = unsafe { accumulate::<R>(acc, pa, pb, k, p) };
        let from =
            _mm256_and_si256(_mm256_sub_epi32(iota, _mm256_set1_epi32(p as i32)), _mm256_set1_epi32(7));
        let wrapped = _mm256_castsi256_ps(below(p));
        acc.map(|rot| {
            // Register q's lane t is rotated register q's lane t − p, or for t < p register
            // q − 1's lane t − p + 8.
            let lanes = std::array::from_fn(|q| {
                let (own, prev) = (rot[q], rot[(q + 3) % 4]);
                _mm256_blendv_ps(
                    _mm256_permutevar8x32_ps(own, from),
                    _mm256_permutevar8x32_ps(prev, from),
                    wrapped,
                )
            });
            // SAFETY: AVX2 (the caller's promise); register arithmetic only.
            unsafe { reduce_in_registers(&lanes) }
        })
    }

    /// The elements of [`dot_rows`] from `p` on, added to `acc` (rotated by `p`): whole blocks of
    /// 32, then the tail's registers, the last one masked.
    ///
    /// # Safety
    /// The CPU must support AVX2; `pa` must point at `k` values and `pb` at `R` rows of `k`; `p ≤ k`.
    #[inline(always)]
    unsafe fn accumulate<const R: usize>(
        mut acc: [[__m256; 4]; R],
        pa: *const f32,
        pb: *const f32,
        k: usize,
        p: usize,
    ) -> [[__m256; 4]; R] {
        let whole = p + (k - p) / LANES * LANES;
        // SAFETY: every load reads 8 values at i + 8q < whole ≤ k from a, and from row r at
        // r·k + i + 8q, inside the R rows; then registers of 8 at i + 8 ≤ k; the masked load reads
        // only the k − i < 8 elements left.
        unsafe {
            let mut i = p;
            while i < whole {
                for q in 0..4 {
                    let a_q = _mm256_loadu_ps(pa.add(i + 8 * q));
                    for (r, acc_r) in acc.iter_mut().enumerate() {
                        let b_q = _mm256_loadu_ps(pb.add(r * k + i + 8 * q));
                        acc_r[q] = _mm256_add_ps(acc_r[q], _mm256_mul_ps(a_q, b_q));
                    }
                }
                i += LANES;
            }
            // The tail: element whole + 8q + t continues register q's lane t.
            let mut q = 0;
            while i + 8 <= k {
                let a_q = _mm256_loadu_ps(pa.add(i));
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    let b_q = _mm256_loadu_ps(pb.add(r * k + i));
                    acc_r[q] = _mm256_add_ps(acc_r[q], _mm256_mul_ps(a_q, b_q));
                }
                i += 8;
                q += 1;
            }
            if i < k {
                let rest = _mm256_cmpgt_epi32(
                    _mm256_set1_epi32((k - i) as i32),
                    _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                );
                let a_q = _mm256_maskload_ps(pa.add(i), rest);
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    let b_q = _mm256_maskload_ps(pb.add(r * k + i), rest);
                    acc_r[q] = _mm256_add_ps(acc_r[q], _mm256_mul_ps(a_q, b_q));
                }
            }
        }
        acc
    }

    /// [`super::reduce`] on 32 lanes held as four registers: the same pairs added in the same
    /// order, as register halves.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    unsafe fn reduce_in_registers(v: &[__m256; 4]) -> f32 {
        let v16 = [_mm256_add_ps(v[0], v[2]), _mm256_add_ps(v[1], v[3])]; // lane l += lane l + 16
        let v8 = _mm256_add_ps(v16[0], v16[1]); // l += l + 8
        let v4 = _mm_add_ps(_mm256_castps256_ps128(v8), _mm256_extractf128_ps::<1>(v8)); // l += l + 4
        let v2 = _mm_add_ps(v4, _mm_movehl_ps(v4, v4)); // l += l + 2
        let v1 = _mm_add_ss(v2, _mm_shuffle_ps::<1>(v2, v2)); // 0 += 1
        _mm_cvtss_f32(v1)
    }

    /// The first `T` windows of [`super::shifted_dots`]; returns `T`.
    ///
    /// # Safety
    /// The CPU must support AVX2; `offs` must hold at least `T` offsets, each with
    /// `off + a.len() ≤ b.len()`, and `out` at least `T` elements.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn shifted_dots<const T: usize>(
        a: &[f32],
        b: &[f32],
        offs: &[usize],
        out: &mut [f32],
    ) -> usize {
        let n = a.len();
        let whole = n / 8 * 8;
        let mut lanes = [[0.0f32; 8]; T];
        // SAFETY: block i reads a[i..i + 8] (i + 8 ≤ whole ≤ n) and b[off + i..][..8], inside b for
        // every window (the caller's promise).
        unsafe {
            let mut acc = [_mm256_setzero_ps(); T];
            for i in (0..whole).step_by(8) {
                let a_i = _mm256_loadu_ps(a.as_ptr().add(i));
                for (acc_t, &off) in acc.iter_mut().zip(&offs[..T]) {
                    let b_i = _mm256_loadu_ps(b.as_ptr().add(off + i));
                    *acc_t = _mm256_add_ps(*acc_t, _mm256_mul_ps(a_i, b_i));
                }
            }
            for (l, acc_t) in lanes.iter_mut().zip(&acc) {
                _mm256_storeu_ps(l.as_mut_ptr(), *acc_t);
            }
        }
        for ((l, &off), out_t) in lanes.iter_mut().zip(&offs[..T]).zip(out.iter_mut()) {
            for i in whole..n {
                l[i % 8] += a[i] * b[off + i];
            }
            *out_t = super::reduce8(*l);
        }
        T
    }

    /// See [`super::lanes_sum_plain`].
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn lanes_sum(a: &[f32], r: &mut [f32; LANES]) {
        let blocks = a.len() / LANES;
        // SAFETY: block j reads a[j·LANES..][..LANES], inside a.
        unsafe {
            in_registers(r, blocks, |i, acc| {
                for (k, acc_k) in acc.iter_mut().enumerate() {
                    *acc_k = _mm256_add_ps(*acc_k, _mm256_loadu_ps(a.as_ptr().add(i + 8 * k)));
                }
            });
        }
    }
}

/// The lanes added pairwise, 32 → 16 → 8 → 4 → 2 → 1: the same order everywhere.
#[inline(always)]
fn reduce(mut r: [f32; LANES]) -> f32 {
    let mut width = LANES;
    while width > 1 {
        width /= 2;
        let (lo, hi) = r.split_at_mut(width);
        for (a, &b) in lo.iter_mut().zip(&hi[..width]) {
            *a += b;
        }
    }
    r[0]
}

/// Several dot products of one vector with shifted windows of another:
/// `out[t] = Σ_i a[i] · b[offsets[t] + i]` for `i < a.len()`. Each sum runs in 8 partial sums (lane
/// `l` takes every `i ≡ l mod 8`) added pairwise at the end, the same order on every CPU. With
/// AVX2, up to 8 windows go together, so that each block of `a` is loaded once for all of them
/// (the convolution's weight gradients: 9 taps of a 3×3 kernel read the same gradient).
///
/// # Panics
/// If a window reaches past `b`, or `out` is shorter than `offsets`.
pub(crate) fn shifted_dots(a: &[f32], b: &[f32], offsets: &[usize], out: &mut [f32]) {
    let n = a.len();
    assert!(
        offsets.iter().all(|&off| off.checked_add(n).is_some_and(|end| end <= b.len())),
        "shifted_dots: a window reaches past b"
    );
    assert!(out.len() >= offsets.len(), "shifted_dots: out shorter than offsets");
    #[cfg(target_arch = "x86_64")]
    if crate::tensor::simd::wide_vectors() {
        let mut t = 0;
        while t < offsets.len() {
            let rest = offsets.len() - t;
            let (offs, out) = (&offsets[t..], &mut out[t..]);
            // SAFETY: the CPU has AVX2 (checked above); every window lies inside b (asserted above).
            t += unsafe {
                match rest {
                    8.. => avx2::shifted_dots::<8>(a, b, offs, out),
                    4..=7 => avx2::shifted_dots::<4>(a, b, offs, out),
                    2..=3 => avx2::shifted_dots::<2>(a, b, offs, out),
                    _ => avx2::shifted_dots::<1>(a, b, offs, out),
                }
            };
        }
        return;
    }
    shifted_dots_plain(a, b, offsets, out);
}

/// [`shifted_dots`] as plain loops: the definition.
fn shifted_dots_plain(a: &[f32], b: &[f32], offsets: &[usize], out: &mut [f32]) {
    for (out_t, &off) in out.iter_mut().zip(offsets) {
        let mut lanes = [0.0f32; 8];
        for (i, (&a_i, &b_i)) in a.iter().zip(&b[off..]).enumerate() {
            lanes[i % 8] += a_i * b_i;
        }
        *out_t = reduce8(lanes);
    }
}

/// Eight lanes added pairwise, 8 → 4 → 2 → 1.
#[inline(always)]
fn reduce8(mut r: [f32; 8]) -> f32 {
    for width in [4, 2, 1] {
        for l in 0..width {
            r[l] += r[l + width];
        }
    }
    r[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The AVX2 lanes and the plain ones give the same bits (where the CPU has AVX2).
    #[test]
    fn wide_vectors_change_nothing() {
        let a: Vec<f32> = (0..5 * LANES).map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0).collect();
        let b: Vec<f32> = (0..5 * LANES).map(|i| ((i * 53 % 97) as f32 - 48.0) / 3.0).collect();
        let (mut wide, mut plain) = ([0.5f32; LANES], [0.5f32; LANES]);
        lanes_dot(&a, &b, &mut wide);
        lanes_dot_plain(&a, &b, &mut plain);
        assert_eq!(wide.map(f32::to_bits), plain.map(f32::to_bits));
        lanes_sum(&a, &mut wide);
        lanes_sum_plain(&a, &mut plain);
        assert_eq!(wide.map(f32::to_bits), plain.map(f32::to_bits));
    }

    /// The AVX2 shifted dot products and the plain ones give the same bits, for every count of
    /// windows the dispatch distinguishes and lengths with and without a tail.
    #[test]
    fn shifted_dots_wide_and_plain_agree() {
        let b: Vec<f32> = (0..900).map(|i| ((i * 29 % 83) as f32 - 41.0) / 9.0).collect();
        for len in [0, 5, 8, 61, 726] {
            let a: Vec<f32> = (0..len).map(|i| ((i * 17 % 31) as f32 - 15.0) / 4.0).collect();
            for taps in [1, 2, 3, 5, 8, 9, 27, 32] {
                let offsets: Vec<usize> = (0..taps).map(|t| (t * 7) % (900 - len)).collect();
                let (mut wide, mut plain) = (vec![0.0; taps], vec![0.0; taps]);
                shifted_dots(&a, &b, &offsets, &mut wide);
                shifted_dots_plain(&a, &b, &offsets, &mut plain);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&wide), bits(&plain), "length {len}, {taps} windows");
                for (t, &off) in offsets.iter().enumerate() {
                    let exact: f64 = a.iter().zip(&b[off..]).map(|(&x, &y)| x as f64 * y as f64).sum();
                    assert!((plain[t] as f64 - exact).abs() < 1e-3 * (1.0 + exact.abs()), "window {t}");
                }
            }
        }
    }

    /// `dot_rows` gives `dot`'s bits for every row, on lengths with and without a tail (whole
    /// registers, a scalar rest, shorter than one block) and row counts around the group size.
    #[test]
    fn dot_rows_is_dot_on_every_row() {
        for k in [1, 7, 8, 16, 31, 32, 33, 40, 64, 100, 784] {
            let a: Vec<f32> = (0..k).map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0).collect();
            for n in [1, 2, 3, 4, 5, 7, 10] {
                let rows: Vec<f32> = (0..n * k).map(|i| ((i * 53 % 97) as f32 - 48.0) / 3.0).collect();
                let mut out = vec![f32::NAN; n];
                dot_rows(&a, &rows, &mut out);
                for (j, (row, &got)) in rows.chunks_exact(k).zip(&out).enumerate() {
                    assert_eq!(got.to_bits(), dot(&a, row).to_bits(), "k {k}, {n} rows, row {j}");
                }
            }
        }
        // Rows starting anywhere relative to a cache line (the kernel peels up to 7 elements).
        for k in [8, 16, 40, 96, 784] {
            let a: Vec<f32> = (0..k).map(|i| (i as f32 * 0.61).sin()).collect();
            let all: Vec<f32> = (0..8 + 5 * k).map(|i| (i as f32 * 0.23).cos()).collect();
            for shift in 0..8 {
                let rows = &all[shift..shift + 5 * k];
                let mut out = [f32::NAN; 5];
                dot_rows(&a, rows, &mut out);
                for (j, row) in rows.chunks_exact(k).enumerate() {
                    assert_eq!(out[j].to_bits(), dot(&a, row).to_bits(), "k {k}, shift {shift}, row {j}");
                }
            }
        }
        let mut out = [f32::NAN; 2];
        dot_rows(&[], &[], &mut out);
        assert_eq!(out, [0.0, 0.0]);
    }

    /// `dot` and `sum` against a plain f64 sum, on lengths with and without a tail.
    #[test]
    fn dot_and_sum_agree_with_f64() {
        for len in [0, 1, 31, 32, 33, 100, 726] {
            let a: Vec<f32> = (0..len).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..len).map(|i| (i as f32 * 0.11).cos()).collect();
            let d64: f64 = a.iter().zip(&b).map(|(&x, &y)| x as f64 * y as f64).sum();
            let s64: f64 = a.iter().map(|&x| x as f64).sum();
            assert!((dot(&a, &b) as f64 - d64).abs() < 1e-4, "dot, length {len}");
            assert!((sum(&a) as f64 - s64).abs() < 1e-4, "sum, length {len}");
        }
    }
}
