//! SVG drawing for the pictures of the docs (`examples/pictures.rs`, `examples/draw_graph.rs`):
//! a document with an arrowhead marker, cells, labels and arrows — plain text, so that a picture's
//! file is reproducible byte for byte and its numbers can be checked.

#![allow(dead_code)] // each example uses part of it

use std::fmt::Write;

/// Distinct fills for up to four windows.
pub const COLOURS: [&str; 4] = ["#cfe0ff", "#ffd9c7", "#d4f2d0", "#f1d6f5"];

/// An SVG document of the given size, with an arrowhead marker, around `body`.
pub fn svg(width: u32, height: u32, body: &str) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" \
         font-family=\"monospace\" font-size=\"13\">\n<defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" \
         markerWidth=\"7\" markerHeight=\"7\" orient=\"auto-start-reverse\"><path d=\"M0,0 L10,5 L0,10 z\" fill=\"#333\"/>\
         </marker></defs>\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n{body}</svg>\n"
    )
}

/// A labelled cell.
pub fn cell(out: &mut String, x: f32, y: f32, size: f32, fill: &str, text: &str) {
    let _ = writeln!(
        out,
        "<rect x=\"{x}\" y=\"{y}\" width=\"{size}\" height=\"{size}\" fill=\"{fill}\" stroke=\"#555\"/>\
         <text x=\"{}\" y=\"{}\" text-anchor=\"middle\" dominant-baseline=\"central\">{text}</text>",
        x + size / 2.0,
        y + size / 2.0
    );
}

pub fn label(out: &mut String, x: f32, y: f32, text: &str) {
    let _ = writeln!(out, "<text x=\"{x}\" y=\"{y}\" fill=\"#333\">{text}</text>");
}

pub fn arrow(out: &mut String, (x1, y1): (f32, f32), (x2, y2): (f32, f32), colour: &str) {
    let _ = writeln!(
        out,
        "<line x1=\"{x1}\" y1=\"{y1}\" x2=\"{x2}\" y2=\"{y2}\" stroke=\"{colour}\" stroke-width=\"1.5\" marker-end=\"url(#arrow)\"/>"
    );
}
