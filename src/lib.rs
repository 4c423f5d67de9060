//! mixccl: collective communication for clusters of mixed GPUs.
//!
//! One communicator spans ranks on any vendor's devices or host memory; bytes move
//! over the best transport between each pair of ranks; every wait is bounded, so a
//! dead or misbehaving peer becomes an [`Error`] instead of a hang.
//!
//! Data flows one way: a call on [`Communicator`] is turned into a per-rank
//! schedule by an algorithm (`algo`, chosen by `plan`), which the executor (`exec`)
//! runs over point-to-point links (`transport`), reducing with typed kernels
//! (`reduce`). `bootstrap` builds the links at init; `topo` models the hosts and
//! link costs the planner weighs; `sim` runs the same plans and schedules on a
//! modelled cluster of any size (`mixccl-sim`).
//!
//! ```no_run
//! use mixccl::{Communicator, ReduceOp};
//! let mut comm = Communicator::from_env()?;
//! let mut grads = vec![1.0f32; 1024];
//! comm.all_reduce_in_place(&mut grads, ReduceOp::Sum)?;
//! # Ok::<(), mixccl::Error>(())
//! ```
#![deny(missing_docs)]

mod algo;
mod bootstrap;
mod call;
mod ccl;
mod comm;
mod config;
mod copy;
mod cpu;
mod debug;
pub mod device;
mod element;
mod error;
mod exec;
mod foreign;
#[cfg(test)]
mod fuzz;
mod header;
mod plan;
pub mod reduce;
pub mod sim;
mod sys;
pub mod topo;
pub mod transport;
pub mod verify;
mod wire;

pub use bootstrap::launcher::{LaunchEnv, Rendezvous};
pub use bootstrap::unique_id::UniqueId;
pub use comm::{
    displacements, split_by_weight, AbortHandle, Communicator, CrossPhase, CrossRegion, Island,
    IslandPlanner, IslandSteps, NativeCall, RevokeHandle, Transfer, TransferMem,
};
pub use config::{AlgoOverride, Algorithm, Collective, Config, NetTransport, TlsPolicy};
pub use debug::{trace_enabled, trace_line, DebugLevel};
pub use device::MemRef;
pub use element::fp8::{F8E4M3Fnuz, F8E5M2Fnuz, F8E4M3, F8E5M2};
pub use element::{fp8, DataType, Element};
pub use error::{DeviceError, Error, Result, TransportError};
pub use reduce::ReduceOp;
pub use topo::Topology;
