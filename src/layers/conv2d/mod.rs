//! 2-D convolution.
//!
//! Shapes: `x [N, C, H, W]`, `W [O, C, kh, kw]` (PyTorch's layout), `b [O]`, `y [N, O, OH, OW]`.
//!
//! ```text
//! y[n, o, oy, ox] = b[o] + Σ_c Σ_ki Σ_kj W[o, c, ki, kj] · x[n, c, oy·sh − ph + ki·dh, ox·sw − pw + kj·dw]
//! ```
//!
//! Backward, given `g = dL/dy`: every product in that sum sends `g[n, o, oy, ox]` back to the two
//! factors and the bias —
//!
//! ```text
//! dL/dW[o, c, ki, kj] += Σ g[n, o, oy, ox] · x[n, c, iy, ix]     (accumulated)
//! dL/db[o]            += Σ g[n, o, oy, ox]                       (accumulated)
//! dL/dx[n, c, iy, ix]  = Σ g[n, o, oy, ox] · W[o, c, ki, kj]     (returned)
//! ```
//!
//! with the sums over every output that tap touches. [`reference`](mod@reference) writes exactly these loops and
//! is the definition; read it first. The layer runs [`fast`], which computes the same sums as
//! matrix products (im2col + GEMM, in groups of images, in parallel) and is tested against the
//! reference.
//!
//! (Strictly, this is cross-correlation — the kernel is not flipped — which is what every deep
//! learning library calls convolution.)

mod direct;
pub mod fast;
pub mod reference;

use super::{
    InputGrad, Layer, Param, Pass, State, StateMut, Visit, check_grad, check_input, checked_output,
    redraw_weight_and_bias, replace_parameters, shape_error, visit_weight_bias, visit_weight_bias_mut,
};
use crate::error::{Error, Result};
use crate::onnx::OnnxLayer;
use crate::privacy::per_example::PerExample;
use crate::tensor::Tensor;
use crate::tensor::im2col::ConvGeometry;
use crate::tensor::init::Init;

/// A convolution's window settings, each `(height, width)` ([`Conv2d::settings`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvSettings {
    /// Kernel size `(kh, kw)`.
    pub kernel: (usize, usize),
    /// Step between windows `(sh, sw)`.
    pub stride: (usize, usize),
    /// Zero padding on each side `(ph, pw)`.
    pub padding: (usize, usize),
    /// Spacing between kernel taps `(dh, dw)`.
    pub dilation: (usize, usize),
}

/// 2-D convolution over NCHW images. See the [module docs](self) for the math.
///
/// ```
/// use backprop::layers::{Conv2d, Layer, Pass};
/// use backprop::Tensor;
/// let mut conv = Conv2d::new(1, 8, 3).padding(1).stride(2);
/// let y = conv.forward(&Tensor::zeros(&[2, 1, 28, 28]), Pass::TRAIN);
/// assert_eq!(y.shape(), &[2, 8, 14, 14]);
/// ```
pub struct Conv2d {
    in_channels: usize,
    pub(crate) out_channels: usize,
    kernel: (usize, usize),
    stride: (usize, usize),
    padding: (usize, usize),
    dilation: (usize, usize),
    pub(crate) weight: Param,
    pub(crate) bias: Option<Param>,
    init: Init,
    // Caches of the latest forward pass, reused from call to call.
    pub(crate) geometry: Option<ConvGeometry>,
    pub(crate) out_shape: Vec<usize>,
    /// The latest input, cached for the backward pass.
    pub(crate) input: Tensor,
    /// Backward: a partial `dL/dW` and `dL/db` per group of images, added in order at the end.
    pub(crate) dw_groups: Vec<f32>,
    /// The forward product's packed weights, kept while the weights stay the same.
    pub(crate) kept_panels: fast::KeptPanels,
}

impl Conv2d {
    /// A convolution from `in_channels` to `out_channels` with a square `kernel × kernel` window,
    /// stride 1, no padding, no dilation, a bias, He-normal weights and a zero bias. The weights
    /// are drawn with seed 0; a model redraws them from its own seed and the layer's position,
    /// unless [`Conv2d::seed`] or [`Conv2d::with_weights`] chose them.
    ///
    /// # Panics
    /// If its weights would be more values than a tensor can hold (a message names the size).
    pub fn new(in_channels: usize, out_channels: usize, kernel: usize) -> Conv2d {
        Conv2d::with_kernel(in_channels, out_channels, (kernel, kernel))
    }

    /// Like [`Conv2d::new`] with a rectangular `(kh, kw)` kernel.
    ///
    /// # Panics
    /// If its weights would be more values than a tensor can hold (a message names the size).
    pub fn with_kernel(in_channels: usize, out_channels: usize, kernel: (usize, usize)) -> Conv2d {
        let shape = [out_channels, in_channels, kernel.0, kernel.1];
        Conv2d {
            in_channels,
            out_channels,
            kernel,
            stride: (1, 1),
            padding: (0, 0),
            dilation: (1, 1),
            weight: Param::drawn(&shape, Init::HeNormal, 0),
            bias: Some(Param::new(Tensor::zeros(&[out_channels]))),
            init: Init::HeNormal,
            geometry: None,
            out_shape: Vec::new(),
            input: Tensor::default(),
            dw_groups: Vec::new(),
            kept_panels: fast::KeptPanels::default(),
        }
    }

    /// Same stride in both directions.
    pub fn stride(self, s: usize) -> Conv2d {
        self.stride_hw(s, s)
    }

    /// Stride `(sh, sw)`.
    pub fn stride_hw(mut self, sh: usize, sw: usize) -> Conv2d {
        self.stride = (sh, sw);
        self
    }

    /// Same zero padding on all four sides.
    pub fn padding(self, p: usize) -> Conv2d {
        self.padding_hw(p, p)
    }

    /// Zero padding `(ph, pw)`: `ph` rows above and below, `pw` columns left and right.
    pub fn padding_hw(mut self, ph: usize, pw: usize) -> Conv2d {
        self.padding = (ph, pw);
        self
    }

    /// Same dilation in both directions.
    pub fn dilation(self, d: usize) -> Conv2d {
        self.dilation_hw(d, d)
    }

    /// Dilation `(dh, dw)`: the spacing between kernel taps.
    pub fn dilation_hw(mut self, dh: usize, dw: usize) -> Conv2d {
        self.dilation = (dh, dw);
        self
    }

    /// Removes the bias.
    pub fn no_bias(mut self) -> Conv2d {
        self.bias = None;
        self
    }

    /// Uses `init` for the weights and redraws them with seed 0.
    ///
    /// # Panics
    /// As [`Init::tensor`] for settings no distribution has.
    pub fn init(mut self, init: Init) -> Conv2d {
        self.init = init;
        self.weight = Param::drawn(self.weight.value.shape(), init, 0);
        self
    }

    /// Draws the weights from the layer's initialiser with this seed (a model-wide seed then
    /// leaves them alone).
    pub fn seed(mut self, seed: u64) -> Conv2d {
        self.reset_parameters(seed);
        self
    }

    /// Redraws the weights from the layer's initialiser with `seed`, and zeroes the bias.
    pub fn reset_parameters(&mut self, seed: u64) {
        redraw_weight_and_bias(self.init, &mut self.weight, self.bias.as_mut(), seed);
    }

    /// Sets the weights `[O, C, kh, kw]` and the bias `[O]`.
    ///
    /// # Panics
    /// If a shape is wrong, or a bias is given to a layer without one.
    pub fn with_weights(mut self, weight: Tensor, bias: Option<Tensor>) -> Conv2d {
        replace_parameters("Conv2d", &mut self.weight, self.bias.as_mut(), weight, bias);
        self
    }

    /// The weight parameter, `[O, C, kh, kw]`.
    pub fn weight(&self) -> &Param {
        &self.weight
    }

    /// The bias parameter, `[O]`, if any.
    pub fn bias(&self) -> Option<&Param> {
        self.bias.as_ref()
    }

    /// The window settings, each `(height, width)`.
    pub fn settings(&self) -> ConvSettings {
        ConvSettings {
            kernel: self.kernel,
            stride: self.stride,
            padding: self.padding,
            dilation: self.dilation,
        }
    }

    pub(crate) fn geometry_for(&self, input: &[usize]) -> Result<ConvGeometry> {
        let [_, c, h, w] = *input else {
            return Err(shape_error(&self.describe(), format!("[N, {}, H, W]", self.in_channels), input));
        };
        if self.in_channels == 0 || self.out_channels == 0 {
            return Err(Error::shape(format!("{} has no input or no output channels", self.describe())));
        }
        if c != self.in_channels {
            return Err(shape_error(&self.describe(), format!("[N, {}, H, W]", self.in_channels), input));
        }
        if h == 0 || w == 0 {
            return Err(shape_error(
                &self.describe(),
                format!("[N, {}, H ≥ 1, W ≥ 1]", self.in_channels),
                input,
            ));
        }
        ConvGeometry::new((c, h, w), self.kernel, self.stride, self.padding, self.dilation)
            .map_err(|e| shape_error(&self.describe(), format!("[N, {c}, H, W] large enough ({e})"), input))
    }
}

impl Layer for Conv2d {
    fn describe(&self) -> String {
        let mut s =
            format!("Conv2d({}→{}, {}×{}", self.in_channels, self.out_channels, self.kernel.0, self.kernel.1);
        let pair = |(a, b): (usize, usize)| {
            if a == b { a.to_string() } else { format!("({a}, {b})") }
        };
        if self.stride != (1, 1) {
            s += &format!(", stride {}", pair(self.stride));
        }
        if self.padding != (0, 0) {
            s += &format!(", padding {}", pair(self.padding));
        }
        if self.dilation != (1, 1) {
            s += &format!(", dilation {}", pair(self.dilation));
        }
        if self.bias.is_none() {
            s += ", no bias";
        }
        s + ")"
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        let g = self.geometry_for(input)?;
        checked_output(|| self.describe(), vec![input[0], self.out_channels, g.out_height, g.out_width])
    }

    fn forward(&mut self, x: &Tensor, _pass: Pass<'_>) -> Tensor {
        self.out_shape = check_input(self, x);
        let geo = self.geometry_for(x.shape()).expect("checked by check_input");
        self.geometry = Some(geo);
        self.input.copy_from(x);
        let (w, b) = (self.weight.value.data(), self.bias.as_ref().map(|b| b.value.data()));
        fast::forward(x, (w, b), &mut self.kept_panels, self.out_channels, &geo) // y = conv(x, W) + b
    }

    fn backward(&mut self, g: &Tensor, input_grad: InputGrad) -> Option<Tensor> {
        check_grad("Conv2d", &self.out_shape, g);
        let geo = self.geometry.expect("forward ran");
        fast::backward(
            &self.input,
            self.weight.value.data(),
            g,
            &geo,
            self.weight.grad.data_mut(),                   // dL/dW += Σ g·x
            self.bias.as_mut().map(|b| b.grad.data_mut()), // dL/db += Σ g
            input_grad.is_needed(),                        // dL/dx  = Σ g·W (returned)
            &mut self.dw_groups,
        )
    }

    fn per_example(&mut self) -> Option<&mut dyn PerExample> {
        Some(self)
    }

    fn onnx(&self) -> Option<&dyn OnnxLayer> {
        Some(self)
    }
}

impl Visit for Conv2d {
    fn visit<'a>(&'a self, f: &mut dyn FnMut(&str, State<'a>)) {
        visit_weight_bias(&self.weight, self.bias.as_ref(), f);
    }

    fn visit_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, StateMut<'a>)) {
        visit_weight_bias_mut(&mut self.weight, self.bias.as_mut(), f);
    }
}
