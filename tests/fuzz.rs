//! The hostile-input suite: seeded, bounded mutation tests of every way data enters the crate —
//! IDX files (plain and gzip), safetensors files, PNG/JPEG images, models built from random
//! shapes and settings, and the walkthrough's command line. Each case must end in `Ok` or a clean
//! `Err` (no panic from a `Result` API, no abort, no signal), stay under a memory bound, and lose
//! nothing (a failed load leaves the model as it was).
//!
//! ```sh
//! cargo test --release --test fuzz -- --nocapture                           # the CI run, ~1 min
//! BACKPROP_FUZZ_SCALE=20 cargo test --release --test fuzz -- --nocapture    # 20× the cases
//! ```
//!
//! It prints one row per area: the table in `docs/reliability.md` comes from this output.

use backprop::data::idx::{read_idx, read_images, read_labels, write_idx};
use backprop::prelude::*;
use backprop::tensor::{Rng, rng};
use rand::RngExt;
use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

mod common;
use common::scratch_dir;

// ------------------------------------------------------------------- memory accounting

struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Relaxed) + layout.size();
        PEAK.fetch_max(live, Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            let live = LIVE.fetch_add(new_size - layout.size(), Relaxed) + new_size - layout.size();
            PEAK.fetch_max(live, Relaxed);
        } else {
            LIVE.fetch_sub(layout.size() - new_size, Relaxed);
        }
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// No single case may hold more than this at once (the largest legitimate input here is a few MB).
const MEMORY_BOUND: usize = 256 << 20;

// ------------------------------------------------------------------- bookkeeping

#[derive(Default)]
struct Tally {
    tried: usize,
    ok: usize,
    clean_errors: usize,
    panics: Vec<String>,
    over_memory: Vec<String>,
    lost: Vec<String>,
    peak: usize,
}

impl Tally {
    /// Runs one case: `f` returns Ok(true) for success, Ok(false) for a clean error, Err(what was
    /// lost) when a failure changed something it must not.
    fn case(&mut self, label: impl Fn() -> String, f: impl FnOnce() -> Result<bool, String>) {
        self.tried += 1;
        let base = LIVE.load(Relaxed);
        PEAK.store(base, Relaxed);
        match catch_unwind(AssertUnwindSafe(f)) {
            Ok(Ok(true)) => self.ok += 1,
            Ok(Ok(false)) => self.clean_errors += 1,
            Ok(Err(lost)) => self.lost.push(format!("{}: {lost}", label())),
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()));
                self.panics.push(format!("{}: {}", label(), msg.unwrap_or_default()));
            }
        }
        let used = PEAK.load(Relaxed).saturating_sub(base);
        self.peak = self.peak.max(used);
        if used > MEMORY_BOUND {
            self.over_memory.push(format!("{}: {} MiB", label(), used >> 20));
        }
    }

    fn row(&self, area: &str) -> String {
        format!(
            "| {area} | {} | {} | {} | {} | {} | {} | {:.1} |",
            self.tried,
            self.ok,
            self.clean_errors,
            self.panics.len(),
            self.over_memory.len(),
            self.lost.len(),
            self.peak as f64 / (1 << 20) as f64
        )
    }

    fn failures(&self) -> Vec<String> {
        self.panics.iter().chain(&self.over_memory).chain(&self.lost).take(5).cloned().collect()
    }
}

fn scale() -> usize {
    std::env::var("BACKPROP_FUZZ_SCALE").ok().and_then(|s| s.parse().ok()).unwrap_or(1).max(1)
}

fn scratch() -> tempfile::TempDir {
    scratch_dir("fuzz")
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

/// One random mutation of `bytes`: a truncation, bit flips, a byte run overwritten with
/// extreme values, bytes inserted, or garbage appended.
fn mutate(bytes: &[u8], r: &mut Rng) -> Vec<u8> {
    let mut out = bytes.to_vec();
    if out.is_empty() {
        return vec![r.random()];
    }
    match r.random_range(0..5) {
        0 => out.truncate(r.random_range(0..out.len())),
        1 => {
            for _ in 0..r.random_range(1..8) {
                let i = r.random_range(0..out.len());
                out[i] ^= 1 << r.random_range(0..8);
            }
        }
        2 => {
            let i = r.random_range(0..out.len());
            let v = [0x00, 0xff, 0x7f, 0x80][r.random_range(0..4)];
            let end = (i + r.random_range(1..9)).min(out.len());
            out[i..end].fill(v);
        }
        3 => {
            let i = r.random_range(0..=out.len());
            let extra: Vec<u8> = (0..r.random_range(1..64)).map(|_| r.random()).collect();
            out.splice(i..i, extra);
        }
        _ => out.extend((0..r.random_range(1..256)).map(|_| r.random::<u8>())),
    }
    out
}

// ------------------------------------------------------------------- areas

fn idx_files(t: &mut Tally, cases: usize) {
    let temporary = scratch();
    let dir = temporary.path();
    let mut r = rng(1);
    let images: Vec<u8> = (0..5 * 7 * 6).map(|i| (i * 37 % 256) as u8).collect();
    let mut valid = Vec::new();
    for (dims, data) in [(vec![5, 7, 6], images.clone()), (vec![5], vec![1, 2, 3, 4, 9])] {
        let path = dir.join("valid.idx");
        write_idx(&path, &dims, &data).unwrap();
        valid.push(std::fs::read(&path).unwrap());
    }
    // Crafted headers: huge and overflowing sizes, with little data behind them.
    let crafted: Vec<Vec<u8>> = vec![
        vec![0, 0, 8, 3, 0, 0, 0, 1, 0, 0, 0x80, 0, 0, 0, 0x80, 0],
        vec![0, 0, 8, 3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3],
        vec![0, 0, 8, 255],
        vec![0, 0, 8, 0],
        vec![0, 0, 0x0d, 1, 0, 0, 0, 4, 0, 0, 0, 0],
    ];
    for i in 0..cases {
        let base = if i % 4 == 0 { crafted[i / 4 % crafted.len()].clone() } else { valid[i % 2].clone() };
        let mut bytes = if i % 3 == 0 { base } else { mutate(&base, &mut r) };
        let compressed = i % 2 == 1;
        if compressed {
            bytes = if i % 10 == 1 { mutate(&gzip(&bytes), &mut r) } else { gzip(&bytes) };
        }
        let path = dir.join(if compressed { "case.idx.gz" } else { "case.idx" });
        std::fs::write(&path, &bytes).unwrap();
        t.case(
            || format!("idx case {i} ({} bytes{})", bytes.len(), if compressed { ", gzip" } else { "" }),
            || {
                let a = read_idx(&path).is_ok();
                let b = read_images(&path).is_ok();
                let c = read_labels(&path).is_ok();
                Ok(a || b || c)
            },
        );
    }
    // Gzip bombs: a small valid header, then far more zeros than it declares.
    for (i, zeros) in [(0, 64usize << 20), (1, 128 << 20)] {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&[0, 0, 8, 1, 0, 0, 0, 10]).unwrap();
        let block = vec![0u8; 1 << 20];
        for _ in 0..zeros >> 20 {
            gz.write_all(&block).unwrap();
        }
        let path = dir.join("bomb.idx.gz");
        std::fs::write(&path, gz.finish().unwrap()).unwrap();
        t.case(|| format!("gzip bomb {i}"), || Ok(read_idx(&path).is_ok()));
    }
}

fn small_model(seed: u64) -> Sequential {
    Sequential::builder(&[1, 6, 6])
        .add(Conv2d::new(1, 2, 3))
        .add(BatchNorm2d::new(2))
        .add(Relu::new())
        .add(MaxPool2d::new(2))
        .add(Flatten::new())
        .add(Dense::new(8, 3))
        .seed(seed)
        .build()
        .unwrap()
}

fn safetensors_files(t: &mut Tally, cases: usize) {
    let mut r = rng(2);
    let valid = small_model(1).to_safetensors().unwrap();
    let dir = scratch();
    let path = dir.path().join("fuzz.safetensors");
    for i in 0..cases {
        let bytes = mutate(&valid, &mut r);
        t.case(
            || format!("safetensors case {i} ({} bytes)", bytes.len()),
            || {
                let mut m = small_model(2);
                let before = m.state_dict();
                // From bytes, and from a file through both entry points (`io::load` and
                // `Sequential::load`, which the inventory had counted as fuzzed by an atomic's
                // `.load(`).
                let loaded = match i % 3 {
                    0 => m.load_safetensors(&bytes, "fuzz.safetensors"),
                    k => {
                        std::fs::write(&path, &bytes).map_err(|e| e.to_string())?;
                        if k == 1 { backprop::io::load(&mut m, &path) } else { m.load(&path) }
                    }
                };
                match loaded {
                    Ok(()) => Ok(true),
                    Err(_) if m.state_dict() == before => Ok(false),
                    Err(e) => Err(format!("a failed load changed the model ({e})")),
                }
            },
        );
    }
}

/// Mutated checkpoints: read (an error or a checkpoint), then resumed into a model; a refused
/// resume must leave the model and the optimizer as they were.
fn checkpoint_files(t: &mut Tally, cases: usize) {
    use backprop::optim::OptimizerState;
    use backprop::train::{Checkpoint, Checkpoints};
    let temporary = scratch();
    let dir = temporary.path().join("checkpoints");
    let data = Dataset::classification(
        Tensor::rand_uniform(&[12, 1, 6, 6], 0.0, 1.0, 3),
        (0..12).map(|i| i % 3).collect(),
    )
    .unwrap();
    fn options<'a>() -> FitOptions<'a> {
        FitOptions::new().epochs(1).batch_size(4).seed(1).verbose(false)
    }
    let keep = Checkpoints::in_dir(&dir);
    small_model(1)
        .fit(&data, &CrossEntropyLoss::new(), &mut Adam::new(0.01), options().checkpoints(keep.clone()))
        .unwrap();
    let valid = std::fs::read(keep.last_path()).unwrap();
    let mut r = rng(9);
    for i in 0..cases {
        // Damaged files (the checksum catches them), files edited and resealed with a checksum
        // that matches (the parser and the resume must catch those), now and then the valid one.
        let bytes = match i % 50 {
            0 => valid.clone(),
            k if k % 2 == 0 => mutate(&valid, &mut r),
            _ => edited_and_resealed(&valid, &mut r),
        };
        t.case(
            || format!("checkpoint case {i} ({} bytes)", bytes.len()),
            || {
                let Ok(c) = Checkpoint::from_bytes(bytes.clone(), "fuzz.safetensors") else {
                    return Ok(false);
                };
                let (mut m, mut opt) = (small_model(2), Adam::new(0.01));
                let before = m.state_dict();
                match m.fit(&data, &CrossEntropyLoss::new(), &mut opt, options().epochs(2).resume(&c)) {
                    Ok(_) => Ok(true),
                    // Resumed, then the training from those (finite, absurd) weights diverged.
                    Err(Error::NonFinite { .. } | Error::Training { .. }) => Ok(true),
                    Err(e) => {
                        let mut state = OptimizerState::default();
                        opt.save_state(&mut state);
                        if m.state_dict() == before && state.is_empty() {
                            Ok(false)
                        } else {
                            Err(format!("a refused resume changed the model or the optimizer ({e})"))
                        }
                    }
                }
            },
        );
    }
}

/// A checkpoint with one metadata value (a leaf of its JSON, or the whole string) or a few bytes
/// of its tensors' data replaced by a hostile one, and the checksum computed anew: what a file
/// written by hand, or by another program, may hold.
fn edited_and_resealed(valid: &[u8], r: &mut Rng) -> Vec<u8> {
    use serde_json::{Value, json};
    let (header_len, header) = safetensors::SafeTensors::read_metadata(valid).unwrap();
    let mut meta = header.metadata().clone().unwrap();
    if r.random_range(0..4) == 0 {
        // Tensor data: bytes of a weight (a NaN, an infinity, a huge or a denormal value).
        let mut bytes = valid.to_vec();
        let data = 8 + header_len;
        let at = data + r.random_range(0..(bytes.len() - data) / 4) * 4;
        let v = [f32::NAN, f32::INFINITY, -1e38, 1e-45][r.random_range(0..4)];
        bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
        return common::resealed(&bytes, meta);
    }
    let mut keys: Vec<String> = meta.keys().filter(|k| *k != "checksum").cloned().collect();
    keys.sort();
    let key = keys[r.random_range(0..keys.len())].clone();
    let hostile = |r: &mut Rng| -> Value {
        let values = [
            json!(-1),
            json!(0),
            json!(u64::MAX),
            json!(i64::MIN),
            json!(1e300),
            json!(0.5),
            json!("NaN"),
            json!("-inf"),
            json!("x"),
            json!(null),
            json!([]),
            json!({}),
            json!({"s": [0, 0, 0, 0]}),
            json!([1, 2, 3, 4]),
        ];
        values[r.random_range(0..values.len())].clone()
    };
    let edited = match serde_json::from_str::<Value>(&meta[&key]) {
        Ok(mut v) if r.random_range(0..4) != 0 => {
            edit_somewhere(&mut v, r, &hostile);
            v.to_string()
        }
        // The whole value: hostile JSON, or not JSON at all.
        _ if r.random_range(0..2) == 0 => hostile(r).to_string(),
        _ => ["", "{", "1e999", "-0", "\u{0}", "99999999999999999999999"][r.random_range(0..6)].to_string(),
    };
    meta.insert(key, edited);
    common::resealed(valid, meta)
}

/// Walks down `v` to a random leaf (or stops on the way) and replaces it by a hostile value, or
/// drops an object's field.
fn edit_somewhere(v: &mut serde_json::Value, r: &mut Rng, hostile: &dyn Fn(&mut Rng) -> serde_json::Value) {
    use serde_json::Value;
    let stop = r.random_range(0..4) == 0;
    match v {
        Value::Object(m) if !m.is_empty() && !stop => {
            let k = m.keys().nth(r.random_range(0..m.len())).unwrap().clone();
            if r.random_range(0..6) == 0 {
                m.remove(&k);
            } else {
                edit_somewhere(m.get_mut(&k).unwrap(), r, hostile);
            }
        }
        Value::Array(a) if !a.is_empty() && !stop => {
            let i = r.random_range(0..a.len());
            edit_somewhere(&mut a[i], r, hostile);
        }
        leaf => *leaf = hostile(r),
    }
}

#[cfg(feature = "image")]
fn images(t: &mut Tally, cases: usize) {
    use backprop::data::image_folder::{ColorMode, load_image};
    let temporary = scratch();
    let dir = temporary.path();
    let mut r = rng(3);
    let mut valid = Vec::new();
    for name in ["v.png", "v.jpg"] {
        let path = dir.join(name);
        image::RgbImage::from_fn(9, 7, |x, y| image::Rgb([(x * 20) as u8, (y * 30) as u8, 99]))
            .save(&path)
            .unwrap();
        valid.push(std::fs::read(&path).unwrap());
    }
    // A PNG header claiming 100000×100000 pixels (IHDR patched; the CRC check may catch it first).
    let mut huge = valid[0].clone();
    huge[16..20].copy_from_slice(&100_000u32.to_be_bytes());
    huge[20..24].copy_from_slice(&100_000u32.to_be_bytes());
    for i in 0..cases {
        let bytes = if i % 25 == 0 { huge.clone() } else { mutate(&valid[i % 2], &mut r) };
        let path = dir.join(if i % 2 == 0 { "case.png" } else { "case.jpg" });
        std::fs::write(&path, &bytes).unwrap();
        let size = [(4, 4), (28, 28), (0, 3), (40_000, 40_000)][r.random_range(0..4)];
        let color = if i % 3 == 0 { ColorMode::Rgb } else { ColorMode::Gray };
        t.case(
            || format!("image case {i} ({} bytes, size {size:?})", bytes.len()),
            || Ok(load_image(&path, size, color).is_ok()),
        );
    }
}

/// A random layer with hostile settings (but weights small enough to allocate).
fn random_layer(r: &mut Rng) -> Box<dyn Layer> {
    let small = |r: &mut Rng| [0usize, 1, 2, 3, 4, 8][r.random_range(0..6)];
    let wild =
        |r: &mut Rng| [0usize, 1, 2, 3, 5, 1 << 31, 1 << 62, 1 << 63, usize::MAX][r.random_range(0..9)];
    match r.random_range(0..17) {
        0 => Box::new(Dense::new(small(r), small(r))),
        1 => Box::new(
            Conv2d::new(small(r), small(r), small(r))
                .stride(wild(r))
                .padding(wild(r))
                .dilation(wild(r).min(1 << 40)),
        ),
        2 => Box::new(MaxPool2d::new(small(r)).stride(wild(r)).padding(wild(r))),
        3 => Box::new(AvgPool2d::new(small(r)).stride(wild(r)).padding(wild(r))),
        4 => Box::new(Flatten::new()),
        5 => Box::new(Relu::new()),
        6 => Box::new(BatchNorm1d::new(small(r))),
        7 => Box::new(BatchNorm2d::new(small(r))),
        8 => Box::new(GlobalAvgPool::new()),
        9 => Box::new(Dropout::new(0.5)),
        10 => Box::new(Residual::new(Sequential::new().add(Dense::new(small(r), small(r))))),
        11 => match r.random_range(0..2) {
            0 => Box::new(LayerNorm::new(small(r)).eps([0.0, 1e-5, 1e3][r.random_range(0..3)])),
            _ => Box::new(LayerNorm::new(small(r)).without_affine()),
        },
        12 => {
            let heads = [1usize, 2, 4][r.random_range(0..3)];
            let attn = MultiHeadAttention::new(heads * small(r), heads);
            if r.random_range(0..2) == 0 { Box::new(attn.causal()) } else { Box::new(attn) }
        }
        13 => {
            let heads = [1usize, 2][r.random_range(0..2)];
            let block = backprop::layers::TransformerEncoderLayer::new(heads * small(r), heads, small(r));
            if r.random_range(0..2) == 0 { Box::new(block.norm_first()) } else { Box::new(block) }
        }
        14 => Box::new(backprop::layers::SinusoidalPositions::new(small(r))),
        15 => Box::new(backprop::layers::PositionEmbedding::new(small(r), small(r))),
        _ => Box::new(LogSoftmax::new()),
    }
}

/// Every window attribute (`kernel_shape`, `strides`, `pads`, `dilations`) of an exported graph's
/// nodes is an int64 ≥ 0: a setting past `i64::MAX` written as a negative number is a graph
/// no runtime takes (a stride of `usize::MAX` had been exported as −1).
fn window_attributes_are_int64(model: &[u8]) -> Result<(), String> {
    use backprop::onnx::proto::{Value, decode};
    /// A field's nested message (wire type 2).
    fn nested<'a>(v: &Value<'a>) -> Result<Vec<(u32, Value<'a>)>, String> {
        match v {
            Value::Bytes(b) => decode(b),
            other => Err(format!("a message field holds {other:?}")),
        }
    }
    let graphs: Vec<_> = decode(model)?.into_iter().filter(|(f, _)| *f == 7).collect();
    for (_, graph) in &graphs {
        for (_, node) in nested(graph)?.iter().filter(|(f, _)| *f == 1) {
            for (_, attribute) in nested(node)?.iter().filter(|(f, _)| *f == 5) {
                let fields = nested(attribute)?;
                let name = fields.iter().find_map(|(f, v)| match (f, v) {
                    (1, Value::Bytes(b)) => Some(String::from_utf8_lossy(b).into_owned()),
                    _ => None,
                });
                let name = name.ok_or("an attribute without a name")?;
                if !["kernel_shape", "strides", "pads", "dilations"].contains(&name.as_str()) {
                    continue;
                }
                for (_, v) in fields.iter().filter(|(f, _)| *f == 8) {
                    if matches!(v, Value::Varint(x) if (*x as i64) < 0) {
                        return Err(format!("ONNX attribute {name} holds a negative value ({v:?})"));
                    }
                }
            }
        }
    }
    Ok(())
}

/// A decoder-only Transformer of random sizes: it reads token ids, so it can only come first.
fn random_decoder(r: &mut Rng) -> Box<dyn Layer> {
    let small = |r: &mut Rng| [0usize, 1, 2, 3, 4, 8][r.random_range(0..6)];
    let heads = [1usize, 2][r.random_range(0..2)];
    let gpt =
        backprop::layers::DecoderOnly::new(small(r), heads * small(r), heads, small(r), small(r), small(r));
    if r.random_range(0..2) == 0 { Box::new(gpt.tied()) } else { Box::new(gpt) }
}

/// The attention functions and builders that return `Result`: shapes that do not fit each other
/// (zeros included), values that are NaN or infinite, lengths of 0, past the end or absurd, and
/// PyTorch masks holding anything — `Ok` or a clean error, never a panic.
fn attention_functions(t: &mut Tally, cases: usize) {
    use backprop::layers::attention::{
        TorchMask, causal_from_torch, key_padding_from_torch, scaled_dot_product_attention,
        scaled_dot_product_attention_backward,
    };
    let mut r = rng(9);
    // 16: a width the AVX-512 head kernel takes (values 16 wide), so its unsafe loads and stores
    // meet odd shapes, lengths and masks too.
    let dims = [0usize, 1, 2, 3, 5, 16];
    let values = [0.0f32, 1.0, -1.0, 0.5, f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1e30];
    let lengths = [0usize, 1, 2, 3, 6, usize::MAX];
    for i in 0..cases {
        let shape = |r: &mut Rng, rank: usize| -> Vec<usize> {
            (0..rank).map(|_| dims[r.random_range(0..dims.len())]).collect()
        };
        let tensor = |r: &mut Rng, shape: &[usize]| {
            let n: usize = shape.iter().product();
            Tensor::from_vec(shape, (0..n).map(|_| values[r.random_range(0..values.len())]).collect())
                .unwrap()
        };
        let pick_lengths = |r: &mut Rng| -> Option<Vec<usize>> {
            (r.random_range(0..2) == 0)
                .then(|| (0..r.random_range(0..4)).map(|_| lengths[r.random_range(0..6)]).collect())
        };
        let kind = r.random_range(0..7);
        let ranks = [r.random_range(2..5), r.random_range(2..5), r.random_range(2..5)];
        let (mut sq, mut sk, mut sv) =
            (shape(&mut r, ranks[0]), shape(&mut r, ranks[1]), shape(&mut r, ranks[2]));
        if kind == 5 {
            // Shapes that fit each other ([N, H, T_q, d], [N, H, T_k, d], [N, H, T_k, d_v]), so that
            // the forward and backward passes run, the head kernel's included, on odd sizes.
            let [n, h, tq, tk, d, dv] = [0; 6].map(|_| dims[r.random_range(0..dims.len())]);
            (sq, sk, sv) = (vec![n, h, tq, d], vec![n, h, tk, d], vec![n, h, tk, dv]);
        }
        let heads = [1usize, 2, 4][r.random_range(0..3)];
        if kind == 6 {
            // Cross-attention with fitting shapes ([N, T_q, E] to [N, T_k, E], E a multiple of the
            // heads: 16-wide heads among them), forward and backward, with random lengths.
            let [n, tq, tk] = [0; 3].map(|_| dims[r.random_range(0..dims.len())]);
            let e = heads * [1usize, 2, 3, 16][r.random_range(0..4)];
            (sq, sk) = (vec![n, tq, e], vec![n, tk, e]);
        }
        if kind == 4 {
            // LayerNorm's γ and β: [E] each (β one too long now and then), values of any kind.
            let e = sq[0];
            (sk, sv) = (vec![e], vec![[e, e, e + 1][r.random_range(0..3)]]);
        }
        let (q, k, v) = (tensor(&mut r, &sq), tensor(&mut r, &sk), tensor(&mut r, &sv));
        let (l1, l2, causal) = (pick_lengths(&mut r), pick_lengths(&mut r), r.random_range(0..2) == 0);
        let form = [TorchMask::TrueMasks, TorchMask::TrueAllows, TorchMask::Additive][r.random_range(0..3)];
        let label =
            format!("attention case {i}: kind {kind}, shapes {sq:?} {sk:?} {sv:?}, lengths {l1:?} {l2:?}");
        t.case(
            || label.clone(),
            move || {
                let ok = match kind {
                    0 | 5 => match scaled_dot_product_attention(&q, &k, &v, causal, l1.as_deref()) {
                        Ok((o, p)) => {
                            // The forward pass's own shapes must be accepted by its backward.
                            scaled_dot_product_attention_backward(&q, &k, &v, &p, &o)
                                .map_err(|e| format!("the backward refused the forward's own shapes: {e}"))?;
                            true
                        }
                        Err(_) => false,
                    },
                    1 => key_padding_from_torch(&q, form).is_ok(),
                    2 => causal_from_torch(&q, form).is_ok(),
                    3 => {
                        let e = *sq.last().unwrap_or(&1);
                        let heads = if e % 2 == 0 && e > 0 { 2 } else { 1 };
                        let mut attn = MultiHeadAttention::new(e, heads);
                        attn.forward_cross(&q, l1.as_deref(), &k, l2.as_deref()).is_ok()
                    }
                    6 => {
                        let mut attn = MultiHeadAttention::new(sq[2], heads);
                        match attn.forward_cross(&q, l1.as_deref(), &k, l2.as_deref()) {
                            Ok(y) => {
                                let (dq, dm) = attn.backward_cross(&y);
                                if dq.shape() != q.shape() || dm.shape() != k.shape() {
                                    return Err(format!("gradients {:?} {:?}", dq.shape(), dm.shape()));
                                }
                                true
                            }
                            Err(_) => false,
                        }
                    }
                    _ => {
                        let finite = k.data().iter().chain(v.data()).all(|x| x.is_finite());
                        match LayerNorm::new(sq[0]).with_affine(k, v) {
                            Ok(_) if !finite => {
                                return Err("with_affine took a weight that is not finite".into());
                            }
                            taken => taken.is_ok(),
                        }
                    }
                };
                Ok(ok)
            },
        );
    }
}

fn models(t: &mut Tally, cases: usize) {
    let mut r = rng(4);
    for i in 0..cases {
        let dims = [0usize, 1, 2, 3, 4, 6, 8, 1 << 31, 1 << 62];
        let input: Vec<usize> =
            (0..r.random_range(1..4)).map(|_| dims[r.random_range(0..dims.len())]).collect();
        let mut layers: Vec<Box<dyn Layer>> =
            (0..r.random_range(1..5)).map(|_| random_layer(&mut r)).collect();
        let ids = r.random_range(0..8) == 0; // a model that reads token ids
        if ids {
            layers.insert(0, random_decoder(&mut r));
        }
        let names: Vec<String> = layers.iter().map(|l| l.describe()).collect();
        let seed = r.random::<u64>();
        let label = format!("model case {i}: input {input:?}, layers {names:?}");
        t.case(
            || label.clone(),
            move || {
                let mut builder = Sequential::builder(&input).seed(seed);
                for l in layers {
                    builder = builder.add_boxed(l);
                }
                let Ok(mut model) = builder.build() else { return Ok(false) };
                let mut shape = vec![3];
                shape.extend_from_slice(&input);
                if backprop::tensor::checked_numel(&shape).is_none_or(|n| n > 1 << 20) {
                    return Ok(true);
                }
                let x = Tensor::randn(&shape, 0.0, 1.0, seed);
                // Ids for a model that reads them: whole numbers, some possibly out of range.
                let x = if ids { x.map(|v| (v.abs() * 3.0).floor()) } else { x };
                let y = match model.predict(&x, 2) {
                    Err(e) if ids && !e.to_string().is_empty() => return Ok(false), // an out-of-range id: a clean error
                    y => y.map_err(|e| format!("predict on a built model failed: {e}"))?,
                };
                // ONNX export of any model: a graph or a refusal naming the layer, never a panic.
                if let Ok(bytes) = backprop::onnx::to_bytes(&model, &input) {
                    window_attributes_are_int64(&bytes)?;
                }
                let targets = Tensor::zeros(y.shape());
                let data = Dataset::regression(x, targets).map_err(|e| e.to_string())?;
                let fit = model.fit(
                    &data,
                    &MseLoss::new(),
                    &mut Sgd::new(0.01),
                    FitOptions::new().batch_size(2).verbose(false),
                );
                Ok(fit.is_ok())
            },
        );
    }
}

/// Side information and the wave-3 surfaces: sequence lengths (0, above T, huge, wrong counts),
/// named inputs (missing, duplicated, mismatched sample counts), recurrent states of any shape,
/// DP settings of any value — through `Dataset`, `fit`, `evaluate`, `predict_with_lengths`,
/// `predict_inputs`, `forward_with_state`, `forward_embedded` and `fit_private`. A failed `fit` leaves the model as
/// it was.
fn side_information(t: &mut Tally, cases: usize) {
    use backprop::layers::{Pass, RecurrentState};
    use backprop::model::Inputs;
    use backprop::privacy::{DpOptions, fit_private};
    let mut r = rng(5);
    let counts = [0usize, 1, 2, 3, 4, 5, usize::MAX];
    let values = [0usize, 1, 2, 3, 4, 5, 6, 1 << 20, usize::MAX];
    let floats = [0.0, -1.0, 1e-9, 0.5, 1.0, 2.0, f64::NAN, f64::INFINITY, 1e300];
    for i in 0..cases {
        let (n, steps) = (r.random_range(1..5usize), r.random_range(1..5usize));
        let count =
            if r.random_range(0..3) == 0 { counts[r.random_range(0..counts.len())].min(8) } else { n };
        let lengths: Vec<usize> = (0..count).map(|_| values[r.random_range(0..values.len())]).collect();
        let kind = r.random_range(0..7);
        let seed = r.random::<u64>();
        let odd_id = floats[r.random_range(0..floats.len())] as f32;
        let pick = |r: &mut Rng| floats[r.random_range(0..floats.len())];
        let dp = DpOptions {
            epochs: r.random_range(0..3),
            sample_rate: pick(&mut r),
            clip: pick(&mut r) as f32,
            noise_multiplier: pick(&mut r),
            delta: pick(&mut r),
            seed,
        };
        let state_shape = [r.random_range(0..6usize), r.random_range(0..7usize)];
        let label = format!(
            "side information case {i}: kind {kind}, n {n}, T {steps}, lengths {lengths:?}, {dp:?}, state {state_shape:?}"
        );
        t.case(
            || label.clone(),
            move || {
                let ids = Tensor::from_fn(&[n, steps], |i| ((i[0] + i[1]) % 5) as f32);
                let mut model = Sequential::builder(&[steps])
                    .add(Embedding::new(5, 3))
                    .add(Lstm::new(3, 4).last_step_only())
                    .add(Dense::new(4, 2))
                    .seed(seed)
                    .build()
                    .map_err(|e| e.to_string())?;
                let before = model.state_dict();
                let labels: Vec<usize> = (0..n).map(|i| i % 2).collect();
                let loss = CrossEntropyLoss::new();
                let outcome = match kind {
                    0 => {
                        let Ok(data) =
                            Dataset::classification(ids, labels).and_then(|d| d.with_lengths(lengths))
                        else {
                            return Ok(false);
                        };
                        model
                            .fit(
                                &data,
                                &loss,
                                &mut Adam::new(0.01),
                                FitOptions::new().batch_size(2).verbose(false),
                            )
                            .is_ok()
                    }
                    1 => model.predict_with_lengths(&ids, &lengths, 2).is_ok(),
                    2 => {
                        let inputs = Inputs::new().with_lengths("input", ids, lengths);
                        backprop::train::predict_inputs(&mut model, &inputs, 2).is_ok()
                    }
                    3 => {
                        let mut lstm = Lstm::new(2, 4);
                        let x = Tensor::randn(&[n, steps, 2], 0.0, 1.0, seed);
                        let h = Tensor::zeros(&state_shape);
                        let state = RecurrentState::hc(h.clone(), h);
                        let pass = Pass::TRAIN.with_lengths(&lengths);
                        lstm.forward_with_state(&x, Some(&state), pass).is_ok()
                    }
                    4 => {
                        let data = Dataset::classification(ids, labels).map_err(|e| e.to_string())?;
                        let ok = fit_private(&mut model, &data, &loss, &mut Sgd::new(0.1), &dp).is_ok();
                        if !ok && model.state_dict() != before {
                            return Err("a failed private fit changed the model".into());
                        }
                        ok
                    }
                    6 => {
                        // forward_embedded: ids of any value, an embedding of the wrong width
                        // now and then, the lengths above.
                        let embedding = Embedding::new(5, if seed % 4 == 0 { 2 } else { 3 });
                        let mut lstm = Lstm::new(3, 4);
                        let ids =
                            Tensor::from_fn(
                                &[n, steps],
                                |i| if (i[0] + i[1]) % 3 == 1 { odd_id } else { 1.0 },
                            );
                        lstm.forward_embedded(&embedding, &ids, Pass::TRAIN.with_lengths(&lengths)).is_ok()
                    }
                    _ => {
                        // Named inputs that do not fit together.
                        let other = Tensor::zeros(&[count.min(6), steps]);
                        let inputs = Inputs::new().with("input", ids).with("extra", other);
                        Dataset::from_inputs(inputs, Targets::Classes(labels))
                            .map(|d| model.evaluate(&d, &loss, 2).is_ok())
                            .unwrap_or(false)
                    }
                };
                if !outcome && kind != 4 && model.state_dict() != before {
                    return Err("a failed call changed the model".into());
                }
                Ok(outcome)
            },
        );
    }
}

/// Knowledge-tracing files (both formats, mutated), the simulator's sizes, schedule and
/// accountant arguments, tensors from raw parts, padding masks.
fn knowledge_and_settings(t: &mut Tally, cases: usize) {
    use backprop::data::knowledge::{SimulationOptions, read_csv, read_three_line, simulate};
    let temporary = scratch();
    let dir = temporary.path();
    let mut r = rng(6);
    let three_line = b"3\n0,1,2\n1,0,1\n4\n2,2,1,0\n0,1,1,1\n".to_vec();
    let csv = b"q1,q2,q3\n1,0,1\n0,0,1\n1,1,1\n".to_vec();
    let floats = [0.0f64, -1.0, 1e-300, 1e-9, 0.01, 0.5, 1.0, 1.5, 2.0, 1e30, f64::NAN, f64::INFINITY];
    let sizes = [0usize, 1, 2, 3, 50, 1 << 20, 10_000_000_000, usize::MAX];
    for i in 0..cases {
        let kind = i % 6;
        let pick = |r: &mut Rng| floats[r.random_range(0..floats.len())];
        let bytes = mutate(if kind == 0 { &three_line } else { &csv }, &mut r);
        let (a, b, c) = (pick(&mut r), pick(&mut r), pick(&mut r));
        let (n, m) = (sizes[r.random_range(0..sizes.len())], sizes[r.random_range(0..sizes.len())]);
        let path = dir.join(format!("kt_{i}.txt"));
        let label = format!("knowledge/settings case {i}: kind {kind}, floats {a} {b} {c}, sizes {n} {m}");
        t.case(
            || label.clone(),
            move || {
                Ok(match kind {
                    0 | 1 => {
                        std::fs::write(&path, &bytes).map_err(|e| e.to_string())?;
                        // The format told from the content must agree with the reader chosen
                        // for it; read_concepts must refuse or accept without panicking.
                        let sniffed = backprop::data::knowledge::Format::sniff(&path);
                        let via_read = backprop::data::knowledge::read(&path, None);
                        let _ = backprop::data::knowledge::read_concepts(&path);
                        let h = if kind == 0 { read_three_line(&path) } else { read_csv(&path) };
                        if let (Ok(f), Ok(h)) = (&sniffed, &h) {
                            let expected = if kind == 0 {
                                backprop::data::knowledge::Format::ThreeLine
                            } else {
                                backprop::data::knowledge::Format::Csv
                            };
                            if *f == expected && via_read.as_ref().ok() != Some(h) {
                                return Err("read(None) differs from the reader of the sniffed format".into());
                            }
                        }
                        let _ = std::fs::remove_file(&path);
                        match h {
                            Ok(h) if h.items > backprop::data::knowledge::MAX_ITEM_ID + 1 => {
                                return Err(format!("{} items read, above the limit", h.items));
                            }
                            Ok(h) => {
                                if let Err(e) = h.check() {
                                    return Err(format!("a reader's histories fail Histories::check: {e}"));
                                }
                                // Damaged through the public fields (one answer fewer than items):
                                // refused by windows, never a panic.
                                if !h.students.is_empty() {
                                    let mut damaged = h.clone();
                                    damaged.students[0].correct.pop();
                                    if damaged.windows(n.max(2)).is_ok() {
                                        return Err(
                                            "windows took a student with fewer answers than items".into()
                                        );
                                    }
                                }
                                // Windows of a hostile length: refused below 2, else every answer
                                // after a student's first predicted exactly once.
                                let predicted = |h: &backprop::data::knowledge::Histories| {
                                    h.students.iter().map(|a| a.len().saturating_sub(1)).sum::<usize>()
                                };
                                match h.windows(n) {
                                    Ok(w) if predicted(&w) != predicted(&h) || w.longest() > n => {
                                        return Err(format!("windows({n}) changed what is predicted"));
                                    }
                                    Ok(_) => true,
                                    Err(_) if n < 2 => false,
                                    Err(e) => return Err(format!("windows({n}) refused: {e}")),
                                }
                            }
                            Err(_) => false,
                        }
                    }
                    2 => {
                        // Small simulations run; sizes past the documented limits must be refused
                        // (without allocating); valid but large ones are not run here.
                        use backprop::data::knowledge::MAX_SIMULATED;
                        let o = SimulationOptions { students: n, items: m, ..SimulationOptions::default() };
                        let answers = n.checked_mul(m);
                        let valid =
                            n <= MAX_SIMULATED && m <= MAX_SIMULATED && answers.is_some_and(|a| a <= 1 << 31);
                        if valid && answers.is_some_and(|a| a > 100_000) {
                            return Ok(true);
                        }
                        simulate(&o).is_ok()
                    }
                    3 => {
                        let s = [
                            Schedule::step(n.min(1000), a).is_ok(),
                            Schedule::exponential(b).is_ok(),
                            Schedule::cosine(m.min(1000), c as f32).is_ok(),
                            Schedule::constant().with_warmup(n.min(1000), a as f32).is_ok(),
                        ];
                        s.iter().all(|&ok| ok)
                    }
                    4 => backprop::privacy::noise_multiplier_for(a, b.min(2.0), (n.min(1000)) as u64, c)
                        .is_ok(),
                    _ => {
                        let shape = [n.min(1 << 40), m.min(1 << 40)];
                        let v = Tensor::from_vec(&shape, vec![0.0; 6]);
                        let r = Tensor::zeros(&[2, 3]).try_reshape(&shape);
                        let mut targets = Tensor::zeros(&[2, 3]);
                        let masked = backprop::loss::mask_padding(&mut targets, &[n.min(9), m.min(9)]);
                        v.is_ok() && r.is_ok() && masked.is_ok()
                    }
                })
            },
        );
    }
}

fn walkthrough_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let bin = exe.parent()?.parent()?.join("examples").join("image_classify");
    bin.exists().then_some(bin)
}

/// Runs a command-line case: exit 0 is `Ok(true)`, exit 1 or 2 with a message `Ok(false)` (a
/// clean refusal); a signal, a panic or any other exit is an `Err`.
fn run_cli(command: &mut std::process::Command) -> Result<bool, String> {
    let run = command.output().map_err(|e| e.to_string())?;
    let stderr = String::from_utf8_lossy(&run.stderr);
    match run.status.code() {
        None => Err(format!("killed by a signal ({:?}): {stderr}", run.status)),
        Some(_) if stderr.contains("panicked") => Err(format!("panicked: {stderr}")),
        Some(0) => Ok(true),
        Some(1 | 2) if !stderr.trim().is_empty() => Ok(false),
        Some(code) => Err(format!("exit code {code} with stderr {stderr:?}")),
    }
}

/// The knowledge-tracing example's command line with hostile options and mutated files, run as a
/// child process: exit 0, or exit 1/2 with a message; never a panic, an abort or a signal.
fn kt_cli(t: &mut Tally, cases: usize) {
    let Some(bin) =
        walkthrough_binary().map(|b| b.with_file_name("knowledge_tracing")).filter(|b| b.exists())
    else {
        eprintln!("knowledge_tracing binary not built: skipping its CLI area");
        return;
    };
    let temporary = scratch();
    let dir = temporary.path();
    let mut r = rng(8);
    let three_line = b"5\n0,1,2,1,0\n1,0,1,1,0\n4\n2,2,1,0\n0,1,1,1\n3\n1,2,0\n1,1,0\n".repeat(3);
    let csv = b"1,0,1,1\n0,0,1,0\n1,1,1,1\n0,1,0,1\n".repeat(3);
    let mut files = vec!["/nonexistent".to_string(), "Cargo.toml".to_string()];
    for k in 0..12 {
        let (base, ext) = if k % 2 == 0 { (&three_line, "txt") } else { (&csv, "csv") };
        let bytes = if k < 2 { base.clone() } else { mutate(base, &mut r) };
        let path = dir.join(format!("kt_cli_{k}.{ext}"));
        std::fs::write(&path, bytes).unwrap();
        files.push(path.to_string_lossy().into_owned());
    }
    let files: Vec<&str> = files.iter().map(String::as_str).collect();
    let groups: Vec<Vec<&str>> = vec![
        [&["--data"][..], &files].concat(),
        [&["--test"][..], &files].concat(),
        vec!["--epochs", "0", "1", "abc"],
        vec!["--hidden", "0", "1", "4", "5000"],
        vec!["--dropout", "-1", "0", "0.5", "1", "1.5", "NaN"],
        vec!["--lr", "nan", "-1", "inf", "1e30", "0", "0.01"],
        vec!["--window", "0", "1", "2", "3", "200", "4294967296"],
        vec!["--dp-epsilon", "0", "-1", "NaN", "1e-300", "3", "1e300"],
        vec!["--dp-delta", "0", "1", "NaN", "1e-5"],
        vec!["--dp-clip", "0", "-1", "NaN", "1"],
        vec!["--seed", "0", "18446744073709551615", "-5"],
        vec!["--format", "csv", "lines", "xml"],
        [&["--concepts"][..], &files].concat(),
        vec!["--batch", "0", "1", "7", "5000"],
        vec!["--val", "-0.1", "0", "0.3", "0.5", "0.9", "NaN"],
        vec!["--patience", "0", "1", "-1"],
        vec!["--simulation", "paper", "narrow", "other"],
        vec!["--model", "dkt", "sakt", "sakt", "transformer"],
        vec!["--heads", "0", "1", "3", "4", "65"],
        vec!["--embed", "1", "6", "8", "64"],
    ];
    let out = dir.join("kt_out").to_string_lossy().into_owned();
    for i in 0..cases {
        let mut args: Vec<String> = vec!["--quiet".into(), "--out".into(), out.clone()];
        for group in &groups {
            if r.random_range(0..6) == 0 {
                args.push(group[0].into());
                args.push(group[r.random_range(1..group.len())].into());
            }
        }
        for (flag, default) in [("--data", files[2]), ("--epochs", "1"), ("--hidden", "4")] {
            if !args.iter().any(|a| a == flag) {
                args.extend([flag.to_string(), default.to_string()]);
            }
        }
        let shown = args.join(" ");
        t.case(
            || format!("knowledge-tracing cli case {i}: {shown}"),
            || run_cli(std::process::Command::new(&bin).args(&args).env("RAYON_NUM_THREADS", "1")),
        );
    }
}

fn cli(t: &mut Tally, cases: usize) {
    let Some(bin) = walkthrough_binary() else {
        eprintln!("walkthrough binary not built: skipping the CLI area");
        return;
    };
    let temporary = scratch();
    let dir = temporary.path();
    // A tiny MNIST-format folder (20 + 10 images) so that runs that do train finish at once.
    let data = dir.join("tiny");
    std::fs::create_dir_all(&data).unwrap();
    let pixels = |n: usize| (0..n * 28 * 28).map(|i| (i * 7 % 256) as u8).collect::<Vec<u8>>();
    write_idx(data.join("train-images-idx3-ubyte"), &[20, 28, 28], &pixels(20)).unwrap();
    write_idx(
        data.join("train-labels-idx1-ubyte"),
        &[20],
        &(0..20).map(|i| (i % 10) as u8).collect::<Vec<_>>(),
    )
    .unwrap();
    write_idx(data.join("t10k-images-idx3-ubyte"), &[10, 28, 28], &pixels(10)).unwrap();
    write_idx(data.join("t10k-labels-idx1-ubyte"), &[10], &(0..10).map(|i| i as u8).collect::<Vec<_>>())
        .unwrap();
    // Model files with hostile metadata for --predict.
    let model_file = |name: &str, meta: &[(&str, &str)]| -> PathBuf {
        let path = dir.join(name);
        let owned: Vec<(&str, String)> = meta.iter().map(|(k, v)| (*k, v.to_string())).collect();
        small_model(1).save_with_metadata(&path, &owned).unwrap();
        path
    };
    let good_meta =
        [("input_shape", "1,28,28"), ("classes", "10"), ("normalize_mean", "0.1"), ("normalize_std", "0.3")];
    let mut models = vec![model_file("plain.safetensors", &[])];
    for (k, bad) in [
        ("input_shape", "1,100000,100000"),
        ("input_shape", "3"),
        ("input_shape", "1,4096,4096"),
        ("classes", "100000"),
        ("classes", "10000000000"),
        ("classes", "0"),
        ("normalize_std", "0"),
        ("normalize_mean", "NaN"),
    ] {
        let meta: Vec<(&str, &str)> =
            good_meta.iter().map(|&(key, v)| (key, if key == k { bad } else { v })).collect();
        models.push(model_file(&format!("bad-{k}-{}.safetensors", models.len()), &meta));
    }
    let image = dir.join("digit.png");
    image::GrayImage::from_pixel(28, 28, image::Luma([200])).save(&image).unwrap();
    let out = dir.join("out");
    let data_s = data.to_string_lossy().into_owned();
    let mut r = rng(5);
    let values: &[&[&str]] = &[
        &["--epochs", "0", "1", "-1", "abc", "99999999999999999999"],
        &["--batch-size", "0", "1", "7", "4294967295"],
        &["--lr", "nan", "-1", "inf", "1e30", "0", "0.01"],
        &["--seed", "0", "18446744073709551615", "-5"],
        &["--threads", "0", "1", "2", "100000"],
        &["--data", "/nonexistent", "Cargo.toml", &data_s],
    ];
    for i in 0..cases {
        let mut args: Vec<String> =
            vec!["--quiet".into(), "--out".into(), out.to_string_lossy().into_owned()];
        if i % 4 == 3 {
            let m = &models[r.random_range(0..models.len())];
            args.extend([
                "--predict".into(),
                image.to_string_lossy().into_owned(),
                "--model".into(),
                m.to_string_lossy().into_owned(),
            ]);
        } else {
            for group in values {
                if r.random_range(0..3) > 0 {
                    args.push(group[0].into());
                    args.push(group[r.random_range(1..group.len())].into());
                }
            }
            if !args.iter().any(|a| a == "--data") {
                args.extend(["--data".into(), data_s.clone()]);
            }
            if !args.iter().any(|a| a == "--epochs") {
                args.extend(["--epochs".into(), "1".into()]);
            }
        }
        let shown = args.join(" ");
        t.case(|| format!("cli case {i}: {shown}"), || run_cli(std::process::Command::new(&bin).args(&args)));
    }
}

#[test]
fn hostile_inputs_end_in_ok_or_a_clean_error() {
    let k = scale();
    type Area = Box<dyn Fn(&mut Tally)>;
    let mut areas: Vec<(&str, Area)> = vec![
        ("IDX files (plain and gzip)", Box::new(move |t| idx_files(t, 4000 * k))),
        ("safetensors files", Box::new(move |t| safetensors_files(t, 4000 * k))),
        ("checkpoint files, resumed", Box::new(move |t| checkpoint_files(t, 1500 * k))),
    ];
    #[cfg(feature = "image")] // (a crate built without it has no image decoding to attack)
    areas.push(("PNG / JPEG images", Box::new(move |t| images(t, 3000 * k))));
    areas.push(("models from random shapes and settings", Box::new(move |t| models(t, 4000 * k))));
    areas.push((
        "attention functions: shapes, NaN, lengths, PyTorch masks",
        Box::new(move |t| attention_functions(t, 3000 * k)),
    ));
    areas.push((
        "lengths, named inputs, states, DP settings",
        Box::new(move |t| side_information(t, 2000 * k)),
    ));
    areas.push((
        "knowledge-tracing files, windows, simulator, schedules, accountant",
        Box::new(move |t| knowledge_and_settings(t, 3000 * k)),
    ));
    areas.push(("walkthrough command line", Box::new(move |t| cli(t, 150 * k))));
    areas.push(("knowledge-tracing command line", Box::new(move |t| kt_cli(t, 80 * k))));
    println!(
        "\n| area | inputs tried | ok | clean errors | panics | over {} MiB | data lost | peak MiB |",
        MEMORY_BOUND >> 20
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut failures = Vec::new();
    for (area, run) in areas {
        let mut t = Tally::default();
        run(&mut t);
        println!("{}", t.row(area));
        failures.extend(t.failures().into_iter().map(|f| format!("{area}: {f}")));
    }
    assert!(failures.is_empty(), "failures:\n{}", failures.join("\n"));
}
