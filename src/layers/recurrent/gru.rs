//! Gated recurrent unit, as PyTorch's `nn.GRU(batch_first=True)`: gates in PyTorch's order reset
//! `r`, update `z`, new `n`.
//!
//! One step, with `a = [a_r, a_z, a_n]` the input's share and `b = [b_r, b_z, b_n]` the state's
//! (each including its bias):
//!
//! ```text
//! forward:   r = σ(a_r + b_r)   z = σ(a_z + b_z)
//!            n = tanh(a_n + r ⊙ b_n)                  the reset gate scales only the state's share
//!            h = (1 − z) ⊙ n + z ⊙ h_prev
//! backward:  dn = dh ⊙ (1 − z)    dz = dh ⊙ (h_prev − n)
//!            dh_prev = dh ⊙ z                          the direct path, not through W_hh
//!            dp_n = dn ⊙ (1 − n²):   da_n = dp_n,  db_n = dp_n ⊙ r,  dr = dp_n ⊙ b_n
//!            dp_r = dr ⊙ r(1 − r):   da_r = db_r = dp_r
//!            dp_z = dz ⊙ z(1 − z):   da_z = db_z = dp_z
//! ```
//!
//! Unlike the RNN and the LSTM, `a` and `b` get different gradients (`db_n = da_n ⊙ r`), because
//! `r` multiplies `b_n` only — which is why PyTorch keeps two bias vectors. The `r` and `z` gates'
//! two gradients are equal, though: when no input gradient is asked for, the backward step writes
//! `da_n` alone and `dW_ih`'s `r` and `z` rows read `db`'s columns ([`Cell::SHARED_GATES`]), a
//! third of the gate gradients' writes and copies saved (`docs/benchmarks.md`, twenty-seventh
//! session) — in the same copy of `db` as `dW_hh`, which reads every column of it (twenty-eighth).

use super::{Cell, Recurrent, recurrent_layer};
use crate::tensor::math::{MulAdd, sigmoid_with, tanh_with};

/// The GRU cell.
pub struct GruCell;

impl Cell for GruCell {
    const GATES: usize = 3;
    const HAS_CELL: bool = false;
    /// r, z, n and the state's share of the new gate, `b_n`.
    const SAVED: usize = 4;
    const SHARED_GRADIENT: bool = false; // the candidate reads a_n + r ⊙ b_n
    const SHARED_GATES: usize = 2; // da_r = db_r, da_z = db_z

    fn name(&self) -> String {
        "GRU".into()
    }

    fn forward_step(
        &self,
        a: Option<&[f32]>,
        b: &[f32],
        h_prev: &[f32],
        _: &[f32],
        h: &mut [f32],
        _: &mut [f32],
        saved: &mut [f32],
    ) {
        let a = a.expect("the GRU's candidate reads a_n and b_n apart: both shares are handed over");
        crate::tensor::simd::wide_fused!(forward(a, b, h_prev, h, saved))
    }

    fn backward_step(
        &self,
        saved: &[f32],
        h_prev: &[f32],
        _: &[f32],
        _: &[f32],
        dh: &[f32],
        _: &[f32],
        da: &mut [f32],
        db: &mut [f32],
        dh_prev: &mut [f32],
        _: &mut [f32],
    ) {
        // da: all three gates, or (when only the weight gradients read it) n's columns alone.
        if da.len() == dh.len() {
            crate::tensor::simd::wide!(backward::<false>(saved, h_prev, dh, da, db, dh_prev))
        } else {
            crate::tensor::simd::wide!(backward::<true>(saved, h_prev, dh, da, db, dh_prev))
        }
    }
}

/// One forward step over a sample's `H` units (the loop the module docs write out).
#[inline(always)]
fn forward<M: MulAdd>(a: &[f32], b: &[f32], h_prev: &[f32], h: &mut [f32], saved: &mut [f32]) {
    let hn = h.len();
    let (a, b, h_prev, saved) = (&a[..3 * hn], &b[..3 * hn], &h_prev[..hn], &mut saved[..4 * hn]);
    for k in 0..hn {
        let r = sigmoid_with::<M>(a[k] + b[k]); // r = σ(a_r + b_r)
        let z = sigmoid_with::<M>(a[hn + k] + b[hn + k]); // z = σ(a_z + b_z)
        let b_n = b[2 * hn + k];
        let n = tanh_with::<M>(M::mul_add(r, b_n, a[2 * hn + k])); // n = tanh(a_n + r ⊙ b_n)
        h[k] = M::mul_add(1.0 - z, n, z * h_prev[k]); // h = (1 − z) ⊙ n + z ⊙ h_prev
        (saved[k], saved[hn + k], saved[2 * hn + k], saved[3 * hn + k]) = (r, z, n, b_n);
    }
}

/// One backward step over a sample's `H` units: `da` all three gates' (`FULL_DA`), else `n`'s
/// alone (`da_r` and `da_z` are `db_r` and `db_z`, which the weight gradients then read).
#[inline(always)]
fn backward<const FULL_DA: bool>(
    saved: &[f32],
    h_prev: &[f32],
    dh: &[f32],
    da: &mut [f32],
    db: &mut [f32],
    dh_prev: &mut [f32],
) {
    let hn = dh.len();
    let (saved, h_prev, dh_prev) = (&saved[..4 * hn], &h_prev[..hn], &mut dh_prev[..hn]);
    let (da, db) = (&mut da[..if FULL_DA { 3 * hn } else { hn }], &mut db[..3 * hn]);
    let da_n = if FULL_DA { 2 * hn } else { 0 }; // where da_n's columns start
    for k in 0..hn {
        let [r, z, n, b_n] = [0, 1, 2, 3].map(|slot| saved[slot * hn + k]);
        let dn = dh[k] * (1.0 - z); // dn = dh ⊙ (1 − z)
        let dz = dh[k] * (h_prev[k] - n); // dz = dh ⊙ (h_prev − n)
        dh_prev[k] = dh[k] * z; // dh_prev = dh ⊙ z
        let dp_n = dn * (1.0 - n * n); // dp_n = dn ⊙ (1 − n²)
        let dr = dp_n * b_n; // dr = dp_n ⊙ b_n
        let dp_r = dr * r * (1.0 - r);
        let dp_z = dz * z * (1.0 - z);
        (db[k], db[hn + k]) = (dp_r, dp_z); // da_r = db_r = dp_r, da_z = db_z = dp_z
        if FULL_DA {
            (da[k], da[hn + k]) = (dp_r, dp_z);
        }
        (da[da_n + k], db[2 * hn + k]) = (dp_n, dp_n * r); // da_n = dp_n, db_n = dp_n ⊙ r
    }
}

/// GRU over `[N, T, F]` sequences. See the [module docs](self) and [`recurrent`](super) for BPTT,
/// lengths, state and truncation.
///
/// ```
/// use backprop::layers::{Gru, Layer, Pass};
/// use backprop::Tensor;
/// let mut gru = Gru::new(3, 5);
/// assert_eq!(gru.forward(&Tensor::ones(&[2, 4, 3]), Pass::TRAIN).shape(), &[2, 4, 5]);
/// ```
pub struct Gru(Recurrent<GruCell>);

impl Gru {
    /// A GRU from `inputs` features to `hidden` units (`nn.GRU(inputs, hidden, batch_first=True)`).
    ///
    /// # Panics
    /// If its weights would be more values than a tensor can hold (a message names the size).
    pub fn new(inputs: usize, hidden: usize) -> Gru {
        Gru(Recurrent::with_cell(GruCell, inputs, hidden))
    }
}

recurrent_layer!(Gru, GruCell);

#[cfg(test)]
mod tests {
    use super::*;

    /// The step loops compiled for AVX2 + FMA and for AVX-512F give the same bits (the forward
    /// fuses each multiply-add); the baseline's separate multiplies and adds agree to a few ulps.
    #[test]
    fn wide_vectors_agree() {
        use crate::tensor::math::{Fused, Separate};
        use crate::tensor::simd::Isa;
        let hn = 29;
        let v = |n: usize, s: f32| (0..n).map(|k| (k as f32 * 0.41 + s).sin() * 3.0).collect::<Vec<f32>>();
        let (a, b, h_prev, dh) = (v(3 * hn, 0.1), v(3 * hn, 0.2), v(hn, 0.3), v(hn, 0.4));
        let run = |isa: Isa| {
            let (mut h, mut saved) = (vec![0.0; hn], vec![0.0; 4 * hn]);
            let (mut da, mut db, mut dh_prev) = (vec![0.0; 3 * hn], vec![0.0; 3 * hn], vec![0.0; hn]);
            // #[inline(always)]: compiled inside run_with's ISA, not out of line for the baseline;
            // Fused where `wide_fused!` would use it (the library's `mul_add` where the CPU lacks
            // the ISA: the same bits).
            crate::tensor::simd::run_with(
                isa,
                #[inline(always)]
                || {
                    match isa {
                        Isa::Baseline => forward::<Separate>(&a, &b, &h_prev, &mut h, &mut saved),
                        _ => forward::<Fused>(&a, &b, &h_prev, &mut h, &mut saved),
                    }
                    backward::<true>(&saved, &h_prev, &dh, &mut da, &mut db, &mut dh_prev);
                },
            );
            [h, saved, da, db, dh_prev]
        };
        let avx2 = run(Isa::Avx2);
        assert_eq!(run(Isa::Avx512), avx2, "AVX-512F against AVX2 (or the widest the CPU has)");
        for (which, (wide, plain)) in avx2.iter().zip(&run(Isa::Baseline)).enumerate() {
            for (k, (w, p)) in wide.iter().zip(plain).enumerate() {
                assert!(
                    (w - p).abs() <= 4e-7 * (1.0 + p.abs()),
                    "output {which}[{k}]: wide {w}, baseline {p}"
                );
            }
        }
    }
}
