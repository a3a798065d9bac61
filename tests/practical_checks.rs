//! The numbers of docs/backprop.md §16 (the practical checks), from `examples/practical_checks.rs`
//! run on the bundled digits: so the chapter cannot drift from what the example prints.

#[allow(dead_code)]
#[path = "../examples/practical_checks.rs"]
mod checks;

#[test]
fn the_four_checks_say_what_the_chapter_says() {
    let (train, test) = checks::digits().unwrap();
    // 1. ln 10 at initialisation with the default scale; far above it with weights × 10.
    let at_init = checks::initial_loss(&mut checks::mlp(1, 1.0), &train);
    assert!((at_init - 10f32.ln()).abs() < 0.15, "{at_init}");
    assert!(checks::initial_loss(&mut checks::mlp(1, 10.0), &train) > 20.0);
    // 2. Twenty images are learned perfectly.
    let (loss, accuracy) = checks::overfit_tiny(&train, 100);
    assert!(loss < 1e-3 && accuracy == 1.0, "{loss} {accuracy}");
    // 3. The gradient agrees with finite differences before and during training (errors of f32
    //    rounding, which grow as ε shrinks; a wrong backward pass gives errors near 1).
    let (before, after) = checks::gradient_check_during_training(&train, 2);
    assert!(before < 0.05 && after < 0.05, "{before} {after}");
    // 4. The training loss rises with the weight decay, back towards ln 10 at λ = 1.
    //    A little (λ = 0.01) costs no test accuracy (within 2 points: 500 test images).
    let sweep = checks::regularisation_sweep(&train, &test, &[0.0, 0.01, 0.1, 1.0]);
    assert!(sweep.windows(2).all(|w| w[0].1 < w[1].1), "{sweep:?}");
    assert!(sweep[3].1 > 1.5 && sweep[0].2 > 0.8 && sweep[3].2 < 0.7, "{sweep:?}");
    assert!(sweep[1].2 >= sweep[0].2 - 0.02, "{sweep:?}");
}
