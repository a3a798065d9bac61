//! Edge inputs found by the fifteenth session's two reviews of the public API
//! (docs/reliability.md, "fifteenth session"): each once aborted the process, ran for hours,
//! panicked inside a function that returns `Result`, or returned a wrong answer without a word.

use backprop::data::knowledge::{Histories, read_three_line};
use backprop::data::transforms::{Augmentation, Normalizer};
use backprop::metrics::{ConfusionMatrix, binary_accuracy, log_loss, roc_auc};
use backprop::prelude::*;
use backprop::privacy::{epsilon, rdp_sampled_gaussian};
use backprop::train::Checkpoint;
use std::collections::HashMap;

mod common;
use common::{ScratchFile, panic_message};

fn classifier() -> Sequential {
    Sequential::builder(&[3]).add(Dense::new(3, 2).seed(1)).build().unwrap()
}

/// An empty batch has no loss: `train_step` refuses it and moves nothing, where Adam's momentum
/// (and AdamW's weight decay) had still stepped the weights.
#[test]
fn train_step_refuses_an_empty_batch_and_moves_nothing() {
    let x = Tensor::from_vec(&[2, 3], vec![0.5, -1.0, 2.0, 1.0, 0.0, -0.5]).unwrap();
    let loss = CrossEntropyLoss::new();
    let optimizers =
        || [Box::new(Adam::new(0.1)) as Box<dyn Optimizer>, Box::new(AdamW::new(0.1).weight_decay(0.1))];
    for (mut opt, mut twin_opt) in optimizers().into_iter().zip(optimizers()) {
        let (mut model, mut twin) = (classifier(), classifier());
        let empty = Tensor::zeros(&[0, 3]);
        model.train_step(&x, Target::Classes(&[0, 1]), &loss, opt.as_mut()).unwrap();
        twin.train_step(&x, Target::Classes(&[0, 1]), &loss, twin_opt.as_mut()).unwrap();
        let err =
            model.train_step(&empty, Target::Classes(&[]), &loss, opt.as_mut()).unwrap_err().to_string();
        assert!(err.contains("[0, 3]") && err.contains("no samples"), "{err}");
        assert_eq!(model.state_dict(), twin.state_dict(), "the refused batch moved the weights");
        // The optimizer did not count a step either: the next real step is the twin's.
        model.train_step(&x, Target::Classes(&[1, 0]), &loss, opt.as_mut()).unwrap();
        twin.train_step(&x, Target::Classes(&[1, 0]), &loss, twin_opt.as_mut()).unwrap();
        assert_eq!(model.state_dict(), twin.state_dict(), "the optimizer's state changed");
    }
}

/// Sizes no memory holds are panics that name them, never an aborted process; an empty axis has
/// no arg-max.
#[test]
fn impossible_sizes_are_named_panics_not_aborts() {
    let m = panic_message(|| drop(Tensor::from_fn(&[1 << 40], |_| 0.0)));
    assert!(m.contains("cannot allocate") && m.contains("[1099511627776]"), "{m}");
    let m = panic_message(|| drop(Tensor::zeros(&[1 << 40, 0]).argmax_axis(1)));
    assert!(m.contains("argmax_axis") && m.contains("empty"), "{m}");
    let m = panic_message(|| drop(Tensor::zeros(&[3, 0]).argmax_axis(1)));
    assert!(m.contains("empty"), "{m}");
    assert_eq!(Tensor::zeros(&[0, 5]).argmax_axis(1), Vec::<usize>::new());
    let m = panic_message(|| drop(ConfusionMatrix::new(1 << 20, &[0], &[0])));
    assert!(m.contains("1048576 × 1048576"), "{m}");
    let m = panic_message(|| drop(ConfusionMatrix::new(1 << 32, &[], &[])));
    assert!(m.contains("4294967296 classes"), "{m}");
    let three = ConfusionMatrix::new(3, &[0, 1, 2], &[0, 2, 2]);
    assert_eq!((three.count(1, 2), three.correct()), (1, 2));
    let m = panic_message(|| {
        three.count(0, 5);
    });
    assert!(m.contains("(0, 5) out of range for 3 classes"), "{m}");
    let m = panic_message(|| drop(Tensor::scalar(1.0).select_outer(&[])));
    assert!(m.contains("scalar"), "{m}");
}

/// Augmenting no images allocates nothing (a `[0, 1, 2²⁰, 2²⁰]` batch had asked for a 4 TiB
/// plane first); a shift larger than any image moves it out entirely instead of wrapping to none.
#[test]
fn augmentation_of_nothing_and_of_everything() {
    let mut none = Tensor::zeros(&[0, 1, 1 << 20, 1 << 20]);
    Augmentation::shift(1).apply(&mut none, &mut backprop::tensor::rng(0));
    let mut x = Tensor::ones(&[4, 1, 3, 3]);
    Augmentation::shift(usize::MAX).with_fill(-1.0).apply(&mut x, &mut backprop::tensor::rng(0));
    assert!(x.data().iter().all(|&v| v == -1.0), "{:?}", x.data());
}

/// The accountant's orders are bounded where the work grows with them (α = 10⁸ had taken 5 s,
/// 10¹² would take hours); an infinite order is still ∞, and no orders at all is named.
#[test]
fn rdp_orders_past_the_limit_are_refused() {
    let m = panic_message(|| {
        rdp_sampled_gaussian(0.01, 1.0, 1e7);
    });
    assert!(m.contains("at most 1024") && m.contains("10000000"), "{m}");
    assert!(rdp_sampled_gaussian(0.01, 1.0, 1024.0).is_finite());
    assert_eq!(rdp_sampled_gaussian(0.01, 1.0, f64::INFINITY), f64::INFINITY);
    let m = panic_message(|| {
        epsilon(0.01, 1.0, 10, 1e-5, &[]);
    });
    assert!(m.contains("no RDP orders"), "{m}");
}

/// `Normalizer::fit` on values that are not there is an `Err` (no channels had divided by zero;
/// channels of no values gave NaN means).
#[test]
fn normalizing_nothing_is_an_error() {
    for shape in [&[3, 0][..], &[3, 2, 0], &[0, 2]] {
        let err = Normalizer::fit(&Tensor::zeros(shape)).unwrap_err().to_string();
        assert!(err.contains("at least one value"), "{shape:?}: {err}");
    }
}

/// A tensor `ndarray` cannot describe (empty, but with other axes past `isize::MAX` together)
/// is an `Err` from `into_array` and a named panic from `view`.
#[cfg(feature = "ndarray")]
#[test]
fn shapes_beyond_ndarray_are_named() {
    use backprop::ndarray::Ix3;
    let t = Tensor::zeros(&[0, 1 << 62, 4]);
    let err = t.clone().into_array::<Ix3>().unwrap_err().to_string();
    assert!(err.contains("ndarray cannot hold") && err.contains("[0, 4611686018427387904, 4]"), "{err}");
    let m = panic_message(|| drop(t.view()));
    assert!(m.contains("ndarray cannot hold"), "{m}");
    assert_eq!(Tensor::zeros(&[0, 3, 4]).into_array::<Ix3>().unwrap().shape(), &[0, 3, 4]);
}

/// `fit` refuses an early-stopping `min_delta` under which no epoch could ever improve.
#[test]
fn early_stopping_needs_a_finite_min_delta() {
    let data = common::blobs(40, 1);
    for bad in [f32::NAN, f32::INFINITY, -0.5] {
        let mut model = Sequential::builder(&[2]).add(Dense::new(2, 3)).build().unwrap();
        let before = model.state_dict();
        let mut stop = EarlyStopping::new(Monitor::TrainLoss, 2);
        stop.min_delta = bad;
        let options = FitOptions::new().epochs(3).verbose(false).early_stopping(stop);
        let err = model.fit(&data, &CrossEntropyLoss::new(), &mut Sgd::new(0.1), options).unwrap_err();
        assert!(err.to_string().contains("min_delta"), "{bad}: {err}");
        assert_eq!(model.state_dict(), before);
    }
}

/// A checkpoint whose metadata a run could not have written — a generator's all-zero state, a
/// best epoch after the last, more epochs waited than run, a NaN best figure — is refused,
/// checksum or not.
#[test]
fn checkpoint_figures_out_of_range_are_refused() {
    let dir = common::scratch_dir("edges-checkpoint");
    let keep = backprop::train::Checkpoints::in_dir(dir.path());
    let data = common::blobs(40, 2);
    let options = FitOptions::new()
        .epochs(2)
        .verbose(false)
        .early_stopping(EarlyStopping::new(Monitor::TrainLoss, 5))
        .checkpoints(keep.clone());
    let mut model = Sequential::builder(&[2]).add(Dense::new(2, 3)).build().unwrap();
    model.fit(&data, &CrossEntropyLoss::new(), &mut Adam::new(0.01), options).unwrap();
    let bytes = std::fs::read(keep.last_path()).unwrap();
    Checkpoint::from_bytes(bytes.clone(), "last").expect("the file as written");
    let edited = |key: &str, edit: &dyn Fn(&mut serde_json::Value)| {
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let mut meta: HashMap<String, String> = header.metadata().clone().unwrap();
        let mut value: serde_json::Value = serde_json::from_str(&meta[key]).unwrap();
        edit(&mut value);
        meta.insert(key.to_string(), value.to_string());
        common::resealed(&bytes, meta)
    };
    type Edit<'a> = &'a dyn Fn(&mut serde_json::Value);
    let cases: [(&str, Edit<'_>, &str); 5] = [
        // xoshiro's fixed point: a normal sampler fed its zeros never returns.
        ("rng.shuffle", &|v| *v = serde_json::json!({"s": [0, 0, 0, 0]}), "the all-zero state"),
        ("early_stopping", &|v| v["best_epoch"] = 1_000_000_000.into(), "best epoch 1000000000"),
        ("early_stopping", &|v| v["waited"] = u64::MAX.into(), "epochs waited"),
        ("early_stopping", &|v| v["best"] = "NaN".into(), "the best figure is NaN"),
        ("history", &|v| v["best_epoch"] = 9.into(), "best epoch is 9"),
    ];
    for (key, edit, want) in cases {
        let err = Checkpoint::from_bytes(edited(key, edit), "edited").map(|_| ()).unwrap_err().to_string();
        assert!(err.contains(want), "{key}: {err}");
    }
}

/// A count in a model file (batch norm's `num_batches_tracked`) must be a whole number ≥ 0:
/// `inf` had loaded as `u64::MAX` (one batch later, 0), NaN and −5 as 0, 3.7 as 3.
#[test]
fn a_count_that_is_not_a_count_is_refused() {
    let model = || Sequential::builder(&[2]).add(BatchNorm1d::new(2)).build().unwrap();
    let stored = model().state_dict(); // the weights and running statistics; the count is added
    for (value, shown) in [(f32::INFINITY, "inf"), (f32::NAN, "NaN"), (-5.0, "-5"), (3.7, "3.7"), (4.0, "")] {
        let mut tensors: Vec<(String, Vec<u8>, Vec<usize>, safetensors::Dtype)> = stored
            .iter()
            .map(|(name, t)| {
                let bytes = t.data().iter().flat_map(|v| v.to_le_bytes()).collect();
                (name.clone(), bytes, t.shape().to_vec(), safetensors::Dtype::F32)
            })
            .collect();
        let count = (
            "0.num_batches_tracked".to_string(),
            value.to_le_bytes().to_vec(),
            vec![],
            safetensors::Dtype::F32,
        );
        tensors.push(count);
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
            .iter()
            .map(|(n, b, s, d)| (n.clone(), safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap()))
            .collect();
        let bytes = safetensors::serialize(views, None).unwrap();
        let mut m = model();
        let loaded = backprop::io::load_safetensors(&mut m, &bytes, "counter");
        if value == 4.0 {
            loaded.expect("a whole number stored as a float is a count"); // as some exporters write it
            continue;
        }
        let err = loaded.unwrap_err().to_string();
        assert!(err.contains("num_batches_tracked") && err.contains(shown), "{value}: {err}");
    }
}

/// Step counts past `i32::MAX` no longer wrap the schedules' exponent back to the base rate.
#[test]
fn schedules_do_not_wrap_their_step_count() {
    let exponential = Schedule::exponential(0.5).unwrap();
    assert_eq!(exponential.lr(1.0, 1 << 31), 0.0);
    assert_eq!(exponential.lr(1.0, 1 << 32), 0.0);
    assert_eq!(exponential.lr(1.0, 3), 0.125);
    let step = Schedule::step(1, 0.5).unwrap();
    assert_eq!(step.lr(1.0, 1 << 32), 0.0);
    assert_eq!(Schedule::exponential(2.0).unwrap().lr(1.0, 1 << 33), f32::INFINITY);
}

/// One rule for NaN across the binary metrics: an error naming the position (they had
/// panicked — a diverged model's predictions ended a program after its training;
/// `binary_accuracy` before that had counted NaN as a right "false", `log_loss` had returned
/// NaN); no predictions and mismatched lengths are errors too (an empty log-loss of 0 had read as
/// a perfect score; scikit-learn refuses 0 samples).
#[test]
fn binary_metrics_refuse_nan_alike() {
    let e = binary_accuracy(&[0.2, f32::NAN], &[false, false]).unwrap_err().to_string();
    assert!(e.contains("binary_accuracy: prediction 1 is NaN"), "{e}");
    let e = log_loss(&[f32::NAN, 0.5], &[true, false]).unwrap_err().to_string();
    assert!(e.contains("log_loss: prediction 0 is NaN"), "{e}");
    let e = roc_auc(&[0.5, f32::NAN], &[true, false]).unwrap_err().to_string();
    assert!(e.contains("roc_auc: prediction 1 is NaN"), "{e}");
    for e in [log_loss(&[], &[]).unwrap_err(), binary_accuracy(&[], &[]).unwrap_err()] {
        assert!(e.to_string().contains("no predictions (0 samples)"), "{e}");
    }
    let e = roc_auc(&[0.5], &[true, false]).unwrap_err().to_string();
    assert!(e.contains("roc_auc: 1 predictions for 2 labels"), "{e}");
    assert!(log_loss(&[0.5], &[]).is_err() && binary_accuracy(&[0.5, 0.5], &[true]).is_err());
    assert_eq!(roc_auc(&[], &[]).unwrap(), None, "no positives, no negatives: undefined, as before");
}

/// The three-line format: a student of no answers (two empty lines) is skipped and counted, not
/// read as the next student's lines; a list longer than its count is refused as soon as it is.
#[test]
fn three_line_students_of_no_answers_and_overlong_lists() {
    let file = ScratchFile::new("zero.txt", "0\n\n\n3\n4,1,2\n1,0,1\n0\n\n\n");
    let h = read_three_line(&file).unwrap();
    assert_eq!((h.students.len(), h.skipped, h.items), (1, 2, 5));
    assert_eq!(h.students[0].items, [4, 1, 2]);
    let long = ScratchFile::new("long.txt", format!("2\n{}\n1,0\n", "7,".repeat(100_000)));
    let err = read_three_line(&long).unwrap_err().to_string();
    assert!(err.contains("line 2: more item ids than the 2 that line 1 says"), "{err}");
    // Blank lines between a student's lines are still allowed when it has answers.
    let spaced = ScratchFile::new("spaced.txt", "2\n\n0,1\n\n1,1\n");
    assert_eq!(read_three_line(&spaced).unwrap().students.len(), 1);
}

/// Labels and fractions at the edges: the largest label saturates the class count instead of
/// wrapping it to 0; a split fraction outside [0, 1] is an error naming it (`Histories::split`
/// had panicked where `Dataset::split_stratified` returns an error).
#[test]
fn class_counts_and_split_fractions_at_the_edges() {
    let ds = Dataset::classification(Tensor::zeros(&[2, 1]), vec![0, usize::MAX]).unwrap();
    assert_eq!(ds.num_classes(), Some(usize::MAX));
    let h: Histories = backprop::data::knowledge::simulate(&Default::default()).unwrap();
    for bad in [f64::NAN, -1.0, 7.0] {
        let e = h.split(bad, 0).unwrap_err().to_string();
        assert!(e.contains("fraction must be in [0, 1]"), "{bad}: {e}");
    }
}

/// An activation no memory holds (a convolution padded by a million: 64 TB for two images) is an
/// `Err` from `predict`, `evaluate`, `fit` and `train_step`, not an aborted process; a refused
/// step changes nothing.
#[test]
fn an_activation_no_memory_holds_is_an_error_not_an_abort() {
    let model = || {
        Sequential::builder(&[1, 5, 5])
            .add(Conv2d::new(1, 2, 3).padding(1_000_000).seed(3))
            .add(GlobalAvgPool::new())
            .build()
            .unwrap()
    };
    let (x, y) = (Tensor::ones(&[2, 1, 5, 5]), Tensor::ones(&[2, 2]));
    let data = Dataset::regression(x.clone(), y.clone()).unwrap();
    let mut m = model();
    let before = m.state_dict();
    let err = m.predict(&x, 2).unwrap_err().to_string();
    assert!(err.contains("predict") && err.contains("cannot allocate a convolution's output"), "{err}");
    let err = m.evaluate(&data, &MseLoss::new(), 2).unwrap_err().to_string();
    assert!(err.contains("cannot allocate"), "{err}");
    let err =
        m.train_step(&x, Target::Values(&y), &MseLoss::new(), &mut Adam::new(0.1)).unwrap_err().to_string();
    assert!(err.contains("cannot allocate"), "{err}");
    let options = FitOptions::new().epochs(1).verbose(false);
    let err = m.fit(&data, &MseLoss::new(), &mut Sgd::new(0.1), options).unwrap_err().to_string();
    assert!(err.contains("cannot allocate"), "{err}");
    assert_eq!(m.state_dict(), before);
}

/// Batch norm's ε and momentum are checked where they are set (a NaN momentum had trained
/// without a word and predicted NaN), and a model file's negative running variance is refused.
#[test]
fn batch_norm_settings_and_variances_are_checked() {
    for bad in [f32::NAN, -1.0, 5.0] {
        let m = panic_message(|| drop(BatchNorm1d::new(4).momentum(bad)));
        assert!(m.contains("BatchNorm1d: momentum must be in [0, 1]"), "{bad}: {m}");
    }
    for bad in [f32::NAN, -1.0, f32::INFINITY] {
        let m = panic_message(|| drop(BatchNorm2d::new(4).eps(bad)));
        assert!(m.contains("BatchNorm2d: eps must be finite and ≥ 0"), "{bad}: {m}");
    }
    drop(BatchNorm1d::new(4).momentum(0.0).momentum(1.0).eps(0.0));
    let mut m = Sequential::builder(&[4]).add(BatchNorm1d::new(4)).build().unwrap();
    let mut state = m.state_dict();
    let before = state.clone();
    for (name, t) in state.iter_mut() {
        if name.ends_with("running_var") {
            *t = Tensor::from_vec(&[4], vec![1.0, -1.0, 1.0, 1.0]).unwrap();
        }
    }
    let err = m.load_tensors(&state, &LoadOptions::new()).unwrap_err().to_string();
    assert!(err.contains("0.running_var") && err.contains("cannot be negative"), "{err}");
    assert_eq!(m.state_dict(), before);
}

/// Binary cross-entropy's targets are probabilities: 2 or −1 is an `Err` (a negative loss had
/// trained on), NaN still the padding that `ignore_nan_targets` skips.
#[test]
fn bce_targets_outside_zero_one_are_refused() {
    let z = Tensor::zeros(&[2, 1]);
    for bad in [2.0, -1.0] {
        let t = Tensor::from_vec(&[2, 1], vec![1.0, bad]).unwrap();
        let err = BceWithLogitsLoss::new().loss_and_grad(&z, Target::Values(&t)).unwrap_err().to_string();
        assert!(err.contains("target 1 is") && err.contains("[0, 1]"), "{bad}: {err}");
    }
    let padded = Tensor::from_vec(&[2, 1], vec![1.0, f32::NAN]).unwrap();
    let (l, _) =
        BceWithLogitsLoss::new().ignore_nan_targets().loss_and_grad(&z, Target::Values(&padded)).unwrap();
    assert!((l - std::f32::consts::LN_2).abs() < 1e-6, "{l}");
}

/// `clip_grad_norm` takes a positive `max_norm` only (−1 had reversed the gradients), and an
/// infinite norm makes every gradient NaN rather than a mix of NaN and 0.
#[test]
fn clip_grad_norm_needs_a_positive_bound_and_spreads_no_mix() {
    use backprop::layers::Param;
    use backprop::optim::clip_grad_norm;
    let mut p = Param::new(Tensor::zeros(&[2]));
    p.grad = Tensor::from_vec(&[2], vec![3.0, 4.0]).unwrap();
    for bad in [-1.0, 0.0, f32::NAN, f32::INFINITY] {
        let m = panic_message(|| {
            clip_grad_norm(&mut [("w".to_string(), &mut p)], bad);
        });
        assert!(m.contains("max_norm must be a positive number"), "{bad}: {m}");
    }
    assert_eq!(p.grad.data(), &[3.0, 4.0]);
    p.grad = Tensor::from_vec(&[2], vec![f32::INFINITY, 1.0]).unwrap();
    assert_eq!(clip_grad_norm(&mut [("w".to_string(), &mut p)], 1.0), f32::INFINITY);
    assert!(p.grad.data().iter().all(|v| v.is_nan()), "{:?}", p.grad.data());
    // Finite gradients whose norm is past f32 (√2·3e38): clipped to finite values, not to NaN.
    p.grad = Tensor::from_vec(&[2], vec![3e38, -3e38]).unwrap();
    assert_eq!(clip_grad_norm(&mut [("w".to_string(), &mut p)], 2.0), f32::INFINITY, "the norm, past f32");
    let half_root = 2.0 / 2f32.sqrt();
    assert!(
        p.grad.data().iter().zip([half_root, -half_root]).all(|(g, want)| (g - want).abs() < 1e-6),
        "{:?}",
        p.grad.data()
    );
}

/// An optimizer's state holds values a run could have left, for parameters the model has: a
/// negative average of squares or a NaN moment is refused by `load_state`, and buffers for names
/// the model does not have by `fit` and `train_step` before anything changes (they had trained
/// with a foreign step count and kept the foreign buffers, or failed later blaming the rate).
#[test]
fn optimizer_state_of_another_model_or_of_no_run_is_refused() {
    use backprop::optim::OptimizerState;
    let mut model = classifier();
    let (weight_name, weight) = model.state_dict().into_iter().find(|(n, _)| n.ends_with("weight")).unwrap();
    for (kind, value, want) in
        [("exp_avg_sq", -1.0, "finite and ≥ 0"), ("exp_avg", f32::NAN, "must be finite")]
    {
        let mut state = OptimizerState::default();
        state.set_steps(3);
        state.insert(kind, &weight_name, Tensor::full(weight.shape(), value));
        let err = Adam::new(0.1).load_state(&state).unwrap_err().to_string();
        assert!(err.contains(kind) && err.contains(want), "{kind}: {err}");
    }
    let mut foreign = OptimizerState::default();
    foreign.set_steps(1_000_000);
    foreign.insert("exp_avg", "nope.weight", Tensor::zeros(&[2, 3]));
    let mut adam = Adam::new(0.1);
    adam.load_state(&foreign).expect("the optimizer alone cannot tell");
    let before = model.state_dict();
    let x = Tensor::from_vec(&[2, 3], vec![0.5, -1.0, 2.0, 1.0, 0.0, -0.5]).unwrap();
    let err = model
        .train_step(&x, Target::Classes(&[0, 1]), &CrossEntropyLoss::new(), &mut adam)
        .unwrap_err()
        .to_string();
    assert!(err.contains("\"nope.weight\"") && err.contains("does not have"), "{err}");
    let data = Dataset::classification(x, vec![0, 1]).unwrap();
    let options = FitOptions::new().epochs(1).verbose(false);
    let err = model.fit(&data, &CrossEntropyLoss::new(), &mut adam, options).unwrap_err().to_string();
    assert!(err.contains("\"nope.weight\""), "{err}");
    assert_eq!(model.state_dict(), before);
}

/// A model without parameters has nothing to train: `fit` and `train_step` say so (as PyTorch's
/// optimizers refuse an empty parameter list) instead of reporting the same loss every epoch.
#[test]
fn a_model_without_parameters_is_not_trained() {
    let mut model = Sequential::builder(&[3]).add(Relu::new()).build().unwrap();
    let x = Tensor::from_vec(&[2, 3], vec![0.5, -1.0, 2.0, 1.0, 0.0, -0.5]).unwrap();
    let y = Tensor::ones(&[2, 3]);
    let err = model.train_step(&x, Target::Values(&y), &MseLoss::new(), &mut Adam::new(0.1)).unwrap_err();
    assert!(err.to_string().contains("no parameters to train"), "{err}");
    let data = Dataset::regression(x, y).unwrap();
    let options = FitOptions::new().epochs(2).verbose(false);
    let err = model.fit(&data, &MseLoss::new(), &mut Adam::new(0.1), options).unwrap_err();
    assert!(err.to_string().contains("no parameters to train"), "{err}");
}

/// Raw logits given to the binary metrics are refused by name, not clamped or thresholded into a
/// figure that means nothing.
#[test]
fn binary_metrics_refuse_values_outside_zero_one() {
    let e = log_loss(&[-3.0, 0.5], &[true, false]).unwrap_err().to_string();
    assert!(e.contains("probability 0") && e.contains("[0, 1]"), "{e}");
    let e = binary_accuracy(&[0.5, 4.0], &[true, false]).unwrap_err().to_string();
    assert!(e.contains("probability 1") && e.contains("[0, 1]"), "{e}");
}

/// Sums along an axis accumulate as `sum` does (2²⁴ + 1 + 1 + 1 + 1 is 2²⁴ + 4, not 2²⁴), and
/// global average pooling of a large plane is its mean.
#[test]
fn reductions_along_an_axis_do_not_drift() {
    let t = Tensor::from_vec(&[5, 1], vec![16_777_216.0, 1.0, 1.0, 1.0, 1.0]).unwrap();
    assert_eq!(t.sum_axis(0).data()[0] as f64, t.sum() as f64);
    assert_eq!(t.sum_axis(0).data()[0], 16_777_220.0);
    assert_eq!(Tensor::ones(&[1 << 25, 1]).mean_axis(0).data(), &[1.0]);
    let plane = Tensor::full(&[1, 1, 1000, 1000], 0.1);
    let y = GlobalAvgPool::new().forward(&plane, Pass::EVAL);
    assert!((y.data()[0] - 0.1).abs() <= 1e-7, "{}", y.data()[0]);
}

/// A batch-norm layer asked whether it can train on a shape it cannot take at all answers with
/// an error naming it, not a panic.
#[test]
fn batch_norm_asked_about_a_shape_without_a_batch_axis_is_an_error() {
    let model = Sequential::builder(&[4]).add(BatchNorm1d::new(4)).build().unwrap();
    let e = model.check_training_shape(&[4]).unwrap_err().to_string();
    assert!(e.contains("BatchNorm1d(4)"), "{e}");
}

/// A generic model's default name is its type's, without the type arguments.
#[test]
fn a_generic_models_default_name_is_its_own() {
    use backprop::model::{Inputs, Model, Tensors};
    struct Pair<L: Layer> {
        inner: L,
    }
    impl<L: Layer> Visit for Pair<L> {
        fn visit<'a>(&'a self, f: &mut dyn FnMut(&str, State<'a>)) {
            self.inner.visit(f)
        }
        fn visit_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, StateMut<'a>)) {
            self.inner.visit_mut(f)
        }
    }
    impl<L: Layer> Model for Pair<L> {
        fn forward_batch(&mut self, inputs: &Inputs, mode: Mode) -> backprop::Result<Tensors> {
            let x = inputs.get("x")?;
            Ok(Tensors::one("y", self.inner.forward(x, Pass { mode, lengths: None })))
        }
        fn backward_batch(&mut self, _: &Tensors, _: InputGrad) -> backprop::Result<Tensors> {
            Ok(Tensors::new())
        }
    }
    assert_eq!(Pair { inner: Dense::new(2, 2) }.name(), "Pair");
}
