//! The readable definition of 2-D convolution: forward and backward as plain loops over the
//! formula, with no im2col, no GEMM and no threads. This is what [`Conv2d`](super::Conv2d)
//! computes; its fast kernels ([`fast`](super::fast)) are tested against these functions on
//! random inputs and many geometries (`tests/reference_kernels.rs`).
//!
//! ```text
//! y[n, o, oy, ox] = b[o] + Σ_c Σ_ki Σ_kj W[o, c, ki, kj] · x[n, c, iy, ix]
//!                   with iy = oy·sh − ph + ki·dh,  ix = ox·sw − pw + kj·dw  (taps outside x read 0)
//! ```
//!
//! Each product `W[o, c, ki, kj] · x[n, c, iy, ix]` in that sum contributes to one output, so the
//! chain rule sends `g[n, o, oy, ox] = dL/dy[n, o, oy, ox]` back along the same triple loop:
//!
//! ```text
//! dL/dW[o, c, ki, kj] += g[n, o, oy, ox] · x[n, c, iy, ix]
//! dL/dx[n, c, iy, ix] += g[n, o, oy, ox] · W[o, c, ki, kj]
//! dL/db[o]            += g[n, o, oy, ox]
//! ```
//!
//! (Strictly, this is cross-correlation — the kernel is not flipped — which is what every deep
//! learning library calls convolution.)

use crate::tensor::Tensor;
use crate::tensor::im2col::ConvGeometry;

/// The input position `(iy, ix)` that kernel tap `(ki, kj)` of output `(oy, ox)` reads, or `None`
/// in the zero padding.
fn tap(g: &ConvGeometry, (oy, ox): (usize, usize), (ki, kj): (usize, usize)) -> Option<(usize, usize)> {
    let iy = (oy * g.stride.0 + ki * g.dilation.0).checked_sub(g.padding.0)?;
    let ix = (ox * g.stride.1 + kj * g.dilation.1).checked_sub(g.padding.1)?;
    (iy < g.height && ix < g.width).then_some((iy, ix))
}

/// `y = conv(x, W) + b` for `x [N, C, H, W]`, `w [O, C, kh, kw]`, `b [O]`, by the formula.
///
/// # Panics
/// If the shapes do not match `g` (`x` must be `[N, g.channels, g.height, g.width]`).
pub fn conv2d_forward(x: &Tensor, w: &Tensor, b: Option<&Tensor>, g: &ConvGeometry) -> Tensor {
    let (n, c, o) = (x.dim(0), g.channels, w.dim(0));
    assert_eq!(x.shape(), [n, c, g.height, g.width], "conv2d_forward: input vs geometry");
    assert_eq!(w.shape(), [o, c, g.kernel.0, g.kernel.1], "conv2d_forward: weight vs geometry");
    let mut y = Tensor::zeros(&[n, o, g.out_height, g.out_width]);
    for b_ in 0..n {
        for oc in 0..o {
            for oy in 0..g.out_height {
                for ox in 0..g.out_width {
                    let mut sum = b.map_or(0.0, |b| b.data()[oc]);
                    for ic in 0..c {
                        for ki in 0..g.kernel.0 {
                            for kj in 0..g.kernel.1 {
                                if let Some((iy, ix)) = tap(g, (oy, ox), (ki, kj)) {
                                    sum += w[&[oc, ic, ki, kj]] * x[&[b_, ic, iy, ix]];
                                }
                            }
                        }
                    }
                    y[&[b_, oc, oy, ox]] = sum;
                }
            }
        }
    }
    y
}

/// The gradients of [`conv2d_forward`] given `gy = dL/dy`: `(dL/dx, dL/dW, dL/db)`.
///
/// # Panics
/// If the shapes do not match `g`.
pub fn conv2d_backward(x: &Tensor, w: &Tensor, gy: &Tensor, g: &ConvGeometry) -> (Tensor, Tensor, Tensor) {
    let (n, c, o) = (x.dim(0), g.channels, w.dim(0));
    assert_eq!(gy.shape(), [n, o, g.out_height, g.out_width], "conv2d_backward: gradient vs geometry");
    let (mut dx, mut dw, mut db) = (Tensor::zeros(x.shape()), Tensor::zeros(w.shape()), Tensor::zeros(&[o]));
    for b_ in 0..n {
        for oc in 0..o {
            for oy in 0..g.out_height {
                for ox in 0..g.out_width {
                    let gv = gy[&[b_, oc, oy, ox]];
                    db.data_mut()[oc] += gv; // dL/db[o] += g
                    for ic in 0..c {
                        for ki in 0..g.kernel.0 {
                            for kj in 0..g.kernel.1 {
                                if let Some((iy, ix)) = tap(g, (oy, ox), (ki, kj)) {
                                    dw[&[oc, ic, ki, kj]] += gv * x[&[b_, ic, iy, ix]]; // dL/dW += g·x
                                    dx[&[b_, ic, iy, ix]] += gv * w[&[oc, ic, ki, kj]]; // dL/dx += g·W
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    (dx, dw, db)
}
