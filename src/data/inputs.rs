//! Named inputs of a model, for a whole data set or one batch, each with its side information
//! (sequence lengths), selected together with its samples.

use crate::error::{Error, Result};
use crate::layers::{Mode, Pass};
use crate::tensor::{Tensor, shape_str};

/// The name of a single-input data set's input (what a [`Layer`](crate::layers::Layer) reads).
pub const INPUT: &str = "input";

/// One named input of a batch: a tensor `[N, …]` and, for sequences padded to `T` steps, each
/// sample's number of valid steps.
#[derive(Clone, Debug, PartialEq)]
pub struct Input {
    /// The input's name, as the model reads it.
    pub name: String,
    /// The values, `[N, …]`.
    pub values: Tensor,
    /// For sequences `[N, T, …]`: the valid steps of each sample (`1..=T`).
    pub lengths: Option<Vec<usize>>,
}

/// The named inputs of a model, for a whole data set or one batch; side information (sequence
/// lengths) travels with each input and is selected with its samples.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Inputs {
    items: Vec<Input>,
}

impl Inputs {
    /// No inputs yet.
    pub fn new() -> Inputs {
        Inputs::default()
    }

    /// One input named [`INPUT`]: what a [`Layer`](crate::layers::Layer) reads.
    pub fn single(values: Tensor) -> Inputs {
        Inputs::new().with(INPUT, values)
    }

    /// Adds (or replaces) the input `name`, without lengths (a replaced input's lengths go with
    /// it: [`Inputs::with_lengths`] gives new ones).
    pub fn with(mut self, name: &str, values: Tensor) -> Inputs {
        self.set(name, values, None);
        self
    }

    /// Adds (or replaces) the input `name`, sequences `[N, T, …]` with each one's valid steps.
    pub fn with_lengths(mut self, name: &str, values: Tensor, lengths: Vec<usize>) -> Inputs {
        self.set(name, values, Some(lengths));
        self
    }

    fn set(&mut self, name: &str, values: Tensor, lengths: Option<Vec<usize>>) {
        let input = Input { name: name.to_string(), values, lengths };
        match self.items.iter_mut().find(|i| i.name == name) {
            Some(slot) => *slot = input,
            None => self.items.push(input),
        }
    }

    /// Number of samples (the first axis of the inputs; 0 without inputs).
    pub fn len(&self) -> usize {
        self.items.first().and_then(|i| i.values.shape().first().copied()).unwrap_or(0)
    }

    /// True when there are no samples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The inputs, in the order they were added.
    pub fn iter(&self) -> impl Iterator<Item = &Input> {
        self.items.iter()
    }

    /// Number of named inputs.
    pub fn count(&self) -> usize {
        self.items.len()
    }

    /// The input `name`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the inputs there are, when there is none of that name.
    pub fn get(&self, name: &str) -> Result<&Tensor> {
        self.input(name).map(|i| &i.values)
    }

    /// The input `name` with its lengths.
    ///
    /// # Errors
    /// As [`Inputs::get`].
    pub fn input(&self, name: &str) -> Result<&Input> {
        self.items.iter().find(|i| i.name == name).ok_or_else(|| {
            let names: Vec<&str> = self.items.iter().map(|i| i.name.as_str()).collect();
            Error::invalid(format!("no input named {name:?}; the inputs are {names:?}"))
        })
    }

    /// The lengths of input `name`, if it has them (`None` too when there is no input of that
    /// name: [`Inputs::pass`] and [`Inputs::input`] say so with an error).
    pub fn lengths(&self, name: &str) -> Option<&[usize]> {
        self.input(name).ok().and_then(|i| i.lengths.as_deref())
    }

    /// The forward [`Pass`] for the layers that read input `name`: `mode` and that input's
    /// lengths.
    ///
    /// # Errors
    /// As [`Inputs::get`], when there is no input of that name (a misspelt name would otherwise
    /// run the layers over the padding as if every step were valid).
    pub fn pass(&self, name: &str, mode: Mode) -> Result<Pass<'_>> {
        Ok(Pass::from(mode).with_optional_lengths(self.input(name)?.lengths.as_deref()))
    }

    /// The first input (a single-input model's one input).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when there are no inputs.
    pub fn first(&self) -> Result<&Input> {
        self.items.first().ok_or_else(|| Error::invalid("no inputs"))
    }

    /// The input `name`, mutable (the sample count must not change).
    ///
    /// # Errors
    /// As [`Inputs::get`].
    pub fn get_mut(&mut self, name: &str) -> Result<&mut Tensor> {
        self.input(name)?;
        Ok(&mut self.items.iter_mut().find(|i| i.name == name).expect("checked above").values)
    }

    /// Mutable first input (for preprocessing in place; the sample count must not change).
    pub(crate) fn first_mut(&mut self) -> &mut Input {
        self.items.first_mut().expect("a data set has at least one input")
    }

    /// Checks that the inputs fit together: at least one, distinct names, every tensor with a
    /// sample axis and the same number of samples, lengths that fit their input.
    ///
    /// # Errors
    /// [`Error::Shape`] / [`Error::InvalidArgument`] naming the input and both counts or shapes.
    pub fn check(&self) -> Result<()> {
        let first = self.first()?;
        let n = first.values.shape().first().copied().ok_or_else(|| {
            Error::shape(format!("input {:?} needs a sample axis, got a scalar", first.name))
        })?;
        for (k, input) in self.items.iter().enumerate() {
            if self.items[..k].iter().any(|i| i.name == input.name) {
                return Err(Error::invalid(format!("two inputs are named {:?}", input.name)));
            }
            if input.values.shape().first() != Some(&n) {
                return Err(Error::shape(format!(
                    "input {:?} has shape {} but input {:?} has {n} samples",
                    input.name,
                    shape_str(input.values.shape()),
                    first.name
                )));
            }
            if let Some(l) = &input.lengths {
                super::check_lengths(input.values.shape(), l)
                    .map_err(|e| relabel(e, &format!("input {:?}", input.name)))?;
            }
        }
        Ok(())
    }

    /// The samples `indices` of every input (and their lengths), written into `out`, reusing its
    /// allocations.
    ///
    /// # Panics
    /// If an index is out of range.
    pub fn select_into(&self, indices: &[usize], out: &mut Inputs) {
        out.items.truncate(self.items.len());
        for (k, input) in self.items.iter().enumerate() {
            if out.items.len() <= k {
                out.items.push(Input { name: String::new(), values: Tensor::default(), lengths: None });
            }
            let o = &mut out.items[k];
            if o.name != input.name {
                o.name.clone_from(&input.name);
            }
            input.values.select_outer_into(indices, &mut o.values);
            match &input.lengths {
                Some(l) => {
                    let ol = o.lengths.get_or_insert_with(Vec::new);
                    ol.clear();
                    ol.extend(indices.iter().map(|&i| l[i]));
                }
                None => o.lengths = None,
            }
        }
    }

    /// The samples `indices` of every input.
    ///
    /// # Panics
    /// If an index is out of range.
    pub fn select(&self, indices: &[usize]) -> Inputs {
        let mut out = Inputs::new();
        self.select_into(indices, &mut out);
        out
    }

    /// The shapes of the inputs for a batch of `n` samples: `(name, [n, …])`.
    pub fn batch_shapes(&self, n: usize) -> Vec<(String, Vec<usize>)> {
        self.items
            .iter()
            .map(|i| {
                let mut s = i.values.shape().to_vec();
                if let Some(first) = s.first_mut() {
                    *first = n;
                }
                (i.name.clone(), s)
            })
            .collect()
    }
}

/// Prefixes an error's message with `what`.
fn relabel(e: Error, what: &str) -> Error {
    match e {
        Error::Shape(m) => Error::shape(format!("{what}: {m}")),
        Error::InvalidArgument(m) => Error::invalid(format!("{what}: {m}")),
        other => other,
    }
}
