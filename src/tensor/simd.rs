//! Hot loops compiled for the widest vectors the CPU has.
//!
//! The element-wise loops of the recurrent cells (gates through `σ` and `tanh`) are plain Rust
//! that the compiler vectorises; for the baseline x86-64 target that means
//! 4 floats per instruction (SSE2). On a CPU with AVX2 the same loop compiled with AVX2 enabled
//! does 8 at a time, with AVX-512F 16. [`wide!`] picks the widest at run time ([`isa`]). Both
//! versions perform the same operations in the same order — no fused multiply-adds, which Rust
//! never introduces on its own — so the results are bit-identical on every CPU.
//!
//! [`wide_fused!`] is the same for loops generic over how `a·b + c` is evaluated
//! ([`MulAdd`](crate::tensor::math::MulAdd)): the recurrent cells' gates and the GELU, whose
//! `eˣ` is a polynomial in Horner form. There the wide variants fuse each multiply-add into one
//! FMA instruction (half the instructions; the LSTM's gate loops 1.6× as fast), so AVX2 and
//! AVX-512F agree bit for bit with each other, and with the baseline to within a rounding per
//! multiply-add (the `wide_vectors_agree` tests of `lstm.rs` and `gru.rs` check both).
//!
//! **Write the loop as an index loop** (`for i in 0..n { out[i] = f(x[i]) }`, slices cut to `n`
//! first). A loop through iterator adapters (`out.iter_mut().zip(x).for_each(…)`) calls
//! `Zip::fold`, a generic function the compiler may keep out of line — compiled for the baseline,
//! 4 lanes, outside the AVX-512 context `wide!` set up: GELU's backward loop ran that way until
//! `perf annotate` showed `xmm` registers in a `Zip::fold` at 8.6 % of a GPT step.
//!
//! The same holds for closures: a closure is a function of its own, compiled without the target
//! features of the function that defines it unless it is inlined there. The attention head kernel
//! (`layers/attention_head.rs`, generic over its register type) first called a closure per block:
//! every intrinsic in it became a call (`perf`: `_mm256_fmadd_ps` as a symbol at 40 % of an
//! encoder's inference, the rows 2–3× slower). Kernels generic over an ISA are `#[inline(always)]`
//! functions with plain loops, called from one `#[target_feature]` function per ISA.
//!
//! Tried and dropped: the same for max pooling's plane loops — no measurable change in a training
//! step (alternating builds of the private walkthrough, 4 rounds); that loop is bound by memory.

/// The instruction sets the crate's hand-written loops are compiled for, widest first. This module
/// owns CPU detection: every kernel with variants asks [`isa`] (or uses [`wide!`]), so one
/// setting decides for all of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    /// Whatever the build targets (SSE2 on x86-64): the reference compilation.
    Baseline,
    /// AVX2 with FMA (8 floats per instruction; every CPU with AVX2 has FMA but one of VIA's).
    Avx2,
    /// AVX-512 Foundation (16 floats per instruction).
    Avx512,
}

/// The widest [`Isa`] this CPU supports, capped by the environment variable `BACKPROP_ISA`
/// (`baseline`, `avx2` or `avx512`: to compare variants on one machine). Detected once.
pub fn isa() -> Isa {
    static ISA: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
    *ISA.get_or_init(|| {
        let cap = match std::env::var("BACKPROP_ISA").as_deref() {
            Ok("baseline") => Isa::Baseline,
            Ok("avx2") => Isa::Avx2,
            _ => Isa::Avx512,
        };
        detected().min(cap)
    })
}

/// The widest [`Isa`] the CPU supports.
fn detected() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        // The AVX-512 variants also call AVX2 + FMA code (quarter tiles, dot products): a CPU
        // (or a virtual one with a hand-edited feature mask) reporting AVX-512F without them
        // gets the widest ISA it does have.
        let avx2 = std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma");
        if std::arch::is_x86_feature_detected!("avx512f") && avx2 {
            return Isa::Avx512;
        }
        if avx2 {
            return Isa::Avx2;
        }
    }
    Isa::Baseline
}

/// Runs `f` in a function compiled with AVX2 and FMA enabled, so that the loop inlined into it is
/// vectorised 8 wide (and `f32::mul_add` is one instruction).
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn with_avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// Runs `f` in a function compiled with AVX-512F enabled (16 floats per instruction). No fused
/// multiply-adds appear unless `f` asks for them (Rust does not contract `a * b + c`), so the
/// results of a [`wide!`] loop are those of the baseline compilation, bit for bit; a
/// [`wide_fused!`] loop's are those of the AVX2 + FMA compilation.
///
/// # Safety
/// The CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
pub(crate) unsafe fn with_avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// Runs `f` compiled for `isa` if the CPU has it (returns the ISA used), else for the baseline:
/// for tests that compare the compilations of a loop. Pass an `#[inline(always)]` closure, as
/// `wide!` does: one left out of line is compiled for the baseline whatever `isa` says.
#[cfg(test)]
pub(crate) fn run_with(isa: Isa, f: impl FnOnce()) -> Isa {
    #[cfg(target_arch = "x86_64")]
    match isa {
        Isa::Avx512 if detected() >= Isa::Avx512 => {
            // SAFETY: the CPU supports AVX-512F (checked just above).
            unsafe { with_avx512(f) };
            return Isa::Avx512;
        }
        Isa::Avx2 if detected() >= Isa::Avx2 => {
            // SAFETY: the CPU supports AVX2 (checked just above).
            unsafe { with_avx2(f) };
            return Isa::Avx2;
        }
        _ => {}
    }
    f();
    Isa::Baseline
}

/// True if the CPU has AVX2 (and the `BACKPROP_ISA` cap allows it): the kernels written out with
/// AVX2 intrinsics use them then.
pub(crate) fn wide_vectors() -> bool {
    isa() >= Isa::Avx2
}

/// `wide!(expr)`: evaluates `expr` (a call of an `#[inline(always)]` loop) compiled for the
/// widest [`Isa`] the CPU has: AVX-512F, AVX2, or as it is.
macro_rules! wide {
    ($e:expr) => {{
        #[cfg(target_arch = "x86_64")]
        {
            match $crate::tensor::simd::isa() {
                // SAFETY: `isa` returns an ISA only when the CPU supports it.
                // `#[inline(always)]` on the closure: otherwise the compiler may keep it out of line,
                // compiled without the ISA (see the module docs).
                $crate::tensor::simd::Isa::Avx512 => unsafe {
                    $crate::tensor::simd::with_avx512(
                        #[inline(always)]
                        || $e,
                    )
                },
                // SAFETY: as above.
                $crate::tensor::simd::Isa::Avx2 => unsafe {
                    $crate::tensor::simd::with_avx2(
                        #[inline(always)]
                        || $e,
                    )
                },
                $crate::tensor::simd::Isa::Baseline => $e,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            $e
        }
    }};
}
pub(crate) use wide;

/// `wide_fused!(f(args…))`: calls `f::<M>(args…)`, a loop generic over
/// [`MulAdd`](crate::tensor::math::MulAdd), compiled as [`wide!`] compiles it, with
/// [`Fused`](crate::tensor::math::Fused) multiply-adds on the ISAs that have FMA (AVX2 + FMA and
/// AVX-512F, which then give the same bits) and [`Separate`](crate::tensor::math::Separate) ones
/// for the baseline — where results may differ from the wide variants' by a rounding per
/// multiply-add (the tests of each loop bound the difference).
macro_rules! wide_fused {
    ($f:ident ( $($arg:expr),* $(,)? )) => {{
        #[cfg(target_arch = "x86_64")]
        {
            match $crate::tensor::simd::isa() {
                // SAFETY: `isa` returns an ISA only when the CPU supports it (AVX2 with FMA).
                $crate::tensor::simd::Isa::Avx512 => unsafe {
                    $crate::tensor::simd::with_avx512(
                        #[inline(always)]
                        || $f::<$crate::tensor::math::Fused>($($arg),*),
                    )
                },
                // SAFETY: as above.
                $crate::tensor::simd::Isa::Avx2 => unsafe {
                    $crate::tensor::simd::with_avx2(
                        #[inline(always)]
                        || $f::<$crate::tensor::math::Fused>($($arg),*),
                    )
                },
                $crate::tensor::simd::Isa::Baseline => $f::<$crate::tensor::math::Separate>($($arg),*),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            $f::<$crate::tensor::math::Separate>($($arg),*)
        }
    }};
}
pub(crate) use wide_fused;
