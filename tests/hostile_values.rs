//! Hostile values through every `Result` API (the second hardening round, issue 23): an
//! embedding's ids out of range, negative, NaN, infinite or fractional are `Err`s — never panics —
//! from `predict`, `predict_classes`, `evaluate`, `input_gradient`, `train_step`, `fit` and
//! private training, and the model is left as it was.

use backprop::prelude::*;
use backprop::privacy::{DpOptions, fit_private};

fn model() -> Sequential {
    Sequential::builder(&[3])
        .add(Embedding::new(5, 2))
        .add(Flatten::new())
        .add(Dense::new(6, 2))
        .build()
        .unwrap()
}

#[test]
fn bad_ids_are_errors_from_every_result_api() {
    for bad in [5.0, 7.0, -1.0, f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1.5, 1e30] {
        let x = Tensor::from_vec(&[2, 3], vec![0.0, 1.0, 2.0, 3.0, bad, 4.0]).unwrap();
        let mut m = model();
        let before = m.state_dict();
        let expect = |what: &str, e: backprop::Error| {
            let msg = e.to_string();
            assert!(
                msg.contains("Embedding(5, 2)") && msg.contains("position 4"),
                "{what} with id {bad}: {msg}"
            );
        };
        expect("predict", m.predict(&x, 2).unwrap_err());
        expect("predict_classes", m.predict_classes(&x, 2).unwrap_err());
        expect("input_gradient", m.input_gradient(&x, &[0, 1]).unwrap_err());
        expect(
            "train_step",
            m.train_step(&x, (&vec![0, 1]).into(), &CrossEntropyLoss::new(), &mut Sgd::new(0.1)).unwrap_err(),
        );
        let data = Dataset::classification(x.clone(), vec![0, 1]).unwrap();
        expect("evaluate", m.evaluate(&data, &CrossEntropyLoss::new(), 2).unwrap_err());
        let fit =
            m.fit(&data, &CrossEntropyLoss::new(), &mut Sgd::new(0.1), FitOptions::new().verbose(false));
        expect("fit", fit.unwrap_err());
        let dp =
            DpOptions { epochs: 1, sample_rate: 0.5, clip: 1.0, noise_multiplier: 1.0, delta: 1e-5, seed: 1 };
        expect(
            "fit_private",
            fit_private(&mut m, &data, &CrossEntropyLoss::new(), &mut Sgd::new(0.1), &dp).unwrap_err(),
        );
        assert_eq!(m.state_dict(), before, "id {bad}: nothing changed");
    }
}
