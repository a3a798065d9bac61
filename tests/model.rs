//! Sequential: building, summaries, training that actually learns, evaluation, NaN handling.

mod common;

use backprop::prelude::*;
use std::cell::RefCell;

fn mlp(seed: u64) -> Sequential {
    Sequential::builder(&[2])
        .add(Dense::new(2, 16).seed(seed))
        .add(Relu::new())
        .add(Dense::new(16, 3).seed(seed + 1))
        .build()
        .unwrap()
}

fn small_cnn() -> Sequential {
    Sequential::builder(&[1, 8, 8])
        .add(Conv2d::new(1, 8, 3).padding(1).seed(1))
        .add(BatchNorm2d::new(8))
        .add(Relu::new())
        .add(MaxPool2d::new(2))
        .add(Flatten::new())
        .add(Dropout::new(0.2))
        .add(Dense::new(128, 4).seed(2))
        .build()
        .unwrap()
}

#[test]
fn build_errors_name_layer_and_shapes() {
    let err = Sequential::builder(&[1, 28, 28])
        .add(Conv2d::new(1, 32, 3))
        .add(Relu::new())
        .add(MaxPool2d::new(2))
        .add(Conv2d::new(32, 64, 3))
        .add(Relu::new())
        .add(MaxPool2d::new(2))
        .add(Flatten::new())
        .add(Dense::new(1568, 10))
        .build()
        .unwrap_err()
        .to_string();
    for part in ["layer 7", "Dense(1568→10)", "[N, 1600]", "[N, 1568]", "layer 6 (Flatten)"] {
        assert!(err.contains(part), "{err:?} should contain {part:?}");
    }
    let err = Sequential::builder(&[3, 32, 32]).add(Conv2d::new(1, 8, 3)).build().unwrap_err().to_string();
    assert!(
        err.contains("layer 0") && err.contains("[N, 3, 32, 32]") && err.contains("the model input"),
        "{err}"
    );
}

#[test]
fn summary_lists_layers_shapes_and_parameters() {
    let model = Sequential::builder(&[1, 28, 28])
        .add(Conv2d::new(1, 32, 3))
        .add(Relu::new())
        .add(MaxPool2d::new(2))
        .add(Conv2d::new(32, 64, 3))
        .add(Relu::new())
        .add(MaxPool2d::new(2))
        .add(Flatten::new())
        .add(Dropout::new(0.5))
        .add(Dense::new(1600, 10))
        .build()
        .unwrap();
    let s = model.summary();
    // 32·9 + 32 = 320; 64·32·9 + 64 = 18 496; 1600·10 + 10 = 16 010; total 34 826.
    for part in [
        "Conv2d(1→32, 3×3)",
        "[N, 32, 26, 26]",
        "320",
        "18496",
        "[N, 1600]",
        "16010",
        "Total parameters: 34826",
    ] {
        assert!(s.contains(part), "summary lacks {part:?}:\n{s}");
    }
    assert_eq!(model.num_params(), 34_826);
    assert_eq!(model.sample_output_shape(), Some(vec![10]));
    let names: Vec<String> = model.named_params().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["0.weight", "0.bias", "3.weight", "3.bias", "8.weight", "8.bias"]);
}

#[test]
fn mlp_learns_blobs() {
    let train = common::blobs(600, 1);
    let test = common::blobs(300, 2);
    let mut model = mlp(3);
    let loss = CrossEntropyLoss::new();
    let before = model.evaluate(&train, &loss, 100).unwrap();
    let history = model
        .fit(
            &train,
            &loss,
            &mut Adam::new(0.02),
            FitOptions::new().epochs(15).batch_size(32).seed(4).validation(&test).verbose(false),
        )
        .unwrap();
    // In batches of 256, as `fit` evaluates its validation set (at least 256 a batch): the same
    // batches' losses summed in the same order, so the same bits as the history's last entry.
    let after = model.evaluate(&test, &loss, 256).unwrap();
    assert_eq!(history.epochs.len(), 15);
    assert!(after.loss < before.loss / 4.0, "loss {} → {}", before.loss, after.loss);
    assert!(after.accuracy.unwrap() > 0.9, "test accuracy {:?}", after.accuracy);
    assert_eq!(history.last().unwrap().val_loss, Some(after.loss));
    // predict / predict_proba / predict_classes agree with evaluate.
    let classes = model.predict_classes(test.inputs(), 64).unwrap();
    let correct = classes.iter().zip(test.labels().unwrap()).filter(|(a, b)| a == b).count();
    assert_eq!(Some(correct), after.correct);
    let p = model.predict_proba(test.inputs(), 7).unwrap();
    assert_eq!(p.shape(), &[300, 3]);
    assert!(p.data().chunks(3).all(|r| (r.iter().sum::<f32>() - 1.0).abs() < 1e-5));
}

#[test]
fn cnn_learns_lines_with_sgd_momentum_and_schedule() {
    let train = common::lines(512, 5);
    let test = common::lines(256, 6);
    let mut model = small_cnn();
    let loss = CrossEntropyLoss::new();
    let before = model.evaluate(&test, &loss, 64).unwrap();
    let lrs = RefCell::new(Vec::new());
    let batches = RefCell::new(0);
    let history = model
        .fit(
            &train,
            &loss,
            &mut Sgd::new(0.05).momentum(0.9),
            FitOptions::new()
                .epochs(6)
                .batch_size(32)
                .schedule(Schedule::step(3, 0.5).unwrap())
                .clip_grad_norm(5.0)
                .verbose(false)
                .on_epoch_end(|s| lrs.borrow_mut().push(s.learning_rate))
                .on_batch_end(|_| *batches.borrow_mut() += 1),
        )
        .unwrap();
    let after = model.evaluate(&test, &loss, 64).unwrap();
    assert!(after.loss < before.loss / 4.0, "loss {} → {}", before.loss, after.loss);
    assert!(after.accuracy.unwrap() > 0.9, "accuracy {:?}", after.accuracy);
    assert_eq!(*lrs.borrow(), vec![0.05, 0.05, 0.05, 0.025, 0.025, 0.025]);
    assert_eq!(*batches.borrow(), 6 * 16);
    assert!(history.epochs[5].train_accuracy.unwrap() > history.epochs[0].train_accuracy.unwrap());
}

#[test]
fn early_stopping_stops_and_restores_best() {
    let train = common::blobs(200, 7);
    // A validation set whose labels are rotated by one class: the better the model fits the
    // training data, the worse its validation loss, so early stopping must end training soon.
    let v = common::blobs(100, 8);
    let rotated = v.labels().unwrap().iter().map(|l| (l + 1) % 3).collect();
    let val = Dataset::classification(v.inputs().clone(), rotated).unwrap();
    let mut model = mlp(9);
    let loss = CrossEntropyLoss::new();
    let history = model
        .fit(
            &train,
            &loss,
            &mut Sgd::new(0.5),
            FitOptions::new()
                .epochs(50)
                .batch_size(200)
                .validation(&val)
                .early_stopping(EarlyStopping::new(Monitor::ValLoss, 2))
                .verbose(false),
        )
        .unwrap();
    assert!(history.stopped_early && history.epochs.len() < 50, "{} epochs", history.epochs.len());
    let best = history.best_epoch.unwrap();
    let best_val = history.epochs[best - 1].val_loss.unwrap();
    assert!(history.epochs.iter().all(|e| e.val_loss.unwrap() >= best_val));
    // The best epoch's weights were put back.
    let now = model.evaluate(&val, &loss, 100).unwrap();
    assert!((now.loss - best_val).abs() < 1e-5, "{} vs {best_val}", now.loss);
    // Without a validation set, early stopping on validation loss is an error.
    let err = mlp(1).fit(
        &train,
        &loss,
        &mut Sgd::new(0.1),
        FitOptions::new().early_stopping(EarlyStopping::new(Monitor::ValLoss, 2)).verbose(false),
    );
    assert!(err.unwrap_err().to_string().contains("validation set"));
}

#[test]
fn diverging_training_stops_with_a_clear_error_and_finite_weights() {
    let data = common::blobs(256, 10);
    let targets = Tensor::from_fn(&[256, 3], |i| data.inputs()[&[i[0], i[1] % 2]] * 100.0);
    let regression = Dataset::regression(data.inputs().clone(), targets).unwrap();
    let mut model = Sequential::builder(&[2])
        .add(Dense::new(2, 32).seed(1))
        .add(BatchNorm1d::new(32))
        .add(Relu::new())
        .add(Dense::new(32, 3).seed(2))
        .build()
        .unwrap();
    let err = model
        .fit(
            &regression,
            &MseLoss::new(),
            &mut Sgd::new(10.0).momentum(0.9),
            FitOptions::new().epochs(20).batch_size(16).verbose(false),
        )
        .unwrap_err();
    let Error::NonFinite { epoch, batch, last_finite_loss, .. } = &err else {
        panic!("expected NonFinite, got {err}")
    };
    assert!(*epoch >= 1 && *batch >= 1);
    assert!(last_finite_loss.is_some_and(f32::is_finite), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("epoch {epoch}, batch {batch}")) && msg.contains("last finite loss"),
        "{msg}"
    );
    // The weights (and batch-norm statistics) from before that batch are kept: all finite.
    assert!(model.params().iter().all(|p| p.value.all_finite()));
    assert!(model.state_dict().iter().all(|(_, t)| t.all_finite()));
}

#[test]
fn bad_data_is_rejected_before_training() {
    let mut model = mlp(1);
    let loss = CrossEntropyLoss::new();
    let wrong_shape = Dataset::classification(Tensor::zeros(&[4, 3]), vec![0, 1, 2, 0]).unwrap();
    let err = model
        .fit(&wrong_shape, &loss, &mut Sgd::new(0.1), FitOptions::new().verbose(false))
        .unwrap_err()
        .to_string();
    assert!(err.contains("[N, 2]") && err.contains("[4, 3]"), "{err}");
    let bad_label = Dataset::classification(Tensor::zeros(&[2, 2]), vec![0, 7]).unwrap();
    let err = model
        .fit(&bad_label, &loss, &mut Sgd::new(0.1), FitOptions::new().verbose(false))
        .unwrap_err()
        .to_string();
    assert!(err.contains("label 7") && err.contains("3 outputs"), "{err}");
    let ok = common::blobs(8, 1);
    assert!(
        model.fit(&ok, &loss, &mut Sgd::new(0.1), FitOptions::new().batch_size(0).verbose(false)).is_err()
    );
    assert!(model.predict(&Tensor::zeros(&[2, 5]), 2).is_err());
    let msg = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        drop(model.forward(&Tensor::zeros(&[2, 5]), Pass::EVAL))
    }))
    .unwrap_err()
    .downcast_ref::<String>()
    .cloned()
    .unwrap();
    assert!(msg.contains("[N, 2]") && msg.contains("[2, 5]"), "{msg}");
}

/// A misspelt input name is an error from `Inputs::pass`, as from `get`: it had given a pass
/// without lengths, and the layers ran over the padding as if every step were valid.
#[test]
fn a_pass_for_an_input_that_is_not_there_is_an_error() {
    use backprop::model::Inputs;
    let inputs = Inputs::new().with_lengths("source", Tensor::zeros(&[2, 3, 1]), vec![1, 3]);
    assert_eq!(inputs.pass("source", Mode::Eval).unwrap().lengths, Some(&[1, 3][..]));
    let e = inputs.pass("sorce", Mode::Eval).unwrap_err().to_string();
    assert!(e.contains("\"sorce\"") && e.contains("source"), "{e}");
    // Replacing an input without lengths drops its lengths (as documented).
    let replaced = inputs.clone().with("source", Tensor::zeros(&[2, 3, 1]));
    assert_eq!(replaced.lengths("source"), None);
}

/// A layer given no gradient for its output (it does not reach the loss) adds nothing, as the
/// trait says an absent gradient is zero; gradients for names a layer has not are refused.
#[test]
fn a_layer_without_a_gradient_for_its_output_adds_nothing() {
    use backprop::layers::{InputGrad, named_params};
    use backprop::model::{Inputs, Model, Tensors};
    let mut dense = Dense::new(2, 3).seed(1);
    dense.forward_batch(&Inputs::single(Tensor::ones(&[4, 2])), Mode::Train).unwrap();
    let dx = dense.backward_batch(&Tensors::new(), InputGrad::Needed).unwrap();
    assert_eq!(dx.len(), 0);
    assert!(named_params(&dense).iter().all(|(_, p)| p.grad.data().iter().all(|&g| g == 0.0)));
    let two = Tensors::one("a", Tensor::ones(&[4, 3])).with("b", Tensor::ones(&[4, 3]));
    let e = dense.backward_batch(&two, InputGrad::Needed).unwrap_err().to_string();
    assert!(e.contains("\"a\"") && e.contains("\"output\""), "{e}");
}

/// A model built around a trained or loaded one keeps its weights (the new build's seed had
/// redrawn every weight that still carried an initialiser — the biases kept, a mismatched
/// model); layers added or replaced after a build draw from the model's seed and their index,
/// so two fresh layers of one shape do not start alike.
#[test]
fn building_around_a_trained_model_keeps_its_weights_and_later_layers_differ() {
    use backprop::io::LoadOptions;
    let mut inner = Sequential::builder(&[4]).add(Dense::new(4, 4)).build().unwrap();
    let ones =
        vec![("0.weight".to_string(), Tensor::ones(&[4, 4])), ("0.bias".to_string(), Tensor::ones(&[4]))];
    inner.load_tensors(&ones, &LoadOptions::new()).unwrap();
    let outer = Sequential::builder(&[4]).add(inner).add(Softmax::new()).seed(5).build().unwrap();
    assert_eq!(outer.params()[0].value, Tensor::ones(&[4, 4]), "loaded weights redrawn");
    // Trained by fit, then wrapped: the same.
    let data = Dataset::regression(Tensor::randn(&[8, 4], 0.0, 1.0, 1), Tensor::randn(&[8, 4], 0.0, 1.0, 2))
        .unwrap();
    // A layer trained on its own by fit (never built): its weights are kept too.
    let mut trained = Dense::new(4, 4);
    let o = FitOptions::new().verbose(false);
    backprop::train::fit(&mut trained, &data, &MseLoss::new(), &mut Sgd::new(0.1), o).unwrap();
    let weights = trained.weight().value.clone();
    let wrapped = Sequential::builder(&[4]).add(trained).add(Relu::new()).seed(9).build().unwrap();
    assert_eq!(wrapped.params()[0].value, weights, "trained weights redrawn");

    // Built but untrained models nested in a builder are drawn again from its seed and their
    // full names: two blocks of one shape do not start alike, and the seed chooses their values.
    let block = || Sequential::builder(&[8]).add(Dense::new(8, 8)).add(Relu::new()).build().unwrap();
    let twin = |seed: u64| {
        Sequential::builder(&[8])
            .add(Residual::new(block()))
            .add(Residual::new(block()))
            .seed(seed)
            .build()
            .unwrap()
    };
    let (a, b) = (twin(3), twin(4));
    assert_ne!(a.params()[0].value, a.params()[2].value, "two nested blocks alike");
    assert_ne!(a.params()[0].value, b.params()[0].value, "the outer seed ignored");

    // Replaced after the build: drawn from the model's seed by index, distinct.
    let three = || {
        Sequential::builder(&[8])
            .add(Dense::new(8, 8))
            .add(Relu::new())
            .add(Dense::new(8, 8))
            .seed(42)
            .build()
            .unwrap()
    };
    let mut m = three();
    m.replace(0, Dense::new(8, 8)).unwrap();
    m.replace(2, Dense::new(8, 8)).unwrap();
    assert_ne!(m.params()[0].value, m.params()[2].value, "two fresh layers alike");
    assert_eq!(m.params()[2].value, three().params()[2].value, "as the build draws layer 2");
}

/// An id past an embedding that a `Flatten` in front hides from the model's `check_values` is an
/// error from `input_gradient` (it had panicked), the gradients zeroed.
#[test]
fn input_gradient_turns_a_layers_refusal_into_an_error() {
    let mut model = Sequential::builder(&[1, 3])
        .add(Flatten::new())
        .add(Embedding::new(5, 2))
        .add(Flatten::new())
        .add(Dense::new(6, 2))
        .build()
        .unwrap();
    let ids = Tensor::from_vec(&[1, 1, 3], vec![0.0, 7.0, 1.0]).unwrap();
    let e = model.input_gradient(&ids, &[0]).unwrap_err().to_string();
    assert!(e.contains("7"), "{e}");
    // The model's value check reaches the embedding behind the Flatten: predict names the id.
    let e = model.predict(&ids, 1).unwrap_err().to_string();
    assert!(e.contains("7") && !e.contains("refused the batch"), "{e}");
    assert!(model.params().iter().all(|p| p.grad.data().iter().all(|&g| g == 0.0)));
}
