//! Scalar and row-wise functions that several layers and losses share, each written once:
//! the logistic sigmoid, softmax and log-softmax over the feature axis, the error function, and
//! the `(outer, features, inner)` split of a `[N, F, …]` shape.
//!
//! Softmax and log-softmax subtract the row's maximum `m` before exponentiating:
//! `softmax(x)_i = e^(x_i − m) / Σ_j e^(x_j − m)` is the same number mathematically, and every
//! exponent is ≤ 0, so logits of ±1000 give finite results. Log-softmax is computed directly,
//! `x_i − m − log Σ_j e^(x_j − m)`, never as `log(softmax(x))`, whose `log(0)` would be `−∞`.

/// `σ(x) = 1 / (1 + e^(−x))`, written so that neither branch overflows.
///
/// ```
/// use backprop::tensor::math::sigmoid;
/// assert_eq!(sigmoid(0.0), 0.5);
/// assert!(sigmoid(-1000.0) == 0.0 && sigmoid(1000.0) == 1.0);
/// ```
pub fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// The error function, to ~1e-7 absolute accuracy (Abramowitz & Stegun 7.1.26), in `f64`.
pub fn erf(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736 + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let y = 1.0 - poly * (-x * x).exp();
    if x >= 0.0 { y } else { -y }
}

/// `(outer, features, inner)` of a `[N, F, …]` shape: element `[n, f, i]` sits at
/// `(n·F + f)·inner + i`. Softmax works along `F`; batch norm normalises each `F` (channel).
///
/// # Panics
/// If the shape has fewer than two axes.
pub fn feature_split(shape: &[usize]) -> (usize, usize, usize) {
    assert!(shape.len() >= 2, "expected a shape [N, features, …], got {shape:?}");
    (shape[0], shape[1], shape[2..].iter().product())
}

/// Softmax along the feature axis of `x` (shape `[N, F, …]`), written into `y` (same length):
/// `y_i = e^(x_i − m) / Σ_j e^(x_j − m)` for every `(n, …)` position.
pub fn softmax_into(x: &[f32], (outer, f, inner): (usize, usize, usize), y: &mut [f32]) {
    for_each_feature_line(outer, f, inner, |line| {
        let m = line.clone().map(|i| x[i]).fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0f32;
        for i in line.clone() {
            y[i] = (x[i] - m).exp();
            sum += y[i];
        }
        line.for_each(|i| y[i] /= sum); // y = e^(x−m) / Σ e^(x−m)
    });
}

/// Log-softmax along the feature axis, written into `y`: `y_i = x_i − m − log Σ_j e^(x_j − m)`.
/// The sum is accumulated in `f64`.
pub fn log_softmax_into(x: &[f32], (outer, f, inner): (usize, usize, usize), y: &mut [f32]) {
    for_each_feature_line(outer, f, inner, |line| {
        let m = line.clone().map(|i| x[i]).fold(f32::NEG_INFINITY, f32::max) as f64;
        let log_sum = line.clone().map(|i| (x[i] as f64 - m).exp()).sum::<f64>().ln();
        line.for_each(|i| y[i] = (x[i] as f64 - m - log_sum) as f32); // x − m − log Σ e^(x−m)
    });
}

/// Calls `body` once per line along the feature axis, with the flat indices of that line's `f`
/// elements (`[n, 0, i]`, `[n, 1, i]`, …: a step of `inner` apart).
fn for_each_feature_line(
    outer: usize,
    f: usize,
    inner: usize,
    mut body: impl FnMut(std::iter::StepBy<std::ops::Range<usize>>),
) {
    for n in 0..outer {
        for i in 0..inner {
            let first = n * f * inner + i;
            body((first..first + f * inner).step_by(inner.max(1)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_and_log_softmax_agree_and_stay_finite() {
        let x = [1000.0f32, -1000.0, 0.0, 1.0, 2.0, 3.0];
        let (mut p, mut lp) = ([0.0f32; 6], [0.0f32; 6]);
        softmax_into(&x, (2, 3, 1), &mut p);
        log_softmax_into(&x, (2, 3, 1), &mut lp);
        assert!(lp.iter().all(|v| v.is_finite()), "{lp:?}");
        assert_eq!(p[0], 1.0);
        assert_eq!(lp[1], -2000.0);
        for (a, b) in p.iter().zip(&lp) {
            assert!((a - b.exp()).abs() < 1e-6);
        }
        assert!((p[3..].iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }

    #[test]
    fn feature_axis_with_inner_positions() {
        // [1, 2, 2]: softmax over the 2 features at each of the 2 inner positions.
        let x = [0.0f32, 5.0, 0.0, 5.0];
        let mut y = [0.0f32; 4];
        softmax_into(&x, feature_split(&[1, 2, 2]), &mut y);
        assert_eq!(y, [0.5, 0.5, 0.5, 0.5]);
    }
}
