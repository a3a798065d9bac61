//! The numbered LSTM steps of docs/backprop.md §12 (one unit, two steps, a loss on the last state),
//! computed by the crate's `Lstm` and asserted here, so the text cannot drift from the code.

use backprop::layers::named_params;
use backprop::prelude::*;

fn close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (a, b) in got.iter().zip(want) {
        assert!((a - b).abs() < 2e-6, "{what}: {got:?} vs {want:?}");
    }
}

#[test]
fn two_lstm_steps_forward_and_backward() {
    let mut lstm = Lstm::new(1, 1);
    lstm.visit_mut(&mut |name, s| {
        if let StateMut::Param(p) = s {
            let v: &[f32] = match name {
                "weight_ih_l0" => &[0.5, 1.0, 0.8, -0.3], // rows i, f, g (the candidate c̃), o
                "weight_hh_l0" => &[0.2, -0.4, 0.6, 0.1],
                "bias_ih_l0" => &[0.0, 1.0, 0.0, 0.0], // the forget gate's bias 1
                _ => &[0.0; 4],
            };
            p.value.data_mut().copy_from_slice(v);
        }
    });
    let x = Tensor::from_vec(&[1, 2, 1], vec![1.0, 0.5]).unwrap();
    let h = lstm.forward(&x, Pass::TRAIN);
    close(h.data(), &[0.166521, 0.249740], "h_0, h_1");
    // L = h_1: dL/dy_0 = 0, dL/dy_1 = 1.
    let dx =
        lstm.backward(&Tensor::from_vec(&[1, 2, 1], vec![0.0, 1.0]).unwrap(), InputGrad::Needed).unwrap();
    close(dx.data(), &[0.106022, 0.119839], "dL/dx_0, dL/dx_1");
    let grads: Vec<(String, Vec<f32>)> =
        named_params(&lstm).into_iter().map(|(n, p)| (n, p.grad.data().to_vec())).collect();
    let grad = |name: &str| grads.iter().find(|(n, _)| n == name).unwrap().1.clone();
    close(&grad("weight_ih_l0"), &[0.066557, 0.010703, 0.181079, 0.076344], "dW_ih");
    close(&grad("weight_hh_l0"), &[0.006280, 0.003565, 0.024881, 0.022178], "dW_hh");
    close(&grad("bias_ih_l0"), &[0.085413, 0.021406, 0.255787, 0.142935], "db_ih");
    close(&grad("bias_hh_l0"), &[0.085413, 0.021406, 0.255787, 0.142935], "db_hh = db_ih");
}

/// Every intermediate number of §12's two steps (the gates, the cells, each line of the backward
/// step), recomputed in `f64` line by line as the chapter writes them, and its last lines checked
/// against the crate's `Lstm` above: so the chapter's middle lines are pinned too, not only its
/// ends.
#[test]
fn every_line_of_the_two_steps() {
    let near = |what: &str, got: &[f64], want: &[f64]| {
        assert_eq!(got.len(), want.len(), "{what}");
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() <= 6e-7, "{what}: {got:?} vs the chapter's {want:?}");
        }
    };
    let sigmoid = |v: f64| 1.0 / (1.0 + (-v).exp());
    let (w_ih, w_hh, b_ih) = ([0.5, 1.0, 0.8, -0.3], [0.2, -0.4, 0.6, 0.1], [0.0, 1.0, 0.0, 0.0]);
    let xs = [1.0, 0.5];
    // Forward: p = W_ih·x + b_ih + W_hh·h_prev; i, f, o = σ; c̃ = tanh; c = f·c_prev + i·c̃; h = o·tanh(c).
    let step = |x: f64, h: f64, c: f64| {
        let p: [f64; 4] = std::array::from_fn(|k| w_ih[k] * x + b_ih[k] + w_hh[k] * h);
        let (i, f, g, o) = (sigmoid(p[0]), sigmoid(p[1]), p[2].tanh(), sigmoid(p[3]));
        let c_new = f * c + i * g;
        (p, [i, f, g, o], c_new, o * c_new.tanh())
    };
    let (p0, gates0, c0, h0) = step(xs[0], 0.0, 0.0);
    near("step 0: p", &p0, &[0.5, 2.0, 0.8, -0.3]);
    near("step 0: i f c̃ o", &gates0, &[0.622459, 0.880797, 0.664037, 0.425557]);
    near("c_0, h_0", &[c0, h0], &[0.413336, 0.166521]);
    let (p1, gates1, c1, h1) = step(xs[1], h0, c0);
    near("step 1: p", &p1, &[0.283304, 1.433391, 0.499913, -0.133348]);
    near("step 1: i f c̃ o", &gates1, &[0.570356, 0.807429, 0.462049, 0.466712]);
    near("c_1, h_1", &[c1, h1], &[0.597272, 0.249740]);
    // Backward, one line per line of the chapter's block.
    let back = |[i, f, g, o]: [f64; 4], c: f64, c_prev: f64, dh: f64, dc: f64| {
        let d_o = dh * c.tanh();
        let dc = dc + dh * o * (1.0 - c.tanh().powi(2));
        let (di, dg, df, dc_prev) = (dc * g, dc * i, dc * c_prev, dc * f);
        let dp = [di * i * (1.0 - i), df * f * (1.0 - f), dg * (1.0 - g * g), d_o * o * (1.0 - o)];
        (d_o, dc, [di, dg, df, dc_prev], dp)
    };
    let (do1, dc1, [di1, dg1, df1, dc0], dp1) = back(gates1, c1, c0, 1.0, 0.0);
    near("step 1: do, dc", &[do1, dc1], &[0.535105, 0.333075]);
    near("step 1: di dc̃ df dc_0", &[di1, dg1, df1, dc0], &[0.153897, 0.189971, 0.137672, 0.268934]);
    near("step 1: dp", &dp1, &[0.037712, 0.021406, 0.149415, 0.133183]);
    let dh0: f64 = dp1.iter().zip(&w_hh).map(|(d, w)| d * w).sum();
    near("dh_0", &[dh0], &[0.101947]);
    let (do0, dc0_total, [di0, dg0, df0, _], dp0) = back(gates0, c0, 0.0, dh0, dc0);
    near(
        "step 0: do dc di dc̃ df",
        &[do0, dc0_total, di0, dg0, df0],
        &[0.039892, 0.305676, 0.202980, 0.190271, 0.0],
    );
    near("step 0: dp", &dp0, &[0.047701, 0.0, 0.106372, 0.009752]);
    // The ends, as the crate's Lstm gives them (the test above).
    let dot = |a: &[f64; 4], b: &[f64; 4]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    near("dx", &[dot(&dp0, &w_ih), dot(&dp1, &w_ih)], &[0.106022, 0.119839]);
    let dw_ih: Vec<f64> = (0..4).map(|k| dp0[k] * xs[0] + dp1[k] * xs[1]).collect();
    near("dW_ih", &dw_ih, &[0.066557, 0.010703, 0.181079, 0.076344]);
    let dw_hh: Vec<f64> = (0..4).map(|k| dp0[k] * 0.0 + dp1[k] * h0).collect();
    near("dW_hh", &dw_hh, &[0.006280, 0.003565, 0.024881, 0.022178]);
}
