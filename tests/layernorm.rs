//! `LayerNorm` against PyTorch 2.15 (`tests/fixtures/make_layernorm_fixture.py`): outputs and every
//! gradient, with and without the affine parameters, on rows and on sequences, and on rows with a
//! large mean and a small spread; the finite-difference check; per-example gradients; what bad
//! input gets.

mod common;

use backprop::gradcheck::{Options, check_layer};
use backprop::prelude::*;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/layernorm.safetensors");

#[test]
fn matches_pytorch_outputs_and_gradients() {
    let bytes = std::fs::read(FIXTURE).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().unwrap();
    let t = |name: &str| common::fixture_tensor(&file, name);
    for case in ["plain", "seq", "offset", "bare"] {
        let x = t(&format!("{case}.x"));
        let eps: f32 = meta[&format!("{case}.eps")].parse().unwrap();
        let d = *x.shape().last().unwrap();
        let mut norm = LayerNorm::new(d).eps(eps);
        let affine = file.names().iter().any(|n| **n == format!("{case}.weight"));
        norm = match affine {
            true => norm.with_affine(t(&format!("{case}.weight")), t(&format!("{case}.bias"))).unwrap(),
            false => norm.without_affine(),
        };
        let y = norm.forward(&x, Pass::TRAIN);
        let dx = norm.backward(&t(&format!("{case}.g")), InputGrad::Needed).unwrap();
        // Against the float64 computation from the same f32 inputs (the exact answer), and
        // against PyTorch's f32 layer — except on the `offset` rows (mean 10⁴, spread 10⁻²), where
        // PyTorch's f32 result is itself off by a tenth (the metadata's `torch_f32_error`) and the
        // crate's f64 sums are not.
        let mut references = vec![("float64", "64")];
        if case != "offset" {
            references.push(("PyTorch f32", ""));
        }
        for (what, suffix) in references {
            let at = |name: &str| t(&format!("{case}.{name}{suffix}"));
            let y_tol = if case == "offset" { 1e-4 } else { 1e-5 };
            common::assert_close_to(&y, &at("y"), y_tol, &format!("{case}: y vs {what}"));
            // (Relative to the largest |dx|: for the offset rows dx = s·(…) with s ≈ 100.)
            common::assert_close_to(&dx, &at("dx"), 1e-5, &format!("{case}: dL/dx vs {what}"));
            if let Some((w, b)) = norm.affine() {
                common::assert_close_to(
                    &w.grad,
                    &at("dweight"),
                    y_tol * 10.0,
                    &format!("{case}: dL/dγ vs {what}"),
                );
                common::assert_close_to(&b.grad, &at("dbias"), 1e-5, &format!("{case}: dL/dβ vs {what}"));
            }
        }
        if norm.affine().is_none() {
            assert!(!affine && backprop::io::state_dict(&norm).is_empty(), "{case}: no parameters");
        }
        if case == "offset" {
            let torch_error: f32 = meta["offset.torch_f32_error"].parse().unwrap();
            assert!(torch_error > 0.1, "PyTorch's f32 error on the offset rows: {torch_error}");
        }
    }
}

/// For a row `10⁴ + 10⁻²·z` the one-pass `E[x²] − E[x]²` is lost to rounding in f32; the two-pass
/// variance keeps `x̂` normalised.
#[test]
fn rows_with_a_large_mean_and_a_small_spread_stay_normalised() {
    let z = Tensor::randn(&[3, 64], 0.0, 1.0, 5);
    let x = z.map(|v| 1e4 + 1e-2 * v);
    let one_pass_var = {
        let row = x.outer(0);
        let mean = row.iter().sum::<f32>() / 64.0;
        row.iter().map(|v| v * v).sum::<f32>() / 64.0 - mean * mean
    };
    let y = LayerNorm::new(64).eps(1e-12).without_affine().forward(&x, Pass::EVAL);
    for r in 0..3 {
        let row = y.outer(r);
        let mean = row.iter().sum::<f32>() / 64.0;
        let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / 64.0;
        assert!(mean.abs() < 1e-4 && (var - 1.0).abs() < 1e-2, "row {r}: mean {mean}, variance {var}");
    }
    // (What the one-pass formula gives for row 0: nowhere near 10⁻⁴.)
    assert!((one_pass_var - 1e-4).abs() > 1e-3, "one-pass variance {one_pass_var}");
}

#[test]
fn gradients_pass_the_finite_difference_check() {
    let x = Tensor::randn(&[3, 4, 5], 0.0, 1.0, 1);
    let gamma = Tensor::randn(&[5], 1.0, 0.5, 2);
    let beta = Tensor::randn(&[5], 0.0, 0.5, 3);
    let mut norm = LayerNorm::new(5).eps(1e-3).with_affine(gamma, beta).unwrap();
    let report = check_layer(&mut norm, &x, Pass::TRAIN, &Options::default());
    assert!(report.passes(2e-2), "affine:\n{report}");
    let mut bare = LayerNorm::new(5).without_affine();
    let report = check_layer(&mut bare, &x, Pass::TRAIN, &Options::default());
    assert!(report.passes(2e-2), "without affine:\n{report}");
}

/// Per-example `dγ`, `dβ` (private training) are each example's own rows' sums, and add up to the
/// batch's.
#[test]
fn per_example_gradients_add_up_to_the_batch() {
    use backprop::privacy::per_example::{PerExampleGrads, backward_per_example};
    let x = Tensor::randn(&[4, 3, 6], 0.0, 1.0, 7);
    let g = Tensor::randn(&[4, 3, 6], 0.0, 1.0, 8);
    let mut model = Sequential::builder(&[3, 6]).add(LayerNorm::new(6)).seed(1).build().unwrap();
    model.forward(&x, Pass::TRAIN);
    let mut grads = PerExampleGrads::new();
    grads.start(4);
    let dx = backward_per_example(&mut model, &g, InputGrad::Needed, &mut grads).unwrap();
    model.forward(&x, Pass::TRAIN);
    backprop::layers::zero_grad(&mut model);
    let dx_batch = model.backward(&g, InputGrad::Needed).unwrap();
    assert_eq!(dx, dx_batch);
    for (k, p) in model.params().iter().enumerate() {
        let mut sum = Tensor::zeros(p.grad.shape());
        for n in 0..4 {
            let mut alone = LayerNorm::new(6);
            alone =
                alone.with_affine(model.params()[0].value.clone(), model.params()[1].value.clone()).unwrap();
            alone.forward(&x.select_outer(&[n]), Pass::TRAIN);
            alone.backward(&g.select_outer(&[n]), InputGrad::NotNeeded);
            let (w, b) = alone.affine().unwrap();
            let mine = if k == 0 { &w.grad } else { &b.grad };
            let row = Tensor::from_vec(&[6], grads.slot(k).outer(n).to_vec()).unwrap();
            common::assert_close_to(&row, mine, 1e-6, &format!("example {n}, parameter {k}"));
            sum.axpy(1.0, &row);
        }
        common::assert_close_to(&sum, &p.grad, 1e-5, &format!("parameter {k}: the examples' sum"));
    }
}

#[test]
fn bad_input_is_refused_by_name() {
    let norm = LayerNorm::new(8);
    let e = norm.output_shape(&[4, 7]).unwrap_err().to_string();
    assert!(e.contains("LayerNorm(8") && e.contains("[N, …, 8]") && e.contains("7"), "{e}");
    assert!(norm.output_shape(&[8]).is_err(), "a single row without a batch axis");
    assert!(LayerNorm::new(0).output_shape(&[2, 0]).unwrap_err().to_string().contains("no values"));
    let e = LayerNorm::new(3).with_affine(Tensor::ones(&[4]), Tensor::zeros(&[3])).err().unwrap().to_string();
    assert!(e.contains("weight must be [3]"), "{e}");
    assert!(LayerNorm::new(3).without_affine().with_affine(Tensor::ones(&[3]), Tensor::zeros(&[3])).is_err());
    let nan = Tensor::from_vec(&[3], vec![0.0, f32::NAN, 1.0]).unwrap();
    let e = LayerNorm::new(3).with_affine(Tensor::ones(&[3]), nan).err().unwrap().to_string();
    assert!(e.contains("bias[1] is NaN") && e.contains("finite"), "{e}");
    let e = std::panic::catch_unwind(|| drop(LayerNorm::new(3).eps(-1.0))).unwrap_err();
    assert!(e.downcast_ref::<String>().unwrap().contains("eps must be finite"));
    // In a model, a wrong width is an Err from build, naming the layer and both shapes.
    let e = Sequential::builder(&[5, 7]).add(LayerNorm::new(8)).build().err().unwrap().to_string();
    assert!(e.contains("LayerNorm(8") && e.contains("7"), "{e}");
    // A constant row is normalised to zeros (σ² = 0: x̂ = 0·1/√ε), not NaN.
    let y = LayerNorm::new(4).forward(&Tensor::full(&[1, 4], 3.0), Pass::EVAL);
    assert!(y.data().iter().all(|&v| v == 0.0), "{:?}", y.data());
}

/// `Mode::Predict` keeps no `x̂`: its output is an `Eval` pass's, bit for bit (with and without
/// affine parameters, on one and two threads, rows enough to split); a backward pass after it
/// refuses with a message naming the layer and the mode; training afterwards is unchanged.
#[test]
fn predict_mode_keeps_nothing_and_changes_nothing() {
    let x = Tensor::randn(&[300, 64], 3.0, 2.0, 21);
    let dy = Tensor::randn(&[300, 64], 0.0, 1.0, 22);
    for make in [|| LayerNorm::new(64), || LayerNorm::new(64).without_affine()] {
        let eval = make().forward(&x, Pass::EVAL);
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let predicted = pool.install(|| make().forward(&x, Pass::PREDICT));
            assert_eq!(predicted, eval, "{threads} threads");
        }
        let mut norm = make();
        norm.forward(&x, Pass::PREDICT);
        let refused = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            drop(norm.backward(&dy, InputGrad::Needed))
        }));
        let message = refused.expect_err("backward after Predict must panic");
        let message = message.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(message.contains("LayerNorm(64") && message.contains("Mode::Predict"), "{message}");
        let mut fresh = make();
        fresh.forward(&x, Pass::TRAIN);
        let want = fresh.backward(&dy, InputGrad::Needed).unwrap();
        let mut after = make();
        after.forward(&x, Pass::PREDICT);
        after.forward(&x, Pass::TRAIN);
        assert_eq!(after.backward(&dy, InputGrad::Needed).unwrap(), want);
        if let (Some((w1, b1)), Some((w2, b2))) = (after.affine(), fresh.affine()) {
            assert_eq!((&w1.grad, &b1.grad), (&w2.grad, &b2.grad));
        }
    }
}

/// Each row's output and input gradient have the same bits whether the row is normalised alone
/// or among others (a row's arithmetic must not depend on its neighbours, on how the rows are cut
/// into parallel blocks, or on the vector path its sums take), in training and predicting passes,
/// on one thread and on two.
#[test]
fn a_row_gives_the_same_bits_alone_and_in_a_batch() {
    let d = 37; // whole blocks of eight and a tail
    for rows in [1usize, 2, 5, 130] {
        let x = Tensor::randn(&[rows, d], 3.0, 2.0, rows as u64);
        let g = Tensor::randn(&[rows, d], 0.0, 1.0, 7 + rows as u64);
        let gamma = Tensor::randn(&[d], 1.0, 0.5, 3);
        let beta = Tensor::randn(&[d], 0.0, 0.5, 4);
        let layer = || LayerNorm::new(d).with_affine(gamma.clone(), beta.clone()).unwrap();
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let (y, dx, predicted) = pool.install(|| {
                let mut norm = layer();
                let y = norm.forward(&x, Pass::TRAIN);
                let dx = norm.backward(&g, InputGrad::Needed).unwrap();
                (y, dx, layer().forward(&x, Pass::PREDICT))
            });
            for r in 0..rows {
                let row = |t: &Tensor| Tensor::from_vec(&[1, d], t.data()[r * d..][..d].to_vec()).unwrap();
                let mut alone = layer();
                let y_alone = alone.forward(&row(&x), Pass::TRAIN);
                let dx_alone = alone.backward(&row(&g), InputGrad::Needed).unwrap();
                let bits = |t: &Tensor| t.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&row(&y)), bits(&y_alone), "y, row {r} of {rows}, {threads} threads");
                assert_eq!(bits(&row(&predicted)), bits(&y_alone), "predicted y, row {r} of {rows}");
                assert_eq!(bits(&row(&dx)), bits(&dx_alone), "dx, row {r} of {rows}, {threads} threads");
            }
        }
    }
}
