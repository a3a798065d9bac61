//! Classification metrics: accuracy and the confusion matrix; and for binary predictions given as
//! probabilities, ROC AUC, log-loss and accuracy at ½.

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
/// `None` when there are no positives or no negatives (the AUC is undefined).
///
/// Computed exactly by sorting (`O(n log n)`): scores are ranked with ties given their average
/// rank, and `AUC = (Σ ranks of the positives − P(P+1)/2) / (P·N)` (the Mann–Whitney U statistic).
///
/// ```
/// use backprop::metrics::roc_auc;
/// assert_eq!(roc_auc(&[0.9, 0.8, 0.3, 0.1], &[true, true, false, false]), Some(1.0));
/// assert_eq!(roc_auc(&[0.5, 0.5], &[true, false]), Some(0.5)); // a tie counts half
/// assert_eq!(roc_auc(&[0.5], &[true]), None);
/// ```
///
/// # Panics
/// If the slices differ in length or a score is NaN.
pub fn roc_auc(scores: &[f32], labels: &[bool]) -> Option<f64> {
    assert_eq!(scores.len(), labels.len(), "roc_auc: {} scores for {} labels", scores.len(), labels.len());
    assert!(scores.iter().all(|s| !s.is_nan()), "roc_auc: a score is NaN");
    let positives = labels.iter().filter(|&&l| l).count();
    let negatives = labels.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
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
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * n))
}

/// Mean binary log-loss `−(1/n) Σ [y·ln p + (1 − y)·ln(1 − p)]`, with `p` clipped to
/// `[ε, 1 − ε]`, `ε = f32::EPSILON` (2⁻²³), so that a confident mistake costs a large but finite
/// amount — scikit-learn's `log_loss` on `float32` predictions, which clips at that type's
/// epsilon (0 for empty input, as [`accuracy`]).
///
/// # Panics
/// If the slices differ in length, or a probability is NaN (as [`roc_auc`] and
/// [`binary_accuracy`]: a NaN is no prediction, and no figure should quietly absorb it) or
/// outside `[0, 1]` (a logit not yet through a sigmoid).
pub fn log_loss(probabilities: &[f32], labels: &[bool]) -> f64 {
    assert_eq!(probabilities.len(), labels.len(), "log_loss: lengths differ");
    check_probabilities("log_loss", probabilities);
    if probabilities.is_empty() {
        return 0.0;
    }
    let total: f64 = probabilities
        .iter()
        .zip(labels)
        .map(|(&p, &y)| {
            let eps = f64::from(f32::EPSILON);
            let p = (p as f64).clamp(eps, 1.0 - eps);
            if y { -p.ln() } else { -(1.0 - p).ln() }
        })
        .sum();
    total / probabilities.len().max(1) as f64
}

/// Fraction of `probabilities` on the right side of ½ (`p > ½` predicts `true`, as Keras's
/// `binary_accuracy` and torchmetrics' `BinaryAccuracy` threshold; 0 for empty input, as
/// [`accuracy`]).
///
/// # Panics
/// If the slices differ in length or a probability is NaN or outside `[0, 1]` (as [`log_loss`]).
pub fn binary_accuracy(probabilities: &[f32], labels: &[bool]) -> f64 {
    assert_eq!(probabilities.len(), labels.len(), "binary_accuracy: lengths differ");
    check_probabilities("binary_accuracy", probabilities);
    let right = probabilities.iter().zip(labels).filter(|&(&p, &y)| (p > 0.5) == y).count();
    right as f64 / probabilities.len().max(1) as f64
}

/// Panics, naming the metric and the position, unless every value is a probability in
/// `[0, 1]`: a NaN is no prediction, and a raw logit (a `BceWithLogitsLoss` model's output, not
/// yet through a sigmoid) would be clamped or thresholded at ½ into a figure that means nothing.
fn check_probabilities(metric: &str, probabilities: &[f32]) {
    check_no_nan(metric, probabilities);
    if let Some(i) = probabilities.iter().position(|p| !(0.0..=1.0).contains(p)) {
        panic!(
            "{metric}: probability {i} is {}, outside [0, 1] (a logit? apply a sigmoid first)",
            probabilities[i]
        );
    }
}

/// Panics, naming the metric and the position, if a probability is NaN.
fn check_no_nan(metric: &str, probabilities: &[f32]) {
    if let Some(i) = probabilities.iter().position(|p| p.is_nan()) {
        panic!("{metric}: probability {i} is NaN");
    }
}
