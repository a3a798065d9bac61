//! IDX files: the format of MNIST and its many relatives (Fashion-MNIST, EMNIST, Kuzushiji-MNIST).
//!
//! An IDX file is a tiny header and a dense array of numbers, big-endian:
//!
//! ```text
//! bytes 0–1   0x00 0x00
//! byte  2     element type (0x08 = unsigned byte, the one MNIST, Fashion-MNIST, EMNIST and
//!             Kuzushiji-MNIST use; the others — 0x09 signed byte, 0x0B short, 0x0C int, 0x0D
//!             float, 0x0E double, as QMNIST's extended int labels — are refused by name)
//! byte  3     number of dimensions d
//! then        d sizes, each a big-endian u32
//! then        the elements, row-major (last dimension fastest)
//! ```
//!
//! Images are `idx3` (count × rows × columns) and labels `idx1` (count). Files may be gzipped
//! (`*.gz`); that is detected from the content, not the name. Every way a file can be wrong — wrong
//! magic, unsupported type, truncated or overlong data, images and labels that disagree — is an
//! [`Error::Format`] naming the file and what was wrong.

use super::Dataset;
use crate::error::{Error, Result};
use crate::tensor::{Tensor, checked_numel};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The unsigned-byte element type code.
const UBYTE: u8 = 0x08;

/// A decoded IDX file of unsigned bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxArray {
    /// The sizes of the dimensions, outermost first.
    pub dims: Vec<usize>,
    /// The elements, row-major.
    pub data: Vec<u8>,
}

/// The most data a gzipped IDX file may declare, 1 GiB (the largest public MNIST-format set,
/// EMNIST ByClass, has 547 MB of training images): a small file that unzips to more is a gzip bomb
/// or a set to read unzipped (a plain file's size is its own bound).
pub const MAX_GZIP_IDX_BYTES: usize = 1 << 30;

/// Reads a file, gunzipping it if it starts with the gzip magic bytes.
///
/// Decompression is bounded by what the data declare: the IDX header is decompressed first, a
/// declaration above [`MAX_GZIP_IDX_BYTES`] is refused before anything more is unzipped, and then
/// at most the number of bytes the dimensions call for are decompressed, plus one to tell that
/// there is more (which [`parse_idx`] refuses). Memory grows with the data actually decompressed,
/// never with the claim alone.
fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = crate::io::read_regular_file(path)?;
    if !raw.starts_with(&[0x1f, 0x8b]) {
        return Ok(raw);
    }
    let corrupt = |e: std::io::Error| Error::format(path, format!("corrupt or truncated gzip data ({e})"));
    let mut gz = flate2::read::MultiGzDecoder::new(&raw[..]);
    let mut out = Vec::new();
    // The 4-byte magic number says how many 4-byte sizes follow; those say how much data follows.
    (&mut gz).take(4).read_to_end(&mut out).map_err(corrupt)?;
    if out.len() == 4 {
        (&mut gz).take(4 * u64::from(out[3])).read_to_end(&mut out).map_err(corrupt)?;
    }
    // (None: no header of unsigned bytes with at least one dimension, or sizes whose product
    // overflows; `parse_idx` names which: a declaration counts elements, which are bytes for the
    // one type read here only.)
    let ubyte_header = out.len() >= 4 && out[..3] == [0, 0, UBYTE] && out[3] >= 1;
    let declaration = declared_len(&out).filter(|_| ubyte_header);
    let declared = declaration.unwrap_or(0);
    if declared > MAX_GZIP_IDX_BYTES {
        return Err(Error::format(
            path,
            format!(
                "the gzipped header declares {declared} bytes of data, more than the {MAX_GZIP_IDX_BYTES} a gzipped IDX \
                 file may (backprop::data::idx::MAX_GZIP_IDX_BYTES); unzip it to read it"
            ),
        ));
    }
    let header = out.len();
    match (&mut gz).take(declared as u64 + 1).read_to_end(&mut out) {
        // (Read to one byte past the declaration only: how much more there is stays unknown.)
        Ok(_) if declaration.is_some() && out.len() > header + declared => Err(Error::format(
            path,
            format!(
                "the gzipped data go on past the {declared} bytes its header declares: not an IDX file, or a \
                 damaged one"
            ),
        )),
        Ok(_) => Ok(out),
        // gzip(1) ignores zero bytes after the last member (tools that pad a file to a block
        // leave them): with the data complete, such padding is no error.
        Err(_) if out.len() == header + declared && members_then_zeros(&raw) => Ok(out),
        Err(e) => Err(corrupt(e)),
    }
}

/// True if `raw` is whole gzip members followed by nothing but zero bytes (at least one).
/// Called only once the members have given their declared data, so decoding them again costs
/// what the first reading did.
fn members_then_zeros(raw: &[u8]) -> bool {
    let mut rest = raw;
    while rest.starts_with(&[0x1f, 0x8b]) {
        let mut member = flate2::bufread::GzDecoder::new(rest);
        if std::io::copy(&mut member, &mut std::io::sink()).is_err() {
            return false;
        }
        rest = member.into_inner(); // what follows the member
    }
    !rest.is_empty() && rest.len() < raw.len() && rest.iter().all(|&b| b == 0)
}

/// The body length a complete IDX header declares, if the header is complete and its product
/// fits in [`MAX_ELEMENTS`](crate::tensor::MAX_ELEMENTS).
fn declared_len(bytes: &[u8]) -> Option<usize> {
    let ndims = *bytes.get(3)? as usize;
    let sizes = bytes.get(4..4 + 4 * ndims)?;
    let dims: Vec<usize> =
        sizes.chunks_exact(4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize).collect();
    checked_numel(&dims)
}

/// Parses IDX bytes; `path` only names the source in error messages.
///
/// # Errors
/// [`Error::Format`] for a wrong magic number, an element type other than unsigned byte, a
/// truncated header or body, or bytes left over after the data.
pub fn parse_idx(bytes: &[u8], path: impl AsRef<Path>) -> Result<IdxArray> {
    let path = path.as_ref();
    let bad = |msg: String| Error::format(path, msg);
    if bytes.len() < 4 {
        return Err(bad(format!(
            "not an IDX file: only {} bytes, too short for the 4-byte magic number",
            bytes.len()
        )));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(bad(format!(
            "not an IDX file: the magic number starts with {:#04x} {:#04x}, expected 0x00 0x00",
            bytes[0], bytes[1]
        )));
    }
    if bytes[2] != UBYTE {
        return Err(bad(format!(
            "IDX element type {:#04x} is not supported (only unsigned bytes, 0x08)",
            bytes[2]
        )));
    }
    let ndims = bytes[3] as usize;
    if ndims == 0 {
        return Err(bad("IDX header declares 0 dimensions".into()));
    }
    let header = 4 + 4 * ndims;
    if bytes.len() < header {
        return Err(bad(format!(
            "truncated IDX header: {ndims} dimensions need {header} bytes, the file has {}",
            bytes.len()
        )));
    }
    let dims: Vec<usize> = bytes[4..header]
        .chunks_exact(4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .collect();
    let len = checked_numel(&dims)
        .ok_or_else(|| bad(format!("IDX dimensions {dims:?} hold more elements than a tensor can")))?;
    let body = bytes.len() - header;
    if body < len {
        return Err(bad(format!(
            "truncated: dimensions {dims:?} need {len} bytes of data, the file has {body}"
        )));
    }
    if body > len {
        return Err(bad(format!("{} unexpected bytes after the data of dimensions {dims:?}", body - len)));
    }
    Ok(IdxArray { dims, data: bytes[header..].to_vec() })
}

/// Reads an IDX file (plain or gzipped).
///
/// # Errors
/// [`Error::Io`] if it cannot be read, [`Error::Format`] as for [`parse_idx`].
pub fn read_idx(path: impl AsRef<Path>) -> Result<IdxArray> {
    let path = path.as_ref();
    parse_idx(&read_maybe_gz(path)?, path)
}

/// Writes an IDX file of unsigned bytes; gzipped when the name ends in `.gz`.
///
/// # Errors
/// [`Error::InvalidArgument`] if `data` does not hold `dims`' product of bytes or a dimension
/// does not fit in 32 bits; [`Error::Io`] if the file cannot be written.
pub fn write_idx(path: impl AsRef<Path>, dims: &[usize], data: &[u8]) -> Result<()> {
    let path = path.as_ref();
    if dims.is_empty() || dims.len() > 255 || dims.iter().any(|&d| d > u32::MAX as usize) {
        return Err(Error::invalid(format!("cannot write IDX dimensions {dims:?}")));
    }
    if checked_numel(dims) != Some(data.len()) {
        return Err(Error::invalid(format!("IDX dimensions {dims:?} do not hold {} bytes", data.len())));
    }
    let mut bytes = vec![0, 0, UBYTE, dims.len() as u8];
    for &d in dims {
        bytes.extend_from_slice(&(d as u32).to_be_bytes());
    }
    bytes.extend_from_slice(data);
    // Encoded in memory, then written as the models are (a temporary file renamed over the old
    // one): a full disk or a killed process leaves the previous file, not a truncated one.
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gz")) {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let io = |e| Error::io(path, e);
        gz.write_all(&bytes).map_err(io)?;
        bytes = gz.finish().map_err(io)?;
    }
    crate::io::write_atomically(path, &bytes)
}

/// Reads an `idx3` image file as a `[N, 1, rows, cols]` tensor scaled to `[0, 1]` (byte / 255).
///
/// # Errors
/// As [`read_idx`], and [`Error::Format`] if the file is not 3-dimensional.
pub fn read_images(path: impl AsRef<Path>) -> Result<Tensor> {
    let path = path.as_ref();
    let a = read_idx(path)?;
    let &[n, h, w] = a.dims.as_slice() else {
        return Err(Error::format(
            path,
            format!(
                "expected an image file (3 dimensions: count, rows, columns), got dimensions {:?}",
                a.dims
            ),
        ));
    };
    let mut data = Vec::new();
    // Four bytes per pixel: ask for the memory instead of aborting the process when it is short.
    data.try_reserve_exact(a.data.len()).map_err(|e| {
        Error::format(path, format!("not enough memory for {n} images of {h}×{w} as f32 ({e})"))
    })?;
    data.extend(a.data.iter().map(|&b| b as f32 / 255.0));
    Tensor::from_vec(&[n, 1, h, w], data)
}

/// Reads an `idx1` label file.
///
/// # Errors
/// As [`read_idx`], and [`Error::Format`] if the file is not 1-dimensional.
pub fn read_labels(path: impl AsRef<Path>) -> Result<Vec<usize>> {
    let path = path.as_ref();
    let a = read_idx(path)?;
    if a.dims.len() != 1 {
        return Err(Error::format(
            path,
            format!("expected a label file (1 dimension), got dimensions {:?}", a.dims),
        ));
    }
    Ok(a.data.iter().map(|&b| b as usize).collect())
}

/// Reads an image file and its label file into a classification [`Dataset`].
///
/// # Errors
/// As [`read_images`] and [`read_labels`], and [`Error::Format`] naming both files when their
/// counts differ.
pub fn read_image_label_pair(images: impl AsRef<Path>, labels: impl AsRef<Path>) -> Result<Dataset> {
    let (ip, lp) = (images.as_ref(), labels.as_ref());
    let x = read_images(ip)?;
    let y = read_labels(lp)?;
    if x.dim(0) != y.len() {
        return Err(Error::format(
            ip,
            format!("holds {} images but the label file {} holds {} labels", x.dim(0), lp.display(), y.len()),
        ));
    }
    Dataset::classification(x, y)
}

/// True if the file's name ends in `.gz` (any case).
fn is_gz_name(path: &Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gz"))
}

/// The four files of an MNIST-format folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MnistFiles {
    /// Training images (`train-images-idx3-ubyte[.gz]`).
    pub train_images: PathBuf,
    /// Training labels (`train-labels-idx1-ubyte[.gz]`).
    pub train_labels: PathBuf,
    /// Test images (`t10k-images-idx3-ubyte[.gz]`).
    pub test_images: PathBuf,
    /// Test labels (`t10k-labels-idx1-ubyte[.gz]`).
    pub test_labels: PathBuf,
}

/// Finds the four standard files in `dir`. Names are matched loosely so that every MNIST-format
/// data set's spelling works: a file is a training file if its name contains `train`, a test file
/// if it contains `t10k` or `test`; images contain `idx3`, labels `idx1`; plain or `.gz`
/// (`train-images-idx3-ubyte.gz`, `emnist-digits-test-labels-idx1-ubyte`,
/// `train-images.idx3-ubyte` all qualify).
///
/// A file and its gzipped copy side by side (`train-images-idx3-ubyte` and
/// `train-images-idx3-ubyte.gz`, as torchvision's download leaves its `raw` folder) count as one:
/// the uncompressed file is read.
///
/// # Errors
/// [`Error::Io`] if the folder cannot be listed, [`Error::Format`] naming the folder when one of
/// the four files is missing or two files claim the same role (EMNIST's folder holds every split
/// side by side: choose one with [`find_mnist_files_matching`]).
pub fn find_mnist_files(dir: impl AsRef<Path>) -> Result<MnistFiles> {
    find_mnist_files_matching(dir, "")
}

/// [`find_mnist_files`] among the files whose name contains `part` (ignoring case): one set of a
/// folder that holds several, such as EMNIST's `emnist-balanced-…`, `emnist-digits-…`,
/// `emnist-letters-…` (`part` = `"balanced"`). An empty `part` considers every file.
///
/// # Errors
/// As [`find_mnist_files`].
///
/// ```no_run
/// use backprop::data::idx::{find_mnist_files_matching, read_image_label_pair};
/// let files = find_mnist_files_matching("emnist/gzip", "emnist-digits-")?;
/// let train = read_image_label_pair(&files.train_images, &files.train_labels)?;
/// # Ok::<(), backprop::Error>(())
/// ```
pub fn find_mnist_files_matching(dir: impl AsRef<Path>, part: &str) -> Result<MnistFiles> {
    let dir = dir.as_ref();
    let part = part.to_lowercase();
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut found: [Vec<PathBuf>; 4] = Default::default();
    // Label files of two dimensions (QMNIST's `*-labels-idx2-int`), which this loader does not
    // read: named when the labels are missing, rather than passed over in silence.
    let mut two_dimensional: [Vec<PathBuf>; 4] = Default::default();
    for entry in entries {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
        if !path.is_file() || name.starts_with('.') || !name.contains(&part) {
            continue;
        }
        let train = name.contains("train");
        let test = name.contains("t10k") || name.contains("test");
        let slot = match (train, test, name.contains("idx3"), name.contains("idx1")) {
            (true, false, true, false) => 0,
            (true, false, false, true) => 1,
            (false, true, true, false) => 2,
            (false, true, false, true) => 3,
            (true, false, false, false) if name.contains("idx2") => {
                two_dimensional[1].push(path);
                continue;
            }
            (false, true, false, false) if name.contains("idx2") => {
                two_dimensional[3].push(path);
                continue;
            }
            _ => continue,
        };
        found[slot].push(path);
    }
    let roles = [
        "training images (*train*idx3*)",
        "training labels (*train*idx1*)",
        "test images (*t10k*idx3* or *test*idx3*)",
        "test labels (*t10k*idx1* or *test*idx1*)",
    ];
    let matching = if part.is_empty() { String::new() } else { format!(" whose name contains {part:?}") };
    let mut pick = |slot: usize| -> Result<PathBuf> {
        let mut paths = std::mem::take(&mut found[slot]);
        paths.sort();
        // X and X.gz side by side: the same file twice, read uncompressed.
        let plain: Vec<PathBuf> = paths.iter().filter(|p| !is_gz_name(p)).cloned().collect();
        paths.retain(|p| !is_gz_name(p) || !plain.iter().any(|q| p.with_extension("") == *q));
        match paths.len() {
            1 => Ok(paths.remove(0)),
            0 if !two_dimensional[slot].is_empty() => {
                let mut names: Vec<String> =
                    two_dimensional[slot].iter().map(|p| p.display().to_string()).collect();
                names.sort();
                Err(Error::format(
                    dir,
                    format!(
                        "no file{matching} for the {}; {} hold(s) labels of two dimensions (QMNIST's idx2 format, \
                         several int32 columns per image), which this loader does not read: write the class \
                         column as an idx1 file of unsigned bytes",
                        roles[slot],
                        names.join(", ")
                    ),
                ))
            }
            0 => Err(Error::format(
                dir,
                format!(
                    "no file{matching} for the {} in this folder; an MNIST-format folder holds train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (each optionally .gz)",
                    roles[slot]
                ),
            )),
            _ => Err(Error::format(
                dir,
                format!(
                    "several files{matching} could be the {}: {} — choose one set by a part of its names \
                     (data::idx::find_mnist_files_matching(dir, \"balanced\"); the image_classify example's \
                     --data-match), or move it into a folder of its own",
                    roles[slot],
                    paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
                ),
            )),
        }
    };
    Ok(MnistFiles {
        train_images: pick(0)?,
        train_labels: pick(1)?,
        test_images: pick(2)?,
        test_labels: pick(3)?,
    })
}

/// Loads an MNIST-format folder (MNIST, Fashion-MNIST, EMNIST, Kuzushiji-MNIST …) as
/// `(training set, test set)`, images `[N, 1, 28, 28]` in `[0, 1]`, pixels as the files store
/// them. (EMNIST stores each image transposed against MNIST's orientation, and numbers its
/// letters 1–26, so its `letters` split has 27 classes with class 0 empty: the data set's
/// conventions, kept as they are.)
///
/// # Errors
/// As [`find_mnist_files`] and [`read_image_label_pair`]; also [`Error::Format`] if the training
/// and test images differ in size.
///
/// ```no_run
/// let (train, test) = backprop::data::idx::load_mnist_folder("examples/data/digits")?;
/// assert_eq!((train.len(), test.len()), (8000, 2000));
/// # Ok::<(), backprop::Error>(())
/// ```
pub fn load_mnist_folder(dir: impl AsRef<Path>) -> Result<(Dataset, Dataset)> {
    load_mnist_folder_matching(dir, "")
}

/// [`load_mnist_folder`] for the set of files whose names contain `part`
/// ([`find_mnist_files_matching`]): one of EMNIST's splits, say.
///
/// # Errors
/// As [`load_mnist_folder`].
pub fn load_mnist_folder_matching(dir: impl AsRef<Path>, part: &str) -> Result<(Dataset, Dataset)> {
    let files = find_mnist_files_matching(dir, part)?;
    let train = read_image_label_pair(&files.train_images, &files.train_labels)?;
    let test = read_image_label_pair(&files.test_images, &files.test_labels)?;
    if train.sample_shape() != test.sample_shape() {
        return Err(Error::format(
            &files.test_images,
            format!(
                "test images are {:?} but training images are {:?}",
                test.sample_shape(),
                train.sample_shape()
            ),
        ));
    }
    Ok((train, test))
}
