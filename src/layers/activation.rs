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
//! | [`Gelu`] | `x·Φ(x)` (exact, erf) or its tanh approximation | `g · (Φ(x) + x·φ(x))` for the exact form (the tanh form's is in [`Gelu`]) | x |
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
use crate::tensor::math::{erf, exp_fast, feature_split, log_softmax_into, sigmoid, softmax_into};
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
    /// the compiler can vectorise each arm ([`GeluFn`] does).
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
    /// `x` or `y` of the latest forward pass.
    cache: Tensor,
}

impl<A: Activation> From<A> for Elementwise<A> {
    fn from(act: A) -> Elementwise<A> {
        Elementwise { act, cache: Tensor::default() }
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
        let mut y = std::mem::take(&mut self.cache);
        y.resize_for_overwrite(x.shape()); // every value is written below
        let act = &self.act;
        for_chunks3(y.data_mut(), x.data(), x.data(), |y, x, _| act.f_slice(x, y)); // y = f(x)
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
        let (act, v) = (&self.act, self.cache.data());
        crate::tensor::parallel::for_row_blocks(g.data_mut(), 1, |first, g| {
            act.backward_slice_in_place(g, &v[first..][..g.len()]); // g ← g ⊙ f′
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

    fn forward(&mut self, x: &Tensor, _pass: Pass<'_>) -> Tensor {
        same_shape(&self.act.name(), x.shape()).unwrap_or_else(|e| panic!("{e}"));
        let mut y = Tensor::zeros(x.shape());
        let act = &self.act;
        for_chunks3(y.data_mut(), x.data(), x.data(), |y, x, _| act.f_slice(x, y)); // y = f(x)
        self.cache.copy_from(if A::DERIVATIVE_FROM == Cached::Output { &y } else { x });
        y
    }

    fn backward(&mut self, g: &Tensor, _: InputGrad) -> Option<Tensor> {
        check_grad(&self.act.name(), self.cache.shape(), g);
        let (act, g, v) = (&self.act, g.data(), self.cache.data());
        // dL/dx = g ⊙ f′, written block by block in parallel (each element on its own)
        let dx = Tensor::from_row_blocks(self.cache.shape(), 1, |first, dx| {
            act.backward_slice(&g[first..][..dx.len()], &v[first..][..dx.len()], dx);
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
    pub fn new(slope: f32) -> LeakyRelu {
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
            crate::tensor::simd::wide!(gelu_loop(x, out)); // 16 wide with AVX-512, same bits
        }
    }

    fn backward_slice(&self, g: &[f32], v: &[f32], out: &mut [f32]) {
        if self.tanh_approximation {
            out.iter_mut().zip(g.iter().zip(v)).for_each(|(o, (&g, &v))| *o = g * self.df(v));
        } else {
            crate::tensor::simd::wide!(gelu_backward_loop(g, v, out));
        }
    }

    fn backward_slice_in_place(&self, g: &mut [f32], v: &[f32]) {
        if self.tanh_approximation {
            g.iter_mut().zip(v).for_each(|(g, &v)| *g *= self.df(v));
        } else {
            crate::tensor::simd::wide!(gelu_backward_in_place_loop(g, v));
        }
    }
}

/// `out = gelu(x)`, the loop [`GeluFn::f_slice`] compiles for the widest vectors.
#[allow(clippy::needless_range_loop)] // index loops on purpose: see the comment inside
#[inline(always)]
fn gelu_loop(x: &[f32], out: &mut [f32]) {
    // An index loop, not iterator adapters: `Zip::fold` is a function of its own that the compiler
    // kept outside the wide-vector context (4 lanes instead of 16); this loop stays inside it.
    let n = out.len();
    let x = &x[..n];
    for i in 0..n {
        out[i] = gelu_fast(x[i]);
    }
}

/// `out = g ⊙ gelu′(v)`, the loop [`GeluFn::backward_slice`] compiles for the widest vectors.
#[allow(clippy::needless_range_loop)] // index loops on purpose: see the comment inside
#[inline(always)]
fn gelu_backward_loop(g: &[f32], v: &[f32], out: &mut [f32]) {
    let n = out.len(); // an index loop, as in `gelu_loop`
    let (g, v) = (&g[..n], &v[..n]);
    for i in 0..n {
        out[i] = g[i] * gelu_derivative_fast(v[i]);
    }
}

/// `g ← g ⊙ gelu′(v)`, the loop [`GeluFn::backward_slice_in_place`] compiles for the widest vectors.
#[allow(clippy::needless_range_loop)] // index loops on purpose: see `gelu_loop`
#[inline(always)]
fn gelu_backward_in_place_loop(g: &mut [f32], v: &[f32]) {
    let n = g.len();
    let v = &v[..n];
    for i in 0..n {
        g[i] *= gelu_derivative_fast(v[i]);
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

/// The same erf in f32 arithmetic with [`exp_fast`]: no library call and no branch, so a loop
/// over a tensor vectorises (the f64 version called `exp` once per element and kept a
/// Transformer's feed-forward layer busy for a fifth of its training step).
#[inline(always)]
fn erf_fast(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly =
        t * (0.254_829_6 + t * (-0.284_496_74 + t * (1.421_413_8 + t * (-1.453_152_1 + t * 1.061_405_4))));
    (1.0 - poly * exp_fast(-a * a)).copysign(x)
}

/// [`gelu_reference`] in f32 (`erf_fast`); within 4·10⁻⁷·max(1, |x|) of it (tested).
#[inline(always)]
pub fn gelu_fast(x: f32) -> f32 {
    0.5 * x * (1.0 + erf_fast(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// [`gelu_derivative_reference`] in f32; within 4·10⁻⁷·max(1, |x|) of it (tested).
#[inline(always)]
pub fn gelu_derivative_fast(x: f32) -> f32 {
    const INV_SQRT_2PI: f32 = 0.398_942_3;
    // erf(u) at u = |x|/√2 needs e^(−u²) = e^(−x²/2): the same exponential as φ(x), computed once.
    let u = x.abs() * std::f32::consts::FRAC_1_SQRT_2;
    let e = exp_fast(-u * u); // e^(−x²/2)
    let t = 1.0 / (1.0 + 0.327_591_1 * u);
    let poly =
        t * (0.254_829_6 + t * (-0.284_496_74 + t * (1.421_413_8 + t * (-1.453_152_1 + t * 1.061_405_4))));
    let erf = (1.0 - poly * e).copysign(x); // erf_fast(x/√2)
    0.5 * (1.0 + erf) + x * e * INV_SQRT_2PI // Φ(x) + x·φ(x)
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

/// Softmax over the feature axis (axis 1, like PyTorch's `nn.Softmax(dim=1)`):
/// `y_i = e^(x_i − m) / Σ_j e^(x_j − m)` with `m = max_j x_j` (subtracting the max changes nothing
/// mathematically and keeps `e^…` from overflowing). Backward: `dL/dx_i = y_i (g_i − Σ_j g_j y_j)`.
///
/// For classification, prefer feeding raw logits to [`CrossEntropyLoss`](crate::loss::CrossEntropyLoss),
/// which fuses softmax and log for accuracy; this layer is for when the probabilities themselves are
/// needed inside a network.
#[derive(Default)]
pub struct Softmax {
    y: Tensor,
}

impl Softmax {
    /// A softmax layer over axis 1.
    pub fn new() -> Softmax {
        Softmax::default()
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
        "Softmax".into()
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        feature_shape("Softmax", input)
    }

    fn forward(&mut self, x: &Tensor, _pass: Pass<'_>) -> Tensor {
        check_input(self, x);
        self.y.resize_for_overwrite(x.shape());
        softmax_into(x.data(), feature_split(x.shape()), self.y.data_mut()); // y = softmax(x)
        self.y.clone()
    }

    fn backward(&mut self, g: &Tensor, _: InputGrad) -> Option<Tensor> {
        check_grad("Softmax", self.y.shape(), g);
        let (n, f, inner) = feature_split(self.y.shape());
        let (y, gd) = (self.y.data(), g.data());
        let mut dx = Tensor::zeros(self.y.shape());
        for b in 0..n {
            for i in 0..inner {
                let at = |k: usize| (b * f + k) * inner + i;
                let dot: f32 = (0..f).map(|k| gd[at(k)] * y[at(k)]).sum(); // Σ_j g_j y_j
                (0..f).for_each(|k| dx.data_mut()[at(k)] = y[at(k)] * (gd[at(k)] - dot)); // y_i (g_i − Σ g_j y_j)
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

/// Log-softmax over the feature axis (PyTorch's `nn.LogSoftmax(dim=1)`):
/// `y_i = x_i − m − log Σ_j e^(x_j − m)`, finite for logits of ±1000.
/// Backward: `dL/dx_j = g_j − p_j · Σ_i g_i` with `p = e^y = softmax(x)`.
///
/// Followed by [`NllLoss`](crate::loss::NllLoss), it computes what
/// [`CrossEntropyLoss`](crate::loss::CrossEntropyLoss) computes from the logits in one step.
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
}

impl LogSoftmax {
    /// A log-softmax layer over axis 1.
    pub fn new() -> LogSoftmax {
        LogSoftmax::default()
    }
}

impl Layer for LogSoftmax {
    fn describe(&self) -> String {
        "LogSoftmax".into()
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        feature_shape("LogSoftmax", input)
    }

    fn forward(&mut self, x: &Tensor, _pass: Pass<'_>) -> Tensor {
        check_input(self, x);
        self.y.resize_for_overwrite(x.shape());
        log_softmax_into(x.data(), feature_split(x.shape()), self.y.data_mut()); // y = x − m − log Σ e^(x−m)
        self.y.clone()
    }

    fn backward(&mut self, g: &Tensor, _: InputGrad) -> Option<Tensor> {
        check_grad("LogSoftmax", self.y.shape(), g);
        let (n, f, inner) = feature_split(self.y.shape());
        let (y, gd) = (self.y.data(), g.data());
        let mut dx = Tensor::zeros(self.y.shape());
        for b in 0..n {
            for i in 0..inner {
                let at = |k: usize| (b * f + k) * inner + i;
                let sum_g: f32 = (0..f).map(|k| gd[at(k)]).sum(); // Σ_i g_i
                (0..f).for_each(|k| dx.data_mut()[at(k)] = gd[at(k)] - y[at(k)].exp() * sum_g); // g_j − p_j Σ g_i
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
    use super::{gelu_backward_loop, gelu_loop};

    /// The exact GELU's loops give the same bits compiled for the baseline, AVX2 and AVX-512F.
    #[test]
    fn wide_vectors_change_nothing() {
        let n = 1000 + 13; // not a multiple of 16: the tails run too
        let x: Vec<f32> = (0..n).map(|k| (k as f32 * 0.37).sin() * 8.0).collect();
        let g: Vec<f32> = (0..n).map(|k| (k as f32 * 0.11).cos()).collect();
        let run = |isa: crate::tensor::simd::Isa| {
            let (mut y, mut dx) = (vec![0.0; n], vec![0.0; n]);
            crate::tensor::simd::run_with(
                isa,
                #[inline(always)]
                || {
                    gelu_loop(&x, &mut y);
                    gelu_backward_loop(&g, &x, &mut dx);
                },
            );
            (
                y.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                dx.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            )
        };
        use crate::tensor::simd::Isa;
        let baseline = run(Isa::Baseline);
        assert_eq!(run(Isa::Avx2), baseline, "AVX2 (or the baseline where the CPU lacks it)");
        assert_eq!(run(Isa::Avx512), baseline, "AVX-512F (or the widest the CPU has)");
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
