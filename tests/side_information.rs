//! Side information travels with the samples: sequence lengths are shuffled, batched and selected
//! with their samples, so a model sees the same per-sample results in any order, and what sits in
//! the padding never matters.

use backprop::layers::{InputGrad, named_params, zero_grad};
use backprop::prelude::*;

/// Embedding → LSTM → Dense, one output per step.
fn model(seed: u64) -> Sequential {
    Sequential::builder(&[6])
        .add(Embedding::new(10, 3))
        .add(Lstm::new(3, 5))
        .add(Dense::new(5, 2))
        .seed(seed)
        .build()
        .unwrap()
}

/// Ids `[N, 6]` whose padding (after each sample's length) is `pad`.
fn ids(lengths: &[usize], pad: f32) -> Tensor {
    Tensor::from_fn(&[lengths.len(), 6], |i| {
        if i[1] < lengths[i[0]] { ((i[0] * 7 + i[1] * 3) % 10) as f32 } else { pad }
    })
}

#[test]
fn a_shuffled_batch_gives_each_sample_its_own_outputs_and_gradients() {
    let lengths = [6, 2, 4, 1, 5];
    let x = ids(&lengths, 9.0);
    let order = [3, 0, 4, 2, 1];
    let x_shuffled = x.select_outer(&order);
    let l_shuffled: Vec<usize> = order.iter().map(|&i| lengths[i]).collect();
    let g = Tensor::randn(&[5, 6, 2], 0.0, 1.0, 1);
    let g_shuffled = g.select_outer(&order);

    let mut m = model(1);
    let y = m.forward(&x, Pass::TRAIN.with_lengths(&lengths));
    zero_grad(&mut m);
    m.backward(&g, InputGrad::NotNeeded);
    let grads: Vec<Tensor> = named_params(&m).into_iter().map(|(_, p)| p.grad.clone()).collect();

    let y2 = m.forward(&x_shuffled, Pass::TRAIN.with_lengths(&l_shuffled));
    zero_grad(&mut m);
    m.backward(&g_shuffled, InputGrad::NotNeeded);
    for (k, &i) in order.iter().enumerate() {
        assert_eq!(y2.outer(k), y.outer(i), "sample {i}: the same outputs in position {k}");
    }
    for ((name, p), g) in named_params(&m).into_iter().zip(&grads) {
        assert!(p.grad.max_abs_diff(g) < 1e-5, "{name}: the same gradient in any order");
    }
    // The lengths really act: without them the padded steps run.
    let y3 = m.forward(&x, Pass::TRAIN);
    assert_ne!(y3.outer(1), y.outer(1));
}

/// A sequence classifier: Embedding → LSTM (last valid step) → Dense. Its output depends on
/// the padding unless each sample's length reaches the LSTM.
fn classifier(seed: u64) -> Sequential {
    classifier_for(6, seed)
}

fn classifier_for(steps: usize, seed: u64) -> Sequential {
    Sequential::builder(&[steps])
        .add(Embedding::new(10, 3))
        .add(Lstm::new(3, 5).last_step_only())
        .add(Dense::new(5, 2))
        .seed(seed)
        .build()
        .unwrap()
}

/// With lengths in the data set, what the padding holds cannot change training (shuffled
/// batches of 2), evaluation or prediction.
#[test]
fn fit_evaluate_and_predict_never_see_the_padding() {
    let lengths = vec![6, 2, 4, 1, 5, 3, 6];
    let labels = vec![0, 1, 1, 0, 1, 0, 0];
    let data = |pad: f32| {
        Dataset::classification(ids(&lengths, pad), labels.clone())
            .unwrap()
            .with_lengths(lengths.clone())
            .unwrap()
    };
    let (clean, noisy) = (data(0.0), data(9.0));
    let loss = CrossEntropyLoss::new();
    let options = || FitOptions::new().epochs(3).batch_size(2).seed(5).verbose(false);
    let (mut a, mut b) = (classifier(2), classifier(2));
    let ha = a.fit(&clean, &loss, &mut Adam::new(0.01), options()).unwrap();
    let hb = b.fit(&noisy, &loss, &mut Adam::new(0.01), options()).unwrap();
    let losses = |h: &backprop::train::History| h.epochs.iter().map(|e| e.train_loss).collect::<Vec<_>>();
    assert_eq!(losses(&ha), losses(&hb));
    assert_eq!(a.state_dict(), b.state_dict(), "the same weights whatever the padding held");
    let (ea, eb) = (a.evaluate(&clean, &loss, 3).unwrap(), b.evaluate(&noisy, &loss, 3).unwrap());
    assert_eq!(ea.loss, eb.loss);
    // Without the lengths the padding counts.
    let unmasked = Dataset::classification(ids(&lengths, 9.0), labels.clone()).unwrap();
    assert_ne!(a.evaluate(&unmasked, &loss, 3).unwrap().loss, ea.loss);
    // Each sample alone and unpadded gives the output it gets in the padded, shuffled batches.
    let padded = a.predict_with_lengths(noisy.inputs(), &lengths, 3).unwrap();
    for (i, &l) in lengths.iter().enumerate() {
        let alone = Tensor::from_fn(&[1, l], |j| noisy.inputs()[&[i, j[1]]]);
        let mut unpadded = classifier_for(l, 0);
        unpadded.load_tensors(&a.state_dict(), &backprop::io::LoadOptions::new()).unwrap();
        let y = unpadded.predict(&alone, 1).unwrap();
        assert!(y.max_abs_diff(&padded.select_outer(&[i])) < 1e-6, "sample {i}");
    }
}

/// Lengths that do not fit the batch are errors naming both counts, never panics.
#[test]
fn lengths_that_do_not_fit_are_errors() {
    let mut m = classifier(1);
    let x = ids(&[6, 2, 4], 0.0);
    let e = m.predict_with_lengths(&x, &[6, 2], 2).unwrap_err().to_string();
    assert!(e.contains("2 lengths for 3 samples"), "{e}");
    let e = m.predict_with_lengths(&x, &[6, 7, 2], 2).unwrap_err().to_string();
    assert!(e.contains("sample 1 has length 7") && e.contains("6 steps"), "{e}");
    let e = m.predict_with_lengths(&x, &[6, 0, 2], 2).unwrap_err().to_string();
    assert!(e.contains("sample 1 has length 0"), "{e}");
    let e = Dataset::classification(x.clone(), vec![0, 1, 0])
        .unwrap()
        .with_lengths(vec![1, 2])
        .unwrap_err()
        .to_string();
    assert!(e.contains("2 lengths for 3 samples"), "{e}");
    let e = Dataset::classification(Tensor::zeros(&[3]), vec![0, 1, 0])
        .unwrap()
        .with_lengths(vec![1, 1, 1])
        .unwrap_err()
        .to_string();
    assert!(e.contains("[N, T, …]"), "{e}");
}

/// Bucketed batches visit every sample once per epoch, group samples of similar length, are
/// shuffled by the seed, and need lengths.
#[test]
fn bucketed_batches_group_similar_lengths() {
    use backprop::train::step::{Bucketed, Step};
    let lengths: Vec<usize> = (0..103).map(|i| 1 + (i * 37) % 20).collect();
    let data = Dataset::regression(Tensor::zeros(&[103, 20, 1]), Tensor::zeros(&[103, 1]))
        .unwrap()
        .with_lengths(lengths.clone())
        .unwrap();
    let mut step = Bucketed::by_lengths_of("input");
    let mut model = Sequential::new().add(Lstm::new(1, 2).last_step_only()).add(Dense::new(2, 1));
    let options = FitOptions::new().batch_size(10);
    step.check(&mut model, &data, &options).unwrap();
    let mut r = backprop::tensor::rng(1);
    let batches = step.batches(103, &options, &mut r);
    let mut seen: Vec<usize> = batches.concat();
    seen.sort_unstable();
    assert_eq!(seen, (0..103).collect::<Vec<_>>());
    assert_eq!(batches.len(), 11);
    // Within a batch the lengths differ by at most 2 here (20 lengths over 103 samples).
    for b in &batches {
        let (lo, hi) =
            (b.iter().map(|&i| lengths[i]).min().unwrap(), b.iter().map(|&i| lengths[i]).max().unwrap());
        assert!(hi - lo <= 2, "{b:?}");
    }
    assert_ne!(batches, step.batches(103, &options, &mut r), "another epoch, another order");
    let no_lengths = Dataset::regression(Tensor::zeros(&[4, 2, 1]), Tensor::zeros(&[4, 1])).unwrap();
    let e = step.check(&mut model, &no_lengths, &options).unwrap_err().to_string();
    assert!(e.contains("no sequence lengths"), "{e}");
}

/// With `drop_last`, the samples an epoch leaves out are drawn at random (the last ones in order
/// without shuffling), not the tail of the order by length: that had left the longest sequences
/// out of every epoch, whatever the seed.
#[test]
fn bucketed_batches_drop_other_samples_each_epoch() {
    use backprop::train::step::{Bucketed, Step};
    let lengths = vec![4, 1, 3, 1, 4, 2];
    let data = Dataset::regression(Tensor::zeros(&[6, 4, 1]), Tensor::zeros(&[6, 1]))
        .unwrap()
        .with_lengths(lengths.clone())
        .unwrap();
    let mut step = Bucketed::by_lengths_of("input");
    let mut model = Sequential::new().add(Lstm::new(1, 2).last_step_only()).add(Dense::new(2, 1));
    let options = FitOptions::new().batch_size(4).drop_last(true);
    step.check(&mut model, &data, &options).unwrap();
    let mut r = backprop::tensor::rng(3);
    let mut trained = [0usize; 6];
    for _ in 0..60 {
        let batches = step.batches(6, &options, &mut r);
        assert_eq!(batches.len(), 1);
        let b = &batches[0];
        assert_eq!(b.len(), 4, "full batches only");
        assert!(b.windows(2).all(|w| lengths[w[0]] <= lengths[w[1]]), "sorted by length: {b:?}");
        b.iter().for_each(|&i| trained[i] += 1);
    }
    assert!(trained.iter().all(|&t| t >= 10), "every sample, the longest included, trains: {trained:?}");
    // In order, the last samples are left out, as a plain epoch leaves them.
    let in_order = FitOptions::new().batch_size(4).drop_last(true).shuffle(false);
    let mut kept = step.batches(6, &in_order, &mut r).concat();
    kept.sort_unstable();
    assert_eq!(kept, [0, 1, 2, 3]);
}
