//! `examples/sequence.rs` runs as documented: the feed-forward net stays near chance on binary
//! addition while RNN, LSTM and GRU learn it, clipping keeps the exploding RNN finite, and the
//! gradient reaching each step falls off as the text's table says.

#[allow(dead_code)]
#[path = "../examples/sequence.rs"]
mod example;

/// The example's tables as docs/backprop.md §12 prints them: the accuracies after epochs 1, 2 and
/// 10 (within a point, for rounding that differs between CPUs' kernels), and the clipping runs
/// (the largest gradient norm within 10 %, the bits within a point). A no-op clip, or a layer that
/// stopped learning, would change them.
#[test]
fn the_sequence_example_learns_as_the_text_says() {
    let (train, test) = (example::additions(4000, 1), example::additions(1000, 2));
    let table = example::train_and_report(&train, &test);
    let text: [(&str, [(f32, f32); 3]); 4] = [
        ("feed-forward", [(55.2, 0.9), (55.2, 0.9), (55.2, 0.9)]),
        ("RNN", [(79.8, 2.9), (100.0, 100.0), (100.0, 100.0)]),
        ("LSTM", [(100.0, 100.0), (100.0, 100.0), (100.0, 100.0)]),
        ("GRU", [(85.8, 17.3), (100.0, 100.0), (100.0, 100.0)]),
    ];
    for ((kind, accs), (text_kind, printed)) in table.iter().zip(text) {
        assert_eq!((*kind, accs.len()), (text_kind, 10));
        for (epoch, (bits, sums)) in [0, 1, 9].into_iter().zip(printed) {
            let (got_bits, got_sums) = (100.0 * accs[epoch].0, 100.0 * accs[epoch].1);
            assert!(
                (got_bits - bits).abs() <= 1.0 && (got_sums - sums).abs() <= 1.0,
                "{kind}, epoch {}: {got_bits:.1}/{got_sums:.1} vs the text's {bits}/{sums}",
                epoch + 1
            );
        }
    }
    let clipping = example::clipping(&train, &test);
    let text = [(1.40e15f32, 49.8f32), (1.53e2, 60.8)];
    for ((largest, accuracies), (want_largest, want_bits)) in clipping.iter().zip(text) {
        assert!(
            (largest / want_largest - 1.0).abs() < 0.1,
            "largest norm {largest:e} vs the text's {want_largest:e}"
        );
        let (bits, sums) = accuracies.expect("trained to finite weights");
        assert!(
            (100.0 * bits - want_bits).abs() <= 1.0 && sums == 0.0,
            "{bits} {sums} vs the text's {want_bits}"
        );
    }
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
