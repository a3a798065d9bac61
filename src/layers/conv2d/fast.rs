//! The fast convolution kernels behind [`Conv2d`](super::Conv2d): im2col + GEMM, in groups of
//! images, in parallel. They compute what [`reference`](super::reference) defines with plain loops
//! (`tests/reference_kernels.rs` asserts that they agree, to f32 rounding, on random inputs and
//! many geometries); read that file first.
//!
//! Per image, [`im2col`](crate::tensor::im2col::im2col) lays every receptive field out as a column,
//! so that the convolution is one matrix product (`W` read as a `[O, C·kh·kw]` matrix) and its
//! backward pass is a dense layer's, followed by the adjoint of im2col:
//!
//! ```text
//! cols     = im2col(x[n])          [C·kh·kw, OH·OW]
//! y[n]     = W · cols + b          [O, OH·OW]
//! dL/dW   += g[n] · colsᵀ          [O, C·kh·kw]
//! dL/db   += Σ_p g[n, :, p]        [O]
//! dL/dx[n] = col2im(Wᵀ · g[n])     [C, H, W]
//! ```
//!
//! What the code adds to that, and what each part bought (figures from `docs/benchmarks.md`,
//! measured on the 2-core test machine):
//!
//! - **groups of 4 images**: the `cols` of a group sit side by side in one `[C·kh·kw, 4·OH·OW]`
//!   matrix (`im2col_strided`), so each product above is one GEMM per group rather than one per
//!   image — `W` is packed once for four images and the kernel runs on wider panels. Inference at
//!   batch 256: 8,300 → 10,500 images/s.
//! - **per-thread scratch** for a group's matrices, reused from call to call and hot in cache; the
//!   backward pass recomputes `cols` from the cached input instead of keeping every image's (9× the
//!   input for a 3×3 kernel): peak memory 115 → 93 MiB at unchanged speed.
//! - **the output written once**: bias and GEMM result go straight into uninitialised memory, no
//!   zero-fill pass.
//! - **fixed groups, sums in order**: `dL/dW` is summed per group and the group sums are added in
//!   order (in parallel over blocks of elements, each element summing the groups in group order),
//!   so the result does not depend on the number of threads.
//! - **no serial passes over whole tensors**: `dL/dx` is zeroed per group just before its col2im,
//!   the per-group partial sums are overwritten rather than re-zeroed, and bias sums run in 32
//!   lanes (`tensor::dot::sum`) instead of one chain of additions: training +6–14 % (round 2).
//! - **convolution + pooling in one pass** (`sequential::fused::conv_then_max_pool`, used by the execution plan for
//!   convolution → ReLU → max pooling): each group's GEMM result is pooled while in cache; the
//!   full-size output is never written.
//! - **the forward product transposed, on the crate's kernel** (`group_product`, where the CPU
//!   has the kernels): `[y …]ᵀ = colsᵀ·Wᵀ + b`, one row per pixel, `cols` read in place by
//!   columns, `Wᵀ` and the bias packed once per pass (`ForwardWeights`), then an 8 × 8 register
//!   transpose back to channels: no packing of `cols` or `W` per group, the bias added as each
//!   tile is stored. Single-image latency 103 → 97 µs (1 thread) and 104 → 98 µs (2), inference
//!   at batch 256 +2–6 %, training unchanged (AMD EPYC, alternating builds).
//! - **the packed weights kept by the layer** (`KeptPanels`) while its weights and bias stay the
//!   same bit for bit (compared at each pass): at inference they are packed once. Single-image
//!   latency −2–3 % (AMD EPYC, alternating builds); training unchanged.
//! - **window rows instead of `cols` for the forward product** (`by_window_rows`: a stride of 1
//!   down the image and kernel rows of ≥ 32 values): the input by pixel, each row of it cut into
//!   its `OW` windows of one kernel row (`kw·C` values), and the product reads `colsᵀ` in place from
//!   those in `kh` runs of steps — the input copied `kw` times instead of `kh·kw`, the weights'
//!   rows packed in the order `(ki, kj, c)`. AMD EPYC Zen 4, alternating builds: single-image
//!   latency −4 % (1 thread) / −9 % (2), inference at batch 256 +7 % / +4 %, training +3–5 %.
//! - **a first layer's `dL/dW` without im2col** (few taps, stride 1, no `dL/dx`): dot products
//!   over the image, in `conv2d/direct.rs`.

use super::direct;
use crate::tensor::dot::sum;
use crate::tensor::gemm::{Transpose::No, Transpose::Yes, sgemm, sgemm_strided};
use crate::tensor::im2col::{ConvGeometry, col2im_strided, im2col_strided};
use crate::tensor::microkernel::kernels;
use crate::tensor::packed_gemm::{PackedB, gemm_packed_b_columns, gemm_packed_b_in_runs};
use crate::tensor::parallel::{min_len, split_if_threads};
use crate::tensor::transpose::transpose;
use crate::tensor::{Tensor, reserve};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Elements per task when the groups' `dL/dW` sums are added up.
const SUM_BLOCK: usize = 4096;

/// Images per group, at most: one GEMM per group, one partial `dL/dW` per group (fixed by the
/// geometry, not tied to the number of threads, so that results are the same on any number of
/// them; [`images_per_group`]).
pub(crate) const GROUP: usize = 4;

/// The most values a group's unfolded matrices should take (64 MiB of scratch per thread) when
/// it holds more than one image. (A thread keeps its scratch from pass to pass, as the steady
/// state needs: one large image's, a quarter of a gigabyte for 64 channels of 224 × 224, stays
/// with the thread. Freeing it after each group had cost a fresh allocation and zero-fill per
/// image.)
const GROUP_SCRATCH_BUDGET: usize = 16 << 20;

/// Images per group for this geometry and `o` output channels: [`GROUP`], or fewer (at least one)
/// where a group's matrices — `cols`, the gathered `g` or the product, and `dcols`, about
/// `(2·C·kh·kw + 2·O)·OH·OW` values per image — would pass [`GROUP_SCRATCH_BUDGET`]: 64 channels
/// of 224 × 224 images take 64 M values an image, so 1 image a group, not 4 (the backward pass's
/// scratch had been a gigabyte per thread). The geometry alone decides: the same on any number
/// of threads.
pub(crate) fn images_per_group(geo: &ConvGeometry, o: usize) -> usize {
    let per_image = geo.col_rows().saturating_add(o).saturating_mul(2).saturating_mul(geo.col_cols()).max(1);
    (GROUP_SCRATCH_BUDGET / per_image).clamp(1, GROUP)
}

/// `y = conv(x, W) + b` for a batch `x [N, C, H, W]` (`w` is `[O, C·kh·kw]` row-major), output
/// `[N, O, OH, OW]`; `kept`: the layer's panels ([`ForwardWeights::kept`]).
///
/// # Panics
/// If `x` is not a whole number of images of the geometry's size.
pub(crate) fn forward(
    x: &Tensor,
    (w, b): (&[f32], Option<&[f32]>),
    kept: &mut KeptPanels,
    o: usize,
    geo: &ConvGeometry,
) -> Tensor {
    let (n, ckk, ohow, in_len) = (x.dim(0), geo.col_rows(), geo.col_cols(), geo.input_len());
    assert_eq!(x.len(), n * in_len, "conv forward: input length vs geometry");
    assert_eq!(w.len(), o * ckk, "conv forward: weight length vs geometry");
    let group_size = images_per_group(geo, o);
    let groups = n.div_ceil(group_size);
    let mut y_data: Vec<f32> = reserve(n * o * ohow, "a convolution's output");
    let weights = ForwardWeights::kept(kept, w, b, o, geo);
    let group = |(y_group, x_group): (&mut [MaybeUninit<f32>], &[f32])| {
        let ld = x_group.len() / in_len * ohow;
        with_scratch(group_scratch(geo, o, ld), |scratch| {
            let ys = group_product(x_group, &weights, geo, scratch); // [y[n] …] = W·cols + b
            // Scatter to NCHW: each element of the output written once.
            for (j, y_j) in y_group.chunks_mut(o * ohow).enumerate() {
                for (dst, src) in y_j.chunks_mut(ohow).zip(ys.chunks_exact(ld)) {
                    for (d, &v) in dst.iter_mut().zip(&src[j * ohow..][..ohow]) {
                        d.write(v);
                    }
                }
            }
        });
    };
    let (y_len, x_len) = (group_size * o * ohow, group_size * in_len);
    let y_spare = &mut y_data.spare_capacity_mut()[..n * o * ohow];
    // With too few groups to share out (inference on one image) the groups stay on this
    // thread, where a large GEMM may split itself across the threads instead — from outside the
    // pool; on the pool thread that runs a step (`train::on_pool`) the scratch's products stay
    // whole (`with_scratch` runs them as a task).
    let parallel = groups >= rayon::current_num_threads();
    let tasks = y_spare.par_chunks_mut(y_len).zip(x.data().par_chunks(x_len));
    tasks.with_min_len(min_len(groups, parallel)).for_each(group);
    let shape = [n, o, geo.out_height, geo.out_width];
    // SAFETY: the groups cover all n images (chunks of group_size·in_len input values map one to
    // one onto chunks of group_size·o·ohow outputs, lengths asserted above), and the scatter loop wrote
    // every element of each: o channels × ohow positions per image.
    unsafe { Tensor::from_initialised(&shape, y_data) }
}

/// The weights as every group's forward product reads them, prepared once per pass: on a CPU
/// with the crate's kernels, `Wᵀ` packed into panels with the bias (which the kernel adds as it
/// stores each tile); elsewhere `W` and `b` as stored, for `matrixmultiply`. The panels are the
/// layer's own when it keeps them ([`KeptPanels`]), else the calling thread's buffer, taken for
/// the pass and given back when this is dropped (no allocation per pass once it has grown).
pub(crate) struct ForwardWeights<'a> {
    w: &'a [f32],
    b: Option<&'a [f32]>,
    o: usize,
    packed: Panels<'a>,
}

/// Where [`ForwardWeights`]' panels are.
enum Panels<'a> {
    /// None: no kernels here (`matrixmultiply` reads `W` as stored).
    Unpacked,
    /// Packed for this pass into the thread's buffer.
    Thread(PackedB),
    /// The layer's, packed at an earlier pass from the same values.
    Kept(&'a PackedB),
}

impl<'a> ForwardWeights<'a> {
    /// `w` is `[O, C·kh·kw]`, `b` `O` values; packed into the thread's buffer, for `geo`'s
    /// product ([`by_window_rows`]: its steps' order).
    fn new(w: &'a [f32], b: Option<&'a [f32]>, o: usize, geo: &ConvGeometry) -> ForwardWeights<'a> {
        let packed = match geo.col_rows() > 0 && o > 0 && kernels().is_some() {
            true => {
                let mut packed = PACKED_WEIGHTS.take();
                pack_weights(&mut packed, w, b, o, geo);
                Panels::Thread(packed)
            }
            false => Panels::Unpacked,
        };
        ForwardWeights { w, b, o, packed }
    }

    /// [`ForwardWeights::new`] with the layer's `kept` panels: packed again only when `w` or `b`
    /// differ from the values they were packed from (weights too large to keep, over
    /// [`PACKED_WEIGHTS_KEPT`] values, go to the thread's buffer as with `new`).
    pub(crate) fn kept(
        kept: &'a mut KeptPanels,
        w: &'a [f32],
        b: Option<&'a [f32]>,
        o: usize,
        geo: &ConvGeometry,
    ) -> ForwardWeights<'a> {
        if geo.col_rows() == 0 || o == 0 || kernels().is_none() || w.len() > PACKED_WEIGHTS_KEPT {
            return ForwardWeights::new(w, b, o, geo);
        }
        ForwardWeights { w, b, o, packed: Panels::Kept(kept.panels(w, b, o, geo)) }
    }

    /// The panels, where the kernels run here.
    fn panels(&self) -> Option<&PackedB> {
        match &self.packed {
            Panels::Unpacked => None,
            Panels::Thread(packed) => Some(packed),
            Panels::Kept(packed) => Some(packed),
        }
    }

    /// The output channels `O`.
    pub(crate) fn outputs(&self) -> usize {
        self.o
    }

    /// Whether [`group_product_by_pixel`] computes the product (the crate's kernels run here).
    pub(crate) fn by_pixel(&self) -> bool {
        self.panels().is_some()
    }
}

/// `Wᵀ` (`W`: `[O, C·kh·kw]`) into panels, with the bias: its rows (the product's steps) in the
/// order `geo`'s product reads them — `(c, ki, kj)` as stored for `cols`, `(ki, kj, c)` for
/// [`by_window_rows`].
fn pack_weights(packed: &mut PackedB, w: &[f32], b: Option<&[f32]>, o: usize, geo: &ConvGeometry) {
    let ckk = geo.col_rows();
    if by_window_rows(geo) {
        let (c, (kh, kw)) = (geo.channels, geo.kernel);
        let mut by_tap = PERMUTED_WEIGHTS.take();
        by_tap.clear();
        by_tap.resize(w.len(), 0.0);
        // W[o, c, ki, kj] → W'[o, ki, kj, c]: each filter's taps, channel fastest.
        for (filter, out) in w.chunks_exact(ckk).zip(by_tap.chunks_exact_mut(ckk)) {
            for (ch, taps) in filter.chunks_exact(kh * kw).enumerate() {
                for (tap, &v) in taps.iter().enumerate() {
                    out[tap * c + ch] = v;
                }
            }
        }
        packed.pack(ckk, o, &by_tap, true); // op(B) = W'ᵀ: [kh·kw·C, O]
        PERMUTED_WEIGHTS.set(by_tap);
    } else {
        packed.pack(ckk, o, w, true); // op(B) = Wᵀ: [C·kh·kw, O]
    }
    if let Some(b) = b {
        packed.set_bias(b);
    }
}

impl Drop for ForwardWeights<'_> {
    fn drop(&mut self) {
        if let Panels::Thread(packed) = std::mem::replace(&mut self.packed, Panels::Unpacked)
            && packed.capacity() <= PACKED_WEIGHTS_KEPT
        {
            PACKED_WEIGHTS.set(packed);
        }
    }
}

/// A convolution's forward panels kept between passes, with a copy of the weights and bias they
/// were packed from: each pass compares the layer's current values with the copy, bit for bit,
/// and packs again only when they differ — at inference, once. Packing `Wᵀ` (an 8 × 8 register
/// transpose per block) had been 7 % of a single image's forward pass through the reference
/// network; the comparison reads the weights once, in wide vectors. (In training the weights
/// change every step: the comparison stops at the first value, and the panels are packed as
/// before.)
#[derive(Default)]
pub(crate) struct KeptPanels {
    w: Vec<f32>,
    /// The bias packed with them (`None`: none), its buffer reused from pass to pass.
    b: Option<Vec<f32>>,
    packed: PackedB,
    /// The order of the panels' rows: [`by_window_rows`] when packed.
    by_window_rows: bool,
    /// Whether `packed` holds `w` and `b` (false until the first pass).
    valid: bool,
}

impl KeptPanels {
    /// The panels of `w` and `b` for `geo`'s product, packed again only if they differ from the
    /// last call's.
    fn panels(&mut self, w: &[f32], b: Option<&[f32]>, o: usize, geo: &ConvGeometry) -> &PackedB {
        let by_window_rows = by_window_rows(geo);
        let same = self.valid
            && self.by_window_rows == by_window_rows
            && same_bits(&self.w, w)
            && self.b.as_deref().map_or(b.is_none(), |kept| b.is_some_and(|b| same_bits(kept, b)));
        if !same {
            pack_weights(&mut self.packed, w, b, o, geo);
            self.by_window_rows = by_window_rows;
            self.w.clear();
            self.w.extend_from_slice(w); // (copies into the buffer: no allocation once it is grown)
            match b {
                Some(b) => {
                    let kept = self.b.get_or_insert_with(Vec::new);
                    kept.clear();
                    kept.extend_from_slice(b);
                }
                None => self.b = None,
            }
            self.valid = true;
        }
        &self.packed
    }
}

/// Whether `a` and `b` hold the same values bit for bit (a NaN equals itself, −0 differs from
/// +0: the panels would differ). In blocks of 64 values, compared in wide vectors.
fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && crate::tensor::simd::wide!(same_bits_blocks(a, b))
}

#[allow(clippy::needless_range_loop)] // index loops: see `tensor::simd`
#[inline(always)]
fn same_bits_blocks(a: &[f32], b: &[f32]) -> bool {
    const BLOCK: usize = 64;
    for (a, b) in a.chunks(BLOCK).zip(b.chunks(BLOCK)) {
        let b = &b[..a.len()];
        let mut diff = 0u32;
        for i in 0..a.len() {
            diff |= a[i].to_bits() ^ b[i].to_bits();
        }
        if diff != 0 {
            return false;
        }
    }
    true
}

/// Values of packed weights a thread keeps between passes (4 MiB).
const PACKED_WEIGHTS_KEPT: usize = 1 << 20;

thread_local! {
    /// [`ForwardWeights`]' panels, reused from pass to pass on each thread.
    static PACKED_WEIGHTS: std::cell::Cell<PackedB> = std::cell::Cell::new(PackedB::default());
    /// [`pack_weights`]' weights in the order of [`by_window_rows`], reused on each thread.
    static PERMUTED_WEIGHTS: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// The scratch [`group_product`] needs for a group of `ld / (OH·OW)` images: the product's
/// operand `A` (`cols`, or one image's window rows), the product, and the product's transpose.
pub(crate) fn group_scratch(geo: &ConvGeometry, o: usize, ld: usize) -> usize {
    let a = if by_window_rows(geo) { window_rows_len(geo) } else { geo.col_rows() * ld };
    a + 2 * o * ld
}

/// The forward product of one group of `k` images, `[y[0] … y[k−1]] = W·[cols[0] … cols[k−1]] + b`
/// (`[O, k·OH·OW]`), in `scratch` (at least [`group_scratch`] elements). Returns the product's
/// part of `scratch`.
///
/// With the crate's kernels the product is computed transposed, one row per pixel
/// ([`group_product_by_pixel`]), then laid out channel by channel (an 8 × 8 register transpose).
/// `matrixmultiply` packed both `W` and `cols` at every call; and with a pixel per row the tiles
/// cover the product with less padding (121 pixels in tiles of 6 rows against 64 channels in
/// panels of 16, where `W·cols` had 121 columns in panels of 16). Each value is the same sum of
/// products either way, then `+ b[o]`: the same numbers to f32 rounding, not the same bits.
pub(crate) fn group_product<'s>(
    x_group: &[f32],
    weights: &ForwardWeights<'_>,
    geo: &ConvGeometry,
    scratch: &'s mut [f32],
) -> &'s mut [f32] {
    let o = weights.o;
    let ld = x_group.len() / geo.input_len() * geo.col_cols();
    if weights.by_pixel() {
        let (by_pixel, rest) =
            group_product_by_pixel(x_group, weights, geo, scratch).expect("the kernels run here");
        let ys = &mut rest[..o * ld];
        transpose((ld, o), (by_pixel, o), (ys, ld)); // [y …] = W·cols + b
        return ys;
    }
    let (cols, ld, rest) = group_cols(x_group, geo, scratch);
    let ys = &mut rest[..o * ld];
    sgemm(o, geo.col_rows(), ld, 1.0, weights.w, No, cols, No, 0.0, ys); // [y[n] …] = W·cols
    if let Some(b) = weights.b {
        for (row, &b_o) in ys.chunks_exact_mut(ld).zip(b) {
            row.iter_mut().for_each(|v| *v += b_o); // … + b
        }
    }
    ys
}

/// [`group_product`]'s product before its transpose, where the crate's kernels compute it
/// ([`ForwardWeights::by_pixel`]; else `None`): `[y …]ᵀ = colsᵀ·Wᵀ + b`, one row of `O`
/// channels per pixel (`[k·OH·OW, O]`: image `j`'s pixel `p` is row `j·OH·OW + p`), and the
/// `O·k·OH·OW` values of `scratch` it leaves unused, for the caller's own use.
///
/// `A = colsᵀ` is read in place: `cols` by columns, or — for [`by_window_rows`] — each image's
/// window rows, with no `cols` at all.
pub(crate) fn group_product_by_pixel<'s>(
    x_group: &[f32],
    weights: &ForwardWeights<'_>,
    geo: &ConvGeometry,
    scratch: &'s mut [f32],
) -> Option<(&'s mut [f32], &'s mut [f32])> {
    let packed = weights.panels()?;
    let (o, ohow, in_len) = (weights.o, geo.col_cols(), geo.input_len());
    let ld = x_group.len() / in_len * ohow;
    if by_window_rows(geo) {
        let (a, rest) = scratch.split_at_mut(window_rows_len(geo));
        let (by_pixel, spare) = rest.split_at_mut(ld * o);
        for (x_j, y_j) in x_group.chunks_exact(in_len).zip(by_pixel.chunks_exact_mut(ohow * o)) {
            let windows = window_rows(x_j, geo, a);
            product_from_windows(windows, geo, packed, (0, geo.out_height), y_j); // [y[j]]ᵀ = colsᵀ·W'ᵀ + b
        }
        return Some((by_pixel, spare));
    }
    let (cols, ld, rest) = group_cols(x_group, geo, scratch);
    let (spare, by_pixel) = rest.split_at_mut(o * ld);
    let by_pixel = &mut by_pixel[..ld * o];
    gemm_packed_b_columns(ld, (cols, ld), packed, by_pixel); // [y …]ᵀ = colsᵀ·Wᵀ + b
    Some((by_pixel, spare))
}

/// [`group_product_by_pixel`] in strips of output rows, each strip's product computed into a
/// buffer of its own and handed over while it is in L1: for each image `j` of the group and each
/// strip of `strip_rows` output rows among the first `rows` (the last strip may be shorter),
/// `strip(j, first_row, product)` with the strip's product by pixel (`[rows·OW, O]`). The same
/// values as the whole product, bit for bit: each row of a product by pixel is computed alone.
/// `scratch` as for [`group_product`]; `None` where the crate's kernels do not run.
pub(crate) fn group_product_by_pixel_strips(
    x_group: &[f32],
    weights: &ForwardWeights<'_>,
    geo: &ConvGeometry,
    scratch: &mut [f32],
    (rows, strip_rows): (usize, usize),
    mut strip: impl FnMut(usize, usize, &[f32]),
) -> Option<()> {
    let packed = weights.panels()?;
    let (o, ohow, in_len, ow) = (weights.o, geo.col_cols(), geo.input_len(), geo.out_width);
    assert!(rows <= geo.out_height && strip_rows > 0, "conv strips: {rows} rows in strips of {strip_rows}");
    if rows == 0 {
        return Some(()); // no strips
    }
    let strip_rows = strip_rows.min(rows); // (the buffer's rows)
    let strips = (0..rows).step_by(strip_rows).map(|r0| (r0, strip_rows.min(rows - r0)));
    if by_window_rows(geo) {
        let (a, rest) = scratch.split_at_mut(window_rows_len(geo));
        let buf = &mut rest[..strip_rows * ow * o];
        for (j, x_j) in x_group.chunks_exact(in_len).enumerate() {
            let windows = window_rows(x_j, geo, a);
            for (r0, n) in strips.clone() {
                let product = &mut buf[..n * ow * o];
                product_from_windows(windows, geo, packed, (r0, n), product);
                strip(j, r0, product);
            }
        }
    } else {
        let (cols, ld, rest) = group_cols(x_group, geo, scratch);
        let buf = &mut rest[..strip_rows * ow * o];
        for j in 0..x_group.len() / in_len {
            for (r0, n) in strips.clone() {
                let product = &mut buf[..n * ow * o];
                gemm_packed_b_columns(n * ow, (&cols[j * ohow + r0 * ow..], ld), packed, product);
                strip(j, r0, product);
            }
        }
    }
    Some(())
}

/// Output rows `r0 .. r0 + n` of one image's product by pixel (`out`: `[n·OW, O]`) from its
/// [`window_rows`]: pixel `(oy, ox)`'s steps `(ki, kj, c)` are entry `(ox, kj, c)` of window row
/// `oy + ki·dh`, so `kh` runs of `kw·C` steps, `dh·OW` windows apart.
fn product_from_windows(
    windows: &[f32],
    geo: &ConvGeometry,
    packed: &PackedB,
    (r0, n): (usize, usize),
    out: &mut [f32],
) {
    let (ow, run) = (geo.out_width, geo.kernel.1 * geo.channels); // a window: a kernel row's taps
    let runs = (geo.kernel.0, geo.dilation.0 * ow * run);
    gemm_packed_b_in_runs(n * ow, (&windows[r0 * ow * run..], run), runs, packed, out);
}

/// Whether `geo`'s forward product reads its input as window rows ([`window_rows`]) instead of
/// `cols`: for a stride of 1 down the image, with a kernel row of at least [`WINDOW_RUN_MIN`]
/// values (its channels × its width), and the crate's kernels. The weights' rows are then packed
/// in the order `(ki, kj, c)` ([`pack_weights`]).
fn by_window_rows(geo: &ConvGeometry) -> bool {
    geo.stride.0 == 1 && geo.channels * geo.kernel.1 >= WINDOW_RUN_MIN && kernels().is_some()
}

/// The shortest run of steps [`by_window_rows`] reads in place: each run's sums are stored and
/// added to, so a short run (a first layer's 3 taps of one channel) would be mostly stores.
const WINDOW_RUN_MIN: usize = 32;

/// Values [`window_rows`] writes: the input padded and by pixel, then the window rows.
fn window_rows_len(geo: &ConvGeometry) -> usize {
    let (hp, wp) = (geo.height + 2 * geo.padding.0, geo.width + 2 * geo.padding.1);
    hp * wp * geo.channels + hp * geo.out_width * geo.kernel.1 * geo.channels
}

/// One image `x` (`[C, H, W]`) as window rows, for a stride of 1 down the image: row `y` of the
/// zero-padded input gives `OW` windows of one kernel row each, `R[y, ox, kj, c] = x_pad[c, y,
/// ox·sw + kj·dw]` (`[Hp, OW, kw·C]`). Then `cols[(c, ki, kj), (oy, ox)] = R[oy + ki·dh, ox, kj,
/// c]`: pixel `p = oy·OW + ox` is `R`'s entry `p` plus `ki·dh·OW` entries for kernel row `ki`, so
/// the product reads `colsᵀ` in place in `kh` runs of `kw·C` steps, and the input is copied
/// `kw` times instead of im2col's `kh·kw`. First the input by pixel (`[Hp, Wp, C]`, an 8 × 8
/// register transpose per block), so that each window is one copy of `kw·C` adjacent values
/// (or `kw` copies of `C` for a dilated or strided kernel). Returns `R` (the start of `scratch`).
fn window_rows<'s>(x: &[f32], geo: &ConvGeometry, scratch: &'s mut [f32]) -> &'s [f32] {
    let (c, h, w) = (geo.channels, geo.height, geo.width);
    let ((ph, pw), (kw, ow)) = (geo.padding, (geo.kernel.1, geo.out_width));
    let (hp, wp, run) = (h + 2 * ph, w + 2 * pw, kw * c);
    let (by_pixel, rest) = scratch.split_at_mut(hp * wp * c);
    let rows = &mut rest[..hp * ow * run];
    if ph == 0 && pw == 0 {
        transpose((c, h * w), (x, h * w), (by_pixel, c)); // [C, H·W] → [H·W, C]
    } else {
        by_pixel.fill(0.0); // the padding
        for y in 0..h {
            let at = ((y + ph) * wp + pw) * c;
            transpose((c, w), (&x[y * w..], h * w), (&mut by_pixel[at..], c)); // row y: [C, W] → [W, C]
        }
    }
    let (sw, dw) = (geo.stride.1, geo.dilation.1);
    let windows = rows.chunks_exact_mut(run).enumerate();
    if sw == 1 && dw == 1 {
        for (i, window) in windows {
            let (y, ox) = (i / ow, i % ow);
            window.copy_from_slice(&by_pixel[(y * wp + ox) * c..][..run]);
        }
    } else {
        for (i, window) in windows {
            let (y, ox) = (i / ow, i % ow);
            for (kj, tap) in window.chunks_exact_mut(c).enumerate() {
                tap.copy_from_slice(&by_pixel[(y * wp + ox * sw + kj * dw) * c..][..c]);
            }
        }
    }
    rows
}

/// The group's `cols = [im2col(x[0]) … im2col(x[k−1])]` (`[C·kh·kw, k·OH·OW]`, row stride `ld =
/// k·OH·OW`) in the first part of `scratch`: returns them, `ld` and the rest of `scratch`.
fn group_cols<'s>(
    x_group: &[f32],
    geo: &ConvGeometry,
    scratch: &'s mut [f32],
) -> (&'s [f32], usize, &'s mut [f32]) {
    let (ckk, ohow, in_len) = (geo.col_rows(), geo.col_cols(), geo.input_len());
    let ld = x_group.len() / in_len * ohow;
    let (cols, rest) = scratch.split_at_mut(ckk * ld);
    for (j, x_j) in x_group.chunks_exact(in_len).enumerate() {
        im2col_strided(x_j, geo, &mut cols[j * ohow..], ld); // cols = [im2col(x[n]) …]
    }
    (cols, ld, rest)
}

/// The gradients of [`forward`] given `g = dL/dy`: adds `dL/dW` into `dw` and `dL/db` into `db`,
/// and returns `dL/dx` when `want_dx` (written once, each group's part zeroed just before its
/// col2im, never zero-filled as a whole first). `partials` is the caller's buffer for the
/// per-group sums, reused from call to call.
#[allow(clippy::too_many_arguments)] // the three inputs, the three outputs, the geometry, scratch
pub(crate) fn backward(
    x: &Tensor,
    w: &[f32],
    g: &Tensor,
    geo: &ConvGeometry,
    dw: &mut [f32],
    db: Option<&mut [f32]>,
    want_dx: bool,
    partials: &mut Vec<f32>,
) -> Option<Tensor> {
    let o = dw.len() / geo.col_rows();
    let groups = x.dim(0).div_ceil(images_per_group(geo, o));
    // Every group overwrites its partial sums, so the buffer is not re-zeroed (4.7 MB a step for
    // the second layer of the reference network at batch 256).
    if partials.len() != groups * (dw.len() + o) {
        partials.clear();
        partials.resize(groups * (dw.len() + o), 0.0);
    }
    let (dw_parts, db_parts) = partials.split_at_mut(groups * dw.len());
    let dx = backward_in_groups_dx(x, w, g, geo, dw_parts, db_parts, want_dx, false);
    // Add the group sums in a fixed order — each element sums over the groups in group order —
    // the same result on any number of threads; in parallel over blocks of elements.
    let (dw_parts, db_parts) = (&*dw_parts, &*db_parts);
    let add_groups = |(k, out): (usize, &mut [f32]), parts: &[f32], len: usize| {
        for part in parts.chunks_exact(len) {
            out.iter_mut().zip(&part[k * SUM_BLOCK..]).for_each(|(a, b)| *a += b);
        }
    };
    let dw_len = dw.len();
    // (Below 2^16 additions, handing them to rayon would cost more than they take.)
    let blocks = dw.par_chunks_mut(SUM_BLOCK).enumerate();
    let parallel = dw_len * groups >= 1 << 16;
    blocks
        .with_min_len(min_len(dw_len.div_ceil(SUM_BLOCK), parallel))
        .for_each(|b| add_groups(b, dw_parts, dw_len));
    if let Some(db) = db {
        db.chunks_mut(SUM_BLOCK).enumerate().for_each(|block| add_groups(block, db_parts, o));
    }
    dx
}

/// [`backward_in_groups`] with `dL/dx` (when `want_dx`) allocated here and returned initialised.
#[allow(clippy::too_many_arguments)] // as backward_in_groups
pub(crate) fn backward_in_groups_dx(
    x: &Tensor,
    w: &[f32],
    g: &Tensor,
    geo: &ConvGeometry,
    dw_parts: &mut [f32],
    db_parts: &mut [f32],
    want_dx: bool,
    per_image: bool,
) -> Option<Tensor> {
    let len = x.len();
    let mut dx: Option<Vec<f32>> = want_dx.then(|| reserve(len, "a convolution's input gradient"));
    let spare = dx.as_mut().map(|d| &mut d.spare_capacity_mut()[..len]);
    backward_in_groups(x, w, g, geo, dw_parts, db_parts, spare, per_image);
    // SAFETY: given dx, backward_in_groups writes every one of its `len` elements (each group's
    // part of dL/dx is zeroed, then col2im adds into it).
    dx.map(|d| unsafe { Tensor::from_initialised(x.shape(), d) })
}

/// The backward pass with the `dL/dW` and `dL/db` sums kept apart, per group of images
/// ([`images_per_group`])
/// or, with `per_image`, per image (the per-example gradients): on return `dw_parts` holds one
/// `[O, C·kh·kw]` sum per group (or image) and `db_parts` one `[O]` sum (overwritten). `dx` as in
/// [`backward`]. Per image, only the `dL/dW` product is split; `cols`, `dL/dx` and their
/// products still run on the whole group.
#[allow(clippy::too_many_arguments)] // the three inputs, the geometry, the three outputs, the mode
pub(crate) fn backward_in_groups(
    x: &Tensor,
    w: &[f32],
    g: &Tensor,
    geo: &ConvGeometry,
    dw_parts: &mut [f32],
    db_parts: &mut [f32],
    dx: Option<&mut [MaybeUninit<f32>]>,
    per_image: bool,
) {
    let (n, ckk, ohow, in_len) = (x.dim(0), geo.col_rows(), geo.col_cols(), geo.input_len());
    let o = w.len() / ckk.max(1); // W is [O, C·kh·kw]
    let group = images_per_group(geo, o);
    let groups = n.div_ceil(group);
    let parts = if per_image { n } else { groups };
    assert_eq!(db_parts.len(), parts * o, "conv backward: one dL/db per group or image");
    assert_eq!(x.len(), n * in_len, "conv backward: input length vs geometry"); // (dx's groups cover it)
    assert_eq!(g.len(), n * o * ohow, "conv backward: gradient length vs geometry");
    assert_eq!(dw_parts.len(), parts * o * ckk, "conv backward: one dL/dW per group or image");
    let per_group_parts = if per_image { group } else { 1 }; // dW sums per group
    let need_dx = dx.is_some();
    // One slice of dx per group (empty slices when dL/dx is not wanted).
    let mut dx_groups: Vec<&mut [MaybeUninit<f32>]> = match dx {
        Some(d) => d.chunks_mut(group * in_len).collect(),
        None => (0..groups).map(|_| &mut [][..]).collect(),
    };
    let (dw_len, db_len) = (per_group_parts * o * ckk, per_group_parts * o);
    let per_group = dw_parts.par_chunks_mut(dw_len).zip(db_parts.par_chunks_mut(db_len));
    let per_group = per_group.zip(dx_groups.par_iter_mut());
    let inputs = g.data().par_chunks(group * o * ohow).zip(x.data().par_chunks(group * in_len));
    per_group.zip(inputs).with_min_len(split_if_threads(1)).for_each(
        |(((dw, db), dx_group), (g_group, x_group))| {
            if !need_dx && direct::applies(geo) {
                // Few taps, stride 1, no dL/dx wanted (a first layer): direct dot products, no im2col.
                let scratch_len = direct::backward_scratch(geo);
                with_scratch(scratch_len, |scratch| {
                    direct::weight_grads_group(x_group, g_group, geo, dw, db, per_image, scratch);
                });
                return;
            }
            let k = x_group.len() / in_len; // images in this group
            let ld = k * ohow;
            with_scratch(ckk * ld + o * ld + if need_dx { ckk * ld } else { 0 }, |scratch| {
                let (cols, rest) = scratch.split_at_mut(ckk * ld);
                let (gs, dcols) = rest.split_at_mut(o * ld);
                for (j, (x_j, g_j)) in
                    x_group.chunks_exact(in_len).zip(g_group.chunks_exact(o * ohow)).enumerate()
                {
                    im2col_strided(x_j, geo, &mut cols[j * ohow..], ld); // cols = [im2col(x[n]) …], recomputed
                    if need_dx || !per_image {
                        for (dst, src) in gs.chunks_exact_mut(ld).zip(g_j.chunks_exact(ohow)) {
                            dst[j * ohow..][..ohow].copy_from_slice(src); // g side by side: [O, k·OH·OW]
                        }
                    }
                }
                if per_image {
                    for (j, g_j) in g_group.chunks_exact(o * ohow).enumerate() {
                        // dW_n = g[n]·colsₙᵀ: g[n] as it is, image j's columns of cols in place.
                        let cols_j = (&cols[j * ohow..], ld, Yes);
                        let dw_j = (&mut dw[j * o * ckk..][..o * ckk], ckk);
                        sgemm_strided((o, ohow, ckk), 1.0, (g_j, ohow, No), cols_j, 0.0, dw_j);
                        for (db_o, row) in db[j * o..][..o].iter_mut().zip(g_j.chunks_exact(ohow)) {
                            *db_o = sum(row); // db_n = Σ_p g[n, o, p] (32 lanes: a plain sum is one serial chain)
                        }
                    }
                } else {
                    sgemm(o, ld, ckk, 1.0, gs, No, cols, Yes, 0.0, dw); // dW_group = g·colsᵀ
                    for (db_o, row) in db.iter_mut().zip(gs.chunks_exact(ld)) {
                        *db_o = sum(row); // db_group = Σ_p g[:, o, p]
                    }
                }
                if need_dx {
                    sgemm(ckk, o, ld, 1.0, w, Yes, gs, No, 0.0, dcols); // dcols = Wᵀ·g
                    let dx_group = Tensor::zero_uninit(dx_group); // zeroed here, while it is in cache
                    for (j, dx_j) in dx_group.chunks_exact_mut(in_len).enumerate() {
                        col2im_strided(&dcols[j * ohow..], geo, dx_j, ld); // dx[n] = col2im(dcols)
                    }
                }
            });
        },
    );
}

thread_local! {
    /// Per-thread scratch for a group's `cols`, `g` and `dcols` matrices: reused from call to call
    /// (no allocation in the steady state), only as many as there are threads, and hot in cache.
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` on this thread's scratch buffer, grown to at least `len` elements. (Its contents are
/// whatever the last user left: every user overwrites what it reads.) `f` must not wait on other
/// rayon work, which could run another user of the same buffer on this thread; the GEMMs it calls
/// never do: `f` runs as a parallel task's inside ([`as_task`](crate::tensor::parallel::as_task)),
/// where a GEMM on a pool thread does not split (outside the pool a split's wait runs nothing
/// else on this thread).
pub(crate) fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    crate::tensor::parallel::as_task(|| with_scratch_here(len, f))
}

/// [`with_scratch`] once its products cannot split.
fn with_scratch_here<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|cell| {
        let mut buf = cell.borrow_mut();
        if buf.len() < len {
            let more = len - buf.len();
            if let Err(e) = buf.try_reserve_exact(more) {
                panic!("cannot allocate a convolution's scratch of {len} values ({e})");
            }
            buf.resize(len, 0.0);
        }
        f(&mut buf[..len])
    })
}

#[cfg(test)]
mod tests {
    use super::same_bits;

    /// Groups of 4 images for digits-sized layers (the bits the crate's tables were measured
    /// with), fewer for large images: 64 channels of 224 × 224 take one image a group, whose
    /// backward scratch is then about a quarter of a gigabyte, not a gigabyte.
    #[test]
    fn large_images_take_fewer_images_per_group() {
        use super::images_per_group;
        use crate::tensor::im2col::ConvGeometry;
        let digits = ConvGeometry::new((32, 14, 14), (3, 3), (1, 1), (1, 1), (1, 1)).unwrap();
        assert_eq!(images_per_group(&digits, 64), 4);
        let large = ConvGeometry::new((64, 224, 224), (3, 3), (1, 1), (1, 1), (1, 1)).unwrap();
        assert_eq!(images_per_group(&large, 64), 1);
        let mid = ConvGeometry::new((8, 200, 200), (3, 3), (1, 1), (1, 1), (1, 1)).unwrap();
        assert_eq!(images_per_group(&mid, 8), 2);
    }

    /// Bits, not values: a NaN equals the same NaN, −0 differs from +0; every position counts,
    /// across the 64-value blocks and in a short last one; lengths must match.
    #[test]
    fn same_bits_compares_bits() {
        let base: Vec<f32> = (0..150).map(|i| i as f32 * 0.5 - 20.0).collect();
        assert!(same_bits(&base, &base.clone()));
        assert!(!same_bits(&base, &base[..149]));
        for at in [0, 63, 64, 127, 128, 149] {
            let mut other = base.clone();
            other[at] = f32::from_bits(other[at].to_bits() ^ 1);
            assert!(!same_bits(&base, &other), "one bit at {at}");
        }
        let (zero, minus_zero) = ([0.0f32; 3], [0.0, -0.0, 0.0]);
        assert!(!same_bits(&zero, &minus_zero));
        let nan = [1.0, f32::NAN];
        assert!(same_bits(&nan, &nan.clone()));
        assert!(same_bits(&[], &[]));
    }
}
