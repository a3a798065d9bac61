//! Exports one small model per layer type to ONNX, with an input and this crate's output for it,
//! so that `examples/onnx/check.py` can run each file in ONNX Runtime and compare.
//!
//! Run: `cargo run --release --example onnx_export -- [DIR]` (default `target/onnx`), then
//! `python3 examples/onnx/check.py [DIR]` (needs `pip install onnxruntime safetensors numpy`).

use backprop::prelude::*;
use std::path::PathBuf;

/// A model to export: a name, the model, the shape of one sample, and whether the input is token ids.
type Case = (&'static str, Sequential, Vec<usize>, bool);

/// One model per group of layer types.
fn zoo() -> Result<Vec<Case>> {
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
    Ok(vec![
        ("dense_activations", mlp.seed(1).build()?, vec![6], false),
        ("leaky_gelu_logsoftmax", smooth.seed(2).build()?, vec![6], false),
        ("conv_batchnorm_pools", cnn.seed(3).build()?, vec![2, 11, 11], false),
        ("residual_global_pool", residual.seed(4).build()?, vec![1, 8, 8], false),
        ("lstm", lstm.seed(5).build()?, vec![6, 3], false),
        ("gru_last_step", gru.seed(6).build()?, vec![6, 3], false),
        ("rnn_tanh_relu", rnn.seed(7).build()?, vec![6, 3], false),
        ("embedding_lstm", embedding.seed(8).build()?, vec![6], true),
    ])
}

fn input(shape: &[usize], ids: bool, seed: u64) -> Tensor {
    if ids {
        let n: usize = shape.iter().product();
        Tensor::from_vec(shape, (0..n).map(|i| ((i * 5 + seed as usize) % 7) as f32).collect()).expect("ids")
    } else {
        Tensor::randn(shape, 0.0, 1.0, seed)
    }
}

fn write_tensors(path: &std::path::Path, tensors: &[(&str, &Tensor)]) -> Result<()> {
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

fn main() -> Result<()> {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "target/onnx".into()));
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    for (k, (name, mut model, sample, ids)) in zoo()?.into_iter().enumerate() {
        // A few training-mode passes give batch norm running statistics that are not 0 and 1.
        for step in 0..3 {
            let shape: Vec<usize> = std::iter::once(8).chain(sample.iter().copied()).collect();
            model.forward(&input(&shape, ids, 100 + step), Mode::Train);
        }
        let shape: Vec<usize> = std::iter::once(5).chain(sample.iter().copied()).collect();
        let x = input(&shape, ids, k as u64);
        let y = model.predict(&x, 256)?;
        backprop::onnx::save(&model, &sample, dir.join(format!("{name}.onnx")))?;
        write_tensors(&dir.join(format!("{name}.safetensors")), &[("input", &x), ("output", &y)])?;
        println!(
            "{name}: {} → {:?}",
            model.layers().map(|l| l.describe()).collect::<Vec<_>>().join(" → "),
            y.shape()
        );
    }
    println!("wrote {} models to {}", zoo()?.len(), dir.display());
    Ok(())
}
