//! `examples/draw_graph.rs`: the neuron it draws carries the gradients docs/backprop.md's
//! "Gates, graphs and a tape" writes on its wires.

#[allow(dead_code)]
#[path = "../examples/draw_graph.rs"]
mod draw_graph;

#[test]
fn the_drawn_neuron_has_the_chapters_gradients() {
    let (t, loss, names) = draw_graph::neuron();
    assert!((t.value[loss] - 0.1516).abs() < 1e-4);
    let grad = |n: &str| t.grad[names.iter().find(|(_, s)| *s == n).unwrap().0];
    for (name, want) in [("x₁", -0.0926), ("w₁", -0.1851), ("x₂", 0.0555), ("w₂", -0.0926), ("b", -0.1851)]
    {
        assert!((grad(name) - want).abs() < 1e-4, "{name}: {}", grad(name));
    }
}

/// The committed picture (docs/img/backprop_graph.svg) is what the program draws today.
#[test]
fn the_committed_graph_is_the_programs() {
    let committed = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/img/backprop_graph.svg"),
    )
    .unwrap();
    assert_eq!(draw_graph::graph_svg(), committed, "run `cargo run --release --example draw_graph`");
}
