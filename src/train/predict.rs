//! Evaluation, prediction, saliency and single training steps, for any [`Layer`] model.

use super::callbacks::Evaluation;
use super::{check_data, count_correct, first_output};
use crate::data::{Dataset, Targets};
use crate::error::{Error, Result};
use crate::layers::{InputGrad, Layer, Mode, Pass, Snapshot, backward_input, zero_grad};
use crate::loss::{Loss, Target};
use crate::model::{Inputs, Model, Tensors};
use crate::optim::Optimizer;
use crate::tensor::math::{feature_split, softmax_into};
use crate::tensor::{Tensor, shape_str};

/// The model's output shape for `x`, or an error naming `what` and both shapes; and `x`'s values
/// checked ([`Layer::check_values`]: an embedding's ids).
fn output_shape_for(model: &dyn Layer, x: &Tensor, what: &str) -> Result<Vec<usize>> {
    let shape = output_shape_of(model, x.shape(), what)?;
    check_input_values(model, x, what)?;
    Ok(shape)
}

/// The model's output shape for an input of shape `input`, or an error naming `what`.
fn output_shape_of(model: &dyn Layer, input: &[usize], what: &str) -> Result<Vec<usize>> {
    if input.is_empty() {
        return Err(Error::shape(format!("{what}: the input needs a batch axis, got shape []")));
    }
    model.output_shape(input).map_err(|e| match e {
        Error::Shape(m) => Error::shape(format!("{what}: {m}")),
        other => other,
    })
}

/// `x`'s values checked: those the model refuses ([`Layer::check_values`]: an embedding's ids),
/// and any that are not finite.
fn check_input_values(model: &dyn Layer, x: &Tensor, what: &str) -> Result<()> {
    model.check_values(x).map_err(|e| Error::invalid(format!("{what}: {}", super::detail(&e))))?;
    crate::data::check_finite(x, &format!("{what}: the input"), false)
}

/// The output shape of [`predict_batches`] for all of `x`, checked as the model will run it: on
/// batches of at most `batch_size` samples (a layer's memory budget is per batch: an LSTM over
/// 200,000 sequences fits one batch of 64 at a time, not all of them at once).
fn batched_output_shape(model: &dyn Layer, x: &Tensor, batch_size: usize, what: &str) -> Result<Vec<usize>> {
    let n = x.shape().first().copied().unwrap_or(0);
    let mut batch = x.shape().to_vec();
    if let Some(first) = batch.first_mut() {
        *first = batch_size.min(n);
    }
    let mut shape = output_shape_of(model, &batch, what)?;
    check_input_values(model, x, what)?;
    if shape.first() != batch.first() {
        return output_shape_of(model, x.shape(), what); // (an output without the batch axis first)
    }
    shape[0] = n;
    if crate::tensor::checked_numel(&shape).is_none_or(|len| len > crate::tensor::MAX_ELEMENTS) {
        return Err(Error::shape(format!(
            "{what}: the outputs for all {n} samples, {}, are more values than memory can address",
            shape_str(&shape)
        )));
    }
    Ok(shape)
}

/// Mean loss (and accuracy, for class labels) over a data set, in eval mode, `batch_size`
/// samples at a time. The loss is the mean over every term the loss counts
/// ([`Loss::terms`](crate::loss::Loss::terms): samples, or the positions that are not padding),
/// so the batch size does not change it.
///
/// # Errors
/// If the data do not fit the model or the loss, `batch_size` is 0, or the data set is empty or
/// every one of its targets is masked (NaN padding the loss ignores): a loss of 0 over no terms
/// would read as a perfect model.
pub fn evaluate(
    model: &mut dyn Model,
    data: &Dataset,
    loss: &dyn Loss,
    batch_size: usize,
) -> Result<Evaluation> {
    if batch_size == 0 {
        return Err(Error::invalid("evaluate: batch size must be at least 1"));
    }
    if data.is_empty() {
        return Err(Error::invalid(
            "evaluate: the data set is empty: its loss and accuracy would mean nothing",
        ));
    }
    check_data(model, data, Some(loss), "evaluate", &[batch_size.min(data.len())])?;
    super::check_some_terms(data, loss, "evaluate: the data set")?;
    // The batches on one of the pool's threads: their parallel loops start without waking this one.
    let (loss_sum, terms, correct) = super::on_pool(|| -> Result<(f64, usize, usize)> {
        let (mut loss_sum, mut terms, mut correct) = (0.0f64, 0usize, 0usize);
        let order: Vec<usize> = (0..data.len()).collect();
        let mut x = Inputs::new();
        let mut t = data.targets().select(&[]);
        for idx in order.chunks(batch_size) {
            data.named_inputs().select_into(idx, &mut x);
            data.targets().select_into(idx, &mut t);
            let (_, out) =
                first_output(super::forward_batch_caught(model, &x, Mode::Predict, "evaluate")?, &*model)?;
            // Each batch's mean weighted by its terms (Loss::terms): the mean over all of them.
            let batch_terms = loss.terms(idx.len(), t.as_target());
            loss_sum += loss.loss(&out, t.as_target())? as f64 * batch_terms as f64;
            terms += batch_terms;
            if let Targets::Classes(l) = &t {
                correct += count_correct(&out, l);
            }
        }
        Ok((loss_sum, terms, correct))
    })?;
    let total = data.len();
    let is_class = data.labels().is_some();
    Ok(Evaluation {
        loss: if terms == 0 { 0.0 } else { (loss_sum / terms as f64) as f32 },
        accuracy: is_class.then(|| if total == 0 { 0.0 } else { correct as f32 / total as f32 }),
        correct: is_class.then_some(correct),
        total,
    })
}

/// The network's raw outputs (logits, for a classifier) for `x`, in eval mode, `batch_size`
/// samples at a time. Within each batch every layer runs over the samples in parallel.
///
/// # Errors
/// If `x` does not fit the model (its shape checked as one batch of `batch_size` samples runs:
/// a layer's activation budget holds per batch), or `batch_size` is 0; if a layer cannot run a batch (a panic
/// in the forward pass, such as an activation no memory holds, is caught and returned as an
/// error naming the model).
pub fn predict(model: &mut dyn Layer, x: &Tensor, batch_size: usize) -> Result<Tensor> {
    predict_batches(model, x, None, batch_size, "predict")
}

/// [`predict`] for sequences `x [N, T, …]` padded to `T` steps, with each one's number of valid
/// steps: every batch's forward pass carries its samples' lengths ([`Pass::lengths`]).
///
/// # Errors
/// As [`predict`], and as [`check_lengths`](crate::data::check_lengths) for lengths that do not
/// fit `x` (the message names both counts).
pub fn predict_with_lengths(
    model: &mut dyn Layer,
    x: &Tensor,
    lengths: &[usize],
    batch_size: usize,
) -> Result<Tensor> {
    crate::data::check_lengths(x.shape(), lengths).map_err(|e| prefixed("predict_with_lengths", e))?;
    predict_batches(model, x, Some(lengths), batch_size, "predict_with_lengths")
}

fn predict_batches(
    model: &mut dyn Layer,
    x: &Tensor,
    lengths: Option<&[usize]>,
    batch_size: usize,
    what: &str,
) -> Result<Tensor> {
    if batch_size == 0 {
        return Err(Error::invalid(format!("{what}: batch size must be at least 1")));
    }
    let out_shape = batched_output_shape(model, x, batch_size, what)?;
    let n = x.dim(0);
    // (A layer that cannot run a batch — an activation no memory holds — panics: caught, an Err.)
    let run = || {
        let mut out = Tensor::zeros(&out_shape);
        let per_sample = out.len() / n.max(1);
        let mut xb = Tensor::default();
        let order: Vec<usize> = (0..n).collect();
        for idx in order.chunks(batch_size) {
            x.select_outer_into(idx, &mut xb);
            let pass = Pass::PREDICT.with_optional_lengths(lengths.map(|l| &l[idx[0]..][..idx.len()]));
            let y = model.forward(&xb, pass);
            // (Caught below as an Err: a layer whose forward disagrees with its output_shape
            // had shifted every later sample's row, and returned Ok.)
            assert!(
                y.ndim() == out_shape.len() && y.dim(0) == idx.len() && y.shape()[1..] == out_shape[1..],
                "{what}: the model gave {} for a batch of {}, where its output_shape said {}",
                shape_str(y.shape()),
                idx.len(),
                shape_str(&out_shape)
            );
            out.data_mut()[idx[0] * per_sample..][..y.len()].copy_from_slice(y.data());
        }
        out
    };
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| super::on_pool(run)))
        .map_err(|panic| refused(what, &*model, &*panic))
}

/// The outputs of any [`Model`] for named inputs (with their lengths), in eval mode,
/// `batch_size` samples at a time: every output, stacked over the batches.
///
/// Inputs of no samples give every output with no samples (`[0, …]`), of the shapes the model
/// states ([`Model::output_shapes`]); a model that cannot state them runs on the empty batch.
///
/// # Errors
/// If the inputs do not fit together ([`Inputs::check`]) or the model refuses them, or
/// `batch_size` is 0.
pub fn predict_inputs<M: Model + ?Sized>(
    model: &mut M,
    inputs: &Inputs,
    batch_size: usize,
) -> Result<Tensors> {
    if batch_size == 0 {
        return Err(Error::invalid("predict_inputs: batch size must be at least 1"));
    }
    inputs.check()?;
    model.check_inputs(inputs)?;
    for input in inputs.iter() {
        crate::data::check_finite(&input.values, &format!("predict_inputs: input {:?}", input.name), false)?;
    }
    let n = inputs.len();
    if n == 0 {
        // No batch to split: the outputs' shapes from the model, with no samples, or (a model
        // that cannot state them) the model run on the empty batch and put back (a stateful
        // layer would otherwise start its stream again), its outputs checked to hold no samples.
        let Some(shapes) = model.output_shapes(&inputs.batch_shapes(0)) else {
            let mut before = Snapshot::default();
            before.save(&*model, false);
            let out = super::on_pool(|| {
                super::forward_batch_caught(model, inputs, Mode::Predict, "predict_inputs")
            });
            before.restore(model);
            let out = out?;
            if let Some((name, y)) = out.iter().find(|(_, y)| y.shape().first() != Some(&0)) {
                return Err(Error::shape(format!(
                    "predict_inputs: {} gave output {name:?} of shape {} for no samples",
                    model.name(),
                    shape_str(y.shape())
                )));
            }
            return Ok(out);
        };
        let mut out = Tensors::new();
        for (name, shape) in shapes? {
            out.insert(&name, Tensor::from_vec(&shape, Vec::new())?);
        }
        return Ok(out);
    }
    // The batches on one of the pool's threads: their parallel loops start without waking this one.
    let stacked = super::on_pool(|| -> Result<Vec<Stacked>> {
        let mut stacked: Vec<Stacked> = Vec::new();
        let mut xb = Inputs::new();
        let order: Vec<usize> = (0..n).collect();
        for idx in order.chunks(batch_size) {
            inputs.select_into(idx, &mut xb);
            let outputs = super::forward_batch_caught(model, &xb, Mode::Predict, "predict_inputs")?;
            if stacked.is_empty() {
                // Room for every sample's outputs, reserved now or refused with the size (a
                // buffer doubled batch after batch would abort the process when memory ran out).
                for (name, y) in outputs.iter() {
                    let mut shape = y.shape().to_vec();
                    if let Some(first) = shape.first_mut() {
                        *first = n;
                    }
                    let total = crate::tensor::checked_numel(&shape).ok_or_else(|| {
                        Error::shape(format!(
                            "predict_inputs: output {name:?} for all {n} samples, {}, is more values than memory can \
                             address",
                            shape_str(&shape)
                        ))
                    })?;
                    let mut data = Vec::new();
                    data.try_reserve_exact(total).map_err(|e| {
                        Error::invalid(format!(
                            "predict_inputs: cannot allocate output {name:?} for all {n} samples, {} ({e}): predict \
                             fewer samples at a time",
                            shape_str(&shape)
                        ))
                    })?;
                    stacked.push((name.to_string(), y.shape().to_vec(), data));
                }
            }
            if outputs.len() != stacked.len() {
                let names: Vec<&str> = outputs.iter().map(|(n, _)| n).collect();
                let first: Vec<&str> = stacked.iter().map(|(n, ..)| n.as_str()).collect();
                return Err(Error::invalid(format!(
                    "predict_inputs: {} gave outputs {names:?} for a batch of {}, after {first:?}",
                    model.name(),
                    idx.len()
                )));
            }
            for (name, shape, data) in stacked.iter_mut() {
                let y = outputs.get(name).map_err(|_| {
                    Error::invalid(format!(
                        "predict_inputs: {} gave no output {name:?} for a batch of {}, after giving it for the first",
                        model.name(),
                        idx.len()
                    ))
                })?;
                if y.shape().get(1..) != shape.get(1..) || y.shape().first() != Some(&idx.len()) {
                    return Err(Error::shape(format!(
                        "predict_inputs: {} gave output {name:?} of shape {} for a batch of {}, after {}",
                        model.name(),
                        shape_str(y.shape()),
                        idx.len(),
                        shape_str(shape)
                    )));
                }
                data.extend_from_slice(y.data());
            }
        }
        Ok(stacked)
    })?;
    let mut out = Tensors::new();
    for (name, mut shape, data) in stacked {
        if let Some(first) = shape.first_mut() {
            *first = n;
        }
        out.insert(&name, Tensor::from_vec(&shape, data)?);
    }
    Ok(out)
}

/// One output of [`predict_inputs`] as its batches arrive: name, shape of the first batch, values.
type Stacked = (String, Vec<usize>, Vec<f32>);

/// `[N, classes]` outputs of `model`, or an error naming `what`.
fn class_scores(model: &mut dyn Layer, x: &Tensor, batch_size: usize, what: &str) -> Result<Tensor> {
    let logits = predict_batches(model, x, None, batch_size, what)?;
    if logits.ndim() != 2 {
        return Err(Error::shape(format!(
            "{what} needs outputs of shape [N, classes], the model gives {}",
            shape_str(logits.shape())
        )));
    }
    // A class picked from NaN scores would be a guess presented as a prediction.
    if let Some(i) = crate::tensor::first_non_finite(logits.data()) {
        let classes = logits.dim(1).max(1);
        return Err(Error::invalid(format!(
            "{what}: the model's output for sample {} is {} (class {}): its weights or the input are not sound, so \
             there is no class to give",
            i / classes,
            logits.data()[i],
            i % classes
        )));
    }
    Ok(logits)
}

/// Class probabilities (softmax of the outputs), `[N, classes]`.
///
/// # Errors
/// As [`predict`], [`Error::Shape`] if the model's output is not `[N, classes]`, and
/// [`Error::InvalidArgument`] naming the sample if an output is NaN or infinite.
pub fn predict_proba(model: &mut dyn Layer, x: &Tensor, batch_size: usize) -> Result<Tensor> {
    let logits = class_scores(model, x, batch_size, "predict_proba")?;
    let mut p = Tensor::zeros(logits.shape());
    softmax_into(logits.data(), feature_split(logits.shape()), p.data_mut());
    Ok(p)
}

/// The predicted class of each sample (argmax of the outputs).
///
/// # Errors
/// As [`predict_proba`].
pub fn predict_classes(model: &mut dyn Layer, x: &Tensor, batch_size: usize) -> Result<Vec<usize>> {
    Ok(class_scores(model, x, batch_size, "predict_classes")?.argmax_axis(1))
}

/// The gradient of each sample's score for one class with respect to its input,
/// `d output[n, class_n] / d x[n]`, through the same explicit backward pass as training (eval
/// mode). Its magnitude is a *saliency map*: the pixels whose change would move the decision
/// most. Parameter gradients are zeroed afterwards.
///
/// # Errors
/// [`Error::Shape`] if `x` does not fit the model or the model's output is not `[N, classes]`;
/// [`Error::InvalidArgument`] if a class is out of range or the number of classes given differs
/// from the number of samples.
///
/// ```
/// use backprop::prelude::*;
/// # fn main() -> backprop::Result<()> {
/// // For a linear model y = x·Wᵀ, d y[c] / d x = W[c, :].
/// let w = Tensor::from_vec(&[2, 3], vec![1., 2., 3., 4., 5., 6.])?;
/// let mut model = Sequential::builder(&[3]).add(Dense::new(3, 2).no_bias().with_weights(w, None)).build()?;
/// let g = backprop::train::input_gradient(&mut model, &Tensor::zeros(&[1, 3]), &[1])?;
/// assert_eq!(g.data(), &[4., 5., 6.]);
/// # Ok(()) }
/// ```
pub fn input_gradient(model: &mut dyn Layer, x: &Tensor, classes: &[usize]) -> Result<Tensor> {
    let out_shape = output_shape_for(model, x, "input_gradient")?;
    let &[n, k] = out_shape.as_slice() else {
        return Err(Error::shape(format!(
            "input_gradient needs outputs of shape [N, classes], the model gives {}",
            shape_str(&out_shape)
        )));
    };
    if classes.len() != n {
        return Err(Error::invalid(format!("input_gradient: {} classes for {n} samples", classes.len())));
    }
    if let Some(&c) = classes.iter().find(|&&c| c >= k) {
        return Err(Error::invalid(format!("input_gradient: class {c} out of range for {k} outputs")));
    }
    // A layer that refuses the batch (an id past an embedding behind a layer that hides it from
    // `check_values`) panics: an error of this call, the gradients zeroed.
    let run = |model: &mut dyn Layer| {
        let out = model.forward(x, Pass::EVAL);
        let mut seed = Tensor::zeros(out.shape());
        for (row, &c) in seed.data_mut().chunks_exact_mut(k).zip(classes) {
            row[c] = 1.0; // d score_c / d output = one-hot(c)
        }
        backward_input(model, &seed)
    };
    let dx = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| super::on_pool(|| run(&mut *model))));
    zero_grad(model);
    dx.map_err(|panic| refused("input_gradient", &*model, &*panic))
}

/// The loss on one batch and its gradient with respect to every parameter (left in the
/// parameters' `grad`, zeroed first), without an optimizer step: one explicit training step's
/// first half.
///
/// A loss or gradients that are not finite are returned and left as they are, for looking at;
/// [`train_step`] refuses to step on them.
///
/// # Errors
/// If `x` does not fit the model, the pass's lengths do not fit `x` (as
/// [`check_lengths`](crate::data::check_lengths)), the loss rejects the targets, or a layer
/// cannot run the batch (a panic in the passes, caught): the model is then as it was (dropout's
/// generators, batch norm's running statistics and a carried state put back).
pub fn loss_and_backward<'p>(
    model: &mut dyn Layer,
    x: &Tensor,
    target: Target<'_>,
    loss: &dyn Loss,
    pass: impl Into<Pass<'p>>,
) -> Result<f32> {
    let out_shape = output_shape_for(model, x, "loss_and_backward")?;
    // The target is checked against the output's shape before the forward pass, which would
    // already change batch norm's running statistics.
    loss.check_target(&out_shape, target)?;
    let pass = pass.into();
    if let Some(lengths) = pass.lengths {
        crate::data::check_lengths(x.shape(), lengths).map_err(|e| prefixed("loss_and_backward", e))?;
    }
    if pass.mode == Mode::Train {
        // A layer that cannot train on this shape (batch norm on one sample) is asked before the
        // pass, not found out halfway through it, after dropout's generator has drawn.
        model.check_training_shape(x.shape()).map_err(|e| prefixed("loss_and_backward", e))?;
    }
    // A layer that cannot run the batch (an activation no memory holds) panics; that is an error
    // of this call, not the end of the caller's program.
    let run = |model: &mut dyn Layer| -> Result<f32> {
        let out = model.forward(x, pass);
        let (l, g) = loss.loss_and_grad(&out, target)?;
        zero_grad(model);
        model.backward(&g, InputGrad::NotNeeded);
        Ok(l)
    };
    // What a pass changes besides the gradients, to put back if it is cut short.
    let mut before = Snapshot::default();
    before.save(model, false);
    let e = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        super::on_pool(|| run(&mut *model))
    })) {
        Ok(Ok(l)) => return Ok(l),
        Ok(Err(e)) => e,
        Err(panic) => refused("loss_and_backward", &*model, &*panic),
    };
    before.restore(model);
    zero_grad(model);
    Err(e)
}

/// `e` with `what: ` before its message, of the same kind.
fn prefixed(what: &str, e: Error) -> Error {
    match e {
        Error::Shape(m) => Error::shape(format!("{what}: {m}")),
        Error::InvalidArgument(m) => Error::invalid(format!("{what}: {m}")),
        other => other,
    }
}

/// The error for a panic caught inside `model`'s passes, naming `what` and the model.
fn refused(what: &str, model: &dyn Layer, panic: &(dyn std::any::Any + Send)) -> Error {
    Error::invalid(format!("{what}: {} refused the batch: {}", model.describe(), super::panic_message(panic)))
}

/// One training step on one batch: forward (train mode), loss, zero the gradients, backward,
/// optimizer step. Returns the loss. ([`fit`](super::fit) does the same over a data set, with
/// shuffling, metrics, checkpoints and so on.)
///
/// A step that would spread a NaN or an infinity is not taken: when the loss or a gradient is
/// not finite, the optimizer is not stepped, the gradients are zeroed and the buffers, counters
/// and random generators that the forward pass changed (batch norm's running statistics,
/// dropout's generator) are put back, so the model is exactly as it was before the call.
///
/// # Errors
/// - `x` does not fit the model, holds a NaN or an infinity, or is an empty batch (no samples:
///   no loss to descend, where a step would still move the weights by the optimizer's momentum
///   or weight decay) or one whose targets are all masked (NaN padding the loss ignores: no loss
///   either, where PyTorch would step with a NaN loss), or the loss rejects the target; the model has no parameters; the
///   optimizer holds state for another model (its moments' shapes differ from the parameters',
///   or name parameters this model does not have); a layer cannot run the batch (a panic in the
///   model's passes, such as an activation no memory holds, caught and returned): nothing was
///   changed;
/// - the loss or a gradient is not finite (the message names which): nothing was changed;
/// - the optimizer step itself made a parameter non-finite (a step too large for `f32`): the
///   message names the parameter, and the model keeps that step — unlike [`fit`](super::fit),
///   which keeps a copy of the weights and the optimizer's state from before each batch, a single
///   step keeps none. Reload the weights, or train with `fit`.
///
/// ```
/// use backprop::prelude::*;
/// # fn main() -> backprop::Result<()> {
/// let mut model = Sequential::builder(&[2]).add(Dense::new(2, 1).seed(1)).build()?;
/// let x = Tensor::from_vec(&[1, 2], vec![1e30, 1e30])?;
/// let before = model.state_dict();
/// // (1e30·w)² overflows f32: the loss is infinite and the step is refused.
/// let err = model.train_step(&x, Target::Values(&Tensor::zeros(&[1, 1])), &MseLoss::new(), &mut Sgd::new(0.1));
/// assert!(err.unwrap_err().to_string().contains("the loss is inf"));
/// assert_eq!(model.state_dict(), before);
/// # Ok(()) }
/// ```
pub fn train_step(
    model: &mut dyn Layer,
    x: &Tensor,
    target: Target<'_>,
    loss: &dyn Loss,
    optimizer: &mut dyn Optimizer,
) -> Result<f32> {
    if x.shape().first() == Some(&0) {
        return Err(Error::shape(format!(
            "train_step: the batch {:?} holds no samples, so there is no loss to step on (the optimizer's momentum or \
             weight decay alone would still move the weights); the model and the optimizer are unchanged",
            x.shape()
        )));
    }
    // (A 0-d input has no batch axis: the model's shape check below names it.)
    if let Some(&n) = x.shape().first()
        && loss.ignores_nan_targets()
        && loss.terms(n, target) == 0
    {
        return Err(Error::invalid(format!(
            "train_step: every target of the batch ({n} samples) is masked (NaN), so {} counts no term and there is \
             no loss to step on (the optimizer's momentum or weight decay alone would still move the weights); the \
             model and the optimizer are unchanged",
            loss.name()
        )));
    }
    // Settings the optimizer cannot step with (Nesterov without momentum, AdamW's lr·λ ≥ 1) are
    // refused before the forward pass changes anything, as `fit` refuses them.
    optimizer.check().map_err(|e| prefixed("train_step", e))?;
    super::check_optimizer_fits(model, optimizer, "train_step")?;
    // The whole step on one of the pool's threads: its parallel loops start without waking this one.
    let stepped = super::on_pool(|| step_on_pool(model, x, target, loss, optimizer));
    if stepped.is_ok() {
        crate::layers::settle_params(model); // trained: a model built around this one keeps them
    }
    stepped
}

/// [`train_step`] after its checks, on a thread of the pool.
fn step_on_pool(
    model: &mut dyn Layer,
    x: &Tensor,
    target: Target<'_>,
    loss: &dyn Loss,
    optimizer: &mut dyn Optimizer,
) -> Result<f32> {
    // What a forward pass changes besides the gradients (no parameter values: nothing before
    // the optimizer step changes them). Empty, and so free, for a model without such state.
    let mut before = Snapshot::default();
    before.save(model, false);
    let l = match loss_and_backward(model, x, target, loss, Mode::Train) {
        Ok(l) => l,
        Err(e) => {
            // (A pass cut short by a panic may have changed running statistics: put them back.)
            before.restore(model);
            zero_grad(model);
            return Err(e);
        }
    };
    let not_finite = if l.is_finite() {
        super::first_non_finite_grad(model)
            .map(|(name, value)| (format!("gradient of {name}"), value))
            .or_else(|| {
                super::first_non_finite_buffer(model).map(|(n, v)| (format!("running statistic {n}"), v))
            })
    } else {
        Some(("loss".to_string(), l))
    };
    if let Some((what, value)) = not_finite {
        before.restore(model);
        zero_grad(model);
        return Err(Error::invalid(format!(
            "train_step: the {what} is {value:?}, so the optimizer step was not taken and the model is as it was \
             before the call; if the input and target are sound, the training has diverged: try a smaller learning \
             rate or clipping the gradients"
        )));
    }
    // (Through `step_params_checked`, which notes a value that is not finite as the update writes
    // it, instead of `step` and a scan of every weight after it.)
    if let Some((name, value)) = optimizer.step_params_checked(&mut crate::layers::named_params_mut(model)) {
        return Err(Error::invalid(format!(
            "train_step: the optimizer step made {name} hold {value:?} (the loss was {l:?}): the step was too large \
             for f32, and the model keeps it; reload the weights, or train with fit, which restores the weights from \
             before such a step"
        )));
    }
    Ok(l)
}
