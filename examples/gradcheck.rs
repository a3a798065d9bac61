//! Is the backward pass right? Compare it with the definition of the derivative.
//!
//! For a Dense and a Conv2d layer, this prints each analytic gradient (from the hand-written
//! `backward`) beside a numerical one (from running `forward` twice), and the error between them,
//! `|a − n| / max(|a|, |n|, 0.01)`: relative for gradients above 0.01, absolute (times 100) for
//! smaller ones, where a relative error would only measure `f32` rounding. Then it does the same
//! for a deliberately broken layer, to show what a failure looks like.
//!
//! Run: `cargo run --release --example gradcheck`

use backprop::gradcheck::{Options, check_layer};
use backprop::layers::{named_params, named_params_mut, zero_grad};
use backprop::prelude::*;

/// L = Σ y ⊙ r for a fixed random r, in f64.
fn objective(layer: &mut dyn Layer, x: &Tensor, r: &Tensor) -> f64 {
    let y = layer.forward(x, Pass::EVAL);
    y.data().iter().zip(r.data()).map(|(&a, &b)| a as f64 * b as f64).sum()
}

/// Sets entry `i` of the layer's weight (its first parameter) to `value`.
fn set_weight(layer: &mut dyn Layer, i: usize, value: f32) {
    named_params_mut(layer)[0].1.value.data_mut()[i] = value;
}

fn show(layer: &mut dyn Layer, x: &Tensor, entries: usize) {
    println!("── {} on an input of shape {:?}", layer.describe(), x.shape());
    let y = layer.forward(x, Pass::EVAL);
    let r = Tensor::randn(y.shape(), 0.0, 1.0, 42);
    zero_grad(layer);
    layer.backward(&r, InputGrad::Needed); // dL/dy = r, so this fills dL/dW for L = Σ y ⊙ r
    let analytic = named_params(layer)[0].1.grad.clone();
    let eps = 1e-2;
    println!("   weight entry   analytic (backward)   numeric (L(w+ε) − L(w−ε))/2ε   error*");
    for i in 0..entries.min(analytic.len()) {
        let w = named_params(layer)[0].1.value.data()[i];
        set_weight(layer, i, w + eps);
        let plus = objective(layer, x, &r);
        set_weight(layer, i, w - eps);
        let minus = objective(layer, x, &r);
        set_weight(layer, i, w);
        let numeric = ((plus - minus) / (2.0 * eps as f64)) as f32;
        let a = analytic.data()[i];
        let rel = (a - numeric).abs() / a.abs().max(numeric.abs()).max(1e-2);
        println!("   W[{i:>2}]         {a:>+12.6}          {numeric:>+12.6}                  {rel:.1e}");
    }
    println!("   (* |a − n| / max(|a|, |n|, 0.01): relative above 0.01, absolute × 100 below)");
    // The library's checker does the same for every entry of the input and of every parameter.
    // It draws its own projection r′ (another fixed random tensor), so the analytic values it
    // prints are dL′/dW for L′ = Σ y ⊙ r′: other numbers than the table's, the same derivative
    // seen along another direction, and checked the same way.
    let report = check_layer(layer, x, Mode::Eval, &Options::default());
    println!(
        "   gradcheck over all entries (with its own random projection r′, so its analytic values are\n   \
         dL′/dW for L′ = Σ y ⊙ r′, not the table's):\n{report}"
    );
    println!(
        "   {}\n",
        if report.passes(1e-2) { "PASS: backward agrees with finite differences" } else { "FAIL" }
    );
}

/// A dense layer with a classic bug: its backward pass adds the parameter gradients twice (as if
/// a sum over the batch were counted twice). Its forward pass and `dL/dx` are right, so only a
/// check of the parameters' gradients can notice.
struct DoubledGradient(Dense);

impl Layer for DoubledGradient {
    fn describe(&self) -> String {
        format!("{} with doubled parameter gradients (broken on purpose)", self.0.describe())
    }
    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        self.0.output_shape(input)
    }
    fn forward(&mut self, x: &Tensor, pass: Pass<'_>) -> Tensor {
        self.0.forward(x, pass)
    }
    fn backward(&mut self, g: &Tensor, input_grad: InputGrad) -> Option<Tensor> {
        self.0.backward(g, InputGrad::NotNeeded); // the bug: dL/dW and dL/db accumulated one extra time
        self.0.backward(g, input_grad)
    }
}

impl Visit for DoubledGradient {
    fn visit<'a>(&'a self, f: &mut dyn FnMut(&str, State<'a>)) {
        self.0.visit(f)
    }

    fn visit_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, StateMut<'a>)) {
        self.0.visit_mut(f)
    }
}

fn main() {
    println!(
        "A layer maps x to y. To test its backward pass we need a scalar loss, so take L = Σ y ⊙ r\n\
         with a fixed random tensor r: then dL/dy = r. We feed r to backward(), which returns dL/dx and\n\
         fills dL/dW, and compare with central differences (L(w + ε) − L(w − ε)) / 2ε, which need only\n\
         the forward pass. Agreement to ~3 digits in f32 means the calculus in backward() is right;\n\
         a wrong transpose or a missing sum shows up as errors near 1.\n"
    );
    show(&mut Dense::new(3, 2).seed(1), &Tensor::randn(&[2, 3], 0.0, 1.0, 1), 6);
    show(
        &mut Conv2d::new(2, 2, 3).stride(2).padding(1).seed(2),
        &Tensor::randn(&[2, 2, 5, 5], 0.0, 1.0, 2),
        8,
    );
    println!(
        "And a broken layer: the same dense layer whose backward pass adds dL/dW and dL/db twice. The\n\
         analytic gradient is now twice the numerical one, an error of 0.5 on every parameter; dL/dx and\n\
         the forward pass are still right, which is why the check looks at every parameter too.\n"
    );
    show(&mut DoubledGradient(Dense::new(3, 2).seed(1)), &Tensor::randn(&[2, 3], 0.0, 1.0, 1), 3);
}
