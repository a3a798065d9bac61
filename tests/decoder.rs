//! `DecoderOnly` (GPT-style) against the same stack built from PyTorch 2.15's modules
//! (`tests/fixtures/make_decoder_fixture.py`): logits at valid steps and every parameter's
//! gradient, with its own head and with the head tied to the token table (whose gradient is then
//! the sum of both paths); a finite-difference check of the tied model; a tiny language model
//! that learns.

mod common;

use backprop::layers::{DecoderOnly, TransformerEncoderLayer, named_params};
use backprop::prelude::*;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/decoder.safetensors");

#[test]
fn matches_pytorch_with_and_without_a_tied_head() {
    let bytes = std::fs::read(FIXTURE).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = |name: &str| common::fixture_tensor(&file, name);
    for case in ["untied", "tied"] {
        let mut gpt = DecoderOnly::new(11, 8, 2, 2, 16, 6);
        if case == "tied" {
            gpt = gpt.tied();
        }
        let names: Vec<String> = named_params(&gpt).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names.len(), 2 + 2 * 12 + 2 + if case == "tied" { 0 } else { 2 }, "{names:?}");
        let weights: Vec<(String, Tensor)> =
            names.iter().map(|n| (n.clone(), t(&format!("{case}.{n}")))).collect();
        backprop::io::load_tensors(&mut gpt, &weights, &LoadOptions::new()).unwrap(); // strict
        let ids = t(&format!("{case}.ids"));
        let lengths: Vec<usize> = t(&format!("{case}.lengths")).data().iter().map(|&v| v as usize).collect();
        let mut logits = gpt.forward(&ids, Pass::TRAIN.with_lengths(&lengths));
        for (s, &len) in lengths.iter().enumerate() {
            logits.outer_mut(s)[len * 11..].fill(0.0); // valid steps only (see the fixture)
        }
        common::assert_close_to(&logits, &t(&format!("{case}.logits")), 1e-5, &format!("{case}: logits"));
        gpt.backward(&t(&format!("{case}.g")), InputGrad::NotNeeded);
        for (name, p) in named_params(&gpt) {
            common::assert_close_to(
                &p.grad,
                &t(&format!("{case}.grad.{name}")),
                2e-5,
                &format!("{case}: dL/d{name}"),
            );
        }
    }
}

/// The tied table's gradient (both paths) and a few others by central differences of
/// `L = Σ logits ⊙ r`, in f64 sums. (`check_layer` perturbs the input too, and ids are not
/// differentiable, so the parameters are checked here one entry at a time.)
#[test]
fn the_tied_model_passes_the_finite_difference_check() {
    let mut gpt = DecoderOnly::new(7, 4, 2, 1, 8, 5).tied();
    // Tables of unit scale (they start at 0.02): a step of 1e-2 is then small against them.
    for (name, p) in backprop::layers::named_params_mut(&mut gpt) {
        if name == "tok.weight" || name == "pos.weight" {
            p.value.data_mut().iter_mut().for_each(|v| *v *= 50.0);
        }
    }
    let ids = Tensor::from_vec(&[2, 5], vec![1., 6., 2., 2., 0., 3., 3., 5., 4., 1.]).unwrap();
    let lengths = [5, 3];
    let r = Tensor::randn(&[2, 5, 7], 0.0, 1.0, 9);
    let objective = |gpt: &mut DecoderOnly| -> f64 {
        let y = gpt.forward(&ids, Pass::TRAIN.with_lengths(&lengths));
        y.data().iter().zip(r.data()).map(|(&a, &b)| a as f64 * b as f64).sum()
    };
    objective(&mut gpt);
    backprop::layers::zero_grad(&mut gpt);
    gpt.backward(&r, InputGrad::NotNeeded);
    let analytic: Vec<(String, Tensor)> =
        named_params(&gpt).into_iter().map(|(n, p)| (n, p.grad.clone())).collect();
    let eps = 1e-2f32;
    let mut checked = 0;
    for (name, grad) in &analytic {
        if ![
            "tok.weight",
            "pos.weight",
            "blocks.0.self_attn.in_proj_weight",
            "blocks.0.linear2.weight",
            "norm.bias",
        ]
        .contains(&name.as_str())
        {
            continue;
        }
        for i in (0..grad.len()).step_by((grad.len() / 12).max(1)) {
            let set = |gpt: &mut DecoderOnly, v: f32| {
                let mut params = backprop::layers::named_params_mut(gpt);
                let p = &mut params.iter_mut().find(|(n, _)| n == name).unwrap().1;
                let old = p.value.data()[i];
                p.value.data_mut()[i] = v;
                old
            };
            let orig = set(&mut gpt, 0.0);
            set(&mut gpt, orig + eps);
            let up = objective(&mut gpt);
            set(&mut gpt, orig - eps);
            let down = objective(&mut gpt);
            set(&mut gpt, orig);
            let numeric = ((up - down) / (2.0 * eps as f64)) as f32;
            let a = grad.data()[i];
            let err = (a - numeric).abs() / a.abs().max(numeric.abs()).max(1e-2);
            assert!(err < 2e-2, "{name}[{i}]: analytic {a}, numeric {numeric}");
            checked += 1;
        }
    }
    assert!(checked >= 50, "{checked} entries checked");
}

#[test]
fn bad_input_is_refused_by_name_and_a_tiny_model_learns_to_count() {
    let gpt = DecoderOnly::new(5, 8, 2, 1, 16, 4);
    let e = gpt.output_shape(&[2, 5]).unwrap_err().to_string();
    assert!(e.contains("DecoderOnly(vocab=5") && e.contains("1 ≤ T ≤ 4") && e.contains("5"), "{e}");
    assert!(gpt.check_values(&Tensor::from_vec(&[1, 1], vec![5.0]).unwrap()).is_err(), "id 5 of 5");
    // Next token = current + 1 (mod 5): needs only the current token; a tied 1-block model learns it.
    let n = 40;
    let starts: Vec<f32> = (0..n).map(|s| (s % 5) as f32).collect();
    let ids = Tensor::from_vec(
        &[n, 4],
        starts.iter().flat_map(|&a| (0..4).map(move |k| (a + k as f32) % 5.0)).collect(),
    )
    .unwrap();
    let next: Vec<f32> = ids.data().iter().map(|&v| (v + 1.0) % 5.0).collect();
    let mut model =
        Sequential::builder(&[4]).add(DecoderOnly::new(5, 8, 2, 1, 16, 4).tied()).build().unwrap();
    let loss = CrossEntropyLoss::new();
    let targets = Tensor::from_vec(&[n, 4], next).unwrap();
    let data = Dataset::new(ids, Targets::Values(targets)).unwrap();
    let opts = FitOptions::new().epochs(40).batch_size(8).seed(2).verbose(false);
    let history = model.fit(&data, &loss, &mut Adam::new(1e-2), opts).unwrap();
    let last = history.epochs.last().unwrap().train_loss;
    assert!(last < 0.1, "loss {} → {last}", history.epochs[0].train_loss);
}

/// Every parameter of a model, by name.
fn params_of(model: &Sequential) -> std::collections::HashMap<String, Vec<f32>> {
    named_params(model).into_iter().map(|(n, p)| (n, p.value.data().to_vec())).collect()
}

#[test]
fn the_model_wide_seed_draws_every_weight_of_the_stack_and_blocks_start_apart() {
    let build = |seed: u64| {
        Sequential::builder(&[5])
            .add(DecoderOnly::new(8, 8, 2, 2, 16, 5)) // (8 letters: its logits feed blocks of 8)
            .add(TransformerEncoderLayer::new(8, 2, 16))
            .add(TransformerEncoderLayer::new(8, 2, 16))
            .seed(seed)
            .build()
            .unwrap()
    };
    let (one, two) = (params_of(&build(1)), params_of(&build(2)));
    let weights: Vec<&String> = one.keys().filter(|n| n.ends_with("weight") && !n.contains("norm")).collect();
    for name in [
        "0.blocks.0.linear1.weight",
        "0.blocks.1.self_attn.in_proj_weight",
        "0.head.weight",
        "1.linear1.weight",
        "2.linear2.weight",
    ] {
        assert!(weights.iter().any(|w| *w == name), "{name} in {weights:?}");
    }
    for name in &weights {
        assert_ne!(one[*name], two[*name], "{name} does not follow the model-wide seed");
    }
    // Two blocks of the same shape never start alike.
    assert_ne!(one["1.linear1.weight"], one["2.linear1.weight"]);
    assert_ne!(one["0.blocks.0.linear2.weight"], one["0.blocks.1.linear2.weight"]);
    // The same seed, the same model.
    assert_eq!(params_of(&build(1)), one);
}

#[test]
fn a_stack_with_dropout_draws_other_masks_in_each_block_outside_fit() {
    let mut gpt = DecoderOnly::new(11, 8, 2, 2, 16, 5).dropout(0.5);
    let mut generators = Vec::new();
    gpt.visit(&mut |name, s| {
        if let State::Rng(r) = s {
            generators.push((name.to_string(), format!("{r:?}")));
        }
    });
    let of = |block: usize, what: &str| {
        generators
            .iter()
            .find(|(n, _)| *n == format!("blocks.{block}.{what}"))
            .map(|(_, r)| r.clone())
            .unwrap()
    };
    for what in ["dropout.rng", "dropout1.rng", "dropout2.rng", "self_attn.rng"] {
        assert_ne!(of(0, what), of(1, what), "{what}");
    }
    // And the pass itself: the same forward pass twice in train mode differs from one block's
    // masks repeated (a smoke check that the generators are used).
    let ids = Tensor::from_vec(&[1, 5], vec![1., 2., 3., 4., 5.]).unwrap();
    let (a, b) = (gpt.forward(&ids, Pass::TRAIN), gpt.forward(&ids, Pass::TRAIN));
    assert_ne!(a.data(), b.data());
}
