//! Every fast kernel against the plain-loop reference that defines it: convolution (forward,
//! weight, bias and input gradients) to f32 rounding, max and average pooling bit for bit, on
//! random and tie-heavy inputs and many geometries.

use backprop::layers::conv2d::reference::{conv2d_backward, conv2d_forward};
use backprop::layers::named_params;
use backprop::layers::pool::Window;
use backprop::layers::pool::reference::{
    avg_pool2d_backward, avg_pool2d_forward, max_pool2d_backward, max_pool2d_forward,
};
use backprop::prelude::*;
use backprop::privacy::per_example::{PerExampleGrads, backward_per_example};
use backprop::tensor::im2col::ConvGeometry;

fn assert_close(fast: &Tensor, reference: &Tensor, what: &str) {
    assert_eq!(fast.shape(), reference.shape(), "{what}");
    let scale = reference.data().iter().fold(1.0f32, |m, v| m.max(v.abs()));
    let err = fast.max_abs_diff(reference);
    assert!(err <= 1e-5 * scale, "{what}: fast and reference differ by {err} (scale {scale})");
}

#[test]
fn conv2d_fast_equals_reference() {
    type Case =
        (usize, usize, usize, usize, usize, (usize, usize), (usize, usize), (usize, usize), (usize, usize));
    // (N, C, H, W, O, kernel, stride, padding, dilation); N = 5 and 9 leave a partial group of images.
    let cases: &[Case] = &[
        (1, 1, 5, 5, 1, (3, 3), (1, 1), (0, 0), (1, 1)),
        (2, 3, 6, 7, 4, (3, 3), (1, 1), (1, 1), (1, 1)),
        (5, 2, 7, 5, 3, (3, 2), (2, 1), (1, 0), (1, 1)),
        (9, 2, 9, 8, 2, (3, 3), (1, 1), (2, 2), (2, 2)),
        (4, 1, 28, 28, 8, (3, 3), (1, 1), (0, 0), (1, 1)),
        (3, 8, 6, 6, 5, (1, 1), (1, 1), (0, 0), (1, 1)),
        (2, 3, 5, 9, 2, (1, 3), (3, 2), (1, 1), (1, 2)),
        // Stride 1 without padding (im2col's and col2im's unpadded fast path), with dilation and
        // with rows shorter and longer than its blocks of 8.
        (3, 4, 9, 10, 3, (3, 2), (1, 1), (0, 0), (2, 3)),
        (2, 5, 8, 21, 3, (3, 3), (1, 1), (0, 0), (1, 1)),
        // Enough groups × weights (4 × 18,432) that the group sums are added in parallel.
        (16, 32, 8, 8, 64, (3, 3), (1, 1), (0, 0), (1, 1)),
        // Kernel rows of ≥ 32 values (channels × width): the forward product reads window rows
        // (`conv2d::fast::by_window_rows`) — padded, strided across, dilated, and with runs
        // longer than a block of steps (128 channels × 3 = 384).
        (5, 16, 9, 10, 8, (3, 3), (1, 2), (1, 1), (1, 1)),
        (2, 12, 10, 9, 5, (2, 3), (1, 1), (0, 2), (2, 2)),
        (2, 128, 5, 6, 7, (3, 3), (1, 1), (1, 1), (1, 1)),
        // Images large enough that a group holds 2 of them, not 4 (`images_per_group`: the
        // scratch budget), with a partial group of 1.
        (3, 8, 200, 200, 8, (3, 3), (1, 1), (1, 1), (1, 1)),
    ];
    for (i, &(n, c, h, w, o, k, s, p, d)) in cases.iter().enumerate() {
        let x = Tensor::randn(&[n, c, h, w], 0.0, 1.0, i as u64);
        let mut conv =
            Conv2d::with_kernel(c, o, k).stride_hw(s.0, s.1).padding_hw(p.0, p.1).dilation_hw(d.0, d.1);
        conv = conv.seed(i as u64 + 10);
        let geo = ConvGeometry::new((c, h, w), k, s, p, d).unwrap();
        let (weight, bias) = (conv.weight().value.clone(), Tensor::randn(&[o], 0.0, 1.0, 99));
        let mut conv = conv.with_weights(weight.clone(), Some(bias.clone()));
        let what = format!("case {i}: {}", conv.describe());

        let y = conv.forward(&x, Pass::TRAIN);
        assert_close(&y, &conv2d_forward(&x, &weight, Some(&bias), &geo), &format!("{what}, forward"));
        let g = Tensor::randn(y.shape(), 0.0, 1.0, 7);
        let dx = conv.backward(&g, InputGrad::Needed).unwrap();
        let (dx_ref, dw_ref, db_ref) = conv2d_backward(&x, &weight, &g, &geo);
        assert_close(&dx, &dx_ref, &format!("{what}, dL/dx"));
        let grads = named_params(&conv);
        assert_close(&grads[0].1.grad, &dw_ref, &format!("{what}, dL/dW"));
        assert_close(&grads[1].1.grad, &db_ref, &format!("{what}, dL/db"));
    }
}

/// The direct kernel (few taps, stride 1; `src/layers/conv2d/direct.rs`) behind the forward pass
/// and, when no `dL/dx` is wanted (a first layer), the weight gradients: against the reference,
/// and its per-image gradients against one image at a time.
#[test]
fn conv2d_direct_kernel_equals_reference() {
    type Case = (usize, usize, usize, usize, usize, (usize, usize), (usize, usize), (usize, usize));
    // (N, C, H, W, O, kernel, padding, dilation): C·kh·kw from 1 to 32, odd sizes, partial groups.
    let cases: &[Case] = &[
        (5, 1, 28, 28, 8, (3, 3), (0, 0), (1, 1)),
        (3, 3, 11, 13, 4, (3, 3), (1, 1), (1, 1)),
        (2, 1, 9, 7, 3, (5, 5), (2, 2), (1, 1)),
        (9, 2, 8, 9, 2, (3, 3), (2, 2), (2, 2)),
        (1, 1, 4, 4, 1, (1, 1), (0, 0), (1, 1)),
        (4, 2, 6, 40, 3, (4, 4), (0, 3), (1, 2)),
        (2, 1, 3, 3, 2, (3, 3), (0, 0), (1, 1)),
    ];
    for (i, &(n, c, h, w, o, k, p, d)) in cases.iter().enumerate() {
        let x = Tensor::randn(&[n, c, h, w], 0.0, 1.0, i as u64 + 30);
        let conv = Conv2d::with_kernel(c, o, k).padding_hw(p.0, p.1).dilation_hw(d.0, d.1).seed(i as u64);
        let geo = ConvGeometry::new((c, h, w), k, (1, 1), p, d).unwrap();
        let (weight, bias) = (conv.weight().value.clone(), Tensor::randn(&[o], 0.0, 1.0, 98));
        let mut conv = conv.with_weights(weight.clone(), Some(bias.clone()));
        let what = format!("case {i}: {}", conv.describe());
        let y = conv.forward(&x, Pass::TRAIN);
        assert_close(&y, &conv2d_forward(&x, &weight, Some(&bias), &geo), &format!("{what}, forward"));
        let g = Tensor::randn(y.shape(), 0.0, 1.0, 8);
        assert!(conv.backward(&g, InputGrad::NotNeeded).is_none());
        let (_, dw_ref, db_ref) = conv2d_backward(&x, &weight, &g, &geo);
        let grads = named_params(&conv);
        assert_close(&grads[0].1.grad, &dw_ref, &format!("{what}, dL/dW"));
        assert_close(&grads[1].1.grad, &db_ref, &format!("{what}, dL/db"));
        // Per image: row j of each slot is image j's gradient alone.
        let mut per_image = PerExampleGrads::new();
        conv.forward(&x, Pass::TRAIN);
        per_image.start(n);
        backward_per_example(&mut conv, &g, InputGrad::NotNeeded, &mut per_image);
        for j in 0..n {
            let (x_j, g_j) = (x.select_outer(&[j]), g.select_outer(&[j]));
            let (_, dw_j, db_j) = conv2d_backward(&x_j, &weight, &g_j, &geo);
            let row = |slot: usize, like: &Tensor| {
                Tensor::from_vec(like.shape(), per_image.slot(slot).outer(j).to_vec()).unwrap()
            };
            assert_close(&row(0, &dw_j), &dw_j, &format!("{what}, image {j}'s dL/dW"));
            assert_close(&row(1, &db_j), &db_j, &format!("{what}, image {j}'s dL/db"));
        }
    }
}

/// Random values, or values drawn from a small set with ±0, exact repeats, adjacent floats and
/// NaN, so that windows tie often.
fn inputs(shape: &[usize], seed: u64) -> Vec<Tensor> {
    let palette = [0.0f32, -0.0, 1.0, -1.0, 2.5, f32::from_bits(2.5f32.to_bits() + 1), -3.0];
    let r = Tensor::rand_uniform(shape, 0.0, palette.len() as f32, seed);
    let ties = r.map(|u| palette[(u as usize).min(palette.len() - 1)]);
    let mut nan = ties.clone();
    for i in (3..nan.len()).step_by(11) {
        nan.data_mut()[i] = f32::NAN;
    }
    vec![Tensor::randn(shape, 0.0, 1.0, seed), ties, nan]
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.data().iter().map(|v| v.to_bits()).collect()
}

fn windows() -> Vec<Window> {
    let w = |kernel, stride, padding| Window { kernel, stride, padding };
    vec![
        w((2, 2), (2, 2), (0, 0)), // the row-pair kernel
        w((2, 2), (1, 1), (0, 0)), // fixed 2×2, overlapping
        w((3, 3), (2, 2), (0, 0)), // fixed 3×3
        w((3, 3), (1, 1), (1, 1)), // general, padded
        w((2, 3), (2, 1), (1, 1)), // general, rectangular
        w((1, 1), (1, 1), (0, 0)),
        w((4, 4), (4, 4), (2, 0)),
    ]
}

#[test]
fn max_pool_fast_equals_reference_bit_for_bit() {
    for (wi, win) in windows().into_iter().enumerate() {
        // For the vector row-pair kernel (2×2, stride 2): rows of 18 windows (two blocks of 8 and an
        // overlapping third), of 5 (4-wide blocks) and of 4.
        for shape in [[2, 3, 8, 8], [1, 2, 7, 9], [3, 1, 5, 4], [2, 2, 6, 37], [2, 3, 6, 11], [1, 2, 4, 8]] {
            for (ii, x) in inputs(&shape, wi as u64).into_iter().enumerate() {
                let what = format!("{win:?} on {shape:?}, input kind {ii}");
                let mut pool = MaxPool2d::with_kernel(win.kernel)
                    .stride_hw(win.stride.0, win.stride.1)
                    .padding_hw(win.padding.0, win.padding.1);
                assert_eq!(pool.window(), win);
                let y = pool.forward(&x, Pass::TRAIN);
                let (y_ref, argmax) = max_pool2d_forward(&x, &win);
                assert_eq!(bits(&y), bits(&y_ref), "{what}: forward");
                let g = Tensor::randn(y.shape(), 0.0, 1.0, 3);
                let dx = pool.backward(&g, InputGrad::Needed).unwrap();
                assert_eq!(bits(&dx), bits(&max_pool2d_backward(x.shape(), &argmax, &g)), "{what}: backward");
            }
        }
    }
}

#[test]
fn avg_pool_fast_equals_reference_bit_for_bit() {
    for (wi, win) in windows().into_iter().enumerate() {
        for shape in [[2, 3, 8, 8], [1, 2, 7, 9]] {
            let x = Tensor::randn(&shape, 0.0, 1.0, wi as u64);
            let what = format!("{win:?} on {shape:?}");
            let mut pool = AvgPool2d::with_kernel(win.kernel)
                .stride_hw(win.stride.0, win.stride.1)
                .padding_hw(win.padding.0, win.padding.1);
            let y = pool.forward(&x, Pass::TRAIN);
            assert_eq!(bits(&y), bits(&avg_pool2d_forward(&x, &win)), "{what}: forward");
            let g = Tensor::randn(y.shape(), 0.0, 1.0, 3);
            let dx = pool.backward(&g, InputGrad::Needed).unwrap();
            assert_eq!(bits(&dx), bits(&avg_pool2d_backward(x.shape(), &win, &g)), "{what}: backward");
        }
    }
}

/// A layer's buffer (running statistics) by name, as values.
fn buffer(layer: &dyn Layer, which: &str) -> Vec<f32> {
    let mut out = Vec::new();
    layer.visit(&mut |name, state| {
        if let (true, backprop::layers::State::Buffer(t)) = (name == which, state) {
            out = t.data().to_vec();
        }
    });
    out
}

/// Batch normalisation's layers (their passes for the machine: the channels in parallel, vector
/// loops) against the plain loops of `batchnorm::reference`: the batch statistics (through the
/// running ones), `y` and `dL/dx` to f32 rounding and `dL/dγ`, `dL/dβ` too, in training and
/// evaluation — for `[N, C]` (one value per row), `[N, C, L]` and `[N, C, H, W]`, odd sizes that
/// leave a tail after the last group of four, a large input cut across threads, and values with a
/// large mean and a small spread; on one thread and on two, the same bits. A reference given
/// mismatched shapes panics with a message naming them.
#[test]
fn batchnorm_layers_equal_the_reference() {
    use backprop::layers::batchnorm::reference;
    let shapes: &[&[usize]] =
        &[&[7, 3], &[64, 10], &[5, 4, 9], &[3, 2, 5, 7], &[16, 32, 12, 12], &[2, 1, 1, 3]];
    let mut runs = Vec::new();
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        let mut bits_here = Vec::new();
        pool.install(|| {
            for (s, &shape) in shapes.iter().enumerate() {
                for offset in [0.0f32, 1000.0] {
                    let c = shape[1];
                    let mut layer: Box<dyn Layer> = match shape.len() {
                        4 => Box::new(BatchNorm2d::new(c).momentum(1.0)),
                        _ => Box::new(BatchNorm1d::new(c).momentum(1.0)),
                    };
                    let gamma: Vec<f32> = (0..c).map(|k| 0.5 + k as f32 * 0.25).collect();
                    let beta: Vec<f32> = (0..c).map(|k| k as f32 * 0.1 - 0.3).collect();
                    for (name, p) in backprop::layers::named_params_mut(&mut *layer) {
                        let v = if name == "weight" { &gamma } else { &beta };
                        p.value = Tensor::from_vec(&[c], v.clone()).unwrap();
                    }
                    let x = Tensor::rand_uniform(shape, -2.0, 2.0, 10 + s as u64).map(|v| v + offset);
                    let g = Tensor::rand_uniform(shape, -1.0, 1.0, 20 + s as u64);
                    let stats = reference::statistics(&x);
                    let mean: Vec<f32> = stats.iter().map(|s| s.0 as f32).collect();
                    let inv: Vec<f32> = stats.iter().map(|s| 1.0 / (s.1 as f32 + 1e-5).sqrt()).collect();
                    let (x_hat, y_ref) = reference::normalize(&x, (&mean, &inv), (&gamma, &beta));
                    // Training: batch statistics (momentum 1: the running mean is the batch's μ).
                    let y = layer.forward(&x, Pass::TRAIN);
                    let running_mean = buffer(&*layer, "running_mean");
                    for ch in 0..c {
                        let (got, want) = (running_mean[ch], mean[ch]);
                        assert!(
                            (got - want).abs() <= 1e-6 * (1.0 + want.abs()),
                            "{shape:?} μ[{ch}]: {got}, {want}"
                        );
                    }
                    assert_close(&y, &y_ref, &format!("{shape:?} y"));
                    let grads = |layer: &mut dyn Layer| {
                        backprop::layers::zero_grad(layer);
                        let dx = layer.backward(&g, InputGrad::Needed).unwrap();
                        let params = backprop::layers::named_params(layer);
                        (dx, params[0].1.grad.clone(), params[1].1.grad.clone())
                    };
                    let (dx, dgamma, dbeta) = grads(&mut *layer);
                    let (dx_ref, sums) = reference::backward(&g, &x_hat, &inv, &gamma, true);
                    assert_close(&dx, &dx_ref, &format!("{shape:?} dx (train)"));
                    let dgamma_ref =
                        Tensor::from_vec(&[c], sums.iter().map(|s| s.1 as f32).collect()).unwrap();
                    let dbeta_ref =
                        Tensor::from_vec(&[c], sums.iter().map(|s| s.0 as f32).collect()).unwrap();
                    assert_close(&dgamma, &dgamma_ref, &format!("{shape:?} dγ"));
                    assert_close(&dbeta, &dbeta_ref, &format!("{shape:?} dβ"));
                    bits_here.extend([bits(&y), bits(&dx), bits(&dgamma), bits(&dbeta)]);
                    // Evaluation: the running statistics.
                    let y_eval = layer.forward(&x, Pass::EVAL);
                    let running_var = buffer(&*layer, "running_var");
                    let inv_eval: Vec<f32> = running_var.iter().map(|v| 1.0 / (v + 1e-5).sqrt()).collect();
                    let running_mean = buffer(&*layer, "running_mean");
                    let (x_hat_eval, y_eval_ref) =
                        reference::normalize(&x, (&running_mean, &inv_eval), (&gamma, &beta));
                    assert_eq!(bits(&y_eval), bits(&y_eval_ref), "{shape:?} y (eval)");
                    let (dx_eval, _, _) = grads(&mut *layer);
                    let (dx_eval_ref, _) = reference::backward(&g, &x_hat_eval, &inv_eval, &gamma, false);
                    assert_eq!(bits(&dx_eval), bits(&dx_eval_ref), "{shape:?} dx (eval)");
                }
            }
        });
        runs.push(bits_here);
    }
    assert!(runs[0] == runs[1], "one thread against two");
    let message = |f: fn()| {
        let e = std::panic::catch_unwind(f).unwrap_err();
        e.downcast_ref::<String>().cloned().unwrap_or_default()
    };
    let m = message(|| {
        drop(reference::normalize(&Tensor::zeros(&[2, 3]), (&[0.0; 2], &[1.0; 3]), (&[1.0; 3], &[0.0; 3])))
    });
    assert!(m.contains("mean holds 2 values, expected one per channel (3) of [2, 3]"), "{m}");
    let m = message(|| {
        drop(reference::backward(
            &Tensor::zeros(&[2, 4]),
            &Tensor::zeros(&[2, 3]),
            &[1.0; 3],
            &[1.0; 3],
            true,
        ))
    });
    assert!(m.contains("g is [2, 4], x_hat [2, 3]"), "{m}");
    let m = message(|| drop(reference::statistics(&Tensor::zeros(&[3]))));
    assert!(m.contains("expected [N, C, …], got shape [3]"), "{m}");
}

/// Convolution → ReLU → max pooling run fused (a `Sequential`'s prediction) on images large enough
/// for groups of 2 (the scratch budget) gives what the three layers give one after another.
#[test]
fn fused_conv_pool_on_large_images_equals_the_layers() {
    let x = Tensor::randn(&[3, 8, 200, 200], 0.0, 1.0, 5);
    let mut model = Sequential::builder(&[8, 200, 200])
        .add(Conv2d::new(8, 8, 3).padding(1))
        .add(Relu::new())
        .add(MaxPool2d::new(2))
        .seed(3)
        .build()
        .unwrap();
    let fused = model.predict(&x, 3).unwrap();
    let mut y = x.clone();
    for i in 0..model.len() {
        y = model.layer_mut(i).forward(&y, Pass::EVAL);
    }
    assert_close(&fused, &y, "fused conv + ReLU + pool against the layers");
}
