//! Export to ONNX, for ONNX Runtime and every other engine that reads it.
//!
//! [`save`] (or [`to_bytes`]) writes a layer — usually a [`Sequential`](crate::Sequential) — as an
//! ONNX graph (opset [`OPSET`]) with the weights inside and the batch size left free (the input's
//! first axis is the symbolic `"batch"`); [`save_model`] does the same for a [`Model`] struct with
//! several named inputs and outputs. The mapping, layer by layer:
//!
//! | layer | ONNX |
//! |---|---|
//! | `Dense` | `MatMul` with `Wᵀ`, then `Add` of the bias (any input rank `[N, …, in]`) |
//! | `Conv2d` | `Conv` (kernel, strides, pads, dilations) |
//! | `MaxPool2d`, `AvgPool2d` | `MaxPool`, `AveragePool` with `count_include_pad = 1` |
//! | `GlobalAvgPool` | `GlobalAveragePool` then `Flatten` (the layer's output is `[N, C]`) |
//! | `Flatten` | `Flatten` (axis 1) |
//! | `Relu`, `Sigmoid`, `Tanh`, `LeakyRelu` | the operator of the same name |
//! | `Softmax`, `LogSoftmax` | the same, over axis 1 (the feature axis), or axis −1 for the `last_axis()` forms |
//! | `Gelu` | its formula: `x·½(1 + erf(x/√2))`, or the tanh form (opset 17 has no `Gelu`) |
//! | `Dropout` | `Identity` (inference) |
//! | `BatchNorm1d`, `BatchNorm2d` | `BatchNormalization` with the running statistics |
//! | `Embedding` | `Cast` of the ids to int64, `Gather` from the table |
//! | `LayerNorm` | `LayerNormalization` over the last axis (scale 1 and bias 0 without the affine parameters) |
//! | `MultiHeadAttention` | `MatMul`s, `Split`, `Reshape`/`Transpose` into heads, `Softmax` over the keys allowed by `Where` (causal: `LessOrEqual` of the key and query steps, a `Range` up to `T` read from the input's shape; key padding: `Less` of those steps and the lengths input); with lengths, the padded steps' values and outputs set to zero by `Where`, so that nothing a caller leaves in the padding — NaN included — reaches a real step |
//! | `TransformerEncoderLayer`, `DecoderOnly` | their parts, wired with `Add` (a tied head: `MatMul` with the token table transposed) |
//! | `SinusoidalPositions`, `PositionEmbedding` | `Add` of the table's first `T` rows (`Shape`, `Gather`, `Slice`: `T` read from the input's shape, which the graph fixes at export) |
//! | `Rnn`, `Lstm`, `Gru` | `Transpose` to time-major, `RNN`/`LSTM`/`GRU` with `sequence_lens` (the lengths clamped to int32 by `Min`/`Max`, then `Cast`), back to batch-major |
//! | `Residual` | its body, then `Add` of the input |
//! | `Sequential` | its layers in order |
//!
//! Recurrent gates are reordered to ONNX's: PyTorch's (and this crate's) LSTM `i, f, g, o`
//! becomes `i, o, f, c`, GRU `r, z, n` becomes `z, r, h`, with `linear_before_reset = 1` (the
//! reset gate applied after the recurrent product, as here); the two biases go side by side in
//! `B`.
//!
//! **Side information is part of the graph.** A graph whose layers read sequence lengths has one
//! more input per sequence input, `"{input}_lengths"` (int64 `[batch]`), wired to the recurrent
//! operators' `sequence_lens`: ONNX Runtime then stops each sequence at its length exactly as the
//! crate does ([`Pass::lengths`](crate::layers::Pass::lengths)). A model struct passes initial
//! states between its recurrent layers through [`Graph::recurrent`] (`initial_h`, `initial_c`
//! in, `Y_h`, `Y_c` out). What cannot be written as a graph is refused with the reason, never
//! exported differently: a stateful recurrent layer (an ONNX graph has no state between calls),
//! a layer or model without an export.
//!
//! **A graph does not check its inputs.** The crate refuses what the graph computes anyway, so
//! a program that runs the graph validates them as the crate does: a length of 0 (every key
//! masked: the sequence's outputs come out as zeros) or above `T` (the attention's mask reads it
//! as `T`; a recurrent operator's `sequence_lens` is the runtime's to refuse), and ids that are
//! negative, fractional or past the table (`Gather` reads a negative id from the table's end;
//! the cast to int64 truncates a fraction).
//!
//! **Export is a per-layer capability.** A layer offers it through [`Layer::onnx`] (the crate's
//! layers' exports are in this module's `layers.rs`); a custom layer implements [`OnnxLayer`]
//! with the public [`Graph`] builder, and a model struct implements [`OnnxModel`] (see
//! `examples/seq2seq/model.rs`). Anything else is refused by name.
//!
//! `docs/onnx.md` has the agreement with ONNX Runtime for every layer type.

mod layers;
pub mod proto;

use crate::error::{Error, Result};
use crate::layers::{Layer, State};
use crate::model::Model;
use crate::tensor::Tensor;
pub use layers::RecurrentOnnx;
pub(crate) use layers::activation_export;
use proto::Message;
use std::path::Path;

/// The ONNX operator set the graph uses.
pub const OPSET: i64 = 17;
/// The ONNX IR version written (the one that goes with opset 17).
const IR_VERSION: i64 = 8;
/// `TensorProto.DataType`: float, int32 and int64.
const FLOAT: i64 = 1;
const INT32: i64 = 6;
pub(crate) const INT64: i64 = 7;
const BOOL: i64 = 9;

/// A layer that can write itself into an ONNX [`Graph`]; reached through [`Layer::onnx`].
pub trait OnnxLayer {
    /// Appends the layer's nodes reading the value `x` and returns the name of its output.
    /// `lengths` names the graph input whose sequence lengths apply (for
    /// [`Graph::sequence_lens`]), as a forward [`Pass`](crate::layers::Pass) carries them.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the layer and the reason, when it cannot be exported.
    fn export(&self, g: &mut Graph, x: &str, lengths: Option<&str>) -> Result<String>;
}

/// A model that can write itself into an ONNX [`Graph`]: reads its graph inputs by name
/// ([`Graph::input`], [`Graph::sequence_lens`]) and returns its outputs `(name, value)`. Every
/// [`Layer`] with an export is one (one input, `"input"`; one output, `"output"`).
pub trait OnnxModel {
    /// Appends the model's nodes; returns each output's name and the value that holds it.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming what cannot be exported.
    fn export_model(&self, g: &mut Graph) -> Result<Vec<(String, String)>>;
}

impl<L: Layer> OnnxModel for L {
    fn export_model(&self, g: &mut Graph) -> Result<Vec<(String, String)>> {
        let x = g.input(crate::model::INPUT)?;
        let y = g.layer(self, &x, Some(crate::model::INPUT))?;
        Ok(vec![(crate::model::OUTPUT.to_string(), y)])
    }
}

/// One input of an exported graph: its name, the shape of one sample, and whether it carries
/// sequence lengths (then the graph takes `"{name}_lengths"` too).
#[derive(Clone, Debug)]
pub struct GraphInput {
    /// The input's name, as the model reads it.
    pub name: String,
    /// The shape of one sample (without the batch axis).
    pub sample_shape: Vec<usize>,
}

impl GraphInput {
    /// An input named `name` whose samples have shape `sample_shape`.
    pub fn new(name: &str, sample_shape: &[usize]) -> GraphInput {
        GraphInput { name: name.to_string(), sample_shape: sample_shape.to_vec() }
    }
}

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
    let inputs = [GraphInput::new(crate::model::INPUT, sample_shape)];
    let mut g = Graph::new(&inputs);
    let x = g.input(crate::model::INPUT)?;
    let y = g.layer(model, &x, Some(crate::model::INPUT))?;
    g.finish(&[(crate::model::OUTPUT.to_string(), y)], &[output_shape])
}

/// Writes a [`Model`] with several named inputs as an ONNX file (whole or not at all); see
/// [`model_to_bytes`].
///
/// # Errors
/// As [`model_to_bytes`], and [`Error::Io`] if the file cannot be written.
pub fn save_model(
    model: &dyn Model,
    export: &dyn OnnxModel,
    inputs: &[GraphInput],
    path: impl AsRef<Path>,
) -> Result<()> {
    let bytes = model_to_bytes(model, export, inputs)?;
    crate::io::write_atomically(path.as_ref(), &bytes)
}

/// The ONNX encoding of a model struct: `export` (usually the model itself, which implements
/// [`OnnxModel`]) writes the nodes; the graph's inputs are `inputs` (float `[batch, …]`) and the
/// `"{name}_lengths"` of those whose lengths a layer reads; its outputs are the model's, with the
/// shapes [`Model::output_shapes`] gives.
///
/// # Errors
/// [`Error::InvalidArgument`] naming what cannot be exported, an input the export reads that is
/// not among `inputs`, or a model that does not say its output shapes.
pub fn model_to_bytes(model: &dyn Model, export: &dyn OnnxModel, inputs: &[GraphInput]) -> Result<Vec<u8>> {
    // Every value of a graph is defined once: the inputs' names must be distinct (their lengths'
    // `"{name}_lengths"` included), or the file would be one no runtime loads.
    let bad = |m: String| Err(Error::invalid(format!("ONNX export: {m}")));
    for (k, input) in inputs.iter().enumerate() {
        if input.name.is_empty() {
            return bad(format!("graph input {k} has an empty name"));
        }
        if let Some(other) = inputs[..k].iter().find(|o| o.name == input.name) {
            return bad(format!("two graph inputs are named {:?}", other.name));
        }
        if let Some(other) = inputs.iter().find(|o| format!("{}_lengths", o.name) == input.name) {
            return bad(format!(
                "the graph input {:?} has the name of {:?}'s sequence lengths; rename it",
                input.name, other.name
            ));
        }
    }
    let mut g = Graph::new(inputs);
    let outputs = export.export_model(&mut g)?;
    let batch_shapes: Vec<(String, Vec<usize>)> = inputs
        .iter()
        .map(|i| (i.name.clone(), std::iter::once(1).chain(i.sample_shape.iter().copied()).collect()))
        .collect();
    let known = model.output_shapes(&batch_shapes).ok_or_else(|| {
        Error::invalid(format!(
            "ONNX export: {} does not say its output shapes (Model::output_shapes), which the graph must declare",
            model.name()
        ))
    })??;
    let shapes = outputs
        .iter()
        .map(|(name, _)| {
            known.iter().find(|(n, _)| n == name).map(|(_, shape)| shape.clone()).ok_or_else(|| {
                Error::invalid(format!(
                    "ONNX export: {} gives no shape for its output {name:?}",
                    model.name()
                ))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    g.finish(&outputs, &shapes)
}

/// A graph input or output of element type `elem`, first axis the symbolic `"batch"`.
fn value_info(name: &str, elem: i64, shape: &[usize]) -> Message {
    let dims = shape.iter().enumerate().fold(Message::new(), |m, (i, &d)| {
        let dim = if i == 0 { Message::new().string(2, "batch") } else { Message::new().int(1, d as i64) };
        m.message(1, &dim)
    });
    let tensor = Message::new().int(1, elem).message(2, &dims);
    Message::new().string(1, name).message(2, &Message::new().message(1, &tensor))
}

/// An integer attribute (`AttributeProto`, type INT).
pub fn attr_int(name: &str, v: i64) -> Message {
    Message::new().string(1, name).int(3, v).int(20, 2)
}

/// A float attribute (type FLOAT).
pub fn attr_float(name: &str, v: f32) -> Message {
    Message::new().string(1, name).float(2, v).int(20, 1)
}

/// A list-of-integers attribute (type INTS).
pub fn attr_ints(name: &str, vs: &[usize]) -> Message {
    vs.iter().fold(Message::new().string(1, name), |m, &v| m.int(8, v as i64)).int(20, 7)
}

/// A list-of-strings attribute (type STRINGS).
pub fn attr_strings(name: &str, vs: &[&str]) -> Message {
    vs.iter().fold(Message::new().string(1, name), |m, v| m.string(9, v)).int(20, 8)
}

/// The outputs of [`Graph::recurrent`]: the values holding `y [N, T, H]` (or `[N, H]` for a
/// last-step-only layer), `h_n [N, H]` and, for an LSTM, `c_n [N, H]`.
#[derive(Clone, Debug)]
pub struct RecurrentValues {
    /// The layer's output.
    pub y: String,
    /// The final hidden state, `[N, H]`.
    pub h: String,
    /// The final cell state (LSTM), `[N, H]`.
    pub c: Option<String>,
}

/// An ONNX graph being built: nodes in order, weights as initializers, fresh value names from a
/// counter. Layers and models write into it through [`OnnxLayer`] and [`OnnxModel`].
pub struct Graph {
    inputs: Vec<GraphInput>,
    nodes: Vec<Message>,
    initializers: Vec<Message>,
    names: usize,
    /// Inputs whose lengths a layer read, with the int32 value of them.
    lengths_used: Vec<(String, String)>,
    /// Every name the graph has given a value of its own (fresh names, nodes' outputs).
    defined: std::collections::HashSet<String>,
    /// Every value written so far: nodes' outputs and initializers (a fresh name is taken when
    /// made, written when a node or an initializer gives it its value).
    written: std::collections::HashSet<String>,
    /// A name that a node wrote a second time (or that is a graph input's), refused by `finish`:
    /// a custom layer's explicit output name can meet a generated one.
    defined_twice: Option<String>,
}

impl Graph {
    fn new(inputs: &[GraphInput]) -> Graph {
        Graph {
            inputs: inputs.to_vec(),
            nodes: Vec::new(),
            initializers: Vec::new(),
            names: 0,
            lengths_used: Vec::new(),
            defined: Default::default(),
            written: Default::default(),
            defined_twice: None,
        }
    }

    /// Whether the graph has given `name` to a value of its own.
    fn defines(&self, name: &str) -> bool {
        self.defined.contains(name)
    }

    /// The most steps any graph input has: the first axis of its samples (a sequence `[T, E]`'s
    /// `T`, or `T` of a sequence of token ids `[T]`), for layers that export a table per step.
    pub fn longest_steps(&self) -> Option<usize> {
        self.inputs.iter().filter_map(|i| i.sample_shape.first().copied()).max()
    }

    /// An error naming `layer` unless a table of `dims` values, `bytes` each, fits in a file: a
    /// tensor's element count, and the 2 GiB that protobuf allows a whole ONNX model (a layer that
    /// writes a table per step for the longest sequence would otherwise try to build it from a
    /// declared `T` of any size).
    pub(crate) fn check_table(&self, layer: &str, what: &str, dims: &[usize], bytes: usize) -> Result<()> {
        const LIMIT: usize = 2 << 30;
        let size = crate::tensor::checked_numel(dims).and_then(|n| n.checked_mul(bytes));
        match size {
            Some(size) if size < LIMIT => Ok(()),
            _ => Err(crate::error::Error::invalid(format!(
                "{layer}: its {what} table {dims:?} would not fit in an ONNX file (at most 2 GiB); export with \
                 shorter sequences"
            ))),
        }
    }

    /// `table[..T]` for the `T` of `x` (`[N, T, …]`), read from `x`'s shape when the graph runs:
    /// `Slice(table, 0, Shape(x)[1], axis 0)`.
    pub fn first_steps(&mut self, table: &str, x: &str) -> String {
        self.first_steps_on(table, x, 0)
    }

    /// `table` cut to the first `T` entries along `axis`, `T` the steps of `x` (`[N, T, …]`).
    pub fn first_steps_on(&mut self, table: &str, x: &str, axis: i64) -> String {
        let shape = self.op("Shape", &[x], vec![]);
        let one = self.int64s("axis_one", &[1]);
        let steps = self.op("Gather", &[&shape, &one], vec![]);
        let (zero, axis) = (self.int64s("zero", &[0]), self.int64s("axis", &[axis]));
        self.op("Slice", &[table, &zero, &steps, &axis], vec![])
    }

    /// The int64 `[batch]` lengths graph input of `input` (registered as `sequence_lens` is).
    pub fn lengths_int64(&mut self, input: &str) -> String {
        // Adds the graph input if this is its first use (its int32 cast is made only when
        // `sequence_lens` asks for it: an empty value until then).
        if !self.lengths_used.iter().any(|(i, _)| i == input) {
            self.lengths_used.push((input.to_string(), String::new()));
        }
        format!("{input}_lengths")
    }

    /// A tensor initializer of booleans.
    pub fn bools(&mut self, stem: &str, dims: &[usize], data: &[bool]) -> String {
        let name = self.fresh(stem);
        let raw: Vec<u8> = data.iter().map(|&b| u8::from(b)).collect();
        let message = dims.iter().fold(Message::new(), |m, &d| m.int(1, d as i64));
        self.initializers.push(message.int(2, BOOL).string(8, &name).bytes(9, &raw));
        self.written.insert(name.clone());
        name
    }

    /// The value of the graph input `name` (its own name).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if the graph has no such input.
    pub fn input(&self, name: &str) -> Result<String> {
        match self.inputs.iter().find(|i| i.name == name) {
            Some(i) => Ok(i.name.clone()),
            None => {
                let names: Vec<&str> = self.inputs.iter().map(|i| i.name.as_str()).collect();
                Err(Error::invalid(format!(
                    "ONNX export: no graph input named {name:?}; the inputs are {names:?}"
                )))
            }
        }
    }

    /// The `sequence_lens` value (int32 `[batch]`) for the graph input `input`: the first call
    /// adds the graph input `"{input}_lengths"` (int64) and a `Cast` of it, clamped to int32's
    /// range first (a cast alone wraps: a length of 2³² + 2 had reached the runtime as 2, and
    /// was run as 2 steps instead of being refused as longer than the sequence).
    pub fn sequence_lens(&mut self, input: &str) -> String {
        if let Some((_, v)) = self.lengths_used.iter().find(|(i, v)| i == input && !v.is_empty()) {
            return v.clone();
        }
        let (low, high) =
            (self.int64s("int32_min", &[i32::MIN as i64]), self.int64s("int32_max", &[i32::MAX as i64]));
        let below = self.op("Min", &[&format!("{input}_lengths"), &high], vec![]);
        let clamped = self.op("Max", &[&below, &low], vec![]);
        let v = self.op("Cast", &[&clamped], vec![attr_int("to", INT32)]);
        match self.lengths_used.iter_mut().find(|(i, _)| i == input) {
            Some((_, cast)) => *cast = v.clone(), // read as int64 before
            None => self.lengths_used.push((input.to_string(), v.clone())),
        }
        v
    }

    /// A fresh value name from `stem` (never one of the graph's input names or their lengths',
    /// nor a name the graph has defined already).
    pub fn fresh(&mut self, stem: &str) -> String {
        loop {
            self.names += 1;
            let name = format!("{stem}_{}", self.names);
            if !self.input_or_its_lengths(&name) && !self.defined.contains(&name) {
                self.defined.insert(name.clone());
                return name;
            }
        }
    }

    /// A float initializer (a weight); returns its name.
    ///
    /// # Panics
    /// If `data` does not hold the `dims`' number of values (the message gives both).
    pub fn tensor(&mut self, stem: &str, dims: &[usize], data: &[f32]) -> String {
        assert!(
            crate::tensor::checked_numel(dims) == Some(data.len()),
            "Graph::tensor {stem:?}: dims {dims:?} for {} values (a graph no runtime would load)",
            data.len()
        );
        let name = self.fresh(stem);
        let raw: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        let t = dims.iter().fold(Message::new(), |m, &d| m.int(1, d as i64));
        self.initializers.push(t.int(2, FLOAT).string(8, &name).bytes(9, &raw));
        self.written.insert(name.clone());
        name
    }

    /// An int64 initializer (axes, shapes); returns its name.
    pub fn int64s(&mut self, stem: &str, data: &[i64]) -> String {
        let name = self.fresh(stem);
        let raw: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializers
            .push(Message::new().int(1, data.len() as i64).int(2, INT64).string(8, &name).bytes(9, &raw));
        self.written.insert(name.clone());
        name
    }

    /// An int64 scalar initializer (a 0-d tensor: `Range`'s bounds, a `Gather` that drops its
    /// axis).
    pub fn int64_scalar(&mut self, stem: &str, v: i64) -> String {
        let name = self.fresh(stem);
        let raw = v.to_le_bytes();
        self.initializers.push(Message::new().int(2, INT64).string(8, &name).bytes(9, &raw));
        self.written.insert(name.clone());
        name
    }

    /// The step numbers `0, 1, …, T − 1` of `x` (`[N, T, …]`), int64 `[T]`, computed when the
    /// graph runs (`Range` up to `Shape(x)[1]`): no table in the file, whatever `T` is.
    pub fn steps(&mut self, x: &str) -> String {
        let shape = self.op("Shape", &[x], vec![]);
        let axis = self.int64_scalar("step_axis", 1);
        let t = self.op("Gather", &[&shape, &axis], vec![]); // 0-d: T
        let (zero, one) = (self.int64_scalar("zero", 0), self.int64_scalar("one", 1));
        self.op("Range", &[&zero, &t, &one], vec![])
    }

    /// A float scalar initializer.
    pub fn scalar(&mut self, v: f32) -> String {
        self.tensor("const", &[], &[v])
    }

    /// Whether `name` is a graph input's, or its lengths input's.
    fn input_or_its_lengths(&self, name: &str) -> bool {
        self.inputs.iter().any(|i| i.name == name || name.strip_suffix("_lengths") == Some(i.name.as_str()))
    }

    /// A node with the given outputs (an empty name leaves an optional output out). An output
    /// name the graph already has (a value's, or a graph input's) makes the export fail: ONNX
    /// defines every value once.
    pub fn node(&mut self, op: &str, inputs: &[&str], attrs: Vec<Message>, outputs: &[&str]) {
        let n = inputs.iter().fold(Message::new(), |m, i| m.string(1, i));
        let n = outputs.iter().fold(n, |m, o| m.string(2, o));
        for &o in outputs.iter().filter(|o| !o.is_empty()) {
            self.defined.insert(o.to_string());
            let again = !self.written.insert(o.to_string()) || self.input_or_its_lengths(o);
            if again && self.defined_twice.is_none() {
                self.defined_twice = Some(format!("{o:?} (by a {op} node)"));
            }
        }
        let name = self.fresh(op);
        let n = attrs.iter().fold(n.string(3, &name).string(4, op), |m, a| m.message(5, a));
        self.nodes.push(n);
    }

    /// A node with one output, named fresh; returns that name.
    pub fn op(&mut self, op: &str, inputs: &[&str], attrs: Vec<Message>) -> String {
        let out = self.fresh(&op.to_lowercase());
        self.node(op, inputs, attrs, &[&out]);
        out
    }

    /// Appends the nodes of `layer` reading `x` (with the lengths of graph input `lengths`, if
    /// any); returns the name of its output.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming a layer that has no export or refuses.
    pub fn layer(&mut self, layer: &dyn Layer, x: &str, lengths: Option<&str>) -> Result<String> {
        match layer.onnx() {
            Some(export) => export.export(self, x, lengths),
            None => Err(Error::invalid(format!(
                "ONNX export: {} has no ONNX export (the crate's layers have one; a custom layer can implement \
                 backprop::onnx::OnnxLayer)",
                layer.describe()
            ))),
        }
    }

    /// The graph's bytes, with `outputs` as its outputs (each through an `Identity` named after
    /// the output).
    fn finish(mut self, outputs: &[(String, String)], shapes: &[Vec<usize>]) -> Result<Vec<u8>> {
        // Protobuf, and so every ONNX reader, refuses a message of 2 GiB or more: refuse to write
        // one (the weights and tables are all in memory already; the rest is small).
        check_file_size(self.initializers.iter().chain(&self.nodes).map(|m| m.len() + 16).sum())?;
        // The outputs' names, likewise defined once: not empty, not twice, not an input's, not
        // one the graph made for a value of its own.
        let bad = |m: String| Err(Error::invalid(format!("ONNX export: {m}")));
        if let Some(name) = &self.defined_twice {
            return bad(format!(
                "the value {name} is defined twice (or is a graph input's name); a custom layer naming its \
                 outputs must choose names the graph has not used: Graph::op names them fresh"
            ));
        }
        for (k, (name, _)) in outputs.iter().enumerate() {
            if name.is_empty() {
                return bad(format!("output {k} has an empty name"));
            }
            if outputs[..k].iter().any(|(n, _)| n == name) {
                return bad(format!("two outputs are named {name:?}"));
            }
            let input = |i: &GraphInput| i.name == *name || *name == format!("{}_lengths", i.name);
            if self.inputs.iter().any(input) {
                return bad(format!("the output {name:?} has the name of a graph input"));
            }
            if self.defines(name) {
                return bad(format!(
                    "the output {name:?} has the name of a value inside the graph; rename it"
                ));
            }
        }
        // Lengths asked for (`sequence_lens`, `lengths_int64`) belong to a graph input: a name
        // that is none (a misspelt one) would add a required input of its own.
        for (input, _) in &self.lengths_used {
            if !self.inputs.iter().any(|i| i.name == *input) {
                let names: Vec<&str> = self.inputs.iter().map(|i| i.name.as_str()).collect();
                return bad(format!(
                    "the lengths of {input:?} were read, but the graph has no input of that name; the inputs are \
                     {names:?}"
                ));
            }
        }
        for (name, value) in outputs {
            self.node("Identity", &[value], vec![], &[name]);
        }
        // Every dimension is written as an int64: a sample axis past i64::MAX (a layer that
        // passes any shape through) would be written negative.
        let sample_dims = self
            .inputs
            .iter()
            .flat_map(|i| i.sample_shape.iter())
            .chain(shapes.iter().flat_map(|s| s.iter().skip(1)));
        if let Some(d) = sample_dims.copied().find(|&d| i64::try_from(d).is_err()) {
            return bad(format!("a dimension of {d} cannot be written to ONNX (its dimensions are int64)"));
        }
        let graph = self.nodes.iter().fold(Message::new(), |m, n| m.message(1, n)).string(2, "backprop");
        let mut graph = self.initializers.iter().fold(graph, |m, t| m.message(5, t));
        for input in &self.inputs {
            let shape: Vec<usize> = std::iter::once(1).chain(input.sample_shape.iter().copied()).collect();
            graph = graph.message(11, &value_info(&input.name, FLOAT, &shape));
        }
        for (input, _) in &self.lengths_used {
            graph = graph.message(11, &value_info(&format!("{input}_lengths"), INT64, &[1]));
        }
        for ((name, _), shape) in outputs.iter().zip(shapes) {
            graph = graph.message(12, &value_info(name, FLOAT, shape));
        }
        let opset = Message::new().string(1, "").int(2, OPSET);
        let model = Message::new()
            .int(1, IR_VERSION)
            .string(2, "backprop")
            .string(3, env!("CARGO_PKG_VERSION"))
            .message(7, &graph)
            .message(8, &opset);
        Ok(model.into_bytes())
    }
}

/// An error unless a graph whose weights, tables and nodes encode to `size` bytes fits in an
/// ONNX file: protobuf refuses messages of 2 GiB or more (a megabyte is kept for the rest).
fn check_file_size(size: usize) -> Result<()> {
    const LIMIT: usize = (2 << 30) - (1 << 20);
    if size < LIMIT {
        return Ok(());
    }
    Err(Error::invalid(format!(
        "ONNX export: the graph's weights and tables come to {}, more than the 2 GiB that protobuf allows a \
         whole ONNX file (ONNX Runtime and onnx.load cannot read it); export a smaller model or shorter \
         sequences",
        crate::tensor::human_bytes(size)
    )))
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

#[cfg(test)]
mod tests {
    /// A graph of 2 GiB or more is refused before a file is written, with its size in the message.
    #[test]
    fn files_protobuf_cannot_hold_are_refused() {
        assert!(super::check_file_size(1 << 30).is_ok());
        let err = super::check_file_size(2 << 30).unwrap_err().to_string();
        assert!(err.contains("2 GiB") && err.contains("protobuf"), "{err}");
        assert!(super::check_file_size(usize::MAX).is_err());
    }
}
