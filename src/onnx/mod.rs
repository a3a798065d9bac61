//! Export to ONNX, for ONNX Runtime and every other engine that reads it.
//!
//! [`save`] (or [`to_bytes`]) writes a model made of the crate's layers as an ONNX graph (opset
//! [`OPSET`]) with the weights inside and the batch size left free (the input's first axis is the
//! symbolic `"batch"`). The mapping, layer by layer:
//!
//! | layer | ONNX |
//! |---|---|
//! | `Dense` | `MatMul` with `Wᵀ`, then `Add` of the bias (any input rank `[N, …, in]`) |
//! | `Conv2d` | `Conv` (kernel, strides, pads, dilations) |
//! | `MaxPool2d`, `AvgPool2d` | `MaxPool`, `AveragePool` with `count_include_pad = 1` |
//! | `GlobalAvgPool` | `GlobalAveragePool` then `Flatten` (the layer's output is `[N, C]`) |
//! | `Flatten` | `Flatten` (axis 1) |
//! | `Relu`, `Sigmoid`, `Tanh`, `LeakyRelu` | the operator of the same name |
//! | `Softmax`, `LogSoftmax` | the same, over axis 1 (the feature axis) |
//! | `Gelu` | its formula: `x·½(1 + erf(x/√2))`, or the tanh form (opset 17 has no `Gelu`) |
//! | `Dropout` | `Identity` (inference) |
//! | `BatchNorm1d`, `BatchNorm2d` | `BatchNormalization` with the running statistics |
//! | `Embedding` | `Cast` of the ids to int64, `Gather` from the table |
//! | `Rnn`, `Lstm`, `Gru` | `Transpose` to time-major, `RNN`/`LSTM`/`GRU`, back to batch-major |
//! | `Residual` | its body, then `Add` of the input |
//! | `Sequential` | its layers in order |
//!
//! Recurrent gates are reordered to ONNX's: PyTorch's (and this crate's) LSTM `i, f, g, o`
//! becomes `i, o, f, c`, GRU `r, z, n` becomes `z, r, h`, with `linear_before_reset = 1` (the
//! reset gate applied after the recurrent product, as here); the two biases go side by side in
//! `B`. The exported sequence layers run every sequence to its full length: a batch's lengths
//! ([`Pass::lengths`](crate::layers::Pass::lengths)) are not part of the graph, and a stateful
//! layer is refused.
//!
//! `docs/onnx.md` has the agreement with ONNX Runtime for every layer type.

pub mod proto;

use crate::error::{Error, Result};
use crate::layers::{
    AvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d, Dense, Dropout, Embedding, Flatten, Gelu, GlobalAvgPool,
    Gru, Layer, LeakyRelu, LogSoftmax, Lstm, MaxPool2d, Relu, Residual, Rnn, Sequential, Sigmoid, Softmax,
    State, Tanh,
};
use crate::tensor::Tensor;
use proto::Message;
use std::any::Any;
use std::path::Path;

/// The ONNX operator set the graph uses.
pub const OPSET: i64 = 17;
/// The ONNX IR version written (the one that goes with opset 17).
const IR_VERSION: i64 = 8;
/// `TensorProto.DataType`: float and int64.
const FLOAT: i64 = 1;
const INT64: i64 = 7;

/// Writes `model` as an ONNX file at `path`, for inputs of shape `[N, sample_shape…]` with any `N`.
/// The file is written whole or not at all (as [`crate::io::save`]).
///
/// # Errors
/// [`Error::Shape`] if the model does not take that input; [`Error::InvalidArgument`] naming the
/// layer for a layer with no ONNX mapping (a custom layer, a stateful recurrent layer);
/// [`Error::Io`] if the file cannot be written.
pub fn save(model: &dyn Layer, sample_shape: &[usize], path: impl AsRef<Path>) -> Result<()> {
    let bytes = to_bytes(model, sample_shape)?;
    crate::io::write_atomically(path.as_ref(), &bytes)
}

/// The ONNX encoding of `model` for inputs `[N, sample_shape…]`; see [`save`].
///
/// ```
/// use backprop::prelude::*;
/// let model = Sequential::builder(&[4]).add(Dense::new(4, 3)).add(Relu::new()).build().unwrap();
/// let bytes = backprop::onnx::to_bytes(&model, &[4]).unwrap();
/// assert!(!bytes.is_empty());
/// ```
pub fn to_bytes(model: &dyn Layer, sample_shape: &[usize]) -> Result<Vec<u8>> {
    let input_shape: Vec<usize> = std::iter::once(1).chain(sample_shape.iter().copied()).collect();
    let output_shape = model.output_shape(&input_shape)?;
    let mut g = Graph::default();
    let y = g.layer(model, "input".to_string())?;
    g.node("Identity", &[&y], vec![], &["output"]);
    let graph = g.nodes.iter().fold(Message::new(), |m, n| m.message(1, n)).string(2, "backprop");
    let graph = g.initializers.iter().fold(graph, |m, t| m.message(5, t));
    let graph = graph
        .message(11, &value_info("input", &input_shape))
        .message(12, &value_info("output", &output_shape));
    let opset = Message::new().string(1, "").int(2, OPSET);
    let model = Message::new()
        .int(1, IR_VERSION)
        .string(2, "backprop")
        .string(3, env!("CARGO_PKG_VERSION"))
        .message(7, &graph)
        .message(8, &opset);
    Ok(model.into_bytes())
}

/// A graph input or output: float, first axis the symbolic `"batch"`.
fn value_info(name: &str, shape: &[usize]) -> Message {
    let dims = shape.iter().enumerate().fold(Message::new(), |m, (i, &d)| {
        let dim = if i == 0 { Message::new().string(2, "batch") } else { Message::new().int(1, d as i64) };
        m.message(1, &dim)
    });
    let tensor = Message::new().int(1, FLOAT).message(2, &dims);
    Message::new().string(1, name).message(2, &Message::new().message(1, &tensor))
}

/// An attribute: `(name, value)` with its type tag (`AttributeProto`).
fn attr_int(name: &str, v: i64) -> Message {
    Message::new().string(1, name).int(3, v).int(20, 2)
}

fn attr_float(name: &str, v: f32) -> Message {
    Message::new().string(1, name).float(2, v).int(20, 1)
}

fn attr_ints(name: &str, vs: &[usize]) -> Message {
    vs.iter().fold(Message::new().string(1, name), |m, &v| m.int(8, v as i64)).int(20, 7)
}

fn attr_strings(name: &str, vs: &[&str]) -> Message {
    vs.iter().fold(Message::new().string(1, name), |m, v| m.string(9, v)).int(20, 8)
}

/// The graph being built: nodes in order, weights as initializers, fresh names from a counter.
#[derive(Default)]
struct Graph {
    nodes: Vec<Message>,
    initializers: Vec<Message>,
    names: usize,
}

impl Graph {
    fn fresh(&mut self, stem: &str) -> String {
        self.names += 1;
        format!("{stem}_{}", self.names)
    }

    /// A float initializer; returns its name.
    fn tensor(&mut self, stem: &str, dims: &[usize], data: &[f32]) -> String {
        let name = self.fresh(stem);
        let raw: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        let t = dims.iter().fold(Message::new(), |m, &d| m.int(1, d as i64));
        self.initializers.push(t.int(2, FLOAT).string(8, &name).bytes(9, &raw));
        name
    }

    /// An int64 initializer (axes, shapes); returns its name.
    fn int64s(&mut self, stem: &str, data: &[i64]) -> String {
        let name = self.fresh(stem);
        let raw: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializers
            .push(Message::new().int(1, data.len() as i64).int(2, INT64).string(8, &name).bytes(9, &raw));
        name
    }

    fn node(&mut self, op: &str, inputs: &[&str], attrs: Vec<Message>, outputs: &[&str]) {
        let n = inputs.iter().fold(Message::new(), |m, i| m.string(1, i));
        let n = outputs.iter().fold(n, |m, o| m.string(2, o));
        let name = self.fresh(op);
        let n = attrs.iter().fold(n.string(3, &name).string(4, op), |m, a| m.message(5, a));
        self.nodes.push(n);
    }

    /// A node with one output, named fresh; returns that name.
    fn op(&mut self, op: &str, inputs: &[&str], attrs: Vec<Message>) -> String {
        let out = self.fresh(&op.to_lowercase());
        self.node(op, inputs, attrs, &[&out]);
        out
    }

    fn scalar(&mut self, v: f32) -> String {
        self.tensor("const", &[], &[v])
    }

    /// Appends the nodes of `layer` reading `x`; returns the name of its output.
    fn layer(&mut self, layer: &dyn Layer, x: String) -> Result<String> {
        let any: &dyn Any = layer;
        if let Some(s) = any.downcast_ref::<Sequential>() {
            return s.layers().try_fold(x, |x, l| self.layer(l, x));
        }
        if let Some(r) = any.downcast_ref::<Residual>() {
            let fx = self.layer(r.body(), x.clone())?;
            return Ok(self.op("Add", &[&x, &fx], vec![])); // y = x + f(x)
        }
        if let Some(d) = any.downcast_ref::<Dense>() {
            let (o, i) = (d.outputs(), d.inputs());
            let w = d.weight().value.data();
            let w_t: Vec<f32> = (0..i * o).map(|k| w[(k % o) * i + k / o]).collect(); // Wᵀ [in, out]
            let wt = self.tensor("dense_weight_t", &[i, o], &w_t);
            let y = self.op("MatMul", &[&x, &wt], vec![]);
            return Ok(match d.bias() {
                Some(b) => {
                    let b = self.tensor("dense_bias", b.value.shape(), b.value.data());
                    self.op("Add", &[&y, &b], vec![])
                }
                None => y,
            });
        }
        if let Some(c) = any.downcast_ref::<Conv2d>() {
            let set = c.settings();
            let ((kh, kw), (sh, sw), (ph, pw), (dh, dw)) =
                (set.kernel, set.stride, set.padding, set.dilation);
            let w = self.tensor("conv_weight", c.weight().value.shape(), c.weight().value.data());
            let mut inputs = vec![x.clone(), w];
            if let Some(b) = c.bias() {
                inputs.push(self.tensor("conv_bias", b.value.shape(), b.value.data()));
            }
            let attrs = vec![
                attr_ints("kernel_shape", &[kh, kw]),
                attr_ints("strides", &[sh, sw]),
                attr_ints("pads", &[ph, pw, ph, pw]),
                attr_ints("dilations", &[dh, dw]),
            ];
            let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
            return Ok(self.op("Conv", &refs, attrs));
        }
        let window = |w: crate::layers::pool::Window| {
            vec![
                attr_ints("kernel_shape", &[w.kernel.0, w.kernel.1]),
                attr_ints("strides", &[w.stride.0, w.stride.1]),
                attr_ints("pads", &[w.padding.0, w.padding.1, w.padding.0, w.padding.1]),
            ]
        };
        if let Some(p) = any.downcast_ref::<MaxPool2d>() {
            return Ok(self.op("MaxPool", &[&x], window(p.window())));
        }
        if let Some(p) = any.downcast_ref::<AvgPool2d>() {
            let mut attrs = window(p.window());
            attrs.push(attr_int("count_include_pad", 1));
            return Ok(self.op("AveragePool", &[&x], attrs));
        }
        if any.is::<GlobalAvgPool>() {
            let pooled = self.op("GlobalAveragePool", &[&x], vec![]); // [N, C, 1, 1]
            return Ok(self.op("Flatten", &[&pooled], vec![attr_int("axis", 1)]));
        }
        if any.is::<Flatten>() {
            return Ok(self.op("Flatten", &[&x], vec![attr_int("axis", 1)]));
        }
        for (is, op) in
            [(any.is::<Relu>(), "Relu"), (any.is::<Sigmoid>(), "Sigmoid"), (any.is::<Tanh>(), "Tanh")]
        {
            if is {
                return Ok(self.op(op, &[&x], vec![]));
            }
        }
        if let Some(l) = any.downcast_ref::<LeakyRelu>() {
            return Ok(self.op("LeakyRelu", &[&x], vec![attr_float("alpha", l.slope())]));
        }
        if any.is::<Softmax>() {
            return Ok(self.op("Softmax", &[&x], vec![attr_int("axis", 1)]));
        }
        if any.is::<LogSoftmax>() {
            return Ok(self.op("LogSoftmax", &[&x], vec![attr_int("axis", 1)]));
        }
        if let Some(gelu) = any.downcast_ref::<Gelu>() {
            return Ok(self.gelu(&x, gelu.is_tanh_approximation()));
        }
        if any.is::<Dropout>() {
            return Ok(self.op("Identity", &[&x], vec![]));
        }
        if let Some(bn) = any.downcast_ref::<BatchNorm1d>() {
            return Ok(self.batch_norm(layer, &x, bn.running_mean(), bn.running_var(), bn.epsilon()));
        }
        if let Some(bn) = any.downcast_ref::<BatchNorm2d>() {
            return Ok(self.batch_norm(layer, &x, bn.running_mean(), bn.running_var(), bn.epsilon()));
        }
        if let Some(e) = any.downcast_ref::<Embedding>() {
            let ids = self.op("Cast", &[&x], vec![attr_int("to", INT64)]);
            let table = self.tensor("embedding_weight", e.weight().value.shape(), e.weight().value.data());
            return Ok(self.op("Gather", &[&table, &ids], vec![attr_int("axis", 0)]));
        }
        if let Some(r) = any.downcast_ref::<Lstm>() {
            return self.recurrent(
                layer,
                &x,
                ("LSTM", &[0, 3, 1, 2]),
                r.hidden(),
                (r.is_last_step_only(), r.is_stateful()),
                vec![],
            );
        }
        if let Some(r) = any.downcast_ref::<Gru>() {
            let attrs = vec![attr_int("linear_before_reset", 1)];
            return self.recurrent(
                layer,
                &x,
                ("GRU", &[1, 0, 2]),
                r.hidden(),
                (r.is_last_step_only(), r.is_stateful()),
                attrs,
            );
        }
        if let Some(r) = any.downcast_ref::<Rnn>() {
            let attrs = vec![attr_strings("activations", &[if r.is_relu() { "Relu" } else { "Tanh" }])];
            return self.recurrent(
                layer,
                &x,
                ("RNN", &[0]),
                r.hidden(),
                (r.is_last_step_only(), r.is_stateful()),
                attrs,
            );
        }
        Err(Error::invalid(format!(
            "ONNX export: no ONNX mapping for {} (the crate's own layers have one; see backprop::onnx)",
            layer.describe()
        )))
    }

    /// GELU from operators opset 17 has: exact `x·½(1 + erf(x/√2))`, or
    /// `x·½(1 + tanh(√(2/π)·(x + 0.044715·x³)))`.
    fn gelu(&mut self, x: &str, tanh_form: bool) -> String {
        let (one, half) = (self.scalar(1.0), self.scalar(0.5));
        let inner = if tanh_form {
            let (a, b) = (self.scalar(0.044715), self.scalar((2.0 / std::f32::consts::PI).sqrt()));
            let x2 = self.op("Mul", &[x, x], vec![]);
            let x3 = self.op("Mul", &[&x2, x], vec![]);
            let ax3 = self.op("Mul", &[&x3, &a], vec![]);
            let s = self.op("Add", &[x, &ax3], vec![]);
            let u = self.op("Mul", &[&s, &b], vec![]);
            self.op("Tanh", &[&u], vec![])
        } else {
            let root2 = self.scalar(std::f32::consts::SQRT_2);
            let scaled = self.op("Div", &[x, &root2], vec![]);
            self.op("Erf", &[&scaled], vec![])
        };
        let plus_one = self.op("Add", &[&inner, &one], vec![]);
        let times_x = self.op("Mul", &[x, &plus_one], vec![]);
        self.op("Mul", &[&times_x, &half], vec![])
    }

    fn batch_norm(&mut self, layer: &dyn Layer, x: &str, mean: &Tensor, var: &Tensor, eps: f32) -> String {
        let (scale, shift) = (param(layer, "weight"), param(layer, "bias"));
        let scale = self.tensor("bn_scale", scale.shape(), scale.data());
        let shift = self.tensor("bn_shift", shift.shape(), shift.data());
        let mean = self.tensor("bn_mean", mean.shape(), mean.data());
        let var = self.tensor("bn_var", var.shape(), var.data());
        self.op("BatchNormalization", &[x, &scale, &shift, &mean, &var], vec![attr_float("epsilon", eps)])
    }

    /// A recurrent layer: `W [1, G·H, F]`, `R [1, G·H, H]`, `B [1, 2·G·H]` with the gate blocks in
    /// ONNX's order (`order[k]` = which of this crate's blocks goes k-th), on time-major input.
    fn recurrent(
        &mut self,
        layer: &dyn Layer,
        x: &str,
        (op, order): (&str, &[usize]),
        hidden: usize,
        (last_only, stateful): (bool, bool),
        mut attrs: Vec<Message>,
    ) -> Result<String> {
        if stateful {
            return Err(Error::invalid(format!(
                "ONNX export: {} is stateful (carries its state between calls), which an ONNX graph cannot",
                layer.describe()
            )));
        }
        let reorder = |t: Tensor| -> Vec<f32> {
            let block = t.len() / order.len();
            order.iter().flat_map(|&k| t.data()[k * block..][..block].to_vec()).collect()
        };
        let (w_ih, w_hh) = (param(layer, "weight_ih_l0"), param(layer, "weight_hh_l0"));
        let (gh, f) = (w_ih.dim(0), w_ih.dim(1));
        let mut bias = reorder(param(layer, "bias_ih_l0"));
        bias.extend(reorder(param(layer, "bias_hh_l0")));
        let w = self.tensor("rnn_w", &[1, gh, f], &reorder(w_ih));
        let r = self.tensor("rnn_r", &[1, gh, hidden], &reorder(w_hh));
        let b = self.tensor("rnn_b", &[1, 2 * gh], &bias);
        attrs.push(attr_int("hidden_size", hidden as i64));
        let time_major = self.op("Transpose", &[x], vec![attr_ints("perm", &[1, 0, 2])]); // [T, N, F]
        let (y, y_h) = (self.fresh("rnn_y"), self.fresh("rnn_y_h"));
        self.node(op, &[&time_major, &w, &r, &b], attrs, &[&y, &y_h]); // Y [T, 1, N, H], Y_h [1, N, H]
        if last_only {
            let axes = self.int64s("axes", &[0]);
            return Ok(self.op("Squeeze", &[&y_h, &axes], vec![])); // [N, H]
        }
        let axes = self.int64s("axes", &[1]);
        let y = self.op("Squeeze", &[&y, &axes], vec![]); // [T, N, H]
        Ok(self.op("Transpose", &[&y], vec![attr_ints("perm", &[1, 0, 2])])) // [N, T, H]
    }
}

/// The value of the parameter or buffer `name` of `layer` (a copy).
fn param(layer: &dyn Layer, name: &str) -> Tensor {
    let mut found = None;
    layer.visit(&mut |n, s| {
        if n == name {
            found = Some(match s {
                State::Param(p) => p.value.clone(),
                State::Buffer(b) => b.clone(),
                _ => return,
            });
        }
    });
    found.unwrap_or_else(|| panic!("{} has no state named {name:?}", layer.describe()))
}
