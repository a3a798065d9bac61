//! What a parallel loop costs to start on rayon's pool after a stretch of serial work — the shape
//! of a training step, whose loops alternate with serial code — with and without
//! [`backprop::train::on_pool`]'s helpers (the pool's other threads kept awake while its closure
//! runs).
//!
//! Each iteration: 50 µs of serial work on the step's thread, then a loop of two 20 µs halves
//! (`rayon::join`). With both threads at work the loop takes 20 µs; if the other thread has gone
//! to sleep during the serial part, its half waits for it to wake. Both variants use two threads:
//!
//! - `on_a_worker`: the iterations inside `ThreadPool::install` of a two-thread pool (a pool
//!   thread runs them, as `on_pool` did before its helpers);
//! - `on_pool`: the iterations inside `on_pool` on the global two-thread pool.
//!
//! Criterion's time is per iteration, so the serial 50 µs is in both.
//!
//! Run: `cargo bench --bench pool`

use criterion::{Criterion, criterion_group, criterion_main};
use std::time::{Duration, Instant};

/// Busy for `d` (a stand-in for serial work: no sleeping, no memory traffic).
fn busy(d: Duration) {
    let start = Instant::now();
    while start.elapsed() < d {
        std::hint::spin_loop();
    }
}

/// `iters` rounds of serial work and a two-way loop, timed as a whole.
fn rounds(iters: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        busy(Duration::from_micros(50));
        rayon::join(|| busy(Duration::from_micros(20)), || busy(Duration::from_micros(20)));
    }
    start.elapsed()
}

fn pool(c: &mut Criterion) {
    // The global pool with two threads (the machines of docs/benchmarks.md have two); a benchmark
    // owns its process.
    rayon::ThreadPoolBuilder::new().num_threads(2).build_global().expect("the global pool");
    let own = rayon::ThreadPoolBuilder::new().num_threads(2).build().expect("a two-thread pool");
    let mut g = c.benchmark_group("pool/serial_50us_then_join_2x20us");
    g.bench_function("on_a_worker", |b| b.iter_custom(|iters| own.install(|| rounds(iters))));
    g.bench_function("on_pool", |b| b.iter_custom(|iters| backprop::train::on_pool(|| rounds(iters))));
    g.finish();
}

criterion_group!(benches, pool);
criterion_main!(benches);
