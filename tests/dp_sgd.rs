//! DP-SGD: without noise and clipping it is the ordinary mean-gradient step; clipping bounds each
//! example's gradient as computed by a batch-of-one backward; batch norm is refused; runs are
//! seeded; the reported ε is the accountant's; a private model still learns.

mod common;

use backprop::layers::{named_params, zero_grad};
use backprop::prelude::*;
use backprop::privacy::{DEFAULT_ORDERS, DpOptions, epsilon, fit_private};

fn mlp() -> Sequential {
    Sequential::builder(&[2])
        .add(Dense::new(2, 8))
        .add(Tanh::new())
        .add(Dense::new(8, 3))
        .seed(1)
        .build()
        .unwrap()
}

fn values(m: &Sequential) -> Vec<Tensor> {
    named_params(m).into_iter().map(|(_, p)| p.value.clone()).collect()
}

fn options(clip: f32, sigma: f64) -> DpOptions {
    DpOptions { epochs: 1, sample_rate: 1.0, clip, noise_multiplier: sigma, delta: 1e-5, seed: 3 }
}

#[test]
fn without_noise_or_clipping_it_is_the_mean_gradient_step() {
    let data = common::blobs(16, 1);
    let loss = CrossEntropyLoss::new();
    let mut private = mlp();
    fit_private(&mut private, &data, &loss, &mut Sgd::new(0.1), &options(1e9, 0.0)).unwrap();
    let mut plain = mlp();
    plain.train_step(data.inputs(), data.targets().as_target(), &loss, &mut Sgd::new(0.1)).unwrap();
    for (a, b) in values(&private).iter().zip(values(&plain)) {
        assert!(a.max_abs_diff(&b) < 1e-6, "{}", a.max_abs_diff(&b));
    }
}

#[test]
fn each_examples_gradient_is_clipped_to_c() {
    let data = common::blobs(8, 2);
    let loss = CrossEntropyLoss::new();
    let clip = 0.05;
    // By hand: every example's gradient from a batch of one, clipped, averaged.
    let mut model = mlp();
    let mut expected: Vec<Tensor> = values(&model).iter().map(|v| Tensor::zeros(v.shape())).collect();
    for i in 0..data.len() {
        let x = data.inputs().select_outer(&[i]);
        let labels = [data.labels().unwrap()[i]];
        model.loss_and_backward(&x, Target::Classes(&labels), &loss, Mode::Train).unwrap();
        let grads: Vec<Tensor> = named_params(&model).into_iter().map(|(_, p)| p.grad.clone()).collect();
        let norm =
            grads.iter().map(|g| g.data().iter().map(|&v| (v * v) as f64).sum::<f64>()).sum::<f64>().sqrt();
        let scale = (clip as f64 / (norm + 1e-6)).min(1.0) as f32;
        assert!(norm > clip as f64, "the test needs gradients larger than C");
        for (e, g) in expected.iter_mut().zip(&grads) {
            e.axpy(scale / data.len() as f32, g);
        }
        zero_grad(&mut model);
    }
    let before = values(&model);
    fit_private(&mut model, &data, &loss, &mut Sgd::new(1.0), &options(clip, 0.0)).unwrap();
    for ((after, before), e) in values(&model).iter().zip(&before).zip(&expected) {
        let step = before - after; // lr 1: the step is the gradient used
        assert!(step.max_abs_diff(e) < 1e-6, "{}", step.max_abs_diff(e));
    }
}

#[test]
fn batch_norm_is_refused_and_runs_are_seeded() {
    let data = common::blobs(32, 3);
    let mut bn = Sequential::builder(&[2])
        .add(Dense::new(2, 4))
        .add(BatchNorm1d::new(4))
        .add(Dense::new(4, 3))
        .build()
        .unwrap();
    let err = fit_private(&mut bn, &data, &CrossEntropyLoss::new(), &mut Sgd::new(0.1), &options(1.0, 1.0))
        .unwrap_err()
        .to_string();
    assert!(err.contains("\"1.running_mean\"") && err.contains("batch norm"), "{err}");
    // A stateful recurrent layer carries one pass's final state into the next: an example's
    // gradient would read other examples' data. Refused the same way, before anything runs.
    let seqs = Dataset::classification(Tensor::randn(&[8, 3, 2], 0.0, 1.0, 4), vec![0, 1, 2, 0, 1, 2, 0, 1])
        .unwrap();
    let mut stateful = Sequential::builder(&[3, 2])
        .add(Lstm::new(2, 4).last_step_only().stateful())
        .add(Dense::new(4, 3))
        .build()
        .unwrap();
    let before = stateful.state_dict();
    let err =
        fit_private(&mut stateful, &seqs, &CrossEntropyLoss::new(), &mut Sgd::new(0.1), &options(1.0, 1.0))
            .unwrap_err()
            .to_string();
    assert!(err.contains("\"0.carried_state\"") && err.contains("stateful recurrent layer"), "{err}");
    assert_eq!(stateful.state_dict(), before);
    let run = || {
        let mut m = mlp();
        let o = DpOptions { sample_rate: 0.25, epochs: 2, ..options(1.0, 1.1) };
        let report = fit_private(&mut m, &data, &CrossEntropyLoss::new(), &mut Adam::new(0.01), &o).unwrap();
        (values(&m), report)
    };
    let ((a, ra), (b, rb)) = (run(), run());
    assert_eq!(a, b, "same seed, same weights");
    assert_eq!(ra, rb);
    assert_eq!(ra.steps, 8);
    assert_eq!(ra.epsilon, epsilon(0.25, 1.1, 8, 1e-5, &DEFAULT_ORDERS).0);
}

#[test]
fn a_private_model_still_learns() {
    let (train, test) = (common::blobs(1000, 4), common::blobs(300, 5));
    let mut model = mlp();
    let o =
        DpOptions { epochs: 5, sample_rate: 0.05, clip: 1.0, noise_multiplier: 1.0, delta: 1e-5, seed: 6 };
    let report = fit_private(&mut model, &train, &CrossEntropyLoss::new(), &mut Adam::new(0.02), &o).unwrap();
    let acc = model.evaluate(&test, &CrossEntropyLoss::new(), 300).unwrap().accuracy.unwrap();
    assert!(acc > 0.85, "accuracy {acc} at ε = {}", report.epsilon);
    assert!(report.epsilon.is_finite() && report.epsilon > 0.0);
}

/// The added noise has the distribution the accountant assumes: with every clipped gradient zero
/// (a model with zero loss gradient), a step's gradient is N(0, σ²C²) / (qN) per coordinate.
#[test]
fn the_noise_has_the_calibrated_spread() {
    // Targets equal to the model's (zero) output: MSE's gradient is exactly 0 for every example.
    let model = || {
        Sequential::builder(&[4])
            .add(Dense::new(4, 50).with_weights(Tensor::zeros(&[50, 4]), Some(Tensor::zeros(&[50]))))
            .build()
            .unwrap()
    };
    let data = Dataset::regression(Tensor::randn(&[40, 4], 0.0, 1.0, 1), Tensor::zeros(&[40, 50])).unwrap();
    let (sigma, clip, q) = (1.5, 0.8, 0.5);
    let mut m = model();
    let o = DpOptions { epochs: 1, sample_rate: q, clip, noise_multiplier: sigma, delta: 1e-5, seed: 9 };
    // One epoch = 2 steps of SGD with lr 1: the weights move by minus the sum of two noisy gradients.
    fit_private(&mut m, &data, &MseLoss::new(), &mut Sgd::new(1.0), &o).unwrap();
    let moved: Vec<f64> =
        named_params(&m).iter().flat_map(|(_, p)| p.value.data().to_vec()).map(|v| v as f64).collect();
    let n = moved.len() as f64; // 250 coordinates
    let mean = moved.iter().sum::<f64>() / n;
    let std = (moved.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
    let want = (2.0f64).sqrt() * sigma * clip as f64 / (q * 40.0); // two steps of N(0, (σC / qN)²)
    assert!(mean.abs() < 4.0 * want / n.sqrt(), "mean {mean}");
    assert!((std / want - 1.0).abs() < 0.15, "std {std} vs {want}");
}

/// Private training runs in the one training loop: bad settings (δ included) are errors before
/// anything runs, a batch that fails puts the model back, and validation, callbacks and
/// schedules work as for any step.
#[test]
fn private_training_shares_the_loops_checks_rollback_and_callbacks() {
    use backprop::privacy::DpSgd;
    let data = common::blobs(40, 7);
    let loss = CrossEntropyLoss::new();
    for (delta, what) in [(0.0, "δ"), (1.0, "δ"), (f64::NAN, "δ"), (-1.0, "δ")] {
        let mut m = mlp();
        let before = values(&m);
        let o = DpOptions { delta, ..options(1.0, 1.0) };
        let e = fit_private(&mut m, &data, &loss, &mut Sgd::new(0.1), &o).unwrap_err().to_string();
        assert!(e.contains(what) && e.contains("(0, 1)"), "{e}");
        assert_eq!(values(&m), before, "nothing ran");
    }
    let e = DpSgd::new(&DpOptions { sample_rate: 0.0, ..options(1.0, 1.0) }, 40).err().unwrap().to_string();
    assert!(e.contains("sampling rate"), "{e}");
    // clip_grad_norm would rescale the noise: refused.
    let mut dp = DpSgd::new(&options(1.0, 1.0), data.len()).unwrap();
    let mut m = mlp();
    let e = m
        .fit(
            &data,
            &loss,
            &mut Sgd::new(0.1),
            FitOptions::new().clip_grad_norm(1.0).step(&mut dp).verbose(false),
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("clip_grad_norm"), "{e}");
    // A weight that becomes infinite: the error says where, and the model is as it was before
    // that batch (a huge learning rate on a noisy step).
    let mut dp = DpSgd::new(&DpOptions { sample_rate: 0.5, ..options(1.0, 1e30) }, data.len()).unwrap();
    let mut m = mlp();
    let before = values(&m);
    let e =
        m.fit(&data, &loss, &mut Sgd::new(1e30), FitOptions::new().epochs(2).step(&mut dp).verbose(false));
    assert!(matches!(e, Err(Error::NonFinite { epoch: 1, batch: 1, .. })), "{e:?}");
    assert_eq!(values(&m), before, "the failed batch was undone");
    // Validation and callbacks, as for any step.
    let mut dp = DpSgd::new(&DpOptions { sample_rate: 0.25, ..options(1.0, 0.5) }, data.len()).unwrap();
    let mut batches = 0;
    let mut m = mlp();
    let history = m
        .fit(
            &data,
            &loss,
            &mut Adam::new(0.01),
            FitOptions::new()
                .epochs(2)
                .validation(&data)
                .on_batch_end(|_| batches += 1)
                .step(&mut dp)
                .verbose(false),
        )
        .unwrap();
    assert_eq!(batches, 8, "1/q = 4 Poisson batches an epoch");
    assert!(history.epochs.iter().all(|e| e.val_accuracy.is_some()));
    assert_eq!(dp.steps(), 8);
}

/// A model struct (no batched per-example pass) trains privately with a pass per example, and
/// its sequence lengths travel with each example.
#[test]
fn a_model_struct_with_lengths_trains_privately() {
    use backprop::model::{Inputs, Model, Tensors};
    struct Reader {
        lstm: Lstm,
        head: Dense,
    }
    backprop::visit_fields!(Reader { lstm, head });
    impl Model for Reader {
        fn forward_batch(&mut self, inputs: &Inputs, mode: Mode) -> backprop::Result<Tensors> {
            let (_, last) =
                self.lstm.forward_with_state(inputs.get("seq")?, None, inputs.pass("seq", mode)?)?;
            Ok(Tensors::one("logits", self.head.forward(&last.h, mode.into())))
        }
        fn backward_batch(&mut self, grads: &Tensors, _: InputGrad) -> backprop::Result<Tensors> {
            let dh = backprop::layers::backward_input(&mut self.head, grads.get("logits")?);
            let final_grad = backprop::layers::RecurrentState::hc(dh.clone(), Tensor::zeros(dh.shape()));
            self.lstm.backward_with_state(None, Some(&final_grad), InputGrad::NotNeeded);
            Ok(Tensors::new())
        }
    }
    // Class = the sign of the last valid value; the padding holds the opposite sign.
    let n = 60;
    let lengths: Vec<usize> = (0..n).map(|i| 1 + i % 5).collect();
    let x = Tensor::from_fn(&[n, 5, 1], |i| {
        let sign = if i[0] % 2 == 0 { 1.0 } else { -1.0 };
        if i[1] < lengths[i[0]] { sign } else { -sign }
    });
    let labels: Vec<usize> = (0..n).map(|i| i % 2).collect();
    let data = Dataset::from_inputs(
        Inputs::new().with_lengths("seq", x, lengths),
        backprop::data::Targets::Classes(labels),
    )
    .unwrap();
    let mut model = Reader { lstm: Lstm::new(1, 4).seed(1), head: Dense::new(4, 2).seed(2) };
    let o =
        DpOptions { epochs: 15, sample_rate: 0.2, clip: 1.0, noise_multiplier: 0.3, delta: 1e-5, seed: 3 };
    let report = fit_private(&mut model, &data, &CrossEntropyLoss::new(), &mut Adam::new(0.05), &o).unwrap();
    let eval = backprop::train::evaluate(&mut model, &data, &CrossEntropyLoss::new(), 64).unwrap();
    assert!(eval.accuracy.unwrap() > 0.9, "{eval:?} after {report:?}");
    assert_eq!(report.steps, 75);
}

/// A batch whose per-example gradients exceed the budget runs in chunks: the same training, to
/// rounding, and the memory stays within the budget.
#[test]
fn the_per_example_budget_splits_a_batch_into_chunks() {
    use backprop::privacy::DpSgd;
    let data = common::blobs(60, 8);
    let o = DpOptions { epochs: 2, sample_rate: 0.5, clip: 1.0, noise_multiplier: 0.5, delta: 1e-5, seed: 9 };
    let run = |budget: Option<usize>| {
        let mut m = mlp();
        let mut dp = DpSgd::new(&o, data.len()).unwrap();
        if let Some(b) = budget {
            dp = dp.per_example_budget(b);
        }
        let options = FitOptions::new().epochs(2).seed(9).step(&mut dp).verbose(false);
        m.fit(&data, &CrossEntropyLoss::new(), &mut Sgd::new(0.1), options).unwrap();
        values(&m)
    };
    let params = 2 * 8 + 8 + 8 * 3 + 3;
    let (whole, chunked) = (run(None), run(Some(3 * params * 4))); // chunks of 3 examples
    for (a, b) in whole.iter().zip(&chunked) {
        assert!(a.max_abs_diff(b) < 1e-5, "{}", a.max_abs_diff(b));
    }
    // A budget below one example's gradient is refused before training, saying what it takes.
    let mut m = mlp();
    let before = values(&m);
    let mut dp = DpSgd::new(&o, data.len()).unwrap().per_example_budget(params * 4 - 1);
    let options = FitOptions::new().step(&mut dp).verbose(false);
    let e = m.fit(&data, &CrossEntropyLoss::new(), &mut Sgd::new(0.1), options).unwrap_err().to_string();
    assert!(e.contains("one example's gradient takes 204 bytes") && e.contains("per_example_budget"), "{e}");
    assert_eq!(values(&m), before);
    // Settings out of range are refused before training, naming them.
    let tiny = DpOptions { sample_rate: 1e-300, ..o.clone() };
    let e = DpSgd::new(&tiny, 60).err().unwrap().to_string();
    assert!(e.contains("steps per epoch"), "{e}");
    let e = backprop::privacy::noise_multiplier_for(1.0, 1.5, 100, 1e-5).unwrap_err().to_string();
    assert!(e.contains("(0, 1]"), "{e}");
    let e = backprop::privacy::noise_multiplier_for(1.0, 0.1, 100, f64::NAN).unwrap_err().to_string();
    assert!(e.contains("δ"), "{e}");
}

#[test]
#[should_panic(expected = "RDP orders must be at most 1024")]
fn huge_rdp_orders_are_refused() {
    let _ = epsilon(0.01, 1.0, 10, 1e-5, &[1e10]);
}

/// A Transformer block trains privately end to end: per-example gradients through attention,
/// layer norms and the feed-forward network, clipped and noised; with lengths travelling with
/// each example.
#[test]
fn a_transformer_trains_privately() {
    use backprop::layers::TransformerEncoderLayer;
    // Class = the sign of the first step's first value; later steps are noise, some padded.
    let (n, t, e) = (64, 4, 8);
    let x = Tensor::randn(&[n, t, e], 0.0, 1.0, 5);
    let labels: Vec<usize> = (0..n).map(|s| usize::from(x.outer(s)[0] > 0.0)).collect();
    let lengths: Vec<usize> = (0..n).map(|s| 2 + s % 3).collect();
    let data = Dataset::classification(x, labels).unwrap().with_lengths(lengths).unwrap();
    let mut model = Sequential::builder(&[t, e])
        .add(TransformerEncoderLayer::new(e, 2, 16).norm_first().dropout(0.0))
        .add(Flatten::new())
        .add(Dense::new(t * e, 2))
        .seed(4)
        .build()
        .unwrap();
    let o =
        DpOptions { epochs: 20, sample_rate: 0.25, clip: 1.0, noise_multiplier: 0.5, delta: 1e-5, seed: 6 };
    let report = fit_private(&mut model, &data, &CrossEntropyLoss::new(), &mut Adam::new(0.02), &o).unwrap();
    let eval = backprop::train::evaluate(&mut model, &data, &CrossEntropyLoss::new(), 64).unwrap();
    assert!(eval.accuracy.unwrap() > 0.8, "{eval:?} after {report:?}");
    assert!(report.epsilon.is_finite() && report.epsilon > 0.0, "{report:?}");
}

/// The data are checked against the model at the largest batch a forward pass will see — a chunk
/// of the per-example budget — not at all `N` examples at once: a recurrent layer whose
/// activation budget holds a chunk but not the whole training set trains (it had been refused,
/// with advice to use smaller batches, which DP-SGD's Poisson sampling leaves no way to follow).
#[test]
fn data_are_checked_at_the_largest_pass_not_at_the_whole_set() {
    use backprop::privacy::DpSgd;
    let data =
        Dataset::classification(Tensor::randn(&[64, 20, 2], 0.0, 1.0, 5), (0..64).map(|i| i % 3).collect())
            .unwrap();
    // 4·N·T·(2F + 11H) bytes for an LSTM: 3,840·N here; a budget of 32 KiB holds N ≤ 8.
    let model = || {
        Sequential::builder(&[20, 2])
            .add(Lstm::new(2, 4).last_step_only().activation_budget(32 << 10))
            .add(Dense::new(4, 3))
            .build()
            .unwrap()
    };
    assert!(model().output_shape(&[64, 20, 2]).is_err() && model().output_shape(&[4, 20, 2]).is_ok());
    // 143 parameters, 572 bytes per example: a budget of 2,400 bytes runs chunks of 4.
    let o = DpOptions { sample_rate: 0.25, ..options(1.0, 1.0) };
    let mut dp = DpSgd::new(&o, data.len()).unwrap().per_example_budget(2400);
    let mut m = model();
    let options = FitOptions::new().epochs(1).seed(o.seed).verbose(false).step(&mut dp);
    m.fit(&data, &CrossEntropyLoss::new(), &mut Sgd::new(0.1), options).unwrap();
    assert!(dp.steps() > 0);
}

/// The average divides by Opacus's expected batch size, `int(len(dataset) * sample_rate)`
/// (Opacus 1.5.4's `make_private`): for 10 examples at q = 0.25 that is 2, not 2.5. With every
/// clipped gradient zero and σ·C = 1, one step of SGD (lr 1) moves each weight by N(0, 1) / 2.
#[test]
fn the_average_divides_by_opacus_expected_batch_size() {
    let model = || {
        Sequential::builder(&[1])
            .add(Dense::new(1, 400).with_weights(Tensor::zeros(&[400, 1]), Some(Tensor::zeros(&[400]))))
            .build()
            .unwrap()
    };
    let data = Dataset::regression(Tensor::ones(&[10, 1]), Tensor::zeros(&[10, 400])).unwrap();
    let mut m = model();
    // round(1 / 0.25) = 4 steps in the epoch; each moves by N(0, 1)/2: the sum of four, N(0, 1).
    let o =
        DpOptions { epochs: 1, sample_rate: 0.25, clip: 1.0, noise_multiplier: 1.0, delta: 1e-5, seed: 4 };
    fit_private(&mut m, &data, &MseLoss::new(), &mut Sgd::new(1.0), &o).unwrap();
    let moved: Vec<f64> =
        named_params(&m).iter().flat_map(|(_, p)| p.value.data().to_vec()).map(f64::from).collect();
    let std = (moved.iter().map(|v| v * v).sum::<f64>() / moved.len() as f64).sqrt();
    assert!((std - 1.0).abs() < 0.1, "std {std}: the divisor is ⌊qN⌋ = 2 (2.5 would give 0.8)");
}

/// The weights a private run returns must not be picked by the training data without noise:
/// early stopping on the training loss is refused (on a validation set it is allowed).
#[test]
fn private_training_refuses_early_stopping_on_the_training_loss() {
    use backprop::privacy::DpSgd;
    let (data, val) = (common::blobs(40, 7), common::blobs(20, 8));
    let o = options(1.0, 1.0);
    let opts =
        FitOptions::new().epochs(1).verbose(false).early_stopping(EarlyStopping::new(Monitor::TrainLoss, 2));
    let mut dp = DpSgd::new(&o, data.len()).unwrap();
    let mut m = mlp();
    let before = values(&m);
    let e = m.fit(&data, &CrossEntropyLoss::new(), &mut Sgd::new(0.1), opts.step(&mut dp)).unwrap_err();
    assert!(e.to_string().contains("training loss") && e.to_string().contains("validation"), "{e}");
    assert_eq!(values(&m), before);
    let opts = FitOptions::new().epochs(1).verbose(false).validation(&val);
    let opts = opts.early_stopping(EarlyStopping::new(Monitor::ValLoss, 2));
    let mut dp = DpSgd::new(&o, data.len()).unwrap();
    m.fit(&data, &CrossEntropyLoss::new(), &mut Sgd::new(0.1), opts.step(&mut dp)).unwrap();
}

/// With a masked loss, the epoch's loss is the mean over every counted position of the examples
/// sampled — what the same loss gives on the batch, and what a plain `fit` reports — not the mean
/// of each example's own mean (which would weigh an example with one position as much as one
/// with many).
#[test]
fn the_reported_loss_is_the_mean_over_counted_positions() {
    let mut model = Sequential::builder(&[2]).add(Dense::new(2, 3)).seed(5).build().unwrap();
    let x = Tensor::from_vec(&[3, 2], vec![0.5, -1.0, 2.0, 0.25, -0.7, 1.5]).unwrap();
    // Example 0 counts 1 position, example 1 three, example 2 two.
    let nan = f32::NAN;
    let t = Tensor::from_vec(&[3, 3], vec![1.0, nan, nan, 0.0, 1.0, 1.0, nan, 0.0, 1.0]).unwrap();
    let bce = BceWithLogitsLoss::new().ignore_nan_targets();
    let expected = bce.loss(&model.predict(&x, 3).unwrap(), Target::Values(&t)).unwrap();
    let per_example: f32 = (0..3)
        .map(|i| {
            bce.loss(&model.predict(&x.select_outer(&[i]), 1).unwrap(), Target::Values(&t.select_outer(&[i])))
                .unwrap()
        })
        .sum::<f32>()
        / 3.0;
    assert!((expected - per_example).abs() > 1e-3, "the test needs the two means apart");
    let data = Dataset::regression(x, t).unwrap();
    // q = 1: every example in the one step of the epoch; lr 0: the loss is the untrained model's.
    let report = fit_private(&mut model, &data, &bce, &mut Sgd::new(0.0), &options(1.0, 1.0)).unwrap();
    assert!(
        (report.epoch_losses[0] - expected).abs() < 1e-6,
        "{} against {expected}",
        report.epoch_losses[0]
    );
}

/// A DP-SGD step used outside `fit` without its `check` (which sets it up for the model's
/// parameters) is an error: it had returned `Ok` with no noised gradient written, yet counted
/// the step as private.
#[test]
fn a_step_not_set_up_for_the_model_is_an_error() {
    use backprop::model::Inputs;
    use backprop::train::Step;
    let mut step = backprop::privacy::DpSgd::new(&options(1.0, 1.0), 4).unwrap();
    let mut model = Dense::new(2, 2);
    let e = step
        .gradient(
            &mut model,
            &Inputs::single(Tensor::zeros(&[1, 2])),
            &Targets::Classes(vec![0]),
            &CrossEntropyLoss::new(),
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("not set up for this model's parameters"), "{e}");
    assert_eq!(step.steps(), 0);
}
