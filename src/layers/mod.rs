//! Layers, each with a hand-written forward and backward pass.
//!
//! Every layer implements [`Layer`]. The contract, which the whole crate relies on:
//!
//! - [`Layer::forward`] computes `y = f(x)` and **caches** whatever the backward pass will need
//!   (the input, a mask, the arg-max positions…), in buffers it reuses from call to call;
//! - [`Layer::backward`] receives `g = dL/dy` for the `y` of the *latest* forward call, returns
//!   `dL/dx`, and **adds** `dL/dθ` into each parameter's [`Param::grad`] (so gradients of several
//!   backward passes accumulate until `zero_grad` — `Sequential::zero_grad` or `optim::zero_grad` —
//!   as in PyTorch).
//!
//! Shapes always include the batch axis first: `[N, features]` for dense data, `[N, C, H, W]` for
//! images. [`Layer::output_shape`] answers, without computing anything, what a layer makes of an
//! input shape, or says clearly why it cannot take it; `Sequential` uses it to check a whole model
//! when it is built. `forward` panics with the same message when given an input it cannot take.
//!
//! One file per layer; each opens with its forward and backward math, and the code uses the same
//! names.

pub mod activation;
pub mod batchnorm;
pub mod conv2d;
pub mod dense;
pub mod dropout;
pub mod flatten;
pub mod pool;

pub use activation::{Gelu, LeakyRelu, Relu, Sigmoid, Softmax, Tanh};
pub use batchnorm::{BatchNorm1d, BatchNorm2d};
pub use conv2d::Conv2d;
pub use dense::Dense;
pub use dropout::Dropout;
pub use flatten::Flatten;
pub use pool::{AvgPool2d, GlobalAvgPool, MaxPool2d};

use crate::error::{Error, Result};
use crate::tensor::{Tensor, shape_str};

/// Whether a layer runs as during training or as at inference.
///
/// Only some layers care: [`Dropout`] drops units only in `Train`; the batch-norm layers use the
/// batch's statistics (and update their running averages) in `Train` and the running averages in
/// `Eval`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Mode {
    /// Training: dropout active, batch norm uses and updates batch statistics.
    #[default]
    Train,
    /// Inference: deterministic, no state changes.
    Eval,
}

/// A learnable tensor and the gradient of the loss with respect to it.
#[derive(Clone, Debug)]
pub struct Param {
    /// The name within its layer, as in a PyTorch `state_dict`: `"weight"` or `"bias"`.
    pub name: &'static str,
    /// The current value.
    pub value: Tensor,
    /// `dL/dvalue`, accumulated by `backward` until zeroed.
    pub grad: Tensor,
}

impl Param {
    /// A parameter with the given value and a zero gradient of the same shape.
    pub fn new(name: &'static str, value: Tensor) -> Param {
        let grad = Tensor::zeros(value.shape());
        Param { name, value, grad }
    }

    /// Number of scalars.
    pub fn len(&self) -> usize {
        self.value.len()
    }

    /// True for an empty parameter.
    pub fn is_empty(&self) -> bool {
        self.value.is_empty()
    }

    /// Sets the gradient to zero.
    pub fn zero_grad(&mut self) {
        self.grad.fill(0.0);
    }
}

/// A network layer with an explicit backward pass. See the [module docs](self) for the contract.
pub trait Layer: Send {
    /// The layer's type name, as shown in summaries and error messages: `"Conv2d"`.
    fn name(&self) -> &'static str;

    /// A one-line description with the layer's settings: `"Conv2d(1→32, 3×3, stride 1)"`.
    fn describe(&self) -> String {
        self.name().to_string()
    }

    /// The shape of the output for an input of shape `input` (batch axis included).
    ///
    /// # Errors
    /// [`Error::Shape`] naming the layer, the expected shape and the actual one, when the layer
    /// cannot take this input.
    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>>;

    /// Computes the output and caches what [`Layer::backward`] needs.
    ///
    /// # Panics
    /// If the input has a shape the layer cannot take (the message is the one
    /// [`Layer::output_shape`] gives).
    fn forward(&mut self, x: &Tensor, mode: Mode) -> Tensor;

    /// Given `dL/dy` for the latest forward pass, accumulates `dL/dθ` into the parameters'
    /// gradients and returns `dL/dx`.
    ///
    /// # Panics
    /// If called before `forward`, or with a gradient whose shape is not the latest output's.
    fn backward(&mut self, grad_out: &Tensor) -> Tensor;

    /// Like [`Layer::forward`], taking ownership of the input, so that a layer that maps each
    /// element on its own (ReLU, dropout, flatten) can reuse the input's memory for its output
    /// instead of allocating and writing a new tensor. `Sequential` calls this for every layer but
    /// the first. The default borrows and calls `forward`.
    ///
    /// # Panics
    /// As [`Layer::forward`].
    fn forward_owned(&mut self, x: Tensor, mode: Mode) -> Tensor {
        self.forward(&x, mode)
    }

    /// Like [`Layer::backward`], taking ownership of `dL/dy` so that it can become `dL/dx` in
    /// place. The default borrows and calls `backward`.
    ///
    /// # Panics
    /// As [`Layer::backward`].
    fn backward_owned(&mut self, grad_out: Tensor) -> Tensor {
        self.backward(&grad_out)
    }

    /// Like [`Layer::backward`] when nobody needs `dL/dx` — the layer is the first of a network
    /// being trained: accumulates `dL/dθ` only. Layers for which `dL/dx` is real work (Conv2d,
    /// Dense) skip it; the default calls `backward` and drops the result.
    ///
    /// # Panics
    /// As [`Layer::backward`].
    fn backward_params_only(&mut self, grad_out: &Tensor) {
        self.backward(grad_out);
    }

    /// True for an element-wise activation `f` that is non-decreasing and has no parameters
    /// (ReLU, leaky ReLU, sigmoid, tanh). For such `f`, max pooling commutes with it:
    /// `maxpool(f(x)) = f(maxpool(x))`, and the gradients agree too (a non-decreasing `f` keeps the
    /// window's winner). `Sequential` uses this to run a pooling *before* the activation that
    /// precedes it, applying `f` to 4× fewer values; the layer list itself is not changed.
    fn commutes_with_max_pool(&self) -> bool {
        false
    }

    /// True for a max pooling whose windows do not overlap (stride ≥ kernel), the case where
    /// swapping it with a preceding [`Layer::commutes_with_max_pool`] activation gives bit-identical
    /// results (with overlapping windows the gradients would agree only up to rounding).
    fn is_disjoint_max_pool(&self) -> bool {
        false
    }

    /// The learnable parameters, in a stable order (`weight` before `bias`).
    fn params(&self) -> Vec<&Param> {
        Vec::new()
    }

    /// Mutable access to the learnable parameters, in the same order as [`Layer::params`].
    fn params_mut(&mut self) -> Vec<&mut Param> {
        Vec::new()
    }

    /// State that is saved with the weights but not learned by gradient descent, with its
    /// `state_dict` name: batch norm's `running_mean` and `running_var`.
    fn buffers(&self) -> Vec<(&'static str, &Tensor)> {
        Vec::new()
    }

    /// Mutable access to the buffers, in the same order as [`Layer::buffers`].
    fn buffers_mut(&mut self) -> Vec<(&'static str, &mut Tensor)> {
        Vec::new()
    }

    /// How many training batches a batch-norm layer has seen (PyTorch's `num_batches_tracked`,
    /// saved with the weights as an `int64` scalar); `None` for every other layer.
    fn num_batches_tracked(&self) -> Option<u64> {
        None
    }

    /// Restores the count reported by [`Layer::num_batches_tracked`] (when loading weights).
    fn set_num_batches_tracked(&mut self, _count: u64) {}

    /// Number of learnable scalars.
    fn num_params(&self) -> usize {
        self.params().iter().map(|p| p.len()).sum()
    }

    /// Sets every parameter gradient to zero.
    fn zero_grad(&mut self) {
        self.params_mut().into_iter().for_each(Param::zero_grad);
    }

    /// Restarts the layer's random number generator (only [`Dropout`] has one). `Sequential`
    /// seeds each layer from the model's seed; gradient checks reseed before every forward pass so
    /// that the random choices stay fixed while the input is perturbed.
    fn reseed(&mut self, _seed: u64) {}
}

/// Draws a layer's weight from `init` with `seed` and zeroes its bias (shared by Dense and Conv2d).
pub(crate) fn redraw_parameters(
    init: crate::tensor::init::Init,
    weight: &mut Param,
    bias: Option<&mut Param>,
    seed: u64,
) {
    let shape = weight.value.shape().to_vec();
    weight.value = init.tensor(&shape, &mut crate::tensor::rng(seed));
    if let Some(b) = bias {
        b.value.fill(0.0);
    }
}

/// Replaces a layer's weight and (optional) bias values, checking their shapes.
///
/// # Panics
/// If a shape differs from the parameter's (both shapes are in the message), or a bias is given to
/// a layer built without one.
pub(crate) fn replace_parameters(
    layer: &str,
    weight: &mut Param,
    bias: Option<&mut Param>,
    w: Tensor,
    b: Option<Tensor>,
) {
    assert_eq!(w.shape(), weight.value.shape(), "{layer}: new weight shape vs the layer's");
    weight.value = w;
    match (b, bias) {
        (Some(b), Some(p)) => {
            assert_eq!(b.shape(), p.value.shape(), "{layer}: new bias shape vs the layer's");
            p.value = b;
        }
        (None, _) => {}
        (Some(_), None) => panic!("{layer}: a bias was given to a layer built without one"),
    }
}

/// The standard "wrong input" error: names the layer, what it expected and what it got.
pub(crate) fn shape_error(layer: &str, expected: impl std::fmt::Display, actual: &[usize]) -> Error {
    Error::shape(format!("{layer} expects an input of shape {expected}, got {}", shape_str(actual)))
}

/// Runs [`Layer::output_shape`] and panics with its message if the input does not fit. Every
/// `forward` starts with this, so a wrong input fails loudly before any arithmetic.
pub(crate) fn check_input(layer: &dyn Layer, x: &Tensor) -> Vec<usize> {
    crate::alloc_tuning::tune_allocator();
    layer.output_shape(x.shape()).unwrap_or_else(|e| panic!("{e}"))
}

/// Panics unless `grad_out` has the shape of the latest output (`expected`).
pub(crate) fn check_grad(layer: &str, expected: &[usize], grad_out: &Tensor) {
    assert!(!expected.is_empty(), "{layer}: backward called before forward");
    assert!(
        grad_out.shape() == expected,
        "{layer}: backward got a gradient of shape {}, but the latest output had shape {}",
        shape_str(grad_out.shape()),
        shape_str(expected)
    );
}
