//! Hot loops compiled for the widest vectors the CPU has.
//!
//! The element-wise loops of the recurrent cells (gates through `σ` and `tanh`) are plain Rust
//! that the compiler vectorises; for the baseline x86-64 target that means
//! 4 floats per instruction (SSE2). On a CPU with AVX2 the same loop compiled with AVX2 enabled
//! does 8 at a time. [`wide!`] picks at run time. Both versions perform the same operations in the
//! same order — no fused multiply-adds, which Rust never introduces on its own — so the results
//! are bit-identical on every CPU (the `wide_vectors_change_nothing` tests of `lstm.rs` and `gru.rs`
//! check it where AVX2 exists).
//!
//! Tried and dropped: the same for max pooling's plane loops — no measurable change in a training
//! step (alternating builds of the private walkthrough, 4 rounds); that loop is bound by memory.

/// Runs `f` in a function compiled with AVX2 enabled, so that the loop inlined into it is
/// vectorised 8 wide.
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn with_avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// Runs `f` compiled with AVX2 when `wide` and the CPU has it (returns true then), otherwise as
/// it is (returns false): for tests that compare the two compilations of a loop.
#[cfg(test)]
pub(crate) fn run_maybe_wide(wide: bool, f: impl FnOnce()) -> bool {
    #[cfg(target_arch = "x86_64")]
    if wide && wide_vectors() {
        // SAFETY: the CPU supports AVX2 (checked just above).
        unsafe { with_avx2(f) };
        return true;
    }
    f();
    false
}

/// True if the step loops run with AVX2 on this CPU.
pub(crate) fn wide_vectors() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `wide!(expr)`: evaluates `expr` (a call of an `#[inline(always)]` loop) through [`with_avx2`]
/// where the CPU has AVX2, directly otherwise.
macro_rules! wide {
    ($e:expr) => {{
        #[cfg(target_arch = "x86_64")]
        {
            if $crate::tensor::simd::wide_vectors() {
                // SAFETY: the CPU supports AVX2 (checked just above).
                unsafe { $crate::tensor::simd::with_avx2(|| $e) }
            } else {
                $e
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            $e
        }
    }};
}
pub(crate) use wide;
