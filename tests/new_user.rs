//! Tried as a new user would (issue 27): short programs written from the README and the guides
//! alone, each one a thing that went wrong before — training resumed from a checkpoint, NaN in the
//! data, a picture folder split for testing, a load into the wrong architecture, a wrong layer
//! size, an `ndarray` conversion. The thorough versions are in `resume.rs`, `fit_safety.rs`,
//! `splits.rs` and `io.rs`.

use backprop::optim::OptimizerState;
use backprop::prelude::*;
use backprop::train::{Checkpoint, Checkpoints};

fn rings(n: usize, seed: u64) -> Dataset {
    let x = Tensor::rand_uniform(&[n, 2], -2.0, 2.0, seed);
    let labels = x.data().chunks(2).map(|p| ((p[0] * p[0] + p[1] * p[1]).sqrt() as usize).min(2)).collect();
    Dataset::classification(x, labels).unwrap()
}

fn mlp() -> Sequential {
    Sequential::builder(&[2])
        .add(Dense::new(2, 16))
        .add(Relu::new())
        .add(Dropout::new(0.2))
        .add(Dense::new(16, 3))
        .seed(3)
        .build()
        .unwrap()
}

#[test]
fn five_epochs_a_restart_and_five_more_are_ten_epochs() {
    let data = rings(200, 1);
    let (train, val) = data.split_stratified(0.8, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let options = || {
        FitOptions::new()
            .batch_size(20)
            .seed(9)
            .validation(&val)
            .schedule(Schedule::cosine(10, 1e-4).unwrap())
            .verbose(false)
    };
    let loss = CrossEntropyLoss::new();
    let (mut straight, mut adam) = (mlp(), Adam::new(0.02));
    straight.fit(&train, &loss, &mut adam, options().epochs(10)).unwrap();
    let mut adam_state = OptimizerState::default();
    adam.save_state(&mut adam_state);

    // Monday: five epochs, keeping checkpoints.
    mlp()
        .fit(
            &train,
            &loss,
            &mut Adam::new(0.02),
            options().epochs(5).checkpoints(Checkpoints::in_dir(dir.path())),
        )
        .unwrap();
    // Tuesday, another process: the last checkpoint, five more.
    let checkpoint = Checkpoint::load(dir.path().join("last.safetensors")).unwrap();
    let (mut resumed, mut adam) = (mlp(), Adam::new(0.02));
    let history = resumed.fit(&train, &loss, &mut adam, options().epochs(10).resume(&checkpoint)).unwrap();
    assert_eq!(history.epochs.iter().map(|e| e.epoch).collect::<Vec<_>>(), (1..=10).collect::<Vec<_>>());
    assert_eq!(resumed.state_dict(), straight.state_dict(), "the same weights, bit for bit");
    let mut resumed_state = OptimizerState::default();
    adam.save_state(&mut resumed_state);
    assert_eq!(resumed_state, adam_state, "the same Adam moments and step count");
}

#[test]
fn nan_in_the_data_is_bad_data_not_a_learning_rate_problem() {
    let mut data = rings(50, 2);
    data.inputs_mut().data_mut()[2 * 17 + 1] = f32::NAN;
    let mut model = mlp();
    let e = model
        .fit(&data, &CrossEntropyLoss::new(), &mut Adam::new(0.01), FitOptions::new().verbose(false))
        .unwrap_err()
        .to_string();
    assert!(e.contains("sample 17 holds NaN at position [1]"), "{e}");
    assert!(!e.contains("learning rate"), "{e}");
    let e = model.predict_classes(data.inputs(), 64).unwrap_err().to_string();
    assert!(e.contains("predict_classes") && e.contains("sample 17"), "not class 0: {e}");
}

#[test]
fn loading_into_the_wrong_architecture_lists_every_difference() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    mlp().save(&path).unwrap();
    let mut wider = Sequential::builder(&[2])
        .add(Dense::new(2, 32))
        .add(Relu::new())
        .add(Dense::new(32, 3))
        .add(Softmax::new())
        .add(Dense::new(3, 3))
        .build()
        .unwrap();
    let before = wider.state_dict();
    let e = wider.load(&path).unwrap_err().to_string();
    for part in [
        "4 missing tensors: \"2.bias\" (layer 2, Dense(32→3)), \"2.weight\" (layer 2, Dense(32→3)), \"4.bias\"",
        "2 unexpected tensors: \"3.bias\", \"3.weight\"",
        "tensor \"0.weight\" has shape [16, 2], but the model (layer 0, Dense(2→32)) needs [32, 2]",
        "tensor \"0.bias\" has shape [16]",
    ] {
        assert!(e.contains(part), "{part:?} missing from: {e}");
    }
    assert_eq!(wider.state_dict(), before, "a refused load changes nothing");
}

#[test]
fn a_wrong_layer_size_names_both_shapes_the_same_way() {
    let e = Sequential::builder(&[8, 13, 13])
        .add(Flatten::new())
        .add(Dense::new(1000, 10))
        .build()
        .unwrap_err()
        .to_string();
    assert!(e.contains("Dense(1000→10) expects an input of shape [N, 1000]"), "{e}");
    assert!(e.contains("got [N, 1352]"), "the batch axis is N on both sides: {e}");
}

#[cfg(feature = "ndarray")]
#[test]
fn ndarray_through_the_re_export_always_matches() {
    use backprop::ndarray::{Array2, array};
    let a: Array2<f32> = array![[1., 2.], [3., 4.]];
    let t = Tensor::from(a.clone());
    assert_eq!(t.shape(), &[2, 2]);
    let back: Array2<f32> = t.into_array().unwrap();
    assert_eq!(back, a);
}

#[cfg(feature = "image")]
#[test]
fn a_picture_folder_split_for_testing_holds_every_class() {
    use backprop::data::image_folder::{ColorMode, load_image_folder, tensor_to_image};
    // Three classes of 12×12 pictures: a bright row near the top, the middle or the bottom.
    let dir = tempfile::tempdir().unwrap();
    for (c, name) in ["bottom", "middle", "top"].iter().enumerate() {
        let folder = dir.path().join(name);
        std::fs::create_dir(&folder).unwrap();
        for k in 0..20 {
            let row = [9, 5, 2][c] + k % 2;
            let t =
                Tensor::from_fn(
                    &[1, 12, 12],
                    |i| if i[1] == row { 0.9 } else { 0.05 * ((i[2] + k) % 3) as f32 },
                );
            tensor_to_image(&t).unwrap().save(folder.join(format!("{k:02}.png"))).unwrap();
        }
    }
    let (data, names) = load_image_folder(dir.path(), (12, 12), ColorMode::Gray).unwrap();
    assert_eq!(names, ["bottom", "middle", "top"]);
    assert_eq!(data.inputs().shape(), &[60, 1, 12, 12], "(height, width), one grey channel");
    // The loader returns the pictures class by class: the last quarter is one class.
    let (_, tail) = data.split_at(45);
    assert!(tail.labels().unwrap().iter().all(|&l| l == 2));
    let (train, test) = data.split_stratified(0.75, 5).unwrap();
    for c in 0..3 {
        assert_eq!(test.labels().unwrap().iter().filter(|&&l| l == c).count(), 5, "class {c}");
    }
    let mut model = Sequential::builder(&[1, 12, 12])
        .add(Conv2d::new(1, 4, 3).padding(1))
        .add(Relu::new())
        .add(MaxPool2d::new(2))
        .add(Flatten::new())
        .add(Dense::new(4 * 6 * 6, 3))
        .seed(1)
        .build()
        .unwrap();
    let options = FitOptions::new().epochs(30).batch_size(9).seed(2).verbose(false);
    model.fit(&train, &CrossEntropyLoss::new(), &mut Adam::new(0.01), options).unwrap();
    let accuracy = model.evaluate(&test, &CrossEntropyLoss::new(), 64).unwrap().accuracy.unwrap();
    assert!(accuracy >= 0.9, "{accuracy}");
}
