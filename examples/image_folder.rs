//! Train on your own pictures: a folder with one sub-folder per class.
//!
//! ```text
//! cargo run --release --example image_folder                   # a folder made from the bundled digits
//! cargo run --release --example image_folder -- my_pictures/   # my_pictures/<class>/**/*.png|jpg
//! ```
//!
//! Without a folder, the example first writes 600 of the bundled digits as PNG files into a
//! temporary `digits/<0…9>/*.png` tree, so that it runs anywhere. Then it does what a program of
//! yours would: load the folder (resized to 28×28 grey), split it with a stratified split (the
//! loader returns the images class by class, so the first 80 % would hold no 9s), train a small
//! CNN, report the test accuracy per class, and predict one image file. Needs the cargo feature
//! `image` (on in this repository; from crates.io: `--features image`).

use backprop::data::idx::load_mnist_folder;
use backprop::data::image_folder::{
    ColorMode, image_folder_samples, load_image, load_image_folder, tensor_to_image,
};
use backprop::prelude::*;
use std::path::{Path, PathBuf};

/// Writes the first `per_class` test digits of each class as `root/<class>/<n>.png`.
fn write_digit_folder(root: &Path, per_class: usize) -> Result<()> {
    let digits = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/digits");
    let (_, test) = load_mnist_folder(&digits)?;
    let labels = test.labels().expect("digits have labels");
    let mut written = [0usize; 10];
    for (i, &label) in labels.iter().enumerate() {
        if written[label] == per_class {
            continue;
        }
        let dir = root.join(label.to_string());
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let image = test.inputs().select_outer(&[i]).reshape(&[1, 28, 28]);
        let path = dir.join(format!("{:03}.png", written[label]));
        tensor_to_image(&image)?.save(&path).map_err(|e| Error::format(&path, e.to_string()))?;
        written[label] += 1;
    }
    Ok(())
}

fn run() -> Result<()> {
    let temporary = tempfile::tempdir().map_err(|e| Error::io(std::env::temp_dir(), e))?;
    let root: PathBuf = match std::env::args().nth(1) {
        Some(folder) => PathBuf::from(folder),
        None => {
            let root = temporary.path().join("digits");
            write_digit_folder(&root, 60)?;
            println!("wrote 600 bundled digits as PNG files under {}", root.display());
            root
        }
    };

    // 1. Load: (height, width), grey; samples come back class by class.
    let (data, names) = load_image_folder(&root, (28, 28), ColorMode::Gray)?;
    println!("{} images of {} classes: {names:?}", data.len(), names.len());

    // 2. Split: 80 % of every class for training, the rest for testing.
    let (train, test) = data.split_stratified(0.8, 42)?;
    println!("{} training and {} test images", train.len(), test.len());

    // 3. Train a small CNN.
    let classes = names.len();
    let mut model = Sequential::builder(&[1, 28, 28])
        .add(Conv2d::new(1, 8, 3).padding(1))
        .add(Relu::new())
        .add(MaxPool2d::new(2))
        .add(Conv2d::new(8, 16, 3).padding(1))
        .add(Relu::new())
        .add(MaxPool2d::new(2))
        .add(Flatten::new())
        .add(Dense::new(16 * 7 * 7, classes))
        .seed(1)
        .build()?;
    let loss = CrossEntropyLoss::new();
    let options = FitOptions::new().epochs(8).batch_size(32).seed(2).validation(&test).verbose(false);
    let history = model.fit(&train, &loss, &mut Adam::new(0.003), options)?;
    for e in &history.epochs {
        println!(
            "epoch {}: train loss {:.3}, test accuracy {:.1} %",
            e.epoch,
            e.train_loss,
            100.0 * e.val_accuracy.unwrap_or(0.0)
        );
    }

    // 4. Evaluate per class.
    let predicted = model.predict_classes(test.inputs(), 256)?;
    let truth = test.labels().expect("a folder gives labels");
    for (c, name) in names.iter().enumerate() {
        let of_class: Vec<usize> = (0..truth.len()).filter(|&i| truth[i] == c).collect();
        let right = of_class.iter().filter(|&&i| predicted[i] == c).count();
        println!("  class {name:>8}: {right}/{} right", of_class.len());
    }

    // 5. Predict one file, the way an application would: the first file the loader read.
    let (files, _) = image_folder_samples(&root)?;
    let file = &files[0].0;
    let x = load_image(file, (28, 28), ColorMode::Gray)?.reshape(&[1, 1, 28, 28]);
    let probabilities = model.predict_proba(&x, 1)?;
    let best = probabilities.argmax_axis(1)[0];
    println!("{} → {} ({:.1} %)", file.display(), names[best], 100.0 * probabilities.data()[best]);
    Ok(())
}

/// Runs the example; an error is printed as its message (not Rust's debug form) and exits 1.
fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
