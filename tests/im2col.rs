//! Convolution as im2col + GEMM against the direct 7-loop convolution (`layers::conv2d::reference`), and the adjointness of col2im.

use backprop::Tensor;
use backprop::layers::conv2d::reference::conv2d_forward;
use backprop::tensor::gemm::{Transpose, sgemm};
use backprop::tensor::im2col::{ConvGeometry, col2im, im2col};

/// The direct convolution: the definition in `layers::conv2d::reference`, without a bias.
fn direct_conv(x: &Tensor, w: &Tensor, g: &ConvGeometry) -> Tensor {
    conv2d_forward(x, w, None, g)
}

fn im2col_conv(x: &Tensor, w: &Tensor, g: &ConvGeometry) -> Tensor {
    let (n, o) = (x.dim(0), w.dim(0));
    let mut y = Tensor::zeros(&[n, o, g.out_height, g.out_width]);
    let mut cols = vec![f32::NAN; g.col_rows() * g.col_cols()]; // NaN: im2col must overwrite all
    for b in 0..n {
        im2col(x.outer(b), g, &mut cols);
        sgemm(
            o,
            g.col_rows(),
            g.col_cols(),
            1.0,
            w.data(),
            Transpose::No,
            &cols,
            Transpose::No,
            0.0,
            y.outer_mut(b),
        );
    }
    y
}

/// (channels, h, w, kernel, stride, padding, dilation)
type Case = (usize, usize, usize, (usize, usize), (usize, usize), (usize, usize), (usize, usize));
const CASES: &[Case] = &[
    (1, 5, 5, (3, 3), (1, 1), (0, 0), (1, 1)),
    (1, 28, 28, (3, 3), (1, 1), (0, 0), (1, 1)),
    (3, 7, 9, (3, 3), (1, 1), (1, 1), (1, 1)),
    (2, 8, 5, (3, 2), (2, 2), (1, 0), (1, 1)),
    (4, 9, 11, (3, 3), (2, 1), (2, 2), (2, 2)),
    (3, 10, 7, (2, 3), (1, 2), (0, 1), (2, 1)),
    (2, 6, 6, (1, 1), (2, 2), (0, 0), (1, 1)),
    (5, 13, 13, (5, 5), (3, 3), (2, 2), (1, 1)),
    (2, 4, 4, (3, 3), (1, 1), (2, 2), (1, 1)), // padding wider than some taps' reach
    (1, 3, 8, (1, 5), (1, 3), (0, 2), (1, 2)),
];

#[test]
fn im2col_gemm_equals_direct_convolution() {
    for (i, &(c, h, w, k, s, p, d)) in CASES.iter().enumerate() {
        let g = ConvGeometry::new((c, h, w), k, s, p, d).unwrap();
        let out_ch = 3;
        let x = Tensor::randn(&[2, c, h, w], 0.0, 1.0, i as u64);
        let wt = Tensor::randn(&[out_ch, c, k.0, k.1], 0.0, 1.0, 100 + i as u64);
        let want = direct_conv(&x, &wt, &g);
        let got = im2col_conv(&x, &wt, &g);
        assert_eq!(got.shape(), want.shape(), "case {i}");
        let err = got.max_abs_diff(&want);
        assert!(err < 1e-4, "case {i} {:?}: max error {err}", CASES[i]);
    }
}

#[test]
fn col2im_is_the_adjoint_of_im2col() {
    // ⟨im2col(x), y⟩ = ⟨x, col2im(y)⟩ for every x, y: col2im is im2col's transpose.
    for (i, &(c, h, w, k, s, p, d)) in CASES.iter().enumerate() {
        let g = ConvGeometry::new((c, h, w), k, s, p, d).unwrap();
        let x = Tensor::randn(&[c * h * w], 0.0, 1.0, 7 + i as u64);
        let y = Tensor::randn(&[g.col_rows() * g.col_cols()], 0.0, 1.0, 70 + i as u64);
        let mut cols = vec![0.0; y.len()];
        im2col(x.data(), &g, &mut cols);
        let mut back = vec![0.0; x.len()];
        col2im(y.data(), &g, &mut back);
        let lhs: f64 = cols.iter().zip(y.data()).map(|(a, b)| *a as f64 * *b as f64).sum();
        let rhs: f64 = x.data().iter().zip(&back).map(|(a, b)| *a as f64 * *b as f64).sum();
        assert!((lhs - rhs).abs() < 1e-3 * (1.0 + lhs.abs()), "case {i}: {lhs} vs {rhs}");
    }
}

#[test]
fn col2im_accumulates() {
    let g = ConvGeometry::new((1, 3, 3), (2, 2), (1, 1), (0, 0), (1, 1)).unwrap();
    let ones = vec![1.0; g.col_rows() * g.col_cols()];
    let mut dx = vec![10.0; 9];
    col2im(&ones, &g, &mut dx);
    // Each pixel adds the number of 2×2 windows that cover it: corners 1, edges 2, centre 4.
    assert_eq!(dx, vec![11., 12., 11., 12., 14., 12., 11., 12., 11.]);
}

#[test]
fn geometry_output_size_and_errors() {
    let g = ConvGeometry::new((1, 28, 28), (3, 3), (1, 1), (0, 0), (1, 1)).unwrap();
    assert_eq!((g.out_height, g.out_width), (26, 26));
    let g = ConvGeometry::new((1, 7, 8), (3, 3), (2, 2), (1, 1), (1, 1)).unwrap();
    assert_eq!((g.out_height, g.out_width), (4, 4)); // ⌊(7+2−3)/2⌋+1, ⌊(8+2−3)/2⌋+1
    let g = ConvGeometry::new((1, 10, 10), (3, 3), (1, 1), (0, 0), (2, 2)).unwrap();
    assert_eq!((g.out_height, g.out_width), (6, 6)); // the dilated kernel spans 5
    let e = ConvGeometry::new((1, 2, 2), (3, 3), (1, 1), (0, 0), (1, 1)).unwrap_err();
    assert!(e.to_string().contains("2×2"), "{e}");
    assert!(ConvGeometry::new((1, 5, 5), (3, 3), (0, 1), (0, 0), (1, 1)).is_err());
}

/// `im2col_strided` copies exactly the definition's values (`cols[(c, ki, kj), (oy, ox)] =
/// x[c, oy·s + ki·d − p, ox·s + kj·d − p]`, 0 in the padding) into a block of a wider matrix,
/// leaving the rest alone: the stride-1 unpadded fast path (runs shorter than 8, between 8 and 16
/// and longer, with dilation) and the general path alike.
#[test]
fn im2col_strided_copies_the_definition() {
    let cases: &[Case] = &[
        (2, 9, 9, (3, 3), (1, 1), (0, 0), (1, 1)),   // runs of 7
        (3, 13, 13, (3, 3), (1, 1), (0, 0), (1, 1)), // runs of 11
        (2, 5, 10, (3, 3), (1, 1), (0, 0), (1, 1)),  // runs of 8: two blocks, the same one twice
        (2, 4, 18, (2, 3), (1, 1), (0, 0), (1, 1)),  // runs of 16: two blocks side by side
        (2, 4, 19, (2, 3), (1, 1), (0, 0), (1, 1)),  // runs of 17: the general copy
        (1, 28, 28, (3, 3), (1, 1), (0, 0), (1, 1)), // runs of 26
        (2, 12, 20, (2, 3), (1, 1), (0, 0), (2, 3)), // dilated: runs of 14
        (2, 7, 9, (3, 3), (1, 2), (1, 1), (1, 1)),   // the general path
    ];
    for (i, &(c, h, w, k, s, p, d)) in cases.iter().enumerate() {
        let g = ConvGeometry::new((c, h, w), k, s, p, d).unwrap();
        let x = Tensor::randn(&[c * h * w], 0.0, 1.0, i as u64);
        let (rows, n) = (g.col_rows(), g.col_cols());
        let (ld, offset) = (3 * n + 5, n + 2); // this image's block inside a wider matrix
        let mut cols = vec![f32::NAN; rows * ld];
        backprop::tensor::im2col::im2col_strided(x.data(), &g, &mut cols[offset..], ld);
        for (r, row) in cols.chunks_exact(ld).enumerate() {
            let (ch, ki, kj) = (r / (k.0 * k.1), r / k.1 % k.0, r % k.1);
            for (j, &v) in row.iter().enumerate() {
                let Some(q) = j.checked_sub(offset).filter(|&q| q < n) else {
                    assert!(v.is_nan(), "case {i}: row {r} column {j} outside the block was written");
                    continue;
                };
                let (oy, ox) = (q / g.out_width, q % g.out_width);
                let iy = (oy * s.0 + ki * d.0) as isize - p.0 as isize;
                let ix = (ox * s.1 + kj * d.1) as isize - p.1 as isize;
                let inside = (0..h as isize).contains(&iy) && (0..w as isize).contains(&ix);
                let want = if inside { x.data()[(ch * h + iy as usize) * w + ix as usize] } else { 0.0 };
                assert_eq!(v.to_bits(), want.to_bits(), "case {i}: row {r}, output {q}");
            }
        }
    }
}

/// Edges of the geometry: no channels unfold to nothing (the length checks had subtracted 1 from
/// 0 rows); one image's unfolded matrix past any tensor's size is refused by `new` (its rows and
/// columns each fit, their product wrapped to 0); a geometry whose public fields were changed
/// after `new` is refused by name, not read past its writes or divided by a zero stride.
#[test]
fn geometry_edges_are_refused_or_empty() {
    let empty = ConvGeometry::new((0, 5, 5), (3, 3), (1, 1), (0, 0), (1, 1)).unwrap();
    im2col(&[], &empty, &mut []);
    col2im(&[], &empty, &mut []);
    let e = ConvGeometry::new((1, 1, 1), (65536, 65536), (1, 1), (65535, 65535), (1, 1)).unwrap_err();
    assert!(e.to_string().contains("beyond"), "{e}");
    let g = ConvGeometry::new((1, 3, 3), (2, 2), (1, 1), (0, 0), (1, 1)).unwrap();
    let x = [1.0; 9];
    for change in [|g: &mut ConvGeometry| g.out_height = 3, |g: &mut ConvGeometry| g.stride.1 = 0] {
        let mut bad = g;
        change(&mut bad);
        let len = bad.col_rows() * bad.col_cols();
        let e = std::panic::catch_unwind(|| im2col(&x, &bad, &mut vec![f32::NAN; len])).unwrap_err();
        let message = e.downcast_ref::<String>().unwrap();
        assert!(
            message.contains("im2col: the geometry") && message.contains("ConvGeometry::new"),
            "{message}"
        );
    }
}
