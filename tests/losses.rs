//! Losses: hand-worked values, gradient checks, stability, and bad targets.

use backprop::Tensor;
use backprop::gradcheck::{Options, check_loss};
use backprop::loss::*;

fn t(shape: &[usize], v: &[f32]) -> Tensor {
    Tensor::from_vec(shape, v.to_vec()).unwrap()
}

#[test]
fn mse_by_hand_and_gradcheck() {
    let z = t(&[2, 2], &[1., 2., 3., 4.]);
    let y = t(&[2, 2], &[1., 0., 0., 4.]);
    let (l, g) = MseLoss::new().loss_and_grad(&z, (&y).into()).unwrap();
    assert_eq!(l, (4. + 9.) / 4.);
    assert_eq!(g.data(), &[0., 1., 1.5, 0.]); // 2(z − t)/4
    let z = Tensor::randn(&[3, 5], 0.0, 1.0, 1);
    let y = Tensor::randn(&[3, 5], 0.0, 1.0, 2);
    let r = check_loss(&MseLoss::new(), &z, (&y).into(), &Options::default()).unwrap();
    assert!(r.passes(1e-2), "{r}");
}

#[test]
fn cross_entropy_by_hand() {
    // Logits [ln 1, ln 3] → p = [¼, ¾]. Label 1: L = −ln ¾; label 0: L = −ln ¼.
    let z = t(&[2, 2], &[0., 3f32.ln(), 0., 3f32.ln()]);
    let (l, g) = CrossEntropyLoss::new().loss_and_grad(&z, (&[1usize, 0][..]).into()).unwrap();
    let want = (-(0.75f32).ln() - (0.25f32).ln()) / 2.0;
    assert!((l - want).abs() < 1e-6, "{l} vs {want}");
    // (p − one-hot)/N
    let expect = [0.25 / 2., -0.25 / 2., -0.75 / 2., 0.75 / 2.];
    for (a, b) in g.data().iter().zip(expect) {
        assert!((a - b).abs() < 1e-6, "{g}");
    }
}

#[test]
fn cross_entropy_label_smoothing_by_hand() {
    // C = 2, ε = 0.2: q = [0.1, 0.9] for label 1. Logits 0, 0: p = [½, ½], L = −(0.1 + 0.9)·ln ½ = ln 2.
    let z = t(&[1, 2], &[0., 0.]);
    let ce = CrossEntropyLoss::new().label_smoothing(0.2);
    let (l, g) = ce.loss_and_grad(&z, (&[1usize][..]).into()).unwrap();
    assert!((l - 2f32.ln()).abs() < 1e-6);
    assert!((g.data()[0] - 0.4).abs() < 1e-6 && (g.data()[1] + 0.4).abs() < 1e-6, "{g}"); // p − q
}

#[test]
fn cross_entropy_gradcheck() {
    let z = Tensor::randn(&[4, 5], 0.0, 2.0, 1);
    let labels = [0usize, 4, 2, 2];
    for ce in [CrossEntropyLoss::new(), CrossEntropyLoss::new().label_smoothing(0.1)] {
        let r = check_loss(&ce, &z, (&labels[..]).into(), &Options::default()).unwrap();
        assert!(r.passes(1e-2), "{r}");
    }
}

#[test]
fn cross_entropy_is_finite_at_extreme_logits() {
    let z = t(&[2, 3], &[1000., -1000., 0., -1000., 1000., 1000.]);
    let labels = [1usize, 2];
    let (l, g) = CrossEntropyLoss::new().loss_and_grad(&z, (&labels[..]).into()).unwrap();
    // Sample 0: p ≈ [1, 0, 0], label 1 → −log p₁ = 2000. Sample 1: p = [0, ½, ½] → ln 2.
    assert!(l.is_finite());
    assert!((l - (2000.0 + 2f32.ln()) / 2.0).abs() < 1e-2, "{l}");
    // (softmax − one-hot)/N
    let expect = [0.5, -0.5, 0., 0., 0.25, -0.25];
    for (a, b) in g.data().iter().zip(expect) {
        assert!(a.is_finite() && (a - b).abs() < 1e-6, "{g}");
    }
}

/// A logit of −∞ (a class masked out) that is not the label: its probability is 0 and the loss
/// is the other classes' (`F.cross_entropy` gives the same), not `0·∞ = NaN`; its gradient is 0.
/// Logits `[0, −∞, 1]`, label 2: `p = [1, 0, e]/(1 + e)`, `L = ln(1 + e) − 1`.
#[test]
fn cross_entropy_takes_a_masked_class_as_probability_zero() {
    let z = t(&[1, 3], &[0., f32::NEG_INFINITY, 1.]);
    let (l, g) = CrossEntropyLoss::new().loss_and_grad(&z, (&[2usize][..]).into()).unwrap();
    let e = std::f32::consts::E;
    assert!((l - ((1.0 + e).ln() - 1.0)).abs() < 1e-6, "loss {l}");
    let want = [1.0 / (1.0 + e), 0.0, e / (1.0 + e) - 1.0];
    for (got, want) in g.data().iter().zip(want) {
        assert!((got - want).abs() < 1e-6, "{g}");
    }
    // With label smoothing every class has q > 0: −log 0 = ∞ counts, and the loss is infinite.
    let smoothed = CrossEntropyLoss::new().label_smoothing(0.1).loss(&z, (&[2usize][..]).into()).unwrap();
    assert_eq!(smoothed, f32::INFINITY);
}

/// The loss as computed (each `e^(z − m)` in f32, vectorised) against its definition in f64
/// (`f64::exp` per logit): the loss within a few f32 ulps, and each probability within the error
/// of its f32 evaluation — `z − m` rounded to f32 (half an ulp of `|z − m|`, which `e^(z − m)`
/// turns into a relative error of `|z − m|·ε/2`) plus a few ulps of the exponential — on rows of
/// 1 to 65 classes with logits spread from ±0.1 to ±60, with and without label smoothing. (The
/// gradient `(p − q)/N` is compared relative to `(p + q)/N`: where `p ≈ q` the difference
/// cancels, and only `p`'s own error can remain. PyTorch's `log_softmax` in f32 rounds `z − m`
/// the same way. Where `e^(z − m)` is below f32's smallest normal value the loss takes it as 0,
/// so a gradient value under that, over `N`, may be 0: the tolerance's floor.)
#[test]
fn cross_entropy_matches_its_f64_definition() {
    for (c, spread, eps) in
        [(1usize, 1.0f32, 0.0f64), (7, 0.1, 0.0), (65, 4.0, 0.0), (65, 60.0, 0.1), (10, 20.0, 0.2)]
    {
        let n = 33;
        let z = Tensor::randn(&[n, c], 0.0, spread, c as u64 + spread as u64);
        let labels: Vec<usize> = (0..n).map(|i| (i * 7) % c).collect();
        let ce = CrossEntropyLoss::new().label_smoothing(eps as f32);
        let (l, g) = ce.loss_and_grad(&z, (&labels[..]).into()).unwrap();
        let mut loss = 0.0f64;
        for (r, (row, &label)) in z.data().chunks(c).zip(&labels).enumerate() {
            let m = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
            let sum: f64 = row.iter().map(|&v| (v as f64 - m).exp()).sum();
            for (k, &v) in row.iter().enumerate() {
                let p = (v as f64 - m).exp() / sum;
                let q = (1.0 - eps) * f64::from(u8::from(k == label)) + eps / c as f64;
                loss -= q * (v as f64 - m - sum.ln());
                let (want, got) = ((p - q) / n as f64, g.data()[r * c + k] as f64);
                let ulps = 4.0 + (v as f64 - m).abs() / 2.0;
                let floor = f32::MIN_POSITIVE as f64 / n as f64;
                let tolerance = ulps * f32::EPSILON as f64 * (p + q) / n as f64 + floor;
                assert!(
                    (got - want).abs() <= tolerance,
                    "C = {c}, spread {spread}: dL/dz[{r}, {k}] = {got}, want {want}"
                );
            }
        }
        let want = loss / n as f64;
        assert!(
            (l as f64 - want).abs() <= 4.0 * f32::EPSILON as f64 * want.abs().max(1e-6),
            "C = {c}, spread {spread}: loss {l}, want {want}"
        );
    }
}

#[test]
fn bce_with_logits_by_hand_gradcheck_and_stability() {
    let z = t(&[1, 2], &[0., 2f32.ln()]);
    let y = t(&[1, 2], &[1., 0.]);
    let (l, g) = BceWithLogitsLoss::new().loss_and_grad(&z, (&y).into()).unwrap();
    // σ(0) = ½, σ(ln 2) = ⅔: L = (−ln ½ − ln(1 − ⅔))/2 = (ln 2 + ln 3)/2
    assert!((l - (2f32.ln() + 3f32.ln()) / 2.0).abs() < 1e-6, "{l}");
    assert!((g.data()[0] + 0.25).abs() < 1e-6 && (g.data()[1] - 1. / 3.).abs() < 1e-6, "{g}");
    let z = Tensor::randn(&[3, 4], 0.0, 2.0, 1);
    let y = Tensor::rand_uniform(&[3, 4], 0.0, 1.0, 2);
    let r = check_loss(&BceWithLogitsLoss::new(), &z, (&y).into(), &Options::default()).unwrap();
    assert!(r.passes(1e-2), "{r}");
    let (l, g) = BceWithLogitsLoss::new()
        .loss_and_grad(&t(&[2], &[1000., -1000.]), (&t(&[2], &[0., 1.])).into())
        .unwrap();
    assert!((l - 1000.0).abs() < 1e-3 && g.all_finite());
}

#[test]
fn bad_targets_are_clear_errors() {
    let z = Tensor::zeros(&[3, 4]);
    let e = CrossEntropyLoss::new().loss(&z, (&[0usize, 4, 1][..]).into()).unwrap_err().to_string();
    assert!(e.contains("label 4") && e.contains("4 classes") && e.contains("sample 1"), "{e}");
    let e = CrossEntropyLoss::new().loss(&z, (&[0usize, 1][..]).into()).unwrap_err().to_string();
    assert!(e.contains("3 rows") && e.contains("2 labels"), "{e}");
    let e =
        CrossEntropyLoss::new().loss(&Tensor::zeros(&[3]), (&[0usize][..]).into()).unwrap_err().to_string();
    assert!(e.contains("[3]"), "{e}");
    let e = MseLoss::new().loss(&z, (&Tensor::zeros(&[4, 3])).into()).unwrap_err().to_string();
    assert!(e.contains("[3, 4]") && e.contains("[4, 3]"), "{e}");
    assert!(MseLoss::new().loss(&z, (&[0usize][..]).into()).is_err());
    assert!(CrossEntropyLoss::new().loss(&z, (&z).into()).is_err());
}

#[test]
fn softmax_rows_sum_to_one() {
    let p = softmax(&t(&[2, 3], &[1., 2., 3., 1000., 0., -1000.]));
    for row in p.data().chunks(3) {
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }
    assert!((p.data()[3] - 1.0).abs() < 1e-6);
}

/// A data set's loss is the mean over every term that counts, whatever the batch size: with
/// padded class ids (NaN), a batch of one sample with one valid step and another with two
/// valid steps give the mean over the three steps — as the loss over all samples at once does —
/// not the mean of the two batches' means (which had made the validation loss, and so early
/// stopping, depend on the batch size). Without padding, nothing changes: the samples weigh alike.
#[test]
fn a_data_sets_loss_is_the_mean_over_its_terms_in_any_batches() {
    use backprop::prelude::{Dataset, Dense, Sequential};
    let mut model = Sequential::builder(&[2, 1]).add(Dense::new(1, 3)).seed(4).build().unwrap();
    let x = Tensor::from_vec(&[3, 2, 1], vec![0.5, -1.0, 2.0, 0.25, -0.7, 1.5]).unwrap();
    let ids = Tensor::from_vec(&[3, 2], vec![0.0, f32::NAN, 1.0, 2.0, 2.0, 0.0]).unwrap();
    let (ce, bce) = (CrossEntropyLoss::new(), BceWithLogitsLoss::new().ignore_nan_targets());
    let logits = model.predict(&x, 3).unwrap();
    let data = Dataset::regression(x.clone(), ids.clone()).unwrap();
    let whole = ce.loss(&logits, Target::Values(&ids)).unwrap();
    for batch in [1, 2, 3] {
        let l = model.evaluate(&data, &ce, batch).unwrap().loss;
        assert!((l - whole).abs() < 1e-6, "batch {batch}: {l} against {whole}");
    }
    // BCE that skips NaN targets: the mean over the values that count.
    let mut t = Tensor::zeros(&[3, 2, 3]);
    t.data_mut()
        .iter_mut()
        .enumerate()
        .for_each(|(i, v)| *v = if i % 4 == 1 { f32::NAN } else { (i % 2) as f32 });
    let whole = bce.loss(&logits, Target::Values(&t)).unwrap();
    let data = Dataset::regression(x, t).unwrap();
    for batch in [1, 2] {
        let l = model.evaluate(&data, &bce, batch).unwrap().loss;
        assert!((l - whole).abs() < 1e-6, "BCE, batch {batch}: {l} against {whole}");
    }
}

/// For a sequence's `[N, T, C]` outputs the classes sit on the last axis: `LogSoftmax::last_axis`
/// then `NllLoss` is `CrossEntropyLoss` on the logits (loss and gradient through the layer), and
/// `LogSoftmax::new()` (axis 1, the steps) is refused by the loss instead of training another
/// objective.
#[test]
fn log_softmax_over_the_last_axis_then_nll_is_cross_entropy_for_sequences() {
    use backprop::layers::{InputGrad, Layer, LogSoftmax, Pass, Softmax};
    let z = Tensor::from_vec(&[2, 3, 4], (0..24).map(|i| (i as f32 * 0.77).sin() * 3.0).collect()).unwrap();
    let ids = Tensor::from_vec(&[2, 3], vec![0., 3., 1., 2., 2., 0.]).unwrap();
    let (ce, ce_grad) = CrossEntropyLoss::new().loss_and_grad(&z, (&ids).into()).unwrap();
    let mut layer = LogSoftmax::last_axis();
    let lp = layer.forward(&z, Pass::TRAIN);
    let (nll, g) = NllLoss::new().loss_and_grad(&lp, (&ids).into()).unwrap();
    assert!((nll - ce).abs() < 1e-6, "{nll} vs {ce}");
    let dz = layer.backward(&g, InputGrad::Needed).unwrap();
    assert!(dz.data().iter().zip(ce_grad.data()).all(|(a, b)| (a - b).abs() < 1e-6));
    // Softmax over the last axis: every row of C sums to 1.
    let p = Softmax::last_axis().forward(&z, Pass::EVAL);
    assert!(p.data().chunks(4).all(|row| (row.iter().sum::<f32>() - 1.0).abs() < 1e-6));
    // Axis 1 normalises over the steps: refused by name.
    let lp1 = LogSoftmax::new().forward(&z, Pass::EVAL);
    let e = NllLoss::new().loss_and_grad(&lp1, (&ids).into()).unwrap_err().to_string();
    assert!(e.contains("LogSoftmax::last_axis()"), "{e}");
}

/// A batch whose every target is masked (NaN padding the loss ignores) has no loss to descend:
/// `train_step` refuses it (the weights and the optimizer's momentum unchanged, where a step would
/// move the weights by momentum alone), `fit` passes over it (the same weights as training on the
/// other batches alone), and `evaluate` and `fit` refuse a data set that is all padding (its loss
/// would read 0, a perfect model).
#[test]
fn batches_and_data_sets_whose_targets_are_all_masked_have_no_loss_to_step_on() {
    use backprop::optim::Sgd;
    use backprop::prelude::{Dataset, Dense, FitOptions, Sequential};
    let build = || Sequential::builder(&[2]).add(Dense::new(2, 3)).seed(9).build().unwrap();
    let bce = BceWithLogitsLoss::new().ignore_nan_targets();
    let x = Tensor::from_vec(&[4, 2], vec![0.5, -1.0, 2.0, 0.25, -0.7, 1.5, 0.3, 0.9]).unwrap();
    // Samples 0 and 1 have targets; 2 and 3 are all padding.
    let mut t = Tensor::full(&[4, 3], f32::NAN);
    t.data_mut()[..6].copy_from_slice(&[1.0, 0.0, f32::NAN, 0.0, 1.0, 1.0]);

    // train_step: one real step (momentum builds up), then the masked batch is refused.
    let mut model = build();
    let mut sgd = Sgd::new(0.1).momentum(0.9);
    let (x01, t01) = (x.select_outer(&[0, 1]), t.select_outer(&[0, 1]));
    let (x23, t23) = (x.select_outer(&[2, 3]), t.select_outer(&[2, 3]));
    model.train_step(&x01, Target::Values(&t01), &bce, &mut sgd).unwrap();
    let before = model.state_dict();
    let e = model.train_step(&x23, Target::Values(&t23), &bce, &mut sgd).unwrap_err().to_string();
    assert!(e.contains("every target of the batch (2 samples) is masked"), "{e}");
    assert_eq!(model.state_dict(), before, "a refused step moved the weights");
    // A 0-d input has no batch axis to count: an error, not an index panic.
    let e = model.train_step(&Tensor::scalar(1.0), Target::Classes(&[0]), &CrossEntropyLoss::new(), &mut sgd);
    assert!(e.is_err());
    assert_eq!(model.state_dict(), before);
    // (The momentum is as it was too: the next real step equals one on a fresh copy.)
    let mut twin = build();
    let mut twin_sgd = Sgd::new(0.1).momentum(0.9);
    twin.train_step(&x01, Target::Values(&t01), &bce, &mut twin_sgd).unwrap();
    model.train_step(&x01, Target::Values(&t01), &bce, &mut sgd).unwrap();
    twin.train_step(&x01, Target::Values(&t01), &bce, &mut twin_sgd).unwrap();
    assert_eq!(model.state_dict(), twin.state_dict());

    // fit, batches of 2 in order: the second batch is passed over, so one epoch of fit is one
    // step on the first batch; its loss is that batch's alone.
    let data = Dataset::regression(x.clone(), t.clone()).unwrap();
    let mut fitted = build();
    let mut seen = Vec::new();
    let options = FitOptions::new().epochs(1).batch_size(2).shuffle(false).verbose(false).on_batch_end(|b| {
        seen.push((b.batch, b.size, b.terms));
    });
    let history = fitted.fit(&data, &bce, &mut Sgd::new(0.1).momentum(0.9), options).unwrap();
    let mut stepped = build();
    let first =
        stepped.loss_and_backward(&x01, Target::Values(&t01), &bce, backprop::layers::Mode::Train).unwrap();
    stepped.train_step(&x01, Target::Values(&t01), &bce, &mut Sgd::new(0.1).momentum(0.9)).unwrap();
    assert_eq!(fitted.state_dict(), stepped.state_dict());
    assert_eq!(seen, [(1, 2, 5)], "only the first batch ran, with its 5 counted targets");
    assert!((history.epochs[0].train_loss - first).abs() < 1e-6, "{:?} against {first}", history.epochs[0]);

    // A data set that is all padding: evaluate and fit refuse it, for training and validation.
    let padding = Dataset::regression(x23.clone(), t23.clone()).unwrap();
    let e = build().evaluate(&padding, &bce, 2).unwrap_err().to_string();
    assert!(e.contains("evaluate: the data set: every one of its 2 samples' targets is masked"), "{e}");
    let mut m = build();
    let e =
        m.fit(&padding, &bce, &mut Sgd::new(0.1), FitOptions::new().verbose(false)).unwrap_err().to_string();
    assert!(e.contains("fit: the training set: every one"), "{e}");
    let options = FitOptions::new().verbose(false).validation(&padding);
    let e = m.fit(&data, &bce, &mut Sgd::new(0.1), options).unwrap_err().to_string();
    assert!(e.contains("fit: the validation set: every one"), "{e}");
    assert_eq!(m.state_dict(), build().state_dict(), "a refused fit trained");
    // Cross-entropy's NaN class ids are padding too.
    let ids = Tensor::full(&[2], f32::NAN);
    let e = build()
        .evaluate(&Dataset::regression(x23, ids).unwrap(), &CrossEntropyLoss::new(), 2)
        .unwrap_err()
        .to_string();
    assert!(e.contains("every one of its 2 samples' targets is masked"), "{e}");
}
