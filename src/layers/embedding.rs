//! Embedding: integer ids → learned vectors, `y[…, :] = W[id, :]`.
//!
//! Shapes: ids `[N, …]` (whole numbers stored as `f32`, as every tensor here), `W [num, dim]`
//! (PyTorch's `nn.Embedding` layout, parameter `weight`), output `[N, …, dim]`.
//!
//! An embedding is a dense layer applied to a one-hot vector, computed without building the
//! one-hot: `y = onehot(id)·W = W[id]`. So its backward is the dense layer's `dL/dW = onehotᵀ·g`,
//! which **scatters** each output's gradient into the row it was read from — rows no id used get
//! nothing:
//!
//! ```text
//! dL/dW[id, :] += g[…, :]   for every position holding id      (accumulated)
//! dL/d(ids)     = 0                                            (ids are not differentiable)
//! ```
//!
//! With a *padding id* ([`Embedding::padding_idx`], PyTorch's `padding_idx`) the id that fills
//! padded positions reads a row that starts at zero and gets no gradient — so padding contributes
//! nothing, and no optimizer moves the row while it is zero. (Weight decay, coupled or decoupled,
//! shrinks a padding row that is not zero — one loaded or set by hand — as in PyTorch.)

use super::{InputGrad, Layer, Param, Pass, State, StateMut, Visit, check_grad, checked_output, shape_error};
use crate::error::{Error, Result};
use crate::onnx::OnnxLayer;
use crate::privacy::per_example::PerExample;
use crate::tensor::Tensor;
use crate::tensor::init::Init;
use crate::tensor::parallel::{PASS_PARALLEL_MIN, split_if_threads};
use rayon::prelude::*;

/// A lookup table of `num` vectors of `dim` values. See the [module docs](self).
///
/// ```
/// use backprop::layers::{Embedding, InputGrad, Layer, Pass};
/// use backprop::Tensor;
/// let mut emb = Embedding::new(10, 4);
/// let ids = Tensor::from_vec(&[2, 3], vec![1., 2., 1., 0., 9., 9.]).unwrap();
/// let y = emb.forward(&ids, Pass::TRAIN);
/// assert_eq!(y.shape(), &[2, 3, 4]);
/// assert!(emb.check_ids(&Tensor::from_vec(&[1], vec![10.]).unwrap()).is_err()); // out of range
/// ```
pub struct Embedding {
    pub(crate) weight: Param,
    /// The latest ids, as row indices.
    pub(crate) ids: Vec<usize>,
    pub(crate) out_shape: Vec<usize>,
    /// The padding id, whose row starts at zero and gets no gradient.
    pub(crate) padding: Option<usize>,
}

impl Embedding {
    /// `num` vectors of `dim` values, drawn from `N(0, 1)` as PyTorch's `nn.Embedding` (seed 0;
    /// a model redraws them from its own seed).
    ///
    /// # Panics
    /// If the table cannot be allocated (the message gives its size; the process is not aborted).
    pub fn new(num: usize, dim: usize) -> Embedding {
        let init = Init::Normal { mean: 0.0, std: 1.0 };
        Embedding {
            weight: Param::drawn(&[num, dim], init, 0),
            ids: Vec::new(),
            out_shape: Vec::new(),
            padding: None,
        }
    }

    /// Makes `id` the padding id (PyTorch's `padding_idx`): its row is set to zero and its
    /// gradient is always zero, so padded positions read zeros and train nothing. The table is
    /// then no longer redrawn by a model-wide seed (the row must stay zero); draw it with
    /// [`Embedding::seed`] (call `seed` first: it keeps the row at zero too).
    ///
    /// ```
    /// use backprop::layers::{Embedding, InputGrad, Layer, Pass};
    /// use backprop::Tensor;
    /// let mut emb = Embedding::new(4, 2).padding_idx(3);
    /// let ids = Tensor::from_vec(&[1, 2], vec![1., 3.]).unwrap();
    /// let y = emb.forward(&ids, Pass::TRAIN);
    /// assert_eq!(&y.data()[2..], &[0.0, 0.0]); // the padding row
    /// emb.backward(&Tensor::ones(&[1, 2, 2]), InputGrad::NotNeeded);
    /// assert_eq!(emb.weight().grad.outer(3), &[0.0, 0.0]); // no gradient for it
    /// assert_eq!(emb.weight().grad.outer(1), &[1.0, 1.0]);
    /// ```
    ///
    /// # Panics
    /// If `id` is not below [`Embedding::num`].
    pub fn padding_idx(mut self, id: usize) -> Embedding {
        assert!(
            id < self.num(),
            "Embedding: padding id {id} is not below the number of vectors, {}",
            self.num()
        );
        self.padding = Some(id);
        self.weight.value.outer_mut(id).fill(0.0);
        self.weight.init = None;
        self
    }

    /// Draws the table from `N(0, 1)` with `seed` (a model-wide seed then keeps it), the padding
    /// row (if any) at zero.
    pub fn seed(mut self, seed: u64) -> Embedding {
        let shape = self.weight.value.shape().to_vec();
        self.weight.value =
            Init::Normal { mean: 0.0, std: 1.0 }.tensor(&shape, &mut crate::tensor::rng(seed));
        self.weight.init = None;
        if let Some(p) = self.padding {
            self.weight.value.outer_mut(p).fill(0.0);
        }
        self
    }

    /// The padding id, if one was set.
    pub fn padding(&self) -> Option<usize> {
        self.padding
    }

    /// Sets the table `[num, dim]`.
    ///
    /// # Panics
    /// If the shape differs from the layer's.
    pub fn with_weights(mut self, weight: Tensor) -> Embedding {
        assert_eq!(weight.shape(), self.weight.value.shape(), "Embedding: new table shape vs the layer's");
        self.weight.value = weight;
        self.weight.init = None;
        self
    }

    /// Number of vectors.
    pub fn num(&self) -> usize {
        self.weight.value.dim(0)
    }

    /// Values per vector.
    pub fn dim(&self) -> usize {
        self.weight.value.dim(1)
    }

    /// The table parameter, `[num, dim]`.
    pub fn weight(&self) -> &Param {
        &self.weight
    }

    /// Checks that every value of `ids` is a whole number in `0..num`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the first bad id and its position.
    pub fn check_ids(&self, ids: &Tensor) -> Result<()> {
        let num = self.num();
        match ids.data().iter().position(|&v| !(v >= 0.0 && v.fract() == 0.0 && (v as usize) < num)) {
            None => Ok(()),
            Some(i) => Err(Error::invalid(format!(
                "{}: id {} at position {i} is not a whole number in 0..{num}",
                self.describe(),
                ids.data()[i]
            ))),
        }
    }
}

impl Layer for Embedding {
    fn describe(&self) -> String {
        match self.padding {
            None => format!("Embedding({}, {})", self.num(), self.dim()),
            Some(p) => format!("Embedding({}, {}, padding_idx={p})", self.num(), self.dim()),
        }
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        if self.num() == 0 || self.dim() == 0 {
            return Err(Error::shape(format!("{} has no vectors or no values", self.describe())));
        }
        if input.is_empty() {
            return Err(shape_error(&self.describe(), "[N, …] of ids", input));
        }
        checked_output(|| self.describe(), input.iter().copied().chain([self.dim()]).collect())
    }

    /// # Panics
    /// Also if an id is out of range or not a whole number (the message is [`Embedding::check_ids`]'s).
    fn forward(&mut self, ids: &Tensor, _pass: Pass<'_>) -> Tensor {
        self.out_shape = self.output_shape(ids.shape()).unwrap_or_else(|e| panic!("{e}"));
        self.check_ids(ids).unwrap_or_else(|e| panic!("{e}"));
        self.ids.clear();
        self.ids.extend(ids.data().iter().map(|&v| v as usize));
        let (dim, ids, w) = (self.dim(), &self.ids, &self.weight.value);
        // Blocks of rows in parallel for a large batch (each row a copy: the same on any split).
        Tensor::from_row_blocks(&self.out_shape, dim, |first, block| {
            for (row, &id) in block.chunks_exact_mut(dim).zip(&ids[first..]) {
                row.copy_from_slice(w.outer(id)); // y = W[id]
            }
        })
    }

    fn backward(&mut self, g: &Tensor, input_grad: InputGrad) -> Option<Tensor> {
        check_grad("Embedding", &self.out_shape, g);
        let (dim, ids, padding) = (self.dim(), &self.ids, self.padding);
        let rows = g.data();
        // dL/dW[id] += g, in the order of the batch's rows. For a large batch the table is cut into
        // blocks of ids, one per thread, each thread adding the rows whose ids are its own: every
        // dW[id] still sums its rows in order (the same bits on any number of threads).
        let vocab = self.weight.grad.dim(0);
        let per_task =
            if rows.len() < PASS_PARALLEL_MIN { vocab } else { vocab.div_ceil(rayon::current_num_threads()) };
        let blocks = self.weight.grad.data_mut().par_chunks_mut(per_task.max(1) * dim).enumerate();
        blocks.with_min_len(split_if_threads(1)).for_each(|(b, dw)| {
            let first = b * per_task.max(1);
            for (row, &id) in rows.chunks_exact(dim).zip(ids) {
                if Some(id) == padding || id < first || id >= first + dw.len() / dim {
                    continue; // the padding row gets no gradient; other ids are another block's
                }
                let dw_id = &mut dw[(id - first) * dim..][..dim];
                dw_id.iter_mut().zip(row).for_each(|(d, g)| *d += g); // dL/dW[id] += g
            }
        });
        // Ids are not differentiable: their "gradient" is zero.
        input_grad.is_needed().then(|| Tensor::zeros(&self.out_shape[..self.out_shape.len() - 1]))
    }

    fn check_values(&self, ids: &Tensor) -> Result<()> {
        self.check_ids(ids)
    }

    fn per_example(&mut self) -> Option<&mut dyn PerExample> {
        Some(self)
    }

    fn onnx(&self) -> Option<&dyn OnnxLayer> {
        Some(self)
    }
}

impl Visit for Embedding {
    fn visit<'a>(&'a self, f: &mut dyn FnMut(&str, State<'a>)) {
        f("weight", State::Param(&self.weight));
    }

    fn visit_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, StateMut<'a>)) {
        f("weight", StateMut::Param(&mut self.weight));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table's gradient over a batch large enough to be split by blocks of ids (ids repeated,
    /// the padding id among them) is the plain loop's, bit for bit, on 1, 2 and 3 threads; and the
    /// forward pass's rows are the table's.
    #[test]
    fn split_gradient_is_the_plain_loop() {
        let (vocab, dim, n, t) = (37, 24, 40, 90); // n·t·dim = 86,400 values: split
        let ids: Vec<f32> = (0..n * t).map(|i| ((i * 7 + i / 11) % vocab) as f32).collect();
        let ids = Tensor::from_vec(&[n, t], ids).unwrap();
        let g = Tensor::randn(&[n, t, dim], 0.0, 1.0, 3);
        let layer = || Embedding::new(vocab, dim).padding_idx(5);
        // The definition: each row of g added to its id's row, in order; the padding row gets none.
        let mut want = vec![0.0f32; vocab * dim];
        for (row, &id) in g.data().chunks_exact(dim).zip(ids.data()) {
            let id = id as usize;
            if id != 5 {
                want[id * dim..][..dim].iter_mut().zip(row).for_each(|(w, g)| *w += g);
            }
        }
        for threads in [1, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                let mut e = layer();
                let y = e.forward(&ids, Pass::TRAIN);
                for (row, &id) in y.data().chunks_exact(dim).zip(ids.data()) {
                    assert_eq!(row, e.weight.value.outer(id as usize), "{threads} threads: y = W[id]");
                }
                e.backward(&g, InputGrad::NotNeeded);
                let same = e.weight.grad.data().iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{threads} threads: dW differs from the plain loop");
            });
        }
    }
}
