//! Reduction ops as C names them: NCCL's built-in values (0..=4) and the PreMulSum
//! ops of `ncclRedOpCreatePreMulSum` (values from 5 up, per communicator, like
//! NCCL's dynamic ops). mixccl has no such op, so a PreMulSum call scales a copy of
//! its input by the scalar and then sums: one extra pass and one temporary buffer of
//! the input's size per call.

use crate::cast;
use crate::status::{Failure, Outcome};
use half::{bf16, f16};
use mixccl::{DataType, ReduceOp};
use std::collections::HashMap;
use std::ffi::{c_int, c_void};

/// `ncclNumOps`: the first value of a created op.
const FIRST_DYNAMIC: c_int = 5;

/// Where a PreMulSum op finds its scalar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scalar {
    /// Read at creation (`ncclScalarHostImmediate`): the bytes.
    Value([u8; 8]),
    /// Read when each call runs (`ncclScalarDevice`): the address.
    At(usize),
}

impl Scalar {
    /// The scalar's bytes now.
    fn bytes(self, dtype: DataType) -> Outcome<[u8; 8]> {
        match self {
            Scalar::Value(b) => Ok(b),
            Scalar::At(addr) => cast::read_bytes::<8>(addr as *const c_void, dtype.size()),
        }
    }
}

/// The op of one call, resolved from C's integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpSpec {
    /// ncclSum, ncclProd, ncclMax, ncclMin, ncclAvg.
    Builtin(ReduceOp),
    /// A PreMulSum op.
    PreMulSum(Scalar),
}

/// A communicator's PreMulSum ops.
#[derive(Debug, Default)]
pub(crate) struct OpTable {
    ops: HashMap<c_int, (DataType, Scalar)>,
}

impl OpTable {
    /// Registers an op; returns its value (the least one free from 5 up).
    pub fn create(&mut self, dtype: DataType, scalar: Scalar) -> Outcome<c_int> {
        let id = (FIRST_DYNAMIC..=c_int::MAX)
            .find(|i| !self.ops.contains_key(i))
            .ok_or_else(|| Failure::internal("no free reduction op values left"))?;
        self.ops.insert(id, (dtype, scalar));
        Ok(id)
    }

    /// Forgets an op made by [`OpTable::create`].
    pub fn destroy(&mut self, op: c_int) -> Outcome {
        if op < FIRST_DYNAMIC {
            return Err(Failure::invalid(format!(
                "op {op} is built in; only ops from ncclRedOpCreatePreMulSum can be destroyed"
            )));
        }
        self.ops
            .remove(&op)
            .map(drop)
            .ok_or_else(|| Failure::invalid(format!("op {op} was not created for this comm")))
    }

    /// Resolves C's op value for a call of `dtype`.
    pub fn resolve(&self, op: c_int, dtype: DataType) -> Outcome<OpSpec> {
        if let Some(b) = ReduceOp::from_nccl(op) {
            return Ok(OpSpec::Builtin(b));
        }
        match self.ops.get(&op) {
            Some((d, s)) if *d == dtype => Ok(OpSpec::PreMulSum(*s)),
            Some((d, _)) => Err(Failure::invalid(format!(
                "op {op} was created for {d}, not {dtype}"
            ))),
            None => Err(Failure::invalid(format!(
                "op {op} is neither a built-in op (0..=4) nor one created for this comm"
            ))),
        }
    }
}

/// A copy of `input` with every `dtype` element multiplied by the scalar
/// (integers wrap; f16/bf16 round to nearest even).
pub(crate) fn scaled_copy(dtype: DataType, input: &[u8], scalar: Scalar) -> Outcome<Vec<u8>> {
    let s = scalar.bytes(dtype)?;
    let mut out = input.to_vec();
    match dtype {
        DataType::I8 => scale::<i8>(&mut out, &s, i8::wrapping_mul),
        DataType::U8 => scale::<u8>(&mut out, &s, u8::wrapping_mul),
        DataType::I32 => scale::<i32>(&mut out, &s, i32::wrapping_mul),
        DataType::U32 => scale::<u32>(&mut out, &s, u32::wrapping_mul),
        DataType::I64 => scale::<i64>(&mut out, &s, i64::wrapping_mul),
        DataType::U64 => scale::<u64>(&mut out, &s, u64::wrapping_mul),
        DataType::F16 => scale::<f16>(&mut out, &s, |a, b| f16::from_f32(a.to_f32() * b.to_f32())),
        DataType::BF16 => {
            scale::<bf16>(&mut out, &s, |a, b| bf16::from_f32(a.to_f32() * b.to_f32()))
        }
        DataType::F32 => scale::<f32>(&mut out, &s, |a, b| a * b),
        DataType::F64 => scale::<f64>(&mut out, &s, |a, b| a * b),
        // fp8: the product in f32, rounded once to the format.
        DataType::F8E4M3 | DataType::F8E5M2 | DataType::F8E4M3Fnuz | DataType::F8E5M2Fnuz => {
            if let Some(f) = dtype.fp8() {
                scale::<u8>(&mut out, &s, |a, b| f.encode(f.decode(a) * f.decode(b)))
            }
        }
    }
    Ok(out)
}

fn scale<T: bytemuck::Pod>(buf: &mut [u8], scalar: &[u8; 8], mul: impl Fn(T, T) -> T) {
    let n = std::mem::size_of::<T>();
    let s: T = bytemuck::pod_read_unaligned(&scalar[..n]);
    for e in buf.chunks_exact_mut(n) {
        let v: T = bytemuck::pod_read_unaligned(e);
        e.copy_from_slice(bytemuck::bytes_of(&mul(v, s)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_get_the_least_free_value_and_check_their_dtype() {
        let mut t = OpTable::default();
        let a = t.create(DataType::F32, Scalar::Value([0; 8])).unwrap();
        let b = t.create(DataType::I8, Scalar::Value([0; 8])).unwrap();
        assert_eq!((a, b), (5, 6));
        t.destroy(a).unwrap();
        assert!(t.destroy(a).is_err());
        assert!(t.destroy(2).is_err());
        assert_eq!(t.create(DataType::F64, Scalar::Value([0; 8])).unwrap(), 5);
        assert_eq!(
            t.resolve(2, DataType::F32).unwrap(),
            OpSpec::Builtin(ReduceOp::Max)
        );
        assert!(t.resolve(6, DataType::I8).is_ok());
        assert!(t.resolve(6, DataType::U8).is_err());
        assert!(t.resolve(7, DataType::U8).is_err());
        assert!(t.resolve(-1, DataType::U8).is_err());
    }

    fn enc(d: DataType, values: &[f64]) -> Vec<u8> {
        fn as_t<T: mixccl::Element>(values: &[f64]) -> Vec<u8> {
            values
                .iter()
                .flat_map(|v| bytemuck::bytes_of(&T::from_f64(*v)).to_vec())
                .collect()
        }
        match d {
            DataType::I8 => as_t::<i8>(values),
            DataType::U8 => as_t::<u8>(values),
            DataType::I32 => as_t::<i32>(values),
            DataType::U32 => as_t::<u32>(values),
            DataType::I64 => as_t::<i64>(values),
            DataType::U64 => as_t::<u64>(values),
            DataType::F16 => as_t::<f16>(values),
            DataType::BF16 => as_t::<bf16>(values),
            DataType::F32 => as_t::<f32>(values),
            DataType::F64 => as_t::<f64>(values),
            DataType::F8E4M3 => as_t::<mixccl::F8E4M3>(values),
            DataType::F8E5M2 => as_t::<mixccl::F8E5M2>(values),
            DataType::F8E4M3Fnuz => as_t::<mixccl::F8E4M3Fnuz>(values),
            DataType::F8E5M2Fnuz => as_t::<mixccl::F8E5M2Fnuz>(values),
        }
    }

    #[test]
    fn scaling_covers_every_dtype_unaligned() {
        for d in DataType::EVERY {
            let mut s = [0u8; 8];
            s[..d.size()].copy_from_slice(&enc(d, &[3.0]));
            let mut input = vec![0xAB];
            input.extend(enc(d, &[2.0, 5.0, 0.0]));
            let out = scaled_copy(d, &input[1..], Scalar::Value(s)).unwrap();
            assert_eq!(out, enc(d, &[6.0, 15.0, 0.0]), "{d}");
            let at = Scalar::At(s.as_ptr() as usize);
            assert_eq!(scaled_copy(d, &input[1..], at).unwrap(), out, "{d}");
        }
    }
}
