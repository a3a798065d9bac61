//! Finite-difference gradient checking: evidence, at the points checked, that a backward pass is
//! right.
//!
//! A backward pass is hand-written calculus, and calculus written by hand has bugs. The check is
//! simple: the derivative of `L` with respect to one number `θ` is, by definition, the limit of
//! `(L(θ + ε) − L(θ − ε)) / 2ε`. Evaluate that *central difference* for every input and every
//! parameter, and compare it with what `backward` computed. The central difference is accurate to
//! `O(ε²)`, so with `ε ≈ 10⁻²` in `f32` the two agree to roughly three or four digits when the
//! backward pass is right, and disagree wildly when it is not.
//!
//! A layer's output is a tensor, not a scalar, so the check makes one: `L = Σ y ⊙ r` with a fixed
//! random tensor `r`. Then `dL/dy = r`, which is what [`check_layer`] feeds to `backward`.
//! Because `r` is random, a wrong entry anywhere in the Jacobian shows up.
//!
//! The error reported for each entry is `|analytic − numeric| / max(|analytic|, |numeric|, atol)`:
//! relative for gradients of normal size, absolute (scaled by `1/atol`) for near-zero ones, where
//! `f32` rounding would make a relative error meaningless. Each tensor is also judged as a whole,
//! `‖analytic − numeric‖ / max(‖analytic‖, ‖numeric‖, atol·√k)` over its `k` checked entries,
//! where the noise of the differences averages out: [`Report::passes`]`(tol)` asks for every
//! entry within `tol` and every tensor within `tol / 4`, which catches a gradient a little off
//! everywhere (scaled by 1.015, say) that every entry's own bound would pass — where the
//! gradient's entries are of typical size `atol` or more (below, the floor `atol·√k` takes over,
//! as `atol` does for each entry).
//!
//! ```
//! use backprop::gradcheck::{check_layer, Options};
//! use backprop::layers::{Dense, Mode};
//! use backprop::Tensor;
//! let mut dense = Dense::new(4, 3).seed(1);
//! let x = Tensor::randn(&[2, 4], 0.0, 1.0, 2);
//! let report = check_layer(&mut dense, &x, Mode::Train, &Options::default());
//! assert!(report.passes(1e-2), "{report}");
//! ```
//!
//! Kinks (ReLU at 0, a tie in max pooling) have no derivative; keep test inputs at least `ε` away
//! from them.

use crate::error::{Error, Result};
use crate::layers::{
    InputGrad, Layer, Mode, Pass, Snapshot, StateMut, Visit, named_params, reseed, zero_grad,
};
use crate::loss::{Loss, Target};
use crate::model::{Inputs, Model, Tensors};
use crate::tensor::{Tensor, shape_str};
use rand::seq::index::sample;
use std::fmt;

/// Settings of a gradient check.
#[derive(Clone, Debug)]
pub struct Options {
    /// The step `ε` of the central difference.
    pub eps: f32,
    /// Magnitudes below this count as this in the relative error's denominator.
    pub atol: f32,
    /// Seed of the projection `r` (and of the sampled entries).
    pub seed: u64,
    /// Check at most this many entries per tensor (chosen at random); `None` checks them all.
    pub max_entries: Option<usize>,
}

impl Default for Options {
    fn default() -> Options {
        Options { eps: 1e-2, atol: 1e-2, seed: 0, max_entries: Some(2000) }
    }
}

impl Options {
    /// Checks that these settings can tell a right gradient from a wrong one: `ε` and `atol`
    /// finite and positive (an infinite `atol` made every error 0, a zero one 0/0 a failure),
    /// and at least one entry per tensor (none checked would pass anything).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the setting.
    pub fn check(&self) -> Result<()> {
        let bad = |m: String| Err(crate::Error::invalid(format!("gradient check: {m}")));
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return bad(format!("the step eps must be a finite number > 0, got {}", self.eps));
        }
        if !(self.atol.is_finite() && self.atol > 0.0) {
            return bad(format!("atol must be a finite number > 0, got {}", self.atol));
        }
        if self.max_entries == Some(0) {
            return bad("max_entries Some(0) would check nothing; use None to check every entry".into());
        }
        Ok(())
    }
}

/// The result of checking one tensor (the input, or one parameter).
#[derive(Clone, Debug)]
pub struct TensorReport {
    /// `"input"`, or the parameter's name (`"weight"`, `"bias"`, `"2.0.weight"` in a model).
    pub name: String,
    /// How many entries were compared.
    pub checked: usize,
    /// Largest `|analytic − numeric|`.
    pub max_abs_error: f32,
    /// Largest `|analytic − numeric| / max(|analytic|, |numeric|, atol)`.
    pub max_rel_error: f32,
    /// Flat index of the entry with the largest relative error.
    pub worst_index: usize,
    /// The analytic gradient at that entry.
    pub worst_analytic: f32,
    /// The finite-difference gradient at that entry.
    pub worst_numeric: f32,
    /// The whole tensor's error, `‖analytic − numeric‖ / max(‖analytic‖, ‖numeric‖, atol·√k)` over
    /// the `k` checked entries: small where the per-entry measure is loose (a backward pass scaled by
    /// 1.015 is within 2 % at every entry, but 1.5 % off as a whole).
    pub norm_rel_error: f32,
}

/// The result of a gradient check: one [`TensorReport`] per checked tensor.
#[derive(Clone, Debug)]
pub struct Report {
    /// Per-tensor results, input first, then parameters in the layer's order.
    pub tensors: Vec<TensorReport>,
}

impl Report {
    /// The largest relative error over all tensors.
    pub fn max_rel_error(&self) -> f32 {
        self.tensors.iter().map(|t| t.max_rel_error).fold(0.0, f32::max)
    }

    /// The largest absolute error over all tensors.
    pub fn max_abs_error(&self) -> f32 {
        self.tensors.iter().map(|t| t.max_abs_error).fold(0.0, f32::max)
    }

    /// The largest whole-tensor error ([`TensorReport::norm_rel_error`]) over all tensors.
    pub fn max_norm_rel_error(&self) -> f32 {
        self.tensors.iter().map(|t| t.norm_rel_error).fold(0.0, f32::max)
    }

    /// True when every entry's relative error is at most `tol`, every tensor's error as a whole
    /// at most `tol / 4` (and every gradient is finite), and at least one entry was compared: a
    /// report that compared nothing shows nothing. The per-entry bound allows for the noise of a
    /// finite difference at small entries; the whole-tensor bound, where that noise averages
    /// out, catches a gradient that is a little off everywhere (scaled by 1.015, say), which the
    /// per-entry bound alone had passed.
    pub fn passes(&self, tol: f32) -> bool {
        self.tensors.iter().any(|t| t.checked > 0)
            && self.tensors.iter().all(|t| t.max_rel_error <= tol && t.norm_rel_error <= tol / 4.0)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for t in &self.tensors {
            writeln!(
                f,
                "{:>8}: {} entries, max abs error {:.2e}, whole-tensor error {:.2e}, max error (relative above atol) {:.2e} at [{}] (analytic {:.6}, numeric {:.6})",
                t.name,
                t.checked,
                t.max_abs_error,
                t.norm_rel_error,
                t.max_rel_error,
                t.worst_index,
                t.worst_analytic,
                t.worst_numeric
            )?;
        }
        Ok(())
    }
}

/// Compares analytic and numeric gradients entry by entry, and as whole tensors.
struct Comparison {
    report: TensorReport,
    atol: f32,
    /// `Σ (a − n)²`, `Σ a²`, `Σ n²` over the checked entries.
    sums: [f64; 3],
}

impl Comparison {
    fn new(name: &str, atol: f32) -> Comparison {
        let report = TensorReport {
            name: name.to_string(),
            checked: 0,
            max_abs_error: 0.0,
            max_rel_error: 0.0,
            worst_index: 0,
            worst_analytic: 0.0,
            worst_numeric: 0.0,
            norm_rel_error: 0.0,
        };
        Comparison { report, atol, sums: [0.0; 3] }
    }

    fn add(&mut self, index: usize, analytic: f32, numeric: f32) {
        let r = &mut self.report;
        let abs = (analytic - numeric).abs();
        let rel = abs / analytic.abs().max(numeric.abs()).max(self.atol);
        // (A NaN on either side is the worst error there is, not one that max() would skip.)
        let (abs, rel) = if rel.is_nan() { (f32::INFINITY, f32::INFINITY) } else { (abs, rel) };
        r.checked += 1;
        r.max_abs_error = r.max_abs_error.max(abs);
        let (a, n) = (analytic as f64, numeric as f64);
        self.sums[0] += (a - n) * (a - n);
        self.sums[1] += a * a;
        self.sums[2] += n * n;
        // The floor grows with the entries: atol per entry, as the per-entry measure has (a
        // gradient that is truly zero — a bias before batch norm — leaves only the noise).
        let floor = self.atol as f64 * (r.checked as f64).sqrt();
        let scale = self.sums[1].sqrt().max(self.sums[2].sqrt()).max(floor);
        let whole = (self.sums[0].sqrt() / scale) as f32;
        r.norm_rel_error = if whole.is_nan() { f32::INFINITY } else { whole };
        if rel > r.max_rel_error || r.checked == 1 {
            (r.max_rel_error, r.worst_index, r.worst_analytic, r.worst_numeric) =
                (rel, index, analytic, numeric);
        }
    }
}

/// Which entries of a tensor of `len` elements to check.
fn entries(len: usize, opts: &Options) -> Vec<usize> {
    match opts.max_entries {
        Some(max) if len > max => {
            let mut idx = sample(&mut crate::tensor::rng(opts.seed ^ len as u64), len, max).into_vec();
            idx.sort_unstable();
            idx
        }
        _ => (0..len).collect(),
    }
}

/// `f'(v) ≈ (f(v + ε) − f(v − ε)) / 2ε`.
fn central_difference(v: f32, eps: f32, mut f: impl FnMut(f32) -> f64) -> f32 {
    ((f(v + eps) - f(v - eps)) / (2.0 * eps as f64)) as f32
}

/// True for an input that is accepted as it is but refused once its first entry is nudged by
/// `eps` (`check` is the layer's or model's check of input values): token ids, which must be whole
/// numbers. Such an input has no gradient (an embedding's is zero by convention), so the checks
/// leave it out of their reports instead of failing on their own nudges.
fn holds_ids(x: &Tensor, eps: f32, check: impl Fn(&Tensor) -> Result<()>) -> bool {
    if x.data().is_empty() || check(x).is_err() {
        return false;
    }
    let mut probe = x.clone();
    probe.data_mut()[0] += eps;
    check(&probe).is_err()
}

/// Sets entry `i` of the parameter called `name` to `value`; returns its old value.
fn set_param_entry<V: Visit + ?Sized>(layer: &mut V, name: &str, i: usize, value: f32) -> f32 {
    let mut old = None;
    layer.visit_mut(&mut |n, s| {
        if let (StateMut::Param(p), true) = (s, n == name) {
            old = Some(std::mem::replace(&mut p.value.data_mut()[i], value));
        }
    });
    old.expect("a parameter of this layer")
}

/// Checks a layer's backward pass (w.r.t. its input and every parameter) at input `x` in `mode`.
/// The layer may be a whole model: a [`Sequential`](crate::Sequential) is a layer too.
///
/// The layer is reseeded with the same seed before every forward pass, so that random layers
/// (dropout) make the same choices throughout. Parameter gradients are zeroed first, and hold
/// the analytic gradient of `Σ y ⊙ r` afterwards. The check has no other side effect: its many
/// forward passes would move batch norm's running statistics (and counters) in training mode, so
/// those — and the random generators — are restored as they were before the check. An input of
/// token ids (which the layer refuses once nudged off a whole number: an embedding, a
/// decoder-only Transformer) has no gradient; the report then holds the parameters only.
///
/// # Panics
/// If `opts` fails [`Options::check`] (the message names the setting), where the layer's
/// forward or backward pass panics on `x`, and if its backward pass returns a gradient of another
/// shape than `x`, or leaves a parameter's gradient of another shape than the parameter (the
/// message names the layer and both shapes).
pub fn check_layer<'p>(
    layer: &mut dyn Layer,
    x: &Tensor,
    pass: impl Into<Pass<'p>>,
    opts: &Options,
) -> Report {
    if let Err(e) = opts.check() {
        panic!("{e}");
    }
    let pass = pass.into();
    let mut before = Snapshot::default();
    before.save(layer, false); // buffers, counters, generators (the check restores parameters itself)
    let report = check_layer_inner(layer, x, pass, opts);
    before.restore(layer);
    report
}

fn check_layer_inner(layer: &mut dyn Layer, x: &Tensor, pass: Pass<'_>, opts: &Options) -> Report {
    let layer_seed = opts.seed.wrapping_add(0x5eed);
    reseed(layer, layer_seed);
    // What a pass changes besides its output (a stateful layer's carried state, batch norm's
    // statistics): every pass below starts from the same, or each would continue the last.
    let mut start = Snapshot::default();
    start.save(layer, false);
    let y = layer.forward(x, pass);
    let r = Tensor::randn(y.shape(), 0.0, 1.0, opts.seed);
    zero_grad(layer);
    let dx = layer.backward(&r, InputGrad::Needed).expect("the input gradient was asked for");
    assert!(
        dx.shape() == x.shape(),
        "check_layer: {}'s backward returned dL/dx of shape {} for an input of shape {}",
        layer.describe(),
        shape_str(dx.shape()),
        shape_str(x.shape())
    );
    let param_grads: Vec<(String, Tensor)> =
        named_params(layer).into_iter().map(|(name, p)| (name, p.grad.clone())).collect();
    if let Some(m) = misshapen_param_grad(layer) {
        panic!("check_layer: {}: {m}", layer.describe());
    }

    // L(x, θ) = Σ y ⊙ r, in f64 so that summation adds no noise to the difference.
    let objective = |layer: &mut dyn Layer, x: &Tensor| -> f64 {
        start.restore(layer);
        reseed(layer, layer_seed);
        let y = layer.forward(x, pass);
        y.data().iter().zip(r.data()).map(|(&a, &b)| a as f64 * b as f64).sum()
    };

    let mut tensors = Vec::new();
    let mut xp = x.clone();
    if !holds_ids(x, opts.eps, |x| layer.check_values(x)) {
        let mut cmp = Comparison::new("input", opts.atol);
        for i in entries(x.len(), opts) {
            let numeric = central_difference(x.data()[i], opts.eps, |val| {
                xp.data_mut()[i] = val;
                objective(layer, &xp)
            });
            xp.data_mut()[i] = x.data()[i];
            cmp.add(i, dx.data()[i], numeric);
        }
        tensors.push(cmp.report);
    }

    for (name, analytic) in &param_grads {
        let mut cmp = Comparison::new(name, opts.atol);
        for i in entries(analytic.len(), opts) {
            let orig = set_param_entry(layer, name, i, 0.0);
            let numeric = central_difference(orig, opts.eps, |val| {
                set_param_entry(layer, name, i, val);
                objective(layer, x)
            });
            set_param_entry(layer, name, i, orig);
            cmp.add(i, analytic.data()[i], numeric);
        }
        tensors.push(cmp.report);
    }
    Report { tensors }
}

/// Checks a whole [`Model`]'s backward pass — with respect to every input it returns a gradient
/// for and every parameter — on the batch `inputs` (with their lengths), as [`check_layer`]
/// does for a layer: the objective is `Σ_outputs Σ y ⊙ r` with a fixed random `r` per output;
/// the model is reseeded before every forward pass and its buffers, counters and generators are
/// restored afterwards. An input of token ids (refused by [`Model::check_inputs`] once nudged
/// off a whole number) has no gradient and is left out of the report.
///
/// # Errors
/// As [`Options::check`]; whatever the model's forward or backward pass returns for these
/// inputs; [`Error::InvalidArgument`] if the backward pass returns gradients for some inputs but
/// none for one that is not token ids (a model that returns no input gradient at all is checked
/// on its parameters); a panic inside the forward pass (a layer of a model struct refusing the batch) as an
/// error naming the model.
pub fn check_model<M: Model + ?Sized>(
    model: &mut M,
    inputs: &Inputs,
    mode: Mode,
    opts: &Options,
) -> Result<Report> {
    opts.check()?;
    let mut before = Snapshot::default();
    before.save(model, false);
    let report = check_model_inner(model, inputs, mode, opts);
    before.restore(model);
    report
}

fn check_model_inner<M: Model + ?Sized>(
    model: &mut M,
    inputs: &Inputs,
    mode: Mode,
    opts: &Options,
) -> Result<Report> {
    let seed = opts.seed.wrapping_add(0x5eed);
    reseed(model, seed);
    // Every pass starts from the same carried states and statistics (as in `check_layer`).
    let mut start = Snapshot::default();
    start.save(model, false);
    let outputs = crate::train::forward_batch_caught(model, inputs, mode, "check_model")?;
    let mut r = Tensors::new();
    for (k, (name, y)) in outputs.iter().enumerate() {
        r.insert(name, Tensor::randn(y.shape(), 0.0, 1.0, opts.seed.wrapping_add(k as u64)));
    }
    zero_grad(model);
    let input_grads = model.backward_batch(&r, InputGrad::Needed)?;
    // A gradient of another shape than its input or parameter is the mix-up this check is for:
    // named, not read past its end.
    for input in inputs.iter() {
        if let Some(g) = input_grads.find(&input.name).filter(|g| g.shape() != input.values.shape()) {
            return Err(Error::shape(format!(
                "check_model: {}'s backward_batch returned a gradient of shape {} for input {:?} of shape {}",
                model.name(),
                shape_str(g.shape()),
                input.name,
                shape_str(input.values.shape())
            )));
        }
    }
    if let Some(m) = misshapen_param_grad(model) {
        return Err(Error::shape(format!("check_model: {}: {m}", model.name())));
    }
    let param_grads: Vec<(String, Tensor)> =
        named_params(model).into_iter().map(|(name, p)| (name, p.grad.clone())).collect();
    // L = Σ_outputs Σ y ⊙ r, in f64.
    let objective = |model: &mut M, inputs: &Inputs| -> Result<f64> {
        start.restore(model);
        reseed(model, seed);
        let outputs = crate::train::forward_batch_caught(model, inputs, mode, "check_model")?;
        let mut sum = 0.0;
        for (name, y) in outputs.iter() {
            let r = r.get(name)?;
            sum += y.data().iter().zip(r.data()).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>();
        }
        Ok(sum)
    };
    let mut tensors = Vec::new();
    for input in inputs.iter() {
        // A layer used as a model takes its one input under any name and returns its gradient
        // as `"input"` (`crate::model::INPUT`): that one is this input's.
        let single = || {
            (inputs.count() == 1 && input_grads.len() == 1)
                .then(|| input_grads.first().map(|(_, g)| g))
                .flatten()
        };
        let ids = holds_ids(&input.values, opts.eps, |x| {
            let mut probe = inputs.clone();
            *probe.get_mut(&input.name)? = x.clone();
            model.check_inputs(&probe)
        });
        if ids {
            continue; // token ids: no gradient to check (see `holds_ids`)
        }
        // A model that returns no input gradient at all (one reading token ids without checking
        // them, say) is checked on its parameters. One that returns some must return every
        // real-valued input's: a backward pass that forgot one had passed with that input left
        // out of the report.
        let Some(analytic) = input_grads.find(&input.name).or_else(single) else {
            if input_grads.iter().next().is_none() {
                continue;
            }
            return Err(Error::invalid(format!(
                "check_model: the model's backward pass returned no gradient for its input {:?}, whose values are \
                 not token ids (nudged by {} they are still accepted); inputs with gradients: {:?}",
                input.name,
                opts.eps,
                input_grads.iter().map(|(name, _)| name).collect::<Vec<_>>()
            )));
        };
        let mut cmp = Comparison::new(&input.name, opts.atol);
        let mut nudged = inputs.clone();
        for i in entries(input.values.len(), opts) {
            let orig = input.values.data()[i];
            let mut f = |v: f32| -> Result<f64> {
                *nudged.get_mut(&input.name)?.data_mut().get_mut(i).expect("in range") = v;
                objective(model, &nudged)
            };
            let (plus, minus) = (f(orig + opts.eps)?, f(orig - opts.eps)?);
            f(orig)?;
            cmp.add(i, analytic.data()[i], ((plus - minus) / (2.0 * opts.eps as f64)) as f32);
        }
        tensors.push(cmp.report);
    }
    for (name, analytic) in &param_grads {
        let mut cmp = Comparison::new(name, opts.atol);
        for i in entries(analytic.len(), opts) {
            let orig = set_param_entry(model, name, i, 0.0);
            set_param_entry(model, name, i, orig + opts.eps);
            let plus = objective(model, inputs)?;
            set_param_entry(model, name, i, orig - opts.eps);
            let minus = objective(model, inputs)?;
            set_param_entry(model, name, i, orig);
            cmp.add(i, analytic.data()[i], ((plus - minus) / (2.0 * opts.eps as f64)) as f32);
        }
        tensors.push(cmp.report);
    }
    Ok(Report { tensors })
}

/// Checks a loss's gradient with respect to its prediction input.
///
/// # Errors
/// As [`Options::check`]; whatever the loss returns for this prediction and target.
pub fn check_loss(loss: &dyn Loss, pred: &Tensor, target: Target<'_>, opts: &Options) -> Result<Report> {
    opts.check()?;
    let (_, grad) = loss.loss_and_grad(pred, target)?;
    if grad.shape() != pred.shape() {
        return Err(Error::shape(format!(
            "check_loss: {} returned a gradient of shape {} for a prediction of shape {}",
            loss.name(),
            shape_str(grad.shape()),
            shape_str(pred.shape())
        )));
    }
    let mut cmp = Comparison::new("input", opts.atol);
    let mut zp = pred.clone();
    for i in entries(pred.len(), opts) {
        let mut failed = None;
        let numeric = central_difference(pred.data()[i], opts.eps, |val| {
            zp.data_mut()[i] = val;
            loss.loss(&zp, target).map(f64::from).unwrap_or_else(|e| {
                failed = Some(e);
                f64::NAN
            })
        });
        if let Some(e) = failed {
            return Err(e);
        }
        zp.data_mut()[i] = pred.data()[i];
        cmp.add(i, grad.data()[i], numeric);
    }
    Ok(Report { tensors: vec![cmp.report] })
}

/// The first parameter whose gradient is not of its value's shape, described.
fn misshapen_param_grad<V: Visit + ?Sized>(model: &V) -> Option<String> {
    named_params(model).into_iter().find(|(_, p)| p.grad.shape() != p.value.shape()).map(|(name, p)| {
        format!(
            "the gradient of parameter {name:?} has shape {}, the parameter {}",
            shape_str(p.grad.shape()),
            shape_str(p.value.shape())
        )
    })
}
