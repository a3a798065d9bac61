//! Preprocessing: normalisation by statistics of the training set, and seeded augmentation.
//!
//! Networks train best on inputs centred near 0 with unit spread, so each channel `c` is mapped
//! to `(x − mean_c) / std_c`, with `mean_c` and `std_c` computed **on the training set only**
//! (computing them on the test set would leak information about it) and then applied unchanged to
//! every other set.
//!
//! Augmentation makes a small training set look larger: every time a batch is drawn, each image is
//! shifted by a few pixels (and, for data where it makes sense, mirrored), so the network cannot
//! memorise exact pixel positions. Digits must not be mirrored — a mirrored 2 is not a 2 — so
//! flipping is off by default.

use crate::error::{Error, Result};
use crate::tensor::{Rng, Tensor, shape_str};
use rand::RngExt;

/// Per-channel normalisation `(x − mean_c) / std_c` for `[N, C, …]` inputs.
///
/// ```
/// use backprop::data::transforms::Normalizer;
/// use backprop::Tensor;
/// let train = Tensor::from_vec(&[2, 1, 1, 2], vec![0., 2., 4., 6.]).unwrap();
/// let norm = Normalizer::fit(&train).unwrap();
/// assert_eq!(norm.mean, vec![3.0]);
/// let mut x = train.clone();
/// norm.apply(&mut x).unwrap();
/// assert!(x.mean().abs() < 1e-6);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Normalizer {
    /// Mean of each channel on the training set.
    pub mean: Vec<f32>,
    /// Standard deviation of each channel on the training set (never 0: a constant channel, or one
    /// whose spread is below f32's normal range, gets 1).
    pub std: Vec<f32>,
}

impl Normalizer {
    /// Computes per-channel mean and standard deviation of `inputs` (`[N, C, …]`, channel axis 1).
    ///
    /// # Errors
    /// [`Error::Shape`] if `inputs` has fewer than 2 axes, or no values (no samples, no channels,
    /// or channels of no values: nothing to take a mean of); [`Error::InvalidArgument`] naming the
    /// sample and position of a NaN or infinite value (its channel's mean and spread would be
    /// NaN or infinite too).
    pub fn fit(inputs: &Tensor) -> Result<Normalizer> {
        if inputs.ndim() < 2 || inputs.is_empty() {
            return Err(Error::shape(format!(
                "Normalizer::fit needs [N, C, …] with at least one value in each channel, got {}",
                shape_str(inputs.shape())
            )));
        }
        super::check_finite(inputs, "Normalizer::fit: the inputs", false)?;
        let (n, c) = (inputs.dim(0), inputs.dim(1));
        let inner = inputs.len() / (n * c);
        let (mut mean, mut std) = (vec![0.0; c], vec![1.0; c]);
        for ch in 0..c {
            let values = || {
                (0..n).flat_map(move |s| {
                    inputs.data()[(s * c + ch) * inner..][..inner].iter().map(|&v| v as f64)
                })
            };
            let m = values().sum::<f64>() / (n * inner) as f64;
            let var = values().map(|v| (v - m).powi(2)).sum::<f64>() / (n * inner) as f64;
            mean[ch] = m as f32;
            // 1 for a constant channel (its variance is exactly 0 in this two-pass f64 sum), and
            // for a spread too small for a normal f32 (dividing by it would overflow); any other
            // spread is kept, however small its scale (values near 10⁻⁷ have a spread near it).
            let s = var.sqrt() as f32;
            std[ch] = if s >= f32::MIN_POSITIVE { s } else { 1.0 };
        }
        Ok(Normalizer { mean, std })
    }

    /// Maps `x` to `(x − mean_c) / std_c` in place.
    ///
    /// # Errors
    /// [`Error::Shape`] if `x` is not `[N, C, …]` with the fitted number of channels;
    /// [`Error::InvalidArgument`] if a mean is not finite or a std is not a finite number of
    /// f32's normal range (≥ 1.2·10⁻³⁸: below it the division overflows; the fields are public,
    /// for example filled from a model file's metadata), or if a normalised value leaves `f32`
    /// (finite inputs near ±3·10³⁸ shifted by a mean of the other sign): `x` is then unchanged.
    pub fn apply(&self, x: &mut Tensor) -> Result<()> {
        if self.mean.len() != self.std.len()
            || self.mean.iter().any(|m| !m.is_finite())
            || self.std.iter().any(|s| !(s.is_finite() && *s >= f32::MIN_POSITIVE))
        {
            return Err(Error::invalid(format!(
                "Normalizer needs one finite mean and one finite std > 0 per channel, got means {:?} and stds {:?}",
                self.mean, self.std
            )));
        }
        if x.ndim() < 2 || x.dim(1) != self.mean.len() {
            return Err(Error::shape(format!(
                "Normalizer was fitted on {} channels, got inputs of shape {}",
                self.mean.len(),
                shape_str(x.shape())
            )));
        }
        let c = self.mean.len();
        let inner = if x.is_empty() { 0 } else { x.len() / (x.dim(0) * c) };
        if inner == 0 {
            return Ok(());
        }
        // (v − m)/s in f32, as PyTorch's `Normalize` computes it (the same bits); a finite value
        // whose result is not is refused before anything is written.
        let norm = |i: usize, v: f32| (v - self.mean[i % c]) / self.std[i % c];
        if let Some((i, v)) = x.data().chunks_exact(inner).enumerate().find_map(|(i, chunk)| {
            chunk.iter().find(|&&v| v.is_finite() && !norm(i, v).is_finite()).map(|&v| (i % c, v))
        }) {
            return Err(Error::invalid(format!(
                "Normalizer: {v} in channel {i} normalises past f32 (mean {}, std {})",
                self.mean[i], self.std[i]
            )));
        }
        for (i, chunk) in x.data_mut().chunks_exact_mut(inner).enumerate() {
            chunk.iter_mut().for_each(|v| *v = norm(i, *v));
        }
        Ok(())
    }

    /// The normalised value of a raw value `v` in channel `c` (e.g. of the black background).
    pub fn normalized_value(&self, c: usize, v: f32) -> f32 {
        (v - self.mean[c]) / self.std[c]
    }
}

/// Random shifts (and optional horizontal flips) of `[N, C, H, W]` image batches.
///
/// ```
/// use backprop::data::transforms::Augmentation;
/// use backprop::tensor::rng;
/// use backprop::Tensor;
/// let mut x = Tensor::from_fn(&[1, 1, 3, 3], |i| if i[2] == 1 && i[3] == 1 { 1.0 } else { 0.0 });
/// Augmentation::shift(1).apply(&mut x, &mut rng(0));
/// assert_eq!(x.sum(), 1.0); // the centre pixel moved by at most one pixel, nothing fell off
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Augmentation {
    /// Largest shift in pixels, in each direction (0 = no shifting).
    pub max_shift: usize,
    /// Mirror left–right with probability ½.
    pub horizontal_flip: bool,
    /// The value of pixels shifted in from outside the image (the background).
    pub fill: f32,
}

impl Augmentation {
    /// Random shifts of up to `max_shift` pixels, filled with 0, no flipping.
    pub fn shift(max_shift: usize) -> Augmentation {
        Augmentation { max_shift, horizontal_flip: false, fill: 0.0 }
    }

    /// Also mirror left–right with probability ½.
    pub fn with_horizontal_flip(mut self) -> Augmentation {
        self.horizontal_flip = true;
        self
    }

    /// The value shifted in at the borders.
    pub fn with_fill(mut self, fill: f32) -> Augmentation {
        self.fill = fill;
        self
    }

    /// Augments every image of `x` (`[N, C, H, W]`) in place, each with its own random shift
    /// (the same for all its channels).
    ///
    /// # Panics
    /// If `x` is not 4-D.
    pub fn apply(&self, x: &mut Tensor, rng: &mut Rng) {
        assert!(x.ndim() == 4, "Augmentation::apply needs [N, C, H, W], got {:?}", x.shape());
        let (n, c, h, w) = (x.dim(0), x.dim(1), x.dim(2), x.dim(3));
        if x.is_empty() {
            return; // no pixels to move (and no plane buffer to make for them)
        }
        // (A shift past the image moves it out entirely; i64::MAX pixels is as far as any.)
        let k = i64::try_from(self.max_shift).unwrap_or(i64::MAX);
        let mut plane = vec![0.0f32; h * w];
        for i in 0..n {
            let (dy, dx) = if k > 0 {
                (rng.random_range(-k..=k) as isize, rng.random_range(-k..=k) as isize)
            } else {
                (0, 0)
            };
            let flip = self.horizontal_flip && rng.random::<bool>();
            let img = x.outer_mut(i);
            for ch in 0..c {
                let p = &mut img[ch * h * w..][..h * w];
                plane.copy_from_slice(p);
                for y in 0..h {
                    for xx in 0..w {
                        // out[y, x] = in[y − dy, x' − dx], x' = x (or mirrored)
                        let sy = (y as isize).saturating_sub(dy);
                        let sx = (if flip { (w - 1 - xx) as isize } else { xx as isize }).saturating_sub(dx);
                        p[y * w + xx] = if sy >= 0 && sx >= 0 && (sy as usize) < h && (sx as usize) < w {
                            plane[sy as usize * w + sx as usize]
                        } else {
                            self.fill
                        };
                    }
                }
            }
        }
    }
}
