//! The tiny GPT's data and baselines, shared by the example and its test (`tests/tiny_gpt.rs`):
//! the characters of `docs/*.md`, windows of them, and the unigram and bigram models.

use backprop::prelude::*;

pub fn corpus() -> String {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("docs/ is part of the crate")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    files.sort();
    files.iter().map(|p| std::fs::read_to_string(p).expect("readable docs")).collect::<Vec<_>>().join("\n")
}

/// Windows of `steps` characters (ids as f32) and the next character of each step, `stride` apart:
/// every start `s` with `s + steps < ids.len()` (the last step's next character exists).
pub fn windows(ids: &[usize], steps: usize, stride: usize) -> Result<Dataset> {
    let starts: Vec<usize> = (0..ids.len().saturating_sub(steps)).step_by(stride).collect();
    let x: Vec<f32> = starts.iter().flat_map(|&s| ids[s..s + steps].iter().map(|&i| i as f32)).collect();
    let y: Vec<f32> =
        starts.iter().flat_map(|&s| ids[s + 1..s + steps + 1].iter().map(|&i| i as f32)).collect();
    let n = starts.len();
    Dataset::new(Tensor::from_vec(&[n, steps], x)?, Targets::Values(Tensor::from_vec(&[n, steps], y)?))
}

/// Cross-entropy (nats per character) of the unigram and the bigram models fitted on `train`
/// (add-½ smoothing), on `test`.
///
/// # Panics
/// If `test` has fewer than two characters (no next character to predict).
pub fn baselines(train: &[usize], test: &[usize], vocab: usize) -> (f64, f64) {
    assert!(test.len() >= 2, "the held-out text needs at least two characters, has {}", test.len());
    let mut uni = vec![0.5f64; vocab];
    let mut bi = vec![vec![0.5f64; vocab]; vocab];
    for w in train.windows(2) {
        uni[w[1]] += 1.0;
        bi[w[0]][w[1]] += 1.0;
    }
    let uni_total: f64 = uni.iter().sum();
    let bi_totals: Vec<f64> = bi.iter().map(|row| row.iter().sum()).collect();
    let (mut u, mut b) = (0.0, 0.0);
    for w in test.windows(2) {
        u -= (uni[w[1]] / uni_total).ln();
        b -= (bi[w[0]][w[1]] / bi_totals[w[0]]).ln();
    }
    let n = (test.len() - 1) as f64;
    (u / n, b / n)
}

/// The characters of `text`, sorted, and `text` as their indices.
pub fn encode(text: &str) -> (Vec<char>, Vec<usize>) {
    let chars: Vec<char> = std::collections::BTreeSet::from_iter(text.chars()).into_iter().collect();
    let ids = text.chars().map(|c| chars.binary_search(&c).expect("in the vocabulary")).collect();
    (chars, ids)
}
