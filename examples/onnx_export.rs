//! Exports one small model per layer type to ONNX, with an input and this crate's output for it,
//! so that `examples/onnx/check.py` can run each file in ONNX Runtime and compare.
//!
//! Run: `cargo run --release --example onnx_export -- [DIR]` (default `target/onnx`), then
//! `python3 examples/onnx/check.py [DIR]` (needs `pip install onnxruntime onnx safetensors numpy`).

#[path = "common/zoo.rs"]
mod zoo;

use backprop::prelude::*;
use std::path::PathBuf;

fn main() -> Result<()> {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "target/onnx".into()));
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let models = zoo::zoo()?;
    let count = models.len();
    for (k, (name, mut model, sample, ids)) in models.into_iter().enumerate() {
        zoo::settle(&mut model, &sample, ids);
        let x = zoo::batch(&sample, ids, k);
        let y = model.predict(&x, 256)?;
        backprop::onnx::save(&model, &sample, dir.join(format!("{name}.onnx")))?;
        zoo::write_tensors(&dir.join(format!("{name}.safetensors")), &[("input", &x), ("output", &y)])?;
        println!(
            "{name}: {} → {:?}",
            model.layers().map(|l| l.describe()).collect::<Vec<_>>().join(" → "),
            y.shape()
        );
    }
    println!("wrote {count} models to {}", dir.display());
    Ok(())
}
