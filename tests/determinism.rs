//! The same seed gives bit-identical weights after training, with RAYON_NUM_THREADS=1, 2 and 3.
//!
//! The parent test runs this same test binary twice as a child process (the ignored test
//! `train_and_print_fingerprint`), once per thread count, and compares the printed fingerprints
//! of the trained weights. A child process is needed because rayon's global pool is sized once
//! per process.

mod common;

use backprop::prelude::*;
use std::process::Command;

const MARK: &str = "WEIGHTS-FINGERPRINT:";

/// A CNN with every layer kind whose work is split across threads (conv, pooling, batch norm,
/// dropout) and a Dense layer large enough for the GEMM to split itself.
fn train() -> Vec<u32> {
    let data = common::lines(96, 3);
    let mut model = Sequential::builder(&[1, 8, 8])
        .add(Conv2d::new(1, 16, 3).padding(1).seed(1))
        .add(BatchNorm2d::new(16))
        .add(Relu::new())
        .add(MaxPool2d::new(2))
        .add(Flatten::new())
        .add(Dropout::new(0.3))
        .add(Dense::new(256, 512).seed(2))
        .add(Relu::new())
        .add(Dense::new(512, 4).seed(3))
        .build()
        .unwrap();
    let opts = FitOptions::new().epochs(2).batch_size(48).seed(11).verbose(false);
    model.fit(&data, &CrossEntropyLoss::new(), &mut Adam::new(0.01), opts).unwrap();
    let mut bits: Vec<u32> =
        model.state_dict().iter().flat_map(|(_, t)| t.data().iter().map(|v| v.to_bits())).collect();
    bits.extend(train_recurrent());
    bits.extend(train_transformer());
    bits
}

/// A small GPT (two causal blocks with dropout, tied head) on random next-token targets, large
/// enough (`N·T·E = 65,536`) that its element-wise passes, row sums and bias sums split.
fn train_transformer() -> Vec<u32> {
    let (n, t, vocab) = (16, 32, 40);
    let ids = |seed: u64| {
        let v =
            Tensor::rand_uniform(&[n, t], 0.0, vocab as f32, seed).data().iter().map(|v| v.floor()).collect();
        Tensor::from_vec(&[n, t], v).unwrap()
    };
    let (x, targets) = (ids(8), ids(9));
    let mut model = Sequential::builder(&[t])
        .add(backprop::layers::DecoderOnly::new(vocab, 128, 4, 2, 256, t).tied().dropout(0.1))
        .build()
        .unwrap();
    let mut adam = Adam::new(1e-3);
    for _ in 0..2 {
        model.train_step(&x, Target::Values(&targets), &CrossEntropyLoss::new(), &mut adam).unwrap();
    }
    model.state_dict().iter().flat_map(|(_, t)| t.data().iter().map(|v| v.to_bits())).collect()
}

/// An LSTM and a GRU over sequences of different lengths, wide enough (`N·4H ≥ 16,384`) that each
/// thread walks its own block of samples through time.
fn train_recurrent() -> Vec<u32> {
    let (n, t, f) = (60, 7, 5);
    let x = Tensor::randn(&[n, t, f], 0.0, 1.0, 4);
    let lengths: Vec<usize> = (0..n).map(|s| 1 + (s * 5) % t).collect();
    let labels: Vec<usize> = (0..n).map(|s| s % 3).collect();
    let data = Dataset::classification(x, labels).unwrap().with_lengths(lengths).unwrap();
    let mut model = Sequential::builder(&[t, f])
        .add(Lstm::new(f, 96).seed(5))
        .add(Gru::new(96, 80).seed(6).last_step_only())
        .add(Dense::new(80, 3).seed(7))
        .build()
        .unwrap();
    let opts = FitOptions::new().epochs(2).batch_size(60).seed(12).verbose(false);
    model.fit(&data, &CrossEntropyLoss::new(), &mut Adam::new(0.01), opts).unwrap();
    model.state_dict().iter().flat_map(|(_, t)| t.data().iter().map(|v| v.to_bits())).collect()
}

#[test]
#[ignore = "run by `bit_identical_across_thread_counts` in a child process"]
fn train_and_print_fingerprint() {
    let bits = train();
    // FNV-1a over all the bits, plus the count.
    let hash =
        bits.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
    println!("{MARK} {} {hash:016x}", bits.len());
}

fn fingerprint(threads: &str) -> String {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "train_and_print_fingerprint", "--nocapture", "--test-threads", "1"])
        .env("RAYON_NUM_THREADS", threads)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child with {threads} threads failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .find_map(|l| l.split_once(MARK).map(|(_, rest)| rest))
        .unwrap_or_else(|| panic!("no fingerprint in:\n{stdout}"))
        .trim()
        .to_string()
}

#[test]
fn bit_identical_across_thread_counts() {
    let one = fingerprint("1");
    let two = fingerprint("2");
    assert_eq!(one, two, "weights differ between 1 and 2 threads");
    assert_eq!(one, fingerprint("3"), "weights differ between 1 and 3 threads (uneven blocks)");
    // And the fingerprint is a real one: training in this process (default threads) agrees too.
    let bits = train();
    assert!(one.starts_with(&format!("{} ", bits.len())), "{one}");
}
