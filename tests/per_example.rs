//! Per-example gradients (`privacy::per_example`, the optional capability behind
//! `Layer::per_example`): for every layer with parameters, and
//! for containers of them, row `i` of each slot equals the gradient a backward pass over example
//! `i` alone (a batch of one) accumulates, and the input gradient equals the ordinary backward
//! pass's; a store reused from pass to pass carries nothing over. DP-SGD gives the same step from
//! them as from batch-of-one passes.

mod common;

use approx::abs_diff_eq;
use backprop::layers::{InputGrad, State, StateMut, named_params, zero_grad};
use backprop::prelude::*;
use backprop::privacy::per_example::{PerExampleGrads, backward_per_example, supports_per_example};
use backprop::privacy::{DpOptions, fit_private};

fn random(shape: &[usize], seed: u64) -> Tensor {
    Tensor::randn(shape, 0.0, 1.0, seed)
}

/// Compares the per-example pass with batch-of-one passes for `model` on `x` and `g`, with the
/// samples' sequence lengths (if any) travelling with them in the pass.
fn max_abs(t: &Tensor) -> f32 {
    t.data().iter().fold(0.0f32, |m, v| m.max(v.abs()))
}

fn check(name: &str, model: &mut Sequential, x: &Tensor, g: &Tensor, lengths: Option<&[usize]>) {
    let pass = |which: &[usize]| -> Vec<usize> {
        lengths.map_or(Vec::new(), |l| which.iter().map(|&i| l[i]).collect())
    };
    let n = x.dim(0);
    let all: Vec<usize> = (0..n).collect();
    assert!(supports_per_example(model), "{name}: every layer has a per-example pass");
    // The per-example pass over the batch; the ordinary pass's dx beside it.
    // Twice into the same store: slots are reused, and whatever the first pass left in them must
    // not leak into the second.
    let l_all = pass(&all);
    let train = Pass::TRAIN.with_optional_lengths(lengths.map(|_| l_all.as_slice()));
    let mut grads = PerExampleGrads::new();
    zero_grad(model);
    let mut dx = Tensor::default();
    for _ in 0..2 {
        model.forward(x, train);
        grads.start(n);
        dx = backward_per_example(model, g, InputGrad::Needed, &mut grads).unwrap();
    }
    let untouched = named_params(model).iter().all(|(_, p)| p.grad.data().iter().all(|&v| v == 0.0));
    assert!(untouched, "{name}: the per-example pass leaves Param::grad alone");
    model.forward(x, train);
    let dx_plain = model.backward(g, InputGrad::Needed).unwrap();
    assert!(
        abs_diff_eq!(dx.data(), dx_plain.data(), epsilon = 1e-5 * (1.0 + max_abs(&dx_plain))),
        "{name}: dx"
    );
    let names: Vec<String> = named_params(model).into_iter().map(|(k, _)| k).collect();
    assert_eq!(grads.len(), names.len(), "{name}: one slot per parameter");
    // Each example alone.
    for i in 0..n {
        let l_i = pass(&[i]);
        model.forward(
            &x.select_outer(&[i]),
            Pass::TRAIN.with_optional_lengths(lengths.map(|_| l_i.as_slice())),
        );
        zero_grad(model);
        model.backward(&g.select_outer(&[i]), InputGrad::NotNeeded);
        for (k, (param, p)) in named_params(model).into_iter().enumerate() {
            let (row, alone) = (grads.slot(k).outer(i), p.grad.data());
            let scale = 1.0 + max_abs(&p.grad);
            assert!(
                abs_diff_eq!(row, alone, epsilon = 2e-5 * scale),
                "{name}: example {i}, {param}: {row:?} vs {alone:?} (scale {scale})"
            );
            // (A bias may see no gradient, and W_hh none in a sequence of one step: h₋₁ = 0.)
            let may_be_zero = param.contains("bias") || param.contains("weight_hh");
            assert!(max_abs(&p.grad) > 0.0 || may_be_zero, "{name}: {param} of example {i} is all zero");
        }
    }
}

#[test]
fn dense_layers_on_rows_and_on_sequences() {
    let mlp = Sequential::builder(&[5]).add(Dense::new(5, 7)).add(Tanh::new()).add(Dense::new(7, 3)).seed(1);
    let mut mlp = mlp.build().unwrap();
    check("mlp", &mut mlp, &random(&[6, 5], 2), &random(&[6, 3], 3), None);
    let seq =
        Sequential::builder(&[4, 5]).add(Dense::new(5, 3).no_bias()).add(Gelu::new()).add(Dense::new(3, 2));
    let mut seq = seq.seed(4).build().unwrap();
    check("dense on [N, T, F]", &mut seq, &random(&[3, 4, 5], 5), &random(&[3, 4, 2], 6), None);
}

#[test]
fn convolutions_pools_and_residual_blocks() {
    let body = Sequential::new().add(Conv2d::new(4, 4, 3).padding(1)).add(Relu::new());
    let mut cnn = Sequential::builder(&[2, 9, 9])
        .add(Conv2d::new(2, 4, 3).stride(2).padding(1))
        .add(Relu::new())
        .add(Residual::new(body))
        .add(MaxPool2d::new(2))
        .add(Flatten::new())
        .add(Dense::new(16, 3))
        .seed(7)
        .build()
        .unwrap();
    check("cnn", &mut cnn, &random(&[5, 2, 9, 9], 8), &random(&[5, 3], 9), None);
    // ReLU → max pool: the planned execution pools first (exec.rs); the pass follows the plan.
    let plain = Sequential::builder(&[1, 6, 6]).add(Conv2d::new(1, 3, 2).no_bias()).add(Relu::new());
    let mut plain = plain.add(MaxPool2d::new(2)).add(Flatten::new()).seed(10).build().unwrap();
    check("conv without bias", &mut plain, &random(&[3, 1, 6, 6], 11), &random(&[3, 12], 12), None);
    let pooled = Sequential::builder(&[1, 6, 6]).add(Conv2d::new(1, 2, 2)).add(AvgPool2d::new(5));
    let mut pooled = pooled.add(Flatten::new()).seed(25).build().unwrap();
    check("conv → average pool", &mut pooled, &random(&[2, 1, 6, 6], 26), &random(&[2, 2], 27), None);
}

#[test]
fn embeddings_and_recurrent_layers_with_lengths() {
    let lengths = [5usize, 2, 4, 1];
    let ids = Tensor::from_vec(&[4, 5], (0..20).map(|v| ((v * 7) % 9) as f32).collect()).unwrap();
    let lstm = Sequential::builder(&[5]).add(Embedding::new(9, 3)).add(Lstm::new(3, 4)).add(Dense::new(4, 2));
    let mut lstm = lstm.seed(13).build().unwrap();
    check("embedding → lstm (lengths) → dense", &mut lstm, &ids, &random(&[4, 5, 2], 14), Some(&lengths));
    let gru =
        Sequential::builder(&[6, 3]).add(Gru::new(3, 4).last_step_only()).add(Dense::new(4, 2)).seed(15);
    let mut gru = gru.build().unwrap();
    check("gru (last step)", &mut gru, &random(&[3, 6, 3], 16), &random(&[3, 2], 17), None);
    let rnn = Sequential::builder(&[6, 3]).add(Rnn::new(3, 4)).add(Rnn::relu(4, 2)).seed(18);
    let mut rnn = rnn.build().unwrap();
    check("stacked rnn", &mut rnn, &random(&[3, 6, 3], 19), &random(&[3, 6, 2], 20), None);
}

/// A layer with parameters that does not implement the per-example pass (hides `Dense`'s).
struct Opaque(Dense);

impl Layer for Opaque {
    fn describe(&self) -> String {
        format!("Opaque({})", self.0.describe())
    }
    fn output_shape(&self, input: &[usize]) -> backprop::Result<Vec<usize>> {
        self.0.output_shape(input)
    }
    fn forward(&mut self, x: &Tensor, pass: Pass<'_>) -> Tensor {
        self.0.forward(x, pass)
    }
    fn backward(&mut self, g: &Tensor, input_grad: InputGrad) -> Option<Tensor> {
        self.0.backward(g, input_grad)
    }
}

impl Visit for Opaque {
    fn visit<'a>(&'a self, f: &mut dyn FnMut(&str, State<'a>)) {
        self.0.visit(f)
    }

    fn visit_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, StateMut<'a>)) {
        self.0.visit_mut(f)
    }
}

#[test]
fn dp_sgd_steps_agree_whichever_way_the_gradients_are_found() {
    let data = common::blobs(40, 21);
    let loss = CrossEntropyLoss::new();
    let o =
        DpOptions { epochs: 2, sample_rate: 0.3, clip: 0.1, noise_multiplier: 1.1, delta: 1e-5, seed: 22 };
    let build = |opaque: bool| {
        let b = Sequential::builder(&[2]).add(Dense::new(2, 8).seed(23)).add(Tanh::new());
        let last = Dense::new(8, 3).seed(24);
        if opaque { b.add(Opaque(last)) } else { b.add(last) }.build().unwrap()
    };
    let (mut batched, mut one_by_one) = (build(false), build(true));
    assert!(supports_per_example(&mut batched) && !supports_per_example(&mut one_by_one));
    let a = fit_private(&mut batched, &data, &loss, &mut Adam::new(0.01), &o).unwrap();
    let b = fit_private(&mut one_by_one, &data, &loss, &mut Adam::new(0.01), &o).unwrap();
    assert_eq!(a.steps, b.steps);
    for (x, y) in a.epoch_losses.iter().zip(&b.epoch_losses) {
        assert!((x - y).abs() < 1e-5, "epoch losses {x} vs {y}");
    }
    for ((name, p), (_, q)) in named_params(&batched).into_iter().zip(named_params(&one_by_one)) {
        assert!(p.value.max_abs_diff(&q.value) < 1e-5, "{name}: {}", p.value.max_abs_diff(&q.value));
    }
}

#[test]
#[should_panic(expected = "has parameters but no per-example backward pass")]
fn a_layer_without_the_pass_says_so() {
    let mut opaque = Opaque(Dense::new(2, 2));
    let x = Tensor::ones(&[1, 2]);
    opaque.forward(&x, Pass::TRAIN);
    let mut grads = PerExampleGrads::new();
    grads.start(1);
    backward_per_example(&mut opaque, &x, InputGrad::NotNeeded, &mut grads);
}

/// NaN and ∞ in the padding (past each sequence's length) reach no gradient, in the batched pass
/// or the per-example one: the same numbers as zeros there.
#[test]
fn what_sits_in_the_padding_reaches_no_recurrent_gradient() {
    let clean = Tensor::from_vec(&[2, 4, 3], (0..24).map(|i| (i as f32 * 0.41).sin()).collect()).unwrap();
    let mut dirty = clean.clone();
    for (t, v) in [(2, f32::NAN), (3, f32::INFINITY)] {
        for f in 0..3 {
            dirty.data_mut()[(4 + t) * 3 + f] = v; // sample 1, steps 2 and 3: padding for length 2
        }
    }
    let lengths = [4, 2];
    let pass = Pass::TRAIN.with_lengths(&lengths);
    let layers: Vec<fn() -> Box<dyn Layer>> =
        vec![|| Box::new(Lstm::new(3, 4).seed(1)), || Box::new(Gru::new(3, 4).seed(2)), || {
            Box::new(Rnn::new(3, 4).seed(3))
        }];
    for make in layers {
        let grads = |x: &Tensor| {
            let mut layer = make();
            let y = layer.forward(x, pass);
            let g = Tensor::ones(y.shape());
            zero_grad(layer.as_mut());
            let dx = layer.backward(&g, InputGrad::Needed).unwrap();
            let batched: Vec<Tensor> =
                named_params(layer.as_ref()).into_iter().map(|(_, p)| p.grad.clone()).collect();
            layer.forward(x, pass);
            let mut per = PerExampleGrads::new();
            per.start(2);
            let _ = backward_per_example(layer.as_mut(), &g, InputGrad::NotNeeded, &mut per);
            (y, dx, batched, per.slots().to_vec())
        };
        let (a, b) = (grads(&clean), grads(&dirty));
        let name = make().describe();
        assert_eq!(a.0, b.0, "{name}: output");
        assert_eq!(a.2, b.2, "{name}: parameter gradients");
        assert_eq!(a.3, b.3, "{name}: per-example gradients");
        // dx of the valid steps (the padded steps' dx is zero in both).
        assert_eq!(a.1, b.1, "{name}: input gradient");
    }
}
