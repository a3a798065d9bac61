//! The machine's arithmetic peak, for a roofline view of every other figure: how many f32
//! floating-point operations per second one core, and all of them, can retire when nothing but
//! multiply-adds stand in the way — no memory traffic, no dependencies between the accumulators.
//!
//! The kernel keeps 12 independent accumulators (enough to cover the FMA latency of current x86
//! cores) of one register's width each and updates every lane with `acc = acc·a + b` in a loop
//! the compiler vectorises. It is compiled for every instruction set with fused multiply-adds that
//! the CPU has, and each is measured: AVX2 + FMA (8 lanes per register) and AVX-512F (16 lanes),
//! chosen at run time — the same ISAs the crate's kernels dispatch to (`tensor::simd`).
//! Criterion prints "Gelem/s": one element = one floating-point operation (an FMA counts two).
//!
//! The second roof is memory: `memory_bandwidth` streams `dst = src + 1` over two 64 MiB arrays
//! (what an element-wise layer does to a large activation) and reports bytes read plus written
//! per second. A layer whose arithmetic per byte is low — pooling, ReLU, the first convolution's
//! output — is bound by this one.
//!
//! Run: `cargo bench --bench roofline`

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rayon::prelude::*;
use std::hint::black_box;

const ACCUMULATORS: usize = 12;
const STEPS: usize = 100_000;

/// `STEPS` rounds of `acc = acc·a + b` on every lane of every accumulator (`LANES` wide); returns
/// a checksum so that nothing is optimised away. FLOPs: `2 · STEPS · ACCUMULATORS · LANES`.
#[inline(always)]
fn kernel<const LANES: usize>(a: f32, b: f32) -> f32 {
    let mut acc = [[1.0f32; LANES]; ACCUMULATORS];
    for _ in 0..STEPS {
        for row in acc.iter_mut() {
            for v in row.iter_mut() {
                *v = v.mul_add(a, b);
            }
        }
    }
    acc.iter().flatten().sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel_avx2(a: f32, b: f32) -> f32 {
    kernel::<8>(a, b)
}

/// The same kernel with AVX-512 intrinsics: written out, because the compiler vectorised the
/// generic 16-lane version badly (its accumulators went to the stack: 4 GFLOP/s).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn kernel_avx512(a: f32, b: f32) -> f32 {
    use std::arch::x86_64::{_mm512_fmadd_ps, _mm512_reduce_add_ps, _mm512_set1_ps};
    let (va, vb) = (_mm512_set1_ps(a), _mm512_set1_ps(b));
    let mut acc = [_mm512_set1_ps(1.0); ACCUMULATORS];
    for _ in 0..STEPS {
        for v in acc.iter_mut() {
            *v = _mm512_fmadd_ps(*v, va, vb);
        }
    }
    acc.iter().map(|&v| _mm512_reduce_add_ps(v)).sum()
}

/// A version of the kernel: its name, the function, and its lanes per accumulator.
type Variant = (&'static str, fn(f32, f32) -> f32, usize);

/// Every FMA version this CPU runs.
fn variants() -> Vec<Variant> {
    let mut out: Vec<Variant> = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        let fma = std::arch::is_x86_feature_detected!("fma");
        if fma && std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 and FMA (checked).
            out.push(("avx2_fma", |a, b| unsafe { kernel_avx2(a, b) }, 8));
        }
        if fma && std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F and FMA (checked).
            out.push(("avx512_fma", |a, b| unsafe { kernel_avx512(a, b) }, 16));
        }
    }
    out
}

fn peak(c: &mut Criterion) {
    let mut g = c.benchmark_group("fma_peak");
    g.sample_size(20);
    // mul_add without FMA hardware is a library call: only the FMA builds measure a peak.
    for (name, f, lanes) in variants() {
        let flops = (2 * STEPS * ACCUMULATORS * lanes) as u64;
        g.throughput(Throughput::Elements(flops));
        g.bench_function(format!("{name}_one_core"), |bench| {
            bench.iter(|| f(black_box(0.999), black_box(1e-3)))
        });
        let threads = rayon::current_num_threads();
        g.throughput(Throughput::Elements(flops * threads as u64));
        g.bench_function(format!("{name}_all_{threads}_cores"), |bench| {
            bench.iter(|| {
                (0..threads).into_par_iter().map(|_| f(black_box(0.999), black_box(1e-3))).sum::<f32>()
            })
        });
    }
    g.finish();
}

/// Elements of each array of the bandwidth test: 64 MiB, far beyond every cache.
const STREAM_LEN: usize = 16 << 20;

/// Memory bandwidth, the other roof: `dst = src + 1` over 64 MiB arrays (read one, write one, as an
/// element-wise layer does), on one core and on all, in bytes moved per second.
fn bandwidth(c: &mut Criterion) {
    let src = vec![1.0f32; STREAM_LEN];
    let mut dst = vec![0.0f32; STREAM_LEN];
    let bytes = (2 * STREAM_LEN * std::mem::size_of::<f32>()) as u64;
    let mut g = c.benchmark_group("memory_bandwidth");
    g.sample_size(20);
    g.throughput(Throughput::Bytes(bytes));
    g.bench_function("read_write_one_core", |bench| {
        bench.iter(|| dst.iter_mut().zip(black_box(&src)).for_each(|(d, s)| *d = s + 1.0))
    });
    let threads = rayon::current_num_threads();
    let chunk = STREAM_LEN.div_ceil(threads);
    g.bench_function(format!("read_write_all_{threads}_cores"), |bench| {
        bench.iter(|| {
            dst.par_chunks_mut(chunk)
                .zip(black_box(&src).par_chunks(chunk))
                .for_each(|(d, s)| d.iter_mut().zip(s).for_each(|(d, s)| *d = s + 1.0))
        })
    });
    g.finish();
    black_box(&dst);
}

criterion_group!(benches, peak, bandwidth);
criterion_main!(benches);
