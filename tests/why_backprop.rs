//! `examples/why_backprop.rs`: the counts its timing rests on.

#[allow(dead_code)]
#[path = "../examples/why_backprop.rs"]
mod why_backprop;

#[test]
fn the_reference_network_needs_69652_forward_passes_for_a_numerical_gradient() {
    let model = why_backprop::reference_cnn();
    assert_eq!(model.num_params(), 34_826, "32·9 + 32, 64·32·9 + 64, 1600·10 + 10");
    assert_eq!(why_backprop::forward_passes_for_numerical_gradient(&model), 69_652);
}
