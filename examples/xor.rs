//! Backpropagation in the smallest network that needs a hidden layer: learning XOR.
//!
//! No single line separates XOR's 1s from its 0s, so a network without a hidden layer cannot learn
//! it. Here a 2 → 4 → 1 network does, with the training loop written out by hand: forward, loss,
//! backward, step — the four moves that `backprop::train::fit` repeats for you.
//!
//! Run: `cargo run --release --example xor`

use backprop::prelude::*;

fn run() -> backprop::Result<()> {
    // The four XOR cases: inputs [a, b] and target a XOR b.
    let x = Tensor::from_vec(&[4, 2], vec![0., 0., 0., 1., 1., 0., 1., 1.])?;
    let target = Tensor::from_vec(&[4, 1], vec![0., 1., 1., 0.])?;

    let mut net = Sequential::builder(&[2])
        .add(Dense::new(2, 4).init(backprop::tensor::init::Init::GlorotUniform).seed(3))
        .add(Tanh::new())
        .add(Dense::new(4, 1).init(backprop::tensor::init::Init::GlorotUniform).seed(4))
        .add(Sigmoid::new())
        .build()?;
    println!("{net}\n");
    let mut sgd = Sgd::new(0.5).momentum(0.9);

    for step in 0..=2000 {
        let y = net.forward(&x, Pass::TRAIN); // 1. forward: every layer caches its input
        let (loss, dl_dy) = MseLoss::new().loss_and_grad(&y, (&target).into())?; // 2. loss and dL/dy
        net.zero_grad();
        net.backward(&dl_dy, InputGrad::NotNeeded); // 3. backward: chain rule, last layer first
        sgd.step(&mut net); // 4. step: θ ← θ − η·(momentum-smoothed dL/dθ)
        if step % 250 == 0 {
            println!("step {step:>4}: loss {loss:.6}");
        }
    }

    println!("\n a  b | target | prediction");
    let y = net.forward(&x, Pass::EVAL);
    for i in 0..4 {
        let (a, b) = (x[&[i, 0]], x[&[i, 1]]);
        println!(" {a}  {b} |   {}    |   {:.3}", target[&[i, 0]], y[&[i, 0]]);
    }
    Ok(())
}

/// Runs the example; an error is printed as its message (not Rust's debug form) and exits 1.
fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
