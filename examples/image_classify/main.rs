//! Image classification, end to end: the four steps of a deep-learning project on real
//! handwritten digits bundled with the crate.
//!
//! ```sh
//! cargo run --release --example image_classify                  # train on the bundled digits
//! cargo run --release --example image_classify -- --help        # all options
//! cargo run --release --example image_classify -- --data ~/fashion-mnist --epochs 10
//! cargo run --release --example image_classify -- --predict my_digit.png --model target/image_classify/model.safetensors
//! ```
//!
//! `docs/walkthrough.md` explains every step and links it to the code and to `docs/backprop.md`.

mod pipeline;
mod plots;

use backprop::data::idx::load_mnist_folder_matching;
use backprop::data::transforms::Normalizer;
use backprop::metrics::ConfusionMatrix;
use backprop::prelude::*;
use clap::Parser;
use pipeline::{Prepared, Settings};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Train a convolutional network on MNIST-format images (by default the 8,000 + 2,000 handwritten
/// digits bundled with the crate), report its test accuracy and a confusion matrix, and write the
/// weights, training curves and a gallery of mistakes with saliency maps to an output folder.
#[derive(Parser, Debug)]
#[command(name = "image_classify", version, allow_negative_numbers = true)]
struct Cli {
    /// Folder holding an MNIST-format data set (train-images-idx3-ubyte[.gz],
    /// train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]):
    /// MNIST, Fashion-MNIST, EMNIST, Kuzushiji-MNIST … [default: the bundled digits]
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,

    /// With --data: read only the files whose names contain this (EMNIST's folder holds every
    /// split side by side: `--data-match balanced`).
    #[arg(long, value_name = "PART", requires = "data")]
    data_match: Option<String>,

    /// Passes over the training set.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    epochs: u32,

    /// Images per mini-batch.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    batch_size: u32,

    /// Adam's initial learning rate, in (0, 10] (decayed along a cosine to 5 % of it).
    #[arg(long, default_value_t = 2e-3)]
    lr: f32,

    /// Seed for weights, shuffling, dropout and augmentation: the same seed gives the same run.
    #[arg(long, default_value_t = 1)]
    seed: u64,

    /// Worker threads, 1 to 256 [default: all cores].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=256))]
    threads: Option<u32>,

    /// Where to write model.safetensors, curves.png and mistakes.png.
    #[arg(long, value_name = "DIR", default_value = "target/image_classify")]
    out: PathBuf,

    /// Classify one image file (PNG or JPEG; turned grayscale and resized to the model's input)
    /// with a saved model instead of training. Needs --model.
    #[arg(
        long,
        value_name = "IMAGE",
        requires = "model",
        conflicts_with_all = ["data", "epochs", "batch_size", "lr", "seed", "dp_epsilon"]
    )]
    predict: Option<PathBuf>,

    /// A model.safetensors written by a previous run (used with --predict).
    #[arg(long, value_name = "FILE", requires = "predict")]
    model: Option<PathBuf>,

    /// No progress bar or per-epoch lines.
    #[arg(long)]
    quiet: bool,

    /// Train with differential privacy (DP-SGD) for this ε: the noise is set by the privacy
    /// accountant so that the planned epochs spend at most it.
    #[arg(long, value_name = "EPSILON")]
    dp_epsilon: Option<f64>,

    /// The δ of the private guarantee (with --dp-epsilon).
    #[arg(long, value_name = "DELTA", default_value_t = 1e-5, requires = "dp_epsilon")]
    dp_delta: f64,

    /// The per-example clipping norm C (with --dp-epsilon).
    #[arg(long, value_name = "C", default_value_t = 1.0, requires = "dp_epsilon")]
    dp_clip: f32,
}

fn main() {
    // This program owns its process: let glibc keep freed memory for reuse (a third of a training
    // step otherwise goes to returning buffers to the kernel and faulting them back in).
    backprop::alloc_tuning::tune_allocator();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(), // --help, --version
        Err(e) => {
            // clap's message, up to its usage block, on one line.
            let text = e.to_string();
            let head: Vec<&str> = text.lines().map(str::trim).take_while(|l| !l.is_empty()).collect();
            eprintln!("{} (see --help)", head.join(" "));
            std::process::exit(2);
        }
    };
    if let Err(e) = run(cli) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

/// The output folder made, and shown to take files, before anything is trained: a folder that
/// cannot be written had failed only after training, losing the trained model.
fn prepare_out(out: &std::path::Path) -> Result<()> {
    if out.exists() && !out.is_dir() {
        return Err(Error::invalid(format!("--out must be a folder; {} is a file", out.display())));
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    tempfile::Builder::new().prefix(".probe-").tempfile_in(out).map_err(|e| Error::io(out, e))?;
    // The files written after training: a folder in one's place would fail only then.
    for name in ["model.safetensors", "curves.png", "mistakes.png"] {
        let path = out.join(name);
        if path.exists() && !path.is_file() {
            return Err(Error::invalid(format!(
                "{} is not a file, and the run writes one there: move it, or choose another --out",
                path.display()
            )));
        }
    }
    Ok(())
}

fn run(cli: Cli) -> Result<()> {
    if !(cli.lr > 0.0 && cli.lr <= 10.0) {
        return Err(Error::invalid(format!(
            "--lr must be a number in (0, 10] (Adam's useful rates are around 1e-4 to 1e-2), got {}",
            cli.lr
        )));
    }
    // The privacy options, each with its own message, before any data is read.
    if let Some(e) = cli.dp_epsilon {
        if !(e.is_finite() && e > 0.0) {
            return Err(Error::invalid(format!("--dp-epsilon must be a positive number, got {e}")));
        }
        if !(cli.dp_delta > 0.0 && cli.dp_delta < 1.0) {
            return Err(Error::invalid(format!("--dp-delta must be in (0, 1), got {}", cli.dp_delta)));
        }
        if !(cli.dp_clip.is_finite() && cli.dp_clip > 0.0) {
            return Err(Error::invalid(format!("--dp-clip must be a positive number, got {}", cli.dp_clip)));
        }
    }
    if let Some(n) = cli.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n as usize)
            .build_global()
            .map_err(|e| Error::invalid(format!("--threads {n}: {e}")))?;
    }
    match (&cli.predict, &cli.model) {
        (Some(image), Some(model)) => predict(image, model),
        _ => train_and_report(&cli),
    }
}

/// The most bytes of activations (`Sequential::activation_bytes`) a batch may keep: 4 GiB (the
/// whole step needs two or three times that).
const MAX_ACTIVATION_BYTES: usize = 4 << 30;

/// Refuses, before training, a training batch whose activations would exceed
/// [`MAX_ACTIVATION_BYTES`] (large images had run the machine out of memory midway through the
/// first batch: killed, or worker threads' panics before the error); returns the batch for the
/// evaluations after training: 256 images, or the training batch where 256 would not fit.
fn check_activations(model: &backprop::Sequential, data: &pipeline::Prepared, batch: usize) -> Result<usize> {
    let n = batch.min(data.train.len()).max(1);
    let need = model.activation_bytes(n).unwrap_or(usize::MAX);
    if need > MAX_ACTIVATION_BYTES {
        return Err(Error::invalid(format!(
            "a training batch of {n} images of {:?} would keep about {:.1} GB of activations, more than the \
             example's limit of {:.1} GB: lower --batch-size or resize the images",
            data.train.sample_shape(),
            need as f64 / 1e9,
            MAX_ACTIVATION_BYTES as f64 / 1e9
        )));
    }
    Ok(evaluation_batch(model, n))
}

/// [`EVALUATION_BATCH`] images, or `checked` (a batch already found to fit) where that many would
/// keep more than [`MAX_ACTIVATION_BYTES`].
fn evaluation_batch(model: &backprop::Sequential, checked: usize) -> usize {
    match model.activation_bytes(EVALUATION_BATCH) {
        Some(bytes) if bytes <= MAX_ACTIVATION_BYTES => EVALUATION_BATCH,
        _ => checked,
    }
}

/// Images per batch when evaluating and predicting after training.
const EVALUATION_BATCH: usize = 256;

fn bundled_digits() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/digits")
}

fn train_and_report(cli: &Cli) -> Result<()> {
    let started = Instant::now();

    // Step 1: the data.
    let dir = cli.data.clone().unwrap_or_else(bundled_digits);
    if !dir.exists() {
        return Err(Error::invalid(format!("data folder {} does not exist", dir.display())));
    }
    if !dir.is_dir() {
        return Err(Error::invalid(format!(
            "--data {} is a file, not a folder: give the folder that holds the four MNIST-format files",
            dir.display()
        )));
    }
    if cfg!(debug_assertions) {
        eprintln!(
            "warning: this is a debug build, which trains tens of times slower than an optimised one.\n\
             Run it optimised with: cargo run --release --example image_classify"
        );
    }
    let part = cli.data_match.as_deref().unwrap_or("");
    let (train, test) = load_mnist_folder_matching(&dir, part)?;
    // EMNIST stores every image transposed (its files keep NIST's column order); the model learns
    // them so, and `--predict` must turn a picture the same way: the weights file says so.
    let files = backprop::data::idx::find_mnist_files_matching(&dir, part)?;
    let transposed =
        files.train_images.file_name().is_some_and(|n| n.to_string_lossy().to_lowercase().contains("emnist"));
    if transposed {
        println!("EMNIST: its images are stored transposed; --predict will transpose a picture to match");
    }
    let classes = train.num_classes().unwrap_or(0).max(test.num_classes().unwrap_or(0));
    println!(
        "data: {} training and {} test images of {:?} from {}, {classes} classes",
        train.len(),
        test.len(),
        train.sample_shape(),
        dir.display()
    );
    let data = if cli.dp_epsilon.is_some() {
        // Statistics of the private training set would be released without noise (printed, and
        // kept in the weights file): fixed public ones instead.
        let (mean, std) = pipeline::MNIST_MEAN_STD;
        let data =
            pipeline::prepare_with(train, test, transposed, Normalizer { mean: vec![mean], std: vec![std] })?;
        println!(
            "preprocessing: pixels scaled to [0, 1], then normalised with MNIST's published mean {mean} and std {std} \
             (not the private training set's own)"
        );
        data
    } else {
        let data = pipeline::prepare(train, test, transposed)?;
        println!(
            "preprocessing: pixels scaled to [0, 1], then normalised with the training set's mean {:.4} and std \
             {:.4}; training images randomly shifted by up to 2 pixels",
            data.normalizer.mean[0], data.normalizer.std[0]
        );
        data
    };

    // Step 2: the model.
    let mut model = pipeline::reference_cnn(data.train.sample_shape(), classes, cli.seed)?;
    println!("\n{model}\n");
    let evaluation_batch = check_activations(&model, &data, cli.batch_size as usize)?;

    // Step 3: training.
    let settings = Settings {
        epochs: cli.epochs as usize,
        batch_size: cli.batch_size as usize,
        evaluation_batch,
        lr: cli.lr,
        seed: cli.seed,
        verbose: !cli.quiet,
    };
    let schedule = if cli.dp_epsilon.is_some() { "constant, DP-SGD" } else { "with cosine decay" };
    println!(
        "training: {} epochs, batch size {}, Adam (lr {} {schedule}), seed {}, {} threads",
        settings.epochs,
        settings.batch_size,
        settings.lr,
        settings.seed,
        rayon::current_num_threads()
    );
    prepare_out(&cli.out)?;
    let history = match cli.dp_epsilon {
        None => pipeline::train(&mut model, &data, &settings, |_| {})?,
        Some(eps) => train_private(&mut model, &data, &settings, cli, eps)?,
    };

    // Step 4: evaluation.
    // The per-epoch training accuracy is a running average over the epoch's batches, each scored
    // by the weights of that moment with dropout and shifts on; the final weights on the clean
    // training images, in eval mode, are the comparable figure.
    if cli.dp_epsilon.is_none() {
        // (Not after private training: figures of the training set itself, unnoised, are not
        // covered by ε.)
        let train_eval = model.evaluate(&data.train, &CrossEntropyLoss::new(), evaluation_batch)?;
        println!(
            "\ntraining set with the final weights (clean images, eval mode): accuracy {:.2}%, loss {:.4}",
            100.0 * train_eval.accuracy.unwrap_or(0.0),
            train_eval.loss
        );
    }
    let predicted = model.predict_classes(data.test.inputs(), evaluation_batch)?;
    let labels = data.test.labels().expect("a classification set");
    let matrix = ConfusionMatrix::new(classes, labels, &predicted);
    println!("\nconfusion matrix on the test set (rows: true class, columns: predicted):\n{matrix}");

    std::fs::create_dir_all(&cli.out).map_err(|e| Error::io(&cli.out, e))?;
    let weights = cli.out.join("model.safetensors");
    model.save_with_metadata(&weights, &metadata(&data, classes))?;
    let curves = cli.out.join("curves.png");
    plots::training_curves(&history, &curves)?;
    let mistakes = cli.out.join("mistakes.png");
    let shown = plots::mistakes_with_saliency(&mut model, &data, &predicted, &mistakes, evaluation_batch)?;
    println!("wrote {} (weights), {} (loss and accuracy per epoch)", weights.display(), curves.display());
    println!(
        "wrote {} ({shown} misclassified test images, each beside its saliency map)",
        mistakes.display()
    );
    println!("total time: {:.1} s", started.elapsed().as_secs_f32());

    let correct = matrix.correct();
    println!(
        "test accuracy: {:.2}% ({correct}/{})",
        100.0 * correct as f64 / labels.len() as f64,
        labels.len()
    );
    Ok(())
}

/// DP-SGD instead of `fit`: batches drawn by Poisson sampling at rate batch size / training set,
/// each image's gradient clipped to `--dp-clip`, Gaussian noise with the σ the accountant finds for
/// `--dp-epsilon` over the planned epochs, Adam at a constant rate. No augmentation: each image is
/// one example of the guarantee.
fn train_private(
    model: &mut backprop::Sequential,
    data: &pipeline::Prepared,
    s: &Settings,
    cli: &Cli,
    target: f64,
) -> Result<History> {
    use backprop::privacy::{DEFAULT_ORDERS, DpOptions, epsilon, fit_private, noise_multiplier_for};
    let q = (s.batch_size as f64 / data.train.len() as f64).min(1.0);
    let steps_per_epoch = (1.0 / q).round().max(1.0) as u64;
    let sigma = noise_multiplier_for(target, q, steps_per_epoch * s.epochs as u64, cli.dp_delta)?;
    println!(
        "differential privacy: (ε = {target}, δ = {}), sampling rate {q:.5}, clipping norm {}, noise multiplier σ = {sigma}",
        cli.dp_delta, cli.dp_clip
    );
    let mut adam = Adam::new(s.lr);
    let mut history = History::default();
    let mut training_seconds = 0.0f64;
    for epoch in 1..=s.epochs {
        let started = Instant::now();
        let o = DpOptions {
            epochs: 1,
            sample_rate: q,
            clip: cli.dp_clip,
            noise_multiplier: sigma,
            delta: cli.dp_delta,
            seed: s.seed.wrapping_add(epoch as u64),
        };
        fit_private(model, &data.train, &CrossEntropyLoss::new(), &mut adam, &o)?;
        training_seconds += started.elapsed().as_secs_f64();
        let test = model.evaluate(&data.test, &CrossEntropyLoss::new(), s.evaluation_batch)?;
        let spent = epsilon(q, sigma, steps_per_epoch * epoch as u64, cli.dp_delta, &DEFAULT_ORDERS).0;
        // (The loss of the sampled training images is not printed or plotted: computed without
        // noise, it would be released outside ε.)
        let stats = backprop::train::EpochStats {
            epoch,
            train_loss: f32::NAN,
            train_accuracy: None,
            val_loss: Some(test.loss),
            val_accuracy: test.accuracy,
            learning_rate: s.lr,
            seconds: started.elapsed().as_secs_f32(),
        };
        if s.verbose {
            println!(
                "epoch {epoch}/{}: test loss {:.4}, test accuracy {:.2}% | ε spent {spent:.3} | {:.1} s",
                s.epochs,
                test.loss,
                100.0 * test.accuracy.unwrap_or(0.0),
                stats.seconds
            );
        }
        history.epochs.push(stats);
    }
    let images = data.train.len() * s.epochs;
    println!(
        "private training: {images} images in {training_seconds:.1} s ({:.0} images/s, evaluation not counted)",
        images as f64 / training_seconds
    );
    println!(
        "privacy spent: ε = {:.3} at δ = {}",
        epsilon(q, sigma, steps_per_epoch * s.epochs as u64, cli.dp_delta, &DEFAULT_ORDERS).0,
        cli.dp_delta
    );
    Ok(history)
}

/// What `--predict` needs to rebuild the model and preprocess an image, saved inside the weights file.
fn metadata(data: &Prepared, classes: usize) -> Vec<(&'static str, String)> {
    let shape = data.train.sample_shape();
    vec![
        ("input_shape", format!("{},{},{}", shape[0], shape[1], shape[2])),
        ("classes", classes.to_string()),
        ("normalize_mean", data.normalizer.mean[0].to_string()),
        ("normalize_std", data.normalizer.std[0].to_string()),
        ("pixels_transposed", data.transposed.to_string()),
    ]
}

fn predict(image: &Path, model_path: &Path) -> Result<()> {
    let meta = backprop::io::read_metadata(model_path)?;
    let field = |k: &str| {
        meta.get(k).cloned().ok_or_else(|| {
            Error::format(
                model_path,
                format!("no {k:?} in the file's metadata: was it written by this example?"),
            )
        })
    };
    // Every field is checked before anything is allocated from it: the file may come from anywhere.
    let bad = |k: &str, why: &str| Error::format(model_path, format!("metadata {k:?} {why}"));
    let shape: Vec<usize> = field("input_shape")?
        .split(',')
        .map(|v| v.trim().parse().map_err(|_| bad("input_shape", "is not a list of numbers")))
        .collect::<Result<_>>()?;
    let max = backprop::data::image_folder::MAX_SIZE;
    match shape.as_slice() {
        [1 | 3, h, w] if (1..=max).contains(h) && (1..=max).contains(w) => {}
        _ => {
            return Err(bad(
                "input_shape",
                &format!("must be channels (1 or 3), height, width (each 1 to {max}), got {shape:?}"),
            ));
        }
    }
    let classes: usize = field("classes")?.parse().map_err(|_| bad("classes", "is not a number"))?;
    if !(1..=100_000).contains(&classes) {
        return Err(bad("classes", &format!("must be between 1 and 100000, got {classes}")));
    }
    let number = |k: &str| -> Result<f32> { field(k)?.parse().map_err(|_| bad(k, "is not a number")) };
    let (mean, std) = (number("normalize_mean")?, number("normalize_std")?);
    // Absent from files written before it was recorded: those were trained on upright pictures.
    let transposed = match meta.get("pixels_transposed").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(bad("pixels_transposed", &format!("must be true or false, got {other:?}")));
        }
    };
    // (std in f32's normal range, as `Normalizer` requires: a smaller one is refused here, naming
    // the file, not later by the normaliser without it.)
    if !(mean.is_finite() && std.is_finite() && std >= f32::MIN_POSITIVE) {
        return Err(bad(
            "normalize_std",
            &format!("and \"normalize_mean\" must be finite with std ≥ 1.2e-38, got {mean} and {std}"),
        ));
    }
    // The file must hold the classifier's weights (4 bytes each): a model is built for the
    // metadata's shape only when the file is large enough to be that model.
    let weights = pipeline::classifier_weights(&shape, classes);
    let bytes = std::fs::metadata(model_path).map_err(|e| Error::io(model_path, e))?.len();
    if (bytes / 4) < weights as u64 {
        return Err(bad(
            "input_shape",
            &format!(
                "and \"classes\" ({shape:?}, {classes}) describe a classifier of {weights} weights, more than the \
                 file's {bytes} bytes hold"
            ),
        ));
    }
    let mut model = pipeline::reference_cnn(&shape, classes, 0)?;
    model.load(model_path)?;

    let (h, w) = (shape[1], shape[2]);
    let gray = backprop::data::image_folder::ColorMode::Gray;
    let mut x = if transposed {
        // Read upright at w × h, then transposed to the h × w the model learnt from (EMNIST).
        let upright = backprop::data::image_folder::load_image(image, (w, h), gray)?;
        let mut t = backprop::Tensor::zeros(&[1, h, w]);
        for i in 0..h {
            for j in 0..w {
                t.data_mut()[i * w + j] = upright.data()[j * h + i];
            }
        }
        t
    } else {
        backprop::data::image_folder::load_image(image, (h, w), gray)?
    };
    // MNIST digits are light on dark; a dark digit on a light page is inverted to match.
    let inverted = x.mean() > 0.5;
    if inverted {
        x.map_inplace(|v| 1.0 - v);
    }
    let mut x = x.reshape(&[1, 1, h, w]);
    Normalizer { mean: vec![mean], std: vec![std] }.apply(&mut x)?;
    let p = model.predict_proba(&x, 1)?;
    let best = p.argmax_axis(1)[0];
    println!(
        "{}: {}{}",
        image.display(),
        if inverted { "(inverted: dark on light)" } else { "" },
        if transposed { " (transposed, as EMNIST stores its images)" } else { "" }
    );
    let mut ranked: Vec<(usize, f32)> = p.data().iter().copied().enumerate().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    for (c, prob) in ranked.iter().take(3) {
        println!("  class {c}: {:.2}%", 100.0 * prob);
    }
    println!("predicted class: {best}");
    Ok(())
}
