//! The weight gradients of a convolution with few taps (`C·kh·kw ≤ 32`) and stride 1 computed
//! directly, without im2col and without a GEMM — typically the first layer of an image network
//! (one or three input channels, a 3×3 or 5×5 kernel), which needs no `dL/dx`. It computes what
//! [`reference`](super::reference) defines.
//!
//! Why: `dL/dW = g·colsᵀ` is a GEMM whose output is only `C·kh·kw` = 9 columns wide for one channel
//! and a 3×3 kernel; `matrixmultiply` runs it at 28–36 % of its best speed (`docs/benchmarks.md`),
//! after writing and reading a `cols` matrix 9× the size of the image. Here it is `O·C·kh·kw` dot
//! products, each streaming over the image once.
//!
//! The trick that makes them contiguous: run the output index over the *input's* row width. With
//! stride 1, output `q = oy·Wp + ox` of the padded plane (`Wp` = padded input width) reads input
//! element `q + off` for tap `(c, ki, kj)`, where `off = c·Hp·Wp + ki·dh·Wp + kj·dw`. Every tap is
//! then a contiguous, shifted slice of the image:
//!
//! ```text
//! gp[o, oy·Wp + ox] = g[o, oy, ox]  for ox < OW,  0 for the Wp − OW positions that straddle two rows
//! dL/dW[o, tap]    += Σ_q gp[o, q] · xp[q + off(tap)]          q = 0 .. (OH−1)·Wp + OW
//! dL/db[o]         += Σ_p g[o, p]
//! ```
//!
//! `xp` is the image itself when there is no padding, otherwise a zero-bordered copy. The sums run
//! in lanes added in a fixed order (`tensor::dot::shifted_dots`: up to 8 taps per pass over `gp`),
//! with AVX2 where the CPU has it and the same operations in plain Rust elsewhere, so the results depend neither on the CPU nor on the number
//! of threads. (The zeros of `gp` multiply real input values; a non-finite input therefore makes a
//! weight gradient NaN where the reference may give ±∞ or, for a pixel that only a dilation's
//! holes or a stride skips, a finite value — although the forward pass never read that pixel.
//! `fit` refuses non-finite inputs before the first batch.)
//!
//! Tried and dropped: the forward pass in the same form (a block of 32 outputs in registers across
//! the taps) was slower than im2col + GEMM, 3.2–3.9 ms against 2.4–2.6 ms for the first layer at
//! batch 256 — its accumulators form one dependent chain per tap, and the pass is bound by writing
//! its output anyway.

use crate::tensor::dot::{shifted_dots, sum};
use crate::tensor::im2col::ConvGeometry;
use crate::tensor::simd::wide;

/// The most taps (`C·kh·kw`) the direct kernel takes; above that the GEMM's reuse of each loaded
/// value pays and im2col + GEMM is faster.
pub(crate) const MAX_TAPS: usize = 32;

/// Whether the direct kernel computes this convolution.
pub(crate) fn applies(geo: &ConvGeometry) -> bool {
    geo.stride == (1, 1) && geo.col_rows() <= MAX_TAPS && geo.col_cols() > 0
}

/// The padded plane's layout: `Hp`, `Wp`, the length `L` of the accumulator, and each tap's offset.
struct Plane {
    hp: usize,
    wp: usize,
    len: usize,
    offsets: [usize; MAX_TAPS],
    taps: usize,
}

impl Plane {
    fn new(geo: &ConvGeometry) -> Plane {
        let (hp, wp) = (geo.height + 2 * geo.padding.0, geo.width + 2 * geo.padding.1);
        let mut offsets = [0; MAX_TAPS];
        let mut t = 0;
        for c in 0..geo.channels {
            for ki in 0..geo.kernel.0 {
                for kj in 0..geo.kernel.1 {
                    offsets[t] = c * hp * wp + ki * geo.dilation.0 * wp + kj * geo.dilation.1;
                    t += 1;
                }
            }
        }
        // The last output read, (OH−1)·Wp + OW − 1 + the last tap's offset, is the plane's last element.
        let len = (geo.out_height - 1) * wp + geo.out_width;
        Plane { hp, wp, len, offsets, taps: t }
    }

    /// Elements of the padded image, `C·Hp·Wp`.
    fn image_len(&self, channels: usize) -> usize {
        channels * self.hp * self.wp
    }
}

/// The image as the kernel reads it: itself without padding, else copied into `buf` with a zero
/// border.
fn padded<'a>(x: &'a [f32], geo: &ConvGeometry, plane: &Plane, buf: &'a mut [f32]) -> &'a [f32] {
    if geo.padding == (0, 0) {
        return x;
    }
    let (ph, pw) = geo.padding;
    buf.fill(0.0);
    for (src, dst) in x.chunks_exact(geo.height * geo.width).zip(buf.chunks_exact_mut(plane.hp * plane.wp)) {
        for (row, d) in src.chunks_exact(geo.width).zip(dst[ph * plane.wp..].chunks_exact_mut(plane.wp)) {
            d[pw..pw + geo.width].copy_from_slice(row);
        }
    }
    buf
}

/// Scratch elements [`weight_grads_group`] needs: the accumulator and a padded image.
pub(crate) fn backward_scratch(geo: &ConvGeometry) -> usize {
    let plane = Plane::new(geo);
    plane.len + plane.image_len(geo.channels)
}

/// The weight and bias gradients of one group of images `x` (`[k, C, H, W]`) given `g`
/// (`[k, O, OH, OW]`): with `per_image`, image `j`'s `dL/dW` goes to `dw[j·O·taps..]` and its
/// `dL/db` to `db[j·O..]`; otherwise the group's sums go to `dw` and `db`. Both are overwritten.
/// `scratch` must hold at least [`backward_scratch`] elements.
pub(crate) fn weight_grads_group(
    x: &[f32],
    g: &[f32],
    geo: &ConvGeometry,
    dw: &mut [f32],
    db: &mut [f32],
    per_image: bool,
    scratch: &mut [f32],
) {
    let plane = Plane::new(geo);
    let (ohow, in_len) = (geo.col_cols(), geo.input_len());
    let o = db.len() / if per_image { x.len() / in_len } else { 1 };
    let (gp, pad_buf) = scratch.split_at_mut(plane.len);
    let pad_buf = &mut pad_buf[..plane.image_len(geo.channels)];
    dw.fill(0.0);
    db.fill(0.0);
    let mut dw_parts = dw.chunks_exact_mut(o * plane.taps);
    let mut db_parts = db.chunks_exact_mut(o);
    let (mut dw_n, mut db_n) = (dw_parts.next(), db_parts.next());
    for (x_j, g_j) in x.chunks_exact(in_len).zip(g.chunks_exact(o * ohow)) {
        let xp = padded(x_j, geo, &plane, pad_buf);
        let (dw_j, db_j) = (dw_n.as_deref_mut().expect("a dW part"), db_n.as_deref_mut().expect("a db part"));
        wide!(weight_grads_image(xp, g_j, &plane, geo, gp, dw_j, db_j));
        if per_image {
            (dw_n, db_n) = (dw_parts.next(), db_parts.next());
        }
    }
}

/// Adds one image's `dL/dW` and `dL/db` into `dw` and `db`.
#[inline(always)]
fn weight_grads_image(
    xp: &[f32],
    g: &[f32],
    plane: &Plane,
    geo: &ConvGeometry,
    gp: &mut [f32],
    dw: &mut [f32],
    db: &mut [f32],
) {
    let offsets = &plane.offsets[..plane.taps];
    let ow = geo.out_width;
    for ((g_o, dw_o), db_o) in g.chunks_exact(geo.col_cols()).zip(dw.chunks_exact_mut(plane.taps)).zip(db) {
        *db_o += sum(g_o); // dL/db[o] += Σ_p g[o, p]
        // gp: g[o] on the padded plane's row width, zeros where the accumulator straddles rows.
        for (oy, row) in g_o.chunks_exact(ow).enumerate() {
            let dst = &mut gp[oy * plane.wp..];
            dst[..ow].copy_from_slice(row);
            let gap = (plane.len - oy * plane.wp - ow).min(plane.wp - ow);
            dst[ow..ow + gap].fill(0.0);
        }
        // dL/dW[o, tap] += Σ_q gp[q] · xp[q + off(tap)], all taps in one pass over gp
        let mut dots = [0.0f32; MAX_TAPS];
        shifted_dots(gp, xp, offsets, &mut dots);
        dw_o.iter_mut().zip(&dots).for_each(|(dw_t, d)| *dw_t += d);
    }
}
