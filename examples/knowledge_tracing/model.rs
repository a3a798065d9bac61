//! The Deep Knowledge Tracing model as a struct with two inputs, and the tensors it reads.
//!
//! ```text
//! answers [N, T] ─ Embedding (2·items + 1 ids, the last one padding) ─ LSTM (with lengths) ─ Dropout ─ h [N, T, H]
//! next    [N, T] ───────────────────────────────────────────────────────────────────────────┐
//!                                              logit[n, t] = h[n, t] · W[next[n, t]] + b[next[n, t]]
//! ```
//!
//! At step `t` the model reads answer `t` (which item, right or wrong: one of `2·items` ids) and
//! scores answer `t + 1`: the output layer `W [items, H]`, `b [items]` is PyTorch's `nn.Linear(H,
//! items)`, but only the row of the item actually answered next is computed. So the targets are
//! one value per step (`[N, T]`, NaN on padding), not one per step *and item* — memory and time
//! grow with the number of answers, not with answers × items. Backward of that gathered product:
//!
//! ```text
//! dL/dW[next] += g[n, t] · h[n, t]      dL/db[next] += g[n, t]      dL/dh[n, t] = g[n, t] · W[next]
//! ```
//!
//! Each batch runs only to its longest sequence (the rest of the padded axis is left out and its
//! outputs are zero, its targets NaN).

use backprop::data::knowledge::Histories;
use backprop::layers::{Mode, State, StateMut};
use backprop::model::{Inputs, Model, Tensors};
use backprop::prelude::*;
use backprop::tensor::init::Init;

/// The output layer, read one row at a time. See the [module docs](self).
pub struct PickedLinear {
    /// `W [items, H]`.
    pub weight: Param,
    /// `b [items]`.
    pub bias: Param,
}

impl Visit for PickedLinear {
    fn visit<'a>(&'a self, f: &mut dyn FnMut(&str, State<'a>)) {
        f("weight", State::Param(&self.weight));
        f("bias", State::Param(&self.bias));
    }

    fn visit_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, StateMut<'a>)) {
        f("weight", StateMut::Param(&mut self.weight));
        f("bias", StateMut::Param(&mut self.bias));
    }
}

/// DKT: see the [module docs](self).
pub struct Dkt {
    /// Answer ids → vectors; id `2·items` is padding (a zero row, never trained).
    pub embedding: Embedding,
    /// Carries what it has learned about the student.
    pub lstm: Lstm,
    /// DKT's regulariser, between the LSTM and the output.
    pub dropout: Dropout,
    /// `h → ` one logit for the next item.
    pub head: PickedLinear,
    items: usize,
    // The latest forward pass, for backward.
    h: Tensor,
    next: Vec<usize>,
    /// `(N, T of the inputs, T run)`.
    nt: (usize, usize, usize),
}

backprop::visit_fields!(Dkt { embedding, lstm, dropout, head });

impl Dkt {
    /// A model over `items` items: answer vectors of `embed` values, `hidden` LSTM units, dropout
    /// `p`; weights drawn from `seed` (the output layer as PyTorch's `nn.Linear`).
    pub fn new(items: usize, embed: usize, hidden: usize, p: f32, seed: u64) -> Dkt {
        let bound = 1.0 / (hidden as f32).sqrt();
        let uniform = Init::Uniform { low: -bound, high: bound };
        let mut model = Dkt {
            embedding: Embedding::new(2 * items + 1, embed).seed(seed ^ 0xE3B).padding_idx(2 * items),
            lstm: Lstm::new(embed, hidden),
            dropout: Dropout::new(p),
            head: PickedLinear {
                weight: Param::drawn(&[items, hidden], uniform, 1),
                bias: Param::drawn(&[items], uniform, 2),
            },
            items,
            h: Tensor::default(),
            next: Vec::new(),
            nt: (0, 0, 0),
        };
        backprop::layers::redraw_params(&mut model, seed);
        model
    }

    /// The logits of the items `wanted` after each answer of one sequence `answers [1, T]` (for
    /// the knowledge-state picture): `[T, wanted.len()]`.
    pub fn logits_of(&mut self, answers: &Tensor, wanted: &[usize]) -> Tensor {
        let x = self.embedding.forward(answers, Pass::EVAL);
        let h = self.lstm.forward(&x, Pass::EVAL);
        let (t_len, hidden) = (h.dim(1), h.dim(2));
        let mut out = Tensor::zeros(&[t_len, wanted.len()]);
        for t in 0..t_len {
            let h_t = &h.data()[t * hidden..][..hidden];
            for (k, &j) in wanted.iter().enumerate() {
                out.data_mut()[t * wanted.len() + k] =
                    dot(h_t, self.head.weight.value.outer(j)) + self.head.bias.value.data()[j];
            }
        }
        out
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Refuses ids that are not whole numbers below `count`, naming `what` and the position (`-1`,
/// `0.5` and NaN would otherwise be read as id 0 by a cast).
pub fn check_ids(what: &str, ids: &Tensor, count: usize) -> backprop::Result<()> {
    let bad = ids
        .data()
        .iter()
        .enumerate()
        .find(|(_, v)| !(**v >= 0.0 && v.fract() == 0.0 && (**v as usize) < count));
    match bad {
        Some((i, v)) => Err(Error::invalid(format!("{what} {v} at position {i} is not an id below {count}"))),
        None => Ok(()),
    }
}

/// A knowledge-tracing model's two inputs checked, naming the model `what`: `answers` and `next`
/// of one shape `[N, T ≥ 1]`, answer ids below `answer_ids` (the last one padding), next items
/// below `items`.
pub fn check_answers_and_next(
    what: &str,
    inputs: &Inputs,
    answer_ids: usize,
    items: usize,
) -> backprop::Result<()> {
    let (answers, next) = (inputs.get("answers")?, inputs.get("next")?);
    match answers.shape() {
        [_, t] if *t > 0 => {}
        shape => return Err(Error::shape(format!("{what}: answers {shape:?}: expected [N, T ≥ 1]"))),
    }
    if next.shape() != answers.shape() {
        return Err(Error::shape(format!(
            "{what}: next items {:?} and answers {:?} differ in shape",
            next.shape(),
            answers.shape()
        )));
    }
    check_ids(&format!("{what}: answer id"), answers, answer_ids)?;
    check_ids(&format!("{what}: next item"), next, items)
}

/// The first `keep` steps of every row of `x [N, T]` (`keep ≤ T`: the models pass their batch's
/// longest length, which `Inputs` has checked against `T`).
pub fn first_steps(x: &Tensor, keep: usize) -> Tensor {
    let (n, t) = (x.dim(0), x.dim(1));
    let data = x.data().chunks_exact(t).flat_map(|row| row[..keep].iter().copied()).collect();
    Tensor::from_vec(&[n, keep], data).expect("[N, keep]")
}

impl Model for Dkt {
    fn forward_batch(&mut self, inputs: &Inputs, mode: Mode) -> backprop::Result<Tensors> {
        self.check_inputs(inputs)?;
        let (answers, next) = (inputs.get("answers")?, inputs.get("next")?);
        let (n, t_all) = (answers.dim(0), answers.dim(1));
        // Run only to the batch's longest sequence.
        let t_run = inputs.lengths("answers").and_then(|l| l.iter().max().copied()).unwrap_or(t_all).max(1);
        let pass = inputs.pass("answers", mode)?;
        // The embedding's vectors into the LSTM, computed through their projection (one row per id).
        let h = self.lstm.forward_embedded(&self.embedding, &first_steps(answers, t_run), pass)?;
        self.h = self.dropout.forward_owned(h, pass); // masks in place, no copy
        let hidden = self.h.dim(2);
        self.next.clear();
        self.next.extend(first_steps(next, t_run).data().iter().map(|&v| v as usize));
        self.nt = (n, t_all, t_run);
        let mut logits = Tensor::zeros(&[n, t_all]);
        for (k, (&j, h_k)) in self.next.iter().zip(self.h.data().chunks_exact(hidden)).enumerate() {
            let (s, t) = (k / t_run, k % t_run);
            // logit = h · W[next] + b[next]
            logits.data_mut()[s * t_all + t] =
                dot(h_k, self.head.weight.value.outer(j)) + self.head.bias.value.data()[j];
        }
        Ok(Tensors::one("logits", logits))
    }

    /// Answer ids below `2·items + 1` (the last is padding), next items below `items`, in
    /// batches of the same shape with at least one step.
    fn check_inputs(&self, inputs: &Inputs) -> backprop::Result<()> {
        check_answers_and_next("DKT", inputs, self.embedding.num(), self.items)
    }

    fn backward_batch(&mut self, grads: &Tensors, _: InputGrad) -> backprop::Result<Tensors> {
        let g = grads.get("logits")?;
        let (n, t_all, t_run) = self.nt;
        let hidden = self.h.dim(2);
        let mut dh = Tensor::zeros(self.h.shape());
        for (k, (&j, dh_k)) in self.next.iter().zip(dh.data_mut().chunks_exact_mut(hidden)).enumerate() {
            let (s, t) = (k / t_run, k % t_run);
            let g_k = g.data()[s * t_all + t];
            if g_k == 0.0 {
                continue; // padding (and answers the loss does not score)
            }
            let h_k = &self.h.data()[k * hidden..][..hidden];
            // dL/dW[next] += g·h, dL/db[next] += g, dL/dh = g·W[next]
            self.head.weight.grad.outer_mut(j).iter_mut().zip(h_k).for_each(|(d, h)| *d += g_k * h);
            self.head.bias.grad.data_mut()[j] += g_k;
            dh_k.iter_mut().zip(self.head.weight.value.outer(j)).for_each(|(d, w)| *d = g_k * w);
        }
        debug_assert_eq!(dh.dim(0), n);
        let dh = self.dropout.backward_owned(dh);
        self.lstm.backward_embedded(&dh, &mut self.embedding); // the LSTM's and the table's gradients
        Ok(Tensors::new())
    }
}

/// The model's inputs and targets for a set of sequences (windows): `answers [N, T]` (item +
/// items·right of answer `t`; padding id `2·items` past the end), `next [N, T]` (the item of
/// answer `t + 1`; 0 on padding), one length per sequence (its answers − 1), and targets `[N, T]`
/// (answer `t + 1` right: 1, wrong: 0; NaN on padding). `T` is the longest sequence's answers − 1.
pub fn data(h: &Histories) -> backprop::Result<Dataset> {
    let items = h.items;
    let steps = h.longest().saturating_sub(1).max(1);
    let n = h.students.len();
    // Three [N, T] tensors of f32, every sequence padded to the longest: when the padding is
    // most of it (a few long students in a large file), refused past a bound instead of an
    // allocation that fails; a large data set without much padding is left to the machine.
    let bytes = n.saturating_mul(steps).saturating_mul(3 * 4);
    let predicted: usize = h.students.iter().map(|a| a.len().saturating_sub(1)).sum();
    if bytes > MAX_PADDED_BYTES && predicted.saturating_mul(2) < n.saturating_mul(steps) {
        return Err(backprop::Error::invalid(format!(
            "{n} sequences padded to the longest ({} answers) need {:.1} GB for their inputs and targets, mostly \
             padding ({predicted} answers predicted), more than the example's limit of {:.1} GB: lower --window",
            steps + 1,
            bytes as f64 / 1e9,
            MAX_PADDED_BYTES as f64 / 1e9
        )));
    }
    let mut answers = vec![(2 * items) as f32; n * steps];
    let mut next = vec![0.0f32; n * steps];
    let mut targets = vec![f32::NAN; n * steps];
    let mut lengths = Vec::with_capacity(n);
    // Every student predicts at least one answer from the ones before (the readers skip shorter
    // histories; histories built by hand are checked here, not left to an index panic).
    if let Some((s, a)) = h.students.iter().enumerate().find(|(_, a)| a.len() < 2) {
        return Err(backprop::Error::invalid(format!(
            "student {s} has {} answers: at least 2 are needed (one to predict from, one to predict)",
            a.len()
        )));
    }
    for (s, a) in h.students.iter().enumerate() {
        for t in 0..a.len() - 1 {
            let k = s * steps + t;
            answers[k] = (a.items[t] as usize + items * usize::from(a.correct[t])) as f32;
            next[k] = a.items[t + 1] as f32;
            targets[k] = f32::from(u8::from(a.correct[t + 1]));
        }
        lengths.push(a.len() - 1);
    }
    let inputs = Inputs::new()
        .with_lengths("answers", Tensor::from_vec(&[n, steps], answers)?, lengths.clone())
        .with_lengths("next", Tensor::from_vec(&[n, steps], next)?, lengths);
    Dataset::from_inputs(inputs, Targets::Values(Tensor::from_vec(&[n, steps], targets)?))
}

/// The most bytes [`data`] pads a set of sequences into when the padding is most of them: 2 GiB.
pub const MAX_PADDED_BYTES: usize = 2 << 30;

/// Consecutive runs of `lengths` (answers per sequence) for evaluation: at most 64 sequences,
/// and at most 64 × 200 padded answers in all (at least one sequence).
pub fn evaluation_batches(lengths: &[usize]) -> Vec<std::ops::Range<usize>> {
    let mut batches = Vec::new();
    let (mut start, mut longest) = (0, 0);
    for (i, &len) in lengths.iter().enumerate() {
        let wider = longest.max(len);
        if i > start && ((i - start + 1) * wider > 64 * 200 || i - start == 64) {
            batches.push(start..i);
            (start, longest) = (i, len);
        } else {
            longest = wider;
        }
    }
    if start < lengths.len() {
        batches.push(start..lengths.len());
    }
    batches
}

/// The model's logit for every answer after each sequence's first, in order, with the answers
/// themselves (logits: f32 probabilities tie at 1.0 past a logit of about 16.6, which an AUC
/// would count as ties).
pub fn predictions(model: &mut impl Model, h: &Histories) -> backprop::Result<(Vec<f32>, Vec<bool>)> {
    let (mut p, mut y) = (Vec::new(), Vec::new());
    // Batches of 64 windows of 200 answers, or as many windows as hold as many answers: an LSTM
    // keeps its activations in evaluation too (64 × 200 answers with 200 units: about 160 MB),
    // and attention's grow with the square of the window. Each batch is padded to its own
    // longest sequence only: padding a whole evaluation set to its longest had needed gigabytes
    // for a file with a few very long students.
    let lengths: Vec<usize> = h.students.iter().map(|a| a.len()).collect();
    for batch in evaluation_batches(&lengths) {
        let idx: Vec<usize> = batch.collect();
        let data = data(&h.subset(&idx))?;
        let steps = data.named_inputs().get("answers")?.dim(1);
        let logits = model.forward_batch(data.named_inputs(), Mode::Eval)?.take("logits").expect("logits");
        for (row, &s) in idx.iter().enumerate() {
            let a = &h.students[s];
            for t in 0..a.len() - 1 {
                p.push(logits.data()[row * steps + t]);
                y.push(a.correct[t + 1]);
            }
        }
    }
    Ok((p, y))
}
