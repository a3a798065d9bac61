//! Writing your own layer: Swish with a learnable slope, `y = x·σ(β·x)`, one β per feature.
//!
//! The whole contract is four methods and, because this layer learns something, a visitor over
//! its named state. Nothing else is needed: the layer then trains inside any model, passes a
//! gradient check, and saves and loads with everything else. `docs/custom_layer.md` explains each
//! step.
//!
//! Run: `cargo run --release --example custom_layer`

use backprop::gradcheck::{Options, check_layer};
use backprop::prelude::*;
use backprop::tensor::math::sigmoid;

/// Swish with a learnable slope per feature: `y = x·σ(β·x)` on `[N, F]` inputs.
///
/// With `s = σ(β·x)` and `σ' = s(1 − s)`, given `g = dL/dy`:
///
/// ```text
/// dL/dx = g · (s + β·x·s(1 − s))        (returned)
/// dL/dβ = Σₙ g · x²·s(1 − s)            (accumulated, summed over the batch)
/// ```
struct Swish {
    beta: Param,
    /// Cached by forward for backward: the input.
    x: Tensor,
}

impl Swish {
    fn new(features: usize) -> Swish {
        Swish { beta: Param::new(Tensor::ones(&[features])), x: Tensor::default() }
    }

    fn features(&self) -> usize {
        self.beta.len()
    }
}

impl Layer for Swish {
    fn describe(&self) -> String {
        format!("Swish({})", self.features())
    }

    fn output_shape(&self, input: &[usize]) -> backprop::Result<Vec<usize>> {
        match input {
            [_, f] if *f == self.features() => Ok(input.to_vec()),
            _ => Err(Error::shape(format!(
                "{} expects an input of shape [N, {}], got {input:?}",
                self.describe(),
                self.features()
            ))),
        }
    }

    fn forward(&mut self, x: &Tensor, _pass: Pass<'_>) -> Tensor {
        self.output_shape(x.shape()).unwrap_or_else(|e| panic!("{e}"));
        self.x.copy_from(x);
        let beta = self.beta.value.data();
        let mut y = x.clone();
        for row in y.data_mut().chunks_exact_mut(beta.len()) {
            for (v, &b) in row.iter_mut().zip(beta) {
                *v *= sigmoid(b * *v); // y = x·σ(βx)
            }
        }
        y
    }

    fn backward(&mut self, g: &Tensor, _: InputGrad) -> Option<Tensor> {
        assert_eq!(g.shape(), self.x.shape(), "Swish: gradient shape vs the latest input's");
        let f = self.features();
        let beta = self.beta.value.data();
        let mut dx = Tensor::zeros(g.shape());
        let rows = g.data().chunks_exact(f).zip(self.x.data().chunks_exact(f));
        for ((g_row, x_row), dx_row) in rows.zip(dx.data_mut().chunks_exact_mut(f)) {
            for k in 0..f {
                let (g, x, b) = (g_row[k], x_row[k], beta[k]);
                let s = sigmoid(b * x);
                let ds = s * (1.0 - s); // σ'(βx)
                dx_row[k] = g * (s + b * x * ds); // dL/dx = g·(s + βx·s(1 − s))
                self.beta.grad.data_mut()[k] += g * x * x * ds; // dL/dβ += g·x²·s(1 − s)
            }
        }
        Some(dx)
    }

    // The layer's state, named. A container prefixes the name ("1.beta"); names may be built at
    // run time (`&format!("head{i}.beta")`) as long as each is unique within the layer.
}

impl Visit for Swish {
    fn visit<'a>(&'a self, f: &mut dyn FnMut(&str, State<'a>)) {
        f("beta", State::Param(&self.beta));
    }

    fn visit_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, StateMut<'a>)) {
        f("beta", StateMut::Param(&mut self.beta));
    }
}

pub fn main() -> backprop::Result<()> {
    // 1. The backward pass agrees with finite differences (input and β).
    let mut swish = Swish::new(3);
    swish.beta.value = Tensor::from_vec(&[3], vec![0.5, 1.0, 2.0])?;
    let report =
        check_layer(&mut swish, &Tensor::randn(&[4, 3], 0.0, 1.5, 1), Mode::Train, &Options::default());
    println!("gradient check of {}:\n{report}", swish.describe());
    assert!(report.passes(1e-2), "the backward pass disagrees with finite differences");

    // 2. It trains inside a model: three noisy rings in the plane.
    let n = 600;
    let angles = Tensor::rand_uniform(&[n], 0.0, std::f32::consts::TAU, 2);
    let noise = Tensor::randn(&[n, 2], 0.0, 0.1, 3);
    let labels: Vec<usize> = (0..n).map(|i| i % 3).collect();
    let points = Tensor::from_fn(&[n, 2], |i| {
        let (a, r) = (angles.data()[i[0]], 0.5 + labels[i[0]] as f32);
        (if i[1] == 0 { r * a.cos() } else { r * a.sin() }) + noise[&[i[0], i[1]]]
    });
    let (train, test) = Dataset::classification(points, labels)?.split_stratified(0.75, 42)?;
    let mut model = Sequential::builder(&[2])
        .add(Dense::new(2, 32))
        .add(Swish::new(32))
        .add(Dense::new(32, 3))
        .seed(4)
        .build()?;
    println!("\n{model}\n");
    let loss = CrossEntropyLoss::new();
    model.fit(
        &train,
        &loss,
        &mut Adam::new(0.02),
        FitOptions::new().epochs(60).batch_size(32).verbose(false),
    )?;
    let eval = model.evaluate(&test, &loss, 150)?;
    let betas = &model.layer_as::<Swish>(1).expect("layer 1 is the Swish").beta.value;
    println!(
        "test accuracy {:.1}%, learned β from {:.2} to {:.2}",
        100.0 * eval.accuracy.unwrap_or(0.0),
        betas.min(),
        betas.max()
    );

    // 3. Its state saves and loads with the rest of the model, under the name "1.beta".
    let names: Vec<String> = model.named_params().into_iter().map(|(name, _)| name).collect();
    println!("parameters: {names:?}");
    let mut copy = Sequential::builder(&[2])
        .add(Dense::new(2, 32))
        .add(Swish::new(32))
        .add(Dense::new(32, 3))
        .build()?;
    copy.load_safetensors(&model.to_safetensors()?, "memory")?;
    assert_eq!(copy.predict(test.inputs(), 150)?, model.predict(test.inputs(), 150)?);
    println!("saved and loaded: identical predictions");
    Ok(())
}
