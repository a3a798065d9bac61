//! The crate's own GEMM for a right-hand matrix used many times: `B` packed once ([`PackedB`]),
//! then multiplied tile by tile by the [`microkernel`](super::microkernel)s. The recurrent layers'
//! weight `W_hh` multiplies the state at every step of a sequence; packed once per pass, each
//! step's product `h_{t−1}·W_hhᵀ` reads its small `A` in place. (`matrixmultiply`, which computes
//! most other products in the crate, packs both operands at every call.)
//!
//! For `C[m, n] = alpha · A[m, k] · B[k, n] + beta · C`:
//!
//! ```text
//! B packed once: panels of NR columns, each k × NR, p-major
//! for each block of NC columns jc:
//! for each block of KC steps pc:                   (blocks of equal size, at most KC)
//!     for each block of MC rows ic:                A read in place (rows lda apart)
//!         for each panel jr:                       one panel's KC rows stay in L1 …
//!             for each MR rows ir:                 … while A's rows stream past them
//!                 C[ir, jr] = alpha · A[ir, pc] · panel + (beta on the first block, else 1) · C[ir, jr]
//! ```
//!
//! Each element of `C` is a chain of fused multiply-adds over `p = 0 … k−1` in order, cut at the
//! same `KC` boundaries whatever rows are computed together: so a row of `C` has the same bits
//! however the rows are split across threads.
//!
//! Weight gradients `Gᵀ·X` summed over many rows ([`gemm_long_sum`]) copy both operands block
//! by block instead — `B`'s block of steps into panels, `Gᵀ`'s into slivers — as in the classic
//! blocked GEMM, and take the bias's gradient `Σ G` during the copy. Two products over the same
//! `G` (an LSTM's `Gᵀ·X` and `Gᵀ·H`) share one copy of it.
//!
//! Also used, `B` packed at each call, for the tall products of [`sgemm`](super::gemm::sgemm)
//! (`[N·T, E]` against `[E, 3E]`: a Transformer's projections), where it keeps up with or beats
//! `matrixmultiply` (figures at `gemm::is_tall`). Tried and dropped: the same for every product
//! of the crate: slower on the Intel Xeon of the benchmarks for short `A`s (convnet training step
//! 2 threads 5,793–5,850 vs 6,426–6,577 images/s, MLP 46,238–51,044 vs 57,154–57,850 samples/s,
//! alternating builds), so `matrixmultiply` keeps most of those. Two short shapes came back
//! another way (`gemm::is_short_against_wide`, `gemm::is_short_sum`): a short batch against a
//! wide weight as its transpose `W·xᵀ` (the weight read in place, the batch packed), and a weight
//! gradient over a short batch with `Gᵀ` read in place by columns — first measured on the AMD
//! EPYC (AVX2); since then with a classifier's narrow head (fewer than 16 outputs) on both, on
//! the AMD EPYC with AVX-512 too.
//!
//! The plain definition is [`gemm_reference`](super::gemm_reference::gemm_reference); the tests
//! compare with it.

use super::microkernel::{Kernels, kernels};

/// Steps of the sum per block: a panel's `KC × NR` values (32 KiB for AVX-512's 32 columns at
/// 256) stay in a 48 KiB L1 cache while the slivers of `A` stream past them.
const KC: usize = 256;
/// Rows of `A` packed at a time: `MC × KC` (144 KiB) stays in L2.
const MC: usize = 144;
/// Columns of `B` per block (a multiple of every kernel's `NR`): `KC × NC` (1 MiB) stays in L2.
pub(crate) const NC: usize = 1024;

/// A matrix operand as a pointer and two strides: element `(i, p)` is at `ptr + i·rs + p·cs`.
#[derive(Clone, Copy)]
pub(crate) struct Strided {
    /// The element `(0, 0)`.
    pub ptr: *const f32,
    /// Elements from one row to the next.
    pub rs: isize,
    /// Elements from one column to the next.
    pub cs: isize,
}

/// `op(B)` (`[k, n]`) packed once for the kernels of this CPU: `n.div_ceil(nr)` panels of `k × nr`
/// values (p-major, the last panel zero-padded). Where the CPU has no kernel here, `op(B)`
/// row-major (for `matrixmultiply`). Optionally with a bias ([`PackedB::set_bias`]) that every
/// product with it adds to each row of `C`.
#[derive(Default)]
pub(crate) struct PackedB {
    k: usize,
    n: usize,
    /// Panel width: 0 when `data` is `op(B)` row-major.
    nr: usize,
    data: Vec<f32>,
    /// The bias, zero-padded to whole panels (a tile reads `nr` values); empty: none.
    bias: Vec<f32>,
}

impl PackedB {
    /// Packs `op(B)`: `b` holds `[k, n]` row-major, or `[n, k]` when `transposed`. Reuses the
    /// buffer (no allocation once it is large enough).
    ///
    /// # Panics
    /// If `b.len() != k·n`.
    pub fn pack(&mut self, k: usize, n: usize, b: &[f32], transposed: bool) {
        self.pack_for(kernels(), k, n, b, transposed);
    }

    /// [`pack`](Self::pack) for the kernel family `kern` (`None`: row-major for
    /// `matrixmultiply`) rather than this CPU's: the tests pack for every family's geometry.
    fn pack_for(&mut self, kern: Option<&Kernels>, k: usize, n: usize, b: &[f32], transposed: bool) {
        assert_eq!(Some(b.len()), k.checked_mul(n), "PackedB: {} values for a {k}×{n} matrix", b.len());
        let (rs, cs) = if transposed { (1, k) } else { (n, 1) };
        (self.k, self.n) = (k, n);
        self.bias.clear(); // a new matrix: no bias until one is set
        match kern {
            Some(kern) => {
                self.nr = kern.nr;
                let nr = kern.nr;
                // Every value of the panels is written below, the last one's padding included:
                // the buffer only grows, and values past the panels are never read. (A zero-fill
                // of the whole buffer at every call had been a third of the packing's time.)
                let len = n.div_ceil(nr) * k * nr;
                if self.data.len() < len {
                    self.data.resize(len, 0.0);
                }
                let panels = &mut self.data[..len];
                // (With k = 0, an empty sum, there are no panel values at all.)
                if k > 0 {
                    if transposed {
                        // Column j of op(B) is row j of the stored matrix: a panel is the
                        // transpose of `nr` stored rows (8 × 8 blocks in registers; value by
                        // value, a strided write each, a [384, 128] weight had taken 47 µs).
                        for j0 in (0..n).step_by(nr) {
                            let cols = nr.min(n - j0);
                            let (src, dst) = ((&b[j0 * k..], k), (&mut panels[j0 * k..], nr));
                            super::transpose::transpose((cols, k), src, dst);
                        }
                    } else {
                        match nr {
                            16 => pack_rows::<16>(k, n, b, panels),
                            32 => pack_rows::<32>(k, n, b, panels),
                            _ => unreachable!("PackedB: panels of {nr}"),
                        }
                    }
                    if !n.is_multiple_of(nr) {
                        // The last panel's padding columns: zeros.
                        let (last, cols) = (n / nr, n % nr);
                        let dst = &mut panels[last * k * nr..];
                        dst.chunks_exact_mut(nr).for_each(|row| row[cols..].fill(0.0));
                    }
                }
            }
            None => {
                self.nr = 0;
                self.data.clear();
                self.data.extend((0..k * n).map(|e| b[(e / n) * rs + (e % n) * cs]));
            }
        }
    }

    /// Values this buffer holds room for (its panels and its bias).
    pub fn capacity(&self) -> usize {
        self.data.capacity() + self.bias.capacity()
    }

    /// Sets the bias (`n` values, after [`pack`](Self::pack)) that products with this matrix add to
    /// every row of `C`, each tile as soon as its last block of the sum is stored: `x·Wᵀ + b` with
    /// no pass over `C` afterwards (the same two roundings as adding it then). Reuses the buffer.
    ///
    /// # Panics
    /// If `bias.len() != n`.
    pub fn set_bias(&mut self, bias: &[f32]) {
        assert_eq!(bias.len(), self.n, "PackedB: a bias of {} values for {} columns", bias.len(), self.n);
        let padded = if self.nr == 0 { self.n } else { self.n.div_ceil(self.nr) * self.nr };
        self.bias.clear();
        self.bias.extend_from_slice(bias);
        self.bias.resize(padded, 0.0);
    }

    /// True if packed for `kern` (false if packed for `matrixmultiply`, or for another family:
    /// the ISA cannot change within a process, so only an empty `PackedB` is not `kern`'s).
    fn is_for(&self, kern: &Kernels) -> bool {
        self.nr == kern.nr && self.nr != 0
    }

    /// The raw row-major `op(B)` when packed for `matrixmultiply`.
    pub(crate) fn row_major(&self) -> Option<&[f32]> {
        (self.nr == 0).then_some(&self.data[..])
    }
}

/// `B` (`[k, n]` row-major) into panels of `NR` columns (`panels` as [`PackedB`] lays them out),
/// the padding of a partial last panel left alone. Whole panel rows are `NR`-value copies of a
/// size known to the compiler — moves in registers, where a `memcpy` call for each had cost more
/// than the copying (a convolution's `[288, 121]` columns: 14 µs with the zero-fill, now 8).
/// Panel by panel, so that the writes run straight through `panels`: row by row of `B` instead,
/// each row's copies land a panel (`k·NR` values) apart, on the same few sets of the L1 cache,
/// and evict each other (the MLP's batch, `[64, 784]`, packed in 9.0 µs, now 3.8).
fn pack_rows<const NR: usize>(k: usize, n: usize, b: &[f32], panels: &mut [f32]) {
    let whole = n / NR * NR;
    let rows = || b.chunks_exact(n.max(1)).take(k).enumerate();
    for j0 in (0..whole).step_by(NR) {
        for (p, b_p) in rows() {
            let dst: &mut [f32; NR] = (&mut panels[j0 * k + p * NR..][..NR]).try_into().expect("NR values");
            *dst = b_p[j0..][..NR].try_into().expect("NR values");
        }
    }
    if whole < n {
        for (p, b_p) in rows() {
            panels[whole * k + p * NR..][..n - whole].copy_from_slice(&b_p[whole..]);
        }
    }
}

/// Where a product's `C` lies: element `(i, j)` at `ptr + i·ldc + (j / width)·stride + j % width`.
/// Row-major (`width` at least `n`: [`COut::rows`]), or in blocks of `width` columns, each its own
/// row-major matrix `stride` values after the one before ([`COut::in_blocks`]): a projection
/// whose heads' columns each form a block, so that a head's rows lie next to each other.
#[derive(Clone, Copy)]
pub(crate) struct COut {
    /// Element `(0, 0)`.
    pub ptr: *mut f32,
    /// Elements from one row to the next (within a block).
    pub ldc: usize,
    /// Columns per block (`usize::MAX`: one block).
    pub width: usize,
    /// Elements from one block to the next.
    pub stride: usize,
}

impl COut {
    /// Row-major, rows `ldc` apart.
    pub(crate) fn rows(ptr: *mut f32, ldc: usize) -> COut {
        COut { ptr, ldc, width: usize::MAX, stride: 0 }
    }

    /// `m` rows in blocks of `width` columns: block `b` is the `[m, width]` matrix at `ptr + b·m·width`.
    pub(crate) fn in_blocks(ptr: *mut f32, m: usize, width: usize) -> COut {
        COut { ptr, ldc: width, width, stride: m * width }
    }

    /// Element `(i, j)`.
    ///
    /// # Safety
    /// `(i, j)` must lie inside the matrix this layout describes.
    unsafe fn at(&self, i: usize, j: usize) -> *mut f32 {
        // SAFETY: inside the matrix (the caller's promise).
        unsafe { self.ptr.add(i * self.ldc + (j / self.width) * self.stride + j % self.width) }
    }

    /// Whether some panel of `nr` columns would straddle two blocks: blocks of `nr / 2` columns,
    /// or an odd number of them — each panel then runs as two half-width tiles.
    fn splits_panels(&self, nr: usize) -> bool {
        self.width != usize::MAX && !self.width.is_multiple_of(nr)
    }

    /// The same layout from row `i` on (the rows below it).
    ///
    /// # Safety
    /// Row `i` must lie inside the matrix.
    pub(crate) unsafe fn below(self, i: usize) -> COut {
        // SAFETY: inside the matrix (the caller's promise).
        COut { ptr: unsafe { self.ptr.add(i * self.ldc) }, ..self }
    }
}

/// `C[m, n] = alpha · A · B + beta · C` with `kern`, on one thread; `C` has row stride `ldc`.
/// `k ≥ 1` (the caller handles an empty sum). With `B`'s bias ([`PackedB::set_bias`]), each row
/// of `C` then gets `+ bias` — added to each tile as soon as its last block of the sum is stored,
/// while it is in L1, instead of by a pass over all of `C` afterwards (the same two roundings
/// either way).
///
/// # Safety
/// `a` must describe a readable `m × k` matrix with contiguous rows (`cs == 1`) or columns (`rs == 1`) and `b` must be
/// packed for `kern` with `k` rows and `n` columns; `c` must point at `m` rows of `n` writable
/// values, `ldc` apart, that nothing else reads or writes meanwhile.
#[allow(clippy::too_many_arguments)] // a GEMM's operands
pub(crate) unsafe fn gemm(
    kern: &Kernels,
    m: usize,
    a: Strided,
    b: &PackedB,
    alpha: f32,
    beta: f32,
    c: *mut f32,
    ldc: usize,
) {
    // SAFETY: passed on (the caller's guarantee).
    unsafe { gemm_into(kern, m, a, b, (alpha, beta), COut::rows(c, ldc)) }
}

/// [`gemm`] into `C` laid out as [`COut`] says (blocks of columns a whole number of the kernel's
/// panels wide, or of half panels with half-width tiles, so that no tile straddles two).
///
/// # Safety
/// As [`gemm`], with `c` describing `m × n` writable values.
pub(crate) unsafe fn gemm_into(
    kern: &Kernels,
    m: usize,
    a: Strided,
    b: &PackedB,
    (alpha, beta): (f32, f32),
    c: COut,
) {
    let narrowest = kern.narrowest();
    assert!(
        c.width == usize::MAX || c.width.is_multiple_of(narrowest),
        "gemm: blocks of {} columns for panels of {}",
        c.width,
        kern.nr
    );
    debug_assert!(b.k > 0 && b.is_for(kern) && (a.cs == 1 || a.rs == 1));
    // SAFETY: rows ic .. and steps p .. of A are readable (the caller's guarantee), and
    // `in_blocks` asks only for blocks inside the m × k matrix.
    let a_at = |ic: usize, p: usize| unsafe {
        if a.cs == 1 {
            ABlock::InPlace { ptr: a.ptr.offset(ic as isize * a.rs + p as isize), rs: a.rs as usize }
        } else {
            ABlock::ByColumns { ptr: a.ptr.offset(ic as isize + p as isize * a.cs), ld: a.cs as usize }
        }
    };
    // SAFETY: passed on (the caller's guarantee); one run of all k steps.
    unsafe { in_blocks(kern, m, (1, b.k), b, a_at, (alpha, beta), c) };
}

/// The loops of [`gemm`] and [`gemm_packed_b_in_runs`]: `C[m, n] = alpha · A · B + beta · C (+
/// B's bias)` block by block, the sum's `k = runs · len` steps taken run by run, each run in equal
/// blocks of at most `KC` ([`block_of_steps`]); `a_at(ic, p)` is `A`'s block from row `ic` and
/// step `p` (its run's own addressing).
///
/// ```text
/// for each block of NC columns jc:
/// for each run, each block of ≤ KC of its steps pc:  (beta on the first block, else 1)
///     for each block of MC rows ic:                  multiply_block
/// ```
///
/// # Safety
/// `a_at(ic, p)` must describe readable rows `ic .. ic + MC` (or to `m`) of `A` from step `p`
/// for the block's steps; `b` packed for `kern` with `k ≥ 1` rows; `c` as for [`gemm`].
#[allow(clippy::too_many_arguments)] // a GEMM's operands
#[inline(always)] // (each caller's own copy, as the loops were before they were shared)
unsafe fn in_blocks(
    kern: &Kernels,
    m: usize,
    (runs, len): (usize, usize),
    b: &PackedB,
    a_at: impl Fn(usize, usize) -> ABlock,
    (alpha, beta): (f32, f32),
    c: COut,
) {
    let (k, n, nr) = (b.k, b.n, kern.nr);
    debug_assert_eq!(runs * len, k, "runs of steps covering the sum");
    let kc_max = block_of_steps(len);
    for jc in (0..n).step_by(NC) {
        let nc = NC.min(n - jc);
        for run in 0..runs {
            for q in (0..len).step_by(kc_max) {
                let (pc, kc) = (run * len + q, kc_max.min(len - q)); // steps pc .. pc + kc of B
                let beta = if pc == 0 { beta } else { 1.0 }; // later blocks add to the first's sum
                // The bias with the last block of the sum only; the padded bias holds nr values
                // from each panel's first column.
                let bias = (!b.bias.is_empty() && pc + kc == k).then(|| &b.bias[jc..]);
                // Panel jc / nr, rows pc …: inside the packed data; panels k·nr apart.
                let panels = (b.data[(jc / nr) * k * nr + pc * nr..].as_ptr(), k * nr);
                for ic in (0..m).step_by(MC) {
                    let mc = MC.min(m - ic);
                    // SAFETY: A's block from row ic, step pc (the caller's guarantee, through
                    // a_at); the panels hold kc·nr values each from their row pc; the block of C
                    // is the caller's to write.
                    unsafe {
                        let a_block = a_at(ic, pc);
                        multiply_block(kern, (mc, nc, kc), a_block, panels, (alpha, beta), bias, c, (ic, jc));
                    }
                }
            }
        }
    }
}

/// One output of [`gemm_long_sum`]: `C = alpha · Aᵀ · B + beta · C` for this `B` (`k` rows of `n`
/// values, `ldb` apart) into this `C` (`m` rows of `n`, `ldc` apart), and with `sums` (`m`
/// values) `sums[i] += Σ_p A[p, i]` — over the first `m` of `A`'s columns, all of them or fewer.
pub(crate) struct LongSumOutput<'s> {
    /// Rows of `C`: `A`'s first `m` columns (at least 1, at most the call's `m`).
    pub m: usize,
    /// `B`'s first element and row stride.
    pub b: (*const f32, usize),
    /// Columns of `B` and `C` (at least 1).
    pub n: usize,
    /// `C`'s first element and row stride.
    pub c: (*mut f32, usize),
    /// Column sums of `A` to add to, or none.
    pub sums: Option<&'s mut [f32]>,
}

/// `C = alpha · Aᵀ · B + beta · C` for `A` `[k, m]` (rows `lda` apart) and each output's `B` and
/// `C` ([`LongSumOutput`]), on one thread with `kern`: a long sum (`k` ≫ `m`, `n`) such as a weight
/// gradient `Gᵀ·X` over every sample and step — or several over the same rows, `Gᵀ·X` and `Gᵀ·H`
/// for an LSTM's two weights, where `A` is copied once for all of them. `k ≥ 1`. An output may
/// take only `A`'s first columns (its own `m`): a GRU's `dW_ih` reads the reset and update gates'
/// columns of the `G` whose every column `dW_hh` reads.
///
/// Both operands are copied block by block, as in the classic blocked GEMM: `B`'s block of `KC`
/// steps into panels (kept in L2 while every block of `A`'s rows passes), `Aᵀ`'s block of
/// `MC × KC` into slivers of `mr` rows, step by step ([`pack_panels`] for both: for `Aᵀ` and for
/// `B` alike, a step's values are adjacent in a stored row). Read in place instead, a tile's
/// `KC` steps of `Aᵀ` would touch `KC` rows of `A` as far apart as `A` is wide — a page each, more
/// than the TLB holds (tried: the LSTM's training step 24 % slower); and `B` packed whole at once
/// (as [`PackedB`]) is written to memory and read back. Each element of `C` is the same chain of
/// multiply-adds as in [`gemm`], with one output or several (the tests compare them bit for bit).
///
/// With an output's `sums`, also `sums[i] += Σ_p A[p, i]` in order of `p`, as
/// [`add_rows`](super::parallel::add_rows) would add `A`'s rows (the same bits): a bias's
/// gradient `Σ G` summed while `G` is copied anyway, instead of by a pass of its own.
///
/// # Safety
/// `a` must point at `k` rows of `m` readable values, `lda` apart, and each output's `b` and `c`
/// as [`LongSumOutput`] says, every `C` writable and touched by nothing else meanwhile, no two
/// outputs' `C`s overlapping; `kern`'s tiles must run on this CPU.
pub(crate) unsafe fn gemm_long_sum(
    kern: &Kernels,
    (m, k): (usize, usize),
    alpha: f32,
    (a, lda): (*const f32, usize),
    beta: f32,
    outputs: &mut [LongSumOutput<'_>],
) {
    let (mr, nr) = (kern.mr, kern.nr);
    assert!(k > 0, "gemm_long_sum: an empty sum");
    assert!(outputs.len() <= MAX_SUMS, "gemm_long_sum: at most {MAX_SUMS} outputs");
    for out in outputs.iter() {
        assert!(out.n > 0, "gemm_long_sum: an output with no columns");
        assert!((1..=m).contains(&out.m), "gemm_long_sum: an output of {} of {m} rows", out.m);
        assert!(
            out.sums.as_ref().is_none_or(|s| s.len() == out.m),
            "gemm_long_sum: one column sum per row of C"
        );
    }
    // Each output's last row: the blocks of A's columns below end there too, so that a block lies
    // wholly inside or wholly past an output's rows.
    let mut ends = [m; MAX_SUMS];
    ends.iter_mut().zip(outputs.iter()).for_each(|(end, out)| *end = out.m);
    let kc_max = block_of_steps(k);
    // A narrow `A` is read in place instead of copied: a block's KC rows of at most
    // `NARROW_A` values stay within a few dozen pages (see `NARROW_A`).
    let a_in_place = lda <= NARROW_A;
    // Each output's panels for a block of columns: its own region of the buffer.
    let region = |n: usize| NC.min(n).div_ceil(nr) * nr * kc_max;
    // This thread's buffers, taken for the call and given back after it (no allocation per
    // product once they have grown).
    let mut slivers = SLIVERS.take();
    let mut panels = PANELS.take();
    let grow = |buffer: &mut Vec<f32>, len: usize| {
        if buffer.len() < len {
            buffer.resize(len, 0.0);
        }
    };
    if !a_in_place {
        grow(&mut slivers, MC.div_ceil(mr) * mr * kc_max);
    }
    grow(&mut panels, outputs.iter().map(|o| region(o.n)).sum());
    let n_max = outputs.iter().map(|o| o.n).max().unwrap_or(0);
    for jc in (0..n_max).step_by(NC) {
        // Each output's columns in this block (0 once its columns are done).
        let nc = |out: &LongSumOutput<'_>| NC.min(out.n.saturating_sub(jc));
        for pc in (0..k).step_by(kc_max) {
            let kc = kc_max.min(k - pc);
            let beta = if pc == 0 { beta } else { 1.0 }; // later blocks add to the first's sum
            let mut at = 0;
            for out in outputs.iter() {
                if nc(out) > 0 {
                    let (b, ldb) = out.b;
                    // SAFETY: rows pc .. pc + kc of this B hold columns jc .. jc + nc (the caller's
                    // guarantee), and its region of `panels` holds nc.div_ceil(nr)·nr·kc values.
                    unsafe {
                        pack_panels(
                            nr,
                            (nc(out), kc),
                            (b.add(pc * ldb + jc), ldb),
                            &mut panels[at..],
                            &mut [],
                        )
                    };
                }
                at += region(out.n);
            }
            for (ic, mc) in row_blocks(m, &ends) {
                {
                    // A's column sums with the first block of columns only (A is copied again for
                    // each), into every output's sums.
                    let mut sums: [&mut [f32]; MAX_SUMS] = Default::default();
                    let mut count = 0;
                    for out in outputs.iter_mut().filter(|out| jc == 0 && ic < out.m) {
                        if let Some(s) = out.sums.as_deref_mut() {
                            sums[count] = &mut s[ic..ic + mc];
                            count += 1;
                        }
                    }
                    // SAFETY: rows pc .. pc + kc of A hold columns ic .. ic + mc (the caller's
                    // guarantee); `slivers` holds MC.div_ceil(mr)·mr·kc_max values.
                    unsafe {
                        let a_block = (a.add(pc * lda + ic), lda);
                        if a_in_place {
                            add_column_sums((mc, kc), a_block, &mut sums[..count]);
                        } else {
                            pack_panels(mr, (mc, kc), a_block, &mut slivers, &mut sums[..count]);
                        }
                    }
                }
                let mut at = 0;
                for out in outputs.iter() {
                    let (c, ldc) = out.c;
                    if nc(out) > 0 && ic < out.m {
                        // SAFETY: this output's panels (at its region) hold kc·nr values per panel,
                        // the slivers mc rows of kc; the block of C is the caller's to write.
                        unsafe {
                            let a_block = if a_in_place {
                                ABlock::ByColumns { ptr: a.add(pc * lda + ic), ld: lda }
                            } else {
                                ABlock::Slivers(slivers.as_ptr())
                            };
                            let b_panels = (panels[at..].as_ptr(), kc * nr);
                            let c_out = COut::rows(c, ldc);
                            multiply_block(
                                kern,
                                (mc, nc(out), kc),
                                a_block,
                                b_panels,
                                (alpha, beta),
                                None,
                                c_out,
                                (ic, jc),
                            );
                        }
                    }
                    at += region(out.n);
                }
            }
        }
    }
    SLIVERS.set(slivers);
    PANELS.set(panels);
}

/// [`gemm_long_sum`]'s blocks of `A`'s columns (`C`'s rows), `(first, count)`: at most `MC` each,
/// from 0 to `m`, cut at every one of `ends` as well.
fn row_blocks(m: usize, ends: &[usize]) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut ic = 0;
    std::iter::from_fn(move || {
        let end = ends.iter().copied().filter(|&e| e > ic).fold(m, usize::min);
        (ic < m).then(|| {
            let block = (ic, MC.min(end - ic));
            ic += block.1;
            block
        })
    })
}

/// The widest `A` (values from one stored row to the next) that [`gemm_long_sum`] reads in place
/// rather than copying into slivers: a tile's `KC` steps then touch `KC` rows at most 512 bytes
/// apart, 32 pages, which the TLB holds (the LSTM's 800-wide gradients, read in place, had cost
/// its training step 24 %). For an attention layer's projections over `N·T` rows of 64 values
/// (SAKT's), the copy was as long as a third of the product.
const NARROW_A: usize = 128;

/// `sums[s][j] += src[p, j]` for `p = 0 … kc−1` in order, `j < cols`, for each set of sums: the
/// column sums [`pack_panels`] takes while it copies, for an `A` read in place (the same bits).
///
/// # Safety
/// `src` must point at `kc` rows of `cols` readable values, `ld` apart.
unsafe fn add_column_sums(
    (cols, kc): (usize, usize),
    (src, ld): (*const f32, usize),
    sums: &mut [&mut [f32]],
) {
    /// One set of sums over `kc` rows of `src` (`ld` apart), as an index loop (compiled under
    /// `wide!`: see `simd`'s docs).
    #[inline(always)]
    fn add(sum: &mut [f32], (cols, kc): (usize, usize), (src, ld): (&[f32], usize)) {
        let sum = &mut sum[..cols];
        for p in 0..kc {
            let row = &src[p * ld..][..cols];
            for j in 0..cols {
                sum[j] += row[j];
            }
        }
    }
    if kc == 0 || cols == 0 {
        return;
    }
    // SAFETY: `kc` rows of `cols` readable values, `ld` apart (the caller's promise).
    let src = unsafe { std::slice::from_raw_parts(src, (kc - 1) * ld + cols) };
    for sum in sums.iter_mut() {
        crate::tensor::simd::wide!(add(sum, (cols, kc), (src, ld)));
    }
}

/// The most outputs (and so column sums) one [`gemm_long_sum`] takes.
pub(crate) const MAX_SUMS: usize = 2;

/// The steps of the sum per block: equal blocks of at most `KC` (300 steps are 150 + 150, not
/// 256 + 44).
fn block_of_steps(k: usize) -> usize {
    k.div_ceil(k.div_ceil(KC))
}

/// Where a block of `A`'s rows comes from.
#[derive(Clone, Copy)]
enum ABlock {
    /// Read in place: row `i`, step `p` at `ptr + i·rs + p`.
    InPlace { ptr: *const f32, rs: usize },
    /// Copied into slivers of `mr` rows ([`pack_panels`]).
    Slivers(*const f32),
    /// Read in place, stored by columns: row `i`, step `p` at `ptr + i + p·ld` (a convolution's
    /// `cols`, `[C·kh·kw, pixels]`, is `Aᵀ` for `A` = one row per pixel).
    ByColumns { ptr: *const f32, ld: usize },
}

/// One block: `C[mc, nc] = alpha · A[mc, kc] · B[kc, nc] + beta · C (+ bias)`, panel by panel
/// (each panel's `kc × nr` values stay in L1 while the block's rows of `A` stream past them),
/// `mr` rows at a time. `panels = (first, stride)`: panel `q`'s `kc` steps start at
/// `first + q·stride`. The block is `C`'s rows `ic ..` and columns `jc ..`. Where `C`'s blocks
/// of columns cut panels in half (blocks `nr / 2` wide, or an odd number of halves:
/// [`COut::splits_panels`]), each panel runs as two half-width tiles, the second reading the
/// second half of each step's `nr` packed values — the same bits as one tile.
///
/// # Safety
/// `a` must hold `mc` rows of `kc` steps (as its variant says), each panel `kc · nr` values, `bias`
/// (when given) `nc.div_ceil(nr) · nr` values; `c` must describe writable values at rows `ic ..
/// ic + mc` and columns `jc .. jc + nc` that nothing else touches meanwhile, its blocks a whole
/// number of half panels (`jc` too); `kern`'s tiles must run on this CPU.
#[allow(clippy::too_many_arguments)] // a block's operands
unsafe fn multiply_block(
    kern: &Kernels,
    (mc, nc, kc): (usize, usize, usize),
    a: ABlock,
    (panels, panel_stride): (*const f32, usize),
    (alpha, beta): (f32, f32),
    bias: Option<&[f32]>,
    c: COut,
    (ic, jc): (usize, usize),
) {
    let (mr, nr) = (kern.mr, kern.nr);
    // Each panel as one tile of nr columns, or as two of nr / 2 (the half-width tiles).
    let part = if c.splits_panels(nr) { nr / 2 } else { nr };
    assert!(part >= kern.narrowest(), "gemm: blocks of half panels need half-width tiles");
    for panel in 0..nc.div_ceil(nr) {
        for i0 in (0..mc).step_by(mr) {
            let rows = mr.min(mc - i0);
            for j0 in (panel * nr..nc.min(panel * nr + nr)).step_by(part) {
                let cols = part.min(nc - j0);
                let bias_j = bias.map_or(std::ptr::null(), |bias| bias[j0..].as_ptr());
                // SAFETY: rows i0 .. i0 + rows ≤ mc of A's block and the panel's kc·nr values are
                // readable (a half tile reads nr / 2 of each step's nr, from j0 − panel·nr on),
                // the tile's rows and columns j0 .. j0 + cols ≤ nc of C writable (the caller's
                // guarantee), inside one block of C.
                unsafe {
                    let (a_tile, lda, tiles) = match a {
                        ABlock::InPlace { ptr, rs } => (ptr.add(i0 * rs), rs, kern.tiles(false, cols)),
                        ABlock::Slivers(ptr) => (ptr.add(i0 * kc), mr, kern.tiles(true, cols)),
                        ABlock::ByColumns { ptr, ld } => (ptr.add(i0), ld, kern.tiles(true, cols)),
                    };
                    let b_part = panels.add(panel * panel_stride + (j0 - panel * nr));
                    let tile = tiles[rows - 1];
                    tile(kc, a_tile, lda, b_part, (alpha, beta), bias_j, c.at(ic + i0, jc + j0), c.ldc, cols);
                }
            }
        }
    }
}

thread_local! {
    /// [`gemm_long_sum`]'s slivers of `Aᵀ`: one buffer per thread, kept between calls.
    static SLIVERS: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
    /// [`gemm_long_sum`]'s panels of `B`: one buffer per thread, kept between calls.
    static PANELS: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Copies `kc` stored rows of `cols` values (`src + p·ld + j`, `p < kc`, `j < cols`) into panels
/// of `width` columns, step by step: element `(p, j)` at `panels[(j / width)·width·kc + p·width +
/// j % width]`, a last partial panel zero-padded. With `width = nr` these are `B`'s panels; with
/// `width = mr` and `A` stored `[k, m]` they are the slivers of `Aᵀ`. Each panel is filled in one
/// pass down the rows (tried: row by row across all panels, no faster on the AMD host).
///
/// With `sums` (each `cols` values, at most [`MAX_SUMS`]), also `sums[j] += src[p, j]` for
/// `p = 0 … kc−1` in order, into each — the column sums of the block, as
/// [`add_rows`](super::parallel::add_rows) adds them (the same bits), while the values pass
/// through registers anyway.
///
/// # Safety
/// `src` must point at `kc` rows of `cols` readable values, `ld` apart; `panels` must hold at least
/// `cols.div_ceil(width) · width · kc` values.
#[allow(unused_unsafe)] // (`wide!`'s own unsafe block sits inside this function's)
unsafe fn pack_panels(
    width: usize,
    (cols, kc): (usize, usize),
    (src, ld): (*const f32, usize),
    panels: &mut [f32],
    sums: &mut [&mut [f32]],
) {
    /// The copy for a width known when compiled (a whole panel's step as one fixed-size move).
    ///
    /// # Safety
    /// As [`pack_panels`], with `width = W`.
    #[inline(always)]
    unsafe fn copy<const W: usize>(
        (cols, kc): (usize, usize),
        (src, ld): (*const f32, usize),
        panels: &mut [f32],
        sums: &mut [&mut [f32]],
    ) {
        let (whole, rest) = (cols / W, cols % W);
        assert!(panels.len() >= cols.div_ceil(W) * W * kc, "pack_panels: too small a buffer");
        assert!(
            sums.len() <= MAX_SUMS && sums.iter().all(|s| s.len() == cols),
            "pack_panels: one sum per column"
        );
        let out = panels.as_mut_ptr();
        for q in 0..whole {
            // The panel's W column sums (for each set of sums), kept in registers down the rows.
            let mut sum = [[0.0f32; W]; MAX_SUMS];
            for (sum, s) in sum.iter_mut().zip(sums.iter()) {
                sum.copy_from_slice(&s[q * W..][..W]);
            }
            // SAFETY: rows p < kc of the source hold `cols` readable values (the caller's
            // guarantee), W of them from column q·W; step p of panel q is W values at q·W·kc + p·W,
            // inside `panels` (checked above). Unaligned moves of W values.
            unsafe {
                let (from, to) = (src.add(q * W), out.add(q * W * kc));
                match sums.len() {
                    0 => copy_rows::<W, 0>(kc, (from, ld), to, &mut sum),
                    1 => copy_rows::<W, 1>(kc, (from, ld), to, &mut sum),
                    _ => copy_rows::<W, 2>(kc, (from, ld), to, &mut sum),
                }
            }
            for (sum, s) in sum.iter().zip(sums.iter_mut()) {
                s[q * W..][..W].copy_from_slice(sum);
            }
        }
        if rest > 0 {
            let last = &mut panels[whole * W * kc..][..W * kc];
            for (p, step) in last.chunks_exact_mut(W).enumerate() {
                // SAFETY: row p < kc holds `rest` readable values from column whole·W (the
                // caller's guarantee).
                let from = unsafe { std::slice::from_raw_parts(src.add(p * ld + whole * W), rest) };
                step[..rest].copy_from_slice(from);
                step[rest..].fill(0.0);
                for s in sums.iter_mut() {
                    s[whole * W..].iter_mut().zip(from).for_each(|(s, v)| *s += v);
                }
            }
        }
    }
    /// `kc` rows of W values from `from` (`ld` apart) to `to` (W apart), each added to the
    /// first `S` sets of sums.
    ///
    /// # Safety
    /// As [`copy`], for one panel.
    #[inline(always)]
    unsafe fn copy_rows<const W: usize, const S: usize>(
        kc: usize,
        (from, ld): (*const f32, usize),
        to: *mut f32,
        sum: &mut [[f32; W]; MAX_SUMS],
    ) {
        for p in 0..kc {
            // Ask for the cache line just past this panel's values in row p: the next panels'
            // (a long sum's `A` is copied a panel at a time down rows as far apart as `G` is wide,
            // 2,400 bytes for a GRU's, a walk the hardware's prefetcher does not foresee, so each
            // panel's first touch of a line waited on memory). A hint: no value changes, and it
            // cannot fault past the source's end. (A safe call for the compilers after the MSRV's,
            // an unsafe one for the MSRV's own, as in `microkernel`: hence the `allow`.)
            #[cfg(target_arch = "x86_64")]
            #[allow(unused_unsafe)]
            // SAFETY: a prefetch reads no value and cannot fault, whatever the address.
            unsafe {
                use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
                _mm_prefetch::<_MM_HINT_T0>(from.wrapping_add(p * ld + W.max(16)).cast());
            }
            // SAFETY: the caller's promise: row p of the panel's source and step p of the panel,
            // W values each (unaligned moves).
            let value = unsafe {
                let value = from.add(p * ld).cast::<[f32; W]>().read_unaligned();
                to.add(p * W).cast::<[f32; W]>().write_unaligned(value);
                value
            };
            // (Index loops, not iterator adapters: see `simd`'s docs.)
            for sum in sum.iter_mut().take(S) {
                for j in 0..W {
                    sum[j] += value[j];
                }
            }
        }
    }
    // `width` picks the matching copy (every kernel family's mr and nr), compiled for the widest
    // vectors: plain moves and additions in order, the same bits on every ISA (4–4.4 % off a
    // GRU's and a GPT's training step on a Zen 4, where the baseline's 4-wide additions of the
    // column sums had made the copy a third of the long sums' time).
    // SAFETY: passed on, the caller's guarantee.
    unsafe {
        match width {
            6 => crate::tensor::simd::wide!(copy::<6>((cols, kc), (src, ld), panels, sums)),
            12 => crate::tensor::simd::wide!(copy::<12>((cols, kc), (src, ld), panels, sums)),
            16 => crate::tensor::simd::wide!(copy::<16>((cols, kc), (src, ld), panels, sums)),
            32 => crate::tensor::simd::wide!(copy::<32>((cols, kc), (src, ld), panels, sums)),
            _ => unreachable!("no kernel family has a tile {width} wide or high"),
        }
    }
}

/// `C[m, n] = alpha · A · op(B) + beta · C (+ B's bias on every row)` for `A` `[m, k]` with rows
/// `lda` apart and `op(B)` packed once ([`PackedB`]), on this thread: the recurrent layers'
/// per-step products. `C` is `[m, n]` row-major. Each row of `C` depends only on the same row of `A` (the same bits however
/// the rows are grouped into calls).
///
/// # Panics
/// If a slice's length does not fit the shapes.
pub(crate) fn gemm_packed_b(
    m: usize,
    alpha: f32,
    (a, lda): (&[f32], usize),
    b: &PackedB,
    beta: f32,
    c: &mut [f32],
) {
    let (k, n) = (b.k, b.n);
    let a_fits = m == 0
        || (lda >= k
            && (m - 1).checked_mul(lda).and_then(|r| r.checked_add(k)).is_some_and(|e| e <= a.len()));
    assert!(a_fits, "gemm: A has {} elements, too few for {m}×{k} with rows {lda} apart", a.len());
    assert_eq!(Some(c.len()), m.checked_mul(n), "gemm: C has {} elements, expected {m}×{n}", c.len());
    if m == 0 || n == 0 {
        return;
    }
    // The paths without a tile epilogue add the bias afterwards (its first n values: unpadded).
    let add_bias = |c: &mut [f32]| {
        if !b.bias.is_empty() {
            super::parallel::add_to_rows(c, &b.bias[..n]);
        }
    };
    if let Some(b) = b.row_major() {
        let no = super::gemm::Transpose::No;
        super::gemm::sgemm_strided((m, k, n), alpha, (a, lda, no), (b, n, no), beta, (c, n));
        return add_bias(c);
    }
    let kern = kernels().expect("a PackedB with panels exists only where the kernels do");
    if k == 0 {
        c.iter_mut().for_each(|v| *v = if beta == 0.0 { 0.0 } else { *v * beta });
        return add_bias(c);
    }
    let a = Strided { ptr: a.as_ptr(), rs: lda as isize, cs: 1 };
    // SAFETY: A is m × k with rows lda apart inside its slice (checked above), B is packed for this CPU's kernels (the ISA
    // cannot change within a process), and C is m × n row-major, borrowed mutably for the call.
    unsafe { gemm(kern, m, a, b, alpha, beta, c.as_mut_ptr(), n) };
}

/// The kernels for `C = A · op(B)` (plus `B`'s bias on every row) into `c` (`m × n`), or `None`
/// when there is nothing to multiply: an empty `C`, or an empty sum (`k = 0`), after which `C`
/// holds the bias on every row, or zeros.
///
/// # Panics
/// If `c.len() != m·n`, or if `B` was not packed for this CPU's kernels.
fn kernels_unless_empty(m: usize, b: &PackedB, c: &mut [f32]) -> Option<&'static Kernels> {
    let (k, n) = (b.k, b.n);
    assert_eq!(Some(c.len()), m.checked_mul(n), "gemm: C has {} elements, expected {m}×{n}", c.len());
    if m == 0 || n == 0 {
        return None;
    }
    let kern = kernels().filter(|kern| b.is_for(kern)).expect("B packed for this CPU's kernels");
    if k == 0 {
        c.fill(0.0);
        if !b.bias.is_empty() {
            super::parallel::add_to_rows(c, &b.bias[..n]);
        }
        return None;
    }
    Some(kern)
}

/// [`gemm_packed_b`] for `A` stored by columns: `C[m, n] = A · op(B)` with element `(i, p)` of
/// `A` at `a[p·lda + i]` (`lda ≥ m`) — the transpose of a row-major `[k, lda]` matrix's first `m`
/// columns, read in place — and `C` `[m, n]` row-major (plus `B`'s bias on every row). Each row of
/// `C` depends only on the same row of `A`.
///
/// # Panics
/// If a slice's length does not fit the shapes, or if `B` was not packed for this CPU's kernels
/// (call it only where [`kernels`] is `Some`).
pub(crate) fn gemm_packed_b_columns(m: usize, (a, lda): (&[f32], usize), b: &PackedB, c: &mut [f32]) {
    let (k, n) = (b.k, b.n);
    let a_fits = m == 0
        || k == 0
        || (lda >= m
            && (k - 1).checked_mul(lda).and_then(|r| r.checked_add(m)).is_some_and(|e| e <= a.len()));
    assert!(a_fits, "gemm: A has {} elements, too few for {m}×{k} stored by columns {lda} apart", a.len());
    let Some(kern) = kernels_unless_empty(m, b, c) else {
        return; // nothing to multiply
    };
    let a = Strided { ptr: a.as_ptr(), rs: 1, cs: lda as isize };
    // SAFETY: A's k columns of m values, lda apart, are inside its slice (checked above); B is
    // packed for this CPU's kernels (checked); C is m × n row-major, borrowed mutably for the call.
    unsafe { gemm(kern, m, a, b, 1.0, 0.0, c.as_mut_ptr(), n) };
}

/// [`gemm_packed_b`] for `A` read in place in `segments` runs of steps: `C[m, n] = A · op(B)`
/// (plus `B`'s bias on every row) with element `(i, s·len + q)` of `A` at `a[i·rs + s·stride +
/// q]`, `len = k / segments` steps per run. A convolution by pixel reads its input this way
/// (`conv2d::fast`'s window rows: one run per row of the kernel, `A` never copied out). Each
/// element of `C` is one chain of multiply-adds per block of steps — the blocks cut at each run's
/// start and within runs longer than `KC` — the blocks' sums added in order. Each row of `C`
/// depends only on the same row of `A`.
///
/// # Panics
/// If `segments` does not divide `k`, if `a` is too short for the shapes, if `c.len() != m·n`, or
/// if `B` was not packed for this CPU's kernels (call it only where [`kernels`] is `Some`).
pub(crate) fn gemm_packed_b_in_runs(
    m: usize,
    (a, rs): (&[f32], usize),
    (segments, stride): (usize, usize),
    b: &PackedB,
    c: &mut [f32],
) {
    let (k, n) = (b.k, b.n);
    assert!(segments > 0 && k.is_multiple_of(segments), "gemm: {k} steps in {segments} runs");
    let len = k / segments;
    // (Checked: a wrapped bound would pass, and the tiles read A without bounds checks.)
    let last = (m.max(1) - 1)
        .checked_mul(rs)
        .and_then(|v| v.checked_add((segments - 1).checked_mul(stride)?))
        .and_then(|v| v.checked_add(len));
    assert!(
        m == 0 || k == 0 || (rs >= len && last.is_some_and(|last| a.len() >= last)),
        "gemm: A has {} elements, too few for {m} rows {rs} apart of {segments} runs of {len}, {stride} apart",
        a.len()
    );
    let Some(kern) = kernels_unless_empty(m, b, c) else {
        return; // nothing to multiply
    };
    // Step p = run·len + q of row ic is at ic·rs + run·stride + q (inside `a`: checked above).
    let a_at = |ic: usize, p: usize| ABlock::InPlace {
        ptr: a[ic * rs + (p / len) * stride + p % len..].as_ptr(),
        rs,
    };
    // SAFETY: the blocks a_at describes are inside `a` (checked above); B is packed for this
    // CPU's kernels (checked); C is m × n row-major, borrowed mutably for the call.
    unsafe { in_blocks(kern, m, (segments, len), b, a_at, (1.0, 0.0), COut::rows(c.as_mut_ptr(), n)) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::gemm::Transpose::{No, Yes};
    use crate::tensor::gemm_reference::gemm_reference;
    use crate::tensor::microkernel::by_definition::families;

    fn values(n: usize, seed: f32) -> Vec<f32> {
        (0..n).map(|i| (i as f32 * 0.377 + seed).sin()).collect()
    }

    /// `A` read in runs of steps: each element of `C` is the chain of each block of steps (cut at
    /// every run's start and within a run longer than `KC`), the blocks' sums added in order, then
    /// the bias — bit for bit; runs spaced wider and narrower than a row, one run and several.
    #[test]
    fn products_in_runs_are_their_blocks_chains() {
        if kernels().is_none() {
            return; // no kernels on this CPU: nothing calls it
        }
        for (m, runs, len, n, stride) in
            [(121, 3, 96, 64, 1056), (7, 2, 300, 40, 310), (30, 1, 20, 33, 0), (13, 4, 5, 17, 2)]
        {
            let (rs, k) = (len + 3, runs * len);
            let a = values((m - 1) * rs + (runs - 1) * stride + len, 0.1);
            let (b, bias) = (values(k * n, 0.2), values(n, 0.4));
            let mut packed = PackedB::default();
            packed.pack(k, n, &b, false);
            packed.set_bias(&bias);
            let mut c = vec![f32::NAN; m * n];
            gemm_packed_b_in_runs(m, (&a, rs), (runs, stride), &packed, &mut c);
            let block = block_of_steps(len);
            for i in 0..m {
                for j in 0..n {
                    let mut want: Option<f32> = None;
                    for run in 0..runs {
                        for q0 in (0..len).step_by(block) {
                            let mut sum = 0.0f32;
                            for q in q0..len.min(q0 + block) {
                                sum = a[i * rs + run * stride + q].mul_add(b[(run * len + q) * n + j], sum);
                            }
                            want = Some(want.map_or(sum, |earlier| sum + earlier));
                        }
                    }
                    let want = want.expect("k > 0") + bias[j];
                    assert_eq!(
                        c[i * n + j].to_bits(),
                        want.to_bits(),
                        "{m}×{k}×{n} in {runs} runs: ({i}, {j})"
                    );
                }
            }
        }
    }

    /// Against the definition, for `B` packed as stored and transposed, across every blocking
    /// boundary: rows past `MC` and not a multiple of any `MR`, steps in several `KC` blocks,
    /// columns past `NC` with a partial last panel; and `beta` 0 (ignoring NaN), 1 and other.
    #[test]
    fn packed_products_match_the_definition() {
        for (m, k, n) in [(1, 1, 1), (5, 3, 7), (13, 200, 800), (150, 600, 1100), (37, 800, 200)] {
            let a = values(m * k, 0.1);
            let b = values(k * n, 0.2);
            for transposed in [false, true] {
                let mut packed = PackedB::default();
                packed.pack(k, n, &b, transposed);
                for (alpha, beta) in [(1.0, 0.0), (1.0, 1.0), (-0.5, 0.75)] {
                    let c0: Vec<f32> =
                        values(m * n, 0.3).iter().map(|&v| if beta == 0.0 { f32::NAN } else { v }).collect();
                    let mut c = c0.clone();
                    gemm_packed_b(m, alpha, (&a, k), &packed, beta, &mut c);
                    let tb = if transposed { Yes } else { No };
                    let want = gemm_reference((m, k, n), alpha, &a, No, &b, tb, beta, &c0);
                    let worst = c.iter().zip(&want).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
                    assert!(
                        worst < 1e-4 * (k as f32).sqrt(),
                        "{m}×{k}×{n}, transposed {transposed}, beta {beta}: {worst}"
                    );
                }
            }
        }
    }

    /// `A` read in place by columns (a convolution's `cols` as `Aᵀ`) gives the bits of the same
    /// `A` copied into rows, with and without a bias, across the row and step blocks (rows past
    /// `MC`, steps past `KC`, a last tile of fewer rows) and with columns `lda > m` apart; and
    /// agrees with the definition.
    #[test]
    fn a_stored_by_columns_gives_the_bits_of_its_rows() {
        if kernels().is_none() {
            return; // no kernel here: the convolution keeps `matrixmultiply`
        }
        for (m, k, n, lda) in
            [(1, 1, 1, 1), (121, 288, 64, 121), (484, 9, 32, 490), (150, 600, 40, 151), (7, 3, 5, 9)]
        {
            let a = values(k * lda, 0.5); // [k, lda]: column p of A is a[p·lda ..][..m]
            let rows: Vec<f32> = (0..m * k).map(|e| a[(e % k) * lda + e / k]).collect(); // A [m, k]
            let w = values(n * k, 0.6); // op(B) = wᵀ
            for bias in [None, Some(values(n, 0.7))] {
                let mut packed = PackedB::default();
                packed.pack(k, n, &w, true);
                if let Some(bias) = &bias {
                    packed.set_bias(bias);
                }
                let mut by_columns = vec![f32::NAN; m * n];
                gemm_packed_b_columns(m, (&a, lda), &packed, &mut by_columns);
                let mut by_rows = vec![f32::NAN; m * n];
                gemm_packed_b(m, 1.0, (&rows, k), &packed, 0.0, &mut by_rows);
                let bits = |c: &[f32]| c.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(&by_columns),
                    bits(&by_rows),
                    "{m}×{k}×{n}, lda {lda}, bias {}",
                    bias.is_some()
                );
                let mut want = gemm_reference((m, k, n), 1.0, &rows, No, &w, Yes, 0.0, &vec![0.0; m * n]);
                if let Some(bias) = &bias {
                    want.chunks_exact_mut(n)
                        .for_each(|row| row.iter_mut().zip(bias).for_each(|(v, b)| *v += b));
                }
                let worst = by_columns.iter().zip(&want).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
                assert!(worst < 1e-4 * (k as f32).sqrt(), "{m}×{k}×{n}: {worst} from the definition");
            }
        }
    }

    /// A buffer reused after a larger matrix (its values NaN) packs what a new one does, for
    /// both families' panel widths, as stored and transposed: every panel value written, the
    /// partial last panel's padding zero (the buffer is not zero-filled first any more).
    #[test]
    fn a_reused_buffer_packs_what_a_new_one_does() {
        for kern in families() {
            for (k, n) in [(1, 1), (3, 7), (9, 676), (288, 121), (5, 64), (0, 5)] {
                for transposed in [false, true] {
                    let b = values(k * n, 0.4);
                    let mut reused = PackedB::default();
                    reused.pack_for(Some(kern), 300, 200, &vec![f32::NAN; 300 * 200], false);
                    reused.pack_for(Some(kern), k, n, &b, transposed);
                    let mut new = PackedB::default();
                    new.pack_for(Some(kern), k, n, &b, transposed);
                    let len = n.div_ceil(kern.nr) * k * kern.nr;
                    let bits = |p: &PackedB| p.data[..len].iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&reused), bits(&new), "nr {}, {k}×{n}, transposed {transposed}", kern.nr);
                    let want = |p: usize, j: usize| if transposed { b[j * k + p] } else { b[p * n + j] };
                    for (i, &v) in new.data[..len].iter().enumerate() {
                        let (panel, p, c) = (i / (k * kern.nr), i / kern.nr % k.max(1), i % kern.nr);
                        let j = panel * kern.nr + c;
                        let expected = if j < n { want(p, j) } else { 0.0 };
                        assert_eq!(
                            v.to_bits(),
                            expected.to_bits(),
                            "nr {}, {k}×{n}: panel value {i}",
                            kern.nr
                        );
                    }
                }
            }
        }
    }

    /// With a bias: the product, then `+ bias` on every row — the same bits, whether the sum is
    /// one block of `KC` or several (the bias comes with the last), the last panel partial or
    /// not; a new `pack` drops the bias.
    #[test]
    fn a_bias_is_added_to_every_row_once() {
        for (m, k, n) in [(1, 1, 1), (7, 3, 37), (13, 600, 50), (20, 0, 9)] {
            let (a, b, bias) = (values(m * k, 0.6), values(k * n, 0.7), values(n, 0.8));
            let mut packed = PackedB::default();
            packed.pack(k, n, &b, false);
            let mut plain = vec![0.0; m * n];
            gemm_packed_b(m, 0.5, (&a, k), &packed, 0.0, &mut plain);
            packed.set_bias(&bias);
            let mut with_bias = vec![f32::NAN; m * n];
            gemm_packed_b(m, 0.5, (&a, k), &packed, 0.0, &mut with_bias);
            for (i, (got, p)) in with_bias.iter().zip(&plain).enumerate() {
                assert_eq!(got.to_bits(), (p + bias[i % n]).to_bits(), "{m}×{k}×{n}: C[{i}]");
            }
            packed.pack(k, n, &b, false);
            let mut again = vec![0.0; m * n];
            gemm_packed_b(m, 0.5, (&a, k), &packed, 0.0, &mut again);
            assert_eq!(again, plain, "{m}×{k}×{n}: the bias outlived a new pack");
        }
    }

    /// The long sum `Aᵀ·B` (both operands copied into panels block by block) gives the same bits
    /// as `A` read in place against `B` packed once: the same chains of multiply-adds — for this
    /// CPU's kernels and for both families' geometries (12 × 32 slivers and panels included, which
    /// only an AVX-512 CPU would otherwise run), and the definition's value to rounding. Rows past
    /// `MC` and not a multiple of any `MR`, steps in several `KC` blocks, columns past `NC` with a
    /// partial last panel, operands inside wider rows, beta 0 (ignoring NaN) and 1; the column
    /// sums of `A` as `add_rows` adds them.
    #[test]
    fn long_sums_are_the_packed_product_bit_for_bit() {
        for kern in families() {
            long_sums_match(kern);
        }
    }

    fn long_sums_match(kern: &Kernels) {
        for (m, k, n) in [(1, 1, 1), (7, 5, 3), (150, 600, 37), (301, 257, 16), (5, 300, 1100), (13, 70, 33)]
        {
            let (lda, ldb, ldc) = (m + 3, n + 2, n + 1); // rows wider than the operands
            let a_t = values(k * lda, 0.9); // Aᵀ stored [k, m] in rows lda apart
            let a: Vec<f32> = (0..m * k).map(|e| a_t[(e % k) * lda + e / k]).collect(); // [m, k]
            let b = values(k * ldb, 1.1);
            let b_dense: Vec<f32> = (0..k * n).map(|e| b[(e / n) * ldb + e % n]).collect();
            let mut packed = PackedB::default();
            packed.pack_for(Some(kern), k, n, &b_dense, false);
            for beta in [0.0, 1.0] {
                let c0: Vec<f32> =
                    values(m * ldc, 1.3).iter().map(|&v| if beta == 0.0 { f32::NAN } else { v }).collect();
                let (mut in_place, mut long_sum) = (c0.clone(), c0.clone());
                let rows = Strided { ptr: a.as_ptr(), rs: k as isize, cs: 1 };
                let mut sums = values(m, 1.7);
                // SAFETY: A is m × k row-major and Aᵀ k rows of m, lda apart; B k rows of n, ldb
                // apart; C m rows of n, ldc apart, inside their vectors; m sums.
                unsafe {
                    gemm(kern, m, rows, &packed, 0.5, beta, in_place.as_mut_ptr(), ldc);
                    let (a_t, b) = ((a_t.as_ptr(), lda), (b.as_ptr(), ldb));
                    let c = (long_sum.as_mut_ptr(), ldc);
                    let out = LongSumOutput { m, b, n, c, sums: Some(&mut sums) };
                    gemm_long_sum(kern, (m, k), 0.5, a_t, beta, &mut [out]);
                }
                let what = format!("{}×{} tiles, {m}×{k}×{n}, beta {beta}", kern.mr, kern.nr);
                for (i, (x, y)) in in_place.iter().zip(&long_sum).enumerate() {
                    assert_eq!(x.to_bits(), y.to_bits(), "{what}: C[{i}]");
                }
                // (With beta 0 the definition would still multiply C's NaN by it.)
                let c_ref: Vec<f32> =
                    (0..m * n).map(|e| if beta == 0.0 { 0.0 } else { c0[(e / n) * ldc + e % n] }).collect();
                let want = gemm_reference((m, k, n), 0.5, &a, No, &b_dense, No, beta, &c_ref);
                for (e, w) in want.iter().enumerate() {
                    let got = long_sum[(e / n) * ldc + e % n];
                    assert!((got - w).abs() <= 1e-4 * (k as f32).sqrt(), "{what}: C[{e}] {got} vs {w}");
                }
                let mut want_sums = values(m, 1.7);
                crate::tensor::parallel::add_rows(
                    &mut want_sums,
                    &a_t.chunks(lda).flat_map(|r| &r[..m]).copied().collect::<Vec<_>>(),
                );
                assert!(sums.iter().zip(&want_sums).all(|(x, y)| x.to_bits() == y.to_bits()), "{what}: sums");
            }
        }
    }

    /// A row of `C` has the same bits whatever rows it is computed with (the walks split their
    /// samples across threads).
    #[test]
    fn rows_are_independent_of_their_neighbours() {
        let (m, k, n) = (29, 300, 70);
        let (a, b) = (values(m * k, 0.4), values(k * n, 0.5));
        let mut packed = PackedB::default();
        packed.pack(k, n, &b, true);
        let mut whole = vec![0.0; m * n];
        gemm_packed_b(m, 1.0, (&a, k), &packed, 0.0, &mut whole);
        for split in [1, 5, 13, 28] {
            let mut parts = vec![0.0; m * n];
            let (top, bottom) = parts.split_at_mut(split * n);
            gemm_packed_b(split, 1.0, (&a[..split * k], k), &packed, 0.0, top);
            gemm_packed_b(m - split, 1.0, (&a[split * k..], k), &packed, 0.0, bottom);
            assert!(parts.iter().zip(&whole).all(|(x, y)| x.to_bits() == y.to_bits()), "split at {split}");
        }
    }
}
