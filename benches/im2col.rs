//! im2col and col2im at the shapes of the reference network, batch 64, in elements of `cols`
//! written (or read) per second.
//!
//! Run: `cargo bench --bench im2col`

use backprop::Tensor;
use backprop::tensor::im2col::{ConvGeometry, col2im, im2col};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rayon::prelude::*;
use std::hint::black_box;

const BATCH: usize = 64;

fn bench(c: &mut Criterion) {
    backprop::alloc_tuning::tune_allocator(); // a benchmark owns its process
    let mut g = c.benchmark_group("im2col_batch64");
    let layers = [
        ("conv1_1x28x28_k3", ConvGeometry::new((1, 28, 28), (3, 3), (1, 1), (0, 0), (1, 1)).unwrap()),
        ("conv2_32x13x13_k3", ConvGeometry::new((32, 13, 13), (3, 3), (1, 1), (0, 0), (1, 1)).unwrap()),
        ("conv_3x32x32_k3_pad1", ConvGeometry::new((3, 32, 32), (3, 3), (1, 1), (1, 1), (1, 1)).unwrap()),
    ];
    for (name, geo) in layers {
        let cols_len = geo.col_rows() * geo.col_cols();
        g.throughput(Throughput::Elements((cols_len * BATCH) as u64));
        let x = Tensor::randn(&[BATCH, geo.input_len()], 0.0, 1.0, 1);
        let mut cols = vec![vec![0.0f32; cols_len]; BATCH];
        g.bench_function(BenchmarkId::new("im2col", name), |b| {
            b.iter(|| {
                cols.par_iter_mut().enumerate().for_each(|(i, c)| im2col(black_box(x.outer(i)), &geo, c));
            })
        });
        let mut dx = Tensor::zeros(&[BATCH, geo.input_len()]);
        g.bench_function(BenchmarkId::new("col2im", name), |b| {
            b.iter(|| {
                dx.data_mut().par_chunks_mut(geo.input_len()).zip(&cols).for_each(|(d, c)| {
                    d.fill(0.0);
                    col2im(black_box(c), &geo, d);
                });
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
