//! Checkpoints resume exactly: 5 epochs, a checkpoint, 5 more from it equal 10 straight, bit for
//! bit — weights, optimizer moments, shuffling, dropout masks, augmentation, the schedule and
//! early stopping's memory included — and a checkpoint that does not fit the run is refused
//! before anything changes.

use backprop::optim::OptimizerState;
use backprop::prelude::*;
use backprop::privacy::{DpOptions, DpSgd};
use backprop::train::{Checkpoint, Checkpoints, History, Step};
use std::path::Path;

mod common;

fn data(seed: u64) -> Dataset {
    let x = Tensor::rand_uniform(&[90, 4], -1.0, 1.0, seed);
    let labels =
        x.data().chunks(4).map(|r| usize::from(r[0] + r[1] * r[2] > 0.1) + usize::from(r[3] > 0.5)).collect();
    Dataset::classification(x, labels).unwrap()
}

fn model() -> Sequential {
    model_seeded(1)
}

fn model_seeded(seed: u64) -> Sequential {
    Sequential::builder(&[4])
        .add(Dense::new(4, 16).seed(seed))
        .add(Relu::new())
        .add(Dropout::new(0.3))
        .add(Dense::new(16, 3).seed(seed + 1))
        .build()
        .unwrap()
}

/// Everything a run's outcome is: weights, the optimizer's buffers, and the history without its
/// timings.
fn outcome(
    m: &Sequential,
    opt: &dyn Optimizer,
    h: &History,
) -> (Vec<(String, Tensor)>, OptimizerState, History) {
    let mut state = OptimizerState::default();
    opt.save_state(&mut state);
    let mut h = h.clone();
    h.epochs.iter_mut().for_each(|e| e.seconds = 0.0);
    (m.state_dict(), state, h)
}

fn options<'a>(val: &'a Dataset) -> FitOptions<'a> {
    FitOptions::new()
        .batch_size(16)
        .seed(11)
        .verbose(false)
        .validation(val)
        .schedule(Schedule::cosine(10, 1e-4).unwrap().with_warmup(2, 0.1).unwrap())
        .early_stopping(EarlyStopping::new(Monitor::ValLoss, 50))
        .augment(|x, r| {
            use rand::RngExt;
            let shift: f32 = r.random_range(-0.05..0.05);
            x.data_mut().iter_mut().for_each(|v| *v += shift);
        })
}

#[test]
fn five_plus_five_epochs_equal_ten_bit_for_bit() {
    let (train, val) = (data(1), data(2));
    let dir = tempfile::tempdir().unwrap();
    let makers: [fn() -> Box<dyn Optimizer>; 2] = [
        || Box::new(Adam::new(0.01).amsgrad()),
        || Box::new(Sgd::new(0.05).momentum(0.9).nesterov().weight_decay(1e-3)),
    ];
    for make in makers {
        let loss = CrossEntropyLoss::new();
        let (mut straight, mut opt) = (model(), make());
        let h = straight.fit(&train, &loss, &mut *opt, options(&val).epochs(10)).unwrap();
        let expected = outcome(&straight, &*opt, &h);

        let (mut first, mut opt) = (model(), make());
        let keep = Checkpoints::in_dir(dir.path());
        first.fit(&train, &loss, &mut *opt, options(&val).epochs(5).checkpoints(keep.clone())).unwrap();
        let checkpoint = Checkpoint::load(keep.last_path()).unwrap();
        assert_eq!(checkpoint.epoch(), 5);

        // A fresh process: new model (other weights), new optimizer.
        let (mut resumed, mut opt) = (model_seeded(50), make());
        resumed.reseed(99);
        let h = resumed.fit(&train, &loss, &mut *opt, options(&val).epochs(10).resume(&checkpoint)).unwrap();
        assert_eq!(h.epochs.len(), 10);
        assert_eq!(outcome(&resumed, &*opt, &h), expected, "{}", opt.describe());
        assert_eq!(opt.learning_rate(), make().learning_rate(), "fit leaves the base rate");
    }
}

#[test]
fn a_checkpoint_survives_being_stopped_twice_and_keeps_the_best_epoch() {
    let (train, val) = (data(3), data(4));
    let dir = tempfile::tempdir().unwrap();
    let keep = Checkpoints::in_dir(dir.path().join("run")); // created by fit
    let loss = CrossEntropyLoss::new();
    let (mut straight, mut opt) = (model(), Adam::new(0.02));
    let h = straight.fit(&train, &loss, &mut opt, options(&val).epochs(9)).unwrap();
    let expected = outcome(&straight, &opt, &h);

    let mut opt = Adam::new(0.02);
    model().fit(&train, &loss, &mut opt, options(&val).epochs(3).checkpoints(keep.clone())).unwrap();
    for until in [6, 9] {
        let checkpoint = Checkpoint::load(keep.last_path()).unwrap();
        let (mut m, mut opt) = (model(), Adam::new(0.02));
        let h = m
            .fit(
                &train,
                &loss,
                &mut opt,
                options(&val).epochs(until).checkpoints(keep.clone()).resume(&checkpoint),
            )
            .unwrap();
        if until == 9 {
            assert_eq!(outcome(&m, &opt, &h), expected);
        }
    }
    // best.safetensors is the epoch with the lowest validation loss, and evaluates to it.
    let best = Checkpoint::load(keep.best_path()).unwrap();
    let min = h.epochs.iter().map(|e| e.val_loss.unwrap()).fold(f32::INFINITY, f32::min);
    assert_eq!(best.history().last().unwrap().val_loss, Some(min));
    let mut m = model();
    best.load_model(&mut m).unwrap();
    let eval = m.evaluate(&val, &loss, 256).unwrap();
    assert!((eval.loss - min).abs() <= 1e-6 * min.abs().max(1.0), "{} vs {min}", eval.loss);
}

#[test]
fn early_stopping_resumes_with_its_memory() {
    let (train, val) = (data(5), data(6));
    let dir = tempfile::tempdir().unwrap();
    let loss = CrossEntropyLoss::new();
    let opts = |v| {
        FitOptions::new()
            .batch_size(8)
            .seed(2)
            .verbose(false)
            .validation(v)
            .early_stopping(EarlyStopping::new(Monitor::ValAccuracy, 2))
    };
    let (mut straight, mut opt) = (model(), Adam::new(0.2)); // a rate that overshoots: it stops early
    let h = straight.fit(&train, &loss, &mut opt, opts(&val).epochs(40)).unwrap();
    assert!(h.stopped_early, "{h:?}");
    let stop = h.epochs.len();
    let expected = outcome(&straight, &opt, &h);
    let keep = Checkpoints::in_dir(dir.path());
    let mut opt = Adam::new(0.2);
    model().fit(&train, &loss, &mut opt, opts(&val).epochs(stop - 1).checkpoints(keep.clone())).unwrap();
    let checkpoint = Checkpoint::load(keep.last_path()).unwrap();
    let (mut m, mut opt) = (model(), Adam::new(0.2));
    let got = m.fit(&train, &loss, &mut opt, opts(&val).epochs(40).resume(&checkpoint)).unwrap();
    assert!(got.stopped_early);
    assert_eq!(got.best_epoch, h.best_epoch);
    assert_eq!(outcome(&m, &opt, &got), expected, "the best weights were put back from the checkpoint");
    // Its run ended: nothing to resume.
    let (mut m, mut opt) = (model(), Adam::new(0.2));
    let keep2 = Checkpoints::in_dir(dir.path().join("stopped"));
    m.fit(&train, &loss, &mut opt, opts(&val).epochs(40).checkpoints(keep2.clone())).unwrap();
    let ended = Checkpoint::load(keep2.last_path()).unwrap();
    let e = m.fit(&train, &loss, &mut opt, opts(&val).epochs(50).resume(&ended)).unwrap_err().to_string();
    assert!(e.contains("stopped early"), "{e}");
}

#[test]
fn private_training_resumes_with_its_generators_and_its_count() {
    let train = data(7);
    let dir = tempfile::tempdir().unwrap();
    let loss = CrossEntropyLoss::new();
    let dp =
        DpOptions { sample_rate: 0.25, noise_multiplier: 1.1, clip: 1.0, delta: 1e-5, seed: 3, epochs: 1 };
    let run = |epochs: usize, resume: Option<&Checkpoint>, keep: Option<Checkpoints>| {
        let mut m = Sequential::builder(&[4])
            .add(Dense::new(4, 8).seed(1))
            .add(Tanh::new())
            .add(Dense::new(8, 3).seed(2))
            .build()
            .unwrap();
        let mut step = DpSgd::new(&dp, train.len()).unwrap();
        let mut opt = Sgd::new(0.1);
        let mut o = FitOptions::new().seed(5).verbose(false).epochs(epochs).step(&mut step);
        if let Some(c) = resume {
            o = o.resume(c);
        }
        if let Some(k) = keep {
            o = o.checkpoints(k);
        }
        m.fit(&train, &loss, &mut opt, o).unwrap();
        (m.state_dict(), step.steps(), step.epsilon())
    };
    // A state that is not DP-SGD's is refused, and the step keeps its own.
    let mut step = DpSgd::new(&dp, train.len()).unwrap();
    for garbage in ["", "{}", "[1,2]", "{\"sampling\": 3, \"noise\": [1,2,3,4], \"steps\": 1}", "not json"] {
        let e = step.load_state(garbage).unwrap_err().to_string();
        assert!(e.starts_with("invalid argument: DP-SGD"), "{garbage}: {e}");
    }
    assert_eq!(step.steps(), 0);
    // A plain step refuses DP-SGD's state.
    let e = backprop::train::Plain.load_state(&step.save_state()).unwrap_err().to_string();
    assert!(e.contains("keeps no state"), "{e}");

    let straight = run(4, None, None);
    let keep = Checkpoints::in_dir(dir.path());
    run(2, None, Some(keep.clone()));
    let checkpoint = Checkpoint::load(keep.last_path()).unwrap();
    assert_eq!(run(4, Some(&checkpoint), None), straight, "same noise, same batches, same ε");
}

/// A file and a model, for the refusals.
fn trained_checkpoint(dir: &Path) -> Checkpoint {
    let train = data(8);
    let keep = Checkpoints::in_dir(dir);
    let o = FitOptions::new().epochs(2).seed(4).verbose(false).checkpoints(keep.clone());
    model().fit(&train, &CrossEntropyLoss::new(), &mut Adam::new(0.01), o).unwrap();
    Checkpoint::load(keep.last_path()).unwrap()
}

#[test]
fn a_checkpoint_that_does_not_fit_the_run_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = trained_checkpoint(dir.path());
    let train = data(8);
    let loss = CrossEntropyLoss::new();
    let o = || FitOptions::new().epochs(4).seed(4).verbose(false);
    let refused = |m: &mut Sequential, opt: &mut dyn Optimizer, o: FitOptions<'_>| -> String {
        let (before, mut state) = (m.state_dict(), OptimizerState::default());
        opt.save_state(&mut state);
        let e = m.fit(&train, &loss, opt, o).unwrap_err().to_string();
        let mut after = OptimizerState::default();
        opt.save_state(&mut after);
        assert_eq!((m.state_dict(), after), (before, state), "a refused resume changed something: {e}");
        e
    };

    // Another architecture: every difference listed.
    let mut other = Sequential::builder(&[4])
        .add(Dense::new(4, 8))
        .add(Relu::new())
        .add(Dropout::new(0.3))
        .add(Dense::new(8, 3))
        .add(Relu::new())
        .add(Dense::new(3, 3))
        .build()
        .unwrap();
    let e = refused(&mut other, &mut Adam::new(0.01), o().resume(&checkpoint));
    assert!(e.contains("2 missing tensors") && e.contains("\"5.weight\"") && e.contains("\"5.bias\""), "{e}");
    assert!(
        e.contains("\"0.weight\" has shape [16, 4], but the model (layer 0, Dense(4→8)) needs [8, 4]"),
        "{e}"
    );
    assert!(e.contains("\"3.weight\" has shape [3, 16]") && !e.contains("\"3.bias\""), "{e}");
    // Without dropout, the generators differ.
    let mut no_dropout = Sequential::builder(&[4])
        .add(Dense::new(4, 16))
        .add(Relu::new())
        .add(Dense::new(16, 3))
        .build()
        .unwrap();
    let e = refused(&mut no_dropout, &mut Adam::new(0.01), o().resume(&checkpoint));
    assert!(e.contains("random generators"), "{e}");
    // Another kind of optimizer, another seed, no epochs left.
    let e = refused(&mut model(), &mut Sgd::new(0.01).momentum(0.9), o().resume(&checkpoint));
    assert!(e.contains("the state of Adam, not of SGD"), "{e}");
    let e = refused(&mut model(), &mut Adam::new(0.01), o().seed(5).resume(&checkpoint));
    assert!(e.contains("seed 4") && e.contains("seed 5"), "{e}");
    let e = refused(&mut model(), &mut Adam::new(0.01), o().epochs(2).resume(&checkpoint));
    assert!(e.contains("trained 2 epochs already"), "{e}");
    // AdamW is another kind of optimizer than Adam.
    let e = refused(&mut model(), &mut AdamW::new(0.01), o().resume(&checkpoint));
    assert!(e.contains("not of AdamW"), "{e}");
    // Adam with other settings: its stored moments belong to the stored ones (AMSGrad's maximum
    // would start from zero; other betas or a weight decay would step differently from the run
    // never stopped). Accepted before, refused now, naming both.
    let e = refused(&mut model(), &mut Adam::new(0.01).amsgrad(), o().resume(&checkpoint));
    assert!(e.contains("the checkpoint's optimizer was Adam(), this run's is Adam(amsgrad)"), "{e}");
    let e = refused(&mut model(), &mut Adam::new(0.01).weight_decay(0.1), o().resume(&checkpoint));
    assert!(e.contains("this run's is Adam(weight_decay=0.1)"), "{e}");
    let e = refused(&mut model(), &mut Adam::new(0.01).eps(1e-6), o().resume(&checkpoint));
    assert!(e.contains("this run's is Adam(eps=0.000001)"), "{e}");
    // Another learning rate is a deliberate change a resume may make (after a divergence, say).
    model().fit(&train, &loss, &mut Adam::new(0.001), o().resume(&checkpoint)).unwrap();
}

#[test]
fn files_that_are_not_checkpoints_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = trained_checkpoint(dir.path());
    // A model file.
    let model_file = dir.path().join("model.safetensors");
    model().save(&model_file).unwrap();
    let e = Checkpoint::load(&model_file).unwrap_err().to_string();
    assert!(e.contains("not a checkpoint") && e.contains("model.safetensors"), "{e}");
    // Every truncation is an error, never a panic.
    let bytes = checkpoint.as_bytes();
    for cut in (0..bytes.len()).step_by(97) {
        assert!(Checkpoint::from_bytes(bytes[..cut].to_vec(), "cut").is_err(), "cut at {cut}");
    }
    // Metadata edited by hand.
    let text = String::from_utf8_lossy(bytes).into_owned();
    for (from, to) in [("\"epoch\":\"2\"", "\"epoch\":\"3\""), ("\"seed\":\"4\"", "\"seed\":\"x\"")] {
        assert!(text.contains(from), "{from}");
        let edited = text.replacen(from, to, 1).into_bytes();
        if edited.len() == bytes.len() {
            let e = Checkpoint::from_bytes(edited, "edited").unwrap_err().to_string();
            assert!(e.contains("edited"), "{e}");
        }
    }
    // A round trip through save keeps every byte.
    let again = dir.path().join("again.safetensors");
    checkpoint.save(&again).unwrap();
    assert_eq!(std::fs::read(&again).unwrap(), bytes);
}

/// Dropout at positions 2 and 10: their generators are named `2.rng` and `10.rng`, which the
/// checkpoint's metadata (a JSON object, its keys sorted) stores in the other order.
fn model_with_two_dropouts(seed: u64) -> Sequential {
    let mut b =
        Sequential::builder(&[4]).add(Dense::new(4, 8).seed(seed)).add(Relu::new()).add(Dropout::new(0.2));
    for k in 0..3 {
        b = b.add(Dense::new(8, 8).seed(seed + 1 + k)).add(Relu::new());
    }
    b.add(Dense::new(8, 8).seed(seed + 9))
        .add(Dropout::new(0.2))
        .add(Dense::new(8, 3).seed(seed + 10))
        .build()
        .unwrap()
}

#[test]
fn generators_resume_by_name_whatever_order_the_metadata_keeps() {
    let (train, val) = (data(5), data(6));
    let dir = tempfile::tempdir().unwrap();
    let loss = CrossEntropyLoss::new();
    let names: Vec<String> = {
        let mut names = Vec::new();
        model_with_two_dropouts(1).visit(&mut |n, s| {
            if let State::Rng(_) = s {
                names.push(n.to_string());
            }
        });
        names
    };
    assert_eq!(names, ["2.rng", "10.rng"]);
    let (mut straight, mut opt) = (model_with_two_dropouts(1), Adam::new(0.01));
    let h = straight.fit(&train, &loss, &mut opt, options(&val).epochs(4)).unwrap();
    let expected = outcome(&straight, &opt, &h);

    let (mut first, mut opt) = (model_with_two_dropouts(1), Adam::new(0.01));
    let keep = Checkpoints::in_dir(dir.path());
    first.fit(&train, &loss, &mut opt, options(&val).epochs(2).checkpoints(keep.clone())).unwrap();
    let checkpoint = Checkpoint::load(keep.last_path()).unwrap();
    let (mut resumed, mut opt) = (model_with_two_dropouts(30), Adam::new(0.01));
    let h = resumed.fit(&train, &loss, &mut opt, options(&val).epochs(4).resume(&checkpoint)).unwrap();
    assert_eq!(outcome(&resumed, &opt, &h), expected);
    // Each generator went back to its own layer: the next training pass draws the same masks.
    let x = Tensor::rand_uniform(&[8, 4], -1.0, 1.0, 3);
    assert_eq!(resumed.forward(&x, Pass::TRAIN).data(), straight.forward(&x, Pass::TRAIN).data());
}

#[test]
fn a_run_whose_patience_ran_out_on_its_last_epoch_is_not_resumed() {
    let (train, val) = (data(5), data(6));
    let dir = tempfile::tempdir().unwrap();
    let loss = CrossEntropyLoss::new();
    // A rate of zero: the validation loss never improves after the first epoch, so patience 2
    // runs out at epoch 3 — the last epoch of the first run.
    let opts = |v| {
        FitOptions::new()
            .batch_size(16)
            .seed(4)
            .verbose(false)
            .validation(v)
            .early_stopping(EarlyStopping::new(Monitor::ValLoss, 2))
    };
    let h = model().fit(&train, &loss, &mut Sgd::new(0.0), opts(&val).epochs(10)).unwrap();
    assert_eq!((h.epochs.len(), h.stopped_early), (3, true));
    let keep = Checkpoints::in_dir(dir.path());
    let h = model()
        .fit(&train, &loss, &mut Sgd::new(0.0), opts(&val).epochs(3).checkpoints(keep.clone()))
        .unwrap();
    assert_eq!((h.epochs.len(), h.stopped_early), (3, false), "stopped on its last epoch");
    let checkpoint = Checkpoint::load(keep.last_path()).unwrap();
    let e = model()
        .fit(&train, &loss, &mut Sgd::new(0.0), opts(&val).epochs(10).resume(&checkpoint))
        .unwrap_err();
    assert!(e.to_string().contains("patience"), "{e}");
}

#[test]
fn restoring_the_best_weights_is_kept_or_refused_when_the_setting_changes_on_resume() {
    let (train, val) = (data(5), data(6));
    let dir = tempfile::tempdir().unwrap();
    let loss = CrossEntropyLoss::new();
    fn opts(v: &Dataset, restore_best: bool) -> FitOptions<'_> {
        let mut es = EarlyStopping::new(Monitor::ValLoss, 50);
        es.restore_best = restore_best;
        FitOptions::new().batch_size(16).seed(4).verbose(false).validation(v).early_stopping(es)
    }
    for (first, then) in [(true, false), (false, true)] {
        let keep = Checkpoints::in_dir(dir.path().join(format!("{first}")));
        let mut opt = Adam::new(0.05);
        model().fit(&train, &loss, &mut opt, opts(&val, first).epochs(3).checkpoints(keep.clone())).unwrap();
        let checkpoint = Checkpoint::load(keep.last_path()).unwrap();
        let (mut m, mut opt) = (model(), Adam::new(0.05));
        let resumed = m.fit(&train, &loss, &mut opt, opts(&val, then).epochs(6).resume(&checkpoint));
        if then {
            // The best epoch's weights are not in the checkpoint: refused, not made up.
            let e = resumed.unwrap_err().to_string();
            assert!(e.contains("restore_best"), "{e}");
        } else {
            // Not restoring: the model ends with its last epoch's weights, as a straight run does.
            resumed.unwrap();
            let (mut straight, mut opt) = (model(), Adam::new(0.05));
            straight.fit(&train, &loss, &mut opt, opts(&val, false).epochs(6)).unwrap();
            assert_eq!(m.state_dict(), straight.state_dict());
        }
    }
}

/// A stream cut into 4 chunks of 16 sequences, in order: a stateful LSTM carries each row's state
/// from one batch into the next, and across epochs.
fn stream() -> Dataset {
    let x = Tensor::from_vec(&[64, 10, 3], (0..1920).map(|i| (i as f32 * 0.37).sin()).collect()).unwrap();
    let y = Tensor::from_vec(&[64, 10, 1], (0..640).map(|i| (i as f32 * 0.11).cos()).collect()).unwrap();
    Dataset::regression(x, y).unwrap()
}

fn stateful_model(seed: u64) -> Sequential {
    Sequential::builder(&[10, 3])
        .add(Lstm::new(3, 8).seed(seed).stateful())
        .add(Dense::new(8, 1).seed(seed + 1))
        .build()
        .unwrap()
}

#[test]
fn a_stateful_layers_carried_state_resumes_with_the_checkpoint() {
    let data = stream();
    let dir = tempfile::tempdir().unwrap();
    let loss = MseLoss::new();
    let opts = || FitOptions::new().batch_size(16).shuffle(false).seed(7).verbose(false);
    let (mut straight, mut opt) = (stateful_model(1), Adam::new(0.01));
    let h = straight.fit(&data, &loss, &mut opt, opts().epochs(4)).unwrap();
    let expected = outcome(&straight, &opt, &h);

    let keep = Checkpoints::in_dir(dir.path());
    let (mut first, mut opt) = (stateful_model(1), Adam::new(0.01));
    first.fit(&data, &loss, &mut opt, opts().epochs(2).checkpoints(keep.clone())).unwrap();
    let checkpoint = Checkpoint::load(keep.last_path()).unwrap();
    let (mut resumed, mut opt) = (stateful_model(9), Adam::new(0.01));
    let h = resumed.fit(&data, &loss, &mut opt, opts().epochs(4).resume(&checkpoint)).unwrap();
    assert_eq!(outcome(&resumed, &opt, &h), expected);
    // And the stream goes on from the same state.
    let x = data.inputs().select_outer(&(0..16).collect::<Vec<_>>());
    assert_eq!(resumed.predict(&x, 16).unwrap(), straight.predict(&x, 16).unwrap());

    // A model without that carried state is another architecture.
    let mut plain = Sequential::builder(&[10, 3])
        .add(Lstm::new(3, 8).seed(1))
        .add(Dense::new(8, 1).seed(2))
        .build()
        .unwrap();
    let before = plain.state_dict();
    let e = plain.fit(&data, &loss, &mut Adam::new(0.01), opts().epochs(4).resume(&checkpoint)).unwrap_err();
    assert!(e.to_string().contains("carried"), "{e}");
    assert_eq!(plain.state_dict(), before);
}

#[test]
fn fit_refuses_to_shuffle_the_batches_of_a_stateful_layer() {
    let mut model = stateful_model(1);
    let before = model.state_dict();
    let e = model.fit(
        &stream(),
        &MseLoss::new(),
        &mut Adam::new(0.01),
        FitOptions::new().epochs(1).verbose(false),
    );
    let e = e.unwrap_err().to_string();
    assert!(e.contains("0.carried_state") && e.contains("shuffle(false)"), "{e}");
    assert_eq!(model.state_dict(), before);
}

/// A checkpoint (resealed, so its checksum holds) whose optimizer state names a parameter the
/// model does not have is refused before the weights, the optimizer or a DP-SGD step change:
/// the buffers are checked inside the restore, and the step's state is loaded last (the check
/// had run after the restore, which had overwritten the weights by then).
#[test]
fn an_optimizer_state_of_another_model_is_refused_before_anything_changes() {
    let train = data(7);
    let dir = tempfile::tempdir().unwrap();
    let loss = CrossEntropyLoss::new();
    let dp =
        DpOptions { sample_rate: 0.25, noise_multiplier: 1.1, clip: 1.0, delta: 1e-5, seed: 3, epochs: 1 };
    let keep = Checkpoints::in_dir(dir.path());
    let mut step = DpSgd::new(&dp, train.len()).unwrap();
    let o = FitOptions::new().seed(5).verbose(false).epochs(2).step(&mut step).checkpoints(keep.clone());
    model().fit(&train, &loss, &mut Adam::new(0.01), o).unwrap();
    // The same file with one more moment, for a parameter named "ghost".
    let bytes = std::fs::read(keep.last_path()).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().unwrap();
    let ghost = [0u8; 8];
    let mut tensors = file.tensors();
    tensors.push((
        "optimizer.exp_avg.ghost".into(),
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2], &ghost).unwrap(),
    ));
    let edited = common::resealed(&safetensors::serialize(tensors, Some(meta.clone())).unwrap(), meta);
    let checkpoint = Checkpoint::from_bytes(edited, "edited.safetensors").unwrap();

    let mut fresh = model_seeded(11);
    let (before, mut opt) = (fresh.state_dict(), Adam::new(0.01));
    let mut step = DpSgd::new(&dp, train.len()).unwrap();
    let steps_before = (step.steps(), step.save_state());
    let o = FitOptions::new().seed(5).verbose(false).epochs(4).step(&mut step).resume(&checkpoint);
    let e = fresh.fit(&train, &loss, &mut opt, o).unwrap_err().to_string();
    assert!(e.contains("ghost") && e.contains("edited.safetensors"), "{e}");
    assert_eq!(fresh.state_dict(), before, "the weights are as they were");
    let mut state = OptimizerState::default();
    opt.save_state(&mut state);
    assert_eq!(state, OptimizerState::default(), "the optimizer holds no moments");
    assert_eq!((step.steps(), step.save_state()), steps_before, "the step's generators and count");
}

/// The stored best figures belong to the figure they were measured on: a run whose early
/// stopping or best checkpoint would watch another figure (the validation loss where the stored
/// run watched the training loss) is refused by name — its losses would be compared with the other
/// run's and never improve on them. A refused resume leaves no new checkpoint folder behind, and a
/// checkpoint's history names early stopping's best epoch so far.
#[test]
fn a_resume_that_watches_another_figure_is_refused_and_leaves_no_folder() {
    let train = data(7);
    let val = data(9);
    let dir = tempfile::tempdir().unwrap();
    let loss = CrossEntropyLoss::new();
    let keep = Checkpoints::in_dir(dir.path().join("first"));
    let o = FitOptions::new()
        .epochs(3)
        .seed(4)
        .verbose(false)
        .early_stopping(EarlyStopping::new(Monitor::TrainLoss, 5))
        .checkpoints(keep.clone());
    let h = model().fit(&train, &loss, &mut Adam::new(0.01), o).unwrap();
    let checkpoint = Checkpoint::load(keep.last_path()).unwrap();
    assert_eq!(
        checkpoint.history().best_epoch,
        h.best_epoch,
        "the checkpoint's history knows the best epoch"
    );
    assert!(h.best_epoch.is_some());

    let fresh = || FitOptions::new().epochs(5).seed(4).verbose(false).resume(&checkpoint);
    // Early stopping on another figure.
    let watched = fresh().validation(&val).early_stopping(EarlyStopping::new(Monitor::ValLoss, 5));
    let e = model().fit(&train, &loss, &mut Adam::new(0.01), watched).unwrap_err().to_string();
    assert!(e.contains("TrainLoss") && e.contains("ValLoss") && e.contains("same monitor"), "{e}");
    // The same early stopping, but the best checkpoint chosen by another figure, in a new folder
    // that the refusal removes again.
    let other = dir.path().join("second/deeper");
    let keep_other = Checkpoints::in_dir(&other).best_by(Monitor::ValLoss);
    let watched = fresh()
        .validation(&val)
        .early_stopping(EarlyStopping::new(Monitor::TrainLoss, 5))
        .checkpoints(keep_other);
    let e = model().fit(&train, &loss, &mut Adam::new(0.01), watched).unwrap_err().to_string();
    assert!(e.contains("best_by(TrainLoss)"), "{e}");
    assert!(!dir.path().join("second").exists(), "the refused run left its new folder behind");
    // A resume refused by the checkpoint itself (another optimizer kind) removes it too.
    let keep_new = Checkpoints::in_dir(dir.path().join("third"));
    let o = fresh().early_stopping(EarlyStopping::new(Monitor::TrainLoss, 5)).checkpoints(keep_new);
    let e = model().fit(&train, &loss, &mut Sgd::new(0.01), o).unwrap_err().to_string();
    assert!(e.contains("not of SGD"), "{e}");
    assert!(!dir.path().join("third").exists());
    // The same figures go on.
    let same = fresh().early_stopping(EarlyStopping::new(Monitor::TrainLoss, 5)).checkpoints(keep);
    model().fit(&train, &loss, &mut Adam::new(0.01), same).unwrap();
    // Without early stopping, the resumed run's history names no best epoch (the stored run's
    // early stopping chose that one, and this run restores nothing).
    let h = model().fit(&train, &loss, &mut Adam::new(0.01), fresh()).unwrap();
    assert_eq!(h.best_epoch, None);
    // Early stopping added on resume, to a run without it: refused (its memory would start from
    // nothing, and the resumed run's first epoch would be "best" whatever came before).
    let plain = Checkpoints::in_dir(dir.path().join("plain"));
    let o = FitOptions::new().epochs(3).seed(4).verbose(false).checkpoints(plain.clone());
    model().fit(&train, &loss, &mut Adam::new(0.01), o).unwrap();
    let stored = Checkpoint::load(plain.last_path()).unwrap();
    let added = FitOptions::new()
        .epochs(5)
        .seed(4)
        .verbose(false)
        .resume(&stored)
        .early_stopping(EarlyStopping::new(Monitor::TrainLoss, 2));
    let e = model().fit(&train, &loss, &mut Adam::new(0.01), added).unwrap_err().to_string();
    assert!(e.contains("the checkpoint's run did not") && e.contains("3 epochs before"), "{e}");
    // Said first, before advice about the best file's figure that would only lead here.
    let added = FitOptions::new()
        .epochs(5)
        .seed(4)
        .verbose(false)
        .resume(&stored)
        .validation(&val)
        .early_stopping(EarlyStopping::new(Monitor::ValLoss, 2))
        .checkpoints(Checkpoints::in_dir(dir.path().join("fourth")));
    let e = model().fit(&train, &loss, &mut Adam::new(0.01), added).unwrap_err().to_string();
    assert!(e.contains("the checkpoint's run did not"), "{e}");
}

/// `fit` starts each epoch's stream and each validation pass of a stateful layer from zeros, so
/// the figures do not depend on the batch sizes: with the weights held still (lr 0), every epoch
/// gives the same training loss and the same validation loss, whatever size the validation
/// batches are (a validation batch of another size had reset the state, one of the same size had
/// carried it on into the next epoch).
#[test]
fn a_stateful_layer_starts_every_epoch_and_validation_from_zeros() {
    let data = stream();
    let loss = MseLoss::new();
    let first = data.subset(&(0..16).collect::<Vec<_>>());
    let mut reference = None;
    for val_batch in [16, 64] {
        let mut model = stateful_model(1);
        let o = FitOptions::new()
            .batch_size(16)
            .shuffle(false)
            .epochs(3)
            .verbose(false)
            .validation(&data)
            .validation_batch_size(val_batch);
        let h = model.fit(&data, &loss, &mut Sgd::new(0.0), o).unwrap();
        let train: Vec<f32> = h.epochs.iter().map(|e| e.train_loss).collect();
        assert!(train.iter().all(|&l| l == train[0]), "batches of {val_batch}: {train:?}");
        let val: Vec<f32> = h.epochs.iter().map(|e| e.val_loss.unwrap()).collect();
        assert!(val.iter().all(|&l| l == val[0]), "batches of {val_batch}: {val:?}");
        // The training loss is the stream's from zeros whatever validation did.
        match reference {
            None => reference = Some(train[0]),
            Some(r) => assert_eq!(train[0], r),
        }
        // And the first batch's loss from zeros is what a fresh model evaluates on it.
        let mut fresh = stateful_model(1);
        let e = fresh.evaluate(&first, &loss, 16).unwrap().loss;
        let mut once = stateful_model(1);
        let h1 = once
            .fit(
                &first,
                &loss,
                &mut Sgd::new(0.0),
                FitOptions::new().batch_size(16).shuffle(false).epochs(2).verbose(false),
            )
            .unwrap();
        assert_eq!(h1.epochs[1].train_loss, e, "epoch 2 did not start from zeros");
    }
}

/// Bucketing by length reorders the samples even without shuffling, so row s of a batch would
/// continue another sequence's state: refused for a stateful layer, as shuffling is.
#[test]
fn fit_refuses_bucketed_batches_for_a_stateful_layer() {
    use backprop::train::Bucketed;
    let data = stream();
    let lengths: Vec<usize> = (0..64).map(|i| 1 + i % 10).collect();
    let data = data.with_lengths(lengths).unwrap();
    let mut model = stateful_model(1);
    let before = model.state_dict();
    let mut step = Bucketed::by_lengths_of("input");
    let o = FitOptions::new().batch_size(16).shuffle(false).epochs(1).verbose(false).step(&mut step);
    let e = model.fit(&data, &MseLoss::new(), &mut Adam::new(0.01), o).unwrap_err().to_string();
    assert!(e.contains("0.carried_state") && e.contains("bucketed by the lengths"), "{e}");
    assert_eq!(model.state_dict(), before);
}

/// A checkpoint that cannot be written stops `fit` with a message naming the epoch and the
/// folder; `best` is written before `last`, so `last` never records a best epoch that `best`
/// does not hold (a resume from it would compare against a figure no file has).
#[test]
fn a_checkpoint_that_cannot_be_written_names_the_epoch_and_best_goes_first() {
    let train = data(3);
    let dir = tempfile::tempdir().unwrap();
    let keep = Checkpoints::in_dir(dir.path());
    let best = keep.best_path();
    let o = FitOptions::new().seed(5).verbose(false).epochs(3).checkpoints(keep.clone()).on_epoch_end(|s| {
        if s.epoch == 2 {
            // A folder (not empty) where best.safetensors goes: its rename fails.
            std::fs::remove_file(&best).unwrap();
            std::fs::create_dir(&best).unwrap();
            std::fs::write(best.join("x"), b"x").unwrap();
        }
    });
    let e = model().fit(&train, &CrossEntropyLoss::new(), &mut Adam::new(0.01), o).unwrap_err().to_string();
    assert!(
        e.contains("the checkpoint after epoch 2 could not be written") && e.contains("best.safetensors"),
        "{e}"
    );
    // `last` still holds epoch 1: epoch 2's was not written after its `best` failed.
    assert_eq!(Checkpoint::load(keep.last_path()).unwrap().epoch(), 1);
}

/// A batch whose targets are all masked is passed over without a step, but a model that carries
/// state still runs its forward pass on it: the next batch's rows continue that batch's state
/// (they had started from the state before it). An epoch whose every batch is passed over
/// reports a loss of 0 and steps nothing.
#[test]
fn a_passed_over_batch_still_moves_a_stateful_layers_stream() {
    // The stream's targets moved into [0, 1] for a masked binary cross-entropy.
    let data = stream();
    let Targets::Values(y) = data.targets() else { unreachable!() };
    let unit = y.map(|v| (v + 1.0) / 2.0);
    let data = Dataset::regression(data.inputs().clone(), unit.clone()).unwrap();
    let mut t = unit.clone();
    t.data_mut()[..160].fill(f32::NAN); // samples 0..16: the first batch, all masked
    let masked = Dataset::regression(data.inputs().clone(), t).unwrap();
    let loss = BceWithLogitsLoss::new().ignore_nan_targets();
    let mut losses = Vec::new();
    let o = FitOptions::new().batch_size(16).shuffle(false).epochs(1).verbose(false).on_batch_end(|b| {
        losses.push((b.batch, b.loss));
    });
    stateful_model(1).fit(&masked, &loss, &mut Sgd::new(0.0), o).unwrap();
    assert_eq!(losses.iter().map(|l| l.0).collect::<Vec<_>>(), [2, 3, 4], "batch 1 passed over");
    // Batch 2 from the state batch 1 left (the weights held still by lr 0).
    let mut reference = stateful_model(1);
    let rows = |r: std::ops::Range<usize>| r.collect::<Vec<_>>();
    reference.predict(&data.inputs().select_outer(&rows(0..16)), 16).unwrap();
    let second = masked.subset(&rows(16..32));
    let expected = reference.evaluate(&second, &loss, 16).unwrap().loss;
    assert!((losses[0].1 - expected).abs() < 1e-6, "{} against {expected}", losses[0].1);

    // Every counted target in the samples drop_last leaves out: nothing trains, the epoch has no
    // loss (NaN: a 0 had read as a perfect epoch to early stopping on the training loss) and the
    // weights are as they were (with shuffling, another epoch may count it).
    let mut t = unit;
    t.data_mut()[..630].fill(f32::NAN); // only sample 63 counts
    let tail = Dataset::regression(data.inputs().clone(), t).unwrap();
    let o = FitOptions::new().batch_size(21).shuffle(false).drop_last(true).epochs(1).verbose(false);
    let mut plain = Sequential::builder(&[10, 3]).add(Lstm::new(3, 8)).add(Dense::new(8, 1)).build().unwrap();
    let before = plain.state_dict();
    let h = plain.fit(&tail, &loss, &mut Sgd::new(0.1).momentum(0.9), o).unwrap();
    assert!(h.epochs[0].train_loss.is_nan(), "{:?}", h.epochs[0]);
    assert_eq!(plain.state_dict(), before, "a step on batches of padding alone");
    // Early stopping on the training loss passes such an epoch over: with the counted sample
    // left out every epoch, no epoch improves or uses up patience, and all three run.
    let o = FitOptions::new()
        .batch_size(21)
        .shuffle(false)
        .drop_last(true)
        .epochs(3)
        .verbose(false)
        .early_stopping(EarlyStopping::new(Monitor::TrainLoss, 1));
    let h = plain.fit(&tail, &loss, &mut Sgd::new(0.1), o).unwrap();
    assert_eq!((h.epochs.len(), h.stopped_early, h.best_epoch), (3, false, None), "{h:?}");
    // Such a run resumes like any other: its checkpoint keeps no best weights because no epoch
    // was best, not because they were left out.
    let dir = tempfile::tempdir().unwrap();
    let keep = Checkpoints::in_dir(dir.path());
    let options = |epochs: usize| {
        FitOptions::new()
            .batch_size(21)
            .shuffle(false)
            .drop_last(true)
            .epochs(epochs)
            .verbose(false)
            .early_stopping(EarlyStopping::new(Monitor::TrainLoss, 5))
    };
    plain.fit(&tail, &loss, &mut Sgd::new(0.1), options(1).checkpoints(keep.clone())).unwrap();
    let stored = Checkpoint::load(keep.last_path()).unwrap();
    let h = plain.fit(&tail, &loss, &mut Sgd::new(0.1), options(2).resume(&stored)).unwrap();
    assert_eq!((h.epochs.len(), h.best_epoch), (2, None), "{h:?}");
}
