//! SAKT, the knowledge-tracing example's attention model (`examples/knowledge_tracing/sakt.rs`):
//! its backward pass — through the cross-attention to both embeddings, the layer norms and the
//! feed-forward network — against central differences, on sequences of different lengths.

#[path = "../examples/knowledge_tracing/model.rs"]
#[allow(dead_code)]
mod model;
#[path = "../examples/knowledge_tracing/sakt.rs"]
#[allow(dead_code)]
mod sakt;

use backprop::gradcheck::{Options, check_model};
use backprop::layers::Mode;
use backprop::model::Inputs;
use backprop::prelude::*;

#[test]
fn sakt_passes_the_finite_difference_check() {
    let items = 5;
    let mut net = sakt::Sakt::new(items, 8, 2, 6, 0.0, 3);
    // answer ids: item + items·right (10 is padding); the next items.
    let answers = Tensor::from_vec(&[2, 5], vec![0., 6., 2., 8., 4., 1., 7., 3., 10., 10.]).unwrap();
    let next = Tensor::from_vec(&[2, 5], vec![1., 2., 3., 4., 0., 2., 3., 0., 0., 0.]).unwrap();
    let inputs =
        Inputs::new().with_lengths("answers", answers, vec![5, 3]).with_lengths("next", next, vec![5, 3]);
    // Gradients below 0.05 are compared absolutely: some are 0 exactly (the keys' bias moves every
    // score of a row alike, which the softmax ignores) and the differences' f32 noise is ~1e-3.
    let opts = Options { atol: 5e-2, ..Options::default() };
    let report = check_model(&mut net, &inputs, Mode::Train, &opts).unwrap();
    assert!(report.passes(5e-2), "{report}");
}

/// Ids that are not ids (`-1`, `0.5`, NaN, an answer id past the padding id) and batches without
/// steps are errors from the models' own passes, not panics or a silent item 0 — SAKT and DKT.
#[test]
fn bad_ids_and_empty_sequences_are_errors_from_both_models() {
    use backprop::model::Model;
    let items = 5;
    let inputs = |answers: Vec<f32>, next: Vec<f32>, t: usize| {
        let n = answers.len() / t.max(1);
        let (a, x) = (Tensor::from_vec(&[n, t], answers).unwrap(), Tensor::from_vec(&[n, t], next).unwrap());
        Inputs::new().with("answers", a).with("next", x)
    };
    let cases: Vec<(Inputs, &str)> = vec![
        (inputs(vec![0., 6.], vec![-1., 2.], 2), "next item -1"),
        (inputs(vec![0., 6.], vec![0.5, 2.], 2), "next item 0.5"),
        (inputs(vec![0., 6.], vec![f32::NAN, 2.], 2), "next item NaN"),
        (inputs(vec![0., 11.], vec![1., 2.], 2), "answer id 11"),
        (inputs(vec![-1., 6.], vec![1., 2.], 2), "answer id -1"),
        (inputs(vec![], vec![], 0), "expected [N, T ≥ 1]"),
    ];
    for (batch, says) in &cases {
        let mut models: Vec<Box<dyn Model>> = vec![
            Box::new(sakt::Sakt::new(items, 8, 2, 6, 0.0, 3)),
            Box::new(model::Dkt::new(items, 8, 8, 0.0, 3)),
        ];
        for m in &mut models {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                m.forward_batch(batch, Mode::Train)
            }));
            let e = result.expect("no panic").unwrap_err().to_string();
            assert!(e.contains(says), "{e}");
        }
    }
}
