//! A model with two inputs: a *memory* (a sequence of digits, of any length) and a *query* (one
//! digit). It answers whether the query occurs in the memory — a toy of what knowledge tracing's
//! attention models do (a question looked up against a student's past answers). Shared by
//! `examples/query_memory/main.rs` and `tests/models.rs`.
//!
//! ```text
//! memory [N, T] ─ Embedding ─ LSTM (with the memory's lengths) ─ h_n [N, H] ─┐
//!                                                             concat [N, H+E] ─ Dense ─ ReLU ─ Dense ─ logits [N, 2]
//! query  [N, 1] ─ Embedding ───────────────────────────────── q [N, E] ────────┘
//! ```
//!
//! Backward: the head's `dL/dz` splits back into `dL/dh_n` (into the LSTM's final state: its
//! outputs are not used) and `dL/dq` (into the query's embedding).

use backprop::layers::{InputGrad, Lstm, Mode, RecurrentState, backward_input};
use backprop::model::{Inputs, Model, Shapes, Tensors};
use backprop::prelude::*;

/// The two-input model.
pub struct QueryMemory {
    /// Memory digits → vectors.
    pub memory_embed: Embedding,
    /// Reads the memory; its final state summarises it.
    pub reader: Lstm,
    /// The query digit → a vector.
    pub query_embed: Embedding,
    /// `[h_n, q]` → two scores (absent, present): a small chain of its own (state names
    /// `"head.0.weight"`, … as PyTorch names a nested `nn.Sequential`). One dense layer is not
    /// enough: "is q among the digits h summarises" needs q and h to interact.
    pub head: Sequential,
    /// `H` and `E`, to split the head's input gradient.
    sizes: (usize, usize),
}

backprop::visit_fields!(QueryMemory { memory_embed, reader, query_embed, head });

impl QueryMemory {
    /// Digit vectors of `embed` values, an LSTM of `hidden` units; weights from `seed`.
    pub fn new(embed: usize, hidden: usize, seed: u64) -> QueryMemory {
        let mut model = QueryMemory {
            memory_embed: Embedding::new(10, embed),
            reader: Lstm::new(embed, hidden),
            query_embed: Embedding::new(10, embed),
            head: Sequential::new()
                .add(Dense::new(hidden + embed, 64))
                .add(Relu::new())
                .add(Dense::new(64, 2)),
            sizes: (hidden, embed),
        };
        backprop::layers::redraw_params(&mut model, seed);
        model
    }
}

impl Model for QueryMemory {
    fn forward_batch(&mut self, inputs: &Inputs, mode: Mode) -> backprop::Result<Tensors> {
        let (h, e) = self.sizes;
        check_query(inputs.get("query")?.shape())?;
        let pass = inputs.pass("memory", mode)?;
        let m = self.memory_embed.forward(inputs.get("memory")?, pass);
        let (_, last) = self.reader.forward_with_state(&m, None, pass)?; // h_n: each memory's last valid step
        let q = self.query_embed.forward(inputs.get("query")?, mode.into()); // [N, 1, E]
        let n = last.h.dim(0);
        // z = [h_n, q], side by side.
        let z = Tensor::from_fn(&[n, h + e], |i| {
            if i[1] < h { last.h[&[i[0], i[1]]] } else { q[&[i[0], 0, i[1] - h]] }
        });
        Ok(Tensors::one("logits", self.head.forward(&z, mode.into())))
    }

    fn backward_batch(&mut self, grads: &Tensors, _: InputGrad) -> backprop::Result<Tensors> {
        let (h, e) = self.sizes;
        let dz = backward_input(&mut self.head, grads.get("logits")?); // [N, H + E]
        let n = dz.dim(0);
        // Split dL/dz back into its two halves.
        let dh = Tensor::from_fn(&[n, h], |i| dz[&[i[0], i[1]]]);
        let dq = Tensor::from_fn(&[n, 1, e], |i| dz[&[i[0], h + i[2]]]);
        self.query_embed.backward(&dq, InputGrad::NotNeeded);
        // dL/dh_n into the reader's final state (dL/dc_n = 0, dL/dy = 0: neither was used).
        let (dm, _) = self.reader.backward_with_state(None, Some(&RecurrentState::h(dh)), InputGrad::Needed);
        self.memory_embed.backward(&dm.expect("asked for"), InputGrad::NotNeeded);
        Ok(Tensors::new()) // digit ids have no gradient
    }

    fn output_shapes(&self, inputs: &[(String, Vec<usize>)]) -> Option<backprop::Result<Shapes>> {
        let n = inputs.first()?.1.first().copied()?;
        if let Some((_, query)) = inputs.iter().find(|(name, _)| name == "query")
            && let Err(e) = check_query(query)
        {
            return Some(Err(e));
        }
        Some(Ok(vec![("logits".to_string(), vec![n, 2])]))
    }
}

/// The query is one digit per sample, `[N, 1]` (a wider one had been read at its first digit).
fn check_query(shape: &[usize]) -> backprop::Result<()> {
    match shape {
        [_, 1] => Ok(()),
        _ => Err(backprop::Error::shape(format!(
            "QueryMemory: the query must be one digit per sample, [N, 1], got {shape:?}"
        ))),
    }
}

/// `n` memories of 1 to `max_len` digits (padded with 0), a query digit each, and whether it
/// occurs: half the queries are drawn from the memory, half at random.
pub fn lookup_data(n: usize, max_len: usize, seed: u64) -> backprop::Result<Dataset> {
    use rand::RngExt;
    let mut rng = backprop::tensor::rng(seed);
    let (mut memory, mut query) = (Tensor::zeros(&[n, max_len]), Tensor::zeros(&[n, 1]));
    let (mut lengths, mut labels) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for s in 0..n {
        let len = rng.random_range(1..=max_len);
        let digits: Vec<usize> = (0..len).map(|_| rng.random_range(0..10)).collect();
        for (t, &d) in digits.iter().enumerate() {
            memory.data_mut()[s * max_len + t] = d as f32;
        }
        let q = if rng.random::<bool>() { digits[rng.random_range(0..len)] } else { rng.random_range(0..10) };
        query.data_mut()[s] = q as f32;
        labels.push(usize::from(digits.contains(&q)));
        lengths.push(len);
    }
    let inputs = Inputs::new().with_lengths("memory", memory, lengths).with("query", query);
    Dataset::from_inputs(inputs, Targets::Classes(labels))
}
