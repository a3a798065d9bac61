//! The readable definition of the recurrent layers' forward pass: one sequence at a time, one
//! step at a time, every gate a plain dot product — no GEMM, no batching, no saved buffers. The
//! layers compute the same numbers with batched matrix products; `tests/recurrent.rs` asserts
//! that they agree.

use crate::tensor::Tensor;
use crate::tensor::math::sigmoid;

/// Which cell, and its settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CellKind {
    /// `h = tanh(p)` (or ReLU).
    Rnn {
        /// ReLU instead of tanh.
        relu: bool,
    },
    /// Gates i, f, g, o.
    Lstm,
    /// Gates r, z, n.
    Gru,
}

/// The weights of one layer, PyTorch's layouts: `W_ih [G·H, F]`, `W_hh [G·H, H]`, biases `[G·H]`.
pub struct Weights<'a> {
    /// `W_ih`.
    pub w_ih: &'a Tensor,
    /// `W_hh`.
    pub w_hh: &'a Tensor,
    /// `b_ih`.
    pub b_ih: &'a Tensor,
    /// `b_hh`.
    pub b_hh: &'a Tensor,
}

/// Row `r` of `w` dotted with `v`.
fn dot(w: &Tensor, r: usize, v: &[f32]) -> f32 {
    w.outer(r).iter().zip(v).map(|(a, b)| a * b).sum()
}

/// All steps' outputs `[N, T, H]` of a layer over `x [N, T, F]` from zero state; sequence `n` stops
/// after `lengths[n]` steps (outputs 0 after that) when `lengths` is not empty.
pub fn recurrent_forward(kind: CellKind, w: &Weights<'_>, x: &Tensor, lengths: &[usize]) -> Tensor {
    let (n, t_len, hidden) = (x.dim(0), x.dim(1), w.w_hh.dim(1));
    let mut y = Tensor::zeros(&[n, t_len, hidden]);
    for s in 0..n {
        let (mut h, mut c) = (vec![0.0f32; hidden], vec![0.0f32; hidden]);
        let len = lengths.get(s).copied().unwrap_or(t_len);
        for t in 0..len {
            let x_t = &x.outer(s)[t * x.dim(2)..][..x.dim(2)];
            // The gate pre-activations, row by row: a_j = W_ih[j]·x_t + b_ih[j], b_j = W_hh[j]·h + b_hh[j].
            let a = |j: usize| dot(w.w_ih, j, x_t) + w.b_ih.data()[j];
            let b = |j: usize| dot(w.w_hh, j, &h) + w.b_hh.data()[j];
            let mut h_new = vec![0.0f32; hidden];
            for k in 0..hidden {
                h_new[k] = match kind {
                    CellKind::Rnn { relu } => {
                        let p = a(k) + b(k);
                        if relu { p.max(0.0) } else { p.tanh() }
                    }
                    CellKind::Lstm => {
                        let gate = |g: usize| a(g * hidden + k) + b(g * hidden + k);
                        let (i, f, g, o) =
                            (sigmoid(gate(0)), sigmoid(gate(1)), gate(2).tanh(), sigmoid(gate(3)));
                        c[k] = f * c[k] + i * g;
                        o * c[k].tanh()
                    }
                    CellKind::Gru => {
                        let r = sigmoid(a(k) + b(k));
                        let z = sigmoid(a(hidden + k) + b(hidden + k));
                        let n_gate = (a(2 * hidden + k) + r * b(2 * hidden + k)).tanh();
                        (1.0 - z) * n_gate + z * h[k]
                    }
                };
            }
            h = h_new;
            y.outer_mut(s)[t * hidden..][..hidden].copy_from_slice(&h);
        }
    }
    y
}
