//! Exports one small model per layer type to ONNX, with inputs and this crate's outputs for them,
//! so that `examples/onnx/check.py` can run each file in ONNX Runtime and compare. Models with
//! recurrent layers get sequences of different lengths (the graph input `input_lengths`), and the
//! encoder–decoder of `examples/seq2seq` is exported as a model struct: two inputs, each with its
//! lengths, and the encoder's final state handed to the decoder inside the graph.
//!
//! Run: `cargo run --release --example onnx_export -- [DIR]` (default `target/onnx`), then
//! `python3 examples/onnx/check.py [DIR]` (needs `pip install onnxruntime onnx safetensors numpy`).

#[path = "seq2seq/model.rs"]
#[allow(dead_code)]
mod seq2seq;
#[path = "common/zoo.rs"]
mod zoo;

use backprop::layers::{
    DecoderOnly, Gru, Lstm, Mode, PositionEmbedding, Rnn, SinusoidalPositions, TransformerEncoderLayer,
};
use backprop::model::Model;
use backprop::onnx::GraphInput;
use backprop::prelude::*;
use std::any::Any;
use std::path::PathBuf;

/// Writes `{name}.weights` (the model's state) and `{name}.safetensors` (the input and this
/// crate's output for it). For a recurrent model (`Some((T, k))`) the sequences get lengths of
/// 1 … T valid steps (ONNX Runtime must stop each where the crate does), written as
/// `input_lengths`.
fn write_case(
    dir: &std::path::Path,
    name: &str,
    model: &mut Sequential,
    x: &Tensor,
    recurrent: Option<(usize, usize)>,
) -> Result<()> {
    let weights = backprop::io::state_dict(model);
    let refs: Vec<(&str, &Tensor)> = weights.iter().map(|(n, t)| (n.as_str(), t)).collect();
    zoo::write_tensors(&dir.join(format!("{name}.weights")), &refs)?;
    let path = dir.join(format!("{name}.safetensors"));
    match recurrent {
        Some((steps, k)) => {
            let lengths: Vec<usize> = (0..x.dim(0)).map(|i| 1 + (i * 7 + k) % steps).collect();
            let y = model.predict_with_lengths(x, &lengths, 256)?;
            let l = Tensor::from_vec(&[lengths.len()], lengths.iter().map(|&v| v as f32).collect())?;
            zoo::write_tensors(&path, &[("input", x), ("input_lengths", &l), ("output", &y)])
        }
        None => {
            let y = model.predict(x, 256)?;
            zoo::write_tensors(&path, &[("input", x), ("output", &y)])
        }
    }
}

fn run() -> Result<()> {
    let arg = std::env::args().nth(1);
    if arg.as_deref().is_some_and(|a| a.starts_with('-')) {
        // (`--help` had been taken as the output folder.)
        println!(
            "usage: onnx_export [OUT_FOLDER]   (default target/onnx): writes every model's .onnx and test data"
        );
        return Ok(());
    }
    let dir = PathBuf::from(arg.unwrap_or_else(|| "target/onnx".into()));
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let models = zoo::zoo()?;
    let count = models.len();
    for (k, (name, mut model, sample, ids)) in models.into_iter().enumerate() {
        zoo::settle(&mut model, &sample, ids);
        let x = zoo::batch(&sample, ids, k);
        // Sequence models take the batch's lengths as a graph input.
        let recurrent = model.layers().any(|l| {
            let l: &dyn Any = l;
            l.is::<Lstm>()
                || l.is::<Gru>()
                || l.is::<Rnn>()
                || l.is::<MultiHeadAttention>()
                || l.is::<TransformerEncoderLayer>()
                || l.is::<backprop::layers::DecoderOnly>()
        });
        backprop::onnx::save(&model, &sample, dir.join(format!("{name}.onnx")))?;
        write_case(&dir, name, &mut model, &x, recurrent.then_some((sample[0], k)))?;
        println!("{name}: {}", model.layers().map(|l| l.describe()).collect::<Vec<_>>().join(" → "));
    }

    // Position tables over sequences (the layers of a Transformer's input).
    let mut positions = Sequential::builder(&[5, 8])
        .add(SinusoidalPositions::new(8))
        .add(PositionEmbedding::new(7, 8))
        .add(LayerNorm::new(8))
        .seed(10)
        .build()?;
    let x = zoo::batch(&[5, 8], false, 10);
    backprop::onnx::save(&positions, &[5, 8], dir.join("positions.onnx"))?;
    write_case(&dir, "positions", &mut positions, &x, None)?;

    // Attention: an encoder of both block kinds over sequences with lengths, and a small GPT
    // (tied head) over token ids with lengths.
    let mut encoder = zoo::attention_encoder().seed(11).build()?;
    let x = zoo::batch(&[6, 8], false, 11);
    backprop::onnx::save(&encoder, &[6, 8], dir.join("attention.onnx"))?;
    write_case(&dir, "attention", &mut encoder, &x, Some((6, 11)))?;
    let mut gpt =
        Sequential::builder(&[6]).add(DecoderOnly::new(9, 8, 2, 2, 16, 6).tied()).seed(12).build()?;
    let ids = zoo::batch(&[6], true, 12);
    backprop::onnx::save(&gpt, &[6], dir.join("gpt.onnx"))?;
    write_case(&dir, "gpt", &mut gpt, &ids, Some((6, 12)))?;

    // Odd models: unusual but valid settings, each exported (or refused by name) and written with
    // its input and this crate's output, like the zoo's.
    let mut odd = 0;
    for seed in 0..zoo::ODD_MODELS {
        let Some((mut model, sample, ids)) = zoo::odd(seed) else { continue };
        zoo::settle(&mut model, &sample, ids);
        let name = format!("odd_{seed}");
        if let Err(e) = backprop::onnx::save(&model, &sample, dir.join(format!("{name}.onnx"))) {
            println!("{name}: refused: {e}");
            continue;
        }
        let x = zoo::batch(&sample, ids, seed as usize);
        let recurrent = seed % 3 == 2; // zoo::odd's sequence models
        write_case(&dir, &name, &mut model, &x, recurrent.then_some((sample[0], seed as usize)))?;
        odd += 1;
    }
    println!("{odd} odd models exported");

    // A model struct: two inputs with their lengths, the encoder's (h_n, c_n) as the decoder's
    // initial state.
    let mut reverser = seq2seq::Reverser::new(4, 6, 11);
    let data = seq2seq::reversal_data(5, 5, 12)?;
    let inputs = data.named_inputs();
    let y = reverser.forward_batch(inputs, Mode::Eval)?;
    let specs = [GraphInput::new("source", &[5]), GraphInput::new("decoder_in", &[5])];
    backprop::onnx::save_model(&reverser, &reverser, &specs, dir.join("seq2seq_reverser.onnx"))?;
    let lengths = |name: &str| {
        let l = inputs.lengths(name).expect("lengths");
        Tensor::from_vec(&[l.len()], l.iter().map(|&v| v as f32).collect())
    };
    let (source_lengths, decoder_lengths) = (lengths("source")?, lengths("decoder_in")?);
    zoo::write_tensors(
        &dir.join("seq2seq_reverser.safetensors"),
        &[
            ("source", inputs.get("source")?),
            ("source_lengths", &source_lengths),
            ("decoder_in", inputs.get("decoder_in")?),
            ("decoder_in_lengths", &decoder_lengths),
            ("digits", y.get("digits")?),
        ],
    )?;
    let weights = backprop::io::state_dict(&reverser);
    let refs: Vec<(&str, &Tensor)> = weights.iter().map(|(n, t)| (n.as_str(), t)).collect();
    zoo::write_tensors(&dir.join("seq2seq_reverser.weights"), &refs)?;
    println!("seq2seq_reverser: Embedding → LSTM ──(h_n, c_n)──▶ LSTM → Dense, with lengths");
    // The zoo's, the position tables, the attention encoder, the GPT and the model struct; then
    // the odd ones.
    println!("wrote {} models and {odd} odd ones to {}", count + 4, dir.display());
    Ok(())
}

/// Runs the example; an error is printed as its message (not Rust's debug form) and exits 1.
fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
