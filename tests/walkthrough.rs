//! The walkthrough's own pipeline (included from the example) on a slice of the bundled digits:
//! one short epoch must beat chance (10 %) by a wide margin. Not a timed test.

#[allow(dead_code)]
#[path = "../examples/image_classify/pipeline.rs"]
mod pipeline;

use backprop::data::idx::load_mnist_folder;
use backprop::prelude::*;
use std::path::Path;

#[test]
fn one_short_epoch_on_a_slice_beats_chance_widely() {
    let (train, test) =
        load_mnist_folder(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/digits")).unwrap();
    let data = pipeline::prepare(train.take(1500), test.take(500), false).unwrap();
    assert!(data.train.inputs().mean().abs() < 1e-3, "normalised with the training set's statistics");
    let mut model = pipeline::reference_cnn(data.train.sample_shape(), 10, 1).unwrap();
    let settings = pipeline::Settings {
        epochs: 1,
        batch_size: 32,
        evaluation_batch: 256,
        lr: 2e-3,
        seed: 1,
        verbose: false,
    };
    let mut epochs = 0;
    let history = pipeline::train(&mut model, &data, &settings, |_| epochs += 1).unwrap();
    assert_eq!(epochs, 1);
    let acc = history.last().unwrap().val_accuracy.unwrap();
    assert!(acc > 0.6, "test accuracy after one short epoch: {acc}");
    let eval = model.evaluate(&data.test, &CrossEntropyLoss::new(), 100).unwrap();
    assert_eq!(eval.accuracy, Some(acc));
}

/// docs/walkthrough.md's figures, from the walkthrough's defaults (10 epochs, batch 64, Adam 2e-3
/// with cosine decay, seed 1) on the whole bundled set. They are bit-identical on any number of
/// threads but not across CPUs (the fast kernels differ between AVX2 and AVX-512, and rounding
/// with them: 98.40 % on the Intel Xeon of the text, 98.35 % on another machine), so the test
/// allows ±0.5 of a point of accuracy and ±0.01 of loss around the printed values.
#[test]
fn the_walkthroughs_printed_figures_hold_within_a_cpu_tolerance() {
    let (train, test) =
        load_mnist_folder(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/digits")).unwrap();
    let data = pipeline::prepare(train, test, false).unwrap();
    let mut model = pipeline::reference_cnn(data.train.sample_shape(), 10, 1).unwrap();
    let settings = pipeline::Settings {
        epochs: 10,
        batch_size: 64,
        evaluation_batch: 256,
        lr: 2e-3,
        seed: 1,
        verbose: false,
    };
    let history = pipeline::train(&mut model, &data, &settings, |_| {}).unwrap();
    let last = history.last().unwrap();
    let within = |got: f32, printed: f32, tolerance: f32, what: &str| {
        assert!(
            (got - printed).abs() <= tolerance,
            "{what}: {got} against the text's {printed} (± {tolerance})"
        );
    };
    within(last.val_accuracy.unwrap(), 0.9840, 0.005, "test accuracy after epoch 10");
    within(last.val_loss.unwrap(), 0.0531, 0.01, "test loss after epoch 10");
    within(last.train_accuracy.unwrap(), 0.9565, 0.005, "epoch 10's running training accuracy");
    let clean = model.evaluate(&data.train, &CrossEntropyLoss::new(), 256).unwrap();
    within(clean.accuracy.unwrap(), 0.9888, 0.005, "the final weights on the clean training images");
}
