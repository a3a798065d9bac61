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
