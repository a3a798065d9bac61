//! Seeded weight initialisers.
//!
//! A layer's starting weights decide whether signals survive the trip through many layers. The
//! classic recipes keep the variance of activations (forward) and gradients (backward) roughly
//! constant from layer to layer:
//!
//! | initialiser | distribution | why |
//! |---|---|---|
//! | He / Kaiming normal | `N(0, 2 / fan_in)` | ReLU zeroes half the signal, so double the variance |
//! | He / Kaiming uniform | `U(−√(6 / fan_in), √(6 / fan_in))` | same variance, bounded |
//! | Glorot / Xavier normal | `N(0, 2 / (fan_in + fan_out))` | balances forward and backward (tanh, sigmoid) |
//! | Glorot / Xavier uniform | `U(−√(6 / (fan_in + fan_out)), +…)` | same variance, bounded |
//! | LeCun uniform | `U(−√(3 / fan_in), √(3 / fan_in))` | variance `1 / fan_in` (SELU, tanh) |
//! | PyTorch's default | `U(−1/√fan_in, 1/√fan_in)` | what `nn.Linear` / `nn.Conv2d` start from |
//!
//! For a weight of shape `[out, in, kh, kw]` (or `[out, in]`), `fan_in = in·kh·kw` and
//! `fan_out = out·kh·kw`.

use super::{Rng, Tensor};

/// How to fill a parameter tensor.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// `N(0, 2 / fan_in)`: the default for layers followed by ReLU.
    HeNormal,
    /// `U(−√(6 / fan_in), √(6 / fan_in))`.
    HeUniform,
    /// `N(0, 2 / (fan_in + fan_out))`.
    GlorotNormal,
    /// `U(−√(6 / (fan_in + fan_out)), √(6 / (fan_in + fan_out)))`.
    GlorotUniform,
    /// `U(−√(3 / fan_in), √(3 / fan_in))`: LeCun's uniform initialiser (variance `1 / fan_in`).
    LeCunUniform,
    /// `U(−1/√fan_in, 1/√fan_in)`: what PyTorch's `nn.Linear` and `nn.Conv2d` draw by default
    /// for their weights (Kaiming-uniform with `a = √5`; variance `1 / (3·fan_in)`), and for their
    /// biases too — but a layer of this crate given it draws its weights so and still starts its
    /// bias at zero (`docs/pytorch.md`, "Initial biases").
    TorchDefault,
    /// `N(mean, std²)`.
    Normal {
        /// Mean.
        mean: f32,
        /// Standard deviation.
        std: f32,
    },
    /// `U(low, high)`.
    Uniform {
        /// Lower bound (inclusive).
        low: f32,
        /// Upper bound (exclusive).
        high: f32,
    },
    /// Every element equal to this value (0 for biases, 1 for a BatchNorm scale).
    Constant(f32),
}

/// `(fan_in, fan_out)` of a weight shape `[out, in, …kernel]`. A 1-D shape `[n]` counts as
/// `fan_in = fan_out = n`.
pub fn fans(shape: &[usize]) -> (usize, usize) {
    match shape {
        [] => (1, 1),
        [n] => (*n, *n),
        // (Saturating: a kernel too large to allocate is refused by the tensor, with its size.)
        [out, inp, kernel @ ..] => {
            let k = kernel.iter().fold(1usize, |k, &d| k.saturating_mul(d));
            (inp.saturating_mul(k), out.saturating_mul(k))
        }
    }
}

impl Init {
    /// A tensor of `shape` drawn from this initialiser, with fans computed from `shape`.
    ///
    /// # Panics
    /// For settings no distribution has: `Normal` with a mean that is not finite or a std that is
    /// negative or not finite, `Uniform` with `low ≥ high` or a bound that is not finite,
    /// `Constant` that is not finite — and for a shape too large to allocate.
    pub fn tensor(&self, shape: &[usize], rng: &mut Rng) -> Tensor {
        let (fan_in, fan_out) = fans(shape);
        self.tensor_with_fans(shape, fan_in, fan_out, rng)
    }

    /// A tensor of `shape` drawn from this initialiser with explicit fans (a bias uses its
    /// layer's weight fans).
    ///
    /// ```
    /// use backprop::tensor::{init::Init, rng};
    /// let w = Init::HeNormal.tensor(&[256, 784], &mut rng(0));
    /// let std = (w.data().iter().map(|x| x * x).sum::<f32>() / w.len() as f32).sqrt();
    /// assert!((std - (2.0f32 / 784.0).sqrt()).abs() < 0.002);
    /// ```
    ///
    /// # Panics
    /// As [`Init::tensor`].
    pub fn tensor_with_fans(&self, shape: &[usize], fan_in: usize, fan_out: usize, rng: &mut Rng) -> Tensor {
        let (fi, fo) = (fan_in.max(1) as f32, fan_out.max(1) as f32);
        let uniform = |b: f32, rng: &mut Rng| {
            if b > 0.0 { Tensor::rand_uniform_with(shape, -b, b, rng) } else { Tensor::zeros(shape) }
        };
        match *self {
            Init::HeNormal => Tensor::randn_with(shape, 0.0, (2.0 / fi).sqrt(), rng),
            Init::HeUniform => uniform((6.0 / fi).sqrt(), rng),
            Init::GlorotNormal => Tensor::randn_with(shape, 0.0, (2.0 / (fi + fo)).sqrt(), rng),
            Init::GlorotUniform => uniform((6.0 / (fi + fo)).sqrt(), rng),
            Init::LeCunUniform => uniform((3.0 / fi).sqrt(), rng),
            Init::TorchDefault => uniform(1.0 / fi.sqrt(), rng),
            Init::Normal { mean, std } => Tensor::randn_with(shape, mean, std, rng),
            Init::Uniform { low, high } => Tensor::rand_uniform_with(shape, low, high, rng),
            Init::Constant(v) => {
                assert!(v.is_finite(), "Init::Constant: the value must be finite, got {v}");
                Tensor::full(shape, v)
            }
        }
    }
}
