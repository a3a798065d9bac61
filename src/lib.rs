//! # backprop
//!
//! A neural-network library written from scratch: fast on a CPU, and readable enough to learn
//! backpropagation from. Every layer's backward pass is hand-written code that sits next to its
//! forward pass and its math; nothing is differentiated automatically.
//!
//! ## Quick start: build → fit → evaluate → save → load
//!
//! ```
//! use backprop::prelude::*;
//!
//! # fn main() -> backprop::Result<()> {
//! // A toy task: is the point (x, y) inside the unit circle? 400 seeded random points.
//! let points = Tensor::rand_uniform(&[400, 2], -1.5, 1.5, 7);
//! let labels = points.data().chunks(2).map(|p| usize::from(p[0] * p[0] + p[1] * p[1] < 1.0)).collect();
//! let data = Dataset::classification(points, labels)?;
//! let (train, test) = data.split_stratified(0.75, 42)?; // seeded: 75 % of each class to training
//!
//! // 1. Build: shapes are checked here, with errors naming the layer that does not fit.
//! let mut model = Sequential::builder(&[2])
//!     .add(Dense::new(2, 32).seed(1))
//!     .add(Relu::new())
//!     .add(Dense::new(32, 2).seed(2))
//!     .build()?;
//! println!("{model}"); // a summary table: layers, output shapes, parameter counts
//!
//! // 2. Fit: mini-batches, forward, loss, backward, optimizer step.
//! let loss = CrossEntropyLoss::new();
//! let options = FitOptions::new().epochs(40).batch_size(16).seed(3).validation(&test).verbose(false);
//! let history = model.fit(&train, &loss, &mut Adam::new(0.01), options)?;
//! assert!(history.last().unwrap().train_loss < history.epochs[0].train_loss);
//!
//! // 3. Evaluate on held-out data.
//! let eval = model.evaluate(&test, &loss, 100)?;
//! assert!(eval.accuracy.unwrap() > 0.9, "{eval:?}");
//!
//! // 4. Save (safetensors, PyTorch state_dict names) and load into a fresh model.
//! let path = std::env::temp_dir().join(format!("backprop-quickstart-{}.safetensors", std::process::id()));
//! model.save(&path)?;
//! let mut restored = Sequential::builder(&[2]).add(Dense::new(2, 32)).add(Relu::new()).add(Dense::new(32, 2)).build()?;
//! restored.load(&path)?;
//! assert_eq!(restored.predict(test.inputs(), 100)?, model.predict(test.inputs(), 100)?);
//! # std::fs::remove_file(&path).unwrap();
//! # Ok(()) }
//! ```
//!
//! ## A map of the crate, in reading order
//!
//! Start with [`guide::backprop`] (`docs/backprop.md`), which derives every formula and points at the function that
//! implements it. Then the code, in this order:
//!
//! 1. [`tensor`] — [`Tensor`]: a shape and a `Vec<f32>`. Then [`tensor::gemm`] (every heavy
//!    product is one call to it; transposes are free), [`tensor::im2col`] (convolution as a
//!    matrix product) and [`tensor::math`] (sigmoid, softmax, log-softmax, written once).
//! 2. [`layers`] — the [`Layer`](layers::Layer) contract (four methods), state visited by name
//!    ([`Visit`](layers::Visit)), then one file per layer. Start with [`layers::dense`]: its header derives the
//!    backward pass, and the code uses the same names. Then [`layers::activation`],
//!    [`layers::conv2d`] (read [`layers::conv2d::reference`], the plain loops, before the fast
//!    kernels), [`layers::pool`], [`layers::batchnorm`], [`layers::dropout`].
//! 3. [`layers::sequential`] and [`layers::residual`] — models are layers too: a chain whose
//!    backward is the chain rule walked in reverse, and `y = x + f(x)`. Then
//!    [`layers::recurrent`] (backprop through time; the cells in [`layers::recurrent::rnn`],
//!    [`layers::recurrent::lstm`], [`layers::recurrent::gru`]) and [`layers::embedding`]. Then
//!    attention: [`layers::layernorm`], [`layers::attention`] (the softmax's backward inside),
//!    [`layers::positions`] and [`layers::transformer`] (an encoder block wired from them).
//! 4. [`loss`] — mean squared error, cross-entropy (and why softmax is fused into it), binary
//!    cross-entropy, negative log-likelihood.
//! 5. [`gradcheck`] — checking every backward pass against finite differences.
//! 6. [`optim`] — SGD with momentum, Adam (with its bias correction explained), AdamW, schedules.
//! 7. [`model`] — models beyond a chain: a struct of layers with named inputs and outputs, its
//!    forward and backward written by composing the children's (`examples/seq2seq`: an
//!    encoder–decoder whose decoder hands `dL/dh₀`, `dL/dc₀` back to the encoder).
//! 8. [`train`] — the training loop (forward, loss, backward, step) with pluggable
//!    [steps](train::step), evaluation and prediction, for any model; the same as Keras-style
//!    methods on [`Sequential`].
//! 9. [`data`] and [`io`] — data sets whose batches carry their sequence lengths, loaders;
//!    saving and loading any model's state. [`privacy`] — differentially private training (a
//!    step of the same loop) and its accountant. [`onnx`] — export, layer by layer.
//! 10. [`layers::sequential::plan`] — how a chain runs its layers faster with results that stay
//!     bit-identical, and why only some rewrites qualify.
//!
//! ## The guides
//!
//! The `docs/` folder of the repository, rendered here as [`guide`] (the same text):
//!
//! - [`guide::backprop`] — backpropagation from first principles, each formula pointing at the
//!   function that implements it, with a fully worked numeric example; [`guide::exercises`] for
//!   most chapters.
//! - [`guide::walkthrough`] — the `image_classify` example, step by step.
//! - [`guide::custom_layer`] — writing your own layer, with its gradient check.
//! - [`guide::pytorch`] — moving weights between this crate and PyTorch.
//! - [`guide::onnx`] — handing a model to ONNX Runtime, and the agreement measured.
//! - [`guide::privacy`] — private training: the guarantee, the accountant, the accuracy it costs.
//! - [`guide::knowledge_tracing`] — predicting what a student knows from their answers.
//! - [`guide::reliability`] — what the crate promises on hostile input, and how it is checked.
//! - [`guide::architecture`] — modules, the data flow of a training step, design decisions.
//! - [`guide::benchmarks`] — measured speed, with the commands that produced each figure.
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod alloc_tuning;
pub mod data;
pub mod error;
pub mod gradcheck;
pub mod guide;
pub mod io;
pub mod layers;
pub mod loss;
pub mod metrics;
pub mod model;
pub mod onnx;
pub mod optim;
pub mod privacy;
pub mod tensor;
pub mod train;

pub use error::{Error, Result};
pub use layers::Sequential;
pub use tensor::Tensor;

/// The `ndarray` crate this crate's conversions are written for
/// ([`tensor::ndarray_interop`]): use `backprop::ndarray::Array2` and the conversions always
/// match, whatever version of `ndarray` your own `Cargo.toml` names.
#[cfg(feature = "ndarray")]
#[cfg_attr(docsrs, doc(cfg(feature = "ndarray")))]
pub use ndarray;

/// The names most programs need: `use backprop::prelude::*;`.
pub mod prelude {
    pub use crate::data::{Dataset, Targets};
    pub use crate::error::{Error, Result};
    pub use crate::io::{LoadOptions, LoadReport};
    pub use crate::layers::{
        AvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d, Dense, Dropout, Embedding, Flatten, Gelu, GlobalAvgPool,
        Gru, InputGrad, Layer, LayerNorm, LeakyRelu, LogSoftmax, Lstm, MaxPool2d, Mode, MultiHeadAttention,
        Param, Pass, Relu, Residual, Rnn, Sequential, Sigmoid, Softmax, State, StateMut, Tanh, Visit,
    };
    pub use crate::loss::{BceWithLogitsLoss, CrossEntropyLoss, Loss, MseLoss, NllLoss, Target};
    pub use crate::optim::{Adam, AdamW, Optimizer, Schedule, Sgd};
    pub use crate::tensor::Tensor;
    pub use crate::train::{EarlyStopping, FitOptions, History, Monitor};
}

/// The README's code blocks, compiled and run as doctests so the README cannot drift.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
