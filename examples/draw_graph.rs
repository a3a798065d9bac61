//! A picture of the backward pass: the single neuron of docs/backprop.md §1, recorded on the
//! scalar tape of `examples/scalar_autograd.rs`, drawn as a graph — every box a value with its
//! gradient, every circle a gate, every arrow an operation's input. Writes `backprop_graph.svg`.
//!
//! Run: `cargo run --release --example draw_graph [-- OUT_DIR]` (default `target/draw_graph/`;
//! the committed picture in `docs/img/` is redrawn by `cargo run --release --example pictures`,
//! and `tests/draw_graph.rs` checks that it is this program's output)

#[allow(dead_code)]
#[path = "scalar_autograd.rs"]
mod scalar_autograd;
#[path = "common/svg.rs"]
pub(crate) mod svg;

use backprop::prelude::*;
use scalar_autograd::Tape;
use std::fmt::Write;
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

/// The graph as SVG: a box per value (its value, and its gradient in red), a circle per operation
/// with arrows from its inputs, columns by depth and rows ordered so that wires do not cross.
pub fn graph_svg() -> String {
    let (t, loss, names) = neuron();
    let n = loss + 1;
    // Columns by depth (leaves at 0, each operation one right of its deepest input).
    let mut depth = vec![0usize; n];
    for i in 0..n {
        depth[i] = t.node(i).1.iter().map(|&a| depth[a] + 1).max().unwrap_or(0);
    }
    // Rows: each operation at the mean height of its inputs; leaves in the order the operations
    // read them, so that the wires run without crossing.
    let mut row = vec![f32::NAN; n];
    let mut next_leaf = 0.0f32;
    for i in 0..n {
        for &a in &t.node(i).1 {
            if t.node(a).1.is_empty() && row[a].is_nan() {
                row[a] = next_leaf;
                next_leaf += 1.0;
            }
        }
        let inputs = t.node(i).1;
        if !inputs.is_empty() {
            row[i] = inputs.iter().map(|&a| row[a]).sum::<f32>() / inputs.len() as f32;
        }
    }
    let (box_w, box_h, col_w, row_h) = (112.0f32, 40.0f32, 190.0f32, 64.0f32);
    let pos = |i: usize| (20.0 + depth[i] as f32 * col_w, 30.0 + row[i] * row_h);
    let mut b = String::new();
    for i in 0..n {
        let (op, inputs) = t.node(i);
        let (x, y) = pos(i);
        if !inputs.is_empty() {
            // The gate: a circle left of its value, fed by its inputs.
            let (cx, cy) = (x - 34.0, y + box_h / 2.0);
            for &a in &inputs {
                let (ax, ay) = pos(a);
                svg::arrow(&mut b, (ax + box_w, ay + box_h / 2.0), (cx - 14.0, cy), "#555");
            }
            let _ = writeln!(
                b,
                "<circle cx=\"{cx}\" cy=\"{cy}\" r=\"13\" fill=\"#fff7d6\" stroke=\"#333\"/>\
                 <text x=\"{cx}\" y=\"{cy}\" text-anchor=\"middle\" dominant-baseline=\"central\">{op}</text>"
            );
            svg::arrow(&mut b, (cx + 13.0, cy), (x, cy), "#555");
        }
        let name = names.iter().find(|(k, _)| *k == i).map(|(_, s)| s.to_string());
        let name = if i == loss {
            Some("L".to_string())
        } else {
            name.or(inputs.is_empty().then(|| "const".into()))
        };
        let fill = if i == loss {
            "#ffe6c8"
        } else if inputs.is_empty() {
            "#e1eeff"
        } else {
            "#f2f2f2"
        };
        let _ = writeln!(
            b,
            "<rect x=\"{x}\" y=\"{y}\" width=\"{box_w}\" height=\"{box_h}\" rx=\"5\" fill=\"{fill}\" stroke=\"#333\"/>\
             <text x=\"{}\" y=\"{}\">{:+.4}</text><text x=\"{}\" y=\"{}\" fill=\"#c0392b\">{:+.4}</text>",
            x + 8.0,
            y + 16.0,
            t.value[i],
            x + 8.0,
            y + 33.0,
            t.grad[i]
        );
        if let Some(name) = name {
            svg::label(&mut b, x + 2.0, y - 4.0, &name);
        }
    }
    let bottom = 30.0 + next_leaf * row_h;
    svg::label(
        &mut b,
        20.0,
        bottom + 10.0,
        "Forward, left to right: each box's value (black). Backward, right to left: dL/d(value) (red).",
    );
    svg::label(
        &mut b,
        20.0,
        bottom + 28.0,
        "Each circle is a gate applying its local rule; the subtraction of t is a × by −1 and a +.",
    );
    let width = 20.0 + (depth.iter().max().copied().unwrap_or(0) as f32) * col_w + box_w + 20.0;
    svg::svg(width.max(760.0) as u32, (bottom + 40.0) as u32, &b)
}

fn run() -> Result<()> {
    let default = PathBuf::from("target/draw_graph");
    let arg = std::env::args().nth(1);
    if arg.as_deref().is_some_and(|a| a.starts_with('-')) {
        println!(
            "usage: draw_graph [OUT_FOLDER]   (default target/draw_graph): writes the computation graph as SVG"
        );
        return Ok(());
    }
    let out = arg.map_or(default, PathBuf::from);
    std::fs::create_dir_all(&out).map_err(|e| Error::io(&out, e))?;
    let path = out.join("backprop_graph.svg");
    std::fs::write(&path, graph_svg()).map_err(|e| Error::io(&path, e))?;
    let (t, loss, _) = neuron();
    println!("wrote {} ({} values; L = {:.4})", path.display(), loss + 1, t.value[loss]);
    Ok(())
}

/// Runs the example; an error is printed as its message (not Rust's debug form) and exits 1.
fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
