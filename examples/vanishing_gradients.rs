//! Vanishing gradients, shown: the gradient norm of every layer of a deep network at
//! initialisation, for sigmoid, for ReLU, and for sigmoid with batch norm after each dense layer
//! (docs/backprop.md §3 and §8). Prints a table and draws `vanishing_gradients.svg`
//! (`cargo run --release --example pictures` draws the same into `docs/img/`).
//!
//! Run: `cargo run --release --example vanishing_gradients [-- OUT_DIR]` (default `target/`)

#[path = "common/svg.rs"]
pub(crate) mod svg;

use backprop::layers::named_params;
use backprop::prelude::*;
use std::path::PathBuf;

/// Layers deep.
pub const DEPTH: usize = 10;
const WIDTH: usize = 32;

/// The three networks: `DEPTH` dense layers of `WIDTH` units, each followed by the activation
/// (and, in the third, batch norm before it).
pub fn networks() -> Vec<(&'static str, Sequential)> {
    let build = |kind: usize| {
        let mut b = Sequential::builder(&[WIDTH]);
        for _ in 0..DEPTH {
            b = b.add(Dense::new(WIDTH, WIDTH));
            if kind == 2 {
                b = b.add(BatchNorm1d::new(WIDTH));
            }
            b = if kind == 1 { b.add(Relu::new()) } else { b.add(Sigmoid::new()) };
        }
        b.add(Dense::new(WIDTH, 1)).seed(3).build().expect("a deep network")
    };
    vec![("sigmoid", build(0)), ("ReLU", build(1)), ("sigmoid + batch norm", build(2))]
}

/// `‖dL/dW‖` of each of the `DEPTH` hidden dense layers (first to last), for one batch.
pub fn layer_gradient_norms(model: &mut Sequential) -> Vec<f32> {
    let x = Tensor::randn(&[256, WIDTH], 0.0, 1.0, 1);
    let y = Tensor::randn(&[256, 1], 0.0, 1.0, 2);
    model.loss_and_backward(&x, (&y).into(), &MseLoss::new(), Mode::Train).expect("a valid batch");
    named_params(model)
        .into_iter()
        .filter(|(name, p)| name.ends_with("weight") && p.value.shape() == [WIDTH, WIDTH])
        .map(|(_, p)| p.grad.data().iter().map(|v| v * v).sum::<f32>().sqrt())
        .collect()
}

/// The picture: `log10 ‖dL/dW‖` per layer, one line per network.
pub fn chart_svg(rows: &[(&str, Vec<f32>)]) -> String {
    let logs = || rows.iter().flat_map(|r| r.1.iter()).map(|n| f64::from(*n).log10());
    let lo = logs().fold(f64::INFINITY, f64::min).floor();
    let hi = logs().fold(f64::NEG_INFINITY, f64::max).ceil();
    let chart = svg::LineChart {
        title: "gradient norm of each layer's weights at initialisation",
        x_label: "layer (1 = nearest the input)",
        y_label: "‖dL/dW‖ (log scale)",
        x_range: (0.5, DEPTH as f64 + 0.5),
        y_range: (lo, hi),
        x_ticks: (1..=DEPTH).map(|l| (l as f64, l.to_string())).collect(),
        y_ticks: (lo as i32..=hi as i32).map(|e| (f64::from(e), format!("1e{e}"))).collect(),
    };
    let series: Vec<svg::Series> = rows
        .iter()
        .zip(["#d62728", "#1f77b4", "#2ca02c"])
        .map(|((name, norms), colour)| svg::Series {
            name,
            colour,
            points: norms.iter().enumerate().map(|(i, n)| (i as f64 + 1.0, f64::from(*n).log10())).collect(),
            dashed: false,
        })
        .collect();
    chart.draw(&series, (800, 480))
}

/// The three networks' norms, first layer to last.
pub fn all_norms() -> Vec<(&'static str, Vec<f32>)> {
    networks().into_iter().map(|(name, mut m)| (name, layer_gradient_norms(&mut m))).collect()
}

fn run() -> Result<()> {
    let arg = std::env::args().nth(1);
    if arg.as_deref().is_some_and(|a| a.starts_with('-')) {
        println!(
            "usage: vanishing_gradients [OUT_FOLDER]   (default target): prints the gradient norms, writes the plot"
        );
        return Ok(());
    }
    let out = PathBuf::from(arg.unwrap_or_else(|| "target".into()));
    std::fs::create_dir_all(&out).map_err(|e| Error::io(&out, e))?;
    let rows = all_norms();
    println!("‖dL/dW‖ per layer, 1 = nearest the input ({DEPTH} dense layers of {WIDTH} units, batch 256):");
    print!("{:<22}", "layer");
    (1..=DEPTH).for_each(|l| print!("{l:>9}"));
    println!("   first/last");
    for (name, norms) in &rows {
        print!("{name:<22}");
        norms.iter().for_each(|n| print!("{n:>9.2e}"));
        println!("   {:.1e}", norms[0] / norms[DEPTH - 1]);
    }
    let path = out.join("vanishing_gradients.svg");
    std::fs::write(&path, chart_svg(&rows)).map_err(|e| Error::io(&path, e))?;
    println!("wrote {}", path.display());
    Ok(())
}

/// Runs the example; an error is printed as its message (not Rust's debug form) and exits 1.
fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
