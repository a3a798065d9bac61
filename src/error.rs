//! One error type for everything fallible in the crate.
//!
//! Programming mistakes inside a hot loop (adding two tensors of different shapes, feeding a layer an
//! input it was not built for) panic with a message naming both shapes, like `ndarray` does. Everything
//! that depends on the outside world — files, user arguments, building a model from a list of layers,
//! a loss that turns NaN during training — returns `Result<_, Error>` instead.

use std::fmt;
use std::path::PathBuf;

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in a fallible `backprop` operation.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// Shapes do not fit: a tensor built from a buffer of the wrong length, a layer given an input of
    /// the wrong rank or size. The message names the layer (where there is one) and both shapes.
    Shape(String),
    /// A value outside what the operation accepts (a label ≥ the number of classes, a bad argument).
    InvalidArgument(String),
    /// Reading or writing a file failed at the operating-system level.
    Io {
        /// The file involved.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// A file was read but its contents are not what they should be (wrong magic number, truncated,
    /// a tensor name or shape that does not match the model).
    Format {
        /// The file involved.
        path: PathBuf,
        /// What was wrong, in words.
        message: String,
    },
    /// Training stopped because the loss (or a gradient) stopped being a finite number. The
    /// model keeps the weights it had before the batch where it happened.
    NonFinite {
        /// What became non-finite: `"loss"`, or `"gradient of 3.weight"`.
        what: String,
        /// Epoch (counted from 1) in which it happened.
        epoch: usize,
        /// Batch (counted from 1) within that epoch.
        batch: usize,
        /// The value it took (NaN or ±∞).
        value: f32,
        /// The last finite training loss seen before it, if any.
        last_finite_loss: Option<f32>,
    },
    /// Training stopped because a layer refused a batch (it panicked, for example batch norm
    /// given a batch of one sample). The model keeps the state it had before that batch.
    Training {
        /// Epoch (counted from 1) in which it happened.
        epoch: usize,
        /// Batch (counted from 1) within that epoch.
        batch: usize,
        /// What the layer said.
        message: String,
    },
}

impl Error {
    /// Shorthand for [`Error::Shape`].
    pub fn shape(msg: impl Into<String>) -> Self {
        Error::Shape(msg.into())
    }

    /// Shorthand for [`Error::InvalidArgument`].
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidArgument(msg.into())
    }

    /// Shorthand for [`Error::Format`].
    pub fn format(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Format { path: path.into(), message: msg.into() }
    }

    /// Shorthand for [`Error::Io`].
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Shape(m) => write!(f, "shape error: {m}"),
            Error::InvalidArgument(m) => write!(f, "invalid argument: {m}"),
            Error::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Error::Format { path, message } => write!(f, "{}: {message}", path.display()),
            Error::NonFinite { what, epoch, batch, value, last_finite_loss } => {
                write!(f, "training stopped: the {what} became {value} at epoch {epoch}, batch {batch}")?;
                match last_finite_loss {
                    Some(l) => write!(f, " (last finite loss: {l})"),
                    None => write!(f, " (no finite loss was seen before it)"),
                }?;
                write!(
                    f,
                    "; the weights from before that batch were kept. The data were checked before training and \
                     are finite, so the step diverged — try a smaller learning rate or FitOptions::clip_grad_norm"
                )
            }
            Error::Training { epoch, batch, message } => write!(
                f,
                "training stopped at epoch {epoch}, batch {batch}: {message}; the model was left as it was before that batch"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
