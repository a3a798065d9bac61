//! Per-example parameter gradients: an optional capability of a layer, for private training.
//!
//! [`Layer::backward`] sums each parameter's gradient over the batch:
//! `dL/dθ = Σᵢ dLᵢ/dθ`. Differentially private SGD ([`crate::privacy`]) needs the terms of that
//! sum one by one — each example's gradient `gᵢ = dLᵢ/dθ` is clipped to a norm bound before they
//! are added. [`PerExample::backward_per_example`] runs the same backward pass but, instead of
//! adding into [`Param::grad`](crate::layers::Param), writes every example's gradient of every parameter into a
//! [`PerExampleGrads`]: one *slot* per parameter, in [`Visit::visit`] order, each an
//! `[N, len]` matrix whose row `i` is example `i`'s gradient.
//!
//! Why the per-example terms are cheap for the layers here: each already forms its summed
//! gradient as a sum over examples of a small product, and keeps the terms apart instead —
//!
//! ```text
//! Dense      dW = Σᵢ gᵢᵀ·xᵢ                     → row i: gᵢᵀ·xᵢ           (gᵢ, xᵢ: example i's rows)
//! Conv2d     dW = Σᵢ gᵢ·colsᵢᵀ                  → row i: gᵢ·colsᵢᵀ        (colsᵢ = im2col(xᵢ))
//! Embedding  dW[id] += g at each id             → row i: example i's ids only
//! LSTM/GRU   dW_ih = Σᵢ Σₜ daᵢₜᵀ·xᵢₜ            → row i: Σₜ daᵢₜᵀ·xᵢₜ     (and W_hh, the biases)
//! ```
//!
//! The capability lives here, with privacy, not in the [`Layer`] contract: a layer offers it
//! through one provided accessor, [`Layer::per_example`] (`None` by default), and its
//! implementation sits in this module's `layers.rs`, beside the others. A layer without
//! parameters needs nothing (its per-example pass is its ordinary one); containers pass the call
//! to their children.
//!
//! The alternative, one backward pass per example (a batch of one), is what the
//! [private step](crate::privacy::DpSgd) falls back to for a model with a layer that does not offer
//! this (a custom layer, say) or a model struct; it gives the same gradients, one small pass at a
//! time.

mod layers;

use crate::layers::{InputGrad, Layer, State, Visit};
use crate::tensor::Tensor;
use crate::tensor::parallel::split_if_threads;
use rayon::prelude::*;

/// A layer that can give each example's parameter gradients from one batched backward pass;
/// reached through [`Layer::per_example`]. See the [module docs](self).
pub trait PerExample {
    /// True if the whole layer can (a container asks its children). The default is true.
    fn has_per_example_grads(&mut self) -> bool {
        true
    }

    /// Like [`Layer::backward`], but each example's `dL/dθ` goes to its own row of `grads`
    /// (one [`PerExampleGrads::next_slot`] per parameter, in [`Visit::visit`] order) instead of
    /// being summed into [`Param::grad`](crate::layers::Param), which is left alone.
    ///
    /// # Panics
    /// As [`Layer::backward`].
    fn backward_per_example(
        &mut self,
        grad_out: &Tensor,
        input_grad: InputGrad,
        grads: &mut PerExampleGrads,
    ) -> Option<Tensor>;
}

/// True if `layer` gives per-example gradients from one batched pass: it offers the capability
/// (and all its parts do), or it has no parameters.
pub fn supports_per_example(layer: &mut dyn Layer) -> bool {
    match layer.per_example() {
        Some(p) => p.has_per_example_grads(),
        None => has_no_params(layer),
    }
}

/// Runs `layer`'s per-example backward pass: its own, or for a layer without parameters its
/// ordinary backward pass (there is nothing to keep apart).
///
/// # Panics
/// If the layer has parameters but no per-example pass (check [`supports_per_example`] first).
pub fn backward_per_example(
    layer: &mut dyn Layer,
    grad_out: &Tensor,
    input_grad: InputGrad,
    grads: &mut PerExampleGrads,
) -> Option<Tensor> {
    if layer.per_example().is_none() {
        assert!(has_no_params(layer), "{} has parameters but no per-example backward pass", layer.describe());
        return layer.backward(grad_out, input_grad);
    }
    layer.per_example().expect("checked above").backward_per_example(grad_out, input_grad, grads)
}

/// Every example's gradient of every parameter, filled by [`PerExample::backward_per_example`];
/// see the [module docs](self). Reused from step to step: the slots keep their memory.
///
/// ```
/// use backprop::layers::{Dense, Layer, Pass, InputGrad};
/// use backprop::privacy::per_example::{PerExampleGrads, backward_per_example};
/// use backprop::Tensor;
/// let mut dense = Dense::new(3, 2).seed(1);
/// let x = Tensor::from_vec(&[2, 3], vec![1., 2., 3., 4., 5., 6.]).unwrap();
/// dense.forward(&x, Pass::TRAIN);
/// let g = Tensor::from_vec(&[2, 2], vec![1., 0., 0., 1.]).unwrap();
/// let mut grads = PerExampleGrads::new();
/// grads.start(2);
/// backward_per_example(&mut dense, &g, InputGrad::NotNeeded, &mut grads);
/// // Example 0 sent g = [1, 0]: its dW is [[1, 2, 3], [0, 0, 0]], its db is [1, 0].
/// assert_eq!(grads.slot(0).outer(0), &[1., 2., 3., 0., 0., 0.]);
/// assert_eq!(grads.slot(1).outer(0), &[1., 0.]);
/// ```
#[derive(Debug, Default)]
pub struct PerExampleGrads {
    examples: usize,
    slots: Vec<Tensor>,
    /// The slot the next [`PerExampleGrads::next_slot`] hands out.
    cursor: usize,
    /// Slots filled since [`PerExampleGrads::start`]: `0..filled`.
    filled: usize,
}

impl PerExampleGrads {
    /// An empty store.
    pub fn new() -> PerExampleGrads {
        PerExampleGrads::default()
    }

    /// Prepares for a backward pass over `examples` examples: the next [`Self::next_slot`] is the
    /// first parameter's.
    pub fn start(&mut self, examples: usize) {
        self.examples = examples;
        self.cursor = 0;
        self.filled = 0;
    }

    /// Number of examples of the latest pass.
    pub fn examples(&self) -> usize {
        self.examples
    }

    /// Checks that a layer's batch has as many examples as this pass was started for.
    ///
    /// # Panics
    /// Naming the layer and both counts, when they differ.
    pub fn expect_batch(&self, layer: &str, batch: usize) {
        assert_eq!(
            self.examples, batch,
            "{layer}: per-example gradients for {} examples, batch of {batch}",
            self.examples
        );
    }

    /// The next parameter's slot, `[examples, len]`, zeroed: a layer asks for one per parameter,
    /// in the order its [`Visit::visit`] hands them out.
    pub fn next_slot(&mut self, len: usize) -> &mut Tensor {
        let slot = self.next_slot_to_overwrite(len);
        slot.fill(0.0);
        slot
    }

    /// Like [`Self::next_slot`] but without zeroing: the contents are whatever the slot held
    /// before, for a layer that writes every element (saves a pass over memory as large as the
    /// model times the batch).
    pub fn next_slot_to_overwrite(&mut self, len: usize) -> &mut Tensor {
        while self.slots.len() <= self.cursor {
            self.slots.push(Tensor::default());
        }
        let slot = &mut self.slots[self.cursor];
        self.cursor += 1;
        self.filled = self.filled.max(self.cursor);
        if slot.shape() != [self.examples, len] {
            slot.resize_zeroed(&[self.examples, len]);
        }
        slot
    }

    /// The next `K` slots at once, for a layer that fills its parameters' slots side by side.
    /// As with [`Self::next_slot_to_overwrite`], they are not zeroed: the layer writes every
    /// element.
    pub fn next_slots_to_overwrite<const K: usize>(&mut self, lens: [usize; K]) -> [&mut Tensor; K] {
        let first = self.cursor;
        for len in lens {
            self.next_slot_to_overwrite(len);
        }
        let mut slots = self.slots[first..first + K].iter_mut();
        std::array::from_fn(|_| slots.next().expect("K slots were just filled"))
    }

    /// Where the next slot goes. A container walks its children backwards but their parameters
    /// are visited forwards: before each child's backward pass it moves the cursor to the
    /// child's first parameter (the number of parameters visited before it).
    pub fn seek(&mut self, slot: usize) {
        self.cursor = slot;
    }

    /// The slot the next [`Self::next_slot`] fills.
    pub fn position(&self) -> usize {
        self.cursor
    }

    /// Number of slots filled since [`Self::start`].
    pub fn len(&self) -> usize {
        self.filled
    }

    /// True if no slot was filled.
    pub fn is_empty(&self) -> bool {
        self.filled == 0
    }

    /// Slot `k` (the `k`-th parameter in visiting order): `[examples, len]`.
    ///
    /// # Panics
    /// If fewer than `k + 1` slots were filled.
    pub fn slot(&self, k: usize) -> &Tensor {
        assert!(k < self.filled, "per-example gradients: slot {k} of {} filled", self.filled);
        &self.slots[k]
    }

    /// The filled slots, in visiting order.
    pub fn slots(&self) -> &[Tensor] {
        &self.slots[..self.filled]
    }

    /// Each example's squared gradient norm over the whole model, `Σ_slots ‖row i‖²`, in f64.
    pub fn squared_norms(&self) -> Vec<f64> {
        let mut norms = vec![0.0f64; self.examples];
        norms.par_iter_mut().enumerate().with_min_len(split_if_threads(1)).for_each(|(i, norm)| {
            for slot in self.slots() {
                *norm += squared_norm(slot.outer(i));
            }
        });
        norms
    }
}

/// `Σ v²` in f64, over eight independent partial sums so that the loop vectorises (a single
/// running sum would force one addition after another).
fn squared_norm(v: &[f32]) -> f64 {
    let mut lanes = [0.0f64; 8];
    let chunks = v.chunks_exact(8);
    let tail: f64 = chunks.remainder().iter().map(|&x| x as f64 * x as f64).sum();
    for chunk in chunks {
        for (lane, &x) in lanes.iter_mut().zip(chunk) {
            *lane += x as f64 * x as f64;
        }
    }
    lanes.iter().sum::<f64>() + tail
}

/// Number of learnable tensors of `layer` (the slots its per-example pass fills).
pub(crate) fn param_count<V: Visit + ?Sized>(layer: &V) -> usize {
    let mut n = 0;
    layer.visit(&mut |_, s| n += usize::from(matches!(s, State::Param(_))));
    n
}

/// True if `layer` has no learnable parameters (its per-example backward is its backward).
pub(crate) fn has_no_params<V: Visit + ?Sized>(layer: &V) -> bool {
    let mut none = true;
    layer.visit(&mut |_, s| none &= !matches!(s, State::Param(_)));
    none
}
