//! One attention head's forward and backward passes (forward: `S = Q·Kᵀ/√d`, `P = softmax(S)`
//! over the allowed keys, `O = P·V`) without a general matrix product: the shapes are small (a
//! Transformer's heads are 16 to 64 wide, over tens of steps), and `matrixmultiply` spent about as
//! long packing both operands of each product as multiplying them (`perf`: 5 % packing beside 8 % multiplying in an
//! encoder's inference).
//!
//! Instead, `Kᵀ` is laid out once per head (`d` rows of `T_k` values, a few kilobytes), and each
//! block of six queries (on AVX-512 and AVX2 alike) is multiplied straight from `Q`'s rows: query values broadcast, a
//! register of keys per lane group, several registers of keys at a time — each score a chain of
//! fused multiply-adds over `p = 0 … d − 1` in order, then scaled by `1/√d`, as
//! `matrixmultiply`'s kernel does. The scores of keys a block of queries may not see (beyond the
//! memory's length, or after the last query under a causal mask) are not computed: the softmax
//! zeroes them anyway. `O = P·V` likewise: the block's rows of `P` broadcast against `V`'s rows, a few
//! registers of columns at a time, stopping at the last key the block sees.
//!
//! One generic kernel, written once over the [`Vector`] operations it needs, compiled twice:
//! AVX-512 (16 lanes; six queries against four registers of 16 keys, 64 keys a pass, and `d_v` up
//! to 64 in one pass) and AVX2 with FMA (8 lanes; 16 ymm registers hold six queries' sums over two
//! registers each, so keys go 16 at a time and `V`'s columns in passes of 16).
//!
//! The backward pass ([`backward_values`], [`backward_scores`]) is the same two kernels again:
//! `dP = dO·Vᵀ` is a product of the scores' form (`Vᵀ` laid out once), and `dQ = dS·K/√d`,
//! `dV = Pᵀ·dO`, `dK = dSᵀ·Q/√d` of the values' form, whose left operand is read through two
//! strides — `Pᵀ` and `dSᵀ` in place, a column of `P` per row — with a range of the sum (under a
//! causal mask key `j` is seen from query `j` on) and a scale. `matrixmultiply`, which the
//! definition uses, packs both operands of every product, at these sizes about as long as it
//! multiplies them.
//!
//! [`super::attention`]'s `head_forward` through `sgemm_strided` is the definition; the test
//! `fast_heads_match_the_definition` compares the two on awkward shapes, masks included, and
//! `masked_head_backward_matches_the_definition` the backward pass.

use super::attention::softmax_prefix;
use crate::tensor::simd::{Isa, isa};
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::{
    __m256, __m512, _mm256_cmpgt_epi32, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_maskstore_ps, _mm256_mul_ps,
    _mm256_set1_epi32, _mm256_set1_ps, _mm256_setr_epi32, _mm256_setzero_ps, _mm256_storeu_ps,
    _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_mask_storeu_ps, _mm512_mul_ps, _mm512_set1_ps,
    _mm512_setzero_ps, _mm512_storeu_ps,
};
use std::cell::RefCell;

/// Queries per block, on either ISA: six — on AVX2 twelve sums of 8 keys in 16 registers (the
/// shape of the classic 6 × 16 AVX2 product kernel), on AVX-512 twenty-four sums of 16 keys in 32.
/// (AVX-512 had four: with a head 16 wide (SAKT's), `P·V` then ran four chains of dependent
/// multiply-adds, too few to hide their latency; six made the SAKT training step 6 % faster on
/// a Zen 4, see docs/benchmarks.md.)
const ROWS_PER_BLOCK: usize = 6;

/// Rows per block of the products `Mᵀ·rows` (`dV`, `dK`: [`keys_times_rows`]) when a row is one
/// register wide: a query's 16 values of `M` (one cache line) serve all of them.
const TALL_ROWS_PER_BLOCK: usize = 16;

/// The instruction set the kernel runs on here, if any: AVX-512, or AVX2 with FMA (the scores are
/// fused multiply-add chains, as `matrixmultiply`'s on these CPUs).
fn kernel_isa() -> Option<Isa> {
    #[cfg(target_arch = "x86_64")]
    match isa() {
        Isa::Avx512 => return Some(Isa::Avx512),
        Isa::Avx2 if std::arch::is_x86_feature_detected!("fma") => return Some(Isa::Avx2),
        _ => {}
    }
    None
}

/// Whether [`head_forward`] takes a head of `d`-wide queries and keys and `dv`-wide values on
/// this CPU: AVX-512 or AVX2 with FMA, `d ≥ 1` (with `d = 0` the definition's scores are 0, not
/// `0·∞`), and `d_v` a whole number of registers (16 lanes, 8 for AVX2) up to 64 (every other
/// head goes through the definition).
pub(super) fn fits(d: usize, dv: usize) -> bool {
    let lanes = lanes();
    lanes > 0 && d > 0 && dv > 0 && dv.is_multiple_of(lanes) && dv <= 64
}

/// Floats per register of the kernel's ISA ([`kernel_isa`]): 16, 8, or 0 without one.
fn lanes() -> usize {
    match kernel_isa() {
        Some(Isa::Avx512) => 16,
        Some(_) => 8,
        None => 0,
    }
}

thread_local! {
    /// `Kᵀ`, reused from head to head on each thread.
    static KEYS_T: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// The rows that a values product multiplies (`V`, `dO`, `K`, `Q`), copied next to each
    /// other; reused from head to head on each thread.
    static ROWS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `buf` made `rows` rows of `padded` values for
/// [`transpose`](crate::tensor::transpose::transpose) to fill with `cols ≤ padded` columns: only
/// the padding `cols .. padded` of each row zeroed (the kernels read whole registers), not the
/// whole buffer — at `T = 64` there is no padding, and every head had zero-filled all of `Kᵀ`.
fn transposed_rows(buf: &mut Vec<f32>, rows: usize, cols: usize, padded: usize) {
    buf.resize(rows * padded, 0.0);
    if cols < padded {
        buf.chunks_exact_mut(padded).for_each(|row| row[cols..].fill(0.0));
    }
}

/// Rows `0 .. rows` of a block (`cols` values each, `ld` apart) copied next to each other into
/// `out`, for the values kernel to read: in place, a head's rows in a `[K | V]` buffer lie 2·E
/// values apart (1 KiB at E = 128), so that the rows of one head share a few sets of the L1 cache
/// and push each other out (`perf annotate`: the kernel's load of a row of `V` was the most
/// sampled instruction of the forward pass's values, the loads of the backward's rows too).
/// (Copied with `copy_floats`: glibc's `memcpy` crawls on these short rows on the AMD EPYC.) A
/// projection written a head per block needs no copy ([`adjacent_rows`]).
fn gather_rows((src, ld): Block<'_>, rows: usize, cols: usize, out: &mut Vec<f32>) {
    out.resize(rows * cols, 0.0);
    for (r, row) in out.chunks_exact_mut(cols).enumerate() {
        crate::tensor::parallel::copy_floats(row, &src[r * ld..][..cols]);
    }
}

/// Rows `0 .. rows` of a block (`cols` values each, `ld` apart) next to each other: the block
/// itself where they already are (`ld = cols`: a projection written a head per block), else
/// copied into `out` ([`gather_rows`]).
fn adjacent_rows<'a>((src, ld): Block<'a>, rows: usize, cols: usize, out: &'a mut Vec<f32>) -> &'a [f32] {
    if ld == cols {
        return &src[..rows * cols];
    }
    gather_rows((src, ld), rows, cols, out);
    &out[..rows * cols]
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
    assert!(
        within(q, tq, d) && within(k, tk, d) && within(v, tk, dv),
        "attention head kernel: a block past its slice"
    );
    assert!(
        within((o.0, o.1), tq, dv) && Some(p.len()) == tq.checked_mul(tk) && keys <= tk,
        "attention head kernel: outputs"
    );
    assert!(tk > 0, "attention head kernel: no keys"); // as the definition (every caller has T_k ≥ 1)
    let padded = tk.div_ceil(16) * 16; // whole registers of either width
    ROWS.with_borrow_mut(|v_rows| {
        KEYS_T.with_borrow_mut(|kt| {
            let v_rows = adjacent_rows(v, keys, dv, v_rows); // the values kernel reads rows 0 .. seen ≤ keys
            transposed_rows(kt, d, tk, padded);
            // Kᵀ (d rows of `padded` ≥ tk) for the scores kernel.
            crate::tensor::transpose::transpose((tk, d), (k.0, k.1), (kt, padded));
            let scale = 1.0 / (d as f32).sqrt();
            let block_rows = ROWS_PER_BLOCK;
            let mut i = 0;
            while i < tq {
                let rows = block_rows.min(tq - i);
                // Keys this block of queries sees: 0 .. seen (the softmax zeroes the rest).
                let seen = if causal { keys.min(i + rows) } else { keys };
                // SAFETY: `fits` found the ISA; rows i .. i + rows of Q (d values each) and of P (tk)
                // are inside their slices (asserted above), Kᵀ holds d rows of `padded ≥ seen`
                // values, padded a multiple of either register width.
                unsafe {
                    let (q_rows, p_rows) = (q.0[i * q.1..].as_ptr(), p[i * tk..].as_mut_ptr());
                    let args = (rows, q_rows, q.1, d, kt.as_ptr(), padded, seen, scale, p_rows, tk);
                    scores(args);
                }
                for r in 0..rows {
                    let allowed = if causal { keys.min(i + r + 1) } else { keys };
                    softmax_prefix(&mut p[(i + r) * tk..][..tk], allowed);
                }
                // SAFETY: as above; V's adjacent rows hold `keys ≥ seen` rows of dv values (a whole number
                // of registers), O rows i .. i + rows.
                unsafe {
                    let (p_rows, o_rows) = (p[i * tk..].as_ptr(), o.0[i * o.1..].as_mut_ptr());
                    let args =
                        (rows, p_rows, (tk, 1), (0, seen), (v_rows.as_ptr(), dv), dv, 1.0, (o_rows, o.1));
                    values(args, false);
                }
                i += rows;
            }
        })
    });
}

/// A block of a matrix: its slice from the first value, and the distance between its rows.
type Block<'a> = (&'a [f32], usize);

/// Rows 0 .. rows of `cols` values, `ld` apart, inside the slice (no product may wrap).
fn within((s, ld): (&[f32], usize), rows: usize, cols: usize) -> bool {
    rows == 0
        || (rows - 1).checked_mul(ld).and_then(|x| x.checked_add(cols)).is_some_and(|end| end <= s.len())
}

/// Whether [`backward_values`] and [`backward_scores`] take a head of `d`-wide queries and keys
/// and `d_v`-wide values: both widths whole registers up to 64 (each is the width of the rows of
/// some product's result: `dQ`, `dK` are `d` wide, `dV` is `d_v` wide).
pub(super) fn fits_backward(d: usize, dv: usize) -> bool {
    fits(d, dv) && fits(dv, d)
}

/// The head's backward pass, first part: `dV = Pᵀ·dO` for the keys some query sees, `dV = 0`
/// for the rest — the same as `attention::head_backward_values_masked`, without general
/// products: blocks of keys (`Pᵀ` read in place, a column of `P` per key) against the rows of
/// `dO` from the first query that may see them. (`dV` and `dK` are two parts because in a `[K |
/// V]` buffer their rows interleave.) The caller has checked [`fits_backward`].
pub(super) fn backward_values(
    (tq, tk, dv): (usize, usize, usize),
    (causal, keys): (bool, usize),
    p: &[f32],
    d_o: (&[f32], usize),
    d_v: (&mut [f32], usize),
) {
    assert!(fits(1, dv), "attention head kernel: d_v = {dv} (or this CPU) is not for it");
    assert!(
        Some(p.len()) == tq.checked_mul(tk)
            && keys <= tk
            && within(d_o, tq, dv)
            && within((d_v.0, d_v.1), tk, dv),
        "attention head kernel: a block past its slice"
    );
    ROWS.with_borrow_mut(|d_o_rows| {
        let d_o_rows = adjacent_rows(d_o, tq, dv, d_o_rows);
        keys_times_rows((tq, tk, dv), (causal, keys), p, d_o_rows, 1.0, d_v);
    });
}

/// `out[j] = scale · Σ_i M[i][j]·rows[i]` for the keys `j` some query sees (from the first query
/// that may see key `j`: under a causal mask, query `j`), `out[j] = 0` for the others: `dV = Pᵀ·dO`
/// (`M = P`) and `dK = dSᵀ·Q/√d` (`M = dS`), with `Mᵀ` read in place (a column of `M` per key) and
/// `rows` the `T_q` rows of `width` values next to each other ([`adjacent_rows`]).
fn keys_times_rows(
    (tq, tk, width): (usize, usize, usize),
    (causal, keys): (bool, usize),
    m: &[f32],
    rows: &[f32],
    scale: f32,
    out: (&mut [f32], usize),
) {
    assert!(
        Some(m.len()) == tq.checked_mul(tk)
            && Some(rows.len()) == tq.checked_mul(width)
            && keys <= tk
            && within((out.0, out.1), tk, width),
        "attention head kernel: a block past its slice"
    );
    let seen = if causal { keys.min(tq) } else { keys }; // key j is first seen by query j
    // Rows one register wide (SAKT's 16-wide heads with AVX-512) go sixteen keys at a time: each
    // query's line of M (16 values: Mᵀ's column) is then read once per 16 keys, not per 6.
    let tall = width == lanes();
    let block = if tall { TALL_ROWS_PER_BLOCK } else { ROWS_PER_BLOCK };
    let mut j = 0;
    while j < seen {
        let n = block.min(seen - j);
        let from = if causal { j } else { 0 }; // the first query that may see key j
        // SAFETY: the callers checked `fits` (the ISA, width a whole number of registers);
        // Mᵀ(r, i) = M[i][j + r] for r < n, i < T_q is inside M (T_q × T_k values), `rows` holds
        // T_q rows of `width` values, rows j .. j + n ≤ T_k of `out` are inside its slice
        // (asserted above).
        unsafe {
            let (a, o) = (m[j..].as_ptr(), out.0[j * out.1..].as_mut_ptr());
            let args = (n, a, (1, tk), (from, tq), (rows.as_ptr(), width), width, scale, (o, out.1));
            values(args, tall);
        }
        j += n;
    }
    for row in seen..tk {
        out.0[row * out.1..][..width].fill(0.0);
    }
}

/// The head's backward pass, second part: `dP = dO·Vᵀ` (as the forward pass's scores, `Vᵀ` laid
/// out once), `dS = P ⊙ (dP − Σ_j P_j·dP_j)` over the keys each query sees and 0 elsewhere (in
/// `ds`, `[T_q, T_k]` scratch), `dQ = dS·K/√d` for each block of queries over the keys it sees,
/// then `dK = dSᵀ·Q/√d` for each block of keys over the queries that may see them (`dK = 0` for
/// keys no query sees) — the same as `attention::head_backward_scores_masked`. The caller has
/// checked [`fits_backward`].
#[allow(clippy::too_many_arguments)] // the head's operands and their gradients, as the definition's
pub(super) fn backward_scores(
    (tq, tk, d, dv): (usize, usize, usize, usize),
    (causal, keys): (bool, usize),
    (q, k, v): (Block<'_>, Block<'_>, Block<'_>),
    p: &[f32],
    d_o: (&[f32], usize),
    ds: &mut [f32],
    dq: (&mut [f32], usize),
    dk: (&mut [f32], usize),
) {
    assert!(fits_backward(d, dv), "attention head kernel: d = {d}, d_v = {dv} (or this CPU) is not for it");
    assert!(
        within(q, tq, d) && within(k, tk, d) && within(v, tk, dv) && within(d_o, tq, dv),
        "attention head kernel: a block past its slice"
    );
    assert!(
        within((dq.0, dq.1), tq, d)
            && within((dk.0, dk.1), tk, d)
            && Some(p.len()) == tq.checked_mul(tk)
            && Some(ds.len()) == tq.checked_mul(tk)
            && keys <= tk,
        "attention head kernel: outputs"
    );
    let scale = 1.0 / (d as f32).sqrt();
    let block = ROWS_PER_BLOCK;
    let padded = tk.div_ceil(16) * 16;
    ROWS.with_borrow_mut(|rows_copy| {
        KEYS_T.with_borrow_mut(|vt| {
            let k_rows = adjacent_rows(k, keys, d, rows_copy); // dQ's sums read rows 0 .. seen ≤ keys of K
            transposed_rows(vt, dv, tk, padded);
            // Vᵀ (d_v rows of `padded` ≥ tk), as Kᵀ in `head_forward`.
            crate::tensor::transpose::transpose((tk, dv), (v.0, v.1), (vt, padded));
            let mut i = 0;
            while i < tq {
                let rows = block.min(tq - i);
                let seen = if causal { keys.min(i + rows) } else { keys }; // keys this block sees
                // SAFETY: `fits` found the ISA; rows i .. i + rows of dO (d_v values) and of dS (T_k)
                // are inside their slices (asserted above), Vᵀ holds d_v rows of `padded ≥ seen`.
                unsafe {
                    let (d_o_rows, ds_rows) = (d_o.0[i * d_o.1..].as_ptr(), ds[i * tk..].as_mut_ptr());
                    scores((rows, d_o_rows, d_o.1, dv, vt.as_ptr(), padded, seen, 1.0, ds_rows, tk));
                }
                for r in i..i + rows {
                    let allowed = if causal { keys.min(r + 1) } else { keys };
                    let (ds_row, p_row) = (&mut ds[r * tk..][..tk], &p[r * tk..][..allowed]);
                    super::attention::softmax_backward_row(&mut ds_row[..allowed], p_row);
                    ds_row[allowed..].fill(0.0); // P is 0 there, and so is dS
                }
                // SAFETY: as above; rows i .. i + rows of dS (T_k ≥ seen values, tk apart), K's adjacent rows
                // hold `keys ≥ seen` rows of d values (a whole number of registers), rows i .. of dQ.
                unsafe {
                    let (a, out) = (ds[i * tk..].as_ptr(), dq.0[i * dq.1..].as_mut_ptr());
                    let args = (rows, a, (tk, 1), (0, seen), (k_rows.as_ptr(), d), d, scale, (out, dq.1));
                    values(args, false);
                }
                i += rows;
            }
            let q_rows = adjacent_rows(q, tq, d, rows_copy);
            keys_times_rows((tq, tk, d), (causal, keys), ds, q_rows, scale, dk);
        })
    });
}

/// [`scores_in`]'s operands: `(rows, q, ldq, d, kt, padded, seen, scale, s, tk)`.
type ScoresArgs = (usize, *const f32, usize, usize, *const f32, usize, usize, f32, *mut f32, usize);
/// [`values_in`]'s operands: `(rows, a, (rs, cs), (from, to), (b, ldb), width, scale, (o, ldo))`.
type ValuesArgs =
    (usize, *const f32, (usize, usize), (usize, usize), (*const f32, usize), usize, f32, (*mut f32, usize));

/// [`scores_in`] on the kernel's ISA.
///
/// # Safety
/// [`kernel_isa`] is `Some`; the pointers as [`scores_in`] needs them.
unsafe fn scores(args: ScoresArgs) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the ISA is the CPU's (the caller's promise), the operands the caller's.
    unsafe {
        match kernel_isa() {
            Some(Isa::Avx512) => scores_avx512(args),
            Some(Isa::Avx2) => scores_avx2(args),
            _ => unreachable!("attention head kernel without an ISA"),
        }
    }
}

/// [`values_in`] on the kernel's ISA — or, `tall`, [`values_tall_in`] (rows one register wide,
/// up to [`TALL_ROWS_PER_BLOCK`] of them).
///
/// # Safety
/// As [`scores`], for [`values_in`] (or [`values_tall_in`]).
unsafe fn values(args: ValuesArgs, tall: bool) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: as for `scores`.
    unsafe {
        match (kernel_isa(), tall) {
            (Some(Isa::Avx512), false) => values_avx512(args),
            (Some(Isa::Avx512), true) => values_tall_avx512(args),
            (Some(Isa::Avx2), false) => values_avx2(args),
            (Some(Isa::Avx2), true) => values_tall_avx2(args),
            _ => unreachable!("attention head kernel without an ISA"),
        }
    }
}

/// [`values_tall_in`] compiled for AVX-512: up to sixteen rows of one register.
///
/// # Safety
/// AVX-512F; as [`values_tall_in`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn values_tall_avx512(args: ValuesArgs) {
    // SAFETY: the caller's promises.
    unsafe { values_tall_in::<Avx512>(args) }
}

/// [`values_tall_in`] compiled for AVX2 with FMA: up to sixteen rows of one register.
///
/// # Safety
/// AVX2 and FMA; as [`values_tall_in`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn values_tall_avx2(args: ValuesArgs) {
    // SAFETY: the caller's promises.
    unsafe { values_tall_in::<Avx2>(args) }
}

/// [`scores_in`] compiled for AVX-512: six queries, four registers of 16 keys per pass.
///
/// # Safety
/// AVX-512F; as [`scores_in`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn scores_avx512(args: ScoresArgs) {
    // SAFETY: the caller's promises.
    unsafe { scores_in::<Avx512, 6, 4>(args) }
}

/// [`scores_in`] compiled for AVX2 with FMA: six queries, two registers of 8 keys per pass.
///
/// # Safety
/// AVX2 and FMA; as [`scores_in`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn scores_avx2(args: ScoresArgs) {
    // SAFETY: the caller's promises.
    unsafe { scores_in::<Avx2, 6, 2>(args) }
}

/// [`values_in`] compiled for AVX-512: six rows, up to four registers (64 columns) per pass.
///
/// # Safety
/// AVX-512F; as [`values_in`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn values_avx512(args: ValuesArgs) {
    // SAFETY: the caller's promises.
    unsafe { values_in::<Avx512, 6, 4>(args) }
}

/// [`values_in`] compiled for AVX2 with FMA: six rows, up to two registers (16 columns) per pass.
///
/// # Safety
/// AVX2 and FMA; as [`values_in`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn values_avx2(args: ValuesArgs) {
    // SAFETY: the caller's promises.
    unsafe { values_in::<Avx2, 6, 2>(args) }
}

/// `with_tall_rows!(rows, R => body)`: as `with_rows!`, for 1 to 16 rows.
macro_rules! with_tall_rows {
    ($rows:expr, $r:ident => $body:expr) => {
        with_rows!(@arms $rows, $r, $body, 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16)
    };
}

/// `with_rows!(rows, R => body)`: `body` with `R` a constant equal to `rows` (1 to 6: a block's
/// queries, at most six), so that each block size gets its own unrolled kernel.
macro_rules! with_rows {
    ($rows:expr, $r:ident => $body:expr) => {
        with_rows!(@arms $rows, $r, $body, 1 2 3 4 5 6)
    };
    (@arms $rows:expr, $r:ident, $body:expr, $($n:literal)+) => {
        match $rows {
            $($n => {
                const $r: usize = $n;
                $body
            })+
            rows => unreachable!("a block of {rows} rows"),
        }
    };
}

/// [`values_in`] for rows one register wide (`width = W::LANES`), up to
/// [`TALL_ROWS_PER_BLOCK`] of them at a time: sixteen sums in registers instead of six. The same
/// chain of multiply-adds for each value, so the same bits.
///
/// # Safety
/// As [`values_in`], with `width = W::LANES` and `rows ≤ TALL_ROWS_PER_BLOCK`.
#[inline(always)]
unsafe fn values_tall_in<W: Vector>(args: ValuesArgs) {
    let (rows, a, strides, range, b, width, scale, o) = args;
    debug_assert!(width == W::LANES && (1..=TALL_ROWS_PER_BLOCK).contains(&rows), "{rows} rows of {width}");
    let args = (a, strides, range, b, scale, o);
    // SAFETY: the caller's promises, for `rows` rows of one register.
    unsafe {
        with_tall_rows!(rows, ROWS => values_block::<W, ROWS, 1>(args));
    }
}

/// `S[r][j] = (Σ_c Q[r][c]·Kᵀ[c][j]) · scale` for `rows ≤ R` queries (from `q`, `ldq` apart)
/// and keys `0 .. seen`: blocks of `G` registers of keys, then single registers.
///
/// # Safety
/// The CPU has `W`'s ISA; `q` points at `rows` rows of `d` values, `kt` at `d` rows of `padded`
/// values (`padded ≥ seen`, a multiple of `W::LANES`), `s` at `rows` rows of `tk ≥ seen` values.
#[inline(always)]
unsafe fn scores_in<W: Vector, const R: usize, const G: usize>(
    (rows, q, ldq, d, kt, padded, seen, scale, s, tk): ScoresArgs,
) {
    debug_assert!((1..=R).contains(&rows), "a block of 1 ..= {R} queries, not {rows}");
    // SAFETY: the caller's promises, passed on for each block with j + G·LANES ≤ padded. (No
    // closures here: a closure is a function of its own, compiled without the caller's ISA.)
    unsafe {
        let mut j = 0;
        while j < seen {
            let wide = j + G * W::LANES <= seen;
            let keys = (d, kt.add(j), padded, scale, (s.add(j), tk, tk - j));
            // A block of as many queries as are left (the last block of T_q = 64 has four): one
            // at a time they were a chain of dependent multiply-adds each.
            with_rows!(rows, ROWS => match wide {
                true => scores_block::<W, ROWS, G>(q, ldq, keys),
                false => scores_block::<W, ROWS, 1>(q, ldq, keys),
            });
            j += if wide { G * W::LANES } else { W::LANES };
        }
    }
}

/// [`scores_in`] for `R` queries and `G·LANES` keys from `kt` (their column in `Kᵀ`), into `s`
/// (that column of `S`, rows `lds` apart; at most `room` values written per row).
///
/// # Safety
/// As [`scores_in`], for the block: `kt` reaches `G·LANES` values in each of `d` rows `padded`
/// apart.
#[inline(always)]
unsafe fn scores_block<W: Vector, const R: usize, const G: usize>(
    q: *const f32,
    ldq: usize,
    (d, kt, padded, scale, (s, lds, room)): (usize, *const f32, usize, f32, (*mut f32, usize, usize)),
) {
    // SAFETY: the caller's promises: row c of Kᵀ, G·LANES values; query r's value c; row r of S
    // with `room > col` values from col (the store keeps to them).
    unsafe {
        let mut acc = [[W::zero(); G]; R];
        for c in 0..d {
            let mut keys = [W::zero(); G];
            for (g, key) in keys.iter_mut().enumerate() {
                *key = W::load(kt.add(c * padded + W::LANES * g));
            }
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let q_rc = W::splat(*q.add(r * ldq + c));
                for g in 0..G {
                    acc_r[g] = W::mul_add(q_rc, keys[g], acc_r[g]);
                }
            }
        }
        let scale = W::splat(scale);
        for (r, acc_r) in acc.iter().enumerate() {
            for (g, &a) in acc_r.iter().enumerate() {
                let col = W::LANES * g;
                W::mul(a, scale).store_first(s.add(r * lds + col), room - col);
            }
        }
    }
}

/// `O[r] = scale · Σ_{from ≤ j < to} A(r, j)·B[j]` for `rows ≤ R` rows, in passes of up to `C`
/// registers of columns, where `A(r, j) = a[r·rs + j·cs]`: the forward pass's `O = P·V` (`A = P`,
/// `rs = T_k`, `cs = 1`, `j < seen`, scale 1, which changes no bits), and the backward pass's
/// `dQ = dS·K/√d`, `dV = Pᵀ·dO` and `dK = dSᵀ·Q/√d` (`Pᵀ` and `dSᵀ` read in place: `rs = 1`,
/// `cs = T_k`).
///
/// # Safety
/// The CPU has `W`'s ISA; `A(r, j)` readable for `r < rows`, `from ≤ j < to`; `b` at rows `from
/// .. to` (`ldb` apart) of `width` values, `o` at `rows` rows (`ldo` apart) of `width` writable
/// values, `width` a multiple of `W::LANES`.
#[inline(always)]
unsafe fn values_in<W: Vector, const R: usize, const C: usize>(
    (rows, a, strides, range, (b, ldb), width, scale, (o, ldo)): ValuesArgs,
) {
    debug_assert!(
        width.is_multiple_of(W::LANES) && C <= 4,
        "width {width} in whole registers, passes of ≤ 4"
    );
    debug_assert!((1..=R).contains(&rows), "a block of 1 ..= {R} rows, not {rows}");
    // SAFETY: the caller's promises; each pass covers columns col .. col + regs·LANES ≤ width.
    unsafe {
        let mut col = 0;
        while col < width {
            let regs = ((width - col) / W::LANES).min(C);
            let args = (a, strides, range, (b.add(col), ldb), scale, (o.add(col), ldo));
            with_rows!(rows, ROWS => match regs {
                1 => values_block::<W, ROWS, 1>(args),
                2 => values_block::<W, ROWS, 2>(args),
                3 => values_block::<W, ROWS, 3>(args),
                4 => values_block::<W, ROWS, 4>(args),
                _ => unreachable!("a pass of {regs} registers"), // 1 ≤ regs ≤ C ≤ 4
            });
            col += regs * W::LANES;
        }
    }
}

/// [`values_in`] for `R` rows, `V` registers wide.
///
/// # Safety
/// As [`values_in`], for `R` rows and `V·LANES` columns.
#[allow(clippy::type_complexity)] // values_in's operands less the width
#[inline(always)]
unsafe fn values_block<W: Vector, const R: usize, const V: usize>(
    (a, (rs, cs), (from, to), (b, ldb), scale, (o, ldo)): (
        *const f32,
        (usize, usize),
        (usize, usize),
        (*const f32, usize),
        f32,
        (*mut f32, usize),
    ),
) {
    // SAFETY: the caller's promises: row j of B, V·LANES values; A(r, j) with from ≤ j < to; row
    // r of O.
    unsafe {
        let mut acc = [[W::zero(); V]; R];
        for j in from..to {
            let mut b_j = [W::zero(); V];
            for (g, b_jg) in b_j.iter_mut().enumerate() {
                *b_jg = W::load(b.add(j * ldb + W::LANES * g));
            }
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let a_rj = W::splat(*a.add(r * rs + j * cs));
                for g in 0..V {
                    acc_r[g] = W::mul_add(a_rj, b_j[g], acc_r[g]);
                }
            }
        }
        let scale = W::splat(scale);
        for (r, acc_r) in acc.iter().enumerate() {
            for (g, &acc_rg) in acc_r.iter().enumerate() {
                W::mul(acc_rg, scale).store(o.add(r * ldo + W::LANES * g));
            }
        }
    }
}

/// The register operations the kernel is written in, for one instruction set. Every method is
/// `#[inline(always)]`, so that inside a function compiled for the ISA it becomes the one
/// instruction.
///
/// # Safety
/// Each method needs the CPU to support the type's ISA, and pointers valid for the lanes touched.
trait Vector: Copy {
    /// Floats per register.
    const LANES: usize;
    /// All lanes 0.
    unsafe fn zero() -> Self;
    /// `LANES` values from `p`.
    unsafe fn load(p: *const f32) -> Self;
    /// `x` in every lane.
    unsafe fn splat(x: f32) -> Self;
    /// `a·b + c`, rounded once.
    unsafe fn mul_add(a: Self, b: Self, c: Self) -> Self;
    /// `a·b`.
    unsafe fn mul(a: Self, b: Self) -> Self;
    /// All lanes to `p`.
    unsafe fn store(self, p: *mut f32);
    /// Lanes `0 .. min(n, LANES)` to `p`.
    unsafe fn store_first(self, p: *mut f32, n: usize);
}

/// An AVX-512 register of 16 floats.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Avx512(__m512);

#[cfg(target_arch = "x86_64")]
impl Vector for Avx512 {
    const LANES: usize = 16;
    #[inline(always)]
    unsafe fn zero() -> Self {
        // SAFETY: AVX-512F (the trait's contract).
        Self(unsafe { _mm512_setzero_ps() })
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        // SAFETY: AVX-512F, 16 values at p (the trait's contract).
        Self(unsafe { _mm512_loadu_ps(p) })
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        // SAFETY: AVX-512F.
        Self(unsafe { _mm512_set1_ps(x) })
    }
    #[inline(always)]
    unsafe fn mul_add(a: Self, b: Self, c: Self) -> Self {
        // SAFETY: AVX-512F.
        Self(unsafe { _mm512_fmadd_ps(a.0, b.0, c.0) })
    }
    #[inline(always)]
    unsafe fn mul(a: Self, b: Self) -> Self {
        // SAFETY: AVX-512F.
        Self(unsafe { _mm512_mul_ps(a.0, b.0) })
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        // SAFETY: AVX-512F, 16 writable values at p.
        unsafe { _mm512_storeu_ps(p, self.0) }
    }
    #[inline(always)]
    unsafe fn store_first(self, p: *mut f32, n: usize) {
        let mask = if n >= 16 { 0xffff } else { (1u16 << n) - 1 };
        // SAFETY: AVX-512F; the mask keeps the store to lanes 0 .. n, writable at p.
        unsafe { _mm512_mask_storeu_ps(p, mask, self.0) }
    }
}

/// An AVX2 register of 8 floats (with FMA).
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Avx2(__m256);

#[cfg(target_arch = "x86_64")]
impl Vector for Avx2 {
    const LANES: usize = 8;
    #[inline(always)]
    unsafe fn zero() -> Self {
        // SAFETY: AVX (the trait's contract: AVX2 and FMA).
        Self(unsafe { _mm256_setzero_ps() })
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        // SAFETY: AVX, 8 values at p.
        Self(unsafe { _mm256_loadu_ps(p) })
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        // SAFETY: AVX.
        Self(unsafe { _mm256_set1_ps(x) })
    }
    #[inline(always)]
    unsafe fn mul_add(a: Self, b: Self, c: Self) -> Self {
        // SAFETY: FMA.
        Self(unsafe { _mm256_fmadd_ps(a.0, b.0, c.0) })
    }
    #[inline(always)]
    unsafe fn mul(a: Self, b: Self) -> Self {
        // SAFETY: AVX.
        Self(unsafe { _mm256_mul_ps(a.0, b.0) })
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        // SAFETY: AVX, 8 writable values at p.
        unsafe { _mm256_storeu_ps(p, self.0) }
    }
    #[inline(always)]
    unsafe fn store_first(self, p: *mut f32, n: usize) {
        // A whole register with a plain store: AMD's Zen 3 takes `vmaskmovps` to memory as a
        // string of micro-operations (`perf annotate`: the masked stores were about 30 % of the
        // scores' time in an encoder's inference when every store was masked).
        if n >= 8 {
            // SAFETY: AVX, 8 writable values at p (n ≥ 8 of them).
            return unsafe { _mm256_storeu_ps(p, self.0) };
        }
        // SAFETY: AVX2; lane i is stored where i < n, writable at p.
        unsafe {
            let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), lane);
            _mm256_maskstore_ps(p, mask, self.0)
        }
    }
}
