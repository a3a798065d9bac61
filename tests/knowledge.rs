//! Knowledge-tracing data: the simulator, and both file formats with their malformed lines.

use backprop::data::knowledge::{Answers, Histories, SimulationOptions, read_csv, read_three_line, simulate};

mod common;
use common::ScratchFile;

fn file(name: &str, text: &str) -> ScratchFile {
    ScratchFile::new(name, text)
}

#[test]
fn the_simulator_follows_its_model() {
    for preset in [SimulationOptions::paper_like(), SimulationOptions::narrow()] {
        let o = SimulationOptions { students: 2000, seed: 3, ..preset };
        let h = simulate(&o).unwrap();
        assert_eq!(h, simulate(&o).unwrap(), "seeded");
        assert_eq!((h.items, h.students.len()), (50, 2000));
        let p = h.true_probabilities.as_ref().unwrap();
        // Every probability is at least the guessing chance; the answers follow them.
        assert!(p.iter().flatten().all(|&v| (o.guess..1.0).contains(&v)));
        let answered: f64 = h.students.iter().flat_map(|s| &s.correct).map(|&c| f64::from(u8::from(c))).sum();
        let expected: f64 = p.iter().flatten().map(|&v| v as f64).sum();
        assert!((answered - expected).abs() < 3.0 * expected.sqrt(), "{answered} vs {expected}");
        // Practice helps: later answers on a concept are right more often than the first ones.
        let concepts = h.item_concepts.as_ref().unwrap();
        assert!(concepts.iter().all(|&k| k < 5));
        if o.balanced_concepts {
            assert!((0..5).all(|k| concepts.iter().filter(|&&c| c == k).count() == 10));
        }
        let mean_p = |j: usize| p.iter().map(|s| s[j]).sum::<f32>() / p.len() as f32;
        let first = (0..50).find(|&j| concepts[j] == concepts[49]).unwrap();
        assert!(mean_p(49) >= mean_p(first) - 0.2);
        // The skill spread: the logit of the first item, σ⁻¹((p − c)/(1 − c)) = α − β, varies
        // across students with standard deviation s.
        let logits: Vec<f64> = p
            .iter()
            .map(|s| {
                let q = ((s[0] - o.guess) / (1.0 - o.guess)) as f64;
                (q / (1.0 - q)).ln()
            })
            .collect();
        let mean = logits.iter().sum::<f64>() / logits.len() as f64;
        let sd = (logits.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / logits.len() as f64).sqrt();
        assert!(
            (sd - o.skill_spread as f64).abs() < 0.1 * o.skill_spread as f64,
            "{sd} vs {}",
            o.skill_spread
        );
    }
    let o = SimulationOptions { students: 2000, seed: 3, ..SimulationOptions::default() };
    let h = simulate(&o).unwrap();
    assert!(simulate(&SimulationOptions { guess: 1.0, ..o.clone() }).is_err());
    // 2·10¹⁰ abilities to draw (each student one per concept): refused at once, not run for hours.
    let e = simulate(&SimulationOptions { items: 3, concepts: 10_000_000, ..o.clone() }).unwrap_err();
    assert!(e.to_string().contains("2000 students of 10000000 concepts"), "{e}");
    // More concepts than items is fine (some go unpractised), as it was.
    assert!(simulate(&SimulationOptions { items: 3, ..o.clone() }).is_ok());
    assert!(simulate(&SimulationOptions { skill_spread: f32::NAN, ..o.clone() }).is_err());
    assert!(simulate(&SimulationOptions { students: 0, ..o }).is_err());
    let (a, b) = h.split(0.5, 1).unwrap();
    assert_eq!((a.students.len(), b.students.len()), (1000, 1000));
}

#[test]
fn csv_rows_of_answers() {
    let h = read_csv(file("ok.csv", "q1,q2,q3\n1,0,1\n0,0,1,\n\n1,1,1\n")).unwrap();
    assert_eq!((h.items, h.students.len()), (3, 3));
    assert_eq!(h.students[1].correct, [false, false, true]);
    assert_eq!(h.students[2].items, [0, 1, 2]);
    let err = read_csv(file("ragged.csv", "1,0,1\n0,1\n")).unwrap_err().to_string();
    assert!(err.contains("ragged.csv") && err.contains("line 2") && err.contains("2 answers"), "{err}");
    let err = read_csv(file("value.csv", "1,0,1\n0,2,1\n")).unwrap_err().to_string();
    assert!(err.contains("line 2") && err.contains("\"2\""), "{err}");
    assert!(read_csv(file("empty.csv", "\n\n")).is_err());
    assert_eq!(read_csv(file("one.csv", "1\n0\n")).unwrap().skipped, 2);
    // The header is the first non-blank row (as the format sniffer reads it), numbered columns too.
    let h = read_csv(file("blank-first.csv", "\n\nq1,q2,q3\n0,1,1\n1,1,0\n")).unwrap();
    assert_eq!((h.items, h.students.len()), (3, 2));
    let h = read_csv(file("numbered.csv", "0,1,2,3,4\n0,1,1,0,1\n1,1,0,0,0\n")).unwrap();
    assert_eq!((h.items, h.students.len()), (5, 2));
    // Numbered from 0 or from 1 on any width (pandas' `to_csv(index=False)` of unnamed columns):
    // a header, never a student answering 0, 1, 2 nor an error about the "2".
    for (header, width) in [("0,1,2", 3), ("0,1,2,3", 4), ("1,2", 2), ("1,2,3,4", 4)] {
        let rows = ["1"; 4][..width].join(",") + "\n" + &["0"; 4][..width].join(",") + "\n";
        let h = read_csv(file("numbered-any.csv", &format!("{header}\n{rows}"))).unwrap();
        assert_eq!((h.items, h.students.len()), (width, 2), "{header}");
        assert!(h.students[0].correct.iter().all(|&c| c), "{header}");
    }
    // `0,1` on two columns is a student's answers: it is one as much as it may be a header.
    let h = read_csv(file("two.csv", "0,1\n1,1\n")).unwrap();
    assert_eq!((h.items, h.students.len()), (2, 2));
    assert_eq!(h.students[0].correct, [false, true]);
    // A first row of answers with a stray value is an error naming line 1, not a dropped "header".
    let err = read_csv(file("stray.csv", "0,1,NA\n1,1,0\n0,0,1\n")).unwrap_err().to_string();
    assert!(err.contains("line 1") && err.contains("\"NA\""), "{err}");
    // A header of another width than the rows (a damaged file, or an index column that pandas
    // would read as one) is an error, not an extra item read without a word.
    let err = read_csv(file("wide.csv", "q1,q2,q3\n0,1,1,0\n1,1,0,1\n")).unwrap_err().to_string();
    assert!(err.contains("line 2: 4 answers, but the header (line 1) names 3 columns"), "{err}");
}

/// Students skipped while reading are counted once whichever way the histories are split.
#[test]
fn the_skipped_count_survives_a_split() {
    let h = read_three_line(file("short.txt", "1\n3\n1\n3\n1,2,3\n0,1,1\n1\n4\n0\n2\n1,2\n1,0\n")).unwrap();
    assert_eq!((h.students.len(), h.skipped), (2, 2));
    for fraction in [0.0, 0.5, 1.0] {
        let (a, b) = h.split(fraction, 7).unwrap();
        assert_eq!(a.skipped + b.skipped, 2, "fraction {fraction}");
        assert_eq!(a.students.len() + b.students.len(), 2);
    }
    assert_eq!(h.subset(&[1]).skipped, 0, "a subset drops no one");
}

#[test]
fn three_line_students() {
    let text = "3\n5,2,5,\n1,0,1,\n1\n7\n1\n2\n0,1\n0,0\n";
    let h = read_three_line(file("ok.txt", text)).unwrap();
    assert_eq!(h.items, 6, "largest id + 1 (the one-answer student is skipped)");
    assert_eq!(h.skipped, 1);
    assert_eq!(h.students.len(), 2);
    assert_eq!(h.students[0].items, [5, 2, 5]);
    assert_eq!(h.students[0].correct, [true, false, true]);
    for (name, text, want) in [
        ("count.txt", "x\n1,2\n0,1\n", "line 1"),
        ("ids.txt", "3\n1,2\n0,1,1\n", "line 2: 2 item ids, but line 1 says 3"),
        ("answers.txt", "2\n1,2\n0\n", "line 3: 1 answers"),
        ("id.txt", "2\n1,-2\n0,1\n", "item id \"-2\""),
        ("bit.txt", "2\n1,2\n0,yes\n", "\"yes\""),
        ("cut.txt", "2\n1,2\n0,1\n2\n1,2\n", "line 4: the file ends in the middle"),
    ] {
        let err = read_three_line(file(name, text)).unwrap_err().to_string();
        assert!(err.contains(name) && err.contains(want), "{name}: {err}");
    }
}

/// Windows cut long histories so that each answer after a student's first is predicted once, in
/// order, with the oracle probabilities cut alike; short histories stay whole.
#[test]
fn windows_keep_every_prediction_once() {
    let o = SimulationOptions { students: 7, items: 23, ..SimulationOptions::default() };
    let h = simulate(&o).unwrap();
    for max_len in [2, 3, 5, 22, 23, 24, 1000] {
        let w = h.windows(max_len).unwrap();
        assert!(w.longest() <= max_len);
        assert!(w.students.iter().all(|a| a.len() >= 2));
        // The predicted answers (all but each window's first) and their oracle probabilities,
        // in order, are those of the whole histories.
        let predicted = |h: &Histories| -> Vec<(u32, bool, f32)> {
            h.students
                .iter()
                .zip(h.true_probabilities.as_ref().unwrap())
                .flat_map(|(a, p)| (1..a.len()).map(move |t| (a.items[t], a.correct[t], p[t])))
                .collect()
        };
        assert_eq!(predicted(&w), predicted(&h), "max_len {max_len}");
        // 23 answers: 22 predictions, at most L − 1 per window.
        assert_eq!(w.students.len(), 7 * 22usize.div_ceil(max_len - 1), "max_len {max_len}");
    }
    assert!(h.windows(1).is_err() && h.windows(0).is_err());
    let mut one = Histories::new(3);
    one.students.push(Answers { items: vec![0, 1, 2, 0, 1, 2, 0], correct: vec![true; 7] });
    let w = one.windows(4).unwrap();
    let items: Vec<Vec<u32>> = w.students.iter().map(|a| a.items.clone()).collect();
    assert_eq!(items, vec![vec![0, 1, 2, 0], vec![0, 1, 2, 0]]);
    assert_eq!((one.answers(), one.longest()), (7, 7));
}

/// Histories built by hand through the public fields are checked before they are cut: each rule
/// of `Histories::check` refused with the student named, by `check` and by `windows` alike.
#[test]
fn inconsistent_histories_are_refused_by_name() {
    let o = SimulationOptions { students: 3, items: 5, ..SimulationOptions::default() };
    let h = simulate(&o).unwrap();
    h.check().unwrap();
    type Damage = fn(&mut Histories);
    let cases: [(Damage, &str); 4] = [
        (|h| h.students[1].correct.truncate(1), "student 1: "),
        (|h| h.students[2].items[3] = 5, "student 2, answer 3: item 5, but the ids are 0..5"),
        (
            |h| h.true_probabilities.as_mut().unwrap().truncate(2),
            "2 lists of true probabilities for 3 students",
        ),
        (|h| h.true_probabilities.as_mut().unwrap()[0].truncate(2), "student 0: "),
    ];
    for (damage, want) in cases {
        let mut bad = h.clone();
        damage(&mut bad);
        for err in [bad.check().unwrap_err(), bad.windows(4).unwrap_err()] {
            assert!(err.to_string().contains(want), "{want}: {err}");
        }
    }
}

/// The format is told from the content (the paper's three-line files are named `*.csv`), and an
/// item → concept map is read with its errors named.
#[test]
fn formats_are_sniffed_and_concepts_read() {
    use backprop::data::knowledge::{Format, read, read_concepts};
    let three = file("builder_train.csv", "3\n5,2,5,\n1,0,1,\n2\n0,1\n0,0\n");
    let csv = file("answers.txt", "q1,q2,q3\n1,0,1\n0,0,1\n");
    assert_eq!(Format::sniff(&three).unwrap(), Format::ThreeLine);
    assert_eq!(Format::sniff(&csv).unwrap(), Format::Csv);
    assert_eq!(Format::sniff(file("bits.csv", "1,0,1\n")).unwrap(), Format::Csv);
    // A count line with trailing commas, as the three-line reader takes it.
    let commas = file("commas.csv", "3,,\n5,2,5,\n1,0,1,\n");
    assert_eq!(Format::sniff(&commas).unwrap(), Format::ThreeLine);
    assert_eq!(read(&commas, None).unwrap().students.len(), 1);
    let spaced = file("spaced.csv", "3 ,\n5,2,5\n1,0,1\n");
    assert_eq!(Format::sniff(&spaced).unwrap(), Format::ThreeLine);
    assert_eq!(read(&spaced, None).unwrap().students.len(), 1);
    assert_eq!(read(&three, None).unwrap(), read_three_line(&three).unwrap());
    assert_eq!(read(&csv, None).unwrap(), read_csv(&csv).unwrap());
    assert!(read(&three, Some(Format::Csv)).is_err(), "told the wrong format, the reader says why");
    let e = Format::sniff(file("prose.txt", "hello world\nmore words\n")).unwrap_err().to_string();
    assert!(e.contains("prose.txt") && e.contains("three lines") && e.contains("CSV"), "{e}");
    assert!(Format::sniff(file("nothing.txt", "\n\n")).is_err());

    let map = read_concepts(file("concepts.csv", "item,concept\n0,2\n3,1\n\n1,2\n")).unwrap();
    assert_eq!(map, [Some(2), Some(2), None, Some(1)]);
    let e = read_concepts(file("twice.csv", "0,1\n0,2\n")).unwrap_err().to_string();
    assert!(e.contains("line 2") && e.contains("item 0"), "{e}");
    let e = read_concepts(file("bad.csv", "0,1\nx,2\n")).unwrap_err().to_string();
    assert!(e.contains("line 2") && e.contains("item,concept"), "{e}");
    assert!(read_concepts(file("huge.csv", "0,1\n1000000,2\n")).is_err(), "ids above MAX_ITEM_ID");
    // The header is the first non-blank line, and only a line without a number is one: an item
    // with two concepts on line 1 is an error as it is further down, not a line skipped.
    let map = read_concepts(file("blank-first.csv", "\n\nquestion_id,skill_id\n4,1\n")).unwrap();
    assert_eq!(map, [None, None, None, None, Some(1)]);
    let e = read_concepts(file("two-concepts.csv", "5,3,7\n6,1\n")).unwrap_err().to_string();
    assert!(e.contains("line 1") && e.contains("item,concept"), "{e}");
    let e = read_concepts(file("two-concepts-later.csv", "6,1\n5,3,7\n")).unwrap_err().to_string();
    assert!(e.contains("line 2") && e.contains("item,concept"), "{e}");
}

/// pandas' `to_csv` with its index: a header whose first column has no name is refused as an
/// index column (as wide as the rows, it had been read as an item when every index was 0 or 1),
/// and a row whose first column is a count past 1 says so.
#[test]
fn a_pandas_index_column_is_refused_by_name() {
    let err = read_csv(file("pd2.csv", ",0,1,2,3\n0,1,0,1,1\n1,0,1,1,0\n")).unwrap_err().to_string();
    assert!(
        err.contains("line 1: the header's first column has no name and the rows' first column"),
        "{err}"
    );
    // A blank first header cell over answers (a spreadsheet's empty A1) still reads.
    let h = read_csv(file("blank_a1.csv", ",q2,q3\n1,0,1\n0,1,1\n1,1,0\n")).unwrap();
    assert_eq!((h.items, h.students.len()), (3, 3));
    let err = read_csv(file("pd_no_header.csv", "0,1,0,1\n1,0,1,1\n2,1,1,0\n")).unwrap_err().to_string();
    assert!(
        err.contains("line 3: the first column is 2, not an answer") && err.contains("index=False"),
        "{err}"
    );
    // A named first column is a header as before, and rows of answers still read.
    let h = read_csv(file("named.csv", "a,b,c\n0,1,0\n1,1,0\n")).unwrap();
    assert_eq!((h.items, h.students.len()), (3, 2));
}

/// An empty or blank three-line file is an error, as it is for `read_csv` (it had read as 0
/// students of 0 items); a file of students too short to use reads as none, counted.
#[test]
fn an_empty_three_line_file_is_an_error() {
    for text in ["", "\n\n  \n"] {
        let err = read_three_line(file("empty.txt", text)).unwrap_err().to_string();
        assert!(err.contains("no students in the file"), "{text:?}: {err}");
        let err = read_csv(file("empty.csv", text)).unwrap_err().to_string();
        assert!(err.contains("no students in the file"), "{text:?}: {err}");
    }
    let h = read_three_line(file("short_only.txt", "1\n3\n1\n")).unwrap();
    assert_eq!((h.students.len(), h.skipped), (0, 1));
}

/// A negative practice gain is refused, as the simulator's documentation says.
#[test]
fn a_negative_practice_gain_is_refused() {
    let o = SimulationOptions { students: 4, practice_gain: -1.0, ..SimulationOptions::default() };
    let err = simulate(&o).unwrap_err().to_string();
    assert!(err.contains("invalid settings"), "{err}");
    assert!(simulate(&SimulationOptions { practice_gain: 0.0, ..o }).is_ok(), "no gain is allowed");
}
