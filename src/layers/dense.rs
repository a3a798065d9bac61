//! Fully connected layer: `y = x·Wᵀ + b`.
//!
//! Shapes: `x [N, in]`, `W [out, in]` (PyTorch's `nn.Linear` layout), `b [out]`, `y [N, out]`.
//! Like `nn.Linear`, an input `[N, …, in]` (a sequence `[N, T, in]`, say) is mapped on its last
//! axis: every row of `in` values is one row of `x` below.
//!
//! Each output is a weighted sum of all inputs: `y[n, o] = Σᵢ x[n, i]·W[o, i] + b[o]`.
//! Backward, given `g = dL/dy [N, out]`, by the chain rule on that sum:
//!
//! ```text
//! dL/dW = gᵀ·x        [out, in]   (accumulated)    dL/dW[o, i] = Σₙ g[n, o]·x[n, i]
//! dL/db = Σₙ g[n, :]  [out]       (accumulated)
//! dL/dx = g·W         [N, in]     (returned)       dL/dx[n, i] = Σₒ g[n, o]·W[o, i]
//! ```

use super::{
    InputGrad, Layer, Param, Pass, State, StateMut, Visit, check_grad, check_input, checked_output,
    redraw_weight_and_bias, replace_parameters, shape_error, visit_weight_bias, visit_weight_bias_mut,
};
use crate::error::{Error, Result};
use crate::onnx::OnnxLayer;
use crate::privacy::per_example::PerExample;
use crate::tensor::Tensor;
use crate::tensor::gemm::{Transpose::No, Transpose::Yes, sgemm, sgemm_new, weight_gradients};
use crate::tensor::init::Init;

/// Fully connected layer `y = x·Wᵀ + b`. See the [module docs](self) for the math.
///
/// ```
/// use backprop::layers::{Dense, Layer, Pass};
/// use backprop::Tensor;
/// let mut dense = Dense::new(3, 2).seed(7);
/// let y = dense.forward(&Tensor::ones(&[4, 3]), Pass::TRAIN);
/// assert_eq!(y.shape(), &[4, 2]);
/// ```
pub struct Dense {
    pub(crate) weight: Param,
    pub(crate) bias: Option<Param>,
    init: Init,
    /// The latest input, cached for `dL/dW = gᵀ·x`.
    pub(crate) input: Tensor,
    pub(crate) out_shape: Vec<usize>,
    /// False after a [`Mode::Predict`](super::Mode::Predict) forward pass, which keeps no input.
    kept: bool,
}

impl Dense {
    /// A layer from `inputs` to `outputs` features, with a bias, He-normal weights and a zero
    /// bias. The weights are drawn with seed 0; a model redraws them from its own seed and the
    /// layer's position ([`SequentialBuilder::seed`](super::sequential::SequentialBuilder::seed)),
    /// unless [`Dense::seed`] or [`Dense::with_weights`] chose them.
    ///
    /// # Panics
    /// If its weights would be more values than a tensor can hold (a message names the size).
    pub fn new(inputs: usize, outputs: usize) -> Dense {
        Dense {
            weight: Param::drawn(&[outputs, inputs], Init::HeNormal, 0),
            bias: Some(Param::new(Tensor::zeros(&[outputs]))),
            init: Init::HeNormal,
            input: Tensor::default(),
            kept: true,
            out_shape: Vec::new(),
        }
    }

    /// Removes the bias: `y = x·Wᵀ`.
    pub fn no_bias(mut self) -> Dense {
        self.bias = None;
        self
    }

    /// Uses `init` for the weights (the bias stays zero) and redraws them with seed 0.
    ///
    /// # Panics
    /// As [`Init::tensor`] for settings no distribution has.
    pub fn init(mut self, init: Init) -> Dense {
        self.init = init;
        self.weight = Param::drawn(self.weight.value.shape(), init, 0);
        self
    }

    /// Draws the weights from the layer's initialiser with this seed (a model-wide seed then
    /// leaves them alone).
    pub fn seed(mut self, seed: u64) -> Dense {
        self.reset_parameters(seed);
        self
    }

    /// Redraws the weights from the layer's initialiser with `seed`, and zeroes the bias.
    pub fn reset_parameters(&mut self, seed: u64) {
        redraw_weight_and_bias(self.init, &mut self.weight, self.bias.as_mut(), seed);
    }

    /// Sets the weights and bias from tensors.
    ///
    /// # Panics
    /// If the shapes are not `[out, in]` and `[out]`, or a bias is given to a layer without one.
    pub fn with_weights(mut self, weight: Tensor, bias: Option<Tensor>) -> Dense {
        replace_parameters("Dense", &mut self.weight, self.bias.as_mut(), weight, bias);
        self
    }

    /// Input features.
    pub fn inputs(&self) -> usize {
        self.weight.value.dim(1)
    }

    /// Output features.
    pub fn outputs(&self) -> usize {
        self.weight.value.dim(0)
    }

    /// The weight parameter, `[out, in]`.
    pub fn weight(&self) -> &Param {
        &self.weight
    }

    /// The bias parameter, `[out]`, if the layer has one.
    pub fn bias(&self) -> Option<&Param> {
        self.bias.as_ref()
    }
}

impl Dense {
    /// `dL/dx = g·W`.
    pub(crate) fn input_gradient(&self, g: &Tensor) -> Tensor {
        let (rows, i, o) = (g.len() / self.outputs(), self.inputs(), self.outputs());
        let dx = sgemm_new(rows, o, i, g.data(), No, self.weight.value.data(), No, None); // dx = g·W
        Tensor::from_vec(self.input.shape(), dx).expect("[rows, in] as the input")
    }
}

impl Dense {
    /// The forward pass on an input the caller gives up: kept for the backward pass as it is,
    /// without the copy that [`Layer::forward`] makes of a borrowed input (a Transformer block's
    /// feed-forward layers, whose inputs are its own intermediate values).
    pub(crate) fn forward_owned(&mut self, x: Tensor, pass: Pass<'_>) -> Tensor {
        let y = self.product(&x);
        self.kept = pass.keeps_for_backward();
        if self.kept {
            self.input = x;
        }
        y
    }

    /// Panics, naming the layer, if the latest forward pass kept nothing for backward.
    pub(crate) fn check_kept(&self) {
        assert!(
            self.kept,
            "{}: backward after a Mode::Predict forward pass, which keeps nothing for backward (run the \
             forward pass in Mode::Train or Mode::Eval)",
            self.describe()
        );
    }

    /// `y = x·Wᵀ + b`, checking `x` and noting the output's shape.
    fn product(&mut self, x: &Tensor) -> Tensor {
        self.out_shape = check_input(self, x);
        let (rows, i, o) = (x.len() / self.inputs(), self.inputs(), self.outputs());
        let bias = self.bias.as_ref().map(|b| b.value.data());
        let y = sgemm_new(rows, i, o, x.data(), No, self.weight.value.data(), Yes, bias); // y = x·Wᵀ + b
        Tensor::from_vec(&self.out_shape, y).expect("[rows, out] as the output shape")
    }
}

impl Layer for Dense {
    fn describe(&self) -> String {
        let bias = if self.bias.is_some() { "" } else { ", no bias" };
        format!("Dense({}→{}{bias})", self.inputs(), self.outputs())
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        if self.inputs() == 0 || self.outputs() == 0 {
            return Err(Error::shape(format!("{} has no inputs or no outputs", self.describe())));
        }
        match input {
            [_, .., i] if *i == self.inputs() => {
                let mut out = input.to_vec();
                *out.last_mut().expect("two axes or more") = self.outputs();
                checked_output(|| self.describe(), out)
            }
            _ => Err(shape_error(
                &self.describe(),
                format!("[N, {}] (or [N, …, {}])", self.inputs(), self.inputs()),
                input,
            )),
        }
    }

    fn forward(&mut self, x: &Tensor, pass: Pass<'_>) -> Tensor {
        self.kept = pass.keeps_for_backward();
        if self.kept {
            self.input.copy_from(x); // for dL/dW = gᵀ·x (not in Mode::Predict)
        }
        self.product(x)
    }

    fn backward(&mut self, g: &Tensor, input_grad: InputGrad) -> Option<Tensor> {
        self.check_kept();
        check_grad("Dense", &self.out_shape, g);
        let (rows, i, o) = (g.len() / self.outputs(), self.inputs(), self.outputs());
        let (x, dw) = (self.input.data(), self.weight.grad.data_mut());
        match &mut self.bias {
            Some(b) => weight_gradients((o, rows, i), g.data(), x, dw, b.grad.data_mut()), // dW += gᵀ·x, db += Σₙ g
            None => sgemm(o, rows, i, 1.0, g.data(), Yes, x, No, 1.0, dw),                 // dW += gᵀ·x
        }
        input_grad.is_needed().then(|| self.input_gradient(g))
    }

    fn per_example(&mut self) -> Option<&mut dyn PerExample> {
        Some(self)
    }

    fn onnx(&self) -> Option<&dyn OnnxLayer> {
        Some(self)
    }
}

impl Visit for Dense {
    fn visit<'a>(&'a self, f: &mut dyn FnMut(&str, State<'a>)) {
        visit_weight_bias(&self.weight, self.bias.as_ref(), f);
    }

    fn visit_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, StateMut<'a>)) {
        visit_weight_bias_mut(&mut self.weight, self.bias.as_mut(), f);
    }
}
