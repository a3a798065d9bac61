//! The training pipeline of the `image_classify` walkthrough, shared with its integration test
//! (`tests/walkthrough.rs` includes this file), so that the test runs exactly what the example runs.

use backprop::data::transforms::{Augmentation, Normalizer};
use backprop::prelude::*;

/// Step 1 — preprocess: normalise both sets with the training set's statistics.
pub struct Prepared {
    /// Normalised training set.
    pub train: Dataset,
    /// Normalised test set.
    pub test: Dataset,
    /// The statistics used (needed again to classify new images).
    pub normalizer: Normalizer,
    /// Whether the images are stored transposed (EMNIST): a new picture must be turned to match.
    pub transposed: bool,
}

pub fn prepare(train: Dataset, test: Dataset, transposed: bool) -> Result<Prepared> {
    let normalizer = Normalizer::fit(train.inputs())?;
    prepare_with(train, test, transposed, normalizer)
}

/// [`prepare`] with statistics given rather than fitted: private training must not compute them
/// from its training images (they would be released, in the weights file, without noise).
pub fn prepare_with(
    mut train: Dataset,
    mut test: Dataset,
    transposed: bool,
    normalizer: Normalizer,
) -> Result<Prepared> {
    normalizer.apply(train.inputs_mut())?;
    normalizer.apply(test.inputs_mut())?;
    Ok(Prepared { train, test, normalizer, transposed })
}

/// MNIST's published pixel mean and standard deviation (over its 60,000 training images): the
/// fixed statistics of private training, which may use nothing of its own training set outside
/// the noised steps.
pub const MNIST_MEAN_STD: (f32, f32) = (0.1307, 0.3081);

/// The most weights [`reference_cnn`]'s last layer may have (1 GiB of them): its input is every
/// pixel of the last feature maps, so large images or many classes would otherwise ask for more
/// memory than the machine has before anything could say so.
pub const MAX_CLASSIFIER_WEIGHTS: usize = 1 << 28;

/// The weights of [`reference_cnn`]'s last layer for images of shape `[C, H, W]` (saturating).
pub fn classifier_weights(input: &[usize], classes: usize) -> usize {
    let side = |s: usize| (s.saturating_sub(2) / 2).saturating_sub(2) / 2;
    match input {
        [_, h, w] => 64usize.saturating_mul(side(*h)).saturating_mul(side(*w)).saturating_mul(classes),
        _ => 0,
    }
}

/// Step 2 — the model: two convolution blocks and a linear classifier.
/// For 28×28 inputs: 1×28×28 → 32×26×26 → 32×13×13 → 64×11×11 → 64×5×5 → 1600 → classes.
pub fn reference_cnn(input: &[usize], classes: usize, seed: u64) -> Result<Sequential> {
    let &[channels, h, w] = input else {
        return Err(Error::shape(format!("expected image inputs [C, H, W], got {input:?}")));
    };
    let side = |s: usize| (s.saturating_sub(2) / 2).saturating_sub(2) / 2;
    let weights = classifier_weights(input, classes);
    if weights > MAX_CLASSIFIER_WEIGHTS {
        return Err(Error::invalid(format!(
            "images of shape {input:?} with {classes} classes would need a classifier of {weights} weights (at most \
             {MAX_CLASSIFIER_WEIGHTS}: this network is made for small images; resize them)"
        )));
    }
    Sequential::builder(input)
        .add(Conv2d::new(channels, 32, 3).seed(seed))
        .add(Relu::new())
        .add(MaxPool2d::new(2))
        .add(Conv2d::new(32, 64, 3).seed(seed.wrapping_add(1)))
        .add(Relu::new())
        .add(MaxPool2d::new(2))
        .add(Flatten::new())
        .add(Dropout::new(0.5))
        .add(
            Dense::new(64 * side(h) * side(w), classes)
                .init(backprop::tensor::init::Init::GlorotUniform)
                .seed(seed.wrapping_add(2)),
        )
        .build()
}

/// Training settings (the example's command-line options).
#[derive(Clone, Debug)]
pub struct Settings {
    pub epochs: usize,
    pub batch_size: usize,
    /// Images per batch when evaluating on the test set after every epoch.
    pub evaluation_batch: usize,
    pub lr: f32,
    pub seed: u64,
    pub verbose: bool,
}

/// Step 3 — train with Adam, cosine-decayed learning rate, random shifts of up to 2 pixels,
/// evaluating on the test set after every epoch.
pub fn train(
    model: &mut Sequential,
    data: &Prepared,
    s: &Settings,
    mut on_epoch: impl FnMut(&backprop::train::EpochStats),
) -> Result<History> {
    let background = data.normalizer.normalized_value(0, 0.0);
    let augment = Augmentation::shift(2).with_fill(background);
    let options = FitOptions::new()
        .epochs(s.epochs)
        .batch_size(s.batch_size)
        .seed(s.seed)
        .validation(&data.test)
        .validation_batch_size(s.evaluation_batch)
        .validation_label("test")
        .schedule(Schedule::cosine(s.epochs.max(1), s.lr * 0.05)?)
        .augment(move |x, rng| augment.apply(x, rng))
        .verbose(s.verbose)
        .on_epoch_end(|e| on_epoch(e));
    model.fit(&data.train, &CrossEntropyLoss::new(), &mut Adam::new(s.lr), options)
}
