//! The worked numbers of docs/backprop.md §6 (a 3×3 image, a 2×2 kernel) and §8 (batch norm over
//! three values), computed by the crate's layers and asserted here, so the text cannot drift from
//! the code.

use backprop::Tensor;
use backprop::layers::{BatchNorm1d, Conv2d, InputGrad, Layer, Pass, StateMut, Visit};
use backprop::tensor::im2col::{ConvGeometry, im2col};

fn t(shape: &[usize], v: &[f32]) -> Tensor {
    Tensor::from_vec(shape, v.to_vec()).unwrap()
}

fn close(got: &Tensor, want: &[f32], what: &str) {
    for (a, b) in got.data().iter().zip(want) {
        assert!((a - b).abs() < 1e-5, "{what}: {:?} vs {want:?}", got.data());
    }
    assert_eq!(got.len(), want.len(), "{what}");
}

#[test]
fn convolution_of_a_3x3_image_with_a_2x2_kernel() {
    let x = t(&[1, 1, 3, 3], &[1., 2., 3., 4., 5., 6., 7., 8., 9.]);
    let w = t(&[1, 1, 2, 2], &[1., 0., -1., 2.]);
    let mut conv = Conv2d::new(1, 1, 2).with_weights(w, Some(t(&[1], &[0.])));
    // cols: one row per kernel tap (0,0) (0,1) (1,0) (1,1), one column per output position.
    let geo = ConvGeometry::new((1, 3, 3), (2, 2), (1, 1), (0, 0), (1, 1)).unwrap();
    let mut cols = vec![0.0; 16];
    im2col(x.data(), &geo, &mut cols);
    assert_eq!(cols, [1., 2., 4., 5., 2., 3., 5., 6., 4., 5., 7., 8., 5., 6., 8., 9.]);
    let y = conv.forward(&x, Pass::TRAIN);
    close(&y, &[7., 9., 13., 15.], "y = W·cols");
    let g = t(&[1, 1, 2, 2], &[2., -1., 0., 1.]);
    let dx = conv.backward(&g, InputGrad::Needed).unwrap();
    close(&conv.weight().grad, &[5., 7., 11., 13.], "dW = g·colsᵀ");
    close(&conv.bias().unwrap().grad, &[2.], "db = Σ g");
    // dx = col2im(Wᵀ·g), which is the full correlation of g with the kernel turned by 180°.
    close(&dx, &[2., -1., 0., -2., 6., -2., 0., -1., 2.], "dx");
    let flipped = [2., -1., 0., 1.]; // W rotated 180°
    let gp = |i: isize, j: isize| {
        if (0..2).contains(&i) && (0..2).contains(&j) { g.data()[(i * 2 + j) as usize] } else { 0.0 }
    };
    for (k, &d) in dx.data().iter().enumerate() {
        let (i, j) = ((k / 3) as isize, (k % 3) as isize);
        let full: f32 = (0..2)
            .flat_map(|a| (0..2).map(move |b| (a, b)))
            .map(|(a, b)| gp(i - 1 + a, j - 1 + b) * flipped[(a * 2 + b) as usize])
            .sum();
        assert_eq!(d, full, "dx[{i}, {j}] as a full correlation");
    }
}

#[test]
fn batch_norm_over_three_values() {
    let mut bn = BatchNorm1d::new(1);
    bn.visit_mut(&mut |name, s| {
        if let StateMut::Param(p) = s {
            p.value.fill(if name == "weight" { 2.0 } else { 0.5 }); // γ = 2, β = 0.5
        }
    });
    let x = t(&[3, 1], &[1., 2., 6.]);
    let y = bn.forward(&x, Pass::TRAIN);
    close(&y, &[-1.351638, -0.425819, 3.277457], "y = γ·x̂ + β");
    let dx = bn.backward(&t(&[3, 1], &[1., 0., -1.]), InputGrad::Needed).unwrap();
    close(&dx, &[0.264521, -0.330649, 0.066128], "dx");
    assert!(
        dx.data().iter().sum::<f32>().abs() < 1e-6,
        "Σᵢ dL/dxᵢ = 0: a shift of all inputs changes nothing"
    );
    let mut grads = Vec::new();
    bn.visit(&mut |name, s| {
        if let backprop::layers::State::Param(p) = s {
            grads.push((name.to_string(), p.grad.data()[0]));
        }
    });
    assert!((grads[0].1 - -2.314548).abs() < 1e-5, "dγ = Σ g·x̂: {grads:?}");
    assert_eq!(grads[1].1, 0.0, "dβ = Σ g");
}
