//! Multi-head attention over sequences, as PyTorch's `nn.MultiheadAttention(E, H,
//! batch_first=True)`: its parameters and names (`in_proj_weight [3E, E]` — the query, key and
//! value projections stacked, each head a contiguous block of `d = E/H` rows in each —
//! `in_proj_bias`, `out_proj.weight`, `out_proj.bias`). As a [`Layer`] it is self-attention (the
//! input is query, key and value); [`MultiHeadAttention::forward_cross`] attends from one
//! sequence (the queries, `T_q` steps) to another (the memory, `T_k` steps: keys and values).
//!
//! For one sample and one head `h` (rows are steps; `X_q` the queries' input, `X_m` the memory's):
//!
//! ```text
//! forward:   Q = X_q·W_qᵀ + b_q     [K | V] = X_m·W_kvᵀ + b_kv      W_in = [W_q; W_kv]
//!            S = Q_h·K_hᵀ / √d                             [T_q, T_k]: how much query i matches key j
//!            P = softmax(S) over the allowed keys j         each row sums to 1; masked entries are 0
//!            O_h = P·V_h                                   the heads side by side make O [T_q, E]
//!            Y = O·W_outᵀ + b_out
//! backward:  dO = dY·W_out        dW_out += dYᵀ·O           db_out += Σ dY
//!            dV_h = Pᵀ·dO_h       dP = dO_h·V_hᵀ
//!            dS = P ⊙ (dP − rowsum(P ⊙ dP))                the softmax's backward, row by row
//!            dQ_h = dS·K_h / √d   dK_h = dSᵀ·Q_h / √d
//!            dW_q += dQᵀ·X_q      dW_kv += d[K|V]ᵀ·X_m      (and the biases: the rows' sums)
//!            dX_q = dQ·W_q        dX_m = d[K|V]·W_kv        self-attention: dX = dX_q + dX_m
//! ```
//!
//! With dropout on the weights ([`MultiHeadAttention::dropout`], training only), `O_h = (P ⊙ m)·V_h`
//! for a mask `m` of `0` and `1/(1 − p)`; backward, `dV_h = (P ⊙ m)ᵀ·dO_h` and `dP` is multiplied
//! by `m` before the softmax's backward (which still reads `P`).
//!
//! **Masks, one convention.** Query `i` may attend key `j` when `j` is one of the memory's valid
//! steps (`j < memory length`, from the batch's lengths: PyTorch's `key_padding_mask`, where
//! `True` means *masked*) and, for a causal layer ([`MultiHeadAttention::causal`]), when `j ≤ i`
//! (PyTorch's `attn_mask` of `True` above the diagonal; with `T_q ≠ T_k` aligned at the top left,
//! as PyTorch's `is_causal`). Every query keeps at least key 0, so no row is fully masked.
//! Outputs at the queries' padded steps (`i ≥ query length`) are zero and pass no gradient, as a
//! recurrent layer's padded steps; PyTorch computes them anyway, and its values there are not
//! used. [`key_padding_from_torch`] and [`causal_from_torch`] read PyTorch's masks into this
//! convention, and say when one cannot be.

use super::{InputGrad, Layer, Param, Pass, State, StateMut, Visit, check_grad, checked_output, shape_error};
use crate::error::Result;
use crate::privacy::per_example::{PerExample, PerExampleGrads};
use crate::tensor::gemm::{
    Transpose::No, Transpose::Yes, sgemm, sgemm_in_blocks, sgemm_new, sgemm_plus_rows, sgemm_strided,
    weight_gradients,
};
use crate::tensor::init::Init;
use crate::tensor::math::{MulAdd, exp_with};
use crate::tensor::parallel::for_row_blocks;
use crate::tensor::parallel::split_if_threads;
use crate::tensor::{Tensor, add_rows};
use rayon::prelude::*;
use std::borrow::Cow;

/// Multi-head self-attention. See the [module docs](self).
///
/// ```
/// use backprop::layers::{InputGrad, Layer, MultiHeadAttention, Pass};
/// use backprop::Tensor;
/// let mut attn = MultiHeadAttention::new(8, 2).causal();
/// let x = Tensor::randn(&[3, 5, 8], 0.0, 1.0, 1);
/// let y = attn.forward(&x, Pass::TRAIN.with_lengths(&[5, 2, 4]));
/// assert_eq!(y.shape(), &[3, 5, 8]);
/// assert!(y.outer(1)[2 * 8..].iter().all(|&v| v == 0.0)); // sample 1's padded steps
/// let dx = attn.backward(&Tensor::ones(&[3, 5, 8]), InputGrad::Needed).unwrap();
/// assert_eq!(dx.shape(), &[3, 5, 8]);
/// ```
pub struct MultiHeadAttention {
    embed: usize,
    heads: usize,
    causal: bool,
    /// See [`MultiHeadAttention::activation_budget`].
    activation_budget: usize,
    in_proj_weight: Param,
    in_proj_bias: Param,
    out_proj_weight: Param,
    out_proj_bias: Param,
    // The latest forward pass, for the backward.
    /// The queries' input `X_q` `[N, T_q, E]`, and the memory's `X_m` (`None`: self-attention, the
    /// memory is `X_q`).
    x: Tensor,
    memory: Option<Tensor>,
    /// The queries' and the memory's valid lengths (empty: all steps).
    lengths: Vec<usize>,
    memory_lengths: Vec<usize>,
    /// `Q`: `[N·T_q, E]`;  `[K | V]`: `[N·T_k, 2E]` — as rows, or in blocks of one head's `d`
    /// columns each (`[N·T, d]` per head: [`head_rows`]) where the product's kernel writes them
    /// so (`q_blocked`, `kv_blocked`).
    q: Vec<f32>,
    kv: Vec<f32>,
    q_blocked: bool,
    kv_blocked: bool,
    /// The attention weights of every sample and head: `[N, H, T_q, T_k]`.
    p: Vec<f32>,
    /// The heads' outputs side by side: `[N·T_q, E]`.
    o: Vec<f32>,
    /// The probability of dropping each attention weight in training ([`MultiHeadAttention::dropout`]).
    dropout: f32,
    /// Draws the dropout masks (visited as `rng` when `dropout > 0`).
    rng: crate::tensor::Rng,
    /// The latest training pass's dropout multipliers, one per attention weight (`0` or
    /// `1/(1 − p)`, shaped as `p`); empty when that pass dropped nothing.
    keep: Vec<f32>,
    /// The backward pass's `dQ` and `d[K|V]` (shaped as `q` and `kv`), reused from call to call:
    /// the heads write every value, so a buffer of the right size is never cleared.
    grads: (Vec<f32>, Vec<f32>),
    /// The backward pass's `dO = dY·W_out` (`[N·T_q, E]`, a head per block where the kernel
    /// writes it so), reused likewise.
    d_o: Vec<f32>,
}

impl MultiHeadAttention {
    /// Self-attention over `embed` features with `heads` heads (`embed` a multiple of `heads`),
    /// initialised as PyTorch does: `in_proj_weight` Glorot-uniform, `out_proj.weight`
    /// `U(±1/√E)`, both biases zero (seed 0; a model redraws them from its own seed).
    ///
    /// # Panics
    /// If `heads` is 0 or does not divide `embed`, or the `[3·embed, embed]` projection could
    /// never be allocated.
    pub fn new(embed: usize, heads: usize) -> MultiHeadAttention {
        assert!(
            heads > 0 && embed.is_multiple_of(heads),
            "MultiHeadAttention: {heads} heads must divide the {embed} features evenly"
        );
        let weights = embed.checked_mul(3).and_then(|rows| rows.checked_mul(embed));
        assert!(
            weights.is_some_and(|w| w <= crate::tensor::MAX_ELEMENTS),
            "MultiHeadAttention: {embed} features need a [3·{embed}, {embed}] projection, more values than memory holds"
        );
        MultiHeadAttention {
            embed,
            heads,
            causal: false,
            activation_budget: super::recurrent::DEFAULT_ACTIVATION_BUDGET,
            in_proj_weight: Param::drawn(&[3 * embed, embed], Init::GlorotUniform, 0),
            in_proj_bias: Param::drawn(&[3 * embed], Init::Constant(0.0), 1),
            out_proj_weight: Param::drawn(&[embed, embed], Init::TorchDefault, 2),
            out_proj_bias: Param::drawn(&[embed], Init::Constant(0.0), 3),
            x: Tensor::default(),
            memory: None,
            lengths: Vec::new(),
            memory_lengths: Vec::new(),
            q: Vec::new(),
            kv: Vec::new(),
            q_blocked: false,
            kv_blocked: false,
            p: Vec::new(),
            o: Vec::new(),
            dropout: 0.0,
            rng: crate::tensor::rng(9),
            keep: Vec::new(),
            grads: (Vec::new(), Vec::new()),
            d_o: Vec::new(),
        }
    }

    /// In training, drops each attention weight with probability `p` after the softmax and
    /// scales the kept ones by `1/(1 − p)` before they weigh the values, as
    /// `nn.MultiheadAttention(dropout=p)` does (inverted dropout: nothing changes in evaluation).
    /// Backward, the gradient of a weight passes through the same multiplier before the softmax's
    /// backward. [`MultiHeadAttention::attention_weights`] stays the softmax's, before dropout.
    /// Self-attention passes in [`Mode::Train`](crate::layers::Mode::Train) drop;
    /// [`MultiHeadAttention::forward_cross`], which takes no mode, never does.
    ///
    /// # Panics
    /// If `p` is not in `[0, 1]`.
    pub fn dropout(mut self, p: f32) -> MultiHeadAttention {
        assert!((0.0..=1.0).contains(&p), "MultiHeadAttention: dropout must be in [0, 1], got {p}");
        self.dropout = p;
        self
    }

    /// Each query attends only to keys at or before its own step.
    pub fn causal(mut self) -> MultiHeadAttention {
        self.causal = true;
        self
    }

    /// The most memory, in bytes, that one pass may keep for the backward pass (default 2 GiB, as
    /// the recurrent layers'): the attention weights of every sequence and head, `N·H·T_q·T_k`
    /// values, and the inputs, projections and head outputs, about `3·N·(T_q + T_k)·E` more (see
    /// [`MultiHeadAttention::activation_bytes`]). A batch above it is refused by
    /// [`Layer::output_shape`] and
    /// [`MultiHeadAttention::forward_cross`] with an `Err` naming the sizes, before anything is
    /// allocated; the weights grow with the square of the length, so shorter windows are the cure.
    pub fn activation_budget(mut self, bytes: usize) -> MultiHeadAttention {
        self.activation_budget = bytes;
        self
    }

    /// The budget set by [`MultiHeadAttention::activation_budget`] (2 GiB unless set).
    pub fn activation_budget_bytes(&self) -> usize {
        self.activation_budget
    }

    /// The bytes a pass over `n` sequences of `tq` queries and `tk` keys keeps (see
    /// [`MultiHeadAttention::activation_budget`]), saturating at `usize::MAX`.
    pub fn activation_bytes(&self, n: usize, tq: usize, tk: usize) -> usize {
        let weights = self.heads.saturating_mul(tq).saturating_mul(tk);
        let rows = 3usize.saturating_mul(tq.saturating_add(tk)).saturating_mul(self.embed);
        4usize.saturating_mul(n).saturating_mul(weights.saturating_add(rows))
    }

    /// Draws the parameters with `seed` (a model-wide seed then keeps them).
    pub fn seed(self, seed: u64) -> MultiHeadAttention {
        self.draw(seed, false)
    }

    /// Draws the parameters with `seed` as [`MultiHeadAttention::seed`] does, but as defaults: a
    /// model-wide seed redraws them by name (a block of a stack built with its index as the
    /// seed, so that the stack's blocks differ outside a model too).
    pub(crate) fn default_seed(self, seed: u64) -> MultiHeadAttention {
        self.draw(seed, true)
    }

    /// The weights from `seed`, the biases zero; `defaults`: whether the initialisers are kept
    /// (for a model-wide seed to redraw).
    fn draw(mut self, seed: u64, defaults: bool) -> MultiHeadAttention {
        let mut r = crate::tensor::rng(seed);
        let e = self.embed;
        self.in_proj_weight.value = Init::GlorotUniform.tensor(&[3 * e, e], &mut r);
        self.out_proj_weight.value = Init::TorchDefault.tensor(&[e, e], &mut r);
        self.in_proj_bias.value.fill(0.0);
        self.out_proj_bias.value.fill(0.0);
        // The dropout generator from the seed too, whatever the probability now (`reseed` visits
        // it only while the layer drops weights; a `dropout(p)` after this keeps it).
        self.rng = crate::tensor::rng(crate::layers::seed_for(seed, "rng"));
        if !defaults {
            for p in [
                &mut self.in_proj_weight,
                &mut self.in_proj_bias,
                &mut self.out_proj_weight,
                &mut self.out_proj_bias,
            ] {
                p.init = None;
            }
        }
        self
    }

    /// Features `E`.
    pub fn embed(&self) -> usize {
        self.embed
    }

    /// Heads `H`.
    pub fn heads(&self) -> usize {
        self.heads
    }

    /// Whether the layer is causal.
    pub fn is_causal(&self) -> bool {
        self.causal
    }

    /// The attention weights of the latest forward pass, `[N, H, T_q, T_k]` (query rows, key
    /// columns; zero where masked); `None` before the first.
    pub fn attention_weights(&self) -> Option<Tensor> {
        let &[n, tq, _] = self.x.shape() else { return None };
        Tensor::from_vec(&[n, self.heads, tq, self.memory_steps()], self.p.clone()).ok()
    }

    /// The heads' average of [`MultiHeadAttention::attention_weights`], `[N, T_q, T_k]`: what
    /// PyTorch returns with `need_weights=True, average_attn_weights=True` in evaluation, and in
    /// training without dropout — at the valid query rows. A padded query row (with lengths) is
    /// computed from a zeroed input, its query the bias alone, so its weights differ from
    /// PyTorch's there (whose padded rows read the padding's values); those rows' outputs are zero
    /// either way. (After a training pass with attention dropout PyTorch returns the
    /// weights after dropout, `P ⊙ m`: zeros and values scaled by `1/(1 − p)`; these stay the
    /// softmax's, as [`MultiHeadAttention::attention_weights`] are.)
    pub fn average_attention_weights(&self) -> Option<Tensor> {
        let p = self.attention_weights()?;
        let (n, h, tq, tk) = (p.dim(0), p.dim(1), p.dim(2), p.dim(3));
        let mut avg = Tensor::zeros(&[n, tq, tk]);
        for (avg_s, p_s) in avg.data_mut().chunks_exact_mut(tq * tk).zip(p.data().chunks_exact(h * tq * tk)) {
            for p_h in p_s.chunks_exact(tq * tk) {
                avg_s.iter_mut().zip(p_h).for_each(|(a, &v)| *a += v / h as f32);
            }
        }
        Some(avg)
    }

    /// Cross-attention: `query` `[N, T_q, E]` attends to `memory` `[N, T_k, E]` (keys and values),
    /// each with its lengths (`None`: every step valid). Output `[N, T_q, E]`, zero at the
    /// queries' padded steps; [`MultiHeadAttention::backward_cross`] is its backward.
    ///
    /// # Errors
    /// [`Error::Shape`](crate::Error) if a shape does not fit (naming the layer and both shapes)
    /// or the attention weights `[N, heads, T_q, T_k]` would be more values than a tensor holds
    /// or need more than the [activation budget](MultiHeadAttention::activation_budget),
    /// [`Error::InvalidArgument`](crate::Error) if lengths do not fit their sequences.
    pub fn forward_cross(
        &mut self,
        query: &Tensor,
        query_lengths: Option<&[usize]>,
        memory: &Tensor,
        memory_lengths: Option<&[usize]>,
    ) -> Result<Tensor> {
        self.check_sequences(query.shape())?;
        self.check_sequences(memory.shape())?;
        if memory.dim(0) != query.dim(0) {
            return Err(crate::error::Error::shape(format!(
                "{}: the query has {} sequences, the memory {}",
                self.describe(),
                query.dim(0),
                memory.dim(0)
            )));
        }
        self.check_weights(query.dim(0), query.dim(1), memory.dim(1))?;
        check_lengths(&self.describe(), "query", query_lengths, query.dim(0), query.dim(1))?;
        check_lengths(&self.describe(), "memory", memory_lengths, memory.dim(0), memory.dim(1))?;
        self.memory = Some(memory.clone());
        self.x.copy_from(query);
        Ok(self.run_forward(query_lengths, memory_lengths, false))
    }

    /// Self-attention's forward pass ([`Layer::forward`]) on an input the caller gives up: kept
    /// for the backward pass as it is, without a copy (a Transformer block's normalised input).
    ///
    /// # Panics
    /// As [`Layer::forward`].
    pub(crate) fn forward_owned(&mut self, x: Tensor, pass: Pass<'_>) -> Tensor {
        self.check_self_attention(&x, pass);
        self.x = x;
        self.run_forward(pass.lengths, pass.lengths, pass.is_training())
    }

    /// Panics with [`Layer::output_shape`]'s or the lengths' message if self-attention cannot run
    /// on `x`; else forgets any cross-attention memory (the memory is the input).
    fn check_self_attention(&mut self, x: &Tensor, pass: Pass<'_>) {
        self.output_shape(x.shape()).unwrap_or_else(|e| panic!("{e}"));
        check_lengths(&self.describe(), "sequence", pass.lengths, x.dim(0), x.dim(1))
            .unwrap_or_else(|e| panic!("{e}"));
        self.memory = None;
    }

    /// The backward pass of [`MultiHeadAttention::forward_cross`]: `(dL/dquery, dL/dmemory)`; the
    /// parameters' gradients accumulate.
    ///
    /// # Panics
    /// If `g` is not the latest output's shape, or the latest forward pass was not a cross one.
    pub fn backward_cross(&mut self, g: &Tensor) -> (Tensor, Tensor) {
        assert!(
            self.memory.is_some(),
            "{}: backward_cross after a self-attention forward pass",
            self.describe()
        );
        let (dy, dq, dkv) = self.backward_core(g);
        self.accumulate_parameter_grads(&dy, &dq, &dkv);
        let (dx_q, dx_m) = self.input_gradients(&dq, &dkv);
        self.grads = (dq, dkv);
        (dx_q, dx_m)
    }

    /// Panics (before any gradient is touched) if the latest forward pass was a cross one: its
    /// gradient has two inputs, which only [`MultiHeadAttention::backward_cross`] returns.
    fn check_not_cross(&self, what: &str) {
        assert!(
            self.memory.is_none(),
            "{}: {what} after a cross-attention forward pass (forward_cross): use backward_cross, which \
             returns the gradients of both the query and the memory",
            self.describe()
        );
    }

    /// An error unless the attention weights of `n` sequences (`heads × tq × tk` each, kept for
    /// the backward pass) fit in a tensor.
    /// `input` is `[N, T ≥ 1, E]` for this layer's `E`: returns `(N, T)`.
    fn check_sequences(&self, input: &[usize]) -> Result<(usize, usize)> {
        if self.embed == 0 {
            return Err(crate::error::Error::shape(format!(
                "{} has no features: it cannot attend over sequences of width 0",
                self.describe()
            )));
        }
        match *input {
            [n, t, e] if e == self.embed && t > 0 => Ok((n, t)),
            _ => Err(shape_error(&self.describe(), format!("[N, T ≥ 1, {}]", self.embed), input)),
        }
    }

    fn check_weights(&self, n: usize, tq: usize, tk: usize) -> Result<()> {
        if crate::tensor::checked_numel(&[n.max(1), self.heads, tq, tk]).is_none() {
            return Err(crate::error::Error::shape(format!(
                "{}: the attention weights of {n} sequences ({} heads × {tq} queries × {tk} keys each) would \
                 be more values than a tensor can hold",
                self.describe(),
                self.heads
            )));
        }
        let need = self.activation_bytes(n, tq, tk);
        if need > self.activation_budget {
            return Err(crate::error::Error::shape(format!(
                "{}: {n} sequences of {tq} queries and {tk} keys need about {} for the attention weights and \
                 activations, over its activation budget of {}: use shorter windows or smaller batches, or raise \
                 the budget with .activation_budget(bytes)",
                self.describe(),
                crate::tensor::human_bytes(need),
                crate::tensor::human_bytes(self.activation_budget)
            )));
        }
        Ok(())
    }

    /// Steps of the memory (the queries' own for self-attention).
    fn memory_steps(&self) -> usize {
        self.memory.as_ref().unwrap_or(&self.x).dim(1)
    }

    /// The valid length of sample `s` (all `t` steps without lengths).
    fn length(lengths: &[usize], s: usize, t: usize) -> usize {
        lengths.get(s).copied().unwrap_or(t)
    }
}

/// Lengths must be one per sequence, each in `1 ..= t`.
fn check_lengths(describe: &str, what: &str, lengths: Option<&[usize]>, n: usize, t: usize) -> Result<()> {
    match lengths {
        Some(l) if l.len() != n || l.iter().any(|&v| v == 0 || v > t) => Err(crate::error::Error::invalid(
            format!("{describe}: {what} lengths {l:?} do not fit a batch of {n} sequences of {t} steps"),
        )),
        _ => Ok(()),
    }
}

impl Layer for MultiHeadAttention {
    fn describe(&self) -> String {
        let causal = if self.causal { ", causal" } else { "" };
        format!("MultiHeadAttention({}, heads={}{causal})", self.embed, self.heads)
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        let (n, t) = self.check_sequences(input)?;
        self.check_weights(n, t, t)?;
        checked_output(|| self.describe(), input.to_vec())
    }

    fn forward(&mut self, x: &Tensor, pass: Pass<'_>) -> Tensor {
        self.check_self_attention(x, pass);
        self.x.copy_from(x);
        self.run_forward(pass.lengths, pass.lengths, pass.is_training())
    }

    /// # Panics
    /// After [`MultiHeadAttention::forward_cross`] (whose backward pass is
    /// [`MultiHeadAttention::backward_cross`]), or as every layer's `backward`.
    fn backward(&mut self, g: &Tensor, input_grad: InputGrad) -> Option<Tensor> {
        self.check_not_cross("backward");
        let (dy, dq, dkv) = self.backward_core(g);
        self.accumulate_parameter_grads(&dy, &dq, &dkv);
        let dx = input_grad.is_needed().then(|| {
            // X is both the queries' and the memory's input: dX = dQ·W_q + d[K|V]·W_kv, the
            // second product accumulated onto the first.
            let e = self.embed;
            let w_in = self.in_proj_weight.value.data();
            let dx = sgemm_new(dq.len() / e, e, e, &dq, No, &w_in[..e * e], No, None);
            let mut dx = Tensor::from_vec(self.x.shape(), dx).expect("dX has X's shape");
            sgemm(dkv.len() / (2 * e), 2 * e, e, 1.0, &dkv, No, &w_in[e * e..], No, 1.0, dx.data_mut());
            dx
        });
        self.grads = (dq, dkv);
        dx
    }

    fn per_example(&mut self) -> Option<&mut dyn PerExample> {
        Some(self)
    }

    fn onnx(&self) -> Option<&dyn crate::onnx::OnnxLayer> {
        Some(self)
    }
}

impl MultiHeadAttention {
    /// The forward pass over the queries' input already in `self.x` (and the memory in
    /// `self.memory`, or the same input for self-attention), both checked.
    fn run_forward(
        &mut self,
        lengths: Option<&[usize]>,
        memory_lengths: Option<&[usize]>,
        training: bool,
    ) -> Tensor {
        // The padded steps' inputs read as zeros, whatever they hold: their outputs are zero and
        // their keys masked either way, but a NaN there would reach the weight gradients through
        // products by zero (`dW_out += dYᵀ·O` over every row).
        zero_padded_steps(&mut self.x, lengths);
        if let Some(memory) = self.memory.as_mut() {
            zero_padded_steps(memory, memory_lengths);
        }
        let x = &self.x;
        let (n, tq, e) = (x.dim(0), x.dim(1), self.embed);
        self.lengths.clear();
        self.lengths.extend_from_slice(lengths.unwrap_or(&[]));
        self.memory_lengths.clear();
        self.memory_lengths.extend_from_slice(memory_lengths.unwrap_or(&[]));
        let xm = self.memory.as_ref().unwrap_or(&self.x);
        let tk = xm.dim(1);
        // Q = X_q·W_qᵀ + b_q;  [K | V] = X_m·W_kvᵀ + b_kv  (W_q: rows 0..E of W_in; W_kv: E..3E).
        let (w_in, b_in) = (self.in_proj_weight.value.data(), self.in_proj_bias.value.data());
        self.q.resize(n * tq * e, 0.0);
        self.kv.resize(n * tk * 2 * e, 0.0);
        // Each head's columns as a block of their own where the kernel writes them so (the same
        // values): a head's rows then lie next to each other, and its kernels read them in place
        // instead of gathering them (rows E or 2E values apart share a few sets of the L1 cache).
        let (heads, d) = (self.heads, e / self.heads);
        let (w_q, w_kv) = w_in.split_at(e * e);
        let q_shape = (n * tq, e, e);
        let q_bias = Some(&b_in[..e]);
        self.q_blocked =
            blocks_allowed() && sgemm_in_blocks(q_shape, (x.data(), (w_q, Yes)), q_bias, d, &mut self.q);
        if !self.q_blocked {
            sgemm_plus_rows(q_shape, (x.data(), No), (w_q, Yes), &b_in[..e], &mut self.q);
        }
        let kv_shape = (n * tk, e, 2 * e);
        self.kv_blocked = blocks_allowed()
            && sgemm_in_blocks(kv_shape, (xm.data(), (w_kv, Yes)), Some(&b_in[e..]), d, &mut self.kv);
        if !self.kv_blocked {
            sgemm_plus_rows(kv_shape, (xm.data(), No), (w_kv, Yes), &b_in[e..], &mut self.kv);
        }
        // Each sample's heads: P = softmax(Q_h·K_hᵀ/√d) over the allowed keys, O_h = P·V_h.
        let name = || format!("MultiHeadAttention({e}, heads={heads})");
        resize_or_panic(&mut self.p, n * heads * tq * tk, name);
        self.o.resize(n * tq * e, 0.0);
        let (q_all, kv_all, causal) = (&self.q, &self.kv, self.causal);
        let (q_layout, kv_layout) = ((self.q_blocked, n, tq, e, d), (self.kv_blocked, n, tk, 2 * e, d));
        let memory_lengths = &self.memory_lengths;
        // Dropout on the weights (training only): m = [u ≥ p]/(1 − p) per weight, drawn in order
        // from the layer's generator before the heads run (the same masks on any number of
        // threads); each head then computes P alone and O = (P ⊙ m)·V over the keys it sees.
        self.keep.clear();
        let dropping = training && self.dropout > 0.0;
        if dropping {
            use rand::RngExt;
            let keep_scale = if self.dropout < 1.0 { 1.0 / (1.0 - self.dropout) } else { 0.0 };
            resize_or_panic(&mut self.keep, n * heads * tq * tk, name);
            for m in &mut self.keep {
                *m = if self.rng.random::<f32>() >= self.dropout { keep_scale } else { 0.0 };
            }
        }
        let keep_all = &self.keep;
        let samples = self.p.par_chunks_mut(heads * tq * tk).zip(self.o.par_chunks_mut(tq * e)).enumerate();
        samples.with_min_len(split_if_threads(1)).for_each_init(
            || if dropping { vec![0.0; tq * tk] } else { Vec::new() },
            |dropped, (s, (p_s, o_s))| {
                let keys = Self::length(memory_lengths, s, tk);
                for (h, p) in p_s.chunks_exact_mut(tq * tk).enumerate() {
                    // Head h's rows of Q, K and V (V's are the blocks after the heads' K); O's, E apart.
                    let q = head_rows(q_all, q_layout, s, h);
                    let (k, v) =
                        (head_rows(kv_all, kv_layout, s, h), head_rows(kv_all, kv_layout, s, heads + h));
                    let o = (&mut o_s[h * d..], e);
                    if !dropping {
                        head_forward((tq, tk, d, d), q, k, v, (causal, keys), p, o);
                        continue;
                    }
                    head_weights((tq, tk, d), q, k, (causal, keys), p); // P
                    let m = &keep_all[(s * heads + h) * tq * tk..][..tq * tk];
                    dropped.iter_mut().zip(p.iter().zip(m)).for_each(|(w, (p, m))| *w = p * m); // P ⊙ m
                    sgemm_strided((tq, keys, d), 1.0, (dropped, tk, No), (v.0, v.1, No), 0.0, o); // O = (P ⊙ m)·V
                }
            },
        );
        // Y = O·W_outᵀ + b_out, zero at the queries' padded steps.
        let y = sgemm_new(n * tq, e, e, &self.o, No, self.out_proj_weight.value.data(), Yes, None);
        let mut y = Tensor::from_vec(self.x.shape(), y).expect("Y has X's shape");
        let (lengths, b_out) = (&self.lengths, self.out_proj_bias.value.data());
        for_row_blocks(y.data_mut(), e, |first, block| {
            for (r, row) in (first..).zip(block.chunks_exact_mut(e)) {
                if r % tq < Self::length(lengths, r / tq, tq) {
                    row.iter_mut().zip(b_out).for_each(|(v, b)| *v += b);
                } else {
                    row.fill(0.0); // a padded step outputs zero
                }
            }
        });
        y
    }

    /// The walk back to `dQ` (`[N·T_q, E]`) and `d[K|V]` (`[N·T_k, 2E]`), from `dY` with its
    /// padded rows zeroed (returned too: `g` itself when no step is padded). `dQ` and `d[K|V]` are
    /// the layer's reused buffers (`self.grads`), taken out: the caller puts them back.
    fn backward_core<'g>(&mut self, g: &'g Tensor) -> (Cow<'g, Tensor>, Vec<f32>, Vec<f32>) {
        // Before any forward pass `x` is the empty default: check_grad's "before forward" message.
        let latest: &[usize] = if self.x.shape().len() == 3 { self.x.shape() } else { &[] };
        check_grad(&self.describe(), latest, g);
        let (n, tq, tk, e) = (self.x.dim(0), self.x.dim(1), self.memory_steps(), self.embed);
        let (heads, d) = (self.heads, e / self.heads);
        let dy = if self.lengths.is_empty() {
            Cow::Borrowed(g)
        } else {
            let mut dy = g.clone_in_parallel();
            for (r, row) in dy.data_mut().chunks_exact_mut(e).enumerate() {
                if r % tq >= Self::length(&self.lengths, r / tq, tq) {
                    row.fill(0.0); // padded steps output a constant zero: no gradient
                }
            }
            Cow::Owned(dy)
        };
        // dO = dY·W_out, each head's columns a block of their own where the kernel writes them so
        // (as Q, K and V in the forward pass: the heads then read their rows in place).
        let w_out = self.out_proj_weight.value.data();
        let mut d_o = std::mem::take(&mut self.d_o);
        d_o.resize(n * tq * e, 0.0);
        let do_blocked =
            blocks_allowed() && sgemm_in_blocks((n * tq, e, e), (dy.data(), (w_out, No)), None, d, &mut d_o);
        if !do_blocked {
            sgemm(n * tq, e, e, 1.0, dy.data(), No, w_out, No, 0.0, &mut d_o); // (sgemm_new's route)
        }
        let do_layout = (do_blocked, n, tq, e, d);
        // Every value of dQ and d[K|V] is written below (each head its columns of every row): the
        // buffers are only resized, never cleared (a zero-fill was 1.5 % of a SAKT training step).
        let (mut dq, mut dkv) = std::mem::take(&mut self.grads);
        for (buf, len) in [(&mut dq, n * tq * e), (&mut dkv, n * tk * 2 * e)] {
            if buf.len() != len {
                buf.clear();
                buf.resize(len, 0.0);
            }
        }
        let (q_all, kv_all, p_all, keep_all) = (&self.q, &self.kv, &self.p, &self.keep);
        let (q_layout, kv_layout) = ((self.q_blocked, n, tq, e, d), (self.kv_blocked, n, tk, 2 * e, d));
        let (causal, memory_lengths) = (self.causal, &self.memory_lengths);
        let samples = dq.par_chunks_mut(tq * e).zip(dkv.par_chunks_mut(tk * 2 * e));
        let samples = samples.enumerate().with_min_len(split_if_threads(1));
        let d_o_all = &d_o;
        // dS scratch (and P ⊙ m after dropout), one per rayon job rather than per sample.
        samples.for_each_init(
            || (vec![0.0; tq * tk], if keep_all.is_empty() { Vec::new() } else { vec![0.0; tq * tk] }),
            |(ds, dropped), (s, (dq_s, dkv_s))| {
                for h in 0..heads {
                    let at = (s * heads + h) * tq * tk;
                    let p = &p_all[at..][..tq * tk];
                    let q = head_rows(q_all, q_layout, s, h);
                    let (k, v) =
                        (head_rows(kv_all, kv_layout, s, h), head_rows(kv_all, kv_layout, s, heads + h));
                    let d_oh = head_rows(d_o_all, do_layout, s, h);
                    let mask = (causal, Self::length(memory_lengths, s, tk));
                    let shape = (tq, tk, d, d);
                    // (dV and dK interleave in d[K|V]: each is borrowed while the other is not.)
                    if keep_all.is_empty() {
                        head_backward_values_fast(
                            (tq, tk, d),
                            mask,
                            p,
                            d_oh,
                            (&mut dkv_s[e + h * d..], 2 * e),
                        );
                        let (dq_h, dk_h) = ((&mut dq_s[h * d..], e), (&mut dkv_s[h * d..], 2 * e));
                        head_backward_scores_fast(shape, mask, (q, k, v), p, d_oh, ds, dq_h, dk_h);
                    } else {
                        // After dropout: dV = (P ⊙ m)ᵀ·dO, and dP = (dO·Vᵀ) ⊙ m before the softmax.
                        let m = &keep_all[at..][..tq * tk];
                        dropped.iter_mut().zip(p.iter().zip(m)).for_each(|(w, (p, m))| *w = p * m);
                        let d_vh = (&mut dkv_s[e + h * d..], 2 * e);
                        head_backward_values_masked((tq, tk, d), mask, dropped, d_oh, d_vh);
                        let (dq_h, dk_h) = ((&mut dq_s[h * d..], e), (&mut dkv_s[h * d..], 2 * e));
                        head_backward_scores_masked(
                            shape,
                            mask,
                            (q, k, v),
                            (p, Some(m)),
                            d_oh,
                            ds,
                            dq_h,
                            dk_h,
                        );
                    }
                }
            },
        );
        self.d_o = d_o; // kept for the next backward pass (every value is written each time)
        (dy, dq, dkv)
    }

    /// `dW_out += dYᵀ·O`, `dW_q += dQᵀ·X_q`, `dW_kv += d[K|V]ᵀ·X_m`, and the biases' row sums.
    fn accumulate_parameter_grads(&mut self, dy: &Tensor, dq: &[f32], dkv: &[f32]) {
        let (n, tq, tk, e) = (self.x.dim(0), self.x.dim(1), self.memory_steps(), self.embed);
        let xm = self.memory.as_ref().unwrap_or(&self.x);
        let (dw_out, db_out) = (self.out_proj_weight.grad.data_mut(), self.out_proj_bias.grad.data_mut());
        weight_gradients((e, n * tq, e), dy.data(), &self.o, dw_out, db_out);
        let (dw_q, dw_kv) = self.in_proj_weight.grad.data_mut().split_at_mut(e * e);
        let (db_q, db_kv) = self.in_proj_bias.grad.data_mut().split_at_mut(e);
        weight_gradients((e, n * tq, e), dq, self.x.data(), dw_q, db_q);
        weight_gradients((2 * e, n * tk, e), dkv, xm.data(), dw_kv, db_kv);
    }

    /// `(dX_q, dX_m) = (dQ·W_q, d[K|V]·W_kv)`.
    fn input_gradients(&self, dq: &[f32], dkv: &[f32]) -> (Tensor, Tensor) {
        let e = self.embed;
        let xm = self.memory.as_ref().unwrap_or(&self.x);
        let w_in = self.in_proj_weight.value.data();
        let dx_q = sgemm_new(dq.len() / e, e, e, dq, No, &w_in[..e * e], No, None); // dQ·W_q
        let dx_m = sgemm_new(dkv.len() / (2 * e), 2 * e, e, dkv, No, &w_in[e * e..], No, None); // d[K|V]·W_kv
        let dx_q = Tensor::from_vec(self.x.shape(), dx_q).expect("dX_q has X_q's shape");
        (dx_q, Tensor::from_vec(xm.shape(), dx_m).expect("dX_m has X_m's shape"))
    }
}

/// A matrix block: its first element and the distance between its rows.
type Block<'a> = (&'a [f32], usize);

#[cfg(test)]
thread_local! {
    /// Set by a test to keep the projections as rows, to compare the two layouts.
    static ROWS_ONLY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the projections may be written a head per block (always, but in a test that compares
/// the two layouts).
fn blocks_allowed() -> bool {
    #[cfg(test)]
    if ROWS_ONLY.with(|rows| rows.get()) {
        return false;
    }
    true
}

/// Block `b` of `d` columns (a head's `Q`, `K` or `V`) of sample `s`'s `t` rows in a projection
/// of `n` samples' rows, `width` columns wide, laid out as `(blocked, n, t, width, d)` says: rows
/// `width` apart, or each block of columns a `[n·t, d]` matrix of its own (`blocked`).
fn head_rows(
    buf: &[f32],
    (blocked, n, t, width, d): (bool, usize, usize, usize, usize),
    s: usize,
    b: usize,
) -> Block<'_> {
    if blocked { (&buf[(b * n + s) * t * d..], d) } else { (&buf[s * t * width + b * d..], width) }
}
/// A matrix block to write.
type BlockMut<'a> = (&'a mut [f32], usize);

/// One head's forward pass (the module docs' lines): `P = softmax(Q·Kᵀ/√d)` over the keys each
/// query may see — `0 .. keys`, and `≤ i` when `causal` — then `O = P·V`. Shapes
/// `(T_q, T_k, d, d_v)`; `p` is `[T_q, T_k]`, contiguous.
fn head_forward(
    (tq, tk, d, dv): (usize, usize, usize, usize),
    q: Block<'_>,
    k: Block<'_>,
    v: Block<'_>,
    (causal, keys): (bool, usize),
    p: &mut [f32],
    o: BlockMut<'_>,
) {
    if super::attention_head::fits(d, dv) {
        return super::attention_head::head_forward((tq, tk, d, dv), q, k, v, (causal, keys), p, o);
    }
    head_forward_reference((tq, tk, d, dv), q, k, v, (causal, keys), p, o);
}

/// [`head_forward`] through general matrix products: the definition (and the path for heads the
/// vector kernel of `attention_head` does not take).
fn head_forward_reference(
    (tq, tk, d, dv): (usize, usize, usize, usize),
    q: Block<'_>,
    k: Block<'_>,
    v: Block<'_>,
    (causal, keys): (bool, usize),
    p: &mut [f32],
    o: BlockMut<'_>,
) {
    head_weights((tq, tk, d), q, k, (causal, keys), p);
    // O = P·V over the keys any query may see: a masked key's weight is 0, and 0·v adds nothing —
    // except where v is not finite (padding may hold anything), which must not reach O.
    sgemm_strided((tq, keys, dv), 1.0, (p, tk, No), (v.0, v.1, No), 0.0, o);
}

/// The first half of [`head_forward_reference`]: `P = softmax(Q·Kᵀ/√d)` over the keys each query
/// may see (the weights alone, for a pass that drops some of them before they weigh the values).
fn head_weights(
    (tq, tk, d): (usize, usize, usize),
    q: Block<'_>,
    k: Block<'_>,
    (causal, keys): (bool, usize),
    p: &mut [f32],
) {
    let scale = 1.0 / (d as f32).sqrt();
    sgemm_strided((tq, d, tk), scale, (q.0, q.1, No), (k.0, k.1, Yes), 0.0, (p, tk)); // S = Q·Kᵀ/√d
    for (i, row) in p.chunks_exact_mut(tk).enumerate() {
        let allowed = if causal { keys.min(i + 1) } else { keys }; // keys 0 .. allowed
        softmax_prefix(row, allowed);
    }
}

/// [`head_backward_values_masked`] through the head kernel where it fits this head on this CPU
/// ([`attention_head::backward_values`](super::attention_head::backward_values)), through general
/// products otherwise. `matrixmultiply` packs both operands of every product, and at a head's
/// sizes (`T × T × d`, `d` 16 to 64) that took about as long as multiplying them (`perf`, GPT
/// training step on two threads: 2.4 % packing beside 3.0 % multiplying).
fn head_backward_values_fast(
    shape: (usize, usize, usize),
    mask: (bool, usize),
    p: &[f32],
    d_o: Block<'_>,
    d_v: BlockMut<'_>,
) {
    if super::attention_head::fits_backward(shape.2, shape.2) {
        super::attention_head::backward_values(shape, mask, p, d_o, d_v);
    } else {
        head_backward_values_masked(shape, mask, p, d_o, d_v);
    }
}

/// [`head_backward_scores_masked`] through the head kernel where it fits (as
/// [`head_backward_values_fast`]).
#[allow(clippy::too_many_arguments)] // the head's operands and their gradients
fn head_backward_scores_fast(
    shape: (usize, usize, usize, usize),
    mask: (bool, usize),
    qkv: (Block<'_>, Block<'_>, Block<'_>),
    p: &[f32],
    d_o: Block<'_>,
    ds: &mut [f32],
    dq: BlockMut<'_>,
    dk: BlockMut<'_>,
) {
    if super::attention_head::fits_backward(shape.2, shape.3) {
        super::attention_head::backward_scores(shape, mask, qkv, p, d_o, ds, dq, dk);
    } else {
        head_backward_scores_masked(shape, mask, qkv, (p, None), d_o, ds, dq, dk);
    }
}

/// One head's backward pass, first part: `dV = Pᵀ·dO` (shapes `(T_q, T_k, d_v)`): the definition,
/// which the tests compare the masked pass and the head kernel with.
#[cfg(test)]
fn head_backward_values((tq, tk, dv): (usize, usize, usize), p: &[f32], d_o: Block<'_>, d_v: BlockMut<'_>) {
    sgemm_strided((tk, tq, dv), 1.0, (p, tk, Yes), (d_o.0, d_o.1, No), 0.0, d_v); // dV = Pᵀ·dO
}

/// One head's backward pass, second part: through the softmax to `dQ` and `dK` (`ds` is
/// `[T_q, T_k]` scratch). (Two parts, because in a `[K | V]` buffer the rows of `dK` and `dV`
/// interleave: each is written while the other is not borrowed.)
#[cfg(test)]
#[allow(clippy::too_many_arguments)] // the head's operands and their gradients
fn head_backward_scores(
    (tq, tk, d, dv): (usize, usize, usize, usize),
    (q, k, v): (Block<'_>, Block<'_>, Block<'_>),
    p: &[f32],
    d_o: Block<'_>,
    ds: &mut [f32],
    dq: BlockMut<'_>,
    dk: BlockMut<'_>,
) {
    let scale = 1.0 / (d as f32).sqrt();
    sgemm_strided((tq, dv, tk), 1.0, (d_o.0, d_o.1, No), (v.0, v.1, Yes), 0.0, (ds, tk)); // dP = dO·Vᵀ
    for (ds_row, p_row) in ds.chunks_exact_mut(tk).zip(p.chunks_exact(tk)) {
        softmax_backward_row(ds_row, p_row); // dS = P ⊙ (dP − rowsum(P ⊙ dP))
    }
    sgemm_strided((tq, tk, d), scale, (ds, tk, No), (k.0, k.1, No), 0.0, dq); // dQ = dS·K/√d
    sgemm_strided((tk, tq, d), scale, (ds, tk, Yes), (q.0, q.1, No), 0.0, dk); // dK = dSᵀ·Q/√d
}

/// Queries (and keys) per block of a head's masked backward pass ([`head_backward_values_masked`],
/// [`head_backward_scores_masked`]). Under a causal mask, query `i` sees keys `0 ..= i`: cut
/// into blocks of 32, a `T × T` product keeps the blocks on and below the diagonal — at `T = 64`,
/// 3 of 4 (75 % of the multiply-adds), at `T = 100`, 65 %. Blocks of 16 would skip more (62.5 %,
/// 58 %), but each block is a product of its own that packs its operands, and at a head's sizes
/// (`d` of 16 to 32) the extra packing ate the saving in a trial timing. What it bought in the
/// models (AMD EPYC, AVX2; `benches/pytorch/ab.py`, 10 rounds, docs/benchmarks.md, ninth session):
/// nothing measurable on one thread at T = 64 and 100, SAKT perhaps 8 % on two; the saving grows
/// with `T`.
const BACKWARD_BLOCK: usize = 32;

/// Rows per block of a masked backward product over `len` rows: [`BACKWARD_BLOCK`] under a causal
/// mask; all of them otherwise, where every query sees the same keys and blocks would skip nothing
/// (only more calls).
fn backward_block(causal: bool, len: usize) -> usize {
    if causal { BACKWARD_BLOCK } else { len.max(1) }
}

/// Keys that some query of `0 .. tq` sees (all the head's queries, or a block's first `tq`):
/// `0 .. keys`, and under a causal mask only the first `tq` (key `j` is first seen by query `j`).
fn keys_seen(tq: usize, (causal, keys): (bool, usize)) -> usize {
    if causal { keys.min(tq) } else { keys }
}

/// Rows `rows` of a block (`cols` values each, `ld` apart) set to zero: the gradients of keys
/// that no query sees.
fn zero_rows((block, ld): BlockMut<'_>, rows: std::ops::Range<usize>, cols: usize) {
    for r in rows {
        block[r * ld..][..cols].fill(0.0);
    }
}

/// [`head_backward_values`] for a head whose `P` is zero outside the keys each query sees (`0 ..
/// keys`, and `≤ i` when `causal`: the forward pass's mask): the same `dV = Pᵀ·dO`, without the
/// products of zeros. Key block `j0 .. j1` sums over the queries that may see it — all of them,
/// or under a causal mask those from `j0` on; the keys no query sees get `dV = 0`. Within
/// rounding of the definition (the tests compare them): only the terms `0·dO` are left out.
fn head_backward_values_masked(
    (tq, tk, dv): (usize, usize, usize),
    (causal, keys): (bool, usize),
    p: &[f32],
    d_o: Block<'_>,
    d_v: BlockMut<'_>,
) {
    let seen = keys_seen(tq, (causal, keys));
    let block = backward_block(causal, seen);
    for j0 in (0..seen).step_by(block) {
        let j1 = (j0 + block).min(seen);
        let i0 = if causal { j0 } else { 0 }; // the first query that may see key j0
        let (p_block, d_o_block) = (&p[i0 * tk + j0..], &d_o.0[i0 * d_o.1..]);
        let d_v_block = (&mut d_v.0[j0 * d_v.1..], d_v.1);
        // dV[j0..j1] = P[i0.., j0..j1]ᵀ·dO[i0..]
        sgemm_strided(
            (j1 - j0, tq - i0, dv),
            1.0,
            (p_block, tk, Yes),
            (d_o_block, d_o.1, No),
            0.0,
            d_v_block,
        );
    }
    zero_rows(d_v, seen..tk, dv);
}

/// [`head_backward_scores`] for a head whose `P` is zero outside the keys each query sees (as
/// [`head_backward_values_masked`]): `dS = P ⊙ (dP − rowsum(P ⊙ dP))` is zero wherever `P` is,
/// so each block of queries computes `dP`, `dS` and `dQ = dS·K/√d` over the keys it sees only,
/// and each block of keys `dK = dSᵀ·Q/√d` over the queries that may see it; the keys no query
/// sees get `dK = 0`. Within rounding of the definition (the tests compare them). With `keep`
/// (the weights' dropout multipliers `m`, shaped as `p`), `dP` is multiplied by `m` first: the
/// weights that weighed the values were `P ⊙ m`.
#[allow(clippy::too_many_arguments)] // the head's operands and their gradients
fn head_backward_scores_masked(
    (tq, tk, d, dv): (usize, usize, usize, usize),
    (causal, keys): (bool, usize),
    (q, k, v): (Block<'_>, Block<'_>, Block<'_>),
    (p, keep): (&[f32], Option<&[f32]>),
    d_o: Block<'_>,
    ds: &mut [f32],
    dq: BlockMut<'_>,
    dk: BlockMut<'_>,
) {
    let scale = 1.0 / (d as f32).sqrt();
    let block = backward_block(causal, tq);
    for i0 in (0..tq).step_by(block) {
        let i1 = (i0 + block).min(tq);
        let seen = keys_seen(i1, (causal, keys)); // keys 0 .. seen: all this block sees
        let d_o_rows = &d_o.0[i0 * d_o.1..];
        // dP[i0..i1, ..seen] = dO[i0..i1]·V[..seen]ᵀ
        sgemm_strided(
            (i1 - i0, dv, seen),
            1.0,
            (d_o_rows, d_o.1, No),
            (v.0, v.1, Yes),
            0.0,
            (&mut ds[i0 * tk..], tk),
        );
        for i in i0..i1 {
            if let Some(m) = keep {
                let row = ds[i * tk..][..seen].iter_mut().zip(&m[i * tk..][..seen]);
                row.for_each(|(g, m)| *g *= m); // dP ← dP ⊙ m (dropout's backward)
            }
            // dS = P ⊙ (dP − rowsum(P ⊙ dP))
            softmax_backward_row(&mut ds[i * tk..][..seen], &p[i * tk..][..seen]);
        }
        // dQ[i0..i1] = dS[i0..i1, ..seen]·K[..seen]/√d
        let dq_rows = (&mut dq.0[i0 * dq.1..], dq.1);
        sgemm_strided((i1 - i0, seen, d), scale, (&ds[i0 * tk..], tk, No), (k.0, k.1, No), 0.0, dq_rows);
    }
    // Each block of keys reads dS only where a block of queries above wrote it: under a causal
    // mask, query i ≥ j0 sits in a block that saw keys 0 .. min(j0 + BACKWARD_BLOCK, keys, T_q)
    // at least, which is ≥ j1 (both loops' blocks start at multiples of BACKWARD_BLOCK);
    // otherwise every query saw keys 0 .. keys.
    let seen = keys_seen(tq, (causal, keys));
    let block = backward_block(causal, seen);
    for j0 in (0..seen).step_by(block) {
        let j1 = (j0 + block).min(seen);
        let i0 = if causal { j0 } else { 0 };
        // dK[j0..j1] = dS[i0.., j0..j1]ᵀ·Q[i0..]/√d
        let dk_rows = (&mut dk.0[j0 * dk.1..], dk.1);
        sgemm_strided(
            (j1 - j0, tq - i0, d),
            scale,
            (&ds[i0 * tk + j0..], tk, Yes),
            (&q.0[i0 * q.1..], q.1, No),
            0.0,
            dk_rows,
        );
    }
    zero_rows(dk, seen..tk, d);
}

/// Scaled dot-product attention on its own, as `F.scaled_dot_product_attention` computes it for
/// `q [N, H, T_q, d]`, `k [N, H, T_k, d]`, `v [N, H, T_k, d_v]`: returns `(O [N, H, T_q, d_v],
/// P [N, H, T_q, T_k])`. The keys each query sees follow this module's one convention: `j <
/// length` of its sequence (`key_lengths`, one per `N`; `None`: all) and `j ≤ i` when `causal`
/// (top-left aligned). [`scaled_dot_product_attention_backward`] is its backward.
///
/// ```
/// use backprop::layers::attention::scaled_dot_product_attention;
/// use backprop::Tensor;
/// let q = Tensor::from_vec(&[1, 1, 2, 2], vec![1., 0., 1., 1.]).unwrap();
/// let (o, p) = scaled_dot_product_attention(&q, &q, &q, true, None).unwrap();
/// assert_eq!(&p.data()[..2], &[1.0, 0.0]); // step 0 sees only itself
/// assert!((o.data()[3] - 0.669762).abs() < 1e-6); // docs/backprop.md §13
/// ```
///
/// # Errors
/// [`Error::Shape`](crate::Error) if the shapes do not fit each other (all three named) or a
/// sequence or a head is empty (`T_q`, `T_k`, `d` or `d_v` of 0);
/// [`Error::InvalidArgument`](crate::Error) for lengths that do not fit.
pub fn scaled_dot_product_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    causal: bool,
    key_lengths: Option<&[usize]>,
) -> Result<(Tensor, Tensor)> {
    let (n, h, tq, tk, d, dv) = sdpa_shapes(q, k, v)?;
    check_lengths("scaled_dot_product_attention", "key", key_lengths, n, tk)?;
    let mut o = Tensor::zeros(&[n, h, tq, dv]);
    let mut p = Tensor::zeros(&[n, h, tq, tk]);
    let heads = p.data_mut().par_chunks_mut(tq * tk).zip(o.data_mut().par_chunks_mut(tq * dv)).enumerate();
    heads.with_min_len(split_if_threads(1)).for_each(|(nh, (p, o))| {
        let keys = key_lengths.map_or(tk, |l| l[nh / h]);
        let (q, k, v) =
            ((&q.data()[nh * tq * d..], d), (&k.data()[nh * tk * d..], d), (&v.data()[nh * tk * dv..], dv));
        head_forward((tq, tk, d, dv), q, k, v, (causal, keys), p, (o, dv));
    });
    Ok((o, p))
}

/// The backward pass of [`scaled_dot_product_attention`]: from `dO` and the forward pass's `P`,
/// returns `(dQ, dK, dV)`.
///
/// It is not told the mask: it reads every key, masked or not, with the weight `P` gives it
/// (zero for a masked one). A masked key's row of `k` or `v` must therefore be finite — a NaN
/// there, which the forward pass never reads, would reach `dQ` as `0 × NaN`. (The layers zero
/// their padded steps before attending, so this holds for them whatever the padding holds.)
///
/// # Errors
/// [`Error::Shape`](crate::Error) if a shape does not fit the others (or is empty, as for the
/// forward pass).
pub fn scaled_dot_product_attention_backward(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    p: &Tensor,
    d_o: &Tensor,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (n, h, tq, tk, d, dv) = sdpa_shapes(q, k, v)?;
    if p.shape() != [n, h, tq, tk] || d_o.shape() != [n, h, tq, dv] {
        return Err(crate::error::Error::shape(format!(
            "scaled_dot_product_attention_backward: P {:?} and dO {:?} do not fit [N, H, T_q, T_k] = {:?} and \
             [N, H, T_q, d_v] = {:?}",
            p.shape(),
            d_o.shape(),
            [n, h, tq, tk],
            [n, h, tq, dv]
        )));
    }
    let (mut dq, mut dk, mut d_v) =
        (Tensor::zeros(q.shape()), Tensor::zeros(k.shape()), Tensor::zeros(v.shape()));
    let grads = dq.data_mut().par_chunks_mut(tq * d).zip(dk.data_mut().par_chunks_mut(tk * d));
    let grads = grads.zip(d_v.data_mut().par_chunks_mut(tk * dv));
    grads.enumerate().with_min_len(split_if_threads(1)).for_each(|(nh, ((dq, dk), d_v))| {
        let (q, k, v) =
            ((&q.data()[nh * tq * d..], d), (&k.data()[nh * tk * d..], d), (&v.data()[nh * tk * dv..], dv));
        let (p, d_o) = (&p.data()[nh * tq * tk..][..tq * tk], (&d_o.data()[nh * tq * dv..], dv));
        let mut ds = vec![0.0; tq * tk];
        let all = (false, tk); // P is what it is: every key counts
        head_backward_values_fast((tq, tk, dv), all, p, d_o, (d_v, dv));
        head_backward_scores_fast((tq, tk, d, dv), all, (q, k, v), p, d_o, &mut ds, (dq, d), (dk, d));
    });
    Ok((dq, dk, d_v))
}

/// `(N, H, T_q, T_k, d, d_v)` of `q [N, H, T_q, d]`, `k [N, H, T_k, d]`, `v [N, H, T_k, d_v]`.
/// `buf` resized to `len` values (new ones 0), the memory reserved first: a panic naming the
/// layer and the size when it cannot be had (which `fit` turns into an error), never the
/// process abort of a failed allocation.
fn resize_or_panic(buf: &mut Vec<f32>, len: usize, layer: impl FnOnce() -> String) {
    if let Err(e) = buf.try_reserve_exact(len.saturating_sub(buf.len())) {
        panic!(
            "{}: cannot allocate its attention weights, {len} values ({}): {e}",
            layer(),
            crate::tensor::human_bytes(len.saturating_mul(4))
        );
    }
    buf.resize(len, 0.0);
}

fn sdpa_shapes(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<(usize, usize, usize, usize, usize, usize)> {
    let shapes = match (q.shape(), k.shape(), v.shape()) {
        (&[n, h, tq, d], &[n2, h2, tk, d2], &[n3, h3, tk3, dv])
            if n == n2
                && n == n3
                && h == h2
                && h == h3
                && d == d2
                && tk == tk3
                && tq > 0
                && tk > 0
                && d > 0
                && dv > 0 =>
        {
            (n, h, tq, tk, d, dv)
        }
        _ => {
            return Err(crate::error::Error::shape(format!(
                "scaled_dot_product_attention: q {:?}, k {:?}, v {:?} do not fit [N, H, T_q ≥ 1, d ≥ 1], [N, H, T_k ≥ 1, d], \
                 [N, H, T_k, d_v ≥ 1]",
                q.shape(),
                k.shape(),
                v.shape()
            )));
        }
    };
    // An empty batch has tensors of no values whatever T is: the weights and each head's rows
    // must still be sizes, not wrapped products.
    let (n, h, tq, tk, d, dv) = shapes;
    let fits = |a: usize, b: usize| crate::tensor::checked_numel(&[n.max(1), h.max(1), a, b]).is_some();
    if !(fits(tq, tk) && fits(tq, d.max(dv)) && fits(tk, d.max(dv))) {
        return Err(crate::error::Error::shape(format!(
            "scaled_dot_product_attention: q {:?}, k {:?}, v {:?}: the attention weights [N, H, T_q, T_k] or a \
             head's rows would be more values than a tensor can hold",
            q.shape(),
            k.shape(),
            v.shape()
        )));
    }
    // The weights `P` are made whole (and the backward pass makes `dP` beside them): bounded as a
    // layer's activations are, so that a long sequence is an error here instead of an allocation
    // that fails or, overcommitted, is killed later.
    let budget = super::recurrent::DEFAULT_ACTIVATION_BUDGET;
    let bytes = [n, h, tq, tk, 4].iter().try_fold(1usize, |b, &x| b.checked_mul(x));
    if bytes.is_none_or(|b| b > budget) {
        return Err(crate::error::Error::invalid(format!(
            "scaled_dot_product_attention: the attention weights [N, H, T_q, T_k] = [{n}, {h}, {tq}, {tk}] need {}, \
             over the {} that this function allows; use fewer or shorter sequences, or MultiHeadAttention, whose \
             activation_budget can be raised",
            bytes.map_or("more than memory holds".to_string(), crate::tensor::human_bytes),
            crate::tensor::human_bytes(budget)
        )));
    }
    Ok(shapes)
}

/// Zeros the steps of `x` (`[N, T, E]`) past each sequence's length.
fn zero_padded_steps(x: &mut Tensor, lengths: Option<&[usize]>) {
    let Some(lengths) = lengths else { return };
    let (t, e) = (x.dim(1), x.dim(2));
    for (sample, &len) in x.data_mut().chunks_exact_mut(t * e).zip(lengths) {
        sample[len.min(t) * e..].fill(0.0);
    }
}

/// `row[j] ← softmax(row[..allowed])[j]` for `j < allowed`, 0 after: the masked keys get no
/// weight. `allowed ≥ 1`. The fast form of `softmax_prefix_reference` (the definition, which the
/// tests compare it with): [`exp_fast`](crate::tensor::math::exp_fast)'s polynomial instead of `f32::exp` (its multiply-adds
/// fused where the CPU has FMA: `wide_fused!`), and the maximum and the sum in 16 running parts
/// folded by halves, so that every loop vectorises (16 wide with AVX-512; the same bits with AVX2
/// and AVX-512, within a few ulps of the baseline's).
pub(super) fn softmax_prefix(row: &mut [f32], allowed: usize) {
    let (kept, masked) = row.split_at_mut(allowed);
    crate::tensor::simd::wide_fused!(softmax_loop(kept));
    masked.fill(0.0);
}

/// [`softmax_prefix`]'s loops over the kept scores.
#[allow(clippy::needless_range_loop)] // index loops on purpose: see the comment inside
#[inline(always)]
fn softmax_loop<M: MulAdd>(kept: &mut [f32]) {
    // Index loops, not iterator adapters, so that they stay inside `wide!`'s vector context; and
    // each loop does one thing: with the exponential and the 16 running sums in one loop body the
    // compiler gave up on vectors and ran it one score at a time (`perf annotate`: `vmovss`,
    // 14 % of an encoder's inference).
    const LANES: usize = 16;
    let n = kept.len();
    let whole = n / LANES * LANES;
    // The maximum in 16 parts: the same maximum. `if x > m` rather than `f32::max`, whose rule
    // for NaN (return the other operand) is no single vector instruction: with it the compiler
    // took this loop one score at a time (`perf annotate`: `vmaxss`, `vcmpunordss`, `vblendvps`).
    // A NaN score makes the row NaN either way, through its exponential.
    let larger = |m: f32, x: f32| if x > m { x } else { m };
    let mut maxes = [f32::NEG_INFINITY; LANES];
    for block in kept.chunks_exact(LANES) {
        for l in 0..LANES {
            maxes[l] = larger(maxes[l], block[l]);
        }
    }
    for i in whole..n {
        maxes[0] = larger(maxes[0], kept[i]);
    }
    let max = fold_halves(maxes, larger);
    for i in 0..n {
        kept[i] = exp_with::<M>(kept[i] - max);
    }
    let mut parts = [0.0f32; LANES]; // Σ in 16 running parts, the tail into part 0, then halves
    for block in kept.chunks_exact(LANES) {
        for l in 0..LANES {
            parts[l] += block[l];
        }
    }
    for i in whole..n {
        parts[0] += kept[i];
    }
    let sum = fold_halves(parts, |a, b| a + b);
    let inv = 1.0 / sum;
    for i in 0..n {
        kept[i] *= inv;
    }
}

/// The softmax's backward for one row: `dP` (in `ds`) becomes `dS = P ⊙ (dP − Σ_j P_j·dP_j)`.
/// The sum in 16 running parts folded by halves, as [`softmax_loop`]'s, so that it vectorises
/// (a sum in order is a chain of dependent additions: `perf` had it at 6.5 % of a SAKT training
/// step on one thread).
pub(super) fn softmax_backward_row(ds: &mut [f32], p: &[f32]) {
    crate::tensor::simd::wide!(softmax_backward_loop(ds, p));
}

/// [`softmax_backward_row`]'s loops (index loops: see [`softmax_loop`]).
#[allow(clippy::needless_range_loop)] // index loops on purpose, as softmax_loop's
#[inline(always)]
fn softmax_backward_loop(ds: &mut [f32], p: &[f32]) {
    const LANES: usize = 16;
    let n = ds.len();
    let p = &p[..n];
    let whole = n / LANES * LANES;
    let mut parts = [0.0f32; LANES]; // Σ P ⊙ dP in 16 running parts, the tail into part 0
    for block in (0..whole).step_by(LANES) {
        let (d_block, p_block) = (&ds[block..][..LANES], &p[block..][..LANES]);
        for l in 0..LANES {
            parts[l] += d_block[l] * p_block[l];
        }
    }
    for i in whole..n {
        parts[0] += ds[i] * p[i];
    }
    let dot = fold_halves(parts, |a, b| a + b);
    for i in 0..n {
        ds[i] = p[i] * (ds[i] - dot);
    }
}

/// `f` over 16 values as a tree of halves (`v[l] = f(v[l], v[l + 8])`, then 4, 2, 1): four
/// rounds of independent operations instead of a chain of fifteen — for a row of 64 scores the
/// chain had taken longer than the row's vectors.
///
/// Written as four loops of constant length (not one loop over `[8, 4, 2, 1]`, which the compiler
/// left as a loop over that array: a scalar load, operation and store to the stack per value,
/// `perf annotate`: a quarter of the softmax's time in an encoder's inference).
#[allow(clippy::needless_range_loop)] // index loops of constant length, unrolled by the compiler
#[inline(always)]
fn fold_halves(mut v: [f32; 16], f: impl Fn(f32, f32) -> f32) -> f32 {
    for l in 0..8 {
        v[l] = f(v[l], v[l + 8]);
    }
    for l in 0..4 {
        v[l] = f(v[l], v[l + 4]);
    }
    for l in 0..2 {
        v[l] = f(v[l], v[l + 2]);
    }
    f(v[0], v[1])
}

/// The definition of [`softmax_prefix`]: `e^(s_j − max) / Σ e^(s_i − max)` over the allowed keys,
/// with the library's `exp`, summed in order.
#[cfg(test)]
fn softmax_prefix_reference(row: &mut [f32], allowed: usize) {
    let (kept, masked) = row.split_at_mut(allowed);
    let max = kept.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let mut sum = 0.0;
    for v in kept.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    kept.iter_mut().for_each(|v| *v /= sum);
    masked.fill(0.0);
}

impl PerExample for MultiHeadAttention {
    /// Example `s`'s `dW_in = [dQ_sᵀ·X_q,s ; d[K|V]_sᵀ·X_m,s]`, `dW_out = dY_sᵀ·O_s` and the biases'
    /// sums over its own rows.
    fn backward_per_example(
        &mut self,
        g: &Tensor,
        input_grad: InputGrad,
        grads: &mut PerExampleGrads,
    ) -> Option<Tensor> {
        self.check_not_cross("backward_per_example");
        let (dy, dq, dkv) = self.backward_core(g);
        let (n, tq, tk, e) = (self.x.dim(0), self.x.dim(1), self.memory_steps(), self.embed);
        grads.expect_batch(&self.describe(), n);
        let [w_in, b_in, w_out, b_out] = grads.next_slots_to_overwrite([3 * e * e, 3 * e, e * e, e]);
        let (xq, xm) = (self.x.data(), self.memory.as_ref().unwrap_or(&self.x).data());
        let slots = w_in.data_mut().par_chunks_mut(3 * e * e).zip(b_in.data_mut().par_chunks_mut(3 * e));
        let slots = slots.zip(w_out.data_mut().par_chunks_mut(e * e).zip(b_out.data_mut().par_chunks_mut(e)));
        slots.enumerate().with_min_len(split_if_threads(1)).for_each(
            |(s, ((dw_in, db_in), (dw_out, db_out)))| {
                // Sample s's rows of each matrix.
                let (dq_s, dkv_s) = (&dq[s * tq * e..][..tq * e], &dkv[s * tk * 2 * e..][..tk * 2 * e]);
                let (xq_s, xm_s) = (&xq[s * tq * e..][..tq * e], &xm[s * tk * e..][..tk * e]);
                let (dy_s, o_s) = (&dy.data()[s * tq * e..][..tq * e], &self.o[s * tq * e..][..tq * e]);
                let (dw_q, dw_kv) = dw_in.split_at_mut(e * e);
                sgemm(e, tq, e, 1.0, dq_s, Yes, xq_s, No, 0.0, dw_q);
                sgemm(2 * e, tk, e, 1.0, dkv_s, Yes, xm_s, No, 0.0, dw_kv);
                sgemm(e, tq, e, 1.0, dy_s, Yes, o_s, No, 0.0, dw_out);
                db_in.fill(0.0);
                db_out.fill(0.0);
                let (db_q, db_kv) = db_in.split_at_mut(e);
                add_rows(db_q, dq_s);
                add_rows(db_kv, dkv_s);
                add_rows(db_out, dy_s);
            },
        );
        let dx = input_grad.is_needed().then(|| {
            // Self-attention (checked above): X is both inputs, and its gradient is the sum.
            let (mut dx, dx_m) = self.input_gradients(&dq, &dkv);
            dx.axpy(1.0, &dx_m);
            dx
        });
        self.grads = (dq, dkv);
        dx
    }
}

impl Visit for MultiHeadAttention {
    /// The four parameters, and the dropout generator (`rng`) when the layer drops weights.
    fn visit<'a>(&'a self, f: &mut dyn FnMut(&str, State<'a>)) {
        f("in_proj_weight", State::Param(&self.in_proj_weight));
        f("in_proj_bias", State::Param(&self.in_proj_bias));
        f("out_proj.weight", State::Param(&self.out_proj_weight));
        f("out_proj.bias", State::Param(&self.out_proj_bias));
        if self.dropout > 0.0 {
            f("rng", State::Rng(&self.rng));
        }
    }

    fn visit_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, StateMut<'a>)) {
        f("in_proj_weight", StateMut::Param(&mut self.in_proj_weight));
        f("in_proj_bias", StateMut::Param(&mut self.in_proj_bias));
        f("out_proj.weight", StateMut::Param(&mut self.out_proj_weight));
        f("out_proj.bias", StateMut::Param(&mut self.out_proj_bias));
        if self.dropout > 0.0 {
            f("rng", StateMut::Rng(&mut self.rng));
        }
    }
}

/// The boolean (or additive) convention of a PyTorch attention mask.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TorchMask {
    /// `True` (nonzero) means *not allowed*: `nn.MultiheadAttention`'s `attn_mask` and
    /// `key_padding_mask`, `nn.Transformer*`'s `src_mask`, `src_key_padding_mask`.
    TrueMasks,
    /// `True` (nonzero) means *allowed*: `F.scaled_dot_product_attention`'s boolean `attn_mask`.
    TrueAllows,
    /// A float mask added to the scores: `0` allowed, `−∞` not allowed (any other value is a
    /// bias, not a mask, and is refused).
    Additive,
}

impl TorchMask {
    /// Whether a mask entry allows its key.
    fn allows(self, v: f32) -> Result<bool> {
        if v.is_nan() {
            return Err(crate::error::Error::invalid("a mask entry is NaN: neither allowed nor masked"));
        }
        match self {
            TorchMask::TrueMasks => Ok(v == 0.0),
            TorchMask::TrueAllows => Ok(v != 0.0),
            TorchMask::Additive if v == 0.0 => Ok(true),
            TorchMask::Additive if v == f32::NEG_INFINITY => Ok(false),
            TorchMask::Additive => Err(crate::error::Error::invalid(format!(
                "an additive mask entry of {v} is a bias, not a mask (only 0 and −∞ are masks here)"
            ))),
        }
    }
}

/// The sequence lengths that a PyTorch key-padding mask `[N, T]` describes (each row: allowed
/// steps, then masked ones), in `form`'s convention.
///
/// ```
/// use backprop::layers::attention::{TorchMask, key_padding_from_torch};
/// use backprop::Tensor;
/// // nn.MultiheadAttention's key_padding_mask: True = padded.
/// let m = Tensor::from_vec(&[2, 3], vec![0., 0., 0., 0., 1., 1.]).unwrap();
/// assert_eq!(key_padding_from_torch(&m, TorchMask::TrueMasks).unwrap(), vec![3, 1]);
/// ```
///
/// # Errors
/// [`Error::Shape`](crate::Error) if the mask is not 2-D; [`Error::InvalidArgument`](crate::Error)
/// if a row masks a step before an allowed one (not padding at the end: this crate's lengths
/// cannot say it), masks every step (a fully masked row, whose softmax has nothing to normalise;
/// so also a mask of no steps for one sequence or more), or holds a value the form does not
/// allow (NaN in any form).
pub fn key_padding_from_torch(mask: &Tensor, form: TorchMask) -> Result<Vec<usize>> {
    let &[_, t] = mask.shape() else {
        return Err(crate::error::Error::shape(format!(
            "a key-padding mask is [N, T], got {}",
            crate::tensor::shape_str(mask.shape())
        )));
    };
    if t == 0 && mask.dim(0) > 0 {
        return Err(crate::error::Error::invalid(format!(
            "a key-padding mask {} has no steps: every one of its sequences would be fully masked",
            crate::tensor::shape_str(mask.shape())
        )));
    }
    let mut lengths = Vec::new();
    for (s, row) in mask.data().chunks_exact(t.max(1)).enumerate() {
        let allowed: Vec<bool> = row.iter().map(|&v| form.allows(v)).collect::<Result<_>>()?;
        let len = allowed.iter().take_while(|&&a| a).count();
        if len == 0 || allowed[len..].iter().any(|&a| a) {
            return Err(crate::error::Error::invalid(format!(
                "key-padding mask row {s} is {} allowed steps then masked ones: {allowed:?}",
                if len == 0 { "fully masked, not" } else { "not" }
            )));
        }
        lengths.push(len);
    }
    Ok(lengths)
}

/// Whether a PyTorch attention mask `[T_q, T_k]` is causal (key `j` allowed exactly when
/// `j ≤ i`, aligned at the top left as PyTorch's `is_causal`) — `Ok(true)` — or allows every key —
/// `Ok(false)`, in `form`'s convention.
///
/// ```
/// use backprop::layers::attention::{TorchMask, causal_from_torch};
/// use backprop::Tensor;
/// // F.scaled_dot_product_attention's boolean mask: True = allowed (the lower triangle).
/// let m = Tensor::from_vec(&[2, 2], vec![1., 0., 1., 1.]).unwrap();
/// assert!(causal_from_torch(&m, TorchMask::TrueAllows).unwrap());
/// ```
///
/// # Errors
/// [`Error::Shape`](crate::Error) if the mask is not 2-D; [`Error::InvalidArgument`](crate::Error)
/// for any other pattern (this crate's attention has no arbitrary masks), a mask with no queries
/// or no keys, or a value the form does not allow (NaN in any form).
pub fn causal_from_torch(mask: &Tensor, form: TorchMask) -> Result<bool> {
    let &[tq, tk] = mask.shape() else {
        return Err(crate::error::Error::shape(format!(
            "an attention mask is [T_q, T_k], got {}",
            crate::tensor::shape_str(mask.shape())
        )));
    };
    if tq == 0 || tk == 0 {
        return Err(crate::error::Error::invalid(format!(
            "a {tq}×{tk} attention mask has no queries or no keys: it describes no attention"
        )));
    }
    let (mut causal, mut all) = (true, true);
    for (idx, &v) in mask.data().iter().enumerate() {
        let (i, j) = (idx / tk.max(1), idx % tk.max(1));
        let allowed = form.allows(v)?;
        causal &= allowed == (j <= i);
        all &= allowed;
    }
    match (causal, all) {
        (_, true) => Ok(false),
        (true, false) => Ok(true),
        _ => Err(crate::error::Error::invalid(format!(
            "a {tq}×{tk} attention mask that is neither causal nor all-allowed: this crate's attention has no \
             arbitrary masks"
        ))),
    }
}

impl crate::onnx::OnnxLayer for MultiHeadAttention {
    /// Self-attention as ONNX operators (see the table in [`crate::onnx`]); the causal mask and
    /// the steps of the lengths mask are computed from `T` when the graph runs (no tables).
    fn export(&self, g: &mut crate::onnx::Graph, x: &str, lengths: Option<&str>) -> Result<String> {
        use crate::onnx::{attr_int, attr_ints};
        let (e, heads) = (self.embed, self.heads);
        let d = e / heads;
        // [Q | K | V] = X·W_inᵀ + b_in, split into three [N, T, E].
        let w_in = transposed(self.in_proj_weight.value.data(), 3 * e, e);
        let (w_in, b_in) = (
            g.tensor("in_proj_t", &[e, 3 * e], &w_in),
            g.tensor("in_proj_bias", &[3 * e], self.in_proj_bias.value.data()),
        );
        let qkv = g.op("MatMul", &[x, &w_in], vec![]);
        let qkv = g.op("Add", &[&qkv, &b_in], vec![]);
        let split = g.int64s("split", &[e as i64; 3]);
        let (q, k, v) = (g.fresh("q"), g.fresh("k"), g.fresh("v"));
        g.node("Split", &[&qkv, &split], vec![attr_int("axis", 2)], &[&q, &k, &v]);
        // Heads: [N, T, E] → [N, T, H, d] → [N, H, T, d] (K as [N, H, d, T]).
        let heads_shape = g.int64s("heads_shape", &[0, 0, heads as i64, d as i64]);
        let per_head = |g: &mut crate::onnx::Graph, t: &str, perm: &[usize]| {
            let r = g.op("Reshape", &[t, &heads_shape], vec![]);
            g.op("Transpose", &[&r], vec![attr_ints("perm", perm)])
        };
        let (q, k, v) =
            (per_head(g, &q, &[0, 2, 1, 3]), per_head(g, &k, &[0, 2, 3, 1]), per_head(g, &v, &[0, 2, 1, 3]));
        // S = Q·Kᵀ/√d, the disallowed keys at −∞, softmax over the keys.
        let s = g.op("MatMul", &[&q, &k], vec![]);
        let scale = g.scalar(1.0 / (d as f32).sqrt());
        let mut s = g.op("Mul", &[&s, &scale], vec![]);
        let mut allowed: Option<String> = None;
        // The steps 0 .. T of x, from its shape when the graph runs (one Range for both masks).
        let mut steps = None;
        if self.causal {
            let t = g.steps(x);
            let (axis1, axis0) = (g.int64s("axis", &[1]), g.int64s("axis", &[0]));
            let rows = g.op("Unsqueeze", &[&t, &axis1], vec![]); // [T, 1]: query i
            let cols = g.op("Unsqueeze", &[&t, &axis0], vec![]); // [1, T]: key j
            allowed = Some(g.op("LessOrEqual", &[&cols, &rows], vec![])); // [T, T]: j ≤ i
            steps = Some(t);
        }
        let mut valid = None;
        if let Some(input) = lengths {
            let len = g.lengths_int64(input);
            let positions = match steps {
                Some(t) => t,
                None => g.steps(x),
            }; // [T]
            let axis1 = g.int64s("axis", &[1]);
            let len = g.op("Unsqueeze", &[&len, &axis1], vec![]); // [N, 1]
            let v = g.op("Less", &[&positions, &len], vec![]); // [N, T]: step t < length
            let axes = g.int64s("axes", &[1, 2]);
            let keys = g.op("Unsqueeze", &[&v, &axes], vec![]); // [N, 1, 1, T]
            allowed = Some(match allowed {
                Some(a) => g.op("And", &[&a, &keys], vec![]),
                None => keys,
            });
            valid = Some(v);
        }
        if let Some(a) = allowed {
            let ninf = g.scalar(f32::NEG_INFINITY);
            s = g.op("Where", &[&a, &s, &ninf], vec![]);
        }
        let p = g.op("Softmax", &[&s], vec![attr_int("axis", -1)]);
        let mut v = v;
        if let Some(valid) = &valid {
            // The padded keys' values are zero: their weights are, and 0·NaN would be NaN, so a
            // value left in a padded step (whatever the caller padded with) must not reach the
            // real steps' outputs. (The crate never reads those rows.)
            let axes = g.int64s("axes", &[1, 3]);
            let keys = g.op("Unsqueeze", &[valid, &axes], vec![]); // [N, 1, T, 1]
            let zero = g.scalar(0.0);
            v = g.op("Where", &[&keys, &v, &zero], vec![]);
        }
        // O = P·V, heads side by side again: [N, H, T, d] → [N, T, H, d] → [N, T, E].
        let o = g.op("MatMul", &[&p, &v], vec![]);
        let o = g.op("Transpose", &[&o], vec![attr_ints("perm", &[0, 2, 1, 3])]);
        let flat = g.int64s("flat_shape", &[0, 0, e as i64]);
        let o = g.op("Reshape", &[&o, &flat], vec![]);
        let w_out = transposed(self.out_proj_weight.value.data(), e, e);
        let (w_out, b_out) = (
            g.tensor("out_proj_t", &[e, e], &w_out),
            g.tensor("out_proj_bias", &[e], self.out_proj_bias.value.data()),
        );
        let y = g.op("MatMul", &[&o, &w_out], vec![]);
        let mut y = g.op("Add", &[&y, &b_out], vec![]);
        if let Some(valid) = valid {
            // Padded steps output zero (a select, not a product with 0: exactly zero even where
            // a padded step's own query was not finite).
            let axis2 = g.int64s("axis", &[2]);
            let valid = g.op("Unsqueeze", &[&valid, &axis2], vec![]); // [N, T, 1]
            let zero = g.scalar(0.0);
            y = g.op("Where", &[&valid, &y, &zero], vec![]);
        }
        Ok(y)
    }
}

/// `m` `[rows, cols]` row-major, transposed: `[cols, rows]`.
pub(crate) fn transposed(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    (0..cols * rows).map(|k| m[(k % rows) * cols + k / rows]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::RngExt as _;

    /// The projections written a head per block ([`head_rows`]) give the bits of the same
    /// projections kept as rows: outputs, attention weights, input gradients and every parameter
    /// gradient — self-attention causal and with padded steps, with and without dropout on the
    /// weights, cross-attention, heads 16, 32 and 64 wide (16: half the AVX-512 kernel's panel),
    /// one and two threads — and at these sizes the blocks are taken where the kernel can write
    /// them.
    #[test]
    fn heads_in_blocks_give_the_bits_of_rows() {
        for (embed, heads, n, t) in [(64, 2, 9, 64), (128, 2, 17, 64), (96, 3, 20, 40), (64, 4, 9, 64)] {
            let x = Tensor::randn(&[n, t, embed], 0.0, 1.0, 1);
            let memory = Tensor::randn(&[n, t + 3, embed], 0.0, 1.0, 2);
            let dy = Tensor::randn(&[n, t, embed], 0.0, 1.0, 3);
            let lengths: Vec<usize> = (0..n).map(|s| 1 + (s * 7) % t).collect();
            for (case, dropout) in [("causal", 0.0), ("padded", 0.0), ("dropout", 0.2), ("cross", 0.0)] {
                let make = || {
                    let layer = MultiHeadAttention::new(embed, heads).seed(4).dropout(dropout);
                    if case == "causal" { layer.causal() } else { layer }
                };
                let run = |rows_only: bool, threads: usize| {
                    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                    pool.install(|| {
                        ROWS_ONLY.with(|rows| rows.set(rows_only));
                        let mut layer = make();
                        let lens = (case == "padded").then_some(&lengths[..]);
                        let (y, dx) = if case == "cross" {
                            let y = layer.forward_cross(&x, None, &memory, Some(&lengths)).unwrap();
                            let (dx_q, dx_m) = layer.backward_cross(&dy);
                            (y, vec![dx_q, dx_m])
                        } else {
                            let y = layer.forward(&x, Pass::TRAIN.with_optional_lengths(lens));
                            (y, vec![layer.backward(&dy, InputGrad::Needed).unwrap()])
                        };
                        ROWS_ONLY.with(|rows| rows.set(false));
                        let grads: Vec<Tensor> = crate::layers::named_params(&layer)
                            .into_iter()
                            .map(|(_, p)| p.grad.clone())
                            .collect();
                        (y, dx, grads, layer.attention_weights(), layer.q_blocked && layer.kv_blocked)
                    })
                };
                for threads in [1, 2] {
                    let (rows, blocks) = (run(true, threads), run(false, threads));
                    let what = format!("E {embed}, {heads} heads, {n}×{t}, {case}, {threads} threads");
                    assert!(!rows.4, "{what}: rows asked for");
                    if crate::tensor::microkernel::kernels()
                        .is_some_and(|k| (embed / heads).is_multiple_of(k.narrowest()))
                    {
                        assert!(blocks.4, "{what}: blocks not taken");
                    }
                    assert_eq!(rows.0, blocks.0, "{what}: output");
                    assert_eq!(rows.1, blocks.1, "{what}: input gradients");
                    assert_eq!(rows.2, blocks.2, "{what}: parameter gradients");
                    assert_eq!(rows.3, blocks.3, "{what}: attention weights");
                }
            }
        }
    }

    /// The backward pass's `dQ` and `d[K|V]` buffers are reused without clearing: after passes
    /// over other batches (larger, then of the same size with other values), `dX` is a fresh
    /// layer's, bit for bit — self-attention with padded steps, and cross-attention.
    #[test]
    fn reused_gradient_buffers_leave_no_trace() {
        let (big, small) = ([4, 7, 8], [3, 5, 8]);
        let x = |shape: &[usize], seed| Tensor::randn(shape, 0.0, 1.0, seed);
        let lengths = [5, 2, 4];
        let run = |attn: &mut MultiHeadAttention, seed: u64, shape: &[usize]| {
            let lens = (shape == small).then_some(&lengths[..]);
            attn.forward(&x(shape, seed), Pass::TRAIN.with_optional_lengths(lens));
            attn.backward(&x(shape, seed + 1), InputGrad::Needed).unwrap()
        };
        let mut reused = MultiHeadAttention::new(8, 2).causal();
        run(&mut reused, 1, &big);
        run(&mut reused, 3, &small);
        let again = run(&mut reused, 5, &small);
        let fresh = run(&mut MultiHeadAttention::new(8, 2).causal(), 5, &small);
        assert!(again.data().iter().zip(fresh.data()).all(|(a, b)| a.to_bits() == b.to_bits()));
        let cross = |attn: &mut MultiHeadAttention, seed: u64, (tq, tk): (usize, usize)| {
            attn.forward_cross(&x(&[2, tq, 8], seed), None, &x(&[2, tk, 8], seed + 1), None).unwrap();
            attn.backward_cross(&x(&[2, tq, 8], seed + 2))
        };
        let mut reused = MultiHeadAttention::new(8, 4);
        cross(&mut reused, 1, (6, 9));
        cross(&mut reused, 4, (3, 4));
        let again = cross(&mut reused, 7, (3, 4));
        let fresh = cross(&mut MultiHeadAttention::new(8, 4), 7, (3, 4));
        for (a, b) in [(&again.0, &fresh.0), (&again.1, &fresh.1)] {
            assert!(a.data().iter().zip(b.data()).all(|(a, b)| a.to_bits() == b.to_bits()));
        }
    }

    /// The head kernel (AVX-512 or AVX2, whichever the CPU has) against the definition through
    /// general products: every shape around its blocks (4 or 6 queries and every remainder of
    /// 1 to 5 left over, 8, 16 and 64 keys, `d_v` of 16 to 64, a `d` that is no multiple of
    /// anything), causal or not, with keys cut by a memory length,
    /// strided blocks as in a `[K | V]` buffer. The two sum each score in the same order; the
    /// values' sums may differ in the last bits, so the test allows a few ulps.
    #[test]
    fn fast_heads_match_the_definition() {
        let mut r = crate::tensor::rng(11);
        let mut checked = 0;
        for (tq, tk) in
            [(1, 1), (3, 5), (4, 16), (6, 9), (7, 17), (64, 64), (13, 70), (9, 130), (8, 12), (11, 20)]
        {
            for (d, dv) in [(16, 16), (32, 32), (7, 48), (5, 24), (64, 64)] {
                if !super::super::attention_head::fits(d, dv) {
                    continue;
                }
                for (causal, keys) in [(false, tk), (true, tk), (false, tk / 2 + 1), (true, tk / 3 + 1)] {
                    let ld = d.max(dv) + 3; // rows of a wider buffer
                    let mut fill = |rows: usize| -> Vec<f32> {
                        (0..rows * ld).map(|_| r.random::<f32>() * 2.0 - 1.0).collect()
                    };
                    let (q, k, v) = (fill(tq), fill(tk), fill(tk));
                    let (mut p_fast, mut p_ref) = (vec![f32::NAN; tq * tk], vec![f32::NAN; tq * tk]);
                    let (mut o_fast, mut o_ref) = (vec![0.5; tq * ld], vec![0.5; tq * ld]);
                    let shape = (tq, tk, d, dv);
                    head_forward(
                        shape,
                        (&q, ld),
                        (&k, ld),
                        (&v, ld),
                        (causal, keys),
                        &mut p_fast,
                        (&mut o_fast, ld),
                    );
                    head_forward_reference(
                        shape,
                        (&q, ld),
                        (&k, ld),
                        (&v, ld),
                        (causal, keys),
                        &mut p_ref,
                        (&mut o_ref, ld),
                    );
                    let what = format!("{shape:?}, causal {causal}, {keys} keys");
                    for (i, (f, w)) in p_fast.iter().zip(&p_ref).enumerate() {
                        assert!((f - w).abs() <= 1e-6 * w.abs() + 1e-12, "{what}: P[{i}] {f} vs {w}");
                    }
                    for (i, (f, w)) in o_fast.iter().zip(&o_ref).enumerate() {
                        assert!((f - w).abs() <= 1e-6 * (1.0 + w.abs()), "{what}: O[{i}] {f} vs {w}");
                    }
                    checked += 1;
                }
            }
        }
        if super::super::attention_head::fits(16, 16) {
            assert!(checked > 0);
        }
    }

    /// The masked backward pass (blocks of queries over the keys they see, blocks of keys over
    /// the queries that may see them) and the head kernel's (where it fits the widths on this
    /// CPU) against the definition over all of `P`: causal or not, keys cut by a memory length,
    /// `T_q ≠ T_k` both ways, sizes on and off the blocks' edges (32 for the masked pass, 4 or 6
    /// for the kernel, 16 keys for its products of one-register rows), `d ≠ d_v`, strided blocks
    /// as in a `[K | V]` buffer. Gradient buffers start as garbage (NaN): every value a pass owns
    /// must be written, the keys no query sees with exact zeros, and no other.
    #[test]
    fn masked_head_backward_matches_the_definition() {
        #[derive(Clone, Copy, Debug, PartialEq)]
        enum Path {
            Definition,
            Masked,
            Kernel,
        }
        let mut r = crate::tensor::rng(12);
        let shapes = [(1, 1), (1, 5), (3, 5), (16, 16), (17, 17), (32, 32), (33, 33), (40, 23), (23, 40)];
        let shapes: Vec<_> = shapes.into_iter().chain([(40, 70), (70, 40), (64, 64), (100, 100)]).collect();
        let mut kernel_checked = 0;
        for (d, dv) in [(8, 8), (16, 16), (32, 32), (16, 48)] {
            let ld = d.max(dv) + 3;
            for ((tq, tk), tied) in shapes.iter().flat_map(|&s| [(s, false), (s, true)]) {
                for (causal, keys) in [(false, tk), (true, tk), (false, tk / 2 + 1), (true, tk / 3 + 1)] {
                    let mut fill = |rows: usize| -> Vec<f32> {
                        (0..rows * ld).map(|_| r.random::<f32>() * 2.0 - 1.0).collect()
                    };
                    // Tied: zero queries, so every score of a row is the same (a uniform softmax).
                    let q = if tied { vec![0.0; tq * ld] } else { fill(tq) };
                    let (k, v, d_o) = (fill(tk), fill(tk), fill(tq));
                    let mut p = vec![0.0; tq * tk];
                    let mut o = vec![0.0; tq * ld];
                    let shape = (tq, tk, d, dv);
                    let blocks = ((&q[..], ld), (&k[..], ld), (&v[..], ld));
                    head_forward_reference(
                        shape,
                        blocks.0,
                        blocks.1,
                        blocks.2,
                        (causal, keys),
                        &mut p,
                        (&mut o, ld),
                    );
                    let grads = |path: Path| {
                        let (mut dq, mut dk, mut dv_) =
                            (vec![f32::NAN; tq * ld], vec![f32::NAN; tk * ld], vec![f32::NAN; tk * ld]);
                        let mut ds = vec![f32::NAN; tq * tk];
                        let (dq_b, dk_b, dv_b) = ((&mut dq[..], ld), (&mut dk[..], ld), (&mut dv_[..], ld));
                        let (mask, d_o) = ((causal, keys), (&d_o[..], ld));
                        match path {
                            Path::Definition => {
                                head_backward_values((tq, tk, dv), &p, d_o, dv_b);
                                head_backward_scores(shape, blocks, &p, d_o, &mut ds, dq_b, dk_b);
                            }
                            Path::Masked => {
                                head_backward_values_masked((tq, tk, dv), mask, &p, d_o, dv_b);
                                head_backward_scores_masked(
                                    shape,
                                    mask,
                                    blocks,
                                    (&p, None),
                                    d_o,
                                    &mut ds,
                                    dq_b,
                                    dk_b,
                                );
                            }
                            Path::Kernel => {
                                use super::super::attention_head::{backward_scores, backward_values};
                                backward_values((tq, tk, dv), mask, &p, d_o, dv_b);
                                backward_scores(shape, mask, blocks, &p, d_o, &mut ds, dq_b, dk_b);
                            }
                        }
                        (dq, dk, dv_)
                    };
                    let definition = grads(Path::Definition);
                    let mut paths = vec![Path::Masked];
                    if super::super::attention_head::fits_backward(d, dv) {
                        paths.push(Path::Kernel);
                        kernel_checked += 1;
                    }
                    for path in paths {
                        let fast = grads(path);
                        let what = format!(
                            "{path:?}, d {d}, d_v {dv}, T_q {tq}, T_k {tk}, causal {causal}, {keys} keys, tied {tied}"
                        );
                        for (name, f, w, rows, cols) in [
                            ("dQ", &fast.0, &definition.0, tq, d),
                            ("dK", &fast.1, &definition.1, tk, d),
                            ("dV", &fast.2, &definition.2, tk, dv),
                        ] {
                            for row in 0..rows {
                                for c in 0..cols {
                                    let (f, w) = (f[row * ld + c], w[row * ld + c]);
                                    assert!(
                                        (f - w).abs() <= 1e-5 * (1.0 + w.abs()),
                                        "{what}: {name}[{row}, {c}] {f} vs {w}"
                                    );
                                    if w == 0.0 {
                                        assert_eq!(f, 0.0, "{what}: {name}[{row}, {c}]");
                                    }
                                }
                                // The columns past the head's (another head's, in a shared
                                // buffer): untouched.
                                assert!(
                                    f[row * ld + cols..][..ld - cols].iter().all(|v| v.is_nan()),
                                    "{what}: {name} row {row}"
                                );
                            }
                        }
                    }
                }
            }
        }
        if super::super::attention_head::fits_backward(8, 8) {
            assert!(kernel_checked > 0);
        }
    }

    /// Tied scores on both paths: zero queries (every score 0, a uniform softmax over the allowed
    /// keys) and identical keys (every score of a row the same) — the kernel gives the definition's
    /// weights to a few ulps, and values that are each key's average.
    #[test]
    fn fast_heads_on_tied_scores_match_the_definition() {
        let (tq, tk, d) = (7, 37, 32);
        let same_keys: Vec<f32> = (0..tk * d).map(|i| ((i % d) as f32 * 0.3).sin()).collect();
        let queries: Vec<f32> = (0..tq * d).map(|i| (i as f32 * 0.17).cos()).collect();
        let v: Vec<f32> = (0..tk * d).map(|i| (i / d) as f32).collect(); // row j holds j
        let varied_keys: Vec<f32> = (0..tk * d).map(|i| (i as f32 * 0.29).sin()).collect();
        for (q, k) in [(vec![0.0; tq * d], varied_keys), (queries, same_keys)] {
            for (causal, keys) in [(false, tk), (true, tk), (false, 5)] {
                let shape = (tq, tk, d, d);
                let (mut p_fast, mut p_ref) = (vec![0.0; tq * tk], vec![0.0; tq * tk]);
                let (mut o_fast, mut o_ref) = (vec![0.0; tq * d], vec![0.0; tq * d]);
                head_forward(shape, (&q, d), (&k, d), (&v, d), (causal, keys), &mut p_fast, (&mut o_fast, d));
                head_forward_reference(
                    shape,
                    (&q, d),
                    (&k, d),
                    (&v, d),
                    (causal, keys),
                    &mut p_ref,
                    (&mut o_ref, d),
                );
                for (i, (f, w)) in p_fast.iter().zip(&p_ref).enumerate() {
                    assert!(
                        (f - w).abs() <= 1e-6 * w.abs(),
                        "causal {causal}, {keys} keys: P[{i}] {f} vs {w}"
                    );
                }
                for i in 0..tq {
                    let seen = if causal { keys.min(i + 1) } else { keys };
                    let mean = (seen - 1) as f32 / 2.0; // the average of rows 0 .. seen
                    for (f, w) in o_fast[i * d..][..d].iter().zip(&o_ref[i * d..][..d]) {
                        assert!(
                            (f - w).abs() <= 1e-5 * (1.0 + w.abs()) && (f - mean).abs() < 1e-4,
                            "query {i}"
                        );
                    }
                }
            }
        }
    }

    /// Zero-width heads are refused with a clear error, forward and backward (they had reached a
    /// zero chunk size in the backward pass, and `1/√0` in the head kernel).
    #[test]
    fn heads_of_zero_width_are_refused() {
        let ok = Tensor::zeros(&[1, 1, 3, 16]);
        for (q, v) in [(Tensor::zeros(&[1, 1, 3, 0]), ok.clone()), (ok.clone(), Tensor::zeros(&[1, 1, 3, 0]))]
        {
            let e = scaled_dot_product_attention(&q, &q, &v, true, None).unwrap_err().to_string();
            assert!(e.contains("d ≥ 1") && e.contains("d_v ≥ 1"), "{e}");
            let p = Tensor::zeros(&[1, 1, 3, 3]);
            assert!(scaled_dot_product_attention_backward(&q, &q, &v, &p, &v).is_err());
        }
    }

    /// The softmax's backward row (its sum in 16 parts) against the formula summed in order, on
    /// rows of every length around the 16-lane split, with masked (zero) weights at the end; and
    /// a hand-worked row: `P = (½, ½)`, `dP = (1, 3)`: `Σ P·dP = 2`, `dS = (½·(1 − 2), ½·(3 − 2))`.
    #[test]
    fn softmax_backward_rows_match_the_formula() {
        let mut ds = [1.0, 3.0];
        softmax_backward_row(&mut ds, &[0.5, 0.5]);
        assert_eq!(ds, [-0.5, 0.5]);
        for n in [1, 7, 15, 16, 17, 31, 33, 64, 100] {
            let mut p: Vec<f32> = (0..n).map(|j| ((j as f32 * 0.7).sin() + 1.5).exp()).collect();
            let masked = n / 3;
            p[n - masked..].fill(0.0); // keys no query saw
            let total: f32 = p.iter().sum();
            p.iter_mut().for_each(|v| *v /= total);
            let dp: Vec<f32> = (0..n).map(|j| (j as f32 * 1.3).cos() * 2.0).collect();
            let dot: f32 = p.iter().zip(&dp).map(|(a, b)| a * b).sum(); // in order
            let want: Vec<f32> = p.iter().zip(&dp).map(|(&p, &d)| p * (d - dot)).collect();
            let mut got = dp.clone();
            softmax_backward_row(&mut got, &p);
            for (j, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!((g - w).abs() <= 1e-6 * (p[j] + w.abs()), "length {n}, dS[{j}]: {g} vs {w}");
                if p[j] == 0.0 {
                    assert_eq!(*g, 0.0, "length {n}: a masked key gets no gradient");
                }
            }
        }
    }

    /// The fast softmax agrees with its definition to a few ulps, on rows of every length around
    /// the 16-lane split, with large and tiny scores and every number of allowed keys, compiled
    /// for each instruction set; AVX2 and AVX-512 give the same bits.
    #[test]
    fn fast_softmax_is_the_definition() {
        let mut r = crate::tensor::rng(7);
        for len in [1, 2, 15, 16, 17, 31, 64, 100] {
            for allowed in [1, len / 2 + 1, len] {
                for scale in [0.0f32, 0.1, 3.0, 40.0] {
                    // (scale 0: every score tied, the uniform distribution)
                    let row: Vec<f32> = (0..len).map(|_| scale * (r.random::<f32>() - 0.5)).collect();
                    let (mut fast, mut reference) = (row.clone(), row.clone());
                    softmax_prefix(&mut fast, allowed.min(len));
                    softmax_prefix_reference(&mut reference, allowed.min(len));
                    for (f, w) in fast.iter().zip(&reference) {
                        assert!(
                            (f - w).abs() <= 4e-7 * w.abs().max(1e-30) + 1e-12,
                            "{len}/{allowed}: {f} vs {w}"
                        );
                    }
                    assert_eq!(fast[allowed.min(len)..].iter().filter(|&&v| v != 0.0).count(), 0);
                    // AVX2 and AVX-512 (both with FMA) give the same bits; the baseline's
                    // separate multiplies and adds are checked against the definition above.
                    use crate::tensor::math::{Fused, Separate};
                    use crate::tensor::simd::Isa;
                    let on = |isa: Isa| {
                        let mut other = row.clone();
                        crate::tensor::simd::run_with(
                            isa,
                            #[inline(always)]
                            || match isa {
                                Isa::Baseline => softmax_loop::<Separate>(&mut other[..allowed.min(len)]),
                                _ => softmax_loop::<Fused>(&mut other[..allowed.min(len)]),
                            },
                        );
                        other
                    };
                    assert_eq!(on(Isa::Avx2), on(Isa::Avx512), "AVX2 against AVX-512");
                    for (b, w) in on(Isa::Baseline).iter().zip(&reference).take(allowed.min(len)) {
                        assert!(
                            (b - w).abs() <= 4e-7 * w.abs().max(1e-30) + 1e-12,
                            "baseline {len}/{allowed}"
                        );
                    }
                }
            }
        }
    }
}
