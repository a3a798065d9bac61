//! ONNX export, checked without Python: the file is decoded with the crate's own protobuf reader
//! and its graph compared with what the mapping promises (opset, operators in order, weights
//! transposed or gate-reordered, a free batch axis, sequence lengths as graph inputs); layers
//! without a mapping are errors. Numerically, against ONNX Runtime 1.32 (a committed fixture,
//! `tests/fixtures/make_onnx_fixture.py`): an LSTM chain on padded sequences of different lengths
//! and a model struct whose encoder hands its final state to the decoder inside the graph; 60
//! seeded odd models (unusual strides, paddings, dilations, pools, residual and recurrent layers). Every
//! layer type is compared by `examples/onnx/check.py` (docs/onnx.md).

mod common;
#[path = "../examples/seq2seq/model.rs"]
#[allow(dead_code)]
mod seq2seq;
#[path = "../examples/common/zoo.rs"]
mod zoo;

use backprop::layers::{Mode, named_params};
use backprop::model::{Inputs, Model};
use backprop::onnx::proto::{Value, decode};
use backprop::prelude::*;

/// The fields of one message with number `field`, as nested byte strings.
fn messages(buf: &[u8], field: u32) -> Vec<&[u8]> {
    decode(buf)
        .unwrap()
        .into_iter()
        .filter_map(|(f, v)| match v {
            Value::Bytes(b) if f == field => Some(b),
            _ => None,
        })
        .collect()
}

fn string(buf: &[u8], field: u32) -> String {
    messages(buf, field).first().map(|b| String::from_utf8(b.to_vec()).unwrap()).unwrap_or_default()
}

fn int(buf: &[u8], field: u32) -> Vec<u64> {
    decode(buf)
        .unwrap()
        .into_iter()
        .filter_map(|(f, v)| match v {
            Value::Varint(x) if f == field => Some(x),
            _ => None,
        })
        .collect()
}

struct Graph {
    ops: Vec<String>,
    /// Initializers: name → (dims, values).
    weights: Vec<(String, Vec<u64>, Vec<f32>)>,
    input_dims: Vec<String>,
    /// The graph's input names, in order.
    inputs: Vec<String>,
    /// Each node's input names.
    node_inputs: Vec<Vec<String>>,
}

fn read(bytes: &[u8]) -> Graph {
    assert_eq!(int(bytes, 1), [8], "IR version");
    let opset = messages(bytes, 8)[0];
    assert_eq!(
        (string(opset, 1), int(opset, 2)),
        (String::new(), vec![17]),
        "the default domain at opset 17"
    );
    let graph = messages(bytes, 7)[0];
    let ops = messages(graph, 1).iter().map(|n| string(n, 4)).collect();
    let weights = messages(graph, 5)
        .iter()
        .map(|t| {
            let raw = messages(t, 9)[0];
            let values = raw.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
            (string(t, 8), int(t, 1), values)
        })
        .collect();
    // input → type → tensor_type → shape → dims: each a dim_param (2) or a dim_value (1).
    let input = messages(graph, 11)[0];
    let shape = messages(messages(messages(input, 2)[0], 1)[0], 2)[0];
    let input_dims = messages(shape, 1)
        .iter()
        .map(|d| match messages(d, 2).first() {
            Some(p) => String::from_utf8(p.to_vec()).unwrap(),
            None => int(d, 1)[0].to_string(),
        })
        .collect();
    let inputs = messages(graph, 11).iter().map(|i| string(i, 1)).collect();
    let node_inputs = messages(graph, 1)
        .iter()
        .map(|n| messages(n, 1).iter().map(|i| String::from_utf8(i.to_vec()).unwrap()).collect())
        .collect();
    Graph { ops, weights, input_dims, inputs, node_inputs }
}

#[test]
fn a_dense_network_is_matmuls_with_transposed_weights() {
    let model =
        Sequential::builder(&[3]).add(Dense::new(3, 2)).add(Relu::new()).add(Dense::new(2, 4)).seed(1);
    let model = model.add(Softmax::new()).build().unwrap();
    let g = read(&backprop::onnx::to_bytes(&model, &[3]).unwrap());
    assert_eq!(g.ops, ["MatMul", "Add", "Relu", "MatMul", "Add", "Softmax", "Identity"]);
    assert_eq!(g.input_dims, ["batch", "3"], "the batch axis is free");
    let w = &named_params(&model)[0].1.value; // [2, 3]
    let (_, dims, values) = &g.weights[0];
    assert_eq!(dims, &[3, 2], "Wᵀ is [in, out]");
    for (i, o) in [(0, 0), (1, 0), (2, 1)] {
        assert_eq!(values[i * 2 + o], w.data()[o * 3 + i], "Wᵀ[{i}, {o}] = W[{o}, {i}]");
    }
}

#[test]
fn recurrent_gates_are_reordered_for_onnx() {
    let model = Sequential::builder(&[4, 2]).add(Lstm::new(2, 3)).seed(2).build().unwrap();
    let g = read(&backprop::onnx::to_bytes(&model, &[4, 2]).unwrap());
    assert_eq!(g.ops, ["Transpose", "Min", "Max", "Cast", "LSTM", "Squeeze", "Transpose", "Identity"]);
    // The batch's lengths are a graph input, clamped to int32's range (a cast alone wraps 2³² + 2
    // to 2), cast to int32 and wired to sequence_lens (input 4).
    assert_eq!(g.inputs, ["input", "input_lengths"]);
    assert_eq!(g.node_inputs[1][0], "input_lengths");
    assert!(g.node_inputs[1][1].starts_with("int32_max_") && g.node_inputs[2][1].starts_with("int32_min_"));
    assert!(
        g.node_inputs[4][4].starts_with("cast_"),
        "sequence_lens is the cast lengths: {:?}",
        g.node_inputs[4]
    );
    let w_ih = &named_params(&model)[0].1.value; // [4H, F], blocks i, f, g, o
    let (_, dims, w) = &g.weights[0];
    assert_eq!(dims, &[1, 12, 2]);
    let block = |k: usize| &w_ih.data()[k * 6..][..6];
    // ONNX wants i, o, f, c(= g).
    assert_eq!([&w[0..6], &w[6..12], &w[12..18], &w[18..24]], [block(0), block(3), block(1), block(2)]);
    let gru = Sequential::builder(&[4, 2]).add(Gru::new(2, 3).last_step_only()).seed(3).build().unwrap();
    let g = read(&backprop::onnx::to_bytes(&gru, &[4, 2]).unwrap());
    assert_eq!(
        g.ops,
        ["Transpose", "Min", "Max", "Cast", "GRU", "Squeeze", "Identity"],
        "the last step is GRU's Y_h"
    );
    let w_ih = &named_params(&gru)[0].1.value; // blocks r, z, n
    let w = &g.weights[0].2;
    assert_eq!([&w[0..6], &w[6..12]], [&w_ih.data()[6..12], &w_ih.data()[0..6]], "z before r");
}

#[test]
fn cnn_and_residual_graphs() {
    let body =
        Sequential::new().add(Conv2d::new(2, 2, 3).padding(1)).add(BatchNorm2d::new(2)).add(Relu::new());
    let model = Sequential::builder(&[1, 6, 6])
        .add(Conv2d::new(1, 2, 3).padding(1))
        .add(Residual::new(body))
        .add(MaxPool2d::new(2))
        .add(GlobalAvgPool::new())
        .add(Dropout::new(0.1))
        .add(Dense::new(2, 2).no_bias())
        .build()
        .unwrap();
    let g = read(&backprop::onnx::to_bytes(&model, &[1, 6, 6]).unwrap());
    let expected = [
        "Conv",
        "Conv",
        "BatchNormalization",
        "Relu",
        "Add",
        "MaxPool",
        "GlobalAveragePool",
        "Flatten",
        "Identity",
        "MatMul",
        "Identity",
    ];
    assert_eq!(g.ops, expected);
    assert_eq!(g.input_dims, ["batch", "1", "6", "6"]);
    assert_eq!(g.weights[0].1, [2, 1, 3, 3], "conv weights keep PyTorch's layout");
}

/// A layer the exporter does not know.
struct Custom;

impl Layer for Custom {
    fn describe(&self) -> String {
        "Custom".into()
    }
    fn output_shape(&self, input: &[usize]) -> backprop::Result<Vec<usize>> {
        Ok(input.to_vec())
    }
    fn forward(&mut self, x: &Tensor, _: Pass<'_>) -> Tensor {
        x.clone()
    }
    fn backward(&mut self, g: &Tensor, _: InputGrad) -> Option<Tensor> {
        Some(g.clone())
    }
}

impl Visit for Custom {}

#[test]
fn what_cannot_be_exported_is_an_error_naming_it() {
    let custom = Sequential::builder(&[2]).add(Dense::new(2, 2)).add(Custom).build().unwrap();
    let e = backprop::onnx::to_bytes(&custom, &[2]).unwrap_err().to_string();
    assert!(e.contains("Custom") && e.contains("no ONNX export") && e.contains("OnnxLayer"), "{e}");
    let stateful = Sequential::builder(&[3, 2]).add(Rnn::new(2, 2).stateful()).build().unwrap();
    let e = backprop::onnx::to_bytes(&stateful, &[3, 2]).unwrap_err().to_string();
    assert!(e.contains("stateful"), "{e}");
    let dense = Sequential::builder(&[2]).add(Dense::new(2, 2)).build().unwrap();
    let e = backprop::onnx::to_bytes(&dense, &[5]).unwrap_err().to_string();
    assert!(e.contains("[N, 2]") && e.contains("[1, 5]"), "a wrong sample shape names both: {e}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.onnx");
    backprop::onnx::save(&dense, &[2], &path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(read(&bytes).ops, ["MatMul", "Add", "Identity"]);
    assert!(decode(&bytes[..bytes.len() - 3]).is_err(), "a cut file does not decode");
}

const ORT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/onnx_runtime.safetensors");

/// Loads `{stem}.weights.*` of the fixture into `model` (strictly: every tensor, no other).
fn load_fixture_weights(
    model: &mut dyn backprop::layers::Visit,
    file: &safetensors::SafeTensors,
    stem: &str,
) {
    let prefix = format!("{stem}.weights.");
    let tensors: Vec<(String, Tensor)> = file
        .names()
        .into_iter()
        .filter_map(|n| {
            n.strip_prefix(&prefix).map(|short| (short.to_string(), common::fixture_tensor(file, n)))
        })
        .collect();
    backprop::io::load_tensors(model, &tensors, &LoadOptions::new()).unwrap();
}

fn lengths(t: &Tensor) -> Vec<usize> {
    t.data().iter().map(|&v| v as usize).collect()
}

/// ONNX Runtime stops each sequence at its length, as the crate does: the exported graph takes
/// the lengths (`input_lengths` → `sequence_lens`), and the outputs agree on padded batches.
#[test]
fn onnx_runtime_agrees_on_sequences_of_different_lengths() {
    let bytes = std::fs::read(ORT).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = |name: &str| common::fixture_tensor(&file, name);
    let mut lstm = Sequential::builder(&[6, 3]).add(Lstm::new(3, 5)).add(Dense::new(5, 2)).build().unwrap();
    load_fixture_weights(&mut lstm, &file, "lstm");
    let l = lengths(&t("lstm.in.input_lengths"));
    assert!(l.iter().any(|&v| v < 6) && l.iter().any(|&v| v != l[0]), "the fixture's lengths differ: {l:?}");
    let y = lstm.predict_with_lengths(&t("lstm.in.input"), &l, 64).unwrap();
    common::assert_close_to(&y, &t("lstm.ort.output"), 1e-5, "LSTM chain with lengths vs ONNX Runtime");
    let g = read(&backprop::onnx::to_bytes(&lstm, &[6, 3]).unwrap());
    assert_eq!(g.inputs, ["input", "input_lengths"]);
}

/// Layer normalisation as ONNX's `LayerNormalization` (opset 17, last axis, ε kept; scale 1 and
/// bias 0 without the affine parameters), on sequences: ONNX Runtime computes what the crate does.
#[test]
fn onnx_runtime_agrees_on_layer_norm() {
    let bytes = std::fs::read(ORT).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = |name: &str| common::fixture_tensor(&file, name);
    let (_, mut model, sample, _) =
        zoo::zoo().unwrap().into_iter().find(|case| case.0 == "layernorm_sequence").unwrap();
    let g = read(&backprop::onnx::to_bytes(&model, &sample).unwrap());
    assert_eq!(g.ops.iter().filter(|op| *op == "LayerNormalization").count(), 2, "{:?}", g.ops);
    load_fixture_weights(&mut model, &file, "layernorm_sequence");
    let y = model.predict(&t("layernorm_sequence.in.input"), 64).unwrap();
    common::assert_close_to(&y, &t("layernorm_sequence.ort.output"), 2e-5, "LayerNorm chain vs ONNX Runtime");
}

/// The position tables as `Add` of their first `T` rows (`Shape` → `Gather` → `Slice`), then a
/// layer norm: ONNX Runtime computes what the crate does.
#[test]
fn onnx_runtime_agrees_on_position_tables() {
    use backprop::layers::{PositionEmbedding, SinusoidalPositions};
    let bytes = std::fs::read(ORT).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = |name: &str| common::fixture_tensor(&file, name);
    let mut model = Sequential::builder(&[5, 8])
        .add(SinusoidalPositions::new(8))
        .add(PositionEmbedding::new(7, 8))
        .add(LayerNorm::new(8))
        .build()
        .unwrap();
    let g = read(&backprop::onnx::to_bytes(&model, &[5, 8]).unwrap());
    assert_eq!(g.ops.iter().filter(|op| *op == "Slice").count(), 2, "{:?}", g.ops);
    load_fixture_weights(&mut model, &file, "positions");
    let y = model.predict(&t("positions.in.input"), 64).unwrap();
    common::assert_close_to(&y, &t("positions.ort.output"), 1e-5, "position tables vs ONNX Runtime");
}

/// Attention in ONNX (`Split` into heads, `Where` over the causal triangle and the lengths'
/// key padding, `Softmax`, padded steps zeroed), inside both kinds of encoder block, and a small
/// GPT with a tied head over token ids: ONNX Runtime computes what the crate does, with lengths.
#[test]
fn onnx_runtime_agrees_on_attention_encoders_and_a_gpt() {
    use backprop::layers::DecoderOnly;
    let bytes = std::fs::read(ORT).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = |name: &str| common::fixture_tensor(&file, name);
    let encoder = zoo::attention_encoder();
    let gpt = Sequential::builder(&[6]).add(DecoderOnly::new(9, 8, 2, 2, 16, 6).tied());
    for (stem, builder, sample) in [("attention", encoder, vec![6, 8]), ("gpt", gpt, vec![6])] {
        let mut model = builder.build().unwrap();
        let g = read(&backprop::onnx::to_bytes(&model, &sample).unwrap());
        assert!(g.ops.iter().any(|op| op == "Softmax") && g.inputs.len() == 2, "{stem}: {:?}", g.ops);
        load_fixture_weights(&mut model, &file, stem);
        let l = lengths(&t(&format!("{stem}.in.input_lengths")));
        assert!(l.iter().any(|&v| v < 6), "{stem}: the fixture's lengths pad some sequences: {l:?}");
        let y = model.predict_with_lengths(&t(&format!("{stem}.in.input")), &l, 64).unwrap();
        common::assert_close_to(
            &y,
            &t(&format!("{stem}.ort.output")),
            1e-5,
            &format!("{stem} vs ONNX Runtime"),
        );
    }
}

/// Causal attention writes no mask table: the mask (and the steps of the lengths mask) come from
/// `T` when the graph runs (each layer had written a `[T, T]` table for the longest input: twelve
/// blocks at T = 2,048 were 50 MB of identical tables, and a long non-sequence input beside the
/// sequence sized them too). ONNX Runtime runs these graphs: `examples/onnx/check.py`.
#[test]
fn causal_attention_writes_no_mask_tables() {
    let block = || backprop::layers::TransformerEncoderLayer::new(8, 2, 16).norm_first().causal();
    let mut builder = Sequential::builder(&[256, 8]);
    for _ in 0..3 {
        builder = builder.add(block());
    }
    let model = builder.build().unwrap();
    let three = backprop::onnx::to_bytes(&model, &[256, 8]).unwrap();
    let g = read(&three);
    let count = |stem: &str| g.weights.iter().filter(|(name, _, _)| name.starts_with(stem)).count();
    assert_eq!(count("causal_"), 0, "no causal tables");
    assert!(
        g.ops.iter().any(|op| op == "LessOrEqual") && g.ops.iter().any(|op| op == "Range"),
        "{:?}",
        g.ops
    );
    let one_block =
        backprop::onnx::to_bytes(&Sequential::builder(&[256, 8]).add(block()).build().unwrap(), &[256, 8]);
    // Two more blocks add their weights (a few KB), not a 64 KB table each.
    let added = three.len() - one_block.unwrap().len();
    assert!(added < 256 * 256, "{added} bytes for two more blocks");
}

/// With lengths, whatever a caller leaves in the padded steps stays there: ONNX Runtime, fed the
/// attention model's batch with NaN in every padded step, gives the real steps the crate's outputs
/// (the exported graph zeroes the padded keys' values and the padded outputs with `Where`; a
/// product with a zero weight would have spread the NaN to every step that attends to them).
#[test]
fn onnx_runtime_keeps_what_the_padding_holds_out_of_the_real_steps() {
    let bytes = std::fs::read(ORT).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = |name: &str| common::fixture_tensor(&file, name);
    let mut model = zoo::attention_encoder().build().unwrap();
    load_fixture_weights(&mut model, &file, "attention");
    let l = lengths(&t("attention.in.input_lengths"));
    let (clean, nan_padded) = (t("attention.in.input"), t("attention.in_nan_padded.input"));
    let step = 8; // values per step
    let mut padded_values = 0;
    for (n, &len) in l.iter().enumerate() {
        let (a, b) =
            (&clean.data()[n * 6 * step..][..6 * step], &nan_padded.data()[n * 6 * step..][..6 * step]);
        assert_eq!(a[..len * step], b[..len * step], "sequence {n}: the real steps are the same batch's");
        assert!(b[len * step..].iter().all(|v| v.is_nan()), "sequence {n}: every padded value is NaN");
        padded_values += (6 - len) * step;
    }
    assert!(padded_values > 0, "the fixture pads some sequences: {l:?}");
    let ours = model.predict_with_lengths(&clean, &l, 64).unwrap();
    let ort = t("attention.ort_nan_padded.output");
    let mut worst = 0.0f32;
    for (n, &len) in l.iter().enumerate() {
        let real = |y: &Tensor| y.data()[n * 6 * step..][..len * step].to_vec();
        for (a, b) in real(&ours).iter().zip(real(&ort)) {
            assert!(b.is_finite(), "sequence {n}: ONNX Runtime let a padded NaN into a real step");
            worst = worst.max((a - b).abs());
        }
    }
    assert!(worst <= 1e-5, "real steps, NaN in the padding: worst difference {worst:e}");
}

/// A model struct exported as one graph: two inputs with their lengths, the encoder's
/// `(h_n, c_n)` fed to the decoder as `initial_h`, `initial_c`; ONNX Runtime computes what the
/// crate computes.
#[test]
fn onnx_runtime_agrees_on_an_encoder_decoder_with_lengths_and_initial_states() {
    let bytes = std::fs::read(ORT).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = |name: &str| common::fixture_tensor(&file, name);
    let mut net = seq2seq::Reverser::new(4, 6, 0);
    load_fixture_weights(&mut net, &file, "seq2seq_reverser");
    let inputs = Inputs::new()
        .with_lengths(
            "source",
            t("seq2seq_reverser.in.source"),
            lengths(&t("seq2seq_reverser.in.source_lengths")),
        )
        .with_lengths(
            "decoder_in",
            t("seq2seq_reverser.in.decoder_in"),
            lengths(&t("seq2seq_reverser.in.decoder_in_lengths")),
        );
    let y = net.forward_batch(&inputs, Mode::Eval).unwrap();
    common::assert_close_to(
        y.get("digits").unwrap(),
        &t("seq2seq_reverser.ort.digits"),
        1e-5,
        "encoder-decoder vs ONNX Runtime",
    );
    let specs = [
        backprop::onnx::GraphInput::new("source", &[5]),
        backprop::onnx::GraphInput::new("decoder_in", &[5]),
    ];
    let g = read(&backprop::onnx::model_to_bytes(&net, &net, &specs).unwrap());
    assert_eq!(g.inputs, ["source", "decoder_in", "source_lengths", "decoder_in_lengths"]);
    let lstm_nodes: Vec<&Vec<String>> =
        g.ops.iter().zip(&g.node_inputs).filter(|(op, _)| *op == "LSTM").map(|(_, i)| i).collect();
    assert_eq!(lstm_nodes.len(), 2);
    assert_eq!(lstm_nodes[0].len(), 5, "the encoder starts from zeros: no initial state");
    assert_eq!(lstm_nodes[1].len(), 7, "the decoder takes initial_h and initial_c");
}

/// A model struct that does not say its output shapes cannot declare its graph's outputs: refused,
/// naming it.
#[test]
fn a_model_without_output_shapes_is_refused_by_name() {
    use backprop::model::Tensors;
    struct Plain {
        dense: Dense,
    }
    backprop::visit_fields!(Plain { dense });
    impl Model for Plain {
        fn forward_batch(&mut self, inputs: &Inputs, mode: Mode) -> backprop::Result<Tensors> {
            Ok(Tensors::one("y", self.dense.forward(inputs.get("x")?, mode.into())))
        }
        fn backward_batch(&mut self, _: &Tensors, _: InputGrad) -> backprop::Result<Tensors> {
            Ok(Tensors::new())
        }
    }
    impl backprop::onnx::OnnxModel for Plain {
        fn export_model(&self, g: &mut backprop::onnx::Graph) -> backprop::Result<Vec<(String, String)>> {
            let x = g.input("x")?;
            Ok(vec![("y".into(), g.layer(&self.dense, &x, None)?)])
        }
    }
    let m = Plain { dense: Dense::new(2, 2) };
    let e = backprop::onnx::model_to_bytes(&m, &m, &[backprop::onnx::GraphInput::new("x", &[2])])
        .unwrap_err()
        .to_string();
    assert!(e.contains("Plain") && e.contains("output_shapes"), "{e}");
    let e = backprop::onnx::model_to_bytes(&m, &m, &[backprop::onnx::GraphInput::new("z", &[2])])
        .unwrap_err()
        .to_string();
    assert!(e.contains("no graph input named \"x\""), "{e}");
}

/// A user's layer exports through the same per-layer trait as the crate's: `y = 2x` as `Mul`.
#[test]
fn a_custom_layer_exports_through_its_own_onnx_impl() {
    struct Doubler;
    impl Layer for Doubler {
        fn describe(&self) -> String {
            "Doubler".into()
        }
        fn output_shape(&self, input: &[usize]) -> backprop::Result<Vec<usize>> {
            Ok(input.to_vec())
        }
        fn forward(&mut self, x: &Tensor, _: Pass<'_>) -> Tensor {
            x * 2.0
        }
        fn backward(&mut self, g: &Tensor, _: InputGrad) -> Option<Tensor> {
            Some(g * 2.0)
        }
        fn onnx(&self) -> Option<&dyn backprop::onnx::OnnxLayer> {
            Some(self)
        }
    }
    impl Visit for Doubler {}
    impl backprop::onnx::OnnxLayer for Doubler {
        fn export(
            &self,
            g: &mut backprop::onnx::Graph,
            x: &str,
            _: Option<&str>,
        ) -> backprop::Result<String> {
            let two = g.scalar(2.0);
            Ok(g.op("Mul", &[x, &two], vec![]))
        }
    }
    let model = Sequential::builder(&[3]).add(Dense::new(3, 2)).add(Doubler).build().unwrap();
    let g = read(&backprop::onnx::to_bytes(&model, &[3]).unwrap());
    assert_eq!(g.ops, ["MatMul", "Add", "Mul", "Identity"]);

    // A custom layer that names its output itself: a name the graph has written already (here
    // the Dense's product, `matmul_2`) is refused (the file had failed every ONNX reader while
    // the export returned Ok); one it has not is taken, and later generated names avoid it.
    struct Named(&'static str);
    impl Layer for Named {
        fn describe(&self) -> String {
            format!("Named({})", self.0)
        }
        fn output_shape(&self, input: &[usize]) -> backprop::Result<Vec<usize>> {
            Ok(input.to_vec())
        }
        fn forward(&mut self, x: &Tensor, _: Pass<'_>) -> Tensor {
            x.clone()
        }
        fn backward(&mut self, g: &Tensor, _: InputGrad) -> Option<Tensor> {
            Some(g.clone())
        }
        fn onnx(&self) -> Option<&dyn backprop::onnx::OnnxLayer> {
            Some(self)
        }
    }
    impl Visit for Named {}
    impl backprop::onnx::OnnxLayer for Named {
        fn export(
            &self,
            g: &mut backprop::onnx::Graph,
            x: &str,
            _: Option<&str>,
        ) -> backprop::Result<String> {
            g.node("Relu", &[x], vec![], &[self.0]);
            Ok(self.0.to_string())
        }
    }
    let with = |name| {
        Sequential::builder(&[3]).add(Dense::new(3, 2)).add(Named(name)).add(Relu::new()).build().unwrap()
    };
    let plain = read(&backprop::onnx::to_bytes(&with("mine"), &[3]).unwrap());
    assert!(plain.node_inputs[1].contains(&"matmul_2".to_string()), "{:?}", plain.node_inputs);
    let e = backprop::onnx::to_bytes(&with("matmul_2"), &[3]).unwrap_err().to_string();
    assert!(e.contains("\"matmul_2\" (by a Relu node) is defined twice"), "{e}");
    let e = backprop::onnx::to_bytes(&with("input"), &[3]).unwrap_err().to_string();
    assert!(e.contains("\"input\" (by a Relu node)"), "{e}");
    // A name the counter has not reached yet (the Relu after the custom layer would be named
    // relu_8): the generated name skips it, so the export succeeds (a second relu_8 would fail).
    let g = read(&backprop::onnx::to_bytes(&with("relu_8"), &[3]).unwrap());
    assert_eq!(g.ops, ["MatMul", "Add", "Relu", "Relu", "Identity"]);
    assert_eq!(g.node_inputs[3], ["relu_8"]);
}

/// Odd models (seeded unusual settings, `examples/common/zoo.rs`): every one that builds exports,
/// and ONNX Runtime computes what the crate computes on the exported graph — or the export is
/// refused naming the layer. (The fixture holds ONNX Runtime's outputs for the graphs the crate
/// exported when it was made; here the crate rebuilds the same models, exports them again, and
/// compares its own outputs with those.)
#[test]
fn onnx_runtime_agrees_on_odd_models() {
    let bytes = std::fs::read(ORT).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let names = file.names();
    let t = |name: &str| common::fixture_tensor(&file, name);
    let mut compared = 0;
    for seed in 0..zoo::ODD_MODELS {
        let Some((mut model, sample, _)) = zoo::odd(seed) else { continue };
        let stem = format!("odd_{seed}");
        let exported = backprop::onnx::to_bytes(&model, &sample);
        let output = format!("{stem}.ort.output");
        if !names.iter().any(|n| **n == output) {
            let e = exported.expect_err("the fixture has no ONNX Runtime output: the export must be refused");
            assert!(!e.to_string().is_empty());
            continue;
        }
        exported.unwrap_or_else(|e| panic!("{stem}: {e}"));
        load_fixture_weights(&mut model, &file, &stem);
        let x = t(&format!("{stem}.in.input"));
        let y = match names.iter().any(|n| **n == format!("{stem}.in.input_lengths")) {
            true => model.predict_with_lengths(&x, &lengths(&t(&format!("{stem}.in.input_lengths"))), 64),
            false => model.predict(&x, 64),
        }
        .unwrap();
        let describe = model.layers().map(|l| l.describe()).collect::<Vec<_>>().join(" → ");
        common::assert_close_to(&y, &t(&output), 1e-5, &format!("{stem} ({describe}) vs ONNX Runtime"));
        compared += 1;
    }
    assert!(compared >= 50, "only {compared} odd models compared");
}

/// `Graph::recurrent` refuses an initial cell state for a layer without one (a GRU's `c` had been
/// dropped without a word), naming the layer.
#[test]
fn an_initial_cell_state_for_a_gru_is_refused() {
    use backprop::model::{Shapes, Tensors};
    struct TwoStates {
        gru: Gru,
    }
    backprop::visit_fields!(TwoStates { gru });
    impl Model for TwoStates {
        fn forward_batch(&mut self, inputs: &Inputs, mode: Mode) -> backprop::Result<Tensors> {
            Ok(Tensors::one("y", self.gru.forward(inputs.get("x")?, mode.into())))
        }
        fn backward_batch(&mut self, _: &Tensors, _: InputGrad) -> backprop::Result<Tensors> {
            Ok(Tensors::new())
        }
        fn output_shapes(&self, inputs: &[(String, Vec<usize>)]) -> Option<backprop::Result<Shapes>> {
            let n = inputs.first().map_or(1, |(_, s)| s[0]);
            Some(Ok(vec![("y".into(), vec![n, 3, 4])]))
        }
    }
    impl backprop::onnx::OnnxModel for TwoStates {
        fn export_model(&self, g: &mut backprop::onnx::Graph) -> backprop::Result<Vec<(String, String)>> {
            let (x, h, c) = (g.input("x")?, g.input("h")?, g.input("c")?);
            let out = g.recurrent(&self.gru, &x, None, Some((&h, Some(&c))), false)?;
            Ok(vec![("y".into(), out.y)])
        }
    }
    let m = TwoStates { gru: Gru::new(2, 4) };
    let specs =
        ["x", "h", "c"].map(|n| backprop::onnx::GraphInput::new(n, if n == "x" { &[3, 2] } else { &[4] }));
    let e = backprop::onnx::model_to_bytes(&m, &m, &specs).unwrap_err().to_string();
    assert!(e.contains("GRU(2→4)") && e.contains("initial cell state"), "{e}");
}

/// Every value of a graph is defined once: inputs with an empty or repeated name, an input named
/// like another's lengths, and outputs named like an input, like each other or like a value the
/// graph made itself are refused by name (each had been written into a file ONNX Runtime refuses,
/// or worse, one it reads with an initializer overridden).
#[test]
fn graph_names_are_defined_once() {
    use backprop::model::{Shapes, Tensors};
    use backprop::onnx::GraphInput;
    struct Named {
        dense: Dense,
        outputs: Vec<String>,
    }
    backprop::visit_fields!(Named { dense });
    impl Model for Named {
        fn forward_batch(&mut self, inputs: &Inputs, mode: Mode) -> backprop::Result<Tensors> {
            Ok(Tensors::one("y", self.dense.forward(inputs.get("x")?, mode.into())))
        }
        fn backward_batch(&mut self, _: &Tensors, _: InputGrad) -> backprop::Result<Tensors> {
            Ok(Tensors::new())
        }
        fn output_shapes(&self, inputs: &[(String, Vec<usize>)]) -> Option<backprop::Result<Shapes>> {
            let n = inputs.first().map_or(1, |(_, s)| s[0]);
            Some(Ok(self.outputs.iter().map(|o| (o.clone(), vec![n, 2])).collect()))
        }
    }
    impl backprop::onnx::OnnxModel for Named {
        fn export_model(&self, g: &mut backprop::onnx::Graph) -> backprop::Result<Vec<(String, String)>> {
            let x = g.input("x")?;
            let y = g.layer(&self.dense, &x, None)?;
            Ok(self.outputs.iter().map(|o| (o.clone(), y.clone())).collect())
        }
    }
    let model = |outputs: &[&str]| Named {
        dense: Dense::new(2, 2),
        outputs: outputs.iter().map(|o| o.to_string()).collect(),
    };
    let x = || GraphInput::new("x", &[2]);
    let ok = model(&["y"]);
    backprop::onnx::model_to_bytes(&ok, &ok, &[x()]).unwrap();
    for (inputs, want) in [
        (vec![x(), GraphInput::new("", &[2])], "empty name"),
        (vec![x(), x()], "two graph inputs are named \"x\""),
        (vec![x(), GraphInput::new("x_lengths", &[2])], "sequence lengths"),
    ] {
        let e = backprop::onnx::model_to_bytes(&ok, &ok, &inputs).unwrap_err().to_string();
        assert!(e.contains(want), "{want}: {e}");
    }
    for (outputs, want) in [
        (&["y", "y"][..], "two outputs are named \"y\""),
        (&["x"][..], "the name of a graph input"),
        (&[""][..], "empty name"),
        (&["matmul_2"][..], "a value inside the graph"),
    ] {
        let m = model(outputs);
        let e = backprop::onnx::model_to_bytes(&m, &m, &[x()]).unwrap_err().to_string();
        assert!(e.contains(want), "{outputs:?}: {e}");
    }
}

/// An export that asks for the lengths of an input the graph does not have (a misspelt name) is
/// an error naming it, not a graph with a required input of its own.
#[test]
fn lengths_of_an_input_that_is_not_there_are_refused() {
    use backprop::onnx::{Graph, GraphInput, OnnxModel, model_to_bytes};
    struct Misspelt;
    impl OnnxModel for Misspelt {
        fn export_model(&self, g: &mut Graph) -> backprop::Result<Vec<(String, String)>> {
            let x = g.input("input")?;
            let _ = g.sequence_lens("inptu");
            Ok(vec![("output".to_string(), x)])
        }
    }
    let model = Sequential::builder(&[3]).add(Dense::new(3, 3)).build().unwrap();
    let e = model_to_bytes(&model, &Misspelt, &[GraphInput::new("input", &[3])]).unwrap_err().to_string();
    assert!(e.contains("\"inptu\"") && e.contains("no input of that name"), "{e}");
}

/// A tied head reads the token table through a `Transpose` node: the file holds the table once
/// (it had held it twice, so a table just over 1 GiB made the export refuse a 2 GiB file), and
/// the untied head still writes its own matrix.
#[test]
fn a_tied_head_writes_the_token_table_once() {
    let (v, e) = (300, 16);
    let tied = backprop::layers::DecoderOnly::new(v, e, 1, 2, 32, 8).tied();
    let untied = backprop::layers::DecoderOnly::new(v, e, 1, 2, 32, 8);
    let bytes = |m: backprop::layers::DecoderOnly| {
        backprop::onnx::to_bytes(&Sequential::builder(&[8]).add(m).build().unwrap(), &[8]).unwrap()
    };
    let (tied, untied) = (bytes(tied), bytes(untied));
    let g = read(&tied);
    let tables = g.weights.iter().filter(|(_, dims, _)| dims.contains(&(v as u64))).count();
    assert_eq!(tables, 1, "{:?}", g.weights.iter().map(|w| (&w.0, &w.1)).collect::<Vec<_>>());
    assert!(g.ops.iter().any(|op| op == "Transpose") && g.weights.iter().all(|w| !w.0.starts_with("head_t")));
    // The untied file holds a second [E, V] matrix and its bias: the tied one is smaller by those.
    assert!(untied.len() >= tied.len() + v * e * 4, "{} vs {}", untied.len(), tied.len());
}
