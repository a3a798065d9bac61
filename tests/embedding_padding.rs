//! An embedding with a padding id against PyTorch 2.15 (`tests/fixtures/make_embedding_fixture.py`):
//! the padding row starts at zero, reads as zeros, gets no gradient, stays put under Adam and
//! shrinks like PyTorch's under AdamW's decoupled weight decay; per-example gradients (private
//! training) leave it out too.

mod common;

use backprop::prelude::*;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/embedding_padding.safetensors");

#[test]
fn padding_row_matches_pytorch_through_backward_and_optimizers() {
    let bytes = std::fs::read(FIXTURE).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = |name: &str| common::fixture_tensor(&file, name);
    let (weight0, ids, g) = (t("weight0"), t("ids"), t("g"));
    assert_eq!(weight0.outer(5), &[0.0, 0.0, 0.0], "PyTorch zeroes the padding row at init");
    let make = || Embedding::new(6, 3).padding_idx(5).with_weights(weight0.clone());
    let mut emb = make();
    let y = emb.forward(&ids, Pass::TRAIN);
    assert_eq!(&y.data()[3..6], &[0.0, 0.0, 0.0]);
    emb.backward(&g, InputGrad::NotNeeded);
    common::assert_close_to(&emb.weight().grad, &t("grad"), 1e-6, "dL/dW with a padding row");
    for (name, mut opt) in [
        ("adam2", Box::new(Adam::new(0.1)) as Box<dyn Optimizer>),
        ("adamw2", Box::new(AdamW::new(0.1).weight_decay(0.5))),
    ] {
        let mut e = make();
        for _ in 0..2 {
            backprop::layers::zero_grad(&mut e);
            e.forward(&ids, Pass::TRAIN);
            e.backward(&g, InputGrad::NotNeeded);
            opt.step(&mut e);
        }
        common::assert_close_to(&e.weight().value, &t(name), 1e-6, name);
    }
}

#[test]
fn padding_id_is_checked_and_a_seeded_table_keeps_the_row_at_zero() {
    let e = std::panic::catch_unwind(|| drop(Embedding::new(4, 2).padding_idx(4))).unwrap_err();
    assert!(e.downcast_ref::<String>().unwrap().contains("padding id 4"));
    let emb = Embedding::new(4, 2).seed(3).padding_idx(1);
    assert_eq!(emb.weight().value.outer(1), &[0.0, 0.0]);
    assert!(emb.weight().value.outer(0).iter().all(|&v| v != 0.0));
    assert_eq!(emb.describe(), "Embedding(4, 2, padding_idx=1)");
    // A model-wide seed does not redraw it.
    let model = Sequential::builder(&[3]).add(Embedding::new(4, 2).padding_idx(1)).seed(9).build().unwrap();
    let table = &model.params()[0].value;
    assert_eq!(table.outer(1), &[0.0, 0.0]);
}
