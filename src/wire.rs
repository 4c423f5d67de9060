//! Facts every mixccl wire format shares: the protocol version that each
//! handshake (bootstrap hello, unique id, transport hellos) carries and checks, and
//! the largest communicator any of them may describe. It owns constants only; the
//! formats themselves live with the module that speaks them.

/// Version of every mixccl wire format; peers with another version are refused.
pub(crate) const PROTOCOL_VERSION: u16 = 1;

/// Upper bound on the number of ranks a communicator can have.
pub(crate) const MAX_RANKS: usize = 1 << 20;
