//! The definition of the matrix product that [`gemm`](super::gemm) computes fast: the textbook
//! triple loop, one output at a time, summed in f64. `tests/gemm.rs` compares every transpose
//! combination and awkward shape against it.

use super::gemm::Transpose;

/// `C[i,j] = α·Σₚ op(A)[i,p]·op(B)[p,j] + β·C[i,j]` for `op(A) [m, k]`, `op(B) [k, n]`: returns the
/// new `C` (row-major `[m, n]`). As [`sgemm`](super::gemm::sgemm) documents, `β = 0` ignores the
/// old `C` (a NaN there does not reach the result).
///
/// # Panics
/// If a slice's length is not the one its shape requires (as `sgemm`).
#[allow(clippy::too_many_arguments)] // the operands as sgemm takes them
pub fn gemm_reference(
    (m, k, n): (usize, usize, usize),
    alpha: f32,
    a: &[f32],
    ta: Transpose,
    b: &[f32],
    tb: Transpose,
    beta: f32,
    c: &[f32],
) -> Vec<f32> {
    let len = |r: usize, c: usize| r.checked_mul(c).expect("gemm_reference: a size overflows");
    assert_eq!(a.len(), len(m, k), "gemm_reference: A has {} values for [{m}, {k}]", a.len());
    assert_eq!(b.len(), len(k, n), "gemm_reference: B has {} values for [{k}, {n}]", b.len());
    assert_eq!(c.len(), len(m, n), "gemm_reference: C has {} values for [{m}, {n}]", c.len());
    let at = |i: usize, p: usize| {
        if ta == Transpose::No { a[i * k + p] } else { a[p * m + i] }
    };
    let bt = |p: usize, j: usize| {
        if tb == Transpose::No { b[p * n + j] } else { b[j * k + p] }
    };
    let mut out = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            let dot: f64 = (0..k).map(|p| at(i, p) as f64 * bt(p, j) as f64).sum();
            let prior = if beta == 0.0 { 0.0 } else { beta * c[i * n + j] }; // β = 0: C not read
            out[i * n + j] = alpha * dot as f32 + prior;
        }
    }
    out
}
