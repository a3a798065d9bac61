//! Fully connected layer: `y = x·Wᵀ + b`.
//!
//! Shapes: `x [N, in]`, `W [out, in]` (PyTorch's `nn.Linear` layout), `b [out]`, `y [N, out]`.
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
    Layer, Mode, Param, check_grad, check_input, redraw_parameters, replace_parameters, shape_error,
};
use crate::error::Result;
use crate::tensor::Tensor;
use crate::tensor::gemm::{Transpose::No, Transpose::Yes, gemm};
use crate::tensor::init::Init;

/// Fully connected layer `y = x·Wᵀ + b`. See the [module docs](self) for the math.
///
/// ```
/// use backprop::layers::{Dense, Layer, Mode};
/// use backprop::Tensor;
/// let mut dense = Dense::new(3, 2).seed(7);
/// let y = dense.forward(&Tensor::ones(&[4, 3]), Mode::Train);
/// assert_eq!(y.shape(), &[4, 2]);
/// ```
pub struct Dense {
    weight: Param,
    bias: Option<Param>,
    init: Init,
    /// The latest input, cached for `dL/dW = gᵀ·x`.
    input: Tensor,
    out_shape: Vec<usize>,
}

impl Dense {
    /// A layer from `inputs` to `outputs` features, with a bias, He-normal weights (seed 0) and a
    /// zero bias. Change them with the builder methods.
    pub fn new(inputs: usize, outputs: usize) -> Dense {
        let mut layer = Dense {
            weight: Param::new("weight", Tensor::zeros(&[outputs, inputs])),
            bias: Some(Param::new("bias", Tensor::zeros(&[outputs]))),
            init: Init::HeNormal,
            input: Tensor::default(),
            out_shape: Vec::new(),
        };
        layer.reset_parameters(0);
        layer
    }

    /// Removes the bias: `y = x·Wᵀ`.
    pub fn no_bias(mut self) -> Dense {
        self.bias = None;
        self
    }

    /// Uses `init` for the weights (the bias stays zero) and redraws them with seed 0.
    pub fn init(mut self, init: Init) -> Dense {
        self.init = init;
        self.reset_parameters(0);
        self
    }

    /// Redraws the weights with this seed.
    pub fn seed(mut self, seed: u64) -> Dense {
        self.reset_parameters(seed);
        self
    }

    /// Redraws the weights from the layer's initialiser with `seed`, and zeroes the bias.
    pub fn reset_parameters(&mut self, seed: u64) {
        redraw_parameters(self.init, &mut self.weight, self.bias.as_mut(), seed);
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

impl Layer for Dense {
    fn name(&self) -> &'static str {
        "Dense"
    }

    fn describe(&self) -> String {
        let bias = if self.bias.is_some() { "" } else { ", no bias" };
        format!("Dense({}→{}{bias})", self.inputs(), self.outputs())
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        match input {
            [n, i] if *i == self.inputs() => Ok(vec![*n, self.outputs()]),
            _ => Err(shape_error(&self.describe(), format!("[N, {}]", self.inputs()), input)),
        }
    }

    fn forward(&mut self, x: &Tensor, _mode: Mode) -> Tensor {
        self.out_shape = check_input(self, x);
        self.input.copy_from(x);
        let mut y = Tensor::zeros(&self.out_shape);
        gemm(1.0, x, No, &self.weight.value, Yes, 0.0, &mut y); // y = x·Wᵀ
        if let Some(b) = &self.bias {
            for row in y.data_mut().chunks_exact_mut(b.len()) {
                row.iter_mut().zip(b.value.data()).for_each(|(y, b)| *y += b); // y += b
            }
        }
        y
    }

    fn backward(&mut self, g: &Tensor) -> Tensor {
        self.backward_params_only(g);
        let mut dx = Tensor::zeros(self.input.shape());
        gemm(1.0, g, No, &self.weight.value, No, 0.0, &mut dx); // dx = g·W
        dx
    }

    fn backward_params_only(&mut self, g: &Tensor) {
        check_grad(self.name(), &self.out_shape, g);
        gemm(1.0, g, Yes, &self.input, No, 1.0, &mut self.weight.grad); // dW += gᵀ·x
        if let Some(b) = &mut self.bias {
            for row in g.data().chunks_exact(b.len()) {
                b.grad.data_mut().iter_mut().zip(row).for_each(|(db, g)| *db += g); // db += Σₙ g
            }
        }
    }

    fn params(&self) -> Vec<&Param> {
        std::iter::once(&self.weight).chain(self.bias.as_ref()).collect()
    }

    fn params_mut(&mut self) -> Vec<&mut Param> {
        std::iter::once(&mut self.weight).chain(self.bias.as_mut()).collect()
    }
}
