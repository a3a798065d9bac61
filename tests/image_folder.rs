//! The image-folder loader (feature `image`, enabled for tests).

use backprop::data::image_folder::{ColorMode, load_image_folder};
use std::path::PathBuf;

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("backprop-imgdir-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn loads_classes_resizes_and_converts() {
    let root = tmp("ok");
    for (class, rgb) in [("cat", [255u8, 0, 0]), ("dog", [0, 0, 255])] {
        std::fs::create_dir_all(root.join(class)).unwrap();
        for i in 0..3 {
            let img = image::RgbImage::from_pixel(8 + i, 6, image::Rgb(rgb));
            img.save(root.join(class).join(format!("{i}.png"))).unwrap();
        }
    }
    std::fs::write(root.join("dog").join("notes.txt"), "ignored").unwrap();
    let (data, classes) = load_image_folder(&root, (4, 5), ColorMode::Rgb).unwrap();
    assert_eq!(classes, vec!["cat", "dog"]);
    assert_eq!(data.inputs().shape(), &[6, 3, 4, 5]);
    assert_eq!(data.labels().unwrap(), &[0, 0, 0, 1, 1, 1]);
    // A red cat: channel 0 is 1, channels 1 and 2 are 0; a blue dog the other way round.
    let cat = data.inputs().outer(0);
    assert!(cat[..20].iter().all(|&v| v == 1.0) && cat[20..].iter().all(|&v| v == 0.0));
    let dog = data.inputs().outer(5);
    assert!(dog[40..].iter().all(|&v| v == 1.0) && dog[..40].iter().all(|&v| v == 0.0));
    let (gray, _) = load_image_folder(&root, (4, 5), ColorMode::Gray).unwrap();
    assert_eq!(gray.inputs().shape(), &[6, 1, 4, 5]);
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn unreadable_images_are_reported_not_skipped() {
    let root = tmp("bad");
    std::fs::create_dir_all(root.join("a")).unwrap();
    image::GrayImage::from_pixel(3, 3, image::Luma([7])).save(root.join("a").join("good.png")).unwrap();
    std::fs::write(root.join("a").join("broken.png"), b"not a png at all").unwrap();
    std::fs::write(root.join("a").join("empty.jpg"), b"").unwrap();
    let msg = load_image_folder(&root, (3, 3), ColorMode::Gray).unwrap_err().to_string();
    assert!(msg.contains("2 unreadable") && msg.contains("broken.png") && msg.contains("empty.jpg"), "{msg}");
    let empty = tmp("empty");
    assert!(
        load_image_folder(&empty, (3, 3), ColorMode::Gray)
            .unwrap_err()
            .to_string()
            .contains("no class sub-folders")
    );
    std::fs::remove_dir_all(&root).unwrap();
    std::fs::remove_dir_all(&empty).unwrap();
}

/// Entries named like images that are not image files, and empty class folders, are errors
/// naming them — never skipped.
#[cfg(unix)]
#[test]
fn nothing_named_like_an_image_is_skipped_silently() {
    let root = tmp("hostile");
    for class in ["a", "b", "c"] {
        std::fs::create_dir_all(root.join(class)).unwrap();
    }
    image::GrayImage::from_pixel(3, 3, image::Luma([7])).save(root.join("a").join("good.png")).unwrap();
    image::GrayImage::from_pixel(3, 3, image::Luma([9])).save(root.join("c").join("good.png")).unwrap();
    std::fs::create_dir_all(root.join("a").join("folder.png")).unwrap();
    std::os::unix::fs::symlink(root.join("nowhere.png"), root.join("a").join("dangling.jpg")).unwrap();
    let fifo = root.join("a").join("pipe.png");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let msg = load_image_folder(&root, (3, 3), ColorMode::Gray).unwrap_err().to_string();
    for name in ["folder.png", "dangling.jpg", "pipe.png"] {
        assert!(msg.contains(name), "{name} not named in: {msg}");
    }
    for name in ["folder.png", "dangling.jpg", "pipe.png"] {
        let p = root.join("a").join(name);
        if p.is_dir() { std::fs::remove_dir(&p).unwrap() } else { std::fs::remove_file(&p).unwrap() }
    }
    // Class "b" has no image: an error naming it (it would shift class "c" to label 1).
    let msg = load_image_folder(&root, (3, 3), ColorMode::Gray).unwrap_err().to_string();
    assert!(msg.contains("without any") && msg.contains("/b"), "{msg}");
    std::fs::remove_dir_all(root.join("b")).unwrap();
    let (data, classes) = load_image_folder(&root, (3, 3), ColorMode::Gray).unwrap();
    assert_eq!((data.len(), classes), (2, vec!["a".to_string(), "c".to_string()]));
    std::fs::remove_dir_all(&root).unwrap();
}

/// Pictures in sub-folders of a class belong to it (as torchvision's `ImageFolder` reads them),
/// JPEG's other extensions are read, and a picture in a format not read here is an error listing
/// it, never a sample quietly left out.
#[test]
fn nested_pictures_count_and_unread_formats_are_named() {
    let root = tmp("nested");
    for dir in ["cat", "dog/more", "dog/more/deeper"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    let gray = |v: u8| image::GrayImage::from_pixel(3, 3, image::Luma([v]));
    gray(10).save(root.join("cat/1.jpg")).unwrap();
    // JPEG files under JPEG's rarer extensions (the format is told from the content).
    std::fs::copy(root.join("cat/1.jpg"), root.join("cat/2.jfif")).unwrap();
    std::fs::copy(root.join("cat/1.jpg"), root.join("cat/3.JPE")).unwrap();
    gray(200).save(root.join("dog/1.png")).unwrap();
    gray(200).save(root.join("dog/more/2.png")).unwrap();
    gray(200).save(root.join("dog/more/deeper/3.png")).unwrap();
    std::fs::write(root.join("dog/more/Thumbs.db"), b"ignored").unwrap();
    let (data, classes) = load_image_folder(&root, (3, 3), ColorMode::Gray).unwrap();
    assert_eq!(classes, vec!["cat", "dog"]);
    assert_eq!(data.labels().unwrap(), &[0, 0, 0, 1, 1, 1], "every picture, nested ones included");
    // A class whose pictures all sit in a sub-folder is not empty.
    std::fs::create_dir_all(root.join("eel/photos")).unwrap();
    gray(90).save(root.join("eel/photos/1.png")).unwrap();
    let (data, _) = load_image_folder(&root, (3, 3), ColorMode::Gray).unwrap();
    assert_eq!(data.labels().unwrap(), &[0, 0, 0, 1, 1, 1, 2]);
    // Pictures in formats the decoders here do not read: every one named.
    std::fs::write(root.join("cat/4.webp"), b"RIFF....WEBP").unwrap();
    std::fs::write(root.join("dog/more/5.BMP"), b"BM").unwrap();
    let msg = load_image_folder(&root, (3, 3), ColorMode::Gray).unwrap_err().to_string();
    assert!(msg.contains("2 picture(s)") && msg.contains("4.webp") && msg.contains("5.BMP"), "{msg}");
    assert!(msg.contains("PNG and JPEG"), "{msg}");
    std::fs::remove_dir_all(&root).unwrap();
}

/// A link that leads back up the tree is refused with a message, not walked for ever.
#[cfg(unix)]
#[test]
fn a_link_loop_below_a_class_is_an_error() {
    let root = tmp("loop");
    std::fs::create_dir_all(root.join("a")).unwrap();
    image::GrayImage::from_pixel(3, 3, image::Luma([7])).save(root.join("a/x.png")).unwrap();
    std::os::unix::fs::symlink(root.join("a"), root.join("a/again")).unwrap();
    let msg = load_image_folder(&root, (3, 3), ColorMode::Gray).unwrap_err().to_string();
    assert!(msg.contains("levels of folders"), "{msg}");
    // The listing alone refuses it the same way; a root without classes and a missing root too.
    use backprop::data::image_folder::image_folder_samples;
    let listed = image_folder_samples(&root).unwrap_err().to_string();
    assert!(listed.contains("levels of folders"), "{listed}");
    let msg = image_folder_samples(root.join("a/x.png")).unwrap_err().to_string();
    assert!(msg.contains("x.png"), "{msg}");
    let empty = root.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let msg = image_folder_samples(&empty).unwrap_err().to_string();
    assert!(msg.contains("no class sub-folders"), "{msg}");
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn sizes_and_decoder_limits_are_bounded() {
    let root = tmp("sizes");
    std::fs::create_dir_all(root.join("a")).unwrap();
    image::GrayImage::from_pixel(3, 3, image::Luma([7])).save(root.join("a").join("x.png")).unwrap();
    for size in [(0, 0), (0, 5), (40_000, 40_000), (5, 4097)] {
        let msg = load_image_folder(&root, size, ColorMode::Gray).unwrap_err().to_string();
        assert!(msg.contains("between 1 and 4096"), "{size:?}: {msg}");
    }
    // An image wider than the decoder accepts: a clean error naming the file.
    image::GrayImage::new(20_000, 1).save(root.join("a").join("wide.png")).unwrap();
    let msg = load_image_folder(&root, (3, 3), ColorMode::Gray).unwrap_err().to_string();
    assert!(msg.contains("wide.png") && msg.contains("cannot decode"), "{msg}");
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn in_memory_images_and_tensors_convert_both_ways() {
    use backprop::data::image_folder::{image_to_tensor, tensor_to_image};
    let grey = image::GrayImage::from_fn(5, 3, |x, y| image::Luma([(x * 50 + y) as u8]));
    let img = image::DynamicImage::ImageLuma8(grey.clone());
    let t = image_to_tensor(&img, ColorMode::Gray);
    assert_eq!(t.shape(), &[1, 3, 5]);
    assert_eq!(t[&[0, 2, 4]], 202.0 / 255.0, "row 2, column 4: 4·50 + 2");
    assert_eq!(tensor_to_image(&t).unwrap().to_luma8(), grey, "a lossless round trip");
    // RGB from a grey image repeats the value in every channel.
    let rgb = image_to_tensor(&img, ColorMode::Rgb);
    assert_eq!((rgb.shape(), rgb[&[2, 2, 4]]), (&[3usize, 3, 5][..], 202.0 / 255.0));
    // Out-of-range values are clamped, NaN is black; other shapes are errors naming the shape.
    let odd = backprop::Tensor::from_vec(&[1, 1, 3], vec![-1.0, 2.0, f32::NAN]).unwrap();
    assert_eq!(tensor_to_image(&odd).unwrap().to_luma8().into_raw(), [0, 255, 0]);
    let e = tensor_to_image(&backprop::Tensor::zeros(&[2, 4, 4])).unwrap_err().to_string();
    assert!(e.contains("[2, 4, 4]"), "{e}");
}

/// A colour picture's grey is PIL's `convert("L")` (torchvision's `Grayscale`), not the image
/// crate's Rec. 709 luma. The expected levels are Pillow 13.0.0's
/// (`python3 tests/fixtures/print_reference_values.py`), from
/// `Image.new("RGB", …).putdata(colours).convert("L")` (and RGBA).
#[test]
fn grey_is_the_grey_pil_and_torchvision_compute() {
    use backprop::data::image_folder::image_to_tensor;
    let colours =
        [[255, 0, 0], [0, 255, 0], [0, 0, 255], [12, 200, 77], [255, 255, 255], [1, 2, 3], [128, 64, 250]];
    let pil = [76, 150, 29, 130, 255, 2, 104];
    let mut rgb = image::RgbImage::new(colours.len() as u32, 1);
    for (x, c) in colours.iter().enumerate() {
        rgb.put_pixel(x as u32, 0, image::Rgb(*c));
    }
    let levels = |t: backprop::Tensor| t.data().iter().map(|v| (v * 255.0).round() as u8).collect::<Vec<_>>();
    assert_eq!(levels(image_to_tensor(&image::DynamicImage::ImageRgb8(rgb), ColorMode::Gray)), pil);
    // Alpha is dropped, not composited (PIL: [124, 18]).
    let mut rgba = image::RgbaImage::new(2, 1);
    rgba.put_pixel(0, 0, image::Rgba([200, 100, 50, 0]));
    rgba.put_pixel(1, 0, image::Rgba([10, 20, 30, 128]));
    assert_eq!(levels(image_to_tensor(&image::DynamicImage::ImageRgba8(rgba), ColorMode::Gray)), [124, 18]);
    // Through the folder loader too.
    let root = tmp("pil-grey");
    std::fs::create_dir_all(root.join("a")).unwrap();
    image::RgbImage::from_pixel(1, 1, image::Rgb([90, 180, 45])).save(root.join("a").join("p.png")).unwrap();
    let (data, _) = load_image_folder(&root, (1, 1), ColorMode::Gray).unwrap();
    assert_eq!(levels(data.inputs().clone()), [138]); // PIL: 138
    // A grey picture keeps its levels.
    let grey = image::GrayImage::from_pixel(1, 1, image::Luma([77]));
    assert_eq!(levels(image_to_tensor(&image::DynamicImage::ImageLuma8(grey), ColorMode::Gray)), [77]);
    std::fs::remove_dir_all(&root).unwrap();
}

/// A class folder that is a broken link is an error naming it, not a class skipped in silence
/// (which would shift every later class's label).
#[cfg(unix)]
#[test]
fn a_broken_link_to_a_class_folder_is_named() {
    let root = tmp("broken-class");
    for class in ["a", "c"] {
        std::fs::create_dir_all(root.join(class)).unwrap();
        image::GrayImage::from_pixel(2, 2, image::Luma([9])).save(root.join(class).join("x.png")).unwrap();
    }
    std::os::unix::fs::symlink(root.join("missing"), root.join("b")).unwrap();
    let e = load_image_folder(&root, (2, 2), ColorMode::Gray).unwrap_err().to_string();
    assert!(e.contains("/b") && e.contains("broken link"), "{e}");
    std::fs::remove_dir_all(&root).unwrap();
}

/// Within a class, files come in torchvision's `ImageFolder` order — folders by their paths sorted
/// as strings, each folder's files by name — both from `image_folder_samples` and as the samples
/// of `load_image_folder`: sample `i` is file `i` (the order printed by
/// `python3 tests/fixtures/print_reference_values.py`, `sorted(os.walk(…))` and `sorted(fnames)`).
#[test]
fn samples_come_in_torchvisions_order() {
    use backprop::data::image_folder::image_folder_samples;
    let root = tmp("order");
    let torchvision = ["a.png", "d.png", "B/w.png", "a.d/x.png", "b/c.png", "b-c/y.png", "b/x/z.png"];
    // Written in another order, each file a grey level of its own.
    let mut written = torchvision.to_vec();
    written.sort_by_key(|f| std::cmp::Reverse(*f));
    for f in &written {
        let path = root.join("cls").join(f);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let level = 10 * (1 + torchvision.iter().position(|t| t == f).unwrap() as u8);
        image::GrayImage::from_pixel(1, 1, image::Luma([level])).save(&path).unwrap();
    }
    std::fs::create_dir_all(root.join("other")).unwrap();
    image::GrayImage::from_pixel(1, 1, image::Luma([255])).save(root.join("other/o.png")).unwrap();
    let (files, names) = image_folder_samples(&root).unwrap();
    assert_eq!(names, ["cls", "other"]);
    let listed: Vec<String> = files
        .iter()
        .map(|(p, _)| p.strip_prefix(root.join("cls")).unwrap_or(p).to_string_lossy().into_owned())
        .collect();
    assert_eq!(listed[..7], torchvision.map(String::from));
    assert_eq!(files.iter().map(|(_, l)| *l).collect::<Vec<_>>(), [0, 0, 0, 0, 0, 0, 0, 1]);
    let (data, _) = load_image_folder(&root, (1, 1), ColorMode::Gray).unwrap();
    let levels: Vec<u8> = data.inputs().data().iter().map(|v| (v * 255.0).round() as u8).collect();
    assert_eq!(levels, [10, 20, 30, 40, 50, 60, 70, 255]);
    std::fs::remove_dir_all(&root).unwrap();
}
