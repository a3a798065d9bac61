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

use crate::layers::Param;
use crate::tensor::Tensor;

/// Updates parameters from their gradients.
///
/// Parameters must be passed in the same order at every step (a model's
/// [`params_mut`](crate::model::Sequential::params_mut) order): the optimizer keeps its state
/// (momentum, moment estimates) per position.
pub trait Optimizer: Send {
    /// Applies one update to every parameter, using its current gradient.
    ///
    /// # Panics
    /// If the number or shapes of the parameters differ from those of earlier steps.
    fn step(&mut self, params: &mut [&mut Param]);

    /// The current learning rate.
    fn learning_rate(&self) -> f32;

    /// Sets the learning rate (schedules call this between epochs).
    fn set_learning_rate(&mut self, lr: f32);

    /// A short description: `"Adam(lr=0.001)"`.
    fn describe(&self) -> String;
}

/// Sets every gradient to zero.
pub fn zero_grad(params: &mut [&mut Param]) {
    params.iter_mut().for_each(|p| p.zero_grad());
}

/// Rescales all gradients together so that their global L2 norm is at most `max_norm`, and returns
/// the norm before clipping (as PyTorch's `clip_grad_norm_`: scale = `max_norm / (norm + 1e-6)`
/// when that is below 1).
///
/// ```
/// use backprop::layers::Param;
/// use backprop::optim::clip_grad_norm;
/// use backprop::Tensor;
/// let mut p = Param::new("w", Tensor::zeros(&[2]));
/// p.grad = Tensor::from_vec(&[2], vec![3., 4.]).unwrap();
/// let norm = clip_grad_norm(&mut [&mut p], 1.0);
/// assert_eq!(norm, 5.0);
/// assert!((p.grad.norm() - 1.0).abs() < 1e-5);
/// ```
pub fn clip_grad_norm(params: &mut [&mut Param], max_norm: f32) -> f32 {
    let norm = global_grad_norm(params);
    let scale = max_norm / (norm + 1e-6);
    // A NaN norm scales every gradient to NaN, as in PyTorch, instead of leaving a mix of finite
    // and NaN gradients for the optimizer.
    if scale < 1.0 || scale.is_nan() {
        params.iter_mut().for_each(|p| p.grad.scale(scale));
    }
    norm
}

/// The L2 norm of all gradients together, `√(Σ_p Σ_i grad²)`, accumulated in `f64`.
pub fn global_grad_norm(params: &[&mut Param]) -> f32 {
    params.iter().map(|p| p.grad.data().iter().map(|&g| g as f64 * g as f64).sum::<f64>()).sum::<f64>().sqrt()
        as f32
}

/// Per-parameter state buffers (one tensor per parameter), created on the first step and checked
/// on every later one.
#[derive(Default, Clone, Debug)]
pub(crate) struct State {
    buffers: Vec<Tensor>,
}

impl State {
    /// The buffers for `params`, created as zeros the first time.
    ///
    /// # Panics
    /// If `params` does not match the parameters of the first call.
    pub(crate) fn get(&mut self, params: &[&mut Param], optimizer: &str) -> &mut [Tensor] {
        if self.buffers.is_empty() {
            self.buffers = params.iter().map(|p| Tensor::zeros(p.value.shape())).collect();
        }
        assert!(
            self.buffers.len() == params.len()
                && self.buffers.iter().zip(params).all(|(b, p)| b.shape() == p.value.shape()),
            "{optimizer}: step called with {} parameters of other shapes than at the first step ({} parameters); \
             use one optimizer per model",
            params.len(),
            self.buffers.len()
        );
        &mut self.buffers
    }
}
