//! Why backpropagation, measured: the gradient of the walkthrough's CNN for one batch by finite
//! differences would take two forward passes per parameter; backprop takes one forward and one
//! backward pass. This times both on a batch of 64 digits-sized images (the numerical gradient is
//! timed on a sample of parameters and scaled up: running all of it would take minutes).
//!
//! Run: `cargo run --release --example why_backprop`

use backprop::layers::{named_params, named_params_mut};
use backprop::prelude::*;
use std::time::Instant;

/// The walkthrough's network (`examples/image_classify/pipeline.rs`), for 28×28 images.
pub fn reference_cnn() -> Sequential {
    Sequential::builder(&[1, 28, 28])
        .add(Conv2d::new(1, 32, 3))
        .add(Relu::new())
        .add(MaxPool2d::new(2))
        .add(Conv2d::new(32, 64, 3))
        .add(Relu::new())
        .add(MaxPool2d::new(2))
        .add(Flatten::new())
        .add(Dropout::new(0.5))
        .add(Dense::new(1600, 10))
        .seed(1)
        .build()
        .expect("the reference network")
}

/// Forward passes a central-difference gradient needs: two per parameter.
pub fn forward_passes_for_numerical_gradient(model: &Sequential) -> usize {
    2 * model.num_params()
}

fn run() -> Result<()> {
    let mut model = reference_cnn();
    let x = Tensor::randn(&[64, 1, 28, 28], 0.0, 1.0, 2);
    let labels: Vec<usize> = (0..64).map(|i| i % 10).collect();
    let loss = CrossEntropyLoss::new();
    let passes = forward_passes_for_numerical_gradient(&model);
    println!(
        "parameters: {}; a numerical gradient needs {passes} forward passes per batch",
        model.num_params()
    );

    for _ in 0..3 {
        model.loss_and_backward(&x, Target::Classes(&labels), &loss, Mode::Eval)?; // warm-up
    }
    let rounds = 20;
    let started = Instant::now();
    for _ in 0..rounds {
        model.loss_and_backward(&x, Target::Classes(&labels), &loss, Mode::Eval)?;
    }
    let backprop = started.elapsed().as_secs_f64() / rounds as f64;

    // The numerical gradient, for a sample of weights: two forward passes each.
    let sample = 200;
    let eps = 1e-2;
    let started = Instant::now();
    for k in 0..sample {
        let i = k * 97 % 1600; // entries of the dense layer's weight, spread out
        let name = named_params(&model)[4].0.clone(); // "8.weight"
        for sign in [1.0, -1.0] {
            if let Some((_, p)) = named_params_mut(&mut model).into_iter().find(|(n, _)| *n == name) {
                p.value.data_mut()[i] += sign * eps;
            }
            let out = model.forward(&x, Pass::EVAL);
            std::hint::black_box(loss.loss(&out, Target::Classes(&labels))?);
            if let Some((_, p)) = named_params_mut(&mut model).into_iter().find(|(n, _)| *n == name) {
                p.value.data_mut()[i] -= sign * eps;
            }
        }
    }
    let per_forward = started.elapsed().as_secs_f64() / (2 * sample) as f64;
    let numerical = per_forward * passes as f64;
    println!("one forward pass:                {:>10.2} ms", 1e3 * per_forward);
    println!("backprop (forward + backward):   {:>10.2} ms", 1e3 * backprop);
    println!("numerical gradient (estimated):  {:>10.1} s   ({passes} forward passes)", numerical);
    println!("backprop is {:.0}× faster for this network and batch", numerical / backprop);
    Ok(())
}

/// Runs the example; an error is printed as its message (not Rust's debug form) and exits 1.
fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
