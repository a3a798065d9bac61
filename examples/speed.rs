//! The Rust side of the side-by-side benchmark against PyTorch (`benches/pytorch/`): the same
//! networks, batch sizes and measurements as `benches/pytorch/convnet.py`, printed as one JSON
//! object. Run by `benches/pytorch/compare.py`; by hand:
//!
//! ```sh
//! cargo run --release --example speed -- 2 2.0     # threads, seconds per measurement
//! ```

use backprop::layers::TransformerEncoderLayer;

// The knowledge-tracing example's SAKT (and the helper it shares with DKT), for the SAKT row.
#[allow(dead_code)]
#[path = "knowledge_tracing/model.rs"]
mod model;
#[allow(dead_code)]
#[path = "knowledge_tracing/sakt.rs"]
mod sakt;
use backprop::prelude::*;
use std::time::Instant;

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
        .expect("the reference network")
}

fn mlp() -> Sequential {
    Sequential::builder(&[784])
        .add(Dense::new(784, 256))
        .add(Relu::new())
        .add(Dense::new(256, 10))
        .build()
        .expect("the mlp")
}

/// The sequence benchmark: an LSTM or GRU (input 100, hidden 200) over 50 steps, its last state
/// into a dense layer with 10 outputs (as `SeqNet` in `benches/pytorch/convnet.py`).
fn seqnet(gru: bool) -> Sequential {
    let builder = Sequential::builder(&[50, 100]);
    let builder = if gru {
        builder.add(Gru::new(100, 200).last_step_only())
    } else {
        builder.add(Lstm::new(100, 200).last_step_only())
    };
    builder.add(Dense::new(200, 10)).build().expect("the sequence network")
}

/// The attention benchmark: two pre-LN Transformer encoder blocks (embed 128, 4 heads,
/// feed-forward 512, no dropout) over 64 steps, flattened into a dense layer with 10 outputs (as
/// `EncoderNet` in `benches/pytorch/convnet.py`).
fn encoder_net() -> Sequential {
    let block = || TransformerEncoderLayer::new(128, 4, 512).norm_first().dropout(0.0);
    Sequential::builder(&[64, 128])
        .add(block())
        .add(block())
        .add(Flatten::new())
        .add(Dense::new(64 * 128, 10))
        .build()
        .expect("the encoder network")
}

/// Seconds per call of a timed step: the mean over the timed calls (the figure), and the fastest
/// single call (its `_best` companion: on a shared host the neighbours' noise only ever adds time,
/// so the fastest call is the steadier measure of a small change, `benches/pytorch/ab.py`).
#[derive(Clone, Copy)]
struct Timing {
    mean: f64,
    fastest: f64,
}

/// Runs `step` `warmup` times, then repeatedly for at least `seconds` (and 5 calls).
fn timed(mut step: impl FnMut(), warmup: usize, seconds: f64) -> Timing {
    for _ in 0..warmup {
        step();
    }
    let (mut n, start, mut fastest) = (0usize, Instant::now(), f64::INFINITY);
    loop {
        let call = Instant::now();
        step();
        fastest = fastest.min(call.elapsed().as_secs_f64());
        n += 1;
        let elapsed = start.elapsed().as_secs_f64();
        if elapsed >= seconds && n >= 5 {
            return Timing { mean: elapsed / n as f64, fastest };
        }
    }
}

/// What a figure reports from a step's time: items per second, or microseconds per call.
#[derive(Clone, Copy)]
enum Unit {
    PerSecond(usize),
    Micros,
}

impl Unit {
    fn of(self, seconds: f64) -> f64 {
        match self {
            Unit::PerSecond(items) => items as f64 / seconds,
            Unit::Micros => 1e6 * seconds,
        }
    }
}

/// Full training steps of `net` on one batch: forward, cross-entropy, backward, Adam.
fn train_steps(net: &mut Sequential, x: &Tensor, target: Target<'_>, warmup: usize, seconds: f64) -> Timing {
    let (loss, mut adam) = (CrossEntropyLoss::new(), Adam::new(1e-3));
    let mut step = || {
        net.train_step(x, target, &loss, &mut adam).expect("a valid batch");
    };
    timed(&mut step, warmup, seconds)
}

/// [`train_steps`] on a random batch of `sample`-shaped inputs with ten classes.
fn train_time(mut net: Sequential, sample: &[usize], batch: usize, warmup: usize, seconds: f64) -> Timing {
    let mut shape = vec![batch];
    shape.extend_from_slice(sample);
    let x = Tensor::rand_uniform(&shape, 0.0, 1.0, 0);
    let labels: Vec<usize> = (0..batch).map(|i| i % 10).collect();
    train_steps(&mut net, &x, Target::Classes(&labels), warmup, seconds)
}

/// Next-token training steps of a decoder-only Transformer (`DecoderOnly(65, 128, 4, 2, 512,
/// 64).tied()`, dropout 0: `Gpt` in `benches/pytorch/convnet.py`) on random ids `[batch, 64]`,
/// cross-entropy at every step.
fn gpt_train_time(batch: usize, warmup: usize, seconds: f64) -> Timing {
    let mut net = Sequential::builder(&[64])
        .add(backprop::layers::DecoderOnly::new(65, 128, 4, 2, 512, 64).tied().dropout(0.0))
        .build()
        .expect("the GPT network");
    let ids = |seed: u64| {
        let mut r = backprop::tensor::rng(seed);
        let v = (0..batch * 64).map(|_| rand::RngExt::random_range(&mut r, 0..65) as f32).collect();
        Tensor::from_vec(&[batch, 64], v).expect("ids")
    };
    let (x, targets) = (ids(0), ids(1));
    train_steps(&mut net, &x, Target::Values(&targets), warmup, seconds)
}

/// SAKT training steps (the knowledge-tracing example's model: 100 items, embed 64, 4 heads, 100
/// answers per student, dropout 0; `Sakt` in `benches/pytorch/convnet.py`) on random histories of
/// `batch` students, binary cross-entropy on every next answer.
fn sakt_train_time(batch: usize, warmup: usize, seconds: f64) -> Timing {
    use backprop::layers::{InputGrad, Mode};
    use backprop::model::{Inputs, Model, Tensors};
    let (items, steps) = (100, 100);
    let mut net = sakt::Sakt::new(items, 64, 4, steps, 0.0, 1);
    let mut r = backprop::tensor::rng(5);
    let mut draw = |below: usize| {
        let v = (0..batch * steps).map(|_| rand::RngExt::random_range(&mut r, 0..below) as f32).collect();
        Tensor::from_vec(&[batch, steps], v).expect("[batch, steps]")
    };
    let (answers, next, targets) = (draw(2 * items), draw(items), draw(2));
    let inputs = Inputs::new().with("answers", answers).with("next", next);
    let (loss, mut adam) = (BceWithLogitsLoss::new(), Adam::new(1e-3));
    timed(
        || {
            // A hand-written step: run on the pool as a whole (`train::on_pool`), as `fit` does.
            backprop::train::on_pool(|| {
                let out = net.forward_batch(&inputs, Mode::Train).expect("a valid batch");
                let logits = out.get("logits").expect("SAKT's output");
                let (_, g) = loss.loss_and_grad(logits, Target::Values(&targets)).expect("matching shapes");
                backprop::layers::zero_grad(&mut net);
                net.backward_batch(&Tensors::one("logits", g), InputGrad::NotNeeded)
                    .expect("a backward pass");
                adam.step(&mut net);
            })
        },
        warmup,
        seconds,
    )
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

/// The most threads the benchmark takes.
const MAX_THREADS: usize = 256;

/// Every figure, in the order they are measured (the third argument picks some of them; the
/// peak memory, `peak_rss_mib`, is always printed).
const FIGURES: [&str; 13] = [
    "convnet_train_b64",
    "convnet_train_b256",
    "convnet_infer_b256",
    "convnet_latency_b1_us",
    "mlp_train_b64",
    "mlp_latency_b1_us",
    "lstm_train_b100",
    "lstm_infer_b100",
    "gru_train_b100",
    "encoder_train_b32",
    "encoder_infer_b32",
    "gpt_train_b32",
    "sakt_train_b64",
];

fn main() {
    let mut args = std::env::args().skip(1);
    // Arguments that are given must make sense: a typo is an error, not the default (and a
    // NaN or infinite duration would never end).
    let usage = |what: &str| -> ! {
        eprintln!(
            "speed: {what}; usage: speed [THREADS 1 to {MAX_THREADS}] [SECONDS > 0, finite] [FIGURES,…]\nfigures: {}",
            FIGURES.join(", ")
        );
        std::process::exit(2)
    };
    // Thousands of threads had spent minutes starting up before measuring anything.
    let threads: usize = match args.next() {
        None => 2,
        Some(a) => a
            .parse()
            .ok()
            .filter(|t| (1..=MAX_THREADS).contains(t))
            .unwrap_or_else(|| usage(&format!("threads {a:?}"))),
    };
    let seconds: f64 = match args.next() {
        None => 2.0,
        Some(a) => {
            let s = a.parse::<f64>().ok().filter(|s| s.is_finite() && *s > 0.0);
            s.unwrap_or_else(|| usage(&format!("seconds {a:?}")))
        }
    };
    // A benchmark owns its process: keep freed memory for reuse, as a training program would
    // (first, before the pool's threads start: see alloc_tuning).
    backprop::alloc_tuning::tune_allocator();
    rayon::ThreadPoolBuilder::new().num_threads(threads).build_global().expect("the global thread pool");
    let warmup = 10;

    // An optional third argument runs only the named figures (comma-separated), for profiling;
    // a name that is not a figure is refused (it had measured nothing and printed no figure).
    let only: Option<String> = args.next();
    if let Some(unknown) = only.as_deref().and_then(|o| o.split(',').find(|w| !FIGURES.contains(w))) {
        usage(&format!("no figure called {unknown:?}"));
    }
    if let Some(extra) = args.next() {
        usage(&format!("unexpected argument {extra:?}"));
    }
    let wanted = |name: &str| only.as_deref().is_none_or(|o| o.split(',').any(|w| w == name));
    // Each figure from the mean time per call, and its `_best` companion from the fastest call.
    let mut figures: Vec<(String, f64)> = Vec::new();
    let mut figure = |name: &'static str, unit: Unit, measure: &mut dyn FnMut() -> Timing| {
        debug_assert!(FIGURES.contains(&name), "{name} is listed in FIGURES");
        if wanted(name) {
            let t = measure();
            figures.push((name.to_string(), unit.of(t.mean)));
            figures.push((format!("{name}_best"), unit.of(t.fastest)));
        }
    };
    let per_second = Unit::PerSecond;
    figure("convnet_train_b64", per_second(64), &mut || {
        train_time(convnet(), &[1, 28, 28], 64, warmup, seconds)
    });
    figure("convnet_train_b256", per_second(256), &mut || {
        train_time(convnet(), &[1, 28, 28], 256, warmup, seconds)
    });
    figure("convnet_infer_b256", per_second(256), &mut || {
        let mut net = convnet();
        let x = Tensor::rand_uniform(&[256, 1, 28, 28], 0.0, 1.0, 1);
        timed(|| drop(net.forward(&x, Pass::PREDICT)), warmup, seconds)
    });
    figure("convnet_latency_b1_us", Unit::Micros, &mut || {
        let mut net = convnet();
        let x1 = Tensor::rand_uniform(&[1, 1, 28, 28], 0.0, 1.0, 2);
        timed(|| drop(net.forward(&x1, Pass::PREDICT)), warmup * 10, seconds)
    });
    figure("mlp_train_b64", per_second(64), &mut || train_time(mlp(), &[784], 64, warmup, seconds));
    figure("mlp_latency_b1_us", Unit::Micros, &mut || {
        let mut net = mlp();
        let x1 = Tensor::rand_uniform(&[1, 784], 0.0, 1.0, 2);
        timed(|| drop(net.forward(&x1, Pass::PREDICT)), warmup * 10, seconds)
    });
    figure("lstm_train_b100", per_second(100), &mut || {
        train_time(seqnet(false), &[50, 100], 100, warmup, seconds)
    });
    figure("lstm_infer_b100", per_second(100), &mut || {
        let mut lstm = seqnet(false);
        let xs = Tensor::rand_uniform(&[100, 50, 100], 0.0, 1.0, 3);
        timed(|| drop(lstm.forward(&xs, Pass::PREDICT)), warmup, seconds)
    });
    figure("gru_train_b100", per_second(100), &mut || {
        train_time(seqnet(true), &[50, 100], 100, warmup, seconds)
    });
    figure("encoder_train_b32", per_second(32), &mut || {
        train_time(encoder_net(), &[64, 128], 32, warmup, seconds)
    });
    figure("encoder_infer_b32", per_second(32), &mut || {
        let mut net = encoder_net();
        let xs = Tensor::rand_uniform(&[32, 64, 128], 0.0, 1.0, 4);
        timed(|| drop(net.forward(&xs, Pass::PREDICT)), warmup, seconds)
    });
    figure("gpt_train_b32", per_second(32), &mut || gpt_train_time(32, warmup, seconds));
    figure("sakt_train_b64", per_second(64), &mut || sakt_train_time(64, warmup, seconds));
    let mut json = format!(
        "{{\"framework\": \"backprop\", \"version\": \"{}\", \"threads\": {threads}",
        env!("CARGO_PKG_VERSION")
    );
    for (name, value) in &figures {
        json.push_str(&format!(", \"{name}\": {value}"));
    }
    println!("{json}, \"peak_rss_mib\": {}}}", peak_rss_mib());
}
