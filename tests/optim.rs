//! Optimizers against updates computed by hand (in f64, from PyTorch's documented update rules)
//! for three steps, schedules at chosen steps, and gradient clipping.
//!
//! Every case starts from θ = [1, −2] and feeds the gradients [0.5, −1], [−0.25, 3], [2, 0.125].

use backprop::Tensor;
use backprop::layers::Param;
use backprop::optim::*;

const GRADS: [[f32; 2]; 3] = [[0.5, -1.0], [-0.25, 3.0], [2.0, 0.125]];

/// A named parameter, as a model's visitor hands it to an optimizer.
fn named<'a>(name: &str, p: &'a mut Param) -> (String, &'a mut Param) {
    (name.to_string(), p)
}

fn run(opt: &mut dyn Optimizer, want: [[f64; 2]; 3], name: &str) {
    let mut p = Param::new(Tensor::from_vec(&[2], vec![1.0, -2.0]).unwrap());
    for (step, (g, w)) in GRADS.iter().zip(want).enumerate() {
        p.grad = Tensor::from_vec(&[2], g.to_vec()).unwrap();
        opt.step_params(&mut [named("w", &mut p)]);
        for (i, (&got, want)) in p.value.data().iter().zip(w).enumerate() {
            assert!(
                (got as f64 - want).abs() < 2e-6,
                "{name}, step {}, θ[{i}]: got {got}, want {want}",
                step + 1
            );
        }
    }
}

#[test]
fn sgd_plain_by_hand() {
    // θ₁ = 1 − 0.1·0.5 = 0.95;  θ₂ = 0.95 + 0.1·0.25 = 0.975;  θ₃ = 0.975 − 0.1·2 = 0.775
    run(&mut Sgd::new(0.1), [[0.95, -1.9], [0.975, -2.2], [0.775, -2.2125]], "sgd");
}

#[test]
fn sgd_momentum() {
    // b₁ = g₁; b₂ = 0.9·b₁ + g₂ = [0.2, 2.1]; θ₂ = 0.95 − 0.1·0.2 = 0.93 …
    run(&mut Sgd::new(0.1).momentum(0.9), [[0.95, -1.9], [0.93, -2.11], [0.712, -2.3115]], "momentum");
}

#[test]
fn sgd_momentum_dampening_weight_decay() {
    let want = [[0.94, -1.88], [0.8938, -1.9126], [0.747751, -1.938627]];
    run(&mut Sgd::new(0.1).momentum(0.9).dampening(0.5).weight_decay(0.1), want, "dampening + wd");
}

#[test]
fn sgd_nesterov_weight_decay() {
    let want = [[0.9541, -1.9082], [0.95942131, -2.14384262], [0.773196519, -2.22244054]];
    run(&mut Sgd::new(0.05).momentum(0.8).nesterov().weight_decay(0.01), want, "nesterov");
}

#[test]
fn adam_bias_corrected() {
    // Step 1: m̂ = g, v̂ = g², so θ moves by exactly lr·sign(g) (up to ε).
    let want = [[0.99, -1.99], [0.98733663, -1.9949419], [0.980630153, -1.99901147]];
    run(&mut Adam::new(0.01), want, "adam");
}

#[test]
fn adam_l2_weight_decay_and_betas() {
    let want = [[0.99, -1.99], [0.985812882, -1.99473849], [0.9781825, -1.99799751]];
    run(&mut Adam::new(0.01).betas(0.8, 0.99).weight_decay(0.1), want, "adam l2");
}

#[test]
fn adam_amsgrad() {
    let want = [[0.900000002, -1.9], [0.873366299, -1.94941898], [0.806301535, -1.99011471]];
    run(&mut Adam::new(0.1).amsgrad(), want, "amsgrad");
}

#[test]
fn adamw_decoupled_decay() {
    // Step 1: θ ← θ·(1 − 0.01·0.5) then the Adam step: 1·0.995 − 0.01 = 0.985.
    let want = [[0.985, -1.98], [0.97741163, -1.9750419], [0.965818095, -1.96923626]];
    run(&mut AdamW::new(0.01).weight_decay(0.5), want, "adamw");
}

/// Adam's update as PyTorch writes it (`denom = √v / √(1 − β₂ᵏ) + ε`, then `θ −= step·m / denom`),
/// in f32, against the crate's one-division form, over 60 steps of a parameter long enough to be
/// cut into parallel chunks and to leave a tail after the last whole vector register.
#[test]
fn adam_stays_within_rounding_of_pytorchs_two_divisions() {
    let n = 20_011;
    let (lr, b1, b2, eps, wd) = (0.01f32, 0.9f32, 0.999f32, 1e-8f32, 0.01f32);
    let grad_at = |k: usize, i: usize| ((i * 7919 + k * 104_729) % 2001) as f32 / 1000.0 - 1.0;
    let mut p =
        Param::new(Tensor::from_vec(&[n], (0..n).map(|i| (i % 97) as f32 / 50.0 - 1.0).collect()).unwrap());
    let (mut theta, mut m, mut v) = (p.value.data().to_vec(), vec![0f32; n], vec![0f32; n]);
    let mut opt = AdamW::new(lr).weight_decay(wd);
    for k in 1..=60 {
        p.grad = Tensor::from_vec(&[n], (0..n).map(|i| grad_at(k, i) * (i % 3) as f32).collect()).unwrap();
        opt.step_params(&mut [named("w", &mut p)]);
        let bias1 = 1.0 - (b1 as f64).powi(k as i32);
        let bias2_sqrt = ((1.0 - (b2 as f64).powi(k as i32)).sqrt()) as f32;
        let step = (lr as f64 / bias1) as f32;
        for i in 0..n {
            let g = p.grad.data()[i];
            theta[i] *= 1.0 - lr * wd;
            m[i] += (1.0 - b1) * (g - m[i]);
            v[i] = b2 * v[i] + (1.0 - b2) * g * g;
            theta[i] -= step * m[i] / (v[i].sqrt() / bias2_sqrt + eps);
        }
    }
    let worst = p.value.data().iter().zip(&theta).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    // 60 steps, each within a few units in the last place of θ (|θ| ≤ 1.6: an ulp is 1.2e-7).
    assert!(worst < 2e-6, "worst difference from PyTorch's order: {worst}");
}

/// The smallest ε there is: `ε·√(1 − β₂ᵏ)` would round to 0 and a coordinate whose gradient has
/// always been 0 would compute 0/0; it must stay where it is instead.
#[test]
fn adam_with_the_smallest_eps_leaves_a_zero_gradient_alone() {
    let mut p = Param::new(Tensor::from_vec(&[2], vec![1.0, -2.0]).unwrap());
    let mut opt = Adam::new(0.1).eps(f32::from_bits(1));
    for _ in 0..3 {
        p.grad = Tensor::from_vec(&[2], vec![0.0, 0.5]).unwrap();
        opt.step_params(&mut [named("w", &mut p)]);
    }
    let got = p.value.data();
    assert_eq!(got[0], 1.0);
    assert!((got[1] - -2.3).abs() < 1e-5, "{}", got[1]);
}

#[test]
fn optimizer_rejects_a_parameter_that_changed_shape() {
    let mut opt = Adam::new(0.1);
    let mut a = Param::new(Tensor::zeros(&[2]));
    opt.step_params(&mut [named("0.weight", &mut a)]);
    let mut b = Param::new(Tensor::zeros(&[3]));
    let err = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        opt.step_params(&mut [named("0.weight", &mut b)])
    }))
    .unwrap_err();
    let msg = err.downcast_ref::<String>().unwrap();
    assert!(
        msg.contains("Adam") && msg.contains("\"0.weight\"") && msg.contains("[3]") && msg.contains("[2]"),
        "{msg}"
    );
}

/// Optimizer state belongs to the parameter's name, not its position: handing the parameters
/// over in another order, or with another one in between, changes nothing.
#[test]
fn optimizer_state_follows_the_parameter_name() {
    let grads = [[0.5f32, -1.0], [-0.25, 3.0], [2.0, 0.125]];
    let run = |order: &[usize], extra: bool| -> Vec<f32> {
        let mut opt = Adam::new(0.01);
        let mut ps =
            [Param::new(Tensor::from_vec(&[2], vec![1.0, -2.0]).unwrap()), Param::new(Tensor::zeros(&[2]))];
        let mut other = Param::new(Tensor::zeros(&[5]));
        for (step, g) in grads.iter().enumerate() {
            ps[0].grad = Tensor::from_vec(&[2], g.to_vec()).unwrap();
            ps[1].grad = Tensor::from_vec(&[2], vec![g[1], g[0]]).unwrap();
            let [a, b] = &mut ps;
            let mut list = vec![named("a", a), named("b", b)];
            if order[step % order.len()] == 1 {
                list.reverse();
            }
            if extra && step == 1 {
                list.insert(1, named("other", &mut other));
            }
            opt.step_params(&mut list);
        }
        ps.iter().flat_map(|p| p.value.data().to_vec()).collect()
    };
    let straight = run(&[0], false);
    assert_eq!(run(&[1, 0, 1], false), straight);
    assert_eq!(run(&[0], true), straight);
}

/// A decay applied per batch for tens of thousands of steps stays on PyTorch's rate (which
/// multiplies Python floats): `γ` held in `f32` had drifted 3.3·10⁻⁴ away by step 19,999. The
/// values from `python3 tests/fixtures/print_reference_values.py` (PyTorch 2.15.0).
#[test]
fn long_decays_follow_pytorchs_double_precision() {
    let exponential = Schedule::exponential(0.9999).unwrap().lr(1.0, 19_999);
    let step = Schedule::step(3, 0.9999).unwrap().lr(1.0, 60_000);
    for (ours, pytorch) in [(exponential, 0.13533528301106_f64), (step, 0.13532174948275888)] {
        assert_eq!(ours, pytorch as f32, "{ours} against PyTorch's {pytorch}");
    }
}

#[test]
fn schedules_at_chosen_steps() {
    let close = |a: f32, b: f32| assert!((a - b).abs() < 1e-6, "{a} vs {b}");
    close(Schedule::constant().lr(0.1, 1000), 0.1);
    let s = Schedule::step(3, 0.1).unwrap();
    close(s.lr(1.0, 0), 1.0);
    close(s.lr(1.0, 2), 1.0);
    close(s.lr(1.0, 3), 0.1);
    close(s.lr(1.0, 7), 0.01);
    let e = Schedule::exponential(0.5).unwrap();
    close(e.lr(0.8, 0), 0.8);
    close(e.lr(0.8, 3), 0.1);
    // Cosine over 4 steps from 1 to 0: (1 + cos(π·t/4))/2 → 1, 0.853553, 0.5, 0.146447, 0; then, as in
    // PyTorch, back up: t = 6 → 0.5, t = 8 → 1, t = 9 → 0.853553.
    let c = Schedule::cosine(4, 0.0).unwrap();
    for (t, want) in [
        (0, 1.0),
        (1, 0.853_553_4),
        (2, 0.5),
        (3, 0.146_446_6),
        (4, 0.0),
        (6, 0.5),
        (8, 1.0),
        (9, 0.853_553_4),
    ] {
        close(c.lr(1.0, t), want);
    }
    close(Schedule::cosine(2, 0.1).unwrap().lr(1.0, 1), 0.55);
    // Linear warm-up over 4 steps from 0.25·η, then step decay.
    let w = Schedule::step(2, 0.5).unwrap().with_warmup(4, 0.25).unwrap();
    for (t, want) in [(0, 0.25), (1, 0.4375), (2, 0.625), (3, 0.8125), (4, 1.0), (5, 1.0), (6, 0.5)] {
        close(w.lr(1.0, t), want);
    }
}

#[test]
fn schedules_cannot_be_built_invalid() {
    for err in [
        Schedule::step(0, 0.5).unwrap_err(),
        Schedule::step(3, 0.0).unwrap_err(),
        Schedule::step(3, f64::NAN).unwrap_err(),
        Schedule::exponential(-1.0).unwrap_err(),
        Schedule::cosine(0, 0.0).unwrap_err(),
        Schedule::cosine(5, -0.1).unwrap_err(),
        Schedule::constant().with_warmup(0, 0.5).unwrap_err(),
        Schedule::constant().with_warmup(3, 0.0).unwrap_err(),
        Schedule::constant().with_warmup(3, 1.5).unwrap_err(),
    ] {
        assert!(matches!(err, backprop::Error::InvalidArgument(_)), "{err}");
        assert!(err.to_string().contains("Schedule::"), "{err}");
    }
}

#[test]
fn gradient_clipping_by_global_norm() {
    let mut a = Param::new(Tensor::zeros(&[2]));
    let mut b = Param::new(Tensor::zeros(&[1]));
    a.grad = Tensor::from_vec(&[2], vec![3.0, 0.0]).unwrap();
    b.grad = Tensor::from_vec(&[1], vec![4.0]).unwrap();
    let norm = clip_grad_norm(&mut [named("a", &mut a), named("b", &mut b)], 2.5);
    assert_eq!(norm, 5.0);
    // Scaled by 2.5/5 = 0.5 (up to PyTorch's 1e-6 in the denominator).
    assert!((a.grad.data()[0] - 1.5).abs() < 1e-5 && (b.grad.data()[0] - 2.0).abs() < 1e-5);
    // Under the limit: unchanged.
    let norm = clip_grad_norm(&mut [named("a", &mut a), named("b", &mut b)], 10.0);
    assert!((norm - 2.5).abs() < 1e-5);
    assert!((a.grad.data()[0] - 1.5).abs() < 1e-5);
    zero_grad(&mut [named("a", &mut a), named("b", &mut b)]);
    assert_eq!(a.grad.sum() + b.grad.sum(), 0.0);
}

#[test]
fn nan_gradients_and_invalid_settings_behave_like_pytorch() {
    // A NaN norm makes every gradient NaN (PyTorch multiplies by the NaN clipping factor).
    let mut a = Param::new(Tensor::zeros(&[2]));
    let mut b = Param::new(Tensor::zeros(&[2]));
    a.grad = Tensor::from_vec(&[2], vec![f32::NAN, 1.0]).unwrap();
    b.grad = Tensor::from_vec(&[2], vec![2.0, 3.0]).unwrap();
    assert!(clip_grad_norm(&mut [named("a", &mut a), named("b", &mut b)], 1.0).is_nan());
    assert!(b.grad.data().iter().all(|g| g.is_nan()));
    // Nesterov with dampening is refused at the first step, whatever the builder order.
    let mut p = Param::new(Tensor::zeros(&[1]));
    let mut bad = Sgd::new(0.1).nesterov().momentum(0.9).dampening(0.5);
    let err =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| bad.step_params(&mut [named("w", &mut p)])))
            .unwrap_err();
    assert!(err.downcast_ref::<String>().unwrap().contains("dampening"));
    let mut ok = Sgd::new(0.1).nesterov().momentum(0.9);
    ok.step_params(&mut [named("w", &mut p)]);
}

/// The optimizer as given, but finding values that are not finite by the trait's default
/// `step_params_checked` (a scan of every value after the step).
struct Scanned(Box<dyn Optimizer>);

impl Optimizer for Scanned {
    fn step_params(&mut self, params: &mut [(String, &mut Param)]) {
        self.0.step_params(params);
    }
    fn learning_rate(&self) -> f32 {
        self.0.learning_rate()
    }
    fn set_learning_rate(&mut self, lr: f32) {
        self.0.set_learning_rate(lr);
    }
    fn describe(&self) -> String {
        self.0.describe()
    }
}

/// The crate's optimizers note a value that is not finite while writing it
/// (`step_params_checked`) and report the same parameter and value as a scan after the step, with
/// the same new values: a parameter of one chunk and one cut into parallel chunks, overflow to
/// ±∞ and NaN (an infinite gradient), in the first, a middle or the last position, on one and two
/// threads; `None` when every value stays finite, and for no parameters at all.
#[test]
fn checked_steps_find_what_a_scan_after_the_step_finds() {
    // (values, grads) of three parameters; `bad` puts a troublesome gradient at (param, index).
    let params = |bad: Option<(usize, usize, f32)>| {
        let lens = [5, 40_000, 7]; // the middle one is cut into chunks of 2¹⁴
        lens.iter()
            .enumerate()
            .map(|(k, &n)| {
                let mut value: Vec<f32> = (0..n).map(|i| (i % 5) as f32 - 2.0).collect();
                let mut grad: Vec<f32> = (0..n).map(|i| ((i * 7 + k) % 11) as f32 * 0.1 - 0.5).collect();
                // Against the gradient, from 3e38: past f32::MAX after a step of 1e38 (Adam's, at
                // a gradient whose square is finite) or of 1e37·1e15 (SGD's); an infinite gradient gives ±∞ or NaN.
                if let Some((_, i, g)) = bad.filter(|b| b.0 == k) {
                    (value[i], grad[i]) = (-3e38 * g.signum(), g);
                }
                let mut p = Param::new(Tensor::from_vec(&[n], value).unwrap());
                p.grad = Tensor::from_vec(&[n], grad).unwrap();
                p
            })
            .collect::<Vec<Param>>()
    };
    type Make = fn() -> Box<dyn Optimizer>;
    let optimizers: Vec<(&str, Make)> = vec![
        ("sgd", || Box::new(Sgd::new(1e37))),
        ("sgd momentum", || Box::new(Sgd::new(1e37).momentum(0.9).weight_decay(0.01))),
        ("sgd nesterov", || Box::new(Sgd::new(1e37).momentum(0.9).nesterov())),
        ("adam", || Box::new(Adam::new(1e38))),
        ("adam amsgrad", || Box::new(Adam::new(1e38).amsgrad())),
        ("adamw", || Box::new(AdamW::new(1e38))),
    ];
    let cases = [
        None,
        Some((0, 4, -1e15)),
        Some((1, 30_001, -1e15)),
        Some((1, 123, f32::INFINITY)),
        Some((2, 2, 1e15)),
        Some((2, 6, f32::NEG_INFINITY)),
    ];
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            for (name, make) in &optimizers {
                for bad in cases {
                    let step = |checked: bool| {
                        let mut ps = params(bad);
                        let mut named_ps: Vec<(String, &mut Param)> =
                            ps.iter_mut().enumerate().map(|(k, p)| (format!("p{k}"), p)).collect();
                        let found = if checked {
                            make().step_params_checked(&mut named_ps)
                        } else {
                            Scanned(make()).step_params_checked(&mut named_ps)
                        };
                        let bits: Vec<Vec<u32>> =
                            ps.iter().map(|p| p.value.data().iter().map(|v| v.to_bits()).collect()).collect();
                        (found.map(|(n, v)| (n, v.to_bits())), bits)
                    };
                    let (fast, scan) = (step(true), step(false));
                    assert_eq!(fast.0, scan.0, "{name}, {bad:?}, {threads} thread(s): what was found");
                    assert!(fast.1 == scan.1, "{name}, {bad:?}, {threads} thread(s): the new values");
                    // With a troublesome gradient something is found; without one, nothing.
                    assert_eq!(fast.0.is_some(), bad.is_some(), "{name}, {bad:?}: {:?}", fast.0);
                }
            }
        });
    }
    for (_, make) in &optimizers {
        assert_eq!(make().step_params_checked(&mut []), None);
    }
}

/// A gradient whose square overflows f32 (past about 6·10²⁰ with β₂ = 0.999) leaves Adam's weight
/// finite — the update is m/√∞ = 0 — but its second moment infinite, which would hold that
/// coordinate still for good: the checked step reports it by the parameter and the moment's name,
/// and `fit` stops there with the model and the optimizer as they were before the step.
#[test]
fn an_overflowed_second_moment_is_reported_not_kept() {
    use backprop::prelude::{Dataset, Dense, FitOptions, MseLoss, Sequential};
    type Make = fn() -> Box<dyn Optimizer>;
    let optimizers: [(&str, Make); 3] = [
        ("Adam", || Box::new(Adam::new(1e-3))),
        ("Adam", || Box::new(Adam::new(1e-3).amsgrad())),
        ("AdamW", || Box::new(AdamW::new(1e-3))),
    ];
    for (name, make) in optimizers {
        let mut p = Param::new(Tensor::from_vec(&[3], vec![1.0, 2.0, 3.0]).unwrap());
        p.grad = Tensor::from_vec(&[3], vec![0.5, 1e21, -0.5]).unwrap();
        let found = make().step_params_checked(&mut [named("w", &mut p)]);
        assert!(p.value.data().iter().all(|v| v.is_finite()), "{name}: the weights stay finite");
        let (what, value) = found.expect("the overflow is reported");
        assert!(what.starts_with("w in ") && what.contains(&format!("{name}'s second moment v")), "{what}");
        assert_eq!(value, f32::INFINITY);
        // Below the overflow, nothing to report.
        p.grad = Tensor::from_vec(&[3], vec![0.5, 1e20, -0.5]).unwrap();
        assert_eq!(make().step_params_checked(&mut [named("w", &mut p)]), None, "{name}");
    }
    // Through fit: y = w·x with x = 1e11 and MSE; dL/dw ≈ 2·w·x² ≈ 1e22, finite, as the loss is.
    let data = Dataset::regression(Tensor::full(&[4, 1], 1e11), Tensor::zeros(&[4, 1])).unwrap();
    let mut model = Sequential::builder(&[1]).add(Dense::new(1, 1).no_bias()).seed(1).build().unwrap();
    let before = model.state_dict();
    let mut adam = Adam::new(1e-3);
    let options = FitOptions::new().epochs(1).batch_size(4).verbose(false);
    let e = model.fit(&data, &MseLoss::new(), &mut adam, options).unwrap_err().to_string();
    assert!(
        e.contains("second moment v") && e.contains("clip the gradients") && e.contains("epoch 1"),
        "{e}"
    );
    assert_eq!(model.state_dict(), before, "the step was undone");
    let mut state = backprop::optim::OptimizerState::default();
    adam.save_state(&mut state);
    assert!(
        state.iter().all(|(_, _, t)| t.data().iter().all(|v| v.is_finite())),
        "no ∞ kept in Adam's state"
    );
}

/// A training step whose update overflows a weight stops with a message naming the parameter,
/// now found while the optimizer writes it (the loss and gradients finite). Adam's step is about
/// its learning rate whatever the gradient's size (the quotient m̂/(√v̂ + ε) is taken before the
/// product, as PyTorch's `addcdiv`: a large m times a huge step size does not overflow first).
#[test]
fn train_step_names_the_weight_an_update_overflowed() {
    use backprop::prelude::*;
    let y = Tensor::zeros(&[1, 1]);
    // y = 1e38·1e-30 + 1e38·2e-30 + 0 = 3e8: the loss 9e16, gradients 6e8·x and 6e8 (the bias).
    let x = Tensor::from_vec(&[1, 2], vec![1e-30, 2e-30]).unwrap();
    let model = || Sequential::new().add(Dense::new(2, 1).with_weights(Tensor::full(&[1, 2], 1e38), None));
    // SGD at 1e37: the bias moves by 6e45, past f32::MAX; the weights by 6e-21·1e37, finite.
    let err =
        model().train_step(&x, (&y).into(), &MseLoss::new(), &mut Sgd::new(1e37)).unwrap_err().to_string();
    assert!(err.contains("the optimizer step made 0.bias hold -inf (the loss was 9e16)"), "{err}");
    // Adam at 3e38: every value moves by about 3e38·m̂/(√v̂ + ε); the weights' ratio is 6e-21/1e-8,
    // the bias's 1: the bias lands on −3e38 (finite), nothing overflows.
    let mut m = model();
    m.train_step(&x, (&y).into(), &MseLoss::new(), &mut Adam::new(3e38)).unwrap();
    let bias = m.params()[1].value.data()[0];
    assert!(bias.is_finite() && (bias / -3e38 - 1.0).abs() < 1e-6, "{bias}");
    // y = −1e38·1e-21 + 1e38·1e-20 = 9e17: w₀'s gradient 1.8e18·1e-21 > 0 with w₀ < 0, so Adam's
    // step of 3e38 takes w₀ from −1e38 past −f32::MAX: found and named.
    let weights = Tensor::from_vec(&[1, 2], vec![-1e38, 1e38]).unwrap();
    let mut m = Sequential::new().add(Dense::new(2, 1).with_weights(weights, None));
    let x = Tensor::from_vec(&[1, 2], vec![1e-21, 1e-20]).unwrap();
    let err = m.train_step(&x, (&y).into(), &MseLoss::new(), &mut Adam::new(3e38)).unwrap_err().to_string();
    assert!(err.contains("the optimizer step made 0.weight hold -inf"), "{err}");
}

/// SGD's update, compiled for the widest vectors and cut into parallel chunks, gives the bits of
/// the formula evaluated one value at a time in f32 (the same operations in the same order), for
/// every combination of momentum, dampening, Nesterov and weight decay, over three steps (the
/// first sets `u ← g`), on a parameter with a tail after the last whole chunk and register.
#[test]
fn sgd_is_its_formula_bit_for_bit() {
    let n = 40_003;
    let settings = [
        (0.0f32, 0.0f32, false, 0.0f32),
        (0.0, 0.0, false, 0.01),
        (0.9, 0.0, false, 0.0),
        (0.9, 0.1, false, 0.01),
        (0.9, 0.0, true, 0.0),
        (0.5, 0.0, true, 0.02),
    ];
    for (rho, tau, nesterov, wd) in settings {
        let lr = 0.05f32;
        let mut opt = Sgd::new(lr).momentum(rho).dampening(tau).weight_decay(wd);
        if nesterov {
            opt = opt.nesterov();
        }
        let mut p = Param::new(
            Tensor::from_vec(&[n], (0..n).map(|i| (i % 101) as f32 / 37.0 - 1.3).collect()).unwrap(),
        );
        let (mut theta, mut u) = (p.value.data().to_vec(), vec![0f32; n]);
        for k in 0..3 {
            let grad: Vec<f32> = (0..n).map(|i| ((i * 31 + k * 17) % 29) as f32 / 13.0 - 1.1).collect();
            p.grad = Tensor::from_vec(&[n], grad.clone()).unwrap();
            opt.step_params(&mut [named("w", &mut p)]);
            for i in 0..n {
                let g = grad[i] + wd * theta[i];
                let step = if rho == 0.0 {
                    g
                } else {
                    u[i] = if k == 0 { g } else { rho * u[i] + (1.0 - tau) * g };
                    if nesterov { g + rho * u[i] } else { u[i] }
                };
                theta[i] -= lr * step;
            }
            let got = p.value.data();
            let first_diff = (0..n).find(|&i| got[i].to_bits() != theta[i].to_bits());
            assert_eq!(first_diff, None, "ρ {rho}, τ {tau}, Nesterov {nesterov}, λ {wd}, step {}", k + 1);
        }
    }
}

/// A parameter that first reaches the optimizer at a later step (a layer added mid-training)
/// starts its own count, as PyTorch keeps a `step` and a momentum buffer per parameter: its bias
/// corrections and SGD's first `u ← g` are its own. The expected values are PyTorch 2.15's
/// (`python3 tests/fixtures/print_reference_values.py`): `a`
/// stepped three times, `b` added by `add_param_group` before the second step (gradients a: 0.5,
/// 0.5, 0.5; b: 1, −2).
#[test]
fn a_parameter_added_later_counts_its_own_steps() {
    let run = |opt: &mut dyn Optimizer| {
        let mut a = Param::new(Tensor::from_vec(&[1], vec![1.0]).unwrap());
        let mut b = Param::new(Tensor::from_vec(&[1], vec![1.0]).unwrap());
        a.grad = Tensor::from_vec(&[1], vec![0.5]).unwrap();
        opt.step_params(&mut [named("a", &mut a)]);
        for gb in [1.0, -2.0] {
            b.grad = Tensor::from_vec(&[1], vec![gb]).unwrap();
            opt.step_params(&mut [named("a", &mut a), named("b", &mut b)]);
        }
        (a.value.data()[0], b.value.data()[0])
    };
    let close = |(a, b): (f32, f32), (ta, tb): (f32, f32)| {
        assert!((a - ta).abs() < 1e-6 && (b - tb).abs() < 1e-6, "({a}, {b}) vs PyTorch's ({ta}, {tb})");
    };
    close(run(&mut Adam::new(0.1)), (0.700_000_05, 0.936_610_4));
    close(run(&mut Sgd::new(1.0).momentum(0.9).dampening(0.5)), (-1.079_999_9, 0.100_000_024));
    // The count travels with the optimizer's state.
    let mut adam = Adam::new(0.1);
    let mut a = Param::new(Tensor::from_vec(&[1], vec![1.0]).unwrap());
    let mut b = Param::new(Tensor::from_vec(&[1], vec![1.0]).unwrap());
    a.grad = Tensor::from_vec(&[1], vec![0.5]).unwrap();
    adam.step_params(&mut [named("a", &mut a)]);
    b.grad = Tensor::from_vec(&[1], vec![1.0]).unwrap();
    adam.step_params(&mut [named("a", &mut a), named("b", &mut b)]);
    let mut state = backprop::optim::OptimizerState::default();
    adam.save_state(&mut state);
    assert_eq!(state.get("step", "b").map(|t| t.data().to_vec()), Some(vec![1.0]));
    assert!(state.get("step", "a").is_none(), "a's count is the optimizer's");
    let mut resumed = Adam::new(0.1);
    resumed.load_state(&state).unwrap();
    let mut again = state.clone();
    again.insert("step", "b", Tensor::from_vec(&[1], vec![5.0]).unwrap()); // more than the 2 taken
    assert!(Adam::new(0.1).load_state(&again).unwrap_err().to_string().contains("\"b\""));
    let (mut a2, mut b2) = (a.clone(), b.clone());
    b.grad = Tensor::from_vec(&[1], vec![-2.0]).unwrap();
    b2.grad = b.grad.clone();
    adam.step_params(&mut [named("a", &mut a), named("b", &mut b)]);
    resumed.step_params(&mut [named("a", &mut a2), named("b", &mut b2)]);
    assert_eq!((a.value.data(), b.value.data()), (a2.value.data(), b2.value.data()));
    close((a.value.data()[0], b.value.data()[0]), (0.700_000_05, 0.936_610_4));
}

/// A saved SGD state counting u64::MAX steps is refused (the next step would overflow its
/// count: a panic under overflow checks, a wrap to 0 without), as Adam refuses counts it cannot hold.
#[test]
fn sgd_refuses_a_step_count_it_cannot_go_past() {
    let mut sgd = Sgd::new(0.1).momentum(0.9);
    let mut state = OptimizerState::default();
    sgd.save_state(&mut state);
    state.set_steps(u64::MAX);
    let e = sgd.load_state(&state).unwrap_err().to_string();
    assert!(e.contains("u64::MAX steps"), "{e}");
}
