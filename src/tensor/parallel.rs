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

use rayon::prelude::*;
use std::sync::atomic::{AtomicBool, Ordering};

/// Runs `f` on a thread of rayon's pool — the one the caller is on, or else the global pool —
/// and returns its result: [`train::on_pool`](crate::train::on_pool), which documents it.
pub(crate) fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    on_pool_if(true, f)
}

/// [`on_pool`] when `worth` it (the caller's judgement: a pass over one sample, with few or no
/// parallel loops, would pay the hand-over — two context switches, 8–12 µs on the AMD EPYC of
/// docs/benchmarks.md — for nothing), `f` on this thread otherwise.
pub(crate) fn on_pool_if<R: Send>(worth: bool, f: impl FnOnce() -> R + Send) -> R {
    let threads = rayon::current_num_threads();
    if !worth || threads == 1 || STEP_RUNNER.get() {
        f() // a pool of one thread (no splits), or inside another `on_pool` closure already
    } else {
        // From outside the pool, `scope` hands the closure to a pool thread; on a pool thread (a
        // caller's `ThreadPool::install`), it runs here. Either way this thread then stands in
        // for the caller: without the mark, a step started inside `install` had run every
        // product on one thread (`is_outermost` false), as slow as a pool of one.
        let done = AtomicBool::new(false);
        rayon::scope(|s| {
            // The pool's other threads kept awake while `f` runs (see `stay_awake`).
            for _ in 0..helpers(threads) {
                s.spawn(|_| stay_awake(&done));
            }
            // Set when `f` returns or panics: the helpers stop, and the scope can end.
            let _done = SetOnDrop(&done);
            // Marked while `f` runs, for `is_outermost`: the worker stands in for the caller.
            let restore = Restore(STEP_RUNNER.replace(true));
            let r = f();
            drop(restore);
            r
        })
    }
}

/// How many helpers ([`stay_awake`]) an [`on_pool`] closure gets in a pool of `threads`: one per
/// other thread — none when the pool has more threads than the process has CPUs, where a helper
/// waiting on a CPU would take it from the thread doing the work (measured with four threads on
/// two vCPUs: a GPT step 6–9 % slower with helpers, an MLP step at times half as fast).
fn helpers(threads: usize) -> usize {
    static CPUS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let cpus = *CPUS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if threads <= cpus { threads.saturating_sub(1) } else { 0 }
}

/// A pool thread's loop while an [`on_pool`] closure runs on another: it takes each piece of
/// parallel work as soon as the closure's loops offer it, and otherwise gives its CPU to any
/// other thread that wants it without going to sleep, until `done`.
///
/// Why: an idle rayon thread goes to sleep within microseconds, and waking it again took 20–40 µs
/// on the 2-vCPU hosts of docs/benchmarks.md — longer than many of a training step's parallel
/// loops. After 50 µs of serial work, a loop of two 20 µs halves took 41–48 µs, the second half
/// waiting for a thread that was still waking; with this helper, 21 µs (`cargo bench --bench
/// pool`). So the helpers keep the pool's threads at hand, as an OpenMP runtime's threads spin
/// between parallel regions, for the length of one call, never longer. Idle, a helper calls
/// `std::thread::yield_now`, which returns at once on a CPU nobody else wants: as fast as a pure
/// spin on that host (`ab.py`, two threads: MLP 0.987, GPT 0.997, SAKT 1.021). The helpers do
/// only the work the pool holds: a pool shared with other callers may hand them another caller's
/// piece.
fn stay_awake(done: &AtomicBool) {
    while !done.load(Ordering::Acquire) {
        if rayon::yield_now() != Some(rayon::Yield::Executed) {
            std::thread::yield_now();
        }
    }
}

/// Sets its flag when dropped: when the closure it guards returns, and when it panics.
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

thread_local! {
    /// True on the pool thread that runs an [`on_pool`] closure, while it runs.
    static STEP_RUNNER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` as the inside of a parallel task: on a pool thread its products do not split
/// ([`is_outermost`] is false while it runs, and as before afterwards). For code that holds a
/// thread's scratch buffer while it multiplies: a split would wait for its pieces, and a pool
/// thread that waits runs other tasks meanwhile — on the thread that runs an [`on_pool`]
/// closure, perhaps another user of the same buffer. (Outside the pool a waiting thread runs
/// nothing else, so there products still split.)
pub(crate) fn as_task<R>(f: impl FnOnce() -> R) -> R {
    let was = STEP_RUNNER.replace(false);
    let restore = Restore(was);
    let r = f();
    drop(restore);
    r
}

/// Puts [`STEP_RUNNER`] back to its value when dropped (also when a closure panics).
struct Restore(bool);

impl Drop for Restore {
    fn drop(&mut self) {
        STEP_RUNNER.set(self.0);
    }
}

/// Whether the calling code is the outermost level of the work: outside rayon's pool, or on the
/// pool thread that runs an [`on_pool`] closure (the caller's stand-in) — not inside a task of
/// some other thread's parallel loop, where a split would cut work that is already shared out.
/// (The thread that runs the closure also runs pieces of its own loops while it waits for
/// them; those count as outermost too. That only changes who does the work: splits never change
/// the bits.)
pub(crate) fn is_outermost() -> bool {
    rayon::current_thread_index().is_none() || STEP_RUNNER.get()
}

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

/// Elements below which a memory-bound pass over a matrix (a bias added to every row, a column
/// sum, a residual sum) stays on the calling thread: 64 Ki values (256 KiB) take ~10 µs on one
/// core, about what waking another thread and waiting for it costs.
pub(crate) const PASS_PARALLEL_MIN: usize = 1 << 16;

/// Rows per task for a pass over `rows` rows of `width` values: all of them (one task, on the
/// calling thread) below [`PASS_PARALLEL_MIN`] values, otherwise blocks of ~16 Ki values.
pub(crate) fn rows_per_task(rows: usize, width: usize) -> usize {
    if rows * width < PASS_PARALLEL_MIN { rows.max(1) } else { ((1 << 14) / width.max(1)).max(1) }
}

/// `f(first_row, block)` over blocks of whole rows of `data` (rows `width` values wide): in
/// parallel for a large matrix, one block on the calling thread for a small one. Each row is
/// visited once whatever the split, so an `f` that treats rows on their own gives the same bits
/// on any number of threads.
pub(crate) fn for_row_blocks(data: &mut [f32], width: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    if width == 0 || data.is_empty() {
        return;
    }
    let per_task = rows_per_task(data.len() / width, width);
    let blocks = data.par_chunks_mut(per_task * width).enumerate();
    blocks.with_min_len(split_if_threads(1)).for_each(|(b, block)| f(b * per_task, block));
}

/// `row += v` for every row of `rows` (each `v.len()` wide): a bias added to every sample.
/// Element by element, so the same bits on any number of threads.
pub(crate) fn add_to_rows(rows: &mut [f32], v: &[f32]) {
    for_row_blocks(rows, v.len(), |_, block| {
        for row in block.chunks_exact_mut(v.len()) {
            row.iter_mut().zip(v).for_each(|(r, b)| *r += b);
        }
    });
}

/// Column blocks for a sum down `len / width` rows of `width` values: the whole width (one task)
/// for a small matrix, otherwise `width` cut into one block per thread (a multiple of 16
/// columns). Each column is summed by one task, top to bottom: the same bits on any split.
fn column_block(width: usize, len: usize) -> usize {
    let threads = rayon::current_num_threads();
    if len < PASS_PARALLEL_MIN || threads < 2 {
        return width.max(1);
    }
    width.div_ceil(threads).next_multiple_of(16).max(16)
}

/// `dst = src` (equal lengths) as 16-byte moves: a copy the compiler does not turn into a `memcpy`
/// call. glibc's `memcpy` copies blocks of this size with `rep movsb`, which on the AMD EPYC of
/// docs/benchmarks.md crawls when the destination lies a few bytes past the source modulo 4 KiB —
/// the usual case for two heap buffers of similar size (each 16 bytes past a page start, say):
/// `Dense` keeping its input for the backward pass took 8 % of an MLP training step there
/// (`perf`: `rep movsb` at 99 % of `__memmove_avx_unaligned_erms`), where a plain copy of the
/// same 200 KB takes about 7 µs.
pub(crate) fn copy_floats(dst: &mut [f32], src: &[f32]) {
    assert_eq!(dst.len(), src.len(), "copy_floats: buffers of one length");
    let whole = src.len() / 16 * 16;
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_loadu_ps, _mm_storeu_ps};
        let (d, s) = (dst.as_mut_ptr(), src.as_ptr());
        for i in (0..whole).step_by(16) {
            // SAFETY: i + 16 ≤ whole ≤ len values at both pointers; SSE is part of x86-64.
            unsafe {
                let v = [0, 4, 8, 12].map(|j| _mm_loadu_ps(s.add(i + j)));
                for (j, v) in [0, 4, 8, 12].into_iter().zip(v) {
                    _mm_storeu_ps(d.add(i + j), v);
                }
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    dst[..whole].copy_from_slice(&src[..whole]);
    dst[whole..].copy_from_slice(&src[whole..]);
}

/// `acc += Σ_rows row`: the column sums of `rows` (rows `acc.len()` wide), added in row order —
/// a bias's gradient, `db += Σₙ gₙ`. Large matrices are cut into column blocks summed in
/// parallel; each column's sum runs in the same order either way.
pub(crate) fn add_rows(acc: &mut [f32], rows: &[f32]) {
    let width = acc.len();
    if width == 0 {
        return;
    }
    let block = column_block(width, rows.len());
    acc.par_chunks_mut(block).enumerate().with_min_len(split_if_threads(1)).for_each(|(b, acc)| {
        for (k, acc) in acc.chunks_mut(SUM_COLUMNS).enumerate() {
            let c = b * block + k * SUM_COLUMNS;
            crate::tensor::simd::wide!(column_sums(acc, rows, width, c));
        }
    });
}

/// Columns that one walk down the rows sums at a time, in running sums of its own (an array on
/// the stack) that start from the accumulator's values and are written back at the end: the same
/// additions in the same order as adding to the accumulator row by row. Adding to it row by row
/// was slow on two threads: their column blocks can meet inside one cache line of the accumulator
/// (a `Vec`'s buffer is 16-byte aligned, not 64), and that line, written at every row by both
/// cores, went back and forth between them (`perf`: layer norm's `dγ`, `dβ` sums were 4.4 % of a
/// two-thread GPT training step on the AMD EPYC, 0.6 % on one thread). Wide enough that a
/// Transformer's rows are walked once (sums of 32 columns in registers, walking the rows four
/// times for 128, were 13 % slower on one thread).
const SUM_COLUMNS: usize = 256;

/// `acc[j] += Σ_rows row[c + j]` for `acc.len() ≤ SUM_COLUMNS` columns from column `c`.
#[inline(always)]
fn column_sums(acc: &mut [f32], rows: &[f32], width: usize, c: usize) {
    let mut sums = [0.0f32; SUM_COLUMNS];
    let sums = &mut sums[..acc.len()];
    sums.copy_from_slice(acc);
    for row in rows.chunks_exact(width) {
        sums.iter_mut().zip(&row[c..]).for_each(|(s, v)| *s += v);
    }
    acc.copy_from_slice(sums);
}

/// `acc_xy += Σ_rows x ⊙ y` and `acc_x += Σ_rows x` in one walk down the rows (layer norm's
/// `dγ += Σ g ⊙ x̂`, `dβ += Σ g`), in column blocks as [`add_rows`], each summed in running sums
/// of its own (see [`SUM_COLUMNS`]).
pub(crate) fn add_rows_with_products(acc_xy: &mut [f32], acc_x: &mut [f32], x: &[f32], y: &[f32]) {
    let width = acc_x.len();
    assert_eq!(acc_xy.len(), width, "add_rows_with_products: two accumulators of one width");
    assert_eq!(x.len(), y.len(), "add_rows_with_products: x and y of one shape");
    if width == 0 {
        return;
    }
    let block = column_block(width, x.len());
    let blocks = acc_xy.par_chunks_mut(block).zip(acc_x.par_chunks_mut(block)).enumerate();
    blocks.with_min_len(split_if_threads(1)).for_each(|(b, (acc_xy, acc_x))| {
        let parts = acc_xy.chunks_mut(SUM_COLUMNS).zip(acc_x.chunks_mut(SUM_COLUMNS));
        for (k, (acc_xy, acc_x)) in parts.enumerate() {
            let c = b * block + k * SUM_COLUMNS;
            crate::tensor::simd::wide!(column_sums_with_products((acc_xy, acc_x), (x, y), width, c));
        }
    });
}

/// `acc_xy[j] += Σ_rows x[c + j]·y[c + j]` and `acc_x[j] += Σ_rows x[c + j]` for
/// `≤ SUM_COLUMNS` columns from column `c`, in running sums as [`column_sums`]'s.
#[inline(always)]
fn column_sums_with_products(
    (acc_xy, acc_x): (&mut [f32], &mut [f32]),
    (x, y): (&[f32], &[f32]),
    width: usize,
    c: usize,
) {
    let (mut sums_xy, mut sums_x) = ([0.0f32; SUM_COLUMNS], [0.0f32; SUM_COLUMNS]);
    let (sums_xy, sums_x) = (&mut sums_xy[..acc_x.len()], &mut sums_x[..acc_x.len()]);
    sums_xy.copy_from_slice(acc_xy);
    sums_x.copy_from_slice(acc_x);
    for (x_row, y_row) in x.chunks_exact(width).zip(y.chunks_exact(width)) {
        for (((s_xy, s_x), &x), &y) in
            sums_xy.iter_mut().zip(sums_x.iter_mut()).zip(&x_row[c..]).zip(&y_row[c..])
        {
            *s_xy += x * y;
            *s_x += x;
        }
    }
    acc_xy.copy_from_slice(sums_xy);
    acc_x.copy_from_slice(sums_x);
}

/// `a[i] = f(a[i], b[i])` for every element (equal lengths): in parallel blocks for large
/// buffers, on the calling thread for small ones; the same bits either way.
pub(crate) fn zip_apply(a: &mut [f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) {
    assert_eq!(a.len(), b.len(), "zip_apply: buffers of one length");
    let per_task = if a.len() < PASS_PARALLEL_MIN { a.len().max(1) } else { 1 << 14 };
    let chunks = a.par_chunks_mut(per_task).zip(b.par_chunks(per_task));
    chunks
        .with_min_len(split_if_threads(1))
        .for_each(|(a, b)| a.iter_mut().zip(b).for_each(|(a, &b)| *a = f(*a, b)));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A helper for each other thread of a pool that fits the machine's CPUs, none for a pool
    /// with more threads than CPUs.
    #[test]
    fn helpers_only_where_the_pool_fits_the_cpus() {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(helpers(1), 0);
        assert_eq!(helpers(cpus), cpus - 1);
        assert_eq!(helpers(cpus + 1), 0, "an oversubscribed pool gets no helpers");
        let over = rayon::ThreadPoolBuilder::new().num_threads(cpus + 1).build().unwrap();
        let (index, outermost) = over.install(|| on_pool(|| (rayon::current_thread_index(), is_outermost())));
        assert!(index.is_some() && outermost, "without helpers, still the step's top level on a pool thread");
    }

    /// Inside a caller's own pool (`ThreadPool::install`), `on_pool` runs its closure where it
    /// is, as the outermost level, so that its products split over that pool's threads; a pool
    /// thread outside any `on_pool` closure is not the outermost level (a task of some loop).
    #[test]
    fn on_pool_inside_a_callers_pool_is_the_outermost_level() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        let (worker, outermost, inside) = pool.install(|| {
            (
                rayon::current_thread_index(),
                is_outermost(),
                on_pool(|| (rayon::current_thread_index(), is_outermost())),
            )
        });
        assert!(
            worker.is_some() && !outermost,
            "install's closure runs on a pool thread, not as the outermost level"
        );
        assert_eq!(inside, (worker, true), "on_pool runs there, as the outermost level");
        assert!(!pool.broadcast(|_| STEP_RUNNER.get()).into_iter().any(|m| m), "no thread keeps the mark");
        let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        assert!(!one.install(|| on_pool(is_outermost)), "a pool of one thread: the closure runs as it is");
    }

    /// `on_pool` runs its closure on a pool thread (when the pool has several), which is then the
    /// outermost level; inside `as_task` it is not, and afterwards it is again; nested calls run
    /// directly; a panic reaches the caller with its message, and leaves no mark on the thread.
    #[test]
    fn on_pool_runs_the_step_on_a_pool_thread_as_the_outermost_level() {
        assert!(is_outermost(), "a test's own thread is outside the pool");
        let several = rayon::current_num_threads() > 1;
        let (index, outermost, inside_task, after_task, nested) = on_pool(|| {
            let index = rayon::current_thread_index();
            let inside_task = as_task(is_outermost);
            let nested = on_pool(rayon::current_thread_index);
            (index, is_outermost(), inside_task, is_outermost(), nested)
        });
        assert_eq!(index.is_some(), several, "on a pool thread exactly when the pool has several");
        assert!(outermost && after_task, "the closure's own level is the outermost");
        assert!(!inside_task, "as_task marks the inside of a task");
        assert_eq!(nested, index, "a nested on_pool runs where it is");
        // A loop's tasks are the outermost level on the runner's thread only.
        let on_runner: Vec<(bool, bool)> = on_pool(|| {
            let runner = rayon::current_thread_index();
            (0..64)
                .into_par_iter()
                .map(|_| (is_outermost(), rayon::current_thread_index() == runner))
                .collect()
        });
        assert!(on_runner.iter().all(|&(outermost, here)| outermost == (here || !several)));
        let panic = std::panic::catch_unwind(|| on_pool(|| -> usize { panic!("refused: 3 ≠ 4") }));
        let message = panic.expect_err("the panic reaches the caller");
        assert_eq!(message.downcast_ref::<&str>(), Some(&"refused: 3 ≠ 4"));
        assert!(on_pool(is_outermost), "a panic leaves the runner's mark cleared and set anew");
        assert!(!rayon::broadcast(|_| STEP_RUNNER.get()).into_iter().any(|m| m), "no thread keeps the mark");
    }

    /// A matrix of `rows × width` distinct, awkward values (no two sums round alike).
    fn matrix(rows: usize, width: usize) -> Vec<f32> {
        (0..rows * width).map(|i| ((i * 7919 % 1013) as f32 - 500.0) / 37.0).collect()
    }

    /// `copy_floats` copies every value, NaN payloads and signed zeros included, for lengths
    /// around its 16-value blocks, at offsets that put the destination a few bytes past the
    /// source; and `Tensor::copy_from` (which uses it) gives an equal tensor, shrinking or growing,
    /// on one thread and (the last, above the parallel threshold) in parallel blocks.
    #[test]
    fn copies_are_exact() {
        let src: Vec<f32> =
            (0..100).map(|i| f32::from_bits(0x7fc0_0001 + i * 977)).chain([-0.0, 0.0]).collect();
        for len in [0, 1, 15, 16, 17, 33, 102] {
            for offset in [0, 1, 4] {
                let mut dst = vec![1.0f32; len + offset];
                copy_floats(&mut dst[offset..], &src[..len]);
                let same = dst[offset..].iter().zip(&src).all(|(d, s)| d.to_bits() == s.to_bits());
                assert!(same && dst[..offset].iter().all(|&v| v == 1.0), "length {len}, offset {offset}");
            }
        }
        let mut t = crate::Tensor::zeros(&[3, 70]);
        for shape in [vec![2, 5], vec![4, 50], vec![(1 << 17) + 5]] {
            let src = crate::Tensor::from_fn(&shape, |i| i.iter().sum::<usize>() as f32 - 7.5);
            for threads in [1, 2] {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                pool.install(|| t.copy_from(&src));
                assert!(
                    t == src,
                    "copy_from into a buffer of another size, shape {shape:?}, {threads} threads"
                );
            }
        }
    }

    /// The plain definitions: the serial loops, summing each column top to bottom.
    fn add_rows_plain(acc: &mut [f32], rows: &[f32]) {
        for row in rows.chunks_exact(acc.len()) {
            for (a, v) in acc.iter_mut().zip(row) {
                *a += v;
            }
        }
    }

    /// Run `f` inside pools of 1, 2 and 3 threads.
    fn on_pools(f: impl Fn() + Send + Sync) {
        for threads in [1, 2, 3] {
            rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(&f);
        }
    }

    /// Column sums, with and without the split (small and large matrices, widths that are and are
    /// not multiples of 16, one column), equal the serial loop bit for bit on any thread count.
    #[test]
    fn column_sums_are_the_serial_loop() {
        on_pools(|| {
            for (rows, width) in [(3, 5), (2048, 128), (1000, 77), (70_000, 1), (300, 520)] {
                let x = matrix(rows, width);
                let y: Vec<f32> = x.iter().rev().copied().collect();
                let (mut want, mut got) = (vec![0.25; width], vec![0.25; width]);
                add_rows_plain(&mut want, &x);
                add_rows(&mut got, &x);
                assert_eq!(got, want, "add_rows {rows}×{width}");
                let (mut want_xy, mut got_xy, mut got_x) =
                    (vec![0.5; width], vec![0.5; width], vec![0.25; width]);
                for (x_row, y_row) in x.chunks_exact(width).zip(y.chunks_exact(width)) {
                    for j in 0..width {
                        want_xy[j] += x_row[j] * y_row[j];
                    }
                }
                add_rows_with_products(&mut got_xy, &mut got_x, &x, &y);
                assert_eq!((got_xy, got_x), (want_xy, want), "add_rows_with_products {rows}×{width}");
            }
        });
    }

    /// Row passes (a bias added to every row, an element-wise sum) equal the serial loops.
    #[test]
    fn row_passes_are_the_serial_loop() {
        on_pools(|| {
            for (rows, width) in [(3, 5), (2048, 128), (1000, 77), (70_000, 1)] {
                let v: Vec<f32> = (0..width).map(|j| j as f32 * 0.37 - 1.0).collect();
                let mut want = matrix(rows, width);
                let mut got = want.clone();
                for row in want.chunks_exact_mut(width) {
                    row.iter_mut().zip(&v).for_each(|(r, b)| *r += b);
                }
                add_to_rows(&mut got, &v);
                assert_eq!(got, want, "add_to_rows {rows}×{width}");
                let b = matrix(width, rows);
                want.iter_mut().zip(&b).for_each(|(a, b)| *a += 0.5 * b);
                zip_apply(&mut got, &b, |a, b| a + 0.5 * b);
                assert_eq!(got, want, "zip_apply {rows}×{width}");
            }
        });
    }
}
