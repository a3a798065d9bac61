//! Deep Knowledge Tracing (Piech et al., NeurIPS 2015): from a student's answers so far, predict
//! whether the next answer will be right.
//!
//! ```sh
//! cargo run --release --example knowledge_tracing                        # simulated students
//! cargo run --release --example knowledge_tracing -- --data answers.csv  # your data (format sniffed)
//! cargo run --release --example knowledge_tracing -- --data builder_train.csv --test builder_test.csv --format lines
//! ```
//!
//! The model (`model.rs`) reads, at each step, which item was answered and whether correctly (one
//! of `2·items` ids, through an `Embedding`), carries what it has learned about the student in an
//! LSTM's state, and scores the item answered next (binary cross-entropy on one logit per step).
//! A tenth of the training students is held out for validation: training stops when their AUC has
//! not improved for `--patience` epochs, and the best epoch's weights are kept. Long histories are
//! cut into windows of `--window` answers. `docs/knowledge_tracing.md` explains it all.

mod baselines;
mod model;
mod plots;
mod sakt;

use backprop::data::knowledge::{Format, Histories, SimulationOptions, read, read_concepts, simulate};
use backprop::layers::Snapshot;
use backprop::metrics::{binary_accuracy, log_loss, roc_auc};
use backprop::prelude::*;
use backprop::privacy::{DEFAULT_ORDERS, DpOptions, DpSgd, epsilon, noise_multiplier_for};
use backprop::tensor::math::sigmoid;
use backprop::train::step::Bucketed;
use clap::{Parser, ValueEnum};
use model::Dkt;
use sakt::{Net, Sakt};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Train a Deep Knowledge Tracing model (an LSTM) on students' answer histories and compare it, on
/// held-out students, with simpler predictors.
#[derive(Parser, Debug)]
#[command(name = "knowledge_tracing", allow_negative_numbers = true)]
struct Cli {
    /// Answer histories: CSV (one row per student, one 0/1 column per item) or three lines per
    /// student (count, item ids, answers) [default: 4,000 simulated students]
    #[arg(long, value_name = "FILE")]
    data: Option<PathBuf>,
    /// Held-out students in the same format [default: a seeded half of --data]
    #[arg(long, value_name = "FILE", requires = "data")]
    test: Option<PathBuf>,
    /// The files' format [default: told from the first lines, not from the file name]
    #[arg(long, value_enum, requires = "data")]
    format: Option<FileFormat>,
    /// Item → concept map (`item,concept` per line) for BKT's skills [default: the simulator's
    /// concepts; for files, each item its own skill]
    #[arg(long, value_name = "FILE")]
    concepts: Option<PathBuf>,
    /// Simulated students: `paper` fits the DKT paper's Simulated-5 files (skill spread 3, guess
    /// 0.1); `narrow` is the earlier demo (spread 1, guess 0.25).
    #[arg(long, value_enum, default_value_t = Simulation::Paper, conflicts_with = "data")]
    simulation: Simulation,
    /// Most passes over the training students (early stopping usually ends sooner).
    #[arg(long, default_value_t = 40, value_parser = clap::value_parser!(u32).range(1..=1000))]
    epochs: u32,
    /// Stop when the validation AUC has not improved for this many epochs (0: never).
    #[arg(long, default_value_t = 5)]
    patience: u32,
    /// Share of the training students held out for validation (early stopping), in [0, 0.5]; none
    /// when there are fewer than 10 training students or the share rounds to none (early stopping
    /// is then off).
    #[arg(long, default_value_t = 0.1)]
    val: f64,
    /// Sequences (students or windows) per batch.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=4096))]
    batch: u32,
    /// The model: `dkt` (an LSTM, the DKT paper's) or `sakt` (self-attention over the past answers).
    #[arg(long, value_enum, default_value_t = ModelKind::Dkt)]
    model: ModelKind,
    /// SAKT's attention heads (they must divide --embed).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    heads: u32,
    /// LSTM hidden units.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=4096))]
    hidden: u32,
    /// Values per answer vector (the embedding).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    embed: u32,
    /// Dropout between the LSTM and the output layer (DKT's regulariser), in [0, 1).
    #[arg(long, default_value_t = 0.3)]
    dropout: f32,
    /// Adam's learning rate, in (0, 1].
    #[arg(long, default_value_t = 2e-3)]
    lr: f32,
    /// The longest sequence the LSTM reads: longer histories are cut into windows of this many
    /// answers, each sharing its first answer with the end of the one before (every answer after
    /// a student's first is still predicted exactly once).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(2..=100_000))]
    window: u32,
    /// Seed for the simulation, the splits, the weights and the shuffling.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Train with differential privacy (DP-SGD) for this ε, one student's whole history being
    /// one example of the guarantee (the noise is set by the accountant for --epochs epochs).
    #[arg(long, value_name = "EPSILON")]
    dp_epsilon: Option<f64>,
    /// The δ of the private guarantee (with --dp-epsilon), in (0, 1).
    #[arg(long, default_value_t = 1e-5, requires = "dp_epsilon")]
    dp_delta: f64,
    /// The per-student clipping norm (with --dp-epsilon).
    #[arg(long, default_value_t = 1.0, requires = "dp_epsilon")]
    dp_clip: f32,
    /// Also write the training and test students (after the split) as three-line files to this
    /// folder, for running another implementation on exactly the same data.
    #[arg(long, value_name = "DIR")]
    save_data: Option<PathBuf>,
    /// Where to write curves.png and knowledge_state.png.
    #[arg(long, value_name = "DIR", default_value = "target/knowledge_tracing")]
    out: PathBuf,
    /// No per-epoch lines.
    #[arg(long)]
    quiet: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum FileFormat {
    /// One row per student, one 0/1 column per item.
    Csv,
    /// Three lines per student: count, item ids, answers.
    Lines,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Simulation {
    /// Fits the DKT paper's Simulated-5 files.
    Paper,
    /// The earlier demo's narrower students.
    Narrow,
}

/// Which model the example trains.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ModelKind {
    /// Deep knowledge tracing: an LSTM over the answers.
    Dkt,
    /// Self-attentive knowledge tracing: the next item attends to the past answers.
    Sakt,
}

/// Checks every option that clap's parser does not, before anything is read or built.
fn check(cli: &Cli) -> Result<()> {
    let bad = |m: String| Err(Error::invalid(m));
    if cli.model == ModelKind::Sakt && !cli.embed.is_multiple_of(cli.heads) {
        return bad(format!("--heads {} must divide --embed {}", cli.heads, cli.embed));
    }
    if !(0.0..1.0).contains(&cli.dropout) {
        return bad(format!("--dropout must be in [0, 1), got {}", cli.dropout));
    }
    if !(cli.lr > 0.0 && cli.lr <= 1.0) {
        return bad(format!("--lr must be in (0, 1], got {}", cli.lr));
    }
    if !(0.0..=0.5).contains(&cli.val) {
        return bad(format!("--val must be in [0, 0.5], got {}", cli.val));
    }
    if !(cli.dp_delta > 0.0 && cli.dp_delta < 1.0) {
        return bad(format!("--dp-delta must be in (0, 1), got {}", cli.dp_delta));
    }
    if let Some(e) = cli.dp_epsilon {
        if !(e.is_finite() && e > 0.0) {
            return bad(format!("--dp-epsilon must be a positive number, got {e}"));
        }
        if !(cli.dp_clip.is_finite() && cli.dp_clip > 0.0) {
            return bad(format!("--dp-clip must be a positive number, got {}", cli.dp_clip));
        }
    }
    Ok(())
}

/// The most weights the models may spend on the items (and SAKT on its positions): 2²⁶, 256 MB
/// of `f32`, which training keeps about nine times over (gradients, Adam's moments, the copies that
/// undo a refused batch, the best epoch's weights).
const MAX_ITEM_WEIGHTS: usize = 1 << 26;

/// Item ids are used as they are, so the models' tables have a row per id up to the largest: a
/// file whose ids reach 999,999 asks for a million rows however few items it holds. Refused,
/// naming the sizes, before anything is allocated.
fn check_item_weights(cli: &Cli, items: usize, window: usize) -> Result<()> {
    let (e, h) = (cli.embed as usize, cli.hidden as usize);
    let rows = items.saturating_mul(2).saturating_add(1);
    let weights = match cli.model {
        // answers' embedding, the output layer's weights and biases
        ModelKind::Dkt => rows.saturating_mul(e).saturating_add(items.saturating_mul(h + 1)),
        // answers' and items' embeddings, positions
        ModelKind::Sakt => rows.saturating_add(items).saturating_add(window).saturating_mul(e),
    };
    if weights > MAX_ITEM_WEIGHTS {
        return Err(Error::invalid(format!(
            "{items} item ids (0 to {}) need {weights} weights for the items alone ({:.1} GB, kept about nine times \
             over while training), more than the example's limit of {MAX_ITEM_WEIGHTS}: number the items 0, 1, 2, … \
             without gaps, or lower --embed{}",
            items.saturating_sub(1),
            weights as f64 * 4e-9,
            if cli.model == ModelKind::Dkt { " and --hidden" } else { " or --window" }
        )));
    }
    Ok(())
}

/// One row of the results table: the AUC of `scores` (probabilities, or logits, which rank alike
/// without f32 probabilities' ties at 1.0), the log-loss and accuracy of the probabilities `p`.
fn report(name: &str, scores: &[f32], p: &[f32], y: &[bool]) -> Result<f64> {
    // The AUC of answers all right (or all wrong) is undefined: "n/a", not a number.
    let auc = auc(scores, y)?;
    let auc_text = if auc.is_nan() { "n/a   ".to_string() } else { format!("{auc:.4}") };
    let (loss, right) = (log_loss(p, y)?, binary_accuracy(p, y)?);
    println!("| {name:<38} | {auc_text} | {loss:.4} | {:.2} % |", 100.0 * right);
    Ok(auc)
}

/// The AUC of `scores` for the answers `y`, NaN where it is undefined (answers all right, or all
/// wrong); an error for a NaN score (a diverged model), naming the metric.
fn auc(scores: &[f32], y: &[bool]) -> Result<f64> {
    Ok(roc_auc(scores, y)?.unwrap_or(f64::NAN))
}

/// Probabilities from logits.
fn sigmoids(logits: &[f32]) -> Vec<f32> {
    logits.iter().map(|&z| backprop::tensor::math::sigmoid(z)).collect()
}

/// Training and test students, and the simulator's settings when they are simulated.
fn load(cli: &Cli) -> Result<(Histories, Histories, Option<SimulationOptions>)> {
    let format = cli.format.map(|f| match f {
        FileFormat::Csv => Format::Csv,
        FileFormat::Lines => Format::ThreeLine,
    });
    Ok(match (&cli.data, &cli.test) {
        (None, _) => {
            let preset = match cli.simulation {
                Simulation::Paper => SimulationOptions::paper_like(),
                Simulation::Narrow => SimulationOptions::narrow(),
            };
            let o = SimulationOptions { seed: cli.seed, ..preset };
            println!(
                "data: {} simulated students ({:?} preset: {} items, {} concepts, skill spread {}, guess {}, practice \
                 gain {}); half train, half test",
                o.students, cli.simulation, o.items, o.concepts, o.skill_spread, o.guess, o.practice_gain
            );
            let (train, test) = simulate(&o)?.split(0.5, cli.seed)?;
            (train, test, Some(o))
        }
        (Some(path), test) => {
            // Told from the training file and held to for the test file: in a CSV file the item
            // ids are column numbers, in a three-line file the file's own ids, so the two
            // formats together would pair unrelated items (a mixed pair had been read silently).
            let format = match format {
                Some(f) => f,
                None => Format::sniff(path)?,
            };
            if let (Some(t), None) = (test, cli.format) {
                let other = Format::sniff(t)?;
                if other != format {
                    return Err(Error::invalid(format!(
                        "--data {} reads as {format:?} and --test {} as {other:?}: their item ids would not mean the \
                         same items; give both in one format (or --format to read both as one)",
                        path.display(),
                        t.display()
                    )));
                }
            }
            let all = read(path, Some(format))?;
            let (mut train, mut test) = match test {
                Some(t) => (all, read(t, Some(format))?),
                None => all.split(0.5, cli.seed)?,
            };
            let items = train.items.max(test.items);
            (train.items, test.items) = (items, items);
            println!(
                "data: {} training students ({} answers, longest {}) and {} test students ({} answers, longest {}) \
                 over {items} items from {} (skipped: {} with fewer than 2 answers)",
                train.students.len(),
                train.answers(),
                train.longest(),
                test.students.len(),
                test.answers(),
                test.longest(),
                path.display(),
                train.skipped + test.skipped
            );
            (train, test, None)
        }
    })
}

/// Each item's skill for BKT: from --concepts, else the simulator's concepts, else the item.
/// Items the map leaves out get skills of their own.
fn skills(cli: &Cli, train: &Histories) -> Result<(Vec<usize>, &'static str)> {
    let items = train.items;
    if let Some(path) = &cli.concepts {
        let map = read_concepts(path)?;
        // A map that covers none of the items (empty, or keyed on other ids) would give every
        // item its own skill under the name of the map: refused; partial coverage is said.
        let covered = (0..items).filter(|&j| map.get(j).copied().flatten().is_some()).count();
        if covered == 0 {
            return Err(Error::invalid(format!(
                "--concepts {}: maps none of the {items} items (ids 0 to {}) to a concept",
                path.display(),
                items.saturating_sub(1)
            )));
        }
        if covered < items {
            println!(
                "note: --concepts maps {covered} of the {items} items; the other {} get a skill each",
                items - covered
            );
        }
        let concepts = map.iter().flatten().max().map_or(0, |m| m + 1);
        let mut extra = concepts;
        let skill = (0..items)
            .map(|j| {
                map.get(j).copied().flatten().unwrap_or_else(|| {
                    extra += 1;
                    extra - 1
                })
            })
            .collect();
        return Ok((skill, "concepts from --concepts"));
    }
    Ok(match &train.item_concepts {
        Some(c) => (c.clone(), "the simulator's concepts"),
        None => ((0..items).collect(), "items"),
    })
}

/// Writes students as a three-line file.
fn write_three_line(h: &Histories, path: &Path) -> Result<()> {
    use std::fmt::Write;
    let mut s = String::new();
    for a in &h.students {
        let items: Vec<String> = a.items.iter().map(u32::to_string).collect();
        let answers: Vec<&str> = a.correct.iter().map(|&c| if c { "1" } else { "0" }).collect();
        writeln!(s, "{}\n{}\n{}", a.len(), items.join(","), answers.join(",")).expect("a String");
    }
    std::fs::write(path, s).map_err(|e| Error::io(path, e))
}

/// The output folder made, and shown to take files, before anything is trained: a folder that
/// cannot be written had failed only after training, losing the trained model.
fn prepare_out(out: &std::path::Path) -> Result<()> {
    if out.exists() && !out.is_dir() {
        return Err(Error::invalid(format!("--out must be a folder; {} is a file", out.display())));
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    tempfile::Builder::new().prefix(".probe-").tempfile_in(out).map_err(|e| Error::io(out, e))?;
    // The files written after training: a folder in one's place would fail only then.
    for name in ["curves.png", "knowledge_state.png"] {
        let path = out.join(name);
        if path.exists() && !path.is_file() {
            return Err(Error::invalid(format!(
                "{} is not a file, and the run writes one there: move it, or choose another --out",
                path.display()
            )));
        }
    }
    Ok(())
}

fn run(cli: &Cli) -> Result<f64> {
    let started = Instant::now();
    check(cli)?;
    prepare_out(&cli.out)?;
    let (train_all, test_full, simulation) = load(cli)?;
    if train_all.students.is_empty() || test_full.students.is_empty() {
        return Err(Error::invalid("need at least one training and one test student with 2 answers or more"));
    }
    let (skill, skill_source) = skills(cli, &train_all)?;
    // Validation students come out of the training students (whole students, not windows).
    let (train_full, val_full) = if cli.val > 0.0 && train_all.students.len() >= 10 {
        train_all.split(1.0 - cli.val, cli.seed ^ 0x5A1)?
    } else {
        (train_all.clone(), Histories::new(train_all.items))
    };
    if cli.dp_epsilon.is_some() && train_full.longest() > cli.window as usize {
        return Err(Error::invalid(format!(
            "--dp-epsilon protects each student's whole history as one example, but a training history of {} answers \
             would be cut into windows (--window {}): raise --window to at least {}",
            train_full.longest(),
            cli.window,
            train_full.longest()
        )));
    }
    if let Some(dir) = &cli.save_data {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        write_three_line(&train_full, &dir.join("train.txt"))?;
        write_three_line(&val_full, &dir.join("val.txt"))?;
        write_three_line(&test_full, &dir.join("test.txt"))?;
        println!("wrote train.txt, val.txt and test.txt to {}", dir.display());
    }
    // The sequences the LSTM reads: windows of at most --window answers. The baselines read the
    // whole histories; every predictor is scored on the same answers, in the same order.
    let w = cli.window as usize;
    let (train, val, test) = (train_full.windows(w)?, val_full.windows(w)?, test_full.windows(w)?);
    println!(
        "sequences (windows of at most {w} answers): {} training, {} validation, {} test",
        train.students.len(),
        val.students.len(),
        test.students.len()
    );
    let items = train.items;
    let hidden = cli.hidden as usize;
    check_item_weights(cli, items, w)?;
    let mut dkt = match cli.model {
        ModelKind::Dkt => {
            println!(
                "\nmodel: Embedding({}, {}, padding) → LSTM({} → {hidden}) → Dropout({}) → one logit for the next item ({} \
                 × {hidden} weights)\n",
                2 * items + 1,
                cli.embed,
                cli.embed,
                cli.dropout,
                items
            );
            Net::Dkt(Box::new(Dkt::new(items, cli.embed as usize, hidden, cli.dropout, cli.seed)))
        }
        ModelKind::Sakt => {
            let (e, h) = (cli.embed as usize, cli.heads as usize);
            println!(
                "\nmodel: SAKT — answers Embedding({}, {e}) + positions, next item Embedding({items}, {e}), causal \
                 attention ({h} heads) from the next item to the answers so far, layer norms, feed-forward {e} → {e} → \
                 {e}, dropout {}, one logit\n",
                2 * items + 1,
                cli.dropout
            );
            Net::Sakt(Box::new(Sakt::new(items, e, h, w, cli.dropout, cli.seed)))
        }
    };
    // The longest training batch and every evaluation batch against the model's activation
    // budget, now rather than midway through an epoch (the longest batch can come last). Private
    // training runs one student at a time (the per-example gradients of a model struct).
    let batch = cli.batch as usize;
    let per_pass = if cli.dp_epsilon.is_some() { 1 } else { batch.min(train.students.len()) };
    let hint = if cli.dp_epsilon.is_some() { "" } else { " (or --batch)" };
    dkt.check_batch(per_pass, train.longest().saturating_sub(1).max(1), hint)?;
    for set in [&val, &test] {
        let lengths: Vec<usize> = set.students.iter().map(|a| a.len()).collect();
        for range in model::evaluation_batches(&lengths) {
            let steps = lengths[range.clone()].iter().max().map_or(1, |l| l.saturating_sub(1).max(1));
            dkt.check_batch(range.len(), steps, "")?;
        }
    }
    let data = model::data(&train)?;
    let loss = BceWithLogitsLoss::new().ignore_nan_targets();
    let mut adam = Adam::new(cli.lr);
    let stopping = match val.students.is_empty() {
        true => "no early stopping (no validation students)".to_string(),
        false => format!("early stopping on validation AUC (patience {})", cli.patience),
    };
    println!(
        "training: at most {} epochs, batches of {batch} sequences of similar length, Adam (lr {}), gradient clipping \
         at norm 1, {stopping}",
        cli.epochs, cli.lr
    );
    // Private training: one example = one student; batches of `batch` students on average.
    let mut private = match cli.dp_epsilon {
        None => None,
        Some(target) => {
            let q = (batch as f64 / train.students.len() as f64).min(1.0);
            let steps = (1.0 / q).round().max(1.0) as u64 * cli.epochs as u64;
            let sigma = noise_multiplier_for(target, q, steps, cli.dp_delta)?;
            println!(
                "differential privacy per student: (ε = {target}, δ = {}), σ = {sigma:.4}, clipping norm {}",
                cli.dp_delta, cli.dp_clip
            );
            let o = DpOptions {
                epochs: 1,
                sample_rate: q,
                clip: cli.dp_clip,
                noise_multiplier: sigma,
                delta: cli.dp_delta,
                seed: cli.seed,
            };
            Some((DpSgd::new(&o, data.len())?, o))
        }
    };
    let mut bucketed = Bucketed::by_lengths_of("answers");
    let (mut curve, mut best) = (Vec::new(), (f64::NEG_INFINITY, 0u32, Snapshot::of(&dkt)));
    let mut epochs_run = 0;
    // Early stopping on the validation AUC, unless there is no validation set or its AUC is
    // undefined (all its answers right, or all wrong).
    let mut early_stopping = !val.students.is_empty();
    if val.students.is_empty() {
        let why = if cli.val == 0.0 {
            "--val 0".to_string()
        } else if train_all.students.len() < 10 {
            format!("fewer than 10 training students: --val {} is not taken", cli.val)
        } else {
            format!("--val {} of {} training students rounds to none", cli.val, train_all.students.len())
        };
        println!(
            "note: no validation students ({why}): early stopping is off and the last epoch's weights are kept"
        );
    }
    for epoch in 1..=cli.epochs {
        let t0 = Instant::now();
        let options = FitOptions::new().epochs(1).batch_size(batch).seed(cli.seed.wrapping_add(epoch as u64));
        let options = match private.as_mut() {
            None => options.clip_grad_norm(1.0).step(&mut bucketed),
            Some((dp, _)) => options.step(dp),
        };
        let history = backprop::train::fit(&mut dkt, &data, &loss, &mut adam, options.verbose(false))?;
        let train_loss = history.epochs.last().map_or(f32::NAN, |e| e.train_loss);
        let seconds = t0.elapsed().as_secs_f32();
        epochs_run = epoch;
        let (logits, y) = model::predictions(&mut dkt, &test)?;
        let test_auc = auc(&logits, &y)?;
        let val_auc = match val.students.is_empty() {
            true => f64::NAN, // no validation to stop on (see above)
            false => {
                let (logits, y) = model::predictions(&mut dkt, &val)?;
                auc(&logits, &y)?
            }
        };
        if early_stopping && val_auc.is_nan() {
            println!(
                "note: the validation students' answers are all right or all wrong, so their AUC is undefined: early \
                 stopping is off and the last epoch's weights are kept"
            );
            early_stopping = false;
        }
        // Under --dp-epsilon the training students' loss is computed without noise: outside ε,
        // so it is neither printed nor plotted (as the digits walkthrough's private run does).
        let private_run = cli.dp_epsilon.is_some();
        curve.push((if private_run { f32::NAN } else { train_loss }, test_auc));
        if !cli.quiet {
            let val_text = if val.students.is_empty() { "none".to_string() } else { format!("{val_auc:.4}") };
            let loss_text =
                if private_run { "not shown (private)".to_string() } else { format!("{train_loss:.4}") };
            println!(
                "epoch {epoch}/{}: train loss {loss_text} | validation AUC {val_text} | test AUC {test_auc:.4} | \
                 {seconds:.2} s",
                cli.epochs
            );
        }
        if !early_stopping {
            best = (val_auc, epoch, Snapshot::default());
            continue;
        }
        if val_auc > best.0 {
            best = (val_auc, epoch, Snapshot::of(&dkt));
        } else if cli.patience > 0 && epoch - best.1 >= cli.patience {
            println!("early stop: no better validation AUC for {} epochs", cli.patience);
            break;
        }
    }
    if early_stopping {
        best.2.restore(&mut dkt);
        println!("kept the weights of epoch {} (validation AUC {:.4}) of {epochs_run}", best.1, best.0);
    }

    if let Some((_, o)) = &private {
        let steps = (1.0 / o.sample_rate).round().max(1.0) as u64 * epochs_run as u64;
        let spent = epsilon(o.sample_rate, o.noise_multiplier, steps, o.delta, &DEFAULT_ORDERS).0;
        println!("privacy spent: ε = {spent:.3} at δ = {} per student", o.delta);
    }
    println!(
        "\nresults on {} held-out students ({} answers predicted):\n",
        test_full.students.len(),
        test_full.answers() - test_full.students.len()
    );
    println!("| {:<38} | AUC    | log-loss | accuracy |", "predictor");
    println!("|{}|--------|----------|----------|", "-".repeat(40));
    let (logits, y) = model::predictions(&mut dkt, &test)?;
    // Under --dp-epsilon the baselines are still fitted on the training students without noise:
    // comparisons for whoever holds the data, outside ε — said in their names.
    let not_private = if cli.dp_epsilon.is_some() { " [not private]" } else { "" };
    let marginal = baselines::marginal(&train_all, &test_full);
    report(&format!("per-item marginal (training mean){not_private}"), &marginal, &marginal, &y)?;
    let bkt = baselines::bkt(&train_all, &test_full, &skill);
    report(&format!("BKT (skills = {skill_source}, EM){not_private}"), &bkt, &bkt, &y)?;
    let name = match cli.model {
        ModelKind::Dkt => format!("DKT (LSTM, {hidden} hidden units)"),
        ModelKind::Sakt => format!("SAKT (attention, {} heads of {})", cli.heads, cli.embed / cli.heads),
    };
    let dkt_auc = report(&name, &logits, &sigmoids(&logits), &y)?;
    if let (Some(truth), Some(o)) = (&test_full.true_probabilities, &simulation) {
        if let Some(best) = baselines::bayes_optimal(&test_full, o) {
            report("best possible from the answers (Bayes)", &best, &best, &y)?;
        }
        let oracle: Vec<f32> = truth.iter().flat_map(|s| s[1..].to_vec()).collect();
        report("oracle (the simulator's probabilities)", &oracle, &oracle, &y)?;
    }
    std::fs::create_dir_all(&cli.out).map_err(|e| Error::io(&cli.out, e))?;
    let curves = cli.out.join("curves.png");
    plots::curves(&curve, &curves)?;
    let state = cli.out.join("knowledge_state.png");
    knowledge_state(&mut dkt, &test, &state)?;
    let shown = if cli.dp_epsilon.is_some() {
        "test AUC per epoch; the training loss is not shown under --dp-epsilon"
    } else {
        "training loss and test AUC per epoch"
    };
    println!("\nwrote {} ({shown})", curves.display());
    println!(
        "wrote {} (the first test student's predicted knowledge after each of their first {PICTURED_ANSWERS} \
         answers)",
        state.display()
    );
    println!("total time: {:.1} s", started.elapsed().as_secs_f32());
    Ok(dkt_auc)
}

/// The most answers the knowledge-state picture shows (one column each): a window of 100,000
/// answers had asked for a picture 1.8 million pixels wide.
const PICTURED_ANSWERS: usize = 100;

/// The heatmap of the first test student's first [`PICTURED_ANSWERS`] answers: rows are the
/// simulator's concepts (mean over their items) or, for data from a file, the first 12 distinct
/// items the student answered.
fn knowledge_state(model: &mut Net, test: &Histories, path: &Path) -> Result<()> {
    let mut student = test.subset(&[0]);
    // (One answer more: the knowledge after each of the first PICTURED_ANSWERS answers is what
    // the model predicts for the answer after it.)
    student.students[0].items.truncate(PICTURED_ANSWERS + 1);
    student.students[0].correct.truncate(PICTURED_ANSWERS + 1);
    let a = &student.students[0];
    let inputs = model::data(&student)?;
    let items = test.items;
    let (names, groups): (Vec<String>, Vec<Vec<usize>>) = match &test.item_concepts {
        Some(concepts) => {
            let k = concepts.iter().max().map_or(0, |m| m + 1);
            (0..k)
                .map(|c| (format!("concept {c}"), (0..items).filter(|&j| concepts[j] == c).collect()))
                .unzip()
        }
        None => {
            let mut seen = Vec::new();
            for i in a.items.iter().map(|&i| i as usize) {
                if !seen.contains(&i) && seen.len() < 12 {
                    seen.push(i);
                }
            }
            seen.iter().map(|&i| (format!("item {i}"), vec![i])).unzip()
        }
    };
    // Only the items the picture shows (not every id up to the largest, which may be a million).
    let mut wanted: Vec<usize> = groups.iter().flatten().copied().collect();
    wanted.sort_unstable();
    wanted.dedup();
    let logits = model.logits_of(inputs.named_inputs().get("answers")?, &wanted)?;
    let column = |item: usize| wanted.binary_search(&item).expect("a shown item");
    let row_of = |item: usize| groups.iter().position(|g| g.contains(&item));
    let shown = a.len() - 1;
    let state: Vec<Vec<f32>> = groups
        .iter()
        .map(|g| {
            (0..shown)
                .map(|t| {
                    g.iter().map(|&j| sigmoid(logits.data()[t * wanted.len() + column(j)])).sum::<f32>()
                        / g.len() as f32
                })
                .collect()
        })
        .collect();
    let answers: Vec<(usize, usize, bool)> =
        (0..shown).filter_map(|t| row_of(a.items[t] as usize).map(|r| (t, r, a.correct[t]))).collect();
    plots::heatmap(&names, &state, &answers, path)
}

fn main() {
    backprop::alloc_tuning::tune_allocator();
    let cli = Cli::parse();
    match run(&cli) {
        Ok(auc) => println!("test AUC: {auc:.4}"),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
