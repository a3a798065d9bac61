//! The training loop, the losses and the recurrent layers' constructors against hostile input,
//! one test per defect a review of the wave-3 struct-model surfaces found: a validation set that
//! is empty or whose loss overflows, inputs swapped for a different number of samples, losses of
//! no classes or no values, masks of no steps, and recurrent sizes whose gate count wraps.

mod common;

use backprop::loss::mask_padding;
use backprop::prelude::*;

fn regression_model() -> Sequential {
    Sequential::builder(&[2])
        .add(Dense::new(2, 4).seed(1))
        .add(Relu::new())
        .add(Dense::new(4, 1).seed(2))
        .build()
        .unwrap()
}

fn line(n: usize, scale: f32) -> Dataset {
    let x: Vec<f32> = (0..2 * n).map(|i| (i as f32 * 0.37).sin() * scale).collect();
    let y: Vec<f32> = x.chunks(2).map(|p| p[0] - p[1]).collect();
    Dataset::regression(Tensor::from_vec(&[n, 2], x).unwrap(), Tensor::from_vec(&[n, 1], y).unwrap()).unwrap()
}

/// Every parameter's values, in visiting order.
fn values(model: &Sequential) -> Vec<f32> {
    let mut all = Vec::new();
    model.visit(&mut |_, state| {
        if let State::Param(p) = state {
            all.extend_from_slice(p.value.data());
        }
    });
    all
}

#[test]
fn an_empty_validation_set_is_refused_before_training() {
    let (train, empty) = (line(32, 1.0), line(0, 1.0));
    let mut model = regression_model();
    let options = FitOptions::new().epochs(3).verbose(false).validation(&empty);
    let err = model.fit(&train, &MseLoss::new(), &mut Adam::new(0.01), options).unwrap_err().to_string();
    assert!(err.contains("validation set is empty"), "{err}");
}

#[test]
fn a_validation_loss_that_overflows_stops_training_with_a_message() {
    // Finite validation inputs of 1e38: the predictions' squares overflow f32.
    let (train, huge) = (line(32, 1.0), line(8, 1e38));
    let mut model = regression_model();
    let options = FitOptions::new().epochs(3).verbose(false).validation(&huge);
    let err = model.fit(&train, &MseLoss::new(), &mut Adam::new(0.01), options).unwrap_err().to_string();
    assert!(err.contains("validation loss became") && err.contains("after epoch 1"), "{err}");
}

#[test]
fn inputs_replaced_by_a_different_number_of_samples_are_refused() {
    let mut train = line(32, 1.0);
    *train.inputs_mut() = Tensor::zeros(&[20, 2]);
    let mut model = regression_model();
    let err = model
        .fit(&train, &MseLoss::new(), &mut Adam::new(0.01), FitOptions::new().verbose(false))
        .unwrap_err()
        .to_string();
    assert!(err.contains("has 20 samples but there are 32 targets"), "{err}");
}

#[test]
fn losses_of_no_classes_or_no_values_do_not_panic() {
    let ce = CrossEntropyLoss::new();
    let err = ce.loss_and_grad(&Tensor::zeros(&[3, 0]), Target::Classes(&[0, 0, 0])).unwrap_err();
    assert!(err.to_string().contains("no classes"), "{err}");
    let nan_ids = Tensor::from_vec(&[3], vec![f32::NAN; 3]).unwrap();
    assert!(ce.loss_and_grad(&Tensor::zeros(&[3, 0]), (&nan_ids).into()).is_err());
    // The mean squared error of no values: 0, not 0/0.
    let empty = Tensor::zeros(&[0, 3]);
    let (l, g) = MseLoss::new().loss_and_grad(&empty, (&empty).into()).unwrap();
    assert_eq!((l, g.shape()), (0.0, &[0usize, 3][..]));
    // Masks over targets of no steps or no values per step.
    let mut t = Tensor::zeros(&[2, 0]);
    mask_padding(&mut t, &[0, 0]).unwrap();
    let mut t = Tensor::zeros(&[2, 3, 0]);
    mask_padding(&mut t, &[1, 1]).unwrap();
}

#[test]
fn recurrent_sizes_whose_gates_would_wrap_panic_with_a_message() {
    // 4·2⁶² wraps to 0: without the check, an LSTM with empty weights.
    for (what, make) in [
        ("Lstm", Box::new(|| drop(Lstm::new(4, 1 << 62))) as Box<dyn Fn()>),
        ("Gru", Box::new(|| drop(Gru::new(4, 1 << 63)))),
    ] {
        let msg = common::panic_message(make);
        assert!(msg.contains("would hold more than"), "{what}: {msg}");
    }
}

#[test]
fn an_optimizer_reused_on_a_model_of_other_shapes_is_refused_before_training() {
    let train = line(32, 1.0);
    let mut adam = Adam::new(0.01);
    let mut first = regression_model();
    first.fit(&train, &MseLoss::new(), &mut adam, FitOptions::new().epochs(1).verbose(false)).unwrap();
    // The same names ("0.bias" …), other shapes: Adam's moments do not fit.
    let mut wider = Sequential::builder(&[2])
        .add(Dense::new(2, 8).seed(3))
        .add(Relu::new())
        .add(Dense::new(8, 1).seed(4))
        .build()
        .unwrap();
    let before = values(&wider);
    let err = wider
        .fit(&train, &MseLoss::new(), &mut adam, FitOptions::new().epochs(1).verbose(false))
        .unwrap_err()
        .to_string();
    assert!(err.contains("has stepped another model") && err.contains("\"0.bias\" has shape [4]"), "{err}");
    assert_eq!(values(&wider), before, "a refused fit changed the model");
}

#[test]
fn a_non_finite_initial_state_is_refused_before_any_step() {
    use backprop::layers::RecurrentState;
    let mut lstm = Lstm::new(2, 3).seed(1);
    let x = Tensor::ones(&[2, 4, 2]);
    let mut h = Tensor::zeros(&[2, 3]);
    h.data_mut()[4] = f32::NAN;
    let state = RecurrentState { h, c: Some(Tensor::zeros(&[2, 3])) };
    let err = lstm.forward_with_state(&x, Some(&state), Pass::TRAIN).unwrap_err().to_string();
    assert!(err.contains("initial state h₀ holds NaN"), "{err}");
    let state = RecurrentState { h: Tensor::zeros(&[2, 3]), c: Some(Tensor::full(&[2, 3], f32::INFINITY)) };
    let err = lstm.forward_with_state(&x, Some(&state), Pass::TRAIN).unwrap_err().to_string();
    assert!(err.contains("initial state c₀ holds inf"), "{err}");
}

#[test]
fn accuracy_counts_outputs_with_a_step_axis_of_one() {
    // An LSTM returning every step over sequences of one step: [N, 1, C] logits, one label per
    // sequence — the cross-entropy reads them; the accuracy had read 0 % for them.
    let n = 64;
    let x: Vec<f32> =
        (0..n * 2).map(|i| if (i / 2) % 2 == 0 { 1.0 } else { -1.0 } * (1.0 + (i % 2) as f32)).collect();
    let labels: Vec<usize> = (0..n).map(|i| i % 2).collect();
    let data = Dataset::classification(Tensor::from_vec(&[n, 1, 2], x).unwrap(), labels).unwrap();
    let mut model = Sequential::builder(&[1, 2]).add(Dense::new(2, 2).seed(5)).build().unwrap();
    let options = FitOptions::new().epochs(30).batch_size(16).verbose(false);
    let history = model.fit(&data, &CrossEntropyLoss::new(), &mut Adam::new(0.05), options).unwrap();
    let last = history.epochs.last().unwrap();
    assert_eq!(last.train_accuracy, Some(1.0), "{last:?}");
    let eval = model.evaluate(&data, &CrossEntropyLoss::new(), 32).unwrap();
    assert_eq!(eval.accuracy, Some(1.0));
}

#[test]
fn a_projected_id_table_over_the_activation_budget_is_an_error() {
    // 1,000 ids × 4·8 gate values: 128,000 bytes of projected table, over a budget of 64 KiB —
    // and the same under the default budget of 2 GiB.
    let embedding = Embedding::new(1000, 4);
    let ids = Tensor::from_vec(&[2, 3], vec![1., 2., 3., 4., 5., 6.]).unwrap();
    let mut lstm = Lstm::new(4, 8).seed(1).activation_budget(64 << 10);
    let err = lstm.forward_embedded(&embedding, &ids, Pass::TRAIN).unwrap_err().to_string();
    assert!(err.contains("projected table of 1000 ids × 32 gate values") && err.contains("budget"), "{err}");
    let mut lstm = Lstm::new(4, 8).seed(1);
    assert_eq!(lstm.forward_embedded(&embedding, &ids, Pass::TRAIN).unwrap().shape(), &[2, 3, 8]);
}

/// A model whose forward pass in train mode changes state besides the gradients: dropout's
/// generator, then batch norm (which cannot train on one sample).
fn dropout_then_batch_norm() -> Sequential {
    Sequential::builder(&[2])
        .add(Dense::new(2, 2).seed(3))
        .add(Dropout::new(0.5).seed(1))
        .add(BatchNorm1d::new(2))
        .build()
        .unwrap()
}

/// `forward` in train mode on a fixed batch: what the dropout generator and the running
/// statistics give next.
fn next_train_output(model: &mut Sequential) -> Vec<f32> {
    let x = Tensor::from_vec(&[4, 2], (0..8).map(|i| i as f32 * 0.25 - 1.0).collect()).unwrap();
    model.forward(&x, Pass::TRAIN).data().to_vec()
}

#[test]
fn a_training_pass_on_one_sample_is_refused_before_dropout_draws() {
    let (mut model, mut untouched) = (dropout_then_batch_norm(), dropout_then_batch_norm());
    let x = Tensor::from_vec(&[1, 2], vec![0.5, -0.5]).unwrap();
    let t = Tensor::zeros(&[1, 2]);
    let err = model.loss_and_backward(&x, Target::Values(&t), &MseLoss::new(), Mode::Train).unwrap_err();
    assert!(
        err.to_string().contains("loss_and_backward") && err.to_string().contains("BatchNorm1d"),
        "{err}"
    );
    // Nothing drew or moved: the next pass is the untouched model's.
    assert_eq!(next_train_output(&mut model), next_train_output(&mut untouched));
    assert_eq!(model.state_dict(), untouched.state_dict());
}

#[test]
fn train_step_refuses_optimizer_settings_fit_refuses_before_anything_runs() {
    let x = Tensor::from_vec(&[4, 2], vec![0.1, 0.2, 0.3, -0.4, 0.5, 0.6, -0.7, 0.8]).unwrap();
    let t = Tensor::zeros(&[4, 2]);
    let optimizers: Vec<(Box<dyn Optimizer>, &str)> = vec![
        (Box::new(Sgd::new(0.1).nesterov()), "Nesterov"),
        (Box::new(AdamW::new(10.0).weight_decay(0.2)), "weight decay"),
    ];
    for (mut optimizer, says) in optimizers {
        let (mut model, mut untouched) = (dropout_then_batch_norm(), dropout_then_batch_norm());
        // A panic would escape: the step must be an `Err`, not an unwinding.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            model.train_step(&x, Target::Values(&t), &MseLoss::new(), optimizer.as_mut())
        }));
        let err = result.expect("train_step panicked").unwrap_err();
        assert!(err.to_string().contains("train_step"), "{err}");
        assert!(err.to_string().contains(says), "{err}");
        assert_eq!(model.state_dict(), untouched.state_dict());
        assert_eq!(next_train_output(&mut model), next_train_output(&mut untouched));
    }
}

#[test]
fn fit_refuses_an_optimizer_whose_moments_already_overflowed() {
    let mut model = regression_model();
    let mut adam = Adam::new(0.01);
    // A step outside fit, on a gradient whose square overflows f32: the second moment is ∞ while
    // the weights stay finite.
    model.visit_mut(&mut |_, s| {
        if let StateMut::Param(p) = s {
            p.grad.fill(1e30);
        }
    });
    adam.step(&mut model);
    let mut before = backprop::optim::OptimizerState::default();
    adam.save_state(&mut before);
    assert!(before.iter().any(|(_, _, t)| t.data().iter().any(|v| v.is_infinite())));
    let weights = model.state_dict();
    let e = model.fit(&line(32, 1.0), &MseLoss::new(), &mut adam, FitOptions::new().epochs(1).verbose(false));
    let e = e.unwrap_err().to_string();
    assert!(e.contains("exp_avg_sq") && e.contains("inf"), "{e}");
    let mut after = backprop::optim::OptimizerState::default();
    adam.save_state(&mut after);
    assert_eq!(after, before);
    assert_eq!(model.state_dict(), weights);
}

#[test]
fn a_schedule_whose_rate_grows_past_what_adamw_allows_is_refused_before_training() {
    let mut model = regression_model();
    let weights = model.state_dict();
    let mut opt = AdamW::new(0.5).weight_decay(0.5); // lr·λ = 0.25 at the base rate
    let options = FitOptions::new().epochs(4).verbose(false).schedule(Schedule::exponential(2.0).unwrap());
    let e = model.fit(&line(32, 1.0), &MseLoss::new(), &mut opt, options).unwrap_err().to_string();
    // Epoch 3's rate is 2: lr·λ = 1.
    assert!(e.contains("epoch 3") && e.contains("weight decay"), "{e}");
    assert_eq!(model.state_dict(), weights);
    assert_eq!(opt.learning_rate(), 0.5, "the base rate is put back");
}

/// A validation set is evaluated whenever the training batches run: an LSTM over long sequences
/// whose activation budget takes batches of 4 but not the default validation batches of 256
/// evaluates in the training batches' size (it had been refused before the first epoch, the
/// user's small batches notwithstanding); `validation_batch_size` chooses, and 0 is refused.
#[test]
fn validation_batches_fit_when_training_batches_do() {
    let (n, t) = (300, 40);
    let x = Tensor::rand_uniform(&[n, t, 2], -1.0, 1.0, 3);
    let data = Dataset::regression(x, Tensor::zeros(&[n, 1])).unwrap();
    // 4 × 40 steps fit this budget, 256 × 40 do not.
    let model = || {
        Sequential::new()
            .add(Lstm::new(2, 8).seed(1).last_step_only().activation_budget(1 << 20))
            .add(Dense::new(8, 1).seed(2))
    };
    let options = || FitOptions::new().epochs(1).batch_size(4).verbose(false);
    let h = model().fit(&data, &MseLoss::new(), &mut Sgd::new(0.01), options().validation(&data)).unwrap();
    assert!(h.epochs[0].val_loss.is_some_and(f32::is_finite));
    // Asked for outright: the batches asked for, refused by name if the model cannot take them.
    let wide = options().validation(&data).validation_batch_size(300);
    let e = model().fit(&data, &MseLoss::new(), &mut Sgd::new(0.01), wide).unwrap_err().to_string();
    assert!(e.contains("validation set") && e.contains("activation budget"), "{e}");
    let zero = options().validation(&data).validation_batch_size(0);
    let e = model().fit(&data, &MseLoss::new(), &mut Sgd::new(0.01), zero).unwrap_err().to_string();
    assert!(e.contains("validation batch size"), "{e}");
}

/// A schedule's rates are checked at their extremes, not epoch by epoch: "until early stopping"
/// written as `epochs(usize::MAX)` had spun through 2⁶⁴ checks before the first epoch. The first
/// refused epoch is still the one named.
#[test]
fn a_schedule_over_countless_epochs_is_checked_at_once() {
    let mut model = regression_model();
    // An optimizer that has stepped another model: refused right after the schedule's check.
    let mut opt = Adam::new(0.01);
    let mut other = Sequential::builder(&[3]).add(Dense::new(3, 1).seed(1)).build().unwrap();
    let other_data = Dataset::regression(Tensor::zeros(&[8, 3]), Tensor::zeros(&[8, 1])).unwrap();
    other.fit(&other_data, &MseLoss::new(), &mut opt, FitOptions::new().verbose(false)).unwrap();
    let cosine = Schedule::cosine(10, 0.0).unwrap().with_warmup(3, 0.5).unwrap();
    let options = FitOptions::new().epochs(usize::MAX).verbose(false).schedule(cosine);
    let e = model.fit(&line(32, 1.0), &MseLoss::new(), &mut opt, options).unwrap_err().to_string();
    assert!(e.contains("stepped another model"), "{e}");
    // The first epoch whose rate AdamW refuses (lr·λ = 0.25 · 1.0001^t reaches 1 at t = 13,864,
    // in f32 as the check computes it).
    let mut opt = AdamW::new(0.5).weight_decay(0.5);
    let grows = Schedule::exponential(1.0001).unwrap();
    let options = FitOptions::new().epochs(usize::MAX).verbose(false).schedule(grows);
    let e = model.fit(&line(32, 1.0), &MseLoss::new(), &mut opt, options).unwrap_err().to_string();
    assert!(e.contains("at epoch 13865 ") && e.contains("weight decay"), "{e}");
}

/// A step that picks a sample past the training set is an error naming it, before the epoch's
/// first batch: not a panic in the middle of training.
#[test]
fn a_step_that_picks_samples_past_the_set_is_an_error() {
    use backprop::data::{Inputs, Targets};
    use backprop::model::Model;
    use backprop::train::{Plain, Step, StepOutcome};
    struct OffByOne;
    impl Step for OffByOne {
        fn describe(&self) -> String {
            "off by one".into()
        }
        fn batches(
            &mut self,
            n: usize,
            _: &FitOptions<'_>,
            _: &mut backprop::tensor::Rng,
        ) -> Vec<Vec<usize>> {
            vec![(1..=n).collect()]
        }
        fn gradient(
            &mut self,
            model: &mut dyn Model,
            batch: &Inputs,
            targets: &Targets,
            loss: &dyn backprop::loss::Loss,
        ) -> backprop::Result<StepOutcome> {
            Plain.gradient(model, batch, targets, loss)
        }
    }
    let mut model = regression_model();
    let before = model.state_dict();
    let mut step = OffByOne;
    // Into a new folder of checkpoints, which the refused run removes again (nothing was written).
    let dir = tempfile::tempdir().unwrap();
    let keep = backprop::train::Checkpoints::in_dir(dir.path().join("new/deeper"));
    let options = FitOptions::new().verbose(false).step(&mut step).checkpoints(keep);
    let e = model.fit(&line(8, 1.0), &MseLoss::new(), &mut Sgd::new(0.1), options).unwrap_err().to_string();
    assert!(e.contains("off by one") && e.contains("sample 8") && e.contains("of 8"), "{e}");
    assert_eq!(model.state_dict(), before);
    assert!(!dir.path().join("new").exists(), "the refused run left its new folder behind");
    // A folder that cannot be made whole (a name too long for the file system): the part made
    // is removed again.
    let long = dir.path().join("made").join("x".repeat(300));
    let options = FitOptions::new().verbose(false).checkpoints(backprop::train::Checkpoints::in_dir(&long));
    assert!(model.fit(&line(8, 1.0), &MseLoss::new(), &mut Sgd::new(0.1), options).is_err());
    assert!(!dir.path().join("made").exists(), "the part of the folder made stayed");
}
