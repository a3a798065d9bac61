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

/// A learning-rate schedule. See the [module docs](self) for the formulas.
///
/// ```
/// use backprop::optim::Schedule;
/// let s = Schedule::step(10, 0.5);
/// assert_eq!(s.lr(0.1, 9), 0.1);
/// assert_eq!(s.lr(0.1, 10), 0.05);
/// let w = Schedule::cosine(10, 0.0).with_warmup(2, 0.5);
/// assert_eq!(w.lr(1.0, 0), 0.5);   // warm-up from half the rate
/// assert_eq!(w.lr(1.0, 1), 0.75);
/// assert_eq!(w.lr(1.0, 2), 1.0);   // cosine starts at its top
/// ```
#[derive(Clone, Debug, PartialEq)]
pub enum Schedule {
    /// The base rate throughout.
    Constant,
    /// Multiply by `gamma` every `step_size` steps.
    Step {
        /// Steps between decays.
        step_size: usize,
        /// Decay factor.
        gamma: f32,
    },
    /// Multiply by `gamma` every step.
    Exponential {
        /// Decay factor.
        gamma: f32,
    },
    /// Half a cosine from the base rate down to `eta_min` over `t_max` steps (and back up over the
    /// next `t_max`, as PyTorch's `CosineAnnealingLR`).
    Cosine {
        /// Length of the decay, in steps.
        t_max: usize,
        /// The final learning rate.
        eta_min: f32,
    },
    /// A linear ramp from `start_factor · η₀` to `η₀` over `steps` steps, then `then`.
    Warmup {
        /// Length of the warm-up.
        steps: usize,
        /// Fraction of the base rate at step 0.
        start_factor: f32,
        /// The schedule after the warm-up (its step count starts at 0 when the warm-up ends).
        then: Box<Schedule>,
    },
}

impl Schedule {
    /// Step decay.
    ///
    /// # Panics
    /// If `step_size` is 0.
    pub fn step(step_size: usize, gamma: f32) -> Schedule {
        assert!(step_size > 0, "Schedule::step: step_size must be at least 1");
        Schedule::Step { step_size, gamma }
    }

    /// Exponential decay.
    pub fn exponential(gamma: f32) -> Schedule {
        Schedule::Exponential { gamma }
    }

    /// Cosine annealing.
    ///
    /// # Panics
    /// If `t_max` is 0.
    pub fn cosine(t_max: usize, eta_min: f32) -> Schedule {
        assert!(t_max > 0, "Schedule::cosine: t_max must be at least 1");
        Schedule::Cosine { t_max, eta_min }
    }

    /// Prepends a linear warm-up of `steps` steps starting at `start_factor` of the base rate.
    pub fn with_warmup(self, steps: usize, start_factor: f32) -> Schedule {
        Schedule::Warmup { steps, start_factor, then: Box::new(self) }
    }

    /// The learning rate at step `t` for base rate `base`.
    pub fn lr(&self, base: f32, t: usize) -> f32 {
        match self {
            Schedule::Constant => base,
            Schedule::Step { step_size, gamma } => base * gamma.powi((t / step_size) as i32),
            Schedule::Exponential { gamma } => base * gamma.powi(t as i32),
            Schedule::Cosine { t_max, eta_min } => {
                let progress = t as f64 / *t_max as f64;
                let cos = (1.0 + (std::f64::consts::PI * progress).cos()) / 2.0;
                (*eta_min as f64 + (base - eta_min) as f64 * cos) as f32
            }
            Schedule::Warmup { steps, start_factor, then } => {
                if t < *steps {
                    base * (start_factor + (1.0 - start_factor) * t as f32 / *steps as f32)
                } else {
                    then.lr(base, t - steps)
                }
            }
        }
    }
}
