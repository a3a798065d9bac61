//! PNG output of the walkthrough: training curves, and misclassified test images beside their
//! saliency maps. Drawn with plotters into an RGB buffer (text in DejaVu Sans, embedded, so no
//! system font library is needed) and encoded with the `image` crate.

use crate::pipeline::Prepared;
use backprop::prelude::*;
#[path = "../common/png.rs"]
mod png;

use plotters::prelude::*;
use png::{draw_err, register_font, write_png};
use std::path::Path;

/// Two panels: loss per epoch (train, test) and accuracy per epoch (train, test).
pub fn training_curves(history: &History, path: &Path) -> Result<()> {
    register_font();
    let (w, h) = (1000u32, 420u32);
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| draw_err(path, e))?;
        let (left, right) = root.split_horizontally(w / 2);
        let epochs = history.epochs.len().max(1) as f32;
        let series = |f: &dyn Fn(&backprop::train::EpochStats) -> Option<f32>| -> Vec<(f32, f32)> {
            history.epochs.iter().filter_map(|e| f(e).map(|v| (e.epoch as f32, v))).collect()
        };
        let panels = [
            // (A private run records no training loss: NaN, left out.)
            (
                &left,
                "loss",
                [series(&|e| Some(e.train_loss).filter(|l| l.is_finite())), series(&|e| e.val_loss)],
                false,
            ),
            (
                &right,
                "accuracy (%)",
                [
                    series(&|e| e.train_accuracy.map(|a| 100.0 * a)),
                    series(&|e| e.val_accuracy.map(|a| 100.0 * a)),
                ],
                true,
            ),
        ];
        for (area, title, [train, test], is_acc) in panels {
            let all: Vec<f32> = train.iter().chain(&test).map(|p| p.1).collect();
            let (lo, hi) =
                all.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
            let (lo, hi) = if all.is_empty() {
                (0.0, 1.0)
            } else if is_acc {
                (lo.min(hi - 1.0).max(0.0), 100.0)
            } else {
                (0.0, hi * 1.1 + 1e-6)
            };
            let mut chart = ChartBuilder::on(area)
                .caption(format!("{title} per epoch"), ("sans-serif", 20))
                .margin(12)
                .x_label_area_size(36)
                .y_label_area_size(52)
                .build_cartesian_2d(0.5f32..epochs + 0.5, lo..hi)
                .map_err(|e| draw_err(path, e))?;
            chart
                .configure_mesh()
                .x_desc("epoch")
                .label_style(("sans-serif", 13))
                .x_labels(history.epochs.len().clamp(2, 12))
                .x_label_formatter(&|v| format!("{v:.0}"))
                .draw()
                .map_err(|e| draw_err(path, e))?;
            for (points, color, name) in [(train, BLUE, "train"), (test, RED, "test")] {
                chart
                    .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
                    .map_err(|e| draw_err(path, e))?
                    .label(name)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
                chart
                    .draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))
                    .map_err(|e| draw_err(path, e))?;
            }
            chart
                .configure_series_labels()
                .label_font(("sans-serif", 14))
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .position(if is_acc {
                    SeriesLabelPosition::LowerRight
                } else {
                    SeriesLabelPosition::UpperRight
                })
                .draw()
                .map_err(|e| draw_err(path, e))?;
        }
        root.present().map_err(|e| draw_err(path, e))?;
    }
    write_png(path, buf, (w, h))
}

/// A diverging colour map for `v ∈ [−1, 1]`: blue for negative, white for 0, red for positive.
fn diverging(v: f32) -> [u8; 3] {
    let a = (v.abs().clamp(0.0, 1.0).sqrt() * 255.0) as u8; // √ to make faint values visible
    if v >= 0.0 { [255, 255 - a, 255 - a] } else { [255 - a, 255 - a, 255] }
}

/// SmoothGrad: the gradient of each image's score for its class, averaged over 24 copies of the
/// image with Gaussian noise added (σ = 0.3 in normalised units). A raw gradient is itself a
/// correct saliency map, but it is speckled by the network's sharp local wiggles; averaging over
/// nearby inputs keeps what is systematic.
fn smooth_gradient(model: &mut Sequential, x: &Tensor, classes: &[usize], batch: usize) -> Result<Tensor> {
    const COPIES: usize = 24;
    let n = x.dim(0);
    let idx: Vec<usize> = (0..n).flat_map(|i| std::iter::repeat_n(i, COPIES)).collect();
    let mut noisy = x.select_outer(&idx);
    noisy += &Tensor::randn(noisy.shape(), 0.0, 0.3, 7);
    let mut mean = Tensor::zeros(x.shape());
    // One image's copies at a time, in passes of at most `batch` (all twelve images' at once had
    // been a batch of 288, past the batch the walkthrough checks against its memory limit).
    let per_pass = batch.clamp(1, COPIES);
    for (i, &class) in classes.iter().enumerate().take(n) {
        let out = mean.outer_mut(i);
        for start in (i * COPIES..(i + 1) * COPIES).step_by(per_pass) {
            let copies: Vec<usize> = (start..(start + per_pass).min((i + 1) * COPIES)).collect();
            let g = model.input_gradient(&noisy.select_outer(&copies), &vec![class; copies.len()])?;
            for copy in g.data().chunks(out.len()) {
                out.iter_mut().zip(copy).for_each(|(m, v)| *m += v / COPIES as f32);
            }
        }
    }
    Ok(mean)
}

/// Up to 12 misclassified test images, each beside its saliency map: the gradient of the predicted
/// class's score with respect to every input pixel (`Sequential::input_gradient`), signed (red
/// where a brighter pixel would raise the score, blue where it would lower it), strongest where a
/// change of the pixel would change the decision most. Returns how many were drawn.
/// `batch` is the most images a pass may take (the walkthrough's checked evaluation batch).
pub fn mistakes_with_saliency(
    model: &mut Sequential,
    data: &Prepared,
    predicted: &[usize],
    path: &Path,
    batch: usize,
) -> Result<usize> {
    register_font();
    let labels = data.test.labels().expect("classification");
    let wrong: Vec<usize> = (0..labels.len()).filter(|&i| predicted[i] != labels[i]).take(12).collect();
    let [_, ih, iw] = data.test.sample_shape() else { unreachable!("images are [C, H, W]") };
    let (ih, iw) = (*ih, *iw);
    let scale = 4usize;
    let (cell_w, cell_h) = (2 * iw * scale + 24, ih * scale + 30);
    let cols = 4usize;
    let rows = wrong.len().div_ceil(cols).max(1);
    let (w, h) = ((cols * cell_w) as u32, (rows * cell_h + 40) as u32);
    let mut buf = vec![255u8; (w * h * 3) as usize];

    let x = data.test.inputs().select_outer(&wrong);
    let grads = if wrong.is_empty() {
        Tensor::zeros(&[0])
    } else {
        smooth_gradient(model, &x, &wrong.iter().map(|&i| predicted[i]).collect::<Vec<_>>(), batch)?
    };
    let probs =
        if wrong.is_empty() { Tensor::zeros(&[0]) } else { model.predict_proba(&x, batch.clamp(1, 64))? };
    let mut put = |px: usize, py: usize, rgb: [u8; 3]| {
        let o = (py * w as usize + px) * 3;
        buf[o..o + 3].copy_from_slice(&rgb);
    };
    for (k, _) in wrong.iter().enumerate() {
        let (ox, oy) = ((k % cols) * cell_w + 8, (k / cols) * cell_h + 40);
        let img = x.outer(k);
        let (lo, hi) = img.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
        let sal = grads.outer(k);
        let smax = sal.iter().fold(1e-12f32, |a, &b| a.max(b.abs()));
        for y in 0..ih * scale {
            for xx in 0..iw * scale {
                let p = (y / scale) * iw + xx / scale;
                let g = ((img[p] - lo) / (hi - lo + 1e-12) * 255.0) as u8;
                put(ox + xx, oy + y, [g, g, g]);
                put(ox + iw * scale + 6 + xx, oy + y, diverging(sal[p] / smax));
            }
        }
    }
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        let title = if wrong.is_empty() {
            "no misclassified test images".to_string()
        } else {
            "misclassified test images, each with the gradient of the predicted class's score w.r.t. its pixels (red: more ink raises the score, blue: lowers it)".to_string()
        };
        root.draw_text(&title, &("sans-serif", 16).into_text_style(&root), (8, 10))
            .map_err(|e| draw_err(path, e))?;
        for (k, &i) in wrong.iter().enumerate() {
            let (ox, oy) = ((k % cols) * cell_w + 8, (k / cols) * cell_h + 40 + ih * scale + 4);
            let p = probs.outer(k)[predicted[i]];
            let text = format!("true {}, predicted {} ({:.0}%)", labels[i], predicted[i], 100.0 * p);
            root.draw_text(&text, &("sans-serif", 14).into_text_style(&root), (ox as i32, oy as i32))
                .map_err(|e| draw_err(path, e))?;
        }
        root.present().map_err(|e| draw_err(path, e))?;
    }
    write_png(path, buf, (w, h))?;
    Ok(wrong.len())
}
