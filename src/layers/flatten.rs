//! Flatten: `[N, d₁, d₂, …] → [N, d₁·d₂·…]`.
//!
//! Nothing is computed: the data is already laid out row-major, so flattening only changes the
//! shape. Backward likewise gives `dL/dy` back the input's shape: `dL/dx = reshape(g, x.shape)`.

use super::{InputGrad, Layer, Pass, Visit, check_grad, check_input, shape_error};
use crate::error::Result;
use crate::onnx::OnnxLayer;
use crate::tensor::Tensor;

/// Flattens every axis but the batch axis.
///
/// ```
/// use backprop::layers::{Flatten, Layer, Pass};
/// use backprop::Tensor;
/// let y = Flatten::new().forward(&Tensor::zeros(&[64, 64, 5, 5]), Pass::EVAL);
/// assert_eq!(y.shape(), &[64, 1600]);
/// ```
#[derive(Default)]
pub struct Flatten {
    in_shape: Vec<usize>,
    out_shape: Vec<usize>,
}

impl Flatten {
    /// A flatten layer.
    pub fn new() -> Flatten {
        Flatten::default()
    }
}

impl Flatten {
    /// [`Layer::forward`] on a tensor the caller gives away: only its shape changes, nothing is
    /// copied. Used by the [execution plan](crate::layers::sequential::plan).
    ///
    /// # Panics
    /// As [`Layer::forward`].
    pub fn forward_in_place(&mut self, x: Tensor) -> Tensor {
        self.out_shape = check_input(self, &x);
        self.in_shape.clear();
        self.in_shape.extend_from_slice(x.shape());
        x.reshape(&self.out_shape) // free: only the shape changes
    }

    /// [`Layer::backward`] on a gradient the caller gives away: reshaped, not copied.
    ///
    /// # Panics
    /// As [`Layer::backward`].
    pub fn backward_in_place(&mut self, g: Tensor) -> Tensor {
        check_grad("Flatten", &self.out_shape, &g);
        g.reshape(&self.in_shape)
    }
}

impl Layer for Flatten {
    fn describe(&self) -> String {
        "Flatten".into()
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        match input {
            [n, rest @ ..] => match crate::tensor::checked_numel(rest) {
                Some(features) => super::checked_output(|| "Flatten".to_string(), vec![*n, features]),
                None => {
                    Err(shape_error("Flatten", "[N, …] with fewer features than a tensor can hold", input))
                }
            },
            [] => Err(shape_error("Flatten", "[N, …]", input)),
        }
    }

    fn forward(&mut self, x: &Tensor, _pass: Pass<'_>) -> Tensor {
        self.forward_in_place(x.clone())
    }

    fn backward(&mut self, g: &Tensor, _: InputGrad) -> Option<Tensor> {
        Some(self.backward_in_place(g.clone()))
    }

    fn onnx(&self) -> Option<&dyn OnnxLayer> {
        Some(self)
    }
}

impl Visit for Flatten {}
