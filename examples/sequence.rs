//! Backprop through time on a task that needs memory: adding two binary numbers fed bit by bit.
//!
//! At step `t` the network sees bit `t` of `a` and of `b` (least significant first) and must say
//! bit `t` of `a + b`. That bit is `a_t ⊕ b_t ⊕ carry`, and the carry depends on every earlier
//! step — so a network without memory cannot know it. The example trains a per-step feed-forward
//! net and RNN, LSTM and GRU layers of the same width, then measures how the gradient reaching
//! step `t` shrinks with distance (vanishing gradients), and what gradient clipping changes.
//!
//! Run: `cargo run --release --example sequence`. Its output is reproduced in
//! `docs/backprop.md` §12.

use backprop::layers::{StateMut, named_params_mut};
use backprop::optim::global_grad_norm;
use backprop::prelude::*;
use backprop::tensor::rng;
use rand::RngExt;

const BITS: usize = 16;
const HIDDEN: usize = 16;

/// `n` additions of two random `BITS − 1`-bit numbers (so the sum fits): inputs `[n, T, 2]`,
/// targets `[n, T, 1]`, bits least significant first.
pub fn additions(n: usize, seed: u64) -> Dataset {
    let mut r = rng(seed);
    let (mut x, mut y) = (Vec::with_capacity(n * BITS * 2), Vec::with_capacity(n * BITS));
    for _ in 0..n {
        let (a, b) = (r.random_range(0..1u32 << (BITS - 1)), r.random_range(0..1u32 << (BITS - 1)));
        let sum = a + b;
        for t in 0..BITS {
            x.push((a >> t & 1) as f32);
            x.push((b >> t & 1) as f32);
            y.push((sum >> t & 1) as f32);
        }
    }
    let inputs = Tensor::from_vec(&[n, BITS, 2], x).expect("n·T·2 values");
    Dataset::regression(inputs, Tensor::from_vec(&[n, BITS, 1], y).expect("n·T values")).expect("n samples")
}

/// A recurrent (or, with `kind = "feed-forward"`, per-step) network with one output logit per step.
fn model(kind: &str, seed: u64) -> Sequential {
    let b = Sequential::builder(&[BITS, 2]);
    let b = match kind {
        "RNN" => b.add(Rnn::new(2, HIDDEN)),
        "LSTM" => b.add(Lstm::new(2, HIDDEN)),
        "GRU" => b.add(Gru::new(2, HIDDEN)),
        _ => b.add(Dense::new(2, HIDDEN)).add(Tanh::new()), // sees one step at a time: no memory
    };
    b.add(Dense::new(HIDDEN, 1)).seed(seed).build().expect("a valid network")
}

/// Per-bit accuracy and whole-sum accuracy (all `T` bits right) on `data`.
fn accuracy(net: &mut Sequential, data: &Dataset) -> (f32, f32) {
    let logits = net.predict(data.inputs(), 500).expect("the data fit the model");
    let Targets::Values(t) = data.targets() else { unreachable!("regression targets") };
    let right: Vec<bool> =
        logits.data().iter().zip(t.data()).map(|(&z, &t)| (z > 0.0) == (t > 0.5)).collect();
    let bits = right.iter().filter(|&&r| r).count() as f32 / right.len() as f32;
    let sums = right.chunks(BITS).filter(|s| s.iter().all(|&r| r)).count() as f32 / data.len() as f32;
    (bits, sums)
}

/// Trains the four networks; prints and returns each one's (per-bit, whole-sum) accuracy after
/// every epoch (docs/backprop.md §12's table).
pub fn train_and_report(train: &Dataset, test: &Dataset) -> Vec<(&'static str, Vec<(f32, f32)>)> {
    let loss = BceWithLogitsLoss::new();
    println!(
        "Per-bit and whole-sum accuracy on 1,000 held-out additions (hidden width {HIDDEN}, Adam 0.01, clip 1.0):\n"
    );
    println!("{:<13} {}", "epoch", (1..=10).map(|e| format!("{e:>11}")).collect::<String>());
    let mut table = Vec::new();
    for kind in ["feed-forward", "RNN", "LSTM", "GRU"] {
        let mut net = model(kind, 1);
        let mut row = String::new();
        let mut accs = Vec::new();
        let mut adam = Adam::new(0.01);
        for epoch in 0..10 {
            let options = FitOptions::new().epochs(1).batch_size(32).seed(2 + epoch).clip_grad_norm(1.0);
            net.fit(train, &loss, &mut adam, options.verbose(false)).expect("training");
            accs.push(accuracy(&mut net, test));
        }
        for (bits, sums) in &accs {
            row += &format!(" {:>5.1}/{:>4.1}", 100.0 * bits, 100.0 * sums);
        }
        println!("{kind:<13}{row}");
        table.push((kind, accs));
    }
    println!("\n(each cell: % of bits right / % of whole sums right)");
    table
}

/// ‖dL/dx_t‖ for a loss on the last step only, at initialisation: how much gradient reaches each
/// earlier step.
/// The table of docs/backprop.md §12: for each layer kind, `‖dL/dx_t‖ / ‖dL/dx_49‖` at the steps
/// `t = 49, 44, 39, 29, 19, 0` (a loss on step 49 only), at initialisation; printed, and returned.
pub fn gradient_by_distance() -> Vec<(&'static str, Vec<f32>)> {
    const T: usize = 50;
    let mut table = Vec::new();
    let x = Tensor::rand_uniform(&[64, T, 2], 0.0, 1.0, 3).map(|v| v.round());
    let mut target = Tensor::full(&[64, T, 1], f32::NAN);
    for n in 0..64 {
        target.data_mut()[n * T + T - 1] = (n % 2) as f32; // only the last step has a target
    }
    let loss = BceWithLogitsLoss::new().ignore_nan_targets();
    println!(
        "\nGradient reaching step t from a loss on step {} (norm of dL/dx_t, relative to t = {}), at initialisation:\n",
        T - 1,
        T - 1
    );
    let distances = [0, 5, 10, 20, 30, 49];
    println!(
        "{:<26}{}",
        "",
        distances.iter().map(|d| format!("{:>10}", format!("t = {}", T - 1 - d))).collect::<String>()
    );
    for kind in ["RNN", "LSTM", "GRU", "LSTM, forget-gate bias 3"] {
        let b = Sequential::builder(&[T, 2]);
        let b = match kind {
            "RNN" => b.add(Rnn::new(2, HIDDEN)),
            "GRU" => b.add(Gru::new(2, HIDDEN)),
            _ => b.add(Lstm::new(2, HIDDEN)),
        };
        let mut net = b.add(Dense::new(HIDDEN, 1)).seed(4).build().expect("a valid network");
        if kind.contains("forget") {
            // f = σ(3) ≈ 0.95: the cell path starts nearly open (rows H…2H are the forget gate).
            net.visit_mut(&mut |name, s| {
                if let (StateMut::Param(p), "0.bias_ih_l0") = (s, name) {
                    p.value.data_mut()[HIDDEN..2 * HIDDEN].fill(3.0);
                }
            });
        }
        let y = net.forward(&x, Pass::TRAIN);
        let (_, g) = loss.loss_and_grad(&y, (&target).into()).expect("shapes fit");
        let dx = net.backward_input(&g);
        let norm = |t: usize| {
            (0..64).map(|n| dx.outer(n)[t * 2..][..2].iter().map(|v| v * v).sum::<f32>()).sum::<f32>().sqrt()
        };
        let last = norm(T - 1);
        let ratios: Vec<f32> = distances.iter().map(|&d| norm(T - 1 - d) / last).collect();
        let cells: String = ratios.iter().map(|r| format!("{r:>10.1e}")).collect();
        println!("{kind:<26}{cells}");
        table.push((kind, ratios));
    }
    table
}

/// A ReLU RNN whose recurrent weights start 4× too large, so that gradients explode through time,
/// trained with and without clipping the gradient's global norm.
/// Trains the exploding ReLU RNN without and with clipping; prints and returns, for each, the
/// largest gradient norm seen and the (per-bit, whole-sum) accuracy, `None` if it diverged.
pub fn clipping(train: &Dataset, test: &Dataset) -> Vec<(f32, Option<(f32, f32)>)> {
    println!(
        "\nGradient clipping (ReLU RNN with W_hh scaled by 4 at the start, SGD with learning rate 0.05, 5 epochs):\n"
    );
    let loss = BceWithLogitsLoss::new();
    let mut rows = Vec::new();
    for clip in [None, Some(1.0)] {
        let mut net = Sequential::builder(&[BITS, 2])
            .add(Rnn::relu(2, HIDDEN))
            .add(Dense::new(HIDDEN, 1))
            .seed(5)
            .build()
            .expect("a valid network");
        net.visit_mut(&mut |name, s| {
            if let (StateMut::Param(p), "0.weight_hh_l0") = (s, name) {
                p.value.scale(4.0); // a recurrent matrix that amplifies: gradients grow step after step
            }
        });
        let mut sgd = Sgd::new(0.05);
        let mut largest = 0.0f32;
        let mut stopped = None;
        'epochs: for epoch in 0..5 {
            for start in (0..train.len()).step_by(32) {
                let idx: Vec<usize> = (start..(start + 32).min(train.len())).collect();
                let batch = train.subset(&idx);
                let Targets::Values(t) = batch.targets() else { unreachable!() };
                let l =
                    net.loss_and_backward(batch.inputs(), t.into(), &loss, Mode::Train).expect("shapes fit");
                let mut params = named_params_mut(&mut net);
                largest = largest.max(global_grad_norm(&params));
                if let Some(c) = clip {
                    backprop::optim::clip_grad_norm(&mut params, c);
                }
                sgd.step_params(&mut params);
                if !l.is_finite() {
                    stopped = Some(epoch + 1);
                    break 'epochs;
                }
            }
        }
        let finite = {
            let mut ok = true;
            net.visit_mut(&mut |_, s| {
                if let StateMut::Param(p) = s {
                    ok &= p.value.all_finite();
                }
            });
            ok
        };
        let what = match clip {
            None => "no clipping      ".to_string(),
            Some(c) => format!("clip norm at {c:<4}"),
        };
        let accuracies = (finite && stopped.is_none()).then(|| accuracy(&mut net, test));
        let result = match accuracies {
            Some((bits, sums)) => {
                format!("{:.1} % of bits, {:.1} % of sums right", 100.0 * bits, 100.0 * sums)
            }
            None => format!("diverged (non-finite loss in epoch {})", stopped.unwrap_or(0)),
        };
        println!("{what}: largest gradient norm seen {largest:>9.2e}; {result}");
        rows.push((largest, accuracies));
    }
    rows
}

pub fn main() {
    backprop::alloc_tuning::tune_allocator();
    let (train, test) = (additions(4000, 1), additions(1000, 2));
    let table = train_and_report(&train, &test);
    // What the example is for: memory is needed, and the recurrent layers have it.
    for (kind, accs) in table {
        let bits = accs.last().map_or(0.0, |a| a.0);
        let ok = if kind == "feed-forward" { bits < 0.7 } else { bits > 0.99 };
        assert!(ok, "{kind}: {:.1} % of bits right", 100.0 * bits);
    }
    gradient_by_distance();
    clipping(&train, &test);
}
