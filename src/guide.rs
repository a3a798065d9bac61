//! The guides, rendered from the `docs/` folder of the crate (the same text as in the
//! repository; `build.rs` adapts links and pictures for rustdoc).
//!
//! In reading order:
//!
//! - [`backprop`] — how a network learns: backpropagation from first principles, each formula
//!   pointing at the function that implements it, with fully worked numbers;
//!   [`exercises`] for each chapter, with answers the tests check.
//! - [`walkthrough`] — the `image_classify` example, step by step.
//! - [`custom_layer`] — writing a layer of your own, with its gradient check.
//! - [`pytorch`] — moving weights between this crate and PyTorch; [`onnx`] — handing a model to
//!   ONNX Runtime.
//! - [`privacy`] — private training (DP-SGD) and its accountant.
//! - [`knowledge_tracing`] — predicting what a student knows from their answers.
//! - [`reliability`] — what hostile input does, and the suite that shows it.
//! - [`architecture`] — modules, the data flow of a training step, design decisions;
//!   [`benchmarks`] — measured speed, with the command behind each figure.

macro_rules! guide {
    ($name:ident, $file:literal) => {
        #[doc = include_str!(concat!(env!("OUT_DIR"), "/guide/", $file))]
        // Rust fragments with "…" are shown, not compiled; the Markdown is GitHub's (lazy list
        // continuations), written to read well in the repository too.
        #[allow(rustdoc::invalid_rust_codeblocks)]
        #[allow(clippy::doc_lazy_continuation, clippy::doc_overindented_list_items)]
        pub mod $name {}
    };
}

guide!(backprop, "backprop.md");
guide!(exercises, "exercises.md");
guide!(walkthrough, "walkthrough.md");
guide!(custom_layer, "custom_layer.md");
guide!(pytorch, "pytorch.md");
guide!(onnx, "onnx.md");
guide!(privacy, "privacy.md");
guide!(knowledge_tracing, "knowledge_tracing.md");
guide!(reliability, "reliability.md");
guide!(architecture, "architecture.md");
guide!(benchmarks, "benchmarks.md");
