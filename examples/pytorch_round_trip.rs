//! The crate's half of the PyTorch round trip, driven by `examples/pytorch/round_trip.py`:
//!
//! - `export DIR`: for every model of the zoo (one per group of layer types, a nested residual
//!   model among them), writes its weights (`NAME.crate.safetensors`), an input and this crate's
//!   output for it (`NAME.io.safetensors`);
//! - `check DIR`: loads the weights PyTorch wrote (`NAME.torch.safetensors`), runs the same input,
//!   and prints the largest difference from PyTorch's output (`NAME.torch_out.safetensors`).
//!
//! Run the whole round trip with `python3 examples/pytorch/round_trip.py`.

#[path = "common/zoo.rs"]
mod zoo;

use backprop::prelude::*;
use std::path::PathBuf;

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (mode, dir) = match args.as_slice() {
        [_, mode, dir] if mode == "export" || mode == "check" => (mode.as_str(), PathBuf::from(dir)),
        _ => return Err(Error::invalid("usage: pytorch_round_trip export|check DIR")),
    };
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    for (k, (name, mut model, sample, ids)) in zoo::zoo()?.into_iter().enumerate() {
        let x = zoo::batch(&sample, ids, k);
        if mode == "export" {
            zoo::settle(&mut model, &sample, ids);
            let y = model.predict(&x, 256)?;
            model.save(dir.join(format!("{name}.crate.safetensors")))?;
            zoo::write_tensors(
                &dir.join(format!("{name}.io.safetensors")),
                &[("input", &x), ("output", &y)],
            )?;
        } else {
            model.load(dir.join(format!("{name}.torch.safetensors")))?; // strict: every name and shape
            let y = model.predict(&x, 256)?;
            let torch = zoo::read_tensors(&dir.join(format!("{name}.torch_out.safetensors")))?;
            let expected = &torch.iter().find(|(n, _)| n == "output").expect("an output tensor").1;
            if expected.shape() != y.shape() {
                return Err(Error::shape(format!(
                    "{name}: PyTorch gave {:?}, this crate {:?}",
                    expected.shape(),
                    y.shape()
                )));
            }
            println!("{name} {:e}", y.max_abs_diff(expected));
        }
    }
    Ok(())
}

/// Runs the example; an error is printed as its message (not Rust's debug form) and exits 1.
fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
