//! Element-wise activations, and softmax.
//!
//! An element-wise activation `y = f(x)` has a diagonal Jacobian, so its backward pass is a
//! product element by element: `dL/dx = g ⊙ f'(x)`. Each layer below caches whichever of `x`
//! or `y` gives `f'` most cheaply:
//!
//! Each is an `(f, f′)` pair ([`Activation`]) behind one generic layer, [`Elementwise`]; a new
//! activation is a few lines (the pair), not a new layer. ReLU has its own layer: it is the most
//! common activation of all, so it caches a byte per element instead of the input, and the
//! execution plan runs it in place.
//!
//! | layer | forward `y = f(x)` | backward `dL/dx` | caches |
//! |---|---|---|---|
//! | [`Relu`] | `max(x, 0)` | `g · [x > 0]` | the mask `[x > 0]`, a byte per element |
//! | [`LeakyRelu`] | `x` if `x > 0`, else `a·x` | `g · (1 if x > 0 else a)` | x |
//! | [`Sigmoid`] | `σ(x) = 1 / (1 + e^(−x))` | `g · y·(1 − y)` | y |
//! | [`Tanh`] | `tanh(x)` | `g · (1 − y²)` | y |
//! | [`Gelu`] | `x·Φ(x)` (exact, erf) or its tanh approximation | `g · (Φ(x) + x·φ(x))` for the exact form (the tanh form's is in [`Gelu`]) | `f′(x)` after a training pass (computed with `f`: [`Activation::FUSED_DERIVATIVE`]), x after a predicting one |
//!
//! (At the kink `x = 0`, ReLU's derivative is taken as 0, as PyTorch does.)
//!
//! [`Softmax`] is not element-wise: each output depends on every input of its row,
//! `y_i = e^(x_i) / Σ_j e^(x_j)`. Its Jacobian is `∂y_i/∂x_j = y_i (δ_ij − y_j)`, which gives
//! `dL/dx_i = y_i · (g_i − Σ_j g_j y_j)`.
//!
//! [`LogSoftmax`] is its logarithm, `y_i = x_i − log Σ_j e^(x_j)`, computed directly (never as
//! `log(softmax(x))`, which is `−∞` once a probability rounds to 0). Its Jacobian is
//! `∂y_i/∂x_j = δ_ij − p_j` with `p = softmax(x) = e^y`, so `dL/dx_j = g_j − p_j · Σ_i g_i`.

use super::{InputGrad, Layer, Pass, Visit, check_grad, check_input, shape_error};
use crate::error::Result;
use crate::onnx::OnnxLayer;
use crate::tensor::Tensor;
use crate::tensor::math::{
    MulAdd, Separate, erf, exp_with, feature_split, log_softmax_into, sigmoid, sigmoid_with, softmax_into,
    tanh_with,
};
use crate::tensor::parallel::split_if_threads;
use rayon::prelude::*;

/// Output shape of an element-wise layer: anything with a batch axis.
fn same_shape(name: &str, input: &[usize]) -> Result<Vec<usize>> {
    if input.is_empty() {
        return Err(shape_error(name, "[N, …] (at least one axis)", input));
    }
    Ok(input.to_vec())
}

/// Runs `f` over matching chunks of two buffers: in parallel for large buffers, on the calling
/// thread for small ones (each element is independent, so the result is the same either way).
fn for_chunks<A: Send, B: Send>(a: &mut [A], b: &mut [B], f: impl Fn((&mut [A], &mut [B])) + Sync + Send) {
    const CHUNK: usize = 1 << 15;
    if a.len() <= CHUNK {
        f((a, b));
    } else {
        a.par_chunks_mut(CHUNK).zip(b.par_chunks_mut(CHUNK)).with_min_len(split_if_threads(1)).for_each(f);
    }
}

/// Runs `f(out, x, y)` over matching chunks of three equal-length buffers: in parallel for large
/// buffers, on the calling thread for small ones. Each element is independent, so the result is
/// the same on any number of threads; large activations (a Transformer's feed-forward layer: 10⁶
/// values, an `erf` each) would otherwise keep one core busy while the other waits.
fn for_chunks3(out: &mut [f32], x: &[f32], y: &[f32], f: impl Fn(&mut [f32], &[f32], &[f32]) + Sync) {
    const CHUNK: usize = 1 << 14;
    if out.len() <= CHUNK {
        f(out, x, y);
    } else {
        let chunks = out.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK).zip(y.par_chunks(CHUNK)));
        chunks.with_min_len(split_if_threads(1)).for_each(|(o, (x, y))| f(o, x, y));
    }
}

// ---------------------------------------------------------------------------------------- ReLU

/// Rectified linear unit: `y = max(x, 0)`, `dL/dx = g · [x > 0]`.
///
/// ```
/// use backprop::layers::{InputGrad, Layer, Pass, Relu};
/// use backprop::Tensor;
/// let mut relu = Relu::new();
/// let y = relu.forward(&Tensor::from_vec(&[1, 3], vec![-1., 0., 2.]).unwrap(), Pass::TRAIN);
/// assert_eq!(y.data(), &[0., 0., 2.]);
/// assert_eq!(relu.backward(&Tensor::ones(&[1, 3]), InputGrad::Needed).unwrap().data(), &[0., 0., 1.]);
/// ```
#[derive(Default)]
pub struct Relu {
    /// `[x > 0]` of the latest input, one byte per element (a quarter of caching `x` itself:
    /// ReLU runs on the largest activations of a network, so its cache traffic matters).
    positive: Vec<u8>,
    shape: Vec<usize>,
    /// True after a [`Mode::Predict`](super::Mode::Predict) forward pass, which keeps no mask.
    predicted: bool,
}

impl Relu {
    /// A ReLU layer.
    pub fn new() -> Relu {
        Relu::default()
    }
}

impl Relu {
    /// [`Layer::forward`] on a tensor the caller gives away: the output overwrites the input's
    /// memory instead of a new allocation. The [execution plan](crate::layers::sequential::plan) uses it for
    /// activations a model owns; the arithmetic is the same.
    ///
    /// # Panics
    /// As [`Layer::forward`].
    pub fn forward_in_place(&mut self, mut x: Tensor) -> Tensor {
        same_shape("ReLU", x.shape()).unwrap_or_else(|e| panic!("{e}"));
        self.predicted = false;
        self.shape.clear();
        self.shape.extend_from_slice(x.shape());
        self.positive.resize(x.len(), 0);
        let relu = |(xs, pos): (&mut [f32], &mut [u8])| {
            for (v, p) in xs.iter_mut().zip(pos) {
                *p = u8::from(*v > 0.0 || v.is_nan()); // [x > 0] (NaN counts as positive, as in PyTorch), for backward
                *v = if *v <= 0.0 { 0.0 } else { *v }; // y = max(x, 0), NaN stays NaN
            }
        };
        for_chunks(x.data_mut(), &mut self.positive, relu);
        x
    }

    /// The ReLU's output `y` for a [`Mode::Predict`](super::Mode::Predict) pass that the caller
    /// computed itself (the execution plan's convolution + pooling applies it while it pools):
    /// the layer's state as [`Relu::forward_owned`] would leave it, and `y` back.
    ///
    /// # Panics
    /// As [`Layer::forward`].
    pub(crate) fn applied_by_caller(&mut self, y: Tensor) -> Tensor {
        same_shape("ReLU", y.shape()).unwrap_or_else(|e| panic!("{e}"));
        self.predicted = true;
        y
    }

    /// [`Relu::forward_in_place`] for a pass of any mode: in [`Mode::Predict`](super::Mode::Predict)
    /// no mask is kept for backward (one stream of bytes fewer through memory), and a backward
    /// pass afterwards refuses.
    pub(crate) fn forward_owned(&mut self, mut x: Tensor, pass: Pass<'_>) -> Tensor {
        if pass.keeps_for_backward() {
            return self.forward_in_place(x);
        }
        same_shape("ReLU", x.shape()).unwrap_or_else(|e| panic!("{e}"));
        self.predicted = true;
        crate::tensor::parallel::for_row_blocks(x.data_mut(), 1, |_, xs| {
            xs.iter_mut().for_each(|v| *v = if *v <= 0.0 { 0.0 } else { *v }); // y = max(x, 0), NaN stays NaN
        });
        x
    }

    /// [`Layer::backward`] on a gradient the caller gives away, overwritten by `dL/dx`.
    ///
    /// # Panics
    /// As [`Layer::backward`]; also after a [`Mode::Predict`](super::Mode::Predict) forward pass.
    pub fn backward_in_place(&mut self, mut g: Tensor) -> Tensor {
        assert!(
            !self.predicted,
            "ReLU: backward after a Mode::Predict forward pass, which keeps nothing for backward (run the \
             forward pass in Mode::Train or Mode::Eval)"
        );
        check_grad("ReLU", &self.shape, &g);
        for_chunks(g.data_mut(), &mut self.positive, |(gs, pos)| {
            gs.iter_mut().zip(pos.iter()).for_each(|(d, &p)| *d = if p == 0 { 0.0 } else { *d }); // g · [x > 0]
        });
        g
    }
}

impl Layer for Relu {
    fn describe(&self) -> String {
        "ReLU".into()
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        same_shape("ReLU", input)
    }

    fn forward(&mut self, x: &Tensor, pass: Pass<'_>) -> Tensor {
        self.forward_owned(x.clone(), pass)
    }

    fn backward(&mut self, g: &Tensor, _: InputGrad) -> Option<Tensor> {
        Some(self.backward_in_place(g.clone()))
    }

    fn onnx(&self) -> Option<&dyn OnnxLayer> {
        Some(self)
    }
}

impl Visit for Relu {}

// ------------------------------------------------- the element-wise activations: (f, f′) pairs

/// An element-wise activation, defined by its function and its derivative — the whole of it:
/// [`Elementwise`] turns any such pair into a layer (`y = f(x)`, `dL/dx = g ⊙ f′`).
///
/// `f′` is written in terms of whichever of `x` or `y` gives it most cheaply
/// ([`Activation::DERIVATIVE_FROM`]): the sigmoid's is `y(1 − y)`, GELU's needs `x`. The layer
/// caches that one.
///
/// ```
/// use backprop::layers::activation::{Activation, Cached, Elementwise};
/// use backprop::layers::{InputGrad, Layer, Pass};
/// use backprop::Tensor;
/// /// Softplus: f(x) = ln(1 + eˣ), f′(x) = σ(x).
/// struct Softplus;
/// impl Activation for Softplus {
///     const DERIVATIVE_FROM: Cached = Cached::Input;
///     fn name(&self) -> String { "Softplus".into() }
///     fn f(&self, x: f32) -> f32 { x.exp().ln_1p() }
///     fn df(&self, x: f32) -> f32 { 1.0 / (1.0 + (-x).exp()) }
/// }
/// let mut layer = Elementwise::from(Softplus);
/// layer.forward(&Tensor::zeros(&[1, 2]), Pass::TRAIN);
/// let dx = layer.backward(&Tensor::ones(&[1, 2]), InputGrad::Needed).unwrap();
/// assert_eq!(dx.data(), &[0.5, 0.5]); // σ(0)
/// ```
pub trait Activation: Send + Sync + 'static {
    /// Which value `df` takes.
    const DERIVATIVE_FROM: Cached;
    /// For summaries and errors: `"Sigmoid"`.
    fn name(&self) -> String;
    /// `y = f(x)`.
    fn f(&self, x: f32) -> f32;
    /// `f′`, from the input `x` or the output `y` as [`Activation::DERIVATIVE_FROM`] says.
    fn df(&self, v: f32) -> f32;

    /// `out[i] = f(x[i])` over a chunk of a tensor. The default is that loop; an activation whose
    /// `f` holds a setting-dependent branch overrides it to branch once, outside the loop, so that
    /// the compiler can vectorise each arm ([`GeluFn`] does). An override gives `f`'s values to
    /// within a few ulps, the same bits on any number of threads (GELU's loops fuse their
    /// multiply-adds on CPUs with FMA, where `f` does not).
    fn f_slice(&self, x: &[f32], out: &mut [f32]) {
        out.iter_mut().zip(x).for_each(|(o, &v)| *o = self.f(v));
    }

    /// `out[i] = g[i] · f′(v[i])` over a chunk (`v` as [`Activation::DERIVATIVE_FROM`] says); the
    /// default is that loop, overridden as [`Activation::f_slice`].
    fn backward_slice(&self, g: &[f32], v: &[f32], out: &mut [f32]) {
        out.iter_mut().zip(g.iter().zip(v)).for_each(|(o, (&g, &v))| *o = g * self.df(v));
    }

    /// [`Activation::backward_slice`] written over `g` itself: `g[i] ← g[i] · f′(v[i])` (the same
    /// values). The default is that loop, overridden as [`Activation::f_slice`].
    fn backward_slice_in_place(&self, g: &mut [f32], v: &[f32]) {
        g.iter_mut().zip(v).for_each(|(g, &v)| *g *= self.df(v));
    }

    /// True if a training forward pass should compute `f′(x)` along with `f(x)` and keep it
    /// instead of `x` ([`Activation::f_and_df_slice`]), so that backward is one multiplication per
    /// value: worth it where `f` and `f′` share their expensive part (GELU's `erf` and `e^(−x²/2)`)
    /// and `f′` costs as much again. Only for [`Cached::Input`] activations. Default: false.
    const FUSED_DERIVATIVE: bool = false;

    /// `y[i] = f(x[i])` and `x[i] ← f′(x[i])` over a chunk (`f′` from the input, so
    /// [`Cached::Input`]): the forward pass of an activation with [`Activation::FUSED_DERIVATIVE`].
    /// The default is that loop; an override gives the bits of [`Activation::f_slice`] and
    /// [`Activation::backward_slice`] (with `g = 1`) on the same CPU.
    fn f_and_df_slice(&self, x: &mut [f32], y: &mut [f32]) {
        y.iter_mut().zip(x.iter_mut()).for_each(|(y, x)| (*y, *x) = (self.f(*x), self.df(*x)));
    }
}

/// Which value an activation's derivative is computed from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cached {
    /// The input `x` (cached by the forward pass).
    Input,
    /// The output `y` (cached by the forward pass).
    Output,
}

/// An element-wise activation layer: `y = f(x)`, and backward `dL/dx = g ⊙ f′` (the Jacobian is
/// diagonal: each output depends on its own input only). The forward pass caches `x` or `y`,
/// whichever `f′` is written in.
pub struct Elementwise<A: Activation> {
    act: A,
    /// `x` or `y` of the latest forward pass, or `f′(x)` when `derivative_cached`.
    cache: Tensor,
    /// True when the latest forward pass kept `f′(x)` itself ([`Activation::FUSED_DERIVATIVE`]).
    derivative_cached: bool,
}

impl<A: Activation> From<A> for Elementwise<A> {
    fn from(act: A) -> Elementwise<A> {
        Elementwise { act, cache: Tensor::default(), derivative_cached: false }
    }
}

impl<A: Activation> Elementwise<A> {
    /// The activation's (f, f′) pair.
    pub fn activation(&self) -> &A {
        &self.act
    }

    /// [`Layer::forward`] on an input the caller gives up. For an activation whose derivative
    /// reads the input (GELU, Leaky ReLU, …), the input becomes the cache as it is, and the output
    /// is written into the previous cache's buffer: once shapes repeat, no allocation, no
    /// zero-fill and no copy (a Transformer block's feed-forward activation: 10⁶ values a step).
    /// The same values as `forward`.
    ///
    /// # Panics
    /// As [`Layer::forward`].
    pub(crate) fn forward_owned(&mut self, x: Tensor, pass: Pass<'_>) -> Tensor {
        if A::DERIVATIVE_FROM != Cached::Input {
            return self.forward(&x, pass);
        }
        same_shape(&self.act.name(), x.shape()).unwrap_or_else(|e| panic!("{e}"));
        let mut x = x;
        let mut y = std::mem::take(&mut self.cache);
        y.resize_for_overwrite(x.shape()); // every value is written below
        let act = &self.act;
        self.derivative_cached = A::FUSED_DERIVATIVE && pass.keeps_for_backward();
        if self.derivative_cached {
            // y = f(x) and x ← f′(x): the input's buffer becomes the derivative backward reads.
            for_chunks(x.data_mut(), y.data_mut(), |(x, y)| act.f_and_df_slice(x, y));
        } else {
            for_chunks3(y.data_mut(), x.data(), x.data(), |y, x, _| act.f_slice(x, y)); // y = f(x)
        }
        self.cache = x;
        y
    }
}

impl<A: Activation> Elementwise<A> {
    /// [`Layer::backward`] on a gradient the caller gives up: `dL/dx = g ⊙ f′` written over `g`
    /// (a Transformer block's feed-forward activation: no new buffer of 10⁶ values, and one
    /// stream fewer through memory). The same values as `backward`.
    ///
    /// # Panics
    /// As [`Layer::backward`].
    pub(crate) fn backward_owned(&mut self, mut g: Tensor) -> Tensor {
        check_grad(&self.act.name(), self.cache.shape(), &g);
        let (act, v, derivative) = (&self.act, self.cache.data(), self.derivative_cached);
        crate::tensor::parallel::for_row_blocks(g.data_mut(), 1, |first, g| {
            let v = &v[first..][..g.len()];
            if derivative {
                crate::tensor::simd::wide!(multiply_in_place(g, v)); // g ← g ⊙ f′, f′ kept
            } else {
                act.backward_slice_in_place(g, v); // g ← g ⊙ f′
            }
        });
        g
    }
}

impl<A: Activation> Layer for Elementwise<A> {
    fn describe(&self) -> String {
        self.act.name()
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        same_shape(&self.act.name(), input)
    }

    fn forward(&mut self, x: &Tensor, pass: Pass<'_>) -> Tensor {
        same_shape(&self.act.name(), x.shape()).unwrap_or_else(|e| panic!("{e}"));
        let mut y = Tensor::zeros(x.shape());
        let act = &self.act;
        self.derivative_cached = A::FUSED_DERIVATIVE && pass.keeps_for_backward();
        if self.derivative_cached {
            self.cache.copy_from(x);
            // y = f(x), and the cached copy of x ← f′(x)
            for_chunks(self.cache.data_mut(), y.data_mut(), |(x, y)| act.f_and_df_slice(x, y));
        } else {
            for_chunks3(y.data_mut(), x.data(), x.data(), |y, x, _| act.f_slice(x, y)); // y = f(x)
            self.cache.copy_from(if A::DERIVATIVE_FROM == Cached::Output { &y } else { x });
        }
        y
    }

    fn backward(&mut self, g: &Tensor, _: InputGrad) -> Option<Tensor> {
        check_grad(&self.act.name(), self.cache.shape(), g);
        let (act, g, v, derivative) = (&self.act, g.data(), self.cache.data(), self.derivative_cached);
        // dL/dx = g ⊙ f′, written block by block in parallel (each element on its own)
        let dx = Tensor::from_row_blocks(self.cache.shape(), 1, |first, dx| {
            let (g, v) = (&g[first..][..dx.len()], &v[first..][..dx.len()]);
            if derivative {
                dx.copy_from_slice(g);
                crate::tensor::simd::wide!(multiply_in_place(dx, v)); // f′ kept by forward
            } else {
                act.backward_slice(g, v, dx);
            }
        });
        Some(dx)
    }

    fn onnx(&self) -> Option<&dyn OnnxLayer> {
        crate::onnx::activation_export(self)
    }
}

impl<A: Activation> Visit for Elementwise<A> {}

/// Leaky ReLU's pair: `f(x) = x` for `x > 0`, `a·x` otherwise; `f′ = 1` or `a`.
#[derive(Clone, Copy, Debug)]
pub struct LeakyReluFn {
    /// The negative slope `a`.
    pub slope: f32,
}

impl Activation for LeakyReluFn {
    const DERIVATIVE_FROM: Cached = Cached::Input;
    fn name(&self) -> String {
        format!("LeakyReLU({})", self.slope)
    }
    fn f(&self, x: f32) -> f32 {
        if x > 0.0 { x } else { self.slope * x }
    }
    fn df(&self, x: f32) -> f32 {
        if x > 0.0 { 1.0 } else { self.slope }
    }
}

/// Leaky ReLU: `y = x` for `x > 0`, `a·x` otherwise; `dL/dx = g · (1 or a)`.
/// [`LeakyRelu::default`] has PyTorch's slope, 0.01.
pub type LeakyRelu = Elementwise<LeakyReluFn>;

impl LeakyRelu {
    /// A leaky ReLU with negative slope `slope` (PyTorch's default is 0.01).
    ///
    /// # Panics
    /// If `slope` is not finite (every negative input would give NaN or ±∞).
    pub fn new(slope: f32) -> LeakyRelu {
        assert!(slope.is_finite(), "LeakyRelu: the slope must be finite, got {slope}");
        Elementwise::from(LeakyReluFn { slope })
    }

    /// The negative slope.
    pub fn slope(&self) -> f32 {
        self.act.slope
    }
}

impl Default for LeakyRelu {
    fn default() -> LeakyRelu {
        LeakyRelu::new(0.01)
    }
}

/// The sigmoid's pair: `f(x) = σ(x) = 1 / (1 + e^(−x))`, `f′ = y(1 − y)`.
#[derive(Clone, Copy, Debug, Default)]
pub struct SigmoidFn;

impl Activation for SigmoidFn {
    const DERIVATIVE_FROM: Cached = Cached::Output;
    fn name(&self) -> String {
        "Sigmoid".into()
    }
    fn f(&self, x: f32) -> f32 {
        sigmoid(x)
    }
    fn df(&self, y: f32) -> f32 {
        y * (1.0 - y)
    }

    /// The loop compiled for the widest vectors through [`exp_fast`](crate::tensor::math::exp_fast)'s polynomial
    /// (`sigmoid_with`), as the recurrent gates compute σ: within a few ulps of `f` (whose
    /// library `exp` kept the loop to one value at a time, about 7 ns each on the AMD EPYC of
    /// docs/benchmarks.md). Below x = −88.3, where `f` gives e^x (denormal, then 0), it gives
    /// 4.6·10⁻³⁹.
    fn f_slice(&self, x: &[f32], out: &mut [f32]) {
        crate::tensor::simd::wide_fused!(sigmoid_loop(x, out));
    }
}

/// `out = σ(x)`, the loop [`SigmoidFn::f_slice`] compiles for the widest vectors.
#[allow(clippy::needless_range_loop)] // index loops on purpose: see `gelu_loop`
#[inline(always)]
fn sigmoid_loop<M: MulAdd>(x: &[f32], out: &mut [f32]) {
    let n = out.len();
    let x = &x[..n];
    for i in 0..n {
        out[i] = sigmoid_with::<M>(x[i]);
    }
}

/// The logistic sigmoid, `y = 1 / (1 + e^(−x))`; `dL/dx = g · y(1 − y)`.
pub type Sigmoid = Elementwise<SigmoidFn>;

impl Sigmoid {
    /// A sigmoid layer.
    pub fn new() -> Sigmoid {
        Elementwise::from(SigmoidFn)
    }
}

impl Default for Sigmoid {
    fn default() -> Sigmoid {
        Sigmoid::new()
    }
}

/// tanh's pair: `f(x) = tanh(x)`, `f′ = 1 − y²`.
#[derive(Clone, Copy, Debug, Default)]
pub struct TanhFn;

impl Activation for TanhFn {
    const DERIVATIVE_FROM: Cached = Cached::Output;
    fn name(&self) -> String {
        "Tanh".into()
    }
    fn f(&self, x: f32) -> f32 {
        x.tanh()
    }
    fn df(&self, y: f32) -> f32 {
        1.0 - y * y
    }

    /// The loop compiled for the widest vectors through `e^(2x) − 1` by
    /// [`exp_fast`](crate::tensor::math::exp_fast)'s polynomial (`tanh_with`), as the recurrent cells compute tanh: within 3·10⁻⁷ of `f`
    /// (whose library `tanh` ran one value at a time, about 19 ns each on the AMD EPYC of
    /// docs/benchmarks.md), exactly ±1 far out.
    fn f_slice(&self, x: &[f32], out: &mut [f32]) {
        crate::tensor::simd::wide_fused!(tanh_loop(x, out));
    }
}

/// `out = tanh(x)`, the loop [`TanhFn::f_slice`] compiles for the widest vectors.
#[allow(clippy::needless_range_loop)] // index loops on purpose: see `gelu_loop`
#[inline(always)]
fn tanh_loop<M: MulAdd>(x: &[f32], out: &mut [f32]) {
    let n = out.len();
    let x = &x[..n];
    for i in 0..n {
        out[i] = tanh_with::<M>(x[i]);
    }
}

/// Hyperbolic tangent, `y = tanh(x)`; `dL/dx = g · (1 − y²)`.
pub type Tanh = Elementwise<TanhFn>;

impl Tanh {
    /// A tanh layer.
    pub fn new() -> Tanh {
        Elementwise::from(TanhFn)
    }
}

impl Default for Tanh {
    fn default() -> Tanh {
        Tanh::new()
    }
}

const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;
const GELU_CUBIC: f64 = 0.044_715;

/// GELU's pair, `f(x) = x·Φ(x)` where `Φ` is the standard normal CDF, in f64 inside:
///
/// - exact (`tanh_approximation: false`): `Φ(x) = ½(1 + erf(x/√2))`, PyTorch's `nn.GELU()`;
///   `f′(x) = Φ(x) + x·φ(x)` with `φ(x) = e^(−x²/2)/√(2π)`;
/// - the tanh approximation `½x(1 + tanh(u))`, `u = √(2/π)(x + 0.044715x³)`, PyTorch's
///   `nn.GELU(approximate="tanh")`; `f′(x) = ½(1 + tanh u) + ½x(1 − tanh²u)·√(2/π)(1 + 3·0.044715x²)`.
///
/// The exact form's slice loops (what the layer runs) compute in f32 as [`gelu_fast`] and
/// [`gelu_derivative_fast`] do, their multiply-adds fused on CPUs with FMA (`wide_fused!`): within
/// 4·10⁻⁷·(1 + |y|) of those functions' bits, which the baseline compilation gives exactly.
#[derive(Clone, Copy, Debug, Default)]
pub struct GeluFn {
    /// The tanh approximation instead of the exact form.
    pub tanh_approximation: bool,
}

impl Activation for GeluFn {
    const DERIVATIVE_FROM: Cached = Cached::Input;
    fn name(&self) -> String {
        if self.tanh_approximation { "GELU(tanh)".into() } else { "GELU".into() }
    }
    fn f(&self, x: f32) -> f32 {
        let x = x as f64;
        if self.tanh_approximation {
            let u = SQRT_2_OVER_PI * (x + GELU_CUBIC * x * x * x);
            (0.5 * x * (1.0 + u.tanh())) as f32
        } else {
            gelu_fast(x as f32)
        }
    }
    fn df(&self, x: f32) -> f32 {
        let x = x as f64;
        if self.tanh_approximation {
            let t = (SQRT_2_OVER_PI * (x + GELU_CUBIC * x * x * x)).tanh();
            let du = SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_CUBIC * x * x);
            (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du) as f32
        } else {
            gelu_derivative_fast(x as f32)
        }
    }

    /// One branch per chunk: the exact form's loop then vectorises (the tanh form calls f64 `tanh`).
    fn f_slice(&self, x: &[f32], out: &mut [f32]) {
        if self.tanh_approximation {
            out.iter_mut().zip(x).for_each(|(o, &v)| *o = self.f(v));
        } else {
            crate::tensor::simd::wide_fused!(gelu_loop(x, out)); // 16 wide with AVX-512, FMA
        }
    }

    fn backward_slice(&self, g: &[f32], v: &[f32], out: &mut [f32]) {
        if self.tanh_approximation {
            out.iter_mut().zip(g.iter().zip(v)).for_each(|(o, (&g, &v))| *o = g * self.df(v));
        } else {
            crate::tensor::simd::wide_fused!(gelu_backward_loop(g, v, out));
        }
    }

    fn backward_slice_in_place(&self, g: &mut [f32], v: &[f32]) {
        if self.tanh_approximation {
            g.iter_mut().zip(v).for_each(|(g, &v)| *g *= self.df(v));
        } else {
            crate::tensor::simd::wide_fused!(gelu_backward_in_place_loop(g, v));
        }
    }

    /// `f′` costs as much as `f` again and shares its `erf` and `e^(−x²/2)`: computed in the
    /// forward pass, it makes backward a multiplication.
    const FUSED_DERIVATIVE: bool = true;

    fn f_and_df_slice(&self, x: &mut [f32], y: &mut [f32]) {
        if self.tanh_approximation {
            y.iter_mut().zip(x.iter_mut()).for_each(|(y, x)| (*y, *x) = (self.f(*x), self.df(*x)));
        } else {
            crate::tensor::simd::wide_fused!(gelu_and_derivative_loop(x, y));
        }
    }
}

/// `y = gelu(x)` and `x ← gelu′(x)`, the loop [`GeluFn::f_and_df_slice`] compiles for the widest
/// vectors: [`gelu_fast`]'s and [`gelu_derivative_fast`]'s values (their bits with [`Separate`]
/// multiply-adds), their shared part computed once.
#[allow(clippy::needless_range_loop)] // index loops on purpose: see `gelu_loop`
#[inline(always)]
fn gelu_and_derivative_loop<M: MulAdd>(x: &mut [f32], y: &mut [f32]) {
    // In two passes over blocks of 256 values (the first half's `e` parked in `y`, `t` on the
    // stack): each value's operations are a chain of ~60 dependent vector operations whole, more
    // than the out-of-order core can overlap across iterations (`perf annotate`: latency-bound),
    // and two chains of half the length overlap twice as many values. The same operations on
    // every value: the same bits.
    const BLOCK: usize = 256;
    let n = y.len();
    let x = &mut x[..n];
    let mut t = [0.0f32; BLOCK];
    for (x, y) in x.chunks_mut(BLOCK).zip(y.chunks_mut(BLOCK)) {
        let m = y.len();
        let (x, t) = (&mut x[..m], &mut t[..m]);
        for i in 0..m {
            (y[i], t[i]) = gelu_first_half::<M>(x[i]);
        }
        for i in 0..m {
            (y[i], x[i]) = gelu_second_half::<M>(x[i], y[i], t[i]);
        }
    }
}

/// `g ← g ⊙ d`: backward through an activation whose forward pass kept `d = f′(x)`.
#[allow(clippy::needless_range_loop)] // index loops on purpose: see `gelu_loop`
#[inline(always)]
fn multiply_in_place(g: &mut [f32], d: &[f32]) {
    let n = g.len();
    let d = &d[..n];
    for i in 0..n {
        g[i] *= d[i];
    }
}

/// `out = gelu(x)`, the loop [`GeluFn::f_slice`] compiles for the widest vectors.
#[allow(clippy::needless_range_loop)] // index loops on purpose: see the comment inside
#[inline(always)]
fn gelu_loop<M: MulAdd>(x: &[f32], out: &mut [f32]) {
    // An index loop, not iterator adapters: `Zip::fold` is a function of its own that the compiler
    // kept outside the wide-vector context (4 lanes instead of 16); this loop stays inside it.
    let n = out.len();
    let x = &x[..n];
    for i in 0..n {
        out[i] = gelu_and_derivative_with::<M>(x[i]).0;
    }
}

/// `out = g ⊙ gelu′(v)`, the loop [`GeluFn::backward_slice`] compiles for the widest vectors.
#[allow(clippy::needless_range_loop)] // index loops on purpose: see the comment inside
#[inline(always)]
fn gelu_backward_loop<M: MulAdd>(g: &[f32], v: &[f32], out: &mut [f32]) {
    let n = out.len(); // an index loop, as in `gelu_loop`
    let (g, v) = (&g[..n], &v[..n]);
    for i in 0..n {
        out[i] = g[i] * gelu_and_derivative_with::<M>(v[i]).1;
    }
}

/// `g ← g ⊙ gelu′(v)`, the loop [`GeluFn::backward_slice_in_place`] compiles for the widest vectors.
#[allow(clippy::needless_range_loop)] // index loops on purpose: see `gelu_loop`
#[inline(always)]
fn gelu_backward_in_place_loop<M: MulAdd>(g: &mut [f32], v: &[f32]) {
    let n = g.len();
    let v = &v[..n];
    for i in 0..n {
        g[i] *= gelu_and_derivative_with::<M>(v[i]).1;
    }
}

/// Exact GELU, the definition: `x·Φ(x)` with `Φ(x) = ½(1 + erf(x/√2))`, in f64
/// ([`erf`]: Abramowitz & Stegun 7.1.26, 1.5·10⁻⁷).
pub fn gelu_reference(x: f32) -> f32 {
    let x = x as f64;
    (0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2))) as f32
}

/// Exact GELU's derivative, the definition: `Φ(x) + x·φ(x)`, `φ(x) = e^(−x²/2)/√(2π)`, in f64.
pub fn gelu_derivative_reference(x: f32) -> f32 {
    let x = x as f64;
    let cdf = 0.5 * (1.0 + erf(x / std::f64::consts::SQRT_2));
    let pdf = (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
    (cdf + x * pdf) as f32
}

/// [`gelu_reference`] in f32; within 4·10⁻⁷·max(1, |x|) of it (tested).
#[inline(always)]
pub fn gelu_fast(x: f32) -> f32 {
    gelu_and_derivative_fast(x).0 // (the derivative's own operations are dropped when inlined)
}

/// [`gelu_derivative_reference`] in f32; within 4·10⁻⁷·max(1, |x|) of it (tested).
#[inline(always)]
pub fn gelu_derivative_fast(x: f32) -> f32 {
    gelu_and_derivative_fast(x).1
}

/// `(gelu(x), gelu′(x))` in f32 arithmetic with [`exp_fast`](crate::tensor::math::exp_fast) — no library call and no branch, so
/// a loop over a tensor vectorises (an f64 version called `exp` once per element and kept a
/// Transformer's feed-forward layer busy for a fifth of its training step). The erf is
/// Abramowitz & Stegun 7.1.26 at `u = |x|/√2`, whose `e^(−u²) = e^(−x²/2)` is also `φ(x)`'s
/// exponential: computed once for both.
#[inline(always)]
pub fn gelu_and_derivative_fast(x: f32) -> (f32, f32) {
    gelu_and_derivative_with::<Separate>(x)
}

/// [`gelu_and_derivative_fast`] with its multiply-adds evaluated by `M` (fused in the loops that
/// `wide_fused!` compiles for CPUs with FMA).
#[inline(always)]
fn gelu_and_derivative_with<M: MulAdd>(x: f32) -> (f32, f32) {
    let (e, t) = gelu_first_half::<M>(x);
    gelu_second_half::<M>(x, e, t)
}

/// [`gelu_and_derivative_fast`]'s first half: `e = e^(−x²/2)` and A&S's `t = 1/(1 + p·|x|/√2)`.
#[inline(always)]
fn gelu_first_half<M: MulAdd>(x: f32) -> (f32, f32) {
    let u = x.abs() * std::f32::consts::FRAC_1_SQRT_2;
    // e^(−x²/2), 0 where it is below f32's normal range (|x| > 13.2): `exp_with` clamps there,
    // at 1.2·10⁻³⁸, which x·φ(x) had multiplied back up — a derivative of 1.47 at x = 10³⁸.
    let e = if u * u < -crate::tensor::math::EXP_SMALLEST_NORMAL_ARG { exp_with::<M>(-u * u) } else { 0.0 };
    let t = 1.0 / M::mul_add(0.327_591_1, u, 1.0); // 1/(1 + p·u)
    (e, t)
}

/// [`gelu_and_derivative_fast`]'s second half, from `x` and the first half's `e`, `t`.
#[inline(always)]
fn gelu_second_half<M: MulAdd>(x: f32, e: f32, t: f32) -> (f32, f32) {
    const INV_SQRT_2PI: f32 = 0.398_942_3;
    // t·(a₁ + t·(a₂ + t·(a₃ + t·(a₄ + t·a₅)))), Horner's form, inside out
    let mut p = M::mul_add(t, 1.061_405_4, -1.453_152_1);
    p = M::mul_add(t, p, 1.421_413_8);
    p = M::mul_add(t, p, -0.284_496_74);
    let poly = t * M::mul_add(t, p, 0.254_829_6);
    let erf = M::mul_add(-poly, e, 1.0).copysign(x); // erf(x/√2) = 1 − poly·e
    let gelu = 0.5 * x * (1.0 + erf); // x·Φ(x)
    let derivative = M::mul_add(x * e, INV_SQRT_2PI, 0.5 * (1.0 + erf)); // Φ(x) + x·φ(x)
    (gelu, derivative)
}

/// Gaussian error linear unit, `y = x·Φ(x)`: [`Gelu::new`] exact (erf), [`Gelu::tanh`] the
/// tanh approximation; the math is on [`GeluFn`].
pub type Gelu = Elementwise<GeluFn>;

impl Gelu {
    /// Exact GELU (erf), as PyTorch's default.
    pub fn new() -> Gelu {
        Elementwise::from(GeluFn { tanh_approximation: false })
    }

    /// The tanh approximation of GELU.
    pub fn tanh() -> Gelu {
        Elementwise::from(GeluFn { tanh_approximation: true })
    }

    /// True for the tanh approximation, false for the exact (erf) form.
    pub fn is_tanh_approximation(&self) -> bool {
        self.act.tanh_approximation
    }
}

impl Default for Gelu {
    fn default() -> Gelu {
        Gelu::new()
    }
}

// ------------------------------------------------------------------------------------- Softmax

/// Softmax over the feature axis (axis 1, like PyTorch's `nn.Softmax(dim=1)`), or over the last
/// axis ([`Softmax::last_axis`], `dim=-1`: the classes of a sequence's `[N, T, C]` outputs):
/// `y_i = e^(x_i − m) / Σ_j e^(x_j − m)` with `m = max_j x_j` (subtracting the max changes nothing
/// mathematically and keeps `e^…` from overflowing). Backward: `dL/dx_i = y_i (g_i − Σ_j g_j y_j)`.
///
/// For classification, prefer feeding raw logits to [`CrossEntropyLoss`](crate::loss::CrossEntropyLoss),
/// which fuses softmax and log for accuracy; this layer is for when the probabilities themselves are
/// needed inside a network.
#[derive(Default)]
pub struct Softmax {
    y: Tensor,
    last_axis: bool,
}

impl Softmax {
    /// A softmax layer over axis 1.
    pub fn new() -> Softmax {
        Softmax::default()
    }

    /// A softmax layer over the last axis (PyTorch's `nn.Softmax(dim=-1)`); the same as
    /// [`Softmax::new`] for `[N, C]`.
    pub fn last_axis() -> Softmax {
        Softmax { last_axis: true, ..Softmax::default() }
    }

    /// True if the layer normalises the last axis, false for axis 1.
    pub fn is_last_axis(&self) -> bool {
        self.last_axis
    }
}

/// `(outer, features, inner)` of `shape` for a softmax over axis 1, or over the last axis.
fn softmax_split(shape: &[usize], last_axis: bool) -> (usize, usize, usize) {
    match shape.last() {
        Some(&c) if last_axis && c > 0 => (shape.iter().product::<usize>() / c, c, 1),
        _ => feature_split(shape),
    }
}

/// The output shape of softmax and log-softmax: a feature axis after the batch axis.
fn feature_shape(name: &str, input: &[usize]) -> Result<Vec<usize>> {
    if input.len() < 2 {
        return Err(shape_error(name, "[N, features, …]", input));
    }
    Ok(input.to_vec())
}

impl Layer for Softmax {
    fn describe(&self) -> String {
        if self.last_axis { "Softmax(last axis)".into() } else { "Softmax".into() }
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        feature_shape("Softmax", input)
    }

    fn forward(&mut self, x: &Tensor, _pass: Pass<'_>) -> Tensor {
        check_input(self, x);
        self.y.resize_for_overwrite(x.shape());
        softmax_into(x.data(), softmax_split(x.shape(), self.last_axis), self.y.data_mut()); // y = softmax(x)
        self.y.clone()
    }

    fn backward(&mut self, g: &Tensor, _: InputGrad) -> Option<Tensor> {
        check_grad("Softmax", self.y.shape(), g);
        let (n, f, inner) = softmax_split(self.y.shape(), self.last_axis);
        let (y, gd) = (self.y.data(), g.data());
        let mut dx = Tensor::zeros(self.y.shape());
        for b in 0..n {
            for i in 0..inner {
                let at = |k: usize| (b * f + k) * inner + i;
                // Σ_j g_j y_j in f64, as the forward pass's normaliser (an f32 running sum over
                // thousands of classes drifts past f32 rounding)
                let dot: f64 = (0..f).map(|k| gd[at(k)] as f64 * y[at(k)] as f64).sum();
                (0..f)
                    .for_each(|k| dx.data_mut()[at(k)] = (y[at(k)] as f64 * (gd[at(k)] as f64 - dot)) as f32); // y_i (g_i − Σ g_j y_j)
            }
        }
        Some(dx)
    }

    fn onnx(&self) -> Option<&dyn OnnxLayer> {
        Some(self)
    }
}

impl Visit for Softmax {}

// ---------------------------------------------------------------------------------- LogSoftmax

/// Log-softmax over the feature axis (PyTorch's `nn.LogSoftmax(dim=1)`), or over the last axis
/// ([`LogSoftmax::last_axis`], `dim=-1`):
/// `y_i = x_i − m − log Σ_j e^(x_j − m)`, finite for logits of ±1000.
/// Backward: `dL/dx_j = g_j − p_j · Σ_i g_i` with `p = e^y = softmax(x)`.
///
/// Followed by [`NllLoss`](crate::loss::NllLoss), it computes what
/// [`CrossEntropyLoss`](crate::loss::CrossEntropyLoss) computes from the logits in one step —
/// over the last axis, where both losses read the classes: for `[N, T, C]` outputs that is
/// [`LogSoftmax::last_axis`] (axis 1 would normalise over the steps, which `NllLoss` refuses).
///
/// ```
/// use backprop::layers::{Layer, LogSoftmax, Pass};
/// use backprop::Tensor;
/// let y = LogSoftmax::new().forward(&Tensor::from_vec(&[1, 2], vec![1000., -1000.]).unwrap(), Pass::EVAL);
/// assert_eq!(y.data(), &[0., -2000.]); // log(softmax) would give −∞ for the second
/// ```
#[derive(Default)]
pub struct LogSoftmax {
    y: Tensor,
    last_axis: bool,
}

impl LogSoftmax {
    /// A log-softmax layer over axis 1.
    pub fn new() -> LogSoftmax {
        LogSoftmax::default()
    }

    /// A log-softmax layer over the last axis (PyTorch's `nn.LogSoftmax(dim=-1)`): the one for
    /// a sequence's `[N, T, C]` outputs before [`NllLoss`](crate::loss::NllLoss); the same as
    /// [`LogSoftmax::new`] for `[N, C]`.
    pub fn last_axis() -> LogSoftmax {
        LogSoftmax { last_axis: true, ..LogSoftmax::default() }
    }

    /// True if the layer normalises the last axis, false for axis 1.
    pub fn is_last_axis(&self) -> bool {
        self.last_axis
    }
}

impl Layer for LogSoftmax {
    fn describe(&self) -> String {
        if self.last_axis { "LogSoftmax(last axis)".into() } else { "LogSoftmax".into() }
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        feature_shape("LogSoftmax", input)
    }

    fn forward(&mut self, x: &Tensor, _pass: Pass<'_>) -> Tensor {
        check_input(self, x);
        self.y.resize_for_overwrite(x.shape());
        log_softmax_into(x.data(), softmax_split(x.shape(), self.last_axis), self.y.data_mut()); // y = x − m − log Σ e^(x−m)
        self.y.clone()
    }

    fn backward(&mut self, g: &Tensor, _: InputGrad) -> Option<Tensor> {
        check_grad("LogSoftmax", self.y.shape(), g);
        let (n, f, inner) = softmax_split(self.y.shape(), self.last_axis);
        let (y, gd) = (self.y.data(), g.data());
        let mut dx = Tensor::zeros(self.y.shape());
        for b in 0..n {
            for i in 0..inner {
                let at = |k: usize| (b * f + k) * inner + i;
                let sum_g: f64 = (0..f).map(|k| gd[at(k)] as f64).sum(); // Σ_i g_i, in f64 (as Softmax's)
                (0..f).for_each(|k| {
                    dx.data_mut()[at(k)] = (gd[at(k)] as f64 - (y[at(k)] as f64).exp() * sum_g) as f32
                }); // g_j − p_j Σ g_i
            }
        }
        Some(dx)
    }

    fn onnx(&self) -> Option<&dyn OnnxLayer> {
        Some(self)
    }
}

impl Visit for LogSoftmax {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::{InputGrad, Layer, Pass};
    use crate::tensor::math::exp_fast;

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|v| v.to_bits()).collect()
    }

    /// Softmax's and log-softmax's backward sums over a row are taken in f64: over 200,000
    /// features with a dense upstream gradient, an f32 running sum had drifted (Σg off by 0.35 of
    /// 20,017, dx 37× further from the f64 result than PyTorch's). Against an f64 reference.
    #[test]
    fn softmax_backward_sums_do_not_drift_over_long_rows() {
        let f = 200_000;
        let x = Tensor::from_fn(&[1, f], |i| ((i[1] as f32) * 0.37).sin() * 4.0);
        let g = Tensor::from_fn(&[1, f], |i| 0.1 + 0.1 * ((i[1] as f32) * 0.11).cos());
        let mut log_softmax = LogSoftmax::new();
        let y = log_softmax.forward(&x, Pass::TRAIN);
        let dx = log_softmax.backward(&g, InputGrad::Needed).unwrap();
        let sum_g: f64 = g.data().iter().map(|&v| v as f64).sum();
        let worst = (0..f)
            .map(|k| (dx.data()[k] as f64 - (g.data()[k] as f64 - (y.data()[k] as f64).exp() * sum_g)).abs())
            .fold(0.0, f64::max);
        assert!(worst < 2e-7, "log-softmax: {worst:e}");
        let mut softmax = Softmax::new();
        let p = softmax.forward(&x, Pass::TRAIN);
        let dx = softmax.backward(&g, InputGrad::Needed).unwrap();
        let dot: f64 = g.data().iter().zip(p.data()).map(|(&g, &p)| g as f64 * p as f64).sum();
        let worst = (0..f)
            .map(|k| {
                let exact = p.data()[k] as f64 * (g.data()[k] as f64 - dot);
                (dx.data()[k] as f64 - exact).abs() / exact.abs().max(1e-30)
            })
            .fold(0.0, f64::max);
        assert!(worst < 1e-6, "softmax: relative {worst:e}");
    }

    /// Sigmoid's and tanh's forward loops, compiled for the widest vectors, stay within a few
    /// ulps of their definitions (the library's `exp` and `tanh`, `f`): over ordinary values, tiny
    /// ones, values where the polynomial's clamps take over and the special ones; the AVX-512 and
    /// AVX2 compilations give the same bits (both fuse their multiply-adds), the baseline's
    /// separate ones the same bound.
    #[test]
    fn fast_sigmoid_and_tanh_stay_near_their_definitions() {
        use crate::tensor::simd::{Isa, run_with};
        let mut x: Vec<f32> = (-4000..=4000).map(|i| i as f32 / 100.0).collect(); // −40 … 40
        x.extend((-40..40).map(|e: i32| 2f32.powi(e))); // tiny to large
        x.extend((-40..40).map(|e: i32| -(2f32.powi(e))));
        x.extend([-0.0, 1e-30, -1e-30, 87.0, 88.0, 88.5, 100.0, -87.0, -88.0, -88.5, -100.0]);
        x.extend([f32::MAX, f32::MIN, f32::INFINITY, f32::NEG_INFINITY, f32::MIN_POSITIVE]);
        use crate::tensor::math::{Fused, Separate};
        // Each loop compiled inside run_with's ISA and called directly: `f_slice` dispatches on
        // the process's ISA, so calling it under run_with had run the widest loop three times
        // and never the baseline's. Fused on the wide ISAs, Separate for the baseline, as
        // `wide_fused!` picks them.
        fn run(sigmoid: bool, x: &[f32], isa: Isa) -> Vec<f32> {
            let mut out = vec![0.0; x.len()];
            run_with(
                isa,
                #[inline(always)]
                || match (sigmoid, isa) {
                    (true, Isa::Baseline) => sigmoid_loop::<Separate>(x, &mut out),
                    (true, _) => sigmoid_loop::<Fused>(x, &mut out),
                    (false, Isa::Baseline) => tanh_loop::<Separate>(x, &mut out),
                    (false, _) => tanh_loop::<Fused>(x, &mut out),
                },
            );
            out
        }
        // The dispatching entry points give one of those.
        let (mut sig, mut tanh) = (vec![0.0; x.len()], vec![0.0; x.len()]);
        SigmoidFn.f_slice(&x, &mut sig);
        TanhFn.f_slice(&x, &mut tanh);
        let isas = [Isa::Avx512, Isa::Avx2, Isa::Baseline];
        assert!(isas.iter().any(|&isa| bits(&run(true, &x, isa)) == bits(&sig)), "SigmoidFn::f_slice");
        assert!(isas.iter().any(|&isa| bits(&run(false, &x, isa)) == bits(&tanh)), "TanhFn::f_slice");
        // (Measured on the AMD EPYC: 2.1·10⁻⁷ for σ at −11.66, 2.4·10⁻⁷ for tanh at −0.99.)
        for (name, tolerance) in [("sigmoid", 3e-7f32), ("tanh", 3e-7)] {
            let (fast, plain): (Vec<Vec<f32>>, Vec<f32>) = match name {
                "sigmoid" => {
                    (isas.map(|isa| run(true, &x, isa)).to_vec(), x.iter().map(|&v| SigmoidFn.f(v)).collect())
                }
                _ => (isas.map(|isa| run(false, &x, isa)).to_vec(), x.iter().map(|&v| TanhFn.f(v)).collect()),
            };
            assert_eq!(bits(&fast[0]), bits(&fast[1]), "{name}: AVX-512F against AVX2");
            for out in &fast {
                for ((&v, &got), &want) in x.iter().zip(out).zip(&plain) {
                    // Relative near 0 (both functions are ≈ x or ≈ e^x there), absolute elsewhere.
                    let err = (got - want).abs() / want.abs().clamp(f32::MIN_POSITIVE, 1.0);
                    // (Below −88, σ is under 10⁻³⁸ either way: denormal or 0 against 4.6·10⁻³⁹.)
                    let flushed = name == "sigmoid" && v < -88.0 && got < 1e-38 && want < 1e-38;
                    assert!(err <= tolerance || flushed, "{name}({v}): {got}, want {want}");
                }
            }
        }
        // NaN in, NaN out, on every ISA.
        for isa in isas {
            assert!(run(true, &[f32::NAN], isa)[0].is_nan() && run(false, &[f32::NAN], isa)[0].is_nan());
        }
    }

    /// The fused value-and-derivative gives exactly the bits of the two functions it replaced
    /// (written out below as they were: the value through an `erf` of `x/√2`, the derivative on
    /// its own), so the training step did not change by keeping `gelu′` instead of `x` — on
    /// ordinary values, values where the polynomial and the exponential run out, and the special
    /// ones — and stays within 4·10⁻⁷·max(1, |x|) of the f64 definitions.
    #[test]
    fn fused_gelu_is_gelu_and_its_derivative() {
        let poly = |t: f32| {
            t * (0.254_829_6 + t * (-0.284_496_74 + t * (1.421_413_8 + t * (-1.453_152_1 + t * 1.061_405_4))))
        };
        // e^(−a²), 0 below f32's normal range (as the kernels take it: see gelu_first_half).
        let e_of = |a: f32| if a * a < 87.336_54 { exp_fast(-a * a) } else { 0.0 };
        let erf_before = |x: f32| {
            let a = x.abs();
            (1.0 - poly(1.0 / (1.0 + 0.327_591_1 * a)) * e_of(a)).copysign(x)
        };
        let gelu_before = |x: f32| 0.5 * x * (1.0 + erf_before(x * std::f32::consts::FRAC_1_SQRT_2));
        let derivative_before = |x: f32| {
            let u = x.abs() * std::f32::consts::FRAC_1_SQRT_2;
            let e = e_of(u);
            let erf = (1.0 - poly(1.0 / (1.0 + 0.327_591_1 * u)) * e).copysign(x);
            0.5 * (1.0 + erf) + x * e * 0.398_942_3
        };
        let mut xs: Vec<f32> = (-4000..=4000).map(|k| k as f32 * 0.0037).collect();
        xs.extend([
            0.0,
            -0.0,
            1e-30,
            -1e-30,
            1e-45,
            13.0,
            -13.0,
            40.0,
            -40.0,
            1e30,
            -1e30,
            f32::MAX,
            f32::MIN,
        ]);
        xs.extend([f32::INFINITY, f32::NEG_INFINITY, f32::MIN_POSITIVE, -f32::MIN_POSITIVE]);
        for &x in &xs {
            let (gelu, derivative) = gelu_and_derivative_fast(x);
            assert_eq!(gelu.to_bits(), gelu_before(x).to_bits(), "gelu({x}) as before");
            assert_eq!(derivative.to_bits(), derivative_before(x).to_bits(), "gelu′({x}) as before");
            assert_eq!(gelu.to_bits(), gelu_fast(x).to_bits(), "gelu_fast({x})");
            assert_eq!(derivative.to_bits(), gelu_derivative_fast(x).to_bits(), "gelu_derivative_fast({x})");
            if x.abs() < 1e3 {
                let scale = x.abs().max(1.0);
                assert!((gelu - gelu_reference(x)).abs() <= 4e-7 * scale, "gelu({x}) vs the definition");
                assert!(
                    (derivative - gelu_derivative_reference(x)).abs() <= 4e-7 * scale,
                    "gelu′({x}) vs the definition"
                );
            }
        }
        let (nan_gelu, nan_derivative) = gelu_and_derivative_fast(f32::NAN);
        assert!(nan_gelu.is_nan() && nan_derivative.is_nan());
    }

    /// A layer whose training forward pass kept `f′(x)` (GELU) gives the backward pass computed
    /// from `x` itself, bit for bit, through `backward` and `backward_owned`; after a predicting
    /// pass (no derivative kept) backward still reads `x`; and the tanh form takes the trait's
    /// default fused loop.
    #[test]
    fn kept_derivative_is_the_derivative_of_the_input() {
        for layer in [Gelu::new, Gelu::tanh] {
            let x = Tensor::randn(&[70, 513], 0.0, 3.0, 5); // over 2¹⁵ values: parallel chunks
            let g = Tensor::randn(&[70, 513], 0.0, 1.0, 6);
            let act = layer().act;
            // The slice loops the layer runs (compiled for the widest vectors), which the scalar
            // functions match to a few ulps (their bits where the loops' multiply-adds are not fused).
            let (mut want, mut want_y) = (vec![0.0; x.len()], vec![0.0; x.len()]);
            act.backward_slice(g.data(), x.data(), &mut want);
            act.f_slice(x.data(), &mut want_y);
            for (k, &v) in x.data().iter().enumerate() {
                let close = |a: f32, b: f32| (a - b).abs() <= 4e-7 * (1.0 + b.abs());
                assert!(
                    close(want_y[k], act.f(v)) && close(want[k], g.data()[k] * act.df(v)),
                    "{}",
                    act.name()
                );
            }
            for pass in [Pass::TRAIN, Pass::EVAL, Pass::PREDICT] {
                let (mut plain, mut owned) = (layer(), layer());
                assert_eq!(bits(plain.forward(&x, pass).data()), bits(&want_y), "{} forward", act.name());
                assert_eq!(bits(owned.forward_owned(x.clone(), pass).data()), bits(&want_y));
                assert_eq!(plain.derivative_cached, pass.keeps_for_backward(), "GELU keeps f′ for backward");
                let dx = plain.backward(&g, InputGrad::Needed).unwrap();
                assert_eq!(bits(dx.data()), bits(&want), "{} backward after {pass:?}", act.name());
                assert_eq!(bits(owned.backward_owned(g.clone()).data()), bits(&want), "backward_owned");
            }
        }
    }

    /// An activation of the user's with `FUSED_DERIVATIVE` and the trait's default fused loop:
    /// the forward pass keeps `f′(x)`, and backward multiplies by it.
    #[test]
    fn default_fused_loop_keeps_the_derivative() {
        struct Cube;
        impl Activation for Cube {
            const DERIVATIVE_FROM: Cached = Cached::Input;
            const FUSED_DERIVATIVE: bool = true;
            fn name(&self) -> String {
                "Cube".into()
            }
            fn f(&self, x: f32) -> f32 {
                x * x * x
            }
            fn df(&self, x: f32) -> f32 {
                3.0 * x * x
            }
        }
        let mut layer = Elementwise::from(Cube);
        let x = Tensor::from_vec(&[1, 3], vec![-2.0, 0.5, 3.0]).unwrap();
        assert_eq!(layer.forward(&x, Pass::TRAIN).data(), &[-8.0, 0.125, 27.0]);
        assert_eq!(layer.cache.data(), &[12.0, 0.75, 27.0], "f′(x) kept");
        let dx = layer.backward(&Tensor::from_vec(&[1, 3], vec![1.0, 2.0, -1.0]).unwrap(), InputGrad::Needed);
        assert_eq!(dx.unwrap().data(), &[12.0, 1.5, -27.0]);
    }

    /// The exact GELU's loops (the fused one too) compiled for AVX2 + FMA and for AVX-512F give
    /// the same bits (both fuse the multiply-adds); the baseline's, with separate multiplies and
    /// adds, are `gelu_fast`'s bits and agree with the wide ones to a few ulps.
    #[test]
    fn wide_vectors_agree() {
        use crate::tensor::math::Fused;
        use crate::tensor::simd::Isa;
        let n = 1000 + 13; // not a multiple of 16: the tails run too
        let x: Vec<f32> = (0..n).map(|k| (k as f32 * 0.37).sin() * 8.0).collect();
        let g: Vec<f32> = (0..n).map(|k| (k as f32 * 0.11).cos()).collect();
        fn loops<M: MulAdd>(x: &[f32], g: &[f32], y: &mut [f32], dx: &mut [f32]) {
            gelu_loop::<M>(x, y);
            gelu_backward_loop::<M>(g, x, dx);
            let (mut fused_y, mut d) = (vec![0.0; x.len()], x.to_vec());
            gelu_and_derivative_loop::<M>(&mut d, &mut fused_y);
            assert_eq!(bits(&fused_y), bits(y), "the fused loop's GELU");
            multiply_in_place(&mut d, g);
            assert_eq!(bits(&d), bits(dx), "g ⊙ the fused loop's derivative");
            let mut in_place = g.to_vec();
            gelu_backward_in_place_loop::<M>(&mut in_place, x);
            assert_eq!(bits(&in_place), bits(dx), "the in-place backward");
        }
        let run = |isa: Isa| {
            let (mut y, mut dx) = (vec![0.0; n], vec![0.0; n]);
            // #[inline(always)]: compiled inside run_with's ISA; Fused as `wide_fused!` picks it
            // (the library's `mul_add` where the CPU lacks the ISA: the same bits).
            crate::tensor::simd::run_with(
                isa,
                #[inline(always)]
                || match isa {
                    Isa::Baseline => loops::<Separate>(&x, &g, &mut y, &mut dx),
                    _ => loops::<Fused>(&x, &g, &mut y, &mut dx),
                },
            );
            (y, dx)
        };
        let (baseline, avx2) = (run(Isa::Baseline), run(Isa::Avx2));
        assert_eq!(bits(&run(Isa::Avx512).0), bits(&avx2.0), "AVX-512F against AVX2");
        assert_eq!(bits(&run(Isa::Avx512).1), bits(&avx2.1), "AVX-512F against AVX2");
        for (k, &v) in x.iter().enumerate() {
            assert_eq!(baseline.0[k].to_bits(), gelu_fast(v).to_bits(), "baseline GELU at {v}");
            for (wide, plain) in [(avx2.0[k], baseline.0[k]), (avx2.1[k], baseline.1[k])] {
                assert!(
                    (wide - plain).abs() <= 4e-7 * (1.0 + plain.abs()),
                    "at {v}: wide {wide}, baseline {plain}"
                );
            }
        }
    }
}

#[cfg(test)]
mod owned_tests {
    use super::*;
    use crate::layers::{InputGrad, Layer, Pass};

    /// `forward_owned` gives `forward`'s outputs and the same backward pass, call after call (the
    /// output reuses the previous cache's buffer), across a change of shape, for an activation
    /// whose derivative reads the input and one whose derivative reads the output.
    #[test]
    fn owned_forward_is_forward() {
        fn check<A: Activation>(make: impl Fn() -> Elementwise<A>) {
            let (mut plain, mut owned) = (make(), make());
            for (k, shape) in [[3, 5], [3, 5], [4, 7], [4, 7]].iter().enumerate() {
                let x = Tensor::randn(shape, 0.0, 2.0, k as u64);
                let g = Tensor::randn(shape, 0.0, 1.0, 10 + k as u64);
                let want = plain.forward(&x, Pass::TRAIN);
                assert_eq!(owned.forward_owned(x.clone(), Pass::TRAIN), want, "call {k}");
                assert_eq!(
                    owned.backward(&g, InputGrad::Needed),
                    plain.backward(&g, InputGrad::Needed),
                    "call {k}"
                );
            }
        }
        check(Gelu::new);
        check(|| Elementwise::from(LeakyReluFn { slope: 0.1 }));
        check(Sigmoid::new);
    }

    /// `backward_owned` (`g` overwritten in place, in parallel blocks for a large tensor) writes
    /// `backward`'s bits, for the exact and the tanh GELU and for activations on the trait's
    /// default loops (derivative from the input, from the output).
    #[test]
    fn owned_backward_is_backward() {
        fn check<A: Activation>(mut layer: Elementwise<A>) {
            let x = Tensor::randn(&[300, 512], 0.0, 2.0, 1);
            let g = Tensor::randn(&[300, 512], 0.0, 1.0, 2);
            layer.forward(&x, Pass::TRAIN);
            let want = layer.backward(&g, InputGrad::Needed).unwrap();
            let got = layer.backward_owned(g);
            assert_eq!(got.shape(), want.shape());
            assert!(got.data().iter().zip(want.data()).all(|(a, b)| a.to_bits() == b.to_bits()));
        }
        check(Gelu::new());
        check(Gelu::tanh());
        check(Elementwise::from(LeakyReluFn { slope: 0.1 }));
        check(Sigmoid::new());
    }
}
