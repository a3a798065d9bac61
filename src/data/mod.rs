//! Data: a [`Dataset`] of inputs and targets, seeded mini-batches, loaders and preprocessing.
//!
//! - [`idx`]: MNIST-format IDX files (plain or gzipped) and whole MNIST-format folders;
//! - [`transforms`]: normalisation and seeded augmentation;
//! - [`knowledge`]: answer histories for knowledge tracing: simulated students, CSV and three-line files;
//! - `image_folder` (cargo feature `image`): `root/<class>/*.png|jpg` folders of pictures.

pub mod idx;
#[cfg(feature = "image")]
pub mod image_folder;
mod inputs;
pub mod knowledge;
pub mod transforms;

pub use inputs::{INPUT, Input, Inputs};

use crate::error::{Error, Result};

use crate::tensor::{Tensor, shape_str};

/// What a loss compares the network's output with.
#[derive(Clone, Copy, Debug)]
pub enum Target<'a> {
    /// One class index per sample (for [`CrossEntropyLoss`](crate::loss::CrossEntropyLoss)).
    Classes(&'a [usize]),
    /// A tensor of the output's shape (for [`MseLoss`](crate::loss::MseLoss) and [`BceWithLogitsLoss`](crate::loss::BceWithLogitsLoss)).
    Values(&'a Tensor),
}

impl<'a> From<&'a [usize]> for Target<'a> {
    fn from(labels: &'a [usize]) -> Target<'a> {
        Target::Classes(labels)
    }
}

impl<'a> From<&'a Vec<usize>> for Target<'a> {
    fn from(labels: &'a Vec<usize>) -> Target<'a> {
        Target::Classes(labels)
    }
}

impl<'a> From<&'a Tensor> for Target<'a> {
    fn from(t: &'a Tensor) -> Target<'a> {
        Target::Values(t)
    }
}

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
    /// One or more named inputs (a single-input data set's is [`INPUT`]),
    /// each with its sequence lengths if it has them.
    inputs: Inputs,
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
        if inputs.ndim() == 0 {
            return Err(Error::shape("a data set's inputs need a sample axis, got a scalar"));
        }
        Dataset::from_inputs(Inputs::single(inputs), targets)
    }

    /// A data set with several named inputs (each `[N, …]`, with its sequence lengths if it has
    /// them), for a [`Model`](crate::model::Model) that reads them by name.
    ///
    /// # Errors
    /// As [`Inputs::check`], and [`Error::Shape`] if the number of targets differs.
    ///
    /// ```
    /// use backprop::data::{Dataset, Targets};
    /// use backprop::model::Inputs;
    /// use backprop::Tensor;
    /// let inputs = Inputs::new()
    ///     .with_lengths("source", Tensor::zeros(&[3, 5]), vec![5, 2, 4])
    ///     .with("query", Tensor::zeros(&[3, 2]));
    /// let ds = Dataset::from_inputs(inputs, Targets::Classes(vec![0, 1, 1])).unwrap();
    /// assert_eq!(ds.subset(&[1]).named_inputs().lengths("source"), Some(&[2][..]));
    /// ```
    pub fn from_inputs(inputs: Inputs, targets: Targets) -> Result<Dataset> {
        inputs.check()?;
        let n = inputs.len();
        if targets.len() != n || matches!(&targets, Targets::Values(t) if t.ndim() == 0) {
            let first = inputs.first()?;
            return Err(Error::shape(format!(
                "{n} inputs (shape {}) but {} targets",
                shape_str(first.values.shape()),
                targets.len()
            )));
        }
        Ok(Dataset { inputs, targets })
    }

    /// All the named inputs, with their lengths.
    pub fn named_inputs(&self) -> &Inputs {
        &self.inputs
    }

    /// The same data set, with each sample's number of valid steps: for sequences `[N, T, …]`
    /// padded to `T` steps. The lengths belong to the samples: [`Dataset::subset`], shuffled
    /// mini-batches, [`fit`](crate::train::fit), [`evaluate`](crate::train::evaluate) and
    /// private training select them with their samples and hand every batch its own in the
    /// forward [`Pass`](crate::layers::Pass), where recurrent layers read them.
    ///
    /// # Errors
    /// [`Error::Shape`] if the inputs have no time axis or the count differs from the number of
    /// samples; [`Error::InvalidArgument`] for a length of 0 or above `T` (naming the sample).
    ///
    /// ```
    /// use backprop::data::Dataset;
    /// use backprop::Tensor;
    /// let ds = Dataset::classification(Tensor::zeros(&[3, 5, 2]), vec![0, 1, 1]).unwrap();
    /// let ds = ds.with_lengths(vec![5, 2, 4]).unwrap();
    /// assert_eq!(ds.subset(&[2, 1]).lengths(), Some(&[4, 2][..]));
    /// let err = Dataset::classification(Tensor::zeros(&[3, 5, 2]), vec![0, 1, 1]).unwrap()
    ///     .with_lengths(vec![5, 2]).unwrap_err().to_string();
    /// assert!(err.contains("2 lengths for 3 samples"), "{err}");
    /// ```
    pub fn with_lengths(mut self, lengths: Vec<usize>) -> Result<Dataset> {
        let first = self.inputs.first_mut();
        check_lengths(first.values.shape(), &lengths)?;
        first.lengths = Some(lengths);
        Ok(self)
    }

    /// Each sample's number of valid steps (of the first input), if the data set has them
    /// ([`Dataset::with_lengths`]).
    pub fn lengths(&self) -> Option<&[usize]> {
        self.first().lengths.as_deref()
    }

    /// The lengths (of the first input) of the samples `indices`, written into `out` (emptied
    /// when the data set has none).
    ///
    /// # Panics
    /// If an index is out of range.
    pub fn select_lengths_into(&self, indices: &[usize], out: &mut Vec<usize>) {
        out.clear();
        if let Some(l) = &self.first().lengths {
            out.extend(indices.iter().map(|&i| l[i]));
        }
    }

    fn first(&self) -> &Input {
        self.inputs.first().expect("a data set has at least one input")
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
        &self.first().values
    }

    /// Mutable inputs (for preprocessing in place). The sample count must not change.
    pub fn inputs_mut(&mut self) -> &mut Tensor {
        &mut self.inputs.first_mut().values
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
        &self.inputs().shape()[1..]
    }

    /// The samples `indices` as a new data set.
    ///
    /// # Panics
    /// If an index is out of range.
    pub fn subset(&self, indices: &[usize]) -> Dataset {
        Dataset { inputs: self.inputs.select(indices), targets: self.targets.select(indices) }
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

/// Checks sequence lengths against inputs of shape `[N, T, …]`: one per sample, each in `1..=T`.
///
/// # Errors
/// [`Error::Shape`] for inputs without a time axis or a count that differs from `N`;
/// [`Error::InvalidArgument`] for a length of 0 or above `T`, naming the sample.
pub fn check_lengths(input_shape: &[usize], lengths: &[usize]) -> Result<()> {
    let &[n, t, ..] = input_shape else {
        return Err(Error::shape(format!(
            "sequence lengths need inputs of shape [N, T, …], got {}",
            shape_str(input_shape)
        )));
    };
    if lengths.len() != n {
        return Err(Error::shape(format!("{} lengths for {n} samples", lengths.len())));
    }
    if let Some((i, &l)) = lengths.iter().enumerate().find(|&(_, &l)| l == 0 || l > t) {
        return Err(Error::invalid(format!(
            "sample {i} has length {l}, but the inputs have {t} steps (lengths must be 1..={t})"
        )));
    }
    Ok(())
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
