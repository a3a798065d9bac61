//! ONNX export, checked without Python: the file is decoded with the crate's own protobuf reader
//! and its graph compared with what the mapping promises (opset, operators in order, weights
//! transposed or gate-reordered, a free batch axis); layers without a mapping are errors. The
//! numerical agreement with ONNX Runtime is `examples/onnx/check.py` (docs/onnx.md).

use backprop::layers::named_params;
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
    Graph { ops, weights, input_dims }
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
    assert_eq!(g.ops, ["Transpose", "LSTM", "Squeeze", "Transpose", "Identity"]);
    let w_ih = &named_params(&model)[0].1.value; // [4H, F], blocks i, f, g, o
    let (_, dims, w) = &g.weights[0];
    assert_eq!(dims, &[1, 12, 2]);
    let block = |k: usize| &w_ih.data()[k * 6..][..6];
    // ONNX wants i, o, f, c(= g).
    assert_eq!([&w[0..6], &w[6..12], &w[12..18], &w[18..24]], [block(0), block(3), block(1), block(2)]);
    let gru = Sequential::builder(&[4, 2]).add(Gru::new(2, 3).last_step_only()).seed(3).build().unwrap();
    let g = read(&backprop::onnx::to_bytes(&gru, &[4, 2]).unwrap());
    assert_eq!(g.ops, ["Transpose", "GRU", "Squeeze", "Identity"], "the last step is GRU's Y_h");
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
    assert!(e.contains("Custom") && e.contains("no ONNX mapping"), "{e}");
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
