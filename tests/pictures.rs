//! The pictures of docs/backprop.md (§6, §7, §14) are what `examples/pictures.rs` draws today, and
//! their numbers are the crate's: `im2col`'s columns, max pooling's routing, a residual fork.

#[allow(dead_code)]
#[path = "../examples/pictures.rs"]
mod pictures;

fn committed(name: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/img").join(name))
        .unwrap()
}

#[test]
fn the_committed_pictures_are_the_programs_and_hold_the_crates_numbers() {
    let (cols, svg) = pictures::im2col_map();
    assert_eq!(cols, [1., 2., 4., 5., 2., 3., 5., 6., 4., 5., 7., 8., 5., 6., 8., 9.]);
    assert_eq!(svg, committed("im2col_map.svg"), "run `cargo run --release --example pictures`");

    let ((y, dx), svg) = pictures::maxpool_routing();
    assert_eq!(y, [4., 5., 6., 3.]);
    assert_eq!(dx, [0., 0., 0., 0., 1., 0., 0., 2., 0., 0., 4., 0., 0., 3., 0., 0.]);
    assert_eq!(svg, committed("maxpool_routing.svg"), "run `cargo run --release --example pictures`");

    let (dx, svg) = pictures::batchnorm_staged();
    for (got, want) in dx.iter().zip([0.264521, -0.330649, 0.066128]) {
        assert!((got - want).abs() < 1e-6, "§8's dL/dx: {dx:?}");
    }
    assert_eq!(svg, committed("batchnorm_staged.svg"), "run `cargo run --release --example pictures`");

    let ((h, dx), svg) = pictures::lstm_unrolled();
    for (got, want) in h.iter().chain(&dx).zip([0.166521, 0.249740, 0.106022, 0.119839]) {
        assert!((got - want).abs() < 1e-6, "§12's numbered steps: h {h:?}, dx {dx:?}");
    }
    assert!(svg.contains("dc = 0.2689") && svg.contains("dh = 0.1019"), "the wires' gradients of §12");
    assert_eq!(svg, committed("lstm_unrolled.svg"), "run `cargo run --release --example pictures`");

    let ((y, dx), svg) = pictures::residual_fork();
    assert_eq!((y, dx), (3.0, 1.5));
    assert_eq!(svg, committed("residual_fork.svg"), "run `cargo run --release --example pictures`");
}
