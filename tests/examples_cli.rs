//! The smaller examples' command lines under mistaken arguments: each is refused at once with a
//! usage message and exit code 2 (a typo had run with a default, an unknown figure had measured
//! nothing, thousands of threads had spent minutes starting). Runs the example binaries that
//! `cargo test` builds.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().join("examples").join(name)
}

/// Runs `name args`; returns (exit code, stdout, stderr) and the time it took.
fn run(name: &str, args: &[&str]) -> (i32, String, String, Duration) {
    let started = Instant::now();
    let out = Command::new(binary(name)).args(args).output().expect("the example was built by cargo test");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(!stderr.contains("panicked"), "{name} {args:?}: {stderr}");
    (out.status.code().expect("an exit code, not a signal"), stdout, stderr, started.elapsed())
}

#[test]
fn speed_refuses_what_it_cannot_measure() {
    for (args, says) in [
        (&["10000"][..], "threads \"10000\""),
        (&["0"][..], "threads \"0\""),
        (&["2", "inf"][..], "seconds \"inf\""),
        (&["1", "0.1", "mlp_latency_b1_us,lstm_trian_b100"][..], "no figure called \"lstm_trian_b100\""),
        (&["1", "0.1", "mlp_latency_b1_us", "extra"][..], "unexpected argument \"extra\""),
    ] {
        let (code, stdout, stderr, took) = run("speed", args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.contains(says) && stderr.contains("mlp_latency_b1_us, "), "{args:?}: {stderr}");
        assert!(stdout.is_empty() && took < Duration::from_secs(5), "{args:?}: measured something: {stdout}");
    }
    // A figure it knows is measured and printed, with the peak memory.
    let (code, stdout, stderr, _) = run("speed", &["1", "0.05", "mlp_latency_b1_us"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("\"mlp_latency_b1_us\": ") && stdout.contains("\"peak_rss_mib\": "), "{stdout}");
    assert!(!stdout.contains("mlp_train_b64"), "only the figure asked for: {stdout}");
}

#[test]
fn profile_layers_and_tiny_gpt_refuse_typos_and_print_help() {
    for (name, args, says) in [
        ("profile_layers", &["abc"][..], "invalid value 'abc'"),
        ("profile_layers", &["0"][..], "0 is not in 1..=4096"),
        ("profile_layers", &["64", "evl"][..], "possible values: train, eval"),
        ("tiny_gpt", &["--epochs=0"][..], "0 is not in 1..=1000"),
        ("tiny_gpt", &["--epoch", "2"][..], "unexpected argument '--epoch'"),
    ] {
        let (code, stdout, stderr, _) = run(name, args);
        assert_eq!(code, 2, "{name} {args:?}: {stderr}");
        assert!(stderr.contains(says), "{name} {args:?}: {stderr}");
        assert!(stdout.is_empty(), "{name} {args:?} ran: {stdout}");
    }
    for name in ["profile_layers", "tiny_gpt"] {
        let (code, stdout, _, _) = run(name, &["--help"]);
        assert_eq!(code, 0);
        assert!(stdout.contains(&format!("Usage: {name}")), "{stdout}");
    }
    let (code, stdout, stderr, _) = run("profile_layers", &["2", "eval"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("images/s"), "{stdout}");
}
