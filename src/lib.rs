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

pub mod error;
pub mod gradcheck;
pub mod layers;
pub mod loss;
pub mod optim;
pub mod tensor;

pub use error::{Error, Result};
pub use tensor::Tensor;

/// The README's code blocks, compiled and run as doctests so the README cannot drift.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
