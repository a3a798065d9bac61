//! `Sequential`: layers in a row, and the training loop around them.
//!
//! A training step is four moves, and [`Sequential`] does nothing more than chain them:
//!
//! 1. **forward** — each layer maps its input to its output, caching what its backward needs;
//! 2. **loss** — compare the output with the target: a number `L`, and `dL/doutput`;
//! 3. **backward** — walk the layers in reverse, each turning `dL/d(its output)` into
//!    `dL/d(its input)` and adding `dL/d(its parameters)` to the parameter gradients;
//! 4. **step** — the optimizer moves every parameter against its gradient.
//!
//! [`Sequential::fit`] repeats that over shuffled mini-batches for some epochs, with validation,
//! early stopping, a learning-rate schedule, progress display and callbacks. Every piece is also
//! public, so the loop can be written by hand — see the crate's `xor` example.
//!
//! ```
//! use backprop::prelude::*;
//! # fn main() -> backprop::Result<()> {
//! let mut model = Sequential::builder(&[2])
//!     .add(Dense::new(2, 8).seed(1))
//!     .add(Tanh::new())
//!     .add(Dense::new(8, 2).seed(2))
//!     .build()?;
//! let xor = Dataset::classification(
//!     Tensor::from_vec(&[4, 2], vec![0., 0., 0., 1., 1., 0., 1., 1.])?,
//!     vec![0, 1, 1, 0],
//! )?;
//! let history = model.fit(&xor, &CrossEntropyLoss::new(), &mut Adam::new(0.05),
//!     FitOptions::new().epochs(300).batch_size(4).verbose(false))?;
//! assert!(history.last().unwrap().train_loss < 0.05);
//! assert_eq!(model.predict_classes(xor.inputs(), 4)?, vec![0, 1, 1, 0]);
//! # Ok(()) }
//! ```

use crate::data::{Dataset, Targets, epoch_order};
use crate::error::{Error, Result};
use crate::layers::{Layer, Mode, Param};
use crate::loss::{Loss, Target, softmax};
use crate::optim::{Optimizer, Schedule, clip_grad_norm};
use crate::tensor::{Rng, Tensor, rng, shape_str};
use std::fmt;
use std::io::IsTerminal;
use std::time::Instant;

/// Layers applied one after the other, with shapes checked when the model is built.
pub struct Sequential {
    /// Shape of one sample (no batch axis): `[1, 28, 28]`.
    input_shape: Vec<usize>,
    layers: Vec<Box<dyn Layer>>,
    /// Shape of one sample after each layer.
    shapes: Vec<Vec<usize>>,
    /// The order in which forward runs the layers (backward runs it in reverse): the list order,
    /// except that an activation that commutes with max pooling and is followed by one swaps with
    /// it (see [`Layer::commutes_with_max_pool`]).
    order: Vec<usize>,
}

/// Collects layers for [`Sequential`]; see [`Sequential::builder`].
pub struct SequentialBuilder {
    input_shape: Vec<usize>,
    layers: Vec<Box<dyn Layer>>,
}

impl SequentialBuilder {
    /// Appends a layer.
    #[allow(clippy::should_implement_trait)] // a builder step, not `+`
    pub fn add(mut self, layer: impl Layer + 'static) -> SequentialBuilder {
        self.layers.push(Box::new(layer));
        self
    }

    /// Appends a boxed layer.
    pub fn add_boxed(mut self, layer: Box<dyn Layer>) -> SequentialBuilder {
        self.layers.push(layer);
        self
    }

    /// Runs shape inference through every layer and returns the model.
    ///
    /// # Errors
    /// [`Error::Shape`] naming the first layer (index and description) that cannot take the
    /// output of the one before it, with both shapes.
    pub fn build(self) -> Result<Sequential> {
        Sequential::new(&self.input_shape, self.layers)
    }
}

/// Prints a per-sample shape with the batch axis as `N`: `[N, 32, 26, 26]`.
fn batch_shape_str(sample: &[usize]) -> String {
    let mut s = String::from("[N");
    for d in sample {
        s += &format!(", {d}");
    }
    s + "]"
}

impl Sequential {
    /// Starts a model whose samples have shape `input_shape` (without the batch axis).
    pub fn builder(input_shape: &[usize]) -> SequentialBuilder {
        SequentialBuilder { input_shape: input_shape.to_vec(), layers: Vec::new() }
    }

    /// A model from a sample shape and a list of layers; runs shape inference.
    ///
    /// # Errors
    /// [`Error::Shape`] naming the first layer (index and description) that cannot take the
    /// output of the one before it, with both shapes:
    ///
    /// ```
    /// use backprop::prelude::*;
    /// let err = Sequential::builder(&[64, 5, 5])
    ///     .add(Flatten::new())
    ///     .add(Dense::new(1568, 10))
    ///     .build()
    ///     .unwrap_err()
    ///     .to_string();
    /// assert!(err.contains("layer 1 (Dense(1568→10))") && err.contains("[N, 1600]"), "{err}");
    /// ```
    pub fn new(input_shape: &[usize], layers: Vec<Box<dyn Layer>>) -> Result<Sequential> {
        let mut shapes = Vec::with_capacity(layers.len());
        let mut shape: Vec<usize> = std::iter::once(1).chain(input_shape.iter().copied()).collect();
        for (i, layer) in layers.iter().enumerate() {
            let from = if i == 0 {
                "the model input".to_string()
            } else {
                format!("layer {} ({})", i - 1, layers[i - 1].describe())
            };
            shape = layer.output_shape(&shape).map_err(|e| {
                let detail = match &e {
                    Error::Shape(m) => m.clone(),
                    other => other.to_string(),
                };
                Error::shape(format!(
                    "cannot build the model: layer {i} ({}) cannot take its input of shape {} from {from}: {detail}",
                    layer.describe(),
                    batch_shape_str(&shape[1..])
                ))
            })?;
            shapes.push(shape[1..].to_vec());
        }
        let order = execution_order(&layers);
        Ok(Sequential { input_shape: input_shape.to_vec(), layers, shapes, order })
    }

    /// The shape of one input sample.
    pub fn input_shape(&self) -> &[usize] {
        &self.input_shape
    }

    /// The shape of one output sample.
    pub fn output_shape(&self) -> &[usize] {
        self.shapes.last().map_or(&self.input_shape, |s| s)
    }

    /// The layers.
    pub fn layers(&self) -> &[Box<dyn Layer>] {
        &self.layers
    }

    /// The layers, mutable.
    pub fn layers_mut(&mut self) -> &mut [Box<dyn Layer>] {
        &mut self.layers
    }

    /// Number of layers.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// True for a model without layers (the identity).
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// Reseeds every layer's random generator (dropout masks): layer `i` gets a seed derived
    /// from `seed` and `i`.
    pub fn reseed(&mut self, seed: u64) {
        for (i, layer) in self.layers.iter_mut().enumerate() {
            layer.reseed(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(i as u64 + 1));
        }
    }

    /// Checks that `x` is a batch of samples of the model's input shape.
    ///
    /// # Errors
    /// [`Error::Shape`] with both shapes.
    pub fn check_input(&self, x: &Tensor) -> Result<()> {
        if x.ndim() != self.input_shape.len() + 1 || x.shape()[1..] != self.input_shape[..] {
            return Err(Error::shape(format!(
                "the model expects inputs of shape {}, got {}",
                batch_shape_str(&self.input_shape),
                shape_str(x.shape())
            )));
        }
        Ok(())
    }

    /// Runs every layer forward.
    ///
    /// # Panics
    /// If `x` is not a batch of the model's input shape (the message gives both shapes).
    pub fn forward(&mut self, x: &Tensor, mode: Mode) -> Tensor {
        self.check_input(x).unwrap_or_else(|e| panic!("{e}"));
        let Some((&first, rest)) = self.order.split_first() else {
            return x.clone();
        };
        // The first layer borrows the caller's input; the model owns every later activation, so
        // element-wise layers may overwrite them in place.
        let mut h = self.layers[first].forward(x, mode);
        for &i in rest {
            h = self.layers[i].forward_owned(h, mode);
        }
        h
    }

    /// Runs every layer backward, from `dL/doutput` to `dL/dinput` (returned), accumulating
    /// every parameter's gradient on the way.
    ///
    /// # Panics
    /// If called before `forward`, or with a gradient of the wrong shape.
    pub fn backward(&mut self, grad_output: &Tensor) -> Tensor {
        let mut g: Option<Tensor> = None;
        for &i in self.order.iter().rev() {
            g = Some(match g {
                Some(g) => self.layers[i].backward_owned(g), // the model owns it: may be reused in place
                None => self.layers[i].backward(grad_output),
            });
        }
        g.unwrap_or_else(|| grad_output.clone())
    }

    /// Like [`Sequential::backward`] when `dL/dinput` is not needed (training): the first layer
    /// skips computing it, which for a convolution is a third of its backward pass.
    ///
    /// # Panics
    /// If called before `forward`, or with a gradient of the wrong shape.
    pub fn backward_params_only(&mut self, grad_output: &Tensor) {
        let Some((&first, rest)) = self.order.split_first() else { return };
        let mut g: Option<Tensor> = None;
        for &i in rest.iter().rev() {
            g = Some(match g {
                Some(g) => self.layers[i].backward_owned(g),
                None => self.layers[i].backward(grad_output),
            });
        }
        self.layers[first].backward_params_only(g.as_ref().unwrap_or(grad_output));
    }

    /// One training step on one batch: forward (train mode), loss, zero the gradients, backward,
    /// optimizer step. Returns the loss. ([`Sequential::fit`] does the same with checks for
    /// non-finite values, shuffling, metrics and so on.)
    ///
    /// # Errors
    /// If `x` does not fit the model or the loss rejects the target.
    pub fn train_step(
        &mut self,
        x: &Tensor,
        target: Target<'_>,
        loss: &dyn Loss,
        optimizer: &mut dyn Optimizer,
    ) -> Result<f32> {
        self.check_input(x)?;
        let out = self.forward(x, Mode::Train);
        let (l, g) = loss.loss_and_grad(&out, target)?;
        self.zero_grad();
        self.backward_params_only(&g);
        optimizer.step(&mut self.params_mut());
        Ok(l)
    }

    /// All parameters, in order (layer by layer, `weight` before `bias`).
    pub fn params(&self) -> Vec<&Param> {
        self.layers.iter().flat_map(|l| l.params()).collect()
    }

    /// All parameters, mutable, in the same order as [`Sequential::params`].
    pub fn params_mut(&mut self) -> Vec<&mut Param> {
        self.layers.iter_mut().flat_map(|l| l.params_mut()).collect()
    }

    /// Parameters with their PyTorch `state_dict` names: `"0.weight"`, `"0.bias"`, `"3.weight"` …
    pub fn named_params(&self) -> Vec<(String, &Param)> {
        let per_layer = self.layers.iter().enumerate();
        per_layer
            .flat_map(|(i, l)| l.params().into_iter().map(move |p| (format!("{i}.{}", p.name), p)))
            .collect()
    }

    /// Number of learnable scalars.
    pub fn num_params(&self) -> usize {
        self.layers.iter().map(|l| l.num_params()).sum()
    }

    /// Sets every gradient to zero.
    pub fn zero_grad(&mut self) {
        self.layers.iter_mut().for_each(|l| l.zero_grad());
    }

    /// A table of the layers, their output shapes and parameter counts, like Keras's
    /// `model.summary()` (the same text as `Display`).
    pub fn summary(&self) -> String {
        self.to_string()
    }

    /// Copies of every parameter value and buffer, to restore later with
    /// [`Sequential::restore`].
    pub fn snapshot(&self) -> Vec<Tensor> {
        let params = self.layers.iter().flat_map(|l| l.params().into_iter().map(|p| p.value.clone()));
        let buffers = self.layers.iter().flat_map(|l| l.buffers().into_iter().map(|(_, b)| b.clone()));
        params.chain(buffers).collect()
    }

    /// Restores parameter values and buffers taken by [`Sequential::snapshot`].
    ///
    /// # Panics
    /// If the snapshot comes from a model of another architecture.
    pub fn restore(&mut self, snapshot: &[Tensor]) {
        let mut it = snapshot.iter();
        for layer in &mut self.layers {
            for p in layer.params_mut() {
                p.value.copy_from(it.next().expect("snapshot of the same model"));
            }
        }
        for layer in &mut self.layers {
            for (_, b) in layer.buffers_mut() {
                b.copy_from(it.next().expect("snapshot of the same model"));
            }
        }
    }

    /// Copies all buffers (small: batch-norm statistics) into `into`, reusing its allocations.
    fn save_buffers(&self, into: &mut Vec<Tensor>) {
        let all: Vec<&Tensor> =
            self.layers.iter().flat_map(|l| l.buffers().into_iter().map(|(_, b)| b)).collect();
        into.resize_with(all.len(), Tensor::default);
        into.iter_mut().zip(all).for_each(|(dst, src)| dst.copy_from(src));
    }

    fn restore_buffers(&mut self, from: &[Tensor]) {
        let all = self.layers.iter_mut().flat_map(|l| l.buffers_mut().into_iter().map(|(_, b)| b));
        all.zip(from).for_each(|(dst, src)| dst.copy_from(src));
    }
}

/// The order in which to run the layers: the list order, with every activation that commutes with
/// max pooling swapped with a max pooling right after it (pooling first shrinks the tensor the
/// activation has to touch 4× for a 2×2 window; the results are identical).
fn execution_order(layers: &[Box<dyn Layer>]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..layers.len()).collect();
    let mut i = 0;
    while i + 1 < layers.len() {
        if layers[i].commutes_with_max_pool() && layers[i + 1].is_disjoint_max_pool() {
            order.swap(i, i + 1);
            i += 2;
        } else {
            i += 1;
        }
    }
    order
}

impl fmt::Display for Sequential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rows: Vec<(String, String, usize)> = self
            .layers
            .iter()
            .zip(&self.shapes)
            .enumerate()
            .map(|(i, (l, s))| (format!("{i}: {}", l.describe()), batch_shape_str(s), l.num_params()))
            .collect();
        let w0 = rows.iter().map(|r| r.0.chars().count()).chain([5]).max().unwrap_or(5);
        let w1 = rows.iter().map(|r| r.1.chars().count()).chain([12]).max().unwrap_or(12);
        let w2 = 10;
        let rule = "─".repeat(w0 + w1 + w2 + 4);
        writeln!(f, "{rule}")?;
        writeln!(f, "{:<w0$}  {:<w1$}  {:>w2$}", "Layer", "Output shape", "Params")?;
        writeln!(f, "{rule}")?;
        writeln!(f, "{:<w0$}  {:<w1$}  {:>w2$}", "input", batch_shape_str(&self.input_shape), "")?;
        for (name, shape, params) in &rows {
            writeln!(f, "{name:<w0$}  {shape:<w1$}  {params:>w2$}")?;
        }
        writeln!(f, "{rule}")?;
        writeln!(f, "Total parameters: {}", self.num_params())?;
        write!(f, "{rule}")
    }
}

impl fmt::Debug for Sequential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

// ====================================================================================== training

/// What early stopping watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Monitor {
    /// Validation loss (lower is better).
    ValLoss,
    /// Validation accuracy (higher is better).
    ValAccuracy,
    /// Training loss (lower is better).
    TrainLoss,
}

/// Stop training when a metric has not improved for `patience` epochs.
#[derive(Clone, Debug)]
pub struct EarlyStopping {
    /// The metric watched.
    pub monitor: Monitor,
    /// Epochs without improvement before stopping.
    pub patience: usize,
    /// The least change that counts as an improvement.
    pub min_delta: f32,
    /// Put back the weights of the best epoch when training ends.
    pub restore_best: bool,
}

impl EarlyStopping {
    /// Watches `monitor` with the given patience, `min_delta = 0`, restoring the best weights.
    pub fn new(monitor: Monitor, patience: usize) -> EarlyStopping {
        EarlyStopping { monitor, patience, min_delta: 0.0, restore_best: true }
    }
}

/// Figures of one finished epoch.
#[derive(Clone, Debug, PartialEq)]
pub struct EpochStats {
    /// Epoch number, from 1.
    pub epoch: usize,
    /// Mean training loss over the epoch's batches (weighted by batch size).
    pub train_loss: f32,
    /// Training accuracy over the epoch (classification only), in `[0, 1]`.
    pub train_accuracy: Option<f32>,
    /// Loss on the validation set, if one was given.
    pub val_loss: Option<f32>,
    /// Accuracy on the validation set (classification only).
    pub val_accuracy: Option<f32>,
    /// The learning rate used during the epoch.
    pub learning_rate: f32,
    /// Wall-clock time of the epoch, validation included.
    pub seconds: f32,
}

/// Figures of one finished training batch.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchStats {
    /// Epoch number, from 1.
    pub epoch: usize,
    /// Batch number within the epoch, from 1.
    pub batch: usize,
    /// Batches per epoch.
    pub batches: usize,
    /// The batch's loss.
    pub loss: f32,
    /// Correct predictions in the batch (classification only).
    pub correct: Option<usize>,
    /// Samples in the batch.
    pub size: usize,
}

/// The record of a [`Sequential::fit`] run: one [`EpochStats`] per epoch trained.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    /// Per-epoch figures, in order.
    pub epochs: Vec<EpochStats>,
    /// True when early stopping ended training before the last epoch.
    pub stopped_early: bool,
    /// The best epoch according to early stopping (when it was used).
    pub best_epoch: Option<usize>,
}

impl History {
    /// The figures of the last epoch trained.
    pub fn last(&self) -> Option<&EpochStats> {
        self.epochs.last()
    }
}

/// The result of [`Sequential::evaluate`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Evaluation {
    /// Mean loss over the samples.
    pub loss: f32,
    /// Fraction correct (classification only).
    pub accuracy: Option<f32>,
    /// Number correct (classification only).
    pub correct: Option<usize>,
    /// Number of samples.
    pub total: usize,
}

type EpochCallback<'a> = Box<dyn FnMut(&EpochStats) + 'a>;
type BatchCallback<'a> = Box<dyn FnMut(&BatchStats) + 'a>;
type Augment<'a> = Box<dyn FnMut(&mut Tensor, &mut Rng) + Send + 'a>;

/// Settings of [`Sequential::fit`], built with chained calls.
///
/// Defaults: 1 epoch, batch size 32, seed 0, shuffling on, no validation, verbose.
pub struct FitOptions<'a> {
    epochs: usize,
    batch_size: usize,
    seed: u64,
    shuffle: bool,
    validation: Option<&'a Dataset>,
    validation_label: String,
    early_stopping: Option<EarlyStopping>,
    schedule: Option<Schedule>,
    clip_grad_norm: Option<f32>,
    verbose: bool,
    on_epoch_end: Option<EpochCallback<'a>>,
    on_batch_end: Option<BatchCallback<'a>>,
    augment: Option<Augment<'a>>,
}

impl Default for FitOptions<'_> {
    fn default() -> Self {
        FitOptions {
            epochs: 1,
            batch_size: 32,
            seed: 0,
            shuffle: true,
            validation: None,
            validation_label: "val".into(),
            early_stopping: None,
            schedule: None,
            clip_grad_norm: None,
            verbose: true,
            on_epoch_end: None,
            on_batch_end: None,
            augment: None,
        }
    }
}

impl<'a> FitOptions<'a> {
    /// The defaults.
    pub fn new() -> FitOptions<'a> {
        FitOptions::default()
    }

    /// Number of passes over the training set.
    pub fn epochs(mut self, epochs: usize) -> Self {
        self.epochs = epochs;
        self
    }

    /// Samples per mini-batch (the last batch of an epoch may be smaller).
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size;
        self
    }

    /// Seed for shuffling, dropout and augmentation. Same seed, same data: bit-identical weights,
    /// whatever the number of threads.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Whether to shuffle the training set every epoch (default: yes).
    pub fn shuffle(mut self, shuffle: bool) -> Self {
        self.shuffle = shuffle;
        self
    }

    /// A validation set, evaluated after every epoch.
    pub fn validation(mut self, data: &'a Dataset) -> Self {
        self.validation = Some(data);
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

    /// Clip gradients to this global L2 norm before each step.
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
    /// with a generator seeded from the fit seed.
    pub fn augment(mut self, f: impl FnMut(&mut Tensor, &mut Rng) + Send + 'a) -> Self {
        self.augment = Some(Box::new(f));
        self
    }
}

/// Number of correct predictions: argmax of each row of `logits` against `labels`.
fn count_correct(logits: &Tensor, labels: &[usize]) -> usize {
    if logits.ndim() != 2 {
        return 0;
    }
    logits.argmax_axis(1).iter().zip(labels).filter(|(p, l)| p == l).count()
}

/// Checks a data set against the model and the loss before training starts.
fn check_dataset(model: &Sequential, data: &Dataset, what: &str) -> Result<()> {
    model.check_input(data.inputs()).map_err(|e| Error::shape(format!("{what}: {e}")))?;
    if let (Some(labels), [classes]) = (data.labels(), model.output_shape()) {
        if let Some((i, &l)) = labels.iter().enumerate().find(|&(_, &l)| l >= *classes) {
            return Err(Error::invalid(format!(
                "{what}: label {l} of sample {i} is out of range for a model with {classes} outputs"
            )));
        }
    }
    Ok(())
}

impl Sequential {
    /// Trains the model on `train` and returns the per-epoch history.
    ///
    /// Each epoch visits the samples in a seeded random order, in mini-batches: forward (train
    /// mode), `loss`, backward, optional gradient clipping, `optimizer.step`. Then the validation
    /// set (if any) is evaluated, callbacks run, and early stopping decides whether to go on.
    ///
    /// # Errors
    /// - [`Error::Shape`] / [`Error::InvalidArgument`] before any training, if the data do not fit
    ///   the model or the loss (wrong sample shape, a label out of range, a batch size of 0, early
    ///   stopping on validation figures without a validation set);
    /// - [`Error::NonFinite`] if the loss or a gradient becomes NaN or infinite: training stops at
    ///   once, and the model keeps the weights (and batch-norm statistics) it had before that
    ///   batch.
    pub fn fit(
        &mut self,
        train: &Dataset,
        loss: &dyn Loss,
        optimizer: &mut dyn Optimizer,
        mut options: FitOptions<'_>,
    ) -> Result<History> {
        if options.batch_size == 0 {
            return Err(Error::invalid("fit: batch size must be at least 1"));
        }
        if train.is_empty() {
            return Err(Error::invalid("fit: the training set is empty"));
        }
        check_dataset(self, train, "training set")?;
        if let Some(v) = options.validation {
            check_dataset(self, v, "validation set")?;
        }
        if let Some(es) = &options.early_stopping {
            if es.monitor != Monitor::TrainLoss && options.validation.is_none() {
                return Err(Error::invalid(format!(
                    "fit: early stopping on {:?} needs a validation set",
                    es.monitor
                )));
            }
        }

        let base_lr = optimizer.learning_rate();
        let mut shuffle_rng = rng(options.seed);
        let mut augment_rng = rng(options.seed ^ 0xA11CE);
        self.reseed(options.seed);
        let batches = train.len().div_ceil(options.batch_size);
        let mut history = History::default();
        let (mut best, mut best_epoch, mut best_weights, mut waited) = (None::<f32>, 0, None, 0);
        let mut last_finite_loss = None;
        // Reused from batch to batch.
        let mut x = Tensor::default();
        let mut t = match train.targets() {
            Targets::Classes(_) => Targets::Classes(Vec::new()),
            Targets::Values(_) => Targets::Values(Tensor::default()),
        };
        let mut saved_buffers = Vec::new();

        for epoch in 1..=options.epochs {
            let started = Instant::now();
            let lr = options.schedule.as_ref().map_or(base_lr, |s| s.lr(base_lr, epoch - 1));
            optimizer.set_learning_rate(lr);
            let order = epoch_order(train.len(), options.shuffle.then_some(&mut shuffle_rng));
            let bar = progress_bar(options.verbose, batches, epoch, options.epochs);
            let (mut loss_sum, mut correct, mut seen) = (0.0f64, 0usize, 0usize);

            for (b, idx) in order.chunks(options.batch_size).enumerate() {
                train.inputs().select_outer_into(idx, &mut x);
                train.targets().select_into(idx, &mut t);
                if let Some(aug) = options.augment.as_mut() {
                    aug(&mut x, &mut augment_rng);
                }
                self.save_buffers(&mut saved_buffers);
                let out = self.forward(&x, Mode::Train);
                let (batch_loss, grad) = loss.loss_and_grad(&out, t.as_target())?;
                let fail = |what: String, value: f32| Error::NonFinite {
                    what,
                    epoch,
                    batch: b + 1,
                    value,
                    last_finite_loss,
                };
                if !batch_loss.is_finite() {
                    self.restore_buffers(&saved_buffers);
                    return Err(fail("loss".into(), batch_loss));
                }
                self.zero_grad();
                self.backward_params_only(&grad);
                if let Some((name, value)) = self.first_non_finite_grad() {
                    self.restore_buffers(&saved_buffers);
                    return Err(fail(format!("gradient of {name}"), value));
                }
                let mut params = self.params_mut();
                if let Some(max) = options.clip_grad_norm {
                    clip_grad_norm(&mut params, max);
                }
                optimizer.step(&mut params);

                last_finite_loss = Some(batch_loss);
                let batch_correct = train.labels().map(|_| match &t {
                    Targets::Classes(l) => count_correct(&out, l),
                    Targets::Values(_) => 0,
                });
                loss_sum += batch_loss as f64 * idx.len() as f64;
                correct += batch_correct.unwrap_or(0);
                seen += idx.len();
                if let Some(bar) = &bar {
                    bar.inc(1);
                    let acc = train.labels().map_or(String::new(), |_| {
                        format!(", acc {:.2}%", 100.0 * correct as f64 / seen as f64)
                    });
                    bar.set_message(format!("loss {:.4}{acc}", loss_sum / seen as f64));
                }
                if let Some(cb) = options.on_batch_end.as_mut() {
                    cb(&BatchStats {
                        epoch,
                        batch: b + 1,
                        batches,
                        loss: batch_loss,
                        correct: batch_correct,
                        size: idx.len(),
                    });
                }
            }
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }

            let val = match options.validation {
                Some(v) => Some(self.evaluate(v, loss, options.batch_size.max(256))?),
                None => None,
            };
            let stats = EpochStats {
                epoch,
                train_loss: (loss_sum / seen as f64) as f32,
                train_accuracy: train.labels().map(|_| correct as f32 / seen as f32),
                val_loss: val.map(|v| v.loss),
                val_accuracy: val.and_then(|v| v.accuracy),
                learning_rate: lr,
                seconds: started.elapsed().as_secs_f32(),
            };
            if options.verbose {
                eprintln!("{}", epoch_line(&stats, options.epochs, &options.validation_label));
            }
            if let Some(cb) = options.on_epoch_end.as_mut() {
                cb(&stats);
            }
            history.epochs.push(stats.clone());

            if let Some(es) = &options.early_stopping {
                let (value, higher_better) = match es.monitor {
                    Monitor::ValLoss => (stats.val_loss, false),
                    Monitor::ValAccuracy => (stats.val_accuracy, true),
                    Monitor::TrainLoss => (Some(stats.train_loss), false),
                };
                let value = value.ok_or_else(|| {
                    Error::invalid(format!(
                        "early stopping on {:?}: the figure is not available (no labels?)",
                        es.monitor
                    ))
                })?;
                let improved = match best {
                    None => true,
                    Some(b) if higher_better => value > b + es.min_delta,
                    Some(b) => value < b - es.min_delta,
                };
                if improved {
                    (best, best_epoch, waited) = (Some(value), epoch, 0);
                    if es.restore_best {
                        best_weights = Some(self.snapshot());
                    }
                } else {
                    waited += 1;
                    if waited >= es.patience {
                        history.stopped_early = epoch < options.epochs;
                        break;
                    }
                }
            }
        }
        if options.early_stopping.is_some() {
            history.best_epoch = Some(best_epoch);
            if let Some(w) = best_weights {
                self.restore(&w);
            }
        }
        optimizer.set_learning_rate(base_lr);
        Ok(history)
    }

    /// The first parameter whose gradient holds a NaN or infinity: its name and that value.
    fn first_non_finite_grad(&self) -> Option<(String, f32)> {
        self.named_params()
            .into_iter()
            .find_map(|(name, p)| p.grad.data().iter().find(|g| !g.is_finite()).map(|&v| (name, v)))
    }

    /// Mean loss (and accuracy, for class labels) over a data set, in eval mode, `batch_size`
    /// samples at a time.
    ///
    /// # Errors
    /// If the data do not fit the model or the loss, or `batch_size` is 0.
    pub fn evaluate(&mut self, data: &Dataset, loss: &dyn Loss, batch_size: usize) -> Result<Evaluation> {
        if batch_size == 0 {
            return Err(Error::invalid("evaluate: batch size must be at least 1"));
        }
        check_dataset(self, data, "evaluate")?;
        let (mut loss_sum, mut correct) = (0.0f64, 0usize);
        let order: Vec<usize> = (0..data.len()).collect();
        let mut x = Tensor::default();
        let mut t = data.targets().select(&[]);
        for idx in order.chunks(batch_size) {
            data.inputs().select_outer_into(idx, &mut x);
            data.targets().select_into(idx, &mut t);
            let out = self.forward(&x, Mode::Eval);
            loss_sum += loss.loss(&out, t.as_target())? as f64 * idx.len() as f64;
            if let Targets::Classes(l) = &t {
                correct += count_correct(&out, l);
            }
        }
        let total = data.len();
        let is_class = data.labels().is_some();
        Ok(Evaluation {
            loss: if total == 0 { 0.0 } else { (loss_sum / total as f64) as f32 },
            accuracy: is_class.then(|| if total == 0 { 0.0 } else { correct as f32 / total as f32 }),
            correct: is_class.then_some(correct),
            total,
        })
    }

    /// The network's raw outputs (logits, for a classifier) for `x`, in eval mode, `batch_size`
    /// samples at a time. Within each batch every layer runs over the samples in parallel.
    ///
    /// # Errors
    /// If `x` does not have the model's input shape, or `batch_size` is 0.
    pub fn predict(&mut self, x: &Tensor, batch_size: usize) -> Result<Tensor> {
        if batch_size == 0 {
            return Err(Error::invalid("predict: batch size must be at least 1"));
        }
        self.check_input(x)?;
        let n = x.dim(0);
        let mut out_shape = vec![n];
        out_shape.extend_from_slice(self.output_shape());
        let mut out = Tensor::zeros(&out_shape);
        let per_sample: usize = self.output_shape().iter().product();
        let mut xb = Tensor::default();
        let order: Vec<usize> = (0..n).collect();
        for idx in order.chunks(batch_size) {
            x.select_outer_into(idx, &mut xb);
            let y = self.forward(&xb, Mode::Eval);
            out.data_mut()[idx[0] * per_sample..][..y.len()].copy_from_slice(y.data());
        }
        Ok(out)
    }

    /// Class probabilities (softmax of the outputs), `[N, classes]`.
    ///
    /// # Errors
    /// As [`Sequential::predict`], and [`Error::Shape`] if the model's output is not `[N, classes]`.
    pub fn predict_proba(&mut self, x: &Tensor, batch_size: usize) -> Result<Tensor> {
        let logits = self.predict(x, batch_size)?;
        if logits.ndim() != 2 {
            return Err(Error::shape(format!(
                "predict_proba needs outputs of shape [N, classes], the model gives {}",
                shape_str(logits.shape())
            )));
        }
        Ok(softmax(&logits))
    }

    /// The predicted class of each sample (argmax of the outputs).
    ///
    /// # Errors
    /// As [`Sequential::predict_proba`].
    pub fn predict_classes(&mut self, x: &Tensor, batch_size: usize) -> Result<Vec<usize>> {
        let logits = self.predict(x, batch_size)?;
        if logits.ndim() != 2 {
            return Err(Error::shape(format!(
                "predict_classes needs outputs of shape [N, classes], the model gives {}",
                shape_str(logits.shape())
            )));
        }
        Ok(logits.argmax_axis(1))
    }

    /// The gradient of each sample's score for one class with respect to its input pixels,
    /// `d output[n, class_n] / d x[n]`, through the same explicit backward pass as training
    /// (eval mode). Its magnitude is a *saliency map*: the pixels whose change would move the
    /// decision most. Parameter gradients are zeroed afterwards.
    ///
    /// # Errors
    /// [`Error::Shape`] if `x` does not fit the model or the model's output is not
    /// `[N, classes]`; [`Error::InvalidArgument`] if a class is out of range or the number of
    /// classes given differs from the number of samples.
    ///
    /// ```
    /// use backprop::prelude::*;
    /// # fn main() -> backprop::Result<()> {
    /// // For a linear model y = x·Wᵀ, d y[c] / d x = W[c, :].
    /// let w = Tensor::from_vec(&[2, 3], vec![1., 2., 3., 4., 5., 6.])?;
    /// let mut model = Sequential::builder(&[3]).add(Dense::new(3, 2).no_bias().with_weights(w, None)).build()?;
    /// let g = model.input_gradient(&Tensor::zeros(&[1, 3]), &[1])?;
    /// assert_eq!(g.data(), &[4., 5., 6.]);
    /// # Ok(()) }
    /// ```
    pub fn input_gradient(&mut self, x: &Tensor, classes: &[usize]) -> Result<Tensor> {
        self.check_input(x)?;
        let &[k] = self.output_shape() else {
            return Err(Error::shape(format!(
                "input_gradient needs outputs of shape [N, classes], the model gives {}",
                batch_shape_str(self.output_shape())
            )));
        };
        if classes.len() != x.dim(0) {
            return Err(Error::invalid(format!(
                "input_gradient: {} classes for {} samples",
                classes.len(),
                x.dim(0)
            )));
        }
        if let Some(&c) = classes.iter().find(|&&c| c >= k) {
            return Err(Error::invalid(format!("input_gradient: class {c} out of range for {k} outputs")));
        }
        let out = self.forward(x, Mode::Eval);
        let mut seed = Tensor::zeros(out.shape());
        for (row, &c) in seed.data_mut().chunks_exact_mut(k).zip(classes) {
            row[c] = 1.0; // d score_c / d output = one-hot(c)
        }
        let dx = self.backward(&seed);
        self.zero_grad();
        Ok(dx)
    }

    /// The loss on one batch and its gradient with respect to every parameter (left in the
    /// parameters' `grad`), without an optimizer step: one explicit training step's first half.
    ///
    /// # Errors
    /// If the loss rejects the targets.
    pub fn loss_and_backward(
        &mut self,
        x: &Tensor,
        target: Target<'_>,
        loss: &dyn Loss,
        mode: Mode,
    ) -> Result<f32> {
        self.check_input(x)?;
        let out = self.forward(x, mode);
        let (l, g) = loss.loss_and_grad(&out, target)?;
        self.zero_grad();
        self.backward(&g);
        Ok(l)
    }
}

fn progress_bar(
    verbose: bool,
    batches: usize,
    epoch: usize,
    epochs: usize,
) -> Option<indicatif::ProgressBar> {
    if !verbose || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(batches as u64);
    let style =
        indicatif::ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg} ({eta})")
            .expect("a valid template")
            .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(format!("{epoch}/{epochs}"));
    Some(bar)
}

fn epoch_line(s: &EpochStats, epochs: usize, val: &str) -> String {
    let mut line = format!("epoch {}/{epochs}: loss {:.4}", s.epoch, s.train_loss);
    if let Some(a) = s.train_accuracy {
        line += &format!(", accuracy {:.2}%", 100.0 * a);
    }
    if let Some(l) = s.val_loss {
        line += &format!(" | {val} loss {l:.4}");
    }
    if let Some(a) = s.val_accuracy {
        line += &format!(", {val} accuracy {:.2}%", 100.0 * a);
    }
    line + &format!(" | lr {:.2e} | {:.1} s", s.learning_rate, s.seconds)
}
