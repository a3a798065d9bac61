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
