//! The models the interoperability checks share: one small model per group of layer types, with
//! inputs, and safetensors files of named tensors. Used by `examples/onnx_export.rs` and
//! `examples/pytorch_round_trip.rs`; `examples/pytorch/round_trip.py` builds the same models in
//! PyTorch, so the two lists must stay in step.

#![allow(dead_code)] // each example uses part of it

use backprop::prelude::*;
use std::path::Path;

/// A model to export: a name, the model, the shape of one sample, and whether the input is token ids.
pub type Case = (&'static str, Sequential, Vec<usize>, bool);

/// One model per group of layer types.
pub fn zoo() -> Result<Vec<Case>> {
    let mlp = Sequential::builder(&[6])
        .add(Dense::new(6, 5))
        .add(Relu::new())
        .add(Dense::new(5, 5))
        .add(Sigmoid::new())
        .add(Dense::new(5, 4).no_bias())
        .add(Tanh::new())
        .add(Dense::new(4, 3))
        .add(Softmax::new());
    let smooth = Sequential::builder(&[6])
        .add(Dense::new(6, 5))
        .add(LeakyRelu::new(0.2))
        .add(Dense::new(5, 5))
        .add(Gelu::new())
        .add(Dense::new(5, 4))
        .add(Gelu::tanh())
        .add(Dense::new(4, 3))
        .add(LogSoftmax::new());
    let cnn = Sequential::builder(&[2, 11, 11])
        .add(Conv2d::new(2, 4, 3).padding(1).stride(2))
        .add(BatchNorm2d::new(4))
        .add(Relu::new())
        .add(MaxPool2d::new(2))
        .add(Conv2d::new(4, 4, 2).no_bias().dilation(1).padding(1))
        .add(AvgPool2d::new(2).padding(1))
        .add(Flatten::new())
        .add(Dropout::new(0.5))
        .add(Dense::new(36, 3));
    let body =
        Sequential::new().add(Conv2d::new(3, 3, 3).padding(1)).add(BatchNorm2d::new(3)).add(Relu::new());
    let residual = Sequential::builder(&[1, 8, 8])
        .add(Conv2d::new(1, 3, 3).padding(1).dilation(1))
        .add(Residual::new(body))
        .add(GlobalAvgPool::new())
        .add(BatchNorm1d::new(3))
        .add(Dense::new(3, 2));
    let lstm = Sequential::builder(&[6, 3]).add(Lstm::new(3, 5)).add(Dense::new(5, 2));
    let gru = Sequential::builder(&[6, 3]).add(Gru::new(3, 5).last_step_only()).add(Dense::new(5, 2));
    let rnn = Sequential::builder(&[6, 3]).add(Rnn::new(3, 4)).add(Rnn::relu(4, 4).last_step_only());
    let embedding =
        Sequential::builder(&[6]).add(Embedding::new(7, 3)).add(Lstm::new(3, 4)).add(Dense::new(4, 1));
    let layernorm = Sequential::builder(&[5, 6])
        .add(Dense::new(6, 8))
        .add(LayerNorm::new(8))
        .add(Gelu::new())
        .add(Dense::new(8, 3))
        .add(LayerNorm::new(3).eps(1e-3).without_affine());
    use backprop::layers::{
        DecoderOnly, FeedForwardActivation, PositionEmbedding, SinusoidalPositions, TransformerEncoderLayer,
    };
    let encoder = Sequential::builder(&[5, 8])
        .add(TransformerEncoderLayer::new(8, 2, 16).norm_first())
        .add(TransformerEncoderLayer::new(8, 2, 16).activation(FeedForwardActivation::Gelu))
        .add(Dense::new(8, 3));
    let attention = Sequential::builder(&[6])
        .add(Embedding::new(7, 8))
        .add(SinusoidalPositions::new(8))
        .add(PositionEmbedding::new(6, 8))
        .add(MultiHeadAttention::new(8, 2).causal())
        .add(Dense::new(8, 2));
    let gpt = Sequential::builder(&[6]).add(DecoderOnly::new(11, 8, 2, 2, 16, 6).tied());
    Ok(vec![
        ("dense_activations", mlp.seed(1).build()?, vec![6], false),
        ("leaky_gelu_logsoftmax", smooth.seed(2).build()?, vec![6], false),
        ("conv_batchnorm_pools", cnn.seed(3).build()?, vec![2, 11, 11], false),
        ("residual_global_pool", residual.seed(4).build()?, vec![1, 8, 8], false),
        ("lstm", lstm.seed(5).build()?, vec![6, 3], false),
        ("gru_last_step", gru.seed(6).build()?, vec![6, 3], false),
        ("rnn_tanh_relu", rnn.seed(7).build()?, vec![6, 3], false),
        ("embedding_lstm", embedding.seed(8).build()?, vec![6], true),
        ("layernorm_sequence", layernorm.seed(9).build()?, vec![5, 6], false),
        ("transformer_blocks", encoder.seed(10).build()?, vec![5, 8], false),
        ("attention_positions", attention.seed(11).build()?, vec![6], true),
        ("gpt_tied", gpt.seed(12).build()?, vec![6], true),
    ])
}

/// The ONNX attention case (`attention` in `examples/onnx_export.rs`, checked against ONNX Runtime
/// by `tests/onnx.rs`): a causal self-attention, a post-LN encoder block and a pre-LN causal GELU
/// block, over `[6, 8]` sequences.
pub fn attention_encoder() -> backprop::layers::sequential::SequentialBuilder {
    use backprop::layers::{FeedForwardActivation, TransformerEncoderLayer};
    Sequential::builder(&[6, 8])
        .add(MultiHeadAttention::new(8, 2).causal())
        .add(TransformerEncoderLayer::new(8, 2, 16).dropout(0.0))
        .add(
            TransformerEncoderLayer::new(8, 4, 12)
                .norm_first()
                .causal()
                .activation(FeedForwardActivation::Gelu),
        )
}

pub fn input(shape: &[usize], ids: bool, seed: u64) -> Tensor {
    if ids {
        let n: usize = shape.iter().product();
        Tensor::from_vec(shape, (0..n).map(|i| ((i * 5 + seed as usize) % 7) as f32).collect()).expect("ids")
    } else {
        Tensor::randn(shape, 0.0, 1.0, seed)
    }
}

pub fn write_tensors(path: &std::path::Path, tensors: &[(&str, &Tensor)]) -> Result<()> {
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
        .iter()
        .map(|(n, t)| {
            (n.to_string(), t.data().iter().flat_map(|v| v.to_le_bytes()).collect(), t.shape().to_vec())
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = bytes
        .iter()
        .map(|(n, b, s)| {
            let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                .expect("a valid view");
            (n.clone(), view)
        })
        .collect();
    let data = safetensors::serialize(views, None).map_err(|e| Error::invalid(e.to_string()))?;
    std::fs::write(path, data).map_err(|e| Error::io(path, e))
}

/// Reads every tensor of a safetensors file (F32 only) with its name.
pub fn read_tensors(path: &Path) -> Result<Vec<(String, Tensor)>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let file =
        safetensors::SafeTensors::deserialize(&bytes).map_err(|e| Error::format(path, e.to_string()))?;
    let mut out = Vec::new();
    for (name, view) in file.tensors() {
        if view.dtype() != safetensors::Dtype::F32 {
            return Err(Error::format(path, format!("{name}: expected F32, got {:?}", view.dtype())));
        }
        let data =
            view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        out.push((name, Tensor::from_vec(view.shape(), data)?));
    }
    Ok(out)
}

/// A batch of 5 inputs for model `k` of the zoo (token ids where `ids`).
pub fn batch(sample: &[usize], ids: bool, k: usize) -> Tensor {
    let shape: Vec<usize> = std::iter::once(5).chain(sample.iter().copied()).collect();
    input(&shape, ids, k as u64)
}

/// A few training-mode passes, so that batch norm has running statistics that are not 0 and 1.
pub fn settle(model: &mut Sequential, sample: &[usize], ids: bool) {
    for step in 0..3 {
        let shape: Vec<usize> = std::iter::once(8).chain(sample.iter().copied()).collect();
        model.forward(&input(&shape, ids, 100 + step), Pass::TRAIN);
    }
}

/// How many odd models [`odd`] numbers (not all build: those are skipped).
pub const ODD_MODELS: u64 = 60;

/// A seeded model with unusual but valid settings — kernels larger than strides, strides larger
/// than kernels, dilations, asymmetric paddings, rectangular windows, pooling with padding, deep
/// stacks of activations, residual blocks, recurrent layers of every kind with and without
/// `last_step_only` — for checking that an export is either refused by name or agrees with ONNX
/// Runtime. `None` when the drawn settings do not build (a shape that shrinks to nothing, say).
/// Seeds `3k` are images, `3k + 1` vectors, `3k + 2` sequences (recurrent layers).
pub fn odd(seed: u64) -> Option<(Sequential, Vec<usize>, bool)> {
    use rand::RngExt;
    let mut r = backprop::tensor::rng(seed);
    let pick = |r: &mut backprop::tensor::Rng, v: &[usize]| v[r.random_range(0..v.len())];
    let activation = |r: &mut backprop::tensor::Rng| -> Box<dyn Layer> {
        match r.random_range(0..6) {
            0 => Box::new(Relu::new()),
            1 => Box::new(LeakyRelu::new(0.07)),
            2 => Box::new(Sigmoid::new()),
            3 => Box::new(Tanh::new()),
            4 => Box::new(Gelu::new()),
            _ => Box::new(Gelu::tanh()),
        }
    };
    let (mut b, sample, ids) = match seed % 3 {
        0 => {
            // Images: 1–3 convolution / pooling stages, then a classifier.
            let (c, h, w) =
                (pick(&mut r, &[1, 2, 3]), pick(&mut r, &[5, 7, 9, 12]), pick(&mut r, &[4, 6, 9, 11]));
            let mut b = Sequential::builder(&[c, h, w]);
            let mut ch = c;
            for _ in 0..r.random_range(1..4) {
                match r.random_range(0..5) {
                    0 | 1 => {
                        let out = pick(&mut r, &[1, 2, 4]);
                        let k = (pick(&mut r, &[1, 2, 3, 5]), pick(&mut r, &[1, 2, 3]));
                        let mut conv = Conv2d::with_kernel(ch, out, k)
                            .stride_hw(pick(&mut r, &[1, 2, 3]), pick(&mut r, &[1, 2]))
                            .padding_hw(pick(&mut r, &[0, 1, 2]), pick(&mut r, &[0, 1]))
                            .dilation_hw(pick(&mut r, &[1, 2]), pick(&mut r, &[1, 2]));
                        if r.random_range(0..3) == 0 {
                            conv = conv.no_bias();
                        }
                        b = b.add(conv);
                        ch = out;
                        if r.random_range(0..2) == 0 {
                            b = b.add(BatchNorm2d::new(ch));
                        }
                        b = b.add_boxed(activation(&mut r));
                    }
                    2 => {
                        let k = (pick(&mut r, &[1, 2, 3]), pick(&mut r, &[2, 3]));
                        let (s, p) = (pick(&mut r, &[1, 2, 3]), pick(&mut r, &[0, 1]));
                        b = if r.random_range(0..2) == 0 {
                            b.add(
                                MaxPool2d::with_kernel(k)
                                    .stride(s)
                                    .padding_hw(p.min(k.0 / 2), p.min(k.1 / 2)),
                            )
                        } else {
                            b.add(
                                AvgPool2d::with_kernel(k)
                                    .stride(s)
                                    .padding_hw(p.min(k.0 / 2), p.min(k.1 / 2)),
                            )
                        };
                    }
                    3 => {
                        let body = Sequential::new()
                            .add(Conv2d::new(ch, ch, 3).padding(1))
                            .add(BatchNorm2d::new(ch))
                            .add_boxed(activation(&mut r));
                        b = b.add(Residual::new(body));
                    }
                    _ => b = b.add_boxed(activation(&mut r)),
                }
            }
            let b = if r.random_range(0..2) == 0 {
                b.add(GlobalAvgPool::new()).add(Dense::new(ch, 3))
            } else {
                b.add(Flatten::new())
            };
            (b, vec![c, h, w], false)
        }
        1 => {
            // Vectors: dense layers, activations, batch norm, dropout, residual blocks.
            let f = pick(&mut r, &[1, 3, 8]);
            let mut b = Sequential::builder(&[f]);
            let mut width = f;
            for _ in 0..r.random_range(1..6) {
                match r.random_range(0..5) {
                    0 | 1 => {
                        let out = pick(&mut r, &[1, 2, 5, 9]);
                        b = b.add(if r.random_range(0..3) == 0 {
                            Dense::new(width, out).no_bias()
                        } else {
                            Dense::new(width, out)
                        });
                        width = out;
                    }
                    2 => b = b.add(BatchNorm1d::new(width)).add(Dropout::new(0.3)),
                    3 => {
                        let body =
                            Sequential::new().add(Dense::new(width, width)).add_boxed(activation(&mut r));
                        b = b.add(Residual::new(body));
                    }
                    _ => b = b.add_boxed(activation(&mut r)),
                }
            }
            let b = match r.random_range(0..3) {
                0 => b.add(Softmax::new()),
                1 => b.add(LogSoftmax::new()),
                _ => b,
            };
            (b, vec![f], false)
        }
        _ => {
            // Sequences: token ids or features through one or two recurrent layers.
            let t = pick(&mut r, &[1, 2, 5]);
            let ids = r.random_range(0..2) == 0;
            let (mut b, mut width, sample) = if ids {
                let dim = pick(&mut r, &[1, 3]);
                (Sequential::builder(&[t]).add(Embedding::new(7, dim)), dim, vec![t])
            } else {
                let f = pick(&mut r, &[1, 2, 4]);
                (Sequential::builder(&[t, f]), f, vec![t, f])
            };
            let layers = r.random_range(1..3);
            for k in 0..layers {
                let hidden = pick(&mut r, &[1, 3, 6]);
                let last = k + 1 == layers && r.random_range(0..2) == 0;
                b = match (r.random_range(0..4), last) {
                    (0, false) => b.add(Lstm::new(width, hidden)),
                    (0, true) => b.add(Lstm::new(width, hidden).last_step_only()),
                    (1, false) => b.add(Gru::new(width, hidden)),
                    (1, true) => b.add(Gru::new(width, hidden).last_step_only()),
                    (2, false) => b.add(Rnn::new(width, hidden)),
                    (2, true) => b.add(Rnn::new(width, hidden).last_step_only()),
                    (_, false) => b.add(Rnn::relu(width, hidden)),
                    (_, true) => b.add(Rnn::relu(width, hidden).last_step_only()),
                };
                width = hidden;
            }
            (b.add(Dense::new(width, 2)), sample, ids)
        }
    };
    b = b.seed(seed);
    b.build().ok().map(|m| (m, sample, ids))
}
