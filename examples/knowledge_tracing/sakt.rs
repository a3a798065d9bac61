//! SAKT, self-attentive knowledge tracing (Pandey & Karypis, 2019): instead of an LSTM carrying
//! the student's past in one state, the question about the next item *attends* to the past
//! answers directly. For the answers `0 … t` and the next item `e_{t+1}`:
//!
//! ```text
//! m_j = W_answer[item_j + items·right_j] + P[j]       keys and values: the answers so far, with positions
//! q_t = W_item[e_{t+1}]                               the query: the item asked next
//! a_t = Attention(q_t; m_0 … m_t)                     causal: answer j is seen from step t when j ≤ t
//! h_t = LN(q_t + Drop(a_t));  z_t = LN(h_t + Drop(FF(h_t)))
//! logit_t = w·z_t + b                                 P(answer t+1 right) = σ(logit_t)
//! ```
//!
//! The backward pass composes the parts' own (the cross-attention's is
//! [`MultiHeadAttention::backward_cross`]: the gradient reaches both the query's embedding and the
//! answers' embeddings).

use crate::model::{check_answers_and_next, first_steps};
use backprop::layers::{
    Dense, Dropout, Embedding, InputGrad, Layer, LayerNorm, Mode, MultiHeadAttention, Pass,
    PositionEmbedding, Relu,
};
use backprop::model::{Inputs, Model, Tensors};
use backprop::prelude::*;

/// SAKT: see the [module docs](self).
pub struct Sakt {
    /// Answer ids (`item + items·right`; `2·items` is padding) → vectors.
    pub answers: Embedding,
    /// The next item → the query vector.
    pub items: Embedding,
    /// The answers' positions.
    pub positions: PositionEmbedding,
    /// The next item's question to the past answers.
    pub attention: MultiHeadAttention,
    /// After the attention's residual sum.
    pub norm1: LayerNorm,
    /// The position-wise feed-forward network.
    pub ff1: Dense,
    /// Between the feed-forward layers.
    pub relu: Relu,
    /// The feed-forward network's output.
    pub ff2: Dense,
    /// After the feed-forward residual sum.
    pub norm2: LayerNorm,
    /// On the attention's output.
    pub dropout1: Dropout,
    /// On the feed-forward output.
    pub dropout2: Dropout,
    /// `z → ` the logit of the next answer.
    pub head: Dense,
    count: usize,
    /// `(N, T of the inputs, T run)`.
    nt: (usize, usize, usize),
}

backprop::visit_fields!(Sakt {
    answers,
    items,
    positions,
    attention,
    norm1,
    ff1,
    ff2,
    norm2,
    dropout1,
    dropout2,
    head
});

impl Sakt {
    /// A model over `items` items with vectors of `embed` values, `heads` heads, sequences of at
    /// most `max_len` answers, dropout `p`; weights drawn from `seed`.
    ///
    /// # Panics
    /// If `heads` does not divide `embed`.
    pub fn new(items: usize, embed: usize, heads: usize, max_len: usize, p: f32, seed: u64) -> Sakt {
        let mut model = Sakt {
            answers: Embedding::new(2 * items + 1, embed).seed(seed ^ 0x5A).padding_idx(2 * items),
            items: Embedding::new(items, embed).seed(seed ^ 0x17),
            positions: PositionEmbedding::new(max_len.max(1), embed),
            attention: MultiHeadAttention::new(embed, heads).causal(),
            norm1: LayerNorm::new(embed),
            ff1: Dense::new(embed, embed),
            relu: Relu::new(),
            ff2: Dense::new(embed, embed),
            norm2: LayerNorm::new(embed),
            dropout1: Dropout::new(p).seed(seed ^ 1),
            dropout2: Dropout::new(p).seed(seed ^ 2),
            head: Dense::new(embed, 1),
            count: items,
            nt: (0, 0, 0),
        };
        backprop::layers::redraw_params(&mut model, seed);
        model
    }

    /// The longest sequence it can read.
    pub fn max_len(&self) -> usize {
        self.positions.max_len()
    }
}

/// `a + b` in `a`'s memory (addition commutes exactly: `q + a` written as `a + q`, no copy).
fn add_into(mut a: Tensor, b: &Tensor) -> Tensor {
    a.axpy(1.0, b);
    a
}

fn needed(g: Option<Tensor>) -> Tensor {
    g.expect("an input gradient that was asked for")
}

impl Model for Sakt {
    fn forward_batch(&mut self, inputs: &Inputs, mode: Mode) -> backprop::Result<Tensors> {
        self.check_inputs(inputs)?;
        let (answers, next) = (inputs.get("answers")?, inputs.get("next")?);
        let (n, t_all) = (answers.dim(0), answers.dim(1));
        let lengths = inputs.lengths("answers");
        let t_run = lengths.and_then(|l| l.iter().max().copied()).unwrap_or(t_all).max(1);
        if t_run > self.max_len() {
            return Err(Error::invalid(format!(
                "SAKT: sequences of {t_run} answers, longer than the {} it was built for (--window)",
                self.max_len()
            )));
        }
        let pass = Pass { mode, lengths };
        let m = self.answers.forward(&first_steps(answers, t_run), pass);
        let m = self.positions.forward(&m, pass);
        let q = self.items.forward(&first_steps(next, t_run), pass);
        let a = self.attention.forward_cross(&q, lengths, &m, lengths)?;
        let a = self.dropout1.forward_owned(a, pass);
        let h = self.norm1.forward(&add_into(a, &q), pass);
        let f = self.ff2.forward(&self.relu.forward_in_place(self.ff1.forward(&h, pass)), pass);
        let f = self.dropout2.forward_owned(f, pass);
        let z = self.norm2.forward(&add_into(f, &h), pass);
        let logit = self.head.forward(&z, pass); // [N, T run, 1]
        self.nt = (n, t_all, t_run);
        let mut logits = Tensor::zeros(&[n, t_all]);
        for (row, run) in logits.data_mut().chunks_exact_mut(t_all).zip(logit.data().chunks_exact(t_run)) {
            row[..t_run].copy_from_slice(run);
        }
        Ok(Tensors::one("logits", logits))
    }

    /// Answer ids below `2·items + 1` (the last is padding), next items below `items`, in
    /// batches of the same shape with at least one step.
    fn check_inputs(&self, inputs: &Inputs) -> backprop::Result<()> {
        check_answers_and_next("SAKT", inputs, self.answers.num(), self.count)
    }

    fn backward_batch(&mut self, grads: &Tensors, _: InputGrad) -> backprop::Result<Tensors> {
        let g = grads.get("logits")?;
        let (n, t_all, t_run) = self.nt;
        let dlogit = Tensor::from_vec(&[n, t_run, 1], first_steps(g, t_run).into_vec())?;
        let dz = needed(self.head.backward(&dlogit, InputGrad::Needed));
        let dv = needed(self.norm2.backward(&dz, InputGrad::Needed));
        let df = self.dropout2.backward_owned(dv.clone());
        let df = needed(self.ff2.backward(&df, InputGrad::Needed));
        let df = self.relu.backward_in_place(df);
        let dh = add_into(needed(self.ff1.backward(&df, InputGrad::Needed)), &dv);
        let du = needed(self.norm1.backward(&dh, InputGrad::Needed));
        let da = self.dropout1.backward_owned(du.clone());
        let (dq, dm) = self.attention.backward_cross(&da);
        self.items.backward(&add_into(dq, &du), InputGrad::NotNeeded); // q feeds the residual and the attention
        let dm = needed(self.positions.backward(&dm, InputGrad::Needed));
        self.answers.backward(&dm, InputGrad::NotNeeded);
        debug_assert!(t_all >= t_run);
        Ok(Tensors::new())
    }
}

impl Sakt {
    /// The logits of the items `wanted` after each answer of one sequence `answers [1, T]` (for
    /// the knowledge-state picture): `[T, wanted.len()]`, one pass per item asked next.
    pub fn logits_of(&mut self, answers: &Tensor, wanted: &[usize]) -> backprop::Result<Tensor> {
        let t = answers.dim(1);
        let mut out = Tensor::zeros(&[t, wanted.len()]);
        for (k, &j) in wanted.iter().enumerate() {
            let inputs =
                Inputs::new().with("answers", answers.clone()).with("next", Tensor::full(&[1, t], j as f32));
            let logits = self.forward_batch(&inputs, Mode::Eval)?.take("logits").expect("logits");
            for (s, &l) in logits.data().iter().enumerate() {
                out.data_mut()[s * wanted.len() + k] = l;
            }
        }
        Ok(out)
    }
}

/// The example's two models behind one type: DKT (an LSTM) or SAKT (attention).
pub enum Net {
    /// Deep knowledge tracing.
    Dkt(Box<crate::model::Dkt>),
    /// Self-attentive knowledge tracing.
    Sakt(Box<Sakt>),
}

impl Net {
    /// Refuses, before training, a batch of `n` sequences of `steps` steps that the model's
    /// activation budget would refuse midway through an epoch (batches of similar length come in
    /// a shuffled order, so the longest one can come last).
    pub fn check_batch(&self, n: usize, steps: usize, hint: &str) -> backprop::Result<()> {
        let (what, need, budget) = match self {
            Net::Dkt(m) => {
                let lstm = &m.lstm;
                (
                    "DKT's LSTM",
                    lstm.activation_bytes(&[n, steps, m.embedding.dim()]),
                    lstm.activation_budget_bytes(),
                )
            }
            Net::Sakt(m) => {
                let a = &m.attention;
                ("SAKT's attention", a.activation_bytes(n, steps, steps), a.activation_budget_bytes())
            }
        };
        if need <= budget {
            return Ok(());
        }
        Err(Error::invalid(format!(
            "{what} would need about {:.1} GB for a batch of {n} {} of {} answers, over its budget of {:.1} GB: \
             lower --window{hint}",
            need as f64 / 1e9,
            if n == 1 { "sequence" } else { "sequences" },
            steps + 1,
            budget as f64 / 1e9
        )))
    }

    /// The logits of the items `wanted` after each answer of `answers [1, T]`:
    /// `[T, wanted.len()]`.
    pub fn logits_of(&mut self, answers: &Tensor, wanted: &[usize]) -> backprop::Result<Tensor> {
        match self {
            Net::Dkt(m) => Ok(m.logits_of(answers, wanted)),
            Net::Sakt(m) => m.logits_of(answers, wanted),
        }
    }
}

impl Model for Net {
    fn forward_batch(&mut self, inputs: &Inputs, mode: Mode) -> backprop::Result<Tensors> {
        match self {
            Net::Dkt(m) => m.forward_batch(inputs, mode),
            Net::Sakt(m) => m.forward_batch(inputs, mode),
        }
    }

    fn backward_batch(&mut self, grads: &Tensors, input_grad: InputGrad) -> backprop::Result<Tensors> {
        match self {
            Net::Dkt(m) => m.backward_batch(grads, input_grad),
            Net::Sakt(m) => m.backward_batch(grads, input_grad),
        }
    }
}

impl backprop::layers::Visit for Net {
    fn visit<'a>(&'a self, f: &mut dyn FnMut(&str, backprop::layers::State<'a>)) {
        match self {
            Net::Dkt(m) => m.visit(f),
            Net::Sakt(m) => m.visit(f),
        }
    }

    fn visit_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, backprop::layers::StateMut<'a>)) {
        match self {
            Net::Dkt(m) => m.visit_mut(f),
            Net::Sakt(m) => m.visit_mut(f),
        }
    }
}
