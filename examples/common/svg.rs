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

/// One line of a [`LineChart`]: its legend, colour, points `(x, y)` in data units, and whether it
/// is dashed.
pub struct Series<'a> {
    pub name: &'a str,
    pub colour: &'a str,
    pub points: Vec<(f64, f64)>,
    pub dashed: bool,
}

/// A line chart: axes with the given ticks (value, label), lines with a dot at each point, a
/// legend in the lower right. An axis can be logarithmic (data and ticks are then given as
/// log10 of the value). Coordinates are printed to 0.1 px, so the file is plain, stable text.
pub struct LineChart<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub x_range: (f64, f64),
    pub y_range: (f64, f64),
    pub x_ticks: Vec<(f64, String)>,
    pub y_ticks: Vec<(f64, String)>,
}

impl LineChart<'_> {
    /// The chart as an SVG document of `width × height`.
    pub fn draw(&self, series: &[Series], (width, height): (u32, u32)) -> String {
        let (left, right, top, bottom) = (80.0, width as f64 - 20.0, 44.0, height as f64 - 56.0);
        let px = |x: f64| left + (x - self.x_range.0) / (self.x_range.1 - self.x_range.0) * (right - left);
        let py = |y: f64| bottom - (y - self.y_range.0) / (self.y_range.1 - self.y_range.0) * (bottom - top);
        let mut b = String::new();
        let _ = writeln!(
            b,
            "<text x=\"{:.1}\" y=\"24\" text-anchor=\"middle\" font-size=\"15\">{}</text>",
            (left + right) / 2.0,
            self.title
        );
        for (x, text) in &self.x_ticks {
            let _ = writeln!(
                b,
                "<line x1=\"{0:.1}\" y1=\"{top:.1}\" x2=\"{0:.1}\" y2=\"{bottom:.1}\" stroke=\"#e4e4e4\"/>\
                 <text x=\"{0:.1}\" y=\"{1:.1}\" text-anchor=\"middle\">{text}</text>",
                px(*x),
                bottom + 18.0
            );
        }
        for (y, text) in &self.y_ticks {
            let _ = writeln!(
                b,
                "<line x1=\"{left:.1}\" y1=\"{0:.1}\" x2=\"{right:.1}\" y2=\"{0:.1}\" stroke=\"#e4e4e4\"/>\
                 <text x=\"{1:.1}\" y=\"{0:.1}\" text-anchor=\"end\" dominant-baseline=\"central\">{text}</text>",
                py(*y),
                left - 6.0
            );
        }
        let _ = writeln!(
            b,
            "<rect x=\"{left:.1}\" y=\"{top:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"none\" stroke=\"#333\"/>",
            right - left,
            bottom - top
        );
        let _ = writeln!(
            b,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            (left + right) / 2.0,
            bottom + 42.0,
            self.x_label
        );
        let _ = writeln!(
            b,
            "<text transform=\"translate(18 {:.1}) rotate(-90)\" text-anchor=\"middle\">{}</text>",
            (top + bottom) / 2.0,
            self.y_label
        );
        for s in series {
            let path: Vec<String> =
                s.points.iter().map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y))).collect();
            let dash = if s.dashed { " stroke-dasharray=\"6 4\"" } else { "" };
            let _ = writeln!(
                b,
                "<polyline points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\"{dash}/>",
                path.join(" "),
                s.colour
            );
            if !s.dashed {
                for &(x, y) in &s.points {
                    let _ = writeln!(
                        b,
                        "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3.5\" fill=\"{}\"/>",
                        px(x),
                        py(y),
                        s.colour
                    );
                }
            }
        }
        // The legend, bottom right, one row per series, over a white box.
        let (lx, legend_top) = (right - 260.0, bottom - 26.0 - 20.0 * (series.len() - 1) as f64);
        let _ = writeln!(
            b,
            "<rect x=\"{lx:.1}\" y=\"{legend_top:.1}\" width=\"250\" height=\"{:.1}\" fill=\"white\" stroke=\"#999\"/>",
            bottom - 4.0 - legend_top
        );
        for (k, s) in series.iter().enumerate() {
            let ly = legend_top + 11.0 + 20.0 * k as f64;
            let dash = if s.dashed { " stroke-dasharray=\"6 4\"" } else { "" };
            let _ = writeln!(
                b,
                "<line x1=\"{:.1}\" y1=\"{ly:.1}\" x2=\"{:.1}\" y2=\"{ly:.1}\" stroke=\"{}\" stroke-width=\"2\"{dash}/>\
                 <text x=\"{:.1}\" y=\"{ly:.1}\" dominant-baseline=\"central\">{}</text>",
                lx + 8.0,
                lx + 32.0,
                s.colour,
                lx + 38.0,
                s.name
            );
        }
        svg(width, height, &b)
    }
}
