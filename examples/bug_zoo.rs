//! A zoo of backward-pass bugs, each one that compiles, runs and trains *something*, and what a
//! gradient check says about it. Every bug here has a correct twin in the crate; the check
//! passes on the twin and fails on the bug (`tests/bug_zoo.rs` asserts both).
//!
//! Run: `cargo run --release --example bug_zoo`

use backprop::gradcheck::{Options, check_layer, check_loss};
use backprop::layers::{State, StateMut};
use backprop::prelude::*;

/// Which bug a [`Buggy`] layer or [`ForgotMean`] loss carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bug {
    /// `dL/dx = g·Wᵀ` instead of `g·W`: a square layer keeps every shape right.
    MissingTranspose,
    /// `dL/dW = …` overwrites instead of adding: wrong as soon as a layer's backward runs twice
    /// before a step (here: on two halves of the batch).
    AssignInsteadOfAdd,
    /// Batch norm's `dL/dx` without the path through the mean (the `− Σ g` term).
    BatchNormWithoutMeanPath,
}

/// `y = x·Wᵀ` on `[N, F]` with a square `W`, written out with one of the dense bugs — or none.
pub struct Buggy {
    /// The weights and their gradient.
    pub weight: Param,
    bug: Option<Bug>,
    x: Tensor,
}

impl Buggy {
    /// A `features × features` layer with seeded weights.
    pub fn new(features: usize, bug: Option<Bug>) -> Buggy {
        Buggy {
            weight: Param::new(Tensor::randn(&[features, features], 0.0, 0.5, 7)),
            bug,
            x: Tensor::default(),
        }
    }

    fn half_backward(&mut self, g: &Tensor, x: &Tensor) -> Tensor {
        let (n, f) = (x.dim(0), x.dim(1));
        let w = self.weight.value.data().to_vec();
        let mut dw = vec![0.0f32; f * f];
        let mut dx = Tensor::zeros(&[n, f]);
        for s in 0..n {
            for o in 0..f {
                for i in 0..f {
                    dw[o * f + i] += g.data()[s * f + o] * x.data()[s * f + i]; // (gᵀ·x)[o, i]
                    let w_oi =
                        if self.bug == Some(Bug::MissingTranspose) { w[i * f + o] } else { w[o * f + i] };
                    dx.data_mut()[s * f + i] += g.data()[s * f + o] * w_oi; // (g·W)[s, i]
                }
            }
        }
        let grad = self.weight.grad.data_mut();
        if self.bug == Some(Bug::AssignInsteadOfAdd) {
            grad.copy_from_slice(&dw); // the bug: `=` where the contract says `+=`
        } else {
            grad.iter_mut().zip(&dw).for_each(|(a, b)| *a += b);
        }
        dx
    }
}

impl Layer for Buggy {
    fn describe(&self) -> String {
        format!("Buggy({:?})", self.bug)
    }
    fn output_shape(&self, input: &[usize]) -> backprop::Result<Vec<usize>> {
        Ok(input.to_vec())
    }
    fn forward(&mut self, x: &Tensor, _: Pass<'_>) -> Tensor {
        self.x = x.clone();
        let (n, f) = (x.dim(0), x.dim(1));
        let w = self.weight.value.data();
        Tensor::from_fn(&[n, f], |ix| (0..f).map(|i| x.data()[ix[0] * f + i] * w[ix[1] * f + i]).sum())
    }
    /// The batch's backward pass in two halves, each its own call into the accumulation — as
    /// gradient accumulation over micro-batches, or a layer used twice, would run it.
    fn backward(&mut self, g: &Tensor, _: InputGrad) -> Option<Tensor> {
        let (n, f) = (g.dim(0), g.dim(1));
        let half = n / 2;
        let x = self.x.clone();
        let part = |t: &Tensor, r: std::ops::Range<usize>| {
            Tensor::from_vec(&[r.len(), f], t.data()[r.start * f..r.end * f].to_vec()).expect("rows")
        };
        let first = self.half_backward(&part(g, 0..half), &part(&x, 0..half));
        let second = self.half_backward(&part(g, half..n), &part(&x, half..n));
        let mut dx = first.data().to_vec();
        dx.extend_from_slice(second.data());
        Some(Tensor::from_vec(&[n, f], dx).expect("rows"))
    }
}

impl Visit for Buggy {
    fn visit<'a>(&'a self, f: &mut dyn FnMut(&str, State<'a>)) {
        f("weight", State::Param(&self.weight));
    }

    fn visit_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, StateMut<'a>)) {
        f("weight", StateMut::Param(&mut self.weight));
    }
}

/// Batch normalisation of `[N, F]` without scale and shift, its backward pass written out — with
/// or without the path through the mean.
pub struct Normalise {
    without_mean_path: bool,
    x_hat: Tensor,
    inv_std: Vec<f32>,
}

impl Normalise {
    /// The layer; `without_mean_path` drops the `− Σ g` term of `dL/dx`.
    pub fn new(without_mean_path: bool) -> Normalise {
        Normalise { without_mean_path, x_hat: Tensor::default(), inv_std: Vec::new() }
    }
}

impl Layer for Normalise {
    fn describe(&self) -> String {
        if self.without_mean_path { "Normalise(without the mean path)".into() } else { "Normalise".into() }
    }
    fn output_shape(&self, input: &[usize]) -> backprop::Result<Vec<usize>> {
        Ok(input.to_vec())
    }
    fn forward(&mut self, x: &Tensor, _: Pass<'_>) -> Tensor {
        let (n, f) = (x.dim(0), x.dim(1));
        let col = |c: usize| (0..n).map(move |s| x.data()[s * f + c]);
        let mean: Vec<f32> = (0..f).map(|c| col(c).sum::<f32>() / n as f32).collect();
        self.inv_std = (0..f)
            .map(|c| 1.0 / (col(c).map(|v| (v - mean[c]).powi(2)).sum::<f32>() / n as f32 + 1e-5).sqrt())
            .collect();
        self.x_hat =
            Tensor::from_fn(&[n, f], |i| (x.data()[i[0] * f + i[1]] - mean[i[1]]) * self.inv_std[i[1]]);
        self.x_hat.clone()
    }
    fn backward(&mut self, g: &Tensor, _: InputGrad) -> Option<Tensor> {
        let (n, f) = (g.dim(0), g.dim(1));
        let (xh, m) = (&self.x_hat, n as f32);
        let sum_g: Vec<f32> = (0..f).map(|c| (0..n).map(|s| g.data()[s * f + c]).sum()).collect();
        let sum_gx: Vec<f32> =
            (0..f).map(|c| (0..n).map(|s| g.data()[s * f + c] * xh.data()[s * f + c]).sum()).collect();
        let mean_path = if self.without_mean_path { 0.0 } else { 1.0 };
        Some(Tensor::from_fn(&[n, f], |i| {
            let (s, c) = (i[0], i[1]);
            // dL/dx = (s/m)·(m g − Σ g − x̂ Σ g x̂); the bug drops the middle term.
            self.inv_std[c] / m
                * (m * g.data()[s * f + c] - mean_path * sum_g[c] - xh.data()[s * f + c] * sum_gx[c])
        }))
    }
}

impl Visit for Normalise {}

/// Mean squared error whose gradient forgets the `1/N` of the mean (or not).
pub struct ForgotMean(pub bool);

impl Loss for ForgotMean {
    fn name(&self) -> &'static str {
        "ForgotMean"
    }
    fn loss_and_grad(&self, pred: &Tensor, target: Target<'_>) -> backprop::Result<(f32, Tensor)> {
        let (loss, mut grad) = MseLoss::new().loss_and_grad(pred, target)?;
        if self.0 {
            grad.scale(pred.len() as f32); // the bug: d(mean)/dx without the 1/N
        }
        Ok((loss, grad))
    }
}

/// Runs the check on each bug and its twin; returns `(name, twin passes, bug passes, bug's error)`.
pub fn zoo() -> Vec<(String, bool, bool, f32)> {
    let opts = Options::default();
    let x = Tensor::randn(&[6, 4], 0.0, 1.0, 1);
    let mut rows = Vec::new();
    let mut layer_case = |name: &str, right: &mut dyn Layer, wrong: &mut dyn Layer| {
        let (good, bad) =
            (check_layer(right, &x, Mode::Train, &opts), check_layer(wrong, &x, Mode::Train, &opts));
        rows.push((name.to_string(), good.passes(1e-2), bad.passes(1e-2), bad.max_rel_error()));
    };
    layer_case(
        "missing transpose in dL/dx",
        &mut Buggy::new(4, None),
        &mut Buggy::new(4, Some(Bug::MissingTranspose)),
    );
    layer_case(
        "`=` instead of `+=` for dL/dW",
        &mut Buggy::new(4, None),
        &mut Buggy::new(4, Some(Bug::AssignInsteadOfAdd)),
    );
    layer_case("batch norm without the mean path", &mut Normalise::new(false), &mut Normalise::new(true));
    let target = Tensor::randn(&[6, 4], 0.0, 1.0, 2);
    let good = check_loss(&ForgotMean(false), &x, (&target).into(), &opts).expect("a valid target");
    let bad = check_loss(&ForgotMean(true), &x, (&target).into(), &opts).expect("a valid target");
    rows.push((
        "a mean's gradient without 1/N".into(),
        good.passes(1e-2),
        bad.passes(1e-2),
        bad.max_rel_error(),
    ));
    rows
}

fn main() {
    println!("bug                                   correct twin   bug          largest error of the bug");
    for (name, twin, bug, error) in zoo() {
        let verdict = |ok: bool| if ok { "passes" } else { "FAILS" };
        println!("{name:<37} {:<14} {:<12} {error:.2}", verdict(twin), verdict(bug));
    }
    println!(
        "\nEach bug trains without an error message: the shapes are right and the loss may even fall.\n\
         Only the check notices: a missing transpose scrambles dL/dx (the layers *before* it learn\n\
         from wrong gradients), `=` keeps only the last part of an accumulated gradient, the missing\n\
         mean path leaves a component batch norm should remove, and a forgotten 1/N scales every\n\
         gradient by N (here N = 24 values: error 1 − 1/24 = 0.96). (Errors above 1 mean the signs\n\
         disagree: the error is |a − n| / max(|a|, |n|, 0.01), at most 2.)"
    );
}
