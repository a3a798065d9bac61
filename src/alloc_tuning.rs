//! Keeping freed memory for reuse (glibc on Linux).
//!
//! A training step allocates and frees the same large buffers again and again: layer outputs and
//! gradients of several megabytes, and `matrixmultiply`'s packing buffers (a few hundred KB, on
//! every GEMM call, in every worker thread). glibc's default policy hands such memory back to the
//! kernel as soon as it is freed, and takes it back on the next allocation: every step then pays
//! for page faults, page zeroing and, because the process is multi-threaded, TLB shootdowns on every
//! core. Measured on the reference network's training step (`benches/train_step.rs`), that churn
//! was about a third of the step's time.
//!
//! [`tune_allocator`] raises glibc's trim and mmap thresholds (as a caching allocator would), so
//! freed blocks stay in the process and are reused warm. It changes the allocator of the whole
//! process, so the library never calls it by itself: a program that owns its process — the
//! examples, the benchmarks — opts in with one call at the start of `main`. On other platforms
//! it does nothing.
//!
//! ```
//! // At the start of a training program's main():
//! let tuned = backprop::alloc_tuning::tune_allocator();
//! # let _ = tuned;
//! ```

use std::sync::OnceLock;

static APPLIED: OnceLock<bool> = OnceLock::new();

/// Applies the allocator settings described in the [module docs](self), once per process.
/// Returns whether they are in effect (false on platforms other than Linux with glibc).
pub fn tune_allocator() -> bool {
    *APPLIED.get_or_init(|| {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        {
            // SAFETY: mallopt only changes allocator parameters and may be called at any time.
            // Blocks up to 32 MiB (glibc's maximum for this setting) come from the heap, not mmap;
            // the heap is only trimmed back to the kernel when 1 GiB sits free at its top.
            let (mmap, trim) = unsafe {
                (
                    libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20),
                    libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30),
                )
            };
            mmap == 1 && trim == 1
        }
        #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
        false
    })
}

/// Whether [`tune_allocator`] has been called in this process and took effect. The library itself
/// never calls it (`tests/no_side_effects.rs` checks this).
pub fn is_tuned() -> bool {
    APPLIED.get().copied().unwrap_or(false)
}
