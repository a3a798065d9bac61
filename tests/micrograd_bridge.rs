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
    // The chapter's table: the f64 column to its seven printed digits.
    let printed =
        [(0, 8.640103e-1), (1, 2.943509e-1), (2, 2.870573e-1), (10, 2.600766e-1), (100, 4.581425e-2)];
    for (s, want) in printed {
        assert!((scalar[s] / want - 1.0).abs() < 1e-6, "step {s}: {:e} vs the chapter's {want:e}", scalar[s]);
    }
    // Step 999's 1.960597e-30 is rounding noise itself (another libm's tanh moves it by a
    // fraction): only its order of magnitude is the chapter's point.
    assert!(scalar[steps - 1] < 1e-28, "{:e}", scalar[steps - 1]);
    // The f32 columns follow the f64 one closely while the loss is far above f32's rounding
    // (relative 10⁻³; the chapter shows them equal to 6 digits), and each other (1 %) until the
    // loss nears that rounding (outputs within 10⁻⁵ of their targets: losses below 10⁻⁹); both
    // end below 10⁻¹¹, where f32 stops, and the f64 engine goes on to 2·10⁻³⁰.
    for s in 0..steps {
        let (t, l) = (tensor[s] as f64, layers[s] as f64);
        if scalar[s] > 1e-6 {
            assert!((t / scalar[s] - 1.0).abs() < 1e-3, "step {s}: tape {t:e} vs scalars {:e}", scalar[s]);
            assert!((l / scalar[s] - 1.0).abs() < 1e-3, "step {s}: layers {l:e} vs scalars {:e}", scalar[s]);
        }
        if t.max(l) > 1e-9 {
            assert!((t - l).abs() <= 0.01 * t.max(l), "step {s}: tape {t:e} vs layers {l:e}");
        }
    }
    assert!(
        tensor[steps - 1] < 1e-11 && layers[steps - 1] < 1e-11,
        "{} {}",
        tensor[steps - 1],
        layers[steps - 1]
    );
    // The weights after training, within the chapter's 1.8·10⁻⁶ (and room for the CPU's and the
    // libm's rounding: other summation orders reach about 2.6·10⁻⁶).
    for (a, (b, c)) in scalar_w.iter().flatten().zip(tensor_w.iter().flatten().zip(layers_w.iter().flatten()))
    {
        assert!((*b as f64 - a).abs() < 5e-6 && (*c as f64 - a).abs() < 5e-6, "{a} {b} {c}");
    }
    assert!(scalar[steps - 1] < 1e-3, "XOR is learned: {}", scalar[steps - 1]);
}
