//! The walkthrough's command line against the hostile inputs the review found: each is a one-line
//! error and a non-zero exit, never a panic, an abort or a silent success. Runs the example binary
//! that `cargo test` builds.

use backprop::data::idx::write_idx;
use backprop::prelude::*;
use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::scratch_dir;

fn binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().join("examples").join("image_classify")
}

fn scratch() -> tempfile::TempDir {
    scratch_dir("cli")
}

/// Runs the walkthrough; returns (exit code, stderr).
fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(binary()).args(args).output().expect("the example binary was built by cargo test");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    (out.status.code().unwrap_or_else(|| panic!("{args:?} was killed by a signal: {stderr}")), stderr)
}

fn tiny_mnist(dir: &Path) -> String {
    tiny_mnist_named(dir, "tiny", "")
}

/// 20 training and 10 test images in `dir/folder`, their files' names starting with `prefix`.
fn tiny_mnist_named(dir: &Path, folder: &str, prefix: &str) -> String {
    let data = dir.join(folder);
    std::fs::create_dir_all(&data).unwrap();
    let px = |n: usize| (0..n * 784).map(|i| (i * 13 % 256) as u8).collect::<Vec<u8>>();
    let file = |name: &str| data.join(format!("{prefix}{name}"));
    write_idx(file("train-images-idx3-ubyte"), &[20, 28, 28], &px(20)).unwrap();
    write_idx(file("train-labels-idx1-ubyte"), &[20], &(0..20u8).map(|i| i % 10).collect::<Vec<_>>())
        .unwrap();
    write_idx(file("t10k-images-idx3-ubyte"), &[10, 28, 28], &px(10)).unwrap();
    write_idx(file("t10k-labels-idx1-ubyte"), &[10], &(0..10u8).collect::<Vec<_>>()).unwrap();
    data.to_string_lossy().into_owned()
}

/// Runs the walkthrough, which must succeed; returns its stdout.
fn run_ok(args: &[&str]) -> String {
    let out = Command::new(binary()).args(args).output().expect("the example binary was built by cargo test");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{args:?}: {stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A model trained on EMNIST (whose files store every image transposed) says so in its weights
/// file, and `--predict` turns a picture to match: a picture predicted by the EMNIST model gets
/// exactly the probabilities its transpose gets from the same weights trained from files of
/// another name (the same pixels, seed and labels: the same weights, bit for bit).
#[test]
fn emnist_pictures_are_transposed_for_prediction() {
    let temporary = scratch();
    let dir = temporary.path();
    let path = |p: &Path| p.to_string_lossy().into_owned();
    let mut models = Vec::new();
    for (folder, prefix) in [("emnist", "emnist-digits-"), ("plain", "")] {
        let data = tiny_mnist_named(dir, folder, prefix);
        let out = dir.join(format!("out-{folder}"));
        let stdout =
            run_ok(&["--quiet", "--out", &path(&out), "--data", &data, "--epochs", "1", "--threads", "1"]);
        assert_eq!(stdout.contains("EMNIST"), !prefix.is_empty(), "{stdout}");
        let model = out.join("model.safetensors");
        let meta = backprop::io::read_metadata(&model).unwrap();
        assert_eq!(meta["pixels_transposed"], (!prefix.is_empty()).to_string());
        models.push(path(&model));
    }
    // A picture with nothing symmetric about it, and its transpose.
    let picture = image::GrayImage::from_fn(28, 28, |x, y| image::Luma([((x * 9 + y * y) % 256) as u8]));
    let transposed = image::GrayImage::from_fn(28, 28, |x, y| *picture.get_pixel(y, x));
    let (a, b) = (dir.join("a.png"), dir.join("a-transposed.png"));
    picture.save(&a).unwrap();
    transposed.save(&b).unwrap();
    let classes = |stdout: String| stdout.lines().skip(1).map(String::from).collect::<Vec<_>>();
    let emnist = classes(run_ok(&["--predict", &path(&a), "--model", &models[0]]));
    let plain_of_transpose = classes(run_ok(&["--predict", &path(&b), "--model", &models[1]]));
    let plain = classes(run_ok(&["--predict", &path(&a), "--model", &models[1]]));
    assert_eq!(emnist, plain_of_transpose);
    assert_ne!(emnist, plain, "the picture is not symmetric: turning it must change something");
}

#[test]
fn hostile_arguments_are_one_line_errors() {
    let temporary = scratch();
    let dir = temporary.path();
    let out = dir.join("out").to_string_lossy().into_owned();
    for (args, code, want) in [
        (vec!["--threads", "100000"], 2, "100000"),
        (vec!["--threads", "0"], 2, "--threads"),
        (vec!["--data", "Cargo.toml"], 1, "is a file, not a folder"),
        (vec!["--data", "/nonexistent/folder"], 1, "does not exist"),
        (vec!["--lr", "1e30"], 1, "--lr must be a number in (0, 10]"),
        (vec!["--lr", "nan"], 1, "--lr"),
        // A negative number is a value, not an unknown option: the range's own message.
        (vec!["--lr", "-1"], 1, "--lr must be a number in (0, 10]"),
        (vec!["--epochs", "0"], 2, "--epochs"),
        // Each privacy option with its own message, before the data is read (the folder does
        // not exist: a late check would have named it instead).
        (
            vec!["--dp-epsilon", "0", "--data", "/nonexistent"],
            1,
            "--dp-epsilon must be a positive number, got 0",
        ),
        (
            vec!["--dp-epsilon", "3", "--dp-delta", "1", "--data", "/nonexistent"],
            1,
            "--dp-delta must be in (0, 1)",
        ),
        (
            vec!["--dp-epsilon", "3", "--dp-clip", "-1", "--data", "/nonexistent"],
            1,
            "--dp-clip must be a positive",
        ),
        // Predicting trains nothing: training options beside --predict are refused, not ignored.
        (
            vec!["--predict", "a.png", "--model", "m.safetensors", "--epochs", "3"],
            2,
            "cannot be used with '--epochs",
        ),
        (
            vec!["--predict", "a.png", "--model", "m.safetensors", "--dp-epsilon", "3"],
            2,
            "cannot be used with '--dp-epsilon",
        ),
        // --out beside --predict is not a conflict (the fuzzer's prediction cases give one).
        (vec!["--predict", "/nonexistent.png", "--model", "/nonexistent.safetensors"], 1, "nonexistent"),
    ] {
        let mut full = vec!["--quiet", "--out", &out];
        full.extend(&args);
        let (got, stderr) = run(&full);
        assert_eq!(got, code, "{args:?}: {stderr}");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: one line, got {stderr}");
    }
    // An --out that is a file, or a folder where an output file goes: refused before training.
    let data = tiny_mnist(dir);
    let file = dir.join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let (code, stderr) = run(&["--quiet", "--out", file.to_str().unwrap(), "--data", &data, "--epochs", "1"]);
    assert!(code == 1 && stderr.contains("--out must be a folder"), "{stderr}");
    let trap = dir.join("trap");
    std::fs::create_dir_all(trap.join("model.safetensors")).unwrap();
    let (code, stderr) = run(&["--quiet", "--out", trap.to_str().unwrap(), "--data", &data, "--epochs", "1"]);
    assert!(code == 1 && stderr.contains("model.safetensors is not a file"), "{stderr}");
    // The largest seed trains (no overflow of seed + 1 in a debug build).
    let (code, stderr) =
        run(&["--quiet", "--out", &out, "--data", &data, "--epochs", "1", "--seed", "18446744073709551615"]);
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn a_model_files_metadata_is_checked_before_use() {
    let temporary = scratch();
    let dir = temporary.path();
    let image = dir.join("digit.png");
    image::GrayImage::from_pixel(28, 28, image::Luma([200])).save(&image).unwrap();
    let model = Sequential::builder(&[1, 4, 4]).add(Flatten::new()).add(Dense::new(16, 2)).build().unwrap();
    let good = [
        ("input_shape", "1,28,28"),
        ("classes", "10"),
        ("normalize_mean", "0.1"),
        ("normalize_std", "0.3"),
        ("pixels_transposed", "false"),
    ];
    for (field, bad, want) in [
        ("pixels_transposed", "yes", "pixels_transposed"),
        ("input_shape", "1,100000,100000", "input_shape"),
        ("input_shape", "1,28", "input_shape"),
        ("classes", "10000000000", "classes"),
        ("classes", "0", "classes"),
        // Allowed sizes, but a classifier far larger than the file: refused before it is built
        // (it had reserved gigabytes, or panicked in Dense::new).
        ("input_shape", "1,4096,4096", "more than the file's"),
        ("classes", "100000", "more than the file's"),
        ("normalize_std", "0", "std ≥ 1.2e-38"),
        ("normalize_std", "1e-40", "std ≥ 1.2e-38"),
        ("normalize_mean", "inf", "std ≥ 1.2e-38"),
    ] {
        let meta: Vec<(&str, String)> =
            good.iter().map(|&(k, v)| (k, if k == field { bad } else { v }.to_string())).collect();
        let path = dir.join(format!("bad-{field}-{bad}.safetensors"));
        model.save_with_metadata(&path, &meta).unwrap();
        let (code, stderr) = run(&["--predict", image.to_str().unwrap(), "--model", path.to_str().unwrap()]);
        assert_eq!(code, 1, "{field}={bad}: {stderr}");
        assert!(stderr.contains(want), "{field}={bad}: {stderr}");
    }
}

/// Images too large for a training batch are refused before training, with the sizes and the
/// remedies (four images of 2,000 × 2,000 keep about 6 GB of activations; such a run had been
/// killed by the kernel for memory, or printed worker threads' panics, midway through its first
/// batch).
#[test]
fn images_too_large_for_a_batch_are_refused_before_training() {
    let temporary = scratch();
    let data = temporary.path().join("large");
    std::fs::create_dir_all(&data).unwrap();
    let side = 2000;
    let px = |n: usize| vec![128u8; n * side * side];
    write_idx(data.join("train-images-idx3-ubyte"), &[4, side, side], &px(4)).unwrap();
    write_idx(data.join("train-labels-idx1-ubyte"), &[4], &[0, 1, 0, 1]).unwrap();
    write_idx(data.join("t10k-images-idx3-ubyte"), &[2, side, side], &px(2)).unwrap();
    write_idx(data.join("t10k-labels-idx1-ubyte"), &[2], &[0, 1]).unwrap();
    let out = temporary.path().join("out");
    let args = ["--quiet", "--data", data.to_str().unwrap(), "--out", out.to_str().unwrap(), "--epochs", "1"];
    let (code, stderr) = run(&args);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("a training batch of 4 images of [1, 2000, 2000] would keep about"), "{stderr}");
    assert!(stderr.contains("lower --batch-size or resize the images"), "{stderr}");
    // One error line, no worker panics (a debug build prints its speed warning first).
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(!stderr.contains("panicked") && stderr.trim().lines().last() == Some(errors[0]), "{stderr}");
}
