//! Element types a collective can carry, and their runtime tag [`DataType`].

use half::{bf16, f16};

/// Runtime tag of an element type; the integer values are NCCL's `ncclDataType_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[repr(u8)]
pub enum DataType {
    /// `i8` (ncclInt8, ncclChar).
    I8 = 0,
    /// `u8` (ncclUint8).
    U8 = 1,
    /// `i32` (ncclInt32, ncclInt).
    I32 = 2,
    /// `u32` (ncclUint32).
    U32 = 3,
    /// `i64` (ncclInt64).
    I64 = 4,
    /// `u64` (ncclUint64).
    U64 = 5,
    /// IEEE half precision (ncclFloat16, ncclHalf).
    F16 = 6,
    /// `f32` (ncclFloat32, ncclFloat).
    F32 = 7,
    /// `f64` (ncclFloat64, ncclDouble).
    F64 = 8,
    /// bfloat16 (ncclBfloat16).
    BF16 = 9,
    /// OCP fp8 E4M3 ("e4m3fn": max 448, NaN, no infinity; ncclFloat8e4m3).
    F8E4M3 = 10,
    /// OCP fp8 E5M2 (max 57344, infinities and NaNs; ncclFloat8e5m2).
    F8E5M2 = 11,
    /// fp8 E4M3 FNUZ as AMD MI300 uses it (max 240, one NaN 0x80, no infinity or
    /// negative zero; mixcclFloat8e4m3fnuz, outside NCCL's range).
    F8E4M3Fnuz = 64,
    /// fp8 E5M2 FNUZ as AMD MI300 uses it (max 57344, one NaN 0x80, no infinity or
    /// negative zero; mixcclFloat8e5m2fnuz, outside NCCL's range).
    F8E5M2Fnuz = 65,
}

impl DataType {
    /// The fp8 formats.
    pub const FP8: [DataType; 4] = [
        DataType::F8E4M3,
        DataType::F8E5M2,
        DataType::F8E4M3Fnuz,
        DataType::F8E5M2Fnuz,
    ];

    /// Every data type before NCCL 2.24 added fp8 (values 0..=9, NCCL's order): the
    /// types every reduction is exact or rounds in its own precision.
    pub const ALL: [DataType; 10] = [
        DataType::I8,
        DataType::U8,
        DataType::I32,
        DataType::U32,
        DataType::I64,
        DataType::U64,
        DataType::F16,
        DataType::F32,
        DataType::F64,
        DataType::BF16,
    ];

    /// Every data type: [`DataType::ALL`] then [`DataType::FP8`].
    pub const EVERY: [DataType; 14] = [
        DataType::I8,
        DataType::U8,
        DataType::I32,
        DataType::U32,
        DataType::I64,
        DataType::U64,
        DataType::F16,
        DataType::F32,
        DataType::F64,
        DataType::BF16,
        DataType::F8E4M3,
        DataType::F8E5M2,
        DataType::F8E4M3Fnuz,
        DataType::F8E5M2Fnuz,
    ];

    /// The fp8 format of this type, if it is one.
    pub const fn fp8(self) -> Option<fp8::Format> {
        match self {
            DataType::F8E4M3 => Some(fp8::E4M3),
            DataType::F8E5M2 => Some(fp8::E5M2),
            DataType::F8E4M3Fnuz => Some(fp8::E4M3_FNUZ),
            DataType::F8E5M2Fnuz => Some(fp8::E5M2_FNUZ),
            _ => None,
        }
    }

    /// Size of one element in bytes.
    pub const fn size(self) -> usize {
        match self {
            DataType::I8 | DataType::U8 => 1,
            DataType::F8E4M3 | DataType::F8E5M2 | DataType::F8E4M3Fnuz | DataType::F8E5M2Fnuz => 1,
            DataType::F16 | DataType::BF16 => 2,
            DataType::I32 | DataType::U32 | DataType::F32 => 4,
            DataType::I64 | DataType::U64 | DataType::F64 => 8,
        }
    }

    /// True for the floating-point types.
    pub const fn is_float(self) -> bool {
        matches!(
            self,
            DataType::F16 | DataType::BF16 | DataType::F32 | DataType::F64
        ) || self.fp8().is_some()
    }

    /// True for the signed types (integers and floats).
    pub const fn is_signed(self) -> bool {
        !matches!(self, DataType::U8 | DataType::U32 | DataType::U64)
    }

    /// The name nccl-tests prints (`float`, `bfloat16`, `int8`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            DataType::I8 => "int8",
            DataType::U8 => "uint8",
            DataType::I32 => "int32",
            DataType::U32 => "uint32",
            DataType::I64 => "int64",
            DataType::U64 => "uint64",
            DataType::F16 => "half",
            DataType::F32 => "float",
            DataType::F64 => "double",
            DataType::BF16 => "bfloat16",
            DataType::F8E4M3 => "f8e4m3",
            DataType::F8E5M2 => "f8e5m2",
            DataType::F8E4M3Fnuz => "f8e4m3fnuz",
            DataType::F8E5M2Fnuz => "f8e5m2fnuz",
        }
    }

    /// Parses nccl-tests' names and common aliases (`f32`, `fp16`, `bf16`, `int`, ...).
    pub fn parse(s: &str) -> Option<DataType> {
        Some(match s.to_ascii_lowercase().as_str() {
            "int8" | "i8" | "char" => DataType::I8,
            "uint8" | "u8" => DataType::U8,
            "int32" | "i32" | "int" => DataType::I32,
            "uint32" | "u32" => DataType::U32,
            "int64" | "i64" => DataType::I64,
            "uint64" | "u64" => DataType::U64,
            "half" | "float16" | "f16" | "fp16" => DataType::F16,
            "float" | "float32" | "f32" | "fp32" => DataType::F32,
            "double" | "float64" | "f64" | "fp64" => DataType::F64,
            "bfloat16" | "bf16" => DataType::BF16,
            "f8e4m3" | "fp8e4m3" | "float8e4m3" | "float8_e4m3fn" | "e4m3" => DataType::F8E4M3,
            "f8e5m2" | "fp8e5m2" | "float8e5m2" | "float8_e5m2" | "e5m2" => DataType::F8E5M2,
            "f8e4m3fnuz" | "float8_e4m3fnuz" | "e4m3fnuz" => DataType::F8E4M3Fnuz,
            "f8e5m2fnuz" | "float8_e5m2fnuz" | "e5m2fnuz" => DataType::F8E5M2Fnuz,
            _ => return None,
        })
    }

    /// The tag for NCCL's integer value (or mixccl's own, for the FNUZ fp8 types),
    /// if it is one.
    pub fn from_nccl(v: i32) -> Option<DataType> {
        DataType::EVERY.into_iter().find(|d| *d as i32 == v)
    }
}

impl std::fmt::Display for DataType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A type a collective can carry: plain old data with a [`DataType`] tag.
///
/// Implemented for i8, u8, i32, u32, i64, u64, f16, bf16, f32, f64 and the fp8
/// formats' bit patterns ([`fp8::F8E4M3`], ...).
pub trait Element: bytemuck::Pod + Send + Sync + PartialEq + std::fmt::Debug + 'static {
    /// The runtime tag of this type.
    const DTYPE: DataType;
    /// Converts from f64 (saturating/rounding as `as` does); used to build test data.
    fn from_f64(v: f64) -> Self;
    /// Converts to f64 (exact for every value of the 8-, 16- and 32-bit types).
    fn to_f64(self) -> f64;
}

macro_rules! element_native {
    ($($t:ty => $d:ident),* $(,)?) => {$(
        impl Element for $t {
            const DTYPE: DataType = DataType::$d;
            fn from_f64(v: f64) -> Self { v as $t }
            fn to_f64(self) -> f64 { self as f64 }
        }
    )*};
}
element_native!(i8 => I8, u8 => U8, i32 => I32, u32 => U32, i64 => I64, u64 => U64, f32 => F32, f64 => F64);

impl Element for f16 {
    const DTYPE: DataType = DataType::F16;
    fn from_f64(v: f64) -> Self {
        f16::from_f64(v)
    }
    fn to_f64(self) -> f64 {
        f16::to_f64(self)
    }
}

impl Element for bf16 {
    const DTYPE: DataType = DataType::BF16;
    fn from_f64(v: f64) -> Self {
        bf16::from_f64(v)
    }
    fn to_f64(self) -> f64 {
        bf16::to_f64(self)
    }
}

pub mod fp8 {
    //! The four fp8 formats and their conversions to and from f32.
    //!
    //! Decoding is exact. Encoding rounds to nearest, ties to even, once; finite
    //! values beyond the format's largest saturate to it (as NVIDIA's `satfinite`
    //! conversions), and so do infinities in the formats without them (e4m3, both
    //! FNUZ); e5m2 keeps its infinities. NaN stays NaN (the format's canonical NaN:
    //! `0x7f`/`0xff` by sign for the OCP formats, `0x80` for FNUZ). FNUZ has no
    //! negative zero: values that round to zero encode as `0x00`.

    /// An fp8 format's shape.
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub struct Format {
        /// Exponent bits.
        pub exp: u32,
        /// Mantissa bits.
        pub man: u32,
        /// Exponent bias.
        pub bias: i32,
        /// Whether the all-ones exponent holds infinities and NaNs (IEEE-like, e5m2).
        pub ieee: bool,
        /// FNUZ: 0x80 is the only NaN, no infinities, no negative zero.
        pub fnuz: bool,
        /// Largest finite value.
        pub max: f32,
    }

    /// OCP E4M3 (e4m3fn).
    pub const E4M3: Format = Format {
        exp: 4,
        man: 3,
        bias: 7,
        ieee: false,
        fnuz: false,
        max: 448.0,
    };
    /// OCP E5M2.
    pub const E5M2: Format = Format {
        exp: 5,
        man: 2,
        bias: 15,
        ieee: true,
        fnuz: false,
        max: 57344.0,
    };
    /// E4M3 FNUZ.
    pub const E4M3_FNUZ: Format = Format {
        exp: 4,
        man: 3,
        bias: 8,
        ieee: false,
        fnuz: true,
        max: 240.0,
    };
    /// E5M2 FNUZ.
    pub const E5M2_FNUZ: Format = Format {
        exp: 5,
        man: 2,
        bias: 16,
        ieee: false,
        fnuz: true,
        max: 57344.0,
    };

    impl Format {
        /// Whether the format has infinities.
        pub const fn has_inf(&self) -> bool {
            self.ieee
        }

        /// The value of `bits` (exact).
        pub fn decode(&self, bits: u8) -> f32 {
            if self.fnuz && bits == 0x80 {
                return f32::NAN;
            }
            let neg = bits & 0x80 != 0;
            let e = i32::from((bits >> self.man) & ((1 << self.exp) - 1) as u8);
            let m = i32::from(bits & ((1 << self.man) - 1) as u8);
            let top = (1 << self.exp) - 1;
            let v = if self.ieee && e == top {
                if m == 0 {
                    f32::INFINITY
                } else {
                    f32::NAN
                }
            } else if !self.ieee && !self.fnuz && e == top && m == (1 << self.man) - 1 {
                f32::NAN
            } else if e == 0 {
                m as f32 * 2f32.powi(1 - self.bias - self.man as i32)
            } else {
                (1.0 + m as f32 / (1 << self.man) as f32) * 2f32.powi(e - self.bias)
            };
            if neg {
                -v
            } else {
                v
            }
        }

        fn nan(&self, neg: bool) -> u8 {
            if self.fnuz {
                0x80
            } else {
                0x7f | if neg { 0x80 } else { 0 }
            }
        }

        /// `x` rounded to nearest even in this format (see the module doc).
        pub fn encode(&self, x: f32) -> u8 {
            let neg = x.is_sign_negative();
            let sign = if neg { 0x80u8 } else { 0 };
            if x.is_nan() {
                return self.nan(neg);
            }
            if x.is_infinite() && self.ieee {
                return sign | (((1u8 << self.exp) - 1) << self.man);
            }
            let a = f64::from(x.abs());
            if a == 0.0 {
                return if self.fnuz { 0 } else { sign };
            }
            // Exact binary exponent (every f32 is a normal f64).
            let exp_of = |v: f64| ((v.to_bits() >> 52) & 0x7ff) as i32 - 1023;
            let min_exp = 1 - self.bias;
            let man = self.man as i32;
            // Round to the quantum of a's binade (subnormals share the smallest
            // normal's), ties to even; power-of-two scaling keeps this exact.
            let q = 2f64.powi(exp_of(a).max(min_exp) - man);
            let v = ((a / q).round_ties_even() * q).min(f64::from(self.max));
            if v == 0.0 {
                return if self.fnuz { 0 } else { sign };
            }
            let ve = exp_of(v);
            let bits = if ve < min_exp {
                (v / 2f64.powi(min_exp - man)) as u32
            } else {
                let m = (v / 2f64.powi(ve - man)) as u32 - (1 << self.man);
                (((ve + self.bias) as u32) << self.man) | m
            } as u8;
            sign | bits
        }
    }

    macro_rules! fp8_type {
        ($($t:ident => $d:ident, $f:ident, $doc:literal;)*) => {$(
            #[doc = $doc]
            #[derive(Debug, Clone, Copy, PartialEq, Eq, Default, bytemuck::Pod, bytemuck::Zeroable)]
            #[repr(transparent)]
            pub struct $t(pub u8);

            impl $t {
                /// The element nearest `x` (see the module doc).
                pub fn from_f32(x: f32) -> $t {
                    $t($f.encode(x))
                }
                /// Its value.
                pub fn to_f32(self) -> f32 {
                    $f.decode(self.0)
                }
            }

            impl super::Element for $t {
                const DTYPE: super::DataType = super::DataType::$d;
                fn from_f64(v: f64) -> Self {
                    // Through f32: exact for every value fp8 can hold.
                    $t::from_f32(v as f32)
                }
                fn to_f64(self) -> f64 {
                    f64::from(self.to_f32())
                }
            }
        )*};
    }

    fp8_type! {
        F8E4M3 => F8E4M3, E4M3, "An OCP fp8 E4M3 element (its bits).";
        F8E5M2 => F8E5M2, E5M2, "An OCP fp8 E5M2 element (its bits).";
        F8E4M3Fnuz => F8E4M3Fnuz, E4M3_FNUZ, "An fp8 E4M3 FNUZ element (its bits).";
        F8E5M2Fnuz => F8E5M2Fnuz, E5M2_FNUZ, "An fp8 E5M2 FNUZ element (its bits).";
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nccl_values_and_sizes() {
        for (i, d) in DataType::ALL.iter().enumerate() {
            assert_eq!(*d as usize, i);
            assert_eq!(DataType::from_nccl(i as i32), Some(*d));
            assert_eq!(DataType::parse(d.name()), Some(*d));
        }
        assert_eq!(DataType::from_nccl(10), Some(DataType::F8E4M3));
        assert_eq!(DataType::from_nccl(11), Some(DataType::F8E5M2));
        assert_eq!(DataType::from_nccl(12), None);
        assert_eq!(DataType::from_nccl(64), Some(DataType::F8E4M3Fnuz));
        assert_eq!(DataType::from_nccl(65), Some(DataType::F8E5M2Fnuz));
        assert_eq!(DataType::from_nccl(-1), None);
        for d in DataType::EVERY {
            assert_eq!(DataType::from_nccl(d as i32), Some(d));
            assert_eq!(DataType::parse(d.name()), Some(d));
            assert_eq!(d.fp8().is_some(), DataType::FP8.contains(&d));
        }
        assert_eq!(DataType::BF16.size(), 2);
        assert_eq!(DataType::F64.size(), 8);
    }

    use super::fp8::{Format, E4M3, E4M3_FNUZ, E5M2, E5M2_FNUZ};

    /// The value of `bits` computed independently: from the format's published
    /// parameters (bias, special encodings) with f64 arithmetic.
    fn reference(f: Format, bits: u8) -> f64 {
        let (e_bits, m_bits) = (f.exp, f.man);
        let sign = if bits & 0x80 != 0 { -1.0 } else { 1.0 };
        let e = ((bits & 0x7f) >> m_bits) as i32;
        let m = (bits & ((1u8 << m_bits) - 1)) as f64;
        let top = (1 << e_bits) - 1;
        if f.fnuz && bits == 0x80 {
            return f64::NAN;
        }
        if f == E5M2 && e == top {
            return if m == 0.0 {
                sign * f64::INFINITY
            } else {
                f64::NAN
            };
        }
        if f == E4M3 && bits & 0x7f == 0x7f {
            return f64::NAN;
        }
        let frac = m / f64::from(1u32 << m_bits);
        if e == 0 {
            sign * frac * 2f64.powi(1 - f.bias)
        } else {
            sign * (1.0 + frac) * 2f64.powi(e - f.bias)
        }
    }

    const FORMATS: [Format; 4] = [E4M3, E5M2, E4M3_FNUZ, E5M2_FNUZ];

    #[test]
    fn fp8_decodes_every_pattern_and_round_trips() {
        for f in FORMATS {
            for b in 0..=255u8 {
                let want = reference(f, b);
                let got = f64::from(f.decode(b));
                if want.is_nan() {
                    assert!(got.is_nan(), "{f:?} {b:#04x}: {got}");
                    assert!(f
                        .encode(f.decode(b))
                        .eq(&if f.fnuz { 0x80 } else { b | 0x7f }));
                    continue;
                }
                assert_eq!(got, want, "{f:?} {b:#04x}");
                assert_eq!(f.encode(got as f32), b, "{f:?} {b:#04x} = {got} round trip");
            }
            // The published maxima and the specials.
            let finite: Vec<f64> = (0..=255u8)
                .map(|b| reference(f, b))
                .filter(|v| v.is_finite())
                .collect();
            let max = finite.iter().cloned().fold(0.0, f64::max);
            assert_eq!(max, f64::from(f.max), "{f:?}");
        }
        assert_eq!(E4M3.max, 448.0);
        assert_eq!(E5M2.max, 57344.0);
        assert_eq!(E4M3_FNUZ.max, 240.0);
        assert_eq!(E5M2_FNUZ.max, 57344.0);
        assert_eq!(E4M3.encode(448.0), 0x7e);
        assert_eq!(E4M3_FNUZ.encode(240.0), 0x7f);
        assert_eq!(E5M2.encode(f32::INFINITY), 0x7c);
        assert_eq!(E5M2.encode(f32::NEG_INFINITY), 0xfc);
    }

    #[test]
    fn fp8_rounds_to_nearest_even_and_saturates() {
        for f in FORMATS {
            let mut vals: Vec<(f64, u8)> = (0..=255u8)
                .map(|b| (reference(f, b), b))
                .filter(|(v, _)| v.is_finite() && *v >= 0.0 && !(*v == 0.0 && b_neg(*v)))
                .collect();
            vals.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
            vals.dedup_by(|a, b| a.0 == b.0);
            for w in vals.windows(2) {
                let ((lo, lb), (hi, hb)) = (w[0], w[1]);
                let mid = (lo + hi) / 2.0;
                let even = if lb % 2 == 0 { lb } else { hb };
                assert_eq!(f.encode(mid as f32), even, "{f:?} tie {lo}..{hi}");
                let near_lo = lo + (hi - lo) / 4.0;
                let near_hi = hi - (hi - lo) / 4.0;
                assert_eq!(f.encode(near_lo as f32), lb, "{f:?} {near_lo}");
                assert_eq!(f.encode(near_hi as f32), hb, "{f:?} {near_hi}");
                // Negative values mirror (FNUZ: through the sign bit as well).
                assert_eq!(f.encode(-(near_hi as f32)), hb | 0x80, "{f:?} -{near_hi}");
            }
            let max = f.encode(f.max);
            assert_eq!(
                f.encode(f.max * 1.06),
                max,
                "{f:?} just above max saturates"
            );
            assert_eq!(f.encode(1.0e30), max, "{f:?}");
            assert_eq!(f.encode(-1.0e30), max | 0x80, "{f:?}");
            if !f.has_inf() {
                assert_eq!(f.encode(f32::INFINITY), max, "{f:?} inf saturates");
            }
            assert!(f.decode(f.encode(f32::NAN)).is_nan());
            if f.fnuz {
                assert_eq!(f.encode(-0.0), 0, "{f:?}: no negative zero");
                assert_eq!(f.encode(-1.0e-30), 0, "{f:?}: underflow to +0");
            } else {
                assert_eq!(f.encode(-0.0), 0x80, "{f:?}");
            }
        }
    }

    fn b_neg(v: f64) -> bool {
        v.is_sign_negative()
    }
}
