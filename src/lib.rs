//! # backprop
//!
//! A neural-network library written from scratch: fast on a CPU, and readable enough to learn
//! backpropagation from.
//!
//! ```
//! use backprop::Tensor;
//! let a = Tensor::from_vec(&[2, 2], vec![1., 2., 3., 4.]).unwrap();
//! let b = Tensor::ones(&[2, 2]);
//! assert_eq!(a.matmul(&b).data(), &[3., 3., 7., 7.]);
//! ```
#![deny(missing_docs)]

pub mod data;
pub mod error;
pub mod gradcheck;
pub mod io;
pub mod layers;
pub mod loss;
pub mod model;
pub mod optim;
pub mod tensor;

pub use error::{Error, Result};
pub use model::Sequential;
pub use tensor::Tensor;

/// The names most programs need: `use backprop::prelude::*;`.
pub mod prelude {
    pub use crate::data::{Dataset, Targets};
    pub use crate::error::{Error, Result};
    pub use crate::layers::{
        AvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d, Dense, Dropout, Flatten, Gelu, GlobalAvgPool,
        Layer, LeakyRelu, MaxPool2d, Mode, Relu, Sigmoid, Softmax, Tanh,
    };
    pub use crate::loss::{BceWithLogitsLoss, CrossEntropyLoss, Loss, MseLoss, Target};
    pub use crate::model::{EarlyStopping, FitOptions, History, Monitor, Sequential};
    pub use crate::optim::{Adam, AdamW, Optimizer, Schedule, Sgd};
    pub use crate::tensor::Tensor;
}

/// The README's code blocks, compiled and run as doctests so the README cannot drift.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
