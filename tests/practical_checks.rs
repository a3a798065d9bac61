//! The numbers of docs/backprop.md §16 (the practical checks), from `examples/practical_checks.rs`
//! run on the bundled digits: so the chapter cannot drift from what the example prints.

#[allow(dead_code)]
#[path = "../examples/practical_checks.rs"]
mod checks;

#[test]
fn the_four_checks_say_what_the_chapter_says() {
    let (train, test) = checks::digits().unwrap();
    // 1. ln 10 at initialisation with the default scale; far above it with weights × 10.
    // The chapter's figures (to the digits printed, with room for the CPU's rounding order), and
    // what they show.
    let at_init = checks::initial_loss(&mut checks::mlp(1, 1.0), &train);
    assert!((at_init - 2.3773).abs() < 1e-3, "{at_init}");
    assert!((at_init - 10f32.ln()).abs() < 0.15, "{at_init}");
    let at_ten = checks::initial_loss(&mut checks::mlp(1, 10.0), &train);
    assert!((at_ten - 68.2615).abs() < 0.05, "{at_ten}");
    // 2. Twenty images are learned perfectly (the chapter prints a loss of 0.00001).
    let (loss, accuracy) = checks::overfit_tiny(&train, 100);
    assert!(loss < 5e-5 && accuracy == 1.0, "{loss} {accuracy}");
    // 3. The gradient agrees with finite differences before and during training: errors of f32
    //    rounding (the chapter's 5.8e-3 and 1.6e-2 on a Xeon, 4.5e-3 and 1.9e-2 on an AMD EPYC),
    //    under the check's own bounds (every entry within 2 % and 4 %, each tensor as a whole
    //    within 0.5 % and 1 %: a backward pass a few per cent off everywhere fails the latter);
    //    a wrong backward pass gives errors near 1.
    let (before, after) = checks::gradient_check_during_training(&train, 2);
    assert!(before.passes(2e-2) && after.passes(4e-2), "{before}\n{after}");
    // 4. The training loss rises with the weight decay, back towards ln 10 at λ = 1.
    //    A little (λ = 0.01) costs no test accuracy (within 2 points: 500 test images).
    let sweep = checks::regularisation_sweep(&train, &test, &[0.0, 0.01, 0.1, 1.0]);
    assert!(sweep.windows(2).all(|w| w[0].1 < w[1].1), "{sweep:?}");
    assert!(sweep[3].1 > 1.5 && sweep[0].2 > 0.8 && sweep[3].2 < 0.7, "{sweep:?}");
    assert!(sweep[1].2 >= sweep[0].2 - 0.02, "{sweep:?}");
    // The printed table: training losses within 1 % and accuracies within a point.
    let printed = [(0.1455, 0.874), (0.2275, 0.880), (0.7524, 0.852), (2.1977, 0.430)];
    for ((wd, fit, acc), (want_fit, want_acc)) in sweep.iter().zip(printed) {
        assert!((fit - want_fit).abs() < 0.01 * want_fit, "λ = {wd}: loss {fit} vs the chapter's {want_fit}");
        assert!((acc - want_acc).abs() < 0.01, "λ = {wd}: accuracy {acc} vs the chapter's {want_acc}");
    }
}
