//! The simple (Elman) recurrent layer: `h_t = act(x_t·W_ihᵀ + b_ih + h_{t−1}·W_hhᵀ + b_hh)`, with
//! `act` = tanh (default) or ReLU, as PyTorch's `nn.RNN(batch_first=True)`.
//!
//! One step, with `p = a + b` the pre-activation (`a`: the input's share, `b`: the state's):
//!
//! ```text
//! forward:   h = act(p)
//! backward:  dp = dh ⊙ act'(p)        tanh' = 1 − h²,  ReLU' = [p > 0]
//!            da = db = dp              (p = a + b: the sum passes the gradient to both)
//! ```
//!
//! All of `dh_{t−1}` goes through `W_hh` (`dh_{t−1} = db·W_hh`, in the shared walk). That product,
//! repeated over many steps, is why a plain RNN's gradient vanishes (or explodes): `dL/dh_{−1}`
//! (the initial state) holds `T` factors `diag(act'(p_t))·W_hh`, whose size shrinks or grows
//! geometrically.

use super::{Cell, Recurrent, recurrent_layer};
use crate::tensor::math::tanh_fast as tanh;

/// The RNN cell; `relu` selects ReLU instead of tanh.
pub struct RnnCell {
    relu: bool,
}

impl Cell for RnnCell {
    const GATES: usize = 1;
    const HAS_CELL: bool = false;
    const SAVED: usize = 1;
    const SHARED_GRADIENT: bool = true; // h = act(a + b)

    fn name(&self) -> String {
        if self.relu { "RNN(ReLU)".into() } else { "RNN".into() }
    }

    fn forward_step(
        &self,
        a: Option<&[f32]>,
        b: &[f32],
        _: &[f32],
        _: &[f32],
        h: &mut [f32],
        _: &mut [f32],
        saved: &mut [f32],
    ) {
        match a {
            Some(a) => saved.iter_mut().zip(a.iter().zip(b)).for_each(|(p, (&a, &b))| *p = a + b), // p = a + b
            None => saved.copy_from_slice(&b[..saved.len()]), // b holds p already
        }
        for (h, &p) in h.iter_mut().zip(saved.iter()) {
            *h = if self.relu { p.max(0.0) } else { tanh(p) }; // h = act(p)
        }
    }

    fn backward_step(
        &self,
        saved: &[f32],
        _h_prev: &[f32],
        _: &[f32],
        _: &[f32],
        dh: &[f32],
        _: &[f32],
        _da: &mut [f32],
        db: &mut [f32],
        dh_prev: &mut [f32],
        _: &mut [f32],
    ) {
        for (k, (&p, &dh)) in saved.iter().zip(dh).enumerate() {
            let act_prime = if self.relu { f32::from(u8::from(p > 0.0)) } else { 1.0 - tanh(p).powi(2) };
            db[k] = dh * act_prime; // db = dp = dh ⊙ act'(p) (and da = db: SHARED_GRADIENT)
        }
        dh_prev.fill(0.0); // nothing reaches h_{t−1} except through W_hh
    }
}

/// Elman RNN over `[N, T, F]` sequences. See the [module docs](self) and
/// [`recurrent`](super) for BPTT, lengths, state and truncation.
///
/// ```
/// use backprop::layers::{Layer, Pass, Rnn};
/// use backprop::Tensor;
/// let mut rnn = Rnn::new(3, 5);
/// let y = rnn.forward(&Tensor::ones(&[2, 4, 3]), Pass::TRAIN);
/// assert_eq!(y.shape(), &[2, 4, 5]);
/// ```
pub struct Rnn(Recurrent<RnnCell>);

impl Rnn {
    /// An RNN with tanh, from `inputs` features to `hidden` units (PyTorch's `nn.RNN(inputs,
    /// hidden, batch_first=True)`).
    ///
    /// # Panics
    /// If its weights would be more values than a tensor can hold (a message names the size).
    pub fn new(inputs: usize, hidden: usize) -> Rnn {
        Rnn(Recurrent::with_cell(RnnCell { relu: false }, inputs, hidden))
    }

    /// An RNN with ReLU (`nonlinearity="relu"`).
    ///
    /// # Panics
    /// As [`Rnn::new`].
    pub fn relu(inputs: usize, hidden: usize) -> Rnn {
        Rnn(Recurrent::with_cell(RnnCell { relu: true }, inputs, hidden))
    }

    /// True for ReLU, false for tanh.
    pub fn is_relu(&self) -> bool {
        self.0.cell.relu
    }
}

recurrent_layer!(Rnn, RnnCell);
