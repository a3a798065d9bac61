//! Every layer's backward pass against finite differences, on several shapes and settings.

use backprop::Tensor;
use backprop::gradcheck::{Options, Report, check_layer};
use backprop::layers::*;

const TOL: f32 = 2e-2;

fn check(name: &str, layer: &mut dyn Layer, x: &Tensor, mode: Mode) -> Report {
    let report = check_layer(layer, x, mode, &Options::default());
    assert!(report.passes(TOL), "{name} ({mode:?}), input {:?}:\n{report}", x.shape());
    // Every parameter was checked, and the input too.
    assert_eq!(report.tensors.len(), 1 + named_params(layer).len());
    report
}

/// Values bounded away from 0 by at least `gap` (for layers with a kink at 0).
fn away_from_zero(shape: &[usize], gap: f32, seed: u64) -> Tensor {
    Tensor::randn(shape, 0.0, 1.0, seed).map(|v| if v >= 0.0 { v + gap } else { v - gap })
}

/// A permutation of evenly spaced values: no ties, gaps of 0.1 between any two entries.
fn distinct(shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let keys = Tensor::rand_uniform(&[n], 0.0, 1.0, seed);
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| keys.data()[a].total_cmp(&keys.data()[b]));
    let mut data = vec![0.0; n];
    for (rank, &i) in order.iter().enumerate() {
        data[i] = rank as f32 * 0.1 - n as f32 * 0.05;
    }
    Tensor::from_vec(shape, data).unwrap()
}

#[test]
fn dense() {
    for (i, &(n, inp, out)) in [(1, 1, 1), (3, 5, 4), (4, 7, 2), (2, 16, 9)].iter().enumerate() {
        let x = Tensor::randn(&[n, inp], 0.0, 1.0, i as u64);
        check("Dense", &mut Dense::new(inp, out).seed(i as u64), &x, Mode::Train);
        check("Dense no bias", &mut Dense::new(inp, out).no_bias().seed(9), &x, Mode::Train);
    }
}

#[test]
fn conv2d() {
    type Case = (usize, usize, usize, usize, usize, (usize, usize), usize, usize, usize);
    // (N, C, H, W, O, kernel, stride, padding, dilation)
    let cases: &[Case] = &[
        (1, 1, 5, 5, 1, (3, 3), 1, 0, 1),
        (2, 3, 6, 7, 4, (3, 3), 1, 1, 1),
        (3, 2, 7, 5, 3, (3, 2), 2, 1, 1),
        (2, 2, 9, 8, 2, (3, 3), 1, 2, 2),
        (5, 1, 6, 6, 2, (2, 2), 2, 0, 1), // N = 5: a group of 4 images and a group of 1
        (2, 3, 5, 9, 2, (1, 3), 3, 1, 2),
    ];
    for (i, &(n, c, h, w, o, k, s, p, d)) in cases.iter().enumerate() {
        let x = Tensor::randn(&[n, c, h, w], 0.0, 1.0, i as u64);
        let mut conv = Conv2d::with_kernel(c, o, k).stride(s).padding(p).dilation(d).seed(i as u64);
        check(&conv.describe(), &mut conv, &x, Mode::Train);
    }
    let x = Tensor::randn(&[2, 2, 5, 5], 0.0, 1.0, 3);
    check("Conv2d no bias", &mut Conv2d::new(2, 3, 3).no_bias().padding(1), &x, Mode::Train);
}

#[test]
fn max_pool() {
    for (i, (shape, k, s, p)) in [
        ([1, 1, 4, 4], 2, 2, 0),
        ([2, 3, 5, 7], 2, 2, 0), // odd sizes: floor mode drops the last row/column
        ([2, 2, 6, 6], 3, 2, 1), // overlapping windows with padding
        ([1, 2, 5, 5], 3, 1, 0),
    ]
    .into_iter()
    .enumerate()
    {
        let x = distinct(&shape, i as u64);
        let mut pool = MaxPool2d::new(k).stride(s).padding(p);
        check(&pool.describe(), &mut pool, &x, Mode::Train);
    }
}

#[test]
fn avg_pool_and_global() {
    for (i, (shape, k, s, p)) in
        [([1, 1, 4, 4], 2, 2, 0), ([2, 3, 5, 7], 2, 2, 0), ([2, 2, 6, 5], 3, 2, 1), ([1, 2, 5, 5], 3, 1, 1)]
            .into_iter()
            .enumerate()
    {
        let x = Tensor::randn(&shape, 0.0, 1.0, i as u64);
        let mut pool = AvgPool2d::new(k).stride(s).padding(p);
        check(&pool.describe(), &mut pool, &x, Mode::Train);
    }
    check(
        "GlobalAvgPool",
        &mut GlobalAvgPool::new(),
        &Tensor::randn(&[3, 4, 3, 5], 0.0, 1.0, 1),
        Mode::Train,
    );
}

#[test]
fn flatten() {
    check("Flatten", &mut Flatten::new(), &Tensor::randn(&[2, 3, 4, 5], 0.0, 1.0, 1), Mode::Train);
}

#[test]
fn activations() {
    let shapes: [&[usize]; 3] = [&[1, 1], &[3, 7], &[2, 3, 4, 5]];
    for (i, shape) in shapes.into_iter().enumerate() {
        let x = away_from_zero(shape, 0.05, i as u64);
        check("ReLU", &mut Relu::new(), &x, Mode::Train);
        check("LeakyReLU", &mut LeakyRelu::new(0.1), &x, Mode::Train);
        let x = Tensor::randn(shape, 0.0, 2.0, 10 + i as u64);
        check("Sigmoid", &mut Sigmoid::new(), &x, Mode::Train);
        check("Tanh", &mut Tanh::new(), &x, Mode::Train);
        check("GELU", &mut Gelu::new(), &x, Mode::Train);
        check("GELU(tanh)", &mut Gelu::tanh(), &x, Mode::Train);
    }
    check("Softmax", &mut Softmax::new(), &Tensor::randn(&[4, 6], 0.0, 2.0, 1), Mode::Train);
    check("Softmax 4-D", &mut Softmax::new(), &Tensor::randn(&[2, 3, 2, 2], 0.0, 1.0, 2), Mode::Train);
    let sequence = Tensor::randn(&[2, 3, 5], 0.0, 1.5, 3);
    check("Softmax, last axis", &mut Softmax::last_axis(), &sequence, Mode::Train);
    check("LogSoftmax, last axis", &mut LogSoftmax::last_axis(), &sequence, Mode::Train);
    check("LogSoftmax 3-D", &mut LogSoftmax::new(), &sequence, Mode::Train);
}

#[test]
fn dropout_both_modes() {
    let x = Tensor::randn(&[4, 10], 0.0, 1.0, 1);
    for p in [0.0, 0.3, 0.5, 0.9] {
        check("Dropout train", &mut Dropout::new(p), &x, Mode::Train);
        check("Dropout eval", &mut Dropout::new(p), &x, Mode::Eval);
    }
}

#[test]
fn batchnorm_both_modes() {
    // Eval mode uses running statistics: make them non-trivial with a few training passes first.
    let warm = |layer: &mut dyn Layer, shape: &[usize]| {
        for s in 0..3 {
            layer.forward(&Tensor::randn(shape, 0.5, 2.0, 100 + s), Pass::TRAIN);
        }
    };
    for (i, shape) in [vec![4, 3], vec![5, 2, 3], vec![3, 2, 4, 3]].into_iter().enumerate() {
        let x = Tensor::randn(&shape, 1.0, 1.5, i as u64);
        let mut bn1: Box<dyn Layer> = if shape.len() == 4 {
            Box::new(BatchNorm2d::new(shape[1]))
        } else {
            Box::new(BatchNorm1d::new(shape[1]))
        };
        // Perturb γ, β away from (1, 0) so that their gradients are not special.
        for (_, p) in named_params_mut(bn1.as_mut()) {
            p.value = Tensor::randn(p.value.shape(), 0.8, 0.3, 7);
        }
        check("BatchNorm train", bn1.as_mut(), &x, Mode::Train);
        warm(bn1.as_mut(), &shape);
        check("BatchNorm eval", bn1.as_mut(), &x, Mode::Eval);
    }
}

/// The checker itself must catch a wrong backward pass: a "ReLU" whose backward forgets the mask.
#[test]
fn gradcheck_catches_a_wrong_backward() {
    struct BrokenRelu(Relu);
    impl Layer for BrokenRelu {
        fn describe(&self) -> String {
            "BrokenReLU".into()
        }
        fn output_shape(&self, input: &[usize]) -> backprop::Result<Vec<usize>> {
            self.0.output_shape(input)
        }
        fn forward(&mut self, x: &Tensor, pass: Pass<'_>) -> Tensor {
            self.0.forward(x, pass)
        }
        fn backward(&mut self, g: &Tensor, _: InputGrad) -> Option<Tensor> {
            Some(g.clone()) // wrong: should be g · [x > 0]
        }
    }

    impl Visit for BrokenRelu {}
    let x = away_from_zero(&[2, 5], 0.05, 3);
    let report = check_layer(&mut BrokenRelu(Relu::new()), &x, Mode::Train, &Options::default());
    assert!(!report.passes(TOL), "the broken layer passed:\n{report}");
    assert!(report.max_rel_error() > 0.5);
    // A Dense layer passes; and its gradients accumulate over backward calls (a second call adds
    // a second gradient), as the optimizers' step expects.
    let mut dense = Dense::new(3, 2).seed(1);
    let x = Tensor::randn(&[2, 3], 0.0, 1.0, 1);
    let ok = check_layer(&mut dense, &x, Mode::Train, &Options::default());
    assert!(ok.passes(TOL));
    dense.forward(&x, Pass::TRAIN);
    zero_grad(&mut dense);
    dense.backward(&Tensor::randn(&[2, 2], 0.0, 1.0, 0), InputGrad::Needed).unwrap();
    dense.backward(&Tensor::randn(&[2, 2], 0.0, 1.0, 0), InputGrad::Needed).unwrap(); // accumulates: twice the gradient
    let twice = named_params(&dense)[0].1.grad.clone();
    dense.forward(&x, Pass::TRAIN);
    zero_grad(&mut dense);
    dense.backward(&Tensor::randn(&[2, 2], 0.0, 1.0, 0), InputGrad::Needed).unwrap();
    let once = named_params(&dense)[0].1.grad.clone();
    assert!((&twice - &(&once * 2.0)).norm() < 1e-5, "gradients accumulate across backward calls");
}

/// `backward` without the input gradient (used for a network's first layer in training)
/// accumulates the parameter gradients that `backward` with it does, and skips `dL/dx`. (To f32
/// rounding, not bit for bit: a convolution with few taps then takes the direct kernel,
/// `src/layers/conv2d/direct.rs`, whose sums run in another order than the GEMM's.)
#[test]
fn backward_without_input_grad_matches_backward() {
    type Case = (Box<dyn Layer>, Box<dyn Layer>, Tensor);
    let cases: Vec<Case> = vec![
        (
            Box::new(Conv2d::new(2, 3, 3).padding(1).seed(1)),
            Box::new(Conv2d::new(2, 3, 3).padding(1).seed(1)),
            Tensor::randn(&[5, 2, 6, 6], 0.0, 1.0, 1),
        ),
        (
            Box::new(Dense::new(4, 3).seed(2)),
            Box::new(Dense::new(4, 3).seed(2)),
            Tensor::randn(&[5, 4], 0.0, 1.0, 2),
        ),
    ];
    for (mut a, mut b, x) in cases {
        let g = Tensor::randn(a.forward(&x, Pass::TRAIN).shape(), 0.0, 1.0, 3);
        b.forward(&x, Pass::TRAIN);
        a.backward(&g, InputGrad::Needed).unwrap();
        assert!(b.backward(&g, InputGrad::NotNeeded).is_none(), "{}: dL/dx skipped", b.describe());
        for ((name, pa), (_, pb)) in named_params(a.as_ref()).iter().zip(named_params(b.as_ref())) {
            let err = pa.grad.max_abs_diff(&pb.grad);
            let scale = pa.grad.data().iter().fold(1.0f32, |m, v| m.max(v.abs()));
            assert!(err <= 1e-5 * scale, "{} {name}: the two passes differ by {err}", a.describe());
        }
    }
}

/// What a failure looks like: a dense layer whose backward pass adds its parameter gradients
/// twice (the bug `examples/gradcheck.rs` shows). The input gradient is still right; the check
/// catches the parameters' at an error of exactly ½.
#[test]
fn a_doubled_parameter_gradient_fails_the_check() {
    use backprop::gradcheck::{Options, check_layer};
    use backprop::layers::{State, StateMut};
    struct Doubled(Dense);
    impl Layer for Doubled {
        fn describe(&self) -> String {
            "Doubled".into()
        }
        fn output_shape(&self, input: &[usize]) -> backprop::Result<Vec<usize>> {
            self.0.output_shape(input)
        }
        fn forward(&mut self, x: &Tensor, pass: Pass<'_>) -> Tensor {
            self.0.forward(x, pass)
        }
        fn backward(&mut self, g: &Tensor, input_grad: InputGrad) -> Option<Tensor> {
            self.0.backward(g, InputGrad::NotNeeded);
            self.0.backward(g, input_grad)
        }
    }

    impl Visit for Doubled {
        fn visit<'a>(&'a self, f: &mut dyn FnMut(&str, State<'a>)) {
            self.0.visit(f)
        }

        fn visit_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, StateMut<'a>)) {
            self.0.visit_mut(f)
        }
    }
    let x = Tensor::randn(&[2, 3], 0.0, 1.0, 1);
    let report = check_layer(&mut Doubled(Dense::new(3, 2).seed(1)), &x, Mode::Eval, &Options::default());
    assert!(!report.passes(1e-2), "{report}");
    let error = report.max_rel_error();
    assert!((error - 0.5).abs() < 1e-3, "twice the true gradient is an error of ½: {error}");
}

/// A check in training mode runs hundreds of forward passes; batch norm's running statistics and
/// counter must not remember them.
#[test]
fn a_check_leaves_batch_norm_statistics_alone() {
    use backprop::gradcheck::{Options, check_layer};
    let mut bn = BatchNorm2d::new(2);
    let x = Tensor::randn(&[3, 2, 4, 4], 1.0, 2.0, 5);
    bn.forward(&x, Pass::TRAIN); // some statistics to keep
    let (mean, var, count) = (bn.running_mean().clone(), bn.running_var().clone(), bn.num_batches_tracked());
    let report = check_layer(&mut bn, &x, Mode::Train, &Options::default());
    assert!(report.passes(TOL), "{report}");
    assert_eq!((bn.running_mean(), bn.running_var(), bn.num_batches_tracked()), (&mean, &var, count));
}

/// A backward pass a little off everywhere — a tanh whose input gradient is scaled by 1.015 — is
/// within 2 % at every entry, which the per-entry bound alone had passed; the whole-tensor bound
/// (`tol / 4`) catches it. The true tanh passes both.
#[test]
fn gradcheck_catches_a_gradient_slightly_off_everywhere() {
    struct ScaledTanh(Tanh);
    impl Layer for ScaledTanh {
        fn describe(&self) -> String {
            "ScaledTanh".into()
        }
        fn output_shape(&self, input: &[usize]) -> backprop::Result<Vec<usize>> {
            self.0.output_shape(input)
        }
        fn forward(&mut self, x: &Tensor, pass: Pass<'_>) -> Tensor {
            self.0.forward(x, pass)
        }
        fn backward(&mut self, g: &Tensor, input_grad: InputGrad) -> Option<Tensor> {
            self.0.backward(g, input_grad).map(|dx| &dx * 1.015) // wrong by 1.5 %
        }
    }
    impl Visit for ScaledTanh {}
    let x = Tensor::randn(&[4, 6], 0.0, 1.0, 5);
    let report = check_layer(&mut ScaledTanh(Tanh::new()), &x, Mode::Train, &Options::default());
    assert!(report.max_rel_error() < TOL, "every entry is within the per-entry bound:\n{report}");
    assert!(report.max_norm_rel_error() > 0.014, "{report}");
    assert!(!report.passes(TOL), "the scaled gradient passed:\n{report}");
    let report = check_layer(&mut Tanh::new(), &x, Mode::Train, &Options::default());
    assert!(report.passes(TOL) && report.max_norm_rel_error() < 1e-3, "{report}");
}

/// A gradient that is truly zero — a convolution's bias before a training-mode batch norm — leaves
/// only the differences' noise: the whole-tensor measure floors its scale at `atol·√k` (as every
/// entry's is floored at `atol`), so every tensor meets the whole-tensor bound of `passes(10⁻²)`
/// (with a floor of `atol` alone, the bias of 32 channels failed it about half the time). (The
/// convolution's weights, a few small entries among them, are not held to the per-entry bound
/// here: that is the differences' noise at 10⁻², as before.)
#[test]
fn a_zero_gradient_before_batch_norm_passes() {
    for seed in 0..4 {
        let mut net = Sequential::builder(&[2, 6, 6])
            .add(Conv2d::new(2, 32, 3))
            .add(BatchNorm2d::new(32))
            .add(Tanh::new())
            .seed(seed)
            .build()
            .unwrap();
        let x = Tensor::randn(&[4, 2, 6, 6], 0.0, 1.0, 10 + seed);
        let report = check_layer(&mut net, &x, Mode::Train, &Options::default());
        assert!(report.max_norm_rel_error() <= 1e-2 / 4.0, "seed {seed}:\n{report}");
        let bias = report.tensors.iter().find(|t| t.name == "0.bias").expect("the convolution's bias");
        assert!(bias.max_abs_error < 1e-3 && bias.max_rel_error < 1e-2, "seed {seed}:\n{report}");
    }
}
