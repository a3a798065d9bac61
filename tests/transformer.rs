//! `TransformerEncoderLayer` against PyTorch 2.15's `nn.TransformerEncoderLayer(batch_first=True)`
//! (`tests/fixtures/make_transformer_fixture.py`): post-LN with ReLU and key padding, pre-LN with
//! GELU, a causal mask and key padding — outputs at valid steps, the input's gradient and all
//! twelve parameters' gradients under PyTorch's names; the finite-difference check; bad input.

mod common;

use backprop::gradcheck::{Options, check_layer};
use backprop::layers::{FeedForwardActivation, TransformerEncoderLayer, named_params};
use backprop::prelude::*;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/transformer.safetensors");

#[test]
fn matches_pytorch_outputs_and_gradients() {
    let bytes = std::fs::read(FIXTURE).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().unwrap();
    let t = |name: &str| common::fixture_tensor(&file, name);
    for case in ["post_relu", "pre_gelu_causal"] {
        let m = |key: &str| meta[&format!("{case}.{key}")].clone();
        let x = t(&format!("{case}.x"));
        let (heads, ff): (usize, usize) = (m("h").parse().unwrap(), m("f").parse().unwrap());
        let mut block = TransformerEncoderLayer::new(x.dim(2), heads, ff).dropout(0.0);
        if m("norm_first") == "True" {
            block = block.norm_first();
        }
        if m("act") == "gelu" {
            block = block.activation(FeedForwardActivation::Gelu);
        }
        if m("causal") == "True" {
            block = block.causal();
        }
        let names: Vec<String> = named_params(&block).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names.len(), 12, "{names:?}");
        let weights: Vec<(String, Tensor)> =
            names.iter().map(|n| (n.clone(), t(&format!("{case}.{n}")))).collect();
        backprop::io::load_tensors(&mut block, &weights, &LoadOptions::new()).unwrap(); // strict: every name
        let lengths: Vec<usize> = t(&format!("{case}.lengths")).data().iter().map(|&v| v as usize).collect();
        let mut y = block.forward(&x, Pass::TRAIN.with_lengths(&lengths));
        for (s, &len) in lengths.iter().enumerate() {
            y.outer_mut(s)[len * x.dim(2)..].fill(0.0); // compare valid steps only (see the fixture)
        }
        common::assert_close_to(&y, &t(&format!("{case}.y")), 1e-5, &format!("{case}: y"));
        let dx = block.backward(&t(&format!("{case}.g")), InputGrad::Needed).unwrap();
        common::assert_close_to(&dx, &t(&format!("{case}.dx")), 1e-5, &format!("{case}: dL/dx"));
        for (name, p) in named_params(&block) {
            common::assert_close_to(
                &p.grad,
                &t(&format!("{case}.grad.{name}")),
                1e-5,
                &format!("{case}: dL/d{name}"),
            );
        }
    }
}

#[test]
fn gradients_pass_the_finite_difference_check() {
    let x = Tensor::randn(&[2, 4, 6], 0.0, 1.0, 1);
    for norm_first in [false, true] {
        let mut block =
            TransformerEncoderLayer::new(6, 2, 8).dropout(0.0).activation(FeedForwardActivation::Gelu);
        if norm_first {
            block = block.norm_first().causal();
        }
        let report = check_layer(&mut block, &x, Pass::TRAIN.with_lengths(&[4, 3]), &Options::default());
        assert!(report.passes(2e-2), "norm_first {norm_first}:\n{report}");
    }
}

/// With its dropouts on, in training mode, the block still passes the check: every one of its
/// generators is visited (the three besides the attention's had not been, so their masks changed
/// between the check's nudged passes), and each block of a stack has its own after a reseed
/// (they had all drawn the same masks).
#[test]
fn dropout_generators_are_visited_and_each_block_draws_its_own() {
    let x = Tensor::randn(&[2, 4, 6], 0.0, 1.0, 3);
    let mut block =
        TransformerEncoderLayer::new(6, 2, 8).dropout(0.3).activation(FeedForwardActivation::Gelu);
    let report = check_layer(&mut block, &x, Pass::TRAIN, &Options::default());
    assert!(report.passes(2e-2), "{report}");
    let mut gpt = backprop::layers::DecoderOnly::new(11, 8, 2, 2, 16, 5).dropout(0.1);
    backprop::layers::reseed(&mut gpt, 9);
    let mut rngs = Vec::new();
    gpt.visit(&mut |name, s| {
        if let State::Rng(r) = s {
            rngs.push((name.to_string(), format!("{r:?}")));
        }
    });
    let names: Vec<&str> = rngs.iter().map(|(n, _)| n.as_str()).collect();
    for want in ["blocks.0.dropout.rng", "blocks.1.dropout1.rng", "blocks.1.dropout2.rng"] {
        assert!(names.contains(&want), "{names:?}");
    }
    let state = |name: &str| &rngs.iter().find(|(n, _)| n == name).unwrap().1;
    assert_ne!(state("blocks.0.dropout.rng"), state("blocks.1.dropout.rng"), "each block its own masks");
}

/// A block's seed seeds its dropouts whichever comes first, `seed` or `dropout`: `dropout(p)`
/// keeps the generators (it had put back fixed seeds, so blocks of different seeds drew the same
/// masks outside `fit`), and the attention's generator is seeded even while it drops nothing.
#[test]
fn a_blocks_seed_seeds_its_dropouts_before_or_after_dropout() {
    let x = Tensor::randn(&[2, 4, 6], 0.0, 1.0, 3);
    let masks = |block: TransformerEncoderLayer| {
        let mut block = block;
        // Equal weights for every seed: only the dropout masks can tell two blocks apart.
        let weights: Vec<(String, Tensor)> = named_params(&TransformerEncoderLayer::new(6, 2, 8).seed(0))
            .into_iter()
            .map(|(n, p)| (n, p.value.clone()))
            .collect();
        for ((_, p), (_, w)) in backprop::layers::named_params_mut(&mut block).into_iter().zip(&weights) {
            p.value = w.clone();
        }
        block.forward(&x, Pass::TRAIN)
    };
    let new = || TransformerEncoderLayer::new(6, 2, 8);
    assert_ne!(masks(new().seed(1).dropout(0.2)), masks(new().seed(2).dropout(0.2)));
    assert_ne!(
        masks(new().dropout(0.0).seed(1).dropout(0.2)),
        masks(new().dropout(0.0).seed(2).dropout(0.2))
    );
    assert_eq!(
        masks(new().seed(1).dropout(0.2)),
        masks(new().seed(1).dropout(0.2)),
        "seeded: the same masks"
    );
}

#[test]
fn bad_input_is_refused_by_name_and_a_stack_trains() {
    let block = TransformerEncoderLayer::new(8, 2, 16);
    let e = block.output_shape(&[2, 5, 7]).unwrap_err().to_string();
    assert!(e.contains("TransformerEncoderLayer(8, heads=2") && e.contains("7"), "{e}");
    // A two-block stack learns to copy the first step's sign to every step (it needs attention).
    let (n, t, e) = (64, 4, 8);
    let x = Tensor::randn(&[n, t, e], 0.0, 1.0, 2);
    let labels: Vec<usize> = (0..n).map(|s| usize::from(x.outer(s)[0] > 0.0)).collect();
    let data = Dataset::classification(x, labels).unwrap();
    let mut model = Sequential::builder(&[t, e])
        .add(TransformerEncoderLayer::new(e, 2, 16).norm_first().dropout(0.0))
        .add(TransformerEncoderLayer::new(e, 2, 16).norm_first().dropout(0.0))
        .add(Flatten::new())
        .add(Dense::new(t * e, 2))
        .seed(3)
        .build()
        .unwrap();
    let opts = FitOptions::new().epochs(30).batch_size(16).seed(4).verbose(false);
    let history = model.fit(&data, &CrossEntropyLoss::new(), &mut Adam::new(3e-3), opts).unwrap();
    let (first, last) = (history.epochs[0].train_loss, history.epochs.last().unwrap().train_loss);
    assert!(last < 0.3 * first, "training loss {first} → {last}");
}

/// Per-example gradients (private training) of both variants: each example's row equals that
/// example alone, parameter by parameter.
#[test]
fn per_example_gradients_equal_each_example_alone() {
    use backprop::privacy::per_example::{PerExampleGrads, backward_per_example};
    let (x, g) = (Tensor::randn(&[3, 4, 6], 0.0, 1.0, 5), Tensor::randn(&[3, 4, 6], 0.0, 1.0, 6));
    let lengths = [4, 2, 3];
    for norm_first in [false, true] {
        let mut block = TransformerEncoderLayer::new(6, 2, 8).dropout(0.0);
        if norm_first {
            block = block.norm_first().causal();
        }
        block.forward(&x, Pass::TRAIN.with_lengths(&lengths));
        let mut grads = PerExampleGrads::new();
        grads.start(3);
        let dx = backward_per_example(&mut block, &g, InputGrad::Needed, &mut grads).unwrap();
        assert_eq!(grads.len(), 12);
        block.forward(&x, Pass::TRAIN.with_lengths(&lengths));
        backprop::layers::zero_grad(&mut block);
        assert_eq!(dx, block.backward(&g, InputGrad::Needed).unwrap());
        for s in 0..3 {
            backprop::layers::zero_grad(&mut block);
            block.forward(&x.select_outer(&[s]), Pass::TRAIN.with_lengths(&lengths[s..s + 1]));
            block.backward(&g.select_outer(&[s]), InputGrad::NotNeeded);
            for (k, (name, p)) in named_params(&block).into_iter().enumerate() {
                let row = Tensor::from_vec(p.grad.shape(), grads.slot(k).outer(s).to_vec()).unwrap();
                common::assert_close_to(
                    &row,
                    &p.grad,
                    1e-5,
                    &format!("norm_first {norm_first}, example {s}, {name}"),
                );
            }
        }
    }
}
