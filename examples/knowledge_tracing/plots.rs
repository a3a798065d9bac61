//! The knowledge-tracing example's pictures: training curves, and one student's knowledge state.
//! Drawn with plotters into an RGB buffer (text in the embedded DejaVu Sans: no system font
//! library) and written as PNG with the `image` crate.

use backprop::prelude::*;
#[path = "../common/png.rs"]
mod png;

use plotters::prelude::*;
use png::{draw_err, register_font, write_png};
use std::path::Path;

/// Two panels: training loss per epoch, and test AUC per epoch. Epochs whose figure is not a
/// number (the AUC of a test set whose answers are all right, or all wrong, is undefined) are
/// left out of their panel; a panel with none says so in its title.
pub fn curves(epochs: &[(f32, f64)], path: &Path) -> Result<()> {
    register_font();
    let (w, h) = (1000u32, 400u32);
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| draw_err(path, e))?;
        let (left, right) = root.split_horizontally(w / 2);
        let n = epochs.len() as f32;
        let losses: Vec<(f32, f32)> = epochs.iter().enumerate().map(|(i, e)| (i as f32 + 1.0, e.0)).collect();
        let aucs: Vec<(f32, f32)> =
            epochs.iter().enumerate().map(|(i, e)| (i as f32 + 1.0, e.1 as f32)).collect();
        let series = [(&left, "training loss", losses, BLUE), (&right, "test AUC", aucs, RED)];
        for (area, title, mut points, color) in series {
            points.retain(|p| p.1.is_finite());
            let (lo, hi, caption) = match points.is_empty() {
                true => (0.0, 1.0, format!("{title}: none to show (undefined, or private)")),
                false => (
                    points.iter().map(|p| p.1).fold(f32::INFINITY, f32::min),
                    points.iter().map(|p| p.1).fold(f32::NEG_INFINITY, f32::max),
                    format!("{title} per epoch"),
                ),
            };
            let pad = ((hi - lo) * 0.1).max(1e-3);
            let mut chart = ChartBuilder::on(area)
                .caption(caption, ("sans-serif", 20))
                .margin(12)
                .x_label_area_size(36)
                .y_label_area_size(60)
                .build_cartesian_2d(0.5f32..n + 0.5, (lo - pad)..(hi + pad))
                .map_err(|e| draw_err(path, e))?;
            chart
                .configure_mesh()
                .x_desc("epoch")
                .label_style(("sans-serif", 13))
                .x_labels(epochs.len().clamp(2, 12))
                .x_label_formatter(&|v| format!("{v:.0}"))
                .y_label_formatter(&|v| format!("{v:.4}"))
                .draw()
                .map_err(|e| draw_err(path, e))?;
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
                .map_err(|e| draw_err(path, e))?;
            chart
                .draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(|e| draw_err(path, e))?;
        }
        root.present().map_err(|e| draw_err(path, e))?;
    }
    write_png(path, buf, (w, h))
}

/// Red (0) through yellow (½) to green (1).
fn colour(p: f32) -> RGBColor {
    let p = p.clamp(0.0, 1.0);
    if p < 0.5 {
        RGBColor(220, (60.0 + 390.0 * p) as u8, 60)
    } else {
        RGBColor((220.0 - 340.0 * (p - 0.5)) as u8, 190, 60)
    }
}

/// One student's knowledge state: a row per concept (or item group), a column per answer; each
/// cell the predicted probability of a right answer on that row after the answers so far. The
/// answers, `(step, row, right)`, are marked in their rows: a filled dot if right, a ring if wrong.
pub fn heatmap(
    rows: &[String],
    state: &[Vec<f32>],
    answers: &[(usize, usize, bool)],
    path: &Path,
) -> Result<()> {
    register_font();
    let (steps, cell) = (state.first().map_or(0, Vec::len), 18i32);
    let (left, top) = (120i32, 50i32);
    let (w, h) = ((left + cell * steps as i32 + 20) as u32, (top + cell * rows.len() as i32 + 60) as u32);
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| draw_err(path, e))?;
        let text = |s: &str, at: (i32, i32), size: i32| {
            Text::new(s.to_string(), at, ("sans-serif", size).into_font())
        };
        root.draw(&text(
            "predicted P(right) after each answer: red 0, yellow ½, green 1; ● right, ○ wrong",
            (10, 12),
            15,
        ))
        .map_err(|e| draw_err(path, e))?;
        for (r, name) in rows.iter().enumerate() {
            let y = top + cell * r as i32;
            root.draw(&text(name, (10, y + 3), 13)).map_err(|e| draw_err(path, e))?;
            for (t, &p) in state[r].iter().enumerate() {
                let x = left + cell * t as i32;
                root.draw(&Rectangle::new([(x, y), (x + cell - 1, y + cell - 1)], colour(p).filled()))
                    .map_err(|e| draw_err(path, e))?;
            }
        }
        for &(t, r, right) in answers {
            let centre = (left + cell * t as i32 + cell / 2, top + cell * r as i32 + cell / 2);
            let mark = if right {
                Circle::new(centre, 4, BLACK.filled())
            } else {
                Circle::new(centre, 4, BLACK.stroke_width(2))
            };
            root.draw(&mark).map_err(|e| draw_err(path, e))?;
        }
        let bottom = top + cell * rows.len() as i32 + 8;
        root.draw(&text("answer →", (left, bottom), 13)).map_err(|e| draw_err(path, e))?;
        root.present().map_err(|e| draw_err(path, e))?;
    }
    write_png(path, buf, (w, h))
}
