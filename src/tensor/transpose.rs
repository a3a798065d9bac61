//! A matrix transposed into another buffer: `Bᵀ[c][j] = B[j][c]`, for the operands the kernels
//! want laid out the other way — an attention head's `Kᵀ` and `Vᵀ`
//! ([`attention_head`](crate::layers::attention_head)), and a weight `W` (`[n, k]`, stored as a
//! `Dense` keeps it) packed as panels of `Wᵀ` ([`PackedB`](super::packed_gemm::PackedB)).
//!
//! [`transpose_definition`] is the definition, a plain double loop; on a CPU with AVX the same
//! values come from 8 × 8 blocks transposed in registers (the tests compare them). Element by
//! element, the layout had been 2.8 % of an encoder's inference on the AMD host, and packing a
//! `[384, 128]` weight 47 µs (a strided write per value; the compiler does not find the shuffles
//! on its own).

/// `t[c·ldt + j] = b[j·ld + c]` for `j < rows`, `c < cols`: `B` (`rows` rows of `cols` values,
/// `ld` apart) transposed into `t` (`cols` rows, `ldt` apart; values past `rows` in each row left
/// alone).
///
/// # Panics
/// If `ld < cols`, `ldt < rows`, or either buffer is too short for its rows.
pub(crate) fn transpose(
    (rows, cols): (usize, usize),
    (b, ld): (&[f32], usize),
    (t, ldt): (&mut [f32], usize),
) {
    if rows == 0 || cols == 0 {
        return;
    }
    // (Checked: a wrapped bound would pass and the AVX path below reads without bounds checks.)
    let span = |r: usize, ld: usize, c: usize| (r - 1).checked_mul(ld).and_then(|v| v.checked_add(c));
    assert!(
        ld >= cols
            && ldt >= rows
            && span(rows, ld, cols).is_some_and(|s| b.len() >= s)
            && span(cols, ldt, rows).is_some_and(|s| t.len() >= s),
        "transpose: {rows}×{cols} from {} values ({ld} apart) into {} ({ldt} apart)",
        b.len(),
        t.len()
    );
    #[cfg(target_arch = "x86_64")]
    if super::simd::isa() != super::simd::Isa::Baseline {
        // SAFETY: AVX2 and AVX-512F CPUs have AVX; the bounds were asserted above.
        unsafe { transpose_avx((rows, cols), (b, ld), (t, ldt)) };
        return;
    }
    transpose_definition((rows, cols), (b, ld), (t, ldt));
}

/// [`transpose`]'s definition: one value at a time.
pub(crate) fn transpose_definition(
    (rows, cols): (usize, usize),
    (b, ld): (&[f32], usize),
    (t, ldt): (&mut [f32], usize),
) {
    for c in 0..cols {
        for j in 0..rows {
            t[c * ldt + j] = b[j * ld + c];
        }
    }
}

/// [`transpose`] with AVX: blocks of 8 × 8 transposed in registers (eight rows loaded,
/// interleaved by pairs, quadruples and halves: 24 shuffles for 64 values), the edges one value at
/// a time. (Named for its first use, an attention head's keys: `K` is `tk` rows of `d` values.)
/// The blocks go down strips of 32 rows of `K` one column block at a time, so that each stretch
/// of `Kᵀ` is written whole while its lines are in the L1 cache: along whole rows of `K` instead,
/// a 32-row panel of `PackedB` (`[784, 32]`, 100 KB) had each of its lines written in four
/// visits far apart (the MLP's batch packed in 10.9 µs; 7.7 by this order, 6.3 with pointer
/// offsets in place of the slices' bounds-checked ranges).
///
/// # Safety
/// The CPU must have AVX; `k` must hold `tk` rows of `d` values, `ld` apart, and `kt` `d` rows of
/// `ldt ≥ tk` (the bounds [`transpose`] asserts).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn transpose_avx((tk, d): (usize, usize), (k, ld): (&[f32], usize), (kt, ldt): (&mut [f32], usize)) {
    use std::arch::x86_64::{
        _mm256_loadu_ps, _mm256_permute2f128_ps, _mm256_shuffle_ps, _mm256_unpackhi_ps, _mm256_unpacklo_ps,
    };
    let (rows, cols) = (tk / 8 * 8, d / 8 * 8);
    for strip in (0..rows).step_by(32) {
        for c0 in (0..cols).step_by(8) {
            for j0 in (strip..rows.min(strip + 32)).step_by(8) {
                // SAFETY: rows j0 .. j0 + 8 ≤ tk of K hold columns c0 .. c0 + 8 ≤ d, and rows
                // c0 .. c0 + 8 of Kᵀ hold columns j0 .. j0 + 8 ≤ tk ≤ ldt (the caller's promise:
                // every offset below is inside the slices); AVX is enabled.
                unsafe {
                    let r =
                        [0, 1, 2, 3, 4, 5, 6, 7].map(|i| _mm256_loadu_ps(k.as_ptr().add((j0 + i) * ld + c0)));
                    // Pairs of rows interleaved: t0 = r0₀ r1₀ r0₁ r1₁ | r0₄ r1₄ r0₅ r1₅, …
                    let t = [
                        _mm256_unpacklo_ps(r[0], r[1]),
                        _mm256_unpackhi_ps(r[0], r[1]),
                        _mm256_unpacklo_ps(r[2], r[3]),
                        _mm256_unpackhi_ps(r[2], r[3]),
                        _mm256_unpacklo_ps(r[4], r[5]),
                        _mm256_unpackhi_ps(r[4], r[5]),
                        _mm256_unpacklo_ps(r[6], r[7]),
                        _mm256_unpackhi_ps(r[6], r[7]),
                    ];
                    // Quadruples: u0 = r0₀ r1₀ r2₀ r3₀ | r0₄ r1₄ r2₄ r3₄, …
                    let u = [
                        _mm256_shuffle_ps::<0x44>(t[0], t[2]),
                        _mm256_shuffle_ps::<0xEE>(t[0], t[2]),
                        _mm256_shuffle_ps::<0x44>(t[1], t[3]),
                        _mm256_shuffle_ps::<0xEE>(t[1], t[3]),
                        _mm256_shuffle_ps::<0x44>(t[4], t[6]),
                        _mm256_shuffle_ps::<0xEE>(t[4], t[6]),
                        _mm256_shuffle_ps::<0x44>(t[5], t[7]),
                        _mm256_shuffle_ps::<0xEE>(t[5], t[7]),
                    ];
                    // Halves: column c = (u[c % 4] low, u[c % 4 + 4] low) for c < 4, the high halves after.
                    for c in 0..4 {
                        let low = _mm256_permute2f128_ps::<0x20>(u[c], u[c + 4]);
                        let high = _mm256_permute2f128_ps::<0x31>(u[c], u[c + 4]);
                        std::arch::x86_64::_mm256_storeu_ps(kt.as_mut_ptr().add((c0 + c) * ldt + j0), low);
                        std::arch::x86_64::_mm256_storeu_ps(
                            kt.as_mut_ptr().add((c0 + c + 4) * ldt + j0),
                            high,
                        );
                    }
                }
            }
        }
    }
    // The edges: the last tk % 8 keys of every column, every key of the last d % 8 columns.
    for c in 0..d {
        let from = if c < cols { rows } else { 0 };
        for j in from..tk {
            kt[c * ldt + j] = k[j * ld + c];
        }
    }
}

#[cfg(test)]
mod tests {
    /// Bounds that would wrap past usize are refused, not passed (the AVX path reads unchecked).
    #[test]
    #[should_panic(expected = "transpose: 9×8")]
    fn a_stride_whose_span_wraps_is_refused() {
        let (b, mut t) = ([0.0f32; 8], [0.0f32; 72]);
        super::transpose((9, 8), (&b, 1 << 61), (&mut t, 9));
    }

    use super::*;

    /// The fast path against the definition, bit for bit: whole 8 × 8 blocks, edges in both
    /// directions, strips of 32 rows and a last shorter one, rows of `B` wider than their values,
    /// rows of `t` wider than `B`'s count (whose extra values stay as they were).
    #[test]
    fn transposed_blocks_match_the_definition() {
        for (rows, cols) in [
            (1usize, 1usize),
            (8, 8),
            (64, 32),
            (13, 19),
            (100, 16),
            (7, 9),
            (16, 128),
            (5, 200),
            (72, 24),
            (41, 17),
            (32, 784),
        ] {
            let ld = cols + 3;
            let b: Vec<f32> = (0..rows * ld).map(|i| i as f32 * 0.5 - 3.0).collect();
            let ldt = rows.div_ceil(16) * 16 + 1;
            let (mut fast, mut plain) = (vec![f32::NAN; cols * ldt], vec![f32::NAN; cols * ldt]);
            transpose((rows, cols), (&b, ld), (&mut fast, ldt));
            transpose_definition((rows, cols), (&b, ld), (&mut plain, ldt));
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&fast), bits(&plain), "{rows}×{cols}");
            for c in 0..cols {
                for j in 0..rows {
                    assert_eq!(plain[c * ldt + j], b[j * ld + c], "{rows}×{cols}: t[{c}][{j}]");
                }
                assert!(
                    plain[c * ldt + rows..][..ldt - rows].iter().all(|v| v.is_nan()),
                    "{rows}×{cols}: row {c}'s tail"
                );
            }
        }
    }

    #[test]
    #[should_panic(expected = "transpose: 4×3")]
    fn a_short_destination_is_refused() {
        transpose((4, 3), (&[0.0; 12], 3), (&mut [0.0; 11], 4));
    }
}
