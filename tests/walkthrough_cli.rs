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
    let data = dir.join("tiny");
    std::fs::create_dir_all(&data).unwrap();
    let px = |n: usize| (0..n * 784).map(|i| (i * 13 % 256) as u8).collect::<Vec<u8>>();
    write_idx(data.join("train-images-idx3-ubyte"), &[20, 28, 28], &px(20)).unwrap();
    write_idx(data.join("train-labels-idx1-ubyte"), &[20], &(0..20u8).map(|i| i % 10).collect::<Vec<_>>())
        .unwrap();
    write_idx(data.join("t10k-images-idx3-ubyte"), &[10, 28, 28], &px(10)).unwrap();
    write_idx(data.join("t10k-labels-idx1-ubyte"), &[10], &(0..10u8).collect::<Vec<_>>()).unwrap();
    data.to_string_lossy().into_owned()
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
        (vec!["--epochs", "0"], 2, "--epochs"),
    ] {
        let mut full = vec!["--quiet", "--out", &out];
        full.extend(&args);
        let (got, stderr) = run(&full);
        assert_eq!(got, code, "{args:?}: {stderr}");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: one line, got {stderr}");
    }
    // The largest seed trains (no overflow of seed + 1 in a debug build).
    let data = tiny_mnist(dir);
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
    let good =
        [("input_shape", "1,28,28"), ("classes", "10"), ("normalize_mean", "0.1"), ("normalize_std", "0.3")];
    for (field, bad, want) in [
        ("input_shape", "1,100000,100000", "input_shape"),
        ("input_shape", "1,28", "input_shape"),
        ("classes", "10000000000", "classes"),
        ("classes", "0", "classes"),
        // Allowed sizes, but a classifier far larger than the file: refused before it is built
        // (it had reserved gigabytes, or panicked in Dense::new).
        ("input_shape", "1,4096,4096", "more than the file's"),
        ("classes", "100000", "more than the file's"),
        ("normalize_std", "0", "std > 0"),
        ("normalize_mean", "inf", "std > 0"),
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
