//! `fit` checks what it can before the first forward pass, and on every error leaves the model's
//! weights, buffers, counters and the optimizer's learning rate as they were before the failing
//! batch.

mod common;

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
    poisoned.inputs_mut().data_mut()[2 * 70] = f32::NAN; // sample 70: in the third batch of 32
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

/// Batch norm cannot train on a batch of one sample. A last batch of one stops training with an
/// error naming the layer, and the model is as it was before that batch; `drop_last` avoids it.
#[test]
fn a_layer_that_refuses_a_batch_stops_training_cleanly() {
    let data = common::blobs(65, 3); // batches of 32, 32 and 1
    let mut model = bn_model();
    let mut reference = bn_model();
    let opts = || FitOptions::new().batch_size(32).shuffle(false).verbose(false);
    reference.fit(&data.take(64), &CrossEntropyLoss::new(), &mut Adam::new(0.01), opts()).unwrap();
    let err = model.fit(&data, &CrossEntropyLoss::new(), &mut Adam::new(0.01), opts()).unwrap_err();
    let Error::Training { epoch: 1, batch: 3, message } = &err else { panic!("{err}") };
    assert!(message.contains("BatchNorm1d(8)"), "{message}");
    assert_eq!(state(&model), state(&reference));
    let history =
        model.fit(&data, &CrossEntropyLoss::new(), &mut Adam::new(0.01), opts().drop_last(true)).unwrap();
    assert_eq!(history.epochs.len(), 1);
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
