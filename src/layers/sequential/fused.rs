//! The execution plan's fused kernel: convolution → ReLU → disjoint max pooling in one pass.
//!
//! Neither layer knows about the other; the plan ([`plan`](super::plan)) recognises the three
//! layer types in a row and calls `conv_then_max_pool` instead of the two forward passes, then
//! ReLU in place. Each group of images' convolution output goes straight from the cache-resident
//! GEMM result into the pooling kernel, and the convolution's full-size output is never written.
//! The values are bit-identical to the layers run one after the other (`tests/exec.rs` compares
//! them on stressing shapes), and the backward passes are the layers' own. Measured when it was
//! introduced: inference +4 %, peak memory of the convnet benchmarks 65 → 36 MiB
//! (docs/benchmarks.md).

use crate::layers::conv2d::fast::{
    ForwardWeights, group_product, group_product_by_pixel_strips, group_scratch, images_per_group,
    with_scratch,
};
use crate::layers::pool::Window;
use crate::layers::pool::fast::{max_pool_2x2_by_pixel, max_pool_plane};
use crate::layers::{Conv2d, Layer, MaxPool2d, Pass, check_input};
use crate::tensor::Tensor;
use crate::tensor::im2col::ConvGeometry;
use crate::tensor::parallel::min_len;
use crate::tensor::transpose::transpose;
use rayon::prelude::*;
use std::borrow::Cow;
use std::mem::MaybeUninit;

/// `maxpool(conv(x))` for the plan: leaves both layers as their own forward passes would (the
/// convolution's cached input, the pooling's arg-max), with bit-identical values.
///
/// `x` is the input as the plan holds it: owned (an activation the model made) is kept as the
/// convolution's cached input without a copy; borrowed (the caller's input) is copied.
///
/// In `Mode::Predict` (`pass.keeps_for_backward()` false) with a 2 × 2 window of stride 2, the
/// pooling's arg-max is left out and each group is pooled by pixel ([`conv_pool_predict_2x2`]):
/// the same values, bit for bit, and the pooling refuses a backward pass after it. There the
/// ReLU that follows in the plan is applied too, to each pooled value while it is in a register
/// (`relu(maxpool(y))`, the plan's order): the second value returned says whether it was.
pub(crate) fn conv_then_max_pool(
    conv: &mut Conv2d,
    x: Cow<'_, Tensor>,
    pool: &mut MaxPool2d,
    pass: Pass<'_>,
) -> (Tensor, bool) {
    conv.out_shape = check_input(conv, &x);
    let geo = conv.geometry_for(x.shape()).expect("checked by check_input");
    conv.geometry = Some(geo);
    match x {
        Cow::Borrowed(x) => conv.input.copy_from(x),
        Cow::Owned(x) => conv.input = x,
    }
    let x = &conv.input;
    let (w, b) = (conv.weight.value.data(), conv.bias.as_ref().map(|b| b.value.data()));
    let (o, kept) = (conv.out_channels, &mut conv.kept_panels);
    let window = pool.window();
    let two_by_two = Window { kernel: (2, 2), stride: (2, 2), padding: (0, 0) };
    if !pass.keeps_for_backward()
        && window == two_by_two
        && crate::tensor::microkernel::kernels().is_some()
        && let Some(pooled_shape) = pool.prepare_external_predict(&conv.out_shape)
    {
        let weights = ForwardWeights::kept(kept, w, b, o, &geo);
        return (conv_pool_predict_2x2(x, &weights, &geo, &pooled_shape), true);
    }
    let Some((pooled_shape, argmax)) = pool.prepare_external_forward(&conv.out_shape) else {
        // The window does not fit: the pooling's own forward reports it.
        let y = crate::layers::conv2d::fast::forward(x, (w, b), kept, o, &geo);
        return (pool.forward(&y, Pass::TRAIN), false);
    };
    let weights = ForwardWeights::kept(kept, w, b, o, &geo);
    (conv_pool_kernel(x, &weights, &geo, window, &pooled_shape, argmax), false)
}

/// `maxpool(conv(x, W) + b)` with the pooling window `win` (output planes `pooled_shape[2..]`),
/// filling `argmax` as [`MaxPool2d`]'s forward does: each group's GEMM
/// result gets its bias and is pooled plane by plane while it is in cache; the convolution's
/// full-size output is never written. The values are the convolution's own forward pass's, bit for bit (the same GEMM, the
/// same `v + b`, the same pooling kernel on the same planes).
fn conv_pool_kernel(
    x: &Tensor,
    weights: &ForwardWeights<'_>,
    geo: &ConvGeometry,
    win: Window,
    pooled_shape: &[usize],
    argmax: &mut [u32],
) -> Tensor {
    let (n, ohow, in_len) = (x.dim(0), geo.col_cols(), geo.input_len());
    let o = weights.outputs();
    let (ph, pw) = (pooled_shape[2], pooled_shape[3]);
    let plane_out = ph * pw;
    assert_eq!(argmax.len(), n * o * plane_out, "conv + pool: arg-max length vs shapes");
    let y_len_total = n * o * plane_out;
    let mut y_data: Vec<f32> = crate::tensor::reserve(y_len_total, "a pooled convolution's output");
    type Group<'a> = ((&'a mut [MaybeUninit<f32>], &'a mut [u32]), &'a [f32]); // (y, arg-max, x)
    let group = |((y_group, arg_group), x_group): Group| {
        let y_group = Tensor::zero_uninit(y_group); // (every element is pooled into below)
        let ld = x_group.len() / in_len * ohow;
        with_scratch(group_scratch(geo, o, ld), |scratch| {
            let ys = group_product(x_group, weights, geo, scratch); // [y[n] …] = W·cols + b
            // Plane (image j, channel oc) of the output is ys[oc, j·OH·OW ..][..OH·OW]: pool it.
            let planes = y_group.chunks_exact_mut(plane_out).zip(arg_group.chunks_exact_mut(plane_out));
            for (p, (y_p, arg_p)) in planes.enumerate() {
                let (j, oc) = (p / o, p % o);
                let plane = &ys[oc * ld + j * ohow..][..ohow];
                max_pool_plane(plane, (geo.out_height, geo.out_width), win, (ph, pw), y_p, arg_p);
            }
        });
    };
    let group_size = images_per_group(geo, o);
    let (y_len, x_len) = (group_size * o * plane_out, group_size * in_len);
    let tasks = (&mut y_data.spare_capacity_mut()[..y_len_total], argmax);
    let groups = n.div_ceil(group_size);
    let outputs = tasks.0.par_chunks_mut(y_len).zip(tasks.1.par_chunks_mut(y_len));
    let parallel = groups >= rayon::current_num_threads(); // as the convolution's own forward pass
    outputs.zip(x.data().par_chunks(x_len)).with_min_len(min_len(groups, parallel)).for_each(group);
    // SAFETY: the groups cover all n images (chunks of group_size·in_len inputs map one to one
    // onto chunks of group_size·o·plane_out outputs), and each group zeroed its whole chunk first.
    unsafe { Tensor::from_initialised(pooled_shape, y_data) }
}

/// Pixels per strip of [`conv_pool_predict_2x2`]'s products, at least: four tiles' rows of the
/// AVX-512 kernels (a strip of 52 × 32 channels is 6.5 KiB).
const STRIP_PIXELS: usize = 48;

/// `maxpool(conv(x, W) + b)` for a 2 × 2 window of stride 2 when no backward pass follows, without
/// the arg-max: each group's product stays as the crate's kernels compute it, one row of `O`
/// channels per pixel, in strips of a few output rows ([`group_product_by_pixel_strips`]), and
/// each window is the maximum of four such rows, channel by channel ([`max_pool_2x2_by_pixel`]),
/// while the strip is in L1 (a single 28 × 28 image's first product, 86 KB, had been pooled from
/// L2: `ab.py` on the Zen 4, single-image latency −5 %, inference at batch 256 +8 %); only the
/// pooled values (a quarter of the product) are transposed to channel planes. [`conv_pool_kernel`] instead transposes the
/// whole product to planes, then pools each plane with its arg-max. The same values, bit for bit:
/// the same product and bias, and each window's first maximum in reading order (or its last NaN),
/// as the pooling's definition picks it (`tests/exec.rs` compares them). Each pooled value also
/// goes through the ReLU that follows in the plan ([`conv_then_max_pool`]).
fn conv_pool_predict_2x2(
    x: &Tensor,
    weights: &ForwardWeights<'_>,
    geo: &ConvGeometry,
    pooled_shape: &[usize],
) -> Tensor {
    let (n, ohow, in_len) = (x.dim(0), geo.col_cols(), geo.input_len());
    let o = weights.outputs();
    let (ph, pw) = (pooled_shape[2], pooled_shape[3]);
    let plane_out = ph * pw;
    let y_len_total = n * o * plane_out;
    let mut y_data: Vec<f32> = crate::tensor::reserve(y_len_total, "a pooled convolution's output");
    assert!(weights.by_pixel(), "conv + pool by pixel: the crate's kernels were checked");
    let group = |(y_group, x_group): (&mut [MaybeUninit<f32>], &[f32])| {
        let y_group = Tensor::zero_uninit(y_group); // (every element is written below)
        let ld = x_group.len() / in_len * ohow;
        with_scratch(group_scratch(geo, o, ld), |scratch| {
            let (scratch, pooled) = scratch.split_at_mut(scratch.len() - plane_out * o);
            let mut y_images = y_group.chunks_exact_mut(o * plane_out);
            // Strips of an even number of output rows, ≥ STRIP_PIXELS pixels: each strip's
            // product is pooled while in L1 (a whole image's can be larger than L2's share).
            let strip_rows = 2 * STRIP_PIXELS.div_ceil(2 * geo.out_width.max(1));
            let strips = (2 * ph, strip_rows);
            let found =
                group_product_by_pixel_strips(x_group, weights, geo, scratch, strips, |_, r0, product| {
                    let (py, rows) = (r0 / 2, product.len() / (2 * geo.out_width * o)); // pooled rows
                    let out = &mut pooled[py * pw * o..][..rows * pw * o];
                    let relu_pooled = max_pool_2x2_by_pixel::<true>; // relu(maxpool(y))
                    crate::tensor::simd::wide!(relu_pooled(product, geo.out_width, (rows, pw), o, out));
                    if py + rows == ph {
                        // The image's last strip: its pooled planes, [pixel, O] → [O, pixel].
                        let y_j = y_images.next().expect("one output per image");
                        transpose((plane_out, o), (&*pooled, o), (y_j, plane_out));
                    }
                });
            found.expect("the kernels run here");
        });
    };
    let group_size = images_per_group(geo, o);
    let (y_len, x_len) = (group_size * o * plane_out, group_size * in_len);
    let groups = n.div_ceil(group_size);
    let outputs = y_data.spare_capacity_mut()[..y_len_total].par_chunks_mut(y_len);
    let parallel = groups >= rayon::current_num_threads(); // as the convolution's own forward pass
    outputs.zip(x.data().par_chunks(x_len)).with_min_len(min_len(groups, parallel)).for_each(group);
    // SAFETY: the groups cover all n images (chunks of group_size·in_len inputs map one to one
    // onto chunks of group_size·o·plane_out outputs), and each group zeroed its whole chunk first.
    unsafe { Tensor::from_initialised(pooled_shape, y_data) }
}
