//! Vanishing gradients, shown: the gradient norm of every layer of a deep network at
//! initialisation, for sigmoid, for ReLU, and for sigmoid with batch norm after each dense layer
//! (docs/backprop.md §3 and §8). Prints a table and draws `vanishing_gradients.png`.
//!
//! Run: `cargo run --release --example vanishing_gradients [-- OUT_DIR]` (default `target/`)

#[path = "common/png.rs"]
mod png;

use backprop::layers::named_params;
use backprop::prelude::*;
use plotters::prelude::*;
use png::{draw_err, register_font, write_png};
use std::path::{Path, PathBuf};

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

fn plot(rows: &[(&str, Vec<f32>)], path: &Path) -> Result<()> {
    register_font();
    let (w, h) = (800u32, 480u32);
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| draw_err(path, e))?;
        let lo = rows.iter().flat_map(|r| r.1.iter()).fold(f32::INFINITY, |a, &b| a.min(b)).log10().floor();
        let hi =
            rows.iter().flat_map(|r| r.1.iter()).fold(f32::NEG_INFINITY, |a, &b| a.max(b)).log10().ceil();
        let mut chart = ChartBuilder::on(&root)
            .caption("gradient norm of each layer's weights at initialisation", ("sans-serif", 20))
            .margin(14)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0.5f32..DEPTH as f32 + 0.5, lo..hi)
            .map_err(|e| draw_err(path, e))?;
        chart
            .configure_mesh()
            .x_desc("layer (1 = nearest the input)")
            .y_desc("‖dL/dW‖ (log scale)")
            .label_style(("sans-serif", 13))
            .x_labels(DEPTH)
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| format!("1e{v:.0}"))
            .draw()
            .map_err(|e| draw_err(path, e))?;
        for ((name, norms), color) in rows.iter().zip([RED, BLUE, GREEN]) {
            let points: Vec<(f32, f32)> =
                norms.iter().enumerate().map(|(i, n)| (i as f32 + 1.0, n.log10())).collect();
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
                .map_err(|e| draw_err(path, e))?
                .label(*name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
            chart
                .draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(|e| draw_err(path, e))?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .position(SeriesLabelPosition::LowerRight)
            .draw()
            .map_err(|e| draw_err(path, e))?;
        root.present().map_err(|e| draw_err(path, e))?;
    }
    write_png(path, buf, (w, h))
}

fn main() -> Result<()> {
    let out = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "target".into()));
    std::fs::create_dir_all(&out).map_err(|e| Error::io(&out, e))?;
    let rows: Vec<(&str, Vec<f32>)> =
        networks().into_iter().map(|(name, mut m)| (name, layer_gradient_norms(&mut m))).collect();
    println!("‖dL/dW‖ per layer, 1 = nearest the input ({DEPTH} dense layers of {WIDTH} units, batch 256):");
    print!("{:<22}", "layer");
    (1..=DEPTH).for_each(|l| print!("{l:>9}"));
    println!("   first/last");
    for (name, norms) in &rows {
        print!("{name:<22}");
        norms.iter().for_each(|n| print!("{n:>9.2e}"));
        println!("   {:.1e}", norms[0] / norms[DEPTH - 1]);
    }
    let path = out.join("vanishing_gradients.png");
    plot(&rows, &path)?;
    println!("wrote {}", path.display());
    Ok(())
}
