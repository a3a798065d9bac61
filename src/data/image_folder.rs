//! Folders of pictures, one sub-folder per class: `root/<class>/*.png|jpg|jpeg`
//! (cargo feature `image`).
//!
//! Classes are the sub-folder names in sorted order (class 0 is the first name). Every image is
//! decoded, converted to grayscale or RGB, resized to the requested size and scaled to `[0, 1]`,
//! giving a `[N, C, H, W]` tensor. A file with an image extension that cannot be decoded is an
//! error listing every such file — never silently skipped. Files with other extensions and
//! hidden files are ignored.

use super::Dataset;
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use std::path::{Path, PathBuf};

/// Channels to decode images into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColorMode {
    /// One channel (luma).
    Gray,
    /// Three channels, red, green, blue.
    Rgb,
}

impl ColorMode {
    /// Number of channels.
    pub fn channels(self) -> usize {
        match self {
            ColorMode::Gray => 1,
            ColorMode::Rgb => 3,
        }
    }
}

fn is_image(path: &Path) -> bool {
    let ext = path.extension().map(|e| e.to_string_lossy().to_lowercase());
    matches!(ext.as_deref(), Some("png" | "jpg" | "jpeg"))
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = e.map_err(|e| Error::io(dir, e))?.path();
        if !path.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')) {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// Decodes one image file into `[C, height, width]` values in `[0, 1]`.
///
/// # Errors
/// [`Error::Io`] if the file cannot be read, [`Error::Format`] naming it if it cannot be decoded.
pub fn load_image(
    path: impl AsRef<Path>,
    (height, width): (usize, usize),
    color: ColorMode,
) -> Result<Tensor> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let img = image::load_from_memory(&bytes)
        .map_err(|e| Error::format(path, format!("cannot decode image ({e})")))?;
    let img = img.resize_exact(width as u32, height as u32, image::imageops::FilterType::Triangle);
    let data: Vec<f32> = match color {
        ColorMode::Gray => img.to_luma8().into_raw().into_iter().map(|b| b as f32 / 255.0).collect(),
        ColorMode::Rgb => {
            // Interleaved RGB → planar CHW.
            let rgb = img.to_rgb8().into_raw();
            let hw = height * width;
            let mut planar = vec![0.0; 3 * hw];
            for (i, px) in rgb.chunks_exact(3).enumerate() {
                for c in 0..3 {
                    planar[c * hw + i] = px[c] as f32 / 255.0;
                }
            }
            planar
        }
    };
    Tensor::from_vec(&[color.channels(), height, width], data)
}

/// Loads `root/<class>/*.png|jpg|jpeg` as a classification data set, and the class names.
///
/// # Errors
/// [`Error::Io`] if a folder cannot be listed; [`Error::Format`] if `root` holds no class folders
/// or no images, or if any image cannot be decoded (listing every such file).
pub fn load_image_folder(
    root: impl AsRef<Path>,
    size: (usize, usize),
    color: ColorMode,
) -> Result<(Dataset, Vec<String>)> {
    let root = root.as_ref();
    let classes: Vec<PathBuf> = sorted_entries(root)?.into_iter().filter(|p| p.is_dir()).collect();
    if classes.is_empty() {
        return Err(Error::format(root, "no class sub-folders (expected root/<class>/*.png)"));
    }
    let (mut data, mut labels, mut failures) = (Vec::new(), Vec::new(), Vec::new());
    let names =
        classes.iter().map(|c| c.file_name().unwrap_or_default().to_string_lossy().into_owned()).collect();
    for (label, dir) in classes.iter().enumerate() {
        for path in sorted_entries(dir)?.into_iter().filter(|p| p.is_file() && is_image(p)) {
            match load_image(&path, size, color) {
                Ok(t) => {
                    data.extend_from_slice(t.data());
                    labels.push(label);
                }
                Err(e) => failures.push(e.to_string()),
            }
        }
    }
    if !failures.is_empty() {
        return Err(Error::format(
            root,
            format!("{} unreadable image(s): {}", failures.len(), failures.join("; ")),
        ));
    }
    if labels.is_empty() {
        return Err(Error::format(root, "the class folders hold no .png/.jpg/.jpeg images"));
    }
    let x = Tensor::from_vec(&[labels.len(), color.channels(), size.0, size.1], data)?;
    Ok((Dataset::classification(x, labels)?, names))
}
