//! The execution plan against the reference order: outputs, input gradients and every parameter
//! gradient bit-identical, on random inputs and on tie-heavy ones (zeros, repeated values,
//! adjacent floats, saturated activations, NaN).

use backprop::layers::named_params;
use backprop::layers::sequential::Execution;
use backprop::prelude::*;

/// A convnet with `act` after each convolution, each followed by a 2×2 max pooling.
fn convnet(act: fn() -> Box<dyn Layer>) -> Sequential {
    Sequential::builder(&[2, 8, 8])
        .add(Conv2d::new(2, 4, 3).padding(1).seed(1))
        .add_boxed(act())
        .add(MaxPool2d::new(2))
        .add(Conv2d::new(4, 4, 3).padding(1).seed(2))
        .add_boxed(act())
        .add(MaxPool2d::with_kernel((2, 1)).stride(2))
        .add(Flatten::new())
        .add(Dense::new(16, 3).seed(3))
        .build()
        .unwrap()
}

/// An activation straight on the input, then pooling: the input's ties reach the pooling as they
/// are (no convolution mixing them first).
fn act_then_pool(act: fn() -> Box<dyn Layer>) -> Sequential {
    act_then_pool_on(act, 4)
}

fn act_then_pool_on(act: fn() -> Box<dyn Layer>, side: usize) -> Sequential {
    Sequential::builder(&[1, side, side])
        .add_boxed(act())
        .add(MaxPool2d::new(2))
        .add(Flatten::new())
        .build()
        .unwrap()
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.data().iter().map(|v| v.to_bits()).collect()
}

/// Forward and backward through the plan and through the reference; everything must agree bit
/// for bit (NaN included, by comparing bits).
fn assert_plan_matches_reference(build: &dyn Fn() -> Sequential, x: &Tensor, what: &str) {
    let run = |execution: Execution| {
        let mut m = build();
        m.set_execution(execution);
        let y = m.forward(x, Pass::TRAIN);
        let g = Tensor::from_fn(y.shape(), |i| ((i.iter().sum::<usize>() % 7) as f32 - 3.0) * 0.25);
        let dx = m.backward_input(&g);
        let grads: Vec<Vec<u32>> = named_params(&m).iter().map(|(_, p)| bits(&p.grad)).collect();
        (bits(&y), bits(&dx), grads)
    };
    let (planned, reference) = (run(Execution::Planned), run(Execution::Reference));
    assert_eq!(planned.0, reference.0, "{what}: outputs differ");
    assert_eq!(planned.1, reference.1, "{what}: input gradients differ");
    assert_eq!(planned.2, reference.2, "{what}: parameter gradients differ");
}

/// Makes a fresh activation layer.
type MakeActivation = fn() -> Box<dyn Layer>;

fn activations() -> Vec<(&'static str, MakeActivation)> {
    vec![
        ("ReLU", || Box::new(Relu::new())),
        ("Sigmoid", || Box::new(Sigmoid::new())),
        ("Tanh", || Box::new(Tanh::new())),
        ("LeakyReLU(0.01)", || Box::new(LeakyRelu::default())),
        ("LeakyReLU(-0.5)", || Box::new(LeakyRelu::new(-0.5))),
        ("GELU", || Box::new(Gelu::new())),
    ]
}

/// Inputs that make windows tie: zeros and ±0, repeated values, neighbours one ulp apart,
/// values that saturate sigmoid and tanh to the same f32 (σ(16.0) = σ(16.1) = 1), and NaN.
fn tie_heavy(shape: &[usize], seed: u64, with_nan: bool) -> Tensor {
    let pool = [
        0.0f32,
        -0.0,
        1.0,
        1.0,
        -1.0,
        16.0,
        16.1,
        20.0,
        -16.0,
        -16.1,
        0.5,
        f32::from_bits(0.5f32.to_bits() + 1),
    ];
    let r = Tensor::rand_uniform(shape, 0.0, pool.len() as f32, seed);
    let mut t = r.map(|u| pool[(u as usize).min(pool.len() - 1)]);
    if with_nan {
        t.data_mut()[5] = f32::NAN;
    }
    t
}

#[test]
fn plan_equals_reference_on_random_inputs() {
    for (name, act) in activations() {
        let x = Tensor::randn(&[3, 2, 8, 8], 0.0, 1.0, 4);
        assert_plan_matches_reference(&|| convnet(act), &x, name);
    }
}

#[test]
fn plan_equals_reference_on_tie_heavy_inputs() {
    for (name, act) in activations() {
        for seed in 0..8 {
            let x = tie_heavy(&[2, 1, 4, 4], seed, false);
            assert_plan_matches_reference(&|| act_then_pool(act), &x, &format!("{name}, ties seed {seed}"));
            let x = tie_heavy(&[2, 1, 4, 4], seed, true);
            assert_plan_matches_reference(
                &|| act_then_pool(act),
                &x,
                &format!("{name}, ties + NaN seed {seed}"),
            );
            let x = tie_heavy(&[3, 2, 8, 8], seed, false);
            assert_plan_matches_reference(&|| convnet(act), &x, &format!("{name} convnet, ties seed {seed}"));
        }
    }
}

/// The cases the issue reported, by hand: sigmoid of 16.0 and 16.1 round to the same f32, so a
/// pooling run before the sigmoid would send the gradient to 16.1 instead of the first maximum;
/// a leaky ReLU with a negative slope is not monotone, so pooling first gives wrong outputs.
#[test]
fn the_reported_cases_by_hand() {
    let x = Tensor::from_vec(&[1, 1, 2, 2], vec![16.0, 16.1, 0.0, 0.0]).unwrap();
    let s = Sigmoid::new().forward(&x, Pass::EVAL);
    assert_eq!(s.data()[0], s.data()[1], "the premise: σ(16.0) and σ(16.1) round to one f32");
    let mut m = act_then_pool_on(|| Box::new(Sigmoid::new()), 2);
    m.forward(&x, Pass::TRAIN);
    let dx = m.backward_input(&Tensor::ones(&[1, 1]));
    // List order: the pooling sees a tie and routes the gradient to the first maximum, 16.0.
    assert!(dx.data()[0] != 0.0 && dx.data()[1..] == [0.0, 0.0, 0.0], "{:?}", dx.data());

    let x = Tensor::from_vec(&[1, 1, 2, 2], vec![-4.0, 1.0, 0.5, -0.1]).unwrap();
    let y = act_then_pool_on(|| Box::new(LeakyRelu::new(-0.5)), 2).forward(&x, Pass::EVAL);
    assert_eq!(y.data(), &[2.0], "max(2, 1, 0.5, 0.05)");
}

/// In reference mode, every layer's cache is the one list order leaves.
#[test]
fn reference_mode_runs_the_list_in_order() {
    let mut m = act_then_pool(|| Box::new(Relu::new()));
    m.set_execution(Execution::Reference);
    assert_eq!(m.execution(), Execution::Reference);
    let x = Tensor::randn(&[1, 1, 4, 4], 0.0, 1.0, 1);
    m.forward(&x, Pass::TRAIN);
    // The ReLU saw the full 4×4 input: its backward takes a full-size gradient.
    let relu = m.layer_as_mut::<Relu>(0).unwrap();
    assert_eq!(
        relu.backward(&Tensor::ones(&[1, 1, 4, 4]), InputGrad::Needed).unwrap().shape(),
        &[1, 1, 4, 4]
    );
    // Nested chains follow (directly, and as a residual block's body): their ReLU too sees the
    // full-size input (a nested chain had kept its plan and cached the pooled mask).
    let chain = || {
        Sequential::new()
            .add(Conv2d::new(1, 1, 1).seed(1))
            .add(Relu::new())
            .add(MaxPool2d::new(2))
            .add(Upsample2x)
    };
    let mut outer = Sequential::builder(&[1, 4, 4]).add(chain()).add(Residual::new(chain())).build().unwrap();
    outer.set_execution(Execution::Reference);
    outer.forward(&x, Pass::TRAIN);
    for i in 0..2 {
        let inner = match i {
            0 => outer.layer_as_mut::<Sequential>(0).unwrap(),
            _ => outer.layer_as_mut::<Residual>(1).unwrap().body_mut(),
        };
        assert_eq!(inner.execution(), Execution::Reference);
        let relu = inner.layer_as_mut::<Relu>(1).unwrap();
        let g = relu.backward(&Tensor::ones(&[1, 1, 4, 4]), InputGrad::Needed).unwrap();
        assert_eq!(g.shape(), &[1, 1, 4, 4], "nested chain {i}");
    }
}

/// 2× nearest upsampling: a pooled 2×2 map back to 4×4, so that a chain with pooling fits a
/// residual block.
struct Upsample2x;

impl Layer for Upsample2x {
    fn describe(&self) -> String {
        "Upsample2x".into()
    }
    fn output_shape(&self, input: &[usize]) -> backprop::Result<Vec<usize>> {
        Ok(vec![input[0], input[1], 2 * input[2], 2 * input[3]])
    }
    fn forward(&mut self, x: &Tensor, _: Pass<'_>) -> Tensor {
        let (n, c, h, w) = (x.dim(0), x.dim(1), x.dim(2), x.dim(3));
        let mut y = Tensor::zeros(&[n, c, 2 * h, 2 * w]);
        for p in 0..n * c {
            for i in 0..2 * h {
                for j in 0..2 * w {
                    y.data_mut()[(p * 2 * h + i) * 2 * w + j] = x.data()[(p * h + i / 2) * w + j / 2];
                }
            }
        }
        y
    }
    fn backward(&mut self, g: &Tensor, _: InputGrad) -> Option<Tensor> {
        let (n, c, h, w) = (g.dim(0), g.dim(1), g.dim(2) / 2, g.dim(3) / 2);
        let mut dx = Tensor::zeros(&[n, c, h, w]);
        for p in 0..n * c {
            for i in 0..2 * h {
                for j in 0..2 * w {
                    dx.data_mut()[(p * h + i / 2) * w + j / 2] += g.data()[(p * 2 * h + i) * 2 * w + j];
                }
            }
        }
        Some(dx)
    }
}

impl backprop::layers::Visit for Upsample2x {}

/// Convolution → ReLU → max pooling runs as one fused pass (rewrite 3): against the reference on
/// shapes that stress it — several groups of images and a partial last one, outputs the window
/// does not divide, a 3×3 window (the general pooling kernel), rows long enough for the vector
/// row-pair kernel, a convolution without bias — on random, tie-heavy and NaN inputs.
#[test]
fn fused_convolution_and_pooling_equal_the_reference() {
    type Case = ((usize, usize, usize), fn() -> Conv2d, fn() -> MaxPool2d, usize);
    // A non-zero bias (a new layer's is zero, which would hide how the fused pass adds it).
    fn biased(conv: Conv2d, outputs: usize) -> Conv2d {
        let w = conv.weight().value.clone();
        conv.with_weights(w, Some(Tensor::randn(&[outputs], 0.0, 0.5, 17)))
    }
    // (input, convolution, pooling, flattened size)
    let cases: [Case; 4] = [
        ((2, 9, 9), || biased(Conv2d::new(2, 3, 3).seed(1), 3), || MaxPool2d::new(2), 3 * 3 * 3), // 7×7 → 3×3
        ((1, 11, 11), || Conv2d::new(1, 2, 3).no_bias().seed(2), || MaxPool2d::new(3), 2 * 3 * 3), // 9×9 → 3×3
        ((1, 6, 42), || biased(Conv2d::new(1, 2, 3).padding(1).seed(3), 2), || MaxPool2d::new(2), 2 * 3 * 21), // rows of 21
        (
            (3, 12, 12),
            || biased(Conv2d::new(3, 4, 5).seed(4), 4),
            || MaxPool2d::with_kernel((2, 1)).stride(2),
            4 * 4 * 4,
        ),
    ];
    for (k, ((c, h, w), conv, pool, flat)) in cases.into_iter().enumerate() {
        let make = move || {
            Sequential::builder(&[c, h, w])
                .add(conv())
                .add(Relu::new())
                .add(pool())
                .add(Flatten::new())
                .add(Dense::new(flat, 2).seed(5))
                .build()
                .unwrap()
        };
        let dims = [9, c, h, w];
        let x = Tensor::randn(&dims, 0.0, 1.0, k as u64);
        assert_plan_matches_reference(&make, &x, &format!("case {k}, random"));
        for seed in 0..3 {
            let x = tie_heavy(&dims, seed, seed == 2);
            assert_plan_matches_reference(&make, &x, &format!("case {k}, ties seed {seed}"));
        }
    }
}

/// In `Mode::Predict` a 2 × 2 pooling after a convolution runs pooled by pixel, without its
/// arg-max: the same bits as the reference order (and as the fused pass in the other modes), on
/// several groups of images and a partial last one, channel counts below and above a vector's 8
/// lanes, outputs the window does not divide, padding, no bias, products by window rows, in one
/// strip of output rows or several; random, tie-heavy and NaN inputs.
/// A backward pass after it is refused with a message.
#[test]
fn fused_pooling_in_predict_mode_equals_the_reference() {
    type Case = ((usize, usize, usize), usize, usize); // (input, output channels, padding)
    // (The last two: kernel rows of 36 values, which the convolution reads as window rows. The
    // second and third: several strips of output rows, an odd last row left out.)
    let cases: [Case; 8] = [
        ((2, 9, 9), 3, 0),
        ((2, 11, 30), 4, 0),
        ((1, 6, 42), 2, 1),
        ((3, 10, 10), 12, 0),
        ((4, 7, 8), 17, 1),
        ((1, 4, 4), 8, 0),
        ((12, 8, 9), 5, 1),
        ((12, 7, 7), 33, 0),
    ];
    for (k, ((c, h, w), o, pad)) in cases.into_iter().enumerate() {
        let make = move |execution: Execution| {
            let conv = Conv2d::new(c, o, 3).padding(pad).seed(k as u64);
            let w0 = conv.weight().value.clone();
            let bias = (k % 2 == 0).then(|| Tensor::randn(&[o], 0.0, 0.5, 17));
            let conv = match bias {
                Some(b) => conv.with_weights(w0, Some(b)),
                None => Conv2d::new(c, o, 3).padding(pad).no_bias().seed(k as u64),
            };
            let mut m = Sequential::builder(&[c, h, w])
                .add(conv)
                .add(Relu::new())
                .add(MaxPool2d::new(2))
                .add(Flatten::new())
                .build()
                .unwrap();
            m.set_execution(execution);
            m
        };
        for n in [1, 9] {
            let dims = [n, c, h, w];
            let inputs = [
                Tensor::randn(&dims, 0.0, 1.0, k as u64),
                tie_heavy(&dims, 1, false),
                tie_heavy(&dims, 2, true),
            ];
            for (i, x) in inputs.iter().enumerate() {
                let reference = make(Execution::Reference).forward(x, Pass::PREDICT);
                let planned_eval = make(Execution::Planned).forward(x, Pass::EVAL);
                let planned = make(Execution::Planned).forward(x, Pass::PREDICT);
                let what = format!("case {k}, {n} images, input {i}");
                assert_eq!(bits(&planned), bits(&reference), "{what}: Predict against the reference");
                assert_eq!(bits(&planned), bits(&planned_eval), "{what}: Predict against Eval");
            }
        }
    }
    // NaN where a window's values differ by payload: the last NaN in reading order wins.
    let mut m = Sequential::builder(&[1, 2, 2])
        .add(Conv2d::new(1, 1, 1).no_bias().with_weights(Tensor::ones(&[1, 1, 1, 1]), None))
        .add(Relu::new())
        .add(MaxPool2d::new(2))
        .build()
        .unwrap();
    let (first, last) = (f32::from_bits(0x7fc0_0001), f32::from_bits(0x7fc0_0002));
    let x = Tensor::from_vec(&[1, 1, 2, 2], vec![1.0, first, 5.0, last]).unwrap();
    let y = m.forward(&x, Pass::PREDICT);
    let expected = m.forward(&x, Pass::EVAL);
    assert_eq!(bits(&y), bits(&expected), "NaN payloads: Predict against Eval");
    // After a Predict pass neither the ReLU's mask nor the pooling's arg-max is kept: backward
    // says so.
    let x = Tensor::randn(&[2, 2, 9, 9], 0.0, 1.0, 3);
    let mut m = Sequential::builder(&[2, 9, 9])
        .add(Conv2d::new(2, 3, 3))
        .add(Relu::new())
        .add(MaxPool2d::new(2))
        .build()
        .unwrap();
    let y = m.forward(&x, Pass::PREDICT);
    let err =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| m.backward_input(&Tensor::ones(y.shape()))))
            .expect_err("backward after a Predict pass");
    let msg = err
        .downcast_ref::<String>()
        .map(String::as_str)
        .or(err.downcast_ref::<&str>().copied())
        .unwrap_or("");
    assert!(msg.contains("Mode::Predict"), "{msg}"); // (the ReLU or the pooling, whichever runs first)
    // … and a training pass after it restores the arg-max.
    let y = m.forward(&x, Pass::TRAIN);
    assert_eq!(m.backward_input(&Tensor::ones(y.shape())).shape(), x.shape());
}

/// A convolution keeps its packed weights between passes and packs again only when the weights
/// or the bias changed: every change made in place between two passes — one weight, the bias, a
/// NaN, and back — shows in the next pass, alone and fused with its pooling, in every mode.
#[test]
fn a_convolution_sees_its_weights_change_between_passes() {
    use backprop::layers::named_params_mut;
    let build = || {
        Sequential::builder(&[2, 9, 9])
            .add(Conv2d::new(2, 5, 3).seed(3))
            .add(Relu::new())
            .add(MaxPool2d::new(2))
            .add(Conv2d::new(5, 4, 3).padding(1).seed(4))
            .build()
            .unwrap()
    };
    let x = Tensor::randn(&[3, 2, 9, 9], 0.0, 1.0, 8);
    let mut kept = build();
    let edits: [(&str, usize, f32); 6] = [
        ("0.weight", 7, 0.75),
        ("0.bias", 2, -0.5),
        ("3.weight", 0, f32::NAN),
        ("3.weight", 0, 0.25),
        ("3.bias", 3, 2.0),
        ("", 0, 0.0), // (the last edit's check)
    ];
    for (step, (name, at, value)) in edits.into_iter().enumerate() {
        for pass in [Pass::PREDICT, Pass::EVAL, Pass::TRAIN] {
            // A fresh model given the same values: nothing kept from earlier passes.
            let mut fresh = build();
            let values: Vec<Tensor> = named_params(&kept).iter().map(|(_, p)| p.value.clone()).collect();
            for ((_, p), v) in named_params_mut(&mut fresh).into_iter().zip(values) {
                p.value = v;
            }
            let (got, want) = (kept.forward(&x, pass), fresh.forward(&x, pass));
            assert_eq!(bits(&got), bits(&want), "edit {step} ({name}), {pass:?}");
        }
        for (n, p) in named_params_mut(&mut kept) {
            if n == name {
                p.value.data_mut()[at] = value; // in place, between passes
            }
        }
    }
}
