//! Four checks to run before trusting a training run (docs/backprop.md §16), on real digits:
//!
//! 1. **The loss at initialisation** should be `ln C` for `C` classes: a network that has learned
//!    nothing predicts about `1/C` for every class. Far above it, the initial weights are too large.
//! 2. **Overfit a tiny set**: 20 images, no regularisation — the training loss must go to ~0. If it
//!    cannot, something between the data and the optimizer is broken.
//! 3. **Check the gradient during training**, not only at initialisation: finite differences
//!    against `backward` after some steps, where activations have moved off their starting values.
//! 4. **Regularisation must not swamp the data**: as weight decay grows, the training loss rises;
//!    when it dominates, the network stops fitting at all.
//!
//! Run: `cargo run --release --example practical_checks`

use backprop::data::idx::load_mnist_folder;
use backprop::gradcheck::{Options, Report, check_layer};
use backprop::prelude::*;
use std::path::Path;

/// 1,000 training and 500 test digits of the bundled set, flattened to 784 values in `[0, 1]`.
pub fn digits() -> Result<(Dataset, Dataset)> {
    let (train, test) =
        load_mnist_folder(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/digits"))?;
    let flat = |d: &Dataset, n: usize| -> Result<Dataset> {
        let d = d.take(n);
        let x = d.inputs().clone().reshape(&[n, 784]);
        Dataset::classification(x, d.labels().expect("labels").to_vec())
    };
    Ok((flat(&train, 1000)?, flat(&test, 500)?))
}

/// A small MLP, its weights drawn from `seed` and multiplied by `scale` (1: the default
/// initialisation).
pub fn mlp(seed: u64, scale: f32) -> Sequential {
    let mut model = Sequential::builder(&[784])
        .add(Dense::new(784, 64))
        .add(Relu::new())
        .add(Dense::new(64, 10))
        .seed(seed)
        .build()
        .expect("the MLP");
    model.visit_mut(&mut |_, s| {
        if let StateMut::Param(p) = s {
            p.value.scale(scale);
        }
    });
    model
}

/// Check 1: the mean cross-entropy of an untrained network on `data`.
pub fn initial_loss(model: &mut Sequential, data: &Dataset) -> f32 {
    model.evaluate(data, &CrossEntropyLoss::new(), 256).expect("the digits fit the model").loss
}

/// Check 2: training loss and accuracy after `epochs` epochs on the first 20 samples (batch 20,
/// Adam 0.01, no regularisation).
pub fn overfit_tiny(train: &Dataset, epochs: usize) -> (f32, f32) {
    let tiny = train.take(20);
    let mut model = mlp(2, 1.0);
    let loss = CrossEntropyLoss::new();
    let options = FitOptions::new().epochs(epochs).batch_size(20).seed(3).verbose(false);
    model.fit(&tiny, &loss, &mut Adam::new(0.01), options).expect("training");
    let e = model.evaluate(&tiny, &loss, 20).expect("evaluation");
    (e.loss, e.accuracy.expect("labels"))
}

/// Check 3: the gradient check's reports at initialisation and after `epochs` epochs of training
/// (central differences on a batch of 8), for the same MLP with `tanh`: ReLU's kink at 0 makes a
/// central difference that straddles it wrong by design (§11), which would hide a real error
/// among false alarms.
pub fn gradient_check_during_training(train: &Dataset, epochs: usize) -> (Report, Report) {
    let mut model = Sequential::builder(&[784])
        .add(Dense::new(784, 64))
        .add(Tanh::new())
        .add(Dense::new(64, 10))
        .seed(4)
        .build()
        .expect("the MLP");
    let batch = train.take(8).inputs().clone();
    let check = |m: &mut Sequential| check_layer(m, &batch, Mode::Eval, &Options::default());
    let before = check(&mut model);
    let options = FitOptions::new().epochs(epochs).batch_size(50).seed(5).verbose(false);
    model.fit(train, &CrossEntropyLoss::new(), &mut Adam::new(0.003), options).expect("training");
    (before, check(&mut model))
}

/// Check 4: (weight decay, final training loss, test accuracy) for each L2 weight decay (Adam's
/// `weight_decay`: `λ·w` added to every gradient), 5 epochs each.
pub fn regularisation_sweep(train: &Dataset, test: &Dataset, decays: &[f32]) -> Vec<(f32, f32, f32)> {
    decays
        .iter()
        .map(|&wd| {
            let mut model = mlp(6, 1.0);
            let loss = CrossEntropyLoss::new();
            let options = FitOptions::new().epochs(5).batch_size(50).seed(7).verbose(false);
            model.fit(train, &loss, &mut Adam::new(0.003).weight_decay(wd), options).expect("training");
            let fit = model.evaluate(train, &loss, 256).expect("evaluation").loss;
            let acc = model.evaluate(test, &loss, 256).expect("evaluation").accuracy.expect("labels");
            (wd, fit, acc)
        })
        .collect()
}

fn run() -> Result<()> {
    let (train, test) = digits()?;
    println!("1,000 training and 500 test digits, a 784–64–10 MLP.\n");

    println!("1. Loss at initialisation (ln 10 = {:.4} for a network that knows nothing):", 10f32.ln());
    for scale in [1.0, 10.0] {
        let loss = initial_loss(&mut mlp(1, scale), &train);
        println!("   weights × {scale:<4}  loss {loss:.4}");
    }
    println!("   (×10: the logits start large and confidently wrong; training begins by undoing that.)\n");

    let (loss, acc) = overfit_tiny(&train, 100);
    println!("2. Overfitting 20 images for 100 epochs: loss {loss:.5}, accuracy {:.0} %\n", 100.0 * acc);

    let (before, after) = gradient_check_during_training(&train, 2);
    println!(
        "3. Gradient check (tanh MLP), largest relative error: at initialisation {:.1e}, after 2 epochs {:.1e}\n",
        before.max_rel_error(),
        after.max_rel_error()
    );

    println!("4. L2 weight decay λ (Adam, 5 epochs): training loss and test accuracy");
    for (wd, fit, acc) in regularisation_sweep(&train, &test, &[0.0, 0.01, 0.1, 1.0]) {
        println!("   λ = {wd:<5}  training loss {fit:.4}  test accuracy {:.1} %", 100.0 * acc);
    }
    println!("   (the training loss rises with λ; when λ·w outweighs the data's gradient, the weights are");
    println!("   pulled toward zero faster than the data can move them, and the loss heads back to ln 10)");
    Ok(())
}

/// Runs the example; an error is printed as its message (not Rust's debug form) and exits 1.
fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
