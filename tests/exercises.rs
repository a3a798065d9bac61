//! The answers of docs/exercises.md, checked against the crate.

use backprop::gradcheck::{Options, check_layer};
use backprop::layers::{State, StateMut, named_params};
use backprop::prelude::*;

fn t(shape: &[usize], v: &[f32]) -> Tensor {
    Tensor::from_vec(shape, v.to_vec()).unwrap()
}

fn close(what: &str, got: &[f32], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (g, w) in got.iter().zip(want) {
        assert!((*g as f64 - w).abs() < 1.5e-6, "{what}: {got:?} vs {want:?}");
    }
}

#[test]
fn exercise_1_the_worked_example_with_target_zero() {
    let mut net = Sequential::builder(&[2])
        .add(Dense::new(2, 2).with_weights(t(&[2, 2], &[0.5, -0.3, 0.2, 0.8]), Some(t(&[2], &[0.1, -0.1]))))
        .add(Sigmoid::new())
        .add(Dense::new(2, 1).with_weights(t(&[1, 2], &[0.7, -0.4]), Some(t(&[1], &[0.2]))))
        .build()
        .unwrap();
    let loss = net
        .loss_and_backward(
            &t(&[1, 2], &[1.0, 0.5]),
            (&t(&[1, 1], &[0.0])).into(),
            &MseLoss::new(),
            Mode::Train,
        )
        .unwrap();
    close("L", &[loss], &[0.143235]);
    // The forward pass does not read the target: y as in §10.
    let y = net.predict(&t(&[1, 2], &[1.0, 0.5]), 1).unwrap();
    close("y", y.data(), &[0.378464]);
    let grads: Vec<Vec<f32>> = named_params(&net).iter().map(|(_, p)| p.grad.data().to_vec()).collect();
    close("dL/dW1", &grads[0], &[0.125976, 0.062988, -0.071152, -0.035576]);
    close("dL/db1", &grads[1], &[0.125976, -0.071152]);
    close("dL/dW2", &grads[2], &[0.462210, 0.471157]);
    close("dL/db2", &grads[3], &[0.756927]);
}

#[test]
fn exercise_2_softmax_cross_entropy_gradient() {
    let z = t(&[1, 3], &[2.0, 1.0, 0.1]);
    let (_, g) = CrossEntropyLoss::new().loss_and_grad(&z, Target::Classes(&[0])).unwrap();
    close("dL/dz", g.data(), &[-0.340999, 0.242433, 0.098566]);
    assert!(g.data().iter().sum::<f32>().abs() < 1e-6, "sums to zero");
}

#[test]
fn exercise_3_batch_norm_input_gradients_sum_to_zero() {
    for seed in 0..5 {
        let mut bn = BatchNorm1d::new(3);
        bn.visit_mut(&mut |_, s| {
            if let StateMut::Param(p) = s {
                p.value = Tensor::randn(p.value.shape(), 1.0, 0.5, 100 + seed);
            }
        });
        let x = Tensor::randn(&[7, 3], 2.0, 3.0, seed);
        bn.forward(&x, Pass::TRAIN);
        let dx = bn.backward(&Tensor::randn(&[7, 3], 0.0, 1.0, 50 + seed), InputGrad::Needed).unwrap();
        for c in 0..3 {
            let sum: f32 = (0..7).map(|n| dx.data()[n * 3 + c]).sum();
            assert!(sum.abs() < 1e-5, "channel {c}: Σ dL/dx = {sum}");
        }
    }
}

#[test]
fn exercise_4_leaky_relu_backward_and_its_check() {
    let x = Tensor::randn(&[4, 5], 0.0, 1.0, 3).map(|v| if v.abs() < 0.05 { v + 0.1 } else { v });
    let report = check_layer(&mut LeakyRelu::new(0.2), &x, Mode::Eval, &Options::default());
    assert!(report.passes(1e-2), "{report}");
    let g = Tensor::ones(&[4, 5]);
    let mut leaky = LeakyRelu::new(0.2);
    leaky.forward(&x, Pass::EVAL);
    let dx = leaky.backward(&g, InputGrad::Needed).unwrap();
    for (d, v) in dx.data().iter().zip(x.data()) {
        assert_eq!(*d, if *v > 0.0 { 1.0 } else { 0.2 }, "dL/dx = g or a·g");
    }
    // At exactly 0 (the kink, and −0 too) the slope used is a, as in PyTorch.
    leaky.forward(&Tensor::from_vec(&[1, 2], vec![0.0, -0.0]).unwrap(), Pass::EVAL);
    let at_zero = leaky.backward(&Tensor::ones(&[1, 2]), InputGrad::Needed).unwrap();
    assert_eq!(at_zero.data(), &[0.2, 0.2], "the slope a at x = 0");
    // A backward pass that forgets the slope (ReLU's) fails the same check.
    struct ForgotSlope(LeakyRelu, Tensor);
    impl Layer for ForgotSlope {
        fn describe(&self) -> String {
            "ForgotSlope".into()
        }
        fn output_shape(&self, input: &[usize]) -> backprop::Result<Vec<usize>> {
            self.0.output_shape(input)
        }
        fn forward(&mut self, x: &Tensor, pass: Pass<'_>) -> Tensor {
            self.1 = x.clone();
            self.0.forward(x, pass)
        }
        fn backward(&mut self, g: &Tensor, _: InputGrad) -> Option<Tensor> {
            let mut dx = g.clone();
            dx.zip_map_inplace(&self.1, |g, x| if x > 0.0 { g } else { 0.0 }); // the bug: slope 0, not a
            Some(dx)
        }
    }

    impl Visit for ForgotSlope {
        fn visit<'a>(&'a self, f: &mut dyn FnMut(&str, State<'a>)) {
            self.0.visit(f)
        }
    }
    let report = check_layer(
        &mut ForgotSlope(LeakyRelu::new(0.2), Tensor::default()),
        &x,
        Mode::Eval,
        &Options::default(),
    );
    assert!(!report.passes(1e-2), "the bug must show:\n{report}");
}

#[test]
fn exercise_5_dense_gradient_shapes_and_products() {
    let mut dense = Dense::new(4, 3).seed(1);
    let x = Tensor::randn(&[5, 4], 0.0, 1.0, 2);
    dense.forward(&x, Pass::TRAIN);
    let g = Tensor::randn(&[5, 3], 0.0, 1.0, 3);
    let dx = dense.backward(&g, InputGrad::Needed).unwrap();
    let (w, dw, db) = (&dense.weight().value, &dense.weight().grad, &dense.bias().unwrap().grad);
    assert_eq!((dw.shape(), db.shape(), dx.shape()), (&[3usize, 4][..], &[3usize][..], &[5usize, 4][..]));
    for o in 0..3 {
        for i in 0..4 {
            let want: f32 = (0..5).map(|n| g[&[n, o]] * x[&[n, i]]).sum(); // (gᵀ·x)[o, i]
            assert!((dw[&[o, i]] - want).abs() < 1e-5);
        }
        let want: f32 = (0..5).map(|n| g[&[n, o]]).sum();
        assert!((db.data()[o] - want).abs() < 1e-5);
    }
    for n in 0..5 {
        for i in 0..4 {
            let want: f32 = (0..3).map(|o| g[&[n, o]] * w[&[o, i]]).sum(); // (g·W)[n, i]
            assert!((dx[&[n, i]] - want).abs() < 1e-5);
        }
    }
}

#[test]
fn exercise_6_convolution_gradients_with_unit_g() {
    let x = t(&[1, 1, 3, 3], &[1., 2., 3., 4., 5., 6., 7., 8., 9.]);
    let mut conv = Conv2d::new(1, 1, 2).with_weights(t(&[1, 1, 2, 2], &[1., 0., -1., 2.]), None);
    conv.forward(&x, Pass::TRAIN);
    let dx = conv.backward(&Tensor::ones(&[1, 1, 2, 2]), InputGrad::Needed).unwrap();
    close("dL/dW", conv.weight().grad.data(), &[12., 16., 24., 28.]);
    close("dL/dx", dx.data(), &[1., 1., 0., 0., 2., 2., -1., 1., 2.]);
}

#[test]
fn exercise_7_max_pooling_routes_to_the_maximum() {
    let mut pool = MaxPool2d::new(2);
    pool.forward(&t(&[1, 1, 2, 2], &[1., 3., 2., 0.]), Pass::TRAIN);
    let dx = pool.backward(&t(&[1, 1, 1, 1], &[5.]), InputGrad::Needed).unwrap();
    close("dL/dx", dx.data(), &[0., 5., 0., 0.]);
}

#[test]
fn exercise_8_adams_first_step() {
    let mut p = backprop::layers::Param::new(t(&[1], &[1.0]));
    p.grad = t(&[1], &[1e-6]);
    let mut adam = Adam::new(0.001);
    adam.step_params(&mut [("theta".to_string(), &mut p)]);
    let theta = p.value.data()[0] as f64;
    // 1 − 0.001/1.01: f32 tells it from a step of exactly η (0.999), 9.9e-6 away.
    assert!((theta - 0.999_009_901).abs() < 2e-7, "{theta}");
    assert!((theta - 0.999).abs() > 5e-6, "{theta}");
    // g = 0.004 gives 1 − 0.001·0.004/(0.004 + 10⁻⁸) = 0.9990000025, which f32 cannot tell from
    // 0.999.
    assert!((1.0 - 0.001 * 0.004 / (0.004 + 1e-8) - 0.999_000_002_5f64).abs() < 1e-12);
    let mut p = backprop::layers::Param::new(t(&[1], &[1.0]));
    p.grad = t(&[1], &[0.004]);
    Adam::new(0.001).step_params(&mut [("theta".to_string(), &mut p)]);
    assert_eq!(p.value.data()[0], 0.999f32);
}

#[test]
fn exercise_9_a_gradient_through_time() {
    let mut rnn = Rnn::relu(1, 1).last_step_only();
    rnn.visit_mut(&mut |name, s| {
        if let StateMut::Param(p) = s {
            p.value.fill(match name {
                "weight_ih_l0" => 1.0,
                "weight_hh_l0" => 0.5,
                _ => 0.0, // biases
            });
        }
    });
    rnn.forward(&Tensor::ones(&[1, 5, 1]), Pass::TRAIN);
    let dx = rnn.backward(&t(&[1, 1], &[1.0]), InputGrad::Needed).unwrap();
    close("dL/dx_t", dx.data(), &[0.0625, 0.125, 0.25, 0.5, 1.0]);
}

#[test]
fn exercise_10_batch_norm_from_its_staged_graph() {
    let (m, gamma, eps) = (6usize, 1.7f64, 1e-5f64);
    let x: Vec<f64> = (0..m).map(|i| ((i * 7 % 5) as f64 - 2.0) * 0.8 + 0.3 * i as f64).collect();
    let g: Vec<f64> = (0..m).map(|i| ((i * 3 % 4) as f64 - 1.5) * 0.5).collect();
    // Forward, stage by stage.
    let mu = x.iter().sum::<f64>() / m as f64;
    let d: Vec<f64> = x.iter().map(|v| v - mu).collect();
    let var = d.iter().map(|v| v * v).sum::<f64>() / m as f64;
    let s = 1.0 / (var + eps).sqrt();
    // Backward, one VJP per stage.
    let dxh: Vec<f64> = g.iter().map(|gi| gamma * gi).collect();
    let mut dd: Vec<f64> = dxh.iter().map(|v| v * s).collect();
    let ds: f64 = dxh.iter().zip(&d).map(|(a, b)| a * b).sum();
    let dvar = -0.5 * s * s * s * ds;
    dd.iter_mut().zip(&d).for_each(|(v, di)| *v += dvar * 2.0 * di / m as f64);
    let dmu = -dd.iter().sum::<f64>();
    let staged: Vec<f64> = dd.iter().map(|v| v + dmu / m as f64).collect();
    // The crate's layer, γ = 1.7, β = 0.
    let mut bn = BatchNorm1d::new(1);
    bn.visit_mut(&mut |name, st| {
        if let StateMut::Param(p) = st {
            p.value.fill(if name == "weight" { gamma as f32 } else { 0.0 });
        }
    });
    bn.forward(&t(&[m, 1], &x.iter().map(|&v| v as f32).collect::<Vec<_>>()), Pass::TRAIN);
    let dx = bn
        .backward(&t(&[m, 1], &g.iter().map(|&v| v as f32).collect::<Vec<_>>()), InputGrad::Needed)
        .unwrap();
    for (a, b) in dx.data().iter().zip(&staged) {
        assert!((*a as f64 - b).abs() < 1e-5, "{:?} vs {staged:?}", dx.data());
    }
}

#[test]
fn exercise_11_a_strided_convolutions_backward_pass() {
    let (w0, w1, g0, g1) = (1.5f32, -2.0f32, 0.5f32, 3.0f32);
    let mut conv = Conv2d::with_kernel(1, 1, (1, 2))
        .stride_hw(1, 2)
        .with_weights(t(&[1, 1, 1, 2], &[w0, w1]), Some(t(&[1], &[0.0])));
    conv.forward(&t(&[1, 1, 1, 5], &[1., 2., 3., 4., 5.]), Pass::TRAIN);
    let dx = conv.backward(&t(&[1, 1, 1, 2], &[g0, g1]), InputGrad::Needed).unwrap();
    assert_eq!(dx.data(), &[w0 * g0, w1 * g0, w0 * g1, w1 * g1, 0.0]);
}

#[test]
fn exercise_12_bptt_through_the_eigenvalues_of_w_hh() {
    let steps = 12;
    let mut rnn = Rnn::relu(2, 2).last_step_only();
    rnn.visit_mut(&mut |name, s| {
        if let StateMut::Param(p) = s {
            let v: &[f32] = match name {
                "weight_ih_l0" => &[1.0, 0.0, 0.0, 1.0],
                "weight_hh_l0" => &[0.75, 0.25, 0.25, 0.75],
                _ => &[0.0, 0.0],
            };
            p.value.data_mut().copy_from_slice(v);
        }
    });
    rnn.forward(&Tensor::ones(&[1, steps, 2]), Pass::TRAIN); // positive states: ReLU is the identity
    let dx = rnn.backward(&t(&[1, 2], &[1.0, 0.0]), InputGrad::Needed).unwrap(); // L = h_T[0]
    let want: Vec<f64> = (0..steps)
        .flat_map(|t| {
            let k = (steps - 1 - t) as i32;
            [0.5 + 0.5 * 0.5f64.powi(k), 0.5 - 0.5 * 0.5f64.powi(k)]
        })
        .collect();
    close("dL/dx_t", dx.data(), &want);
}
