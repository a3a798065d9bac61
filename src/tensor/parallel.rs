//! One rule for splitting work across threads, instead of a serial and a parallel copy of every
//! loop: kernels always build a rayon iterator over their tasks and pass it
//! `.with_min_len(min_len(tasks, parallel))`. When `parallel` is false the iterator is never
//! split, so rayon runs every task in order on the calling thread without waking another thread
//! (what a plain loop would do); when it is true, rayon splits as it likes.
//!
//! Whether to split is each kernel's measured threshold (the work below which handing tasks to
//! other threads costs more than it saves), stated where the kernel calls this.

//!
//! A pool of one thread never splits: a split from outside the pool hands the work to the pool's
//! only thread and puts the caller to sleep until it is done — two context switches for nothing
//! (measured: 6–8 % of a one-thread MLP training step was the kernel waking and parking threads).

/// The `with_min_len` for an iterator of `tasks` tasks: 1 (split freely) when `parallel` and the
/// pool has more than one thread, all of them (one piece, on the calling thread) otherwise.
pub(crate) fn min_len(tasks: usize, parallel: bool) -> usize {
    if parallel && rayon::current_num_threads() > 1 { 1 } else { tasks.max(1) }
}

/// The `with_min_len` for work worth splitting (into pieces of at least `at_least` tasks)
/// whenever the pool has another thread: `at_least`, or `usize::MAX` (never split) in a pool of
/// one thread.
pub(crate) fn split_if_threads(at_least: usize) -> usize {
    if rayon::current_num_threads() > 1 { at_least } else { usize::MAX }
}
