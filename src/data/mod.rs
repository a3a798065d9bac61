//! Data: a [`Dataset`] of inputs and targets, seeded mini-batches, loaders and preprocessing.
//!
//! - [`idx`]: MNIST-format IDX files (plain or gzipped) and whole MNIST-format folders;
//! - [`transforms`]: normalisation and seeded augmentation;
//! - [`knowledge`]: answer histories for knowledge tracing: simulated students, CSV and three-line files;
//! - `image_folder` (cargo feature `image`): `root/<class>/*.png|jpg` folders of pictures.

pub mod idx;
#[cfg(feature = "image")]
#[cfg_attr(docsrs, doc(cfg(feature = "image")))]
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
            let what = match &targets {
                Targets::Values(t) => format!("targets of shape {}", shape_str(t.shape())),
                Targets::Classes(c) => format!("{} class labels", c.len()),
            };
            return Err(Error::shape(format!(
                "{n} inputs (shape {}) but {} targets ({what}: one per sample along the first axis)",
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
    /// samples; [`Error::InvalidArgument`] for a length of 0 or above `T` (naming the sample), or
    /// when the data set has several inputs (which one's lengths? [`Inputs::with_lengths`] says).
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
        let names: Vec<&str> = self.inputs.iter().map(|i| i.name.as_str()).collect();
        if names.len() > 1 {
            return Err(Error::invalid(format!(
                "Dataset::with_lengths: the data set has the inputs {names:?}, and the lengths would go to the \
                 first alone; give each input that has lengths its own (Inputs::with_lengths)"
            )));
        }
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
        // (A label of usize::MAX would need usize::MAX + 1 classes: saturated, not wrapped to 0.)
        self.labels().map(|l| l.iter().max().map_or(0, |m| m.saturating_add(1)))
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

    /// Splits into the first `n` samples and the rest, in the stored order. Files are often
    /// sorted (an image folder comes back class by class), so for a training/test split prefer
    /// [`Dataset::split_shuffled`] or [`Dataset::split_stratified`].
    pub fn split_at(&self, n: usize) -> (Dataset, Dataset) {
        let n = n.min(self.len());
        let (a, b): (Vec<usize>, Vec<usize>) = ((0..n).collect(), (n..self.len()).collect());
        (self.subset(&a), self.subset(&b))
    }

    /// The samples in a seeded random order (the same seed gives the same order on every
    /// machine).
    pub fn shuffled(&self, seed: u64) -> Dataset {
        self.subset(&epoch_order(self.len(), Some(&mut crate::tensor::rng(seed))))
    }

    /// Splits into `n` samples drawn at random (seeded) and the rest, each in random order.
    ///
    /// ```
    /// use backprop::prelude::*;
    /// let data = Dataset::classification(Tensor::zeros(&[10, 2]), vec![0, 0, 0, 0, 0, 1, 1, 1, 1, 1]).unwrap();
    /// let (train, test) = data.split_shuffled(8, 42);
    /// assert_eq!((train.len(), test.len()), (8, 2));
    /// ```
    pub fn split_shuffled(&self, n: usize, seed: u64) -> (Dataset, Dataset) {
        let order = epoch_order(self.len(), Some(&mut crate::tensor::rng(seed)));
        let n = n.min(self.len());
        (self.subset(&order[..n]), self.subset(&order[n..]))
    }

    /// Splits a classification set so that each class is divided in the same proportion: the
    /// first set gets `fraction` of every class (rounded so that the sizes add up to
    /// `round(fraction · N)`; classes whose shares tie for a sample left over by the rounding
    /// get it at random), drawn at random (seeded); both sets come back in random order.
    /// scikit-learn's `train_test_split(…, stratify=y)` does the same but for two details: it
    /// floors the first set's size (`train_size`) where this rounds it, and it refuses a class of
    /// one sample, which goes here to the set its rounding gives.
    ///
    /// ```
    /// use backprop::prelude::*;
    /// // 6 samples of class 0, then 4 of class 1: a sorted file.
    /// let data = Dataset::classification(Tensor::zeros(&[10, 2]), vec![0, 0, 0, 0, 0, 0, 1, 1, 1, 1]).unwrap();
    /// let (train, test) = data.split_stratified(0.5, 7).unwrap();
    /// let count = |d: &Dataset, c| d.labels().unwrap().iter().filter(|&&l| l == c).count();
    /// assert_eq!((count(&train, 0), count(&train, 1)), (3, 2));
    /// assert_eq!((count(&test, 0), count(&test, 1)), (3, 2));
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a data set without class labels or a `fraction` outside
    /// `[0, 1]`.
    pub fn split_stratified(&self, fraction: f64, seed: u64) -> Result<(Dataset, Dataset)> {
        let (first, second) = self.stratified_parts(fraction, seed, "split_stratified")?;
        Ok((self.subset(&first), self.subset(&second)))
    }

    /// The sample indices of a `k`-fold cross-validation: `k` pairs `(training, validation)`,
    /// each sample in exactly one validation part. Stratified (every part holds each class in
    /// the proportion of the whole, within one sample) when the set has class labels; seeded
    /// random parts otherwise. Take each fold with [`Dataset::subset`].
    ///
    /// Every fold's lists are made at once: `k·n` indices in all, 8 bytes each — a few megabytes
    /// for 10 folds of 60,000 samples, but about 29 GB for leave-one-out (`k = n`) on as many.
    ///
    /// ```
    /// use backprop::prelude::*;
    /// let data = Dataset::classification(Tensor::zeros(&[9, 1]), vec![0, 0, 0, 1, 1, 1, 2, 2, 2]).unwrap();
    /// let folds = data.k_fold_indices(3, 1).unwrap();
    /// for (train, val) in &folds {
    ///     assert_eq!((train.len(), val.len()), (6, 3));
    ///     let mut classes: Vec<usize> = val.iter().map(|&i| data.labels().unwrap()[i]).collect();
    ///     classes.sort();
    ///     assert_eq!(classes, [0, 1, 2]); // one of each class in every validation part
    /// }
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `k` is below 2 or above the number of samples.
    pub fn k_fold_indices(&self, k: usize, seed: u64) -> Result<Vec<(Vec<usize>, Vec<usize>)>> {
        let n = self.len();
        if k < 2 || k > n {
            return Err(Error::invalid(format!(
                "k_fold_indices: k must be in 2..={n} for {n} samples, got {k}"
            )));
        }
        let mut r = crate::tensor::rng(seed);
        // Each class's samples in random order, dealt out in turn: consecutive positions of the
        // concatenation go to consecutive parts, so every part gets its share of every class.
        let mut dealt = Vec::with_capacity(n);
        match self.labels() {
            Some(labels) => {
                for mut members in by_class(labels) {
                    use rand::seq::SliceRandom;
                    members.shuffle(&mut r);
                    dealt.extend(members);
                }
            }
            None => dealt = epoch_order(n, Some(&mut r)),
        }
        let mut parts = vec![Vec::new(); k];
        for (position, i) in dealt.into_iter().enumerate() {
            parts[position % k].push(i);
        }
        Ok((0..k)
            .map(|f| {
                let train = (0..k).filter(|&g| g != f).flat_map(|g| parts[g].iter().copied()).collect();
                (train, parts[f].clone())
            })
            .collect())
    }

    /// The index lists of [`Dataset::split_stratified`].
    fn stratified_parts(&self, fraction: f64, seed: u64, what: &str) -> Result<(Vec<usize>, Vec<usize>)> {
        let labels = self.labels().ok_or_else(|| {
            Error::invalid(format!(
                "{what}: the data set has no class labels to stratify by (split_shuffled splits any data set)"
            ))
        })?;
        if !(0.0..=1.0).contains(&fraction) {
            return Err(Error::invalid(format!("{what}: the fraction must be in [0, 1], got {fraction}")));
        }
        let classes = by_class(labels);
        // Largest remainders: floor(f·n_c) per class, then one more to the classes with the
        // largest fractional parts until the total is round(f·N).
        let ideal: Vec<f64> = classes.iter().map(|m| fraction * m.len() as f64).collect();
        let mut take: Vec<usize> = ideal.iter().map(|x| x.floor() as usize).collect();
        let total = (fraction * labels.len() as f64).round() as usize;
        // Ties broken at random (a stable sort of a shuffled order): in class order, the classes
        // of low ids would get every extra sample, whatever the seed.
        let mut r = crate::tensor::rng(seed);
        let mut by_remainder: Vec<usize> = (0..classes.len()).collect();
        {
            use rand::seq::SliceRandom;
            by_remainder.shuffle(&mut r);
        }
        by_remainder
            .sort_by(|&a, &b| (ideal[b] - ideal[b].floor()).total_cmp(&(ideal[a] - ideal[a].floor())));
        for &c in by_remainder.iter().cycle().take(total.saturating_sub(take.iter().sum())) {
            take[c] += 1;
        }
        let (mut first, mut second) = (Vec::new(), Vec::new());
        for (mut members, k) in classes.into_iter().zip(take) {
            use rand::seq::SliceRandom;
            members.shuffle(&mut r);
            let k = k.min(members.len());
            first.extend_from_slice(&members[..k]);
            second.extend_from_slice(&members[k..]);
        }
        use rand::seq::SliceRandom;
        first.shuffle(&mut r);
        second.shuffle(&mut r);
        Ok((first, second))
    }
}

/// The sample indices of each class present, classes in increasing order.
fn by_class(labels: &[usize]) -> Vec<Vec<usize>> {
    let mut map: std::collections::BTreeMap<usize, Vec<usize>> = std::collections::BTreeMap::new();
    for (i, &l) in labels.iter().enumerate() {
        map.entry(l).or_default().push(i);
    }
    map.into_values().collect()
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

/// Refuses a NaN or an infinity in `t` (`[N, …]`: a NaN is accepted when `allow_nan`, for targets
/// where it marks a position to ignore), with an error naming `what`, the sample and the
/// position within it: data are checked before training, so that a bad value is reported as bad
/// data rather than as a diverging step many batches later.
pub(crate) fn check_finite(t: &Tensor, what: &str, allow_nan: bool) -> Result<()> {
    let found = match allow_nan {
        false => crate::tensor::first_non_finite(t.data()),
        true => t.data().iter().position(|v| v.is_infinite()),
    };
    let Some(i) = found else {
        return Ok(());
    };
    let sample_shape = t.shape().get(1..).unwrap_or(&[]);
    let per_sample: usize = sample_shape.iter().product::<usize>().max(1);
    let (sample, mut rest) = (i / per_sample, i % per_sample);
    let mut position = vec![0; sample_shape.len()];
    for (p, &d) in position.iter_mut().zip(sample_shape).rev() {
        (*p, rest) = (rest % d, rest / d);
    }
    let at =
        if position.is_empty() { String::new() } else { format!(" at position {}", shape_str(&position)) };
    Err(Error::invalid(format!(
        "{what}: sample {sample} holds {}{at}; a NaN or infinite value cannot be learned from or predicted on — \
         fix or drop that sample",
        t.data()[i]
    )))
}
