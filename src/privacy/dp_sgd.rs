//! Differentially private training (DP-SGD, Abadi et al., CCS 2016).
//!
//! Each step:
//!
//! ```text
//! 1. sample:  each training example is in the batch independently with probability q (Poisson)
//! 2. clip:    each example's gradient g_i (over the whole model) is scaled to norm ≤ C:
//!             ḡ_i = g_i · min(1, C / (‖g_i‖ + 1e-6))
//! 3. noise:   s = Σ_i ḡ_i + N(0, σ²C²) per coordinate
//! 4. average: g = s / B,  B = ⌊q·N⌋ ≥ 1    (the expected batch size, as Opacus rounds it: it does
//!                                          not depend on the data)
//! 5. step:    the optimizer (SGD, Adam, …) uses g as the gradient
//! ```
//!
//! Clipping bounds how much one example can move the sum (its *sensitivity*, `C`); the noise hides
//! whether any one example was there at all. The [`accountant`](super::accountant) turns `(q, σ, steps)`
//! into the `(ε, δ)` guarantee, for one example — in knowledge tracing, one *student*: a whole
//! sequence is one example.
//!
//! DP-SGD is a [`Step`]: it runs inside [`fit`](crate::train::fit), the loop every model trains
//! with, so a private run gets the same checks before training, the same rollback when a batch
//! fails, schedules, callbacks, validation and early stopping as any other:
//!
//! ```
//! use backprop::prelude::*;
//! use backprop::privacy::{DpOptions, DpSgd};
//! # fn main() -> backprop::Result<()> {
//! let x = Tensor::randn(&[64, 2], 0.0, 1.0, 1);
//! let labels = (0..64).map(|i| usize::from(x[&[i, 0]] > 0.0)).collect();
//! let data = Dataset::classification(x, labels)?;
//! let mut model = Sequential::builder(&[2]).add(Dense::new(2, 2)).build()?;
//! let options = DpOptions { epochs: 3, sample_rate: 0.25, clip: 1.0, noise_multiplier: 1.0, delta: 1e-5, seed: 7 };
//! let mut dp = DpSgd::new(&options, data.len())?;
//! model.fit(&data, &CrossEntropyLoss::new(), &mut Sgd::new(0.5), FitOptions::new().epochs(3).step(&mut dp).verbose(false))?;
//! assert_eq!(dp.steps(), 12); // 1/q = 4 Poisson batches an epoch
//! assert!(dp.epsilon() > 0.0 && dp.epsilon().is_finite());
//! # Ok(()) }
//! ```
//!
//! Per-example gradients come from one forward pass over the batch and one per-example backward
//! pass ([`per_example`](super::per_example)) when the model is a layer all of whose parts offer
//! one — all the crate's layers but batch norm (refused) and `DecoderOnly` do — and otherwise from a forward and backward
//! pass per example (a batch of one), which works for every model, custom layers and model
//! structs included. Both give the same gradients. Layers whose output for one example depends on
//! the others — batch norm — are refused, since a per-example gradient would not exist. A custom
//! layer without parameters is taken to treat each example on its own (as every such layer of
//! the crate does, and as Opacus assumes): one that mixes examples (subtracting the batch's mean,
//! say) would void the reported ε, and must not be trained privately.
//!
//! `B = ⌊q·N⌋` is taken in `f64` as Opacus's `int(len(dataset) * sample_rate)` takes it: with
//! `q = B/N` the product can fall just below `B` (`q = 0.29`, `N = 100`: 28, in both). The noise
//! goes on every coordinate, an [`Embedding`](crate::layers::Embedding)'s padding row included
//! (as in Opacus): after a private step that row is no longer zero.
//!
//! **What ε covers.** The guarantee is for the noised steps, and so for the weights after them.
//! What else a run hands out is the caller's to keep private: the training loss and accuracy of
//! each batch and epoch (the history, callbacks, the printed progress: functions of the examples
//! sampled, without noise, and of the batch's actual size), and, without a validation set, which
//! epoch's checkpoint is `best.safetensors` (kept by the training loss; `last.safetensors` is
//! covered). Early stopping on the training loss, which would pick the returned weights and the
//! stopping time that way, is refused; monitor a validation set. The noise is drawn from a seeded
//! generator ([`DpOptions::seed`]; checkpoints keep its state so that a run resumes exactly), as
//! Opacus draws it without its `secure_mode`: anyone who has the seed or a checkpoint can replay
//! the noise, so keep both as private as the data.

use crate::data::{Dataset, Targets};
use crate::error::{Error, Result};
use crate::layers::{InputGrad, Mode, State, Visit, named_params, named_params_mut, zero_grad};
use crate::loss::Loss;
use crate::model::{Inputs, Model, Tensors};
use crate::optim::Optimizer;
use crate::privacy::accountant::{DEFAULT_ORDERS, epsilon};
use crate::privacy::per_example::{PerExampleGrads, backward_per_example, supports_per_example};
use crate::tensor::parallel::split_if_threads;
use crate::tensor::{Rng, Tensor, rng};
use crate::train::{FitOptions, Step, StepOutcome, first_output, non_finite};
use rand::RngExt;
use rand_distr::{Distribution, Normal};
use rayon::prelude::*;

/// Settings of a private training run.
#[derive(Clone, Debug)]
pub struct DpOptions {
    /// Passes over the data (each pass is `round(1/q)` steps), for [`fit_private`]. A [`DpSgd`]
    /// step inside [`fit`](crate::train::fit) runs the epochs `FitOptions::epochs` asks for, and
    /// [`DpSgd::epsilon`] counts the steps it took.
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
    /// Mean training loss of each epoch over the examples sampled: the mean over every term the
    /// loss counts ([`Loss::terms`]: examples, or the positions that are not padding), as
    /// [`fit`](crate::train::fit) reports it (NaN for an epoch that counted none). Computed from the
    /// private data without noise: a figure for the one who trains, not one to publish.
    pub epoch_losses: Vec<f32>,
    /// Steps taken.
    pub steps: u64,
    /// The `ε` spent, at the options' `δ`.
    pub epsilon: f64,
}

/// The DP-SGD step (see the [module docs](self)), for [`FitOptions::step`]. It keeps the count
/// of steps taken, so that [`DpSgd::epsilon`] says what the run spent.
pub struct DpSgd {
    options: DpOptions,
    /// Examples in the training set, `N` (the noise is divided by the expected batch `⌊q·N⌋`).
    examples: usize,
    sampling: Rng,
    noise_rng: Rng,
    noise: Normal<f64>,
    steps: u64,
    /// `Σ_i ḡ_i`, one tensor per parameter (reused).
    sum: Vec<Tensor>,
    grads: PerExampleGrads,
    /// Each example's input, target and output, for the pass per example (reused).
    one: Inputs,
    one_target: Targets,
    /// Bytes the per-example gradients of one pass may take; a larger batch runs in chunks.
    budget: usize,
    /// A chunk of the batch, its targets (reused).
    chunk: Inputs,
    chunk_targets: Targets,
    /// Whether the model takes the batched per-example pass (set by `check`), else a pass per
    /// example.
    batched: bool,
}

impl DpSgd {
    /// A DP-SGD step for a training set of `examples` examples.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a sampling rate outside `(0, 1]`, a clipping norm that is not
    /// a positive number, a negative or non-finite noise multiplier, a `δ` outside `(0, 1)`, or no
    /// examples — naming the setting.
    pub fn new(options: &DpOptions, examples: usize) -> Result<DpSgd> {
        let o = options;
        let bad = |what: String| Err(Error::invalid(format!("DP-SGD: {what}")));
        if !(o.sample_rate > 0.0 && o.sample_rate <= 1.0) {
            return bad(format!("the sampling rate must be in (0, 1], got {}", o.sample_rate));
        }
        if !(o.clip > 0.0 && o.clip.is_finite()) {
            return bad(format!("the clipping norm must be a positive number, got {}", o.clip));
        }
        if !(o.noise_multiplier >= 0.0 && o.noise_multiplier.is_finite()) {
            return bad(format!("the noise multiplier must be a number ≥ 0, got {}", o.noise_multiplier));
        }
        if !(o.delta > 0.0 && o.delta < 1.0) {
            return bad(format!("δ must be in (0, 1), got {}", o.delta));
        }
        if examples == 0 {
            return bad("the training set is empty".into());
        }
        let steps = (1.0 / o.sample_rate).round();
        if steps > MAX_STEPS_PER_EPOCH as f64 {
            return bad(format!(
                "a sampling rate of {} means {steps:e} steps per epoch (1/q); at most {MAX_STEPS_PER_EPOCH} are allowed",
                o.sample_rate
            ));
        }
        let noise = Normal::new(0.0f64, o.noise_multiplier * o.clip as f64).map_err(|e| {
            Error::invalid(format!("DP-SGD: noise of σ·C = {}: {e}", o.noise_multiplier * o.clip as f64))
        })?;
        Ok(DpSgd {
            options: o.clone(),
            examples,
            sampling: rng(o.seed),
            noise_rng: rng(o.seed ^ 0xD95A_C0DE),
            noise,
            steps: 0,
            sum: Vec::new(),
            grads: PerExampleGrads::new(),
            one: Inputs::new(),
            one_target: Targets::Classes(Vec::new()),
            budget: DEFAULT_PER_EXAMPLE_BUDGET,
            chunk: Inputs::new(),
            chunk_targets: Targets::Classes(Vec::new()),
            batched: false,
        })
    }

    /// The memory the per-example gradients of one pass may take, in bytes (default
    /// [`DEFAULT_PER_EXAMPLE_BUDGET`]): they need `examples × parameters × 4` bytes, and a batch
    /// that would need more runs in chunks of as many examples as fit. The clipped sum is the same
    /// (each example's term is its own, added in the same order), up to the rounding of the forward
    /// products, which may differ with the number of rows a GEMM sees.
    pub fn per_example_budget(mut self, bytes: usize) -> DpSgd {
        self.budget = bytes.max(1);
        self
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The `ε` spent by the steps taken so far, at the options' `δ` (the RDP accountant).
    pub fn epsilon(&self) -> f64 {
        let o = &self.options;
        epsilon(o.sample_rate, o.noise_multiplier, self.steps, o.delta, &DEFAULT_ORDERS).0
    }

    /// Steps per epoch: `round(1/q)`.
    fn steps_per_epoch(&self) -> usize {
        (1.0 / self.options.sample_rate).round().max(1.0) as usize
    }

    /// `Σ_i ḡ_i` from one forward and one per-example backward pass over the whole batch: every
    /// example's gradient of every parameter at once, then their norms, clipping factors and the
    /// weighted sum. Returns the sum of the examples' losses, each times its terms
    /// ([`Loss::terms`]), and the batch's output.
    fn clipped_sum_batched(
        &mut self,
        model: &mut dyn Model,
        batch: &Inputs,
        targets: &Targets,
        loss: &dyn Loss,
    ) -> Result<(f64, Tensor)> {
        let layer = model.as_layer_mut().expect("checked: the batched path is for layers");
        let b = batch.len();
        let x = batch.first()?;
        let pass = crate::layers::Pass::TRAIN.with_optional_lengths(x.lengths.as_deref());
        let out = layer.forward(&x.values, pass);
        // Each example's own loss gradient (its loss alone, as in a batch of one), stacked.
        let mut g_all = Tensor::zeros(out.shape());
        let mut out_i = Tensor::default();
        let mut loss_sum = 0.0;
        for k in 0..b {
            out.select_outer_into(&[k], &mut out_i);
            targets.select_into(&[k], &mut self.one_target);
            let (l, g) = example_loss(loss, &out_i, &self.one_target)?;
            loss_sum += l * loss.terms(1, self.one_target.as_target()) as f64; // ℓ_i · its terms
            g_all.outer_mut(k).copy_from_slice(g.data());
        }
        self.grads.start(b);
        backward_per_example(layer, &g_all, InputGrad::NotNeeded, &mut self.grads); // every g_i
        let clip = self.options.clip as f64;
        let scale: Vec<f32> = self
            .grads
            .squared_norms()
            .iter()
            .map(|sq| (clip / (sq.sqrt() + 1e-6)).min(1.0) as f32) // min(1, C/(‖g_i‖ + 1e-6))
            .collect();
        for (sum, slot) in self.sum.iter_mut().zip(self.grads.slots()) {
            let len = sum.len();
            // Σ_i scale_i·g_i, in blocks of coordinates in parallel, examples in order in each.
            sum.data_mut().par_chunks_mut(COLUMNS).enumerate().with_min_len(split_if_threads(1)).for_each(
                |(block, acc)| {
                    for (k, &s) in scale.iter().enumerate() {
                        let row = &slot.data()[k * len + block * COLUMNS..][..acc.len()];
                        acc.iter_mut().zip(row).for_each(|(a, &g)| *a += s * g);
                    }
                },
            );
        }
        Ok((loss_sum, out))
    }

    /// The most examples one batched pass takes: as many as the per-example budget holds
    /// gradients for (one example's is the model's parameters), at least one.
    fn per_chunk(&self) -> usize {
        let params: usize = self.sum.iter().map(Tensor::len).sum();
        (self.budget / (params.max(1) * 4)).max(1)
    }

    /// [`Self::clipped_sum_batched`] over chunks of the batch small enough for the per-example
    /// budget: the same sum (each chunk adds its examples' terms in order), the outputs stacked.
    fn clipped_sum_in_chunks(
        &mut self,
        model: &mut dyn Model,
        batch: &Inputs,
        targets: &Targets,
        loss: &dyn Loss,
    ) -> Result<(f64, Tensor)> {
        let per_chunk = self.per_chunk();
        let b = batch.len();
        if b <= per_chunk {
            return self.clipped_sum_batched(model, batch, targets, loss);
        }
        let (mut loss_sum, mut outputs) = (0.0, Tensor::default());
        let mut chunk = std::mem::take(&mut self.chunk);
        let mut chunk_targets = std::mem::replace(&mut self.chunk_targets, Targets::Classes(Vec::new()));
        let all: Vec<usize> = (0..b).collect();
        for idx in all.chunks(per_chunk) {
            batch.select_into(idx, &mut chunk);
            targets.select_into(idx, &mut chunk_targets);
            let (l, out) = self.clipped_sum_batched(model, &chunk, &chunk_targets, loss)?;
            loss_sum += l;
            if idx[0] == 0 {
                let mut shape = out.shape().to_vec();
                shape[0] = b;
                outputs = Tensor::zeros(&shape);
            }
            let row = out.len() / idx.len();
            outputs.data_mut()[idx[0] * row..][..out.len()].copy_from_slice(out.data());
        }
        (self.chunk, self.chunk_targets) = (chunk, chunk_targets);
        Ok((loss_sum, outputs))
    }

    /// `Σ_i ḡ_i` one example at a time: a forward and backward pass per example (a batch of
    /// one), for any model. Returns the sum of the examples' losses, each times its terms, and their
    /// outputs, stacked.
    fn clipped_sum_one_by_one(
        &mut self,
        model: &mut dyn Model,
        batch: &Inputs,
        targets: &Targets,
        loss: &dyn Loss,
    ) -> Result<(f64, Tensor)> {
        let b = batch.len();
        let mut outputs = Tensor::default();
        let mut loss_sum = 0.0;
        for k in 0..b {
            batch.select_into(&[k], &mut self.one);
            targets.select_into(&[k], &mut self.one_target);
            let (name, out) = first_output(model.forward_batch(&self.one, Mode::Train)?, &*model)?;
            if k == 0 {
                let mut shape = out.shape().to_vec();
                shape[0] = b;
                outputs = Tensor::zeros(&shape);
            }
            outputs.outer_mut(k).copy_from_slice(out.data());
            let (l, g) = example_loss(loss, &out, &self.one_target)?;
            loss_sum += l * loss.terms(1, self.one_target.as_target()) as f64; // ℓ_i · its terms
            zero_grad(model);
            model.backward_batch(&Tensors::one(&name, g), InputGrad::NotNeeded)?; // this example's g_i
            let params = named_params(model);
            let norm = params
                .iter()
                .map(|(_, p)| p.grad.data().iter().map(|&v| v as f64 * v as f64).sum::<f64>())
                .sum::<f64>()
                .sqrt();
            let scale = (self.options.clip as f64 / (norm + 1e-6)).min(1.0) as f32; // ḡ_i = g_i · min(1, C/(‖g_i‖ + 1e-6))
            for (s, (_, p)) in self.sum.iter_mut().zip(&params) {
                s.axpy(scale, &p.grad); // Σ ḡ_i
            }
        }
        Ok((loss_sum, outputs))
    }
}

/// Example `i`'s loss and `dLᵢ/dy` for its output (a batch of one).
fn example_loss(loss: &dyn Loss, out: &Tensor, target: &Targets) -> Result<(f64, Tensor)> {
    let (l, g) = loss.loss_and_grad(out, target.as_target())?;
    if !l.is_finite() {
        return Err(non_finite("loss".into(), l));
    }
    Ok((l as f64, g))
}

/// The first piece of state that makes examples interact, with its name and what it does: a
/// buffer (batch norm's running statistics mix a batch's examples), or the state a stateful
/// recurrent layer carries from one pass into the next (an example's forward pass would start
/// from other examples' final state: its gradient would depend on their data, which the noise
/// does not cover).
fn mixing_state(model: &dyn Visit) -> Option<(String, &'static str)> {
    let mut found = None;
    model.visit(&mut |name, s| match s {
        State::Buffer(_) if found.is_none() => {
            found = Some((name.to_string(), "batch statistics: batch norm mixes the examples of a batch"));
        }
        State::Carried(_) if found.is_none() => {
            found = Some((
                name.to_string(),
                "state carried between passes: a stateful recurrent layer starts each pass from the last one's final \
                 state",
            ));
        }
        _ => {}
    });
    found
}

impl Step for DpSgd {
    fn describe(&self) -> String {
        format!(
            "DP-SGD (q {}, σ {}, C {})",
            self.options.sample_rate, self.options.noise_multiplier, self.options.clip
        )
    }

    /// False: every sampled batch takes its noised step, an empty one or one whose targets are
    /// all masked included — whether a step happens must not depend on the private data, and the
    /// accountant counts every step.
    fn skips_batches_without_terms(&self) -> bool {
        false
    }

    fn check(&mut self, model: &mut dyn Model, data: &Dataset, options: &FitOptions<'_>) -> Result<()> {
        if data.len() != self.examples {
            return Err(Error::invalid(format!(
                "DP-SGD was set up for {} examples, the training set has {}",
                self.examples,
                data.len()
            )));
        }
        if let Some((name, what)) = mixing_state(model) {
            return Err(Error::invalid(format!(
                "DP-SGD: the model keeps {what} ({name:?}), so one example's gradient is not its own; remove it (a \
                 per-example normalisation, a recurrent layer that is not stateful) for private training"
            )));
        }
        if options.clip_grad_norm.is_some() {
            return Err(Error::invalid(
                "DP-SGD clips each example's gradient itself (DpOptions::clip); clip_grad_norm would change the noise's scale",
            ));
        }
        // What the run returns besides the noised steps must not be chosen by the training data
        // unnoised: a best epoch picked by the training loss (early stopping's restored weights,
        // its stopping time) is a function of every example, which ε does not count. A validation
        // set is separate data; monitor it. (The checkpoints' `best.safetensors` without a
        // validation set is kept by the training loss too: see the module docs.)
        let by_train_loss = |m: Option<crate::train::Monitor>| m == Some(crate::train::Monitor::TrainLoss);
        if by_train_loss(options.early_stopping.as_ref().map(|e| e.monitor)) {
            return Err(Error::invalid(
                "DP-SGD: early stopping on the training loss picks the returned weights and the stopping time from the \
                 training data without noise, which the privacy guarantee does not cover; monitor a validation set \
                 (Monitor::ValLoss or ValAccuracy)",
            ));
        }

        let shapes: Vec<Vec<usize>> =
            named_params(model).iter().map(|(_, p)| p.value.shape().to_vec()).collect();
        let one_example = shapes.iter().map(|s| s.iter().product::<usize>()).sum::<usize>().saturating_mul(4);
        if one_example > self.budget {
            return Err(Error::invalid(format!(
                "DP-SGD: one example's gradient takes {} (the model's parameters), over the per-example budget of {}: \
                 raise it with DpSgd::per_example_budget(bytes) or use a smaller model",
                crate::tensor::human_bytes(one_example),
                crate::tensor::human_bytes(self.budget)
            )));
        }
        self.sum = shapes.iter().map(|s| Tensor::zeros(s)).collect();
        self.batched = model.as_layer_mut().is_some_and(supports_per_example);
        Ok(())
    }

    /// Poisson batches have any size from 0 to `n`, but no forward pass sees more examples than a
    /// chunk (as many as the per-example budget holds gradients for), or one on the pass per example: the
    /// shapes are checked for those (a recurrent layer's activation budget checked for all `n`
    /// at once had refused a large data set that every pass fits).
    fn batch_sizes(&self, n: usize, _: &FitOptions<'_>) -> Vec<usize> {
        if self.batched { vec![1, n.min(self.per_chunk())] } else { vec![1] }
    }

    /// The sampling and noise generators' states and the step count (what the accountant
    /// counts), as JSON.
    fn save_state(&self) -> String {
        use crate::train::checkpoint::rng_json;
        serde_json::json!({
            "sampling": rng_json(&self.sampling),
            "noise": rng_json(&self.noise_rng),
            "steps": self.steps,
        })
        .to_string()
    }

    fn load_state(&mut self, state: &str) -> Result<()> {
        use crate::train::checkpoint::rng_from;
        let bad = |m: String| Error::invalid(format!("DP-SGD: {m}"));
        let v: serde_json::Value = serde_json::from_str(state)
            .map_err(|e| bad(format!("the saved state is not valid JSON ({e})")))?;
        let sampling = rng_from(&v["sampling"], "the sampling generator").map_err(bad)?;
        let noise = rng_from(&v["noise"], "the noise generator").map_err(bad)?;
        let steps = v["steps"]
            .as_u64()
            .filter(|&s| s < u64::MAX) // (the next step would overflow the count)
            .ok_or_else(|| bad("the saved state has no step count below u64::MAX".into()))?;
        (self.sampling, self.noise_rng, self.steps) = (sampling, noise, steps);
        Ok(())
    }

    fn batches(&mut self, n: usize, _: &FitOptions<'_>, _: &mut Rng) -> Vec<Vec<usize>> {
        let q = self.options.sample_rate;
        (0..self.steps_per_epoch())
            .map(|_| (0..n).filter(|_| self.sampling.random::<f64>() < q).collect())
            .collect()
    }

    fn gradient(
        &mut self,
        model: &mut dyn Model,
        batch: &Inputs,
        targets: &Targets,
        loss: &dyn Loss,
    ) -> Result<StepOutcome> {
        // Set up by `check` for this model's parameters (fit calls it): without it no noised
        // gradient would be written, yet the step would count as a private one.
        // (Compared in place, parameter by parameter: nothing allocated per step.)
        let (mut count, mut fits) = (0, true);
        let sum = &self.sum;
        model.visit(&mut |_, s| {
            if let State::Param(p) = s {
                fits &= sum.get(count).is_some_and(|t| t.shape() == p.value.shape());
                count += 1;
            }
        });
        if !fits || count != self.sum.len() {
            return Err(Error::invalid(
                "DP-SGD: the step was not set up for this model's parameters (Step::check, which fit calls first)",
            ));
        }
        self.sum.iter_mut().for_each(|s| s.fill(0.0));
        let b = batch.len();
        let (loss_sum, output) = if b == 0 {
            (0.0, None) // an empty Poisson batch: the step is noise alone
        } else {
            let batched = model.as_layer_mut().is_some_and(supports_per_example);
            let (l, out) = if batched {
                self.clipped_sum_in_chunks(model, batch, targets, loss)?
            } else {
                self.clipped_sum_one_by_one(model, batch, targets, loss)?
            };
            (l, Some(out))
        };
        // Opacus's `expected_batch_size = int(len(dataset) * sample_rate)` (a truncation), at
        // least 1 (where Opacus would divide by zero).
        let expected_batch = ((self.options.sample_rate * self.examples as f64) as u64).max(1) as f64;
        let mut params = named_params_mut(model);
        for (s, (_, p)) in self.sum.iter().zip(params.iter_mut()) {
            for (g, &v) in p.grad.data_mut().iter_mut().zip(s.data()) {
                *g = ((v as f64 + self.noise.sample(&mut self.noise_rng)) / expected_batch) as f32; // (Σ ḡ_i + N(0, σ²C²)) / B
            }
        }
        self.steps += 1;
        // Each example's mean weighted by its terms (Loss::terms): the batch's mean over every
        // counted term, as a plain step reports it and as `fit` weights it.
        let terms = loss.terms(b, targets.as_target());
        Ok(StepOutcome { loss: if terms == 0 { 0.0 } else { (loss_sum / terms as f64) as f32 }, output })
    }
}

/// Trains `model` with DP-SGD for `o.epochs` epochs: [`fit`](crate::train::fit) with a
/// [`DpSgd`] step, quietly; returns each epoch's mean loss, the steps taken and the `ε` spent.
///
/// # Errors
/// As [`DpSgd::new`] for settings out of range, and as [`fit`](crate::train::fit) (a model with
/// batch statistics is refused naming the layer's state; a NaN loss stops training with the
/// model as it was before that batch).
pub fn fit_private(
    model: &mut dyn Model,
    train: &Dataset,
    loss: &dyn Loss,
    optimizer: &mut dyn Optimizer,
    o: &DpOptions,
) -> Result<DpReport> {
    let mut dp = DpSgd::new(o, train.len())?;
    let options = FitOptions::new().epochs(o.epochs).seed(o.seed).verbose(false).step(&mut dp);
    let history = crate::train::fit(model, train, loss, optimizer, options)?;
    Ok(DpReport {
        epoch_losses: history.epochs.iter().map(|e| e.train_loss).collect(),
        steps: dp.steps(),
        epsilon: dp.epsilon(),
    })
}

/// The most steps one epoch may take (`round(1/q)`): a sampling rate below 10⁻⁷ is refused.
pub const MAX_STEPS_PER_EPOCH: usize = 10_000_000;

/// The default memory budget for per-example gradients ([`DpSgd::per_example_budget`]): 1 GiB.
pub const DEFAULT_PER_EXAMPLE_BUDGET: usize = 1 << 30;

/// Coordinates per parallel block of the clipped sum.
const COLUMNS: usize = 4096;
