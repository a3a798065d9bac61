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
    // g is not rot180(W), so that the text can say which one slides over the other.
    let g = t(&[1, 1, 2, 2], &[1., -2., 3., 0.]);
    let dx = conv.backward(&g, InputGrad::Needed).unwrap();
    close(&conv.weight().grad, &[9., 11., 15., 17.], "dW = g·colsᵀ");
    close(&conv.bias().unwrap().grad, &[2.], "db = Σ g");
    // dx = col2im(Wᵀ·g), which is the full correlation of g with the kernel turned by 180°.
    close(&dx, &[1., -2., 0., 2., 4., -4., -3., 6., 0.], "dx");
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

/// §6's rule for strides and dilations: with stride `s`, `dL/dx` is the full correlation of
/// `rot180(W)` over `g` dilated by `s` (zeros between its entries, the far edge padded to the
/// stride-1 output's size `H − k + 1`, so that the full correlation has the input's size); with
/// dilation `d`, over `g` itself with `rot180` of the kernel dilated by `d`.
#[test]
fn strided_and_dilated_backward_passes_follow_the_dilation_rule() {
    // The full correlation of `k` (kh × kw, already rotated) over `g` padded by `kh−1`, `kw−1`.
    fn full_correlation(g: &[Vec<f32>], k: &[Vec<f32>]) -> Vec<Vec<f32>> {
        let (gh, gw, kh, kw) = (g.len(), g[0].len(), k.len(), k[0].len());
        let at = |i: isize, j: isize| {
            if i >= 0 && j >= 0 && (i as usize) < gh && (j as usize) < gw {
                g[i as usize][j as usize]
            } else {
                0.0
            }
        };
        (0..gh + kh - 1)
            .map(|i| {
                (0..gw + kw - 1)
                    .map(|j| {
                        let mut s = 0.0;
                        for (a, row) in k.iter().enumerate() {
                            for (b, &w) in row.iter().enumerate() {
                                s += at(
                                    i as isize + a as isize - (kh as isize - 1),
                                    j as isize + b as isize - (kw as isize - 1),
                                ) * w;
                            }
                        }
                        s
                    })
                    .collect()
            })
            .collect()
    }
    let x = t(&[1, 1, 5, 5], &(0..25).map(|v| (v % 7) as f32 - 3.0).collect::<Vec<_>>());
    let w = [[1.0f32, -2.0], [3.0, 0.5]];
    let rot = |k: &[Vec<f32>]| -> Vec<Vec<f32>> {
        k.iter().rev().map(|r| r.iter().rev().copied().collect()).collect()
    };
    let wt = t(&[1, 1, 2, 2], &[w[0][0], w[0][1], w[1][0], w[1][1]]);

    // Stride 2: output 2×2 (windows at 0 and 2); g dilated to 3×3, padded to 4×4 (row and
    // column 4 of x are never read).
    let mut conv = Conv2d::new(1, 1, 2).stride(2).with_weights(wt.clone(), None);
    conv.forward(&x, Pass::TRAIN);
    let g = [[1.0f32, -1.0], [2.0, 3.0]];
    let dx = conv.backward(&t(&[1, 1, 2, 2], &[1., -1., 2., 3.]), InputGrad::Needed).unwrap();
    let mut dilated = vec![vec![0.0f32; 4]; 4];
    for (p, row) in g.iter().enumerate() {
        for (q, &v) in row.iter().enumerate() {
            dilated[2 * p][2 * q] = v;
        }
    }
    let kernel: Vec<Vec<f32>> = w.iter().map(|r| r.to_vec()).collect();
    let rule = full_correlation(&dilated, &rot(&kernel));
    assert_eq!(dx.data(), rule.concat().as_slice(), "stride 2");

    // Dilation 2: the kernel's taps 2 apart (a 3×3 kernel with zeros), output 3×3.
    let mut conv = Conv2d::new(1, 1, 2).dilation(2).with_weights(wt, None);
    conv.forward(&x, Pass::TRAIN);
    let g: Vec<Vec<f32>> = vec![vec![1., 0., -1.], vec![2., 1., 0.], vec![0., -2., 1.]];
    let dx = conv.backward(&t(&[1, 1, 3, 3], &g.concat()), InputGrad::Needed).unwrap();
    let spread = vec![vec![w[0][0], 0.0, w[0][1]], vec![0.0; 3], vec![w[1][0], 0.0, w[1][1]]];
    assert_eq!(dx.data(), full_correlation(&g, &rot(&spread)).concat().as_slice(), "dilation 2");
}
