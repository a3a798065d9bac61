//! Steady state allocates nothing beyond the returned tensors: Conv2d and Dense reuse their
//! caches and scratch buffers from call to call.
//!
//! Checked with a counting global allocator (this test binary only): after two warm-up passes,
//! one more forward + backward may allocate the output `y` and the input gradient `dx`, plus a
//! few small shape vectors — nothing the size of a cache or a scratch buffer.
//!
//! One allocation is not ours: `matrixmultiply::sgemm` allocates its packing buffers on every
//! call (aligned to 32 bytes or more, which is how they are told apart here) and frees them before
//! it returns. The test counts them separately and checks that they are transient: none is still
//! live after the step. (Products on the crate's own kernel pack into buffers each thread keeps:
//! no allocation at all once warm. Conv2d(32→64)'s three products all go there.)

use backprop::Tensor;
use backprop::layers::{Conv2d, Dense, InputGrad, Layer, Pass};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

struct Counting;
/// Bytes requested by ordinary allocations (alignment < 32): the crate's own.
static BYTES: AtomicUsize = AtomicUsize::new(0);
/// Bytes still live of 32-byte-aligned allocations: GEMM packing buffers.
static PACKING_LIVE: AtomicUsize = AtomicUsize::new(0);

fn is_packing(layout: Layout) -> bool {
    layout.align() >= 32
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_packing(layout) {
            PACKING_LIVE.fetch_add(layout.size(), Relaxed);
        } else {
            BYTES.fetch_add(layout.size(), Relaxed);
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_packing(layout) {
            PACKING_LIVE.fetch_sub(layout.size(), Relaxed);
        }
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        BYTES.fetch_add(new_size, Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Bytes allocated by one forward + backward after warm-up, minus those of `y` and `dx`: the
/// fewest over 5 measured rounds. (Each of rayon's threads keeps its own scratch, sized for the
/// images it was handed; on a loaded machine the pool may hand one thread more images than ever
/// before, and its scratch grows once. A layer that allocates at every step shows in every round.)
fn extra_bytes(layer: &mut dyn Layer, x: &Tensor) -> (usize, usize) {
    for _ in 0..2 {
        let y = layer.forward(x, Pass::TRAIN);
        layer.backward(&y, InputGrad::Needed).unwrap();
    }
    let mut fewest = (usize::MAX, 0);
    for _ in 0..5 {
        let g = layer.forward(x, Pass::TRAIN); // used as the upstream gradient below
        let (before, live_before) = (BYTES.load(Relaxed), PACKING_LIVE.load(Relaxed));
        let y = layer.forward(x, Pass::TRAIN);
        let dx = layer.backward(&g, InputGrad::Needed).unwrap();
        let total = BYTES.load(Relaxed) - before;
        assert_eq!(PACKING_LIVE.load(Relaxed), live_before, "GEMM packing buffers are freed when it returns");
        let returned = 4 * (y.len() + dx.len());
        fewest = fewest.min((total.saturating_sub(returned), total));
    }
    fewest
}

#[test]
fn conv2d_and_dense_reuse_their_buffers() {
    // The cached input (1.4 MB for conv2) and the per-thread im2col scratch (~0.5 MB) are reused:
    // re-allocating either would show.
    let cases: Vec<(Box<dyn Layer>, Tensor)> = vec![
        (Box::new(Conv2d::new(1, 32, 3)), Tensor::randn(&[64, 1, 28, 28], 0.0, 1.0, 1)),
        (Box::new(Conv2d::new(32, 64, 3)), Tensor::randn(&[64, 32, 13, 13], 0.0, 1.0, 2)),
        (Box::new(Dense::new(1600, 10)), Tensor::randn(&[64, 1600], 0.0, 1.0, 3)),
    ];
    for (mut layer, x) in cases {
        let (extra, total) = extra_bytes(layer.as_mut(), &x);
        assert!(
            extra <= 4096,
            "{}: {extra} bytes allocated beyond y and dx (total {total})",
            layer.describe()
        );
    }
}
