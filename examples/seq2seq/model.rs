//! An encoder–decoder that reverses strings of digits: the model struct and its data, shared by
//! `examples/seq2seq/main.rs` and `tests/models.rs`.
//!
//! ```text
//! source  "3 1 4"  → Embedding → LSTM encoder ──(h_n, c_n)──┐
//! decoder input  "<go> 4 1" → Embedding → LSTM decoder (starts from the encoder's state) → Dense → "4 1 3"
//! ```
//!
//! Backward runs the same road in reverse: the head's `dL/dy` goes into the decoder, whose
//! `backward_with_state` returns `dL/dh₀`, `dL/dc₀` of its initial state — which *is* the encoder's
//! final state, so those are the encoder's `dL/dh_n`, `dL/dc_n`. The encoder's outputs are not
//! used (`dL/dy = None`); it learns only through its state.

use backprop::layers::{InputGrad, Lstm, Mode, RecurrentState, backward_input};
use backprop::model::{Inputs, Model, Shapes, Tensors};
use backprop::prelude::*;

/// Digits 0–9, then the decoder's start token.
pub const GO: usize = 10;
/// Token ids: ten digits and `GO`.
pub const VOCAB: usize = 11;

/// The encoder–decoder.
pub struct Reverser {
    /// Source digits → vectors.
    pub source_embed: Embedding,
    /// Reads the source; only its final state is used.
    pub encoder: Lstm,
    /// Decoder input tokens → vectors.
    pub target_embed: Embedding,
    /// Writes the reversed string, starting from the encoder's final state.
    pub decoder: Lstm,
    /// Decoder state → a score per digit.
    pub head: Dense,
}

backprop::visit_fields!(Reverser { source_embed, encoder, target_embed, decoder, head });

impl Reverser {
    /// A model with `embed`-wide token vectors and `hidden` LSTM units, every weight drawn from
    /// `seed` and its own name (so the two LSTMs start differently).
    pub fn new(embed: usize, hidden: usize, seed: u64) -> Reverser {
        let mut model = Reverser {
            source_embed: Embedding::new(VOCAB, embed),
            encoder: Lstm::new(embed, hidden),
            target_embed: Embedding::new(VOCAB, embed),
            decoder: Lstm::new(embed, hidden),
            head: Dense::new(hidden, 10),
        };
        backprop::layers::redraw_params(&mut model, seed);
        model
    }

    /// The encoder's final state for `source [N, T]` with its lengths.
    fn encode(&mut self, inputs: &Inputs, mode: Mode) -> backprop::Result<RecurrentState> {
        let pass = inputs.pass("source", mode)?;
        let e = self.source_embed.forward(inputs.get("source")?, pass);
        let (_, state) = self.encoder.forward_with_state(&e, None, pass)?;
        Ok(state)
    }

    /// Greedy decoding without teacher forcing: feeds back its own best digit, one step at a
    /// time, `steps` times. Returns the digits `[N][steps]`.
    pub fn reverse(
        &mut self,
        source: &Tensor,
        lengths: &[usize],
        steps: usize,
    ) -> backprop::Result<Vec<Vec<usize>>> {
        let inputs = Inputs::new().with_lengths("source", source.clone(), lengths.to_vec());
        let mut state = self.encode(&inputs, Mode::Eval)?;
        let n = source.dim(0);
        let mut token = Tensor::full(&[n, 1], GO as f32);
        let mut out = vec![Vec::new(); n];
        for _ in 0..steps {
            let d = self.target_embed.forward(&token, Pass::EVAL);
            let (y, next) = self.decoder.forward_with_state(&d, Some(&state), Pass::EVAL)?;
            let logits = self.head.forward(&y, Pass::EVAL).reshape(&[n, 10]);
            for (s, digit) in logits.argmax_axis(1).into_iter().enumerate() {
                out[s].push(digit);
                token.data_mut()[s] = digit as f32;
            }
            state = next;
        }
        Ok(out)
    }
}

impl Model for Reverser {
    fn forward_batch(&mut self, inputs: &Inputs, mode: Mode) -> backprop::Result<Tensors> {
        let state = self.encode(inputs, mode)?;
        let pass = inputs.pass("decoder_in", mode)?;
        let d = self.target_embed.forward(inputs.get("decoder_in")?, pass);
        let (y, _) = self.decoder.forward_with_state(&d, Some(&state), pass)?;
        Ok(Tensors::one("digits", self.head.forward(&y, pass)))
    }

    fn backward_batch(&mut self, grads: &Tensors, _: InputGrad) -> backprop::Result<Tensors> {
        let dy = backward_input(&mut self.head, grads.get("digits")?);
        let (dd, d_state) = self.decoder.backward_with_state(Some(&dy), None, InputGrad::Needed);
        self.target_embed.backward(&dd.expect("asked for"), InputGrad::NotNeeded);
        // The decoder's dL/dh₀, dL/dc₀ are the encoder's dL/dh_n, dL/dc_n.
        let (de, _) = self.encoder.backward_with_state(None, Some(&d_state), InputGrad::Needed);
        self.source_embed.backward(&de.expect("asked for"), InputGrad::NotNeeded);
        Ok(Tensors::new()) // token ids have no gradient
    }

    /// `digits [N, T, 10]` for `decoder_in [N, T]`: lets `fit` check the data before training
    /// and the ONNX export declare its output.
    fn output_shapes(&self, inputs: &[(String, Vec<usize>)]) -> Option<backprop::Result<Shapes>> {
        let decoder_in = inputs.iter().find(|(n, _)| n == "decoder_in")?;
        let shape = (|| {
            let d = self.target_embed.output_shape(&decoder_in.1)?;
            let y = self.decoder.output_shape(&d)?;
            self.head.output_shape(&y)
        })();
        Some(shape.map(|s| vec![("digits".to_string(), s)]))
    }
}

/// The same model as an ONNX graph: each input's lengths are graph inputs (`source_lengths`,
/// `decoder_in_lengths`), and the encoder's final `(h, c)` is the decoder's `initial_h`,
/// `initial_c` — the forward pass above, operator by operator.
impl backprop::onnx::OnnxModel for Reverser {
    fn export_model(&self, g: &mut backprop::onnx::Graph) -> backprop::Result<Vec<(String, String)>> {
        let source = g.input("source")?;
        let e = g.layer(&self.source_embed, &source, None)?;
        let encoded = g.recurrent(&self.encoder, &e, Some("source"), None, true)?;
        let decoder_in = g.input("decoder_in")?;
        let d = g.layer(&self.target_embed, &decoder_in, None)?;
        let initial = (encoded.h.as_str(), encoded.c.as_deref());
        let decoded = g.recurrent(&self.decoder, &d, Some("decoder_in"), Some(initial), false)?;
        let digits = g.layer(&self.head, &decoded.y, None)?;
        Ok(vec![("digits".to_string(), digits)])
    }
}

/// `n` random digit strings of 1 to `max_len` digits, padded to `max_len`: the inputs
/// ("source" and the teacher-forced "decoder_in" = GO then the reversed string without its
/// last digit, both with their lengths) and the targets (the reversed string, NaN where padded).
pub fn reversal_data(n: usize, max_len: usize, seed: u64) -> backprop::Result<Dataset> {
    use rand::RngExt;
    let mut rng = backprop::tensor::rng(seed);
    let (mut source, mut dec_in, mut target) =
        (Tensor::zeros(&[n, max_len]), Tensor::zeros(&[n, max_len]), Tensor::full(&[n, max_len], f32::NAN));
    let mut lengths = Vec::with_capacity(n);
    for s in 0..n {
        let len = rng.random_range(1..=max_len);
        let digits: Vec<usize> = (0..len).map(|_| rng.random_range(0..10)).collect();
        for t in 0..len {
            let reversed = digits[len - 1 - t];
            source.data_mut()[s * max_len + t] = digits[t] as f32;
            target.data_mut()[s * max_len + t] = reversed as f32;
            dec_in.data_mut()[s * max_len + t] = if t == 0 { GO as f32 } else { digits[len - t] as f32 };
        }
        lengths.push(len);
    }
    let inputs = Inputs::new().with_lengths("source", source, lengths.clone()).with_lengths(
        "decoder_in",
        dec_in,
        lengths,
    );
    Dataset::from_inputs(inputs, Targets::Values(target))
}
