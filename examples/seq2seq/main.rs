//! An encoder–decoder written as a struct of layers (`model.rs`), trained with the same `fit` as a
//! `Sequential`: it learns to reverse strings of 1 to 8 digits.
//!
//! ```text
//! cargo run --release --example seq2seq
//! ```
//!
//! The strings have different lengths, so every batch carries its samples' lengths: the encoder's
//! final state is each string's last digit, not the padding's. The decoder starts from that state
//! and is trained with teacher forcing (it reads the true previous digit); the accuracy printed at
//! the end is measured without it, by greedy decoding: whole strings reversed exactly.

mod model;

use backprop::prelude::*;
use model::{Reverser, reversal_data};

fn run() -> backprop::Result<()> {
    if let Some(arg) = std::env::args().nth(1) {
        return Err(backprop::Error::invalid(format!(
            "seq2seq takes no arguments (its settings are fixed in the source), got {arg:?}"
        )));
    }
    let max_len = 8;
    let train = reversal_data(4000, max_len, 1)?;
    let test = reversal_data(500, max_len, 2)?;
    let mut net = Reverser::new(16, 96, 3);
    let history = backprop::train::fit(
        &mut net,
        &train,
        &CrossEntropyLoss::new(),
        &mut Adam::new(0.01),
        FitOptions::new()
            .epochs(20)
            .batch_size(32)
            .seed(4)
            .clip_grad_norm(5.0)
            .schedule(Schedule::cosine(20, 1e-4)?),
    )?;
    let last = history.last().expect("20 epochs");
    println!("train loss after {} epochs: {:.4}", history.epochs.len(), last.train_loss);

    let source = test.named_inputs().get("source")?;
    let lengths = test.named_inputs().lengths("source").expect("lengths");
    let decoded = net.reverse(source, lengths, max_len)?;
    let exact = (0..test.len())
        .filter(|&s| {
            let l = lengths[s];
            (0..l).all(|t| decoded[s][t] == source[&[s, l - 1 - t]] as usize)
        })
        .count();
    for s in 0..3 {
        let l = lengths[s];
        let digits = |v: Vec<usize>| v.iter().map(|d| d.to_string()).collect::<String>();
        let src = digits((0..l).map(|t| source[&[s, t]] as usize).collect());
        println!("{src:>8} → {}", digits(decoded[s][..l].to_vec()));
    }
    println!(
        "test strings reversed exactly (greedy decoding): {exact}/{} = {:.1}%",
        test.len(),
        100.0 * exact as f64 / test.len() as f64
    );
    Ok(())
}

/// Runs the example; an error is printed as its message (not Rust's debug form) and exits 1.
fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
