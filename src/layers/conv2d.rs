//! 2-D convolution, computed as im2col + GEMM.
//!
//! Shapes: `x [N, C, H, W]`, `W [O, C, kh, kw]` (PyTorch's layout), `b [O]`, `y [N, O, OH, OW]`.
//!
//! ```text
//! y[n, o, oy, ox] = b[o] + Σ_c Σ_ki Σ_kj W[o, c, ki, kj] · x[n, c, oy·sh − ph + ki·dh, ox·sw − pw + kj·dw]
//! ```
//!
//! Per image, [`im2col`](crate::tensor::im2col::im2col) lays every receptive field out as a
//! column, so that the convolution is one matrix product (`W` read as a `[O, C·kh·kw]` matrix):
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
//! Images are processed in parallel (rayon) in fixed groups of 4. The `cols` of a group's images
//! sit side by side in one `[C·kh·kw, 4·OH·OW]` matrix (`im2col_strided`), so each product above
//! is one GEMM per group rather than one per image: `matrixmultiply` packs `W` once for four
//! images, and its kernel runs on wider panels. The buffers live in per-thread scratch that stays in
//! cache. The backward pass recomputes `cols` from the cached input instead of keeping every
//! image's `cols` from the forward pass: im2col is cheap next to the GEMMs, and the cached matrices
//! (9× the input for a 3×3 kernel) would be written to and read back from main memory. `dL/dW` is
//! summed per group and the group sums are added in order, so the result does not depend on the
//! number of threads.

use super::{
    Layer, Mode, Param, check_grad, check_input, redraw_parameters, replace_parameters, shape_error,
};
use crate::error::Result;
use crate::tensor::Tensor;
use crate::tensor::gemm::{Transpose::No, Transpose::Yes, sgemm};
use crate::tensor::im2col::{ConvGeometry, col2im_strided, im2col_strided};
use crate::tensor::init::Init;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Images per group: one GEMM per group, one partial `dL/dW` per group (fixed, not tied to the
/// number of threads, so that results are the same on any number of them).
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
    /// Backward: a partial `dL/dW` and `dL/db` per group of images, added in order at the end.
    dw_groups: Vec<f32>,
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
            dw_groups: Vec::new(),
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
        redraw_parameters(self.init, &mut self.weight, self.bias.as_mut(), seed);
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
        let need_dx = dx.is_some();
        // One slice of dx per group (empty slices when dL/dx is not wanted).
        let dx_data: &mut [f32] = dx.as_mut().map_or(&mut [], |d| d.data_mut());
        let mut dx_groups: Vec<&mut [f32]> = if need_dx {
            dx_data.chunks_mut(GROUP * in_len).collect()
        } else {
            (0..groups).map(|_| &mut [][..]).collect()
        };
        let (w, x) = (self.weight.value.data(), self.input.data());
        let per_group = self.dw_groups.par_chunks_mut(partial).zip(dx_groups.par_iter_mut());
        let inputs = g.data().par_chunks(GROUP * o * ohow).zip(x.par_chunks(GROUP * in_len));
        per_group.zip(inputs).for_each(|((dw_db, dx_group), (g_group, x_group))| {
            let (dw, db) = dw_db.split_at_mut(o * ckk);
            let k = x_group.len() / in_len; // images in this group
            let ld = k * ohow;
            with_scratch(ckk * ld + o * ld + if need_dx { ckk * ld } else { 0 }, |scratch| {
                let (cols, rest) = scratch.split_at_mut(ckk * ld);
                let (gs, dcols) = rest.split_at_mut(o * ld);
                for (j, (x_j, g_j)) in
                    x_group.chunks_exact(in_len).zip(g_group.chunks_exact(o * ohow)).enumerate()
                {
                    im2col_strided(x_j, &geo, &mut cols[j * ohow..], ld); // cols = [im2col(x[n]) …], recomputed
                    for (dst, src) in gs.chunks_exact_mut(ld).zip(g_j.chunks_exact(ohow)) {
                        dst[j * ohow..][..ohow].copy_from_slice(src); // g side by side: [O, k·OH·OW]
                    }
                }
                sgemm(o, ld, ckk, 1.0, gs, No, cols, Yes, 1.0, dw); // dW += g·colsᵀ
                for (db_o, row) in db.iter_mut().zip(gs.chunks_exact(ld)) {
                    *db_o += row.iter().sum::<f32>(); // db += Σ_p g[:, o, p]
                }
                if need_dx {
                    sgemm(ckk, o, ld, 1.0, w, Yes, gs, No, 0.0, dcols); // dcols = Wᵀ·g
                    for (j, dx_j) in dx_group.chunks_exact_mut(in_len).enumerate() {
                        col2im_strided(&dcols[j * ohow..], &geo, dx_j, ld); // dx[n] = col2im(dcols)
                    }
                }
            });
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

thread_local! {
    /// Per-thread scratch for a group's `cols`, `g` and `dcols` matrices: reused from call to call
    /// (no allocation in the steady state), only as many as there are threads, and hot in cache.
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` on this thread's scratch buffer, grown to at least `len` elements. (Its contents are
/// whatever the last user left: every user overwrites what it reads.) `f` must not wait on other
/// rayon work, which could run another user of the same buffer on this thread; the GEMMs it calls
/// never do, since a GEMM inside a rayon task does not split.
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|cell| {
        let mut buf = cell.borrow_mut();
        if buf.len() < len {
            buf.resize(len, 0.0);
        }
        f(&mut buf[..len])
    })
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
        let (w, b) = (self.weight.value.data(), self.bias.as_ref().map(|b| b.value.data()));
        let mut y_data: Vec<f32> = Vec::with_capacity(n * o * ohow);
        let group = |(y_group, x_group): (&mut [MaybeUninit<f32>], &[f32])| {
            let k = x_group.len() / in_len; // images in this group
            let ld = k * ohow;
            with_scratch(ckk * ld + o * ld, |scratch| {
                let (cols, ys) = scratch.split_at_mut(ckk * ld);
                for (j, x_j) in x_group.chunks_exact(in_len).enumerate() {
                    im2col_strided(x_j, &geo, &mut cols[j * ohow..], ld); // cols = [im2col(x[n]) …]
                }
                sgemm(o, ckk, ld, 1.0, w, No, cols, No, 0.0, ys); // [y[n] …] = W·cols
                // Scatter to NCHW, adding the bias: each element of the output written once.
                for (j, y_j) in y_group.chunks_mut(o * ohow).enumerate() {
                    for (oc, (dst, src)) in y_j.chunks_mut(ohow).zip(ys.chunks_exact(ld)).enumerate() {
                        let b_o = b.map_or(0.0, |b| b[oc]);
                        for (d, &v) in dst.iter_mut().zip(&src[j * ohow..][..ohow]) {
                            d.write(v + b_o); // y[n] = W·cols + b
                        }
                    }
                }
            });
        };
        let (y_len, x_len) = (GROUP * o * ohow, GROUP * in_len);
        let y_spare = &mut y_data.spare_capacity_mut()[..n * o * ohow];
        if groups < rayon::current_num_threads() {
            // Too few images to share out (inference on one image): stay on this thread, where
            // a large GEMM may split itself across the threads instead.
            y_spare.chunks_mut(y_len).zip(x.data().chunks(x_len)).for_each(group);
        } else {
            y_spare.par_chunks_mut(y_len).zip(x.data().par_chunks(x_len)).for_each(group);
        }
        // SAFETY: the groups cover all n images, and the scatter loop wrote every element of each.
        unsafe { Tensor::from_initialised(&self.out_shape, y_data) }
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
