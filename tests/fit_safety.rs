//! `fit` checks what it can before the first forward pass, and on every error leaves the model's
//! weights, buffers, counters and the optimizer's learning rate as they were before the failing
//! batch.

mod common;

use backprop::optim::OptimizerState;
use backprop::prelude::*;

fn bn_model() -> Sequential {
    Sequential::builder(&[2])
        .add(Dense::new(2, 8).seed(1))
        .add(BatchNorm1d::new(8))
        .add(Relu::new())
        .add(Dropout::new(0.2))
        .add(Dense::new(8, 3).seed(2))
        .build()
        .unwrap()
}

fn state(m: &Sequential) -> Vec<(String, Vec<u32>)> {
    let mut out = Vec::new();
    m.visit(&mut |name, s| {
        let bits = match s {
            State::Param(p) => p.value.data().iter().map(|v| v.to_bits()).collect(),
            State::Buffer(b) => b.data().iter().map(|v| v.to_bits()).collect(),
            State::Counter(c) => vec![c as u32],
            State::Rng(_) => vec![],
            State::Carried(carried) => carried
                .map(|s| {
                    s.h.data().iter().chain(s.c.iter().flat_map(|c| c.data())).map(|v| v.to_bits()).collect()
                })
                .unwrap_or_default(),
        };
        out.push((name.to_string(), bits));
    });
    out
}

#[test]
fn bad_targets_are_refused_before_any_forward_pass() {
    let data = common::blobs(64, 1);
    let mut model = bn_model();
    let before = state(&model);
    let mut adam = Adam::new(0.01);
    // Regression targets of the wrong width for an MSE loss.
    let wrong = Dataset::regression(data.inputs().clone(), Tensor::zeros(&[64, 5])).unwrap();
    let err = model
        .fit(&wrong, &MseLoss::new(), &mut adam, FitOptions::new().verbose(false))
        .unwrap_err()
        .to_string();
    assert!(err.contains("training set") && err.contains("[1, 3]") && err.contains("[1, 5]"), "{err}");
    // Class labels for a loss that needs values, and values for one that needs labels.
    let err = model
        .fit(&data, &MseLoss::new(), &mut adam, FitOptions::new().verbose(false))
        .unwrap_err()
        .to_string();
    assert!(err.contains("MseLoss"), "{err}");
    let values = Dataset::regression(data.inputs().clone(), Tensor::zeros(&[64, 3])).unwrap();
    assert!(
        model.fit(&values, &CrossEntropyLoss::new(), &mut adam, FitOptions::new().verbose(false)).is_err()
    );
    // Every sample's targets are checked before the first batch, not sample 0's alone: a class
    // id out of range (or not whole) in a late sample, a BCE target past 1.
    let seq_model = || Sequential::builder(&[2, 2]).add(Dense::new(2, 5)).build().unwrap();
    for (bad, want) in [(7.0, "samples 256–299"), (1.5, "samples 256–299")] {
        let mut ids = Tensor::zeros(&[300, 2]);
        ids.data_mut()[2 * 280 + 1] = bad;
        let seqs = Dataset::regression(Tensor::zeros(&[300, 2, 2]), ids).unwrap();
        let mut m = seq_model();
        let before = m.state_dict();
        let e =
            m.fit(&seqs, &CrossEntropyLoss::new(), &mut adam, FitOptions::new().verbose(false)).unwrap_err();
        assert!(e.to_string().contains(want) && e.to_string().contains("training set"), "{e}");
        assert_eq!(m.state_dict(), before, "refused before the first batch");
    }
    let mut targets = Tensor::zeros(&[300, 2, 5]);
    targets.data_mut()[2 * 5 * 299] = 2.0;
    let seqs = Dataset::regression(Tensor::zeros(&[300, 2, 2]), targets).unwrap();
    let e = seq_model().fit(&seqs, &BceWithLogitsLoss::new(), &mut adam, FitOptions::new().verbose(false));
    assert!(e.unwrap_err().to_string().contains("samples 256–299"));
    // A validation set that does not fit.
    let bad_val = Dataset::classification(Tensor::zeros(&[4, 3]), vec![0; 4]).unwrap();
    let err = model
        .fit(
            &data,
            &CrossEntropyLoss::new(),
            &mut adam,
            FitOptions::new().validation(&bad_val).verbose(false),
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("validation set") && err.contains("[4, 3]"), "{err}");
    // Options.
    for options in [
        FitOptions::new().epochs(0),
        FitOptions::new().batch_size(0),
        FitOptions::new().clip_grad_norm(-1.0),
        FitOptions::new().clip_grad_norm(f32::NAN),
        FitOptions::new().early_stopping(EarlyStopping::new(Monitor::TrainLoss, 0)),
        FitOptions::new().batch_size(100).drop_last(true),
    ] {
        let e = model.fit(&data, &CrossEntropyLoss::new(), &mut adam, options.verbose(false)).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
    }
    assert_eq!(state(&model), before, "batch norm statistics and weights untouched");
    assert_eq!(adam.learning_rate(), 0.01);
}

/// Two identical models: one trained on the first `k` batches only, the other on data whose batch
/// `k + 1` holds a NaN. After the error the second must equal the first, bit for bit — weights,
/// batch-norm statistics, the batch counter — and the learning rate must be the initial one.
#[test]
fn a_failing_batch_leaves_everything_as_before_it() {
    let data = common::blobs(96, 2);
    let first_two = data.take(64);
    let mut poisoned = data.clone();
    // Sample 70, in the third batch of 32: finite (the data check before training accepts it),
    // but it overflows the forward pass.
    poisoned.inputs_mut().data_mut()[2 * 70] = f32::MAX;
    let options = || {
        FitOptions::new()
            .batch_size(32)
            .shuffle(false)
            .seed(5)
            .schedule(Schedule::constant().with_warmup(3, 0.5).unwrap())
            .verbose(false)
    };
    let mut reference = bn_model();
    let mut adam_ref = Adam::new(0.01);
    reference.fit(&first_two, &CrossEntropyLoss::new(), &mut adam_ref, options()).unwrap();

    let mut model = bn_model();
    let mut adam = Adam::new(0.01);
    let err = model.fit(&poisoned, &CrossEntropyLoss::new(), &mut adam, options()).unwrap_err();
    let Error::NonFinite { epoch: 1, batch: 3, .. } = &err else { panic!("{err}") };
    assert_eq!(state(&model), state(&reference));
    assert_eq!(adam.learning_rate(), 0.01, "the learning rate is restored on error too");
    // The optimizer can carry on: its state matches the reference's.
    let next = data.subset(&(64..96).collect::<Vec<_>>());
    let more = || FitOptions::new().batch_size(32).shuffle(false).verbose(false);
    reference.fit(&next, &CrossEntropyLoss::new(), &mut adam_ref, more()).unwrap();
    model.fit(&next, &CrossEntropyLoss::new(), &mut adam, more()).unwrap();
    assert_eq!(state(&model), state(&reference));
}

/// NaN or infinite data are bad data, not a diverging step: refused before the first batch, naming
/// the set, the sample and the position; the model untouched. NaN targets are refused for a loss
/// that does not read them as padding, accepted for one that does.
#[test]
fn non_finite_data_is_refused_before_training() {
    let data = common::blobs(40, 2);
    let mut model = bn_model();
    let before = state(&model);
    let o = || FitOptions::new().batch_size(8).verbose(false);
    let mut bad_input = data.clone();
    bad_input.inputs_mut().data_mut()[2 * 13 + 1] = f32::INFINITY;
    let e =
        model.fit(&bad_input, &CrossEntropyLoss::new(), &mut Adam::new(0.01), o()).unwrap_err().to_string();
    assert!(e.contains("training set, input: sample 13 holds inf at position [1]"), "{e}");
    let e = model
        .fit(&data, &CrossEntropyLoss::new(), &mut Adam::new(0.01), o().validation(&bad_input))
        .unwrap_err()
        .to_string();
    assert!(e.contains("validation set, input: sample 13"), "{e}");
    assert_eq!(state(&model), before);

    // Regression targets with a NaN: MSE refuses it, naming the loss.
    let x = data.inputs().clone();
    let mut y = Tensor::zeros(&[40, 2]);
    y.data_mut()[2 * 7] = f32::NAN;
    let regression = Dataset::regression(x.clone(), y.clone()).unwrap();
    let mut m = Sequential::builder(&[2]).add(Dense::new(2, 2)).build().unwrap();
    let e = m.fit(&regression, &MseLoss::new(), &mut Adam::new(0.01), o()).unwrap_err().to_string();
    assert!(e.contains("targets: sample 7 holds NaN at position [0]") && e.contains("MseLoss"), "{e}");
    // … a loss that ignores NaN targets trains (on the other positions) …
    let bce = BceWithLogitsLoss::new().ignore_nan_targets();
    m.fit(&regression, &bce, &mut Adam::new(0.01), o()).unwrap();
    // … but never an infinite target.
    y.data_mut()[2 * 7] = f32::NEG_INFINITY;
    let regression = Dataset::regression(x, y).unwrap();
    let e = m.fit(&regression, &bce, &mut Adam::new(0.01), o()).unwrap_err().to_string();
    assert!(e.contains("sample 7 holds -inf"), "{e}");

    // Prediction on a NaN is an error, not class 0.
    let mut nan = Tensor::zeros(&[3, 2]);
    nan.data_mut()[5] = f32::NAN;
    for e in [
        model.predict_classes(&nan, 8).unwrap_err(),
        model.predict_proba(&nan, 8).unwrap_err(),
        model.predict(&nan, 8).unwrap_err(),
    ] {
        assert!(e.to_string().contains("sample 2 holds NaN at position [1]"), "{e}");
    }
}

/// Batch norm cannot train on a batch of one sample. A last batch of one is refused before the
/// first batch, with an error naming the layer, the shape and the way out (`drop_last`); the model
/// is untouched.
#[test]
fn a_batch_batch_norm_cannot_train_on_is_refused_before_training() {
    let data = common::blobs(65, 3); // batches of 32, 32 and 1
    let mut model = bn_model();
    let before = state(&model);
    let opts = || FitOptions::new().batch_size(32).shuffle(false).verbose(false);
    let err = model.fit(&data, &CrossEntropyLoss::new(), &mut Adam::new(0.01), opts()).unwrap_err();
    let Error::InvalidArgument(message) = &err else { panic!("{err}") };
    for part in
        ["batches of 1", "last batch", "65 samples", "drop_last", "layer 1", "BatchNorm1d(8)", "[1, 8]"]
    {
        assert!(message.contains(part), "{part:?} missing from: {message}");
    }
    assert_eq!(state(&model), before);
    let history =
        model.fit(&data, &CrossEntropyLoss::new(), &mut Adam::new(0.01), opts().drop_last(true)).unwrap();
    assert_eq!(history.epochs.len(), 1);
    // Inside a residual block and a nested model too.
    let mut nested = Sequential::builder(&[2])
        .add(Dense::new(2, 8))
        .add(Residual::new(Sequential::new().add(BatchNorm1d::new(8)).add(Relu::new())))
        .add(Dense::new(8, 3))
        .build()
        .unwrap();
    let err = nested.fit(&data, &CrossEntropyLoss::new(), &mut Adam::new(0.01), opts()).unwrap_err();
    assert!(err.to_string().contains("BatchNorm1d(8)"), "{err}");
    // Evaluation and prediction take a batch of one.
    assert_eq!(model.predict(&Tensor::zeros(&[1, 2]), 1).unwrap().shape(), &[1, 3]);
}

/// A layer that panics on its third training batch: a refusal no check can see coming.
struct Fragile {
    calls: usize,
}

impl Visit for Fragile {}

impl Layer for Fragile {
    fn describe(&self) -> String {
        "Fragile".into()
    }
    fn output_shape(&self, input: &[usize]) -> backprop::Result<Vec<usize>> {
        Ok(input.to_vec())
    }
    fn forward(&mut self, x: &Tensor, _: Pass<'_>) -> Tensor {
        self.calls += 1;
        assert!(self.calls != 3, "Fragile: refuses its third batch");
        x.clone()
    }
    fn backward(&mut self, g: &Tensor, _: InputGrad) -> Option<Tensor> {
        Some(g.clone())
    }
}

/// A panic inside a batch becomes `Error::Training` with the batch's position and the panic's
/// message, and the model is as it was before that batch.
#[test]
fn a_layer_that_panics_inside_a_batch_stops_training_cleanly() {
    let data = common::blobs(96, 3);
    let build = || {
        Sequential::builder(&[2])
            .add(Dense::new(2, 8).seed(1))
            .add(BatchNorm1d::new(8))
            .add(Fragile { calls: 0 })
            .add(Dense::new(8, 3).seed(2))
            .build()
            .unwrap()
    };
    let (mut model, mut reference) = (build(), build());
    let opts = || FitOptions::new().batch_size(32).shuffle(false).verbose(false);
    reference.fit(&data.take(64), &CrossEntropyLoss::new(), &mut Adam::new(0.01), opts()).unwrap();
    let err = model.fit(&data, &CrossEntropyLoss::new(), &mut Adam::new(0.01), opts()).unwrap_err();
    let Error::Training { epoch: 1, batch: 3, message } = &err else { panic!("{err}") };
    assert!(message.contains("Fragile: refuses its third batch"), "{message}");
    assert_eq!(state(&model), state(&reference));
}

/// A stateful LSTM carries its state from batch to batch; a failed batch puts the carried state
/// back too, so the next pass starts where the last good batch left it.
#[test]
fn a_failing_batch_puts_back_a_stateful_layers_carried_state() {
    let x = Tensor::from_vec(&[12, 5, 3], (0..180).map(|i| (i as f32 * 0.61).sin()).collect()).unwrap();
    let y = Tensor::from_vec(&[12, 5, 1], (0..60).map(|i| (i as f32 * 0.23).cos()).collect()).unwrap();
    let data = Dataset::regression(x.clone(), y).unwrap();
    let build = |calls| {
        Sequential::builder(&[5, 3])
            .add(Lstm::new(3, 4).seed(1).stateful())
            .add(Fragile { calls })
            .add(Dense::new(4, 1).seed(2))
            .build()
            .unwrap()
    };
    let (mut model, mut reference) = (build(0), build(3)); // the reference's never refuses
    let opts = || FitOptions::new().batch_size(4).shuffle(false).verbose(false);
    reference.fit(&data.take(8), &MseLoss::new(), &mut Sgd::new(0.1), opts()).unwrap();
    let err = model.fit(&data, &MseLoss::new(), &mut Sgd::new(0.1), opts()).unwrap_err();
    assert!(matches!(err, Error::Training { epoch: 1, batch: 3, .. }), "{err}");
    let carried = state(&model).into_iter().find(|(name, _)| name == "0.carried_state").expect("visited");
    assert_eq!(carried.1.len(), 2 * 4 * 4, "h and c of 4 samples");
    assert_eq!(state(&model), state(&reference));
    // The next pass of each starts from the same carried state.
    let batch = x.select_outer(&[0, 1, 2, 3]);
    let (a, b) = (model.predict(&batch, 4).unwrap(), reference.predict(&batch, 4).unwrap());
    assert_eq!(a.data(), b.data());
}

#[test]
fn train_step_refuses_a_bad_target_before_the_forward_pass() {
    let mut model = bn_model();
    let before = state(&model);
    let x = Tensor::randn(&[4, 2], 0.0, 1.0, 1);
    let err =
        model.train_step(&x, Target::Classes(&[0, 1, 7, 0]), &CrossEntropyLoss::new(), &mut Sgd::new(0.1));
    assert!(err.unwrap_err().to_string().contains("label 7"));
    assert_eq!(state(&model), before);
}

/// A loss that overflows: no step, and the batch norm statistics, counters and dropout's
/// generator are as before (the next step is the one a fresh copy of the model takes).
#[test]
fn train_step_refuses_a_non_finite_loss_and_changes_nothing() {
    let (mut model, mut twin) = (bn_model(), bn_model());
    let mut sgd = Sgd::new(0.1).momentum(0.9);
    let before = state(&model);
    let x = Tensor::randn(&[4, 2], 0.0, 1.0, 1);
    let huge = Tensor::full(&[4, 3], 3e38); // finite, but (y − 3e38)² is not
    let err = model.train_step(&x, Target::Values(&huge), &MseLoss::new(), &mut sgd).unwrap_err().to_string();
    assert!(err.contains("train_step: the loss is inf") && err.contains("not taken"), "{err}");
    assert_eq!(state(&model), before);
    assert!(model.params().iter().all(|p| p.grad.data().iter().all(|&g| g == 0.0)));
    let y = Target::Classes(&[0, 1, 2, 0]);
    let mut twin_sgd = Sgd::new(0.1).momentum(0.9);
    let a = model.train_step(&x, y, &CrossEntropyLoss::new(), &mut sgd).unwrap();
    let b = twin.train_step(&x, y, &CrossEntropyLoss::new(), &mut twin_sgd).unwrap();
    assert_eq!(a.to_bits(), b.to_bits());
    assert_eq!(state(&model), state(&twin));
}

/// A finite loss whose weight gradient overflows: `y = 1e-30·3e38 = 3e8`, the loss 9e16, but
/// `dL/dw = 2·y·x = 6e8·3e38` is infinite.
#[test]
fn train_step_refuses_a_non_finite_gradient_and_names_it() {
    let w = Tensor::from_vec(&[1, 1], vec![1e-30]).unwrap();
    let mut model = Sequential::builder(&[1]).add(Dense::new(1, 1).with_weights(w, None)).build().unwrap();
    let before = state(&model);
    let x = Tensor::from_vec(&[1, 1], vec![3e38]).unwrap();
    let err = model
        .train_step(&x, Target::Values(&Tensor::zeros(&[1, 1])), &MseLoss::new(), &mut Sgd::new(0.1))
        .unwrap_err()
        .to_string();
    assert!(err.contains("the gradient of 0.weight is inf"), "{err}");
    assert_eq!(state(&model), before);
}

/// Finite loss and gradients, but a step of `0.5 · 2e38` from `w = 1` leaves `f32`: the error
/// names the parameter (a single step keeps no copy to go back to; `fit` does).
#[test]
fn train_step_says_which_parameter_a_diverging_step_broke() {
    let w = Tensor::from_vec(&[1, 1], vec![1.0]).unwrap();
    let mut model =
        Sequential::builder(&[1]).add(Dense::new(1, 1).no_bias().with_weights(w, None)).build().unwrap();
    let x = Tensor::from_vec(&[1, 1], vec![1e19]).unwrap(); // loss (1e19)² = 1e38, dL/dw = 2e38
    let err = model
        .train_step(&x, Target::Values(&Tensor::zeros(&[1, 1])), &MseLoss::new(), &mut Sgd::new(10.0))
        .unwrap_err()
        .to_string();
    assert!(err.contains("made 0.weight hold -inf") && err.contains("loss was 1e38"), "{err}");
}

#[test]
fn train_step_refuses_an_optimizer_that_stepped_another_model() {
    let mut adam = Adam::new(0.01);
    let mut small = Sequential::builder(&[2]).add(Dense::new(2, 3).seed(1)).build().unwrap();
    let x = Tensor::randn(&[4, 2], 0.0, 1.0, 1);
    small.train_step(&x, Target::Classes(&[0, 1, 2, 0]), &CrossEntropyLoss::new(), &mut adam).unwrap();
    let mut other = Sequential::builder(&[2]).add(Dense::new(2, 4).seed(1)).build().unwrap();
    let before = state(&other);
    let err = other
        .train_step(&x, Target::Classes(&[0, 1, 3, 0]), &CrossEntropyLoss::new(), &mut adam)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("train_step: the optimizer's") && err.contains("[3]") && err.contains("[4]"),
        "{err}"
    );
    assert_eq!(state(&other), before);
}

#[test]
fn optimizer_settings_are_validated_when_built() {
    let message = |f: fn()| {
        let e = std::panic::catch_unwind(f).unwrap_err();
        e.downcast_ref::<String>().cloned().unwrap()
    };
    assert!(
        message(|| drop(Sgd::new(-1.0)))
            .contains("SGD: the learning rate must be a finite number ≥ 0, got -1")
    );
    assert!(message(|| drop(Sgd::new(f32::INFINITY))).contains("inf"));
    assert!(message(|| drop(Sgd::new(0.1).momentum(f32::NAN))).contains("momentum"));
    assert!(message(|| drop(Adam::new(f32::NAN))).contains("Adam: the learning rate"));
    assert!(message(|| drop(AdamW::new(0.1).betas(1.0, 0.9))).contains("AdamW: betas"));
    assert!(message(|| drop(Adam::new(0.1).eps(-1.0))).contains("eps"));
    assert!(message(|| Adam::new(0.1).set_learning_rate(-0.5)).contains("learning rate"));
}

/// A step that turns a weight infinite (finite loss, finite gradients, a huge learning rate) is
/// refused: the weights, statistics and counters are those from before that batch.
#[test]
fn a_non_finite_step_is_undone() {
    let blobs = common::blobs(64, 4);
    let data = Dataset::regression(blobs.inputs().clone(), Tensor::full(&[64, 3], 1000.0)).unwrap();
    let mut model = bn_model();
    let before = state(&model);
    // Gradients of about 20 times the largest finite learning rate overflow to ±∞ in the step.
    let err = model
        .fit(&data, &MseLoss::new(), &mut Sgd::new(f32::MAX), FitOptions::new().batch_size(32).verbose(false))
        .unwrap_err();
    let Error::NonFinite { what, epoch: 1, batch: 1, .. } = &err else { panic!("{err}") };
    assert!(what.contains("after the optimizer step"), "{err}");
    assert_eq!(state(&model), before);
    assert!(model.params().iter().all(|p| p.value.all_finite()));
}

/// A step that would make a weight infinite in the second epoch is undone together with the
/// optimizer's own state: the momentum buffers and step count are those after the first epoch, so
/// that training can carry on exactly as if the refused step had never been tried.
#[test]
fn a_refused_step_restores_the_optimizers_state_too() {
    let blobs = common::blobs(64, 4);
    let data = Dataset::regression(blobs.inputs().clone(), Tensor::full(&[64, 3], 1000.0)).unwrap();
    // One batch per epoch; the rate jumps from 1 to 10³⁸ in the second epoch.
    let options = |epochs| {
        FitOptions::new()
            .batch_size(64)
            .epochs(epochs)
            .schedule(Schedule::exponential(1e38).unwrap())
            .verbose(false)
    };
    let (mut reference, mut model) = (bn_model(), bn_model());
    let (mut opt_ref, mut opt) = (Sgd::new(1.0).momentum(0.9), Sgd::new(1.0).momentum(0.9));
    reference.fit(&data, &MseLoss::new(), &mut opt_ref, options(1)).unwrap();
    let err = model.fit(&data, &MseLoss::new(), &mut opt, options(2)).unwrap_err();
    let Error::NonFinite { what, epoch: 2, batch: 1, .. } = &err else { panic!("{err}") };
    assert!(what.contains("after the optimizer step"), "{err}");
    assert_eq!(state(&model), state(&reference));
    let (mut a, mut b) = (OptimizerState::default(), OptimizerState::default());
    opt.save_state(&mut a);
    opt_ref.save_state(&mut b);
    assert_eq!(a.steps(), 1);
    assert_eq!(a.len(), model.params().len());
    assert_eq!(a, b);
    assert_eq!(opt.learning_rate(), 1.0);
}

/// Saving and loading an optimizer's state carries on training exactly; a state of another kind
/// of optimizer is refused, the optimizer unchanged.
#[test]
fn optimizer_state_round_trips_and_refuses_other_kinds() {
    let data = common::blobs(64, 5);
    let options = || FitOptions::new().batch_size(16).shuffle(false).verbose(false);
    let (mut straight, mut resumed) = (bn_model(), bn_model());
    let mut adam = Adam::new(0.01);
    straight.fit(&data, &CrossEntropyLoss::new(), &mut adam, options().epochs(2)).unwrap();
    let mut first = Adam::new(0.01);
    resumed.fit(&data, &CrossEntropyLoss::new(), &mut first, options()).unwrap();
    let mut saved = OptimizerState::default();
    first.save_state(&mut saved);
    assert_eq!(saved.steps(), 4);
    assert_eq!(saved.len(), 2 * resumed.params().len());
    let mut second = Adam::new(0.01);
    second.load_state(&saved).unwrap();
    // The second epoch's shuffle and dropout masks depend on the epoch; without shuffling and with
    // the same seed the dropout masks of a second `fit` are those of its first epoch, so compare
    // the optimizer's bookkeeping instead of the weights.
    let mut again = OptimizerState::default();
    second.save_state(&mut again);
    assert_eq!(again, saved);
    let mut sgd = Sgd::new(0.1).momentum(0.9);
    let err = sgd.load_state(&saved).unwrap_err().to_string();
    assert!(err.contains("SGD") && err.contains("exp_avg"), "{err}");
    let mut fresh = OptimizerState::default();
    sgd.save_state(&mut fresh);
    assert_eq!(fresh, OptimizerState::default(), "unchanged after the refusal");
}

/// The crate's optimizers list their buffers' shapes in place; an optimizer of the user's own
/// goes through `Optimizer::visit_buffer_shapes`'s default (a `save_state` copy): both see the
/// same buffers.
#[test]
fn buffer_shapes_in_place_and_through_a_copy_agree() {
    struct Wrapped(Adam);
    impl Optimizer for Wrapped {
        fn step_params(&mut self, params: &mut [(String, &mut Param)]) {
            self.0.step_params(params)
        }
        fn learning_rate(&self) -> f32 {
            self.0.learning_rate()
        }
        fn set_learning_rate(&mut self, lr: f32) {
            self.0.set_learning_rate(lr)
        }
        fn describe(&self) -> String {
            "Wrapped".into()
        }
        fn save_state(&self, into: &mut OptimizerState) {
            self.0.save_state(into)
        }
    }
    let shapes = |o: &dyn Optimizer| {
        let mut all = Vec::new();
        o.visit_buffer_shapes(&mut |kind, name, shape| all.push(format!("{kind} {name} {shape:?}")));
        all
    };
    let mut wrapped = Wrapped(Adam::new(0.01).amsgrad());
    let mut model = bn_model();
    let x = Tensor::randn(&[4, 2], 0.0, 1.0, 1);
    model.train_step(&x, Target::Classes(&[0, 1, 2, 0]), &CrossEntropyLoss::new(), &mut wrapped).unwrap();
    assert_eq!(shapes(&wrapped).len(), 3 * 6, "three kinds × six parameters");
    assert_eq!(shapes(&wrapped), shapes(&wrapped.0));
    let mut other = Sequential::builder(&[2]).add(Dense::new(2, 5)).build().unwrap();
    let err = other.train_step(&x, Target::Classes(&[0, 1, 2, 0]), &CrossEntropyLoss::new(), &mut wrapped);
    assert!(err.unwrap_err().to_string().contains("buffer for parameter \"0.bias\" has shape [8]"));
}

/// A batch whose values are spread past f32 (σ² > 3.4·10³⁸, here σ = 2·10¹⁹): batch norm still
/// normalises it right in training (x̂ = ±1, from 1/σ taken in f64, where 1/√∞ = 0 had given every
/// input β), but its running variance cannot hold σ²; `fit` and `train_step` stop there, naming
/// the buffer, with the model as it was before the batch.
#[test]
fn a_variance_past_f32_is_normalised_right_and_stops_training_by_name() {
    let x = Tensor::from_vec(&[2, 1], vec![-2e19, 2e19]).unwrap();
    let mut bn = BatchNorm1d::new(1);
    let y = bn.forward(&x, Pass::TRAIN);
    assert_eq!(y.data(), &[-1.0, 1.0], "x̂ = ±1 (γ = 1, β = 0)");
    let mut model = Sequential::builder(&[1]).add(BatchNorm1d::new(1)).build().unwrap();
    let before = state(&model);
    let data = Dataset::regression(x.clone(), Tensor::zeros(&[2, 1])).unwrap();
    let options = FitOptions::new().epochs(1).batch_size(2).verbose(false);
    let e = model.fit(&data, &MseLoss::new(), &mut Sgd::new(0.1), options).unwrap_err().to_string();
    assert!(e.contains("running statistic") && e.contains("running_var") && e.contains("inf"), "{e}");
    assert_eq!(state(&model), before, "the batch was undone");
    let e =
        model.train_step(&x, Target::Values(&Tensor::zeros(&[2, 1])), &MseLoss::new(), &mut Sgd::new(0.1));
    assert!(e.unwrap_err().to_string().contains("running_var"));
    assert_eq!(state(&model), before);
}

/// What `fit` can know before the first epoch it says then, with nothing trained: a schedule
/// whose rate leaves f32 at a later epoch (it had trained four epochs at rates up to 10³⁰ first),
/// and a checkpoint folder that cannot take the files (a `last.safetensors` that is a folder,
/// a folder path below a file) — which a run refused for its data does not create either.
#[test]
fn schedules_and_checkpoint_folders_are_checked_before_the_first_epoch() {
    use backprop::optim::schedule::Schedule;
    use backprop::train::Checkpoints;
    let data = common::blobs(16, 1);
    let mut model = bn_model();
    let before = state(&model);
    let options = || FitOptions::new().epochs(10).verbose(false);
    let growing = Schedule::exponential(1e10).unwrap();
    let e = model.fit(&data, &CrossEntropyLoss::new(), &mut Sgd::new(0.1), options().schedule(growing));
    let e = e.unwrap_err().to_string();
    assert!(e.contains("epoch 5") && e.contains("nothing was trained"), "{e}");
    assert_eq!(state(&model), before);
    let dir = common::scratch_dir("fit-checkpoint-folders");
    std::fs::create_dir_all(dir.path().join("taken/last.safetensors")).unwrap();
    std::fs::write(dir.path().join("a-file"), b"x").unwrap();
    for (folder, want) in [("taken", "a folder where a checkpoint goes"), ("a-file/run", "a-file")] {
        let keep = Checkpoints::in_dir(dir.path().join(folder));
        let e = model.fit(&data, &CrossEntropyLoss::new(), &mut Sgd::new(0.1), options().checkpoints(keep));
        let e = e.unwrap_err().to_string();
        assert!(e.contains(want), "{folder}: {e}");
        assert_eq!(state(&model), before, "{folder}");
    }
    let refused = Dataset::classification(Tensor::zeros(&[4, 5]), vec![0; 4]).unwrap();
    let keep = Checkpoints::in_dir(dir.path().join("never"));
    assert!(
        model
            .fit(&refused, &CrossEntropyLoss::new(), &mut Sgd::new(0.1), options().checkpoints(keep))
            .is_err()
    );
    assert!(!dir.path().join("never").exists(), "a refused run makes no folder");
}

/// What an augmentation makes is checked as the data were: a changed shape or a value that is not
/// finite stops training with an error naming the augmentation, the epoch and the batch (a NaN
/// had read as a diverged step — "try a smaller learning rate" — and a changed shape as a
/// layer's refusal), and the model is as the batches before left it.
#[test]
fn an_augmentation_that_breaks_the_batch_is_named() {
    let data =
        Dataset::classification(Tensor::randn(&[8, 4], 0.0, 1.0, 1), vec![0, 1, 0, 1, 0, 1, 0, 1]).unwrap();
    let build = || Sequential::builder(&[4]).add(Dense::new(4, 2)).seed(3).build().unwrap();
    let fit = |aug: fn(&mut Tensor, &mut backprop::tensor::Rng)| {
        let mut m = build();
        let before = m.state_dict();
        let o = FitOptions::new().batch_size(4).epochs(2).verbose(false).augment(aug);
        let e = m.fit(&data, &CrossEntropyLoss::new(), &mut Sgd::new(0.1), o).unwrap_err().to_string();
        (e, m.state_dict() == before)
    };
    // A standardisation that divides by a zero spread.
    let (e, untouched) = fit(|x, _| x.data_mut().iter_mut().for_each(|v| *v /= 0.0));
    assert!(e.contains("the augmentation made value 0") && e.contains("epoch 1, batch 1"), "{e}");
    assert!(untouched, "refused before the first step");
    let (e, _) = fit(|x, _| *x = Tensor::zeros(&[4, 5]));
    assert!(e.contains("changed the batch's shape from [4, 4] to [4, 5]"), "{e}");
}

/// A dense layer that refuses inputs past 50 (as a model struct may refuse what it cannot read).
struct Picky {
    dense: Dense,
}
backprop::visit_fields!(Picky { dense });

impl backprop::model::Model for Picky {
    fn forward_batch(
        &mut self,
        inputs: &backprop::model::Inputs,
        mode: backprop::layers::Mode,
    ) -> backprop::Result<backprop::model::Tensors> {
        let x = inputs.first()?.values.clone();
        if let Some(v) = x.data().iter().find(|v| **v > 50.0) {
            assert!(*v < 90.0, "Picky: {v} is far past 50"); // a refusal by panic
            return Err(Error::invalid(format!("Picky: {v} is past 50")));
        }
        Ok(backprop::model::Tensors::one("y", self.dense.forward(&x, mode.into())))
    }

    fn backward_batch(
        &mut self,
        grads: &backprop::model::Tensors,
        _: InputGrad,
    ) -> backprop::Result<backprop::model::Tensors> {
        self.dense.backward(grads.get("y")?, InputGrad::NotNeeded);
        Ok(backprop::model::Tensors::new())
    }
}

/// An error in the validation pass after an epoch names the pass and the epoch (it had read as a
/// call of `evaluate`). The first validation batch is tried before training, so the refused value
/// sits in the second.
#[test]
fn a_failing_validation_pass_names_its_epoch() {
    let train = Dataset::regression(Tensor::randn(&[8, 2], 0.0, 1.0, 1), Tensor::zeros(&[8, 1])).unwrap();
    // An error the model returns, and a refusal by panic (which `evaluate` names itself: the one
    // prefix replaced, not repeated).
    for (value, says) in [(60.0, "Picky: 60 is past 50"), (100.0, "Picky refused the batch")] {
        let mut x = Tensor::randn(&[8, 2], 0.0, 1.0, 2);
        x.data_mut()[14] = value; // sample 7: the second batch of 4
        let val = Dataset::regression(x, Tensor::zeros(&[8, 1])).unwrap();
        let mut model = Picky { dense: Dense::new(2, 1).seed(1) };
        let o = FitOptions::new()
            .batch_size(4)
            .epochs(2)
            .verbose(false)
            .validation(&val)
            .validation_batch_size(4);
        let e = backprop::train::fit(&mut model, &train, &MseLoss::new(), &mut Sgd::new(0.1), o)
            .unwrap_err()
            .to_string();
        assert!(e.contains("fit: the validation pass after epoch 1: ") && e.contains(says), "{e}");
        assert!(!e.contains("evaluate:"), "{e}");
    }
}
