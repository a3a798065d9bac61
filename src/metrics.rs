//! Classification metrics: accuracy and the confusion matrix; and for binary predictions given as
//! probabilities, ROC AUC, log-loss and accuracy at ½.

use crate::error::{Error, Result};
use std::fmt;

/// Fraction of predictions equal to their label (0 for empty input).
///
/// # Panics
/// If the slices differ in length.
pub fn accuracy(predicted: &[usize], labels: &[usize]) -> f32 {
    assert_eq!(
        predicted.len(),
        labels.len(),
        "accuracy: {} predictions for {} labels",
        predicted.len(),
        labels.len()
    );
    if labels.is_empty() {
        return 0.0;
    }
    predicted.iter().zip(labels).filter(|(p, l)| p == l).count() as f32 / labels.len() as f32
}

/// Counts of (true class, predicted class) pairs: row = truth, column = prediction.
///
/// ```
/// use backprop::metrics::ConfusionMatrix;
/// let m = ConfusionMatrix::new(3, &[0, 1, 2, 2], &[0, 2, 2, 1]);
/// assert_eq!(m.count(2, 1), 1); // one 2 taken for a 1
/// assert_eq!(m.correct(), 2);
/// println!("{m}");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfusionMatrix {
    classes: usize,
    counts: Vec<usize>,
}

impl ConfusionMatrix {
    /// Builds the matrix from true labels and predictions.
    ///
    /// # Panics
    /// If the slices differ in length or a value is ≥ `classes`, or if the `classes × classes`
    /// table cannot be allocated (the message names the size).
    pub fn new(classes: usize, labels: &[usize], predicted: &[usize]) -> ConfusionMatrix {
        assert_eq!(
            labels.len(),
            predicted.len(),
            "confusion matrix: {} labels for {} predictions",
            labels.len(),
            predicted.len()
        );
        let cells = classes.checked_mul(classes).filter(|&c| c <= crate::tensor::MAX_ELEMENTS);
        let cells = cells.unwrap_or_else(|| {
            panic!("confusion matrix: {classes} classes would need a table of {classes}² counts, beyond any memory")
        });
        let mut counts = Vec::new();
        if let Err(e) = counts.try_reserve_exact(cells) {
            panic!("confusion matrix: cannot allocate the {classes} × {classes} table of counts ({e})");
        }
        counts.resize(cells, 0);
        for (&t, &p) in labels.iter().zip(predicted) {
            assert!(
                t < classes && p < classes,
                "confusion matrix: class {} out of range for {classes} classes",
                t.max(p)
            );
            counts[t * classes + p] += 1;
        }
        ConfusionMatrix { classes, counts }
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// How many samples of class `truth` were predicted as `predicted`.
    ///
    /// # Panics
    /// If either class is ≥ [`classes`](Self::classes).
    pub fn count(&self, truth: usize, predicted: usize) -> usize {
        assert!(
            truth < self.classes && predicted < self.classes,
            "confusion matrix: cell ({truth}, {predicted}) out of range for {} classes",
            self.classes
        );
        self.counts[truth * self.classes + predicted]
    }

    /// Number of correct predictions (the diagonal).
    pub fn correct(&self) -> usize {
        (0..self.classes).map(|c| self.count(c, c)).sum()
    }

    /// Number of samples.
    pub fn total(&self) -> usize {
        self.counts.iter().sum()
    }

    /// Recall of each class: correct / samples of that class (0 for an absent class).
    pub fn recall(&self) -> Vec<f32> {
        (0..self.classes)
            .map(|c| {
                let row: usize = (0..self.classes).map(|p| self.count(c, p)).sum();
                if row == 0 { 0.0 } else { self.count(c, c) as f32 / row as f32 }
            })
            .collect()
    }
}

impl fmt::Display for ConfusionMatrix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = self.counts.iter().max().map_or(1, |m| m.to_string().len()).max(3);
        write!(f, "true\\pred")?;
        for p in 0..self.classes {
            write!(f, " {p:>w$}")?;
        }
        writeln!(f, "   recall")?;
        for (t, recall) in self.recall().into_iter().enumerate() {
            write!(f, "{t:>9}")?;
            for p in 0..self.classes {
                write!(f, " {:>w$}", self.count(t, p))?;
            }
            writeln!(f, "   {:>5.1}%", 100.0 * recall)?;
        }
        Ok(())
    }
}

// ------------------------------------------------------------------ binary predictions

/// Area under the ROC curve of probabilities `scores` for binary `labels`: the probability that a
/// randomly chosen positive scores higher than a randomly chosen negative, a tie counting half.
/// `Ok(None)` when there are no positives or no negatives (the AUC is undefined). Any scores
/// that rank alike give the same AUC: logits too (which, unlike f32 probabilities, do not tie at
/// 1.0 once a model is confident beyond a logit of about 16.6).
///
/// Computed exactly by sorting (`O(n log n)`): scores are ranked with ties given their average
/// rank, and `AUC = (Σ ranks of the positives − P(P+1)/2) / (P·N)` (the Mann–Whitney U statistic).
///
/// ```
/// use backprop::metrics::roc_auc;
/// assert_eq!(roc_auc(&[0.9, 0.8, 0.3, 0.1], &[true, true, false, false])?, Some(1.0));
/// assert_eq!(roc_auc(&[0.5, 0.5], &[true, false])?, Some(0.5)); // a tie counts half
/// assert_eq!(roc_auc(&[0.5], &[true])?, None);
/// assert!(roc_auc(&[f32::NAN, 0.5], &[true, false]).is_err()); // a NaN is no prediction
/// # Ok::<(), backprop::Error>(())
/// ```
///
/// # Errors
/// [`Error::InvalidArgument`] if the slices differ in length or a
/// score is NaN (a diverged model's output: no figure should quietly absorb it).
pub fn roc_auc(scores: &[f32], labels: &[bool]) -> Result<Option<f64>> {
    check_lengths("roc_auc", scores.len(), labels.len())?;
    check_no_nan("roc_auc", scores)?;
    let positives = labels.iter().filter(|&&l| l).count();
    let negatives = labels.len() - positives;
    if positives == 0 || negatives == 0 {
        return Ok(None);
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Ranks 1…n; a run of equal scores shares the average of its ranks.
    let mut rank_sum = 0.0f64;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let average_rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += average_rank * order[i..=j].iter().filter(|&&k| labels[k]).count() as f64;
        i = j + 1;
    }
    let (p, n) = (positives as f64, negatives as f64);
    Ok(Some((rank_sum - p * (p + 1.0) / 2.0) / (p * n)))
}

/// Mean binary log-loss `−(1/n) Σ [y·ln p + (1 − y)·ln(1 − p)]`, with `p` clipped to
/// `[ε, 1 − ε]`, `ε = f32::EPSILON` (2⁻²³), so that a confident mistake costs a large but finite
/// amount — scikit-learn's `log_loss` on `float32` predictions, which clips at that type's
/// epsilon.
///
/// ```
/// use backprop::metrics::log_loss;
/// let l = log_loss(&[0.9, 0.2], &[true, false])?;
/// assert!((l - (-(0.9f64.ln()) - 0.8f64.ln()) / 2.0).abs() < 1e-7);
/// assert!(log_loss(&[], &[]).is_err()); // no predictions: no loss to report
/// # Ok::<(), backprop::Error>(())
/// ```
///
/// # Errors
/// [`Error::InvalidArgument`] if the slices differ in length or
/// are empty (scikit-learn refuses 0 samples; a 0 would read as a perfect score), or a
/// probability is NaN (as [`roc_auc`] and [`binary_accuracy`]: a NaN is no prediction, and no
/// figure should quietly absorb it) or outside `[0, 1]` (a logit not yet through a sigmoid).
pub fn log_loss(probabilities: &[f32], labels: &[bool]) -> Result<f64> {
    check_probabilities("log_loss", probabilities, labels)?;
    let total: f64 = probabilities
        .iter()
        .zip(labels)
        .map(|(&p, &y)| {
            let eps = f64::from(f32::EPSILON);
            let p = (p as f64).clamp(eps, 1.0 - eps);
            if y { -p.ln() } else { -(1.0 - p).ln() }
        })
        .sum();
    Ok(total / probabilities.len() as f64)
}

/// Fraction of `probabilities` on the right side of ½ (`p > ½` predicts `true`, as Keras's
/// `binary_accuracy` and torchmetrics' `BinaryAccuracy` threshold).
///
/// ```
/// use backprop::metrics::binary_accuracy;
/// assert_eq!(binary_accuracy(&[0.9, 0.5, 0.2], &[true, true, false])?, 2.0 / 3.0); // ½ predicts false
/// # Ok::<(), backprop::Error>(())
/// ```
///
/// # Errors
/// As [`log_loss`]: lengths that differ, no predictions, a probability that is NaN or outside
/// `[0, 1]`.
pub fn binary_accuracy(probabilities: &[f32], labels: &[bool]) -> Result<f64> {
    check_probabilities("binary_accuracy", probabilities, labels)?;
    let right = probabilities.iter().zip(labels).filter(|&(&p, &y)| (p > 0.5) == y).count();
    Ok(right as f64 / probabilities.len() as f64)
}

/// Refuses, naming the metric and the position, predictions that are not one probability in
/// `[0, 1]` per label, at least one: a NaN is no prediction, and a raw logit (a
/// `BceWithLogitsLoss` model's output, not yet through a sigmoid) would be clamped or
/// thresholded at ½ into a figure that means nothing.
fn check_probabilities(metric: &str, probabilities: &[f32], labels: &[bool]) -> Result<()> {
    check_lengths(metric, probabilities.len(), labels.len())?;
    if probabilities.is_empty() {
        return Err(Error::invalid(format!("{metric}: no predictions (0 samples)")));
    }
    check_no_nan(metric, probabilities)?;
    match probabilities.iter().position(|p| !(0.0..=1.0).contains(p)) {
        Some(i) => Err(Error::invalid(format!(
            "{metric}: probability {i} is {}, outside [0, 1] (a logit? apply a sigmoid first)",
            probabilities[i]
        ))),
        None => Ok(()),
    }
}

/// Refuses, naming the metric and the position, a NaN prediction.
fn check_no_nan(metric: &str, values: &[f32]) -> Result<()> {
    match values.iter().position(|p| p.is_nan()) {
        Some(i) => Err(Error::invalid(format!("{metric}: prediction {i} is NaN (a diverged model?)"))),
        None => Ok(()),
    }
}

/// Refuses predictions and labels of different lengths.
fn check_lengths(metric: &str, predictions: usize, labels: usize) -> Result<()> {
    match predictions == labels {
        true => Ok(()),
        false => Err(Error::invalid(format!("{metric}: {predictions} predictions for {labels} labels"))),
    }
}
