//! Layers given inputs they cannot take: `output_shape` says why, `forward` panics saying the same.

use backprop::Tensor;
use backprop::layers::*;

fn panic_message(f: impl FnOnce()) -> String {
    let err = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_err();
    err.downcast_ref::<String>().cloned().unwrap_or_default()
}

/// `output_shape` errs and `forward` panics, both naming the layer and both shapes.
fn rejects(layer: &mut dyn Layer, input: &[usize], layer_word: &str, expected_word: &str) {
    let err = layer.output_shape(input).unwrap_err().to_string();
    let actual = format!("{input:?}");
    for word in [layer_word, expected_word, actual.as_str()] {
        assert!(err.contains(word), "error {err:?} should mention {word:?}");
    }
    let x = Tensor::zeros(input);
    let msg = panic_message(|| drop(layer.forward(&x, Pass::TRAIN)));
    assert_eq!(msg, err, "forward's panic repeats output_shape's error");
}

#[test]
fn wrong_rank_or_channels() {
    rejects(&mut Conv2d::new(3, 8, 3), &[2, 1, 28, 28], "Conv2d(3→8, 3×3)", "[N, 3, H, W]");
    rejects(&mut Conv2d::new(1, 8, 3), &[2, 28, 28], "Conv2d(1→8, 3×3)", "[N, 1, H, W]");
    rejects(&mut Conv2d::new(1, 8, 5), &[2, 1, 3, 3], "Conv2d(1→8, 5×5)", "5×5 kernel");
    rejects(&mut Dense::new(1568, 10), &[64, 1600], "Dense(1568→10)", "[N, 1568]");
    rejects(&mut Dense::new(4, 2), &[4], "Dense(4→2)", "[N, 4]");
    rejects(&mut MaxPool2d::new(2), &[2, 28, 28], "MaxPool2d(2×2)", "[N, C, H, W]");
    rejects(&mut MaxPool2d::new(4), &[2, 1, 3, 3], "MaxPool2d(4×4)", "[N, C, H, W]");
    rejects(&mut AvgPool2d::new(2), &[5], "AvgPool2d(2×2)", "[N, C, H, W]");
    rejects(&mut GlobalAvgPool::new(), &[2, 3], "GlobalAvgPool", "[N, C, H, W]");
    rejects(&mut BatchNorm2d::new(16), &[2, 8, 4, 4], "BatchNorm2d(16)", "[N, 16, H, W]");
    rejects(&mut BatchNorm1d::new(16), &[2, 8], "BatchNorm1d(16)", "[N, 16]");
    rejects(&mut Softmax::new(), &[5], "Softmax", "[N, features");
}

#[test]
fn backward_misuse_panics_clearly() {
    let msg = panic_message(|| {
        drop(Dense::new(2, 2).backward(&Tensor::zeros(&[1, 2]), InputGrad::Needed).unwrap())
    });
    assert!(msg.contains("Dense") && msg.contains("before forward"), "{msg}");
    let mut conv = Conv2d::new(1, 2, 3);
    conv.forward(&Tensor::zeros(&[1, 1, 5, 5]), Pass::TRAIN);
    let msg =
        panic_message(|| drop(conv.backward(&Tensor::zeros(&[1, 2, 4, 4]), InputGrad::Needed).unwrap()));
    assert!(msg.contains("[1, 2, 4, 4]") && msg.contains("[1, 2, 3, 3]"), "{msg}");
}

/// `Dataset::new`, the constructor the others call: a scalar without a sample axis, and counts
/// of targets that differ from the samples (of either kind, a scalar target tensor too), each an
/// `Err` naming both counts; matching counts (none at all included) are taken.
#[test]
fn datasets_of_mismatched_counts() {
    use backprop::data::{Dataset, Targets};
    let e = Dataset::new(Tensor::scalar(1.0), Targets::Classes(vec![0])).unwrap_err().to_string();
    assert!(e.contains("sample axis"), "{e}");
    let cases = [
        (Targets::Classes(vec![0, 1]), "3 inputs (shape [3, 2]) but 2 targets"),
        (Targets::Values(Tensor::zeros(&[4, 1])), "3 inputs (shape [3, 2]) but 4 targets"),
        (Targets::Values(Tensor::scalar(0.0)), "3 inputs (shape [3, 2]) but"),
    ];
    for (targets, want) in cases {
        let e = Dataset::new(Tensor::zeros(&[3, 2]), targets).unwrap_err().to_string();
        assert!(e.contains(want), "{want}: {e}");
    }
    assert_eq!(Dataset::new(Tensor::zeros(&[0, 2]), Targets::Classes(vec![])).unwrap().len(), 0);
    assert_eq!(Dataset::new(Tensor::zeros(&[3, 2]), Targets::Classes(vec![0, 1, 0])).unwrap().len(), 3);
}

#[test]
fn invalid_settings() {
    let msg = panic_message(|| drop(Dropout::new(1.5)));
    assert!(msg.contains("1.5"), "{msg}");
    let e = Conv2d::new(1, 1, 3).stride(0).output_shape(&[1, 1, 5, 5]).unwrap_err().to_string();
    assert!(e.contains("stride"), "{e}");
    // A max-pooling plane of 2³² values or more (its arg-max indices are u32) and a global
    // pooling plane whose H·W overflows are refused, not wrapped.
    let e = MaxPool2d::new(2).output_shape(&[1, 1, 65536, 65538]).unwrap_err().to_string();
    assert!(e.contains("MaxPool2d(2×2") && e.contains("2³²"), "{e}");
    assert!(GlobalAvgPool::new().output_shape(&[1, 1, 1 << 32, 1 << 32]).is_err());
    // A padding past half the kernel, however large (2·p would overflow), is refused by name.
    for p in [2, 1 << 62, 1 << 63, usize::MAX] {
        let e = MaxPool2d::new(2).padding(p).output_shape(&[1, 1, 4, 4]).unwrap_err().to_string();
        assert!(e.contains("MaxPool2d(2×2") && e.contains("at most half the kernel"), "{p}: {e}");
    }
}
