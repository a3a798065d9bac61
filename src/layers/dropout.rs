//! Dropout (inverted): during training, zero each unit with probability `p` and scale the
//! survivors by `1/(1−p)`, so that the expected output equals the input and nothing needs
//! rescaling at inference.
//!
//! ```text
//! train:  m_i = [u_i ≥ p] / (1 − p),  u_i ~ U[0, 1)      y = x ⊙ m      dL/dx = g ⊙ m
//! eval:   y = x                                                          dL/dx = g
//! ```
//!
//! The mask `m` is drawn from the layer's own seeded generator, so a run is reproducible.

use super::{InputGrad, Layer, Pass, State, StateMut, Visit, check_grad, check_input, shape_error};
use crate::error::Result;
use crate::onnx::OnnxLayer;
use crate::tensor::{Rng, Tensor, rng};
use rand::RngExt;

/// Inverted dropout with drop probability `p`. See the [module docs](self) for the math.
///
/// ```
/// use backprop::layers::{Dropout, Layer, Pass};
/// use backprop::Tensor;
/// let mut drop = Dropout::new(0.5).seed(1);
/// let y = drop.forward(&Tensor::ones(&[1, 1000]), Pass::TRAIN);
/// assert!(y.data().iter().all(|&v| v == 0.0 || v == 2.0));  // dropped, or scaled by 1/(1−p)
/// assert_eq!(drop.forward(&Tensor::ones(&[1, 3]), Pass::EVAL).data(), &[1., 1., 1.]);
/// ```
pub struct Dropout {
    p: f32,
    rng: Rng,
    /// The latest mask `m` (already scaled by `1/(1−p)`); empty after an eval-mode forward.
    mask: Tensor,
    out_shape: Vec<usize>,
}

impl Dropout {
    /// Drops each unit with probability `p` during training.
    ///
    /// # Panics
    /// If `p` is not in `[0, 1]`.
    pub fn new(p: f32) -> Dropout {
        assert!((0.0..=1.0).contains(&p), "Dropout: p must be in [0, 1], got {p}");
        Dropout { p, rng: rng(0), mask: Tensor::default(), out_shape: Vec::new() }
    }

    /// The same layer, generator included, with drop probability `p`.
    ///
    /// # Panics
    /// If `p` is not in `[0, 1]`.
    pub(crate) fn with_p(mut self, p: f32) -> Dropout {
        assert!((0.0..=1.0).contains(&p), "Dropout: p must be in [0, 1], got {p}");
        self.p = p;
        self
    }

    /// Seeds the generator that draws the masks.
    pub fn seed(mut self, seed: u64) -> Dropout {
        self.rng = rng(seed);
        self
    }

    /// The drop probability.
    pub fn p(&self) -> f32 {
        self.p
    }

    /// [`Layer::forward`] on a tensor the caller gives away: in inference (or with `p = 0`) the
    /// input itself comes back, no copy; in training the mask multiplies it in place. The same
    /// values and the same draws as `forward`.
    ///
    /// # Panics
    /// As [`Layer::forward`].
    pub fn forward_owned(&mut self, mut x: Tensor, pass: Pass<'_>) -> Tensor {
        self.out_shape = check_input(self, &x);
        if !pass.is_training() || self.p == 0.0 {
            self.mask = Tensor::default();
            return x; // the identity
        }
        let keep_scale = if self.p < 1.0 { 1.0 / (1.0 - self.p) } else { 0.0 };
        self.mask.resize_for_overwrite(x.shape()); // every value is written below
        for m in self.mask.data_mut() {
            *m = if self.rng.random::<f32>() >= self.p { keep_scale } else { 0.0 }; // m = [u ≥ p]/(1−p)
        }
        x.mul_assign_elem(&self.mask); // y = x ⊙ m
        x
    }

    /// [`Layer::backward`] on a gradient the caller gives away (returned as it is after an
    /// identity forward pass).
    ///
    /// # Panics
    /// As [`Layer::backward`].
    pub fn backward_owned(&mut self, mut g: Tensor) -> Tensor {
        check_grad("Dropout", &self.out_shape, &g);
        if !self.mask.is_empty() {
            g.mul_assign_elem(&self.mask); // dL/dx = g ⊙ m
        }
        g
    }

    /// Whether the latest forward pass was the identity (inference, or `p = 0`): its backward
    /// pass is then the identity too.
    pub fn was_identity(&self) -> bool {
        self.mask.is_empty()
    }
}

impl Layer for Dropout {
    fn describe(&self) -> String {
        format!("Dropout({})", self.p)
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        if input.is_empty() {
            return Err(shape_error("Dropout", "[N, …]", input));
        }
        Ok(input.to_vec())
    }

    fn forward(&mut self, x: &Tensor, pass: Pass<'_>) -> Tensor {
        self.forward_owned(x.clone(), pass)
    }

    fn backward(&mut self, g: &Tensor, _: InputGrad) -> Option<Tensor> {
        Some(self.backward_owned(g.clone_in_parallel()))
    }

    fn onnx(&self) -> Option<&dyn OnnxLayer> {
        Some(self)
    }
}

impl Visit for Dropout {
    fn visit<'a>(&'a self, f: &mut dyn FnMut(&str, State<'a>)) {
        f("rng", State::Rng(&self.rng));
    }

    fn visit_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, StateMut<'a>)) {
        f("rng", StateMut::Rng(&mut self.rng));
    }
}
