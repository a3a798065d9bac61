//! Where each step is: attention compares every step with every other and, alone, cannot tell
//! their order. These layers add a vector that depends on the step `t` to every step of
//! sequences `[N, T, E]`:
//!
//! ```text
//! SinusoidalPositions:  y[n, t, :] = x[n, t, :] + PE[t, :]      PE[t, 2i]   = sin(t / 10000^(2i/E))
//!                                                               PE[t, 2i+1] = cos(t / 10000^(2i/E))
//!                       dx = dy                                 (a fixed table: nothing to learn)
//! PositionEmbedding:    y[n, t, :] = x[n, t, :] + P[t, :]       P: [max_len, E], learned
//!                       dx = dy      dP[t, :] += Σ_n dy[n, t, :]
//! ```
//!
//! The sinusoidal table is the one of "Attention Is All You Need" (Vaswani et al., 2017): each
//! pair of columns turns at its own frequency, from one turn every 2π steps down to one every
//! 2π·10000, so that any fixed offset between two steps is the same rotation wherever they are.

use super::{InputGrad, Layer, Param, Pass, State, StateMut, Visit, check_grad, checked_output, shape_error};
use crate::error::Result;
use crate::onnx::{Graph, OnnxLayer};
use crate::privacy::per_example::{PerExample, PerExampleGrads};
use crate::tensor::Tensor;
use crate::tensor::init::Init;

/// The sinusoidal table `PE [steps, embed]` (see the [module docs](self)).
///
/// ```
/// use backprop::layers::positions::sinusoidal_table;
/// let pe = sinusoidal_table(3, 4);
/// assert_eq!(&pe.data()[..4], &[0.0, 1.0, 0.0, 1.0]); // t = 0: sin 0, cos 0, …
/// assert!((pe.data()[4] - 1f32.sin()).abs() < 1e-7); // t = 1, column 0: sin(1)
/// assert!((pe.data()[6] - 0.01f32.sin()).abs() < 1e-7); // t = 1, column 2: sin(1/100)
/// ```
///
/// # Panics
/// If the table would be more values than a tensor can hold (a message names the size).
pub fn sinusoidal_table(steps: usize, embed: usize) -> Tensor {
    let mut pe = Tensor::zeros(&[steps, embed]);
    for (t, row) in pe.data_mut().chunks_exact_mut(embed.max(1)).enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            let pair = (j / 2 * 2) as f64; // 2i: both columns of a pair share a frequency
            let angle = t as f64 / 10_000f64.powf(pair / embed as f64);
            *v = if j % 2 == 0 { angle.sin() } else { angle.cos() } as f32;
        }
    }
    pe
}

/// Checks `[N, T, E]` with `T ≥ 1` and the layer's `E` (and `T ≤ max` if given).
fn check_sequences(describe: &str, embed: usize, max: Option<usize>, input: &[usize]) -> Result<Vec<usize>> {
    if embed == 0 {
        return Err(crate::error::Error::shape(format!("{describe} has no features: positions of width 0")));
    }
    match input {
        [_, t, e] if *e == embed && *t > 0 && max.is_none_or(|m| *t <= m) => {
            checked_output(|| describe.to_string(), input.to_vec())
        }
        _ => {
            let steps = max.map_or("T ≥ 1".to_string(), |m| format!("1 ≤ T ≤ {m}"));
            Err(shape_error(describe, format!("[N, {steps}, {embed}]"), input))
        }
    }
}

/// Adds the sinusoidal position table to sequences `[N, T, E]`. No parameters. See the
/// [module docs](self).
pub struct SinusoidalPositions {
    embed: usize,
    /// The table for the latest `T` (rebuilt when `T` changes).
    table: Tensor,
    out_shape: Vec<usize>,
}

impl SinusoidalPositions {
    /// For sequences of `embed` features.
    pub fn new(embed: usize) -> SinusoidalPositions {
        SinusoidalPositions { embed, table: Tensor::default(), out_shape: Vec::new() }
    }
}

impl Layer for SinusoidalPositions {
    fn describe(&self) -> String {
        format!("SinusoidalPositions({})", self.embed)
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        check_sequences(&self.describe(), self.embed, None, input)
    }

    fn forward(&mut self, x: &Tensor, _pass: Pass<'_>) -> Tensor {
        self.out_shape = self.output_shape(x.shape()).unwrap_or_else(|e| panic!("{e}"));
        let t = x.dim(1);
        if x.data().is_empty() {
            return Tensor::zeros(x.shape()); // no sequence: no table to build for its T
        }
        if self.table.shape() != [t, self.embed] {
            self.table = sinusoidal_table(t, self.embed);
        }
        add_to_samples(x, &self.table.data()[..t * self.embed]) // y = x + PE[t]
    }

    fn backward(&mut self, g: &Tensor, input_grad: InputGrad) -> Option<Tensor> {
        check_grad(&self.describe(), &self.out_shape, g);
        input_grad.is_needed().then(|| g.clone_in_parallel()) // dx = dy
    }

    fn onnx(&self) -> Option<&dyn OnnxLayer> {
        Some(self)
    }
}

impl Visit for SinusoidalPositions {
    fn visit<'a>(&'a self, _: &mut dyn FnMut(&str, State<'a>)) {}
    fn visit_mut<'a>(&'a mut self, _: &mut dyn FnMut(&str, StateMut<'a>)) {}
}

impl OnnxLayer for SinusoidalPositions {
    /// `Add` of the table's first `T` rows (`T` read from the input's shape when the graph runs,
    /// though the graph's inputs fix it at export; the table is written for the longest sequence
    /// among the graph's inputs).
    fn export(&self, g: &mut Graph, x: &str, _: Option<&str>) -> Result<String> {
        let longest = g.longest_steps().ok_or_else(|| {
            crate::error::Error::invalid(format!("{}: no graph input is a sequence [T, …]", self.describe()))
        })?;
        g.check_table(&self.describe(), "position", &[longest, self.embed], 4)?;
        let table = sinusoidal_table(longest, self.embed);
        let table = g.tensor("positions", &[longest, self.embed], table.data());
        let rows = g.first_steps(&table, x);
        Ok(g.op("Add", &[x, &rows], vec![]))
    }
}

/// Adds a learned vector per step, `P [max_len, E]` (parameter `weight`, drawn from `N(0, 1)` as
/// `nn.Embedding`), to sequences `[N, T ≤ max_len, E]`. See the [module docs](self).
///
/// ```
/// use backprop::layers::{InputGrad, Layer, Pass, PositionEmbedding};
/// use backprop::Tensor;
/// let mut pos = PositionEmbedding::new(10, 4);
/// let y = pos.forward(&Tensor::zeros(&[2, 3, 4]), Pass::TRAIN);
/// assert_eq!(y.outer(0), &pos.weight().value.data()[..12]); // rows 0, 1, 2 of P
/// pos.backward(&Tensor::ones(&[2, 3, 4]), InputGrad::NotNeeded);
/// assert_eq!(pos.weight().grad.outer(2), &[2.0; 4]); // both samples' step 2
/// assert_eq!(pos.weight().grad.outer(3), &[0.0; 4]); // no sample has a step 3
/// ```
pub struct PositionEmbedding {
    pub(crate) weight: Param,
    out_shape: Vec<usize>,
}

impl PositionEmbedding {
    /// Positions `0 .. max_len` of `embed` features.
    ///
    /// # Panics
    /// If its table would be more values than a tensor can hold (a message names the size).
    pub fn new(max_len: usize, embed: usize) -> PositionEmbedding {
        PositionEmbedding {
            weight: Param::drawn(&[max_len, embed], Init::Normal { mean: 0.0, std: 1.0 }, 0),
            out_shape: Vec::new(),
        }
    }

    /// The table `P`, `[max_len, embed]`.
    pub fn weight(&self) -> &Param {
        &self.weight
    }

    /// The longest sequence it can position.
    pub fn max_len(&self) -> usize {
        self.weight.value.dim(0)
    }

    fn embed(&self) -> usize {
        self.weight.value.dim(1)
    }
}

impl Layer for PositionEmbedding {
    fn describe(&self) -> String {
        format!("PositionEmbedding({}, {})", self.max_len(), self.embed())
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        check_sequences(&self.describe(), self.embed(), Some(self.max_len()), input)
    }

    fn forward(&mut self, x: &Tensor, _pass: Pass<'_>) -> Tensor {
        self.out_shape = self.output_shape(x.shape()).unwrap_or_else(|e| panic!("{e}"));
        let steps = x.dim(1) * self.embed();
        add_to_samples(x, &self.weight.value.data()[..steps]) // y = x + P[t]
    }

    fn backward(&mut self, g: &Tensor, input_grad: InputGrad) -> Option<Tensor> {
        check_grad(&self.describe(), &self.out_shape, g);
        let steps = g.dim(1) * self.embed();
        crate::tensor::add_rows(&mut self.weight.grad.data_mut()[..steps], g.data()); // dP[t] += Σ_n g
        input_grad.is_needed().then(|| g.clone_in_parallel())
    }

    fn per_example(&mut self) -> Option<&mut dyn PerExample> {
        Some(self)
    }

    fn onnx(&self) -> Option<&dyn OnnxLayer> {
        Some(self)
    }
}

impl PerExample for PositionEmbedding {
    /// Example `n`'s `dP` is its own `dy` in the first `T` rows.
    fn backward_per_example(
        &mut self,
        g: &Tensor,
        input_grad: InputGrad,
        grads: &mut PerExampleGrads,
    ) -> Option<Tensor> {
        check_grad(&self.describe(), &self.out_shape, g);
        grads.expect_batch(&self.describe(), g.dim(0));
        let steps = g.dim(1) * self.embed();
        let [dp] = grads.next_slots_to_overwrite([self.weight.len()]);
        for (dp_n, g_n) in dp.data_mut().chunks_exact_mut(self.weight.len()).zip(g.data().chunks_exact(steps))
        {
            dp_n[..steps].copy_from_slice(g_n);
            dp_n[steps..].fill(0.0);
        }
        input_grad.is_needed().then(|| g.clone())
    }
}

impl Visit for PositionEmbedding {
    fn visit<'a>(&'a self, f: &mut dyn FnMut(&str, State<'a>)) {
        f("weight", State::Param(&self.weight));
    }

    fn visit_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, StateMut<'a>)) {
        f("weight", StateMut::Param(&mut self.weight));
    }
}

impl OnnxLayer for PositionEmbedding {
    /// `Add` of the table's first `T` rows (`T` read from the input's shape when the graph runs,
    /// though the graph's inputs fix it at export).
    fn export(&self, g: &mut Graph, x: &str, _: Option<&str>) -> Result<String> {
        let table = g.tensor("position_embedding", &[self.max_len(), self.embed()], self.weight.value.data());
        let rows = g.first_steps(&table, x);
        Ok(g.op("Add", &[x, &rows], vec![]))
    }
}

/// `x + p` with `p` (one sample's worth, `[T, E]`) added to every sample of `x` (`[N, T, E]`),
/// in a new tensor written in parallel blocks of samples when large.
fn add_to_samples(x: &Tensor, p: &[f32]) -> Tensor {
    let xs = x.data();
    Tensor::from_row_blocks(x.shape(), p.len(), |first, block| {
        for (s, y) in (first..).zip(block.chunks_exact_mut(p.len())) {
            let x_s = &xs[s * p.len()..][..p.len()];
            y.iter_mut().zip(x_s.iter().zip(p)).for_each(|(y, (x, p))| *y = x + p);
        }
    })
}
