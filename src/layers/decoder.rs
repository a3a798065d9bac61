//! A decoder-only Transformer (GPT-style) over token ids `[N, T]` → next-token logits
//! `[N, T, V]`: token embedding plus learned positions, a stack of causal pre-LN blocks, a final
//! layer norm, and an output head — its own matrix, or the token table itself (*tied*):
//!
//! ```text
//! forward:   h₀ = W_tok[ids] + P[t]            [N, T, E]
//!            h_k = Block_k(h_{k−1})             causal pre-LN TransformerEncoderLayer
//!            z = LN(h_K)
//!            logits = z·Wᵀ (+ b)                W = W_head, or W_tok when tied (no bias then)
//! backward:  dz = dlogits·W                     dW += dlogitsᵀ·z
//!            … back through LN and the blocks to dh₀ …
//!            dP[t] += Σ_n dh₀[n, t]             dW_tok[id] += dh₀[n, t]   (the embedding's scatter)
//! ```
//!
//! **Tying.** With a tied head the token table is used twice — to read each input token's vector
//! and to score every output token — so its gradient is the sum of both paths: the head's
//! `dlogitsᵀ·z` (every row) plus the embedding's scatter (rows of the tokens that were read).
//! `tests/decoder.rs` checks both against PyTorch, where the same sum happens because one
//! tensor is used twice.

use super::{
    Embedding, InputGrad, Layer, LayerNorm, Pass, PositionEmbedding, State, StateMut,
    TransformerEncoderLayer, Visit, checked_output, shape_error,
};
use crate::error::Result;
use crate::tensor::Tensor;
use crate::tensor::gemm::{Transpose::No, Transpose::Yes, sgemm};
use crate::tensor::init::Init;

/// A decoder-only Transformer. See the [module docs](self).
///
/// ```
/// use backprop::layers::{DecoderOnly, InputGrad, Layer, Pass};
/// use backprop::Tensor;
/// let mut gpt = DecoderOnly::new(11, 8, 2, 2, 16, 6).tied();
/// let ids = Tensor::from_vec(&[1, 4], vec![3., 1., 4., 1.]).unwrap();
/// let logits = gpt.forward(&ids, Pass::TRAIN);
/// assert_eq!(logits.shape(), &[1, 4, 11]);
/// gpt.backward(&Tensor::ones(&[1, 4, 11]), InputGrad::NotNeeded);
/// ```
pub struct DecoderOnly {
    tok: Embedding,
    pos: PositionEmbedding,
    blocks: Vec<TransformerEncoderLayer>,
    norm: LayerNorm,
    /// `(W_head [V, E], b_head [V])`, or `None`: tied to the token table.
    head: Option<(super::Param, super::Param)>,
    /// The latest final-norm output `z`, `[N·T, E]` rows.
    z: Tensor,
    /// Whether the latest forward pass kept what backward needs (false before any, and after a
    /// [`Mode::Predict`](super::Mode::Predict) one).
    kept: bool,
}

impl DecoderOnly {
    /// `vocab` tokens, `embed` features, `layers` causal pre-LN blocks of `heads` heads and a
    /// feed-forward width of `feedforward`, sequences of at most `max_len` steps; GELU, no dropout
    /// (set it per block with [`DecoderOnly::dropout`]); both tables drawn from `N(0, 0.02²)` (as
    /// GPT-2's), an untied head drawn as `nn.Linear`.
    ///
    /// # Panics
    /// If `heads` is 0 or does not divide `embed`, if `layers` is above [`MAX_DECODER_LAYERS`],
    /// or if a table or a block's weights would be more values than a tensor can hold (the
    /// messages name the sizes).
    pub fn new(
        vocab: usize,
        embed: usize,
        heads: usize,
        layers: usize,
        feedforward: usize,
        max_len: usize,
    ) -> Self {
        // (Checked before the list of blocks is reserved: 2²⁸ of them had asked for hundreds of
        // gigabytes at once, and a failed allocation aborts the process.)
        assert!(
            layers <= MAX_DECODER_LAYERS,
            "DecoderOnly: {layers} blocks, more than the {MAX_DECODER_LAYERS} a stack may have"
        );
        let block = |k: usize| {
            TransformerEncoderLayer::new(embed, heads, feedforward)
                .norm_first()
                .causal()
                .activation(super::FeedForwardActivation::Gelu)
                .dropout(0.0)
                .default_seed(100 + k as u64) // (defaults: a model-wide seed redraws them)
        };
        let head = (
            super::Param::drawn(&[vocab, embed], Init::TorchDefault, 7),
            super::Param::new(Tensor::zeros(&[vocab])),
        );
        // Both tables start small, N(0, 0.02²) as GPT-2's: with the head tied, N(0, 1) rows would
        // make the first logits' spread √E and the first losses several times log V.
        let small = Init::Normal { mean: 0.0, std: 0.02 };
        let mut tok = Embedding::new(vocab, embed);
        tok.weight = super::Param::drawn(&[vocab, embed], small, 5);
        let mut pos = PositionEmbedding::new(max_len, embed);
        pos.weight = super::Param::drawn(&[max_len, embed], small, 6);
        DecoderOnly {
            tok,
            pos,
            blocks: (0..layers).map(block).collect(),
            norm: LayerNorm::new(embed),
            head: Some(head),
            z: Tensor::default(),
            kept: false,
        }
    }

    /// The output head is the token table (weight tying): no head matrix, no head bias.
    pub fn tied(mut self) -> DecoderOnly {
        self.head = None;
        self
    }

    /// The most memory, in bytes, that each block's attention may keep for the backward pass
    /// (default 2 GiB each): [`MultiHeadAttention::activation_budget`](super::MultiHeadAttention::activation_budget).
    pub fn activation_budget(mut self, bytes: usize) -> DecoderOnly {
        let blocks = std::mem::take(&mut self.blocks).into_iter();
        self.blocks = blocks.map(|b| b.activation_budget(bytes)).collect();
        self
    }

    /// Whether the head is tied to the token table.
    pub fn is_tied(&self) -> bool {
        self.head.is_none()
    }

    /// The dropout probability of every block.
    ///
    /// # Panics
    /// If `p` is not in `[0, 1]`.
    pub fn dropout(mut self, p: f32) -> DecoderOnly {
        let blocks = std::mem::take(&mut self.blocks).into_iter().enumerate();
        self.blocks = blocks
            .map(|(k, b)| {
                let mut b = b.dropout(p);
                // Each block's generators its own (as `new` seeds them), not the same masks in
                // every block.
                crate::layers::reseed(&mut b, 100 + k as u64);
                b
            })
            .collect();
        self
    }

    fn vocab(&self) -> usize {
        self.tok.num()
    }

    fn embed(&self) -> usize {
        self.tok.dim()
    }

    /// The head's matrix `[V, E]`: its own, or the token table.
    fn head_weight(&self) -> &Tensor {
        match &self.head {
            Some((w, _)) => &w.value,
            None => &self.tok.weight().value,
        }
    }
}

impl Layer for DecoderOnly {
    fn describe(&self) -> String {
        let tied = if self.is_tied() { ", tied" } else { "" };
        format!(
            "DecoderOnly(vocab={}, embed={}, layers={}, max_len={}{tied})",
            self.vocab(),
            self.embed(),
            self.blocks.len(),
            self.pos.max_len()
        )
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        let (n, t) = match input {
            [n, t] if *t >= 1 && *t <= self.pos.max_len() => (*n, *t),
            _ => {
                return Err(shape_error(
                    &self.describe(),
                    format!("ids [N, 1 ≤ T ≤ {}]", self.pos.max_len()),
                    input,
                ));
            }
        };
        // Each part's own check, in the order the ids meet them: an embedding or feed-forward
        // width of 0, or weights too large for a tensor, is named by its layer here, not met
        // as a panic inside the forward pass.
        let h = self.tok.output_shape(input)?;
        let h = self.pos.output_shape(&h)?;
        for block in &self.blocks {
            block.output_shape(&h)?;
        }
        self.norm.output_shape(&h)?;
        checked_output(|| self.describe(), vec![n, t, self.vocab()])
    }

    fn check_values(&self, ids: &Tensor) -> Result<()> {
        self.tok.check_ids(ids)
    }

    fn forward(&mut self, ids: &Tensor, pass: Pass<'_>) -> Tensor {
        let out_shape = self.output_shape(ids.shape()).unwrap_or_else(|e| panic!("{e}"));
        self.kept = pass.mode != super::Mode::Predict;
        let h = self.tok.forward(ids, pass); // W_tok[ids]
        let mut h = self.pos.forward(&h, pass); // + P[t]
        for block in &mut self.blocks {
            h = block.forward(&h, pass);
        }
        self.z = self.norm.forward(&h, pass);
        // logits = z·Wᵀ (+ b)
        let (rows, e, v) = (ids.len(), self.embed(), self.vocab());
        let mut logits = Tensor::zeros(&out_shape);
        sgemm(rows, e, v, 1.0, self.z.data(), No, self.head_weight().data(), Yes, 0.0, logits.data_mut());
        if let Some((_, b)) = &self.head {
            for row in logits.data_mut().chunks_exact_mut(v) {
                row.iter_mut().zip(b.value.data()).for_each(|(l, b)| *l += b);
            }
        }
        logits
    }

    fn onnx(&self) -> Option<&dyn crate::onnx::OnnxLayer> {
        Some(self)
    }

    fn backward(&mut self, dlogits: &Tensor, input_grad: InputGrad) -> Option<Tensor> {
        // Checked before any gradient changes: a failed backward pass leaves them all as they were.
        assert!(
            self.kept,
            "{}: backward before any forward pass, or after a Mode::Predict one, which keeps nothing for \
             backward (run the forward pass in Mode::Train or Mode::Eval)",
            self.describe()
        );
        let (e, v) = (self.embed(), self.vocab());
        let rows = dlogits.len() / v.max(1);
        super::check_grad(&self.describe(), &[self.z.dim(0), self.z.dim(1), v], dlogits);
        // dz = dlogits·W (before W's gradient changes nothing: W's value is what forward used).
        let mut dz = Tensor::zeros(self.z.shape());
        sgemm(rows, v, e, 1.0, dlogits.data(), No, self.head_weight().data(), No, 0.0, dz.data_mut());
        // dW += dlogitsᵀ·z: into the head's matrix, or into the token table (the first path).
        let z = self.z.data();
        let dw = match &mut self.head {
            Some((w, b)) => {
                for row in dlogits.data().chunks_exact(v) {
                    b.grad.data_mut().iter_mut().zip(row).for_each(|(d, g)| *d += g); // db += Σ dlogits
                }
                w.grad.data_mut()
            }
            None => self.tok.weight.grad.data_mut(),
        };
        sgemm(v, rows, e, 1.0, dlogits.data(), Yes, z, No, 1.0, dw);
        let mut dh = self.norm.backward(&dz, InputGrad::Needed).expect("needed");
        for block in self.blocks.iter_mut().rev() {
            dh = block.backward(&dh, InputGrad::Needed).expect("needed");
        }
        let dh = self.pos.backward(&dh, InputGrad::Needed).expect("needed");
        // The embedding's scatter adds the second path into the same table when tied.
        self.tok.backward(&dh, input_grad)
    }
}

impl crate::onnx::OnnxLayer for DecoderOnly {
    /// The embedding's `Gather`, the positions' `Add`, the blocks, the final norm, and the head's
    /// `MatMul` (when tied, with a `Transpose` of the token table: the file holds the table once).
    fn export(&self, g: &mut crate::onnx::Graph, ids: &str, lengths: Option<&str>) -> Result<String> {
        let (v, e) = (self.vocab(), self.embed());
        let (mut h, table) = match self.is_tied() {
            true => {
                // The embedding's own export, written here to name the table for the head.
                let id64 = g.op("Cast", &[ids], vec![crate::onnx::attr_int("to", crate::onnx::INT64)]);
                let table = g.tensor("embedding_weight", &[v, e], self.tok.weight().value.data());
                (g.op("Gather", &[&table, &id64], vec![crate::onnx::attr_int("axis", 0)]), Some(table))
            }
            false => (g.layer(&self.tok, ids, lengths)?, None),
        };
        h = g.layer(&self.pos, &h, lengths)?;
        for block in &self.blocks {
            h = g.layer(block, &h, lengths)?;
        }
        let z = g.layer(&self.norm, &h, lengths)?;
        let w = match table {
            Some(table) => g.op("Transpose", &[&table], vec![crate::onnx::attr_ints("perm", &[1, 0])]),
            None => {
                let w = super::attention::transposed(self.head_weight().data(), v, e);
                g.tensor("head_t", &[e, v], &w)
            }
        };
        let logits = g.op("MatMul", &[&z, &w], vec![]);
        Ok(match &self.head {
            Some((_, b)) => {
                let b = g.tensor("head_bias", &[v], b.value.data());
                g.op("Add", &[&logits, &b], vec![])
            }
            None => logits,
        })
    }
}

/// The most blocks a [`DecoderOnly`] stack may have (the largest published GPT-style models have
/// about a hundred).
pub const MAX_DECODER_LAYERS: usize = 4096;

impl Visit for DecoderOnly {
    /// `tok.weight`, `pos.weight`, `blocks.{k}.…` (the blocks' own names), `norm.weight`,
    /// `norm.bias`, and `head.weight`, `head.bias` unless tied.
    fn visit<'a>(&'a self, f: &mut dyn FnMut(&str, State<'a>)) {
        self.tok.visit(&mut |name, s| f(&format!("tok.{name}"), s));
        self.pos.visit(&mut |name, s| f(&format!("pos.{name}"), s));
        for (k, block) in self.blocks.iter().enumerate() {
            block.visit(&mut |name, s| f(&format!("blocks.{k}.{name}"), s));
        }
        self.norm.visit(&mut |name, s| f(&format!("norm.{name}"), s));
        if let Some((w, b)) = &self.head {
            f("head.weight", State::Param(w));
            f("head.bias", State::Param(b));
        }
    }

    fn visit_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, StateMut<'a>)) {
        self.tok.visit_mut(&mut |name, s| f(&format!("tok.{name}"), s));
        self.pos.visit_mut(&mut |name, s| f(&format!("pos.{name}"), s));
        for (k, block) in self.blocks.iter_mut().enumerate() {
            block.visit_mut(&mut |name, s| f(&format!("blocks.{k}.{name}"), s));
        }
        self.norm.visit_mut(&mut |name, s| f(&format!("norm.{name}"), s));
        if let Some((w, b)) = &mut self.head {
            f("head.weight", StateMut::Param(w));
            f("head.bias", StateMut::Param(b));
        }
    }
}
