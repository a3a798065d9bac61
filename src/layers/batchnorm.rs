//! Batch normalisation over the channel axis (axis 1): `BatchNorm1d` for `[N, C]` (or `[N, C, L]`),
//! `BatchNorm2d` for `[N, C, H, W]`.
//!
//! For each channel `c`, over its `m` values in the batch (`m = N`, `N·L` or `N·H·W`):
//!
//! ```text
//! train:  μ = (1/m) Σ x          σ² = (1/m) Σ (x − μ)²        (batch statistics, biased variance)
//!         running_mean ← (1 − 0.1)·running_mean + 0.1·μ
//!         running_var  ← (1 − 0.1)·running_var  + 0.1·σ²·m/(m − 1)   (unbiased, as PyTorch)
//! eval:   μ = running_mean,  σ² = running_var
//! both:   x̂ = (x − μ) / √(σ² + ε)       y = γ·x̂ + β
//! ```
//!
//! Backward, given `g = dL/dy`, with sums over the channel's `m` values:
//!
//! ```text
//! dL/dγ = Σ g·x̂          dL/dβ = Σ g                                         (accumulated)
//! train:  dL/dx = γ / (m·√(σ² + ε)) · (m·g − Σ g − x̂·Σ(g·x̂))                   (returned)
//! eval:   dL/dx = γ / √(σ² + ε) · g       (μ and σ² are constants there)
//! ```
//!
//! The train-mode `dL/dx` has two extra terms because `μ` and `σ²` depend on every `x` of the
//! batch: moving one input moves the mean and variance that normalise all the others.

use super::{InputGrad, Layer, Param, Pass, State, StateMut, Visit, check_grad, check_input, shape_error};
use crate::error::Result;
use crate::onnx::OnnxLayer;
use crate::tensor::Tensor;
use crate::tensor::math::feature_split as split;

/// The shared implementation; [`BatchNorm1d`] and [`BatchNorm2d`] differ only in the ranks they accept.
struct BatchNorm {
    name: &'static str,
    channels: usize,
    eps: f32,
    momentum: f32,
    weight: Param,
    bias: Param,
    running_mean: Tensor,
    running_var: Tensor,
    batches_tracked: u64,
    // Caches of the latest forward pass.
    x_hat: Tensor,
    inv_std: Vec<f32>,
    train: bool,
}

impl BatchNorm {
    fn new(name: &'static str, channels: usize) -> BatchNorm {
        BatchNorm {
            name,
            channels,
            eps: 1e-5,
            momentum: 0.1,
            weight: Param::new(Tensor::ones(&[channels])),
            bias: Param::new(Tensor::zeros(&[channels])),
            running_mean: Tensor::zeros(&[channels]),
            running_var: Tensor::ones(&[channels]),
            batches_tracked: 0,
            x_hat: Tensor::default(),
            inv_std: Vec::new(),
            train: false,
        }
    }

    fn describe(&self) -> String {
        format!("{}({})", self.name, self.channels)
    }

    fn check(&self, input: &[usize], ranks: &[usize], expected: &str) -> Result<Vec<usize>> {
        if self.channels == 0 || !ranks.contains(&input.len()) || input[1] != self.channels {
            return Err(shape_error(&self.describe(), expected, input));
        }
        Ok(input.to_vec())
    }

    /// Training estimates a variance per channel from the `N·H·W` values of the batch: it needs
    /// at least two of them.
    fn check_training_shape(&self, input: &[usize]) -> Result<()> {
        let (n, _, inner) = split(input);
        if n * inner > 1 {
            return Ok(());
        }
        Err(crate::Error::invalid(format!(
            "{} cannot train on a batch of shape {}: it needs more than one value per channel to estimate a \
             variance",
            self.describe(),
            crate::tensor::shape_str(input)
        )))
    }

    fn forward(&mut self, x: &Tensor, pass: Pass<'_>) -> Tensor {
        let (n, c, inner) = split(x.shape());
        let m = n * inner;
        self.train = pass.is_training();
        self.inv_std.resize(c, 0.0);
        let mut mean = vec![0.0f32; c];
        if self.train {
            assert!(
                m > 1,
                "{}: training needs more than one value per channel, got input shape {:?}",
                self.describe(),
                x.shape()
            );
            self.batches_tracked = self.batches_tracked.saturating_add(1); // (a loaded count may be near u64::MAX)
            for (ch, (mu, inv)) in mean.iter_mut().zip(self.inv_std.iter_mut()).enumerate() {
                let values =
                    || (0..n).flat_map(move |b| x.data()[(b * c + ch) * inner..][..inner].iter().copied());
                let mu64 = values().map(f64::from).sum::<f64>() / m as f64; // μ
                let var64 = values().map(|v| (v as f64 - mu64).powi(2)).sum::<f64>() / m as f64; // σ²
                *mu = mu64 as f32;
                *inv = 1.0 / (var64 as f32 + self.eps).sqrt();
                let rm = &mut self.running_mean.data_mut()[ch];
                *rm = (1.0 - self.momentum) * *rm + self.momentum * mu64 as f32;
                let rv = &mut self.running_var.data_mut()[ch];
                *rv =
                    (1.0 - self.momentum) * *rv + self.momentum * (var64 * m as f64 / (m - 1) as f64) as f32;
            }
        } else {
            mean.copy_from_slice(self.running_mean.data());
            for (inv, &var) in self.inv_std.iter_mut().zip(self.running_var.data()) {
                *inv = 1.0 / (var + self.eps).sqrt();
            }
        }
        self.x_hat.copy_from(x);
        let mut y = Tensor::zeros(x.shape());
        let (gamma, beta) = (self.weight.value.data(), self.bias.value.data());
        for (i, (xh_row, y_row)) in self
            .x_hat
            .data_mut()
            .chunks_exact_mut(inner)
            .zip(y.data_mut().chunks_exact_mut(inner))
            .enumerate()
        {
            let ch = i % c;
            for (xh, yv) in xh_row.iter_mut().zip(y_row) {
                *xh = (*xh - mean[ch]) * self.inv_std[ch]; // x̂ = (x − μ)/√(σ² + ε)
                *yv = gamma[ch] * *xh + beta[ch]; // y = γ·x̂ + β
            }
        }
        y
    }

    fn backward(&mut self, g: &Tensor) -> Tensor {
        let (n, c, inner) = split(self.x_hat.shape());
        let m = (n * inner) as f32;
        // Per channel: Σ g and Σ g·x̂.
        let (mut sum_g, mut sum_gx) = (vec![0.0f64; c], vec![0.0f64; c]);
        for (i, (g_row, xh_row)) in
            g.data().chunks_exact(inner).zip(self.x_hat.data().chunks_exact(inner)).enumerate()
        {
            let ch = i % c;
            for (&gv, &xh) in g_row.iter().zip(xh_row) {
                sum_g[ch] += gv as f64;
                sum_gx[ch] += gv as f64 * xh as f64;
            }
        }
        for ch in 0..c {
            self.weight.grad.data_mut()[ch] += sum_gx[ch] as f32; // dγ += Σ g·x̂
            self.bias.grad.data_mut()[ch] += sum_g[ch] as f32; // dβ += Σ g
        }
        let gamma = self.weight.value.data();
        let mut dx = Tensor::zeros(self.x_hat.shape());
        let rows = dx.data_mut().chunks_exact_mut(inner).zip(g.data().chunks_exact(inner));
        for (i, ((dx_row, g_row), xh_row)) in rows.zip(self.x_hat.data().chunks_exact(inner)).enumerate() {
            let ch = i % c;
            let k = gamma[ch] * self.inv_std[ch];
            if self.train {
                let (sg, sgx) = (sum_g[ch] as f32, sum_gx[ch] as f32);
                for ((d, &gv), &xh) in dx_row.iter_mut().zip(g_row).zip(xh_row) {
                    *d = k / m * (m * gv - sg - xh * sgx); // γ/(m√(σ²+ε))·(m·g − Σg − x̂·Σg·x̂)
                }
            } else {
                dx_row.iter_mut().zip(g_row).for_each(|(d, &gv)| *d = k * gv); // γ/√(σ²+ε)·g
            }
        }
        dx
    }
}

macro_rules! batchnorm_layer {
    ($(#[$doc:meta])* $ty:ident, $name:literal, $ranks:expr, $expected:literal) => {
        $(#[$doc])*
        pub struct $ty(BatchNorm);

        impl $ty {
            /// Batch normalisation over `channels` channels, with ε = 1e-5, momentum 0.1,
            /// γ = 1, β = 0, running mean 0 and running variance 1 (PyTorch's defaults).
            pub fn new(channels: usize) -> $ty {
                $ty(BatchNorm::new($name, channels))
            }

            /// Sets ε, the constant added to the variance.
            ///
            /// # Panics
            /// If `eps` is not a finite number ≥ 0 (a NaN or negative ε would make every output
            /// NaN, found only at the first loss).
            pub fn eps(mut self, eps: f32) -> $ty {
                assert!(eps.is_finite() && eps >= 0.0, "{}: eps must be finite and ≥ 0, got {eps}", $name);
                self.0.eps = eps;
                self
            }

            /// Sets the momentum of the running statistics (PyTorch convention:
            /// `running ← (1 − momentum)·running + momentum·batch`).
            ///
            /// # Panics
            /// If `momentum` is not in `[0, 1]` (NaN included): the running statistics would turn
            /// NaN or stray from the data, and only the predictions would show it.
            pub fn momentum(mut self, momentum: f32) -> $ty {
                assert!(
                    (0.0..=1.0).contains(&momentum),
                    "{}: momentum must be in [0, 1], got {momentum}",
                    $name
                );
                self.0.momentum = momentum;
                self
            }

            /// The `ε` added to the variance.
            pub fn epsilon(&self) -> f32 {
                self.0.eps
            }

            /// The running mean, `[C]`.
            pub fn running_mean(&self) -> &Tensor {
                &self.0.running_mean
            }

            /// The running variance, `[C]`.
            pub fn running_var(&self) -> &Tensor {
                &self.0.running_var
            }

            /// How many training batches the layer has seen (PyTorch's `num_batches_tracked`).
            pub fn num_batches_tracked(&self) -> u64 {
                self.0.batches_tracked
            }
        }

        impl Layer for $ty {
            fn describe(&self) -> String {
                self.0.describe()
            }

            fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
                self.0.check(input, &$ranks, &format!($expected, self.0.channels))
            }

            fn check_training_shape(&self, input: &[usize]) -> Result<()> {
                self.0.check_training_shape(input)
            }

            fn forward(&mut self, x: &Tensor, pass: Pass<'_>) -> Tensor {
                check_input(self, x);
                self.0.forward(x, pass)
            }

            fn backward(&mut self, g: &Tensor, _: InputGrad) -> Option<Tensor> {
                check_grad($name, self.0.x_hat.shape(), g);
                Some(self.0.backward(g))
            }

            fn onnx(&self) -> Option<&dyn OnnxLayer> {
                Some(self)
            }
        }

        impl Visit for $ty {
            fn visit<'a>(&'a self, f: &mut dyn FnMut(&str, State<'a>)) {
                f("weight", State::Param(&self.0.weight));
                f("bias", State::Param(&self.0.bias));
                f("running_mean", State::Buffer(&self.0.running_mean));
                f("running_var", State::Buffer(&self.0.running_var));
                f("num_batches_tracked", State::Counter(self.0.batches_tracked));
            }

            fn visit_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, StateMut<'a>)) {
                let bn = &mut self.0;
                f("weight", StateMut::Param(&mut bn.weight));
                f("bias", StateMut::Param(&mut bn.bias));
                f("running_mean", StateMut::Buffer(&mut bn.running_mean));
                f("running_var", StateMut::Buffer(&mut bn.running_var));
                f("num_batches_tracked", StateMut::Counter(&mut bn.batches_tracked));
            }
        }
    };
}

batchnorm_layer!(
    /// Batch normalisation of `[N, C]` (or `[N, C, L]`) inputs, per feature `C`.
    /// See the [module docs](self) for the math.
    ///
    /// ```
    /// use backprop::layers::{BatchNorm1d, Layer, Pass};
    /// use backprop::Tensor;
    /// let mut bn = BatchNorm1d::new(1);
    /// let y = bn.forward(&Tensor::from_vec(&[2, 1], vec![1., 3.]).unwrap(), Pass::TRAIN);
    /// assert!((y.data()[0] + 1.0).abs() < 1e-4 && (y.data()[1] - 1.0).abs() < 1e-4);
    /// ```
    BatchNorm1d, "BatchNorm1d", [2, 3], "[N, {0}] or [N, {0}, L]"
);

batchnorm_layer!(
    /// Batch normalisation of `[N, C, H, W]` images, per channel `C`.
    /// See the [module docs](self) for the math.
    BatchNorm2d, "BatchNorm2d", [4], "[N, {}, H, W]"
);
