//! The pluggable part of a training step: which batches an epoch visits, and how a batch becomes
//! a gradient. [`fit`](super::fit) runs every step kind inside the same loop — the same checks
//! before training, the same rollback when a batch fails, the same schedules, callbacks, early
//! stopping and reporting — and only asks the step for these two things.
//!
//! - [`Plain`] (the default): shuffled batches of `batch_size`; forward, loss, backward.
//! - [`Bucketed`]: batches of sequences of similar length (less padding), in a shuffled order;
//!   forward, loss, backward as [`Plain`].
//! - [`DpSgd`](crate::privacy::DpSgd): Poisson-sampled batches; each example's gradient clipped,
//!   their sum noised (differentially private SGD).
//!
//! A new kind of step implements [`Step`] and is handed to
//! [`FitOptions::step`](super::FitOptions::step).

use super::options::FitOptions;
use crate::data::{Dataset, Targets};
use crate::error::Result;
use crate::layers::{InputGrad, Mode, zero_grad};
use crate::loss::Loss;
use crate::model::{Inputs, Model, Tensors};
use crate::tensor::{Rng, Tensor};

/// What one step computed: the batch's mean loss and the model's output (for the accuracy;
/// `None` when the step has none to give).
#[derive(Debug)]
pub struct StepOutcome {
    /// The batch's mean loss: the mean over every term the loss counts
    /// ([`Loss::terms`]: samples, or the positions that are not
    /// padding), which is what [`fit`](super::fit) weights by those terms (0 for a batch with
    /// none).
    pub loss: f32,
    /// The output the loss was computed on, `[batch, …]`.
    pub output: Option<Tensor>,
}

/// How a training step turns a batch into a gradient; see the [module docs](self).
///
/// A step is `Send`: [`fit`](super::fit) runs each batch's step on a thread of rayon's pool
/// ([`on_pool`](super::on_pool)), so its state (counters, a random generator, settings) must be
/// able to move there — an `Arc` rather than an `Rc`.
pub trait Step: Send {
    /// A short description for messages: `"plain"`, `"DP-SGD (σ 1.1, C 1)"`.
    fn describe(&self) -> String;

    /// Checks the step's settings against the model, the data and the options before training
    /// (an error here means nothing was changed). The default accepts everything.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) naming the setting.
    fn check(&mut self, model: &mut dyn Model, data: &Dataset, options: &FitOptions<'_>) -> Result<()> {
        let _ = (model, data, options);
        Ok(())
    }

    /// The batch sizes an epoch may use, for checking the data against the model before
    /// training (the default: `batch_size` and the last, smaller batch).
    fn batch_sizes(&self, n: usize, options: &FitOptions<'_>) -> Vec<usize> {
        super::batch_sizes(n, options.batch_size, options.drop_last)
    }

    /// What the step has accumulated (generators, counts), as text for a
    /// [`Checkpoint`](super::Checkpoint); the default, for a step without state, is empty.
    fn save_state(&self) -> String {
        String::new()
    }

    /// Puts back a state from [`Step::save_state`] of the same kind of step, when
    /// [`fit`](super::fit) resumes from a checkpoint.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) if `state` is not such a state;
    /// the step is then unchanged. The default accepts only the empty state.
    fn load_state(&mut self, state: &str) -> Result<()> {
        if state.is_empty() {
            Ok(())
        } else {
            Err(crate::Error::invalid(format!(
                "the step {:?} keeps no state, got {state:?}",
                self.describe()
            )))
        }
    }

    /// Whether the step's batches may join samples that are not consecutive in the data set, in
    /// their order (row `s` of a batch then does not continue row `s` of the batch before):
    /// [`fit`](super::fit) refuses such a step for a model that carries state from batch to
    /// batch (a stateful recurrent layer). The default says so when `options` shuffle.
    fn reorders_samples(&self, options: &FitOptions<'_>) -> bool {
        options.shuffle
    }

    /// Whether [`fit`](super::fit) passes over a batch whose targets are all masked (NaN
    /// padding: [`Loss::terms`] counts none of them) instead of stepping on it. Such a batch has
    /// no loss to descend, yet a step would still move the weights by the optimizer's momentum or
    /// weight decay (PyTorch steps on it, with a NaN loss). The default is true; a step that must
    /// take every batch it sampled (DP-SGD, whose noise and privacy accounting count every step)
    /// says false.
    fn skips_batches_without_terms(&self) -> bool {
        true
    }

    /// The batches of the next epoch over `n` samples: lists of sample indices.
    fn batches(&mut self, n: usize, options: &FitOptions<'_>, shuffle: &mut Rng) -> Vec<Vec<usize>>;

    /// Leaves the batch's gradient in every parameter's [`grad`](crate::layers::Param::grad)
    /// (replacing what was there) and returns the batch's mean loss and output. The loop then
    /// checks the loss and the gradient, clips (if asked) and lets the optimizer step.
    ///
    /// # Errors
    /// Whatever the model or the loss reports; a layer's panic is caught by the loop.
    fn gradient(
        &mut self,
        model: &mut dyn Model,
        batch: &Inputs,
        targets: &Targets,
        loss: &dyn Loss,
    ) -> Result<StepOutcome>;
}

/// The ordinary step: shuffled batches of `batch_size`, then
/// `forward → loss → zero gradients → backward`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Plain;

impl Step for Plain {
    fn describe(&self) -> String {
        "plain".into()
    }

    fn batches(&mut self, n: usize, options: &FitOptions<'_>, shuffle: &mut Rng) -> Vec<Vec<usize>> {
        let order = crate::data::epoch_order(n, options.shuffle.then_some(shuffle));
        let batches = if options.drop_last { n / options.batch_size } else { n.div_ceil(options.batch_size) };
        order.chunks(options.batch_size).take(batches).map(<[usize]>::to_vec).collect()
    }

    fn gradient(
        &mut self,
        model: &mut dyn Model,
        batch: &Inputs,
        targets: &Targets,
        loss: &dyn Loss,
    ) -> Result<StepOutcome> {
        let (name, out) = super::first_output(model.forward_batch(batch, Mode::Train)?, &*model)?;
        let (batch_loss, grad) = loss.loss_and_grad(&out, targets.as_target())?;
        if !batch_loss.is_finite() {
            return Err(super::non_finite("loss".into(), batch_loss));
        }
        zero_grad(model);
        model.backward_batch(&Tensors::one(&name, grad), InputGrad::NotNeeded)?;
        Ok(StepOutcome { loss: batch_loss, output: Some(out) })
    }
}

/// Batches of sequences of similar length: every epoch, the samples are ordered by the lengths of
/// one input (ties broken at random), cut into batches of `batch_size`, and the batches visited in
/// a random order (with `shuffle`; else shortest first). A model that runs each batch only to its
/// longest sequence — the crate's recurrent layers do, given the lengths — then spends little on
/// padding. The gradient is [`Plain`]'s.
///
/// ```
/// use backprop::prelude::*;
/// use backprop::train::step::Bucketed;
/// let x = Tensor::zeros(&[6, 4, 1]);
/// let data = Dataset::regression(x, Tensor::zeros(&[6, 1])).unwrap().with_lengths(vec![4, 1, 3, 1, 4, 2]).unwrap();
/// let mut model = Sequential::new().add(Lstm::new(1, 2).last_step_only()).add(Dense::new(2, 1));
/// let mut step = Bucketed::by_lengths_of("input");
/// let options = FitOptions::new().batch_size(2).step(&mut step).verbose(false);
/// model.fit(&data, &MseLoss::new(), &mut Sgd::new(0.1), options).unwrap();
/// ```
#[derive(Clone, Debug)]
pub struct Bucketed {
    input: String,
    lengths: Vec<usize>,
}

impl Bucketed {
    /// Buckets by the lengths of the input named `input` (`"input"` for a data set of one input).
    pub fn by_lengths_of(input: &str) -> Bucketed {
        Bucketed { input: input.to_string(), lengths: Vec::new() }
    }
}

impl Step for Bucketed {
    fn describe(&self) -> String {
        format!("bucketed by the lengths of {:?}", self.input)
    }

    /// True: batches are made of sequences of similar length, shuffled or not.
    fn reorders_samples(&self, _: &FitOptions<'_>) -> bool {
        true
    }

    /// Takes the lengths of the named input (an error if it has none).
    fn check(&mut self, _: &mut dyn Model, data: &Dataset, _: &FitOptions<'_>) -> Result<()> {
        let lengths = data.named_inputs().lengths(&self.input).ok_or_else(|| {
            crate::Error::invalid(format!(
                "bucketed batches: the input {:?} has no sequence lengths (Dataset::with_lengths gives them)",
                self.input
            ))
        })?;
        self.lengths = lengths.to_vec();
        Ok(())
    }

    fn batches(&mut self, n: usize, options: &FitOptions<'_>, shuffle: &mut Rng) -> Vec<Vec<usize>> {
        use rand::RngExt;
        use rand::seq::SliceRandom;
        let length = |i: usize| self.lengths.get(i).copied().unwrap_or(0);
        let mut keyed: Vec<(usize, u64, usize)> = (0..n)
            .map(|i| (length(i), if options.shuffle { shuffle.random::<u64>() } else { i as u64 }, i))
            .collect();
        if options.drop_last {
            // The samples left out are chosen before the sort by length — at random when
            // shuffling, the last ones in order otherwise, as a plain epoch leaves them out —
            // not the tail of the sorted order, which would leave out the longest sequences in
            // every epoch.
            keyed.sort_unstable_by_key(|&(_, key, i)| (key, i));
            keyed.truncate(n - n % options.batch_size);
        }
        keyed.sort_unstable();
        let order: Vec<usize> = keyed.into_iter().map(|(_, _, i)| i).collect();
        let batches = if options.drop_last { n / options.batch_size } else { n.div_ceil(options.batch_size) };
        let mut out: Vec<Vec<usize>> =
            order.chunks(options.batch_size).take(batches).map(<[usize]>::to_vec).collect();
        if options.shuffle {
            out.shuffle(shuffle);
        }
        out
    }

    fn gradient(
        &mut self,
        model: &mut dyn Model,
        batch: &Inputs,
        targets: &Targets,
        loss: &dyn Loss,
    ) -> Result<StepOutcome> {
        Plain.gradient(model, batch, targets, loss)
    }
}
