//! Save/load as safetensors: round trips, architecture mismatches, corrupt files.

mod common;

use backprop::prelude::*;
use std::path::PathBuf;

fn tmp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("backprop-io-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn cnn(channels: usize) -> Sequential {
    Sequential::builder(&[1, 8, 8])
        .add(Conv2d::new(1, channels, 3).padding(1).seed(3))
        .add(BatchNorm2d::new(channels))
        .add(Relu::new())
        .add(MaxPool2d::new(2))
        .add(Flatten::new())
        .add(Dense::new(channels * 16, 4).seed(4))
        .build()
        .unwrap()
}

#[test]
fn save_load_gives_identical_predictions() {
    let dir = tmp_dir("roundtrip");
    let data = common::lines(128, 1);
    let mut a = cnn(4);
    a.fit(&data, &CrossEntropyLoss::new(), &mut Adam::new(0.01), FitOptions::new().epochs(2).verbose(false))
        .unwrap();
    let path = dir.join("cnn.safetensors");
    a.save(&path).unwrap();
    let mut b = cnn(4);
    assert_ne!(b.predict(data.inputs(), 32).unwrap(), a.predict(data.inputs(), 32).unwrap());
    b.load(&path).unwrap();
    let (pa, pb) = (a.predict(data.inputs(), 32).unwrap(), b.predict(data.inputs(), 32).unwrap());
    assert!(
        pa.data().iter().zip(pb.data()).all(|(x, y)| x.to_bits() == y.to_bits()),
        "predictions differ after load"
    );
    // Running statistics and the batch counter travel too.
    assert_eq!(a.state_dict(), b.state_dict());
    let count = |m: &Sequential| m.layer_as::<BatchNorm2d>(1).unwrap().num_batches_tracked();
    assert_eq!(count(&b), count(&a));
    assert!(count(&a) > 0);
    // No temporary file is left behind.
    let names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, vec![std::ffi::OsString::from("cnn.safetensors")]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn names_follow_pytorch_state_dict() {
    let bytes = cnn(2).to_safetensors().unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names = file.names();
    names.sort();
    assert_eq!(
        names,
        [
            "0.bias",
            "0.weight",
            "1.bias",
            "1.num_batches_tracked",
            "1.running_mean",
            "1.running_var",
            "1.weight",
            "5.bias",
            "5.weight"
        ]
    );
    let t = file.tensor("0.weight").unwrap();
    assert_eq!(t.shape(), &[2, 1, 3, 3]);
    assert_eq!(t.dtype(), safetensors::Dtype::F32);
    assert_eq!(file.tensor("1.num_batches_tracked").unwrap().dtype(), safetensors::Dtype::I64);
}

#[test]
fn loading_into_another_architecture_names_the_mismatch() {
    let bytes = cnn(4).to_safetensors().unwrap();
    let mut other = cnn(8);
    let before = other.state_dict();
    let err = other.load_safetensors(&bytes, "w.safetensors").unwrap_err().to_string();
    assert!(
        err.contains("w.safetensors")
            && err.contains("\"0.bias\"")
            && err.contains("[4]")
            && err.contains("[8]"),
        "{err}"
    );
    assert_eq!(other.state_dict(), before, "a failed load changes nothing");
    // A model with fewer layers: an unexpected tensor.
    let mut small = Sequential::builder(&[1, 8, 8]).add(Conv2d::new(1, 4, 3).padding(1)).build().unwrap();
    let err = small.load_safetensors(&bytes, "w.safetensors").unwrap_err().to_string();
    assert!(err.contains("unexpected tensor"), "{err}");
    // A model with more parameters than the file: a missing tensor.
    let file_small = small.to_safetensors().unwrap();
    let err = cnn(4).load_safetensors(&file_small, "s.safetensors").unwrap_err().to_string();
    assert!(err.contains("missing tensor") && err.contains("BatchNorm2d"), "{err}");
}

#[test]
fn corrupt_files_are_errors_not_panics() {
    let dir = tmp_dir("corrupt");
    let good = cnn(4).to_safetensors().unwrap();
    let mut model = cnn(4);
    let before = model.state_dict();
    // Every truncation of a good file.
    for cut in (0..good.len()).step_by(97).chain([good.len() - 1]) {
        let err = model.load_safetensors(&good[..cut], "cut.safetensors");
        assert!(err.is_err(), "truncated at {cut} of {} loaded", good.len());
    }
    // Random bytes, and a header that claims a huge length.
    let noise =
        Tensor::rand_uniform(&[4096], 0.0, 256.0, 1).data().iter().map(|&v| v as u8).collect::<Vec<u8>>();
    assert!(model.load_safetensors(&noise, "noise").is_err());
    let mut lying = good.clone();
    lying[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(model.load_safetensors(&lying, "lying").is_err());
    // A wrong dtype.
    let parsed = safetensors::SafeTensors::deserialize(&good).unwrap();
    let zeros = [0u8; 288];
    let entries = parsed.tensors().into_iter().map(|(name, view)| {
        let view = if name == "0.weight" {
            safetensors::tensor::TensorView::new(safetensors::Dtype::I64, vec![4, 1, 3, 3], &zeros).unwrap()
        } else {
            view
        };
        (name, view)
    });
    let i64_file = safetensors::serialize(entries, None).unwrap();
    let err = model.load_safetensors(&i64_file, "i64").unwrap_err().to_string();
    assert!(err.contains("I64") && err.contains("0.weight") && err.contains("expected a float"), "{err}");
    assert_eq!(model.state_dict(), before);
    // Missing files are I/O errors naming the path.
    let err = model.load(dir.join("nope.safetensors")).unwrap_err().to_string();
    assert!(err.contains("nope.safetensors"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `cnn(4)` with every parameter set to `v` (so that a load visibly changes it).
fn scrambled(v: f32) -> Sequential {
    let mut m = cnn(4);
    for (_, p) in backprop::layers::named_params_mut(&mut m) {
        p.value.fill(v);
    }
    m
}

#[test]
fn renaming_non_strict_loading_and_named_tensors() {
    use backprop::io::LoadOptions;
    let source = cnn(4);
    let state = source.state_dict();
    // In-memory named tensors, strict: the same as loading a file.
    let mut copy = scrambled(0.5);
    let report = copy.load_tensors(&state, &LoadOptions::new()).unwrap();
    assert_eq!(copy.state_dict(), state);
    assert_eq!(report.loaded.len(), state.len(), "every entry, the batch-norm counter included");
    assert!(report.missing.is_empty() && report.unexpected.is_empty());

    // Names with a prefix (as DistributedDataParallel writes them) and an extra entry.
    let mut prefixed: Vec<(String, Tensor)> =
        state.iter().map(|(k, v)| (format!("module.{k}"), v.clone())).collect();
    prefixed.push(("module.extra_head.weight".into(), Tensor::zeros(&[2, 2])));
    let mut strict = scrambled(0.5);
    let before = strict.state_dict();
    let e = strict.load_tensors(&prefixed, &LoadOptions::new()).unwrap_err().to_string();
    // Every problem in one message, as PyTorch's load_state_dict lists them.
    assert!(e.contains(&format!("{} unexpected tensors: \"module.", prefixed.len())), "{e}");
    assert!(e.contains(&format!("{} missing tensors", state.len())), "{e}");
    assert_eq!(strict.state_dict(), before, "a refused load changes nothing");
    let strip = |k: &str| Some(k.strip_prefix("module.").unwrap_or(k).to_string());
    let e = strict.load_tensors(&prefixed, &LoadOptions::new().rename(&strip)).unwrap_err().to_string();
    assert!(e.contains("extra_head.weight"), "still strict about the extra entry: {e}");
    let report = strict.load_tensors(&prefixed, &LoadOptions::new().rename(&strip).non_strict()).unwrap();
    assert_eq!(strict.state_dict(), state);
    assert_eq!(report.unexpected, ["module.extra_head.weight"]);

    // Non-strict into a model with a part the source lacks: that part stays as it was.
    let partial: Vec<(String, Tensor)> = state.iter().filter(|(k, _)| k.starts_with("0.")).cloned().collect();
    let mut target = scrambled(0.25);
    let untouched = target.state_dict();
    let report = target.load_tensors(&partial, &LoadOptions::new().non_strict()).unwrap();
    assert!(report.loaded.iter().all(|k| k.starts_with("0.")) && !report.missing.is_empty());
    for (k, v) in target.state_dict() {
        let expected = if k.starts_with("0.") { &state } else { &untouched };
        assert_eq!(&v, &expected.iter().find(|(n, _)| *n == k).unwrap().1, "{k}");
    }
    // Shapes must match even when not strict, and the message names both.
    let mut wrong = cnn(8);
    let e = wrong.load_tensors(&state, &LoadOptions::new().non_strict()).unwrap_err().to_string();
    assert!(e.contains("shape") && e.contains("needs"), "{e}");
    // Two stored names may not land on one slot.
    let twice = vec![state[0].clone(), (format!("x.{}", state[0].0), state[0].1.clone())];
    let strip_x = |k: &str| Some(k.strip_prefix("x.").unwrap_or(k).to_string());
    let e = cnn(4).load_tensors(&twice, &LoadOptions::new().rename(&strip_x).non_strict()).unwrap_err();
    assert!(e.to_string().contains("two stored tensors"), "{e}");
}

/// A weight file with a NaN (a damaged float) is refused, naming the tensor and the element,
/// and the model keeps its weights; the same for named tensors from the PyTorch bridge.
#[test]
fn weights_holding_nan_or_infinity_are_refused_and_change_nothing() {
    let mut model = cnn(2);
    let mut bytes = model.to_safetensors().unwrap();
    let before = model.state_dict();
    // Where the third value of "0.weight" is stored.
    let w = &before.iter().find(|(name, _)| name == "0.weight").unwrap().1;
    let third = w.data()[2].to_le_bytes();
    let at = bytes.windows(4).position(|b| b == third).unwrap();
    bytes[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    let err = model.load_safetensors(&bytes, "damaged.safetensors").unwrap_err().to_string();
    assert!(
        err.contains("\"0.weight\" holds NaN at element 2") && err.contains("damaged.safetensors"),
        "{err}"
    );
    assert_eq!(model.state_dict(), before);

    let mut named = before.clone();
    let i = named.iter().position(|(name, _)| name == "5.weight").unwrap();
    named[i].1.data_mut()[7] = f32::NEG_INFINITY;
    let err = model.load_tensors(&named, &LoadOptions::new()).unwrap_err().to_string();
    assert!(err.contains("\"5.weight\" holds -inf at element 7"), "{err}");
    assert_eq!(model.state_dict(), before);
}

/// Two layers visited under one name (a container that forgets [`child_name`]'s prefix): saving
/// would keep one, loading would copy one into both, and an optimizer would mix their moments.
#[test]
fn state_names_shared_by_two_pieces_are_refused_by_save_load_and_training() {
    struct Stack(Vec<Dense>);
    impl Visit for Stack {
        fn visit<'a>(&'a self, f: &mut dyn FnMut(&str, State<'a>)) {
            self.0.iter().for_each(|l| l.visit(f)); // no prefix: both are "weight", "bias"
        }
        fn visit_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, StateMut<'a>)) {
            self.0.iter_mut().for_each(|l| l.visit_mut(f));
        }
    }
    impl Layer for Stack {
        fn describe(&self) -> String {
            "Stack".into()
        }
        fn output_shape(&self, input: &[usize]) -> backprop::Result<Vec<usize>> {
            Ok(input.to_vec())
        }
        fn forward(&mut self, x: &Tensor, pass: Pass<'_>) -> Tensor {
            self.0.iter_mut().fold(x.clone(), |x, l| l.forward(&x, pass))
        }
        fn backward(&mut self, g: &Tensor, input_grad: InputGrad) -> Option<Tensor> {
            let mut g = g.clone();
            for l in self.0.iter_mut().rev() {
                g = l.backward(&g, InputGrad::Needed).unwrap();
            }
            (input_grad == InputGrad::Needed).then_some(g)
        }
    }
    let mut stack = Stack(vec![Dense::new(2, 2).seed(1), Dense::new(2, 2).seed(2)]);
    let shared = "two pieces of the model's state are both named \"weight\"";
    let err = backprop::io::to_safetensors(&stack, &[]).unwrap_err().to_string();
    assert!(err.contains("save: ") && err.contains(shared), "{err}");
    let file = cnn(2).to_safetensors().unwrap();
    let err = backprop::io::load_safetensors(&mut stack, &file, "x.safetensors").unwrap_err().to_string();
    assert!(err.contains("load: ") && err.contains(shared), "{err}");
    let x = Tensor::ones(&[3, 2]);
    let err = backprop::train::train_step(
        &mut stack,
        &x,
        Target::Classes(&[0, 1, 0]),
        &CrossEntropyLoss::new(),
        &mut Adam::new(0.1),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("train_step: ") && err.contains(shared), "{err}");
}

/// Weights PyTorch saved in half, bfloat16 and double precision load as the `f32` values PyTorch's
/// own `.float()` gives (the fixture's `expected`; `tests/fixtures/make_dtype_fixture.py`, PyTorch
/// 2.15.0, safetensors 0.8.0), the count too; a double past f32's range is refused by name.
#[test]
fn half_bfloat16_and_double_weights_load_as_pytorch_converts_them() {
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let expected = std::fs::read(fixtures.join("dtypes.expected.safetensors")).unwrap();
    let expected = safetensors::SafeTensors::deserialize(&expected).unwrap();
    let build = || Sequential::builder(&[3]).add(Dense::new(3, 4)).add(BatchNorm1d::new(4)).build().unwrap();
    for dtype in ["f16", "bf16", "f64"] {
        let mut model = build();
        model.load(fixtures.join(format!("dtypes.{dtype}.safetensors"))).unwrap();
        let mut checked = 0;
        model.visit(&mut |name, state| {
            let want = expected.tensor(&format!("{dtype}.{name}")).unwrap();
            match state {
                State::Param(p) => assert_eq!(p.value.data(), floats(want.data()), "{dtype} {name}"),
                State::Buffer(b) => assert_eq!(b.data(), floats(want.data()), "{dtype} {name}"),
                State::Counter(n) => {
                    assert_eq!(n as i64, i64::from_le_bytes(want.data().try_into().unwrap()))
                }
                _ => return,
            }
            checked += 1;
        });
        assert_eq!(checked, 7, "{dtype}: every tensor compared");
    }
    // A double beyond f32's range is refused by name, the model unchanged.
    let big = 1e300f64.to_le_bytes().repeat(4);
    let mut model = build();
    let before = model.state_dict();
    let f32_file = model.to_safetensors().unwrap();
    let parsed = safetensors::SafeTensors::deserialize(&f32_file).unwrap();
    let entries = parsed.tensors().into_iter().map(|(name, view)| {
        let view = if name == "0.bias" {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F64, vec![4], &big).unwrap()
        } else {
            view
        };
        (name, view)
    });
    let file = safetensors::serialize(entries, None).unwrap();
    let err = model.load_safetensors(&file, "big").unwrap_err().to_string();
    assert!(err.contains("0.bias") && err.contains("range of f32"), "{err}");
    assert_eq!(model.state_dict(), before);
}

fn floats(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
}

/// Saving through a link writes the file the link names; the link stays a link.
#[cfg(unix)]
#[test]
fn saving_through_a_link_updates_its_target() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("run7")).unwrap();
    let target = dir.path().join("run7").join("model.safetensors");
    let build = |seed| Sequential::builder(&[3]).add(Dense::new(3, 2).seed(seed)).build().unwrap();
    build(1).save(&target).unwrap();
    let link = dir.path().join("latest.safetensors");
    std::os::unix::fs::symlink("run7/model.safetensors", &link).unwrap();
    let newer = build(2);
    newer.save(&link).unwrap();
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    let mut loaded = build(3);
    loaded.load(&target).unwrap();
    assert_eq!(loaded.state_dict(), newer.state_dict());
}
