//! The RDP accountant against Opacus 1.6.0's (`tests/fixtures/make_opacus_fixture.py` wrote the
//! values): ε for 433 combinations of noise multiplier, sampling rate, steps and δ spanning
//! ε = 0.1 … 50, to a relative 1e-6; and the inverse, the noise multiplier for a target ε.

use backprop::privacy::{DEFAULT_ORDERS, epsilon, noise_multiplier_for, rdp_sampled_gaussian};

const FIXTURE: &str = include_str!("fixtures/opacus_rdp.csv");

#[test]
fn epsilon_matches_opacus() {
    let mut checked = 0;
    let mut worst = 0.0f64;
    for line in FIXTURE.lines().skip(2) {
        let v: Vec<f64> = line.split(',').map(|f| f.parse().unwrap()).collect();
        let (sigma, q, steps, delta, want, want_order) = (v[0], v[1], v[2] as u64, v[3], v[4], v[5]);
        let (eps, order) = epsilon(q, sigma, steps, delta, &DEFAULT_ORDERS);
        let rel = ((eps - want) / want).abs();
        worst = worst.max(rel);
        assert!(
            rel < 1e-6,
            "σ {sigma}, q {q}, {steps} steps, δ {delta}: ε {eps} vs Opacus {want} (rel {rel:e})"
        );
        assert_eq!(order, want_order, "best order for σ {sigma}, q {q}, {steps} steps, δ {delta}");
        checked += 1;
    }
    assert_eq!(checked, 433);
    eprintln!("worst relative difference from Opacus: {worst:e}");
}

#[test]
fn special_cases_and_the_inverse() {
    assert_eq!(rdp_sampled_gaussian(0.0, 1.0, 2.0), 0.0);
    assert_eq!(rdp_sampled_gaussian(0.5, 0.0, 2.0), f64::INFINITY);
    assert_eq!(rdp_sampled_gaussian(1.0, 2.0, 3.0), 3.0 / 8.0); // α / 2σ² without sampling
    // Integer and fractional orders agree where they meet.
    let (a, b) = (rdp_sampled_gaussian(0.01, 1.0, 3.0), rdp_sampled_gaussian(0.01, 1.0, 3.0 + 1e-9));
    assert!((a - b).abs() < 1e-7 * a, "{a} vs {b}");
    // More noise, less ε; the inverse lands on the target from below.
    for target in [0.5, 1.0, 3.0, 8.0] {
        let sigma = noise_multiplier_for(target, 0.01, 5000, 1e-5).unwrap();
        let eps = epsilon(0.01, sigma, 5000, 1e-5, &DEFAULT_ORDERS).0;
        assert!(eps <= target && eps > target * (1.0 - 1e-6), "target {target}: σ {sigma} gives ε {eps}");
        assert!(epsilon(0.01, sigma * 0.999, 5000, 1e-5, &DEFAULT_ORDERS).0 > target);
    }
    assert!(noise_multiplier_for(-1.0, 0.01, 10, 1e-5).is_err());
}

/// No steps spend no privacy: ε = 0, as Opacus's accountant reports before the first step (the
/// conversion of zero RDP had given 0.10 at δ = 10⁻⁵, and a negative ε at δ = ½).
#[test]
fn no_steps_spend_nothing() {
    for delta in [1e-5, 0.5] {
        let (eps, order) = epsilon(0.01, 1.1, 0, delta, &DEFAULT_ORDERS);
        assert_eq!(eps, 0.0);
        assert!(order.is_nan());
    }
    assert!(epsilon(0.01, 1.1, 1, 1e-5, &DEFAULT_ORDERS).0 > 0.0);
}

/// A sampling rate of 0 spends nothing either, an overwhelming noise is reported as 0 rather than
/// a negative ε, and bad arguments are refused whatever the step count.
#[test]
fn nothing_sampled_spends_nothing_and_arguments_are_checked_at_zero_steps() {
    assert_eq!(epsilon(0.0, 1.1, 100, 1e-5, &DEFAULT_ORDERS).0, 0.0);
    assert_eq!(epsilon(0.01, 1e6, 100, 0.5, &DEFAULT_ORDERS).0, 0.0);
    for bad in [(2.0, 1.0, 0.0), (0.5, -1.0, 0.0), (0.5, 1.0, 1.0)] {
        let (q, sigma, order) = bad;
        let orders: Vec<f64> = if order > 0.0 { vec![order] } else { DEFAULT_ORDERS.to_vec() };
        assert!(std::panic::catch_unwind(|| epsilon(q, sigma, 0, 1e-5, &orders)).is_err(), "{bad:?}");
    }
}
