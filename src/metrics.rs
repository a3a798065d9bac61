//! Classification metrics: accuracy and the confusion matrix.

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
    /// If the slices differ in length or a value is ≥ `classes`.
    pub fn new(classes: usize, labels: &[usize], predicted: &[usize]) -> ConfusionMatrix {
        assert_eq!(
            labels.len(),
            predicted.len(),
            "confusion matrix: {} labels for {} predictions",
            labels.len(),
            predicted.len()
        );
        let mut counts = vec![0; classes * classes];
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
    pub fn count(&self, truth: usize, predicted: usize) -> usize {
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
