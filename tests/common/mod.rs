//! Small seeded synthetic tasks shared by the integration tests.
#![allow(dead_code)] // each test binary uses some of these

use backprop::Tensor;
use backprop::data::Dataset;
use backprop::tensor::rng;
use rand::RngExt;

/// Three Gaussian blobs in the plane (centres on a circle of radius 2, σ = 0.5), `n` points.
pub fn blobs(n: usize, seed: u64) -> Dataset {
    let mut r = rng(seed);
    let noise = Tensor::randn(&[n, 2], 0.0, 0.5, seed + 1);
    let mut x = Vec::with_capacity(2 * n);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let c = r.random_range(0..3usize);
        let angle = c as f32 * 2.0 * std::f32::consts::PI / 3.0;
        x.push(2.0 * angle.cos() + noise.data()[2 * i]);
        x.push(2.0 * angle.sin() + noise.data()[2 * i + 1]);
        labels.push(c);
    }
    Dataset::classification(Tensor::from_vec(&[n, 2], x).unwrap(), labels).unwrap()
}

/// 1×8×8 images of a bright line on noise: class 0 horizontal, 1 vertical, 2 diagonal,
/// 3 anti-diagonal, at a random offset.
pub fn lines(n: usize, seed: u64) -> Dataset {
    let mut r = rng(seed);
    let mut x = Tensor::randn(&[n, 1, 8, 8], 0.0, 0.3, seed + 1);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let c = r.random_range(0..4usize);
        let off = r.random_range(1..7usize);
        let img = x.outer_mut(i);
        for k in 0..8 {
            let (y, xx) = match c {
                0 => (off, k),
                1 => (k, off),
                2 => (k, k),
                _ => (k, 7 - k),
            };
            img[y * 8 + xx] += 1.0;
        }
        labels.push(c);
    }
    Dataset::classification(x, labels).unwrap()
}

/// An F32 tensor from a safetensors file (the PyTorch fixtures in `tests/fixtures/`).
pub fn fixture_tensor(file: &safetensors::SafeTensors, name: &str) -> Tensor {
    let view = file.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    let data = view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    Tensor::from_vec(view.shape(), data).unwrap()
}

/// Asserts `ours` agrees with a reference to `tol` of the reference's largest magnitude (at least 1).
pub fn assert_close_to(ours: &Tensor, reference: &Tensor, tol: f32, what: &str) {
    assert_eq!(ours.shape(), reference.shape(), "{what}");
    let scale = reference.data().iter().fold(1.0f32, |m, v| m.max(v.abs()));
    let err = ours.max_abs_diff(reference);
    assert!(err <= tol * scale, "{what}: differs from the reference by {err} (scale {scale})");
}

/// The message of the panic `f` must raise (a test of a documented panic).
pub fn panic_message(f: impl FnOnce()) -> String {
    let err = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).expect_err("should have panicked");
    err.downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap()
}

/// A temporary directory for one test, named `backprop-{what}-…`; it and everything written into it
/// are removed when the value is dropped, so a test run leaves nothing behind in the system's
/// temporary folder.
pub fn scratch_dir(what: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(&format!("backprop-{what}-")).tempdir().expect("a temporary directory")
}

/// A file holding `bytes`, alone in its own [`scratch_dir`]; removed with it when dropped. It
/// reads as its path: `&file` works where a `&str` or an `AsRef<Path>` is expected.
pub struct ScratchFile {
    path: String,
    _dir: tempfile::TempDir,
}

impl ScratchFile {
    /// Writes `bytes` to a file called `name` in a fresh temporary directory.
    pub fn new(name: &str, bytes: impl AsRef<[u8]>) -> ScratchFile {
        let dir = scratch_dir("file");
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).expect("write a temporary file");
        ScratchFile { path: path.to_str().expect("a UTF-8 temporary path").to_owned(), _dir: dir }
    }
}

impl std::ops::Deref for ScratchFile {
    type Target = str;
    fn deref(&self) -> &str {
        &self.path
    }
}

impl AsRef<std::path::Path> for ScratchFile {
    fn as_ref(&self) -> &std::path::Path {
        std::path::Path::new(&self.path)
    }
}

/// `bytes` (a checkpoint) with `meta` as its metadata and the checksum computed anew, as the
/// crate computes it: every tensor's name, dtype, shape and bytes in name order, then every
/// other metadata pair in key order.
pub fn resealed(bytes: &[u8], mut meta: std::collections::HashMap<String, String>) -> Vec<u8> {
    let file = safetensors::SafeTensors::deserialize(bytes).unwrap();
    let mut tensors = file.tensors();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let mut crc = flate2::Crc::new();
    for (name, view) in &tensors {
        crc.update(name.as_bytes());
        crc.update(format!("{:?}", view.dtype()).as_bytes());
        view.shape().iter().for_each(|d| crc.update(&(*d as u64).to_le_bytes()));
        crc.update(view.data());
    }
    let mut keys: Vec<&String> = meta.keys().filter(|k| *k != "checksum").collect();
    keys.sort();
    for k in keys {
        crc.update(k.as_bytes());
        crc.update(&[0]);
        crc.update(meta[k].as_bytes());
        crc.update(&[0]);
    }
    meta.insert("checksum".into(), format!("{:08x}", crc.sum()));
    safetensors::serialize(tensors, Some(meta)).unwrap()
}
