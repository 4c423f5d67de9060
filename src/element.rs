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
}

impl DataType {
    /// Every data type, in NCCL's order.
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

    /// Size of one element in bytes.
    pub const fn size(self) -> usize {
        match self {
            DataType::I8 | DataType::U8 => 1,
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
        )
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
            _ => return None,
        })
    }

    /// The tag for NCCL's integer value, if it is one.
    pub fn from_nccl(v: i32) -> Option<DataType> {
        DataType::ALL.get(usize::try_from(v).ok()?).copied()
    }
}

impl std::fmt::Display for DataType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A type a collective can carry: plain old data with a [`DataType`] tag.
///
/// Implemented for i8, u8, i32, u32, i64, u64, f16, bf16, f32 and f64.
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
        assert_eq!(DataType::from_nccl(10), None);
        assert_eq!(DataType::from_nccl(-1), None);
        assert_eq!(DataType::BF16.size(), 2);
        assert_eq!(DataType::F64.size(), 8);
    }
}
