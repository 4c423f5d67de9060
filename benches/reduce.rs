//! Throughput of the reduction kernels, against a plain copy of the same bytes.
//!
//! 256 KiB is the chunk the executor reduces at a time (cache-resident, so this
//! measures the kernel); 64 MiB is bound by memory bandwidth. Criterion's bytes are
//! the bytes of `dst` (elements x size), matching how busbw counts a reduction.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use half::{bf16, f16};
use mixccl::reduce::{reduce_bytes, ReduceOp};
use mixccl::Element;
use std::time::Duration;

const SIZES: [(usize, &str); 2] = [(256 << 10, "256KiB"), (64 << 20, "64MiB")];

/// `bytes` of `value` repeated, in u64 storage so the kernels take the aligned path.
fn buffer<T: Element>(bytes: usize, value: T) -> Vec<u64> {
    let mut v = vec![0u64; bytes / 8];
    bytemuck::cast_slice_mut::<u64, T>(&mut v).fill(value);
    v
}

/// Repeated Sum keeps growing dst; small src values keep floats finite and normal
/// (f16 stalls at 1024 rather than overflowing), so no denormal slow paths.
fn reduce_case<T: Element>(c: &mut Criterion, op: ReduceOp, bytes: usize, label: &str) {
    let mut dst = buffer(bytes, T::from_f64(1.0));
    let src = buffer(bytes, T::from_f64(0.5));
    let mut group = c.benchmark_group(format!("{op}/{}", T::DTYPE));
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function(BenchmarkId::from_parameter(label), |b| {
        b.iter(|| {
            reduce_bytes(
                T::DTYPE,
                op,
                bytemuck::cast_slice_mut(&mut dst),
                bytemuck::cast_slice(&src),
            )
        })
    });
    group.finish();
}

fn copy_case(c: &mut Criterion, bytes: usize, label: &str) {
    let mut dst = vec![0u64; bytes / 8];
    let src = vec![1u64; bytes / 8];
    let mut group = c.benchmark_group("copy");
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function(BenchmarkId::from_parameter(label), |b| {
        b.iter(|| dst.copy_from_slice(&src))
    });
    group.finish();
}

fn kernels(c: &mut Criterion) {
    for (bytes, label) in SIZES {
        copy_case(c, bytes, label);
        reduce_case::<f32>(c, ReduceOp::Sum, bytes, label);
        reduce_case::<f64>(c, ReduceOp::Sum, bytes, label);
        reduce_case::<bf16>(c, ReduceOp::Sum, bytes, label);
        reduce_case::<f16>(c, ReduceOp::Sum, bytes, label);
        reduce_case::<i32>(c, ReduceOp::Sum, bytes, label);
    }
    let (bytes, label) = SIZES[0];
    reduce_case::<f32>(c, ReduceOp::Max, bytes, label);
    reduce_case::<bf16>(c, ReduceOp::Max, bytes, label);
}

/// 14 cases at ~3.5 s each (warm-up, sampling, analysis) keeps a run near a minute
/// on two shared cores; 64 MiB iterations take milliseconds, so 10 samples suffice.
fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = kernels
}
criterion_main!(benches);
