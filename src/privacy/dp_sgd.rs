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
//! Per-example gradients come from one forward pass over the batch and one per-example backward
//! pass ([`Layer::backward_per_example`], see [`crate::layers::per_example`]) when every layer has
//! one — all the crate's layers except batch norm do — and otherwise from a backward pass per
//! example (a batch of one), which works for every layer, custom ones included. Both give the
//! same gradients. Layers whose output for one example depends on the others — batch norm — are
//! refused, since a per-example gradient would not exist.

use crate::data::{Dataset, Targets};
use crate::error::{Error, Result};
use crate::layers::{InputGrad, Layer, Pass, State, Visit, named_params, named_params_mut, zero_grad};
use crate::loss::Loss;
use crate::optim::Optimizer;
use crate::privacy::accountant::{DEFAULT_ORDERS, epsilon};
use crate::privacy::per_example::{PerExampleGrads, backward_per_example, supports_per_example};
use crate::tensor::{Tensor, rng};
use rand::RngExt;
use rand_distr::{Distribution, Normal};
use rayon::prelude::*;

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
fn mixing_state(model: &dyn Visit) -> Option<String> {
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
    let mut step = Step {
        sum: shapes.iter().map(|s| Tensor::zeros(s)).collect(),
        batched: supports_per_example(model),
        grads: PerExampleGrads::new(),
        x: Tensor::default(),
        t: train.targets().select(&[]),
        batch: Vec::new(),
        lengths: Vec::new(),
        loss_sum: 0.0,
        seen: 0,
    };
    let mut report = DpReport { epoch_losses: Vec::new(), steps: 0, epsilon: 0.0 };
    for _ in 0..o.epochs {
        (step.loss_sum, step.seen) = (0.0, 0);
        for _ in 0..steps_per_epoch {
            step.batch.clear();
            step.batch.extend((0..n).filter(|_| sampling.random::<f64>() < o.sample_rate));
            step.sum.iter_mut().for_each(|s| s.fill(0.0));
            let summed = if step.batched {
                step.clipped_sum_batched(model, train, loss, o.clip)
            } else {
                step.clipped_sum_one_by_one(model, train, loss, o.clip)
            };
            if let Err(bad) = summed {
                return Err(match bad {
                    Bad::Loss(value) => Error::NonFinite {
                        what: "loss".into(),
                        epoch: report.epoch_losses.len() + 1,
                        batch: report.steps as usize % steps_per_epoch + 1,
                        value,
                        last_finite_loss: None,
                    },
                    Bad::Other(e) => e,
                });
            }
            let mut params = named_params_mut(model);
            for (s, (_, p)) in step.sum.iter().zip(params.iter_mut()) {
                for (g, &v) in p.grad.data_mut().iter_mut().zip(s.data()) {
                    *g = ((v as f64 + noise.sample(&mut noise_rng)) / expected_batch) as f32; // (Σ ḡ_i + N(0, σ²C²)) / qN
                }
            }
            optimizer.step_params(&mut params);
            report.steps += 1;
        }
        report.epoch_losses.push((step.loss_sum / step.seen.max(1) as f64) as f32);
    }
    report.epsilon = epsilon(o.sample_rate, o.noise_multiplier, report.steps, o.delta, &DEFAULT_ORDERS).0;
    Ok(report)
}

/// Why a step failed: a non-finite loss (the caller says where), or another error.
enum Bad {
    Loss(f32),
    Other(Error),
}

impl From<Error> for Bad {
    fn from(e: Error) -> Bad {
        Bad::Other(e)
    }
}

/// One DP-SGD step's buffers, reused from step to step.
struct Step {
    /// `Σ_i ḡ_i`, one tensor per parameter.
    sum: Vec<Tensor>,
    /// Whether every layer gives per-example gradients from one batched pass.
    batched: bool,
    grads: PerExampleGrads,
    x: Tensor,
    t: Targets,
    /// The examples Poisson sampling picked for this step.
    batch: Vec<usize>,
    /// Their sequence lengths, when the data set has them.
    lengths: Vec<usize>,
    loss_sum: f64,
    seen: usize,
}

impl Step {
    /// Example `i`'s loss and `dLᵢ/dy` for its output `out` (a batch of one), counted.
    fn example_loss(
        &mut self,
        out: &Tensor,
        train: &Dataset,
        i: usize,
        loss: &dyn Loss,
    ) -> std::result::Result<Tensor, Bad> {
        train.targets().select_into(&[i], &mut self.t);
        let (l, g) = loss.loss_and_grad(out, self.t.as_target())?;
        if !l.is_finite() {
            return Err(Bad::Loss(l));
        }
        (self.loss_sum, self.seen) = (self.loss_sum + l as f64, self.seen + 1);
        Ok(g)
    }

    /// `Σ_i ḡ_i` from one forward and one per-example backward pass over the whole batch
    /// ([`Layer::backward_per_example`]): every example's gradient of every parameter at once,
    /// then their norms, clipping factors and the weighted sum.
    fn clipped_sum_batched(
        &mut self,
        model: &mut dyn Layer,
        train: &Dataset,
        loss: &dyn Loss,
        clip: f32,
    ) -> std::result::Result<(), Bad> {
        let b = self.batch.len();
        if b == 0 {
            return Ok(());
        }
        train.inputs().select_outer_into(&self.batch, &mut self.x);
        train.select_lengths_into(&self.batch, &mut self.lengths);
        let out = model.forward(
            &self.x,
            Pass::TRAIN.with_optional_lengths(train.lengths().map(|_| self.lengths.as_slice())),
        );
        // Each example's own loss gradient (its loss alone, as in a batch of one), stacked.
        let mut g_all = Tensor::zeros(out.shape());
        let mut out_i = Tensor::default();
        for k in 0..b {
            out.select_outer_into(&[k], &mut out_i);
            let g = self.example_loss(&out_i, train, self.batch[k], loss)?;
            g_all.outer_mut(k).copy_from_slice(g.data());
        }
        self.grads.start(b);
        backward_per_example(model, &g_all, InputGrad::NotNeeded, &mut self.grads); // every g_i
        let scale: Vec<f32> = self
            .grads
            .squared_norms()
            .iter()
            .map(|sq| (clip as f64 / (sq.sqrt() + 1e-6)).min(1.0) as f32) // min(1, C/(‖g_i‖ + 1e-6))
            .collect();
        for (sum, slot) in self.sum.iter_mut().zip(self.grads.slots()) {
            let len = sum.len();
            // Σ_i scale_i·g_i, in blocks of coordinates in parallel, examples in order in each.
            sum.data_mut().par_chunks_mut(COLUMNS).enumerate().for_each(|(block, acc)| {
                for (k, &s) in scale.iter().enumerate() {
                    let row = &slot.data()[k * len + block * COLUMNS..][..acc.len()];
                    acc.iter_mut().zip(row).for_each(|(a, &g)| *a += s * g);
                }
            });
        }
        Ok(())
    }

    /// `Σ_i ḡ_i` one example at a time: a forward and backward pass per example (a batch of
    /// one), for models with a layer that has no per-example backward pass.
    fn clipped_sum_one_by_one(
        &mut self,
        model: &mut dyn Layer,
        train: &Dataset,
        loss: &dyn Loss,
        clip: f32,
    ) -> std::result::Result<(), Bad> {
        for k in 0..self.batch.len() {
            let i = self.batch[k];
            train.inputs().select_outer_into(&[i], &mut self.x);
            train.select_lengths_into(&[i], &mut self.lengths);
            let out = model.forward(
                &self.x,
                Pass::TRAIN.with_optional_lengths(train.lengths().map(|_| self.lengths.as_slice())),
            );
            let g = self.example_loss(&out, train, i, loss)?;
            zero_grad(model);
            model.backward(&g, InputGrad::NotNeeded); // this example's gradient g_i
            let params = named_params(model);
            let norm = params
                .iter()
                .map(|(_, p)| p.grad.data().iter().map(|&v| v as f64 * v as f64).sum::<f64>())
                .sum::<f64>()
                .sqrt();
            let scale = (clip as f64 / (norm + 1e-6)).min(1.0) as f32; // ḡ_i = g_i · min(1, C/(‖g_i‖ + 1e-6))
            for (s, (_, p)) in self.sum.iter_mut().zip(&params) {
                s.axpy(scale, &p.grad); // Σ ḡ_i
            }
        }
        Ok(())
    }
}

/// Coordinates per parallel block of the clipped sum.
const COLUMNS: usize = 4096;
