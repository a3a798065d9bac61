//! What `fit` shows while it runs: a progress bar per epoch (only when stderr is a terminal) and
//! one line per finished epoch.

use super::callbacks::EpochStats;
use std::io::IsTerminal;

/// A progress bar over an epoch's batches, or `None` when not verbose or not on a terminal (or
/// when the crate is built without its `progress` feature).
pub(crate) fn bar(verbose: bool, batches: usize, epoch: usize, epochs: usize) -> Option<Bar> {
    if !verbose || !std::io::stderr().is_terminal() {
        return None;
    }
    Bar::new(batches, epoch, epochs)
}

/// The bar: `indicatif`'s, drawn on stderr.
#[cfg(feature = "progress")]
pub(crate) struct Bar(indicatif::ProgressBar);

#[cfg(feature = "progress")]
impl Bar {
    fn new(batches: usize, epoch: usize, epochs: usize) -> Option<Bar> {
        let bar = indicatif::ProgressBar::new(batches as u64);
        let style =
            indicatif::ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg} ({eta})")
                .expect("a valid template")
                .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(format!("{epoch}/{epochs}"));
        Some(Bar(bar))
    }

    pub(crate) fn inc(&self, n: u64) {
        self.0.inc(n);
    }

    pub(crate) fn set_message(&self, message: String) {
        self.0.set_message(message);
    }

    pub(crate) fn finish_and_clear(&self) {
        self.0.finish_and_clear();
    }
}

/// Without the `progress` feature there is no bar; the per-epoch lines remain.
#[cfg(not(feature = "progress"))]
pub(crate) struct Bar;

#[cfg(not(feature = "progress"))]
impl Bar {
    fn new(_: usize, _: usize, _: usize) -> Option<Bar> {
        None
    }

    pub(crate) fn inc(&self, _: u64) {}

    pub(crate) fn set_message(&self, _: String) {}

    pub(crate) fn finish_and_clear(&self) {}
}

/// `epoch 3/10: loss 0.1234, accuracy 96.00% | val loss … | lr 1.00e-3 | 2.5 s`.
pub(crate) fn epoch_line(s: &EpochStats, epochs: usize, val: &str) -> String {
    let mut line = format!("epoch {}/{epochs}: loss {:.4}", s.epoch, s.train_loss);
    if let Some(a) = s.train_accuracy {
        line += &format!(", accuracy {:.2}%", 100.0 * a);
    }
    if let Some(l) = s.val_loss {
        line += &format!(" | {val} loss {l:.4}");
    }
    if let Some(a) = s.val_accuracy {
        line += &format!(", {val} accuracy {:.2}%", 100.0 * a);
    }
    line + &format!(" | lr {:.2e} | {:.1} s", s.learning_rate, s.seconds)
}
