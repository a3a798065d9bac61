//! Answer histories for knowledge tracing: which item each student answered, in order, and whether
//! the answer was right — simulated, or read from the two file formats public data sets use.
//!
//! # The simulated students
//!
//! [`simulate`] draws item-response-theory students as in the synthetic data sets of Deep
//! Knowledge Tracing (Piech et al., NeurIPS 2015), with abilities that grow with practice:
//!
//! ```text
//! each item j:     one concept k(j), a difficulty β_j ~ N(0, 1)
//! each student:    an ability α_k ~ N(0, s²) per concept               (s: the skill spread)
//! an answer to j:  P(correct) = c + (1 − c)·σ(α_k(j) − β_j)     (c: the chance of a lucky guess)
//! after it:        α_k(j) ← α_k(j) + g                            (practice helps: gain g)
//! ```
//!
//! (so the ability at an answer is `α_k + g·n_k`, `n_k` the answers to that concept before it).
//! Every student answers every item once, in one fixed order. Two presets:
//!
//! - [`SimulationOptions::default`] (= [`SimulationOptions::paper_like`]): the values that fit the
//!   DKT paper's own Simulated-5 files — 4,000 students (half to train, half to test, as the
//!   paper's 2,000 + 2,000), 50 items, 5 concepts of 10 items each, `s = 3`, `c = 0.1`, `g = 0.1`.
//!   Students differ a lot from concept to concept, so a model that tracks each concept's
//!   answers can predict well (the oracle's AUC is about 0.89).
//! - [`SimulationOptions::narrow`]: the crate's earlier demo — `s = 1`, `c = 0.25`, concepts drawn
//!   uniformly per item — where abilities vary little and guesses blur them (oracle AUC ≈ 0.75).
//!
//! The simulation also returns the true probability of each answer, which is the best prediction
//! any model could make (the *oracle*).
//!
//! # Files
//!
//! [`read_csv`]: one row per student, one `0`/`1` column per item, the items answered in column
//! order (the DKT paper's synthetic sets). [`read_three_line`]: three lines per student — the
//! number of answers, the comma-separated item ids, the comma-separated `0`/`1` answers (trailing
//! commas allowed), the format of the public ASSISTments and Statics sets as prepared for DKT.
//! A malformed line is an error naming the file and the line; students with fewer than 2 answers
//! carry nothing to predict and are skipped (and counted).

use crate::error::{Error, Result};
use crate::tensor::math::sigmoid;
use crate::tensor::{Rng, rng};
use rand::RngExt;
use rand_distr::{Distribution, Normal};
use std::path::Path;

/// One student's answers, in the order they were given (5 bytes per answer).
#[derive(Clone, Debug, PartialEq)]
pub struct Answers {
    /// Item ids, `0..items` (at most [`MAX_ITEM_ID`]).
    pub items: Vec<u32>,
    /// Whether each answer was right.
    pub correct: Vec<bool>,
}

impl Answers {
    /// Number of answers.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True for a student without answers.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// Answer histories of many students over `items` items.
#[derive(Clone, Debug, PartialEq)]
pub struct Histories {
    /// Number of distinct items (ids are `0..items`).
    pub items: usize,
    /// One entry per student.
    pub students: Vec<Answers>,
    /// For simulated data, the true probability of each answer being right (the oracle), per
    /// student, aligned with `students`.
    pub true_probabilities: Option<Vec<Vec<f32>>>,
    /// For simulated data, each item's concept.
    pub item_concepts: Option<Vec<usize>>,
    /// For simulated data, each item's difficulty `β`.
    pub item_difficulties: Option<Vec<f32>>,
    /// Students dropped while reading because they had fewer than 2 answers.
    pub skipped: usize,
}

impl Histories {
    /// Histories read from a file: answers only, nothing known about the items.
    fn from_answers(items: usize, students: Vec<Answers>, skipped: usize) -> Histories {
        Histories {
            items,
            students,
            true_probabilities: None,
            item_concepts: None,
            item_difficulties: None,
            skipped,
        }
    }

    /// The students `indices` (and their oracle probabilities), in that order; `skipped` is 0 (the
    /// count belongs to the file that was read).
    ///
    /// # Panics
    /// If an index is past the last student, or the oracle probabilities have fewer lists than
    /// there are students ([`Histories::check`] reports that as an error).
    pub fn subset(&self, indices: &[usize]) -> Histories {
        Histories {
            items: self.items,
            students: indices.iter().map(|&i| self.students[i].clone()).collect(),
            true_probabilities: self
                .true_probabilities
                .as_ref()
                .map(|p| indices.iter().map(|&i| p[i].clone()).collect()),
            item_concepts: self.item_concepts.clone(),
            item_difficulties: self.item_difficulties.clone(),
            skipped: 0,
        }
    }

    /// Every history cut into *windows* of at most `max_len` answers, as knowledge-tracing
    /// studies do with long histories (a model then trains on sequences of a bounded length):
    /// a history of `n ≤ max_len` answers stays whole; a longer one becomes windows starting at
    /// answers `0, L−1, 2(L−1), …` (`L = max_len`), each sharing its first answer with the end of
    /// the window before. A window's first answer is only read, never predicted, so with that
    /// overlap every answer after a student's first is predicted exactly once, in the original
    /// order: predictions over the windows line up with those over the whole histories. What a
    /// window loses is the memory of answers before it (the model starts each window afresh).
    /// The oracle probabilities are cut alike; the windows of one student are consecutive.
    ///
    /// ```
    /// use backprop::data::knowledge::{Answers, Histories};
    /// let mut h = Histories::new(3);
    /// h.students.push(Answers { items: vec![0, 1, 2, 0, 1], correct: vec![true; 5] });
    /// let w = h.windows(3).unwrap();
    /// let items: Vec<&[u32]> = w.students.iter().map(|a| &a.items[..]).collect();
    /// assert_eq!(items, [&[0, 1, 2][..], &[2, 0, 1][..]]); // predicted: 1, 2 | 0, 1
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `max_len` is below 2 (a window must hold an answer to read
    /// and one to predict), or if the histories fail [`Histories::check`].
    pub fn windows(&self, max_len: usize) -> Result<Histories> {
        if max_len < 2 {
            return Err(Error::invalid(format!(
                "windows of knowledge-tracing histories need at least 2 answers (one read, one predicted), got {max_len}"
            )));
        }
        self.check()?;
        let mut out =
            Histories { students: Vec::new(), skipped: self.skipped, ..self.clone_without_students() };
        let mut probabilities = self.true_probabilities.as_ref().map(|_| Vec::new());
        for (s, a) in self.students.iter().enumerate() {
            let mut start = 0;
            loop {
                let end = (start + max_len).min(a.len());
                out.students.push(Answers {
                    items: a.items[start..end].to_vec(),
                    correct: a.correct[start..end].to_vec(),
                });
                if let (Some(all), Some(p)) = (self.true_probabilities.as_ref(), probabilities.as_mut()) {
                    p.push(all[s][start..end].to_vec());
                }
                if end >= a.len() {
                    break;
                }
                start = end - 1;
            }
        }
        out.true_probabilities = probabilities;
        Ok(out)
    }

    /// Checks what the public fields cannot promise by themselves (the readers and [`simulate`]
    /// always give histories that pass): each student has as many answers (`correct`) as items,
    /// every item id is below `items`, and the oracle probabilities, when present, have one list
    /// per student as long as that student's history.
    ///
    /// ```
    /// use backprop::data::knowledge::{Answers, Histories};
    /// let mut h = Histories::new(3);
    /// h.students.push(Answers { items: vec![0, 1, 2], correct: vec![true] });
    /// let err = h.check().unwrap_err().to_string();
    /// assert!(err.contains("student 0: 3 items but 1 answers"), "{err}");
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the first student (or list) that breaks one of the rules.
    pub fn check(&self) -> Result<()> {
        let bad = |m: String| Err(Error::invalid(format!("knowledge-tracing histories: {m}")));
        for (s, a) in self.students.iter().enumerate() {
            if a.items.len() != a.correct.len() {
                return bad(format!("student {s}: {} items but {} answers", a.items.len(), a.correct.len()));
            }
            if let Some((t, &item)) = a.items.iter().enumerate().find(|(_, i)| **i as usize >= self.items) {
                return bad(format!(
                    "student {s}, answer {t}: item {item}, but the ids are 0..{}",
                    self.items
                ));
            }
        }
        if let Some(p) = &self.true_probabilities {
            if p.len() != self.students.len() {
                return bad(format!(
                    "{} lists of true probabilities for {} students",
                    p.len(),
                    self.students.len()
                ));
            }
            if let Some((s, (p, a))) =
                p.iter().zip(&self.students).enumerate().find(|(_, (p, a))| p.len() != a.len())
            {
                return bad(format!("student {s}: {} true probabilities for {} answers", p.len(), a.len()));
            }
        }
        Ok(())
    }

    /// Empty histories over `items` items (students to be pushed).
    pub fn new(items: usize) -> Histories {
        Histories::from_answers(items, Vec::new(), 0)
    }

    /// A copy of everything but the students and their oracle probabilities.
    fn clone_without_students(&self) -> Histories {
        Histories {
            items: self.items,
            students: Vec::new(),
            true_probabilities: None,
            item_concepts: self.item_concepts.clone(),
            item_difficulties: self.item_difficulties.clone(),
            skipped: 0,
        }
    }

    /// The number of answers of all students together.
    pub fn answers(&self) -> usize {
        self.students.iter().map(Answers::len).sum()
    }

    /// The longest history, in answers.
    pub fn longest(&self) -> usize {
        self.students.iter().map(Answers::len).max().unwrap_or(0)
    }

    /// A seeded split by student: `(first, rest)` with `fraction` of the students in `first`. The
    /// count of students skipped while reading stays with `first`, so that the two parts' counts
    /// add up to the file's.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `fraction` is not in `[0, 1]` (NaN included), as
    /// [`Dataset::split_stratified`](crate::data::Dataset::split_stratified) refuses it.
    ///
    /// # Panics
    /// If the oracle probabilities have fewer lists than there are students
    /// ([`Histories::check`] reports that as an error).
    pub fn split(&self, fraction: f64, seed: u64) -> Result<(Histories, Histories)> {
        if !(0.0..=1.0).contains(&fraction) {
            return Err(Error::invalid(format!(
                "Histories::split: the fraction must be in [0, 1], got {fraction}"
            )));
        }
        let mut order: Vec<usize> = (0..self.students.len()).collect();
        use rand::seq::SliceRandom;
        order.shuffle(&mut rng(seed));
        let cut = ((self.students.len() as f64 * fraction).round() as usize).min(order.len());
        let first = Histories { skipped: self.skipped, ..self.subset(&order[..cut]) };
        Ok((first, self.subset(&order[cut..])))
    }
}

/// Settings of [`simulate`]. See the [module docs](self) for the model.
#[derive(Clone, Debug, PartialEq)]
pub struct SimulationOptions {
    /// Number of students (default 4,000).
    pub students: usize,
    /// Number of items, each answered once by every student (default 50).
    pub items: usize,
    /// Number of hidden concepts (default 5).
    pub concepts: usize,
    /// Chance of a lucky guess `c` (default 0.1).
    pub guess: f32,
    /// Ability gained per answer on a concept, `g` (default 0.1).
    pub practice_gain: f32,
    /// Standard deviation `s` of each student's ability per concept (default 3).
    pub skill_spread: f32,
    /// Whether every concept gets the same number of items (in a seeded order; default), or each
    /// item a concept drawn uniformly.
    pub balanced_concepts: bool,
    /// Seed of every random choice (default 0).
    pub seed: u64,
}

impl Default for SimulationOptions {
    /// [`SimulationOptions::paper_like`].
    fn default() -> SimulationOptions {
        SimulationOptions::paper_like()
    }
}

impl SimulationOptions {
    /// Values that fit the DKT paper's Simulated-5 files (see the [module docs](self)): 4,000
    /// students, 50 items, 5 balanced concepts, skill spread 3, guess 0.1, practice gain 0.1.
    pub fn paper_like() -> SimulationOptions {
        SimulationOptions {
            students: 4000,
            items: 50,
            concepts: 5,
            guess: 0.1,
            practice_gain: 0.1,
            skill_spread: 3.0,
            balanced_concepts: true,
            seed: 0,
        }
    }

    /// The earlier demo's values: skill spread 1, guess 0.25, practice gain 0.1, concepts drawn
    /// per item (same sizes as [`SimulationOptions::paper_like`]).
    pub fn narrow() -> SimulationOptions {
        SimulationOptions { guess: 0.25, skill_spread: 1.0, balanced_concepts: false, ..Self::paper_like() }
    }
}

/// Simulated students; see the [module docs](self).
///
/// # Errors
/// [`Error::InvalidArgument`] for zero students, items or concepts, more than [`MAX_SIMULATED`]
/// of any, more than 2³¹ answers or abilities (students × concepts) in all, a guess outside `[0, 1)`, or a negative or non-finite skill
/// spread or gain.
///
/// ```
/// use backprop::data::knowledge::{SimulationOptions, simulate};
/// let h = simulate(&SimulationOptions { students: 10, ..SimulationOptions::default() }).unwrap();
/// assert_eq!((h.students.len(), h.items, h.students[0].len()), (10, 50, 50));
/// ```
pub fn simulate(o: &SimulationOptions) -> Result<Histories> {
    if o.students == 0
        || o.items == 0
        || o.concepts == 0
        || !(0.0..1.0).contains(&o.guess)
        || !(o.practice_gain.is_finite() && o.practice_gain >= 0.0)
        || !(o.skill_spread.is_finite() && o.skill_spread >= 0.0)
    {
        return Err(Error::invalid(format!("simulate: invalid settings {o:?}")));
    }
    if o.students.checked_mul(o.concepts).is_none_or(|draws| draws > 1 << 31) {
        // (Each student draws an ability per concept, used or not: 10⁷ students of 10⁷
        // concepts had run for days.)
        return Err(Error::invalid(format!(
            "simulate: {} students of {} concepts each are more than 2³¹ abilities to draw",
            o.students, o.concepts
        )));
    }
    if o.students > MAX_SIMULATED || o.items > MAX_SIMULATED || o.concepts > MAX_SIMULATED {
        return Err(Error::invalid(format!(
            "simulate: at most {MAX_SIMULATED} students, items and concepts, got {}, {}, {}",
            o.students, o.items, o.concepts
        )));
    }
    if o.students.checked_mul(o.items).is_none_or(|answers| answers > 1 << 31) {
        return Err(Error::invalid(format!(
            "simulate: {} students × {} items is more than 2³¹ answers",
            o.students, o.items
        )));
    }
    let mut r: Rng = rng(o.seed);
    let normal = Normal::new(0.0f32, 1.0).expect("a valid normal distribution");
    let item_concepts: Vec<usize> = if o.balanced_concepts {
        use rand::seq::SliceRandom;
        let mut c: Vec<usize> = (0..o.items).map(|j| j % o.concepts).collect();
        c.shuffle(&mut r);
        c
    } else {
        (0..o.items).map(|_| r.random_range(0..o.concepts)).collect()
    };
    let difficulty: Vec<f32> = (0..o.items).map(|_| normal.sample(&mut r)).collect();
    let (mut students, mut probabilities) = (Vec::with_capacity(o.students), Vec::with_capacity(o.students));
    for _ in 0..o.students {
        let mut ability: Vec<f32> = (0..o.concepts).map(|_| o.skill_spread * normal.sample(&mut r)).collect();
        let (mut correct, mut p) = (Vec::with_capacity(o.items), Vec::with_capacity(o.items));
        for j in 0..o.items {
            let k = item_concepts[j];
            let p_j = o.guess + (1.0 - o.guess) * sigmoid(ability[k] - difficulty[j]); // c + (1 − c)·σ(α − β)
            correct.push(r.random::<f32>() < p_j);
            p.push(p_j);
            ability[k] += o.practice_gain; // practice helps
        }
        students.push(Answers { items: (0..o.items as u32).collect(), correct });
        probabilities.push(p);
    }
    Ok(Histories {
        items: o.items,
        students,
        true_probabilities: Some(probabilities),
        item_concepts: Some(item_concepts),
        item_difficulties: Some(difficulty),
        skipped: 0,
    })
}

/// The largest item id the readers accept (ids are `0..=MAX_ITEM_ID`): a model of knowledge
/// tracing has inputs and outputs per item, so an id of 10⁹ in a file of ten answers would ask
/// for gigabytes. Number the items densely to use more.
pub const MAX_ITEM_ID: usize = 999_999;

/// The most students or items [`simulate`] makes (each answer takes about 10 bytes; 10⁷ students
/// of 50 items is about 5 GB).
pub const MAX_SIMULATED: usize = 10_000_000;

/// The longest line the readers take (256 MiB): a line is read whole before it is parsed, so a
/// file without line breaks (`/dev/zero`, a binary file) would otherwise grow memory without end.
/// A student's history on one line of the three-line format stays far below it.
pub const MAX_LINE_BYTES: usize = 1 << 28;

/// The lines of a text file, read one at a time (memory grows with what has been parsed, not with
/// the file, and a line with it only up to [`MAX_LINE_BYTES`]): `(line number, line)` without its
/// `\n` or `\r\n`, a UTF-8 byte-order mark before the first line dropped (as spreadsheet
/// programs write it, it is not part of the first row).
fn lines(path: &Path) -> Result<impl Iterator<Item = Result<(usize, String)>> + '_> {
    lines_of_at_most(path, MAX_LINE_BYTES)
}

/// [`lines`] with lines of at most `max` bytes; the first error ends the walk.
fn lines_of_at_most(path: &Path, max: usize) -> Result<impl Iterator<Item = Result<(usize, String)>> + '_> {
    use std::io::{BufRead, Read};
    let file = crate::io::open_regular_file(path)?;
    let mut reader = std::io::BufReader::new(file);
    let (mut number, mut failed) = (0, false);
    Ok(std::iter::from_fn(move || {
        if failed {
            return None;
        }
        number += 1;
        let mut bytes = Vec::new();
        // Up to `max` bytes, a '\r' and the '\n': a line of `max` bytes ends alike in either style.
        let line = match (&mut reader).take(max as u64 + 2).read_until(b'\n', &mut bytes) {
            Ok(0) => return None,
            Err(e) => Err(Error::io(path, e)),
            Ok(_)
                if bytes.len()
                    > max + usize::from(bytes.ends_with(b"\n")) + usize::from(bytes.ends_with(b"\r\n")) =>
            {
                Err(Error::format(path, format!("line {number}: more than {max} bytes without a line break")))
            }
            Ok(_) => {
                if bytes.last() == Some(&b'\n') {
                    bytes.pop();
                    if bytes.last() == Some(&b'\r') {
                        bytes.pop();
                    }
                }
                String::from_utf8(bytes)
                    .map_err(|_| Error::format(path, format!("line {number}: not UTF-8 text")))
                    .map(|mut line| {
                        if number == 1 && line.starts_with('\u{feff}') {
                            line.drain(..'\u{feff}'.len_utf8());
                        }
                        (number, line)
                    })
            }
        };
        failed = line.is_err();
        Some(line)
    }))
}

/// The fields of a comma-separated line, allowing one trailing comma and spaces; none for a blank
/// line. An iterator, parsed as it goes: a list of the fields themselves would take 16 bytes per
/// field, 16× a line of commas (a 64 MiB line had asked for a gigabyte before its error).
fn fields(line: &str) -> impl Iterator<Item = &str> {
    let line = line.trim();
    let line = line.strip_suffix(',').unwrap_or(line);
    (!line.is_empty()).then(|| line.split(',').map(str::trim)).into_iter().flatten()
}

fn bit(path: &Path, line: usize, v: &str) -> Result<bool> {
    match v {
        "0" => Ok(false),
        "1" => Ok(true),
        _ => Err(Error::format(path, format!("line {line}: an answer must be 0 or 1, got {v:?}"))),
    }
}

/// Reads the CSV format: one row per student, one `0`/`1` column per item (all rows the same
/// width), answered in column order. The first non-blank row is taken as a header when more than
/// half of its fields are not `0`/`1` (`q1,q2,q3`), or when its fields number the columns in
/// order, from 0 or from 1 (`0,1,2`, `1,2`: what `pandas.DataFrame.to_csv(index=False)` writes for
/// unnamed columns) — except `0,1` on a two-column file, which is read as a student's answers (it
/// is one); a row of answers with a stray value (`0,1,NA`) is an error naming its line, as it is
/// further down.
///
/// # Errors
/// [`Error::Io`] if the file cannot be read; [`Error::Format`] naming the line for a row of
/// another width (than the rows before, or than the header's columns: pandas would read the
/// extra column as an index), a first column that counts the rows (pandas' index column: a first
/// field past 1, or 0 and 1 under a header whose first column has no name), a value other than `0`/`1`, a line that is not UTF-8 or is longer than [`MAX_LINE_BYTES`], or a
/// file without students.
pub fn read_csv(path: impl AsRef<Path>) -> Result<Histories> {
    let path = path.as_ref();
    let mut items = None;
    let mut students = Vec::new();
    let mut first_row = true;
    let mut header = None; // (line, columns)
    let mut unnamed_first = None; // the header's line, if its first column has no name
    for line in lines(path)? {
        let (number, line) = line?;
        if fields(&line).next().is_none() {
            continue;
        }
        if std::mem::take(&mut first_row) {
            let (all, not_bits) =
                fields(&line).fold((0, 0), |(a, n), c| (a + 1, n + usize::from(c != "0" && c != "1")));
            // Columns numbered in order from 0 or from 1 (any such row but `0,1` has a field that
            // is not an answer; `0,1` itself stays one).
            let numbered = |from: usize| fields(&line).enumerate().all(|(i, c)| c.parse() == Ok(from + i));
            if 2 * not_bits > all || (not_bits > 0 && (numbered(0) || numbered(1))) {
                // pandas' `to_csv` writes its index as a first column with an empty name: as
                // wide as the rows, it would be read as an item. (A blank first cell alone is
                // not refused: the rows' first column tells, below.)
                unnamed_first = (fields(&line).next() == Some("")).then_some(number);
                header = Some((number, all));
                continue; // a header
            }
        }
        let first = fields(&line).next().unwrap_or_default();
        if first != "0" && first != "1" && first.parse::<u64>().is_ok() {
            return Err(Error::format(
                path,
                format!(
                    "line {number}: the first column is {first}, not an answer (0 or 1): an index column? (pandas' \
                     to_csv writes one unless index=False)"
                ),
            ));
        }
        let correct = fields(&line).map(|c| bit(path, number, c)).collect::<Result<Vec<bool>>>()?;
        if let Some((h_line, columns)) = header.take().filter(|&(_, c)| c != correct.len()) {
            // A header of another width than the rows: a damaged file, or an index column
            // (pandas' to_csv with its index) that would be read as an item.
            return Err(Error::format(
                path,
                format!(
                    "line {number}: {} answers, but the header (line {h_line}) names {columns} columns",
                    correct.len()
                ),
            ));
        }
        let width = *items.get_or_insert(correct.len());
        if correct.len() != width {
            return Err(Error::format(
                path,
                format!("line {number}: {} answers, but the rows before have {width}", correct.len()),
            ));
        }
        if width > MAX_ITEM_ID + 1 {
            return Err(Error::format(
                path,
                format!(
                    "line {number}: {width} columns, more items than the reader accepts ({})",
                    MAX_ITEM_ID + 1
                ),
            ));
        }
        students.push(Answers { items: (0..width as u32).collect(), correct });
    }
    let Some(items) = items else {
        return Err(Error::format(path, "no students in the file"));
    };
    // Under a header whose first column has no name, a first column counting two rows 0, 1 is
    // pandas' index (from a third row on, the row check above has said so already; a single row's
    // 0 could be an answer as well as an index, and is read as one).
    let counts_rows = students.iter().enumerate().all(|(s, a)| a.correct.first() == Some(&(s == 1)));
    if let Some(h_line) = unnamed_first.filter(|_| counts_rows && students.len() == 2) {
        return Err(Error::format(
            path,
            format!(
                "line {h_line}: the header's first column has no name and the rows' first column counts them \
                 (0, 1): an index column (pandas' to_csv writes one unless index=False), which would be read as \
                 an item"
            ),
        ));
    }
    let skipped = if items < 2 { students.len() } else { 0 };
    if items < 2 {
        students.clear();
    }
    Ok(Histories::from_answers(items, students, skipped))
}

/// Reads the three-lines-per-student format: the number of answers; the item ids; the `0`/`1`
/// answers (comma-separated, trailing commas allowed). Item ids may be any integers in
/// `0..=`[`MAX_ITEM_ID`]; `items` is one more than the largest.
///
/// # Errors
/// [`Error::Io`] if the file cannot be read; [`Error::Format`] naming the line for a count that
/// is not a number, a list whose length differs from the count, an id that is not an integer in
/// `0..=MAX_ITEM_ID`, an answer other than `0`/`1`, a line that is not UTF-8 or is longer than
/// [`MAX_LINE_BYTES`], a file that ends in the middle of a student, or a file without students
/// (empty or blank; a file whose students all have fewer than 2 answers reads as none, with
/// them counted in `skipped`).
pub fn read_three_line(path: impl AsRef<Path>) -> Result<Histories> {
    let path = path.as_ref();
    let mut all = lines(path)?;
    let (mut students, mut skipped, mut max_item) = (Vec::new(), 0, None::<usize>);
    // The next line; with `skip_blank`, the next that is not blank.
    let mut next_line = |skip_blank: bool| -> Option<Result<(usize, String)>> {
        all.find(|l| !skip_blank || l.as_ref().map_or(true, |(_, l)| !l.trim().is_empty()))
    };
    while let Some(first) = next_line(true) {
        let (n_line, count) = first?;
        let count: usize = count.trim().trim_end_matches(',').trim().parse().map_err(|_| {
            Error::format(
                path,
                format!("line {n_line}: expected the number of answers, got {:?}", count.trim()),
            )
        })?;
        // A student of no answers has two empty lines: read them as they are, where blank lines
        // are otherwise skipped (they would have been the next student's).
        let mut next = |what: &str| -> Result<(usize, String)> {
            next_line(count > 0).unwrap_or_else(|| {
                Err(Error::format(
                    path,
                    format!("line {n_line}: the file ends in the middle of a student (no {what} line)"),
                ))
            })
        };
        let (i_line, ids) = next("item ids")?;
        let (c_line, answers) = next("answers")?;
        let too_many = |line: usize, what: &str| {
            Error::format(path, format!("line {line}: more {what} than the {count} that line {n_line} says"))
        };
        let mut items = Vec::new();
        for v in fields(&ids) {
            if items.len() == count {
                return Err(too_many(i_line, "item ids"));
            }
            items.push(match v.parse::<u64>() {
                Ok(id) if id <= MAX_ITEM_ID as u64 => id as u32,
                Ok(id) => {
                    return Err(Error::format(
                        path,
                        format!(
                            "line {i_line}: item id {id} is above the largest this reader accepts, {MAX_ITEM_ID} \
                             (backprop::data::knowledge::MAX_ITEM_ID); number the items densely"
                        ),
                    ));
                }
                Err(_) => {
                    return Err(Error::format(
                        path,
                        format!("line {i_line}: item id {v:?} is not a non-negative integer"),
                    ));
                }
            });
        }
        if items.len() != count {
            return Err(Error::format(
                path,
                format!("line {i_line}: {} item ids, but line {n_line} says {count}", items.len()),
            ));
        }
        let mut correct = Vec::new();
        for v in fields(&answers) {
            if correct.len() == count {
                return Err(too_many(c_line, "answers"));
            }
            correct.push(bit(path, c_line, v)?);
        }
        if correct.len() != count {
            return Err(Error::format(
                path,
                format!("line {c_line}: {} answers, but line {n_line} says {count}", correct.len()),
            ));
        }
        if count < 2 {
            skipped += 1;
            continue;
        }
        max_item = items.iter().map(|&i| i as usize).chain(max_item).max();
        students.push(Answers { items, correct });
    }
    if students.is_empty() && skipped == 0 {
        // As `read_csv`: an empty (or blank) file is no data set.
        return Err(Error::format(path, "no students in the file"));
    }
    let items = max_item.map_or(0, |m| m + 1);
    Ok(Histories::from_answers(items, students, skipped))
}

/// The two file formats of answer histories.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One row per student, one `0`/`1` column per item ([`read_csv`]).
    Csv,
    /// Three lines per student: count, item ids, answers ([`read_three_line`]).
    ThreeLine,
}

impl Format {
    /// Tells the format from the file's first non-empty line (not from its name: the DKT paper's
    /// three-line files are named `*.csv`): a single whole number is the answer count of the
    /// three-line format; a row of several `0`/`1` values, or a header followed by such rows,
    /// is CSV.
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be read; [`Error::Format`] naming both formats if the
    /// first lines fit neither.
    pub fn sniff(path: impl AsRef<Path>) -> Result<Format> {
        let path = path.as_ref();
        let mut rows = Vec::new();
        for line in lines(path)? {
            let (_, line) = line?;
            if !line.trim().is_empty() {
                rows.push(line);
            }
            if rows.len() == 2 {
                break;
            }
        }
        let bits = |row: &str| fields(row).nth(1).is_some() && fields(row).all(|c| c == "0" || c == "1");
        // (Trailing commas stripped as the three-line reader strips them from its count line.)
        let count = |row: &str| row.trim().trim_end_matches(',').trim().parse::<u64>().is_ok();
        match rows.as_slice() {
            [first, ..] if count(first) => Ok(Format::ThreeLine),
            [first, ..] if bits(first) => Ok(Format::Csv),
            [_, second] if bits(second) => Ok(Format::Csv), // a header, then rows of answers
            _ => Err(Error::format(
                path,
                "cannot tell the format: neither three lines per student (a count, item ids, 0/1 answers) nor \
                 CSV (one row of 0/1 answers per student); choose it with --format csv|lines. (An interaction \
                 log with one row per answer, such as ASSISTments' skill_builder_data.csv, is neither: group each \
                 student's answers into the three-line format first.)",
            )),
        }
    }
}

/// Reads answer histories in `format`, or in the format [`Format::sniff`] finds for `None`.
///
/// # Errors
/// As [`Format::sniff`], [`read_csv`] and [`read_three_line`].
pub fn read(path: impl AsRef<Path>, format: Option<Format>) -> Result<Histories> {
    let path = path.as_ref();
    match format.map_or_else(|| Format::sniff(path), Ok)? {
        Format::Csv => read_csv(path),
        Format::ThreeLine => read_three_line(path),
    }
}

/// Reads an item → concept map: one `item,concept` pair of whole numbers per line (the first
/// non-blank line is a header when none of its fields is a number), both at most
/// [`MAX_ITEM_ID`]. Items not listed get no concept (`None`); an item listed twice is an error,
/// and so is a line of another shape (`5,3,7`: one concept per item), the first one included.
///
/// # Errors
/// [`Error::Io`] if the file cannot be read; [`Error::Format`] naming the line for anything else.
pub fn read_concepts(path: impl AsRef<Path>) -> Result<Vec<Option<usize>>> {
    let path = path.as_ref();
    let mut map: Vec<Option<usize>> = Vec::new();
    let mut first_line = true;
    for line in lines(path)? {
        let (number, line) = line?;
        if fields(&line).next().is_none() {
            continue;
        }
        if std::mem::take(&mut first_line) && fields(&line).take(3).all(|c| c.parse::<u128>().is_err()) {
            continue; // a header: `item,concept`, `question_id,skill_id`
        }
        // At most three fields looked at: two numbers, and whether there is more.
        let parsed: Vec<Option<usize>> =
            fields(&line).take(3).map(|c| c.parse::<usize>().ok().filter(|&v| v <= MAX_ITEM_ID)).collect();
        let (item, concept) = match parsed.as_slice() {
            [Some(i), Some(c)] => (*i, *c),
            _ => {
                return Err(Error::format(
                    path,
                    format!(
                        "line {number}: expected `item,concept` (whole numbers up to {MAX_ITEM_ID}), got {:?}",
                        line.trim()
                    ),
                ));
            }
        };
        if item >= map.len() {
            map.resize(item + 1, None);
        }
        if let Some(before) = map[item] {
            return Err(Error::format(
                path,
                format!(
                    "line {number}: item {item} is given concept {concept}, but an earlier line gave it {before}"
                ),
            ));
        }
        map[item] = Some(concept);
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines as `BufRead::lines` gives them (without `\n` or `\r\n`, the last one without a break
    /// too), a byte-order mark dropped from the first; a line longer than the limit without a
    /// break is an error naming it (the walk ends there), one of exactly the limit is taken.
    #[test]
    fn lines_are_bounded_and_split_as_text_files_are() {
        let dir = std::env::temp_dir().join(format!("backprop-lines-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = |name: &str, bytes: &[u8]| {
            let path = dir.join(name);
            std::fs::write(&path, bytes).unwrap();
            path
        };
        let read = |path: &Path, max: usize| -> Vec<Result<(usize, String)>> {
            lines_of_at_most(path, max).unwrap().collect()
        };
        let text = file("text.txt", "\u{feff}a,b\r\n\n12345678\nlast".as_bytes());
        let got: Vec<(usize, String)> = read(&text, 8).into_iter().map(|l| l.unwrap()).collect();
        let want = [(1, "a,b"), (2, ""), (3, "12345678"), (4, "last")];
        assert_eq!(got, want.map(|(n, l)| (n, l.to_string())));
        let got = read(&text, 7);
        assert_eq!(got.len(), 3, "the walk ends at the long line");
        let err = got[2].as_ref().unwrap_err().to_string();
        assert!(err.contains("line 3: more than 7 bytes without a line break"), "{err}");
        let zeros = file("zeros.bin", &[0u8; 100]);
        let err = read(&zeros, 64).pop().unwrap().unwrap_err().to_string();
        assert!(err.contains("line 1: more than 64 bytes"), "{err}");
        // A line of exactly the limit ends alike in "\r\n" (the '\r' had counted against it);
        // one byte more is refused in either style.
        let crlf = file("crlf.txt", b"12345678\r\nabc\r\n");
        let got: Vec<(usize, String)> = read(&crlf, 8).into_iter().map(|l| l.unwrap()).collect();
        assert_eq!(got, [(1, "12345678".to_string()), (2, "abc".to_string())]);
        for long in [&b"123456789\r\n"[..], b"123456789\n", b"123456789"] {
            let err = read(&file("long.txt", long), 8).pop().unwrap().unwrap_err().to_string();
            assert!(err.contains("line 1: more than 8 bytes"), "{long:?}: {err}");
        }
        let latin1 = file("latin1.txt", b"ok\ncaf\xe9\n");
        let err = read(&latin1, 64).pop().unwrap().unwrap_err().to_string();
        assert!(err.contains("line 2: not UTF-8 text"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
