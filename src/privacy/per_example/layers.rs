//! The per-example backward passes of the crate's layers with parameters, and of the containers
//! that pass the call to their children. Each keeps apart the terms that the layer's ordinary
//! backward pass sums over the batch (the table in the [module docs](super)).

use super::{PerExample, PerExampleGrads, backward_per_example, param_count, supports_per_example};
use crate::layers::conv2d::fast;
use crate::layers::recurrent::{Cell, Recurrent};
use crate::layers::{Conv2d, Dense, Embedding, Gru, InputGrad, Lstm, Residual, Rnn, Sequential, check_grad};
use crate::tensor::Tensor;
use crate::tensor::gemm::{Transpose::No, Transpose::Yes, sgemm};
use crate::tensor::parallel::split_if_threads;
use rayon::prelude::*;

impl PerExample for Dense {
    /// Example `n`'s terms of the layer's sums: `dW_n = g_nᵀ·x_n`, `db_n = Σ g_n` over its rows
    /// (one row, or one per position of a sequence).
    fn backward_per_example(
        &mut self,
        g: &Tensor,
        input_grad: InputGrad,
        grads: &mut PerExampleGrads,
    ) -> Option<Tensor> {
        self.check_kept();
        check_grad("Dense", &self.out_shape, g);
        let (n, i, o) = (grads.examples(), self.inputs(), self.outputs());
        grads.expect_batch("Dense", g.dim(0));
        let rows = g.len() / (n * o).max(1); // rows of each example
        let (g_len, x_len) = ((rows * o).max(1), (rows * i).max(1));
        let per_example = g.data().par_chunks(g_len).zip(self.input.data().par_chunks(x_len));
        let dw = grads.next_slot_to_overwrite(o * i);
        dw.data_mut().par_chunks_mut(o * i).zip(per_example).with_min_len(split_if_threads(1)).for_each(
            |(dw_n, (g_n, x_n))| {
                if rows == 1 {
                    // One row: the outer product, written directly (a GEMM would pack both factors).
                    for (dw_row, &g_o) in dw_n.chunks_exact_mut(i).zip(g_n) {
                        dw_row.iter_mut().zip(x_n).for_each(|(d, &x)| *d = g_o * x); // dW_n[o, :] = g_n[o]·x_n
                    }
                } else {
                    sgemm(o, rows, i, 1.0, g_n, Yes, x_n, No, 0.0, dw_n); // dW_n = g_nᵀ·x_n
                }
            },
        );
        if self.bias.is_some() {
            let db = grads.next_slot(o);
            for (db_n, g_n) in db.data_mut().chunks_exact_mut(o).zip(g.data().chunks(g_len)) {
                for row in g_n.chunks_exact(o) {
                    db_n.iter_mut().zip(row).for_each(|(d, g)| *d += g); // db_n = Σ g_n
                }
            }
        }
        input_grad.is_needed().then(|| self.input_gradient(g))
    }
}

impl PerExample for Conv2d {
    /// Image `n`'s terms, `dW_n = g_n·colsₙᵀ` and `db_n = Σ g_n`: the fast backward pass with each
    /// image's `dL/dW` product kept apart.
    fn backward_per_example(
        &mut self,
        g: &Tensor,
        input_grad: InputGrad,
        grads: &mut PerExampleGrads,
    ) -> Option<Tensor> {
        check_grad("Conv2d", &self.out_shape, g);
        let geo = self.geometry.expect("forward ran");
        let (o, ckk, n) = (self.out_channels, geo.col_rows(), self.input.dim(0));
        grads.expect_batch("Conv2d", n);
        let (w, want_dx) = (self.weight.value.data(), input_grad.is_needed());
        if self.bias.is_some() {
            let [dw, db] = grads.next_slots_to_overwrite([o * ckk, o]);
            fast::backward_in_groups_dx(&self.input, w, g, &geo, dw.data_mut(), db.data_mut(), want_dx, true)
        } else {
            self.dw_groups.clear();
            self.dw_groups.resize(n * o, 0.0); // the biases' sums, not wanted
            let dw = grads.next_slot_to_overwrite(o * ckk);
            fast::backward_in_groups_dx(
                &self.input,
                w,
                g,
                &geo,
                dw.data_mut(),
                &mut self.dw_groups,
                want_dx,
                true,
            )
        }
    }
}

impl PerExample for Embedding {
    /// Example `n`'s part of the scatter: a whole table per example, nonzero in the rows of its
    /// own ids only.
    fn backward_per_example(
        &mut self,
        g: &Tensor,
        input_grad: InputGrad,
        grads: &mut PerExampleGrads,
    ) -> Option<Tensor> {
        check_grad("Embedding", &self.out_shape, g);
        let (dim, n) = (self.dim(), grads.examples());
        grads.expect_batch("Embedding", g.dim(0));
        let ids_per_example = (self.ids.len() / n.max(1)).max(1);
        let table = self.weight.len();
        let dw = grads.next_slot(table);
        for (dw_n, (g_n, ids_n)) in dw
            .data_mut()
            .chunks_exact_mut(table)
            .zip(g.data().chunks(ids_per_example * dim).zip(self.ids.chunks(ids_per_example)))
        {
            for (row, &id) in g_n.chunks_exact(dim).zip(ids_n).filter(|(_, id)| Some(**id) != self.padding) {
                dw_n[id * dim..][..dim].iter_mut().zip(row).for_each(|(d, g)| *d += g); // dL/dW_n[id] += g
            }
        }
        input_grad.is_needed().then(|| Tensor::zeros(&self.out_shape[..self.out_shape.len() - 1]))
    }
}

impl PerExample for Sequential {
    fn has_per_example_grads(&mut self) -> bool {
        self.layers.iter_mut().all(|l| supports_per_example(l.as_mut()))
    }

    /// Each layer's per-example pass, backwards through the execution plan.
    fn backward_per_example(
        &mut self,
        grad_out: &Tensor,
        input_grad: InputGrad,
        grads: &mut PerExampleGrads,
    ) -> Option<Tensor> {
        // The layers are walked backwards but their parameters are visited forwards: each layer
        // fills its slots from the position of its first parameter.
        let mut first_slot = Vec::with_capacity(self.layers.len());
        let mut at = grads.position();
        for layer in &self.layers {
            first_slot.push(at);
            at += param_count(layer.as_ref());
        }
        let dx = self.backward_with(grad_out, input_grad, &mut |i, layer, g, want| {
            grads.seek(first_slot[i]);
            backward_per_example(layer, g, want, grads)
        });
        grads.seek(at);
        dx
    }
}

impl PerExample for Residual {
    fn has_per_example_grads(&mut self) -> bool {
        PerExample::has_per_example_grads(&mut self.body)
    }

    fn backward_per_example(
        &mut self,
        g: &Tensor,
        input_grad: InputGrad,
        grads: &mut PerExampleGrads,
    ) -> Option<Tensor> {
        let through_f = self.body.backward_per_example(g, input_grad, grads);
        through_f.map(|mut dx| {
            dx += g; // dL/dx = g + (df/dx)ᵀ·g, as in backward
            dx
        })
    }
}

/// Example `s`'s terms of the recurrent layer's sums: `dW_ih = Σ_t da_stᵀ·x_st`,
/// `dW_hh = Σ_t db_stᵀ·h_s,t−1` and the biases' sums over its steps.
fn recurrent_per_example<C: Cell>(
    layer: &mut Recurrent<C>,
    grad_out: &Tensor,
    input_grad: InputGrad,
    grads: &mut PerExampleGrads,
) -> Option<Tensor> {
    assert!(
        !layer.read_embedding(),
        "{}: per-example gradients of a forward_embedded pass are not available (run the embedding and the layer apart)",
        layer.describe()
    );
    layer.backward_through_time(Some(grad_out), None, true);
    let (n, t_len) = layer.nt;
    let (h, g, f) = (layer.hidden, C::GATES * layer.hidden, layer.inputs);
    grads.expect_batch(&layer.describe(), n);
    let (da_all, db) = (layer.gate_gradients(), &layer.grads[5]);
    let (hs, x) = (&layer.hs, layer.x.data()); // all four time-major
    let [w_ih, w_hh, b_ih, b_hh] = grads.next_slots_to_overwrite([g * f, g * h, g, g]);
    let slots = w_ih.data_mut().par_chunks_mut(g * f).zip(w_hh.data_mut().par_chunks_mut(g * h));
    let slots = slots.zip(b_ih.data_mut().par_chunks_mut(g).zip(b_hh.data_mut().par_chunks_mut(g)));
    slots.enumerate().with_min_len(split_if_threads(1)).for_each(|(s, ((dw_ih, dw_hh), (db_ih, db_hh)))| {
        // This example's rows (step t's at t·N + s in each time-major buffer), side by side.
        let rows = |all: &[f32], width: usize| -> Vec<f32> {
            (0..t_len).flat_map(|t| &all[(t * n + s) * width..][..width]).copied().collect()
        };
        let (da_s, x_s, db_s, h_s) = (rows(da_all, g), rows(x, f), rows(db, g), rows(hs, h));
        sgemm(g, t_len, f, 1.0, &da_s, Yes, &x_s, No, 0.0, dw_ih); // dW_ih = Σ_t da_tᵀ·x_t
        sgemm(g, t_len, h, 1.0, &db_s, Yes, &h_s, No, 0.0, dw_hh); // dW_hh = Σ_t db_tᵀ·h_{t−1}
        db_ih.fill(0.0);
        db_hh.fill(0.0);
        for (da_t, db_t) in da_s.chunks_exact(g).zip(db_s.chunks_exact(g)) {
            db_ih.iter_mut().zip(da_t).for_each(|(d, v)| *d += v); // db_ih = Σ_t da_t
            db_hh.iter_mut().zip(db_t).for_each(|(d, v)| *d += v); // db_hh = Σ_t db_t
        }
    });
    input_grad.is_needed().then(|| layer.input_gradient())
}

macro_rules! recurrent_per_example {
    ($($ty:ty),*) => {$(
        impl PerExample for $ty {
            fn backward_per_example(&mut self, g: &Tensor, input_grad: InputGrad, grads: &mut PerExampleGrads) -> Option<Tensor> {
                recurrent_per_example(&mut **self, g, input_grad, grads)
            }
        }
    )*};
}
recurrent_per_example!(Rnn, Lstm, Gru);
