//! Training, evaluation and prediction for any model ([`Model`]: every layer is one).
//!
//! A training step is four moves, and [`fit`] does nothing more than repeat them over shuffled
//! mini-batches:
//!
//! 1. **forward** — each layer maps its input to its output, caching what its backward needs;
//! 2. **loss** — compare the output with the target: a number `L`, and `dL/doutput`;
//! 3. **backward** — walk the layers in reverse, each turning `dL/d(its output)` into
//!    `dL/d(its input)` and adding `dL/d(its parameters)` to the parameter gradients;
//! 4. **step** — the optimizer moves every parameter against its gradient.
//!
//! Around that, `fit` adds validation, early stopping, a learning-rate schedule, gradient
//! clipping, progress display and callbacks. Every piece is public, so the loop can be written by
//! hand (see the crate's `xor` example and [`train_step`]).
//!
//! **Failing safely.** Everything `fit` can check before training — the data against the model's
//! input and output shapes, label ranges, the loss against the targets, the options — it checks
//! before the first forward pass. If a batch fails later (a NaN loss or gradient, a layer that
//! refuses its input), the weights, buffers (batch-norm statistics), counters and random
//! generators are put back as they were before that batch, the optimizer's learning rate as it
//! was before `fit`, and the error says where it happened.
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
//! let history = backprop::train::fit(&mut model, &xor, &CrossEntropyLoss::new(), &mut Adam::new(0.05),
//!     FitOptions::new().epochs(300).batch_size(4).verbose(false))?;
//! assert!(history.last().unwrap().train_loss < 0.05);
//! assert_eq!(backprop::train::predict_classes(&mut model, xor.inputs(), 4)?, vec![0, 1, 1, 0]);
//! # Ok(()) }
//! ```

pub mod callbacks;
pub mod checkpoint;
mod keras;
pub mod options;
mod predict;
mod progress;
pub mod step;

pub use callbacks::{BatchStats, EarlyStopping, EpochStats, Evaluation, History, Monitor};
pub use checkpoint::{Checkpoint, Checkpoints};
pub use options::FitOptions;
pub use predict::{
    evaluate, input_gradient, loss_and_backward, predict, predict_classes, predict_inputs, predict_proba,
    predict_with_lengths, train_step,
};
pub use step::{Bucketed, Plain, Step, StepOutcome};

use crate::data::{Dataset, Targets, check_finite};
use crate::error::{Error, Result};
use crate::io;
use crate::layers::{Snapshot, Visit, named_params, named_params_mut, reseed};
use crate::loss::Loss;
use crate::model::{Inputs, Model, Tensors};
use crate::optim::{Optimizer, OptimizerState, clip_grad_norm};
use crate::tensor::first_non_finite;
use crate::tensor::{Tensor, rng, shape_str};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

/// Runs `f` on a thread of rayon's pool and returns what it returns: a hand-written training
/// loop's step (or any other run of several layers) wrapped in it starts its parallel work
/// without waking the calling thread for each piece.
///
/// Every parallel loop and every large product in the crate runs on rayon's pool. Started from a
/// thread outside the pool (a program's `main`), each one hands its work to the pool and puts the
/// calling thread to sleep until it is done — two context switches per loop, a few hundred per
/// Transformer training step. Started from one of the pool's own threads, it shares the work
/// with the others and takes part itself. [`fit`], [`train_step`], [`evaluate`] and the
/// `predict` functions run their batches this way already; a loop of your own calls
/// (`forward_batch`, `backward_batch`, `Optimizer::step`) gains the same by running each step
/// inside `on_pool`. It does not change the results (every kernel gives the same bits on any
/// number of threads) nor any process-wide setting: it uses the pool the caller is on, or
/// rayon's global pool (from outside any pool). Called on a thread of a pool of your own (inside
/// `rayon::ThreadPool::install`), it runs `f` there, as the top level of the work, whose products
/// split over that pool's threads; nested inside another `on_pool` closure, or with a pool of one
/// thread, it simply calls `f`.
///
/// While `f` runs, the pool's other threads stay awake: each waits for the next piece of
/// parallel work without sleeping (as an OpenMP runtime's threads spin between parallel
/// regions, though yielding its CPU to any other thread that wants it), so `f`'s loops start on
/// every thread at once instead of after a thread has woken — on the 2-vCPU hosts of
/// docs/benchmarks.md waking one took 20–40 µs, as long as many of a training step's loops (an
/// MLP's, a Transformer's two-thread step 10–20 % faster for it). So during `f` the pool's
/// threads keep their cores busy even where `f` is serial; when `f` returns, they go back to
/// rayon's usual idling. A pool with more threads than the process has CPUs gets no such
/// helpers (there they would take CPU time from the threads doing the work).
///
/// A panic inside `f` reaches the caller, as if `f` had been called directly.
///
/// Several threads of a program calling into the crate at once (a server answering requests,
/// each on its own thread) share the one pool: while a pass waits for its parallel pieces, the
/// pool thread running it may take up another caller's whole pass, and return only when that is
/// done too. Each result is as it would be alone; a short pass may then wait for a long one. Where
/// that matters, give the callers separate pools (`rayon::ThreadPool::install`).
///
/// ```
/// use backprop::prelude::*;
/// # fn main() -> backprop::Result<()> {
/// let mut model = Sequential::builder(&[3]).add(Dense::new(3, 2).seed(1)).build()?;
/// let (x, y) = (Tensor::ones(&[4, 3]), Tensor::zeros(&[4, 2]));
/// let mut sgd = Sgd::new(0.1);
/// let loss = backprop::train::on_pool(|| -> backprop::Result<f32> {
///     let out = model.forward(&x, Pass::TRAIN);
///     let (loss, grad) = MseLoss::new().loss_and_grad(&out, Target::Values(&y))?;
///     model.zero_grad();
///     model.backward(&grad, InputGrad::NotNeeded);
///     sgd.step(&mut model);
///     Ok(loss)
/// })?;
/// assert!(loss > 0.0);
/// # Ok(()) }
/// ```
pub fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    crate::tensor::parallel::on_pool(f)
}

/// Number of correct predictions: argmax of each row of `logits` (along its last axis: `[N, C]`,
/// or `[N, …, C]` with one label per row, as the cross-entropy reads it) against `labels`; 0 when
/// the rows are not one per label.
pub(crate) fn count_correct(logits: &Tensor, labels: &[usize]) -> usize {
    match logits.shape() {
        [_, _] => logits.argmax_axis(1).iter().zip(labels).filter(|(p, l)| p == l).count(),
        [_, .., c] if *c > 0 && logits.len() / c == labels.len() => {
            let rows = logits.clone().reshape(&[labels.len(), *c]); // (a copy: a rare shape)
            rows.argmax_axis(1).iter().zip(labels).filter(|(p, l)| p == l).count()
        }
        _ => 0,
    }
}

/// The message of an error without its kind's prefix, for wrapping it in context.
fn detail(e: &Error) -> String {
    match e {
        Error::Shape(m) | Error::InvalidArgument(m) => m.clone(),
        other => other.to_string(),
    }
}

/// Refuses a data set whose targets are all masked (NaN padding that `loss` ignores): the loss
/// counts no term of it ([`Loss::terms`]), so its mean loss would be 0, a perfect model, and a
/// step on it would descend nothing. After [`check_data`] (which checks the targets' shapes).
pub(crate) fn check_some_terms(data: &Dataset, loss: &dyn Loss, what: &str) -> Result<()> {
    if loss.ignores_nan_targets() && loss.terms(data.len(), data.targets().as_target()) == 0 {
        return Err(Error::invalid(format!(
            "{what}: every one of its {} samples' targets is masked (NaN), so {} counts no term: there is no loss \
             to report or descend (a loss of 0 would read as a perfect model)",
            data.len(),
            loss.name()
        )));
    }
    Ok(())
}

/// Checks a data set against the model and the loss without running the model: the input shape
/// at every batch size that will occur, label ranges, and the loss on a zero prediction of the
/// model's output shape (which catches a wrong kind of target and a wrong target shape).
pub(crate) fn check_data(
    model: &dyn Model,
    data: &Dataset,
    loss: Option<&dyn Loss>,
    what: &str,
    batch_sizes: &[usize],
) -> Result<Option<Vec<usize>>> {
    data.named_inputs().check().map_err(|e| Error::shape(format!("{what}: {}", detail(&e))))?;
    // The inputs can be replaced after the data set was made (`Dataset::inputs_mut`): their
    // samples must still be the targets' samples, one for one.
    for input in data.named_inputs().iter() {
        let n = input.values.shape().first().copied().unwrap_or(0);
        if n != data.len() {
            return Err(Error::shape(format!(
                "{what}: input {:?} has {n} samples but there are {} targets",
                input.name,
                data.len()
            )));
        }
    }
    model.check_inputs(data.named_inputs()).map_err(|e| Error::invalid(format!("{what}: {}", detail(&e))))?;
    // After the model's own checks (an embedding names its bad ids more precisely).
    let inputs = data.named_inputs();
    for input in inputs.iter() {
        let name = if inputs.count() == 1 { "input".to_string() } else { format!("input {:?}", input.name) };
        check_finite(&input.values, &format!("{what}, {name}"), false)?;
    }
    if let (Targets::Values(t), Some(loss)) = (data.targets(), loss) {
        let allow_nan = loss.ignores_nan_targets();
        check_finite(t, &format!("{what}, targets"), allow_nan).map_err(|e| {
            let hint = if allow_nan {
                String::new()
            } else {
                format!(" ({} does not read NaN as \"ignore this position\")", loss.name())
            };
            Error::invalid(format!("{}{hint}", detail(&e)))
        })?;
    }
    let mut out = Vec::new();
    for &b in batch_sizes {
        match model.output_shapes(&data.named_inputs().batch_shapes(b)) {
            None => return Ok(None), // the model cannot tell: its first batch will
            Some(shapes) => {
                let shapes = shapes.map_err(|e| Error::shape(format!("{what}: {}", detail(&e))))?;
                out = shapes
                    .into_iter()
                    .next()
                    .map(|(_, s)| s)
                    .ok_or_else(|| Error::invalid(format!("{what}: {} has no outputs", model.name())))?;
            }
        }
    }
    if let (Some(labels), [_, classes]) = (data.labels(), out.as_slice())
        && let Some((i, &l)) = labels.iter().enumerate().find(|&(_, &l)| l >= *classes)
    {
        return Err(Error::invalid(format!(
            "{what}: label {l} of sample {i} is out of range for a model with {classes} outputs"
        )));
    }
    if let (Some(loss), false) = (loss, data.is_empty()) {
        // The shapes, on one sample (its message then shows a sample's shapes).
        let mut one = out.clone();
        if let Some(n) = one.first_mut() {
            *n = 1;
        }
        let target = data.targets().select(&[0]);
        loss.check_target(&one, target.as_target()).map_err(|e| match e {
            Error::Shape(m) => Error::shape(format!("{what}: {m}")),
            Error::InvalidArgument(m) => Error::invalid(format!("{what}, sample 0: {m}")),
            other => other,
        })?;
        // Then every sample's values, before the first batch (a class id out of range in sample
        // 900 had stopped training in the middle of an epoch), in blocks of samples: the check
        // may make a list per value (16 bytes each), which for all of a large sequence data set
        // at once would be gigabytes.
        const BLOCK: usize = 256;
        let mut block_out = out.clone();
        let mut target = data.targets().select(&[]);
        for start in (0..data.len()).step_by(BLOCK) {
            let samples: Vec<usize> = (start..data.len().min(start + BLOCK)).collect();
            if let Some(n) = block_out.first_mut() {
                *n = samples.len();
            }
            data.targets().select_into(&samples, &mut target);
            let at = || match samples.len() {
                1 => format!("sample {start}"),
                k => format!("samples {start}–{}", start + k - 1),
            };
            loss.check_target(&block_out, target.as_target()).map_err(|e| match e {
                Error::Shape(m) => Error::shape(format!("{what}: {m}")),
                Error::InvalidArgument(m) => Error::invalid(format!("{what}, {}: {m}", at())),
                other => other,
            })?;
        }
    }
    Ok(Some(out))
}

/// Every epoch's learning rate from the schedule, before the first (a rate that grew past f32
/// at epoch 5 had stopped training after four epochs at absurd rates): checked at the epochs of
/// its largest and smallest rates, which bound the others.
fn check_schedule(options: &FitOptions<'_>, optimizer: &mut dyn Optimizer) -> Result<()> {
    let Some(s) = &options.schedule else { return Ok(()) };
    let base_lr = optimizer.learning_rate();
    // Why the rate at step `t` (epoch t + 1) is refused, if it is.
    let refusal = |t: usize, optimizer: &mut dyn Optimizer| -> Option<String> {
        let (lr, epoch) = (s.lr(base_lr, t), t + 1);
        if !(lr.is_finite() && lr >= 0.0) {
            return Some(format!(
                "fit: the learning-rate schedule gives {lr} at epoch {epoch} (base rate {base_lr}): a rate must be a \
                 finite number ≥ 0; nothing was trained"
            ));
        }
        // The optimizer's settings with this epoch's rate (AdamW's lr·λ < 1 at a rate that grows).
        optimizer.set_learning_rate(lr);
        optimizer.check().err().map(|e| {
            format!(
                "fit: at epoch {epoch} the learning-rate schedule gives {lr} (base rate {base_lr}), with which {}; \
                 nothing was trained",
                detail(&e)
            )
        })
    };
    // The epochs of the largest and smallest rates check them all (see `extreme_steps`); the
    // first refused epoch is then found between the last accepted one and the refused one, where
    // the rate is monotone.
    let mut refused = None;
    let mut accepted = None;
    for t in s.extreme_steps(options.epochs) {
        if refusal(t, optimizer).is_none() {
            accepted = Some(t);
            continue;
        }
        let (mut lo, mut hi) = (accepted.map_or(0, |a| a + 1), t);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match refusal(mid, optimizer) {
                Some(_) => hi = mid,
                None => lo = mid + 1,
            }
        }
        refused = refusal(lo, optimizer);
        break;
    }
    optimizer.set_learning_rate(base_lr);
    refused.map_or(Ok(()), |m| Err(Error::invalid(m)))
}

/// The checkpoints' folder made, and shown to take files, before the first epoch: a folder that
/// cannot be written (or a `last.safetensors` that is a folder, or read-only) had failed only
/// after the first epoch's training. Returns the folders it created, deepest first (removed
/// again if the run is refused before training).
fn prepare_checkpoints(c: &crate::train::Checkpoints) -> Result<Vec<std::path::PathBuf>> {
    let created: Vec<std::path::PathBuf> =
        c.dir.ancestors().take_while(|d| !d.as_os_str().is_empty() && !d.exists()).map(Into::into).collect();
    let ready = (|| -> Result<()> {
        std::fs::create_dir_all(&c.dir).map_err(|e| Error::io(&c.dir, e))?;
        tempfile::Builder::new()
            .prefix(".backprop-probe-")
            .tempfile_in(&c.dir)
            .map_err(|e| Error::io(&c.dir, e))?;
        Ok(())
    })();
    if let Err(e) = ready {
        remove_created(&created);
        return Err(e);
    }
    for path in [c.last_path(), c.best_path()] {
        match std::fs::metadata(&path) {
            Ok(m) if m.is_dir() => {
                return Err(Error::invalid(format!("{}: a folder where a checkpoint goes", path.display())));
            }
            Ok(m) if m.permissions().readonly() => {
                return Err(Error::invalid(format!(
                    "{}: read-only, so a checkpoint cannot replace it",
                    path.display()
                )));
            }
            _ => {}
        }
    }
    Ok(created)
}

/// Removes the folders `prepare_checkpoints` created (deepest first), those still empty: a run
/// refused before writing anything leaves none behind.
fn remove_created(created: &[std::path::PathBuf]) {
    created.iter().for_each(|d| drop(std::fs::remove_dir(d)));
}

/// The batch sizes an epoch of `n` samples in batches of `b` will use.
pub(crate) fn batch_sizes(n: usize, b: usize, drop_last: bool) -> Vec<usize> {
    let mut sizes = vec![b.min(n)];
    if n > b && !n.is_multiple_of(b) && !drop_last {
        sizes.push(n % b);
    }
    sizes
}

fn check_options(train: &Dataset, options: &FitOptions<'_>) -> Result<()> {
    let bad = |m: String| Err(Error::invalid(format!("fit: {m}")));
    if options.batch_size == 0 {
        return bad("batch size must be at least 1".into());
    }
    if options.validation_batch_size == Some(0) {
        return bad("the validation batch size must be at least 1".into());
    }
    if options.epochs == 0 {
        return bad("epochs must be at least 1".into());
    }
    if train.is_empty() {
        return bad("the training set is empty".into());
    }
    if options.validation.is_some_and(|v| v.is_empty()) {
        return bad("the validation set is empty: its loss and accuracy would mean nothing".into());
    }
    if options.drop_last && train.len() < options.batch_size {
        return bad(format!(
            "drop_last with {} samples and batch size {} leaves no batch",
            train.len(),
            options.batch_size
        ));
    }
    if let Some(c) = options.clip_grad_norm
        && !(c.is_finite() && c > 0.0)
    {
        return bad(format!("clip_grad_norm must be a positive number, got {c}"));
    }
    if let Some(es) = &options.early_stopping {
        if es.monitor != Monitor::TrainLoss && options.validation.is_none() {
            return bad(format!("early stopping on {:?} needs a validation set", es.monitor));
        }
        if es.monitor == Monitor::ValAccuracy && options.validation.is_some_and(|v| v.labels().is_none()) {
            return bad("early stopping on validation accuracy needs class labels".into());
        }
        if es.patience == 0 {
            return bad("early stopping needs a patience of at least 1 epoch".into());
        }
        if !(es.min_delta.is_finite() && es.min_delta >= 0.0) {
            return bad(format!(
                "early stopping's min_delta must be a finite number ≥ 0, got {} (with NaN or ∞ no epoch would ever count as an improvement)",
                es.min_delta
            ));
        }
    }
    if options.checkpoints.is_some() {
        let monitor = checkpoint_monitor(options);
        if monitor != Monitor::TrainLoss && options.validation.is_none() {
            return bad(format!("keeping the best checkpoint by {monitor:?} needs a validation set"));
        }
        if monitor == Monitor::ValAccuracy && options.validation.is_some_and(|v| v.labels().is_none()) {
            return bad("keeping the best checkpoint by validation accuracy needs class labels".into());
        }
    }
    if let Some(c) = options.resume {
        let p = c.progress();
        if p.seed != options.seed {
            return bad(format!(
                "the checkpoint was trained with seed {}, the options give seed {}; resuming exactly needs the same \
                 (FitOptions::seed)",
                p.seed, options.seed
            ));
        }
        if p.history.stopped_early {
            return bad(format!(
                "the checkpoint's run stopped early at epoch {}: there is nothing to resume",
                p.epoch
            ));
        }
        if p.epoch >= options.epochs {
            return bad(format!(
                "the checkpoint has trained {} epochs already; ask for more (FitOptions::epochs is the total)",
                p.epoch
            ));
        }
        // The stored best figures were measured on one figure: compared with another (a training
        // loss against validation losses), no epoch would improve on them.
        if let (Some(es), Some(stored)) = (&options.early_stopping, p.early.and_then(|e| e.monitor))
            && stored != es.monitor
        {
            return bad(format!(
                "the checkpoint's early stopping watched {stored:?}, this run's watches {:?}: its best figure and \
                 patience count mean nothing for another figure; resume with the same monitor",
                es.monitor
            ));
        }
        if let (Some(es), None) = (&options.early_stopping, &p.early) {
            // Its memory would start from nothing: the resumed run's first epoch would be "best"
            // whatever the epochs before it measured (an uninterrupted run remembers them).
            return bad(format!(
                "this run stops early on {:?}, but the checkpoint's run did not (it keeps no best figure or \
                 patience count, and no best weights): an uninterrupted run's early stopping would remember \
                 the {} epochs before; resume without early stopping, or start again with it",
                es.monitor, p.epoch
            ));
        }
        if options.checkpoints.is_some()
            && let Some(stored) = p.checkpoint_monitor
            && stored != checkpoint_monitor(options)
        {
            return bad(format!(
                "the checkpoint's best file was chosen by {stored:?}, this run's would be by {:?} (the default \
                 follows early stopping and the validation set): set Checkpoints::best_by({stored:?}) to go on",
                checkpoint_monitor(options)
            ));
        }
        if let (Some(es), Some(e)) = (&options.early_stopping, &p.early) {
            if e.waited >= es.patience {
                // (Its run stopped here too, on its last epoch: `stopped_early` says no only
                // because that epoch was the last asked for.)
                return bad(format!(
                    "the checkpoint's run had gone {} epochs without improving, early stopping's patience is {}: an uninterrupted run would stop at epoch {}, so there is nothing to resume",
                    e.waited, es.patience, p.epoch
                ));
            }
            if es.restore_best && !e.has_weights && e.best.is_some() {
                return bad(format!(
                    "early stopping restores the best epoch's weights, but the checkpoint keeps none (its run did not restore them): the weights of epoch {} are not in it; resume with restore_best off",
                    e.best_epoch
                ));
            }
        }
    }
    Ok(())
}

/// The figure that decides which checkpoint is best: the one asked for, else early stopping's,
/// else the validation loss if there is a validation set, else the training loss.
fn checkpoint_monitor(options: &FitOptions<'_>) -> Monitor {
    let asked = options.checkpoints.as_ref().and_then(|c| c.monitor);
    let early = options.early_stopping.as_ref().map(|e| e.monitor);
    let fallback = if options.validation.is_some() { Monitor::ValLoss } else { Monitor::TrainLoss };
    asked.or(early).unwrap_or(fallback)
}

/// Trains `model` on `train` and returns the per-epoch history.
///
/// Each epoch visits the samples in the batches the [`step`] chooses — by default
/// ([`Plain`]) a seeded random order in mini-batches: forward (train mode), `loss`, backward,
/// optional gradient clipping, `optimizer.step`. Then the validation set (if any) is evaluated,
/// callbacks run, and early stopping decides whether to go on. A private step
/// ([`DpSgd`](crate::privacy::DpSgd), through [`FitOptions::step`]) runs in the same loop.
/// A batch whose targets are all masked (NaN padding the loss ignores) is passed over: it has
/// no loss to descend ([`Step::skips_batches_without_terms`]; DP-SGD steps on it).
///
/// `model` is any [`Model`]: a [`Sequential`](crate::Sequential), any other layer, or a model
/// struct with several inputs (the loss trains its first output).
///
/// # Errors
/// - [`Error::Shape`] / [`Error::InvalidArgument`] before any training, if the data do not fit
///   the model or the loss (wrong sample shape, a label out of range, a wrong kind or shape of
///   target, inputs whose sample count is not the targets') or the options or the step's
///   settings are invalid (a batch size, validation batch size or epoch count of 0, an empty validation set or
///   one whose targets are all masked, a training set whose targets are all masked, early
///   stopping on validation figures without a validation set or with a `min_delta` that is not
///   a finite number ≥ 0), the model has no parameters, or the optimizer holds state for another
///   model (buffers of other shapes or for parameters this model does not have); and
///   [`Error::InvalidArgument`] after an epoch whose validation loss is not finite (the training
///   loss was: the validation data overflow the model), the weights those of that epoch, or whose
///   checkpoint cannot be written (the message names the epoch and the folder; the weights are
///   those of that epoch, not the best ones early stopping would have restored);
/// - [`Error::NonFinite`] if the loss, a gradient or a weight after the optimizer step becomes
///   NaN or infinite, and
///   [`Error::Training`] if a layer refuses a batch: training stops at once, the model as it was
///   before that batch and the optimizer's learning rate as it was before `fit`; and
///   [`Error::InvalidArgument`] if the augmentation changes a batch's shape or makes a value that
///   is not finite, naming the epoch and the batch.
pub fn fit(
    model: &mut dyn Model,
    train: &Dataset,
    loss: &dyn Loss,
    optimizer: &mut dyn Optimizer,
    mut options: FitOptions<'_>,
) -> Result<History> {
    check_options(train, &options)?;
    optimizer.check()?;
    check_optimizer_fits(model, optimizer, "fit")?;
    check_optimizer_finite(optimizer)?;
    let mut plain = Plain;
    let mut step: &mut dyn Step = match options.step.take() {
        Some(s) => s,
        None => &mut plain,
    };
    step.check(model, train, &options)?; // (first: DP-SGD refuses a stateful layer for its own reason)
    check_batch_order(model, &options, &*step)?;
    let sizes = step.batch_sizes(train.len(), &options);
    check_data(model, train, Some(loss), "training set", &sizes)?;
    check_some_terms(train, loss, "fit: the training set")?;
    for &b in &sizes {
        model.check_training_shapes(&train.named_inputs().batch_shapes(b)).map_err(|e| {
            let last = if b < options.batch_size.min(train.len()) && b == train.len() % options.batch_size {
                format!(
                    " (the last batch of each epoch: {} samples in batches of {}; FitOptions::drop_last(true) skips it)",
                    train.len(),
                    options.batch_size
                )
            } else {
                String::new()
            };
            Error::invalid(format!("training set, batches of {b}{last}: {}", detail(&e)))
        })?;
    }
    if let Some(v) = options.validation {
        let names = |d: &Dataset| {
            let mut names: Vec<String> = d.named_inputs().iter().map(|i| i.name.clone()).collect();
            names.sort();
            names
        };
        // (A layer takes its one input under any name; a model struct reads its inputs by name.)
        if model.as_layer_mut().is_none() && names(v) != names(train) {
            return Err(Error::invalid(format!(
                "fit: the validation set's inputs are {:?}, the training set's {:?}",
                names(v),
                names(train)
            )));
        }
        let check =
            |b: usize| check_data(model, v, Some(loss), "validation set", &batch_sizes(v.len(), b, false));
        let (eval_batch, shapes_known) = match options.validation_batch_size {
            Some(b) => (b, check(b)?.is_some()),
            // Batches of 256 if the model takes them (its activation budget may not, over long
            // sequences), else the training batches' size, which it takes (each set checked once
            // when the first size fits).
            None => {
                let wide = options.batch_size.max(256);
                match check(wide) {
                    Ok(known) => (wide, known.is_some()),
                    Err(_) => (options.batch_size, check(options.batch_size)?.is_some()),
                }
            }
        };
        if !shapes_known {
            // A model that cannot state its outputs' shapes (a model struct) is run on the first
            // validation batch, in predict mode, and put back: a validation set it refuses is
            // found now, not after the first epoch's training.
            let mut before = Snapshot::default();
            before.save(model, false);
            let first: Vec<usize> = (0..eval_batch.min(v.len())).collect();
            let sub = v.subset(&first);
            let tried = forward_batch_caught(
                model,
                sub.named_inputs(),
                crate::layers::Mode::Predict,
                "validation set",
            )
            .and_then(|out| first_output(out, &*model))
            .and_then(|(_, out)| loss.check_target(out.shape(), sub.targets().as_target()));
            before.restore(model);
            tried.map_err(|e| Error::invalid(format!("fit: the validation set: {}", detail(&e))))?;
        }
        options.validation_batch_size = Some(eval_batch);
        check_some_terms(v, loss, "fit: the validation set")?;
    }
    check_schedule(&options, optimizer)?;
    // Last of the checks: a refused run leaves no new folder behind (the folders made here are
    // removed again if the resume or the optimizer is refused below).
    let created = match &options.checkpoints {
        Some(c) => prepare_checkpoints(c)?,
        None => Vec::new(),
    };
    let started = (|| -> Result<Option<Resumed<'_>>> {
        let resumed = match options.resume {
            Some(c) => Some(Resumed {
                best_weights: c.restore(model, optimizer, &mut *step)?,
                progress: c.progress(),
            }),
            None => None,
        };
        check_optimizer_fits(model, optimizer, "fit")?; // (a resumed state included)
        Ok(resumed)
    })();
    let resumed = match started {
        Ok(resumed) => resumed,
        Err(e) => {
            remove_created(&created);
            return Err(e);
        }
    };
    let base_lr = optimizer.learning_rate();
    let result = run(model, train, loss, optimizer, &mut options, &mut step, base_lr, resumed);
    optimizer.set_learning_rate(base_lr);
    if result.is_err() {
        remove_created(&created); // (only folders still empty: a run refused before its first checkpoint)
    }
    result
}

/// A run continued from a checkpoint: where it stood, and early stopping's best weights.
struct Resumed<'c> {
    progress: &'c checkpoint::Progress,
    best_weights: Option<Snapshot>,
}

/// The epochs of [`fit`], once everything has been checked (and a checkpoint restored).
#[allow(clippy::too_many_arguments)]
fn run(
    model: &mut dyn Model,
    train: &Dataset,
    loss: &dyn Loss,
    optimizer: &mut dyn Optimizer,
    options: &mut FitOptions<'_>,
    step: &mut &mut dyn Step,
    base_lr: f32,
    resumed: Option<Resumed<'_>>,
) -> Result<History> {
    let mut shuffle_rng = rng(options.seed);
    let mut augment_rng = rng(options.seed ^ 0xA11CE);
    let mut history = History::default();
    let (mut best, mut best_epoch, mut best_weights, mut waited) = (None::<f32>, 0, None, 0);
    let mut best_checkpoint = None::<f32>;
    let mut first_epoch = 1;
    match resumed {
        None => reseed(model, options.seed),
        Some(Resumed { progress: p, best_weights: weights }) => {
            // The model's generators were restored with it.
            (shuffle_rng, augment_rng) = (p.shuffle.clone(), p.augment.clone());
            history = p.history.clone();
            if options.early_stopping.is_none() {
                history.best_epoch = None; // (the stored run's early stopping, not this run's)
            }
            if let Some(e) = p.early {
                (best, best_epoch, waited) = (e.best, e.best_epoch, e.waited);
            }
            // (Kept only when this run restores them: a checkpoint's best weights otherwise
            // stand for an epoch that later improvements would not replace.)
            best_weights =
                weights.filter(|_| options.early_stopping.as_ref().is_some_and(|es| es.restore_best));
            best_checkpoint = p.best_checkpoint;
            first_epoch = p.epoch + 1;
        }
    }
    let monitor = checkpoint_monitor(options);
    let mut settled = false;
    let mut carries_state = false;
    model.visit(&mut |_, s| carries_state |= matches!(s, crate::layers::State::Carried(_)));
    // A stateful recurrent layer starts each epoch's stream, and each validation pass, from zeros:
    // the same rule whatever the batch sizes (PyTorch's truncated-BPTT examples start every epoch
    // and every evaluation from a fresh hidden state).
    let reset_carried = |model: &mut dyn Model| {
        model.visit_mut(&mut |_, s| {
            if let crate::layers::StateMut::Carried(c) = s {
                *c = None;
            }
        })
    };
    let mut checkpoint_optimizer = OptimizerState::default();
    let mut last_finite_loss = None;
    // Reused from batch to batch.
    let mut x = Inputs::new();
    let mut t = train.targets().select(&[]);
    let mut before_batch = Snapshot::default();
    let mut optimizer_before = OptimizerState::default();

    for epoch in first_epoch..=options.epochs {
        let started = Instant::now();
        let lr = options.schedule.as_ref().map_or(base_lr, |s| s.lr(base_lr, epoch - 1));
        if !(lr.is_finite() && lr >= 0.0) {
            return Err(Error::invalid(format!(
                "fit: the learning-rate schedule gives {lr} at epoch {epoch} (base rate {base_lr}); the model is as after \
                 epoch {}",
                epoch - 1
            )));
        }
        optimizer.set_learning_rate(lr);
        reset_carried(model);
        let epoch_batches = step.batches(train.len(), options, &mut shuffle_rng);
        // A step of the user's choosing picks the samples: one past the set is an error here,
        // before any batch of the epoch changes the model, not a panic in the middle of it.
        if let Some(&i) = epoch_batches.iter().flatten().find(|&&i| i >= train.len()) {
            return Err(Error::invalid(format!(
                "fit: the step ({}) chose sample {i} for epoch {epoch}, of a training set of {}; no batch of that \
                 epoch ran (the weights are as after epoch {})",
                step.describe(),
                train.len(),
                epoch - 1
            )));
        }
        let batches = epoch_batches.len();
        let bar = progress::bar(options.verbose, batches, epoch, options.epochs);
        let (mut loss_sum, mut correct, mut seen, mut terms) = (0.0f64, 0usize, 0usize, 0usize);
        let mut shape_before_augment: Vec<usize> = Vec::with_capacity(8);

        for (b, idx) in epoch_batches.iter().enumerate() {
            train.named_inputs().select_into(idx, &mut x);
            train.targets().select_into(idx, &mut t);
            let batch_terms = loss.terms(idx.len(), t.as_target());
            if batch_terms == 0 && !idx.is_empty() && step.skips_batches_without_terms() {
                // Every target masked: no loss to descend, and a step would still move the
                // weights by momentum or weight decay. Passed over (Step::skips_batches_without_terms)
                // — but a model that carries state from batch to batch still runs its forward
                // pass, so that the next batch's rows continue these (no backward, no step).
                if carries_state {
                    before_batch.save(model, true);
                    let ran = catch_unwind(AssertUnwindSafe(|| {
                        on_pool(|| {
                            forward_batch_caught(model, &x, crate::layers::Mode::Train, "fit").map(|_| ())
                        })
                    }));
                    let e = match ran {
                        Ok(Ok(())) => None,
                        Ok(Err(e)) => Some(locate(e, epoch, b + 1, last_finite_loss)),
                        Err(panic) => {
                            Some(Error::Training { epoch, batch: b + 1, message: panic_message(&*panic) })
                        }
                    };
                    if let Some(e) = e {
                        before_batch.restore(model);
                        return Err(e);
                    }
                }
                if let Some(bar) = &bar {
                    bar.inc(1);
                }
                continue;
            }
            if let Some(aug) = options.augment.as_mut() {
                shape_before_augment.clear(); // (a buffer kept: no allocation per batch)
                shape_before_augment.extend_from_slice(x.first_mut().values.shape());
                let shape = &shape_before_augment;
                aug(&mut x.first_mut().values, &mut augment_rng);
                // What the augmentation made is checked as the data were before training: a
                // changed shape had surfaced as a layer's refusal, a NaN (a standardisation of a
                // constant image) as a diverged step, neither naming the augmentation.
                let made = &x.first_mut().values;
                let problem = if made.shape() != &shape[..] {
                    Some(format!(
                        "changed the batch's shape from {} to {}",
                        shape_str(shape),
                        shape_str(made.shape())
                    ))
                } else {
                    made.data()
                        .iter()
                        .position(|v| !v.is_finite())
                        .map(|i| format!("made value {i} {}", made.data()[i]))
                };
                if let Some(problem) = problem {
                    // (Before the batch's forward pass: the model is as the batch before left it.)
                    return Err(Error::invalid(format!(
                        "fit: the augmentation {problem} (epoch {epoch}, batch {}): it must keep the batch's shape \
                         and its values finite",
                        b + 1
                    )));
                }
            }
            // Everything a batch may change, so that a failing batch can be undone: a forward
            // pass changes buffers, counters and generators, the optimizer step the weights.
            before_batch.save(model, true);
            let outcome = catch_unwind(AssertUnwindSafe(|| {
                on_pool(|| -> Result<StepOutcome> {
                    let outcome = step.gradient(model, &x, &t, loss)?;
                    if let Some((name, value)) = first_non_finite_grad(model) {
                        return Err(non_finite(format!("gradient of {name}"), value));
                    }
                    if let Some((name, value)) = first_non_finite_buffer(model) {
                        return Err(non_finite(format!("running statistic {name}"), value));
                    }
                    Ok(outcome)
                })
            }));
            let StepOutcome { loss: batch_loss, output: out } = match outcome {
                Ok(Ok(v)) => v,
                Ok(Err(e)) => {
                    before_batch.restore(model);
                    return Err(locate(e, epoch, b + 1, last_finite_loss));
                }
                Err(panic) => {
                    before_batch.restore(model);
                    return Err(Error::Training { epoch, batch: b + 1, message: panic_message(&*panic) });
                }
            };
            let clip = options.clip_grad_norm;
            let after_step = on_pool(|| {
                let mut params = named_params_mut(&mut *model);
                if let Some(max) = clip {
                    clip_grad_norm(&mut params, max);
                }
                optimizer.save_state(&mut optimizer_before);
                optimizer.step_params_checked(&mut params)
            });
            if let Some((name, value)) = after_step {
                before_batch.restore(model);
                optimizer.load_state(&optimizer_before)?; // its own state: always accepted
                let e = non_finite(format!("value of {name} after the optimizer step"), value);
                return Err(locate(e, epoch, b + 1, last_finite_loss));
            }

            if !idx.is_empty() {
                last_finite_loss = Some(batch_loss);
            }
            if !settled {
                // Trained from here on: a model built around this one keeps these weights.
                crate::layers::settle_params(model);
                settled = true;
            }
            let batch_correct = match (&t, &out) {
                (Targets::Classes(l), Some(out)) => Some(count_correct(out, l)),
                _ => None,
            };
            // Each batch's mean weighted by its terms (Loss::terms): the epoch's mean over all.
            loss_sum += batch_loss as f64 * batch_terms as f64;
            terms += batch_terms;
            correct += batch_correct.unwrap_or(0);
            seen += idx.len();
            if let Some(bar) = &bar {
                bar.inc(1);
                let acc = batch_correct
                    .map_or(String::new(), |_| format!(", acc {:.2}%", 100.0 * correct as f64 / seen as f64));
                bar.set_message(format!("loss {:.4}{acc}", loss_sum / terms.max(1) as f64));
            }
            if let Some(cb) = options.on_batch_end.as_mut() {
                cb(&BatchStats {
                    epoch,
                    batch: b + 1,
                    batches,
                    loss: batch_loss,
                    correct: batch_correct,
                    size: idx.len(),
                    terms: batch_terms,
                });
            }
        }
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }

        let val = match options.validation {
            Some(v) => {
                reset_carried(model);
                let batch = options.validation_batch_size.unwrap_or(options.batch_size);
                // Named as the validation pass after this epoch (its error had read as a call
                // of `evaluate`, with no epoch).
                // (`evaluate`'s own prefix replaced, not repeated.)
                let named = |m: String| {
                    let m = m.strip_prefix("evaluate: ").unwrap_or(&m);
                    format!("fit: the validation pass after epoch {epoch}: {m}")
                };
                Some(evaluate(model, v, loss, batch).map_err(|e| match e {
                    Error::Shape(m) => Error::Shape(named(m)),
                    Error::InvalidArgument(m) => Error::InvalidArgument(named(m)),
                    other => other,
                })?)
            }
            None => None,
        };
        if let Some(v) = val.filter(|v| !v.loss.is_finite()) {
            // The training losses and the weights were finite (each step checks them): the
            // validation data overflow the model. Early stopping and checkpoints could never
            // compare a NaN, so training stops here, the weights those of this epoch.
            return Err(Error::invalid(format!(
                "fit: the validation loss became {} after epoch {epoch} (the training loss was finite, {}): \
                 the validation data hold values the model cannot take (check their scale)",
                v.loss,
                if terms == 0 { f32::NAN } else { (loss_sum / terms as f64) as f32 }
            )));
        }
        let stats = EpochStats {
            epoch,
            // No term counted (every batch passed over): no figure, not a perfect 0.
            train_loss: if terms == 0 { f32::NAN } else { (loss_sum / terms as f64) as f32 },
            train_accuracy: train.labels().map(|_| correct as f32 / seen.max(1) as f32),
            val_loss: val.map(|v| v.loss),
            val_accuracy: val.and_then(|v| v.accuracy),
            learning_rate: lr,
            seconds: started.elapsed().as_secs_f32(),
        };
        if options.verbose {
            eprintln!("{}", progress::epoch_line(&stats, options.epochs, &options.validation_label));
        }
        if let Some(cb) = options.on_epoch_end.as_mut() {
            cb(&stats);
        }
        history.epochs.push(stats.clone());

        let mut stop = false;
        if let Some(es) =
            options.early_stopping.as_ref().filter(|es| !es.value(&stats).0.is_some_and(f32::is_nan))
        {
            // (An epoch without a figure — a training loss over no terms — is passed over: it
            // neither improves nor uses up patience.)
            let (value, higher_better) = es.value(&stats);
            let value = value.expect("checked before training: the monitored figure exists");
            let improved = match best {
                None => true,
                Some(b) if higher_better => value > b + es.min_delta,
                Some(b) => value < b - es.min_delta,
            };
            if improved {
                (best, best_epoch, waited) = (Some(value), epoch, 0);
                if es.restore_best {
                    best_weights = Some(Snapshot::of(model));
                }
            } else {
                waited += 1;
                if waited >= es.patience {
                    history.stopped_early = epoch < options.epochs;
                    stop = true;
                }
            }
            // (As of this epoch, so that a checkpoint's history says it too.)
            history.best_epoch = Some(best_epoch);
        }
        if let Some(c) = &options.checkpoints {
            let (value, higher_better) = EarlyStopping::new(monitor, 1).value(&stats);
            let value = value.expect("checked before training: the monitored figure exists");
            let improved = match best_checkpoint {
                _ if value.is_nan() => false, // no figure this epoch: not a best
                None => true,
                Some(b) if higher_better => value > b,
                Some(b) => value < b,
            };
            if improved {
                best_checkpoint = Some(value);
            }
            let early = options.early_stopping.as_ref().map(|es| {
                let state = checkpoint::EarlyState {
                    best,
                    best_epoch,
                    waited,
                    has_weights: false,
                    monitor: Some(es.monitor),
                };
                (state, best_weights.as_ref().filter(|_| es.restore_best))
            });
            let capture = checkpoint::Capture {
                model: &*model,
                optimizer: &*optimizer,
                step: &**step,
                seed: options.seed,
                shuffle: &shuffle_rng,
                augment: &augment_rng,
                early,
                best_checkpoint,
                checkpoint_monitor: Some(monitor),
                history: &history,
            };
            let bytes = capture.to_bytes(&mut checkpoint_optimizer)?;
            // `best` before `last`: `last` records the best figure so far, and a resume from it
            // compares against that figure, so `best` must already hold that epoch if `last` does
            // (a run stopped between the two writes resumes from the older `last`).
            // (An I/O error stays one, its kind kept, with the epoch added to its message.)
            let unwritten = |e: Error| match e {
                Error::Io { path, source } => Error::io(
                    path,
                    std::io::Error::new(
                        source.kind(),
                        format!(
                            "fit: the checkpoint after epoch {epoch} could not be written ({source}); the model is as \
                             after that epoch, and the checkpoints hold the epochs before"
                        ),
                    ),
                ),
                other => Error::invalid(format!(
                    "fit: the checkpoint after epoch {epoch} could not be written ({other}); the model is as after \
                     that epoch, and the checkpoints in {} hold the epochs before",
                    c.dir.display()
                )),
            };
            if improved {
                io::write_atomically(&c.best_path(), &bytes).map_err(unwritten)?;
            }
            io::write_atomically(&c.last_path(), &bytes).map_err(unwritten)?;
        }
        if stop {
            break;
        }
    }
    if options.early_stopping.is_some() {
        // (None if no epoch had a figure to compare: every one passed over.)
        history.best_epoch = best.map(|_| best_epoch);
        if let Some(w) = best_weights {
            w.restore_weights(model);
        }
    }
    Ok(history)
}

/// The output the loss trains: the model's first.
pub(crate) fn first_output(mut outputs: Tensors, model: &dyn Model) -> Result<(String, Tensor)> {
    let name = outputs.first().map(|(n, _)| n.to_string());
    name.and_then(|n| outputs.take(&n).map(|t| (n, t)))
        .ok_or_else(|| Error::invalid(format!("{} returned no outputs", model.name())))
}

/// An error unless every buffer the optimizer already keeps (from earlier steps, or a resumed
/// state) has the shape of the model's parameter of that name: an optimizer reused on another
/// model would otherwise stop at its first step with a panic, half of its moments updated.
/// Refuses shuffling, or a step that reorders the samples otherwise ([`Step::reorders_samples`]:
/// [`Bucketed`]), for a model that carries state from one batch into the next (a stateful
/// recurrent layer): row `s` of each batch would continue row `s` of an unrelated one.
fn check_batch_order<V: Visit + ?Sized>(model: &V, options: &FitOptions<'_>, step: &dyn Step) -> Result<()> {
    let mut carried = None;
    model.visit(&mut |name, s| {
        if let crate::layers::State::Carried(_) = s {
            carried.get_or_insert_with(|| name.to_string());
        }
    });
    match carried {
        Some(name) if step.reorders_samples(options) && !options.shuffle => Err(Error::invalid(format!(
            "fit: {name} is carried from one batch into the next (a stateful recurrent layer), so each batch's row s \
             must continue the row s before it; the step ({}) puts the samples in another order: train with the \
             plain step, in order",
            step.describe()
        ))),
        Some(name) if step.reorders_samples(options) => Err(Error::invalid(format!(
            "fit: {name} is carried from one batch into the next (a stateful recurrent layer), so each batch's row s \
             must continue the row s before it; shuffling would join unrelated sequences: FitOptions::shuffle(false) \
             with the plain step (and a batch size that divides the data, or drop_last(true): a smaller last batch \
             starts afresh)"
        ))),
        _ => Ok(()),
    }
}

/// Refuses an optimizer whose buffers already hold a NaN or an infinity (a step taken outside
/// `fit` overflowed Adam's second moment, say): every step would be refused, and the copy of its
/// state that `fit` keeps to undo a step could not be put back.
fn check_optimizer_finite(optimizer: &dyn Optimizer) -> Result<()> {
    let mut state = OptimizerState::default();
    optimizer.save_state(&mut state);
    for (kind, param, buffer) in state.iter() {
        if let Some((i, v)) = buffer.data().iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(Error::invalid(format!(
                "fit: the optimizer's {kind:?} buffer for {param:?} holds {v} at element {i}: a step taken before \
                 diverged; start from a new optimizer (or load a sound state into it)"
            )));
        }
    }
    Ok(())
}

pub(crate) fn check_optimizer_fits<V: Visit + ?Sized>(
    model: &V,
    optimizer: &dyn Optimizer,
    what: &str,
) -> Result<()> {
    crate::layers::check_unique_names(model, what)?; // the optimizer keeps its moments by name
    let params = named_params(model);
    if params.is_empty() {
        // (As PyTorch's optimizers refuse an empty parameter list: every epoch would report the
        // same loss, and nothing would have learned.)
        return Err(Error::invalid(format!("{what}: the model has no parameters to train")));
    }
    let mut misfit = None;
    optimizer.visit_buffer_shapes(&mut |kind, name, shape| {
        if misfit.is_some() {
            return;
        }
        match params.iter().find(|(n, _)| n == name) {
            Some((_, p)) if p.value.shape() != shape => {
                misfit = Some(format!(
                    "{what}: the optimizer's {kind:?} buffer for parameter {name:?} has shape {}, but the parameter \
                     has shape {}: the optimizer has stepped another model (use one optimizer per model)",
                    crate::tensor::shape_str(shape),
                    crate::tensor::shape_str(p.value.shape())
                ));
            }
            Some(_) => {}
            None => {
                misfit = Some(format!(
                    "{what}: the optimizer holds a {kind:?} buffer for {name:?}, a parameter this model does not \
                     have: it has stepped another model or loaded another model's state (use one optimizer per \
                     model)"
                ));
            }
        }
    });
    misfit.map_or(Ok(()), |m| Err(Error::invalid(m)))
}

/// A [`Error::NonFinite`] whose epoch and batch [`locate`] fills in.
pub(crate) fn non_finite(what: String, value: f32) -> Error {
    Error::NonFinite { what, epoch: 0, batch: 0, value, last_finite_loss: None }
}

/// Says where a [`Error::NonFinite`] happened.
fn locate(e: Error, epoch: usize, batch: usize, last_finite_loss: Option<f32>) -> Error {
    match e {
        Error::NonFinite { what, value, .. } => {
            Error::NonFinite { what, epoch, batch, value, last_finite_loss }
        }
        other => other,
    }
}

/// `model.forward_batch(x, mode)`, with a panic inside it turned into an error naming `what` and
/// the model: a model struct that does not give its output shapes ([`Model::output_shapes`])
/// cannot be checked before its forward pass, and one of its layers may refuse the batch (a
/// `Dense` of another width). The process's panic hook still prints the panic (see
/// `docs/reliability.md`, "Known limits").
pub(crate) fn forward_batch_caught<M: Model + ?Sized>(
    model: &mut M,
    x: &Inputs,
    mode: crate::layers::Mode,
    what: &str,
) -> Result<Tensors> {
    match catch_unwind(AssertUnwindSafe(|| model.forward_batch(x, mode))) {
        Ok(outputs) => outputs,
        Err(panic) => Err(Error::invalid(format!(
            "{what}: {} refused the batch: {}",
            model.name(),
            panic_message(&*panic)
        ))),
    }
}

/// The text of a caught panic.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a layer panicked".to_string())
}

/// The first parameter whose gradient holds a NaN or infinity: its name and that value.
/// The first buffer (batch norm's running statistics) holding a NaN or an infinity: its name and
/// the value. A batch of values spread past f32 (a variance over 3.4·10³⁸) would leave an
/// infinite running variance behind, and every later prediction the bias alone.
pub(crate) fn first_non_finite_buffer<V: Visit + ?Sized>(model: &V) -> Option<(String, f32)> {
    let mut found = None;
    model.visit(&mut |name, s| {
        if let (None, crate::layers::State::Buffer(t)) = (&found, s) {
            found = first_non_finite(t.data()).map(|i| (name.to_string(), t.data()[i]));
        }
    });
    found
}

pub(crate) fn first_non_finite_grad<V: Visit + ?Sized>(model: &V) -> Option<(String, f32)> {
    named_params(model)
        .into_iter()
        .find_map(|(name, p)| first_non_finite(p.grad.data()).map(|i| (name, p.grad.data()[i])))
}
