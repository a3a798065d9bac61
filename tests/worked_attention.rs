//! The worked numbers of docs/backprop.md §13: one causal head, `d = 2`, two steps, projections
//! set to the identity (so `Q = K = V = X`), against `MultiHeadAttention` (the same numbers
//! PyTorch's `nn.MultiheadAttention` gives with these weights).

use backprop::prelude::*;

fn close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: {got:?} against {want:?}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() < 2e-6, "{what}[{i}]: {g} vs {w}");
    }
}

#[test]
fn one_causal_head_by_hand() {
    let eye = [1.0, 0.0, 0.0, 1.0];
    let in_proj: Vec<f32> = eye.iter().chain(&eye).chain(&eye).copied().collect(); // [W_q; W_k; W_v] = [I; I; I]
    let weights = vec![
        ("in_proj_weight".to_string(), Tensor::from_vec(&[6, 2], in_proj).unwrap()),
        ("in_proj_bias".to_string(), Tensor::zeros(&[6])),
        ("out_proj.weight".to_string(), Tensor::from_vec(&[2, 2], eye.to_vec()).unwrap()),
        ("out_proj.bias".to_string(), Tensor::zeros(&[2])),
    ];
    let mut attn = MultiHeadAttention::new(2, 1).causal();
    backprop::io::load_tensors(&mut attn, &weights, &LoadOptions::new()).unwrap();
    let x = Tensor::from_vec(&[1, 2, 2], vec![1., 0., 1., 1.]).unwrap();
    let y = attn.forward(&x, Pass::TRAIN);
    close("P", attn.attention_weights().unwrap().data(), &[1.0, 0.0, 0.330238, 0.669762]);
    close("O", y.data(), &[1.0, 0.0, 1.0, 0.669762]);
    let dx = attn
        .backward(&Tensor::from_vec(&[1, 2, 2], vec![0., 0., 1., -1.]).unwrap(), InputGrad::Needed)
        .unwrap();
    close("dX", dx.data(), &[0.486637, -0.173840, 0.513363, -0.982559]);
}

/// Every line of §13's worked numbers — `S`, `P`, `O`, `dV`, `dP`, `dS`, `dQ`, `dK`, `dX` —
/// recomputed in `f64` as the chapter writes them (the crate's layer gives `P`, `O` and `dX` above).
#[test]
#[allow(clippy::approx_constant)] // the chapter's printed digits (1/√2, √2), compared as printed
fn every_line_of_the_worked_head() {
    type M = [[f64; 2]; 2];
    let near = |what: &str, got: M, want: M| {
        for (g, w) in got.iter().flatten().zip(want.iter().flatten()) {
            assert!((g - w).abs() <= 6e-7, "{what}: {got:?} vs the chapter's {want:?}");
        }
    };
    let mul = |a: M, b: M| -> M {
        std::array::from_fn(|i| std::array::from_fn(|j| a[i][0] * b[0][j] + a[i][1] * b[1][j]))
    };
    let t = |a: M| -> M { [[a[0][0], a[1][0]], [a[0][1], a[1][1]]] };
    let scale = |a: M, s: f64| -> M { a.map(|r| r.map(|v| v * s)) };
    let r2 = 2f64.sqrt();
    let x: M = [[1.0, 0.0], [1.0, 1.0]];
    let (q, k, v) = (x, x, x);
    let s = scale(mul(q, t(k)), 1.0 / r2);
    near("S", s, [[0.707107, 0.707107], [0.707107, 1.414214]]);
    // Causal: row 0 sees key 0 only; row 1 both.
    let e = (s[1][0].exp(), s[1][1].exp());
    let p: M = [[1.0, 0.0], [e.0 / (e.0 + e.1), e.1 / (e.0 + e.1)]];
    near("P", p, [[1.0, 0.0], [0.330238, 0.669762]]);
    near("O", mul(p, v), [[1.0, 0.0], [1.0, 0.669762]]);
    let d_o: M = [[0.0, 0.0], [1.0, -1.0]];
    near("dV", mul(t(p), d_o), [[0.330238, -0.330238], [0.669762, -0.669762]]);
    let dp = mul(d_o, t(v));
    near("dP", dp, [[0.0, 0.0], [1.0, 0.0]]);
    let ds: M = std::array::from_fn(|i| {
        let row: f64 = (0..2).map(|j| p[i][j] * dp[i][j]).sum();
        std::array::from_fn(|j| p[i][j] * (dp[i][j] - row))
    });
    near("dS", ds, [[0.0, 0.0], [0.221181, -0.221181]]);
    let dq = scale(mul(ds, k), 1.0 / r2);
    let dk = scale(mul(t(ds), q), 1.0 / r2);
    near("dQ", dq, [[0.0, 0.0], [0.0, -0.156399]]);
    near("dK", dk, [[0.156399, 0.156399], [-0.156399, -0.156399]]);
    let dv = mul(t(p), d_o);
    let dx: M = std::array::from_fn(|i| std::array::from_fn(|j| dq[i][j] + dk[i][j] + dv[i][j]));
    near("dX", dx, [[0.486637, -0.173840], [0.513363, -0.982559]]);
}
