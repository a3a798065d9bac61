//! Differentially private training (DP-SGD, Abadi et al., CCS 2016).
//!
//! Each step:
//!
//! ```text
//! 1. sample:  each training example is in the batch independently with probability q (Poisson)
//! 2. clip:    each example's gradient g_i (over the whole model) is scaled to norm ≤ C:
//!             ḡ_i = g_i · min(1, C / (‖g_i‖ + 1e-6))
//! 3. noise:   s = Σ_i ḡ_i + N(0, σ²C²) per coordinate
//! 4. average: g = s / (q·N)               (the expected batch size: it does not depend on the data)
//! 5. step:    the optimizer (SGD, Adam, …) uses g as the gradient
//! ```
//!
//! Clipping bounds how much one example can move the sum (its *sensitivity*, `C`); the noise hides
//! whether any one example was there at all. The [`accountant`](super::accountant) turns `(q, σ, steps)`
//! into the `(ε, δ)` guarantee, for one example — in knowledge tracing, one *student*: a whole
//! sequence is one example.
//!
//! Per-example gradients come from a backward pass per example (a batch of one), which works for
//! every layer, custom ones included; layers whose output for one example depends on the others —
//! batch norm — are refused, since a per-example gradient would not exist.

use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::layers::{InputGrad, Layer, Mode, State, named_params, named_params_mut, zero_grad};
use crate::loss::Loss;
use crate::optim::Optimizer;
use crate::privacy::accountant::{DEFAULT_ORDERS, epsilon};
use crate::tensor::{Tensor, rng};
use rand::RngExt;
use rand_distr::{Distribution, Normal};

/// Settings of [`fit_private`].
#[derive(Clone, Debug)]
pub struct DpOptions {
    /// Passes over the data (each pass is `round(1/q)` steps).
    pub epochs: usize,
    /// Poisson sampling rate `q`: each example's chance of being in a batch.
    pub sample_rate: f64,
    /// Clipping norm `C`.
    pub clip: f32,
    /// Noise multiplier `σ`: the noise's standard deviation is `σ·C`.
    pub noise_multiplier: f64,
    /// The `δ` the spent `ε` is reported for.
    pub delta: f64,
    /// Seed of the sampling and the noise.
    pub seed: u64,
}

/// What a private training run did and spent.
#[derive(Clone, Debug, PartialEq)]
pub struct DpReport {
    /// Mean training loss of each epoch (over the examples sampled).
    pub epoch_losses: Vec<f32>,
    /// Steps taken.
    pub steps: u64,
    /// The `ε` spent, at the options' `δ`.
    pub epsilon: f64,
}

/// The first piece of state that makes examples interact (a buffer: batch norm's running
/// statistics), with its name.
fn mixing_state(model: &dyn Layer) -> Option<String> {
    let mut found = None;
    model.visit(&mut |name, s| {
        if found.is_none() && matches!(s, State::Buffer(_)) {
            found = Some(name.to_string());
        }
    });
    found
}

/// Trains `model` with DP-SGD; see the [module docs](self).
///
/// # Errors
/// [`Error::InvalidArgument`] for settings out of range or a model with batch statistics (naming
/// the layer's state); [`Error::NonFinite`] if a loss becomes NaN or infinite; and whatever the
/// loss reports for targets that do not fit.
pub fn fit_private(
    model: &mut dyn Layer,
    train: &Dataset,
    loss: &dyn Loss,
    optimizer: &mut dyn Optimizer,
    o: &DpOptions,
) -> Result<DpReport> {
    let n = train.len();
    let valid = o.sample_rate > 0.0
        && o.sample_rate <= 1.0
        && o.clip > 0.0
        && o.clip.is_finite()
        && o.noise_multiplier >= 0.0
        && o.noise_multiplier.is_finite()
        && o.epochs > 0
        && n > 0;
    if !valid {
        return Err(Error::invalid(format!("fit_private: invalid settings {o:?} for {n} examples")));
    }
    if let Some(name) = mixing_state(model) {
        return Err(Error::invalid(format!(
            "fit_private: the model keeps batch statistics ({name:?}): batch norm mixes the examples of a batch, so one \
             example's gradient is not its own; remove it (or use a per-example normalisation) for private training"
        )));
    }
    let mut sampling = rng(o.seed);
    let mut noise_rng = rng(o.seed ^ 0xD95A_C0DE);
    let noise = Normal::new(0.0f64, o.noise_multiplier * o.clip as f64).expect("a valid normal distribution");
    let steps_per_epoch = (1.0 / o.sample_rate).round().max(1.0) as usize;
    let expected_batch = o.sample_rate * n as f64;
    let shapes: Vec<Vec<usize>> = named_params(model).iter().map(|(_, p)| p.value.shape().to_vec()).collect();
    let mut sum: Vec<Tensor> = shapes.iter().map(|s| Tensor::zeros(s)).collect();
    let (mut x, mut t) = (Tensor::default(), train.targets().select(&[]));
    let mut report = DpReport { epoch_losses: Vec::new(), steps: 0, epsilon: 0.0 };
    for _ in 0..o.epochs {
        let (mut loss_sum, mut seen) = (0.0f64, 0usize);
        for _ in 0..steps_per_epoch {
            sum.iter_mut().for_each(|s| s.fill(0.0));
            for i in (0..n).filter(|_| sampling.random::<f64>() < o.sample_rate) {
                train.inputs().select_outer_into(&[i], &mut x);
                train.targets().select_into(&[i], &mut t);
                let out = model.forward(&x, Mode::Train);
                let (l, g) = loss.loss_and_grad(&out, t.as_target())?;
                if !l.is_finite() {
                    return Err(Error::NonFinite {
                        what: "loss".into(),
                        epoch: report.epoch_losses.len() + 1,
                        batch: report.steps as usize % steps_per_epoch + 1,
                        value: l,
                        last_finite_loss: None,
                    });
                }
                (loss_sum, seen) = (loss_sum + l as f64, seen + 1);
                zero_grad(model);
                model.backward(&g, InputGrad::NotNeeded); // this example's gradient g_i
                let params = named_params(model);
                let norm = params
                    .iter()
                    .map(|(_, p)| p.grad.data().iter().map(|&v| v as f64 * v as f64).sum::<f64>())
                    .sum::<f64>()
                    .sqrt();
                let scale = (o.clip as f64 / (norm + 1e-6)).min(1.0) as f32; // ḡ_i = g_i · min(1, C/(‖g_i‖ + 1e-6))
                for (s, (_, p)) in sum.iter_mut().zip(&params) {
                    s.axpy(scale, &p.grad); // Σ ḡ_i
                }
            }
            let mut params = named_params_mut(model);
            for (s, (_, p)) in sum.iter().zip(params.iter_mut()) {
                for (g, &v) in p.grad.data_mut().iter_mut().zip(s.data()) {
                    *g = ((v as f64 + noise.sample(&mut noise_rng)) / expected_batch) as f32; // (Σ ḡ_i + N(0, σ²C²)) / qN
                }
            }
            optimizer.step_params(&mut params);
            report.steps += 1;
        }
        report.epoch_losses.push((loss_sum / seen.max(1) as f64) as f32);
    }
    report.epsilon = epsilon(o.sample_rate, o.noise_multiplier, report.steps, o.delta, &DEFAULT_ORDERS).0;
    Ok(report)
}
