//! The transpose test for every layer: `backward` must be the transpose (adjoint) of the layer's
//! Jacobian `J = dy/dx` at the current input, so for any `g` (shaped like `y`) and `v` (shaped like
//! `x`)
//!
//! ```text
//! ⟨backward(g), v⟩ = ⟨g, J·v⟩
//! ```
//!
//! `J·v` is how the output moves when the input moves along `v`: for a linear layer exactly
//! `f(x + v) − f(x)`, for any other layer the central difference `(f(x + εv) − f(x − εv)) / 2ε`.
//! One random pair `(g, v)` tests every entry of the Jacobian at once, in both directions — a
//! missing transpose, a wrong stride or a dropped term changes the inner product. It generalises
//! the adjointness test of im2col/col2im (`tests/im2col.rs`); docs/backprop.md §11 explains it.

use backprop::layers::*;
use backprop::prelude::*;

fn dot(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.shape(), b.shape());
    a.data().iter().zip(b.data()).map(|(&x, &y)| x as f64 * y as f64).sum()
}

fn along(x: &Tensor, v: &Tensor, s: f32) -> Tensor {
    let mut out = x.clone();
    out.axpy(s, v);
    out
}

/// `⟨backward(g), v⟩` and `⟨g, J·v⟩` for `layer` at `x`, with `J·v` exact (`linear`) or by
/// central differences.
fn both_sides(layer: &mut dyn Layer, x: &Tensor, mode: Mode, linear: bool, seed: u64) -> (f64, f64) {
    let y = layer.forward(x, mode.into());
    let g = Tensor::randn(y.shape(), 0.0, 1.0, seed);
    let v = Tensor::randn(x.shape(), 0.0, 1.0, seed + 1);
    let dx = layer.backward(&g, InputGrad::Needed).expect("dL/dx");
    let left = dot(&dx, &v);
    let jv = if linear {
        let moved = layer.forward(&along(x, &v, 1.0), mode.into());
        let mut d = moved;
        d.axpy(-1.0, &y);
        d
    } else {
        let eps = 1e-3;
        let mut d = layer.forward(&along(x, &v, eps), mode.into());
        d.axpy(-1.0, &layer.forward(&along(x, &v, -eps), mode.into()));
        d.scale(1.0 / (2.0 * eps));
        d
    };
    (left, dot(&g, &jv))
}

fn check(name: &str, layer: &mut dyn Layer, x: &Tensor, mode: Mode, linear: bool) {
    for seed in [1, 2, 3] {
        let (left, right) = both_sides(layer, x, mode, linear, 100 * seed);
        // (Nonlinear layers: the central difference's f32 noise is about 10⁻⁴ of the product; a
        // tolerance of 2 % had passed a backward pass scaled by 1.02.)
        let tol = if linear { 1e-4 } else { 1e-3 } * (1.0 + left.abs().max(right.abs()));
        assert!(
            (left - right).abs() <= tol,
            "{name}: ⟨backward(g), v⟩ = {left:.6} but ⟨g, J·v⟩ = {right:.6} (seed {seed})"
        );
    }
}

#[test]
fn linear_layers_are_exact_transposes() {
    let x = Tensor::randn(&[3, 2, 7, 6], 0.0, 1.0, 7);
    check("Conv2d 3×3", &mut Conv2d::new(2, 4, 3).seed(1), &x, Mode::Eval, true);
    let mut strided = Conv2d::with_kernel(2, 3, (2, 3)).stride_hw(2, 1).padding_hw(1, 2).dilation(2).seed(2);
    check("Conv2d strided, padded, dilated", &mut strided, &x, Mode::Eval, true);
    check("AvgPool2d", &mut AvgPool2d::new(2).stride(1).padding(1), &x, Mode::Eval, true);
    check("GlobalAvgPool", &mut GlobalAvgPool::new(), &x, Mode::Eval, true);
    check("Flatten", &mut Flatten::new(), &x, Mode::Eval, true);
    check("Dropout (eval: identity)", &mut Dropout::new(0.5), &x, Mode::Eval, true);
    let rows = Tensor::randn(&[4, 5], 0.0, 1.0, 8);
    check("Dense", &mut Dense::new(5, 3).seed(3), &rows, Mode::Eval, true);
    check(
        "Dense on [N, T, F]",
        &mut Dense::new(6, 2).seed(4),
        &Tensor::randn(&[2, 3, 6], 0.0, 1.0, 9),
        Mode::Eval,
        true,
    );
}

#[test]
fn nonlinear_layers_are_transposes_of_their_jacobians() {
    // Inputs away from ReLU's kink and pooling ties: a central difference there has no meaning.
    let x = Tensor::randn(&[3, 2, 6, 6], 0.0, 1.0, 11).map(|v| if v.abs() < 0.05 { v + 0.1 } else { v });
    check("MaxPool2d", &mut MaxPool2d::new(2), &x, Mode::Eval, false);
    check("Relu", &mut Relu::new(), &x, Mode::Eval, false);
    check("LeakyRelu", &mut LeakyRelu::new(0.1), &x, Mode::Eval, false);
    check("Sigmoid", &mut Sigmoid::new(), &x, Mode::Eval, false);
    check("Tanh", &mut Tanh::new(), &x, Mode::Eval, false);
    check("Gelu", &mut Gelu::new(), &x, Mode::Eval, false);
    check("Gelu (tanh)", &mut Gelu::tanh(), &x, Mode::Eval, false);
    check("Softmax", &mut Softmax::new(), &x, Mode::Eval, false);
    check("LogSoftmax", &mut LogSoftmax::new(), &x, Mode::Eval, false);
    check("BatchNorm2d (train)", &mut BatchNorm2d::new(2), &x, Mode::Train, false);
    let rows = Tensor::randn(&[6, 4], 0.0, 1.0, 12);
    check("BatchNorm1d (train)", &mut BatchNorm1d::new(4), &rows, Mode::Train, false);
    let seq = Tensor::randn(&[2, 5, 3], 0.0, 1.0, 13);
    check("Rnn", &mut Rnn::new(3, 4).seed(5), &seq, Mode::Eval, false);
    check("Lstm", &mut Lstm::new(3, 4).seed(6), &seq, Mode::Eval, false);
    check("Gru (last step)", &mut Gru::new(3, 4).seed(7).last_step_only(), &seq, Mode::Eval, false);
    let body = Sequential::new().add(Conv2d::new(2, 2, 3).padding(1).seed(8)).add(Tanh::new());
    check("Residual", &mut Residual::new(body), &x, Mode::Eval, false);
}

/// The attention chapter's layers (§13), on `[N, T, E]` sequences. (The layers that read token
/// ids — `Embedding`, `DecoderOnly` — have no input gradient to test.)
#[test]
fn attention_layers_are_transposes_of_their_jacobians() {
    let seq = Tensor::randn(&[2, 5, 8], 0.0, 1.0, 21);
    check("LayerNorm", &mut LayerNorm::new(8), &seq, Mode::Eval, false);
    check("MultiHeadAttention", &mut MultiHeadAttention::new(8, 2).seed(9), &seq, Mode::Eval, false);
    check(
        "MultiHeadAttention (causal)",
        &mut MultiHeadAttention::new(8, 2).causal().seed(10),
        &seq,
        Mode::Eval,
        false,
    );
    let post = &mut TransformerEncoderLayer::new(8, 2, 16).seed(11);
    check("TransformerEncoderLayer (post-LN, ReLU)", post, &seq, Mode::Eval, false);
    let pre = &mut TransformerEncoderLayer::new(8, 2, 16)
        .norm_first()
        .activation(FeedForwardActivation::Gelu)
        .causal()
        .seed(12);
    check("TransformerEncoderLayer (pre-LN, GELU, causal)", pre, &seq, Mode::Eval, false);
    // Adding a table of positions is affine: J·v = f(x + v) − f(x) exactly.
    check("SinusoidalPositions", &mut SinusoidalPositions::new(8), &seq, Mode::Eval, true);
    check("PositionEmbedding", &mut PositionEmbedding::new(5, 8), &seq, Mode::Eval, true);
}

#[test]
fn a_wrong_transpose_fails_the_test() {
    // A dense layer whose backward pairs each output's gradient with the wrong row of W (the
    // outputs reversed before dL/dx = g·W): every shape still fits, only the test can tell.
    struct Wrong(Dense);
    impl Layer for Wrong {
        fn describe(&self) -> String {
            "Wrong".into()
        }
        fn output_shape(&self, input: &[usize]) -> backprop::Result<Vec<usize>> {
            self.0.output_shape(input)
        }
        fn forward(&mut self, x: &Tensor, pass: Pass<'_>) -> Tensor {
            self.0.forward(x, pass)
        }
        fn backward(&mut self, g: &Tensor, input_grad: InputGrad) -> Option<Tensor> {
            let mut reversed = g.clone();
            for row in reversed.data_mut().chunks_exact_mut(g.dim(1)) {
                row.reverse(); // the bug: outputs matched to the wrong rows of W
            }
            self.0.backward(&reversed, input_grad)
        }
    }

    impl Visit for Wrong {}
    let rows = Tensor::randn(&[4, 5], 0.0, 1.0, 14);
    let (left, right) = both_sides(&mut Wrong(Dense::new(5, 3).seed(9)), &rows, Mode::Eval, true, 1);
    assert!((left - right).abs() > 1e-2, "the test must notice: {left} vs {right}");
}
