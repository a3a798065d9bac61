//! DP-SGD: without noise and clipping it is the ordinary mean-gradient step; clipping bounds each
//! example's gradient as computed by a batch-of-one backward; batch norm is refused; runs are
//! seeded; the reported ε is the accountant's; a private model still learns.

mod common;

use backprop::layers::{named_params, zero_grad};
use backprop::prelude::*;
use backprop::privacy::{DEFAULT_ORDERS, DpOptions, epsilon, fit_private};

fn mlp() -> Sequential {
    Sequential::builder(&[2])
        .add(Dense::new(2, 8))
        .add(Tanh::new())
        .add(Dense::new(8, 3))
        .seed(1)
        .build()
        .unwrap()
}

fn values(m: &Sequential) -> Vec<Tensor> {
    named_params(m).into_iter().map(|(_, p)| p.value.clone()).collect()
}

fn options(clip: f32, sigma: f64) -> DpOptions {
    DpOptions { epochs: 1, sample_rate: 1.0, clip, noise_multiplier: sigma, delta: 1e-5, seed: 3 }
}

#[test]
fn without_noise_or_clipping_it_is_the_mean_gradient_step() {
    let data = common::blobs(16, 1);
    let loss = CrossEntropyLoss::new();
    let mut private = mlp();
    fit_private(&mut private, &data, &loss, &mut Sgd::new(0.1), &options(1e9, 0.0)).unwrap();
    let mut plain = mlp();
    plain.train_step(data.inputs(), data.targets().as_target(), &loss, &mut Sgd::new(0.1)).unwrap();
    for (a, b) in values(&private).iter().zip(values(&plain)) {
        assert!(a.max_abs_diff(&b) < 1e-6, "{}", a.max_abs_diff(&b));
    }
}

#[test]
fn each_examples_gradient_is_clipped_to_c() {
    let data = common::blobs(8, 2);
    let loss = CrossEntropyLoss::new();
    let clip = 0.05;
    // By hand: every example's gradient from a batch of one, clipped, averaged.
    let mut model = mlp();
    let mut expected: Vec<Tensor> = values(&model).iter().map(|v| Tensor::zeros(v.shape())).collect();
    for i in 0..data.len() {
        let x = data.inputs().select_outer(&[i]);
        let labels = [data.labels().unwrap()[i]];
        model.loss_and_backward(&x, Target::Classes(&labels), &loss, Mode::Train).unwrap();
        let grads: Vec<Tensor> = named_params(&model).into_iter().map(|(_, p)| p.grad.clone()).collect();
        let norm =
            grads.iter().map(|g| g.data().iter().map(|&v| (v * v) as f64).sum::<f64>()).sum::<f64>().sqrt();
        let scale = (clip as f64 / (norm + 1e-6)).min(1.0) as f32;
        assert!(norm > clip as f64, "the test needs gradients larger than C");
        for (e, g) in expected.iter_mut().zip(&grads) {
            e.axpy(scale / data.len() as f32, g);
        }
        zero_grad(&mut model);
    }
    let before = values(&model);
    fit_private(&mut model, &data, &loss, &mut Sgd::new(1.0), &options(clip, 0.0)).unwrap();
    for ((after, before), e) in values(&model).iter().zip(&before).zip(&expected) {
        let step = before - after; // lr 1: the step is the gradient used
        assert!(step.max_abs_diff(e) < 1e-6, "{}", step.max_abs_diff(e));
    }
}

#[test]
fn batch_norm_is_refused_and_runs_are_seeded() {
    let data = common::blobs(32, 3);
    let mut bn = Sequential::builder(&[2])
        .add(Dense::new(2, 4))
        .add(BatchNorm1d::new(4))
        .add(Dense::new(4, 3))
        .build()
        .unwrap();
    let err = fit_private(&mut bn, &data, &CrossEntropyLoss::new(), &mut Sgd::new(0.1), &options(1.0, 1.0))
        .unwrap_err()
        .to_string();
    assert!(err.contains("\"1.running_mean\"") && err.contains("batch norm"), "{err}");
    let run = || {
        let mut m = mlp();
        let o = DpOptions { sample_rate: 0.25, epochs: 2, ..options(1.0, 1.1) };
        let report = fit_private(&mut m, &data, &CrossEntropyLoss::new(), &mut Adam::new(0.01), &o).unwrap();
        (values(&m), report)
    };
    let ((a, ra), (b, rb)) = (run(), run());
    assert_eq!(a, b, "same seed, same weights");
    assert_eq!(ra, rb);
    assert_eq!(ra.steps, 8);
    assert_eq!(ra.epsilon, epsilon(0.25, 1.1, 8, 1e-5, &DEFAULT_ORDERS).0);
}

#[test]
fn a_private_model_still_learns() {
    let (train, test) = (common::blobs(1000, 4), common::blobs(300, 5));
    let mut model = mlp();
    let o =
        DpOptions { epochs: 5, sample_rate: 0.05, clip: 1.0, noise_multiplier: 1.0, delta: 1e-5, seed: 6 };
    let report = fit_private(&mut model, &train, &CrossEntropyLoss::new(), &mut Adam::new(0.02), &o).unwrap();
    let acc = model.evaluate(&test, &CrossEntropyLoss::new(), 300).unwrap().accuracy.unwrap();
    assert!(acc > 0.85, "accuracy {acc} at ε = {}", report.epsilon);
    assert!(report.epsilon.is_finite() && report.epsilon > 0.0);
}

/// The added noise has the distribution the accountant assumes: with every clipped gradient zero
/// (a model with zero loss gradient), a step's gradient is N(0, σ²C²) / (qN) per coordinate.
#[test]
fn the_noise_has_the_calibrated_spread() {
    // Targets equal to the model's (zero) output: MSE's gradient is exactly 0 for every example.
    let model = || {
        Sequential::builder(&[4])
            .add(Dense::new(4, 50).with_weights(Tensor::zeros(&[50, 4]), Some(Tensor::zeros(&[50]))))
            .build()
            .unwrap()
    };
    let data = Dataset::regression(Tensor::randn(&[40, 4], 0.0, 1.0, 1), Tensor::zeros(&[40, 50])).unwrap();
    let (sigma, clip, q) = (1.5, 0.8, 0.5);
    let mut m = model();
    let o = DpOptions { epochs: 1, sample_rate: q, clip, noise_multiplier: sigma, delta: 1e-5, seed: 9 };
    // One epoch = 2 steps of SGD with lr 1: the weights move by minus the sum of two noisy gradients.
    fit_private(&mut m, &data, &MseLoss::new(), &mut Sgd::new(1.0), &o).unwrap();
    let moved: Vec<f64> =
        named_params(&m).iter().flat_map(|(_, p)| p.value.data().to_vec()).map(|v| v as f64).collect();
    let n = moved.len() as f64; // 250 coordinates
    let mean = moved.iter().sum::<f64>() / n;
    let std = (moved.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
    let want = (2.0f64).sqrt() * sigma * clip as f64 / (q * 40.0); // two steps of N(0, (σC / qN)²)
    assert!(mean.abs() < 4.0 * want / n.sqrt(), "mean {mean}");
    assert!((std / want - 1.0).abs() < 0.15, "std {std} vs {want}");
}
