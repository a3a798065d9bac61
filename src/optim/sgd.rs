//! Stochastic gradient descent with momentum, Nesterov momentum, dampening and weight decay.
//!
//! For each parameter `θ` with gradient `g` (PyTorch's `torch.optim.SGD`; the symbols are those of
//! docs/backprop.md's notation index and §9):
//!
//! ```text
//! g ← g + λ·θ                                   (weight decay λ, as an L2 penalty)
//! if ρ ≠ 0:
//!     u ← g                  at the first step
//!     u ← ρ·u + (1 − τ)·g    afterwards         (momentum ρ, dampening τ)
//!     g ← g + ρ·u  if Nesterov, else  g ← u
//! θ ← θ − η·g                                   (learning rate η)
//! ```
//!
//! Momentum keeps a running direction `u` that averages out the noise of mini-batch gradients
//! and speeds up along consistent slopes; Nesterov's variant evaluates that step "one look ahead".

use super::{Optimizer, State, check_factor, check_setting};
use crate::layers::Param;
use crate::tensor::parallel::split_if_threads;
use crate::tensor::{INFINITY_BITS, magnitude_bits};
use rayon::prelude::*;

/// Elements per parallel task of an update (small parameters stay on one thread).
const CHUNK: usize = 1 << 14;

/// SGD with optional momentum. See the [module docs](self) for the update.
///
/// ```
/// use backprop::layers::Param;
/// use backprop::optim::{Optimizer, Sgd};
/// use backprop::Tensor;
/// let mut p = Param::new(Tensor::from_vec(&[1], vec![1.0]).unwrap());
/// p.grad = Tensor::from_vec(&[1], vec![0.5]).unwrap();
/// Sgd::new(0.1).step_params(&mut [("w".to_string(), &mut p)]);
/// assert_eq!(p.value.data(), &[0.95]); // 1 − 0.1·0.5
/// ```
#[derive(Clone, Debug)]
pub struct Sgd {
    lr: f32,
    momentum: f32,
    dampening: f32,
    nesterov: bool,
    weight_decay: f32,
    steps: u64,
    momentum_buffers: State,
}

impl Sgd {
    /// Plain SGD with learning rate `lr`.
    ///
    /// # Panics
    /// If `lr` is negative, infinite or NaN (as for every setting below).
    pub fn new(lr: f32) -> Sgd {
        Sgd {
            lr: check_setting("SGD", "the learning rate", lr),
            momentum: 0.0,
            dampening: 0.0,
            nesterov: false,
            weight_decay: 0.0,
            steps: 0,
            momentum_buffers: State::default(),
        }
    }

    /// Momentum factor `ρ` (0.9 is typical).
    ///
    /// # Panics
    /// Unless `momentum` is in `[0, 1]`.
    pub fn momentum(mut self, momentum: f32) -> Sgd {
        self.momentum = check_factor("SGD", "momentum", momentum, 1.0);
        self
    }

    /// Dampening `τ` of the momentum.
    ///
    /// # Panics
    /// Unless `dampening` is in `[0, 1]`.
    pub fn dampening(mut self, dampening: f32) -> Sgd {
        self.dampening = check_factor("SGD", "dampening", dampening, 1.0);
        self
    }

    /// Uses Nesterov momentum (needs momentum > 0 and no dampening, as in PyTorch; checked by
    /// [`Optimizer::check`] before training, so the builder methods may come in any order).
    pub fn nesterov(mut self) -> Sgd {
        self.nesterov = true;
        self
    }

    /// L2 weight decay `λ`: adds `λ·θ` to each gradient.
    ///
    /// # Panics
    /// Unless `weight_decay` is in `[0, 1]` (typical values are 10⁻⁵ … 10⁻¹).
    pub fn weight_decay(mut self, weight_decay: f32) -> Sgd {
        self.weight_decay = check_factor("SGD", "weight decay", weight_decay, 1.0);
        self
    }
}

impl Sgd {
    /// One update of every parameter; returns the position of the first whose new value holds a
    /// NaN or an infinity, if any (noted as the values are written).
    fn update(&mut self, params: &mut [(String, &mut Param)]) -> Option<usize> {
        assert!(
            !self.nesterov || (self.momentum > 0.0 && self.dampening == 0.0),
            "SGD: Nesterov momentum needs a momentum > 0 and zero dampening (got momentum {}, dampening {})",
            self.momentum,
            self.dampening
        );
        let (lr, rho, tau, wd) = (self.lr, self.momentum, self.dampening, self.weight_decay);
        self.steps += 1;
        let nesterov = self.nesterov;
        let mut first_non_finite = None;
        for (at, (name, p)) in params.iter_mut().enumerate() {
            // A parameter's first step (`u ← g`) is its own, as PyTorch starts each buffer when
            // it is first needed: a layer added mid-training gets it too.
            let first = self.momentum_buffers.find(name).is_none();
            let u = if rho != 0.0 { Some(self.momentum_buffers.get(name, p, "Sgd")) } else { None };
            let (theta, grad) = (p.value.data_mut(), p.grad.data());
            // Every element is independent: chunks in parallel give the same result on any
            // number of threads.
            let h = Hyper { lr, rho, tau, wd };
            let run = |theta: &mut [f32], grad: &[f32], u: &mut [f32]| match (u.is_empty(), first, nesterov) {
                (true, ..) => update::<false, false, false>(theta, grad, u, h),
                (false, true, false) => update::<true, true, false>(theta, grad, u, h),
                (false, true, true) => update::<true, true, true>(theta, grad, u, h),
                (false, false, false) => update::<true, false, false>(theta, grad, u, h),
                (false, false, true) => update::<true, false, true>(theta, grad, u, h),
            };
            // One chunk stays on this thread: handing it to rayon would cost more than the update.
            let serial = theta.len() <= CHUNK;
            // (`reduce`, not `all`: every chunk is updated, whatever another found.)
            let finite = match u {
                None if serial => run(theta, grad, &mut []),
                None => theta
                    .par_chunks_mut(CHUNK)
                    .zip(grad.par_chunks(CHUNK))
                    .with_min_len(split_if_threads(1))
                    .map(|(th, g)| run(th, g, &mut []))
                    .reduce(|| true, |a, b| a & b),
                Some(u) if serial => run(theta, grad, u.data_mut()),
                Some(u) => {
                    let chunks = theta.par_chunks_mut(CHUNK).zip(grad.par_chunks(CHUNK));
                    chunks
                        .zip(u.data_mut().par_chunks_mut(CHUNK))
                        .with_min_len(split_if_threads(1))
                        .map(|((th, g), u)| run(th, g, u))
                        .reduce(|| true, |a, b| a & b)
                }
            };
            if !finite && first_non_finite.is_none() {
                first_non_finite = Some(at);
            }
        }
        first_non_finite
    }
}

/// The scalars of one step: learning rate η, momentum ρ, dampening τ, weight decay λ.
#[derive(Clone, Copy)]
struct Hyper {
    lr: f32,
    rho: f32,
    tau: f32,
    wd: f32,
}

/// The SGD update of one slice of a parameter (with its momentum buffer `u` when `MOMENTUM`; the
/// first step's `u ← g` when `FIRST`), compiled for the widest vectors the CPU has: the flags are
/// constants and the scalars values (captured by reference, they were loaded again for every
/// element, and the loop ran one element at a time). True if every new value is finite.
fn update<const MOMENTUM: bool, const FIRST: bool, const NESTEROV: bool>(
    theta: &mut [f32],
    grad: &[f32],
    u: &mut [f32],
    h: Hyper,
) -> bool {
    crate::tensor::simd::wide!(update_loop::<MOMENTUM, FIRST, NESTEROV>(theta, grad, u, h))
}

#[inline(always)]
fn update_loop<const MOMENTUM: bool, const FIRST: bool, const NESTEROV: bool>(
    theta: &mut [f32],
    grad: &[f32],
    u: &mut [f32],
    Hyper { lr, rho, tau, wd }: Hyper,
) -> bool {
    // Slices of one length, so that the loop runs without bounds checks.
    let n = theta.len();
    let grad = &grad[..n];
    let u = if MOMENTUM { &mut u[..n] } else { u };
    let mut largest = 0u32; // at least INFINITY_BITS once a new value is NaN or ±∞
    for i in 0..n {
        let t = &mut theta[i];
        let g = grad[i] + wd * *t; // g ← g + λθ
        let step = if MOMENTUM {
            u[i] = if FIRST { g } else { rho * u[i] + (1.0 - tau) * g }; // u ← ρu + (1 − τ)g
            if NESTEROV { g + rho * u[i] } else { u[i] }
        } else {
            g
        };
        *t -= lr * step; // θ ← θ − η·step
        largest = largest.max(magnitude_bits(*t));
    }
    largest < INFINITY_BITS
}

impl Optimizer for Sgd {
    fn check(&self) -> crate::Result<()> {
        if self.nesterov && !(self.momentum > 0.0 && self.dampening == 0.0) {
            return Err(crate::Error::invalid(format!(
                "SGD: Nesterov momentum needs a momentum > 0 and zero dampening (got momentum {}, dampening {})",
                self.momentum, self.dampening
            )));
        }
        Ok(())
    }

    /// # Panics
    /// If Nesterov momentum was asked for without a momentum or with dampening (PyTorch refuses
    /// the same settings), or if the parameters differ from those of the first step.
    fn step_params(&mut self, params: &mut [(String, &mut Param)]) {
        self.update(params);
    }

    fn step_params_checked(&mut self, params: &mut [(String, &mut Param)]) -> Option<(String, f32)> {
        let first = self.update(params)?;
        super::first_non_finite_of(params, |i| i >= first)
    }

    fn save_state(&self, into: &mut super::OptimizerState) {
        super::save_states(into, self.steps, &[("momentum_buffer", &self.momentum_buffers)]);
    }

    fn visit_buffer_shapes(&self, f: &mut dyn FnMut(&str, &str, &[usize])) {
        self.momentum_buffers.visit_shapes("momentum_buffer", f);
    }

    fn load_state(&mut self, state: &super::OptimizerState) -> crate::Result<()> {
        state.check_kinds("SGD", &["momentum_buffer"])?;
        if state.steps() == u64::MAX {
            // (The next step would overflow the count: no run takes that many.)
            return Err(crate::Error::invalid("SGD: the state counts u64::MAX steps (the state is damaged)"));
        }
        self.steps = state.steps();
        super::load_kind(&mut self.momentum_buffers, "momentum_buffer", state);
        Ok(())
    }

    fn learning_rate(&self) -> f32 {
        self.lr
    }

    fn set_learning_rate(&mut self, lr: f32) {
        self.lr = check_setting("SGD", "the learning rate", lr);
    }

    fn describe(&self) -> String {
        let mut s = format!("SGD(lr={}", self.lr);
        if self.momentum != 0.0 {
            s += &format!(", momentum={}", self.momentum);
        }
        if self.nesterov {
            s += ", nesterov";
        }
        if self.dampening != 0.0 {
            s += &format!(", dampening={}", self.dampening);
        }
        if self.weight_decay != 0.0 {
            s += &format!(", weight_decay={}", self.weight_decay);
        }
        s + ")"
    }
}
