//! Forward and backward of each layer of the reference network at batch 64.
//!
//! Conv2d and Dense report GFLOP/s (criterion's "Gelem/s", counting 2 FLOPs per multiply-add:
//! forward 2·N·O·C·kh·kw·OH·OW; backward twice that, for dW and dx). MaxPool2d and ReLU report
//! input elements per second.
//!
//! Run: `cargo bench --bench layers`

use backprop::Tensor;
use backprop::layers::{Conv2d, Dense, InputGrad, Layer, MaxPool2d, Mode, Relu};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

const N: usize = 64;

fn bench_layer(
    c: &mut Criterion,
    group: &str,
    mut layer: Box<dyn Layer>,
    x: Tensor,
    fwd: Throughput,
    bwd: Throughput,
) {
    let mut g = c.benchmark_group(group);
    let y = layer.forward(&x, Mode::Train);
    let grad = Tensor::randn(y.shape(), 0.0, 1.0, 9);
    g.throughput(fwd);
    g.bench_function(BenchmarkId::new("forward", layer.describe()), |b| {
        b.iter(|| black_box(layer.forward(black_box(&x), Mode::Train)))
    });
    g.throughput(bwd);
    layer.forward(&x, Mode::Train);
    g.bench_function(BenchmarkId::new("backward", layer.describe()), |b| {
        b.iter(|| black_box(layer.backward(black_box(&grad), InputGrad::Needed)))
    });
    g.finish();
}

fn conv_flops(n: usize, o: usize, c: usize, k: usize, oh: usize) -> u64 {
    (2 * n * o * c * k * k * oh * oh) as u64
}

fn layers(c: &mut Criterion) {
    backprop::alloc_tuning::tune_allocator(); // a benchmark owns its process
    let f1 = conv_flops(N, 32, 1, 3, 26);
    bench_layer(
        c,
        "layer_conv1_batch64",
        Box::new(Conv2d::new(1, 32, 3)),
        Tensor::randn(&[N, 1, 28, 28], 0.0, 1.0, 1),
        Throughput::Elements(f1),
        Throughput::Elements(2 * f1),
    );
    let f2 = conv_flops(N, 64, 32, 3, 11);
    bench_layer(
        c,
        "layer_conv2_batch64",
        Box::new(Conv2d::new(32, 64, 3)),
        Tensor::randn(&[N, 32, 13, 13], 0.0, 1.0, 2),
        Throughput::Elements(f2),
        Throughput::Elements(2 * f2),
    );
    let fd = (2 * N * 1600 * 10) as u64;
    bench_layer(
        c,
        "layer_dense_batch64",
        Box::new(Dense::new(1600, 10)),
        Tensor::randn(&[N, 1600], 0.0, 1.0, 3),
        Throughput::Elements(fd),
        Throughput::Elements(2 * fd),
    );
    let e = (N * 32 * 26 * 26) as u64;
    bench_layer(
        c,
        "layer_maxpool_batch64",
        Box::new(MaxPool2d::new(2)),
        Tensor::randn(&[N, 32, 26, 26], 0.0, 1.0, 4),
        Throughput::Elements(e),
        Throughput::Elements(e),
    );
    bench_layer(
        c,
        "layer_relu_batch64",
        Box::new(Relu::new()),
        Tensor::randn(&[N, 32, 26, 26], 0.0, 1.0, 5),
        Throughput::Elements(e),
        Throughput::Elements(e),
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = layers
}
criterion_main!(benches);
