//! One attention head's forward pass, `S = Q·Kᵀ/√d`, `P = softmax(S)` over the allowed keys,
//! `O = P·V`, on AVX-512 without a general matrix product: the shapes are small (a Transformer's
//! heads are 16 to 64 wide, over tens of steps), and `matrixmultiply` spent about as long packing
//! both operands of each product as multiplying them (`perf`: 5 % packing beside 8 % multiplying
//! in an encoder's inference).
//!
//! Instead, `Kᵀ` is laid out once per head (`d` rows of `T_k` values, a few kilobytes), and each
//! block of four queries is multiplied straight from `Q`'s rows: query values broadcast, 16 keys
//! per register, four registers of keys at a time — sixteen running sums, each a chain of fused
//! multiply-adds over `p = 0 … d − 1` in order, then scaled by `1/√d`, as `matrixmultiply`'s
//! kernel does. The scores of keys a block of queries may not see (beyond the memory's length, or
//! after the last query under a causal mask) are not computed: the softmax zeroes them anyway.
//! `O = P·V` likewise: four rows of `P` broadcast against `V`'s rows, `d_v/16` registers each,
//! stopping at the last key the block sees.
//!
//! [`super::attention`]'s `head_forward` through `sgemm_strided` is the definition; the test
//! `fast_heads_match_the_definition` compares the two on awkward shapes, masks included.

use super::attention::softmax_prefix;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::{
    __mmask16, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_mask_storeu_ps, _mm512_mul_ps, _mm512_set1_ps,
    _mm512_setzero_ps, _mm512_storeu_ps,
};
use std::cell::RefCell;

/// Queries per block.
const ROWS: usize = 4;
/// Key registers per pass over `d` (64 keys).
const KEY_REGS: usize = 4;

/// Whether [`head_forward`] takes a head of `d`-wide queries and keys and `dv`-wide values on
/// this CPU: AVX-512, `d ≥ 1` (with `d = 0` the definition's scores are 0, not `0·∞`), and `d_v`
/// a multiple of 16 up to 64 (every other head goes through the definition).
pub(super) fn fits(d: usize, dv: usize) -> bool {
    cfg!(target_arch = "x86_64")
        && crate::tensor::simd::isa() == crate::tensor::simd::Isa::Avx512
        && d > 0
        && dv > 0
        && dv.is_multiple_of(16)
        && dv <= 64
}

thread_local! {
    /// `Kᵀ`, reused from head to head on each thread.
    static KEYS_T: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// The head's forward pass (shapes `(T_q, T_k, d, d_v)`; `q`, `k`, `v` blocks with their row
/// strides; keys `0 .. keys` allowed, and `≤ i` when `causal`), writing `p` (`[T_q, T_k]`) and
/// `o`. The caller has checked [`fits`].
#[allow(clippy::too_many_arguments)] // the head's operands, as `head_forward`'s
pub(super) fn head_forward(
    (tq, tk, d, dv): (usize, usize, usize, usize),
    q: (&[f32], usize),
    k: (&[f32], usize),
    v: (&[f32], usize),
    (causal, keys): (bool, usize),
    p: &mut [f32],
    o: (&mut [f32], usize),
) {
    assert!(fits(d, dv), "attention head kernel: d = {d}, d_v = {dv} (or this CPU) is not for it");
    // Rows 0 .. rows of `cols` values, `ld` apart, inside the slice (no product may wrap).
    let within = |(s, ld): (&[f32], usize), rows: usize, cols: usize| {
        rows == 0
            || (rows - 1).checked_mul(ld).and_then(|x| x.checked_add(cols)).is_some_and(|end| end <= s.len())
    };
    assert!(
        within(q, tq, d) && within(k, tk, d) && within(v, tk, dv),
        "attention head kernel: a block past its slice"
    );
    assert!(
        within((&*o.0, o.1), tq, dv) && p.len() == tq * tk && keys <= tk,
        "attention head kernel: outputs"
    );
    assert!(tk > 0, "attention head kernel: no keys"); // as the definition (every caller has T_k ≥ 1)
    let padded = tk.div_ceil(16) * 16;
    KEYS_T.with_borrow_mut(|kt| {
        kt.clear();
        kt.resize(d * padded, 0.0);
        // Column c of K into row c of Kᵀ: contiguous writes, and the reads come from the same
        // tk lines of K for every c (they stay in L1).
        for (c, kt_c) in kt.chunks_exact_mut(padded).enumerate() {
            for (j, x) in kt_c[..tk].iter_mut().enumerate() {
                *x = k.0[j * k.1 + c];
            }
        }
        let scale = 1.0 / (d as f32).sqrt();
        let mut i = 0;
        while i < tq {
            let rows = ROWS.min(tq - i);
            // Keys this block of queries sees: 0 .. seen (the softmax zeroes the rest).
            let seen = if causal { keys.min(i + rows) } else { keys };
            #[cfg(target_arch = "x86_64")]
            // SAFETY: AVX-512F (`fits`); rows i .. i + rows of Q (d values each) and of P (tk) are
            // inside their slices (asserted above), Kᵀ holds d rows of `padded ≥ seen` values.
            unsafe {
                let (q_rows, p_rows) = (q.0[i * q.1..].as_ptr(), p[i * tk..].as_mut_ptr());
                match rows {
                    ROWS => scores::<ROWS>(q_rows, q.1, d, kt.as_ptr(), padded, seen, scale, p_rows, tk),
                    _ => {
                        for r in 0..rows {
                            let (q_r, p_r) = (q_rows.add(r * q.1), p_rows.add(r * tk));
                            scores::<1>(q_r, q.1, d, kt.as_ptr(), padded, seen, scale, p_r, tk);
                        }
                    }
                }
            }
            for r in 0..rows {
                let allowed = if causal { keys.min(i + r + 1) } else { keys };
                softmax_prefix(&mut p[(i + r) * tk..][..tk], allowed);
            }
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above; V holds `seen ≤ tk` rows of dv values, O rows i .. i + rows.
            unsafe {
                let (p_rows, o_rows) = (p[i * tk..].as_ptr(), o.0[i * o.1..].as_mut_ptr());
                let args = (p_rows, tk, v.0.as_ptr(), v.1, seen, o_rows, o.1);
                match (rows, dv / 16) {
                    (ROWS, 1) => values::<ROWS, 1>(args),
                    (ROWS, 2) => values::<ROWS, 2>(args),
                    (ROWS, 3) => values::<ROWS, 3>(args),
                    (ROWS, 4) => values::<ROWS, 4>(args),
                    (_, regs) => {
                        for r in 0..rows {
                            let args =
                                (p_rows.add(r * tk), tk, v.0.as_ptr(), v.1, seen, o_rows.add(r * o.1), o.1);
                            match regs {
                                1 => values::<1, 1>(args),
                                2 => values::<1, 2>(args),
                                3 => values::<1, 3>(args),
                                _ => values::<1, 4>(args),
                            }
                        }
                    }
                }
            }
            i += rows;
        }
    });
}

/// Lanes `0 .. n` of a register (`n ≤ 16`).
#[cfg(target_arch = "x86_64")]
fn first(n: usize) -> __mmask16 {
    if n >= 16 { 0xffff } else { (1u16 << n) - 1 }
}

/// `S[r][j] = (Σ_c Q[r][c]·Kᵀ[c][j]) · scale` for `R` queries and keys `0 .. seen`: blocks of
/// `KEY_REGS` registers of 16 keys, then single registers.
///
/// # Safety
/// AVX-512F; `q` points at `R` rows (`ldq` apart) of `d` values, `kt` at `d` rows of `padded`
/// values (`padded ≥ seen`, a multiple of 16), `s` at `R` rows of `tk ≥ seen` values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)] // the two operands with their strides and the output
unsafe fn scores<const R: usize>(
    q: *const f32,
    ldq: usize,
    d: usize,
    kt: *const f32,
    padded: usize,
    seen: usize,
    scale: f32,
    s: *mut f32,
    tk: usize,
) {
    let mut j = 0;
    // SAFETY: as for this function, passed on with j + 16·G ≤ padded.
    unsafe {
        while j + 16 * KEY_REGS <= seen {
            scores_block::<R, KEY_REGS>(q, ldq, d, kt.add(j), padded, scale, (s.add(j), tk, tk - j));
            j += 16 * KEY_REGS;
        }
        while j < seen {
            scores_block::<R, 1>(q, ldq, d, kt.add(j), padded, scale, (s.add(j), tk, tk - j));
            j += 16;
        }
    }
}

/// [`scores`] for `16·G` keys from `kt` (their column in `Kᵀ`), into `s` (that column of `S`,
/// rows `lds` apart; at most `room` values written per row).
///
/// # Safety
/// As [`scores`], for the block: `kt` reaches `16·G` values in each of `d` rows `padded` apart.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)] // as `scores`
unsafe fn scores_block<const R: usize, const G: usize>(
    q: *const f32,
    ldq: usize,
    d: usize,
    kt: *const f32,
    padded: usize,
    scale: f32,
    (s, lds, room): (*mut f32, usize, usize),
) {
    let mut acc = [[_mm512_setzero_ps(); G]; R];
    for c in 0..d {
        let mut keys = [_mm512_setzero_ps(); G];
        for (g, key) in keys.iter_mut().enumerate() {
            // SAFETY: row c of Kᵀ, 16 values from 16·g (the caller's promise).
            *key = unsafe { _mm512_loadu_ps(kt.add(c * padded + 16 * g)) };
        }
        for (r, acc_r) in acc.iter_mut().enumerate() {
            // SAFETY: query r's value c.
            let q_rc = _mm512_set1_ps(unsafe { *q.add(r * ldq + c) });
            for g in 0..G {
                acc_r[g] = _mm512_fmadd_ps(q_rc, keys[g], acc_r[g]);
            }
        }
    }
    let scale = _mm512_set1_ps(scale);
    for (r, acc_r) in acc.iter().enumerate() {
        for (g, &a) in acc_r.iter().enumerate() {
            let col = 16 * g;
            // SAFETY: row r of S has `room > col` values from here; the mask keeps lanes below.
            unsafe {
                _mm512_mask_storeu_ps(s.add(r * lds + col), first(room - col), _mm512_mul_ps(a, scale))
            };
        }
    }
}

/// `O[r] = Σ_{j < seen} P[r][j]·V[j]` for `R` rows, `V` regs of 16 values wide.
///
/// # Safety
/// AVX-512F; `p` points at `R` rows (`ldp` apart) of at least `seen` values, `v` at `seen` rows
/// (`ldv` apart) of `16·V` values, `o` at `R` rows (`ldo` apart) of `16·V` writable values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn values<const R: usize, const V: usize>(
    (p, ldp, v, ldv, seen, o, ldo): (*const f32, usize, *const f32, usize, usize, *mut f32, usize),
) {
    let mut acc = [[_mm512_setzero_ps(); V]; R];
    for j in 0..seen {
        let mut v_j = [_mm512_setzero_ps(); V];
        for (g, v_jg) in v_j.iter_mut().enumerate() {
            // SAFETY: row j of V, 16·V values.
            *v_jg = unsafe { _mm512_loadu_ps(v.add(j * ldv + 16 * g)) };
        }
        for (r, acc_r) in acc.iter_mut().enumerate() {
            // SAFETY: P[r][j], j < seen.
            let p_rj = _mm512_set1_ps(unsafe { *p.add(r * ldp + j) });
            for g in 0..V {
                acc_r[g] = _mm512_fmadd_ps(p_rj, v_j[g], acc_r[g]);
            }
        }
    }
    for (r, acc_r) in acc.iter().enumerate() {
        for (g, &a) in acc_r.iter().enumerate() {
            // SAFETY: row r of O, 16·V values.
            unsafe { _mm512_storeu_ps(o.add(r * ldo + 16 * g), a) };
        }
    }
}
