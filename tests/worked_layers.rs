//! The worked numbers of docs/backprop.md §14 (binary cross-entropy on logits, log-softmax with
//! NLL, dropout, embedding, residual blocks), computed by the crate and asserted here, so that the
//! text cannot drift from the code.

use backprop::layers::{Embedding, LogSoftmax, Residual};
use backprop::loss::{BceWithLogitsLoss, CrossEntropyLoss, Loss, NllLoss};
use backprop::prelude::*;

fn t(shape: &[usize], v: &[f32]) -> Tensor {
    Tensor::from_vec(shape, v.to_vec()).unwrap()
}

fn close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (a, b) in got.iter().zip(want) {
        assert!((a - b).abs() < 1e-6, "{what}: {got:?} vs {want:?}");
    }
}

#[test]
fn binary_cross_entropy_on_logits() {
    let (z, target) = (t(&[1, 2], &[2., -1.]), t(&[1, 2], &[1., 0.]));
    let (l, g) = BceWithLogitsLoss::new().loss_and_grad(&z, (&target).into()).unwrap();
    assert!((l - 0.220095).abs() < 1e-6, "{l}");
    close(g.data(), &[-0.059601, 0.134471], "dL/dz = (σ(z) − t)/K");
}

#[test]
fn log_softmax_and_nll_are_cross_entropy_in_two_layers() {
    let z = t(&[1, 3], &[1., 2., 0.5]);
    let mut log_softmax = LogSoftmax::new();
    let y = log_softmax.forward(&z, Pass::TRAIN);
    close(y.data(), &[-1.464369, -0.464369, -1.964369], "y = z − log Σ e^z");
    let (l, g) = NllLoss::new().loss_and_grad(&y, (&vec![1]).into()).unwrap();
    assert!((l - 0.464369).abs() < 1e-6, "{l}");
    let dz = log_softmax.backward(&g, InputGrad::Needed).unwrap();
    close(dz.data(), &[0.231224, -0.371468, 0.140244], "dL/dz = (p − one-hot)/N");
    let (_, fused) = CrossEntropyLoss::new().loss_and_grad(&z, (&vec![1]).into()).unwrap();
    close(dz.data(), fused.data(), "the same as §4's fused cross-entropy");
}

#[test]
fn dropout_passes_gradient_where_it_kept_the_unit() {
    let x = Tensor::rand_uniform(&[1, 10_000], 0.5, 1.5, 1);
    let mut drop = Dropout::new(0.5).seed(3);
    let y = drop.forward(&x, Pass::TRAIN);
    let g = Tensor::rand_uniform(&[1, 10_000], -1.0, 1.0, 2);
    let dx = drop.backward(&g, InputGrad::Needed).unwrap();
    let mut kept = 0;
    for (((&xi, &yi), &gi), &di) in x.data().iter().zip(y.data()).zip(g.data()).zip(dx.data()) {
        if yi == 0.0 {
            assert_eq!(di, 0.0, "a dropped unit passes no gradient");
        } else {
            assert_eq!((yi, di), (2.0 * xi, 2.0 * gi), "a kept one: 2x and 2g");
            kept += 1;
        }
    }
    assert!((kept as f32 / 10_000.0 - 0.5).abs() < 0.02, "about half kept: {kept}");
    // Inference: the identity, both ways.
    assert_eq!(drop.forward(&x, Pass::EVAL), x);
    assert_eq!(drop.backward(&g, InputGrad::Needed).unwrap(), g);
}

#[test]
fn embedding_gradients_are_a_scatter_add() {
    let w = t(&[3, 2], &[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]);
    let mut embedding = Embedding::new(3, 2).with_weights(w);
    let y = embedding.forward(&t(&[3, 1], &[2., 0., 2.]), Pass::TRAIN);
    close(y.data(), &[0.5, 0.6, 0.1, 0.2, 0.5, 0.6], "y[n] = W[idₙ]");
    embedding.backward(&t(&[3, 1, 2], &[1., 2., 3., 4., 5., 6.]), InputGrad::NotNeeded);
    let dw = &backprop::layers::named_params(&embedding)[0].1.grad;
    close(dw.data(), &[3., 4., 0., 0., 6., 8.], "dW = onehot(ids)ᵀ·g");
}

#[test]
fn residual_blocks_add_the_identity_to_the_jacobian() {
    let block = |w: f32| {
        Residual::new(Sequential::new().add(Dense::new(1, 1).no_bias().with_weights(t(&[1, 1], &[w]), None)))
    };
    let mut one = block(0.5);
    let y = one.forward(&t(&[1, 1], &[2.]), Pass::TRAIN);
    assert_eq!(y.data(), &[3.0], "y = x + 0.5x");
    let dx = one.backward(&t(&[1, 1], &[1.]), InputGrad::Needed).unwrap();
    assert_eq!(dx.data(), &[1.5], "dL/dx = dL/dy + f′ᵀ·dL/dy");
    for (w, want) in [(0.5f32, 57.665f32), (-0.9, 1e-10)] {
        let mut stack = Sequential::new();
        for _ in 0..10 {
            stack = stack.add(block(w));
        }
        stack.forward(&t(&[1, 1], &[1.]), Pass::TRAIN);
        let dx = stack.backward(&t(&[1, 1], &[1.]), InputGrad::Needed).unwrap().data()[0];
        assert!((dx - want).abs() <= 1e-3 * want, "ten blocks of f(x) = {w}·x: {dx} vs {want}");
    }
}
