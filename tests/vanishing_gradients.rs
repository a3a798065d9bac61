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
