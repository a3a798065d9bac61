//! From scalars to tensors: one XOR network trained three ways, with the same numbers
//! (docs/backprop.md §17).
//!
//! 1. **Scalars with operator overloading**: every weight a `Value`, `+`, `*` and `tanh` build a
//!    graph as they compute, and `backward` walks it — the micrograd way, 2–4–1 MLP on XOR.
//! 2. **Tensors on a tape**: the same step as three matrix products forward (`Z₁ = X·W₁ᵀ`,
//!    `Z₂ = H·W₂ᵀ`, and the loss's sum) with each operation's vector–Jacobian product recorded on a
//!    tape of four entries, walked backward — a batch at once instead of one scalar at a time.
//! 3. **The crate's layers**: `Dense → Tanh → Dense` and `MseLoss`, whose hand-written `backward`s
//!    are those vector–Jacobian products.
//!
//! All three start from the same weights and take the same SGD steps; their losses and weights
//! agree to f32 rounding after every step (`tests/micrograd_bridge.rs`).
//!
//! Run: `cargo run --release --example micrograd_bridge`

use backprop::prelude::*;
use backprop::tensor::gemm::{Transpose::No, Transpose::Yes, gemm};
use std::cell::RefCell;
use std::ops::{Add, Mul};
use std::rc::Rc;

// ------------------------------------------------------------------- 1. scalars

/// A scalar in the graph: its value, its gradient (after `backward`), and how it was made.
pub struct Node {
    data: f64,
    grad: f64,
    parents: Vec<(Value, f64)>, // (parent, ∂self/∂parent): the local derivatives, known at creation
}

/// A shared handle to a [`Node`]: arithmetic on `Value`s records the graph.
#[derive(Clone)]
pub struct Value(Rc<RefCell<Node>>);

impl Value {
    /// A leaf: an input or a parameter.
    pub fn new(data: f64) -> Value {
        Value(Rc::new(RefCell::new(Node { data, grad: 0.0, parents: Vec::new() })))
    }
    fn with(data: f64, parents: Vec<(Value, f64)>) -> Value {
        Value(Rc::new(RefCell::new(Node { data, grad: 0.0, parents })))
    }
    /// The value.
    pub fn data(&self) -> f64 {
        self.0.borrow().data
    }
    /// `dL/d(self)` after [`Value::backward`] on `L`.
    pub fn grad(&self) -> f64 {
        self.0.borrow().grad
    }
    /// `tanh(self)`, local derivative `1 − tanh²`.
    pub fn tanh(&self) -> Value {
        let t = self.data().tanh();
        Value::with(t, vec![(self.clone(), 1.0 - t * t)])
    }
    /// Sets every gradient reachable from `self` to zero, then `d self/d self = 1`, and walks the
    /// graph in reverse topological order: each node adds `its grad × local derivative` to each
    /// parent (the sum rule for values used more than once).
    pub fn backward(&self) {
        let mut order = Vec::new();
        let mut seen = std::collections::HashSet::new();
        fn visit(
            v: &Value,
            seen: &mut std::collections::HashSet<*const RefCell<Node>>,
            order: &mut Vec<Value>,
        ) {
            if seen.insert(Rc::as_ptr(&v.0)) {
                for (p, _) in &v.0.borrow().parents {
                    visit(p, seen, order);
                }
                order.push(v.clone());
            }
        }
        visit(self, &mut seen, &mut order);
        order.iter().for_each(|v| v.0.borrow_mut().grad = 0.0);
        self.0.borrow_mut().grad = 1.0;
        for v in order.iter().rev() {
            let node = v.0.borrow();
            for (p, local) in &node.parents {
                p.0.borrow_mut().grad += node.grad * local;
            }
        }
    }
    /// `self ← self − lr · grad`.
    pub fn step(&self, lr: f64) {
        let mut n = self.0.borrow_mut();
        n.data -= lr * n.grad;
    }
}

impl Add for &Value {
    type Output = Value;
    fn add(self, other: &Value) -> Value {
        Value::with(self.data() + other.data(), vec![(self.clone(), 1.0), (other.clone(), 1.0)])
    }
}

impl Mul for &Value {
    type Output = Value;
    fn mul(self, other: &Value) -> Value {
        Value::with(
            self.data() * other.data(),
            vec![(self.clone(), other.data()), (other.clone(), self.data())],
        )
    }
}

/// XOR: the four inputs and their targets.
pub const XOR: [([f64; 2], f64); 4] = [([0., 0.], 0.), ([0., 1.], 1.), ([1., 0.], 1.), ([1., 1.], 0.)];

/// The starting weights of every version: `W₁ [4, 2]`, `b₁ [4]`, `W₂ [1, 4]`, `b₂ [1]`.
pub fn initial_weights() -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
    let w1 = vec![0.5, -0.4, 0.3, 0.8, -0.7, 0.2, 0.6, -0.5];
    let b1 = vec![0.1, -0.1, 0.05, 0.0];
    let w2 = vec![0.7, -0.6, 0.5, -0.3];
    (w1, b1, w2, vec![0.0])
}

/// Version 1: `steps` SGD steps on scalars; returns the loss before each step and the final
/// weights `(W₁, b₁, W₂, b₂)`.
pub fn train_scalars(steps: usize, lr: f64) -> (Vec<f64>, [Vec<f64>; 4]) {
    let (w1, b1, w2, b2) = initial_weights();
    let leaves = |v: &[f64]| v.iter().map(|&x| Value::new(x)).collect::<Vec<_>>();
    let (w1, b1, w2, b2) = (leaves(&w1), leaves(&b1), leaves(&w2), leaves(&b2));
    let mut losses = Vec::new();
    for _ in 0..steps {
        // L = (1/4) Σₙ (y_n − t_n)²,  y = W₂·tanh(W₁x + b₁) + b₂
        let mut total = Value::new(0.0);
        for (x, t) in XOR {
            let x = [Value::new(x[0]), Value::new(x[1])];
            let h: Vec<Value> = (0..4)
                .map(|j| (&(&(&w1[2 * j] * &x[0]) + &(&w1[2 * j + 1] * &x[1])) + &b1[j]).tanh())
                .collect();
            let y = h.iter().zip(&w2).fold(b2[0].clone(), |acc, (h, w)| &acc + &(w * h));
            let e = &y + &Value::new(-t);
            total = &total + &(&e * &e);
        }
        let loss = &total * &Value::new(0.25);
        losses.push(loss.data());
        loss.backward();
        w1.iter().chain(&b1).chain(&w2).chain(&b2).for_each(|p| p.step(lr));
    }
    let out = |v: &[Value]| v.iter().map(Value::data).collect();
    (losses, [out(&w1), out(&b1), out(&w2), out(&b2)])
}

// ------------------------------------------------------------------- 2. tensors on a tape

/// One recorded tensor operation and what its vector–Jacobian product needs.
enum Op {
    /// `Z = A·Wᵀ + b` (`A [N, in]`, `W [out, in]`): `dA = dZ·W`, `dW = dZᵀ·A`, `db = Σₙ dZ`.
    Affine { a: Tensor, w: usize },
    /// `H = tanh(Z)`: `dZ = dH ⊙ (1 − H²)`.
    Tanh { h: Tensor },
    /// `L = mean((Y − T)²)`: `dY = 2(Y − T)/K`.
    Mse { diff: Tensor },
}

/// Version 2: the same steps with whole-batch tensors and a tape of vector–Jacobian products.
pub fn train_tensors(steps: usize, lr: f32) -> (Vec<f32>, [Vec<f32>; 4]) {
    let (w1, b1, w2, b2) = initial_weights();
    let f = |v: Vec<f64>, shape: &[usize]| {
        Tensor::from_vec(shape, v.iter().map(|&x| x as f32).collect()).unwrap()
    };
    // params[k] = (W, b) of affine map k.
    let mut params = [(f(w1, &[4, 2]), f(b1, &[4])), (f(w2, &[1, 4]), f(b2, &[1]))];
    let x = Tensor::from_vec(&[4, 2], XOR.iter().flat_map(|(x, _)| x.map(|v| v as f32)).collect()).unwrap();
    let t = Tensor::from_vec(&[4, 1], XOR.iter().map(|&(_, t)| t as f32).collect()).unwrap();
    let mut losses = Vec::new();
    for _ in 0..steps {
        let mut tape: Vec<Op> = Vec::new();
        let affine = |a: &Tensor, (w, b): &(Tensor, Tensor)| {
            let mut z = Tensor::zeros(&[a.dim(0), w.dim(0)]);
            gemm(1.0, a, No, w, Yes, 0.0, &mut z); // Z = A·Wᵀ
            z.data_mut()
                .chunks_exact_mut(b.len())
                .for_each(|row| row.iter_mut().zip(b.data()).for_each(|(v, b)| *v += b));
            z
        };
        // Forward, recording each operation.
        let z1 = affine(&x, &params[0]);
        tape.push(Op::Affine { a: x.clone(), w: 0 });
        let h = z1.map(f32::tanh);
        tape.push(Op::Tanh { h: h.clone() });
        let y = affine(&h, &params[1]);
        tape.push(Op::Affine { a: h.clone(), w: 1 });
        let diff = y.zip_map(&t, |y, t| y - t);
        losses.push(diff.data().iter().map(|d| d * d).sum::<f32>() / diff.len() as f32);
        tape.push(Op::Mse { diff });
        // Backward: the tape in reverse, each entry a vector–Jacobian product.
        let mut grads: [Option<(Tensor, Tensor)>; 2] = [None, None];
        let mut g = Tensor::default();
        for op in tape.iter().rev() {
            g = match op {
                Op::Mse { diff } => diff.map(|d| 2.0 * d / diff.len() as f32), // dY = 2(Y − T)/K
                Op::Tanh { h } => g.zip_map(h, |g, h| g * (1.0 - h * h)),      // dZ = dH ⊙ (1 − H²)
                Op::Affine { a, w } => {
                    let (wt, _) = &params[*w];
                    let mut dw = Tensor::zeros(wt.shape());
                    gemm(1.0, &g, Yes, a, No, 0.0, &mut dw); // dW = dZᵀ·A
                    let mut db = Tensor::zeros(&[wt.dim(0)]);
                    g.data()
                        .chunks_exact(wt.dim(0))
                        .for_each(|row| db.data_mut().iter_mut().zip(row).for_each(|(s, v)| *s += v));
                    let mut da = Tensor::zeros(a.shape());
                    gemm(1.0, &g, No, wt, No, 0.0, &mut da); // dA = dZ·W
                    grads[*w] = Some((dw, db));
                    da
                }
            };
        }
        for ((w, b), grad) in params.iter_mut().zip(grads) {
            let (dw, db) = grad.expect("every affine map was on the tape");
            w.axpy(-lr, &dw);
            b.axpy(-lr, &db);
        }
    }
    let [(w1, b1), (w2, b2)] = params;
    (losses, [w1.into_vec(), b1.into_vec(), w2.into_vec(), b2.into_vec()])
}

// ------------------------------------------------------------------- 3. the crate's layers

/// Version 3: `Dense(2→4) → Tanh → Dense(4→1)`, `MseLoss`, `Sgd`.
pub fn train_layers(steps: usize, lr: f32) -> (Vec<f32>, [Vec<f32>; 4]) {
    let (w1, b1, w2, b2) = initial_weights();
    let f = |v: Vec<f64>, shape: &[usize]| {
        Tensor::from_vec(shape, v.iter().map(|&x| x as f32).collect()).unwrap()
    };
    let mut model = Sequential::builder(&[2])
        .add(Dense::new(2, 4).with_weights(f(w1, &[4, 2]), Some(f(b1, &[4]))))
        .add(Tanh::new())
        .add(Dense::new(4, 1).with_weights(f(w2, &[1, 4]), Some(f(b2, &[1]))))
        .build()
        .expect("the XOR network");
    let x = Tensor::from_vec(&[4, 2], XOR.iter().flat_map(|(x, _)| x.map(|v| v as f32)).collect()).unwrap();
    let t = Tensor::from_vec(&[4, 1], XOR.iter().map(|&(_, t)| t as f32).collect()).unwrap();
    let mut sgd = Sgd::new(lr);
    let losses = (0..steps)
        .map(|_| model.train_step(&x, (&t).into(), &MseLoss::new(), &mut sgd).expect("a valid batch"))
        .collect();
    let weights: Vec<Vec<f32>> = model.state_dict().into_iter().map(|(_, t)| t.into_vec()).collect();
    (losses, [weights[0].clone(), weights[1].clone(), weights[2].clone(), weights[3].clone()])
}

fn main() {
    let (steps, lr) = (1000, 0.2);
    let (scalar, scalar_w) = train_scalars(steps, lr);
    let (tensor, tensor_w) = train_tensors(steps, lr as f32);
    let (layers, layers_w) = train_layers(steps, lr as f32);
    println!("XOR, a 2–4–1 tanh MLP, mean squared error, SGD {lr}, the same starting weights\n");
    println!("  step    scalars (f64)   tensors + tape (f32)   the crate's layers (f32)");
    for s in [0, 1, 2, 10, 100, steps - 1] {
        println!("  {s:>4}    {:<14.6e}  {:<21.6e}  {:.6e}", scalar[s], tensor[s], layers[s]);
    }
    let worst = |a: &[Vec<f32>; 4]| {
        a.iter()
            .flatten()
            .zip(scalar_w.iter().flatten())
            .map(|(&x, &y)| (x as f64 - y).abs())
            .fold(0.0, f64::max)
    };
    println!(
        "\nlargest weight difference from the scalar version after {steps} steps: tensors {:.1e}, layers {:.1e}",
        worst(&tensor_w),
        worst(&layers_w)
    );
}
