//! Automatic differentiation on scalars, in about a hundred lines: a *tape* records every
//! operation of the forward pass; the backward pass walks the tape in reverse and applies each
//! gate's local rule (docs/backprop.md, "Gates, graphs and a tape"). Run on the worked example of
//! docs/backprop.md §10, it gives the same gradients as the crate's hand-written layers —
//! automatic and explicit backprop are the same chain rule, organised differently.
//!
//! Run: `cargo run --release --example scalar_autograd`

/// One recorded operation: which values it read, and how to send a gradient back to them.
#[derive(Clone, Copy, Debug)]
enum Op {
    /// An input or a parameter: nothing to propagate to.
    Leaf,
    /// `a + b`: the add gate passes the gradient to both inputs unchanged.
    Add(usize, usize),
    /// `a · b`: the multiply gate sends each input the gradient times the *other* input.
    Mul(usize, usize),
    /// `σ(a)`: the gradient times `σ(a)(1 − σ(a))`, read from the output.
    Sigmoid(usize),
    /// `a²`: the gradient times `2a`.
    Square(usize),
}

/// The tape: every value computed so far, its operation, and (after `backward`) its gradient.
#[derive(Default)]
pub struct Tape {
    /// Each value, in the order computed.
    pub value: Vec<f64>,
    /// `d out / d value`, after [`Tape::backward`].
    pub grad: Vec<f64>,
    op: Vec<Op>,
}

impl Tape {
    fn push(&mut self, value: f64, op: Op) -> usize {
        self.value.push(value);
        self.op.push(op);
        self.value.len() - 1
    }

    pub fn leaf(&mut self, v: f64) -> usize {
        self.push(v, Op::Leaf)
    }

    pub fn add(&mut self, a: usize, b: usize) -> usize {
        self.push(self.value[a] + self.value[b], Op::Add(a, b))
    }

    pub fn mul(&mut self, a: usize, b: usize) -> usize {
        self.push(self.value[a] * self.value[b], Op::Mul(a, b))
    }

    pub fn sub(&mut self, a: usize, b: usize) -> usize {
        let minus_one = self.leaf(-1.0);
        let neg_b = self.mul(b, minus_one);
        self.add(a, neg_b)
    }

    pub fn sigmoid(&mut self, a: usize) -> usize {
        self.push(1.0 / (1.0 + (-self.value[a]).exp()), Op::Sigmoid(a))
    }

    pub fn square(&mut self, a: usize) -> usize {
        self.push(self.value[a] * self.value[a], Op::Square(a))
    }

    /// The values operation `i` read, and its gate's name (for drawing the graph).
    pub fn node(&self, i: usize) -> (&'static str, Vec<usize>) {
        match self.op[i] {
            Op::Leaf => ("", vec![]),
            Op::Add(a, b) => ("+", vec![a, b]),
            Op::Mul(a, b) => ("×", vec![a, b]),
            Op::Sigmoid(a) => ("σ", vec![a]),
            Op::Square(a) => ("²", vec![a]),
        }
    }

    /// Reverse-mode sweep from `out`: `dout/dout = 1`, then every operation, newest first (a
    /// topological order, since an operation only reads older values), hands its gradient to its
    /// inputs with `+=` — a value used twice collects both contributions ("sum at forks").
    pub fn backward(&mut self, out: usize) {
        self.grad = vec![0.0; self.value.len()];
        self.grad[out] = 1.0;
        for i in (0..=out).rev() {
            let g = self.grad[i];
            match self.op[i] {
                Op::Leaf => {}
                Op::Add(a, b) => {
                    self.grad[a] += g;
                    self.grad[b] += g;
                }
                Op::Mul(a, b) => {
                    self.grad[a] += g * self.value[b];
                    self.grad[b] += g * self.value[a];
                }
                Op::Sigmoid(a) => self.grad[a] += g * self.value[i] * (1.0 - self.value[i]),
                Op::Square(a) => self.grad[a] += g * 2.0 * self.value[a],
            }
        }
    }
}

/// The 2-2-1 network of docs/backprop.md §10 on the tape, and where its values sit.
pub struct Worked {
    /// The recorded forward pass.
    pub tape: Tape,
    /// The loss's index.
    pub loss: usize,
    /// `W1`'s entries (row-major), `b1`, `W2`, `b2`.
    pub w1: [usize; 4],
    /// `b1`.
    pub b1: [usize; 2],
    /// `W2`.
    pub w2: [usize; 2],
    /// `b2`.
    pub b2: usize,
}

/// Records the worked example's forward pass.
pub fn worked_example() -> Worked {
    let mut t = Tape::default();
    let x = [t.leaf(1.0), t.leaf(0.5)];
    let target = t.leaf(1.0);
    let w1 = [t.leaf(0.5), t.leaf(-0.3), t.leaf(0.2), t.leaf(0.8)];
    let b1 = [t.leaf(0.1), t.leaf(-0.1)];
    let w2 = [t.leaf(0.7), t.leaf(-0.4)];
    let b2 = t.leaf(0.2);
    let mut h = [0; 2];
    for (j, h_j) in h.iter_mut().enumerate() {
        let p0 = t.mul(w1[2 * j], x[0]); // each x_i feeds both hidden units: a fork
        let p1 = t.mul(w1[2 * j + 1], x[1]);
        let s = t.add(p0, p1);
        let z = t.add(s, b1[j]);
        *h_j = t.sigmoid(z);
    }
    let q0 = t.mul(w2[0], h[0]);
    let q1 = t.mul(w2[1], h[1]);
    let s = t.add(q0, q1);
    let y = t.add(s, b2);
    let diff = t.sub(y, target);
    let loss = t.square(diff);
    Worked { tape: t, loss, w1, b1, w2, b2 }
}

fn main() {
    let Worked { tape: mut t, loss, w1, b1, w2, b2 } = worked_example();
    println!("tape: {} values; loss L = {:.6}", t.value.len(), t.value[loss]);
    t.backward(loss);
    let g = |ids: &[usize]| ids.iter().map(|&i| format!("{:+.6}", t.grad[i])).collect::<Vec<_>>().join(", ");
    println!("dL/dW1 = [{}]   (row-major)", g(&w1));
    println!("dL/db1 = [{}]", g(&b1));
    println!("dL/dW2 = [{}]", g(&w2));
    println!("dL/db2 = [{}]", g(&[b2]));
    println!(
        "\nThe same numbers as docs/backprop.md §10, which the crate's Dense and Sigmoid layers produce\n\
         with their hand-written backward passes (tests/worked_example.rs). The tape recorded {} scalar\n\
         operations for 9 parameters; a layer's backward pass does the same arithmetic as a few matrix\n\
         products over whole tensors, which is why this crate writes them by hand.",
        t.value.len()
    );
}
