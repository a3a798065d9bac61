//! `examples/sequence.rs` runs as documented: the feed-forward net stays near chance on binary
//! addition while RNN, LSTM and GRU learn it (the example asserts both).

#[allow(dead_code)]
#[path = "../examples/sequence.rs"]
mod example;

#[test]
fn the_sequence_example_runs_and_learns() {
    example::main();
}
