//! General matrix multiplication: `C = alpha·op(A)·op(B) + beta·C`.
//!
//! Everything heavy in the crate — Dense forward and backward, and the three products of a
//! convolution — is one call to [`sgemm`]. It wraps [`matrixmultiply::sgemm`], which takes a row
//! stride and a column stride for every matrix. That is what makes transposes free: a row-major
//! `[k, m]` buffer read with row stride 1 and column stride `m` *is* its `[m, k]` transpose, so
//! `op(A) = Aᵀ` costs nothing but swapping two numbers. Four kinds of shape go to the crate's
//! own kernel instead (`packed_gemm`), decided by the shape (and the CPU's kernel) alone: a tall
//! `A` against a small `B` (a sequence model's projections of every step), a weight gradient
//! `Gᵀ·X` summed over many rows (with the bias's gradient alongside: `weight_gradients`), a short
//! batch against a wide weight `x·Wᵀ` (computed as `(W·xᵀ)ᵀ`, the weight read in place) and a
//! weight gradient over a short batch (`Gᵀ` read in place).
//!
//! # Threading
//! `matrixmultiply` runs single-threaded here (its `threading` feature is off). Parallelism comes
//! from rayon, at one of two levels, never both:
//! - layers that process a batch run one sample per rayon task, each calling a single-threaded GEMM;
//! - a large GEMM called from outside any rayon task (a big Dense layer, a user's `matmul`) is cut
//!   into as many blocks of rows (or columns) of `C` as rayon has threads, one block per task.
//!
//! A call made from inside a rayon task is never split again, so the two levels cannot
//! oversubscribe the cores. (The one pool thread that runs a step through
//! [`train::on_pool`](crate::train::on_pool) stands in for the caller outside the pool: its
//! products split. While it waits for a loop's tasks it runs some of them itself, and their
//! products may split too — pieces that rayon's work stealing still runs one at a time per
//! core. Code that holds a thread's scratch buffer across a product runs it through
//! `parallel::as_task`, where nothing splits.) Splitting `C` into blocks leaves the order of every
//! dot product unchanged, so the result is bit-identical whatever the number of threads.

use super::Tensor;
use super::dot::dot_rows;
use super::packed_gemm::{COut, Strided, gemm_into as packed_product};
use super::parallel::{add_rows, add_to_rows, zip_apply};
use super::simd::wide;

/// Whether an operand of a GEMM is used as stored or transposed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transpose {
    /// Use the matrix as stored.
    No,
    /// Use its transpose (read through swapped strides; nothing is copied).
    Yes,
}

/// Products with fewer multiply-adds than this run on one thread. Handing work to rayon from outside
/// its pool costs ~30 µs here (an empty `rayon::join` from the main thread, measured on the 2-core
/// test machine), about what a single thread needs for 2·10⁶ multiply-adds; splitting pays off
/// clearly only well above that.
pub const PARALLEL_MIN_MACS: usize = 1 << 23;

/// `C[m, n] = alpha · op(A)[m, k] · op(B)[k, n] + beta · C`, on row-major slices.
///
/// `a` holds `op(A)` as stored: `[m, k]` row-major for [`Transpose::No`], `[k, m]` for
/// [`Transpose::Yes`]; likewise `b` holds `[k, n]` or `[n, k]`. `c` is `[m, n]` row-major.
/// When `beta == 0` the old contents of `c` are ignored (even NaN).
///
/// # Panics
/// If a slice's length is not the one its shape requires.
///
/// ```
/// use backprop::tensor::gemm::{sgemm, Transpose::{No, Yes}};
/// // A = [[1, 2], [3, 4]] stored row-major; C = Aᵀ·A.
/// let a = [1., 2., 3., 4.];
/// let mut c = [0.0; 4];
/// sgemm(2, 2, 2, 1.0, &a, Yes, &a, No, 0.0, &mut c);
/// assert_eq!(c, [10., 14., 14., 20.]);
/// ```
pub fn sgemm(
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: &[f32],
    trans_a: Transpose,
    b: &[f32],
    trans_b: Transpose,
    beta: f32,
    c: &mut [f32],
) {
    // Checked products: a wrapped length must never reach the unsafe kernel below.
    let fits = |len: usize, rows: usize, cols: usize| rows.checked_mul(cols) == Some(len);
    assert!(fits(a.len(), m, k), "gemm: A has {} elements, expected {m}×{k}", a.len());
    assert!(fits(b.len(), k, n), "gemm: B has {} elements, expected {k}×{n}", b.len());
    assert!(fits(c.len(), m, n), "gemm: C has {} elements, expected {m}×{n}", c.len());
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 || alpha == 0.0 {
        // op(A)·op(B) is the zero matrix: C = beta·C (beta = 0 clears it, NaN included).
        if beta == 0.0 {
            c.fill(0.0);
        } else {
            c.iter_mut().for_each(|x| *x *= beta);
        }
        return;
    }
    if m == 1 {
        // One row of A: a vector–matrix product. `matrixmultiply` would pack all of B to use it
        // once; reading B once in place is all this needs (an MLP's single-input latency).
        row_times_matrix(k, alpha, a, b, trans_b, beta, c);
        return;
    }
    // SAFETY: a, b and c hold exactly m·k, k·n and m·n elements (checked above, without
    // wrapping), and c is borrowed mutably for the call.
    unsafe { sgemm_raw((m, k, n), alpha, (a, trans_a), (b, trans_b), beta, c.as_mut_ptr(), None) }
}

/// `op(A)·op(B)` (`[m, n]`, row-major) in a new buffer, written once: not zero-filled first, as
/// `Tensor::zeros` followed by [`sgemm`] with `beta = 0` would (a layer's output of several
/// megabytes is then written twice). (A short batch against a wide weight, computed as its
/// transpose, is the exception: its output, at most 4 MiB, is zeroed and then written by the
/// transpose.) With `bias` (`n` values) added to every row: `x·Wᵀ + b`,
/// where the crate's kernel adds it tile by tile while the tile is in cache (the same values as a
/// separate pass).
///
/// # Panics
/// As [`sgemm`]; if `bias` does not hold `n` values.
#[allow(clippy::too_many_arguments)] // sgemm's arguments without alpha, beta and C
pub(crate) fn sgemm_new(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    trans_a: Transpose,
    b: &[f32],
    trans_b: Transpose,
    bias: Option<&[f32]>,
) -> Vec<f32> {
    let len = m.checked_mul(n).expect("gemm: C's size overflows");
    if let Some(bias) = bias {
        assert_eq!(bias.len(), n, "gemm: a bias of {} values for rows of {n}", bias.len());
    }
    if m <= 1 || k == 0 || n == 0 {
        let mut c = super::reserve(len, &format!("a {m}×{n} product"));
        c.resize(len, 0.0);
        sgemm(m, k, n, 1.0, a, trans_a, b, trans_b, 0.0, &mut c);
        if let Some(bias) = bias {
            add_to_rows(&mut c, bias);
        }
        return c;
    }
    let fits = |len: usize, rows: usize, cols: usize| rows.checked_mul(cols) == Some(len);
    assert!(fits(a.len(), m, k), "gemm: A has {} elements, expected {m}×{k}", a.len());
    assert!(fits(b.len(), k, n), "gemm: B has {} elements, expected {k}×{n}", b.len());
    let mut c: Vec<f32> = super::reserve(len, &format!("a {m}×{n} product"));
    // SAFETY: a and b hold m·k and k·n elements (checked), c has room for m·n; with beta = 0 the
    // product writes every element of C and reads none (matrixmultiply: "if β is zero, then C does
    // not need to be initialized"; the crate's kernel likewise), so all m·n elements are
    // initialised when it returns; the bias has n values (checked).
    unsafe {
        sgemm_raw((m, k, n), 1.0, (a, trans_a), (b, trans_b), 0.0, c.as_mut_ptr(), bias);
        c.set_len(len);
    }
    c
}

/// `c = op(A)·op(B) + bias` on every row, into an existing `[m, n]` buffer (its old values
/// ignored): [`sgemm_new`] for a buffer that a layer keeps.
///
/// # Panics
/// As [`sgemm_new`].
#[allow(clippy::too_many_arguments)] // sgemm's arguments with a bias instead of alpha and beta
pub(crate) fn sgemm_plus_rows(
    (m, k, n): (usize, usize, usize),
    (a, trans_a): (&[f32], Transpose),
    (b, trans_b): (&[f32], Transpose),
    bias: &[f32],
    c: &mut [f32],
) {
    assert_eq!(bias.len(), n, "gemm: a bias of {} values for rows of {n}", bias.len());
    if m <= 1 || k == 0 || n == 0 {
        sgemm(m, k, n, 1.0, a, trans_a, b, trans_b, 0.0, c);
        add_to_rows(c, bias);
        return;
    }
    let fits = |len: usize, rows: usize, cols: usize| rows.checked_mul(cols) == Some(len);
    assert!(fits(a.len(), m, k), "gemm: A has {} elements, expected {m}×{k}", a.len());
    assert!(fits(b.len(), k, n), "gemm: B has {} elements, expected {k}×{n}", b.len());
    assert!(fits(c.len(), m, n), "gemm: C has {} elements, expected {m}×{n}", c.len());
    // SAFETY: a, b and c hold m·k, k·n and m·n elements (checked), c borrowed mutably.
    unsafe { sgemm_raw((m, k, n), 1.0, (a, trans_a), (b, trans_b), 0.0, c.as_mut_ptr(), Some(bias)) }
}

/// [`sgemm_plus_rows`] (or, without a bias, [`sgemm_new`]) for `C = A·op(B) (+ bias)` (`A`
/// `[m, k]` as stored) into blocks of `width` columns ([`COut::in_blocks`]): block `b` — columns
/// `b·width ..` — as its own `[m, width]` row-major matrix at `c[b·m·width ..]`, so that each head
/// of a projection has its rows next to each other. On the crate's kernel the tiles write there
/// directly, with those functions' values bit for bit (the same route, the same split), and the
/// function returns `true`; where that route does not take the product (no kernel, a short
/// product, blocks not a whole number of half panels — half of the kernel's `nr` columns, where a
/// panel cut by two blocks runs as two half-width tiles) it writes nothing and returns `false`:
/// the caller then keeps the rows.
///
/// # Panics
/// If a slice's length is not the one its shape requires.
pub(crate) fn sgemm_in_blocks(
    (m, k, n): (usize, usize, usize),
    (a, (b, trans_b)): (&[f32], (&[f32], Transpose)),
    bias: Option<&[f32]>,
    width: usize,
    c: &mut [f32],
) -> bool {
    let fits = |len: usize, rows: usize, cols: usize| rows.checked_mul(cols) == Some(len);
    assert!(fits(a.len(), m, k), "gemm: A has {} elements, expected {m}×{k}", a.len());
    assert!(fits(b.len(), n, k), "gemm: B has {} elements, expected {k}×{n}", b.len());
    assert!(fits(c.len(), m, n), "gemm: C has {} elements, expected {m}×{n}", c.len());
    if let Some(bias) = bias {
        assert_eq!(bias.len(), n, "gemm: a bias of {} values for rows of {n}", bias.len());
    }
    let Some(kern) = super::microkernel::kernels() else {
        return false;
    };
    // The route sgemm_plus_rows and sgemm_new take for this product (they reach sgemm_raw for
    // m > 1, k, n > 0), and whole panels per block — or whole half panels, with half-width tiles.
    let route = m > 1 && k > 0 && n > 0 && takes_packed_b(m, k, n, Transpose::No);
    let narrowest = kern.narrowest();
    if !route || width == 0 || !n.is_multiple_of(width) || !width.is_multiple_of(narrowest) {
        return false;
    }
    // SAFETY: a, b and c hold m·k, k·n and m·n values (checked), c borrowed mutably: the blocks
    // (n / width of them, m·width values each) cover it exactly; the bias has n values.
    unsafe {
        let c = (COut::in_blocks(c.as_mut_ptr(), m, width), bias);
        packed_b_product(kern, (m, k, n), 1.0, (a, Transpose::No), (b, trans_b), 0.0, c, splits(m, k, n));
    }
    true
}

/// A layer's weight and bias gradients from every row at once: `dW += Gᵀ·X` and `db += Σ_p G[p, :]`
/// for `G` `[k, m]` (the gradients at the layer's outputs, one row per sample or step) and `X`
/// `[k, n]` (its inputs), all row-major; `dW` is `[m, n]`, `db` `m` values.
///
/// Where the product is a long sum (`k` ≫ `m`, `n`, on the crate's own kernel), the column sums
/// are taken while `G` is copied into the kernel's slivers: one pass over `G` instead of two.
/// Otherwise `sgemm` (which may also choose the crate's kernel, for a short sum) then [`add_rows`]. Each column of `G` is summed in order of `p` (on the
/// crate's kernel, as its product, in two fixed halves of the rows: the first half in order, the
/// second half's own sum added to it), so `db` has the same bits on any number of threads.
///
/// # Panics
/// If a slice's length is not the one its shape requires.
pub(crate) fn weight_gradients(
    (m, k, n): (usize, usize, usize),
    g: &[f32],
    x: &[f32],
    dw: &mut [f32],
    db: &mut [f32],
) {
    let fits = |len: usize, rows: usize, cols: usize| rows.checked_mul(cols) == Some(len);
    assert!(fits(g.len(), k, m), "weight gradients: G has {} elements, expected {k}×{m}", g.len());
    weight_gradients_of_columns((m, k, n), (g, m), x, dw, db);
}

/// [`weight_gradients`] for a `G` whose `k` rows of `m` values lie `ldg ≥ m` values apart: a block
/// of columns of a wider row-major matrix (a GRU's `r` and `z` gate gradients, the first `2H` of
/// `3H` columns, which both its weights' products read). The same bits as [`weight_gradients`] on
/// a copy of the block, whatever `ldg`.
///
/// # Panics
/// If `ldg < m`, or a slice is shorter than its shape requires (`G`) or not its length (the rest).
pub(crate) fn weight_gradients_of_columns(
    (m, k, n): (usize, usize, usize),
    (g, ldg): (&[f32], usize),
    x: &[f32],
    dw: &mut [f32],
    db: &mut [f32],
) {
    let fits = |len: usize, rows: usize, cols: usize| rows.checked_mul(cols) == Some(len);
    let block_fits = k == 0
        || m == 0
        || (k - 1).checked_mul(ldg).and_then(|r| r.checked_add(m)).is_some_and(|e| e <= g.len());
    assert!(
        ldg >= m && block_fits,
        "weight gradients: G's {k}×{m} block (rows {ldg} apart) outside its {} elements",
        g.len()
    );
    assert!(fits(x.len(), k, n), "weight gradients: X has {} elements, expected {k}×{n}", x.len());
    assert!(fits(dw.len(), m, n), "weight gradients: dW has {} elements, expected {m}×{n}", dw.len());
    assert_eq!(db.len(), m, "weight gradients: db has {} elements, expected {m}", db.len());
    // (m ≥ 2: sgemm answers a single row by a vector–matrix product; the same route here gives
    // dW the same bits with and without a bias.)
    if m >= 2
        && n > 0
        && is_long_sum(m, k, n)
        && let Some(kern) = super::microkernel::kernels()
    {
        let split = splits(m, k, n);
        let target = LongSumTarget {
            m,
            b: x.as_ptr(),
            n,
            c: SendPtr(dw.as_mut_ptr()),
            sums: Some(SendPtr(db.as_mut_ptr())),
        };
        // SAFETY: g holds k rows of m values ldg apart, x, dw and db k·n, m·n and m elements
        // (checked), dw and db borrowed mutably for the call.
        unsafe { long_sum_product(kern, (m, k), 1.0, (g, ldg), 1.0, &[target], split) };
        return;
    }
    if ldg == m {
        sgemm(m, k, n, 1.0, &g[..k * m], Transpose::Yes, x, Transpose::No, 1.0, dw);
        add_rows(db, &g[..k * m]);
        return;
    }
    // A narrow block off the kernel's long sums: copied next to each other (this thread's buffer,
    // kept), then the route above — so the block gives the bits of a copy of it.
    let mut block = COLUMN_BLOCK.take();
    block.clear();
    block.extend(g.chunks(ldg).take(k).flat_map(|row| &row[..m]));
    weight_gradients_of_columns((m, k, n), (&block, m), x, dw, db);
    COLUMN_BLOCK.set(block);
}

thread_local! {
    /// [`weight_gradients_of_columns`]'s copy of a block of columns, kept between calls.
    static COLUMN_BLOCK: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// [`weight_gradients`] for one `G` (`[k, m]`) against two inputs over the same rows: `dW₁ += Gᵀ·X₁`,
/// `dW₂ += Gᵀ·X₂`, `db₁ += Σ G`, `db₂ += Σ G` — an LSTM's `dW_ih` and `dW_hh`, whose two
/// pre-activations have the same gradient. Each over `G`'s first `m_i` columns, `m_i` the length
/// of its `db_i`: all `m` of them, or fewer — a GRU's `dW_hh` over its three gates' columns and
/// `dW_ih`'s reset and update rows over the first two gates'. Where both are long sums on the
/// crate's kernel, `G` is copied into the kernel's slivers once for both products (both sums
/// taken during that copy); otherwise two calls of [`weight_gradients_of_columns`]. The same
/// bits either way.
///
/// # Panics
/// If a slice's length is not the one its shape requires (`G` `[k, m]`, `X_i` `[k, n_i]`, `dW_i`
/// `[m_i, n_i]`), or a `db_i` holds no value or more than `m`.
pub(crate) fn weight_gradients_shared(
    (m, k): (usize, usize),
    g: &[f32],
    [(x1, dw1, db1), (x2, dw2, db2)]: [(&[f32], &mut [f32], &mut [f32]); 2],
) {
    if k == 0 || m == 0 {
        return; // an empty sum: nothing to add (an empty batch)
    }
    let (m1, m2) = (db1.len(), db2.len());
    assert!(
        (1..=m).contains(&m1) && (1..=m).contains(&m2),
        "weight gradients: biases of {m1} and {m2} values for G's {m} columns"
    );
    let (n1, n2) = (x1.len() / k, x2.len() / k);
    let shared = m1.min(m2) >= 2
        && n1 > 0
        && n2 > 0
        && is_long_sum(m1, k, n1)
        && is_long_sum(m2, k, n2)
        && n1 + n2 <= super::packed_gemm::NC;
    match super::microkernel::kernels().filter(|_| shared) {
        Some(kern) => {
            let fits = |len: usize, rows: usize, cols: usize| rows.checked_mul(cols) == Some(len);
            assert!(fits(g.len(), k, m), "weight gradients: G has {} elements, expected {k}×{m}", g.len());
            for (x, dw, rows, n) in [(x1, &*dw1, m1, n1), (x2, &*dw2, m2, n2)] {
                assert!(
                    fits(x.len(), k, n),
                    "weight gradients: X has {} elements, expected {k}×{n}",
                    x.len()
                );
                assert!(
                    fits(dw.len(), rows, n),
                    "weight gradients: dW has {} elements, expected {rows}×{n}",
                    dw.len()
                );
            }
            let target = |x: &[f32], n, dw: &mut [f32], db: &mut [f32]| LongSumTarget {
                m: db.len(),
                b: x.as_ptr(),
                n,
                c: SendPtr(dw.as_mut_ptr()),
                sums: Some(SendPtr(db.as_mut_ptr())),
            };
            let targets = [target(x1, n1, dw1, db1), target(x2, n2, dw2, db2)];
            // SAFETY: G holds k·m elements, each X, dW and db k·n_i, m_i·n_i and m_i ≤ m (checked),
            // the dWs and dbs borrowed mutably (and so apart) for the call.
            unsafe { long_sum_product(kern, (m, k), 1.0, (g, m), 1.0, &targets, splits(m, k, n1 + n2)) };
        }
        None => {
            weight_gradients_of_columns((m1, k, n1), (g, m), x1, dw1, db1);
            weight_gradients_of_columns((m2, k, n2), (g, m), x2, dw2, db2);
        }
    }
}

/// [`sgemm`]'s product for `m, n, k ≥ 1` (`m ≥ 2` or any): the split across threads and the
/// calls of the kernel, on a raw `C`.
///
/// # Safety
/// `a` and `b` must hold `m·k` and `k·n` elements; `c` must point at `m·n` writable values that
/// nothing else reads or writes during the call (uninitialised is fine when `beta == 0`).
unsafe fn sgemm_raw(
    (m, k, n): (usize, usize, usize),
    alpha: f32,
    (a, trans_a): (&[f32], Transpose),
    (b, trans_b): (&[f32], Transpose),
    beta: f32,
    c: *mut f32,
    bias: Option<&[f32]>,
) {
    // Element (i, p) of op(A) lives at i·rsa + p·csa. Now m, n ≥ 1, so k ≤ a.len(), n ≤ c.len() and
    // m ≤ c.len(): every dimension is at most isize::MAX (a slice's length is), and the casts are exact.
    let (rsa, csa) = match trans_a {
        Transpose::No => (k as isize, 1),
        Transpose::Yes => (1, m as isize),
    };
    let (rsb, csb) = match trans_b {
        Transpose::No => (n as isize, 1),
        Transpose::Yes => (1, k as isize),
    };
    let threads = rayon::current_num_threads();
    let split = splits(m, k, n);
    if let Some(kern) = super::microkernel::kernels() {
        if takes_packed_b(m, k, n, trans_a) {
            // SAFETY: as for this function (the caller's promise), passed on.
            unsafe {
                let c = (COut::rows(c, n), bias);
                packed_b_product(kern, (m, k, n), alpha, (a, trans_a), (b, trans_b), beta, c, split)
            };
            return;
        }
        if trans_a == Transpose::Yes && trans_b == Transpose::No && is_short_sum(kern, m, k, n) {
            // SAFETY: as for this function (the caller's promise), passed on.
            unsafe {
                let c = (COut::rows(c, n), bias);
                packed_b_product(kern, (m, k, n), alpha, (a, trans_a), (b, trans_b), beta, c, split)
            };
            return;
        }
        if trans_a == Transpose::No
            && trans_b == Transpose::Yes
            && beta == 0.0
            && is_short_against_wide(kern, m, k, n)
        {
            // SAFETY: as for this function (the caller's promise), passed on.
            unsafe { transposed_product(kern, (m, k, n), alpha, a, b, (c, bias), split) };
            return;
        }
        if trans_a == Transpose::Yes && trans_b == Transpose::No && is_long_sum(m, k, n) {
            // SAFETY: as for this function (the caller's promise), passed on; then C's m·n values
            // are initialised and only this call touches them.
            unsafe {
                let target = LongSumTarget { m, b: b.as_ptr(), n, c: SendPtr(c), sums: None };
                long_sum_product(kern, (m, k), alpha, (a, m), beta, &[target], split);
                if let Some(bias) = bias {
                    add_to_rows(std::slice::from_raw_parts_mut(c, m * n), bias);
                }
            }
            return;
        }
    }
    if let Some(bias) = bias {
        // SAFETY: as below, then C's m·n values are initialised and only this call touches them.
        unsafe {
            sgemm_raw((m, k, n), alpha, (a, trans_a), (b, trans_b), beta, c, None);
            add_to_rows(std::slice::from_raw_parts_mut(c, m * n), bias);
        }
        return;
    }
    let job = Job { k, alpha, a: a.as_ptr(), rsa, csa, b: b.as_ptr(), rsb, csb, beta, rsc: n as isize };
    if !split {
        // SAFETY: a, b and c hold exactly m·k, k·n and m·n elements (the caller's promise), so
        // every index i·rs + p·cs the strides reach for i, p in range is in bounds.
        unsafe { job.run(0..m, 0..n, c) };
        return;
    }
    // Cut the longer side of C into `threads` blocks, rounded to 16 (a multiple of every kernel width).
    let (long, rows) = if m >= n { (m, true) } else { (n, false) };
    let block = long.div_ceil(threads).div_ceil(16) * 16;
    let c_ptr = SendPtr(c);
    let job = &job;
    rayon::scope(|s| {
        for start in (0..long).step_by(block) {
            let end = (start + block).min(long);
            s.spawn(move |_| {
                let c_ptr = c_ptr;
                let (ri, ci) = if rows { (start..end, 0..n) } else { (0..m, start..end) };
                // SAFETY: blocks are disjoint ranges of rows (or columns) of C, so no two tasks
                // write the same element; A and B are only read.
                unsafe { job.run(ri, ci, c_ptr.0) };
            });
        }
    });
}

/// Whether a product of `m·k·n` multiply-adds is cut across rayon's threads: only at the
/// outermost level of the work ([`is_outermost`](super::parallel::is_outermost): from outside the
/// pool, or on the thread that runs a step through [`train::on_pool`](crate::train::on_pool); not
/// inside a parallel loop's task, where this product is one task among many), and only a large one
/// (a split hands out pieces and waits for them).
fn splits(m: usize, k: usize, n: usize) -> bool {
    rayon::current_num_threads() > 1
        && super::parallel::is_outermost()
        && m.saturating_mul(n).saturating_mul(k) >= PARALLEL_MIN_MACS
}

/// Whether a product goes to the crate's own kernel ([`packed_gemm`](super::packed_gemm)) instead
/// of `matrixmultiply`: a tall `A` (many rows, each read in place) against a small `B` (packed
/// once per call) — a Transformer's or a sequence model's projections of every step, `[N·T, E]`
/// against `[E, 3E]`. There the crate's 12 × 32 AVX-512 tile, packing included, keeps up with
/// or outruns `matrixmultiply`'s 16 × 16 one, most where `k` and `n` are small (one thread,
/// GFLOP/s, crate vs `matrixmultiply`, `cargo bench --bench gemm -- gemm_tall` on the Intel Xeon of
/// docs/benchmarks.md: 2048 × 128 × 384 145 vs 143, 2048 × 512 × 128 141 vs 129, 6400 × 64 × 64
/// 131 vs 112); for a short `A` (an MLP's batch of 64) packing all of `B` for few rows does not
/// pay (a wide weight goes as its transpose instead: [`is_short_against_wide`]). Decided by the shape
/// alone, so the same kernel (and the same bits) on any number of threads.
fn is_tall(m: usize, k: usize, n: usize) -> bool {
    m >= 512 && m >= 4 * k.max(n)
}

/// Whether [`sgemm_raw`] (on a CPU with the crate's kernel) gives the product to
/// [`packed_b_product`], `op(B)` packed and `A`'s rows read in place: a tall `A` as stored. One
/// place for the route, which [`sgemm_in_blocks`] follows too (its blocks are that route's tiles).
fn takes_packed_b(m: usize, k: usize, n: usize, trans_a: Transpose) -> bool {
    trans_a == Transpose::No && is_tall(m, k, n)
}

/// Whether a product `x·Wᵀ` (`A` as stored, `op(B)` transposed) goes to the crate's own kernel as
/// its transpose, `(x·Wᵀ)ᵀ = W·xᵀ` ([`transposed_product`]): a short batch `x` (`[m, k]`, not tall)
/// against a weight with at least twice as many rows (`W`, `[n, k]`) — an MLP's hidden layer at
/// batch 64, `[64, 784]` against `[256, 784]`. `matrixmultiply` would copy both operands into its
/// panels, the weight by a strided gather (a tenth of the MLP's training step on the AMD EPYC of
/// docs/benchmarks.md); as the transpose, the weight is read in place and only the batch is
/// copied, a quarter of the values there. Also a weight of fewer than 16 rows, a classifier's
/// head (`[64, 256]` against `[10, 256]`): `matrixmultiply`'s 16-wide tiles would run masked,
/// through a copy of each edge tile, where `W`'s rows are one or two row blocks of the crate's
/// tile (the MLP's training step 1.5 % faster on one thread, 1.8 % on two, with the head's
/// weight gradient of [`is_short_sum`]; docs/benchmarks.md, twenty-ninth session). Decided by the
/// shape and the CPU's kernel alone, so the same bits on any number of threads.
/// (At most [`TALL_B_KEPT`] values of output, so that the scratch it goes through stays small
/// and is kept: a vocabulary's head, `[2048, 128]` against `[50000, 128]`, stays on
/// `matrixmultiply`.)
fn is_short_against_wide(kern: &super::microkernel::Kernels, m: usize, k: usize, n: usize) -> bool {
    !is_tall(m, k, n)
        && m >= kern.nr
        && (n >= 2 * m || n < 16)
        && k >= 16
        && m.saturating_mul(n) <= TALL_B_KEPT
}

/// Whether a product `Gᵀ·X` (`op(A)` transposed, `B` as stored) over a short sum goes to the
/// crate's kernel with `Gᵀ` read in place by columns: a weight gradient over a short batch, `[256,
/// 64]·[64, 784]` for an MLP's hidden layer at batch 64 (`X` packed, contiguous rows copied; a
/// long sum is [`is_long_sum`]'s), and a narrow one, fewer rows than the tile's, `[10, 64]·[64,
/// 256]` for its head (one partial row block, where `matrixmultiply` would mask its tiles).
/// Only a sum of at most 256 steps over at most 2¹⁸ values of
/// `G`: read in place by columns, a tile touches one row of `G` per step, and many wide rows
/// miss the TLB (the LSTM's long sums read that way had been 24 % slower; docs/benchmarks.md).
/// Decided by the shape and the CPU's kernel alone.
fn is_short_sum(kern: &super::microkernel::Kernels, m: usize, k: usize, n: usize) -> bool {
    !is_long_sum(m, k, n) && m >= 2 && n >= kern.nr && (16..=256).contains(&k) && m * k <= 1 << 18
}

/// [`sgemm_raw`]'s `x·Wᵀ` (`beta = 0`) as its transpose on the crate's kernel: the product
/// `W·xᵀ` (`[n, m]`) by [`packed_b_product`] (`xᵀ` packed once on the calling thread, the rows of
/// `W` read in place, cut into one block per thread when `split`) into this thread's scratch, then
/// transposed into `C` (and the bias added to every row). Each element is the same chain of multiply-adds however the rows
/// are cut.
///
/// # Safety
/// As [`sgemm_raw`]; `x` is `[m, k]` and `w` `[n, k]`, both row-major.
#[allow(clippy::too_many_arguments)] // sgemm's operands
unsafe fn transposed_product(
    kern: &'static super::microkernel::Kernels,
    (m, k, n): (usize, usize, usize),
    alpha: f32,
    x: &[f32],
    w: &[f32],
    (c, bias): (*mut f32, Option<&[f32]>),
    split: bool,
) {
    // The product W·xᵀ (`[n, m]`: W as stored, xᵀ packed) into this thread's scratch, taken for
    // the call and given back after it; `packed_b_product` cuts W's rows across the threads.
    let mut ct = TRANSPOSED_C.take();
    if ct.len() < n * m {
        ct.resize(n * m, 0.0);
    }
    // SAFETY: w holds n·k values and x m·k (the caller's promise); the scratch holds n·m values,
    // which only this call touches.
    unsafe {
        let ct_ptr = ct.as_mut_ptr();
        packed_b_product(
            kern,
            (n, k, m),
            alpha,
            (w, Transpose::No),
            (x, Transpose::Yes),
            0.0,
            (COut::rows(ct_ptr, m), None),
            split,
        );
    }
    // SAFETY: c points at m·n writable values that only this call touches (the caller's promise);
    // zeroed first, so that the slice never shows uninitialised values (a product of sgemm_new).
    let c = unsafe {
        std::ptr::write_bytes(c, 0, m * n);
        std::slice::from_raw_parts_mut(c, m * n)
    };
    super::transpose::transpose((n, m), (&ct[..n * m], m), (c, n)); // C = (W·xᵀ)ᵀ
    if let Some(bias) = bias {
        add_to_rows(c, bias);
    }
    if ct.capacity() <= TALL_B_KEPT {
        TRANSPOSED_C.set(ct);
    }
}

thread_local! {
    /// [`transposed_product`]'s `W·xᵀ` before its transpose into `C`, reused from call to call.
    static TRANSPOSED_C: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Whether a product `Gᵀ·X` (`op(A)` transposed, `B` as stored) goes to the crate's own kernel: a
/// long sum over many rows of `G` and `X` into a small `C` — a weight gradient over every sample
/// and step, `[4H, N·T]·[N·T, I]` — with both operands copied into panels block by block
/// ([`gemm_long_sum`](super::packed_gemm::gemm_long_sum)). On the AMD EPYC (AVX2) of
/// docs/benchmarks.md it runs level with `matrixmultiply` (one thread, GFLOP/s, crate vs
/// `matrixmultiply`, `cargo bench --bench gemm -- gemm_long_sum`: 800 × 5000 × 100 69.5 vs 70.5,
/// 800 × 5000 × 200 78.2 vs 79.3, 384 × 2048 × 128 81.1 vs 80.4, 128 × 2048 × 512 68.1 vs 72.1);
/// what it adds is [`weight_gradients`]' bias sums taken during the copy of `G` (one pass over
/// `G` instead of two), and on AVX-512 the 12 × 32 tile (not yet measured on these shapes). Every
/// such product goes this way, with or without the sums (a `Dense` without a bias, per-example
/// gradients), so that a weight's gradient has the same bits either way. Decided by the shape
/// alone, so the same kernel (and the same bits) on any number of threads.
fn is_long_sum(m: usize, k: usize, n: usize) -> bool {
    k >= 512 && k >= 4 * m.max(n)
}

/// [`sgemm_raw`]'s product on the crate's kernel: `op(B)` packed once on the calling thread, then
/// the rows of `op(A)` and `C` cut into one block per thread (a multiple of `mr` rows) when
/// `split`; `op(A)` read in place, by rows (`A` as stored) or by columns (transposed). Each row of
/// `C` is the same chain of multiply-adds however the rows are cut.
///
/// # Safety
/// As [`sgemm_raw`].
#[allow(clippy::too_many_arguments)] // sgemm's operands
unsafe fn packed_b_product(
    kern: &'static super::microkernel::Kernels,
    (m, k, n): (usize, usize, usize),
    alpha: f32,
    (a, trans_a): (&[f32], Transpose),
    (b, trans_b): (&[f32], Transpose),
    beta: f32,
    (c, bias): (COut, Option<&[f32]>),
    split: bool,
) {
    // This thread's buffer, taken for the call and given back after it: no allocation (and no
    // zero-fill of a new one) per product once it has grown. (Taken, not borrowed: while its
    // row blocks run, this thread may run another product's task, which then packs into a new
    // buffer of its own.)
    let mut packed = TALL_B.take();
    packed.pack(k, n, b, trans_b == Transpose::Yes);
    if let Some(bias) = bias {
        packed.set_bias(bias);
    }
    let packed_ref = &packed;
    let (c_ptr, c_layout) = (SendPtr(c.ptr), (c.ldc, c.width, c.stride));
    let run = move |start: usize, rows: usize| {
        let c_ptr = c_ptr;
        let (ldc, width, stride) = c_layout;
        let a_rows = match trans_a {
            Transpose::No => Strided { ptr: a[start * k..].as_ptr(), rs: k as isize, cs: 1 },
            Transpose::Yes => Strided { ptr: a[start..].as_ptr(), rs: 1, cs: m as isize },
        };
        // SAFETY: rows start .. start + rows of op(A) (k values each) are inside `a`; B is
        // packed for this CPU's kernels; rows start .. start + rows of C are inside its m·n
        // values (the caller's promise), and no other task touches them (the blocks are disjoint).
        unsafe {
            let c_rows = COut { ptr: c_ptr.0, ldc, width, stride }.below(start);
            packed_product(kern, rows, a_rows, packed_ref, (alpha, beta), c_rows)
        };
    };
    in_row_blocks(m, kern.mr, split, run);
    if packed.capacity() <= TALL_B_KEPT {
        TALL_B.set(packed); // kept for the next product; a larger one (a vocabulary's head) is freed
    }
}

/// Values of packed `B` that a thread keeps between [`packed_b_product`]s (4 MiB).
const TALL_B_KEPT: usize = 1 << 20;

thread_local! {
    /// [`packed_b_product`]'s packed `B`, reused from call to call on each thread.
    static TALL_B: std::cell::Cell<super::packed_gemm::PackedB> = std::cell::Cell::new(Default::default());
}

/// One product of [`long_sum_product`]: `C = alpha·Aᵀ·B + beta·C` with `B` `[k, n]` row-major and
/// `C` `[m, n]` (raw: see the safety notes), and `sums[i] += Σ_p A[p, i]` (`m` values) when given
/// — over `A`'s first `m` columns: all of them, or fewer ([`LongSumOutput`](super::packed_gemm::LongSumOutput)).
#[derive(Clone, Copy)]
struct LongSumTarget {
    m: usize,
    b: *const f32,
    n: usize,
    c: SendPtr,
    sums: Option<SendPtr>,
}
// SAFETY: `b` is only read, and `c` and `sums` are SendPtrs (see there), inside the scope of the
// call that made the target, whose tasks touch disjoint rows.
unsafe impl Send for LongSumTarget {}
// SAFETY: as for Send.
unsafe impl Sync for LongSumTarget {}

/// [`sgemm_raw`]'s `Aᵀ·B` summed over a long `k` on the crate's kernel
/// ([`gemm_long_sum`](super::packed_gemm::gemm_long_sum)), for one `B` or two over the same `A`
/// (copied once for both).
///
/// The sum is always taken in two fixed halves, `C = (alpha·Σ_{p<k₀} + beta·C) + alpha·Σ_{p≥k₀}`
/// with `k₀ = ⌊k/2⌋`: the second half goes into a scratch copy of `C` (and of the sums), added to
/// `C` once both are done. The halves are the unit of parallel work — on two threads each packs
/// half of `A` and half of `B`, where cutting the rows of `C` would have each thread pack all of
/// `B` — and, being fixed, they give every element the same chain of multiply-adds on any number
/// of threads. With more threads, the rows of `C` (columns of the stored `A`) are cut too, into
/// blocks of a multiple of `mr` rows, `threads / 2` blocks per half when the count is even and
/// `threads` when it is odd (so that the tasks share the threads evenly).
///
/// # Safety
/// As [`sgemm_raw`]; `A` is `k` rows of `m` values, `lda ≥ m` apart (the first `m` columns of a
/// row-major `[k, lda]`, all of it when `lda = m`), each target's `b` holds `k·n` values and `c`
/// points at `m_t·n` writable values that nothing else touches during the call (no two targets'
/// alike), `m_t ≤ m` the target's own `m`; `sums` at `m_t`.
unsafe fn long_sum_product(
    kern: &'static super::microkernel::Kernels,
    (m, k): (usize, usize),
    alpha: f32,
    a: (&[f32], usize),
    beta: f32,
    targets: &[LongSumTarget],
    split: bool,
) {
    use super::packed_gemm::MAX_SUMS;
    assert!(targets.len() <= MAX_SUMS, "gemm: at most two products over one A");
    assert!(targets.iter().all(|t| t.m <= m), "gemm: a product over more of A's columns than it has");
    if targets.is_empty() {
        return; // no product: nothing to compute
    }
    if k < 2 {
        // SAFETY: passed on (the caller's promise); a sum of one step has no second half.
        unsafe { long_sum_half(kern, (0, k), (alpha, beta), a, targets, 0, m) };
        return;
    }
    // The second half's partial C and sums for every target, each target's region `m·n + m`
    // values: this thread's buffer, taken for the call and given back (no allocation once grown).
    let mut scratch = LONG_SUM_HALF.take();
    let region = |t: &LongSumTarget| t.m * t.n + t.m;
    let len: usize = targets.iter().map(region).sum();
    if scratch.len() < len {
        scratch.resize(len, 0.0);
    }
    let mut seconds = [targets[0]; MAX_SUMS];
    // Each target's region split off the one borrow of the buffer (the pointers stay valid).
    let mut rest: &mut [f32] = &mut scratch[..len];
    for (second, t) in seconds.iter_mut().zip(targets) {
        let (own, tail) = std::mem::take(&mut rest).split_at_mut(region(t));
        rest = tail;
        let (c_half, sums_half) = own.split_at_mut(t.m * t.n);
        sums_half.fill(0.0); // the half's sums are added to; its C is written (beta = 0)
        let sums = t.sums.map(|_| SendPtr(sums_half.as_mut_ptr()));
        *second = LongSumTarget { c: SendPtr(c_half.as_mut_ptr()), sums, ..*t };
    }
    let seconds = &seconds[..targets.len()];
    let k0 = k / 2;
    let run = |half: usize, start: usize, rows: usize| {
        // SAFETY: rows `start .. start + rows` of each target's C and sums, or of the scratch's,
        // are this task's alone; the rest as this function's (the caller's promise).
        unsafe {
            match half {
                0 => long_sum_half(kern, (0, k0), (alpha, beta), a, targets, start, rows),
                _ => long_sum_half(kern, (k0, k - k0), (alpha, 0.0), a, seconds, start, rows),
            }
        }
    };
    let threads = if split { rayon::current_num_threads() } else { 1 };
    let blocks = if threads % 2 == 0 { threads / 2 } else { threads };
    let block = m.div_ceil(blocks).div_ceil(kern.mr) * kern.mr;
    if threads == 1 {
        run(0, 0, m);
        run(1, 0, m);
    } else {
        rayon::scope(|s| {
            for half in 0..2 {
                for start in (0..m).step_by(block) {
                    let run = &run;
                    s.spawn(move |_| run(half, start, block.min(m - start)));
                }
            }
        });
    }
    // C += the second half, and the sums likewise.
    for (t, half) in targets.iter().zip(seconds) {
        // SAFETY: each target's C holds m·n values and its sums m (the caller's promise); the
        // scratch's as laid out above; the tasks are done.
        unsafe {
            let c = std::slice::from_raw_parts_mut(t.c.0, t.m * t.n);
            let c_half = std::slice::from_raw_parts(half.c.0, t.m * t.n);
            zip_apply(c, c_half, |c, s| c + s);
            if let (Some(sums), Some(sums_half)) = (t.sums, half.sums) {
                let sums = std::slice::from_raw_parts_mut(sums.0, t.m);
                zip_apply(sums, std::slice::from_raw_parts(sums_half.0, t.m), |s, h| s + h);
            }
        }
    }
    if scratch.capacity() <= LONG_SUM_HALF_KEPT {
        LONG_SUM_HALF.set(scratch); // (a larger one, for an unusually large C, is freed)
    }
}

/// Values of [`long_sum_product`]'s scratch that a thread keeps between calls (4 MiB).
const LONG_SUM_HALF_KEPT: usize = 1 << 20;

/// Rows `k_start .. k_start + k_len` of the long sum (of `A`, `m` columns `lda` apart, and each target's `B`) for
/// rows `start .. start + rows` of each target's `C` (and sums): one call of
/// [`gemm_long_sum`](super::packed_gemm::gemm_long_sum) on this thread.
///
/// # Safety
/// As [`long_sum_product`], and rows `start .. start + rows` of every target's `C` and sums are
/// this call's alone.
unsafe fn long_sum_half(
    kern: &'static super::microkernel::Kernels,
    (k_start, k_len): (usize, usize),
    (alpha, beta): (f32, f32),
    (a, lda): (&[f32], usize),
    targets: &[LongSumTarget],
    start: usize,
    rows: usize,
) {
    let a_block = (a[k_start * lda + start..].as_ptr(), lda);
    // SAFETY: columns start .. start + rows of A's rows k_start .. k_start + k_len (lda apart) are
    // inside `a`, and those rows of each B inside its buffer; rows start .. start + rows of each C
    // are inside its m·n values and sums start .. start + rows inside its m sums (the caller's
    // promise), and no other task touches them.
    unsafe {
        // A target's rows in this block: all of them, or fewer (its C ends sooner), or none.
        let rows_of = |t: &LongSumTarget| t.m.saturating_sub(start).min(rows);
        let output = |t: &LongSumTarget| super::packed_gemm::LongSumOutput {
            m: rows_of(t),
            b: (t.b.add(k_start * t.n), t.n),
            n: t.n,
            c: (t.c.0.add(start * t.n), t.n),
            sums: t.sums.map(|s| std::slice::from_raw_parts_mut(s.0.add(start), rows_of(t))),
        };
        let gemm = |outputs: &mut [_]| {
            super::packed_gemm::gemm_long_sum(kern, (rows, k_len), alpha, a_block, beta, outputs)
        };
        match targets {
            [one, two] if rows_of(one) > 0 && rows_of(two) > 0 => gemm(&mut [output(one), output(two)]),
            [one, ..] if rows_of(one) > 0 => gemm(&mut [output(one)]),
            [_, two] if rows_of(two) > 0 => gemm(&mut [output(two)]),
            _ => {} // no target with rows here: nothing to compute
        }
    }
}

thread_local! {
    /// [`long_sum_product`]'s second half: partial `C`s and sums, kept between calls.
    static LONG_SUM_HALF: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Runs `run(start, rows)` on all `m` rows, or (when `split`) on one block per rayon thread, each
/// a multiple of `mr` rows, as parallel tasks.
fn in_row_blocks(m: usize, mr: usize, split: bool, run: impl Fn(usize, usize) + Send + Sync + Copy) {
    let threads = if split { rayon::current_num_threads() } else { 1 };
    let block = m.div_ceil(threads).div_ceil(mr) * mr;
    if threads == 1 || block >= m {
        run(0, m); // one block: on this thread
    } else {
        rayon::scope(|s| {
            for start in (0..m).step_by(block) {
                s.spawn(move |_| run(start, block.min(m - start)));
            }
        });
    }
}

/// `c[1, n] = alpha · a[1, k] · op(B) + beta · c` (`a` is one row, or one column, of `k` values:
/// contiguous either way). With `B` stored `[n, k]` (transposed) each output is a dot product
/// with a contiguous row of B; with `B` stored `[k, n]` the rows of B are scaled and added.
/// Single-threaded, bit-identical whatever the number of threads.
#[allow(clippy::too_many_arguments)] // sgemm's arguments without m and n (n = c.len())
fn row_times_matrix(
    k: usize,
    alpha: f32,
    a: &[f32],
    b: &[f32],
    trans_b: Transpose,
    beta: f32,
    c: &mut [f32],
) {
    match trans_b {
        Transpose::Yes => {
            // c[j] = alpha · (a · B[j, :]) + beta · c[j], the dot products a block of outputs at a
            // time (each `dot`'s bits).
            const BLOCK: usize = 64;
            let mut dots = [0.0f32; BLOCK];
            for (c_blk, b_blk) in c.chunks_mut(BLOCK).zip(b.chunks(BLOCK * k)) {
                let dots = &mut dots[..c_blk.len()];
                dot_rows(&a[..k], &b_blk[..c_blk.len() * k], dots);
                for (c_j, &d) in c_blk.iter_mut().zip(dots.iter()) {
                    let ab = alpha * d;
                    *c_j = if beta == 0.0 { ab } else { ab + beta * *c_j };
                }
            }
        }
        Transpose::No => {
            // c = beta · c, then c += (alpha · a[p]) · B[p, :] for each p
            if beta == 0.0 {
                c.fill(0.0);
            } else if beta != 1.0 {
                c.iter_mut().for_each(|x| *x *= beta);
            }
            wide!(add_scaled_rows(alpha, a, b, c));
        }
    }
}

/// `c += Σ_p (alpha · a[p]) · B[p, :]` for `B` `[k, n]` row-major: each row an `axpy` the compiler
/// vectorises.
#[inline(always)]
fn add_scaled_rows(alpha: f32, a: &[f32], b: &[f32], c: &mut [f32]) {
    for (&a_p, b_p) in a.iter().zip(b.chunks_exact(c.len())) {
        let s = alpha * a_p;
        for (c_j, &b_pj) in c.iter_mut().zip(b_p) {
            *c_j += s * b_pj;
        }
    }
}

/// [`sgemm`] on sub-matrices: each operand is a block of a larger row-major matrix, given by its
/// first element and its row stride (`lda`: elements from one stored row to the next; for
/// [`Transpose::Yes`] the stored rows are `op(A)`'s columns). Single-threaded: for products run
/// inside a parallel loop (the per-image gradients of a group of images, say).
///
/// # Panics
/// If a stride is shorter than its rows or a block reaches past its slice.
#[allow(clippy::too_many_arguments)] // BLAS's argument list: three blocks with their strides
pub(crate) fn sgemm_strided(
    (m, k, n): (usize, usize, usize),
    alpha: f32,
    (a, lda, trans_a): (&[f32], usize, Transpose),
    (b, ldb, trans_b): (&[f32], usize, Transpose),
    beta: f32,
    (c, ldc): (&mut [f32], usize),
) {
    // A block of `rows` stored rows of `cols` elements, `ld` apart, must fit in `len`.
    let fits = |len: usize, rows: usize, cols: usize, ld: usize| {
        ld >= cols
            && (rows == 0
                || cols == 0
                || (rows - 1).checked_mul(ld).and_then(|r| r.checked_add(cols)).is_some_and(|e| e <= len))
    };
    let (a_rows, a_cols) = if trans_a == Transpose::No { (m, k) } else { (k, m) };
    let (b_rows, b_cols) = if trans_b == Transpose::No { (k, n) } else { (n, k) };
    assert!(
        fits(a.len(), a_rows, a_cols, lda),
        "gemm: A block {a_rows}×{a_cols} (stride {lda}) outside its {} elements",
        a.len()
    );
    assert!(
        fits(b.len(), b_rows, b_cols, ldb),
        "gemm: B block {b_rows}×{b_cols} (stride {ldb}) outside its {} elements",
        b.len()
    );
    assert!(
        fits(c.len(), m, n, ldc),
        "gemm: C block {m}×{n} (stride {ldc}) outside its {} elements",
        c.len()
    );
    if m == 0 || n == 0 || k == 0 {
        // Nothing to multiply: C = beta·C on the block (beta = 0 clears it).
        for row in c.chunks_mut(ldc.max(1)).take(m) {
            row[..n].iter_mut().for_each(|x| *x = if beta == 0.0 { 0.0 } else { *x * beta });
        }
        return;
    }
    // The strides are at most the slices' lengths (checked above), so the casts are exact.
    let (rsa, csa) = if trans_a == Transpose::No { (lda as isize, 1) } else { (1, lda as isize) };
    let (rsb, csb) = if trans_b == Transpose::No { (ldb as isize, 1) } else { (1, ldb as isize) };
    let job = Job { k, alpha, a: a.as_ptr(), rsa, csa, b: b.as_ptr(), rsb, csb, beta, rsc: ldc as isize };
    // SAFETY: the three blocks lie inside their slices (checked above without wrapping), and C is
    // borrowed mutably for the call.
    unsafe { job.run(0..m, 0..n, c.as_mut_ptr()) };
}

/// [`sgemm`] on 2-D tensors: `c = alpha · op(a) · op(b) + beta · c`.
///
/// # Panics
/// If a tensor is not 2-D or the shapes do not fit; the message gives all three shapes.
///
/// ```
/// use backprop::Tensor;
/// use backprop::tensor::gemm::{gemm, Transpose::{No, Yes}};
/// let x = Tensor::from_vec(&[1, 2], vec![1., 2.]).unwrap();        // [N=1, in=2]
/// let w = Tensor::from_vec(&[3, 2], vec![1., 0., 0., 1., 1., 1.]).unwrap(); // [out=3, in=2]
/// let mut y = Tensor::zeros(&[1, 3]);
/// gemm(1.0, &x, No, &w, Yes, 0.0, &mut y);                         // y = x·Wᵀ
/// assert_eq!(y.data(), &[1., 2., 3.]);
/// ```
pub fn gemm(
    alpha: f32,
    a: &Tensor,
    trans_a: Transpose,
    b: &Tensor,
    trans_b: Transpose,
    beta: f32,
    c: &mut Tensor,
) {
    let dims = |t: &Tensor, tr: Transpose| -> Option<(usize, usize)> {
        (t.ndim() == 2).then(|| match tr {
            Transpose::No => (t.shape()[0], t.shape()[1]),
            Transpose::Yes => (t.shape()[1], t.shape()[0]),
        })
    };
    let fits = match (dims(a, trans_a), dims(b, trans_b)) {
        (Some((m, k)), Some((k2, n))) if k == k2 && c.shape() == [m, n] => Some((m, k, n)),
        _ => None,
    };
    let Some((m, k, n)) = fits else {
        panic!(
            "gemm: shapes do not fit: op(A) = {:?}{}, op(B) = {:?}{}, C = {:?}",
            a.shape(),
            if trans_a == Transpose::Yes { "ᵀ" } else { "" },
            b.shape(),
            if trans_b == Transpose::Yes { "ᵀ" } else { "" },
            c.shape()
        );
    };
    sgemm(m, k, n, alpha, a.data(), trans_a, b.data(), trans_b, beta, c.data_mut());
}

/// A raw pointer that may cross to another rayon task (see the SAFETY notes where it is used).
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: the pointer is only dereferenced inside the scope of the call that made it (`sgemm`,
// `weight_gradients`, `weight_gradients_shared`), whose tasks write disjoint blocks of C (and of
// the column sums) while the slices it points into are borrowed mutably for the whole call.
unsafe impl Send for SendPtr {}
// SAFETY: as for Send; the pointer itself is never written through from two tasks at one place.
unsafe impl Sync for SendPtr {}

/// The operands of one GEMM, as pointers and strides, so that blocks of C can be computed apart.
struct Job {
    k: usize,
    alpha: f32,
    a: *const f32,
    rsa: isize,
    csa: isize,
    b: *const f32,
    rsb: isize,
    csb: isize,
    beta: f32,
    rsc: isize,
}
// SAFETY: a Job only reads through `a` and `b` (borrowed immutably by `sgemm` for the whole
// scope its tasks run in), so sharing it between the tasks is sharing read-only data.
unsafe impl Sync for Job {}

impl Job {
    /// Computes the block `C[rows, cols]`.
    ///
    /// # Safety
    /// The pointers and strides must describe valid matrices for the whole ranges, and no other
    /// thread may write to this block of C meanwhile.
    unsafe fn run(&self, rows: std::ops::Range<usize>, cols: std::ops::Range<usize>, c: *mut f32) {
        let (i0, j0) = (rows.start as isize, cols.start as isize);
        // SAFETY: the caller guarantees (see `# Safety`) that the strides describe matrices inside
        // the slices for the whole ranges and that this block of C is written by nobody else.
        unsafe {
            matrixmultiply::sgemm(
                rows.len(),
                self.k,
                cols.len(),
                self.alpha,
                self.a.offset(i0 * self.rsa),
                self.rsa,
                self.csa,
                self.b.offset(j0 * self.csb),
                self.rsb,
                self.csb,
                self.beta,
                c.offset(i0 * self.rsc + j0),
                self.rsc,
                1,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::gemm_reference::gemm_reference;

    /// A tall product written in blocks of columns holds, block by block, the bits of the same
    /// product as rows — blocks one and two panels wide, rows past a thread's block and not a
    /// multiple of any tile's, one and two threads; and where the kernel's route does not take the
    /// product (too short, blocks not whole panels) nothing is written and `false` returned.
    #[test]
    fn products_in_blocks_of_columns_are_the_rows_rearranged() {
        let values =
            |len: usize, seed: f32| (0..len).map(|i| (i as f32 * 0.61 + seed).sin()).collect::<Vec<f32>>();
        let Some(kern) = super::super::microkernel::kernels() else {
            let mut c = vec![0.0; 600 * 64];
            let (a, b, bias) = (values(600 * 16, 0.1), values(64 * 16, 0.2), values(64, 0.3));
            assert!(!sgemm_in_blocks((600, 16, 64), (&a, (&b, Transpose::Yes)), Some(&bias), 32, &mut c));
            return;
        };
        let nr = kern.nr;
        let half = nr / 2; // (both ISA families have half-width tiles)
        for (m, k, n, width) in [
            (1037, 64, 4 * nr, nr),
            (2100, 96, 6 * nr, 2 * nr),
            (700, 40, 2 * nr, nr),
            (1037, 64, 4 * nr, half),
            (900, 48, 3 * nr, 3 * half),
        ] {
            let (a, b, bias) = (values(m * k, 0.1), values(n * k, 0.2), values(n, 0.3));
            let mut rows = vec![0.0; m * n];
            sgemm_plus_rows((m, k, n), (&a, Transpose::No), (&b, Transpose::Yes), &bias, &mut rows);
            for threads in [1, 2] {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                let mut blocks = vec![f32::NAN; m * n];
                assert!(pool.install(|| sgemm_in_blocks(
                    (m, k, n),
                    (&a, (&b, Transpose::Yes)),
                    Some(&bias),
                    width,
                    &mut blocks
                )));
                // And B as stored `[k, n]`, without a bias: sgemm_new's values.
                let plain = sgemm_new(m, k, n, &a, Transpose::No, &b, Transpose::No, None);
                let mut plain_blocks = vec![f32::NAN; m * n];
                let operands = (&a[..], (&b[..], Transpose::No));
                assert!(pool.install(|| sgemm_in_blocks(
                    (m, k, n),
                    operands,
                    None,
                    width,
                    &mut plain_blocks
                )));
                for (want, got) in [(&rows, &blocks), (&plain, &plain_blocks)] {
                    for (i, row) in want.chunks_exact(n).enumerate() {
                        for (j, &v) in row.iter().enumerate() {
                            let at = (j / width) * m * width + i * width + j % width;
                            let what =
                                format!("{m}×{k}×{n} in blocks of {width}, {threads} threads: ({i}, {j})");
                            assert_eq!(got[at].to_bits(), v.to_bits(), "{what}");
                        }
                    }
                }
            }
        }
        // Not taken: a short product; blocks that are not whole half panels (or do not divide the
        // row).
        for (m, k, n, width) in
            [(100, 64, 2 * nr, nr), (1037, 64, 4 * nr, nr / 4), (1037, 64, 3 * nr, 2 * nr)]
        {
            let (a, b, bias) = (values(m * k, 0.1), values(n * k, 0.2), values(n, 0.3));
            let mut c = vec![7.0; m * n];
            assert!(
                !sgemm_in_blocks((m, k, n), (&a, (&b, Transpose::Yes)), Some(&bias), width, &mut c),
                "{m}×{k}×{n} / {width}"
            );
            assert!(c.iter().all(|&v| v == 7.0), "{m}×{k}×{n} / {width}: written");
        }
    }

    /// Products outside the tall path (`matrixmultiply`, the single-row path) with a bias: the
    /// product plus the bias.
    #[test]
    fn bias_rows_on_every_path() {
        for (m, k, n) in [(1, 5, 7), (64, 30, 20), (3, 0, 4)] {
            let a: Vec<f32> = (0..m * k).map(|i| (i % 11) as f32 - 5.0).collect();
            let b: Vec<f32> = (0..k * n).map(|i| (i % 7) as f32 * 0.5).collect();
            let bias: Vec<f32> = (0..n).map(|j| j as f32 + 0.25).collect();
            let mut want = vec![0.0; m * n];
            sgemm(m, k, n, 1.0, &a, Transpose::No, &b, Transpose::No, 0.0, &mut want);
            want.chunks_exact_mut(n).for_each(|r| r.iter_mut().zip(&bias).for_each(|(v, b)| *v += b));
            assert_eq!(sgemm_new(m, k, n, &a, Transpose::No, &b, Transpose::No, Some(&bias)), want);
            let mut kept = vec![f32::NAN; m * n];
            sgemm_plus_rows((m, k, n), (&a, Transpose::No), (&b, Transpose::No), &bias, &mut kept);
            assert_eq!(kept, want, "{m}×{k}×{n}");
        }
    }

    /// [`long_sum_product`] of one `B`, split across the pool's threads.
    ///
    /// # Safety
    /// As [`long_sum_product`].
    unsafe fn one_long_sum(
        kern: &'static super::super::microkernel::Kernels,
        (m, k, n): (usize, usize, usize),
        alpha: f32,
        (a, b): (&[f32], &[f32]),
        beta: f32,
        c: *mut f32,
        sums: Option<&mut [f32]>,
    ) {
        let target =
            LongSumTarget { m, b: b.as_ptr(), n, c: SendPtr(c), sums: sums.map(|s| SendPtr(s.as_mut_ptr())) };
        // SAFETY: passed on (the caller's promise).
        unsafe { long_sum_product(kern, (m, k), alpha, (a, m), beta, &[target], true) }
    }

    /// A block of columns of a wider `G` gives the bits of `weight_gradients` on a copy of the
    /// block: on the long sums (the block read in place or copied into slivers, whichever its row
    /// stride picks, and the copy the other way: `m` = 100 in place, `ldg` = 300 copied), on the
    /// fallbacks (a short sum, a single row), on 1–3 threads.
    #[test]
    fn a_block_of_columns_is_a_copy_of_it() {
        for (m, k, n, ldg, first) in [
            (100, 900, 40, 300, 200),
            (48, 800, 12, 72, 24),
            (150, 700, 30, 450, 0),
            (20, 64, 10, 35, 15),
            (1, 600, 5, 3, 1),
        ] {
            let g: Vec<f32> = (0..k * ldg).map(|i| ((i * 37 % 101) as f32 - 50.0) / 29.0).collect();
            let x: Vec<f32> = (0..k * n).map(|i| ((i * 53 % 97) as f32 - 48.0) / 31.0).collect();
            let copy: Vec<f32> = g.chunks(ldg).flat_map(|row| &row[first..first + m]).copied().collect();
            let start = || ((0..m * n).map(|i| (i % 7) as f32 - 3.0).collect::<Vec<_>>(), vec![0.5; m]);
            let same = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(a, b)| a.to_bits() == b.to_bits());
            for threads in [1, 2, 3] {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                let ((mut dw, mut db), (mut bw, mut bb)) = (start(), start());
                pool.install(|| {
                    weight_gradients((m, k, n), &copy, &x, &mut dw, &mut db);
                    weight_gradients_of_columns((m, k, n), (&g[first..], ldg), &x, &mut bw, &mut bb);
                });
                assert!(same(&dw, &bw) && same(&db, &bb), "{m}×{k}×{n}, G {ldg} wide, {threads} threads");
            }
        }
    }

    /// `weight_gradients_shared` gives the bits of two `weight_gradients_of_columns` calls: on the
    /// shared long sum (one copy of `G` for both products, both sums), each over all of `G`'s
    /// columns or over its first ones (a GRU's `dW_ih` rows of two gates of three), with the rows
    /// split across 1–3 threads (some blocks past the shorter product's rows), and on the
    /// fallbacks (short sums, a single row); and two products over one `A` are each product alone,
    /// bit for bit, for every kernel family's geometry.
    #[test]
    fn shared_weight_gradients_are_two_calls() {
        for (m, k, [n1, n2], [m1, m2]) in [
            (64, 1200, [20, 45], [64, 64]),
            (150, 700, [16, 33], [150, 150]),
            (150, 700, [16, 33], [150, 100]),
            (150, 700, [33, 16], [61, 150]),
            (300, 1300, [40, 20], [300, 200]),
            (20, 64, [10, 7], [20, 13]),
            (1, 600, [5, 9], [1, 1]),
        ] {
            let g: Vec<f32> = (0..k * m).map(|i| ((i * 37 % 101) as f32 - 50.0) / 29.0).collect();
            let x = |n: usize, s: usize| {
                (0..k * n).map(|i| ((i * s % 97) as f32 - 48.0) / 31.0).collect::<Vec<_>>()
            };
            let (x1, x2) = (x(n1, 53), x(n2, 59));
            let start = |rows: usize, n: usize| {
                ((0..rows * n).map(|i| (i % 7) as f32 - 3.0).collect::<Vec<_>>(), vec![0.5; rows])
            };
            let ((mut dw1, mut db1), (mut dw2, mut db2)) = (start(m1, n1), start(m2, n2));
            weight_gradients_of_columns((m1, k, n1), (&g, m), &x1, &mut dw1, &mut db1);
            weight_gradients_of_columns((m2, k, n2), (&g, m), &x2, &mut dw2, &mut db2);
            for threads in [1, 2, 3] {
                let ((mut sw1, mut sb1), (mut sw2, mut sb2)) = (start(m1, n1), start(m2, n2));
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                pool.install(|| {
                    let outs = [(&x1[..], &mut sw1[..], &mut sb1[..]), (&x2[..], &mut sw2[..], &mut sb2[..])];
                    weight_gradients_shared((m, k), &g, outs)
                });
                let same = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(a, b)| a.to_bits() == b.to_bits());
                let what = format!("{m}×{k}×{n1}+{n2} ({m1} and {m2} rows), {threads} threads");
                assert!(
                    same(&sw1, &dw1) && same(&sw2, &dw2) && same(&sb1, &db1) && same(&sb2, &db2),
                    "{what}"
                );
            }
        }
        // The second product over A's first 25 columns of 37: alone, a product of 25 (A's rows
        // 37 apart); together, the shorter of two.
        let (m, k, n1, n2, m2) = (37, 800, 19, 40, 25);
        let g: Vec<f32> = (0..k * m).map(|i| ((i * 41 % 103) as f32 - 51.0) / 23.0).collect();
        let x1: Vec<f32> = (0..k * n1).map(|i| ((i * 13 % 89) as f32 - 44.0) / 17.0).collect();
        let x2: Vec<f32> = (0..k * n2).map(|i| ((i * 17 % 83) as f32 - 41.0) / 19.0).collect();
        for kern in super::super::microkernel::by_definition::families() {
            let (mut alone1, mut alone2, mut both1, mut both2) =
                (vec![0.0; m * n1], vec![0.0; m2 * n2], vec![0.0; m * n1], vec![0.0; m2 * n2]);
            let (mut s_alone1, mut s_alone2, mut s_both1, mut s_both2) =
                (vec![1.0; m], vec![2.0; m2], vec![1.0; m], vec![2.0; m2]);
            let target = |x: &[f32], n, c: &mut [f32], s: &mut [f32]| LongSumTarget {
                m: s.len(),
                b: x.as_ptr(),
                n,
                c: SendPtr(c.as_mut_ptr()),
                sums: Some(SendPtr(s.as_mut_ptr())),
            };
            let both = [target(&x1, n1, &mut both1, &mut s_both1), target(&x2, n2, &mut both2, &mut s_both2)];
            let alone =
                [target(&x1, n1, &mut alone1, &mut s_alone1), target(&x2, n2, &mut alone2, &mut s_alone2)];
            // SAFETY: g holds k·m values, each x k·n, each C m_i·n and each sums m_i ≤ m, borrowed
            // for the calls.
            unsafe {
                for one in alone {
                    long_sum_product(kern, (one.m, k), 1.0, (&g, m), 0.0, &[one], false);
                }
                long_sum_product(kern, (m, k), 1.0, (&g, m), 0.0, &both, false);
            }
            let same = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(
                same(&alone1, &both1) && same(&alone2, &both2),
                "{}×{} tiles: products",
                kern.mr,
                kern.nr
            );
            assert!(
                same(&s_alone1, &s_both1) && same(&s_alone2, &s_both2),
                "{}×{} tiles: sums",
                kern.mr,
                kern.nr
            );
        }
    }

    /// The rows of a long sum's `C` (and their column sums) cut across 1, 2 and 3 threads in
    /// blocks of `mr` rows give the same bits, for every kernel family's geometry — the 12-row
    /// blocks of the AVX-512 family included, by the definition's tiles on any CPU.
    #[test]
    fn long_sums_split_across_threads_for_every_geometry() {
        let (m, k, n) = (61, 900, 45);
        let g: Vec<f32> = (0..k * m).map(|i| ((i * 37 % 101) as f32 - 50.0) / 29.0).collect();
        let x: Vec<f32> = (0..k * n).map(|i| ((i * 53 % 97) as f32 - 48.0) / 31.0).collect();
        for kern in super::super::microkernel::by_definition::families() {
            let run = |threads: usize| {
                let (mut dw, mut db) = (vec![0.5; m * n], vec![0.25; m]);
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                // SAFETY: g and x hold k·m and k·n values; dw is m·n, borrowed for the call.
                pool.install(|| unsafe {
                    one_long_sum(kern, (m, k, n), 1.0, (&g, &x), 1.0, dw.as_mut_ptr(), Some(&mut db))
                });
                (dw, db)
            };
            let one = run(1);
            for threads in [2, 3] {
                let split = run(threads);
                let same = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(
                    same(&one.0, &split.0) && same(&one.1, &split.1),
                    "{}×{}, {threads} threads",
                    kern.mr,
                    kern.nr
                );
            }
        }
    }

    /// `weight_gradients`: `dW += Gᵀ·X` as `sgemm` computes it, and `db += Σ G` with the bits of
    /// `add_rows` (each column summed in order; on a long sum, the two halves of the rows each
    /// so, as the product takes them), on a long sum (the column sums taken while `G` is
    /// copied; several blocks of columns past `NC`; the rows of `dW` split across 2, 3 and 4
    /// threads with the same bits), on a short one (two passes) and on a single row; against the
    /// definition too.
    #[test]
    fn weight_gradients_are_the_product_and_the_row_sums() {
        for (m, k, n) in
            [(37, 1001, 21), (800, 5000, 3), (20, 64, 10), (13, 700, 0), (20, 5000, 1100), (1, 600, 5)]
        {
            let g: Vec<f32> = (0..k * m).map(|i| ((i * 37 % 101) as f32 - 50.0) / 29.0).collect();
            let x: Vec<f32> = (0..k * n).map(|i| ((i * 53 % 97) as f32 - 48.0) / 31.0).collect();
            let dw0: Vec<f32> = (0..m * n).map(|i| (i % 7) as f32 - 3.0).collect();
            let db0: Vec<f32> = (0..m).map(|i| (i % 5) as f32 * 0.3).collect();
            let (mut dw, mut db) = (dw0.clone(), db0.clone());
            weight_gradients((m, k, n), &g, &x, &mut dw, &mut db);
            let mut want_dw = dw0.clone();
            sgemm(m, k, n, 1.0, &g, Transpose::Yes, &x, Transpose::No, 1.0, &mut want_dw);
            let mut want_db = db0.clone();
            if is_long_sum(m, k, n) && m >= 2 && n > 0 && super::super::microkernel::kernels().is_some() {
                // On the crate's kernel: as its product, the first half of the rows in order, then
                // the second half's own sum added.
                let mut second = vec![0.0; m];
                add_rows(&mut want_db, &g[..k / 2 * m]);
                add_rows(&mut second, &g[k / 2 * m..]);
                want_db.iter_mut().zip(&second).for_each(|(w, s)| *w += s);
            } else {
                add_rows(&mut want_db, &g);
            }
            assert!(dw.iter().zip(&want_dw).all(|(a, b)| a.to_bits() == b.to_bits()), "{m}×{k}×{n}: dW");
            assert!(db.iter().zip(&want_db).all(|(a, b)| a.to_bits() == b.to_bits()), "{m}×{k}×{n}: db");
            let defined = gemm_reference((m, k, n), 1.0, &g, Transpose::Yes, &x, Transpose::No, 1.0, &dw0);
            for (got, want) in dw.iter().zip(&defined) {
                assert!((got - want).abs() <= 1e-3 * (1.0 + want.abs()), "{m}×{k}×{n}: {got} vs {want}");
            }
            // The rows of dW (and their sums) cut across 2 and 3 threads: the same bits.
            if let (true, Some(kern)) =
                (is_long_sum(m, k, n) && m >= 2 && n > 0, super::super::microkernel::kernels())
            {
                for threads in [2, 3, 4] {
                    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                    let (mut dw_split, mut db_split) = (dw0.clone(), db0.clone());
                    // SAFETY: g, x and dw hold k·m, k·n and m·n values; dw is borrowed for the call.
                    pool.install(|| unsafe {
                        let dw_ptr = dw_split.as_mut_ptr();
                        one_long_sum(kern, (m, k, n), 1.0, (&g, &x), 1.0, dw_ptr, Some(&mut db_split))
                    });
                    let same =
                        |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same(&dw_split, &dw) && same(&db_split, &db), "{m}×{k}×{n}, {threads} threads");
                }
            }
        }
    }

    /// The products on the crate's own kernel — tall `A`s (`T`), long sums `Gᵀ·X` (`L`: `A`
    /// transposed, copied into slivers), a short batch against a wide weight (`W`: `x·Wᵀ` as
    /// `(W·xᵀ)ᵀ`) and short sums (`S`: `Gᵀ` read in place by columns): every row count around the
    /// tile's height, `B` as stored and transposed, `k` across a block boundary, with and without
    /// `beta` — against the definition, and bit for bit the same on 1, 2 and 3 threads (rows cut
    /// differently).
    #[test]
    fn own_kernel_products_match_the_definition_on_any_thread_count() {
        for (route, m, k, n, trans_a, trans_b, beta) in [
            ('T', 512, 7, 3, Transpose::No, Transpose::No, 0.0),
            ('T', 2048, 128, 384, Transpose::No, Transpose::Yes, 0.0),
            ('T', 1337, 300, 40, Transpose::No, Transpose::No, 0.5),
            ('T', 6400, 64, 64, Transpose::No, Transpose::Yes, -1.0),
            ('L', 7, 512, 3, Transpose::Yes, Transpose::No, 0.0),
            ('L', 200, 1000, 37, Transpose::Yes, Transpose::No, 1.0),
            ('L', 151, 700, 150, Transpose::Yes, Transpose::No, 0.0),
            ('L', 30, 3000, 600, Transpose::Yes, Transpose::No, 0.0),
            ('W', 64, 784, 256, Transpose::No, Transpose::Yes, 0.0),
            ('W', 37, 100, 301, Transpose::No, Transpose::Yes, 0.0),
            ('W', 64, 256, 10, Transpose::No, Transpose::Yes, 0.0),
            ('W', 100, 40, 15, Transpose::No, Transpose::Yes, 0.0),
            ('W', 33, 16, 1, Transpose::No, Transpose::Yes, 0.0),
            ('S', 256, 64, 784, Transpose::Yes, Transpose::No, 1.0),
            ('S', 50, 33, 70, Transpose::Yes, Transpose::No, 0.0),
            ('S', 10, 64, 256, Transpose::Yes, Transpose::No, 1.0),
            ('S', 2, 16, 33, Transpose::Yes, Transpose::No, 0.0),
        ] {
            match (route, super::super::microkernel::kernels()) {
                ('T', _) => assert!(is_tall(m, k, n)),
                ('L', _) => assert!(is_long_sum(m, k, n)),
                ('W', Some(kern)) => assert!(is_short_against_wide(kern, m, k, n)),
                ('S', Some(kern)) => assert!(is_short_sum(kern, m, k, n)),
                _ => {} // no kernel of the crate's on this CPU: sgemm's other path
            }
            let a: Vec<f32> = (0..m * k).map(|i| ((i * 37 % 101) as f32 - 50.0) / 29.0).collect();
            let b: Vec<f32> = (0..k * n).map(|i| ((i * 53 % 97) as f32 - 48.0) / 31.0).collect();
            let c0: Vec<f32> = (0..m * n).map(|i| (i % 7) as f32 - 3.0).collect();
            let want = gemm_reference((m, k, n), 0.75, &a, trans_a, &b, trans_b, beta, &c0);
            // On a pool of `threads`, the rows cut into one block per thread (as when called from
            // outside the pool or by a step's runner: inside another thread's task a call does not
            // split).
            let on = |threads: usize, alpha: f32| {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                let mut c = c0.clone();
                let Some(kern) = super::super::microkernel::kernels() else {
                    sgemm(m, k, n, alpha, &a, trans_a, &b, trans_b, beta, &mut c);
                    return c;
                };
                // SAFETY: a, b and c hold m·k, k·n and m·n values; c is borrowed for the call.
                pool.install(|| unsafe {
                    let c_ptr = c.as_mut_ptr();
                    match route {
                        'T' | 'S' => packed_b_product(
                            kern,
                            (m, k, n),
                            alpha,
                            (&a, trans_a),
                            (&b, trans_b),
                            beta,
                            (COut::rows(c_ptr, n), None),
                            true,
                        ),
                        'W' => transposed_product(kern, (m, k, n), alpha, &a, &b, (c_ptr, None), true),
                        _ => one_long_sum(kern, (m, k, n), alpha, (&a, &b), beta, c_ptr, None),
                    }
                });
                c
            };
            let mut through_sgemm = c0.clone();
            sgemm(m, k, n, 0.75, &a, trans_a, &b, trans_b, beta, &mut through_sgemm);
            let one = on(1, 0.75);
            for (got, want) in one.iter().zip(&want) {
                assert!((got - want).abs() <= 1e-4 * (1.0 + want.abs()), "{m}×{k}×{n}: {got} vs {want}");
            }
            // Compared bit by bit, reporting the first difference only (the matrices are large).
            let same = |x: &[f32], y: &[f32], what: &str| {
                let first = x.iter().zip(y).position(|(u, v)| u.to_bits() != v.to_bits());
                assert!(first.is_none(), "{m}×{k}×{n} {what}: element {first:?} differs");
            };
            same(&through_sgemm, &one, "sgemm");
            same(&on(2, 0.75), &one, "2 threads");
            same(&on(3, 0.75), &one, "3 threads");
            if beta == 0.0 {
                let plain = on(1, 1.0);
                let new = sgemm_new(m, k, n, &a, trans_a, &b, trans_b, None);
                same(&new, &plain, "sgemm_new (C never read)");
                // The bias added tile by tile: the product plus the bias, element by element.
                let bias: Vec<f32> = (0..n).map(|j| (j as f32 - 1.5) / 7.0).collect();
                let mut want = plain.clone();
                for row in want.chunks_exact_mut(n) {
                    row.iter_mut().zip(&bias).for_each(|(v, b)| *v += b);
                }
                let with_bias = |threads: usize| {
                    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                    pool.install(|| sgemm_new(m, k, n, &a, trans_a, &b, trans_b, Some(&bias)))
                };
                for threads in [1, 2, 3] {
                    same(&with_bias(threads), &want, "sgemm_new with a bias");
                }
                let mut kept = vec![f32::NAN; m * n];
                sgemm_plus_rows((m, k, n), (&a, trans_a), (&b, trans_b), &bias, &mut kept);
                same(&kept, &want, "sgemm_plus_rows (old values ignored)");
            }
        }
    }
}
