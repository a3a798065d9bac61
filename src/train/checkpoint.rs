//! Checkpoints: everything a training run needs to continue exactly where it stopped.
//!
//! A [`Checkpoint`] is one safetensors file holding the model, the optimizer's state and the
//! position of the run, so that training 5 epochs, stopping, and training 5 more from the
//! checkpoint gives the same weights, bit for bit, as training 10 epochs straight
//! (`tests/resume.rs` shows it). [`fit`](super::fit) writes them with
//! [`FitOptions::checkpoints`](super::FitOptions::checkpoints) and continues from one with
//! [`FitOptions::resume`](super::FitOptions::resume):
//!
//! ```
//! use backprop::prelude::*;
//! use backprop::train::{Checkpoint, Checkpoints};
//! # fn main() -> backprop::Result<()> {
//! let dir = tempfile::tempdir().unwrap();
//! let data = Dataset::regression(Tensor::rand_uniform(&[64, 3], -1.0, 1.0, 1), Tensor::rand_uniform(&[64, 1], -1.0, 1.0, 2))?;
//! let build = || Sequential::builder(&[3]).add(Dense::new(3, 8).seed(1)).add(Tanh::new()).add(Dense::new(8, 1).seed(2)).build();
//! let options = || FitOptions::new().batch_size(16).seed(7).verbose(false);
//!
//! // Ten epochs straight.
//! let mut straight = build()?;
//! straight.fit(&data, &MseLoss::new(), &mut Adam::new(0.01), options().epochs(10))?;
//!
//! // Five epochs, keeping checkpoints; then a new process would load the last one and go on.
//! let mut first = build()?;
//! first.fit(&data, &MseLoss::new(), &mut Adam::new(0.01), options().epochs(5).checkpoints(Checkpoints::in_dir(dir.path())))?;
//! let checkpoint = Checkpoint::load(dir.path().join("last.safetensors"))?;
//! assert_eq!(checkpoint.epoch(), 5);
//! let mut resumed = build()?; // fresh weights: the checkpoint replaces them
//! let history = resumed.fit(&data, &MseLoss::new(), &mut Adam::new(0.01), options().epochs(10).resume(&checkpoint))?;
//! assert_eq!(history.epochs.len(), 10); // epochs 1–5 from the checkpoint, 6–10 trained now
//! assert_eq!(resumed.state_dict(), straight.state_dict()); // bit for bit
//! # Ok(()) }
//! ```
//!
//! ## The file
//!
//! | tensor | holds |
//! |---|---|
//! | `model.{name}` | the model's parameters, buffers and counters, under the names [`io::save`](crate::io::save) gives them |
//! | `optimizer.{kind}.{name}` | the optimizer's buffer of `kind` for parameter `name` |
//! | `best.{name}` | the best epoch's weights, when early stopping will put them back at the end |
//!
//! The buffer kinds are PyTorch's names: `momentum_buffer` ([`Sgd`](crate::optim::Sgd) with
//! momentum), `exp_avg`, `exp_avg_sq`, `max_exp_avg_sq` ([`Adam`](crate::optim::Adam),
//! [`AdamW`](crate::optim::AdamW)). PyTorch's `optimizer.state_dict()` keeps the same buffers by
//! the parameter's *position* in `model.parameters()`: `state[i]["exp_avg"]` is our
//! `optimizer.exp_avg.{name of the i-th parameter}`, and its per-parameter `state[i]["step"]` is
//! our single `optimizer.steps` (every parameter steps together). The string metadata holds the
//! rest: `backprop.checkpoint` (the format version, `"1"`), `epoch` (epochs finished), `seed`,
//! `optimizer` (its kind, `"Adam"`), `optimizer.settings` (its description without the learning
//! rate, `"Adam(amsgrad)"`), `optimizer.steps`, `step` and `step.state` (the
//! [`Step`](super::Step)'s description and state, such as DP-SGD's generators and step count),
//! `rng.shuffle`, `rng.augment` and `rng.model` (the generators' states, JSON), `early_stopping`
//! (its best figure, best epoch, epochs waited and the figure it watches, `monitor`),
//! `checkpoints.best` and `checkpoints.monitor` (the best file's figure and which figure that is),
//! `history` (JSON), and `checksum`: a CRC-32 of everything else, so that a damaged file is
//! refused rather than trained from.
//!
//! [`Checkpoint::load_model`] reads only the model, for prediction from a checkpoint.

use super::callbacks::{EpochStats, History, Monitor};
use crate::error::{Error, Result};
use crate::io::{Entries, LoadOptions, load_safetensors_with};
use crate::layers::{RecurrentState, Snapshot, State, StateMut, Visit};
use crate::optim::{Optimizer, OptimizerState};
use crate::tensor::{Rng, Tensor};
use safetensors::tensor::{Dtype, SafeTensors};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The version written in every checkpoint's `backprop.checkpoint` metadata.
const VERSION: &str = "1";

/// A training run saved after an epoch: model, optimizer state, generators, schedule position,
/// early-stopping state and history. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct Checkpoint {
    bytes: Vec<u8>,
    origin: PathBuf,
    progress: Progress,
}

/// Where a run stood, read from a checkpoint's metadata.
#[derive(Clone, Debug)]
pub(crate) struct Progress {
    pub epoch: usize,
    pub seed: u64,
    pub optimizer: String,
    /// The optimizer's settings but its learning rate (`"SGD(momentum=0.9)"`); none in files
    /// from before they were recorded.
    pub optimizer_settings: Option<String>,
    pub optimizer_steps: u64,
    pub step: String,
    pub step_state: String,
    pub shuffle: Rng,
    pub augment: Rng,
    pub model_rngs: Vec<(String, Rng)>,
    pub early: Option<EarlyState>,
    pub best_checkpoint: Option<f32>,
    /// The figure `best_checkpoint` measures (none in files from before it was recorded).
    pub checkpoint_monitor: Option<Monitor>,
    pub history: History,
}

/// Early stopping's memory: the best figure, its epoch, epochs waited since, and whether the
/// best weights are in the file (`best.*`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct EarlyState {
    pub best: Option<f32>,
    pub best_epoch: usize,
    pub waited: usize,
    pub has_weights: bool,
    /// The figure `best` measures (none in files from before it was recorded).
    pub monitor: Option<Monitor>,
}

/// Where [`fit`](super::fit) keeps checkpoints: a folder in which it writes `last.safetensors`
/// after every epoch and `best.safetensors` whenever the monitored figure improves (both
/// [`Checkpoint`]s, each written atomically: a crash mid-save leaves the previous file). Any
/// improvement counts, however small: early stopping's `min_delta` is not applied here, so with
/// a `min_delta` the best file can be a later epoch than early stopping's best.
///
/// The monitored figure is, by default, early stopping's if there is early stopping, else the
/// validation loss if there is a validation set, else the training loss.
#[derive(Clone, Debug)]
pub struct Checkpoints {
    pub(crate) dir: PathBuf,
    pub(crate) monitor: Option<Monitor>,
}

impl Checkpoints {
    /// Checkpoints in `dir` (created before training if it does not exist).
    pub fn in_dir(dir: impl AsRef<Path>) -> Checkpoints {
        Checkpoints { dir: dir.as_ref().to_path_buf(), monitor: None }
    }

    /// Chooses the figure that decides which epoch is best.
    pub fn best_by(mut self, monitor: Monitor) -> Checkpoints {
        self.monitor = Some(monitor);
        self
    }

    /// The file written after every epoch: `dir/last.safetensors`.
    pub fn last_path(&self) -> PathBuf {
        self.dir.join("last.safetensors")
    }

    /// The file of the best epoch so far: `dir/best.safetensors`.
    pub fn best_path(&self) -> PathBuf {
        self.dir.join("best.safetensors")
    }
}

impl Checkpoint {
    /// Reads a checkpoint file.
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be read; [`Error::Format`] naming the file and the problem
    /// if it is not a checkpoint (a model file from [`io::save`](crate::io::save), say), is
    /// truncated or corrupt, or holds metadata this version cannot read.
    pub fn load(path: impl AsRef<Path>) -> Result<Checkpoint> {
        let path = path.as_ref();
        let bytes = crate::io::read_safetensors_file(path)?;
        Checkpoint::from_bytes(bytes, path)
    }

    /// Like [`Checkpoint::load`], from bytes in memory; `origin` names them in messages.
    ///
    /// # Errors
    /// As [`Checkpoint::load`].
    pub fn from_bytes(bytes: Vec<u8>, origin: impl AsRef<Path>) -> Result<Checkpoint> {
        let origin = origin.as_ref().to_path_buf();
        let progress = {
            let bad = |m: String| Error::format(&origin, m);
            let file = SafeTensors::deserialize(&bytes)
                .map_err(|e| bad(format!("not a valid safetensors file ({e})")))?;
            let (_, header) = SafeTensors::read_metadata(&bytes)
                .map_err(|e| bad(format!("not a valid safetensors file ({e})")))?;
            let meta = header.metadata().clone().unwrap_or_default();
            if meta.contains_key("backprop.checkpoint") {
                let mut tensors = file.tensors();
                tensors.sort_by(|a, b| a.0.cmp(&b.0));
                let views: Vec<_> = tensors
                    .iter()
                    .map(|(n, v)| (n.as_str(), format!("{:?}", v.dtype()), v.shape(), v.data()))
                    .collect();
                let sum = format!("{:08x}", crate::io::checksum(views.into_iter(), &meta));
                match meta.get("checksum") {
                    Some(stored) if *stored == sum => {}
                    Some(stored) => {
                        return Err(bad(format!(
                            "the contents do not match the checksum (stored {stored}, computed {sum}): the file is \
                             damaged"
                        )));
                    }
                    None => return Err(bad("metadata \"checksum\" is missing".into())),
                }
            }
            let progress = Progress::parse(&meta).map_err(bad)?;
            check_tensors(&file, &progress).map_err(bad)?;
            progress
        };
        Ok(Checkpoint { bytes, origin, progress })
    }

    /// Writes the checkpoint to `path`, atomically (see [`io::save`](crate::io::save)).
    ///
    /// # Errors
    /// [`Error::Io`] naming the file if it cannot be written.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        crate::io::write_atomically(path.as_ref(), &self.bytes)
    }

    /// The file's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Epochs finished when it was written.
    pub fn epoch(&self) -> usize {
        self.progress.epoch
    }

    /// The seed of the run ([`FitOptions::seed`](super::FitOptions::seed)); resuming needs the
    /// same.
    pub fn seed(&self) -> u64 {
        self.progress.seed
    }

    /// The figures of every epoch up to the checkpoint.
    pub fn history(&self) -> &History {
        &self.progress.history
    }

    /// Loads the model's weights (only) into `model`, for prediction from a checkpoint.
    ///
    /// # Errors
    /// [`Error::Format`] listing every missing, unexpected or mis-shaped tensor when `model` is
    /// not the architecture that was trained; the model is then unchanged.
    pub fn load_model(&self, model: &mut dyn Visit) -> Result<()> {
        self.load_prefixed(model, "model.")
    }

    pub(crate) fn progress(&self) -> &Progress {
        &self.progress
    }

    /// Loads the tensors stored under `prefix` into `model` (strictly: every one of the model's,
    /// nothing else).
    fn load_prefixed(&self, model: &mut dyn Visit, prefix: &str) -> Result<()> {
        let rename = |n: &str| n.strip_prefix(prefix).map(str::to_string);
        load_safetensors_with(model, &self.bytes, &self.origin, &LoadOptions::new().rename(&rename))
            .map(|_| ())
    }

    /// The carried recurrent states stored in the file, by the name of the state (`0.carried_state`).
    fn carried_states(&self) -> Result<HashMap<String, RecurrentState>> {
        let bad = |m: String| Error::format(&self.origin, m);
        let file = SafeTensors::deserialize(&self.bytes)
            .map_err(|e| bad(format!("not a valid safetensors file ({e})")))?;
        let tensor = |name: &str| -> Result<Option<Tensor>> {
            let Ok(view) = file.tensor(name) else { return Ok(None) };
            let data =
                view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
            Tensor::from_vec(view.shape(), data).map(Some).map_err(|e| bad(format!("tensor {name:?}: {e}")))
        };
        let mut states = HashMap::new();
        for name in file.names() {
            let Some(state) = name.strip_prefix("carried.").and_then(|r| r.strip_suffix(".h")) else {
                continue;
            };
            let h = tensor(name)?.expect("listed");
            let c = tensor(&format!("carried.{state}.c"))?;
            if c.as_ref().is_some_and(|c| c.shape() != h.shape()) {
                return Err(bad(format!("the carried state {state:?}: its c and h differ in shape")));
            }
            states.insert(state.to_string(), RecurrentState { h, c });
        }
        Ok(states)
    }

    /// The optimizer's state stored in the file.
    fn optimizer_state(&self) -> Result<OptimizerState> {
        let bad = |m: String| Error::format(&self.origin, m);
        let file = SafeTensors::deserialize(&self.bytes)
            .map_err(|e| bad(format!("not a valid safetensors file ({e})")))?;
        let mut state = OptimizerState::default();
        state.set_steps(self.progress.optimizer_steps);
        for (name, view) in file.tensors() {
            let Some(rest) = name.strip_prefix("optimizer.") else { continue };
            let (kind, param) = rest.split_once('.').expect("checked when the file was read");
            let data =
                view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
            let t = Tensor::from_vec(view.shape(), data).map_err(|e| bad(format!("tensor {name:?}: {e}")))?;
            state.insert(kind, param, t);
        }
        Ok(state)
    }

    /// Puts the model, its generators, the optimizer's state and the step's state back as they
    /// were when the checkpoint was written, all or nothing; returns the best weights for early
    /// stopping, if stored.
    pub(crate) fn restore(
        &self,
        model: &mut dyn Visit,
        optimizer: &mut dyn Optimizer,
        step: &mut dyn super::Step,
    ) -> Result<Option<Snapshot>> {
        let p = &self.progress;
        let bad = |m: String| Error::format(&self.origin, m);
        let kind = optimizer_kind(&optimizer.describe());
        if kind != p.optimizer {
            return Err(bad(format!("the checkpoint holds the state of {}, not of {kind}", p.optimizer)));
        }
        // The same kind with other settings: its state belongs to those (a momentum buffer that
        // SGD without momentum never reads, an AMSGrad maximum that starts from zero), so the run
        // would not go on as the stored one would. The learning rate may differ.
        let settings = optimizer_settings(&optimizer.describe());
        if let Some(stored) = p.optimizer_settings.as_ref().filter(|s| **s != settings) {
            return Err(bad(format!(
                "the checkpoint's optimizer was {stored}, this run's is {settings} (learning rates aside): its saved \
                 state belongs to those settings; resume with them (the learning rate may change)"
            )));
        }
        if step.describe() != p.step {
            return Err(bad(format!(
                "the checkpoint was trained with the step {:?}, this run uses {:?}",
                p.step,
                step.describe()
            )));
        }
        let mut names = Vec::new();
        model.visit(&mut |name, s| {
            if let State::Rng(_) = s {
                names.push(name.to_string());
            }
        });
        // Matched by name: the metadata's JSON object keeps its keys sorted, not in the order the
        // model visits them (`2.rng` after `10.rng`; a Transformer block's `self_attn.rng` before
        // its `dropout.rng`).
        let stored: HashMap<&str, &Rng> = p.model_rngs.iter().map(|(n, r)| (n.as_str(), r)).collect();
        if names.len() != stored.len() || names.iter().any(|n| !stored.contains_key(n.as_str())) {
            let mut sorted = names.clone();
            sorted.sort();
            let stored_names: Vec<&str> = p.model_rngs.iter().map(|(n, _)| n.as_str()).collect();
            return Err(bad(format!(
                "the model's random generators are {sorted:?}, the checkpoint's {stored_names:?}: another architecture"
            )));
        }
        let optimizer_state = self.optimizer_state()?;
        let (model_before, mut optimizer_before) = (Snapshot::of(model), OptimizerState::default());
        optimizer.save_state(&mut optimizer_before);
        let undo = |model: &mut dyn Visit, optimizer: &mut dyn Optimizer, e: Error| {
            model_before.restore(model);
            optimizer.load_state(&optimizer_before).expect("its own state");
            Err(e)
        };
        let mut best = None;
        if p.early.is_some_and(|e| e.has_weights) {
            if let Err(e) = self.load_prefixed(model, "best.") {
                return undo(model, optimizer, e);
            }
            best = Some(Snapshot::of(model));
        }
        if let Err(e) = self.load_prefixed(model, "model.") {
            return undo(model, optimizer, e);
        }
        if let Err(e) = optimizer.load_state(&optimizer_state) {
            return undo(model, optimizer, bad(super::detail(&e)));
        }
        // The optimizer's buffers against the model's parameters (names and shapes): a file of
        // another model, whose moments would otherwise be found out by `fit` after this restore
        // had overwritten the weights.
        if let Err(e) = super::check_optimizer_fits(&*model, &*optimizer, "resume") {
            return undo(model, optimizer, bad(super::detail(&e)));
        }
        let carried = match self.carried_states() {
            Ok(c) => c,
            Err(e) => return undo(model, optimizer, e),
        };
        let mut slots = Vec::new();
        model.visit(&mut |name, s| {
            if let State::Carried(_) = s {
                slots.push(name.to_string());
            }
        });
        if let Some(name) = carried.keys().find(|n| !slots.contains(n)) {
            let e = bad(format!(
                "a carried state {name:?}, which this model does not have: another architecture"
            ));
            return undo(model, optimizer, e);
        }
        // The step's state last of what can fail (its own load is all or nothing): a refusal
        // before it leaves a DP-SGD step's generators and step count as they were.
        if let Err(e) = step.load_state(&p.step_state) {
            return undo(model, optimizer, bad(format!("the step's state: {}", super::detail(&e))));
        }
        model.visit_mut(&mut |name, s| match s {
            StateMut::Rng(r) => *r = stored[name].clone(), // (every name is there: checked above)
            StateMut::Carried(state) => *state = carried.get(name).cloned(),
            _ => {}
        });
        Ok(best)
    }
}

/// What [`fit`](super::fit) knows at the end of an epoch, for writing a checkpoint.
pub(crate) struct Capture<'a> {
    pub model: &'a dyn Visit,
    pub optimizer: &'a dyn Optimizer,
    pub step: &'a dyn super::Step,
    pub seed: u64,
    pub shuffle: &'a Rng,
    pub augment: &'a Rng,
    pub early: Option<(EarlyState, Option<&'a Snapshot>)>,
    pub best_checkpoint: Option<f32>,
    /// The figure `best_checkpoint` measures.
    pub checkpoint_monitor: Option<Monitor>,
    pub history: &'a History,
}

impl Capture<'_> {
    /// The checkpoint's bytes.
    pub(crate) fn to_bytes(&self, optimizer_state: &mut OptimizerState) -> Result<Vec<u8>> {
        let mut entries = Entries::default();
        entries.add_model("model.", self.model);
        self.optimizer.save_state(optimizer_state);
        for (kind, param, t) in optimizer_state.iter() {
            entries.add_tensor(&format!("optimizer.{kind}.{param}"), t);
        }
        if let Some((_, Some(best))) = self.early {
            let (tensors, counters) = best.named(self.model);
            for (name, t) in tensors {
                entries.add_tensor(&format!("best.{name}"), t);
            }
            for (name, n) in counters {
                entries.add_count(&format!("best.{name}"), n);
            }
        }
        let mut rngs = serde_json::Map::new();
        self.model.visit(&mut |name, s| match s {
            State::Rng(r) => {
                rngs.insert(name.to_string(), rng_json(r));
            }
            // A stateful recurrent layer's state carried into the next batch (not part of the
            // model's file: a saved model starts from zeros, but a resumed run continues).
            State::Carried(Some(state)) => {
                entries.add_tensor(&format!("carried.{name}.h"), &state.h);
                if let Some(c) = &state.c {
                    entries.add_tensor(&format!("carried.{name}.c"), c);
                }
            }
            _ => {}
        });
        let epoch = self.history.epochs.len();
        let early = self.early.map_or(Value::Null, |(e, weights)| {
            json!({"best": e.best.map(float_json), "best_epoch": e.best_epoch, "waited": e.waited,
                   "has_weights": weights.is_some(), "monitor": e.monitor.map(monitor_name)})
        });
        let metadata = HashMap::from([
            ("backprop.checkpoint".to_string(), VERSION.to_string()),
            ("epoch".into(), epoch.to_string()),
            ("seed".into(), self.seed.to_string()),
            ("optimizer".into(), optimizer_kind(&self.optimizer.describe())),
            ("optimizer.settings".into(), optimizer_settings(&self.optimizer.describe())),
            ("optimizer.steps".into(), optimizer_state.steps().to_string()),
            ("step".into(), self.step.describe()),
            ("step.state".into(), self.step.save_state()),
            ("rng.shuffle".into(), rng_json(self.shuffle).to_string()),
            ("rng.augment".into(), rng_json(self.augment).to_string()),
            ("rng.model".into(), Value::Object(rngs).to_string()),
            ("early_stopping".into(), early.to_string()),
            ("checkpoints.best".into(), self.best_checkpoint.map_or(Value::Null, float_json).to_string()),
            ("checkpoints.monitor".into(), json!(self.checkpoint_monitor.map(monitor_name)).to_string()),
            ("history".into(), history_json(self.history).to_string()),
        ]);
        let mut metadata = metadata;
        let sum = entries.checksum(&metadata);
        metadata.insert("checksum".into(), format!("{sum:08x}"));
        entries.serialize(metadata)
    }
}

/// `"Adam"` of `"Adam(lr=0.001)"`.
fn optimizer_kind(describe: &str) -> String {
    describe.split('(').next().unwrap_or(describe).trim().to_string()
}

/// The settings of `describe` but its learning rate, wherever its `lr=` token stands:
/// `"SGD(momentum=0.9)"` of `"SGD(lr=0.05, momentum=0.9)"`, `"Adam()"` of `"Adam(lr=0.001)"`,
/// `"Lion(beta=0.9)"` of `"Lion(beta=0.9, lr=0.1)"` (a resumed run may lower the rate, as after a
/// divergence; its other settings are what its saved state belongs to).
fn optimizer_settings(describe: &str) -> String {
    let starts = |i: usize| {
        i == 0 || !(describe.as_bytes()[i - 1].is_ascii_alphanumeric() || describe.as_bytes()[i - 1] == b'_')
    };
    let Some(at) = describe.match_indices("lr=").map(|(i, _)| i).find(|&i| starts(i)) else {
        return describe.to_string();
    };
    let after = &describe[at + 3..];
    let end = after.find([',', ')', ' ']).unwrap_or(after.len());
    let (head, tail) = (&describe[..at], &after[end..]);
    match (head.trim_end().strip_suffix(','), tail.strip_prefix(',')) {
        // "…, lr=x)" or "…, lr=x, …": the comma before it goes.
        (Some(before), _) => format!("{before}{tail}"),
        // "(lr=x, …)": the comma after it goes.
        (None, Some(rest)) => format!("{head}{}", rest.trim_start()),
        (None, None) => format!("{head}{}", tail.trim_start()),
    }
}

/// A generator's state as JSON (its four words).
pub(crate) fn rng_json(r: &Rng) -> Value {
    serde_json::to_value(r).expect("a generator's state is four integers")
}

/// A generator from [`rng_json`]'s JSON. The all-zero state is refused: xoshiro's one fixed
/// point, from which it returns 0 forever (no seed reaches it, so only a damaged or hand-made
/// file holds it; a normal sampler fed zeros would never return, a dropout mask drop everything).
pub(crate) fn rng_from(v: &Value, what: &str) -> std::result::Result<Rng, String> {
    let r: Rng =
        serde_json::from_value(v.clone()).map_err(|e| format!("{what}: not a generator's state ({e})"))?;
    if rng_json(&r) == json!({"s": [0, 0, 0, 0]}) {
        return Err(format!(
            "{what}: the all-zero state, which no seed reaches (the generator would return 0 forever)"
        ));
    }
    Ok(r)
}

/// An `f32` as JSON: a number when finite (exact: JSON numbers print the shortest decimal that
/// reads back to the same `f32`), else the string `"NaN"`, `"inf"` or `"-inf"`.
fn float_json(x: f32) -> Value {
    if x.is_finite() { json!(x) } else { json!(x.to_string()) }
}

fn float_from(v: &Value, what: &str) -> std::result::Result<f32, String> {
    match v {
        Value::Number(n) => n.as_f64().map(|x| x as f32).ok_or_else(|| format!("{what}: not a number")),
        Value::String(s) => s.parse::<f32>().map_err(|_| format!("{what}: not a number ({s:?})")),
        _ => Err(format!("{what}: not a number ({v})")),
    }
}

fn option_float(v: &Value, what: &str) -> std::result::Result<Option<f32>, String> {
    if v.is_null() { Ok(None) } else { float_from(v, what).map(Some) }
}

fn history_json(h: &History) -> Value {
    let epochs: Vec<Value> = h
        .epochs
        .iter()
        .map(|e| {
            json!({
                "epoch": e.epoch,
                "train_loss": float_json(e.train_loss),
                "train_accuracy": e.train_accuracy.map(float_json),
                "val_loss": e.val_loss.map(float_json),
                "val_accuracy": e.val_accuracy.map(float_json),
                "learning_rate": float_json(e.learning_rate),
                "seconds": float_json(e.seconds),
            })
        })
        .collect();
    json!({"epochs": epochs, "stopped_early": h.stopped_early, "best_epoch": h.best_epoch})
}

fn history_from(v: &Value) -> std::result::Result<History, String> {
    let what = "metadata \"history\"";
    let epochs = v["epochs"].as_array().ok_or_else(|| format!("{what}: no list of epochs"))?;
    let mut history = History::default();
    for (i, e) in epochs.iter().enumerate() {
        let at = |k: &str| format!("{what}, epoch {}: {k}", i + 1);
        let epoch = e["epoch"].as_u64().ok_or_else(|| at("no epoch number"))? as usize;
        if epoch != i + 1 {
            return Err(at(&format!("numbered {epoch}")));
        }
        history.epochs.push(EpochStats {
            epoch,
            train_loss: float_from(&e["train_loss"], &at("train_loss"))?,
            train_accuracy: option_float(&e["train_accuracy"], &at("train_accuracy"))?,
            val_loss: option_float(&e["val_loss"], &at("val_loss"))?,
            val_accuracy: option_float(&e["val_accuracy"], &at("val_accuracy"))?,
            learning_rate: float_from(&e["learning_rate"], &at("learning_rate"))?,
            seconds: float_from(&e["seconds"], &at("seconds"))?,
        });
    }
    history.stopped_early = v["stopped_early"].as_bool().unwrap_or(false);
    history.best_epoch = v["best_epoch"].as_u64().map(|b| b as usize);
    Ok(history)
}

impl Progress {
    fn parse(meta: &HashMap<String, String>) -> std::result::Result<Progress, String> {
        let get = |k: &str| meta.get(k).ok_or_else(|| format!("metadata {k:?} is missing"));
        match meta.get("backprop.checkpoint").map(String::as_str) {
            Some(VERSION) => {}
            Some(v) => {
                return Err(format!("checkpoint format {v:?}; this version of backprop reads {VERSION:?}"));
            }
            None => {
                return Err(
                    "not a checkpoint (no \"backprop.checkpoint\" metadata): a model file is loaded with \
                            io::load"
                        .into(),
                );
            }
        }
        let number = |k: &str| -> std::result::Result<u64, String> {
            let s = get(k)?;
            s.parse().map_err(|_| format!("metadata {k:?} is not a count: {s:?}"))
        };
        let parse_json = |k: &str| -> std::result::Result<Value, String> {
            serde_json::from_str(get(k)?).map_err(|e| format!("metadata {k:?} is not valid JSON ({e})"))
        };
        let epoch =
            usize::try_from(number("epoch")?).map_err(|_| "metadata \"epoch\" is too large".to_string())?;
        let history = history_from(&parse_json("history")?)?;
        if history.epochs.len() != epoch {
            return Err(format!(
                "the history has {} epochs, the checkpoint says {epoch}",
                history.epochs.len()
            ));
        }
        let model_rngs = match parse_json("rng.model")? {
            Value::Object(m) => m
                .iter()
                .map(|(k, v)| rng_from(v, &format!("metadata \"rng.model\", {k:?}")).map(|r| (k.clone(), r)))
                .collect::<std::result::Result<Vec<_>, _>>()?,
            other => return Err(format!("metadata \"rng.model\": not an object ({other})")),
        };
        let early = match parse_json("early_stopping")? {
            Value::Null => None,
            e => Some(EarlyState {
                best: option_float(&e["best"], "metadata \"early_stopping\", best")?,
                best_epoch: e["best_epoch"].as_u64().ok_or("metadata \"early_stopping\": no best_epoch")?
                    as usize,
                waited: e["waited"].as_u64().ok_or("metadata \"early_stopping\": no waited")? as usize,
                has_weights: e["has_weights"].as_bool().unwrap_or(false),
                monitor: monitor_from(&e["monitor"], "metadata \"early_stopping\", monitor")?,
            }),
        };
        // Figures a run can have written: epochs within the run, finite metrics (training stops
        // before a NaN or an infinity is ever recorded).
        if let Some(e) = &early {
            if e.best_epoch > epoch || e.waited > epoch {
                return Err(format!(
                    "metadata \"early_stopping\": best epoch {} and {} epochs waited, after {epoch} epochs",
                    e.best_epoch, e.waited
                ));
            }
            if let Some(best) = e.best.filter(|b| !b.is_finite()) {
                return Err(format!("metadata \"early_stopping\": the best figure is {best}"));
            }
        }
        if let Some(best_epoch) = history.best_epoch.filter(|&b| b > epoch) {
            return Err(format!("the history's best epoch is {best_epoch}, after {epoch} epochs"));
        }
        let best_checkpoint =
            option_float(&parse_json("checkpoints.best")?, "metadata \"checkpoints.best\"")?;
        if best_checkpoint.is_some_and(f32::is_nan) {
            return Err("metadata \"checkpoints.best\" is NaN".into());
        }
        Ok(Progress {
            epoch,
            seed: number("seed")?,
            optimizer: get("optimizer")?.clone(),
            optimizer_settings: meta.get("optimizer.settings").cloned(),
            optimizer_steps: number("optimizer.steps")?,
            step: get("step")?.clone(),
            step_state: get("step.state")?.clone(),
            shuffle: rng_from(&parse_json("rng.shuffle")?, "metadata \"rng.shuffle\"")?,
            augment: rng_from(&parse_json("rng.augment")?, "metadata \"rng.augment\"")?,
            model_rngs,
            early,
            checkpoint_monitor: match meta.contains_key("checkpoints.monitor") {
                true => {
                    monitor_from(&parse_json("checkpoints.monitor")?, "metadata \"checkpoints.monitor\"")?
                }
                false => None, // (a file from before it was recorded)
            },
            best_checkpoint,
            history,
        })
    }
}

/// Checks the tensors' names and dtypes (the model checks shapes when it loads them).
fn check_tensors(file: &SafeTensors<'_>, p: &Progress) -> std::result::Result<(), String> {
    let mut has_model = false;
    for (name, view) in file.tensors() {
        if let Some(rest) = name.strip_prefix("optimizer.") {
            if !rest.split_once('.').is_some_and(|(k, n)| !k.is_empty() && !n.is_empty()) {
                return Err(format!("tensor {name:?}: expected optimizer.{{kind}}.{{parameter}}"));
            }
            if view.dtype() != Dtype::F32 {
                return Err(format!("tensor {name:?} has dtype {:?}, expected F32", view.dtype()));
            }
        } else if name.starts_with("model.") {
            has_model = true;
            if view.dtype() != Dtype::F32 && view.dtype() != Dtype::I64 {
                return Err(format!(
                    "tensor {name:?} has dtype {:?}, expected F32 (or I64 for a counter)",
                    view.dtype()
                ));
            }
        } else if name.starts_with("best.") {
            if !p.early.is_some_and(|e| e.has_weights) {
                return Err(format!("tensor {name:?}: best weights without early stopping's state"));
            }
        } else if let Some(rest) = name.strip_prefix("carried.") {
            let part = rest.rsplit_once('.').map(|(_, part)| part);
            if !matches!(part, Some("h" | "c")) || view.dtype() != Dtype::F32 || view.shape().len() != 2 {
                return Err(format!(
                    "tensor {name:?}: expected carried.{{state}}.h or .c, a 2-D F32 tensor [N, H] (got {:?} {:?})",
                    view.dtype(),
                    view.shape()
                ));
            }
        } else {
            return Err(format!(
                "unexpected tensor {name:?}: checkpoints hold model.*, optimizer.*, best.* and carried.*"
            ));
        }
    }
    // Training never leaves a NaN or an infinity in the weights or the optimizer's buffers (it
    // stops before), so one here is damage: refuse it now rather than train from it.
    for (name, view) in file.tensors() {
        if view.dtype() == Dtype::F32
            && let Some(i) = view
                .data()
                .chunks_exact(4)
                .position(|b| !f32::from_le_bytes([b[0], b[1], b[2], b[3]]).is_finite())
        {
            return Err(format!(
                "tensor {name:?} holds a NaN or an infinity (element {i}): the file is damaged"
            ));
        }
    }
    if !has_model && !p.model_rngs.is_empty() {
        return Err("no model tensors (model.*)".into());
    }
    Ok(())
}

/// Named tensors and named counters.
type NamedParts<'s> = (Vec<(String, &'s Tensor)>, Vec<(String, u64)>);

impl Snapshot {
    /// The snapshot's tensors and counters with the names `layer` gives them (the layer the
    /// snapshot was taken of).
    pub(crate) fn named<'s, V: Visit + ?Sized>(&'s self, layer: &V) -> NamedParts<'s> {
        let (tensors, counters) = self.parts();
        let (mut t, mut c) = (tensors.iter(), counters.iter());
        let (mut named_t, mut named_c) = (Vec::new(), Vec::new());
        layer.visit(&mut |name, s| match s {
            State::Param(_) | State::Buffer(_) => {
                if let Some(x) = t.next() {
                    named_t.push((name.to_string(), x));
                }
            }
            State::Counter(_) => {
                if let Some(&n) = c.next() {
                    named_c.push((name.to_string(), n));
                }
            }
            State::Rng(_) | State::Carried(_) => {}
        });
        (named_t, named_c)
    }
}

/// A monitored figure's name in a checkpoint's metadata.
fn monitor_name(m: Monitor) -> &'static str {
    match m {
        Monitor::ValLoss => "val_loss",
        Monitor::ValAccuracy => "val_accuracy",
        Monitor::TrainLoss => "train_loss",
    }
}

/// A monitored figure read back from a checkpoint's metadata (`null` or absent: not recorded).
fn monitor_from(v: &Value, what: &str) -> std::result::Result<Option<Monitor>, String> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => [Monitor::ValLoss, Monitor::ValAccuracy, Monitor::TrainLoss]
            .into_iter()
            .find(|&m| monitor_name(m) == s)
            .map(Some)
            .ok_or_else(|| format!("{what}: {s:?} is no monitored figure")),
        other => Err(format!("{what}: not a name ({other})")),
    }
}

#[cfg(test)]
mod settings_tests {
    use super::optimizer_settings;

    /// The learning rate is taken out wherever it stands, with its comma; other tokens that end
    /// in `lr=` are kept.
    #[test]
    fn the_rate_is_taken_out_of_any_description() {
        for (describe, settings) in [
            ("SGD(lr=0.05, momentum=0.9)", "SGD(momentum=0.9)"),
            ("Adam(lr=0.001)", "Adam()"),
            ("Adam(lr=0.001, betas=(0.9, 0.99), amsgrad)", "Adam(betas=(0.9, 0.99), amsgrad)"),
            ("Lion(beta=0.9, lr=0.1)", "Lion(beta=0.9)"),
            ("Lion(beta=0.9, lr=0.1, wd=2)", "Lion(beta=0.9, wd=2)"),
            ("MyOpt lr=0.1", "MyOpt "),
            ("Odd(base_lr=3, lr=1e-4)", "Odd(base_lr=3)"),
            ("NoRate", "NoRate"),
        ] {
            assert_eq!(optimizer_settings(describe), settings, "{describe}");
        }
    }
}
