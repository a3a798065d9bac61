//! The readable definition of the recurrent layers, forward ([`recurrent_forward`]) and backward
//! through time ([`recurrent_backward`]): one sequence at a time, one step at a time, every gate a
//! plain dot product — no GEMM, no batching, no saved buffers. The layers compute the same numbers
//! with batched matrix products; `tests/recurrent.rs` asserts that they agree.

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

impl CellKind {
    /// Gates per unit: 1, 4 or 3.
    fn gates(self) -> usize {
        match self {
            CellKind::Rnn { .. } => 1,
            CellKind::Lstm => 4,
            CellKind::Gru => 3,
        }
    }
}

/// Panics, naming both shapes, unless `x` is `[N, T, F]`, the weights are `kind`'s for `F`
/// inputs (`W_ih [G·H, F]`, `W_hh [G·H, H]`, biases `[G·H]`) and every length is in `1..=T`;
/// returns `(N, T, F, H)`.
fn check_shapes(
    kind: CellKind,
    w: &Weights<'_>,
    x: &Tensor,
    lengths: &[usize],
) -> (usize, usize, usize, usize) {
    let what = |t: &Tensor| crate::tensor::shape_str(t.shape());
    assert_eq!(x.shape().len(), 3, "recurrent reference: x must be [N, T, F], got {}", what(x));
    let (n, t_len, f) = (x.dim(0), x.dim(1), x.dim(2));
    assert_eq!(w.w_hh.shape().len(), 2, "recurrent reference: W_hh must be [G·H, H], got {}", what(w.w_hh));
    let hidden = w.w_hh.dim(1);
    let g = kind.gates() * hidden;
    assert!(
        w.w_ih.shape() == [g, f] && w.w_hh.shape() == [g, hidden],
        "recurrent reference: {kind:?} over x {} needs W_ih [{g}, {f}] and W_hh [{g}, {hidden}], got {} and {}",
        what(x),
        what(w.w_ih),
        what(w.w_hh)
    );
    assert!(
        w.b_ih.shape() == [g] && w.b_hh.shape() == [g],
        "recurrent reference: the biases must be [{g}], got {} and {}",
        what(w.b_ih),
        what(w.b_hh)
    );
    assert!(
        lengths.is_empty() || (lengths.len() == n && lengths.iter().all(|l| (1..=t_len).contains(l))),
        "recurrent reference: {} lengths for {n} sequences of {t_len} steps (each must be in 1..={t_len}): {lengths:?}",
        lengths.len()
    );
    (n, t_len, f, hidden)
}

/// Row `r` of `w` dotted with `v`.
fn dot(w: &Tensor, r: usize, v: &[f32]) -> f32 {
    w.outer(r).iter().zip(v).map(|(a, b)| a * b).sum()
}

/// All steps' outputs `[N, T, H]` of a layer over `x [N, T, F]` from zero state; sequence `n` stops
/// after `lengths[n]` steps (outputs 0 after that) when `lengths` is not empty.
///
/// # Panics
/// If `x` is not `[N, T, F]`, the weights are not `kind`'s shapes for `F` inputs, or `lengths`
/// is neither empty nor `N` lengths in `1..=T` (the message names the shapes).
pub fn recurrent_forward(kind: CellKind, w: &Weights<'_>, x: &Tensor, lengths: &[usize]) -> Tensor {
    let (n, t_len, _, hidden) = check_shapes(kind, w, x, lengths);
    let mut y = Tensor::zeros(&[n, t_len, hidden]);
    for s in 0..n {
        let (mut h, mut c) = (vec![0.0f32; hidden], vec![0.0f32; hidden]);
        let len = lengths.get(s).copied().unwrap_or(t_len);
        for t in 0..len {
            let x_t = &x.outer(s)[t * x.dim(2)..][..x.dim(2)];
            // The gate pre-activations, row by row: a_j = W_ih[j]·x_t + b_ih[j], b_j = W_hh[j]·h + b_hh[j];
            // then the cell (`step`, shared with the backward reference).
            let gates = w.w_ih.dim(0);
            let a: Vec<f32> = (0..gates).map(|j| dot(w.w_ih, j, x_t) + w.b_ih.data()[j]).collect();
            let b: Vec<f32> = (0..gates).map(|j| dot(w.w_hh, j, &h) + w.b_hh.data()[j]).collect();
            (h, c) = step(kind, hidden, &a, &b, &h, &c);
            y.outer_mut(s)[t * hidden..][..hidden].copy_from_slice(&h);
        }
    }
    y
}

/// Everything [`recurrent_backward`] gives: the gradient of every input of the layer.
#[derive(Clone, Debug)]
pub struct Gradients {
    /// `dL/dx`, `[N, T, F]` (0 at padded steps).
    pub dx: Tensor,
    /// `dL/dW_ih`.
    pub dw_ih: Tensor,
    /// `dL/dW_hh`.
    pub dw_hh: Tensor,
    /// `dL/db_ih`.
    pub db_ih: Tensor,
    /// `dL/db_hh`.
    pub db_hh: Tensor,
    /// `dL/dh₀`, `[N, H]`.
    pub dh0: Tensor,
    /// `dL/dc₀`, `[N, H]` (zeros for cells without one).
    pub dc0: Tensor,
}

/// The definition of backprop through time, one sequence at a time and one step at a time, with
/// plain loops: the gradients of `L = Σ y ⊙ dy + Σ h_n ⊙ dh_n + Σ c_n ⊙ dc_n` for a layer run
/// from the initial state `(h0, c0)` (zeros when `None`) over `x [N, T, F]` with `lengths` (empty:
/// every step valid). `dy [N, T, H]`; `dh_n`, `dc_n [N, H]` or `None` for zero.
///
/// Each step first recomputes its forward values, then walks back: the gradient reaching `h_t`
/// is `dy_t` plus what step `t + 1` sent back; the cell's derivative turns it into the gate
/// gradients `dp` (the same for `a = W_ih·x + b_ih` and `b = W_hh·h + b_hh`, except the GRU's
/// new-gate, where `b_n` is multiplied by `r`); and the products send it on:
///
/// ```text
/// dW_ih += da ⊗ x_t    db_ih += da    dx_t = W_ihᵀ·da
/// dW_hh += db ⊗ h_{t−1}   db_hh += db    dh_{t−1} = W_hhᵀ·db (+ the cell's direct path)
/// ```
///
/// The batched layer ([`Recurrent::backward_with_state`](super::Recurrent::backward_with_state))
/// computes the same numbers; `tests/recurrent.rs` asserts they agree.
///
/// # Panics
/// As [`recurrent_forward`]; also if `dy` is not `[N, T, H]`, or an initial state or a final
/// state's gradient that is given is not `[N, H]`.
#[allow(clippy::too_many_arguments)] // the layer, its inputs, and the three output gradients
pub fn recurrent_backward(
    kind: CellKind,
    w: &Weights<'_>,
    x: &Tensor,
    lengths: &[usize],
    initial: (Option<&Tensor>, Option<&Tensor>),
    dy: &Tensor,
    dh_n: Option<&Tensor>,
    dc_n: Option<&Tensor>,
) -> Gradients {
    let (n, t_len, f, hidden) = check_shapes(kind, w, x, lengths);
    assert!(
        dy.shape() == [n, t_len, hidden],
        "recurrent reference: dy must be [{n}, {t_len}, {hidden}], got {}",
        crate::tensor::shape_str(dy.shape())
    );
    for (what, state) in [("h0", initial.0), ("c0", initial.1), ("dh_n", dh_n), ("dc_n", dc_n)] {
        if let Some(t) = state {
            assert!(
                t.shape() == [n, hidden],
                "recurrent reference: {what} must be [{n}, {hidden}], got {}",
                crate::tensor::shape_str(t.shape())
            );
        }
    }
    let gates = w.w_ih.dim(0);
    let mut out = Gradients {
        dx: Tensor::zeros(x.shape()),
        dw_ih: Tensor::zeros(w.w_ih.shape()),
        dw_hh: Tensor::zeros(w.w_hh.shape()),
        db_ih: Tensor::zeros(&[gates]),
        db_hh: Tensor::zeros(&[gates]),
        dh0: Tensor::zeros(&[n, hidden]),
        dc0: Tensor::zeros(&[n, hidden]),
    };
    let sig = sigmoid;
    for s in 0..n {
        let len = lengths.get(s).copied().unwrap_or(t_len);
        let row = |t: Option<&Tensor>| t.map_or(vec![0.0f32; hidden], |t| t.outer(s).to_vec());
        // Forward, keeping every step's input state, pre-activations and gates.
        let (mut h, mut c) = (row(initial.0), row(initial.1));
        let mut steps = Vec::with_capacity(len); // (h_{t−1}, c_{t−1}, a, b)
        for t in 0..len {
            let x_t = &x.outer(s)[t * f..][..f];
            let a: Vec<f32> = (0..gates).map(|j| dot(w.w_ih, j, x_t) + w.b_ih.data()[j]).collect();
            let b: Vec<f32> = (0..gates).map(|j| dot(w.w_hh, j, &h) + w.b_hh.data()[j]).collect();
            let (h_new, c_new) = step(kind, hidden, &a, &b, &h, &c);
            steps.push((h.clone(), c.clone(), a, b));
            (h, c) = (h_new, c_new);
        }
        // Backward, from the last valid step to the first.
        let (mut dh, mut dc) = (row(dh_n), row(dc_n));
        for t in (0..len).rev() {
            let (h_prev, c_prev, a, b) = &steps[t];
            for k in 0..hidden {
                dh[k] += dy[&[s, t, k]]; // dh_t = dL/dy_t + (from step t + 1)
            }
            let (mut da, mut db) = (vec![0.0f32; gates], vec![0.0f32; gates]);
            let (mut dh_prev, mut dc_prev) = (vec![0.0f32; hidden], vec![0.0f32; hidden]);
            for k in 0..hidden {
                match kind {
                    CellKind::Rnn { relu } => {
                        let p = a[k] + b[k];
                        let dp = dh[k] * if relu { f32::from(p > 0.0) } else { 1.0 - p.tanh() * p.tanh() };
                        (da[k], db[k]) = (dp, dp);
                    }
                    CellKind::Lstm => {
                        let p = |g: usize| a[g * hidden + k] + b[g * hidden + k];
                        let (i, fg, g, o) = (sig(p(0)), sig(p(1)), p(2).tanh(), sig(p(3)));
                        let c_t = fg * c_prev[k] + i * g;
                        let do_ = dh[k] * c_t.tanh();
                        let dc_t = dc[k] + dh[k] * o * (1.0 - c_t.tanh() * c_t.tanh());
                        let (di, dg, df) = (dc_t * g, dc_t * i, dc_t * c_prev[k]);
                        dc_prev[k] = dc_t * fg; // the cell path
                        let dp = [
                            di * i * (1.0 - i),
                            df * fg * (1.0 - fg),
                            dg * (1.0 - g * g),
                            do_ * o * (1.0 - o),
                        ];
                        for (gate, v) in dp.into_iter().enumerate() {
                            (da[gate * hidden + k], db[gate * hidden + k]) = (v, v);
                        }
                    }
                    CellKind::Gru => {
                        let r = sig(a[k] + b[k]);
                        let z = sig(a[hidden + k] + b[hidden + k]);
                        let n_gate = (a[2 * hidden + k] + r * b[2 * hidden + k]).tanh();
                        // h = (1 − z)·n + z·h_prev
                        let (dn, dz) = (dh[k] * (1.0 - z), dh[k] * (h_prev[k] - n_gate));
                        dh_prev[k] = dh[k] * z; // the direct path
                        let dp_n = dn * (1.0 - n_gate * n_gate);
                        let dr = dp_n * b[2 * hidden + k];
                        (da[2 * hidden + k], db[2 * hidden + k]) = (dp_n, dp_n * r);
                        let dp_z = dz * z * (1.0 - z);
                        (da[hidden + k], db[hidden + k]) = (dp_z, dp_z);
                        let dp_r = dr * r * (1.0 - r);
                        (da[k], db[k]) = (dp_r, dp_r);
                    }
                }
            }
            let x_t = &x.outer(s)[t * f..][..f];
            for j in 0..gates {
                for (p, &xv) in x_t.iter().enumerate() {
                    out.dw_ih[&[j, p]] += da[j] * xv; // dW_ih += da ⊗ x_t
                    out.dx[&[s, t, p]] += w.w_ih[&[j, p]] * da[j]; // dx_t = W_ihᵀ·da
                }
                for (p, &hv) in h_prev.iter().enumerate() {
                    out.dw_hh[&[j, p]] += db[j] * hv; // dW_hh += db ⊗ h_{t−1}
                    dh_prev[p] += w.w_hh[&[j, p]] * db[j]; // dh_{t−1} += W_hhᵀ·db
                }
                out.db_ih.data_mut()[j] += da[j];
                out.db_hh.data_mut()[j] += db[j];
            }
            (dh, dc) = (dh_prev, dc_prev);
        }
        out.dh0.outer_mut(s).copy_from_slice(&dh);
        out.dc0.outer_mut(s).copy_from_slice(&dc);
    }
    out
}

/// One step of a cell from the pre-activations `a`, `b`: the new `(h, c)`.
fn step(kind: CellKind, hidden: usize, a: &[f32], b: &[f32], h: &[f32], c: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let (mut h_new, mut c_new) = (vec![0.0f32; hidden], c.to_vec());
    for k in 0..hidden {
        h_new[k] = match kind {
            CellKind::Rnn { relu } => {
                let p = a[k] + b[k];
                if relu { p.max(0.0) } else { p.tanh() }
            }
            CellKind::Lstm => {
                let p = |g: usize| a[g * hidden + k] + b[g * hidden + k];
                let (i, f, g, o) = (sigmoid(p(0)), sigmoid(p(1)), p(2).tanh(), sigmoid(p(3)));
                c_new[k] = f * c[k] + i * g;
                o * c_new[k].tanh()
            }
            CellKind::Gru => {
                let r = sigmoid(a[k] + b[k]);
                let z = sigmoid(a[hidden + k] + b[hidden + k]);
                let n = (a[2 * hidden + k] + r * b[2 * hidden + k]).tanh();
                (1.0 - z) * n + z * h[k]
            }
        };
    }
    (h_new, c_new)
}
