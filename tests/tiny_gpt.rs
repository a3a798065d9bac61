//! The tiny GPT's claim, at a size a test can afford: a one-block decoder with a tied head,
//! trained for six epochs on the first 40,000 characters of `docs/*.md`, predicts the held-out
//! characters better than the bigram model fitted to the same training text
//! (`examples/tiny_gpt` runs the full size: 2.07 against 2.81 nats per character).

#[path = "../examples/tiny_gpt/lm.rs"]
mod lm;

use backprop::layers::DecoderOnly;
use backprop::prelude::*;

#[test]
fn beats_the_bigram_model_on_held_out_text() {
    let text: String = lm::corpus().chars().take(40_000).collect();
    let (chars, ids) = lm::encode(&text);
    let split = ids.len() * 9 / 10;
    let (steps, v) = (32, chars.len());
    let train = lm::windows(&ids[..split], steps, steps / 2).unwrap();
    let test = lm::windows(&ids[split..], steps, steps).unwrap();
    let (unigram, bigram) = lm::baselines(&ids[..split], &ids[split..], v);
    assert!(bigram < unigram, "bigram {bigram}, unigram {unigram}");
    let gpt = DecoderOnly::new(v, 48, 4, 1, 192, steps).tied();
    let mut model = Sequential::builder(&[steps]).add(gpt).seed(1).build().unwrap();
    let loss = CrossEntropyLoss::new();
    let opts = FitOptions::new().epochs(6).batch_size(32).seed(2).verbose(false);
    model.fit(&train, &loss, &mut AdamW::new(3e-3).weight_decay(0.01), opts).unwrap();
    let held_out = model.evaluate(&test, &loss, 64).unwrap().loss as f64;
    eprintln!("held-out {held_out:.3}, bigram {bigram:.3}, unigram {unigram:.3} nats per character");
    assert!(held_out < bigram, "held-out {held_out:.3} vs bigram {bigram:.3} (unigram {unigram:.3})");
}

/// Every window whose last step has a next character, and no other: a text of `T + 1`
/// characters is one window (it was none), and the last window ends on the text's last
/// character.
#[test]
fn windows_cover_the_text_to_its_last_character() {
    let ids: Vec<usize> = (0..9).collect();
    assert_eq!(lm::windows(&ids[..4], 4, 1).unwrap().len(), 0);
    let one = lm::windows(&ids[..5], 4, 1).unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one.inputs().data(), &[0.0, 1.0, 2.0, 3.0]);
    let Targets::Values(y) = one.targets() else { panic!("values") };
    assert_eq!(y.data(), &[1.0, 2.0, 3.0, 4.0]);
    let all = lm::windows(&ids, 4, 2).unwrap(); // starts 0, 2, 4
    assert_eq!(all.len(), 3);
    let Targets::Values(y) = all.targets() else { panic!("values") };
    assert_eq!(y.data().last(), Some(&8.0));
}
