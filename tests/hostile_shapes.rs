//! Shape arithmetic is checked everywhere: sizes that would overflow are errors (or documented
//! panics from constructors), never a wrapped length that reaches unsafe code; zero-width layers
//! and inputs are refused when a model is built. One test per defect the hostile-input review found.

mod common;

use backprop::prelude::*;
use backprop::tensor::gemm::{Transpose::No, sgemm};

use common::panic_message;

#[test]
fn element_counts_never_wrap() {
    // 4·2⁶² wraps to 0 in unchecked arithmetic; an empty Vec must not pass for it.
    let err = Tensor::from_vec(&[4, 1 << 62], vec![]).unwrap_err().to_string();
    assert!(err.contains("[4, 4611686018427387904]") && err.contains("more than"), "{err}");
    let msg = panic_message(|| drop(Tensor::zeros(&[1 << 32, 1 << 32])));
    assert!(msg.contains("would hold more than"), "{msg}");
    assert!(Tensor::zeros(&[3, 4]).try_reshape(&[1 << 32, 1 << 32]).is_err());
    // A layer that could never be allocated panics when constructed, with a message.
    let msg = panic_message(|| drop(Dense::new(1 << 62, 4)));
    assert!(msg.contains("would hold more than"), "{msg}");
}

#[test]
fn gemm_checks_lengths_without_wrapping() {
    let mut c = [];
    let msg = panic_message(|| sgemm(1 << 32, 1 << 32, 1, 1.0, &[], No, &[], No, 0.0, &mut c));
    assert!(msg.contains("gemm: A has 0 elements"), "{msg}");
}

#[test]
fn huge_padding_and_dilation_are_errors() {
    for conv in [
        Conv2d::new(1, 2, 3).padding(1 << 62),
        Conv2d::new(1, 2, 3).padding(1 << 63),
        Conv2d::new(1, 2, 3).dilation(1 << 63),
        Conv2d::new(1, 2, 3).dilation(1 << 62).padding(1 << 62),
    ] {
        let what = conv.describe();
        let err = Sequential::builder(&[1, 2, 2]).add(conv).build().unwrap_err().to_string();
        assert!(err.contains("beyond") || err.contains("does not fit"), "{what}: {err}");
    }
    let err = Sequential::builder(&[1, 4, 4]).add(MaxPool2d::new(2).stride(1 << 63)).build();
    assert!(err.is_ok(), "a huge stride gives one window: {err:?}");
    // ONNX holds its attributes as int64: such a stride is refused by name, not written as −1.
    for stride in [1 << 63, usize::MAX] {
        let model = Sequential::builder(&[1, 4, 4]).add(MaxPool2d::new(2).stride(stride)).build().unwrap();
        let e = backprop::onnx::to_bytes(&model, &[1, 4, 4]).unwrap_err().to_string();
        assert!(
            e.contains("MaxPool2d(2×2") && e.contains(&format!("{stride} cannot be written to ONNX")),
            "{e}"
        );
    }
    let model = Sequential::builder(&[1, 4, 4]).add(Conv2d::new(1, 1, 3).stride(usize::MAX)).build().unwrap();
    assert!(backprop::onnx::to_bytes(&model, &[1, 4, 4]).is_err());
    // And it computes that one window: the output and every gradient of a stride of 100 (a stride
    // of usize::MAX, cast to isize, had read as −1 and dropped taps; 2⁶³ gave the bias alone;
    // isize::MAX overflowed), through a convolution alone and one fused with its pooling.
    let x = Tensor::randn(&[2, 1, 5, 5], 0.0, 1.0, 1);
    let run = |stride: usize, pooled: bool| {
        let mut b =
            Sequential::builder(&[1, 5, 5]).add(Conv2d::new(1, 2, 3).stride(stride).padding(1)).seed(5);
        if pooled {
            b = b.add(Relu::new()).add(MaxPool2d::new(1));
        }
        let mut m = b.build().unwrap();
        let y = m.predict(&x, 2).unwrap();
        let target = Tensor::zeros(y.shape());
        backprop::train::loss_and_backward(&mut m, &x, Target::Values(&target), &MseLoss::new(), Mode::Train)
            .unwrap();
        let grads: Vec<Vec<f32>> = m.params().iter().map(|p| p.grad.data().to_vec()).collect();
        (y.data().to_vec(), grads)
    };
    for pooled in [false, true] {
        for stride in [1 << 63, usize::MAX, isize::MAX as usize] {
            assert_eq!(run(stride, pooled), run(100, pooled), "stride {stride}, pooled {pooled}");
        }
    }
    let err = Sequential::builder(&[1 << 40, 1 << 22]).add(Flatten::new()).build().unwrap_err().to_string();
    assert!(err.contains("model input"), "{err}");
}

#[test]
fn zero_width_layers_and_inputs_are_refused_at_build() {
    let cases: Vec<(Box<dyn Layer>, Vec<usize>, &str)> = vec![
        (Box::new(Dense::new(4, 0)), vec![4], "no inputs or no outputs"),
        (Box::new(Dense::new(0, 4)), vec![0], "zero-sized"),
        (Box::new(Conv2d::new(1, 0, 3)), vec![1, 5, 5], "no input or no output channels"),
        (Box::new(Conv2d::new(0, 2, 3)), vec![0, 5, 5], "zero-sized"),
        (Box::new(BatchNorm1d::new(0)), vec![0], "zero-sized"),
        (Box::new(MaxPool2d::new(1)), vec![1, 0, 4], "zero-sized"),
    ];
    for (layer, input, want) in cases {
        let what = layer.describe();
        let err = Sequential::builder(&input).add_boxed(layer).build().unwrap_err().to_string();
        assert!(err.contains(want), "{what} on {input:?}: {err}");
    }
    // Standalone, the layers refuse such inputs too (before any arithmetic).
    assert!(Dense::new(4, 0).output_shape(&[2, 4]).is_err());
    assert!(Conv2d::new(1, 2, 3).padding(1).output_shape(&[1, 1, 0, 4]).is_err());
    assert!(AvgPool2d::new(1).output_shape(&[1, 1, 4, 0]).is_err());
}

#[test]
fn an_empty_batch_predicts_nothing_without_panicking() {
    let mut model = Sequential::builder(&[1, 6, 6])
        .add(Conv2d::new(1, 2, 3))
        .add(Relu::new())
        .add(MaxPool2d::new(2))
        .add(Flatten::new())
        .add(Dense::new(8, 3))
        .build()
        .unwrap();
    let y = model.predict(&Tensor::zeros(&[0, 1, 6, 6]), 4).unwrap();
    assert_eq!(y.shape(), &[0, 3]);
}

/// A residual block whose body changes the shape (a model struct runs `forward` without
/// `output_shape` first) is refused by the block's own message, naming it and both shapes — not
/// by the sum's `add: shape mismatch`.
#[test]
fn a_residual_body_that_changes_the_shape_is_named_by_the_block() {
    let mut block = Residual::new(Sequential::new().add(Dense::new(4, 7)));
    let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        block.forward(&Tensor::zeros(&[2, 4]), Pass::EVAL);
    }));
    let message = panic.unwrap_err();
    let message = message.downcast_ref::<String>().unwrap();
    assert!(
        message.contains("Residual") && message.contains("[2, 4]") && message.contains("[2, 7]"),
        "{message}"
    );
}

/// A Transformer block checks its own output gradient: a wrong shape, or a call before any
/// forward pass, names the block — not the dropout or dense layer that met it first.
#[test]
fn a_transformer_blocks_backward_names_the_block() {
    let message = |f: &mut dyn FnMut()| -> String {
        let e = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_err();
        e.downcast_ref::<String>().cloned().unwrap_or_default()
    };
    let mut block = backprop::layers::TransformerEncoderLayer::new(8, 2, 16);
    let m = message(&mut || drop(block.backward(&Tensor::ones(&[2, 5, 8]), InputGrad::Needed)));
    assert!(m.contains("TransformerEncoderLayer") && m.contains("before forward"), "{m}");
    block.forward(&Tensor::ones(&[2, 5, 8]), Pass::TRAIN);
    let m = message(&mut || drop(block.backward(&Tensor::ones(&[2, 4, 8]), InputGrad::Needed)));
    assert!(
        m.contains("TransformerEncoderLayer") && m.contains("[2, 4, 8]") && m.contains("[2, 5, 8]"),
        "{m}"
    );
}

/// Batch norm refuses a shape no tensor can hold (as the other layers do), from `output_shape`
/// and from `check_training_shape` alike: its count of values per channel had overflowed (a
/// panic under overflow checks, a wrong "one value per channel" error without).
#[test]
fn batch_norm_refuses_shapes_no_tensor_can_hold() {
    let bn = BatchNorm1d::new(4);
    for shape in [[1usize << 40, 4, 1 << 40], [1 << 62, 4, 8]] {
        let e = bn.output_shape(&shape).unwrap_err().to_string();
        assert!(e.contains("BatchNorm1d(4)") && e.contains("more values than a tensor can"), "{e}");
        let e = bn.check_training_shape(&shape).unwrap_err().to_string();
        assert!(e.contains("more values than a tensor can"), "{e}");
    }
    assert!(bn.check_training_shape(&[2, 4, 3]).is_ok());
}

/// A decoder stack of 2²⁸ blocks is a panic naming the count, before the list of blocks is
/// reserved (hundreds of gigabytes at once: an abort, not a panic).
#[test]
fn a_decoder_of_countless_blocks_is_refused_by_name() {
    use backprop::layers::{DecoderOnly, MAX_DECODER_LAYERS};
    let e = std::panic::catch_unwind(|| drop(DecoderOnly::new(11, 8, 2, 1 << 28, 16, 6))).unwrap_err();
    let m = e.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(m.contains("268435456 blocks") && m.contains(&MAX_DECODER_LAYERS.to_string()), "{m}");
}
