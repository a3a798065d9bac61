//! `MultiHeadAttention` (self-attention) against PyTorch 2.15's `nn.MultiheadAttention(E, H,
//! batch_first=True)` (`tests/fixtures/make_attention_fixture.py`): outputs and every gradient,
//! with a causal mask and key padding from the batch's lengths; the finite-difference check;
//! per-example gradients; the masks' convention; what bad input gets.

mod common;

use backprop::gradcheck::{Options, check_layer};
use backprop::prelude::*;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/attention.safetensors");

const PARAMS: [&str; 4] = ["in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"];

#[test]
fn matches_pytorch_outputs_and_gradients() {
    let bytes = std::fs::read(FIXTURE).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().unwrap();
    let t = |name: &str| common::fixture_tensor(&file, name);
    for case in ["plain", "causal_lengths", "one_head"] {
        let x = t(&format!("{case}.x"));
        let heads: usize = meta[&format!("{case}.heads")].parse().unwrap();
        let mut attn = MultiHeadAttention::new(x.dim(2), heads);
        if meta[&format!("{case}.causal")] == "True" {
            attn = attn.causal();
        }
        let weights: Vec<(String, Tensor)> =
            PARAMS.iter().map(|p| (p.to_string(), t(&format!("{case}.{p}")))).collect();
        backprop::io::load_tensors(&mut attn, &weights, &LoadOptions::new()).unwrap();
        let lengths: Vec<usize> = t(&format!("{case}.lengths")).data().iter().map(|&v| v as usize).collect();
        let y = attn.forward(&x, Pass::TRAIN.with_lengths(&lengths));
        common::assert_close_to(&y, &t(&format!("{case}.y")), 1e-5, &format!("{case}: y"));
        let dx = attn.backward(&t(&format!("{case}.g")), InputGrad::Needed).unwrap();
        common::assert_close_to(&dx, &t(&format!("{case}.dx")), 1e-5, &format!("{case}: dL/dx"));
        for (name, p) in backprop::layers::named_params(&attn) {
            common::assert_close_to(
                &p.grad,
                &t(&format!("{case}.grad.{name}")),
                1e-5,
                &format!("{case}: dL/d{name}"),
            );
        }
    }
}

/// The convention in one place: query i attends key j when j < length and, causal, j ≤ i; the
/// weights of every query sum to 1 over exactly those keys; padded queries output 0.
#[test]
fn masks_allow_exactly_the_documented_keys() {
    let (n, t, e) = (2, 5, 4);
    let x = Tensor::randn(&[n, t, e], 0.0, 1.0, 3);
    let lengths = [5, 3];
    for causal in [false, true] {
        let mut attn = MultiHeadAttention::new(e, 2).seed(4);
        if causal {
            attn = attn.causal();
        }
        let y = attn.forward(&x, Pass::EVAL.with_lengths(&lengths));
        let p = attn.attention_weights().unwrap();
        for (s, &len) in lengths.iter().enumerate() {
            for h in 0..2 {
                for i in 0..t {
                    let row = &p.data()[((s * 2 + h) * t + i) * t..][..t];
                    for (j, &w) in row.iter().enumerate() {
                        let allowed = j < len && (!causal || j <= i);
                        assert_eq!(
                            w > 0.0,
                            allowed,
                            "sample {s}, head {h}, query {i}, key {j}, causal {causal}"
                        );
                    }
                    assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
                }
            }
            let padded = &y.outer(s)[len * e..];
            assert!(padded.iter().all(|&v| v == 0.0), "padded steps output 0");
        }
        // A later key changes no earlier output of a causal layer.
        if causal {
            let mut x2 = x.clone();
            x2.data_mut()[(t - 1) * e] += 1.0; // sample 0, last step
            let y2 = attn.forward(&x2, Pass::EVAL.with_lengths(&lengths));
            assert_eq!(&y.outer(0)[..(t - 1) * e], &y2.outer(0)[..(t - 1) * e]);
        }
    }
}

#[test]
fn gradients_pass_the_finite_difference_check() {
    let x = Tensor::randn(&[2, 4, 6], 0.0, 1.0, 1);
    for causal in [false, true] {
        let mut attn = MultiHeadAttention::new(6, 3).seed(2);
        if causal {
            attn = attn.causal();
        }
        let report = check_layer(&mut attn, &x, Pass::TRAIN.with_lengths(&[4, 3]), &Options::default());
        assert!(report.passes(2e-2), "causal {causal}:\n{report}");
    }
}

/// Dropout on the attention weights (`nn.MultiheadAttention(dropout=p)`): with one step each
/// query's only weight is 1, so in training a sequence's output is 0 or `1/(1 − p)` times its
/// evaluation output, exactly, and both happen; evaluation and cross-attention never drop.
#[test]
fn dropped_attention_weights_scale_what_they_keep() {
    let x = Tensor::randn(&[400, 1, 4], 0.0, 1.0, 3);
    let mut attn = MultiHeadAttention::new(4, 1).seed(1).dropout(0.5); // biases start at zero
    let eval = attn.forward(&x, Pass::EVAL);
    let train = attn.forward(&x, Pass::TRAIN);
    let (mut dropped, mut kept) = (0, 0);
    for (t, e) in train.data().chunks_exact(4).zip(eval.data().chunks_exact(4)) {
        if t.iter().all(|&v| v == 0.0) {
            dropped += 1;
        } else {
            assert!(t.iter().zip(e).all(|(t, e)| *t == 2.0 * e), "{t:?} vs 2 × {e:?}");
            kept += 1;
        }
    }
    assert!(dropped > 150 && kept > 150, "{dropped} dropped, {kept} kept of 400");
    assert_eq!(attn.forward(&x, Pass::EVAL), eval, "evaluation never drops");
    assert_eq!(attn.forward(&x, Pass::PREDICT), eval, "prediction never drops");
    assert_eq!(attn.forward_cross(&x, None, &x, None).unwrap(), eval, "cross-attention never drops");
    // p = 1: every weight dropped, every output is the output bias (zero).
    let mut none = MultiHeadAttention::new(4, 1).seed(1).dropout(1.0);
    assert!(none.forward(&x, Pass::TRAIN).data().iter().all(|&v| v == 0.0));
    // The dropout generator is state a model reseeds and restores (visited only when dropping).
    let mut names = Vec::new();
    attn.visit(&mut |name, _| names.push(name.to_string()));
    assert!(names.contains(&"rng".to_string()), "{names:?}");
    let mut names = Vec::new();
    MultiHeadAttention::new(4, 1).visit(&mut |name, _| names.push(name.to_string()));
    assert!(!names.contains(&"rng".to_string()), "{names:?}");
    assert!(std::panic::catch_unwind(|| MultiHeadAttention::new(4, 1).dropout(1.5)).is_err());
}

/// The backward pass through dropped weights, against finite differences (the check reseeds the
/// layer before every forward pass, so each pass drops the same weights), with masks of each
/// kind and on one and two threads; per-example gradients too.
#[test]
fn gradients_through_dropped_weights_pass_the_finite_difference_check() {
    let x = Tensor::randn(&[2, 5, 6], 0.0, 1.0, 1);
    for causal in [false, true] {
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let mut attn = MultiHeadAttention::new(6, 3).seed(2).dropout(0.3);
            if causal {
                attn = attn.causal();
            }
            let pass = Pass::TRAIN.with_lengths(&[5, 3]);
            let report = pool.install(|| check_layer(&mut attn, &x, pass, &Options::default()));
            assert!(report.passes(2e-2), "causal {causal}, {threads} threads:\n{report}");
        }
    }
    // Per example: the examples' gradients add up to the batch's through the same dropped
    // weights (the layer reseeded before each pass, so both passes drop the same ones).
    use backprop::privacy::per_example::{PerExampleGrads, backward_per_example};
    let (x, g) = (Tensor::randn(&[2, 3, 4], 0.0, 1.0, 5), Tensor::randn(&[2, 3, 4], 0.0, 1.0, 6));
    let mut attn = MultiHeadAttention::new(4, 2).seed(7).dropout(0.5);
    let seeded = |attn: &mut MultiHeadAttention| {
        attn.visit_mut(&mut |_, s| {
            if let backprop::layers::StateMut::Rng(r) = s {
                *r = backprop::tensor::rng(11);
            }
        })
    };
    seeded(&mut attn);
    let y = attn.forward(&x, Pass::TRAIN);
    let mut grads = PerExampleGrads::new();
    grads.start(2);
    backward_per_example(&mut attn, &g, InputGrad::NotNeeded, &mut grads).unwrap_or_default();
    backprop::layers::zero_grad(&mut attn);
    seeded(&mut attn);
    assert_eq!(attn.forward(&x, Pass::TRAIN), y, "the same seed drops the same weights");
    attn.backward(&g, InputGrad::NotNeeded);
    for (k, (name, p)) in backprop::layers::named_params(&attn).into_iter().enumerate() {
        let mut sum = Tensor::from_vec(p.grad.shape(), grads.slot(k).outer(0).to_vec()).unwrap();
        sum.axpy(1.0, &Tensor::from_vec(p.grad.shape(), grads.slot(k).outer(1).to_vec()).unwrap());
        common::assert_close_to(&sum, &p.grad, 1e-5, &format!("{name}: the examples' sum"));
    }
}

/// Per-example gradients (private training): each example's row equals that example alone.
#[test]
fn per_example_gradients_equal_each_example_alone() {
    use backprop::privacy::per_example::{PerExampleGrads, backward_per_example};
    let (x, g) = (Tensor::randn(&[3, 4, 6], 0.0, 1.0, 5), Tensor::randn(&[3, 4, 6], 0.0, 1.0, 6));
    let lengths = [4, 2, 3];
    let mut attn = MultiHeadAttention::new(6, 2).causal().seed(7);
    attn.forward(&x, Pass::TRAIN.with_lengths(&lengths));
    let mut grads = PerExampleGrads::new();
    grads.start(3);
    backward_per_example(&mut attn, &g, InputGrad::NotNeeded, &mut grads).unwrap_or_default();
    for s in 0..3 {
        backprop::layers::zero_grad(&mut attn);
        attn.forward(&x.select_outer(&[s]), Pass::TRAIN.with_lengths(&lengths[s..s + 1]));
        attn.backward(&g.select_outer(&[s]), InputGrad::NotNeeded);
        for (k, (name, p)) in backprop::layers::named_params(&attn).into_iter().enumerate() {
            let row = Tensor::from_vec(p.grad.shape(), grads.slot(k).outer(s).to_vec()).unwrap();
            common::assert_close_to(&row, &p.grad, 1e-5, &format!("example {s}, {name}"));
        }
    }
}

#[test]
fn bad_input_is_refused_by_name() {
    let attn = MultiHeadAttention::new(8, 2);
    assert!(attn.attention_weights().is_none(), "no weights before a forward pass");
    let e = attn.output_shape(&[3, 5, 7]).unwrap_err().to_string();
    assert!(
        e.contains("MultiHeadAttention(8, heads=2)") && e.contains("[N, T ≥ 1, 8]") && e.contains("7"),
        "{e}"
    );
    assert!(attn.output_shape(&[3, 0, 8]).is_err() && attn.output_shape(&[5, 8]).is_err());
    let e = std::panic::catch_unwind(|| drop(MultiHeadAttention::new(8, 3))).unwrap_err();
    assert!(e.downcast_ref::<String>().unwrap().contains("3 heads must divide the 8 features"));
    let e =
        Sequential::builder(&[4, 6]).add(MultiHeadAttention::new(8, 2)).build().err().unwrap().to_string();
    assert!(e.contains("MultiHeadAttention") && e.contains("6"), "{e}");
    // Lengths that do not fit: an Err from the model, not a panic.
    let mut model = Sequential::builder(&[4, 8]).add(MultiHeadAttention::new(8, 2)).build().unwrap();
    let x = Tensor::zeros(&[2, 4, 8]);
    assert!(model.predict_with_lengths(&x, &[5, 1], 2).is_err());
    assert!(model.predict_with_lengths(&x, &[0, 1], 2).is_err());
}

/// Cross-attention with `T_q ≠ T_k`, a causal mask aligned at the top left and the memory's own
/// lengths, against PyTorch: output, head-averaged weights, both inputs' gradients, all four
/// parameters'.
#[test]
fn cross_attention_matches_pytorch() {
    let bytes = std::fs::read(FIXTURE).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = |name: &str| common::fixture_tensor(&file, name);
    let mut attn = MultiHeadAttention::new(8, 2).causal();
    let weights: Vec<(String, Tensor)> =
        PARAMS.iter().map(|p| (p.to_string(), t(&format!("cross.{p}")))).collect();
    backprop::io::load_tensors(&mut attn, &weights, &LoadOptions::new()).unwrap();
    let memory_lengths: Vec<usize> = t("cross.memory_lengths").data().iter().map(|&v| v as usize).collect();
    let y = attn.forward_cross(&t("cross.q"), None, &t("cross.m"), Some(&memory_lengths)).unwrap();
    common::assert_close_to(&y, &t("cross.y"), 1e-5, "cross: y");
    let avg = attn.average_attention_weights().unwrap();
    common::assert_close_to(&avg, &t("cross.weights"), 1e-6, "cross: head-averaged weights");
    let (dq, dm) = attn.backward_cross(&t("cross.g"));
    common::assert_close_to(&dq, &t("cross.dq"), 1e-5, "cross: dL/dquery");
    common::assert_close_to(&dm, &t("cross.dm"), 1e-5, "cross: dL/dmemory");
    for (name, p) in backprop::layers::named_params(&attn) {
        common::assert_close_to(
            &p.grad,
            &t(&format!("cross.grad.{name}")),
            1e-5,
            &format!("cross: dL/d{name}"),
        );
    }
    // What does not fit is an Err naming the layer.
    let e =
        attn.forward_cross(&t("cross.q"), None, &Tensor::zeros(&[3, 5, 8]), None).unwrap_err().to_string();
    assert!(e.contains("the query has 2 sequences, the memory 3"), "{e}");
    let e = attn.forward_cross(&t("cross.q"), Some(&[4, 1]), &t("cross.m"), None).unwrap_err().to_string();
    assert!(e.contains("query lengths [4, 1]"), "{e}");
    assert!(attn.forward_cross(&t("cross.q"), None, &Tensor::zeros(&[2, 5, 7]), None).is_err());
}

/// Each of PyTorch's mask conventions read into the crate's one: key padding as lengths, an
/// attention mask as causal or not; what the crate cannot express is refused by name.
#[test]
fn pytorch_masks_convert_from_each_form() {
    use backprop::layers::attention::{TorchMask, causal_from_torch, key_padding_from_torch};
    let pad = |v: Vec<f32>| Tensor::from_vec(&[2, 4], v).unwrap();
    // Lengths 4 and 2, in each form.
    let masked = pad(vec![0., 0., 0., 0., 0., 0., 1., 1.]);
    let allows = pad(vec![1., 1., 1., 1., 1., 1., 0., 0.]);
    let ninf = f32::NEG_INFINITY;
    let additive = pad(vec![0., 0., 0., 0., 0., 0., ninf, ninf]);
    assert_eq!(key_padding_from_torch(&masked, TorchMask::TrueMasks).unwrap(), [4, 2]);
    assert_eq!(key_padding_from_torch(&allows, TorchMask::TrueAllows).unwrap(), [4, 2]);
    assert_eq!(key_padding_from_torch(&additive, TorchMask::Additive).unwrap(), [4, 2]);
    // Not padding at the end, fully masked, a bias: refused.
    let e =
        key_padding_from_torch(&pad(vec![0., 1., 0., 0., 0., 0., 0., 0.]), TorchMask::TrueMasks).unwrap_err();
    assert!(e.to_string().contains("row 0"), "{e}");
    let e = key_padding_from_torch(&pad(vec![1.; 8]), TorchMask::TrueMasks).unwrap_err();
    assert!(e.to_string().contains("fully masked"), "{e}");
    assert!(key_padding_from_torch(&pad(vec![0.5; 8]), TorchMask::Additive).is_err());
    assert!(key_padding_from_torch(&Tensor::zeros(&[4]), TorchMask::TrueMasks).is_err());
    // Causal 3 × 5 (top-left aligned) in each form, all-allowed, and an arbitrary pattern.
    let tri = |allowed: f32, masked: f32| {
        Tensor::from_vec(&[3, 5], (0..15).map(|k| if k % 5 <= k / 5 { allowed } else { masked }).collect())
            .unwrap()
    };
    assert!(causal_from_torch(&tri(0.0, 1.0), TorchMask::TrueMasks).unwrap());
    assert!(causal_from_torch(&tri(1.0, 0.0), TorchMask::TrueAllows).unwrap());
    assert!(causal_from_torch(&tri(0.0, ninf), TorchMask::Additive).unwrap());
    assert!(!causal_from_torch(&Tensor::zeros(&[3, 5]), TorchMask::TrueMasks).unwrap());
    let mut odd = tri(0.0, 1.0);
    odd.data_mut()[0] = 1.0;
    assert!(
        causal_from_torch(&odd, TorchMask::TrueMasks).unwrap_err().to_string().contains("neither causal")
    );
}

/// `scaled_dot_product_attention` on its own against `F.scaled_dot_product_attention` with a
/// boolean mask in PyTorch's SDPA convention (True = allowed), read into the crate's one: causal
/// at the top left with `T_q ≠ T_k`, `d ≠ d_v`, padded keys; the output and all three gradients.
#[test]
fn scaled_dot_product_attention_matches_pytorch() {
    use backprop::layers::attention::{scaled_dot_product_attention, scaled_dot_product_attention_backward};
    let bytes = std::fs::read(FIXTURE).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = |name: &str| common::fixture_tensor(&file, name);
    let (q, k, v) = (t("sdpa.q"), t("sdpa.k"), t("sdpa.v"));
    let lengths: Vec<usize> = t("sdpa.key_lengths").data().iter().map(|&x| x as usize).collect();
    let (o, p) = scaled_dot_product_attention(&q, &k, &v, true, Some(&lengths)).unwrap();
    common::assert_close_to(&o, &t("sdpa.o"), 1e-5, "SDPA: O");
    let (dq, dk, dv) = scaled_dot_product_attention_backward(&q, &k, &v, &p, &t("sdpa.g")).unwrap();
    common::assert_close_to(&dq, &t("sdpa.dq"), 1e-5, "SDPA: dQ");
    common::assert_close_to(&dk, &t("sdpa.dk"), 1e-5, "SDPA: dK");
    common::assert_close_to(&dv, &t("sdpa.dv"), 1e-5, "SDPA: dV");
    // What does not fit is an Err naming the shapes or the lengths.
    let e = scaled_dot_product_attention(&q, &v, &v, false, None).unwrap_err().to_string();
    assert!(e.contains("do not fit"), "{e}");
    assert!(scaled_dot_product_attention(&q, &k, &v, false, Some(&[6, 1])).is_err());
    assert!(scaled_dot_product_attention_backward(&q, &k, &v, &o, &t("sdpa.g")).is_err());
}
