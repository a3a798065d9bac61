//! The predictors DKT is compared with: the per-item marginal, Bayesian Knowledge Tracing, and
//! (for simulated students) the best prediction possible from the answers.

use backprop::data::knowledge::{Histories, SimulationOptions};

/// Per-item share of right answers in the training set (a student-independent baseline).
pub fn marginal(train: &Histories, test: &Histories) -> Vec<f32> {
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
/// posterior over each concept's ability on a grid, start from the N(0, s²) prior, predict each
/// answer by averaging `c + (1 − c)·σ(α − β)` over it, then update it with Bayes' rule. The
/// oracle knows the abilities themselves; no model can, so this is the ceiling for DKT.
pub fn bayes_optimal(test: &Histories, o: &SimulationOptions) -> Option<Vec<f32>> {
    let (concepts, difficulty) = (test.item_concepts.as_ref()?, test.item_difficulties.as_ref()?);
    let spread = o.skill_spread.max(1e-3) as f64; // the prior N(0, s²), on a grid of ±4s
    let grid: Vec<f64> = (0..=160).map(|i| spread * (-4.0 + 0.05 * i as f64)).collect();
    let prior: Vec<f64> = grid.iter().map(|a| (-(a / spread).powi(2) / 2.0).exp()).collect();
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

/// BKT's predictions for every answer after the first. `skill[item]` gives each item's skill
/// (the simulator's concepts, a `--concepts` file, or each item its own skill); a skill without
/// training answers keeps BKT's starting parameters (its prior).
pub fn bkt(train: &Histories, test: &Histories, skill: &[usize]) -> Vec<f32> {
    let skills = skill.iter().max().map_or(0, |m| m + 1);
    // Each student's answers, skill by skill: buffers the size of the skill table, made once, of
    // which each student resets only the skills it touched (a concept id of 999,999 had cost a
    // 48 MB table per student: seconds per thousand students).
    let mut per_skill: Vec<Vec<Vec<bool>>> = vec![Vec::new(); skills];
    let (mut seqs, mut touched): (Vec<Vec<bool>>, Vec<usize>) = (vec![Vec::new(); skills], Vec::new());
    for a in &train.students {
        for (i, &c) in a.items.iter().zip(&a.correct) {
            let k = skill[*i as usize];
            if seqs[k].is_empty() {
                touched.push(k);
            }
            seqs[k].push(c);
        }
        for k in touched.drain(..) {
            per_skill[k].push(std::mem::take(&mut seqs[k]));
        }
    }
    let models: Vec<Bkt> = per_skill.iter().map(|s| Bkt::fit(s)).collect();
    let mut out = Vec::new();
    let mut known: Vec<f64> = models.iter().map(|m| m.l0).collect();
    for a in &test.students {
        for (t, (i, &c)) in a.items.iter().zip(&a.correct).enumerate() {
            let k = skill[*i as usize];
            if t > 0 {
                out.push(models[k].p_right(known[k]) as f32);
            }
            touched.push(k);
            known[k] = models[k].update(known[k], c);
        }
        for k in touched.drain(..) {
            known[k] = models[k].l0; // the next student starts from the prior again
        }
    }
    out
}
