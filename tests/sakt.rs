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
