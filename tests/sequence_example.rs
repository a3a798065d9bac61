//! `examples/sequence.rs` runs as documented: the feed-forward net stays near chance on binary
//! addition while RNN, LSTM and GRU learn it (the example asserts both).

#[allow(dead_code)]
#[path = "../examples/sequence.rs"]
mod example;

#[test]
fn the_sequence_example_runs_and_learns() {
    example::main();
}

/// docs/backprop.md §12's table of gradient ratios by distance, as printed (two significant
/// digits): so the text's figures and its reading of them (the RNN's 6·10⁻¹² at t = 0, the forget
/// bias's non-monotone row) cannot drift from the code.
#[test]
fn the_gradient_by_distance_table_is_the_texts() {
    let table = example::gradient_by_distance();
    let text: [(&str, [f32; 6]); 4] = [
        ("RNN", [1.0, 1.5e-1, 1.1e-2, 6.0e-5, 3.0e-7, 5.9e-12]),
        ("LSTM", [1.0, 2.3e-1, 3.0e-2, 2.0e-4, 2.9e-6, 1.1e-9]),
        ("GRU", [1.0, 4.7e-1, 6.0e-2, 2.6e-4, 4.3e-6, 1.2e-9]),
        ("LSTM, forget-gate bias 3", [1.0, 3.7e-1, 4.5e-1, 4.4e-1, 3.8e-1, 3.5e-1]),
    ];
    for ((kind, ratios), (text_kind, printed)) in table.iter().zip(text) {
        assert_eq!(*kind, text_kind);
        for (got, want) in ratios.iter().zip(printed) {
            // Printed with two significant digits: within half a unit of the second digit (and a
            // little more, for rounding that differs between CPUs' kernels).
            assert!((got - want).abs() <= 0.07 * want, "{kind}: {ratios:?} vs the text's {printed:?}");
        }
    }
}
