//! Forward and backward of each layer of the reference network (and the MLP's first dense layer)
//! at batch 64 and 256, for the roofline table of `docs/benchmarks.md`: how far each layer runs from
//! the machine's limits measured by `benches/roofline.rs`.
//!
//! Layers with multiply-adds report GFLOP/s (criterion's "Gelem/s", 2 FLOPs per multiply-add:
//! convolution forward 2·N·O·C·kh·kw·OH·OW, dense forward 2·N·in·out; a backward pass twice its
//! forward, for `dL/dW` and `dL/dx` — except the network's first layer, which computes no `dL/dx`
//! in training and is measured that way, so its backward counts once). Max pooling and ReLU report
//! the bytes they read and write per second (GiB/s): pooling forward reads the input and writes
//! the output and its arg-max (u32), backward reads the gradient and the arg-max and writes
//! `dL/dx`; ReLU reads and writes 4 bytes per value and keeps a 1-byte mask.
//!
//! `attention_backward` times a causal `MultiHeadAttention`'s backward pass on one thread at the
//! side-by-side's GPT shape (E 128, 4 heads, T 64, batch 32) and SAKT shape (E 64, 4 heads, T 100,
//! batch 64), and an unmasked one at the encoder's (the GPT's shape), in GFLOP/s of the products over all of each head's `P` (as if nothing were masked:
//! the projections' 2 · 2·N·T·E·4E, the heads' 4 · 2·N·T²·E), so skipping masked blocks shows as a
//! higher rate.
//!
//! `attention_forward` times a `MultiHeadAttention`'s predicting pass on one thread at the
//! encoder's shape (E 128, 4 heads, T 64, batch 32, no mask) and the GPT's (the same, causal), in
//! GFLOP/s of the projections (4 · 2·N·T·E²: q, k, v and out) and the
//! heads' two products (2 · 2·N·T²·E, as if nothing were masked).
//!
//! `transformer_elementwise` times the memory-bound layers of a Transformer block on one thread, at
//! the GPT shape (batch 32, T 64): `LayerNorm(128)` on `[32, 64, 128]` and exact `GELU` on the
//! feed-forward's `[32, 64, 512]`, forward (training: what backward needs is kept) and backward,
//! in values per second (criterion's "Gelem/s": one element is one value of the layer's input);
//! LayerNorm's backward also on two threads (its `dγ`, `dβ` column sums split by columns).
//!
//! `elementwise_and_optimizers` times, on one thread, `BatchNorm2d(32)`, `Sigmoid` and `Tanh` on
//! `[64, 32, 16, 16]` (forward in training, backward), and one checked step
//! (`step_params_checked`, as training takes it) of SGD (momentum 0.9) and of
//! Adam over the MLP's 203,530 parameters (`784·256 + 256`, `256·10 + 10`), and the
//! cross-entropy's loss and gradient on `[256, 1000]` logits, in values per second.
//!
//! `recurrent_padding` times an LSTM(100 → 200) training pass (forward, then backward with `dL/dx`)
//! on one thread over 100 sequences of 5 to 20 steps, stored padded to T = 20 and to T = 200 (as
//! `Bucketed` batches of short sequences are, in data padded to its longest), in sequences per
//! second: the walk runs to the batch's longest sequence, so the two should cost about the same.
//!
//! Run: `cargo bench --bench layers` (one group: `cargo bench --bench layers -- attention_backward`)

use backprop::Tensor;
use backprop::layers::{
    BatchNorm2d, Conv2d, Dense, Gelu, InputGrad, Layer, LayerNorm, Lstm, MaxPool2d, MultiHeadAttention,
    Param, Pass, Relu, Sigmoid, Tanh,
};
use backprop::loss::{CrossEntropyLoss, Loss};
use backprop::optim::{Adam, Optimizer, Sgd};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

/// One layer's benchmark: what to build, its input shape, its throughputs.
struct Case {
    name: &'static str,
    layer: fn() -> Box<dyn Layer>,
    input: Vec<usize>,
    forward: Throughput,
    backward: Throughput,
    input_grad: InputGrad,
}

fn bench_layer(c: &mut Criterion, batch: usize, case: Case) {
    let mut layer = (case.layer)();
    let x = Tensor::randn(&case.input, 0.0, 1.0, 1);
    let mut g = c.benchmark_group(format!("layer_batch{batch}"));
    let y = layer.forward(&x, Pass::TRAIN);
    let grad = Tensor::randn(y.shape(), 0.0, 1.0, 9);
    g.throughput(case.forward);
    g.bench_function(BenchmarkId::new("forward", case.name), |b| {
        b.iter(|| black_box(layer.forward(black_box(&x), Pass::TRAIN)))
    });
    g.throughput(case.backward);
    layer.forward(&x, Pass::TRAIN);
    g.bench_function(BenchmarkId::new("backward", case.name), |b| {
        b.iter(|| black_box(layer.backward(black_box(&grad), case.input_grad)))
    });
    g.finish();
}

/// FLOPs of a square-kernel convolution's forward pass on square images.
fn conv_flops(n: usize, o: usize, c: usize, k: usize, out: usize) -> u64 {
    (2 * n * o * c * k * k * out * out) as u64
}

fn cases(n: usize) -> Vec<Case> {
    let f1 = conv_flops(n, 32, 1, 3, 26);
    let f2 = conv_flops(n, 64, 32, 3, 11);
    let fd = (2 * n * 1600 * 10) as u64;
    let fm = (2 * n * 784 * 256) as u64;
    let pool_in = n * 32 * 26 * 26; // values entering the first pooling
    let pool_bytes = (4 * pool_in + (4 + 4) * pool_in / 4) as u64;
    let relu_bytes = ((4 + 4 + 1) * pool_in) as u64;
    vec![
        Case {
            name: "Conv2d(1→32, 3×3), first layer",
            layer: || Box::new(Conv2d::new(1, 32, 3)),
            input: vec![n, 1, 28, 28],
            forward: Throughput::Elements(f1),
            backward: Throughput::Elements(f1), // dL/dW only
            input_grad: InputGrad::NotNeeded,
        },
        Case {
            name: "Conv2d(32→64, 3×3)",
            layer: || Box::new(Conv2d::new(32, 64, 3)),
            input: vec![n, 32, 13, 13],
            forward: Throughput::Elements(f2),
            backward: Throughput::Elements(2 * f2),
            input_grad: InputGrad::Needed,
        },
        Case {
            name: "Dense(1600→10)",
            layer: || Box::new(Dense::new(1600, 10)),
            input: vec![n, 1600],
            forward: Throughput::Elements(fd),
            backward: Throughput::Elements(2 * fd),
            input_grad: InputGrad::Needed,
        },
        Case {
            name: "Dense(784→256), first layer",
            layer: || Box::new(Dense::new(784, 256)),
            input: vec![n, 784],
            forward: Throughput::Elements(fm),
            backward: Throughput::Elements(fm), // dL/dW only
            input_grad: InputGrad::NotNeeded,
        },
        Case {
            name: "MaxPool2d(2×2) on 32×26×26",
            layer: || Box::new(MaxPool2d::new(2)),
            input: vec![n, 32, 26, 26],
            forward: Throughput::Bytes(pool_bytes),
            backward: Throughput::Bytes(pool_bytes),
            input_grad: InputGrad::Needed,
        },
        Case {
            name: "ReLU on 32×26×26",
            layer: || Box::new(Relu::new()),
            input: vec![n, 32, 26, 26],
            forward: Throughput::Bytes(relu_bytes),
            backward: Throughput::Bytes(relu_bytes),
            input_grad: InputGrad::Needed,
        },
    ]
}

fn layers(c: &mut Criterion) {
    backprop::alloc_tuning::tune_allocator(); // a benchmark owns its process
    for batch in [64, 256] {
        for case in cases(batch) {
            bench_layer(c, batch, case);
        }
    }
}

/// A causal self-attention layer's backward pass on one thread (see the module docs).
fn attention_backward(c: &mut Criterion) {
    backprop::alloc_tuning::tune_allocator(); // a benchmark owns its process
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().expect("a one-thread pool");
    let mut g = c.benchmark_group("attention_backward");
    let shapes = [
        ("gpt_E128_T64_b32", 32, 64, 128, 4, true),
        ("sakt_E64_T100_b64", 64, 100, 64, 4, true),
        ("encoder_E128_T64_b32", 32, 64, 128, 4, false),
    ];
    for (name, n, t, e, heads, causal) in shapes {
        let attn = MultiHeadAttention::new(e, heads);
        let mut attn = if causal { attn.causal() } else { attn };
        let x = Tensor::randn(&[n, t, e], 0.0, 1.0, 1);
        let grad = Tensor::randn(&[n, t, e], 0.0, 1.0, 2);
        one.install(|| attn.forward(&x, Pass::TRAIN));
        let (projections, heads_products) = (2 * 2 * n * t * e * 4 * e, 4 * 2 * n * t * t * e);
        g.throughput(Throughput::Elements((projections + heads_products) as u64));
        g.bench_function(name, |b| {
            one.install(|| b.iter(|| black_box(attn.backward(black_box(&grad), InputGrad::Needed))))
        });
    }
    g.finish();
}

/// A `MultiHeadAttention`'s predicting pass (see the module docs).
fn attention_forward(c: &mut Criterion) {
    backprop::alloc_tuning::tune_allocator(); // a benchmark owns its process
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().expect("a one-thread pool");
    let mut g = c.benchmark_group("attention_forward");
    let (n, t, e, heads) = (32, 64, 128, 4);
    for (name, causal) in [("encoder_E128_T64_b32", false), ("gpt_E128_T64_b32", true)] {
        let attn = MultiHeadAttention::new(e, heads);
        let mut attn = if causal { attn.causal() } else { attn };
        let x = Tensor::randn(&[n, t, e], 0.0, 1.0, 1);
        let (projections, heads_products) = (4 * 2 * n * t * e * e, 2 * 2 * n * t * t * e);
        g.throughput(Throughput::Elements((projections + heads_products) as u64));
        g.bench_function(name, |b| {
            one.install(|| b.iter(|| black_box(attn.forward(black_box(&x), Pass::PREDICT))))
        });
    }
    g.finish();
}

/// LayerNorm and GELU at the GPT shape, one thread (see the module docs).
fn transformer_elementwise(c: &mut Criterion) {
    backprop::alloc_tuning::tune_allocator(); // a benchmark owns its process
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().expect("a one-thread pool");
    let two = rayon::ThreadPoolBuilder::new().num_threads(2).build().expect("a two-thread pool");
    let mut g = c.benchmark_group("transformer_elementwise");
    let cases: [(&str, Box<dyn Layer>, [usize; 3]); 2] = [
        ("layernorm_128", Box::new(LayerNorm::new(128)), [32, 64, 128]),
        ("gelu_512", Box::new(Gelu::new()), [32, 64, 512]),
    ];
    for (name, mut layer, shape) in cases {
        let grad = forward_and_backward(&mut g, &one, name, &mut *layer, &shape);
        if name.starts_with("layernorm") {
            g.bench_function(BenchmarkId::new("backward_2_threads", name), |b| {
                two.install(|| b.iter(|| black_box(layer.backward(black_box(&grad), InputGrad::Needed))))
            });
        }
    }
    g.finish();
}

/// A layer's training forward pass and its backward pass on one thread, in values per second of
/// an input of `shape` (`N(0.5, 2)` values); returns the gradient backward was given.
fn forward_and_backward(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    one: &rayon::ThreadPool,
    name: &str,
    layer: &mut dyn Layer,
    shape: &[usize],
) -> Tensor {
    let x = Tensor::randn(shape, 0.5, 2.0, 1);
    let grad = Tensor::randn(shape, 0.0, 1.0, 2);
    g.throughput(Throughput::Elements(x.len() as u64));
    g.bench_function(BenchmarkId::new("forward", name), |b| {
        one.install(|| b.iter(|| black_box(layer.forward(black_box(&x), Pass::TRAIN))))
    });
    one.install(|| layer.forward(&x, Pass::TRAIN));
    g.bench_function(BenchmarkId::new("backward", name), |b| {
        one.install(|| b.iter(|| black_box(layer.backward(black_box(&grad), InputGrad::Needed))))
    });
    grad
}

fn elementwise_and_optimizers(c: &mut Criterion) {
    backprop::alloc_tuning::tune_allocator(); // a benchmark owns its process
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().expect("a one-thread pool");
    let mut g = c.benchmark_group("elementwise_and_optimizers");
    let shape = [64, 32, 16, 16];
    let cases: [(&str, Box<dyn Layer>); 3] = [
        ("batchnorm2d_32", Box::new(BatchNorm2d::new(32))),
        ("sigmoid", Box::new(Sigmoid::new())),
        ("tanh", Box::new(Tanh::new())),
    ];
    for (name, mut layer) in cases {
        forward_and_backward(&mut g, &one, name, &mut *layer, &shape);
    }
    let sizes = [784 * 256, 256, 256 * 10, 10];
    let mut params: Vec<Param> = sizes
        .iter()
        .enumerate()
        .map(|(k, &n)| {
            let mut p = Param::new(Tensor::randn(&[n], 0.0, 0.1, 3 + k as u64));
            p.grad = Tensor::randn(&[n], 0.0, 0.01, 7 + k as u64);
            p
        })
        .collect();
    let logits = Tensor::randn(&[256, 1000], 0.0, 3.0, 11);
    let labels: Vec<usize> = (0..256).map(|i| i * 7 % 1000).collect();
    g.throughput(Throughput::Elements(logits.len() as u64));
    g.bench_function("cross_entropy_1000", |b| {
        one.install(|| {
            b.iter(|| black_box(CrossEntropyLoss::new().loss_and_grad(black_box(&logits), (&labels).into())))
        })
    });
    g.throughput(Throughput::Elements(sizes.iter().sum::<usize>() as u64));
    let optimizers: [(&str, Box<dyn Optimizer>); 2] =
        [("sgd_momentum", Box::new(Sgd::new(1e-3).momentum(0.9))), ("adam", Box::new(Adam::new(1e-3)))];
    for (name, mut optimizer) in optimizers {
        g.bench_function(BenchmarkId::new("step", name), |b| {
            one.install(|| {
                b.iter(|| {
                    let mut named: Vec<(String, &mut Param)> =
                        params.iter_mut().enumerate().map(|(k, p)| (format!("p{k}"), p)).collect();
                    black_box(optimizer.step_params_checked(&mut named)); // (what a training step calls)
                })
            })
        });
    }
    g.finish();
}

fn recurrent_padding(c: &mut Criterion) {
    backprop::alloc_tuning::tune_allocator(); // a benchmark owns its process
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().expect("a one-thread pool");
    let mut g = c.benchmark_group("recurrent_padding");
    let (n, f) = (100, 100);
    let lengths: Vec<usize> = (0..n).map(|s| 5 + s % 16).collect(); // 5 … 20 steps
    g.throughput(Throughput::Elements(n as u64));
    for t in [20, 200] {
        let x = Tensor::randn(&[n, t, f], 0.0, 1.0, 1);
        let mut lstm = Lstm::new(f, 200).seed(2);
        let grad = Tensor::randn(&[n, t, 200], 0.0, 1.0, 3);
        g.bench_function(BenchmarkId::new("lstm_train_padded_to", t), |b| {
            one.install(|| {
                b.iter(|| {
                    black_box(lstm.forward(black_box(&x), Pass::TRAIN.with_lengths(&lengths)));
                    black_box(lstm.backward(black_box(&grad), InputGrad::Needed))
                })
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = layers, attention_forward, attention_backward, transformer_elementwise, elementwise_and_optimizers,
        recurrent_padding
}
criterion_main!(benches);
