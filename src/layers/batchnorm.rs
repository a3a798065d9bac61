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
        // A shape no tensor can hold is refused here, as the other layers refuse it (the
        // products below would overflow).
        if crate::tensor::checked_numel(input).is_none() {
            return Err(crate::Error::shape(format!(
                "{}: an input of shape {} holds more values than a tensor can",
                self.describe(),
                crate::tensor::shape_str(input)
            )));
        }
        Ok(input.to_vec())
    }

    /// Training estimates a variance per channel from the `N·H·W` values of the batch: it needs
    /// at least two of them.
    fn check_training_shape(&self, input: &[usize]) -> Result<()> {
        let (n, _, inner) = split(input);
        if n.checked_mul(inner).is_none_or(|values| values > 1) {
            return Ok(()); // (a product past usize is more than one; `check` refuses such shapes)
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
            let stats = fast::statistics(x);
            for (ch, (mu, inv)) in mean.iter_mut().zip(self.inv_std.iter_mut()).enumerate() {
                let (mu64, var64) = stats[ch]; // μ, σ²
                *mu = mu64 as f32;
                *inv = match var64 as f32 {
                    var if var.is_finite() => 1.0 / (var + self.eps).sqrt(),
                    // A spread past f32 (σ² > 3.4·10³⁸, σ > 1.8·10¹⁹): 1/σ from f64, still a
                    // normal f32 (x̂ stays right, where 1/√∞ = 0 would give every input β).
                    _ => (1.0 / (var64 + self.eps as f64).sqrt()) as f32,
                };
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
        let (gamma, beta) = (self.weight.value.data(), self.bias.value.data());
        let mut y = Tensor::default();
        fast::normalize(x, (&mean, &self.inv_std), (gamma, beta), &mut self.x_hat, &mut y);
        y
    }

    fn backward(&mut self, g: &Tensor) -> Tensor {
        let gamma = self.weight.value.data();
        let (dx, sums) = fast::backward(g, &self.x_hat, &self.inv_std, gamma, self.train);
        for (ch, (sum_g, sum_gx)) in sums.into_iter().enumerate() {
            self.weight.grad.data_mut()[ch] += sum_gx as f32; // dγ += Σ g·x̂
            self.bias.grad.data_mut()[ch] += sum_g as f32; // dβ += Σ g
        }
        dx
    }
}

/// The readable definition of batch normalisation's passes: plain loops over the formulas of the
/// [module docs](super), one value at a time, sums in `f64` in order. The layers run faster
/// versions of the same passes (the channels in parallel, vector loops);
/// `tests/reference_kernels.rs` compares a layer's passes with these.
pub mod reference {
    use crate::tensor::Tensor;
    use crate::tensor::math::feature_split as split;

    /// Panics unless `x` is `[N, C, …]` and each of `per_channel` holds `C` values.
    fn check(what: &str, x: &Tensor, per_channel: &[(&str, &[f32])]) -> (usize, usize, usize) {
        assert!(x.ndim() >= 2, "batchnorm::reference::{what}: expected [N, C, …], got shape {:?}", x.shape());
        let (n, c, inner) = split(x.shape());
        for (name, v) in per_channel {
            assert!(
                v.len() == c,
                "batchnorm::reference::{what}: {name} holds {} values, expected one per channel ({c}) of {:?}",
                v.len(),
                x.shape()
            );
        }
        (n, c, inner)
    }

    /// Per channel of `x` (`[N, C, …]`), `(μ, σ²)` over its `N·…` values (the biased variance),
    /// in `f64`: `μ = (1/m) Σ x`, `σ² = (1/m) Σ (x − μ)²`.
    ///
    /// # Panics
    /// If `x` has fewer than two axes.
    pub fn statistics(x: &Tensor) -> Vec<(f64, f64)> {
        let (n, c, inner) = check("statistics", x, &[]);
        let m = (n * inner) as f64;
        (0..c)
            .map(|ch| {
                let values =
                    || (0..n).flat_map(move |b| x.data()[(b * c + ch) * inner..][..inner].iter().copied());
                let mu = values().map(f64::from).sum::<f64>() / m; // μ
                let var = values().map(|v| (v as f64 - mu).powi(2)).sum::<f64>() / m; // σ²
                (mu, var)
            })
            .collect()
    }

    /// `x̂ = (x − μ)·inv_std` and `y = γ·x̂ + β`, channel by channel (`mean`, `inv_std`, `gamma`,
    /// `beta`: one value per channel).
    ///
    /// # Panics
    /// If `x` has fewer than two axes or a per-channel slice does not hold `C` values.
    pub fn normalize(
        x: &Tensor,
        (mean, inv_std): (&[f32], &[f32]),
        (gamma, beta): (&[f32], &[f32]),
    ) -> (Tensor, Tensor) {
        let per_channel = [("mean", mean), ("inv_std", inv_std), ("gamma", gamma), ("beta", beta)];
        let (_, c, inner) = check("normalize", x, &per_channel);
        let (mut x_hat, mut y) = (x.clone(), Tensor::zeros(x.shape()));
        let rows = x_hat.data_mut().chunks_exact_mut(inner).zip(y.data_mut().chunks_exact_mut(inner));
        for (i, (xh_row, y_row)) in rows.enumerate() {
            let ch = i % c;
            for (xh, yv) in xh_row.iter_mut().zip(y_row) {
                *xh = (*xh - mean[ch]) * inv_std[ch]; // x̂ = (x − μ)/√(σ² + ε)
                *yv = gamma[ch] * *xh + beta[ch]; // y = γ·x̂ + β
            }
        }
        (x_hat, y)
    }

    /// Backward from `g = dL/dy`: `dL/dx`, and per channel `(Σ g, Σ g·x̂)` in `f64` (`dL/dβ`,
    /// `dL/dγ`). `train`: the batch statistics' form of `dL/dx`; else the running statistics' one.
    ///
    /// # Panics
    /// If `x_hat` has fewer than two axes, `g` another shape, or a per-channel slice does not
    /// hold `C` values.
    pub fn backward(
        g: &Tensor,
        x_hat: &Tensor,
        inv_std: &[f32],
        gamma: &[f32],
        train: bool,
    ) -> (Tensor, Vec<(f64, f64)>) {
        let (n, c, inner) = check("backward", x_hat, &[("inv_std", inv_std), ("gamma", gamma)]);
        assert!(
            g.shape() == x_hat.shape(),
            "batchnorm::reference::backward: g is {:?}, x_hat {:?}",
            g.shape(),
            x_hat.shape()
        );
        let m = (n * inner) as f32;
        let mut sums = vec![(0.0f64, 0.0f64); c];
        for (i, (g_row, xh_row)) in
            g.data().chunks_exact(inner).zip(x_hat.data().chunks_exact(inner)).enumerate()
        {
            let (sum_g, sum_gx) = &mut sums[i % c];
            for (&gv, &xh) in g_row.iter().zip(xh_row) {
                *sum_g += gv as f64;
                *sum_gx += gv as f64 * xh as f64;
            }
        }
        let mut dx = Tensor::zeros(x_hat.shape());
        let rows = dx.data_mut().chunks_exact_mut(inner).zip(g.data().chunks_exact(inner));
        for (i, ((dx_row, g_row), xh_row)) in rows.zip(x_hat.data().chunks_exact(inner)).enumerate() {
            let ch = i % c;
            let k = gamma[ch] * inv_std[ch];
            if train {
                let (sg, sgx) = (sums[ch].0 as f32, sums[ch].1 as f32);
                for ((d, &gv), &xh) in dx_row.iter_mut().zip(g_row).zip(xh_row) {
                    *d = k / m * (m * gv - sg - xh * sgx); // γ/(m√(σ²+ε))·(m·g − Σg − x̂·Σg·x̂)
                }
            } else {
                dx_row.iter_mut().zip(g_row).for_each(|(d, &gv)| *d = k * gv); // γ/√(σ²+ε)·g
            }
        }
        (dx, sums)
    }
}

/// [`reference`](mod@reference)'s passes for the machine: the channels' sums in parallel, each row
/// in eight interleaved `f64` partial sums (`math::sum_f64`, as layer norm's; the partial sums added
/// in a fixed order, so the same bits on any number of threads, within `f64` rounding of the
/// reference's one sum), and the per-value loops in parallel blocks of rows with each channel's
/// constants in registers (the reference's bits). One thread had taken 3.4 ns per value forward
/// and 4.3 backward on the AMD EPYC of docs/benchmarks.md, the sums' one `f64` chain each.
mod fast {
    use crate::tensor::Tensor;
    use crate::tensor::math::{feature_split as split, sum_f64};
    use crate::tensor::parallel::{PASS_PARALLEL_MIN, min_len, rows_per_task, split_if_threads};
    use rayon::prelude::*;

    /// The rows of channel `ch` (`n` of them, `inner` values each) of a `[N, C, …]` buffer.
    fn channel_rows(
        data: &[f32],
        (n, c, inner): (usize, usize, usize),
        ch: usize,
    ) -> impl Iterator<Item = &[f32]> {
        (0..n).map(move |b| &data[(b * c + ch) * inner..][..inner])
    }

    /// `Σ term(a, b)` over a channel's values (its rows of two `[N, C, …]` buffers side by side):
    /// each row in [`sum_f64`]'s eight running sums, the rows' sums added in order.
    #[inline(always)]
    fn channel_sum(
        (a, b): (&[f32], &[f32]),
        shape: (usize, usize, usize),
        ch: usize,
        term: impl Fn(f32, f32) -> f64 + Copy,
    ) -> f64 {
        let mut total = 0.0;
        for (a, b) in channel_rows(a, shape, ch).zip(channel_rows(b, shape, ch)) {
            total += sum_f64(a, b, term);
        }
        total
    }

    /// As [`reference::statistics`](super::reference::statistics).
    pub(crate) fn statistics(x: &Tensor) -> Vec<(f64, f64)> {
        let (n, c, inner) = split(x.shape());
        let m = (n * inner) as f64;
        let one = |ch: usize| {
            crate::tensor::simd::wide!({
                let x = (x.data(), x.data());
                let mu = channel_sum(x, (n, c, inner), ch, |v, _| v as f64) / m; // μ
                let var = channel_sum(x, (n, c, inner), ch, |v, _| (v as f64 - mu).powi(2)) / m; // σ²
                (mu, var)
            })
        };
        let parallel = x.len() >= PASS_PARALLEL_MIN;
        (0..c).into_par_iter().with_min_len(min_len(c, parallel)).map(one).collect()
    }

    /// As [`reference::normalize`](super::reference::normalize), into `x_hat` and `y` (resized).
    pub(crate) fn normalize(
        x: &Tensor,
        (mean, inv_std): (&[f32], &[f32]),
        (gamma, beta): (&[f32], &[f32]),
        x_hat: &mut Tensor,
        y: &mut Tensor,
    ) {
        let (_, c, inner) = split(x.shape());
        x_hat.resize_for_overwrite(x.shape()); // every value is written below
        y.resize_for_overwrite(x.shape());
        if inner == 0 {
            return;
        }
        let per_task = rows_per_task(x.len() / inner, inner);
        let blocks = x_hat
            .data_mut()
            .par_chunks_mut(per_task * inner)
            .zip(y.data_mut().par_chunks_mut(per_task * inner));
        let blocks = blocks.zip(x.data().par_chunks(per_task * inner)).enumerate();
        blocks.with_min_len(split_if_threads(1)).for_each(|(b, ((xh, y), x))| {
            for (r, ((xh, y), x)) in xh
                .chunks_exact_mut(inner)
                .zip(y.chunks_exact_mut(inner))
                .zip(x.chunks_exact(inner))
                .enumerate()
            {
                let ch = (b * per_task + r) % c;
                let (mu, inv, g, bt) = (mean[ch], inv_std[ch], gamma[ch], beta[ch]);
                crate::tensor::simd::wide!(normalize_row(x, xh, y, (mu, inv), (g, bt)));
            }
        });
    }

    #[allow(clippy::needless_range_loop)] // an index loop, so that it stays inside the vector context
    #[inline(always)]
    fn normalize_row(
        x: &[f32],
        xh: &mut [f32],
        y: &mut [f32],
        (mu, inv): (f32, f32),
        (gamma, beta): (f32, f32),
    ) {
        let n = x.len();
        let (xh, y) = (&mut xh[..n], &mut y[..n]);
        for i in 0..n {
            let v = (x[i] - mu) * inv; // x̂ = (x − μ)/√(σ² + ε)
            xh[i] = v;
            y[i] = gamma * v + beta; // y = γ·x̂ + β
        }
    }

    /// As [`reference::backward`](super::reference::backward).
    pub(crate) fn backward(
        g: &Tensor,
        x_hat: &Tensor,
        inv_std: &[f32],
        gamma: &[f32],
        train: bool,
    ) -> (Tensor, Vec<(f64, f64)>) {
        let (n, c, inner) = split(x_hat.shape());
        let m = (n * inner) as f32;
        let parallel = x_hat.len() >= PASS_PARALLEL_MIN;
        let sums: Vec<(f64, f64)> = (0..c)
            .into_par_iter()
            .with_min_len(min_len(c, parallel))
            .map(|ch| {
                crate::tensor::simd::wide!({
                    let shape = (n, c, inner);
                    let sum_g = channel_sum((g.data(), g.data()), shape, ch, |g, _| g as f64); // Σ g
                    let sum_gx = channel_sum((g.data(), x_hat.data()), shape, ch, |g, x| g as f64 * x as f64); // Σ g·x̂
                    (sum_g, sum_gx)
                })
            })
            .collect();
        let mut dx = Tensor::default();
        dx.resize_for_overwrite(x_hat.shape()); // every value is written below
        if inner == 0 {
            return (dx, sums);
        }
        let per_task = rows_per_task(x_hat.len() / inner, inner);
        let chunk = per_task * inner;
        let blocks = dx.data_mut().par_chunks_mut(chunk).zip(g.data().par_chunks(chunk));
        let blocks = blocks.zip(x_hat.data().par_chunks(chunk)).enumerate();
        blocks.with_min_len(split_if_threads(1)).for_each(|(b, ((dx, g), xh))| {
            for (r, ((dx, g), xh)) in
                dx.chunks_exact_mut(inner).zip(g.chunks_exact(inner)).zip(xh.chunks_exact(inner)).enumerate()
            {
                let ch = (b * per_task + r) % c;
                let k = gamma[ch] * inv_std[ch];
                let (sg, sgx) = (sums[ch].0 as f32, sums[ch].1 as f32);
                crate::tensor::simd::wide!(input_gradient_row(dx, g, xh, (k, m), (sg, sgx), train));
            }
        });
        (dx, sums)
    }

    #[allow(clippy::needless_range_loop)] // an index loop, so that it stays inside the vector context
    #[inline(always)]
    fn input_gradient_row(
        dx: &mut [f32],
        g: &[f32],
        xh: &[f32],
        (k, m): (f32, f32),
        (sg, sgx): (f32, f32),
        train: bool,
    ) {
        let n = dx.len();
        let (g, xh) = (&g[..n], &xh[..n]);
        if train {
            for i in 0..n {
                dx[i] = k / m * (m * g[i] - sg - xh[i] * sgx); // γ/(m√(σ²+ε))·(m·g − Σg − x̂·Σg·x̂)
            }
        } else {
            for i in 0..n {
                dx[i] = k * g[i]; // γ/√(σ²+ε)·g
            }
        }
    }
}

macro_rules! batchnorm_layer {
    ($(#[$doc:meta])* $ty:ident, $name:literal, $ranks:expr, $expected:literal) => {
        $(#[$doc])*
        pub struct $ty(BatchNorm);

        impl $ty {
            /// Batch normalisation over `channels` channels, with ε = 1e-5, momentum 0.1,
            /// γ = 1, β = 0, running mean 0 and running variance 1 (PyTorch's defaults).
            ///
            /// # Panics
            /// If its per-channel parameters would be more values than a tensor can hold (a
            /// message names the size).
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
                self.output_shape(input)?; // (a shape it cannot take is that error, not a panic)
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
