//! The innermost loop of the crate's own GEMM ([`packed_gemm`](super::packed_gemm)): one tile
//! of `C`, `MR` rows by `NR` columns, as `MR × NR` running sums kept in vector registers.
//!
//! `B` comes packed so that each step `p` of the sum reads contiguous memory: the `NR` values
//! `B̃[p·NR + j]` of a panel of `B`'s columns. A row-major `A` is read in place, `MR` rows `lda`
//! apart (each step broadcasts one value from each row; packing it into slivers first cost 3–4 %
//! of a recurrent training step and bought nothing, since a broadcast is one load either way).
//! An `A` stored by columns (`op(A) = Gᵀ` of a weight gradient `Gᵀ·X`) comes packed in slivers
//! of `MR` rows, step by step (`Ã[p·MR + i]`), by the caller — or, for a short sum, read in place
//! (`MR` adjacent values of each row of `G`, `lda` apart). Then, for `p = 0 … kc−1`:
//!
//! ```text
//! acc[i][j] = fma(A[i·lda + p], B̃[p·NR + j], acc[i][j])      every i < MR, j < NR
//!              (A[p·lda + i] for A by columns)
//! ```
//!
//! and at the end `C[i][j] = fma(alpha, acc[i][j], beta·C[i][j])` (`alpha·acc` when `beta = 0`,
//! which never reads `C`), then `+ bias[j]` when a bias is given (a layer's `x·Wᵀ + b`, added
//! while the tile is in registers instead of by a pass over `C`). [`tile_reference`] is that definition, one scalar at a time; the
//! vector kernels perform the same fused multiply-adds in the same order per element, so they
//! agree with it bit for bit (the tests below check every row count).
//!
//! **Why these tile sizes.** A step issues `MR` broadcasts of `Ã` and `NR / lanes` loads of `B̃`
//! for `MR · NR / lanes` multiply-adds. The CPU does two fused multiply-adds and two or three
//! loads per cycle, so the tile must need fewer loads than multiply-adds, and the multiply-adds
//! must be many enough (≥ 8 independent sums) to hide their latency; while every running sum, the
//! `B̃` vectors and a broadcast fit in the 32 (AVX-512) or 16 (AVX2) vector registers:
//! - AVX-512F: 12 × 32 — 24 sums, 14 loads per 24 multiply-adds (`matrixmultiply`'s 16 × 16 tile
//!   needs 17 loads for 16, which caps it near half the FMA peak);
//! - AVX2 + FMA: 6 × 16 — 12 sums, 8 loads per 12 multiply-adds (the classic Haswell shape).
//!
//! A block with fewer rows (the bottom edge of `C`) runs the same kernel instantiated for that
//! row count; a panel with fewer columns (the right edge) is zero-padded when packed, and only its
//! real columns are stored. A last panel of at most `NR / 2` columns runs a tile half as wide
//! ([`Kernels::tiles`]): a recurrent layer's weight gradients have 100 and 200 columns (last
//! panels of 4 and 8), which the 32-wide AVX-512 tile had computed padded — 352 columns' work for
//! 300 (the LSTM's long sum 7–11 % faster with the half tile on a Zen 4). With AVX-512 a last
//! panel of at most `NR / 4` columns runs a quarter-width tile in 256-bit registers (the AVX2
//! tile over 32-wide panels): where 512-bit operations run as two halves (a Zen 4), two 256-bit
//! multiply-adds issue per cycle against one 512-bit one, so those 4 and 8 columns take half the
//! half tile's time (GRU and LSTM training steps 1.5–2.5 % faster, docs/benchmarks.md).

/// One tile: `C[MR rows, cols] = alpha · A·B̃ + beta · C (+ bias)` over `kc` steps (`A`'s `MR`
/// rows `lda` apart, or its `kc` columns `lda` apart for [`Kernels::tile_a_by_columns`], `B̃` packed `NR` wide, `bias` null or `cols` values added to every row, `C`
/// with row stride `ldc`, `cols ≤ NR`).
///
/// # Safety
/// `a` must point at `MR` rows of `kc` readable values, `lda` apart (by columns: `kc` columns of
/// `MR` values, `lda` apart), and `b` at `kc · NR`
/// readable values; `bias` must be null or point at `NR` readable values (only the first `cols`
/// are used); `c` must point at `MR` rows of `cols` writable values, `ldc` apart; the CPU must
/// support the kernel's instruction set.
pub(crate) type TileFn = unsafe fn(
    kc: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    alpha_beta: (f32, f32),
    bias: *const f32,
    c: *mut f32,
    ldc: usize,
    cols: usize,
);

/// A family of tile kernels for one instruction set: `tile[r − 1]` computes a tile of `r ≤ mr` rows.
pub(crate) struct Kernels {
    /// Rows of a full tile.
    pub mr: usize,
    /// Columns of a tile (the packed panels' width).
    pub nr: usize,
    /// The kernel for each row count `1 ..= mr`, `A` read by rows: element `(i, p)` at
    /// `a[i·lda + p]` (a tall `A` in place).
    pub tile: &'static [TileFn],
    /// The same with `A` read by columns: element `(i, p)` at `a[p·lda + i]` (the slivers of a
    /// packed `Aᵀ`, `lda = mr`: see [`packed_gemm`](super::packed_gemm); or a short sum's `Gᵀ`
    /// in place, `lda` = the row length of `G`).
    pub tile_a_by_columns: &'static [TileFn],
    /// Tiles half as wide (`nr / 2` columns, reading the first half of each step's `nr` packed
    /// values), by rows and by columns as above: for a last panel of at most `nr / 2` columns,
    /// which the full tile would compute padded with zeros to `nr`. Empty for a family without
    /// them.
    pub half_tile: (&'static [TileFn], &'static [TileFn]),
    /// Tiles a quarter as wide (`nr / 4` columns, reading the first quarter of each step's `nr`
    /// packed values) in 256-bit registers, by rows and by columns: for a last panel of at most
    /// `nr / 4` columns (a recurrent layer's weight gradients against 100 or 200 inputs leave 4
    /// and 8). Where 512-bit operations run as two halves (a Zen 4), two 256-bit multiply-adds
    /// issue per cycle against one 512-bit one: such a panel in half the half tile's time. Empty
    /// for a family without them.
    pub quarter_tile: (&'static [TileFn], &'static [TileFn]),
}

impl Kernels {
    /// Columns of the narrowest tile: `nr / 2` for a family with half-width tiles, else `nr`. A
    /// block of `C` whose columns are a whole number of these can be written tile by tile.
    pub fn narrowest(&self) -> usize {
        if self.half_tile.0.is_empty() { self.nr } else { self.nr / 2 }
    }

    /// The tiles for `A` by rows or by columns, for a tile of `cols` columns: the quarter- or
    /// half-width ones when the family has them and `cols` fits (the same bits: each element of
    /// `C` is the same chain of multiply-adds either way).
    pub fn tiles(&self, a_by_columns: bool, cols: usize) -> &'static [TileFn] {
        let (quarter_by_rows, quarter_by_columns) = self.quarter_tile;
        if cols <= self.nr / 4 && !quarter_by_rows.is_empty() {
            return if a_by_columns { quarter_by_columns } else { quarter_by_rows };
        }
        let (half_by_rows, half_by_columns) = self.half_tile;
        match (a_by_columns, cols <= self.nr / 2 && !half_by_rows.is_empty()) {
            (false, false) => self.tile,
            (true, false) => self.tile_a_by_columns,
            (false, true) => half_by_rows,
            (true, true) => half_by_columns,
        }
    }
}

/// The tile kernels for the CPU's widest instruction set ([`isa`](super::simd::isa)), or `None`
/// where it has no fused multiply-add kernel here (the baseline: `matrixmultiply` then computes
/// every product).
pub(crate) fn kernels() -> Option<&'static Kernels> {
    #[cfg(target_arch = "x86_64")]
    {
        use super::simd::{Isa, isa};
        match isa() {
            Isa::Avx512 => return Some(&x86::AVX512),
            Isa::Avx2 if std::arch::is_x86_feature_detected!("fma") => return Some(&x86::AVX2),
            _ => {}
        }
    }
    None
}

/// The definition of a tile, one scalar at a time (see the module docs): what the vector kernels
/// compute, bit for bit. `rows ≤ mr` rows of `a`, `lda` apart (or, `a_by_columns`, `kc` columns
/// of `rows` values, `lda` apart); `cols ≤ nr`; `c` has row stride `ldc`.
#[allow(clippy::too_many_arguments)] // a tile's operands, as the kernels take them
#[cfg_attr(not(test), allow(dead_code))] // the definition: the tests compare the kernels with it
pub(crate) fn tile_reference(
    (mr, nr, kc): (usize, usize, usize),
    (a, lda, rows, a_by_columns): (&[f32], usize, usize, bool),
    b: &[f32],
    (alpha, beta): (f32, f32),
    bias: Option<&[f32]>,
    c: &mut [f32],
    ldc: usize,
    cols: usize,
) {
    debug_assert!(rows <= mr);
    for i in 0..rows {
        for j in 0..cols {
            let mut acc = 0.0f32;
            for p in 0..kc {
                let a_ip = if a_by_columns { a[p * lda + i] } else { a[i * lda + p] };
                acc = a_ip.mul_add(b[p * nr + j], acc);
            }
            let c_ij = &mut c[i * ldc + j];
            *c_ij = if beta == 0.0 { alpha * acc } else { alpha.mul_add(acc, beta * *c_ij) };
            if let Some(bias) = bias {
                *c_ij += bias[j];
            }
        }
    }
}

/// Kernel families whose tiles are the definition ([`tile_reference`]), for the tests: the
/// blocking, packing and thread-splitting code for every family's geometry runs on any CPU —
/// the AVX-512 family's 12 × 32 slivers and panels included, which an AVX2 test machine would
/// otherwise never run.
#[cfg(test)]
pub(crate) mod by_definition {
    use super::{Kernels, TileFn, kernels, tile_reference};

    /// A tile of `R ≤ MR` rows and `NR` columns by the definition ([`tile_reference`]), as a
    /// [`TileFn`]: a kernel family of any geometry on any CPU, for the blocking and packing logic.
    ///
    /// # Safety
    /// As [`TileFn`].
    unsafe fn scalar_tile<const MR: usize, const NR: usize, const R: usize, const BY_COLUMNS: bool>(
        kc: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        alpha_beta: (f32, f32),
        bias: *const f32,
        c: *mut f32,
        ldc: usize,
        cols: usize,
    ) {
        let a_len = if kc == 0 {
            0
        } else if BY_COLUMNS {
            (kc - 1) * lda + R
        } else {
            (R - 1) * lda + kc
        };
        // SAFETY: the extents a TileFn's caller guarantees (see `TileFn`).
        unsafe {
            let a = std::slice::from_raw_parts(a, a_len);
            let b = std::slice::from_raw_parts(b, kc * NR);
            let bias = (!bias.is_null()).then(|| std::slice::from_raw_parts(bias, NR));
            let c = std::slice::from_raw_parts_mut(c, (R - 1) * ldc + cols);
            tile_reference((MR, NR, kc), (a, lda, R, BY_COLUMNS), b, alpha_beta, bias, c, ldc, cols);
        }
    }

    macro_rules! scalar_family {
        ($mr:literal, $nr:literal, $by:literal, [$($r:literal),*]) => {
            [$(scalar_tile::<$mr, $nr, $r, $by> as TileFn),*]
        };
    }
    /// The AVX-512 family's geometry, 12 × 32 (its tiles by the definition): on a CPU without
    /// AVX-512 the packing and blocking for it (12-row slivers, 32-column panels) run here too.
    pub(crate) static WIDE: Kernels = Kernels {
        mr: 12,
        nr: 32,
        tile: &scalar_family!(12, 32, false, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]),
        tile_a_by_columns: &scalar_family!(12, 32, true, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]),
        half_tile: (&[], &[]),
        quarter_tile: (&[], &[]),
    };
    /// The AVX2 family's geometry, 6 × 16, by the definition.
    pub(crate) static NARROW: Kernels = Kernels {
        mr: 6,
        nr: 16,
        tile: &scalar_family!(6, 16, false, [1, 2, 3, 4, 5, 6]),
        tile_a_by_columns: &scalar_family!(6, 16, true, [1, 2, 3, 4, 5, 6]),
        half_tile: (&[], &[]),
        quarter_tile: (&[], &[]),
    };

    /// Every kernel family to test here: this CPU's, and both geometries by the definition.
    pub(crate) fn families() -> Vec<&'static Kernels> {
        kernels().into_iter().chain([&WIDE, &NARROW]).collect()
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Kernels, TileFn};
    use std::arch::x86_64::*;

    /// `tiles_by_rows!(kernel::<[P…]> for 1 2 …)` is `[kernel::<1, P…>, kernel::<2, P…>, …]`: a
    /// family's tile for each row count.
    macro_rules! tiles_by_rows {
        ($kernel:ident::<$p:tt> for $($rows:literal)+) => {
            [$(tiles_by_rows!(@one $kernel, $rows, $p)),+]
        };
        (@one $kernel:ident, $rows:literal, [$($p:tt),*]) => {
            $kernel::<$rows, $($p),*>
        };
    }

    /// The AVX-512F family: 12 × 32 tiles, and 12 × 16 for a last panel of ≤ 16 columns.
    pub(super) static AVX512: Kernels = Kernels {
        mr: 12,
        nr: 32,
        tile: &avx512_tiles::<false, 2>(),
        tile_a_by_columns: &avx512_tiles::<true, 2>(),
        half_tile: (&avx512_tiles::<false, 1>(), &avx512_tiles::<true, 1>()),
        quarter_tile: (&avx512_quarter_tiles::<false>(), &avx512_quarter_tiles::<true>()),
    };
    /// 12 × 8 tiles in 256-bit registers over the AVX-512 family's panels (32 values a step).
    const fn avx512_quarter_tiles<const A_BY_COLUMNS: bool>() -> [TileFn; 12] {
        tiles_by_rows!(tile_avx2::<[A_BY_COLUMNS, 1, 32]> for 1 2 3 4 5 6 7 8 9 10 11 12)
    }
    const fn avx512_tiles<const A_BY_COLUMNS: bool, const W: usize>() -> [TileFn; 12] {
        tiles_by_rows!(tile_avx512::<[A_BY_COLUMNS, W]> for 1 2 3 4 5 6 7 8 9 10 11 12)
    }

    /// The AVX2 + FMA family: 6 × 16 tiles, and 6 × 8 for a last panel of ≤ 8 columns.
    pub(super) static AVX2: Kernels = Kernels {
        mr: 6,
        nr: 16,
        tile: &avx2_tiles::<false, 2>(),
        tile_a_by_columns: &avx2_tiles::<true, 2>(),
        half_tile: (&avx2_tiles::<false, 1>(), &avx2_tiles::<true, 1>()),
        quarter_tile: (&[], &[]), // (4 columns in 128-bit registers: no faster than the half tile)
    };
    const fn avx2_tiles<const A_BY_COLUMNS: bool, const W: usize>() -> [TileFn; 6] {
        tiles_by_rows!(tile_avx2::<[A_BY_COLUMNS, W, 16]> for 1 2 3 4 5 6)
    }

    /// `MR × 16·W` with AVX-512F: each row's sums in `W` 16-lane registers (`W` = 2, or 1 for the
    /// half-width tile, which reads the first 16 of each step's 32 packed values).
    ///
    /// # Safety
    /// See [`TileFn`] (`cols ≤ 16·W`); the CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    unsafe fn tile_avx512<const MR: usize, const A_BY_COLUMNS: bool, const W: usize>(
        kc: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        (alpha, beta): (f32, f32),
        bias: *const f32,
        c: *mut f32,
        ldc: usize,
        cols: usize,
    ) {
        let mut acc = [[_mm512_setzero_ps(); W]; MR];
        // SAFETY: the caller guarantees MR rows of kc values at `a`, lda apart (or kc columns of MR
        // values), and kc·32 at `b` (see `TileFn`).
        unsafe {
            for p in 0..kc {
                let b_p = b.add(p * 32);
                let mut b_v = [_mm512_setzero_ps(); W]; // (a loop, not a closure: see `simd`'s docs)
                for (w, b_w) in b_v.iter_mut().enumerate() {
                    *b_w = _mm512_loadu_ps(b_p.add(16 * w));
                }
                // Step p's column of A: MR values lda apart, or MR adjacent ones (by columns).
                let a_p = if A_BY_COLUMNS { a.add(p * lda) } else { a.add(p) };
                for (i, acc_i) in acc.iter_mut().enumerate() {
                    let a_ip = _mm512_set1_ps(*a_p.add(if A_BY_COLUMNS { i } else { i * lda }));
                    for w in 0..W {
                        acc_i[w] = _mm512_fmadd_ps(a_ip, b_v[w], acc_i[w]);
                    }
                }
            }
        }
        let (alpha_v, beta_v) = (_mm512_set1_ps(alpha), _mm512_set1_ps(beta));
        for (i, acc_i) in acc.iter().enumerate() {
            // SAFETY: row i < MR of C has `cols` writable values (see `TileFn`).
            let c_i = unsafe { c.add(i * ldc) };
            if cols == 16 * W {
                for (half, &sum) in acc_i.iter().enumerate() {
                    // SAFETY: 16 values at c_i + 16·half, half < W, inside the row's 16·W.
                    unsafe {
                        let at = c_i.add(16 * half);
                        let mut out = if beta == 0.0 {
                            _mm512_mul_ps(alpha_v, sum)
                        } else {
                            _mm512_fmadd_ps(alpha_v, sum, _mm512_mul_ps(beta_v, _mm512_loadu_ps(at)))
                        };
                        if !bias.is_null() {
                            out = _mm512_add_ps(out, _mm512_loadu_ps(bias.add(16 * half)));
                        }
                        _mm512_storeu_ps(at, out);
                    }
                }
            } else {
                let mut sums = [0.0f32; 32];
                for (w, &sum) in acc_i.iter().enumerate() {
                    // SAFETY: `sums` holds 32 ≥ 16·W values: W stores of 16.
                    unsafe { _mm512_storeu_ps(sums.as_mut_ptr().add(16 * w), sum) };
                }
                // SAFETY: the row's first `cols` values are writable (see `TileFn`).
                unsafe { finish(&sums[..cols], (alpha, beta), bias, c_i) };
            }
        }
    }

    /// `MR × 8·W` with AVX2 and FMA: each row's sums in `W` 8-lane registers (`W` = 2, or 1 for
    /// the half-width tile, which reads the first 8 of each step's 16 packed values), over panels
    /// of `STEP` values a step (16; 32 for the AVX-512 family's quarter-width tile, which reads
    /// the first 8 of each step's 32).
    ///
    /// # Safety
    /// See [`TileFn`] (`cols ≤ 8·W`, `b` at `kc·STEP` values); the CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile_avx2<const MR: usize, const A_BY_COLUMNS: bool, const W: usize, const STEP: usize>(
        kc: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        (alpha, beta): (f32, f32),
        bias: *const f32,
        c: *mut f32,
        ldc: usize,
        cols: usize,
    ) {
        let mut acc = [[_mm256_setzero_ps(); W]; MR];
        if beta != 0.0 {
            // C is read at the end: ask for its rows now, so that a C too large for L2 (a weight
            // gradient over a short batch) arrives while the sums run. (A hint: no value changes.)
            for i in 0..MR {
                let row = c.wrapping_add(i * ldc);
                // SAFETY: a prefetch is a hint: it reads no value and cannot fault, whatever the
                // address. (A safe call inside this function for the compilers after the MSRV's,
                // an unsafe one for the MSRV's own: hence the block and the `allow`.)
                #[allow(unused_unsafe)]
                unsafe {
                    _mm_prefetch::<_MM_HINT_T0>(row.cast());
                    _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(cols - 1).cast());
                }
            }
        }
        // SAFETY: the caller guarantees MR rows of kc values at `a`, lda apart (or kc columns of MR
        // values), and kc·STEP at `b` (see `TileFn`).
        unsafe {
            for p in 0..kc {
                let b_p = b.add(p * STEP);
                let mut b_v = [_mm256_setzero_ps(); W]; // (a loop, not a closure: see `simd`'s docs)
                for (w, b_w) in b_v.iter_mut().enumerate() {
                    *b_w = _mm256_loadu_ps(b_p.add(8 * w));
                }
                // Step p's column of A: MR values lda apart, or MR adjacent ones (by columns).
                let a_p = if A_BY_COLUMNS { a.add(p * lda) } else { a.add(p) };
                for (i, acc_i) in acc.iter_mut().enumerate() {
                    let a_ip = _mm256_broadcast_ss(&*a_p.add(if A_BY_COLUMNS { i } else { i * lda }));
                    for w in 0..W {
                        acc_i[w] = _mm256_fmadd_ps(a_ip, b_v[w], acc_i[w]);
                    }
                }
            }
        }
        let (alpha_v, beta_v) = (_mm256_set1_ps(alpha), _mm256_set1_ps(beta));
        for (i, acc_i) in acc.iter().enumerate() {
            // SAFETY: row i < MR of C has `cols` writable values (see `TileFn`).
            let c_i = unsafe { c.add(i * ldc) };
            if cols == 8 * W {
                for (half, &sum) in acc_i.iter().enumerate() {
                    // SAFETY: 8 values at c_i + 8·half, half < W, inside the row's 8·W.
                    unsafe {
                        let at = c_i.add(8 * half);
                        let mut out = if beta == 0.0 {
                            _mm256_mul_ps(alpha_v, sum)
                        } else {
                            _mm256_fmadd_ps(alpha_v, sum, _mm256_mul_ps(beta_v, _mm256_loadu_ps(at)))
                        };
                        if !bias.is_null() {
                            out = _mm256_add_ps(out, _mm256_loadu_ps(bias.add(8 * half)));
                        }
                        _mm256_storeu_ps(at, out);
                    }
                }
            } else {
                let mut sums = [0.0f32; 16];
                for (w, &sum) in acc_i.iter().enumerate() {
                    // SAFETY: `sums` holds 16 ≥ 8·W values: W stores of 8.
                    unsafe { _mm256_storeu_ps(sums.as_mut_ptr().add(8 * w), sum) };
                }
                // SAFETY: the row's first `cols` values are writable (see `TileFn`).
                unsafe { finish(&sums[..cols], (alpha, beta), bias, c_i) };
            }
        }
    }

    /// `c[j] = fma(alpha, sums[j], beta·c[j])` (or `alpha·sums[j]` for `beta = 0`), then
    /// `+ bias[j]` when `bias` is not null: a partial row's store, the same operations as the
    /// vector stores.
    ///
    /// # Safety
    /// `c` must point at `sums.len()` writable values.
    #[inline(always)]
    unsafe fn finish(sums: &[f32], (alpha, beta): (f32, f32), bias: *const f32, c: *mut f32) {
        for (j, &sum) in sums.iter().enumerate() {
            // SAFETY: j < sums.len() values are writable at c and, when bias is not null, readable
            // at bias (the caller's guarantee).
            unsafe {
                let c_j = &mut *c.add(j);
                *c_j = if beta == 0.0 { alpha * sum } else { alpha.mul_add(sum, beta * *c_j) };
                if !bias.is_null() {
                    *c_j += *bias.add(j);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kernel of every family the CPU has, every row count, full and partial columns, with
    /// and without beta, `A` by rows and by columns: the same bits as the scalar definition.
    #[test]
    fn kernels_match_the_reference_bit_for_bit() {
        #[cfg(target_arch = "x86_64")]
        let families: Vec<&Kernels> = {
            let mut f = Vec::new();
            if std::arch::is_x86_feature_detected!("avx512f") {
                f.push(&x86::AVX512);
            }
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                f.push(&x86::AVX2);
            }
            f
        };
        #[cfg(not(target_arch = "x86_64"))]
        let families: Vec<&Kernels> = Vec::new();
        let v = |n: usize, s: f32| (0..n).map(|k| (k as f32 * 0.731 + s).sin() * 2.0).collect::<Vec<f32>>();
        for fam in families {
            let (mr, nr, kc) = (fam.mr, fam.nr, 37);
            for rows in 1..=mr {
                for cols in [nr, nr - 1, nr / 2 + 1, nr / 2, nr / 2 - 1, nr / 4 + 1, nr / 4, nr / 4 - 1, 1] {
                    for (alpha, beta, with_bias) in [
                        (1.0, 0.0, false),
                        (0.5, 1.0, false),
                        (-1.5, 0.25, false),
                        (1.0, 0.0, true),
                        (0.5, 1.0, true),
                    ] {
                        let bias = v(nr, 2.9);
                        let bias_ptr = if with_bias { bias.as_ptr() } else { std::ptr::null() };
                        for a_by_columns in [false, true] {
                            // A's rows (or columns) further apart than their length
                            let lda = if a_by_columns { mr + 3 } else { kc + 5 };
                            let a_len = if a_by_columns { lda * kc } else { lda * rows };
                            let (a, b) = (v(a_len, 0.1), v(kc * nr, 0.7));
                            let ldc = nr + 3;
                            let c0 = v(rows * ldc, 1.3);
                            let mut want = c0.clone();
                            let bias_ref = with_bias.then_some(&bias[..]);
                            tile_reference(
                                (mr, nr, kc),
                                (&a, lda, rows, a_by_columns),
                                &b,
                                (alpha, beta),
                                bias_ref,
                                &mut want,
                                ldc,
                                cols,
                            );
                            let mut got = c0.clone();
                            // SAFETY: a holds `rows` rows of lda ≥ kc (by columns: kc columns of lda ≥
                            // mr ≥ rows), b kc·nr values; c has `rows` rows of ldc ≥ cols; the
                            // family was chosen for what the CPU supports.
                            unsafe {
                                let tiles = fam.tiles(a_by_columns, cols);
                                (tiles[rows - 1])(
                                    kc,
                                    a.as_ptr(),
                                    lda,
                                    b.as_ptr(),
                                    (alpha, beta),
                                    bias_ptr,
                                    got.as_mut_ptr(),
                                    ldc,
                                    cols,
                                )
                            };
                            assert_eq!(
                                got, want,
                                "{mr}×{nr}, {rows} rows, {cols} columns, beta {beta}, bias {with_bias}, \
                             A by columns {a_by_columns}"
                            );
                        }
                    }
                }
            }
        }
    }
}
