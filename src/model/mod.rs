//! Models beyond a chain: plain structs of layers with named inputs and outputs, whose forward
//! and backward passes are code you write by composing the children's.
//!
//! A [`Layer`] maps one tensor to one tensor, and a [`Sequential`](crate::Sequential) chains
//! layers. Many models are not chains: an encoder–decoder (the encoder's final state starts the
//! decoder, and the decoder's `dL/dh₀` trains the encoder), a model with two inputs (a query and a
//! memory, two images to compare), a model with two outputs. Such a model is a struct of layers
//! (and of other models) that implements [`Model`]:
//!
//! - [`Model::forward_batch`] takes named [`Inputs`] — each a tensor `[N, …]` with, for padded
//!   sequences, its samples' lengths — and returns named [`Tensors`];
//! - [`Model::backward_batch`] takes `dL/d(output)` for the outputs that reach the loss, adds
//!   every parameter's gradient and returns `dL/d(input)` for the inputs that have one;
//! - its state is visited through [`Visit`], which [`visit_fields!`](crate::visit_fields) writes
//!   from the field names in one line, so names nest as PyTorch's do (`"encoder.weight_ih_l0"`).
//!
//! That is enough for the rest of the crate: such a model trains with the same loop as a
//! `Sequential` ([`train::fit`](crate::train::fit)), saves and loads
//! ([`io::save`](crate::io::save)), steps with any optimizer and is gradient-checked as a whole
//! ([`gradcheck::check_model`](crate::gradcheck::check_model)). Every [`Layer`] is a `Model`
//! with one input and one output, named `"input"` and `"output"`.
//!
//! **One forward call per layer per pass.** A layer keeps what its backward pass needs from its
//! latest forward call (its input, its masks), so a layer that `forward_batch` calls twice — one
//! `Dense` applied to both inputs of a Siamese model, as PyTorch shares a module's weights —
//! would compute both backward calls from the second input: wrong weight gradients, with no error.
//! Give each use its own layer (the two then learn apart), or, for weights that must stay shared,
//! run the uses as one batch (both inputs stacked along the batch axis: one forward call, one
//! backward call, and the weight gradient sums both uses), or write a layer whose backward adds
//! both paths, as [`DecoderOnly`](crate::layers::DecoderOnly)'s tied head does.
//!
//! ```
//! use backprop::model::{Inputs, Model, Tensors};
//! use backprop::prelude::*;
//!
//! /// y = left(a) + right(b): two inputs, one output.
//! struct TwoTowers {
//!     left: Dense,
//!     right: Dense,
//! }
//! backprop::visit_fields!(TwoTowers { left, right }); // "left.weight", "left.bias", "right.weight", …
//!
//! impl Model for TwoTowers {
//!     fn forward_batch(&mut self, inputs: &Inputs, mode: Mode) -> backprop::Result<Tensors> {
//!         let a = self.left.forward(inputs.get("a")?, mode.into());
//!         let b = self.right.forward(inputs.get("b")?, mode.into());
//!         Ok(Tensors::one("y", &a + &b))
//!     }
//!
//!     fn backward_batch(&mut self, grads: &Tensors, _: InputGrad) -> backprop::Result<Tensors> {
//!         let g = grads.get("y")?; // dL/dy reaches both towers unchanged: y = a + b
//!         let da = backprop::layers::backward_input(&mut self.left, g);
//!         let db = backprop::layers::backward_input(&mut self.right, g);
//!         Ok(Tensors::one("a", da).with("b", db))
//!     }
//! }
//!
//! # fn main() -> backprop::Result<()> {
//! let mut model = TwoTowers { left: Dense::new(3, 2).seed(1), right: Dense::new(4, 2).seed(2) };
//! let inputs = Inputs::new().with("a", Tensor::ones(&[5, 3])).with("b", Tensor::ones(&[5, 4]));
//! let y = model.forward_batch(&inputs, Mode::Eval)?;
//! assert_eq!(y.get("y")?.shape(), &[5, 2]);
//! let names: Vec<String> = backprop::layers::named_params(&model).into_iter().map(|(n, _)| n).collect();
//! assert_eq!(names, ["left.weight", "left.bias", "right.weight", "right.bias"]);
//! let report = backprop::gradcheck::check_model(&mut model, &inputs, Mode::Train, &Default::default())?;
//! assert!(report.passes(1e-2), "{report}");
//! # Ok(()) }
//! ```

pub use crate::data::{Input, Inputs};
use crate::error::{Error, Result};
use crate::layers::{InputGrad, Layer, Mode, Pass, Visit};
use crate::tensor::Tensor;

/// The name a [`Layer`] used as a [`Model`] gives its one input (and a single-input
/// [`Dataset`](crate::data::Dataset) its inputs).
pub const INPUT: &str = crate::data::INPUT;
/// The name a [`Layer`] used as a [`Model`] gives its one output.
pub const OUTPUT: &str = "output";

/// Named shapes, `(name, [N, …])`: a model's inputs' or outputs' shapes.
pub type Shapes = Vec<(String, Vec<usize>)>;

/// Named tensors: a model's outputs, their gradients, or the gradients of its inputs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tensors {
    items: Vec<(String, Tensor)>,
}

impl Tensors {
    /// None yet.
    pub fn new() -> Tensors {
        Tensors::default()
    }

    /// One tensor.
    pub fn one(name: &str, t: Tensor) -> Tensors {
        Tensors::new().with(name, t)
    }

    /// Adds (or replaces) the tensor `name`.
    pub fn with(mut self, name: &str, t: Tensor) -> Tensors {
        self.insert(name, t);
        self
    }

    /// Adds (or replaces) the tensor `name`.
    pub fn insert(&mut self, name: &str, t: Tensor) {
        match self.items.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = t,
            None => self.items.push((name.to_string(), t)),
        }
    }

    /// The tensor `name`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the tensors there are, when there is none of that name.
    pub fn get(&self, name: &str) -> Result<&Tensor> {
        self.find(name).ok_or_else(|| {
            let names: Vec<&str> = self.items.iter().map(|(n, _)| n.as_str()).collect();
            Error::invalid(format!("no tensor named {name:?}; there are {names:?}"))
        })
    }

    /// The tensor `name`, if there is one (a gradient that is absent is zero).
    pub fn find(&self, name: &str) -> Option<&Tensor> {
        self.items.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// Takes the tensor `name` out.
    pub fn take(&mut self, name: &str) -> Option<Tensor> {
        let i = self.items.iter().position(|(n, _)| n == name)?;
        Some(self.items.remove(i).1)
    }

    /// The tensors with their names, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.items.iter().map(|(n, t)| (n.as_str(), t))
    }

    /// The first tensor (a single-output model's output).
    pub fn first(&self) -> Option<(&str, &Tensor)> {
        self.items.first().map(|(n, t)| (n.as_str(), t))
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// A model with named inputs and outputs and a hand-written backward pass; see the
/// [module docs](self).
///
/// The method names differ from [`Layer`]'s on purpose: every layer is a model too (with one
/// input and one output), and a layer's `forward` stays unambiguous inside a model's code.
pub trait Model: Visit + Send {
    /// A short name for messages and summaries: the type's name by default.
    fn name(&self) -> String {
        // The path's last segment, before any generic arguments (`Siamese<…::Dense>` is
        // `Siamese`, not `Dense>`).
        let full = std::any::type_name::<Self>();
        let plain = full.split('<').next().unwrap_or(full);
        plain.rsplit("::").next().unwrap_or(plain).to_string()
    }

    /// Runs the model on a batch of named inputs (each `[N, …]`, with its lengths if it has
    /// them) and returns its named outputs, caching what [`Model::backward_batch`] needs.
    ///
    /// # Errors
    /// When an input is missing or does not fit (a layer's own `forward` may also panic on a
    /// shape it cannot take; the training loop turns that into an error and restores the model).
    fn forward_batch(&mut self, inputs: &Inputs, mode: Mode) -> Result<Tensors>;

    /// Given `dL/d(output)` for the outputs of the latest forward pass that reach the loss (an
    /// absent one is zero), adds `dL/dθ` into every parameter's gradient and returns `dL/d(input)`
    /// for the inputs that have one (none need be returned with [`InputGrad::NotNeeded`]).
    ///
    /// # Errors
    /// When a gradient the model needs is missing.
    ///
    /// # Panics
    /// A layer's `backward` panics when a gradient does not have the shape of the output it
    /// belongs to, or when no forward pass came first (a broken contract, not bad data: the
    /// training loop always passes the loss's gradient of the output it just computed).
    fn backward_batch(&mut self, grads: &Tensors, input_grad: InputGrad) -> Result<Tensors>;

    /// The outputs' shapes for inputs of these shapes (batch axis included), if the model can
    /// tell without running: the training loop then checks the data before the first batch. The
    /// default, `None`, leaves the checks to the first batch (which fails cleanly, the model
    /// restored).
    fn output_shapes(&self, inputs: &[(String, Vec<usize>)]) -> Option<Result<Shapes>> {
        let _ = inputs;
        None
    }

    /// Checks the inputs' *values* before any forward pass (ids in range, say): training,
    /// evaluation and prediction call it on their data first, so that bad data is an `Err`. The
    /// default accepts everything; a layer runs its [`Layer::check_values`] on its one input.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the input, the value and its position.
    fn check_inputs(&self, inputs: &Inputs) -> Result<()> {
        let _ = inputs;
        Ok(())
    }

    /// Checks that the model can *train* on batches of these input shapes (batch norm needs
    /// more than one value per channel): [`fit`](crate::train::fit) calls it for every batch size
    /// an epoch will have, before the first batch. The default accepts; a layer runs its
    /// [`Layer::check_training_shape`].
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the layer and the shape.
    fn check_training_shapes(&self, inputs: &[(String, Vec<usize>)]) -> Result<()> {
        let _ = inputs;
        Ok(())
    }

    /// The model as a [`Layer`], when it is one: private training uses a layer's batched
    /// per-example pass ([`Layer::per_example`]); any other model gets its per-example gradients
    /// from a pass per example. The default is `None`.
    fn as_layer_mut(&mut self) -> Option<&mut dyn Layer> {
        None
    }
}

/// Every layer is a model with one input and one output ([`INPUT`] and [`OUTPUT`]); the input's
/// lengths travel in the layer's [`Pass`].
impl<L: Layer> Model for L {
    fn name(&self) -> String {
        self.describe()
    }

    /// Checks the input's shape, lengths and values first (and, in [`Mode::Train`], that the
    /// layer can train on that shape: [`Layer::check_training_shape`]): a layer's `forward`
    /// panics on what this returns as an `Err`.
    fn forward_batch(&mut self, inputs: &Inputs, mode: Mode) -> Result<Tensors> {
        let input = single(inputs, &self.describe())?;
        inputs.check()?;
        self.output_shape(input.values.shape())?;
        if mode == Mode::Train {
            self.check_training_shape(input.values.shape())?;
        }
        self.check_values(&input.values)?;
        let pass = Pass::from(mode).with_optional_lengths(input.lengths.as_deref());
        Ok(Tensors::one(OUTPUT, self.forward(&input.values, pass)))
    }

    fn backward_batch(&mut self, grads: &Tensors, input_grad: InputGrad) -> Result<Tensors> {
        let g = match grads.find(OUTPUT) {
            Some(g) => g,
            // No gradient at all: the output does not reach the loss, its gradient is zero, and
            // so is every `dL/dθ` and `dL/dx` (nothing to add, no input gradient to return).
            None if grads.is_empty() => return Ok(Tensors::new()),
            None if grads.len() == 1 => grads.first().expect("one").1,
            None => {
                let names: Vec<&str> = grads.iter().map(|(n, _)| n).collect();
                return Err(Error::invalid(format!(
                    "{}: gradients for {names:?}, but a layer has one output, {OUTPUT:?}",
                    self.describe()
                )));
            }
        };
        let dx = self.backward(g, input_grad);
        Ok(dx.map_or_else(Tensors::new, |dx| Tensors::one(INPUT, dx)))
    }

    fn output_shapes(&self, inputs: &[(String, Vec<usize>)]) -> Option<Result<Shapes>> {
        Some(match inputs {
            [(_, shape)] => self.output_shape(shape).map(|s| vec![(OUTPUT.to_string(), s)]),
            _ => Err(Error::invalid(format!("{} takes one input, got {}", self.describe(), inputs.len()))),
        })
    }

    fn as_layer_mut(&mut self) -> Option<&mut dyn Layer> {
        Some(self)
    }

    fn check_inputs(&self, inputs: &Inputs) -> Result<()> {
        self.check_values(&single(inputs, &self.describe())?.values)
    }

    fn check_training_shapes(&self, inputs: &[(String, Vec<usize>)]) -> Result<()> {
        match inputs {
            [(_, shape)] => self.check_training_shape(shape),
            _ => Err(Error::invalid(format!("{} takes one input, got {}", self.describe(), inputs.len()))),
        }
    }
}

/// The one input of a single-input model.
fn single<'a>(inputs: &'a Inputs, model: &str) -> Result<&'a Input> {
    match inputs.count() {
        1 => inputs.first(),
        n => Err(Error::invalid(format!("{model} takes one input, got {n}"))),
    }
}

/// Implements [`Visit`] for a struct from the names of its fields that hold state (layers,
/// models, or anything else that implements `Visit`): each field's state is visited under
/// `"field.name"`, in the order given, as PyTorch names a module's children.
///
/// List every field that holds state — parameters, buffers, and the generators of dropout
/// layers too: a field left out is not saved, loaded or trained, and its generator is neither
/// reseeded by `fit` nor put back after a refused batch. The macro cannot see a missing field.
///
/// ```
/// use backprop::prelude::*;
/// struct Encoder { embed: Embedding, lstm: Lstm }
/// backprop::visit_fields!(Encoder { embed, lstm });
/// let e = Encoder { embed: Embedding::new(10, 4), lstm: Lstm::new(4, 8) };
/// let names: Vec<String> = backprop::layers::named_params(&e).into_iter().map(|(n, _)| n).collect();
/// assert_eq!(names[..2], ["embed.weight", "lstm.weight_ih_l0"]);
/// ```
#[macro_export]
macro_rules! visit_fields {
    ($ty:ident { $($field:ident),* $(,)? }) => {
        impl $crate::layers::Visit for $ty {
            fn visit<'a>(&'a self, f: &mut dyn FnMut(&str, $crate::layers::State<'a>)) {
                $(
                    $crate::layers::Visit::visit(&self.$field, &mut |name, s| {
                        f(&$crate::layers::child_name(stringify!($field), name), s)
                    });
                )*
            }

            fn visit_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, $crate::layers::StateMut<'a>)) {
                $(
                    $crate::layers::Visit::visit_mut(&mut self.$field, &mut |name, s| {
                        f(&$crate::layers::child_name(stringify!($field), name), s)
                    });
                )*
            }
        }
    };
}
