//! Layer normalisation over the last axis, as PyTorch's `nn.LayerNorm(D, eps,
//! elementwise_affine)`: every row of `D` values (every position of every sample) is normalised
//! on its own — no batch statistics, so training and inference compute the same thing.
//!
//! For one row `x` of `D` values, with `γ` (`weight`, starts at 1) and `β` (`bias`, starts at 0):
//!
//! ```text
//! forward:   μ = (1/D)·Σ x_j             σ² = (1/D)·Σ (x_j − μ)²      (biased, as PyTorch)
//!            s = 1/√(σ² + ε)             x̂ = (x − μ)·s               y = γ ⊙ x̂ + β
//! backward:  dγ += g ⊙ x̂                 dβ += g                      (summed over rows)
//!            ĝ = g ⊙ γ
//!            dx = s·(ĝ − mean(ĝ) − x̂ ⊙ mean(ĝ ⊙ x̂))
//! ```
//!
//! The backward line is the chain rule through `μ` and `σ²`, which every `x_j` of the row moves:
//! `dx̂/dx = s·(I − 1/D − x̂x̂ᵀ/D)` (the two subtractions are the mean's path and the variance's).
//!
//! **Why two passes.** `σ²` is computed as the mean of `(x − μ)²` after `μ` is known, never as
//! `E[x²] − μ²`: for a row with a large mean and a small spread (`10⁴ + 10⁻²·z`) the one-pass
//! formula subtracts two numbers near `10⁸` that agree in every bit f32 has, and returns 0 or a
//! negative variance; the sums here are also carried in `f64`. `tests/layernorm.rs` checks such
//! rows against PyTorch.

use super::{InputGrad, Layer, Param, Pass, State, StateMut, Visit, check_grad, checked_output, shape_error};
use crate::error::{Error, Result};
use crate::onnx::OnnxLayer;
use crate::privacy::per_example::PerExample;
use crate::tensor::Tensor;
use crate::tensor::math::{Product, SquaredDeviation, Value, sum_terms};
use crate::tensor::parallel::{add_rows_with_products, split_if_threads};
use rayon::prelude::*;

/// One row of the forward pass: `(x, x̂)` and `(y, s)`.
type RowForward<'a> = ((&'a [f32], &'a mut [f32]), (&'a mut [f32], &'a mut f32));

/// Rows per rayon task: a row is a few hundred operations, too little to hand over alone.
const ROWS_PER_TASK: usize = 64;

/// Layer normalisation over the last axis of `D` values. See the [module docs](self).
///
/// ```
/// use backprop::layers::{InputGrad, Layer, LayerNorm, Pass};
/// use backprop::Tensor;
/// let mut norm = LayerNorm::new(4);
/// let x = Tensor::from_vec(&[1, 4], vec![1., 2., 3., 4.]).unwrap();
/// let y = norm.forward(&x, Pass::TRAIN);
/// let mean: f32 = y.data().iter().sum::<f32>() / 4.0;
/// assert!(mean.abs() < 1e-6);                                  // centred
/// assert!((y.data()[3] - 1.341_635).abs() < 1e-5);             // (4 − 2.5)/√(1.25 + 1e-5)
/// let dx = norm.backward(&Tensor::ones(&[1, 4]), InputGrad::Needed).unwrap();
/// assert!(dx.data().iter().all(|d| d.abs() < 1e-6));           // a shift of y's sum changes nothing
/// ```
pub struct LayerNorm {
    dim: usize,
    eps: f32,
    /// `γ` and `β`, or neither (`elementwise_affine=False`).
    affine: Option<(Param, Param)>,
    /// The latest forward pass's `x̂` (the input's shape) and each row's `s = 1/√(σ² + ε)`.
    x_hat: Tensor,
    inv_std: Vec<f32>,
    /// False after a [`Mode::Predict`](super::Mode::Predict) forward pass, which keeps no `x̂`.
    kept: bool,
}

impl LayerNorm {
    /// Normalises rows of `dim` values, `ε = 1e-5`, with `γ` and `β` (PyTorch's defaults).
    ///
    /// # Panics
    /// If its γ and β would be more values than a tensor can hold (a message names the size).
    pub fn new(dim: usize) -> LayerNorm {
        LayerNorm {
            dim,
            eps: 1e-5,
            affine: Some((Param::new(Tensor::ones(&[dim])), Param::new(Tensor::zeros(&[dim])))),
            x_hat: Tensor::default(),
            inv_std: Vec::new(),
            kept: false,
        }
    }

    /// Sets `ε`, added to the variance inside the square root. `ε = 0` is allowed, as PyTorch
    /// allows it, but then a constant row (variance 0) normalises to `0/0 = NaN`, as PyTorch's does:
    /// keep `ε > 0` unless the rows are known to vary.
    ///
    /// # Panics
    /// If `eps` is negative or not finite.
    pub fn eps(mut self, eps: f32) -> LayerNorm {
        assert!(eps.is_finite() && eps >= 0.0, "LayerNorm: eps must be finite and ≥ 0, got {eps}");
        self.eps = eps;
        self
    }

    /// Without `γ` and `β` (`elementwise_affine=False`): `y = x̂`, no parameters.
    pub fn without_affine(mut self) -> LayerNorm {
        self.affine = None;
        self
    }

    /// Sets `γ` and `β` (each `[dim]`).
    ///
    /// # Errors
    /// [`Error::Shape`] if a shape is not `[dim]`; [`Error::InvalidArgument`] if the layer has no
    /// affine parameters, or a value is NaN or infinite (every output would be).
    pub fn with_affine(mut self, weight: Tensor, bias: Tensor) -> Result<LayerNorm> {
        let describe = self.describe();
        for (what, t) in [("weight", &weight), ("bias", &bias)] {
            if t.shape() != [self.dim] {
                return Err(Error::shape(format!(
                    "{describe}: {what} must be [{}], got {:?}",
                    self.dim,
                    t.shape()
                )));
            }
            if let Some(i) = crate::tensor::first_non_finite(t.data()) {
                return Err(Error::invalid(format!(
                    "{describe}: {what}[{i}] is {}; the weights must be finite",
                    t.data()[i]
                )));
            }
        }
        let Some((w, b)) = self.affine.as_mut() else {
            return Err(Error::invalid(format!("{describe} has no affine parameters to set")));
        };
        (w.value, b.value) = (weight, bias);
        Ok(self)
    }

    /// Values per normalised row.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// `ε`.
    pub fn epsilon(&self) -> f32 {
        self.eps
    }

    /// `(γ, β)`, if the layer has them.
    pub fn affine(&self) -> Option<(&Param, &Param)> {
        self.affine.as_ref().map(|(w, b)| (w, b))
    }
}

impl Layer for LayerNorm {
    fn describe(&self) -> String {
        let affine = if self.affine.is_some() { "" } else { ", elementwise_affine=False" };
        format!("LayerNorm({}, eps={:e}{affine})", self.dim, self.eps)
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        if self.dim == 0 {
            return Err(Error::shape(format!("{} normalises rows of no values", self.describe())));
        }
        match input.last() {
            Some(&d) if d == self.dim && input.len() >= 2 => {
                checked_output(|| self.describe(), input.to_vec())
            }
            _ => Err(shape_error(&self.describe(), format!("[N, …, {}]", self.dim), input)),
        }
    }

    fn forward(&mut self, x: &Tensor, pass: Pass<'_>) -> Tensor {
        self.output_shape(x.shape()).unwrap_or_else(|e| panic!("{e}"));
        let (d, eps) = (self.dim, self.eps as f64);
        self.kept = pass.keeps_for_backward();
        if !self.kept {
            // No backward pass follows: each row's x̂ goes straight into y, nothing is kept.
            let affine = self.affine.as_ref().map(|(w, b)| (w.value.data(), b.value.data()));
            let xs = x.data();
            return Tensor::from_row_blocks(x.shape(), d, |first, block| {
                for (r, y_row) in (first..).zip(block.chunks_exact_mut(d)) {
                    crate::tensor::simd::wide!(forward_row(&xs[r * d..][..d], None, y_row, affine, eps));
                }
            });
        }
        self.x_hat.resize_for_overwrite(x.shape()); // every value is written below
        self.inv_std.clear();
        self.inv_std.resize(x.len() / d, 0.0);
        let mut y = Tensor::zeros_in_parallel(x.shape());
        let affine = self.affine.as_ref().map(|(w, b)| (w.value.data(), b.value.data()));
        // Each row on its own (in parallel blocks of rows: the same result on any thread count).
        let row = |((x_row, xh_row), (y_row, s_out)): RowForward<'_>| {
            *s_out = crate::tensor::simd::wide!(forward_row(x_row, Some(xh_row), y_row, affine, eps));
        };
        let rows = x.data().par_chunks(d).zip(self.x_hat.data_mut().par_chunks_mut(d));
        let rows = rows.zip(y.data_mut().par_chunks_mut(d).zip(self.inv_std.par_iter_mut()));
        rows.with_min_len(split_if_threads(ROWS_PER_TASK)).for_each(row);
        y
    }

    fn backward(&mut self, g: &Tensor, input_grad: InputGrad) -> Option<Tensor> {
        self.check_kept();
        check_grad(&self.describe(), self.x_hat.shape(), g);
        if let Some((w, b)) = &mut self.affine {
            // dγ += Σ g ⊙ x̂,  dβ += Σ g  (over the rows)
            add_rows_with_products(w.grad.data_mut(), b.grad.data_mut(), g.data(), self.x_hat.data());
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

impl LayerNorm {
    /// Panics, naming the layer, if the latest forward pass kept nothing for backward.
    fn check_kept(&self) {
        assert!(
            self.kept,
            "{}: backward after a Mode::Predict forward pass, which keeps nothing for backward (run the \
             forward pass in Mode::Train or Mode::Eval), or before any forward pass",
            self.describe()
        );
    }

    /// `dx = s·(ĝ − mean(ĝ) − x̂ ⊙ mean(ĝ ⊙ x̂))` with `ĝ = g ⊙ γ`, row by row.
    fn input_gradient(&self, g: &Tensor) -> Tensor {
        let d = self.dim;
        let gamma = self.affine.as_ref().map(|(w, _)| w.value.data());
        let (g, x_hat, inv_std) = (g.data(), self.x_hat.data(), &self.inv_std);
        // Blocks of rows in parallel, each row on its own: the same bits on any thread count.
        Tensor::from_row_blocks(self.x_hat.shape(), d, |first, dx| {
            for (r, dx_row) in (first..).zip(dx.chunks_exact_mut(d)) {
                let (g_row, xh_row) = (&g[r * d..][..d], &x_hat[r * d..][..d]);
                crate::tensor::simd::wide!(backward_row(g_row, xh_row, dx_row, gamma, inv_std[r]));
            }
        })
    }
}

impl PerExample for LayerNorm {
    /// Example `n`'s `dγ` and `dβ`: the sums over its own rows only.
    fn backward_per_example(
        &mut self,
        g: &Tensor,
        input_grad: InputGrad,
        grads: &mut crate::privacy::per_example::PerExampleGrads,
    ) -> Option<Tensor> {
        self.check_kept();
        check_grad(&self.describe(), self.x_hat.shape(), g);
        let d = self.dim;
        if self.affine.is_some() {
            grads.expect_batch(&self.describe(), g.dim(0));
            let per_example = g.len() / g.dim(0).max(1);
            let [dw, db] = grads.next_slots_to_overwrite([d, d]);
            let examples =
                g.data().chunks(per_example.max(1)).zip(self.x_hat.data().chunks(per_example.max(1)));
            for ((dw_n, db_n), (g_n, xh_n)) in
                dw.data_mut().chunks_exact_mut(d).zip(db.data_mut().chunks_exact_mut(d)).zip(examples)
            {
                dw_n.fill(0.0);
                db_n.fill(0.0);
                for (g_row, xh_row) in g_n.chunks_exact(d).zip(xh_n.chunks_exact(d)) {
                    for (((dw, db), &g), &xh) in dw_n.iter_mut().zip(db_n.iter_mut()).zip(g_row).zip(xh_row) {
                        *dw += g * xh;
                        *db += g;
                    }
                }
            }
        }
        input_grad.is_needed().then(|| self.input_gradient(g))
    }
}

impl Visit for LayerNorm {
    fn visit<'a>(&'a self, f: &mut dyn FnMut(&str, State<'a>)) {
        if let Some((w, b)) = &self.affine {
            f("weight", State::Param(w));
            f("bias", State::Param(b));
        }
    }

    fn visit_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, StateMut<'a>)) {
        if let Some((w, b)) = &mut self.affine {
            f("weight", StateMut::Param(w));
            f("bias", StateMut::Param(b));
        }
    }
}

/// One row of the forward pass (the module docs' lines), writing `y` and, when given, `x̂`; returns `s`.
/// Index loops, compiled for the widest vectors by `wide!` (the same bits on every ISA).
#[allow(clippy::needless_range_loop)] // index loops on purpose: see tensor::simd
#[inline(always)]
fn forward_row(
    x: &[f32],
    x_hat: Option<&mut [f32]>,
    y: &mut [f32],
    affine: Option<(&[f32], &[f32])>,
    eps: f64,
) -> f32 {
    let d = x.len();
    let y = &mut y[..d];
    let mean = sum_terms(x, x, &Value) / d as f64; // μ
    let var = sum_terms(x, x, &SquaredDeviation(mean)) / d as f64; // σ², after μ
    let s = 1.0 / (var + eps).sqrt(); // s = 1/√(σ² + ε)
    for j in 0..d {
        y[j] = ((x[j] as f64 - mean) * s) as f32; // x̂ = (x − μ)·s, first written into y
    }
    if let Some(x_hat) = x_hat {
        x_hat[..d].copy_from_slice(y); // kept for backward
    }
    if let Some((w, b)) = affine {
        let (w, b) = (&w[..d], &b[..d]);
        for j in 0..d {
            y[j] = w[j] * y[j] + b[j]; // y = γ ⊙ x̂ + β
        }
    }
    s as f32
}

/// One row of `dx = s·(ĝ − mean(ĝ) − x̂ ⊙ mean(ĝ ⊙ x̂))`, `ĝ = g ⊙ γ` (first written into `dx`).
#[allow(clippy::needless_range_loop)] // index loops on purpose: see tensor::simd
#[inline(always)]
fn backward_row(g: &[f32], x_hat: &[f32], dx: &mut [f32], gamma: Option<&[f32]>, s: f32) {
    let d = g.len();
    let (x_hat, dx) = (&x_hat[..d], &mut dx[..d]);
    match gamma {
        Some(w) => {
            let w = &w[..d];
            for j in 0..d {
                dx[j] = g[j] * w[j]; // ĝ = g ⊙ γ
            }
        }
        None => dx.copy_from_slice(g),
    }
    let mean_g = sum_terms(dx, dx, &Value) / d as f64;
    let mean_gx = sum_terms(dx, x_hat, &Product) / d as f64;
    for j in 0..d {
        dx[j] = (s as f64 * (dx[j] as f64 - mean_g - x_hat[j] as f64 * mean_gx)) as f32;
    }
}
