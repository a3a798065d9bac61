//! The pictures of the guides are what `examples/pictures.rs` draws today, and their numbers are
//! the crate's: `im2col`'s columns, max pooling's routing, batch norm's and the LSTM's staged graphs, a
//! residual fork, the vanishing-gradient chart, and the privacy chart's table.

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

/// `a` and `b` are the same text up to the numbers in it, which may differ by `tolerance` (a chart's
/// coordinates move by a fraction of a pixel when another CPU rounds a gradient differently).
fn same_up_to_numbers(a: &str, b: &str, tolerance: f64) -> bool {
    fn split(s: &str) -> (String, Vec<f64>) {
        let (mut skeleton, mut numbers, mut current) = (String::new(), Vec::new(), String::new());
        for c in s.chars().chain(std::iter::once(' ')) {
            if c.is_ascii_digit() || (c == '.' && !current.is_empty()) {
                current.push(c);
            } else {
                if !current.is_empty() {
                    numbers.push(current.parse().unwrap_or(f64::NAN));
                    skeleton.push('#');
                    current.clear();
                }
                skeleton.push(c);
            }
        }
        (skeleton, numbers)
    }
    let ((sa, na), (sb, nb)) = (split(a), split(b));
    sa == sb && na.len() == nb.len() && na.iter().zip(&nb).all(|(x, y)| (x - y).abs() <= tolerance)
}

#[test]
fn numbers_may_move_by_the_tolerance_and_nothing_else_may() {
    assert!(same_up_to_numbers("<circle cx=\"12.3\"/>", "<circle cx=\"12.4\"/>", 0.15));
    assert!(!same_up_to_numbers("<circle cx=\"12.3\"/>", "<circle cx=\"12.5\"/>", 0.15));
    assert!(!same_up_to_numbers("<circle cx=\"12.3\"/>", "<circle cy=\"12.3\"/>", 0.15));
    assert!(!same_up_to_numbers("1e-5 2", "1e-5", 0.15));
}

#[test]
fn the_committed_charts_are_the_programs() {
    let svg = pictures::vanishing_gradients::chart_svg(&pictures::vanishing_gradients::all_norms());
    assert!(
        same_up_to_numbers(&svg, &committed("vanishing_gradients.svg"), 0.15),
        "run `cargo run --release --example pictures`"
    );
    assert_eq!(
        pictures::privacy_curve(),
        committed("privacy_curve.svg"),
        "run `cargo run --release --example pictures`"
    );
}

#[test]
fn the_privacy_curve_plots_the_guides_table() {
    let guide =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/privacy.md"))
            .unwrap();
    let (header, row) = {
        let mut lines = guide.lines().skip_while(|l| !l.starts_with("| ε |"));
        (lines.next().expect("docs/privacy.md's table of ε"), lines.nth(1).expect("its accuracy row"))
    };
    let cells = |line: &str| -> Vec<String> {
        line.split('|')
            .map(|c| c.trim().trim_end_matches(" %").to_string())
            .filter(|c| !c.is_empty())
            .collect()
    };
    let (eps, acc) = (cells(header), cells(row));
    assert_eq!(acc[0], "test accuracy");
    assert_eq!(eps.len(), pictures::PRIVACY_RUNS.len() + 2, "{eps:?}");
    for (k, (e, a)) in pictures::PRIVACY_RUNS.iter().enumerate() {
        assert_eq!(eps[k + 1].parse::<f64>().unwrap(), *e, "{eps:?}");
        assert_eq!(acc[k + 1].parse::<f64>().unwrap(), *a, "{acc:?}");
    }
    assert_eq!(acc.last().unwrap().parse::<f64>().unwrap(), pictures::NOT_PRIVATE);
}
