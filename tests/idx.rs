//! IDX files and MNIST-format folders: round trips and every kind of corrupt file.

use backprop::Error;
use backprop::data::idx::*;
use std::path::{Path, PathBuf};

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("backprop-idx-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn format_message(r: Result<impl std::fmt::Debug, Error>) -> String {
    match r {
        Err(e @ Error::Format { .. }) => e.to_string(),
        other => panic!("expected a format error, got {other:?}"),
    }
}

#[test]
fn round_trip_plain_and_gz() {
    let dir = tmp("roundtrip");
    let dims = [3, 2, 4];
    let data: Vec<u8> = (0..24).map(|i| (i * 11) as u8).collect();
    for name in ["a-idx3-ubyte", "a-idx3-ubyte.gz"] {
        let path = dir.join(name);
        write_idx(&path, &dims, &data).unwrap();
        let back = read_idx(&path).unwrap();
        assert_eq!(back, IdxArray { dims: dims.to_vec(), data: data.clone() });
        let raw = std::fs::read(&path).unwrap();
        assert_eq!(raw.starts_with(&[0x1f, 0x8b]), name.ends_with(".gz"), "{name}");
    }
    // Images scale to [0, 1] as [N, 1, H, W]; labels are integers.
    write_idx(dir.join("img"), &[2, 2, 2], &[0, 255, 51, 102, 0, 0, 0, 255]).unwrap();
    let x = read_images(dir.join("img")).unwrap();
    assert_eq!(x.shape(), &[2, 1, 2, 2]);
    assert_eq!(&x.data()[..4], &[0.0, 1.0, 0.2, 0.4]);
    write_idx(dir.join("lab.gz"), &[2], &[7, 3]).unwrap();
    assert_eq!(read_labels(dir.join("lab.gz")).unwrap(), vec![7, 3]);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Zero bytes after the last gzip member (a file padded to a block) are ignored, as gzip(1)
/// ignores them; anything else after it is still an error.
#[test]
fn zero_padding_after_a_gzip_file_is_ignored() {
    let dir = tmp("padded");
    let path = dir.join("lab.gz");
    write_idx(&path, &[3], &[7, 3, 1]).unwrap();
    let gz = std::fs::read(&path).unwrap();
    let padded = dir.join("padded.gz");
    std::fs::write(&padded, [&gz[..], &[0u8; 512]].concat()).unwrap();
    assert_eq!(read_labels(&padded).unwrap(), vec![7, 3, 1]);
    let gzip = |bytes: &[u8]| {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut enc, bytes).unwrap();
        enc.finish().unwrap()
    };
    // Two members (as `cat a.gz b.gz` makes), then padding.
    let raw = [0u8, 0, 8, 1, 0, 0, 0, 3, 7, 3, 1];
    let two = dir.join("two.gz");
    std::fs::write(&two, [gzip(&raw[..9]), gzip(&raw[9..]), vec![0; 3]].concat()).unwrap();
    assert_eq!(read_labels(&two).unwrap(), vec![7, 3, 1]);
    // Garbage after the member, or padding after a member that holds too little: errors.
    let garbage = dir.join("garbage.gz");
    std::fs::write(&garbage, [&gz[..], b"junk"].concat()).unwrap();
    assert!(matches!(read_labels(&garbage), Err(Error::Format { .. })));
    // More data inside the gzip than the header declares: said so, with no count of the surplus
    // (the reader stops one byte past the declaration, so it would always have said "1").
    let long = dir.join("long.gz");
    std::fs::write(&long, gzip(&[0, 0, 8, 1, 0, 0, 0, 2, 1, 2, 3, 4, 5, 6])).unwrap();
    let msg = format_message(read_labels(&long));
    assert!(msg.contains("long.gz") && msg.contains("go on past the 2 bytes"), "{msg}");
    assert!(!msg.contains("1 unexpected"), "{msg}");
    // Gzipped files of another element type (QMNIST's int32 labels), of no dimensions or of
    // another magic number are named for what they are, not for their length.
    for (name, raw, want) in [
        ("int.gz", vec![0u8, 0, 0x0C, 1, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 7], "element type 0x0c"),
        ("nodims.gz", vec![0, 0, 8, 0, 1, 2], "0 dimensions"),
        ("magic.gz", vec![1, 2, 8, 1, 0, 0, 0, 1, 5, 6], "magic number"),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, gzip(&raw)).unwrap();
        let msg = format_message(read_labels(&path));
        assert!(msg.contains(want), "{name}: {msg}");
    }
    let short = dir.join("short.gz"); // declares 5 labels, holds 3
    std::fs::write(&short, [gzip(&[0, 0, 8, 1, 0, 0, 0, 5, 1, 2, 3]), vec![0; 64]].concat()).unwrap();
    let msg = format_message(read_labels(&short));
    assert!(msg.contains("short.gz"), "{msg}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn each_kind_of_corruption_is_its_own_error() {
    let p = Path::new("bad-file");
    let good = {
        let mut v = vec![0, 0, 8, 1, 0, 0, 0, 3];
        v.extend([1, 2, 3]);
        v
    };
    assert!(parse_idx(&good, p).is_ok());
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (vec![0, 0], "too short"),
        (vec![1, 0, 8, 1, 0, 0, 0, 3, 1, 2, 3], "magic number"),
        (vec![0, 0, 0x0D, 1, 0, 0, 0, 3, 1, 2, 3], "element type 0x0d"),
        (vec![0, 0, 8, 0], "0 dimensions"),
        (vec![0, 0, 8, 3, 0, 0, 0, 3], "truncated IDX header"),
        (vec![0, 0, 8, 1, 0, 0, 0, 3, 1, 2], "truncated"),
        (vec![0, 0, 8, 1, 0, 0, 0, 3, 1, 2, 3, 4], "unexpected bytes"),
    ];
    for (bytes, want) in cases {
        let msg = format_message(parse_idx(&bytes, p));
        assert!(msg.contains(want) && msg.contains("bad-file"), "{bytes:?}: {msg:?} should mention {want:?}");
    }
    let dir = tmp("corrupt");
    // A gzip file cut in half.
    write_idx(dir.join("x.gz"), &[100], &[5; 100]).unwrap();
    let gz = std::fs::read(dir.join("x.gz")).unwrap();
    std::fs::write(dir.join("cut.gz"), &gz[..gz.len() / 2]).unwrap();
    let msg = format_message(read_idx(dir.join("cut.gz")));
    assert!(msg.contains("gzip") && msg.contains("cut.gz"), "{msg}");
    // Wrong dimensionality for images or labels.
    write_idx(dir.join("one-d"), &[4], &[0; 4]).unwrap();
    assert!(format_message(read_images(dir.join("one-d"))).contains("3 dimensions"));
    write_idx(dir.join("three-d"), &[1, 2, 2], &[0; 4]).unwrap();
    assert!(format_message(read_labels(dir.join("three-d"))).contains("1 dimension"));
    // Image and label counts that disagree name both files.
    write_idx(dir.join("imgs"), &[3, 2, 2], &[0; 12]).unwrap();
    write_idx(dir.join("labels"), &[2], &[0; 2]).unwrap();
    let msg = format_message(read_image_label_pair(dir.join("imgs"), dir.join("labels")));
    assert!(
        msg.contains("3 images")
            && msg.contains("2 labels")
            && msg.contains("imgs")
            && msg.contains("labels"),
        "{msg}"
    );
    // A missing file is an I/O error naming it.
    let e = read_idx(dir.join("absent")).unwrap_err();
    assert!(matches!(e, Error::Io { .. }) && e.to_string().contains("absent"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// MNIST's own file names, uncompressed.
const STANDARD: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

/// Writes a tiny MNIST-format folder with the given file names (images 4×3).
fn write_folder(dir: &Path, names: [&str; 4], counts: (usize, usize)) {
    let (n_train, n_test) = counts;
    write_idx(dir.join(names[0]), &[n_train, 4, 3], &vec![9; n_train * 12]).unwrap();
    write_idx(dir.join(names[1]), &[n_train], &(0..n_train).map(|i| (i % 10) as u8).collect::<Vec<_>>())
        .unwrap();
    write_idx(dir.join(names[2]), &[n_test, 4, 3], &vec![1; n_test * 12]).unwrap();
    write_idx(dir.join(names[3]), &[n_test], &vec![2; n_test]).unwrap();
}

#[test]
fn mnist_format_folders_under_their_various_spellings() {
    let spellings = [
        [
            "train-images-idx3-ubyte.gz",
            "train-labels-idx1-ubyte.gz",
            "t10k-images-idx3-ubyte.gz",
            "t10k-labels-idx1-ubyte.gz",
        ],
        STANDARD,
        [
            "train-images.idx3-ubyte",
            "train-labels.idx1-ubyte",
            "t10k-images.idx3-ubyte",
            "t10k-labels.idx1-ubyte",
        ],
        [
            "emnist-digits-train-images-idx3-ubyte.gz",
            "emnist-digits-train-labels-idx1-ubyte.gz",
            "emnist-digits-test-images-idx3-ubyte.gz",
            "emnist-digits-test-labels-idx1-ubyte.gz",
        ],
    ];
    for (k, names) in spellings.into_iter().enumerate() {
        let dir = tmp(&format!("folder{k}"));
        write_folder(&dir, names, (5, 3));
        std::fs::write(dir.join("README.txt"), "not data").unwrap();
        let (train, test) = load_mnist_folder(&dir).unwrap();
        assert_eq!((train.len(), test.len()), (5, 3));
        assert_eq!(train.sample_shape(), &[1, 4, 3]);
        assert_eq!(test.labels().unwrap(), &[2, 2, 2]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn incomplete_or_ambiguous_folders_are_clear_errors() {
    let dir = tmp("incomplete");
    let names = STANDARD;
    write_folder(&dir, names, (2, 2));
    std::fs::remove_file(dir.join("t10k-labels-idx1-ubyte")).unwrap();
    let msg = format_message(load_mnist_folder(&dir));
    assert!(msg.contains("test labels") && msg.contains("t10k-labels-idx1-ubyte"), "{msg}");
    write_idx(dir.join("t10k-labels-idx1-ubyte"), &[2], &[0, 0]).unwrap();
    write_idx(dir.join("old-t10k-labels-idx1-ubyte"), &[2], &[0, 0]).unwrap();
    let msg = format_message(load_mnist_folder(&dir));
    assert!(msg.contains("several files") && msg.contains("old-t10k-labels"), "{msg}");
    assert!(msg.contains("find_mnist_files_matching"), "the message says how to choose: {msg}");
    // QMNIST's two-dimensional int32 labels in place of the idx1 file: named, not passed over.
    std::fs::remove_file(dir.join("old-t10k-labels-idx1-ubyte")).unwrap();
    std::fs::remove_file(dir.join("t10k-labels-idx1-ubyte")).unwrap();
    std::fs::write(
        dir.join("qmnist-test-labels-idx2-int"),
        [0u8, 0, 0x0C, 2, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 7],
    )
    .unwrap();
    let msg = format_message(load_mnist_folder(&dir));
    assert!(msg.contains("test labels") && msg.contains("qmnist-test-labels-idx2-int"), "{msg}");
    assert!(msg.contains("two dimensions") && msg.contains("QMNIST"), "{msg}");
    std::fs::remove_file(dir.join("qmnist-test-labels-idx2-int")).unwrap();
    write_idx(dir.join("t10k-labels-idx1-ubyte"), &[2], &[0, 0]).unwrap();
    write_idx(dir.join("old-t10k-labels-idx1-ubyte"), &[2], &[0, 0]).unwrap();
    // A part of the names that matches nothing: the message says which part.
    let msg = format_message(load_mnist_folder_matching(&dir, "balanced"));
    assert!(msg.contains("\"balanced\"") && msg.contains("training images"), "{msg}");
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(matches!(load_mnist_folder(dir.join("nowhere")), Err(Error::Io { .. })));
    assert!(matches!(load_mnist_folder_matching(dir.join("nowhere"), "x"), Err(Error::Io { .. })));
}

/// torchvision's `raw` folder keeps each file twice, uncompressed and gzipped: one set, read from
/// the uncompressed files.
#[test]
fn a_file_beside_its_gzipped_copy_counts_once() {
    let dir = tmp("torchvision");
    let names = STANDARD;
    write_folder(&dir, names, (5, 3));
    for name in names {
        // The gzipped copies hold other labels, so the test can tell which file was read.
        let gz = dir.join(format!("{name}.gz"));
        let mut arr = read_idx(dir.join(name)).unwrap();
        arr.data.iter_mut().for_each(|v| *v = 7);
        write_idx(&gz, &arr.dims, &arr.data).unwrap();
    }
    let files = find_mnist_files(&dir).unwrap();
    assert_eq!(files.test_labels, dir.join("t10k-labels-idx1-ubyte"));
    let (train, test) = load_mnist_folder(&dir).unwrap();
    assert_eq!((train.len(), test.len()), (5, 3));
    assert_eq!(test.labels().unwrap(), &[2, 2, 2], "the uncompressed file's labels");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// EMNIST's folder holds every split side by side: ambiguous as a whole, one split by a part of
/// its names.
#[test]
fn one_split_of_a_folder_that_holds_several() {
    let dir = tmp("emnist");
    for (split, n) in [("balanced", 4), ("digits", 5), ("letters", 6)] {
        let names = [
            "train-images-idx3-ubyte.gz",
            "train-labels-idx1-ubyte.gz",
            "test-images-idx3-ubyte.gz",
            "test-labels-idx1-ubyte.gz",
        ]
        .map(|name| format!("emnist-{split}-{name}"));
        write_folder(&dir, [&names[0], &names[1], &names[2], &names[3]], (n, 2));
    }
    let msg = format_message(load_mnist_folder(&dir));
    assert!(
        msg.contains("emnist-balanced-train-images") && msg.contains("emnist-letters-train-images"),
        "{msg}"
    );
    let (train, _) = load_mnist_folder_matching(&dir, "DIGITS").unwrap();
    assert_eq!(train.len(), 5, "the digits split (the part matched ignoring case)");
    let files = find_mnist_files_matching(&dir, "emnist-letters-").unwrap();
    assert!(files.train_labels.ends_with("emnist-letters-train-labels-idx1-ubyte.gz"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bundled_digits_load() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/digits");
    let (train, test) = load_mnist_folder(&dir).unwrap();
    assert_eq!((train.len(), test.len()), (8000, 2000));
    assert_eq!(train.sample_shape(), &[1, 28, 28]);
    assert_eq!(train.num_classes(), Some(10));
    let counts: Vec<usize> =
        (0..10).map(|c| train.labels().unwrap().iter().filter(|&&l| l == c).count()).collect();
    assert_eq!(counts, vec![799, 913, 801, 813, 781, 689, 809, 865, 747, 783]);
    let (min, max) = (train.inputs().min(), train.inputs().max());
    assert!(min == 0.0 && max == 1.0, "pixels in [0, 1]: {min}..{max}");
}

/// `write_idx` replaces a file whole (the old one stays when writing fails), compresses a `.GZ`
/// name as it does `.gz`, and writes through a link to its target.
#[test]
fn write_idx_replaces_whole_files_and_follows_links() {
    let dir = tempfile::tempdir().unwrap();
    let upper = dir.path().join("labels.GZ");
    write_idx(&upper, &[3], &[1, 2, 3]).unwrap();
    let raw = std::fs::read(&upper).unwrap();
    assert_eq!(&raw[..2], &[0x1f, 0x8b], "gzip data under an upper-case .GZ");
    // A failed write (dimensions that do not hold the data) leaves the old file.
    let path = dir.path().join("labels");
    write_idx(&path, &[3], &[1, 2, 3]).unwrap();
    let before = std::fs::read(&path).unwrap();
    assert!(write_idx(&path, &[4], &[1, 2, 3]).is_err());
    assert_eq!(std::fs::read(&path).unwrap(), before);
    #[cfg(unix)]
    {
        let link = dir.path().join("latest");
        std::os::unix::fs::symlink("labels", &link).unwrap();
        write_idx(&link, &[2], &[9, 8]).unwrap();
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "the link stays a link");
        assert_eq!(read_labels(&path).unwrap(), vec![9, 8]);
    }
}
