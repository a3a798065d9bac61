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
//! freed blocks stay in the process and are reused warm; and it keeps one heap (glibc's "arena")
//! for all threads, so that what one thread frees another reuses. (With an arena per thread,
//! each would keep a whole training step's worth of freed buffers: a step runs on whichever
//! thread of rayon's pool takes it — see [`train::on_pool`](crate::train::on_pool) — and one
//! Transformer step's peak memory grew from 64 to 80–91 MiB. Large allocations are few per step,
//! so the shared heap's lock costs nothing measurable; small ones come from each thread's own
//! cache either way.) Call it first in `main`, before any thread starts: a thread that has
//! already allocated keeps the arena it has. It changes the allocator of the whole
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
            // the heap is only trimmed back to the kernel when 1 GiB sits free at its top; and
            // every thread allocates from that one heap (one arena).
            let (mmap, trim, arenas) = unsafe {
                (
                    libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20),
                    libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30),
                    libc::mallopt(libc::M_ARENA_MAX, 1),
                )
            };
            mmap == 1 && trim == 1 && arenas == 1
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
