//! GEMM throughput, in GFLOP/s (criterion prints "Gelem/s": one element = one floating-point
//! operation, 2·m·n·k per product).
//!
//! Squares show what the kernel can do; the conv/dense groups are the exact products of one
//! training step of the reference network at batch 64, computed two ways:
//! - `batched`: one GEMM over the whole batch (its columns are N·OH·OW), split across threads by
//!   `sgemm` itself;
//! - `per_sample`: 64 single-threaded GEMMs, one per image, spread over rayon's threads — what a
//!   layer that parallelises over the batch does.
//!
//! `gemm_tall` compares, on one thread, the crate's `sgemm` with `matrixmultiply::sgemm` called
//! directly, on the projections of a Transformer (`[N·T, E]` against `[E, 3E]`, …) and on an
//! MLP's short batch: the shapes where `sgemm` uses the crate's own packed kernel, and one where
//! it does not. `gemm_long_sum` does the same for weight gradients `Gᵀ·X` over many rows.
//!
//! Run: `cargo bench --bench gemm` (one group: `cargo bench --bench gemm -- gemm_tall`)

use backprop::Tensor;
use backprop::tensor::gemm::{Transpose, sgemm};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rayon::prelude::*;
use std::hint::black_box;

fn operands(m: usize, k: usize, n: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    (
        Tensor::randn(&[m * k], 0.0, 1.0, 1).into_vec(),
        Tensor::randn(&[k * n], 0.0, 1.0, 2).into_vec(),
        vec![0.0; m * n],
    )
}

fn squares(c: &mut Criterion) {
    backprop::alloc_tuning::tune_allocator(); // a benchmark owns its process
    let mut g = c.benchmark_group("gemm_square");
    for &s in &[128usize, 256, 512, 1024] {
        let (a, b, mut out) = operands(s, s, s);
        g.throughput(Throughput::Elements(2 * (s * s * s) as u64));
        if s >= 512 {
            g.sample_size(20);
        }
        g.bench_with_input(BenchmarkId::from_parameter(s), &s, |bench, &s| {
            bench.iter(|| sgemm(s, s, s, 1.0, black_box(&a), Transpose::No, &b, Transpose::No, 0.0, &mut out))
        });
    }
    g.finish();
}

/// One product of the training step: per-image `(m, k, n)`, the transposes the layer uses, and
/// which dimension grows with the batch when the batch is done as one GEMM.
struct Product {
    name: &'static str,
    m: usize,
    k: usize,
    n: usize,
    ta: Transpose,
    tb: Transpose,
    batch_axis: char,
}

const BATCH: usize = 64;

fn network_products() -> Vec<Product> {
    use Transpose::{No, Yes};
    vec![
        // conv1: 1→32, 3×3 on 28×28 → 26×26. cols [9, 676], W [32, 9].
        Product { name: "conv1_forward_W·cols", m: 32, k: 9, n: 676, ta: No, tb: No, batch_axis: 'n' },
        Product { name: "conv1_dW=dY·colsᵀ", m: 32, k: 676, n: 9, ta: No, tb: Yes, batch_axis: 'k' },
        Product { name: "conv1_dcols=Wᵀ·dY", m: 9, k: 32, n: 676, ta: Yes, tb: No, batch_axis: 'n' },
        // conv2: 32→64, 3×3 on 13×13 → 11×11. cols [288, 121], W [64, 288].
        Product { name: "conv2_forward_W·cols", m: 64, k: 288, n: 121, ta: No, tb: No, batch_axis: 'n' },
        Product { name: "conv2_dW=dY·colsᵀ", m: 64, k: 121, n: 288, ta: No, tb: Yes, batch_axis: 'k' },
        Product { name: "conv2_dcols=Wᵀ·dY", m: 288, k: 64, n: 121, ta: Yes, tb: No, batch_axis: 'n' },
        // dense 1600→10 on the whole batch (x [64, 1600], W [10, 1600]).
        Product { name: "dense_forward_x·Wᵀ", m: BATCH, k: 1600, n: 10, ta: No, tb: Yes, batch_axis: '-' },
        Product { name: "dense_dW=gᵀ·x", m: 10, k: BATCH, n: 1600, ta: Yes, tb: No, batch_axis: '-' },
        Product { name: "dense_dx=g·W", m: BATCH, k: 10, n: 1600, ta: No, tb: No, batch_axis: '-' },
    ]
}

fn network_shapes(c: &mut Criterion) {
    backprop::alloc_tuning::tune_allocator(); // a benchmark owns its process
    let mut g = c.benchmark_group("gemm_network_batch64");
    for p in network_products() {
        let flops = 2 * (p.m * p.k * p.n) as u64 * if p.batch_axis == '-' { 1 } else { BATCH as u64 };
        g.throughput(Throughput::Elements(flops));
        // One GEMM for the whole batch.
        let (m, k, n) = match p.batch_axis {
            'n' => (p.m, p.k, p.n * BATCH),
            'k' => (p.m, p.k * BATCH, p.n),
            _ => (p.m, p.k, p.n),
        };
        let (a, b, mut out) = operands(m, k, n);
        g.bench_function(BenchmarkId::new(p.name, "batched"), |bench| {
            bench.iter(|| sgemm(m, k, n, 1.0, black_box(&a), p.ta, &b, p.tb, 0.0, &mut out))
        });
        if p.batch_axis == '-' {
            continue;
        }
        // 64 per-image GEMMs in parallel, each single-threaded.
        let (a, b, _) = operands(p.m, p.k, p.n);
        let bs: Vec<Vec<f32>> = (0..BATCH).map(|_| b.clone()).collect();
        let mut outs = vec![vec![0.0f32; p.m * p.n]; BATCH];
        g.bench_function(BenchmarkId::new(p.name, "per_sample"), |bench| {
            bench.iter(|| {
                outs.par_iter_mut().zip(&bs).for_each(|(o, b)| {
                    sgemm(p.m, p.k, p.n, 1.0, black_box(&a), p.ta, b, p.tb, 0.0, o);
                })
            })
        });
    }
    g.finish();
}

/// `x·Wᵀ` for a tall `x`: the crate's `sgemm` (its own kernel for these shapes) against
/// `matrixmultiply` on the same operands, both on one thread.
fn tall_products(c: &mut Criterion) {
    backprop::alloc_tuning::tune_allocator(); // a benchmark owns its process
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().expect("a one-thread pool");
    let mut g = c.benchmark_group("gemm_tall");
    for (m, k, n) in
        [(2048, 128, 384), (2048, 128, 512), (2048, 512, 128), (6400, 64, 64), (64, 784, 256), (64, 484, 288)]
    {
        let (a, w, mut out) = operands(m, k, n); // w: [n, k], used transposed
        g.throughput(Throughput::Elements(2 * (m * k * n) as u64));
        let shape = format!("{m}x{k}x{n}");
        g.bench_function(BenchmarkId::new("backprop_sgemm", &shape), |bench| {
            one.install(|| {
                bench.iter(|| {
                    sgemm(m, k, n, 1.0, black_box(&a), Transpose::No, &w, Transpose::Yes, 0.0, &mut out)
                })
            })
        });
        // Called from outside any pool, as a layer's pass calls it: the rows are cut across
        // rayon's global pool when the product is large enough.
        g.bench_function(BenchmarkId::new("backprop_sgemm_all_cores", &shape), |bench| {
            bench
                .iter(|| sgemm(m, k, n, 1.0, black_box(&a), Transpose::No, &w, Transpose::Yes, 0.0, &mut out))
        });
        g.bench_function(BenchmarkId::new("matrixmultiply", &shape), |bench| {
            bench.iter(|| {
                // SAFETY: a is m×k row-major, w is n×k row-major (k×n with strides 1, k), out m×n.
                unsafe {
                    matrixmultiply::sgemm(
                        m,
                        k,
                        n,
                        1.0,
                        black_box(a.as_ptr()),
                        k as isize,
                        1,
                        w.as_ptr(),
                        1,
                        k as isize,
                        0.0,
                        out.as_mut_ptr(),
                        n as isize,
                        1,
                    )
                }
            })
        });
    }
    g.finish();
}

/// `Gᵀ·X` summed over a long `k`: the weight gradients of a sequence model (`[4H, N·T]` against
/// `[N·T, I]`: the LSTM of the side-by-side, hidden 200, input 100, batch 100 × 50 steps; the
/// GRU's `3H`) and of the Transformer encoder (`N·T = 2048`, embed 128, feed-forward 512: the
/// attention's `[3E, E]` and both feed-forward weights) — and,
/// over a short `k`, of the MLP's hidden layer at batch 64 (`256 × 64 × 784`) and of the
/// convnet's second convolution (its input gradient for four images, `288 × 64 × 484`): the
/// crate's `sgemm` (its own kernel, `Gᵀ` copied into slivers, or read in place for a short sum) against `matrixmultiply` on the
/// same operands, both on one thread, accumulating into `C` as the layers do (`beta = 1`); and
/// the crate's on all cores (the rows of `C` split across them).
fn long_sums(c: &mut Criterion) {
    backprop::alloc_tuning::tune_allocator(); // a benchmark owns its process
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().expect("a one-thread pool");
    let mut g = c.benchmark_group("gemm_long_sum");
    for (m, k, n) in [
        (800, 5000, 100),
        (800, 5000, 200),
        (600, 5000, 200),
        (384, 2048, 128),
        (512, 2048, 128),
        (128, 2048, 512),
        (256, 64, 784),
        (288, 64, 484),
    ] {
        let (g_t, x, mut out) = operands(m, k, n); // g_t: [k, m], used transposed; x: [k, n]
        g.throughput(Throughput::Elements(2 * (m * k * n) as u64));
        let shape = format!("{m}x{k}x{n}");
        g.bench_function(BenchmarkId::new("backprop_sgemm", &shape), |bench| {
            one.install(|| {
                bench.iter(|| {
                    sgemm(m, k, n, 1.0, black_box(&g_t), Transpose::Yes, &x, Transpose::No, 1.0, &mut out)
                })
            })
        });
        // Called from outside any pool, as a layer's training step calls it: the product is cut
        // across rayon's global pool (every core; inside a pool's `install` it would not be).
        g.bench_function(BenchmarkId::new("backprop_sgemm_all_cores", &shape), |bench| {
            bench.iter(|| {
                sgemm(m, k, n, 1.0, black_box(&g_t), Transpose::Yes, &x, Transpose::No, 1.0, &mut out)
            })
        });
        g.bench_function(BenchmarkId::new("matrixmultiply", &shape), |bench| {
            bench.iter(|| {
                // SAFETY: g_t is k×m row-major (m×k with strides 1, m), x is k×n row-major, out m×n.
                unsafe {
                    matrixmultiply::sgemm(
                        m,
                        k,
                        n,
                        1.0,
                        black_box(g_t.as_ptr()),
                        1,
                        m as isize,
                        x.as_ptr(),
                        n as isize,
                        1,
                        1.0,
                        out.as_mut_ptr(),
                        n as isize,
                        1,
                    )
                }
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = squares, network_shapes, tall_products, long_sums
}
criterion_main!(benches);
