//! The fully worked example of `docs/backprop.md` §10, number for number: one forward pass,
//! backward pass and SGD update of a 2-2-1 network. If this test fails, the text and the code have
//! drifted apart; fix whichever is wrong.

use backprop::layers::named_params;
use backprop::prelude::*;

fn t(shape: &[usize], v: &[f32]) -> Tensor {
    Tensor::from_vec(shape, v.to_vec()).unwrap()
}

/// Agreement to the 6 decimals the text prints.
fn check(what: &str, got: &[f32], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (g, w) in got.iter().zip(want) {
        assert!((*g as f64 - w).abs() < 1.5e-6, "{what}: code gives {got:?}, docs/backprop.md says {want:?}");
    }
}

#[test]
fn worked_example_of_backprop_md() {
    // The network: x (2) → Dense W1, b1 → sigmoid → Dense W2, b2 → y; L = (y − t)².
    let mut net = Sequential::builder(&[2])
        .add(Dense::new(2, 2).with_weights(t(&[2, 2], &[0.5, -0.3, 0.2, 0.8]), Some(t(&[2], &[0.1, -0.1]))))
        .add(Sigmoid::new())
        .add(Dense::new(2, 1).with_weights(t(&[1, 2], &[0.7, -0.4]), Some(t(&[1], &[0.2]))))
        .build()
        .unwrap();
    let x = t(&[1, 2], &[1.0, 0.5]);
    let target = t(&[1, 1], &[1.0]);

    // Forward, layer by layer.
    let z1 = net.layer_mut(0).forward(&x, Pass::TRAIN);
    check("z1", z1.data(), &[0.450000, 0.500000]);
    let h = net.layer_mut(1).forward(&z1, Pass::TRAIN);
    check("h", h.data(), &[0.610639, 0.622459]);
    let y = net.layer_mut(2).forward(&h, Pass::TRAIN);
    check("y", y.data(), &[0.378464]);
    check("y − t", &[y.data()[0] - 1.0], &[-0.621536]);
    let (loss, dy) = MseLoss::new().loss_and_grad(&y, (&target).into()).unwrap();
    check("L", &[loss], &[0.386307]);
    check("dL/dy", dy.data(), &[-1.243073]);

    // Backward, in reverse.
    net.zero_grad();
    let dh = net.layer_mut(2).backward(&dy, InputGrad::Needed).unwrap();
    check("dL/dh", dh.data(), &[-0.870151, 0.497229]);
    check("dL/dW2", named_params(net.layer(2))[0].1.grad.data(), &[-0.759069, -0.773762]);
    check("dL/db2", named_params(net.layer(2))[1].1.grad.data(), &[-1.243073]);
    let sigma_prime = h.map(|h| h * (1.0 - h)); // σ'(z1) = h(1 − h)
    check("σ'(z1)", sigma_prime.data(), &[0.237759, 0.235004]);
    let dz1 = net.layer_mut(1).backward(&dh, InputGrad::Needed).unwrap();
    check("dL/dz1", dz1.data(), &[-0.206886, 0.116851]);
    let dx = net.layer_mut(0).backward(&dz1, InputGrad::Needed).unwrap();
    check("dL/dW1", named_params(net.layer(0))[0].1.grad.data(), &[-0.206886, -0.103443, 0.116851, 0.058425]);
    check("dL/db1", named_params(net.layer(0))[1].1.grad.data(), &[-0.206886, 0.116851]);
    // dL/dx = dz1·W1 (not needed for training, but the chain goes on).
    check("dL/dx", dx.data(), &[-0.206886 * 0.5 + 0.116851 * 0.2, -0.206886 * -0.3 + 0.116851 * 0.8]);

    // One SGD step with learning rate 0.1.
    Sgd::new(0.1).step(&mut net);
    check("W1'", named_params(net.layer(0))[0].1.value.data(), &[0.520689, -0.289656, 0.188315, 0.794157]);
    check("b1'", named_params(net.layer(0))[1].1.value.data(), &[0.120689, -0.111685]);
    check("W2'", named_params(net.layer(2))[0].1.value.data(), &[0.775907, -0.322624]);
    check("b2'", named_params(net.layer(2))[1].1.value.data(), &[0.324307]);

    // The loss went down: 0.386307 → 0.153799.
    let y_new = net.forward(&x, Pass::TRAIN);
    check("y'", y_new.data(), &[0.607828]);
    check("L'", &[MseLoss::new().loss(&y_new, (&target).into()).unwrap()], &[0.153799]);
}
