//! Data: a [`Dataset`] of inputs and targets, seeded mini-batches, loaders and preprocessing.
//!
//! - [`idx`]: MNIST-format IDX files (plain or gzipped) and whole MNIST-format folders;
//! - [`transforms`]: normalisation and seeded augmentation;
//! - [`knowledge`]: answer histories for knowledge tracing: simulated students, CSV and three-line files;
//! - `image_folder` (cargo feature `image`): `root/<class>/*.png|jpg` folders of pictures.

pub mod idx;
#[cfg(feature = "image")]
pub mod image_folder;
pub mod knowledge;
pub mod transforms;

use crate::error::{Error, Result};
use crate::loss::Target;
use crate::tensor::{Tensor, shape_str};

/// What the network should output for each sample.
#[derive(Clone, Debug, PartialEq)]
pub enum Targets {
    /// One class index per sample (classification).
    Classes(Vec<usize>),
    /// One target tensor per sample, stacked along the first axis (regression, multi-label).
    Values(Tensor),
}

impl Targets {
    /// Number of samples.
    pub fn len(&self) -> usize {
        match self {
            Targets::Classes(c) => c.len(),
            Targets::Values(t) => t.shape().first().copied().unwrap_or(0),
        }
    }

    /// True when there are no samples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Borrows these targets as a loss [`Target`].
    pub fn as_target(&self) -> Target<'_> {
        match self {
            Targets::Classes(c) => Target::Classes(c),
            Targets::Values(t) => Target::Values(t),
        }
    }

    /// The targets of the samples `indices`, written into `out` (reusing its allocation).
    ///
    /// # Panics
    /// If an index is out of range.
    pub fn select_into(&self, indices: &[usize], out: &mut Targets) {
        match (self, out) {
            (Targets::Classes(all), Targets::Classes(out)) => {
                out.clear();
                out.extend(indices.iter().map(|&i| all[i]));
            }
            (Targets::Values(all), Targets::Values(out)) => all.select_outer_into(indices, out),
            (this, out) => *out = this.select(indices),
        }
    }

    /// The targets of the samples `indices`.
    ///
    /// # Panics
    /// If an index is out of range.
    pub fn select(&self, indices: &[usize]) -> Targets {
        match self {
            Targets::Classes(all) => Targets::Classes(indices.iter().map(|&i| all[i]).collect()),
            Targets::Values(all) => Targets::Values(all.select_outer(indices)),
        }
    }
}

/// Inputs (first axis = samples) with their targets.
///
/// ```
/// use backprop::data::Dataset;
/// use backprop::Tensor;
/// let ds = Dataset::classification(Tensor::zeros(&[3, 1, 2, 2]), vec![0, 1, 1]).unwrap();
/// assert_eq!(ds.len(), 3);
/// assert_eq!(ds.num_classes(), Some(2));
/// assert!(Dataset::classification(Tensor::zeros(&[3, 4]), vec![0, 1]).is_err());
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    inputs: Tensor,
    targets: Targets,
}

impl Dataset {
    /// A classification data set: `inputs [N, …]` and one class label per sample.
    ///
    /// # Errors
    /// [`Error::Shape`] if the number of labels differs from the number of inputs.
    pub fn classification(inputs: Tensor, labels: Vec<usize>) -> Result<Dataset> {
        Dataset::new(inputs, Targets::Classes(labels))
    }

    /// A data set with tensor targets: `inputs [N, …]`, `targets [N, …]`.
    ///
    /// # Errors
    /// [`Error::Shape`] if the first axes differ.
    pub fn regression(inputs: Tensor, targets: Tensor) -> Result<Dataset> {
        Dataset::new(inputs, Targets::Values(targets))
    }

    /// A data set from inputs and targets of either kind.
    ///
    /// # Errors
    /// [`Error::Shape`] if the inputs have no sample axis or the counts differ.
    pub fn new(inputs: Tensor, targets: Targets) -> Result<Dataset> {
        let n = inputs
            .shape()
            .first()
            .copied()
            .ok_or_else(|| Error::shape("a data set's inputs need a sample axis, got a scalar"))?;
        if targets.len() != n || matches!(&targets, Targets::Values(t) if t.ndim() == 0) {
            return Err(Error::shape(format!(
                "{n} inputs (shape {}) but {} targets",
                shape_str(inputs.shape()),
                targets.len()
            )));
        }
        Ok(Dataset { inputs, targets })
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    /// True when there are no samples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The inputs, `[N, …]`.
    pub fn inputs(&self) -> &Tensor {
        &self.inputs
    }

    /// Mutable inputs (for preprocessing in place). The sample count must not change.
    pub fn inputs_mut(&mut self) -> &mut Tensor {
        &mut self.inputs
    }

    /// The targets.
    pub fn targets(&self) -> &Targets {
        &self.targets
    }

    /// The class labels, for a classification data set.
    pub fn labels(&self) -> Option<&[usize]> {
        match &self.targets {
            Targets::Classes(c) => Some(c),
            Targets::Values(_) => None,
        }
    }

    /// One more than the largest label, for a classification data set.
    pub fn num_classes(&self) -> Option<usize> {
        self.labels().map(|l| l.iter().max().map_or(0, |m| m + 1))
    }

    /// The shape of one sample (the inputs' shape without the first axis).
    pub fn sample_shape(&self) -> &[usize] {
        &self.inputs.shape()[1..]
    }

    /// The samples `indices` as a new data set.
    ///
    /// # Panics
    /// If an index is out of range.
    pub fn subset(&self, indices: &[usize]) -> Dataset {
        Dataset { inputs: self.inputs.select_outer(indices), targets: self.targets.select(indices) }
    }

    /// The first `n` samples (all of them if there are fewer).
    pub fn take(&self, n: usize) -> Dataset {
        let idx: Vec<usize> = (0..n.min(self.len())).collect();
        self.subset(&idx)
    }

    /// Splits into the first `n` samples and the rest.
    pub fn split_at(&self, n: usize) -> (Dataset, Dataset) {
        let n = n.min(self.len());
        let (a, b): (Vec<usize>, Vec<usize>) = ((0..n).collect(), (n..self.len()).collect());
        (self.subset(&a), self.subset(&b))
    }
}

/// The order in which an epoch visits the samples: `0..n`, or a seeded shuffle of it.
pub fn epoch_order(n: usize, shuffle: Option<&mut crate::tensor::Rng>) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    if let Some(rng) = shuffle {
        use rand::seq::SliceRandom;
        order.shuffle(rng);
    }
    order
}
