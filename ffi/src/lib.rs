//! C ABI of mixccl: `libmixccl.so` / `libmixccl.a` exporting the `nccl*` functions
//! declared in `include/nccl.h`. This crate is a building stub until the C ABI issue
//! fills it; it links the Rust crate so the workspace layout is final.

pub use mixccl;
