//! The machine's arithmetic peak, for a roofline view of every other figure: how many f32
//! floating-point operations per second one core, and all of them, can retire when nothing but
//! multiply-adds stand in the way — no memory traffic, no dependencies between the accumulators.
//!
//! The kernel keeps 12 independent accumulators of 8 lanes (enough to cover the FMA latency of
//! current x86 cores) and updates each with `acc = acc·a + b` in a loop the compiler vectorises.
//! It is compiled two ways and the wider one the CPU has is measured: baseline x86-64 and AVX2 +
//! FMA (`#[target_feature]`, chosen at run time). AVX-512 is not measured: enabling it needs Rust
//! 1.89, above this crate's minimum (1.86), so on an AVX-512 machine this reports the AVX2 peak,
//! half the hardware's.
//! Criterion prints "Gelem/s": one element = one floating-point operation (an FMA counts two).
//!
//! Run: `cargo bench --bench roofline`

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rayon::prelude::*;
use std::hint::black_box;

const ACCUMULATORS: usize = 12;
const LANES: usize = 8;
const STEPS: usize = 100_000;

/// `STEPS` rounds of `acc = acc·a + b` on every lane of every accumulator; returns a checksum so
/// that nothing is optimised away. FLOPs: `2 · STEPS · ACCUMULATORS · LANES`.
#[inline(always)]
fn kernel(a: f32, b: f32) -> f32 {
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
    kernel(a, b)
}

/// The widest version this CPU runs, and its name.
fn widest() -> (&'static str, fn(f32, f32) -> f32) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has AVX2 and FMA (checked).
            return ("avx2_fma", |a, b| unsafe { kernel_avx2(a, b) });
        }
    }
    ("baseline", kernel)
}

fn peak(c: &mut Criterion) {
    let (name, f) = widest();
    let flops = (2 * STEPS * ACCUMULATORS * LANES) as u64;
    let mut g = c.benchmark_group("fma_peak");
    g.sample_size(20);
    g.throughput(Throughput::Elements(flops));
    // mul_add without FMA hardware is a library call: only the FMA builds measure a peak.
    g.bench_function(format!("{name}_one_core"), |bench| bench.iter(|| f(black_box(0.999), black_box(1e-3))));
    let threads = rayon::current_num_threads();
    g.throughput(Throughput::Elements(flops * threads as u64));
    g.bench_function(format!("{name}_all_{threads}_cores"), |bench| {
        bench.iter(|| (0..threads).into_par_iter().map(|_| f(black_box(0.999), black_box(1e-3))).sum::<f32>())
    });
    g.finish();
}

criterion_group!(benches, peak);
criterion_main!(benches);
