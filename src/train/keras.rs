//! Keras-style methods on [`Sequential`]: `model.fit(…)`, `model.predict(…)`, `model.save(…)`.
//!
//! Each is one line that calls the function doing the work — in [`train`] for
//! training, evaluation and prediction, in [`io`] for saving and loading — which work
//! on any [`Layer`] model, nested and custom ones included. Use whichever reads better.
//!
//! ```
//! use backprop::prelude::*;
//! # fn main() -> backprop::Result<()> {
//! let mut model = Sequential::builder(&[2])
//!     .add(Dense::new(2, 8).seed(1))
//!     .add(Tanh::new())
//!     .add(Dense::new(8, 2).seed(2))
//!     .build()?;
//! let xor = Dataset::classification(
//!     Tensor::from_vec(&[4, 2], vec![0., 0., 0., 1., 1., 0., 1., 1.])?,
//!     vec![0, 1, 1, 0],
//! )?;
//! let history = model.fit(&xor, &CrossEntropyLoss::new(), &mut Adam::new(0.05),
//!     FitOptions::new().epochs(300).batch_size(4).verbose(false))?;
//! assert!(history.last().unwrap().train_loss < 0.05);
//! assert_eq!(model.predict_classes(xor.inputs(), 4)?, vec![0, 1, 1, 0]);
//! # Ok(()) }
//! ```

use crate::data::Dataset;
use crate::error::Result;
use crate::io;
use crate::layers::sequential::batch_shape_str;
use crate::layers::{self, InputGrad, Layer, Mode, Param, Sequential, backward_input};
use crate::loss::{Loss, Target};
use crate::optim::Optimizer;
use crate::tensor::Tensor;
use crate::train::{self, Evaluation, FitOptions, History};
use std::fmt;
use std::path::Path;

impl Sequential {
    /// [`train::fit`]: trains the model and returns the per-epoch history.
    ///
    /// # Errors
    /// As [`train::fit`].
    pub fn fit(
        &mut self,
        train: &Dataset,
        loss: &dyn Loss,
        optimizer: &mut dyn Optimizer,
        options: FitOptions<'_>,
    ) -> Result<History> {
        train::fit(self, train, loss, optimizer, options)
    }

    /// [`train::evaluate`]: mean loss (and accuracy) over a data set, in eval mode.
    ///
    /// # Errors
    /// As [`train::evaluate`].
    pub fn evaluate(&mut self, data: &Dataset, loss: &dyn Loss, batch_size: usize) -> Result<Evaluation> {
        train::evaluate(self, data, loss, batch_size)
    }

    /// [`train::predict`](fn@crate::train::predict): the raw outputs for `x`, in eval mode.
    ///
    /// # Errors
    /// As [`train::predict`](fn@crate::train::predict).
    pub fn predict(&mut self, x: &Tensor, batch_size: usize) -> Result<Tensor> {
        train::predict(self, x, batch_size)
    }

    /// [`train::predict_with_lengths`]: the raw outputs for padded sequences with their lengths.
    ///
    /// # Errors
    /// As [`train::predict_with_lengths`].
    pub fn predict_with_lengths(
        &mut self,
        x: &Tensor,
        lengths: &[usize],
        batch_size: usize,
    ) -> Result<Tensor> {
        train::predict_with_lengths(self, x, lengths, batch_size)
    }

    /// [`train::predict_proba`]: class probabilities, `[N, classes]`.
    ///
    /// # Errors
    /// As [`train::predict_proba`].
    pub fn predict_proba(&mut self, x: &Tensor, batch_size: usize) -> Result<Tensor> {
        train::predict_proba(self, x, batch_size)
    }

    /// [`train::predict_classes`]: the predicted class of each sample.
    ///
    /// # Errors
    /// As [`train::predict_classes`].
    pub fn predict_classes(&mut self, x: &Tensor, batch_size: usize) -> Result<Vec<usize>> {
        train::predict_classes(self, x, batch_size)
    }

    /// [`train::input_gradient`]: saliency, `d output[n, class_n] / d x[n]`.
    ///
    /// # Errors
    /// As [`train::input_gradient`].
    pub fn input_gradient(&mut self, x: &Tensor, classes: &[usize]) -> Result<Tensor> {
        train::input_gradient(self, x, classes)
    }

    /// [`train::loss_and_backward`]: the loss on one batch and every parameter's gradient.
    ///
    /// # Errors
    /// As [`train::loss_and_backward`].
    pub fn loss_and_backward(
        &mut self,
        x: &Tensor,
        target: Target<'_>,
        loss: &dyn Loss,
        mode: Mode,
    ) -> Result<f32> {
        train::loss_and_backward(self, x, target, loss, mode)
    }

    /// [`train::train_step`]: forward, loss, backward and optimizer step on one batch.
    ///
    /// # Errors
    /// As [`train::train_step`].
    pub fn train_step(
        &mut self,
        x: &Tensor,
        target: Target<'_>,
        loss: &dyn Loss,
        optimizer: &mut dyn Optimizer,
    ) -> Result<f32> {
        train::train_step(self, x, target, loss, optimizer)
    }

    /// `dL/dx` of the latest forward pass: [`Layer::backward`] with the input gradient asked for
    /// (accumulating every parameter's gradient on the way).
    ///
    /// # Panics
    /// If called before `forward`, or with a gradient of the wrong shape.
    pub fn backward_input(&mut self, grad_output: &Tensor) -> Tensor {
        backward_input(self, grad_output)
    }

    /// Like [`Sequential::backward_input`] when `dL/dx` is not needed (training).
    ///
    /// # Panics
    /// As [`Sequential::backward_input`].
    pub fn backward_params(&mut self, grad_output: &Tensor) {
        self.backward(grad_output, InputGrad::NotNeeded);
    }

    /// [`io::state_dict`]: parameters and buffers with their `state_dict` names (copies).
    pub fn state_dict(&self) -> Vec<(String, Tensor)> {
        io::state_dict(self)
    }

    /// [`io::to_safetensors`] without metadata.
    ///
    /// # Errors
    /// As [`io::to_safetensors`].
    pub fn to_safetensors(&self) -> Result<Vec<u8>> {
        io::to_safetensors(self, &[])
    }

    /// [`io::save`] without metadata: the model's state as safetensors, written atomically.
    ///
    /// # Errors
    /// As [`io::save`].
    ///
    /// ```
    /// use backprop::prelude::*;
    /// # fn main() -> backprop::Result<()> {
    /// let dir = std::env::temp_dir().join(format!("backprop-doc-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir).unwrap();
    /// let path = dir.join("model.safetensors");
    /// let a = Sequential::builder(&[3]).add(Dense::new(3, 2)).seed(1).build()?;
    /// a.save(&path)?;
    /// let mut b = Sequential::builder(&[3]).add(Dense::new(3, 2)).seed(2).build()?;
    /// assert_ne!(b.params()[0].value, a.params()[0].value);
    /// b.load(&path)?;
    /// assert_eq!(b.params()[0].value, a.params()[0].value);
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok(()) }
    /// ```
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        io::save(self, path, &[])
    }

    /// [`io::save`]: the model's state with string metadata in the file's header.
    ///
    /// # Errors
    /// As [`io::save`].
    pub fn save_with_metadata(&self, path: impl AsRef<Path>, metadata: &[(&str, String)]) -> Result<()> {
        io::save(self, path, metadata)
    }

    /// [`io::load`]: loads a state saved by [`Sequential::save`] or by PyTorch.
    ///
    /// # Errors
    /// As [`io::load`]; on error the model is unchanged.
    pub fn load(&mut self, path: impl AsRef<Path>) -> Result<()> {
        io::load(self, path)
    }

    /// [`io::load_safetensors`]: like [`Sequential::load`], from bytes in memory.
    ///
    /// # Errors
    /// As [`io::load`].
    pub fn load_safetensors(&mut self, bytes: &[u8], origin: impl AsRef<Path>) -> Result<()> {
        io::load_safetensors(self, bytes, origin)
    }

    /// [`io::load_with`]: loads with renaming and/or non-strict matching, and reports what matched.
    ///
    /// # Errors
    /// As [`io::load_with`]; on error the model is unchanged.
    pub fn load_with(
        &mut self,
        path: impl AsRef<Path>,
        options: &io::LoadOptions<'_>,
    ) -> Result<io::LoadReport> {
        io::load_with(self, path, options)
    }

    /// [`io::load_tensors`]: sets the state from named tensors in memory.
    ///
    /// # Errors
    /// As [`io::load_with`].
    pub fn load_tensors(
        &mut self,
        tensors: &[(String, Tensor)],
        options: &io::LoadOptions<'_>,
    ) -> Result<io::LoadReport> {
        io::load_tensors(self, tensors, options)
    }

    /// All parameters with their `state_dict` names: `"0.weight"`, `"0.bias"`, `"3.weight"` …
    pub fn named_params(&self) -> Vec<(String, &Param)> {
        layers::named_params(self)
    }

    /// All parameters, in order.
    pub fn params(&self) -> Vec<&Param> {
        self.named_params().into_iter().map(|(_, p)| p).collect()
    }

    /// Number of learnable scalars.
    pub fn num_params(&self) -> usize {
        layers::num_params(self)
    }

    /// Sets every gradient to zero.
    pub fn zero_grad(&mut self) {
        layers::zero_grad(self);
    }

    /// Restarts every random generator (dropout) from `seed` and its name.
    pub fn reseed(&mut self, seed: u64) {
        layers::reseed(self, seed);
    }

    /// A table of the layers, their output shapes and parameter counts, like Keras's
    /// `model.summary()` (the same text as `Display`).
    pub fn summary(&self) -> String {
        self.to_string()
    }

    /// The bytes of the activations a training pass over a batch of `batch` samples keeps: the
    /// input and every layer's output, `f32` each. A lower bound on
    /// what training needs — the backward pass holds a gradient of each size as it goes, and some
    /// layers keep more (masks, pooling's arg-max, normalised inputs) — to check a batch against
    /// the machine before training on it. `None` if the model has no input shape, or a layer
    /// refuses the shape (a tensor past the largest a tensor may hold included).
    ///
    /// ```
    /// use backprop::prelude::*;
    /// let net = Sequential::builder(&[1, 28, 28]).add(Conv2d::new(1, 8, 3)).add(Flatten::new()).build()?;
    /// // 64 × (784 inputs + 8·26·26 outputs, twice: the convolution's and Flatten's) × 4 bytes
    /// assert_eq!(net.activation_bytes(64), Some(64 * (784 + 2 * 8 * 26 * 26) * 4));
    /// # Ok::<(), backprop::Error>(())
    /// ```
    pub fn activation_bytes(&self, batch: usize) -> Option<usize> {
        let sample = self.input_shape()?.to_vec();
        let mut shape: Vec<usize> = std::iter::once(batch.max(1)).chain(sample).collect();
        let count = |s: &[usize]| s.iter().skip(1).fold(batch, |n, &d| n.saturating_mul(d));
        let mut values = count(&shape);
        for layer in self.layers() {
            shape = layer.output_shape(&shape).ok()?;
            values = values.saturating_add(count(&shape));
        }
        Some(values.saturating_mul(4))
    }
}

impl fmt::Display for Sequential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shape: Option<Vec<usize>> =
            self.input_shape().map(|s| std::iter::once(1).chain(s.iter().copied()).collect());
        let mut rows = Vec::new();
        for (i, l) in self.layers().enumerate() {
            shape = shape.and_then(|s| l.output_shape(&s).ok());
            let shown = shape.as_ref().map_or("?".to_string(), |s| batch_shape_str(&s[1..]));
            rows.push((format!("{i}: {}", l.describe()), shown, layers::num_params(l)));
        }
        let w0 = rows.iter().map(|r| r.0.chars().count()).chain([5]).max().unwrap_or(5);
        let w1 = rows.iter().map(|r| r.1.chars().count()).chain([12]).max().unwrap_or(12);
        let w2 = 10;
        let rule = "─".repeat(w0 + w1 + w2 + 4);
        writeln!(f, "{rule}")?;
        writeln!(f, "{:<w0$}  {:<w1$}  {:>w2$}", "Layer", "Output shape", "Params")?;
        writeln!(f, "{rule}")?;
        if let Some(input) = self.input_shape() {
            writeln!(f, "{:<w0$}  {:<w1$}  {:>w2$}", "input", batch_shape_str(input), "")?;
        }
        for (name, shape, params) in &rows {
            writeln!(f, "{name:<w0$}  {shape:<w1$}  {params:>w2$}")?;
        }
        writeln!(f, "{rule}")?;
        writeln!(f, "Total parameters: {}", self.num_params())?;
        write!(f, "{rule}")
    }
}
