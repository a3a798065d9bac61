//! 2-D convolution, computed as im2col + GEMM.
//!
//! Shapes: `x [N, C, H, W]`, `W [O, C, kh, kw]` (PyTorch's layout), `b [O]`, `y [N, O, OH, OW]`.
//!
//! ```text
//! y[n, o, oy, ox] = b[o] + Σ_c Σ_ki Σ_kj W[o, c, ki, kj] · x[n, c, oy·sh − ph + ki·dh, ox·sw − pw + kj·dw]
//! ```
//!
//! Per image, [`im2col`] lays every receptive field out as a column, so that the convolution is one
//! matrix product (`W` read as a `[O, C·kh·kw]` matrix):
//!
//! ```text
//! cols = im2col(x[n])          [C·kh·kw, OH·OW]
//! y[n] = W · cols + b          [O, OH·OW]
//! ```
//!
//! Backward, given `g[n] = dL/dy[n]` viewed as `[O, OH·OW]` — the Dense layer's rules, per image,
//! followed by the adjoint of im2col:
//!
//! ```text
//! dL/dW    += Σₙ g[n] · cols[n]ᵀ      [O, C·kh·kw]   (accumulated)
//! dL/db    += Σₙ Σ_p g[n, :, p]       [O]            (accumulated)
//! dcols     = Wᵀ · g[n]               [C·kh·kw, OH·OW]
//! dL/dx[n]  = col2im(dcols)           [C, H, W]      (returned)
//! ```
//!
//! Images are processed in parallel (rayon) in fixed groups of 4, each group with its own small
//! `cols` buffer that stays in cache from im2col to the GEMM. The backward pass recomputes
//! `cols` from the cached input instead of keeping every image's `cols` from the forward pass:
//! im2col is cheap next to the GEMMs, and the cached matrices (9× the input for a 3×3 kernel) would
//! be written to and read back from main memory. `dL/dW` is summed per group and the group sums
//! are added in order, so the result does not depend on the number of threads.

use super::{Layer, Mode, Param, check_grad, check_input, shape_error};
use crate::error::Result;
use crate::tensor::gemm::{Transpose::No, Transpose::Yes, sgemm};
use crate::tensor::im2col::{ConvGeometry, col2im, im2col};
use crate::tensor::init::Init;
use crate::tensor::{Tensor, init_rows, rng};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Images per group when summing `dL/dW` in parallel (fixed, for determinism).
const GROUP: usize = 4;

/// 2-D convolution over NCHW images. See the [module docs](self) for the math.
///
/// ```
/// use backprop::layers::{Conv2d, Layer, Mode};
/// use backprop::Tensor;
/// let mut conv = Conv2d::new(1, 8, 3).padding(1).stride(2);
/// let y = conv.forward(&Tensor::zeros(&[2, 1, 28, 28]), Mode::Train);
/// assert_eq!(y.shape(), &[2, 8, 14, 14]);
/// ```
pub struct Conv2d {
    in_channels: usize,
    out_channels: usize,
    kernel: (usize, usize),
    stride: (usize, usize),
    padding: (usize, usize),
    dilation: (usize, usize),
    weight: Param,
    bias: Option<Param>,
    init: Init,
    // Caches of the latest forward pass, reused from call to call.
    geometry: Option<ConvGeometry>,
    in_shape: Vec<usize>,
    out_shape: Vec<usize>,
    /// The latest input, cached for the backward pass.
    input: Tensor,
    /// Scratch per fixed group of images: the `cols` matrix of the image being processed
    /// (`[C·kh·kw, OH·OW]`, small enough to stay in cache between im2col and the GEMM that reads it).
    cols: Vec<f32>,
    /// Backward scratch per group: a partial `dL/dW` and `dL/db`, and one `dcols`.
    dw_groups: Vec<f32>,
    dcols: Vec<f32>,
}

impl Conv2d {
    /// A convolution from `in_channels` to `out_channels` with a square `kernel × kernel` window,
    /// stride 1, no padding, no dilation, a bias, He-normal weights (seed 0) and a zero bias.
    pub fn new(in_channels: usize, out_channels: usize, kernel: usize) -> Conv2d {
        Conv2d::with_kernel(in_channels, out_channels, (kernel, kernel))
    }

    /// Like [`Conv2d::new`] with a rectangular `(kh, kw)` kernel.
    pub fn with_kernel(in_channels: usize, out_channels: usize, kernel: (usize, usize)) -> Conv2d {
        let shape = [out_channels, in_channels, kernel.0, kernel.1];
        let mut conv = Conv2d {
            in_channels,
            out_channels,
            kernel,
            stride: (1, 1),
            padding: (0, 0),
            dilation: (1, 1),
            weight: Param::new("weight", Tensor::zeros(&shape)),
            bias: Some(Param::new("bias", Tensor::zeros(&[out_channels]))),
            init: Init::HeNormal,
            geometry: None,
            in_shape: Vec::new(),
            out_shape: Vec::new(),
            input: Tensor::default(),
            cols: Vec::new(),
            dw_groups: Vec::new(),
            dcols: Vec::new(),
        };
        conv.reset_parameters(0);
        conv
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
    pub fn init(mut self, init: Init) -> Conv2d {
        self.init = init;
        self.reset_parameters(0);
        self
    }

    /// Redraws the weights with this seed.
    pub fn seed(mut self, seed: u64) -> Conv2d {
        self.reset_parameters(seed);
        self
    }

    /// Redraws the weights from the layer's initialiser with `seed`, and zeroes the bias.
    pub fn reset_parameters(&mut self, seed: u64) {
        let shape = self.weight.value.shape().to_vec();
        self.weight.value = self.init.tensor(&shape, &mut rng(seed));
        if let Some(b) = &mut self.bias {
            b.value.fill(0.0);
        }
    }

    /// Sets the weights `[O, C, kh, kw]` and the bias `[O]`.
    ///
    /// # Panics
    /// If a shape is wrong, or a bias is given to a layer without one.
    pub fn with_weights(mut self, weight: Tensor, bias: Option<Tensor>) -> Conv2d {
        assert_eq!(weight.shape(), self.weight.value.shape(), "Conv2d: weight shape");
        self.weight.value = weight;
        match (bias, &mut self.bias) {
            (Some(b), Some(p)) => {
                assert_eq!(b.shape(), p.value.shape(), "Conv2d: bias shape");
                p.value = b;
            }
            (None, _) => {}
            (Some(_), None) => panic!("Conv2d: a bias was given to a layer built without one"),
        }
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

    fn geometry_for(&self, input: &[usize]) -> Result<ConvGeometry> {
        let [_, c, h, w] = *input else {
            return Err(shape_error(&self.describe(), format!("[N, {}, H, W]", self.in_channels), input));
        };
        if c != self.in_channels {
            return Err(shape_error(&self.describe(), format!("[N, {}, H, W]", self.in_channels), input));
        }
        ConvGeometry::new((c, h, w), self.kernel, self.stride, self.padding, self.dilation)
            .map_err(|e| shape_error(&self.describe(), format!("[N, {c}, H, W] large enough ({e})"), input))
    }
}

impl Conv2d {
    /// The backward pass; `dx` (zeroed, of the input's shape) receives `dL/dx` when given.
    fn backward_into(&mut self, g: &Tensor, mut dx: Option<&mut Tensor>) {
        check_grad(self.name(), &self.out_shape, g);
        let geo = self.geometry.expect("forward ran");
        let (n, o, ckk, ohow) = (self.in_shape[0], self.out_channels, geo.col_rows(), geo.col_cols());
        let (groups, in_len) = (n.div_ceil(GROUP), geo.input_len());
        // Per group of images: a partial dL/dW (o·ckk values) followed by a partial dL/db (o).
        let partial = o * ckk + o;
        self.dw_groups.clear();
        self.dw_groups.resize(groups * partial, 0.0);
        self.cols.resize(groups * ckk * ohow, 0.0);
        let need_dx = dx.is_some();
        self.dcols.resize(if need_dx { groups * ckk * ohow } else { groups }, 0.0);
        let dcols_len = if need_dx { ckk * ohow } else { 1 };
        // One slice of dx per group (empty slices when dL/dx is not wanted).
        let dx_data: &mut [f32] = dx.as_mut().map_or(&mut [], |d| d.data_mut());
        let mut dx_groups: Vec<&mut [f32]> = if need_dx {
            dx_data.chunks_mut(GROUP * in_len).collect()
        } else {
            (0..groups).map(|_| &mut [][..]).collect()
        };
        let (w, x) = (self.weight.value.data(), self.input.data());
        let per_group = self.dw_groups.par_chunks_mut(partial).zip(self.cols.par_chunks_mut(ckk * ohow));
        let per_group = per_group.zip(self.dcols.par_chunks_mut(dcols_len)).zip(dx_groups.par_iter_mut());
        let inputs = g.data().par_chunks(GROUP * o * ohow).zip(x.par_chunks(GROUP * in_len));
        per_group.zip(inputs).for_each(|((((dw_db, cols), dcols), dx_group), (g_group, x_group))| {
            let (dw, db) = dw_db.split_at_mut(o * ckk);
            let images = g_group.chunks_exact(o * ohow).zip(x_group.chunks_exact(in_len));
            for (i, (g_i, x_i)) in images.enumerate() {
                im2col(x_i, &geo, cols); // cols = im2col(x[n]), recomputed
                sgemm(o, ohow, ckk, 1.0, g_i, No, cols, Yes, 1.0, dw); // dW += g[n]·colsᵀ
                for (db_o, row) in db.iter_mut().zip(g_i.chunks_exact(ohow)) {
                    *db_o += row.iter().sum::<f32>(); // db += Σ_p g[n, o, p]
                }
                if need_dx {
                    sgemm(ckk, o, ohow, 1.0, w, Yes, g_i, No, 0.0, dcols); // dcols = Wᵀ·g[n]
                    col2im(dcols, &geo, &mut dx_group[i * in_len..][..in_len]); // dx[n] = col2im(dcols)
                }
            }
        });
        // Add the group sums in a fixed order: the same result on any number of threads.
        for part in self.dw_groups.chunks_exact(partial) {
            let (dw, db) = part.split_at(o * ckk);
            self.weight.grad.data_mut().iter_mut().zip(dw).for_each(|(a, b)| *a += b);
            if let Some(b) = &mut self.bias {
                b.grad.data_mut().iter_mut().zip(db).for_each(|(a, b)| *a += b);
            }
        }
    }
}

impl Layer for Conv2d {
    fn name(&self) -> &'static str {
        "Conv2d"
    }

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
        Ok(vec![input[0], self.out_channels, g.out_height, g.out_width])
    }

    fn forward(&mut self, x: &Tensor, _mode: Mode) -> Tensor {
        self.out_shape = check_input(self, x);
        let geo = self.geometry_for(x.shape()).expect("checked by check_input");
        self.geometry = Some(geo);
        self.in_shape.clear();
        self.in_shape.extend_from_slice(x.shape());
        self.input.copy_from(x);
        let (n, o, ckk, ohow) = (x.dim(0), self.out_channels, geo.col_rows(), geo.col_cols());
        let (groups, in_len) = (n.div_ceil(GROUP), geo.input_len());
        self.cols.resize(groups * ckk * ohow, 0.0);
        let (w, b) = (self.weight.value.data(), self.bias.as_ref().map(|b| b.value.data()));
        // The output is written once, image by image: first its bias, then the GEMM adds to it.
        let mut y_data: Vec<f32> = Vec::with_capacity(n * o * ohow);
        let group = |((y_group, cols), x_group): ((&mut [MaybeUninit<f32>], &mut [f32]), &[f32])| {
            for (y_i, x_i) in y_group.chunks_mut(o * ohow).zip(x_group.chunks_exact(in_len)) {
                im2col(x_i, &geo, cols); // cols = im2col(x[n])
                let y_i = init_rows(y_i, ohow, |row| b.map_or(0.0, |b| b[row])); // y[n] = b …
                sgemm(o, ckk, ohow, 1.0, w, No, cols, No, 1.0, y_i); // … + W·cols
            }
        };
        let (y_len, cols_len, x_len) = (GROUP * o * ohow, ckk * ohow, GROUP * in_len);
        let y_spare = &mut y_data.spare_capacity_mut()[..n * o * ohow];
        if groups < rayon::current_num_threads() {
            // Too few images to share out (inference on one image): stay on this thread, where
            // a large GEMM may split itself across the threads instead.
            y_spare
                .chunks_mut(y_len)
                .zip(self.cols.chunks_mut(cols_len))
                .zip(x.data().chunks(x_len))
                .for_each(group);
        } else {
            let per_group = y_spare.par_chunks_mut(y_len).zip(self.cols.par_chunks_mut(cols_len));
            per_group.zip(x.data().par_chunks(x_len)).for_each(group);
        }
        // SAFETY: the groups cover all n images, and init_rows wrote every element of each.
        let y = unsafe { Tensor::from_initialised(&self.out_shape, y_data) };
        y
    }

    fn backward(&mut self, g: &Tensor) -> Tensor {
        let mut dx = Tensor::zeros(&self.in_shape);
        self.backward_into(g, Some(&mut dx));
        dx
    }

    fn backward_params_only(&mut self, g: &Tensor) {
        self.backward_into(g, None);
    }

    fn params(&self) -> Vec<&Param> {
        std::iter::once(&self.weight).chain(self.bias.as_ref()).collect()
    }

    fn params_mut(&mut self) -> Vec<&mut Param> {
        std::iter::once(&mut self.weight).chain(self.bias.as_mut()).collect()
    }
}
