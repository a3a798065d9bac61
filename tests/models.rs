//! Models as structs (`backprop::model`): the encoder–decoder of `examples/seq2seq` and the
//! two-input query/memory model of `examples/query_memory`, each checked as a whole by finite
//! differences (the encoder learns only through the state the decoder hands back; the reader only
//! through dL/dh_n), saved and loaded bit for bit, trained by the same `fit` as a `Sequential`, and
//! refused cleanly when their inputs do not fit.

#[path = "../examples/query_memory/model.rs"]
mod query_memory;
#[path = "../examples/seq2seq/model.rs"]
#[allow(dead_code)]
mod seq2seq;

use backprop::gradcheck::{Options, check_model};
use backprop::layers::{Mode, named_params};
use backprop::model::{Inputs, Model};
use backprop::prelude::*;
use seq2seq::{Reverser, reversal_data};

#[test]
fn the_whole_encoder_decoder_passes_a_gradient_check() {
    let mut net = Reverser::new(3, 4, 1);
    let data = reversal_data(3, 4, 2).unwrap();
    let report = check_model(&mut net, data.named_inputs(), Mode::Train, &Options::default()).unwrap();
    assert!(report.passes(2e-2), "{report}");
    // Every parameter was checked, the encoder's included: they get their gradient only through
    // the decoder's dL/dh₀, dL/dc₀ (its dL/dh_n, dL/dc_n).
    let names: Vec<&str> = report.tensors.iter().map(|t| t.name.as_str()).collect();
    assert!(names.contains(&"encoder.weight_hh_l0") && names.contains(&"source_embed.weight"), "{names:?}");
    let encoder_grad: f32 = named_params(&net)
        .iter()
        .filter(|(n, _)| n.starts_with("encoder."))
        .map(|(_, p)| p.grad.data().iter().map(|g| g.abs()).sum::<f32>())
        .sum();
    assert!(encoder_grad > 0.0, "the encoder is trained through its final state");
}

/// A model that reads token ids is checked with respect to its parameters: its ids have no
/// gradient (nudged off a whole number, the embedding refuses them) and are left out of the
/// report, by `check_model` and by `check_layer` alike, rather than failing the check.
#[test]
fn models_that_read_ids_are_checked_on_their_parameters() {
    let build = || {
        Sequential::builder(&[2])
            .add(Embedding::new(5, 3))
            .add(Flatten::new())
            .add(Dense::new(6, 2))
            .seed(7)
            .build()
            .unwrap()
    };
    let ids = Tensor::from_vec(&[3, 2], vec![0., 4., 2., 2., 1., 3.]).unwrap();
    let mut net = build();
    let report =
        check_model(&mut net, &Inputs::single(ids.clone()), Mode::Train, &Options::default()).unwrap();
    assert!(report.passes(1e-2), "{report}");
    let mut layer = build();
    let by_layer = backprop::gradcheck::check_layer(&mut layer, &ids, Mode::Train, &Options::default());
    assert!(by_layer.passes(1e-2), "{by_layer}");
    for r in [&report, &by_layer] {
        let names: Vec<&str> = r.tensors.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names.len(), 3, "the table, the dense weight and bias, no input: {names:?}");
        assert!(names.iter().all(|n| *n != "input") && r.tensors.iter().all(|t| t.checked > 0), "{names:?}");
    }
}

#[test]
fn state_names_nest_by_field_and_saving_round_trips_bit_for_bit() {
    let net = Reverser::new(3, 4, 1);
    let names: Vec<String> = named_params(&net).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names[0], "source_embed.weight");
    assert_eq!(names[1], "encoder.weight_ih_l0");
    assert_eq!(names.last().unwrap(), "head.bias");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("reverser.safetensors");
    backprop::io::save(&net, &path, &[]).unwrap();
    let mut other = Reverser::new(3, 4, 99);
    assert_ne!(backprop::io::state_dict(&other), backprop::io::state_dict(&net));
    backprop::io::load(&mut other, &path).unwrap();
    assert_eq!(backprop::io::state_dict(&other), backprop::io::state_dict(&net));
    let data = reversal_data(5, 4, 3).unwrap();
    let (mut a, mut b) = (net, other);
    let ya = a.forward_batch(data.named_inputs(), Mode::Eval).unwrap();
    let yb = b.forward_batch(data.named_inputs(), Mode::Eval).unwrap();
    assert_eq!(ya, yb, "the loaded model computes the same bits");
    // A model of another shape is refused, naming a tensor and both shapes, and left unchanged.
    let mut wrong = Reverser::new(3, 5, 1);
    let kept = backprop::io::state_dict(&wrong);
    let e = backprop::io::load(&mut wrong, &path).unwrap_err().to_string();
    assert!(e.contains("coder.") && e.contains("[16]") && e.contains("[20]"), "{e}");
    assert_eq!(backprop::io::state_dict(&wrong), kept);
}

#[test]
fn fit_trains_a_struct_model_and_shuffling_keeps_lengths_with_samples() {
    let train = reversal_data(600, 4, 4).unwrap();
    let test = reversal_data(100, 4, 5).unwrap();
    let mut net = Reverser::new(8, 32, 6);
    let loss = CrossEntropyLoss::new();
    let before = backprop::train::evaluate(&mut net, &test, &loss, 50).unwrap().loss;
    let history = backprop::train::fit(
        &mut net,
        &train,
        &loss,
        &mut Adam::new(0.02),
        FitOptions::new().epochs(8).batch_size(32).seed(7).verbose(false),
    )
    .unwrap();
    let after = backprop::train::evaluate(&mut net, &test, &loss, 50).unwrap().loss;
    assert!(after < 0.5 * before, "test loss {before} → {after} ({history:?})");
    // predict_inputs stacks every output over the batches, like one pass over everything.
    let all = backprop::train::predict_inputs(&mut net, test.named_inputs(), 7).unwrap();
    let one = net.forward_batch(test.named_inputs(), Mode::Eval).unwrap();
    assert!(all.get("digits").unwrap().max_abs_diff(one.get("digits").unwrap()) < 1e-6);
}

#[test]
fn inputs_that_do_not_fit_are_errors_and_leave_the_model_unchanged() {
    let mut net = Reverser::new(3, 4, 1);
    let state = backprop::io::state_dict(&net);
    let loss = CrossEntropyLoss::new();
    let fit = |net: &mut Reverser, data: &Dataset| {
        backprop::train::fit(
            net,
            data,
            &loss,
            &mut Adam::new(0.1),
            FitOptions::new().epochs(1).verbose(false),
        )
        .unwrap_err()
        .to_string()
    };
    // A missing input: the first batch fails, the model is put back.
    let good = reversal_data(4, 3, 1).unwrap();
    let missing = Dataset::from_inputs(
        Inputs::new().with("source", good.named_inputs().get("source").unwrap().clone()),
        good.targets().clone(),
    )
    .unwrap();
    let e = fit(&mut net, &missing);
    assert!(e.contains("no input named \"decoder_in\""), "{e}");
    assert_eq!(backprop::io::state_dict(&net), state);
    // Lengths that do not fit their input, or inputs of different sample counts, are refused
    // before any data set exists.
    let e = Inputs::new()
        .with_lengths("source", Tensor::zeros(&[2, 3]), vec![1, 4])
        .check()
        .unwrap_err()
        .to_string();
    assert!(e.contains("\"source\"") && e.contains("length 4"), "{e}");
    let e = Dataset::from_inputs(
        Inputs::new().with("a", Tensor::zeros(&[2, 3])).with("b", Tensor::zeros(&[3, 3])),
        Targets::Classes(vec![0, 1]),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("\"b\"") && e.contains("2 samples"), "{e}");
}

#[test]
fn the_two_input_model_checks_saves_and_learns() {
    use query_memory::{QueryMemory, lookup_data};
    let mut net = QueryMemory::new(3, 4, 1);
    let small = lookup_data(4, 5, 2).unwrap();
    // The head's ReLU has kinks a central difference of ε = 10⁻² may straddle (it then measures the
    // kink, not the derivative; ReLU is checked on its own elsewhere): for the check of the whole
    // model's wiring — concatenation, split, the state gradient — the head's ReLU becomes a tanh.
    net.head =
        Sequential::new().add(Dense::new(7, 16).seed(8)).add(Tanh::new()).add(Dense::new(16, 2).seed(9));
    let report = check_model(&mut net, small.named_inputs(), Mode::Train, &Options::default()).unwrap();
    assert!(report.passes(2e-2), "{report}");
    let names: Vec<String> = named_params(&net).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names[..2], ["memory_embed.weight", "reader.weight_ih_l0"]);
    assert_eq!(names.last().unwrap(), "head.2.bias", "a nested Sequential's names");
    // Save → load: the same bits out.
    let mut net = QueryMemory::new(3, 4, 1);
    let bytes = backprop::io::to_safetensors(&net, &[]).unwrap();
    let mut other = QueryMemory::new(3, 4, 7);
    backprop::io::load_safetensors(&mut other, &bytes, "memory").unwrap();
    let (a, b) = (
        net.forward_batch(small.named_inputs(), Mode::Eval).unwrap(),
        other.forward_batch(small.named_inputs(), Mode::Eval).unwrap(),
    );
    assert_eq!(a, b);
    // A query wider than one digit is refused by name (it had been read at its first digit).
    let wide = Inputs::new()
        .with_lengths("memory", small.named_inputs().get("memory").unwrap().clone(), vec![5, 5, 5, 5])
        .with("query", Tensor::zeros(&[4, 3]));
    let e = net.forward_batch(&wide, Mode::Eval).unwrap_err().to_string();
    assert!(e.contains("[N, 1]") && e.contains("[4, 3]"), "{e}");
    // fit: well above the 70% of answering from the query alone.
    let (train, test) = (lookup_data(2000, 6, 3).unwrap(), lookup_data(500, 6, 4).unwrap());
    let mut net = QueryMemory::new(8, 32, 5);
    let loss = CrossEntropyLoss::new();
    backprop::train::fit(
        &mut net,
        &train,
        &loss,
        &mut Adam::new(0.01),
        FitOptions::new().epochs(12).seed(6).verbose(false),
    )
    .unwrap();
    let eval = backprop::train::evaluate(&mut net, &test, &loss, 100).unwrap();
    assert!(eval.accuracy.unwrap() > 0.9, "{eval:?}");
    // The labels are checked against the declared output before training.
    let bad =
        Dataset::from_inputs(train.named_inputs().clone(), Targets::Classes(vec![5; train.len()])).unwrap();
    let e =
        backprop::train::fit(&mut net, &bad, &loss, &mut Adam::new(0.01), FitOptions::new().verbose(false))
            .unwrap_err()
            .to_string();
    assert!(e.contains("label 5") && e.contains("2 outputs"), "{e}");
}

/// y = left(a) + right(b), whose backward pass returns dL/da only when `forgets_b` is false.
struct TwoTowers {
    left: Dense,
    right: Dense,
    forgets_b: bool,
}
backprop::visit_fields!(TwoTowers { left, right });

impl Model for TwoTowers {
    fn forward_batch(&mut self, inputs: &Inputs, mode: Mode) -> backprop::Result<backprop::model::Tensors> {
        let a = self.left.forward(inputs.get("a")?, mode.into());
        let b = self.right.forward(inputs.get("b")?, mode.into());
        Ok(backprop::model::Tensors::one("y", &a + &b))
    }

    fn backward_batch(
        &mut self,
        grads: &backprop::model::Tensors,
        _: InputGrad,
    ) -> backprop::Result<backprop::model::Tensors> {
        let g = grads.get("y")?;
        let da = backprop::layers::backward_input(&mut self.left, g);
        let db = backprop::layers::backward_input(&mut self.right, g);
        let out = backprop::model::Tensors::one("a", da);
        Ok(if self.forgets_b { out } else { out.with("b", db) })
    }
}

/// A backward pass that forgets a real-valued input's gradient fails the check with an error
/// naming the input (it had passed, that input left out of the report); with the gradient, both
/// inputs are in the report.
#[test]
fn a_forgotten_input_gradient_is_an_error() {
    let inputs = Inputs::new()
        .with("a", Tensor::randn(&[3, 2], 0.0, 1.0, 1))
        .with("b", Tensor::randn(&[3, 4], 0.0, 1.0, 2));
    let model =
        |forgets_b| TwoTowers { left: Dense::new(2, 2).seed(3), right: Dense::new(4, 2).seed(4), forgets_b };
    let report = check_model(&mut model(false), &inputs, Mode::Train, &Options::default()).unwrap();
    assert!(report.passes(1e-2), "{report}");
    let names: Vec<&str> = report.tensors.iter().map(|t| t.name.as_str()).collect();
    assert!(names.contains(&"a") && names.contains(&"b"), "{names:?}");
    let e = check_model(&mut model(true), &inputs, Mode::Train, &Options::default()).unwrap_err().to_string();
    assert!(e.contains("no gradient for its input \"b\"") && e.contains("[\"a\"]"), "{e}");
}
