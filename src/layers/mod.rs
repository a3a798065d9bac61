//! Layers, each with a hand-written forward and backward pass.
//!
//! # The contract
//!
//! A layer is anything that implements [`Layer`]. Four methods are required:
//!
//! - [`Layer::describe`] — a one-line description, `"Dense(784→10)"`, for summaries and errors;
//! - [`Layer::output_shape`] — what the layer makes of an input shape (batch axis first), or an
//!   error naming the layer and both shapes. Models call it when they are built, so a network
//!   that does not fit together is an error before any arithmetic runs;
//! - [`Layer::forward`] — computes `y = f(x)` and **caches** whatever the backward pass needs;
//! - [`Layer::backward`] — receives `g = dL/dy` for the latest forward call, **adds** `dL/dθ`
//!   into each parameter's [`Param::grad`] (gradients accumulate until zeroed, as in PyTorch) and
//!   returns `dL/dx` — unless told with [`InputGrad::NotNeeded`] that nobody will read it (the
//!   first layer of a network being trained), in which case it may skip that work and return
//!   `None`.
//!
//! One more trait, [`Visit`] ([`Visit::visit`] and its twin [`Visit::visit_mut`]), is implemented by every layer and needed only by a layer that
//! has state: it hands each parameter, buffer, counter, random generator and carried recurrent
//! state to a visitor, with
//! its name (`"weight"`, `"running_mean"`). Everything that works on a whole model — optimizers,
//! saving and loading, zeroing gradients, reseeding, counting parameters, snapshots — is written
//! once, over that visitor, so it works for nested and custom layers alike. A container (a
//! [`Sequential`], a [`Residual`]) visits its children and prefixes their names, which is how
//! `"2.0.weight"` comes about; the format is built in one place, [`child_name`].
//!
//! Shapes always include the batch axis first: `[N, features]` for dense data, `[N, C, H, W]` for
//! images. `forward` panics, with the message `output_shape` gives, when handed an input it cannot
//! take; a model checks its input before that happens.
//!
//! Writing a new layer needs nothing else: speed-ups (in-place variants, reordering a pooling
//! before an activation) live in the [execution plan](crate::layers::sequential::plan), which applies them only to
//! the layer types it knows give identical results. `examples/custom_layer.rs` and
//! `docs/custom_layer.md` walk through a complete custom layer.
//!
//! One file per layer; each opens with its forward and backward math, and the code uses the same
//! names.

pub mod activation;
pub mod attention;
mod attention_head;
pub mod batchnorm;
pub mod conv2d;
pub mod decoder;
pub mod dense;
pub mod dropout;
pub mod embedding;
pub mod flatten;
pub mod layernorm;
pub mod pool;
pub mod positions;
pub mod recurrent;
pub mod residual;
pub mod sequential;
pub mod transformer;

pub use activation::{Gelu, LeakyRelu, LogSoftmax, Relu, Sigmoid, Softmax, Tanh};
pub use attention::MultiHeadAttention;
pub use batchnorm::{BatchNorm1d, BatchNorm2d};
pub use conv2d::Conv2d;
pub use decoder::{DecoderOnly, MAX_DECODER_LAYERS};
pub use dense::Dense;
pub use dropout::Dropout;
pub use embedding::Embedding;
pub use flatten::Flatten;
pub use layernorm::LayerNorm;
pub use pool::{AvgPool2d, GlobalAvgPool, MaxPool2d};
pub use positions::{PositionEmbedding, SinusoidalPositions};
pub use recurrent::{Gru, Lstm, RecurrentState, Rnn};
pub use residual::Residual;
pub use sequential::Sequential;
pub use transformer::{FeedForwardActivation, TransformerEncoderLayer};

use crate::error::{Error, Result};
use crate::privacy::per_example::PerExample;
use crate::tensor::init::Init;
use crate::tensor::{Rng, Tensor, rng, shape_str};
use std::any::Any;

/// Whether a layer runs as during training or as at inference.
///
/// Only some layers care: [`Dropout`] drops units only in `Train`; the batch-norm layers use the
/// batch's statistics (and update their running averages) in `Train` and the running averages in
/// `Eval` and `Predict`; the recurrent layers keep each step's gates, layer norm its `x̂`,
/// `Dense` its input and ReLU its mask for backward except in `Predict`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Mode {
    /// Training: dropout active, batch norm uses and updates batch statistics.
    #[default]
    Train,
    /// Inference: deterministic, no state changes. A backward pass may follow (an input
    /// gradient, a gradient check without dropout).
    Eval,
    /// Inference with no backward pass to follow — what prediction and evaluation use: as
    /// `Eval`, and a layer may keep nothing for backward (the recurrent layers then skip storing
    /// every step's gates: 16 MB for an LSTM of 200 units over 50 steps of 100 sequences). A
    /// backward pass after a `Predict` forward pass panics, naming the layer.
    Predict,
}

/// What a forward pass is told besides its input: training or inference, and the side
/// information that its batch carries.
///
/// Side information belongs to the samples, never to a layer: a batch of sequences padded to `T`
/// steps carries each sequence's number of valid steps, and every layer of the pass sees the
/// lengths of exactly these samples, in this batch's order (they are shuffled and selected with
/// the samples by [`Dataset`](crate::data::Dataset)). Most layers read only [`Pass::mode`]; the
/// recurrent layers read [`Pass::lengths`].
///
/// ```
/// use backprop::layers::{Layer, Lstm, Mode, Pass};
/// use backprop::Tensor;
/// let mut lstm = Lstm::new(1, 2).seed(1);
/// let x = Tensor::ones(&[2, 3, 1]); // two sequences padded to 3 steps
/// let y = lstm.forward(&x, Pass::EVAL.with_lengths(&[3, 1]));
/// // The second sequence has one valid step: its outputs at steps 1 and 2 are 0.
/// assert!(y.outer(1)[2..].iter().all(|&v| v == 0.0));
/// assert_eq!(Pass::from(Mode::Train), Pass::TRAIN);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pass<'a> {
    /// Training or inference.
    pub mode: Mode,
    /// For a batch of sequences `[N, T, …]`: the number of valid steps of each sequence
    /// (`1 ≤ lengths[n] ≤ T`, one per sample). `None`: every step of every sequence is valid.
    pub lengths: Option<&'a [usize]>,
}

impl Pass<'static> {
    /// A training pass without side information.
    pub const TRAIN: Pass<'static> = Pass { mode: Mode::Train, lengths: None };
    /// An inference pass without side information.
    pub const EVAL: Pass<'static> = Pass { mode: Mode::Eval, lengths: None };
    /// An inference pass that no backward pass follows ([`Mode::Predict`]).
    pub const PREDICT: Pass<'static> = Pass { mode: Mode::Predict, lengths: None };
}

impl<'a> Pass<'a> {
    /// The same pass for a batch whose sequences have these lengths.
    pub fn with_lengths<'b>(self, lengths: &'b [usize]) -> Pass<'b> {
        Pass { mode: self.mode, lengths: Some(lengths) }
    }

    /// The same pass with the given lengths, or none.
    pub fn with_optional_lengths<'b>(self, lengths: Option<&'b [usize]>) -> Pass<'b> {
        Pass { mode: self.mode, lengths }
    }

    /// The same pass without side information (for a layer whose input is not the batch's
    /// sequences: a head after the last step, say).
    pub fn without_lengths(self) -> Pass<'static> {
        Pass { mode: self.mode, lengths: None }
    }

    /// True in [`Mode::Train`].
    pub fn is_training(self) -> bool {
        self.mode == Mode::Train
    }

    /// False in [`Mode::Predict`]: no backward pass follows, so a layer need not keep what only
    /// backward reads.
    pub fn keeps_for_backward(self) -> bool {
        self.mode != Mode::Predict
    }
}

impl From<Mode> for Pass<'static> {
    fn from(mode: Mode) -> Pass<'static> {
        Pass { mode, lengths: None }
    }
}

/// Whether the caller of [`Layer::backward`] needs `dL/dx`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputGrad {
    /// Return `Some(dL/dx)`.
    Needed,
    /// Nobody reads `dL/dx` (the first layer of a network in training): the layer may skip it
    /// and return `None`. For a convolution that saves a third of its backward pass. Parameter
    /// gradients are accumulated either way.
    NotNeeded,
}

impl InputGrad {
    /// True for [`InputGrad::Needed`].
    pub fn is_needed(self) -> bool {
        self == InputGrad::Needed
    }
}

/// A learnable tensor and the gradient of the loss with respect to it.
///
/// A parameter has no name of its own: its layer names it when it visits its state, and
/// containers prefix that name, so the same layer type can sit anywhere in a model.
#[derive(Clone, Debug)]
pub struct Param {
    /// The current value.
    pub value: Tensor,
    /// `dL/dvalue`, accumulated by `backward` until zeroed.
    pub grad: Tensor,
    /// The initialiser a model-wide seed redraws this parameter from
    /// ([`Sequential::seed`](sequential::SequentialBuilder::seed)); `None` when the value was
    /// chosen explicitly (a layer's own `seed`, given weights) or is a constant (biases, batch
    /// norm's scale and shift).
    pub init: Option<Init>,
}

impl Param {
    /// A parameter with the given value and a zero gradient of the same shape.
    pub fn new(value: Tensor) -> Param {
        let grad = Tensor::zeros(value.shape());
        Param { value, grad, init: None }
    }

    /// A parameter drawn from `init` with `seed`, which a model-wide seed may redraw.
    pub fn drawn(shape: &[usize], init: Init, seed: u64) -> Param {
        Param { init: Some(init), ..Param::new(init.tensor(shape, &mut rng(seed))) }
    }

    /// Number of scalars.
    pub fn len(&self) -> usize {
        self.value.len()
    }

    /// True for an empty parameter.
    pub fn is_empty(&self) -> bool {
        self.value.is_empty()
    }

    /// Sets the gradient to zero.
    pub fn zero_grad(&mut self) {
        self.grad.fill(0.0);
    }
}

/// One piece of a layer's state, as handed to [`Visit::visit`].
#[derive(Clone, Copy, Debug)]
pub enum State<'a> {
    /// A learnable parameter (saved, updated by optimizers).
    Param(&'a Param),
    /// A tensor that is saved with the weights but not learned: batch norm's running statistics.
    Buffer(&'a Tensor),
    /// A count saved with the weights as an `int64` scalar: batch norm's `num_batches_tracked`.
    Counter(u64),
    /// A random generator (dropout's): reseeded by `fit`, restored when a batch fails, not saved.
    Rng(&'a Rng),
    /// The state a stateful recurrent layer carries from one pass to the next
    /// ([`Recurrent::stateful`](crate::layers::recurrent::Recurrent::stateful)), `None` before the first pass:
    /// restored when a batch fails, not saved (a PyTorch `state_dict` holds no hidden state either).
    Carried(Option<&'a RecurrentState>),
}

/// One piece of a layer's state, mutable, as handed to [`Visit::visit_mut`].
#[derive(Debug)]
pub enum StateMut<'a> {
    /// A learnable parameter.
    Param(&'a mut Param),
    /// A saved, non-learned tensor.
    Buffer(&'a mut Tensor),
    /// A saved count.
    Counter(&'a mut u64),
    /// A random generator.
    Rng(&'a mut Rng),
    /// A stateful recurrent layer's carried state.
    Carried(&'a mut Option<RecurrentState>),
}

/// State visited by name: what saving, loading, optimizers, snapshots, seeding and gradient
/// checks need of a layer or a model, and all they need.
///
/// A layer or model hands each parameter, buffer, counter, random generator and carried state to
/// `f` with its
/// name, in a fixed order; a container (a [`Sequential`], a model struct) visits its children and
/// prefixes their names with [`child_name`], which is how `"encoder.weight_ih_l0"` and
/// `"2.0.weight"` come about. A type without state writes `impl Visit for MyLayer {}`; a model
/// struct gets both methods from [`visit_fields!`](crate::visit_fields), one line naming its fields.
pub trait Visit: Any {
    /// Hands every piece of state to `f` with its name, in a fixed order (`weight` before
    /// `bias`). The default visits nothing.
    fn visit<'a>(&'a self, f: &mut dyn FnMut(&str, State<'a>)) {
        let _ = f;
    }

    /// Like [`Visit::visit`], mutably, in the same order and with the same names.
    fn visit_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, StateMut<'a>)) {
        let _ = f;
    }
}

impl<T: Visit + ?Sized> Visit for Box<T> {
    fn visit<'a>(&'a self, f: &mut dyn FnMut(&str, State<'a>)) {
        (**self).visit(f)
    }

    fn visit_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, StateMut<'a>)) {
        (**self).visit_mut(f)
    }
}

/// A network layer with an explicit backward pass. See the [module docs](self) for the contract.
///
/// Its state (if any) is reached through its [`Visit`] implementation.
///
/// `Any` is a supertrait so that a model can hand back a layer as its concrete type
/// ([`Sequential::layer_as`]) and so that the [execution plan](crate::layers::sequential::plan) can recognise the
/// layer types its exact rewrites apply to; every `'static` type is `Any` without writing
/// anything.
pub trait Layer: Visit + Any + Send {
    /// A one-line description with the layer's settings: `"Conv2d(1→32, 3×3, stride 2)"`.
    fn describe(&self) -> String;

    /// The shape of the output for an input of shape `input` (batch axis included).
    ///
    /// # Errors
    /// [`Error::Shape`] naming the layer, the expected shape and the actual one, when the layer
    /// cannot take this input.
    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>>;

    /// Computes the output and caches what [`Layer::backward`] needs.
    ///
    /// # Panics
    /// If the input has a shape the layer cannot take (the message is the one
    /// [`Layer::output_shape`] gives).
    fn forward(&mut self, x: &Tensor, pass: Pass<'_>) -> Tensor;

    /// Given `g = dL/dy` for the latest forward pass, accumulates `dL/dθ` into the parameters'
    /// gradients and returns `Some(dL/dx)`; with [`InputGrad::NotNeeded`] it may return `None`.
    ///
    /// # Panics
    /// If called before `forward`, or with a gradient whose shape is not the latest output's.
    fn backward(&mut self, grad_out: &Tensor, input_grad: InputGrad) -> Option<Tensor>;

    /// Checks the *values* of an input the layer would take, beyond its shape (which
    /// [`Layer::output_shape`] checks): an [`Embedding`]'s ids must be whole numbers in range.
    /// Training, evaluation and prediction call it (through [`Model::check_inputs`](crate::model::Model::check_inputs))
    /// before any forward pass, so that bad data is an `Err`, not a panic inside `forward`. The
    /// default accepts every value; a container asks the layer that reads its input.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the layer, the value and its position.
    fn check_values(&self, x: &Tensor) -> Result<()> {
        let _ = x;
        Ok(())
    }

    /// Checks that the layer can *train* on a batch of shape `input` (a shape it can take, as
    /// [`Layer::output_shape`] says): batch norm needs more than one value per channel to estimate
    /// a variance. [`fit`](crate::train::fit) calls it for every batch size an epoch will have,
    /// before the first batch, so that such a refusal is an `Err` up front rather than a panic in
    /// the middle of training. The default accepts every shape; a container asks its layers.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the layer and the shape.
    fn check_training_shape(&self, input: &[usize]) -> Result<()> {
        let _ = input;
        Ok(())
    }

    /// The layer's per-example backward pass, if it has one: an optional capability used by
    /// private training ([`privacy::per_example`](crate::privacy::per_example)). The default,
    /// `None`, is right for a layer without parameters and for any layer that does not offer it
    /// (private training then runs a backward pass per example instead).
    fn per_example(&mut self) -> Option<&mut dyn PerExample> {
        None
    }

    /// The layer's ONNX export, if it has one: an optional capability used by
    /// [`onnx`](crate::onnx). The default, `None`, makes an export refuse the layer by name.
    fn onnx(&self) -> Option<&dyn crate::onnx::OnnxLayer> {
        None
    }
}

/// `dL/dx` from [`Layer::backward`] when it is needed.
///
/// # Panics
/// If the layer returned `None` although the gradient was asked for (a bug in the layer).
pub fn backward_input(layer: &mut dyn Layer, grad_out: &Tensor) -> Tensor {
    layer
        .backward(grad_out, InputGrad::Needed)
        .unwrap_or_else(|| panic!("{}: backward returned no input gradient", layer.describe()))
}

// ---------------------------------------------------------------------- whole-state helpers

/// The name of a child's state inside a container: `"{prefix}.{name}"`, as PyTorch's nested
/// modules name their `state_dict` entries (`"2.0.weight"`). The only place the format is built.
pub fn child_name(prefix: &str, name: &str) -> String {
    format!("{prefix}.{name}")
}

/// Every parameter with its full name, in visiting order.
pub fn named_params<V: Visit + ?Sized>(layer: &V) -> Vec<(String, &Param)> {
    let mut out = Vec::new();
    layer.visit(&mut |name, s| {
        if let State::Param(p) = s {
            out.push((name.to_string(), p));
        }
    });
    out
}

/// Every parameter with its full name, mutable, in visiting order.
pub fn named_params_mut<V: Visit + ?Sized>(layer: &mut V) -> Vec<(String, &mut Param)> {
    let mut out = Vec::new();
    layer.visit_mut(&mut |name, s| {
        if let StateMut::Param(p) = s {
            out.push((name.to_string(), p));
        }
    });
    out
}

/// Number of learnable scalars.
pub fn num_params<V: Visit + ?Sized>(layer: &V) -> usize {
    let mut n = 0;
    layer.visit(&mut |_, s| {
        if let State::Param(p) = s {
            n += p.len();
        }
    });
    n
}

/// Sets every parameter gradient to zero.
pub fn zero_grad<V: Visit + ?Sized>(layer: &mut V) {
    layer.visit_mut(&mut |_, s| {
        if let StateMut::Param(p) = s {
            p.zero_grad();
        }
    });
}

/// A seed derived from `seed` and a state name (FNV-1a over the name, mixed with the seed by
/// SplitMix64): stable across platforms and versions, different for every name.
pub(crate) fn seed_for(seed: u64, name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let mut z = h ^ seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Restarts every random generator in `layer` (dropout masks) from `seed` and the generator's
/// name, so that two dropout layers never draw the same mask. `fit` reseeds from its seed; a
/// gradient check reseeds before every forward pass so that the random choices stay fixed.
pub fn reseed<V: Visit + ?Sized>(layer: &mut V, seed: u64) {
    layer.visit_mut(&mut |name, s| {
        if let StateMut::Rng(r) = s {
            *r = rng(seed_for(seed, name));
        }
    });
}

/// Redraws every parameter that has an initialiser ([`Param::init`]) from `seed` and the
/// parameter's name. Parameters whose values were chosen explicitly are left alone — and so are
/// those loaded from a file or trained by `fit` or `train_step`, which no longer carry an
/// initialiser ([`settle_params`]): a trained model nested in a new one keeps its weights.
pub fn redraw_params<V: Visit + ?Sized>(layer: &mut V, seed: u64) {
    layer.visit_mut(&mut |name, s| {
        if let StateMut::Param(p) = s
            && let Some(init) = p.init
        {
            p.value = init.tensor(p.value.shape(), &mut rng(seed_for(seed, name)));
        }
    });
}

/// Marks every parameter's values as chosen (`init = None`): a later model-wide seed
/// ([`redraw_params`], a builder around this model) leaves them alone. Called on a model's
/// parameters once they are loaded, or trained by a step that `fit` or `train_step` took.
pub fn settle_params<V: Visit + ?Sized>(layer: &mut V) {
    layer.visit_mut(&mut |_, s| {
        if let StateMut::Param(p) = s {
            p.init = None;
        }
    });
}

/// The first name that two pieces of state share, if any. Saving would keep only one of them
/// and optimizers would mix their moments, so models refuse to be built with one.
pub fn duplicate_state_name<V: Visit + ?Sized>(layer: &V) -> Option<String> {
    let mut seen = std::collections::HashSet::new();
    let mut dup = None;
    layer.visit(&mut |name, _| {
        if dup.is_none() && !seen.insert(name.to_string()) {
            dup = Some(name.to_string());
        }
    });
    dup
}

/// An error if two pieces of `model`'s state share a name ([`duplicate_state_name`]): saving
/// would keep one of them, loading would copy one into both, and an optimizer, which keeps its
/// moments by name, would mix theirs. `what` starts the message (`"save"`, `"fit"`).
pub(crate) fn check_unique_names<V: Visit + ?Sized>(model: &V, what: &str) -> Result<()> {
    match duplicate_state_name(model) {
        None => Ok(()),
        Some(name) => Err(Error::invalid(format!(
            "{what}: two pieces of the model's state are both named {name:?}; a container must prefix its \
             children's names (layers::child_name, or visit_fields! for a model struct)"
        ))),
    }
}

/// A copy of everything that changes while training: parameter values, buffers, counters,
/// random generators and carried recurrent states (not gradients). Restored by
/// [`Snapshot::restore`].
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Whether `tensors` starts with the parameter values (or holds buffers only).
    params: bool,
    tensors: Vec<Tensor>,
    counters: Vec<u64>,
    rngs: Vec<Rng>,
    carried: Vec<Option<RecurrentState>>,
}

impl Snapshot {
    /// Copies the state of `layer`.
    pub fn of<V: Visit + ?Sized>(layer: &V) -> Snapshot {
        let mut s = Snapshot::default();
        s.save(layer, true);
        s
    }

    /// Copies the state of `layer` into this snapshot, reusing its allocations; with
    /// `params == false`, only buffers, counters, generators and carried states (what a forward
    /// pass changes).
    pub fn save<V: Visit + ?Sized>(&mut self, layer: &V, params: bool) {
        let (mut t, mut c, mut r, mut k) = (0, 0, 0, 0);
        self.params = params;
        let Snapshot { tensors, counters, rngs, carried, .. } = self;
        layer.visit(&mut |_, s| match s {
            State::Param(p) if params => copy_into(tensors, &mut t, &p.value),
            State::Param(_) => {}
            State::Buffer(b) => copy_into(tensors, &mut t, b),
            State::Counter(n) => {
                counters.truncate(c);
                counters.push(n);
                c += 1;
            }
            State::Rng(g) => {
                rngs.truncate(r);
                rngs.push(g.clone());
                r += 1;
            }
            State::Carried(state) => {
                if carried.len() <= k {
                    carried.push(None);
                }
                copy_carried(&mut carried[k], state);
                k += 1;
            }
        });
        tensors.truncate(t);
        carried.truncate(k);
    }

    /// Puts the saved state back.
    ///
    /// # Panics
    /// If `layer` is not the model the snapshot was taken of (another architecture).
    pub fn restore<V: Visit + ?Sized>(&self, layer: &mut V) {
        self.restore_parts(layer, true);
    }

    /// Puts back the saved parameter values, buffers and counters, and leaves the random
    /// generators and carried states where they are now: early stopping's best weights, restored
    /// at the end of training, do not send dropout back to masks it has drawn already (and a
    /// resumed run, whose checkpoint keeps the best epoch's weights but not its generators, ends
    /// where the uninterrupted run does).
    ///
    /// # Panics
    /// As [`Snapshot::restore`].
    pub(crate) fn restore_weights<V: Visit + ?Sized>(&self, layer: &mut V) {
        self.restore_parts(layer, false);
    }

    /// [`Snapshot::restore`], with the generators and carried states only when `all`.
    fn restore_parts<V: Visit + ?Sized>(&self, layer: &mut V, all: bool) {
        let params = self.params;
        let (mut t, mut c, mut r, mut k) = (0, 0, 0, 0);
        let next = |t: &mut usize| {
            let v = self.tensors.get(*t).expect("a snapshot of the same model");
            *t += 1;
            v
        };
        layer.visit_mut(&mut |_, s| match s {
            StateMut::Param(p) if params => p.value.copy_from(next(&mut t)),
            StateMut::Param(_) => {}
            StateMut::Buffer(b) => b.copy_from(next(&mut t)),
            StateMut::Counter(n) => {
                *n = self.counters[c];
                c += 1;
            }
            StateMut::Rng(g) => {
                if all {
                    *g = self.rngs[r].clone();
                }
                r += 1;
            }
            StateMut::Carried(state) => {
                if all {
                    copy_carried(state, self.carried.get(k).expect("a snapshot of the same model").as_ref());
                }
                k += 1;
            }
        });
        assert_eq!(t, self.tensors.len(), "a snapshot of the same model");
    }
}

impl Snapshot {
    /// The saved tensors (parameter values and buffers, in visiting order) and counters.
    pub(crate) fn parts(&self) -> (&[Tensor], &[u64]) {
        (&self.tensors, &self.counters)
    }
}

/// `*dst = src.cloned()`, reusing `dst`'s buffers when both hold a state (no allocation per batch).
fn copy_carried(dst: &mut Option<RecurrentState>, src: Option<&RecurrentState>) {
    match (dst.as_mut(), src) {
        (Some(d), Some(s)) if d.c.is_some() == s.c.is_some() => {
            d.h.copy_from(&s.h);
            if let (Some(dc), Some(sc)) = (d.c.as_mut(), s.c.as_ref()) {
                dc.copy_from(sc);
            }
        }
        _ => *dst = src.cloned(),
    }
}

fn copy_into(tensors: &mut Vec<Tensor>, at: &mut usize, src: &Tensor) {
    if tensors.len() <= *at {
        tensors.push(Tensor::default());
    }
    tensors[*at].copy_from(src);
    *at += 1;
}

// ------------------------------------------------------------------ helpers for layer files

/// Replaces a layer's weight and (optional) bias values, checking their shapes. The values are
/// now explicit, so a model-wide seed leaves them alone.
///
/// # Panics
/// If a shape differs from the parameter's (both shapes are in the message), or a bias is given to
/// a layer built without one.
pub(crate) fn replace_parameters(
    layer: &str,
    weight: &mut Param,
    bias: Option<&mut Param>,
    w: Tensor,
    b: Option<Tensor>,
) {
    assert_eq!(w.shape(), weight.value.shape(), "{layer}: new weight shape vs the layer's");
    weight.value = w;
    weight.init = None;
    match (b, bias) {
        (Some(b), Some(p)) => {
            assert_eq!(b.shape(), p.value.shape(), "{layer}: new bias shape vs the layer's");
            p.value = b;
        }
        (None, _) => {}
        (Some(_), None) => panic!("{layer}: a bias was given to a layer built without one"),
    }
}

/// Draws a weight from `init` with `seed` — explicitly chosen, so a model-wide seed leaves it
/// alone — and zeroes the bias (Dense, Conv2d).
pub(crate) fn redraw_weight_and_bias(init: Init, weight: &mut Param, bias: Option<&mut Param>, seed: u64) {
    weight.value = init.tensor(weight.value.shape(), &mut rng(seed));
    weight.init = None;
    if let Some(b) = bias {
        b.value.fill(0.0);
    }
}

/// Visits a weight and an optional bias (Dense, Conv2d).
pub(crate) fn visit_weight_bias<'a>(
    weight: &'a Param,
    bias: Option<&'a Param>,
    f: &mut dyn FnMut(&str, State<'a>),
) {
    f("weight", State::Param(weight));
    if let Some(b) = bias {
        f("bias", State::Param(b));
    }
}

/// Mutable twin of [`visit_weight_bias`].
pub(crate) fn visit_weight_bias_mut<'a>(
    weight: &'a mut Param,
    bias: Option<&'a mut Param>,
    f: &mut dyn FnMut(&str, StateMut<'a>),
) {
    f("weight", StateMut::Param(weight));
    if let Some(b) = bias {
        f("bias", StateMut::Param(b));
    }
}

/// `shape` if it is a shape a tensor can have (its element count neither overflows nor exceeds
/// [`MAX_ELEMENTS`](crate::tensor::MAX_ELEMENTS)), or an error naming the layer.
pub(crate) fn checked_output(layer: impl FnOnce() -> String, shape: Vec<usize>) -> Result<Vec<usize>> {
    if crate::tensor::checked_numel(&shape).is_none() {
        return Err(Error::shape(format!(
            "{} would output a tensor of shape {} — more elements than a tensor can hold",
            layer(),
            shape_str(&shape)
        )));
    }
    Ok(shape)
}

/// The standard "wrong input" error: names the layer, what it expected and what it got.
pub(crate) fn shape_error(layer: &str, expected: impl std::fmt::Display, actual: &[usize]) -> Error {
    Error::shape(format!("{layer} expects an input of shape {expected}, got {}", shape_str(actual)))
}

/// Runs [`Layer::output_shape`] and panics with its message if the input does not fit. Every
/// `forward` starts with this, so a wrong input fails loudly before any arithmetic.
pub(crate) fn check_input(layer: &dyn Layer, x: &Tensor) -> Vec<usize> {
    layer.output_shape(x.shape()).unwrap_or_else(|e| panic!("{e}"))
}

/// Panics unless `grad_out` has the shape of the latest output (`expected`).
pub(crate) fn check_grad(layer: &str, expected: &[usize], grad_out: &Tensor) {
    assert!(!expected.is_empty(), "{layer}: backward called before forward");
    assert!(
        grad_out.shape() == expected,
        "{layer}: backward got a gradient of shape {}, but the latest output had shape {}",
        shape_str(grad_out.shape()),
        shape_str(expected)
    );
}

impl std::fmt::Debug for dyn Layer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}
