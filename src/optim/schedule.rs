//! Learning-rate schedules: the learning rate as a function of the step count `t` (epochs, when
//! `fit` applies them; batches, if you call them yourself), in the closed forms of PyTorch's
//! schedulers:
//!
//! | schedule | `η(t)` | PyTorch |
//! |---|---|---|
//! | constant | `η₀` | — |
//! | step decay | `η₀ · γ^⌊t / s⌋` | `StepLR(step_size=s, gamma=γ)` |
//! | exponential | `η₀ · γᵗ` | `ExponentialLR(gamma=γ)` |
//! | cosine annealing | `η_min + (η₀ − η_min)·(1 + cos(π·t/T))/2` | `CosineAnnealingLR(T_max=T, eta_min)` |
//! | linear warm-up | `η₀ · (f + (1 − f)·t/W)` for `t < W`, then the inner schedule at `t − W` | `LinearLR(start_factor=f, total_iters=W)` then the next, as `SequentialLR` |
//!
//! As in PyTorch, cosine annealing is periodic: past `T` the rate climbs back up (it reaches `η₀`
//! again at `2T`), so set `T` to the length of training.
//!
//! The decay factors `γ` are `f64`, as PyTorch's are Python floats, and the decays' rates are
//! computed in `f64` and rounded to `f32` once: a `γ` rounded to `f32` (0.9999 is 0.99989998…)
//! would take the rate away from PyTorch's by `t` times that rounding, 3·10⁻⁴ of it after 20,000
//! steps of a decay applied per batch. (The other settings — cosine's `η_min`, warm-up's start
//! factor — are `f32`: the closed forms use each once, so they stay within a rounding of PyTorch's.)

use crate::error::{Error, Result};

/// A learning-rate schedule. See the [module docs](self) for the formulas.
///
/// Built only through its constructors, which refuse settings that would divide by zero or make
/// the rate negative or NaN.
///
/// ```
/// use backprop::optim::Schedule;
/// # fn main() -> backprop::Result<()> {
/// let s = Schedule::step(10, 0.5)?;
/// assert_eq!(s.lr(0.1, 9), 0.1);
/// assert_eq!(s.lr(0.1, 10), 0.05);
/// let w = Schedule::cosine(10, 0.0)?.with_warmup(2, 0.5)?;
/// assert_eq!(w.lr(1.0, 0), 0.5);   // warm-up from half the rate
/// assert_eq!(w.lr(1.0, 1), 0.75);
/// assert_eq!(w.lr(1.0, 2), 1.0);   // cosine starts at its top
/// assert!(Schedule::step(0, 0.5).is_err());
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule(Kind);

#[derive(Clone, Debug, PartialEq)]
enum Kind {
    Constant,
    Step { step_size: usize, gamma: f64 },
    Exponential { gamma: f64 },
    Cosine { t_max: usize, eta_min: f32 },
    Warmup { steps: usize, start_factor: f32, then: Box<Schedule> },
}

fn positive_factor(what: &str, gamma: f64) -> Result<f64> {
    if gamma.is_finite() && gamma > 0.0 {
        Ok(gamma)
    } else {
        Err(Error::invalid(format!("{what}: the factor must be a positive number, got {gamma}")))
    }
}

impl Schedule {
    /// The base rate throughout.
    pub fn constant() -> Schedule {
        Schedule(Kind::Constant)
    }

    /// Multiply by `gamma` every `step_size` steps (PyTorch's `StepLR`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `step_size` is 0 or `gamma` is not a positive number.
    pub fn step(step_size: usize, gamma: f64) -> Result<Schedule> {
        if step_size == 0 {
            return Err(Error::invalid("Schedule::step: step_size must be at least 1"));
        }
        Ok(Schedule(Kind::Step { step_size, gamma: positive_factor("Schedule::step", gamma)? }))
    }

    /// Multiply by `gamma` every step (PyTorch's `ExponentialLR`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `gamma` is not a positive number.
    pub fn exponential(gamma: f64) -> Result<Schedule> {
        Ok(Schedule(Kind::Exponential { gamma: positive_factor("Schedule::exponential", gamma)? }))
    }

    /// Half a cosine from the base rate down to `eta_min` over `t_max` steps, and back up over the
    /// next `t_max` (PyTorch's `CosineAnnealingLR`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `t_max` is 0 or `eta_min` is negative or not finite.
    pub fn cosine(t_max: usize, eta_min: f32) -> Result<Schedule> {
        if t_max == 0 {
            return Err(Error::invalid("Schedule::cosine: t_max must be at least 1"));
        }
        if !(eta_min.is_finite() && eta_min >= 0.0) {
            return Err(Error::invalid(format!("Schedule::cosine: eta_min must be ≥ 0, got {eta_min}")));
        }
        Ok(Schedule(Kind::Cosine { t_max, eta_min }))
    }

    /// Prepends a linear warm-up of `steps` steps starting at `start_factor` of the base rate
    /// (PyTorch's `LinearLR` followed by this schedule, as `SequentialLR`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `steps` is 0 or `start_factor` is outside `(0, 1]`.
    pub fn with_warmup(self, steps: usize, start_factor: f32) -> Result<Schedule> {
        if steps == 0 {
            return Err(Error::invalid("Schedule::with_warmup: steps must be at least 1"));
        }
        if !(start_factor > 0.0 && start_factor <= 1.0) {
            return Err(Error::invalid(format!(
                "Schedule::with_warmup: start_factor must be in (0, 1], got {start_factor}"
            )));
        }
        Ok(Schedule(Kind::Warmup { steps, start_factor, then: Box::new(self) }))
    }

    /// The learning rate at step `t` for base rate `base`.
    pub fn lr(&self, base: f32, t: usize) -> f32 {
        match &self.0 {
            Kind::Constant => base,
            // (Exponents past i32::MAX saturate: the factor is 0 or ∞ long before, where a cast
            // had wrapped step 2³² back to the base rate.)
            Kind::Step { step_size, gamma } => {
                (base as f64 * gamma.powi(saturating_i32(t / step_size))) as f32
            }
            Kind::Exponential { gamma } => (base as f64 * gamma.powi(saturating_i32(t))) as f32,
            Kind::Cosine { t_max, eta_min } => {
                let progress = t as f64 / *t_max as f64;
                let cos = (1.0 + (std::f64::consts::PI * progress).cos()) / 2.0;
                (*eta_min as f64 + (base - eta_min) as f64 * cos) as f32
            }
            Kind::Warmup { steps, start_factor, then } => {
                if t < *steps {
                    base * (start_factor + (1.0 - start_factor) * t as f32 / *steps as f32)
                } else {
                    then.lr(base, t - steps)
                }
            }
        }
    }
}

impl Schedule {
    /// The steps among `0 .. steps` at which the rate takes its largest and its smallest values
    /// (sorted, without repeats), so that a check of the rate at these steps checks every step:
    /// a decay is monotone (its ends), a cosine stays between its top (step 0) and its bottom
    /// (step `T`), a warm-up is monotone up to its last step and then its inner schedule's.
    /// (`fit` checks each rate before training; an epoch count of 2⁶⁴ − 1 must not take 2⁶⁴
    /// checks.)
    pub(crate) fn extreme_steps(&self, steps: usize) -> Vec<usize> {
        let Some(last) = steps.checked_sub(1) else { return Vec::new() };
        let mut out = match &self.0 {
            Kind::Constant => vec![0],
            Kind::Step { .. } | Kind::Exponential { .. } => vec![0, last],
            Kind::Cosine { t_max, .. } => vec![0, (*t_max).min(last)],
            Kind::Warmup { steps: w, then, .. } => {
                let mut v = vec![0, (*w).min(steps) - 1];
                if steps > *w {
                    v.extend(then.extreme_steps(steps - w).into_iter().map(|t| t + w));
                }
                v
            }
        };
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// `n` as an exponent for `powi`, saturated at `i32::MAX`.
fn saturating_i32(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}
