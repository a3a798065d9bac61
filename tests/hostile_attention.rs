//! The attention layers against hostile shapes and misuse, one test per defect a review of the
//! wave-3 surfaces found: sizes whose attention weights could never exist are errors (not a
//! wrapped length, not an aborted allocation), zero widths are refused when a model is built, a
//! backward pass that cannot be right panics before it touches a gradient, and an ONNX export
//! that would need a table larger than a file refuses by name.

mod common;

use backprop::layers::attention::{scaled_dot_product_attention, scaled_dot_product_attention_backward};
use backprop::layers::{DecoderOnly, PositionEmbedding, SinusoidalPositions, TransformerEncoderLayer};
use backprop::prelude::*;

use common::panic_message;

/// Every parameter's gradient, in visiting order.
fn gradients(layer: &dyn Layer) -> Vec<f32> {
    let mut all = Vec::new();
    layer.visit(&mut |_, state| {
        if let State::Param(p) = state {
            all.extend_from_slice(p.grad.data());
        }
    });
    all
}

#[test]
fn attention_weights_that_could_never_exist_are_errors() {
    // An empty batch of 2³² steps: [N·H, T, T] would wrap to 0 in unchecked arithmetic.
    let mha = MultiHeadAttention::new(8, 2);
    let err = mha.output_shape(&[0, 1 << 32, 8]).unwrap_err().to_string();
    assert!(err.contains("attention weights") && err.contains("MultiHeadAttention(8, heads=2)"), "{err}");
    let huge = Tensor::zeros(&[0, 1, 1 << 32, 1]);
    let err = scaled_dot_product_attention(&huge, &huge, &huge, false, None).unwrap_err().to_string();
    assert!(err.contains("more values than a tensor can hold"), "{err}");
    // Cross-attention: the queries and the memory each fit, their product of steps does not.
    let mut mha = MultiHeadAttention::new(8, 2);
    let (q, m) = (Tensor::zeros(&[0, 1 << 31, 8]), Tensor::zeros(&[0, 1 << 33, 8]));
    let err = mha.forward_cross(&q, None, &m, None).unwrap_err().to_string();
    assert!(err.contains("attention weights"), "{err}");
    // A model built for such sequences is refused when it is built.
    let err = Sequential::builder(&[1 << 32, 8]).add(MultiHeadAttention::new(8, 2)).build().unwrap_err();
    assert!(err.to_string().contains("attention weights"), "{err}");
}

#[test]
fn zero_widths_are_refused_by_name() {
    // (A model's builder already refuses an input with an axis of 0: these are the layers on
    // their own, as a struct model holds them.)
    let cases: Vec<(Box<dyn Layer>, &str)> = vec![
        (Box::new(MultiHeadAttention::new(0, 1)), "MultiHeadAttention(0, heads=1) has no features"),
        (Box::new(TransformerEncoderLayer::new(0, 1, 4)), "LayerNorm"),
        (Box::new(SinusoidalPositions::new(0)), "SinusoidalPositions(0) has no features"),
        (Box::new(PositionEmbedding::new(8, 0)), "has no features"),
    ];
    for (layer, want) in cases {
        let err = layer.output_shape(&[2, 4, 0]).unwrap_err().to_string();
        assert!(err.contains(want), "{}: {err}", layer.describe());
    }
    // A block whose feed-forward layer has no units is refused when its model is built.
    let err = Sequential::builder(&[4, 8]).add(TransformerEncoderLayer::new(8, 2, 0)).build().unwrap_err();
    assert!(err.to_string().contains("Dense(8→0)"), "{err}");
}

#[test]
fn a_decoder_checks_every_part_when_built() {
    // An embedding of width 0, and a feed-forward layer of no units: named, not met as a panic
    // inside the forward pass.
    let err = DecoderOnly::new(11, 0, 1, 1, 4, 8).output_shape(&[2, 3]).unwrap_err().to_string();
    assert!(err.contains("Embedding(11, 0)"), "{err}");
    let err = DecoderOnly::new(11, 8, 2, 1, 0, 8).output_shape(&[2, 3]).unwrap_err().to_string();
    assert!(err.contains("Dense(8→0)"), "{err}");
    let err = Sequential::builder(&[3]).add(DecoderOnly::new(11, 8, 2, 1, 0, 8)).build().unwrap_err();
    assert!(err.to_string().contains("no inputs or no outputs"), "{err}");
    // A sound one still builds.
    assert_eq!(DecoderOnly::new(11, 8, 2, 1, 16, 8).output_shape(&[2, 3]).unwrap(), [2, 3, 11]);
}

#[test]
fn backward_after_a_cross_forward_pass_is_refused_before_any_gradient_changes() {
    let mut mha = MultiHeadAttention::new(8, 2);
    let q = Tensor::from_vec(&[2, 3, 8], (0..48).map(|i| (i as f32 * 0.37).sin()).collect()).unwrap();
    let m = Tensor::from_vec(&[2, 3, 8], (0..48).map(|i| (i as f32 * 0.53).cos()).collect()).unwrap();
    let y = mha.forward_cross(&q, None, &m, None).unwrap();
    let before = gradients(&mha);
    let msg = panic_message(|| drop(mha.backward(&y, InputGrad::Needed)));
    assert!(msg.contains("use backward_cross"), "{msg}");
    assert_eq!(gradients(&mha), before, "the refused backward pass changed a gradient");
    // The cross pass's own backward still works after the refusal.
    let (dq, dm) = mha.backward_cross(&y);
    assert_eq!((dq.shape(), dm.shape()), (q.shape(), m.shape()));
}

#[test]
fn a_decoders_backward_without_a_kept_forward_pass_changes_nothing() {
    let mut gpt = DecoderOnly::new(11, 8, 2, 1, 16, 8).tied();
    let g = Tensor::zeros(&[2, 3, 11]);
    let msg = panic_message(|| drop(gpt.backward(&g, InputGrad::NotNeeded)));
    assert!(msg.contains("backward before any forward pass"), "{msg}");
    let ids = Tensor::from_vec(&[2, 3], vec![1., 2., 3., 4., 5., 6.]).unwrap();
    let logits = gpt.forward(&ids, Pass::PREDICT);
    let before = gradients(&gpt);
    let msg = panic_message(|| drop(gpt.backward(&logits, InputGrad::NotNeeded)));
    assert!(msg.contains("Mode::Predict"), "{msg}");
    assert_eq!(gradients(&gpt), before, "the refused backward pass changed a gradient");
}

#[test]
fn an_empty_batch_builds_no_position_table() {
    // [0, 2²⁸, 64]: no values, but a table for its T would be 64 GiB.
    let mut pe = SinusoidalPositions::new(64);
    let x = Tensor::zeros(&[0, 1 << 28, 64]);
    let y = pe.forward(&x, Pass::PREDICT);
    assert_eq!(y.shape(), x.shape());
}

#[test]
fn an_onnx_export_that_needs_a_table_larger_than_a_file_is_an_error() {
    // A model for sequences of 2²⁷ steps: a position table of 4 GiB — refused by name, not built.
    // (A causal attention layer writes no table: its mask is computed from T when the graph runs,
    // so at 2²⁰ steps — a mask of 2⁴⁰ entries as a table — it exports as small as at 16.)
    let long =
        |t: usize, layer: Box<dyn Layer>| Sequential::builder(&[t, 8]).add_boxed(layer).build().unwrap();
    // (The layer's own activation budget would refuse such a model; raised, the export's table
    // limit is what is left to refuse it.)
    let unbounded = MultiHeadAttention::new(8, 2).causal().activation_budget(usize::MAX);
    let causal = long(1 << 20, Box::new(unbounded));
    let long_file = backprop::onnx::to_bytes(&causal, &[1 << 20, 8]).unwrap();
    let short = long(16, Box::new(MultiHeadAttention::new(8, 2).causal()));
    assert!(long_file.len() < backprop::onnx::to_bytes(&short, &[16, 8]).unwrap().len() + 64);
    let positions = long(1 << 27, Box::new(SinusoidalPositions::new(8)));
    let err = backprop::onnx::to_bytes(&positions, &[1 << 27, 8]).unwrap_err().to_string();
    assert!(err.contains("SinusoidalPositions(8)") && err.contains("2 GiB"), "{err}");
    // At ordinary lengths both export.
    let causal = long(16, Box::new(MultiHeadAttention::new(8, 2).causal()));
    assert!(backprop::onnx::to_bytes(&causal, &[16, 8]).is_ok());
    let positions = long(16, Box::new(SinusoidalPositions::new(8)));
    assert!(backprop::onnx::to_bytes(&positions, &[16, 8]).is_ok());
}

#[test]
fn backward_before_any_forward_pass_says_so() {
    let mut mha = MultiHeadAttention::new(8, 2);
    let msg = panic_message(|| drop(mha.backward(&Tensor::zeros(&[2, 3, 8]), InputGrad::Needed)));
    assert!(msg.contains("MultiHeadAttention(8, heads=2): backward called before forward"), "{msg}");
    let mut block = TransformerEncoderLayer::new(8, 2, 16);
    let msg = panic_message(|| drop(block.backward(&Tensor::zeros(&[2, 3, 8]), InputGrad::Needed)));
    assert!(
        msg.contains("TransformerEncoderLayer") && msg.contains("backward called before forward"),
        "{msg}"
    );
}

#[test]
fn pytorch_masks_without_steps_or_with_nan_are_errors() {
    use backprop::layers::attention::{TorchMask, causal_from_torch, key_padding_from_torch};
    // Two sequences of no steps: no length of 1 or more describes them.
    let err = key_padding_from_torch(&Tensor::zeros(&[2, 0]), TorchMask::TrueMasks).unwrap_err();
    assert!(err.to_string().contains("has no steps"), "{err}");
    assert_eq!(
        key_padding_from_torch(&Tensor::zeros(&[0, 3]), TorchMask::TrueMasks).unwrap(),
        Vec::<usize>::new()
    );
    for shape in [[0, 3], [3, 0]] {
        let err = causal_from_torch(&Tensor::zeros(&shape), TorchMask::TrueAllows).unwrap_err();
        assert!(err.to_string().contains("no queries or no keys"), "{shape:?}: {err}");
    }
    // NaN is neither allowed nor masked, in every form.
    let nan = Tensor::from_vec(&[1, 2], vec![0.0, f32::NAN]).unwrap();
    for form in [TorchMask::TrueMasks, TorchMask::TrueAllows, TorchMask::Additive] {
        let err = key_padding_from_torch(&nan, form).unwrap_err();
        assert!(err.to_string().contains("NaN"), "{form:?}: {err}");
    }
    let nan = Tensor::from_vec(&[2, 2], vec![1.0, 0.0, f32::NAN, 1.0]).unwrap();
    assert!(causal_from_torch(&nan, TorchMask::TrueAllows).unwrap_err().to_string().contains("NaN"));
}

#[test]
fn padded_keys_holding_nan_reach_no_output_on_either_path() {
    // d_v = 8 runs the head kernel (on AVX2 and AVX-512), d_v = 3 the definition: both must leave
    // the padded keys (steps 2 and 3 of 4) out of O, whatever those rows hold.
    for dv in [8, 3] {
        let (n, h, t, d) = (1, 1, 4, 3);
        let q = Tensor::from_vec(&[n, h, t, d], (0..12).map(|i| (i as f32 * 0.3).sin()).collect()).unwrap();
        let mut v: Vec<f32> = (0..t * dv).map(|i| (i as f32 * 0.7).cos()).collect();
        v[2 * dv..]
            .iter_mut()
            .enumerate()
            .for_each(|(i, x)| *x = if i % 2 == 0 { f32::NAN } else { f32::INFINITY });
        let v = Tensor::from_vec(&[n, h, t, dv], v).unwrap();
        for causal in [false, true] {
            let (o, p) = scaled_dot_product_attention(&q, &q, &v, causal, Some(&[2])).unwrap();
            assert!(o.data().iter().all(|x| x.is_finite()), "d_v {dv}, causal {causal}: {:?}", o.data());
            assert!(p.data().chunks(t).all(|row| row[2..].iter().all(|&w| w == 0.0)));
        }
    }
}

/// The attention weights grow with the square of the length: 64 sequences of 5,000 steps and 4
/// heads would keep 25.6 GB. Over the layer's activation budget (2 GiB unless raised) the
/// batch is an `Err` naming the need and the budget, from shape inference and from
/// `forward_cross`, before anything is allocated.
#[test]
fn attention_over_its_activation_budget_is_an_error_naming_the_sizes() {
    let attn = MultiHeadAttention::new(64, 4).causal();
    assert_eq!(attn.activation_bytes(64, 5000, 5000), 4 * 64 * (4 * 5000 * 5000 + 3 * 10_000 * 64));
    let err = attn.output_shape(&[64, 5000, 64]).unwrap_err().to_string();
    assert!(err.contains("64 sequences of 5000 queries and 5000 keys need about 24.3 GiB"), "{err}");
    assert!(
        err.contains("activation budget of 2.0 GiB") && err.contains(".activation_budget(bytes)"),
        "{err}"
    );
    assert!(attn.output_shape(&[1, 5000, 64]).is_ok(), "one sequence: 0.4 GB");
    let mut cross = MultiHeadAttention::new(8, 2).activation_budget(700_000); // needs 736,000 bytes
    let (q, m) = (Tensor::zeros(&[2, 100, 8]), Tensor::zeros(&[2, 400, 8]));
    let err = cross.forward_cross(&q, None, &m, None).unwrap_err().to_string();
    assert!(
        err.contains("2 sequences of 100 queries and 400 keys") && err.contains("budget of 683.6 KiB"),
        "{err}"
    );
    let mut roomy = MultiHeadAttention::new(8, 2).activation_budget(736_000);
    assert_eq!(roomy.forward_cross(&q, None, &m, None).unwrap().shape(), &[2, 100, 8]);
}

/// The budget a refusal names can be raised where the attention sits inside a block or a stack,
/// and the free function refuses weights past its own bound instead of allocating them.
#[test]
fn attention_budgets_can_be_raised_through_blocks_and_the_free_function_is_bounded() {
    // 64 sequences of 1,024 steps, 8 heads: 2 GiB of weights alone.
    let gpt = DecoderOnly::new(65, 128, 8, 2, 512, 1024);
    let e = gpt.output_shape(&[64, 1024]).unwrap_err().to_string();
    assert!(e.contains("activation_budget"), "{e}");
    let gpt = DecoderOnly::new(65, 128, 8, 2, 512, 1024).activation_budget(4 << 30);
    assert_eq!(gpt.output_shape(&[64, 1024]).unwrap(), vec![64, 1024, 65]);
    let block = TransformerEncoderLayer::new(128, 8, 512);
    assert!(block.output_shape(&[64, 1024, 128]).is_err());
    let block = TransformerEncoderLayer::new(128, 8, 512).activation_budget(4 << 30);
    assert_eq!(block.output_shape(&[64, 1024, 128]).unwrap(), vec![64, 1024, 128]);
    // 2⁴⁰ weights: an error, not an allocation.
    let q = Tensor::zeros(&[1, 1, 1 << 20, 1]);
    let e = scaled_dot_product_attention(&q, &q, &q, false, None).unwrap_err().to_string();
    assert!(e.contains("MultiHeadAttention") && e.contains("[1, 1, 1048576, 1048576]"), "{e}");
    let p = Tensor::zeros(&[1, 1, 1, 1]);
    assert!(scaled_dot_product_attention_backward(&q, &q, &q, &p, &q).is_err());
}

/// What sits in a sequence's padding reaches neither the output nor any gradient of the layer:
/// NaN and ∞ there give the numbers zeros give.
#[test]
fn what_sits_in_the_padding_reaches_no_attention_gradient() {
    let (n, t, e) = (2, 4, 8);
    let clean =
        Tensor::from_vec(&[n, t, e], (0..n * t * e).map(|i| (i as f32 * 0.29).sin()).collect()).unwrap();
    let mut dirty = clean.clone();
    for (i, v) in dirty.data_mut()[(t + 2) * e..].iter_mut().enumerate() {
        *v = if i % 2 == 0 { f32::NAN } else { f32::INFINITY }; // sample 1, steps 2 and 3
    }
    let lengths = [4, 2];
    for causal in [false, true] {
        let run = |x: &Tensor| {
            let mut attn = MultiHeadAttention::new(e, 2).seed(3);
            if causal {
                attn = attn.causal();
            }
            let y = attn.forward(x, Pass::TRAIN.with_lengths(&lengths));
            let dx = attn.backward(&Tensor::ones(y.shape()), InputGrad::Needed).unwrap();
            let grads: Vec<Tensor> =
                backprop::layers::named_params(&attn).into_iter().map(|(_, p)| p.grad.clone()).collect();
            (y, dx, grads)
        };
        let (a, b) = (run(&clean), run(&dirty));
        assert_eq!(a.0, b.0, "causal {causal}: output");
        assert_eq!(a.2, b.2, "causal {causal}: parameter gradients");
        assert_eq!(a.1, b.1, "causal {causal}: input gradient");
    }
}
