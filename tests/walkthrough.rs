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
    let data = pipeline::prepare(train.take(1500), test.take(500)).unwrap();
    assert!(data.train.inputs().mean().abs() < 1e-3, "normalised with the training set's statistics");
    let mut model = pipeline::reference_cnn(data.train.sample_shape(), 10, 1).unwrap();
    let settings = pipeline::Settings { epochs: 1, batch_size: 32, lr: 2e-3, seed: 1, verbose: false };
    let mut epochs = 0;
    let history = pipeline::train(&mut model, &data, &settings, |_| epochs += 1).unwrap();
    assert_eq!(epochs, 1);
    let acc = history.last().unwrap().val_accuracy.unwrap();
    assert!(acc > 0.6, "test accuracy after one short epoch: {acc}");
    let eval = model.evaluate(&data.test, &CrossEntropyLoss::new(), 100).unwrap();
    assert_eq!(eval.accuracy, Some(acc));
}
