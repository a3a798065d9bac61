//! Loss functions: a number that says how wrong the network is, and its gradient.
//!
//! Each loss maps the network's output `z` and the target to a scalar `L`, and gives `dL/dz`,
//! the gradient that starts the backward pass. All of them average over the batch (PyTorch's
//! `reduction="mean"`), so the gradient's size does not grow with the batch size (the best
//! learning rate may still depend on it: a larger batch gives a less noisy gradient).
//!
//! | loss | `L` | `dL/dz` |
//! |---|---|---|
//! | [`MseLoss`] | `(1/K) Σ (z − t)²` over all K elements | `2(z − t)/K` |
//! | [`CrossEntropyLoss`] | `−(1/N) Σₙ Σ_c q[n,c]·log softmax(z[n])_c` | `(softmax(z) − q)/N` |
//! | [`BceWithLogitsLoss`] | `(1/K) Σ −t·log σ(z) − (1 − t)·log(1 − σ(z))` | `(σ(z) − t)/K` |
//! | [`NllLoss`] | `−(1/N) Σₙ z[n, tₙ]` on log-probabilities `z` | `−1/N` at `[n, tₙ]`, 0 elsewhere |
//!
//! In cross-entropy, `q` is the one-hot vector of the label (or, with label smoothing `ε`,
//! `(1 − ε)·one-hot + ε/C`). The gradient `softmax − q` is the reason softmax and cross-entropy are
//! fused: separately, each has an awkward Jacobian; together they reduce to a difference.
//! `log softmax(z)_c = z_c − m − log Σ_j e^(z_j − m)` with `m = max_j z_j` keeps every exponent ≤ 0,
//! so logits of ±1000 give a finite loss.

use crate::error::{Error, Result};
use crate::tensor::math::{
    EXP_SMALLEST_NORMAL_ARG, MulAdd, exp_with, feature_split, sigmoid, softmax_into, sum_f64,
};
use crate::tensor::parallel::{rows_per_task, split_if_threads};
use crate::tensor::{Tensor, shape_str};
use rayon::prelude::*;

/// What a loss compares the network's output with: defined beside the data it comes from
/// ([`data::Target`](crate::data::Target)), re-exported here where losses use it.
pub use crate::data::Target;

/// A loss function: the scalar to minimise and its gradient with respect to the prediction.
pub trait Loss: Send + Sync {
    /// The loss's name, for messages: `"CrossEntropyLoss"`.
    fn name(&self) -> &'static str;

    /// The loss `L` and `dL/dpred` (same shape as `pred`).
    ///
    /// # Errors
    /// [`Error::Shape`] when `pred` and the target do not fit together, and
    /// [`Error::InvalidArgument`] for a class label out of range or the wrong kind of target.
    fn loss_and_grad(&self, pred: &Tensor, target: Target<'_>) -> Result<(f32, Tensor)>;

    /// The loss alone.
    ///
    /// # Errors
    /// As [`Loss::loss_and_grad`].
    fn loss(&self, pred: &Tensor, target: Target<'_>) -> Result<f32> {
        self.loss_and_grad(pred, target).map(|(l, _)| l)
    }

    /// Checks, without computing anything, that a prediction of shape `pred_shape` and this
    /// target fit together: training calls it before the forward pass, which would already
    /// change batch norm's statistics. The default computes the loss on a zero prediction;
    /// the crate's losses check shapes and labels directly.
    ///
    /// # Errors
    /// As [`Loss::loss_and_grad`].
    fn check_target(&self, pred_shape: &[usize], target: Target<'_>) -> Result<()> {
        self.loss(&Tensor::zeros(pred_shape), target).map(|_| ())
    }

    /// How many terms the loss's mean is over for this target, for a batch of `samples`: what
    /// [`fit`](crate::train::fit) and [`evaluate`](crate::train::evaluate) weight each batch's
    /// loss by, so that a data set's loss is the mean over every term that counts whatever the
    /// batch size (a batch of one padded step had weighed as much as one of a hundred). The
    /// default, `samples`, suits a loss whose every sample counts the same number of terms; a
    /// loss that skips positions (NaN targets, [`Loss::ignores_nan_targets`]) counts those that
    /// remain.
    fn terms(&self, samples: usize, target: Target<'_>) -> usize {
        let _ = target;
        samples
    }

    /// Whether a NaN in a tensor target means "ignore this position" (padding) to this loss.
    /// [`fit`](crate::train::fit) and [`evaluate`](crate::train::evaluate) refuse a data set with a
    /// NaN target for a loss that says no (the default), and infinite targets always.
    fn ignores_nan_targets(&self) -> bool {
        false
    }
}

/// The rows a classification loss averages over: every label, or every class id but the NaN
/// ones (padding).
fn counted_rows(target: Target<'_>) -> usize {
    match target {
        Target::Classes(labels) => labels.len(),
        Target::Values(ids) => ids.data().iter().filter(|v| !v.is_nan()).count(),
    }
}

/// Checks a tensor target against the prediction's shape.
fn check_values(name: &str, pred_shape: &[usize], target: Target<'_>) -> Result<()> {
    match target {
        Target::Values(t) if t.shape() == pred_shape => Ok(()),
        Target::Values(t) => Err(Error::shape(format!(
            "{name}: the prediction has shape {} but the target has shape {}",
            shape_str(pred_shape),
            shape_str(t.shape())
        ))),
        Target::Classes(_) => Err(Error::invalid(format!(
            "{name} needs a target tensor of the prediction's shape, not class labels"
        ))),
    }
}

fn values<'a>(name: &str, pred: &Tensor, target: Target<'a>) -> Result<&'a Tensor> {
    check_values(name, pred.shape(), target)?;
    match target {
        Target::Values(t) => Ok(t),
        Target::Classes(_) => unreachable!("checked above"),
    }
}

/// Checks class targets against logits of shape `[N, …, classes]`.
fn check_classes(name: &str, pred_shape: &[usize], target: Target<'_>) -> Result<()> {
    row_classes(name, pred_shape, target).map(|_| ())
}

/// The class of every row of logits `[N, …, C]` (rows: all axes but the last), or `None` for a row
/// to ignore. Targets are class labels, one per row, or a tensor of the logits' shape without its
/// last axis holding class ids as whole numbers, NaN marking a row to ignore (padding).
fn row_classes(name: &str, shape: &[usize], target: Target<'_>) -> Result<Vec<Option<usize>>> {
    let (&[ref lead @ .., c], true) = (shape, shape.len() >= 2) else {
        return Err(Error::shape(format!(
            "{name} expects logits of shape [N, classes] (or [N, …, classes]), got {}",
            shape_str(shape)
        )));
    };
    if c == 0 {
        return Err(Error::shape(format!(
            "{name}: logits of shape {} have no classes: there is nothing to classify into",
            shape_str(shape)
        )));
    }
    // (Checked: an empty tensor's other axes may multiply past usize, `[2³², 2³², 0, 2]`.)
    let Some(rows) = crate::tensor::checked_numel(lead) else {
        return Err(Error::shape(format!("{name}: logits of shape {} hold too many rows", shape_str(shape))));
    };
    match target {
        Target::Classes(labels) => {
            check_labels(name, &[rows, c], labels)?;
            Ok(labels.iter().map(|&l| Some(l)).collect())
        }
        Target::Values(t) if t.shape() != lead => Err(Error::shape(format!(
            "{name}: logits of shape {} need class labels, or class ids of shape {}, got a target of shape {}",
            shape_str(shape),
            shape_str(lead),
            shape_str(t.shape())
        ))),
        Target::Values(t) => t
            .data()
            .iter()
            .enumerate()
            .map(|(i, &v)| match v {
                v if v.is_nan() => Ok(None),
                v if v >= 0.0 && v.fract() == 0.0 && (v as usize) < c => Ok(Some(v as usize)),
                v => Err(Error::invalid(format!(
                    "{name}: class id {v} at position {i} is not a whole number in 0..{c} (NaN marks a position to ignore)"
                ))),
            })
            .collect(),
    }
}

// -------------------------------------------------------------------------------------- MSE

/// Mean squared error, `L = (1/K) Σ (z − t)²`, `dL/dz = 2(z − t)/K`. No values at all (`K = 0`)
/// give a loss of 0 (PyTorch's `mse_loss`: NaN, 0/0).
///
/// ```
/// use backprop::loss::{Loss, MseLoss};
/// use backprop::Tensor;
/// let z = Tensor::from_vec(&[2], vec![1., 3.]).unwrap();
/// let t = Tensor::from_vec(&[2], vec![0., 1.]).unwrap();
/// let (l, g) = MseLoss::new().loss_and_grad(&z, (&t).into()).unwrap();
/// assert_eq!(l, 2.5);              // (1² + 2²) / 2
/// assert_eq!(g.data(), &[1., 2.]); // 2·(z − t)/2
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct MseLoss;

impl MseLoss {
    /// Mean squared error (PyTorch's `nn.MSELoss()`).
    pub fn new() -> MseLoss {
        MseLoss
    }
}

impl Loss for MseLoss {
    fn name(&self) -> &'static str {
        "MseLoss"
    }

    fn check_target(&self, pred_shape: &[usize], target: Target<'_>) -> Result<()> {
        check_values(self.name(), pred_shape, target)
    }

    fn loss_and_grad(&self, z: &Tensor, target: Target<'_>) -> Result<(f32, Tensor)> {
        let t = values(self.name(), z, target)?;
        if z.is_empty() {
            return Ok((0.0, z.clone())); // no values: nothing is wrong (the mean of no terms is taken as 0)
        }
        let k = z.len() as f32;
        let loss =
            z.data().iter().zip(t.data()).map(|(&z, &t)| ((z - t) as f64).powi(2)).sum::<f64>() / k as f64;
        let grad = z.zip_map(t, |z, t| 2.0 * (z - t) / k); // dL/dz = 2(z − t)/K
        Ok((loss as f32, grad))
    }
}

// ----------------------------------------------------------------------------- Cross-entropy

/// Cross-entropy from raw logits `[N, C]` and integer labels, with fused, stable log-softmax and
/// optional label smoothing. See the [module docs](self) for the math.
///
/// ```
/// use backprop::loss::{CrossEntropyLoss, Loss};
/// use backprop::Tensor;
/// let logits = Tensor::from_vec(&[1, 2], vec![0., 0.]).unwrap();
/// let (l, g) = CrossEntropyLoss::new().loss_and_grad(&logits, (&[1usize][..]).into()).unwrap();
/// assert!((l - 2f32.ln()).abs() < 1e-6);    // −log ½
/// assert_eq!(g.data(), &[0.5, -0.5]);       // softmax − one-hot
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct CrossEntropyLoss {
    label_smoothing: f32,
}

impl CrossEntropyLoss {
    /// Plain cross-entropy (no label smoothing).
    pub fn new() -> CrossEntropyLoss {
        CrossEntropyLoss { label_smoothing: 0.0 }
    }

    /// Label smoothing `ε ∈ [0, 1]`: the target becomes `(1 − ε)·one-hot + ε/C`.
    ///
    /// # Panics
    /// If `ε` is outside `[0, 1]`.
    pub fn label_smoothing(mut self, eps: f32) -> CrossEntropyLoss {
        assert!((0.0..=1.0).contains(&eps), "label smoothing must be in [0, 1], got {eps}");
        self.label_smoothing = eps;
        self
    }
}

/// Checks that `labels` fit logits of shape `[N, C]`.
pub(crate) fn check_labels(name: &str, logits_shape: &[usize], labels: &[usize]) -> Result<()> {
    let &[n, c] = logits_shape else {
        return Err(Error::shape(format!(
            "{name} expects logits of shape [N, classes], got {}",
            shape_str(logits_shape)
        )));
    };
    if labels.len() != n {
        return Err(Error::shape(format!(
            "{name}: {n} rows of logits (shape {}) but {} labels",
            shape_str(logits_shape),
            labels.len()
        )));
    }
    if let Some((i, &l)) = labels.iter().enumerate().find(|&(_, &l)| l >= c) {
        return Err(Error::invalid(format!(
            "{name}: label {l} (sample {i}) is out of range for {c} classes (valid: 0..={})",
            c.saturating_sub(1)
        )));
    }
    Ok(())
}

impl Loss for CrossEntropyLoss {
    fn name(&self) -> &'static str {
        "CrossEntropyLoss"
    }

    fn ignores_nan_targets(&self) -> bool {
        true // class ids, NaN marking padding
    }

    fn terms(&self, _: usize, target: Target<'_>) -> usize {
        counted_rows(target)
    }

    fn check_target(&self, pred_shape: &[usize], target: Target<'_>) -> Result<()> {
        check_classes(self.name(), pred_shape, target)
    }

    fn loss_and_grad(&self, z: &Tensor, target: Target<'_>) -> Result<(f32, Tensor)> {
        let classes = row_classes(self.name(), z.shape(), target)?;
        let c = z.shape()[z.ndim() - 1];
        let valid = classes.iter().flatten().count(); // rows that count: the mean is over them
        let eps = self.label_smoothing as f64;
        let mut grad = Tensor::zeros_in_parallel(z.shape());
        let mut row_losses = vec![0.0f64; classes.len()];
        // Each row on its own (blocks of rows in parallel when large), its loss kept apart and the
        // rows' losses summed in order below: the same bits on any number of threads.
        let rows = grad.data_mut().par_chunks_mut(c).zip(z.data().par_chunks(c));
        let rows = rows.zip(row_losses.par_iter_mut().zip(classes.par_iter()));
        let per_task = split_if_threads(rows_per_task(classes.len(), c));
        // `terms`: a task's buffer for a row's e^(z − m), reused from row to row.
        type Row<'a> = ((&'a mut [f32], &'a [f32]), (&'a mut f64, &'a Option<usize>));
        let each_row = |terms: &mut Vec<f32>, ((g_row, z_row), (row_loss, label)): Row<'_>| {
            let Some(label) = *label else {
                return; // an ignored row adds nothing to the loss or the gradient (g stays 0)
            };
            // log p = z − m − log Σ e^(z − m) (stable: m = max z), as `log_softmax_into`; each
            // e^(z_k − m) is kept, so that p_k = e^(z_k − m) / Σ needs no second exponential.
            terms.resize(c, 0.0);
            let (m, sum) = crate::tensor::simd::wide_fused!(shifted_exponentials(z_row, terms));
            let (m, log_sum) = (m as f64, sum.ln());
            let log_p = |z: f32| (z as f64 - m - log_sum) as f32 as f64; // log softmax(z)_k, in f32
            // −Σ q·log p with q = (1 − ε)·[k = label] + ε/C: the label's term, and with smoothing
            // the mean of every class's (a class of logit −∞, masked, then makes the loss ∞, as
            // PyTorch's; without smoothing it adds nothing, not 0·∞ = NaN).
            *row_loss -= (1.0 - eps) * log_p(z_row[label]);
            if eps != 0.0 {
                let sum_log_p: f64 = crate::tensor::simd::wide!(sum_of_log_p(z_row, m, log_sum));
                *row_loss -= eps / c as f64 * sum_log_p;
            }
            // (softmax − q)/N: every class's share, then the label's q taken off its own.
            let (inv_sum, inv_valid, smooth) = (1.0 / sum, 1.0 / valid as f64, eps / c as f64);
            crate::tensor::simd::wide!(gradient_row(terms, g_row, inv_sum, smooth, inv_valid));
            g_row[label] = ((terms[label] as f64 * inv_sum - ((1.0 - eps) + smooth)) * inv_valid) as f32;
        };
        rows.with_min_len(per_task).for_each_init(Vec::new, each_row);
        let total: f64 = row_losses.iter().sum();
        Ok(((total / valid.max(1) as f64) as f32, grad))
    }
}

/// `m = max z` (NaN ignored, as `f32::max`), `out[k] = e^(z[k] − m)` in f32 ([`exp_with`]: no
/// library call, so the loop vectorises inside `wide_fused!`; within a few ulps of `f32::exp`),
/// and 0 where `z[k] − m` is below [`EXP_SMALLEST_NORMAL_ARG`] — where `e^(z − m)` is under
/// f32's smallest normal value, which `exp_with` would return instead (it clamps its argument
/// there); and `Σ out` in `f64` ([`sum_f64`]'s eight running sums). An
/// `f64` exponential per logit, a library call each, had been 2 % of a GPT's training step (65
/// classes at 2,048 positions); the maximum and the sum as one chain each, 2 ns per class of a
/// 1,000-class row.
#[allow(clippy::needless_range_loop)] // index loops, so that they stay inside the vector context
#[inline(always)]
fn shifted_exponentials<M: MulAdd>(z: &[f32], out: &mut [f32]) -> (f32, f64) {
    let n = out.len();
    let z = &z[..n];
    let mut lanes = [f32::NEG_INFINITY; 8];
    let (blocks, tail) = z.as_chunks::<8>();
    for block in blocks {
        for l in 0..8 {
            lanes[l] = lanes[l].max(block[l]);
        }
    }
    let m = tail.iter().chain(&lanes).copied().fold(f32::NEG_INFINITY, f32::max);
    for k in 0..n {
        let d = z[k] - m;
        out[k] = if d < EXP_SMALLEST_NORMAL_ARG { 0.0 } else { exp_with::<M>(d) };
    }
    (m, sum_f64(out, out, |t, _| t as f64))
}

/// `Σ_k log p_k` for one row, each `log p_k = z_k − m − log Σ` rounded to f32 (as the loss takes
/// the label's), in `f64` partial sums as [`shifted_exponentials`]'s.
#[inline(always)]
fn sum_of_log_p(z: &[f32], m: f64, log_sum: f64) -> f64 {
    sum_f64(z, z, |z, _| (z as f64 - m - log_sum) as f32 as f64)
}

/// `g[k] = (e^(z_k − m)·(1/Σ) − ε/C)·(1/N)` for every class of a row (the caller then sets the
/// label's, whose `q` also holds `1 − ε`).
#[allow(clippy::needless_range_loop)] // an index loop, so that it stays inside the vector context
#[inline(always)]
fn gradient_row(terms: &[f32], g: &mut [f32], inv_sum: f64, smooth: f64, inv_valid: f64) {
    let n = g.len();
    let terms = &terms[..n];
    for k in 0..n {
        g[k] = ((terms[k] as f64 * inv_sum - smooth) * inv_valid) as f32;
    }
}

/// Row-wise softmax of logits `[N, C]`: the class probabilities. Stable for any finite logits.
///
/// # Panics
/// If `logits` is not 2-D.
pub fn softmax(logits: &Tensor) -> Tensor {
    assert!(logits.ndim() == 2, "softmax expects [N, classes], got {:?}", logits.shape());
    let mut p = Tensor::zeros(logits.shape());
    softmax_into(logits.data(), feature_split(logits.shape()), p.data_mut());
    p
}

/// Marks the padded steps of per-step targets `[N, T, …]` as "no target" (NaN) from the
/// sequences' lengths, the same lengths a recurrent layer takes from its pass
/// ([`Pass::lengths`](crate::layers::Pass::lengths)), so that
/// [`CrossEntropyLoss`] (class ids), [`NllLoss`] and [`BceWithLogitsLoss::ignore_nan_targets`]
/// skip them.
///
/// # Errors
/// [`Error::Shape`] if `targets` has fewer than two axes or its batch axis does not match
/// `lengths`, and [`Error::InvalidArgument`] if a length exceeds `T`.
///
/// ```
/// use backprop::loss::mask_padding;
/// use backprop::Tensor;
/// let mut t = Tensor::ones(&[2, 3]);
/// mask_padding(&mut t, &[3, 1]).unwrap();
/// assert!(t.data()[..4].iter().all(|&v| v == 1.0) && t.data()[4..].iter().all(|v| v.is_nan()));
/// ```
pub fn mask_padding(targets: &mut Tensor, lengths: &[usize]) -> Result<()> {
    let &[n, t, ..] = targets.shape() else {
        return Err(Error::shape(format!(
            "mask_padding needs targets [N, T, …], got {}",
            shape_str(targets.shape())
        )));
    };
    if lengths.len() != n {
        return Err(Error::shape(format!("mask_padding: {} lengths for {n} sequences", lengths.len())));
    }
    if let Some(&l) = lengths.iter().find(|&&l| l > t) {
        return Err(Error::invalid(format!("mask_padding: length {l} exceeds the {t} steps of the targets")));
    }
    if targets.is_empty() {
        return Ok(()); // no values to mask (no sequences, no steps, or no values per step)
    }
    let per_step = targets.len() / (n * t); // n, t ≥ 1 here, and n·t ≤ the values (no overflow)
    for (seq, &len) in targets.data_mut().chunks_exact_mut(t * per_step).zip(lengths) {
        seq[len * per_step..].fill(f32::NAN); // steps len … T−1 are padding
    }
    Ok(())
}

// ------------------------------------------------------------------------ negative log-likelihood

/// Negative log-likelihood of class labels given log-probabilities `z [N, C]` (the output of a
/// [`LogSoftmax`](crate::layers::LogSoftmax) layer), as PyTorch's `nn.NLLLoss()`:
/// `L = −(1/N) Σₙ z[n, tₙ]`, `dL/dz[n, c] = −1/N` where `c = tₙ` and 0 elsewhere.
///
/// `LogSoftmax` followed by `NllLoss` computes what [`CrossEntropyLoss`] computes from logits;
/// the fused loss is a little faster and needs no softmax layer in the model.
///
/// ```
/// use backprop::loss::{Loss, NllLoss};
/// use backprop::Tensor;
/// let log_p = Tensor::from_vec(&[2, 2], vec![-0.1, -2.3, -1.6, -0.2]).unwrap();
/// let (l, g) = NllLoss::new().loss_and_grad(&log_p, (&[0usize, 1][..]).into()).unwrap();
/// assert!((l - 0.15).abs() < 1e-6);                   // (0.1 + 0.2) / 2
/// assert_eq!(g.data(), &[-0.5, 0., 0., -0.5]);
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct NllLoss;

impl NllLoss {
    /// Negative log-likelihood (PyTorch's `nn.NLLLoss()`).
    pub fn new() -> NllLoss {
        NllLoss
    }
}

impl Loss for NllLoss {
    fn name(&self) -> &'static str {
        "NllLoss"
    }

    fn ignores_nan_targets(&self) -> bool {
        true // class ids, NaN marking padding
    }

    fn terms(&self, _: usize, target: Target<'_>) -> usize {
        counted_rows(target)
    }

    fn check_target(&self, pred_shape: &[usize], target: Target<'_>) -> Result<()> {
        check_classes(self.name(), pred_shape, target)
    }

    fn loss_and_grad(&self, z: &Tensor, target: Target<'_>) -> Result<(f32, Tensor)> {
        let classes = row_classes(self.name(), z.shape(), target)?;
        let c = z.shape()[z.ndim() - 1];
        if z.ndim() > 2 {
            check_log_probabilities_by_rows(z, c)?;
        }
        let valid = classes.iter().flatten().count();
        let mut grad = Tensor::zeros(z.shape());
        let mut total = 0.0f64;
        for (i, label) in classes.iter().enumerate() {
            if let Some(label) = *label {
                total -= z.data()[i * c + label] as f64; // −Σ z[n, tₙ]
                grad.data_mut()[i * c + label] = -1.0 / valid as f32; // −1/N at the label
            }
        }
        Ok(((total / valid.max(1) as f64) as f32, grad))
    }
}

/// For outputs of rank 3 or more, whose classes `NllLoss` reads from the last axis: an error
/// unless every row of that axis is a log-probability distribution (`Σ e^z = 1` to within 1 %).
/// `LogSoftmax::new()` normalises axis 1 — over a sequence's steps for `[N, T, C]` — and the loss
/// would then train another objective without a word.
fn check_log_probabilities_by_rows(z: &Tensor, c: usize) -> Result<()> {
    for (r, row) in z.data().chunks_exact(c.max(1)).enumerate() {
        let total: f64 = row.iter().map(|&v| (v as f64).exp()).sum();
        if (total - 1.0).abs().is_nan() || (total - 1.0).abs() > 0.01 {
            return Err(Error::invalid(format!(
                "NllLoss: the outputs {:?} hold the classes on their last axis, but row {r} of it is not \
                 log-probabilities (Σ e^z = {total:.4}): for [N, T, C] outputs normalise the last axis \
                 (LogSoftmax::last_axis(); LogSoftmax::new() normalises axis 1, the steps), or train on the \
                 logits with CrossEntropyLoss",
                z.shape()
            )));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------- BCE with logits

/// Binary cross-entropy on raw logits: `L = (1/K) Σ max(z, 0) − z·t + log(1 + e^(−|z|))`
/// (the stable form of `−t·log σ(z) − (1 − t)·log(1 − σ(z))`), `dL/dz = (σ(z) − t)/K`.
/// Targets are probabilities in `[0, 1]`, of the logits' shape.
///
/// ```
/// use backprop::loss::{BceWithLogitsLoss, Loss};
/// use backprop::Tensor;
/// let z = Tensor::from_vec(&[1], vec![0.]).unwrap();
/// let t = Tensor::from_vec(&[1], vec![1.]).unwrap();
/// let (l, g) = BceWithLogitsLoss::new().loss_and_grad(&z, (&t).into()).unwrap();
/// assert!((l - 2f32.ln()).abs() < 1e-6);
/// assert_eq!(g.data(), &[-0.5]);
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct BceWithLogitsLoss {
    ignore_nan: bool,
}

impl BceWithLogitsLoss {
    /// Binary cross-entropy on logits (PyTorch's `nn.BCEWithLogitsLoss()`).
    pub fn new() -> BceWithLogitsLoss {
        BceWithLogitsLoss { ignore_nan: false }
    }

    /// Treats a NaN target as "no target here" (padding, or a position whose answer is unknown):
    /// it adds nothing to the loss or the gradient, and the mean is over the other positions.
    /// Without it a NaN target makes the loss NaN, which stops training.
    ///
    /// ```
    /// use backprop::loss::{BceWithLogitsLoss, Loss};
    /// use backprop::Tensor;
    /// let z = Tensor::from_vec(&[1, 3], vec![0., 5., -5.]).unwrap();
    /// let t = Tensor::from_vec(&[1, 3], vec![1., f32::NAN, f32::NAN]).unwrap();
    /// let (l, g) = BceWithLogitsLoss::new().ignore_nan_targets().loss_and_grad(&z, (&t).into()).unwrap();
    /// assert!((l - 2f32.ln()).abs() < 1e-6);    // only the first position counts
    /// assert_eq!(g.data(), &[-0.5, 0., 0.]);
    /// ```
    pub fn ignore_nan_targets(mut self) -> BceWithLogitsLoss {
        self.ignore_nan = true;
        self
    }
}

impl Loss for BceWithLogitsLoss {
    fn name(&self) -> &'static str {
        "BceWithLogitsLoss"
    }

    fn ignores_nan_targets(&self) -> bool {
        self.ignore_nan
    }

    fn terms(&self, samples: usize, target: Target<'_>) -> usize {
        match target {
            Target::Values(t) if self.ignore_nan => t.data().iter().filter(|t| !t.is_nan()).count(),
            _ => samples,
        }
    }

    fn check_target(&self, pred_shape: &[usize], target: Target<'_>) -> Result<()> {
        check_values(self.name(), pred_shape, target)?;
        // Probabilities: a target of 2 or −1 gives a loss below zero or a gradient that pushes
        // past certainty, with no error. (NaN is checked where padding is told apart.)
        if let Target::Values(t) = target
            && let Some(i) = t.data().iter().position(|&v| !v.is_nan() && !(0.0..=1.0).contains(&v))
        {
            return Err(Error::invalid(format!(
                "{}: target {i} is {}, but targets are probabilities in [0, 1]",
                self.name(),
                t.data()[i]
            )));
        }
        Ok(())
    }

    fn loss_and_grad(&self, z: &Tensor, target: Target<'_>) -> Result<(f32, Tensor)> {
        self.check_target(z.shape(), target)?;
        let t = values(self.name(), z, target)?;
        let counts = |t: f32| !(self.ignore_nan && t.is_nan());
        let k = t.data().iter().filter(|&&t| counts(t)).count().max(1) as f32; // positions that count
        let loss = z
            .data()
            .iter()
            .zip(t.data())
            .filter(|&(_, &t)| counts(t))
            .map(|(&z, &t)| {
                let (z, t) = (z as f64, t as f64);
                z.max(0.0) - z * t + (-z.abs()).exp().ln_1p()
            })
            .sum::<f64>()
            / k as f64;
        let grad = z.zip_map(t, |z, t| if counts(t) { (sigmoid(z) - t) / k } else { 0.0 }); // (σ(z) − t)/K
        Ok((loss as f32, grad))
    }
}
