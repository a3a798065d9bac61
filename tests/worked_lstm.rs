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
