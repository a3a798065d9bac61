//! `examples/scalar_autograd.rs`: the tape's reverse sweep gives the worked example's gradients
//! (docs/backprop.md §10) — the same numbers as the crate's hand-written layers.

#[allow(dead_code)]
#[path = "../examples/scalar_autograd.rs"]
mod scalar_autograd;

#[test]
fn the_tape_reproduces_the_worked_example() {
    let scalar_autograd::Worked { tape: mut t, loss, w1, b1, w2, b2 } = scalar_autograd::worked_example();
    assert!((t.value[loss] - 0.386307).abs() < 5e-7, "L = {}", t.value[loss]);
    t.backward(loss);
    let expected = [
        (w1[0], -0.206886),
        (w1[1], -0.103443),
        (w1[2], 0.116851),
        (w1[3], 0.058425),
        (b1[0], -0.206886),
        (b1[1], 0.116851),
        (w2[0], -0.759069),
        (w2[1], -0.773762),
        (b2, -1.243073),
    ];
    for (i, want) in expected {
        assert!((t.grad[i] - want).abs() < 1e-6, "value {i}: {} vs {want}", t.grad[i]);
    }
}

#[test]
fn a_value_used_twice_collects_both_gradients() {
    // f = x·x + x at x = 3: df/dx = 2x + 1 = 7, through three uses of x.
    let mut t = scalar_autograd::Tape::default();
    let x = t.leaf(3.0);
    let xx = t.mul(x, x);
    let f = t.add(xx, x);
    t.backward(f);
    assert_eq!(t.grad[x], 7.0);
}
