//! One rule for splitting work across threads, instead of a serial and a parallel copy of every
//! loop: kernels always build a rayon iterator over their tasks and pass it
//! `.with_min_len(min_len(tasks, parallel))`. When `parallel` is false the iterator is never
//! split, so rayon runs every task in order on the calling thread without waking another thread
//! (what a plain loop would do); when it is true, rayon splits as it likes.
//!
//! Whether to split is each kernel's measured threshold (the work below which handing tasks to
//! other threads costs more than it saves), stated where the kernel calls this.

/// The `with_min_len` for an iterator of `tasks` tasks: 1 (split freely) when `parallel`, all of
/// them (one piece, on the calling thread) otherwise.
pub(crate) fn min_len(tasks: usize, parallel: bool) -> usize {
    if parallel { 1 } else { tasks.max(1) }
}
