//! The per-layer pictures of docs/backprop.md, drawn as SVG from numbers the crate computes:
//!
//! - `im2col_map.svg` (§6): which pixel of a 3×3 image fills each entry of `cols` for a 2×2 kernel,
//!   each output's window in its own colour — from [`im2col`];
//! - `maxpool_routing.svg` (§7): a 4×4 input, its 2×2 max pooling, and the gradient routed back to
//!   each window's winner — from `MaxPool2d`'s forward and backward passes;
//! - `residual_fork.svg` (§14): `y = x + f(x)` with its values forward and its gradients backward,
//!   the fork's two contributions summed — from `Residual`;
//! - `batchnorm_staged.svg` (§8) and `lstm_unrolled.svg` (§12): staged graphs with values forward
//!   and gradients backward, from the worked numbers;
//! - `vanishing_gradients.svg` (§8): each layer's gradient norm at initialisation for three deep
//!   networks — from `examples/vanishing_gradients.rs`;
//! - `privacy_curve.svg` (docs/privacy.md): accuracy against ε, from the guide's measured table;
//! - and §1's `backprop_graph.svg`, drawn by `examples/draw_graph.rs`.
//!
//! `cargo run --release --example pictures` rewrites every picture in `docs/img/` except the
//! explorer's screenshot (`cargo run --release --example explorer -- --screenshot
//! docs/img/explorer.png`, which needs Chromium); `tests/pictures.rs` checks that the committed
//! files are what this program draws, and their numbers.

use backprop::prelude::*;
use backprop::tensor::im2col::{ConvGeometry, im2col};
use std::fmt::Write;

// §1's neuron graph, drawn by its own example; written here too, so that one command redraws
// every SVG picture of the text.
#[allow(dead_code)]
#[path = "draw_graph.rs"]
mod draw_graph;

// §8's vanishing gradients, drawn from the three networks of its example.
// (It brings its own copy of common/svg.rs, as draw_graph does: each is also a program of its own.)
#[allow(dead_code, clippy::duplicate_mod)]
#[path = "vanishing_gradients.rs"]
pub(crate) mod vanishing_gradients;

use draw_graph::svg::{COLOURS, LineChart, Series, arrow, cell, label, svg};

/// §6: the 3×3 image `1 … 9`, a 2×2 kernel, stride 1; returns `cols` (rows: taps, columns:
/// outputs) and the picture.
pub fn im2col_map() -> (Vec<f32>, String) {
    let x: Vec<f32> = (1..=9).map(|v| v as f32).collect();
    let geometry = ConvGeometry::new((1, 3, 3), (2, 2), (1, 1), (0, 0), (1, 1)).expect("a valid geometry");
    let mut cols = vec![0.0; 16];
    im2col(&x, &geometry, &mut cols);
    let mut b = String::new();
    label(&mut b, 20.0, 24.0, "image x (3×3)");
    for (k, v) in x.iter().enumerate() {
        let (i, j) = (k / 3, k % 3);
        cell(&mut b, 20.0 + 40.0 * j as f32, 40.0 + 40.0 * i as f32, 40.0, "#ffffff", &format!("{v}"));
    }
    label(&mut b, 200.0, 24.0, "cols = im2col(x): a row per tap, a column per window");
    for tap in 0..4 {
        label(&mut b, 200.0, 62.0 + 36.0 * tap as f32, &format!("({},{})", tap / 2, tap % 2));
        for window in 0..4 {
            let v = cols[tap * 4 + window];
            cell(
                &mut b,
                250.0 + 36.0 * window as f32,
                40.0 + 36.0 * tap as f32,
                36.0,
                COLOURS[window],
                &format!("{v}"),
            );
        }
    }
    for window in 0..4 {
        label(&mut b, 258.0 + 36.0 * window as f32, 200.0, &format!("y{}{}", window / 2, window % 2));
    }
    arrow(&mut b, (145.0, 100.0), (190.0, 100.0), "#333");
    label(
        &mut b,
        20.0,
        235.0,
        "Column y_pq holds the window that output (p, q) reads; y = W·cols is one product for every",
    );
    label(&mut b, 20.0, 253.0, "window at once, and col2im adds each column back where it was read (§6).");
    (cols, svg(700, 270, &b))
}

/// §7: a 4×4 input, 2×2 max pooling; returns `(y, dx)` for `g = [1, 2, 3, 4]` and the picture.
pub fn maxpool_routing() -> ((Vec<f32>, Vec<f32>), String) {
    let x =
        Tensor::from_vec(&[1, 1, 4, 4], vec![1., 3., 2., 0., 4., 2., 1., 5., 0., 1., 3., 2., 2., 6., 1., 1.])
            .expect("[1, 1, 4, 4]");
    let mut pool = MaxPool2d::new(2);
    let y = pool.forward(&x, Pass::TRAIN);
    let g = Tensor::from_vec(&[1, 1, 2, 2], vec![1., 2., 3., 4.]).expect("[1, 1, 2, 2]");
    let dx = pool.backward(&g, InputGrad::Needed).expect("asked for");
    let window = |i: usize, j: usize| (i / 2) * 2 + j / 2;
    let mut b = String::new();
    let grid = |b: &mut String, left: f32, values: &[f32], winners: Option<&[f32]>, title: &str| {
        label(b, left, 24.0, title);
        for (k, v) in values.iter().enumerate() {
            let (i, j) = (k / 4, k % 4);
            let won = winners.is_some_and(|w| w[k] != 0.0);
            let fill = if won { "#ffcf5c" } else { COLOURS[window(i, j)] };
            cell(b, left + 36.0 * j as f32, 40.0 + 36.0 * i as f32, 36.0, fill, &format!("{v}"));
        }
    };
    grid(&mut b, 20.0, x.data(), Some(dx.data()), "x (winners gold)");
    // A 2×2 output grid, each cell in its window's colour.
    let windows = |b: &mut String, left: f32, values: &[f32], title: &str| {
        label(b, left, 24.0, title);
        for (k, v) in values.iter().enumerate() {
            let (x, y) = (left + 36.0 * (k % 2) as f32, 76.0 + 36.0 * (k / 2) as f32);
            cell(b, x, y, 36.0, COLOURS[k], &format!("{v}"));
        }
    };
    windows(&mut b, 225.0, y.data(), "y = max");
    windows(&mut b, 355.0, g.data(), "g = dL/dy");
    grid(&mut b, 500.0, dx.data(), Some(dx.data()), "dL/dx");
    arrow(&mut b, (175.0, 112.0), (218.0, 112.0), "#333");
    arrow(&mut b, (440.0, 112.0), (493.0, 112.0), "#b35c00");
    label(
        &mut b,
        20.0,
        205.0,
        "Each window's gradient goes to the position that won its max; the others get 0 (§7).",
    );
    ((y.data().to_vec(), dx.data().to_vec()), svg(680, 220, &b))
}

/// §14: `y = x + f(x)` with `f(x) = 0.5·x` (one `Dense`), `x = 2`, `dL/dy = 1`; returns
/// `(y, dx)` and the picture.
pub fn residual_fork() -> ((f32, f32), String) {
    let w = Tensor::from_vec(&[1, 1], vec![0.5]).expect("[1, 1]");
    let mut block = Residual::new(Sequential::new().add(Dense::new(1, 1).no_bias().with_weights(w, None)));
    let y = block.forward(&Tensor::from_vec(&[1, 1], vec![2.0]).expect("x"), Pass::TRAIN).data()[0];
    let dx = block
        .backward(&Tensor::from_vec(&[1, 1], vec![1.0]).expect("g"), InputGrad::Needed)
        .expect("dx")
        .data()[0];
    let mut b = String::new();
    let node = |b: &mut String, x: f32, y: f32, text: &str| {
        let _ = writeln!(
            b,
            "<rect x=\"{}\" y=\"{}\" width=\"150\" height=\"40\" rx=\"8\" fill=\"#f4f4f4\" stroke=\"#333\"/>\
             <text x=\"{x}\" y=\"{y}\" text-anchor=\"middle\" dominant-baseline=\"central\">{text}</text>",
            x - 75.0,
            y - 20.0
        );
    };
    node(&mut b, 100.0, 120.0, "x = 2");
    node(&mut b, 330.0, 60.0, "f(x) = 0.5·x = 1");
    node(&mut b, 560.0, 120.0, &format!("y = x + f(x) = {y}"));
    arrow(&mut b, (175.0, 110.0), (255.0, 70.0), "#333");
    arrow(&mut b, (405.0, 70.0), (485.0, 110.0), "#333");
    arrow(&mut b, (175.0, 125.0), (485.0, 125.0), "#333");
    label(&mut b, 265.0, 140.0, "identity path");
    // Backward, below: from dL/dy to dL/dx along both paths.
    node(&mut b, 560.0, 200.0, "dL/dy = 1");
    node(&mut b, 100.0, 200.0, &format!("dL/dx = {dx}"));
    arrow(&mut b, (485.0, 195.0), (175.0, 195.0), "#b35c00");
    arrow(&mut b, (485.0, 210.0), (405.0, 245.0), "#b35c00");
    arrow(&mut b, (255.0, 245.0), (175.0, 210.0), "#b35c00");
    label(&mut b, 250.0, 187.0, "identity: 1, unchanged");
    label(&mut b, 262.0, 262.0, "through f: f′ᵀ·dL/dy = 0.5");
    label(
        &mut b,
        20.0,
        300.0,
        &format!("dL/dx = 1 + 0.5 = {dx}: a value used twice gets the sum of its uses' gradients (§14)"),
    );
    ((y, dx), svg(700, 315, &b))
}

/// §8: batch norm as stages — `μ`, `d = x − μ`, `σ²`, `s = (σ² + ε)^(−1/2)`, `x̂ = d·s`,
/// `y = γx̂ + β` — for the worked numbers `x = [1, 2, 6]`, `γ = 2`, `β = 0.5`, `g = [1, 0, −1]`,
/// each stage's value forward and gradient backward (one vector–Jacobian product per stage, in
/// f64); returns `dL/dx` and the picture. The mean path and the variance path are the two extra
/// wires into `d` that a layer without them (the bug zoo's) forgets.
pub fn batchnorm_staged() -> (Vec<f64>, String) {
    let (x, gamma, beta, g, eps) = ([1.0f64, 2.0, 6.0], 2.0f64, 0.5f64, [1.0f64, 0.0, -1.0], 1e-5f64);
    let m = x.len() as f64;
    let mu = x.iter().sum::<f64>() / m;
    let d: Vec<f64> = x.iter().map(|v| v - mu).collect();
    let var = d.iter().map(|v| v * v).sum::<f64>() / m;
    let s = 1.0 / (var + eps).sqrt();
    let xh: Vec<f64> = d.iter().map(|v| v * s).collect();
    let y: Vec<f64> = xh.iter().map(|v| gamma * v + beta).collect();
    // Backward, stage by stage.
    let dxh: Vec<f64> = g.iter().map(|v| gamma * v).collect();
    let ds: f64 = dxh.iter().zip(&d).map(|(a, b)| a * b).sum();
    let dvar = -0.5 * s * s * s * ds;
    let dd: Vec<f64> = dxh.iter().zip(&d).map(|(a, di)| a * s + dvar * 2.0 * di / m).collect();
    let dmu = -dd.iter().sum::<f64>();
    let dx: Vec<f64> = dd.iter().map(|v| v + dmu / m).collect();
    let v = |xs: &[f64]| format!("[{}]", xs.iter().map(|x| format!("{x:.3}")).collect::<Vec<_>>().join(", "));
    let mut b = String::new();
    let node = |b: &mut String, (x, y): (f32, f32), name: &str, value: &str, grad: &str| {
        let _ = writeln!(
            b,
            "<rect x=\"{x}\" y=\"{y}\" width=\"190\" height=\"44\" rx=\"6\" fill=\"#f2f2f2\" stroke=\"#333\"/>\
             <text x=\"{}\" y=\"{}\">{value}</text><text x=\"{}\" y=\"{}\" fill=\"#c0392b\">{grad}</text>",
            x + 8.0,
            y + 17.0,
            x + 8.0,
            y + 35.0
        );
        label(b, x + 2.0, y - 5.0, name);
    };
    let at = [
        (20.0, 150.0),
        (250.0, 60.0),
        (250.0, 150.0),
        (480.0, 240.0),
        (710.0, 240.0),
        (710.0, 150.0),
        (940.0, 150.0),
    ];
    node(&mut b, at[0], "x", &v(&x), &v(&dx));
    node(&mut b, at[1], "μ = mean(x)", &format!("{mu:.3}"), &format!("{dmu:.3}"));
    node(&mut b, at[2], "d = x − μ", &v(&d), &v(&dd));
    node(&mut b, at[3], "σ² = mean(d²)", &format!("{var:.3}"), &format!("{dvar:.3}"));
    node(&mut b, at[4], "s = 1/√(σ² + ε)", &format!("{s:.6}"), &format!("{ds:.3}"));
    node(&mut b, at[5], "x̂ = d·s", &v(&xh), &v(&dxh));
    node(&mut b, at[6], "y = γx̂ + β", &v(&y), &v(&g));
    let right = |(x, y): (f32, f32)| (x + 190.0, y + 22.0);
    let left = |(x, y): (f32, f32)| (x, y + 22.0);
    arrow(&mut b, right(at[0]), left(at[2]), "#555"); // x → d
    arrow(&mut b, (210.0, 165.0), (250.0, 90.0), "#555"); // x → μ
    arrow(&mut b, (345.0, 104.0), (345.0, 150.0), "#555"); // μ → d (the mean path)
    arrow(&mut b, right(at[2]), left(at[5]), "#555"); // d → x̂
    arrow(&mut b, (440.0, 185.0), (480.0, 255.0), "#555"); // d → σ² (the variance path)
    arrow(&mut b, right(at[3]), left(at[4]), "#555"); // σ² → s
    arrow(&mut b, (805.0, 240.0), (805.0, 194.0), "#555"); // s → x̂
    arrow(&mut b, right(at[5]), left(at[6]), "#555"); // x̂ → y
    label(
        &mut b,
        20.0,
        330.0,
        "Batch norm over x = [1, 2, 6] as stages (γ = 2, β = 0.5): values forward (black), gradients for",
    );
    label(
        &mut b,
        20.0,
        348.0,
        "g = [1, 0, −1] backward (red). d feeds x̂ directly and through σ² and s, and x feeds d directly and",
    );
    label(
        &mut b,
        20.0,
        366.0,
        "through μ: each fork adds its paths' gradients. Here Σg = 0, so the mean path carries 0; for a g that does",
    );
    label(
        &mut b,
        20.0,
        384.0,
        "not sum to 0 it carries −Σ(dL/dd)/m to every input, and forgetting it is the bug zoo's third bug (§8, §11).",
    );
    (dx, svg(1150, 400, &b))
}

/// §12: the two numbered LSTM steps (one unit, weights `W_ih = [0.5, 1.0, 0.8, −0.3]`,
/// `W_hh = [0.2, −0.4, 0.6, 0.1]`, forget bias 1, `x = [1, 0.5]`, `L = h_1`), unrolled: each
/// step's gates, the cell and state wires with their values forward and gradients backward.
/// Returns `(h, dx)` and the picture (`h` and `dx` are what `Lstm` computes: tested).
pub fn lstm_unrolled() -> ((Vec<f64>, Vec<f64>), String) {
    let sig = |z: f64| 1.0 / (1.0 + (-z).exp());
    let (w_ih, w_hh, b) = ([0.5f64, 1.0, 0.8, -0.3], [0.2f64, -0.4, 0.6, 0.1], [0.0f64, 1.0, 0.0, 0.0]);
    let xs = [1.0f64, 0.5];
    // Forward: (i, f, c̃, o, c, h) per step.
    let (mut h, mut c) = (0.0f64, 0.0f64);
    let mut steps = Vec::new();
    for &x in &xs {
        let p: Vec<f64> = (0..4).map(|k| w_ih[k] * x + b[k] + w_hh[k] * h).collect();
        let (i, f, cc, o) = (sig(p[0]), sig(p[1]), p[2].tanh(), sig(p[3]));
        let c_new = f * c + i * cc;
        let h_new = o * c_new.tanh();
        steps.push((h, c, i, f, cc, o, c_new, h_new));
        (h, c) = (h_new, c_new);
    }
    // Backward from dL/dh_1 = 1: (dh into the step, dc into the step, dx) per step.
    let (mut dh, mut dc) = (1.0f64, 0.0f64);
    let mut back = [(0.0, 0.0, 0.0); 2];
    for t in (0..2).rev() {
        let (_, c_prev, i, f, cc, o, c_t, _) = steps[t];
        let (dh_in, dc_in) = (dh, dc);
        let d_o = dh * c_t.tanh();
        let dct = dc + dh * o * (1.0 - c_t.tanh().powi(2));
        let dp = [
            dct * cc * i * (1.0 - i),
            dct * c_prev * f * (1.0 - f),
            dct * i * (1.0 - cc * cc),
            d_o * o * (1.0 - o),
        ];
        let dx: f64 = (0..4).map(|k| dp[k] * w_ih[k]).sum();
        back[t] = (dh_in, dc_in, dx);
        dh = (0..4).map(|k| dp[k] * w_hh[k]).sum();
        dc = dct * f;
    }
    let mut bd = String::new();
    let box_at = |bd: &mut String, x: f32, t: usize| {
        let (_, _, i, f, cc, o, c_t, h_t) = steps[t];
        let _ = writeln!(
            bd,
            "<rect x=\"{x}\" y=\"70\" width=\"230\" height=\"150\" rx=\"8\" fill=\"#f7f7f7\" stroke=\"#333\"/>"
        );
        label(bd, x + 8.0, 92.0, &format!("step {t}: x_{t} = {}", xs[t]));
        label(bd, x + 8.0, 114.0, &format!("i = {i:.4}   f = {f:.4}"));
        label(bd, x + 8.0, 134.0, &format!("c̃ = {cc:.4}   o = {o:.4}"));
        label(bd, x + 8.0, 158.0, &format!("c_{t} = f·c + i·c̃ = {c_t:.4}"));
        label(bd, x + 8.0, 180.0, &format!("h_{t} = o·tanh(c_{t}) = {h_t:.4}"));
        let _ = writeln!(
            bd,
            "<text x=\"{}\" y=\"206\" fill=\"#c0392b\">dL/dx_{t} = {:.4}</text>",
            x + 8.0,
            back[t].2
        );
    };
    box_at(&mut bd, 150.0, 0);
    box_at(&mut bd, 520.0, 1);
    // The cell wire (top) and the state wire (bottom), with values and (red) gradients.
    let wire = |bd: &mut String, (x1, x2): (f32, f32), y: f32, value: &str, grad: &str| {
        arrow(bd, (x1, y), (x2, y), "#333");
        label(bd, x1 + 8.0, y - 8.0, value);
        let _ = writeln!(bd, "<text x=\"{}\" y=\"{}\" fill=\"#c0392b\">{grad}</text>", x1 + 8.0, y + 18.0);
    };
    wire(&mut bd, (20.0, 150.0), 95.0, "c₋₁ = 0", "");
    wire(&mut bd, (20.0, 150.0), 195.0, "h₋₁ = 0", "");
    wire(
        &mut bd,
        (380.0, 520.0),
        95.0,
        &format!("c_0 = {:.4}", steps[0].6),
        &format!("dc = {:.4}", back[0].1),
    );
    wire(
        &mut bd,
        (380.0, 520.0),
        195.0,
        &format!("h_0 = {:.4}", steps[0].7),
        &format!("dh = {:.4}", back[0].0),
    );
    wire(&mut bd, (750.0, 880.0), 195.0, &format!("h_1 = {:.4}", steps[1].7), "dL/dh_1 = 1");
    label(&mut bd, 885.0, 200.0, "L = h_1");
    label(
        &mut bd,
        20.0,
        260.0,
        "Values forward (black), gradients backward (red): step 1 hands step 0 dL/dc_0 along the cell wire (one",
    );
    label(
        &mut bd,
        20.0,
        278.0,
        "multiplication by f, no weight matrix) and dL/dh_0 along the state wire (through W_hh and the gates) (§12).",
    );
    let h_out = steps.iter().map(|s| s.7).collect();
    let dx_out = back.iter().map(|b| b.2).collect();
    ((h_out, dx_out), svg(1000, 295, &bd))
}

/// docs/privacy.md's table: test accuracy (%) of the walkthrough's CNN at each privacy budget ε
/// (10 epochs, δ = 1e-5, C = 1, seed 1), and without privacy. Measured by
/// `cargo run --release --example image_classify -- --dp-epsilon E` (about 30 s a run); the test
/// of this picture checks that these are the figures the guide prints.
pub const PRIVACY_RUNS: [(f64, f64); 6] =
    [(0.5, 84.45), (1.0, 89.70), (2.0, 91.20), (3.0, 92.35), (4.0, 92.75), (8.0, 93.40)];
/// The same network, trained without privacy.
pub const NOT_PRIVATE: f64 = 98.35;

/// docs/privacy.md: accuracy against ε (log scale), the non-private run dashed.
pub fn privacy_curve() -> String {
    let (lo, hi) = (PRIVACY_RUNS[0].0.log10() - 0.1, PRIVACY_RUNS[5].0.log10() + 0.1);
    let chart = LineChart {
        title: "Bundled digits, 10 epochs: test accuracy against ε",
        x_label: "privacy budget ε (log scale; smaller is more private)",
        y_label: "test accuracy (%)",
        x_range: (lo, hi),
        y_range: (80.0, 100.0),
        x_ticks: PRIVACY_RUNS.iter().map(|(e, _)| (e.log10(), format!("{e}"))).collect(),
        y_ticks: (0..=4).map(|k| (80.0 + 5.0 * k as f64, format!("{}", 80 + 5 * k))).collect(),
    };
    let series = [
        Series {
            name: "DP-SGD (δ = 1e-5, C = 1)",
            colour: "#d62728",
            points: PRIVACY_RUNS.iter().map(|(e, a)| (e.log10(), *a)).collect(),
            dashed: false,
        },
        Series {
            name: &format!("not private ({NOT_PRIVATE:.2} %)"),
            colour: "#1f77b4",
            points: vec![(lo, NOT_PRIVATE), (hi, NOT_PRIVATE)],
            dashed: true,
        },
    ];
    chart.draw(&series, (720, 440))
}

fn run() -> Result<()> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/img");
    for (name, picture) in [
        ("backprop_graph.svg", draw_graph::graph_svg()),
        ("im2col_map.svg", im2col_map().1),
        ("maxpool_routing.svg", maxpool_routing().1),
        ("residual_fork.svg", residual_fork().1),
        ("batchnorm_staged.svg", batchnorm_staged().1),
        ("lstm_unrolled.svg", lstm_unrolled().1),
        ("vanishing_gradients.svg", vanishing_gradients::chart_svg(&vanishing_gradients::all_norms())),
        ("privacy_curve.svg", privacy_curve()),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, picture).map_err(|e| Error::io(&path, e))?;
        println!("wrote {}", path.display());
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
