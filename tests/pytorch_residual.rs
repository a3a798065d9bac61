//! A residual CNN against PyTorch 2.15: the weights PyTorch saved load into the same nesting here
//! (every name matching, both ways), and one training-mode forward and backward pass gives
//! PyTorch's output, input gradient, parameter gradients and updated batch-norm statistics.
//!
//! The fixture comes from `tests/fixtures/make_residual_fixture.py` (torch 2.15.0), which also
//! checks the other direction: `--check FILE` loads a file this crate wrote into the PyTorch
//! model with `strict=True`.

mod common;

use backprop::layers::named_params;
use backprop::prelude::*;
use safetensors::SafeTensors;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

/// The model of the fixture script, built the same way.
fn residual_cnn() -> Sequential {
    let body = Sequential::new()
        .add(Conv2d::new(8, 8, 3).padding(1))
        .add(BatchNorm2d::new(8))
        .add(Relu::new())
        .add(Conv2d::new(8, 8, 3).padding(1));
    Sequential::builder(&[3, 8, 8])
        .add(Conv2d::new(3, 8, 3).padding(1))
        .add(Relu::new())
        .add(Residual::new(body))
        .add(Relu::new())
        .add(MaxPool2d::new(2))
        .add(Flatten::new())
        .add(Dense::new(128, 5))
        .build()
        .unwrap()
}

fn tensor(file: &SafeTensors, name: &str) -> Tensor {
    common::fixture_tensor(file, name)
}

fn assert_close(ours: &Tensor, torch: &Tensor, what: &str) {
    common::assert_close_to(ours, torch, 2e-5, what);
}

#[test]
fn residual_cnn_matches_pytorch() {
    let weights = std::fs::read(format!("{DIR}/residual_cnn.weights.safetensors")).unwrap();
    let io_bytes = std::fs::read(format!("{DIR}/residual_cnn.io.safetensors")).unwrap();
    let io = SafeTensors::deserialize(&io_bytes).unwrap();

    let mut model = residual_cnn();
    // Every name PyTorch saved is one of ours and every one of ours was saved (a strict load).
    let ours = model.to_safetensors().unwrap();
    let mut our_names: Vec<String> =
        SafeTensors::deserialize(&ours).unwrap().names().into_iter().map(String::from).collect();
    let mut torch_names: Vec<String> =
        SafeTensors::deserialize(&weights).unwrap().names().into_iter().map(String::from).collect();
    our_names.sort();
    torch_names.sort();
    assert_eq!(our_names, torch_names);
    model.load_safetensors(&weights, "residual_cnn.weights.safetensors").unwrap();
    // For the other direction, by hand: make_residual_fixture.py --check <this file>.
    model
        .save(std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("residual_from_backprop.safetensors"))
        .unwrap();

    let x = tensor(&io, "x");
    let y = model.forward(&x, Pass::TRAIN);
    assert_close(&y, &tensor(&io, "y"), "y");
    model.zero_grad();
    let dx = model.backward_input(&tensor(&io, "r"));
    assert_close(&dx, &tensor(&io, "dx"), "dL/dx");
    for (name, p) in named_params(&model) {
        assert_close(&p.grad, &tensor(&io, &format!("grad.{name}")), &format!("dL/d{name}"));
    }
    for (name, value) in model.state_dict() {
        if name.contains("running") {
            assert_close(&value, &tensor(&io, &format!("after.{name}")), &name);
        }
    }
}
