//! The inventory of the hostile-input suite: every public function of the crate that returns a
//! `Result` must be listed here with the test file that attacks it (`tests/fuzz.rs` or a
//! `tests/hostile_*.rs` file, or a test of its own errors) — and that file must name it. A new
//! `Result` API without an entry fails this test, so no new surface arrives unfuzzed; an entry
//! whose function is gone fails it too, so the list stays true. "Names it" means calls it: the
//! whole name followed by `(`, or for names that many types share (`new`, `check`) the qualified
//! call in [`QUALIFIED`] — a bare substring had let `Dataset::new` pass on other types' `new`.

use std::collections::BTreeSet;
use std::path::Path;

/// `(source file under src/, function, test file that exercises it with hostile input)`.
const INVENTORY: &[(&str, &str, &str)] = &[
    ("data/idx.rs", "find_mnist_files", "hostile_values.rs"),
    ("data/idx.rs", "find_mnist_files_matching", "idx.rs"),
    ("data/idx.rs", "load_mnist_folder", "idx.rs"),
    ("data/idx.rs", "load_mnist_folder_matching", "idx.rs"),
    ("data/idx.rs", "parse_idx", "idx.rs"),
    ("data/idx.rs", "read_idx", "fuzz.rs"),
    ("data/idx.rs", "read_image_label_pair", "idx.rs"),
    ("data/idx.rs", "read_images", "fuzz.rs"),
    ("data/idx.rs", "read_labels", "fuzz.rs"),
    ("data/idx.rs", "write_idx", "fuzz.rs"),
    ("data/image_folder.rs", "load_image", "fuzz.rs"),
    ("data/image_folder.rs", "load_image_folder", "image_folder.rs"),
    ("data/image_folder.rs", "image_folder_samples", "image_folder.rs"),
    ("data/image_folder.rs", "tensor_to_image", "image_folder.rs"),
    ("data/inputs.rs", "check", "fuzz.rs"),
    ("data/inputs.rs", "first", "hostile_values.rs"),
    ("data/inputs.rs", "get", "models.rs"),
    ("data/inputs.rs", "get_mut", "hostile_values.rs"),
    ("data/inputs.rs", "input", "hostile_values.rs"),
    ("data/inputs.rs", "pass", "model.rs"),
    ("data/knowledge.rs", "check", "fuzz.rs"),
    ("data/knowledge.rs", "read", "fuzz.rs"),
    ("data/knowledge.rs", "read_concepts", "fuzz.rs"),
    ("data/knowledge.rs", "read_csv", "fuzz.rs"),
    ("data/knowledge.rs", "read_three_line", "fuzz.rs"),
    ("data/knowledge.rs", "simulate", "fuzz.rs"),
    ("data/knowledge.rs", "sniff", "fuzz.rs"),
    ("data/knowledge.rs", "split", "hostile_edges.rs"),
    ("data/knowledge.rs", "windows", "fuzz.rs"),
    ("data/mod.rs", "check_lengths", "hostile_values.rs"),
    ("data/mod.rs", "classification", "fuzz.rs"),
    ("data/mod.rs", "from_inputs", "fuzz.rs"),
    ("data/mod.rs", "k_fold_indices", "splits.rs"),
    ("data/mod.rs", "new", "bad_input.rs"),
    ("data/mod.rs", "regression", "fuzz.rs"),
    ("data/mod.rs", "split_stratified", "splits.rs"),
    ("data/mod.rs", "with_lengths", "fuzz.rs"),
    ("data/transforms.rs", "apply", "hostile_values.rs"),
    ("data/transforms.rs", "fit", "hostile_values.rs"),
    ("gradcheck.rs", "check", "hostile_values.rs"),
    ("gradcheck.rs", "check_loss", "losses.rs"),
    ("gradcheck.rs", "check_model", "models.rs"),
    ("io.rs", "load", "fuzz.rs"),
    ("io.rs", "load_safetensors", "fuzz.rs"),
    ("io.rs", "load_safetensors_with", "hostile_values.rs"),
    ("io.rs", "load_tensors", "io.rs"),
    ("io.rs", "load_with", "hostile_values.rs"),
    ("io.rs", "read_metadata", "hostile_values.rs"),
    ("io.rs", "save", "hostile_saves.rs"),
    ("io.rs", "to_safetensors", "models.rs"),
    ("layers/attention.rs", "causal_from_torch", "fuzz.rs"),
    ("layers/attention.rs", "forward_cross", "fuzz.rs"),
    ("layers/attention.rs", "key_padding_from_torch", "fuzz.rs"),
    ("layers/attention.rs", "scaled_dot_product_attention", "fuzz.rs"),
    ("layers/attention.rs", "scaled_dot_product_attention_backward", "fuzz.rs"),
    ("layers/embedding.rs", "check_ids", "hostile_values.rs"),
    ("layers/layernorm.rs", "with_affine", "fuzz.rs"),
    ("layers/mod.rs", "check_training_shape", "hostile_values.rs"),
    ("layers/mod.rs", "check_values", "hostile_values.rs"),
    ("layers/mod.rs", "output_shape", "hostile_shapes.rs"),
    ("layers/pool/mod.rs", "geometry", "hostile_values.rs"),
    ("layers/pool/mod.rs", "output_shape", "hostile_shapes.rs"),
    ("layers/recurrent/mod.rs", "check_pass", "hostile_values.rs"),
    ("layers/recurrent/mod.rs", "forward_embedded", "fuzz.rs"),
    ("layers/recurrent/mod.rs", "forward_with_state", "fuzz.rs"),
    ("layers/sequential/mod.rs", "build", "fuzz.rs"),
    ("layers/sequential/mod.rs", "check_input", "hostile_values.rs"),
    ("layers/sequential/mod.rs", "replace", "hostile_values.rs"),
    ("loss.rs", "check_target", "hostile_values.rs"),
    ("metrics.rs", "binary_accuracy", "hostile_edges.rs"),
    ("metrics.rs", "log_loss", "hostile_edges.rs"),
    ("metrics.rs", "roc_auc", "hostile_edges.rs"),
    ("loss.rs", "loss", "losses.rs"),
    ("loss.rs", "loss_and_grad", "hostile_values.rs"),
    ("loss.rs", "mask_padding", "fuzz.rs"),
    ("model/mod.rs", "backward_batch", "hostile_values.rs"),
    ("model/mod.rs", "check_inputs", "hostile_values.rs"),
    ("model/mod.rs", "check_training_shapes", "hostile_values.rs"),
    ("model/mod.rs", "forward_batch", "hostile_values.rs"),
    ("model/mod.rs", "get", "models.rs"),
    ("model/mod.rs", "output_shapes", "hostile_values.rs"),
    ("onnx/layers.rs", "recurrent", "onnx.rs"),
    ("onnx/mod.rs", "export", "onnx.rs"),
    ("onnx/mod.rs", "export_model", "onnx.rs"),
    ("onnx/mod.rs", "input", "onnx.rs"),
    ("onnx/mod.rs", "layer", "onnx.rs"),
    ("onnx/mod.rs", "model_to_bytes", "onnx.rs"),
    ("onnx/mod.rs", "save", "onnx.rs"),
    ("onnx/mod.rs", "save_model", "onnx_export.rs"),
    ("onnx/mod.rs", "to_bytes", "fuzz.rs"),
    ("onnx/proto.rs", "decode", "onnx.rs"),
    ("optim/mod.rs", "check", "hostile_values.rs"),
    ("optim/mod.rs", "load_state", "hostile_values.rs"),
    ("optim/schedule.rs", "cosine", "fuzz.rs"),
    ("optim/schedule.rs", "exponential", "fuzz.rs"),
    ("optim/schedule.rs", "step", "fuzz.rs"),
    ("optim/schedule.rs", "with_warmup", "fuzz.rs"),
    ("privacy/accountant.rs", "noise_multiplier_for", "fuzz.rs"),
    ("privacy/dp_sgd.rs", "fit_private", "fuzz.rs"),
    ("privacy/dp_sgd.rs", "new", "dp_sgd.rs"),
    ("tensor/im2col.rs", "new", "hostile_shapes.rs"),
    ("tensor/mod.rs", "from_vec", "fuzz.rs"),
    ("tensor/mod.rs", "try_reshape", "fuzz.rs"),
    ("tensor/ndarray_interop.rs", "into_array", "tensor.rs"),
    ("train/checkpoint.rs", "from_bytes", "fuzz.rs"),
    ("train/checkpoint.rs", "load", "resume.rs"),
    ("train/checkpoint.rs", "load_model", "resume.rs"),
    ("train/checkpoint.rs", "save", "resume.rs"),
    ("train/keras.rs", "evaluate", "hostile_values.rs"),
    ("train/keras.rs", "fit", "fuzz.rs"),
    ("train/keras.rs", "input_gradient", "hostile_values.rs"),
    ("train/keras.rs", "load", "fuzz.rs"),
    ("train/keras.rs", "load_safetensors", "fuzz.rs"),
    ("train/keras.rs", "load_tensors", "io.rs"),
    ("train/keras.rs", "load_with", "hostile_values.rs"),
    ("train/keras.rs", "loss_and_backward", "dp_sgd.rs"),
    ("train/keras.rs", "predict", "fuzz.rs"),
    ("train/keras.rs", "predict_classes", "hostile_values.rs"),
    ("train/keras.rs", "predict_proba", "hostile_values.rs"),
    ("train/keras.rs", "predict_with_lengths", "fuzz.rs"),
    ("train/keras.rs", "save", "hostile_saves.rs"),
    ("train/keras.rs", "save_with_metadata", "fuzz.rs"),
    ("train/keras.rs", "to_safetensors", "io.rs"),
    ("train/keras.rs", "train_step", "hostile_values.rs"),
    ("train/mod.rs", "fit", "fuzz.rs"),
    ("train/predict.rs", "evaluate", "fuzz.rs"),
    ("train/predict.rs", "input_gradient", "hostile_values.rs"),
    ("train/predict.rs", "loss_and_backward", "dp_sgd.rs"),
    ("train/predict.rs", "predict", "fuzz.rs"),
    ("train/predict.rs", "predict_classes", "hostile_values.rs"),
    ("train/predict.rs", "predict_inputs", "fuzz.rs"),
    ("train/predict.rs", "predict_proba", "hostile_values.rs"),
    ("train/predict.rs", "predict_with_lengths", "fuzz.rs"),
    ("train/predict.rs", "train_step", "hostile_values.rs"),
    ("train/step.rs", "check", "hostile_values.rs"),
    ("train/step.rs", "gradient", "hostile_values.rs"),
    ("train/step.rs", "load_state", "resume.rs"),
];

/// Entries whose name alone says too little (`new`, `check`, `get`…: many types have one): the
/// call that the test file must hold instead, `(source file, function, call)`.
const QUALIFIED: &[(&str, &str, &str)] = &[
    ("data/knowledge.rs", "split", "h.split(bad, 0)"),
    ("data/mod.rs", "new", "Dataset::new("),
    ("io.rs", "load", "backprop::io::load(&mut m, &path)"),
    ("gradcheck.rs", "check", "bad_options.check()"),
    // (reached through a recurrent layer's export: a stateful one is refused there)
    ("onnx/layers.rs", "recurrent", "Rnn::new(2, 2).stateful()"),
    ("optim/mod.rs", "check", "nesterov().check()"),
    ("privacy/dp_sgd.rs", "new", "DpSgd::new("),
    // (reached through a convolution's shape inference)
    ("tensor/im2col.rs", "new", "Conv2d::new(1, 2, 3).padding(1 << 62)"),
    ("train/step.rs", "check", "dp.check("),
    ("train/keras.rs", "load", "m.load(&path)"),
];

/// Every `pub fn` under `src/` whose return type is a `Result` (or `Option<Result…>`), as
/// `(file, name)`.
fn result_apis() -> BTreeSet<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = BTreeSet::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let text: String = std::fs::read_to_string(&path)
                .unwrap()
                .lines()
                .map(|l| l.split("//").next().unwrap_or(""))
                .collect::<Vec<_>>()
                .join("\n");
            let rel = path.strip_prefix(&root).unwrap().to_string_lossy().replace('\\', "/");
            // Free functions and inherent methods (`pub fn`), and the methods of public traits
            // (`fn` inside a `pub trait … { … }` block: public too, and implemented by users).
            let mut starts: Vec<usize> = text.match_indices("pub fn ").map(|(i, _)| i + 7).collect();
            for (at, _) in text.match_indices("pub trait ") {
                let open = at + text[at..].find('{').unwrap();
                let (mut depth, mut close) = (0usize, text.len());
                for (i, c) in text[open..].char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                close = open + i;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                let body = &text[open..close];
                starts.extend(
                    body.match_indices("fn ")
                        .filter(|(i, _)| *i == 0 || !body.as_bytes()[i - 1].is_ascii_alphanumeric())
                        .map(|(i, _)| open + i + 3),
                );
            }
            for start in starts {
                let rest = &text[start..];
                let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                let end = rest.find(['{', ';']).unwrap_or(rest.len());
                let signature = &rest[..end];
                let returns =
                    signature.rsplit("->").next().filter(|_| signature.contains("->")).unwrap_or("");
                let returns = returns.trim();
                if returns.starts_with("Result")
                    || returns.contains("::Result")
                    || returns.starts_with("Option<Result")
                {
                    out.insert((rel.clone(), name));
                }
            }
        }
    }
    out
}

#[test]
fn every_result_api_has_a_hostile_input_entry() {
    let found = result_apis();
    let listed: BTreeSet<(String, String)> =
        INVENTORY.iter().map(|(f, n, _)| (f.to_string(), n.to_string())).collect();
    let missing: Vec<_> = found.difference(&listed).collect();
    assert!(
        missing.is_empty(),
        "public Result APIs without a hostile-input entry in tests/fuzz_inventory.rs: {missing:?}"
    );
    let stale: Vec<_> = listed.difference(&found).collect();
    assert!(stale.is_empty(), "entries whose function is gone: {stale:?}");
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let mut uncalled = Vec::new();
    for (file, name, test) in INVENTORY {
        let path = if *test == "onnx_export.rs" {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(test)
        } else {
            tests.join(test)
        };
        assert!(*test != "fuzz_inventory.rs", "{file}::{name}: the inventory cannot be its own test");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let call = QUALIFIED.iter().find(|(f, n, _)| f == file && n == name).map(|(_, _, c)| *c);
        let calls = match call {
            Some(call) => text.contains(call),
            None => calls_by_name(&text, name),
        };
        if !calls {
            uncalled.push(format!(
                "{file}::{name}: {test} does not call it (as {})",
                call.unwrap_or(&format!("{name}("))
            ));
        }
    }
    assert!(uncalled.is_empty(), "{uncalled:#?}");
}

/// `text` calls `name`: the whole identifier followed by `(` (or a turbofish), not a longer name
/// that contains it (`check` in `check_lengths`), nor a mention in a comment only.
fn calls_by_name(text: &str, name: &str) -> bool {
    let code: String =
        text.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n");
    code.match_indices(name).any(|(at, _)| {
        let before = code[..at].chars().next_back();
        let after = &code[at + name.len()..];
        !before.is_some_and(|c| c.is_alphanumeric() || c == '_')
            && (after.starts_with('(') || after.starts_with("::<"))
    })
}
