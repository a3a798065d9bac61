//! Residual connection: `y = x + f(x)`, where `f` (the body) is a [`Sequential`] chain.
//!
//! Shapes: `f` must map its input to an output of the same shape (checked when the model that
//! holds the block is built).
//!
//! Backward, given `g = dL/dy`: `y` depends on `x` along two paths, straight through and through
//! `f`, and the chain rule adds them:
//!
//! ```text
//! dL/dx = g + (df/dx)ᵀ·g = g + f.backward(g)
//! ```
//!
//! The straight path is why deep residual networks train: whatever `f`'s Jacobian does to the
//! gradient, `g` itself still reaches the earlier layers unchanged.
//!
//! Names: the body's state keeps its own names — the first convolution of a block at index 2 is
//! `"2.0.weight"` — exactly as PyTorch names a subclass of `nn.Sequential`:
//!
//! ```python
//! class Residual(torch.nn.Sequential):
//!     def forward(self, x):
//!         return x + super().forward(x)
//! ```
//!
//! so a model's safetensors file loads into the PyTorch model built the same way with
//! `load_state_dict(..., strict=True)` (`docs/pytorch.md`, `tests/pytorch_residual.rs`).

use super::{InputGrad, Layer, Pass, Sequential, State, StateMut, Visit, check_input};
use crate::error::{Error, Result};
use crate::onnx::OnnxLayer;
use crate::privacy::per_example::PerExample;
use crate::tensor::{Tensor, shape_str};

/// `y = x + f(x)`. See the [module docs](self).
///
/// ```
/// use backprop::prelude::*;
/// # fn main() -> backprop::Result<()> {
/// let block = Residual::new(Sequential::new().add(Conv2d::new(8, 8, 3).padding(1)).add(Relu::new()));
/// let model = Sequential::builder(&[8, 6, 6]).add(block).build()?;
/// assert_eq!(model.sample_output_shape(), Some(vec![8, 6, 6]));
/// // A body that changes the shape is refused when the model is built.
/// let bad = Residual::new(Sequential::new().add(Conv2d::new(8, 4, 3).padding(1)));
/// assert!(Sequential::builder(&[8, 6, 6]).add(bad).build().is_err());
/// # Ok(()) }
/// ```
pub struct Residual {
    pub(crate) body: Sequential,
}

impl Residual {
    /// A residual block around `body`.
    pub fn new(body: Sequential) -> Residual {
        Residual { body }
    }

    /// The body `f`.
    pub fn body(&self) -> &Sequential {
        &self.body
    }

    /// The body `f`, mutable.
    pub fn body_mut(&mut self) -> &mut Sequential {
        &mut self.body
    }
}

impl Layer for Residual {
    fn describe(&self) -> String {
        let inner: Vec<String> = self.body.layers().map(|l| l.describe()).collect();
        format!("Residual(x + {})", inner.join(" → "))
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        let out = self.body.output_shape(input).map_err(|e| match e {
            Error::Shape(m) => Error::shape(format!("in the residual body: {m}")),
            other => other,
        })?;
        if out != input {
            return Err(Error::shape(format!(
                "Residual: y = x + f(x) needs f to keep the shape, but it maps {} to {}",
                shape_str(input),
                shape_str(&out)
            )));
        }
        Ok(out)
    }

    fn forward(&mut self, x: &Tensor, pass: Pass<'_>) -> Tensor {
        check_input(self, x); // (f must keep the shape: named here, not by the sum below)
        let mut y = self.body.forward(x, pass); // f(x)
        y += x; // y = x + f(x)
        y
    }

    fn backward(&mut self, g: &Tensor, input_grad: InputGrad) -> Option<Tensor> {
        let through_f = self.body.backward(g, input_grad); // (df/dx)ᵀ·g
        through_f.map(|mut dx| {
            dx += g; // dL/dx = g + (df/dx)ᵀ·g
            dx
        })
    }

    fn check_values(&self, x: &Tensor) -> Result<()> {
        self.body.check_values(x)
    }

    fn check_training_shape(&self, input: &[usize]) -> Result<()> {
        self.body.check_training_shape(input)
    }

    fn per_example(&mut self) -> Option<&mut dyn PerExample> {
        Some(self)
    }

    fn onnx(&self) -> Option<&dyn OnnxLayer> {
        Some(self)
    }
}

impl Visit for Residual {
    fn visit<'a>(&'a self, f: &mut dyn FnMut(&str, State<'a>)) {
        self.body.visit(f);
    }

    fn visit_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, StateMut<'a>)) {
        self.body.visit_mut(f);
    }
}
