//! `Sequential`: layers applied one after the other — itself a [`Layer`], so models nest.
//!
//! ```text
//! forward:   h₀ = x,   hᵢ₊₁ = layerᵢ(hᵢ),   y = h_L
//! backward:  g_L = dL/dy,   gᵢ = layerᵢ.backward(gᵢ₊₁),   dL/dx = g₀
//! ```
//!
//! The chain rule for a composition is just this walk in reverse: each layer turns the gradient of
//! its output into the gradient of its input, adding its parameters' gradients on the way.
//!
//! State names are hierarchical, exactly as PyTorch's nested `nn.Sequential` names them: the
//! `weight` of layer 0 inside layer 2 is `"2.0.weight"` (built by [`child_name`]). A model refuses to
//! be built when two pieces of state share a name, and its shapes are checked layer by layer when
//! it is built, with errors naming the layer and both shapes.
//!
//! Forward and backward run through the [execution plan](plan), which applies only rewrites
//! that give bit-identical results; [`Sequential::set_execution`] selects the plain list-order
//! reference instead.
//!
//! ```
//! use backprop::prelude::*;
//! # fn main() -> backprop::Result<()> {
//! let block = Sequential::new().add(Dense::new(4, 4)).add(Relu::new());
//! let model = Sequential::builder(&[4]).add(block).add(Dense::new(4, 2)).build()?;
//! let names: Vec<String> = model.named_params().into_iter().map(|(n, _)| n).collect();
//! assert_eq!(names, ["0.0.weight", "0.0.bias", "1.weight", "1.bias"]);
//! # Ok(()) }
//! ```

use super::{InputGrad, Layer, Pass, State, StateMut, Visit, child_name};
use crate::error::{Error, Result};
pub mod fused;
pub mod plan;

use crate::onnx::OnnxLayer;
use crate::privacy::per_example::PerExample;
use crate::tensor::{Tensor, shape_str};
pub use plan::Execution;
use plan::Plan;
use std::any::Any;
use std::fmt;

/// Takes a model apart level by level, with a stack of its own: dropping it by recursion would
/// overflow the thread's stack for a model nested deeper than a build accepts (one a user made
/// by swapping layers in place, which `build` then refuses — and which still has to be dropped).
impl Drop for Sequential {
    fn drop(&mut self) {
        let mut pending = std::mem::take(&mut self.layers);
        while let Some(mut layer) = pending.pop() {
            let any = layer.as_mut() as &mut dyn Any;
            if let Some(inner) = any.downcast_mut::<Sequential>() {
                pending.append(&mut inner.layers);
            } else if let Some(r) = any.downcast_mut::<super::Residual>() {
                pending.append(&mut r.body_mut().layers);
            }
            drop(layer); // now without nested layers
        }
    }
}

/// Layers applied one after the other. See the [module docs](self).
pub struct Sequential {
    /// Shape of one sample (no batch axis), for a model built with [`Sequential::builder`].
    input_shape: Option<Vec<usize>>,
    pub(crate) layers: Vec<Box<dyn Layer>>,
    plan: Plan,
    execution: Execution,
    /// Containers inside containers, this one included ([`MAX_NESTING`] at most).
    depth: usize,
    /// The model-wide seed it was built with: a layer added or replaced later draws its fresh
    /// parameters from it and its index, as a layer given to the builder did.
    seed: Option<u64>,
}

/// How deep containers (`Sequential`, `Residual`) may nest: every pass over a model (forward,
/// backward, visiting its state, dropping it) recurses once per level, and a thread's stack is
/// finite; 20,000 levels overflowed it.
pub const MAX_NESTING: usize = 64;

/// The nesting depth a layer brings: a container's own depth, 0 for any other layer.
fn nesting(layer: &dyn Layer) -> usize {
    let any = layer as &dyn Any;
    if let Some(s) = any.downcast_ref::<Sequential>() {
        s.depth
    } else if let Some(r) = any.downcast_ref::<super::Residual>() {
        r.body().depth + 1
    } else {
        0
    }
}

/// The nesting depth of `model`, measured by walking its containers (with a stack of its own, not
/// by recursion), and not past `MAX_NESTING + 1`: the depths the containers keep can be stale
/// after a layer was swapped in place ([`Sequential::layer_as_mut`], [`Residual::body_mut`](super::Residual::body_mut)),
/// and a model nested 100,000 deep had then overflowed the stack in `build`.
fn measured_depth(model: &Sequential) -> usize {
    let mut deepest = 0;
    let mut stack: Vec<(&Sequential, usize)> = vec![(model, 1)];
    while let Some((s, depth)) = stack.pop() {
        deepest = deepest.max(depth);
        if deepest > MAX_NESTING {
            break;
        }
        for layer in &s.layers {
            let any = layer.as_ref() as &dyn Any;
            if let Some(inner) = any.downcast_ref::<Sequential>() {
                stack.push((inner, depth + 1));
            } else if let Some(r) = any.downcast_ref::<super::Residual>() {
                stack.push((r.body(), depth + 2));
            }
        }
    }
    deepest
}

fn depth_of(layers: &[Box<dyn Layer>]) -> usize {
    1 + layers.iter().map(|l| nesting(l.as_ref())).max().unwrap_or(0)
}

fn too_deep(depth: usize) -> Error {
    Error::invalid(format!(
        "containers nested {depth} deep; at most {MAX_NESTING} (backprop::layers::sequential::MAX_NESTING)"
    ))
}

/// Collects layers for a [`Sequential`] whose input shape is known; see [`Sequential::builder`].
pub struct SequentialBuilder {
    input_shape: Vec<usize>,
    layers: Vec<Box<dyn Layer>>,
    seed: u64,
}

impl SequentialBuilder {
    /// Appends a layer.
    #[allow(clippy::should_implement_trait)] // a builder step, not `+`
    pub fn add(mut self, layer: impl Layer) -> SequentialBuilder {
        self.layers.push(Box::new(layer));
        self
    }

    /// Appends a boxed layer.
    pub fn add_boxed(mut self, layer: Box<dyn Layer>) -> SequentialBuilder {
        self.layers.push(layer);
        self
    }

    /// The model-wide seed (default 0): when the model is built, every parameter that a layer drew
    /// with its default seed is redrawn from this seed and the parameter's name, so two layers of
    /// the same shape never start alike. Parameters chosen explicitly (a layer's own `seed`,
    /// `with_weights`) keep their values.
    pub fn seed(mut self, seed: u64) -> SequentialBuilder {
        self.seed = seed;
        self
    }

    /// Checks the model and returns it: shapes, layer by layer, from the input shape; no two
    /// pieces of state with one name. Then draws the parameters from the model-wide seed.
    ///
    /// # Errors
    /// [`Error::Shape`] naming the first layer (index and description) that cannot take the
    /// output of the one before it, with both shapes; [`Error::InvalidArgument`] naming a state
    /// name that occurs twice.
    ///
    /// ```
    /// use backprop::prelude::*;
    /// let err = Sequential::builder(&[64, 5, 5])
    ///     .add(Flatten::new())
    ///     .add(Dense::new(1568, 10))
    ///     .build()
    ///     .unwrap_err()
    ///     .to_string();
    /// assert!(err.contains("layer 1 (Dense(1568→10))") && err.contains("[N, 1600]"), "{err}");
    /// ```
    pub fn build(self) -> Result<Sequential> {
        let mut model = Sequential::from_layers(self.layers);
        model.input_shape = Some(self.input_shape);
        model.check()?;
        super::redraw_params(&mut model, self.seed);
        // (The drawn values keep their initialisers: a builder around this model redraws them
        // from its own seed and their full names, as it draws every fresh layer. Loaded and
        // trained values are kept: `settle_params`.)
        model.seed = Some(self.seed);
        Ok(model)
    }
}

/// `[N, 32, 26, 26]` for a per-sample shape `[32, 26, 26]`.
pub(crate) fn batch_shape_str(sample: &[usize]) -> String {
    let mut s = String::from("[N");
    for d in sample {
        s += &format!(", {d}");
    }
    s + "]"
}

impl Default for Sequential {
    fn default() -> Sequential {
        Sequential::new()
    }
}

impl Sequential {
    /// Starts a model whose samples have shape `input_shape` (without the batch axis); its shapes
    /// are checked when it is built.
    pub fn builder(input_shape: &[usize]) -> SequentialBuilder {
        SequentialBuilder { input_shape: input_shape.to_vec(), layers: Vec::new(), seed: 0 }
    }

    /// An empty chain without an input shape, to nest inside another model (which checks its
    /// shapes when it is built) or inside a [`Residual`](super::Residual).
    pub fn new() -> Sequential {
        Sequential::from_layers(Vec::new())
    }

    /// Appends a layer to a chain made by [`Sequential::new`].
    ///
    /// # Panics
    /// If containers would nest more than [`MAX_NESTING`] deep.
    #[allow(clippy::should_implement_trait)] // a builder step, not `+`
    pub fn add(mut self, layer: impl Layer) -> Sequential {
        let depth = self.depth.max(nesting(&layer) + 1);
        assert!(depth <= MAX_NESTING, "{}", too_deep(depth));
        let mut layer: Box<dyn Layer> = Box::new(layer);
        self.draw_new(self.layers.len(), layer.as_mut());
        self.layers.push(layer);
        self.plan = plan::plan(&self.layers);
        self.depth = depth;
        self
    }

    /// Appends a boxed layer (a layer chosen at run time) to a chain made by [`Sequential::new`].
    ///
    /// # Panics
    /// If containers would nest more than [`MAX_NESTING`] deep.
    pub fn add_boxed(mut self, mut layer: Box<dyn Layer>) -> Sequential {
        let depth = self.depth.max(nesting(layer.as_ref()) + 1);
        assert!(depth <= MAX_NESTING, "{}", too_deep(depth));
        self.draw_new(self.layers.len(), layer.as_mut());
        self.layers.push(layer);
        self.plan = plan::plan(&self.layers);
        self.depth = depth;
        self
    }

    /// For a built model, draws the fresh parameters of a layer that will stand at `index` from
    /// the model's seed and their full names (`"3.weight"`), as the build drew its layers': two
    /// layers of one shape added after the build do not start alike.
    fn draw_new(&self, index: usize, layer: &mut dyn Layer) {
        let Some(seed) = self.seed else { return };
        let prefix = index.to_string();
        layer.visit_mut(&mut |name, s| {
            if let super::StateMut::Param(p) = s
                && let Some(init) = p.init
            {
                let full = super::child_name(&prefix, name);
                p.value = init.tensor(p.value.shape(), &mut crate::tensor::rng(super::seed_for(seed, &full)));
            }
        });
    }

    fn from_layers(layers: Vec<Box<dyn Layer>>) -> Sequential {
        let plan = plan::plan(&layers);
        let depth = depth_of(&layers);
        Sequential { input_shape: None, layers, plan, execution: Execution::Planned, depth, seed: None }
    }

    /// Shapes layer by layer from the input shape, and unique state names.
    fn check(&self) -> Result<()> {
        let depth = measured_depth(self);
        if depth > MAX_NESTING {
            return Err(too_deep(depth));
        }
        if let Some(input) = &self.input_shape {
            let batch: Vec<usize> = std::iter::once(1).chain(input.iter().copied()).collect();
            // The shapes are checked for a batch of one; the message speaks of any batch, so that
            // "expects [N, 1000], got [N, 1352]" does not read as a batch-size problem.
            self.output_shape(&batch).map_err(|e| {
                let message = detail(&e).replace("got [1, ", "got [N, ").replace("got [1]", "got [N]");
                Error::shape(format!("cannot build the model: {message}"))
            })?;
        }
        if let Some(name) = super::duplicate_state_name(self) {
            return Err(Error::invalid(format!(
                "cannot build the model: two pieces of state are named {name:?}; saving would keep only one \
                 of them (give each parameter of a custom layer its own name)"
            )));
        }
        Ok(())
    }

    /// The shape of one input sample, for a model built with [`Sequential::builder`].
    pub fn input_shape(&self) -> Option<&[usize]> {
        self.input_shape.as_deref()
    }

    /// The shape of one output sample, for a model built with [`Sequential::builder`].
    pub fn sample_output_shape(&self) -> Option<Vec<usize>> {
        let input = self.input_shape.as_ref()?;
        let batch: Vec<usize> = std::iter::once(1).chain(input.iter().copied()).collect();
        self.output_shape(&batch).ok().map(|s| s[1..].to_vec())
    }

    /// The layers, in order.
    pub fn layers(&self) -> impl ExactSizeIterator<Item = &dyn Layer> {
        self.layers.iter().map(|l| l.as_ref())
    }

    /// Layer `i`.
    ///
    /// # Panics
    /// If `i` is out of range.
    pub fn layer(&self, i: usize) -> &dyn Layer {
        self.layers[i].as_ref()
    }

    /// Layer `i`, mutable (to step through a model by hand; it cannot be swapped for another —
    /// use [`Sequential::replace`], which checks shapes again).
    ///
    /// # Panics
    /// If `i` is out of range.
    pub fn layer_mut(&mut self, i: usize) -> &mut dyn Layer {
        self.layers[i].as_mut()
    }

    /// Layer `i` as its concrete type, if it is a `T`.
    ///
    /// ```
    /// use backprop::prelude::*;
    /// # fn main() -> backprop::Result<()> {
    /// let model = Sequential::builder(&[3]).add(Dense::new(3, 2)).build()?;
    /// assert_eq!(model.layer_as::<Dense>(0).unwrap().outputs(), 2);
    /// assert!(model.layer_as::<Relu>(0).is_none());
    /// # Ok(()) }
    /// ```
    pub fn layer_as<T: Layer>(&self, i: usize) -> Option<&T> {
        let layer: &dyn Any = self.layers.get(i)?.as_ref();
        layer.downcast_ref()
    }

    /// Layer `i` as its concrete type, mutable, if it is a `T`.
    pub fn layer_as_mut<T: Layer>(&mut self, i: usize) -> Option<&mut T> {
        let layer: &mut dyn Any = self.layers.get_mut(i)?.as_mut();
        layer.downcast_mut()
    }

    /// Replaces layer `i` and checks the model again; returns the old layer.
    ///
    /// # Errors
    /// As [`SequentialBuilder::build`]; the model is then left as it was. Also
    /// [`Error::InvalidArgument`] if `i` is out of range.
    pub fn replace(&mut self, i: usize, layer: impl Layer) -> Result<Box<dyn Layer>> {
        if i >= self.layers.len() {
            return Err(Error::invalid(format!("replace: no layer {i} in a model of {}", self.layers.len())));
        }
        let mut layer: Box<dyn Layer> = Box::new(layer);
        self.draw_new(i, layer.as_mut());
        let old = std::mem::replace(&mut self.layers[i], layer);
        self.plan = plan::plan(&self.layers);
        self.depth = depth_of(&self.layers);
        if let Err(e) = self.check() {
            self.layers[i] = old;
            self.plan = plan::plan(&self.layers);
            self.depth = depth_of(&self.layers);
            return Err(e);
        }
        Ok(old)
    }

    /// Number of layers.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// True for a model without layers (the identity).
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// How forward and backward run: the execution plan (default) or the plain reference order —
    /// for this chain and every chain nested in it at the time of the call (directly, or as a
    /// [`Residual`](super::Residual)'s body), so that `Execution::Reference` shows every layer's
    /// cache as the list order leaves it (a nested chain had kept its plan). A chain added later,
    /// or one inside a container of the user's own, keeps its own setting.
    pub fn set_execution(&mut self, execution: Execution) {
        // A stack of its own, as `drop`: a chain may be nested deeper than a build accepts.
        let mut pending: Vec<&mut Sequential> = vec![self];
        while let Some(chain) = pending.pop() {
            chain.execution = execution;
            for layer in chain.layers.iter_mut() {
                let any = layer.as_mut() as &mut dyn Any;
                if any.is::<Sequential>() {
                    pending.extend(any.downcast_mut::<Sequential>());
                } else if let Some(r) = any.downcast_mut::<super::Residual>() {
                    pending.push(r.body_mut());
                }
            }
        }
    }

    /// The current [`Execution`].
    pub fn execution(&self) -> Execution {
        self.execution
    }

    /// Checks that `x` is a batch of samples of the model's input shape (always true for a
    /// chain without an input shape).
    ///
    /// # Errors
    /// [`Error::Shape`] with both shapes.
    pub fn check_input(&self, x: &Tensor) -> Result<()> {
        match &self.input_shape {
            Some(input) if x.ndim() != input.len() + 1 || x.shape()[1..] != input[..] => {
                Err(Error::shape(format!(
                    "the model expects inputs of shape {}, got {}",
                    batch_shape_str(input),
                    shape_str(x.shape())
                )))
            }
            _ => Ok(()),
        }
    }
}

/// The message of an error without its "shape error:" prefix, for wrapping it in context.
fn detail(e: &Error) -> String {
    match e {
        Error::Shape(m) => m.clone(),
        other => other.to_string(),
    }
}

impl Layer for Sequential {
    fn describe(&self) -> String {
        let inner: Vec<String> = self.layers.iter().map(|l| l.describe()).collect();
        format!("Sequential({})", inner.join(" → "))
    }

    /// Runs shape inference through every layer; an error names the first layer that cannot take
    /// its input, where that input came from, and both shapes.
    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        if let Some(sample) = &self.input_shape
            && (input.len() != sample.len() + 1 || input[1..] != sample[..])
        {
            return Err(Error::shape(format!(
                "the model expects inputs of shape {}, got {}",
                batch_shape_str(sample),
                shape_str(input)
            )));
        }
        if input.is_empty() || input[1..].contains(&0) || crate::tensor::checked_numel(input).is_none() {
            return Err(Error::shape(format!(
                "the model input {} needs a batch axis and no zero-sized or oversized axis",
                shape_str(input)
            )));
        }
        let mut shape = input.to_vec();
        for (i, layer) in self.layers.iter().enumerate() {
            shape = layer.output_shape(&shape).map_err(|e| {
                let from = match i {
                    0 => "the model input".to_string(),
                    _ => format!("layer {} ({})", i - 1, self.layers[i - 1].describe()),
                };
                Error::shape(format!(
                    "layer {i} ({}) cannot take its input of shape {} from {from}: {}",
                    layer.describe(),
                    batch_shape_str(&shape[1.min(shape.len())..]),
                    detail(&e)
                ))
            })?;
            if shape.is_empty() || shape[1..].contains(&0) {
                return Err(Error::shape(format!(
                    "layer {i} ({}) would output the zero-sized shape {}",
                    layer.describe(),
                    shape_str(&shape)
                )));
            }
        }
        Ok(shape)
    }

    /// # Panics
    /// If `x` is not a batch of the model's input shape (the message gives both shapes).
    fn forward(&mut self, x: &Tensor, pass: Pass<'_>) -> Tensor {
        self.check_input(x).unwrap_or_else(|e| panic!("{e}"));
        // A batch's layers on one of rayon's threads: their parallel loops then start without
        // waking the caller for each (`train::on_pool`; directly when already on one). A single
        // sample's pass has few such loops to gain from it, and would pay the hand-over.
        let batch = x.shape().first().is_some_and(|&n| n > 1);
        crate::tensor::parallel::on_pool_if(batch, || match self.execution {
            Execution::Planned => plan::forward(&self.plan, &mut self.layers, x, pass),
            Execution::Reference => plan::forward_reference(&mut self.layers, x, pass),
        })
    }

    fn backward(&mut self, grad_out: &Tensor, input_grad: InputGrad) -> Option<Tensor> {
        let batch = grad_out.shape().first().is_some_and(|&n| n > 1);
        crate::tensor::parallel::on_pool_if(batch, || {
            self.backward_with(grad_out, input_grad, &mut |_, layer, g, want| layer.backward(g, want))
        })
    }

    /// The check of every layer that reads the model's input values as they are: the first, and
    /// the next for as long as the layers before it only reshape (`Flatten`) — an embedding behind
    /// a `Flatten` checks its ids too (they had reached it unchecked, a panic in its forward pass).
    fn check_values(&self, x: &Tensor) -> Result<()> {
        for layer in &self.layers {
            layer.check_values(x)?;
            let any: &dyn std::any::Any = layer.as_ref();
            if !any.is::<super::Flatten>() {
                break;
            }
        }
        Ok(())
    }

    /// Every layer's check, on the shape that reaches it.
    fn check_training_shape(&self, input: &[usize]) -> Result<()> {
        let mut shape = input.to_vec();
        for (i, layer) in self.layers.iter().enumerate() {
            layer
                .check_training_shape(&shape)
                .map_err(|e| Error::invalid(format!("layer {i}: {}", detail(&e))))?;
            shape = layer.output_shape(&shape)?;
        }
        Ok(())
    }

    fn per_example(&mut self) -> Option<&mut dyn PerExample> {
        Some(self)
    }

    fn onnx(&self) -> Option<&dyn OnnxLayer> {
        Some(self)
    }
}

impl Visit for Sequential {
    fn visit<'a>(&'a self, f: &mut dyn FnMut(&str, State<'a>)) {
        for (i, layer) in self.layers.iter().enumerate() {
            let prefix = i.to_string();
            layer.visit(&mut |name, s| f(&child_name(&prefix, name), s));
        }
    }

    fn visit_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, StateMut<'a>)) {
        for (i, layer) in self.layers.iter_mut().enumerate() {
            let prefix = i.to_string();
            layer.visit_mut(&mut |name, s| f(&child_name(&prefix, name), s));
        }
    }
}

impl Sequential {
    /// The backward pass in the chosen execution, each layer's own pass run by `call`.
    pub(crate) fn backward_with(
        &mut self,
        grad_out: &Tensor,
        input_grad: InputGrad,
        call: &mut plan::BackwardCall<'_>,
    ) -> Option<Tensor> {
        match self.execution {
            Execution::Planned => plan::backward(&self.plan, &mut self.layers, grad_out, input_grad, call),
            Execution::Reference => plan::backward_reference(&mut self.layers, grad_out, input_grad, call),
        }
    }
}

impl fmt::Debug for Sequential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
