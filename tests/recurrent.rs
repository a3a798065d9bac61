//! Recurrent layers and Embedding: agreement with PyTorch 2.15 (`nn.RNN`, `nn.LSTM`, `nn.GRU`,
//! batch-first; `tests/fixtures/make_recurrent_fixture.py`), with the plain-loop reference, with
//! finite differences (with and without lengths, initial state, last step only), one LSTM step
//! worked by hand, padding that changes nothing, and truncated BPTT.

mod common;

use backprop::gradcheck::{Options, check_layer};
use backprop::layers::recurrent::reference::{CellKind, Weights, recurrent_forward};
use backprop::layers::recurrent::{Cell, Recurrent};
use backprop::layers::{RecurrentState, StateMut, named_params, zero_grad};
use backprop::prelude::*;
use safetensors::SafeTensors;
use std::ops::DerefMut;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/recurrent.safetensors");

fn tensor(file: &SafeTensors, name: &str) -> Tensor {
    common::fixture_tensor(file, name)
}

fn assert_close(ours: &Tensor, torch: &Tensor, what: &str) {
    common::assert_close_to(ours, torch, 1e-5, what);
}

/// Sets every parameter of `layer` from `prefix.<name>` in the fixture.
fn load(layer: &mut dyn Layer, file: &SafeTensors, prefix: &str) {
    layer.visit_mut(&mut |name, s| {
        if let StateMut::Param(p) = s {
            p.value = tensor(file, &format!("{prefix}.{name}"));
        }
    });
}

/// One forward and backward pass of `layer` with the fixture's initial state and lengths (if
/// any), against PyTorch: y, h_n (c_n), and the gradients of
/// L = Σ y ⊙ r + Σ h_n ⊙ r_h (+ Σ c_n ⊙ r_c) with respect to x, h₀ (c₀) and every weight.
fn check_against_torch<C: Cell, L: Layer + DerefMut<Target = Recurrent<C>>>(
    mut layer: L,
    file: &SafeTensors,
    prefix: &str,
) {
    let t = |what: &str| tensor(file, &format!("{prefix}.{what}"));
    let has = |what: &str| file.names().iter().any(|n| *n == format!("{prefix}.{what}"));
    load(&mut layer, file, prefix);
    let lengths: Option<Vec<usize>> =
        has("lengths").then(|| t("lengths").data().iter().map(|&v| v as usize).collect());
    let pass = Pass::TRAIN.with_optional_lengths(lengths.as_deref());
    let initial = RecurrentState { h: t("h0"), c: has("c0").then(|| t("c0")) };
    let (y, last) = layer.forward_with_state(&t("x"), Some(&initial), pass).unwrap();
    assert_close(&y, &t("y"), &format!("{prefix}: y"));
    assert_close(&last.h, &t("hn"), &format!("{prefix}: h_n"));
    assert_eq!(last.c.is_some(), has("cn"), "{prefix}: a final cell state exactly for the LSTM");
    if let Some(c) = &last.c {
        assert_close(c, &t("cn"), &format!("{prefix}: c_n"));
    }
    let d_last = RecurrentState { h: t("r_h"), c: has("r_c").then(|| t("r_c")) };
    let (dx, d_initial) = layer.backward_with_state(Some(&t("r")), Some(&d_last), InputGrad::Needed);
    assert_close(&dx.unwrap(), &t("dx"), &format!("{prefix}: dL/dx"));
    assert_close(&d_initial.h, &t("dh0"), &format!("{prefix}: dL/dh0"));
    assert_eq!(d_initial.c.is_some(), has("dc0"), "{prefix}: a cell-state gradient exactly for the LSTM");
    if let Some(dc0) = &d_initial.c {
        assert_close(dc0, &t("dc0"), &format!("{prefix}: dL/dc0"));
    }
    for (name, p) in named_params(&layer) {
        assert_close(&p.grad, &t(&format!("grad.{name}")), &format!("{prefix}: dL/d{name}"));
    }
}

#[test]
fn rnn_lstm_gru_match_pytorch() {
    let bytes = std::fs::read(FIXTURE).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let (f, h) = (4, 6);
    check_against_torch(Rnn::new(f, h), &file, "rnn");
    check_against_torch(Rnn::relu(f, h), &file, "rnn_relu");
    check_against_torch(Lstm::new(f, h), &file, "lstm");
    check_against_torch(Gru::new(f, h), &file, "gru");
    // Padded sequences (lengths 5, 2, 4 through pack_padded_sequence), with non-zero dL/dh_n and
    // dL/dc_n entering at each sequence's last valid step.
    check_against_torch(Lstm::new(f, h), &file, "lstm_len");
}

/// The final state's output as the last step only: `last_step_only` outputs h_n, and its
/// gradient adds to the one given for the final state.
#[test]
fn last_step_output_and_final_state_gradients_add() {
    let x = Tensor::randn(&[3, 4, 2], 0.0, 1.0, 1);
    let (mut last, mut all) = (Gru::new(2, 3).seed(2).last_step_only(), Gru::new(2, 3).seed(2));
    let (h_n, state) = last.forward_with_state(&x, None, Pass::TRAIN).unwrap();
    assert_eq!(h_n, state.h);
    let (_, state_all) = all.forward_with_state(&x, None, Pass::TRAIN).unwrap();
    assert_eq!(state_all.h, state.h);
    let (g1, g2) = (Tensor::randn(&[3, 3], 0.0, 1.0, 3), Tensor::randn(&[3, 3], 0.0, 1.0, 4));
    let (dx_last, d0_last) =
        last.backward_with_state(Some(&g1), Some(&RecurrentState::h(g2.clone())), InputGrad::Needed);
    let (dx_all, d0_all) =
        all.backward_with_state(None, Some(&RecurrentState::h(&g1 + &g2)), InputGrad::Needed);
    assert!(dx_last.unwrap().max_abs_diff(&dx_all.unwrap()) < 1e-6);
    assert!(d0_last.h.max_abs_diff(&d0_all.h) < 1e-6);
}

#[test]
fn batched_layers_equal_the_plain_loop_reference() {
    let x = Tensor::randn(&[4, 7, 3], 0.0, 1.0, 1);
    let lengths = [7, 3, 1, 5];
    for (kind, mut layer) in [
        (CellKind::Rnn { relu: false }, Box::new(Rnn::new(3, 5).seed(1)) as Box<dyn Layer>),
        (CellKind::Rnn { relu: true }, Box::new(Rnn::relu(3, 5).seed(2))),
        (CellKind::Lstm, Box::new(Lstm::new(3, 5).seed(3))),
        (CellKind::Gru, Box::new(Gru::new(3, 5).seed(4))),
    ] {
        let p: Vec<Tensor> = named_params(layer.as_ref()).into_iter().map(|(_, p)| p.value.clone()).collect();
        let w = Weights { w_ih: &p[0], w_hh: &p[1], b_ih: &p[2], b_hh: &p[3] };
        let y = layer.forward(&x, Pass::TRAIN);
        assert!(y.max_abs_diff(&recurrent_forward(kind, &w, &x, &[])) < 1e-5, "{kind:?}");
        let y = layer.forward(&x, Pass::TRAIN.with_lengths(&lengths));
        assert!(y.max_abs_diff(&recurrent_forward(kind, &w, &x, &lengths)) < 1e-5, "{kind:?} with lengths");
    }
}

fn check(name: &str, layer: &mut dyn Layer, x: &Tensor, pass: Pass<'_>) {
    let report = check_layer(layer, x, pass, &Options::default());
    assert!(report.passes(2e-2), "{name}:\n{report}");
}

/// `L = Σ y ⊙ r + Σ h_n ⊙ r_h (+ Σ c_n ⊙ r_c)` for a layer with a given initial state, and its
/// gradient with respect to h₀ (c₀) and the weights, against central differences.
fn check_states<C: Cell, L: Layer + DerefMut<Target = Recurrent<C>>>(
    name: &str,
    layer: &mut L,
    x: &Tensor,
    lengths: &[usize],
) {
    let (n, h) = (x.dim(0), layer.hidden());
    let pass = Pass::TRAIN.with_lengths(lengths);
    let state = |seed| Tensor::randn(&[n, h], 0.0, 0.5, seed);
    let with_c = |t: Tensor| if C::HAS_CELL { Some(t) } else { None };
    let h0 = RecurrentState { h: state(1), c: with_c(state(2)) };
    let y_shape = layer.output_shape(x.shape()).unwrap();
    let r = Tensor::randn(&y_shape, 0.0, 1.0, 3);
    let r_final = RecurrentState { h: state(4), c: with_c(state(5)) };
    let loss = |layer: &mut L, h0: &RecurrentState| -> f64 {
        let (y, last) = layer.forward_with_state(x, Some(h0), pass).unwrap();
        let dot =
            |a: &Tensor, b: &Tensor| a.data().iter().zip(b.data()).map(|(a, b)| (a * b) as f64).sum::<f64>();
        dot(&y, &r)
            + dot(&last.h, &r_final.h)
            + last.c.as_ref().map_or(0.0, |c| dot(c, r_final.c.as_ref().unwrap()))
    };
    loss(layer, &h0);
    zero_grad(layer);
    let (_, d0) = layer.backward_with_state(Some(&r), Some(&r_final), InputGrad::NotNeeded);
    let eps = 1e-2;
    // Every coordinate of h₀ and c₀.
    for which in 0..1 + usize::from(C::HAS_CELL) {
        for i in 0..n * h {
            let nudged = |delta: f32| {
                let mut s = h0.clone();
                let t = if which == 0 { &mut s.h } else { s.c.as_mut().unwrap() };
                t.data_mut()[i] += delta;
                s
            };
            let numeric = (loss(layer, &nudged(eps)) - loss(layer, &nudged(-eps))) / (2.0 * eps as f64);
            let analytic = if which == 0 { d0.h.data()[i] } else { d0.c.as_ref().unwrap().data()[i] };
            assert!(
                (numeric as f32 - analytic).abs() < 2e-2 * (1.0 + analytic.abs()),
                "{name}: d{}0[{i}] {analytic} vs {numeric}",
                if which == 0 { "h" } else { "c" }
            );
        }
    }
    // A few coordinates of each weight.
    let analytic: Vec<Tensor> = named_params(layer).into_iter().map(|(_, p)| p.grad.clone()).collect();
    for (k, grad) in analytic.iter().enumerate() {
        for i in [0, grad.len() / 2, grad.len() - 1] {
            let nudge = |layer: &mut L, delta: f32| {
                let mut j = 0;
                layer.visit_mut(&mut |_, s| {
                    if let StateMut::Param(p) = s {
                        if j == k {
                            p.value.data_mut()[i] += delta;
                        }
                        j += 1;
                    }
                });
            };
            nudge(layer, eps);
            let plus = loss(layer, &h0);
            nudge(layer, -2.0 * eps);
            let minus = loss(layer, &h0);
            nudge(layer, eps);
            let numeric = ((plus - minus) / (2.0 * eps as f64)) as f32;
            assert!(
                (numeric - grad.data()[i]).abs() < 2e-2 * (1.0 + numeric.abs()),
                "{name}: weight {k}[{i}] {} vs {numeric}",
                grad.data()[i]
            );
        }
    }
}

#[test]
fn gradient_checks() {
    let x = Tensor::randn(&[3, 5, 2], 0.0, 1.0, 7);
    for last in [false, true] {
        let mut lstm = Lstm::new(2, 3).seed(1);
        let mut gru = Gru::new(2, 3).seed(2);
        let mut rnn = Rnn::new(2, 3).seed(3);
        if last {
            (lstm, gru, rnn) = (lstm.last_step_only(), gru.last_step_only(), rnn.last_step_only());
        }
        check("LSTM", &mut lstm, &x, Pass::TRAIN);
        check("GRU", &mut gru, &x, Pass::TRAIN);
        check("RNN", &mut rnn, &x, Pass::TRAIN);
        // Variable lengths, travelling with the batch.
        check("LSTM, lengths", &mut lstm, &x, Pass::TRAIN.with_lengths(&[5, 2, 4]));
        check("GRU, lengths", &mut gru, &x, Pass::TRAIN.with_lengths(&[1, 5, 3]));
        check("RNN, lengths", &mut rnn, &x, Pass::TRAIN.with_lengths(&[3, 3, 5]));
        // A given initial state and a loss on the final state: dL/dh₀, dL/dc₀ and the weights
        // through dL/dh_n, dL/dc_n.
        check_states("LSTM, states", &mut lstm, &x, &[5, 2, 4]);
        check_states("GRU, states", &mut gru, &x, &[1, 5, 3]);
        check_states("RNN, states", &mut rnn, &x, &[3, 3, 5]);
    }
    let mut relu = Rnn::relu(2, 3).seed(5);
    check("RNN(ReLU)", &mut relu, &Tensor::randn(&[2, 4, 2], 0.5, 1.0, 11), Pass::TRAIN);
}

/// One LSTM step with one unit, worked by hand: x = 1, h₀ = c₀ = 0, W_ih = [1, 2, 0.5, −1]ᵀ
/// (gates i, f, g, o), no biases. Then p = (1, 2, 0.5, −1):
/// i = σ(1) = 0.731059, f = σ(2) = 0.880797, g = tanh(0.5) = 0.462117, o = σ(−1) = 0.268941,
/// c = f·0 + i·g = 0.337835, h = o·tanh(c) = 0.268941 · 0.325543 = 0.087552.
/// Backward from dh = 1: do = tanh(c) = 0.325543; dc = o·(1 − tanh²c) = 0.240439;
/// di = dc·g = 0.111111, dg = dc·i = 0.175775, df = dc·c₀ = 0;
/// dp = (di·i(1−i), 0, dg·(1−g²), do·o(1−o)) = (0.021846, 0, 0.138238, 0.064006) = dL/dW_ih (x = 1);
/// dL/dx = dp·W_ih = 0.021846 + 0 + 0.5·0.138238 − 0.064006 = 0.026959.
#[test]
fn one_lstm_step_by_hand() {
    let mut lstm = Lstm::new(1, 1);
    lstm.visit_mut(&mut |name, s| {
        if let StateMut::Param(p) = s {
            p.value = match name {
                "weight_ih_l0" => Tensor::from_vec(&[4, 1], vec![1.0, 2.0, 0.5, -1.0]).unwrap(),
                _ => Tensor::zeros(p.value.shape()),
            };
        }
    });
    let h = lstm.forward(&Tensor::ones(&[1, 1, 1]), Pass::TRAIN);
    let close =
        |got: f32, want: f32, what: &str| assert!((got - want).abs() < 2e-6, "{what}: {got} vs {want}");
    close(h.item(), 0.087552, "h");
    close(lstm.final_state().c.unwrap().item(), 0.337835, "c");
    zero_grad(&mut lstm);
    let dx = lstm.backward(&Tensor::ones(&[1, 1, 1]), InputGrad::Needed).unwrap();
    close(dx.item(), 0.026959, "dL/dx");
    let dw = named_params(&lstm)[0].1.grad.clone();
    for (got, want) in dw.data().iter().zip([0.021846, 0.0, 0.138238, 0.064006]) {
        close(*got, want, "dL/dW_ih");
    }
}

/// Padding contributes nothing: a padded sequence gives the outputs, final state and gradients of
/// the same sequence without its padding, and the padded inputs get no gradient.
#[test]
fn padding_changes_nothing() {
    let long = Tensor::randn(&[2, 6, 3], 0.0, 1.0, 1);
    let mut short = Tensor::zeros(&[2, 4, 3]);
    for s in 0..2 {
        short.outer_mut(s).copy_from_slice(&long.outer(s)[..12]);
    }
    let mut padded = Lstm::new(3, 4).seed(2);
    let mut plain = Lstm::new(3, 4).seed(2);
    let (y_pad, y) =
        (padded.forward(&long, Pass::TRAIN.with_lengths(&[4, 4])), plain.forward(&short, Pass::TRAIN));
    for s in 0..2 {
        assert_eq!(&y_pad.outer(s)[..16], y.outer(s), "valid steps");
        assert!(y_pad.outer(s)[16..].iter().all(|&v| v == 0.0), "padded steps output 0");
    }
    assert_eq!(padded.final_state(), plain.final_state(), "final state = last valid step");
    let g_long = Tensor::randn(&[2, 6, 4], 0.0, 1.0, 3);
    let mut g_short = Tensor::zeros(&[2, 4, 4]);
    for s in 0..2 {
        g_short.outer_mut(s).copy_from_slice(&g_long.outer(s)[..16]);
    }
    let dx_pad = padded.backward(&g_long, InputGrad::Needed).unwrap();
    let dx = plain.backward(&g_short, InputGrad::Needed).unwrap();
    for s in 0..2 {
        assert_eq!(&dx_pad.outer(s)[..12], dx.outer(s));
        assert!(dx_pad.outer(s)[12..].iter().all(|&v| v == 0.0), "padded inputs get no gradient");
    }
    for ((_, a), (_, b)) in named_params(&padded).into_iter().zip(named_params(&plain)) {
        assert_eq!(a.grad, b.grad);
    }
}

/// Truncated BPTT: a stateful layer run on two chunks gives the outputs of one pass over the whole
/// sequence; its backward stops at the chunk boundary and reports dL/dh₀ there.
#[test]
fn stateful_chunks_continue_the_sequence() {
    let whole = Tensor::randn(&[2, 8, 3], 0.0, 1.0, 4);
    let chunk = |from: usize| {
        let mut c = Tensor::zeros(&[2, 4, 3]);
        for s in 0..2 {
            c.outer_mut(s).copy_from_slice(&whole.outer(s)[from * 3..][..12]);
        }
        c
    };
    let mut once = Gru::new(3, 5).seed(6);
    let y = once.forward(&whole, Pass::TRAIN);
    let mut chunks = Gru::new(3, 5).seed(6).stateful();
    let (y1, y2) = (chunks.forward(&chunk(0), Pass::TRAIN), chunks.forward(&chunk(4), Pass::TRAIN));
    for s in 0..2 {
        let joined: Vec<f32> = y1.outer(s).iter().chain(y2.outer(s)).copied().collect();
        let diff = joined.iter().zip(y.outer(s)).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(diff < 1e-6, "chunked outputs differ by {diff}");
    }
    chunks.backward(&Tensor::ones(&[2, 4, 5]), InputGrad::Needed).unwrap();
    let dh0 = &chunks.initial_state_grad().unwrap().h;
    assert_eq!(dh0.shape(), &[2, 5]);
    assert!(dh0.data().iter().any(|&v| v != 0.0));
    chunks.reset_state();
    assert_eq!(chunks.forward(&chunk(0), Pass::TRAIN), y1, "reset: starts from zeros again");
}

#[test]
fn names_follow_pytorch_and_bad_settings_are_errors() {
    let model = Sequential::builder(&[5, 3])
        .add(Lstm::new(3, 4))
        .add(Gru::new(4, 2).last_step_only())
        .build()
        .unwrap();
    let names: Vec<String> = model.named_params().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "0.weight_ih_l0",
            "0.weight_hh_l0",
            "0.bias_ih_l0",
            "0.bias_hh_l0",
            "1.weight_ih_l0",
            "1.weight_hh_l0",
            "1.bias_ih_l0",
            "1.bias_hh_l0"
        ]
    );
    assert_eq!(model.sample_output_shape(), Some(vec![2]));
    assert_eq!(named_params(&model)[0].1.value.shape(), &[16, 3]);
    let err = Sequential::builder(&[5, 4]).add(Lstm::new(3, 4)).build().unwrap_err().to_string();
    assert!(err.contains("LSTM(3→4)") && err.contains("[N, T ≥ 1, 3]"), "{err}");
    // Side information that does not fit the batch is an error naming both counts or shapes.
    let mut lstm = Lstm::new(3, 4);
    let x = Tensor::zeros(&[2, 5, 3]);
    let err = |r: backprop::Result<(Tensor, RecurrentState)>| r.unwrap_err().to_string();
    let e = err(lstm.forward_with_state(&x, None, Pass::TRAIN.with_lengths(&[2, 0])));
    assert!(e.contains("sequence 1 has length 0") && e.contains("1..=5"), "{e}");
    let e = err(lstm.forward_with_state(&x, None, Pass::TRAIN.with_lengths(&[2, 6])));
    assert!(e.contains("length 6") && e.contains("5 steps"), "{e}");
    let e = err(lstm.forward_with_state(&x, None, Pass::TRAIN.with_lengths(&[2, 2, 2])));
    assert!(e.contains("3 sequence lengths for a batch of 2"), "{e}");
    let bad = RecurrentState::hc(Tensor::zeros(&[2, 5]), Tensor::zeros(&[2, 4]));
    let e = err(lstm.forward_with_state(&x, Some(&bad), Pass::TRAIN));
    assert!(e.contains("[2, 4]") && e.contains("[2, 5]"), "{e}");
    let e = err(lstm.forward_with_state(
        &x,
        Some(&RecurrentState::hc(Tensor::zeros(&[3, 4]), Tensor::zeros(&[3, 4]))),
        Pass::TRAIN,
    ));
    assert!(e.contains("batch of 2") && e.contains("[3, 4]"), "{e}");
    let e = err(lstm.forward_with_state(&x, Some(&RecurrentState::h(Tensor::zeros(&[2, 4]))), Pass::TRAIN));
    assert!(e.contains("needs a cell state"), "{e}");
    let e = Gru::new(3, 4)
        .forward_with_state(
            &x,
            Some(&RecurrentState::hc(Tensor::zeros(&[2, 4]), Tensor::zeros(&[2, 4]))),
            Pass::TRAIN,
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("no cell state"), "{e}");
}

#[test]
fn embedding_looks_up_and_scatters() {
    let table = Tensor::from_vec(&[3, 2], vec![0., 1., 10., 11., 20., 21.]).unwrap();
    let mut emb = Embedding::new(3, 2).with_weights(table);
    let ids = Tensor::from_vec(&[2, 2], vec![2., 0., 2., 2.]).unwrap();
    let y = emb.forward(&ids, Pass::TRAIN);
    assert_eq!(y.data(), &[20., 21., 0., 1., 20., 21., 20., 21.]);
    let g = Tensor::from_vec(&[2, 2, 2], vec![1., 2., 3., 4., 5., 6., 7., 8.]).unwrap();
    let dx = emb.backward(&g, InputGrad::Needed).unwrap();
    assert_eq!(dx.shape(), &[2, 2]);
    // Row 2 was read three times: its gradient is the sum; row 1 was never read.
    assert_eq!(emb.weight().grad.data(), &[3., 4., 0., 0., 13., 16.]);
    for bad in [3.0, -1.0, 0.5, f32::NAN] {
        let err = emb.check_ids(&Tensor::from_vec(&[1, 2], vec![0., bad]).unwrap()).unwrap_err().to_string();
        assert!(err.contains(&format!("id {bad} at position 1")), "{err}");
    }
    // In training, a bad id stops fit with the layer's message, the model unchanged.
    let mut model = Sequential::builder(&[2])
        .add(Embedding::new(3, 2))
        .add(Flatten::new())
        .add(Dense::new(4, 2))
        .build()
        .unwrap();
    let data = Dataset::classification(Tensor::from_vec(&[2, 2], vec![0., 1., 2., 7.]).unwrap(), vec![0, 1])
        .unwrap();
    let before = model.state_dict();
    let err = model
        .fit(&data, &CrossEntropyLoss::new(), &mut Adam::new(0.1), FitOptions::new().verbose(false))
        .unwrap_err();
    assert!(err.to_string().contains("id 7"), "{err}");
    assert_eq!(model.state_dict(), before);
}

/// Per-time-step outputs: Dense maps the last axis of `[N, T, H]`, and the losses take per-step
/// targets with NaN marking the steps to ignore — they then equal the loss over the other steps.
#[test]
fn per_step_dense_and_masked_losses() {
    let mut dense = Dense::new(4, 3).seed(1);
    let x = Tensor::randn(&[2, 5, 4], 0.0, 1.0, 2);
    assert_eq!(dense.forward(&x, Pass::TRAIN).shape(), &[2, 5, 3]);
    check("Dense on [N, T, F]", &mut dense, &x, Pass::TRAIN);

    let logits = Tensor::randn(&[2, 3, 4], 0.0, 2.0, 3);
    let ids = Tensor::from_vec(&[2, 3], vec![1., f32::NAN, 3., 0., 2., f32::NAN]).unwrap();
    let ce = CrossEntropyLoss::new();
    let (l, g) = ce.loss_and_grad(&logits, (&ids).into()).unwrap();
    // The same four rows as an [N, C] batch with class labels.
    let rows = [0usize, 2, 3, 4];
    let picked = Tensor::from_fn(&[4, 4], |i| logits.data()[rows[i[0]] * 4 + i[1]]);
    let (l4, g4) = ce.loss_and_grad(&picked, (&[1usize, 3, 0, 2][..]).into()).unwrap();
    assert!((l - l4).abs() < 1e-6, "{l} vs {l4}");
    for (k, &r) in rows.iter().enumerate() {
        assert_eq!(&g.data()[r * 4..][..4], &g4.data()[k * 4..][..4]);
    }
    assert!(
        g.data()[4..8].iter().chain(&g.data()[20..24]).all(|&v| v == 0.0),
        "ignored rows get no gradient"
    );
    let report = backprop::gradcheck::check_loss(&ce, &logits, (&ids).into(), &Options::default()).unwrap();
    assert!(report.passes(1e-2), "{report}");
    let err = ce
        .loss(&logits, (&Tensor::from_vec(&[2, 3], vec![0., 4., 0., 0., 0., 0.]).unwrap()).into())
        .unwrap_err();
    assert!(err.to_string().contains("class id 4 at position 1"), "{err}");

    let bce = BceWithLogitsLoss::new().ignore_nan_targets();
    let t = Tensor::from_vec(
        &[2, 3, 4],
        (0..24).map(|i| if i % 3 == 0 { f32::NAN } else { (i % 2) as f32 }).collect(),
    )
    .unwrap();
    let report = backprop::gradcheck::check_loss(&bce, &logits, (&t).into(), &Options::default()).unwrap();
    assert!(report.passes(1e-2), "{report}");
    let (l, _) = bce.loss_and_grad(&logits, (&t).into()).unwrap();
    assert!(l.is_finite());
    assert!(
        BceWithLogitsLoss::new().loss(&logits, (&t).into()).unwrap().is_nan(),
        "without the option NaN stays NaN"
    );
}

/// Large enough batches run the samples of a step in parallel: the results equal the reference
/// and, for the gradients, the sum over one-sample batches (which run serially).
#[test]
fn parallel_steps_equal_serial_ones() {
    let (n, f, h) = (16, 5, 300); // N·4H = 19,200: parallel for the LSTM
    let x = Tensor::randn(&[n, 4, f], 0.0, 1.0, 1);
    let mut lstm = Lstm::new(f, h).seed(2);
    let lengths: Vec<usize> = (0..n).map(|s| 1 + s % 4).collect();
    let y = lstm.forward(&x, Pass::TRAIN.with_lengths(&lengths));
    let p: Vec<Tensor> = named_params(&lstm).into_iter().map(|(_, p)| p.value.clone()).collect();
    let w = Weights { w_ih: &p[0], w_hh: &p[1], b_ih: &p[2], b_hh: &p[3] };
    assert!(y.max_abs_diff(&recurrent_forward(CellKind::Lstm, &w, &x, &lengths)) < 1e-5);
    let g = Tensor::randn(y.shape(), 0.0, 1.0, 3);
    zero_grad(&mut lstm);
    let dx = lstm.backward(&g, InputGrad::Needed).unwrap();
    let batch_grad = named_params(&lstm)[1].1.grad.clone();
    let mut one = Lstm::new(f, h).seed(2);
    let mut summed = Tensor::zeros(batch_grad.shape());
    for (s, &len) in lengths.iter().enumerate() {
        let xs = Tensor::from_vec(&[1, 4, f], x.outer(s).to_vec()).unwrap();
        one.forward(&xs, Pass::TRAIN.with_lengths(&[len]));
        zero_grad(&mut one);
        let gs = Tensor::from_vec(&[1, 4, h], g.outer(s).to_vec()).unwrap();
        let dxs = one.backward(&gs, InputGrad::Needed).unwrap();
        assert!(dxs.data().iter().zip(dx.outer(s)).all(|(a, b)| (a - b).abs() < 1e-5));
        summed += &named_params(&one)[1].1.grad;
    }
    assert!(summed.max_abs_diff(&batch_grad) < 1e-4, "{}", summed.max_abs_diff(&batch_grad));
}

/// The lengths that mask a recurrent layer also mask per-step targets.
#[test]
fn padding_masks_the_per_step_loss() {
    let logits = Tensor::randn(&[2, 4, 1], 0.0, 1.0, 1);
    let mut targets = Tensor::ones(&[2, 4, 1]);
    backprop::loss::mask_padding(&mut targets, &[4, 2]).unwrap();
    let bce = BceWithLogitsLoss::new().ignore_nan_targets();
    let (l, g) = bce.loss_and_grad(&logits, (&targets).into()).unwrap();
    assert!(l.is_finite() && g.data()[6..].iter().all(|&v| v == 0.0));
    let six = Tensor::from_vec(&[6], [0, 1, 2, 3, 4, 5].map(|i| logits.data()[i]).to_vec()).unwrap();
    let (l6, _) = BceWithLogitsLoss::new().loss_and_grad(&six, (&Tensor::ones(&[6])).into()).unwrap();
    assert!((l - l6).abs() < 1e-6);
    assert!(backprop::loss::mask_padding(&mut targets, &[5, 1]).is_err());
    assert!(backprop::loss::mask_padding(&mut targets, &[1]).is_err());
}

/// Embedding's table gradient against central differences (the ids themselves have no
/// derivative, so `check_layer`, which also perturbs the input, does not apply).
#[test]
fn embedding_weight_gradient_by_finite_differences() {
    let ids = Tensor::from_vec(&[2, 3], vec![1., 4., 1., 0., 2., 4.]).unwrap();
    let mut emb = Embedding::new(5, 3);
    let r = Tensor::randn(&[2, 3, 3], 0.0, 1.0, 1);
    let objective = |emb: &mut Embedding| -> f64 {
        emb.forward(&ids, Pass::TRAIN).data().iter().zip(r.data()).map(|(&a, &b)| a as f64 * b as f64).sum()
    };
    emb.forward(&ids, Pass::TRAIN);
    zero_grad(&mut emb);
    emb.backward(&r, InputGrad::Needed).unwrap();
    let analytic = emb.weight().grad.clone();
    let eps = 1e-2f32;
    for i in 0..analytic.len() {
        let set = |emb: &mut Embedding, delta: f32| {
            emb.visit_mut(&mut |_, s| {
                if let StateMut::Param(p) = s {
                    p.value.data_mut()[i] += delta;
                }
            })
        };
        set(&mut emb, eps);
        let plus = objective(&mut emb);
        set(&mut emb, -2.0 * eps);
        let minus = objective(&mut emb);
        set(&mut emb, eps);
        let numeric = ((plus - minus) / (2.0 * eps as f64)) as f32;
        assert!(
            (numeric - analytic.data()[i]).abs() < 1e-3,
            "entry {i}: {numeric} vs {}",
            analytic.data()[i]
        );
    }
    // Row 3 was never looked up: no gradient.
    assert!(analytic.outer(3).iter().all(|&g| g == 0.0));
}

/// The batched walk back through time computes what the definition computes: the plain
/// per-sample, per-step BPTT of `layers::recurrent::reference`, for every cell, with lengths, an
/// initial state and gradients arriving at the outputs and at the final state.
#[test]
fn batched_backward_equals_the_plain_bptt_reference() {
    use backprop::layers::recurrent::reference::recurrent_backward;
    let (n, t, f, h) = (4, 6, 3, 5);
    let x = Tensor::randn(&[n, t, f], 0.0, 1.0, 1);
    let lengths = [6, 2, 5, 1];
    let dy = Tensor::randn(&[n, t, h], 0.0, 1.0, 2);
    let (h0, c0) = (Tensor::randn(&[n, h], 0.0, 0.5, 3), Tensor::randn(&[n, h], 0.0, 0.5, 4));
    let (dh_n, dc_n) = (Tensor::randn(&[n, h], 0.0, 1.0, 5), Tensor::randn(&[n, h], 0.0, 1.0, 6));
    fn run<C: Cell, L: Layer + DerefMut<Target = Recurrent<C>>>(
        kind: CellKind,
        mut layer: L,
        (x, lengths, dy): (&Tensor, &[usize], &Tensor),
        (h0, c0, dh_n, dc_n): (&Tensor, &Tensor, &Tensor, &Tensor),
    ) {
        let p: Vec<Tensor> = named_params(&layer).into_iter().map(|(_, p)| p.value.clone()).collect();
        let w = Weights { w_ih: &p[0], w_hh: &p[1], b_ih: &p[2], b_hh: &p[3] };
        let c0 = C::HAS_CELL.then_some(c0);
        let dc_n = C::HAS_CELL.then_some(dc_n);
        let reference = recurrent_backward(kind, &w, x, lengths, (Some(h0), c0), dy, Some(dh_n), dc_n);
        let initial = RecurrentState { h: h0.clone(), c: c0.cloned() };
        layer.forward_with_state(x, Some(&initial), Pass::TRAIN.with_lengths(lengths)).unwrap();
        zero_grad(&mut layer);
        let d_final = RecurrentState { h: dh_n.clone(), c: dc_n.cloned() };
        let (dx, d0) = layer.backward_with_state(Some(dy), Some(&d_final), InputGrad::Needed);
        let close = |a: &Tensor, b: &Tensor, what: &str| {
            common::assert_close_to(a, b, 1e-4, &format!("{kind:?}: {what}"))
        };
        close(&dx.unwrap(), &reference.dx, "dL/dx");
        close(&d0.h, &reference.dh0, "dL/dh0");
        assert_eq!(d0.c.is_some(), c0.is_some(), "{kind:?}: a cell-state gradient exactly for the LSTM");
        if let Some(dc0) = &d0.c {
            close(dc0, &reference.dc0, "dL/dc0");
        }
        let grads: Vec<Tensor> = named_params(&layer).into_iter().map(|(_, p)| p.grad.clone()).collect();
        close(&grads[0], &reference.dw_ih, "dL/dW_ih");
        close(&grads[1], &reference.dw_hh, "dL/dW_hh");
        close(&grads[2], &reference.db_ih, "dL/db_ih");
        close(&grads[3], &reference.db_hh, "dL/db_hh");
    }
    let inputs = (&x, &lengths[..], &dy);
    let states = (&h0, &c0, &dh_n, &dc_n);
    run(CellKind::Rnn { relu: false }, Rnn::new(f, h).seed(1), inputs, states);
    run(CellKind::Rnn { relu: true }, Rnn::relu(f, h).seed(2), inputs, states);
    run(CellKind::Lstm, Lstm::new(f, h).seed(3), inputs, states);
    run(CellKind::Gru, Gru::new(f, h).seed(4), inputs, states);
}

/// Without an input gradient to compute, a GRU's walk keeps only the `n` gate's `dL/da` (its `r`
/// and `z` columns equal `dL/db`'s, which `dW_ih`'s rows for them then read): the weight and bias
/// gradients are the same bits as with the input gradient (which needs all of `dL/da`), and as the
/// plain BPTT reference — on the kernel's long sums (`T·N` ≥ 512 and at least four times `3H`:
/// `H` = 24, its gradients read in place; `H` = 1, `dW_hh` and `dW_ih`'s two shared rows from one
/// copy of `db` at its narrowest, three columns) and off them (`H` = 150, `db`'s first `2H`
/// columns copied next to each other; the short sequences), with padding, on 1 and 2 threads.
#[test]
fn gru_weight_gradients_without_an_input_gradient_are_the_same_bits() {
    use backprop::layers::recurrent::reference::recurrent_backward;
    for (n, t, f, h) in [(20, 40, 12, 24), (10, 60, 30, 150), (4, 6, 3, 5), (16, 40, 5, 1)] {
        let x = Tensor::randn(&[n, t, f], 0.0, 1.0, 1);
        let lengths: Vec<usize> = (0..n).map(|s| t - (s * 7) % t.min(9)).collect();
        let dy = Tensor::randn(&[n, t, h], 0.0, 1.0, 2);
        let grads = |threads: usize, input_grad: InputGrad| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                let mut gru = Gru::new(f, h).seed(9);
                gru.forward(&x, Pass::TRAIN.with_lengths(&lengths));
                zero_grad(&mut gru);
                let dx = gru.backward(&dy, input_grad);
                assert_eq!(dx.is_some(), input_grad.is_needed());
                let params: Vec<(Tensor, Tensor)> =
                    named_params(&gru).into_iter().map(|(_, p)| (p.value.clone(), p.grad.clone())).collect();
                params
            })
        };
        let full = grads(1, InputGrad::Needed);
        for threads in [1, 2] {
            let alone = grads(threads, InputGrad::NotNeeded);
            for (i, ((_, a), (_, b))) in alone.iter().zip(&full).enumerate() {
                let same = a.data().iter().zip(b.data()).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{n}×{t}×{f}→{h}, parameter {i}, {threads} threads");
            }
        }
        let w = Weights { w_ih: &full[0].0, w_hh: &full[1].0, b_ih: &full[2].0, b_hh: &full[3].0 };
        let reference = recurrent_backward(CellKind::Gru, &w, &x, &lengths, (None, None), &dy, None, None);
        let want = [&reference.dw_ih, &reference.dw_hh, &reference.db_ih, &reference.db_hh];
        for (i, ((_, ours), want)) in full.iter().zip(want).enumerate() {
            common::assert_close_to(ours, want, 1e-4, &format!("{n}×{t}×{f}→{h}, parameter {i}"));
        }
    }
}

/// A batch whose backpropagation through time would keep more than the layer's activation budget
/// is refused by shape inference — so `fit`, `evaluate` and `predict` return an `Err` naming the
/// need, the budget and the ways out before allocating — and a raised budget takes it.
#[test]
fn the_activation_budget_refuses_huge_sequences_before_allocating() {
    let lstm = Lstm::new(8, 16);
    // 4·N·T·(2F + (1·4 + 4 + 3)·H) = 4·2·1000·(16 + 176) bytes (an LSTM keeps one gate gradient)
    assert_eq!(lstm.activation_bytes(&[2, 1000, 8]), 4 * 2 * 1000 * (16 + 11 * 16));
    let small = Lstm::new(8, 16).activation_budget(1 << 20);
    assert!(small.output_shape(&[2, 100, 8]).is_ok());
    let e = small.output_shape(&[2, 1000, 8]).unwrap_err().to_string();
    for part in ["LSTM", "[2, 1000, 8]", "1.5 MiB", "1.0 MiB", "windows", "activation_budget"] {
        assert!(e.contains(part), "{part:?} missing from {e}");
    }
    // One student with 300,000 answers through the default budget: an error, not an abort —
    // when the model is built with that input shape, else when it is trained or asked to predict.
    let e = Sequential::builder(&[300_000, 64]).add(Lstm::new(64, 200)).build().unwrap_err().to_string();
    assert!(e.contains("needs about 2.6 GiB") && e.contains("budget of 2.0 GiB"), "{e}");
    let mut model = Sequential::new().add(Lstm::new(8, 16).activation_budget(1 << 20));
    let before = backprop::layers::Snapshot::of(&model);
    let x = Dataset::regression(Tensor::zeros(&[2, 1000, 8]), Tensor::zeros(&[2, 1000, 16])).unwrap();
    let e =
        model.fit(&x, &MseLoss::new(), &mut Adam::new(0.01), FitOptions::new().verbose(false)).unwrap_err();
    assert!(e.to_string().contains("activation budget"), "{e}");
    assert!(model.predict(x.inputs(), 2).is_err());
    assert!(model.evaluate(&x, &MseLoss::new(), 2).is_err());
    assert_eq!(format!("{before:?}"), format!("{:?}", backprop::layers::Snapshot::of(&model)));
    // Raised, the same layer takes the long batch.
    let mut roomy = Sequential::new().add(Lstm::new(8, 16).activation_budget(1 << 30));
    assert_eq!(roomy.predict(&Tensor::zeros(&[2, 1000, 8]), 2).unwrap().shape(), &[2, 1000, 16]);
    // The budget is per batch: prediction (and evaluation) in batches that fit it take any number
    // of samples; a batch size over it is refused as a whole batch of that size would be.
    let mut per_batch = Sequential::new().add(Lstm::new(8, 16).seed(3).activation_budget(1 << 20));
    let (many, fits) = (Tensor::randn(&[40, 100, 8], 0.0, 1.0, 4), 2);
    assert!(
        per_batch.output_shape(&[40, 100, 8]).is_err() && per_batch.output_shape(&[fits, 100, 8]).is_ok()
    );
    let y = per_batch.predict(&many, fits).unwrap();
    let first = per_batch.predict(&many.select_outer(&[0, 1]), fits).unwrap();
    assert_eq!((y.shape(), &y.data()[..first.len()]), (&[40, 100, 16][..], first.data()));
    let e = per_batch.predict(&many, 40).unwrap_err().to_string();
    assert!(e.contains("[40, 100, 8]") && e.contains("activation budget"), "{e}");
    let data = Dataset::regression(many, Tensor::zeros(&[40, 100, 16])).unwrap();
    assert!(per_batch.evaluate(&data, &MseLoss::new(), fits).is_ok());
}

/// `Mode::Predict` keeps no gates for backward: its outputs and final state are those of an
/// `Eval` pass, bit for bit (with and without padding, on one and on two threads, for an odd and
/// an even number of steps, and for a last-step-only layer, whose prediction keeps two steps'
/// states in turn — stateful too, where the next pass starts from that final state); a backward
/// pass after it refuses with a message naming the layer and the mode; a training pass afterwards
/// trains exactly as if the prediction had not happened.
#[test]
fn predict_mode_keeps_nothing_and_changes_nothing() {
    let x = Tensor::randn(&[5, 7, 3], 0.0, 1.0, 11);
    let x_even = Tensor::randn(&[5, 6, 3], 0.0, 1.0, 12);
    let lengths = [7, 3, 1, 7, 5];
    let lengths_even = [6, 3, 1, 6, 4];
    type Make = Box<dyn Fn() -> Box<dyn Layer> + Sync>;
    let layers: Vec<(&str, Make)> = vec![
        ("LSTM", Box::new(|| Box::new(Lstm::new(3, 4).seed(2)))),
        ("GRU", Box::new(|| Box::new(Gru::new(3, 4).seed(2)))),
        ("RNN", Box::new(|| Box::new(Rnn::new(3, 4).seed(2)))),
    ];
    let last_only: Vec<(&str, Make)> = vec![
        ("LSTM", Box::new(|| Box::new(Lstm::new(3, 4).seed(2).last_step_only()))),
        ("GRU", Box::new(|| Box::new(Gru::new(3, 4).seed(2).last_step_only()))),
        ("RNN", Box::new(|| Box::new(Rnn::new(3, 4).seed(2).last_step_only()))),
        ("LSTM", Box::new(|| Box::new(Lstm::new(3, 4).seed(2).last_step_only().stateful()))),
        ("GRU", Box::new(|| Box::new(Gru::new(3, 4).seed(2).last_step_only().stateful()))),
    ];
    let carried = |layer: &dyn Layer| {
        let mut state = None;
        layer.visit(&mut |_, s| {
            if let State::Carried(c) = s {
                state = c.cloned();
            }
        });
        state
    };
    for (name, make) in layers.iter().chain(&last_only) {
        for (x, lengths) in [(&x, &lengths[..]), (&x_even, &lengths_even[..])] {
            for lens in [None, Some(lengths)] {
                // Two passes in a row: a stateful layer's second starts from the first's final state.
                let mut evaluated = make();
                let eval: Vec<Tensor> =
                    (0..2).map(|_| evaluated.forward(x, Pass::EVAL.with_optional_lengths(lens))).collect();
                for threads in [1, 2] {
                    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                    let mut layer = make();
                    let predicted: Vec<Tensor> = (0..2)
                        .map(|_| pool.install(|| layer.forward(x, Pass::PREDICT.with_optional_lengths(lens))))
                        .collect();
                    let what = format!(
                        "{}, {} steps, lengths {lens:?}, {threads} threads",
                        layer.describe(),
                        x.dim(1)
                    );
                    assert_eq!(predicted, eval, "{what}");
                    assert_eq!(carried(&*layer), carried(&*evaluated), "{what}: the carried state");
                }
            }
        }
        // Backward after a prediction: refused, naming the layer and the mode.
        let mut layer = make();
        let y = layer.forward(&x, Pass::PREDICT);
        let dy = Tensor::ones(y.shape());
        let refused = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            layer.backward(&dy, InputGrad::Needed);
        }));
        let message = refused.expect_err("backward after Predict must panic");
        let message = message.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(message.contains(name) && message.contains("Mode::Predict"), "{message}");
        // Predict, then train: the same gradients as training alone (a stateful layer's training
        // pass starts, by design, from the state the prediction left).
        if carried(&*layer).is_some() {
            continue;
        }
        let mut fresh = make();
        fresh.forward(&x, Pass::TRAIN);
        let want = fresh.backward(&dy, InputGrad::Needed).unwrap();
        let mut after = make();
        after.forward(&x, Pass::PREDICT);
        after.forward(&x, Pass::TRAIN);
        assert_eq!(after.backward(&dy, InputGrad::Needed).unwrap(), want, "{name}");
        for ((n, a), (_, b)) in named_params(&*after).iter().zip(named_params(&*fresh).iter()) {
            assert_eq!(a.grad, b.grad, "{name} {n}");
        }
    }
}

/// A prediction reuses the weights' packed panels of the prediction before only while the weights
/// are the ones they were packed from: after any one value of `W_ih`, `b_ih`, `W_hh` or `b_hh`
/// changes (by as little as a sign of zero's worth, or by a load), after a training pass and its
/// backward (which packs `W_hh` the other way), and between a dense and an embedded input, each
/// prediction is what an `Eval` pass (which always packs afresh) gives, bit for bit.
#[test]
fn predictions_reuse_packed_weights_only_while_they_are_unchanged() {
    let x = Tensor::randn(&[13, 5, 7], 0.0, 1.0, 31);
    type Make = Box<dyn Fn() -> Box<dyn Layer>>;
    let layers: Vec<Make> = vec![
        Box::new(|| Box::new(Lstm::new(7, 36).seed(4))),
        Box::new(|| Box::new(Gru::new(7, 36).seed(4))),
        Box::new(|| Box::new(Rnn::new(7, 36).seed(4).last_step_only())),
    ];
    let check = |layer: &mut dyn Layer, what: &str| {
        let predicted = layer.forward(&x, Pass::PREDICT);
        let evaluated = layer.forward(&x, Pass::EVAL);
        assert_eq!(predicted, evaluated, "{}: {what}", layer.describe());
        // (EVAL packs afresh and forgets; predict twice more: the second reuses the first's panels.)
        assert_eq!(layer.forward(&x, Pass::PREDICT), evaluated, "{}: {what}, again", layer.describe());
        assert_eq!(layer.forward(&x, Pass::PREDICT), evaluated, "{}: {what}, reused", layer.describe());
    };
    for make in &layers {
        let mut layer = make();
        check(&mut *layer, "fresh");
        for name in ["weight_ih_l0", "bias_ih_l0", "weight_hh_l0", "bias_hh_l0"] {
            for (at_end, nudge) in [(false, 0.5f32), (true, -0.25)] {
                {
                    let mut params = backprop::layers::named_params_mut(&mut *layer);
                    let (_, p) = params.iter_mut().find(|(n, _)| n == name).expect(name);
                    let data = p.value.data_mut();
                    let at = if at_end { data.len() - 1 } else { 0 };
                    data[at] += nudge;
                }
                check(&mut *layer, &format!("{name} changed"));
            }
        }
        // A zero's sign alone: the values compare equal as numbers, not as bits.
        {
            let mut params = backprop::layers::named_params_mut(&mut *layer);
            let (_, p) = params.iter_mut().find(|(n, _)| n == "bias_hh_l0").unwrap();
            p.value.data_mut()[1] = 0.0;
        }
        check(&mut *layer, "a zero bias");
        {
            let mut params = backprop::layers::named_params_mut(&mut *layer);
            let (_, p) = params.iter_mut().find(|(n, _)| n == "bias_hh_l0").unwrap();
            p.value.data_mut()[1] = -0.0;
        }
        check(&mut *layer, "a negative zero bias");
        // Weights loaded from another layer.
        let other = make();
        let mut other_layer = other;
        other_layer.forward(&x, Pass::TRAIN);
        let mut params = backprop::layers::named_params_mut(&mut *layer);
        for ((_, mine), (_, theirs)) in params.iter_mut().zip(backprop::layers::named_params(&*other_layer)) {
            mine.value = theirs.value.clone();
        }
        drop(params);
        check(&mut *layer, "weights replaced");
        // A training pass and its backward, then predictions.
        let y = layer.forward(&x, Pass::TRAIN);
        layer.backward(&Tensor::ones(y.shape()), InputGrad::Needed);
        check(&mut *layer, "after training");
    }
    // Dense and embedded inputs in turn on one layer: each prediction packs what it reads.
    let ids = Tensor::from_vec(&[13, 5], (0..13 * 5).map(|i| (i * 7 % 11) as f32).collect()).unwrap();
    let table = Embedding::new(11, 7).seed(5);
    let mut layer = Lstm::new(7, 36).seed(4);
    let mut fresh = Lstm::new(7, 36).seed(4);
    for _ in 0..2 {
        let dense = layer.forward(&x, Pass::PREDICT);
        assert_eq!(dense, fresh.forward(&x, Pass::EVAL), "dense after embedded");
        let embedded = layer.forward_embedded(&table, &ids, Pass::PREDICT).unwrap();
        assert_eq!(
            embedded,
            fresh.forward_embedded(&table, &ids, Pass::EVAL).unwrap(),
            "embedded after dense"
        );
    }
}

/// A prediction reads each step's rows of the batch in place, `T·F` values apart, where the
/// passes that keep their input for backward read a time-major copy: the same products, so the
/// same bits — at sizes where the products run whole 12-row tiles and several panels, with padded
/// sequences, every step's output and last-step-only layers, on one and on two threads.
#[test]
fn predictions_read_the_batch_in_place_with_the_bits_of_a_copy() {
    let (n, t, f, h) = (29, 6, 37, 40);
    let x = Tensor::randn(&[n, t, f], 0.0, 1.0, 21);
    let lengths: Vec<usize> = (0..n).map(|s| 1 + (s * 5) % t).collect();
    type Make = Box<dyn Fn() -> Box<dyn Layer>>;
    let layers: Vec<Make> = vec![
        Box::new(move || Box::new(Lstm::new(f, h).seed(3))),
        Box::new(move || Box::new(Gru::new(f, h).seed(3))),
        Box::new(move || Box::new(Rnn::new(f, h).seed(3))),
        Box::new(move || Box::new(Lstm::new(f, h).seed(3).last_step_only())),
        Box::new(move || Box::new(Gru::new(f, h).seed(3).last_step_only())),
    ];
    for make in &layers {
        for lens in [None, Some(&lengths[..])] {
            let eval = make().forward(&x, Pass::EVAL.with_optional_lengths(lens));
            for threads in [1, 2] {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                let mut layer = make();
                let predicted = pool.install(|| layer.forward(&x, Pass::PREDICT.with_optional_lengths(lens)));
                assert_eq!(
                    predicted,
                    eval,
                    "{}, lengths {}, {threads} threads",
                    layer.describe(),
                    lens.is_some()
                );
            }
        }
    }
}

/// `forward_embedded` / `backward_embedded` are `Embedding` then the layer, computed through
/// `P = E·W_ihᵀ + b_ih`: the same outputs and the same gradients of every weight and of the table
/// (to f32 rounding: the input-weight sums run grouped by id), with padding, a padding id whose row
/// gets nothing, repeated ids, and each cell; and the refusals name what is wrong.
#[test]
fn embedded_input_is_embedding_then_layer() {
    let (vocab, dim, hidden) = (7, 5, 6);
    let ids = Tensor::from_vec(&[3, 4], vec![1., 2., 1., 6., 0., 0., 3., 6., 4., 6., 6., 6.]).unwrap();
    let lengths = [4, 3, 1];
    let close = |a: &Tensor, b: &Tensor, what: &str| {
        assert_eq!(a.shape(), b.shape(), "{what}");
        for (x, y) in a.data().iter().zip(b.data()) {
            assert!((x - y).abs() <= 2e-6 * (1.0 + y.abs()), "{what}: {x} vs {y}");
        }
    };
    fn run<L: Layer + DerefMut<Target = Recurrent<C>>, C: Cell>(
        make: impl Fn() -> L,
        ids: &Tensor,
        lengths: &[usize],
        (vocab, dim): (usize, usize),
        close: &dyn Fn(&Tensor, &Tensor, &str),
    ) {
        let pass = Pass::TRAIN.with_lengths(lengths);
        let table = || Embedding::new(vocab, dim).seed(3).padding_idx(6);
        // Composed: the embedding's output into the layer.
        let (mut e1, mut l1) = (table(), make());
        let x = e1.forward(ids, pass);
        let y1 = l1.forward(&x, pass);
        let dy = Tensor::from_fn(y1.shape(), |i| ((i.iter().sum::<usize>() % 5) as f32 - 2.0) * 0.1);
        let dx = l1.backward(&dy, InputGrad::Needed).unwrap();
        e1.backward(&dx, InputGrad::NotNeeded);
        // Fused.
        let (mut e2, mut l2) = (table(), make());
        let y2 = l2.forward_embedded(&e2, ids, pass).unwrap();
        l2.backward_embedded(&dy, &mut e2);
        let name = l1.describe();
        close(&y2, &y1, &format!("{name}: outputs"));
        for ((n, a), (_, b)) in named_params(&l2).iter().zip(named_params(&l1).iter()) {
            close(&a.grad, &b.grad, &format!("{name}: dL/d{n}"));
        }
        close(&e2.weight().grad, &e1.weight().grad, &format!("{name}: dL/dE"));
        assert!(e2.weight().grad.outer(6).iter().all(|&v| v == 0.0), "{name}: the padding row gets nothing");
        // Predict and Eval passes give the same outputs as the composed ones.
        let y3 = l2.forward_embedded(&e2, ids, Pass::PREDICT.with_lengths(lengths)).unwrap();
        close(&y3, &y1, &format!("{name}: predict"));
    }
    run(|| Lstm::new(dim, hidden).seed(4), &ids, &lengths, (vocab, dim), &close);
    run(|| Gru::new(dim, hidden).seed(4), &ids, &lengths, (vocab, dim), &close);
    run(|| Rnn::new(dim, hidden).seed(4).last_step_only(), &ids, &lengths, (vocab, dim), &close);

    // Refusals: the width, the ids, their shape, the lengths; and the backward passes that do
    // not match the forward pass.
    let mut lstm = Lstm::new(dim, hidden);
    let narrow = Embedding::new(vocab, dim - 1);
    let err = lstm.forward_embedded(&narrow, &ids, Pass::TRAIN).unwrap_err().to_string();
    assert!(
        err.contains("LSTM(5→6)") && err.contains("4 values per id") && err.contains("5 input features"),
        "{err}"
    );
    let table = Embedding::new(vocab, dim);
    for bad in [7.0, -1.0, 0.5, f32::NAN] {
        let mut odd = ids.clone();
        odd.data_mut()[5] = bad;
        assert!(lstm.forward_embedded(&table, &odd, Pass::TRAIN).is_err(), "id {bad}");
    }
    let flat = Tensor::zeros(&[12]);
    assert!(lstm.forward_embedded(&table, &flat, Pass::TRAIN).unwrap_err().to_string().contains("[N, T]"));
    assert!(lstm.forward_embedded(&table, &ids, Pass::TRAIN.with_lengths(&[4, 5, 1])).is_err());
    let y = lstm.forward_embedded(&table, &ids, Pass::TRAIN).unwrap();
    let dense_backward = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        lstm.backward(&Tensor::ones(y.shape()), InputGrad::Needed);
    }));
    let message = dense_backward.expect_err("an ordinary backward after forward_embedded");
    assert!(message.downcast_ref::<String>().is_some_and(|m| m.contains("backward_embedded")));
    let mut plain = Lstm::new(dim, hidden);
    plain.forward(&Tensor::zeros(&[3, 4, dim]), Pass::TRAIN);
    let mut table = table;
    let embedded_backward = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        plain.backward_embedded(&Tensor::ones(&[3, 4, hidden]), &mut table);
    }));
    let message = embedded_backward.expect_err("backward_embedded after an ordinary forward");
    assert!(message.downcast_ref::<String>().is_some_and(|m| m.contains("forward_embedded")));
}

/// An empty batch (`N = 0`) goes forward and backward through each recurrent layer: empty outputs
/// and input gradients, and the parameters' gradients untouched (the LSTM and RNN take their two
/// weight gradients in one call over an empty sum, which must add nothing rather than refuse).
#[test]
fn an_empty_batch_goes_forward_and_backward() {
    let layers: Vec<(&str, Box<dyn Layer>)> = vec![
        ("LSTM", Box::new(Lstm::new(3, 4))),
        ("RNN", Box::new(Rnn::new(3, 4))),
        ("GRU", Box::new(Gru::new(3, 4))),
    ];
    for (name, mut layer) in layers {
        let y = layer.forward(&Tensor::zeros(&[0, 5, 3]), Pass::TRAIN);
        assert_eq!(y.shape(), &[0, 5, 4], "{name}");
        let dx = layer.backward(&Tensor::zeros(&[0, 5, 4]), InputGrad::Needed).expect("dx");
        assert_eq!(dx.shape(), &[0, 5, 3], "{name}");
        let mut untouched = true;
        layer.visit(&mut |_, state| {
            if let backprop::layers::State::Param(p) = state {
                untouched &= p.grad.data().iter().all(|&g| g == 0.0);
            }
        });
        assert!(untouched, "{name}: an empty batch changed a gradient");
    }
}

#[test]
fn loading_weights_forgets_a_stateful_layers_carried_state() {
    let build = || Sequential::builder(&[4, 2]).add(Gru::new(2, 3).seed(1).stateful()).build().unwrap();
    let x = Tensor::from_vec(&[2, 4, 2], (0..16).map(|i| (i as f32 * 0.3).sin()).collect()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gru.safetensors");
    build().save(&path).unwrap();
    let (mut used, mut fresh) = (build(), build());
    used.predict(&x, 2).unwrap(); // carries a state into the next pass
    used.load(&path).unwrap();
    fresh.load(&path).unwrap();
    assert_eq!(used.predict(&x, 2).unwrap(), fresh.predict(&x, 2).unwrap());
}

#[test]
fn a_stateful_layer_passes_the_finite_difference_check_from_a_carried_state() {
    let x = Tensor::from_vec(&[2, 3, 2], (0..12).map(|i| (i as f32 * 0.7).sin()).collect()).unwrap();
    let layers: Vec<Box<dyn Layer>> = vec![
        Box::new(Lstm::new(2, 3).seed(1).stateful()),
        Box::new(Gru::new(2, 3).seed(2).stateful()),
        Box::new(Rnn::new(2, 3).seed(3).stateful()),
    ];
    for mut layer in layers {
        layer.forward(&x, Pass::TRAIN); // the check starts from this pass's final state
        let report = check_layer(layer.as_mut(), &x, Pass::TRAIN, &Options::default());
        assert!(report.passes(2e-2), "{}: {report:?}", layer.describe());
    }
}

#[test]
fn an_empty_batch_of_ids_goes_forward_and_backward_through_an_embedding() {
    let mut embedding = Embedding::new(6, 3);
    let mut lstm = Lstm::new(3, 4).seed(1);
    let y = lstm.forward_embedded(&embedding, &Tensor::zeros(&[0, 5]), Pass::TRAIN).unwrap();
    assert_eq!(y.shape(), &[0, 5, 4]);
    lstm.backward_embedded(&Tensor::zeros(&[0, 5, 4]), &mut embedding);
    let untouched = named_params(&lstm)
        .iter()
        .chain(named_params(&embedding).iter())
        .all(|(_, p)| p.grad.data().iter().all(|&g| g == 0.0));
    assert!(untouched, "an empty batch changed a gradient");
}

/// A batch whose sequences all end early (as `Bucketed` batches of short sequences do, padded to
/// the data's T) is walked only to its longest sequence: outputs, every gradient and the final
/// state are those of the same batch cut to that length, bit for bit — for each cell, every
/// output and the last step only, batched and embedded.
#[test]
fn a_batch_of_short_sequences_costs_its_longest_not_t() {
    let (n, f, short, long) = (3, 2, 4, 9);
    let lengths = [4, 2, 3];
    let x_short =
        Tensor::from_vec(&[n, short, f], (0..n * short * f).map(|i| (i as f32 * 0.37).sin()).collect())
            .unwrap();
    // The same sequences padded with junk to 9 steps.
    let x_long =
        Tensor::from_fn(&[n, long, f], |i| if i[1] < short { x_short[&[i[0], i[1], i[2]]] } else { 7.5 });
    type Make = fn() -> Box<dyn Layer>;
    let makes: [(&str, Make); 6] = [
        ("LSTM", || Box::new(Lstm::new(2, 3).seed(1))),
        ("GRU", || Box::new(Gru::new(2, 3).seed(2))),
        ("RNN", || Box::new(Rnn::new(2, 3).seed(3))),
        ("LSTM last", || Box::new(Lstm::new(2, 3).seed(1).last_step_only())),
        ("GRU last", || Box::new(Gru::new(2, 3).seed(2).last_step_only())),
        ("RNN last", || Box::new(Rnn::new(2, 3).seed(3).last_step_only())),
    ];
    for (name, make) in makes {
        let run = |x: &Tensor| {
            let mut layer = make();
            let y = layer.forward(x, Pass::TRAIN.with_lengths(&lengths));
            let g = Tensor::from_fn(y.shape(), |i| (i.iter().sum::<usize>() as f32 * 0.3).cos());
            let dx = layer.backward(&g, InputGrad::Needed).unwrap();
            let grads: Vec<Vec<u32>> = named_params(layer.as_ref())
                .into_iter()
                .map(|(_, p)| p.grad.data().iter().map(|v| v.to_bits()).collect())
                .collect();
            let predicted = make().forward(x, Pass::PREDICT.with_lengths(&lengths));
            (y, dx, grads, predicted)
        };
        let (a, b) = (run(&x_short), run(&x_long));
        assert_eq!(a.2, b.2, "{name}: parameter gradients");
        let cut = |t: &Tensor| {
            if t.shape().len() == 2 {
                return t.data().to_vec();
            }
            let (n, tt, w) = (t.dim(0), t.dim(1), t.dim(2));
            (0..n).flat_map(|s| t.data()[s * tt * w..][..short * w].to_vec()).collect()
        };
        assert_eq!(cut(&a.0), cut(&b.0), "{name}: output");
        assert_eq!(cut(&a.3), cut(&b.3), "{name}: prediction");
        assert_eq!(cut(&a.1), cut(&b.1), "{name}: input gradient");
        // The steps past every sequence's end output zeros and get no gradient.
        let tail = |t: &Tensor| {
            (0..n).all(|s| {
                t.data()[(s * long + short) * t.dim(2)..][..(long - short) * t.dim(2)]
                    .iter()
                    .all(|&v| v == 0.0)
            })
        };
        assert!(tail(&b.1), "{name}: dx past the end");
        if b.0.shape().len() == 3 {
            assert!(tail(&b.0), "{name}: y past the end");
        }
    }
}

/// The reference recurrent functions check their shapes: weights of another cell or another
/// input width, and lengths past `T`, are panics naming the shapes — not a dot product over the
/// shorter slice (which had read 3 of 5 features and returned wrong numbers without a word).
#[test]
fn the_reference_refuses_weights_and_lengths_that_do_not_fit() {
    let message = |f: &dyn Fn()| -> String {
        let e = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_err();
        e.downcast_ref::<String>().cloned().unwrap_or_default()
    };
    let (w_ih, w_hh, b) = (Tensor::ones(&[8, 3]), Tensor::ones(&[8, 2]), Tensor::ones(&[8]));
    let w = Weights { w_ih: &w_ih, w_hh: &w_hh, b_ih: &b, b_hh: &b };
    let x5 = Tensor::ones(&[1, 4, 5]);
    let m = message(&|| drop(recurrent_forward(CellKind::Lstm, &w, &x5, &[])));
    assert!(m.contains("W_ih [8, 5]") && m.contains("[8, 3]"), "{m}");
    let m = message(&|| drop(recurrent_forward(CellKind::Gru, &w, &Tensor::ones(&[1, 4, 3]), &[])));
    assert!(m.contains("Gru") && m.contains("[6, 3]"), "{m}");
    let m = message(&|| drop(recurrent_forward(CellKind::Lstm, &w, &Tensor::ones(&[1, 4, 3]), &[5])));
    assert!(m.contains("1..=4"), "{m}");
    // The shapes that fit run.
    assert_eq!(recurrent_forward(CellKind::Lstm, &w, &Tensor::ones(&[1, 4, 3]), &[2]).shape(), &[1, 4, 2]);
}

/// The reference's backward checks the states it is given: an initial state of another width had
/// been zipped against `W_hh` over the shorter slice.
#[test]
fn the_reference_backward_refuses_states_that_do_not_fit() {
    use backprop::layers::recurrent::reference::recurrent_backward;
    let (w_ih, w_hh, b) = (Tensor::ones(&[20, 3]), Tensor::ones(&[20, 5]), Tensor::ones(&[20]));
    let w = Weights { w_ih: &w_ih, w_hh: &w_hh, b_ih: &b, b_hh: &b };
    let (x, dy) = (Tensor::ones(&[4, 6, 3]), Tensor::ones(&[4, 6, 5]));
    let narrow = Tensor::zeros(&[4, 3]);
    let e = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        drop(recurrent_backward(CellKind::Lstm, &w, &x, &[], (Some(&narrow), None), &dy, None, None))
    }))
    .unwrap_err();
    let m = e.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(m.contains("h0") && m.contains("[4, 5]") && m.contains("[4, 3]"), "{m}");
    let fits = Tensor::zeros(&[4, 5]);
    let g =
        recurrent_backward(CellKind::Lstm, &w, &x, &[], (Some(&fits), Some(&fits)), &dy, Some(&fits), None);
    assert_eq!(g.dx.shape(), &[4, 6, 3]);
}
