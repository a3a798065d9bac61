//! Adam and AdamW.
//!
//! Adam keeps two running averages per parameter: `m`, of the gradient (a momentum), and `v`, of
//! its square (how large the gradient usually is). Each coordinate then steps by `m/√v`: about
//! `η` in size whatever the scale of its gradient. At step `k` (counted from 1), as PyTorch's
//! `torch.optim.Adam`:
//!
//! ```text
//! g ← g + λ·θ                          (Adam's weight decay: an L2 penalty through the gradient)
//! m ← β₁·m + (1 − β₁)·g
//! v ← β₂·v + (1 − β₂)·g²
//! v_max ← max(v_max, v)                (AMSGrad only; then v_max replaces v below)
//! θ ← θ − (η / (1 − β₁ᵏ)) · m / (√v / √(1 − β₂ᵏ) + ε)
//! ```
//!
//! The last line is computed as `θ ← θ − (η·√(1 − β₂ᵏ) / (1 − β₁ᵏ)) · m / (√v + ε·√(1 − β₂ᵏ))`:
//! the same value (numerator and denominator multiplied by `√(1 − β₂ᵏ)`, the two constants
//! taken once per step in f64), with one division per coordinate instead of two — a division and a
//! square root are most of an Adam step's time. The result can differ from PyTorch's order in
//! the last bit of the update, far below the step's own size.
//!
//! **Bias correction.** `m` and `v` start at zero, so early on they underestimate the true
//! averages: after one step `m = (1 − β₁)·g`, ten times too small for β₁ = 0.9. Dividing by
//! `1 − β₁ᵏ` (and `1 − β₂ᵏ`) undoes exactly this shrinkage — after one step `m/(1 − β₁) = g` — and
//! fades to 1 as `k` grows.
//!
//! **AdamW** (`torch.optim.AdamW`) decouples the weight decay: instead of adding `λθ` to the
//! gradient (where Adam's per-coordinate scaling would distort it), it shrinks the weights
//! directly before the Adam step, `θ ← θ − η·λ·θ`.

use super::{Optimizer, State, check_factor, check_setting};
use crate::layers::Param;
use crate::tensor::parallel::split_if_threads;
use crate::tensor::{INFINITY_BITS, magnitude_bits};
use rayon::prelude::*;

/// Settings and state shared by [`Adam`] and [`AdamW`].
#[derive(Clone, Debug)]
struct AdamCore {
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    amsgrad: bool,
    k: i32,
    /// For a parameter whose first step came after the optimizer's first (a layer added to the
    /// model mid-training): the optimizer's steps before it. Its own count, `k − born`, drives its
    /// bias corrections, as PyTorch keeps a `step` per parameter. Absent: 0.
    born: std::collections::BTreeMap<String, i32>,
    m: State,
    v: State,
    v_max: State,
}

impl AdamCore {
    fn new(lr: f32, weight_decay: f32) -> AdamCore {
        AdamCore {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
            amsgrad: false,
            k: 0,
            born: Default::default(),
            m: State::default(),
            v: State::default(),
            v_max: State::default(),
        }
    }

    /// One Adam step; `decoupled` selects AdamW's weight decay. Returns the index of the first
    /// parameter the step left holding a value that is not finite, if any (noted in the update's
    /// own loop, instead of by a scan of every weight after it).
    /// After a step whose values were all finite but whose check found something that was not
    /// (from parameter `first` on): the parameter whose second moment `v` overflowed — a
    /// gradient so large that its square is past f32 — named as such, with the value.
    fn overflowed_moment(
        &self,
        params: &[(String, &mut Param)],
        first: usize,
        name: &str,
    ) -> Option<(String, f32)> {
        params.iter().skip(first).find_map(|(pname, _)| {
            let v = self.v.find(pname)?.data();
            crate::tensor::first_non_finite(v).map(|i| {
                (format!("{pname} in {name}'s second moment v (a gradient whose square overflows f32: clip the gradients)"), v[i])
            })
        })
    }

    fn step(&mut self, params: &mut [(String, &mut Param)], decoupled: bool, name: &str) -> Option<usize> {
        self.k = self.k.saturating_add(1); // (2³¹ steps: the bias corrections are 1 long before)
        let (lr, beta1, beta2, wd, eps) = (self.lr, self.beta1, self.beta2, self.weight_decay, self.eps);
        let hyper = |k: i32| {
            // Scalars in f64, as PyTorch computes them in Python floats.
            let bias1 = 1.0 - (beta1 as f64).powi(k); // 1 − β₁ᵏ
            let bias2_sqrt = (1.0 - (beta2 as f64).powi(k)).sqrt(); // √(1 − β₂ᵏ)
            Hyper {
                lr,
                beta1,
                beta2,
                wd,
                step_size_times_bias2_sqrt: (lr as f64 / bias1 * bias2_sqrt) as f32,
                // At least the smallest positive f32, so that an ε too small to survive the product
                // still keeps 0/0 out of a coordinate whose gradient has always been 0.
                eps_times_bias2_sqrt: ((eps as f64 * bias2_sqrt) as f32).max(f32::from_bits(1)),
            }
        };
        let every = hyper(self.k);
        let mut first_non_finite = None;
        for (at, (pname, p)) in params.iter_mut().enumerate() {
            if self.k > 1 && self.m.find(pname).is_none() {
                self.born.insert(pname.clone(), self.k - 1); // its first step: its count starts at 1
            }
            let h = match self.born.get(pname.as_str()) {
                Some(&born) => hyper(self.k - born),
                None => every,
            };
            let (m, v) = (self.m.get(pname, p, name), self.v.get(pname, p, name));
            let vmax = if self.amsgrad { Some(self.v_max.get(pname, p, name).data_mut()) } else { None };
            let (theta, grad, m, v) = (p.value.data_mut(), p.grad.data(), m.data_mut(), v.data_mut());
            // Every element is independent: update chunks in parallel (same result on any
            // number of threads), each with a loop the compiler can vectorise.
            let amsgrad = vmax.is_some();
            let run = |t: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], vm: &mut [f32]| match (
                decoupled, amsgrad,
            ) {
                (false, false) => update::<false, false>(t, g, m, v, vm, &h),
                (true, false) => update::<true, false>(t, g, m, v, vm, &h),
                (false, true) => update::<false, true>(t, g, m, v, vm, &h),
                (true, true) => update::<true, true>(t, g, m, v, vm, &h),
            };
            let finite = if theta.len() <= CHUNK {
                // One chunk: on this thread (handing it to rayon would cost more than the update).
                run(theta, grad, m, v, vmax.unwrap_or(&mut []))
            } else {
                let chunks = theta
                    .par_chunks_mut(CHUNK)
                    .zip(grad.par_chunks(CHUNK))
                    .zip(m.par_chunks_mut(CHUNK))
                    .zip(v.par_chunks_mut(CHUNK))
                    .with_min_len(split_if_threads(1));
                // (`reduce`, not `all`: every chunk is updated, whatever another found.)
                match vmax {
                    None => {
                        chunks.map(|(((t, g), m), v)| run(t, g, m, v, &mut [])).reduce(|| true, |a, b| a & b)
                    }
                    Some(vmax) => chunks
                        .zip(vmax.par_chunks_mut(CHUNK))
                        .with_min_len(split_if_threads(1))
                        .map(|((((t, g), m), v), vm)| run(t, g, m, v, vm))
                        .reduce(|| true, |a, b| a & b),
                }
            };
            if !finite && first_non_finite.is_none() {
                first_non_finite = Some(at);
            }
        }
        first_non_finite
    }

    fn save_state(&self, into: &mut super::OptimizerState) {
        let kinds = [("exp_avg", &self.m), ("exp_avg_sq", &self.v), ("max_exp_avg_sq", &self.v_max)];
        super::save_states(into, self.k as u64, &kinds[..if self.amsgrad { 3 } else { 2 }]);
        // The own step count of each parameter that joined late (PyTorch's per-parameter `step`);
        // the others' is the optimizer's.
        for (pname, born) in &self.born {
            into.insert(
                "step",
                pname,
                crate::tensor::Tensor::from_vec(&[1], vec![(self.k - born) as f32]).expect("[1]"),
            );
        }
    }

    fn visit_buffer_shapes(&self, f: &mut dyn FnMut(&str, &str, &[usize])) {
        self.m.visit_shapes("exp_avg", f);
        self.v.visit_shapes("exp_avg_sq", f);
        if self.amsgrad {
            self.v_max.visit_shapes("max_exp_avg_sq", f);
        }
    }

    fn load_state(&mut self, state: &super::OptimizerState, name: &str) -> crate::Result<()> {
        let kinds: &[&str] = if self.amsgrad {
            &["exp_avg", "exp_avg_sq", "max_exp_avg_sq", "step"]
        } else {
            &["exp_avg", "exp_avg_sq", "step"]
        };
        state.check_kinds(name, kinds)?;
        let k = i32::try_from(state.steps()).map_err(|_| {
            crate::Error::invalid(format!(
                "{name}: {} steps is more than this optimizer counts",
                state.steps()
            ))
        })?;
        let mut born = std::collections::BTreeMap::new();
        for (kind, pname, t) in state.iter().filter(|(kind, ..)| *kind == "step") {
            let step = match t.data() {
                [s] if s.fract() == 0.0
                    && *s >= 1.0
                    && *s <= k as f32
                    && state.get("exp_avg", pname).is_some() =>
                {
                    *s as i32
                }
                _ => {
                    return Err(crate::Error::invalid(format!(
                        "{name}: the {kind:?} of {pname:?} is {:?}, not a whole count from 1 to the optimizer's {k} \
                         steps for a parameter with moments (the state is damaged)",
                        t.data()
                    )));
                }
            };
            if step < k {
                born.insert(pname.to_string(), k - step);
            }
        }
        self.k = k;
        self.born = born;
        super::load_kind(&mut self.m, "exp_avg", state);
        super::load_kind(&mut self.v, "exp_avg_sq", state);
        super::load_kind(&mut self.v_max, "max_exp_avg_sq", state);
        Ok(())
    }

    fn describe(&self, name: &str) -> String {
        let mut s = format!("{name}(lr={}", self.lr);
        if (self.beta1, self.beta2) != (0.9, 0.999) {
            s += &format!(", betas=({}, {})", self.beta1, self.beta2);
        }
        if self.eps != 1e-8 {
            s += &format!(", eps={}", self.eps);
        }
        if self.weight_decay != 0.0 {
            s += &format!(", weight_decay={}", self.weight_decay);
        }
        if self.amsgrad {
            s += ", amsgrad";
        }
        s + ")"
    }
}

/// Elements per parallel task of an update (small parameters stay on one thread).
const CHUNK: usize = 1 << 14;

/// The scalars of one step.
#[derive(Clone, Copy)]
struct Hyper {
    lr: f32,
    beta1: f32,
    beta2: f32,
    wd: f32,
    /// `η·√(1 − β₂ᵏ) / (1 − β₁ᵏ)`.
    step_size_times_bias2_sqrt: f32,
    /// `ε·√(1 − β₂ᵏ)`.
    eps_times_bias2_sqrt: f32,
}

/// The Adam update of one slice of a parameter, for each combination of AdamW's decoupled decay
/// and AMSGrad (as compile-time flags, so the inner loop has no branches and vectorises), 8 wide
/// where the CPU has AVX2 (the same operations either way: a square root and a division per
/// element dominate, and twice the lanes halve their cost). True if every new value is finite.
fn update<const DECOUPLED: bool, const AMSGRAD: bool>(
    theta: &mut [f32],
    grad: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    v_max: &mut [f32],
    h: &Hyper,
) -> bool {
    crate::tensor::simd::wide!(update_loop::<DECOUPLED, AMSGRAD>(theta, grad, m, v, v_max, h))
}

#[inline(always)]
fn update_loop<const DECOUPLED: bool, const AMSGRAD: bool>(
    theta: &mut [f32],
    grad: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    v_max: &mut [f32],
    h: &Hyper,
) -> bool {
    // Slices of one length, so that the loop runs without bounds checks.
    let n = theta.len();
    let mut largest = 0u32; // at least INFINITY_BITS once a new value is NaN or ±∞
    let (grad, m, v) = (&grad[..n], &mut m[..n], &mut v[..n]);
    let v_max = if AMSGRAD { &mut v_max[..n] } else { v_max };
    for i in 0..n {
        let (t, g) = (&mut theta[i], grad[i]);
        let g = if DECOUPLED {
            *t *= 1.0 - h.lr * h.wd; // AdamW: θ ← θ − ηλθ
            g
        } else {
            g + h.wd * *t // Adam: g ← g + λθ
        };
        m[i] += (1.0 - h.beta1) * (g - m[i]); // m ← β₁m + (1 − β₁)g, written as PyTorch's lerp
        v[i] = h.beta2 * v[i] + (1.0 - h.beta2) * g * g; // v ← β₂v + (1 − β₂)g²
        let v_used = if AMSGRAD {
            v_max[i] = v_max[i].max(v[i]); // AMSGrad: v_max ← max(v_max, v)
            v_max[i]
        } else {
            v[i]
        };
        // θ ← θ − η·m̂/(√v̂ + ε), with √(1 − β₂ᵏ) moved out of the denominator: one division. The
        // quotient first, as PyTorch's `addcdiv` (it is at most about 1/√(1 − β₂)): a huge step
        // size times a large m would overflow before the division shrank it.
        *t -= h.step_size_times_bias2_sqrt * (m[i] / (v_used.sqrt() + h.eps_times_bias2_sqrt));
        // θ, and v: a gradient past about 6·10²⁰ overflows g² to ∞, after which √v̂ = ∞ holds that
        // coordinate still for good (θ stays finite: the update is 0), so v is watched too.
        largest = largest.max(magnitude_bits(*t)).max(magnitude_bits(v[i]));
    }
    largest < INFINITY_BITS
}

macro_rules! adam_builders {
    ($ty:ident) => {
        impl $ty {
            /// Sets `(β₁, β₂)`, the decay rates of the two running averages.
            ///
            /// # Panics
            /// Unless both are in `[0, 1)`.
            pub fn betas(mut self, beta1: f32, beta2: f32) -> $ty {
                assert!(
                    (0.0..1.0).contains(&beta1) && (0.0..1.0).contains(&beta2),
                    "{}: betas must be in [0, 1), got ({beta1}, {beta2})",
                    stringify!($ty)
                );
                (self.0.beta1, self.0.beta2) = (beta1, beta2);
                self
            }

            /// Sets `ε`, added to the denominator for stability.
            ///
            /// # Panics
            /// Unless `eps` is a finite number > 0 (with 0, a coordinate whose gradient has always
            /// been 0 divides 0 by 0).
            pub fn eps(mut self, eps: f32) -> $ty {
                assert!(
                    eps.is_finite() && eps > 0.0,
                    "{}: eps must be a finite number > 0, got {eps}",
                    stringify!($ty)
                );
                self.0.eps = eps;
                self
            }

            /// Sets the weight decay `λ`.
            ///
            /// # Panics
            /// Unless `weight_decay` is in `[0, 1]` (typical values are 10⁻⁵ … 10⁻¹).
            pub fn weight_decay(mut self, weight_decay: f32) -> $ty {
                self.0.weight_decay = check_factor(stringify!($ty), "weight decay", weight_decay, 1.0);
                self
            }

            /// Uses the AMSGrad variant (the maximum of all `v` so far in the denominator).
            pub fn amsgrad(mut self) -> $ty {
                self.0.amsgrad = true;
                self
            }
        }
    };
}

/// Adam, with optional L2 weight decay and AMSGrad. Defaults: β = (0.9, 0.999), ε = 1e-8, λ = 0.
/// See the [module docs](self) for the update.
///
/// ```
/// use backprop::layers::Param;
/// use backprop::optim::{Adam, Optimizer};
/// use backprop::Tensor;
/// let mut p = Param::new(Tensor::from_vec(&[1], vec![1.0]).unwrap());
/// p.grad = Tensor::from_vec(&[1], vec![123.0]).unwrap();
/// Adam::new(0.01).step_params(&mut [("w".to_string(), &mut p)]);
/// // The first step moves every coordinate by ≈ lr, whatever the gradient's size.
/// assert!((p.value.data()[0] - 0.99).abs() < 1e-6);
/// ```
#[derive(Clone, Debug)]
pub struct Adam(AdamCore);

impl Adam {
    /// Adam with learning rate `lr`.
    ///
    /// # Panics
    /// If `lr` is negative, infinite or NaN.
    pub fn new(lr: f32) -> Adam {
        Adam(AdamCore::new(check_setting("Adam", "the learning rate", lr), 0.0))
    }
}

adam_builders!(Adam);

impl Optimizer for Adam {
    fn step_params(&mut self, params: &mut [(String, &mut Param)]) {
        self.0.step(params, false, "Adam");
    }
    fn step_params_checked(&mut self, params: &mut [(String, &mut Param)]) -> Option<(String, f32)> {
        let first = self.0.step(params, false, "Adam")?;
        super::first_non_finite_of(params, |i| i >= first)
            .or_else(|| self.0.overflowed_moment(params, first, "Adam"))
    }
    fn learning_rate(&self) -> f32 {
        self.0.lr
    }
    fn set_learning_rate(&mut self, lr: f32) {
        self.0.lr = check_setting("Adam", "the learning rate", lr);
    }
    fn describe(&self) -> String {
        self.0.describe("Adam")
    }
    fn save_state(&self, into: &mut super::OptimizerState) {
        self.0.save_state(into);
    }
    fn visit_buffer_shapes(&self, f: &mut dyn FnMut(&str, &str, &[usize])) {
        self.0.visit_buffer_shapes(f);
    }
    fn load_state(&mut self, state: &super::OptimizerState) -> crate::Result<()> {
        self.0.load_state(state, "Adam")
    }
}

/// AdamW: Adam with decoupled weight decay. Defaults as PyTorch: β = (0.9, 0.999), ε = 1e-8,
/// λ = 0.01. See the [module docs](self) for the update.
#[derive(Clone, Debug)]
pub struct AdamW(AdamCore);

impl AdamW {
    /// AdamW with learning rate `lr` and weight decay 0.01.
    ///
    /// # Panics
    /// If `lr` is negative, infinite or NaN.
    pub fn new(lr: f32) -> AdamW {
        AdamW(AdamCore::new(check_setting("AdamW", "the learning rate", lr), 0.01))
    }
}

adam_builders!(AdamW);

impl Optimizer for AdamW {
    /// Decoupled decay multiplies each weight by `1 − lr·λ` every step, which must stay in
    /// `[0, 1)`: `lr·λ < 1`.
    fn check(&self) -> crate::Result<()> {
        let (lr, wd) = (self.0.lr, self.0.weight_decay);
        if lr * wd >= 1.0 {
            return Err(crate::Error::invalid(format!(
                "AdamW: lr·weight decay = {lr}·{wd} ≥ 1 would flip the sign of every weight each step"
            )));
        }
        Ok(())
    }

    fn step_params(&mut self, params: &mut [(String, &mut Param)]) {
        self.0.step(params, true, "AdamW");
    }
    fn step_params_checked(&mut self, params: &mut [(String, &mut Param)]) -> Option<(String, f32)> {
        let first = self.0.step(params, true, "AdamW")?;
        super::first_non_finite_of(params, |i| i >= first)
            .or_else(|| self.0.overflowed_moment(params, first, "AdamW"))
    }
    fn learning_rate(&self) -> f32 {
        self.0.lr
    }
    fn set_learning_rate(&mut self, lr: f32) {
        self.0.lr = check_setting("AdamW", "the learning rate", lr);
    }
    fn describe(&self) -> String {
        self.0.describe("AdamW")
    }
    fn save_state(&self, into: &mut super::OptimizerState) {
        self.0.save_state(into);
    }
    fn visit_buffer_shapes(&self, f: &mut dyn FnMut(&str, &str, &[usize])) {
        self.0.visit_buffer_shapes(f);
    }
    fn load_state(&mut self, state: &super::OptimizerState) -> crate::Result<()> {
        self.0.load_state(state, "AdamW")
    }
}
