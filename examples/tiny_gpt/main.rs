//! A tiny GPT: a decoder-only Transformer ([`DecoderOnly`], head tied to the token table) learns
//! to predict the next character of this crate's own documentation (`docs/*.md`, bundled: no
//! download), and is compared with the classic baseline, a bigram model (the next character's
//! frequency after the current one, fitted on the same training text).
//!
//! ```sh
//! cargo run --release --example tiny_gpt               # 6 epochs, about 75 s on 2 cores
//! cargo run --release --example tiny_gpt -- --epochs 2  # quicker
//! ```
//!
//! It prints the held-out loss (nats per character) after each epoch beside the bigram's and the
//! unigram's, then a sample of text generated from a prompt. The last tenth of the text is held
//! out (never trained on).

mod lm;

use backprop::layers::DecoderOnly;
use backprop::prelude::*;
use lm::{baselines, corpus, encode, windows};
use rand::RngExt;

/// Steps of context.
const T: usize = 64;

/// A character-level GPT trained on this crate's documentation, beside a bigram baseline.
#[derive(clap::Parser, Debug)]
struct Cli {
    /// Passes over the training text.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=1000))]
    epochs: u32,
}

fn run() -> Result<()> {
    let epochs = <Cli as clap::Parser>::parse().epochs;
    let text = corpus();
    let (chars, ids) = encode(&text);
    let id = |c: char| chars.binary_search(&c).expect("in the vocabulary");
    let split = ids.len() * 9 / 10;
    let (train_ids, test_ids) = (&ids[..split], &ids[split..]);
    let (train, test) = (windows(train_ids, T, T / 2)?, windows(test_ids, T, T)?);
    let (unigram, bigram) = baselines(train_ids, test_ids, chars.len());
    println!(
        "{} characters of docs/*.md, {} distinct; training on {} windows of {T}, holding out the last {}",
        ids.len(),
        chars.len(),
        train.len(),
        test_ids.len()
    );
    let gpt = DecoderOnly::new(chars.len(), 64, 4, 2, 256, T).tied().dropout(0.1);
    let mut model = Sequential::builder(&[T]).add(gpt).seed(1).build()?;
    let params: usize = model.params().iter().map(|p| p.len()).sum();
    println!("DecoderOnly: 2 causal pre-LN blocks, 4 heads, embed 64, tied head: {params} parameters");
    println!("baselines on the held-out text: unigram {unigram:.3}, bigram {bigram:.3} nats per character");
    let loss = CrossEntropyLoss::new();
    let mut adam = AdamW::new(3e-3).weight_decay(0.01);
    for epoch in 1..=epochs {
        let start = std::time::Instant::now();
        let opts = FitOptions::new().epochs(1).batch_size(32).seed(epoch as u64).verbose(false);
        let history = model.fit(&train, &loss, &mut adam, opts)?;
        let held_out = model.evaluate(&test, &loss, 64)?.loss;
        println!(
            "epoch {epoch}/{epochs}: train {:.3}, held-out {held_out:.3} nats per character ({:.1} s)",
            history.epochs[0].train_loss,
            start.elapsed().as_secs_f64()
        );
    }
    // Generation: the most likely few characters, sampled at temperature 0.8, from a prompt.
    let prompt = "The gradient of ";
    let mut context: Vec<usize> = prompt.chars().map(id).collect();
    let mut rng = backprop::tensor::rng(3);
    for _ in 0..160 {
        // The last (up to) T characters, padded at the end to T: the model is causal, so the
        // logits at the last real step do not see the padding.
        let mut window: Vec<f32> = context.iter().rev().take(T).rev().map(|&i| i as f32).collect();
        let steps = window.len();
        window.resize(T, 0.0);
        let logits = model.predict(&Tensor::from_vec(&[1, T], window)?, 1)?;
        let last = &logits.data()[(steps - 1) * chars.len()..][..chars.len()];
        let max = last.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let weights: Vec<f64> = last.iter().map(|&v| (((v - max) / 0.8) as f64).exp()).collect();
        let mut pick = rng.random::<f64>() * weights.iter().sum::<f64>();
        let next = weights.iter().position(|&w| {
            pick -= w;
            pick <= 0.0
        });
        context.push(next.unwrap_or(chars.len() - 1));
    }
    println!("\nsample: {}", context.iter().map(|&i| chars[i]).collect::<String>());
    Ok(())
}

/// Runs the example; an error is printed as its message (not Rust's debug form) and exits 1.
fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
