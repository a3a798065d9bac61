//! A picture of the backward pass: the single neuron of docs/backprop.md §1, recorded on the
//! scalar tape of `examples/scalar_autograd.rs`, drawn as a graph — every box a value with its
//! gradient, every arrow an operation's input. Writes `backprop_graph.png`.
//!
//! Run: `cargo run --release --example draw_graph [-- OUT_DIR]` (default `target/`)

#[path = "common/png.rs"]
mod png;
#[allow(dead_code)]
#[path = "scalar_autograd.rs"]
mod scalar_autograd;

use backprop::prelude::*;
use plotters::prelude::*;
use png::{draw_err, register_font, write_png};
use scalar_autograd::Tape;
use std::path::PathBuf;

/// The neuron `L = (σ(w₁x₁ + w₂x₂ + b) − t)²` on the tape, with the names of its leaves.
pub fn neuron() -> (Tape, usize, Vec<(usize, &'static str)>) {
    let mut t = Tape::default();
    let (x1, w1, x2, w2, b, target) =
        (t.leaf(1.0), t.leaf(0.5), t.leaf(0.5), t.leaf(-0.3), t.leaf(0.1), t.leaf(1.0));
    let p1 = t.mul(w1, x1);
    let p2 = t.mul(w2, x2);
    let s = t.add(p1, p2);
    let z = t.add(s, b);
    let h = t.sigmoid(z);
    let d = t.sub(h, target);
    let loss = t.square(d);
    t.backward(loss);
    let names = vec![(x1, "x₁"), (w1, "w₁"), (x2, "x₂"), (w2, "w₂"), (b, "b"), (target, "t")];
    (t, loss, names)
}

fn main() -> Result<()> {
    let out = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "target".into()));
    std::fs::create_dir_all(&out).map_err(|e| Error::io(&out, e))?;
    let path = out.join("backprop_graph.png");
    let (t, loss, names) = neuron();
    // Columns by depth (leaves at 0, each operation one right of its deepest input).
    let n = loss + 1;
    let mut depth = vec![0usize; n];
    for i in 0..n {
        depth[i] = t.node(i).1.iter().map(|&a| depth[a] + 1).max().unwrap_or(0);
    }
    let mut row_in_col = vec![0usize; n];
    let mut count = vec![0usize; depth.iter().max().unwrap() + 1];
    for i in 0..n {
        row_in_col[i] = count[depth[i]];
        count[depth[i]] += 1;
    }
    let (w, h) = (1080u32, 560u32);
    let (col_w, row_h) = (150i32, 72i32);
    let pos = |i: usize| (30 + depth[i] as i32 * col_w, 40 + row_in_col[i] as i32 * row_h);
    register_font();
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| draw_err(&path, e))?;
        let (bw, bh) = (118, 50);
        for i in 0..n {
            let (x, y) = pos(i);
            for &a in &t.node(i).1 {
                let (ax, ay) = pos(a);
                let line = PathElement::new(
                    vec![(ax + bw, ay + bh / 2), (x, y + bh / 2)],
                    BLACK.mix(0.5).stroke_width(2),
                );
                root.draw(&line).map_err(|e| draw_err(&path, e))?;
            }
        }
        for i in 0..n {
            let (x, y) = pos(i);
            let (op, _) = t.node(i);
            let name = names.iter().find(|(k, _)| *k == i).map(|(_, s)| *s);
            let label = match (name, op) {
                (Some(s), _) => s.to_string(),
                (None, "") => "const".to_string(),
                (None, op) => op.to_string(),
            };
            let fill = if i == loss {
                RGBColor(255, 230, 200)
            } else if op.is_empty() {
                RGBColor(225, 238, 255)
            } else {
                RGBColor(240, 240, 240)
            };
            root.draw(&Rectangle::new([(x, y), (x + bw, y + bh)], fill.filled()))
                .map_err(|e| draw_err(&path, e))?;
            root.draw(&Rectangle::new([(x, y), (x + bw, y + bh)], BLACK.stroke_width(1)))
                .map_err(|e| draw_err(&path, e))?;
            let style = ("sans-serif", 14).into_font();
            root.draw(&Text::new(label, (x + 6, y + 4), style.clone())).map_err(|e| draw_err(&path, e))?;
            root.draw(&Text::new(format!("value {:+.4}", t.value[i]), (x + 6, y + 18), style.clone()))
                .map_err(|e| draw_err(&path, e))?;
            let grad = ("sans-serif", 14).into_font().color(&RED);
            root.draw(&Text::new(format!("grad  {:+.4}", t.grad[i]), (x + 6, y + 32), grad))
                .map_err(|e| draw_err(&path, e))?;
        }
        let note = "values flow left to right (forward); gradients dL/d(value), in red, flow right to left (backward)";
        root.draw(&Text::new(note, (30, h as i32 - 30), ("sans-serif", 16).into_font()))
            .map_err(|e| draw_err(&path, e))?;
        root.present().map_err(|e| draw_err(&path, e))?;
    }
    write_png(&path, buf, (w, h))?;
    println!("wrote {} ({n} values; L = {:.4})", path.display(), t.value[loss]);
    Ok(())
}
