//! The knowledge-tracing example end to end, small: simulated students (the same results on 1 and
//! 2 threads) and both file formats.

use std::path::PathBuf;
use std::process::Command;

mod common;
use common::ScratchFile;

fn binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().join("examples").join("knowledge_tracing")
}

fn run(args: &[&str], threads: &str) -> (i32, String, String) {
    let out = Command::new(binary()).args(args).env("RAYON_NUM_THREADS", threads).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn tmp(name: &str, text: &str) -> ScratchFile {
    ScratchFile::new(name, text)
}

#[test]
fn simulated_students_give_the_same_results_on_any_number_of_threads() {
    let args = ["--epochs", "2", "--hidden", "16", "--quiet"];
    let (code, one, stderr) = run(&args, "1");
    assert_eq!(code, 0, "{stderr}");
    let (_, two, _) = run(&args, "2");
    let results = |out: &str| {
        out.lines()
            .filter(|l| l.starts_with('|') || l.starts_with("test AUC"))
            .map(String::from)
            .collect::<Vec<_>>()
    };
    assert_eq!(results(&one), results(&two), "bit-identical on 1 and 2 threads");
    for row in ["per-item marginal", "DKT", "best possible from the answers", "oracle"] {
        assert!(one.contains(row), "{row} missing:\n{one}");
    }
    let last = one.lines().last().unwrap();
    let auc: f64 = last.strip_prefix("test AUC: ").unwrap().parse().unwrap();
    assert!(auc > 0.6, "{last}");
}

#[test]
fn both_file_formats_and_their_errors() {
    // 40 students over 6 items: answers that depend on the student.
    let row = |s: usize| {
        (0..6).map(|i| if !(s + i).is_multiple_of(3) { "1" } else { "0" }).collect::<Vec<_>>().join(",")
    };
    let csv: String = (0..40).map(|s| row(s) + "\n").collect();
    let (code, out, err) =
        run(&["--data", &tmp("a.csv", &csv), "--epochs", "1", "--hidden", "8", "--quiet"], "2");
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("20 training students (120 answers, longest 6) and 20 test students")
            && out.contains("test AUC: "),
        "{out}"
    );
    let three: String = (0..30).map(|s| format!("4\n{},1,2,{}\n1,{},0,1,\n", s % 5, s % 3, s % 2)).collect();
    let (code, out, err) = run(
        &[
            "--data",
            &tmp("a.txt", &three),
            "--test",
            &tmp("b.txt", &three),
            "--epochs",
            "1",
            "--hidden",
            "8",
            "--quiet",
        ],
        "2",
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("30 training students") && out.contains("over 5 items"), "{out}");
    // The paper's three-line files are named *.csv: the format is told from the content, or given.
    let named_csv = tmp("builder_train.csv", &three);
    let (code, out, err) = run(&["--data", &named_csv, "--epochs", "1", "--hidden", "8", "--quiet"], "2");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("15 training students"), "{out}");
    let (code, _, err) = run(&["--data", &named_csv, "--format", "csv", "--epochs", "1"], "2");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("builder_train.csv") && err.contains("must be 0 or 1"), "{err}");
    let (code, _, err) = run(
        &[
            "--data",
            &tmp(
                "neither.txt",
                "a b c
d e f
",
            ),
            "--epochs",
            "1",
        ],
        "2",
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cannot tell the format") && err.contains("--format csv|lines"), "{err}");
    // An item → concept map for BKT; --batch, --val, --patience.
    let concepts = tmp("concepts.csv", "item,concept\n0,0\n1,0\n2,1\n3,1\n");
    let (code, out, err) = run(
        &[
            "--data",
            &named_csv,
            "--concepts",
            &concepts,
            "--epochs",
            "3",
            "--hidden",
            "8",
            "--batch",
            "7",
            "--val",
            "0.2",
            "--patience",
            "1",
            "--quiet",
        ],
        "2",
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("BKT (skills = concepts from --concepts"), "{out}");
    assert!(out.contains("batches of 7") && out.contains("kept the weights of epoch"), "{out}");
    let (code, _, err) = run(&["--data", &named_csv, "--concepts", &tmp("c.csv", "0,0\n0,1\n")], "2");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("item 0") && err.contains("line 2"), "{err}");
    let (code, _, err) = run(&["--data", &tmp("bad.txt", "2\n1,2\n0,x\n")], "2");
    assert_eq!(code, 1);
    assert!(err.contains("bad.txt") && err.contains("line 3"), "{err}");
}

/// A test file whose items never occur in training (BKT has an empty skill), and options out of
/// range: clean results or one-line errors, never a panic.
#[test]
fn unseen_items_and_bad_options_do_not_panic() {
    let train = tmp("train_unseen.txt", &"3\n0,1,2\n1,0,1\n".repeat(6));
    let test = tmp("test_unseen.txt", &"3\n0,5,5\n1,1,0\n3\n5,2,5\n0,1,1\n".repeat(2));
    let (code, _, stderr) =
        run(&["--data", &train, "--test", &test, "--epochs", "1", "--hidden", "4", "--quiet"], "1");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(code, 0, "{stderr}");
    // One student with 300,000 answers runs in windows (it aborted at 3.5 GB as one sequence),
    // and --window 1 is refused by the parser.
    let long: String = (0..300_000).map(|i| format!("{},", i % 7)).collect();
    let answers: String = (0..300_000).map(|i| format!("{},", (i / 3) % 2)).collect();
    let one = tmp("one_long.txt", &format!("300000\n{long}\n{answers}\n"));
    let (code, stdout, stderr) =
        run(&["--data", &one, "--test", &one, "--epochs", "1", "--hidden", "4", "--quiet"], "2");
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("windows of at most 200 answers): 1508 training"), "{stdout}");
    let (code, _, stderr) = run(&["--window", "1", "--epochs", "1"], "1");
    assert_eq!(code, 2, "{stderr}");
    // A CSV training file and a three-line test file: their item ids mean different things.
    let csv = tmp("kt_mixed.csv", &"1,0,1\n0,1,1\n".repeat(6));
    let (code, _, stderr) = run(&["--data", &csv, "--test", &one, "--epochs", "1"], "1");
    assert!(code == 1 && stderr.contains("reads as Csv") && stderr.contains("as ThreeLine"), "{stderr}");
    // A --concepts file that maps none of the items is refused (it had given every item its own
    // skill under the map's name).
    let unrelated = tmp("kt_concepts.csv", "100,0\n101,1\n");
    let (code, _, stderr) =
        run(&["--data", &one, "--test", &one, "--concepts", &unrelated, "--epochs", "1"], "1");
    assert!(code == 1 && stderr.contains("maps none of the 7 items"), "{stderr}");
    // Options that would be ignored are refused: a format without a file, a simulation with one.
    let (code, _, stderr) = run(&["--format", "csv", "--epochs", "1"], "1");
    assert!(code == 2 && stderr.contains("--data"), "{stderr}");
    let (code, _, stderr) = run(&["--data", &one, "--simulation", "narrow", "--epochs", "1"], "1");
    assert!(code == 2 && stderr.contains("cannot be used with"), "{stderr}");
    let (code, _, stderr) =
        run(&["--data", &one, "--test", &one, "--epochs", "1", "--dp-epsilon", "3", "--quiet"], "1");
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("--window"), "{stderr}");
    for bad in [
        ["--dropout", "1.5"],
        ["--dropout", "NaN"],
        ["--dp-delta", "0"],
        ["--dp-delta", "NaN"],
        ["--val", "0.9"],
        ["--dp-clip", "0"],
    ] {
        let (code, _, stderr) =
            run(&["--epochs", "1", "--hidden", "4", "--quiet", "--dp-epsilon", "3", bad[0], bad[1]], "1");
        assert_eq!(code, 1, "{bad:?}: {stderr}");
        assert!(stderr.contains(bad[0]) && !stderr.contains("panicked"), "{bad:?}: {stderr}");
    }
}

/// Students who answer everything right after their first answer: every AUC is undefined. The
/// run finishes (drawing the curves once spun forever on a panel of no finite points), says
/// "n/a" for the AUCs, and turns early stopping off instead of restoring the untrained weights.
#[test]
fn answers_all_of_one_kind_finish_with_undefined_aucs() {
    let data = tmp("all_right.txt", &"3\n0,1,2\n0,1,1\n".repeat(20));
    let (success, stdout) = run_at_most_a_minute(&["--data", &data, "--epochs", "2", "--hidden", "4"]);
    assert!(success, "{stdout}");
    assert!(stdout.contains("AUC is undefined: early stopping is off"), "{stdout}");
    assert!(stdout.contains("| DKT (LSTM, 4 hidden units)             | n/a    |"), "{stdout}");
    assert!(!stdout.contains("kept the weights of epoch"), "{stdout}");
}

/// Without validation students (`--val 0`, or fewer than 10 training students) the run says so
/// and prints no "validation AUC" (it had printed the test AUC under that name).
#[test]
fn a_run_without_validation_students_says_so() {
    let data = tmp("few.txt", &"3\n0,1,2\n0,1,1\n4\n2,1,0,1\n1,0,0,1\n".repeat(3));
    // 24 students: 12 to train (the other half to test), of which 4 % is none.
    let more = tmp("more.txt", &"3\n0,1,2\n0,1,1\n4\n2,1,0,1\n1,0,0,1\n".repeat(12));
    for (file, args, why) in [
        (&data, vec!["--val", "0"], "--val 0"),
        (&data, vec![], "fewer than 10 training students"),
        (&more, vec!["--val", "0.04"], "--val 0.04 of 12 training students rounds to none"),
    ] {
        let mut full = vec!["--data", file, "--epochs", "2", "--hidden", "4"];
        full.extend(&args);
        let (success, stdout) = run_at_most_a_minute(&full);
        assert!(success, "{args:?}: {stdout}");
        assert!(stdout.contains("note: no validation students"), "{args:?}: {stdout}");
        assert!(stdout.contains(why), "{args:?}: {stdout}");
        assert!(stdout.contains("validation AUC none"), "{args:?}: {stdout}");
        assert!(!stdout.contains("kept the weights of epoch"), "{args:?}: {stdout}");
    }
}

/// Item ids are used as they are: a 15-byte file whose ids reach 999,999 asked DKT for about
/// 5 GB and SAKT for 6 GB (and `--embed 4096` for 33 GB, a panic). Refused before anything is
/// allocated, naming the sizes and the remedy.
#[test]
fn item_ids_far_apart_are_refused_before_building_the_model() {
    let sparse = tmp("sparse_ids.txt", "2\n999999,0\n1,1\n");
    for model in ["dkt", "sakt"] {
        let (code, _, stderr) =
            run(&["--data", &sparse, "--test", &sparse, "--model", model, "--quiet"], "1");
        assert_eq!(code, 1, "{model}: {stderr}");
        assert!(
            stderr.contains("1000000 item ids (0 to 999999)") && stderr.contains("without gaps"),
            "{model}: {stderr}"
        );
    }
}

/// Runs the example on two threads, killing it (a failed test) if it has not finished in 60 s —
/// for inputs that once made it spin; returns whether it succeeded, and its output.
fn run_at_most_a_minute(args: &[&str]) -> (bool, String) {
    let mut child = Command::new(binary())
        .args(args)
        .env("RAYON_NUM_THREADS", "2")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed().as_secs() > 60 {
            child.kill().unwrap();
            panic!("the run did not finish in 60 s: {args:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A concept id is a label: BKT over 40,000 students whose items map to concept 999,999 gives
/// what it gives with the same items mapped to concept 9 — and in about the same time. (Each
/// student's answers were sorted into a table as long as the largest concept id, made and zeroed
/// per student: 48 MB each, about 75 s for these students, which the minute's guard catches.)
#[test]
fn a_large_concept_id_costs_no_more_than_a_small_one() {
    let answers: String =
        (0..40_000).map(|s| format!("{},{},1,{}\n", s % 2, (s / 2) % 2, (s / 3) % 2)).collect();
    let data = tmp("forty_thousand.csv", &answers);
    let bkt_row = |concepts: &str| {
        let map = tmp("concepts.csv", concepts);
        let (success, stdout) =
            run_at_most_a_minute(&["--data", &data, "--concepts", &map, "--epochs", "1", "--hidden", "4"]);
        assert!(success, "{stdout}");
        stdout.lines().find(|l| l.starts_with("| BKT")).map(String::from).expect("a BKT row")
    };
    assert_eq!(bkt_row("0,999999\n1,0\n2,5\n3,7\n"), bkt_row("0,9\n1,0\n2,5\n3,7\n"));
}

/// An output folder that cannot take files is refused before anything is trained (it had failed
/// only after the run, losing the trained model), naming the path.
#[test]
fn an_unwritable_output_folder_is_refused_before_training() {
    let dir = std::env::temp_dir().join(format!("kt-out-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let out = file.join("out");
    let (code, stdout, stderr) = run(&["--epochs", "50", "--out", out.to_str().unwrap()], "1");
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("a-file/out"), "{stderr}");
    assert!(!stdout.contains("epoch"), "refused before any epoch: {stdout}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// One history of `n` answers in the three-line format (items cycling over 5, answers alternating
/// in threes).
fn three_line_student(n: usize) -> String {
    let items: Vec<String> = (0..n).map(|i| (i % 5).to_string()).collect();
    let right: Vec<String> = (0..n).map(|i| ((i / 3) % 2).to_string()).collect();
    format!("{n}\n{}\n{}\n", items.join(","), right.join(","))
}

/// A batch that the model's activation budget would refuse is refused before training, naming
/// --window: SAKT's attention on one window of 20,000 answers (it had failed only when the
/// longest batch came, after training on the others), and DKT's LSTM on batches of 32 windows
/// padded to 100,000 answers.
#[test]
fn batches_over_the_activation_budget_are_refused_before_training() {
    let long = tmp("kt_one_long.txt", &three_line_student(20_000));
    let (code, stdout, stderr) =
        run(&["--data", &long, "--test", &long, "--model", "sakt", "--window", "20000", "--quiet"], "1");
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("SAKT's attention would need about 6.4 GB for a batch of 1 sequence"),
        "{stderr}"
    );
    assert!(stderr.contains("lower --window"), "{stderr}");
    assert!(!stdout.contains("epoch"), "refused before any epoch: {stdout}");
    let mixed = tmp("kt_mixed.txt", &(three_line_student(100_000) + &three_line_student(3).repeat(20)));
    let (code, stdout, stderr) =
        run(&["--data", &mixed, "--test", &long, "--window", "100000", "--val", "0", "--quiet"], "1");
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("DKT's LSTM would need about") && stderr.contains("lower --window"), "{stderr}");
    assert!(!stdout.contains("epoch"), "refused before any epoch: {stdout}");
}

/// Every sequence is padded to the longest of its set for training: a set that would need more
/// than 2 GiB that way, mostly padding, is refused, naming --window (4,000 students, one with
/// 100,000 answers).
#[test]
fn a_training_set_too_large_once_padded_is_refused() {
    let text = three_line_student(100_000) + &three_line_student(3).repeat(3_999);
    let data = tmp("kt_pad_all.txt", &text);
    let small = tmp("kt_small.txt", &three_line_student(6).repeat(4));
    let args = [
        "--data", &data, "--test", &small, "--window", "100000", "--batch", "1", "--hidden", "4", "--val",
        "0", "--quiet",
    ];
    let (code, stdout, stderr) = run(&args, "1");
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("padded to the longest (100000 answers) need") && stderr.contains("lower --window")
    );
    assert!(!stdout.contains("epoch"), "refused before any epoch: {stdout}");
}

/// Evaluation pads each batch to its own longest window: 3,000 short test students beside one of
/// 100,000 answers run in under 1.5 GB of address space (padding the whole set to its longest had
/// needed 3.6 GB).
#[cfg(target_os = "linux")]
#[test]
fn evaluation_pads_each_batch_to_its_own_longest() {
    // The long student first: the knowledge-state picture is of the first test student (a column
    // per answer had made it 1.8 million pixels wide, 1 GB); it shows the first 100 answers.
    let test =
        tmp("kt_eval_mixed.txt", &(three_line_student(100_000) + &three_line_student(3).repeat(3_000)));
    let train = tmp("kt_train_short.txt", &three_line_student(8).repeat(12));
    let out = std::env::temp_dir().join(format!("kt-eval-out-{}", std::process::id()));
    let mut args = vec!["-c".to_string(), "ulimit -v 1500000 && exec \"$0\" \"$@\"".to_string()];
    args.push(binary().to_str().unwrap().to_string());
    for a in
        ["--data", &train, "--test", &test, "--window", "100000", "--hidden", "4", "--epochs", "1", "--quiet"]
    {
        args.push(a.to_string());
    }
    args.extend(["--out".to_string(), out.to_str().unwrap().to_string()]);
    let run = Command::new("bash").args(&args).env("RAYON_NUM_THREADS", "1").output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
    assert!(run.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("| DKT (LSTM, 4 hidden units)"), "{stdout}");
    assert!(stdout.contains("after each of their first 100 answers"), "{stdout}");
    let _ = std::fs::remove_dir_all(&out);
}

/// Private training runs one student at a time, so its activation check is for one sequence: a
/// history of 8,000 answers with `--window 8000` (which the privacy rule requires) trains with
/// 200 hidden units, where a check sized for a batch of 31 (2.3 GB) had refused it and told it to
/// lower --window.
#[test]
fn private_training_checks_one_sequence_at_a_time() {
    let data = tmp("kt_dp_long.txt", &(three_line_student(8_000) + &three_line_student(6).repeat(30)));
    let args = [
        "--data",
        &data,
        "--test",
        &data,
        "--window",
        "8000",
        "--dp-epsilon",
        "8",
        "--epochs",
        "1",
        "--val",
        "0",
        "--quiet",
    ];
    let (code, stdout, stderr) = run(&args, "2");
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("privacy spent"), "{stdout}");
}
