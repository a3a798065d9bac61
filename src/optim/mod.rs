//! Optimizers: turning gradients into better weights.
//!
//! After `backward` has filled every [`Param::grad`], an optimizer's [`Optimizer::step`] moves each
//! parameter against its gradient. The update rules follow PyTorch's documentation exactly (same
//! order of operations), so that the same gradients give the same parameters to float precision:
//!
//! - [`Sgd`]: plain gradient descent, with optional momentum (heavy-ball or Nesterov), dampening
//!   and L2 weight decay;
//! - [`Adam`]: per-parameter step sizes from running averages of the gradient and its square,
//!   bias-corrected; optional L2 weight decay and AMSGrad;
//! - [`AdamW`]: Adam with *decoupled* weight decay (the weights shrink directly, not through the
//!   gradient).
//!
//! [`schedule`] changes the learning rate over time; [`clip_grad_norm`] rescales gradients whose
//! global norm is too large.

pub mod adam;
pub mod schedule;
pub mod sgd;

pub use adam::{Adam, AdamW};
pub use schedule::Schedule;
pub use sgd::Sgd;

use crate::layers::{Param, Visit, named_params_mut};
use crate::tensor::{Tensor, shape_str};
use std::collections::BTreeMap;

/// Updates parameters from their gradients.
///
/// The optimizer keeps its state (momentum, moment estimates) **per parameter name**
/// (`"0.weight"`), so the state follows the parameter whatever else changes in the parameter
/// list. Use one optimizer per model.
pub trait Optimizer: Send {
    /// Applies one update to every parameter of `model`, using its current gradient.
    ///
    /// ```
    /// use backprop::prelude::*;
    /// let mut layer = Dense::new(1, 1).no_bias().with_weights(Tensor::from_vec(&[1, 1], vec![1.0]).unwrap(), None);
    /// layer.forward(&Tensor::ones(&[1, 1]), Pass::TRAIN);
    /// layer.backward(&Tensor::from_vec(&[1, 1], vec![0.5]).unwrap(), InputGrad::NotNeeded); // dL/dW = 0.5
    /// Sgd::new(0.1).step(&mut layer);
    /// assert_eq!(layer.weight().value.data(), &[0.95]); // 1 − 0.1·0.5
    /// ```
    ///
    /// # Panics
    /// If a parameter has another shape than at an earlier step under the same name.
    fn step(&mut self, model: &mut dyn Visit) {
        self.step_params(&mut named_params_mut(model));
    }

    /// Applies one update to the given named parameters (what [`Optimizer::step`] does after
    /// collecting a model's parameters).
    ///
    /// # Panics
    /// If a parameter has another shape than at an earlier step under the same name.
    fn step_params(&mut self, params: &mut [(String, &mut Param)]);

    /// [`Optimizer::step_params`], then the first of `params` (in their order) that holds a NaN
    /// or an infinity after the update: its name and the first such value, or `None` when every
    /// value is finite. Training calls this to stop at a step too large for f32. The default
    /// scans every value after the step. An optimizer whose update is bound by memory can note a
    /// value that is not finite as it writes it, and scan only a parameter that has one (one pass
    /// over the weights instead of two), as [`Sgd`] and [`Adam`] do.
    ///
    /// ```
    /// use backprop::prelude::*;
    /// use backprop::layers::Param;
    /// let mut p = Param::new(Tensor::from_vec(&[2], vec![1.0, 2.0]).unwrap());
    /// p.grad = Tensor::from_vec(&[2], vec![0.5, -3e38]).unwrap();
    /// let mut params = [("w".to_string(), &mut p)];
    /// let found = Sgd::new(10.0).step_params_checked(&mut params); // 2 + 3e39 overflows f32
    /// assert_eq!(found, Some(("w".to_string(), f32::INFINITY)));
    /// assert_eq!(p.value.data()[0], -4.0); // the update was taken
    /// ```
    ///
    /// # Panics
    /// As [`Optimizer::step_params`].
    fn step_params_checked(&mut self, params: &mut [(String, &mut Param)]) -> Option<(String, f32)> {
        self.step_params(params);
        first_non_finite_of(params, |_| true)
    }

    /// The current learning rate.
    fn learning_rate(&self) -> f32;

    /// Sets the learning rate (schedules call this between epochs).
    ///
    /// # Panics
    /// The crate's optimizers panic if `lr` is negative, infinite or NaN.
    fn set_learning_rate(&mut self, lr: f32);

    /// A short description: `"Adam(lr=0.001)"`.
    fn describe(&self) -> String;

    /// Checks that the settings work together (each was checked alone when it was set), before
    /// training: [`fit`](crate::train::fit) calls it first, so a combination that a step would
    /// refuse is an `Err` before anything runs. The default accepts.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) naming the settings.
    fn check(&self) -> crate::Result<()> {
        Ok(())
    }

    /// Copies what the optimizer has accumulated — its step count and per-parameter buffers
    /// (momentum, Adam's moments) — into `into`, reusing `into`'s tensors when the shapes match
    /// (so that [`fit`](crate::train::fit) can keep a copy before every step without allocating,
    /// and put it back when a step is refused). The settings (learning rate, betas …) are not
    /// part of it. The default, for an optimizer without state, writes an empty state.
    ///
    /// ```
    /// use backprop::prelude::*;
    /// use backprop::optim::OptimizerState;
    /// let mut layer = Dense::new(1, 1).no_bias();
    /// layer.forward(&Tensor::ones(&[1, 1]), Pass::TRAIN);
    /// layer.backward(&Tensor::ones(&[1, 1]), InputGrad::NotNeeded);
    /// let mut adam = Adam::new(0.1);
    /// adam.step(&mut layer);
    /// let mut state = OptimizerState::default();
    /// adam.save_state(&mut state);
    /// assert_eq!(state.steps(), 1);
    /// let m = state.get("exp_avg", "weight").unwrap().data()[0];
    /// assert!((m - 0.1).abs() < 1e-6); // (1 − β₁)·g with g = 1
    /// ```
    fn save_state(&self, into: &mut OptimizerState) {
        into.clear();
    }

    /// Replaces the optimizer's step count and buffers by `state` (from
    /// [`Optimizer::save_state`] of the same kind of optimizer). A buffer's shape is checked
    /// against its parameter at the next step.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for a buffer kind this optimizer
    /// does not keep (naming it) or a step count it cannot hold; the optimizer is then unchanged.
    /// The default accepts only an empty state.
    fn load_state(&mut self, state: &OptimizerState) -> crate::Result<()> {
        state.check_kinds(&self.describe(), &[])
    }

    /// Hands `f` the kind, the parameter name and the shape of every per-parameter buffer the
    /// optimizer holds, without copying them: how [`fit`](crate::train::fit) and
    /// [`train_step`](crate::train::train_step) check, before a step, that the buffers fit the
    /// model's parameters. The default reads them from a [`Optimizer::save_state`] copy; the
    /// crate's optimizers override it to read their buffers in place.
    fn visit_buffer_shapes(&self, f: &mut dyn FnMut(&str, &str, &[usize])) {
        let mut state = OptimizerState::default();
        self.save_state(&mut state);
        for (kind, name, buffer) in state.iter() {
            f(kind, name, buffer.shape());
        }
    }
}

/// An optimizer's accumulated state: how many steps it has taken and, per kind of buffer
/// (`"momentum_buffer"`, `"exp_avg"`, `"exp_avg_sq"`, `"max_exp_avg_sq"`: PyTorch's names) and per
/// parameter name, one tensor of the parameter's shape. See [`Optimizer::save_state`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OptimizerState {
    steps: u64,
    buffers: BTreeMap<String, BTreeMap<String, Tensor>>,
}

impl OptimizerState {
    /// Steps taken (Adam's bias correction depends on it).
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Sets the step count.
    pub fn set_steps(&mut self, steps: u64) {
        self.steps = steps;
    }

    /// The buffer of `kind` for parameter `param`.
    pub fn get(&self, kind: &str, param: &str) -> Option<&Tensor> {
        self.buffers.get(kind)?.get(param)
    }

    /// Sets the buffer of `kind` for parameter `param` (replacing one of that name).
    pub fn insert(&mut self, kind: &str, param: &str, value: Tensor) {
        self.buffers.entry(kind.to_string()).or_default().insert(param.to_string(), value);
    }

    /// Every buffer as `(kind, parameter, tensor)`, sorted by kind then parameter.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str, &Tensor)> {
        self.buffers.iter().flat_map(|(k, m)| m.iter().map(move |(p, t)| (k.as_str(), p.as_str(), t)))
    }

    /// Number of buffers.
    pub fn len(&self) -> usize {
        self.buffers.values().map(BTreeMap::len).sum()
    }

    /// True without buffers.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets everything: zero steps, no buffers.
    pub fn clear(&mut self) {
        self.steps = 0;
        self.buffers.clear();
    }

    /// Refuses kinds other than `kinds`, naming the optimizer.
    pub(crate) fn check_kinds(&self, optimizer: &str, kinds: &[&str]) -> crate::Result<()> {
        for (kind, param, buffer) in self.iter() {
            if !kinds.contains(&kind) {
                let keeps = if kinds.is_empty() { "no buffers".to_string() } else { kinds.join(", ") };
                return Err(crate::Error::invalid(format!(
                    "{optimizer}: cannot load a {kind:?} buffer (for {param:?}); it keeps {keeps}"
                )));
            }
            // Values no run could have left: a NaN or ∞ anywhere, a negative average of squares.
            let squares = kind.ends_with("exp_avg_sq");
            if let Some(i) = buffer.data().iter().position(|&v| !v.is_finite() || (squares && v < 0.0)) {
                return Err(crate::Error::invalid(format!(
                    "{optimizer}: the {kind:?} buffer for {param:?} holds {} at element {i}{} (the state is damaged)",
                    buffer.data()[i],
                    if squares {
                        ": an average of squares is finite and ≥ 0"
                    } else {
                        ": it must be finite"
                    }
                )));
            }
        }
        Ok(())
    }

    /// Copies `from` under `kind`, reusing tensors of the same name and shape (an empty `from`
    /// leaves no entry, so that equal states compare equal).
    fn save_kind(&mut self, kind: &str, from: &State) {
        if from.buffers.is_empty() {
            self.buffers.remove(kind);
            return;
        }
        if !self.buffers.contains_key(kind) {
            self.buffers.insert(kind.to_string(), BTreeMap::new());
        }
        let to = self.buffers.get_mut(kind).expect("inserted above");
        to.retain(|name, _| from.buffers.contains_key(name));
        for (name, t) in &from.buffers {
            match to.get_mut(name) {
                Some(d) if d.shape() == t.shape() => d.copy_from(t),
                _ => {
                    to.insert(name.clone(), t.clone());
                }
            }
        }
    }
}

/// Writes the optimizer's steps and `(kind, buffers)` into `into`, dropping other kinds.
pub(crate) fn save_states(into: &mut OptimizerState, steps: u64, kinds: &[(&str, &State)]) {
    into.steps = steps;
    into.buffers.retain(|k, _| kinds.iter().any(|(kind, _)| kind == k));
    for (kind, state) in kinds {
        into.save_kind(kind, state);
    }
}

/// Reads the buffers of `kind` from `from` into `to` (reusing tensors of the same shape).
pub(crate) fn load_kind(to: &mut State, kind: &str, from: &OptimizerState) {
    let empty = BTreeMap::new();
    let src = from.buffers.get(kind).unwrap_or(&empty);
    to.buffers.retain(|name, _| src.contains_key(name));
    for (name, t) in src {
        match to.buffers.get_mut(name) {
            Some(d) if d.shape() == t.shape() => d.copy_from(t),
            _ => {
                to.buffers.insert(name.clone(), t.clone());
            }
        }
    }
}

/// Panics unless `value` is a finite number ≥ 0: the check every optimizer setting goes through
/// when it is built, so that an invalid learning rate can never reach the weights.
pub(crate) fn check_setting(optimizer: &str, setting: &str, value: f32) -> f32 {
    assert!(
        value.is_finite() && value >= 0.0,
        "{optimizer}: {setting} must be a finite number ≥ 0, got {value}"
    );
    value
}

/// Panics unless `value` is in `[0, max]` (momentum, dampening, weight decay: factors for which
/// larger values only make training diverge).
pub(crate) fn check_factor(optimizer: &str, setting: &str, value: f32, max: f32) -> f32 {
    assert!(
        value.is_finite() && (0.0..=max).contains(&value),
        "{optimizer}: {setting} must be in [0, {max}], got {value}"
    );
    value
}

/// The first of `params` (among those `suspect` picks by position) whose value holds a NaN or an
/// infinity: its name and the first such value.
pub(crate) fn first_non_finite_of(
    params: &[(String, &mut Param)],
    suspect: impl Fn(usize) -> bool,
) -> Option<(String, f32)> {
    params.iter().enumerate().filter(|&(i, _)| suspect(i)).find_map(|(_, (name, p))| {
        let values = p.value.data();
        crate::tensor::first_non_finite(values).map(|i| (name.clone(), values[i]))
    })
}

/// Sets every gradient to zero.
pub fn zero_grad(params: &mut [(String, &mut Param)]) {
    params.iter_mut().for_each(|(_, p)| p.zero_grad());
}

/// Rescales all gradients together so that their global L2 norm is at most `max_norm`, and returns
/// the norm before clipping (as PyTorch's `clip_grad_norm_`: scale = `max_norm / (norm + 1e-6)`
/// when that is below 1).
///
/// Two edges differ from PyTorch's: a gradient that is not finite makes every gradient NaN
/// (PyTorch's scale of 0 or NaN leaves finite and NaN gradients mixed), and finite gradients whose
/// squared norm overflows `f32` (a norm above about 1.8·10¹⁹) are clipped by their norm taken in
/// `f64` (PyTorch's `f32` norm is ∞ there, and it zeroes every gradient); the norm returned is
/// then the `f64` norm, or ∞ where that overflows `f32` too.
///
/// ```
/// use backprop::layers::Param;
/// use backprop::optim::clip_grad_norm;
/// use backprop::Tensor;
/// let mut p = Param::new(Tensor::zeros(&[2]));
/// p.grad = Tensor::from_vec(&[2], vec![3., 4.]).unwrap();
/// let norm = clip_grad_norm(&mut [("w".to_string(), &mut p)], 1.0);
/// assert_eq!(norm, 5.0);
/// assert!((p.grad.norm() - 1.0).abs() < 1e-5);
/// ```
///
/// # Panics
/// If `max_norm` is not a positive finite number (a negative one would reverse every gradient).
pub fn clip_grad_norm(params: &mut [(String, &mut Param)], max_norm: f32) -> f32 {
    assert!(
        max_norm.is_finite() && max_norm > 0.0,
        "clip_grad_norm: max_norm must be a positive number, got {max_norm}"
    );
    let norm = grad_norm_f64(params);
    // A norm that is not finite (a gradient that is not) scales every gradient to NaN, instead of
    // leaving a mix of finite and NaN gradients for the optimizer (an infinite norm: ∞·0 and x·0
    // would give NaN and 0). The scale is taken in f64: finite gradients can have a norm past f32
    // (two of 3·10³⁸), whose scale is still an f32.
    let scale = if norm.is_finite() { (max_norm as f64 / (norm + 1e-6)) as f32 } else { f32::NAN };
    if scale < 1.0 || scale.is_nan() {
        params.iter_mut().for_each(|(_, p)| p.grad.scale(scale));
    }
    norm as f32
}

/// The L2 norm of all gradients together, `√(Σ_p Σ_i grad²)`, accumulated in `f64` (∞ for a
/// norm past f32).
pub fn global_grad_norm(params: &[(String, &mut Param)]) -> f32 {
    grad_norm_f64(params) as f32
}

/// [`global_grad_norm`] before its rounding to f32 (finite whenever every gradient is).
fn grad_norm_f64(params: &[(String, &mut Param)]) -> f64 {
    let squares = |p: &Param| p.grad.data().iter().map(|&g| g as f64 * g as f64).sum::<f64>();
    params.iter().map(|(_, p)| squares(p)).sum::<f64>().sqrt()
}

/// One state tensor per parameter name (a momentum buffer, Adam's `m` …), created as zeros at
/// the parameter's first step.
#[derive(Default, Clone, Debug)]
pub(crate) struct State {
    buffers: BTreeMap<String, Tensor>,
}

impl State {
    /// `f(kind, name, shape)` for each buffer (see [`Optimizer::visit_buffer_shapes`]).
    pub(crate) fn visit_shapes(&self, kind: &str, f: &mut dyn FnMut(&str, &str, &[usize])) {
        for (name, buffer) in &self.buffers {
            f(kind, name, buffer.shape());
        }
    }

    /// The buffer of parameter `name`, if it has one yet.
    pub(crate) fn find(&self, name: &str) -> Option<&Tensor> {
        self.buffers.get(name)
    }

    /// The buffer of parameter `name`, created as zeros of `param`'s shape the first time.
    ///
    /// # Panics
    /// If `param` has another shape than at its first step.
    pub(crate) fn get(&mut self, name: &str, param: &Param, optimizer: &str) -> &mut Tensor {
        if !self.buffers.contains_key(name) {
            self.buffers.insert(name.to_string(), Tensor::zeros(param.value.shape()));
        }
        let buffer = self.buffers.get_mut(name).expect("inserted above");
        assert!(
            buffer.shape() == param.value.shape(),
            "{optimizer}: parameter {name:?} has shape {} but had {} at an earlier step; use one optimizer per model",
            shape_str(param.value.shape()),
            shape_str(buffer.shape())
        );
        buffer
    }
}
