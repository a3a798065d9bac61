//! Hand-worked values: small cases whose outputs and gradients can be checked on paper.

use backprop::Tensor;
use backprop::layers::*;

fn t(shape: &[usize], v: &[f32]) -> Tensor {
    Tensor::from_vec(shape, v.to_vec()).unwrap()
}

fn assert_close(got: &Tensor, want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: {got}");
    for (i, (g, w)) in got.data().iter().zip(want).enumerate() {
        assert!((g - w).abs() < 1e-5 * (1.0 + w.abs()), "{what}[{i}]: got {g}, want {w} (all: {got})");
    }
}

#[test]
fn dense_by_hand() {
    // W = [[1, 2], [3, 4], [5, 6]], b = [1, 0, −1], x = [[1, −1]]
    let mut d =
        Dense::new(2, 3).with_weights(t(&[3, 2], &[1., 2., 3., 4., 5., 6.]), Some(t(&[3], &[1., 0., -1.])));
    let y = d.forward(&t(&[1, 2], &[1., -1.]), Pass::TRAIN);
    // y = x·Wᵀ + b = [1−2+1, 3−4+0, 5−6−1] = [0, −1, −2]
    assert_close(&y, &[0., -1., -2.], "y");
    let dx = d.backward(&t(&[1, 3], &[1., 0., 2.]), InputGrad::Needed).unwrap();
    // dx = g·W = [1·1 + 2·5, 1·2 + 2·6] = [11, 14]
    assert_close(&dx, &[11., 14.], "dx");
    // dW = gᵀ·x = [[1, −1], [0, 0], [2, −2]]; db = g
    assert_close(&named_params(&d)[0].1.grad, &[1., -1., 0., 0., 2., -2.], "dW");
    assert_close(&named_params(&d)[1].1.grad, &[1., 0., 2.], "db");
}

#[test]
fn conv2d_by_hand() {
    // One 3×3 image, one 2×2 kernel, stride 1, no padding → 2×2 output.
    // x = [[1, 2, 3], [4, 5, 6], [7, 8, 9]], W = [[1, 0], [0, −1]], b = 0.5
    let x = t(&[1, 1, 3, 3], &[1., 2., 3., 4., 5., 6., 7., 8., 9.]);
    let mut c =
        Conv2d::new(1, 1, 2).with_weights(t(&[1, 1, 2, 2], &[1., 0., 0., -1.]), Some(t(&[1], &[0.5])));
    let y = c.forward(&x, Pass::TRAIN);
    // y[i, j] = x[i, j] − x[i+1, j+1] + 0.5 = −4 + 0.5 everywhere
    assert_close(&y, &[-3.5; 4], "y");
    let dx = c.backward(&t(&[1, 1, 2, 2], &[1., 2., 3., 4.]), InputGrad::Needed).unwrap();
    // dx[p] = Σ over outputs o that used p of g[o]·W[tap]: +g at the top-left taps, −g at the bottom-right.
    assert_close(&dx, &[1., 2., 0., 3., 4. - 1., -2., 0., -3., -4.], "dx");
    // dW[a, b] = Σ_{i,j} g[i, j]·x[i+a, j+b]
    // dW[0,0] = 1·1 + 2·2 + 3·4 + 4·5 = 37; dW[0,1] = 1·2+2·3+3·5+4·6 = 47;
    // dW[1,0] = 1·4+2·5+3·7+4·8 = 67; dW[1,1] = 1·5+2·6+3·8+4·9 = 77; db = Σ g = 10
    assert_close(&named_params(&c)[0].1.grad, &[37., 47., 67., 77.], "dW");
    assert_close(&named_params(&c)[1].1.grad, &[10.], "db");
}

#[test]
fn conv2d_padding_stride_by_hand() {
    // 2×2 input, 3×3 all-ones kernel, padding 1, stride 2 → 1×1 output: the sum of the input.
    let x = t(&[1, 1, 2, 2], &[1., 2., 3., 4.]);
    let mut c =
        Conv2d::new(1, 1, 3).padding(1).stride(2).no_bias().with_weights(Tensor::ones(&[1, 1, 3, 3]), None);
    let y = c.forward(&x, Pass::TRAIN);
    assert_eq!(y.shape(), &[1, 1, 1, 1]);
    assert_close(&y, &[10.], "y");
    assert_close(&c.backward(&t(&[1, 1, 1, 1], &[2.]), InputGrad::Needed).unwrap(), &[2.; 4], "dx");
}

#[test]
fn max_pool_by_hand_with_ties() {
    let x = t(&[1, 1, 2, 4], &[1., 3., 2., 2., 4., 0., 2., 1.]);
    let mut p = MaxPool2d::new(2);
    assert_close(&p.forward(&x, Pass::TRAIN), &[4., 2.], "y");
    // Window 2 holds a three-way tie of 2s: the first (row-major) wins the gradient.
    assert_close(
        &p.backward(&t(&[1, 1, 1, 2], &[10., 20.]), InputGrad::Needed).unwrap(),
        &[0., 0., 20., 0., 10., 0., 0., 0.],
        "dx",
    );
    // Floor mode: a 3×3 input with a 2×2 window gives 1×1, ignoring the last row and column.
    let x = t(&[1, 1, 3, 3], &[1., 2., 9., 3., 4., 9., 9., 9., 9.]);
    assert_close(&MaxPool2d::new(2).forward(&x, Pass::TRAIN), &[4.], "floor mode");
}

#[test]
fn avg_pool_by_hand() {
    let x = t(&[1, 1, 2, 4], &[1., 3., 2., 2., 5., 7., 0., 4.]);
    let mut p = AvgPool2d::new(2);
    assert_close(&p.forward(&x, Pass::TRAIN), &[4., 2.], "y");
    assert_close(
        &p.backward(&t(&[1, 1, 1, 2], &[4., 8.]), InputGrad::Needed).unwrap(),
        &[1., 1., 2., 2., 1., 1., 2., 2.],
        "dx",
    );
    // With padding 1 and a 2×2 window, zeros count in the average: corner window = x[0,0]/4.
    let mut p = AvgPool2d::new(2).padding(1);
    let y = p.forward(&t(&[1, 1, 2, 2], &[4., 8., 12., 16.]), Pass::TRAIN);
    assert_close(&y, &[1., 2., 3., 4.], "padded");
}

#[test]
fn global_avg_pool_by_hand() {
    let mut p = GlobalAvgPool::new();
    let y = p.forward(&t(&[1, 2, 2, 1], &[1., 3., 5., 9.]), Pass::TRAIN);
    assert_close(&y, &[2., 7.], "y");
    assert_close(&p.backward(&t(&[1, 2], &[2., 4.]), InputGrad::Needed).unwrap(), &[1., 1., 2., 2.], "dx");
}

#[test]
fn flatten_by_hand() {
    let mut f = Flatten::new();
    let x = Tensor::from_fn(&[2, 2, 1, 2], |i| (i[0] * 4 + i[1] * 2 + i[3]) as f32);
    let y = f.forward(&x, Pass::TRAIN);
    assert_eq!(y.shape(), &[2, 4]);
    assert_eq!(y.data(), x.data());
    assert_eq!(f.backward(&y, InputGrad::Needed).unwrap().shape(), &[2, 2, 1, 2]);
}

#[test]
fn activations_by_hand() {
    let x = t(&[1, 3], &[-2., 0., 3.]);
    let g = t(&[1, 3], &[1., 1., 1.]);
    let mut relu = Relu::new();
    assert_close(&relu.forward(&x, Pass::TRAIN), &[0., 0., 3.], "relu");
    assert_close(&relu.backward(&g, InputGrad::Needed).unwrap(), &[0., 0., 1.], "relu'");
    let mut lrelu = LeakyRelu::new(0.1);
    assert_close(&lrelu.forward(&x, Pass::TRAIN), &[-0.2, 0., 3.], "leaky");
    assert_close(&lrelu.backward(&g, InputGrad::Needed).unwrap(), &[0.1, 0.1, 1.], "leaky'");
    let mut sig = Sigmoid::new();
    let y = sig.forward(&t(&[1, 2], &[0., 2f32.ln()]), Pass::TRAIN);
    assert_close(&y, &[0.5, 2. / 3.], "sigmoid"); // σ(ln 2) = 2/3
    assert_close(
        &sig.backward(&t(&[1, 2], &[1., 1.]), InputGrad::Needed).unwrap(),
        &[0.25, 2. / 9.],
        "sigmoid'",
    ); // y(1−y)
    let mut tanh = Tanh::new();
    let y = tanh.forward(&t(&[1, 1], &[3f32.ln()]), Pass::TRAIN);
    assert_close(&y, &[0.8], "tanh"); // tanh(ln 3) = (3 − 1/3)/(3 + 1/3) = 0.8
    assert_close(&tanh.backward(&t(&[1, 1], &[1.]), InputGrad::Needed).unwrap(), &[0.36], "tanh'"); // 1 − 0.64
    // GELU(0) = 0 with slope ½; GELU(x) → x for large x; GELU(1) = Φ(1) = 0.841345 (exact),
    // GELU'(1) = Φ(1) + φ(1) = 0.841345 + 0.241971.
    let mut gelu = Gelu::new();
    assert_close(&gelu.forward(&t(&[1, 3], &[0., 1., 10.]), Pass::TRAIN), &[0., 0.841_344_7, 10.], "gelu");
    assert_close(
        &gelu.backward(&t(&[1, 3], &[1., 1., 1.]), InputGrad::Needed).unwrap(),
        &[0.5, 1.083_315_5, 1.],
        "gelu'",
    );
    // Far out, GELU'(x) = Φ(x) + x·φ(x) → 1 above and 0 below: x·φ(x) underflows long before
    // |x| = 10³⁸ (it is 10⁻⁸⁵ at x = 20), and must not come back from a clamped e^(−x²/2).
    let far = [20., -20., 1e20, -1e20, 1e38, -1e38, 3e38, -3e38];
    let y = gelu.forward(&t(&[1, 8], &far), Pass::TRAIN);
    assert_close(&y, &[20., 0., 1e20, 0., 1e38, 0., 3e38, 0.], "gelu far out");
    let dx = gelu.backward(&t(&[1, 8], &[1.; 8]), InputGrad::Needed).unwrap();
    assert_eq!(dx.data(), &[1., 0., 1., 0., 1., 0., 1., 0.], "gelu' far out");
    // tanh approximation at 1: ½(1 + tanh(√(2/π)·1.044715)) = 0.841192
    let mut gelu_t = Gelu::tanh();
    assert_close(&gelu_t.forward(&t(&[1, 1], &[1.]), Pass::TRAIN), &[0.841_192], "gelu tanh");
}

#[test]
fn softmax_by_hand() {
    let mut s = Softmax::new();
    // [0, ln 3] → [1/4, 3/4]; a huge shift changes nothing.
    let y = s.forward(&t(&[2, 2], &[0., 3f32.ln(), 1000., 1000. + 3f32.ln()]), Pass::TRAIN);
    assert_close(&y, &[0.25, 0.75, 0.25, 0.75], "softmax");
    // g = [1, 0]: dx = y ⊙ (g − y·g) = [¼(1 − ¼), ¾(0 − ¼)] = [3/16, −3/16]
    assert_close(
        &s.backward(&t(&[2, 2], &[1., 0., 1., 0.]), InputGrad::Needed).unwrap(),
        &[0.1875, -0.1875, 0.1875, -0.1875],
        "softmax'",
    );
}

#[test]
fn dropout_statistics_and_modes() {
    let mut d = Dropout::new(0.25).seed(42);
    let x = Tensor::ones(&[100, 100]);
    let y = d.forward(&x, Pass::TRAIN);
    let kept = y.data().iter().filter(|&&v| v != 0.0).count() as f32 / 10_000.0;
    assert!((kept - 0.75).abs() < 0.02, "kept fraction {kept}");
    assert!(y.data().iter().all(|&v| v == 0.0 || (v - 4. / 3.).abs() < 1e-6));
    assert!((y.mean() - 1.0).abs() < 0.03, "inverted dropout keeps the mean: {}", y.mean());
    // The gradient flows through exactly the kept units, with the same scale.
    let dx = d.backward(&Tensor::ones(&[100, 100]), InputGrad::Needed).unwrap();
    assert_eq!(dx, y);
    // Same seed, same mask; eval mode is the identity.
    assert_eq!(Dropout::new(0.25).seed(42).forward(&x, Pass::TRAIN), y);
    assert_eq!(d.forward(&x, Pass::EVAL), x);
    assert_eq!(d.backward(&x, InputGrad::Needed).unwrap(), x);
}

#[test]
fn batchnorm_by_hand() {
    // One channel, values [1, 3]: μ = 2, σ² = 1, x̂ = [−1, 1]/√(1 + ε).
    let mut bn = BatchNorm1d::new(1).eps(0.0);
    let y = bn.forward(&t(&[2, 1], &[1., 3.]), Pass::TRAIN);
    assert_close(&y, &[-1., 1.], "y");
    // Running stats: mean 0.9·0 + 0.1·2 = 0.2; var 0.9·1 + 0.1·(1·2/1) = 1.1 (unbiased σ² = 2).
    assert_close(bn.running_mean(), &[0.2], "running mean");
    assert_close(bn.running_var(), &[1.1], "running var");
    // g = [1, 0]: Σg = 1, Σg·x̂ = −1, dx = (1/2)·(2g − 1 − x̂·(−1)) = [(2 − 1 − 1)/2, (0 − 1 + 1)/2] = [0, 0]
    assert_close(&bn.backward(&t(&[2, 1], &[1., 0.]), InputGrad::Needed).unwrap(), &[0., 0.], "dx");
    assert_close(&named_params(&bn)[0].1.grad, &[-1.], "dγ");
    assert_close(&named_params(&bn)[1].1.grad, &[1.], "dβ");
    // With two values every gradient projects to zero; three values give a non-zero answer:
    // values [0, 0, 3]: μ = 1, σ² = 2, x̂ = [−1, −1, 2]/√2; g = [1, 0, 0]:
    let mut bn = BatchNorm1d::new(1).eps(0.0);
    bn.forward(&t(&[3, 1], &[0., 0., 3.]), Pass::TRAIN);
    let s = 2f32.sqrt();
    // Σg = 1, Σg·x̂ = −1/√2, dx = 1/(3√2)·(3g − 1 + x̂/√2) = 1/(3√2)·[3 − 1 − ½, −1 − ½, −1 + 1]
    let dx = bn.backward(&t(&[3, 1], &[1., 0., 0.]), InputGrad::Needed).unwrap();
    assert_close(&dx, &[1.5 / (3. * s), -1.5 / (3. * s), 0.], "dx");
    // Eval mode: x̂ = (x − running_mean)/√running_var.
    let mut bn = BatchNorm2d::new(1).eps(0.0);
    let y = bn.forward(&t(&[1, 1, 1, 2], &[2., 4.]), Pass::EVAL); // running mean 0, var 1
    assert_close(&y, &[2., 4.], "eval identity at init");
    assert_close(
        &bn.backward(&t(&[1, 1, 1, 2], &[1., 1.]), InputGrad::Needed).unwrap(),
        &[1., 1.],
        "eval dx",
    );
}

#[test]
fn max_pool_propagates_nan_on_every_path() {
    // 2×2 stride 2 (dedicated path), 2×2 stride 1 and 3×3 (fixed-size paths), padded (general path).
    let mut x = Tensor::from_fn(&[1, 1, 4, 4], |i| (i[2] * 4 + i[3]) as f32);
    x[&[0, 0, 1, 1]] = f32::NAN;
    for mut pool in [
        MaxPool2d::new(2),
        MaxPool2d::new(2).stride(1),
        MaxPool2d::new(3).stride(1),
        MaxPool2d::new(2).padding(1),
    ] {
        let y = pool.forward(&x, Pass::TRAIN);
        // Every window that holds the NaN outputs NaN; the others are untouched numbers.
        let k =
            y.data().iter().position(|v| v.is_nan()).unwrap_or_else(|| panic!("{}: {y}", pool.describe()));
        assert!(y.data().iter().filter(|v| v.is_nan()).count() <= 4);
        // The gradient of a NaN output goes to the NaN input.
        let mut g = Tensor::zeros(y.shape());
        g.data_mut()[k] = 1.0;
        assert_eq!(pool.backward(&g, InputGrad::Needed).unwrap()[&[0, 0, 1, 1]], 1.0, "{}", pool.describe());
    }
}

#[test]
fn nan_handling_matches_pytorch() {
    // ReLU: NaN stays NaN forward, and its gradient passes through (PyTorch's mask is y <= 0).
    let mut relu = Relu::new();
    let y = relu.forward(&t(&[1, 3], &[f32::NAN, 1., -1.]), Pass::TRAIN);
    assert!(y.data()[0].is_nan() && y.data()[1] == 1.0 && y.data()[2] == 0.0);
    assert_close(
        &relu.backward(&t(&[1, 3], &[5., 6., 7.]), InputGrad::Needed).unwrap(),
        &[5., 6., 0.],
        "relu' at NaN",
    );
    // Max pooling: with several NaNs in a window, the gradient goes to the last one (PyTorch's CPU
    // kernel replaces the running maximum by every NaN it meets).
    let x = t(&[1, 1, 2, 4], &[1., f32::NAN, f32::NAN, 5., f32::NAN, 0., 2., f32::NAN]);
    for mut pool in [MaxPool2d::new(2), MaxPool2d::new(2).padding(1)] {
        let y = pool.forward(&x, Pass::TRAIN);
        assert!(y.data().iter().all(|v| v.is_nan() || *v == 0.0 || *v == 1.0 || *v == 2.0 || *v == 5.0));
        let dx = pool.backward(&Tensor::ones(y.shape()), InputGrad::Needed).unwrap();
        if pool.describe() == "MaxPool2d(2×2)" {
            // Windows [1, NaN; NaN, 0] and [NaN, 5; 2, NaN]: last NaNs at flat indices 4 and 7.
            assert_close(&dx, &[0., 0., 0., 0., 1., 0., 0., 1.], "routing to the last NaN");
        }
    }
}

/// The fast exact GELU (f32, vectorisable) against its f64 definition, on a grid over the range
/// where the two can differ and far out, and at the special values.
#[test]
fn fast_gelu_agrees_with_its_definition() {
    use backprop::layers::activation::{
        gelu_derivative_fast, gelu_derivative_reference, gelu_fast, gelu_reference,
    };
    let mut worst = (0.0f32, 0.0f32);
    for i in -200_000..=200_000 {
        let x = i as f32 * 5e-5; // [-10, 10]
        let tolerance = 4e-7 * x.abs().max(1.0);
        let (e, d) = (
            (gelu_fast(x) - gelu_reference(x)).abs(),
            (gelu_derivative_fast(x) - gelu_derivative_reference(x)).abs(),
        );
        assert!(e <= tolerance && d <= tolerance, "x = {x}: f {e:e}, f' {d:e}");
        worst = (worst.0.max(e / x.abs().max(1.0)), worst.1.max(d / x.abs().max(1.0)));
    }
    for x in [-1e30f32, -100.0, 100.0, 1e30] {
        // exp_fast stops at e^−87 instead of underflowing to 0: x·e^−87 for |x| ≫ 1, far inside.
        assert!((gelu_fast(x) - gelu_reference(x)).abs() <= 4e-7 * x.abs(), "{x}");
        assert!((gelu_derivative_fast(x) - gelu_derivative_reference(x)).abs() <= 1e-7, "{x}");
    }
    assert_eq!((gelu_fast(0.0), gelu_derivative_fast(0.0)), (0.0, 0.5));
    assert!(gelu_fast(f32::NAN).is_nan() && gelu_derivative_fast(f32::NAN).is_nan());
    println!("worst relative error: f {:e}, f' {:e}", worst.0, worst.1);
}

/// `Dense` keeps no input in `Mode::Predict`: the same output as `Eval`, bit for bit; a backward
/// pass afterwards refuses, naming the layer and the mode; training afterwards is unchanged.
#[test]
fn dense_predict_mode_keeps_nothing_and_changes_nothing() {
    let x = Tensor::randn(&[700, 64], 0.0, 1.0, 31); // tall: the crate's own kernel
    let dy = Tensor::randn(&[700, 48], 0.0, 1.0, 32);
    let make = || Dense::new(64, 48).seed(5);
    let eval = make().forward(&x, Pass::EVAL);
    let mut dense = make();
    assert_eq!(dense.forward(&x, Pass::PREDICT), eval);
    let refused = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        drop(dense.backward(&dy, InputGrad::Needed))
    }));
    let message = refused.expect_err("backward after Predict must panic");
    let message = message.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(message.contains("Dense(64→48") && message.contains("Mode::Predict"), "{message}");
    let mut fresh = make();
    fresh.forward(&x, Pass::TRAIN);
    let want = fresh.backward(&dy, InputGrad::Needed).unwrap();
    dense.forward(&x, Pass::TRAIN);
    assert_eq!(dense.backward(&dy, InputGrad::Needed).unwrap(), want);
    assert_eq!(dense.weight().grad, fresh.weight().grad);
}

/// ReLU keeps no mask in `Mode::Predict`: the same output as `Eval` (NaN, −0 and a tensor large
/// enough to split included); a backward pass afterwards refuses, naming the layer and the mode;
/// training afterwards is unchanged.
#[test]
fn relu_predict_mode_keeps_nothing_and_changes_nothing() {
    let mut x = Tensor::randn(&[300, 300], 0.0, 1.0, 41);
    x.data_mut()[..3].copy_from_slice(&[f32::NAN, -0.0, 0.0]);
    let dy = Tensor::randn(&[300, 300], 0.0, 1.0, 42);
    let eval = Relu::new().forward(&x, Pass::EVAL);
    let mut relu = Relu::new();
    let predicted = relu.forward(&x, Pass::PREDICT);
    let bits = |t: &Tensor| t.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&predicted), bits(&eval));
    let refused = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        drop(relu.backward(&dy, InputGrad::Needed))
    }));
    let payload = refused.expect_err("backward after Predict must panic");
    let message = payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    assert!(message.contains("ReLU") && message.contains("Mode::Predict"), "{message}");
    let mut fresh = Relu::new();
    fresh.forward(&x, Pass::TRAIN);
    relu.forward(&x, Pass::TRAIN);
    assert_eq!(
        bits(&relu.backward(&dy, InputGrad::Needed).unwrap()),
        bits(&fresh.backward(&dy, InputGrad::Needed).unwrap())
    );
}
