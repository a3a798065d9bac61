//! Private training: how much privacy a differentially private training run spends.
//!
//! - [`accountant`]: Rényi differential privacy of the sampled Gaussian mechanism — the mechanism
//!   of DP-SGD — and its conversion to an `(ε, δ)` guarantee, plus the inverse: the noise a run
//!   needs to stay within a budget;
//! - [`dp_sgd`]: training with per-example clipping and calibrated noise ([`fit_private`]).

pub mod accountant;
pub mod dp_sgd;
pub mod per_example;

pub use accountant::{DEFAULT_ORDERS, epsilon, noise_multiplier_for, rdp_sampled_gaussian};
pub use dp_sgd::{DpOptions, DpReport, DpSgd, fit_private};
