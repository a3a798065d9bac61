//! Saving and loading the state of any layer or model ([`Visit`]) as
//! [safetensors](https://github.com/huggingface/safetensors).
//!
//! The file holds one tensor per parameter, buffer and counter, under the names the model's
//! [visitor](crate::layers::Visit::visit) gives them — for a [`Sequential`](crate::Sequential),
//! the names PyTorch's `nn.Sequential` `state_dict` uses: `"{layer index}.{name}"`, nested as
//! `"2.0.weight"` — `"0.weight"`, `"0.bias"`, `"4.running_mean"`, `"4.running_var"`,
//! `"4.num_batches_tracked"`. Parameters and buffers are `F32`; counters (`num_batches_tracked`)
//! are `I64` scalars, as in PyTorch. Layer indices count every layer, parameterless ones (ReLU,
//! pooling, Flatten) included — the same as `nn.Sequential` — so a PyTorch model built layer for
//! layer like ours loads our file with `model.load_state_dict(safetensors.torch.load_file(path))`,
//! and we load its `safetensors.torch.save_file(model.state_dict(), path)`. Random generators
//! (dropout's) are not saved. See `docs/pytorch.md`.
//!
//! Saving writes a temporary file beside the target and renames it into place, so a crash
//! mid-save never leaves a half-written file under the real name. Loading checks every name,
//! dtype and shape *before* changing anything: on any error the model is left as it was.

use crate::error::{Error, Result};
use crate::layers::{State, StateMut, Visit};
use crate::tensor::{Tensor, shape_str};
use safetensors::tensor::{Dtype, SafeTensors, View};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

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
    /// An `F32` tensor of this shape (a parameter or a buffer).
    Float { shape: Vec<usize> },
    /// An integer count (optional when loading: PyTorch files from before it existed lack it).
    Count,
}

/// A value checked and ready to be copied into the model.
enum Value {
    Float(Vec<f32>),
    Count(u64),
}

/// The model's parameters and buffers with their names, in visiting order (copies). Counters
/// (batch norm's `num_batches_tracked`, which PyTorch's `state_dict` lists too) are not among
/// them: [`save`] keeps them.
pub fn state_dict(model: &dyn Visit) -> Vec<(String, Tensor)> {
    let mut out = Vec::new();
    model.visit(&mut |name, s| match s {
        State::Param(p) => out.push((name.to_string(), p.value.clone())),
        State::Buffer(b) => out.push((name.to_string(), b.clone())),
        State::Counter(_) | State::Rng(_) | State::Carried(_) => {}
    });
    out
}

fn slots(model: &dyn Visit) -> BTreeMap<String, Slot> {
    let mut slots = BTreeMap::new();
    model.visit(&mut |name, s| {
        let slot = match s {
            State::Param(p) => Slot::Float { shape: p.value.shape().to_vec() },
            State::Buffer(b) => Slot::Float { shape: b.shape().to_vec() },
            State::Counter(_) => Slot::Count,
            State::Rng(_) | State::Carried(_) => return,
        };
        slots.insert(name.to_string(), slot);
    });
    slots
}

/// The safetensors bytes of the model's state (what [`save`] writes), with string key–value
/// pairs in the file's header metadata (for example the preprocessing a model expects; PyTorch
/// ignores them).
///
/// # Errors
/// [`Error::InvalidArgument`] if two pieces of the model's state share a name (a container
/// that does not prefix its children's names: the file would keep only one of them);
/// [`Error::Format`] if serialisation fails (it does not for a valid model).
pub fn to_safetensors(model: &dyn Visit, metadata_in: &[(&str, String)]) -> Result<Vec<u8>> {
    crate::layers::check_unique_names(model, "save")?;
    let mut entries = Entries::default();
    entries.add_model("", model);
    let mut metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    metadata.extend(metadata_pairs(metadata_in));
    entries.serialize(metadata)
}

/// Named tensors on their way into one safetensors file (the model's file, or a checkpoint that
/// holds the model, the optimizer's buffers and the best weights under prefixes).
#[derive(Default)]
pub(crate) struct Entries(BTreeMap<String, Entry>);

impl Entries {
    /// The model's parameters and buffers (`F32`) and counters (`I64` scalars), each name
    /// prefixed with `prefix`.
    pub(crate) fn add_model(&mut self, prefix: &str, model: &dyn Visit) {
        model.visit(&mut |name, s| match s {
            State::Param(p) => self.add_tensor(&format!("{prefix}{name}"), &p.value),
            State::Buffer(b) => self.add_tensor(&format!("{prefix}{name}"), b),
            State::Counter(n) => self.add_count(&format!("{prefix}{name}"), n),
            State::Rng(_) | State::Carried(_) => {}
        });
    }

    /// One `F32` tensor.
    pub(crate) fn add_tensor(&mut self, name: &str, t: &Tensor) {
        self.0.insert(name.to_string(), float_entry(t));
    }

    /// One `I64` scalar.
    pub(crate) fn add_count(&mut self, name: &str, n: u64) {
        let bytes = (n.min(i64::MAX as u64) as i64).to_le_bytes().to_vec();
        self.0.insert(name.to_string(), Entry { dtype: Dtype::I64, shape: vec![], bytes });
    }

    /// [`checksum`] of these tensors and `metadata`.
    pub(crate) fn checksum(&self, metadata: &HashMap<String, String>) -> u32 {
        let views = self
            .0
            .iter()
            .map(|(n, e)| (n.as_str(), format!("{:?}", e.dtype), e.shape.as_slice(), e.bytes.as_slice()));
        checksum(views, metadata)
    }

    /// The file's bytes, with `metadata` in its header.
    pub(crate) fn serialize(&self, metadata: HashMap<String, String>) -> Result<Vec<u8>> {
        safetensors::serialize(self.0.iter().map(|(k, v)| (k.as_str(), v)), Some(metadata))
            .map_err(|e| Error::format("<memory>", format!("could not serialise the tensors: {e}")))
    }
}

fn float_entry(t: &Tensor) -> Entry {
    Entry {
        dtype: Dtype::F32,
        shape: t.shape().to_vec(),
        bytes: t.data().iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

/// Saves the model's state to `path` as safetensors, with string metadata in the header; read
/// it back with [`read_metadata`].
///
/// The save is atomic and durable: the bytes go to a new temporary file with a unique name in the
/// same folder, which is synced to disk and then renamed over `path`, and the folder is synced so
/// that the rename survives a crash. A reader sees the old file or the new one, never a partial
/// one, even with several saves to one path at once (the last rename wins). On any error the
/// temporary file is removed and `path` is untouched. A file being replaced keeps its permissions;
/// a file this process could not write in place (read-only, or another user's) is not replaced.
/// The folder's sync after the rename is best effort: the file is in place by then, and a folder
/// that refuses to be synced (some file systems do) does not turn a save into an error. A save killed before its rename (SIGKILL, power loss) leaves
/// its temporary file (`.backprop-save-*.tmp`) behind; the next save into the same folder removes
/// such files once nobody holds their lock (each save locks its own) and they are 10 s old.
///
/// # Errors
/// [`Error::Io`] naming the file if it cannot be written, or if it exists and is read-only;
/// [`Error::InvalidArgument`] if `path` does not name a file, or as [`to_safetensors`].
pub fn save(model: &dyn Visit, path: impl AsRef<Path>, metadata: &[(&str, String)]) -> Result<()> {
    let path = path.as_ref();
    let bytes = to_safetensors(model, metadata)?;
    write_atomically(path, &bytes)
}

/// Writes `bytes` to `path` as [`save`] describes.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    if path.file_name().is_none() {
        return Err(Error::invalid(format!("{}: not a file path", path.display())));
    }
    // Through a link to the file it names (a rename over the link would replace the link
    // itself with a file, and leave its target with the old contents).
    let resolved = resolve_links(path)?;
    let path = resolved.as_path();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let io = |e: std::io::Error| Error::io(path, e);
    let (existing, regular) = match std::fs::metadata(path) {
        Ok(m) => (Some(m.permissions()), m.is_file()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (None, false),
        Err(e) => return Err(io(e)),
    };
    if existing.as_ref().is_some_and(|p| p.readonly()) {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            "the file is read-only; not replacing it",
        )));
    }
    if regular {
        // The rename needs only the folder's permission; replacing a file this user could not
        // write in place (another user's, in a shared folder) would take it over. Opened for
        // writing without truncating, nothing written: the file is unchanged (a pipe is not
        // probed: its open would wait for a reader; an overlay file system copies a lower
        // layer's file up on this open, once).
        if let Err(e) = std::fs::OpenOptions::new().write(true).open(path) {
            return Err(io(std::io::Error::new(
                e.kind(),
                format!("the file cannot be written ({e}); not replacing it"),
            )));
        }
    }
    // A unique name per save (so concurrent saves never share a temporary file), short whatever
    // the target's name. The temporary file is deleted when dropped unless it was persisted.
    let mut builder = tempfile::Builder::new();
    builder.prefix(".backprop-save-").suffix(".tmp");
    #[cfg(unix)]
    if existing.is_none() {
        // As a plain File::create would: 0666 minus the umask (tempfile's default is 0600).
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    let mut tmp = builder.tempfile_in(dir).map_err(io)?;
    // Held until the rename (and released by the system if the process dies): it tells other
    // saves that this temporary file is being written.
    let _ = tmp.as_file().try_lock();
    remove_stale_temporaries(dir, tmp.path());
    tmp.write_all(bytes).map_err(io)?;
    if let Some(permissions) = existing {
        tmp.as_file().set_permissions(permissions).map_err(io)?;
    }
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    // Best effort (see `save`): the new file is in place whatever this returns.
    let _ = sync_dir(dir);
    Ok(())
}

/// Opens `path` for reading if it is a regular file (through links): a device (`/dev/zero`), a
/// pipe (whose open would wait for a writer) or a folder is refused before it is opened.
pub(crate) fn open_regular_file(path: &Path) -> Result<std::fs::File> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(Error::format(path, "not a regular file (a folder, a device or a pipe)"));
    }
    std::fs::File::open(path).map_err(|e| Error::io(path, e))
}

/// Reads a regular file whole ([`open_regular_file`]), reserving its size first (a panic-free
/// `Err` if that much memory cannot be had).
pub(crate) fn read_regular_file(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut file = open_regular_file(path)?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut bytes = Vec::new();
    bytes.try_reserve_exact(usize::try_from(len).unwrap_or(usize::MAX)).map_err(|e| {
        Error::io(path, std::io::Error::new(std::io::ErrorKind::OutOfMemory, format!("{len} bytes: {e}")))
    })?;
    file.read_to_end(&mut bytes).map_err(|e| Error::io(path, e))?;
    Ok(bytes)
}

/// The largest safetensors header this crate reads (the `safetensors` crate's own limit).
const MAX_SAFETENSORS_HEADER: u64 = 100_000_000;

/// Reads a safetensors file whole, after checking from its first bytes that its size is the one
/// its header describes (8 bytes of header length, the JSON header, then the tensors' bytes to
/// the largest end offset): a file of another size — truncated, padded, or a sparse gigabyte of
/// zeros — is refused before its body is read.
pub(crate) fn read_safetensors_file(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut file = open_regular_file(path)?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let bad = |m: String| Error::format(path, format!("not a valid safetensors file ({m})"));
    let mut head = [0u8; 8];
    file.read_exact(&mut head)
        .map_err(|_| bad(format!("{len} bytes, fewer than the 8 of the header's length")))?;
    let n = u64::from_le_bytes(head);
    if !(2..=MAX_SAFETENSORS_HEADER).contains(&n) || 8 + n > len {
        return Err(bad(format!("a header of {n} bytes claimed, in a file of {len}")));
    }
    let mut header = vec![0u8; n as usize];
    file.read_exact(&mut header).map_err(|e| Error::io(path, e))?;
    let json: serde_json::Value =
        serde_json::from_slice(&header).map_err(|e| bad(format!("the header is not JSON: {e}")))?;
    let serde_json::Value::Object(entries) = json else {
        return Err(bad("the header is not a JSON object".into()));
    };
    let end = entries
        .iter()
        .filter(|(name, _)| name.as_str() != "__metadata__")
        .filter_map(|(_, entry)| entry.get("data_offsets")?.get(1)?.as_u64())
        .max()
        .unwrap_or(0);
    let expected = 8u64.saturating_add(n).saturating_add(end);
    if expected != len {
        return Err(bad(format!(
            "its header describes {expected} bytes, the file holds {len}: truncated or padded"
        )));
    }
    let mut bytes = Vec::new();
    bytes.try_reserve_exact(len as usize).map_err(|e| {
        Error::io(path, std::io::Error::new(std::io::ErrorKind::OutOfMemory, format!("{len} bytes: {e}")))
    })?;
    bytes.extend_from_slice(&head);
    bytes.extend_from_slice(&header);
    file.read_to_end(&mut bytes).map_err(|e| Error::io(path, e))?;
    Ok(bytes)
}

/// How old an unlocked temporary file must be before a save removes it: a save creates its file
/// and locks it a moment later, so a young unlocked file may be one being started.
const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(10);

/// Removes the temporary files of saves that died in `dir` (killed, or the machine lost power):
/// files named like [`save`]'s temporaries whose lock nobody holds (a live save holds its lock
/// until its rename) and that are older than [`STALE_AFTER`]. Best effort: errors are ignored, and
/// a file that cannot be opened or locked is left alone.
fn remove_stale_temporaries(dir: &Path, own: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with(".backprop-save-") && name.ends_with(".tmp")) || entry.path() == own {
            continue;
        }
        let Ok(file) = std::fs::OpenOptions::new().read(true).write(true).open(entry.path()) else {
            continue;
        };
        let old = file
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age >= STALE_AFTER);
        if old && file.try_lock().is_ok() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Flushes a folder's entries (the rename) to disk where the platform allows it.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        std::fs::File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// Loads a state saved by [`save`] (or by PyTorch for the same architecture) into `model`. A
/// stateful recurrent layer's carried state is forgotten (the next pass starts from zeros, with
/// the loaded weights).
///
/// # Errors
/// [`Error::Io`] if the file cannot be read; [`Error::Format`] naming the file and the first
/// problem if it is not valid safetensors (truncated, corrupt) or does not match the model
/// (a missing or unexpected tensor, a wrong dtype or shape, a NaN or infinite value);
/// [`Error::InvalidArgument`] if two pieces of the model's state share a name. On error the
/// model is unchanged.
pub fn load(model: &mut dyn Visit, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let bytes = read_safetensors_file(path)?;
    load_safetensors(model, &bytes, path)
}

/// Like [`load`], from bytes in memory; `origin` names them in error messages.
///
/// # Errors
/// As [`load`].
pub fn load_safetensors(model: &mut dyn Visit, bytes: &[u8], origin: impl AsRef<Path>) -> Result<()> {
    load_safetensors_with(model, bytes, origin, &LoadOptions::new()).map(|_| ())
}

/// How [`load_with`] matches stored names to the model's, PyTorch's `load_state_dict` options.
///
/// ```
/// use backprop::io::LoadOptions;
/// // A checkpoint whose names carry a "module." prefix (from DistributedDataParallel), loaded
/// // into a model that may have layers the checkpoint lacks.
/// let strip = |name: &str| Some(name.strip_prefix("module.").unwrap_or(name).to_string());
/// let options = LoadOptions::new().rename(&strip).non_strict();
/// # let _ = options;
/// ```
#[derive(Clone, Copy)]
pub struct LoadOptions<'a> {
    strict: bool,
    rename: Option<Rename<'a>>,
}

/// A renaming for [`LoadOptions::rename`]: stored name → the model's name, or `None` to ignore it.
pub type Rename<'a> = &'a dyn Fn(&str) -> Option<String>;

impl Default for LoadOptions<'_> {
    fn default() -> Self {
        LoadOptions::new()
    }
}

impl std::fmt::Debug for LoadOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadOptions")
            .field("strict", &self.strict)
            .field("rename", &self.rename.is_some())
            .finish()
    }
}

impl<'a> LoadOptions<'a> {
    /// Strict, names as stored: every stored tensor must be the model's and every parameter and
    /// buffer of the model must be stored ([`load`]'s rules).
    pub fn new() -> LoadOptions<'a> {
        LoadOptions { strict: true, rename: None }
    }

    /// Tolerates stored tensors the model does not have (ignored) and model state the source
    /// lacks (left as it is); both are listed in the [`LoadReport`]. Shapes and dtypes must still
    /// match.
    pub fn non_strict(mut self) -> LoadOptions<'a> {
        self.strict = false;
        self
    }

    /// Maps each stored name to the model's name for it (`None`: ignore that tensor), applied
    /// before matching — for checkpoints from a differently organised model.
    pub fn rename(mut self, map: Rename<'a>) -> LoadOptions<'a> {
        self.rename = Some(map);
        self
    }
}

/// What a load matched, by the model's names (stored names for `unexpected`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Model state that was set.
    pub loaded: Vec<String>,
    /// Model state the source did not have (only without strictness; left unchanged).
    pub missing: Vec<String>,
    /// Stored tensors the model has no place for, or that the renaming dropped.
    pub unexpected: Vec<String>,
}

/// [`load`] with [`LoadOptions`]: renaming, non-strict matching, and a report of what matched.
///
/// # Errors
/// As [`load`], except that in non-strict mode missing and unexpected names are not errors.
/// On error the model is unchanged.
pub fn load_with(
    model: &mut dyn Visit,
    path: impl AsRef<Path>,
    options: &LoadOptions<'_>,
) -> Result<LoadReport> {
    let path = path.as_ref();
    let bytes = read_safetensors_file(path)?;
    load_safetensors_with(model, &bytes, path, options)
}

/// [`load_with`] from safetensors bytes in memory; `origin` names them in error messages.
///
/// # Errors
/// As [`load_with`].
pub fn load_safetensors_with(
    model: &mut dyn Visit,
    bytes: &[u8],
    origin: impl AsRef<Path>,
    options: &LoadOptions<'_>,
) -> Result<LoadReport> {
    let origin = origin.as_ref();
    let file = SafeTensors::deserialize(bytes)
        .map_err(|e| Error::format(origin, format!("not a valid safetensors file ({e})")))?;
    let stored: Vec<(String, Stored<'_>)> = file
        .tensors()
        .into_iter()
        .map(|(name, v)| {
            (name, Stored { dtype: v.dtype(), shape: v.shape().to_vec(), bytes: Cow::Borrowed(v.data()) })
        })
        .collect();
    load_stored(model, stored, origin, options)
}

/// [`load_with`] from named tensors in memory — a state dict built in code, or from
/// [`state_dict`] of another model. Every tensor is taken as `F32` (a counter as a one-element
/// tensor holding the count).
///
/// # Errors
/// As [`load_with`]; messages name the source `"named tensors"`.
pub fn load_tensors(
    model: &mut dyn Visit,
    tensors: &[(String, Tensor)],
    options: &LoadOptions<'_>,
) -> Result<LoadReport> {
    let stored = tensors
        .iter()
        .map(|(name, t)| {
            let bytes: Vec<u8> = t.data().iter().flat_map(|v| v.to_le_bytes()).collect();
            (name.clone(), Stored { dtype: Dtype::F32, shape: t.shape().to_vec(), bytes: Cow::Owned(bytes) })
        })
        .collect();
    load_stored(model, stored, Path::new("named tensors"), options)
}

/// One stored tensor, from a file or from memory.
struct Stored<'a> {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Cow<'a, [u8]>,
}

/// The loading rules, for any source: rename, match, check everything, then copy.
fn load_stored(
    model: &mut dyn Visit,
    stored: Vec<(String, Stored<'_>)>,
    origin: &Path,
    options: &LoadOptions<'_>,
) -> Result<LoadReport> {
    let bad = |msg: String| Error::format(origin, msg);
    crate::layers::check_unique_names(model, "load")?;
    let slots = slots(model);
    let mut report = LoadReport::default();
    // Every problem is collected, so that one error lists them all (as PyTorch's
    // `load_state_dict` does): a load into another architecture shows the whole difference.
    let mut problems = Problems::default();
    // Stored names → model names; what has no place is unexpected.
    let mut by_name: HashMap<String, Stored<'_>> = HashMap::new();
    let mut sorted = stored;
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, tensor) in sorted {
        let target = match options.rename {
            Some(map) => map(&name),
            None => Some(name.clone()),
        };
        match target {
            Some(t) if slots.contains_key(&t) => {
                if let std::collections::hash_map::Entry::Vacant(slot) = by_name.entry(t.clone()) {
                    slot.insert(tensor);
                } else {
                    problems.other.push(format!("two stored tensors map to the model's {t:?}"));
                }
            }
            Some(t) if options.strict => {
                let renamed = if t == name { String::new() } else { format!(" (renamed {t:?})") };
                problems.unexpected.push(format!("{name:?}{renamed}"));
            }
            _ => report.unexpected.push(name),
        }
    }
    // Check everything first, so that a bad source changes nothing.
    let mut values: HashMap<&str, Value> = HashMap::new();
    for (name, slot) in &slots {
        let Some(view) = by_name.get(name) else {
            match slot {
                Slot::Count => continue, // optional
                Slot::Float { .. } if options.strict => {
                    problems.missing.push(format!("{name:?}{}", owner(model, name)));
                }
                Slot::Float { .. } => report.missing.push(name.clone()),
            }
            continue;
        };
        let value = match slot {
            Slot::Float { shape } => {
                let Some(width) = float_width(view.dtype) else {
                    problems.other.push(format!(
                        "tensor {name:?} has dtype {:?}, expected a float (F32; F16, BF16 and F64 are converted)",
                        view.dtype
                    ));
                    continue;
                };
                if view.shape != *shape {
                    problems.other.push(format!(
                        "tensor {name:?} has shape {}, but the model{} needs {}",
                        shape_str(&view.shape),
                        owner(model, name),
                        shape_str(shape)
                    ));
                    continue;
                }
                let data = &view.bytes;
                if shape.iter().try_fold(width, |n, &d| n.checked_mul(d)) != Some(data.len()) {
                    problems.other.push(format!(
                        "tensor {name:?} holds {} bytes for shape {} of {:?}",
                        data.len(),
                        shape_str(shape),
                        view.dtype
                    ));
                    continue;
                }
                let values = floats_as_f32(view.dtype, data);
                if let Some(i) = crate::tensor::first_non_finite(&values) {
                    let beyond = view.dtype == Dtype::F64
                        && f64::from_le_bytes(data[8 * i..][..8].try_into().expect("8 bytes")).is_finite();
                    problems.other.push(if beyond {
                        format!(
                            "tensor {name:?} holds {} at element {i}, beyond the range of f32 (±3.4e38) that the \
                             model computes in",
                            f64::from_le_bytes(data[8 * i..][..8].try_into().expect("8 bytes"))
                        )
                    } else {
                        format!(
                            "tensor {name:?} holds {} at element {i}: weights must be finite (the file is damaged, \
                             or was saved from a model whose training diverged)",
                            values[i]
                        )
                    });
                    continue;
                }
                // A variance is never negative (batch norm's running variance, PyTorch's name for
                // it): one that is would make every output NaN.
                if name.ends_with("running_var")
                    && let Some(i) = values.iter().position(|&v| v < 0.0)
                {
                    problems.other.push(format!(
                        "tensor {name:?} holds {} at element {i}: a variance cannot be negative (the file is damaged)",
                        values[i]
                    ));
                    continue;
                }
                Value::Float(values)
            }
            Slot::Count => {
                // A count stored as any integer, or as a float holding a whole number (as some
                // exporters write it); anything else is damage, not a count to clamp.
                let signed = |v: i64| Some(u64::try_from(v).map_err(|_| v.to_string()));
                let count: Option<Result<u64, String>> = match (view.dtype, &view.bytes[..]) {
                    (Dtype::I64, d) if d.len() == 8 => {
                        signed(i64::from_le_bytes(d.try_into().expect("8 bytes")))
                    }
                    (Dtype::I32, d) if d.len() == 4 => {
                        signed(i32::from_le_bytes(d.try_into().expect("4")).into())
                    }
                    (Dtype::I16, d) if d.len() == 2 => {
                        signed(i16::from_le_bytes(d.try_into().expect("2")).into())
                    }
                    (Dtype::I8, d) if d.len() == 1 => signed((d[0] as i8).into()),
                    (Dtype::U64, d) if d.len() == 8 => {
                        Some(Ok(u64::from_le_bytes(d.try_into().expect("8 bytes"))))
                    }
                    (Dtype::U32, d) if d.len() == 4 => {
                        Some(Ok(u32::from_le_bytes(d.try_into().expect("4")).into()))
                    }
                    (Dtype::U16, d) if d.len() == 2 => {
                        Some(Ok(u16::from_le_bytes(d.try_into().expect("2")).into()))
                    }
                    (Dtype::U8, d) if d.len() == 1 => Some(Ok(d[0].into())),
                    (Dtype::F32, d) if d.len() == 4 => {
                        let v = f32::from_le_bytes(d.try_into().expect("4 bytes"));
                        let whole = v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v < u64::MAX as f32;
                        Some(if whole { Ok(v as u64) } else { Err(v.to_string()) })
                    }
                    _ => None,
                };
                match count {
                    Some(Ok(c)) => Value::Count(c),
                    Some(Err(v)) => {
                        problems
                            .other
                            .push(format!("tensor {name:?} is a count, but holds {v} (the file is damaged)"));
                        continue;
                    }
                    None => {
                        problems.other.push(format!(
                            "tensor {name:?} should be an integer scalar, got {:?} of shape {}",
                            view.dtype,
                            shape_str(&view.shape)
                        ));
                        continue;
                    }
                }
            }
        };
        report.loaded.push(name.clone());
        values.insert(name.as_str(), value);
    }
    if let Some(message) = problems.message() {
        return Err(bad(message));
    }

    // All checks passed: copy.
    model.visit_mut(&mut |name, s| match (s, values.get(name)) {
        (StateMut::Param(p), Some(Value::Float(v))) => {
            p.value.data_mut().copy_from_slice(v);
            p.init = None; // loaded values: a model built around this one keeps them
        }
        (StateMut::Buffer(b), Some(Value::Float(v))) => b.data_mut().copy_from_slice(v),
        (StateMut::Counter(n), Some(Value::Count(c))) => *n = *c,
        // A stateful layer's carried state came from the old weights: the loaded model starts
        // its stream afresh, as the file's weights did when they were saved.
        (StateMut::Carried(state), _) => *state = None,
        _ => {}
    });
    Ok(report)
}

/// Bytes per value of a float dtype that loads convert to `f32`, or `None` for another dtype.
fn float_width(dtype: Dtype) -> Option<usize> {
    match dtype {
        Dtype::F32 => Some(4),
        Dtype::F16 | Dtype::BF16 => Some(2),
        Dtype::F64 => Some(8),
        _ => None,
    }
}

/// Little-endian values of a float dtype ([`float_width`]) as `f32`: exact from F16 and BF16
/// (both are subsets of f32), rounded to nearest from F64 (a value past f32's range becomes ±∞).
fn floats_as_f32(dtype: Dtype, data: &[u8]) -> Vec<f32> {
    match dtype {
        Dtype::F16 => data.chunks_exact(2).map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]]))).collect(),
        // bfloat16 is the upper half of an f32.
        Dtype::BF16 => data
            .chunks_exact(2)
            .map(|b| f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16))
            .collect(),
        Dtype::F64 => {
            data.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32).collect()
        }
        _ => data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
    }
}

/// An IEEE 754 half-precision value (1 sign bit, 5 exponent bits biased by 15, 10 fraction
/// bits) as the `f32` of the same value: normal numbers re-biased (15 → 127), subnormals
/// `fraction · 2⁻²⁴` (normal in f32), ±0, ±∞ and NaN kept.
pub(crate) fn f16_to_f32(bits: u16) -> f32 {
    let sign = if bits & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exponent = (bits >> 10) & 0x1f;
    let fraction = (bits & 0x3ff) as u32;
    match exponent {
        0 => sign * fraction as f32 * 2f32.powi(-24), // zero and subnormals
        0x1f if fraction == 0 => sign * f32::INFINITY,
        0x1f => f32::NAN,
        e => {
            f32::from_bits(((bits as u32 & 0x8000) << 16) | ((e as u32 + 127 - 15) << 23) | (fraction << 13))
        }
    }
}

/// `path`, or the file a symbolic link at `path` names (following a chain of links, each
/// relative one from its own folder); the target need not exist yet.
fn resolve_links(path: &Path) -> Result<PathBuf> {
    let mut path = path.to_path_buf();
    for _ in 0..40 {
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = std::fs::read_link(&path).map_err(|e| Error::io(&path, e))?;
                path = match path.parent() {
                    Some(dir) if target.is_relative() => dir.join(target),
                    _ => target,
                };
            }
            _ => return Ok(path),
        }
    }
    Err(Error::invalid(format!("{}: more than 40 symbolic links in a chain (a loop?)", path.display())))
}

/// What a load found wrong, all of it.
#[derive(Default)]
struct Problems {
    missing: Vec<String>,
    unexpected: Vec<String>,
    other: Vec<String>,
}

impl Problems {
    /// One message listing every problem, or `None` when there is none: `"2 missing tensors:
    /// \"0.weight\" (layer 0, Dense(2→3)), \"0.bias\"; 1 unexpected tensor: \"5.weight\" (the
    /// model has no parameter or buffer of that name)"`.
    fn message(&self) -> Option<String> {
        let plural = |n: usize, what: &str| if n == 1 { format!("1 {what}") } else { format!("{n} {what}s") };
        let mut parts = Vec::new();
        if !self.missing.is_empty() {
            parts.push(format!(
                "{}: {}",
                plural(self.missing.len(), "missing tensor"),
                self.missing.join(", ")
            ));
        }
        if !self.unexpected.is_empty() {
            parts.push(format!(
                "{}: {} (the model has no parameter or buffer of that name)",
                plural(self.unexpected.len(), "unexpected tensor"),
                self.unexpected.join(", ")
            ));
        }
        parts.extend(self.other.iter().cloned());
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

/// `" (layer 3, BatchNorm2d(8))"` for a name under a top-level [`Sequential`](crate::Sequential)
/// index, to point at the layer in messages; empty otherwise.
fn owner(model: &dyn Visit, name: &str) -> String {
    let seq = (model as &dyn std::any::Any).downcast_ref::<crate::Sequential>();
    let index = name.split('.').next().and_then(|i| i.parse::<usize>().ok());
    match (seq, index) {
        (Some(seq), Some(i)) if i < seq.len() => format!(" (layer {i}, {})", seq.layer(i).describe()),
        _ => String::new(),
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
    let bytes = read_safetensors_file(path)?;
    let (_, meta) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| Error::format(path, format!("not a valid safetensors file ({e})")))?;
    Ok(meta.metadata().clone().unwrap_or_default())
}

/// The CRC-32 of a checkpoint's contents: every tensor's name, dtype, shape and bytes in name
/// order, then every metadata pair but the checksum in key order. Stored as `checksum` metadata,
/// so that a damaged file (a flipped bit in a weight, an edited epoch) is refused.
pub(crate) fn checksum<'t>(
    tensors: impl Iterator<Item = (&'t str, String, &'t [usize], &'t [u8])>,
    metadata: &HashMap<String, String>,
) -> u32 {
    let mut crc = flate2::Crc::new();
    for (name, dtype, shape, bytes) in tensors {
        crc.update(name.as_bytes());
        crc.update(dtype.as_bytes());
        for d in shape {
            crc.update(&(*d as u64).to_le_bytes());
        }
        crc.update(bytes);
    }
    let mut keys: Vec<&String> = metadata.keys().filter(|k| *k != "checksum").collect();
    keys.sort();
    for k in keys {
        crc.update(k.as_bytes());
        crc.update(&[0]);
        crc.update(metadata[k].as_bytes());
        crc.update(&[0]);
    }
    crc.sum()
}
