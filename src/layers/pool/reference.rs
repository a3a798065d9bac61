//! The readable definition of max and average pooling: forward and backward as plain loops over
//! every window, one channel plane at a time, with no threads and no special cases. The pooling
//! layers compute exactly this; `tests/reference_kernels.rs` asserts that the fast kernels agree
//! (bit for bit: pooling only compares, copies and adds in the same order).
//!
//! ```text
//! max:  y[n, c, oy, ox] = max over the window of x[n, c, iy, ix]
//!       dL/dx[n, c, i*] += g[n, c, oy, ox]       i* = the window's arg-max: the first maximum in
//!                                                reading order, or the last NaN if there is one
//! avg:  y[n, c, oy, ox] = (1/(kh·kw)) Σ_window x  (padding counts as zeros, in the sum and the divisor)
//!       dL/dx[n, c, i]  += g[n, c, oy, ox] / (kh·kw)   for every i in the window
//! ```

use super::{Window, span};
use crate::tensor::Tensor;

/// The windows of one `[N, C, H, W]` input: output size and, per output position, the input
/// rows and columns it covers (clipped to the image: padding cells are skipped).
fn windows(x_shape: &[usize], win: &Window) -> (usize, usize, usize, usize) {
    let g = win.geometry("pooling", x_shape).unwrap_or_else(|e| panic!("{e}"));
    (x_shape[2], x_shape[3], g.out_height, g.out_width)
}

/// Max pooling by the definition: the outputs and, for each output, the flat index within its
/// plane of the input that won.
///
/// # Panics
/// If `x` is not `[N, C, H, W]` or the window does not fit.
pub fn max_pool2d_forward(x: &Tensor, win: &Window) -> (Tensor, Vec<usize>) {
    let (h, w, oh, ow) = windows(x.shape(), win);
    let planes = x.dim(0) * x.dim(1);
    let mut y = Tensor::zeros(&[x.dim(0), x.dim(1), oh, ow]);
    let mut argmax = Vec::with_capacity(y.len());
    for p in 0..planes {
        let plane = &x.data()[p * h * w..][..h * w];
        for oy in 0..oh {
            for ox in 0..ow {
                let mut best: Option<usize> = None;
                for iy in span(oy, win.stride.0, win.padding.0, win.kernel.0, h) {
                    for ix in span(ox, win.stride.1, win.padding.1, win.kernel.1, w) {
                        let i = iy * w + ix;
                        let wins = match best {
                            None => true,
                            Some(b) if plane[b].is_nan() => plane[i].is_nan(), // a later NaN wins
                            Some(b) => plane[i].is_nan() || plane[i] > plane[b], // strict: first max kept
                        };
                        if wins {
                            best = Some(i);
                        }
                    }
                }
                let b = best.expect("every window holds at least one input");
                y.data_mut()[(p * oh + oy) * ow + ox] = plane[b];
                argmax.push(b);
            }
        }
    }
    (y, argmax)
}

/// The input gradient of max pooling: each output's gradient goes to its window's winner.
///
/// # Panics
/// If the shapes do not fit together.
pub fn max_pool2d_backward(x_shape: &[usize], argmax: &[usize], g: &Tensor) -> Tensor {
    let (h, w) = (x_shape[2], x_shape[3]);
    let per_plane = g.dim(2) * g.dim(3);
    let mut dx = Tensor::zeros(x_shape);
    for (k, (&gv, &i)) in g.data().iter().zip(argmax).enumerate() {
        let plane = k / per_plane;
        dx.data_mut()[plane * h * w + i] += gv; // dL/dx[i*] += g
    }
    dx
}

/// Average pooling by the definition.
///
/// # Panics
/// If `x` is not `[N, C, H, W]` or the window does not fit.
pub fn avg_pool2d_forward(x: &Tensor, win: &Window) -> Tensor {
    let (h, w, oh, ow) = windows(x.shape(), win);
    let area = (win.kernel.0 * win.kernel.1) as f32;
    let mut y = Tensor::zeros(&[x.dim(0), x.dim(1), oh, ow]);
    for p in 0..x.dim(0) * x.dim(1) {
        let plane = &x.data()[p * h * w..][..h * w];
        for oy in 0..oh {
            for ox in 0..ow {
                let mut sum = 0.0;
                for iy in span(oy, win.stride.0, win.padding.0, win.kernel.0, h) {
                    for ix in span(ox, win.stride.1, win.padding.1, win.kernel.1, w) {
                        sum += plane[iy * w + ix];
                    }
                }
                y.data_mut()[(p * oh + oy) * ow + ox] = sum * (1.0 / area); // y = (1/(kh·kw)) Σ x
            }
        }
    }
    y
}

/// The input gradient of average pooling: every input of a window gets `g / (kh·kw)`.
///
/// # Panics
/// If the shapes do not fit together.
pub fn avg_pool2d_backward(x_shape: &[usize], win: &Window, g: &Tensor) -> Tensor {
    let (h, w, oh, ow) = windows(x_shape, win);
    let area = (win.kernel.0 * win.kernel.1) as f32;
    let mut dx = Tensor::zeros(x_shape);
    for p in 0..x_shape[0] * x_shape[1] {
        for oy in 0..oh {
            for ox in 0..ow {
                let share = g.data()[(p * oh + oy) * ow + ox] * (1.0 / area);
                for iy in span(oy, win.stride.0, win.padding.0, win.kernel.0, h) {
                    for ix in span(ox, win.stride.1, win.padding.1, win.kernel.1, w) {
                        dx.data_mut()[p * h * w + iy * w + ix] += share; // dL/dx += g/(kh·kw)
                    }
                }
            }
        }
    }
    dx
}
