//! A backprop explorer in the browser: one self-contained HTML page (no server, no CDN, no build
//! step; it works offline) that steps a small network forward and backward on a 2-D toy problem.
//! Every number on the page was computed by this crate: the example trains the network, records
//! each step — weights, their gradients, one probe sample's values and gradients at every node, the
//! loss, the decision boundary on a grid — and writes them into the page as JSON; the page's
//! script only draws them.
//!
//! ```text
//! cargo run --release --example explorer                      # writes target/explorer/index.html
//! cargo run --release --example explorer -- --screenshot F    # and a screenshot at step 60 (needs chromium)
//! ```
//!
//! The network: 2 inputs → 4 tanh units → 1 logit, binary cross-entropy, Adam, full batches of 48
//! points labelled by quadrant (`x·y > 0`: XOR in two dimensions). `tests/explorer.rs` opens the page
//! in headless Chromium and checks it loads without errors and shows the crate's numbers.

use backprop::layers::{Dense, InputGrad, Layer, Pass, Tanh, zero_grad};
use backprop::loss::{BceWithLogitsLoss, Loss};
use backprop::prelude::*;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// The network, as three layers kept apart so that every intermediate value can be recorded.
pub struct Net {
    /// Inputs → hidden pre-activations.
    pub hidden: Dense,
    /// The hidden activation.
    pub tanh: Tanh,
    /// Hidden → the logit.
    pub out: Dense,
}

backprop::visit_fields!(Net { hidden, out });

/// Points per batch, hidden units, recorded steps, grid side.
pub const POINTS: usize = 48;
const HIDDEN: usize = 4;
/// Training steps recorded on the page.
pub const STEPS: usize = 80;
const GRID: usize = 25;

/// The toy problem: `POINTS` seeded points in `[−1, 1]²`, label 1 where `x·y > 0`.
pub fn data() -> (Tensor, Tensor) {
    let x = Tensor::rand_uniform(&[POINTS, 2], -1.0, 1.0, 11);
    let y = x.data().chunks(2).map(|p| f32::from(p[0] * p[1] > 0.0)).collect();
    (x, Tensor::from_vec(&[POINTS, 1], y).expect("[POINTS, 1]"))
}

fn row(t: &Tensor, r: usize) -> Vec<f32> {
    let w = t.len() / t.dim(0);
    t.data()[r * w..][..w].to_vec()
}

/// Trains for `STEPS` steps and returns the page's data: one JSON object per step.
pub fn record() -> Value {
    let (x, y) = data();
    let mut net = Net {
        hidden: Dense::new(2, HIDDEN).init(backprop::tensor::init::Init::GlorotUniform).seed(3),
        tanh: Tanh::new(),
        out: Dense::new(HIDDEN, 1).init(backprop::tensor::init::Init::GlorotUniform).seed(4),
    };
    let (loss, mut adam) = (BceWithLogitsLoss::new(), Adam::new(0.05));
    let grid_points: Vec<f32> = (0..GRID * GRID)
        .flat_map(|k| {
            let at = |i: usize| -1.5 + 3.0 * i as f32 / (GRID - 1) as f32;
            [at(k % GRID), at(GRID - 1 - k / GRID)] // row-major from the top left
        })
        .collect();
    let grid_x = Tensor::from_vec(&[GRID * GRID, 2], grid_points).expect("the grid");
    let mut steps = Vec::new();
    for _ in 0..STEPS {
        // The decision boundary before the step (eval mode).
        let z = net
            .out
            .forward(&net.tanh.forward(&net.hidden.forward(&grid_x, Pass::EVAL), Pass::EVAL), Pass::EVAL);
        let grid: Vec<f32> = z.data().iter().map(|&v| 1.0 / (1.0 + (-v).exp())).collect();
        // Forward and backward on the batch, every intermediate kept.
        let z1 = net.hidden.forward(&x, Pass::TRAIN);
        let h = net.tanh.forward(&z1, Pass::TRAIN);
        let z2 = net.out.forward(&h, Pass::TRAIN);
        let (l, dz2) = loss.loss_and_grad(&z2, (&y).into()).expect("matching shapes");
        zero_grad(&mut net);
        let dh = net.out.backward(&dz2, InputGrad::Needed).expect("asked for");
        let dz1 = net.tanh.backward(&dh, InputGrad::Needed).expect("asked for");
        net.hidden.backward(&dz1, InputGrad::NotNeeded);
        let p = |t: &Param| (t.value.data().to_vec(), t.grad.data().to_vec());
        let (w1, dw1) = p(net.hidden.weight());
        let (b1, db1) = p(net.hidden.bias().expect("a bias"));
        let (w2, dw2) = p(net.out.weight());
        let (b2, db2) = p(net.out.bias().expect("a bias"));
        // The probe: sample 0, its values forward and its share of the batch gradient backward.
        let probe = json!({
            "x": row(&x, 0), "z1": row(&z1, 0), "h": row(&h, 0), "z2": row(&z2, 0),
            "dz2": row(&dz2, 0), "dh": row(&dh, 0), "dz1": row(&dz1, 0),
        });
        steps.push(json!({
            "loss": l, "w1": w1, "dw1": dw1, "b1": b1, "db1": db1, "w2": w2, "dw2": dw2, "b2": b2, "db2": db2,
            "probe": probe, "grid": grid,
        }));
        adam.step(&mut net);
    }
    json!({
        "points": x.data(), "labels": y.data(), "grid_side": GRID, "hidden": HIDDEN, "steps": steps,
        "about": "2 → 4 tanh → 1 logit, binary cross-entropy, Adam 0.05, full batches of 48 points (label: x·y > 0)",
    })
}

/// The page: the template with the recorded data in place.
pub fn page(data: &Value) -> String {
    include_str!("page.html").replace("/*DATA*/null", &data.to_string())
}

/// Writes the page to `path` (creating its folder).
pub fn write_page(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    std::fs::write(path, page(&record())).map_err(|e| Error::io(path, e))
}

/// The Chromium binary: `BACKPROP_CHROMIUM`, else Debian's `/usr/bin/chromium`, if present.
pub fn chromium() -> Option<PathBuf> {
    let candidates = std::env::var_os("BACKPROP_CHROMIUM").map(PathBuf::from).into_iter();
    candidates
        .chain(["/usr/bin/chromium", "/usr/bin/chromium-browser"].map(PathBuf::from))
        .find(|p| p.is_file())
}

/// Runs headless Chromium on `page` (opened at `#fragment` if not empty) with `args`
/// (`--dump-dom`, `--screenshot=…`); returns its standard output and error.
pub fn headless(
    browser: &Path,
    page: &Path,
    fragment: &str,
    args: &[&str],
) -> std::io::Result<(String, String)> {
    let mut url = format!("file://{}", page.canonicalize()?.display());
    if !fragment.is_empty() {
        url = format!("{url}#{fragment}");
    }
    let out = std::process::Command::new(browser)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0"])
        .args(["--virtual-time-budget=3000", "--window-size=1100,720"])
        .args(args)
        .arg(url)
        .output()?;
    Ok((String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned()))
}

fn run() -> Result<()> {
    let page_path = PathBuf::from("target/explorer/index.html");
    write_page(&page_path)?;
    println!("wrote {} — open it in a browser (it needs no server or network)", page_path.display());
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--screenshot") {
        let shot = args.get(i + 1).ok_or_else(|| Error::invalid("--screenshot needs a file name"))?;
        let browser = chromium().ok_or_else(|| {
            Error::invalid("no chromium found: apt-get install chromium, or set BACKPROP_CHROMIUM")
        })?;
        let shot = std::path::absolute(shot).map_err(|e| Error::io(shot, e))?;
        headless(&browser, &page_path, "step=60", &[&format!("--screenshot={}", shot.display())])
            .map_err(|e| Error::io(&browser, e))?;
        println!("wrote {}", shot.display());
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
