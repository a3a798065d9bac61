//! GEMM against its definition (`tensor::gemm_reference`, the naive triple loop), for every transpose combination and awkward shapes.

use backprop::Tensor;
use backprop::tensor::gemm::{Transpose, gemm, sgemm};
use backprop::tensor::gemm_reference::gemm_reference as naive;

const SHAPES: &[(usize, usize, usize)] = &[
    (1, 1, 1),
    (1, 7, 1),
    (1, 784, 256), // one row (an MLP's single input): the vector–matrix path, 32-lane dot products
    (1, 33, 70),   // one row, k and n with tails
    (3, 1, 5),
    (2, 3, 4),
    (7, 5, 3),
    (17, 33, 9),
    (32, 9, 676),
    (64, 288, 121),
    (10, 1600, 64),
    (129, 65, 130),
    (300, 40, 200),   // large enough to take the parallel path
    (150, 600, 1100), // the packed GEMM's blocks: rows past MC = 144, 600 steps as 3 × 200, columns past NC = 1024
];

#[test]
fn all_transpose_combinations_match_naive() {
    use Transpose::{No, Yes};
    let mut seed = 0;
    for &(m, k, n) in SHAPES {
        for (ta, tb) in [(No, No), (No, Yes), (Yes, No), (Yes, Yes)] {
            for (alpha, beta) in [(1.0, 0.0), (0.7, 1.0), (-1.3, 0.25)] {
                seed += 1;
                let a = Tensor::randn(&[m * k], 0.0, 1.0, seed).into_vec();
                let b = Tensor::randn(&[k * n], 0.0, 1.0, seed + 1000).into_vec();
                let c0 = Tensor::randn(&[m * n], 0.0, 1.0, seed + 2000).into_vec();
                let want = naive((m, k, n), alpha, &a, ta, &b, tb, beta, &c0);
                let mut c = c0.clone();
                sgemm(m, k, n, alpha, &a, ta, &b, tb, beta, &mut c);
                let tol = 1e-4 * (k as f32).sqrt().max(1.0);
                for (idx, (g, w)) in c.iter().zip(&want).enumerate() {
                    assert!(
                        (g - w).abs() <= tol * (1.0 + w.abs()),
                        "m={m} k={k} n={n} {ta:?}/{tb:?} alpha={alpha} beta={beta}: C[{idx}] = {g}, naive {w}"
                    );
                }
            }
        }
    }
}

#[test]
fn beta_zero_ignores_nan_in_c() {
    let a = [1.0, 2.0];
    let b = [3.0, 4.0];
    let mut c = [f32::NAN];
    sgemm(1, 2, 1, 1.0, &a, Transpose::No, &b, Transpose::No, 0.0, &mut c);
    assert_eq!(c, [11.0]);
    // k = 0: the product is empty, C = beta·C.
    let mut c = [f32::NAN, 2.0];
    sgemm(1, 0, 2, 1.0, &[], Transpose::No, &[], Transpose::No, 0.0, &mut c);
    assert_eq!(c, [0.0, 0.0]);
}

#[test]
fn tensor_gemm_checks_shapes() {
    let a = Tensor::zeros(&[2, 3]);
    let b = Tensor::zeros(&[4, 5]);
    let mut c = Tensor::zeros(&[2, 5]);
    let err = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        gemm(1.0, &a, Transpose::No, &b, Transpose::No, 0.0, &mut c)
    }))
    .unwrap_err();
    let msg = err.downcast_ref::<String>().unwrap();
    assert!(msg.contains("[2, 3]") && msg.contains("[4, 5]") && msg.contains("[2, 5]"), "{msg}");
}

#[test]
fn parallel_split_is_bit_identical_to_serial() {
    // The same product computed from inside a rayon worker (never split) and from outside (split
    // into blocks) must agree bit for bit.
    let (m, k, n) = (257, 300, 190);
    let a = Tensor::randn(&[m * k], 0.0, 1.0, 1).into_vec();
    let b = Tensor::randn(&[k * n], 0.0, 1.0, 2).into_vec();
    let mut outside = vec![0.0; m * n];
    sgemm(m, k, n, 1.0, &a, Transpose::Yes, &b, Transpose::No, 0.0, &mut outside);
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    let inside = pool.install(|| {
        let mut c = vec![0.0; m * n];
        sgemm(m, k, n, 1.0, &a, Transpose::Yes, &b, Transpose::No, 0.0, &mut c);
        c
    });
    assert!(outside.iter().zip(&inside).all(|(x, y)| x.to_bits() == y.to_bits()));
}

/// The reference keeps `sgemm`'s contract: `β = 0` ignores the old `C`, NaN included (it had
/// computed `0·NaN`), and slices of the wrong length are refused.
#[test]
fn the_reference_ignores_c_at_beta_zero_as_sgemm_does() {
    use backprop::tensor::gemm::{Transpose::No, sgemm};
    use backprop::tensor::gemm_reference::gemm_reference;
    assert_eq!(gemm_reference((1, 1, 1), 1.0, &[2.0], No, &[3.0], No, 0.0, &[f32::NAN]), [6.0]);
    let mut c = [f32::NAN];
    sgemm(1, 1, 1, 1.0, &[2.0], No, &[3.0], No, 0.0, &mut c);
    assert_eq!(c, [6.0]);
    let short =
        std::panic::catch_unwind(|| gemm_reference((2, 1, 1), 1.0, &[2.0], No, &[3.0], No, 0.0, &[0.0; 2]));
    assert!(short.is_err(), "A of one value for [2, 1]");
}
