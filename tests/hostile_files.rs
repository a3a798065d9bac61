//! Hostile files cost bounded memory and give clean errors: gzip bombs and headers that claim more
//! than the file holds.

use backprop::data::idx::read_idx;
use std::io::Write;
use std::time::Instant;

mod common;
use common::ScratchFile;

fn gzip(parts: &[&[u8]], zeros: usize) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    for p in parts {
        gz.write_all(p).unwrap();
    }
    let block = vec![0u8; 1 << 20];
    let mut left = zeros;
    while left > 0 {
        let n = left.min(block.len());
        gz.write_all(&block[..n]).unwrap();
        left -= n;
    }
    gz.finish().unwrap()
}

fn tmp(name: &str, bytes: &[u8]) -> ScratchFile {
    ScratchFile::new(name, bytes)
}

/// 10 labels declared, then 256 MiB of zeros (a 250 KB file): decompression stops one byte past
/// the declared data and refuses the rest, instead of inflating all of it.
#[test]
fn a_gzip_bomb_is_refused_after_the_declared_data() {
    let header = [0u8, 0, 8, 1, 0, 0, 0, 10];
    let path = tmp("bomb-idx1.gz", &gzip(&[&header], 256 << 20));
    let started = Instant::now();
    let err = read_idx(&path).unwrap_err().to_string();
    assert!(err.contains("go on past the 10 bytes its header declares"), "{err}");
    assert!(started.elapsed().as_secs_f32() < 5.0, "stopped early, not after inflating 256 MiB");
}

/// A valid header claiming 1×32768×32768 bytes over 1 MB of data: a truncation error, without
/// allocating the 1 GiB the header claims (memory grows with the data actually decompressed).
#[test]
fn a_header_claiming_more_than_the_file_holds_is_truncated() {
    let header = [0u8, 0, 8, 3, 0, 0, 0, 1, 0, 0, 0x80, 0, 0, 0, 0x80, 0];
    let path = tmp("claims-idx3.gz", &gzip(&[&header], 1 << 20));
    let err = read_idx(&path).unwrap_err().to_string();
    assert!(err.contains("truncated") && err.contains("1073741824"), "{err}");
    // Sizes whose product overflows are refused from the header alone.
    let huge = [0u8, 0, 8, 3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
    let path = tmp("overflow-idx3.gz", &gzip(&[&huge], 16));
    let err = read_idx(&path).unwrap_err().to_string();
    assert!(err.contains("more elements than a tensor can"), "{err}");
}

/// A JPEG cut short decodes without complaint in the `image` crate (its decoder fills the missing
/// rows with grey): `load_image` walks the markers to the end-of-image marker first and refuses
/// it, as PIL (and so torchvision) does. A whole file loads, with or without a trailer after its
/// end (a camera's), and a cut PNG is refused by its own decoder.
#[test]
#[cfg(feature = "image")] // (a package unpacked from crates.io builds without it)
fn a_truncated_jpeg_is_an_error_not_grey_rows() {
    use backprop::data::image_folder::{ColorMode, load_image};
    let img = image::RgbImage::from_fn(64, 64, |x, y| {
        image::Rgb([(x * 4) as u8, (y * 4) as u8, ((x + y) * 2) as u8])
    });
    let mut jpeg = Vec::new();
    image::DynamicImage::ImageRgb8(img.clone())
        .write_to(&mut std::io::Cursor::new(&mut jpeg), image::ImageFormat::Jpeg)
        .unwrap();
    let whole = tmp("whole.jpg", &jpeg);
    let full = load_image(&*whole, (64, 64), ColorMode::Rgb).unwrap();
    let mut trailer = jpeg.clone();
    trailer.extend_from_slice(b"SEFT trailer \xFF\xDA\x00\x04ab");
    let with_trailer = tmp("trailer.jpg", &trailer);
    assert_eq!(load_image(&*with_trailer, (64, 64), ColorMode::Rgb).unwrap(), full);
    // Cut inside the scan (40 %), a few bytes into it, and just before the end marker.
    let sos = jpeg.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
    for cut in [jpeg.len() * 2 / 5, sos + 20, jpeg.len() - 2] {
        let path = tmp("cut.jpg", &jpeg[..cut]);
        let e = load_image(&*path, (64, 64), ColorMode::Rgb).unwrap_err().to_string();
        assert!(e.contains("truncated") && e.contains("cut.jpg"), "cut at {cut}: {e}");
    }
    let mut png = Vec::new();
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let path = tmp("cut.png", &png[..png.len() * 2 / 5]);
    assert!(load_image(&*path, (64, 64), ColorMode::Rgb).is_err());
}

/// What is not a regular file is refused before it is opened or read (a pipe's open would wait
/// for a writer forever; a device would be read until memory ran out), by every loader; a
/// safetensors file whose size is not the one its header describes is refused from its first
/// bytes (a sparse gigabyte of zeros is not read).
#[test]
#[cfg(unix)]
fn loaders_refuse_what_is_not_a_regular_file_and_safetensors_of_another_size() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("pipe.safetensors");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let zero = std::path::Path::new("/dev/zero");
    let mut model = backprop::layers::Dense::new(2, 2);
    for path in [fifo.as_path(), zero] {
        let e = backprop::io::load(&mut model, path).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        let e = backprop::io::read_metadata(path).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        let e = backprop::train::Checkpoint::load(path).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        let e = read_idx(path).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        #[cfg(feature = "image")]
        {
            use backprop::data::image_folder::{ColorMode, load_image};
            let e = load_image(path, (4, 4), ColorMode::Gray).unwrap_err().to_string();
            assert!(e.contains("not a regular file"), "{e}");
        }
        let e = backprop::data::knowledge::read_csv(path).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
    }
    // A sparse gigabyte: a header length of 0 in its first 8 bytes.
    let sparse = dir.path().join("sparse.safetensors");
    std::fs::File::create(&sparse).unwrap().set_len(1 << 30).unwrap();
    let started = Instant::now();
    let e = backprop::io::load(&mut model, &sparse).unwrap_err().to_string();
    assert!(e.contains("a header of 0 bytes claimed, in a file of 1073741824"), "{e}");
    assert!(started.elapsed().as_secs_f32() < 1.0, "the file was read");
    // A sound file padded with a gigabyte after its tensors.
    let good = dir.path().join("good.safetensors");
    backprop::io::save(&model, &good, &[]).unwrap();
    let len = std::fs::metadata(&good).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&good).unwrap().set_len(len + (1 << 30)).unwrap();
    let e = backprop::io::load(&mut model, &good).unwrap_err().to_string();
    assert!(
        e.contains(&format!("its header describes {len} bytes, the file holds {}", len + (1 << 30))),
        "{e}"
    );
    std::fs::OpenOptions::new().write(true).open(&good).unwrap().set_len(len - 1).unwrap();
    let e = backprop::io::load(&mut model, &good).unwrap_err().to_string();
    assert!(e.contains("truncated"), "{e}");
}
