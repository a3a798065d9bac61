//! docs/backprop.md §17: the scalar engine with operator overloading, the tensor tape and the
//! crate's layers train the same XOR network to the same numbers, step by step.

#[allow(dead_code)]
#[path = "../examples/micrograd_bridge.rs"]
mod bridge;

use bridge::Value;

#[test]
fn the_scalar_engine_sums_the_gradients_of_a_value_used_twice() {
    // f = x·y + x at x = 3, y = −2: df/dx = y + 1 = −1 (two uses), df/dy = x = 3.
    let (x, y) = (Value::new(3.0), Value::new(-2.0));
    let f = &(&x * &y) + &x;
    f.backward();
    assert_eq!((f.data(), x.grad(), y.grad()), (-3.0, -1.0, 3.0));
    // tanh's local derivative: d tanh(x)/dx = 1 − tanh²(x).
    let t = x.tanh();
    t.backward();
    assert!((x.grad() - (1.0 - 3f64.tanh().powi(2))).abs() < 1e-15);
}

#[test]
fn three_implementations_take_the_same_steps() {
    let (steps, lr) = (1000, 0.2);
    let (scalar, scalar_w) = bridge::train_scalars(steps, lr);
    let (tensor, tensor_w) = bridge::train_tensors(steps, lr as f32);
    let (layers, layers_w) = bridge::train_layers(steps, lr as f32);
    assert!((scalar[0] - 0.864010).abs() < 1e-6, "{}", scalar[0]);
    for s in 0..steps {
        let tol = 1e-5 + 1e-4 * scalar[s];
        assert!((tensor[s] as f64 - scalar[s]).abs() < tol, "step {s}: {} vs {}", tensor[s], scalar[s]);
        assert!((layers[s] as f64 - scalar[s]).abs() < tol, "step {s}: {} vs {}", layers[s], scalar[s]);
    }
    for (a, (b, c)) in scalar_w.iter().flatten().zip(tensor_w.iter().flatten().zip(layers_w.iter().flatten()))
    {
        assert!((*b as f64 - a).abs() < 1e-5 && (*c as f64 - a).abs() < 1e-5, "{a} {b} {c}");
    }
    assert!(scalar[steps - 1] < 1e-3, "XOR is learned: {}", scalar[steps - 1]);
}
