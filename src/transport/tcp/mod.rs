//! TCP transport: `nsocks` sockets per peer (one lane each), TCP_NODELAY,
//! optional fixed socket buffers, non-blocking I/O without SIGPIPE.
//!
//! - `link`: [`TcpLink`], the lanes and the control socket to one peer.
//! - `mesh`: listening, connecting and the hello that admits only this
//!   communicator's ranks to a listener.
//! - `lazy`: connections on demand, the first time a call needs a peer, and
//!   the [`lazy::Acceptor`] that keeps early arrivals.
//! - `bdp`: socket buffers from the bandwidth-delay product (long links).
//! - `iface`: the interface choice (`MIXCCL_SOCKET_IFNAME`).
//! - `tls`: TLS 1.3 sessions on the sockets where `MIXCCL_TLS` says so.

mod bdp;
mod iface;
mod lazy;
mod link;
mod mesh;
pub(crate) mod tls;

pub(crate) use iface::local_ip_towards;
pub use iface::pick_interface;
pub(crate) use lazy::{connect_peers, Acceptor, LazySpec};
pub use link::TcpLink;
pub(crate) use mesh::connect_retry;
#[cfg(test)]
pub(crate) use mesh::{connect_mesh, MeshSpec};
