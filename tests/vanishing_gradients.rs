//! `examples/vanishing_gradients.rs`: at initialisation, the sigmoid network's gradients shrink
//! by orders of magnitude towards the input; ReLU's and batch-normalised sigmoid's do not.

#[allow(dead_code)]
#[path = "../examples/vanishing_gradients.rs"]
mod vanishing_gradients;

#[test]
fn sigmoid_gradients_vanish_relu_and_batch_norm_keep_them() {
    let ratios: Vec<(String, f32)> = vanishing_gradients::networks()
        .into_iter()
        .map(|(name, mut m)| {
            let norms = vanishing_gradients::layer_gradient_norms(&mut m);
            assert_eq!(norms.len(), vanishing_gradients::DEPTH);
            (name.to_string(), norms[0] / norms[vanishing_gradients::DEPTH - 1])
        })
        .collect();
    let get = |n: &str| ratios.iter().find(|(name, _)| name == n).unwrap().1;
    assert!(get("sigmoid") < 1e-3, "sigmoid, first/last layer: {ratios:?}"); // measured 2.3e-5
    assert!(get("ReLU") > 0.05, "ReLU: {ratios:?}"); // 0.23
    assert!(get("sigmoid + batch norm") > 0.5, "with batch norm: {ratios:?}"); // 1.3
}

#[test]
fn the_documented_table_is_what_the_example_computes() {
    // docs/backprop.md §8 prints layers 1–3 and 8–10 of each network to 3 significant digits.
    let documented: [(&str, [f32; 6]); 3] = [
        ("sigmoid", [6.30e-6, 3.32e-5, 1.24e-4, 3.20e-2, 8.87e-2, 2.72e-1]),
        ("ReLU", [1.19, 2.00, 2.56, 4.29, 4.82, 5.26]),
        ("sigmoid + batch norm", [2.15e-1, 2.06e-1, 1.90e-1, 2.12e-1, 1.82e-1, 1.68e-1]),
    ];
    for ((name, mut model), (doc_name, doc)) in vanishing_gradients::networks().into_iter().zip(documented) {
        assert_eq!(name, doc_name);
        let norms = vanishing_gradients::layer_gradient_norms(&mut model);
        let shown = [norms[0], norms[1], norms[2], norms[7], norms[8], norms[9]];
        for (got, want) in shown.iter().zip(doc) {
            assert!((got / want - 1.0).abs() < 6e-3, "{name}: {shown:?} vs the documented {doc:?}");
        }
    }
}
