//! `examples/custom_layer.rs` runs as documented: its gradient check passes, the layer trains
//! inside a model, and its state saves and loads (the example asserts each step).

#[allow(dead_code)]
#[path = "../examples/custom_layer.rs"]
mod example;

#[test]
fn the_custom_layer_example_runs() {
    example::main().unwrap();
}
