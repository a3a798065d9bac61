//! Scalar and row-wise functions that several layers and losses share, each written once:
//! the logistic sigmoid, softmax and log-softmax over the feature axis, the error function, and
//! the `(outer, features, inner)` split of a `[N, F, …]` shape.
//!
//! Softmax and log-softmax subtract the row's maximum `m` before exponentiating:
//! `softmax(x)_i = e^(x_i − m) / Σ_j e^(x_j − m)` is the same number mathematically, and every
//! exponent is ≤ 0, so logits of ±1000 give finite results. Log-softmax is computed directly,
//! `x_i − m − log Σ_j e^(x_j − m)`, never as `log(softmax(x))`, whose `log(0)` would be `−∞`.

/// `σ(x) = 1 / (1 + e^(−x))`, written so that neither branch overflows.
///
/// ```
/// use backprop::tensor::math::sigmoid;
/// assert_eq!(sigmoid(0.0), 0.5);
/// assert!(sigmoid(-1000.0) == 0.0 && sigmoid(1000.0) == 1.0);
/// ```
pub fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// How `a·b + c` is evaluated in the element-wise functions below: rounded twice ([`Separate`],
/// the definition, what every CPU computes alike) or once ([`Fused`], one FMA instruction).
///
/// The vectorised loops of the recurrent cells, GELU and softmax are generic over it:
/// `wide_fused!` compiles them with [`Fused`] where the CPU has FMA (the AVX2 + FMA and AVX-512 variants, which
/// then agree bit for bit) and with [`Separate`] for the baseline, where `f32::mul_add` would be a
/// library call. An FMA does a multiply and an add in one instruction, so a polynomial in Horner
/// form takes half the instructions: the LSTM's gate loops ran 1.6× as fast with it.
pub(crate) trait MulAdd {
    /// `a·b + c`.
    fn mul_add(a: f32, b: f32, c: f32) -> f32;
}

/// `a·b + c` as written: the product rounded, then the sum.
pub(crate) struct Separate;

impl MulAdd for Separate {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }
}

/// `a·b + c` rounded once (`f32::mul_add`): compiled to one FMA instruction where the enclosing
/// function enables the `fma` target feature, a (correct but slow) library call where it does not.
pub(crate) struct Fused;

impl MulAdd for Fused {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
}

/// `eˣ` in a form the compiler can vectorise (no library call, no branch): the recurrent cells
/// evaluate millions of gates per batch, and calling `f32::exp` for each was half their time.
/// Within a few ulps of `f32::exp` (tested); the definition is `f32::exp`.
///
/// Range reduction `x = n·ln 2 + r` with `|r| ≤ ln 2 / 2`, a degree-6 polynomial for `eʳ` (the
/// Cephes `expf` coefficients), then `2ⁿ` built from its exponent bits. Inputs are clamped to
/// `[−87.34, 88.3]`, where the result is a normal float: `exp_fast(−∞)` is 1.2·10⁻³⁸, not 0, and
/// `exp_fast(∞)` 2.2·10³⁸, not ∞ (a caller that multiplies the result by a large value zeroes
/// it itself below the range, as GELU's derivative does); NaN stays NaN.
#[inline(always)]
pub fn exp_fast(x: f32) -> f32 {
    exp_with::<Separate>(x)
}

/// `ln` of f32's smallest normal value: [`exp_fast`] clamps its argument from below here (its
/// result stays a normal float), and `e^x` below it is a subnormal.
pub(crate) const EXP_SMALLEST_NORMAL_ARG: f32 = -87.336_54; // the f32 just above ln(f32::MIN_POSITIVE)

/// [`exp_fast`] with its multiply-adds evaluated by `M`.
#[inline(always)]
pub(crate) fn exp_with<M: MulAdd>(x: f32) -> f32 {
    let (e_r_minus_1, two_n) = exp_reduced::<M>(x);
    (e_r_minus_1 + 1.0) * two_n
}

/// `eˣ − 1` as [`exp_fast`] computes `eˣ`, without the cancellation of subtracting 1 from it near
/// `x = 0`: `2ⁿ·(eʳ − 1) + (2ⁿ − 1)`, where `eʳ − 1` comes from the polynomial directly (for
/// `|x| < ln 2 / 2`, `n = 0` and this is that polynomial alone).
#[inline(always)]
fn expm1_with<M: MulAdd>(x: f32) -> f32 {
    let (e_r_minus_1, two_n) = exp_reduced::<M>(x);
    M::mul_add(e_r_minus_1, two_n, two_n - 1.0)
}

/// The shared part of [`exp_fast`] and `expm1_with`: `(eʳ − 1, 2ⁿ)` with `x = n·ln 2 + r`.
/// With [`Separate`], each `M::mul_add(a, b, c)` is `a * b + c`: the plain arithmetic.
#[inline(always)]
fn exp_reduced<M: MulAdd>(x: f32) -> (f32, f32) {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4; // ln 2 split in two, so that n·LN2_HI is exact
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(EXP_SMALLEST_NORMAL_ARG, 88.3);
    // n = round(x·log₂e) by the add-and-subtract trick (1.5·2²³ pushes the fraction out of the
    // mantissa): plain SSE2 arithmetic, where `round` or `floor` would be a library call that
    // keeps the loop from vectorising on a baseline x86-64 build.
    const ROUND: f32 = 12_582_912.0;
    let shifted = M::mul_add(x, LOG2_E, ROUND);
    let n = shifted - ROUND;
    let r = M::mul_add(-n, LN2_LO, M::mul_add(-n, LN2_HI, x)); // r = x − n·LN2_HI − n·LN2_LO
    let mut p: f32 = 1.987_569_1e-4;
    p = M::mul_add(p, r, 1.398_199_9e-3);
    p = M::mul_add(p, r, 8.333_452e-3);
    p = M::mul_add(p, r, 4.166_579_6e-2);
    p = M::mul_add(p, r, 1.666_666_5e-1);
    p = M::mul_add(p, r, 0.5); // Cephes: 5.0000001201e-1, which is 0.5 in f32
    let e_r_minus_1 = M::mul_add(p * r, r, r); // p·r² + r
    // n as an integer: `shifted` has ROUND's exponent, so its bits minus ROUND's are n. (Not
    // `n as i32`: Rust's saturating float-to-int cast has no vector instruction, and the compiler
    // then converted each lane on its own — a third of the LSTM's forward pass.)
    let n_int = shifted.to_bits() as i32 - ROUND.to_bits() as i32;
    let two_n = f32::from_bits(((n_int + 127) as u32) << 23);
    (e_r_minus_1, two_n)
}

/// `σ(x)` through [`exp_fast`] (vectorisable); within a few ulps of [`sigmoid`] above `x = −87`.
/// Below about −88.3 (where `σ` falls under f32's normal range) it gives `1/exp_fast(88.3)`,
/// 4.5·10⁻³⁹, where [`sigmoid`] gives the subnormal value or 0.
#[inline(always)]
pub fn sigmoid_fast(x: f32) -> f32 {
    sigmoid_with::<Separate>(x)
}

/// [`sigmoid_fast`] with its multiply-adds evaluated by `M`.
#[inline(always)]
pub(crate) fn sigmoid_with<M: MulAdd>(x: f32) -> f32 {
    1.0 / (1.0 + exp_with::<M>(-x))
}

/// `tanh(x)` through `eˣ − 1` (`expm1_with`) (vectorisable): `(e^(2x) − 1) / (e^(2x) − 1 + 2)`, which keeps
/// its relative accuracy near 0 because `e^(2x) − 1` is computed without cancellation. Within
/// 3e-7 of `f32::tanh`. (It replaced `1 − 2/(e^(2x) + 1)` with a series for `|x| < 1/4`, which
/// evaluated both forms for every value: about 13 more operations per `tanh` in the gate loops.)
#[inline(always)]
pub fn tanh_fast(x: f32) -> f32 {
    tanh_with::<Separate>(x)
}

/// [`tanh_fast`] with its multiply-adds evaluated by `M`.
#[inline(always)]
pub(crate) fn tanh_with<M: MulAdd>(x: f32) -> f32 {
    let e = expm1_with::<M>(2.0 * x);
    e / (e + 2.0)
}

/// `Σ_j term(a[j], b[j])` over `a`'s length in `f64`, in 8 running sums (sum `l` takes every
/// `j ≡ l mod 8`) added pairwise at the end: the same `f64` sum up to its rounding order, without
/// the single chain of dependent additions (4 cycles each) that a plain `.sum()` is — which was
/// most of a layer norm's time (and of batch norm's, and of a 1,000-class cross-entropy's). Index loops over the slices themselves, so that the compiler sees
/// eight independent lanes inside `wide!`'s context: through an index closure, or through
/// iterator adapters compiled out of line, the same sums had run one `vaddsd` at a time (8 % of
/// an encoder's inference).
#[allow(clippy::needless_range_loop)] // index loops on purpose: see tensor::simd
#[inline(always)]
pub(crate) fn sum_f64(a: &[f32], b: &[f32], term: impl Fn(f32, f32) -> f64) -> f64 {
    let (n, blocks) = (a.len(), a.len() / 8);
    let (whole_a, whole_b) = (&a[..blocks * 8], &b[..blocks * 8]);
    let mut lanes = [0.0f64; 8];
    for block in 0..blocks {
        for l in 0..8 {
            lanes[l] += term(whole_a[block * 8 + l], whole_b[block * 8 + l]);
        }
    }
    let mut tail = 0.0f64;
    for j in blocks * 8..n {
        tail += term(a[j], b[j]);
    }
    ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5])) + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7])) + tail
}

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::{__m128, __m256, __m256d, __m512d};

/// A term of [`sum_terms`]: what a layer norm sums over a row, `term(a[j], b[j])` as `f64`, in the
/// scalar form that is its definition and in the vector forms of one register of `f64` lanes.
pub(crate) trait F64Term {
    /// The term of one pair of values: the definition.
    fn scalar(&self, a: f32, b: f32) -> f64;
    /// The terms of eight pairs, lane `l` from `a[l]`, `b[l]` (AVX-512F).
    ///
    /// # Safety
    /// The CPU must support AVX-512F.
    #[cfg(target_arch = "x86_64")]
    unsafe fn avx512(&self, a: __m256, b: __m256) -> __m512d;
    /// The terms of four pairs, lane `l` from `a[l]`, `b[l]` (AVX).
    ///
    /// # Safety
    /// The CPU must support AVX.
    #[cfg(target_arch = "x86_64")]
    unsafe fn avx(&self, a: __m128, b: __m128) -> __m256d;
}

/// `a[j]` as `f64` (`b` unused): a row's sum, for its mean.
pub(crate) struct Value;

impl F64Term for Value {
    #[inline(always)]
    fn scalar(&self, a: f32, _: f32) -> f64 {
        a as f64
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn avx512(&self, a: __m256, _: __m256) -> __m512d {
        // SAFETY: AVX-512F (the caller's promise).
        unsafe { std::arch::x86_64::_mm512_cvtps_pd(a) }
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn avx(&self, a: __m128, _: __m128) -> __m256d {
        // SAFETY: AVX (the caller's promise).
        unsafe { std::arch::x86_64::_mm256_cvtps_pd(a) }
    }
}

/// `(a[j] as f64 − mean)²` (`b` unused): a row's squared deviations, for its variance.
pub(crate) struct SquaredDeviation(pub f64);

impl F64Term for SquaredDeviation {
    #[inline(always)]
    fn scalar(&self, a: f32, _: f32) -> f64 {
        let d = a as f64 - self.0;
        d * d
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn avx512(&self, a: __m256, _: __m256) -> __m512d {
        use std::arch::x86_64::{_mm512_cvtps_pd, _mm512_mul_pd, _mm512_set1_pd, _mm512_sub_pd};
        // SAFETY: AVX-512F (the caller's promise).
        unsafe {
            let d = _mm512_sub_pd(_mm512_cvtps_pd(a), _mm512_set1_pd(self.0));
            _mm512_mul_pd(d, d)
        }
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn avx(&self, a: __m128, _: __m128) -> __m256d {
        use std::arch::x86_64::{_mm256_cvtps_pd, _mm256_mul_pd, _mm256_set1_pd, _mm256_sub_pd};
        // SAFETY: AVX (the caller's promise).
        unsafe {
            let d = _mm256_sub_pd(_mm256_cvtps_pd(a), _mm256_set1_pd(self.0));
            _mm256_mul_pd(d, d)
        }
    }
}

/// `(a[j]·b[j])` rounded to `f32`, then as `f64`: the sum of a row's products.
pub(crate) struct Product;

impl F64Term for Product {
    #[inline(always)]
    fn scalar(&self, a: f32, b: f32) -> f64 {
        (a * b) as f64
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn avx512(&self, a: __m256, b: __m256) -> __m512d {
        // SAFETY: AVX-512F (the caller's promise).
        unsafe { std::arch::x86_64::_mm512_cvtps_pd(std::arch::x86_64::_mm256_mul_ps(a, b)) }
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn avx(&self, a: __m128, b: __m128) -> __m256d {
        // SAFETY: AVX (the caller's promise).
        unsafe { std::arch::x86_64::_mm256_cvtps_pd(std::arch::x86_64::_mm_mul_ps(a, b)) }
    }
}

/// [`sum_f64`] of a [`F64Term`], its eight running sums held in one AVX-512 register (or two AVX
/// registers) instead of the eight `f64` that the compiler kept two to an `xmm` register, with
/// shuffles to pair them (`perf annotate`: most of a layer norm's time). Lane `l` adds the terms of
/// `j ≡ l mod 8` in order from zero and the lanes are folded as [`sum_f64`] folds them: the same
/// operations in the same order, the same bits on every ISA (tested).
#[inline(always)]
pub(crate) fn sum_terms<T: F64Term>(a: &[f32], b: &[f32], term: &T) -> f64 {
    assert!(b.len() >= a.len(), "sum_terms: b shorter than a");
    #[cfg(target_arch = "x86_64")]
    {
        use super::simd::{Isa, isa};
        match isa() {
            // SAFETY: `isa` reports AVX-512F or AVX2 (which implies AVX) only where the CPU has it.
            Isa::Avx512 => return unsafe { sum_terms_avx512(a, b, term) },
            // SAFETY: as above.
            Isa::Avx2 => return unsafe { sum_terms_avx(a, b, term) },
            Isa::Baseline => {}
        }
    }
    sum_f64(a, b, |x, y| term.scalar(x, y))
}

/// [`sum_f64`]'s tail and fold over its eight running sums `lanes`, after the whole blocks.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn fold_lanes<T: F64Term>(lanes: [f64; 8], a: &[f32], b: &[f32], term: &T) -> f64 {
    let mut tail = 0.0f64;
    for j in a.len() / 8 * 8..a.len() {
        tail += term.scalar(a[j], b[j]);
    }
    ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5])) + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7])) + tail
}

/// [`sum_terms`] on AVX-512F: the eight running sums in one register.
///
/// # Safety
/// The CPU must support AVX-512F; `b` holds at least `a.len()` values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn sum_terms_avx512<T: F64Term>(a: &[f32], b: &[f32], term: &T) -> f64 {
    use std::arch::x86_64::{_mm256_loadu_ps, _mm512_add_pd, _mm512_setzero_pd, _mm512_storeu_pd};
    let mut lanes = [0.0f64; 8];
    // SAFETY: block i reads values 8i .. 8i + 8 < a.len() ≤ b.len() of both; AVX-512F (the
    // caller's promise); the store writes the 8 values of `lanes`.
    unsafe {
        let mut sums = _mm512_setzero_pd();
        for i in 0..a.len() / 8 {
            let (x, y) = (_mm256_loadu_ps(a.as_ptr().add(8 * i)), _mm256_loadu_ps(b.as_ptr().add(8 * i)));
            sums = _mm512_add_pd(sums, term.avx512(x, y));
        }
        _mm512_storeu_pd(lanes.as_mut_ptr(), sums);
    }
    fold_lanes(lanes, a, b, term)
}

/// [`sum_terms`] on AVX: running sums 0–3 in one register, 4–7 in another.
///
/// # Safety
/// The CPU must support AVX; `b` holds at least `a.len()` values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn sum_terms_avx<T: F64Term>(a: &[f32], b: &[f32], term: &T) -> f64 {
    use std::arch::x86_64::{_mm_loadu_ps, _mm256_add_pd, _mm256_setzero_pd, _mm256_storeu_pd};
    let mut lanes = [0.0f64; 8];
    // SAFETY: as in `sum_terms_avx512`, four values at a time; AVX (the caller's promise).
    unsafe {
        let (mut low, mut high) = (_mm256_setzero_pd(), _mm256_setzero_pd());
        for i in 0..a.len() / 8 {
            let (pa, pb) = (a.as_ptr().add(8 * i), b.as_ptr().add(8 * i));
            low = _mm256_add_pd(low, term.avx(_mm_loadu_ps(pa), _mm_loadu_ps(pb)));
            high = _mm256_add_pd(high, term.avx(_mm_loadu_ps(pa.add(4)), _mm_loadu_ps(pb.add(4))));
        }
        _mm256_storeu_pd(lanes.as_mut_ptr(), low);
        _mm256_storeu_pd(lanes.as_mut_ptr().add(4), high);
    }
    fold_lanes(lanes, a, b, term)
}

/// The error function, to ~1e-7 absolute accuracy (Abramowitz & Stegun 7.1.26), in `f64`.
pub fn erf(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736 + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let y = 1.0 - poly * (-x * x).exp();
    if x >= 0.0 { y } else { -y }
}

/// `(outer, features, inner)` of a `[N, F, …]` shape: element `[n, f, i]` sits at
/// `(n·F + f)·inner + i`. Softmax works along `F`; batch norm normalises each `F` (channel).
///
/// # Panics
/// If the shape has fewer than two axes.
pub fn feature_split(shape: &[usize]) -> (usize, usize, usize) {
    assert!(shape.len() >= 2, "expected a shape [N, features, …], got {shape:?}");
    let inner = super::checked_numel(&shape[2..]);
    let inner = inner.unwrap_or_else(|| panic!("a shape of more values than memory holds: {shape:?}"));
    (shape[0], shape[1], inner)
}

/// Checks that `x` and `y` both hold the `outer · f · inner` values of a split; true when that
/// is none (nothing to compute, however long the axes).
fn check_split(what: &str, x: usize, (outer, f, inner): (usize, usize, usize), y: usize) -> bool {
    let n = outer.checked_mul(f).and_then(|n| n.checked_mul(inner));
    assert!(
        n == Some(x) && x == y,
        "{what}: a split ({outer}, {f}, {inner}) of {n:?} values for an input of {x} and an output of {y}"
    );
    x == 0
}

/// Softmax along the feature axis of `x` (shape `[N, F, …]`), written into `y` (same length):
/// `y_i = e^(x_i − m) / Σ_j e^(x_j − m)` for every `(n, …)` position.
///
/// # Panics
/// If `x` and `y` do not both hold the split's `outer · f · inner` values.
pub fn softmax_into(x: &[f32], (outer, f, inner): (usize, usize, usize), y: &mut [f32]) {
    if check_split("softmax_into", x.len(), (outer, f, inner), y.len()) {
        return;
    }
    for_each_feature_line(outer, f, inner, |line| {
        let m = line.clone().map(|i| x[i]).fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0f64; // (in f64: a row of 10⁵ terms added one by one in f32 drifts)
        for i in line.clone() {
            y[i] = (x[i] - m).exp();
            sum += y[i] as f64;
        }
        let sum = sum as f32;
        line.for_each(|i| y[i] /= sum); // y = e^(x−m) / Σ e^(x−m)
    });
}

/// Log-softmax along the feature axis, written into `y`: `y_i = x_i − m − log Σ_j e^(x_j − m)`.
/// The sum is accumulated in `f64`.
///
/// # Panics
/// As [`softmax_into`].
pub fn log_softmax_into(x: &[f32], (outer, f, inner): (usize, usize, usize), y: &mut [f32]) {
    if check_split("log_softmax_into", x.len(), (outer, f, inner), y.len()) {
        return;
    }
    for_each_feature_line(outer, f, inner, |line| {
        let m = line.clone().map(|i| x[i]).fold(f32::NEG_INFINITY, f32::max) as f64;
        let log_sum = line.clone().map(|i| (x[i] as f64 - m).exp()).sum::<f64>().ln();
        line.for_each(|i| y[i] = (x[i] as f64 - m - log_sum) as f32); // x − m − log Σ e^(x−m)
    });
}

/// Calls `body` once per line along the feature axis, with the flat indices of that line's `f`
/// elements (`[n, 0, i]`, `[n, 1, i]`, …: a step of `inner` apart).
fn for_each_feature_line(
    outer: usize,
    f: usize,
    inner: usize,
    mut body: impl FnMut(std::iter::StepBy<std::ops::Range<usize>>),
) {
    for n in 0..outer {
        for i in 0..inner {
            let first = n * f * inner + i;
            body((first..first + f * inner).step_by(inner.max(1)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::simd::Isa;

    #[test]
    fn softmax_and_log_softmax_agree_and_stay_finite() {
        let x = [1000.0f32, -1000.0, 0.0, 1.0, 2.0, 3.0];
        let (mut p, mut lp) = ([0.0f32; 6], [0.0f32; 6]);
        softmax_into(&x, (2, 3, 1), &mut p);
        log_softmax_into(&x, (2, 3, 1), &mut lp);
        assert!(lp.iter().all(|v| v.is_finite()), "{lp:?}");
        assert_eq!(p[0], 1.0);
        assert_eq!(lp[1], -2000.0);
        for (a, b) in p.iter().zip(&lp) {
            assert!((a - b.exp()).abs() < 1e-6);
        }
        assert!((p[3..].iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }

    #[test]
    fn fast_exp_sigmoid_tanh_agree_with_the_library() {
        let mut worst = [0.0f32; 3];
        for i in -200_000..=200_000 {
            let x = i as f32 * 4.4e-4; // −88 … 88
            let e = x.exp();
            if e.is_normal() {
                worst[0] = worst[0].max(((exp_fast(x) - e) / e).abs());
            }
            worst[1] = worst[1].max((sigmoid_fast(x) - sigmoid(x)).abs());
            worst[2] = worst[2].max((tanh_fast(x) - x.tanh()).abs());
            if x.abs() < 0.3 && x != 0.0 {
                let rel = ((tanh_fast(x) - x.tanh()) / x.tanh()).abs();
                assert!(rel < 1e-6, "tanh_fast({x}) relative error {rel}");
            }
        }
        assert!(worst[0] < 5e-7 && worst[1] < 3e-7 && worst[2] < 3e-7, "{worst:?}");
        // Below the range: exp_fast's smallest value is a normal float (the clamp's purpose), and
        // σ far out on the left is 1/exp_fast(88.3), a small normal float instead of 0.
        let smallest = exp_fast(f32::NEG_INFINITY);
        assert!(smallest.is_normal() && smallest < 1.2e-38, "exp_fast(-inf) = {smallest:e}");
        assert_eq!(exp_fast(EXP_SMALLEST_NORMAL_ARG), smallest);
        let far = sigmoid_fast(-1000.0);
        assert!(far > 0.0 && far < 5e-39 && far == sigmoid_fast(-100.0), "σ(-1000) = {far:e}");
        assert!(sigmoid_fast(1000.0) == 1.0 && tanh_fast(1000.0) == 1.0 && tanh_fast(-1000.0) == -1.0);
    }

    #[test]
    fn vector_sums_of_terms_are_the_scalar_sums_bit_for_bit() {
        // Every length from 0 to 40 and a few longer (whole blocks and tails), rows with a large
        // mean and a small spread among them: each ISA's sum of each term against the definition,
        // sum_f64 with the scalar term.
        let mut state = 12345u64;
        let mut next = move || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        };
        for len in (0..=40).chain([63, 64, 127, 128, 129, 300, 512]) {
            for offset in [0.0f32, 1.0e4] {
                let a: Vec<f32> = (0..len).map(|_| offset + next() * 3.0).collect();
                let b: Vec<f32> = (0..len).map(|_| next()).collect();
                let mean = sum_f64(&a, &a, |x, _| x as f64) / len.max(1) as f64;
                let expected = [
                    sum_f64(&a, &a, |x, y| Value.scalar(x, y)),
                    sum_f64(&a, &a, |x, y| SquaredDeviation(mean).scalar(x, y)),
                    sum_f64(&a, &b, |x, y| Product.scalar(x, y)),
                ];
                // The scalar terms are the layer norm's closures from before they had vector forms.
                let closures = [
                    sum_f64(&a, &a, |x, _| x as f64),
                    sum_f64(&a, &a, |x, _| (x as f64 - mean).powi(2)),
                    sum_f64(&a, &b, |g, xh| (g * xh) as f64),
                ];
                assert_eq!(
                    closures.map(f64::to_bits),
                    expected.map(f64::to_bits),
                    "{len} values, offset {offset}"
                );
                for isa in [Isa::Baseline, Isa::Avx2, Isa::Avx512] {
                    let mut got = [0.0f64; 3];
                    let ran = super::super::simd::run_with(isa, || {
                        got = [
                            sum_terms_on(isa, &a, &a, &Value),
                            sum_terms_on(isa, &a, &a, &SquaredDeviation(mean)),
                            sum_terms_on(isa, &a, &b, &Product),
                        ]
                    });
                    if ran != isa {
                        continue; // this CPU has no such ISA
                    }
                    let bits = |v: [f64; 3]| v.map(f64::to_bits);
                    assert_eq!(bits(got), bits(expected), "{isa:?}, {len} values, offset {offset}");
                }
            }
        }
    }

    /// [`sum_terms`] on a chosen ISA (the CPU must have it).
    fn sum_terms_on<T: F64Term>(isa: Isa, a: &[f32], b: &[f32], term: &T) -> f64 {
        match isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the caller runs this only where the CPU has the ISA (`run_with` said so).
            Isa::Avx512 => unsafe { sum_terms_avx512(a, b, term) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above.
            Isa::Avx2 => unsafe { sum_terms_avx(a, b, term) },
            _ => sum_f64(a, b, |x, y| term.scalar(x, y)),
        }
    }

    #[test]
    fn feature_axis_with_inner_positions() {
        // [1, 2, 2]: softmax over the 2 features at each of the 2 inner positions.
        let x = [0.0f32, 5.0, 0.0, 5.0];
        let mut y = [0.0f32; 4];
        softmax_into(&x, feature_split(&[1, 2, 2]), &mut y);
        assert_eq!(y, [0.5, 0.5, 0.5, 0.5]);
    }
}
