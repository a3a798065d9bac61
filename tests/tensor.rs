//! Tensor constructors, arithmetic, reductions, interop and error messages.

use backprop::Tensor;

fn panic_message(f: impl FnOnce()) -> String {
    let err = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_err();
    err.downcast_ref::<String>().cloned().unwrap_or_default()
}

#[test]
fn from_vec_wrong_length_names_shape_and_length() {
    let e = Tensor::from_vec(&[2, 3, 4], vec![0.0; 23]).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("[2, 3, 4]") && msg.contains("24") && msg.contains("23"), "{msg}");
}

#[test]
fn mismatched_arithmetic_panics_with_both_shapes() {
    let a = Tensor::zeros(&[2, 3]);
    let b = Tensor::zeros(&[3, 2]);
    for msg in [
        panic_message(|| drop(&a + &b)),
        panic_message(|| drop(&a - &b)),
        panic_message(|| drop(a.mul_elem(&b))),
        panic_message(|| {
            let mut c = a.clone();
            c += &b;
        }),
        panic_message(|| drop(a.zip_map(&b, |x, y| x * y))),
    ] {
        assert!(msg.contains("[2, 3]") && msg.contains("[3, 2]"), "{msg}");
    }
    let msg = panic_message(|| drop(a.clone().reshape(&[4, 2])));
    assert!(msg.contains("[2, 3]") && msg.contains("[4, 2]"), "{msg}");
}

#[test]
fn constructors() {
    assert_eq!(Tensor::zeros(&[2, 2]).data(), &[0.0; 4]);
    assert_eq!(Tensor::ones(&[3]).sum(), 3.0);
    assert_eq!(Tensor::full(&[2], 2.5).data(), &[2.5, 2.5]);
    assert_eq!(Tensor::scalar(4.0).item(), 4.0);
    let t = Tensor::from_fn(&[2, 3, 2], |i| (i[0] * 100 + i[1] * 10 + i[2]) as f32);
    assert_eq!(t[&[1, 2, 1]], 121.0);
    assert_eq!(t.data()[t.offset(&[1, 0, 1])], 101.0);
    // Seeded: the same seed gives the same numbers, another seed others.
    let a = Tensor::randn(&[1000], 1.0, 2.0, 42);
    assert_eq!(a, Tensor::randn(&[1000], 1.0, 2.0, 42));
    assert_ne!(a, Tensor::randn(&[1000], 1.0, 2.0, 43));
    assert!((a.mean() - 1.0).abs() < 0.2);
    let sd = (a.map(|x| (x - a.mean()).powi(2)).mean()).sqrt();
    assert!((sd - 2.0).abs() < 0.2, "{sd}");
    let u = Tensor::rand_uniform(&[1000], -2.0, 3.0, 1);
    assert!(u.min() >= -2.0 && u.max() < 3.0 && (u.mean() - 0.5).abs() < 0.2);
}

#[test]
fn elementwise_ops() {
    let a = Tensor::from_vec(&[2, 2], vec![1., 2., 3., 4.]).unwrap();
    let b = Tensor::from_vec(&[2, 2], vec![0.5, -1., 2., 0.]).unwrap();
    assert_eq!((&a + &b).data(), &[1.5, 1., 5., 4.]);
    assert_eq!((&a - &b).data(), &[0.5, 3., 1., 4.]);
    assert_eq!(a.mul_elem(&b).data(), &[0.5, -2., 6., 0.]);
    assert_eq!(a.div_elem(&a).data(), &[1.; 4]);
    assert_eq!((&a * 2.0).data(), &[2., 4., 6., 8.]);
    assert_eq!((-&a).data(), &[-1., -2., -3., -4.]);
    assert_eq!(a.map(|x| x * x).data(), &[1., 4., 9., 16.]);
    let mut c = a.clone();
    c.axpy(2.0, &b);
    assert_eq!(c.data(), &[2., 0., 7., 4.]);
    c -= &b;
    c *= 0.5;
    c.add_scalar(1.0);
    assert_eq!(c.data(), &[1.75, 1.5, 3.5, 3.0]);
    assert_eq!(a.dot(&b), 4.5);
    assert_eq!(a.t().data(), &[1., 3., 2., 4.]);
    assert_eq!(a.matmul(&a).data(), &[7., 10., 15., 22.]);
}

#[test]
fn reductions_along_axes() {
    // shape [2, 3, 2]: value = 100·i + 10·j + k
    let t = Tensor::from_fn(&[2, 3, 2], |i| (i[0] * 100 + i[1] * 10 + i[2]) as f32);
    // Σ = 6·(0 + 100) + 4·(0 + 10 + 20) + 6·(0 + 1) = 600 + 120 + 6
    assert_eq!(t.sum(), 726.0);
    let s1 = t.sum_axis(1);
    assert_eq!(s1.shape(), &[2, 2]);
    assert_eq!(s1.data(), &[30., 33., 330., 333.]);
    let m0 = t.mean_axis(0);
    assert_eq!(m0.shape(), &[3, 2]);
    assert_eq!(m0[&[2, 1]], 71.0);
    let mx = t.max_axis(2);
    assert_eq!(mx.shape(), &[2, 3]);
    assert_eq!(mx.data(), &[1., 11., 21., 101., 111., 121.]);
    assert_eq!(t.argmax_axis(1), vec![2, 2, 2, 2]);
    assert_eq!(t.max(), 121.0);
    assert_eq!(t.min(), 0.0);
    // Ties go to the first index.
    let tie = Tensor::from_vec(&[1, 4], vec![1., 3., 3., 0.]).unwrap();
    assert_eq!(tie.argmax_axis(1), vec![1]);
    assert!((Tensor::from_vec(&[2], vec![3., 4.]).unwrap().norm() - 5.0).abs() < 1e-6);
}

#[test]
fn reshape_is_free_and_checked() {
    let t = Tensor::from_fn(&[2, 6], |i| (i[0] * 6 + i[1]) as f32);
    let ptr = t.data().as_ptr();
    let r = t.reshape(&[3, 4]);
    assert_eq!(r.data().as_ptr(), ptr);
    assert_eq!(r[&[2, 3]], 11.0);
    assert!(r.try_reshape(&[5]).is_err());
}

#[cfg(feature = "ndarray")]
#[test]
fn ndarray_round_trip() {
    let t = Tensor::from_fn(&[2, 3, 4], |i| (i[0] * 12 + i[1] * 4 + i[2]) as f32);
    let a: ndarray::ArrayD<f32> = t.clone().into();
    assert_eq!(a.shape(), &[2, 3, 4]);
    assert_eq!(a[[1, 2, 3]], 23.0);
    let back: Tensor = a.clone().into();
    assert_eq!(back, t);
    // A non-standard layout (a transposed view) converts in logical order.
    let at = a.reversed_axes();
    let tt: Tensor = at.clone().into();
    assert_eq!(tt.shape(), &[4, 3, 2]);
    assert_eq!(tt[&[3, 2, 1]], 23.0);
}

#[cfg(feature = "ndarray")]
#[test]
fn ndarray_fixed_dimensions_and_views() {
    use ndarray::{Array2, Array4, Ix2, Ix3, s};
    let a = Array2::from_shape_fn((3, 4), |(i, j)| (i * 4 + j) as f32);
    let t = Tensor::from(a.clone());
    assert_eq!((t.shape(), t[&[2, 1]]), (&[3usize, 4][..], 9.0));
    let block = Tensor::from(a.slice(s![1.., ..;2])); // rows 1–2, every other column: strided
    assert_eq!((block.shape(), block.data()), (&[2usize, 2][..], &[4., 6., 8., 10.][..]));
    assert_eq!(t.clone().into_array::<Ix2>().unwrap(), a);
    let e = t.clone().into_array::<Ix3>().unwrap_err().to_string();
    assert!(e.contains("[3, 4]") && e.contains("rank 3"), "{e}");
    assert_eq!(t.view().shape(), &[3, 4]);
    assert_eq!(t.view()[[1, 3]], 7.0);
    let images = Array4::<f32>::zeros((2, 1, 5, 5));
    assert_eq!(Tensor::from(images.view()).shape(), &[2, 1, 5, 5]);
}

#[test]
fn display_shows_shape_and_elides() {
    let t = Tensor::from_fn(&[2, 3], |i| (i[0] * 3 + i[1]) as f32);
    let s = format!("{t}");
    assert!(s.starts_with("Tensor[2, 3]"), "{s}");
    assert!(s.contains("5.0000"), "{s}");
    let long = Tensor::zeros(&[100]);
    let s = format!("{long}");
    assert!(s.contains('…') && s.len() < 120, "{s}");
    // Debug shows every value up to 1,000 (so that assert_eq! of two tensors shows where they
    // differ), then elides as PyTorch's repr does; {:#?} never elides.
    let mut b = long.clone();
    b.data_mut()[50] = 1.0;
    let s = format!("{b:?}");
    assert!(!s.contains('…') && s.contains("1.0") && s.matches(", ").count() == 99, "{s}");
    let big = Tensor::zeros(&[1001]);
    assert!(format!("{big:?}").contains('…') && !format!("{big:#?}").contains('…'));
    // A rank far past any nesting prints its values as one list, without recursing per axis.
    let deep = Tensor::zeros(&vec![1; 100_000]);
    let s = format!("{deep:?}");
    assert!(s.ends_with(" [0.0]"), "{}", &s[s.len() - 20..]);
}

#[test]
fn select_outer_gathers_rows() {
    let t = Tensor::from_fn(&[4, 2], |i| (i[0] * 2 + i[1]) as f32);
    let s = t.select_outer(&[3, 0]);
    assert_eq!(s.shape(), &[2, 2]);
    assert_eq!(s.data(), &[6., 7., 0., 1.]);
}

/// `[low, high)` as documented: `rand`'s float sampler can round up to `high` (4 of 200,000 draws
/// in `[1000, 1001)` did), and such draws are drawn again; symmetric ranges (the initialisers')
/// keep their bits.
#[test]
fn uniform_draws_never_reach_high() {
    let t = Tensor::rand_uniform(&[200_000], 1000.0, 1001.0, 0);
    assert!(t.data().iter().all(|&v| (1000.0..1001.0).contains(&v)));
    let s = Tensor::rand_uniform(&[1000], -0.5, 0.5, 3);
    assert!(s.data().iter().all(|&v| (-0.5..0.5).contains(&v)));
    let overflow = std::panic::catch_unwind(|| Tensor::rand_uniform(&[2], -3e38, 3e38, 0));
    assert!(overflow.is_err(), "a range whose width overflows f32 is refused");
}
