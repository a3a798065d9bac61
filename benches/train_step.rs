//! One full training step (forward, cross-entropy, backward, Adam) of the reference networks,
//! in images per second (criterion's "elem/s"; one element = one image).
//!
//! - convnet: 1×28×28 → Conv2d(1→32, 3×3) → ReLU → MaxPool2 → Conv2d(32→64, 3×3) → ReLU →
//!   MaxPool2 → Flatten → Dense(1600→10), batch 64;
//! - mlp: 784 → Dense(256) → ReLU → Dense(10), batch 64.
//!
//! Run: `cargo bench --bench train_step`

use backprop::prelude::*;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

fn convnet() -> Sequential {
    Sequential::builder(&[1, 28, 28])
        .add(Conv2d::new(1, 32, 3))
        .add(Relu::new())
        .add(MaxPool2d::new(2))
        .add(Conv2d::new(32, 64, 3))
        .add(Relu::new())
        .add(MaxPool2d::new(2))
        .add(Flatten::new())
        .add(Dense::new(1600, 10))
        .build()
        .unwrap()
}

fn mlp() -> Sequential {
    Sequential::builder(&[784])
        .add(Dense::new(784, 256))
        .add(Relu::new())
        .add(Dense::new(256, 10))
        .build()
        .unwrap()
}

fn step(c: &mut Criterion) {
    backprop::alloc_tuning::tune_allocator(); // a benchmark owns its process
    let mut g = c.benchmark_group("train_step");
    for (name, mut model, sample) in [("convnet", convnet(), vec![1, 28, 28]), ("mlp", mlp(), vec![784])] {
        for batch in [64usize, 256] {
            let mut shape = vec![batch];
            shape.extend(&sample);
            let x = Tensor::rand_uniform(&shape, 0.0, 1.0, 1);
            let labels: Vec<usize> = (0..batch).map(|i| i % 10).collect();
            let loss = CrossEntropyLoss::new();
            let mut adam = Adam::new(1e-3);
            g.throughput(Throughput::Elements(batch as u64));
            g.bench_function(BenchmarkId::new(name, format!("batch{batch}")), |b| {
                b.iter(|| model.train_step(&x, Target::Classes(&labels), &loss, &mut adam).unwrap())
            });
        }
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(4));
    targets = step
}
criterion_main!(benches);
