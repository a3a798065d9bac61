//! The position layers: the sinusoidal table against hand-worked values of its formula, the
//! learned table's gradient (finite differences and per example), and what bad input gets.

mod common;

use backprop::gradcheck::{Options, check_layer};
use backprop::layers::positions::sinusoidal_table;
use backprop::layers::{PositionEmbedding, SinusoidalPositions};
use backprop::prelude::*;

/// PE[t, 2i] = sin(t / 10000^(2i/E)), PE[t, 2i+1] = cos(t / 10000^(2i/E)), E = 6: the
/// frequencies are 1, 10000^(−1/3) = 0.0464159, 10000^(−2/3) = 0.00215443.
#[test]
fn the_sinusoidal_table_is_the_formula() {
    let pe = sinusoidal_table(4, 6);
    let freqs = [1.0f64, 0.046_415_888_336_127_79, 0.002_154_434_690_031_884];
    for t in 0..4 {
        for (i, f) in freqs.iter().enumerate() {
            let angle = t as f64 * f;
            assert!((pe.data()[t * 6 + 2 * i] as f64 - angle.sin()).abs() < 1e-7, "t {t}, column {}", 2 * i);
            assert!(
                (pe.data()[t * 6 + 2 * i + 1] as f64 - angle.cos()).abs() < 1e-7,
                "t {t}, column {}",
                2 * i + 1
            );
        }
    }
    // Hand-worked: t = 3, column 2 = sin(3·0.0464159) = sin(0.139248) = 0.138798.
    assert!((pe.data()[3 * 6 + 2] - 0.138_798).abs() < 1e-6);
    // An odd width: the last column is a sine with its own frequency.
    let odd = sinusoidal_table(2, 5);
    assert!((odd.data()[5 + 4] - (1.0f64 / 10_000f64.powf(4.0 / 5.0)).sin() as f32).abs() < 1e-7);
    // The layer adds it to every sample, and passes the gradient through unchanged.
    let mut layer = SinusoidalPositions::new(6);
    let y = layer.forward(&Tensor::zeros(&[2, 4, 6]), Pass::TRAIN);
    assert_eq!(y.outer(0), pe.data());
    assert_eq!(y.outer(1), pe.data());
    let g = Tensor::randn(&[2, 4, 6], 0.0, 1.0, 1);
    assert_eq!(layer.backward(&g, InputGrad::Needed).unwrap(), g);
}

#[test]
fn the_learned_table_passes_the_finite_difference_check() {
    let x = Tensor::randn(&[3, 4, 5], 0.0, 1.0, 2);
    let mut layer = PositionEmbedding::new(6, 5);
    let report = check_layer(&mut layer, &x, Pass::TRAIN, &Options::default());
    assert!(report.passes(2e-2), "{report}");
}

/// Per-example gradients (private training): example n's dP is its own dy in the first T rows.
#[test]
fn per_example_gradients_are_each_examples_rows() {
    use backprop::privacy::per_example::{PerExampleGrads, backward_per_example};
    let (x, g) = (Tensor::randn(&[3, 2, 4], 0.0, 1.0, 3), Tensor::randn(&[3, 2, 4], 0.0, 1.0, 4));
    let mut layer = PositionEmbedding::new(5, 4);
    layer.forward(&x, Pass::TRAIN);
    let mut grads = PerExampleGrads::new();
    grads.start(3);
    backward_per_example(&mut layer, &g, InputGrad::NotNeeded, &mut grads);
    for n in 0..3 {
        let row = grads.slot(0).outer(n);
        assert_eq!(&row[..8], g.outer(n));
        assert!(row[8..].iter().all(|&v| v == 0.0));
    }
}

#[test]
fn bad_input_is_refused_by_name() {
    let e = PositionEmbedding::new(4, 3).output_shape(&[2, 5, 3]).unwrap_err().to_string();
    assert!(e.contains("PositionEmbedding(4, 3)") && e.contains("1 ≤ T ≤ 4") && e.contains("5"), "{e}");
    let e = SinusoidalPositions::new(8).output_shape(&[2, 5, 6]).unwrap_err().to_string();
    assert!(e.contains("SinusoidalPositions(8)") && e.contains("6"), "{e}");
    assert!(SinusoidalPositions::new(8).output_shape(&[2, 0, 8]).is_err());
    let e = Sequential::builder(&[9, 3]).add(PositionEmbedding::new(8, 3)).build().err().unwrap().to_string();
    assert!(e.contains("PositionEmbedding(8, 3)"), "{e}");
}
