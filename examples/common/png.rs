//! What the examples' pictures share: the embedded font (DejaVu Sans, so no system font library
//! is needed), errors that name the file, and writing an RGB buffer as PNG.

use backprop::prelude::*;
use plotters::prelude::FontStyle;
use std::path::Path;
use std::sync::Once;

/// Registers the embedded DejaVu Sans as plotters' "sans-serif" (once per process).
pub fn register_font() {
    static FONT: Once = Once::new();
    FONT.call_once(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
            .unwrap_or_else(|_| panic!("the embedded DejaVu Sans font is valid"));
    });
}

/// A drawing error, naming the file being drawn.
pub fn draw_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::format(path, format!("drawing failed: {e}"))
}

/// Writes a `w × h` RGB buffer as a PNG file.
pub fn write_png(path: &Path, buf: Vec<u8>, (w, h): (u32, u32)) -> Result<()> {
    let img = image::RgbImage::from_raw(w, h, buf).expect("a buffer of w·h·3 bytes");
    img.save(path).map_err(|e| Error::format(path, format!("cannot write PNG ({e})")))
}
