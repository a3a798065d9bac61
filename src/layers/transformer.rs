//! A Transformer encoder block over sequences `[N, T, E]`, as PyTorch's
//! `nn.TransformerEncoderLayer(E, H, F, batch_first=True, norm_first=…)`, with its parameter
//! names (`self_attn.in_proj_weight`, …, `linear1.weight`, `linear2.weight`, `norm1.weight`,
//! `norm2.weight` and their biases): self-attention and a position-wise feed-forward network, each
//! inside a residual connection with a layer norm.
//!
//! ```text
//! post-LN (PyTorch's default):  h = LN₁(x + Drop(SA(x)))            y = LN₂(h + Drop(FF(h)))
//! pre-LN  (norm_first):         h = x + Drop(SA(LN₁(x)))            y = h + Drop(FF(LN₂(h)))
//! FF(z) = W₂·Drop(act(W₁·z + b₁)) + b₂,   act = ReLU or GELU (exact, with erf)
//! ```
//!
//! Backward is the same lines read from the end: a residual `u = v + f(v)` passes its gradient
//! both ways (`dv = du + f'(v)ᵀ·du`), so every block sends its input an undiminished copy of the
//! output's gradient — the reason deep stacks of these train. Each part's backward is its own
//! layer's ([`MultiHeadAttention`], [`Dense`], [`LayerNorm`], [`Dropout`], the activation): this
//! file only wires them.

use super::{
    Dense, Dropout, Gelu, InputGrad, Layer, LayerNorm, MultiHeadAttention, Param, Pass, Relu, State,
    StateMut, Visit, shape_error,
};
use crate::error::Result;
use crate::privacy::per_example::{PerExample, PerExampleGrads, backward_per_example};
use crate::tensor::Tensor;
use crate::tensor::init::Init;

/// The feed-forward network's nonlinearity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeedForwardActivation {
    /// `max(0, x)` (PyTorch's default).
    Relu,
    /// `x·Φ(x)` with the exact normal CDF.
    Gelu,
}

/// One Transformer encoder block. See the [module docs](self).
///
/// ```
/// use backprop::layers::{InputGrad, Layer, Pass, TransformerEncoderLayer};
/// use backprop::Tensor;
/// let mut block = TransformerEncoderLayer::new(8, 2, 16).norm_first().dropout(0.0);
/// let x = Tensor::randn(&[2, 5, 8], 0.0, 1.0, 1);
/// let y = block.forward(&x, Pass::TRAIN);
/// assert_eq!(y.shape(), &[2, 5, 8]);
/// let dx = block.backward(&Tensor::ones(&[2, 5, 8]), InputGrad::Needed).unwrap();
/// assert_eq!(dx.shape(), &[2, 5, 8]);
/// ```
pub struct TransformerEncoderLayer {
    norm_first: bool,
    activation: FeedForwardActivation,
    self_attn: MultiHeadAttention,
    linear1: Dense,
    linear2: Dense,
    norm1: LayerNorm,
    norm2: LayerNorm,
    dropout: Dropout,
    dropout1: Dropout,
    dropout2: Dropout,
    relu: Relu,
    gelu: Gelu,
    /// The latest output's shape (empty before the first forward pass), which `backward`'s
    /// gradient must have.
    out_shape: Vec<usize>,
}

impl TransformerEncoderLayer {
    /// A post-LN block over `embed` features with `heads` heads and a feed-forward width of
    /// `feedforward`, ReLU, dropout 0.1, `ε = 1e-5` (PyTorch's defaults; the linear layers' weights
    /// drawn as PyTorch draws `nn.Linear`'s, `U(±1/√fan_in)`, their biases starting at zero as
    /// every [`Dense`] bias of this crate does, where PyTorch draws them too).
    ///
    /// # Panics
    /// If `heads` is 0 or does not divide `embed`.
    pub fn new(embed: usize, heads: usize, feedforward: usize) -> TransformerEncoderLayer {
        // Drawn with seeds of their own as defaults: a model-wide seed redraws them by name.
        let linear = |i, o, seed| {
            let mut d = Dense::new(i, o).init(Init::TorchDefault);
            d.weight = Param::drawn(&[o, i], Init::TorchDefault, seed);
            d
        };
        TransformerEncoderLayer {
            norm_first: false,
            activation: FeedForwardActivation::Relu,
            self_attn: MultiHeadAttention::new(embed, heads).dropout(0.1),
            linear1: linear(embed, feedforward, 4),
            linear2: linear(feedforward, embed, 5),
            norm1: LayerNorm::new(embed),
            norm2: LayerNorm::new(embed),
            dropout: Dropout::new(0.1).seed(6),
            dropout1: Dropout::new(0.1).seed(7),
            dropout2: Dropout::new(0.1).seed(8),
            relu: Relu::new(),
            gelu: Gelu::new(),
            out_shape: Vec::new(),
        }
    }

    /// Draws the attention's and the linear layers' parameters from `seed` (the layer norms start
    /// at 1 and 0; a model-wide seed then keeps them), and seeds the four dropouts' generators
    /// from it too (by their names, as [`fit`](crate::train::fit) does).
    pub fn seed(self, seed: u64) -> TransformerEncoderLayer {
        self.draw(seed, false)
    }

    /// [`TransformerEncoderLayer::seed`], with the parameters drawn as defaults, which a
    /// model-wide seed redraws by name: a stack's blocks, each seeded with its index, differ
    /// outside a model too.
    pub(crate) fn default_seed(self, seed: u64) -> TransformerEncoderLayer {
        self.draw(seed, true)
    }

    fn draw(mut self, seed: u64, defaults: bool) -> TransformerEncoderLayer {
        self.self_attn = if defaults { self.self_attn.default_seed(seed) } else { self.self_attn.seed(seed) };
        for (linear, k) in [(&mut self.linear1, 1), (&mut self.linear2, 2)] {
            let shape = linear.weight.value.shape().to_vec();
            linear.weight = Param::drawn(&shape, Init::TorchDefault, seed.wrapping_mul(3).wrapping_add(k));
            if !defaults {
                linear.weight.init = None;
            }
            if let Some(b) = linear.bias.as_mut() {
                b.value.fill(0.0);
            }
        }
        crate::layers::reseed(&mut self, seed);
        self
    }

    /// Layer norms before each part (`norm_first=True`): the pre-LN block.
    pub fn norm_first(mut self) -> TransformerEncoderLayer {
        self.norm_first = true;
        self
    }

    /// The feed-forward network's nonlinearity.
    pub fn activation(mut self, activation: FeedForwardActivation) -> TransformerEncoderLayer {
        self.activation = activation;
        self
    }

    /// The probability of each of the four dropouts, as `nn.TransformerEncoderLayer(dropout=p)`
    /// sets them: on the attention weights ([`MultiHeadAttention::dropout`]), inside the
    /// feed-forward network, after the attention and after the feed-forward network (PyTorch's
    /// `self_attn.dropout`, `dropout`, `dropout1`, `dropout2`).
    ///
    /// The dropouts keep their generators: `seed(s)` before or after this seeds them alike.
    ///
    /// # Panics
    /// If `p` is not in `[0, 1]`.
    pub fn dropout(mut self, p: f32) -> TransformerEncoderLayer {
        self.self_attn = self.self_attn.dropout(p);
        self.dropout = self.dropout.with_p(p);
        self.dropout1 = self.dropout1.with_p(p);
        self.dropout2 = self.dropout2.with_p(p);
        self
    }

    /// Self-attention that lets each step see only itself and earlier steps.
    pub fn causal(mut self) -> TransformerEncoderLayer {
        self.self_attn = self.self_attn.causal();
        self
    }

    /// The most memory, in bytes, that the block's attention may keep for the backward pass
    /// (default 2 GiB): [`MultiHeadAttention::activation_budget`].
    pub fn activation_budget(mut self, bytes: usize) -> TransformerEncoderLayer {
        self.self_attn = self.self_attn.activation_budget(bytes);
        self
    }

    /// `ε` of both layer norms.
    ///
    /// # Panics
    /// If `eps` is negative or not finite.
    pub fn eps(mut self, eps: f32) -> TransformerEncoderLayer {
        (self.norm1, self.norm2) = (self.norm1.eps(eps), self.norm2.eps(eps));
        self
    }

    /// Whether the layer norms come first (pre-LN).
    pub fn is_norm_first(&self) -> bool {
        self.norm_first
    }

    /// `Drop(FF(z))` for rows `z`.
    fn feed_forward(&mut self, z: Tensor, pass: Pass<'_>) -> Tensor {
        let a = self.linear1.forward_owned(z, pass);
        let a = match self.activation {
            FeedForwardActivation::Relu => self.relu.forward_owned(a, pass),
            FeedForwardActivation::Gelu => self.gelu.forward_owned(a, pass),
        };
        let a = self.dropout.forward_owned(a, pass);
        let f = self.linear2.forward_owned(a, pass);
        self.dropout2.forward_owned(f, pass)
    }

    /// `dL/dz` from `dL/d(Drop(FF(z)))`; the linear layers' gradients accumulate (or, with
    /// `per_example`, go to each example's slots).
    fn feed_forward_backward(&mut self, g: &Tensor, mut per_example: Option<&mut PerExampleGrads>) -> Tensor {
        let g = drop_back(&mut self.dropout2, g);
        let g = back(&mut self.linear2, &g, per_example.as_deref_mut());
        let g = self.dropout.backward_owned(g);
        let g = match self.activation {
            FeedForwardActivation::Relu => self.relu.backward_in_place(g),
            FeedForwardActivation::Gelu => self.gelu.backward_owned(g),
        };
        back(&mut self.linear1, &g, per_example)
    }

    /// `dL/dv` from `dL/d(Drop(SA(v)))`; the attention's gradients accumulate.
    fn attention_backward(&mut self, g: &Tensor, per_example: Option<&mut PerExampleGrads>) -> Tensor {
        let g = drop_back(&mut self.dropout1, g);
        back(&mut self.self_attn, &g, per_example)
    }

    /// The backward pass, parts in the order of [`Visit::visit`] (which follows it, so that
    /// per-example slots are handed out in that order).
    fn run_backward(&mut self, dy: &Tensor, mut per_example: Option<&mut PerExampleGrads>) -> Tensor {
        // The block's own check, so that a wrong gradient is not reported by whichever part
        // meets it first (a dropout, a dense layer, a layer norm).
        super::check_grad(&self.describe(), &self.out_shape, dy);
        if self.norm_first {
            // y = h + Drop(FF(LN₂(h)))  →  dh = dy + LN₂'ᵀ·FF'ᵀ·dy
            let d_ff = self.feed_forward_backward(dy, per_example.as_deref_mut());
            let dh = add_into(back(&mut self.norm2, &d_ff, per_example.as_deref_mut()), dy);
            // h = x + Drop(SA(LN₁(x)))  →  dx = dh + LN₁'ᵀ·SA'ᵀ·dh
            let d_sa = self.attention_backward(&dh, per_example.as_deref_mut());
            add_into(back(&mut self.norm1, &d_sa, per_example), &dh)
        } else {
            // y = LN₂(v), v = h + Drop(FF(h))  →  dv = LN₂'ᵀ·dy;  dh = dv + FF'ᵀ·dv
            let dv = back(&mut self.norm2, dy, per_example.as_deref_mut());
            let dh = add_into(self.feed_forward_backward(&dv, per_example.as_deref_mut()), &dv);
            // h = LN₁(u), u = x + Drop(SA(x))  →  du = LN₁'ᵀ·dh;  dx = du + SA'ᵀ·du
            let du = back(&mut self.norm1, &dh, per_example.as_deref_mut());
            add_into(self.attention_backward(&du, per_example), &du)
        }
    }

    /// The parts with parameters, in the order the backward pass reaches them.
    fn parts(&self) -> [(&'static str, &dyn Visit); 5] {
        let (a, l1, l2, n1, n2): (&dyn Visit, &dyn Visit, &dyn Visit, &dyn Visit, &dyn Visit) =
            (&self.self_attn, &self.linear1, &self.linear2, &self.norm1, &self.norm2);
        if self.norm_first {
            [("linear2", l2), ("linear1", l1), ("norm2", n2), ("self_attn", a), ("norm1", n1)]
        } else {
            [("norm2", n2), ("linear2", l2), ("linear1", l1), ("norm1", n1), ("self_attn", a)]
        }
    }
}

/// A part's input gradient: its backward pass, or its per-example one.
fn back(part: &mut dyn Layer, g: &Tensor, per_example: Option<&mut PerExampleGrads>) -> Tensor {
    match per_example {
        Some(grads) => backward_per_example(part, g, InputGrad::Needed, grads),
        None => part.backward(g, InputGrad::Needed),
    }
    .expect("an input gradient that was asked for")
}

/// `a + b`, elementwise (same shapes), in `a`'s memory (addition commutes exactly, so the
/// residual sums `x + f(x)` are written as `f(x) + x` without a copy of either).
fn add_into(mut a: Tensor, b: &Tensor) -> Tensor {
    a.axpy(1.0, b);
    a
}

/// Dropout's backward pass, borrowing `g` when the forward pass was the identity (inference, or
/// `p = 0`) instead of copying it.
fn drop_back<'g>(dropout: &mut Dropout, g: &'g Tensor) -> std::borrow::Cow<'g, Tensor> {
    if dropout.was_identity() {
        std::borrow::Cow::Borrowed(g)
    } else {
        std::borrow::Cow::Owned(dropout.backward_owned(g.clone_in_parallel()))
    }
}

impl Layer for TransformerEncoderLayer {
    fn describe(&self) -> String {
        let e = self.self_attn.embed();
        let order = if self.norm_first { "pre-LN" } else { "post-LN" };
        let causal = if self.self_attn.is_causal() { ", causal" } else { "" };
        format!(
            "TransformerEncoderLayer({e}, heads={}, feedforward={}, {order}, {:?}{causal})",
            self.self_attn.heads(),
            self.linear1.outputs(),
            self.activation
        )
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        let e = self.self_attn.embed();
        match input {
            [_, t, width] if *width == e && *t > 0 => {}
            _ => return Err(shape_error(&self.describe(), format!("[N, T ≥ 1, {e}]"), input)),
        }
        // Every part's own check, in the order the input meets them: a width of 0, weights that
        // would not fit, a feed-forward layer of no units — each named by its layer.
        self.norm1.output_shape(input)?;
        self.self_attn.output_shape(input)?;
        let hidden = self.linear1.output_shape(input)?;
        self.linear2.output_shape(&hidden)?;
        self.norm2.output_shape(input)
    }

    fn forward(&mut self, x: &Tensor, pass: Pass<'_>) -> Tensor {
        self.out_shape = self.output_shape(x.shape()).unwrap_or_else(|e| panic!("{e}"));
        if self.norm_first {
            // h = x + Drop(SA(LN₁(x)));  y = h + Drop(FF(LN₂(h)))
            let z = self.norm1.forward(x, pass);
            let a = self.self_attn.forward_owned(z, pass);
            let h = add_into(self.dropout1.forward_owned(a, pass), x);
            let z = self.norm2.forward(&h, pass);
            add_into(self.feed_forward(z, pass), &h)
        } else {
            // h = LN₁(x + Drop(SA(x)));  y = LN₂(h + Drop(FF(h)))
            let a = self.self_attn.forward(x, pass);
            let h = self.norm1.forward(&add_into(self.dropout1.forward_owned(a, pass), x), pass);
            let f = self.feed_forward(h.clone(), pass);
            self.norm2.forward(&add_into(f, &h), pass)
        }
    }

    fn backward(&mut self, dy: &Tensor, input_grad: InputGrad) -> Option<Tensor> {
        let dx = self.run_backward(dy, None);
        input_grad.is_needed().then_some(dx)
    }

    fn per_example(&mut self) -> Option<&mut dyn PerExample> {
        Some(self)
    }

    fn onnx(&self) -> Option<&dyn crate::onnx::OnnxLayer> {
        Some(self)
    }
}

impl crate::onnx::OnnxLayer for TransformerEncoderLayer {
    /// The parts' own exports wired with `Add`s (dropout is the identity in inference).
    fn export(&self, g: &mut crate::onnx::Graph, x: &str, lengths: Option<&str>) -> Result<String> {
        let feed_forward = |g: &mut crate::onnx::Graph, z: &str| -> Result<String> {
            let a = g.layer(&self.linear1, z, lengths)?;
            let a = match self.activation {
                FeedForwardActivation::Relu => g.layer(&self.relu, &a, lengths)?,
                FeedForwardActivation::Gelu => g.layer(&self.gelu, &a, lengths)?,
            };
            g.layer(&self.linear2, &a, lengths)
        };
        if self.norm_first {
            let z = g.layer(&self.norm1, x, lengths)?;
            let a = g.layer(&self.self_attn, &z, lengths)?;
            let h = g.op("Add", &[x, &a], vec![]);
            let z = g.layer(&self.norm2, &h, lengths)?;
            let f = feed_forward(g, &z)?;
            Ok(g.op("Add", &[&h, &f], vec![]))
        } else {
            let a = g.layer(&self.self_attn, x, lengths)?;
            let u = g.op("Add", &[x, &a], vec![]);
            let h = g.layer(&self.norm1, &u, lengths)?;
            let f = feed_forward(g, &h)?;
            let v = g.op("Add", &[&h, &f], vec![]);
            g.layer(&self.norm2, &v, lengths)
        }
    }
}

impl PerExample for TransformerEncoderLayer {
    fn backward_per_example(
        &mut self,
        dy: &Tensor,
        input_grad: InputGrad,
        grads: &mut PerExampleGrads,
    ) -> Option<Tensor> {
        let dx = self.run_backward(dy, Some(grads));
        input_grad.is_needed().then_some(dx)
    }
}

impl Visit for TransformerEncoderLayer {
    /// PyTorch's names (`self_attn.in_proj_weight`, `linear1.weight`, `norm1.bias`, …), in the
    /// order the backward pass reaches the parts.
    fn visit<'a>(&'a self, f: &mut dyn FnMut(&str, State<'a>)) {
        for (prefix, part) in self.parts() {
            part.visit(&mut |name, state| f(&format!("{prefix}.{name}"), state));
        }
        // The three dropouts' generators, by name: `fit` reseeds them from its seed (each block
        // its own: they had all started alike, so every block of a stack drew the same masks),
        // checkpoints keep them, a refused batch restores them.
        for (prefix, d) in
            [("dropout", &self.dropout), ("dropout1", &self.dropout1), ("dropout2", &self.dropout2)]
        {
            d.visit(&mut |name, state| f(&format!("{prefix}.{name}"), state));
        }
    }

    fn visit_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, StateMut<'a>)) {
        let norm_first = self.norm_first;
        let (a, l1, l2, n1, n2): (
            &mut dyn Visit,
            &mut dyn Visit,
            &mut dyn Visit,
            &mut dyn Visit,
            &mut dyn Visit,
        ) = (&mut self.self_attn, &mut self.linear1, &mut self.linear2, &mut self.norm1, &mut self.norm2);
        let parts = if norm_first {
            [("linear2", l2), ("linear1", l1), ("norm2", n2), ("self_attn", a), ("norm1", n1)]
        } else {
            [("norm2", n2), ("linear2", l2), ("linear1", l1), ("norm1", n1), ("self_attn", a)]
        };
        for (prefix, part) in parts {
            part.visit_mut(&mut |name, state| f(&format!("{prefix}.{name}"), state));
        }
        let dropouts = [
            ("dropout", &mut self.dropout),
            ("dropout1", &mut self.dropout1),
            ("dropout2", &mut self.dropout2),
        ];
        for (prefix, d) in dropouts {
            d.visit_mut(&mut |name, state| f(&format!("{prefix}.{name}"), state));
        }
    }
}
