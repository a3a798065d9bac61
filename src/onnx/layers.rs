//! Each of the crate's layers as ONNX operators ([`OnnxLayer`]), and the recurrent layers with
//! their state in and out ([`Graph::recurrent`]).

use super::proto::Message;
use super::{Graph, INT64, OnnxLayer, RecurrentValues, attr_float, attr_int, attr_ints, attr_strings, param};
use crate::error::{Error, Result};
use crate::layers::activation::{Activation, Elementwise};
use crate::layers::pool::Window;
use crate::layers::{
    AvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d, Dense, Dropout, Embedding, Flatten, Gelu, GlobalAvgPool,
    Gru, Layer, LayerNorm, LeakyRelu, LogSoftmax, Lstm, MaxPool2d, Relu, Residual, Rnn, Sequential, Sigmoid,
    Softmax, Tanh,
};
use crate::tensor::Tensor;
use std::any::Any;

impl OnnxLayer for Sequential {
    fn export(&self, g: &mut Graph, x: &str, lengths: Option<&str>) -> Result<String> {
        self.layers().try_fold(x.to_string(), |x, l| g.layer(l, &x, lengths))
    }
}

impl OnnxLayer for Residual {
    fn export(&self, g: &mut Graph, x: &str, lengths: Option<&str>) -> Result<String> {
        let fx = g.layer(self.body(), x, lengths)?;
        Ok(g.op("Add", &[x, &fx], vec![])) // y = x + f(x)
    }
}

impl OnnxLayer for Dense {
    fn export(&self, g: &mut Graph, x: &str, _: Option<&str>) -> Result<String> {
        let (o, i) = (self.outputs(), self.inputs());
        let w = self.weight().value.data();
        let w_t: Vec<f32> = (0..i * o).map(|k| w[(k % o) * i + k / o]).collect(); // Wᵀ [in, out]
        let wt = g.tensor("dense_weight_t", &[i, o], &w_t);
        let y = g.op("MatMul", &[x, &wt], vec![]);
        Ok(match self.bias() {
            Some(b) => {
                let b = g.tensor("dense_bias", b.value.shape(), b.value.data());
                g.op("Add", &[&y, &b], vec![])
            }
            None => y,
        })
    }
}

impl OnnxLayer for Conv2d {
    fn export(&self, g: &mut Graph, x: &str, _: Option<&str>) -> Result<String> {
        let set = self.settings();
        let ((kh, kw), (sh, sw), (ph, pw), (dh, dw)) = (set.kernel, set.stride, set.padding, set.dilation);
        fits_int64(&self.describe(), &[kh, kw, sh, sw, ph, pw, dh, dw])?;
        let w = g.tensor("conv_weight", self.weight().value.shape(), self.weight().value.data());
        let mut inputs = vec![x.to_string(), w];
        if let Some(b) = self.bias() {
            inputs.push(g.tensor("conv_bias", b.value.shape(), b.value.data()));
        }
        let attrs = vec![
            attr_ints("kernel_shape", &[kh, kw]),
            attr_ints("strides", &[sh, sw]),
            attr_ints("pads", &[ph, pw, ph, pw]),
            attr_ints("dilations", &[dh, dw]),
        ];
        let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        Ok(g.op("Conv", &refs, attrs))
    }
}

/// Refuses a window setting that ONNX's int64 attributes cannot hold: the crate takes any stride
/// (one past the input gives one window), and `usize::MAX` written as an int64 reads back as −1.
fn fits_int64(layer: &str, settings: &[usize]) -> Result<()> {
    match settings.iter().find(|&&v| i64::try_from(v).is_err()) {
        Some(v) => Err(Error::invalid(format!(
            "{layer}: a kernel, stride, padding or dilation of {v} cannot be written to ONNX (its attributes are int64); any stride past the padded input gives the same single window"
        ))),
        None => Ok(()),
    }
}

fn window(layer: &str, w: Window) -> Result<Vec<Message>> {
    fits_int64(layer, &[w.kernel.0, w.kernel.1, w.stride.0, w.stride.1, w.padding.0, w.padding.1])?;
    Ok(vec![
        attr_ints("kernel_shape", &[w.kernel.0, w.kernel.1]),
        attr_ints("strides", &[w.stride.0, w.stride.1]),
        attr_ints("pads", &[w.padding.0, w.padding.1, w.padding.0, w.padding.1]),
    ])
}

impl OnnxLayer for MaxPool2d {
    fn export(&self, g: &mut Graph, x: &str, _: Option<&str>) -> Result<String> {
        Ok(g.op("MaxPool", &[x], window(&self.describe(), self.window())?))
    }
}

impl OnnxLayer for AvgPool2d {
    fn export(&self, g: &mut Graph, x: &str, _: Option<&str>) -> Result<String> {
        let mut attrs = window(&self.describe(), self.window())?;
        attrs.push(attr_int("count_include_pad", 1));
        Ok(g.op("AveragePool", &[x], attrs))
    }
}

impl OnnxLayer for GlobalAvgPool {
    fn export(&self, g: &mut Graph, x: &str, _: Option<&str>) -> Result<String> {
        let pooled = g.op("GlobalAveragePool", &[x], vec![]); // [N, C, 1, 1]
        Ok(g.op("Flatten", &[&pooled], vec![attr_int("axis", 1)]))
    }
}

impl OnnxLayer for Flatten {
    fn export(&self, g: &mut Graph, x: &str, _: Option<&str>) -> Result<String> {
        Ok(g.op("Flatten", &[x], vec![attr_int("axis", 1)]))
    }
}

/// Layers that are one ONNX operator of the same meaning, without attributes.
macro_rules! one_operator {
    ($($ty:ty => $op:literal),*) => {$(
        impl OnnxLayer for $ty {
            fn export(&self, g: &mut Graph, x: &str, _: Option<&str>) -> Result<String> {
                Ok(g.op($op, &[x], vec![]))
            }
        }
    )*};
}
one_operator!(Relu => "Relu", Sigmoid => "Sigmoid", Tanh => "Tanh", Dropout => "Identity");

/// The export of an element-wise activation layer: the crate's own (f, f′) pairs have one; an
/// activation defined elsewhere has none (refused by name).
pub(crate) fn activation_export<A: Activation>(layer: &Elementwise<A>) -> Option<&dyn OnnxLayer> {
    let any: &dyn Any = layer;
    if let Some(l) = any.downcast_ref::<Sigmoid>() {
        return Some(l);
    }
    if let Some(l) = any.downcast_ref::<Tanh>() {
        return Some(l);
    }
    if let Some(l) = any.downcast_ref::<LeakyRelu>() {
        return Some(l);
    }
    any.downcast_ref::<Gelu>().map(|l| l as &dyn OnnxLayer)
}

impl OnnxLayer for LeakyRelu {
    fn export(&self, g: &mut Graph, x: &str, _: Option<&str>) -> Result<String> {
        Ok(g.op("LeakyRelu", &[x], vec![attr_float("alpha", self.slope())]))
    }
}

impl OnnxLayer for Softmax {
    fn export(&self, g: &mut Graph, x: &str, _: Option<&str>) -> Result<String> {
        Ok(g.op("Softmax", &[x], vec![attr_int("axis", if self.is_last_axis() { -1 } else { 1 })]))
    }
}

impl OnnxLayer for LogSoftmax {
    fn export(&self, g: &mut Graph, x: &str, _: Option<&str>) -> Result<String> {
        Ok(g.op("LogSoftmax", &[x], vec![attr_int("axis", if self.is_last_axis() { -1 } else { 1 })]))
    }
}

impl OnnxLayer for Gelu {
    /// GELU from operators opset 17 has: exact `x·½(1 + erf(x/√2))`, or
    /// `x·½(1 + tanh(√(2/π)·(x + 0.044715·x³)))`.
    fn export(&self, g: &mut Graph, x: &str, _: Option<&str>) -> Result<String> {
        let (one, half) = (g.scalar(1.0), g.scalar(0.5));
        let inner = if self.is_tanh_approximation() {
            let (a, b) = (g.scalar(0.044715), g.scalar((2.0 / std::f32::consts::PI).sqrt()));
            let x2 = g.op("Mul", &[x, x], vec![]);
            let x3 = g.op("Mul", &[&x2, x], vec![]);
            let ax3 = g.op("Mul", &[&x3, &a], vec![]);
            let s = g.op("Add", &[x, &ax3], vec![]);
            let u = g.op("Mul", &[&s, &b], vec![]);
            g.op("Tanh", &[&u], vec![])
        } else {
            let root2 = g.scalar(std::f32::consts::SQRT_2);
            let scaled = g.op("Div", &[x, &root2], vec![]);
            g.op("Erf", &[&scaled], vec![])
        };
        let plus_one = g.op("Add", &[&inner, &one], vec![]);
        let times_x = g.op("Mul", &[x, &plus_one], vec![]);
        Ok(g.op("Mul", &[&times_x, &half], vec![]))
    }
}

fn batch_norm(g: &mut Graph, layer: &dyn Layer, x: &str, mean: &Tensor, var: &Tensor, eps: f32) -> String {
    let (scale, shift) = (param(layer, "weight"), param(layer, "bias"));
    let scale = g.tensor("bn_scale", scale.shape(), scale.data());
    let shift = g.tensor("bn_shift", shift.shape(), shift.data());
    let mean = g.tensor("bn_mean", mean.shape(), mean.data());
    let var = g.tensor("bn_var", var.shape(), var.data());
    g.op("BatchNormalization", &[x, &scale, &shift, &mean, &var], vec![attr_float("epsilon", eps)])
}

impl OnnxLayer for BatchNorm1d {
    fn export(&self, g: &mut Graph, x: &str, _: Option<&str>) -> Result<String> {
        Ok(batch_norm(g, self, x, self.running_mean(), self.running_var(), self.epsilon()))
    }
}

impl OnnxLayer for BatchNorm2d {
    fn export(&self, g: &mut Graph, x: &str, _: Option<&str>) -> Result<String> {
        Ok(batch_norm(g, self, x, self.running_mean(), self.running_var(), self.epsilon()))
    }
}

impl OnnxLayer for Embedding {
    fn export(&self, g: &mut Graph, x: &str, _: Option<&str>) -> Result<String> {
        let ids = g.op("Cast", &[x], vec![attr_int("to", INT64)]);
        let table = g.tensor("embedding_weight", self.weight().value.shape(), self.weight().value.data());
        Ok(g.op("Gather", &[&table, &ids], vec![attr_int("axis", 0)]))
    }
}

impl OnnxLayer for LayerNorm {
    fn export(&self, g: &mut Graph, x: &str, _: Option<&str>) -> Result<String> {
        let d = self.dim();
        let (scale, bias) = match self.affine() {
            Some((w, b)) => (w.value.clone(), b.value.clone()),
            None => (Tensor::ones(&[d]), Tensor::zeros(&[d])),
        };
        let scale = g.tensor("ln_scale", &[d], scale.data());
        let bias = g.tensor("ln_bias", &[d], bias.data());
        let attrs = vec![attr_int("axis", -1), attr_float("epsilon", self.epsilon())];
        Ok(g.op("LayerNormalization", &[x, &scale, &bias], attrs))
    }
}

/// What ONNX needs to know of a recurrent layer: its operator, the order of its gate blocks in
/// ONNX's convention, its extra attributes. Implemented by [`Rnn`], [`Lstm`] and [`Gru`], and
/// sealed: [`Graph::recurrent`] reads a layer's parameters by these layers' names and layout.
pub trait RecurrentOnnx: Layer + sealed::Sealed {
    /// `"LSTM"`, and `order[k]` = which of this crate's gate blocks goes k-th in ONNX's order.
    fn operator(&self) -> (&'static str, &'static [usize]);
    /// The operator's attributes besides `hidden_size`.
    fn attributes(&self) -> Vec<Message>;
    /// Hidden units.
    fn hidden_units(&self) -> usize;
    /// Whether the layer outputs only its last valid step.
    fn last_step(&self) -> bool;
    /// Whether it carries state between calls (not exportable).
    fn carries_state(&self) -> bool;
}

/// [`RecurrentOnnx`] is for the crate's recurrent layers only: [`Graph::recurrent`] reads their
/// parameters by their names and gate layout, which another layer would not have (a user's
/// implementation had panicked inside that `Result` API).
mod sealed {
    pub trait Sealed {}
}

macro_rules! recurrent_onnx {
    ($ty:ty, $op:literal, $order:expr, |$l:ident| $attrs:expr) => {
        impl sealed::Sealed for $ty {}
        impl RecurrentOnnx for $ty {
            fn operator(&self) -> (&'static str, &'static [usize]) {
                ($op, $order)
            }
            fn attributes(&self) -> Vec<Message> {
                let $l = self;
                $attrs
            }
            fn hidden_units(&self) -> usize {
                self.hidden()
            }
            fn last_step(&self) -> bool {
                self.is_last_step_only()
            }
            fn carries_state(&self) -> bool {
                self.is_stateful()
            }
        }

        impl OnnxLayer for $ty {
            fn export(&self, g: &mut Graph, x: &str, lengths: Option<&str>) -> Result<String> {
                Ok(g.recurrent(self, x, lengths, None, false)?.y)
            }
        }
    };
}
recurrent_onnx!(Lstm, "LSTM", &[0, 3, 1, 2], |_l| vec![]);
recurrent_onnx!(Gru, "GRU", &[1, 0, 2], |_l| vec![attr_int("linear_before_reset", 1)]);
recurrent_onnx!(Rnn, "RNN", &[0], |l| vec![attr_strings(
    "activations",
    &[if l.is_relu() { "Relu" } else { "Tanh" }]
)]);

impl Graph {
    /// A recurrent layer reading `x [N, T, F]` with the lengths of graph input `lengths` (if any)
    /// from the initial state `initial = (h₀, c₀)` (values `[N, H]`; `None`: zeros), as ONNX's
    /// `RNN`/`LSTM`/`GRU` between transposes: `W [1, G·H, F]`, `R [1, G·H, H]`, `B [1, 2·G·H]` with
    /// the gate blocks in ONNX's order. Returns the output and the final state, for a model
    /// struct that hands the state on (an encoder to a decoder); with `want_state` false, the
    /// final state is not written out (`h` and `c` are then empty, unless the layer outputs its
    /// last step, which is `h`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a stateful layer (a graph has no state between calls).
    pub fn recurrent(
        &mut self,
        layer: &dyn RecurrentOnnx,
        x: &str,
        lengths: Option<&str>,
        initial: Option<(&str, Option<&str>)>,
        want_state: bool,
    ) -> Result<RecurrentValues> {
        if layer.carries_state() {
            return Err(Error::invalid(format!(
                "ONNX export: {} is stateful (carries its state between calls), which an ONNX graph cannot",
                layer.describe()
            )));
        }
        let ((op, order), hidden) = (layer.operator(), layer.hidden_units());
        if op != "LSTM" && initial.is_some_and(|(_, c)| c.is_some()) {
            return Err(Error::invalid(format!(
                "ONNX export: an initial cell state c was given for {}, which has none (only an LSTM does)",
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
        let mut attrs = layer.attributes();
        attrs.push(attr_int("hidden_size", hidden as i64));
        let time_major = self.op("Transpose", &[x], vec![attr_ints("perm", &[1, 0, 2])]); // [T, N, F]
        let seq_lens = lengths.map(|input| self.sequence_lens(input)).unwrap_or_default();
        // ONNX's initial states are [1, N, H]: one direction.
        let unsqueeze0 = |g: &mut Graph, v: &str| {
            let axes = g.int64s("axes", &[0]);
            g.op("Unsqueeze", &[v, &axes], vec![])
        };
        let (h0, c0) = match initial {
            Some((h, c)) => (unsqueeze0(self, h), c.map(|c| unsqueeze0(self, c)).unwrap_or_default()),
            None => (String::new(), String::new()),
        };
        let is_lstm = op == "LSTM";
        let (y, y_h) = (self.fresh("rnn_y"), self.fresh("rnn_y_h"));
        let y_c = if is_lstm { self.fresh("rnn_y_c") } else { String::new() };
        let mut inputs = vec![time_major.as_str(), &w, &r, &b, &seq_lens, &h0];
        if is_lstm {
            inputs.push(&c0);
        }
        // Trailing optional inputs left out; empty names skip the ones in between.
        while inputs.last().is_some_and(|s| s.is_empty()) {
            inputs.pop();
        }
        let mut outputs = vec![y.as_str(), &y_h];
        if is_lstm {
            outputs.push(&y_c);
        }
        self.node(op, &inputs, attrs, &outputs); // Y [T, 1, N, H], Y_h [1, N, H], Y_c [1, N, H]
        let squeeze0 = |g: &mut Graph, v: &str| {
            let axes = g.int64s("axes", &[0]);
            g.op("Squeeze", &[v, &axes], vec![]) // [N, H]
        };
        let h_n = if want_state || layer.last_step() { squeeze0(self, &y_h) } else { String::new() };
        let c_n = (is_lstm && want_state).then(|| squeeze0(self, &y_c));
        let out = if layer.last_step() {
            h_n.clone()
        } else {
            let axes = self.int64s("axes", &[1]);
            let y = self.op("Squeeze", &[&y, &axes], vec![]); // [T, N, H]
            self.op("Transpose", &[&y], vec![attr_ints("perm", &[1, 0, 2])]) // [N, T, H]
        };
        Ok(RecurrentValues { y: out, h: h_n, c: c_n })
    }
}
