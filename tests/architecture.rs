//! Models that nest: hierarchical names, duplicate names refused, whole-model gradient checks,
//! residual blocks, shape checks after a change, the model-wide seed, and state that survives
//! saving for nested and custom layers.

mod common;

use backprop::gradcheck::{Options, check_layer};
use backprop::layers::{State, StateMut, named_params, num_params};
use backprop::prelude::*;

fn names(model: &dyn Layer) -> Vec<String> {
    let mut out = Vec::new();
    model.visit(&mut |name, _| out.push(name.to_string()));
    out
}

#[test]
fn nested_names_are_pytorchs() {
    let block =
        Sequential::new().add(Conv2d::new(4, 4, 3).padding(1)).add(BatchNorm2d::new(4)).add(Relu::new());
    let model = Sequential::builder(&[1, 6, 6])
        .add(Conv2d::new(1, 4, 3).padding(1))
        .add(Relu::new())
        .add(Residual::new(block))
        .add(Dropout::new(0.1))
        .add(Flatten::new())
        .add(Dense::new(144, 3))
        .build()
        .unwrap();
    assert_eq!(
        names(&model),
        [
            "0.weight",
            "0.bias",
            "2.0.weight",
            "2.0.bias",
            "2.1.weight",
            "2.1.bias",
            "2.1.running_mean",
            "2.1.running_var",
            "2.1.num_batches_tracked",
            "3.rng",
            "5.weight",
            "5.bias"
        ]
    );
    let saved: Vec<String> = model.state_dict().into_iter().map(|(n, _)| n).collect();
    assert!(saved.contains(&"2.1.running_var".to_string()) && !saved.iter().any(|n| n.ends_with("rng")));
    assert_eq!(model.num_params(), num_params(&model));
    let summary = model.summary();
    assert!(
        summary.contains("2: Residual(x + Conv2d(4→4, 3×3, padding 1) → BatchNorm2d(4) → ReLU)"),
        "{summary}"
    );
}

/// A custom layer that wraps a model and has a weight of its own, naming both "weight": the
/// model refuses to be built (saving would keep only one of them).
struct Wrapper {
    inner: Dense,
    scale: Param,
}

impl Layer for Wrapper {
    fn describe(&self) -> String {
        "Wrapper".into()
    }
    fn output_shape(&self, input: &[usize]) -> backprop::Result<Vec<usize>> {
        self.inner.output_shape(input)
    }
    fn forward(&mut self, x: &Tensor, pass: Pass<'_>) -> Tensor {
        self.inner.forward(x, pass)
    }
    fn backward(&mut self, g: &Tensor, input_grad: InputGrad) -> Option<Tensor> {
        self.inner.backward(g, input_grad)
    }
}

impl Visit for Wrapper {
    fn visit<'a>(&'a self, f: &mut dyn FnMut(&str, State<'a>)) {
        self.inner.visit(f); // "weight", "bias" — unprefixed
        f("weight", State::Param(&self.scale)); // a second "weight"
    }

    fn visit_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, StateMut<'a>)) {
        self.inner.visit_mut(f);
        f("weight", StateMut::Param(&mut self.scale));
    }
}

#[test]
fn two_pieces_of_state_with_one_name_are_refused() {
    let wrapper = Wrapper { inner: Dense::new(2, 2), scale: Param::new(Tensor::ones(&[1])) };
    let err = Sequential::builder(&[2]).add(wrapper).build().unwrap_err().to_string();
    assert!(err.contains("\"0.weight\"") && err.contains("two pieces of state"), "{err}");
}

#[test]
fn a_whole_model_passes_a_gradient_check() {
    let block = Sequential::new()
        .add(Conv2d::new(3, 3, 3).padding(1).seed(2))
        .add(Tanh::new())
        .add(Conv2d::new(3, 3, 1).seed(3));
    let mut model = Sequential::builder(&[2, 5, 5])
        .add(Conv2d::new(2, 3, 3).padding(1).seed(1))
        .add(Sigmoid::new())
        .add(Residual::new(block))
        .add(AvgPool2d::new(2))
        .add(Flatten::new())
        .add(Dense::new(12, 4).seed(4))
        .add(LogSoftmax::new())
        .build()
        .unwrap();
    let x = Tensor::randn(&[2, 2, 5, 5], 0.0, 1.0, 5);
    let report = check_layer(&mut model, &x, Mode::Train, &Options::default());
    assert!(report.passes(2e-2), "{report}");
    // The input and all 8 parameters (4 weights, 4 biases) were checked, under their names.
    assert_eq!(report.tensors.len(), 9);
    assert_eq!(report.tensors[3].name, "2.0.weight");
}

#[test]
fn residual_gradient_check_and_shape_errors() {
    let body = Sequential::new().add(Dense::new(4, 4).seed(1)).add(Tanh::new()).add(Dense::new(4, 4).seed(2));
    let mut block = Residual::new(body);
    let x = Tensor::randn(&[3, 4], 0.0, 1.0, 1);
    let report = check_layer(&mut block, &x, Mode::Train, &Options::default());
    assert!(report.passes(2e-2), "{report}");
    // y = x + f(x): with f ≡ 0 (zero weights) the block is the identity, gradients included.
    let zero = |n| Dense::new(n, n).with_weights(Tensor::zeros(&[n, n]), Some(Tensor::zeros(&[n])));
    let mut identity = Residual::new(Sequential::new().add(zero(4)));
    assert_eq!(identity.forward(&x, Pass::EVAL), x);
    assert_eq!(identity.backward(&x, InputGrad::Needed).unwrap(), x);

    let err = Sequential::builder(&[4])
        .add(Residual::new(Sequential::new().add(Dense::new(4, 3))))
        .build()
        .unwrap_err()
        .to_string();
    assert!(err.contains("layer 0 (Residual") && err.contains("[1, 4]") && err.contains("[1, 3]"), "{err}");
    let err = Sequential::builder(&[4])
        .add(Residual::new(Sequential::new().add(Dense::new(5, 5))))
        .build()
        .unwrap_err()
        .to_string();
    assert!(err.contains("in the residual body") && err.contains("Dense(5→5)"), "{err}");
}

#[test]
fn replacing_a_layer_checks_shapes_again() {
    let mut model = Sequential::builder(&[4])
        .add(Dense::new(4, 8))
        .add(Relu::new())
        .add(Dense::new(8, 2))
        .build()
        .unwrap();
    let x = Tensor::randn(&[2, 4], 0.0, 1.0, 1);
    let before = model.predict(&x, 2).unwrap();
    let err = model.replace(0, Dense::new(4, 6)).unwrap_err().to_string();
    assert!(err.contains("layer 2 (Dense(8→2))") && err.contains("[N, 6]"), "{err}");
    assert_eq!(model.predict(&x, 2).unwrap(), before, "a refused replacement changes nothing");
    let old = model.replace(1, Tanh::new()).unwrap();
    assert_eq!(old.describe(), "ReLU");
    assert_eq!(model.layer(1).describe(), "Tanh");
    assert!(model.replace(7, Relu::new()).is_err());
}

#[test]
fn model_wide_seed_gives_layers_their_own_weights() {
    let build = |seed: u64| {
        Sequential::builder(&[4])
            .add(Dense::new(4, 4))
            .add(Dense::new(4, 4))
            .add(Dense::new(4, 4).seed(7))
            .seed(seed)
            .build()
            .unwrap()
    };
    let a = build(0);
    let w = |m: &Sequential, i: usize| m.layer_as::<Dense>(i).unwrap().weight().value.clone();
    assert_ne!(w(&a, 0), w(&a, 1), "two layers of one shape start differently");
    assert_eq!(w(&a, 0), w(&build(0), 0), "same seed, same weights");
    assert_ne!(w(&a, 0), w(&build(1), 0), "another seed, other weights");
    // A layer seeded explicitly keeps its weights whatever the model's seed.
    assert_eq!(w(&a, 2), w(&build(1), 2));
    assert_eq!(w(&a, 2), Dense::new(4, 4).seed(7).weight().value);
}

#[test]
fn nested_and_custom_state_survives_save_and_load() {
    let build = |seed| {
        let block = Sequential::new().add(Dense::new(3, 3)).add(BatchNorm1d::new(3)).add(Relu::new());
        Sequential::builder(&[3]).add(Residual::new(block)).add(Dense::new(3, 2)).seed(seed).build().unwrap()
    };
    let data =
        Dataset::classification(Tensor::randn(&[64, 3], 0.0, 1.0, 1), (0..64).map(|i| i % 2).collect())
            .unwrap();
    let mut a = build(1);
    a.fit(
        &data,
        &CrossEntropyLoss::new(),
        &mut Adam::new(0.01),
        FitOptions::new().epochs(2).batch_size(16).verbose(false),
    )
    .unwrap();
    let mut b = build(2);
    assert_ne!(a.state_dict(), b.state_dict());
    b.load_safetensors(&a.to_safetensors().unwrap(), "memory").unwrap();
    assert_eq!(a.state_dict(), b.state_dict());
    assert_eq!(a.predict(data.inputs(), 64).unwrap(), b.predict(data.inputs(), 64).unwrap());
    let count = |m: &Sequential| {
        let mut n = 0;
        m.visit(&mut |name, s| {
            if let (State::Counter(c), "0.1.num_batches_tracked") = (s, name) {
                n = c;
            }
        });
        n
    };
    assert_eq!(count(&b), 8);
}

#[test]
fn small_things_from_the_issue() {
    // Tensor::default is the empty tensor, consistent with numel.
    let t = Tensor::default();
    assert_eq!((t.shape(), t.len()), (&[0usize][..], backprop::tensor::numel(t.shape())));
    // PyTorch's leaky ReLU slope by default.
    let y = LeakyRelu::default().forward(&Tensor::from_vec(&[1, 1], vec![-2.0]).unwrap(), Pass::EVAL);
    assert_eq!(y.data(), &[-0.02]);
    // LeCun uniform is U(±√(3/fan_in)); PyTorch's default is U(±1/√fan_in).
    use backprop::tensor::init::Init;
    let bound = |init: Init| {
        init.tensor(&[400, 300], &mut backprop::tensor::rng(1))
            .data()
            .iter()
            .fold(0.0f32, |m, v| m.max(v.abs()))
    };
    let (lecun, torch) = (bound(Init::LeCunUniform), bound(Init::TorchDefault));
    assert!(lecun <= 0.1 && lecun > 0.099, "{lecun}"); // √(3/300) = 0.1
    assert!(torch <= 0.05774 && torch > 0.0577, "{torch}"); // 1/√300
    // Losses all have new().
    let _ = (MseLoss::new(), BceWithLogitsLoss::new(), CrossEntropyLoss::new(), NllLoss::new());
}

#[test]
fn log_softmax_and_nll_are_cross_entropy_and_stay_finite() {
    let logits =
        Tensor::from_vec(&[3, 3], vec![1000., -1000., 0., 1., 2., 3., -1000., -1000., 1000.]).unwrap();
    let labels = [1usize, 2, 0];
    let mut ls = LogSoftmax::new();
    let log_p = ls.forward(&logits, Pass::TRAIN);
    assert!(log_p.all_finite(), "{log_p:?}");
    let (nll, g) = NllLoss::new().loss_and_grad(&log_p, (&labels[..]).into()).unwrap();
    let dz = ls.backward(&g, InputGrad::Needed).unwrap();
    let (ce, ce_grad) = CrossEntropyLoss::new().loss_and_grad(&logits, (&labels[..]).into()).unwrap();
    assert!((nll - ce).abs() < 1e-3 * ce.abs(), "{nll} vs {ce}");
    assert!(dz.max_abs_diff(&ce_grad) < 1e-6, "{dz:?} vs {ce_grad:?}");
    let report = check_layer(
        &mut LogSoftmax::new(),
        &Tensor::randn(&[3, 5], 0.0, 2.0, 1),
        Mode::Train,
        &Options::default(),
    );
    assert!(report.passes(2e-2), "{report}");
    let report = backprop::gradcheck::check_loss(
        &NllLoss::new(),
        &Tensor::randn(&[4, 3], 0.0, 1.0, 2),
        (&[0usize, 2, 1, 1][..]).into(),
        &Options::default(),
    )
    .unwrap();
    assert!(report.passes(1e-2), "{report}");
}

/// Training works on any model, not only on a `Sequential`: here through `&mut dyn Model`, and a
/// bare residual block (a layer) trained directly.
#[test]
fn training_functions_take_any_layer() {
    let data = common::blobs(300, 3);
    let body =
        Sequential::new().add(Dense::new(2, 16).seed(1)).add(Tanh::new()).add(Dense::new(16, 2).seed(2));
    let mut model =
        Sequential::builder(&[2]).add(Residual::new(body)).add(Dense::new(2, 3).seed(3)).build().unwrap();
    let loss = CrossEntropyLoss::new();
    let layer: &mut dyn backprop::model::Model = &mut model;
    backprop::train::fit(
        layer,
        &data,
        &loss,
        &mut Adam::new(0.02),
        FitOptions::new().epochs(20).verbose(false),
    )
    .unwrap();
    let eval = backprop::train::evaluate(layer, &data, &loss, 64).unwrap();
    assert!(eval.accuracy.unwrap() > 0.9, "{eval:?}");
    assert_eq!(named_params(layer).len(), 6);
    let body = Sequential::new().add(Dense::new(2, 8).seed(4)).add(Tanh::new()).add(Dense::new(8, 2).seed(5));
    let mut block = Residual::new(body);
    // y = 2x: the block's body must learn f(x) = x.
    let doubled = Dataset::regression(data.inputs().clone(), data.inputs() * 2.0).unwrap();
    let options = FitOptions::new().epochs(30).verbose(false);
    let history =
        backprop::train::fit(&mut block, &doubled, &MseLoss::new(), &mut Adam::new(0.01), options).unwrap();
    let (first, last) = (history.epochs[0].train_loss, history.last().unwrap().train_loss);
    assert!(last < 0.1 * first, "{first} → {last}");
}
