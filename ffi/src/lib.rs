//! C ABI of mixccl: `libmixccl.so` / `libmixccl.a` exporting the functions that
//! `include/nccl.h` (as `nccl*` and `pnccl*`) and `include/mixccl.h` declare.
//!
//! Data flows one way: an export in `api` (or `ext`) catches panics and turns the
//! result into an `ncclResult_t` (`status`); it validates its integer and pointer
//! arguments into Rust values (`cast` is the only place raw pointers become
//! references or slices); collectives become a [`coll::CollCall`], run at once or
//! recorded by `group` until the outermost `ncclGroupEnd`; both end in the
//! `mixccl::Communicator` that `comm::Shared` owns, on the caller's thread or on the
//! communicator's own thread (`queue`): a nonblocking communicator's calls, and
//! calls on device buffers, which are ordered on the caller's streams (`stream`).
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod api;
mod cast;
mod coll;
mod comm;
mod compat;
mod env;
mod ext;
mod group;
mod island;
mod memory;
mod native;
mod queue;
mod redop;
mod staging;
mod status;
mod stream;
