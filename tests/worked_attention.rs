//! The worked numbers of docs/backprop.md §13: one causal head, `d = 2`, two steps, projections
//! set to the identity (so `Q = K = V = X`), against `MultiHeadAttention` (the same numbers
//! PyTorch's `nn.MultiheadAttention` gives with these weights).

use backprop::prelude::*;

fn close(what: &str, got: &[f32], want: &[f32]) {
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
