//! `Sequential::input_gradient` (saliency) against finite differences on a tiny CNN.

use backprop::prelude::*;

#[test]
fn input_gradient_matches_finite_differences() {
    let mut model = Sequential::builder(&[1, 6, 6])
        .add(Conv2d::new(1, 3, 3).padding(1).seed(1))
        .add(Tanh::new())
        .add(AvgPool2d::new(2))
        .add(Flatten::new())
        .add(Dropout::new(0.5)) // identity in eval mode
        .add(Dense::new(27, 4).seed(2))
        .build()
        .unwrap();
    let x = Tensor::randn(&[2, 1, 6, 6], 0.0, 1.0, 3);
    let classes = [3usize, 1];
    let g = model.input_gradient(&x, &classes).unwrap();
    assert_eq!(g.shape(), x.shape());
    assert!(model.params().iter().all(|p| p.grad.sum() == 0.0), "parameter gradients are left zeroed");
    let eps = 1e-2;
    let score = |m: &mut Sequential, x: &Tensor, n: usize| -> f64 {
        m.forward(x, Pass::EVAL).data()[n * 4 + classes[n]] as f64
    };
    let mut worst = 0.0f32;
    for i in 0..x.len() {
        let n = i / 36;
        let (mut xp, mut xm) = (x.clone(), x.clone());
        xp.data_mut()[i] += eps;
        xm.data_mut()[i] -= eps;
        let numeric = ((score(&mut model, &xp, n) - score(&mut model, &xm, n)) / (2.0 * eps as f64)) as f32;
        let analytic = g.data()[i];
        worst = worst.max((analytic - numeric).abs() / analytic.abs().max(numeric.abs()).max(1e-2));
    }
    assert!(worst < 1e-2, "max relative error {worst}");
    // Bad requests are errors.
    assert!(model.input_gradient(&x, &[4, 0]).is_err());
    assert!(model.input_gradient(&x, &[0]).is_err());
}
