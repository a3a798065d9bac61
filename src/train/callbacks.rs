//! What a training run reports and how it decides to stop: per-epoch and per-batch figures, the
//! history, and early stopping.

/// What early stopping watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Monitor {
    /// Validation loss (lower is better).
    ValLoss,
    /// Validation accuracy (higher is better).
    ValAccuracy,
    /// Training loss (lower is better).
    TrainLoss,
}

/// Stop training when a metric has not improved for `patience` epochs.
#[derive(Clone, Debug)]
pub struct EarlyStopping {
    /// The metric watched.
    pub monitor: Monitor,
    /// Epochs without improvement before stopping (at least 1).
    pub patience: usize,
    /// The least change that counts as an improvement (a finite number ≥ 0; `fit` refuses
    /// anything else).
    pub min_delta: f32,
    /// Put back the weights of the best epoch when training ends: its parameters, and its batch
    /// norm statistics and counters; the random generators (dropout's) and carried recurrent
    /// states stay where the last epoch left them.
    pub restore_best: bool,
}

impl EarlyStopping {
    /// Watches `monitor` with the given patience, `min_delta = 0`, restoring the best weights.
    pub fn new(monitor: Monitor, patience: usize) -> EarlyStopping {
        EarlyStopping { monitor, patience, min_delta: 0.0, restore_best: true }
    }

    /// The watched figure of an epoch, and whether higher is better.
    pub(crate) fn value(&self, stats: &EpochStats) -> (Option<f32>, bool) {
        match self.monitor {
            Monitor::ValLoss => (stats.val_loss, false),
            Monitor::ValAccuracy => (stats.val_accuracy, true),
            Monitor::TrainLoss => (Some(stats.train_loss), false),
        }
    }
}

/// Figures of one finished epoch.
#[derive(Clone, Debug, PartialEq)]
pub struct EpochStats {
    /// Epoch number, from 1.
    pub epoch: usize,
    /// Mean training loss over the epoch's batches, each batch's mean weighted by its terms
    /// ([`Loss::terms`](crate::loss::Loss::terms): its samples, or the positions that are not
    /// padding), so the mean over every term the epoch counted — NaN for an epoch that counted
    /// none (every batch passed over, the counted samples all in a batch `drop_last` left out),
    /// which early stopping and the best checkpoint then pass over: a 0 there had read as a
    /// perfect epoch, one that took no step. The weights change during the epoch, so this is a running average that starts with the epoch's first, worst
    /// batches: evaluate the training set after the epoch for the end-of-epoch figure.
    pub train_loss: f32,
    /// Training accuracy over the epoch (classification only), in `[0, 1]`, with the same caveat.
    pub train_accuracy: Option<f32>,
    /// Loss on the validation set, if one was given.
    pub val_loss: Option<f32>,
    /// Accuracy on the validation set (classification only).
    pub val_accuracy: Option<f32>,
    /// The learning rate used during the epoch.
    pub learning_rate: f32,
    /// Wall-clock time of the epoch, validation included.
    pub seconds: f32,
}

/// Figures of one finished training batch.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchStats {
    /// Epoch number, from 1.
    pub epoch: usize,
    /// Batch number within the epoch, from 1.
    pub batch: usize,
    /// Batches per epoch.
    pub batches: usize,
    /// The batch's loss.
    pub loss: f32,
    /// Correct predictions in the batch (classification only).
    pub correct: Option<usize>,
    /// Samples in the batch.
    pub size: usize,
    /// The terms the batch's loss is the mean of ([`Loss::terms`](crate::loss::Loss::terms):
    /// its samples, or the positions that are not padding): [`EpochStats::train_loss`] is the
    /// mean of the batches' losses weighted by these.
    pub terms: usize,
}

/// The record of a [`fit`](super::fit) run: one [`EpochStats`] per epoch trained.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    /// Per-epoch figures, in order.
    pub epochs: Vec<EpochStats>,
    /// True when early stopping ended training before the last epoch.
    pub stopped_early: bool,
    /// The best epoch according to early stopping (when it was used; `None` if no epoch had a
    /// figure to compare — a training loss over no terms in each).
    pub best_epoch: Option<usize>,
}

impl History {
    /// The figures of the last epoch trained.
    pub fn last(&self) -> Option<&EpochStats> {
        self.epochs.last()
    }
}

/// The result of [`evaluate`](super::evaluate).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Evaluation {
    /// Mean loss over every term the loss counts ([`Loss::terms`](crate::loss::Loss::terms):
    /// samples, or the positions that are not padding), whatever the batch size.
    pub loss: f32,
    /// Fraction correct (classification only).
    pub accuracy: Option<f32>,
    /// Number correct (classification only).
    pub correct: Option<usize>,
    /// Number of samples.
    pub total: usize,
}
