//! Folders of pictures, one sub-folder per class: `root/<class>/**/*.png|jpg|jpeg`
//! (cargo feature `image`).
//!
//! Classes are the sub-folder names in sorted order (class 0 is the first name). Every image is
//! decoded, converted to grayscale or RGB, resized to the requested size and scaled to `[0, 1]`,
//! giving a `[N, C, H, W]` tensor.
//!
//! The rules for what is read, so that nothing is skipped silently:
//!
//! - in the root, every sub-folder (or link to one) is a class; hidden entries (names starting
//!   with `.`) and plain files are ignored (a README can sit beside the classes);
//! - in a class folder and in its sub-folders, at any depth (as torchvision's `ImageFolder` walks
//!   them), every entry whose name ends in `.png`, `.jpg`, `.jpeg`, `.jpe` or `.jfif` (any case)
//!   must be a readable, decodable image file: a folder, a link that leads nowhere, a FIFO or a
//!   corrupt image under such a name is an error, and every such entry is listed;
//! - a file named like an image in a format this loader does not decode (`.bmp`, `.gif`, `.webp`,
//!   `.tif`, `.tiff`, `.ppm`, `.pgm`, `.pbm`, `.pnm`, `.ico`, `.avif`, `.heic`, `.heif`, `.svg`) is
//!   an error listing every such file, not a picture quietly left out of its class;
//! - hidden entries and files with any other extension (a README, `Thumbs.db`) are ignored;
//! - a class folder with no image is an error naming it (it would shift every later label).
//!
//! Resources are bounded: an image may be at most [`MAX_DECODED_SIDE`] pixels wide and high and
//! its decoder may allocate at most [`MAX_DECODE_BYTES`]; the requested size is at most
//! [`MAX_SIZE`] on each side.

use super::Dataset;
use crate::error::{Error, Result};
use crate::tensor::{Tensor, checked_numel};
use std::path::{Path, PathBuf};

/// The largest width or height of an image the decoder accepts.
pub const MAX_DECODED_SIDE: u32 = 16_384;

/// The most memory an image's decoder may allocate (the decoded image included).
pub const MAX_DECODE_BYTES: u64 = 512 << 20;

/// The largest height or width images may be resized to.
pub const MAX_SIZE: usize = 4096;

/// Checks a requested `(height, width)`.
fn check_size(path: &Path, (height, width): (usize, usize)) -> Result<()> {
    if height == 0 || width == 0 || height > MAX_SIZE || width > MAX_SIZE {
        return Err(Error::invalid(format!(
            "{}: cannot resize images to {height}×{width}: each side must be between 1 and {MAX_SIZE}",
            path.display()
        )));
    }
    Ok(())
}

/// Channels to decode images into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColorMode {
    /// One channel (luma). A colour image's grey is PIL's `convert("L")` (and so torchvision's
    /// `Grayscale`): ITU-R 601-2 luma, `L = (19595·R + 38470·G + 7471·B + 2¹⁵) >> 16` on 8-bit
    /// values, i.e. `0.299 R + 0.587 G + 0.114 B` rounded; an alpha channel is dropped (not
    /// composited), as PIL drops it. A grey image keeps its values.
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
    matches!(ext.as_deref(), Some("png" | "jpg" | "jpeg" | "jpe" | "jfif"))
}

/// Named like a picture in a format the decoders here do not read.
fn is_unread_image(path: &Path) -> bool {
    let ext = path.extension().map(|e| e.to_string_lossy().to_lowercase());
    matches!(
        ext.as_deref(),
        Some(
            "bmp"
                | "gif"
                | "webp"
                | "tif"
                | "tiff"
                | "ppm"
                | "pgm"
                | "pbm"
                | "pnm"
                | "ico"
                | "avif"
                | "heic"
                | "heif"
                | "svg"
        )
    )
}

/// Sub-folders deeper than this below a class folder are refused (a link that leads back up
/// would otherwise be walked for ever).
const MAX_DEPTH: usize = 32;

/// The entries named like readable images in `dir` and, at any depth, its sub-folders: each
/// folder with its own images in sorted order, pushed to `folders` (in the order of the walk:
/// [`image_folder_samples`] sorts the folders by path); files named like pictures of another
/// format go to `unread`.
fn class_images(
    dir: &Path,
    depth: usize,
    folders: &mut Vec<(PathBuf, Vec<PathBuf>)>,
    unread: &mut Vec<String>,
) -> Result<()> {
    if depth > MAX_DEPTH {
        return Err(Error::format(
            dir,
            format!("more than {MAX_DEPTH} levels of folders below its class (a link that leads back up?)"),
        ));
    }
    let mut images = Vec::new();
    for path in sorted_entries(dir)? {
        if is_image(&path) {
            images.push(path); // checked when read: a folder or a FIFO under such a name is an error
        } else if path.is_dir() {
            class_images(&path, depth + 1, folders, unread)?;
        } else if is_unread_image(&path) {
            unread.push(path.display().to_string());
        }
    }
    folders.push((dir.to_path_buf(), images));
    Ok(())
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
/// [`Error::Io`] if the file cannot be read, [`Error::Format`] naming it if it cannot be decoded
/// or exceeds the decoder's limits ([`MAX_DECODED_SIDE`], [`MAX_DECODE_BYTES`]), and
/// [`Error::InvalidArgument`] for a size outside `1..=`[`MAX_SIZE`].
pub fn load_image(
    path: impl AsRef<Path>,
    (height, width): (usize, usize),
    color: ColorMode,
) -> Result<Tensor> {
    let path = path.as_ref();
    check_size(path, (height, width))?;
    let bad = |e: &dyn std::fmt::Display| Error::format(path, format!("cannot decode image ({e})"));
    // A regular file (not a device or a pipe), and no larger than the decoder may allocate: a
    // compressed image is smaller than its pixels.
    let size = std::fs::metadata(path).map_err(|e| Error::io(path, e))?.len();
    if size > MAX_DECODE_BYTES {
        return Err(bad(&format!("the file holds {size} bytes, more than the decoder's {MAX_DECODE_BYTES}")));
    }
    let bytes = crate::io::read_regular_file(path)?;
    let mut reader =
        image::ImageReader::new(std::io::Cursor::new(&bytes)).with_guessed_format().map_err(|e| bad(&e))?;
    // The JPEG decoder fills a truncated file's missing rows with grey and reports nothing (PIL,
    // and so torchvision, refuse it): its structure is walked to the end-of-image marker first.
    if reader.format() == Some(image::ImageFormat::Jpeg) && !jpeg_reaches_its_end(&bytes) {
        return Err(bad(&"the JPEG data end before its end-of-image marker: the file is truncated"));
    }
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_DECODED_SIDE);
    limits.max_image_height = Some(MAX_DECODED_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    let img = reader.decode().map_err(|e| bad(&e))?;
    let img = img.resize_exact(width as u32, height as u32, image::imageops::FilterType::Triangle);
    Ok(image_to_tensor(&img, color))
}

/// Whether a JPEG's marker structure runs to its end-of-image marker (`FF D9`) before the bytes
/// end: each segment's length is followed, and each scan's entropy-coded data is crossed to the
/// next marker (`FF 00` is a stuffed `FF`, `FF D0`–`FF D7` restart markers, `FF FF` fill). Bytes
/// after the end-of-image marker (a camera's trailer) are not read. A stream that is not a JPEG
/// (no start-of-image marker) is left to the decoder.
fn jpeg_reaches_its_end(b: &[u8]) -> bool {
    if !b.starts_with(&[0xFF, 0xD8]) {
        return true;
    }
    let mut i = 2;
    loop {
        // The next marker: skip anything up to an FF (libjpeg passes over such bytes too), then
        // its fill bytes.
        while i < b.len() && b[i] != 0xFF {
            i += 1;
        }
        while i < b.len() && b[i] == 0xFF {
            i += 1;
        }
        let Some(&marker) = b.get(i) else { return false };
        i += 1;
        match marker {
            0xD9 => return true,                   // end of image
            0x00 | 0x01 | 0xD0..=0xD8 => continue, // no length: stuffing, TEM, restarts, SOI
            _ => {}
        }
        let Some(len) = b.get(i..i + 2).map(|l| u16::from_be_bytes([l[0], l[1]]) as usize) else {
            return false;
        };
        i += len;
        if len < 2 || i > b.len() {
            return false;
        }
        if marker == 0xDA {
            // A scan's entropy-coded data, up to the next marker that is not a restart.
            loop {
                let Some(&v) = b.get(i) else { return false };
                if v == 0xFF {
                    match b.get(i + 1) {
                        None => return false,
                        Some(0x00 | 0xD0..=0xD7) => i += 2,
                        Some(0xFF) => i += 1,
                        Some(_) => break,
                    }
                } else {
                    i += 1;
                }
            }
        }
    }
}

/// An image in memory as a `[C, height, width]` tensor of values in `[0, 1]` (`C` = 1 for
/// [`ColorMode::Gray`], 3 for [`ColorMode::Rgb`]; converted from whatever the image holds), at
/// its own size.
///
/// ```
/// use backprop::data::image_folder::{ColorMode, image_to_tensor, tensor_to_image};
/// let img = image::DynamicImage::ImageRgb8(image::RgbImage::from_pixel(4, 2, image::Rgb([255, 0, 51])));
/// let t = image_to_tensor(&img, ColorMode::Rgb);
/// assert_eq!(t.shape(), &[3, 2, 4]);
/// assert_eq!((t[&[0, 1, 3]], t[&[1, 0, 0]], t[&[2, 0, 0]]), (1.0, 0.0, 0.2));
/// let back = tensor_to_image(&t).unwrap();
/// assert_eq!(back.to_rgb8(), img.to_rgb8());
/// ```
pub fn image_to_tensor(img: &image::DynamicImage, color: ColorMode) -> Tensor {
    let (width, height) = (img.width() as usize, img.height() as usize);
    let data: Vec<f32> = match color {
        ColorMode::Gray if img.color().has_color() => {
            // (The image crate's own grey weighs by Rec. 709, 0.2126 R + 0.7152 G + 0.0722 B: a
            // pure red is 54/255 there, 76/255 in PIL and torchvision.)
            let rgb = img.to_rgb8().into_raw();
            let luma =
                |p: &[u8]| (19595 * p[0] as u32 + 38470 * p[1] as u32 + 7471 * p[2] as u32 + 0x8000) >> 16;
            rgb.chunks_exact(3).map(|p| luma(p) as f32 / 255.0).collect()
        }
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
    Tensor::from_vec(&[color.channels(), height, width], data).expect("C·H·W values")
}

/// A `[1, H, W]` (grey) or `[3, H, W]` (RGB) tensor of values in `[0, 1]` as an 8-bit image;
/// values outside `[0, 1]` are clamped, NaN becomes 0.
///
/// # Errors
/// [`Error::Shape`] for any other shape, or a side over `u32::MAX`.
pub fn tensor_to_image(t: &Tensor) -> Result<image::DynamicImage> {
    let (c, h, w) = match *t.shape() {
        [c @ (1 | 3), h, w] => (c, h, w),
        _ => {
            return Err(Error::shape(format!(
                "an image tensor is [1, H, W] or [3, H, W], got {:?}",
                t.shape()
            )));
        }
    };
    let side = |v: usize| u32::try_from(v).map_err(|_| Error::shape(format!("image side {v} is too large")));
    let (w32, h32) = (side(w)?, side(h)?);
    let byte = |v: f32| (v.clamp(0.0, 1.0) * 255.0).round() as u8; // NaN clamps to NaN, casts to 0
    let hw = h * w;
    let img = if c == 1 {
        let pixels = t.data().iter().map(|&v| byte(v)).collect();
        image::DynamicImage::ImageLuma8(image::GrayImage::from_raw(w32, h32, pixels).expect("H·W bytes"))
    } else {
        let pixels =
            (0..hw).flat_map(|i| (0..3).map(move |ch| (ch, i))).map(|(ch, i)| byte(t.data()[ch * hw + i]));
        image::DynamicImage::ImageRgb8(
            image::RgbImage::from_raw(w32, h32, pixels.collect()).expect("3·H·W bytes"),
        )
    };
    Ok(img)
}

/// Image files, each with its class label, as [`image_folder_samples`] lists them.
pub type LabelledFiles = Vec<(PathBuf, usize)>;

/// The image files of `root/<class>/**/*.png|jpg|jpeg` with their labels, in the order
/// [`load_image_folder`] reads them (its sample `i` is file `i` here), and the class names (the
/// [module docs](self) give the rules for what is listed), as torchvision's `ImageFolder.samples`
/// lists a folder's files.
///
/// The order is torchvision's: classes by sorted name; within a class, its folders by their
/// paths sorted as strings (the class folder first, then `a.d/` before `b/`, `b-c/` before
/// `b/x/`; for UTF-8 names) and each folder's files by name — what `sorted(os.walk(class_dir))`
/// and `sorted(fnames)` give. The set of files differs where the rules do: this loader reads
/// `.jpe` and `.jfif` files, which torchvision skips; it ignores hidden entries (names starting
/// with `.`), which torchvision lists; and a `.bmp`, `.ppm`, `.pgm`, `.tif`, `.tiff` or `.webp`
/// picture, which torchvision reads, is an error here. On a folder without those, sample `i` is
/// the same file in both.
///
/// ```no_run
/// use backprop::data::image_folder::image_folder_samples;
/// # fn main() -> backprop::Result<()> {
/// let (files, class_names) = image_folder_samples("pictures/")?;
/// let (first, label) = &files[0];
/// println!("{} is a {}", first.display(), class_names[*label]);
/// # Ok(()) }
/// ```
///
/// # Errors
/// [`Error::Io`] if a folder cannot be listed; [`Error::Format`] if `root` holds no class folders,
/// if an entry of `root` is a link that leads nowhere, if a class holds pictures in a format not
/// read here (listing every such file) or no image at all (naming every such class), or if
/// folders nest deeper than 32 levels below a class.
pub fn image_folder_samples(root: impl AsRef<Path>) -> Result<(LabelledFiles, Vec<String>)> {
    let root = root.as_ref();
    let walk = walk(root)?;
    walk.refuse_unread_and_empty(root)?;
    Ok((walk.files, walk.names))
}

/// What a walk of an image folder found: the files named like images with their labels, the class
/// names, the files in formats not read here, and the classes without any image.
struct Walk {
    files: LabelledFiles,
    names: Vec<String>,
    unread: Vec<String>,
    empty: Vec<String>,
}

impl Walk {
    /// Pictures in formats not read here, and classes without an image, as errors listing each.
    fn refuse_unread_and_empty(&self, root: &Path) -> Result<()> {
        if !self.unread.is_empty() {
            return Err(Error::format(
                root,
                format!(
                    "{} picture(s) in a format this loader does not read (PNG and JPEG only): {} — convert them, \
                     or move them out of the class folders",
                    self.unread.len(),
                    self.unread.join(", ")
                ),
            ));
        }
        if !self.empty.is_empty() {
            return Err(Error::format(
                root,
                format!(
                    "class folder(s) without any .png/.jpg/.jpeg image, sub-folders included: {} (an empty class would shift every later label)",
                    self.empty.join(", ")
                ),
            ));
        }
        Ok(())
    }
}

/// Lists the classes of `root` and their files in torchvision's order (see
/// [`image_folder_samples`]).
fn walk(root: &Path) -> Result<Walk> {
    let mut classes = Vec::new();
    for entry in sorted_entries(root)? {
        // (`is_dir` is false for an entry it cannot follow: a broken link to a class folder would
        // have been skipped in silence, and every later class's label shifted by one.)
        match std::fs::metadata(&entry) {
            Ok(m) if m.is_dir() => classes.push(entry),
            Ok(_) => {}
            Err(e) => {
                return Err(Error::format(
                    &entry,
                    format!(
                        "cannot follow this entry of the image folder ({e}): a broken link to a class folder?"
                    ),
                ));
            }
        }
    }
    if classes.is_empty() {
        return Err(Error::format(root, "no class sub-folders (expected root/<class>/*.png)"));
    }
    let names =
        classes.iter().map(|c| c.file_name().unwrap_or_default().to_string_lossy().into_owned()).collect();
    let (mut files, mut unread, mut empty) = (Vec::new(), Vec::new(), Vec::new());
    for (label, dir) in classes.iter().enumerate() {
        let mut folders = Vec::new();
        class_images(dir, 0, &mut folders, &mut unread)?;
        // As strings, byte by byte (Python's order for UTF-8 names), not component by component
        // as `Path`'s `Ord` compares: `b-c` sorts before `b/x` in `os.walk`'s order.
        folders
            .sort_by(|(a, _), (b, _)| a.as_os_str().as_encoded_bytes().cmp(b.as_os_str().as_encoded_bytes()));
        let before = files.len();
        files.extend(folders.into_iter().flat_map(|(_, images)| images).map(|path| (path, label)));
        if files.len() == before {
            empty.push(dir.display().to_string());
        }
    }
    Ok(Walk { files, names, unread, empty })
}

/// Loads `root/<class>/**/*.png|jpg|jpeg` as a classification data set, and the class names
/// (the [module docs](self) give the rules for what is read).
/// Needs the cargo feature `image` (`backprop = { version = "…", features = ["image"] }`).
///
/// - `size` is `(height, width)`: every image is resized to it (aspect ratio not kept), giving
///   inputs of shape `[N, C, height, width]` with `C` = 1 for [`ColorMode::Gray`] and 3 for
///   [`ColorMode::Rgb`], values in `[0, 1]`;
/// - the samples come back **in class order**, in torchvision's order within a class
///   ([`image_folder_samples`] lists the files: sample `i` is its file `i`), so split with
///   [`Dataset::split_stratified`] or [`Dataset::split_shuffled`], never [`Dataset::split_at`]
///   (which would give a test set of the last classes only);
/// - the class names are the sub-folder names, sorted: `names[label]`.
///
/// `examples/image_folder.rs` loads a folder, splits it, trains a small CNN and predicts.
///
/// ```no_run
/// use backprop::data::image_folder::{ColorMode, load_image_folder};
/// # fn main() -> backprop::Result<()> {
/// let (data, class_names) = load_image_folder("pictures/", (28, 28), ColorMode::Gray)?; // (height, width)
/// let (train, test) = data.split_stratified(0.8, 42)?; // 80 % of every class to training
/// # let _ = (train, test, class_names);
/// # Ok(()) }
/// ```
///
/// # Errors
/// As [`image_folder_samples`], and [`Error::Format`] if any image cannot be decoded (listing
/// every such file) and [`Error::InvalidArgument`] for a size outside `1..=`[`MAX_SIZE`].
pub fn load_image_folder(
    root: impl AsRef<Path>,
    size: (usize, usize),
    color: ColorMode,
) -> Result<(Dataset, Vec<String>)> {
    let root = root.as_ref();
    check_size(root, size)?;
    let walk = walk(root)?;
    let per_image = checked_numel(&[color.channels(), size.0, size.1]).expect("bounded by MAX_SIZE");
    let (mut data, mut labels, mut failures) = (Vec::new(), Vec::new(), Vec::new());
    for (path, label) in &walk.files {
        if !path.is_file() {
            failures.push(format!("{}: named like an image but not a readable file", path.display()));
            continue;
        }
        match load_image(path, size, color) {
            Ok(t) => {
                data.try_reserve(per_image).map_err(|e| {
                    Error::format(root, format!("not enough memory for {} images ({e})", labels.len() + 1))
                })?;
                data.extend_from_slice(t.data());
                labels.push(*label);
            }
            Err(e) => failures.push(e.to_string()),
        }
    }
    if !failures.is_empty() {
        return Err(Error::format(
            root,
            format!("{} unreadable image(s): {}", failures.len(), failures.join("; ")),
        ));
    }
    walk.refuse_unread_and_empty(root)?;
    let x = Tensor::from_vec(&[labels.len(), color.channels(), size.0, size.1], data)?;
    Ok((Dataset::classification(x, labels)?, walk.names))
}
