//! Pooling: max, average, and global average over the spatial axes of NCHW images.
//!
//! A `k×k` window slides with a stride (by default the window size) over each channel plane,
//! with optional padding; the output size follows PyTorch's floor mode,
//! `OH = ⌊(H + 2p − k) / s⌋ + 1`.
//!
//! **Max pooling** keeps the largest value of each window:
//! `y[n, c, oy, ox] = max over the window of x[n, c, iy, ix]`.
//! Only that one input influenced the output, so the gradient is *routed* to it and nowhere else:
//!
//! ```text
//! dL/dx[n, c, i*] += g[n, c, oy, ox]   where i* = argmax of the window (the first one on ties)
//! ```
//!
//! Padding cells never win (they count as −∞). Windows that overlap (stride < kernel) may route
//! several gradients into one input, which then adds them up.
//!
//! **Average pooling** takes the mean, `y = (1/(kh·kw)) Σ_window x` (padding counts as zeros
//! in the sum and in the divisor, PyTorch's default `count_include_pad=True`), so every input of
//! the window receives an equal share: `dL/dx[i] += g / (kh·kw)`.
//!
//! **Global average pooling** averages each whole plane: `y[n, c] = (1/(H·W)) Σ_{h,w} x[n, c, h, w]`,
//! and `dL/dx[n, c, h, w] = g[n, c] / (H·W)`.

pub mod fast;
pub mod reference;

use super::{InputGrad, Layer, Pass, Visit, check_grad, check_input, shape_error};
use crate::error::Result;
use crate::onnx::OnnxLayer;
use crate::tensor::Tensor;
use crate::tensor::im2col::ConvGeometry;
use crate::tensor::parallel::split_if_threads;
use rayon::prelude::*;

/// Window settings shared by [`MaxPool2d`] and [`AvgPool2d`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// Window size `(kh, kw)`.
    pub kernel: (usize, usize),
    /// Step between windows `(sh, sw)`.
    pub stride: (usize, usize),
    /// Padding `(ph, pw)` on each side (−∞ for max pooling, zeros for average pooling).
    pub padding: (usize, usize),
}

impl Window {
    /// `"MaxPool2d(2×2)"`, with stride and padding when they are not the defaults.
    pub fn describe(&self, name: &str) -> String {
        let mut s = format!("{name}({}×{}", self.kernel.0, self.kernel.1);
        if self.stride != self.kernel {
            s += &format!(", stride ({}, {})", self.stride.0, self.stride.1);
        }
        if self.padding != (0, 0) {
            s += &format!(", padding ({}, {})", self.padding.0, self.padding.1);
        }
        s + ")"
    }

    /// Geometry of one channel plane (pooling never mixes channels).
    /// Geometry of one channel plane, or an error naming the layer and the input shape.
    pub fn geometry(&self, name: &str, input: &[usize]) -> Result<ConvGeometry> {
        let [_, _, h, w] = *input else {
            return Err(shape_error(&self.describe(name), "[N, C, H, W]", input));
        };
        if h == 0 || w == 0 {
            return Err(shape_error(&self.describe(name), "[N, C, H ≥ 1, W ≥ 1]", input));
        }
        // (p > k/2, not 2p > k: the same test without overflow for any padding.)
        if self.padding.0 > self.kernel.0 / 2 || self.padding.1 > self.kernel.1 / 2 {
            return Err(crate::Error::invalid(format!(
                "{}: padding must be at most half the kernel size",
                self.describe(name)
            )));
        }
        ConvGeometry::new((1, h, w), self.kernel, self.stride, self.padding, (1, 1)).map_err(|e| {
            shape_error(&self.describe(name), format!("[N, C, H, W] with H, W large enough ({e})"), input)
        })
    }

    /// `[N, C, OH, OW]` for an input `[N, C, H, W]`.
    pub fn output_shape(&self, name: &str, input: &[usize]) -> Result<Vec<usize>> {
        let g = self.geometry(name, input)?;
        Ok(vec![input[0], input[1], g.out_height, g.out_width])
    }
}

/// The input rows (or columns) a window starting at output index `o` covers, clipped to the image.
pub(crate) fn span(o: usize, stride: usize, pad: usize, k: usize, size: usize) -> std::ops::Range<usize> {
    let start = (o * stride) as isize - pad as isize;
    let lo = start.max(0) as usize;
    let hi = ((start + k as isize).max(0) as usize).min(size);
    lo..hi.max(lo)
}

/// The stride and padding settings [`MaxPool2d`] and [`AvgPool2d`] share.
macro_rules! window_settings {
    ($ty:ident, $padding:literal) => {
        impl $ty {
            /// Same stride in both directions.
            pub fn stride(self, s: usize) -> $ty {
                self.stride_hw(s, s)
            }

            /// Stride `(sh, sw)`.
            pub fn stride_hw(mut self, sh: usize, sw: usize) -> $ty {
                self.window.stride = (sh, sw);
                self
            }

            /// Same padding on all sides (at most half the kernel, as in PyTorch).
            pub fn padding(self, p: usize) -> $ty {
                self.padding_hw(p, p)
            }

            #[doc = concat!("Padding `(ph, pw)`: rows above and below, columns left and right (", $padding, ").")]
            pub fn padding_hw(mut self, ph: usize, pw: usize) -> $ty {
                self.window.padding = (ph, pw);
                self
            }
        }
    };
}

window_settings!(MaxPool2d, "padding cells never win");
window_settings!(AvgPool2d, "zeros, counted in the divisor, as PyTorch's default");

// ------------------------------------------------------------------------------------ MaxPool2d

/// Max pooling over `kh × kw` windows. See the [module docs](self) for the math.
///
/// ```
/// use backprop::layers::{InputGrad, Layer, MaxPool2d, Pass};
/// use backprop::Tensor;
/// let x = Tensor::from_vec(&[1, 1, 2, 2], vec![1., 5., 3., 2.]).unwrap();
/// let mut pool = MaxPool2d::new(2);
/// assert_eq!(pool.forward(&x, Pass::TRAIN).data(), &[5.]);
/// // The gradient goes to the winner only.
/// let dx = pool.backward(&Tensor::ones(&[1, 1, 1, 1]), InputGrad::Needed).unwrap();
/// assert_eq!(dx.data(), &[0., 1., 0., 0.]);
/// ```
pub struct MaxPool2d {
    window: Window,
    in_shape: Vec<usize>,
    out_shape: Vec<usize>,
    /// For every output, the flat index (within its plane) of the input that won.
    argmax: Vec<u32>,
    /// False after a forward pass that left `argmax` out (the execution plan's fused
    /// convolution + pooling in `Mode::Predict`): backward then refuses.
    argmax_kept: bool,
}

impl MaxPool2d {
    /// A `k × k` window with stride `k` and no padding.
    pub fn new(k: usize) -> MaxPool2d {
        MaxPool2d::with_kernel((k, k))
    }

    /// A `(kh, kw)` window with stride `(kh, kw)` and no padding.
    pub fn with_kernel(kernel: (usize, usize)) -> MaxPool2d {
        MaxPool2d {
            window: Window { kernel, stride: kernel, padding: (0, 0) },
            in_shape: Vec::new(),
            out_shape: Vec::new(),
            argmax: Vec::new(),
            argmax_kept: true, // (no pass yet: backward's shape check speaks first)
        }
    }
}

impl MaxPool2d {
    /// The window settings.
    pub fn window(&self) -> Window {
        self.window
    }

    /// True when windows do not overlap (stride ≥ kernel and no padding): each input then
    /// receives at most one gradient, which the [execution plan](crate::layers::sequential::plan) relies on.
    pub fn is_disjoint(&self) -> bool {
        let w = self.window;
        w.stride.0 >= w.kernel.0 && w.stride.1 >= w.kernel.1 && w.padding == (0, 0)
    }

    /// For a forward pass computed elsewhere, plane by plane (the execution plan's fused
    /// convolution + pooling, `sequential::fused::conv_then_max_pool`): records the
    /// input and output shapes as [`forward`](Layer::forward) would and returns the output shape
    /// and the arg-max buffer to fill, or `None` when the window does not fit `in_shape`.
    pub(crate) fn prepare_external_forward(
        &mut self,
        in_shape: &[usize],
    ) -> Option<(Vec<usize>, &mut [u32])> {
        let out_shape = self.record_external(in_shape, true)?;
        let len: usize = out_shape.iter().product();
        crate::tensor::reserve_more(&mut self.argmax, len, "a max pooling's arg-max indices");
        self.argmax.resize(len, 0);
        Some((out_shape, &mut self.argmax))
    }

    /// [`prepare_external_forward`](MaxPool2d::prepare_external_forward) for a pass that keeps no
    /// arg-max (`Mode::Predict`, after which no backward pass follows): records the shapes and
    /// returns the output shape, or `None` when the window does not fit `in_shape`.
    pub(crate) fn prepare_external_predict(&mut self, in_shape: &[usize]) -> Option<Vec<usize>> {
        let out_shape = self.record_external(in_shape, false)?;
        self.argmax.clear();
        Some(out_shape)
    }

    /// The two `prepare_external_*`'s shared part: the shapes recorded as `forward` would, and
    /// whether an arg-max is kept; `None` when the window does not fit `in_shape`.
    fn record_external(&mut self, in_shape: &[usize], argmax_kept: bool) -> Option<Vec<usize>> {
        let out_shape = self.window.output_shape("MaxPool2d", in_shape).ok()?;
        self.in_shape.clear();
        self.in_shape.extend_from_slice(in_shape);
        self.out_shape.clone_from(&out_shape);
        self.argmax_kept = argmax_kept;
        Some(out_shape)
    }
}

impl Layer for MaxPool2d {
    fn describe(&self) -> String {
        self.window.describe("MaxPool2d")
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        // The arg-max indices are u32 within a plane: a plane of 2³² values or more would wrap them.
        if let [_, _, h, w] = *input
            && h.checked_mul(w).is_none_or(|hw| hw > u32::MAX as usize)
        {
            return Err(shape_error(&self.describe(), "[N, C, H, W] with H·W < 2³² per plane", input));
        }
        self.window.output_shape("MaxPool2d", input)
    }

    fn forward(&mut self, x: &Tensor, _pass: Pass<'_>) -> Tensor {
        self.out_shape = check_input(self, x);
        self.in_shape.clear();
        self.in_shape.extend_from_slice(x.shape());
        // y[n, c, i, j] = max of x[n, c] over window (i, j); argmax[n, c, i, j] = where it was
        // (the first maximum), cached: backward routes each gradient there.
        self.argmax_kept = true;
        fast::max_pool_forward(x, self.window, &self.out_shape, &mut self.argmax)
    }

    fn backward(&mut self, g: &Tensor, _: InputGrad) -> Option<Tensor> {
        check_grad("MaxPool2d", &self.out_shape, g);
        assert!(
            self.argmax_kept,
            "{}: backward after a Mode::Predict forward pass of a model, which keeps no arg-max for backward (run \
             the forward pass in Mode::Train or Mode::Eval)",
            self.describe()
        );
        // dL/dx[argmax] += g: each window's gradient goes to the input that won it.
        Some(fast::max_pool_backward(g, &self.argmax, &self.in_shape))
    }

    fn onnx(&self) -> Option<&dyn OnnxLayer> {
        Some(self)
    }
}

impl Visit for MaxPool2d {}

// ------------------------------------------------------------------------------------ AvgPool2d

/// Average pooling over `kh × kw` windows. See the [module docs](self) for the math.
///
/// ```
/// use backprop::layers::{AvgPool2d, InputGrad, Layer, Pass};
/// use backprop::Tensor;
/// let x = Tensor::from_vec(&[1, 1, 2, 2], vec![1., 5., 3., 3.]).unwrap();
/// let mut pool = AvgPool2d::new(2);
/// assert_eq!(pool.forward(&x, Pass::TRAIN).data(), &[3.]);
/// assert_eq!(pool.backward(&Tensor::ones(&[1, 1, 1, 1]), InputGrad::Needed).unwrap().data(), &[0.25; 4]);
/// ```
pub struct AvgPool2d {
    window: Window,
    in_shape: Vec<usize>,
    out_shape: Vec<usize>,
}

impl AvgPool2d {
    /// The window settings.
    pub fn window(&self) -> Window {
        self.window
    }

    /// A `k × k` window with stride `k` and no padding.
    pub fn new(k: usize) -> AvgPool2d {
        AvgPool2d::with_kernel((k, k))
    }

    /// A `(kh, kw)` window with stride `(kh, kw)` and no padding.
    pub fn with_kernel(kernel: (usize, usize)) -> AvgPool2d {
        AvgPool2d {
            window: Window { kernel, stride: kernel, padding: (0, 0) },
            in_shape: Vec::new(),
            out_shape: Vec::new(),
        }
    }
}

impl Layer for AvgPool2d {
    fn describe(&self) -> String {
        self.window.describe("AvgPool2d")
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        self.window.output_shape("AvgPool2d", input)
    }

    fn forward(&mut self, x: &Tensor, _pass: Pass<'_>) -> Tensor {
        self.out_shape = check_input(self, x);
        self.in_shape.clear();
        self.in_shape.extend_from_slice(x.shape());
        let (h, w) = (x.dim(2), x.dim(3));
        let (oh, ow) = (self.out_shape[2], self.out_shape[3]);
        let win = self.window;
        let scale = 1.0 / (win.kernel.0 * win.kernel.1) as f32;
        let mut y = Tensor::zeros(&self.out_shape);
        y.data_mut()
            .par_chunks_mut(oh * ow)
            .zip(x.data().par_chunks(h * w))
            .with_min_len(split_if_threads(1))
            .for_each(|(y_p, x_p)| {
                for oy in 0..oh {
                    let rows = span(oy, win.stride.0, win.padding.0, win.kernel.0, h);
                    for ox in 0..ow {
                        let cols = span(ox, win.stride.1, win.padding.1, win.kernel.1, w);
                        let mut sum = 0.0f32;
                        for iy in rows.clone() {
                            x_p[iy * w..][cols.clone()].iter().for_each(|v| sum += v);
                        }
                        y_p[oy * ow + ox] = sum * scale; // y = (1/(kh·kw)) Σ_window x
                    }
                }
            });
        y
    }

    fn backward(&mut self, g: &Tensor, _: InputGrad) -> Option<Tensor> {
        check_grad("AvgPool2d", &self.out_shape, g);
        let (h, w) = (self.in_shape[2], self.in_shape[3]);
        let (oh, ow) = (self.out_shape[2], self.out_shape[3]);
        let win = self.window;
        let scale = 1.0 / (win.kernel.0 * win.kernel.1) as f32;
        let mut dx = Tensor::zeros(&self.in_shape);
        dx.data_mut()
            .par_chunks_mut(h * w)
            .zip(g.data().par_chunks(oh * ow))
            .with_min_len(split_if_threads(1))
            .for_each(|(dx_p, g_p)| {
                for oy in 0..oh {
                    let rows = span(oy, win.stride.0, win.padding.0, win.kernel.0, h);
                    for ox in 0..ow {
                        let cols = span(ox, win.stride.1, win.padding.1, win.kernel.1, w);
                        let share = g_p[oy * ow + ox] * scale; // dx += g / (kh·kw)
                        for iy in rows.clone() {
                            dx_p[iy * w..][cols.clone()].iter_mut().for_each(|d| *d += share);
                        }
                    }
                }
            });
        Some(dx)
    }

    fn onnx(&self) -> Option<&dyn OnnxLayer> {
        Some(self)
    }
}

impl Visit for AvgPool2d {}

// -------------------------------------------------------------------------------- GlobalAvgPool

/// Global average pooling: `[N, C, H, W] → [N, C]`, the mean of each channel plane.
/// (PyTorch's `AdaptiveAvgPool2d(1)` followed by `Flatten`.)
///
/// ```
/// use backprop::layers::{GlobalAvgPool, Layer, Pass};
/// use backprop::Tensor;
/// let x = Tensor::from_vec(&[1, 2, 1, 2], vec![1., 3., 10., 20.]).unwrap();
/// assert_eq!(GlobalAvgPool::new().forward(&x, Pass::TRAIN).data(), &[2., 15.]);
/// ```
#[derive(Default)]
pub struct GlobalAvgPool {
    in_shape: Vec<usize>,
    out_shape: Vec<usize>,
}

impl GlobalAvgPool {
    /// A global average pooling layer.
    pub fn new() -> GlobalAvgPool {
        GlobalAvgPool::default()
    }
}

impl Layer for GlobalAvgPool {
    fn describe(&self) -> String {
        "GlobalAvgPool".into()
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        match *input {
            [n, c, h, w] if h.checked_mul(w).is_some_and(|hw| hw > 0) => Ok(vec![n, c]),
            _ => Err(shape_error("GlobalAvgPool", "[N, C, H, W] with H·W > 0", input)),
        }
    }

    fn forward(&mut self, x: &Tensor, _pass: Pass<'_>) -> Tensor {
        self.out_shape = check_input(self, x);
        self.in_shape.clear();
        self.in_shape.extend_from_slice(x.shape());
        let hw = x.dim(2) * x.dim(3);
        // Each plane's sum in f64 (PyTorch's mean sums accurately; term by term in f32, a plane
        // of 10⁶ values of 0.1 came out 1 % high).
        let mean = |p: &[f32]| (p.iter().map(|&v| v as f64).sum::<f64>() / hw as f64) as f32;
        let data = x.data().chunks_exact(hw).map(mean).collect();
        Tensor::from_vec(&self.out_shape, data).expect("one mean per plane")
    }

    fn backward(&mut self, g: &Tensor, _: InputGrad) -> Option<Tensor> {
        check_grad("GlobalAvgPool", &self.out_shape, g);
        let hw = self.in_shape[2] * self.in_shape[3];
        let mut dx = Tensor::zeros(&self.in_shape);
        for (plane, &gv) in dx.data_mut().chunks_exact_mut(hw).zip(g.data()) {
            plane.fill(gv / hw as f32); // dx = g / (H·W)
        }
        Some(dx)
    }

    fn onnx(&self) -> Option<&dyn OnnxLayer> {
        Some(self)
    }
}

impl Visit for GlobalAvgPool {}
