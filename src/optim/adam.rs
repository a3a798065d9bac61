//! Adam and AdamW.
//!
//! Adam keeps two running averages per parameter: `m`, of the gradient (a momentum), and `v`, of
//! its square (how large the gradient usually is). Each coordinate then steps by `m/√v`: about
//! `η` in size whatever the scale of its gradient. At step `t` (counted from 1), as PyTorch's
//! `torch.optim.Adam`:
//!
//! ```text
//! g ← g + λ·θ                          (Adam's weight decay: an L2 penalty through the gradient)
//! m ← β₁·m + (1 − β₁)·g
//! v ← β₂·v + (1 − β₂)·g²
//! v_max ← max(v_max, v)                (AMSGrad only; then v_max replaces v below)
//! θ ← θ − (η / (1 − β₁ᵗ)) · m / (√v / √(1 − β₂ᵗ) + ε)
//! ```
//!
//! **Bias correction.** `m` and `v` start at zero, so early on they underestimate the true
//! averages: after one step `m = (1 − β₁)·g`, ten times too small for β₁ = 0.9. Dividing by
//! `1 − β₁ᵗ` (and `1 − β₂ᵗ`) undoes exactly this shrinkage — after one step `m/(1 − β₁) = g` — and
//! fades to 1 as `t` grows.
//!
//! **AdamW** (`torch.optim.AdamW`) decouples the weight decay: instead of adding `λθ` to the
//! gradient (where Adam's per-coordinate scaling would distort it), it shrinks the weights
//! directly before the Adam step, `θ ← θ − η·λ·θ`.

use super::{Optimizer, State};
use crate::layers::Param;

/// Settings and state shared by [`Adam`] and [`AdamW`].
#[derive(Clone, Debug)]
struct AdamCore {
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    amsgrad: bool,
    t: i32,
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
            t: 0,
            m: State::default(),
            v: State::default(),
            v_max: State::default(),
        }
    }

    /// One Adam step; `decoupled` selects AdamW's weight decay.
    fn step(&mut self, params: &mut [&mut Param], decoupled: bool, name: &str) {
        self.t += 1;
        let (lr, b1, b2, eps, wd) = (self.lr, self.beta1, self.beta2, self.eps, self.weight_decay);
        // Scalars in f64, as PyTorch computes them in Python floats.
        let bias1 = 1.0 - (b1 as f64).powi(self.t); // 1 − β₁ᵗ
        let bias2_sqrt = (1.0 - (b2 as f64).powi(self.t)).sqrt() as f32; // √(1 − β₂ᵗ)
        let step_size = (lr as f64 / bias1) as f32; // η / (1 − β₁ᵗ)
        let ms = self.m.get(params, name);
        let vs = self.v.get(params, name);
        let mut vmaxs = if self.amsgrad { Some(self.v_max.get(params, name).iter_mut()) } else { None };
        for ((p, m), v) in params.iter_mut().zip(ms.iter_mut()).zip(vs.iter_mut()) {
            let mut v_max =
                vmaxs.as_mut().map(|it| it.next().expect("one buffer per parameter").data_mut().iter_mut());
            let (theta, grad) = (p.value.data_mut(), p.grad.data());
            for (((t, &g), m), v) in theta.iter_mut().zip(grad).zip(m.data_mut()).zip(v.data_mut()) {
                let g = if decoupled {
                    *t *= 1.0 - lr * wd; // AdamW: θ ← θ − ηλθ
                    g
                } else {
                    g + wd * *t // Adam: g ← g + λθ
                };
                *m += (1.0 - b1) * (g - *m); // m ← β₁m + (1 − β₁)g, written as PyTorch's lerp
                *v = b2 * *v + (1.0 - b2) * g * g; // v ← β₂v + (1 − β₂)g²
                let v_used = match v_max.as_mut() {
                    Some(it) => {
                        let vm = it.next().expect("same length");
                        *vm = vm.max(*v); // AMSGrad: v_max ← max(v_max, v)
                        *vm
                    }
                    None => *v,
                };
                let denom = v_used.sqrt() / bias2_sqrt + eps; // √v̂ + ε
                *t -= step_size * *m / denom; // θ ← θ − η·m̂/(√v̂ + ε)
            }
        }
    }

    fn describe(&self, name: &str) -> String {
        let mut s = format!("{name}(lr={}", self.lr);
        if (self.beta1, self.beta2) != (0.9, 0.999) {
            s += &format!(", betas=({}, {})", self.beta1, self.beta2);
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

macro_rules! adam_builders {
    ($ty:ident) => {
        impl $ty {
            /// Sets `(β₁, β₂)`, the decay rates of the two running averages.
            pub fn betas(mut self, beta1: f32, beta2: f32) -> $ty {
                (self.0.beta1, self.0.beta2) = (beta1, beta2);
                self
            }

            /// Sets `ε`, added to the denominator for stability.
            pub fn eps(mut self, eps: f32) -> $ty {
                self.0.eps = eps;
                self
            }

            /// Sets the weight decay `λ`.
            pub fn weight_decay(mut self, weight_decay: f32) -> $ty {
                self.0.weight_decay = weight_decay;
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
/// let mut p = Param::new("w", Tensor::from_vec(&[1], vec![1.0]).unwrap());
/// p.grad = Tensor::from_vec(&[1], vec![123.0]).unwrap();
/// Adam::new(0.01).step(&mut [&mut p]);
/// // The first step moves every coordinate by ≈ lr, whatever the gradient's size.
/// assert!((p.value.data()[0] - 0.99).abs() < 1e-6);
/// ```
#[derive(Clone, Debug)]
pub struct Adam(AdamCore);

impl Adam {
    /// Adam with learning rate `lr`.
    pub fn new(lr: f32) -> Adam {
        Adam(AdamCore::new(lr, 0.0))
    }
}

adam_builders!(Adam);

impl Optimizer for Adam {
    fn step(&mut self, params: &mut [&mut Param]) {
        self.0.step(params, false, "Adam");
    }
    fn learning_rate(&self) -> f32 {
        self.0.lr
    }
    fn set_learning_rate(&mut self, lr: f32) {
        self.0.lr = lr;
    }
    fn describe(&self) -> String {
        self.0.describe("Adam")
    }
}

/// AdamW: Adam with decoupled weight decay. Defaults as PyTorch: β = (0.9, 0.999), ε = 1e-8,
/// λ = 0.01. See the [module docs](self) for the update.
#[derive(Clone, Debug)]
pub struct AdamW(AdamCore);

impl AdamW {
    /// AdamW with learning rate `lr` and weight decay 0.01.
    pub fn new(lr: f32) -> AdamW {
        AdamW(AdamCore::new(lr, 0.01))
    }
}

adam_builders!(AdamW);

impl Optimizer for AdamW {
    fn step(&mut self, params: &mut [&mut Param]) {
        self.0.step(params, true, "AdamW");
    }
    fn learning_rate(&self) -> f32 {
        self.0.lr
    }
    fn set_learning_rate(&mut self, lr: f32) {
        self.0.lr = lr;
    }
    fn describe(&self) -> String {
        self.0.describe("AdamW")
    }
}
