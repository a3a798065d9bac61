//! Where does the time of a training step go? Forward and backward time of every layer of the
//! reference convnet, averaged over 50 steps, each layer run on its own in list order (the
//! reference order: no in-place activations, no pooling before ReLU), the first layer's input
//! gradient skipped as in training.
//!
//! ```sh
//! cargo run --release --example profile_layers -- 64        # batch 64, training
//! cargo run --release --example profile_layers -- 256 eval  # batch 256, inference only
//! ```

use backprop::prelude::*;
use std::time::Instant;

/// Forward and backward time of every layer of the reference convnet.
#[derive(clap::Parser, Debug)]
struct Cli {
    /// Images per batch.
    #[arg(default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    batch: u32,
    /// `train` times forward and backward, `eval` the forward pass only.
    #[arg(default_value = "train", value_parser = ["train", "eval"])]
    mode: String,
}

fn main() {
    // A typo is an error, not the default (`abc` had run with batch 64).
    let cli = <Cli as clap::Parser>::parse();
    backprop::alloc_tuning::tune_allocator();
    let batch = cli.batch as usize;
    let mode = if cli.mode == "eval" { Mode::Eval } else { Mode::Train };
    let mut net = Sequential::builder(&[1, 28, 28])
        .add(Conv2d::new(1, 32, 3))
        .add(Relu::new())
        .add(MaxPool2d::new(2))
        .add(Conv2d::new(32, 64, 3))
        .add(Relu::new())
        .add(MaxPool2d::new(2))
        .add(Flatten::new())
        .add(Dense::new(1600, 10))
        .build()
        .expect("the reference network");
    let x = Tensor::rand_uniform(&[batch, 1, 28, 28], 0.0, 1.0, 0);
    let (warmup, steps) = (5, 50);
    let n = net.len();
    let (mut fwd, mut bwd) = (vec![0.0f64; n], vec![0.0f64; n]);
    for step in 0..warmup + steps {
        let timed = step >= warmup;
        let mut h = x.clone();
        for (i, time) in fwd.iter_mut().enumerate() {
            let t = Instant::now();
            h = net.layer_mut(i).forward(&h, mode.into());
            if timed {
                *time += t.elapsed().as_secs_f64();
            }
        }
        if mode == Mode::Eval {
            continue;
        }
        let mut g = Tensor::randn(h.shape(), 0.0, 1.0, 1);
        for i in (0..n).rev() {
            let t = Instant::now();
            let want = if i == 0 { InputGrad::NotNeeded } else { InputGrad::Needed };
            if let Some(dx) = net.layer_mut(i).backward(&g, want) {
                g = dx;
            }
            if timed {
                bwd[i] += t.elapsed().as_secs_f64();
            }
        }
    }
    println!("batch {batch}, {mode:?} mode, mean of {steps} steps (layers in list order):");
    let ms = |s: f64| 1e3 * s / steps as f64;
    for (i, layer) in net.layers().enumerate() {
        println!(
            "  {:<24} forward {:>8.3} ms   backward {:>8.3} ms",
            layer.describe(),
            ms(fwd[i]),
            ms(bwd[i])
        );
    }
    let total: f64 = fwd.iter().chain(&bwd).sum::<f64>() / steps as f64;
    println!("  total {:.3} ms per step: {:.0} images/s", 1e3 * total, batch as f64 / total);
}
