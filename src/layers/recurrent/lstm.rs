//! Long short-term memory, as PyTorch's `nn.LSTM(batch_first=True)`: gates in PyTorch's order
//! input `i`, forget `f`, cell `g`, output `o`; the cell gate's value is the candidate `c̃`
//! (docs/backprop.md's name: there `g` is always a gradient).
//!
//! One step, with `p = a + b` the gates' pre-activations (`[4H]`: `p_i, p_f, p_g, p_o`):
//!
//! ```text
//! forward:   i = σ(p_i)   f = σ(p_f)   c̃ = tanh(p_g)   o = σ(p_o)
//!            c = f ⊙ c_prev + i ⊙ c̃                   the cell state: an additive path
//!            h = o ⊙ tanh(c)
//! backward:  given dh (from y_t and step t+1) and dc (from step t+1):
//!            do = dh ⊙ tanh(c)
//!            dc ← dc + dh ⊙ o ⊙ (1 − tanh²(c))         both ways c reaches the loss
//!            di = dc ⊙ c̃    dc̃ = dc ⊙ i    df = dc ⊙ c_prev
//!            dc_prev = dc ⊙ f                          the cell path: one multiplication per step
//!            dp_i = di ⊙ i(1 − i)   dp_f = df ⊙ f(1 − f)   dp_g = dc̃ ⊙ (1 − c̃²)   dp_o = do ⊙ o(1 − o)
//!            da = db = dp
//! ```
//!
//! (The code evaluates `σ` and `tanh` as [`sigmoid_fast`](crate::tensor::math::sigmoid_fast) and
//! [`tanh_fast`](crate::tensor::math::tanh_fast) do, which the compiler vectorises: within a few
//! ulps of the library functions, and twice as fast a forward pass. On CPUs with FMA their
//! polynomials' multiply-adds are fused, one instruction each: see `simd::wide_fused!`.)
//!
//! **Why the cell path helps.** Back through the cell state, one step multiplies the gradient by
//! the forget gate `f` alone — no weight matrix, no squashing derivative. When the network learns
//! to keep `f ≈ 1`, `dc` crosses many steps nearly unchanged, where a plain RNN's gradient is
//! multiplied by `diag(tanh')·W_hh` at every step and vanishes.

use super::{Cell, Recurrent, recurrent_layer};
use crate::tensor::math::{MulAdd, sigmoid_with, tanh_with};

/// The LSTM cell.
pub struct LstmCell;

impl Cell for LstmCell {
    const GATES: usize = 4;
    const HAS_CELL: bool = true;
    const SAVED: usize = 4;
    const SHARED_GRADIENT: bool = true; // every gate reads p = a + b

    fn name(&self) -> String {
        "LSTM".into()
    }

    fn forward_step(
        &self,
        a: Option<&[f32]>,
        b: &[f32],
        _: &[f32],
        c_prev: &[f32],
        h: &mut [f32],
        c: &mut [f32],
        saved: &mut [f32],
    ) {
        crate::tensor::simd::wide_fused!(forward(a, b, c_prev, h, c, saved))
    }

    fn backward_step(
        &self,
        saved: &[f32],
        _h_prev: &[f32],
        c_prev: &[f32],
        c: &[f32],
        dh: &[f32],
        dc: &[f32],
        _da: &mut [f32],
        db: &mut [f32],
        dh_prev: &mut [f32],
        dc_prev: &mut [f32],
    ) {
        crate::tensor::simd::wide_fused!(backward(saved, c_prev, c, dh, dc, db, dh_prev, dc_prev))
    }
}

/// One forward step over a sample's `H` units (the loop the module docs write out); `a` is
/// `None` when `b` holds `p = a + b` already.
#[inline(always)]
fn forward<M: MulAdd>(
    a: Option<&[f32]>,
    b: &[f32],
    c_prev: &[f32],
    h: &mut [f32],
    c: &mut [f32],
    saved: &mut [f32],
) {
    let hn = h.len();
    let (a, b, c_prev) = (a.map(|a| &a[..4 * hn]), &b[..4 * hn], &c_prev[..hn]); // lengths known: no bounds checks
    let (saved, c) = (&mut saved[..4 * hn], &mut c[..hn]);
    // The gates first, one function per pass over a block of H values (its few constants stay in
    // registers; all four gates in one loop had run out of them), into `saved`; then the cell.
    for gate in 0..4 {
        let (a, b, out) =
            (a.map(|a| &a[gate * hn..][..hn]), &b[gate * hn..][..hn], &mut saved[gate * hn..][..hn]);
        if gate == 2 {
            gate_pass(out, a, b, tanh_with::<M>); // c̃ = tanh(p_g), p = a + b
        } else {
            gate_pass(out, a, b, sigmoid_with::<M>); // i, f, o = σ(p)
        }
    }
    let (i, f, c_tilde, o) = (&saved[..hn], &saved[hn..2 * hn], &saved[2 * hn..3 * hn], &saved[3 * hn..]);
    for k in 0..hn {
        c[k] = M::mul_add(f[k], c_prev[k], i[k] * c_tilde[k]); // c = f ⊙ c_prev + i ⊙ c̃
        h[k] = o[k] * tanh_with::<M>(c[k]); // h = o ⊙ tanh(c)
    }
}

/// `out = act(a + b)`, or `act(b)` when `b` holds the sum already.
#[inline(always)]
fn gate_pass(out: &mut [f32], a: Option<&[f32]>, b: &[f32], act: impl Fn(f32) -> f32) {
    match a {
        Some(a) => out.iter_mut().zip(a.iter().zip(b)).for_each(|(o, (&a, &b))| *o = act(a + b)),
        None => out.iter_mut().zip(b).for_each(|(o, &p)| *o = act(p)),
    }
}

/// One backward step over a sample's `H` units.
#[allow(clippy::too_many_arguments)] // the step's saved values, states and gradients
#[inline(always)]
fn backward<M: MulAdd>(
    saved: &[f32],
    c_prev: &[f32],
    c: &[f32],
    dh: &[f32],
    dc: &[f32],
    db: &mut [f32],
    dh_prev: &mut [f32],
    dc_prev: &mut [f32],
) {
    let hn = dh.len();
    let (saved, c_prev, c, dc) = (&saved[..4 * hn], &c_prev[..hn], &c[..hn], &dc[..hn]);
    let (db, dc_prev) = (&mut db[..4 * hn], &mut dc_prev[..hn]);
    for k in 0..hn {
        let [i, f, c_tilde, o] = [0, 1, 2, 3].map(|gate| saved[gate * hn + k]);
        let tc = tanh_with::<M>(c[k]);
        let d_o = dh[k] * tc; // do = dh ⊙ tanh(c)
        let dc_k = dc[k] + dh[k] * o * (1.0 - tc * tc); // dc ← dc + dh ⊙ o ⊙ (1 − tanh²(c))
        let (di, dc_tilde, df) = (dc_k * c_tilde, dc_k * i, dc_k * c_prev[k]); // di = dc ⊙ c̃, dc̃ = dc ⊙ i, df = dc ⊙ c_prev
        dc_prev[k] = dc_k * f; // dc_prev = dc ⊙ f
        let dp = [
            di * i * (1.0 - i),
            df * f * (1.0 - f),
            dc_tilde * (1.0 - c_tilde * c_tilde),
            d_o * o * (1.0 - o),
        ];
        for (gate, v) in dp.into_iter().enumerate() {
            db[gate * hn + k] = v; // db = dp (and da = db: SHARED_GRADIENT)
        }
    }
    dh_prev.fill(0.0); // h_{t−1} reaches the step only through W_hh
}

/// LSTM over `[N, T, F]` sequences. See the [module docs](self) and [`recurrent`](super) for
/// BPTT, lengths, state and truncation.
///
/// ```
/// use backprop::layers::{Layer, Lstm, Pass};
/// use backprop::Tensor;
/// let mut lstm = Lstm::new(3, 5).last_step_only();
/// let y = lstm.forward(&Tensor::ones(&[2, 4, 3]), Pass::TRAIN);
/// assert_eq!(y.shape(), &[2, 5]);
/// ```
pub struct Lstm(Recurrent<LstmCell>);

impl Lstm {
    /// An LSTM from `inputs` features to `hidden` units (`nn.LSTM(inputs, hidden,
    /// batch_first=True)`).
    ///
    /// # Panics
    /// If its weights would be more values than a tensor can hold (a message names the size).
    pub fn new(inputs: usize, hidden: usize) -> Lstm {
        Lstm(Recurrent::with_cell(LstmCell, inputs, hidden))
    }
}

recurrent_layer!(Lstm, LstmCell);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::simd::Isa;

    /// The step loops compiled for AVX2 + FMA and for AVX-512F give the same bits (both fuse each
    /// multiply-add); the baseline's separate multiplies and adds agree with them to a few ulps.
    #[test]
    fn wide_vectors_agree() {
        use crate::tensor::math::{Fused, Separate};
        let hn = 37; // not a multiple of 8: the loops' tails run too
        let v = |n: usize, s: f32| (0..n).map(|k| (k as f32 * 0.37 + s).sin() * 3.0).collect::<Vec<f32>>();
        let (a, b, c_prev) = (v(4 * hn, 0.1), v(4 * hn, 0.2), v(hn, 0.3));
        let p: Vec<f32> = a.iter().zip(&b).map(|(a, b)| a + b).collect();
        let (dh, dc) = (v(hn, 0.4), v(hn, 0.5));
        // One forward and one backward step: h, c, the saved gates, db, dc_prev.
        fn step<M: MulAdd>(
            a: Option<&[f32]>,
            b: &[f32],
            c_prev: &[f32],
            dh: &[f32],
            dc: &[f32],
        ) -> [Vec<f32>; 5] {
            let hn = c_prev.len();
            let (mut h, mut c, mut saved) = (vec![0.0; hn], vec![0.0; hn], vec![0.0; 4 * hn]);
            let (mut db, mut dh_prev, mut dc_prev) = (vec![0.0; 4 * hn], vec![1.0; hn], vec![0.0; hn]);
            forward::<M>(a, b, c_prev, &mut h, &mut c, &mut saved);
            backward::<M>(&saved, c_prev, &c, dh, dc, &mut db, &mut dh_prev, &mut dc_prev);
            [h, c, saved, db, dc_prev]
        }
        let run = |isa: Isa, summed: bool| {
            let (a, b) = if summed { (None, &p) } else { (Some(&a[..]), &b) };
            let mut out = Default::default();
            // #[inline(always)]: compiled inside run_with's ISA, not out of line for the baseline.
            // Fused on the wide ISAs (where the CPU lacks one, `f32::mul_add`'s library call gives
            // the same bits), Separate for the baseline: as `wide_fused!` dispatches.
            crate::tensor::simd::run_with(
                isa,
                #[inline(always)]
                || {
                    out = match isa {
                        Isa::Baseline => step::<Separate>(a, b, &c_prev, &dh, &dc),
                        _ => step::<Fused>(a, b, &c_prev, &dh, &dc),
                    }
                },
            );
            out
        };
        let avx2 = run(Isa::Avx2, false);
        assert_eq!(run(Isa::Avx512, false), avx2, "AVX-512F against AVX2 (or the widest the CPU has)");
        // Handed the sum p = a + b instead of its two parts: the same bits.
        for isa in [Isa::Baseline, Isa::Avx2, Isa::Avx512] {
            assert_eq!(run(isa, true), run(isa, false), "p handed over summed, {isa:?}");
        }
        let baseline = run(Isa::Baseline, false);
        for (which, (wide, plain)) in avx2.iter().zip(&baseline).enumerate() {
            for (k, (w, p)) in wide.iter().zip(plain).enumerate() {
                assert!(
                    (w - p).abs() <= 4e-7 * (1.0 + p.abs()),
                    "output {which}[{k}]: wide {w}, baseline {p}"
                );
            }
        }
    }
}
