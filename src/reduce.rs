//! Reduction kernels: `dst = dst op src`, elementwise, for every dtype x op.
//!
//! Owns the arithmetic only: no allocation, no I/O, and no knowledge of ranks beyond
//! the divisor that finishes `Avg`. Callers (the executor, the verifier) hand in raw
//! byte buffers; this module must not assume they are aligned for the element type.
//!
//! Every loop matches on the op once, outside the loop, and keeps a branch-free body
//! so LLVM vectorises it for the baseline x86_64 target (SSE2). On x86_64 the same
//! bodies are compiled a second time with AVX2 and picked at run time, because the
//! executor reduces cache-resident chunks where the wider registers pay off.

use crate::element::{DataType, Element};
use half::{bf16, f16, slice::HalfFloatSliceExt};

/// A reduction operator; the integer values are NCCL's `ncclRedOp_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[repr(u8)]
pub enum ReduceOp {
    /// Sum (integers wrap).
    Sum = 0,
    /// Product (integers wrap).
    Prod = 1,
    /// Maximum.
    Max = 2,
    /// Minimum.
    Min = 3,
    /// Average: sum, then divided by the number of ranks.
    Avg = 4,
}

impl ReduceOp {
    /// Every op, in NCCL's order.
    pub const ALL: [ReduceOp; 5] = [
        ReduceOp::Sum,
        ReduceOp::Prod,
        ReduceOp::Max,
        ReduceOp::Min,
        ReduceOp::Avg,
    ];

    /// The name nccl-tests prints (`sum`, `prod`, `max`, `min`, `avg`).
    pub const fn name(self) -> &'static str {
        match self {
            ReduceOp::Sum => "sum",
            ReduceOp::Prod => "prod",
            ReduceOp::Max => "max",
            ReduceOp::Min => "min",
            ReduceOp::Avg => "avg",
        }
    }

    /// Parses a name as printed by [`ReduceOp::name`].
    pub fn parse(s: &str) -> Option<ReduceOp> {
        ReduceOp::ALL
            .into_iter()
            .find(|o| o.name().eq_ignore_ascii_case(s))
    }

    /// The op for NCCL's integer value, if it is one.
    pub fn from_nccl(v: i32) -> Option<ReduceOp> {
        ReduceOp::ALL.get(usize::try_from(v).ok()?).copied()
    }
}

impl std::fmt::Display for ReduceOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// `dst[i] = dst[i] op src[i]` for typed slices of equal length. `Avg` sums here;
/// the division happens once, in [`finish_avg`].
pub fn reduce_slice<T: Element>(op: ReduceOp, dst: &mut [T], src: &[T]) {
    reduce_bytes(
        T::DTYPE,
        op,
        bytemuck::cast_slice_mut(dst),
        bytemuck::cast_slice(src),
    )
}

/// `dst = dst op src` over raw bytes holding `dtype` elements. `Avg` sums here; the
/// division happens once, in [`finish_avg`].
///
/// Both lengths must be equal and a multiple of the element size; callers guarantee
/// this, so it is only checked by debug assertions (a release build reduces the
/// common whole elements and leaves any trailing partial element untouched).
/// Alignment is not required: misaligned buffers are staged through aligned stack
/// blocks, at the cost of two extra copies.
pub fn reduce_bytes(dtype: DataType, op: ReduceOp, dst: &mut [u8], src: &[u8]) {
    debug_assert_eq!(dst.len(), src.len(), "reduce_bytes: length mismatch");
    debug_assert_eq!(
        dst.len() % dtype.size(),
        0,
        "reduce_bytes: {} bytes is not a whole number of {dtype} elements",
        dst.len()
    );
    match dtype {
        DataType::I8 => reduce_as::<i8>(op, dst, src),
        DataType::U8 => reduce_as::<u8>(op, dst, src),
        DataType::I32 => reduce_as::<i32>(op, dst, src),
        DataType::U32 => reduce_as::<u32>(op, dst, src),
        DataType::I64 => reduce_as::<i64>(op, dst, src),
        DataType::U64 => reduce_as::<u64>(op, dst, src),
        DataType::F16 => reduce_as::<f16>(op, dst, src),
        DataType::F32 => reduce_as::<f32>(op, dst, src),
        DataType::F64 => reduce_as::<f64>(op, dst, src),
        DataType::BF16 => reduce_as::<bf16>(op, dst, src),
        DataType::F8E4M3 | DataType::F8E5M2 | DataType::F8E4M3Fnuz | DataType::F8E5M2Fnuz => {
            fp8_apply(dtype, dst, src, |d, s| reduce_as::<f32>(op, d, s))
        }
    }
}

/// fp8 through f32: decodes `dst` (and `src`) block by block, applies `f` to the f32
/// values (`f(dst, src)`, `src` empty when `src` is), and encodes `dst` back, rounding
/// once per call (see `element::fp8`).
fn fp8_apply(dtype: DataType, dst: &mut [u8], src: &[u8], f: impl Fn(&mut [u8], &[u8])) {
    let Some(fmt) = dtype.fp8() else { return };
    // 256 decodes per call instead of one per element.
    let lut: [f32; 256] = std::array::from_fn(|b| fmt.decode(b as u8));
    let mut d32 = [0f32; WIDEN_BLOCK];
    let mut s32 = [0f32; WIDEN_BLOCK];
    for (i, dchunk) in dst.chunks_mut(WIDEN_BLOCK).enumerate() {
        let n = dchunk.len();
        for (x, b) in d32.iter_mut().zip(dchunk.iter()) {
            *x = lut[usize::from(*b)];
        }
        let schunk = src.get(i * WIDEN_BLOCK..i * WIDEN_BLOCK + n).unwrap_or(&[]);
        for (x, b) in s32.iter_mut().zip(schunk) {
            *x = lut[usize::from(*b)];
        }
        let sn = if schunk.is_empty() { 0 } else { n };
        f(
            bytemuck::cast_slice_mut(&mut d32[..n]),
            bytemuck::cast_slice(&s32[..sn]),
        );
        for (b, x) in dchunk.iter_mut().zip(&d32[..n]) {
            *b = fmt.encode(*x);
        }
    }
}

/// Divides every element by `nranks` (the second half of `Avg`; integers truncate
/// toward zero, floats divide in their own precision, f16/bf16 through f32 and round
/// to nearest even).
///
/// `nranks` must be at least 1 and `dst.len()` a multiple of the element size;
/// callers guarantee both, so they are debug assertions only. Alignment is not
/// required.
pub fn finish_avg(dtype: DataType, dst: &mut [u8], nranks: usize) {
    debug_assert!(nranks >= 1, "finish_avg: nranks must be at least 1");
    debug_assert_eq!(
        dst.len() % dtype.size(),
        0,
        "finish_avg: {} bytes is not a whole number of {dtype} elements",
        dst.len()
    );
    match dtype {
        DataType::I8 => divide_as::<i8>(dst, nranks),
        DataType::U8 => divide_as::<u8>(dst, nranks),
        DataType::I32 => divide_as::<i32>(dst, nranks),
        DataType::U32 => divide_as::<u32>(dst, nranks),
        DataType::I64 => divide_as::<i64>(dst, nranks),
        DataType::U64 => divide_as::<u64>(dst, nranks),
        DataType::F16 => divide_as::<f16>(dst, nranks),
        DataType::F32 => divide_as::<f32>(dst, nranks),
        DataType::F64 => divide_as::<f64>(dst, nranks),
        DataType::BF16 => divide_as::<bf16>(dst, nranks),
        DataType::F8E4M3 | DataType::F8E5M2 | DataType::F8E4M3Fnuz | DataType::F8E5M2Fnuz => {
            fp8_apply(dtype, dst, &[], |d, _| divide_as::<f32>(d, nranks))
        }
    }
}

/// Bytes per block when a misaligned buffer is staged through the stack: small
/// enough to stay in L1 next to its twin, large enough to amortise the dispatch.
const STAGE_BYTES: usize = 4096;

/// Elements per f32 block when f16 is widened in software (2 x 1 KiB on the stack).
const WIDEN_BLOCK: usize = 256;

/// The typed loops behind one element type. Methods are `inline(always)` so each
/// body is compiled into both the baseline and the AVX2 entry points below.
trait Lanes: bytemuck::Pod {
    /// `dst = dst op src`, equal lengths.
    fn reduce(op: ReduceOp, dst: &mut [Self], src: &[Self]);
    /// `dst = dst / nranks`.
    fn divide(dst: &mut [Self], nranks: usize);
}

/// Applies `f` pairwise; the shape LLVM's loop vectoriser recognises.
#[inline(always)]
fn zip_apply<T: Copy>(dst: &mut [T], src: &[T], f: impl Fn(T, T) -> T) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = f(*d, *s);
    }
}

macro_rules! int_lanes {
    ($($t:ty),*) => {$(
        impl Lanes for $t {
            #[inline(always)]
            fn reduce(op: ReduceOp, dst: &mut [Self], src: &[Self]) {
                match op {
                    ReduceOp::Sum | ReduceOp::Avg => zip_apply(dst, src, <$t>::wrapping_add),
                    ReduceOp::Prod => zip_apply(dst, src, <$t>::wrapping_mul),
                    ReduceOp::Max => zip_apply(dst, src, Ord::max),
                    ReduceOp::Min => zip_apply(dst, src, Ord::min),
                }
            }

            #[inline(always)]
            fn divide(dst: &mut [Self], nranks: usize) {
                // Integer division has no SIMD instruction. For 8- and 32-bit values the
                // f64 quotient truncates to the exact integer quotient (|x| < 2^32, so
                // the gap to the next integer is far above f64's rounding error), and
                // it vectorises; it also copes with nranks beyond the type's range.
                let n = nranks as f64;
                for d in dst.iter_mut() {
                    *d = (*d as f64 / n) as $t;
                }
            }
        }
    )*};
}
int_lanes!(i8, u8, i32, u32);

macro_rules! wide_int_lanes {
    ($($t:ty),*) => {$(
        impl Lanes for $t {
            #[inline(always)]
            fn reduce(op: ReduceOp, dst: &mut [Self], src: &[Self]) {
                match op {
                    ReduceOp::Sum | ReduceOp::Avg => zip_apply(dst, src, <$t>::wrapping_add),
                    ReduceOp::Prod => zip_apply(dst, src, <$t>::wrapping_mul),
                    ReduceOp::Max => zip_apply(dst, src, Ord::max),
                    ReduceOp::Min => zip_apply(dst, src, Ord::min),
                }
            }

            #[inline(always)]
            fn divide(dst: &mut [Self], nranks: usize) {
                // 64-bit values do not fit f64 exactly, so divide as integers; i128
                // only for a divisor outside the type's range, where x / n is 0 or -1.
                match <$t>::try_from(nranks) {
                    Ok(n) => dst.iter_mut().for_each(|d| *d /= n),
                    Err(_) => dst
                        .iter_mut()
                        .for_each(|d| *d = (*d as i128 / nranks as i128) as $t),
                }
            }
        }
    )*};
}
wide_int_lanes!(i64, u64);

macro_rules! float_lanes {
    ($($t:ty),*) => {$(
        impl Lanes for $t {
            #[inline(always)]
            fn reduce(op: ReduceOp, dst: &mut [Self], src: &[Self]) {
                // Not `if s > d { s } else { d }`: in place, LLVM turns that into a
                // store only where s wins, a masked store that runs 6x slower on AMD.
                // `max`/`min` store every lane (max, unord-compare, blend) and, like
                // NCCL's fmaxf, return the non-NaN operand.
                match op {
                    ReduceOp::Sum | ReduceOp::Avg => zip_apply(dst, src, |d, s| d + s),
                    ReduceOp::Prod => zip_apply(dst, src, |d, s| d * s),
                    ReduceOp::Max => zip_apply(dst, src, <$t>::max),
                    ReduceOp::Min => zip_apply(dst, src, <$t>::min),
                }
            }

            #[inline(always)]
            fn divide(dst: &mut [Self], nranks: usize) {
                let n = nranks as $t;
                dst.iter_mut().for_each(|d| *d /= n);
            }
        }
    )*};
}
float_lanes!(f32, f64);

/// bf16 is the top half of an f32, so widening is a shift: exact, and it vectorises.
#[inline(always)]
fn bf16_to_f32(b: bf16) -> f32 {
    f32::from_bits(u32::from(b.to_bits()) << 16)
}

/// Narrows with round-to-nearest-even, bit-identical to `bf16::from_f32` (which is a
/// scalar loop in `half`); written branch-free so it vectorises.
#[inline(always)]
fn f32_to_bf16(f: f32) -> bf16 {
    let x = f.to_bits();
    let bits = if f.is_nan() {
        // Keep the payload's top bits but force a quiet NaN, as `half` does.
        (x >> 16) | 0x0040
    } else {
        // Adding 0x7fff rounds up past the halfway point; the kept LSB breaks ties
        // to even. Cannot carry out of u32: only NaNs lie above the largest +inf.
        (x + 0x7fff + ((x >> 16) & 1)) >> 16
    };
    bf16::from_bits(bits as u16)
}

impl Lanes for bf16 {
    #[inline(always)]
    fn reduce(op: ReduceOp, dst: &mut [Self], src: &[Self]) {
        // Fused widen-op-narrow per element: no staging buffers needed.
        let via_f32 = |f: fn(f32, f32) -> f32| {
            move |d: bf16, s: bf16| f32_to_bf16(f(bf16_to_f32(d), bf16_to_f32(s)))
        };
        match op {
            ReduceOp::Sum | ReduceOp::Avg => zip_apply(dst, src, via_f32(|d, s| d + s)),
            ReduceOp::Prod => zip_apply(dst, src, via_f32(|d, s| d * s)),
            ReduceOp::Max => zip_apply(dst, src, via_f32(f32::max)),
            ReduceOp::Min => zip_apply(dst, src, via_f32(f32::min)),
        }
    }

    #[inline(always)]
    fn divide(dst: &mut [Self], nranks: usize) {
        let n = nranks as f32;
        dst.iter_mut()
            .for_each(|d| *d = f32_to_bf16(bf16_to_f32(*d) / n));
    }
}

impl Lanes for f16 {
    #[inline(always)]
    fn reduce(op: ReduceOp, dst: &mut [Self], src: &[Self]) {
        match op {
            ReduceOp::Sum | ReduceOp::Avg => f16_zip_apply(dst, src, |d, s| d + s),
            ReduceOp::Prod => f16_zip_apply(dst, src, |d, s| d * s),
            ReduceOp::Max => f16_zip_apply(dst, src, f32::max),
            ReduceOp::Min => f16_zip_apply(dst, src, f32::min),
        }
    }

    #[inline(always)]
    fn divide(dst: &mut [Self], nranks: usize) {
        let n = nranks as f32;
        f16_map(dst, |d| d / n);
    }
}

/// `dst = f(dst, src)` computed in f32, with F16C when the CPU has it.
#[inline(always)]
fn f16_zip_apply(dst: &mut [f16], src: &[f16], f: impl Fn(f32, f32) -> f32) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("f16c") {
        // SAFETY: `f16c::zip_apply` only requires F16C, which was detected just above.
        return unsafe { f16c::zip_apply(dst, src, f) };
    }
    f16_zip_apply_soft(dst, src, f)
}

/// `dst = f(dst)` computed in f32, with F16C when the CPU has it.
#[inline(always)]
fn f16_map(dst: &mut [f16], f: impl Fn(f32) -> f32) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("f16c") {
        // SAFETY: `f16c::map` only requires F16C, which was detected just above.
        return unsafe { f16c::map(dst, f) };
    }
    f16_map_soft(dst, f)
}

/// Without F16C, conversion does not vectorise; `half`'s slice conversions over
/// L1-sized stack blocks at least keep the f32 arithmetic vectorised.
#[inline(always)]
fn f16_zip_apply_soft(dst: &mut [f16], src: &[f16], f: impl Fn(f32, f32) -> f32) {
    let mut d32 = [0f32; WIDEN_BLOCK];
    let mut s32 = [0f32; WIDEN_BLOCK];
    for (d, s) in dst.chunks_mut(WIDEN_BLOCK).zip(src.chunks(WIDEN_BLOCK)) {
        let (d32, s32) = (&mut d32[..d.len()], &mut s32[..d.len()]);
        d.convert_to_f32_slice(d32);
        s.convert_to_f32_slice(s32);
        zip_apply(d32, s32, &f);
        d.convert_from_f32_slice(d32);
    }
}

/// [`f16_zip_apply_soft`] for a unary `f`.
#[inline(always)]
fn f16_map_soft(dst: &mut [f16], f: impl Fn(f32) -> f32) {
    let mut d32 = [0f32; WIDEN_BLOCK];
    for d in dst.chunks_mut(WIDEN_BLOCK) {
        let d32 = &mut d32[..d.len()];
        d.convert_to_f32_slice(d32);
        d32.iter_mut().for_each(|x| *x = f(*x));
        d.convert_from_f32_slice(d32);
    }
}

/// F16C kernels: widen eight lanes, apply the op in f32, narrow with round to
/// nearest even, all in registers. `half` has the same conversions but calls them
/// through a function pointer per eight elements, which made f16 several times
/// slower than bf16.
#[cfg(target_arch = "x86_64")]
mod f16c {
    use half::f16;
    use std::arch::x86_64::{
        __m128i, __m256, _mm256_cvtph_ps, _mm256_cvtps_ph, _MM_FROUND_TO_NEAREST_INT,
    };

    /// Eight f16 lanes widened to f32.
    #[target_feature(enable = "f16c")]
    #[inline]
    unsafe fn widen(h: &[f16]) -> [f32; 8] {
        let h: __m128i = bytemuck::pod_read_unaligned(bytemuck::cast_slice(h));
        bytemuck::cast::<__m256, [f32; 8]>(_mm256_cvtph_ps(h))
    }

    /// Eight f32 lanes narrowed to f16, rounding to nearest even.
    #[target_feature(enable = "f16c")]
    #[inline]
    unsafe fn narrow(w: [f32; 8]) -> [f16; 8] {
        let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(bytemuck::cast::<_, __m256>(w));
        bytemuck::cast::<__m128i, [f16; 8]>(h)
    }

    /// `dst = f(dst, src)` in f32, equal lengths.
    ///
    /// # Safety
    /// The CPU must support F16C. (`unsafe fn` rather than a safe
    /// `#[target_feature]` fn, which needs Rust 1.86; the crate supports 1.80.)
    #[target_feature(enable = "f16c")]
    #[inline]
    pub(super) unsafe fn zip_apply(dst: &mut [f16], src: &[f16], f: impl Fn(f32, f32) -> f32) {
        let mut d8 = dst.chunks_exact_mut(8);
        let mut s8 = src.chunks_exact(8);
        for (d, s) in (&mut d8).zip(&mut s8) {
            let (a, b) = (widen(d), widen(s));
            d.copy_from_slice(&narrow(std::array::from_fn(|i| f(a[i], b[i]))));
        }
        for (d, s) in d8.into_remainder().iter_mut().zip(s8.remainder()) {
            *d = f16::from_f32(f(d.to_f32(), s.to_f32()));
        }
    }

    /// `dst = f(dst)` in f32.
    ///
    /// # Safety
    /// The CPU must support F16C.
    #[target_feature(enable = "f16c")]
    #[inline]
    pub(super) unsafe fn map(dst: &mut [f16], f: impl Fn(f32) -> f32) {
        let mut d8 = dst.chunks_exact_mut(8);
        for d in &mut d8 {
            let a = widen(d);
            d.copy_from_slice(&narrow(std::array::from_fn(|i| f(a[i]))));
        }
        for d in d8.into_remainder() {
            *d = f16::from_f32(f(d.to_f32()));
        }
    }
}

/// Runs the best compiled copy of `T::reduce` for this CPU.
fn reduce_typed<T: Lanes>(op: ReduceOp, dst: &mut [T], src: &[T]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("f16c") {
        // SAFETY: `reduce_avx2` requires AVX2 and F16C, both detected just above.
        return unsafe { reduce_avx2(op, dst, src) };
    }
    T::reduce(op, dst, src)
}

/// Runs the best compiled copy of `T::divide` for this CPU.
fn divide_typed<T: Lanes>(dst: &mut [T], nranks: usize) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("f16c") {
        // SAFETY: `divide_avx2` requires AVX2 and F16C, both detected just above.
        return unsafe { divide_avx2(dst, nranks) };
    }
    T::divide(dst, nranks)
}

/// # Safety
/// The CPU must support AVX2 and F16C.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,f16c")]
unsafe fn reduce_avx2<T: Lanes>(op: ReduceOp, dst: &mut [T], src: &[T]) {
    T::reduce(op, dst, src)
}

/// # Safety
/// The CPU must support AVX2 and F16C.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,f16c")]
unsafe fn divide_avx2<T: Lanes>(dst: &mut [T], nranks: usize) {
    T::divide(dst, nranks)
}

/// Reduces in place when both buffers are aligned for `T`, else through the stack.
fn reduce_as<T: Lanes>(op: ReduceOp, dst: &mut [u8], src: &[u8]) {
    if let Ok(s) = bytemuck::try_cast_slice::<u8, T>(src) {
        if let Ok(d) = bytemuck::try_cast_slice_mut::<u8, T>(dst) {
            return reduce_typed(op, d, s);
        }
    }
    let mut dbuf = [0u64; STAGE_BYTES / 8];
    let mut sbuf = [0u64; STAGE_BYTES / 8];
    let whole = dst.len().min(src.len()) / size_of::<T>() * size_of::<T>();
    for (d, s) in dst[..whole]
        .chunks_mut(STAGE_BYTES)
        .zip(src[..whole].chunks(STAGE_BYTES))
    {
        // u64 storage aligns the staging blocks for every element type.
        let db = &mut bytemuck::cast_slice_mut::<u64, u8>(&mut dbuf)[..d.len()];
        let sb = &mut bytemuck::cast_slice_mut::<u64, u8>(&mut sbuf)[..s.len()];
        db.copy_from_slice(d);
        sb.copy_from_slice(s);
        reduce_typed::<T>(op, bytemuck::cast_slice_mut(db), bytemuck::cast_slice(sb));
        d.copy_from_slice(db);
    }
}

/// Divides in place when `dst` is aligned for `T`, else through the stack.
fn divide_as<T: Lanes>(dst: &mut [u8], nranks: usize) {
    if let Ok(d) = bytemuck::try_cast_slice_mut::<u8, T>(dst) {
        return divide_typed(d, nranks);
    }
    let mut dbuf = [0u64; STAGE_BYTES / 8];
    let whole = dst.len() / size_of::<T>() * size_of::<T>();
    for d in dst[..whole].chunks_mut(STAGE_BYTES) {
        let db = &mut bytemuck::cast_slice_mut::<u64, u8>(&mut dbuf)[..d.len()];
        db.copy_from_slice(d);
        divide_typed::<T>(bytemuck::cast_slice_mut(db), nranks);
        d.copy_from_slice(db);
    }
}

#[cfg(test)]
mod tests {
    //! Every dtype x op x length x alignment against scalar references written here,
    //! independently of the kernels (integers via i128, halves via `half`'s own
    //! scalar conversions).

    use super::*;

    const LENS: [usize; 5] = [0, 1, 7, 1031, 4099];
    /// (dst, src) byte offsets inside 8-aligned storage; 1 and 3 misalign every
    /// multi-byte type.
    const OFFSETS: [(usize, usize); 4] = [(0, 0), (1, 0), (0, 1), (1, 3)];

    /// Deterministic xorshift so failures reproduce.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    /// The test's own definition of each element type's semantics.
    trait Reference: Element {
        fn random(rng: &mut Rng) -> Self;
        fn op(op: ReduceOp, a: Self, b: Self) -> Self;
        fn avg(a: Self, nranks: usize) -> Self;
        fn same(a: Self, b: Self) -> bool {
            bytemuck::bytes_of(&a) == bytemuck::bytes_of(&b)
        }
    }

    macro_rules! int_reference {
        ($($t:ty),*) => {$(
            impl Reference for $t {
                fn random(rng: &mut Rng) -> Self {
                    // Full range, so sums and products overflow often.
                    rng.next() as $t
                }
                fn op(op: ReduceOp, a: Self, b: Self) -> Self {
                    let (x, y) = (a as i128, b as i128);
                    match op {
                        // Truncating the exact i128 result is the wrapped result.
                        ReduceOp::Sum | ReduceOp::Avg => (x + y) as $t,
                        ReduceOp::Prod => x.wrapping_mul(y) as $t,
                        ReduceOp::Max => (if x >= y { x } else { y }) as $t,
                        ReduceOp::Min => (if x <= y { x } else { y }) as $t,
                    }
                }
                fn avg(a: Self, nranks: usize) -> Self {
                    (a as i128 / nranks as i128) as $t
                }
            }
        )*};
    }
    int_reference!(i8, u8, i32, u32, i64, u64);

    /// Finite values with fractional bits, never -0.0 (so Max/Min have one answer).
    fn random_f64(rng: &mut Rng) -> f64 {
        ((rng.next() % 200_001) as f64 - 100_000.0) / 997.0
    }

    fn f32_op(op: ReduceOp, a: f32, b: f32) -> f32 {
        match op {
            ReduceOp::Sum | ReduceOp::Avg => a + b,
            ReduceOp::Prod => a * b,
            ReduceOp::Max => a.max(b),
            ReduceOp::Min => a.min(b),
        }
    }

    impl Reference for f32 {
        fn random(rng: &mut Rng) -> Self {
            random_f64(rng) as f32
        }
        fn op(op: ReduceOp, a: Self, b: Self) -> Self {
            f32_op(op, a, b)
        }
        fn avg(a: Self, nranks: usize) -> Self {
            a / nranks as f32
        }
    }

    impl Reference for f64 {
        fn random(rng: &mut Rng) -> Self {
            random_f64(rng)
        }
        fn op(op: ReduceOp, a: Self, b: Self) -> Self {
            match op {
                ReduceOp::Sum | ReduceOp::Avg => a + b,
                ReduceOp::Prod => a * b,
                ReduceOp::Max => a.max(b),
                ReduceOp::Min => a.min(b),
            }
        }
        fn avg(a: Self, nranks: usize) -> Self {
            a / nranks as f64
        }
    }

    macro_rules! half_reference {
        ($($t:ty),*) => {$(
            impl Reference for $t {
                fn random(rng: &mut Rng) -> Self {
                    <$t>::from_f64(random_f64(rng))
                }
                fn op(op: ReduceOp, a: Self, b: Self) -> Self {
                    <$t>::from_f32(f32_op(op, a.to_f32(), b.to_f32()))
                }
                fn avg(a: Self, nranks: usize) -> Self {
                    <$t>::from_f32(a.to_f32() / nranks as f32)
                }
            }
        )*};
    }
    half_reference!(f16, bf16);

    /// `len` bytes at `offset` inside 8-aligned storage.
    fn window(storage: &mut [u64], offset: usize, len: usize) -> &mut [u8] {
        &mut bytemuck::cast_slice_mut::<u64, u8>(storage)[offset..offset + len]
    }

    fn storage(len: usize) -> Vec<u64> {
        vec![0u64; len / 8 + 2]
    }

    fn check_reduce<T: Reference + Lanes>() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ T::DTYPE as u64);
        for len in LENS {
            let a: Vec<T> = (0..len).map(|_| T::random(&mut rng)).collect();
            let b: Vec<T> = (0..len).map(|_| T::random(&mut rng)).collect();
            let bytes = len * size_of::<T>();
            for op in ReduceOp::ALL {
                let want: Vec<T> = a.iter().zip(&b).map(|(x, y)| T::op(op, *x, *y)).collect();
                // The baseline body, which run-time dispatch skips on AVX2 machines.
                let mut base = a.clone();
                T::reduce(op, &mut base, &b);
                assert!(
                    base.iter().zip(&want).all(|(g, w)| T::same(*g, *w)),
                    "{} {op} len {len}: baseline kernel differs",
                    T::DTYPE
                );
                for (doff, soff) in OFFSETS {
                    let (mut ds, mut ss) = (storage(bytes), storage(bytes));
                    let dst = window(&mut ds, doff, bytes);
                    dst.copy_from_slice(bytemuck::cast_slice(&a));
                    let src = window(&mut ss, soff, bytes);
                    src.copy_from_slice(bytemuck::cast_slice(&b));
                    reduce_bytes(T::DTYPE, op, dst, src);
                    for (i, w) in want.iter().enumerate() {
                        let got: T = bytemuck::pod_read_unaligned(
                            &dst[i * size_of::<T>()..(i + 1) * size_of::<T>()],
                        );
                        assert!(
                            T::same(got, *w),
                            "{} {op} len {len} offsets ({doff},{soff}) [{i}]: \
                             {:?} op {:?} = {got:?}, want {w:?}",
                            T::DTYPE,
                            a[i],
                            b[i]
                        );
                    }
                }
            }
        }
    }

    fn check_avg<T: Reference + Lanes>() {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d ^ T::DTYPE as u64);
        for len in LENS {
            let a: Vec<T> = (0..len).map(|_| T::random(&mut rng)).collect();
            let bytes = len * size_of::<T>();
            for nranks in [1, 2, 3, 7, 200] {
                let mut base = a.clone();
                T::divide(&mut base, nranks);
                assert!(
                    base.iter()
                        .zip(&a)
                        .all(|(g, x)| T::same(*g, T::avg(*x, nranks))),
                    "{} / {nranks} len {len}: baseline kernel differs",
                    T::DTYPE
                );
                for offset in [0, 1] {
                    let mut ds = storage(bytes);
                    let dst = window(&mut ds, offset, bytes);
                    dst.copy_from_slice(bytemuck::cast_slice(&a));
                    finish_avg(T::DTYPE, dst, nranks);
                    for (i, x) in a.iter().enumerate() {
                        let got: T = bytemuck::pod_read_unaligned(
                            &dst[i * size_of::<T>()..(i + 1) * size_of::<T>()],
                        );
                        let want = T::avg(*x, nranks);
                        assert!(
                            T::same(got, want),
                            "{} {x:?} / {nranks} offset {offset}: {got:?}, want {want:?}",
                            T::DTYPE
                        );
                    }
                }
            }
        }
    }

    macro_rules! per_dtype {
        ($($name:ident: $t:ty),*) => {$(
            mod $name {
                use super::*;
                #[test]
                fn reduce_every_op_len_alignment() {
                    check_reduce::<$t>();
                }
                #[test]
                fn finish_avg_every_len_alignment() {
                    check_avg::<$t>();
                }
            }
        )*};
    }
    per_dtype!(i8_: i8, u8_: u8, i32_: i32, u32_: u32, i64_: i64, u64_: u64,
               f16_: f16, f32_: f32, f64_: f64, bf16_: bf16);

    #[test]
    fn f16_without_f16c_matches_reference() {
        // The dispatching tests take the F16C path on any machine that has it.
        let mut rng = Rng(11);
        let a: Vec<f16> = (0..1031).map(|_| f16::random(&mut rng)).collect();
        let b: Vec<f16> = (0..1031).map(|_| f16::random(&mut rng)).collect();
        for op in [ReduceOp::Sum, ReduceOp::Prod, ReduceOp::Max, ReduceOp::Min] {
            let mut d = a.clone();
            let f = match op {
                ReduceOp::Sum => |d: f32, s: f32| d + s,
                ReduceOp::Prod => |d: f32, s: f32| d * s,
                ReduceOp::Max => f32::max,
                _ => f32::min,
            };
            f16_zip_apply_soft(&mut d, &b, f);
            for i in 0..a.len() {
                assert!(f16::same(d[i], f16::op(op, a[i], b[i])), "{op} [{i}]");
            }
        }
        let mut d = a.clone();
        f16_map_soft(&mut d, |x| x / 3.0);
        for i in 0..a.len() {
            assert!(f16::same(d[i], f16::avg(a[i], 3)), "avg [{i}]");
        }
    }

    #[test]
    fn every_dtype_has_a_test() {
        // `per_dtype!` above must grow with DataType.
        assert_eq!(DataType::ALL.len(), 10);
    }

    #[test]
    fn integers_wrap() {
        let mut d = [i32::MAX, i32::MIN, 3];
        reduce_slice(ReduceOp::Sum, &mut d, &[1, -1, i32::MAX]);
        assert_eq!(d, [i32::MIN, i32::MAX, i32::MIN + 2]);
        let mut d = [200u8, 16];
        reduce_slice(ReduceOp::Prod, &mut d, &[2, 16]);
        assert_eq!(d, [144, 0]);
        let mut d = [u64::MAX];
        reduce_slice(ReduceOp::Avg, &mut d, &[2]);
        assert_eq!(d, [1]);
    }

    #[test]
    fn integer_avg_truncates_toward_zero() {
        let mut d = [-7i8, 7, -128, 127];
        finish_avg(DataType::I8, bytemuck::cast_slice_mut(&mut d), 2);
        assert_eq!(d, [-3, 3, -64, 63]);
        let mut d = [-128i8, 127];
        finish_avg(DataType::I8, bytemuck::cast_slice_mut(&mut d), 128);
        assert_eq!(d, [-1, 0]);
        let mut d = [-7i32, i32::MIN, i32::MAX];
        finish_avg(DataType::I32, bytemuck::cast_slice_mut(&mut d), 2);
        assert_eq!(d, [-3, i32::MIN / 2, i32::MAX / 2]);
        let mut d = [-7i64, i64::MIN];
        finish_avg(DataType::I64, bytemuck::cast_slice_mut(&mut d), 2);
        assert_eq!(d, [-3, i64::MIN / 2]);
        let mut d = [i64::MIN, i64::MAX];
        finish_avg(DataType::I64, bytemuck::cast_slice_mut(&mut d), 1 << 63);
        assert_eq!(d, [-1, 0]);
    }

    #[test]
    fn float_avg_divides() {
        let mut d = [3.0f32, -1.0];
        finish_avg(DataType::F32, bytemuck::cast_slice_mut(&mut d), 4);
        assert_eq!(d, [0.75, -0.25]);
        let mut d = [1.0f64];
        finish_avg(DataType::F64, bytemuck::cast_slice_mut(&mut d), 3);
        assert_eq!(d, [1.0 / 3.0]);
    }

    #[test]
    fn halves_round_to_nearest_even() {
        // 1 + 2^-8 is halfway between two bf16s: ties go to the even one (1.0), and
        // (1 + 2^-7) + 2^-8 ties up to 1 + 2^-6.
        let tiny = bf16::from_f32(1.0 / 256.0);
        let mut d = [bf16::ONE, bf16::from_f32(1.0 + 1.0 / 128.0)];
        reduce_slice(ReduceOp::Sum, &mut d, &[tiny, tiny]);
        assert_eq!(d, [bf16::ONE, bf16::from_f32(1.0 + 1.0 / 64.0)]);
        // The same ties one binade over for f16 (10 fraction bits).
        let tiny = f16::from_f32(1.0 / 2048.0);
        let mut d = [f16::ONE, f16::from_f32(1.0 + 1.0 / 1024.0)];
        reduce_slice(ReduceOp::Sum, &mut d, &[tiny, tiny]);
        assert_eq!(d, [f16::ONE, f16::from_f32(1.0 + 1.0 / 512.0)]);
    }

    #[test]
    fn bf16_narrowing_matches_half() {
        // Specials and every rounding boundary of a few binades, bit for bit.
        let mut rng = Rng(7);
        let specials = [
            0.0f32,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            f32::MAX,
        ];
        let randoms = (0..100_000).map(|_| f32::from_bits(rng.next() as u32));
        for f in specials.into_iter().chain(randoms) {
            assert_eq!(
                f32_to_bf16(f).to_bits(),
                bf16::from_f32(f).to_bits(),
                "{f:e}"
            );
        }
    }
}
