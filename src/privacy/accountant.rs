//! The privacy accountant of DP-SGD: Rényi differential privacy (RDP) of the sampled Gaussian
//! mechanism (Mironov, Talwar & Zhang, "Rényi Differential Privacy of the Sampled Gaussian
//! Mechanism", 2019), converted to `(ε, δ)` by Balle et al. (2020, Theorem 21) — the accountant
//! Opacus uses, and `tests/privacy_accountant.rs` checks this one against Opacus's numbers.
//!
//! # The mechanism
//!
//! One DP-SGD step includes each training example independently with probability `q` (Poisson
//! sampling), clips each example's gradient to norm `C`, sums, and adds Gaussian noise of standard
//! deviation `σ·C` per coordinate. Its privacy loss at order `α` is `log A_α / (α − 1)`, where `A_α`
//! is the `α`-th moment of the likelihood ratio between the mixture `(1 − q)·N(0, σ²) + q·N(1, σ²)`
//! and `N(0, σ²)`:
//!
//! ```text
//! integer α:     A_α = Σ_{k=0}^{α} C(α, k) (1 − q)^{α−k} q^k exp((k² − k) / 2σ²)
//! fractional α:  A_α = Σ_{k≥0} C(α, k) [ (1 − q)^{α−k} q^k e^{(k² − k)/2σ²} · ½ erfc((k − z₀)/(√2 σ))
//!                                      + (1 − q)^k q^{α−k} e^{((α−k)² − (α−k))/2σ²} · ½ erfc((z₀ − (α − k))/(√2 σ)) ]
//!                z₀ = σ² ln(1/q − 1) + ½,  C(α, k) the generalised binomial coefficient
//! ```
//!
//! RDP composes by addition: `T` steps cost `T` times one step's RDP at every order.
//!
//! # From RDP to (ε, δ)
//!
//! At each order, `ε(α) = RDP(α) − (ln δ + ln α)/(α − 1) + ln((α − 1)/α)`, and `ε` is the smallest
//! over the orders tried ([`DEFAULT_ORDERS`], Opacus's: 1.1 to 10.9 in steps of 0.1, then 12 to 63).
//!
//! All sums run in log space (terms like `e^{k²/2σ²}` overflow `f64` long before the result does).

/// Opacus's default RDP orders: `1.1, 1.2, …, 10.9`, then `12, 13, …, 63`.
pub const DEFAULT_ORDERS: [f64; 151] = {
    let mut orders = [0.0; 151];
    let mut i = 0;
    while i < 99 {
        orders[i] = 1.0 + (i + 1) as f64 / 10.0;
        i += 1;
    }
    while i < 151 {
        orders[i] = (i - 99 + 12) as f64;
        i += 1;
    }
    orders
};

/// A real number as (sign, ln |value|), so that huge and tiny terms can be added.
#[derive(Clone, Copy, Debug)]
struct LogNum {
    negative: bool,
    ln: f64,
}

impl LogNum {
    const ZERO: LogNum = LogNum { negative: false, ln: f64::NEG_INFINITY };

    fn add(self, other: LogNum) -> LogNum {
        if other.ln == f64::NEG_INFINITY {
            return self;
        }
        if self.ln == f64::NEG_INFINITY {
            return other;
        }
        let (big, small) = if self.ln >= other.ln { (self, other) } else { (other, self) };
        let ratio = (small.ln - big.ln).exp(); // ≤ 1
        if big.negative == small.negative {
            LogNum { negative: big.negative, ln: big.ln + ratio.ln_1p() }
        } else if ratio == 1.0 {
            LogNum::ZERO
        } else {
            LogNum { negative: big.negative, ln: big.ln + (-ratio).ln_1p() }
        }
    }
}

/// `ln erfc(x)`, accurate also where `erfc(x)` underflows (an asymptotic series beyond x = 25).
fn ln_erfc(x: f64) -> f64 {
    if x < 25.0 {
        return libm::erfc(x).ln();
    }
    // erfc(x) = e^{−x²}/(x√π) · (1 − 1/(2x²) + 3/(4x⁴) − 15/(8x⁶) + 105/(16x⁸) − …)
    let u = 1.0 / (2.0 * x * x);
    let series = 1.0 - u * (1.0 - 3.0 * u * (1.0 - 5.0 * u * (1.0 - 7.0 * u)));
    -x * x - x.ln() - 0.5 * std::f64::consts::PI.ln() + series.ln()
}

/// `ln A_α` for the sampled Gaussian mechanism (see the [module docs](self)).
fn ln_a(q: f64, sigma: f64, alpha: f64) -> f64 {
    let (ln_q, ln_1mq) = (q.ln(), (-q).ln_1p());
    let s2 = 2.0 * sigma * sigma;
    if alpha.fract() == 0.0 {
        let n = alpha as u64;
        let mut sum = LogNum::ZERO;
        let mut ln_binom = 0.0; // ln C(α, 0)
        for k in 0..=n {
            if k > 0 {
                ln_binom += ((n - k + 1) as f64).ln() - (k as f64).ln(); // C(α, k) = C(α, k−1)·(α − k + 1)/k
            }
            let kf = k as f64;
            let term = ln_binom + (alpha - kf) * ln_1mq + kf * ln_q + (kf * kf - kf) / s2;
            sum = sum.add(LogNum { negative: false, ln: term });
        }
        return sum.ln;
    }
    let z0 = sigma * sigma * (1.0 / q - 1.0).ln() + 0.5;
    let (mut sum, mut binom) = (LogNum::ZERO, LogNum { negative: false, ln: 0.0 });
    for k in 0..100_000u32 {
        let kf = k as f64;
        if k > 0 {
            let factor = (alpha - kf + 1.0) / kf; // the generalised binomial coefficient's recurrence
            binom = LogNum { negative: binom.negative ^ (factor < 0.0), ln: binom.ln + factor.abs().ln() };
        }
        let j = alpha - kf;
        let t0 = binom.ln
            + j * ln_1mq
            + kf * ln_q
            + (kf * kf - kf) / s2
            + ln_erfc((kf - z0) / (sigma * 2f64.sqrt()))
            - 2f64.ln();
        let t1 =
            binom.ln + kf * ln_1mq + j * ln_q + (j * j - j) / s2 + ln_erfc((z0 - j) / (sigma * 2f64.sqrt()))
                - 2f64.ln();
        sum = sum
            .add(LogNum { negative: binom.negative, ln: t0 })
            .add(LogNum { negative: binom.negative, ln: t1 });
        // Past α the terms shrink; stop once they no longer matter at f64 precision.
        if kf > alpha && t0.max(t1) < sum.ln - 40.0 {
            break;
        }
    }
    sum.ln
}

/// RDP of one step of the sampled Gaussian mechanism at order `alpha > 1`, with sampling rate `q`
/// and noise multiplier `sigma` (0 when `q = 0`, ∞ when `sigma = 0`).
///
/// # Panics
/// If `q` is outside `[0, 1]`, `sigma` is negative, `alpha ≤ 1`, or `alpha` is finite and above
/// [`MAX_ORDER`] (the work grows with the order: α = 10⁸ took 5 s, 10¹² would take hours).
pub fn rdp_sampled_gaussian(q: f64, sigma: f64, alpha: f64) -> f64 {
    assert!((0.0..=1.0).contains(&q) && sigma >= 0.0 && alpha > 1.0, "rdp: q {q}, σ {sigma}, α {alpha}");
    assert!(
        alpha <= MAX_ORDER || alpha.is_infinite(),
        "rdp: the order α must be at most {MAX_ORDER} (or infinite), got {alpha}"
    );
    if q == 0.0 {
        return 0.0;
    }
    if sigma == 0.0 || alpha.is_infinite() {
        return f64::INFINITY;
    }
    if q == 1.0 {
        return alpha / (2.0 * sigma * sigma); // the Gaussian mechanism itself
    }
    ln_a(q, sigma, alpha) / (alpha - 1.0)
}

/// The `ε` of `(ε, δ)`-DP after `steps` steps of the sampled Gaussian mechanism (rate `q`, noise
/// multiplier `sigma`), minimised over `orders`; with the order that attains it. No steps, or a
/// sampling rate of 0, spend nothing: `(0, NaN)`, as Opacus's accountant reports 0 before the
/// first step. The conversion can give a negative figure where the noise is overwhelming (a
/// large `σ` at a large `δ`); it is reported as 0, which is what it guarantees.
///
/// ```
/// use backprop::privacy::{DEFAULT_ORDERS, epsilon};
/// // Batches of 1 % of the data, σ = 1.1, 10,000 steps (100 epochs), δ = 1e-5.
/// let (eps, _order) = epsilon(0.01, 1.1, 10_000, 1e-5, &DEFAULT_ORDERS);
/// assert!(eps > 1.0 && eps < 10.0, "{eps}");
/// ```
///
/// # Panics
/// As [`rdp_sampled_gaussian`], if `delta` is not in `(0, 1)`, if an order is above
/// [`MAX_ORDER`] (the work grows with the order; Opacus's orders stop at 63), and if `orders` is
/// empty (nothing to minimise over).
pub fn epsilon(q: f64, sigma: f64, steps: u64, delta: f64, orders: &[f64]) -> (f64, f64) {
    assert!(delta > 0.0 && delta < 1.0, "epsilon: δ must be in (0, 1), got {delta}");
    assert!(!orders.is_empty(), "epsilon: no RDP orders to minimise over (try privacy::DEFAULT_ORDERS)");
    if let Some(&alpha) = orders.iter().find(|&&a| a > MAX_ORDER || a.is_nan()) {
        panic!("epsilon: RDP orders must be at most {MAX_ORDER}, got {alpha}");
    }
    // The arguments are checked whatever the step count (as `rdp_sampled_gaussian` checks them).
    if let Some(&alpha) = orders.iter().find(|&&a| a <= 1.0 || a.is_nan()) {
        panic!("rdp: q {q}, σ {sigma}, α {alpha}");
    }
    assert!((0.0..=1.0).contains(&q) && sigma >= 0.0, "rdp: q {q}, σ {sigma}");
    if steps == 0 || q == 0.0 {
        return (0.0, f64::NAN); // nothing released or sampled, nothing spent (as Opacus's accountant)
    }
    let mut best = (f64::INFINITY, f64::NAN);
    for &alpha in orders {
        let rdp = steps as f64 * rdp_sampled_gaussian(q, sigma, alpha);
        let eps = rdp - (delta.ln() + alpha.ln()) / (alpha - 1.0) + ((alpha - 1.0) / alpha).ln();
        if eps < best.0 {
            best = (eps, alpha);
        }
    }
    (best.0.max(0.0), best.1)
}

/// The largest RDP order [`epsilon`] accepts: its cost grows linearly with the order.
pub const MAX_ORDER: f64 = 1024.0;

/// The smallest noise multiplier `σ` (to a relative 1e-9) for which `steps` steps at sampling rate
/// `q` stay within `(target_eps, delta)`, over [`DEFAULT_ORDERS`].
///
/// # Errors
/// [`Error::InvalidArgument`](crate::Error::InvalidArgument) if the target is not a positive number,
/// `q` is not in `(0, 1]`, `delta` not in `(0, 1)`, `steps` is 0, or no `σ` up to 10⁶ reaches it.
pub fn noise_multiplier_for(target_eps: f64, q: f64, steps: u64, delta: f64) -> crate::Result<f64> {
    if !(target_eps.is_finite() && target_eps > 0.0) {
        return Err(crate::Error::invalid(format!("target ε must be a positive number, got {target_eps}")));
    }
    if !(q > 0.0 && q <= 1.0) {
        return Err(crate::Error::invalid(format!("the sampling rate q must be in (0, 1], got {q}")));
    }
    if !(delta > 0.0 && delta < 1.0) {
        return Err(crate::Error::invalid(format!("δ must be in (0, 1), got {delta}")));
    }
    if steps == 0 {
        return Err(crate::Error::invalid("the number of steps must be at least 1"));
    }
    let eps_at = |sigma: f64| epsilon(q, sigma, steps, delta, &DEFAULT_ORDERS).0;
    let (mut low, mut high) = (0.0f64, 1.0f64);
    while eps_at(high) > target_eps {
        (low, high) = (high, 2.0 * high);
        if high > 1e6 {
            return Err(crate::Error::invalid(format!(
                "no noise multiplier up to 1e6 reaches ε = {target_eps} (q = {q}, {steps} steps, δ = {delta})"
            )));
        }
    }
    while high - low > 1e-9 * high {
        let mid = 0.5 * (low + high);
        if eps_at(mid) > target_eps { low = mid } else { high = mid }
    }
    Ok(high)
}
