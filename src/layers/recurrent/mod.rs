//! Recurrent layers over batch-first sequences `[N, T, F]`: [`Rnn`], [`Lstm`], [`Gru`], and the
//! backprop-through-time walk they share.
//!
//! # Unrolling
//!
//! A recurrent layer applies one *cell* at every step `t`, with the same weights each time:
//!
//! ```text
//! a_t = x_t·W_ihᵀ + b_ih            the input's share of the gates      [G·H]
//! b_t = h_{t−1}·W_hhᵀ + b_hh        the previous state's share          [G·H]
//! (h_t, c_t) = cell(a_t, b_t, h_{t−1}, c_{t−1})                          (c: the LSTM's cell state)
//! y_t = h_t
//! ```
//!
//! `G` is the number of gates (1 for [`Rnn`], 4 for [`Lstm`], 3 for [`Gru`]). Unrolled over `T`
//! steps this is a deep feed-forward network whose layers share their weights, and backprop through
//! time (BPTT) is ordinary backprop on that network, walked from the last step to the first.
//! (The RNN's and the LSTM's cells read only the sum `p_t = a_t + b_t`: the code computes `a_t`
//! into the buffer of `b_t` and adds the state's product to it while each tile of the product is
//! in registers, so the cell reads one array per step. The GRU needs `b_t` apart.)
//!
//! # Backward, step by step
//!
//! The state `h_t` reaches the loss along two paths: through this step's output `y_t` and through
//! the next step, which read it as `h_t`. So the gradient arriving at `h_t` is a sum:
//!
//! ```text
//! dh_t = dL/dy_t + (gradient from step t+1 into h_t)
//! ```
//!
//! From `dh_t` (and `dc_t` for the LSTM) the cell's backward gives the gradients of its two
//! pre-activations, `da_t` and `db_t`, and the part of `dh_{t−1}`, `dc_{t−1}` that does not go
//! through `W_hh` (the GRU's `z ⊙ h` term, the LSTM's `f ⊙ c` path). The matrix products do the
//! rest, exactly as in a dense layer:
//!
//! ```text
//! dh_{t−1} += db_t · W_hh                     the recurrence: how h_{t−1} moved the gates
//! dW_hh    += db_tᵀ · h_{t−1}    db_hh += db_t
//! dW_ih    += da_tᵀ · x_t        db_ih += da_t
//! dx_t      = da_t · W_ih
//! ```
//!
//! Only the first line has to run step by step (`dh_{t−1}` feeds step `t−1`); the code keeps every
//! step's `da_t` and `db_t` (one of them where they are equal: the LSTM, the plain RNN) and does
//! the other three for all steps at once, as large GEMMs (`dW_ih` and `dW_hh` in one call over a
//! single copy of `db` where `da = db`).
//!
//! **Why the weight gradients are sums over time**: `W_hh` is used at every step, so `L` depends on
//! it through every step, and the chain rule adds those contributions — the same reason a
//! convolution's kernel gradient sums over positions. `Recurrent::backward` walks `t` from `T − 1`
//! down to 0 with exactly these names.
//!
//! # Variable lengths, state, truncation
//!
//! - **Lengths travel with the batch** ([`Pass::lengths`]): sequence `n` has `lengths[n]` valid
//!   steps; at a padded step the state is carried unchanged (`h_t = h_{t−1}`, `c_t = c_{t−1}`), the
//!   output is 0, and the backward passes the gradient straight through — so padding contributes
//!   nothing to outputs, to the final state or to any gradient. A [`Dataset`](crate::data::Dataset)
//!   with lengths hands every batch its own samples' lengths, so shuffling cannot separate them.
//! - **State in, state out, gradients both ways** ([`Recurrent::forward_with_state`],
//!   [`Recurrent::backward_with_state`]): the initial state `(h₀, c₀)` is an input and the final
//!   state `(h_n, c_n)` an output, as in PyTorch's `output, (h_n, c_n) = lstm(x, (h_0, c_0))`.
//!   Backward takes `dL/dh_n` and `dL/dc_n` (an encoder whose final state feeds a decoder) and
//!   returns `dL/dh₀`, `dL/dc₀`. The final-state gradient enters the walk at the last step and
//!   reaches each sequence's last *valid* step through the padded steps' identity.
//! - **Truncated BPTT** ([`Recurrent::stateful`]): each forward pass starts from the previous
//!   pass's final state when the batch size is the same, and backward stops there (the earlier
//!   chunk's graph is gone), so a long stream is trained chunk by chunk with the state carried
//!   across. A pass of another batch size starts from zeros and its final state replaces the
//!   stream's: keep every pass of a stream at one batch size.
//! - [`Recurrent::last_step_only`]: output the final state `[N, H]` (the last *valid* step of each
//!   sequence) instead of every step.
//!
//! Speed: `dW_ih`, `dW_hh` and `dx` are one GEMM each over all steps; only the recurrent product
//! runs per step (with `W_hh` packed once per pass). Every per-step buffer is time-major — the
//! input kept for the backward pass, `h_t`, `c_t`, the saved gates, `dL/da_t` and `dL/db_t` — so
//! that a step's samples sit side by side; where `dL/da_t = dL/db_t` (the LSTM, the plain RNN:
//! [`Cell::SHARED_GRADIENT`]) only one of the two is written, and where that holds for some gates
//! (the GRU's `r` and `z`: [`Cell::SHARED_GATES`]) their `dL/da_t` is written only when the input
//! gradient needs it, and `dW_ih`'s rows for them are taken from `dL/db_t` in the same copy of it
//! as `dW_hh` (`gemm::weight_gradients_shared`). Buffers are kept from call to call.
//! [`reference`](mod@reference) computes the forward pass sample by sample, step by step, with plain loops: the
//! definition the batched code is tested against.

pub mod gru;
pub mod lstm;
pub mod reference;
pub mod rnn;

pub use gru::{Gru, GruCell};

/// The default of [`Recurrent::activation_budget`]: 2 GiB.
pub const DEFAULT_ACTIVATION_BUDGET: usize = 2 << 30;
pub use lstm::{Lstm, LstmCell};
pub use rnn::{Rnn, RnnCell};

use super::{Embedding, InputGrad, Param, Pass, State, StateMut, check_grad, shape_error};
use crate::error::{Error, Result};
use crate::tensor::gemm::{
    Transpose::No, Transpose::Yes, sgemm, sgemm_new, weight_gradients, weight_gradients_of_columns,
    weight_gradients_shared,
};
use crate::tensor::init::Init;
use crate::tensor::packed_gemm::{PackedB, gemm_packed_b};
use crate::tensor::{Tensor, rng, shape_str};
use rayon::prelude::*;

/// The weights and biases (`W_ih`, `b_ih`, `W_hh`, `b_hh`, or the last two when the input comes
/// through an embedding's projection) that the forward walk's panels were packed from, kept after
/// a pass with no backward to follow (`Mode::Predict`): the next such pass whose weights are these,
/// bit for bit, reuses the panels. Every pass that a backward pass may follow packs afresh (and the
/// backward walk packs `W_hh` the other way), so only predictions reuse; the weights are compared
/// in full rather than tracked, since `Param::value` is a public field that anything may change.
/// (Packing was 1.4 % of an LSTM's prediction on two threads, on one thread while the other
/// waited; comparing reads the values once, in order.)
#[derive(Default)]
struct PackedFrom {
    /// The values, one part after another; meaningful while `dense` is `Some`.
    values: Vec<f32>,
    /// `Some(whether the input was dense)` while the panels are those `values` give.
    dense: Option<bool>,
}

impl PackedFrom {
    /// True if the panels were packed from `parts` for an input that is `dense` or not.
    fn is(&self, dense: bool, parts: &[&[f32]]) -> bool {
        let mut at = 0;
        self.dense == Some(dense)
            && parts.iter().all(|part| {
                let kept = self.values.get(at..at + part.len());
                at += part.len();
                kept.is_some_and(|kept| crate::tensor::same_bits(kept, part))
            })
            && at == self.values.len()
    }

    /// Notes that the panels were just packed from `parts`.
    fn note(&mut self, dense: bool, parts: &[&[f32]]) {
        self.values.clear();
        parts.iter().for_each(|part| self.values.extend_from_slice(part));
        self.dense = Some(dense);
    }

    /// The panels are no longer the ones noted (the values' buffer is kept for the next note).
    fn forget(&mut self) {
        self.dense = None;
    }
}

/// Samples are processed in parallel at a step once `N·G·H` reaches this (below it, handing the
/// work to other threads costs more than it saves).
const PARALLEL_MIN: usize = 16_384;

/// One step of a recurrent cell, for one sample. Forward and backward sit side by side in each
/// cell's file, with the same names.
pub trait Cell: Send + Sync + 'static {
    /// Gates `G`: rows of `W_ih` and `W_hh` are `G·H`.
    const GATES: usize;
    /// Whether the cell has a second state `c` (the LSTM).
    const HAS_CELL: bool;
    /// Values a step saves for its backward, in units of `H`.
    const SAVED: usize;
    /// True when `a` and `b` enter the cell only through their sum `p = a + b` (the LSTM's gates,
    /// the plain RNN's pre-activation), so that `dL/da = dL/db`: the walk then keeps `db` alone
    /// (one buffer written and read instead of two equal ones), and [`Cell::backward_step`] gets
    /// an empty `da`; forward, the walk adds the state's product to the input's in the product's
    /// tiles and hands [`Cell::forward_step`] the sum alone. False by default (both written, both
    /// handed over), which is right for any cell.
    const SHARED_GRADIENT: bool = false;
    /// For a cell without [`Cell::SHARED_GRADIENT`]: how many of the leading gates (in units of
    /// `H`) have `dL/da = dL/db` all the same — the GRU's `r` and `z`, whose `a` and `b` enter only
    /// through their sum, unlike the candidate `n`'s. When nothing but the weight gradients reads
    /// `da` (no input gradient asked for), the walk hands [`Cell::backward_step`] a `da` of the
    /// other gates' columns alone, and `dW_ih`'s rows for these gates read `db`'s columns (copied
    /// once for them and `dW_hh`): two thirds of the GRU's `da` neither written nor read, its `db`
    /// read once. 0 by default (every gate's `da` written),
    /// which is right for any cell.
    const SHARED_GATES: usize = 0;
    /// `"LSTM"`.
    fn name(&self) -> String;

    /// One step: from `a = x·W_ihᵀ + b_ih` and `b = h_prev·W_hhᵀ + b_hh` (each `[G·H]`) and the
    /// previous state, writes the new state `h` (and `c`), and in `saved` (`[SAVED·H]`) whatever
    /// the backward step needs. `a` is `None` when `b` already holds the sum `p = a + b` (only for
    /// a cell with [`Cell::SHARED_GRADIENT`], whose gates read nothing else).
    #[allow(clippy::too_many_arguments)]
    fn forward_step(
        &self,
        a: Option<&[f32]>,
        b: &[f32],
        h_prev: &[f32],
        c_prev: &[f32],
        h: &mut [f32],
        c: &mut [f32],
        saved: &mut [f32],
    );

    /// The step's backward: from `dh = dL/dh_t` and `dc = dL/dc_t`, writes `da = dL/da` and
    /// `db = dL/db` (each `[G·H]`, every element: the walk does not zero them; `da` is empty, and
    /// left alone, when [`Cell::SHARED_GRADIENT`], and holds only the gates after the first
    /// [`Cell::SHARED_GATES`] — `(G − SHARED_GATES)·H` values — when the walk asks for no more),
    /// and the direct parts of `dh_prev` and `dc_prev` (not through `W_hh`).
    #[allow(clippy::too_many_arguments)]
    fn backward_step(
        &self,
        saved: &[f32],
        h_prev: &[f32],
        c_prev: &[f32],
        c: &[f32],
        dh: &[f32],
        dc: &[f32],
        da: &mut [f32],
        db: &mut [f32],
        dh_prev: &mut [f32],
        dc_prev: &mut [f32],
    );
}

/// A recurrent layer: the cell `C` unrolled over time, with the BPTT walk described in the
/// [module docs](self). Used through [`Rnn`], [`Lstm`] and [`Gru`].
pub struct Recurrent<C: Cell> {
    cell: C,
    pub(crate) inputs: usize,
    pub(crate) hidden: usize,
    weight_ih: Param,
    weight_hh: Param,
    bias_ih: Param,
    bias_hh: Param,
    last_only: bool,
    stateful: bool,
    /// The most memory a pass may keep for backpropagation through time, in bytes.
    activation_budget: usize,
    /// The state a stateful layer carries from one pass to the next.
    carried: Option<RecurrentState>,
    // Caches of the latest forward pass, reused from call to call.
    /// The latest batch's lengths (empty: every step valid).
    lengths: Vec<usize>,
    /// `(N, T)` of the latest input.
    pub(crate) nt: (usize, usize),
    /// The steps the latest walk computed: the longest sequence's length (every later step is
    /// padding for every sequence: states carried, no products), or `T` without lengths.
    t_run: usize,
    /// The latest input, time-major: `[T, N, F]` (row `t·N + n` is `x[n, t]`).
    pub(crate) x: Tensor,
    /// The ids of the latest pass when it read an embedding ([`Recurrent::forward_embedded`];
    /// `x` is then not kept), `[N·T]`; empty after an ordinary pass.
    embedded_ids: Vec<usize>,
    /// Whether the latest forward pass read an embedding (its ids may be none: an empty batch).
    embedded_pass: bool,
    /// `P = table·W_ihᵀ + b_ih` (`[V, G·H]`) of the latest embedded pass: its rows are the steps'
    /// `a_t`.
    projected: Vec<f32>,
    /// `G`, the per-id sums of `dL/da_t` of the latest embedded backward pass (scratch).
    grouped: Vec<f32>,
    /// `a_t` of the step being walked (per step scratch).
    a: Vec<f32>,
    /// `h_t` for `t = −1 … T−1`, time-major: `[(T+1)·N·H]` (and `c` likewise) — or, after a
    /// [`Mode::Predict`](crate::layers::Mode::Predict) pass of a last-step-only layer, whose
    /// caller reads the final state alone, two steps' worth used in turn (`final_slot`).
    pub(crate) hs: Vec<f32>,
    cs: Vec<f32>,
    /// Which step's rows of `hs` and `cs` hold the final state: `T`, or `T mod 2` when the
    /// latest pass kept two steps only.
    final_slot: usize,
    /// What each step saved for its backward: `[T·N·SAVED·H]`, time-major.
    saved: Vec<f32>,
    /// False after a [`Mode::Predict`](crate::layers::Mode::Predict) forward pass, which keeps no
    /// gates (`saved` is then stale): a backward pass refuses to run.
    saved_for_backward: bool,
    /// `b_t` of the step being walked (per step scratch).
    b: Vec<f32>,
    /// `W_ihᵀ` packed for the forward walk's per-step products.
    packed_ih: PackedB,
    /// `W_hh` packed for the walk's per-step products (`W_hhᵀ` forward, `W_hh` backward).
    packed_hh: PackedB,
    /// What the forward walk's panels were packed from, while they can be reused.
    packed_from: PackedFrom,
    /// Backward scratch, reused from call to call: dh, dc, dh_prev, dc_prev, da and db (all steps,
    /// time-major; da empty when the cell shares them, [`Cell::SHARED_GRADIENT`], and only its
    /// unshared gates' columns when the latest walk left out the [`Cell::SHARED_GATES`]).
    pub(crate) grads: [Vec<f32>; 6],
    /// Values per row of `grads[4]` (`da`) after the latest walk: `G·H`, `(G − SHARED_GATES)·H`
    /// or 0.
    da_width: usize,
    h0_grad: Option<RecurrentState>,
}

/// A recurrent layer's state for a batch: `h [N, H]` and, for the LSTM, the cell state
/// `c [N, H]`. The same type carries a state's gradient (`dL/dh`, `dL/dc`).
#[derive(Clone, Debug, PartialEq)]
pub struct RecurrentState {
    /// The hidden state (or its gradient), `[N, H]`.
    pub h: Tensor,
    /// The LSTM's cell state (or its gradient), `[N, H]`; `None` for the other cells.
    pub c: Option<Tensor>,
}

impl RecurrentState {
    /// A state of `h` alone (RNN, GRU).
    pub fn h(h: Tensor) -> RecurrentState {
        RecurrentState { h, c: None }
    }

    /// An LSTM state `(h, c)`.
    pub fn hc(h: Tensor, c: Tensor) -> RecurrentState {
        RecurrentState { h, c: Some(c) }
    }
}

/// The gradient of `L` with respect to the initial state, `(dL/dh₀, dL/dc₀)`.
pub type StateGrad = RecurrentState;

/// Gives `buf` length `len` for a pass that writes every element it later reads: the old
/// contents stay (no zeroing pass) when the length is unchanged, as from one batch to the next.
fn reuse(buf: &mut Vec<f32>, len: usize) {
    if buf.len() != len {
        buf.clear();
        buf.resize(len, 0.0);
    }
}

impl<C: Cell> Recurrent<C> {
    /// A layer from `inputs` features to `hidden` units, with PyTorch's initialisation
    /// `U(±1/√hidden)` for all four tensors (seed 0; a model redraws them from its own seed).
    ///
    /// # Panics
    /// If the weights (`GATES·hidden` rows) would be more values than a tensor can hold.
    pub(crate) fn with_cell(cell: C, inputs: usize, hidden: usize) -> Self {
        let gh = C::GATES.checked_mul(hidden).unwrap_or_else(|| {
            panic!(
                "a recurrent layer of {hidden} units: its {} gates' weights would hold more than a tensor can",
                C::GATES
            )
        });
        let bound = 1.0 / (hidden.max(1) as f32).sqrt();
        let init = Init::Uniform { low: -bound, high: bound.max(f32::MIN_POSITIVE) };
        let draw = |shape: &[usize], seed| Param::drawn(shape, init, seed);
        Recurrent {
            cell,
            inputs,
            hidden,
            weight_ih: draw(&[gh, inputs], 0),
            weight_hh: draw(&[gh, hidden], 1),
            bias_ih: draw(&[gh], 2),
            bias_hh: draw(&[gh], 3),
            last_only: false,
            stateful: false,
            activation_budget: DEFAULT_ACTIVATION_BUDGET,
            carried: None,
            lengths: Vec::new(),
            nt: (0, 0),
            t_run: 0,
            x: Tensor::default(),
            embedded_ids: Vec::new(),
            embedded_pass: false,
            projected: Vec::new(),
            grouped: Vec::new(),
            a: Vec::new(),
            hs: Vec::new(),
            cs: Vec::new(),
            final_slot: 0,
            saved: Vec::new(),
            saved_for_backward: false,
            b: Vec::new(),
            packed_ih: PackedB::default(),
            packed_hh: PackedB::default(),
            packed_from: PackedFrom::default(),
            grads: Default::default(),
            h0_grad: None,
            da_width: 0,
        }
    }

    /// Input features `F`.
    pub fn inputs(&self) -> usize {
        self.inputs
    }

    /// Hidden units `H`.
    pub fn hidden(&self) -> usize {
        self.hidden
    }

    /// True if the layer outputs only the final state ([`Recurrent::last_step_only`]).
    pub fn is_last_step_only(&self) -> bool {
        self.last_only
    }

    /// True if the layer carries its state across passes ([`Recurrent::stateful`]).
    pub fn is_stateful(&self) -> bool {
        self.stateful
    }

    /// The most memory, in bytes, that one pass may keep for backpropagation through time
    /// (default [`DEFAULT_ACTIVATION_BUDGET`], 2 GiB): every step's input, gates, states and
    /// output, and the backward pass's gate gradients — about
    /// `4·N·T·(2·F + (K·G + S + 3)·H)` bytes for a batch `[N, T, F]` (`G` gates, `S` values saved
    /// per unit and step: 4 for the LSTM and GRU, 1 for the plain RNN; `K` gate gradients kept per
    /// step: 1 for the LSTM and the plain RNN, whose two are equal, 2 for the GRU). A batch above it is
    /// refused by [`Layer::output_shape`](crate::layers::Layer::output_shape), so training,
    /// evaluation and prediction return an `Err` naming the sizes before allocating anything.
    /// Shorter sequences (windows) or smaller batches lower the need.
    pub fn activation_budget(mut self, bytes: usize) -> Self {
        self.activation_budget = bytes;
        self
    }

    /// The budget set by [`Recurrent::activation_budget`].
    pub fn activation_budget_bytes(&self) -> usize {
        self.activation_budget
    }

    /// The bytes a pass over a batch `[N, T, F]` keeps (see [`Recurrent::activation_budget`]),
    /// saturating at `usize::MAX`.
    pub fn activation_bytes(&self, input: &[usize]) -> usize {
        let [n, t, f] = *input else { return 0 };
        let kept_gradients = if C::SHARED_GRADIENT { 1 } else { 2 };
        let per_step = (kept_gradients * C::GATES + C::SAVED + 3)
            .saturating_mul(self.hidden)
            .saturating_add(f.saturating_mul(2));
        4usize.saturating_mul(n).saturating_mul(t).saturating_mul(per_step)
    }

    /// Output only the final state `[N, H]` (each sequence's last valid step) instead of every
    /// step `[N, T, H]`.
    pub fn last_step_only(mut self) -> Self {
        self.last_only = true;
        self
    }

    /// Truncated BPTT: each forward pass starts from the previous one's final state (when the
    /// batch size is the same), and backward stops at that state. [`Recurrent::reset_state`] starts
    /// afresh.
    ///
    /// The carried state is visited as `carried_state` ([`State::Carried`]): a batch that
    /// [`fit`](crate::train::fit) refuses puts it back with the weights, and it is not saved with
    /// them (a saved model starts from zeros, as a PyTorch `state_dict` does), but a checkpoint
    /// keeps it. `fit` refuses to shuffle a model with a stateful layer
    /// (`FitOptions::shuffle(false)`), or to bucket its batches by length: each batch's row `s`
    /// continues the row `s` before it. `fit` starts each epoch, and each validation pass, from
    /// zeros (as PyTorch's truncated-BPTT examples start every epoch and every evaluation from a
    /// fresh hidden state), whatever the batch sizes.
    ///
    /// Every forward pass carries it on, in any mode: `predict` and `evaluate` called on their own
    /// continue the stream too (as a Keras stateful layer does), so evaluating the same data twice
    /// gives two answers. Call [`Recurrent::reset_state`] before a pass that should start afresh.
    ///
    /// ```
    /// use backprop::prelude::*;
    /// # fn main() -> backprop::Result<()> {
    /// // A stream of 1,000 steps, trained 50 steps at a time with the state carried across.
    /// let stream = Tensor::randn(&[4, 1000, 3], 0.0, 1.0, 1);
    /// let targets = Tensor::randn(&[4, 1000, 1], 0.0, 1.0, 2);
    /// let mut model = Sequential::builder(&[50, 3]).add(Lstm::new(3, 8).stateful()).add(Dense::new(8, 1)).build()?;
    /// let mut adam = Adam::new(1e-3);
    /// for chunk in 0..20 {
    ///     let slice = |t: &Tensor, f: usize| Tensor::from_fn(&[4, 50, f], |i| t[&[i[0], chunk * 50 + i[1], i[2]]]);
    ///     let (x, y) = (slice(&stream, 3), slice(&targets, 1));
    ///     model.train_step(&x, (&y).into(), &MseLoss::new(), &mut adam)?; // backward stops at the chunk's start
    /// }
    /// # Ok(()) }
    /// ```
    pub fn stateful(mut self) -> Self {
        self.stateful = true;
        self
    }

    /// Forgets the carried state (a stateful layer's next pass starts from zeros).
    pub fn reset_state(&mut self) {
        self.carried = None;
    }

    /// Redraws the four tensors from `U(±1/√H)` with `seed` (a model-wide seed then leaves them
    /// alone).
    pub fn seed(mut self, seed: u64) -> Self {
        let bound = 1.0 / (self.hidden.max(1) as f32).sqrt();
        let mut r = rng(seed);
        for p in [&mut self.weight_ih, &mut self.weight_hh, &mut self.bias_ih, &mut self.bias_hh] {
            p.value =
                Tensor::rand_uniform_with(p.value.shape(), -bound, bound.max(f32::MIN_POSITIVE), &mut r);
            p.init = None;
        }
        self
    }

    /// Checks the side information of a pass over `x` and an initial state against the layer:
    /// one length per sequence, each in `1..=T`; a state of shape `[N, H]` (and `c` only for the
    /// LSTM) of finite values. The messages name the layer and both counts or shapes.
    ///
    /// # Errors
    /// [`Error::Shape`] for a length count or state shape that does not fit the batch;
    /// [`Error::InvalidArgument`] for a length of 0 or above `T`, or a NaN or infinite value in
    /// the initial state.
    pub fn check_pass(&self, x: &[usize], pass: Pass<'_>, initial: Option<&RecurrentState>) -> Result<()> {
        self.output_shape(x)?;
        let (n, t_len) = (x[0], x[1]);
        if let Some(lengths) = pass.lengths {
            if lengths.len() != n {
                return Err(Error::shape(format!(
                    "{}: {} sequence lengths for a batch of {n} sequences",
                    self.describe(),
                    lengths.len()
                )));
            }
            if let Some((i, &l)) = lengths.iter().enumerate().find(|&(_, &l)| l == 0 || l > t_len) {
                return Err(Error::invalid(format!(
                    "{}: sequence {i} has length {l}, but the batch has {t_len} steps (lengths must be 1..={t_len})",
                    self.describe()
                )));
            }
        }
        if let Some(state) = initial {
            for (what, t) in std::iter::once(("h₀", &state.h)).chain(state.c.as_ref().map(|c| ("c₀", c)))
            {
                if t.shape() != [n, self.hidden] {
                    return Err(Error::shape(format!(
                        "{}: the initial state {what} must be [{n}, {}] for a batch of {n}, got {}",
                        self.describe(),
                        self.hidden,
                        shape_str(t.shape())
                    )));
                }
                if let Some(v) = t.data().iter().find(|v| !v.is_finite()) {
                    return Err(Error::invalid(format!(
                        "{}: the initial state {what} holds {v}: it would reach every output and the carried state",
                        self.describe()
                    )));
                }
            }
            if state.c.is_some() != C::HAS_CELL {
                return Err(Error::shape(format!(
                    "{}: {}",
                    self.describe(),
                    if C::HAS_CELL {
                        "an LSTM's initial state needs a cell state c₀"
                    } else {
                        "has no cell state c"
                    }
                )));
            }
        }
        Ok(())
    }

    /// The forward pass with the state as an input and an output, as PyTorch's
    /// `output, (h_n, c_n) = lstm(x, (h_0, c_0))`: from `initial` (`None`: zeros, or a stateful
    /// layer's carried state) over `x [N, T, F]` with the pass's lengths, returns the outputs and
    /// the final state (each sequence's last valid step).
    ///
    /// # Errors
    /// As [`Recurrent::check_pass`]; nothing is computed then.
    ///
    /// ```
    /// use backprop::layers::{InputGrad, Lstm, Pass, RecurrentState};
    /// use backprop::Tensor;
    /// # fn main() -> backprop::Result<()> {
    /// // An encoder's final state starts a decoder; the decoder's dL/dh₀, dL/dc₀ train the encoder.
    /// let (mut encoder, mut decoder) = (Lstm::new(2, 3).seed(1), Lstm::new(2, 3).seed(2));
    /// let (src, tgt) = (Tensor::ones(&[4, 5, 2]), Tensor::ones(&[4, 3, 2]));
    /// let (_, state) = encoder.forward_with_state(&src, None, Pass::TRAIN)?;
    /// let (y, _) = decoder.forward_with_state(&tgt, Some(&state), Pass::TRAIN)?;
    /// let dy = Tensor::ones(y.shape()); // dL/dy for L = Σ y
    /// let (_, d_state) = decoder.backward_with_state(Some(&dy), None, InputGrad::NotNeeded);
    /// encoder.backward_with_state(None, Some(&d_state), InputGrad::NotNeeded); // dL/dh_n, dL/dc_n
    /// let trained = backprop::layers::named_params(&encoder).iter().all(|(_, p)| p.grad.data().iter().any(|&g| g != 0.0));
    /// assert!(trained, "the encoder's weights receive gradient through its final state");
    /// # Ok(()) }
    /// ```
    pub fn forward_with_state(
        &mut self,
        x: &Tensor,
        initial: Option<&RecurrentState>,
        pass: Pass<'_>,
    ) -> Result<(Tensor, RecurrentState)> {
        self.check_pass(x.shape(), pass, initial)?;
        let y = self.run_forward(x, initial, pass);
        Ok((y, self.final_state()))
    }

    /// The backward pass with the state's gradients: from `dL/dy` (`None`: the outputs were not
    /// used) and `dL/dh_n`, `dL/dc_n` of the final state (`None`: zeros), accumulates the weight
    /// gradients and returns `dL/dx` (when needed) and `dL/dh₀`, `dL/dc₀` of the initial state.
    ///
    /// # Panics
    /// If called before a forward pass, or with a gradient whose shape is not the latest output's
    /// or state's.
    pub fn backward_with_state(
        &mut self,
        grad_out: Option<&Tensor>,
        grad_final: Option<&RecurrentState>,
        input_grad: InputGrad,
    ) -> (Option<Tensor>, RecurrentState) {
        let dx = self.run_backward(grad_out, grad_final, input_grad);
        (dx, self.h0_grad.clone().expect("set by the backward pass"))
    }

    /// The state after the latest forward pass, `(h, c)` each `[N, H]`: every sequence's last
    /// valid step.
    pub fn final_state(&self) -> RecurrentState {
        let (n, _) = self.nt;
        let (h, t) = (self.hidden, self.final_slot);
        let last = |buf: &[f32]| {
            Tensor::from_vec(&[n, h], buf[t * n * h..(t + 1) * n * h].to_vec()).expect("[N, H]")
        };
        RecurrentState { h: last(&self.hs), c: C::HAS_CELL.then(|| last(&self.cs)) }
    }

    /// `dL/dh₀` (and `dL/dc₀`) from the latest backward pass.
    pub fn initial_state_grad(&self) -> Option<&StateGrad> {
        self.h0_grad.as_ref()
    }

    pub(crate) fn describe(&self) -> String {
        let mut s = format!("{}({}→{}", self.cell.name(), self.inputs, self.hidden);
        if self.last_only {
            s += ", last step";
        }
        if self.stateful {
            s += ", stateful";
        }
        s + ")"
    }

    pub(crate) fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        if self.inputs == 0 || self.hidden == 0 {
            return Err(Error::shape(format!("{} has no inputs or no hidden units", self.describe())));
        }
        match *input {
            [n, t, f] if f == self.inputs && t > 0 => {
                let out = if self.last_only { vec![n, self.hidden] } else { vec![n, t, self.hidden] };
                let out = super::checked_output(|| self.describe(), out)?;
                let need = self.activation_bytes(input);
                if need > self.activation_budget {
                    return Err(Error::shape(format!(
                        "{}: a batch of shape {} needs about {} for backpropagation through time, over its \
                         activation budget of {}: split long sequences into windows, use smaller batches, or raise \
                         the budget with .activation_budget(bytes)",
                        self.describe(),
                        shape_str(input),
                        crate::tensor::human_bytes(need),
                        crate::tensor::human_bytes(self.activation_budget)
                    )));
                }
                Ok(out)
            }
            _ => Err(shape_error(&self.describe(), format!("[N, T ≥ 1, {}]", self.inputs), input)),
        }
    }

    /// The layer's forward pass (zero initial state, or the carried one when stateful).
    ///
    /// # Panics
    /// With the message of [`Recurrent::check_pass`] when the input or the lengths do not fit.
    pub(crate) fn forward(&mut self, x: &Tensor, pass: Pass<'_>) -> Tensor {
        self.check_pass(x.shape(), pass, None).unwrap_or_else(|e| panic!("{e}"));
        self.run_forward(x, None, pass)
    }

    /// The forward pass over ids `[N, T]` looked up in `embedding` (whose vectors are this layer's
    /// input features): the outputs of `forward(embedding.forward(ids))`, computed without the
    /// vectors. Since `x_t = E[id]`, the input's share of the gates is a row of one small product,
    /// `x_t·W_ihᵀ + b_ih = P[id]` with `P = E·W_ihᵀ + b_ih` (`[V, G·H]`, once per pass for `V`
    /// ids instead of `N·T` rows); [`Recurrent::backward_embedded`] is its backward. For sequence
    /// models over tokens (knowledge tracing's answers), where the input projection of every
    /// step was a quarter to a half of the products.
    ///
    /// It takes no initial state and its backward no final-state gradient (use
    /// [`Recurrent::forward_with_state`] after the `Embedding` for an encoder or decoder whose
    /// state travels); a stateful layer carries its state through it as through `forward`.
    ///
    /// # Errors
    /// If the embedding's width is not this layer's input size, an id is out of range or not a
    /// whole number, or the ids and lengths do not fit as in [`Recurrent::check_pass`] (for the
    /// input `[N, T, F]`), or the table of projected ids (`vocabulary × gates·hidden` values,
    /// kept for the pass) would exceed the [activation budget](Recurrent::activation_budget).
    /// Nothing is computed then.
    ///
    /// ```
    /// use backprop::prelude::*;
    /// use backprop::layers::InputGrad;
    /// # fn main() -> backprop::Result<()> {
    /// let (mut embedding, mut lstm) = (Embedding::new(10, 4).seed(1), Lstm::new(4, 3).seed(2));
    /// let ids = Tensor::from_vec(&[2, 3], vec![1., 5., 9., 0., 0., 7.])?;
    /// let y = lstm.forward_embedded(&embedding, &ids, Pass::TRAIN)?;
    /// let composed = Lstm::new(4, 3).seed(2).forward(&embedding.forward(&ids, Pass::TRAIN), Pass::TRAIN);
    /// assert!(y.data().iter().zip(composed.data()).all(|(a, b)| (a - b).abs() < 1e-6));
    /// lstm.backward_embedded(&Tensor::ones(y.shape()), &mut embedding); // dL/dE into the table
    /// # Ok(()) }
    /// ```
    pub fn forward_embedded(
        &mut self,
        embedding: &Embedding,
        ids: &Tensor,
        pass: Pass<'_>,
    ) -> Result<Tensor> {
        if embedding.dim() != self.inputs {
            return Err(Error::shape(format!(
                "{}: an embedding of {} values per id, but the layer reads {} input features",
                self.describe(),
                embedding.dim(),
                self.inputs
            )));
        }
        let &[n, t_len] = ids.shape() else {
            return Err(shape_error(&self.describe(), "ids [N, T]".to_string(), ids.shape()));
        };
        embedding.check_ids(ids)?;
        let shape = [n, t_len, self.inputs];
        self.check_pass(&shape, pass, None)?;
        let (g, f) = (C::GATES * self.hidden, self.inputs);
        let v = embedding.num();
        // P = E·W_ihᵀ + b_ih, one row per id (the buffer kept from pass to pass): within the
        // budget, as the activations are (a vocabulary of millions would otherwise ask for
        // gigabytes here, unchecked).
        let bytes = v.checked_mul(g).and_then(|len| len.checked_mul(4));
        if bytes.is_none_or(|b| b > self.activation_budget) {
            return Err(Error::invalid(format!(
                "{}: the projected table of {v} ids × {g} gate values needs {}, over its activation budget of \
                 {}: embed the ids first (Embedding, then forward), or raise the budget with \
                 .activation_budget(bytes)",
                self.describe(),
                bytes.map_or("more than memory holds".to_string(), crate::tensor::human_bytes),
                crate::tensor::human_bytes(self.activation_budget)
            )));
        }
        reuse(&mut self.projected, v * g);
        let (e, w_ih) = (embedding.weight().value.data(), self.weight_ih.value.data());
        sgemm(v, f, g, 1.0, e, No, w_ih, Yes, 0.0, &mut self.projected);
        crate::tensor::add_to_rows(&mut self.projected, self.bias_ih.value.data()); // + b_ih
        self.embedded_ids.clear();
        self.embedded_ids.extend(ids.data().iter().map(|&id| id as usize));
        self.embedded_pass = true;
        let ids = std::mem::take(&mut self.embedded_ids);
        let y = self.run_input(&shape, StepInput::Embedded(&ids), None, pass);
        self.embedded_ids = ids;
        Ok(y)
    }

    /// The backward pass of [`Recurrent::forward_embedded`]: from `dL/dy`, accumulates this
    /// layer's weight gradients and the embedding table's, `dL/dE = G·W_ih` with `G[id] = Σ dL/da_t`
    /// over the steps that read `id` (`dL/dW_ih += Gᵀ·E`, `dL/db_ih += Σ G`); the embedding's
    /// padding row gets none.
    ///
    /// # Panics
    /// If the latest forward pass was not [`Recurrent::forward_embedded`] with this embedding's
    /// shape, or `grad_out` is not the output's shape.
    pub fn backward_embedded(&mut self, grad_out: &Tensor, embedding: &mut Embedding) {
        assert!(
            self.embedded_pass,
            "{}: backward_embedded needs a forward_embedded pass before it",
            self.describe()
        );
        let (g, f, v) = (C::GATES * self.hidden, self.inputs, embedding.num());
        assert!(
            embedding.dim() == f && self.projected.len() == v * g,
            "{}: backward_embedded with another embedding than the forward pass's (a table of {v} ids × {} \
             features now, {} projected values for {f} features then)",
            self.describe(),
            embedding.dim(),
            self.projected.len()
        );
        self.backward_through_time(Some(grad_out), None, true);
        self.recurrent_weight_grads();
        // G[id] = Σ dL/da over the steps that read id (padded steps hold zeros); the buffer is
        // kept from pass to pass.
        let mut grouped = std::mem::take(&mut self.grouped);
        grouped.clear();
        grouped.resize(v * g, 0.0);
        let (n, t_len) = self.nt;
        let da_all = self.gate_gradients(); // time-major
        for (s, ids) in self.embedded_ids.chunks_exact(t_len).enumerate() {
            for (t, &id) in ids.iter().enumerate() {
                let row = &da_all[(t * n + s) * g..][..g]; // (sample by sample, as the ids)
                grouped[id * g..][..g].iter_mut().zip(row).for_each(|(d, v)| *d += v);
            }
        }
        let e = embedding.weight.value.data();
        // dW_ih += Gᵀ·E, db_ih += Σ G
        weight_gradients(
            (g, v, f),
            &grouped,
            e,
            self.weight_ih.grad.data_mut(),
            self.bias_ih.grad.data_mut(),
        );
        if let Some(pad) = embedding.padding {
            grouped[pad * g..][..g].fill(0.0); // the padding row gets no gradient
        }
        let (w_ih, d_table) = (self.weight_ih.value.data(), embedding.weight.grad.data_mut());
        sgemm(v, g, f, 1.0, &grouped, No, w_ih, No, 1.0, d_table); // dE += G·W_ih
        self.grouped = grouped;
    }

    /// The forward pass over a checked input: `initial`, else the carried state (stateful), else
    /// zeros.
    fn run_forward(&mut self, x: &Tensor, initial: Option<&RecurrentState>, pass: Pass<'_>) -> Tensor {
        self.embedded_ids.clear();
        self.embedded_pass = false;
        let shape = [x.dim(0), x.dim(1), x.dim(2)];
        if !pass.keeps_for_backward() {
            // No backward pass follows: each step's product reads its rows of the batch in place,
            // `T·F` values apart, instead of from a time-major copy (the same products, the same
            // bits; the copy was 2 % of an LSTM's inference).
            return self.run_input(&shape, StepInput::Dense(x, Layout::BatchMajor), initial, pass);
        }
        // Kept time-major, `[T, N, F]`: step t's rows are adjacent for the walk's products, and
        // they line up with the rows of the gradients (time-major too) for dL/dW_ih.
        let mut x_tm = std::mem::take(&mut self.x);
        swap_first_axes(x, &mut x_tm);
        if let Some(lengths) = pass.lengths {
            // Padded steps read as zeros, whatever the padding holds: their rows of the weight
            // gradient `Σ da_tᵀ·x_t` (and the per-example ones) are zero times these, and a NaN
            // left in the padding would make them NaN (as PyTorch's packed sequences never read
            // the padding at all).
            let (n, f) = (shape[0], shape[2]);
            for (s, &len) in lengths.iter().enumerate() {
                for t in len.min(shape[1])..shape[1] {
                    x_tm.data_mut()[(t * n + s) * f..][..f].fill(0.0);
                }
            }
        }
        let y = self.run_input(&shape, StepInput::Dense(&x_tm, Layout::TimeMajor), initial, pass);
        self.x = x_tm;
        y
    }

    /// The walk forward through time over `input` (a batch of `shape` `[N, T, F]`; a dense input
    /// comes time-major, `[T, N, F]`, or as the batch itself when no backward pass follows).
    fn run_input(
        &mut self,
        shape: &[usize; 3],
        input: StepInput<'_>,
        initial: Option<&RecurrentState>,
        pass: Pass<'_>,
    ) -> Tensor {
        let out_shape = self.output_shape(shape).unwrap_or_else(|e| panic!("{e}"));
        let [n, t_len, f] = *shape;
        let (h, g) = (self.hidden, C::GATES * self.hidden);
        let fits = |s: &RecurrentState| {
            s.h.shape() == [n, self.hidden] && s.c.as_ref().is_none_or(|c| c.shape() == s.h.shape())
        };
        if self.stateful && self.carried.as_ref().is_some_and(|s| !fits(s)) {
            self.reset_state(); // another batch size: the carried state does not apply
        }
        let carried = self.carried.take();
        let initial = initial.or(carried.as_ref());
        self.lengths.clear();
        self.lengths.extend_from_slice(pass.lengths.unwrap_or(&[]));
        self.nt = (n, t_len);
        let t_run = self.lengths.iter().copied().max().map_or(t_len, |l| l.min(t_len));
        self.t_run = t_run;
        // States h_{−1} … h_{T−1}, time-major. When no backward pass follows and only the final
        // state is read (a last-step-only layer in `Mode::Predict`), two steps' rows in turn: step
        // t reads slot t mod 2 and writes the other, so the states stay in cache instead of
        // streaming (T+1)·N·H values to memory.
        let nh = n * h;
        let keep = pass.keeps_for_backward();
        let rolling = !keep && self.last_only;
        let slot = |t: usize| if rolling { t % 2 } else { t };
        let slots = if rolling { 2 } else { t_len + 1 };
        reuse(&mut self.hs, slots * nh); // every step writes its h_t (a padded one copies)
        reuse(&mut self.cs, slots * nh); // allocated for every cell, so the loops below are uniform
        self.final_slot = slot(t_len);
        match initial {
            Some(s) => self.hs[..nh].copy_from_slice(s.h.data()),
            None => self.hs[..nh].fill(0.0),
        }
        match initial.and_then(|s| s.c.as_ref()) {
            Some(c0) => self.cs[..nh].copy_from_slice(c0.data()),
            None => self.cs[..nh].fill(0.0),
        }
        let sv = C::SAVED * h;
        // What the steps save for backward: all of them, unless no backward pass follows
        // (`Mode::Predict`), when each block of samples overwrites one step's worth of scratch.
        self.saved_for_backward = keep;
        if keep {
            reuse(&mut self.saved, t_len * n * sv); // written by every active step, read only for those
        }
        // Per-step scratch, a block of rows for each thread: a_t and b_t of every sample.
        reuse(&mut self.a, n * g);
        reuse(&mut self.b, n * g);
        // a_t = x_t·W_ihᵀ + b_ih and b_t = h_{t−1}·W_hhᵀ + b_hh: both weights packed once for the
        // whole walk, with their biases (added to each tile of the product while it is in
        // registers, not by a pass over a_t and b_t). A cell that reads only p = a + b
        // (SHARED_GRADIENT) gets p_t = (h_{t−1}·W_hhᵀ + a_t) + b_hh in b_t, the input's share
        // written there first and added to in the second product's tiles: one buffer of G·H
        // values per sample written and read per step instead of two.
        let dense = matches!(input, StepInput::Dense(..));
        let summed = C::SHARED_GRADIENT && dense;
        let weights =
            [&self.weight_ih, &self.bias_ih, &self.weight_hh, &self.bias_hh].map(|p| p.value.data());
        let [w_ih, b_ih, w_hh, b_hh] = weights;
        let packed_from = if dense { &weights[..] } else { &weights[2..] };
        // A pass with no backward to follow reuses the panels of the pass before when the
        // weights are the ones they were packed from (a model predicting batch after batch).
        if keep || !self.packed_from.is(dense, packed_from) {
            if dense {
                self.packed_ih.pack(f, g, w_ih, true);
                self.packed_ih.set_bias(b_ih);
            }
            self.packed_hh.pack(h, g, w_hh, true);
            self.packed_hh.set_bias(b_hh);
            if keep {
                self.packed_from.forget(); // (the backward walk packs W_hh the other way)
            } else {
                self.packed_from.note(dense, packed_from);
            }
        }
        let (cell, lengths, projected) = (&self.cell, &self.lengths, &self.projected);
        let (packed_ih, packed_hh) = (&self.packed_ih, &self.packed_hh);
        let (hs, cs, saved) =
            (Shared::new(&mut self.hs), Shared::new(&mut self.cs), Shared::new(&mut self.saved));
        let (a_sh, b_sh) = (Shared::new(&mut self.a), Shared::new(&mut self.b));
        // The samples are independent through time: each thread walks its own block of samples
        // through every step, with no hand-over between steps.
        let walk = |rows: std::ops::Range<usize>| {
            let (s0, r) = (rows.start, rows.len());
            let mut scratch = if keep { Vec::new() } else { vec![0.0; r * sv] };
            for t in 0..t_len {
                // SAFETY: these are this block's rows (s0 .. s0 + r) of step t's and t+1's states
                // (two different slots, also when two are used in turn), of step t's saved values and of the scratch a and b: no other block touches them,
                // and each range lies inside its buffer (`Shared::rows` checks).
                let (h_prev, h_now, c_prev, c_now, a_t, b_t) = unsafe {
                    (
                        hs.rows(slot(t) * nh + s0 * h, r * h),
                        hs.rows(slot(t + 1) * nh + s0 * h, r * h),
                        cs.rows(slot(t) * nh + s0 * h, r * h),
                        cs.rows(slot(t + 1) * nh + s0 * h, r * h),
                        a_sh.rows(s0 * g, r * g),
                        b_sh.rows(s0 * g, r * g),
                    )
                };
                if t >= t_run {
                    // Past every sequence's end (a batch of short sequences padded to T, as
                    // `Bucketed` batches are): every row carries its state, no product runs.
                    h_now.copy_from_slice(h_prev);
                    c_now.copy_from_slice(c_prev);
                    continue;
                }
                let saved_t = if keep {
                    // SAFETY: as above, this block's rows of step t's saved values.
                    unsafe { saved.rows((t * n + s0) * sv, r * sv) }
                } else {
                    &mut scratch[..]
                };
                if let StepInput::Dense(x, layout) = input {
                    // x_t of this block: rows x[s, t] for s0 ≤ s < s0 + r — adjacent when
                    // time-major, T·F values apart in the batch itself.
                    let (x_t, ld) = match layout {
                        Layout::TimeMajor => (&x.data()[(t * n + s0) * f..], f),
                        Layout::BatchMajor => (&x.data()[(s0 * t_len + t) * f..], t_len * f),
                    };
                    let a_into = if summed { &mut *b_t } else { &mut *a_t };
                    gemm_packed_b(r, 1.0, (x_t, ld), packed_ih, 0.0, a_into); // a_t = x_t·W_ihᵀ + b_ih
                }
                // b_t = h_{t−1}·W_hhᵀ + b_hh, or p_t = (h_{t−1}·W_hhᵀ + a_t) + b_hh when summed
                let beta = if summed { 1.0 } else { 0.0 };
                gemm_packed_b(r, 1.0, (h_prev, h), packed_hh, beta, b_t);
                for (i, ((((hn, cn), saved), b), a)) in h_now
                    .chunks_exact_mut(h)
                    .zip(c_now.chunks_exact_mut(h))
                    .zip(saved_t.chunks_exact_mut(sv))
                    .zip(b_t.chunks_exact(g))
                    .zip(a_t.chunks_exact(g))
                    .enumerate()
                {
                    let (hp, cp) = (&h_prev[i * h..][..h], &c_prev[i * h..][..h]);
                    if lengths.get(s0 + i).is_some_and(|&l| t >= l) {
                        hn.copy_from_slice(hp); // padding: the state is carried unchanged
                        cn.copy_from_slice(cp);
                        continue;
                    }
                    let a: Option<&[f32]> = match input {
                        StepInput::Dense(..) if summed => None, // b holds p = a + b
                        StepInput::Dense(..) => Some(a),
                        StepInput::Embedded(ids) => Some(&projected[ids[(s0 + i) * t_len + t] * g..][..g]), // P[id]
                    };
                    // (h_t, c_t) = cell(a_t, b_t, h_{t−1}, c_{t−1})
                    cell.forward_step(a, b, hp, cp, hn, cn, saved);
                }
            }
        };
        for_sample_blocks(n, g, walk);
        let mut y = Tensor::zeros(&out_shape);
        if self.last_only {
            let last = &self.hs[self.final_slot * nh..][..nh];
            y.data_mut().copy_from_slice(last); // each sequence's last valid state
        } else {
            for (s, y_s) in y.data_mut().chunks_exact_mut(t_len * h).enumerate() {
                for (t, y_t) in
                    y_s.chunks_exact_mut(h).enumerate().take(self.lengths.get(s).map_or(t_len, |&l| l))
                {
                    y_t.copy_from_slice(&self.hs[(t + 1) * nh + s * h..][..h]); // y_t = h_t (0 when padded)
                }
            }
        }
        if self.stateful {
            self.carried = Some(self.final_state());
        }
        y
    }

    pub(crate) fn backward(&mut self, grad_out: &Tensor, input_grad: InputGrad) -> Option<Tensor> {
        self.run_backward(Some(grad_out), None, input_grad)
    }

    /// The backward pass: the walk back through time, then the weight gradients and `dx` as large
    /// GEMMs over all steps (`dW_ih` and `dW_hh` in one where `da = db`, or for the gates where
    /// they are: [`Cell::SHARED_GATES`]).
    fn run_backward(
        &mut self,
        grad_out: Option<&Tensor>,
        grad_final: Option<&RecurrentState>,
        input_grad: InputGrad,
    ) -> Option<Tensor> {
        assert!(
            !self.embedded_pass,
            "{}: the latest forward pass read an embedding (forward_embedded): use backward_embedded",
            self.describe()
        );
        self.backward_through_time(grad_out, grad_final, input_grad.is_needed());
        let (n, t_run) = (self.nt.0, self.t_run);
        let (h, g, f) = (self.hidden, C::GATES * self.hidden, self.inputs);
        // The steps the walk ran, `t_run·N` time-major rows (the rows after them are zeros).
        let k = t_run * n;
        if C::SHARED_GRADIENT {
            // da_t = db_t: dW_ih += Σ_t db_tᵀ·x_t and dW_hh += Σ_t db_tᵀ·h_{t−1} (and both biases'
            // sums) over one copy of db, all steps at once.
            let ih = (&self.x.data()[..k * f], self.weight_ih.grad.data_mut(), self.bias_ih.grad.data_mut());
            let hh = (&self.hs[..k * h], self.weight_hh.grad.data_mut(), self.bias_hh.grad.data_mut());
            weight_gradients_shared((g, k), &self.grads[5][..k * g], [ih, hh]);
        } else {
            // All steps at once (both time-major): dW_ih += Σ_t da_tᵀ·x_t;  db_ih += Σ da_t — the
            // rows of the SHARED_GATES from db's columns (equal to da's), the rest from da's.
            let (shared, width) = (C::SHARED_GATES * h, self.da_width);
            if shared == 0 {
                self.recurrent_weight_grads();
            }
            let (dw_shared, dw_own) = self.weight_ih.grad.data_mut().split_at_mut(shared * f);
            let (db_shared, db_own) = self.bias_ih.grad.data_mut().split_at_mut(shared);
            let x = &self.x.data()[..k * f];
            if shared > 0 {
                // dW_hh += Σ_t db_tᵀ·h_{t−1} over all of db's columns and dW_ih's shared rows over
                // its first ones: one copy of db for both products (a GRU step read its first two
                // gates' columns twice).
                let hh = (&self.hs[..k * h], self.weight_hh.grad.data_mut(), self.bias_hh.grad.data_mut());
                weight_gradients_shared((g, k), &self.grads[5][..k * g], [hh, (x, dw_shared, db_shared)]);
            }
            // da holds every gate (width G·H) or the unshared ones alone (width G·H − shared);
            // none at all for an empty batch.
            let own = self.grads[4].get(width - (g - shared)..k * width).unwrap_or_default();
            weight_gradients_of_columns((g - shared, k, f), (own, width), x, dw_own, db_own);
        }
        input_grad.is_needed().then(|| self.input_gradient())
    }

    /// True if the latest forward pass read an embedding ([`Recurrent::forward_embedded`]).
    pub(crate) fn read_embedding(&self) -> bool {
        self.embedded_pass
    }

    /// `dW_hh += Σ_t db_tᵀ·h_{t−1}` and `db_hh += Σ_t db_t`, every step in one product: the rows
    /// of `db` (time-major) line up with `h_{−1} … h_{T−2}`.
    fn recurrent_weight_grads(&mut self) {
        let k = self.t_run * self.nt.0; // the rows the walk ran (the rest are zeros)
        let (h, g) = (self.hidden, C::GATES * self.hidden);
        let db = &self.grads[5][..k * g];
        let (dw_hh, db_hh) = (self.weight_hh.grad.data_mut(), self.bias_hh.grad.data_mut());
        weight_gradients((g, k, h), db, &self.hs[..k * h], dw_hh, db_hh);
    }

    /// `dL/da_t` of the latest walk back through time for every `(t, n)`, time-major `[T·N, G·H]`
    /// (`db`'s buffer when the cell shares them, [`Cell::SHARED_GRADIENT`]).
    ///
    /// # Panics
    /// If the latest walk left out the shared gates' columns of `da` (it was asked for the weight
    /// gradients alone: an internal error).
    pub(crate) fn gate_gradients(&self) -> &[f32] {
        if C::SHARED_GRADIENT {
            return &self.grads[5];
        }
        assert_eq!(self.da_width, C::GATES * self.hidden, "{}: da without its shared gates", self.describe());
        &self.grads[4]
    }

    /// `dx_t = da_t·W_ih` for every step at once, from the latest walk back through time: one
    /// product over the time-major rows, then each row to its place in `[N, T, F]`.
    pub(crate) fn input_gradient(&self) -> Tensor {
        let (n, t_len) = self.nt;
        let (g, f) = (C::GATES * self.hidden, self.inputs);
        // The steps the walk ran; the rows after them (padding for every sequence) are zeros.
        let k = self.t_run * n;
        let da = &self.gate_gradients()[..k * g];
        let mut dx_tm = sgemm_new(k, g, f, da, No, self.weight_ih.value.data(), No, None);
        dx_tm.resize(t_len * n * f, 0.0);
        let dx_tm = Tensor::from_vec(&[t_len, n, f], dx_tm).expect("[T·N, F]");
        let mut dx = Tensor::default();
        swap_first_axes(&dx_tm, &mut dx); // dx[s, t] = (da·W_ih)[t, s]
        dx
    }

    /// The walk back through time from `dL/dy` (`None`: zeros) and the final state's gradient
    /// (`None`: zeros): leaves `dL/da_t` and `dL/db_t` for every `(t, n)` (time-major) in the last
    /// two of `self.grads` (the first empty when the cell shares them: [`Recurrent::gate_gradients`];
    /// without the [`Cell::SHARED_GATES`]' columns unless `full_da`), and `dL/dh₀` (`dL/dc₀`) in
    /// `h0_grad`.
    pub(crate) fn backward_through_time(
        &mut self,
        grad_out: Option<&Tensor>,
        grad_final: Option<&RecurrentState>,
        full_da: bool,
    ) {
        let (n, t_len) = self.nt;
        let (h, g) = (self.hidden, C::GATES * self.hidden);
        let sv = C::SAVED * h;
        let expected = if self.last_only { vec![n, h] } else { vec![n, t_len, h] };
        // (The layer's name is built only for a message: this runs once per training step.)
        if let Some(grad_out) = grad_out
            && (t_len == 0 || grad_out.shape() != expected)
        {
            check_grad(&self.describe(), if t_len == 0 { &[] } else { &expected }, grad_out);
        }
        assert!(t_len > 0, "{}: backward called before forward", self.describe());
        assert!(
            self.saved_for_backward,
            "{}: backward after a Mode::Predict forward pass, which keeps nothing for backward (run the \
             forward pass in Mode::Train or Mode::Eval)",
            self.describe()
        );
        if let Some(d) = grad_final {
            for (what, t) in std::iter::once(("h_n", &d.h)).chain(d.c.as_ref().map(|c| ("c_n", c))) {
                assert!(
                    t.shape() == [n, h],
                    "{}: the gradient of the final state {what} must be [{n}, {h}], got {}",
                    self.describe(),
                    shape_str(t.shape())
                );
            }
            assert!(
                d.c.is_none() || C::HAS_CELL,
                "{} has no cell state c_n to take a gradient",
                self.describe()
            );
        }
        let nh = n * h;
        let nc = nh; // allocated for every cell, so the loops are uniform
        let [mut dh, mut dc, mut dh_prev, mut dc_prev, mut da_all, mut db] = std::mem::take(&mut self.grads);
        for (buf, len) in [(&mut dh, nh), (&mut dc, nc), (&mut dh_prev, nh), (&mut dc_prev, nc)] {
            buf.clear();
            buf.resize(len, 0.0);
        }
        // Every step writes its rows of da and db, a padded step zeros: no zeroing pass. A cell
        // whose da equals db keeps db alone.
        // Without `full_da`, da's rows hold the gates after the SHARED_GATES only (db holds theirs).
        let da_width = match (C::SHARED_GRADIENT, full_da) {
            (true, _) => 0,
            (false, true) => g,
            (false, false) => g - C::SHARED_GATES * h,
        };
        self.da_width = da_width;
        reuse(&mut da_all, t_len * n * da_width);
        reuse(&mut db, t_len * n * g);
        // dh: dL/dh_t for the step being walked; starts with the gradient of the final state.
        // da_all and db: dL/da_t and dL/db_t for every (t, n), [T·N, G·H], time-major.
        // The final state's gradient enters at the last step; a padded step passes it back to the
        // sequence's last valid step unchanged.
        if let Some(d) = grad_final {
            dh.copy_from_slice(d.h.data()); // dL/dh_n
            if let Some(dc_n) = &d.c {
                dc.copy_from_slice(dc_n.data()); // dL/dc_n
            }
        }
        if let (true, Some(gy)) = (self.last_only, grad_out) {
            dh.iter_mut().zip(gy.data()).for_each(|(d, gy)| *d += gy); // y = h_n: its gradient adds
        }
        let (cell, lengths, last_only, t_run) = (&self.cell, &self.lengths, self.last_only, self.t_run);
        let grad_out = if last_only { None } else { grad_out };
        // dh_{t−1} += db_t·W_hh: W_hh packed once for the whole walk.
        self.packed_from.forget();
        self.packed_hh.pack(g, h, self.weight_hh.value.data(), false);
        let packed_hh = &self.packed_hh;
        let (hs, cs, saved_all) = (&self.hs[..], &self.cs[..], &self.saved[..]);
        // The state's gradients alternate between two buffers: at step t, (dh, dc) = [t % 2] holds
        // dL/dh_t and the step writes dL/dh_{t−1} into the other.
        let dhs = [Shared::new(&mut dh), Shared::new(&mut dh_prev)];
        let dcs = [Shared::new(&mut dc), Shared::new(&mut dc_prev)];
        let (da_sh, db_sh) = (Shared::new(&mut da_all), Shared::new(&mut db));
        let walk = |rows: std::ops::Range<usize>| {
            let (s0, r) = (rows.start, rows.len());
            for (step, t) in (0..t_len).rev().enumerate() {
                let (now, prev) = (step % 2, 1 - step % 2);
                // SAFETY: these are this block's rows (s0 .. s0 + r) of the state gradients and of
                // step t's db: no other block touches them; each range lies inside its buffer.
                let (dh, dc, dh_prev, dc_prev, db_t) = unsafe {
                    (
                        dhs[now].rows(s0 * h, r * h),
                        dcs[now].rows(s0 * h, r * h),
                        dhs[prev].rows(s0 * h, r * h),
                        dcs[prev].rows(s0 * h, r * h),
                        db_sh.rows((t * n + s0) * g, r * g),
                    )
                };
                if t >= t_run {
                    // Past every sequence's end: the gradients pass through, none reaches a gate
                    // (`+ 0.0` as the recurrence's product of zeros adds it, the same bits).
                    dh_prev.iter_mut().zip(dh.iter()).for_each(|(p, d)| *p = d + 0.0);
                    dc_prev.copy_from_slice(dc);
                    db_t.fill(0.0);
                    // SAFETY: this block's rows of step t's da, as below.
                    unsafe { da_sh.rows((t * n + s0) * da_width, r * da_width) }.fill(0.0);
                    continue;
                }
                let h_prev = &hs[t * nh + s0 * h..][..r * h];
                let (c_prev, c_now) =
                    (&cs[t * nh + s0 * h..][..r * h], &cs[(t + 1) * nh + s0 * h..][..r * h]);
                let saved_t = &saved_all[(t * n + s0) * sv..][..r * sv];
                for (i, ((((dh_s, dc_s), dhp), dcp), db_s)) in dh
                    .chunks_exact_mut(h)
                    .zip(dc.chunks_exact_mut(h))
                    .zip(dh_prev.chunks_exact_mut(h))
                    .zip(dc_prev.chunks_exact_mut(h))
                    .zip(db_t.chunks_exact_mut(g))
                    .enumerate()
                {
                    let s = s0 + i;
                    let active = lengths.get(s).is_none_or(|&l| t < l);
                    if let (Some(grad_out), true) = (grad_out, active) {
                        let gy = &grad_out.data()[(s * t_len + t) * h..][..h];
                        dh_s.iter_mut().zip(gy).for_each(|(d, gy)| *d += gy); // dh_t = dL/dy_t + (from t+1)
                    }
                    // SAFETY: sample s's da row for step t (none when the cell shares da and db):
                    // only this block writes sample s's rows.
                    let da = unsafe { da_sh.rows((t * n + s) * da_width, da_width) };
                    if !active {
                        dhp.copy_from_slice(dh_s); // padding: h_t = h_{t−1}, the gradient passes through
                        dcp.copy_from_slice(dc_s);
                        db_s.fill(0.0); // and reaches neither input nor weights
                        da.fill(0.0);
                        continue;
                    }
                    let (hp, cp, c) = (&h_prev[i * h..][..h], &c_prev[i * h..][..h], &c_now[i * h..][..h]);
                    let saved = &saved_t[i * sv..][..sv];
                    cell.backward_step(saved, hp, cp, c, dh_s, dc_s, da, db_s, dhp, dcp);
                }
                // The recurrence: dh_{t−1} += db_t·W_hh.
                gemm_packed_b(r, 1.0, (db_t, g), packed_hh, 1.0, dh_prev);
            }
        };
        for_sample_blocks(n, g, walk);
        if t_len % 2 == 1 {
            // The last step wrote dL/dh₀ into the second buffer.
            std::mem::swap(&mut dh, &mut dh_prev);
            std::mem::swap(&mut dc, &mut dc_prev);
        }
        // dL/dh₀ (dL/dc₀): what reached the initial state. Kept, not propagated further.
        self.h0_grad = Some(RecurrentState {
            h: Tensor::from_vec(&[n, h], dh.clone()).expect("[N, H]"),
            c: C::HAS_CELL.then(|| Tensor::from_vec(&[n, h], dc.clone()).expect("[N, H]")),
        });
        self.grads = [dh, dc, dh_prev, dc_prev, da_all, db];
    }

    pub(crate) fn visit<'a>(&'a self, f: &mut dyn FnMut(&str, State<'a>)) {
        f("weight_ih_l0", State::Param(&self.weight_ih));
        f("weight_hh_l0", State::Param(&self.weight_hh));
        f("bias_ih_l0", State::Param(&self.bias_ih));
        f("bias_hh_l0", State::Param(&self.bias_hh));
        if self.stateful {
            f("carried_state", State::Carried(self.carried.as_ref()));
        }
    }

    pub(crate) fn visit_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, StateMut<'a>)) {
        f("weight_ih_l0", StateMut::Param(&mut self.weight_ih));
        f("weight_hh_l0", StateMut::Param(&mut self.weight_hh));
        f("bias_ih_l0", StateMut::Param(&mut self.bias_ih));
        f("bias_hh_l0", StateMut::Param(&mut self.bias_hh));
        if self.stateful {
            f("carried_state", StateMut::Carried(&mut self.carried));
        }
    }
}

/// `x [A, B, F]` into `out` as `[B, A, F]` (reusing its buffer): row `(b, a)` is `x[a, b]` —
/// a batch `[N, T, F]` to time-major `[T, N, F]`, and back.
fn swap_first_axes(x: &Tensor, out: &mut Tensor) {
    let (outer, inner, f) = (x.dim(0), x.dim(1), x.dim(2));
    out.resize_for_overwrite(&[inner, outer, f]); // every row is written below
    // In parallel blocks of rows for a large input (as `copy_from` copies), else here.
    crate::tensor::parallel::for_row_blocks(out.data_mut(), f, |first, rows| {
        for (r, row) in (first..).zip(rows.chunks_exact_mut(f)) {
            let (b, a) = (r / outer, r % outer);
            row.copy_from_slice(&x.data()[(a * inner + b) * f..][..f]);
        }
    });
}

/// What the walk forward reads at each step.
#[derive(Clone, Copy)]
enum StepInput<'a> {
    /// A dense input laid out as the [`Layout`] says: `a_t = x_t·W_ihᵀ + b_ih`, a product per step.
    Dense(&'a Tensor, Layout),
    /// Ids `[N·T]` into an embedding whose projection `P = E·W_ihᵀ + b_ih` is the layer's
    /// `projected`: `a_t = P[id]`.
    Embedded(&'a [usize]),
}

/// How a dense input's rows lie.
#[derive(Clone, Copy)]
enum Layout {
    /// `[T, N, F]`: step t's rows adjacent (the copy a training pass keeps for `dL/dW_ih`).
    TimeMajor,
    /// `[N, T, F]`, the batch as given: step t's rows `T·F` values apart.
    BatchMajor,
}

/// Runs `walk` over blocks of samples: one block per thread when a step's work is large enough
/// (`N·G·H ≥ PARALLEL_MIN`, counted as `N·G`), else every sample here. The samples of a batch are
/// independent through time, so each block walks all its steps without waiting for the others;
/// and each sample's numbers are the same whatever block it is in (bit-identical on any number of
/// threads).
fn for_sample_blocks(n: usize, g: usize, walk: impl Fn(std::ops::Range<usize>) + Sync) {
    let threads = rayon::current_num_threads();
    let blocks = if n * g >= PARALLEL_MIN && threads > 1 { threads.min(n) } else { 1 };
    if blocks == 1 {
        walk(0..n);
    } else {
        (0..blocks).into_par_iter().for_each(|b| walk(b * n / blocks..(b + 1) * n / blocks));
    }
}

/// A buffer that the threads of one walk share, each touching only its own samples' rows: the
/// time-major layouts put a step's samples side by side, so a block of samples is one range of
/// each step.
#[derive(Clone, Copy)]
struct Shared<'a> {
    ptr: *mut f32,
    len: usize,
    _buf: std::marker::PhantomData<&'a mut [f32]>,
}

// SAFETY: a `Shared` only hands out ranges through `rows`, whose callers guarantee that no two
// threads use the same range at once; the buffer is borrowed mutably for 'a.
unsafe impl Send for Shared<'_> {}
// SAFETY: as for Send.
unsafe impl Sync for Shared<'_> {}

impl<'a> Shared<'a> {
    fn new(buf: &'a mut [f32]) -> Self {
        Shared { ptr: buf.as_mut_ptr(), len: buf.len(), _buf: std::marker::PhantomData }
    }

    /// The values `start .. start + len`.
    ///
    /// # Safety
    /// No other thread may read or write them while the slice lives.
    ///
    /// # Panics
    /// If the range is outside the buffer.
    #[allow(clippy::mut_from_ref)] // disjoint ranges of one buffer, one per thread: see `# Safety`
    unsafe fn rows(&self, start: usize, len: usize) -> &'a mut [f32] {
        assert!(start.checked_add(len).is_some_and(|end| end <= self.len), "walk: rows outside the buffer");
        // SAFETY: inside the buffer (asserted), borrowed mutably for 'a; exclusive to the caller
        // (see `# Safety`).
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), len) }
    }
}

/// Implements [`Layer`](super::Layer) for a public recurrent layer type wrapping `Recurrent<C>`,
/// and gives it the shared settings.
macro_rules! recurrent_layer {
    ($ty:ident, $cell:ty) => {
        impl $crate::layers::Layer for $ty {
            fn describe(&self) -> String {
                self.0.describe()
            }
            fn output_shape(&self, input: &[usize]) -> $crate::error::Result<Vec<usize>> {
                self.0.output_shape(input)
            }
            fn forward(
                &mut self,
                x: &$crate::tensor::Tensor,
                pass: $crate::layers::Pass<'_>,
            ) -> $crate::tensor::Tensor {
                self.0.forward(x, pass)
            }
            fn backward(
                &mut self,
                g: &$crate::tensor::Tensor,
                input_grad: $crate::layers::InputGrad,
            ) -> Option<$crate::tensor::Tensor> {
                self.0.backward(g, input_grad)
            }

            fn per_example(&mut self) -> Option<&mut dyn $crate::privacy::per_example::PerExample> {
                Some(self)
            }

            fn onnx(&self) -> Option<&dyn $crate::onnx::OnnxLayer> {
                Some(self)
            }
        }

        impl $crate::layers::Visit for $ty {
            fn visit<'a>(&'a self, f: &mut dyn FnMut(&str, $crate::layers::State<'a>)) {
                self.0.visit(f)
            }

            fn visit_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, $crate::layers::StateMut<'a>)) {
                self.0.visit_mut(f)
            }
        }

        impl std::ops::Deref for $ty {
            type Target = $crate::layers::recurrent::Recurrent<$cell>;
            fn deref(&self) -> &Self::Target {
                &self.0
            }
        }

        impl std::ops::DerefMut for $ty {
            fn deref_mut(&mut self) -> &mut Self::Target {
                &mut self.0
            }
        }

        impl $ty {
            /// See [`Recurrent::last_step_only`](super::Recurrent::last_step_only).
            pub fn last_step_only(self) -> $ty {
                $ty(self.0.last_step_only())
            }

            /// See [`Recurrent::activation_budget`](super::Recurrent::activation_budget).
            pub fn activation_budget(self, bytes: usize) -> $ty {
                $ty(self.0.activation_budget(bytes))
            }

            /// See [`Recurrent::stateful`](super::Recurrent::stateful).
            pub fn stateful(self) -> $ty {
                $ty(self.0.stateful())
            }

            /// See [`Recurrent::seed`](super::Recurrent::seed).
            pub fn seed(self, seed: u64) -> $ty {
                $ty(self.0.seed(seed))
            }
        }
    };
}
pub(crate) use recurrent_layer;
