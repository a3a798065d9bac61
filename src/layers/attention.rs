//! Multi-head self-attention over sequences `[N, T, E]`, as PyTorch's
//! `nn.MultiheadAttention(E, H, batch_first=True)` called with the same tensor as query, key and
//! value: its parameters and names (`in_proj_weight [3E, E]` — the query, key and value
//! projections stacked, each head a contiguous block of `d = E/H` rows in each — `in_proj_bias`,
//! `out_proj.weight`, `out_proj.bias`).
//!
//! For one sample and one head `h` (rows are the `T` positions):
//!
//! ```text
//! forward:   [Q | K | V] = X·W_inᵀ + b_in                 Q_h, K_h, V_h: that head's d columns of each
//!            S = Q_h·K_hᵀ / √d                             [T, T]: how much query i matches key j
//!            P = softmax(S) over the allowed keys j         each row sums to 1; masked entries are 0
//!            O_h = P·V_h                                   the heads side by side make O [T, E]
//!            Y = O·W_outᵀ + b_out
//! backward:  dO = dY·W_out        dW_out += dYᵀ·O           db_out += Σ dY
//!            dV_h = Pᵀ·dO_h       dP = dO_h·V_hᵀ
//!            dS = P ⊙ (dP − rowsum(P ⊙ dP))                the softmax's backward, row by row
//!            dQ_h = dS·K_h / √d   dK_h = dSᵀ·Q_h / √d
//!            dW_in += d[Q|K|V]ᵀ·X    db_in += Σ d[Q|K|V]    dX = d[Q|K|V]·W_in
//! ```
//!
//! **Masks, one convention.** Query `i` of a sequence may attend key `j` when `j` is one of the
//! sequence's valid steps (`j < length`, from the batch's lengths: PyTorch's `key_padding_mask`,
//! where `True` means *masked*) and, for a causal layer ([`MultiHeadAttention::causal`]), when
//! `j ≤ i` (PyTorch's `attn_mask` of `True` above the diagonal). Every query keeps at least key
//! 0, so no row is fully masked. Outputs at padded positions (`i ≥ length`) are zero and pass no
//! gradient, as a recurrent layer's padded steps; PyTorch computes them anyway, and its values
//! there are not used.

use super::{InputGrad, Layer, Param, Pass, State, StateMut, Visit, check_grad, checked_output, shape_error};
use crate::error::Result;
use crate::privacy::per_example::{PerExample, PerExampleGrads};
use crate::tensor::Tensor;
use crate::tensor::gemm::{Transpose::No, Transpose::Yes, sgemm, sgemm_strided};
use crate::tensor::init::Init;
use rayon::prelude::*;

/// Multi-head self-attention. See the [module docs](self).
///
/// ```
/// use backprop::layers::{InputGrad, Layer, MultiHeadAttention, Pass};
/// use backprop::Tensor;
/// let mut attn = MultiHeadAttention::new(8, 2).causal();
/// let x = Tensor::randn(&[3, 5, 8], 0.0, 1.0, 1);
/// let y = attn.forward(&x, Pass::TRAIN.with_lengths(&[5, 2, 4]));
/// assert_eq!(y.shape(), &[3, 5, 8]);
/// assert!(y.outer(1)[2 * 8..].iter().all(|&v| v == 0.0)); // sample 1's padded steps
/// let dx = attn.backward(&Tensor::ones(&[3, 5, 8]), InputGrad::Needed).unwrap();
/// assert_eq!(dx.shape(), &[3, 5, 8]);
/// ```
pub struct MultiHeadAttention {
    embed: usize,
    heads: usize,
    causal: bool,
    in_proj_weight: Param,
    in_proj_bias: Param,
    out_proj_weight: Param,
    out_proj_bias: Param,
    // The latest forward pass, for the backward.
    x: Tensor,
    lengths: Vec<usize>,
    /// `[Q | K | V]`: `[N·T, 3E]`.
    qkv: Vec<f32>,
    /// The attention weights of every sample and head: `[N, H, T, T]`.
    p: Vec<f32>,
    /// The heads' outputs side by side: `[N·T, E]`.
    o: Vec<f32>,
}

impl MultiHeadAttention {
    /// Self-attention over `embed` features with `heads` heads (`embed` a multiple of `heads`),
    /// initialised as PyTorch does: `in_proj_weight` Glorot-uniform, `out_proj.weight`
    /// `U(±1/√E)`, both biases zero (seed 0; a model redraws them from its own seed).
    ///
    /// # Panics
    /// If `heads` is 0 or does not divide `embed`.
    pub fn new(embed: usize, heads: usize) -> MultiHeadAttention {
        assert!(
            heads > 0 && embed.is_multiple_of(heads),
            "MultiHeadAttention: {heads} heads must divide the {embed} features evenly"
        );
        MultiHeadAttention {
            embed,
            heads,
            causal: false,
            in_proj_weight: Param::drawn(&[3 * embed, embed], Init::GlorotUniform, 0),
            in_proj_bias: Param::drawn(&[3 * embed], Init::Constant(0.0), 1),
            out_proj_weight: Param::drawn(&[embed, embed], Init::TorchDefault, 2),
            out_proj_bias: Param::drawn(&[embed], Init::Constant(0.0), 3),
            x: Tensor::default(),
            lengths: Vec::new(),
            qkv: Vec::new(),
            p: Vec::new(),
            o: Vec::new(),
        }
    }

    /// Each query attends only to keys at or before its own step.
    pub fn causal(mut self) -> MultiHeadAttention {
        self.causal = true;
        self
    }

    /// Draws the parameters with `seed` (a model-wide seed then keeps them).
    pub fn seed(mut self, seed: u64) -> MultiHeadAttention {
        let mut r = crate::tensor::rng(seed);
        let e = self.embed;
        self.in_proj_weight.value = Init::GlorotUniform.tensor(&[3 * e, e], &mut r);
        self.out_proj_weight.value = Init::TorchDefault.tensor(&[e, e], &mut r);
        for p in [
            &mut self.in_proj_weight,
            &mut self.in_proj_bias,
            &mut self.out_proj_weight,
            &mut self.out_proj_bias,
        ] {
            p.init = None;
        }
        self
    }

    /// Features `E`.
    pub fn embed(&self) -> usize {
        self.embed
    }

    /// Heads `H`.
    pub fn heads(&self) -> usize {
        self.heads
    }

    /// Whether the layer is causal.
    pub fn is_causal(&self) -> bool {
        self.causal
    }

    /// The attention weights of the latest forward pass, `[N, H, T, T]` (query rows, key
    /// columns; zero where masked); `None` before the first.
    pub fn attention_weights(&self) -> Option<Tensor> {
        let &[n, t, _] = self.x.shape() else { return None };
        Tensor::from_vec(&[n, self.heads, t, t], self.p.clone()).ok()
    }

    /// The valid length of sample `s` (all `T` steps without lengths).
    fn length(&self, s: usize, t: usize) -> usize {
        self.lengths.get(s).copied().unwrap_or(t)
    }
}

impl Layer for MultiHeadAttention {
    fn describe(&self) -> String {
        let causal = if self.causal { ", causal" } else { "" };
        format!("MultiHeadAttention({}, heads={}{causal})", self.embed, self.heads)
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        match input {
            [_, t, e] if *e == self.embed && *t > 0 => checked_output(&self.describe(), input.to_vec()),
            _ => Err(shape_error(&self.describe(), format!("[N, T ≥ 1, {}]", self.embed), input)),
        }
    }

    fn forward(&mut self, x: &Tensor, pass: Pass<'_>) -> Tensor {
        self.output_shape(x.shape()).unwrap_or_else(|e| panic!("{e}"));
        let (n, t, e) = (x.dim(0), x.dim(1), self.embed);
        if let Some(l) = pass.lengths {
            let bad = l.len() != n || l.iter().any(|&v| v == 0 || v > t);
            assert!(
                !bad,
                "{}: lengths {l:?} do not fit a batch of {n} sequences of {t} steps",
                self.describe()
            );
        }
        self.lengths.clear();
        self.lengths.extend_from_slice(pass.lengths.unwrap_or(&[]));
        self.x = x.clone();
        // [Q | K | V] = X·W_inᵀ + b_in, all positions at once.
        self.qkv.resize(n * t * 3 * e, 0.0);
        sgemm(n * t, e, 3 * e, 1.0, x.data(), No, self.in_proj_weight.value.data(), Yes, 0.0, &mut self.qkv);
        for row in self.qkv.chunks_exact_mut(3 * e) {
            row.iter_mut().zip(self.in_proj_bias.value.data()).for_each(|(v, b)| *v += b);
        }
        // Each sample's heads: P = softmax(Q_h·K_hᵀ/√d) over the allowed keys, O_h = P·V_h.
        let (heads, d) = (self.heads, e / self.heads);
        self.p.resize(n * heads * t * t, 0.0);
        self.o.resize(n * t * e, 0.0);
        let (qkv, lengths, causal) = (&self.qkv, &self.lengths, self.causal);
        let scale = 1.0 / (d as f32).sqrt();
        let samples = self.p.par_chunks_mut(heads * t * t).zip(self.o.par_chunks_mut(t * e)).enumerate();
        samples.for_each(|(s, (p_s, o_s))| {
            let len = lengths.get(s).copied().unwrap_or(t);
            let qkv_s = &qkv[s * t * 3 * e..][..t * 3 * e];
            for (h, p) in p_s.chunks_exact_mut(t * t).enumerate() {
                let (q, k, v) = (&qkv_s[h * d..], &qkv_s[e + h * d..], &qkv_s[2 * e + h * d..]);
                // S = Q_h·K_hᵀ/√d (rows 3E apart in qkv).
                sgemm_strided((t, d, t), scale, (q, 3 * e, No), (k, 3 * e, Yes), 0.0, (p, t));
                for (i, row) in p.chunks_exact_mut(t).enumerate() {
                    let allowed = if causal { len.min(i + 1) } else { len }; // keys 0 .. allowed
                    softmax_prefix(row, allowed);
                }
                // O_h = P·V_h, into the head's d columns of O.
                sgemm_strided((t, t, d), 1.0, (p, t, No), (v, 3 * e, No), 0.0, (&mut o_s[h * d..], e));
            }
        });
        // Y = O·W_outᵀ + b_out, zero at padded steps.
        let mut y = Tensor::zeros(x.shape());
        sgemm(n * t, e, e, 1.0, &self.o, No, self.out_proj_weight.value.data(), Yes, 0.0, y.data_mut());
        for (r, row) in y.data_mut().chunks_exact_mut(e).enumerate() {
            if r % t < self.length(r / t, t) {
                row.iter_mut().zip(self.out_proj_bias.value.data()).for_each(|(v, b)| *v += b);
            } else {
                row.fill(0.0); // a padded step outputs zero
            }
        }
        y
    }

    fn backward(&mut self, g: &Tensor, input_grad: InputGrad) -> Option<Tensor> {
        let (dy, dqkv) = self.backward_core(g);
        let (n, t, e) = (self.x.dim(0), self.x.dim(1), self.embed);
        // dW_out += dYᵀ·O,  db_out += Σ dY;  dW_in += d[Q|K|V]ᵀ·X,  db_in += Σ d[Q|K|V].
        sgemm(e, n * t, e, 1.0, dy.data(), Yes, &self.o, No, 1.0, self.out_proj_weight.grad.data_mut());
        sgemm(3 * e, n * t, e, 1.0, &dqkv, Yes, self.x.data(), No, 1.0, self.in_proj_weight.grad.data_mut());
        add_rows(self.out_proj_bias.grad.data_mut(), dy.data());
        add_rows(self.in_proj_bias.grad.data_mut(), &dqkv);
        input_grad.is_needed().then(|| self.input_gradient(&dqkv))
    }

    fn per_example(&mut self) -> Option<&mut dyn PerExample> {
        Some(self)
    }
}

impl MultiHeadAttention {
    /// The walk back to `d[Q|K|V]` (`[N·T, 3E]`), from `dY` with its padded rows zeroed (returned
    /// too).
    fn backward_core(&self, g: &Tensor) -> (Tensor, Vec<f32>) {
        check_grad(&self.describe(), self.x.shape(), g);
        let (n, t, e) = (self.x.dim(0), self.x.dim(1), self.embed);
        let (heads, d) = (self.heads, e / self.heads);
        let mut dy = g.clone();
        for (r, row) in dy.data_mut().chunks_exact_mut(e).enumerate() {
            if r % t >= self.length(r / t, t) {
                row.fill(0.0); // padded steps output a constant zero: no gradient
            }
        }
        // dO = dY·W_out.
        let mut d_o = vec![0.0; n * t * e];
        sgemm(n * t, e, e, 1.0, dy.data(), No, self.out_proj_weight.value.data(), No, 0.0, &mut d_o);
        let mut dqkv = vec![0.0; n * t * 3 * e];
        let scale = 1.0 / (d as f32).sqrt();
        let (qkv, p_all) = (&self.qkv, &self.p);
        dqkv.par_chunks_mut(t * 3 * e).zip(d_o.par_chunks(t * e)).enumerate().for_each(
            |(s, (dqkv_s, do_s))| {
                let qkv_s = &qkv[s * t * 3 * e..][..t * 3 * e];
                let mut ds = vec![0.0; t * t];
                for h in 0..heads {
                    let p = &p_all[(s * heads + h) * t * t..][..t * t];
                    let (q, k, v) = (&qkv_s[h * d..], &qkv_s[e + h * d..], &qkv_s[2 * e + h * d..]);
                    let d_oh = &do_s[h * d..];
                    // dV_h = Pᵀ·dO_h.
                    sgemm_strided(
                        (t, t, d),
                        1.0,
                        (p, t, Yes),
                        (d_oh, e, No),
                        0.0,
                        (&mut dqkv_s[2 * e + h * d..], 3 * e),
                    );
                    // dP = dO_h·V_hᵀ, then dS = P ⊙ (dP − rowsum(P ⊙ dP)) in place.
                    sgemm_strided((t, d, t), 1.0, (d_oh, e, No), (v, 3 * e, Yes), 0.0, (&mut ds, t));
                    for (ds_row, p_row) in ds.chunks_exact_mut(t).zip(p.chunks_exact(t)) {
                        let dot: f32 = ds_row.iter().zip(p_row).map(|(a, b)| a * b).sum();
                        ds_row.iter_mut().zip(p_row).for_each(|(v, &p)| *v = p * (*v - dot));
                    }
                    // dQ_h = dS·K_h/√d,  dK_h = dSᵀ·Q_h/√d.
                    sgemm_strided(
                        (t, t, d),
                        scale,
                        (&ds, t, No),
                        (k, 3 * e, No),
                        0.0,
                        (&mut dqkv_s[h * d..], 3 * e),
                    );
                    sgemm_strided(
                        (t, t, d),
                        scale,
                        (&ds, t, Yes),
                        (q, 3 * e, No),
                        0.0,
                        (&mut dqkv_s[e + h * d..], 3 * e),
                    );
                }
            },
        );
        (dy, dqkv)
    }

    /// `dX = d[Q|K|V]·W_in`.
    fn input_gradient(&self, dqkv: &[f32]) -> Tensor {
        let (n, t, e) = (self.x.dim(0), self.x.dim(1), self.embed);
        let mut dx = Tensor::zeros(self.x.shape());
        sgemm(n * t, 3 * e, e, 1.0, dqkv, No, self.in_proj_weight.value.data(), No, 0.0, dx.data_mut());
        dx
    }
}

/// `row[j] ← softmax(row[..allowed])[j]` for `j < allowed`, 0 after: the masked keys get no
/// weight. `allowed ≥ 1`.
fn softmax_prefix(row: &mut [f32], allowed: usize) {
    let (kept, masked) = row.split_at_mut(allowed);
    let max = kept.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let mut sum = 0.0;
    for v in kept.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    kept.iter_mut().for_each(|v| *v /= sum);
    masked.fill(0.0);
}

/// `acc += Σ rows` (each `acc.len()` wide).
fn add_rows(acc: &mut [f32], rows: &[f32]) {
    for row in rows.chunks_exact(acc.len()) {
        acc.iter_mut().zip(row).for_each(|(a, v)| *a += v);
    }
}

impl PerExample for MultiHeadAttention {
    /// Example `s`'s `dW_in = d[Q|K|V]_sᵀ·X_s`, `dW_out = dY_sᵀ·O_s` and the biases' sums over its
    /// own rows.
    fn backward_per_example(
        &mut self,
        g: &Tensor,
        input_grad: InputGrad,
        grads: &mut PerExampleGrads,
    ) -> Option<Tensor> {
        let (dy, dqkv) = self.backward_core(g);
        let (n, t, e) = (self.x.dim(0), self.x.dim(1), self.embed);
        grads.expect_batch(&self.describe(), n);
        let [w_in, b_in, w_out, b_out] = grads.next_slots_to_overwrite([3 * e * e, 3 * e, e * e, e]);
        let x = self.x.data();
        let slots = w_in.data_mut().par_chunks_mut(3 * e * e).zip(b_in.data_mut().par_chunks_mut(3 * e));
        let slots = slots.zip(w_out.data_mut().par_chunks_mut(e * e).zip(b_out.data_mut().par_chunks_mut(e)));
        slots.enumerate().for_each(|(s, ((dw_in, db_in), (dw_out, db_out)))| {
            // Sample s's rows of each matrix.
            let (dqkv_s, x_s) = (&dqkv[s * t * 3 * e..][..t * 3 * e], &x[s * t * e..][..t * e]);
            let (dy_s, o_s) = (&dy.data()[s * t * e..][..t * e], &self.o[s * t * e..][..t * e]);
            sgemm(3 * e, t, e, 1.0, dqkv_s, Yes, x_s, No, 0.0, dw_in);
            sgemm(e, t, e, 1.0, dy_s, Yes, o_s, No, 0.0, dw_out);
            db_in.fill(0.0);
            db_out.fill(0.0);
            add_rows(db_in, dqkv_s);
            add_rows(db_out, dy_s);
        });
        input_grad.is_needed().then(|| self.input_gradient(&dqkv))
    }
}

impl Visit for MultiHeadAttention {
    fn visit<'a>(&'a self, f: &mut dyn FnMut(&str, State<'a>)) {
        f("in_proj_weight", State::Param(&self.in_proj_weight));
        f("in_proj_bias", State::Param(&self.in_proj_bias));
        f("out_proj.weight", State::Param(&self.out_proj_weight));
        f("out_proj.bias", State::Param(&self.out_proj_bias));
    }

    fn visit_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, StateMut<'a>)) {
        f("in_proj_weight", StateMut::Param(&mut self.in_proj_weight));
        f("in_proj_bias", StateMut::Param(&mut self.in_proj_bias));
        f("out_proj.weight", StateMut::Param(&mut self.out_proj_weight));
        f("out_proj.bias", StateMut::Param(&mut self.out_proj_bias));
    }
}
