//! Deep Knowledge Tracing (Piech et al., NeurIPS 2015): from a student's answers so far, predict
//! whether the next answer will be right.
//!
//! ```sh
//! cargo run --release --example knowledge_tracing                       # simulated students
//! cargo run --release --example knowledge_tracing -- --data answers.csv # a CSV, one row per student
//! cargo run --release --example knowledge_tracing -- --data train.txt --test test.txt  # three-line format
//! ```
//!
//! The model reads, at each step, which item was answered and whether correctly (one of `2·items`
//! ids, through an `Embedding`), carries what it has learned about the student in an LSTM's state,
//! and outputs one logit per item: the chance that the *next* answer, to whichever item it is,
//! will be right. Only the logit of the item actually answered next is scored (binary
//! cross-entropy; the others are NaN targets, ignored). `docs/knowledge_tracing.md` explains it.

mod plots;

use backprop::data::knowledge::{Histories, SimulationOptions, read_csv, read_three_line, simulate};
use backprop::metrics::{binary_accuracy, log_loss, roc_auc};
use backprop::prelude::*;
use backprop::privacy::{DEFAULT_ORDERS, DpOptions, epsilon, fit_private, noise_multiplier_for};
use backprop::tensor::math::sigmoid;
use clap::Parser;
use std::path::PathBuf;
use std::time::Instant;

/// Train a Deep Knowledge Tracing model (an LSTM) on students' answer histories and compare it, on
/// held-out students, with simpler predictors.
#[derive(Parser, Debug)]
#[command(name = "knowledge_tracing")]
struct Cli {
    /// Answer histories: a .csv (one row per student, one 0/1 column per item) or the
    /// three-lines-per-student format [default: 4,000 simulated students]
    #[arg(long, value_name = "FILE")]
    data: Option<PathBuf>,
    /// Held-out students in the same format [default: a seeded half of --data]
    #[arg(long, value_name = "FILE", requires = "data")]
    test: Option<PathBuf>,
    /// Passes over the training students.
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u32).range(1..=1000))]
    epochs: u32,
    /// LSTM hidden units.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=4096))]
    hidden: u32,
    /// Dropout between the LSTM and the output layer (DKT's regulariser).
    #[arg(long, default_value_t = 0.5)]
    dropout: f32,
    /// Adam's learning rate.
    #[arg(long, default_value_t = 3e-3)]
    lr: f32,
    /// The longest sequence the LSTM reads: longer histories are cut into windows of this many
    /// answers, each sharing its first answer with the end of the one before (every answer after
    /// a student's first is still predicted exactly once).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(2..=100_000))]
    window: u32,
    /// Seed for the simulation, the split, the weights and the shuffling.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Train with differential privacy (DP-SGD) for this ε, one student's whole history being
    /// one example of the guarantee (the noise is set by the accountant for the planned epochs).
    #[arg(long, value_name = "EPSILON")]
    dp_epsilon: Option<f64>,
    /// The δ of the private guarantee (with --dp-epsilon).
    #[arg(long, default_value_t = 1e-5, requires = "dp_epsilon")]
    dp_delta: f64,
    /// The per-student clipping norm (with --dp-epsilon).
    #[arg(long, default_value_t = 1.0, requires = "dp_epsilon")]
    dp_clip: f32,
    /// Where to write curves.png and knowledge_state.png.
    #[arg(long, value_name = "DIR", default_value = "target/knowledge_tracing")]
    out: PathBuf,
    /// No per-epoch lines.
    #[arg(long)]
    quiet: bool,
}

/// Model inputs and targets for a set of students: ids `[N, T]` (`item + items·correct` of answer
/// `t`) and targets `[N, T, items]`, NaN except at the item answered at `t + 1`.
fn tensors(h: &Histories, steps: usize) -> (Tensor, Tensor) {
    let (n, items) = (h.students.len(), h.items);
    let mut ids = Tensor::zeros(&[n, steps]);
    let mut targets = Tensor::full(&[n, steps, items], f32::NAN);
    for (s, a) in h.students.iter().enumerate() {
        for t in 0..(a.len() - 1).min(steps) {
            ids.data_mut()[s * steps + t] =
                ((a.items[t] as usize) + items * usize::from(a.correct[t])) as f32;
            targets.data_mut()[(s * steps + t) * items + (a.items[t + 1] as usize)] =
                f32::from(u8::from(a.correct[t + 1]));
        }
    }
    (ids, targets)
}

/// The model's probability for every answer after the first, with the answers themselves.
fn predictions(model: &mut Sequential, h: &Histories, steps: usize) -> (Vec<f32>, Vec<bool>) {
    let (ids, _) = tensors(h, steps);
    let logits = model.predict(&ids, 256).expect("the ids fit the model");
    let items = h.items;
    let (mut p, mut y) = (Vec::new(), Vec::new());
    for (s, a) in h.students.iter().enumerate() {
        for t in 0..(a.len() - 1).min(steps) {
            p.push(sigmoid(logits.data()[(s * steps + t) * items + (a.items[t + 1] as usize)]));
            y.push(a.correct[t + 1]);
        }
    }
    (p, y)
}

/// Per-item share of right answers in the training set (a student-independent baseline).
fn marginal(train: &Histories, test: &Histories) -> Vec<f32> {
    let (mut right, mut seen) = (vec![1.0f64; train.items], vec![2.0f64; train.items]); // a light prior: ½
    for a in &train.students {
        for (i, &c) in a.items.iter().map(|&i| i as usize).zip(&a.correct) {
            right[i] += f64::from(u8::from(c));
            seen[i] += 1.0;
        }
    }
    test.students
        .iter()
        .flat_map(|a| (1..a.len()).map(|t| (right[a.items[t] as usize] / seen[a.items[t] as usize]) as f32))
        .collect()
}

/// The best prediction possible from the answers alone, for simulated students: knowing the
/// simulator (each item's concept and difficulty, the guess rate, the practice gain), keep a
/// posterior over each concept's ability on a grid, start from the N(0, 1) prior, predict each
/// answer by averaging `c + (1 − c)·σ(α − β)` over it, then update it with Bayes' rule. The
/// oracle knows the abilities themselves; no model can, so this is the ceiling for DKT.
fn bayes_optimal(test: &Histories, o: &SimulationOptions) -> Option<Vec<f32>> {
    let (concepts, difficulty) = (test.item_concepts.as_ref()?, test.item_difficulties.as_ref()?);
    let grid: Vec<f64> = (0..=160).map(|i| -4.0 + 0.05 * i as f64).collect();
    let prior: Vec<f64> = grid.iter().map(|a| (-a * a / 2.0).exp()).collect();
    let c = o.guess as f64;
    let mut out = Vec::new();
    for a in &test.students {
        let mut posterior = vec![prior.clone(); o.concepts];
        let mut practice = vec![0.0f64; o.concepts];
        for (t, (j, &right)) in a.items.iter().map(|&j| j as usize).zip(&a.correct).enumerate() {
            let k = concepts[j];
            let p_at: Vec<f64> = grid
                .iter()
                .map(|&alpha| c + (1.0 - c) / (1.0 + (difficulty[j] as f64 - alpha - practice[k]).exp()))
                .collect();
            let total: f64 = posterior[k].iter().sum();
            if t > 0 {
                out.push((posterior[k].iter().zip(&p_at).map(|(w, p)| w * p).sum::<f64>() / total) as f32);
            }
            for (w, p) in posterior[k].iter_mut().zip(&p_at) {
                *w *= if right { *p } else { 1.0 - p }; // Bayes' rule
            }
            practice[k] += o.practice_gain as f64;
        }
    }
    Some(out)
}

/// Bayesian Knowledge Tracing (Corbett & Anderson 1995): per skill, a hidden state "knows it" or
/// not, with four parameters — `L0` (knows it at the start), `T` (learns it at an answer), `G`
/// (right by a guess), `S` (wrong by a slip) — fitted by expectation–maximisation (Baum–Welch) on
/// the training students' answers, skill by skill.
#[derive(Clone, Copy, Debug)]
struct Bkt {
    l0: f64,
    learn: f64,
    guess: f64,
    slip: f64,
}

impl Bkt {
    /// P(answer right | P(knows) = l).
    fn p_right(&self, l: f64) -> f64 {
        l * (1.0 - self.slip) + (1.0 - l) * self.guess
    }

    /// P(knows) after seeing an answer, then after the chance to learn from it.
    fn update(&self, l: f64, right: bool) -> f64 {
        let (known, unknown) = if right {
            (l * (1.0 - self.slip), (1.0 - l) * self.guess)
        } else {
            (l * self.slip, (1.0 - l) * (1.0 - self.guess))
        };
        let posterior = known / (known + unknown);
        posterior + (1.0 - posterior) * self.learn
    }

    /// Fits the parameters to sequences of answers on one skill (20 EM iterations). A skill with
    /// no answers in training keeps the starting parameters (there is nothing to fit; EM's
    /// updates would divide 0 by 0).
    fn fit(sequences: &[Vec<bool>]) -> Bkt {
        let mut m = Bkt { l0: 0.5, learn: 0.1, guess: 0.2, slip: 0.1 };
        if sequences.iter().all(|s| s.is_empty()) {
            return m;
        }
        for _ in 0..20 {
            let (mut l0, mut learn_num, mut learn_den) = (0.0, 0.0, 0.0);
            let (mut guess_num, mut guess_den, mut slip_num, mut slip_den, mut n) = (0.0, 0.0, 0.0, 0.0, 0.0);
            for seq in sequences.iter().filter(|s| !s.is_empty()) {
                // Emission probabilities e[t] = (P(o_t | unknown), P(o_t | known)).
                let e: Vec<(f64, f64)> = seq
                    .iter()
                    .map(|&o| if o { (m.guess, 1.0 - m.slip) } else { (1.0 - m.guess, m.slip) })
                    .collect();
                // Forward, normalised at every step.
                let mut alpha = vec![(0.0, 0.0); seq.len()];
                let mut a = ((1.0 - m.l0) * e[0].0, m.l0 * e[0].1);
                for t in 0..seq.len() {
                    if t > 0 {
                        let (u, k) = alpha[t - 1];
                        a = (u * (1.0 - m.learn) * e[t].0, (u * m.learn + k) * e[t].1);
                    }
                    let z = a.0 + a.1;
                    alpha[t] = (a.0 / z, a.1 / z);
                }
                // Backward, normalised likewise; posteriors γ and transitions ξ(unknown → known).
                let mut beta = (1.0, 1.0);
                for t in (0..seq.len()).rev() {
                    let g = (alpha[t].0 * beta.0, alpha[t].1 * beta.1);
                    let z = g.0 + g.1;
                    let (gu, gk) = (g.0 / z, g.1 / z);
                    if t == 0 {
                        l0 += gk;
                    }
                    if seq[t] {
                        guess_num += gu
                    } else {
                        slip_num += gk
                    }
                    (guess_den, slip_den) = (guess_den + gu, slip_den + gk);
                    if t > 0 {
                        let (u, k) = alpha[t - 1];
                        let xi = u * m.learn * e[t].1 * beta.1; // unknown at t−1, known at t
                        let all = u * ((1.0 - m.learn) * e[t].0 * beta.0 + m.learn * e[t].1 * beta.1)
                            + k * e[t].1 * beta.1;
                        learn_num += xi / all;
                        learn_den +=
                            u * ((1.0 - m.learn) * e[t].0 * beta.0 + m.learn * e[t].1 * beta.1) / all;
                        let b =
                            ((1.0 - m.learn) * e[t].0 * beta.0 + m.learn * e[t].1 * beta.1, e[t].1 * beta.1);
                        let zb = b.0 + b.1;
                        beta = (b.0 / zb, b.1 / zb);
                    }
                }
                n += 1.0;
            }
            // Guess and slip below ½, so that "known" keeps meaning known.
            m = Bkt {
                l0: (l0 / n).clamp(1e-4, 1.0 - 1e-4),
                learn: (learn_num / learn_den.max(1e-12)).clamp(1e-4, 1.0 - 1e-4),
                guess: (guess_num / guess_den.max(1e-12)).clamp(1e-4, 0.5),
                slip: (slip_num / slip_den.max(1e-12)).clamp(1e-4, 0.5),
            };
        }
        m
    }
}

/// BKT's predictions for every answer after the first; skills are the simulator's concepts, or the
/// item ids for data from a file.
fn bkt(train: &Histories, test: &Histories) -> Vec<f32> {
    let skill_of = |item: usize| train.item_concepts.as_ref().map_or(item, |c| c[item]);
    let skills = (0..train.items).map(skill_of).max().map_or(0, |m| m + 1);
    let mut per_skill: Vec<Vec<Vec<bool>>> = vec![Vec::new(); skills];
    for a in &train.students {
        let mut seqs = vec![Vec::new(); skills];
        for (i, &c) in a.items.iter().map(|&i| i as usize).zip(&a.correct) {
            seqs[skill_of(i)].push(c);
        }
        for (k, seq) in seqs.into_iter().enumerate().filter(|(_, s)| !s.is_empty()) {
            per_skill[k].push(seq);
        }
    }
    let models: Vec<Bkt> = per_skill.iter().map(|s| Bkt::fit(s)).collect();
    let mut out = Vec::new();
    for a in &test.students {
        let mut known: Vec<f64> = models.iter().map(|m| m.l0).collect();
        for (t, (i, &c)) in a.items.iter().map(|&i| i as usize).zip(&a.correct).enumerate() {
            let k = skill_of(i.min(train.items.saturating_sub(1)));
            if t > 0 {
                out.push(models[k].p_right(known[k]) as f32);
            }
            known[k] = models[k].update(known[k], c);
        }
    }
    out
}

fn report(name: &str, p: &[f32], y: &[bool]) -> f64 {
    let auc = roc_auc(p, y).unwrap_or(f64::NAN);
    println!("| {name:<38} | {auc:.4} | {:.4} | {:.2} % |", log_loss(p, y), 100.0 * binary_accuracy(p, y));
    auc
}

fn run(cli: &Cli) -> Result<f64> {
    let started = Instant::now();
    let simulation = SimulationOptions { seed: cli.seed, ..SimulationOptions::default() };
    let (train, test) = match (&cli.data, &cli.test) {
        (None, _) => {
            let o = simulation.clone();
            println!(
                "data: {} simulated students, {} items, {} concepts, guess {}, practice gain {}; half train, half test",
                o.students, o.items, o.concepts, o.guess, o.practice_gain
            );
            simulate(&o)?.split(0.5, cli.seed)
        }
        (Some(path), test) => {
            let read = |p: &PathBuf| {
                if p.extension().is_some_and(|e| e == "csv") { read_csv(p) } else { read_three_line(p) }
            };
            let all = read(path)?;
            let (mut train, mut test) = match test {
                Some(t) => (all, read(t)?),
                None => all.split(0.5, cli.seed),
            };
            let items = train.items.max(test.items);
            (train.items, test.items) = (items, items);
            println!(
                "data: {} training and {} test students over {items} items from {} (skipped: {} with fewer than 2 answers)",
                train.students.len(),
                test.students.len(),
                path.display(),
                train.skipped + test.skipped
            );
            (train, test)
        }
    };
    if train.students.is_empty() || test.students.is_empty() {
        return Err(Error::invalid("need at least one training and one test student with 2 answers or more"));
    }
    if !(0.0..1.0).contains(&cli.dropout) {
        return Err(Error::invalid(format!("--dropout must be in [0, 1), got {}", cli.dropout)));
    }
    if !(cli.lr > 0.0 && cli.lr <= 1.0) {
        return Err(Error::invalid(format!("--lr must be in (0, 1], got {}", cli.lr)));
    }
    if !(cli.dp_delta > 0.0 && cli.dp_delta < 1.0) {
        return Err(Error::invalid(format!("--dp-delta must be in (0, 1), got {}", cli.dp_delta)));
    }
    if cli.dp_epsilon.is_some() && train.longest() > cli.window as usize {
        return Err(Error::invalid(format!(
            "--dp-epsilon protects each student's whole history as one example, but a training history of {} answers \
             would be cut into windows (--window {}): raise --window to at least {}",
            train.longest(),
            cli.window,
            train.longest()
        )));
    }
    // The sequences the LSTM reads: windows of at most --window answers. The baselines below read
    // the whole histories; all predictors are scored on the same answers, in the same order.
    let (train_full, test_full) = (train, test);
    let (train, test) = (train_full.windows(cli.window as usize)?, test_full.windows(cli.window as usize)?);
    if test.students.len() > test_full.students.len() || train.students.len() > train_full.students.len() {
        println!(
            "windows of at most {} answers: {} training and {} test sequences",
            cli.window,
            train.students.len(),
            test.students.len()
        );
    }
    let steps = train.longest().max(test.longest()) - 1;
    let items = train.items;
    let hidden = cli.hidden as usize;
    let mut model = Sequential::builder(&[steps])
        .add(Embedding::new(2 * items, 64))
        .add(Lstm::new(64, hidden))
        .add(Dropout::new(cli.dropout))
        .add(Dense::new(hidden, items))
        .seed(cli.seed)
        .build()?;
    println!("\n{model}\n");
    let (ids, targets) = tensors(&train, steps);
    let data = Dataset::regression(ids, targets)?;
    let loss = BceWithLogitsLoss::new().ignore_nan_targets();
    let mut adam = Adam::new(cli.lr);
    println!(
        "training: {} epochs, batches of 32 students, Adam (lr {}), gradient clipping at norm 1",
        cli.epochs, cli.lr
    );
    // Private training: one example = one student; batches of 32 students on average.
    let private = match cli.dp_epsilon {
        None => None,
        Some(target) => {
            let q = (32.0 / train.students.len() as f64).min(1.0);
            let steps = (1.0 / q).round().max(1.0) as u64 * cli.epochs as u64;
            let sigma = noise_multiplier_for(target, q, steps, cli.dp_delta)?;
            println!(
                "differential privacy per student: (ε = {target}, δ = {}), σ = {sigma:.4}, clipping norm {}",
                cli.dp_delta, cli.dp_clip
            );
            Some(DpOptions {
                epochs: 1,
                sample_rate: q,
                clip: cli.dp_clip,
                noise_multiplier: sigma,
                delta: cli.dp_delta,
                seed: cli.seed,
            })
        }
    };
    let mut curve = Vec::new();
    for epoch in 1..=cli.epochs {
        let t0 = Instant::now();
        let train_loss = match &private {
            None => {
                let options = FitOptions::new()
                    .epochs(1)
                    .batch_size(32)
                    .seed(cli.seed.wrapping_add(epoch as u64))
                    .clip_grad_norm(1.0);
                model
                    .fit(&data, &loss, &mut adam, options.verbose(false))?
                    .last()
                    .map_or(f32::NAN, |e| e.train_loss)
            }
            Some(o) => {
                let o = DpOptions { seed: o.seed.wrapping_add(epoch as u64), ..o.clone() };
                fit_private(&mut model, &data, &loss, &mut adam, &o)?.epoch_losses[0]
            }
        };
        let (p, y) = predictions(&mut model, &test, steps);
        curve.push((train_loss, roc_auc(&p, &y).unwrap_or(f64::NAN)));
        if !cli.quiet {
            println!(
                "epoch {epoch}/{}: train loss {:.4} | test AUC {:.4} | {:.1} s",
                cli.epochs,
                train_loss,
                roc_auc(&p, &y).unwrap_or(f64::NAN),
                t0.elapsed().as_secs_f32()
            );
        }
    }

    if let Some(o) = &private {
        let steps = (1.0 / o.sample_rate).round().max(1.0) as u64 * cli.epochs as u64;
        let spent = epsilon(o.sample_rate, o.noise_multiplier, steps, o.delta, &DEFAULT_ORDERS).0;
        println!("privacy spent: ε = {spent:.3} at δ = {} per student", o.delta);
    }
    println!("\nresults on {} held-out students:\n", test_full.students.len());
    println!("| {:<38} | AUC    | log-loss | accuracy |", "predictor");
    println!("|{}|--------|----------|----------|", "-".repeat(40));
    let (p, y) = predictions(&mut model, &test, steps);
    report("per-item marginal (training mean)", &marginal(&train_full, &test_full), &y);
    let skills = if train.item_concepts.is_some() { "concepts" } else { "items" };
    report(&format!("BKT (skills = the {skills}, EM)"), &bkt(&train_full, &test_full), &y);
    let dkt = report(&format!("DKT (LSTM, {hidden} hidden units)"), &p, &y);
    if let Some(truth) = &test_full.true_probabilities {
        if let Some(best) = bayes_optimal(&test_full, &simulation) {
            report("best possible from the answers (Bayes)", &best, &y);
        }
        let oracle: Vec<f32> = truth.iter().flat_map(|s| s[1..].to_vec()).collect();
        report("oracle (the simulator's probabilities)", &oracle, &y);
    }
    std::fs::create_dir_all(&cli.out).map_err(|e| Error::io(&cli.out, e))?;
    let curves = cli.out.join("curves.png");
    plots::curves(&curve, &curves)?;
    let state = cli.out.join("knowledge_state.png");
    knowledge_state(&mut model, &test, steps, &state)?;
    println!("\nwrote {} (training loss and test AUC per epoch)", curves.display());
    println!("wrote {} (the first test student's predicted knowledge after each answer)", state.display());
    println!("total time: {:.1} s", started.elapsed().as_secs_f32());
    Ok(dkt)
}

/// The heatmap of the first test student: rows are the simulator's concepts (mean over their items)
/// or, for data from a file, the first 12 distinct items the student answered.
fn knowledge_state(
    model: &mut Sequential,
    test: &Histories,
    steps: usize,
    path: &std::path::Path,
) -> Result<()> {
    let student = test.subset(&[0]);
    let a = &student.students[0];
    let (ids, _) = tensors(&student, steps);
    let logits = model.predict(&ids, 1)?;
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
    let row_of = |item: usize| groups.iter().position(|g| g.contains(&item));
    let shown = (a.len() - 1).min(steps);
    let state: Vec<Vec<f32>> = groups
        .iter()
        .map(|g| {
            (0..shown)
                .map(|t| {
                    g.iter().map(|&j| sigmoid(logits.data()[t * items + j])).sum::<f32>() / g.len() as f32
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
