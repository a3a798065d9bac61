//! Hostile values through every `Result` API (the second hardening round, issue 23): an
//! embedding's ids out of range, negative, NaN, infinite or fractional are `Err`s — never panics —
//! from `predict`, `predict_classes`, `evaluate`, `input_gradient`, `train_step`, `fit` and
//! private training, and the model is left as it was.

mod common;

use backprop::prelude::*;
use backprop::privacy::{DpOptions, fit_private};

fn model() -> Sequential {
    Sequential::builder(&[3])
        .add(Embedding::new(5, 2))
        .add(Flatten::new())
        .add(Dense::new(6, 2))
        .build()
        .unwrap()
}

#[test]
fn bad_ids_are_errors_from_every_result_api() {
    for bad in [5.0, 7.0, -1.0, f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1.5, 1e30] {
        let x = Tensor::from_vec(&[2, 3], vec![0.0, 1.0, 2.0, 3.0, bad, 4.0]).unwrap();
        let mut m = model();
        let before = m.state_dict();
        let expect = |what: &str, e: backprop::Error| {
            let msg = e.to_string();
            assert!(
                msg.contains("Embedding(5, 2)") && msg.contains("position 4"),
                "{what} with id {bad}: {msg}"
            );
        };
        expect("predict", m.predict(&x, 2).unwrap_err());
        expect("predict_classes", m.predict_classes(&x, 2).unwrap_err());
        expect("input_gradient", m.input_gradient(&x, &[0, 1]).unwrap_err());
        expect(
            "train_step",
            m.train_step(&x, (&vec![0, 1]).into(), &CrossEntropyLoss::new(), &mut Sgd::new(0.1)).unwrap_err(),
        );
        let data = Dataset::classification(x.clone(), vec![0, 1]).unwrap();
        expect("evaluate", m.evaluate(&data, &CrossEntropyLoss::new(), 2).unwrap_err());
        let fit =
            m.fit(&data, &CrossEntropyLoss::new(), &mut Sgd::new(0.1), FitOptions::new().verbose(false));
        expect("fit", fit.unwrap_err());
        let dp =
            DpOptions { epochs: 1, sample_rate: 0.5, clip: 1.0, noise_multiplier: 1.0, delta: 1e-5, seed: 1 };
        expect(
            "fit_private",
            fit_private(&mut m, &data, &CrossEntropyLoss::new(), &mut Sgd::new(0.1), &dp).unwrap_err(),
        );
        assert_eq!(m.state_dict(), before, "id {bad}: nothing changed");
    }
}

fn blobs() -> Dataset {
    let x = Tensor::randn(&[16, 3], 0.0, 1.0, 1);
    Dataset::regression(x.clone(), x).unwrap()
}

fn mlp() -> Sequential {
    Sequential::builder(&[3]).add(Dense::new(3, 3)).build().unwrap()
}

/// Settings that only fail together are `fit` errors before anything runs; a schedule that runs
/// away is an error at the epoch it does, with the optimizer's rate put back.
#[test]
fn optimizer_and_schedule_settings_fail_cleanly() {
    let data = blobs();
    let mut m = mlp();
    let before = m.state_dict();
    let quiet = || FitOptions::new().epochs(3).verbose(false);
    let e = m.fit(&data, &MseLoss::new(), &mut Sgd::new(0.1).nesterov(), quiet()).unwrap_err().to_string();
    assert!(e.contains("Nesterov") && e.contains("momentum 0"), "{e}");
    let e = m
        .fit(&data, &MseLoss::new(), &mut AdamW::new(10.0).weight_decay(0.5), quiet())
        .unwrap_err()
        .to_string();
    assert!(e.contains("AdamW") && e.contains("≥ 1"), "{e}");
    assert_eq!(m.state_dict(), before, "nothing ran");
    let mut sgd = Sgd::new(0.01);
    let wild = Schedule::exponential(1e30).unwrap();
    let e = m.fit(&data, &MseLoss::new(), &mut sgd, quiet().schedule(wild)).unwrap_err().to_string();
    assert!(e.contains("schedule") && e.contains("epoch"), "{e}");
    assert_eq!(sgd.learning_rate(), 0.01, "the optimizer's rate is put back");
}

#[test]
#[should_panic(expected = "SGD: momentum must be in [0, 1], got 1000000000000000000000000000000")]
fn sgd_momentum_out_of_range_is_refused_when_set() {
    let _ = Sgd::new(0.1).momentum(1e30);
}

#[test]
#[should_panic(expected = "SGD: dampening must be in [0, 1], got 5")]
fn sgd_dampening_out_of_range_is_refused_when_set() {
    let _ = Sgd::new(0.1).dampening(5.0);
}

#[test]
#[should_panic(expected = "Adam: eps must be a finite number > 0, got 0")]
fn adam_eps_zero_is_refused_when_set() {
    let _ = Adam::new(0.1).eps(0.0);
}

#[test]
#[should_panic(expected = "AdamW: weight decay must be in [0, 1]")]
fn adamw_huge_weight_decay_is_refused_when_set() {
    let _ = AdamW::new(0.1).weight_decay(1e30);
}

/// Knowledge-tracing files and the simulator: sizes come from what the file holds, within
/// documented limits, never from a number in it.
#[test]
fn knowledge_tracing_ids_sizes_and_bom() {
    use backprop::data::knowledge::{MAX_ITEM_ID, SimulationOptions, read_csv, read_three_line, simulate};
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    for id in ["1000000000", "18446744073709551614", "18446744073709551615", "99999999999999999999999"] {
        let p = write("big.txt", &format!("2\n1,{id}\n0,1\n"));
        let e = read_three_line(&p).unwrap_err().to_string();
        assert!(
            e.contains("line 2")
                && (e.contains(&MAX_ITEM_ID.to_string()) || e.contains("not a non-negative integer")),
            "{id}: {e}"
        );
    }
    let ok = read_three_line(write("ok.txt", &format!("2\n1,{MAX_ITEM_ID}\n0,1\n"))).unwrap();
    assert_eq!(ok.items, MAX_ITEM_ID + 1);
    // A byte-order mark before a header-less CSV: the first student is kept.
    let h = read_csv(write("bom.csv", "\u{feff}1,0,1\n0,0,1\n")).unwrap();
    assert_eq!(h.students.len(), 2);
    assert!(h.students[0].correct[0]);
    for (students, items) in
        [(10_000_000_000usize, 5), (5, 10_000_000_000), (usize::MAX, 2), (100_000, 100_000)]
    {
        let o = SimulationOptions { students, items, ..SimulationOptions::default() };
        assert!(simulate(&o).is_err(), "{students} × {items}");
    }
}

/// Containers nested deeper than `MAX_NESTING` are refused when they are put together (20,000
/// levels overflowed the stack); up to the limit they work.
#[test]
fn deep_nesting_is_refused_not_a_stack_overflow() {
    use backprop::layers::sequential::MAX_NESTING;
    let mut chain = Sequential::new().add(Dense::new(2, 2));
    for _ in 1..MAX_NESTING {
        chain = Sequential::new().add(chain);
    }
    let mut model = Sequential::builder(&[2]).add(Relu::new()).build().unwrap();
    model.replace(0, Relu::new()).unwrap();
    let e = Sequential::builder(&[2]).add(chain).build().unwrap_err().to_string();
    assert!(e.contains("nested") && e.contains(&MAX_NESTING.to_string()), "{e}");
    let mut ok = Sequential::new().add(Dense::new(2, 2));
    for _ in 2..MAX_NESTING {
        ok = Sequential::new().add(ok);
    }
    let mut model = Sequential::builder(&[2]).add(ok).build().unwrap();
    assert_eq!(model.predict(&Tensor::ones(&[1, 2]), 1).unwrap().shape(), &[1, 2]);
    let deeper = std::panic::catch_unwind(|| {
        let mut c = Sequential::new().add(Dense::new(2, 2));
        for _ in 0..MAX_NESTING {
            c = Sequential::new().add(c);
        }
    });
    assert!(deeper.is_err(), "Sequential::add refuses the level past the limit");
    // Swapped in place, past what `add` sees (each wrapper's kept depth stays 2): 100,000 levels
    // through `layer_as_mut`, a Residual's body among them. `build` measures the depth itself and
    // refuses; dropping the model does not overflow the stack either.
    let mut m = Sequential::new().add(Dense::new(2, 2));
    for level in 0..100_000 {
        let mut wrapper = if level % 1000 == 0 {
            Sequential::new().add(Residual::new(Sequential::new()))
        } else {
            Sequential::new().add(Sequential::new())
        };
        match wrapper.layer_as_mut::<Sequential>(0) {
            Some(slot) => *slot = m,
            None => *wrapper.layer_as_mut::<Residual>(0).unwrap().body_mut() = m,
        }
        m = wrapper;
    }
    let e = Sequential::builder(&[2]).add(m).build().unwrap_err().to_string();
    assert!(e.contains("nested") && e.contains(&MAX_NESTING.to_string()), "{e}");
}

/// Gradient checks whose settings could not tell a right gradient from a wrong one are refused
/// (an infinite `atol` had made every error 0, `max_entries: Some(0)` had compared nothing and
/// passed); a report that compared nothing does not pass, and a NaN is the worst error.
#[test]
fn gradient_checks_that_could_not_fail_are_refused() {
    use backprop::gradcheck::{Options, check_layer, check_loss, check_model};
    let pred = Tensor::from_vec(&[1, 3], vec![0.1, 0.2, 0.3]).unwrap();
    let target = Tensor::zeros(&[1, 3]);
    for (bad_options, want) in [
        (Options { atol: f32::INFINITY, ..Options::default() }, "atol"),
        (Options { atol: 0.0, ..Options::default() }, "atol"),
        (Options { eps: 0.0, ..Options::default() }, "eps"),
        (Options { eps: f32::NAN, ..Options::default() }, "eps"),
        (Options { max_entries: Some(0), ..Options::default() }, "max_entries"),
    ] {
        assert!(bad_options.check().unwrap_err().to_string().contains(want));
        let e = check_loss(&MseLoss::new(), &pred, Target::Values(&target), &bad_options).unwrap_err();
        assert!(e.to_string().contains(want), "{e}");
        let mut dense = Dense::new(3, 2);
        let e = check_model(
            &mut dense,
            &backprop::model::Inputs::single(pred.clone()),
            Mode::Train,
            &bad_options,
        );
        assert!(e.unwrap_err().to_string().contains(want));
        let m = common::panic_message(|| {
            drop(check_layer(&mut Dense::new(3, 2), &pred, Mode::Train, &bad_options))
        });
        assert!(m.contains(want), "{m}");
    }
    let nothing = backprop::gradcheck::Report { tensors: vec![] };
    assert!(!nothing.passes(1.0), "a report that compared nothing");
}

/// Reductions and comparisons do not look past a NaN: `max_abs_diff` is NaN (a reference
/// comparison must not pass on an output that is not a number), `max_axis` NaN, `argmax_axis`
/// the first NaN wherever it stands (as PyTorch's), and `predict_classes` / `predict_proba`
/// refuse outputs that are not finite, naming the sample.
#[test]
fn nan_is_not_skipped_by_reductions_or_predictions() {
    let a = Tensor::from_vec(&[2, 3], vec![1.0, f32::NAN, 2.0, 3.0, 1.0, 2.0]).unwrap();
    assert!(a.max_abs_diff(&Tensor::zeros(&[2, 3])).is_nan());
    assert!(a.max_abs_diff(&a).is_nan(), "a NaN is not equal to itself");
    let m = a.max_axis(1);
    assert!(m.data()[0].is_nan() && m.data()[1] == 3.0, "{m:?}");
    assert_eq!(a.argmax_axis(1), vec![1, 0]);
    let first = Tensor::from_vec(&[1, 3], vec![f32::NAN, 1.0, 2.0]).unwrap();
    assert_eq!(first.argmax_axis(1), vec![0]);
    let w = Tensor::from_vec(&[2, 2], vec![1.0, f32::NAN, 0.0, 1.0]).unwrap();
    let mut model =
        Sequential::builder(&[2]).add(Dense::new(2, 2).no_bias().with_weights(w, None)).build().unwrap();
    let x = Tensor::from_vec(&[2, 2], vec![0.0, 0.0, 1.0, 1.0]).unwrap();
    for e in [model.predict_classes(&x, 2).unwrap_err(), model.predict_proba(&x, 2).unwrap_err()] {
        assert!(e.to_string().contains("sample 0") && e.to_string().contains("NaN"), "{e}");
    }
}

/// Tensor growth that cannot be allocated is a panic naming the size (not an abort), with the
/// tensor left as it was; an index out of range leaves the destination as it was too; settings
/// no distribution has are refused.
#[test]
fn tensor_growth_and_draws_fail_cleanly() {
    let mut t = Tensor::ones(&[2, 3]);
    let m = common::panic_message(|| t.clone().resize_zeroed(&[1 << 40, 1 << 20]));
    assert!(m.contains("cannot allocate") || m.contains("more than"), "{m}");
    let huge = Tensor::zeros(&[2, 1 << 20]);
    let m = common::panic_message(|| huge.select_outer_into(&vec![0; 1 << 22], &mut Tensor::default()));
    assert!(m.contains("cannot allocate") || m.contains("more than"), "{m}");
    let before = t.clone();
    let m = common::panic_message(|| Tensor::ones(&[2, 3]).select_outer_into(&[0, 5], &mut t));
    assert!(m.contains("index 5 out of range"), "{m}");
    assert_eq!(t, before, "the destination untouched");
    for (mean, std) in [(0.0, -1.0), (f32::NAN, 1.0), (0.0, f32::INFINITY)] {
        let m = common::panic_message(|| drop(Tensor::randn(&[2], mean, std, 0)));
        assert!(m.contains("Tensor::randn"), "{m}");
    }
    let m = common::panic_message(|| {
        drop(backprop::tensor::init::Init::Constant(f32::NAN).tensor(&[2], &mut backprop::tensor::rng(0)))
    });
    assert!(m.contains("Init::Constant"), "{m}");
    // Fans of a kernel whose size overflows usize (no weights: no input channels): no overflow
    // panic in a build with overflow checks; the model build then refuses the layer.
    let conv = Conv2d::new(0, 4, 1 << 32);
    assert!(Sequential::builder(&[0, 5, 5]).add(conv).build().is_err());
}

/// A layer whose forward pass disagrees with its own `output_shape` is an `Err` from `predict`
/// naming both shapes (its rows had been copied one sample off, the rest left zero, and `Ok`).
#[test]
fn a_layer_that_breaks_its_output_shape_is_an_error_from_predict() {
    use backprop::layers::{InputGrad, Pass, Visit};
    struct Narrower;
    impl Layer for Narrower {
        fn describe(&self) -> String {
            "Narrower".into()
        }
        fn output_shape(&self, input: &[usize]) -> backprop::Result<Vec<usize>> {
            Ok(vec![input[0], 3])
        }
        fn forward(&mut self, x: &Tensor, _: Pass<'_>) -> Tensor {
            Tensor::ones(&[x.dim(0), 2])
        }
        fn backward(&mut self, g: &Tensor, _: InputGrad) -> Option<Tensor> {
            Some(g.clone())
        }
    }
    impl Visit for Narrower {}
    let mut model = Sequential::builder(&[4]).add(Narrower).build().unwrap();
    let e = model.predict(&Tensor::zeros(&[5, 4]), 2).unwrap_err().to_string();
    assert!(e.contains("[2, 2]") && e.contains("[5, 3]"), "{e}");
}

/// An empty data set has no loss to report (evaluate had said 0, a perfect model: the tiny
/// language model's held-out loss on a short text); an attention layer too wide to hold is a
/// panic naming the size, not an overflow.
#[test]
fn nothing_to_evaluate_and_attention_too_wide() {
    let mut model = Sequential::builder(&[2]).add(Dense::new(2, 3)).build().unwrap();
    let empty = Dataset::classification(Tensor::zeros(&[0, 2]), vec![]).unwrap();
    let e = model.evaluate(&empty, &CrossEntropyLoss::new(), 8).unwrap_err().to_string();
    assert!(e.contains("empty"), "{e}");
    let m = common::panic_message(|| drop(MultiHeadAttention::new(1 << 62, 1)));
    assert!(m.contains("more values than memory holds"), "{m}");
}

/// Empty tensors with huge axes: reductions and softmax return at once (they had walked 2⁶⁰
/// empty rows); a softmax split that does not match its slices is a panic saying so, not a
/// partly written output.
#[test]
fn empty_tensors_with_huge_axes_and_mismatched_splits() {
    use backprop::tensor::math::{log_softmax_into, softmax_into};
    let empty = Tensor::zeros(&[1 << 60, 0]);
    assert_eq!(empty.sum_axis(0).shape(), &[0]);
    assert_eq!(Tensor::zeros(&[1 << 60, 1, 0]).argmax_axis(1), Vec::<usize>::new());
    softmax_into(&[], (1 << 30, 0, 1 << 30), &mut []);
    let (x, mut y) = ([1.0f32; 4], [0.0f32; 4]);
    let m = common::panic_message(|| softmax_into(&x, (1, 2, 1), &mut y));
    assert!(m.contains("softmax_into") && m.contains("(1, 2, 1)"), "{m}");
    let m = common::panic_message(|| log_softmax_into(&x, (2, 2, 1), &mut y[..3]));
    assert!(m.contains("log_softmax_into"), "{m}");
}

/// A layer too large to allocate is a panic that says so (documented on the constructors), not
/// an abort of the process.
#[test]
fn an_impossible_layer_is_a_panic_with_the_size_not_an_abort() {
    let e = std::panic::catch_unwind(|| Embedding::new(1 << 40, 1)).err().expect("a panic");
    let msg = e.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("cannot allocate") && msg.contains("1099511627776"), "{msg}");
}

/// The remaining `Result` APIs that take outside data: an empty or odd folder, a file that is not
/// safetensors, a tensor that cannot be normalised — each an `Err`.
#[test]
fn folders_metadata_and_normalisation_refuse_cleanly() {
    use backprop::data::idx::find_mnist_files;
    use backprop::data::transforms::Normalizer;
    let dir = tempfile::tempdir().unwrap();
    assert!(find_mnist_files(dir.path()).is_err());
    assert!(find_mnist_files(dir.path().join("missing")).is_err());
    let junk = dir.path().join("junk.safetensors");
    std::fs::write(&junk, b"\xff\xff\xff\xff\xff\xff\xff\xffnot json").unwrap();
    assert!(backprop::io::read_metadata(&junk).is_err());
    assert!(Normalizer::fit(&Tensor::zeros(&[3])).is_err());
    // A channel of tiny scale keeps its own spread (it had been left unscaled below 10⁻⁶): its
    // values come out of order 1; a constant channel gets std 1.
    let tiny = Tensor::from_vec(&[2, 2, 1], vec![1e-7, 5.0, 2e-7, 5.0]).unwrap();
    let n = Normalizer::fit(&tiny).unwrap();
    assert!((n.std[0] - 5e-8).abs() < 1e-12 && n.std[1] == 1.0, "{:?}", n.std);
    let mut scaled = tiny.clone();
    n.apply(&mut scaled).unwrap();
    assert!(
        scaled.data().iter().zip([-1.0, 0.0, 1.0, 0.0]).all(|(v, want)| (v - want).abs() < 1e-4),
        "{scaled:?}"
    );
    for bad in [f32::NAN, f32::INFINITY] {
        let mut x = Tensor::ones(&[4, 2, 3]);
        x.data_mut()[17] = bad; // sample 2, channel 1, position 2
        let e = Normalizer::fit(&x).unwrap_err().to_string();
        assert!(e.contains("sample 2") && e.contains("[1, 2]"), "{e}");
    }
    let n = Normalizer::fit(&Tensor::ones(&[4, 2, 3])).unwrap();
    assert!(n.apply(&mut Tensor::zeros(&[4, 5, 3])).is_err(), "another number of channels");
    let bad = Normalizer { mean: vec![0.0], std: vec![0.0] };
    assert!(bad.apply(&mut Tensor::zeros(&[1, 1, 2])).is_err(), "a zero std");
    let subnormal = Normalizer { mean: vec![0.0], std: vec![1e-40] };
    assert!(subnormal.apply(&mut Tensor::ones(&[1, 1, 2])).is_err(), "a std whose division overflows");
    assert!(common::panic_message(|| drop(LeakyRelu::new(f32::NAN))).contains("slope must be finite"));
}

/// The checking functions themselves, called directly with hostile arguments.
#[test]
fn checks_and_loaders_called_directly_refuse_cleanly() {
    use backprop::data::check_lengths;
    use backprop::layers::pool::Window;
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.safetensors");
    std::fs::write(&junk, [0xffu8; 12]).unwrap();
    let mut m = model();
    let before = m.state_dict();
    assert!(backprop::io::load_with(&mut m, &junk, &LoadOptions::new()).is_err());
    assert!(m.load_with(&junk, &LoadOptions::new()).is_err());
    assert!(backprop::io::load_safetensors_with(&mut m, &[0u8; 3], "junk", &LoadOptions::new()).is_err());
    assert_eq!(m.state_dict(), before, "a failed load changes nothing");
    for lengths in [&[][..], &[0, 1][..], &[4, 1][..], &[usize::MAX, 1][..], &[1, 1, 1][..]] {
        assert!(check_lengths(&[2, 3, 1], lengths).is_err(), "{lengths:?}");
    }
    assert!(check_lengths(&[2], &[1, 1]).is_err());
    let mut inputs = backprop::model::Inputs::new().with("a", Tensor::zeros(&[2, 3]));
    assert!(inputs.get_mut("b").is_err());
    let e = inputs.input("b").unwrap_err().to_string();
    assert!(e.contains("\"b\"") && e.contains("\"a\""), "the missing name and those there are: {e}");
    assert!(backprop::model::Inputs::new().first().is_err(), "no inputs: no first one");
    assert!(
        Embedding::new(3, 2).check_ids(&Tensor::from_vec(&[1, 2], vec![0.0, f32::NAN]).unwrap()).is_err()
    );
    let window = MaxPool2d::new(3).window();
    assert!(window.geometry("MaxPool2d", &[1, 1, 2, 2]).is_err(), "a window larger than the input");
    assert!(window.geometry("MaxPool2d", &[1, 2]).is_err());
    let _: Window = window;
    let lstm = Lstm::new(2, 3);
    assert!(lstm.check_pass(&[2, 4, 2], Pass::TRAIN.with_lengths(&[5, 1]), None).is_err());
    assert!(m.check_input(&Tensor::zeros(&[2, 4])).is_err());
    let x = Tensor::from_vec(&[1, 3], vec![0.0, 9.0, 1.0]).unwrap();
    assert!(m.predict_proba(&x, 1).is_err(), "an id out of range");
    assert!(backprop::train::predict_proba(&mut m, &x, 1).is_err());
}

/// A gzipped IDX file that declares more than `MAX_GZIP_IDX_BYTES` is refused from its header,
/// before anything more is unzipped (an 8 MB bomb used to grow to 3 GB first).
#[test]
fn a_gzipped_idx_claiming_too_much_is_refused_from_its_header() {
    use backprop::data::idx::{MAX_GZIP_IDX_BYTES, read_idx};
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bomb-idx3-ubyte.gz");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&[0, 0, 8, 3]).unwrap();
    for d in [1u32 << 16, 1 << 8, 1 << 8] {
        gz.write_all(&d.to_be_bytes()).unwrap(); // 2³² bytes declared
    }
    gz.write_all(&vec![0u8; 1 << 20]).unwrap();
    std::fs::write(&path, gz.finish().unwrap()).unwrap();
    let e = read_idx(&path).unwrap_err().to_string();
    assert!(e.contains("declares 4294967296 bytes") && e.contains(&MAX_GZIP_IDX_BYTES.to_string()), "{e}");
}

/// The checks of the public traits (`Layer`, `Model`, `Loss`, `Optimizer`, `Step`), called
/// directly with what they must refuse: each an `Err`, never a panic.
#[test]
fn the_traits_checks_refuse_cleanly_when_called_directly() {
    use backprop::data::Inputs;
    use backprop::model::Model;
    use backprop::optim::OptimizerState;
    use backprop::train::step::{Plain, Step};
    // Layer::check_values and Model::check_inputs: an id out of range.
    let embedding = Embedding::new(4, 2);
    let bad_ids = Tensor::from_vec(&[1, 2], vec![1.0, 9.0]).unwrap();
    assert!(embedding.check_values(&bad_ids).unwrap_err().to_string().contains('9'));
    let mut model = Sequential::new().add(Embedding::new(4, 2)).add(Flatten::new()).add(Dense::new(4, 2));
    assert!(model.check_inputs(&Inputs::new().with("input", bad_ids.clone())).is_err());
    // Layer::check_training_shape / Model::check_training_shapes: batch norm on one value.
    let bn = BatchNorm1d::new(3);
    assert!(bn.check_training_shape(&[1, 3]).unwrap_err().to_string().contains("BatchNorm1d(3)"));
    assert!(bn.check_training_shape(&[2, 3]).is_ok());
    assert!(bn.check_training_shapes(&[("input".into(), vec![1, 3])]).is_err());
    assert!(bn.check_training_shapes(&[]).is_err(), "a layer takes one input");
    // forward_batch in Mode::Train asks the same: one sample (or none) is an Err, not a panic.
    let mut with_bn =
        Sequential::builder(&[4]).add(Dense::new(4, 3)).add(BatchNorm1d::new(3)).build().unwrap();
    for n in [0, 1] {
        let one = Inputs::new().with("input", Tensor::zeros(&[n, 4]));
        let err = with_bn.forward_batch(&one, Mode::Train).unwrap_err().to_string();
        assert!(err.contains("BatchNorm1d(3)") && err.contains(&format!("[{n}, 3]")), "{err}");
        assert!(with_bn.forward_batch(&one, Mode::Eval).is_ok(), "inference takes any batch");
    }
    // Model::output_shapes and forward_batch: a shape the model cannot take, a bad id, two inputs.
    let wrong = Inputs::new().with("input", Tensor::zeros(&[2, 5]));
    assert!(model.output_shapes(&wrong.batch_shapes(2)).unwrap().is_err());
    let before = backprop::layers::Snapshot::of(&model);
    for inputs in [
        wrong.clone(),
        Inputs::new().with("input", bad_ids),
        Inputs::new().with("a", Tensor::zeros(&[1, 2])).with("b", Tensor::zeros(&[1, 2])),
    ] {
        assert!(model.forward_batch(&inputs, Mode::Train).is_err());
        assert!(
            Plain
                .gradient(&mut model, &inputs, &Targets::Classes(vec![0]), &CrossEntropyLoss::new())
                .is_err()
        );
    }
    let mut after = backprop::layers::Snapshot::default();
    after.save(&model, true);
    assert_eq!(format!("{before:?}"), format!("{after:?}"), "nothing changed");
    // Model::backward_batch: no gradient for the output.
    let mut dense = Dense::new(2, 2);
    dense.forward_batch(&Inputs::new().with("input", Tensor::zeros(&[1, 2])), Mode::Train).unwrap();
    let two = backprop::model::Tensors::one("x", Tensor::zeros(&[1, 2])).with("y", Tensor::zeros(&[1, 2]));
    assert!(dense.backward_batch(&two, InputGrad::NotNeeded).is_err());
    // Loss::check_target, loss, loss_and_grad: a label out of range, a target of the wrong shape.
    let ce = CrossEntropyLoss::new();
    assert!(ce.check_target(&[1, 2], Target::Classes(&[5])).is_err());
    assert!(ce.loss(&Tensor::zeros(&[1, 2]), Target::Classes(&[5])).is_err());
    let mse = MseLoss::new();
    assert!(mse.loss_and_grad(&Tensor::zeros(&[1, 2]), Target::Values(&Tensor::zeros(&[1, 3]))).is_err());
    // Step::check: DP-SGD set up for another number of examples, or given batch norm.
    let data = Dataset::classification(Tensor::zeros(&[4, 2]), vec![0, 1, 0, 1]).unwrap();
    let options =
        DpOptions { epochs: 1, sample_rate: 0.5, clip: 1.0, noise_multiplier: 1.0, delta: 1e-5, seed: 1 };
    let mut dp = backprop::privacy::DpSgd::new(&options, 5).unwrap();
    assert!(dp.check(&mut dense, &data, &FitOptions::new()).unwrap_err().to_string().contains('5'));
    let mut dp = backprop::privacy::DpSgd::new(&options, 4).unwrap();
    let mut with_bn = Sequential::new().add(Dense::new(2, 3)).add(BatchNorm1d::new(3));
    assert!(
        dp.check(&mut with_bn, &data, &FitOptions::new()).unwrap_err().to_string().contains("batch norm")
    );
    assert!(Plain.check(&mut dense, &data, &FitOptions::new()).is_ok());
    // Optimizer::check and load_state.
    assert!(Sgd::new(0.1).nesterov().check().is_err());
    let mut state = OptimizerState::default();
    state.insert("exp_avg", "weight", Tensor::zeros(&[2, 2]));
    assert!(Sgd::new(0.1).momentum(0.9).load_state(&state).is_err());
    state.set_steps(u64::MAX);
    assert!(Adam::new(0.1).load_state(&state).unwrap_err().to_string().contains("steps"));
}

/// y = left(a) + right(b): a model struct of two inputs that states no output shapes.
struct TwoTowers {
    left: Dense,
    right: Dense,
}
backprop::visit_fields!(TwoTowers { left, right });
impl backprop::model::Model for TwoTowers {
    fn forward_batch(
        &mut self,
        inputs: &backprop::model::Inputs,
        mode: Mode,
    ) -> backprop::Result<backprop::model::Tensors> {
        let a = self.left.forward(inputs.get("a")?, mode.into());
        let b = self.right.forward(inputs.get("b")?, mode.into());
        Ok(backprop::model::Tensors::one("y", &a + &b))
    }
    fn backward_batch(
        &mut self,
        grads: &backprop::model::Tensors,
        _: InputGrad,
    ) -> backprop::Result<backprop::model::Tensors> {
        let g = grads.get("y")?;
        let da = backprop::layers::backward_input(&mut self.left, g);
        let db = backprop::layers::backward_input(&mut self.right, g);
        Ok(backprop::model::Tensors::one("a", da).with("b", db))
    }
}

/// A model struct that gives no output shapes cannot be checked before its forward pass; when
/// one of its layers refuses the batch (a `Dense` of width 3 given width 4), `evaluate` and
/// `predict_inputs` (and the gradient check) return an error naming the model and the layer's
/// message — not a panic.
#[test]
fn a_model_structs_layer_refusing_a_batch_is_an_error_from_evaluate_and_predict_inputs() {
    use backprop::model::Inputs;
    let mut model = TwoTowers { left: Dense::new(3, 2).seed(1), right: Dense::new(3, 2).seed(2) };
    let before = model.left.weight().value.clone();
    let inputs = Inputs::new().with("a", Tensor::ones(&[5, 4])).with("b", Tensor::ones(&[5, 3]));
    let err = backprop::train::predict_inputs(&mut model, &inputs, 8).unwrap_err().to_string();
    assert!(err.contains("predict_inputs: TwoTowers refused the batch") && err.contains("Dense"), "{err}");
    let data = Dataset::from_inputs(inputs, Targets::Classes(vec![0, 1, 1, 0, 1])).unwrap();
    let err =
        backprop::train::evaluate(&mut model, &data, &CrossEntropyLoss::new(), 4).unwrap_err().to_string();
    assert!(err.contains("evaluate: TwoTowers refused the batch"), "{err}");
    let inputs = data.named_inputs();
    let err = backprop::gradcheck::check_model(&mut model, inputs, Mode::Train, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("check_model: TwoTowers refused the batch"), "{err}");
    assert_eq!(model.left.weight().value, before);
}

/// `Dataset::with_lengths` on a data set of several inputs would give the lengths to the first
/// alone, and a model reading another input's would run over every step unawares: refused.
#[test]
fn lengths_for_a_data_set_of_several_inputs_must_say_whose() {
    use backprop::model::Inputs;
    let inputs = Inputs::new().with("next", Tensor::zeros(&[2, 3])).with("answers", Tensor::zeros(&[2, 3]));
    let data = Dataset::from_inputs(inputs, Targets::Classes(vec![0, 1])).unwrap();
    let err = data.with_lengths(vec![3, 1]).unwrap_err().to_string();
    assert!(err.contains("[\"next\", \"answers\"]") && err.contains("Inputs::with_lengths"), "{err}");
}

/// The gradient checks compare shapes before values: a model struct whose backward hands input
/// "a" the gradient meant for "b" (another shape) is an error naming both shapes, not an index
/// past a gradient's end; a loss or a layer whose gradient is misshapen likewise.
#[test]
fn gradient_checks_name_a_gradient_of_the_wrong_shape() {
    use backprop::gradcheck::{Options, check_layer, check_loss, check_model};
    use backprop::loss::{Loss, Target};
    use backprop::model::{Inputs, Model, Tensors};
    struct Swapped {
        left: Dense,
        right: Dense,
    }
    backprop::visit_fields!(Swapped { left, right });
    impl Model for Swapped {
        fn forward_batch(&mut self, inputs: &Inputs, mode: Mode) -> backprop::Result<Tensors> {
            let a = self.left.forward(inputs.get("a")?, mode.into());
            let b = self.right.forward(inputs.get("b")?, mode.into());
            Ok(Tensors::one("y", &a + &b))
        }
        fn backward_batch(&mut self, grads: &Tensors, _: InputGrad) -> backprop::Result<Tensors> {
            let g = grads.get("y")?;
            let da = backprop::layers::backward_input(&mut self.left, g);
            let db = backprop::layers::backward_input(&mut self.right, g);
            Ok(Tensors::one("a", db).with("b", da)) // the bug: each input gets the other's
        }
    }
    let mut model = Swapped { left: Dense::new(4, 2).seed(1), right: Dense::new(3, 2).seed(2) };
    let inputs = Inputs::new().with("a", Tensor::ones(&[5, 4])).with("b", Tensor::ones(&[5, 3]));
    let e = check_model(&mut model, &inputs, Mode::Train, &Options::default()).unwrap_err().to_string();
    assert!(
        e.contains("Swapped") && e.contains("\"a\"") && e.contains("[5, 3]") && e.contains("[5, 4]"),
        "{e}"
    );

    /// A loss whose gradient has one value too few.
    struct Short;
    impl Loss for Short {
        fn name(&self) -> &'static str {
            "Short"
        }
        fn loss_and_grad(&self, z: &Tensor, _: Target<'_>) -> backprop::Result<(f32, Tensor)> {
            Ok((z.sum(), Tensor::ones(&[z.len() - 1])))
        }
    }
    let (z, t) = (Tensor::ones(&[2, 3]), Tensor::ones(&[2, 3]));
    let e = check_loss(&Short, &z, (&t).into(), &Options::default()).unwrap_err().to_string();
    assert!(e.contains("Short") && e.contains("[5]") && e.contains("[2, 3]"), "{e}");

    /// A layer whose input gradient is flattened: the same values, another shape.
    struct Flat(Tanh);
    impl Layer for Flat {
        fn describe(&self) -> String {
            "Flat".into()
        }
        fn output_shape(&self, input: &[usize]) -> backprop::Result<Vec<usize>> {
            Ok(input.to_vec())
        }
        fn forward(&mut self, x: &Tensor, pass: Pass<'_>) -> Tensor {
            self.0.forward(x, pass)
        }
        fn backward(&mut self, g: &Tensor, input_grad: InputGrad) -> Option<Tensor> {
            self.0.backward(g, input_grad).map(|dx| {
                let n = dx.len();
                dx.reshape(&[n])
            })
        }
    }
    impl backprop::layers::Visit for Flat {}
    let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        check_layer(&mut Flat(Tanh::new()), &Tensor::ones(&[2, 4]), Pass::TRAIN, &Options::default())
    }));
    let message = panic.unwrap_err();
    let message = message.downcast_ref::<String>().unwrap();
    assert!(message.contains("Flat") && message.contains("[8]") && message.contains("[2, 4]"), "{message}");
}

/// A model struct that cannot state its outputs' shapes: `fit` runs its first validation batch
/// (predict mode, put back) before training, so a validation set it refuses is found before the
/// first epoch, not after it with that epoch's training kept; a validation set whose inputs are
/// not the training set's is refused by name. Inputs of no samples give outputs of no samples.
#[test]
fn a_model_structs_validation_set_is_tried_before_training() {
    use backprop::model::Inputs;
    let towers = || TwoTowers { left: Dense::new(3, 2).seed(1), right: Dense::new(4, 2).seed(2) };
    let set = |b_width: usize, second: &str| {
        let inputs = Inputs::new().with("a", Tensor::ones(&[5, 3])).with(second, Tensor::ones(&[5, b_width]));
        Dataset::from_inputs(inputs, Targets::Classes(vec![0, 1, 1, 0, 1])).unwrap()
    };
    let (train, loss) = (set(4, "b"), CrossEntropyLoss::new());
    let mut model = towers();
    let before = model.left.weight().value.clone();
    let fit = |model: &mut TwoTowers, val: &Dataset| {
        let o = FitOptions::new().epochs(1).verbose(false).validation(val);
        backprop::train::fit(model, &train, &loss, &mut Sgd::new(0.1), o).unwrap_err().to_string()
    };
    // The right names, a width the right tower refuses: found by the trial batch.
    let e = fit(&mut model, &set(5, "b"));
    assert!(e.contains("fit: the validation set") && e.contains("Dense"), "{e}");
    // Another input's name.
    let e = fit(&mut model, &set(4, "c"));
    assert!(
        e.contains("the validation set's inputs are [\"a\", \"c\"], the training set's [\"a\", \"b\"]"),
        "{e}"
    );
    assert_eq!(model.left.weight().value, before, "a refused fit trained");
    // A sound validation set trains.
    let o = FitOptions::new().epochs(1).verbose(false).validation(&train);
    backprop::train::fit(&mut model, &train, &loss, &mut Sgd::new(0.1), o).unwrap();
    assert_ne!(model.left.weight().value, before);

    // No samples: a layer states its outputs' shapes, so its output has none; a model struct
    // that cannot state them runs on the empty batch.
    let mut dense = Dense::new(3, 2);
    let none = Inputs::new().with("input", Tensor::zeros(&[0, 3]));
    let out = backprop::train::predict_inputs(&mut dense, &none, 4).unwrap();
    assert_eq!(out.get("output").unwrap().shape(), &[0, 2]);
    let none = Inputs::new().with("a", Tensor::zeros(&[0, 3])).with("b", Tensor::zeros(&[0, 4]));
    let out = backprop::train::predict_inputs(&mut towers(), &none, 4).unwrap();
    assert_eq!(out.get("y").unwrap().shape(), &[0, 2]);

    // A layer takes its one input under any name: a validation set named otherwise is fine.
    let x = Tensor::randn(&[6, 3], 0.0, 1.0, 1);
    let named = Dataset::from_inputs(
        Inputs::new().with("tokens", x.clone()),
        Targets::Classes(vec![0, 1, 0, 1, 0, 1]),
    );
    let plain = Dataset::classification(x, vec![1, 0, 1, 0, 1, 0]).unwrap();
    let mut dense = Dense::new(3, 2);
    let o = FitOptions::new().epochs(1).verbose(false).validation(&plain);
    backprop::train::fit(&mut dense, &named.unwrap(), &loss, &mut Sgd::new(0.1), o).unwrap();
}

/// `loss_and_backward` checks the pass's lengths before running (one length for two samples had
/// reached the LSTM's own check after the layers before it had run), and a pass that fails puts
/// back what it changed: batch norm's running statistics and its count.
#[test]
fn loss_and_backward_checks_lengths_first_and_undoes_a_failed_pass() {
    use backprop::layers::Pass;
    let mut model = Sequential::builder(&[5, 3])
        .add(BatchNorm1d::new(5))
        .add(Lstm::new(3, 4).last_step_only())
        .add(Dense::new(4, 2))
        .seed(3)
        .build()
        .unwrap();
    let x = Tensor::randn(&[2, 5, 3], 0.0, 1.0, 4);
    let before = model.state_dict();
    let loss = CrossEntropyLoss::new();
    let e = backprop::train::loss_and_backward(
        &mut model,
        &x,
        Target::Classes(&[0, 1]),
        &loss,
        Pass::TRAIN.with_lengths(&[5]),
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "shape error: loss_and_backward: 1 lengths for 2 samples");
    assert_eq!(model.state_dict(), before, "running statistics moved");
    // A pass cut short after the batch norm ran (a target the loss refuses only after the forward
    // pass: a class past the outputs is refused before it, so use a loss that errs late).
    struct Late;
    impl backprop::loss::Loss for Late {
        fn name(&self) -> &'static str {
            "Late"
        }
        fn check_target(&self, _: &[usize], _: Target<'_>) -> backprop::Result<()> {
            Ok(())
        }
        fn loss_and_grad(&self, _: &Tensor, _: Target<'_>) -> backprop::Result<(f32, Tensor)> {
            Err(backprop::Error::invalid("late refusal"))
        }
    }
    let e = backprop::train::loss_and_backward(&mut model, &x, Target::Classes(&[0, 1]), &Late, Pass::TRAIN)
        .unwrap_err();
    assert!(e.to_string().contains("late refusal"), "{e}");
    assert_eq!(model.state_dict(), before, "a failed pass left running statistics moved");
}

/// A layer checked as a model takes its one input under any name and returns that input's
/// gradient as "input": `check_model` checks it under the name it was given (it had skipped it,
/// so a wrong dL/dx passed with the parameters alone).
#[test]
fn check_model_checks_a_layers_input_under_any_name() {
    use backprop::model::Inputs;
    let mut dense = Dense::new(3, 2).seed(1);
    let inputs = Inputs::new().with("x", Tensor::randn(&[4, 3], 0.0, 1.0, 2));
    let report =
        backprop::gradcheck::check_model(&mut dense, &inputs, Mode::Train, &Default::default()).unwrap();
    let names: Vec<&str> = report.tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["x", "weight", "bias"]);
    assert!(report.passes(1e-2), "{report}");
}

/// `predict_inputs` reserves every sample's outputs after the first batch, or refuses with the
/// size: 2²⁵ samples of 2²⁰ outputs each (2⁴⁷ bytes, past a 47-bit address space, so refused
/// whatever the system's overcommit) is an error, not a buffer doubled until the process aborts.
#[test]
fn predict_inputs_refuses_outputs_no_memory_holds() {
    use backprop::model::Inputs;
    let mut wide = Dense::new(1, 1 << 20);
    let inputs = Inputs::new().with("input", Tensor::zeros(&[1 << 25, 1]));
    let e = backprop::train::predict_inputs(&mut wide, &inputs, 1).unwrap_err().to_string();
    assert!(e.contains("cannot allocate output \"output\" for all 33554432 samples"), "{e}");
}

/// A normalised value past f32 is an error with `x` unchanged (it had become ±∞ under `Ok`); a
/// sample axis past i64::MAX is refused by the ONNX export (it had been written negative).
#[test]
fn normalising_past_f32_and_onnx_dimensions_past_int64_are_refused() {
    use backprop::data::transforms::Normalizer;
    let n = Normalizer { mean: vec![-3e38], std: vec![1.0] };
    let mut x = Tensor::from_vec(&[1, 1], vec![3e38]).unwrap();
    let e = n.apply(&mut x).unwrap_err().to_string();
    assert!(e.contains("normalises past f32"), "{e}");
    assert_eq!(x.data(), &[3e38]);
    let mut fine = Tensor::from_vec(&[1, 1], vec![1.0]).unwrap();
    n.apply(&mut fine).unwrap();
    assert_eq!(fine.data(), &[3e38]);
    let e = backprop::onnx::to_bytes(&Relu::new(), &[1 << 63]).unwrap_err().to_string();
    assert!(e.contains("cannot be written to ONNX"), "{e}");
}
