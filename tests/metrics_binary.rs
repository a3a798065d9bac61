//! ROC AUC against its O(n²) definition (every positive–negative pair, ties half), log-loss and
//! accuracy by hand.

use backprop::metrics::{binary_accuracy, log_loss, roc_auc};
use backprop::tensor::rng;
use rand::RngExt;

fn naive_auc(scores: &[f32], labels: &[bool]) -> f64 {
    let (mut wins, mut pairs) = (0.0, 0.0);
    for (i, &si) in scores.iter().enumerate().filter(|&(i, _)| labels[i]) {
        for (j, &sj) in scores.iter().enumerate().filter(|&(j, _)| !labels[j]) {
            let _ = (i, j);
            pairs += 1.0;
            wins += if si > sj {
                1.0
            } else if si == sj {
                0.5
            } else {
                0.0
            };
        }
    }
    wins / pairs
}

#[test]
fn auc_equals_the_pairwise_definition() {
    let mut r = rng(1);
    for case in 0..200 {
        let n = r.random_range(2..120);
        // Coarse scores make many ties; fine ones almost none.
        let levels = if case % 2 == 0 { 5 } else { 100_000 };
        let scores: Vec<f32> = (0..n).map(|_| r.random_range(0..levels) as f32 / levels as f32).collect();
        let labels: Vec<bool> = (0..n).map(|_| r.random::<bool>()).collect();
        match roc_auc(&scores, &labels).unwrap() {
            None => assert!(labels.iter().all(|&l| l) || labels.iter().all(|&l| !l)),
            Some(auc) => assert!((auc - naive_auc(&scores, &labels)).abs() < 1e-12, "case {case}"),
        }
    }
    assert_eq!(roc_auc(&[0.1, 0.2, 0.3], &[true, false, false]).unwrap(), Some(0.0));
    // Logits rank as their probabilities do, without the ties of f32 probabilities at 1.0.
    let logits = [20.0f32, 17.0, 30.0, -2.0];
    let labels = [true, false, true, false];
    let p: Vec<f32> = logits.iter().map(|&z| 1.0 / (1.0 + (-z).exp())).collect();
    assert_eq!(p[0], 1.0, "σ(20) is 1.0 in f32");
    assert_eq!(roc_auc(&logits, &labels).unwrap(), Some(1.0));
    // σ ties 20, 17 and 30 at 1.0: each positive ties the negative 17 (½ each) and beats −2.
    assert_eq!(roc_auc(&p, &labels).unwrap(), Some(0.75));
}

#[test]
fn log_loss_and_accuracy_by_hand() {
    let p = [0.9f32, 0.2, 0.5, 1.0];
    let y = [true, false, true, false];
    // −(ln 0.9 + ln 0.8 + ln 0.5 + ln ε) / 4, the last p clipped to 1 − ε with ε = 2⁻²³ (as
    // scikit-learn clips float32 predictions).
    let want = -((0.9f64).ln() + (0.8f64).ln() + (0.5f64).ln() + (f32::EPSILON as f64).ln()) / 4.0;
    let got = log_loss(&p, &y).unwrap();
    assert!((got - want).abs() < 1e-6, "{got}");
    // p = ½ predicts false (Keras's and torchmetrics' `p > threshold`): right on 0.9 and 0.2.
    assert_eq!(binary_accuracy(&p, &y).unwrap(), 0.5);
}
