//! Saving and loading weights as [safetensors](https://github.com/huggingface/safetensors).
//!
//! The file holds one tensor per parameter and buffer, named as PyTorch's `nn.Sequential`
//! `state_dict` names them: `"{layer index}.{name}"` — `"0.weight"`, `"0.bias"`,
//! `"4.running_mean"`, `"4.running_var"`, `"4.num_batches_tracked"`. Parameters and running
//! statistics are `F32`; `num_batches_tracked` is an `I64` scalar, as in PyTorch. Layer indices
//! count every layer, parameterless ones (ReLU, pooling, Flatten) included — the same as
//! `nn.Sequential` — so a PyTorch model built layer for layer like ours loads our file with
//! `model.load_state_dict(safetensors.torch.load_file(path))`, and we load its
//! `safetensors.torch.save_file(model.state_dict(), path)`. See `docs/pytorch.md`.
//!
//! Saving writes a temporary file beside the target and renames it into place, so a crash
//! mid-save never leaves a half-written file under the real name. Loading checks every name,
//! dtype and shape *before* changing anything: on any error the model is left as it was.

use crate::error::{Error, Result};
use crate::model::Sequential;
use crate::tensor::{Tensor, shape_str};
use safetensors::tensor::{Dtype, SafeTensors, View};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;

/// One tensor ready to be written: dtype, shape and little-endian bytes.
struct Entry {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl View for &Entry {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// What the model expects at one name.
enum Slot {
    /// An `F32` tensor of this shape: (layer, parameter or buffer index within the layer, is buffer).
    Float { layer: usize, index: usize, buffer: bool, shape: Vec<usize> },
    /// A batch-norm layer's `num_batches_tracked` (optional when loading).
    Count { layer: usize },
}

impl Sequential {
    /// The model's weights and buffers with their `state_dict` names, in order.
    pub fn state_dict(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (i, layer) in self.layers().iter().enumerate() {
            for p in layer.params() {
                out.push((format!("{i}.{}", p.name), p.value.clone()));
            }
            for (name, b) in layer.buffers() {
                out.push((format!("{i}.{name}"), b.clone()));
            }
        }
        out
    }

    fn slots(&self) -> BTreeMap<String, Slot> {
        let mut slots = BTreeMap::new();
        for (i, layer) in self.layers().iter().enumerate() {
            for (k, p) in layer.params().into_iter().enumerate() {
                let slot = Slot::Float { layer: i, index: k, buffer: false, shape: p.value.shape().to_vec() };
                slots.insert(format!("{i}.{}", p.name), slot);
            }
            for (k, (name, b)) in layer.buffers().into_iter().enumerate() {
                slots.insert(
                    format!("{i}.{name}"),
                    Slot::Float { layer: i, index: k, buffer: true, shape: b.shape().to_vec() },
                );
            }
            if layer.num_batches_tracked().is_some() {
                slots.insert(format!("{i}.num_batches_tracked"), Slot::Count { layer: i });
            }
        }
        slots
    }

    /// The safetensors bytes of the model's weights (what [`Sequential::save`] writes).
    ///
    /// # Errors
    /// [`Error::Format`] if serialisation fails (it does not for a valid model).
    pub fn to_safetensors(&self) -> Result<Vec<u8>> {
        self.to_safetensors_with_metadata(&[])
    }

    /// Like [`Sequential::to_safetensors`], adding string key–value pairs to the file's header
    /// metadata (for example the preprocessing a model expects). PyTorch ignores them.
    ///
    /// # Errors
    /// [`Error::Format`] if serialisation fails (it does not for a valid model).
    pub fn to_safetensors_with_metadata(&self, metadata_in: &[(&str, String)]) -> Result<Vec<u8>> {
        let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
        for (name, t) in self.state_dict() {
            let bytes = t.data().iter().flat_map(|v| v.to_le_bytes()).collect();
            entries.insert(name, Entry { dtype: Dtype::F32, shape: t.shape().to_vec(), bytes });
        }
        for (i, layer) in self.layers().iter().enumerate() {
            if let Some(n) = layer.num_batches_tracked() {
                let bytes = (n as i64).to_le_bytes().to_vec();
                entries.insert(
                    format!("{i}.num_batches_tracked"),
                    Entry { dtype: Dtype::I64, shape: vec![], bytes },
                );
            }
        }
        let mut metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
        metadata.extend(metadata_pairs(metadata_in));
        safetensors::serialize(entries.iter().map(|(k, v)| (k.as_str(), v)), Some(metadata))
            .map_err(|e| Error::format("<memory>", format!("could not serialise the weights: {e}")))
    }

    /// Saves the weights to `path` as safetensors, atomically (write a temporary file, then
    /// rename it over `path`).
    ///
    /// # Errors
    /// [`Error::Io`] naming the file if it cannot be written.
    ///
    /// ```
    /// use backprop::prelude::*;
    /// # fn main() -> backprop::Result<()> {
    /// let dir = std::env::temp_dir().join(format!("backprop-doc-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir).unwrap();
    /// let path = dir.join("model.safetensors");
    /// let build = || Sequential::builder(&[3]).add(Dense::new(3, 2)).build();
    /// let mut a = build()?;
    /// a.layers_mut()[0].params_mut()[0].value.fill(0.5);
    /// a.save(&path)?;
    /// let mut b = build()?;
    /// b.load(&path)?;
    /// assert_eq!(b.params()[0].value, a.params()[0].value);
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok(()) }
    /// ```
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        self.save_with_metadata(path, &[])
    }

    /// Like [`Sequential::save`], adding string key–value pairs to the file's header metadata;
    /// read them back with [`read_metadata`].
    ///
    /// # Errors
    /// [`Error::Io`] naming the file if it cannot be written.
    pub fn save_with_metadata(&self, path: impl AsRef<Path>, metadata: &[(&str, String)]) -> Result<()> {
        let path = path.as_ref();
        let bytes = self.to_safetensors_with_metadata(metadata)?;
        let file_name =
            path.file_name().ok_or_else(|| Error::invalid(format!("{}: not a file path", path.display())))?;
        let tmp = path.with_file_name(format!(".{}.tmp-{}", file_name.to_string_lossy(), std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Error::io(path, e)
        })
    }

    /// Loads weights saved by [`Sequential::save`] (or by PyTorch for the same architecture).
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be read; [`Error::Format`] naming the file and the first
    /// problem if it is not valid safetensors (truncated, corrupt) or does not match the model
    /// (a missing or unexpected tensor, a wrong dtype or shape). On error the model is unchanged.
    pub fn load(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        self.load_safetensors(&bytes, path)
    }

    /// Like [`Sequential::load`], from bytes in memory; `origin` names them in error messages.
    ///
    /// # Errors
    /// As [`Sequential::load`].
    pub fn load_safetensors(&mut self, bytes: &[u8], origin: impl AsRef<Path>) -> Result<()> {
        let origin = origin.as_ref();
        let bad = |msg: String| Error::format(origin, msg);
        let file = SafeTensors::deserialize(bytes)
            .map_err(|e| bad(format!("not a valid safetensors file ({e})")))?;
        let slots = self.slots();
        let describe = |layer: usize| format!("layer {layer}, {}", self.layers()[layer].describe());

        // Check everything first, so that a bad file changes nothing.
        let mut floats: Vec<(usize, usize, bool, Vec<f32>)> = Vec::new();
        let mut counts: Vec<(usize, u64)> = Vec::new();
        for name in file.names() {
            if !slots.contains_key(name) {
                return Err(bad(format!(
                    "unexpected tensor {name:?}: the model has no parameter or buffer of that name"
                )));
            }
        }
        for (name, slot) in &slots {
            let view = match (file.tensor(name), slot) {
                (Ok(v), _) => v,
                (Err(_), Slot::Count { .. }) => continue, // optional
                (Err(_), Slot::Float { layer, .. }) => {
                    return Err(bad(format!("missing tensor {name:?} ({})", describe(*layer))));
                }
            };
            match slot {
                Slot::Float { layer, index, buffer, shape } => {
                    if view.dtype() != Dtype::F32 {
                        return Err(bad(format!(
                            "tensor {name:?} has dtype {:?}, expected F32",
                            view.dtype()
                        )));
                    }
                    if view.shape() != shape.as_slice() {
                        return Err(bad(format!(
                            "tensor {name:?} has shape {}, but {} needs {}",
                            shape_str(view.shape()),
                            describe(*layer),
                            shape_str(shape)
                        )));
                    }
                    let values = view
                        .data()
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .collect();
                    floats.push((*layer, *index, *buffer, values));
                }
                Slot::Count { layer } => {
                    let count = match (view.dtype(), view.data()) {
                        (Dtype::I64, d) if d.len() == 8 => {
                            i64::from_le_bytes(d.try_into().expect("8 bytes")).max(0) as u64
                        }
                        (Dtype::I32, d) if d.len() == 4 => {
                            i32::from_le_bytes(d.try_into().expect("4 bytes")).max(0) as u64
                        }
                        (Dtype::F32, d) if d.len() == 4 => {
                            f32::from_le_bytes(d.try_into().expect("4 bytes")).max(0.0) as u64
                        }
                        (dtype, _) => {
                            return Err(bad(format!(
                                "tensor {name:?} should be an integer scalar, got {dtype:?} of shape {}",
                                shape_str(view.shape())
                            )));
                        }
                    };
                    counts.push((*layer, count));
                }
            }
        }

        // All checks passed: copy.
        for (layer, index, buffer, values) in floats {
            let l = &mut self.layers_mut()[layer];
            let dst = if buffer {
                l.buffers_mut().into_iter().nth(index).map(|(_, b)| b)
            } else {
                l.params_mut().into_iter().nth(index).map(|p| &mut p.value)
            };
            dst.expect("slot from this model").data_mut().copy_from_slice(&values);
        }
        for (layer, count) in counts {
            self.layers_mut()[layer].set_num_batches_tracked(count);
        }
        Ok(())
    }
}

fn metadata_pairs(pairs: &[(&str, String)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

/// Reads the string metadata of a safetensors file (without loading any tensor into a model).
///
/// # Errors
/// [`Error::Io`] if the file cannot be read, [`Error::Format`] if it is not valid safetensors.
pub fn read_metadata(path: impl AsRef<Path>) -> Result<HashMap<String, String>> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let (_, meta) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| Error::format(path, format!("not a valid safetensors file ({e})")))?;
    Ok(meta.metadata().clone().unwrap_or_default())
}
