//! A small residual CNN on the bundled handwritten digits: it builds, trains (beating chance by a
//! wide margin on held-out digits), passes a gradient check as one layer, and saves and loads.

use backprop::data::idx::load_mnist_folder;
use backprop::gradcheck::{Options, check_layer};
use backprop::prelude::*;
use std::path::Path;

fn residual_cnn(seed: u64) -> Sequential {
    let block = |c| {
        Residual::new(
            Sequential::new()
                .add(Conv2d::new(c, c, 3).padding(1))
                .add(BatchNorm2d::new(c))
                .add(Relu::new())
                .add(Conv2d::new(c, c, 3).padding(1)),
        )
    };
    Sequential::builder(&[1, 28, 28])
        .add(Conv2d::new(1, 8, 3).stride(2).padding(1)) // 8×14×14
        .add(Relu::new())
        .add(block(8))
        .add(Relu::new())
        .add(MaxPool2d::new(2)) // 8×7×7
        .add(block(8))
        .add(Relu::new())
        .add(GlobalAvgPool::new())
        .add(Dense::new(8, 10))
        .seed(seed)
        .build()
        .unwrap()
}

#[test]
fn residual_cnn_trains_on_digits_and_round_trips() {
    let (train, test) =
        load_mnist_folder(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/digits")).unwrap();
    let (mut train, mut test) = (train.take(2000), test.take(500));
    train.inputs_mut().map_inplace(|v| v - 0.13);
    test.inputs_mut().map_inplace(|v| v - 0.13);
    let mut model = residual_cnn(1);
    let loss = CrossEntropyLoss::new();
    let options = FitOptions::new().epochs(3).batch_size(32).seed(2).verbose(false);
    model.fit(&train, &loss, &mut Adam::new(0.01), options).unwrap();
    let eval = model.evaluate(&test, &loss, 250).unwrap();
    assert!(eval.accuracy.unwrap() > 0.6, "held-out accuracy {:?}", eval.accuracy);

    let bytes = model.to_safetensors().unwrap();
    let mut restored = residual_cnn(9);
    restored.load_safetensors(&bytes, "memory").unwrap();
    let (a, b) = (model.predict(test.inputs(), 100).unwrap(), restored.predict(test.inputs(), 100).unwrap());
    assert!(a.data().iter().zip(b.data()).all(|(x, y)| x.to_bits() == y.to_bits()), "predictions after load");
}

#[test]
fn residual_cnn_passes_a_gradient_check_as_one_layer() {
    // The same architecture on 8×8 inputs (fewer entries to perturb), in eval mode after one
    // training pass so that batch norm's statistics are not trivial; the model in double check:
    // a couple of hundred entries sampled per tensor.
    let block = Residual::new(
        Sequential::new()
            .add(Conv2d::new(3, 3, 3).padding(1))
            .add(BatchNorm2d::new(3))
            .add(Tanh::new())
            .add(Conv2d::new(3, 3, 3).padding(1)),
    );
    let mut model = Sequential::builder(&[1, 8, 8])
        .add(Conv2d::new(1, 3, 3).stride(2).padding(1))
        .add(Tanh::new())
        .add(block)
        .add(AvgPool2d::new(2))
        .add(Flatten::new())
        .add(Dense::new(12, 4))
        .seed(3)
        .build()
        .unwrap();
    let x = Tensor::randn(&[3, 1, 8, 8], 0.0, 1.0, 4);
    model.forward(&x, Pass::TRAIN);
    let opts = Options { max_entries: Some(200), ..Options::default() };
    for mode in [Mode::Train, Mode::Eval] {
        let report = check_layer(&mut model, &x, mode, &opts);
        assert!(report.passes(2e-2), "{mode:?}:\n{report}");
    }
}
