//! `examples/bug_zoo.rs`: every deliberate bug fails the gradient check and its correct twin
//! passes it.

#[allow(dead_code)]
#[path = "../examples/bug_zoo.rs"]
mod bug_zoo;

#[test]
fn every_bug_is_caught_and_every_twin_passes() {
    let rows = bug_zoo::zoo();
    assert_eq!(rows.len(), 4);
    for (name, twin_passes, bug_passes, error) in &rows {
        assert!(*twin_passes, "{name}: the correct version must pass");
        assert!(!*bug_passes, "{name}: the bug must fail (largest error {error})");
    }
    // The table of docs/backprop.md §11, as printed (two decimals).
    for ((name, _, _, error), printed) in rows.iter().zip([1.94f32, 1.62, 1.50, 0.96]) {
        assert!((error - printed).abs() <= 0.006, "{name}: largest error {error}, the text says {printed}");
    }
    let forgot_mean = rows[3].3;
    assert!(
        (forgot_mean - (1.0 - 1.0 / 24.0)).abs() < 1e-3,
        "N times too large: error 1 − 1/N, got {forgot_mean}"
    );
}
