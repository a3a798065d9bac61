//! [`FitOptions`]: the settings of a training run, built with chained calls.

use super::callbacks::{BatchStats, EarlyStopping, EpochStats};
use super::checkpoint::{Checkpoint, Checkpoints};
use super::step::Step;
use crate::data::Dataset;
use crate::optim::Schedule;
use crate::tensor::{Rng, Tensor};

type EpochCallback<'a> = Box<dyn FnMut(&EpochStats) + 'a>;
type BatchCallback<'a> = Box<dyn FnMut(&BatchStats) + 'a>;
type Augment<'a> = Box<dyn FnMut(&mut Tensor, &mut Rng) + Send + 'a>;

/// Settings of [`fit`](super::fit), built with chained calls.
///
/// Defaults: 1 epoch, batch size 32, seed 0, shuffling on, no validation, verbose.
pub struct FitOptions<'a> {
    pub(crate) epochs: usize,
    pub(crate) batch_size: usize,
    pub(crate) seed: u64,
    pub(crate) shuffle: bool,
    pub(crate) drop_last: bool,
    pub(crate) validation: Option<&'a Dataset>,
    pub(crate) validation_batch_size: Option<usize>,
    pub(crate) validation_label: String,
    pub(crate) early_stopping: Option<EarlyStopping>,
    pub(crate) schedule: Option<Schedule>,
    pub(crate) clip_grad_norm: Option<f32>,
    pub(crate) verbose: bool,
    pub(crate) on_epoch_end: Option<EpochCallback<'a>>,
    pub(crate) on_batch_end: Option<BatchCallback<'a>>,
    pub(crate) augment: Option<Augment<'a>>,
    pub(crate) step: Option<&'a mut dyn Step>,
    pub(crate) resume: Option<&'a Checkpoint>,
    pub(crate) checkpoints: Option<Checkpoints>,
}

impl Default for FitOptions<'_> {
    fn default() -> Self {
        FitOptions {
            epochs: 1,
            batch_size: 32,
            seed: 0,
            shuffle: true,
            drop_last: false,
            validation: None,
            validation_batch_size: None,
            validation_label: "val".into(),
            early_stopping: None,
            schedule: None,
            clip_grad_norm: None,
            verbose: true,
            on_epoch_end: None,
            on_batch_end: None,
            augment: None,
            step: None,
            resume: None,
            checkpoints: None,
        }
    }
}

impl<'a> FitOptions<'a> {
    /// The defaults.
    pub fn new() -> FitOptions<'a> {
        FitOptions::default()
    }

    /// Number of passes over the training set (at least 1).
    pub fn epochs(mut self, epochs: usize) -> Self {
        self.epochs = epochs;
        self
    }

    /// Samples per mini-batch (the last batch of an epoch may be smaller; see
    /// [`FitOptions::drop_last`]).
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size;
        self
    }

    /// Seed for shuffling, dropout and augmentation. Same seed, same data: bit-identical weights,
    /// whatever the number of threads.
    ///
    /// Each `fit` call starts from it: ten calls of one epoch with the same seed visit the same
    /// order and draw the same dropout masks ten times, where one call of ten epochs draws new
    /// ones each epoch. Training in several calls, give each its own seed (`seed(base + call)`).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Whether to shuffle the training set every epoch (default: yes).
    pub fn shuffle(mut self, shuffle: bool) -> Self {
        self.shuffle = shuffle;
        self
    }

    /// Skip the last, smaller batch of every epoch (default: no). Useful with batch norm, which
    /// cannot train on a batch of one sample.
    pub fn drop_last(mut self, drop_last: bool) -> Self {
        self.drop_last = drop_last;
        self
    }

    /// A validation set, evaluated after every epoch.
    pub fn validation(mut self, data: &'a Dataset) -> Self {
        self.validation = Some(data);
        self
    }

    /// Samples per batch when evaluating the validation set. By default the larger of the
    /// training batch size and 256 (fewer, larger products), or the training batch size where
    /// the model refuses batches that large (a recurrent or attention layer over long sequences,
    /// whose activation budget a batch of 256 exceeds): a validation set evaluates whenever the
    /// training batches run.
    pub fn validation_batch_size(mut self, batch_size: usize) -> Self {
        self.validation_batch_size = Some(batch_size);
        self
    }

    /// What the per-epoch line calls the validation figures (default `"val"`; `"test"` when the
    /// validation set is the test set).
    pub fn validation_label(mut self, label: &str) -> Self {
        self.validation_label = label.to_string();
        self
    }

    /// Early stopping.
    pub fn early_stopping(mut self, es: EarlyStopping) -> Self {
        self.early_stopping = Some(es);
        self
    }

    /// A learning-rate schedule, applied per epoch from the optimizer's initial rate.
    pub fn schedule(mut self, schedule: Schedule) -> Self {
        self.schedule = Some(schedule);
        self
    }

    /// Clip gradients to this global L2 norm before each step (a positive number).
    pub fn clip_grad_norm(mut self, max_norm: f32) -> Self {
        self.clip_grad_norm = Some(max_norm);
        self
    }

    /// Print a line per epoch on stderr, and a progress bar during each epoch when stderr is a
    /// terminal (default: yes).
    pub fn verbose(mut self, verbose: bool) -> Self {
        self.verbose = verbose;
        self
    }

    /// Called after every epoch.
    pub fn on_epoch_end(mut self, f: impl FnMut(&EpochStats) + 'a) -> Self {
        self.on_epoch_end = Some(Box::new(f));
        self
    }

    /// Called after every training batch.
    pub fn on_batch_end(mut self, f: impl FnMut(&BatchStats) + 'a) -> Self {
        self.on_batch_end = Some(Box::new(f));
        self
    }

    /// Transforms every training batch in place before the forward pass (data augmentation),
    /// with a generator seeded from the fit seed. It must keep the batch's shape and its values
    /// finite: `fit` checks both after each call and stops with an error naming the epoch and the
    /// batch (rather than a layer's refusal or a "diverged" step that would blame the model).
    pub fn augment(mut self, f: impl FnMut(&mut Tensor, &mut Rng) + Send + 'a) -> Self {
        self.augment = Some(Box::new(f));
        self
    }

    /// How each batch becomes a gradient, and which batches an epoch visits (default:
    /// [`Plain`](super::Plain)). For private training, a [`DpSgd`](crate::privacy::DpSgd): the
    /// same loop then samples Poisson batches, clips each example's gradient and adds noise; the
    /// step keeps what it spent (`ε`) for you to read afterwards.
    pub fn step(mut self, step: &'a mut dyn Step) -> Self {
        self.step = Some(step);
        self
    }

    /// Writes a [`Checkpoint`] after every epoch (`last.safetensors`) and for the best epoch so
    /// far (`best.safetensors`) into a folder; see [`Checkpoints`].
    pub fn checkpoints(mut self, checkpoints: Checkpoints) -> Self {
        self.checkpoints = Some(checkpoints);
        self
    }

    /// Continues the run saved in `checkpoint`: the model's weights and generators, the
    /// optimizer's state, the shuffling and augmentation generators, the schedule's position,
    /// early stopping's memory and the history are taken from it, and training goes on from the
    /// epoch after it up to [`FitOptions::epochs`] (the total, as if never interrupted). With the
    /// same data, loss, options and optimizer, the result is bit for bit the run that was
    /// never stopped. The returned history holds every epoch, the checkpoint's included.
    ///
    /// `fit` refuses (before changing anything) a checkpoint of another architecture, optimizer
    /// kind or settings (its learning rate aside: a resumed run may lower it), step or seed, one that has already trained `epochs` epochs or stopped early, one
    /// whose early stopping or best checkpoint watched another figure than this run's would
    /// (its best figure means nothing for another), and early stopping added to a run that had
    /// none (its memory of the epochs before would start from nothing).
    pub fn resume(mut self, checkpoint: &'a Checkpoint) -> Self {
        self.resume = Some(checkpoint);
        self
    }
}
