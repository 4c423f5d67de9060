//! The one error type of the library. Every variant names what went wrong:
//! the rank, the peer, the sizes or the data type involved.

use std::sync::Arc;
use std::time::Duration;

/// Result alias used across mixccl.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in mixccl.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// A caller passed something unusable (rank out of range, buffer too small, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// A unique id whose bytes or text do not decode (wrong magic, version, checksum, length).
    #[error("invalid unique id: {0}")]
    InvalidUniqueId(String),

    /// A bounded wait expired. `waiting_for` lists the ranks that did not answer
    /// (empty when the bootstrap root itself is unreachable).
    #[error("timed out after {after:?} during {op}, waiting for rank(s) {waiting_for:?}")]
    Timeout {
        /// What was being done, e.g. "init: rendezvous" or "all_reduce #12".
        op: String,
        /// The ranks that were waited on.
        waiting_for: Vec<usize>,
        /// How long was waited without progress.
        after: Duration,
    },

    /// A peer closed its connection or died.
    #[error("peer rank {rank} lost: {reason}")]
    PeerLost {
        /// The rank that is gone.
        rank: usize,
        /// What the transport saw (EOF, connection reset, ...).
        reason: String,
    },

    /// Ranks called different collectives, or the same one with different arguments.
    #[error("mismatched calls: rank {rank} called {theirs} but rank {peer} called {ours}")]
    Mismatch {
        /// The rank reporting.
        rank: usize,
        /// What that rank called.
        theirs: String,
        /// The other rank.
        peer: usize,
        /// What the other rank called.
        ours: String,
    },

    /// The bootstrap protocol failed (a peer sent a bad table, the root refused, ...).
    #[error("bootstrap failed: {0}")]
    Bootstrap(String),

    /// An operating-system call failed.
    #[error("I/O error during {context}: {source}")]
    Io {
        /// What was being done, naming the peer or address where there is one.
        context: String,
        /// The underlying error.
        #[source]
        source: Arc<std::io::Error>,
    },

    /// A device runtime (CUDA, HIP, MUSA, ACL, CNRT) is missing, lacks a symbol, or
    /// failed a call; a failed call names the call, the vendor's code and its own text.
    #[error("{vendor}: {error}")]
    Device {
        /// The runtime: "cuda", "hip", "musa", "acl" or "cnrt".
        vendor: &'static str,
        /// What failed and why.
        error: DeviceError,
    },

    /// A peer's transport handshake or connection data did not decode (another
    /// protocol version, a stranger's bytes, a field out of range).
    #[error("rank {peer}: {error}")]
    Transport {
        /// The rank whose bytes they were.
        peer: usize,
        /// What was wrong with them.
        error: TransportError,
    },

    /// A broken invariant inside mixccl (a bug): please report it with the message.
    #[error("internal error: {0}")]
    Internal(String),

    /// The communicator was aborted; it accepts no further calls.
    #[error("communicator aborted")]
    Aborted,

    /// The communicator was revoked (`Communicator::revoke`, `ncclCommRevoke`) by
    /// `rank`: calls in flight and later ones fail with this; it can still shrink,
    /// grow or be dropped.
    #[error("communicator revoked by rank {rank}; only shrink, grow or destroy may follow")]
    Revoked {
        /// The rank that revoked it (this one, or the peer whose notice arrived).
        rank: usize,
    },
}

/// Whether an I/O error on a connection says that its other end is gone (reset,
/// broken pipe, aborted, end of file): the transports report such errors as
/// [`Error::PeerLost`] naming the peer, others as [`Error::Io`].
pub(crate) fn peer_gone(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionReset | BrokenPipe | ConnectionAborted | UnexpectedEof
    )
}

impl Error {
    /// Wraps an `io::Error` with a sentence saying what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source: Arc::new(source),
        }
    }

    /// Shorthand for [`Error::InvalidArgument`].
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidArgument(msg.into())
    }
}

/// What went wrong in a device runtime ([`Error::Device`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceError {
    /// The runtime is not loaded: its library is missing (every path tried, with the
    /// loader's reason, and the variable that names it) or lacks a required entry
    /// point, or `MIXCCL_DEVICES` left it out.
    NotLoaded(String),
    /// The runtime (or its shim) lacks an entry point or feature this call needs.
    Unsupported(String),
    /// A runtime call failed.
    Call {
        /// The call, with the arguments that matter (`hipMalloc(4096 bytes)`).
        call: String,
        /// The vendor's error code.
        code: i32,
        /// The vendor's name for the code where it has one (`hipErrorOutOfMemory`).
        name: Option<String>,
        /// The vendor's text for the failure.
        text: String,
    },
    /// The runtime answered something mixccl cannot use, or mixccl could not drive
    /// it (a helper thread that would not start).
    Other(String),
}

impl std::fmt::Display for DeviceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceError::NotLoaded(m) | DeviceError::Unsupported(m) | DeviceError::Other(m) => {
                f.write_str(m)
            }
            DeviceError::Call {
                call,
                code,
                name: Some(name),
                text,
            } => write!(f, "{call} failed: {code} {name} ({text})"),
            DeviceError::Call {
                call,
                code,
                name: None,
                text,
            } => write!(f, "{call} failed: error {code} ({text})"),
        }
    }
}

impl std::error::Error for DeviceError {}

/// Why bytes a transport received in a handshake (a hello, an offer, RDMA connection
/// data) were refused. Decoding never panics; each decoder returns one of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The bytes do not start with this transport's magic.
    #[error("bad magic")]
    BadMagic,
    /// The sender speaks another wire protocol version.
    #[error("protocol version {0}")]
    Version(u16),
    /// The message ended before byte `at`.
    #[error("truncated at byte {at}")]
    Truncated {
        /// Where the bytes ran out.
        at: usize,
    },
    /// A message of the wrong length.
    #[error("{what} of {got} bytes (expected {want})")]
    Length {
        /// Which message.
        what: &'static str,
        /// Its length.
        got: usize,
        /// The length it must have.
        want: String,
    },
    /// A field outside what the protocol allows; says which and its value.
    #[error("{0}")]
    Field(String),
    /// A message kind this build does not know.
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
}
