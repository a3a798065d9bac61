//! The execution plan: how a [`Sequential`](crate::layers::Sequential) runs its layers.
//!
//! The **reference** order is the definition: each layer's `forward` in list order, each
//! `backward` in reverse ([`forward_reference`], [`backward_reference`]). The **plan** runs the
//! same layers with rewrites that give *bit-identical* outputs, parameter gradients and input
//! gradients — the same f32 operations on the same values in the same order — and nothing else:
//!
//! 1. **In place.** The model owns every activation but the caller's input, so a [`Relu`] or
//!    [`Flatten`] after the first layer receives its input by value and overwrites it
//!    ([`Relu::forward_in_place`]) instead of allocating a new tensor. Same arithmetic, less
//!    memory traffic.
//! 2. **Max pooling before ReLU.** For a [`Relu`] followed by a [`MaxPool2d`] whose windows do not
//!    overlap, the plan pools first and applies ReLU to 4× fewer values. Why it is exact:
//!    `relu(x) = max(x, 0)` computes no new number — it returns `x` or `+0.0` — and keeps the
//!    strict order of positive values, so `maxpool(relu(x)) = relu(maxpool(x))` bit for bit
//!    (a window whose maximum is ≤ 0 gives `+0.0` either way; a NaN wins the window and passes
//!    ReLU either way). The gradient reaches the same input: where the window's maximum is
//!    positive both orders pick the same position (the first maximum); where it is ≤ 0, ReLU's
//!    derivative there is 0, so both orders send 0 to every input of the window. With disjoint
//!    windows each input receives at most one gradient, so no sum changes order.
//! 3. **Convolution and pooling in one pass.** For a [`Conv2d`] followed by a ReLU and a disjoint
//!    [`MaxPool2d`] (rewrite 2 applies), `fused::conv_then_max_pool` pools each group of images'
//!    convolution output while it is still in cache, so the full-size output is never written
//!    to memory and read back: the same GEMM, the same bias addition and the same pooling kernel
//!    on the same values, hence the same bits. The backward passes are the three layers' own.
//!    In `Mode::Predict`, with a 2 × 2 window of stride 2, the pooling also keeps no arg-max and
//!    takes each window's maximum straight from the product as the kernels leave it, one pixel's
//!    channels per row (`fused::conv_pool_predict_2x2`): single-image latency −13–16 %, inference
//!    at batch 256 +14–20 % (AMD EPYC, docs/benchmarks.md); a backward pass after it is refused.
//!
//! What the plan does **not** do, and why: the same swap for sigmoid, tanh, GELU or leaky ReLU.
//! Those compute new values, and in f32 two different inputs can round to one output
//! (`σ(16.0) = σ(16.1) = 1.0`), so the pooled window's first maximum — and with it the pixel that
//! receives the gradient — changes; a leaky ReLU with a negative slope is not even monotone.
//! A layer type the plan does not know is simply run as written.
//!
//! Observable difference: after a planned forward pass, a ReLU swapped with its pooling caches the
//! pooled mask, not the full-size one. Use [`Execution::Reference`] to inspect every layer's cache
//! as the list order leaves it. `tests/exec.rs` compares plan and reference on tie-heavy inputs
//! (zeros, repeated values, adjacent floats, NaN) and random ones.
//!
//! Measured on the 2-core test machine (`examples/speed.rs`, convnet): the in-place element-wise
//! layers took training at batch 64 from 2,670 to 3,160 images/s; pooling before ReLU took
//! inference at batch 256 from 7,600 to 8,300–9,100 images/s and peak memory from 93 to 84 MiB
//! (`docs/benchmarks.md`). Fusing convolution and pooling: inference +4 %, training at batch 64
//! +2 % (alternating builds, 9 rounds), and the peak memory of those two benchmarks 65 → 36 MiB.

use crate::layers::{Conv2d, Flatten, InputGrad, Layer, MaxPool2d, Pass, Relu, backward_input};
use crate::tensor::Tensor;
use std::any::Any;
use std::borrow::Cow;

/// How a [`Sequential`](crate::layers::Sequential) runs its layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Execution {
    /// The execution plan: exact rewrites only (see the [module docs](self)).
    #[default]
    Planned,
    /// The layers in list order, each through its plain `forward` and `backward`.
    Reference,
}

/// One step of a plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// Run layer `i`; `in_place` when it is a type with an in-place path.
    Layer { i: usize, in_place: bool },
    /// Run the disjoint max pooling `pool = relu + 1` first, then the ReLU `relu` on its output.
    PoolThenRelu { relu: usize },
    /// The convolution `conv` and the pooling `conv + 2` as one pass
    /// (`fused::conv_then_max_pool`), then the ReLU `conv + 1` on the pooled output.
    ConvPoolRelu { conv: usize },
}

/// The steps a model runs, computed from its layer types when the layer list changes.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    steps: Vec<Step>,
}

fn is<T: Layer>(layer: &dyn Layer) -> bool {
    (layer as &dyn Any).is::<T>()
}

fn is_disjoint_max_pool(layer: &dyn Layer) -> bool {
    (layer as &dyn Any).downcast_ref::<MaxPool2d>().is_some_and(MaxPool2d::is_disjoint)
}

/// The plan for a list of layers: the rewrites of the [module docs](self), where they apply.
pub fn plan(layers: &[Box<dyn Layer>]) -> Plan {
    let mut steps = Vec::with_capacity(layers.len());
    let mut i = 0;
    while i < layers.len() {
        let layer = layers[i].as_ref();
        let pool_after = |k: usize| layers.get(k).is_some_and(|next| is_disjoint_max_pool(next.as_ref()));
        let relu_at = |k: usize| layers.get(k).is_some_and(|next| is::<Relu>(next.as_ref()));
        if is::<Conv2d>(layer) && relu_at(i + 1) && pool_after(i + 2) {
            steps.push(Step::ConvPoolRelu { conv: i });
            i += 3;
        } else if is::<Relu>(layer) && pool_after(i + 1) {
            steps.push(Step::PoolThenRelu { relu: i });
            i += 2;
        } else {
            steps.push(Step::Layer { i, in_place: is::<Relu>(layer) || is::<Flatten>(layer) });
            i += 1;
        }
    }
    Plan { steps }
}

fn relu(layer: &mut dyn Layer) -> &mut Relu {
    (layer as &mut dyn Any).downcast_mut().expect("the plan's layer types match the model's")
}

/// The in-place forward of a layer the plan marked `in_place`, given a tensor it may overwrite.
fn forward_in_place(layer: &mut dyn Layer, x: Tensor, pass: Pass<'_>) -> Tensor {
    let any = layer as &mut dyn Any;
    if let Some(r) = any.downcast_mut::<Relu>() {
        return r.forward_owned(x, pass);
    }
    if let Some(f) = any.downcast_mut::<Flatten>() {
        return f.forward_in_place(x);
    }
    layer.forward(&x, pass)
}

fn backward_in_place(layer: &mut dyn Layer, g: Tensor) -> Tensor {
    let any = layer as &mut dyn Any;
    if let Some(r) = any.downcast_mut::<Relu>() {
        return r.backward_in_place(g);
    }
    if let Some(f) = any.downcast_mut::<Flatten>() {
        return f.backward_in_place(g);
    }
    backward_input(layer, &g)
}

/// A tensor the plan may overwrite (owned), or the caller's input (borrowed).
enum Activation<'x> {
    Borrowed(&'x Tensor),
    Owned(Tensor),
}

impl Activation<'_> {
    fn get(&self) -> &Tensor {
        match self {
            Activation::Borrowed(t) => t,
            Activation::Owned(t) => t,
        }
    }

    fn into_owned(self) -> Tensor {
        match self {
            Activation::Borrowed(t) => t.clone(),
            Activation::Owned(t) => t,
        }
    }
}

/// Runs the plan forward.
pub fn forward(plan: &Plan, layers: &mut [Box<dyn Layer>], x: &Tensor, pass: Pass<'_>) -> Tensor {
    let mut h = Activation::Borrowed(x);
    for step in &plan.steps {
        h = Activation::Owned(match *step {
            Step::Layer { i, in_place: true } => match h {
                Activation::Owned(t) => forward_in_place(layers[i].as_mut(), t, pass),
                Activation::Borrowed(t) => layers[i].forward(t, pass),
            },
            Step::Layer { i, in_place: false } => layers[i].forward(h.get(), pass),
            Step::ConvPoolRelu { conv: c } => {
                let [conv, _, pool] = &mut layers[c..c + 3] else { unreachable!("three layers") };
                let conv = (conv.as_mut() as &mut dyn Any).downcast_mut::<Conv2d>();
                let pool = (pool.as_mut() as &mut dyn Any).downcast_mut::<MaxPool2d>();
                let (conv, pool) = conv.zip(pool).expect("the plan's layer types match the model's");
                // The input moves into the convolution's cache when the plan owns it (no copy).
                let x = match std::mem::replace(&mut h, Activation::Owned(Tensor::default())) {
                    Activation::Borrowed(x) => Cow::Borrowed(x),
                    Activation::Owned(x) => Cow::Owned(x),
                };
                // maxpool(conv(x)), and with it the ReLU where the fused kernel can apply it
                let (pooled, with_relu) = super::fused::conv_then_max_pool(conv, x, pool, pass);
                let relu = relu(layers[c + 1].as_mut());
                match with_relu {
                    true => relu.applied_by_caller(pooled),
                    false => relu.forward_owned(pooled, pass), // relu(maxpool(conv(x)))
                }
            }
            Step::PoolThenRelu { relu: r } => {
                let pooled = layers[r + 1].forward(h.get(), pass); // maxpool(x)
                drop(std::mem::replace(&mut h, Activation::Owned(Tensor::default()))); // free x before relu runs
                relu(layers[r].as_mut()).forward_owned(pooled, pass) // relu(maxpool(x))
            }
        });
    }
    h.into_owned()
}

/// How a layer's backward pass is called, given the layer's index in the list: [`Layer::backward`],
/// or a per-example pass ([`privacy::per_example`](crate::privacy::per_example)) with its store.
pub type BackwardCall<'c> = dyn FnMut(usize, &mut dyn Layer, &Tensor, InputGrad) -> Option<Tensor> + 'c;

/// Runs the plan backward from `dL/dy`; the first step is told whether `dL/dx` is needed.
/// `call` runs a layer's backward pass (the in-place and fused steps, which have no parameters,
/// run their own).
pub fn backward(
    plan: &Plan,
    layers: &mut [Box<dyn Layer>],
    grad_out: &Tensor,
    input_grad: InputGrad,
    call: &mut BackwardCall<'_>,
) -> Option<Tensor> {
    let mut g = Activation::Borrowed(grad_out);
    let input = |i: usize, layer: &mut dyn Layer, g: &Tensor, call: &mut BackwardCall<'_>| {
        let described = layer.describe();
        call(i, layer, g, InputGrad::Needed)
            .unwrap_or_else(|| panic!("{described}: backward returned no input gradient"))
    };
    for (k, step) in plan.steps.iter().enumerate().rev() {
        let first = k == 0;
        let want = if first { input_grad } else { InputGrad::Needed };
        g = Activation::Owned(match *step {
            Step::Layer { i, .. } if first => return call(i, layers[i].as_mut(), g.get(), want),
            Step::Layer { i, in_place: true } => backward_in_place(layers[i].as_mut(), g.into_owned()),
            Step::Layer { i, in_place: false } => input(i, layers[i].as_mut(), g.get(), call),
            Step::ConvPoolRelu { conv: c } => {
                let through_relu = relu(layers[c + 1].as_mut()).backward_in_place(g.into_owned());
                let through_pool = layers[c + 2].backward(&through_relu, InputGrad::Needed);
                let through_pool = through_pool.expect("max pooling returns dL/dx");
                if first {
                    return call(c, layers[c].as_mut(), &through_pool, want);
                }
                input(c, layers[c].as_mut(), &through_pool, call)
            }
            Step::PoolThenRelu { relu: r } => {
                let through_relu = relu(layers[r].as_mut()).backward_in_place(g.into_owned());
                let dx = layers[r + 1].backward(&through_relu, want);
                if first {
                    return dx;
                }
                dx.expect("dL/dx was asked for")
            }
        });
    }
    Some(g.into_owned())
}

/// The reference: each layer's `forward`, in list order.
pub fn forward_reference(layers: &mut [Box<dyn Layer>], x: &Tensor, pass: Pass<'_>) -> Tensor {
    let mut h = x.clone();
    for layer in layers {
        h = layer.forward(&h, pass);
    }
    h
}

/// The reference: each layer's backward pass (run by `call`), in reverse list order.
pub fn backward_reference(
    layers: &mut [Box<dyn Layer>],
    grad_out: &Tensor,
    input_grad: InputGrad,
    call: &mut BackwardCall<'_>,
) -> Option<Tensor> {
    let mut g = grad_out.clone();
    for (i, layer) in layers.iter_mut().enumerate().rev() {
        if i == 0 {
            return call(i, layer.as_mut(), &g, input_grad);
        }
        let described = layer.describe();
        g = call(i, layer.as_mut(), &g, InputGrad::Needed)
            .unwrap_or_else(|| panic!("{described}: backward returned no input gradient"));
    }
    Some(g)
}
